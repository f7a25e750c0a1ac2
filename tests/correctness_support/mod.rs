//! Helpers for the `correctness_*` tests: small cargo workspaces written
//! from (path, text) lists into temporary directories and built with real
//! cargo through kache, with a private store and no user configuration.
//!
//! Each test writes the smallest project that shows one way a cache can
//! serve a wrong artifact, builds it the way a user would, and asserts on
//! what the user would see (program output, artifact bytes, exit status).
//!
//! `CORRECTNESS_PLAIN=1 cargo test --test correctness_…` runs the same cargo
//! builds without kache (no `RUSTC_WRAPPER`): every assertion on outputs
//! then holds, which shows each test expects exactly what plain cargo does.
//! (Assertions on kache's counters do not apply in that mode.)
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use crate::common;

/// How kache finds what a compile read (`cache.observe`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Observe {
    /// The default: observed by the input recorder where it can run.
    Auto,
    /// `KACHE_OBSERVE=off`: strict inference, the path taken wherever no
    /// recorder can run (other platforms, statically linked tools).
    Strict,
}

impl Observe {
    fn value(self) -> &'static str {
        match self {
            Observe::Auto => "auto",
            Observe::Strict => "off",
        }
    }
}

/// Runs the test function `$name(Observe)` once per mode, as the tests
/// `$name::auto` and `$name::strict`, so the strict path stays tested where
/// a recorder observes by default.
#[macro_export]
macro_rules! in_both_modes {
    ($($name:ident),* $(,)?) => {
        $(
            mod $name {
                #[test]
                fn auto() {
                    super::$name($crate::correctness_support::Observe::Auto)
                }

                #[test]
                fn strict() {
                    super::$name($crate::correctness_support::Observe::Strict)
                }
            }
        )*
    };
}

/// A temporary directory holding worktrees and one kache store.
pub struct Scratch {
    tmp: tempfile::TempDir,
    pub store: PathBuf,
    observe: Observe,
}

impl Scratch {
    pub fn new() -> Scratch {
        Scratch::observing(Observe::Auto)
    }

    /// A scratch whose kache calls find inputs as `mode` says.
    pub fn observing(observe: Observe) -> Scratch {
        let tmp = tempfile::tempdir().unwrap();
        let store = tmp.path().join("store");
        Scratch {
            tmp,
            store,
            observe,
        }
    }

    /// `rel` below the scratch directory.
    pub fn path(&self, rel: &str) -> PathBuf {
        self.tmp.path().join(rel)
    }

    /// A worktree at `rel` holding `files`.
    pub fn worktree(&self, rel: &str, files: &[(&str, &str)]) -> PathBuf {
        let root = self.path(rel);
        write_files(&root, files);
        root
    }

    /// `cargo ARGS` in `dir` through kache on this scratch's store.
    pub fn cargo(&self, dir: &Path, args: &[&str]) -> Command {
        let mut c = cargo_with_store(dir, &self.store, args);
        c.env("KACHE_OBSERVE", self.observe.value());
        c
    }

    /// `cargo ARGS` in `dir`, which must succeed.
    pub fn cargo_ok(&self, dir: &Path, args: &[&str]) -> Output {
        common::run_ok(self.cargo(dir, args))
    }

    pub fn stats(&self) -> serde_json::Value {
        common::stats(&self.store)
    }

    /// `kache <compiler> <args…>` in `dir` on this scratch's store.
    pub fn kache_cc(&self, dir: &Path, compiler: &str, args: &[&str]) -> Command {
        let mut c = common::kache_cc(dir, &self.store, compiler, args);
        c.env("KACHE_OBSERVE", self.observe.value());
        c
    }
}

/// `cargo ARGS` in `dir` through kache with store `store`, isolated from the
/// outer environment and from any user kache configuration.
pub fn cargo_with_store(dir: &Path, store: &Path, args: &[&str]) -> Command {
    let mut c = common::cargo(dir, store, args);
    c.env("XDG_CONFIG_HOME", store.with_extension("config"));
    for v in [
        "KACHE_EXCLUDE",
        "KACHE_REMOTE",
        "KACHE_OBSERVE",
        "SOURCE_DATE_EPOCH",
    ] {
        c.env_remove(v);
    }
    if std::env::var_os("CORRECTNESS_PLAIN").is_some() {
        c.env_remove("RUSTC_WRAPPER");
    }
    c
}

/// Writes `files` (relative path, text) below `root`.
pub fn write_files(root: &Path, files: &[(&str, &str)]) {
    for (rel, text) in files {
        let p = root.join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, text).unwrap();
    }
}

/// Replaces `from` by `to` in the file at `path` (which must contain it).
pub fn edit(path: &Path, from: &str, to: &str) {
    let text = std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    assert!(text.contains(from), "{from:?} not in {}", path.display());
    std::fs::write(path, text.replace(from, to)).unwrap();
}

/// Runs the program at `exe` (which must succeed) and returns its stdout.
pub fn output_of(exe: &Path) -> String {
    let out = Command::new(exe)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", exe.display()));
    assert!(
        out.status.success(),
        "{} failed: {}",
        exe.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

pub fn stderr_of(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

pub fn stdout_of(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// True when `haystack` contains `needle` anywhere.
pub fn contains_bytes(haystack: &[u8], needle: &str) -> bool {
    haystack
        .windows(needle.len())
        .any(|w| w == needle.as_bytes())
}

/// The rustc that cargo would run (the toolchain's binary, not a rustup
/// proxy), for tests that put another name or a script in front of it.
pub fn real_rustc() -> PathBuf {
    let out = Command::new("rustc")
        .args(["--print", "sysroot"])
        .output()
        .expect("rustc is not on PATH");
    assert!(out.status.success());
    let sysroot = String::from_utf8(out.stdout).unwrap();
    let rustc = Path::new(sysroot.trim()).join("bin/rustc");
    assert!(rustc.is_file(), "no rustc at {}", rustc.display());
    rustc
}

/// Writes an executable shell script at `path`.
pub fn write_script(path: &Path, body: &str) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, format!("#!/bin/sh\n{body}\n")).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).unwrap();
}

/// The "Compiling x" units of a cargo run.
pub fn compiled(out: &Output) -> Vec<String> {
    common::compiled_units(out)
}
