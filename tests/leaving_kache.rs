//! A target kache restored into stays an ordinary cargo target: once kache is out of the
//! picture (uninstalled, `RUSTC_WRAPPER` unset, another wrapper), an edit rebuilds with plain
//! cargo. A restored output that rustc finds read-only fails that build ("output file … is not
//! writeable"), which hardlink restores did: a hardlink shares the blob's read-only inode.
#![cfg(unix)]

mod common;

use std::os::unix::fs::PermissionsExt;
use std::process::Command;

use common::*;

#[test]
fn a_target_kache_restored_into_builds_an_edit_without_kache() {
    let tmp = tempfile::tempdir().unwrap();
    // The store beside the worktrees, on one filesystem: where a hardlink could be made.
    let store = tmp.path().join("store");
    let a = fixture_at(&tmp.path().join("a"));
    let b = fixture_at(&tmp.path().join("b"));
    build(&a, &store);
    let misses = counter_at(&stats(&store), "rust.misses");
    build(&b, &store);
    assert!(counter_at(&stats(&store), "rust.hits") > 0);
    assert_eq!(
        counter_at(&stats(&store), "rust.misses"),
        misses,
        "B hits everything"
    );

    // Every output B got from the store is a file cargo and rustc may replace.
    let deps = b.join("target/debug/deps");
    let read_only: Vec<_> = std::fs::read_dir(&deps)
        .unwrap()
        .flatten()
        .filter(|e| e.metadata().unwrap().permissions().mode() & 0o200 == 0)
        .map(|e| e.file_name())
        .collect();
    assert!(read_only.is_empty(), "read-only outputs: {read_only:?}");

    // kache gone: an edit of a library every other crate uses, then plain cargo.
    let lib = b.join("core/src/lib.rs");
    let text = std::fs::read_to_string(&lib).unwrap();
    std::fs::write(&lib, format!("{text}\npub const EDITED: u32 = 1;\n")).unwrap();
    let mut plain = Command::new("cargo");
    plain
        .current_dir(&b)
        .args(["build", "--offline"])
        .env("CARGO_INCREMENTAL", "0")
        .env("CARGO_TERM_COLOR", "never");
    for v in [
        "RUSTC_WRAPPER",
        "CARGO_BUILD_RUSTC_WRAPPER",
        "RUSTC_WORKSPACE_WRAPPER",
        "CARGO_TARGET_DIR",
        "CARGO_BUILD_TARGET_DIR",
        "RUSTFLAGS",
    ] {
        plain.env_remove(v);
    }
    let out = run_ok(plain);
    assert!(
        compiled_units(&out).contains(&"fixture-core".to_string()),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(run_app(&b, "debug").contains("gen: 42"));
}
