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
use kache_platform::process::{self, Detach};
use kache_platform::watch::{self, StopSignal, Watch, Woke};

use super::layout::{self, TargetState};
use super::{err, MountError, MountRecord, Registry};
use crate::store::{is_valid_hash, Store};

/// Set for a server spawned by `kache mount`, which holds the mount's lock meanwhile.
pub(super) const PARENT_HOLDS_LOCK: &str = "KACHE_MOUNT_PARENT_LOCKED";
/// Set for a server's keeper: it waits, and serves only if the server dies (`kache_fs::keep`).
#[cfg(target_os = "linux")]
const KEEPER: &str = "KACHE_MOUNT_KEEPER";

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
        let _ = process::signal_terminate(pid, true);
    }
}

/// Starts `kache mount --foreground WORKTREE` detached, and waits until the mount answers.
pub(super) fn spawn_server(
    store_dir: &Path,
    worktree: &Path,
    state_dir: &Path,
    mountpoint: &Path,
) -> Result<Child, MountError> {
    let exe = std::env::current_exe().map_err(|e| err(format!("cannot find kache: {e}")))?;
    let log_path = state_dir.join("server.log");
    // A repair starts a new server: keep the log of the one that died, which says why.
    let _ = fs::rename(&log_path, state_dir.join("server.log.1"));
    let log = File::create(&log_path).map_err(|e| err(format!("{}: {e}", log_path.display())))?;
    let log2 = log
        .try_clone()
        .map_err(|e| err(format!("{}: {e}", log_path.display())))?;
    let mut command = Command::new(exe);
    command
        .arg("mount")
        .arg("--foreground")
        .arg(worktree)
        .env("KACHE_DIR", store_dir)
        .env(PARENT_HOLDS_LOCK, "1")
        .current_dir("/")
        .stdin(Stdio::null())
        .stdout(log)
        .stderr(log2);
    // Out of reach of the terminal's Ctrl-C, and without cargo's jobserver pipe when a
    // wrapper call starts it.
    process::detach(&mut command, Detach::Group);
    let mut child = command
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
        if kache_fs::mount_health(mountpoint) == MountHealth::Healthy {
            return Ok(child);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = kache_fs::unmount(mountpoint, true);
            return Err(err(format!(
                "the mount server did not answer within {}s (log: {})",
                START_TIMEOUT.as_secs(),
                log_path.display()
            )));
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Serves the mount on background threads until it is unmounted (by anyone), this process
/// gets SIGTERM/SIGINT/SIGHUP (then it unmounts itself and returns the signal), or its worktree
/// is gone (then it releases the mount: see [`look_after`]).
pub(super) fn serve(
    store_dir: &Path,
    id: &str,
    rec: &MountRecord,
) -> io::Result<Option<StopSignal>> {
    let store = Store::open(store_dir)?;
    let reg = Registry::new(store_dir);
    let mountpoint = rec.mountpoint();
    // Before the serving threads exist, so they inherit the mask and only the watch below
    // receives the stop signals.
    watch::block_stop_signals();
    let opts = MountOptions::new(mountpoint, reg.dir(id));
    let blobs = Arc::new(StoreBlobs(store));
    let Some(handle) = mount_or_take_over(&reg, id, rec, opts, blobs)? else {
        return Ok(None);
    };
    eprintln!(
        "kache: serving {} at {} (pid {})",
        rec.target.display(),
        mountpoint.display(),
        std::process::id(),
    );
    let mut keeper = Keeper::start(store_dir, rec, &handle);
    ensure_cachedir_tag(mountpoint);
    // A server spawned by `kache mount` leaves the record to its parent, which holds the
    // mount's lock and records the link itself: a write from here could put back the record as
    // it was before the parent saved this server's pid (then nothing could stop the server).
    let record_link = !rec.linked && std::env::var_os(PARENT_HOLDS_LOCK).is_none();
    // A keeper taking over serves the mount as it is: the link stays as the dead server left
    // it (a `cargo clean` may have removed it; an `rm -rf` of the worktree may be under way).
    let link = match handle.resumed() {
        true => Ok(()),
        false => layout::link_target(&rec.target, mountpoint),
    };
    match link {
        Ok(()) if record_link => {
            if let Some(mut now) = reg.load(id) {
                now.linked = true;
                let _ = reg.save(id, &now);
            }
            layout::ignore_in_git(&rec.worktree, &rec.target);
        }
        Ok(()) => {}
        Err(e) => eprintln!("kache: linking {}: {e}", rec.target.display()),
    }
    let parent = rec.target.parent().unwrap_or(&rec.worktree);
    let watch = Watch::new(&[&rec.worktree, parent])?;
    let mut said = None;
    loop {
        match watch.wait(Duration::from_secs(1)) {
            Woke::Stop(sig) => {
                eprintln!("kache: {sig}: unmounting {}", mountpoint.display());
                keeper.dismiss();
                return handle.unmount().map(|()| Some(sig));
            }
            Woke::Timeout => {
                if kache_fs::mount_health(mountpoint) == MountHealth::NotMounted {
                    eprintln!("kache: {} was unmounted", mountpoint.display());
                    keeper.dismiss();
                    drop(handle);
                    return Ok(None);
                }
                ensure_cachedir_tag(mountpoint);
                keeper.look_after(store_dir, rec, &handle);
            }
            Woke::Changed => {}
        }
        match look_after(store_dir, &reg, id, &handle) {
            Care::Released => {
                keeper.dismiss();
                return Ok(None);
            }
            Care::Kept(note) => {
                if note.is_some() && note != said {
                    eprintln!("kache: {}", note.as_deref().unwrap_or_default());
                }
                said = note;
            }
        }
    }
}

/// Mounts, or in a keeper, waits for the server to die and then serves its connection (`None`:
/// the server ended on purpose, nothing to serve).
#[cfg(target_os = "linux")]
fn mount_or_take_over(
    reg: &Registry,
    id: &str,
    rec: &MountRecord,
    opts: MountOptions,
    blobs: Arc<StoreBlobs>,
) -> io::Result<Option<kache_fs::MountHandle>> {
    if std::env::var_os(KEEPER).is_none() {
        return kache_fs::mount(opts, blobs).map(Some);
    }
    let Some(device) = kache_fs::keep(rec.mountpoint())? else {
        return Ok(None);
    };
    let dead = reg.load(id).and_then(|r| r.pid);
    let handle = kache_fs::resume(opts, blobs, device)?;
    // From now on this process is the mount's server.
    if let Ok(_lock) = reg.lock(id) {
        if let Some(mut now) = reg.load(id) {
            now.pid = Some(std::process::id());
            let _ = reg.save(id, &now);
        }
    }
    eprintln!(
        "kache: the server of {} (pid {}) died: its keeper (pid {}) serves the mount now",
        rec.target.display(),
        dead.map_or_else(|| "?".to_string(), |p| p.to_string()),
        std::process::id(),
    );
    Ok(Some(handle))
}

#[cfg(not(target_os = "linux"))]
fn mount_or_take_over(
    _reg: &Registry,
    _id: &str,
    _rec: &MountRecord,
    opts: MountOptions,
    blobs: Arc<StoreBlobs>,
) -> io::Result<Option<kache_fs::MountHandle>> {
    kache_fs::mount(opts, blobs).map(Some)
}

/// The server's keeper, if it has one (Linux: see `kache_fs::Keeper`).
struct Keeper {
    #[cfg(target_os = "linux")]
    inner: Option<kache_fs::Keeper>,
}

impl Keeper {
    #[cfg(target_os = "linux")]
    fn start(store_dir: &Path, rec: &MountRecord, handle: &kache_fs::MountHandle) -> Keeper {
        let spawned = std::env::current_exe().and_then(|exe| {
            let mut command = Command::new(exe);
            command
                .arg("mount")
                .arg("--foreground")
                .arg(&rec.worktree)
                .env("KACHE_DIR", store_dir)
                .env(PARENT_HOLDS_LOCK, "1")
                .env(KEEPER, "1")
                .current_dir("/");
            kache_fs::Keeper::spawn(handle, command)
        });
        match spawned {
            Ok(inner) => Keeper { inner: Some(inner) },
            Err(e) => {
                eprintln!(
                    "kache: no keeper for {} ({e}): a build in flight fails if this server dies",
                    rec.target.display()
                );
                Keeper { inner: None }
            }
        }
    }

    #[cfg(not(target_os = "linux"))]
    fn start(_store_dir: &Path, _rec: &MountRecord, _handle: &kache_fs::MountHandle) -> Keeper {
        Keeper {}
    }

    /// A keeper that exited (killed by someone) is replaced.
    fn look_after(&mut self, store_dir: &Path, rec: &MountRecord, handle: &kache_fs::MountHandle) {
        #[cfg(target_os = "linux")]
        if self.inner.as_mut().is_some_and(|k| k.exited()) {
            eprintln!(
                "kache: the keeper of {} exited: starting another",
                rec.target.display()
            );
            *self = Keeper::start(store_dir, rec, handle);
        }
        #[cfg(not(target_os = "linux"))]
        let _ = (store_dir, rec, handle);
    }

    /// The server ends on purpose: the keeper ends without serving.
    fn dismiss(&mut self) {
        #[cfg(target_os = "linux")]
        if let Some(inner) = self.inner.take() {
            inner.dismiss();
        }
    }
}

/// What [`look_after`] did.
enum Care {
    /// The mount stays; a note when something is worth a line in the log.
    Kept(Option<String>),
    /// The worktree is gone and so is the mount: server done.
    Released,
}

/// The server's answer to changes in its worktree:
/// - the worktree is gone (`rm -rf`, `git worktree remove`): release the mount (unmount, delete
///   its state and upper directory, which unpins its blobs);
/// - only the target link is gone (`cargo clean`, `rm -rf target`): empty the mount, as the
///   user asked. The link is put back by the next build in the worktree (the wrapper) or by
///   `kache mount`, never here: during `rm -rf WT` or `git worktree remove` the link goes
///   first, and a link put back would make their final `rmdir` fail;
/// - the target is something else now: leave it (the wrapper tells the next build).
///
/// Done only under the mount's lock, taken without waiting: whoever holds it (`kache unmount`,
/// `kache worktree remove`, a build putting the link back) is changing the mount, and the next
/// wake-up looks again.
fn look_after(store_dir: &Path, reg: &Registry, id: &str, handle: &kache_fs::MountHandle) -> Care {
    let Some(_lock) = reg.try_lock(id) else {
        return Care::Kept(None);
    };
    let Some(rec) = reg.load(id) else {
        return Care::Kept(None);
    };
    let mountpoint = rec.mountpoint();
    if !rec.worktree.exists() {
        eprintln!(
            "kache: {} is gone: releasing its mount",
            rec.worktree.display()
        );
        // What the worktree built outlives it as seeds (read while this server serves them).
        crate::seed::before_remove(store_dir, &rec.worktree, &rec.target, Some(mountpoint));
        // Whatever still has files open there belonged to the removed worktree.
        let _ = kache_fs::unmount(mountpoint, true);
        if let Err(e) = reg.forget(id) {
            eprintln!("kache: removing {}: {e}", reg.dir(id).display());
        }
        return Care::Released;
    }
    match layout::target_state(&rec.target, mountpoint) {
        TargetState::Linked => Care::Kept(None),
        TargetState::Missing if rec.wanted && rec.linked => {
            // What the target held outlives it as seeds (read while this server serves it).
            crate::seed::before_remove(store_dir, &rec.worktree, &rec.target, Some(mountpoint));
            let emptied = match handle.clear() {
                Ok(0) => return Care::Kept(None),
                Ok(n) => format!("{n} entries"),
                Err(e) => e.to_string(),
            };
            Care::Kept(Some(format!(
                "{} was removed (cargo clean?): emptied the mount ({emptied}); the next build \
                 links it again",
                rec.target.display()
            )))
        }
        other => Care::Kept(Some(format!(
            "{} is not kache's link any more ({other:?}): builds there are not cached by reference",
            rec.target.display()
        ))),
    }
}

/// cargo writes `CACHEDIR.TAG` only when it creates `target/` itself, which it never does
/// for a mount (the mount point exists), nor after `cargo clean` emptied a mount. The wrapper
/// finds the target directory (whose path it keeps out of keys) by that tag: keep it there.
fn ensure_cachedir_tag(mountpoint: &Path) {
    let tag = mountpoint.join("CACHEDIR.TAG");
    if !tag.exists() {
        let _ = fs::write(
            &tag,
            "Signature: 8a477f597d28d172789f06886806bc55\n\
             # This file is a cache directory tag created by cargo (kept by kache mount).\n\
             # For information about cache directory tags see https://bford.info/cachedir/\n",
        );
    }
}
