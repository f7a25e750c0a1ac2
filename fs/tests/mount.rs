//! Behaviour of a real kache FUSE mount (run as root; fails loudly if FUSE is unavailable).
#![cfg(target_os = "linux")]

mod common;

use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, SystemTime};

use common::Fixture;
use kache_fs::{MountHealth, Placement};
use rustix::fs::{
    fallocate, flock, getxattr, getxattr_query, listxattr, listxattr_query, mknodat, removexattr,
    renameat_with, setxattr, statvfs, FallocateFlags, FileType, FlockOperation, Mode, RenameFlags,
    XattrFlags, CWD,
};
use rustix::io::Errno;
use rustix::mm;

#[test]
fn placed_file_reads_the_blobs_bytes() {
    let f = Fixture::new();
    let content: Vec<u8> = (0..300_000u32).flat_map(|i| i.to_le_bytes()).collect();
    f.place("debug/deps/libbig.rlib", &content);
    assert_eq!(fs::read(f.path("debug/deps/libbig.rlib")).unwrap(), content);
    let meta = fs::metadata(f.path("debug/deps/libbig.rlib")).unwrap();
    assert_eq!(meta.len(), content.len() as u64);
    assert_eq!(meta.permissions().mode() & 0o777, 0o644);
}

#[test]
fn write_to_placed_file_copies_up_and_leaves_blob_unchanged() {
    let f = Fixture::new();
    let hash = f.place("a.rlib", b"original bytes");
    let mut reader = File::open(f.path("a.rlib")).unwrap();
    let mut w = OpenOptions::new()
        .write(true)
        .open(f.path("a.rlib"))
        .unwrap();
    w.write_all(b"CHANGED").unwrap();
    drop(w);
    // A reader from before the write reads the file as it is now, like any file.
    let mut seen = Vec::new();
    reader.read_to_end(&mut seen).unwrap();
    assert_eq!(seen, b"CHANGEDl bytes");
    assert_eq!(fs::read(f.path("a.rlib")).unwrap(), b"CHANGEDl bytes");
    assert_eq!(f.blob_bytes(&hash), b"original bytes", "blob corrupted");
    let mut a = OpenOptions::new()
        .append(true)
        .open(f.path("a.rlib"))
        .unwrap();
    a.write_all(b"!").unwrap();
    drop(a);
    assert_eq!(fs::read(f.path("a.rlib")).unwrap(), b"CHANGEDl bytes!");
    assert_eq!(f.blob_bytes(&hash), b"original bytes");
    assert_eq!(kache_fs::mount_stats(&f.state).unwrap().placed_files, 0);
}

#[test]
fn shared_writable_mmap_of_placed_file_copies_up_and_leaves_blob_unchanged() {
    let f = Fixture::new();
    let hash = f.place("m.so", b"mapped bytes");
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .open(f.path("m.so"))
        .unwrap();
    // SAFETY: a new shared mapping of 12 bytes of a file we keep open: nothing else in this
    // process aliases it; it is written through its own pointer only, then unmapped.
    unsafe {
        let ptr = mm::mmap(
            std::ptr::null_mut(),
            12,
            mm::ProtFlags::READ | mm::ProtFlags::WRITE,
            mm::MapFlags::SHARED,
            &file,
            0,
        )
        .expect("mmap");
        *(ptr as *mut u8) = b'M';
        mm::msync(ptr, 12, mm::MsyncFlags::SYNC).expect("msync");
        mm::munmap(ptr, 12).expect("munmap");
    }
    drop(file);
    assert_eq!(fs::read(f.path("m.so")).unwrap(), b"Mapped bytes");
    assert_eq!(f.blob_bytes(&hash), b"mapped bytes", "blob corrupted");
    assert_eq!(kache_fs::mount_stats(&f.state).unwrap().placed_files, 0);
}

#[test]
fn truncate_of_placed_file_copies_up_and_leaves_blob_unchanged() {
    let f = Fixture::new();
    let hash = f.place("t.bin", b"0123456789");
    OpenOptions::new()
        .write(true)
        .open(f.path("t.bin"))
        .unwrap()
        .set_len(4)
        .unwrap();
    assert_eq!(fs::read(f.path("t.bin")).unwrap(), b"0123");
    let hash2 = f.place("u.bin", b"abcdef");
    fs::write(f.path("u.bin"), b"xy").unwrap(); // O_TRUNC
    assert_eq!(fs::read(f.path("u.bin")).unwrap(), b"xy");
    assert_eq!(f.blob_bytes(&hash), b"0123456789");
    assert_eq!(f.blob_bytes(&hash2), b"abcdef");
}

#[test]
fn utimensat_on_placed_file_changes_mtime_without_copy_up() {
    let f = Fixture::new();
    f.place("m.rlib", b"placed");
    let when = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000_000);
    File::open(f.path("m.rlib"))
        .unwrap()
        .set_modified(when)
        .unwrap();
    assert_eq!(
        fs::metadata(f.path("m.rlib")).unwrap().modified().unwrap(),
        when
    );
    let stats = kache_fs::mount_stats(&f.state).unwrap();
    assert_eq!(stats.placed_files, 1, "utimens copied the file up");
    assert_eq!(fs::read(f.path("m.rlib")).unwrap(), b"placed");
}

#[test]
fn hard_links_share_an_inode_for_placed_and_upper_files() {
    let f = Fixture::new();
    f.place("debug/deps/libp.rlib", b"placed content");
    fs::hard_link(f.path("debug/deps/libp.rlib"), f.path("debug/libp.rlib")).unwrap();
    let a = fs::metadata(f.path("debug/deps/libp.rlib")).unwrap();
    let b = fs::metadata(f.path("debug/libp.rlib")).unwrap();
    assert_eq!((a.dev(), a.ino()), (b.dev(), b.ino()));
    assert_eq!(b.nlink(), 2);
    assert_eq!(
        fs::read(f.path("debug/libp.rlib")).unwrap(),
        b"placed content"
    );

    fs::write(f.path("debug/deps/up"), b"upper").unwrap();
    fs::hard_link(f.path("debug/deps/up"), f.path("debug/up")).unwrap();
    let a = fs::metadata(f.path("debug/deps/up")).unwrap();
    let b = fs::metadata(f.path("debug/up")).unwrap();
    assert_eq!((a.dev(), a.ino()), (b.dev(), b.ino()));
    // A write through one name is seen through the other (also after copy-up).
    fs::write(f.path("debug/libp.rlib"), b"rewritten").unwrap();
    assert_eq!(
        fs::read(f.path("debug/deps/libp.rlib")).unwrap(),
        b"rewritten"
    );
}

#[test]
fn rename_over_an_existing_file_replaces_it() {
    let f = Fixture::new();
    fs::create_dir_all(f.path("d")).unwrap();
    fs::write(f.path("d/new.tmp"), b"new").unwrap();
    fs::write(f.path("d/x.rmeta"), b"old").unwrap();
    fs::rename(f.path("d/new.tmp"), f.path("d/x.rmeta")).unwrap();
    assert_eq!(fs::read(f.path("d/x.rmeta")).unwrap(), b"new");
    assert!(!f.path("d/new.tmp").exists());
    // Over a placed file, and a placed file over an upper one.
    f.place("d/placed", b"blob");
    fs::rename(f.path("d/x.rmeta"), f.path("d/placed")).unwrap();
    assert_eq!(fs::read(f.path("d/placed")).unwrap(), b"new");
    f.place("d/p2", b"blob two");
    fs::rename(f.path("d/p2"), f.path("d/placed")).unwrap();
    assert_eq!(fs::read(f.path("d/placed")).unwrap(), b"blob two");
    // Directories move with their contents.
    fs::rename(f.path("d"), f.path("e")).unwrap();
    assert_eq!(fs::read(f.path("e/placed")).unwrap(), b"blob two");
}

#[test]
fn unlink_removes_placed_and_upper_files() {
    let f = Fixture::new();
    let hash = f.place("p", b"placed");
    fs::write(f.path("u"), b"upper").unwrap();
    fs::remove_file(f.path("p")).unwrap();
    fs::remove_file(f.path("u")).unwrap();
    assert!(!f.path("p").exists() && !f.path("u").exists());
    assert_eq!(f.blob_bytes(&hash), b"placed");
    fs::create_dir(f.path("dir")).unwrap();
    fs::remove_dir(f.path("dir")).unwrap();
    let names: Vec<_> = fs::read_dir(&f.mnt)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert!(
        names.is_empty(),
        "left: {names:?} (control file must be hidden)"
    );
}

#[test]
fn clear_empties_the_mount_at_once_and_open_files_stay_readable() {
    let f = Fixture::new();
    let hash = f.place("debug/deps/libx.rlib", b"placed bytes");
    fs::create_dir_all(f.path("debug/build/x")).unwrap();
    fs::write(f.path("debug/build/x/out"), b"upper bytes").unwrap();
    fs::write(f.path("CACHEDIR.TAG"), b"tag").unwrap();
    let mut open = File::open(f.path("debug/build/x/out")).unwrap();
    assert_eq!(kache_fs::clear(&f.mnt).unwrap(), 2);
    let names: Vec<_> = fs::read_dir(&f.mnt)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert!(names.is_empty(), "left: {names:?}");
    assert!(
        !f.path("debug/deps/libx.rlib").exists(),
        "kernel cache kept a name"
    );
    let mut bytes = Vec::new();
    open.read_to_end(&mut bytes).unwrap();
    assert_eq!(bytes, b"upper bytes", "an open file stays readable");
    assert_eq!(
        f.blob_bytes(&hash),
        b"placed bytes",
        "the blob is untouched"
    );
    // The mount stays usable, and the trash goes from the upper directory too.
    fs::create_dir(f.path("debug")).unwrap();
    fs::write(f.path("debug/new"), b"n").unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    let only_new = || {
        let s = kache_fs::mount_stats(&f.state).unwrap();
        s.placed_files == 0 && s.upper_bytes == 1
    };
    while !only_new() {
        assert!(
            std::time::Instant::now() < deadline,
            "trash never deleted: {:?}",
            kache_fs::mount_stats(&f.state)
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn symlink_and_readlink() {
    let f = Fixture::new();
    fs::write(f.path("target-file"), b"t").unwrap();
    std::os::unix::fs::symlink("target-file", f.path("link")).unwrap();
    assert_eq!(
        fs::read_link(f.path("link")).unwrap(),
        Path::new("target-file")
    );
    assert_eq!(fs::read(f.path("link")).unwrap(), b"t");
    assert!(fs::symlink_metadata(f.path("link"))
        .unwrap()
        .file_type()
        .is_symlink());
}

#[test]
fn mmap_read_of_placed_file() {
    let f = Fixture::new();
    let content: Vec<u8> = (0..20_000u32).map(|i| (i % 251) as u8).collect();
    f.place("mapped.so", &content);
    let file = File::open(f.path("mapped.so")).unwrap();
    let len = content.len();
    // SAFETY: a new read-only private mapping of `len` bytes of a file we keep open, copied
    // out while mapped, then unmapped.
    let mapped = unsafe {
        let ptr = mm::mmap(
            std::ptr::null_mut(),
            len,
            mm::ProtFlags::READ,
            mm::MapFlags::PRIVATE,
            &file,
            0,
        )
        .expect("mmap");
        let bytes = std::slice::from_raw_parts(ptr as *const u8, len).to_vec();
        mm::munmap(ptr, len).expect("munmap");
        bytes
    };
    assert_eq!(mapped, content);
}

#[test]
fn flock_works_on_files_in_the_mount() {
    let f = Fixture::new();
    fs::write(f.path(".package-cache"), b"").unwrap();
    let a = File::open(f.path(".package-cache")).unwrap();
    let b = File::open(f.path(".package-cache")).unwrap();
    flock(&a, FlockOperation::LockExclusive).unwrap();
    assert_eq!(
        flock(&b, FlockOperation::NonBlockingLockExclusive),
        Err(Errno::WOULDBLOCK)
    );
    flock(&a, FlockOperation::Unlock).unwrap();
    flock(&b, FlockOperation::NonBlockingLockExclusive).unwrap();
}

#[test]
fn user_xattrs_are_kept_listed_and_removed_and_the_placement_xattr_stays_hidden() {
    let f = Fixture::new();
    f.place("placed.rlib", b"placed");
    fs::write(f.path("upper.txt"), b"upper").unwrap();
    for name in ["placed.rlib", "upper.txt"] {
        let p = f.path(name);
        setxattr(&p, "user.note", b"one", XattrFlags::CREATE).unwrap();
        assert_eq!(
            setxattr(&p, "user.note", b"two", XattrFlags::CREATE),
            Err(Errno::EXIST),
            "{name}"
        );
        assert_eq!(
            setxattr(&p, "user.absent", b"x", XattrFlags::REPLACE),
            Err(Errno::NODATA),
            "{name}"
        );
        assert_eq!(getxattr_query(&p, "user.note"), Ok(3), "{name}");
        let mut buf = [0u8; 16];
        let n = getxattr(&p, "user.note", &mut buf[..]).unwrap();
        assert_eq!(&buf[..n], b"one", "{name}");
        let mut small = [0u8; 2];
        assert_eq!(
            getxattr(&p, "user.note", &mut small[..]),
            Err(Errno::RANGE),
            "{name}"
        );
        let mut list = vec![0u8; listxattr_query(&p).unwrap()];
        let n = listxattr(&p, &mut list[..]).unwrap();
        let names: Vec<&[u8]> = list[..n]
            .split(|b| *b == 0)
            .filter(|n| !n.is_empty())
            .collect();
        assert_eq!(names, vec![b"user.note".as_slice()], "{name}");
        assert_eq!(
            getxattr(&p, "user.kache.blob", &mut buf[..]),
            Err(Errno::NODATA),
            "{name}"
        );
        removexattr(&p, "user.note").unwrap();
        assert_eq!(getxattr(&p, "user.note", &mut buf[..]), Err(Errno::NODATA));
    }
    assert_eq!(fs::read(f.path("placed.rlib")).unwrap(), b"placed");
    assert_eq!(kache_fs::mount_stats(&f.state).unwrap().placed_files, 1);
}

#[test]
fn chmod_chown_and_statfs_reach_the_upper_directory() {
    let f = Fixture::new();
    f.place("bin/tool", b"#!/bin/sh\n");
    fs::set_permissions(f.path("bin/tool"), fs::Permissions::from_mode(0o750)).unwrap();
    assert_eq!(
        fs::metadata(f.path("bin/tool"))
            .unwrap()
            .permissions()
            .mode()
            & 0o7777,
        0o750
    );
    std::os::unix::fs::chown(f.path("bin/tool"), Some(4321), Some(4322)).unwrap();
    let meta = fs::metadata(f.path("bin/tool")).unwrap();
    assert_eq!((meta.uid(), meta.gid()), (4321, 4322));
    assert_eq!(kache_fs::mount_stats(&f.state).unwrap().placed_files, 1);
    // The mount reports the filesystem its upper directory is on.
    let mounted = statvfs(&f.mnt).unwrap();
    let upper = statvfs(&f.state).unwrap();
    assert_eq!(mounted.f_blocks, upper.f_blocks);
    assert_eq!(mounted.f_bsize, upper.f_bsize);
    assert!(mounted.f_namemax > 0);
}

#[test]
fn fifos_exclusive_creates_fallocate_rmdir_and_rename_flags_behave_as_on_disk() {
    let f = Fixture::new();
    mknodat(
        CWD,
        f.path("fifo"),
        FileType::Fifo,
        Mode::from_raw_mode(0o600),
        0,
    )
    .unwrap();
    assert!(fs::symlink_metadata(f.path("fifo"))
        .unwrap()
        .file_type()
        .is_fifo());

    fs::write(f.path("a"), b"aaa").unwrap();
    let again = OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(f.path("a"));
    assert_eq!(again.unwrap_err().kind(), std::io::ErrorKind::AlreadyExists);

    let hash = f.place("placed.o", b"placed bytes");
    let placed = OpenOptions::new()
        .write(true)
        .open(f.path("placed.o"))
        .unwrap();
    fallocate(&placed, FallocateFlags::empty(), 0, 8192).unwrap();
    drop(placed);
    let grown = fs::read(f.path("placed.o")).unwrap();
    assert_eq!(grown.len(), 8192);
    assert_eq!(&grown[..12], b"placed bytes");
    assert_eq!(f.blob_bytes(&hash), b"placed bytes", "blob corrupted");

    fs::write(f.path("b"), b"bbb").unwrap();
    assert_eq!(
        renameat_with(CWD, f.path("a"), CWD, f.path("b"), RenameFlags::NOREPLACE),
        Err(Errno::EXIST)
    );
    renameat_with(CWD, f.path("a"), CWD, f.path("b"), RenameFlags::EXCHANGE).unwrap();
    assert_eq!(fs::read(f.path("a")).unwrap(), b"bbb");
    assert_eq!(fs::read(f.path("b")).unwrap(), b"aaa");

    fs::create_dir_all(f.path("d/e")).unwrap();
    assert_eq!(
        fs::remove_dir(f.path("d")).unwrap_err().kind(),
        std::io::ErrorKind::DirectoryNotEmpty
    );
    fs::remove_dir(f.path("d/e")).unwrap();
    fs::remove_dir(f.path("d")).unwrap();
    assert!(!f.path("d").exists());
}

#[test]
fn placements_and_upper_files_persist_across_remount() {
    let mut f = Fixture::new();
    f.place("debug/deps/libkeep.rlib", b"kept placed");
    fs::write(f.path("debug/.fingerprint"), b"fp").unwrap();
    fs::hard_link(
        f.path("debug/deps/libkeep.rlib"),
        f.path("debug/libkeep.rlib"),
    )
    .unwrap();
    let before: Vec<_> = [
        "debug/deps/libkeep.rlib",
        "debug/.fingerprint",
        "debug/libkeep.rlib",
    ]
    .iter()
    .map(|p| {
        let m = fs::metadata(f.path(p)).unwrap();
        (m.modified().unwrap(), m.ino(), m.len())
    })
    .collect();
    f.unmount();
    assert_eq!(kache_fs::mount_health(&f.mnt), MountHealth::NotMounted);
    assert_eq!(kache_fs::mount_stats(&f.state).unwrap().placed_files, 1);
    f.mount();
    let after: Vec<_> = [
        "debug/deps/libkeep.rlib",
        "debug/.fingerprint",
        "debug/libkeep.rlib",
    ]
    .iter()
    .map(|p| {
        let m = fs::metadata(f.path(p)).unwrap();
        (m.modified().unwrap(), m.ino(), m.len())
    })
    .collect();
    assert_eq!(before, after);
    assert_eq!(
        fs::read(f.path("debug/libkeep.rlib")).unwrap(),
        b"kept placed"
    );
    assert_eq!(kache_fs::mount_health(&f.mnt), MountHealth::Healthy);
}

#[test]
fn placement_from_another_thread_replaces_an_existing_file_atomically() {
    let f = Fixture::new();
    let old: Vec<u8> = vec![b'o'; 100_000];
    let new: Vec<u8> = vec![b'n'; 150_000];
    f.place("deps/libx.rlib", &old);
    assert_eq!(fs::read(f.path("deps/libx.rlib")).unwrap(), old); // cached by the kernel now
    let new_hash = f.blob(&new);
    let mnt = f.mnt.clone();
    let placer = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(20));
        kache_fs::place(
            &mnt,
            &[Placement {
                path: "deps/libx.rlib".into(),
                hash: new_hash,
                size: 150_000,
                mode: 0o644,
            }],
        )
    });
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        let seen = fs::read(f.path("deps/libx.rlib")).unwrap();
        assert!(
            seen == old || seen == new,
            "torn read of {} bytes",
            seen.len()
        );
        if placer.is_finished() {
            break;
        }
        assert!(std::time::Instant::now() < deadline);
    }
    placer.join().unwrap().expect("place from thread");
    // Right after place() returns, the new bytes are visible (no stale kernel cache).
    assert_eq!(fs::read(f.path("deps/libx.rlib")).unwrap(), new);
    // Placing over an upper file works too.
    fs::write(f.path("deps/plain"), b"plain").unwrap();
    assert_eq!(fs::read(f.path("deps/plain")).unwrap(), b"plain");
    f.place("deps/plain", b"now placed");
    assert_eq!(fs::read(f.path("deps/plain")).unwrap(), b"now placed");
}

#[test]
fn hostile_control_requests_are_rejected_and_change_nothing() {
    let f = Fixture::new();
    f.place("keep", b"keep me");
    let good = f.blob(b"good");
    let ok = |path: &str| Placement {
        path: path.into(),
        hash: good.clone(),
        size: 4,
        mode: 0o644,
    };
    let cases: Vec<(&str, Vec<Placement>)> = vec![
        ("dot-dot", vec![ok("fine"), ok("../escape")]),
        ("absolute", vec![ok("/etc/kache-test")]),
        (
            "unknown hash",
            vec![
                ok("fine"),
                Placement {
                    hash: "ab".repeat(32),
                    ..ok("x")
                },
            ],
        ),
        (
            "wrong size",
            vec![
                ok("fine"),
                Placement {
                    size: 5,
                    ..ok("keep")
                },
            ],
        ),
        (
            "bad hash",
            vec![Placement {
                hash: "../../etc/passwd".into(),
                ..ok("y")
            }],
        ),
        ("control file", vec![ok(".kache-control")]),
    ];
    for (what, request) in cases {
        let err = kache_fs::place(&f.mnt, &request).expect_err(what);
        assert_eq!(
            err.kind(),
            std::io::ErrorKind::InvalidInput,
            "{what}: {err}"
        );
    }
    let mut names: Vec<_> = fs::read_dir(&f.mnt)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    names.sort();
    assert_eq!(names, vec!["keep"]);
    assert_eq!(fs::read(f.path("keep")).unwrap(), b"keep me");
    assert!(!f.tmp.path().join("escape").exists());
    // Garbage as a request is refused with EINVAL, and its status says why.
    let control = f.path(".kache-control");
    assert_eq!(
        setxattr(
            &control,
            "user.kache.request",
            b"not json",
            XattrFlags::empty()
        ),
        Err(Errno::INVAL)
    );
    let mut status = [0u8; 256];
    let n = getxattr(&control, "user.kache.status", &mut status[..]).unwrap_or(0);
    let status = String::from_utf8_lossy(&status[..n]).into_owned();
    assert!(status.starts_with("error: malformed request"), "{status}");
    // The control file takes no bytes.
    let write = OpenOptions::new()
        .write(true)
        .open(f.path(".kache-control"))
        .and_then(|mut c| c.write_all(b"{}"));
    assert!(write.is_err(), "a write to the control file was accepted");
}

#[test]
fn is_kache_mount_tells_mounts_from_plain_dirs() {
    let f = Fixture::new();
    assert!(kache_fs::is_kache_mount(&f.mnt));
    assert!(!kache_fs::is_kache_mount(f.tmp.path()));
    assert!(!kache_fs::is_kache_mount(&f.state));
}

#[test]
fn cargo_builds_a_crate_in_the_mount_and_rebuilds_nothing_after_remount() {
    let mut f = Fixture::new();
    let krate = f.tmp.path().join("tiny");
    let new = Command::new("cargo")
        .args(["new", "--lib", "--vcs", "none"])
        .arg(&krate)
        .output()
        .unwrap();
    assert!(
        new.status.success(),
        "cargo new: {}",
        String::from_utf8_lossy(&new.stderr)
    );
    fs::write(
        krate.join("src/main.rs"),
        "fn main() { println!(\"{}\", tiny::add(2, 2)); }\n",
    )
    .unwrap();
    let target = f.mnt.clone();
    let build = || {
        let out = Command::new("cargo")
            .args(["build", "--offline"])
            .current_dir(&krate)
            .env("CARGO_TARGET_DIR", &target)
            .env_remove("RUSTC_WRAPPER")
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(out.status.success(), "cargo build failed:\n{stderr}");
        stderr
    };
    let first = build();
    assert!(first.contains("Compiling tiny"), "{first}");
    let run = Command::new(f.path("debug/tiny")).output().unwrap();
    assert_eq!(String::from_utf8_lossy(&run.stdout), "4\n");
    let second = build();
    assert!(
        !second.contains("Compiling"),
        "second build was not a no-op:\n{second}"
    );
    f.unmount();
    f.mount();
    let third = build();
    assert!(
        !third.contains("Compiling"),
        "build after remount was not a no-op:\n{third}"
    );
}

/// Not a test of its own: the server process that `killed_server_*` starts and kills.
#[test]
#[ignore = "helper process for killed_server_leaves_a_broken_mount_that_force_unmount_clears"]
fn serve_until_killed() {
    let Ok(dirs) = std::env::var("KACHE_FS_TEST_SERVE") else {
        return;
    };
    let mut parts = dirs.split('\n');
    let (Some(mnt), Some(state), Some(blobs)) = (parts.next(), parts.next(), parts.next()) else {
        panic!("bad KACHE_FS_TEST_SERVE");
    };
    let source = std::sync::Arc::new(common::TestBlobs { root: blobs.into() });
    kache_fs::mount_foreground(kache_fs::MountOptions::new(mnt, state), source).expect("serve");
}

#[test]
fn killed_server_leaves_a_broken_mount_that_force_unmount_clears() {
    let tmp = tempfile::tempdir().unwrap();
    let (mnt, state, blobs) = (
        tmp.path().join("target"),
        tmp.path().join("state"),
        tmp.path().join("blobs"),
    );
    for d in [&mnt, &state, &blobs] {
        fs::create_dir_all(d).unwrap();
    }
    struct KillOnDrop(std::process::Child);
    impl Drop for KillOnDrop {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let mut server = KillOnDrop(
        Command::new(std::env::current_exe().unwrap())
            .args(["--ignored", "--exact", "serve_until_killed", "--nocapture"])
            .env(
                "KACHE_FS_TEST_SERVE",
                format!(
                    "{}\n{}\n{}",
                    mnt.display(),
                    state.display(),
                    blobs.display()
                ),
            )
            .stdout(std::process::Stdio::null())
            .spawn()
            .unwrap(),
    );
    let child = &mut server.0;
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while !kache_fs::is_kache_mount(&mnt) {
        assert!(std::time::Instant::now() < deadline, "server did not mount");
        assert!(child.try_wait().unwrap().is_none(), "server exited early");
        std::thread::sleep(Duration::from_millis(50));
    }
    fs::write(mnt.join("file"), b"x").unwrap();
    assert_eq!(kache_fs::mount_health(&mnt), MountHealth::Healthy);
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(
        matches!(kache_fs::mount_health(&mnt), MountHealth::Broken(_)),
        "{:?}",
        kache_fs::mount_health(&mnt)
    );
    kache_fs::unmount(&mnt, true).expect("force unmount");
    assert_eq!(kache_fs::mount_health(&mnt), MountHealth::NotMounted);
    assert!(
        fs::read_dir(&mnt).unwrap().next().is_none(),
        "mount point not restored"
    );
}

#[test]
fn files_placed_with_a_time_read_back_with_that_mtime() {
    let f = Fixture::new();
    let hash = f.blob(b"seeded rlib");
    let when = std::time::UNIX_EPOCH + Duration::from_nanos(1_700_000_000_123_456_789);
    kache_fs::place_at(
        &f.mnt,
        &[(
            Placement {
                path: "debug/deps/libseed-0123456789abcdef.rlib".into(),
                hash,
                size: 11,
                mode: 0o644,
            },
            when,
        )],
    )
    .expect("place_at");
    let p = f.path("debug/deps/libseed-0123456789abcdef.rlib");
    assert_eq!(fs::read(&p).unwrap(), b"seeded rlib");
    assert_eq!(fs::metadata(&p).unwrap().modified().unwrap(), when);
}

/// `mount_stats` (and the eviction's `scan_placements`) walk the upper directory while a
/// `clear`'s trash is being deleted: what disappears during the walk is passed over, not an
/// error (CI once failed `clear_empties_the_mount_at_once_and_open_files_stay_readable` so).
#[test]
fn statistics_of_an_upper_directory_that_changes_during_the_walk() {
    let tmp = tempfile::tempdir().unwrap();
    let upper = tmp.path().join("upper");
    fs::create_dir_all(&upper).unwrap();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let churn = {
        let (upper, stop) = (upper.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut round = 0u64;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let d = upper.join(format!("trash-{}", round % 4));
                for i in 0..50 {
                    let sub = d.join(format!("s{i}"));
                    fs::create_dir_all(&sub).unwrap();
                    fs::write(sub.join("f"), b"bytes").unwrap();
                }
                fs::remove_dir_all(&d).unwrap();
                round += 1;
            }
        })
    };
    let mut errors = Vec::new();
    for _ in 0..300 {
        if let Err(e) = kache_fs::mount_stats(tmp.path()) {
            errors.push(e.to_string());
        }
        if let Err(e) = kache_fs::scan_placements(tmp.path()) {
            errors.push(e.to_string());
        }
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    churn.join().unwrap();
    assert!(
        errors.is_empty(),
        "{} walks failed: {:?}",
        errors.len(),
        &errors[..errors.len().min(3)]
    );
}
