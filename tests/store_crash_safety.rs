//! A store interrupted at any point leaves the old state or the new one.
//!
//! `kache debug put` of several multi-megabyte files is killed with SIGKILL
//! at random moments, many times over, on first publications and on
//! re-publications of the same keys. Afterwards every entry that a lookup
//! finds restores complete, correct bytes, the only miss is "no entry", a
//! full `kache verify` finds nothing corrupt, and the counters' lock is not
//! left held by a dead process.
#![cfg(unix)] // killed by signals

mod store_support;

use std::fs;
use std::os::unix::process::ExitStatusExt;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use store_support::*;

const KILLS: usize = 60;
const KEYS: usize = 8;
const FILE_LEN: usize = 3 << 20;

fn key_name(k: usize) -> String {
    key_of(&format!("crash-key-{k}"))
}

fn names() -> [&'static str; 3] {
    ["big.rlib", "big.rmeta", "small.d"]
}

fn len_of(name: &str) -> usize {
    if name == "small.d" {
        300
    } else {
        FILE_LEN
    }
}

fn expected(k: usize, name: &str) -> Vec<u8> {
    content_of(&format!("{}/{name}", key_name(k)), len_of(name))
}

fn put_cmd(sb: &Sandbox, k: usize, sources: &[Vec<PathBuf>]) -> std::process::Command {
    let mut c = sb.kache();
    c.args(["debug", "put", &key_name(k), "--count", "rust.misses"])
        .args(&sources[k]);
    c
}

#[test]
fn puts_killed_at_random_points_never_leave_a_served_partial_entry() {
    let mut rng = Rng::new(seed("crash"));
    let sb = Sandbox::new();
    let sources: Vec<Vec<PathBuf>> = (0..KEYS)
        .map(|k| {
            let dir = sb.path().join(format!("src{k}"));
            fs::create_dir_all(&dir).unwrap();
            names()
                .iter()
                .map(|n| {
                    let p = dir.join(n);
                    fs::write(&p, expected(k, n)).unwrap();
                    p
                })
                .collect()
        })
        .collect();

    // Calibrate: how long a whole put takes here (on a throwaway store, so
    // every key starts absent), so kill times spread over the whole of it.
    let calibration = Sandbox::new();
    let mut took = Vec::new();
    for k in 0..3 {
        let t = Instant::now();
        let out = put_cmd(&calibration, k, &sources).output().unwrap();
        assert!(
            out.status.success(),
            "calibration put: {}",
            text(&out.stderr)
        );
        took.push(t.elapsed());
    }
    took.sort();
    let whole = took[1];
    eprintln!("a put of {} MB takes {whole:?}", (2 * FILE_LEN) >> 20);

    let (mut killed, mut finished) = (0, 0);
    for i in 0..KILLS {
        // Mostly keys that may already be stored (re-publication), sometimes
        // the same key killed several times in a row.
        let k = if i < KEYS {
            i
        } else {
            rng.below(KEYS as u64) as usize
        };
        let delay = Duration::from_micros(rng.below(whole.as_micros() as u64 * 12 / 10 + 1));
        let mut child = put_cmd(&sb, k, &sources).spawn().expect("spawn kache");
        std::thread::sleep(delay);
        let _ = child.kill(); // SIGKILL
        let status = child.wait().unwrap();
        match status.signal() {
            Some(9) => killed += 1,
            None if status.success() => finished += 1,
            _ => panic!("put {k} ended with {status} before it was killed"),
        }
    }
    let temps = fs::read_dir(sb.store.join("tmp"))
        .map(|d| d.count())
        .unwrap_or(0);
    eprintln!("{killed} puts killed, {finished} finished before the kill, {temps} temporaries left by the dead");
    assert!(
        killed >= KILLS / 4,
        "too few kills landed inside a put ({killed}); the test proves little"
    );
    assert!(
        temps > 0,
        "no kill landed mid-write (no temporary left); the test proves little"
    );

    // Every entry that is found restores complete, correct bytes.
    let mut found = 0;
    for k in 0..KEYS {
        let dir = sb.path().join(format!("restore{k}"));
        let out = sb.get(&key_name(k), &dir, k % 2 == 0);
        if out.status.success() {
            found += 1;
            for n in names() {
                let got = fs::read(dir.join(n)).unwrap();
                assert_eq!(
                    got.len(),
                    len_of(n),
                    "key {k}: {n} restored with the wrong size"
                );
                assert!(got == expected(k, n), "key {k}: {n} restored wrong bytes");
            }
        } else {
            // A killed put publishes nothing: a half entry or a short blob
            // would show up here as another reason.
            assert_eq!(miss_reason(&out), "no entry", "key {k}");
        }
    }
    eprintln!("{found} of {KEYS} keys found after the kills");

    let verify = sb.run(&["verify"]);
    let report = text(&verify.stdout);
    assert!(
        verify.status.success(),
        "verify found damage after the kills: {report}{}",
        text(&verify.stderr)
    );
    assert!(
        report.contains("0 corrupt blobs, 0 corrupt entries"),
        "{report}"
    );

    // A killed process never leaves the counters' lock held (flock dies with
    // it) nor the counters unreadable: the next put completes and counts.
    let before = sb.stats()["rust"]["misses"].as_u64().unwrap();
    let mut next = put_cmd(&sb, 0, &sources).spawn().unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(s) = next.try_wait().unwrap() {
            break s;
        }
        assert!(
            Instant::now() < deadline,
            "a put after the kills hangs: a lock was left held"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(status.success());
    assert_eq!(sb.stats()["rust"]["misses"].as_u64().unwrap(), before + 1);
    let out = sb.get(&key_name(0), &sb.path().join("final"), false);
    assert_eq!(placed(&out).files, 3);
    assert!(fs::read(sb.path().join("final/big.rlib")).unwrap() == expected(0, "big.rlib"));
}
