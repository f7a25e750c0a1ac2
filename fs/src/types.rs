//! The data the mount API takes and gives, the same on every OS: what to place, where to
//! mount, what a mount looks like from outside. Only the functions that act on them differ by
//! OS (the FUSE backend on Linux, `unsupported.rs` elsewhere).

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// One file to place: `path` (relative to the mount root) will read as the blob `hash`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Placement {
    /// Path relative to the mount root, without `..`; parent directories are created.
    pub path: PathBuf,
    /// blake3 of the content, 64 lowercase hex characters.
    pub hash: String,
    /// Size of the blob in bytes; must match the blob file.
    pub size: u64,
    /// Permission bits (e.g. `0o644`, `0o755` for executables).
    pub mode: u32,
}

/// Where to mount.
#[derive(Clone, Debug)]
pub struct MountOptions {
    /// The directory to cover (kache mounts at `$KACHE_DIR/mounts/<id>/mnt`, the worktree's
    /// target being a link to it).
    pub mountpoint: PathBuf,
    /// Per-mount state: `upper/` holds every ordinary file and every placement marker.
    pub state_dir: PathBuf,
}

impl MountOptions {
    pub fn new(mountpoint: impl Into<PathBuf>, state_dir: impl Into<PathBuf>) -> MountOptions {
        MountOptions {
            mountpoint: mountpoint.into(),
            state_dir: state_dir.into(),
        }
    }
}

/// How a mount point looks from outside.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MountHealth {
    /// A kache mount that answers.
    Healthy,
    /// No kache mount there.
    NotMounted,
    /// A kache mount whose server is gone or does not answer; `unmount(_, true)` clears it.
    Broken(String),
}

/// Counts over a mount's state directory (works mounted or not).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MountStats {
    /// Files whose bytes are a blob.
    pub placed_files: u64,
    /// Their logical size.
    pub placed_bytes: u64,
    /// Bytes of ordinary files written into the mount.
    pub upper_bytes: u64,
    /// Disk the upper directory really takes (allocated blocks of every file, marker and
    /// directory in it, each inode once): what this mount costs beyond the shared store.
    pub disk_bytes: u64,
}

/// One placed file found in a state directory.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PlacedFile {
    /// Path relative to the mount root (one of its names if hard-linked).
    pub path: PathBuf,
    /// Blob hash.
    pub hash: String,
    /// Blob size.
    pub size: u64,
}
