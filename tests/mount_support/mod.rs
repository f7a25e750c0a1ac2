//! Helpers of the `kache mount` end-to-end tests: run kache against a private store, hold a
//! mount for the life of a test, read `kache mounts --json`, make git repositories of the
//! fixture workspace. Every helper fails (never skips) when what it needs is missing.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use crate::common::*;

pub fn need_fuse() {
    assert!(
        Path::new("/dev/fuse").exists(),
        "/dev/fuse is missing: the mount tests need FUSE (scripts/test loads it)"
    );
}

/// `kache ARGS` with store `store`, run from `/`.
pub fn kache(store: &Path, args: &[&str]) -> Command {
    let mut c = Command::new(kache_bin());
    // Seeding at mount time would fill a new mount before the build these tests watch;
    // the seeding tests turn it back on.
    c.args(args)
        .env("KACHE_DIR", store)
        .env("KACHE_SEED", "0")
        .current_dir("/");
    c
}

pub fn kache_path(store: &Path, args: &[&str], path: &Path) -> Output {
    let mut c = kache(store, args);
    c.arg(path);
    c.output().unwrap()
}

/// Mounts `wt`'s target for the life of the guard (force-unmounted on drop, also on failure).
pub struct Mount {
    pub store: PathBuf,
    pub wt: PathBuf,
}

impl Mount {
    pub fn new(store: &Path, wt: &Path) -> Mount {
        need_fuse();
        let out = kache_path(store, &["mount"], wt);
        assert!(
            out.status.success(),
            "kache mount failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        Mount {
            store: store.to_path_buf(),
            wt: wt.to_path_buf(),
        }
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = kache_path(&self.store, &["unmount", "--force"], &self.wt);
    }
}

/// Every mount of the store, force-unmounted when the guard goes (a test that fails midway
/// must not leave mounts behind).
pub struct Mounts(pub PathBuf);

impl Drop for Mounts {
    fn drop(&mut self) {
        for m in mounts(&self.0).1 {
            if let Some(wt) = m["worktree"].as_str() {
                let _ = kache_path(&self.0, &["unmount", "--force"], Path::new(wt));
            }
            if let Some(mp) = m["mountpoint"].as_str() {
                let _ = Command::new("umount").arg("-l").arg(mp).output();
            }
        }
    }
}

pub fn mounts(store: &Path) -> (i32, Vec<serde_json::Value>) {
    let out = kache(store, &["mounts", "--json"]).output().unwrap();
    let rows = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stdout)));
    (out.status.code().unwrap_or(-1), rows)
}

/// The `kache mounts --json` row of `wt` (registered under its canonical path).
pub fn find_mount_row(store: &Path, wt: &Path) -> Option<serde_json::Value> {
    let wt = std::fs::canonicalize(wt).unwrap_or_else(|_| wt.to_path_buf());
    mounts(store)
        .1
        .into_iter()
        .find(|r| r["worktree"].as_str() == Some(wt.to_str().unwrap()))
}

pub fn mount_row(store: &Path, wt: &Path) -> serde_json::Value {
    find_mount_row(store, wt).unwrap_or_else(|| panic!("{} not in kache mounts", wt.display()))
}

/// Whether a kache mount serves `target` (through its link, if it is one).
pub fn is_mounted(target: &Path) -> bool {
    let table = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    let Ok(t) = std::fs::canonicalize(target) else {
        return false;
    };
    table
        .lines()
        .any(|l| l.split(' ').nth(4) == Some(t.to_str().unwrap()) && l.contains("kache"))
}

/// Whether anything is mounted at exactly `path` (no link followed).
pub fn mounted_at(path: &Path) -> bool {
    let table = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    table
        .lines()
        .any(|l| l.split(' ').nth(4) == Some(path.to_str().unwrap()))
}

/// Logical bytes of regular files under `dir`, each inode once.
pub fn tree_bytes(dir: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    let mut seen = std::collections::HashSet::new();
    let mut total = 0;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let m = e.metadata().unwrap();
            if m.is_dir() {
                stack.push(e.path());
            } else if m.is_file() && seen.insert(m.ino()) {
                total += m.len();
            }
        }
    }
    total
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

pub fn git(dir: &Path, args: &[&str]) -> Output {
    let out = Command::new("git")
        .current_dir(dir)
        .args(["-c", "user.name=t", "-c", "user.email=t@t"])
        .args(args)
        .output()
        .unwrap();
    assert!(out.status.success(), "git {args:?}: {}", stderr(&out));
    out
}

/// A git repository of the fixture workspace at `dir` (one commit; `target/` ignored the way
/// many projects do it, which matches directories only).
pub fn fixture_repo(dir: &Path) -> PathBuf {
    need_tool("git");
    let repo = fixture_at(dir);
    std::fs::write(repo.join(".gitignore"), "target/\n").unwrap();
    git(&repo, &["init", "-q", "-b", "main"]);
    git(&repo, &["add", "-A"]);
    git(&repo, &["commit", "-q", "-m", "fixture"]);
    repo
}

/// `kache worktree add --json WT BRANCH` from `repo`, which must mount.
pub fn worktree_add(store: &Path, repo: &Path, wt: &Path, branch: &str) -> serde_json::Value {
    need_fuse();
    let out = kache(store, &["worktree", "add", "--json"])
        .current_dir(repo)
        .arg(wt)
        .arg(branch)
        .env("RUSTC_WRAPPER", kache_bin())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["mount"], "healthy", "{v}");
    v
}

/// Polls `cond` every 20 ms for up to `secs` seconds.
pub fn eventually(secs: u64, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        if cond() {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Whether process `pid` exists (and is not a zombie).
pub fn alive(pid: u64) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .is_ok_and(|s| s.split(' ').nth(2).is_none_or(|st| st != "Z"))
}

pub fn kill(pid: u64) {
    kache_platform::process::signal_terminate(pid as u32, true).expect("SIGKILL");
    assert!(
        eventually(5, || !alive(pid)),
        "server {pid} survived SIGKILL"
    );
}
