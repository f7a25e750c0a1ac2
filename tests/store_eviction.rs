//! Least-recently-used eviction under a size limit.
//!
//! An entry's age is its last use (a hit refreshes it), so after a `kache gc`
//! the store fits the limit, the entries used most recently survive, and the
//! untouched old ones are gone together with their blobs. Eviction running
//! while other processes restore and store never yields wrong bytes: a
//! restore in progress keeps its blobs, and a vanished blob is a clean miss.

mod store_support;

use std::fs::{self, File};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use store_support::*;

const BLOB_LEN: usize = 100 * 1024;

fn key_name(i: usize) -> String {
    key_of(&format!("eviction-{i}"))
}

fn content(i: usize) -> Vec<u8> {
    content_of(&key_name(i), BLOB_LEN)
}

/// Sets a file's mtime (its LRU age) to `age` ago.
fn age(path: &Path, age: Duration) {
    File::open(path)
        .unwrap()
        .set_modified(SystemTime::now() - age)
        .unwrap();
}

/// Stores entries 0..n, each one 100 KiB blob, and ages them so entry 0 is
/// the oldest (entries and blobs well past gc's grace period for fresh blobs).
fn populate(sb: &Sandbox, n: usize) {
    for i in 0..n {
        let f = write_file(
            &sb.path().join("src"),
            &format!("out{i}.rlib"),
            &key_name(i),
            BLOB_LEN,
        );
        sb.put(&key_name(i), &[f]);
    }
    for i in 0..n {
        let old = Duration::from_secs(3600 - i as u64 * 60);
        age(&sb.entry_path(&key_name(i)), old);
        age(&sb.blob_path(&hash_hex(&content(i))), old);
    }
}

fn survives(sb: &Sandbox, i: usize) -> bool {
    let dir = sb.path().join(format!("check{i}"));
    let out = sb.get(&key_name(i), &dir, false);
    if out.status.success() {
        assert!(fs::read(dir.join(format!("out{i}.rlib"))).unwrap() == content(i));
        true
    } else {
        assert_eq!(
            miss_reason(&out),
            "no entry",
            "an evicted entry is a clean miss"
        );
        false
    }
}

#[test]
fn gc_keeps_the_store_under_kache_max_size_and_the_recently_used_entries() {
    let sb = Sandbox::new();
    populate(&sb, 20);
    let full = sb.stats()["store"]["bytes"].as_u64().unwrap();
    assert!(full > 20 * BLOB_LEN as u64);

    // Use the five oldest entries: that makes them the most recently used.
    for i in 0..5 {
        assert!(survives(&sb, i));
    }

    // The limit comes from the environment, as a user would set it.
    let limit: u64 = 1024 * 1024;
    let out = sb
        .kache()
        .arg("gc")
        .env("KACHE_MAX_SIZE", "1MiB")
        .output()
        .unwrap();
    assert_clean(&out);
    assert!(out.status.success(), "gc: {}", text(&out.stderr));
    eprintln!("{}", text(&out.stdout).trim());

    let stats = sb.stats();
    let bytes = stats["store"]["bytes"].as_u64().unwrap();
    assert!(
        bytes <= limit,
        "store is {bytes} bytes after gc, over its {limit}-byte limit"
    );
    // Unreferenced blobs go with their entries.
    assert_eq!(
        stats["store"]["blobs"], stats["store"]["entries"],
        "{stats}"
    );
    let kept = stats["store"]["entries"].as_u64().unwrap() as usize;
    // Nearly full: eviction stops at the first entry that does not fit.
    assert!(
        bytes + BLOB_LEN as u64 + 1024 > limit,
        "gc evicted more than needed: {bytes} bytes left"
    );

    // Recency order: the five just used, then the newest untouched ones.
    let survivors: Vec<usize> = (0..20).filter(|&i| survives(&sb, i)).collect();
    let mut expected: Vec<usize> = (0..5).chain((5..20).rev().take(kept - 5)).collect();
    expected.sort();
    assert_eq!(
        survivors, expected,
        "gc must evict the least recently used entries first"
    );
}

#[test]
fn gc_max_size_shrinks_further_and_a_second_run_changes_nothing() {
    let sb = Sandbox::new();
    populate(&sb, 8);
    let out = sb.run(&["gc", "--max-size", "350KiB"]);
    assert!(out.status.success(), "gc: {}", text(&out.stderr));
    let after = sb.stats();
    assert!(after["store"]["bytes"].as_u64().unwrap() <= 350 * 1024);
    // 3 entries fit in 350 KiB: the three newest.
    assert_eq!(
        (0..8).filter(|&i| survives(&sb, i)).collect::<Vec<_>>(),
        vec![5, 6, 7]
    );

    let again = sb.run(&["gc", "--max-size", "350KiB"]);
    assert!(again.status.success());
    assert!(
        text(&again.stdout).contains("0 entries and 0 blobs removed"),
        "{}",
        text(&again.stdout)
    );

    let bad = sb.run(&["gc", "--max-size", "lots"]);
    assert_clean(&bad);
    assert!(!bad.status.success());
    assert!(
        text(&bad.stderr).contains("not a size"),
        "{}",
        text(&bad.stderr)
    );
}

/// Regression: gc protects blobs written in the last moments (a compile may
/// be about to publish the entry using them). It once charged those fresh
/// blobs against the limit before any entry, so a gc right after a burst of
/// stores evicted every entry, the newest included, and freed nothing.
#[test]
fn gc_right_after_a_burst_of_stores_keeps_the_newest_entries() {
    let sb = Sandbox::new();
    for i in 0..8 {
        let f = write_file(
            &sb.path().join("src"),
            &format!("out{i}.rlib"),
            &key_name(i),
            BLOB_LEN,
        );
        sb.put(&key_name(i), &[f]);
    }
    let out = sb.run(&["gc", "--max-size", "500KiB"]);
    assert!(out.status.success(), "gc: {}", text(&out.stderr));
    // Four entries fit in 500 KiB: the four stored last.
    assert_eq!(
        (0..8).filter(|&i| survives(&sb, i)).collect::<Vec<_>>(),
        vec![4, 5, 6, 7]
    );

    // The evicted entries' blobs were still fresh, so they outlive this gc;
    // once past the grace period the next gc removes them and the store fits.
    std::thread::sleep(Duration::from_millis(2100));
    assert!(sb.run(&["gc", "--max-size", "500KiB"]).status.success());
    let stats = sb.stats();
    assert!(
        stats["store"]["bytes"].as_u64().unwrap() <= 500 * 1024,
        "{stats}"
    );
    assert_eq!(stats["store"]["blobs"], 4);
    assert_eq!(
        (0..8).filter(|&i| survives(&sb, i)).collect::<Vec<_>>(),
        vec![4, 5, 6, 7]
    );
}

/// Readers and writers keep going while another process evicts with a
/// limit that fits only a few entries. A hit must always restore the right
/// bytes; a miss may only be "no entry" or a vanished blob, never a short or
/// damaged one, and nothing fails with an error.
#[test]
fn eviction_during_restores_never_yields_wrong_bytes() {
    let sb = Arc::new(Sandbox::new());
    const N: usize = 12;
    populate(&sb, N);
    let stop = Arc::new(AtomicBool::new(false));
    let (hits, misses, gcs) = (
        Arc::new(AtomicU64::new(0)),
        Arc::new(AtomicU64::new(0)),
        Arc::new(AtomicU64::new(0)),
    );

    let evictor = {
        let (sb, stop, gcs) = (sb.clone(), stop.clone(), gcs.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                let out = sb.run(&["gc", "--max-size", "700KiB"]);
                assert_clean(&out);
                assert!(out.status.success(), "gc: {}", text(&out.stderr));
                gcs.fetch_add(1, Ordering::Relaxed);
            }
        })
    };
    let workers: Vec<_> = (0..8u64)
        .map(|id| {
            let (sb, hits, misses) = (sb.clone(), hits.clone(), misses.clone());
            std::thread::spawn(move || {
                let mut rng = Rng::new(id * 7919 + 17);
                let dir = sb.path().join(format!("reader{id}"));
                for _ in 0..60 {
                    let i = rng.below(N as u64) as usize;
                    if id < 2 {
                        // Two writers re-store entries as compiles would.
                        let f = write_file(
                            &sb.path().join(format!("resrc{id}")),
                            &format!("out{i}.rlib"),
                            &key_name(i),
                            BLOB_LEN,
                        );
                        sb.put(&key_name(i), &[f]);
                        continue;
                    }
                    let _ = fs::remove_dir_all(&dir);
                    let out = sb.get(&key_name(i), &dir, rng.below(2) == 0);
                    match out.status.code() {
                        Some(0) => {
                            let got = fs::read(dir.join(format!("out{i}.rlib"))).unwrap();
                            assert!(got == content(i), "reader {id}: wrong bytes for entry {i}");
                            hits.fetch_add(1, Ordering::Relaxed);
                        }
                        Some(3) => {
                            let r = miss_reason(&out);
                            assert!(
                                r == "no entry"
                                    || (r.starts_with("blob ") && r.ends_with(" missing")),
                                "reader {id}: entry {i} missed for a bad reason: {r}"
                            );
                            misses.fetch_add(1, Ordering::Relaxed);
                        }
                        _ => panic!(
                            "reader {id}: get failed ({}): {}",
                            out.status,
                            text(&out.stderr)
                        ),
                    }
                }
            })
        })
        .collect();
    let mut failures = Vec::new();
    for w in workers {
        if let Err(e) = w.join() {
            failures.push(
                e.downcast_ref::<String>()
                    .cloned()
                    .unwrap_or_else(|| format!("{e:?}")),
            );
        }
    }
    stop.store(true, Ordering::Relaxed);
    if let Err(e) = evictor.join() {
        failures.push(
            e.downcast_ref::<String>()
                .cloned()
                .unwrap_or_else(|| format!("{e:?}")),
        );
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    eprintln!(
        "{} hits, {} misses during {} gc runs",
        hits.load(Ordering::Relaxed),
        misses.load(Ordering::Relaxed),
        gcs.load(Ordering::Relaxed)
    );
    assert!(
        gcs.load(Ordering::Relaxed) > 0 && misses.load(Ordering::Relaxed) > 0,
        "gc never evicted anything"
    );

    // Once fresh blobs have aged past gc's grace period, the store fits.
    std::thread::sleep(Duration::from_millis(2100));
    let out = sb.run(&["gc", "--max-size", "700KiB"]);
    assert!(out.status.success());
    assert!(sb.stats()["store"]["bytes"].as_u64().unwrap() <= 700 * 1024);
    let verify = sb.run(&["verify"]);
    assert!(verify.status.success(), "{}", text(&verify.stdout));
}
