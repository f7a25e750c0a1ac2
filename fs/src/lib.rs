//! kache-fs: the virtual `target/` filesystem (FUSE) of kache.
//!
//! Owns: serving one directory (a worktree's target) whose ordinary files live in an *upper
//! directory* on disk and whose *placed files* read as read-only blobs handed in through
//! [`BlobSource`]. Must never: write into a blob (a write, truncate or fallocate copies the file
//! up first; blobs are only opened read-only, through a read-only bind mount when possible),
//! know about compilers or the store's layout, or block a serving thread on the network.
//!
//! # How a mount is laid out
//! `state_dir/upper/` mirrors the mount. A placed file is an empty *marker* file in it carrying
//! the xattr `user.kache.blob = "<hash>:<size>"`; its mode and mtime are the marker's. So the
//! placement table is the upper directory itself: renames, hard links (cargo links `deps/x` to
//! `x` and compares dev+ino), unlinks and remounts need no extra bookkeeping, and a remount shows
//! the same files with the same mtimes and inode numbers (FUSE node id = upper inode number).
//! Copy-up writes the blob's bytes into the marker (reflink when possible) and drops the xattr,
//! keeping the inode, so every hard link sees the change.
//!
//! # How it is served
//! Without `open`: files are read and written by inode and their contents stay in the kernel's
//! page cache, and lookups (of names that exist and that do not) and attributes are cached for
//! minutes, so a build that changes nothing costs the server almost no requests. `fs.rs` says
//! why and what it costs.
//!
//! # Placing files
//! Only through the control file `<mount>/.kache-control` (hidden from listings); see
//! [`place`], [`clear`] and [`is_kache_mount`].
//!
//! # When the server dies
//! A keeper process holds the mount's FUSE connection; when the server dies it serves the
//! connection itself ([`resume`], after [`keep`] returned the descriptor): see `takeover.rs`.
//!
//! # Limits
//! Every inode the kernel has looked up holds one O_PATH descriptor in the server until the
//! kernel forgets it; the server raises its soft `RLIMIT_NOFILE` to the hard limit.

mod types;
pub use types::{MountHealth, MountOptions, MountStats, PlacedFile, Placement};

// The FUSE backend (Linux only: O_PATH, /proc/self/fd, renameat2).
#[cfg(target_os = "linux")]
mod blobs;
#[cfg(target_os = "linux")]
mod control;
#[cfg(target_os = "linux")]
mod fs;
#[cfg(target_os = "linux")]
mod inodes;
#[cfg(target_os = "linux")]
mod mount;
#[cfg(target_os = "linux")]
mod placement;
#[cfg(target_os = "linux")]
mod state;
#[cfg(target_os = "linux")]
mod sys;
#[cfg(target_os = "linux")]
mod takeover;

#[cfg(target_os = "linux")]
pub use control::{clear, is_kache_mount, place, place_at};
#[cfg(target_os = "linux")]
pub use mount::{
    mount, mount_foreground, mount_health, mount_stats, resume, scan_placements, unavailable,
    unmount, MountHandle,
};
#[cfg(target_os = "linux")]
pub use takeover::{keep, Keeper};

// Elsewhere the same functions refuse every mount, until a backend (WinFsp) fills them.
#[cfg(not(target_os = "linux"))]
mod unsupported;
#[cfg(not(target_os = "linux"))]
pub use unsupported::{
    clear, is_kache_mount, mount, mount_foreground, mount_health, mount_stats, place, place_at,
    scan_placements, unavailable, unmount, MountHandle,
};

/// Where the bytes of placed files come from.
pub trait BlobSource: Send + Sync + 'static {
    /// Path of the blob file holding these bytes (read-only, never written), or None if absent.
    fn blob_path(&self, hash: &str) -> Option<std::path::PathBuf>;

    /// The directory under which every `blob_path` lies, if there is one. When given (and the
    /// server is root), blobs are opened through a read-only bind mount of it.
    fn blob_root(&self) -> Option<std::path::PathBuf> {
        None
    }
}
