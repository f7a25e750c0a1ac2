//! A CLI command whose reader has gone away (`kache stats | head -1`) exits
//! quietly: no panic, nothing on stderr. Before this was handled, the race
//! between kache's writes and `head` exiting made about one run in five
//! print "failed printing to stdout: Broken pipe"; here the reader is closed
//! before kache writes at all, so every run meets the closed pipe.

mod common;

use std::io::Read;
use std::process::{Command, Stdio};

#[test]
fn printing_commands_exit_quietly_when_stdout_is_closed() {
    let tmp = tempfile::tempdir().unwrap();
    let store = tmp.path().join("store");
    // Something to print: counters and an event.
    let payload = tmp.path().join("payload");
    std::fs::write(&payload, b"bytes").unwrap();
    let key = "ab".repeat(32);
    let out = Command::new(common::kache_bin())
        .args(["debug", "put", &key, payload.to_str().unwrap()])
        .env("KACHE_DIR", &store)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");

    let commands: [&[&str]; 8] = [
        &["stats"],
        &["stats", "--json"],
        &["report"],
        &["report", "--json"],
        &["config", "show"],
        &["mounts"],
        &["mounts", "--json"],
        &["completions", "bash"],
    ];
    for args in commands {
        for run in 0..20 {
            let mut child = Command::new(common::kache_bin())
                .args(args)
                .env("KACHE_DIR", &store)
                .env("HOME", tmp.path())
                .env("XDG_CONFIG_HOME", tmp.path().join("config"))
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap();
            // Close the reading end before kache has printed anything.
            drop(child.stdout.take());
            let mut err = String::new();
            child
                .stderr
                .take()
                .unwrap()
                .read_to_string(&mut err)
                .unwrap();
            let status = child.wait().unwrap();
            assert!(
                err.is_empty(),
                "kache {args:?} (run {run}) wrote to stderr on a closed stdout: {err}"
            );
            assert_eq!(
                status.code(),
                Some(0),
                "kache {args:?} (run {run}) failed on a closed stdout"
            );
        }
    }
}
