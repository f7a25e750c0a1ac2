//! Incremental compilation under kache (`rust.incremental = "keep"`, the
//! default): the edit-rebuild loop of one worktree compiles incrementally in
//! that worktree's `target/debug/incremental`, while the results are keyed on
//! "incremental" without that directory, so another worktree still hits.
//! A hit leaves a worktree's incremental state behind its outputs; the next
//! miss there must still produce what a fresh compile would.
#![cfg(unix)] // inode identity shows which incremental work products rustc reused

mod common;

use common::*;
use std::collections::HashSet;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// `cargo ARGS` through kache with the default incremental policy, whatever
/// the outer environment or user configuration says.
fn cargo_inc(dir: &Path, store: &Path, args: &[&str]) -> Command {
    let mut c = cargo(dir, store, args);
    c.env_remove("KACHE_RUST_INCREMENTAL")
        .env_remove("CARGO_INCREMENTAL")
        .env("XDG_CONFIG_HOME", store.with_extension("config"));
    c
}

fn build_inc(dir: &Path, store: &Path) -> Output {
    run_ok(cargo_inc(dir, store, &["build"]))
}

fn edit(path: &Path, from: &str, to: &str) {
    let text = std::fs::read_to_string(path).unwrap();
    assert!(text.contains(from), "{from:?} not in {}", path.display());
    std::fs::write(path, text.replacen(from, to, 1)).unwrap();
}

/// The fixture with a constant of `core` that `app` prints: rustc folds a
/// constant into the code of the crate using it, so `app`'s own object code
/// depends on `core`'s source, not only its link against `core`.
fn fixture_with_mark(dir: &Path) -> PathBuf {
    let ws = fixture_at(dir);
    let lib = ws.join("core/src/lib.rs");
    let mut text = std::fs::read_to_string(&lib).unwrap();
    text.push_str("\npub const MARK: u32 = 1;\n");
    std::fs::write(&lib, text).unwrap();
    edit(
        &ws.join("app/src/main.rs"),
        "    println!(\"core: {}\", core::greet(\"fixture\"));",
        "    println!(\"core: {}\", core::greet(\"fixture\"));\n    println!(\"mark: {}\", core::MARK);",
    );
    ws
}

/// The finished session directories rustc keeps for crate `krate` in
/// `ws`'s dev incremental directory.
fn sessions(ws: &Path, krate: &str) -> Vec<PathBuf> {
    let inc = ws.join("target/debug/incremental");
    let mut found = Vec::new();
    for e in std::fs::read_dir(&inc).into_iter().flatten().flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if !name.starts_with(&format!("{krate}-")) || !e.path().is_dir() {
            continue;
        }
        for s in std::fs::read_dir(e.path()).unwrap().flatten() {
            if s.path().is_dir() && s.file_name().to_string_lossy().starts_with("s-") {
                found.push(s.path());
            }
        }
    }
    found.sort();
    found
}

/// The identity of every file in `dir`: (device, inode, modification time),
/// so a file that only got the number of a deleted one counts as new.
fn inodes(dir: &Path) -> HashSet<(u64, u64, i64, i64)> {
    std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .filter_map(|e| e.metadata().ok())
        .filter(|m| m.is_file())
        .map(|m| (m.dev(), m.ino(), m.mtime(), m.mtime_nsec()))
        .collect()
}

/// The crates rustc compiled incrementally in `ws` (one directory each).
fn incremental_crates(ws: &Path) -> usize {
    std::fs::read_dir(ws.join("target/debug/incremental"))
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.path().is_dir())
        .count()
}

fn misses(store: &Path) -> u64 {
    counter(&stats(store), "rust", "misses")
}

fn hits(store: &Path) -> u64 {
    counter(&stats(store), "rust", "hits")
}

#[test]
fn an_edit_loop_compiles_incrementally_and_reuses_the_previous_session() {
    let tmp = tempfile::tempdir().unwrap();
    let store = tmp.path().join("store");
    let a = fixture_with_mark(&tmp.path().join("a"));
    build_inc(&a, &store);
    let s = stats(&store);
    assert_eq!(counter(&s, "rust", "passthroughs"), 0, "{s}");
    let (app0, core0) = (sessions(&a, "app"), sessions(&a, "core"));
    assert_eq!(app0.len(), 1, "app compiled incrementally once: {app0:?}");
    assert_eq!(
        core0.len(),
        1,
        "core compiled incrementally once: {core0:?}"
    );
    let (app_before, core_before) = (inodes(&app0[0]), inodes(&core0[0]));

    // One edit of a leaf (the binary) and one of a root (a library it uses).
    let before = misses(&store);
    edit(&a.join("core/src/lib.rs"), "hello, {name}", "hi, {name}");
    edit(
        &a.join("app/src/main.rs"),
        "println!(\"mark",
        "println!(\"edited\");\n    println!(\"mark",
    );
    let out = build_inc(&a, &store);
    let mut rebuilt = compiled_units(&out);
    rebuilt.sort();
    assert_eq!(rebuilt, vec!["app", "fixture-core"]);
    assert_eq!(misses(&store) - before, 2, "{}", stats(&store));
    let shown = run_app(&a, "debug");
    assert!(
        shown.contains("core: hi, fixture") && shown.contains("edited"),
        "{shown}"
    );

    // rustc started a new session from the previous one, and the object
    // files of the code the edits did not touch are the previous session's
    // own files (rustc links them into the new session instead of compiling
    // them again).
    for (krate, old, before) in [("app", &app0, &app_before), ("core", &core0, &core_before)] {
        let new: Vec<PathBuf> = sessions(&a, krate)
            .into_iter()
            .filter(|s| !old.contains(s))
            .collect();
        assert_eq!(new.len(), 1, "{krate}: one new session: {new:?}");
        let reused = inodes(&new[0]).intersection(before).count();
        assert!(
            reused > 0,
            "{krate}: nothing of the previous session was reused in {}",
            new[0].display()
        );
    }
}

#[test]
fn a_fresh_worktree_hits_what_an_incremental_edit_loop_compiled() {
    let tmp = tempfile::tempdir().unwrap();
    let store = tmp.path().join("store");
    let a = fixture_with_mark(&tmp.path().join("worktree-alpha"));
    build_inc(&a, &store);
    let units = misses(&store);
    assert!(incremental_crates(&a) >= 7, "every member is incremental");

    // At the original sources: every unit, workspace crates included, hits.
    let b = fixture_with_mark(&tmp.path().join("worktree-bravo"));
    build_inc(&b, &store);
    assert_eq!(hits(&store), units, "{}", stats(&store));
    assert_eq!(misses(&store), units);
    assert_eq!(incremental_crates(&b), 0, "no compile ran in bravo");
    assert_eq!(run_app(&a, "debug"), run_app(&b, "debug"));

    // An edit compiled from alpha's incremental state is served to a fresh
    // worktree with the same edit, and names nothing of alpha.
    edit(&a.join("core/src/lib.rs"), "MARK: u32 = 1", "MARK: u32 = 7");
    build_inc(&a, &store);
    let c = fixture_with_mark(&tmp.path().join("worktree-charlie"));
    edit(&c.join("core/src/lib.rs"), "MARK: u32 = 1", "MARK: u32 = 7");
    let (h, m) = (hits(&store), misses(&store));
    build_inc(&c, &store);
    assert_eq!(hits(&store) - h, units, "{}", stats(&store));
    assert_eq!(misses(&store), m);
    assert!(run_app(&c, "debug").contains("mark: 7"));
    for wt in [&b, &c] {
        let leaked = files_containing(&wt.join("target"), a.to_str().unwrap().as_bytes());
        assert!(leaked.is_empty(), "alpha's path found in: {leaked:?}");
    }
}

#[test]
fn an_edit_then_revert_never_serves_a_stale_artifact() {
    let tmp = tempfile::tempdir().unwrap();
    let store = tmp.path().join("store");
    let a = fixture_with_mark(&tmp.path().join("a"));
    let lib = a.join("core/src/lib.rs");
    let main = a.join("app/src/main.rs");
    build_inc(&a, &store);
    assert!(run_app(&a, "debug").contains("mark: 1"));

    // v2 compiled incrementally: core and app now hold v2 state.
    edit(&lib, "MARK: u32 = 1", "MARK: u32 = 2");
    build_inc(&a, &store);
    assert!(run_app(&a, "debug").contains("mark: 2"));

    // Back to v1: served from the store, so the incremental state stays v2's.
    edit(&lib, "MARK: u32 = 2", "MARK: u32 = 1");
    let (h, m) = (hits(&store), misses(&store));
    build_inc(&a, &store);
    assert_eq!(hits(&store) - h, 2, "core and app hit: {}", stats(&store));
    assert_eq!(misses(&store), m);
    assert!(run_app(&a, "debug").contains("mark: 1"));

    // An edit of app alone: app compiles from its v2 state against core v1,
    // and the constant it folds in must be v1's.
    edit(
        &main,
        "println!(\"mark",
        "println!(\"edited\");\n    println!(\"mark",
    );
    let m = misses(&store);
    build_inc(&a, &store);
    assert_eq!(misses(&store) - m, 1, "{}", stats(&store));
    let shown = run_app(&a, "debug");
    assert!(
        shown.contains("mark: 1") && shown.contains("edited"),
        "{shown}"
    );

    // A new version of core compiled from its stale v2 state, then each
    // earlier version again: every build shows exactly its sources.
    edit(&lib, "MARK: u32 = 1", "MARK: u32 = 3");
    build_inc(&a, &store);
    assert!(run_app(&a, "debug").contains("mark: 3"));
    for (from, to) in [("3", "2"), ("2", "1"), ("1", "3")] {
        edit(
            &lib,
            &format!("MARK: u32 = {from}"),
            &format!("MARK: u32 = {to}"),
        );
        build_inc(&a, &store);
        assert!(
            run_app(&a, "debug").contains(&format!("mark: {to}")),
            "after {from} -> {to}"
        );
    }

    // The same sources compiled without kache agree.
    let mut plain = Command::new("cargo");
    plain
        .current_dir(&a)
        .args(["build", "--offline"])
        .env("CARGO_TARGET_DIR", tmp.path().join("plain-target"))
        .env("RUSTC_WRAPPER", "")
        .env_remove("CARGO_BUILD_RUSTC_WRAPPER")
        .env_remove("RUSTFLAGS")
        .env_remove("CARGO_ENCODED_RUSTFLAGS");
    run_ok(plain);
    let out = Command::new(tmp.path().join("plain-target/debug/app"))
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), run_app(&a, "debug"));
}

#[test]
fn builds_without_incremental_keep_their_own_entries() {
    let tmp = tempfile::tempdir().unwrap();
    let store = tmp.path().join("store");

    // CARGO_INCREMENTAL=0: no incremental state anywhere.
    let a = fixture_with_mark(&tmp.path().join("a"));
    let mut c = cargo_inc(&a, &store, &["build"]);
    c.env("CARGO_INCREMENTAL", "0");
    run_ok(c);
    let units = misses(&store);
    assert_eq!(hits(&store), 0);
    assert_eq!(incremental_crates(&a), 0);
    let expected = run_app(&a, "debug");

    // The same sources built incrementally: an incremental result is
    // another compile's (other codegen units), so the workspace crates miss
    // (and only they compile incrementally); registry crates are never
    // incremental and hit.
    let b = fixture_with_mark(&tmp.path().join("b"));
    let (h, m) = (hits(&store), misses(&store));
    build_inc(&b, &store);
    let incremental = incremental_crates(&b) as u64;
    assert!(incremental >= 7, "every member is incremental");
    assert_eq!(misses(&store) - m, incremental, "{}", stats(&store));
    assert_eq!(hits(&store) - h, units - incremental);
    assert_eq!(run_app(&b, "debug"), expected);

    // A profile that turns incremental off is served the entries of
    // CARGO_INCREMENTAL=0 (cargo gives both the same arguments).
    let c = fixture_with_mark(&tmp.path().join("c"));
    let manifest = c.join("Cargo.toml");
    let mut text = std::fs::read_to_string(&manifest).unwrap();
    text.push_str("\n[profile.dev]\nincremental = false\n");
    std::fs::write(&manifest, text).unwrap();
    let (h, m) = (hits(&store), misses(&store));
    build_inc(&c, &store);
    assert_eq!(hits(&store) - h, units, "{}", stats(&store));
    assert_eq!(misses(&store), m);
    assert_eq!(incremental_crates(&c), 0);
    assert_eq!(run_app(&c, "debug"), expected);

    // `rust.incremental = "strip"` compiles b's units with b's arguments
    // minus `-C incremental`: not b's incremental results, so each misses
    // and is compiled (and cached) without incremental state.
    let d = fixture_with_mark(&tmp.path().join("d"));
    let (h, m) = (hits(&store), misses(&store));
    let mut cmd = cargo_inc(&d, &store, &["build"]);
    cmd.env("KACHE_RUST_INCREMENTAL", "strip");
    run_ok(cmd);
    assert_eq!(misses(&store) - m, incremental, "{}", stats(&store));
    assert_eq!(hits(&store) - h, units - incremental);
    assert_eq!(incremental_crates(&d), 0);
    assert_eq!(run_app(&d, "debug"), expected);

    // Under `passthrough`, incremental compiles run uncached.
    let e = fixture_with_mark(&tmp.path().join("e"));
    let mut cmd = cargo_inc(&e, &store, &["build"]);
    cmd.env("KACHE_RUST_INCREMENTAL", "passthrough");
    run_ok(cmd);
    let s = stats(&store);
    assert_eq!(
        counter_at(&s, "rust.passthrough_reasons.incremental"),
        incremental,
        "{s}"
    );
    assert_eq!(run_app(&e, "debug"), expected);
}
