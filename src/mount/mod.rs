//! `kache mount`: a worktree's `target/` served by kache-fs over the store.
//!
//! Owns: the registry of mounts (`$KACHE_DIR/mounts/<id>/state.json`, next to the
//! filesystem's own `upper/`), the per-mount server process (`kache mount --foreground`,
//! spawned detached by `kache mount` and by the daemon's [`MountSupervisor`]), repairing a
//! mount whose server died, and the wrapper's placement step ([`place_outputs`]).
//! Must never: delete a mount's upper directory unless asked to forget the mount, unmount
//! anything that is not a kache mount, or let a placement failure fail a build.
//!
//! One server process per mount (rather than one for all, inside the daemon) because the
//! daemon re-executes itself on upgrade, which would drop every FUSE session it held; a
//! mount's server survives daemon restarts and upgrades, and the daemon only supervises.

pub mod cli;
mod registry;
mod server;
mod worktree;

use std::fs::{self, File};
use std::io;
use std::path::{Path, PathBuf};
use std::process::Child;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use kache_fs::{MountHealth, Placement};
use serde::Serialize;

pub use registry::{MountRecord, Registry};
pub use worktree::WorktreeCommand;

use server::{is_our_server, serve, spawn_server, stop_server, PARENT_HOLDS_LOCK};

/// The worktree containing `dir`: the nearest ancestor with a `Cargo.toml` and either a
/// `.git` or a `Cargo.lock` (a workspace root, not a member crate).
pub fn find_worktree(dir: &Path) -> Option<PathBuf> {
    dir.ancestors()
        .find(|d| {
            d.join("Cargo.toml").is_file()
                && (d.join(".git").exists() || d.join("Cargo.lock").is_file())
        })
        .map(Path::to_path_buf)
}

/// The target directory `kache mount` covers for `worktree`.
pub fn target_of(worktree: &Path) -> PathBuf {
    // cargo's own precedence: CARGO_TARGET_DIR, then `build.target-dir` in
    // the worktree's `.cargo/config.toml` (relative to the worktree), then
    // `target/`. Config files further up (e.g. ~/.cargo) are not consulted.
    let anchored = |p: PathBuf| if p.is_absolute() { p } else { worktree.join(p) };
    if let Some(t) = std::env::var_os("CARGO_TARGET_DIR").filter(|t| !t.is_empty()) {
        return anchored(PathBuf::from(t));
    }
    for name in ["config.toml", "config"] {
        let Ok(text) = fs::read_to_string(worktree.join(".cargo").join(name)) else {
            continue;
        };
        let dir = text.parse::<toml::Table>().ok().and_then(|t| {
            t.get("build")?
                .get("target-dir")?
                .as_str()
                .map(PathBuf::from)
        });
        if let Some(d) = dir {
            return anchored(d);
        }
    }
    worktree.join("target")
}

#[cfg(test)]
mod target_dir_tests {
    use super::*;

    #[test]
    fn build_target_dir_in_the_worktree_config_is_honoured() {
        let wt = tempfile::tempdir().unwrap();
        assert_eq!(target_of(wt.path()), wt.path().join("target"));
        fs::create_dir(wt.path().join(".cargo")).unwrap();
        fs::write(
            wt.path().join(".cargo/config.toml"),
            "[build]\ntarget-dir = \"out/t\"\n",
        )
        .unwrap();
        if std::env::var_os("CARGO_TARGET_DIR").is_none() {
            assert_eq!(target_of(wt.path()), wt.path().join("out/t"));
        }
    }
}

/// Why FUSE cannot be used here, in one line; `None` when it can.
pub fn fuse_unavailable() -> Option<String> {
    if !Path::new("/dev/fuse").exists() {
        return Some("/dev/fuse is missing (FUSE kernel module not loaded, or not exposed to this container)".into());
    }
    if let Err(e) = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/fuse")
    {
        if unsafe { libc::geteuid() } == 0 || e.kind() != io::ErrorKind::PermissionDenied {
            return Some(format!("/dev/fuse cannot be opened: {e}"));
        }
        // Normal users mount through the setuid helper.
        let helper = std::env::var_os("PATH")
            .is_some_and(|p| std::env::split_paths(&p).any(|d| d.join("fusermount3").is_file()));
        if !helper {
            return Some("not root and fusermount3 is not installed (package fuse3)".into());
        }
    }
    None
}

/// Human state of a mount for `kache mounts`.
pub fn state_label(h: &MountHealth) -> &'static str {
    match h {
        MountHealth::Healthy => "healthy",
        MountHealth::NotMounted => "unmounted",
        MountHealth::Broken(_) => "broken",
    }
}

/// What `mount_worktree` did.
#[derive(Debug, PartialEq, Eq)]
pub enum Mounted {
    Fresh,
    AlreadyMounted,
    Repaired,
}

/// A user-facing failure of a mount command (one line).
#[derive(Debug)]
pub struct MountError(pub String);

impl std::fmt::Display for MountError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for MountError {}

fn err(msg: impl Into<String>) -> MountError {
    MountError(msg.into())
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// The canonical worktree and its target, checked to exist.
pub fn resolve(worktree: &Path) -> Result<(PathBuf, PathBuf), MountError> {
    let wt = fs::canonicalize(worktree).map_err(|e| err(format!("{}: {e}", worktree.display())))?;
    if !wt.is_dir() {
        return Err(err(format!("{} is not a directory", wt.display())));
    }
    let target = target_of(&wt);
    Ok((wt, target))
}

/// Mounts `worktree`'s target (or repairs a broken mount of it) and starts its server.
/// With `serve_here`, this process becomes the server and returns only after unmount.
/// `import`: move an existing non-empty target's contents into the mount instead of refusing.
pub fn mount_worktree(
    store_dir: &Path,
    worktree: &Path,
    import: bool,
    serve_here: bool,
) -> Result<(Mounted, Option<Child>), MountError> {
    let (wt, target) = resolve(worktree)?;
    let reg = Registry::new(store_dir);
    let id = Registry::id_for(&target);
    // A server spawned by `kache mount` runs while its parent holds the lock.
    let guard = match std::env::var_os(PARENT_HOLDS_LOCK) {
        Some(_) if serve_here => None,
        _ => Some(reg.lock(&id)?),
    };
    let mut outcome = Mounted::Fresh;
    match kache_fs::mount_health(&target) {
        MountHealth::Healthy => {
            if serve_here {
                return Err(err(format!("{} is already mounted", target.display())));
            }
            if let Some(mut rec) = reg.load(&id) {
                rec.wanted = true;
                let _ = reg.save(&id, &rec);
            }
            return Ok((Mounted::AlreadyMounted, None));
        }
        MountHealth::Broken(_) => {
            clear_broken(&reg, &id, &target);
            outcome = Mounted::Repaired;
        }
        MountHealth::NotMounted => {}
    }
    if let Some(why) = fuse_unavailable() {
        return Err(err(format!(
            "cannot mount: {why}; builds keep working with ordinary restores"
        )));
    }
    fs::create_dir_all(&target).map_err(|e| err(format!("{}: {e}", target.display())))?;
    let entries = fs::read_dir(&target)
        .map_err(|e| err(format!("{}: {e}", target.display())))?
        .count();
    if entries > 0 {
        if !import {
            return Err(err(format!(
                "{} is not empty ({entries} entries) and a mount would hide them: run `cargo clean`, \
                 or `kache mount --force` to move them into the mount",
                target.display()
            )));
        }
        import_contents(&target, &reg.dir(&id).join("upper"))
            .map_err(|e| err(format!("importing {}: {e}", target.display())))?;
    }
    let mut rec = reg.load(&id).unwrap_or(MountRecord {
        worktree: wt.clone(),
        target: target.clone(),
        wanted: true,
        pid: None,
        created: now_secs(),
    });
    rec.wanted = true;
    if serve_here {
        rec.pid = Some(std::process::id());
        reg.save(&id, &rec)
            .map_err(|e| err(format!("saving mount state: {e}")))?;
        drop(guard);
        let stopped_by = serve(store_dir, &target, &reg.dir(&id))
            .map_err(|e| err(format!("mount failed: {e}")))?;
        // Ctrl-C is the user's "unmount"; SIGTERM/SIGHUP (shutdown, logout) are not, so a
        // daemon restarted later remounts. A forgotten mount stays forgotten.
        if stopped_by == Some(libc::SIGINT) {
            if let Some(mut rec) = reg.load(&id) {
                rec.wanted = false;
                rec.pid = None;
                let _ = reg.save(&id, &rec);
            }
        }
        return Ok((outcome, None));
    }
    reg.save(&id, &rec)
        .map_err(|e| err(format!("saving mount state: {e}")))?;
    let child = spawn_server(store_dir, &wt, &reg.dir(&id), &target)?;
    rec.pid = Some(child.id());
    reg.save(&id, &rec)
        .map_err(|e| err(format!("saving mount state: {e}")))?;
    // A new mounted target starts with the units other builds finished (by reference).
    crate::seed::at_mount(store_dir, &wt, &target);
    Ok((outcome, Some(child)))
}

/// Clears a mount whose server is dead or wedged: abort + lazy unmount, and stop the old server.
fn clear_broken(reg: &Registry, id: &str, target: &Path) {
    let _ = kache_fs::unmount(target, true);
    if let Some(pid) = reg.load(id).and_then(|r| r.pid) {
        stop_server(pid, true);
    }
}

/// Moves everything in `target` into the mount's upper directory (before mounting), keeping
/// mtimes so cargo still finds its outputs fresh.
fn import_contents(target: &Path, upper: &Path) -> io::Result<()> {
    fs::create_dir_all(upper)?;
    for e in fs::read_dir(target)? {
        let e = e?;
        let dest = upper.join(e.file_name());
        if dest.is_dir() && !dest.is_symlink() {
            fs::remove_dir_all(&dest)?;
        } else if dest.symlink_metadata().is_ok() {
            fs::remove_file(&dest)?;
        }
        match fs::rename(e.path(), &dest) {
            Ok(()) => {}
            Err(x) if x.raw_os_error() == Some(libc::EXDEV) => {
                copy_tree(&e.path(), &dest)?;
                if e.file_type()?.is_dir() {
                    fs::remove_dir_all(e.path())?;
                } else {
                    fs::remove_file(e.path())?;
                }
            }
            Err(x) => return Err(x),
        }
    }
    Ok(())
}

fn copy_tree(from: &Path, to: &Path) -> io::Result<()> {
    let meta = fs::symlink_metadata(from)?;
    if meta.is_symlink() {
        std::os::unix::fs::symlink(fs::read_link(from)?, to)?;
    } else if meta.is_dir() {
        fs::create_dir_all(to)?;
        for e in fs::read_dir(from)? {
            let e = e?;
            copy_tree(&e.path(), &to.join(e.file_name()))?;
        }
    } else {
        fs::copy(from, to)?;
        File::options()
            .write(true)
            .open(to)?
            .set_modified(meta.modified()?)?;
    }
    Ok(())
}

/// Unmounts `worktree`'s target. Without `force`, open files make it fail with a clear
/// message. `forget` also removes the mount's state (its upper directory and placements).
pub fn unmount_worktree(
    store_dir: &Path,
    worktree: &Path,
    force: bool,
    forget: bool,
) -> Result<bool, MountError> {
    let (_, target) = resolve(worktree)?;
    let reg = Registry::new(store_dir);
    let id = Registry::id_for(&target);
    let _guard = reg.lock(&id)?;
    let rec = reg.load(&id);
    // Not wanted any more before it goes, so a supervising daemon does not remount it.
    let set_wanted = |wanted: bool| {
        if let Some(mut r) = rec.clone() {
            r.wanted = wanted;
            let _ = reg.save(&id, &r);
        }
    };
    set_wanted(false);
    let was_mounted = match kache_fs::mount_health(&target) {
        MountHealth::NotMounted => false,
        health => {
            let force = force || matches!(health, MountHealth::Broken(_));
            if let Err(e) = kache_fs::unmount(&target, force) {
                set_wanted(rec.as_ref().is_some_and(|r| r.wanted));
                let busy = e.raw_os_error() == Some(libc::EBUSY) || e.to_string().contains("busy");
                return Err(err(if busy {
                    format!(
                        "{} is busy: a process has files open in it (or its cwd there); \
                         stop it, or use `kache unmount --force`",
                        target.display()
                    )
                } else {
                    format!("unmounting {}: {e}", target.display())
                }));
            }
            if let Some(pid) = rec.as_ref().and_then(|r| r.pid) {
                stop_server(pid, force);
            }
            // Leave no empty target/ behind: cargo writes CACHEDIR.TAG (by which the wrapper
            // recognises a target directory) only into a target/ it creates itself.
            let _ = fs::remove_dir(&target);
            true
        }
    };
    if forget {
        reg.forget(&id)
            .map_err(|e| err(format!("removing mount state: {e}")))?;
    } else if let Some(mut rec) = rec {
        rec.wanted = false;
        rec.pid = None;
        let _ = reg.save(&id, &rec);
    }
    Ok(was_mounted)
}

/// One row of `kache mounts`.
#[derive(Debug, Serialize)]
pub struct MountStatus {
    pub id: String,
    pub worktree: PathBuf,
    pub target: PathBuf,
    pub state: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub problem: Option<String>,
    pub wanted: bool,
    pub pid: Option<u32>,
    pub placed_files: u64,
    pub placed_bytes: u64,
    pub upper_bytes: u64,
}

/// State and sizes of every registered mount.
pub fn list(store_dir: &Path) -> Vec<MountStatus> {
    let reg = Registry::new(store_dir);
    reg.all()
        .into_iter()
        .map(|(id, rec)| {
            let health = kache_fs::mount_health(&rec.target);
            let stats = kache_fs::mount_stats(&reg.dir(&id)).unwrap_or_default();
            MountStatus {
                state: state_label(&health),
                problem: match health {
                    MountHealth::Broken(why) => Some(why),
                    _ => None,
                },
                id,
                worktree: rec.worktree,
                target: rec.target,
                wanted: rec.wanted,
                pid: rec.pid,
                placed_files: stats.placed_files,
                placed_bytes: stats.placed_bytes,
                upper_bytes: stats.upper_bytes,
            }
        })
        .collect()
}

/// Every blob placed in any registered mount, mounted or not: what eviction must keep.
pub fn placed_blobs(store_dir: &Path) -> std::collections::HashSet<String> {
    let reg = Registry::new(store_dir);
    let mut keep = std::collections::HashSet::new();
    let Ok(dirs) = fs::read_dir(reg.root()) else {
        return keep;
    };
    for d in dirs.flatten() {
        if let Ok(found) = kache_fs::scan_placements(&d.path()) {
            keep.extend(found.into_iter().map(|p| p.hash));
        }
    }
    keep
}

/// One output of a hit to put into a target directory that is a kache mount.
pub struct ToPlace<'a> {
    /// Path relative to the mount root.
    pub path: PathBuf,
    pub blob: &'a str,
    pub size: u64,
    pub mode: u32,
}

/// The root of the kache mount containing `dir`, if any: one `stat` per ancestor, starting
/// with `dir` itself, stopping at the first mount root.
pub fn mount_root_of(dir: &Path) -> Option<&Path> {
    dir.ancestors().find(|d| kache_fs::is_kache_mount(d))
}

/// Places `outputs` into the mount at `mount_root` by reference, in one request. Returns the
/// bytes placed; on any failure nothing is placed and the caller restores instead.
///
/// Small outputs are placed too, not copied: measured here (release server, ext4, loaded
/// machine), placing one file cost 230–1000 µs and writing it into the mount (create, write,
/// rename, each a FUSE round trip) 500–1100 µs even at 4 KiB, the cost of both being mostly
/// the file creation in the upper directory; a marker also takes no data block. Extra files in
/// one request cost less than a request each (≈520–620 µs/file in batches of 10–1000).
pub fn place_outputs(mount_root: &Path, outputs: &[ToPlace]) -> io::Result<u64> {
    if outputs.is_empty() {
        return Ok(0);
    }
    let placements: Vec<Placement> = outputs
        .iter()
        .map(|o| Placement {
            path: o.path.clone(),
            hash: o.blob.to_string(),
            size: o.size,
            mode: o.mode,
        })
        .collect();
    kache_fs::place(mount_root, &placements)?;
    Ok(outputs.iter().map(|o| o.size).sum())
}

/// The daemon's hook: on start, remounts every mount the user left mounted; then, every tick,
/// repairs any whose server died. Servers are separate processes (see the module docs).
#[derive(Default)]
pub struct MountSupervisor {
    children: Vec<Child>,
}

impl crate::daemon::Task for MountSupervisor {
    fn name(&self) -> &'static str {
        "mounts"
    }

    fn interval(&self) -> Duration {
        Duration::from_secs(10)
    }

    fn start(&mut self, d: &crate::daemon::DaemonCtx) {
        let _ = crate::daemon::Task::tick(self, d);
    }

    fn tick(&mut self, d: &crate::daemon::DaemonCtx) -> Result<(), String> {
        self.children
            .retain_mut(|c| matches!(c.try_wait(), Ok(None)));
        let store_dir = d.store.root().to_path_buf();
        let mut problems = Vec::new();
        for (_, rec) in Registry::new(&store_dir).all() {
            if !rec.wanted || !rec.worktree.is_dir() {
                continue;
            }
            match kache_fs::mount_health(&rec.target) {
                MountHealth::Healthy => continue,
                // Slow, not dead (its server lives): killing it would fail whatever has files
                // open there. `kache mount` (or `kache unmount --force`) clears it on request.
                MountHealth::Broken(_) if rec.pid.is_some_and(is_our_server) => {
                    problems.push(format!("{}: does not answer", rec.target.display()));
                    continue;
                }
                _ => {}
            }
            match mount_worktree(&store_dir, &rec.worktree, false, false) {
                Ok((_, child)) => self.children.extend(child),
                Err(e) => problems.push(format!("{}: {e}", rec.worktree.display())),
            }
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(problems.join("; "))
        }
    }
}
