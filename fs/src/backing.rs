//! Where the bytes of an open file come from: blobs (read-only) and kernel passthrough.
//!
//! With FUSE passthrough the kernel reads (and for upper files writes) a *backing* file
//! directly; the server registers one backing id per inode and shares it among that inode's
//! opens. Owns: opening blobs (through a read-only view of the blob directory when there is
//! one), the per-inode backing cache, and the decision to use passthrough at all. Must never:
//! register or reuse a blob's backing for an open with write access (the write would land in
//! the blob), or serve a blob whose size is not the placement's.

use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};

use fuser::BackingId;

use crate::placement::Blob;
use crate::sys;
use crate::BlobSource;

/// What a passthrough backing id points at. A backing is reused only for the same target.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum BackingTarget {
    Blob(String),
    Upper,
}

/// One inode's registered backing, alive while an open of the inode holds it.
#[derive(Default)]
pub(crate) struct BackingSlot(Option<(BackingTarget, Weak<BackingId>)>);

impl BackingSlot {
    /// Whether an open still holds this inode's backing.
    pub(crate) fn in_use(&self) -> bool {
        self.0.as_ref().is_some_and(|(_, w)| w.strong_count() > 0)
    }
}

pub(crate) struct Backing {
    blobs: Arc<dyn BlobSource>,
    /// `(blob root, read-only view of it)`: blobs are opened through the view.
    blob_view: Option<(PathBuf, OwnedFd)>,
    /// Passthrough was asked for by the mount's options.
    pub(crate) wanted: bool,
    /// Passthrough was negotiated with the kernel and has not been refused since.
    pub(crate) on: AtomicBool,
}

impl Backing {
    pub(crate) fn new(
        blobs: Arc<dyn BlobSource>,
        blob_view: Option<(PathBuf, OwnedFd)>,
        wanted: bool,
    ) -> Backing {
        Backing {
            blobs,
            blob_view,
            wanted,
            on: AtomicBool::new(false),
        }
    }

    pub(crate) fn blobs(&self) -> &dyn BlobSource {
        self.blobs.as_ref()
    }

    /// Opens a blob for reading, through the read-only view when there is one.
    pub(crate) fn open_blob(&self, blob: &Blob) -> io::Result<File> {
        let path = self
            .blobs
            .blob_path(&blob.hash)
            .ok_or_else(|| io::Error::from_raw_os_error(libc::EIO))?;
        let file = match &self.blob_view {
            Some((root, view)) => match path.strip_prefix(root) {
                Ok(rel) => File::from(sys::openat(
                    view.as_raw_fd(),
                    &sys::cstr(rel.as_os_str())?,
                    libc::O_RDONLY,
                    0,
                )?),
                Err(_) => File::open(&path)?,
            },
            None => File::open(&path)?,
        };
        if file.metadata()?.len() != blob.size {
            return Err(io::Error::from_raw_os_error(libc::EIO));
        }
        Ok(file)
    }

    /// The backing id for this open, if passthrough may be used. The one rule that keeps blobs
    /// safe: a blob target is only ever registered or reused for an open without write access.
    pub(crate) fn backing_for(
        &self,
        slot: &mut BackingSlot,
        target: BackingTarget,
        writes: bool,
        file: &File,
        register: &dyn Fn(&File) -> io::Result<BackingId>,
    ) -> Option<Arc<BackingId>> {
        if !self.on.load(Ordering::Relaxed) {
            return None;
        }
        if writes && target != BackingTarget::Upper {
            return None;
        }
        if let Some((live_target, weak)) = &slot.0 {
            if let Some(live) = weak.upgrade() {
                return (*live_target == target).then_some(live);
            }
        }
        match register(file) {
            Ok(id) => {
                let id = Arc::new(id);
                slot.0 = Some((target, Arc::downgrade(&id)));
                Some(id)
            }
            Err(e) => {
                if matches!(e.raw_os_error(), Some(libc::EPERM) | Some(libc::ENOTTY)) {
                    // Not root or no kernel support: serve reads ourselves from now on.
                    self.on.store(false, Ordering::Relaxed);
                }
                None
            }
        }
    }

    /// Whether an open without a backing must be refused: the kernel allows one backing file
    /// per inode and fails other opens of it (EIO) while passthrough is on.
    pub(crate) fn blocks_plain_open(&self, slot: &BackingSlot) -> bool {
        self.on.load(Ordering::Relaxed) && slot.in_use()
    }
}
