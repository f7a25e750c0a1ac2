//! What a build is told about its worktree's mount, by the wrapper.
//!
//! cargo asks rustc for its version (`rustc -vV`, through the wrapper) before it touches the
//! target directory, whenever its cached answer (kept in the target directory) cannot be read:
//! exactly when the mount is dead, unmounted, emptied or replaced. That call looks at the
//! worktree's mount: a mount whose server died is remounted on the spot (so the build goes on
//! into it), a removed link is given the moment its server needs to put it back. cargo shows
//! nothing a version query prints, so what there is to say is left as a *notice* for the build
//! (keyed by the cargo process), and the build's first compile prints it: one line naming the
//! mount and the command that fixes it.
//!
//! Costs: on a compile, one `stat` (is there a notice for this build?); the rest only on
//! version and `--print` queries. Must never: fail or slow down a compile, or print twice in one
//! build.

use std::ffi::OsString;
use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use kache_fs::MountHealth;

use super::layout::{self, TargetState};
use super::lifecycle::mount_worktree;
use super::server::is_our_server;
use super::{find_worktree, target_of, MountRecord, Registry};

/// The wrapper's hook, called once per wrapper call before anything else (`rustc`: the
/// compiler is rustc or clippy-driver).
pub fn at_wrapper_start(store_dir: &Path, rustc: bool, args: &[OsString]) {
    if is_query(args) {
        if rustc {
            look_at_worktree(store_dir);
        }
    } else {
        print_pending(store_dir);
    }
}

/// `rustc -vV` and `--print` queries: cargo's, before it uses the target directory.
fn is_query(args: &[OsString]) -> bool {
    args.iter()
        .any(|a| a == "-vV" || a == "--version" || a.as_encoded_bytes().starts_with(b"--print"))
}

/// Where this build's notice is kept: one file per cargo process (the wrapper's parent).
/// `None` where the parent cannot be known; then there are no notices.
fn notice_path(store_dir: &Path) -> Option<PathBuf> {
    let build = kache_platform::process::parent_id()?;
    Some(store_dir.join("mount-notices").join(build.to_string()))
}

/// How long a notice waits for its build's first compile: cargo starts compiling within a
/// second or two of asking rustc's version. An older one belongs to a build that compiled
/// nothing, and its process id may name another process by now.
const NOTICE_LIFE: Duration = Duration::from_secs(60);

fn print_pending(store_dir: &Path) {
    let Some(path) = notice_path(store_dir) else {
        return;
    };
    let Ok(meta) = fs::metadata(&path) else {
        return;
    };
    let fresh = meta
        .modified()
        .is_ok_and(|t| t.elapsed().is_ok_and(|age| age < NOTICE_LIFE));
    let text = fs::read_to_string(&path).unwrap_or_default();
    // Parallel compiles of one build race here: whoever removes the file says it.
    if fs::remove_file(&path).is_ok() && fresh {
        eprint!("{text}");
    }
}

fn leave_notice(store_dir: &Path, line: &str) {
    let Some(path) = notice_path(store_dir) else {
        return;
    };
    let Some(dir) = path.parent() else { return };
    let _ = fs::create_dir_all(dir);
    // Notices of builds that never compiled anything.
    let old = SystemTime::now() - NOTICE_LIFE;
    for e in fs::read_dir(dir).into_iter().flatten().flatten() {
        if e.metadata()
            .and_then(|m| m.modified())
            .is_ok_and(|t| t < old)
        {
            let _ = fs::remove_file(e.path());
        }
    }
    let _ = fs::write(&path, format!("kache: {line}\n"));
}

/// The worktree of the current directory, if kache has a mount for it: checked, repaired when
/// that is safe, and a notice left when there is something to say.
fn look_at_worktree(store_dir: &Path) {
    let Some(wt) = std::env::current_dir().ok().and_then(|d| find_worktree(&d)) else {
        return;
    };
    let target = target_of(&wt);
    let reg = Registry::new(store_dir);
    let Some(rec) = reg.load(&Registry::id_for(&target)) else {
        return;
    };
    if let Some(line) = diagnose(store_dir, &rec) {
        leave_notice(store_dir, &line);
    }
}

/// What to do and say about a registered mount, seen from a build in its worktree.
fn diagnose(store_dir: &Path, rec: &MountRecord) -> Option<String> {
    let (wt, target) = (rec.worktree.display(), rec.target.display());
    let mountpoint = rec.mountpoint();
    let state = layout::target_state(&rec.target, mountpoint);
    match state {
        TargetState::Linked if !rec.wanted => Some(format!(
            "{target} is unmounted (`kache unmount`): this build writes plain files there; \
             `kache mount {wt}` mounts it again and keeps them"
        )),
        // After `cargo clean` (the link went): put it back, into the emptied mount.
        TargetState::Missing if rec.wanted => match mount_worktree(store_dir, &rec.worktree, false, false) {
            Ok(_) => None,
            Err(e) => Some(format!(
                "{target} was removed and could not be linked to its mount again ({e}): \
                 this build is not cached by reference; `kache mount {wt}`"
            )),
        },
        TargetState::Linked => match kache_fs::mount_health(mountpoint) {
            MountHealth::Healthy => None,
            MountHealth::Broken(why) if rec.pid.is_some_and(is_our_server) => Some(format!(
                "the mount of {target} does not answer ({why}): \
                 `kache unmount --force {wt}`, then `kache mount {wt}`"
            )),
            _ => Some(repair(store_dir, rec)),
        },
        TargetState::PlainDir { .. } if rec.wanted => Some(format!(
            "{target} is a plain directory, not kache's mount (made while its link was gone), so \
             this build is not cached by reference: `kache mount --force {wt}` moves it into the mount"
        )),
        _ => None,
    }
}

/// Remounts a wanted mount whose server is gone (what the daemon would do at its next round),
/// so the build goes on into it. If that fails, the dead mount is taken down, so the build
/// writes a plain directory instead of failing on "Transport endpoint is not connected".
fn repair(store_dir: &Path, rec: &MountRecord) -> String {
    let (wt, target) = (rec.worktree.display(), rec.target.display());
    match mount_worktree(store_dir, &rec.worktree, false, false) {
        Ok(_) => format!(
            "the mount of {target} had lost its server: remounted it \
             (what `kache mount {wt}` does)"
        ),
        Err(e) => {
            let _ = kache_fs::unmount(rec.mountpoint(), true);
            format!(
                "the mount of {target} is down and could not be remounted ({e}); this build is \
                 not cached by reference: fix that, then `kache mount {wt}`"
            )
        }
    }
}
