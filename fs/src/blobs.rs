//! Where the bytes of a placed file come from: its blob, opened read-only.
//!
//! Owns: opening blobs, through a read-only view of the blob directory when there is one (so
//! a mistake fails with EROFS instead of corrupting the store). Must never: open a blob for
//! writing, or serve a blob whose size is not the placement's.

use std::fs::File;
use std::io;
use std::os::fd::OwnedFd;
use std::path::PathBuf;
use std::sync::Arc;

use rustix::fs::OFlags;
use rustix::io::Errno;

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
            .ok_or_else(|| io::Error::from(Errno::IO))?;
        let file = match &self.view {
            Some((root, view)) => match path.strip_prefix(root) {
                Ok(rel) => File::from(sys::openat(
                    view,
                    &sys::cstr(rel.as_os_str())?,
                    OFlags::RDONLY,
                    0,
                )?),
                Err(_) => File::open(&path)?,
            },
            None => File::open(&path)?,
        };
        if file.metadata()?.len() != blob.size {
            return Err(Errno::IO.into());
        }
        Ok(file)
    }
}
