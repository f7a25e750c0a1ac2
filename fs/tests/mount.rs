//! Behaviour of a real kache FUSE mount (run as root; fails loudly if FUSE is unavailable).

mod common;

use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, SystemTime};

use common::Fixture;
use kache_fs::{MountHealth, Placement};

fn placed_file_reads_the_blob(passthrough: bool) {
    let f = Fixture::new(passthrough);
    let content: Vec<u8> = (0..300_000u32).flat_map(|i| i.to_le_bytes()).collect();
    f.place("debug/deps/libbig.rlib", &content);
    assert_eq!(fs::read(f.path("debug/deps/libbig.rlib")).unwrap(), content);
    let meta = fs::metadata(f.path("debug/deps/libbig.rlib")).unwrap();
    assert_eq!(meta.len(), content.len() as u64);
    assert_eq!(meta.permissions().mode() & 0o777, 0o644);
}

#[test]
fn placed_file_reads_the_blobs_bytes() {
    placed_file_reads_the_blob(false);
}

#[test]
fn placed_file_reads_the_blobs_bytes_with_passthrough() {
    placed_file_reads_the_blob(true);
}

#[test]
fn write_open_of_placed_file_copies_up_and_leaves_blob_unchanged() {
    for passthrough in [false, true] {
        let f = Fixture::new(passthrough);
        let hash = f.place("a.rlib", b"original bytes");
        let mut reader = File::open(f.path("a.rlib")).unwrap();
        if passthrough {
            // One backing file per inode: while a reader has the blob open in passthrough
            // mode, a write-open is refused as busy instead of failing with EIO.
            let busy = OpenOptions::new()
                .write(true)
                .open(f.path("a.rlib"))
                .unwrap_err();
            assert_eq!(busy.raw_os_error(), Some(libc::ETXTBSY), "{busy}");
        }
        let mut old = Vec::new();
        reader.read_to_end(&mut old).unwrap();
        assert_eq!(old, b"original bytes");
        if passthrough {
            drop(reader);
        }
        let mut w = OpenOptions::new()
            .write(true)
            .open(f.path("a.rlib"))
            .unwrap();
        w.write_all(b"CHANGED").unwrap();
        drop(w);
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
}

#[test]
fn truncate_of_placed_file_copies_up_and_leaves_blob_unchanged() {
    let f = Fixture::new(true);
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
    let f = Fixture::new(true);
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
    let f = Fixture::new(true);
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
    let f = Fixture::new(true);
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
    let f = Fixture::new(true);
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
fn symlink_and_readlink() {
    let f = Fixture::new(true);
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
    for passthrough in [false, true] {
        let f = Fixture::new(passthrough);
        let content: Vec<u8> = (0..20_000u32).map(|i| (i % 251) as u8).collect();
        f.place("mapped.so", &content);
        let file = File::open(f.path("mapped.so")).unwrap();
        let len = content.len();
        // SAFETY: read-only private mapping of a file we keep open.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ,
                libc::MAP_PRIVATE,
                file.as_raw_fd(),
                0,
            )
        };
        assert_ne!(
            ptr,
            libc::MAP_FAILED,
            "mmap failed: {}",
            std::io::Error::last_os_error()
        );
        let mapped = unsafe { std::slice::from_raw_parts(ptr as *const u8, len) }.to_vec();
        unsafe { libc::munmap(ptr, len) };
        assert_eq!(mapped, content);
    }
}

#[test]
fn flock_works_on_files_in_the_mount() {
    let f = Fixture::new(true);
    fs::write(f.path(".package-cache"), b"").unwrap();
    let a = File::open(f.path(".package-cache")).unwrap();
    let b = File::open(f.path(".package-cache")).unwrap();
    assert_eq!(unsafe { libc::flock(a.as_raw_fd(), libc::LOCK_EX) }, 0);
    assert_eq!(
        unsafe { libc::flock(b.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) },
        -1
    );
    assert_eq!(
        std::io::Error::last_os_error().raw_os_error(),
        Some(libc::EWOULDBLOCK)
    );
    assert_eq!(unsafe { libc::flock(a.as_raw_fd(), libc::LOCK_UN) }, 0);
    assert_eq!(
        unsafe { libc::flock(b.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) },
        0
    );
}

#[test]
fn placements_and_upper_files_persist_across_remount() {
    let mut f = Fixture::new(true);
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
    let f = Fixture::new(true);
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
    let f = Fixture::new(true);
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
    // Garbage on the control file is refused too.
    let mut control = OpenOptions::new()
        .read(true)
        .write(true)
        .open(f.path(".kache-control"))
        .unwrap();
    control.write_all(b"not json").unwrap();
    let mut status = String::new();
    control.read_to_string(&mut status).unwrap();
    assert!(status.starts_with("error:"), "{status}");
}

#[test]
fn is_kache_mount_tells_mounts_from_plain_dirs() {
    let f = Fixture::new(false);
    assert!(kache_fs::is_kache_mount(&f.mnt));
    assert!(!kache_fs::is_kache_mount(f.tmp.path()));
    assert!(!kache_fs::is_kache_mount(&f.state));
}

#[test]
fn cargo_builds_a_crate_in_the_mount_and_rebuilds_nothing_after_remount() {
    let mut f = Fixture::new(true);
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
    let f = Fixture::new(true);
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
