//! The environment table: what the recorder's caller does with variables, as data.
//!
//! Three kinds of rows. `Ignore`: variables that compilers and linkers read on every run and
//! that differ between builds without changing what is produced (a jobserver's descriptors,
//! the terminal's width); keying them would cost hits and buy nothing. `AlwaysKey`: variables
//! glibc itself reads through internal calls that no preload library can see (the locale, the
//! time zone, the dynamic loader's search path and preloads); they are keyed by the value the
//! compile was given whether a read was observed or not. `KeyWhenProgramsRun`: the program
//! search path, which `execvp`/`posix_spawnp` walk inside glibc: the recorder logs the
//! candidates it saw absent, but a directory added to the path later was never looked in, so
//! the value itself is keyed for every compile that started (or tried to start) a program.
//!
//! Everything else that a compile was seen to read is keyed by value. Adding a row is one line
//! here, with a reason a reviewer can check, plus a test. This module decides nothing else.

/// How a row's name matches a variable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Match {
    /// The variable is exactly this name.
    Exact(&'static str),
    /// The variable's name starts with this text.
    Prefix(&'static str),
}

impl Match {
    fn matches(self, name: &[u8]) -> bool {
        match self {
            Match::Exact(n) => name == n.as_bytes(),
            Match::Prefix(p) => name.starts_with(p.as_bytes()),
        }
    }
}

/// What the caller does with a matching variable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Policy {
    /// Read by compilers on every run; cannot change the output. Never keyed.
    Ignore,
    /// Read inside glibc, where no hook sees it, and able to change the output: always keyed
    /// by the value the compile was given.
    AlwaysKey,
    /// Searched inside glibc when a program is started by name: keyed by the value the
    /// compile was given when any process of it started or tried to start a program.
    KeyWhenProgramsRun,
}

/// One row of the table.
#[derive(Debug, Clone, Copy)]
pub struct EnvRow {
    pub name: Match,
    pub policy: Policy,
    pub reason: &'static str,
}

const fn row(name: Match, policy: Policy, reason: &'static str) -> EnvRow {
    EnvRow {
        name,
        policy,
        reason,
    }
}

use Match::{Exact as Ex, Prefix as Pre};
use Policy::{AlwaysKey as K, Ignore as I, KeyWhenProgramsRun as X};

/// The table. Rows grouped by policy; when several rows match, the first one wins.
#[rustfmt::skip]
pub const ENV_TABLE: &[EnvRow] = &[
    // Parallelism: the jobserver of the parent build. It decides how many jobs run at once,
    // never what one job produces.
    row(Ex("CARGO_MAKEFLAGS"), I, "cargo's jobserver descriptors: parallelism only"),
    row(Ex("MAKEFLAGS"), I, "make's jobserver and flags, read by compilers only for the jobserver (gcc -flto=jobserver, rustc)"),
    row(Ex("MFLAGS"), I, "older spelling of MAKEFLAGS, read for the jobserver only"),
    row(Ex("RAYON_NUM_THREADS"), I, "thread count of rayon pools; the output does not depend on it"),
    // The terminal: how diagnostics look, never the compiled output.
    row(Ex("TERM"), I, "terminal capabilities: colour of diagnostics only"),
    row(Ex("COLUMNS"), I, "terminal width: wrapping of diagnostics only"),
    row(Ex("LINES"), I, "terminal height: never read for output"),
    row(Ex("NO_COLOR"), I, "disables colour in diagnostics"),
    row(Ex("CLICOLOR"), I, "colour of diagnostics"),
    row(Ex("CLICOLOR_FORCE"), I, "colour of diagnostics"),
    row(Ex("GCC_COLORS"), I, "gcc's colours for diagnostics"),
    row(Ex("GCC_URLS"), I, "gcc's hyperlinks in diagnostics"),
    row(Ex("TERM_URLS"), I, "hyperlinks in diagnostics"),
    row(Ex("COLORTERM"), I, "terminal colour detection: diagnostics only"),
    row(Ex("TERM_PROGRAM"), I, "terminal detection for colour and hyperlinks: diagnostics only"),
    row(Ex("VTE_VERSION"), I, "terminal detection for hyperlinks: diagnostics only"),
    row(Ex("WT_SESSION"), I, "Windows Terminal detection: diagnostics only"),
    row(Ex("KONSOLE_VERSION"), I, "terminal detection for hyperlinks: diagnostics only"),
    row(Ex("DOMTERM"), I, "terminal detection for hyperlinks: diagnostics only"),
    row(Ex("ConEmuANSI"), I, "terminal colour detection: diagnostics only"),
    row(Ex("FORCE_HYPERLINK"), I, "hyperlinks in diagnostics"),
    row(Ex("LANGUAGE"), I, "language of messages (gettext); object bytes do not depend on it"),
    row(Ex("LC_MESSAGES"), I, "language of messages; object bytes do not depend on it"),
    // Where temporaries go: rustc, gcc and the linker delete them, and no output names them.
    row(Ex("TMPDIR"), I, "location of temporary files, which are deleted and never named in outputs"),
    row(Ex("TMP"), I, "location of temporary files (other spelling)"),
    row(Ex("TEMP"), I, "location of temporary files (other spelling)"),
    // Diagnostics of the tool itself when it crashes.
    row(Ex("RUST_BACKTRACE"), I, "backtrace of a panicking compiler: an ICE's stderr only"),
    row(Ex("RUST_LIB_BACKTRACE"), I, "backtrace capture in std: error reports only"),
    row(Ex("RUST_MIN_STACK"), I, "stack size of threads std spawns; output does not depend on it"),
    // Allocator tuning.
    row(Ex("MALLOC_CONF"), I, "jemalloc tuning (rustc links jemalloc): memory use only"),
    row(Ex("_RJEM_MALLOC_CONF"), I, "jemalloc tuning under its prefixed name"),
    row(Pre("MALLOC_"), I, "glibc malloc tuning (MALLOC_ARENA_MAX, MALLOC_PERTURB_…): memory use only"),
    row(Pre("GLIBC_TUNABLES"), I, "glibc tuning (malloc, CPU dispatch of string functions): speed only"),
    // Variables that exist only to run the recorder.
    row(Pre("KACHE_RECORDER_"), I, "the recorder's own wiring (log path, root process)"),
    // The program search path. The candidates a search passed over are recorded as absent,
    // but a directory put in front of it later was never looked in.
    row(Ex("PATH"), X, "execvp/posix_spawnp search it inside glibc; a directory added to it was never looked in"),

    // Read inside glibc: invisible to the hooks, and able to change what a compile produces.
    row(Ex("LD_LIBRARY_PATH"), K, "the dynamic loader searches it for every library of every process; the search is not recorded, only the library it mapped"),
    row(Ex("LD_PRELOAD"), K, "the dynamic loader loads these libraries into every process (the recorder's own entry is left out of the value)"),
    row(Ex("GCONV_PATH"), K, "charset converters used by iconv (gcc's -finput-charset/-fexec-charset)"),
    row(Ex("LANG"), K, "the locale's charset, which gcc uses as its default input charset"),
    row(Ex("LC_ALL"), K, "overrides the locale's charset, which gcc uses as its default input charset"),
    row(Ex("LC_CTYPE"), K, "the locale's charset, which gcc uses as its default input charset"),
    row(Ex("LOCPATH"), K, "where locale definitions are loaded from"),
    row(Ex("TZ"), K, "time zone of localtime(), which expands __DATE__ and __TIME__"),
];

/// The row that decides `name`, if any.
pub fn lookup(name: &[u8]) -> Option<&'static EnvRow> {
    ENV_TABLE.iter().find(|r| r.name.matches(name))
}

/// Whether a variable read by a compile is left out of its key.
pub fn ignored(name: &[u8]) -> bool {
    matches!(lookup(name), Some(r) if r.policy == Policy::Ignore)
}

/// The names keyed whether a read was observed or not (exact names only).
pub fn always_keyed() -> impl Iterator<Item = &'static str> {
    names_with(Policy::AlwaysKey)
}

/// The names keyed, whether a read was observed or not, when the compile started a program.
pub fn keyed_when_programs_run() -> impl Iterator<Item = &'static str> {
    names_with(Policy::KeyWhenProgramsRun)
}

fn names_with(policy: Policy) -> impl Iterator<Item = &'static str> {
    ENV_TABLE
        .iter()
        .filter_map(move |r| match (r.policy, r.name) {
            (p, Match::Exact(n)) if p == policy => Some(n),
            _ => None,
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jobserver_and_terminal_variables_are_ignored() {
        for n in [
            "CARGO_MAKEFLAGS",
            "MAKEFLAGS",
            "COLUMNS",
            "TERM",
            "MALLOC_ARENA_MAX",
        ] {
            assert!(ignored(n.as_bytes()), "{n}");
        }
    }

    #[test]
    fn variables_that_change_output_are_not_ignored() {
        for n in [
            "PM_SECRET",
            "CARGO_PKG_NAME",
            "PWD",
            "SOURCE_DATE_EPOCH",
            "CC",
            "LANG",
        ] {
            assert!(!ignored(n.as_bytes()), "{n}");
        }
    }

    #[test]
    fn libc_internal_variables_are_always_keyed() {
        let keyed: Vec<_> = always_keyed().collect();
        for n in [
            "LANG",
            "LC_ALL",
            "LC_CTYPE",
            "TZ",
            "GCONV_PATH",
            "LD_LIBRARY_PATH",
            "LD_PRELOAD",
        ] {
            assert!(keyed.contains(&n), "{n}");
        }
        assert!(!keyed.contains(&"TERM"));
    }

    #[test]
    fn the_program_search_path_is_keyed_when_programs_run_and_never_ignored() {
        assert!(!ignored(b"PATH"));
        assert_eq!(keyed_when_programs_run().collect::<Vec<_>>(), vec!["PATH"]);
    }

    #[test]
    fn every_row_has_a_reason_and_no_name_is_listed_twice() {
        let mut seen = std::collections::HashSet::new();
        for r in ENV_TABLE {
            assert!(!r.reason.is_empty(), "{:?}", r.name);
            assert!(seen.insert(format!("{:?}", r.name)), "{:?} twice", r.name);
        }
    }
}
