//! The inode table: which upper inodes the kernel knows, by FUSE node id.
//!
//! The FUSE node id of an inode is its upper inode number (the root is 1; an upper inode that
//! happens to be numbered 1 is moved), so a remount shows the same numbers and hard links need
//! no bookkeeping. Owns: node ids, kernel lookup counts, one O_PATH descriptor per known inode,
//! attributes as the kernel sees them (a placed file has its blob's size). Must never: hold the
//! table lock across I/O on file contents.

use std::collections::HashMap;
use std::ffi::CStr;
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::DirEntryExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use fuser::{Errno, FileAttr, FileType, INodeNo};
use rustix::fs::{FileType as Kind, Stat};

use crate::placement::{Blob, CONTROL_ID};
use crate::sys;

pub(crate) const ROOT_ID: u64 = 1;
/// Where an upper inode numbered 1 (possible on tmpfs) is moved, since 1 is the FUSE root.
const REMAPPED_ONE: u64 = u64::MAX - 2;

pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// One inode the kernel knows.
pub(crate) struct Node {
    /// O_PATH descriptor of the upper inode: keeps the inode (and so its number) alive.
    pub fd: OwnedFd,
    pub is_dir: bool,
    /// Kernel lookup count; modified only under the table lock.
    nlookup: AtomicU64,
    pub state: Mutex<NodeState>,
}

/// What may change about a node while it is known.
#[derive(Default)]
pub(crate) struct NodeState {
    /// The blob this file reads as, while it is a placement.
    pub placed: Option<Blob>,
}

pub(crate) struct Inodes {
    /// One lock, not a sharded map: held for a hash lookup (~100 ns) in requests that cost
    /// microseconds of system calls, it measured no slower than `dashmap` from 1 to 4 serving
    /// threads (`inode_table_throughput` below).
    nodes: Mutex<HashMap<u64, Arc<Node>>>,
    /// Upper inode number of the mount root.
    root_ino: u64,
    /// Set when serving a connection a dead server mounted: the kernel still uses node ids
    /// this table never saw, and they are found again in the upper directory (see `recover`).
    lost: Mutex<Option<Lost>>,
}

/// Where to find node ids a dead server knew: the upper directory, and what its last walk saw.
struct Lost {
    upper: PathBuf,
    /// Node id to path (relative to `upper`) as of `walked`.
    paths: HashMap<u64, PathBuf>,
    walked: Option<Instant>,
}

impl Inodes {
    /// A table that knows only the root, the upper directory `upper`.
    pub(crate) fn new(upper: OwnedFd) -> io::Result<Inodes> {
        let st = sys::fstat(upper.as_fd())?;
        let root = Node {
            fd: upper,
            is_dir: true,
            nlookup: AtomicU64::new(1),
            state: Mutex::default(),
        };
        Ok(Inodes {
            nodes: Mutex::new(HashMap::from([(ROOT_ID, Arc::new(root))])),
            root_ino: st.st_ino,
            lost: Mutex::new(None),
        })
    }

    /// This table serves a connection another server negotiated: node ids it does not know
    /// are looked for in `upper`, the upper directory, instead of being refused.
    pub(crate) fn learn_lost_ids(&self, upper: PathBuf) {
        *lock(&self.lost) = Some(Lost {
            upper,
            paths: HashMap::new(),
            walked: None,
        });
    }

    /// Whether this table serves a connection taken over from a dead server.
    pub(crate) fn took_over(&self) -> bool {
        lock(&self.lost).is_some()
    }

    /// Registers node `id`, which the kernel got from a dead server, by finding its inode in
    /// the upper directory: first where the last walk saw it, else by walking again (at most
    /// once a second: an id of a file deleted since is not found by walking). Its lookup count
    /// is unknown; it starts at 1, and a forget that goes below drops it, to be found again.
    fn recover(&self, id: u64) -> Option<Arc<Node>> {
        let mut guard = lock(&self.lost);
        let lost = guard.as_mut()?;
        let found = match self.open_lost(lost, id) {
            Some(found) => Some(found),
            None if lost
                .walked
                .is_some_and(|t| t.elapsed() < Duration::from_secs(1)) =>
            {
                None
            }
            None => {
                lost.paths.clear();
                walk_ids(self, &lost.upper, Path::new(""), &mut lost.paths);
                lost.walked = Some(Instant::now());
                self.open_lost(lost, id)
            }
        };
        drop(guard);
        let (fd, st) = found?;
        self.register(id, fd, &st).ok()
    }

    /// The inode the last walk saw as node `id`, if that name still holds it.
    fn open_lost(&self, lost: &Lost, id: u64) -> Option<(OwnedFd, Stat)> {
        let rel = lost.paths.get(&id)?;
        let path = sys::cstr(lost.upper.join(rel).as_os_str()).ok()?;
        let fd = sys::open_path(rustix::fs::CWD, &path).ok()?;
        let st = sys::fstat(fd.as_fd()).ok()?;
        (self.id_of(st.st_ino) == id).then_some((fd, st))
    }

    /// The node id of the upper inode numbered `upper_ino`.
    pub(crate) fn id_of(&self, upper_ino: u64) -> u64 {
        match upper_ino {
            ino if ino == self.root_ino => ROOT_ID,
            1 => REMAPPED_ONE,
            ino => ino,
        }
    }

    pub(crate) fn get(&self, id: INodeNo) -> Result<Arc<Node>, Errno> {
        if let Some(node) = lock(&self.nodes).get(&id.0).cloned() {
            return Ok(node);
        }
        match self.recover(id.0) {
            Some(node) => Ok(node),
            None if self.took_over() => Err(Errno::ESTALE),
            None => Err(Errno::ENOENT),
        }
    }

    pub(crate) fn dir(&self, id: INodeNo) -> Result<Arc<Node>, Errno> {
        let node = self.get(id)?;
        if node.is_dir {
            Ok(node)
        } else {
            Err(Errno::ENOTDIR)
        }
    }

    pub(crate) fn root(&self) -> Result<Arc<Node>, Errno> {
        self.get(INodeNo(ROOT_ID))
    }

    /// Whether the kernel knows node `id` (if not, it has cached nothing below it).
    pub(crate) fn knows(&self, id: u64) -> bool {
        lock(&self.nodes).contains_key(&id)
    }

    /// Resolves `name` in `parent` on the upper dir, registers the inode, counts one lookup.
    pub(crate) fn lookup(&self, parent: &Node, name: &CStr) -> io::Result<FileAttr> {
        let fd = sys::open_path(&parent.fd, name)?;
        let st = sys::fstat(fd.as_fd())?;
        let id = self.id_of(st.st_ino);
        let node = self.register(id, fd, &st)?;
        let placed = lock(&node.state).placed.as_ref().map(|b| b.size);
        Ok(self.attr_of(&st, placed))
    }

    /// The node of the upper inode behind `fd` (whose attributes are `st`), registered if it
    /// was not known, with one more lookup counted.
    ///
    /// The lookup is counted under the same hold of the table lock that finds or inserts the
    /// node: a `forget` in between would otherwise drop a node the kernel is about to hold.
    fn register(&self, id: u64, fd: OwnedFd, st: &Stat) -> io::Result<Arc<Node>> {
        if let Some(node) = lock(&self.nodes).get(&id) {
            node.nlookup.fetch_add(1, Ordering::Relaxed);
            return Ok(node.clone());
        }
        // Not known: read what the node needs outside the lock (an xattr read).
        let kind = Kind::from_raw_mode(st.st_mode);
        let is_dir = kind == Kind::Directory;
        let placed = if kind == Kind::RegularFile {
            Blob::of_marker(fd.as_fd())?
        } else {
            None
        };
        let fresh = Arc::new(Node {
            fd,
            is_dir,
            nlookup: AtomicU64::new(0),
            state: Mutex::new(NodeState { placed }),
        });
        let mut nodes = lock(&self.nodes);
        let node = nodes.entry(id).or_insert(fresh);
        node.nlookup.fetch_add(1, Ordering::Relaxed);
        Ok(node.clone())
    }

    /// The kernel dropped `n` lookups of node `id`; the node goes when none is left.
    pub(crate) fn forget(&self, id: u64, n: u64) {
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

    pub(crate) fn attr(&self, node: &Node) -> io::Result<FileAttr> {
        let st = sys::fstat(node.fd.as_fd())?;
        let placed = lock(&node.state).placed.as_ref().map(|b| b.size);
        Ok(self.attr_of(&st, placed))
    }

    // `Stat`'s field types differ between architectures (`st_atime` is `i64` here, the
    // nanoseconds `u32` on 32-bit targets): the same casts are no-ops on some of them.
    #[allow(clippy::unnecessary_cast)]
    fn attr_of(&self, st: &Stat, placed_size: Option<u64>) -> FileAttr {
        let size = placed_size.unwrap_or(st.st_size as u64);
        let blocks = match placed_size {
            Some(size) => size.div_ceil(512),
            None => st.st_blocks as u64,
        };
        FileAttr {
            ino: INodeNo(self.id_of(st.st_ino)),
            size,
            blocks,
            atime: system_time(st.st_atime as i64, st.st_atime_nsec as u32),
            mtime: system_time(st.st_mtime as i64, st.st_mtime_nsec as u32),
            ctime: system_time(st.st_ctime as i64, st.st_ctime_nsec as u32),
            crtime: UNIX_EPOCH,
            kind: file_type(st.st_mode as u32),
            perm: (st.st_mode & 0o7777) as u16,
            nlink: st.st_nlink as u32,
            uid: st.st_uid,
            gid: st.st_gid,
            rdev: st.st_rdev as u32,
            blksize: st.st_blksize as u32,
            flags: 0,
        }
    }
}

/// Every entry below `upper/rel`, by node id (`read_dir`'s inode numbers need no `stat`).
/// What cannot be read is passed over: a takeover serves what it can find.
fn walk_ids(table: &Inodes, upper: &Path, rel: &Path, into: &mut HashMap<u64, PathBuf>) {
    let Ok(entries) = std::fs::read_dir(upper.join(rel)) else {
        return;
    };
    for entry in entries.flatten() {
        let path = rel.join(entry.file_name());
        let id = table.id_of(entry.ino());
        if entry.file_type().is_ok_and(|t| t.is_dir()) {
            walk_ids(table, upper, &path, into);
        }
        into.insert(id, path);
    }
}

/// Attributes of the control file (not an upper inode).
pub(crate) fn control_attr() -> FileAttr {
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

fn system_time(sec: i64, nsec: u32) -> SystemTime {
    if sec >= 0 {
        UNIX_EPOCH + Duration::new(sec as u64, nsec)
    } else {
        UNIX_EPOCH - Duration::from_secs(sec.unsigned_abs()) + Duration::from_nanos(nsec.into())
    }
}

pub(crate) fn file_type(mode: u32) -> FileType {
    match Kind::from_raw_mode(mode) {
        Kind::Directory => FileType::Directory,
        Kind::Symlink => FileType::Symlink,
        Kind::Fifo => FileType::NamedPipe,
        Kind::Socket => FileType::Socket,
        Kind::CharacterDevice => FileType::CharDevice,
        Kind::BlockDevice => FileType::BlockDevice,
        _ => FileType::RegularFile,
    }
}

#[cfg(test)]
mod bench {
    use super::*;
    use std::ffi::CString;
    use std::time::Instant;

    const FILES: usize = 1000;

    /// The table's throughput from several serving threads at once, in the three shapes of
    /// request that touch it: a bare node lookup by id (the map alone), a getattr (lookup by
    /// id plus fstat), and a kernel lookup followed by its forget (openat, fstat and two map
    /// writes). Not a test: it prints operations per second for comparing implementations of
    /// the table. Run it with
    /// `cargo test -p kache-fs --release inode_table_throughput -- --ignored --nocapture`.
    #[test]
    #[ignore = "benchmark"]
    fn inode_table_throughput() {
        let dir = tempfile::tempdir().unwrap();
        let names: Vec<CString> = (0..FILES)
            .map(|i| {
                std::fs::write(dir.path().join(format!("f{i}")), b"x").unwrap();
                CString::new(format!("f{i}")).unwrap()
            })
            .collect();
        let upper: OwnedFd = std::fs::File::open(dir.path()).unwrap().into();
        let table = Inodes::new(upper).unwrap();
        let root = table.root().unwrap();
        let ids: Vec<u64> = names
            .iter()
            .map(|n| table.lookup(&root, n).unwrap().ino.0)
            .collect();
        type Op<'a> = &'a (dyn Fn(usize) + Sync);
        let get = |k: usize| {
            table.get(INodeNo(ids[k % FILES])).unwrap();
        };
        let getattr = |k: usize| {
            let node = table.get(INodeNo(ids[k % FILES])).unwrap();
            table.attr(&node).unwrap();
        };
        let lookup_forget = |k: usize| {
            let attr = table.lookup(&root, &names[k % FILES]).unwrap();
            table.forget(attr.ino.0, 1);
        };
        // Operations per measurement: about a second each on an idle machine.
        let shapes: [(&str, Op, usize); 3] = [
            ("get", &get, 20_000_000),
            ("getattr", &getattr, 1_000_000),
            ("lookup+forget", &lookup_forget, 200_000),
        ];
        for (shape, op, ops) in shapes {
            for threads in [1, 2, 4] {
                let per_thread = ops / threads;
                let t0 = Instant::now();
                std::thread::scope(|s| {
                    for t in 0..threads {
                        s.spawn(move || {
                            for k in 0..per_thread {
                                op(k * 7 + t * 131);
                            }
                        });
                    }
                });
                let secs = t0.elapsed().as_secs_f64();
                println!(
                    "inode table {shape:<14} {threads} threads: {:>10.0} ops/s",
                    (per_thread * threads) as f64 / secs
                );
            }
        }
    }
}
