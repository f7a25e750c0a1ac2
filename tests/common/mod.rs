//! Shared helpers for end-to-end tests: copy the fixture workspace to a
//! worktree path, run real cargo through kache with a private store, and
//! read kache's counters.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

pub fn kache_bin() -> &'static str {
    env!("CARGO_BIN_EXE_kache")
}

pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Recursively copies `from` into `to` (files and directories only).
pub fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let dest = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            if e.file_name() == "target" {
                continue;
            }
            copy_dir(&e.path(), &dest);
        } else {
            std::fs::copy(e.path(), &dest).unwrap();
        }
    }
}

/// A copy of the fixture workspace at `dir`, wired to the vendored crates.
pub fn fixture_at(dir: &Path) -> PathBuf {
    copy_dir(&repo_root().join("tests/fixtures/ws"), dir);
    let vendor = repo_root().join("tests/fixtures/vendor");
    std::fs::create_dir_all(dir.join(".cargo")).unwrap();
    std::fs::write(
        dir.join(".cargo/config.toml"),
        format!(
            "[source.crates-io]\nreplace-with = \"vendored\"\n\n[source.vendored]\ndirectory = \"{}\"\n",
            vendor.display()
        ),
    )
    .unwrap();
    dir.to_path_buf()
}

/// A cargo command in `dir` through kache with store `store`, isolated from
/// whatever the outer build set (target dir, flags, wrappers).
pub fn cargo(dir: &Path, store: &Path, args: &[&str]) -> Command {
    let mut c = Command::new("cargo");
    // `--offline` right after the subcommand, before any `--` for rustc.
    c.current_dir(dir)
        .arg(args[0])
        .arg("--offline")
        .args(&args[1..]);
    for v in [
        "CARGO_TARGET_DIR",
        "CARGO_BUILD_TARGET_DIR",
        "RUSTFLAGS",
        "CARGO_ENCODED_RUSTFLAGS",
        "RUSTC_WORKSPACE_WRAPPER",
        "CARGO_BUILD_RUSTC_WRAPPER",
        "KACHE_MAX_SIZE",
        "KACHE_FALLBACK",
        "KACHE_DISABLE",
        "KACHE_OBSERVE",
        "KACHE_LOG",
        "KACHE_LOG_FILE",
        "CC",
        "CXX",
        "CARGO_MAKEFLAGS",
        "MAKEFLAGS",
    ] {
        c.env_remove(v);
    }
    // Seeding would make a new worktree's registry units Fresh, so they would never
    // reach the wrapper these tests measure; the seeding tests turn it back on.
    // Non-incremental unless a test says otherwise: many tests compare what two
    // worktrees compiled byte for byte, and an incremental rlib names its objects
    // after its rustc session. tests/rust_incremental.rs turns it back on.
    c.env("CARGO_INCREMENTAL", "0");
    c.env("RUSTC_WRAPPER", kache_bin())
        .env("KACHE_DIR", store)
        .env("KACHE_SEED", "0")
        .env("CARGO_TERM_COLOR", "never");
    c
}

pub fn run_ok(mut c: Command) -> Output {
    let out = c.output().expect("spawn");
    assert!(
        out.status.success(),
        "command failed: {:?}\nstdout:\n{}\nstderr:\n{}",
        c,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

pub fn build(dir: &Path, store: &Path) -> Output {
    run_ok(cargo(dir, store, &["build"]))
}

pub fn stats(store: &Path) -> serde_json::Value {
    let out = Command::new(kache_bin())
        .args(["stats", "--json"])
        .env("KACHE_DIR", store)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

pub fn counter(v: &serde_json::Value, lang: &str, name: &str) -> u64 {
    v[lang][name].as_u64().unwrap_or(0)
}

/// Runs the fixture binary and returns its stdout.
pub fn run_app(dir: &Path, profile: &str) -> String {
    let out = Command::new(dir.join("target").join(profile).join("app"))
        .output()
        .unwrap();
    assert!(out.status.success());
    String::from_utf8(out.stdout).unwrap()
}

/// Counts the units cargo says it compiled ("Compiling x" lines).
pub fn compiled_units(out: &Output) -> Vec<String> {
    String::from_utf8_lossy(&out.stderr)
        .lines()
        .filter_map(|l| l.trim().strip_prefix("Compiling "))
        .map(|l| l.split_whitespace().next().unwrap_or("").to_string())
        .collect()
}

/// Every regular file under `dir` that contains `needle`.
pub fn files_containing(dir: &Path, needle: &[u8]) -> Vec<PathBuf> {
    let mut hits = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let ft = e.file_type().unwrap();
            if ft.is_dir() {
                stack.push(e.path());
            } else if ft.is_file() {
                let bytes = std::fs::read(e.path()).unwrap();
                if bytes.windows(needle.len()).any(|w| w == needle) {
                    hits.push(e.path());
                }
            }
        }
    }
    hits
}

/// Fails (never skips) when a tool a C/C++ test needs is missing; `scripts/test`
/// installs it.
pub fn need_tool(name: &str) {
    let found = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).any(|d| d.join(name).is_file()))
        .unwrap_or(false);
    assert!(
        found,
        "{name} is missing from PATH: install it (scripts/test installs the test tools)"
    );
}

/// A command run in `dir` with store `store` and no user configuration,
/// isolated from the kache and compiler settings of the outer environment.
pub fn isolated(program: impl AsRef<std::ffi::OsStr>, dir: &Path, store: &Path) -> Command {
    let mut c = Command::new(program);
    c.current_dir(dir);
    for v in [
        "KACHE_FALLBACK",
        "KACHE_DISABLE",
        "KACHE_EXCLUDE",
        "KACHE_MAX_SIZE",
        "KACHE_OBSERVE",
        "KACHE_LOG",
        "KACHE_LOG_FILE",
        "SOURCE_DATE_EPOCH",
        "CC",
        "CXX",
        "CFLAGS",
        "CPATH",
        "C_INCLUDE_PATH",
        "MAKEFLAGS",
    ] {
        c.env_remove(v);
    }
    c.env("KACHE_DIR", store)
        .env("XDG_CONFIG_HOME", store.with_extension("config"));
    c
}

/// `kache <compiler> <args…>` in `dir` with store `store`.
pub fn kache_cc(dir: &Path, store: &Path, compiler: &str, args: &[&str]) -> Command {
    let mut c = isolated(kache_bin(), dir, store);
    c.arg(compiler).args(args);
    c
}

/// A C project in a temporary directory (a worktree root: it holds `.git`)
/// with its own private kache store, for the `cc_*` tests.
pub struct CcProject {
    _tmp: tempfile::TempDir,
    pub root: PathBuf,
    pub store: PathBuf,
}

impl CcProject {
    pub fn new() -> CcProject {
        Self::at_name("proj")
    }

    /// The project at `<tmp>/<name>` (names make paths easy to spot in objects).
    pub fn at_name(name: &str) -> CcProject {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join(name);
        std::fs::create_dir_all(root.join(".git")).unwrap();
        let store = tmp.path().join("store");
        CcProject {
            _tmp: tmp,
            root,
            store,
        }
    }

    pub fn write(&self, rel: &str, text: &str) {
        let p = self.root.join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, text).unwrap();
    }

    pub fn read(&self, rel: &str) -> Vec<u8> {
        std::fs::read(self.root.join(rel)).unwrap_or_else(|e| panic!("cannot read {rel}: {e}"))
    }

    /// `kache <compiler> <args…>` in the project root; not checked.
    pub fn cmd(&self, compiler: &str, args: &[&str]) -> Command {
        kache_cc(&self.root, &self.store, compiler, args)
    }

    /// `kache <compiler> <args…>`, which must succeed.
    pub fn cc(&self, compiler: &str, args: &[&str]) -> Output {
        run_ok(self.cmd(compiler, args))
    }

    pub fn stats(&self) -> serde_json::Value {
        stats(&self.store)
    }

    /// Links `objects` with the plain system compiler and runs the program.
    pub fn link_and_run(&self, objects: &[&str]) -> String {
        let exe = self.root.join("prog");
        let _ = std::fs::remove_file(&exe);
        let mut link = Command::new("cc");
        link.current_dir(&self.root)
            .args(objects)
            .arg("-o")
            .arg(&exe);
        run_ok(link);
        let out = run_ok(Command::new(&exe));
        String::from_utf8(out.stdout).unwrap()
    }
}

/// A counter by its dotted path in `kache stats --json` (0 when absent).
pub fn counter_at(v: &serde_json::Value, dotted: &str) -> u64 {
    dotted
        .split('.')
        .fold(v, |v, k| &v[k])
        .as_u64()
        .unwrap_or(0)
}
