//! Helpers for the remote-cache tests: a real S3-compatible server
//! (`s3s-fs`, installed by `scripts/test`) on a loopback port, a TCP proxy
//! that delays responses or counts requests, and cargo/kache commands wired
//! to a remote.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use crate::common::*;

pub const ACCESS_KEY: &str = "kachetest";
pub const SECRET_KEY: &str = "kachetestsecret";
pub const BUCKET: &str = "kache";
pub const PREFIX: &str = "team/ci";

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The `s3s-fs` binary: on PATH or in cargo's bin directory. In CI its
/// absence is a failure naming the fix; elsewhere the test is skipped.
pub fn s3s_fs_binary() -> Option<PathBuf> {
    let mut candidates: Vec<PathBuf> = std::env::var_os("PATH")
        .map(|p| {
            std::env::split_paths(&p)
                .map(|d| d.join("s3s-fs"))
                .collect()
        })
        .unwrap_or_default();
    let cargo_home = std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cargo")));
    if let Some(h) = cargo_home {
        candidates.push(h.join("bin/s3s-fs"));
    }
    if let Some(p) = candidates.into_iter().find(|p| p.is_file()) {
        return Some(p);
    }
    // Never a silent skip: the S3 tests need a real server.
    panic!(
        "s3s-fs is not installed: the S3 tests need it. Run scripts/test (it runs \
         `cargo install s3s-fs --version 0.14.1 --features binary`) or install it by hand."
    );
}

/// A running `s3s-fs` over a private directory, killed on drop.
pub struct S3Server {
    child: Option<Child>,
    pub port: u16,
    pub root: PathBuf,
    bin: PathBuf,
}

impl S3Server {
    pub fn start(root: &Path) -> Option<S3Server> {
        let bin = s3s_fs_binary()?;
        std::fs::create_dir_all(root.join(BUCKET)).unwrap();
        let mut s = S3Server {
            child: None,
            port: free_port(),
            root: root.to_path_buf(),
            bin,
        };
        s.restart();
        Some(s)
    }

    /// (Re)starts the server on the same port and directory.
    pub fn restart(&mut self) {
        let child = Command::new(&self.bin)
            .args(["--host", "127.0.0.1", "--port", &self.port.to_string()])
            .args(["--access-key", ACCESS_KEY, "--secret-key", SECRET_KEY])
            .arg(&self.root)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start s3s-fs");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        while TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(Instant::now() < deadline, "s3s-fs did not start listening");
            thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The directory holding the objects under the test prefix.
    pub fn objects_dir(&self) -> PathBuf {
        self.root.join(BUCKET).join(PREFIX)
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Where a kache process finds its remote.
#[derive(Clone, Debug)]
pub enum Remote {
    S3 { endpoint: String },
    Dir(PathBuf),
}

impl Remote {
    pub fn s3(server: &S3Server) -> Remote {
        Remote::S3 {
            endpoint: server.endpoint(),
        }
    }

    pub fn via(port: u16) -> Remote {
        Remote::S3 {
            endpoint: format!("http://127.0.0.1:{port}"),
        }
    }

    pub fn apply(&self, c: &mut Command) {
        match self {
            Remote::S3 { endpoint } => {
                c.env("KACHE_REMOTE", format!("s3://{BUCKET}/{PREFIX}"))
                    .env("KACHE_S3_ENDPOINT", endpoint)
                    .env("KACHE_S3_REGION", "us-east-1")
                    .env("KACHE_S3_ACCESS_KEY_ID", ACCESS_KEY)
                    .env("KACHE_S3_SECRET_ACCESS_KEY", SECRET_KEY);
            }
            Remote::Dir(p) => {
                c.env("KACHE_REMOTE", format!("file://{}", p.display()));
            }
        }
        // Tests drain explicitly unless they say otherwise.
        c.env("KACHE_REMOTE_BACKGROUND_DRAIN", "false");
        // A lookup's 2 s budget is for interactive builds; on a loaded test
        // machine a 20 MB download can exceed it and turn an expected remote
        // hit into a miss. Tests of the budget itself set their own.
        c.env("KACHE_REMOTE_TIMEOUT_MS", "30000");
        // Remote tests compare what B built with A's outputs byte for byte; an
        // incremental rlib names its objects after its session, so two machines'
        // incremental compiles of one crate differ in bytes (not in meaning).
        // Incremental has its own tests (tests/rust_incremental.rs).
        c.env("CARGO_INCREMENTAL", "0");
    }
}

/// `cargo build` of worktree `dir` through kache with store `store` and `remote`.
pub fn cargo_remote(dir: &Path, store: &Path, remote: &Remote, extra: &[(&str, &str)]) -> Command {
    let mut c = cargo(dir, store, &["build"]);
    remote.apply(&mut c);
    for (k, v) in extra {
        c.env(k, v);
    }
    c
}

/// A `kache …` command on `store` with `remote`.
pub fn kache(store: &Path, remote: &Remote, args: &[&str]) -> Command {
    let mut c = Command::new(kache_bin());
    c.args(args).env("KACHE_DIR", store);
    remote.apply(&mut c);
    c
}

pub fn kache_ok(store: &Path, remote: &Remote, args: &[&str]) -> Output {
    run_ok(kache(store, remote, args))
}

pub fn remote_status(store: &Path, remote: &Remote) -> serde_json::Value {
    let out = kache_ok(store, remote, &["remote", "status", "--json"]);
    serde_json::from_slice(&out.stdout).unwrap()
}

pub fn remote_counter(v: &serde_json::Value, path: &str) -> u64 {
    let mut cur = &v["remote"];
    for p in path.split('.') {
        cur = &cur[p];
    }
    cur.as_u64().unwrap_or(0)
}

/// Every file of `target/debug/deps` except dep-info (which names the
/// worktree), by name → bytes.
pub fn deps_outputs(worktree: &Path) -> std::collections::BTreeMap<String, Vec<u8>> {
    let mut m = std::collections::BTreeMap::new();
    for e in std::fs::read_dir(worktree.join("target/debug/deps"))
        .unwrap()
        .flatten()
    {
        let name = e.file_name().to_string_lossy().into_owned();
        if name.ends_with(".d") || !e.file_type().unwrap().is_file() {
            continue;
        }
        m.insert(name, std::fs::read(e.path()).unwrap());
    }
    m
}

pub fn assert_same_outputs(a: &Path, b: &Path) {
    let (oa, ob) = (deps_outputs(a), deps_outputs(b));
    assert_eq!(
        oa.keys().collect::<Vec<_>>(),
        ob.keys().collect::<Vec<_>>(),
        "the two worktrees hold different outputs"
    );
    for (name, bytes) in &oa {
        assert!(ob[name] == *bytes, "{name} differs between the worktrees");
    }
}

/// A TCP proxy to `upstream` on a loopback port: delays every response chunk
/// by `delay`, counts request lines by method and path, and can cut every
/// connection. Stops (and closes its port) on drop.
pub struct Proxy {
    pub port: u16,
    stop: Arc<AtomicBool>,
    pub requests: Arc<std::sync::Mutex<Vec<String>>>,
    pub bytes: Arc<AtomicU64>,
}

impl Proxy {
    pub fn start(upstream: u16, delay: Duration) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let port = listener.local_addr().unwrap().port();
        let stop = Arc::new(AtomicBool::new(false));
        let requests = Arc::new(std::sync::Mutex::new(Vec::new()));
        let bytes = Arc::new(AtomicU64::new(0));
        let (s, r, b) = (stop.clone(), requests.clone(), bytes.clone());
        thread::spawn(move || {
            while !s.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((client, _)) => {
                        let _ = client.set_nonblocking(false);
                        let Ok(server) = TcpStream::connect(("127.0.0.1", upstream)) else {
                            let _ = client.shutdown(Shutdown::Both);
                            continue;
                        };
                        pipe(client, server, delay, s.clone(), r.clone(), b.clone());
                    }
                    Err(_) => thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        Proxy {
            port,
            stop,
            requests,
            bytes,
        }
    }

    /// Request lines seen so far whose path contains `needle`.
    pub fn count(&self, needle: &str) -> usize {
        self.requests
            .lock()
            .unwrap()
            .iter()
            .filter(|l| l.contains(needle))
            .count()
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

fn pipe(
    client: TcpStream,
    server: TcpStream,
    delay: Duration,
    stop: Arc<AtomicBool>,
    requests: Arc<std::sync::Mutex<Vec<String>>>,
    bytes: Arc<AtomicU64>,
) {
    let (mut c_read, mut s_write) = (client.try_clone().unwrap(), server.try_clone().unwrap());
    let (mut s_read, mut c_write) = (server, client);
    let timeout = Some(Duration::from_millis(200));
    let _ = c_read.set_read_timeout(timeout);
    let _ = s_read.set_read_timeout(timeout);
    let stop2 = stop.clone();
    thread::spawn(move || {
        let mut buf = vec![0u8; 64 * 1024];
        while !stop2.load(Ordering::Relaxed) {
            match c_read.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => {
                    let text = String::from_utf8_lossy(&buf[..n]);
                    for line in text.lines() {
                        if ["GET ", "HEAD ", "PUT ", "POST ", "DELETE "]
                            .iter()
                            .any(|m| line.starts_with(m))
                        {
                            requests.lock().unwrap().push(line.to_string());
                        }
                    }
                    if s_write.write_all(&buf[..n]).is_err() {
                        break;
                    }
                }
                Err(e)
                    if e.kind() == std::io::ErrorKind::WouldBlock
                        || e.kind() == std::io::ErrorKind::TimedOut => {}
                Err(_) => break,
            }
        }
        let _ = s_write.shutdown(Shutdown::Both);
    });
    thread::spawn(move || {
        let mut buf = vec![0u8; 64 * 1024];
        while !stop.load(Ordering::Relaxed) {
            match s_read.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => {
                    thread::sleep(delay);
                    bytes.fetch_add(n as u64, Ordering::Relaxed);
                    if c_write.write_all(&buf[..n]).is_err() {
                        break;
                    }
                }
                Err(e)
                    if e.kind() == std::io::ErrorKind::WouldBlock
                        || e.kind() == std::io::ErrorKind::TimedOut => {}
                Err(_) => break,
            }
        }
        let _ = c_write.shutdown(Shutdown::Both);
    });
}

/// Builds the fixture at `dir` on machine `store` and uploads everything
/// (drain); returns the number of rust units compiled.
pub fn machine_a_builds_and_uploads(dir: &Path, store: &Path, remote: &Remote) -> u64 {
    run_ok(cargo_remote(dir, store, remote, &[]));
    let s = stats(store);
    kache_ok(store, remote, &["remote", "drain"]);
    let after = stats(store);
    assert!(
        remote_counter(&after, "uploads") > 0,
        "machine A uploaded nothing: {after}"
    );
    counter(&s, "rust", "misses")
}
