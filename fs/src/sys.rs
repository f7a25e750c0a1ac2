//! Thin, safe wrappers over the Linux calls the filesystem needs (`*at` calls on O_PATH
//! descriptors, xattrs, FICLONE). Each returns `io::Result`; nothing here panics.

use std::ffi::{CStr, CString, OsStr};
use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;

fn cvt(ret: libc::c_int) -> io::Result<libc::c_int> {
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

pub(crate) fn cstr(name: &OsStr) -> io::Result<CString> {
    CString::new(name.as_bytes()).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))
}

/// `/proc/self/fd/N`: reopens or names the inode behind an O_PATH descriptor.
pub(crate) fn proc_path(fd: BorrowedFd<'_>) -> CString {
    // Digits only: CString::new cannot fail.
    CString::new(format!("/proc/self/fd/{}", fd.as_raw_fd())).unwrap_or_default()
}

pub(crate) fn openat(dir: RawFd, name: &CStr, flags: i32, mode: u32) -> io::Result<OwnedFd> {
    // SAFETY: valid C string; the returned descriptor is owned by us.
    let fd = cvt(unsafe { libc::openat(dir, name.as_ptr(), flags | libc::O_CLOEXEC, mode) })?;
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// An O_PATH handle on `name` in `dir`, not following a final symlink.
pub(crate) fn open_path(dir: RawFd, name: &CStr) -> io::Result<OwnedFd> {
    openat(dir, name, libc::O_PATH | libc::O_NOFOLLOW, 0)
}

/// Reopen the inode behind an O_PATH descriptor with real access flags.
pub(crate) fn reopen(fd: BorrowedFd<'_>, flags: i32) -> io::Result<File> {
    let path = proc_path(fd);
    let owned = openat(libc::AT_FDCWD, &path, flags & !libc::O_NOFOLLOW, 0)?;
    Ok(File::from(owned))
}

pub(crate) fn fstat(fd: BorrowedFd<'_>) -> io::Result<libc::stat> {
    // SAFETY: zeroed stat is a valid out-parameter.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    cvt(unsafe {
        libc::fstatat(
            fd.as_raw_fd(),
            c"".as_ptr(),
            &mut st,
            libc::AT_EMPTY_PATH | libc::AT_SYMLINK_NOFOLLOW,
        )
    })?;
    Ok(st)
}

pub(crate) fn mkdirat(dir: RawFd, name: &CStr, mode: u32) -> io::Result<()> {
    cvt(unsafe { libc::mkdirat(dir, name.as_ptr(), mode) }).map(drop)
}

pub(crate) fn mknodat(dir: RawFd, name: &CStr, mode: u32, rdev: u32) -> io::Result<()> {
    cvt(unsafe { libc::mknodat(dir, name.as_ptr(), mode, rdev as libc::dev_t) }).map(drop)
}

pub(crate) fn symlinkat(target: &CStr, dir: RawFd, name: &CStr) -> io::Result<()> {
    cvt(unsafe { libc::symlinkat(target.as_ptr(), dir, name.as_ptr()) }).map(drop)
}

pub(crate) fn unlinkat(dir: RawFd, name: &CStr, flags: i32) -> io::Result<()> {
    cvt(unsafe { libc::unlinkat(dir, name.as_ptr(), flags) }).map(drop)
}

pub(crate) fn renameat2(
    olddir: RawFd,
    old: &CStr,
    newdir: RawFd,
    new: &CStr,
    flags: u32,
) -> io::Result<()> {
    cvt(unsafe { libc::renameat2(olddir, old.as_ptr(), newdir, new.as_ptr(), flags) }).map(drop)
}

/// Give the inode behind `fd` one more name.
pub(crate) fn link_fd(fd: BorrowedFd<'_>, newdir: RawFd, new: &CStr) -> io::Result<()> {
    let path = proc_path(fd);
    cvt(unsafe {
        libc::linkat(
            libc::AT_FDCWD,
            path.as_ptr(),
            newdir,
            new.as_ptr(),
            libc::AT_SYMLINK_FOLLOW,
        )
    })
    .map(drop)
}

pub(crate) fn readlink_fd(fd: BorrowedFd<'_>) -> io::Result<Vec<u8>> {
    let mut buf = vec![0u8; libc::PATH_MAX as usize];
    let n = unsafe {
        libc::readlinkat(
            fd.as_raw_fd(),
            c"".as_ptr(),
            buf.as_mut_ptr().cast(),
            buf.len(),
        )
    };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    buf.truncate(n as usize);
    Ok(buf)
}

pub(crate) fn chmod_fd(fd: BorrowedFd<'_>, mode: u32) -> io::Result<()> {
    let path = proc_path(fd);
    cvt(unsafe { libc::chmod(path.as_ptr(), mode as libc::mode_t) }).map(drop)
}

pub(crate) fn chown_fd(fd: BorrowedFd<'_>, uid: Option<u32>, gid: Option<u32>) -> io::Result<()> {
    let (uid, gid) = (uid.unwrap_or(u32::MAX), gid.unwrap_or(u32::MAX));
    cvt(unsafe {
        libc::fchownat(
            fd.as_raw_fd(),
            c"".as_ptr(),
            uid,
            gid,
            libc::AT_EMPTY_PATH | libc::AT_SYMLINK_NOFOLLOW,
        )
    })
    .map(drop)
}

pub(crate) fn truncate_fd(fd: BorrowedFd<'_>, size: u64) -> io::Result<()> {
    let path = proc_path(fd);
    cvt(unsafe { libc::truncate(path.as_ptr(), size as libc::off_t) }).map(drop)
}

/// `times[0]` is atime, `times[1]` mtime; `UTIME_OMIT`/`UTIME_NOW` allowed in `tv_nsec`.
pub(crate) fn utimens_fd(fd: BorrowedFd<'_>, times: &[libc::timespec; 2]) -> io::Result<()> {
    let path = proc_path(fd);
    cvt(unsafe { libc::utimensat(libc::AT_FDCWD, path.as_ptr(), times.as_ptr(), 0) }).map(drop)
}

pub(crate) fn statvfs_fd(fd: BorrowedFd<'_>) -> io::Result<libc::statvfs> {
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    let path = proc_path(fd);
    cvt(unsafe { libc::statvfs(path.as_ptr(), &mut st) })?;
    Ok(st)
}

/// Read an xattr through the /proc path of an O_PATH fd; `Ok(None)` when it is absent.
pub(crate) fn getxattr_fd(fd: BorrowedFd<'_>, name: &CStr) -> io::Result<Option<Vec<u8>>> {
    let path = proc_path(fd);
    let mut buf = vec![0u8; 256];
    loop {
        let n = unsafe {
            libc::getxattr(
                path.as_ptr(),
                name.as_ptr(),
                buf.as_mut_ptr().cast(),
                buf.len(),
            )
        };
        if n >= 0 {
            buf.truncate(n as usize);
            return Ok(Some(buf));
        }
        let err = io::Error::last_os_error();
        match err.raw_os_error() {
            Some(libc::ENODATA) | Some(libc::ENOTSUP) => return Ok(None),
            Some(libc::ERANGE) if buf.len() < 1 << 20 => buf.resize(buf.len() * 4, 0),
            _ => return Err(err),
        }
    }
}

/// Raw getxattr/listxattr for forwarding: `size == 0` asks for the needed size.
pub(crate) fn xattr_call(
    fd: BorrowedFd<'_>,
    name: Option<&CStr>,
    size: u32,
) -> io::Result<Vec<u8>> {
    let path = proc_path(fd);
    let mut buf = vec![0u8; size as usize];
    let (ptr, len) = if size == 0 {
        (std::ptr::null_mut(), 0)
    } else {
        (buf.as_mut_ptr().cast(), buf.len())
    };
    let n = unsafe {
        match name {
            Some(name) => libc::getxattr(path.as_ptr(), name.as_ptr(), ptr, len),
            None => libc::listxattr(path.as_ptr(), ptr.cast(), len),
        }
    };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    if size == 0 {
        return Ok(vec![0; n as usize]);
    }
    buf.truncate(n as usize);
    Ok(buf)
}

pub(crate) fn setxattr_fd(
    fd: BorrowedFd<'_>,
    name: &CStr,
    value: &[u8],
    flags: i32,
) -> io::Result<()> {
    let path = proc_path(fd);
    cvt(unsafe {
        libc::setxattr(
            path.as_ptr(),
            name.as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            flags,
        )
    })
    .map(drop)
}

pub(crate) fn removexattr_fd(fd: BorrowedFd<'_>, name: &CStr) -> io::Result<()> {
    let path = proc_path(fd);
    cvt(unsafe { libc::removexattr(path.as_ptr(), name.as_ptr()) }).map(drop)
}

pub(crate) fn fsetxattr(file: &File, name: &CStr, value: &[u8]) -> io::Result<()> {
    cvt(unsafe {
        libc::fsetxattr(
            file.as_raw_fd(),
            name.as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            0,
        )
    })
    .map(drop)
}

/// Copy `src`'s bytes into the empty `dst`: a reflink (FICLONE) where the filesystem can,
/// `copy_file_range` otherwise.
pub(crate) fn clone_or_copy(src: &File, dst: &File) -> io::Result<()> {
    const FICLONE: libc::c_ulong = 0x4004_9409;
    if unsafe { libc::ioctl(dst.as_raw_fd(), FICLONE as _, src.as_raw_fd()) } == 0 {
        return Ok(());
    }
    let mut src_ref = src;
    let mut dst_ref = dst;
    // std::io::copy uses copy_file_range/sendfile between files where it can.
    io::copy(&mut src_ref, &mut dst_ref).map(drop)
}

pub(crate) fn fallocate(file: &File, mode: i32, offset: u64, len: u64) -> io::Result<()> {
    cvt(unsafe {
        libc::fallocate(
            file.as_raw_fd(),
            mode,
            offset as libc::off_t,
            len as libc::off_t,
        )
    })
    .map(drop)
}

pub(crate) fn timespec(t: std::time::SystemTime) -> libc::timespec {
    let d = t.duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    libc::timespec {
        tv_sec: d.as_secs() as libc::time_t,
        tv_nsec: d.subsec_nanos() as _,
    }
}

pub(crate) fn omit() -> libc::timespec {
    libc::timespec {
        tv_sec: 0,
        tv_nsec: libc::UTIME_OMIT,
    }
}

pub(crate) fn now() -> libc::timespec {
    libc::timespec {
        tv_sec: 0,
        tv_nsec: libc::UTIME_NOW,
    }
}
