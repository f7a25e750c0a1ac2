//! kache-platform: every operating-system difference kache depends on lives here.
//!
//! The rest of kache calls these functions and never writes `cfg(unix)` /
//! `cfg(windows)` itself: file locks, placing a blob at a path (reflink,
//! hardlink or copy), atomic file writes, fresh mtimes, path normalization,
//! processes and signals, watching directories, symlinks and disk usage.
//!
//! Nothing in this crate knows about compilers or the store's layout.

pub mod atomic;
pub mod ipc;
pub mod lock;
pub mod path;
pub mod place;
pub mod process;
pub mod service;
pub mod watch;

pub use atomic::{replace_unsynced, write_atomic, AtomicFile};
pub use lock::{FileLock, LockMode};
pub use path::{normalize_path, NormalizedPath, PathKind};
pub use place::{
    clone_into_new, clone_or_copy, place_file, remove_readonly_outputs, set_mtime_now,
    HardlinkPolicy, PlaceMethod,
};

pub mod stat;
pub use stat::{
    copy_symlink, disk_usage, file_mode, file_signature, symlink_dir, symlink_file, FileSignature,
};
