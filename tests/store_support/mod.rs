//! Shared helpers for the store and restore-engine tests: running the real
//! `kache` binary against a private store, deterministic per-key contents,
//! and loop-mounted filesystems that are always unmounted.
//!
//! Each store test file includes this with `mod store_support;` and uses a
//! subset, hence the `dead_code` allowance. (`tests/common` belongs to the
//! wrapper's end-to-end tests.)
#![allow(dead_code)]

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The binary under test.
pub const KACHE: &str = env!("CARGO_BIN_EXE_kache");

/// A private store plus a scratch directory, both removed at the end.
pub struct Sandbox {
    pub dir: tempfile::TempDir,
    pub store: PathBuf,
}

impl Sandbox {
    pub fn new() -> Sandbox {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = dir.path().join("store");
        Sandbox { dir, store }
    }

    /// A sandbox whose store lives at `store` (e.g. on a mounted filesystem).
    pub fn with_store(store: PathBuf) -> Sandbox {
        Sandbox {
            dir: tempfile::tempdir().expect("temp dir"),
            store,
        }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// `kache ARGS…` with only this sandbox's configuration visible: its own
    /// `KACHE_DIR`, a private HOME (no user config), no inherited `KACHE_*`.
    pub fn kache(&self) -> Command {
        kache_cmd(&self.store, self.dir.path())
    }

    pub fn run(&self, args: &[&str]) -> Output {
        self.kache().args(args).output().expect("spawn kache")
    }

    /// `kache debug put KEY FILES…`, asserting success.
    pub fn put(&self, key: &str, files: &[PathBuf]) {
        let out = self
            .kache()
            .args(["debug", "put", key])
            .args(files)
            .output()
            .expect("spawn kache");
        assert_clean(&out);
        assert!(
            out.status.success(),
            "put {key} failed: {}",
            text(&out.stderr)
        );
    }

    /// `kache debug get KEY DIR [--hardlink]`: the raw output.
    pub fn get(&self, key: &str, dir: &Path, hardlink: bool) -> Output {
        let mut c = self.kache();
        c.args(["debug", "get", key]).arg(dir);
        if hardlink {
            c.arg("--hardlink");
        }
        let out = c.output().expect("spawn kache");
        assert_clean(&out);
        out
    }

    /// `kache stats --json`, parsed.
    pub fn stats(&self) -> serde_json::Value {
        let out = self.run(&["stats", "--json"]);
        assert!(out.status.success(), "stats failed: {}", text(&out.stderr));
        serde_json::from_slice(&out.stdout).expect("stats --json is one JSON object")
    }

    pub fn entry_path(&self, key: &str) -> PathBuf {
        self.store.join("entries").join(&key[..2]).join(key)
    }

    pub fn blob_path(&self, hash: &str) -> PathBuf {
        self.store.join("blobs").join(&hash[..2]).join(hash)
    }
}

/// A `kache` command using `store` as `KACHE_DIR`, with `home` as HOME and
/// current directory so no user or project configuration leaks in.
pub fn kache_cmd(store: &Path, home: &Path) -> Command {
    let mut c = Command::new(KACHE);
    for (k, _) in std::env::vars_os() {
        if k.to_string_lossy().starts_with("KACHE_") {
            c.env_remove(k);
        }
    }
    c.env("KACHE_DIR", store)
        .env("HOME", home)
        .env("XDG_CONFIG_HOME", home.join(".config"))
        .env("XDG_CACHE_HOME", home.join(".cache"))
        .current_dir(home);
    c
}

/// No kache process may ever panic, whatever the input.
pub fn assert_clean(out: &Output) {
    let err = text(&out.stderr);
    assert!(!err.contains("panicked"), "kache panicked:\n{err}");
    // 101 is Rust's panic exit code; a signal has no code.
    assert_ne!(out.status.code(), Some(101), "kache panicked:\n{err}");
}

pub fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// A valid store key: 64 lowercase hex digits derived from `name`.
pub fn key_of(name: &str) -> String {
    blake3::hash(name.as_bytes()).to_hex().to_string()
}

/// `len` bytes that are a deterministic function of `seed`, so any process
/// can check what a key must restore to.
pub fn content_of(seed: &str, len: usize) -> Vec<u8> {
    let mut buf = vec![0u8; len];
    blake3::Hasher::new()
        .update(seed.as_bytes())
        .finalize_xof()
        .fill(&mut buf);
    buf
}

pub fn hash_hex(bytes: &[u8]) -> String {
    blake3::hash(bytes).to_hex().to_string()
}

/// The miss reason `kache debug get` printed, asserting it was a miss (exit 3).
pub fn miss_reason(out: &Output) -> String {
    assert_eq!(
        out.status.code(),
        Some(3),
        "expected a miss (exit 3): {}",
        text(&out.stderr)
    );
    let err = text(&out.stderr);
    let line = err
        .lines()
        .find_map(|l| l.strip_prefix("miss: "))
        .unwrap_or_else(|| panic!("a miss must print its reason as `miss: …`, got {err:?}"));
    line.to_string()
}

/// Bytes placed per method, parsed from `restored N files: reflink R hardlink H copy C`.
#[derive(Debug, PartialEq, Eq)]
pub struct Placed {
    pub files: u64,
    pub reflink: u64,
    pub hardlink: u64,
    pub copy: u64,
}

pub fn placed(out: &Output) -> Placed {
    assert!(
        out.status.success(),
        "expected a hit: {}",
        text(&out.stderr)
    );
    let s = text(&out.stdout);
    let w: Vec<&str> = s.split_whitespace().collect();
    let num = |i: usize| -> u64 {
        w.get(i)
            .and_then(|x| x.parse().ok())
            .unwrap_or_else(|| panic!("unexpected get output {s:?}"))
    };
    // restored N files: reflink R hardlink H copy C
    Placed {
        files: num(1),
        reflink: num(4),
        hardlink: num(6),
        copy: num(8),
    }
}

/// Root is needed for mounts. Returns false (after saying why) when the test
/// should be skipped: only when not root AND not in CI. In CI, not being
/// root is a failure: these tests must never silently skip there.
pub fn root_or_skip(test: &str) -> bool {
    let root = kache_platform::process::is_root();
    if root {
        return true;
    }
    if std::env::var("CI").as_deref() == Ok("true") {
        panic!("{test}: needs root for loop/bind mounts, and CI=true: refusing to skip");
    }
    eprintln!("SKIPPED {test}: needs root for loop/bind mounts (not root, CI is not \"true\")");
    false
}

fn run_tool(cmd: &mut Command, what: &str) {
    match cmd.output() {
        Ok(o) if o.status.success() => {}
        Ok(o) => panic!(
            "{what} failed ({}): {}{}",
            o.status,
            text(&o.stdout),
            text(&o.stderr)
        ),
        Err(e) => panic!(
            "{what}: cannot run {:?}: {e} (is it installed?)",
            cmd.get_program()
        ),
    }
}

/// A filesystem mounted for one test, unmounted when dropped (even when the
/// test panics), then its backing directory removed.
pub struct Mount {
    pub dir: PathBuf,
    /// The loop device of a loop-mounted image, detached on drop.
    loop_dev: Option<String>,
    _scratch: tempfile::TempDir,
}

impl Mount {
    /// Creates a `size`-byte image, formats it as `fstype` ("btrfs",
    /// "ext4"), and loop-mounts it. Panics with what is missing if it cannot.
    pub fn loop_image(fstype: &str, size: &str) -> Mount {
        let scratch = tempfile::tempdir().expect("temp dir");
        let img = scratch.path().join("image");
        let dir = scratch.path().join("mnt");
        fs::create_dir(&dir).unwrap();
        run_tool(
            Command::new("truncate").args(["-s", size]).arg(&img),
            "truncate",
        );
        let mkfs = format!("mkfs.{fstype}");
        let mut c = Command::new(&mkfs);
        if fstype == "btrfs" {
            c.arg("-q");
        } else {
            c.args(["-q", "-F"]);
        }
        c.arg(&img);
        run_tool(
            &mut c,
            &format!(
                "{mkfs} (install {})",
                if fstype == "btrfs" {
                    "btrfs-progs"
                } else {
                    "e2fsprogs"
                }
            ),
        );
        // An explicit new loop device, never `mount -o loop`: that reuses a
        // device already attached to a file with the same inode number, and a
        // lazily unmounted image of an earlier test (its file deleted, its
        // inode number recycled) then came back full instead of the fresh
        // image: a flaky ENOSPC in the full-disk test.
        let dev = attach_loop(&img);
        Self::mount(
            Command::new("mount").args(["-t", fstype, &dev]).arg(&dir),
            &dir,
            fstype,
        );
        Mount {
            dir,
            loop_dev: Some(dev),
            _scratch: scratch,
        }
    }

    /// A tmpfs of `size` (e.g. "1M").
    pub fn tmpfs(size: &str) -> Mount {
        let scratch = tempfile::tempdir().expect("temp dir");
        let dir = scratch.path().join("mnt");
        fs::create_dir(&dir).unwrap();
        Self::mount(
            Command::new("mount")
                .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
                .arg(&dir),
            &dir,
            "tmpfs",
        );
        Mount {
            dir,
            loop_dev: None,
            _scratch: scratch,
        }
    }

    /// A read-only bind mount of `src`.
    pub fn read_only_bind(src: &Path) -> Mount {
        let scratch = tempfile::tempdir().expect("temp dir");
        let dir = scratch.path().join("ro");
        fs::create_dir(&dir).unwrap();
        Self::mount(
            Command::new("mount").arg("--bind").arg(src).arg(&dir),
            &dir,
            "bind",
        );
        let m = Mount {
            dir,
            loop_dev: None,
            _scratch: scratch,
        };
        run_tool(
            Command::new("mount")
                .args(["-o", "remount,bind,ro"])
                .arg(&m.dir),
            "remount the bind mount read-only",
        );
        m
    }

    fn mount(cmd: &mut Command, dir: &Path, what: &str) {
        match cmd.output() {
            Ok(o) if o.status.success() => {}
            Ok(o) => panic!(
                "cannot mount {what} at {} ({}): {} — this test needs root, a free loop device \
                 (/dev/loop-control, `losetup -f`) and kernel support for {what}",
                dir.display(),
                o.status,
                text(&o.stderr).trim()
            ),
            Err(e) => panic!("cannot run mount: {e}"),
        }
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        let ok = Command::new("umount")
            .arg(&self.dir)
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            // Busy (a process still inside): detach lazily so the loop device
            // is freed as soon as it is idle.
            let _ = Command::new("umount").arg("-l").arg(&self.dir).status();
        }
        if let Some(dev) = &self.loop_dev {
            // After a lazy unmount this only marks the device to be freed
            // when idle (autoclear); either way it is never reused stale.
            let _ = Command::new("losetup").args(["-d", dev]).status();
        }
    }
}

/// Attaches `img` to a new loop device and returns its path. `losetup -f`
/// can race with another process taking the same free device: retried.
fn attach_loop(img: &Path) -> String {
    let mut last = String::new();
    for _ in 0..5 {
        match Command::new("losetup")
            .args(["--find", "--show"])
            .arg(img)
            .output()
        {
            Ok(o) if o.status.success() => return text(&o.stdout).trim().to_string(),
            Ok(o) => last = text(&o.stderr),
            Err(e) => panic!("cannot run losetup: {e} (install util-linux / mount)"),
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    panic!(
        "cannot attach {} to a loop device: {} — this test needs root and a free loop device \
         (/dev/loop-control)",
        img.display(),
        last.trim()
    )
}

/// Writes `len` bytes of `content_of(seed)` to `dir/name` and returns the path.
pub fn write_file(dir: &Path, name: &str, seed: &str, len: usize) -> PathBuf {
    fs::create_dir_all(dir).unwrap();
    let p = dir.join(name);
    fs::write(&p, content_of(seed, len)).unwrap();
    p
}

/// A small deterministic PRNG (xorshift64*), so failures can be replayed from
/// the printed seed without a dependency.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed.max(1))
    }
    pub fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// A seed from the environment (`KACHE_TEST_SEED`) or the clock, printed so a
/// failing run can be replayed.
pub fn seed(test: &str) -> u64 {
    let s = std::env::var("KACHE_TEST_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64)
                .unwrap_or(1)
        });
    eprintln!("{test}: seed {s} (replay with KACHE_TEST_SEED={s})");
    s
}
