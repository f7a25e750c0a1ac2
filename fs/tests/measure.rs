//! Numbers, not assertions: `cargo test -p kache-fs --test measure -- --ignored --nocapture`.
#![cfg(target_os = "linux")]

mod common;

use std::fs;
use std::io::Read;
use std::time::{Duration, Instant};

use common::Fixture;
use kache_fs::Placement;

fn read_all(path: &std::path::Path) -> (u64, Duration) {
    let start = Instant::now();
    let mut file = fs::File::open(path).unwrap();
    let mut buf = vec![0u8; 1 << 20];
    let mut total = 0u64;
    loop {
        let n = file.read(&mut buf).unwrap();
        if n == 0 {
            break;
        }
        total += n as u64;
    }
    (total, start.elapsed())
}

fn mbps(bytes: u64, d: Duration) -> f64 {
    bytes as f64 / d.as_secs_f64() / 1e6
}

#[test]
#[ignore = "measurement"]
fn measure_sequential_read_of_a_placed_200mb_file() {
    let f = Fixture::new();
    let content: Vec<u8> = (0..200_000_000u32)
        .map(|i| (i.wrapping_mul(2654435761) >> 24) as u8)
        .collect();
    let hash = f.place("big.rlib", &content);
    let blob = f.blobs.join(&hash[..2]).join(&hash);
    let _ = read_all(&blob); // warm
    let (n, native) = read_all(&blob);
    let _ = read_all(&f.path("big.rlib")); // warm
    let (m, mounted) = read_all(&f.path("big.rlib"));
    assert_eq!(n, m);
    println!(
        "200 MB sequential read: native {:.0} MB/s, mount {:.0} MB/s (served, then cached)",
        mbps(n, native),
        mbps(m, mounted)
    );
}

#[test]
#[ignore = "measurement"]
fn measure_open_and_stat_of_10000_files() {
    let f = Fixture::new();
    let native_dir = f.tmp.path().join("native");
    fs::create_dir_all(&native_dir).unwrap();
    fs::create_dir_all(f.path("many")).unwrap();
    for i in 0..10_000 {
        fs::write(native_dir.join(format!("f{i}")), b"x").unwrap();
        fs::write(f.path(&format!("many/f{i}")), b"x").unwrap();
    }
    let time = |dir: &std::path::Path| {
        let start = Instant::now();
        for i in 0..10_000 {
            let p = dir.join(format!("f{i}"));
            let file = fs::File::open(&p).unwrap();
            file.metadata().unwrap();
        }
        start.elapsed()
    };
    let native = time(&native_dir);
    let mounted = time(&f.path("many"));
    println!(
        "open+fstat of 10,000 files: native {:.1} ms ({:.1} µs each), mount {:.1} ms ({:.1} µs each)",
        native.as_secs_f64() * 1e3,
        native.as_secs_f64() * 1e2,
        mounted.as_secs_f64() * 1e3,
        mounted.as_secs_f64() * 1e2
    );
}

#[test]
#[ignore = "measurement"]
fn measure_placing_1000_files() {
    let f = Fixture::new();
    let placements: Vec<Placement> = (0..1000)
        .map(|i| {
            let content = format!("artifact {i}").repeat(100);
            Placement {
                path: format!("debug/deps/lib{i}.rlib").into(),
                hash: f.blob(content.as_bytes()),
                size: content.len() as u64,
                mode: 0o644,
            }
        })
        .collect();
    let start = Instant::now();
    kache_fs::place(&f.mnt, &placements).unwrap();
    let batch = start.elapsed();
    let start = Instant::now();
    for p in &placements {
        kache_fs::place(&f.mnt, std::slice::from_ref(p)).unwrap();
    }
    let single = start.elapsed();
    println!(
        "placing 1,000 files: one request {:.1} ms ({:.0} µs/file); 1,000 requests {:.1} ms ({:.0} µs/file)",
        batch.as_secs_f64() * 1e3,
        batch.as_secs_f64() * 1e3,
        single.as_secs_f64() * 1e3,
        single.as_secs_f64() * 1e3
    );
}
