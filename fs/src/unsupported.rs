//! The mount API on an OS without a mount backend yet (everything but Linux).
//!
//! Same public names and shapes as the FUSE backend, so the rest of kache compiles unchanged:
//! every mount is refused with `Unsupported` and a reason, nothing is ever a kache mount, and
//! a state directory holds no placements. A WinFsp backend for Windows replaces this module
//! (behind a cargo feature that is off by default if it uses the GPL `winfsp` binding).

use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::BlobSource;

fn unsupported() -> io::Error {
    io::Error::new(
        io::ErrorKind::Unsupported,
        "kache mount needs FUSE on Linux; this OS has no mount backend yet",
    )
}

/// One file to place: `path` (relative to the mount root) will read as the blob `hash`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Placement {
    pub path: PathBuf,
    pub hash: String,
    pub size: u64,
    pub mode: u32,
}

/// Where and how to mount.
#[derive(Clone, Debug)]
pub struct MountOptions {
    pub mountpoint: PathBuf,
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

/// Never constructed here: [`mount`] always fails.
pub struct MountHandle {
    mountpoint: PathBuf,
}

impl MountHandle {
    pub fn mountpoint(&self) -> &Path {
        &self.mountpoint
    }

    pub fn clear(&self) -> io::Result<usize> {
        Err(unsupported())
    }

    pub fn unmount(self) -> io::Result<()> {
        Ok(())
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MountHealth {
    Healthy,
    NotMounted,
    Broken(String),
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MountStats {
    pub placed_files: u64,
    pub placed_bytes: u64,
    pub upper_bytes: u64,
    pub disk_bytes: u64,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PlacedFile {
    pub path: PathBuf,
    pub hash: String,
    pub size: u64,
}

pub fn mount(_opts: MountOptions, _blobs: Arc<dyn BlobSource>) -> io::Result<MountHandle> {
    Err(unsupported())
}

pub fn mount_foreground(_opts: MountOptions, _blobs: Arc<dyn BlobSource>) -> io::Result<()> {
    Err(unsupported())
}

pub fn unmount(_mountpoint: &Path, _force: bool) -> io::Result<()> {
    Err(unsupported())
}

pub fn mount_health(_mountpoint: &Path) -> MountHealth {
    MountHealth::NotMounted
}

pub fn scan_placements(_state_dir: &Path) -> io::Result<Vec<PlacedFile>> {
    Ok(Vec::new())
}

pub fn mount_stats(_state_dir: &Path) -> io::Result<MountStats> {
    Ok(MountStats::default())
}

pub fn place(_mount_root: &Path, _placements: &[Placement]) -> io::Result<()> {
    Err(unsupported())
}

pub fn clear(_mount_root: &Path) -> io::Result<usize> {
    Err(unsupported())
}

pub fn is_kache_mount(_dir: &Path) -> bool {
    false
}
