//! Placing a blob at a path: reflink, else hardlink, else copy.
//!
//! This is the restore engine's last step. Rules it enforces:
//! - it never writes into the blob: every write goes to a new inode at `dest`
//!   (a reflink shares extents copy-on-write, a copy is private), and a
//!   hardlink is only made when the caller says the output is never rewritten
//!   in place;
//! - at most one hardlink consumer per blob: a blob whose link count is
//!   already above one is being used by another worktree's file, and stamping
//!   a fresh mtime on a shared inode would re-date that other file;
//! - the placed file gets a fresh mtime from the filesystem's own clock
//!   (through the descriptor, `futimens(fd, NULL)`), so cargo's mtime
//!   comparisons against files written by build scripts hold.

use std::collections::BTreeSet;
use std::fs::{self, File, OpenOptions};
use std::io;
use std::path::{Path, PathBuf};

/// How a file was placed; reported in stats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PlaceMethod {
    Reflink,
    Hardlink,
    Copy,
}

impl PlaceMethod {
    pub fn as_str(self) -> &'static str {
        match self {
            PlaceMethod::Reflink => "reflink",
            PlaceMethod::Hardlink => "hardlink",
            PlaceMethod::Copy => "copy",
        }
    }
}

/// Whether a hardlink may be used for this output.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HardlinkPolicy {
    /// Never hardlink (outputs that are rewritten in place, executables).
    Never,
    /// Hardlink if no other consumer holds a link to the blob.
    IfSoleConsumer,
}

/// Places the blob (already opened as `blob`, found at `blob_path`) at `dest`
/// with permission bits `mode`, replacing whatever is at `dest`.
///
/// The caller opens the blob before calling: an open descriptor keeps the
/// bytes alive even if eviction unlinks the blob's name meanwhile, so a
/// restore in progress never loses its source. A restore of many files
/// should use one [`Placer`] for all of them.
pub fn place_file(
    blob: &File,
    blob_path: &Path,
    dest: &Path,
    mode: u32,
    hardlink: HardlinkPolicy,
) -> io::Result<PlaceMethod> {
    Placer::default().place(blob, blob_path, dest, mode, hardlink)
}

/// Places the files of one restore, remembering the destination directories
/// where a clone has already failed (a filesystem without reflink, or not
/// the store's), so the files after the first go straight to a hardlink or a
/// copy. On ext4 a failed clone attempt costs a create, an ioctl and an
/// unlink per file, more than the hardlink it precedes. A wrong guess (a
/// clone refused for one file only) costs speed, never correctness.
#[derive(Debug, Default)]
pub struct Placer {
    // Ordered, not hashed: a HashSet seeds its hasher with a getrandom call.
    no_clone_dirs: BTreeSet<PathBuf>,
}

impl Placer {
    /// As [`place_file`].
    pub fn place(
        &mut self,
        blob: &File,
        blob_path: &Path,
        dest: &Path,
        mode: u32,
        hardlink: HardlinkPolicy,
    ) -> io::Result<PlaceMethod> {
        remove_if_present(dest)?;
        let dir = dest.parent().unwrap_or(Path::new(""));
        if !self.no_clone_dirs.contains(dir) {
            if sys::reflink_new(blob, dest, mode)? {
                return Ok(PlaceMethod::Reflink);
            }
            self.no_clone_dirs.insert(dir.to_path_buf());
        }
        if hardlink == HardlinkPolicy::IfSoleConsumer
            && sys::try_sole_hardlink(blob, blob_path, dest, mode)?
        {
            return Ok(PlaceMethod::Hardlink);
        }
        copy_new(blob, dest, mode)?;
        Ok(PlaceMethod::Copy)
    }
}

fn remove_if_present(path: &Path) -> io::Result<()> {
    match fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

fn copy_new(blob: &File, dest: &Path, mode: u32) -> io::Result<()> {
    let mut out = create_new(dest, mode)?;
    let mut src = blob;
    // std uses copy_file_range on Linux, which itself shares extents where
    // the filesystem can; offset 0 is guaranteed because we pread through a
    // fresh reference to the descriptor.
    sys::rewind(blob)?;
    let r = io::copy(&mut src, &mut out).and_then(|_| sys::stamp_now(&out));
    if r.is_err() {
        let _ = fs::remove_file(dest);
    }
    r
}

fn create_new(dest: &Path, mode: u32) -> io::Result<File> {
    let mut o = OpenOptions::new();
    o.write(true).create_new(true);
    sys::set_create_mode(&mut o, mode);
    let f = o.open(dest)?;
    sys::fix_mode(&f, mode)?;
    Ok(f)
}

/// Creates `dest` (which must not exist) as a copy-on-write clone of `src`.
/// `Ok(false)` where the filesystem cannot clone; then nothing is left at `dest`.
pub fn clone_into_new(src: &File, dest: &Path, mode: u32) -> io::Result<bool> {
    sys::reflink_new(src, dest, mode)
}

/// Sets `path`'s mtime (and atime) to now, by the filesystem's clock.
pub fn set_mtime_now(path: &Path) -> io::Result<()> {
    sys::stamp_path_now(path)
}

/// Before a real compile writes its outputs, unlinks any of `paths` that is
/// read-only or shares its inode: a compiler must never write through a
/// restored hardlink into a blob (as root, permissions would not stop it),
/// and a read-only output would fail the compile. Returns how many were removed.
pub fn remove_readonly_outputs<P: AsRef<Path>>(paths: &[P]) -> io::Result<usize> {
    let mut removed = 0;
    for p in paths {
        let p = p.as_ref();
        let meta = match fs::symlink_metadata(p) {
            Ok(m) => m,
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e),
        };
        if meta.is_file() && sys::is_shared_or_readonly(&meta) {
            remove_if_present(p)?;
            removed += 1;
        }
    }
    Ok(removed)
}

#[cfg(target_os = "linux")]
mod sys {
    use std::fs::{File, Metadata, OpenOptions};
    use std::io;
    use std::os::unix::ffi::OsStrExt;
    use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
    use std::os::unix::io::AsRawFd;
    use std::path::Path;

    const FICLONE: libc::c_ulong = 0x4004_9409;

    pub fn set_create_mode(o: &mut OpenOptions, mode: u32) {
        o.mode(mode & 0o7777);
    }

    /// The umask may have cleared bits the output needs (exec bits of a test binary).
    pub fn fix_mode(f: &File, mode: u32) -> io::Result<()> {
        let want = mode & 0o7777;
        if f.metadata()?.permissions().mode() & 0o7777 != want {
            f.set_permissions(std::fs::Permissions::from_mode(want))?;
        }
        Ok(())
    }

    pub fn rewind(f: &File) -> io::Result<()> {
        // SAFETY: lseek on a descriptor owned by `f`.
        let rc = unsafe { libc::lseek(f.as_raw_fd(), 0, libc::SEEK_SET) };
        if rc < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    pub fn stamp_now(f: &File) -> io::Result<()> {
        // SAFETY: futimens with a null times pointer sets both times to now.
        let rc = unsafe { libc::futimens(f.as_raw_fd(), std::ptr::null()) };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    pub fn stamp_path_now(path: &Path) -> io::Result<()> {
        let c = std::ffi::CString::new(path.as_os_str().as_bytes())
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "path has NUL"))?;
        // SAFETY: valid C string, null times = now.
        let rc = unsafe { libc::utimensat(libc::AT_FDCWD, c.as_ptr(), std::ptr::null(), 0) };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// Clones the blob's extents into a new file at `dest`. Ok(false) when the
    /// filesystem cannot clone (then nothing is left at `dest`).
    pub fn reflink_new(blob: &File, dest: &Path, mode: u32) -> io::Result<bool> {
        let out = super::create_new(dest, mode)?;
        // SAFETY: FICLONE between two descriptors we own.
        let rc = unsafe { libc::ioctl(out.as_raw_fd(), FICLONE as _, blob.as_raw_fd()) };
        if rc != 0 {
            let err = io::Error::last_os_error();
            drop(out);
            let _ = std::fs::remove_file(dest);
            return match err.raw_os_error() {
                Some(libc::EOPNOTSUPP)
                | Some(libc::EXDEV)
                | Some(libc::EINVAL)
                | Some(libc::ENOTTY)
                | Some(libc::ENOSYS)
                | Some(libc::EPERM) => Ok(false),
                _ => Err(err),
            };
        }
        if let Err(e) = stamp_now(&out) {
            let _ = std::fs::remove_file(dest);
            return Err(e);
        }
        Ok(true)
    }

    /// Hardlinks `blob_path` to `dest` if the blob has no other consumer and
    /// its permission bits match `mode`'s executability. Re-checks the link
    /// count after linking, so two racing consumers cannot both keep a link.
    pub fn try_sole_hardlink(
        blob: &File,
        blob_path: &Path,
        dest: &Path,
        mode: u32,
    ) -> io::Result<bool> {
        let meta = blob.metadata()?;
        if meta.nlink() != 1 || (meta.mode() & 0o111) != (mode & 0o111) {
            return Ok(false);
        }
        match std::fs::hard_link(blob_path, dest) {
            Ok(()) => {}
            Err(e) => {
                return match e.raw_os_error() {
                    // Different filesystem, no hardlink support, too many links,
                    // or the blob's name was evicted: fall back.
                    Some(libc::EXDEV)
                    | Some(libc::EPERM)
                    | Some(libc::EMLINK)
                    | Some(libc::ENOENT)
                    | Some(libc::EOPNOTSUPP) => Ok(false),
                    _ => Err(e),
                };
            }
        }
        let linked = std::fs::symlink_metadata(dest)?;
        if linked.ino() != meta.ino() || linked.dev() != meta.dev() || linked.nlink() != 2 {
            // Someone else linked at the same moment (or the name now points at
            // another inode): back off to a private copy.
            std::fs::remove_file(dest)?;
            return Ok(false);
        }
        stamp_path_now(dest)?;
        Ok(true)
    }

    pub fn is_shared_or_readonly(meta: &Metadata) -> bool {
        meta.nlink() > 1 || meta.mode() & 0o200 == 0
    }
}

#[cfg(not(target_os = "linux"))]
mod sys {
    // Windows/macOS groundwork: no clone ioctl here yet (macOS clonefile and
    // Windows block cloning are the planned equivalents), so placement is
    // hardlink-or-copy. Hardlinks are refused where the link count is unknown.
    use std::fs::{File, Metadata, OpenOptions};
    use std::io;
    use std::path::Path;

    pub fn set_create_mode(_o: &mut OpenOptions, _mode: u32) {}
    pub fn fix_mode(_f: &File, _mode: u32) -> io::Result<()> {
        Ok(())
    }
    pub fn rewind(f: &File) -> io::Result<()> {
        use std::io::Seek;
        let mut f = f;
        f.seek(io::SeekFrom::Start(0)).map(|_| ())
    }
    pub fn stamp_now(f: &File) -> io::Result<()> {
        f.set_modified(std::time::SystemTime::now())
    }
    pub fn stamp_path_now(path: &Path) -> io::Result<()> {
        OpenOptions::new()
            .write(true)
            .open(path)?
            .set_modified(std::time::SystemTime::now())
    }
    pub fn reflink_new(_blob: &File, _dest: &Path, _mode: u32) -> io::Result<bool> {
        Ok(false)
    }
    pub fn try_sole_hardlink(_b: &File, _p: &Path, _d: &Path, _m: u32) -> io::Result<bool> {
        Ok(false)
    }
    pub fn is_shared_or_readonly(meta: &Metadata) -> bool {
        meta.permissions().readonly()
    }
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;
    use std::os::unix::fs::{MetadataExt, PermissionsExt};

    fn blob(dir: &Path, bytes: &[u8], mode: u32) -> std::path::PathBuf {
        let p = dir.join("blob");
        fs::write(&p, bytes).unwrap();
        fs::set_permissions(&p, fs::Permissions::from_mode(mode)).unwrap();
        p
    }

    #[test]
    fn first_consumer_may_hardlink_second_gets_private_file() {
        let dir = tempfile::tempdir().unwrap();
        let b = blob(dir.path(), b"hello", 0o444);
        let f = File::open(&b).unwrap();
        let m1 = place_file(
            &f,
            &b,
            &dir.path().join("a"),
            0o444,
            HardlinkPolicy::IfSoleConsumer,
        )
        .unwrap();
        let m2 = place_file(
            &f,
            &b,
            &dir.path().join("c"),
            0o444,
            HardlinkPolicy::IfSoleConsumer,
        )
        .unwrap();
        // tmpfs/ext4 cannot reflink; btrfs/xfs can (then both are reflinks).
        if m1 == PlaceMethod::Hardlink {
            assert_ne!(m2, PlaceMethod::Hardlink);
            assert_eq!(fs::metadata(&b).unwrap().nlink(), 2);
        }
        assert_eq!(fs::read(dir.path().join("c")).unwrap(), b"hello");
    }

    #[test]
    fn executable_outputs_keep_their_mode_and_are_never_hardlinked_to_a_plain_blob() {
        let dir = tempfile::tempdir().unwrap();
        let b = blob(dir.path(), b"\x7fELF", 0o444);
        let f = File::open(&b).unwrap();
        let d = dir.path().join("bin");
        let m = place_file(&f, &b, &d, 0o755, HardlinkPolicy::IfSoleConsumer).unwrap();
        assert_ne!(m, PlaceMethod::Hardlink);
        assert_eq!(
            fs::metadata(&d).unwrap().permissions().mode() & 0o777,
            0o755
        );
    }

    #[test]
    fn writing_a_copied_output_leaves_the_blob_alone() {
        let dir = tempfile::tempdir().unwrap();
        let b = blob(dir.path(), b"original", 0o444);
        let f = File::open(&b).unwrap();
        let d = dir.path().join("out");
        place_file(&f, &b, &d, 0o644, HardlinkPolicy::Never).unwrap();
        fs::write(&d, b"changed").unwrap();
        assert_eq!(fs::read(&b).unwrap(), b"original");
    }

    #[test]
    fn remove_readonly_outputs_unlinks_shared_and_readonly_only() {
        let dir = tempfile::tempdir().unwrap();
        let b = blob(dir.path(), b"x", 0o444);
        let linked = dir.path().join("linked");
        fs::hard_link(&b, &linked).unwrap();
        let plain = dir.path().join("plain");
        fs::write(&plain, b"y").unwrap();
        let n = remove_readonly_outputs(&[&linked, &plain, &dir.path().join("absent")]).unwrap();
        assert_eq!(n, 1);
        assert!(!linked.exists());
        assert!(plain.exists());
        assert_eq!(fs::read(&b).unwrap(), b"x");
    }
}
