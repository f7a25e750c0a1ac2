//! Diagnostics a user turns on for a bug report: `KACHE_LOG` (a level, a
//! target filter, or any old value meaning debug) on stderr, `KACHE_LOG_FILE`
//! to a file, and nothing at all by default. Every test is a real cargo
//! build through kache of a two-crate workspace.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::run_ok;

/// A workspace with a library that warns (so a build has compiler output of
/// its own on stderr) and a binary using it.
fn workspace(root: &Path) -> PathBuf {
    let ws = root.join("ws");
    let files = [
        (
            "Cargo.toml",
            "[workspace]\nmembers = [\"app\", \"lib1\"]\nresolver = \"2\"\n",
        ),
        (
            "lib1/Cargo.toml",
            "[package]\nname = \"lib1\"\nversion = \"0.1.0\"\nedition = \"2021\"\n",
        ),
        (
            "lib1/src/lib.rs",
            "pub fn answer() -> u32 {\n    let unused = 1;\n    42\n}\n",
        ),
        (
            "app/Cargo.toml",
            "[package]\nname = \"app\"\nversion = \"0.1.0\"\nedition = \"2021\"\n\n[dependencies]\nlib1 = { path = \"../lib1\" }\n",
        ),
        (
            "app/src/main.rs",
            "fn main() {\n    println!(\"{}\", lib1::answer());\n}\n",
        ),
    ];
    for (path, text) in files {
        let p = ws.join(path);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, text).unwrap();
    }
    ws
}

/// `cargo build` of `ws` through kache with store `store`, no user
/// configuration and no log settings from the outer environment.
fn build(ws: &Path, store: &Path) -> Command {
    let mut c = common::cargo(ws, store, &["build"]);
    c.env("XDG_CONFIG_HOME", store.with_extension("config"))
        .env_remove("KACHE_EXCLUDE");
    c
}

fn clean(ws: &Path) {
    let out = Command::new("cargo")
        .arg("clean")
        .current_dir(ws)
        .output()
        .unwrap();
    assert!(out.status.success(), "cargo clean failed");
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// The lines of kache's diagnostics (see `src/log.rs` for the format).
fn log_lines(text: &str) -> Vec<&str> {
    text.lines().filter(|l| l.contains(" kache[")).collect()
}

#[test]
fn debug_log_shows_key_groups_and_the_reason_of_each_miss_hit_and_passthrough() {
    let tmp = tempfile::tempdir().unwrap();
    let ws = workspace(tmp.path());
    let store = tmp.path().join("store");

    // The binary's source is excluded: its compile is a passthrough.
    let mut c = build(&ws, &store);
    c.env("KACHE_LOG", "debug")
        .env("KACHE_EXCLUDE", format!("{}/app/**", ws.display()));
    let first = stderr(&run_ok(c));
    let lines = log_lines(&first);
    let miss = lines
        .iter()
        .find(|l| l.contains("kache::wrap: miss: no-manifest") && l.contains("unit=lib1"));
    assert!(miss.is_some(), "no miss line for lib1 in:\n{first}");
    let passthrough = lines
        .iter()
        .find(|l| l.contains("kache::wrap: passthrough: excluded") && l.contains("unit=app"));
    assert!(
        passthrough.is_some(),
        "no passthrough line for app in:\n{first}"
    );
    let groups: Vec<_> = lines
        .iter()
        .filter(|l| l.contains("key group") && l.contains("unit=lib1"))
        .collect();
    assert!(
        groups.iter().any(|l| l.contains("group=direct."))
            && groups.iter().any(|l| l.contains("group=result.")),
        "no direct and result key groups for lib1 in:\n{first}"
    );
    assert!(
        groups.iter().all(|l| l.contains("digest=")),
        "a key group without its digest:\n{first}"
    );

    // Any value that is not a filter still means debug (`KACHE_LOG=1`).
    clean(&ws);
    let mut c = build(&ws, &store);
    c.env("KACHE_LOG", "1");
    let second = stderr(&run_ok(c));
    let lines = log_lines(&second);
    assert!(
        lines
            .iter()
            .any(|l| l.contains("kache::wrap: hit") && l.contains("unit=lib1")),
        "no hit line for lib1 with KACHE_LOG=1 in:\n{second}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l.contains("kache::store") && l.contains("placed by")),
        "no placement decision in:\n{second}"
    );
}

#[test]
fn log_file_receives_the_diagnostics_and_stderr_none_of_them() {
    let tmp = tempfile::tempdir().unwrap();
    let ws = workspace(tmp.path());
    let store = tmp.path().join("store");
    let log = tmp.path().join("kache.log");
    std::fs::write(&log, "kept\n").unwrap();

    let mut c = build(&ws, &store);
    c.env("KACHE_LOG_FILE", &log);
    let err = stderr(&run_ok(c));
    assert!(
        log_lines(&err).is_empty(),
        "diagnostics on stderr with KACHE_LOG_FILE set:\n{err}"
    );
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(
        text.starts_with("kept\n"),
        "the log file was not appended to"
    );
    assert!(
        text.lines()
            .any(|l| l.contains("kache::wrap: miss: no-manifest") && l.contains("unit=lib1")),
        "no miss line for lib1 in the log file:\n{text}"
    );
}

#[test]
fn a_log_file_that_cannot_be_opened_warns_and_the_build_succeeds() {
    let tmp = tempfile::tempdir().unwrap();
    let ws = workspace(tmp.path());
    let store = tmp.path().join("store");

    let mut c = build(&ws, &store);
    c.env("KACHE_LOG_FILE", tmp.path().join("no-such-dir/kache.log"));
    let err = stderr(&run_ok(c));
    assert!(
        err.contains("kache: warning: cannot open log file"),
        "no warning about the log file in:\n{err}"
    );
    assert!(log_lines(&err).is_empty(), "diagnostics on stderr:\n{err}");
    assert!(
        ws.join("target/debug/app").is_file(),
        "the build made no binary"
    );
}

#[test]
fn a_target_filter_shows_only_that_target() {
    let tmp = tempfile::tempdir().unwrap();
    let ws = workspace(tmp.path());
    let store = tmp.path().join("store");

    let mut c = build(&ws, &store);
    c.env("KACHE_LOG", "kache::wrap::pipeline=debug");
    let err = stderr(&run_ok(c));
    let lines = log_lines(&err);
    assert!(
        lines
            .iter()
            .any(|l| l.contains("kache::wrap::pipeline: direct key")),
        "no pipeline line in:\n{err}"
    );
    let others: Vec<_> = lines
        .iter()
        .filter(|l| !l.contains(" kache::wrap::pipeline: "))
        .collect();
    assert!(others.is_empty(), "lines of other targets: {others:#?}");
}

/// cargo's own status lines ("Compiling x", "Finished …"): what differs
/// between a build through a wrapper and without when kache is silent.
fn without_cargo_status(text: &str) -> String {
    const STATUS: [&str; 6] = [
        "Compiling ",
        "Finished ",
        "Locking ",
        "Adding ",
        "Blocking ",
        "Fresh ",
    ];
    text.lines()
        .filter(|l| !STATUS.iter().any(|s| l.trim_start().starts_with(s)))
        .map(|l| format!("{l}\n"))
        .collect()
}

#[test]
fn without_log_settings_a_build_prints_what_plain_cargo_prints() {
    let tmp = tempfile::tempdir().unwrap();
    let ws = workspace(tmp.path());
    let store = tmp.path().join("store");

    let mut plain = build(&ws, &store);
    plain.env_remove("RUSTC_WRAPPER");
    let plain = without_cargo_status(&stderr(&run_ok(plain)));
    assert!(
        plain.contains("unused variable"),
        "the fixture's warning is missing from plain cargo's output:\n{plain}"
    );
    for run in ["miss", "hit"] {
        clean(&ws);
        let mut c = build(&ws, &store);
        c.env_remove("KACHE_LOG").env_remove("KACHE_LOG_FILE");
        let through = without_cargo_status(&stderr(&run_ok(c)));
        assert_eq!(through, plain, "the {run} build's stderr differs");
    }
    let hits = common::counter(&common::stats(&store), "rust", "hits");
    assert!(hits >= 2, "the second build did not hit ({hits} hits)");
}
