//! The cache never breaks a build: damaged or missing blobs, a read-only
//! store and a full store filesystem all end in a successful build with the
//! right output (the cache degrades to running rustc).

mod common;

use common::*;
use std::path::Path;
use std::process::Command;

fn all_blobs(store: &Path) -> Vec<std::path::PathBuf> {
    let mut v = Vec::new();
    for shard in std::fs::read_dir(store.join("blobs")).unwrap().flatten() {
        for b in std::fs::read_dir(shard.path()).unwrap().flatten() {
            v.push(b.path());
        }
    }
    v
}

fn is_root() -> bool {
    kache_platform::process::is_root()
}

/// Tests that mount need root; in CI they must run, elsewhere they say why not.
fn require_root() -> bool {
    if is_root() {
        return true;
    }
    assert!(
        std::env::var("CI").as_deref() != Ok("true"),
        "this test mounts filesystems and needs root in CI"
    );
    eprintln!("not root: this test needs to mount a filesystem; not run");
    false
}

struct Mount(std::path::PathBuf);
impl Drop for Mount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

fn sh(cmd: &str) {
    let ok = Command::new("sh")
        .arg("-c")
        .arg(cmd)
        .status()
        .unwrap()
        .success();
    assert!(ok, "command failed: {cmd}");
}

#[test]
fn damaged_blobs_are_misses_and_the_build_output_stays_right() {
    let tmp = tempfile::tempdir().unwrap();
    let store = tmp.path().join("store");
    let a = fixture_at(&tmp.path().join("a"));
    build(&a, &store);
    let expected = run_app(&a, "debug");
    // Flip one byte in the middle of every blob: same size, wrong content.
    for b in all_blobs(&store) {
        let mut bytes = std::fs::read(&b).unwrap();
        if bytes.is_empty() {
            continue;
        }
        let mid = bytes.len() / 2;
        bytes[mid] ^= 0xff;
        let mut perm = std::fs::metadata(&b).unwrap().permissions();
        #[allow(clippy::permissions_set_readonly_false)]
        perm.set_readonly(false);
        std::fs::set_permissions(&b, perm).unwrap();
        std::fs::write(&b, &bytes).unwrap();
    }
    let b = fixture_at(&tmp.path().join("b"));
    build(&b, &store);
    assert_eq!(run_app(&b, "debug"), expected);
    let s = stats(&store);
    assert_eq!(
        counter(&s, "rust", "hits"),
        0,
        "a damaged blob must never be served: {s}"
    );
}

#[test]
fn deleted_blobs_are_misses_and_get_repaired() {
    let tmp = tempfile::tempdir().unwrap();
    let store = tmp.path().join("store");
    let a = fixture_at(&tmp.path().join("a"));
    build(&a, &store);
    let units = counter(&stats(&store), "rust", "misses");
    for b in all_blobs(&store) {
        std::fs::remove_file(b).unwrap();
    }
    let b = fixture_at(&tmp.path().join("b"));
    build(&b, &store);
    assert_eq!(run_app(&b, "debug"), run_app(&a, "debug"));
    // The misses stored the blobs again: a third worktree hits everything.
    let c = fixture_at(&tmp.path().join("c"));
    let before = counter(&stats(&store), "rust", "hits");
    build(&c, &store);
    assert_eq!(counter(&stats(&store), "rust", "hits") - before, units);
}

#[test]
fn read_only_store_still_serves_hits_and_never_fails_a_build() {
    if !require_root() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let store = tmp.path().join("store");
    let a = fixture_at(&tmp.path().join("a"));
    build(&a, &store);
    let ro = tmp.path().join("ro-store");
    std::fs::create_dir(&ro).unwrap();
    sh(&format!(
        "mount --bind {} {} && mount -o remount,ro,bind {}",
        store.display(),
        ro.display(),
        ro.display()
    ));
    let _guard = Mount(ro.clone());
    let b = fixture_at(&tmp.path().join("b"));
    edit_core(&b);
    let out = build(&b, &ro);
    assert!(!String::from_utf8_lossy(&out.stderr).contains("panicked"));
    assert!(run_app(&b, "debug").contains("core: howdy, fixture"));
}

fn edit_core(dir: &Path) {
    let p = dir.join("core/src/lib.rs");
    let t = std::fs::read_to_string(&p)
        .unwrap()
        .replace("hello, {name}", "howdy, {name}");
    std::fs::write(p, t).unwrap();
}

#[test]
fn full_store_filesystem_degrades_to_plain_compiles() {
    if !require_root() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let store = tmp.path().join("tiny");
    std::fs::create_dir(&store).unwrap();
    sh(&format!(
        "mount -t tmpfs -o size=600k tmpfs {}",
        store.display()
    ));
    let _guard = Mount(store.clone());
    let a = fixture_at(&tmp.path().join("a"));
    let out = build(&a, &store);
    assert!(!String::from_utf8_lossy(&out.stderr).contains("panicked"));
    assert!(run_app(&a, "debug").contains("core: hello, fixture"));
    // And again, with whatever fitted in the store: still right.
    run_ok(cargo(&a, &store, &["clean"]));
    build(&a, &store);
    assert!(run_app(&a, "debug").contains("csys: 5"));
}

#[test]
fn disabled_kache_is_a_plain_passthrough() {
    let tmp = tempfile::tempdir().unwrap();
    let store = tmp.path().join("store");
    let a = fixture_at(&tmp.path().join("a"));
    let mut c = cargo(&a, &store, &["build"]);
    c.env("KACHE_DISABLE", "1");
    run_ok(c);
    assert!(run_app(&a, "debug").contains("core: hello, fixture"));
    let s = stats(&store);
    assert_eq!(
        counter(&s, "rust", "misses") + counter(&s, "rust", "hits"),
        0,
        "{s}"
    );
    assert_eq!(s["store"]["entries"], 0);
}

#[test]
fn refused_invocations_are_counted_with_their_reason() {
    let tmp = tempfile::tempdir().unwrap();
    let store = tmp.path().join("store");
    let a = fixture_at(&tmp.path().join("a"));
    // --emit=asm is not something kache caches: every unit passes through.
    run_ok(cargo(
        &a,
        &store,
        &["rustc", "-p", "fixture-core", "--", "--emit=asm"],
    ));
    let s = stats(&store);
    assert!(
        s["rust"]["passthrough_reasons"]["emit:asm"]
            .as_u64()
            .unwrap_or(0)
            >= 1,
        "{s}"
    );
    assert!(counter(&s, "rust", "passthroughs") >= 1);
}
