//! The state of one mount, shared by its serving threads and its handle: the inode table, the
//! open handles, where bytes come from, and the kernel notifier; and the operations that need
//! more than one of those (opening, copy-up, creating, listing, applying placements).
//!
//! Must never: write into a blob (a write-open or truncate of a placed file copies it up first,
//! in place), or leave the kernel caching a name a placement replaced.

use std::collections::HashMap;
use std::ffi::{CStr, OsStr, OsString};
use std::fs::File;
use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirEntryExt, FileTypeExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use fuser::{BackingId, Errno, FileAttr, FileHandle, FileType, FopenFlags, INodeNo, Notifier};

use crate::backing::{Backing, BackingTarget};
use crate::control::{self, Command, Exchange};
use crate::inodes::{lock, Inodes, Node, NodeState, ROOT_ID};
use crate::placement::{self, xattr_name, Owner, PLACING_PREFIX};
use crate::sys;
use crate::BlobSource;

/// An open file, directory listing or control exchange.
pub(crate) enum Handle {
    File {
        node: Arc<Node>,
        file: File,
        /// Keeps the backing id registered while this handle is open.
        _backing: Option<Arc<BackingId>>,
    },
    Dir(Vec<(u64, FileType, OsString)>),
    Control(Mutex<Exchange>),
}

/// What an open answers the kernel: the handle, its flags, and the backing to pass through to.
pub(crate) type Opened = (u64, FopenFlags, Option<Arc<BackingId>>);

pub(crate) struct Shared {
    pub(crate) inodes: Inodes,
    handles: Mutex<HashMap<u64, Arc<Handle>>>,
    next_fh: AtomicU64,
    pub(crate) backing: Backing,
    pub(crate) notifier: OnceLock<Notifier>,
    daemon_is_root: bool,
}

impl Shared {
    pub(crate) fn new(
        upper: OwnedFd,
        blobs: Arc<dyn BlobSource>,
        blob_view: Option<(PathBuf, OwnedFd)>,
        passthrough_wanted: bool,
    ) -> io::Result<Shared> {
        Ok(Shared {
            inodes: Inodes::new(upper)?,
            handles: Mutex::default(),
            next_fh: AtomicU64::new(1),
            backing: Backing::new(blobs, blob_view, passthrough_wanted),
            notifier: OnceLock::new(),
            daemon_is_root: unsafe { libc::geteuid() } == 0,
        })
    }

    pub(crate) fn handle(&self, fh: FileHandle) -> Result<Arc<Handle>, Errno> {
        lock(&self.handles).get(&fh.0).cloned().ok_or(Errno::EBADF)
    }

    pub(crate) fn add_handle(&self, handle: Handle) -> u64 {
        let fh = self.next_fh.fetch_add(1, Ordering::Relaxed);
        lock(&self.handles).insert(fh, Arc::new(handle));
        fh
    }

    pub(crate) fn release(&self, fh: FileHandle) {
        lock(&self.handles).remove(&fh.0);
    }

    /// New upper files belong to the caller, not to a root server.
    pub(crate) fn owner(&self, uid: u32, gid: u32) -> Owner {
        (self.daemon_is_root && uid != 0).then_some((uid, gid))
    }

    /// Turns a placed inode into an ordinary upper file, in place (same inode, so every hard
    /// link sees it). With `keep_bytes` false the file is about to be truncated to 0.
    pub(crate) fn copy_up(
        &self,
        node: &Node,
        state: &mut NodeState,
        keep_bytes: bool,
    ) -> io::Result<()> {
        let Some(blob) = state.placed.clone() else {
            return Ok(());
        };
        let before = sys::fstat(node.fd.as_fd())?;
        let marker = sys::reopen(node.fd.as_fd(), libc::O_WRONLY | libc::O_TRUNC)?;
        if keep_bytes {
            let src = self.backing.open_blob(&blob)?;
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

    /// Sets a file's size, through the handle that asks when there is one (a placed file is
    /// copied up first, without its bytes when truncated to 0).
    pub(crate) fn truncate(
        &self,
        node: &Node,
        size: u64,
        fh: Option<FileHandle>,
    ) -> io::Result<()> {
        let mut state = lock(&node.state);
        if state.placed.is_some() {
            self.copy_up(node, &mut state, size != 0)?;
        }
        drop(state);
        let fd = node.fd.as_fd();
        match fh.and_then(|fh| self.handle(fh).ok()).as_deref() {
            Some(Handle::File { file, .. }) if lock(&node.state).placed.is_none() => {
                file.set_len(size).or_else(|_| sys::truncate_fd(fd, size))
            }
            _ => sys::truncate_fd(fd, size),
        }
    }

    /// Opens `node` with `flags` (copying a placed file up first if the open may change it).
    pub(crate) fn open_node(
        &self,
        node: &Arc<Node>,
        flags: i32,
        register: &dyn Fn(&File) -> io::Result<BackingId>,
    ) -> io::Result<Opened> {
        let writes = flags & libc::O_ACCMODE != libc::O_RDONLY;
        let trunc = flags & libc::O_TRUNC != 0;
        let mut state = lock(&node.state);
        if state.placed.is_some() && (writes || trunc) {
            self.copy_up(node, &mut state, !trunc)?;
        }
        let (file, target, mut fopen) = match &state.placed {
            Some(blob) => (
                self.backing.open_blob(blob)?,
                BackingTarget::Blob(blob.hash.clone()),
                FopenFlags::FOPEN_KEEP_CACHE,
            ),
            None => (
                open_upper(node, flags, writes)?,
                BackingTarget::Upper,
                FopenFlags::empty(),
            ),
        };
        let backing = self
            .backing
            .backing_for(&mut state.backing, target, writes, &file, register);
        if backing.is_some() {
            // The kernel refuses passthrough opens with cache flags (EINVAL, seen as EIO).
            fopen = FopenFlags::empty();
        } else if self.backing.blocks_plain_open(&state.backing) {
            // Still open in passthrough mode on its blob (a reader from before a copy-up):
            // say "busy", as for writing a running executable.
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

    /// Registers a name just created in `parent` on behalf of `uid`/`gid`.
    pub(crate) fn created_entry(
        &self,
        parent: &Node,
        name: &CStr,
        uid: u32,
        gid: u32,
    ) -> io::Result<FileAttr> {
        if let Some((uid, gid)) = self.owner(uid, gid) {
            let fd = sys::open_path(parent.fd.as_raw_fd(), name)?;
            let _ = sys::chown_fd(fd.as_fd(), Some(uid), Some(gid));
        }
        self.inodes.lookup(parent, name)
    }

    /// A directory's entries as the kernel should see them (reserved names hidden).
    pub(crate) fn read_dir(&self, node: &Node) -> io::Result<Vec<(u64, FileType, OsString)>> {
        let path = sys::proc_path(node.fd.as_fd());
        let path = Path::new(OsStr::from_bytes(path.as_bytes()));
        let st = sys::fstat(node.fd.as_fd())?;
        let me = self.inodes.id_of(st.st_ino);
        let at_root = me == ROOT_ID;
        let mut entries = vec![
            (me, FileType::Directory, OsString::from(".")),
            (me, FileType::Directory, OsString::from("..")),
        ];
        for entry in std::fs::read_dir(path)? {
            let entry = entry?;
            let name = entry.file_name();
            if placement::is_reserved(&name, at_root) {
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
            entries.push((self.inodes.id_of(entry.ino()), kind, name));
        }
        Ok(entries)
    }

    /// The status of a control request: validated as a whole, then applied.
    pub(crate) fn answer_control(&self, request: &[u8], owner: Owner) -> String {
        let items = match control::validate(request, self.backing.blobs()) {
            Ok(Command::Place(items)) => items,
            Ok(Command::Clear) => {
                return match self.clear() {
                    Ok(n) => control::ok_line(n),
                    Err(e) => control::error_line(&format!("clearing: {e}")),
                }
            }
            Err(reason) => return control::error_line(&reason),
        };
        let root = match self.inodes.root() {
            Ok(root) => root,
            Err(_) => return control::error_line("applying placements: no root"),
        };
        let mut replaced = |dir: &OwnedFd, name: &CStr| self.invalidate_name(dir, name);
        match placement::apply(root.fd.as_fd(), &items, owner, &mut replaced) {
            Ok(n) => control::ok_line(n),
            Err(e) => control::error_line(&format!("applying placements: {e}")),
        }
    }

    /// Empties the mount at once, as `rm -rf` of everything in it would: each entry of the root
    /// moves into a hidden trash directory in the upper directory and the kernel forgets its
    /// name; the trash is deleted in the background. Files still open stay readable.
    pub(crate) fn clear(&self) -> io::Result<usize> {
        static TRASHES: AtomicU64 = AtomicU64::new(0);
        let root = self
            .inodes
            .root()
            .map_err(|e| io::Error::from_raw_os_error(e.code()))?;
        let upper = std::fs::read_link(OsStr::from_bytes(
            sys::proc_path(root.fd.as_fd()).as_bytes(),
        ))?;
        let name = format!(
            "{PLACING_PREFIX}trash.{}.{}",
            std::process::id(),
            TRASHES.fetch_add(1, Ordering::Relaxed)
        );
        let trash = upper.join(&name);
        let entries = self.read_dir(&root)?;
        std::fs::create_dir(&trash)?;
        let bin = File::open(&trash)?;
        let mut moved = 0;
        for (_, _, name) in entries.iter().skip(2) {
            let c = sys::cstr(name)?;
            sys::renameat2(root.fd.as_raw_fd(), &c, bin.as_raw_fd(), &c, 0)?;
            if let Some(notifier) = self.notifier.get() {
                let _ = notifier.inval_entry(INodeNo(ROOT_ID), name);
            }
            moved += 1;
        }
        // Deleting can take long (thousands of files): not on a serving thread.
        std::thread::spawn(move || std::fs::remove_dir_all(trash));
        Ok(moved)
    }

    /// Makes the kernel forget a cached name whose inode a placement replaced.
    fn invalidate_name(&self, parent: &OwnedFd, name: &CStr) {
        // Cheap enough per name; the kernel ignores names it has not cached.
        let Ok(st) = sys::fstat(parent.as_fd()) else {
            return;
        };
        let id = self.inodes.id_of(st.st_ino);
        if !self.inodes.knows(id) {
            return; // the kernel has never looked inside this directory
        }
        if let Some(notifier) = self.notifier.get() {
            let _ = notifier.inval_entry(INodeNo(id), OsStr::from_bytes(name.to_bytes()));
        }
    }
}

/// Opens an ordinary upper file with the access the caller asked for.
fn open_upper(node: &Node, flags: i32, writes: bool) -> io::Result<File> {
    let keep = libc::O_TRUNC | libc::O_SYNC | libc::O_DSYNC | libc::O_NOATIME;
    let access = if writes { libc::O_RDWR } else { libc::O_RDONLY };
    match sys::reopen(node.fd.as_fd(), access | (flags & keep)) {
        // Write-only files (mode 0200) cannot be reopened read-write.
        Err(e) if writes && e.raw_os_error() == Some(libc::EACCES) => {
            sys::reopen(node.fd.as_fd(), (flags & libc::O_ACCMODE) | (flags & keep))
        }
        other => other,
    }
}
