//! Where the bytes of a placed file come from: its blob, opened read-only.
//!
//! Owns: opening blobs, through a read-only view of the blob directory when there is one (so
//! a mistake fails with EROFS instead of corrupting the store). Must never: open a blob for
//! writing, or serve a blob whose size is not the placement's.

use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::PathBuf;
use std::sync::Arc;

use crate::placement::Blob;
use crate::sys;
use crate::BlobSource;

pub(crate) struct Blobs {
    source: Arc<dyn BlobSource>,
    /// `(blob root, read-only view of it)`: blobs are opened through the view.
    view: Option<(PathBuf, OwnedFd)>,
}

impl Blobs {
    pub(crate) fn new(source: Arc<dyn BlobSource>, view: Option<(PathBuf, OwnedFd)>) -> Blobs {
        Blobs { source, view }
    }

    pub(crate) fn source(&self) -> &dyn BlobSource {
        self.source.as_ref()
    }

    /// Opens a blob for reading, through the read-only view when there is one.
    pub(crate) fn open(&self, blob: &Blob) -> io::Result<File> {
        let path = self
            .source
            .blob_path(&blob.hash)
            .ok_or_else(|| io::Error::from_raw_os_error(libc::EIO))?;
        let file = match &self.view {
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
}
