//! The `fuser::Filesystem` face of a mount: each callback resolves node ids, forwards to the
//! upper directory or to [`Shared`], and replies with an errno it chose.
//!
//! The filesystem does not implement `open` (it answers ENOSYS, and the kernel then stops
//! sending opens and releases at all): cargo opens every fingerprint and dep-info file of every
//! unit on each build, and two round trips per open made a no-op build of a 158-unit workspace
//! 1.9x as slow as in a plain directory. Reads and writes name the inode instead of a handle,
//! and the kernel keeps file contents in its page cache across opens. Together with long entry
//! and attribute TTLs and cached negative lookups, a no-op build sends the server almost
//! nothing. The price: no kernel FUSE passthrough (it is set up by an open), so the first read
//! of a placed file is served by the server (measured 3.1 GB/s against 12.9 GB/s for a 200 MB
//! file), and each mount keeps its own page cache of what it read.
//!
//! Must never: let a caller create, remove or see the names a mount reserves (the control
//! file, staging names), or set or remove the placement xattr by hand.

use std::ffi::OsStr;
use std::io;
use std::os::fd::AsFd;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use fuser::{
    Errno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags, Generation, INodeNo, InitFlags,
    KernelConfig, LockOwner, OpenFlags, RenameFlags, ReplyAttr, ReplyCreate, ReplyData,
    ReplyDirectory, ReplyEmpty, ReplyEntry, ReplyOpen, ReplyStatfs, ReplyWrite, ReplyXattr,
    Request, TimeOrNow, WriteFlags,
};

use rustix::fs::{AtFlags, Mode, OFlags};

use crate::control::{REQUEST_XATTR, STATUS_XATTR};
use crate::inodes::{control_attr, file_type, ROOT_ID};
use crate::placement::{self, CONTROL_ID, CONTROL_NAME, PLACED_XATTR};
use crate::state::Shared;
use crate::sys;

/// Entry and attribute TTL, for names that exist and names that do not: how long the kernel
/// answers lookups and stats of the mount from its own cache. Every change goes through this
/// filesystem (so the kernel sees it) except the ones the server makes itself, placements and
/// `clear`, which invalidate every name they create, replace or remove. So the TTL can be long,
/// and it should be: cargo stats every output of every unit on each build, and looks up names
/// that do not exist (build-script outputs, `.dwp` files) by the hundred.
const TTL: Duration = Duration::from_secs(600);

/// The answer to a lookup of a name that does not exist, which the kernel caches for [`TTL`].
fn no_such_entry() -> FileAttr {
    FileAttr {
        ino: INodeNo(0),
        size: 0,
        blocks: 0,
        atime: UNIX_EPOCH,
        mtime: UNIX_EPOCH,
        ctime: UNIX_EPOCH,
        crtime: UNIX_EPOCH,
        kind: FileType::RegularFile,
        perm: 0,
        nlink: 0,
        uid: 0,
        gid: 0,
        rdev: 0,
        blksize: 0,
        flags: 0,
    }
}

fn errno(e: io::Error) -> Errno {
    Errno::from_i32(e.raw_os_error().unwrap_or(Errno::EIO.code()))
}

fn is_control(parent: INodeNo, name: &OsStr) -> bool {
    parent.0 == ROOT_ID && name == CONTROL_NAME
}

/// The `fuser::Filesystem` face of [`Shared`]: each callback resolves ids and forwards.
pub(crate) struct KacheFs {
    pub(crate) shared: Arc<Shared>,
}

macro_rules! tri {
    ($reply:expr, $e:expr) => {
        match $e {
            Ok(v) => v,
            Err(e) => return $reply.error(e.into_errno()),
        }
    };
}

trait IntoErrno {
    fn into_errno(self) -> Errno;
}
impl IntoErrno for Errno {
    fn into_errno(self) -> Errno {
        self
    }
}
impl IntoErrno for io::Error {
    fn into_errno(self) -> Errno {
        errno(self)
    }
}
impl IntoErrno for rustix::io::Errno {
    fn into_errno(self) -> Errno {
        Errno::from_i32(self.raw_os_error())
    }
}

/// Whether the kernel sent `req` again (FUSE_NOTIFY_RESEND sets this bit of its id).
fn resent(req: &Request) -> bool {
    req.unique().0 & (1 << 63) != 0
}

/// `result` of a request that may have been done already: one the kernel sent again after a
/// server died (`takeover.rs`), which that server may have carried out before it died. Then the
/// error saying so (`done`: the name exists, or is gone) means the request succeeded.
fn done_before(
    req: &Request,
    result: rustix::io::Result<()>,
    done: rustix::io::Errno,
) -> rustix::io::Result<()> {
    match result {
        Err(e) if e == done && resent(req) => Ok(()),
        other => other,
    }
}

/// For the test of a takeover (`tests/mount_orchestrator.rs`): with `KACHE_FS_TEST_STALL=1`
/// in the server's environment, a mkdir of a name starting `.kache-stall-` is done and then
/// not answered for 60 s (the test kills the server meanwhile), except by a server that took
/// over, which answers the request the kernel sends again.
fn stall_for_a_test(s: &Shared, name: &std::ffi::CStr) {
    if name.to_bytes().starts_with(b".kache-stall-")
        && std::env::var_os("KACHE_FS_TEST_STALL").is_some_and(|v| v == "1")
        && !s.inodes.took_over()
    {
        std::thread::sleep(std::time::Duration::from_secs(60));
    }
}

fn name_c(name: &OsStr) -> Result<std::ffi::CString, Errno> {
    sys::cstr(name).map_err(|_| Errno::EINVAL)
}

fn guard_reserved(parent: INodeNo, name: &OsStr) -> Result<(), Errno> {
    if placement::is_reserved(name, parent.0 == ROOT_ID) {
        Err(Errno::EPERM)
    } else {
        Ok(())
    }
}

impl Filesystem for KacheFs {
    fn init(&mut self, _req: &Request, config: &mut KernelConfig) -> io::Result<()> {
        let _ = config.add_capabilities(InitFlags::FUSE_PARALLEL_DIROPS);
        Ok(())
    }

    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        let s = &self.shared;
        if is_control(parent, name) {
            return reply.entry(&TTL, &control_attr(), Generation(0));
        }
        let dir = tri!(reply, s.inodes.dir(parent));
        let name = tri!(reply, name_c(name));
        match s.inodes.lookup(&dir, &name) {
            Ok(attr) => reply.entry(&TTL, &attr, Generation(0)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                reply.entry(&TTL, &no_such_entry(), Generation(0))
            }
            Err(e) => reply.error(errno(e)),
        }
    }

    fn forget(&self, _req: &Request, ino: INodeNo, nlookup: u64) {
        self.shared.inodes.forget(ino.0, nlookup);
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        let s = &self.shared;
        if ino.0 == CONTROL_ID {
            return reply.attr(&TTL, &control_attr());
        }
        let node = tri!(reply, s.inodes.get(ino));
        let attr = tri!(reply, s.inodes.attr(&node));
        reply.attr(&TTL, &attr);
    }

    fn setattr(
        &self,
        _req: &Request,
        ino: INodeNo,
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
        size: Option<u64>,
        atime: Option<TimeOrNow>,
        mtime: Option<TimeOrNow>,
        _ctime: Option<SystemTime>,
        _fh: Option<FileHandle>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<fuser::BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        let s = &self.shared;
        if ino.0 == CONTROL_ID {
            return reply.attr(&TTL, &control_attr());
        }
        let node = tri!(reply, s.inodes.get(ino));
        let fd = node.fd.as_fd();
        let is_symlink = file_type(tri!(reply, sys::fstat(fd)).st_mode as u32) == FileType::Symlink;
        if let Some(size) = size {
            tri!(reply, s.truncate(&node, size));
        }
        if let Some(mode) = mode.filter(|_| !is_symlink) {
            tri!(reply, sys::chmod_fd(fd, mode & 0o7777));
        }
        if uid.is_some() || gid.is_some() {
            tri!(reply, sys::chown_fd(fd, uid, gid));
        }
        if (atime.is_some() || mtime.is_some()) && !is_symlink {
            let ts = |t: Option<TimeOrNow>| match t {
                None => sys::omit(),
                Some(TimeOrNow::Now) => sys::now(),
                Some(TimeOrNow::SpecificTime(t)) => sys::timespec(t),
            };
            // A placed file keeps its placement: only the marker's times change.
            tri!(reply, sys::utimens_fd(fd, ts(atime), ts(mtime)));
        }
        let attr = tri!(reply, s.inodes.attr(&node));
        reply.attr(&TTL, &attr);
    }

    fn readlink(&self, _req: &Request, ino: INodeNo, reply: ReplyData) {
        let node = tri!(reply, self.shared.inodes.get(ino));
        let target = tri!(reply, sys::readlink_fd(node.fd.as_fd()));
        reply.data(&target);
    }

    fn mknod(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        rdev: u32,
        reply: ReplyEntry,
    ) {
        let s = &self.shared;
        tri!(reply, guard_reserved(parent, name));
        let dir = tri!(reply, s.inodes.dir(parent));
        let name = tri!(reply, name_c(name));
        let made = rustix::fs::mknodat(
            &dir.fd,
            name.as_c_str(),
            rustix::fs::FileType::from_raw_mode(mode),
            Mode::from_raw_mode(mode & !umask),
            rdev.into(),
        );
        tri!(reply, done_before(req, made, rustix::io::Errno::EXIST));
        let attr = tri!(reply, s.created_entry(&dir, &name, req.uid(), req.gid()));
        reply.entry(&TTL, &attr, Generation(0));
    }

    fn mkdir(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        reply: ReplyEntry,
    ) {
        let s = &self.shared;
        tri!(reply, guard_reserved(parent, name));
        let dir = tri!(reply, s.inodes.dir(parent));
        let name = tri!(reply, name_c(name));
        let made =
            rustix::fs::mkdirat(&dir.fd, name.as_c_str(), Mode::from_raw_mode(mode & !umask));
        stall_for_a_test(s, &name);
        tri!(reply, done_before(req, made, rustix::io::Errno::EXIST));
        let attr = tri!(reply, s.created_entry(&dir, &name, req.uid(), req.gid()));
        reply.entry(&TTL, &attr, Generation(0));
    }

    fn unlink(&self, req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        tri!(reply, guard_reserved(parent, name));
        let dir = tri!(reply, self.shared.inodes.dir(parent));
        let name = tri!(reply, name_c(name));
        let gone = rustix::fs::unlinkat(&dir.fd, name.as_c_str(), AtFlags::empty());
        tri!(reply, done_before(req, gone, rustix::io::Errno::NOENT));
        reply.ok();
    }

    fn rmdir(&self, req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let dir = tri!(reply, self.shared.inodes.dir(parent));
        let name = tri!(reply, name_c(name));
        let gone = rustix::fs::unlinkat(&dir.fd, name.as_c_str(), AtFlags::REMOVEDIR);
        tri!(reply, done_before(req, gone, rustix::io::Errno::NOENT));
        reply.ok();
    }

    fn symlink(
        &self,
        req: &Request,
        parent: INodeNo,
        link_name: &OsStr,
        target: &Path,
        reply: ReplyEntry,
    ) {
        let s = &self.shared;
        tri!(reply, guard_reserved(parent, link_name));
        let dir = tri!(reply, s.inodes.dir(parent));
        let name = tri!(reply, name_c(link_name));
        let target = tri!(reply, name_c(target.as_os_str()));
        let made = rustix::fs::symlinkat(target.as_c_str(), &dir.fd, name.as_c_str());
        tri!(reply, done_before(req, made, rustix::io::Errno::EXIST));
        let attr = tri!(reply, s.created_entry(&dir, &name, req.uid(), req.gid()));
        reply.entry(&TTL, &attr, Generation(0));
    }

    fn rename(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        newparent: INodeNo,
        newname: &OsStr,
        flags: RenameFlags,
        reply: ReplyEmpty,
    ) {
        let s = &self.shared;
        tri!(reply, guard_reserved(parent, name));
        tri!(reply, guard_reserved(newparent, newname));
        let from = tri!(reply, s.inodes.dir(parent));
        let to = tri!(reply, s.inodes.dir(newparent));
        let name = tri!(reply, name_c(name));
        let newname = tri!(reply, name_c(newname));
        let moved = rustix::fs::renameat_with(
            &from.fd,
            name.as_c_str(),
            &to.fd,
            newname.as_c_str(),
            rustix::fs::RenameFlags::from_bits_retain(flags.bits()),
        );
        tri!(reply, done_before(req, moved, rustix::io::Errno::NOENT));
        reply.ok();
    }

    fn link(
        &self,
        req: &Request,
        ino: INodeNo,
        newparent: INodeNo,
        newname: &OsStr,
        reply: ReplyEntry,
    ) {
        let s = &self.shared;
        tri!(reply, guard_reserved(newparent, newname));
        let node = tri!(reply, s.inodes.get(ino));
        let dir = tri!(reply, s.inodes.dir(newparent));
        let name = tri!(reply, name_c(newname));
        let linked = sys::link_fd(node.fd.as_fd(), &dir.fd, &name)
            .map_err(|e| rustix::io::Errno::from_io_error(&e).unwrap_or(rustix::io::Errno::IO));
        tri!(reply, done_before(req, linked, rustix::io::Errno::EXIST));
        let attr = tri!(reply, s.inodes.lookup(&dir, &name));
        reply.entry(&TTL, &attr, Generation(0));
    }

    /// Not implemented, on purpose (see the module docs): the kernel stops sending opens.
    fn open(&self, _req: &Request, _ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        reply.error(Errno::ENOSYS);
    }

    fn read(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        if ino.0 == CONTROL_ID {
            return reply.data(&[]);
        }
        let node = tri!(reply, self.shared.inodes.get(ino));
        if node.is_dir {
            return reply.error(Errno::EISDIR);
        }
        let bytes = tri!(reply, self.shared.read(&node, offset, size));
        reply.data(&bytes);
    }

    fn write(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        data: &[u8],
        _write_flags: WriteFlags,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        if ino.0 == CONTROL_ID {
            return reply.error(Errno::EPERM);
        }
        let node = tri!(reply, self.shared.inodes.get(ino));
        tri!(reply, self.shared.write(&node, offset, data));
        reply.written(data.len() as u32);
    }

    /// Nothing to do on close: ENOSYS makes the kernel stop sending FLUSH for every `close()`
    /// (locks are the kernel's, and data is written through).
    fn flush(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _lock_owner: LockOwner,
        reply: ReplyEmpty,
    ) {
        reply.error(Errno::ENOSYS);
    }

    /// Only files made by `create` are released; nothing is kept for them.
    fn release(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        reply.ok();
    }

    fn fsync(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        datasync: bool,
        reply: ReplyEmpty,
    ) {
        if ino.0 == CONTROL_ID {
            return reply.ok();
        }
        let node = tri!(reply, self.shared.inodes.get(ino));
        tri!(reply, self.shared.fsync(&node, datasync));
        reply.ok();
    }

    fn opendir(&self, _req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        let s = &self.shared;
        let node = tri!(reply, s.inodes.dir(ino));
        let entries = tri!(reply, s.read_dir(&node));
        let fh = s.add_listing(entries);
        reply.opened(FileHandle(fh), FopenFlags::empty());
    }

    fn readdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        let entries = tri!(reply, self.shared.listing(ino, fh));
        for (i, (ino, kind, name)) in entries.iter().enumerate().skip(offset as usize) {
            if reply.add(INodeNo(*ino), i as u64 + 1, *kind, name) {
                break;
            }
        }
        reply.ok();
    }

    fn releasedir(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        reply: ReplyEmpty,
    ) {
        self.shared.drop_listing(fh);
        reply.ok();
    }

    fn fsyncdir(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _d: bool,
        reply: ReplyEmpty,
    ) {
        reply.ok();
    }

    fn statfs(&self, _req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        let root = tri!(reply, self.shared.inodes.root());
        let st = tri!(reply, sys::statvfs_fd(root.fd.as_fd()));
        reply.statfs(
            st.f_blocks,
            st.f_bfree,
            st.f_bavail,
            st.f_files,
            st.f_ffree,
            st.f_bsize as u32,
            st.f_namemax as u32,
            st.f_frsize as u32,
        );
    }

    fn setxattr(
        &self,
        req: &Request,
        ino: INodeNo,
        name: &OsStr,
        value: &[u8],
        flags: i32,
        _position: u32,
        reply: ReplyEmpty,
    ) {
        let s = &self.shared;
        if ino.0 == CONTROL_ID {
            if name != REQUEST_XATTR {
                return reply.error(Errno::EPERM);
            }
            let status = s.answer_control(value, s.owner(req.uid(), req.gid()));
            s.statuses.keep(req.pid(), &status);
            return match status.errno() {
                None => reply.ok(),
                Some(e) => reply.error(e),
            };
        }
        if name == PLACED_XATTR {
            return reply.error(Errno::EPERM);
        }
        let node = tri!(reply, s.inodes.get(ino));
        let name = tri!(reply, name_c(name));
        tri!(
            reply,
            sys::setxattr_fd(node.fd.as_fd(), &name, value, flags)
        );
        reply.ok();
    }

    fn getxattr(&self, req: &Request, ino: INodeNo, name: &OsStr, size: u32, reply: ReplyXattr) {
        if ino.0 == CONTROL_ID && name == STATUS_XATTR && size > 0 {
            return match self.shared.statuses.take(req.pid()) {
                Some(line) if line.len() <= size as usize => reply.data(line.as_bytes()),
                Some(_) => reply.error(Errno::ERANGE),
                None => reply.error(Errno::ENODATA),
            };
        }
        if name == PLACED_XATTR || ino.0 == CONTROL_ID {
            return reply.error(Errno::ENODATA);
        }
        let node = tri!(reply, self.shared.inodes.get(ino));
        let name = tri!(reply, name_c(name));
        let value = tri!(reply, sys::xattr_call(node.fd.as_fd(), Some(&name), size));
        if size == 0 {
            reply.size(value.len() as u32)
        } else {
            reply.data(&value)
        }
    }

    fn listxattr(&self, _req: &Request, ino: INodeNo, size: u32, reply: ReplyXattr) {
        if ino.0 == CONTROL_ID {
            return reply.size(0);
        }
        let node = tri!(reply, self.shared.inodes.get(ino));
        let needed = tri!(reply, sys::xattr_call(node.fd.as_fd(), None, 0)).len();
        let raw = tri!(reply, sys::xattr_call(node.fd.as_fd(), None, needed as u32));
        let mut list = Vec::with_capacity(raw.len());
        for name in raw.split_inclusive(|b| *b == 0) {
            if name.strip_suffix(&[0]) != Some(PLACED_XATTR.as_bytes()) {
                list.extend_from_slice(name);
            }
        }
        if size == 0 {
            reply.size(list.len() as u32)
        } else if list.len() > size as usize {
            reply.error(Errno::ERANGE)
        } else {
            reply.data(&list)
        }
    }

    fn removexattr(&self, _req: &Request, ino: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        if name == PLACED_XATTR {
            return reply.error(Errno::EPERM);
        }
        let node = tri!(reply, self.shared.inodes.get(ino));
        let name = tri!(reply, name_c(name));
        tri!(reply, sys::removexattr_fd(node.fd.as_fd(), &name));
        reply.ok();
    }

    fn create(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        flags: i32,
        reply: ReplyCreate,
    ) {
        let s = &self.shared;
        tri!(reply, guard_reserved(parent, name));
        let dir = tri!(reply, s.inodes.dir(parent));
        let name = tri!(reply, name_c(name));
        let flags = OFlags::from_bits_retain(flags as u32);
        // Create (or find) the file first, then do what the open asks of it, so an
        // O_CREAT|O_TRUNC open of a placed file cannot leave the placement in force.
        let create = |excl: OFlags| {
            sys::openat(
                &dir.fd,
                &name,
                OFlags::CREATE | excl | OFlags::RDONLY | OFlags::NOFOLLOW,
                mode & !umask & 0o7777,
            )
        };
        let created = match create(flags & OFlags::EXCL) {
            // Sent again after a server died: that server may have created it.
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists && resent(req) => {
                create(OFlags::empty())
            }
            other => other,
        };
        drop(tri!(reply, created));
        let attr = tri!(reply, s.created_entry(&dir, &name, req.uid(), req.gid()));
        let node = tri!(reply, s.inodes.get(attr.ino));
        tri!(reply, s.opened_by_create(&node, flags));
        let attr = s.inodes.attr(&node).unwrap_or(attr);
        // As for every open here, the contents stay cached (the handle is not used).
        reply.created(
            &TTL,
            &attr,
            Generation(0),
            FileHandle(0),
            FopenFlags::FOPEN_KEEP_CACHE,
        );
    }

    fn fallocate(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        length: u64,
        mode: i32,
        reply: ReplyEmpty,
    ) {
        let node = tri!(reply, self.shared.inodes.get(ino));
        tri!(reply, self.shared.fallocate(&node, mode, offset, length));
        reply.ok();
    }
}
