//! The remote cache against a real S3-compatible server (`s3s-fs` on a
//! loopback port): sharing between two machines (two stores, two worktree
//! paths), and the faults a remote brings: a server that dies mid-build, a
//! server that answers slowly, objects tampered with on the server, a drain
//! killed with a full spool, and read-only builders.

mod common;
mod remote_support;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::*;
use remote_support::*;

#[test]
fn s3_machine_b_restores_every_unit_from_machine_a_byte_identical() {
    let tmp = tempfile::tempdir().unwrap();
    let Some(server) = S3Server::start(&tmp.path().join("s3")) else {
        return;
    };
    let remote = Remote::s3(&server);
    let (store_a, store_b) = (tmp.path().join("store-a"), tmp.path().join("store-b"));
    let a = fixture_at(&tmp.path().join("machine-a/work/proj"));
    let b = fixture_at(&tmp.path().join("machine-b/checkout"));

    // Machine A: the wrapper queues, a detached drainer uploads without the
    // build waiting; `kache remote drain` waits for it and finishes the rest.
    run_ok(cargo_remote(
        &a,
        &store_a,
        &remote,
        &[("KACHE_REMOTE_BACKGROUND_DRAIN", "true")],
    ));
    let sa = stats(&store_a);
    let units = counter(&sa, "rust", "misses");
    assert!(units >= 10, "{sa}");
    kache_ok(&store_a, &remote, &["remote", "drain"]);
    let status = remote_status(&store_a, &remote);
    assert_eq!(status["spool_queued"], 0, "{status}");
    assert!(status["reachable"].as_bool().unwrap(), "{status}");
    assert!(status["objects"]["manifests"]["objects"].as_u64().unwrap() >= units);

    // Machine B: empty store, other path; every cacheable unit comes from S3.
    run_ok(cargo_remote(&b, &store_b, &remote, &[]));
    let sb = stats(&store_b);
    assert_eq!(
        counter(&sb, "rust", "misses"),
        0,
        "B compiled something: {sb}"
    );
    assert_eq!(counter(&sb, "rust", "hits"), units, "{sb}");
    assert_eq!(counter(&sb, "rust", "remote_hits"), units, "{sb}");
    assert_eq!(counter(&sb, "cc", "misses"), 0, "{sb}");
    assert!(remote_counter(&sb, "bytes_down") > 0);
    assert_eq!(remote_counter(&sb, "errors"), 0, "{sb}");
    assert_same_outputs(&a, &b);
    assert_eq!(run_app(&a, "debug"), run_app(&b, "debug"));
}

#[test]
fn server_stopped_mid_build_the_build_still_succeeds() {
    let tmp = tempfile::tempdir().unwrap();
    let Some(mut server) = S3Server::start(&tmp.path().join("s3")) else {
        return;
    };
    let (store_a, store_b) = (tmp.path().join("store-a"), tmp.path().join("store-b"));
    let a = fixture_at(&tmp.path().join("a"));
    let b = fixture_at(&tmp.path().join("b"));
    machine_a_builds_and_uploads(&a, &store_a, &Remote::s3(&server));

    // B reads through a proxy that slows every answer, so the build is
    // still running when the server goes away after B's first remote hit.
    let proxy = Proxy::start(server.port, Duration::from_millis(150));
    let mut build = cargo_remote(&b, &store_b, &Remote::via(proxy.port), &[]);
    let child = build
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(120);
    while remote_counter(&stats(&store_b), "hits") == 0 {
        assert!(Instant::now() < deadline, "no remote hit in B");
        std::thread::sleep(Duration::from_millis(20));
    }
    server.stop();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "build failed after the server died:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let s = stats(&store_b);
    assert!(remote_counter(&s, "hits") >= 1, "{s}");
    assert!(
        remote_counter(&s, "errors") >= 1,
        "the dead server was never noticed: {s}"
    );
    assert!(counter(&s, "rust", "misses") >= 1, "{s}");
    assert_eq!(run_app(&a, "debug"), run_app(&b, "debug"));
    assert_same_outputs(&a, &b);
}

#[test]
fn slow_server_lookup_returns_within_the_budget_and_the_build_goes_on() {
    let tmp = tempfile::tempdir().unwrap();
    let Some(server) = S3Server::start(&tmp.path().join("s3")) else {
        return;
    };
    let store = tmp.path().join("store");
    let proxy = Proxy::start(server.port, Duration::from_secs(5));
    let slow = Remote::via(proxy.port);
    let key = "ab".repeat(32);
    let t = Instant::now();
    let out = kache(&store, &slow, &["remote", "lookup", &key])
        .env("KACHE_REMOTE_TIMEOUT_MS", "400")
        .output()
        .unwrap();
    let took = t.elapsed();
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["outcome"], "error", "{v}");
    assert_eq!(v["reason"], "timeout", "{v}");
    assert!(
        took < Duration::from_millis(1400),
        "a 400 ms budget took {took:?}"
    );

    // A whole build against the slow server: the breaker opens after three
    // time-outs and the rest of the build does not ask any more.
    let a = fixture_at(&tmp.path().join("a"));
    let t = Instant::now();
    run_ok(cargo_remote(
        &a,
        &store,
        &slow,
        &[("KACHE_REMOTE_TIMEOUT_MS", "400")],
    ));
    let took = t.elapsed();
    let s = stats(&store);
    let errors = remote_counter(&s, "errors");
    assert!((1..=4).contains(&errors), "{s}");
    assert!(
        remote_counter(&s, "miss_reasons.breaker-open") >= 1,
        "the breaker never opened: {s}"
    );
    eprintln!("build against a 5 s-per-answer server took {took:?}, {errors} time-outs");
}

/// Flips one byte in the middle of a file the server stores.
fn flip_byte(path: &Path) {
    let mut bytes = std::fs::read(path).unwrap();
    let i = bytes.len() / 2;
    bytes[i] ^= 0x55;
    std::fs::write(path, bytes).unwrap();
}

fn files_under(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            if e.file_type().unwrap().is_dir() {
                stack.push(e.path());
            } else {
                out.push(e.path());
            }
        }
    }
    out.sort();
    out
}

#[test]
fn tampered_blob_and_entry_on_the_server_are_misses_never_served() {
    let tmp = tempfile::tempdir().unwrap();
    let Some(server) = S3Server::start(&tmp.path().join("s3")) else {
        return;
    };
    let remote = Remote::s3(&server);
    let (store_a, store_b) = (tmp.path().join("store-a"), tmp.path().join("store-b"));
    let a = fixture_at(&tmp.path().join("a"));
    let b = fixture_at(&tmp.path().join("b"));
    let units = machine_a_builds_and_uploads(&a, &store_a, &remote);

    // Entries on the server, decoded to find each one's largest blob.
    let entries = files_under(&server.objects_dir().join("v1/entries"));
    let decoded: Vec<(std::path::PathBuf, kache::store::Entry)> = entries
        .iter()
        .filter_map(|p| {
            let e = kache::store::Entry::decode(&std::fs::read(p).ok()?).ok()?;
            // Rust units only (C objects are counted apart).
            e.meta.get("crate")?;
            Some((p.clone(), e))
        })
        .collect();
    assert!(decoded.len() >= units as usize);
    // Tamper with one entry's bytes, and with another entry's largest blob.
    let (entry_victim, _) = &decoded[0];
    flip_byte(entry_victim);
    let (_, other) = &decoded[1];
    let blob = other.outputs.iter().max_by_key(|o| o.size).unwrap();
    let blob_file = server
        .objects_dir()
        .join("v1/blobs")
        .join(&blob.blob[..2])
        .join(&blob.blob);
    assert!(blob_file.is_file(), "{}", blob_file.display());
    flip_byte(&blob_file);

    run_ok(cargo_remote(&b, &store_b, &remote, &[]));
    let s = stats(&store_b);
    assert_eq!(
        remote_counter(&s, "miss_reasons.corrupt-entry"),
        1,
        "tampered entry not refused: {s}"
    );
    assert_eq!(
        remote_counter(&s, "miss_reasons.blob-hash-mismatch"),
        1,
        "tampered blob not refused: {s}"
    );
    // Those two units compiled locally, everything else came from S3.
    assert_eq!(counter(&s, "rust", "misses"), 2, "{s}");
    assert_eq!(counter(&s, "rust", "remote_hits"), units - 2, "{s}");
    assert_same_outputs(&a, &b);
    assert_eq!(run_app(&a, "debug"), run_app(&b, "debug"));
    // Nothing in B's store carries the tampered bytes.
    let v = Command::new(kache_bin())
        .arg("verify")
        .env("KACHE_DIR", &store_b)
        .output()
        .unwrap();
    assert!(v.status.success(), "{}", String::from_utf8_lossy(&v.stdout));
}

#[test]
fn a_spool_left_by_a_killed_drain_is_uploaded_by_the_next_drain() {
    let tmp = tempfile::tempdir().unwrap();
    let Some(server) = S3Server::start(&tmp.path().join("s3")) else {
        return;
    };
    let remote = Remote::s3(&server);
    let (store_a, store_b) = (tmp.path().join("store-a"), tmp.path().join("store-b"));
    let a = fixture_at(&tmp.path().join("a"));
    let b = fixture_at(&tmp.path().join("b"));
    run_ok(cargo_remote(&a, &store_a, &remote, &[]));
    let units = counter(&stats(&store_a), "rust", "misses");
    let queued = remote_status(&store_a, &remote)["spool_queued"]
        .as_u64()
        .unwrap();
    assert!(queued >= units, "every miss is queued: {queued} < {units}");

    // A drain through a slow link, killed part-way.
    let proxy = Proxy::start(server.port, Duration::from_millis(100));
    let mut drain = kache(&store_a, &Remote::via(proxy.port), &["remote", "drain"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while proxy.count("PUT ") < 3 {
        assert!(Instant::now() < deadline, "the drain never uploaded");
        std::thread::sleep(Duration::from_millis(10));
    }
    drain.kill().unwrap();
    drain.wait().unwrap();
    let left = remote_status(&store_a, &remote)["spool_queued"]
        .as_u64()
        .unwrap();
    assert!(left > 0 && left < queued + 1, "killed drain left {left}");

    let out = kache_ok(&store_a, &remote, &["remote", "drain"]);
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("0 still queued"),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    run_ok(cargo_remote(&b, &store_b, &remote, &[]));
    let s = stats(&store_b);
    assert_eq!(counter(&s, "rust", "misses"), 0, "{s}");
    assert_eq!(counter(&s, "rust", "remote_hits"), units, "{s}");
    assert_same_outputs(&a, &b);
}

#[test]
fn read_only_mode_uploads_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let Some(server) = S3Server::start(&tmp.path().join("s3")) else {
        return;
    };
    let remote = Remote::s3(&server);
    let store = tmp.path().join("store");
    let a = fixture_at(&tmp.path().join("a"));
    let ro = [
        ("KACHE_REMOTE_READ_ONLY", "true"),
        ("KACHE_REMOTE_BACKGROUND_DRAIN", "true"),
    ];
    run_ok(cargo_remote(&a, &store, &remote, &ro));
    let mut drain = kache(&store, &remote, &["remote", "drain"]);
    drain.env("KACHE_REMOTE_READ_ONLY", "true");
    run_ok(drain);
    let s = stats(&store);
    assert!(counter(&s, "rust", "misses") >= 10, "{s}");
    assert_eq!(remote_counter(&s, "uploads"), 0, "{s}");
    assert_eq!(remote_counter(&s, "queued"), 0, "{s}");
    let status = remote_status(&store, &remote);
    for kind in ["blobs", "entries", "manifests"] {
        assert_eq!(status["objects"][kind]["objects"], 0, "{status}");
    }
    assert!(
        files_under(&server.objects_dir()).is_empty(),
        "objects appeared on the server"
    );
}

#[test]
fn concurrent_lookups_of_one_key_send_one_request() {
    let tmp = tempfile::tempdir().unwrap();
    let Some(server) = S3Server::start(&tmp.path().join("s3")) else {
        return;
    };
    // A round where the server itself failed a request (an `unexpected` answer, seen once
    // on a loaded CI machine) rightly sends more requests: it is run again, with a new key,
    // at most twice more, and its logs are kept for the failure message.
    let mut failed_rounds = Vec::new();
    for round in 0..3 {
        let store = tmp.path().join(format!("store{round}"));
        // Slow enough that all four processes overlap.
        let proxy = Proxy::start(server.port, Duration::from_millis(300));
        let remote = Remote::via(proxy.port);
        let key = format!("{round:x}").repeat(64);
        let children: Vec<_> = (0..4)
            .map(|_| {
                kache(&store, &remote, &["remote", "lookup", &key])
                    .env("KACHE_LOG", "kache=debug")
                    .stdout(std::process::Stdio::piped())
                    .stderr(std::process::Stdio::piped())
                    .spawn()
                    .unwrap()
            })
            .collect();
        let mut reasons = Vec::new();
        let mut logs = String::new();
        for c in children {
            let out = c.wait_with_output().unwrap();
            let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
            reasons.push(v["reason"].as_str().unwrap_or("").to_string());
            logs += &String::from_utf8_lossy(&out.stderr);
        }
        reasons.sort();
        if reasons.iter().any(|r| r == "unexpected") {
            failed_rounds.push(format!("{reasons:?}\n{logs}"));
            continue;
        }
        assert_eq!(
            reasons,
            [
                "negative-cached",
                "negative-cached",
                "negative-cached",
                "not-found"
            ],
            "{logs}"
        );
        assert_eq!(proxy.count(&key), 1, "{:?}", proxy.requests.lock().unwrap());
        return;
    }
    panic!("the server failed a request in every round: {failed_rounds:#?}");
}
