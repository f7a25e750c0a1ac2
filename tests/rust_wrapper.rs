//! End-to-end behaviour of the rustc wrapper with real cargo on the fixture
//! workspace (lib and bin members, a proc-macro, a build script generating
//! `include!`d code, `env!`, `include_str!`, and a build script compiling C
//! through the `cc` crate).

mod common;

use common::*;
use std::path::Path;

/// Compile units kache can cache in the fixture's dev build.
fn units_of(v: &serde_json::Value) -> u64 {
    counter(v, "rust", "hits") + counter(v, "rust", "misses")
}

#[test]
fn clean_rebuild_hits_every_unit_without_running_rustc() {
    let tmp = tempfile::tempdir().unwrap();
    let store = tmp.path().join("store");
    let a = fixture_at(&tmp.path().join("a"));
    build(&a, &store);
    let first = stats(&store);
    let units = counter(&first, "rust", "misses");
    assert!(units >= 10, "expected every unit to miss once: {first}");
    assert_eq!(counter(&first, "rust", "hits"), 0);
    let expected = run_app(&a, "debug");

    run_ok(cargo(&a, &store, &["clean"]));
    build(&a, &store);
    let second = stats(&store);
    assert_eq!(counter(&second, "rust", "hits"), units, "{second}");
    assert_eq!(counter(&second, "rust", "misses"), units);
    assert_eq!(
        counter(&second, "rust", "compiler_runs"),
        counter(&first, "rust", "compiler_runs"),
        "a hit must not start rustc"
    );
    assert_eq!(run_app(&a, "debug"), expected);
    assert!(
        expected.contains("csys: 5") && expected.contains("gen: 42"),
        "{expected}"
    );
}

#[test]
fn second_worktree_hits_workspace_crates_and_carries_no_first_path() {
    let tmp = tempfile::tempdir().unwrap();
    let store = tmp.path().join("store");
    let a = fixture_at(&tmp.path().join("worktree-alpha"));
    let b = fixture_at(&tmp.path().join("worktree-bravo"));
    build(&a, &store);
    let units = counter(&stats(&store), "rust", "misses");
    let out_b = build(&b, &store);
    let s = stats(&store);
    assert_eq!(
        counter(&s, "rust", "hits"),
        units,
        "every unit hits in B: {s}"
    );
    assert_eq!(counter(&s, "rust", "misses"), units);
    assert_eq!(run_app(&a, "debug"), run_app(&b, "debug"));
    // Warnings of the cached compile are replayed on the hit.
    assert!(
        String::from_utf8_lossy(&out_b.stderr).contains("unused_variable"),
        "warning not replayed:\n{}",
        String::from_utf8_lossy(&out_b.stderr)
    );
    let leaked = files_containing(&b.join("target"), a.to_str().unwrap().as_bytes());
    assert!(
        leaked.is_empty(),
        "first worktree's path found in: {leaked:?}"
    );
}

fn edit(path: &Path, from: &str, to: &str) {
    let text = std::fs::read_to_string(path).unwrap();
    assert!(text.contains(from), "{from:?} not in {}", path.display());
    std::fs::write(path, text.replace(from, to)).unwrap();
}

#[test]
fn edits_miss_exactly_where_inputs_changed() {
    let tmp = tempfile::tempdir().unwrap();
    let store = tmp.path().join("store");
    let a = fixture_at(&tmp.path().join("a"));
    build(&a, &store);
    let base = stats(&store);

    // A workspace source: its crate and its dependents recompile, and miss.
    edit(&a.join("core/src/lib.rs"), "hello, {name}", "hi, {name}");
    let out = build(&a, &store);
    let s = stats(&store);
    let mut rebuilt = compiled_units(&out);
    rebuilt.sort();
    assert_eq!(rebuilt, vec!["app", "fixture-core"]);
    assert_eq!(
        counter(&s, "rust", "misses") - counter(&base, "rust", "misses"),
        2
    );
    assert!(run_app(&a, "debug").contains("core: hi, fixture"));

    // An include_str! file.
    edit(&a.join("texty/banner.txt"), "banner v1", "banner v2");
    build(&a, &store);
    assert!(run_app(&a, "debug").contains("texty: banner v2"));

    // An env! / option_env! value.
    let mut c = cargo(&a, &store, &["build"]);
    c.env("FIXTURE_FLAVOUR", "spicy");
    run_ok(c);
    assert!(run_app(&a, "debug").contains("envy built spicy"));
    // Back to unset: the earlier entry is served again, and it is right.
    build(&a, &store);
    assert!(run_app(&a, "debug").contains("envy built plain"));

    // Features.
    run_ok(cargo(&a, &store, &["build", "--features", "app/loud"]));
    assert!(run_app(&a, "debug").contains("LOUD"));
    build(&a, &store);
    assert!(!run_app(&a, "debug").contains("LOUD"));

    // RUSTFLAGS: everything misses, nothing is served from the plain build.
    let before = stats(&store);
    let mut c = cargo(&a, &store, &["build"]);
    c.env("RUSTFLAGS", "--cfg fixture_flag");
    run_ok(c);
    let after = stats(&store);
    assert_eq!(
        counter(&after, "rust", "hits"),
        counter(&before, "rust", "hits"),
        "{after}"
    );
    assert!(counter(&after, "rust", "misses") > counter(&before, "rust", "misses"));

    // The release profile misses too.
    let before = stats(&store);
    run_ok(cargo(&a, &store, &["build", "--release"]));
    let after = stats(&store);
    assert_eq!(
        counter(&after, "rust", "hits"),
        counter(&before, "rust", "hits")
    );
    assert!(run_app(&a, "release").contains("core: hi, fixture"));
}

#[test]
fn check_and_build_never_serve_each_other() {
    let tmp = tempfile::tempdir().unwrap();
    let store = tmp.path().join("store");
    let a = fixture_at(&tmp.path().join("a"));
    let b = fixture_at(&tmp.path().join("b"));
    run_ok(cargo(&a, &store, &["check"]));
    let after_check = stats(&store);
    assert_eq!(counter(&after_check, "rust", "hits"), 0);
    // A build after a check: the metadata-only entries must not be restored
    // as full builds, so the binary is produced and runs.
    build(&a, &store);
    let after_build = stats(&store);
    assert!(run_app(&a, "debug").contains("core: hello, fixture"));
    // Build-script and proc-macro units are shared by check and build (same
    // args); every other unit must have missed.
    assert!(counter(&after_build, "rust", "misses") > counter(&after_check, "rust", "misses") + 5);
    // And the reverse in a fresh worktree: check after build gets check entries.
    run_ok(cargo(&b, &store, &["check"]));
    let s = stats(&store);
    assert!(counter(&s, "rust", "hits") >= 7, "{s}");
    assert!(
        !b.join("target/debug/app").exists(),
        "check must not produce the binary"
    );
}

#[test]
fn two_worktrees_building_at_once_compile_each_unit_once() {
    let tmp = tempfile::tempdir().unwrap();
    let store = tmp.path().join("store");
    let a = fixture_at(&tmp.path().join("a"));
    let b = fixture_at(&tmp.path().join("b"));
    let mut ca = cargo(&a, &store, &["build"]);
    let mut cb = cargo(&b, &store, &["build"]);
    let ha = ca.spawn().unwrap();
    let hb = cb.spawn().unwrap();
    let oa = ha.wait_with_output().unwrap();
    let ob = hb.wait_with_output().unwrap();
    assert!(oa.status.success() && ob.status.success());
    let s = stats(&store);
    let units = units_of(&s) / 2;
    assert_eq!(
        counter(&s, "rust", "misses"),
        units,
        "each unit compiled once in total: {s}"
    );
    assert_eq!(counter(&s, "rust", "hits"), units);
    assert_eq!(run_app(&a, "debug"), run_app(&b, "debug"));
}
