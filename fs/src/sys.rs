//! The Linux calls the filesystem needs beyond what `rustix` offers as one call: calls on the
//! inode behind an O_PATH descriptor (through its `/proc/self/fd/N` name, for the calls that
//! have no `*at` form taking an empty path), and xattr reads that grow their buffer. Every
//! call goes through `rustix` (no `unsafe`); each returns `io::Result`, nothing here panics.

use std::ffi::{CStr, CString, OsStr};
use std::fs::File;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;
use std::time::{SystemTime, UNIX_EPOCH};

use rustix::fs::{AtFlags, Mode, OFlags, Stat, StatVfs, Timespec, Timestamps, CWD};
use rustix::io::Errno;

/// `name` as a C string; a name with a NUL byte is `EINVAL`, as the kernel would say.
pub(crate) fn cstr(name: &OsStr) -> io::Result<CString> {
    CString::new(name.as_bytes()).map_err(|_| Errno::INVAL.into())
}

/// `/proc/self/fd/N`: reopens or names the inode behind an O_PATH descriptor.
pub(crate) fn proc_path(fd: BorrowedFd<'_>) -> PathBuf {
    PathBuf::from(format!("/proc/self/fd/{}", fd.as_raw_fd()))
}

/// `openat` with close-on-exec always set (the server's descriptors never leak into children).
pub(crate) fn openat(dir: impl AsFd, name: &CStr, flags: OFlags, mode: u32) -> io::Result<OwnedFd> {
    Ok(rustix::fs::openat(
        dir,
        name,
        flags | OFlags::CLOEXEC,
        Mode::from_raw_mode(mode),
    )?)
}

/// An O_PATH handle on `name` in `dir`, not following a final symlink.
pub(crate) fn open_path(dir: impl AsFd, name: &CStr) -> io::Result<OwnedFd> {
    openat(dir, name, OFlags::PATH | OFlags::NOFOLLOW, 0)
}

/// Reopen the inode behind an O_PATH descriptor with real access flags.
pub(crate) fn reopen(fd: BorrowedFd<'_>, flags: OFlags) -> io::Result<File> {
    let owned = openat(CWD, &proc_cstr(fd), flags - OFlags::NOFOLLOW, 0)?;
    Ok(File::from(owned))
}

/// The attributes of the inode behind `fd` itself (a symlink's own, not its target's).
pub(crate) fn fstat(fd: BorrowedFd<'_>) -> io::Result<Stat> {
    Ok(rustix::fs::statat(
        fd,
        c"",
        AtFlags::EMPTY_PATH | AtFlags::SYMLINK_NOFOLLOW,
    )?)
}

/// Give the inode behind `fd` one more name.
pub(crate) fn link_fd(fd: BorrowedFd<'_>, newdir: impl AsFd, new: &CStr) -> io::Result<()> {
    Ok(rustix::fs::linkat(
        CWD,
        proc_cstr(fd),
        newdir,
        new,
        AtFlags::SYMLINK_FOLLOW,
    )?)
}

pub(crate) fn readlink_fd(fd: BorrowedFd<'_>) -> io::Result<Vec<u8>> {
    Ok(rustix::fs::readlinkat(fd, c"", Vec::new())?.into_bytes())
}

pub(crate) fn chmod_fd(fd: BorrowedFd<'_>, mode: u32) -> io::Result<()> {
    Ok(rustix::fs::chmod(proc_cstr(fd), Mode::from_raw_mode(mode))?)
}

pub(crate) fn chown_fd(fd: BorrowedFd<'_>, uid: Option<u32>, gid: Option<u32>) -> io::Result<()> {
    // -1 means "unchanged" to chown(2); rustix says that with `None`.
    let uid = uid
        .filter(|u| *u != u32::MAX)
        .map(rustix::fs::Uid::from_raw);
    let gid = gid
        .filter(|g| *g != u32::MAX)
        .map(rustix::fs::Gid::from_raw);
    Ok(rustix::fs::chownat(
        fd,
        c"",
        uid,
        gid,
        AtFlags::EMPTY_PATH | AtFlags::SYMLINK_NOFOLLOW,
    )?)
}

/// `truncate(2)` of the inode behind an O_PATH descriptor: opened for writing first, which
/// checks the same permission and fails the same way on a running executable (`ETXTBSY`).
pub(crate) fn truncate_fd(fd: BorrowedFd<'_>, size: u64) -> io::Result<()> {
    let file = rustix::fs::open(
        proc_cstr(fd),
        OFlags::WRONLY | OFlags::CLOEXEC,
        Mode::empty(),
    )?;
    Ok(rustix::fs::ftruncate(&file, size)?)
}

/// Sets the times of the inode behind `fd`; [`omit`] and [`now`] are allowed.
pub(crate) fn utimens_fd(fd: BorrowedFd<'_>, atime: Timespec, mtime: Timespec) -> io::Result<()> {
    let times = Timestamps {
        last_access: atime,
        last_modification: mtime,
    };
    Ok(rustix::fs::utimensat(
        CWD,
        proc_cstr(fd),
        &times,
        AtFlags::empty(),
    )?)
}

pub(crate) fn statvfs_fd(fd: BorrowedFd<'_>) -> io::Result<StatVfs> {
    Ok(rustix::fs::fstatvfs(fd)?)
}

/// Read an xattr through the /proc path of an O_PATH fd; `Ok(None)` when it is absent.
pub(crate) fn getxattr_fd(fd: BorrowedFd<'_>, name: &CStr) -> io::Result<Option<Vec<u8>>> {
    let path = proc_cstr(fd);
    let mut buf = vec![0u8; 256];
    loop {
        match rustix::fs::getxattr(&path, name, &mut buf[..]) {
            Ok(n) => {
                buf.truncate(n);
                return Ok(Some(buf));
            }
            Err(Errno::NODATA | Errno::NOTSUP) => return Ok(None),
            Err(Errno::RANGE) if buf.len() < 1 << 20 => buf.resize(buf.len() * 4, 0),
            Err(e) => return Err(e.into()),
        }
    }
}

/// getxattr (`name`) or listxattr (`None`) for forwarding to a FUSE client: `size == 0` asks
/// for the needed size (a vector of that length comes back), else at most `size` bytes.
pub(crate) fn xattr_call(
    fd: BorrowedFd<'_>,
    name: Option<&CStr>,
    size: u32,
) -> io::Result<Vec<u8>> {
    let path = proc_cstr(fd);
    if size == 0 {
        let needed = match name {
            Some(name) => rustix::fs::getxattr_query(&path, name)?,
            None => rustix::fs::listxattr_query(&path)?,
        };
        return Ok(vec![0; needed]);
    }
    let mut buf = vec![0u8; size as usize];
    let n = match name {
        Some(name) => rustix::fs::getxattr(&path, name, &mut buf[..])?,
        None => rustix::fs::listxattr(&path, &mut buf[..])?,
    };
    buf.truncate(n);
    Ok(buf)
}

/// `flags` as the FUSE client gave them (`XATTR_CREATE`, `XATTR_REPLACE`).
pub(crate) fn setxattr_fd(
    fd: BorrowedFd<'_>,
    name: &CStr,
    value: &[u8],
    flags: i32,
) -> io::Result<()> {
    let flags = rustix::fs::XattrFlags::from_bits_retain(flags as u32);
    Ok(rustix::fs::setxattr(proc_cstr(fd), name, value, flags)?)
}

pub(crate) fn removexattr_fd(fd: BorrowedFd<'_>, name: &CStr) -> io::Result<()> {
    Ok(rustix::fs::removexattr(proc_cstr(fd), name)?)
}

pub(crate) fn fsetxattr(file: &File, name: &CStr, value: &[u8]) -> io::Result<()> {
    Ok(rustix::fs::fsetxattr(
        file,
        name,
        value,
        rustix::fs::XattrFlags::empty(),
    )?)
}

/// `mode` as the FUSE client gave it (`FALLOC_FL_*`).
pub(crate) fn fallocate(file: &File, mode: i32, offset: u64, len: u64) -> io::Result<()> {
    let mode = rustix::fs::FallocateFlags::from_bits_retain(mode as u32);
    Ok(rustix::fs::fallocate(file, mode, offset, len)?)
}

pub(crate) fn timespec(t: SystemTime) -> Timespec {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    Timespec {
        tv_sec: d.as_secs() as _,
        tv_nsec: d.subsec_nanos().into(),
    }
}

/// For [`utimens_fd`]: leave this time as it is.
pub(crate) fn omit() -> Timespec {
    Timespec {
        tv_sec: 0,
        tv_nsec: rustix::fs::UTIME_OMIT,
    }
}

/// For [`utimens_fd`]: the filesystem's clock, now.
pub(crate) fn now() -> Timespec {
    Timespec {
        tv_sec: 0,
        tv_nsec: rustix::fs::UTIME_NOW,
    }
}

/// The `/proc/self/fd/N` name as a C string: rustix then passes it without copying.
fn proc_cstr(fd: BorrowedFd<'_>) -> CString {
    // Digits only: CString::new cannot fail.
    CString::new(format!("/proc/self/fd/{}", fd.as_raw_fd())).unwrap_or_default()
}
