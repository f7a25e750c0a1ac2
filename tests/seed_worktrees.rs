//! Seeded targets, end to end with real cargo: a new worktree's first build finds the
//! registry units another worktree finished already in place (cargo reports them Fresh
//! and never calls the wrapper for them), and never a unit that a fresh build here
//! would have made differently.
//!
//! The fixture `tests/fixtures/seedws` depends on vendored registry crates: `shlex`,
//! `flavor` (a build script reading an undeclared variable, depending on `shlex`),
//! `tinyver` (two versions vendored, for a lockfile bump) and, behind the `bake`
//! feature, `outbake` (a library keeping its OUT_DIR as a runtime path).
// Seeding at cargo's compiler probe needs to know the cargo process (Linux: /proc), and
// the mounted half needs FUSE.
#![cfg(target_os = "linux")]

mod common;

use common::*;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

/// A copy of the seeding fixture at `dir`, wired to the vendored crates.
fn seed_fixture_at(dir: &Path) -> PathBuf {
    copy_dir(&repo_root().join("tests/fixtures/seedws"), dir);
    let vendor = repo_root().join("tests/fixtures/vendor");
    std::fs::create_dir_all(dir.join(".cargo")).unwrap();
    std::fs::write(
        dir.join(".cargo/config.toml"),
        format!(
            "[source.crates-io]\nreplace-with = \"vendored\"\n\n[source.vendored]\ndirectory = \"{}\"\n",
            vendor.display()
        ),
    )
    .unwrap();
    dir.to_path_buf()
}

/// `cargo <args> -v` through kache with seeding on.
fn cargo_seeded(dir: &Path, store: &Path, args: &[&str]) -> Command {
    let mut all = args.to_vec();
    all.push("-v");
    let mut c = cargo(dir, store, &all);
    c.env("KACHE_SEED", "1").env_remove("FIXTURE_SEED_FLAVOR");
    c
}

fn build_seeded(dir: &Path, store: &Path, args: &[&str]) -> Output {
    let mut a = vec!["build"];
    a.extend_from_slice(args);
    run_ok(cargo_seeded(dir, store, &a))
}

fn err_text(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Packages cargo reported Fresh ("Fresh name vX").
fn fresh_units(out: &Output) -> Vec<String> {
    err_text(out)
        .lines()
        .filter_map(|l| l.trim().strip_prefix("Fresh "))
        .map(|l| l.split_whitespace().next().unwrap_or("").to_string())
        .collect()
}

fn wrapper_calls(store: &Path) -> u64 {
    let s = stats(store);
    ["hits", "misses", "passthroughs"]
        .iter()
        .map(|k| counter(&s, "rust", k))
        .sum()
}

/// The crates the wrapper saw in the events logged after `from` lines.
fn wrapper_units_since(store: &Path, from: usize) -> Vec<String> {
    let text = std::fs::read_to_string(store.join("events.jsonl")).unwrap_or_default();
    text.lines()
        .skip(from)
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|e| e["lang"] == "rust" && e["outcome"] != "seed")
        .filter_map(|e| e["unit"].as_str().map(String::from))
        .collect()
}

fn event_lines(store: &Path) -> usize {
    std::fs::read_to_string(store.join("events.jsonl"))
        .map(|t| t.lines().count())
        .unwrap_or(0)
}

fn run_bin(dir: &Path, profile: &str) -> String {
    let exe = dir.join("target").join(profile).join("seedapp");
    let out = Command::new(&exe)
        .output()
        .unwrap_or_else(|e| panic!("{}: {e}", exe.display()));
    assert!(out.status.success(), "{}", err_text(&out));
    String::from_utf8(out.stdout).unwrap()
}

/// Waits until the background harvest after a build has recorded at least `units`.
fn wait_for_harvest(store: &Path, units: u64) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let n = counter_at(&stats(store), "seed.harvest.units");
        if n >= units {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the background harvest recorded {n} units, expected {units}: {}",
            stats(store)
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Registry units of the default build: shlex, tinyver, flavor's build script, its run
/// and its library.
const REGISTRY_UNITS: u64 = 5;

#[test]
fn second_worktree_finds_every_registry_unit_fresh_and_only_workspace_units_reach_the_wrapper() {
    let tmp = tempfile::tempdir().unwrap();
    let store = tmp.path().join("store");
    let a = seed_fixture_at(&tmp.path().join("wt-a"));
    let b = seed_fixture_at(&tmp.path().join("elsewhere/wt-b"));

    build_seeded(&a, &store, &[]);
    let expected = run_bin(&a, "debug");
    assert!(expected.contains("flavor: vanilla") && expected.contains("tinyver: 0.1.0"));

    let calls = wrapper_calls(&store);
    let events = event_lines(&store);
    let out = build_seeded(&b, &store, &[]);
    let fresh = fresh_units(&out);
    for pkg in ["shlex", "flavor", "tinyver"] {
        assert!(
            fresh.contains(&pkg.to_string()),
            "{pkg} not Fresh:\n{}",
            err_text(&out)
        );
    }
    let compiled = compiled_units(&out);
    assert_eq!(compiled, vec!["util", "seedapp"], "{}", err_text(&out));
    // Only the two workspace units reached the wrapper (and hit).
    assert_eq!(wrapper_calls(&store) - calls, 2, "{}", stats(&store));
    let mut seen = wrapper_units_since(&store, events);
    seen.sort();
    assert_eq!(seen, vec!["seedapp", "util"]);
    assert_eq!(counter_at(&stats(&store), "seed.units"), REGISTRY_UNITS);

    // `kache report` shows the seeding with B's build.
    let rep = Command::new(kache_bin())
        .args(["report", "--json"])
        .env("KACHE_DIR", &store)
        .output()
        .unwrap();
    let rep: serde_json::Value = serde_json::from_slice(&rep.stdout).unwrap();
    let builds = rep["builds"].as_array().unwrap();
    let last = builds.last().unwrap();
    assert_eq!(last["seeded_units"], REGISTRY_UNITS, "{rep}");
    assert_eq!(last["hits"], 2, "{rep}");
    assert_eq!(rep["seeding"]["units"], REGISTRY_UNITS, "{rep}");

    assert_eq!(run_bin(&b, "debug"), expected);
    // The seeded library is A's, byte for byte.
    let rlib = |wt: &Path| {
        let deps = wt.join("target/debug/deps");
        let name = std::fs::read_dir(&deps)
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .find(|n| n.starts_with("libshlex-") && n.ends_with(".rlib"))
            .expect("shlex rlib");
        std::fs::read(deps.join(name)).unwrap()
    };
    assert!(rlib(&a) == rlib(&b));

    // And the next build is a no-op: nothing compiled, nothing asked of the wrapper.
    let calls = wrapper_calls(&store);
    let again = build_seeded(&b, &store, &[]);
    assert!(compiled_units(&again).is_empty(), "{}", err_text(&again));
    assert_eq!(wrapper_calls(&store), calls);
}

#[test]
fn a_donor_deleted_after_its_build_still_seeds_from_the_store() {
    let tmp = tempfile::tempdir().unwrap();
    let store = tmp.path().join("store");
    let a = seed_fixture_at(&tmp.path().join("wt-a"));
    build_seeded(&a, &store, &[]);
    let expected = run_bin(&a, "debug");
    wait_for_harvest(&store, REGISTRY_UNITS);
    std::fs::remove_dir_all(&a).unwrap();

    let b = seed_fixture_at(&tmp.path().join("wt-b"));
    let out = build_seeded(&b, &store, &[]);
    assert_eq!(
        compiled_units(&out),
        vec!["util", "seedapp"],
        "{}",
        err_text(&out)
    );
    assert_eq!(run_bin(&b, "debug"), expected);
}

#[test]
fn a_build_script_reading_an_undeclared_variable_sees_this_worktrees_value() {
    let tmp = tempfile::tempdir().unwrap();
    let store = tmp.path().join("store");
    let a = seed_fixture_at(&tmp.path().join("wt-a"));
    let mut c = cargo_seeded(&a, &store, &["build"]);
    c.env("FIXTURE_SEED_FLAVOR", "mint");
    run_ok(c);
    assert!(run_bin(&a, "debug").contains("flavor: mint"));

    // Another environment: the run of flavor's build script (and what depends on it)
    // is not seeded; cargo runs it here and the program says lemon.
    let b = seed_fixture_at(&tmp.path().join("wt-b"));
    let mut c = cargo_seeded(&b, &store, &["build"]);
    c.env("FIXTURE_SEED_FLAVOR", "lemon");
    let out = run_ok(c);
    assert!(
        compiled_units(&out).contains(&"flavor".to_string()),
        "{}",
        err_text(&out)
    );
    assert!(
        fresh_units(&out).contains(&"shlex".to_string()),
        "{}",
        err_text(&out)
    );
    assert!(run_bin(&b, "debug").contains("flavor: lemon"));
    let s = stats(&store);
    assert!(counter_at(&s, "seed.skipped.env-differs") >= 1, "{s}");

    // The same environment as A's: seeded, and still A's (equal) value.
    let c2 = seed_fixture_at(&tmp.path().join("wt-c"));
    let mut c = cargo_seeded(&c2, &store, &["build"]);
    c.env("FIXTURE_SEED_FLAVOR", "mint");
    let out = run_ok(c);
    assert!(
        fresh_units(&out).contains(&"flavor".to_string()),
        "{}",
        err_text(&out)
    );
    assert!(run_bin(&c2, "debug").contains("flavor: mint"));
}

#[test]
fn a_crate_baking_its_out_dir_reads_its_own_file_once_the_donor_is_gone() {
    let tmp = tempfile::tempdir().unwrap();
    let store = tmp.path().join("store");
    let a = seed_fixture_at(&tmp.path().join("wt-a"));
    build_seeded(&a, &store, &["--features", "bake"]);
    assert!(run_bin(&a, "debug").contains("baked: baked data"));
    // outbake's build script and its run are harvested, its library (which names A's
    // OUT_DIR) is not.
    wait_for_harvest(&store, REGISTRY_UNITS + 2);
    let s = stats(&store);
    assert!(
        counter_at(&s, "seed.harvest.refused.donor-path") >= 1,
        "{s}"
    );

    let b = seed_fixture_at(&tmp.path().join("wt-b"));
    let out = build_seeded(&b, &store, &["--features", "bake"]);
    assert!(
        compiled_units(&out).contains(&"outbake".to_string()),
        "{}",
        err_text(&out)
    );
    std::fs::remove_dir_all(&a).unwrap();
    let text = run_bin(&b, "debug");
    assert!(text.contains("baked: baked data"), "{text}");
}

#[test]
fn other_features_profiles_rustflags_and_lock_versions_rebuild_what_cargo_would() {
    let tmp = tempfile::tempdir().unwrap();
    let store = tmp.path().join("store");
    let a = seed_fixture_at(&tmp.path().join("wt-a"));
    build_seeded(&a, &store, &[]);
    wait_for_harvest(&store, REGISTRY_UNITS);

    // Other features of a registry crate: cargo builds flavor again (another unit).
    let b = seed_fixture_at(&tmp.path().join("wt-features"));
    let out = build_seeded(&b, &store, &["--features", "extra"]);
    assert!(
        compiled_units(&out).contains(&"flavor".to_string()),
        "{}",
        err_text(&out)
    );
    assert!(
        fresh_units(&out).contains(&"tinyver".to_string()),
        "{}",
        err_text(&out)
    );
    assert!(run_bin(&b, "debug").contains("extra: true"));

    // Another profile: nothing of it was ever built, everything compiles.
    let b = seed_fixture_at(&tmp.path().join("wt-release"));
    let out = build_seeded(&b, &store, &["--release"]);
    assert!(fresh_units(&out).is_empty(), "{}", err_text(&out));
    assert!(run_bin(&b, "release").contains("flavor: vanilla"));

    // Other RUSTFLAGS: every unit's fingerprint differs, cargo rebuilds them all.
    let b = seed_fixture_at(&tmp.path().join("wt-rustflags"));
    let mut c = cargo_seeded(&b, &store, &["build"]);
    c.env("RUSTFLAGS", "--cfg seedtest");
    let out = run_ok(c);
    assert!(fresh_units(&out).is_empty(), "{}", err_text(&out));
    for pkg in ["shlex", "tinyver", "flavor"] {
        assert!(
            compiled_units(&out).contains(&pkg.to_string()),
            "{}",
            err_text(&out)
        );
    }
    assert!(run_bin(&b, "debug").contains("tinyver: 0.1.0"));

    // A lockfile bump: the new version is compiled, the rest stays seeded.
    let b = seed_fixture_at(&tmp.path().join("wt-bump"));
    let manifest = b.join("app/Cargo.toml");
    let text = std::fs::read_to_string(&manifest).unwrap();
    std::fs::write(&manifest, text.replace("=0.1.0", "=0.1.1")).unwrap();
    run_ok(cargo(
        &b,
        &store,
        &["update", "-p", "tinyver", "--precise", "0.1.1"],
    ));
    let out = build_seeded(&b, &store, &[]);
    assert!(
        compiled_units(&out).contains(&"tinyver".to_string()),
        "{}",
        err_text(&out)
    );
    assert!(
        fresh_units(&out).contains(&"shlex".to_string()),
        "{}",
        err_text(&out)
    );
    assert!(run_bin(&b, "debug").contains("tinyver: 0.1.1"));
}

/// Starts a seeded build of `b` that stalls at `stall`, waits for the stall, SIGKILLs
/// the whole build, then builds again normally: it must succeed with A's output.
fn killed_midway(stall: &str) {
    use std::os::unix::process::CommandExt;
    let tmp = tempfile::tempdir().unwrap();
    let store = tmp.path().join("store");
    let a = seed_fixture_at(&tmp.path().join("wt-a"));
    build_seeded(&a, &store, &[]);
    let expected = run_bin(&a, "debug");
    wait_for_harvest(&store, REGISTRY_UNITS);

    let b = seed_fixture_at(&tmp.path().join("wt-b"));
    let mut c = cargo_seeded(&b, &store, &["build"]);
    c.env("KACHE_SEED_TEST_STALL", stall)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .process_group(0);
    let mut child = c.spawn().unwrap();
    let marker = store.join("seed-stalled");
    let deadline = Instant::now() + Duration::from_secs(60);
    while !marker.exists() {
        assert!(
            Instant::now() < deadline,
            "the seeding never reached {stall}"
        );
        assert!(
            child.try_wait().unwrap().is_none(),
            "the build ended before {stall}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    // SAFETY: kill(2) on the process group we created.
    unsafe { libc::killpg(child.id() as i32, libc::SIGKILL) };
    child.wait().unwrap();
    assert!(
        b.join("target/debug/.fingerprint").is_dir(),
        "the seeding was killed before it placed anything"
    );

    let out = build_seeded(&b, &store, &[]);
    assert_eq!(run_bin(&b, "debug"), expected, "{}", err_text(&out));
    let again = build_seeded(&b, &store, &[]);
    assert!(compiled_units(&again).is_empty(), "{}", err_text(&again));
}

#[test]
fn a_seeding_killed_while_placing_data_leaves_a_target_cargo_builds_right() {
    killed_midway("data:4");
}

#[test]
fn a_seeding_killed_while_placing_fingerprints_leaves_a_target_cargo_builds_right() {
    killed_midway("fingerprints:2");
}

#[test]
fn seeding_off_places_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let store = tmp.path().join("store");
    let a = seed_fixture_at(&tmp.path().join("wt-a"));
    build_seeded(&a, &store, &[]);
    wait_for_harvest(&store, REGISTRY_UNITS);
    let b = seed_fixture_at(&tmp.path().join("wt-b"));
    let mut c = cargo_seeded(&b, &store, &["build"]);
    c.env("KACHE_SEED", "0");
    let out = run_ok(c);
    assert!(fresh_units(&out).is_empty(), "{}", err_text(&out));
    assert_eq!(counter_at(&stats(&store), "seed.units"), 0);
}

// ------------------------------------------------------------------ mounted targets

fn need_fuse() {
    assert!(
        Path::new("/dev/fuse").exists(),
        "/dev/fuse is missing: the mounted seeding tests need FUSE (scripts/test loads it)"
    );
}

fn kache_cmd(store: &Path, cwd: &Path, args: &[&str]) -> Output {
    let out = Command::new(kache_bin())
        .args(args)
        .current_dir(cwd)
        .env("KACHE_DIR", store)
        .env("KACHE_SEED", "1")
        .env_remove("FIXTURE_SEED_FLAVOR")
        .env_remove("CARGO_TARGET_DIR")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "kache {args:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        err_text(&out)
    );
    out
}

/// Unmounts (and forgets) a worktree's target when dropped, also on failure.
struct Unmount(PathBuf, PathBuf);
impl Drop for Unmount {
    fn drop(&mut self) {
        let _ = Command::new(kache_bin())
            .args(["unmount", "--force", "--forget"])
            .arg(&self.1)
            .env("KACHE_DIR", &self.0)
            .output();
    }
}

fn git(dir: &Path, args: &[&str]) {
    let out = Command::new("git")
        .args(["-c", "user.name=t", "-c", "user.email=t@t"])
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap();
    assert!(out.status.success(), "git {args:?}: {}", err_text(&out));
}

/// The fixture as a git repository (the vendored-source config committed too).
fn repo_at(dir: &Path) -> PathBuf {
    seed_fixture_at(dir);
    std::fs::write(dir.join(".gitignore"), "target\n").unwrap();
    git(dir, &["init", "-q", "-b", "main"]);
    git(dir, &["add", "-A"]);
    git(dir, &["commit", "-q", "-m", "fixture"]);
    dir.to_path_buf()
}

#[test]
fn a_worktree_added_by_kache_is_seeded_by_reference_before_its_first_build() {
    need_fuse();
    let tmp = tempfile::tempdir().unwrap();
    let store = tmp.path().join("store");
    let a = repo_at(&tmp.path().join("repo"));
    build_seeded(&a, &store, &[]);
    let expected = run_bin(&a, "debug");
    wait_for_harvest(&store, REGISTRY_UNITS);

    let b = tmp.path().join("agent-1");
    kache_cmd(
        &store,
        &a,
        &["worktree", "add", b.to_str().unwrap(), "task-1"],
    );
    let _guard = Unmount(store.clone(), b.clone());
    let s = stats(&store);
    assert_eq!(counter_at(&s, "seed.units"), REGISTRY_UNITS, "{s}");
    // By reference: the mount holds placements, not copies.
    let mounts: serde_json::Value =
        serde_json::from_slice(&kache_cmd(&store, &a, &["mounts", "--json"]).stdout).unwrap();
    let row = mounts
        .as_array()
        .unwrap()
        .iter()
        .find(|r| {
            r["worktree"].as_str() == Some(std::fs::canonicalize(&b).unwrap().to_str().unwrap())
        })
        .cloned()
        .expect("B's mount");
    assert!(row["placed_files"].as_u64().unwrap() > 10, "{row}");
    assert!(row["upper_bytes"].as_u64().unwrap() < 64 * 1024, "{row}");

    let calls = wrapper_calls(&store);
    let out = build_seeded(&b, &store, &[]);
    let fresh = fresh_units(&out);
    for pkg in ["shlex", "flavor", "tinyver"] {
        assert!(
            fresh.contains(&pkg.to_string()),
            "{pkg} not Fresh:\n{}",
            err_text(&out)
        );
    }
    assert_eq!(
        compiled_units(&out),
        vec!["util", "seedapp"],
        "{}",
        err_text(&out)
    );
    assert_eq!(wrapper_calls(&store) - calls, 2);
    assert_eq!(run_bin(&b, "debug"), expected);
    let again = build_seeded(&b, &store, &[]);
    assert!(compiled_units(&again).is_empty(), "{}", err_text(&again));
}

#[test]
fn a_mounted_seed_from_another_environment_is_withdrawn_at_the_first_build() {
    need_fuse();
    let tmp = tempfile::tempdir().unwrap();
    let store = tmp.path().join("store");
    let a = repo_at(&tmp.path().join("repo"));
    let mut c = cargo_seeded(&a, &store, &["build"]);
    c.env("FIXTURE_SEED_FLAVOR", "mint");
    run_ok(c);
    wait_for_harvest(&store, REGISTRY_UNITS);

    let b = tmp.path().join("agent-2");
    kache_cmd(
        &store,
        &a,
        &["worktree", "add", b.to_str().unwrap(), "task-2"],
    );
    let _guard = Unmount(store.clone(), b.clone());
    // Seeded at mount time, before anyone knew the build's environment…
    assert_eq!(counter_at(&stats(&store), "seed.units"), REGISTRY_UNITS);
    // …which turns out to differ: flavor's run is withdrawn before cargo looks.
    let mut c = cargo_seeded(&b, &store, &["build"]);
    c.env("FIXTURE_SEED_FLAVOR", "lemon");
    let out = run_ok(c);
    assert!(
        compiled_units(&out).contains(&"flavor".to_string()),
        "{}",
        err_text(&out)
    );
    assert!(
        fresh_units(&out).contains(&"shlex".to_string()),
        "{}",
        err_text(&out)
    );
    assert!(run_bin(&b, "debug").contains("flavor: lemon"));
}

#[test]
fn a_metadata_call_before_the_first_build_leaves_the_environment_check_to_that_build() {
    need_fuse();
    let tmp = tempfile::tempdir().unwrap();
    let store = tmp.path().join("store");
    let a = repo_at(&tmp.path().join("repo"));
    let mut c = cargo_seeded(&a, &store, &["build"]);
    c.env("FIXTURE_SEED_FLAVOR", "mint");
    run_ok(c);
    wait_for_harvest(&store, REGISTRY_UNITS);

    let b = tmp.path().join("agent-3");
    kache_cmd(
        &store,
        &a,
        &["worktree", "add", b.to_str().unwrap(), "task-3"],
    );
    let _guard = Unmount(store.clone(), b.clone());
    // An editor asks for metadata first, in the donor's environment: it probes rustc and
    // would leave cargo's rustc cache in the (mounted, existing) target dir…
    let mut m = cargo(&b, &store, &["metadata", "--format-version", "1"]);
    m.env("KACHE_SEED", "1").env("FIXTURE_SEED_FLAVOR", "mint");
    run_ok(m);
    // …yet the build, right after and in another environment, is the one the check
    // answers to.
    let mut c = cargo_seeded(&b, &store, &["build"]);
    c.env("FIXTURE_SEED_FLAVOR", "lemon");
    let out = run_ok(c);
    assert!(
        compiled_units(&out).contains(&"flavor".to_string()),
        "{}",
        err_text(&out)
    );
    assert!(run_bin(&b, "debug").contains("flavor: lemon"));
    // Settled: cargo caches its rustc facts again, and the next build is a no-op.
    let again = build_seeded(&b, &store, &[]);
    assert!(compiled_units(&again).is_empty(), "{}", err_text(&again));
    assert!(b.join("target/.rustc_info.json").is_file());
}
