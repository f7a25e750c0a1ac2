//! The mount server where there is no mount backend (everything but Linux): nothing is ever
//! one of our servers, and starting or running one fails with the reason. Replaced by the real
//! server once `kache_fs` has a backend for the OS (WinFsp on Windows).

use std::io;
use std::path::Path;
use std::process::Child;

use super::{err, MountError};

pub(super) const PARENT_HOLDS_LOCK: &str = "KACHE_MOUNT_PARENT_LOCKED";

const NO_BACKEND: &str = "kache mount needs FUSE on Linux; this OS has no mount backend yet";

pub(super) fn is_our_server(_pid: u32) -> bool {
    false
}

pub(super) fn stop_server(_pid: u32, _kill: bool) {}

pub(super) fn spawn_server(
    _store_dir: &Path,
    _worktree: &Path,
    _state_dir: &Path,
    _target: &Path,
) -> Result<Child, MountError> {
    Err(err(NO_BACKEND.to_string()))
}

pub(super) fn serve(
    _store_dir: &Path,
    _target: &Path,
    _state_dir: &Path,
) -> io::Result<Option<i32>> {
    Err(io::Error::new(io::ErrorKind::Unsupported, NO_BACKEND))
}
