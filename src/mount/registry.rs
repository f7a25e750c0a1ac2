//! The registry of mounts: `$KACHE_DIR/mounts/<id>/state.json` (next to the filesystem's
//! `upper/`), one directory per mount. Must never: remove a mount's directory except in
//! [`Registry::forget`].

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use kache_platform::{FileLock, LockMode};
use serde::{Deserialize, Serialize};

use super::{err, MountError};

/// What the registry remembers about one mount.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct MountRecord {
    pub worktree: PathBuf,
    /// The worktree's target directory: kache's symlink to `mountpoint`.
    pub target: PathBuf,
    /// Where the filesystem is mounted (`mounts/<id>/mnt`). Absent in records written before
    /// targets became links, when the target itself was the mount point.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mountpoint: Option<PathBuf>,
    /// The target link was made. If it is missing later, someone removed it (`cargo clean`):
    /// the mount's files go too, as they asked.
    #[serde(default)]
    pub linked: bool,
    /// The user wants it mounted: set by `kache mount`, cleared by `kache unmount`. What a
    /// daemon start remounts.
    pub wanted: bool,
    /// Pid of the server process last started for it.
    #[serde(default)]
    pub pid: Option<u32>,
    /// Unix seconds when first registered.
    #[serde(default)]
    pub created: u64,
}

impl MountRecord {
    /// Where this mount is (or was last) mounted.
    pub fn mountpoint(&self) -> &Path {
        self.mountpoint.as_deref().unwrap_or(&self.target)
    }
}

/// `$KACHE_DIR/mounts/`: one directory per mount, named by a digest of its target path.
pub struct Registry {
    root: PathBuf,
}

impl Registry {
    pub fn new(store_dir: &Path) -> Registry {
        Registry {
            root: store_dir.join("mounts"),
        }
    }

    /// `$KACHE_DIR/mounts`.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Stable id of the mount covering `target` (an absolute, canonical path).
    pub fn id_for(target: &Path) -> String {
        let h = blake3::hash(target.as_os_str().as_encoded_bytes());
        h.to_hex()[..16].to_string()
    }

    /// The mount's state directory (also the filesystem's `state_dir`).
    pub fn dir(&self, id: &str) -> PathBuf {
        self.root.join(id)
    }

    /// Where mount `id` is mounted: inside its state directory, outside any worktree (the
    /// kernel refuses to remove a mount point, so a worktree holding one could not be removed).
    pub fn mountpoint(&self, id: &str) -> PathBuf {
        self.dir(id).join("mnt")
    }

    /// The mount registered for `worktree`, found by its path even when the worktree is gone
    /// (and so cannot be canonicalized).
    pub fn find_worktree(&self, worktree: &Path) -> Option<(String, MountRecord)> {
        self.all().into_iter().find(|(_, r)| r.worktree == worktree)
    }

    pub fn load(&self, id: &str) -> Option<MountRecord> {
        let text = fs::read(self.dir(id).join("state.json")).ok()?;
        serde_json::from_slice(&text).ok()
    }

    pub fn save(&self, id: &str, rec: &MountRecord) -> io::Result<()> {
        let dir = self.dir(id);
        fs::create_dir_all(&dir)?;
        let tmp = dir.join(format!("state.json.{}", std::process::id()));
        fs::write(
            &tmp,
            serde_json::to_vec_pretty(rec).map_err(io::Error::other)?,
        )?;
        fs::rename(&tmp, dir.join("state.json"))
    }

    /// Every registered mount, sorted by worktree path.
    pub fn all(&self) -> Vec<(String, MountRecord)> {
        let mut v: Vec<(String, MountRecord)> = fs::read_dir(&self.root)
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| {
                let id = e.file_name().to_string_lossy().into_owned();
                self.load(&id).map(|r| (id, r))
            })
            .collect();
        v.sort_by(|a, b| a.1.worktree.cmp(&b.1.worktree));
        v
    }

    /// Serializes mount/unmount of one mount between processes (CLI, daemon, its server).
    pub(super) fn lock(&self, id: &str) -> Result<FileLock, MountError> {
        let dir = self.dir(id);
        fs::create_dir_all(&dir).map_err(|e| err(format!("{}: {e}", dir.display())))?;
        FileLock::acquire(&dir.join("lock"), LockMode::Exclusive)
            .map_err(|e| err(format!("locking {}: {e}", dir.display())))
    }

    /// The lock, if nobody holds it (a mount's server never waits for it: whoever holds it is
    /// changing the mount, and may be waiting for the server).
    pub(super) fn try_lock(&self, id: &str) -> Option<FileLock> {
        let lock = self.dir(id).join("lock");
        FileLock::try_acquire(&lock, LockMode::Exclusive)
            .ok()
            .flatten()
    }

    /// Removes the mount's state, its upper directory included (unpins its blobs).
    pub fn forget(&self, id: &str) -> io::Result<()> {
        match fs::remove_dir_all(self.dir(id)) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
    }
}
