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
//!   (through the descriptor, `futimens(fd, UTIME_NOW)`), so cargo's mtime
//!   comparisons against files written by build scripts hold;
//! - a clone is made from the blob's open descriptor, never from its path
//!   (`reflink-copy`: Linux `FICLONE`, macOS `fclonefileat`, Windows ReFS
//!   block cloning), so eviction unlinking the blob's name mid-restore cannot
//!   take the bytes away; only a hardlink needs the name, and a vanished name
//!   there falls back to a copy from the descriptor;
//! - the placed file has the permission bits the caller asked for, whatever
//!   the umask or the blob's own bits (Unix; Windows keeps files writable).

use std::collections::BTreeSet;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Seek, SeekFrom};
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
            if reflink_new(blob, dest, mode)? {
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
    let out = create_new(dest, mode)?;
    let r = copy_from_start(blob, &out).and_then(|_| sys::stamp_now(&out));
    if r.is_err() {
        let _ = fs::remove_file(dest);
    }
    r
}

/// Copies all of `src` to `dst`'s current offset. `src` is shared by the
/// placements of one restore, so its offset is wherever the last copy left it.
fn copy_from_start(mut src: &File, mut dst: &File) -> io::Result<u64> {
    src.seek(SeekFrom::Start(0))?;
    // std uses copy_file_range on Linux, which itself shares extents where
    // the filesystem can.
    io::copy(&mut src, &mut dst)
}

fn create_new(dest: &Path, mode: u32) -> io::Result<File> {
    let mut o = OpenOptions::new();
    o.write(true).create_new(true);
    sys::set_create_mode(&mut o, mode);
    let f = o.open(dest)?;
    sys::fix_mode(&f, mode)?;
    Ok(f)
}

/// Creates `dest` (which must not exist) as a copy-on-write clone of `src`,
/// with permission bits `mode` and a fresh mtime. `Ok(false)` when the clone
/// failed (a filesystem that cannot clone, another filesystem, or a clone
/// refused for any other reason); then nothing is left at `dest`, and a copy
/// is the caller's fallback, which reports real I/O errors itself.
pub fn clone_into_new(src: &File, dest: &Path, mode: u32) -> io::Result<bool> {
    reflink_new(src, dest, mode)
}

/// Fills the empty file `dst` with `src`'s bytes: a clone where the
/// filesystem can, else a copy. Both files are open descriptors (the
/// filesystem's copy-up of a placed file into its marker); `dst` must be
/// open for writing and is never a blob.
pub fn clone_or_copy(src: &File, dst: &File) -> io::Result<PlaceMethod> {
    if reflink_copy::reflink_file(src, dst).is_ok() {
        return Ok(PlaceMethod::Reflink);
    }
    // A failed Windows block clone may have sized `dst` already.
    dst.set_len(0)?;
    let mut out = dst;
    out.seek(SeekFrom::Start(0))?;
    copy_from_start(src, out)?;
    Ok(PlaceMethod::Copy)
}

#[cfg(not(any(target_os = "macos", target_os = "ios")))]
fn reflink_new(blob: &File, dest: &Path, mode: u32) -> io::Result<bool> {
    // Create the file ourselves (mode set at creation) and clone descriptor
    // to descriptor, so the mtime is stamped through the same descriptor.
    let out = create_new(dest, mode)?;
    let r = match reflink_copy::reflink_file(blob, &out) {
        Ok(()) => sys::stamp_now(&out).map(|()| true),
        Err(_) => Ok(false),
    };
    if !matches!(r, Ok(true)) {
        drop(out);
        let _ = fs::remove_file(dest);
    }
    r
}

#[cfg(any(target_os = "macos", target_os = "ios"))]
fn reflink_new(blob: &File, dest: &Path, mode: u32) -> io::Result<bool> {
    // APFS clones only into a new name (`fclonefileat`, from the blob's
    // descriptor); the clone carries the blob's bits and mtime, so both are
    // set afterwards through a descriptor on the clone.
    if reflink_copy::reflink_file_to_path(blob, dest).is_err() {
        return Ok(false);
    }
    let r = File::open(dest).and_then(|out| {
        sys::fix_mode(&out, mode)?;
        sys::stamp_now(&out)
    });
    if let Err(e) = r {
        let _ = fs::remove_file(dest);
        return Err(e);
    }
    Ok(true)
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

#[cfg(unix)]
mod sys {
    use rustix::fs::{Timespec, Timestamps, UTIME_NOW};
    use rustix::io::Errno;
    use std::fs::{File, Metadata, OpenOptions};
    use std::io;
    use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
    use std::path::Path;

    pub fn set_create_mode(o: &mut OpenOptions, mode: u32) {
        o.mode(mode & 0o7777);
    }

    /// The umask may have cleared bits the output needs (exec bits of a test
    /// binary), and a clone may carry the blob's read-only bits.
    pub fn fix_mode(f: &File, mode: u32) -> io::Result<()> {
        let want = mode & 0o7777;
        if f.metadata()?.permissions().mode() & 0o7777 != want {
            f.set_permissions(std::fs::Permissions::from_mode(want))?;
        }
        Ok(())
    }

    /// Both times set by the kernel, from the filesystem's own (coarse)
    /// clock: a precise user-space clock would make a restored file look
    /// newer than one a build script writes right after.
    const NOW: Timestamps = Timestamps {
        last_access: Timespec {
            tv_sec: 0,
            tv_nsec: UTIME_NOW,
        },
        last_modification: Timespec {
            tv_sec: 0,
            tv_nsec: UTIME_NOW,
        },
    };

    pub fn stamp_now(f: &File) -> io::Result<()> {
        Ok(rustix::fs::futimens(f, &NOW)?)
    }

    pub fn stamp_path_now(path: &Path) -> io::Result<()> {
        Ok(rustix::fs::utimensat(
            rustix::fs::CWD,
            path,
            &NOW,
            rustix::fs::AtFlags::empty(),
        )?)
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
        if let Err(e) = std::fs::hard_link(blob_path, dest) {
            // Different filesystem, no hardlink support, too many links, or
            // the blob's name was evicted (the open descriptor still has the
            // bytes): fall back to a copy.
            return match Errno::from_io_error(&e) {
                Some(
                    Errno::XDEV | Errno::PERM | Errno::MLINK | Errno::NOENT | Errno::OPNOTSUPP,
                ) => Ok(false),
                _ => Err(e),
            };
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

#[cfg(not(unix))]
mod sys {
    // Windows: no permission bits beyond read-only, and restored files stay
    // writable (a read-only attribute makes a file undeletable for cargo).
    // Hardlinks are never made: the link count that keeps a blob to one
    // consumer is not in std's metadata here.
    use std::fs::{File, Metadata, OpenOptions};
    use std::io;
    use std::path::Path;

    pub fn set_create_mode(_o: &mut OpenOptions, _mode: u32) {}
    pub fn fix_mode(_f: &File, _mode: u32) -> io::Result<()> {
        Ok(())
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
    pub fn try_sole_hardlink(_b: &File, _p: &Path, _d: &Path, _m: u32) -> io::Result<bool> {
        Ok(false)
    }
    pub fn is_shared_or_readonly(meta: &Metadata) -> bool {
        meta.permissions().readonly()
    }
}

#[cfg(all(test, unix))]
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
    fn an_evicted_blob_name_falls_back_to_a_copy_from_the_open_descriptor() {
        let dir = tempfile::tempdir().unwrap();
        let b = blob(dir.path(), b"still here", 0o444);
        let f = File::open(&b).unwrap();
        fs::remove_file(&b).unwrap();
        let d = dir.path().join("out");
        let m = place_file(&f, &b, &d, 0o644, HardlinkPolicy::IfSoleConsumer).unwrap();
        assert_ne!(m, PlaceMethod::Hardlink);
        assert_eq!(fs::read(&d).unwrap(), b"still here");
    }

    #[test]
    fn placements_of_one_blob_each_get_all_its_bytes() {
        // The blob's descriptor is shared by every placement of a restore:
        // a copy must not start where the previous one left the offset.
        let dir = tempfile::tempdir().unwrap();
        let b = blob(dir.path(), b"0123456789", 0o444);
        let f = File::open(&b).unwrap();
        let mut p = Placer::default();
        for name in ["a", "b", "c"] {
            let d = dir.path().join(name);
            p.place(&f, &b, &d, 0o644, HardlinkPolicy::Never).unwrap();
            assert_eq!(fs::read(&d).unwrap(), b"0123456789", "{name}");
        }
    }

    #[test]
    fn clone_or_copy_fills_an_empty_file_whatever_the_source_offset() {
        use std::io::Read;
        let dir = tempfile::tempdir().unwrap();
        let b = blob(dir.path(), b"copy-up bytes", 0o444);
        let mut src = File::open(&b).unwrap();
        src.read_exact(&mut [0u8; 4]).unwrap();
        let d = dir.path().join("marker");
        let dst = OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&d)
            .unwrap();
        clone_or_copy(&src, &dst).unwrap();
        drop(dst);
        assert_eq!(fs::read(&d).unwrap(), b"copy-up bytes");
        assert_eq!(fs::read(&b).unwrap(), b"copy-up bytes");
    }

    #[test]
    fn a_placed_file_gets_the_asked_mode_whatever_the_umask_gave() {
        let dir = tempfile::tempdir().unwrap();
        let b = blob(dir.path(), b"x", 0o444);
        let f = File::open(&b).unwrap();
        for mode in [0o600, 0o664, 0o666, 0o775] {
            let d = dir.path().join(format!("m{mode:o}"));
            place_file(&f, &b, &d, mode, HardlinkPolicy::Never).unwrap();
            let got = fs::metadata(&d).unwrap().permissions().mode() & 0o7777;
            assert_eq!(got, mode, "{}", d.display());
        }
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
