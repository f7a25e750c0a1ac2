//! Many kache processes on one store at once, with no daemon: 16 workers
//! each run a long series of `kache debug put` / `kache debug get` processes
//! on a small set of overlapping keys. Every key's outputs are a
//! deterministic function of the key, so each reader checks that a hit
//! restored exactly the bytes that key was stored with (never a partial
//! entry or blob), and that the only miss it ever sees is "no entry".
//! Afterwards the shared counters must equal the operations performed.
#![cfg(unix)] // link counts

mod store_support;

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use store_support::*;

const WORKERS: u64 = 16;
const ITERATIONS: u64 = 60;
const KEYS: usize = 6;

/// The outputs of key `k`: (file name, length). Sizes differ per key, one
/// key has an empty output (legitimately empty `.rmeta`, lesson 20) and the
/// larger files make a concurrent reader likely to overlap a writer.
fn outputs_of(k: usize) -> Vec<(String, usize)> {
    vec![
        (format!("lib{k}.rlib"), 150_000 + k * 97_003),
        (
            format!("lib{k}.rmeta"),
            if k == 0 { 0 } else { 3_000 + k * 1_001 },
        ),
        (format!("dep{k}.d"), 200 + k),
    ]
}

fn key_name(k: usize) -> String {
    key_of(&format!("concurrency-key-{k}"))
}

fn expected(k: usize, name: &str, len: usize) -> Vec<u8> {
    content_of(&format!("{}/{name}", key_name(k)), len)
}

#[derive(Default)]
struct Tally {
    puts: AtomicU64,
    hits: AtomicU64,
    misses: AtomicU64,
    hardlink_hits: AtomicU64,
}

fn worker(sb: &Sandbox, sources: &[Vec<PathBuf>], id: u64, seed: u64, tally: &Tally) {
    let mut rng = Rng::new(seed ^ (id + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15));
    let out_dir = sb.path().join(format!("worker{id}"));
    for _ in 0..ITERATIONS {
        let k = rng.below(KEYS as u64) as usize;
        let key = key_name(k);
        if rng.below(5) < 2 {
            let out = sb
                .kache()
                .args(["debug", "put", &key, "--count", "rust.misses"])
                .args(&sources[k])
                .output()
                .expect("spawn kache");
            assert_clean(&out);
            assert!(
                out.status.success(),
                "worker {id}: put {k} failed: {}",
                text(&out.stderr)
            );
            tally.puts.fetch_add(1, Ordering::Relaxed);
        } else {
            let hardlink = rng.below(2) == 0;
            let _ = fs::remove_dir_all(&out_dir);
            let mut cmd = sb.kache();
            cmd.args(["debug", "get", &key, "--count", "rust.hits"])
                .arg(&out_dir);
            if hardlink {
                cmd.arg("--hardlink");
            }
            let out = cmd.output().expect("spawn kache");
            assert_clean(&out);
            match out.status.code() {
                Some(0) => {
                    check_restored(&out_dir, k, id);
                    tally.hits.fetch_add(1, Ordering::Relaxed);
                    if hardlink {
                        tally.hardlink_hits.fetch_add(1, Ordering::Relaxed);
                    }
                }
                Some(3) => {
                    // Nothing here is ever damaged, so the only legitimate
                    // miss is a key nobody has stored yet. A size mismatch or
                    // a corrupt entry would mean a reader saw a partial file.
                    let reason = miss_reason(&out);
                    assert_eq!(
                        reason, "no entry",
                        "worker {id}: key {k} missed for a bad reason"
                    );
                    tally.misses.fetch_add(1, Ordering::Relaxed);
                }
                _ => panic!(
                    "worker {id}: get {k} failed ({}): {}",
                    out.status,
                    text(&out.stderr)
                ),
            }
        }
    }
}

fn check_restored(dir: &Path, k: usize, id: u64) {
    for (name, len) in outputs_of(k) {
        let got = fs::read(dir.join(&name))
            .unwrap_or_else(|e| panic!("worker {id}: hit for key {k} but {name} unreadable: {e}"));
        assert_eq!(
            got.len(),
            len,
            "worker {id}: key {k} {name} restored with the wrong size"
        );
        assert!(
            got == expected(k, &name, len),
            "worker {id}: key {k} {name} restored wrong bytes"
        );
    }
}

#[test]
fn sixteen_processes_storing_and_reading_overlapping_keys_never_see_partial_entries() {
    let seed = seed("concurrency");
    let sb = Arc::new(Sandbox::new());
    let sources: Arc<Vec<Vec<PathBuf>>> = Arc::new(
        (0..KEYS)
            .map(|k| {
                let dir = sb.path().join(format!("src{k}"));
                outputs_of(k)
                    .into_iter()
                    .map(|(name, len)| {
                        let p = dir.join(&name);
                        fs::create_dir_all(&dir).unwrap();
                        fs::write(&p, expected(k, &name, len)).unwrap();
                        p
                    })
                    .collect()
            })
            .collect(),
    );
    let tally = Arc::new(Tally::default());

    let handles: Vec<_> = (0..WORKERS)
        .map(|id| {
            let (sb, sources, tally) = (sb.clone(), sources.clone(), tally.clone());
            std::thread::spawn(move || worker(&sb, &sources, id, seed, &tally))
        })
        .collect();
    let mut failures = Vec::new();
    for h in handles {
        if let Err(e) = h.join() {
            failures.push(
                e.downcast_ref::<String>()
                    .cloned()
                    .unwrap_or_else(|| format!("{e:?}")),
            );
        }
    }
    assert!(
        failures.is_empty(),
        "workers failed:\n{}",
        failures.join("\n")
    );

    let puts = tally.puts.load(Ordering::Relaxed);
    let hits = tally.hits.load(Ordering::Relaxed);
    let misses = tally.misses.load(Ordering::Relaxed);
    eprintln!(
        "{puts} puts, {hits} hits ({} with --hardlink allowed), {misses} misses",
        tally.hardlink_hits.load(Ordering::Relaxed)
    );
    assert_eq!(puts + hits + misses, WORKERS * ITERATIONS);
    assert!(
        puts > 0 && hits > 0,
        "the mix must exercise both puts and hits"
    );

    // Every increment of every process is there, none lost or doubled.
    let stats = sb.stats();
    assert_eq!(
        stats["rust"]["misses"], puts,
        "rust.misses counts every put: {stats}"
    );
    assert_eq!(
        stats["rust"]["hits"], hits,
        "rust.hits counts every hit: {stats}"
    );
    assert_eq!(stats["cc"]["hits"], 0);

    // Re-publishing the same key replaces its entry and dedups its blobs.
    let stored: std::collections::HashSet<usize> = (0..KEYS)
        .filter(|&k| sb.entry_path(&key_name(k)).is_file())
        .collect();
    assert_eq!(stats["store"]["entries"], stored.len() as u64);
    let distinct_blobs: std::collections::HashSet<String> = stored
        .iter()
        .flat_map(|&k| {
            outputs_of(k)
                .into_iter()
                .map(move |(n, l)| hash_hex(&expected(k, &n, l)))
        })
        .collect();
    assert_eq!(
        stats["store"]["blobs"],
        distinct_blobs.len() as u64,
        "one blob per distinct content"
    );

    // At most one hardlink consumer per blob, even with racing consumers:
    // the worker directories still hold their last restores.
    for h in &distinct_blobs {
        let nlink = fs::metadata(sb.blob_path(h)).unwrap().nlink();
        assert!(
            nlink <= 2,
            "blob {h} has {nlink} links: more than one hardlink consumer"
        );
    }
    // Nothing half-written was left behind, and a full re-hash agrees.
    let leftovers: Vec<_> = fs::read_dir(sb.store.join("tmp"))
        .unwrap()
        .flatten()
        .map(|e| e.file_name())
        .collect();
    assert!(
        leftovers.is_empty(),
        "temporary files left behind: {leftovers:?}"
    );
    let verify = sb.run(&["verify"]);
    assert!(
        verify.status.success(),
        "verify after the storm: {}",
        text(&verify.stdout)
    );
}
