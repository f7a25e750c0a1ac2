//! The daemon: start/status/stop, single instance per store, recovery from
//! a killed daemon's stale socket, self-restart on upgrade, and builds that
//! never depend on it (stopped, killed mid-build, hung).
#![cfg(unix)] // the daemon listens on a Unix socket

mod common;
mod ops_support;

use std::time::{Duration, Instant};

use ops_support::*;

#[test]
fn daemon_starts_reports_status_and_stops() {
    let sb = Sandbox::new();
    assert_eq!(sb.status()["state"], "not-running");
    let out = sb.ok(&["daemon", "start"]);
    assert!(out.contains("daemon started"), "{out}");
    let s = sb.status();
    assert_eq!(s["state"], "running");
    assert_eq!(s["version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(s["daemon"]["binary"], sb.exe.display().to_string());
    assert!(sb.ok(&["daemon", "start"]).contains("already running"));
    let text_status = sb.ok(&["daemon", "status"]);
    assert!(text_status.contains("task eviction"), "{text_status}");

    assert!(sb.ok(&["daemon", "stop"]).contains("daemon stopped"));
    assert_eq!(sb.run(&["daemon", "status"]).status.code(), Some(3));
    assert!(!sb.socket().exists());
    assert!(daemons_of(&sb.kache_dir).is_empty());
}

#[test]
fn a_killed_daemons_stale_socket_is_cleaned_by_the_next_start() {
    let sb = Sandbox::new();
    sb.ok(&["daemon", "start"]);
    let pid = sb.daemon_pid().unwrap();
    kill9(pid);
    assert!(sb.socket().exists());
    assert_eq!(sb.status()["state"], "stale-socket");
    assert!(sb.ok(&["daemon", "start"]).contains("daemon started"));
    let new = sb.daemon_pid().unwrap();
    assert_ne!(new, pid);
}

#[test]
fn simultaneous_starts_leave_exactly_one_daemon() {
    let sb = Sandbox::new();
    let racers: Vec<std::process::Child> = (0..4)
        .map(|_| {
            sb.kache(&["daemon", "start"])
                .stdout(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    let mut pids = Vec::new();
    for c in racers {
        let out = c.wait_with_output().unwrap();
        assert!(out.status.success(), "{}", text(&out.stdout));
        let said = text(&out.stdout);
        let pid: String = said.chars().filter(|c| c.is_ascii_digit()).collect();
        pids.push(pid);
    }
    pids.dedup();
    assert_eq!(pids.len(), 1, "every start saw the same daemon: {pids:?}");
    // Losers of the lock race exit at once; only one serves the store.
    assert!(wait_until(Duration::from_secs(3), || daemons_of(
        &sb.kache_dir
    )
    .len()
        == 1));
    assert_eq!(daemons_of(&sb.kache_dir), vec![sb.daemon_pid().unwrap()]);
}

#[test]
fn daemon_restarts_itself_when_its_binary_is_replaced() {
    let mut sb = Sandbox::new();
    let bin = sb.dir.path().join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    let exe = bin.join("kache");
    std::fs::copy(kache_bin(), &exe).unwrap();
    sb.exe = exe.clone();
    sb.ok(&["daemon", "start"]);
    let before = sb.status();
    let pid = before["daemon"]["pid"].as_u64().unwrap();
    std::thread::sleep(Duration::from_millis(1100));
    // An upgrade: a new file renamed over the old one.
    let staged = bin.join("kache.new");
    std::fs::copy(kache_bin(), &staged).unwrap();
    std::fs::rename(&staged, &exe).unwrap();
    let restarted = wait_until(Duration::from_secs(10), || {
        let s = sb.status();
        s["state"] == "running" && s["daemon"]["started"] != before["daemon"]["started"]
    });
    assert!(restarted, "daemon did not restart after the upgrade");
    // Re-executed in place: the service manager keeps tracking one pid.
    assert_eq!(sb.status()["daemon"]["pid"].as_u64().unwrap(), pid);
    assert_eq!(daemons_of(&sb.kache_dir).len(), 1);
}

/// A fixture build through kache, as the sandbox user's store.
fn build(sb: &Sandbox, name: &str) -> (std::process::Child, std::path::PathBuf) {
    let wt = common::fixture_at(&sb.dir.path().join(name));
    let child = common::cargo(&wt, &sb.kache_dir, &["build"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    (child, wt)
}

fn finish(child: std::process::Child, wt: &std::path::Path) {
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "build failed:\n{}", text(&out.stderr));
    assert!(!common::run_app(wt, "debug").is_empty());
}

#[test]
fn builds_succeed_with_the_daemon_stopped_killed_or_hung() {
    let sb = Sandbox::new();

    // Stopped.
    let (c, wt) = build(&sb, "stopped");
    finish(c, &wt);

    // Killed mid-build.
    sb.ok(&["daemon", "start"]);
    let pid = sb.daemon_pid().unwrap();
    let (c, wt) = build(&sb, "killed");
    std::thread::sleep(Duration::from_millis(300));
    kill9(pid);
    finish(c, &wt);
    assert_eq!(sb.status()["state"], "stale-socket");

    // Hung: accepts connections, never answers.
    let _hung = fake_daemon(&sb.socket(), None);
    let t = Instant::now();
    let s = sb.status();
    assert_eq!(s["state"], "unresponsive");
    assert!(t.elapsed() < Duration::from_secs(5));
    let (c, wt) = build(&sb, "hung");
    finish(c, &wt);
    let st = common::stats(&sb.kache_dir);
    assert!(common::counter(&st, "rust", "hits") > 0, "{st}");
}
