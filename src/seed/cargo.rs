//! What seeding needs to know about the cargo command that is starting: which worktree
//! and target directory, which profile directories and which lane (check or build) it
//! will use, and the packages of its `Cargo.lock`.
//!
//! All of it is read before cargo has said anything, from cargo's command line (as the
//! OS shows it: `kache_platform::process::args_of`), its environment and its
//! configuration files. Where the
//! answer is not certain the caller gets `None` and seeds less, never something else.

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};

/// Which units a command uses: `cargo check` (and clippy, doc) compiles dependencies
/// as metadata only, `cargo build` (run, test, bench) as full libraries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lane {
    Check,
    Build,
}

/// A cargo command line as far as seeding cares.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Command {
    pub subcommand: Option<String>,
    pub lane: Option<Lane>,
    /// Profile directory name (`debug`, `release`, a custom profile's name).
    pub profile: Option<String>,
    /// `--target` triples.
    pub targets: Vec<String>,
    pub target_dir: Option<PathBuf>,
    pub manifest_path: Option<PathBuf>,
    /// The command names a target or build dir through `--config`: seeding stays off.
    pub dir_override: bool,
}

/// Global options of cargo that take a value (before the subcommand).
const GLOBAL_WITH_VALUE: &[&str] = &["--color", "--config", "-Z", "-C", "--explain"];

/// Parses cargo's argv (without argv[0]).
pub fn parse_command(args: &[String]) -> Command {
    let mut cmd = Command::default();
    let mut i = 0;
    let mut sub: Option<&str> = None;
    let mut explicit_profile: Option<String> = None;
    let mut release = false;
    while i < args.len() {
        let a = args[i].as_str();
        if a == "--" {
            break;
        }
        let (flag, inline) = match a.split_once('=') {
            Some((f, v)) if f.starts_with("--") => (f, Some(v.to_string())),
            _ => (a, None),
        };
        let mut value = || -> Option<String> {
            if inline.is_some() {
                return inline.clone();
            }
            i += 1;
            args.get(i).cloned()
        };
        match flag {
            "--release" | "-r" if sub.is_some() => release = true,
            "--profile" if sub.is_some() => explicit_profile = value(),
            "--target" if sub.is_some() => {
                if let Some(t) = value() {
                    cmd.targets.push(t);
                }
            }
            "--target-dir" => cmd.target_dir = value().map(PathBuf::from),
            "--manifest-path" => cmd.manifest_path = value().map(PathBuf::from),
            "--config" => {
                let v = value().unwrap_or_default();
                if v.contains("target-dir") || v.contains("build-dir") {
                    cmd.dir_override = true;
                }
            }
            f if sub.is_none() && GLOBAL_WITH_VALUE.contains(&f) => {
                value();
            }
            f if sub.is_none() && f.starts_with('+') => {}
            f if sub.is_none() && !f.starts_with('-') => sub = Some(&args[i]),
            _ => {}
        }
        i += 1;
    }
    let (lane, default_profile) = match sub {
        Some("build" | "b" | "run" | "r" | "test" | "t" | "rustc") => (Some(Lane::Build), "dev"),
        Some("bench") => (Some(Lane::Build), "bench"),
        Some("check" | "c" | "clippy" | "doc" | "d" | "rustdoc" | "fix") => {
            (Some(Lane::Check), "dev")
        }
        _ => (None, "dev"),
    };
    cmd.lane = lane;
    cmd.subcommand = sub.map(String::from);
    if lane.is_some() {
        let name = explicit_profile.unwrap_or_else(|| {
            if release {
                "release".into()
            } else {
                default_profile.into()
            }
        });
        cmd.profile = Some(profile_dir_name(&name));
    }
    cmd
}

/// cargo subcommands that probe rustc but compile nothing.
pub fn builds_nothing(sub: &str) -> bool {
    matches!(
        sub,
        "metadata"
            | "fetch"
            | "tree"
            | "update"
            | "generate-lockfile"
            | "locate-project"
            | "pkgid"
            | "verify-project"
            | "read-manifest"
            | "vendor"
            | "clean"
            | "package"
            | "publish"
            | "install"
            | "search"
            | "info"
            | "add"
            | "remove"
            | "new"
            | "init"
            | "help"
            | "version"
    )
}

/// The directory cargo builds profile `name` into.
pub fn profile_dir_name(name: &str) -> String {
    match name {
        "dev" | "test" => "debug".into(),
        "bench" => "release".into(),
        other => other.into(),
    }
}

/// The workspace root cargo will use: the directory of `--manifest-path`, else the
/// nearest directory holding both `Cargo.toml` and `Cargo.lock` from `cwd` up.
pub fn workspace_root(cwd: &Path, manifest: Option<&Path>) -> Option<PathBuf> {
    let start = match manifest {
        Some(m) => cwd.join(m).parent()?.to_path_buf(),
        None => cwd.to_path_buf(),
    };
    start
        .ancestors()
        .find(|d| d.join("Cargo.toml").is_file() && d.join("Cargo.lock").is_file())
        .map(Path::to_path_buf)
}

/// A `build.*` string value from cargo's configuration as seen from `cwd`, with the
/// directory its relative paths are anchored at: the config files from `cwd` up, then
/// `$CARGO_HOME/config.toml`, nearest first (cargo's own precedence for one key).
fn build_config_value(cwd: &Path, key: &str) -> Option<(String, PathBuf)> {
    let home = std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cargo")));
    let mut dirs: Vec<PathBuf> = cwd.ancestors().map(|d| d.join(".cargo")).collect();
    if let Some(h) = home {
        dirs.push(h);
    }
    for dir in dirs {
        for name in ["config.toml", "config"] {
            let Ok(text) = fs::read_to_string(dir.join(name)) else {
                continue;
            };
            let Ok(table) = text.parse::<toml::Table>() else {
                continue;
            };
            if let Some(v) = table
                .get("build")
                .and_then(|b| b.get(key))
                .and_then(|v| v.as_str())
            {
                let anchor = dir.parent().unwrap_or(&dir).to_path_buf();
                return Some((v.to_string(), anchor));
            }
        }
    }
    None
}

/// The target directory of a cargo command run in `cwd` for workspace `ws`, or `None`
/// when cargo was told to keep intermediate artifacts elsewhere (`build-dir`), where
/// seeding would miss them.
pub fn target_dir(cwd: &Path, ws: &Path, cmd: &Command) -> Option<PathBuf> {
    if cmd.dir_override
        || std::env::var_os("CARGO_BUILD_BUILD_DIR").is_some()
        || build_config_value(cwd, "build-dir").is_some()
    {
        return None;
    }
    if let Some(t) = &cmd.target_dir {
        return Some(cwd.join(t));
    }
    for var in ["CARGO_TARGET_DIR", "CARGO_BUILD_TARGET_DIR"] {
        if let Some(t) = std::env::var_os(var).filter(|t| !t.is_empty()) {
            return Some(cwd.join(PathBuf::from(t)));
        }
    }
    if let Some((dir, anchor)) = build_config_value(cwd, "target-dir") {
        return Some(anchor.join(dir));
    }
    Some(ws.join("target"))
}

/// One package of a `Cargo.lock`. `source` is `None` for path packages.
#[derive(
    Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
pub struct LockedPackage {
    pub name: String,
    pub version: String,
    pub source: Option<String>,
    pub checksum: Option<String>,
}

/// The packages of the lockfile at `path`.
pub fn read_lock(path: &Path) -> Option<BTreeSet<LockedPackage>> {
    let text = fs::read_to_string(path).ok()?;
    let table = text.parse::<toml::Table>().ok()?;
    let pkgs = table.get("package")?.as_array()?;
    let mut out = BTreeSet::new();
    for p in pkgs {
        let s = |k: &str| p.get(k).and_then(|v| v.as_str()).map(String::from);
        out.insert(LockedPackage {
            name: s("name")?,
            version: s("version")?,
            source: s("source"),
            checksum: s("checksum"),
        });
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cmd(line: &str) -> Command {
        parse_command(
            &line
                .split_whitespace()
                .map(String::from)
                .collect::<Vec<_>>(),
        )
    }

    #[test]
    fn lanes_and_profiles_follow_cargo() {
        let c = cmd("build --offline");
        assert_eq!(
            (c.lane, c.profile.as_deref()),
            (Some(Lane::Build), Some("debug"))
        );
        let c = cmd("+stable -v b -r");
        assert_eq!(
            (c.lane, c.profile.as_deref()),
            (Some(Lane::Build), Some("release"))
        );
        let c = cmd("check --profile=release");
        assert_eq!(
            (c.lane, c.profile.as_deref()),
            (Some(Lane::Check), Some("release"))
        );
        let c = cmd("bench");
        assert_eq!(c.profile.as_deref(), Some("release"));
        let c = cmd("test --profile custom --target x86_64-unknown-linux-gnu");
        assert_eq!(c.profile.as_deref(), Some("custom"));
        assert_eq!(c.targets, vec!["x86_64-unknown-linux-gnu".to_string()]);
    }

    #[test]
    fn unknown_subcommands_and_aliases_give_no_lane() {
        assert_eq!(cmd("xtask dist").lane, None);
        assert_eq!(cmd("-C dir --config x=1 myalias").lane, None);
    }

    #[test]
    fn options_after_double_dash_are_not_cargo_options() {
        let c = cmd("run -- --release");
        assert_eq!(c.profile.as_deref(), Some("debug"));
    }

    #[test]
    fn a_target_dir_set_through_config_turns_seeding_off() {
        assert!(cmd("--config build.target-dir=\"x\" build").dir_override);
        assert!(!cmd("--config net.offline=true build").dir_override);
    }
}
