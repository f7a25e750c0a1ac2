//! The Linux calls the filesystem needs beyond what `rustix` offers as one call: calls on the
//! inode behind an O_PATH descriptor (through its `/proc/self/fd/N` name, for the calls that
//! have no `*at` form taking an empty path), xattr reads that grow their buffer, and the raw
//! FUSE messages of a takeover (`takeover.rs`). Every call goes through `rustix`, but one
//! `dup3` onto a descriptor number another owner holds; each returns `io::Result`, nothing here
//! panics.

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

/// `FUSE_INIT`, and the protocol version fuser speaks (7.40).
const FUSE_INIT: u32 = 26;
const FUSE_MAJOR: u32 = 7;
const FUSE_MINOR: u32 = 40;
/// The notification asking the kernel to queue again every request a server read and did not
/// answer (Linux 6.9).
const FUSE_NOTIFY_RESEND: i32 = 7;

/// An INIT request as the kernel would send it (header, then `fuse_init_in`), for starting a
/// fuser session on a connection that was negotiated already.
pub(crate) fn init_request() -> Vec<u8> {
    const HEADER: usize = 40;
    const INIT_IN: usize = 64;
    let mut m = Vec::with_capacity(HEADER + INIT_IN);
    m.extend_from_slice(&((HEADER + INIT_IN) as u32).to_ne_bytes()); // len
    m.extend_from_slice(&FUSE_INIT.to_ne_bytes()); // opcode
    m.extend_from_slice(&1u64.to_ne_bytes()); // unique
    m.extend_from_slice(&0u64.to_ne_bytes()); // nodeid
    m.extend_from_slice(&[0; 12]); // uid, gid, pid
    m.extend_from_slice(&[0; 4]); // total_extlen, padding
    m.extend_from_slice(&FUSE_MAJOR.to_ne_bytes());
    m.extend_from_slice(&FUSE_MINOR.to_ne_bytes());
    m.extend_from_slice(&(128u32 << 10).to_ne_bytes()); // max_readahead
    m.extend_from_slice(&[0; INIT_IN - 12]); // flags, flags2, unused
    m
}

/// Makes the descriptor number of `target` refer to what `source` refers to (close-on-exec),
/// closing what it referred to before, in one step.
pub(crate) fn point_fd_at(source: BorrowedFd<'_>, target: BorrowedFd<'_>) -> io::Result<()> {
    // SAFETY: dup3 takes and returns plain descriptor numbers and touches no memory. `target`
    // stays open throughout (dup3 replaces it atomically), so its owner's descriptor stays
    // valid; it refers to another open file afterwards, which is the point.
    let rc = unsafe { libc::dup3(source.as_raw_fd(), target.as_raw_fd(), libc::O_CLOEXEC) };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Asks the kernel to queue again the requests a dead server read and never answered.
pub(crate) fn resend_unanswered(device: BorrowedFd<'_>) -> io::Result<()> {
    let mut m = Vec::with_capacity(16);
    m.extend_from_slice(&16u32.to_ne_bytes()); // len
    m.extend_from_slice(&FUSE_NOTIFY_RESEND.to_ne_bytes()); // error: the notification code
    m.extend_from_slice(&0u64.to_ne_bytes()); // unique 0: a notification
    rustix::io::write(device, &m).map_err(|e| {
        io::Error::new(
            io::ErrorKind::Unsupported,
            format!("the kernel cannot resend FUSE requests (Linux 6.9 or later can): {e}"),
        )
    })?;
    Ok(())
}
