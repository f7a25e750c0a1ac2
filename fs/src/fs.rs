//! The `fuser::Filesystem` face of a mount: each callback resolves node ids and handles,
//! forwards to the upper directory or to [`Shared`], and replies with an errno it chose.
//!
//! Must never: let a caller create, remove or see the names a mount reserves (the control
//! file, staging names), or set or remove the placement xattr by hand.

use std::ffi::OsStr;
use std::fs::File;
use std::io;
use std::os::fd::{AsFd, AsRawFd};
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use fuser::{
    Errno, FileHandle, Filesystem, FopenFlags, Generation, INodeNo, InitFlags, KernelConfig,
    LockOwner, OpenFlags, RenameFlags, ReplyAttr, ReplyCreate, ReplyData, ReplyDirectory,
    ReplyEmpty, ReplyEntry, ReplyOpen, ReplyStatfs, ReplyWrite, ReplyXattr, Request, TimeOrNow,
    WriteFlags,
};

use crate::inodes::{control_attr, lock, ROOT_ID};
use crate::placement::{self, CONTROL_ID, CONTROL_NAME, PLACED_XATTR};
use crate::state::{Handle, Shared};
use crate::sys;

/// Entry and attribute TTL: how long the kernel answers lookups and stats of the mount from its
/// own cache. Every change goes through this filesystem (so the kernel sees it) except the
/// ones the server makes itself, placements and `clear`, which invalidate the names they
/// replace. So the TTL can be long, and it should be: cargo stats every output of every unit
/// on each build, and with a TTL of 1 s a build a few seconds after the last one sent a lookup
/// for each (measured: 3,200 requests for a no-op build of a 158-unit workspace; 1,900 with
/// this TTL and FLUSH off, all of them opens and releases).
const TTL: Duration = Duration::from_secs(600);

fn errno(e: io::Error) -> Errno {
    Errno::from_i32(e.raw_os_error().unwrap_or(libc::EIO))
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
        let s = &self.shared;
        if s.backing.wanted
            && config.add_capabilities(InitFlags::FUSE_PASSTHROUGH).is_ok()
            && config.set_max_stack_depth(2).is_ok()
        {
            s.backing.on.store(true, Ordering::Relaxed);
        }
        let _ = config.add_capabilities(InitFlags::FUSE_PARALLEL_DIROPS);
        let _ = config.add_capabilities(InitFlags::FUSE_DIRECT_IO_ALLOW_MMAP);
        Ok(())
    }

    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        let s = &self.shared;
        if is_control(parent, name) {
            return reply.entry(&TTL, &control_attr(), Generation(0));
        }
        let dir = tri!(reply, s.inodes.dir(parent));
        let name = tri!(reply, name_c(name));
        let attr = tri!(reply, s.inodes.lookup(&dir, &name));
        reply.entry(&TTL, &attr, Generation(0));
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
        fh: Option<FileHandle>,
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
        let is_symlink = tri!(reply, sys::fstat(fd)).st_mode & libc::S_IFMT == libc::S_IFLNK;
        if let Some(size) = size {
            tri!(reply, s.truncate(&node, size, fh));
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
            tri!(reply, sys::utimens_fd(fd, &[ts(atime), ts(mtime)]));
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
        tri!(
            reply,
            sys::mknodat(dir.fd.as_raw_fd(), &name, mode & !umask, rdev)
        );
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
        tri!(
            reply,
            sys::mkdirat(dir.fd.as_raw_fd(), &name, mode & !umask)
        );
        let attr = tri!(reply, s.created_entry(&dir, &name, req.uid(), req.gid()));
        reply.entry(&TTL, &attr, Generation(0));
    }

    fn unlink(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        tri!(reply, guard_reserved(parent, name));
        let dir = tri!(reply, self.shared.inodes.dir(parent));
        let name = tri!(reply, name_c(name));
        tri!(reply, sys::unlinkat(dir.fd.as_raw_fd(), &name, 0));
        reply.ok();
    }

    fn rmdir(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let dir = tri!(reply, self.shared.inodes.dir(parent));
        let name = tri!(reply, name_c(name));
        tri!(
            reply,
            sys::unlinkat(dir.fd.as_raw_fd(), &name, libc::AT_REMOVEDIR)
        );
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
        tri!(reply, sys::symlinkat(&target, dir.fd.as_raw_fd(), &name));
        let attr = tri!(reply, s.created_entry(&dir, &name, req.uid(), req.gid()));
        reply.entry(&TTL, &attr, Generation(0));
    }

    fn rename(
        &self,
        _req: &Request,
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
        tri!(
            reply,
            sys::renameat2(
                from.fd.as_raw_fd(),
                &name,
                to.fd.as_raw_fd(),
                &newname,
                flags.bits()
            )
        );
        reply.ok();
    }

    fn link(
        &self,
        _req: &Request,
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
        tri!(
            reply,
            sys::link_fd(node.fd.as_fd(), dir.fd.as_raw_fd(), &name)
        );
        let attr = tri!(reply, s.inodes.lookup(&dir, &name));
        reply.entry(&TTL, &attr, Generation(0));
    }

    fn open(&self, _req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        let s = &self.shared;
        if ino.0 == CONTROL_ID {
            let fh = s.add_handle(Handle::Control(Mutex::default()));
            let stream = FopenFlags::FOPEN_DIRECT_IO | FopenFlags::FOPEN_NONSEEKABLE;
            return reply.opened(FileHandle(fh), stream);
        }
        let node = tri!(reply, s.inodes.get(ino));
        if node.is_dir {
            return reply.error(Errno::EISDIR);
        }
        let register = |f: &File| reply.open_backing(f);
        let (fh, fopen, backing) = tri!(reply, s.open_node(&node, flags.0, &register));
        match backing {
            Some(id) => reply.opened_passthrough(FileHandle(fh), fopen, &id),
            None => reply.opened(FileHandle(fh), fopen),
        }
    }

    fn read(
        &self,
        req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        let s = &self.shared;
        let handle = tri!(reply, s.handle(fh));
        match &*handle {
            Handle::File { file, .. } => {
                let mut buf = vec![0u8; size as usize];
                let mut filled = 0;
                while filled < buf.len() {
                    match file.read_at(&mut buf[filled..], offset + filled as u64) {
                        Ok(0) => break,
                        Ok(n) => filled += n,
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                        Err(e) => return reply.error(errno(e)),
                    }
                }
                reply.data(&buf[..filled]);
            }
            Handle::Control(ex) => {
                let owner = s.owner(req.uid(), req.gid());
                let status = lock(ex).read(size as usize, |r| s.answer_control(r, owner));
                reply.data(&status);
            }
            Handle::Dir(_) => reply.error(Errno::EISDIR),
        }
    }

    fn write(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        data: &[u8],
        _write_flags: WriteFlags,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        let handle = tri!(reply, self.shared.handle(fh));
        match &*handle {
            Handle::File { node, file, .. } => {
                if lock(&node.state).placed.is_some() {
                    // Unreachable by construction (write opens copy up); refuse rather than risk.
                    return reply.error(Errno::EBADF);
                }
                tri!(reply, file.write_all_at(data, offset));
                reply.written(data.len() as u32);
            }
            Handle::Control(ex) => {
                if !lock(ex).write(data) {
                    return reply.error(Errno::EFBIG);
                }
                reply.written(data.len() as u32);
            }
            Handle::Dir(_) => reply.error(Errno::EISDIR),
        }
    }

    /// Nothing to do on close: ENOSYS makes the kernel stop sending FLUSH for every `close()`
    /// (one round trip per file cargo reads; locks are the kernel's, data is written through).
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

    fn release(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        self.shared.release(fh);
        reply.ok();
    }

    fn fsync(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        datasync: bool,
        reply: ReplyEmpty,
    ) {
        let handle = tri!(reply, self.shared.handle(fh));
        if let Handle::File { file, .. } = &*handle {
            let synced = if datasync {
                file.sync_data()
            } else {
                file.sync_all()
            };
            // A read-only blob handle cannot be synced and needs no sync.
            if let Err(e) = synced {
                if e.raw_os_error() != Some(libc::EBADF) {
                    return reply.error(errno(e));
                }
            }
        }
        reply.ok();
    }

    fn opendir(&self, _req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        let s = &self.shared;
        let node = tri!(reply, s.inodes.dir(ino));
        let entries = tri!(reply, s.read_dir(&node));
        let fh = s.add_handle(Handle::Dir(entries));
        reply.opened(FileHandle(fh), FopenFlags::empty());
    }

    fn readdir(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        let handle = tri!(reply, self.shared.handle(fh));
        let Handle::Dir(entries) = &*handle else {
            return reply.error(Errno::ENOTDIR);
        };
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
        self.shared.release(fh);
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
        _req: &Request,
        ino: INodeNo,
        name: &OsStr,
        value: &[u8],
        flags: i32,
        _position: u32,
        reply: ReplyEmpty,
    ) {
        if name == PLACED_XATTR {
            return reply.error(Errno::EPERM);
        }
        let node = tri!(reply, self.shared.inodes.get(ino));
        let name = tri!(reply, name_c(name));
        tri!(
            reply,
            sys::setxattr_fd(node.fd.as_fd(), &name, value, flags)
        );
        reply.ok();
    }

    fn getxattr(&self, _req: &Request, ino: INodeNo, name: &OsStr, size: u32, reply: ReplyXattr) {
        if name == PLACED_XATTR || ino.0 == CONTROL_ID {
            return reply.error(Errno::from_i32(libc::ENODATA));
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
        // Create (or find) the file first; the open below then decides about copy-up, so an
        // O_CREAT|O_TRUNC open of a placed file cannot leave the placement in force.
        let created = sys::openat(
            dir.fd.as_raw_fd(),
            &name,
            libc::O_CREAT | (flags & libc::O_EXCL) | libc::O_RDONLY | libc::O_NOFOLLOW,
            mode & !umask & 0o7777,
        );
        drop(tri!(reply, created));
        let attr = tri!(reply, s.created_entry(&dir, &name, req.uid(), req.gid()));
        let node = tri!(reply, s.inodes.get(attr.ino));
        let register = |f: &File| reply.open_backing(f);
        let open_flags = flags & !(libc::O_CREAT | libc::O_EXCL);
        let (fh, fopen, backing) = tri!(reply, s.open_node(&node, open_flags, &register));
        let attr = match s.inodes.attr(&node) {
            Ok(a) => a,
            Err(_) => attr,
        };
        match backing {
            Some(id) => {
                reply.created_passthrough(&TTL, &attr, Generation(0), FileHandle(fh), fopen, &id)
            }
            None => reply.created(&TTL, &attr, Generation(0), FileHandle(fh), fopen),
        }
    }

    fn fallocate(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        length: u64,
        mode: i32,
        reply: ReplyEmpty,
    ) {
        let handle = tri!(reply, self.shared.handle(fh));
        match &*handle {
            Handle::File { node, file, .. } if lock(&node.state).placed.is_none() => {
                tri!(reply, sys::fallocate(file, mode, offset, length));
                reply.ok();
            }
            _ => reply.error(Errno::EBADF),
        }
    }
}
