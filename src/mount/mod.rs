//! `kache mount`: a worktree's target directory served by kache-fs over the store.
//!
//! Layout: the filesystem is mounted at `$KACHE_DIR/mounts/<id>/mnt`, next to its `upper/`
//! directory and `state.json`, and the worktree's target is a symlink to it ([`layout`] says
//! why). Owns: the registry of mounts, the per-mount server process (`kache mount
//! --foreground`, spawned detached by `kache mount`, by [`supervise`], which the daemon runs,
//! and by the wrapper when a build finds its mount dead), repairing and releasing mounts, what
//! the wrapper says about a worktree's mount ([`notice`]), and the wrapper's placement step
//! ([`place_outputs`]). Must never: delete a mount's upper directory unless its link or its
//! worktree was removed or the user asked to forget it, unmount anything that is not a kache
//! mount, or let a placement failure fail a build.
//!
//! One server process per mount (rather than one for all, inside the daemon) because the
//! daemon re-executes itself on upgrade, which would drop every FUSE session it held; a
//! mount's server survives daemon restarts and upgrades, and the daemon only supervises.

pub mod cli;
mod layout;
mod lifecycle;
pub mod notice;
mod registry;
mod server;
mod worktree;

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use kache_fs::{MountHealth, Placement};
use serde::Serialize;

pub use layout::TargetState;
pub use lifecycle::{
    locate, mount_worktree, release, release_orphans, supervise, unmount_worktree, Supervision,
};
pub use registry::{MountRecord, Registry};
pub use worktree::WorktreeCommand;

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
        // CARGO_TARGET_DIR outranks both (as in cargo): asserted only when unset.
        let env_free = std::env::var_os("CARGO_TARGET_DIR").is_none();
        if env_free {
            assert_eq!(target_of(wt.path()), wt.path().join("target"));
        }
        fs::create_dir(wt.path().join(".cargo")).unwrap();
        fs::write(
            wt.path().join(".cargo/config.toml"),
            "[build]\ntarget-dir = \"out/t\"\n",
        )
        .unwrap();
        if env_free {
            assert_eq!(target_of(wt.path()), wt.path().join("out/t"));
        }
    }
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

/// One row of `kache mounts`.
#[derive(Debug, Serialize)]
pub struct MountStatus {
    pub id: String,
    pub worktree: PathBuf,
    pub target: PathBuf,
    /// Where the filesystem is mounted (the target links to it).
    pub mountpoint: PathBuf,
    pub state: &'static str,
    /// What the target path holds: `linked` (kache's link to the mount), `missing`, `plain`
    /// (a real directory: builds there are not cached by reference), `stale`, `foreign`.
    pub target_link: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub problem: Option<String>,
    pub wanted: bool,
    pub pid: Option<u32>,
    pub placed_files: u64,
    pub placed_bytes: u64,
    pub upper_bytes: u64,
    /// What `du` shows for the target: placed and ordinary bytes together.
    pub apparent_bytes: u64,
    /// What this worktree really costs on disk: the upper directory's allocated blocks. The
    /// placed bytes are blobs of the shared store, paid once for every worktree.
    pub disk_bytes: u64,
}

/// State and sizes of every registered mount.
pub fn list(store_dir: &Path) -> Vec<MountStatus> {
    let reg = Registry::new(store_dir);
    reg.all()
        .into_iter()
        .map(|(id, rec)| {
            let mountpoint = rec.mountpoint().to_path_buf();
            let health = kache_fs::mount_health(&mountpoint);
            let stats = kache_fs::mount_stats(&reg.dir(&id)).unwrap_or_default();
            let target_link = match layout::target_state(&rec.target, &mountpoint) {
                TargetState::Linked => "linked",
                TargetState::Missing => "missing",
                TargetState::PlainDir { .. } => "plain",
                TargetState::StaleLink => "stale",
                TargetState::Foreign => "foreign",
            };
            MountStatus {
                state: state_label(&health),
                problem: match health {
                    MountHealth::Broken(why) => Some(why),
                    _ => None,
                },
                id,
                worktree: rec.worktree,
                target: rec.target,
                mountpoint,
                target_link,
                wanted: rec.wanted,
                pid: rec.pid,
                placed_files: stats.placed_files,
                placed_bytes: stats.placed_bytes,
                upper_bytes: stats.upper_bytes,
                apparent_bytes: stats.placed_bytes + stats.upper_bytes,
                disk_bytes: stats.disk_bytes,
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
pub fn place_outputs(mount_root: &Path, outputs: &[Placement]) -> io::Result<u64> {
    if outputs.is_empty() {
        return Ok(0);
    }
    kache_fs::place(mount_root, outputs)?;
    Ok(outputs.iter().map(|o| o.size).sum())
}
