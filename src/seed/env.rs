//! The environment a build ran in, as seeding compares it.
//!
//! A build script sees cargo's whole environment and may read any of it without
//! declaring `rerun-if-env-changed`; cargo then never reruns it when such a variable
//! changes, and neither would a seeded copy of its run. So a build-script run is only
//! seeded into a build whose environment equals the one it ran in. What is compared is
//! cargo's environment as the wrapper sees it at cargo's first compiler probe (cargo's
//! own variables plus its `[env]` configuration), minus two tables below: variables
//! cargo sets per unit (their values are covered by cargo's fingerprint of the unit),
//! and variables of the terminal and the login session, which no build reads to decide
//! what it produces. Values are compared with the worktree root and the target dir
//! replaced by tokens, so `PWD` in worktree A equals `PWD` in worktree B; a build script
//! that bakes such a path into its output is caught by the path scan of the harvest.
//!
//! Only digests of values are kept: an environment holds secrets.

use std::collections::BTreeMap;

/// Variables that differ between terminals, shells and login sessions, and what each
/// is. None of them is read by cargo, rustc or a build script to decide what a build
/// produces. A row ending in `*` is a prefix.
pub const NOISE: &[(&str, &str)] = &[
    ("OLDPWD", "the shell's previous directory"),
    ("_", "the last command the shell ran"),
    ("SHLVL", "shell nesting depth"),
    ("PS1", "shell prompt"),
    ("PS2", "shell prompt"),
    ("PROMPT_COMMAND", "shell prompt hook"),
    ("HISTFILE", "shell history file"),
    ("HISTSIZE", "shell history length"),
    ("HISTCONTROL", "shell history filter"),
    ("TERM", "terminal type: only colours and widths of messages"),
    ("COLORTERM", "terminal colour support"),
    ("TERM_PROGRAM*", "terminal emulator name and version"),
    ("TERM_SESSION_ID", "terminal session id"),
    ("COLUMNS", "terminal width"),
    ("LINES", "terminal height"),
    ("LS_COLORS", "colours of `ls`"),
    ("LSCOLORS", "colours of `ls`"),
    ("CLICOLOR", "colour preference of command-line tools"),
    ("CLICOLOR_FORCE", "colour preference of command-line tools"),
    ("NO_COLOR", "colour preference of command-line tools"),
    ("TMUX", "tmux server socket of this session"),
    ("TMUX_PANE", "tmux pane id"),
    ("STY", "screen session id"),
    ("WINDOW", "screen window number"),
    ("WINDOWID", "X11 terminal window id"),
    ("VTE_VERSION", "terminal library version"),
    ("KONSOLE_*", "Konsole session ids"),
    ("ITERM_*", "iTerm2 session ids"),
    ("WT_SESSION", "Windows Terminal session id"),
    ("WT_PROFILE_ID", "Windows Terminal profile id"),
    ("SSH_AUTH_SOCK", "ssh agent socket of this login"),
    ("SSH_AGENT_PID", "ssh agent of this login"),
    ("SSH_CLIENT", "address of this ssh login"),
    ("SSH_CONNECTION", "addresses of this ssh login"),
    ("SSH_TTY", "terminal of this ssh login"),
    ("GPG_AGENT_INFO", "gpg agent of this login"),
    ("GPG_TTY", "terminal gpg prompts on"),
    ("DISPLAY", "X11 display of this session"),
    ("WAYLAND_DISPLAY", "Wayland display of this session"),
    ("XAUTHORITY", "X11 credentials file of this session"),
    ("DBUS_SESSION_BUS_ADDRESS", "D-Bus bus of this session"),
    ("XDG_SESSION_*", "login session id, type and class"),
    ("XDG_SEAT", "login seat"),
    ("XDG_VTNR", "virtual terminal number"),
    ("INVOCATION_ID", "systemd id of one service run"),
    (
        "JOURNAL_STREAM",
        "systemd journal descriptor of one service run",
    ),
    ("MANAGERPID", "pid of the systemd instance"),
    ("SYSTEMD_EXEC_PID", "pid systemd started"),
    (
        "CARGO_MAKEFLAGS",
        "jobserver descriptors of one cargo process",
    ),
    (
        "MAKEFLAGS",
        "jobserver descriptors and flags of one make process",
    ),
    ("MFLAGS", "flags of one make process"),
    ("MAKELEVEL", "make nesting depth"),
    (
        "CARGO_TERM_*",
        "cargo's own terminal output (colour, progress, verbosity)",
    ),
    (
        "KACHE_*",
        "kache's own settings; those that change a result are part of its keys",
    ),
];

/// Variables cargo sets for one unit (package facts, cfgs, features, OUT_DIR, profile
/// facts). Their values follow from the unit, which cargo fingerprints; they are not a
/// property of the build's environment.
const PER_UNIT: &[&str] = &[
    "CARGO_PKG_*",
    "CARGO_MANIFEST_*",
    "CARGO_CRATE_NAME",
    "CARGO_BIN_NAME",
    "CARGO_BIN_EXE_*",
    "CARGO_PRIMARY_PACKAGE",
    "CARGO_CFG_*",
    "CARGO_FEATURE_*",
    "CARGO_ENCODED_RUSTFLAGS",
    "CARGO_TARGET_TMPDIR",
    "CARGO_RUSTC_CURRENT_DIR",
    "DEP_*",
    "OUT_DIR",
    "TARGET",
    "HOST",
    "NUM_JOBS",
    "OPT_LEVEL",
    "DEBUG",
    "PROFILE",
    "RUSTC",
    "RUSTDOC",
    "RUSTC_LINKER",
];

fn matches(table: impl IntoIterator<Item = &'static str>, name: &str) -> bool {
    table.into_iter().any(|row| match row.strip_suffix('*') {
        Some(prefix) => name.starts_with(prefix),
        None => name == row,
    })
}

/// True when `name` takes no part in the comparison.
pub fn ignored(name: &str) -> bool {
    matches(NOISE.iter().map(|(n, _)| *n), name) || matches(PER_UNIT.iter().copied(), name)
}

/// Digest of one value (16 hex digits: enough to tell values apart, not to recover them).
fn digest(value: &str) -> String {
    blake3::hash(value.as_bytes()).to_hex()[..16].to_string()
}

/// The compared environment: name → digest of the value with `roots` (absolute paths,
/// longest first) replaced by their tokens.
pub fn fingerprint(
    vars: impl IntoIterator<Item = (String, String)>,
    roots: &[(String, &str)],
) -> BTreeMap<String, String> {
    let mut roots: Vec<&(String, &str)> = roots.iter().filter(|(p, _)| p.len() > 1).collect();
    roots.sort_by_key(|(p, _)| std::cmp::Reverse(p.len()));
    vars.into_iter()
        .filter(|(n, _)| !ignored(n))
        .map(|(n, v)| {
            let mut v = v;
            for (path, token) in &roots {
                v = v.replace(path.as_str(), token);
            }
            (n, digest(&v))
        })
        .collect()
}

/// One digest of a whole compared environment.
pub fn digest_of(env: &BTreeMap<String, String>) -> String {
    let mut h = blake3::Hasher::new();
    for (n, v) in env {
        h.update(&(n.len() as u64).to_le_bytes());
        h.update(n.as_bytes());
        h.update(v.as_bytes());
    }
    h.finalize().to_hex()[..32].to_string()
}

/// The names whose values differ between two compared environments (for reports).
pub fn differing(a: &BTreeMap<String, String>, b: &BTreeMap<String, String>) -> Vec<String> {
    let mut names: Vec<String> = a
        .iter()
        .filter(|(n, v)| b.get(*n) != Some(v))
        .map(|(n, _)| n.clone())
        .chain(b.keys().filter(|n| !a.contains_key(*n)).cloned())
        .collect();
    names.sort();
    names.dedup();
    names
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect()
    }

    #[test]
    fn worktree_paths_compare_equal_across_worktrees() {
        let a = fingerprint(
            env(&[("PWD", "/w/a/app"), ("PATH", "/w/a/bin:/usr/bin")]),
            &[("/w/a".into(), "@WS@")],
        );
        let b = fingerprint(
            env(&[("PWD", "/x/b/app"), ("PATH", "/x/b/bin:/usr/bin")]),
            &[("/x/b".into(), "@WS@")],
        );
        assert_eq!(a, b);
    }

    #[test]
    fn session_and_per_unit_variables_are_ignored_but_others_are_not() {
        let a = fingerprint(
            env(&[("TERM", "xterm"), ("OUT_DIR", "/a"), ("SECRET_FLAG", "1")]),
            &[],
        );
        let b = fingerprint(
            env(&[("TERM", "dumb"), ("OUT_DIR", "/b"), ("SECRET_FLAG", "2")]),
            &[],
        );
        assert_eq!(differing(&a, &b), vec!["SECRET_FLAG".to_string()]);
        assert_ne!(digest_of(&a), digest_of(&b));
        let c = fingerprint(env(&[("SECRET_FLAG", "1")]), &[]);
        assert_eq!(digest_of(&a), digest_of(&c));
    }

    #[test]
    fn an_unset_variable_differs_from_an_empty_one() {
        let a = fingerprint(env(&[("X", "")]), &[]);
        let b = fingerprint(env(&[]), &[]);
        assert_eq!(differing(&a, &b), vec!["X".to_string()]);
    }

    #[test]
    fn values_are_never_kept_in_clear() {
        let a = fingerprint(env(&[("TOKEN", "hunter2")]), &[]);
        assert!(!a["TOKEN"].contains("hunter2"));
    }
}
