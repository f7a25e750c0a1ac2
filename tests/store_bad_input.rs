//! A damaged or hostile store never produces a wrong artifact or a panic.
//!
//! Corrupt entries, truncated or bit-flipped blobs, a read-only store and a
//! full disk each turn a lookup into a miss that says why (or a store into a
//! clear error), and the next store of the same key repairs the damage.

mod store_support;

use std::fs::{self, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use store_support::*;

/// A sandbox holding key `name` with one output `out.rlib` of `len` bytes.
fn stored(name: &str, len: usize) -> (Sandbox, String, PathBuf, Vec<u8>) {
    let sb = Sandbox::new();
    let key = key_of(name);
    let src = write_file(&sb.path().join("src"), "out.rlib", name, len);
    sb.put(&key, std::slice::from_ref(&src));
    let bytes = fs::read(&src).unwrap();
    (sb, key, src, bytes)
}

fn flip_byte(path: &Path, at_fraction: f64) {
    let mut bytes = fs::read(path).unwrap();
    let i = ((bytes.len() as f64 * at_fraction) as usize).min(bytes.len() - 1);
    bytes[i] ^= 0x5a;
    // As root the 0444 mode of a blob does not stop this write, which is
    // exactly the damage a careless tool could do.
    OpenOptions::new()
        .write(true)
        .open(path)
        .unwrap()
        .write_all(&bytes)
        .unwrap();
}

fn assert_hit(sb: &Sandbox, key: &str, dir: &Path, bytes: &[u8]) {
    let out = sb.get(key, dir, false);
    assert!(
        out.status.success(),
        "expected a hit: {}",
        text(&out.stderr)
    );
    assert!(
        fs::read(dir.join("out.rlib")).unwrap() == bytes,
        "restored wrong bytes"
    );
}

#[test]
fn a_corrupt_entry_is_a_miss_with_its_reason_and_the_next_put_repairs_it() {
    let (sb, key, src, bytes) = stored("corrupt-entry", 10_000);
    let entry = sb.entry_path(&key);
    for (damage, reason) in [
        (
            "flip a byte in the header",
            "corrupt entry: entry checksum mismatch",
        ),
        ("truncate", "corrupt entry: entry checksum mismatch"),
        ("replace with garbage", "corrupt entry: not a kache entry"),
        ("empty", "corrupt entry: not a kache entry"),
    ] {
        match damage {
            "flip a byte in the header" => flip_byte(&entry, 0.5),
            "truncate" => {
                let len = fs::metadata(&entry).unwrap().len();
                OpenOptions::new()
                    .write(true)
                    .open(&entry)
                    .unwrap()
                    .set_len(len - 40)
                    .unwrap();
            }
            "replace with garbage" => fs::write(&entry, b"\x00\xffnot an entry at all").unwrap(),
            _ => fs::write(&entry, b"").unwrap(),
        }
        let dir = sb.path().join(damage.replace(' ', "-"));
        let out = sb.get(&key, &dir, false);
        assert_eq!(miss_reason(&out), reason, "after: {damage}");
        assert!(
            !dir.join("out.rlib").exists(),
            "{damage}: a miss must place nothing"
        );
        // The damaged entry is dropped, so the next compile re-stores it.
        assert!(
            !entry.exists(),
            "{damage}: the corrupt entry must be removed"
        );
        sb.put(&key, std::slice::from_ref(&src));
        assert_hit(&sb, &key, &dir, &bytes);
    }
}

#[test]
fn a_truncated_blob_is_a_miss_and_the_next_put_repairs_it() {
    let (sb, key, src, bytes) = stored("truncated-blob", 300_000);
    let blob = sb.blob_path(&hash_hex(&bytes));
    OpenOptions::new()
        .write(true)
        .open(&blob)
        .unwrap()
        .set_len(100_000)
        .unwrap();

    let dir = sb.path().join("w");
    let out = sb.get(&key, &dir, true);
    let reason = miss_reason(&out);
    assert!(reason.ends_with("has the wrong size"), "{reason}");
    assert!(!dir.join("out.rlib").exists(), "a miss must place nothing");
    // The short blob is removed at once: the next lookup says it is missing.
    assert!(miss_reason(&sb.get(&key, &dir, true)).ends_with("missing"));

    sb.put(&key, &[src]);
    assert_eq!(
        fs::metadata(&blob).unwrap().len(),
        300_000,
        "the put rewrote the blob"
    );
    assert_hit(&sb, &key, &dir, &bytes);
    assert!(sb.run(&["verify"]).status.success());
}

#[test]
fn a_damaged_blob_of_the_right_size_is_caught_by_verify_then_repaired() {
    let (sb, key, src, bytes) = stored("flipped-blob", 64 * 1024);
    let blob = sb.blob_path(&hash_hex(&bytes));
    flip_byte(&blob, 0.3);

    // Lookups check sizes only (the hot path); the full re-hash is verify's.
    let out = sb.run(&["verify"]);
    assert_clean(&out);
    assert_eq!(
        out.status.code(),
        Some(1),
        "verify must fail on a damaged blob"
    );
    let report = text(&out.stdout);
    assert!(
        report.contains("1 corrupt blobs") && report.contains("1 removed"),
        "{report}"
    );

    let dir = sb.path().join("w");
    let reason = miss_reason(&sb.get(&key, &dir, false));
    assert!(
        reason.starts_with("blob ") && reason.ends_with(" missing"),
        "{reason}"
    );
    sb.put(&key, &[src]);
    assert_hit(&sb, &key, &dir, &bytes);
    assert!(sb.run(&["verify"]).status.success());
}

#[test]
fn junk_in_the_store_and_bad_keys_are_refused_without_panics() {
    let (sb, key, src, bytes) = stored("junk", 1000);
    // Stray files a crash, a sync tool or a user could leave.
    fs::create_dir_all(sb.store.join("entries/zz")).unwrap();
    fs::write(sb.store.join("entries/zz/not-a-key"), b"junk").unwrap();
    fs::create_dir_all(sb.store.join("blobs/ab")).unwrap();
    fs::write(sb.store.join("blobs/ab/short"), b"junk").unwrap();
    fs::write(
        sb.store.join("stats"),
        b"rust.hits lots\n\xff\xfe garbage\nrust.misses 1\n",
    )
    .unwrap();

    for args in [
        &["stats", "--json"][..],
        &["gc", "--max-size", "1GiB"],
        &["verify"],
    ] {
        let out = sb.run(args);
        assert_clean(&out);
        assert!(
            matches!(out.status.code(), Some(0) | Some(1)),
            "{args:?}: {}",
            text(&out.stderr)
        );
    }
    assert!(
        sb.run(&["verify"]).status.success(),
        "verify removed the junk on its first pass"
    );
    // The damaged counters file keeps its readable lines and still counts.
    assert_eq!(sb.stats()["rust"]["misses"], 1);
    let out = sb
        .kache()
        .args(["debug", "put", &key, "--count", "rust.misses"])
        .arg(&src)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(sb.stats()["rust"]["misses"], 2);
    assert_hit(&sb, &key, &sb.path().join("w"), &bytes);

    // Keys that are not 64 lowercase hex digits never become paths.
    for bad in [
        "../../../etc/passwd",
        "ABABABABABABABABABABABABABABABABABABABABABABABABABABABABABABABAB",
        "",
    ] {
        let out = sb
            .kache()
            .args(["debug", "put", bad])
            .arg(&src)
            .output()
            .unwrap();
        assert_clean(&out);
        assert!(
            !out.status.success(),
            "put with key {bad:?} must be refused"
        );
        assert!(
            text(&out.stderr).contains("invalid entry key"),
            "{}",
            text(&out.stderr)
        );
        assert_eq!(
            miss_reason(&sb.get(bad, &sb.path().join("w2"), false)),
            "no entry"
        );
    }
}

#[test]
fn a_read_only_store_still_serves_hits_and_refuses_stores_clearly() {
    if !root_or_skip("a_read_only_store_still_serves_hits_and_refuses_stores_clearly") {
        return;
    }
    let (sb, key, src, bytes) = stored("read-only", 50_000);
    let corrupt_key = key_of("read-only-corrupt");
    sb.put(&corrupt_key, std::slice::from_ref(&src));
    flip_byte(&sb.entry_path(&corrupt_key), 0.5);

    // Root ignores permission bits, so "unwritable" has to be a read-only mount.
    let ro = Mount::read_only_bind(&sb.store);
    let ro_sb = Sandbox::with_store(ro.dir.clone());
    let probe = OpenOptions::new()
        .create(true)
        .truncate(true)
        .write(true)
        .open(ro.dir.join("probe"));
    assert!(probe.is_err(), "the bind mount must be read-only");

    assert_hit(&ro_sb, &key, &ro_sb.path().join("w"), &bytes);
    assert_eq!(
        miss_reason(&ro_sb.get(&key_of("absent"), &ro_sb.path().join("w2"), false)),
        "no entry"
    );
    // Damage is still a miss even though it cannot be cleaned up here.
    let reason = miss_reason(&ro_sb.get(&corrupt_key, &ro_sb.path().join("w3"), false));
    assert!(reason.starts_with("corrupt entry"), "{reason}");

    let out = ro_sb
        .kache()
        .args(["debug", "put", &key_of("new")])
        .arg(&src)
        .output()
        .unwrap();
    assert_clean(&out);
    assert!(
        !out.status.success(),
        "a put into a read-only store must fail"
    );
    assert!(
        text(&out.stderr).contains("Read-only file system"),
        "unclear error: {}",
        text(&out.stderr)
    );
    let stats = ro_sb.run(&["stats", "--json"]);
    assert!(
        stats.status.success(),
        "stats must work on a read-only store: {}",
        text(&stats.stderr)
    );
}

#[test]
fn a_full_disk_fails_the_store_cleanly_and_keeps_what_was_there() {
    if !root_or_skip("a_full_disk_fails_the_store_cleanly_and_keeps_what_was_there") {
        return;
    }
    let disk = Mount::loop_image("ext4", "8M");
    let sb = Sandbox::with_store(disk.dir.join("store"));
    let small = write_file(&sb.path().join("src"), "out.rlib", "small", 20_000);
    let small_bytes = fs::read(&small).unwrap();
    sb.put(&key_of("small"), std::slice::from_ref(&small));

    // Larger than the whole filesystem: the store runs out of space mid-write.
    let big = write_file(&sb.path().join("bigsrc"), "big.rlib", "big", 16 << 20);
    let out = sb
        .kache()
        .args(["debug", "put", &key_of("big")])
        .arg(&big)
        .output()
        .unwrap();
    assert_clean(&out);
    assert!(!out.status.success(), "a put onto a full disk must fail");
    assert!(
        text(&out.stderr).contains("No space left on device"),
        "unclear error: {}",
        text(&out.stderr)
    );
    // Nothing half-written is left to be served or to hold the space.
    let temps: Vec<_> = fs::read_dir(sb.store.join("tmp"))
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .collect();
    assert!(
        temps.is_empty(),
        "partial temporaries left on the full disk: {temps:?}"
    );
    assert_eq!(
        miss_reason(&sb.get(&key_of("big"), &sb.path().join("w"), false)),
        "no entry"
    );
    assert_hit(&sb, &key_of("small"), &sb.path().join("w"), &small_bytes);
    let verify = sb.run(&["verify"]);
    assert!(verify.status.success(), "{}", text(&verify.stdout));

    // Fill the disk completely, then restore onto it: the restore fails
    // clearly and leaves no truncated output behind.
    let mut filler = fs::File::create(disk.dir.join("filler")).unwrap();
    for chunk in [64 * 1024, 4096, 512] {
        while filler.write_all(&vec![7u8; chunk]).is_ok() {}
        let _ = filler.sync_all();
    }
    let dest = disk.dir.join("worktree");
    fs::create_dir_all(&dest).unwrap_or(());
    let out = sb.get(&key_of("small"), &dest, false);
    assert!(
        !out.status.success(),
        "a restore onto a full disk cannot succeed: {}",
        text(&out.stdout)
    );
    assert!(
        text(&out.stderr).contains("No space left on device"),
        "{}",
        text(&out.stderr)
    );
    if let Ok(mut f) = fs::File::open(dest.join("out.rlib")) {
        let mut got = Vec::new();
        f.read_to_end(&mut got).unwrap();
        assert!(got == small_bytes, "a failed restore left a partial output");
    }
    // Free the space: the store works again.
    drop(filler);
    fs::remove_file(disk.dir.join("filler")).unwrap();
    sb.put(&key_of("small2"), &[small]);
    assert_hit(&sb, &key_of("small2"), &sb.path().join("w4"), &small_bytes);
}
