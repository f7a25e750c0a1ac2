//! `kache mount` end to end: real FUSE mounts of worktrees' `target/`, real cargo through
//! kache. Needs root (or fusermount3) and `/dev/fuse`; `scripts/test` installs fuse3. These
//! tests never skip: where FUSE is missing they fail naming what is missing.
#![cfg(target_os = "linux")] // FUSE mounts

mod common;
mod mount_support;

use common::*;
use mount_support::*;
use std::process::Command;

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
    assert!(
        target.is_symlink(),
        "the target link stays, so a build is told"
    );
    assert!(!is_mounted(&target));
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
    kill_with_keeper(pid);
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

    // `cargo clean` removes the target link (the mount point is elsewhere, so nothing is
    // busy) and exits 0; the mount's server empties the mount; the next build links it again
    // and goes into it.
    let clean = cargo(&a, &store, &["clean"]).output().unwrap();
    assert!(clean.status.success(), "{}", stderr(&clean));
    assert!(!target.exists(), "cargo clean removed the target");
    assert!(
        eventually(5, || {
            let row = mount_row(&store, &a);
            // (CACHEDIR.TAG comes back: the server keeps it there for the wrapper.)
            row["upper_bytes"].as_u64().unwrap() < 1024 && row["placed_files"] == 0
        }),
        "the mount was not emptied: {}",
        mount_row(&store, &a)
    );
    assert_eq!(mount_row(&store, &a)["state"], "healthy");
    let rebuilt = build(&a, &store);
    assert!(!compiled_units(&rebuilt).is_empty());
    assert!(
        target.is_symlink() && is_mounted(&target),
        "{}",
        stderr(&rebuilt)
    );
    assert_eq!(run_app(&a, "debug"), expected);
}

/// A mount server's stop signals: SIGTERM (shutdown, logout) unmounts and leaves the mount
/// wanted, so a daemon brings it back; SIGINT (Ctrl-C) unmounts and marks it unwanted.
#[test]
fn a_mount_server_unmounts_on_sigterm_and_sigint_and_only_ctrl_c_makes_it_unwanted() {
    let tmp = tempfile::tempdir().unwrap();
    let store = tmp.path().join("store");
    let a = fixture_at(&tmp.path().join("wt"));
    let _m = Mount::new(&store, &a);
    let stop = |sig: &str, wanted_after: bool| {
        let row = mount_row(&store, &a);
        assert_eq!(row["state"], "healthy", "{row}");
        let pid = row["pid"].as_u64().unwrap();
        let kill = Command::new("kill")
            .arg(format!("-{sig}"))
            .arg(pid.to_string())
            .output()
            .unwrap();
        assert!(kill.status.success(), "kill -{sig}: {}", stderr(&kill));
        assert!(eventually(10, || !alive(pid)), "server {pid} ignored {sig}");
        let row = mount_row(&store, &a);
        assert_eq!(row["state"], "unmounted", "after {sig}: {row}");
        assert_eq!(row["wanted"], wanted_after, "after {sig}: {row}");
        let log = std::path::Path::new(row["mountpoint"].as_str().unwrap())
            .parent()
            .unwrap()
            .join("server.log");
        let log = std::fs::read_to_string(&log).unwrap();
        assert!(
            log.contains(&format!("SIG{sig}: unmounting")),
            "{}: {log}",
            sig
        );
    };
    stop("TERM", true);
    let out = kache_path(&store, &["mount"], &a);
    assert!(out.status.success(), "{}", stderr(&out));
    stop("INT", false);
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
    kill_with_keeper(pid);
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
    kill_with_keeper(pid);
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
