//! One worktree's mount from start to end: mounting (and repairing), unmounting, releasing a
//! mount whose worktree is gone, and the supervision round the daemon runs.
//!
//! Every change to a mount happens under its registry lock. Must never: hide a non-empty target
//! the user did not ask to import, or delete a mount's state while it is still mounted.

use std::fs::{self, File};
use std::io;
use std::path::{Path, PathBuf};
use std::process::Child;

use kache_fs::MountHealth;
use kache_platform::watch::StopSignal;

use super::layout::{self, TargetState};
use super::server::{is_our_server, serve, spawn_server, stop_server, PARENT_HOLDS_LOCK};
use super::{err, now_secs, resolve, MountError, MountRecord, Mounted, Registry};

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
    if serve_here && std::env::var_os(PARENT_HOLDS_LOCK).is_some() {
        // Spawned by `kache mount`, which prepared everything and holds the lock meanwhile.
        let rec = reg
            .load(&id)
            .ok_or_else(|| err(format!("{}: no mount state", target.display())))?;
        return serve_until_stopped(store_dir, &reg, &id, rec).map(|()| (Mounted::Fresh, None));
    }
    let guard = reg.lock(&id)?;
    let known = reg.load(&id);
    let mountpoint = reg.mountpoint(&id);
    let mut outcome = Mounted::Fresh;
    // A mount from before targets were links is served at the target itself.
    let legacy = known.as_ref().filter(|r| r.mountpoint.is_none());
    for at in legacy
        .map(|r| r.target.clone())
        .into_iter()
        .chain([mountpoint.clone()])
    {
        match kache_fs::mount_health(&at) {
            MountHealth::Healthy if serve_here => {
                return Err(err(format!("{} is already mounted", target.display())));
            }
            MountHealth::Healthy => match layout::target_state(&target, &mountpoint) {
                // `--force` on a target cargo made while the link was gone: take the served
                // mount down, then import the target below like any other.
                TargetState::PlainDir { empty: false } if import => stop(&reg, &id, &at, false)?,
                state => {
                    if state == TargetState::Missing && at == mountpoint {
                        relink(&wt, &target, &mountpoint)?;
                    }
                    set_wanted(&reg, &id, true);
                    return Ok((Mounted::AlreadyMounted, None));
                }
            },
            MountHealth::Broken(_) => {
                clear_broken(&reg, &id, &at);
                outcome = Mounted::Repaired;
            }
            MountHealth::NotMounted => {}
        }
    }
    if let Some(why) = kache_fs::unavailable() {
        return Err(err(format!(
            "cannot mount: {why}; builds keep working with ordinary restores"
        )));
    }
    let upper = reg.dir(&id).join("upper");
    let was_linked = known.as_ref().is_some_and(|r| r.linked);
    prepare_target(&target, &mountpoint, &upper, was_linked, import)?;
    // What a build wrote into the bare mount point while the mount was down.
    if fs::read_dir(&mountpoint).is_ok_and(|mut d| d.next().is_some()) {
        import_contents(&mountpoint, &upper)
            .map_err(|e| err(format!("importing {}: {e}", mountpoint.display())))?;
    }
    fs::create_dir_all(&mountpoint).map_err(|e| err(format!("{}: {e}", mountpoint.display())))?;
    let mut rec = known.unwrap_or(MountRecord {
        worktree: wt.clone(),
        target: target.clone(),
        mountpoint: None,
        linked: false,
        wanted: true,
        pid: None,
        created: now_secs(),
    });
    rec.mountpoint = Some(mountpoint.clone());
    rec.wanted = true;
    let save = |rec: &MountRecord| {
        reg.save(&id, rec)
            .map_err(|e| err(format!("saving mount state: {e}")))
    };
    if serve_here {
        rec.pid = Some(std::process::id());
        save(&rec)?;
        drop(guard);
        return serve_until_stopped(store_dir, &reg, &id, rec).map(|()| (outcome, None));
    }
    save(&rec)?;
    let child = spawn_server(store_dir, &wt, &reg.dir(&id), &mountpoint)?;
    rec.pid = Some(child.id());
    save(&rec)?;
    if let Err(e) = layout::link_target(&target, &mountpoint) {
        let _ = stop(&reg, &id, &mountpoint, true);
        return Err(err(format!("linking {}: {e}", target.display())));
    }
    rec.linked = true;
    save(&rec)?;
    layout::ignore_in_git(&wt, &target);
    drop(guard);
    // A new mounted target starts with the units other builds finished, by reference.
    crate::seed::at_mount(store_dir, &wt, &target);
    Ok((outcome, Some(child)))
}

/// This process serves the mount until it is unmounted or stopped (`kache mount --foreground`).
fn serve_until_stopped(
    store_dir: &Path,
    reg: &Registry,
    id: &str,
    rec: MountRecord,
) -> Result<(), MountError> {
    let stopped_by = serve(store_dir, id, &rec).map_err(|e| err(format!("mount failed: {e}")))?;
    // Ctrl-C is the user's "unmount"; SIGTERM/SIGHUP (shutdown, logout) are not, so a daemon
    // restarted later remounts. A forgotten mount stays forgotten.
    if stopped_by == Some(StopSignal::Interrupt) {
        if let Some(mut rec) = reg.load(id) {
            rec.wanted = false;
            rec.pid = None;
            let _ = reg.save(id, &rec);
        }
    }
    Ok(())
}

fn set_wanted(reg: &Registry, id: &str, wanted: bool) {
    if let Some(mut rec) = reg.load(id) {
        rec.wanted = wanted;
        let _ = reg.save(id, &rec);
    }
}

/// Puts back the link of a served mount whose link was removed. The link went because someone
/// deleted the target (`cargo clean`, `rm -rf target`): the mount is emptied first, as they
/// asked (its server may have done so already; then this is cheap).
fn relink(wt: &Path, target: &Path, mountpoint: &Path) -> Result<(), MountError> {
    kache_fs::clear(mountpoint)
        .map_err(|e| err(format!("emptying {}: {e}", mountpoint.display())))?;
    layout::link_target(target, mountpoint)
        .map_err(|e| err(format!("linking {}: {e}", target.display())))?;
    layout::ignore_in_git(wt, target);
    Ok(())
}

/// Makes `target` ready to become the link: an empty directory goes, a non-empty one is
/// imported (only when asked), a link left by another mount goes. A missing target whose link
/// existed means the link was removed while nobody served the mount: what that asked for
/// (`cargo clean`) is done now, by emptying the upper directory.
fn prepare_target(
    target: &Path,
    mountpoint: &Path,
    upper: &Path,
    was_linked: bool,
    import: bool,
) -> Result<(), MountError> {
    let at = |e: io::Error| err(format!("{}: {e}", target.display()));
    match layout::target_state(target, mountpoint) {
        TargetState::Linked => Ok(()),
        TargetState::Missing if was_linked => layout::empty_upper(upper).map_err(at),
        TargetState::Missing => Ok(()),
        TargetState::StaleLink => fs::remove_file(target).map_err(at),
        TargetState::PlainDir { empty: true } => fs::remove_dir(target).map_err(at),
        TargetState::PlainDir { empty: false } if import => {
            import_contents(target, upper)
                .map_err(|e| err(format!("importing {}: {e}", target.display())))?;
            fs::remove_dir(target).map_err(at)
        }
        TargetState::PlainDir { empty: false } => Err(err(format!(
            "{} is not empty and a mount would hide it: run `cargo clean`, \
             or `kache mount --force` to move its files into the mount",
            target.display()
        ))),
        TargetState::Foreign => Err(err(format!(
            "{} is not a directory kache can mount (a file, or a symlink of yours): move it away",
            target.display()
        ))),
    }
}

/// Clears a mount whose server is dead or wedged: abort + lazy unmount, and stop the old server.
fn clear_broken(reg: &Registry, id: &str, mountpoint: &Path) {
    let _ = kache_fs::unmount(mountpoint, true);
    if let Some(pid) = reg.load(id).and_then(|r| r.pid) {
        stop_server(pid, true);
    }
}

/// Unmounts the mount at `mountpoint` and stops its server (`force`: even with open files).
fn stop(reg: &Registry, id: &str, mountpoint: &Path, force: bool) -> Result<(), MountError> {
    if let Err(e) = kache_fs::unmount(mountpoint, force) {
        let busy = e.kind() == io::ErrorKind::ResourceBusy || e.to_string().contains("busy");
        return Err(err(if busy {
            format!(
                "{} is busy: a process has files open in it (or its cwd there); \
                 stop it, or use `kache unmount --force`",
                mountpoint.display()
            )
        } else {
            format!("unmounting {}: {e}", mountpoint.display())
        }));
    }
    if let Some(pid) = reg.load(id).and_then(|r| r.pid) {
        stop_server(pid, force);
    }
    Ok(())
}

/// Moves everything in `from` into the mount's upper directory (before mounting), keeping
/// mtimes so cargo still finds its outputs fresh; what is moved in replaces what was there.
fn import_contents(from: &Path, upper: &Path) -> io::Result<()> {
    fs::create_dir_all(upper)?;
    for e in fs::read_dir(from)? {
        let e = e?;
        let dest = upper.join(e.file_name());
        if dest.is_dir() && !dest.is_symlink() {
            fs::remove_dir_all(&dest)?;
        } else if dest.symlink_metadata().is_ok() {
            fs::remove_file(&dest)?;
        }
        match fs::rename(e.path(), &dest) {
            Ok(()) => {}
            Err(x) if x.kind() == io::ErrorKind::CrossesDevices => {
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
        kache_platform::copy_symlink(from, to)?;
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

/// The worktree, its target and its mount id: from the worktree itself, or, when the worktree
/// is gone (removed by hand), from the registry by its path.
pub fn locate(store_dir: &Path, worktree: &Path) -> Result<(PathBuf, PathBuf, String), MountError> {
    match resolve(worktree) {
        Ok((wt, target)) => {
            let id = Registry::id_for(&target);
            Ok((wt, target, id))
        }
        Err(e) => {
            let reg = Registry::new(store_dir);
            gone_worktree_paths(worktree)
                .iter()
                .find_map(|p| reg.find_worktree(p))
                .map(|(id, rec)| (rec.worktree, rec.target, id))
                .ok_or(e)
        }
    }
}

/// The paths a worktree that no longer exists may have been registered under: as given (made
/// absolute), and below its parent's canonical path (the parent usually still exists).
fn gone_worktree_paths(worktree: &Path) -> Vec<PathBuf> {
    let abs = std::path::absolute(worktree).unwrap_or_else(|_| worktree.to_path_buf());
    let mut paths = vec![abs.clone()];
    if let (Some(parent), Some(name)) = (abs.parent(), abs.file_name()) {
        if let Ok(p) = fs::canonicalize(parent) {
            paths.push(p.join(name));
        }
    }
    paths
}

/// Unmounts `worktree`'s mount. Without `force`, open files make it fail with a clear message.
/// The target link stays, so the next build is told (by the wrapper) that the mount is down
/// instead of filling a plain `target/` silently, and `kache mount` takes back what it wrote.
/// `forget` also removes the link and the mount's state (its upper directory and placements).
pub fn unmount_worktree(
    store_dir: &Path,
    worktree: &Path,
    force: bool,
    forget: bool,
) -> Result<bool, MountError> {
    let (_, target, id) = locate(store_dir, worktree)?;
    let reg = Registry::new(store_dir);
    let _guard = reg.lock(&id)?;
    let rec = reg.load(&id);
    let was_wanted = rec.as_ref().is_some_and(|r| r.wanted);
    let mountpoint = rec
        .as_ref()
        .map_or_else(|| reg.mountpoint(&id), |r| r.mountpoint().to_path_buf());
    // Not wanted any more before it goes, so a supervising daemon does not remount it.
    set_wanted(&reg, &id, false);
    let was_mounted = match kache_fs::mount_health(&mountpoint) {
        MountHealth::NotMounted => false,
        health => {
            let force = force || matches!(health, MountHealth::Broken(_));
            if let Err(e) = stop(&reg, &id, &mountpoint, force) {
                set_wanted(&reg, &id, was_wanted);
                return Err(e);
            }
            true
        }
    };
    if rec.as_ref().is_some_and(|r| r.mountpoint.is_none()) {
        // A mount from before links: its empty mount point was the target.
        let _ = fs::remove_dir(&target);
    }
    if forget {
        layout::unlink_target(&target, &mountpoint);
        reg.forget(&id)
            .map_err(|e| err(format!("removing mount state: {e}")))?;
    } else if let Some(mut rec) = reg.load(&id) {
        rec.pid = None;
        let _ = reg.save(&id, &rec);
    }
    Ok(was_mounted)
}

/// Releases mount `id` whose worktree is gone: unmounts it whatever uses it (that belonged to
/// the removed worktree), stops its server, removes a link left outside the worktree and the
/// mount's state, upper directory included, which unpins its blobs.
pub fn release(store_dir: &Path, id: &str) -> Result<(), MountError> {
    let reg = Registry::new(store_dir);
    let _guard = reg.lock(id)?;
    let Some(rec) = reg.load(id) else {
        return reg
            .forget(id)
            .map_err(|e| err(format!("removing mount state: {e}")));
    };
    let mountpoint = rec.mountpoint();
    // What the worktree built outlives it as seeds (read while the mount still serves it).
    crate::seed::before_remove(store_dir, &rec.worktree, &rec.target, Some(mountpoint));
    if kache_fs::mount_health(mountpoint) != MountHealth::NotMounted {
        let _ = kache_fs::unmount(mountpoint, true);
    }
    if let Some(pid) = rec.pid {
        stop_server(pid, true);
    }
    layout::unlink_target(&rec.target, mountpoint);
    reg.forget(id)
        .map_err(|e| err(format!("removing mount state: {e}")))
}

/// Releases every mount whose worktree no longer exists (a server releases its own mount when
/// it sees its worktree go; this catches mounts whose server was not running). Returns what
/// could not be released.
pub fn release_orphans(store_dir: &Path) -> Vec<String> {
    let mut problems = Vec::new();
    for (id, rec) in Registry::new(store_dir).all() {
        if !rec.worktree.exists() {
            if let Err(e) = release(store_dir, &id) {
                problems.push(format!("{}: {e}", rec.worktree.display()));
            }
        }
    }
    problems
}

/// What one round of supervision did: servers it started, and mounts it could not repair.
#[derive(Default)]
pub struct Supervision {
    pub started: Vec<Child>,
    pub problems: Vec<String>,
}

/// One round of keeping mounts up (the daemon runs it at start and then periodically): mounts
/// whose worktree is gone are released, and every mount the user wants whose server is gone is
/// remounted. A mount whose server lives but does not answer is left alone (slow is not dead,
/// and killing it would fail whatever has files open there); `kache mount` or
/// `kache unmount --force` clears it on request.
pub fn supervise(store_dir: &Path) -> Supervision {
    let mut round = Supervision {
        problems: release_orphans(store_dir),
        ..Default::default()
    };
    for (_, rec) in Registry::new(store_dir).all() {
        if !rec.wanted || !rec.worktree.is_dir() {
            continue;
        }
        match kache_fs::mount_health(rec.mountpoint()) {
            MountHealth::Healthy => continue,
            MountHealth::Broken(_) if rec.pid.is_some_and(is_our_server) => {
                round
                    .problems
                    .push(format!("{}: does not answer", rec.target.display()));
                continue;
            }
            _ => {}
        }
        match mount_worktree(store_dir, &rec.worktree, false, false) {
            Ok((_, child)) => round.started.extend(child),
            Err(e) => round
                .problems
                .push(format!("{}: {e}", rec.worktree.display())),
        }
    }
    round
}
