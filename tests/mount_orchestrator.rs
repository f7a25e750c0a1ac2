//! Mounted worktrees under an agent orchestrator: what one does to a worktree (git worktree
//! remove with and without --force, rm -rf, cargo clean, parallel cargo processes, a killed
//! mount server, kache unmount then a build, gc) works, and kache cleans up after it by itself.
//! Real git, real cargo, real FUSE mounts; as root (the unprivileged case runs a command as
//! `nobody`). Never skipped: what is missing fails the test with its name.
#![cfg(target_os = "linux")] // FUSE mounts

mod common;
mod mount_support;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::*;
use mount_support::*;

/// A store, a git repository of the fixture and a guard that unmounts whatever is left.
struct Orchestra {
    _tmp: tempfile::TempDir,
    root: PathBuf,
    store: PathBuf,
    repo: PathBuf,
    _mounts: Mounts,
}

impl Orchestra {
    fn new() -> Orchestra {
        need_fuse();
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().to_path_buf();
        let store = root.join("store");
        let repo = fixture_repo(&root.join("repo"));
        Orchestra {
            _mounts: Mounts(store.clone()),
            _tmp: tmp,
            root,
            store,
            repo,
        }
    }

    /// `kache worktree add` of a new worktree `name` on branch `name`.
    fn add(&self, name: &str) -> PathBuf {
        let wt = self.root.join(name);
        worktree_add(&self.store, &self.repo, &wt, name);
        wt
    }

    fn state_dir(&self, wt: &Path) -> PathBuf {
        let row = mount_row(&self.store, wt);
        self.store.join("mounts").join(row["id"].as_str().unwrap())
    }

    fn held_bytes(&self) -> u64 {
        counter_at(&stats(&self.store), "store.mount_held_bytes")
    }

    fn kache_in_repo(&self, args: &[&str]) -> std::process::Output {
        kache(&self.store, args)
            .current_dir(&self.repo)
            .output()
            .unwrap()
    }
}

/// What "released" means: the mount is off the kernel's table, its server is gone, its state
/// (upper directory included) is deleted, and no blob is held for it any more.
fn assert_released_within_seconds(o: &Orchestra, mountpoint: &Path, state: &Path, pid: u64) {
    let released = eventually(5, || {
        !mounted_at(mountpoint) && !state.exists() && !alive(pid) && mounts(&o.store).1.is_empty()
    });
    assert!(
        released,
        "mount not released: mounted {}, state {}, server alive {}, mounts {:?}",
        mounted_at(mountpoint),
        state.exists(),
        alive(pid),
        mounts(&o.store).1
    );
    assert_eq!(o.held_bytes(), 0, "the released mount still pins blobs");
}

fn mount_facts(o: &Orchestra, wt: &Path) -> (PathBuf, PathBuf, u64) {
    let row = mount_row(&o.store, wt);
    (
        PathBuf::from(row["mountpoint"].as_str().unwrap()),
        o.state_dir(wt),
        row["pid"].as_u64().unwrap(),
    )
}

#[test]
fn git_worktree_remove_of_a_built_mounted_worktree_succeeds_and_kache_releases_the_mount() {
    let o = Orchestra::new();
    let wt = o.add("agent-1");
    build(&wt, &o.store);
    assert!(o.held_bytes() > 0, "a built mount holds blobs");
    let (mountpoint, state, pid) = mount_facts(&o, &wt);

    // No --force: the target link must not count as an untracked change.
    let out = Command::new("git")
        .current_dir(&o.repo)
        .args(["worktree", "remove"])
        .arg(&wt)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(!wt.exists());
    assert_released_within_seconds(&o, &mountpoint, &state, pid);
}

#[test]
fn git_worktree_remove_force_with_changes_succeeds_and_kache_releases_the_mount() {
    let o = Orchestra::new();
    let wt = o.add("agent-2");
    build(&wt, &o.store);
    std::fs::write(wt.join("app/src/extra.rs"), "// uncommitted\n").unwrap();
    let (mountpoint, state, pid) = mount_facts(&o, &wt);
    let out = Command::new("git")
        .current_dir(&o.repo)
        .args(["worktree", "remove", "--force"])
        .arg(&wt)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(!wt.exists());
    assert_released_within_seconds(&o, &mountpoint, &state, pid);
}

#[test]
fn rm_rf_of_a_mounted_worktree_succeeds_and_kache_releases_the_mount() {
    let o = Orchestra::new();
    let wt = o.add("agent-3");
    build(&wt, &o.store);
    let (mountpoint, state, pid) = mount_facts(&o, &wt);
    let out = Command::new("rm").arg("-rf").arg(&wt).output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(!wt.exists());
    assert_released_within_seconds(&o, &mountpoint, &state, pid);
    // git still lists it (prunable): `kache worktree remove` finishes the job.
    let out = o.kache_in_repo(&["worktree", "remove", wt.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    let listed = stdout(&git(&o.repo, &["worktree", "list", "--porcelain"]));
    assert!(!listed.contains("agent-3"), "{listed}");
}

#[test]
fn kache_worktree_remove_works_from_every_half_removed_state() {
    let o = Orchestra::new();
    let listed = |name: &str| stdout(&git(&o.repo, &["worktree", "list"])).contains(name);

    // 1. Deleted by hand while its server was down: nobody released the mount yet.
    let wt = o.add("half-rm");
    build(&wt, &o.store);
    let (mountpoint, state, pid) = mount_facts(&o, &wt);
    kill_with_keeper(pid);
    let _ = Command::new("umount").arg("-l").arg(&mountpoint).output();
    std::fs::remove_dir_all(&wt).unwrap();
    assert!(state.exists() && listed("half-rm"));
    let out = o.kache_in_repo(&["worktree", "remove", "--json", wt.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["mount_released"], true, "{v}");
    assert!(!state.exists() && !listed("half-rm"));

    // 2. Its server killed, the worktree intact: unmounted by force, removed.
    let wt = o.add("half-dead");
    let (mountpoint, state, pid) = mount_facts(&o, &wt);
    kill_with_keeper(pid);
    let out = o.kache_in_repo(&["worktree", "remove", wt.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(!wt.exists() && !state.exists() && !mounted_at(&mountpoint));
    assert!(!listed("half-dead"));

    // 3. Removed by git already (the mount released by its server): nothing left to fail on.
    let wt = o.add("half-git");
    git(
        &o.repo,
        &["worktree", "remove", "--force", wt.to_str().unwrap()],
    );
    let out = o.kache_in_repo(&["worktree", "remove", wt.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(mounts(&o.store).1.is_empty());

    // 4. Removed twice: the second says so and succeeds.
    let out = o.kache_in_repo(&["worktree", "remove", "--json", wt.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["removed"], false, "{v}");
}

#[test]
fn cargo_clean_then_build_at_once_in_a_mounted_worktree_goes_into_the_emptied_mount() {
    let o = Orchestra::new();
    let wt = o.add("clean");
    build(&wt, &o.store);
    let expected = run_app(&wt, "debug");
    let before = counter_at(&stats(&o.store), "restore.mount_files");

    // What a script does: clean and build in one go, no pause for kache.
    let mut script = Command::new("sh");
    script
        .current_dir(&wt)
        .arg("-c")
        .arg("cargo clean --offline && cargo build --offline")
        .env("RUSTC_WRAPPER", kache_bin())
        .env("KACHE_DIR", &o.store)
        .env("CARGO_TERM_COLOR", "never")
        // As `build` above: the same incremental setting, so the same keys.
        .env("CARGO_INCREMENTAL", "0");
    for v in ["CARGO_TARGET_DIR", "CARGO_BUILD_TARGET_DIR", "RUSTFLAGS"] {
        script.env_remove(v);
    }
    let out = script.output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let target = wt.join("target");
    assert!(
        target.is_symlink() && is_mounted(&target),
        "{}",
        stderr(&out)
    );
    assert_eq!(run_app(&wt, "debug"), expected);
    // Every unit was rebuilt (the clean emptied the mount) from the cache, by reference.
    let units = compiled_units(&out).len() as u64;
    assert!(units >= 8, "{}", stderr(&out));
    let placed = counter_at(&stats(&o.store), "restore.mount_files") - before;
    assert!(placed >= units, "{placed} placements for {units} units");
    assert_eq!(mount_row(&o.store, &wt)["target_link"], "linked");
}

#[test]
fn cargo_clean_exits_0_and_leaves_no_build_behind() {
    let o = Orchestra::new();
    let wt = o.add("clean-only");
    build(&wt, &o.store);
    let clean = cargo(&wt, &o.store, &["clean"]).output().unwrap();
    assert!(clean.status.success(), "{}", stderr(&clean));
    let target = wt.join("target");
    assert!(!target.exists(), "the target is gone after cargo clean");
    // The mount's server empties the mount: the bytes are freed, nothing is pinned.
    assert!(
        eventually(5, || {
            let row = mount_row(&o.store, &wt);
            row["placed_files"] == 0 && row["upper_bytes"].as_u64().unwrap() < 1024
        }),
        "{}",
        mount_row(&o.store, &wt)
    );
    assert_eq!(o.held_bytes(), 0);
    // `git worktree remove` (no --force) still accepts the worktree.
    git(&o.repo, &["worktree", "remove", wt.to_str().unwrap()]);
}

#[test]
fn parallel_cargo_processes_after_cargo_clean_all_build_into_the_mount() {
    let o = Orchestra::new();
    let wt = o.add("parallel");
    build(&wt, &o.store);
    let clean = cargo(&wt, &o.store, &["clean"]).output().unwrap();
    assert!(clean.status.success(), "{}", stderr(&clean));
    let jobs: Vec<_> = [
        vec!["build"],
        vec!["test", "--no-run"],
        vec!["build", "--release"],
    ]
    .into_iter()
    .map(|args| cargo(&wt, &o.store, &args).spawn().unwrap())
    .collect();
    for job in jobs {
        let out = job.wait_with_output().unwrap();
        assert!(out.status.success(), "{}", stderr(&out));
    }
    assert!(is_mounted(&wt.join("target")));
    assert_eq!(mount_row(&o.store, &wt)["target_link"], "linked");
    let again = build(&wt, &o.store);
    assert!(compiled_units(&again).is_empty(), "{}", stderr(&again));
    assert!(run_app(&wt, "release").contains("gen: 42"));
}

#[test]
fn a_build_after_the_mount_server_is_killed_names_the_mount_and_goes_into_it() {
    let o = Orchestra::new();
    let wt = o.add("killed");
    build(&wt, &o.store);
    let (_, _, pid) = mount_facts(&o, &wt);
    kill_with_keeper(pid);
    std::fs::write(
        wt.join("app/src/main.rs"),
        std::fs::read_to_string(wt.join("app/src/main.rs")).unwrap() + "\n// edited\n",
    )
    .unwrap();
    let out = cargo(&wt, &o.store, &["build"]).output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let target = wt.join("target");
    let err = stderr(&out);
    let lines: Vec<&str> = err.lines().filter(|l| l.starts_with("kache:")).collect();
    assert_eq!(lines.len(), 1, "one line: {lines:?}");
    assert!(
        lines[0].contains(target.to_str().unwrap()) && lines[0].contains("kache mount"),
        "{lines:?}"
    );
    assert_eq!(mount_row(&o.store, &wt)["state"], "healthy");
    assert!(is_mounted(&target));
    assert!(run_app(&wt, "debug").contains("gen: 42"));
}

/// A mount server killed in the middle of a build (SIGKILL, as the OOM killer does): its keeper
/// holds the mount's FUSE connection and takes over serving it, so the build in flight only
/// waits, and succeeds with the right output. Descriptors opened before the kill (a file, a
/// directory being listed) keep working.
#[test]
fn a_build_in_flight_survives_its_mount_server_being_killed() {
    use std::io::Read;
    let o = Orchestra::new();
    let wt = o.add("survivor");
    let (_, state, pid) = mount_facts(&o, &wt);
    let keeper = children(pid);
    assert_eq!(keeper.len(), 1, "one keeper: {keeper:?}");
    let target = wt.join("target");
    let mut tag = std::fs::File::open(target.join("CACHEDIR.TAG")).unwrap();
    let mut listing = std::fs::read_dir(&target).unwrap();
    let first = listing.next().unwrap().unwrap().file_name();

    let build = cargo(&wt, &o.store, &["build"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Killed once the build writes into the mount.
    let fingerprints = target.join("debug/.fingerprint");
    assert!(eventually(120, || std::fs::read_dir(&fingerprints)
        .is_ok_and(|d| d.count() >= 3)));
    kill(pid);
    let out = build.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(run_app(&wt, "debug").contains("gen: 42"));

    let mut text = String::new();
    tag.read_to_string(&mut text).unwrap();
    assert!(text.starts_with("Signature:"), "{text}");
    drop(tag);
    // The listing goes on (listed anew by the new server: what changed meanwhile may show).
    let mut names: Vec<_> = listing.map(|e| e.unwrap().file_name()).collect();
    names.push(first);
    assert!(names.iter().any(|n| n == "CACHEDIR.TAG"), "{names:?}");

    // The keeper is the server now, recorded as such, and has a keeper of its own.
    let row = mount_row(&o.store, &wt);
    assert_eq!(row["state"], "healthy", "{row}");
    assert_eq!(row["pid"].as_u64(), Some(keeper[0]), "{row}");
    let log = std::fs::read_to_string(state.join("server.log")).unwrap();
    assert!(log.contains(&format!("(pid {pid}) died")), "{log}");
    let next = children(keeper[0]);
    assert_eq!(next.len(), 1, "the new server's keeper: {next:?}");
    // It ends like any server: `kache unmount` stops it and its keeper.
    let out = kache_path(&o.store, &["unmount"], &wt);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(eventually(5, || !alive(keeper[0]) && !alive(next[0])));
    assert!(!is_mounted(&target));
}

/// A request the server had read but not answered when it was killed is sent again by the
/// kernel to the keeper that takes over (FUSE_NOTIFY_RESEND), which answers it, knowing the dead
/// server may have carried it out: here a mkdir it had done, so its "exists" is a success.
#[test]
fn a_request_the_killed_server_had_taken_is_answered_by_its_keeper() {
    let o = Orchestra::new();
    let wt = o.add("resend");
    let out = kache_path(&o.store, &["unmount"], &wt);
    assert!(out.status.success(), "{}", stderr(&out));
    let out = kache(&o.store, &["mount"])
        .arg(&wt)
        .env("KACHE_FS_TEST_STALL", "1")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let (_, state, pid) = mount_facts(&o, &wt);
    let dir = wt.join("target/.kache-stall-1");
    let (tx, rx) = std::sync::mpsc::channel();
    let asked = dir.clone();
    std::thread::spawn(move || {
        let _ = tx.send(std::fs::create_dir(&asked).map_err(|e| e.to_string()));
    });
    // The server made the directory and holds its answer back.
    assert!(eventually(20, || state
        .join("upper/.kache-stall-1")
        .is_dir()));
    assert!(rx.try_recv().is_err(), "answered before the kill");
    kill(pid);
    let made = rx
        .recv_timeout(std::time::Duration::from_secs(30))
        .expect("the mkdir in flight was never answered");
    assert_eq!(made, Ok(()));
    assert!(dir.is_dir());
    let out = kache_path(&o.store, &["unmount"], &wt);
    assert!(out.status.success(), "{}", stderr(&out));
}

/// A keeper that takes over serves the mount as the dead server left it: after `cargo clean`
/// removed the target link, the link stays removed (the next build puts it back).
#[test]
fn a_takeover_after_cargo_clean_leaves_the_target_link_removed() {
    let o = Orchestra::new();
    let wt = o.add("clean-then-kill");
    build(&wt, &o.store);
    let clean = cargo(&wt, &o.store, &["clean"]).output().unwrap();
    assert!(clean.status.success(), "{}", stderr(&clean));
    let target = wt.join("target");
    assert!(!target.exists() && !target.is_symlink());
    let (_, state, pid) = mount_facts(&o, &wt);
    let keeper = children(pid);
    kill(pid);
    let log = state.join("server.log");
    assert!(eventually(10, || std::fs::read_to_string(&log)
        .is_ok_and(|l| l.contains(&format!("(pid {pid}) died")))));
    assert!(eventually(5, || mount_row(&o.store, &wt)["pid"].as_u64()
        == keeper.first().copied()));
    std::thread::sleep(std::time::Duration::from_millis(300));
    assert!(
        !target.exists() && !target.is_symlink(),
        "the takeover linked the target again"
    );
    // The next build links it and goes into the mount.
    build(&wt, &o.store);
    assert!(target.is_symlink() && is_mounted(&target));
    assert!(run_app(&wt, "debug").contains("gen: 42"));
}

/// A server's keeper that exits is replaced, and a server that ends on purpose takes its keeper
/// with it (no process is left behind).
#[test]
fn a_lost_keeper_is_replaced_and_unmount_leaves_no_process() {
    let o = Orchestra::new();
    let wt = o.add("keepers");
    let (_, _, pid) = mount_facts(&o, &wt);
    let first = children(pid);
    assert_eq!(first.len(), 1, "{first:?}");
    kill(first[0]);
    assert!(eventually(10, || children(pid).len() == 1 && children(pid) != first));
    let second = children(pid);
    build(&wt, &o.store);
    let out = kache_path(&o.store, &["unmount"], &wt);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(eventually(5, || !alive(pid) && !alive(second[0])));
}

/// The kernel caches the mount's names and attributes for minutes: every change must still
/// reach cargo's freshness checks at once, in an edit-build loop.
#[test]
fn each_edit_in_a_mounted_worktree_rebuilds_exactly_what_it_touches() {
    let o = Orchestra::new();
    let wt = o.add("edit-loop");
    build(&wt, &o.store);
    let core = wt.join("core/src/lib.rs");
    let original = std::fs::read_to_string(&core).unwrap();
    for round in 0..3 {
        std::fs::write(
            &core,
            format!("{original}\npub const ROUND: u32 = {round};\n"),
        )
        .unwrap();
        let out = build(&wt, &o.store);
        let mut units = compiled_units(&out);
        units.sort();
        assert_eq!(
            units,
            ["app", "fixture-core"],
            "round {round}: {}",
            stderr(&out)
        );
        let again = build(&wt, &o.store);
        assert!(
            compiled_units(&again).is_empty(),
            "round {round}: {}",
            stderr(&again)
        );
    }
    assert!(run_app(&wt, "debug").contains("hello"));
}

/// What a build's version query leaves to say is printed by that build's first compile, once;
/// a notice left by a build that never compiled is never printed in a later one (its process id
/// may name another process by then).
#[test]
fn a_build_notice_is_printed_once_and_never_when_stale() {
    need_tool("rustc");
    let tmp = tempfile::tempdir().unwrap();
    let store = tmp.path().join("store");
    let src = tmp.path().join("lib.rs");
    std::fs::write(&src, "pub fn f() -> u32 { 7 }\n").unwrap();
    let notices = store.join("mount-notices");
    std::fs::create_dir_all(&notices).unwrap();
    // The wrapper's parent (cargo, in a build) is this test process here.
    let mine = notices.join(std::process::id().to_string());
    let compile = || {
        let mut c = isolated(kache_bin(), tmp.path(), &store);
        c.args([
            "rustc",
            "--crate-name",
            "t",
            "--crate-type",
            "lib",
            "--edition",
            "2021",
        ])
        .arg(&src)
        .arg("--out-dir")
        .arg(tmp.path().join("out"));
        let out = c.output().unwrap();
        assert!(out.status.success(), "{}", stderr(&out));
        stderr(&out)
    };
    std::fs::write(&mine, "kache: fresh notice\n").unwrap();
    assert!(compile().contains("kache: fresh notice"));
    assert!(!compile().contains("fresh notice"), "printed twice");

    std::fs::write(&mine, "kache: stale notice\n").unwrap();
    std::fs::File::options()
        .write(true)
        .open(&mine)
        .unwrap()
        .set_modified(std::time::SystemTime::now() - std::time::Duration::from_secs(120))
        .unwrap();
    assert!(!compile().contains("stale notice"));
    assert!(!mine.exists(), "a stale notice is dropped");
}

#[test]
fn a_repaired_mount_keeps_its_previous_server_log() {
    let o = Orchestra::new();
    let wt = o.add("logs");
    let (_, state, pid) = mount_facts(&o, &wt);
    kill_with_keeper(pid);
    let out = kache_path(&o.store, &["mount"], &wt);
    assert!(out.status.success(), "{}", stderr(&out));
    let previous = std::fs::read_to_string(state.join("server.log.1")).unwrap();
    assert!(previous.contains(&format!("pid {pid}")), "{previous}");
    let current = std::fs::read_to_string(state.join("server.log")).unwrap();
    let new_pid = mount_row(&o.store, &wt)["pid"].as_u64().unwrap();
    assert!(current.contains(&format!("pid {new_pid}")), "{current}");
}

#[test]
fn a_build_after_kache_unmount_warns_and_kache_mount_takes_what_it_wrote() {
    let o = Orchestra::new();
    let wt = o.add("unmounted");
    build(&wt, &o.store);
    let out = kache_path(&o.store, &["unmount"], &wt);
    assert!(out.status.success(), "{}", stderr(&out));
    std::fs::write(
        wt.join("app/src/main.rs"),
        std::fs::read_to_string(wt.join("app/src/main.rs")).unwrap() + "\n// edited\n",
    )
    .unwrap();
    let out = build(&wt, &o.store);
    let warning = stderr(&out)
        .lines()
        .filter(|l| l.starts_with("kache:"))
        .collect::<Vec<_>>()
        .join("\n");
    assert!(
        warning.contains("unmounted") && warning.contains("kache mount"),
        "{}",
        stderr(&out)
    );
    // `kache mount` does not refuse what that build wrote: it takes it into the mount.
    let out = kache_path(&o.store, &["mount"], &wt);
    assert!(out.status.success(), "{}", stderr(&out));
    let again = build(&wt, &o.store);
    assert!(compiled_units(&again).is_empty(), "{}", stderr(&again));
    assert!(run_app(&wt, "debug").contains("gen: 42"));
}

#[test]
fn gc_with_mounts_keeps_what_they_hold_and_says_how_much() {
    let o = Orchestra::new();
    let a = o.add("gc-a");
    build(&a, &o.store);
    let units = counter(&stats(&o.store), "rust", "misses");
    let before = stats(&o.store);
    let held = counter_at(&before, "store.mount_held_bytes");
    assert!(held > 1 << 20, "the mount holds its rlibs: {before}");

    let out = kache(&o.store, &["gc", "--max-size", "1MiB"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let said = stdout(&out);
    assert!(said.contains("mounts hold"), "{said}");
    let removed: u64 = said
        .split(" entries and ")
        .next()
        .and_then(|s| s.rsplit('(').next())
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or_else(|| panic!("no entry count in {said}"));
    let after = stats(&o.store);
    assert_eq!(
        counter_at(&before, "store.entries") - counter_at(&after, "store.entries"),
        removed,
        "{said}"
    );
    assert_eq!(counter_at(&after, "gc.entries_evicted"), removed, "{after}");
    assert_eq!(counter_at(&after, "store.mount_held_bytes"), held);

    // What the mount holds costs the cache nothing: a second worktree still hits everything.
    let b = o.add("gc-b");
    build(&b, &o.store);
    assert_eq!(counter(&stats(&o.store), "rust", "hits"), units);
}

#[test]
fn mounts_and_worktree_list_show_what_each_worktree_really_costs() {
    let o = Orchestra::new();
    let a = o.add("cost-a");
    build(&a, &o.store);
    let b = o.add("cost-b");
    build(&b, &o.store);
    let row = mount_row(&o.store, &b);
    let (disk, seen) = (
        row["disk_bytes"].as_u64().unwrap(),
        row["apparent_bytes"].as_u64().unwrap(),
    );
    assert_eq!(seen, tree_bytes(&b.join("target")), "{row}");
    assert!(disk * 5 < seen, "own disk {disk} B vs {seen} B seen: {row}");
    let out = o.kache_in_repo(&["worktree", "list", "--json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let rows: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).unwrap();
    let listed = rows.iter().find(|r| r["branch"] == "cost-b").unwrap();
    assert_eq!(listed["disk_bytes"], disk);
    // The repository's own plain target/ (never built): nothing.
    let main = rows.iter().find(|r| r["branch"] == "main").unwrap();
    assert_eq!(main["mount"], "none");
    let text = stdout(&o.kache_in_repo(&["mounts"]));
    assert!(text.contains("OWN DISK") && text.contains("SEEN"), "{text}");
}

#[test]
fn worktree_add_warns_when_cargo_does_not_run_kache() {
    let o = Orchestra::new();
    let home = o.root.join("home");
    let add = |name: &str, wrapper: Option<&str>| {
        let mut c = kache(&o.store, &["worktree", "add", "--json"]);
        c.current_dir(&o.repo)
            .arg(o.root.join(name))
            .arg(name)
            .env("HOME", &home)
            .env("CARGO_HOME", home.join(".cargo"))
            .env_remove("RUSTC_WRAPPER")
            .env_remove("CARGO_BUILD_RUSTC_WRAPPER");
        if let Some(w) = wrapper {
            c.env("RUSTC_WRAPPER", w);
        }
        let out = c.output().unwrap();
        assert!(out.status.success(), "{}", stderr(&out));
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        (v, stderr(&out))
    };
    let (v, err) = add("unwired", None);
    assert_eq!(v["cargo_uses_kache"], false, "{v}");
    assert!(
        err.contains("will save nothing") && err.contains("kache init"),
        "{err}"
    );
    let (v, err) = add("wired", Some(kache_bin()));
    assert_eq!(v["cargo_uses_kache"], true, "{v}");
    assert!(!err.contains("warning"), "{err}");
}

/// As a user who cannot open /dev/fuse (`nobody`, seeing a /dev/fuse that is root's and 0600,
/// as in most containers: a private mount namespace makes it so whatever the host's mode),
/// `kache mount` fails in one line naming /dev/fuse and what to do, and `kache worktree add`
/// falls back to a plain worktree and says which in its JSON.
#[test]
fn without_access_to_dev_fuse_mount_names_it_and_worktree_add_falls_back() {
    need_fuse();
    need_tool("setpriv");
    need_tool("unshare");
    assert!(
        kache_platform::process::is_root(),
        "this test runs commands as `nobody` and needs root to do so"
    );
    let tmp = tempfile::tempdir().unwrap();
    std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let root = tmp.path().join("nobody");
    let repo = fixture_repo(&root.join("repo"));
    let store = root.join("store");
    std::fs::create_dir_all(&store).unwrap();
    let chown = Command::new("chown")
        .args(["-R", "65534:65534"])
        .arg(&root)
        .output()
        .unwrap();
    assert!(chown.status.success(), "{}", stderr(&chown));
    let rdev = std::os::unix::fs::MetadataExt::rdev(&std::fs::metadata("/dev/fuse").unwrap());
    let (major, minor) = (libc::major(rdev), libc::minor(rdev));
    let node = tmp.path().join("fuse-0600");
    let as_nobody = |args: &[&str], dir: &Path| {
        Command::new("unshare")
            .args(["--mount", "--propagation", "private", "sh", "-c"])
            .arg(format!(
                r#"rm -f "$0" && mknod -m 600 "$0" c {major} {minor} && mount --bind "$0" /dev/fuse \
                   && exec setpriv --reuid=65534 --regid=65534 --clear-groups -- "$@""#
            ))
            .arg(&node)
            .arg(kache_bin())
            .args(args)
            .current_dir(dir)
            .env("KACHE_DIR", &store)
            .env("HOME", &root)
            .env("RUSTC_WRAPPER", kache_bin())
            .output()
            .unwrap()
    };
    let wt = root.join("agent");
    let out = as_nobody(
        &["worktree", "add", "--json", wt.to_str().unwrap(), "t1"],
        &repo,
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}{}", stdout(&out), stderr(&out)));
    assert_eq!(v["fallback"], "plain-target", "{v}");
    assert_eq!(v["mount"], "unmounted", "{v}");
    let problem = v["problem"].as_str().unwrap_or_default();
    assert!(
        problem.contains("/dev/fuse") && problem.contains("chmod"),
        "{problem}"
    );
    assert!(wt.join("Cargo.toml").exists(), "the worktree exists");
    assert!(!wt.join("target").exists(), "a plain worktree, no link");

    let out = as_nobody(&["mount", wt.to_str().unwrap()], &repo);
    assert!(!out.status.success());
    let msg = stderr(&out);
    assert_eq!(msg.trim().lines().count(), 1, "one line: {msg}");
    assert!(msg.contains("/dev/fuse"), "{msg}");
}
