//! How a worktree reaches its mount: the worktree's target directory is a symlink to the mount
//! point, `$KACHE_DIR/mounts/<id>/mnt`, which lives outside the worktree.
//!
//! Why a link and not the target itself as the mount point: the kernel refuses to remove a
//! mount point (EBUSY, whatever the filesystem does), so `cargo clean`, `rm -rf WT` and
//! `git worktree remove` deleted everything in a mounted target and then failed. A link is
//! removed like a file; kache notices and either empties the mount and links it again (only the
//! link went: that is `cargo clean`), or releases the mount (the worktree went).
//!
//! Owns: the link, what a target path holds as kache sees it, emptying an upper directory that
//! is not being served, keeping the link out of `git status`. Must never: remove or replace a
//! target that is neither kache's link nor an empty directory (cargo's files are the user's
//! until they ask to import them).

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::process::Command;

/// What a worktree's target path holds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TargetState {
    /// kache's link to this mount's mount point.
    Linked,
    /// Nothing: the link was removed (`cargo clean`, `rm -rf target`) or never made.
    Missing,
    /// A real directory, e.g. one cargo made while the link was gone.
    PlainDir { empty: bool },
    /// A link into kache's mounts that is not this mount's (a moved or released worktree).
    StaleLink,
    /// Anything else (a user's own symlink, a file): never touched.
    Foreign,
}

/// What `target` holds, for the mount whose mount point is `mountpoint`.
pub fn target_state(target: &Path, mountpoint: &Path) -> TargetState {
    let meta = match fs::symlink_metadata(target) {
        Ok(m) => m,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return TargetState::Missing,
        Err(_) => return TargetState::Foreign,
    };
    if meta.is_symlink() {
        let dest = fs::read_link(target).unwrap_or_default();
        if dest == mountpoint {
            return TargetState::Linked;
        }
        // `<mounts>/<id>/mnt`: the shape of every link kache makes.
        let ours = dest.file_name().is_some_and(|n| n == "mnt")
            && dest.parent().and_then(Path::parent) == mountpoint.parent().and_then(Path::parent);
        return if ours {
            TargetState::StaleLink
        } else {
            TargetState::Foreign
        };
    }
    if meta.is_dir() {
        let empty = fs::read_dir(target).is_ok_and(|mut d| d.next().is_none());
        return TargetState::PlainDir { empty };
    }
    TargetState::Foreign
}

/// Makes `target` kache's link to `mountpoint` (parents created; an existing correct link is
/// kept). Fails if something else is there.
pub fn link_target(target: &Path, mountpoint: &Path) -> io::Result<()> {
    if let Some(parent) = target.parent() {
        fs::create_dir_all(parent)?;
    }
    match kache_platform::symlink_dir(mountpoint, target) {
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
            if target_state(target, mountpoint) == TargetState::Linked {
                Ok(())
            } else {
                Err(e)
            }
        }
        other => other,
    }
}

/// Removes `target` if it is kache's link (this mount's or a stale one); true if it did.
pub fn unlink_target(target: &Path, mountpoint: &Path) -> bool {
    matches!(
        target_state(target, mountpoint),
        TargetState::Linked | TargetState::StaleLink
    ) && fs::remove_file(target).is_ok()
}

/// Deletes everything in an upper directory that no server serves (what `cargo clean` meant
/// when the link was removed while the mount was down).
pub fn empty_upper(upper: &Path) -> io::Result<()> {
    let entries = match fs::read_dir(upper) {
        Ok(d) => d,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    for e in entries {
        let e = e?;
        if e.file_type()?.is_dir() {
            fs::remove_dir_all(e.path())?;
        } else {
            fs::remove_file(e.path())?;
        }
    }
    Ok(())
}

/// Keeps the link out of `git status` (so `git worktree remove` without `--force` accepts the
/// worktree): a `target/` ignore pattern matches directories only, not a link named `target`.
/// When git does not ignore the link, `/target` (the target's path in the worktree) is added to
/// the repository's `info/exclude`, the file git keeps for local, unshared ignores.
pub fn ignore_in_git(worktree: &Path, target: &Path) {
    let Ok(rel) = target.strip_prefix(worktree) else {
        return; // outside the worktree: git never sees it
    };
    let git = |args: &[&str]| {
        Command::new("git")
            .current_dir(worktree)
            .args(args)
            .output()
            .ok()
    };
    let rel = rel.to_string_lossy();
    match git(&["check-ignore", "-q", &rel]).and_then(|o| o.status.code()) {
        Some(1) => {} // not ignored
        _ => return,  // ignored, or not a git worktree
    }
    let Some(common) = git(&["rev-parse", "--git-common-dir"])
        .filter(|o| o.status.success())
        .map(|o| PathBuf::from(String::from_utf8_lossy(&o.stdout).trim()))
    else {
        return;
    };
    let exclude = worktree.join(common).join("info").join("exclude");
    let line = format!("/{rel}");
    let text = fs::read_to_string(&exclude).unwrap_or_default();
    if text.lines().any(|l| l.trim() == line) {
        return;
    }
    let mut text = text;
    if !text.is_empty() && !text.ends_with('\n') {
        text.push('\n');
    }
    text.push_str(&format!(
        "# kache mount: {rel} is a symlink to the worktree's mount\n{line}\n"
    ));
    if let Some(dir) = exclude.parent() {
        let _ = fs::create_dir_all(dir);
    }
    let _ = fs::write(&exclude, text);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_target_is_linked_missing_plain_stale_or_foreign() {
        let tmp = tempfile::tempdir().unwrap();
        let mounts = tmp.path().join("mounts");
        let mnt = mounts.join("aaaa/mnt");
        let other = mounts.join("bbbb/mnt");
        let target = tmp.path().join("wt/target");
        assert_eq!(target_state(&target, &mnt), TargetState::Missing);
        link_target(&target, &mnt).unwrap();
        assert_eq!(target_state(&target, &mnt), TargetState::Linked);
        link_target(&target, &mnt).unwrap();
        assert_eq!(target_state(&target, &other), TargetState::StaleLink);
        assert!(unlink_target(&target, &mnt));
        fs::create_dir(&target).unwrap();
        assert_eq!(
            target_state(&target, &mnt),
            TargetState::PlainDir { empty: true }
        );
        assert!(link_target(&target, &mnt).is_err());
        assert!(!unlink_target(&target, &mnt), "a real directory stays");
        fs::remove_dir(&target).unwrap();
        kache_platform::symlink_dir(tmp.path(), &target).unwrap();
        assert_eq!(target_state(&target, &mnt), TargetState::Foreign);
        assert!(!unlink_target(&target, &mnt), "a user's link stays");
    }
}
