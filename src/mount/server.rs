//! The per-mount server process: spawning it detached, serving in it, stopping it.
//!
//! Owns: `kache mount --foreground` (serve until unmounted or signalled), the readiness wait of
//! `kache mount`, and recognising a server by pid. Must never: signal a process that is not a
//! kache mount server.

use std::fs::{self, File};
use std::io;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use kache_fs::{BlobSource, MountHealth, MountOptions};

use super::{err, MountError};
use crate::store::{is_valid_hash, Store};

/// Set for a server spawned by `kache mount`, which holds the mount's lock meanwhile.
pub(super) const PARENT_HOLDS_LOCK: &str = "KACHE_MOUNT_PARENT_LOCKED";

/// How long `kache mount` waits for a freshly spawned server to answer.
const START_TIMEOUT: Duration = Duration::from_secs(15);

/// The store seen by the filesystem: blobs by hash, read-only.
struct StoreBlobs(Store);

impl BlobSource for StoreBlobs {
    fn blob_path(&self, hash: &str) -> Option<PathBuf> {
        is_valid_hash(hash).then(|| self.0.blob_path(hash))
    }

    fn blob_root(&self) -> Option<PathBuf> {
        Some(self.0.root().join("blobs"))
    }
}

/// Whether `pid` is a kache mount server (so a recycled pid is never signalled).
pub(super) fn is_our_server(pid: u32) -> bool {
    fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|c| {
        let args: Vec<&[u8]> = c.split(|b| *b == 0).collect();
        args.contains(&b"mount".as_slice()) && args.contains(&b"--foreground".as_slice())
    })
}

/// Waits up to 3 s for the server to exit by itself; with `kill`, then SIGKILLs it.
pub(super) fn stop_server(pid: u32, kill: bool) {
    let deadline = Instant::now() + Duration::from_secs(3);
    while is_our_server(pid) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    if kill && is_our_server(pid) {
        unsafe { libc::kill(pid as i32, libc::SIGKILL) };
    }
}

/// Starts `kache mount --foreground WORKTREE` detached, and waits until the mount answers.
pub(super) fn spawn_server(
    store_dir: &Path,
    worktree: &Path,
    state_dir: &Path,
    target: &Path,
) -> Result<Child, MountError> {
    use std::os::unix::process::CommandExt;
    let exe = std::env::current_exe().map_err(|e| err(format!("cannot find kache: {e}")))?;
    let log_path = state_dir.join("server.log");
    let log = File::create(&log_path).map_err(|e| err(format!("{}: {e}", log_path.display())))?;
    let log2 = log
        .try_clone()
        .map_err(|e| err(format!("{}: {e}", log_path.display())))?;
    let mut child = Command::new(exe)
        .arg("mount")
        .arg("--foreground")
        .arg(worktree)
        .env("KACHE_DIR", store_dir)
        .env(PARENT_HOLDS_LOCK, "1")
        .current_dir("/")
        .stdin(Stdio::null())
        .stdout(log)
        .stderr(log2)
        .process_group(0)
        .spawn()
        .map_err(|e| err(format!("cannot start the mount server: {e}")))?;
    let deadline = Instant::now() + START_TIMEOUT;
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            let log = fs::read_to_string(&log_path).unwrap_or_default();
            let last = log
                .lines()
                .last()
                .unwrap_or("")
                .trim_start_matches("kache: ");
            return Err(err(format!("mount server exited ({status}): {last}")));
        }
        if kache_fs::mount_health(target) == MountHealth::Healthy {
            return Ok(child);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = kache_fs::unmount(target, true);
            return Err(err(format!(
                "the mount server did not answer within {}s (log: {})",
                START_TIMEOUT.as_secs(),
                log_path.display()
            )));
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Serves the mount on background threads until it is unmounted (by anyone) or this process
/// gets SIGTERM/SIGINT/SIGHUP (then it unmounts itself and returns the signal).
pub(super) fn serve(store_dir: &Path, target: &Path, state_dir: &Path) -> io::Result<Option<i32>> {
    let store = Store::open(store_dir)?;
    // Block the stop signals before the serving threads exist, so they inherit the mask and
    // only this thread receives them (through sigtimedwait).
    let set = unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        for s in [libc::SIGTERM, libc::SIGINT, libc::SIGHUP] {
            libc::sigaddset(&mut set, s);
        }
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
        set
    };
    let handle = kache_fs::mount(
        MountOptions::new(target, state_dir),
        Arc::new(StoreBlobs(store)),
    )?;
    eprintln!(
        "kache: serving {} (pid {}, passthrough {})",
        target.display(),
        std::process::id(),
        if handle.passthrough_active() {
            "on"
        } else {
            "off"
        }
    );
    ensure_cachedir_tag(target);
    let tick = libc::timespec {
        tv_sec: 1,
        tv_nsec: 0,
    };
    loop {
        let sig = unsafe { libc::sigtimedwait(&set, std::ptr::null_mut(), &tick) };
        if sig > 0 {
            eprintln!("kache: signal {sig}: unmounting {}", target.display());
            return handle.unmount().map(|()| Some(sig));
        }
        if kache_fs::mount_health(target) == MountHealth::NotMounted {
            eprintln!("kache: {} was unmounted", target.display());
            drop(handle);
            return Ok(None);
        }
        ensure_cachedir_tag(target);
    }
}

/// cargo writes `CACHEDIR.TAG` only when it creates `target/` itself, which it never does
/// for a mount (the mount point exists), nor after `cargo clean` emptied a mount. The wrapper
/// finds the target directory (whose path it keeps out of keys) by that tag: keep it there.
fn ensure_cachedir_tag(target: &Path) {
    let tag = target.join("CACHEDIR.TAG");
    if !tag.exists() {
        let _ = fs::write(
            &tag,
            "Signature: 8a477f597d28d172789f06886806bc55\n\
             # This file is a cache directory tag created by cargo (kept by kache mount).\n\
             # For information about cache directory tags see https://bford.info/cachedir/\n",
        );
    }
}
