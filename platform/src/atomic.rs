//! Atomic file creation: write to a temporary name in the destination's
//! directory, fsync, then rename over the destination. A crash at any point
//! leaves either no file or the complete file, never a partial one.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

static COUNTER: AtomicU64 = AtomicU64::new(0);

/// A temporary file that becomes `dest` on [`AtomicFile::commit`] and is
/// removed if dropped uncommitted.
pub struct AtomicFile {
    tmp: PathBuf,
    file: Option<File>,
}

/// A unique temporary name next to `dest` (same directory, so rename is atomic).
pub fn temp_name_in(dir: &Path) -> PathBuf {
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    dir.join(format!(".tmp.{}.{}.{}", std::process::id(), n, nanos))
}

impl AtomicFile {
    /// Creates a temporary file in `dir`, which must be on the same
    /// filesystem as the final destination.
    pub fn new_in(dir: &Path) -> io::Result<AtomicFile> {
        let tmp = temp_name_in(dir);
        let file = OpenOptions::new().write(true).create_new(true).open(&tmp)?;
        Ok(AtomicFile {
            tmp,
            file: Some(file),
        })
    }

    pub fn path(&self) -> &Path {
        &self.tmp
    }

    pub fn file(&mut self) -> &mut File {
        self.file.as_mut().expect("file present until commit")
    }

    /// fsyncs, applies `mode` (Unix permission bits), renames onto `dest`.
    pub fn commit(self, dest: &Path, mode: Option<u32>) -> io::Result<()> {
        self.finish(dest, mode, true)
    }

    /// Like [`AtomicFile::commit`] without the fsync: for files that are
    /// only accelerators or counters, where after a power loss an empty or
    /// old file is acceptable but a torn one is not (rename still gives that).
    pub fn commit_unsynced(self, dest: &Path, mode: Option<u32>) -> io::Result<()> {
        self.finish(dest, mode, false)
    }

    fn finish(mut self, dest: &Path, mode: Option<u32>, sync: bool) -> io::Result<()> {
        let file = self.file.take().expect("file present until commit");
        if sync {
            file.sync_all()?;
        }
        if let Some(mode) = mode {
            set_mode(&file, mode)?;
        }
        drop(file);
        fs::rename(&self.tmp, dest)?;
        Ok(())
    }
}

impl Drop for AtomicFile {
    fn drop(&mut self) {
        if self.file.is_some() {
            let _ = fs::remove_file(&self.tmp);
        }
    }
}

#[cfg(unix)]
fn set_mode(file: &File, mode: u32) -> io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    file.set_permissions(fs::Permissions::from_mode(mode))
}

#[cfg(not(unix))]
fn set_mode(file: &File, mode: u32) -> io::Result<()> {
    let mut p = file.metadata()?.permissions();
    p.set_readonly(mode & 0o200 == 0);
    file.set_permissions(p)
}

/// Writes `bytes` to `dest` atomically (temp file in `tmp_dir`, fsync, rename).
pub fn write_atomic(
    tmp_dir: &Path,
    dest: &Path,
    bytes: &[u8],
    mode: Option<u32>,
) -> io::Result<()> {
    let mut f = AtomicFile::new_in(tmp_dir)?;
    f.file().write_all(bytes)?;
    f.commit(dest, mode)
}

/// Replaces `dest` with `bytes` by rename, without fsync (see
/// [`AtomicFile::commit_unsynced`]).
pub fn replace_unsynced(tmp_dir: &Path, dest: &Path, bytes: &[u8]) -> io::Result<()> {
    let mut f = AtomicFile::new_in(tmp_dir)?;
    f.file().write_all(bytes)?;
    f.commit_unsynced(dest, None)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn write_atomic_replaces_whole_file_and_leaves_no_temp() {
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("x");
        write_atomic(dir.path(), &dest, b"one", None).unwrap();
        write_atomic(dir.path(), &dest, b"two!", Some(0o444)).unwrap();
        assert_eq!(fs::read(&dest).unwrap(), b"two!");
        let names: Vec<_> = fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(names.len(), 1);
    }

    #[test]
    fn dropped_atomic_file_leaves_nothing() {
        let dir = tempfile::tempdir().unwrap();
        {
            let mut f = AtomicFile::new_in(dir.path()).unwrap();
            f.file().write_all(b"partial").unwrap();
        }
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 0);
    }
}
