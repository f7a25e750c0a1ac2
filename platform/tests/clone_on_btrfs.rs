//! Clones through the platform layer on a real copy-on-write filesystem: a
//! loop-mounted btrfs image. The clone must share the blob's extents, come
//! from the blob's open descriptor (its name may already be gone), and give
//! the placed file the asked mode and a fresh mtime.
#![cfg(target_os = "linux")]

use kache_platform::place::{clone_or_copy, place_file, HardlinkPolicy, PlaceMethod};
use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, SystemTime};

/// A btrfs image on its own loop device, unmounted and detached on drop.
struct Btrfs {
    dir: PathBuf,
    dev: String,
    _scratch: tempfile::TempDir,
}

fn run(cmd: &mut Command, what: &str) -> String {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {what}: {e}"));
    assert!(
        out.status.success(),
        "{what} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

impl Btrfs {
    /// `None` (with a line saying so) when not root outside CI; under CI a
    /// missing privilege fails the test.
    fn mount(test: &str) -> Option<Btrfs> {
        if !rustix::process::geteuid().is_root() {
            assert_ne!(
                std::env::var("CI").as_deref(),
                Ok("true"),
                "{test}: needs root for a loop mount, and CI=true: refusing to skip"
            );
            eprintln!("SKIPPED {test}: needs root for a loop mount");
            return None;
        }
        let scratch = tempfile::tempdir().unwrap();
        let img = scratch.path().join("image");
        let dir = scratch.path().join("mnt");
        fs::create_dir(&dir).unwrap();
        run(
            Command::new("truncate").args(["-s", "200M"]).arg(&img),
            "truncate",
        );
        run(
            Command::new("mkfs.btrfs").arg("-q").arg(&img),
            "mkfs.btrfs (install btrfs-progs)",
        );
        let dev = run(
            Command::new("losetup").args(["-f", "--show"]).arg(&img),
            "losetup -f",
        );
        let m = Btrfs {
            dir,
            dev,
            _scratch: scratch,
        };
        run(
            Command::new("mount")
                .args(["-t", "btrfs", &m.dev])
                .arg(&m.dir),
            "mount -t btrfs",
        );
        Some(m)
    }
}

impl Drop for Btrfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.dir).status();
        let _ = Command::new("losetup").args(["-d", &self.dev]).status();
    }
}

/// (physical start, shared flag) of each extent of `path`, from `filefrag -v`.
fn extents(path: &Path) -> Vec<(u64, bool)> {
    let text = run(
        Command::new("filefrag").arg("-v").arg(path),
        "filefrag (install e2fsprogs)",
    );
    text.lines()
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

/// A read-only 1 MiB blob of varied bytes, flushed so its extents exist.
fn blob(dir: &Path) -> (PathBuf, Vec<u8>) {
    let bytes: Vec<u8> = (0..1u32 << 20).map(|i| (i * 7 + i / 4096) as u8).collect();
    let p = dir.join("blob");
    let mut f = File::create(&p).unwrap();
    f.write_all(&bytes).unwrap();
    f.sync_all().unwrap();
    fs::set_permissions(&p, fs::Permissions::from_mode(0o444)).unwrap();
    (p, bytes)
}

fn assert_shares_extents(blob: &Path, copy: &Path) {
    let (b, c) = (extents(blob), extents(copy));
    assert!(!b.is_empty(), "filefrag shows no extents for the blob");
    assert_eq!(
        b.iter().map(|e| e.0).collect::<Vec<_>>(),
        c.iter().map(|e| e.0).collect::<Vec<_>>(),
        "{} does not share the blob's physical extents",
        copy.display()
    );
    assert!(
        c.iter().all(|e| e.1),
        "filefrag does not flag the extents as shared: {c:?}"
    );
}

#[test]
fn a_placement_on_btrfs_clones_from_the_open_blob_after_its_name_is_evicted() {
    let Some(m) = Btrfs::mount("a_placement_on_btrfs_clones_from_the_open_blob") else {
        return;
    };
    let (path, bytes) = blob(&m.dir);
    let keep = m.dir.join("keep");
    // A second name keeps the extents inspectable after the blob's own name
    // goes, as eviction would remove it while the restore holds it open.
    fs::hard_link(&path, &keep).unwrap();
    let open = File::open(&path).unwrap();
    fs::remove_file(&path).unwrap();
    let not_before = SystemTime::now();
    let dest = m.dir.join("out/test-bin");
    fs::create_dir(m.dir.join("out")).unwrap();

    let how = place_file(&open, &path, &dest, 0o755, HardlinkPolicy::IfSoleConsumer).unwrap();

    assert_eq!(how, PlaceMethod::Reflink);
    assert!(fs::read(&dest).unwrap() == bytes, "placed bytes differ");
    let meta = fs::metadata(&dest).unwrap();
    assert_eq!(meta.permissions().mode() & 0o7777, 0o755, "asked mode lost");
    assert!(
        meta.modified().unwrap() + Duration::from_millis(50) >= not_before,
        "the clone kept the blob's old mtime"
    );
    assert_shares_extents(&keep, &dest);
    // Writing the placed file leaves the blob alone.
    fs::write(&dest, b"rewritten by a build script").unwrap();
    assert!(fs::read(&keep).unwrap() == bytes, "the blob changed");
}

#[test]
fn clone_or_copy_on_btrfs_shares_extents_between_open_files() {
    let Some(m) = Btrfs::mount("clone_or_copy_on_btrfs_shares_extents") else {
        return;
    };
    let (path, bytes) = blob(&m.dir);
    let src = File::open(&path).unwrap();
    let dst_path = m.dir.join("marker");
    let dst = OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .open(&dst_path)
        .unwrap();

    assert_eq!(clone_or_copy(&src, &dst).unwrap(), PlaceMethod::Reflink);
    drop(dst);
    assert!(fs::read(&dst_path).unwrap() == bytes, "cloned bytes differ");
    assert_shares_extents(&path, &dst_path);
}
