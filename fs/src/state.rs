//! The state of one mount, shared by its serving threads and its handle: the inode table,
//! directory listings, where placed bytes come from, the control statuses and the kernel
//! notifier; and the operations that need more than one of those (reading, writing and copy-up
//! by inode, creating, listing, applying control requests, emptying the mount).
//!
//! Files are read and written by inode, not through handles: the filesystem does not implement
//! `open` (see `fs.rs`), so every read or write names only the inode, and its bytes come from
//! the blob while it is placed, from its upper file otherwise.
//!
//! Must never: write into a blob (a write, truncate or fallocate of a placed file copies it up
//! first, in place), or leave the kernel caching a name the server changed behind its back.

use std::collections::HashMap;
use std::ffi::{CStr, OsStr, OsString};
use std::fs::File;
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirEntryExt, FileExt, FileTypeExt};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use fuser::{Errno, FileAttr, FileHandle, FileType, INodeNo, Notifier};
use kache_platform::process::is_root;
use rustix::fs::{OFlags, RenameFlags, Timespec};

use crate::blobs::Blobs;
use crate::control::{self, Command, Status, Statuses};
use crate::inodes::{lock, Inodes, Node, NodeState, ROOT_ID};
use crate::placement::{self, xattr_name, Owner, PLACING_PREFIX};
use crate::sys;
use crate::BlobSource;

/// A directory's entries as listed when it was opened.
pub(crate) type Listing = Vec<(u64, FileType, OsString)>;

pub(crate) struct Shared {
    pub(crate) inodes: Inodes,
    listings: Mutex<HashMap<u64, Arc<Listing>>>,
    next_fh: AtomicU64,
    pub(crate) blobs: Blobs,
    pub(crate) statuses: Statuses,
    pub(crate) notifier: OnceLock<Notifier>,
    daemon_is_root: bool,
}

impl Shared {
    pub(crate) fn new(
        upper: OwnedFd,
        blobs: Arc<dyn BlobSource>,
        blob_view: Option<(PathBuf, OwnedFd)>,
    ) -> io::Result<Shared> {
        Ok(Shared {
            inodes: Inodes::new(upper)?,
            listings: Mutex::default(),
            // Handles start at this server's start time: a server that takes over a dead one's
            // connection never hands out a number the kernel still holds from before.
            next_fh: AtomicU64::new(
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(1, |d| d.as_secs() << 20),
            ),
            blobs: Blobs::new(blobs, blob_view),
            statuses: Statuses::default(),
            notifier: OnceLock::new(),
            daemon_is_root: is_root(),
        })
    }

    /// The listing opened as `fh` of directory `dir`. A handle from a dead server's time (after
    /// a takeover) is listed anew.
    pub(crate) fn listing(&self, dir: INodeNo, fh: FileHandle) -> Result<Arc<Listing>, Errno> {
        if let Some(listing) = lock(&self.listings).get(&fh.0).cloned() {
            return Ok(listing);
        }
        if !self.inodes.took_over() {
            return Err(Errno::EBADF);
        }
        let node = self.inodes.dir(dir)?;
        let entries = self.read_dir(&node).map_err(|e| {
            Errno::from_i32(
                e.raw_os_error()
                    .unwrap_or(rustix::io::Errno::IO.raw_os_error()),
            )
        })?;
        let listing = Arc::new(entries);
        lock(&self.listings).insert(fh.0, listing.clone());
        Ok(listing)
    }

    pub(crate) fn add_listing(&self, listing: Listing) -> u64 {
        let fh = self.next_fh.fetch_add(1, Ordering::Relaxed);
        lock(&self.listings).insert(fh, Arc::new(listing));
        fh
    }

    pub(crate) fn drop_listing(&self, fh: FileHandle) {
        lock(&self.listings).remove(&fh.0);
    }

    /// New upper files belong to the caller, not to a root server.
    pub(crate) fn owner(&self, uid: u32, gid: u32) -> Owner {
        (self.daemon_is_root && uid != 0).then_some((uid, gid))
    }

    /// Turns a placed inode into an ordinary upper file, in place (same inode, so every hard
    /// link sees it). With `keep_bytes` false the file is about to be truncated to 0.
    fn copy_up(&self, node: &Node, state: &mut NodeState, keep_bytes: bool) -> io::Result<()> {
        let Some(blob) = state.placed.clone() else {
            return Ok(());
        };
        let before = sys::fstat(node.fd.as_fd())?;
        let marker = sys::reopen(node.fd.as_fd(), OFlags::WRONLY | OFlags::TRUNC)?;
        if keep_bytes {
            let src = self.blobs.open(&blob)?;
            kache_platform::clone_or_copy(&src, &marker)?;
        }
        // The copy is not a modification: keep the placement time.
        let mtime = Timespec {
            tv_sec: before.st_mtime as _,
            tv_nsec: before.st_mtime_nsec as _,
        };
        sys::utimens_fd(node.fd.as_fd(), sys::omit(), mtime)?;
        sys::removexattr_fd(node.fd.as_fd(), &xattr_name())?;
        state.placed = None;
        Ok(())
    }

    /// Makes `node` an ordinary upper file before it changes (`keep_bytes`: the change keeps
    /// what is there, unlike a truncation to 0).
    fn before_change(&self, node: &Node, keep_bytes: bool) -> io::Result<()> {
        let mut state = lock(&node.state);
        if state.placed.is_some() {
            self.copy_up(node, &mut state, keep_bytes)?;
        }
        Ok(())
    }

    /// Up to `size` bytes of `node` at `offset`: the blob's while it is placed.
    pub(crate) fn read(&self, node: &Node, offset: u64, size: u32) -> io::Result<Vec<u8>> {
        let placed = lock(&node.state).placed.clone();
        let file = match &placed {
            Some(blob) => self.blobs.open(blob)?,
            None => sys::reopen(node.fd.as_fd(), OFlags::RDONLY)?,
        };
        let mut buf = vec![0u8; size as usize];
        let mut filled = 0;
        while filled < buf.len() {
            match file.read_at(&mut buf[filled..], offset + filled as u64) {
                Ok(0) => break,
                Ok(n) => filled += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        buf.truncate(filled);
        Ok(buf)
    }

    /// Writes `data` at `offset` into `node`'s upper file (copying a placed file up first).
    pub(crate) fn write(&self, node: &Node, offset: u64, data: &[u8]) -> io::Result<()> {
        self.before_change(node, true)?;
        sys::reopen(node.fd.as_fd(), OFlags::WRONLY)?.write_all_at(data, offset)
    }

    /// Sets a file's size (a placed file is copied up first, without its bytes when truncated
    /// to 0).
    pub(crate) fn truncate(&self, node: &Node, size: u64) -> io::Result<()> {
        self.before_change(node, size != 0)?;
        sys::truncate_fd(node.fd.as_fd(), size)
    }

    pub(crate) fn fallocate(
        &self,
        node: &Node,
        mode: i32,
        offset: u64,
        len: u64,
    ) -> io::Result<()> {
        self.before_change(node, true)?;
        sys::fallocate(
            &sys::reopen(node.fd.as_fd(), OFlags::WRONLY)?,
            mode,
            offset,
            len,
        )
    }

    /// Flushes what was written to `node` to disk (a placed file has nothing to flush).
    pub(crate) fn fsync(&self, node: &Node, datasync: bool) -> io::Result<()> {
        if lock(&node.state).placed.is_some() {
            return Ok(());
        }
        let file = sys::reopen(node.fd.as_fd(), OFlags::RDONLY)?;
        if datasync {
            file.sync_data()
        } else {
            file.sync_all()
        }
    }

    /// What an `open(O_CREAT)` with `flags` does to the file it found or made: a truncating or
    /// writing open of a placed file copies it up, a truncating one empties the file.
    pub(crate) fn opened_by_create(&self, node: &Node, flags: OFlags) -> io::Result<()> {
        if flags.contains(OFlags::TRUNC) {
            return self.truncate(node, 0);
        }
        if flags.intersects(OFlags::WRONLY | OFlags::RDWR) {
            self.before_change(node, true)?;
        }
        Ok(())
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
            let fd = sys::open_path(&parent.fd, name)?;
            let _ = sys::chown_fd(fd.as_fd(), Some(uid), Some(gid));
        }
        self.inodes.lookup(parent, name)
    }

    /// A directory's entries as the kernel should see them (reserved names hidden).
    pub(crate) fn read_dir(&self, node: &Node) -> io::Result<Listing> {
        let path = sys::proc_path(node.fd.as_fd());
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

    /// Answers a control request: validated as a whole, then applied.
    pub(crate) fn answer_control(&self, request: &[u8], owner: Owner) -> Status {
        let items = match control::validate(request, self.blobs.source()) {
            Ok(Command::Place(items)) => items,
            Ok(Command::Clear) => {
                return match self.clear() {
                    Ok(n) => Status::Done(n),
                    Err(e) => Status::Failed(format!("clearing: {e}")),
                }
            }
            Err(reason) => return Status::Refused(reason),
        };
        let root = match self.inodes.root() {
            Ok(root) => root,
            Err(_) => return Status::Failed("applying placements: no root".into()),
        };
        let mut changed = |dir: &OwnedFd, name: &CStr| self.invalidate_name(dir, name);
        match placement::apply(root.fd.as_fd(), &items, owner, &mut changed) {
            Ok(n) => Status::Done(n),
            Err(e) => Status::Failed(format!("applying placements: {e}")),
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
        let upper = std::fs::read_link(sys::proc_path(root.fd.as_fd()))?;
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
            rustix::fs::renameat_with(
                &root.fd,
                c.as_c_str(),
                &bin,
                c.as_c_str(),
                RenameFlags::empty(),
            )?;
            if let Some(notifier) = self.notifier.get() {
                let _ = notifier.inval_entry(INodeNo(ROOT_ID), name);
            }
            moved += 1;
        }
        // Deleting can take long (thousands of files): not on a serving thread.
        std::thread::spawn(move || std::fs::remove_dir_all(trash));
        Ok(moved)
    }

    /// Makes the kernel forget what it cached of a name the server changed in `parent` (a
    /// placement replaced or created it): the old inode, or that the name did not exist.
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
