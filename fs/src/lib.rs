//! kache-fs: the virtual `target/` filesystem (FUSE) of kache.
//!
//! Owns: serving one directory (a worktree's `target/`) whose ordinary files live in an
//! *upper directory* on disk and whose *placed files* read as read-only blobs handed in through
//! [`BlobSource`]. Must never: write into a blob (a write-open or truncate copies the file up
//! first; blobs are only opened read-only, through a read-only bind mount when possible),
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
//! # Placing files
//! Only through the control file `<mount>/.kache-control` (hidden from listings); see
//! [`place`] and [`is_kache_mount`].
//!
//! # `cargo clean`
//! cargo deletes everything inside `target/` (works: contents go through the mount) and then
//! fails to remove `target/` itself with EBUSY, because a mount point cannot be removed. The
//! mount stays, empty and usable; callers that wrap `cargo clean` should treat that final EBUSY
//! on the mount point as success.
//!
//! # Limits
//! Every inode the kernel has looked up holds one O_PATH descriptor in the server until the
//! kernel forgets it; the server raises its soft `RLIMIT_NOFILE` to the hard limit.

mod control;
mod fs;
mod mount;
mod sys;

pub use control::{is_kache_mount, place, place_at, Placement};
pub use mount::{
    mount, mount_foreground, mount_health, mount_stats, scan_placements, unmount, MountHandle,
    MountHealth, MountOptions, MountStats, PlacedFile,
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
