//! `kache mount` end to end: real FUSE mounts of worktrees' `target/`, real cargo through
//! kache. Needs root (or fusermount3) and `/dev/fuse`; `scripts/test` installs fuse3. These
//! tests never skip: where FUSE is missing they fail naming what is missing.

mod common;

use common::*;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn need_fuse() {
    assert!(
        Path::new("/dev/fuse").exists(),
        "/dev/fuse is missing: the mount tests need FUSE (scripts/test loads it)"
    );
}

fn kache(store: &Path, args: &[&str]) -> Command {
    let mut c = Command::new(kache_bin());
    c.args(args)
        .env("KACHE_DIR", store)
        .env("KACHE_SEED", "0")
        .current_dir("/");
    c
}

fn kache_path(store: &Path, args: &[&str], path: &Path) -> Output {
    let mut c = kache(store, args);
    c.arg(path);
    c.output().unwrap()
}

/// Mounts `wt`'s target for the life of the guard (force-unmounted on drop, also on failure).
struct Mount {
    store: PathBuf,
    wt: PathBuf,
}

impl Mount {
    fn new(store: &Path, wt: &Path) -> Mount {
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

fn mounts(store: &Path) -> (i32, Vec<serde_json::Value>) {
    let out = kache(store, &["mounts", "--json"]).output().unwrap();
    let rows = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stdout)));
    (out.status.code().unwrap_or(-1), rows)
}

fn mount_row(store: &Path, wt: &Path) -> serde_json::Value {
    let wt = std::fs::canonicalize(wt).unwrap();
    mounts(store)
        .1
        .into_iter()
        .find(|r| r["worktree"].as_str() == Some(wt.to_str().unwrap()))
        .unwrap_or_else(|| panic!("{} not in kache mounts", wt.display()))
}

fn is_mounted(target: &Path) -> bool {
    let table = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    let Ok(t) = std::fs::canonicalize(target) else {
        return false;
    };
    table
        .lines()
        .any(|l| l.split(' ').nth(4) == Some(t.to_str().unwrap()) && l.contains("kache"))
}

/// Logical bytes of regular files under `dir`, each inode once.
fn tree_bytes(dir: &Path) -> u64 {
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

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn mounted_second_worktree_hits_everything_and_stores_only_what_was_not_cached() {
    let tmp = tempfile::tempdir().unwrap();
    let store = tmp.path().join("store");
    let a = fixture_at(&tmp.path().join("wt-a"));
    let b = fixture_at(&tmp.path().join("wt-b"));
    let _ma = Mount::new(&store, &a);
    let _mb = Mount::new(&store, &b);
    assert!(is_mounted(&a.join("target")) && is_mounted(&b.join("target")));

    build(&a, &store);
    let cold = stats(&store);
    let units = counter(&cold, "rust", "misses");
    assert!(units >= 10, "every unit misses once: {cold}");
    let expected = run_app(&a, "debug");
    assert!(
        expected.contains("csys: 5") && expected.contains("gen: 42"),
        "{expected}"
    );
    // Even the cold worktree keeps its compiled outputs only once: what rustc
    // wrote into the upper dir was replaced by placements of the new blobs.
    let cold_row = mount_row(&store, &a);
    let cold_upper = cold_row["upper_bytes"].as_u64().unwrap();
    let cold_placed = cold_row["placed_bytes"].as_u64().unwrap();
    assert!(
        cold_upper * 10 < cold_placed,
        "cold mount: upper {cold_upper} B vs placed {cold_placed} B"
    );
    let cold_again = build(&a, &store);
    assert!(
        compiled_units(&cold_again).is_empty(),
        "{}",
        stderr(&cold_again)
    );

    build(&b, &store);
    let warm = stats(&store);
    assert_eq!(
        counter(&warm, "rust", "hits"),
        units,
        "every unit hits in B: {warm}"
    );
    assert_eq!(counter(&warm, "rust", "misses"), units, "{warm}");
    assert_eq!(run_app(&b, "debug"), expected);
    let placed = counter_at(&warm, "restore.mount_files");
    assert!(placed >= units, "large outputs placed by reference: {warm}");
    assert!(counter_at(&warm, "restore.mount_bytes") > 0, "{warm}");

    // Disk: B's upper directory holds only what cargo wrote itself (binaries, fingerprints,
    // build-script outputs, small files), not the cached rlibs.
    let row = mount_row(&store, &b);
    let upper = row["upper_bytes"].as_u64().unwrap();
    let logical = tree_bytes(&b.join("target"));
    assert!(row["placed_bytes"].as_u64().unwrap() > 0, "{row}");
    assert!(
        upper < logical / 2,
        "upper {upper} B vs {logical} B seen through the mount"
    );
    eprintln!(
        "disk: worktree B target/ = {logical} B seen, upper = {upper} B, placed = {} B",
        row["placed_bytes"]
    );

    // A second build is a no-op, and tests build and run.
    let again = build(&b, &store);
    assert!(compiled_units(&again).is_empty(), "{}", stderr(&again));
    run_ok(cargo(&b, &store, &["test"]));
}

#[test]
fn a_mount_survives_unmount_and_a_killed_server_and_cargo_clean() {
    let tmp = tempfile::tempdir().unwrap();
    let store = tmp.path().join("store");
    let a = fixture_at(&tmp.path().join("wt"));
    let target = a.join("target");
    let _m = Mount::new(&store, &a);
    build(&a, &store);
    let expected = run_app(&a, "debug");

    // Persistence: unmount (the files stay in the mount's state), remount, still a no-op.
    let out = kache_path(&store, &["unmount"], &a);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(!target.exists(), "the empty mount point is removed");
    assert_eq!(mount_row(&store, &a)["state"], "unmounted");
    // Eviction keeps every blob placed in a mount, mounted or not.
    let gc = kache(&store, &["gc", "--max-size", "1"]).output().unwrap();
    assert!(gc.status.success(), "{}", stderr(&gc));
    let _m = Mount::new(&store, &a);
    let again = build(&a, &store);
    assert!(compiled_units(&again).is_empty(), "{}", stderr(&again));
    assert_eq!(run_app(&a, "debug"), expected);

    // Kill the server: the mount is reported broken, and `kache mount` repairs it.
    let pid = mount_row(&store, &a)["pid"].as_u64().unwrap();
    unsafe { libc::kill(pid as i32, libc::SIGKILL) };
    std::thread::sleep(std::time::Duration::from_millis(200));
    let (code, _) = mounts(&store);
    assert_eq!(mount_row(&store, &a)["state"], "broken");
    assert_eq!(code, 1, "kache mounts exits 1 when a mount is broken");
    let out = kache_path(&store, &["mount"], &a);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(String::from_utf8_lossy(&out.stdout).contains("repaired"));
    assert_eq!(mount_row(&store, &a)["state"], "healthy");
    let again = build(&a, &store);
    assert!(compiled_units(&again).is_empty(), "{}", stderr(&again));
    assert_eq!(run_app(&a, "debug"), expected);

    // `cargo clean` empties the mount; removing the mount point itself fails (EBUSY), so
    // cargo exits non-zero, and the mount stays usable.
    let clean = cargo(&a, &store, &["clean"]).output().unwrap();
    assert_eq!(clean.status.code(), Some(101), "{}", stderr(&clean));
    assert!(
        stderr(&clean).contains("Device or resource busy"),
        "{}",
        stderr(&clean)
    );
    assert!(is_mounted(&target));
    assert_eq!(mount_row(&store, &a)["state"], "healthy");
    // (The mount server puts back cargo's CACHEDIR.TAG, which cargo writes only when it
    // creates target/ itself.)
    let left: Vec<_> = std::fs::read_dir(&target)
        .unwrap()
        .flatten()
        .map(|e| e.file_name())
        .filter(|n| n != "CACHEDIR.TAG")
        .collect();
    assert!(left.is_empty(), "left after clean: {left:?}");
    let rebuilt = build(&a, &store);
    assert!(!compiled_units(&rebuilt).is_empty());
    assert_eq!(run_app(&a, "debug"), expected);
}

#[test]
fn two_mounted_worktrees_build_at_once() {
    let tmp = tempfile::tempdir().unwrap();
    let store = tmp.path().join("store");
    let a = fixture_at(&tmp.path().join("wt-a"));
    let b = fixture_at(&tmp.path().join("wt-b"));
    let _ma = Mount::new(&store, &a);
    let _mb = Mount::new(&store, &b);
    let ca = cargo(&a, &store, &["build"]).spawn().unwrap();
    let cb = cargo(&b, &store, &["build"]).spawn().unwrap();
    let (oa, ob) = (
        ca.wait_with_output().unwrap(),
        cb.wait_with_output().unwrap(),
    );
    assert!(
        oa.status.success() && ob.status.success(),
        "{}\n{}",
        stderr(&oa),
        stderr(&ob)
    );
    assert_eq!(run_app(&a, "debug"), run_app(&b, "debug"));
    for wt in [&a, &b] {
        let again = build(wt, &store);
        assert!(compiled_units(&again).is_empty(), "{}", stderr(&again));
    }
}

#[test]
fn mount_refuses_a_non_empty_target_and_unmount_refuses_open_files() {
    need_fuse();
    let tmp = tempfile::tempdir().unwrap();
    let store = tmp.path().join("store");
    let wt = tmp.path().join("wt");
    std::fs::create_dir_all(wt.join("target/debug")).unwrap();
    std::fs::write(wt.join("target/debug/old"), b"old build").unwrap();

    let out = kache_path(&store, &["mount"], &wt);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("not empty"), "{}", stderr(&out));
    assert_eq!(
        stderr(&out).trim().lines().count(),
        1,
        "one line: {}",
        stderr(&out)
    );

    // --force moves the old contents into the mount.
    let out = kache_path(&store, &["mount", "--force"], &wt);
    assert!(out.status.success(), "{}", stderr(&out));
    let _m = Mount {
        store: store.clone(),
        wt: wt.clone(),
    };
    assert_eq!(
        std::fs::read(wt.join("target/debug/old")).unwrap(),
        b"old build"
    );

    let open = std::fs::File::open(wt.join("target/debug/old")).unwrap();
    let out = kache_path(&store, &["unmount"], &wt);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("busy"), "{}", stderr(&out));
    assert!(is_mounted(&wt.join("target")));
    let out = kache_path(&store, &["unmount", "--force"], &wt);
    assert!(out.status.success(), "{}", stderr(&out));
    drop(open);
    assert!(!is_mounted(&wt.join("target")));
}

fn git(dir: &Path, args: &[&str]) {
    let out = Command::new("git")
        .current_dir(dir)
        .args(["-c", "user.name=t", "-c", "user.email=t@t"])
        .args(args)
        .output()
        .unwrap();
    assert!(out.status.success(), "git {args:?}: {}", stderr(&out));
}

#[test]
fn worktree_add_mounts_and_remove_refuses_changes_like_git() {
    need_fuse();
    let tmp = tempfile::tempdir().unwrap();
    let store = tmp.path().join("store");
    let repo = fixture_at(&tmp.path().join("repo"));
    std::fs::write(repo.join(".gitignore"), "target/\n").unwrap();
    git(&repo, &["init", "-q", "-b", "main"]);
    git(&repo, &["add", "-A"]);
    git(&repo, &["commit", "-q", "-m", "fixture"]);

    let wt = tmp.path().join("agent-1");
    let out = kache(&store, &["worktree", "add", "--json"])
        .current_dir(&repo)
        .arg(&wt)
        .arg("task-1")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["mount"], "healthy", "{v}");
    assert!(is_mounted(&wt.join("target")));

    let out = kache(&store, &["worktree", "list", "--json"])
        .current_dir(&repo)
        .output()
        .unwrap();
    let rows: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).unwrap();
    let row = rows
        .iter()
        .find(|r| r["branch"] == "task-1")
        .unwrap_or_else(|| panic!("{rows:?}"));
    assert_eq!(row["mount"], "healthy");

    std::fs::write(wt.join("app/src/extra.rs"), "// new\n").unwrap();
    let out = kache(&store, &["worktree", "remove"])
        .current_dir(&repo)
        .arg(&wt)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(stderr(&out).contains("has changes"), "{}", stderr(&out));
    assert!(
        is_mounted(&wt.join("target")),
        "a refused remove leaves the mount"
    );

    let out = kache(&store, &["worktree", "remove", "--force"])
        .current_dir(&repo)
        .arg(&wt)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(!wt.exists());
    assert!(mounts(&store).1.is_empty(), "the mount is forgotten");
}

#[test]
fn the_daemon_remounts_a_mount_whose_server_died() {
    let tmp = tempfile::tempdir().unwrap();
    let store = tmp.path().join("store");
    let wt = tmp.path().join("wt");
    std::fs::create_dir_all(&wt).unwrap();
    let _m = Mount::new(&store, &wt);
    std::fs::write(wt.join("target/kept"), b"still here").unwrap();
    let pid = mount_row(&store, &wt)["pid"].as_u64().unwrap();
    unsafe { libc::kill(pid as i32, libc::SIGKILL) };
    std::thread::sleep(std::time::Duration::from_millis(200));
    assert_eq!(mount_row(&store, &wt)["state"], "broken");

    let out = kache(&store, &["daemon", "start"]).output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while mount_row(&store, &wt)["state"] != "healthy" && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let state = mount_row(&store, &wt)["state"].clone();
    let _ = kache(&store, &["daemon", "stop"]).output();
    assert_eq!(state, "healthy", "the daemon repaired the mount");
    assert_eq!(
        std::fs::read(wt.join("target/kept")).unwrap(),
        b"still here"
    );
}

#[test]
fn without_fuse_mount_says_why_in_one_line_and_the_build_still_hits() {
    // A private mount namespace whose /dev lacks `fuse` stands in for a machine without FUSE.
    need_tool("unshare");
    let tmp = tempfile::tempdir().unwrap();
    let store = tmp.path().join("store");
    let a = fixture_at(&tmp.path().join("wt-a"));
    let b = fixture_at(&tmp.path().join("wt-b"));
    let out = Command::new("unshare")
        .args(["--mount", "--propagation", "private", "sh", "-c"])
        .arg(r#"mount -t tmpfs none /dev && exec "$0" mount "$1""#)
        .arg(kache_bin())
        .arg(&b)
        .env("KACHE_DIR", &store)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let msg = stderr(&out);
    assert_eq!(msg.trim().lines().count(), 1, "one line: {msg}");
    assert!(
        msg.contains("/dev/fuse") && msg.contains("restores"),
        "{msg}"
    );
    assert!(!is_mounted(&b.join("target")));

    build(&a, &store);
    let units = counter(&stats(&store), "rust", "misses");
    build(&b, &store);
    let s = stats(&store);
    assert_eq!(counter(&s, "rust", "hits"), units, "{s}");
    assert_eq!(counter_at(&s, "restore.mount_files"), 0, "{s}");
}

#[test]
fn doctor_names_a_broken_mount_and_fix_remounts_it() {
    need_fuse();
    let tmp = tempfile::tempdir().unwrap();
    let store = tmp.path().join("store");
    let a = fixture_at(&tmp.path().join("wt"));
    let _m = Mount::new(&store, &a);
    let pid = mount_row(&store, &a)["pid"].as_u64().unwrap();
    unsafe { libc::kill(pid as i32, libc::SIGKILL) };
    std::thread::sleep(std::time::Duration::from_millis(200));
    let doctor = |fix: bool| {
        let mut c = kache(&store, &["doctor"]);
        if fix {
            c.arg("--fix");
        }
        // A private HOME, CARGO_HOME and config dir: `doctor --fix` edits
        // cargo's config, and `cargo test` exports the real CARGO_HOME.
        c.env("HOME", tmp.path())
            .env("CARGO_HOME", tmp.path().join("cargo-home"))
            .env("XDG_CONFIG_HOME", tmp.path().join("config"))
            .env("KACHE_SERVICE_MANAGER", "none");
        let o = c.output().unwrap();
        String::from_utf8_lossy(&o.stdout).into_owned() + &String::from_utf8_lossy(&o.stderr)
    };
    let report = doctor(false);
    let line = report
        .lines()
        .find(|l| l.contains("mounts:"))
        .unwrap_or_default()
        .to_string();
    assert!(
        line.starts_with("problem") && line.contains("broken"),
        "{report}"
    );
    let fixed = doctor(true);
    assert!(
        fixed
            .lines()
            .any(|l| l.starts_with("ok") && l.contains("mounts:")),
        "{fixed}"
    );
    assert_eq!(mount_row(&store, &a)["state"], "healthy");
}
