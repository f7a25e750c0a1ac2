//! The FUSE filesystem: an inode table over the upper directory, where an upper file may be a
//! *placement marker* (an empty file carrying the `user.kache.blob` xattr) whose bytes are read
//! from a blob.
//!
//! Owns: the inode table (FUSE node id = upper inode number), open handles, passthrough backing
//! ids, copy-up. Must never: write into a blob, give a placed inode a write-capable backing, or
//! hold the table lock across I/O on file contents.

use std::collections::HashMap;
use std::ffi::{CStr, OsStr, OsString};
use std::fs::File;
use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirEntryExt, FileExt, FileTypeExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError, Weak};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use fuser::{
    BackingId, Errno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags, Generation, INodeNo,
    InitFlags, KernelConfig, LockOwner, Notifier, OpenFlags, RenameFlags, ReplyAttr, ReplyCreate,
    ReplyData, ReplyDirectory, ReplyEmpty, ReplyEntry, ReplyOpen, ReplyStatfs, ReplyWrite,
    ReplyXattr, Request, TimeOrNow, WriteFlags,
};

use crate::control::{self, ValidPlacement};
use crate::sys::{self, PLACED_XATTR};
use crate::BlobSource;

/// Entry and attribute TTL. 0 doubled no-op build time; placements invalidate explicitly.
const TTL: Duration = Duration::from_secs(1);
const ROOT_ID: u64 = 1;
/// Node id and st_ino of the control file (never an upper inode number).
pub(crate) const CONTROL_ID: u64 = u64::MAX - 1;
/// Where an upper inode numbered 1 (possible on tmpfs) is moved, since 1 is the FUSE root.
const REMAPPED_ONE: u64 = u64::MAX - 2;
pub(crate) const CONTROL_NAME: &str = ".kache-control";
/// Prefix of the temporary markers a placement renames into place; hidden from readdir.
pub(crate) const PLACING_PREFIX: &str = ".kache-placing.";
/// Upper bound on one control request, so a runaway client cannot exhaust memory.
const MAX_CONTROL_REQUEST: usize = 64 << 20;

/// Bytes of a placed file: which blob, and how long it is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Blob {
    pub hash: String,
    pub size: u64,
}

impl Blob {
    pub(crate) fn xattr_value(&self) -> String {
        format!("{}:{}", self.hash, self.size)
    }

    pub(crate) fn parse(value: &[u8]) -> Option<Blob> {
        let value = std::str::from_utf8(value).ok()?;
        let (hash, size) = value.split_once(':')?;
        Some(Blob {
            hash: hash.to_string(),
            size: size.parse().ok()?,
        })
    }
}

/// What a passthrough backing id points at. A backing is reused only for the same target.
#[derive(Clone, Debug, PartialEq, Eq)]
enum BackingTarget {
    Blob(String),
    Upper,
}

struct Node {
    /// O_PATH descriptor of the upper inode: keeps the inode (and so its number) alive.
    fd: OwnedFd,
    is_dir: bool,
    /// Kernel lookup count; modified only under the table lock.
    nlookup: AtomicU64,
    state: Mutex<NodeState>,
}

#[derive(Default)]
struct NodeState {
    placed: Option<Blob>,
    backing: Option<(BackingTarget, Weak<BackingId>)>,
}

enum Handle {
    File {
        node: Arc<Node>,
        file: File,
        /// Keeps the backing id registered while this handle is open.
        _backing: Option<Arc<BackingId>>,
    },
    Dir(Vec<(u64, FileType, OsString)>),
    Control(Mutex<ControlExchange>),
}

#[derive(Default)]
struct ControlExchange {
    request: Vec<u8>,
    response: Option<Vec<u8>>,
    /// How much of the response was read: the status is a stream, whatever the file offset
    /// (after writing the request, the client's offset is past it).
    sent: usize,
}

/// State shared by the serving threads and the mount handle.
pub(crate) struct Shared {
    nodes: Mutex<HashMap<u64, Arc<Node>>>,
    handles: Mutex<HashMap<u64, Arc<Handle>>>,
    next_fh: AtomicU64,
    root_ino: u64,
    blobs: Arc<dyn BlobSource>,
    /// `(blob root, read-only view of it)`: blobs are opened through the view.
    blob_view: Option<(PathBuf, OwnedFd)>,
    passthrough_wanted: bool,
    pub(crate) passthrough_on: AtomicBool,
    pub(crate) notifier: OnceLock<Notifier>,
    daemon_is_root: bool,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

fn errno(e: io::Error) -> Errno {
    Errno::from_i32(e.raw_os_error().unwrap_or(libc::EIO))
}

fn system_time(sec: i64, nsec: i64) -> SystemTime {
    if sec >= 0 {
        UNIX_EPOCH + Duration::new(sec as u64, nsec as u32)
    } else {
        UNIX_EPOCH - Duration::from_secs(sec.unsigned_abs()) + Duration::from_nanos(nsec as u64)
    }
}

fn file_type(mode: u32) -> FileType {
    match mode & libc::S_IFMT {
        libc::S_IFDIR => FileType::Directory,
        libc::S_IFLNK => FileType::Symlink,
        libc::S_IFIFO => FileType::NamedPipe,
        libc::S_IFSOCK => FileType::Socket,
        libc::S_IFCHR => FileType::CharDevice,
        libc::S_IFBLK => FileType::BlockDevice,
        _ => FileType::RegularFile,
    }
}

fn is_control(parent: INodeNo, name: &OsStr) -> bool {
    parent.0 == ROOT_ID && name == CONTROL_NAME
}

impl Shared {
    pub(crate) fn new(
        upper: OwnedFd,
        blobs: Arc<dyn BlobSource>,
        blob_view: Option<(PathBuf, OwnedFd)>,
        passthrough_wanted: bool,
    ) -> io::Result<Shared> {
        let st = sys::fstat(upper.as_fd())?;
        let root = Node {
            fd: upper,
            is_dir: true,
            nlookup: AtomicU64::new(1),
            state: Mutex::default(),
        };
        Ok(Shared {
            nodes: Mutex::new(HashMap::from([(ROOT_ID, Arc::new(root))])),
            handles: Mutex::default(),
            next_fh: AtomicU64::new(1),
            root_ino: st.st_ino,
            blobs,
            blob_view,
            passthrough_wanted,
            passthrough_on: AtomicBool::new(false),
            notifier: OnceLock::new(),
            daemon_is_root: unsafe { libc::geteuid() } == 0,
        })
    }

    fn node_id(&self, upper_ino: u64) -> u64 {
        match upper_ino {
            ino if ino == self.root_ino => ROOT_ID,
            1 => REMAPPED_ONE,
            ino => ino,
        }
    }

    fn node(&self, id: INodeNo) -> Result<Arc<Node>, Errno> {
        lock(&self.nodes).get(&id.0).cloned().ok_or(Errno::ENOENT)
    }

    fn dir_node(&self, id: INodeNo) -> Result<Arc<Node>, Errno> {
        let node = self.node(id)?;
        if node.is_dir {
            Ok(node)
        } else {
            Err(Errno::ENOTDIR)
        }
    }

    fn handle(&self, fh: FileHandle) -> Result<Arc<Handle>, Errno> {
        lock(&self.handles).get(&fh.0).cloned().ok_or(Errno::EBADF)
    }

    fn add_handle(&self, handle: Handle) -> u64 {
        let fh = self.next_fh.fetch_add(1, Ordering::Relaxed);
        lock(&self.handles).insert(fh, Arc::new(handle));
        fh
    }

    fn attr(&self, node: &Node) -> io::Result<FileAttr> {
        let st = sys::fstat(node.fd.as_fd())?;
        let placed = lock(&node.state).placed.as_ref().map(|b| b.size);
        Ok(self.attr_of(&st, placed))
    }

    fn attr_of(&self, st: &libc::stat, placed_size: Option<u64>) -> FileAttr {
        let size = placed_size.unwrap_or(st.st_size as u64);
        let blocks = match placed_size {
            Some(size) => size.div_ceil(512),
            None => st.st_blocks as u64,
        };
        FileAttr {
            ino: INodeNo(self.node_id(st.st_ino)),
            size,
            blocks,
            atime: system_time(st.st_atime, st.st_atime_nsec),
            mtime: system_time(st.st_mtime, st.st_mtime_nsec),
            ctime: system_time(st.st_ctime, st.st_ctime_nsec),
            crtime: UNIX_EPOCH,
            kind: file_type(st.st_mode),
            perm: (st.st_mode & 0o7777) as u16,
            nlink: st.st_nlink as u32,
            uid: st.st_uid,
            gid: st.st_gid,
            rdev: st.st_rdev as u32,
            blksize: st.st_blksize as u32,
            flags: 0,
        }
    }

    fn control_attr(&self) -> FileAttr {
        let now = SystemTime::now();
        FileAttr {
            ino: INodeNo(CONTROL_ID),
            size: 0,
            blocks: 0,
            atime: now,
            mtime: now,
            ctime: now,
            crtime: now,
            kind: FileType::RegularFile,
            perm: 0o666,
            nlink: 1,
            uid: 0,
            gid: 0,
            rdev: 0,
            blksize: 4096,
            flags: 0,
        }
    }

    /// Resolve `name` in `parent` on the upper dir, register the inode, count one lookup.
    fn entry(&self, parent: &Node, name: &CStr) -> io::Result<FileAttr> {
        let fd = sys::open_path(parent.fd.as_raw_fd(), name)?;
        let st = sys::fstat(fd.as_fd())?;
        let id = self.node_id(st.st_ino);
        let known = lock(&self.nodes).get(&id).cloned();
        let node = match known {
            Some(node) => node,
            None => {
                let is_dir = st.st_mode & libc::S_IFMT == libc::S_IFDIR;
                let placed = if st.st_mode & libc::S_IFMT == libc::S_IFREG {
                    sys::getxattr_fd(fd.as_fd(), &xattr_name())?.and_then(|v| Blob::parse(&v))
                } else {
                    None
                };
                let fresh = Arc::new(Node {
                    fd,
                    is_dir,
                    nlookup: AtomicU64::new(0),
                    state: Mutex::new(NodeState {
                        placed,
                        backing: None,
                    }),
                });
                lock(&self.nodes).entry(id).or_insert(fresh).clone()
            }
        };
        {
            let _table = lock(&self.nodes);
            node.nlookup.fetch_add(1, Ordering::Relaxed);
        }
        let placed = lock(&node.state).placed.as_ref().map(|b| b.size);
        Ok(self.attr_of(&st, placed))
    }

    fn forget(&self, id: u64, n: u64) {
        if id == ROOT_ID || id == CONTROL_ID {
            return;
        }
        let mut nodes = lock(&self.nodes);
        if let Some(node) = nodes.get(&id) {
            let left = node.nlookup.load(Ordering::Relaxed).saturating_sub(n);
            node.nlookup.store(left, Ordering::Relaxed);
            if left == 0 {
                nodes.remove(&id);
            }
        }
    }

    /// Open a blob for reading, through the read-only view when there is one.
    fn open_blob(&self, blob: &Blob) -> io::Result<File> {
        let path = self
            .blobs
            .blob_path(&blob.hash)
            .ok_or_else(|| io::Error::from_raw_os_error(libc::EIO))?;
        let file = match &self.blob_view {
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

    /// Turn a placed inode into an ordinary upper file, in place (same inode, so every hard
    /// link sees it). With `keep_bytes` false the file is about to be truncated to 0.
    fn copy_up(&self, node: &Node, state: &mut NodeState, keep_bytes: bool) -> io::Result<()> {
        let Some(blob) = state.placed.clone() else {
            return Ok(());
        };
        let before = sys::fstat(node.fd.as_fd())?;
        let marker = sys::reopen(node.fd.as_fd(), libc::O_WRONLY | libc::O_TRUNC)?;
        if keep_bytes {
            let src = self.open_blob(&blob)?;
            sys::clone_or_copy(&src, &marker)?;
        }
        // The copy is not a modification: keep the placement time.
        let mtime = libc::timespec {
            tv_sec: before.st_mtime,
            tv_nsec: before.st_mtime_nsec,
        };
        sys::utimens_fd(node.fd.as_fd(), &[sys::omit(), mtime])?;
        sys::removexattr_fd(node.fd.as_fd(), &xattr_name())?;
        state.placed = None;
        Ok(())
    }

    /// Open `node`; returns the handle, the open flags and the backing id to reply with.
    fn open_node(
        &self,
        node: &Arc<Node>,
        flags: i32,
        register: &dyn Fn(&File) -> io::Result<BackingId>,
    ) -> io::Result<(u64, FopenFlags, Option<Arc<BackingId>>)> {
        let writes = flags & libc::O_ACCMODE != libc::O_RDONLY;
        let trunc = flags & libc::O_TRUNC != 0;
        let mut state = lock(&node.state);
        if state.placed.is_some() && (writes || trunc) {
            self.copy_up(node, &mut state, !trunc)?;
        }
        let (file, target, mut fopen) = match &state.placed {
            Some(blob) => (
                self.open_blob(blob)?,
                BackingTarget::Blob(blob.hash.clone()),
                FopenFlags::FOPEN_KEEP_CACHE,
            ),
            None => {
                let keep = libc::O_TRUNC | libc::O_SYNC | libc::O_DSYNC | libc::O_NOATIME;
                let access = if writes { libc::O_RDWR } else { libc::O_RDONLY };
                let file = match sys::reopen(node.fd.as_fd(), access | (flags & keep)) {
                    Err(e) if writes && e.raw_os_error() == Some(libc::EACCES) => {
                        sys::reopen(node.fd.as_fd(), (flags & libc::O_ACCMODE) | (flags & keep))?
                    }
                    other => other?,
                };
                (file, BackingTarget::Upper, FopenFlags::empty())
            }
        };
        let backing = self.backing_for(&mut state, target, writes, &file, register);
        if backing.is_some() {
            // The kernel refuses passthrough opens with cache flags (EINVAL, seen as EIO).
            fopen = FopenFlags::empty();
        } else if self.passthrough_on.load(Ordering::Relaxed)
            && state
                .backing
                .as_ref()
                .is_some_and(|(_, w)| w.strong_count() > 0)
        {
            // The inode is still open in passthrough mode on its blob (a reader from before a
            // copy-up). The kernel allows one backing file per inode and refuses other opens
            // of it (EIO); say "busy" instead, as for writing a running executable.
            return Err(io::Error::from_raw_os_error(libc::ETXTBSY));
        }
        drop(state);
        let fh = self.add_handle(Handle::File {
            node: node.clone(),
            file,
            _backing: backing.clone(),
        });
        Ok((fh, fopen, backing))
    }

    /// The backing id for this open, if passthrough may be used. The one rule that keeps blobs
    /// safe: a blob target is only ever registered or reused for an open without write access.
    fn backing_for(
        &self,
        state: &mut NodeState,
        target: BackingTarget,
        writes: bool,
        file: &File,
        register: &dyn Fn(&File) -> io::Result<BackingId>,
    ) -> Option<Arc<BackingId>> {
        if !self.passthrough_on.load(Ordering::Relaxed) {
            return None;
        }
        if writes && target != BackingTarget::Upper {
            return None;
        }
        if let Some((live_target, weak)) = &state.backing {
            if let Some(live) = weak.upgrade() {
                return (*live_target == target).then_some(live);
            }
        }
        match register(file) {
            Ok(id) => {
                let id = Arc::new(id);
                state.backing = Some((target, Arc::downgrade(&id)));
                Some(id)
            }
            Err(e) => {
                if matches!(e.raw_os_error(), Some(libc::EPERM) | Some(libc::ENOTTY)) {
                    // Not root or no kernel support: serve reads ourselves from now on.
                    self.passthrough_on.store(false, Ordering::Relaxed);
                }
                None
            }
        }
    }

    /// New upper files belong to the caller, not to a root daemon.
    fn give_to_caller(&self, fd: &OwnedFd, req: &Request) {
        if self.daemon_is_root && req.uid() != 0 {
            let _ = sys::chown_fd(fd.as_fd(), Some(req.uid()), Some(req.gid()));
        }
    }

    fn created_entry(&self, parent: &Node, name: &CStr, req: &Request) -> io::Result<FileAttr> {
        if self.daemon_is_root && req.uid() != 0 {
            let fd = sys::open_path(parent.fd.as_raw_fd(), name)?;
            self.give_to_caller(&fd, req);
        }
        self.entry(parent, name)
    }

    fn read_dir(&self, node: &Node, at_root: bool) -> io::Result<Vec<(u64, FileType, OsString)>> {
        let path = sys::proc_path(node.fd.as_fd());
        let path = Path::new(OsStr::from_bytes(path.as_bytes()));
        let st = sys::fstat(node.fd.as_fd())?;
        let me = self.node_id(st.st_ino);
        let mut entries = vec![
            (me, FileType::Directory, OsString::from(".")),
            (me, FileType::Directory, OsString::from("..")),
        ];
        for entry in std::fs::read_dir(path)? {
            let entry = entry?;
            let name = entry.file_name();
            if (at_root && name == CONTROL_NAME)
                || name.as_bytes().starts_with(PLACING_PREFIX.as_bytes())
            {
                continue;
            }
            let kind = match entry.file_type() {
                Ok(t) if t.is_dir() => FileType::Directory,
                Ok(t) if t.is_symlink() => FileType::Symlink,
                Ok(t) if t.is_fifo() => FileType::NamedPipe,
                Ok(t) if t.is_socket() => FileType::Socket,
                Ok(t) if t.is_char_device() => FileType::CharDevice,
                Ok(t) if t.is_block_device() => FileType::BlockDevice,
                _ => FileType::RegularFile,
            };
            entries.push((self.node_id(entry.ino()), kind, name));
        }
        Ok(entries)
    }

    /// Apply a validated control request: create every marker under a temporary name, then
    /// rename each over its destination (each replacement is atomic), then drop kernel caches
    /// of the replaced names.
    fn apply(&self, items: &[ValidPlacement], req: &Request) -> io::Result<usize> {
        let root = self
            .node(INodeNo(ROOT_ID))
            .map_err(|_| io::Error::other("no root"))?;
        let mut staged: Vec<(Arc<OwnedFd>, std::ffi::CString, std::ffi::CString)> = Vec::new();
        // Most placements of one request share a directory: resolve each directory once.
        let mut dirs: HashMap<PathBuf, Arc<OwnedFd>> = HashMap::new();
        let result = (|| -> io::Result<()> {
            for (i, item) in items.iter().enumerate() {
                let dir_path = item.path.parent().unwrap_or(Path::new("")).to_path_buf();
                let parent = match dirs.get(&dir_path) {
                    Some(fd) => fd.clone(),
                    None => {
                        let fd = Arc::new(self.ensure_dirs(&root, Some(&dir_path), req)?);
                        dirs.insert(dir_path, fd.clone());
                        fd
                    }
                };
                let name = sys::cstr(item.path.file_name().unwrap_or_default())?;
                let tmp = sys::cstr(OsStr::new(&format!(
                    "{PLACING_PREFIX}{}.{}",
                    std::process::id(),
                    self.next_fh.fetch_add(1, Ordering::Relaxed) + i as u64
                )))?;
                let fd = sys::openat(
                    parent.as_raw_fd(),
                    &tmp,
                    libc::O_CREAT | libc::O_EXCL | libc::O_WRONLY,
                    0o600,
                )?;
                staged.push((parent, tmp, name));
                let marker = File::from(fd);
                let blob = Blob {
                    hash: item.hash.clone(),
                    size: item.size,
                };
                sys::fsetxattr(&marker, &xattr_name(), blob.xattr_value().as_bytes())?;
                marker.set_permissions(std::fs::Permissions::from_mode(item.mode))?;
                if let Some(t) = item.mtime {
                    marker.set_modified(t)?;
                }
                self.give_to_caller(&OwnedFd::from(marker), req);
            }
            Ok(())
        })();
        if let Err(e) = result {
            for (parent, tmp, _) in &staged {
                let _ = sys::unlinkat(parent.as_raw_fd(), tmp, 0);
            }
            return Err(e);
        }
        let mut first_error = None;
        for (parent, tmp, name) in &staged {
            let done = sys::renameat2(parent.as_raw_fd(), tmp, parent.as_raw_fd(), name, 0);
            if let Err(e) = done {
                let _ = sys::unlinkat(parent.as_raw_fd(), tmp, 0);
                first_error.get_or_insert(e);
                continue;
            }
            self.invalidate_name(parent, name);
        }
        match first_error {
            Some(e) => Err(e),
            None => Ok(staged.len()),
        }
    }

    /// Make the kernel forget a cached name whose inode a placement replaced.
    fn invalidate_name(&self, parent: &OwnedFd, name: &CStr) {
        // Cheap enough per name; the kernel ignores names it has not cached.
        let Ok(st) = sys::fstat(parent.as_fd()) else {
            return;
        };
        let id = self.node_id(st.st_ino);
        if !lock(&self.nodes).contains_key(&id) {
            return; // the kernel has never looked inside this directory
        }
        if let Some(notifier) = self.notifier.get() {
            let _ = notifier.inval_entry(INodeNo(id), OsStr::from_bytes(name.to_bytes()));
        }
    }

    /// Walk (creating as needed) the directories of a relative path, never following symlinks.
    fn ensure_dirs(&self, root: &Node, dirs: Option<&Path>, req: &Request) -> io::Result<OwnedFd> {
        let mut dir = sys::openat(
            root.fd.as_raw_fd(),
            c".",
            libc::O_PATH | libc::O_DIRECTORY,
            0,
        )?;
        for comp in dirs.into_iter().flat_map(Path::components) {
            let name = sys::cstr(comp.as_os_str())?;
            match sys::mkdirat(dir.as_raw_fd(), &name, 0o755) {
                Ok(()) => {
                    if let Ok(fd) = sys::open_path(dir.as_raw_fd(), &name) {
                        self.give_to_caller(&fd, req);
                    }
                }
                Err(e) if e.raw_os_error() == Some(libc::EEXIST) => {}
                Err(e) => return Err(e),
            }
            dir = sys::openat(
                dir.as_raw_fd(),
                &name,
                libc::O_PATH | libc::O_DIRECTORY | libc::O_NOFOLLOW,
                0,
            )?;
        }
        Ok(dir)
    }

    fn control_read(
        &self,
        exchange: &Mutex<ControlExchange>,
        req: &Request,
        size: usize,
    ) -> Vec<u8> {
        let mut ex = lock(exchange);
        if ex.response.is_none() {
            let response = match control::validate(&ex.request, self.blobs.as_ref()) {
                Ok(items) => match self.apply(&items, req) {
                    Ok(n) => control::ok_line(n),
                    Err(e) => control::error_line(&format!("applying placements: {e}")),
                },
                Err(reason) => control::error_line(&reason),
            };
            ex.response = Some(response.into_bytes());
            ex.sent = 0;
        }
        let response = ex.response.as_deref().unwrap_or_default();
        let start = ex.sent.min(response.len());
        let end = (start + size).min(response.len());
        let chunk = response[start..end].to_vec();
        ex.sent = end;
        chunk
    }
}

pub(crate) fn xattr_name() -> std::ffi::CString {
    std::ffi::CString::new(PLACED_XATTR).unwrap_or_default()
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
    if is_control(parent, name) || name.as_bytes().starts_with(PLACING_PREFIX.as_bytes()) {
        Err(Errno::EPERM)
    } else {
        Ok(())
    }
}

impl Filesystem for KacheFs {
    fn init(&mut self, _req: &Request, config: &mut KernelConfig) -> io::Result<()> {
        let s = &self.shared;
        if s.passthrough_wanted
            && config.add_capabilities(InitFlags::FUSE_PASSTHROUGH).is_ok()
            && config.set_max_stack_depth(2).is_ok()
        {
            s.passthrough_on.store(true, Ordering::Relaxed);
        }
        let _ = config.add_capabilities(InitFlags::FUSE_PARALLEL_DIROPS);
        let _ = config.add_capabilities(InitFlags::FUSE_DIRECT_IO_ALLOW_MMAP);
        Ok(())
    }

    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        let s = &self.shared;
        if is_control(parent, name) {
            return reply.entry(&TTL, &s.control_attr(), Generation(0));
        }
        let dir = tri!(reply, s.dir_node(parent));
        let name = tri!(reply, name_c(name));
        let attr = tri!(reply, s.entry(&dir, &name));
        reply.entry(&TTL, &attr, Generation(0));
    }

    fn forget(&self, _req: &Request, ino: INodeNo, nlookup: u64) {
        self.shared.forget(ino.0, nlookup);
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        let s = &self.shared;
        if ino.0 == CONTROL_ID {
            return reply.attr(&TTL, &s.control_attr());
        }
        let node = tri!(reply, s.node(ino));
        let attr = tri!(reply, s.attr(&node));
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
            return reply.attr(&TTL, &s.control_attr());
        }
        let node = tri!(reply, s.node(ino));
        let fd = node.fd.as_fd();
        let is_symlink = tri!(reply, sys::fstat(fd)).st_mode & libc::S_IFMT == libc::S_IFLNK;
        if let Some(size) = size {
            let mut state = lock(&node.state);
            if state.placed.is_some() {
                tri!(reply, s.copy_up(&node, &mut state, size != 0));
            }
            drop(state);
            let by_handle = fh.and_then(|fh| s.handle(fh).ok());
            match by_handle.as_deref() {
                Some(Handle::File { file, .. }) if lock(&node.state).placed.is_none() => {
                    tri!(
                        reply,
                        file.set_len(size).or_else(|_| sys::truncate_fd(fd, size))
                    )
                }
                _ => tri!(reply, sys::truncate_fd(fd, size)),
            }
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
        let attr = tri!(reply, s.attr(&node));
        reply.attr(&TTL, &attr);
    }

    fn readlink(&self, _req: &Request, ino: INodeNo, reply: ReplyData) {
        let node = tri!(reply, self.shared.node(ino));
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
        let dir = tri!(reply, s.dir_node(parent));
        let name = tri!(reply, name_c(name));
        tri!(
            reply,
            sys::mknodat(dir.fd.as_raw_fd(), &name, mode & !umask, rdev)
        );
        let attr = tri!(reply, s.created_entry(&dir, &name, req));
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
        let dir = tri!(reply, s.dir_node(parent));
        let name = tri!(reply, name_c(name));
        tri!(
            reply,
            sys::mkdirat(dir.fd.as_raw_fd(), &name, mode & !umask)
        );
        let attr = tri!(reply, s.created_entry(&dir, &name, req));
        reply.entry(&TTL, &attr, Generation(0));
    }

    fn unlink(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        tri!(reply, guard_reserved(parent, name));
        let dir = tri!(reply, self.shared.dir_node(parent));
        let name = tri!(reply, name_c(name));
        tri!(reply, sys::unlinkat(dir.fd.as_raw_fd(), &name, 0));
        reply.ok();
    }

    fn rmdir(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let dir = tri!(reply, self.shared.dir_node(parent));
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
        let dir = tri!(reply, s.dir_node(parent));
        let name = tri!(reply, name_c(link_name));
        let target = tri!(reply, name_c(target.as_os_str()));
        tri!(reply, sys::symlinkat(&target, dir.fd.as_raw_fd(), &name));
        let attr = tri!(reply, s.created_entry(&dir, &name, req));
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
        let from = tri!(reply, s.dir_node(parent));
        let to = tri!(reply, s.dir_node(newparent));
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
        let node = tri!(reply, s.node(ino));
        let dir = tri!(reply, s.dir_node(newparent));
        let name = tri!(reply, name_c(newname));
        tri!(
            reply,
            sys::link_fd(node.fd.as_fd(), dir.fd.as_raw_fd(), &name)
        );
        let attr = tri!(reply, s.entry(&dir, &name));
        reply.entry(&TTL, &attr, Generation(0));
    }

    fn open(&self, _req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        let s = &self.shared;
        if ino.0 == CONTROL_ID {
            let fh = s.add_handle(Handle::Control(Mutex::default()));
            let stream = FopenFlags::FOPEN_DIRECT_IO | FopenFlags::FOPEN_NONSEEKABLE;
            return reply.opened(FileHandle(fh), stream);
        }
        let node = tri!(reply, s.node(ino));
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
                reply.data(&s.control_read(ex, req, size as usize));
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
                let mut ex = lock(ex);
                if ex.request.len() + data.len() > MAX_CONTROL_REQUEST {
                    return reply.error(Errno::EFBIG);
                }
                ex.request.extend_from_slice(data);
                ex.response = None;
                reply.written(data.len() as u32);
            }
            Handle::Dir(_) => reply.error(Errno::EISDIR),
        }
    }

    fn flush(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _lock_owner: LockOwner,
        reply: ReplyEmpty,
    ) {
        reply.ok();
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
        lock(&self.shared.handles).remove(&fh.0);
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
        let node = tri!(reply, s.dir_node(ino));
        let entries = tri!(reply, s.read_dir(&node, ino.0 == ROOT_ID));
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
        lock(&self.shared.handles).remove(&fh.0);
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
        let root = tri!(reply, self.shared.node(INodeNo(ROOT_ID)));
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
        let node = tri!(reply, self.shared.node(ino));
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
        let node = tri!(reply, self.shared.node(ino));
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
        let node = tri!(reply, self.shared.node(ino));
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
        let node = tri!(reply, self.shared.node(ino));
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
        let dir = tri!(reply, s.dir_node(parent));
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
        let attr = tri!(reply, s.created_entry(&dir, &name, req));
        let node = tri!(reply, s.node(attr.ino));
        let register = |f: &File| reply.open_backing(f);
        let open_flags = flags & !(libc::O_CREAT | libc::O_EXCL);
        let (fh, fopen, backing) = tri!(reply, s.open_node(&node, open_flags, &register));
        let attr = match s.attr(&node) {
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
