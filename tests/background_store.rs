//! Large outputs (a linked binary) are stored after the wrapper call returned
//! (`cache.background_store`), so the last step of an edit-rebuild loop does not wait for
//! hashing, copying and fsyncing tens of MB. What must hold:
//! - cargo does not wait for that store (the background side holds none of its pipes);
//! - whoever reads what builds stored (`kache stats`, a lookup of the same key) waits for it;
//! - the bytes stored are the ones the compile made: a file written again in place before
//!   the store is not stored, and one replaced by a new file is read through the descriptor
//!   opened when the compile ended.
//!
//! `KACHE_TEST_BACKGROUND_DELAY_MS` holds the background store back, so each test acts in
//! the window between the build's return and the store.
#![cfg(target_os = "linux")]

mod common;

use std::fs::{File, OpenOptions};
use std::io::{Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use common::*;

const DELAY_MS: &str = "4000";

/// Builds `dir` with the background store held back.
fn build_delayed(dir: &Path, store: &Path) {
    let mut c = cargo(dir, store, &["build"]);
    c.env("KACHE_TEST_BACKGROUND_DELAY_MS", DELAY_MS);
    run_ok(c);
}

/// A store and a worktree `a` built into it, the build returned and its binary's store
/// still held back (checked).
fn built_with_store_pending() -> (tempfile::TempDir, PathBuf, PathBuf) {
    let tmp = tempfile::tempdir().unwrap();
    let store = tmp.path().join("store");
    let a = fixture_at(&tmp.path().join("a"));
    build_delayed(&a, &store);
    // cargo is back while the binary's store still waits: it did not wait for it.
    assert!(
        background_store_running(&store),
        "the build returned after its background store ended (cargo waited for it)"
    );
    (tmp, store, a)
}

/// A new worktree `b` built from `store`: it must miss nothing (every unit hits, the
/// binary's entry included) and its app must run right.
fn new_worktree_hits_all(tmp: &Path, store: &Path) -> (PathBuf, std::process::Output) {
    let misses = counter_at(&stats(store), "rust.misses");
    let b = fixture_at(&tmp.join("b"));
    let out = build(&b, store);
    assert_eq!(
        counter_at(&stats(store), "rust.misses"),
        misses,
        "B hits all"
    );
    assert!(run_app(&b, "debug").contains("gen: 42"));
    (b, out)
}

/// True while some process holds the store's background marker.
fn background_store_running(store: &Path) -> bool {
    let f = OpenOptions::new()
        .read(true)
        .write(true)
        .open(store.join("locks/background"))
        .expect("the background marker exists once a store ran in the background");
    match f.try_lock() {
        Ok(()) => false,
        Err(std::fs::TryLockError::WouldBlock) => true,
        Err(e) => panic!("locking the background marker: {e:?}"),
    }
}

/// The app binary cargo's deps directory holds (`app-<hash>`, no extension).
fn app_binary(dir: &Path) -> PathBuf {
    let deps = dir.join("target/debug/deps");
    std::fs::read_dir(&deps)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .find(|p| {
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            name.starts_with("app-") && p.extension().is_none()
        })
        .expect("app binary in deps")
}

#[test]
fn a_binary_is_stored_after_the_build_returns_and_readers_wait_for_it() {
    let (tmp, store, _a) = built_with_store_pending();
    // `kache stats` waits for it, so every unit of the build is counted.
    let s = stats(&store);
    assert!(!background_store_running(&store));
    let misses = counter_at(&s, "rust.misses");
    assert!(misses > 0);
    // The binary's entry is there: a new worktree hits every unit and runs right.
    let (_b, out) = new_worktree_hits_all(tmp.path(), &store);
    assert!(compiled_units(&out).contains(&"app".to_string()));
}

#[test]
fn a_build_of_the_same_unit_waits_for_the_background_store_and_hits() {
    let (tmp, store, _a) = built_with_store_pending();
    let b = fixture_at(&tmp.path().join("b"));
    // No `kache stats` in between: B's wrapper call for the app waits on the key's lock,
    // which the background store holds, and then finds the entry.
    build(&b, &store);
    let s = stats(&store);
    let hits = counter_at(&s, "rust.hits");
    assert!(hits > 0);
    let c = fixture_at(&tmp.path().join("c"));
    build(&c, &store);
    let s2 = stats(&store);
    assert_eq!(
        counter_at(&s2, "rust.misses"),
        counter_at(&s, "rust.misses"),
        "B missed nothing C did not also hit"
    );
    assert!(run_app(&b, "debug").contains("gen: 42"));
}

#[test]
fn an_output_written_again_before_its_background_store_is_not_stored() {
    let (tmp, store, a) = built_with_store_pending();
    // Another writer changes the binary in place (same file, new bytes) before the store.
    let bin = app_binary(&a);
    let mut f = OpenOptions::new().write(true).open(&bin).unwrap();
    f.seek(SeekFrom::Start(64)).unwrap();
    f.write_all(&[0xAB; 4096]).unwrap();
    drop(f);
    let s = stats(&store);
    assert!(
        counter_at(&s, "rust.not_stored.output-changed") >= 1,
        "not stored as changed: {s:#}"
    );
    // Nothing of it was stored: a new worktree compiles the app and runs right.
    let b = fixture_at(&tmp.path().join("b"));
    let out = build(&b, &store);
    assert!(compiled_units(&out).contains(&"app".to_string()));
    assert!(run_app(&b, "debug").contains("gen: 42"));
    let c = fixture_at(&tmp.path().join("c"));
    build(&c, &store);
    assert!(run_app(&c, "debug").contains("gen: 42"));
}

#[test]
fn an_output_replaced_before_its_background_store_is_stored_as_the_compile_made_it() {
    let (tmp, store, a) = built_with_store_pending();
    // A new file takes the binary's name (as a linker writes one): the store reads the
    // file the compile made, through the descriptor it opened then.
    let bin = app_binary(&a);
    let replacement = bin.with_extension("new");
    std::fs::write(&replacement, b"not a program").unwrap();
    std::fs::rename(&replacement, &bin).unwrap();
    let (b, _) = new_worktree_hits_all(tmp.path(), &store);
    assert_ne!(
        File::open(app_binary(&b))
            .unwrap()
            .metadata()
            .unwrap()
            .len(),
        13
    );
}
