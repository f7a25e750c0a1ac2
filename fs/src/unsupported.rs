//! The mount API on an OS without a mount backend yet (everything but Linux).
//!
//! Same functions as the FUSE backend (the data types are shared: `types.rs`), so the rest of
//! kache compiles unchanged: every mount is refused with `Unsupported` and a reason, nothing is
//! ever a kache mount, and a state directory holds no placements. A WinFsp backend for Windows replaces this module
//! (behind a cargo feature that is off by default if it uses the GPL `winfsp` binding).

use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::{BlobSource, MountHealth, MountOptions, MountStats, PlacedFile, Placement};

const NO_BACKEND: &str = "kache mount needs FUSE on Linux; this OS has no mount backend yet";

fn unsupported() -> io::Error {
    io::Error::new(io::ErrorKind::Unsupported, NO_BACKEND)
}

/// Why a mount cannot be made here: always, on this OS.
pub fn unavailable() -> Option<String> {
    Some(NO_BACKEND.to_string())
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

    /// Never: there is no server here to take over from.
    pub fn resumed(&self) -> bool {
        false
    }
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

pub fn place_at(
    _mount_root: &Path,
    _placements: &[(Placement, std::time::SystemTime)],
) -> io::Result<()> {
    Err(unsupported())
}

pub fn clear(_mount_root: &Path) -> io::Result<usize> {
    Err(unsupported())
}

pub fn is_kache_mount(_dir: &Path) -> bool {
    false
}
