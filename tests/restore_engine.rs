//! The restore engine on real filesystems: reflink where the filesystem can
//! clone (btrfs), else a hardlink for the first consumer of a blob and a copy
//! for every other (ext4), and in no case can writing to a restored file
//! change the blob it came from.
//!
//! These tests loop-mount images, which needs root. CI runs as root, so
//! there a failure to mount fails the test; it is skipped (with a message)
//! only off CI as a non-root user.
#![cfg(target_os = "linux")] // loop-mounted btrfs/ext4, filefrag

mod store_support;

use std::fs::{self, OpenOptions};
use std::io::{Seek, SeekFrom, Write};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, SystemTime};

use store_support::*;

/// Outputs of a typical unit: a large rlib, an executable, an empty rmeta.
fn outputs(src: &Path) -> Vec<PathBuf> {
    let files = vec![
        write_file(src, "libfoo.rlib", "rlib", 512 * 1024),
        write_file(src, "foo-test", "exe", 96 * 1024),
        write_file(src, "libfoo.rmeta", "rmeta", 0),
    ];
    fs::set_permissions(&files[1], fs::Permissions::from_mode(0o755)).unwrap();
    files
}

fn total_len(files: &[PathBuf]) -> u64 {
    files.iter().map(|f| fs::metadata(f).unwrap().len()).sum()
}

/// Restored bytes equal the originals, modes are kept, mtimes are fresh.
fn check_restore(src: &[PathBuf], dir: &Path, not_before: SystemTime) {
    for f in src {
        let r = dir.join(f.file_name().unwrap());
        assert!(
            fs::read(&r).unwrap() == fs::read(f).unwrap(),
            "{} restored wrong bytes",
            r.display()
        );
        let mtime = fs::metadata(&r).unwrap().modified().unwrap();
        // The filesystem's clock may lag the process clock by a tick.
        assert!(
            mtime + Duration::from_millis(50) >= not_before,
            "{} kept a stale mtime",
            r.display()
        );
    }
    let exe = fs::metadata(dir.join("foo-test")).unwrap();
    assert_eq!(
        exe.permissions().mode() & 0o777,
        0o755,
        "the executable bit must survive a restore"
    );
}

/// The physical start of each extent `filefrag -v` reports for `path`.
fn physical_extents(path: &Path) -> Vec<(u64, bool)> {
    let out = Command::new("filefrag")
        .arg("-v")
        .arg(path)
        .output()
        .expect("filefrag (e2fsprogs) must be installed");
    assert!(
        out.status.success(),
        "filefrag -v {}: {}",
        path.display(),
        text(&out.stderr)
    );
    // "   0:        0..     127:       3328..      3455:    128:             last,shared,eof"
    text(&out.stdout)
        .lines()
        .filter_map(|l| {
            let cols: Vec<&str> = l.split(':').map(str::trim).collect();
            if cols.len() < 4 || cols[0].parse::<u64>().is_err() {
                return None;
            }
            let start = cols[2].split("..").next()?.trim().parse().ok()?;
            Some((start, l.contains("shared")))
        })
        .collect()
}

fn blob_of(sb: &Sandbox, bytes: &[u8]) -> PathBuf {
    sb.blob_path(&hash_hex(bytes))
}

/// Overwrites the start of `path` in place (same inode, no truncation): the
/// write a linker or a careless tool could do to a restored file.
fn scribble(path: &Path) {
    let mut f = OpenOptions::new().write(true).open(path).unwrap();
    f.seek(SeekFrom::Start(0)).unwrap();
    f.write_all(b"SCRIBBLED OVER").unwrap();
    f.sync_all().unwrap();
}

fn assert_blob_intact(blob: &Path, original: &[u8]) {
    let bytes = fs::read(blob).unwrap();
    assert!(bytes == original, "the blob {} changed", blob.display());
    assert_eq!(
        hash_hex(&bytes),
        blob.file_name().unwrap().to_string_lossy(),
        "blob no longer matches its name"
    );
}

#[test]
fn restore_on_btrfs_is_a_reflink_sharing_extents_with_the_blob() {
    if !root_or_skip("restore_on_btrfs_is_a_reflink_sharing_extents_with_the_blob") {
        return;
    }
    let m = Mount::loop_image("btrfs", "300M");
    let sb = Sandbox::with_store(m.dir.join("store"));
    let src = outputs(&m.dir.join("src"));
    sb.put(&key_of("btrfs"), &src);

    for (consumer, hardlink) in [("w1", false), ("w2", true), ("w3", true)] {
        let dir = m.dir.join(consumer);
        let t0 = SystemTime::now();
        let out = sb.get(&key_of("btrfs"), &dir, hardlink);
        // Reflink wins over hardlink even where a hardlink is allowed.
        assert_eq!(
            placed(&out),
            Placed {
                files: 3,
                reflink: total_len(&src),
                hardlink: 0,
                copy: 0
            },
            "{consumer}: {}",
            text(&out.stdout)
        );
        check_restore(&src, &dir, t0);
    }

    // Shared extents: the restored file's extents are the blob's.
    let rlib = fs::read(&src[0]).unwrap();
    let blob = blob_of(&sb, &rlib);
    let restored = m.dir.join("w1/libfoo.rlib");
    assert_ne!(
        fs::metadata(&blob).unwrap().ino(),
        fs::metadata(&restored).unwrap().ino(),
        "a reflink is its own inode"
    );
    let (be, re) = (physical_extents(&blob), physical_extents(&restored));
    assert!(!be.is_empty(), "filefrag shows no extents for the blob");
    assert_eq!(
        be.iter().map(|e| e.0).collect::<Vec<_>>(),
        re.iter().map(|e| e.0).collect::<Vec<_>>(),
        "restored file does not share the blob's physical extents"
    );
    assert!(
        re.iter().all(|e| e.1),
        "filefrag does not flag the restored extents as shared: {re:?}"
    );
    let du = Command::new("btrfs")
        .args(["filesystem", "du", "-s", "--raw"])
        .arg(&m.dir)
        .output()
        .unwrap();
    // `Total Exclusive Set-shared Filename`: the blob and its three clones
    // (plus the source the blob was cloned from) occupy one set of extents.
    let du = text(&du.stdout);
    let shared: u64 = du
        .lines()
        .last()
        .and_then(|l| l.split_whitespace().nth(2))
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    assert!(
        shared >= rlib.len() as u64,
        "btrfs filesystem du shows no shared bytes:\n{du}"
    );

    // Copy-on-write: scribbling on the restored file leaves the blob alone.
    scribble(&restored);
    assert_blob_intact(&blob, &rlib);
    assert_eq!(physical_extents(&blob), be, "the blob's extents moved");
    assert_ne!(
        physical_extents(&restored)[0].0,
        be[0].0,
        "the written extent must be a new one"
    );
}

#[test]
fn on_ext4_the_first_consumer_gets_a_hardlink_and_the_second_a_copy() {
    if !root_or_skip("on_ext4_the_first_consumer_gets_a_hardlink_and_the_second_a_copy") {
        return;
    }
    let m = Mount::loop_image("ext4", "64M");
    let sb = Sandbox::with_store(m.dir.join("store"));
    let src = outputs(&m.dir.join("src"));
    let key = key_of("ext4");
    sb.put(&key, &src);
    let rlib = fs::read(&src[0]).unwrap();
    let blob = blob_of(&sb, &rlib);
    let exe_len = fs::metadata(&src[1]).unwrap().len();

    // First consumer: the plain outputs are hardlinked; the executable is
    // copied (its blob is stored 0444, so linking would lose its mode).
    let w1 = m.dir.join("w1");
    let t0 = SystemTime::now();
    let out = sb.get(&key, &w1, true);
    assert_eq!(
        placed(&out),
        Placed {
            files: 3,
            reflink: 0,
            hardlink: total_len(&src) - exe_len,
            copy: exe_len
        }
    );
    check_restore(&src, &w1, t0);
    let linked = fs::metadata(w1.join("libfoo.rlib")).unwrap();
    assert_eq!(
        linked.ino(),
        fs::metadata(&blob).unwrap().ino(),
        "first consumer shares the blob's inode"
    );
    assert_eq!(linked.nlink(), 2);

    // Second consumer (another worktree): a private copy, and the blob keeps
    // exactly one hardlink consumer.
    let w2 = m.dir.join("w2");
    let t0 = SystemTime::now();
    let out = sb.get(&key, &w2, true);
    assert_eq!(
        placed(&out),
        Placed {
            files: 3,
            reflink: 0,
            hardlink: 0,
            copy: total_len(&src)
        }
    );
    check_restore(&src, &w2, t0);
    assert_ne!(
        fs::metadata(w2.join("libfoo.rlib")).unwrap().ino(),
        linked.ino()
    );
    assert_eq!(
        fs::metadata(&blob).unwrap().nlink(),
        2,
        "at most one hardlink consumer per blob"
    );

    // Hardlinks not allowed (outputs rewritten in place): always a copy.
    let out = sb.get(&key, &m.dir.join("w3"), false);
    assert_eq!(placed(&out).copy, total_len(&src));

    // Writing to a copy never reaches the blob.
    scribble(&w2.join("libfoo.rlib"));
    assert_blob_intact(&blob, &rlib);

    // The hardlinked output is read-only, and before a real compile writes
    // it the wrapper unlinks it (root ignores the mode, so this step is what
    // protects the blob); the compiler's write then lands in a new file.
    let w1_rlib = w1.join("libfoo.rlib");
    assert_eq!(
        linked.mode() & 0o222,
        0,
        "a hardlinked output must be read-only"
    );
    let outs: Vec<PathBuf> = src
        .iter()
        .map(|f| w1.join(f.file_name().unwrap()))
        .collect();
    let removed = kache_platform::remove_readonly_outputs(&outs).unwrap();
    assert_eq!(
        removed, 2,
        "the two hardlinked outputs are unlinked, the private copy kept"
    );
    fs::write(&w1_rlib, b"a fresh compile's output").unwrap();
    assert_blob_intact(&blob, &rlib);
    assert_eq!(fs::metadata(&blob).unwrap().nlink(), 1);

    // The hardlink slot is free again: the next consumer may take it.
    let out = sb.get(&key, &m.dir.join("w4"), true);
    assert_eq!(placed(&out).hardlink, total_len(&src) - exe_len);
}

#[test]
fn a_restore_across_filesystems_falls_back_to_a_copy() {
    if !root_or_skip("a_restore_across_filesystems_falls_back_to_a_copy") {
        return;
    }
    // Store on btrfs, worktree on ext4: neither a clone nor a link can cross.
    let store = Mount::loop_image("btrfs", "300M");
    let work = Mount::loop_image("ext4", "32M");
    let sb = Sandbox::with_store(store.dir.join("store"));
    let src = outputs(&store.dir.join("src"));
    sb.put(&key_of("cross"), &src);
    let t0 = SystemTime::now();
    let out = sb.get(&key_of("cross"), &work.dir.join("w"), true);
    assert_eq!(
        placed(&out),
        Placed {
            files: 3,
            reflink: 0,
            hardlink: 0,
            copy: total_len(&src)
        }
    );
    check_restore(&src, &work.dir.join("w"), t0);
}
