//! The local content-addressed store.
//!
//! ```text
//! $KACHE_DIR/
//!   blobs/ab/abcdef…   file contents, named by blake3, mode 0444, never rewritten
//!   entries/ab/<key>   result key → outputs, exit status, captured streams (entry.rs)
//!   manifests/ab/<key> direct key → inputs recent compiles read (manifest.rs)
//!   tmp/               temporary files; everything is renamed into place from here
//!   locks/             per-key compile locks, the gc lock
//!   stats              counters (stats.rs)
//! ```
//!
//! Every file appears by `rename` of a complete, fsynced temporary, so any
//! number of processes can read and write at once without a daemon, and a
//! crash leaves the old state or the new one. Nothing here ever writes into a
//! blob after it is published. Readers check sizes on every lookup; `verify`
//! re-hashes. Least-recently-used entries are evicted by [`Store::gc`]; an
//! entry's mtime is its last use.

pub mod entry;
pub mod manifest;
pub mod memo;

use std::collections::{HashMap, HashSet};
use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

pub use entry::{DecodeError, Entry, OutputFile};
use kache_platform::{AtomicFile, FileLock, HardlinkPolicy, LockMode, PlaceMethod};
pub use manifest::{Manifest, Record};

/// Why a lookup did not produce a usable entry. The string goes into stats
/// and reports, so it is short and stable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MissReason {
    NotFound,
    CorruptEntry(String),
    BlobMissing(String),
    BlobSizeMismatch(String),
    Io(String),
}

impl MissReason {
    pub fn label(&self) -> &'static str {
        match self {
            MissReason::NotFound => "not-found",
            MissReason::CorruptEntry(_) => "corrupt-entry",
            MissReason::BlobMissing(_) => "blob-missing",
            MissReason::BlobSizeMismatch(_) => "blob-size-mismatch",
            MissReason::Io(_) => "store-io-error",
        }
    }
}

impl std::fmt::Display for MissReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            MissReason::NotFound => write!(f, "no entry"),
            MissReason::CorruptEntry(e) => write!(f, "corrupt entry: {e}"),
            MissReason::BlobMissing(b) => write!(f, "blob {b} missing"),
            MissReason::BlobSizeMismatch(b) => write!(f, "blob {b} has the wrong size"),
            MissReason::Io(e) => write!(f, "store I/O error: {e}"),
        }
    }
}

/// Why [`Store::get_manifest`] found no manifest.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ManifestMiss {
    Absent,
    Damaged,
}

/// A blob stored or found: its hash and size.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlobRef {
    pub hash: String,
    pub size: u64,
}

/// Bytes placed per method by one restore.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct RestoreReport {
    pub files: u64,
    pub reflink_bytes: u64,
    pub hardlink_bytes: u64,
    pub copy_bytes: u64,
}

impl RestoreReport {
    pub fn add(&mut self, method: PlaceMethod, bytes: u64) {
        self.files += 1;
        match method {
            PlaceMethod::Reflink => self.reflink_bytes += bytes,
            PlaceMethod::Hardlink => self.hardlink_bytes += bytes,
            PlaceMethod::Copy => self.copy_bytes += bytes,
        }
    }
    pub fn total_bytes(&self) -> u64 {
        self.reflink_bytes + self.hardlink_bytes + self.copy_bytes
    }
}

/// An entry's blobs, opened and size-checked: holding the descriptors keeps
/// the bytes alive even if eviction unlinks a blob's name meanwhile.
pub struct OpenedBlobs {
    files: Vec<(File, PathBuf)>,
}

#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Usage {
    pub bytes: u64,
    pub blobs: u64,
    pub entries: u64,
    pub manifests: u64,
}

#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct GcReport {
    pub entries_removed: u64,
    pub manifests_removed: u64,
    pub blobs_removed: u64,
    pub bytes_before: u64,
    pub bytes_after: u64,
    /// Bytes of blobs the `keep` set holds (placed in mounts): part of `bytes_after`, not
    /// counted against the limit.
    pub held_bytes: u64,
}

#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct VerifyReport {
    pub blobs_checked: u64,
    pub corrupt_blobs: Vec<String>,
    pub corrupt_entries: Vec<String>,
    pub removed: u64,
}

#[derive(Debug, Clone)]
pub struct Store {
    root: PathBuf,
}

const SUBDIRS: [&str; 5] = ["blobs", "entries", "manifests", "tmp", "locks"];

/// A blob hash or key is 64 lowercase hex digits; anything else is refused
/// before it can become a path.
pub fn is_valid_hash(s: &str) -> bool {
    s.len() == 64
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

fn sharded(dir: &Path, name: &str) -> PathBuf {
    dir.join(&name[..2]).join(name)
}

fn invalid(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, format!("invalid {what}"))
}

impl Store {
    /// Opens (creating if needed) the store at `root`.
    pub fn open(root: &Path) -> io::Result<Store> {
        for d in SUBDIRS {
            let p = root.join(d);
            if !p.is_dir() {
                fs::create_dir_all(&p)?;
            }
        }
        Ok(Store {
            root: root.to_path_buf(),
        })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn tmp_dir(&self) -> PathBuf {
        self.root.join("tmp")
    }

    pub fn blob_path(&self, hash: &str) -> PathBuf {
        sharded(&self.root.join("blobs"), hash)
    }

    fn entry_path(&self, key: &str) -> PathBuf {
        sharded(&self.root.join("entries"), key)
    }

    fn manifest_path(&self, key: &str) -> PathBuf {
        sharded(&self.root.join("manifests"), key)
    }

    /// Path of a lock file for `name` (a key or a fixed name like "gc").
    pub fn lock_path(&self, name: &str) -> PathBuf {
        self.root.join("locks").join(name)
    }

    /// A shared lock on the store's background marker, held by every process that stores
    /// a call's outputs after the call returned (see [`Store::settle`]).
    pub fn background_lock(&self) -> io::Result<FileLock> {
        let path = self.lock_path(BACKGROUND_MARKER);
        match FileLock::acquire_timeout(&path, LockMode::Shared, Duration::from_secs(1))? {
            Some(l) => Ok(l),
            None => Err(io::Error::new(
                io::ErrorKind::WouldBlock,
                "background marker busy",
            )),
        }
    }

    /// Waits (at most `timeout`) until no store started by an earlier build still runs in
    /// the background, so what a command reads (counters, entries, sizes) includes every
    /// build that has returned. True when none runs any more.
    pub fn settle(&self, timeout: Duration) -> bool {
        settle(&self.root, timeout)
    }

    fn publish(&self, tmp: AtomicFile, dest: &Path, mode: Option<u32>) -> io::Result<()> {
        if let Some(parent) = dest.parent() {
            if !parent.is_dir() {
                fs::create_dir_all(parent)?;
            }
        }
        tmp.commit(dest, mode)
    }

    // ---------------------------------------------------------------- blobs

    /// Stores the bytes of the file at `src` and returns their blob.
    /// Where the filesystem can clone, the blob shares extents with `src`.
    pub fn put_blob_from_path(&self, src: &Path) -> io::Result<BlobRef> {
        self.put_blob_from_path_as(src, false)
    }

    /// Like [`Store::put_blob_from_path`]; a blob first stored from an
    /// executable is published 0555 instead of 0444, so executables (whose
    /// restored mode must carry exec bits) can be hardlink-restored too.
    pub fn put_blob_from_path_as(&self, src: &Path, executable: bool) -> io::Result<BlobRef> {
        self.put_blob_from_file(&File::open(src)?, executable, &mut |_| {})
    }

    /// Stores the bytes `file` holds, read through that descriptor (whatever its path names
    /// by now) from its current position (a descriptor just opened: the start), showing
    /// `inspect` every byte stored, in order: the one read that hashes (and copies) a file
    /// also serves whoever must look into it. Executable: as
    /// [`Store::put_blob_from_path_as`].
    pub fn put_blob_from_file(
        &self,
        file: &File,
        executable: bool,
        inspect: &mut dyn FnMut(&[u8]),
    ) -> io::Result<BlobRef> {
        let mut tmp = AtomicFile::new_in(&self.tmp_dir())?;
        // Clone first (no bytes copied), then hash what we hold, so the name
        // always describes the stored bytes even if `file` changes meanwhile.
        let cloned = {
            // AtomicFile created the temp already; clone needs a fresh file.
            fs::remove_file(tmp.path())?;
            kache_platform::clone_into_new(file, tmp.path(), 0o644)?
        };
        let (hash, size) = if cloned {
            let mut f = File::open(tmp.path())?;
            let r = copy_hashing(&mut f, &mut io::sink(), inspect)?;
            // Commit fsyncs and chmods through this descriptor (both work on
            // a read-only descriptor we own).
            *tmp.file() = f;
            r
        } else {
            // Recreate the temp and copy while hashing.
            let mut out = fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(tmp.path())?;
            let r = copy_hashing(&mut &*file, &mut out, inspect)?;
            *tmp.file() = out;
            r
        };
        self.finish_blob(tmp, hash, size, executable)
    }

    pub fn put_blob_bytes(&self, bytes: &[u8]) -> io::Result<BlobRef> {
        let hash = blake3::hash(bytes).to_hex().to_string();
        let dest = self.blob_path(&hash);
        if self.blob_present(&dest, bytes.len() as u64, &hash) {
            return Ok(BlobRef {
                hash,
                size: bytes.len() as u64,
            });
        }
        let mut tmp = AtomicFile::new_in(&self.tmp_dir())?;
        tmp.file().write_all(bytes)?;
        self.finish_blob(tmp, hash, bytes.len() as u64, false)
    }

    /// Like [`Store::put_blob_bytes`] without the fsync, for content every reader checks
    /// by hash before using it (seeds): after a power loss such a blob may be missing or
    /// empty, which reads as absent, never as other bytes (ext4 orders data before the
    /// rename's metadata). Measured here: an fsynced small blob cost ~15 ms on a loaded
    /// machine, and a harvest stores about a thousand.
    pub fn put_blob_bytes_unsynced(&self, bytes: &[u8]) -> io::Result<BlobRef> {
        let hash = blake3::hash(bytes).to_hex().to_string();
        let size = bytes.len() as u64;
        let dest = self.blob_path(&hash);
        if !self.blob_present(&dest, size, &hash) {
            let mut tmp = AtomicFile::new_in(&self.tmp_dir())?;
            tmp.file().write_all(bytes)?;
            if let Some(parent) = dest.parent() {
                if !parent.is_dir() {
                    fs::create_dir_all(parent)?;
                }
            }
            tmp.commit_unsynced(&dest, Some(0o444))?;
            memo::remember_output(self, &dest, &hash);
        }
        Ok(BlobRef { hash, size })
    }

    /// True when the blob `hash` at `dest` is there and may be kept instead of the copy
    /// being stored. Its size alone does not say so: bytes written into a blob (a damaged
    /// disk, a stray write) keep its size, and keeping such a blob would give every later
    /// placement of it (a kache mount serves blobs by reference) the damaged bytes. So it
    /// is kept only when its digest memo, keyed on its current stat, names `hash` (a blob
    /// this store published or verified and nobody wrote since); otherwise the fresh copy
    /// replaces it.
    fn blob_present(&self, dest: &Path, size: u64, hash: &str) -> bool {
        match fs::metadata(dest) {
            Ok(m)
                if m.len() == size
                    && memo::known_digest(self, dest, &m).as_deref() == Some(hash) =>
            {
                // Refresh its age so a concurrent gc does not take a blob an
                // entry being written is about to reference; the memo follows the new stat.
                let _ = kache_platform::set_mtime_now(dest);
                memo::remember_output(self, dest, hash);
                true
            }
            _ => false,
        }
    }

    fn finish_blob(
        &self,
        tmp: AtomicFile,
        hash: String,
        size: u64,
        executable: bool,
    ) -> io::Result<BlobRef> {
        let dest = self.blob_path(&hash);
        if !self.blob_present(&dest, size, &hash) {
            self.publish(tmp, &dest, Some(if executable { 0o555 } else { 0o444 }))?;
            memo::remember_output(self, &dest, &hash);
        }
        Ok(BlobRef { hash, size })
    }

    /// Opens every blob of `entry` and checks its size. Any absent or
    /// wrong-sized blob makes the whole entry a miss.
    pub fn open_blobs(&self, entry: &Entry) -> Result<OpenedBlobs, MissReason> {
        let mut files = Vec::with_capacity(entry.outputs.len());
        for out in &entry.outputs {
            if !is_valid_hash(&out.blob) {
                return Err(MissReason::CorruptEntry(format!(
                    "bad blob name {:?}",
                    out.blob
                )));
            }
            let path = self.blob_path(&out.blob);
            let f = match File::open(&path) {
                Ok(f) => f,
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    return Err(MissReason::BlobMissing(out.blob.clone()))
                }
                Err(e) => return Err(MissReason::Io(e.to_string())),
            };
            let len = f
                .metadata()
                .map_err(|e| MissReason::Io(e.to_string()))?
                .len();
            if len != out.size {
                // A truncated or damaged blob: remove it so the next miss repairs it.
                let _ = fs::remove_file(&path);
                return Err(MissReason::BlobSizeMismatch(out.blob.clone()));
            }
            files.push((f, path));
        }
        Ok(OpenedBlobs { files })
    }

    /// Places the outputs of `entry` (whose blobs are `opened`) at the paths
    /// `dest_of(output)` gives, choosing reflink, hardlink or copy per file.
    pub fn restore(
        &self,
        entry: &Entry,
        opened: &OpenedBlobs,
        mut dest_of: impl FnMut(&OutputFile) -> Option<(PathBuf, HardlinkPolicy)>,
    ) -> io::Result<RestoreReport> {
        let mut report = RestoreReport::default();
        let mut placer = kache_platform::place::Placer::default();
        for (out, (file, path)) in entry.outputs.iter().zip(&opened.files) {
            let Some((dest, policy)) = dest_of(out) else {
                continue;
            };
            let method = placer.place(file, path, &dest, out.mode, policy)?;
            tracing::debug!(
                output = %out.name,
                bytes = out.size,
                ?policy,
                "placed by {method:?}"
            );
            report.add(method, out.size);
        }
        Ok(report)
    }

    // -------------------------------------------------------------- entries

    /// Publishes `entry` under `key`. Its blobs must already be stored.
    pub fn put_entry(&self, key: &str, entry: &Entry) -> io::Result<()> {
        if !is_valid_hash(key) {
            return Err(invalid("entry key"));
        }
        let mut tmp = AtomicFile::new_in(&self.tmp_dir())?;
        tmp.file().write_all(&entry.encode())?;
        self.publish(tmp, &self.entry_path(key), None)
    }

    /// Like [`Store::put_entry`] without the fsync (see
    /// [`Store::put_blob_bytes_unsynced`]); an entry damaged by a power loss fails its
    /// checksum and reads as absent.
    pub fn put_entry_unsynced(&self, key: &str, entry: &Entry) -> io::Result<()> {
        if !is_valid_hash(key) {
            return Err(invalid("entry key"));
        }
        let dest = self.entry_path(key);
        let mut tmp = AtomicFile::new_in(&self.tmp_dir())?;
        tmp.file().write_all(&entry.encode())?;
        if let Some(parent) = dest.parent() {
            if !parent.is_dir() {
                fs::create_dir_all(parent)?;
            }
        }
        tmp.commit_unsynced(&dest, None)
    }

    /// Looks up `key`. A corrupt entry is removed and reported as a miss.
    /// A found entry's mtime is refreshed (its LRU age).
    pub fn get_entry(&self, key: &str) -> Result<Entry, MissReason> {
        if !is_valid_hash(key) {
            return Err(MissReason::NotFound);
        }
        let path = self.entry_path(key);
        let bytes = match fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Err(MissReason::NotFound),
            Err(e) => return Err(MissReason::Io(e.to_string())),
        };
        match Entry::decode(&bytes) {
            Ok(e) => {
                let _ = kache_platform::set_mtime_now(&path);
                Ok(e)
            }
            Err(e) => {
                let _ = fs::remove_file(&path);
                Err(MissReason::CorruptEntry(e.to_string()))
            }
        }
    }

    pub fn has_entry(&self, key: &str) -> bool {
        is_valid_hash(key) && self.entry_path(key).is_file()
    }

    pub fn remove_entry(&self, key: &str) -> io::Result<()> {
        if !is_valid_hash(key) {
            return Err(invalid("entry key"));
        }
        match fs::remove_file(self.entry_path(key)) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
    }

    // ------------------------------------------------------------ manifests

    /// Publishes `manifest` under a direct key (sealed: damage reads as absence).
    pub fn put_manifest(&self, key: &str, manifest: &Manifest) -> io::Result<()> {
        if !is_valid_hash(key) {
            return Err(invalid("manifest key"));
        }
        let mut tmp = AtomicFile::new_in(&self.tmp_dir())?;
        tmp.file().write_all(&manifest::seal(&manifest.encode()))?;
        self.publish(tmp, &self.manifest_path(key), None)
    }

    /// What identifies the manifest file of `key` as it is now (inode and size; `None`
    /// when there is none). A manifest is only ever replaced by a new file, so an equal
    /// identity later means the same records (reading one re-stamps its mtime, so that is
    /// left out).
    pub fn manifest_identity(&self, key: &str) -> Option<(u64, u64)> {
        fs::metadata(self.manifest_path(key))
            .ok()
            .map(|m| manifest_identity_of(&m))
    }

    /// The manifest of a direct key. A damaged one (bad trailer, not a
    /// manifest) is removed, so the next compile writes a good one.
    /// A found manifest's mtime is refreshed (its LRU age).
    pub fn get_manifest(&self, key: &str) -> Result<Manifest, ManifestMiss> {
        self.read_manifest(key).map(|(m, _)| m)
    }

    /// [`Store::get_manifest`], with the [identity](Store::manifest_identity) of the file
    /// it read (from the descriptor the read needs anyway: no stat of its own).
    pub fn read_manifest(&self, key: &str) -> Result<(Manifest, (u64, u64)), ManifestMiss> {
        if !is_valid_hash(key) {
            return Err(ManifestMiss::Absent);
        }
        let path = self.manifest_path(key);
        let read = || -> io::Result<(Vec<u8>, fs::Metadata)> {
            let mut f = File::open(&path)?;
            let meta = f.metadata()?;
            let mut bytes = Vec::with_capacity(meta.len() as usize);
            f.read_to_end(&mut bytes)?;
            Ok((bytes, meta))
        };
        let (bytes, meta) = read().map_err(|_| ManifestMiss::Absent)?;
        let Some(m) = manifest::unseal(&bytes).and_then(Manifest::decode) else {
            let _ = fs::remove_file(&path);
            return Err(ManifestMiss::Damaged);
        };
        let _ = kache_platform::set_mtime_now(&path);
        Ok((m, manifest_identity_of(&meta)))
    }

    // ----------------------------------------------------- usage, gc, verify

    fn walk_sharded(dir: &Path, mut f: impl FnMut(&str, &Path, &fs::Metadata)) {
        let Ok(shards) = fs::read_dir(dir) else {
            return;
        };
        for shard in shards.flatten() {
            let Ok(files) = fs::read_dir(shard.path()) else {
                continue;
            };
            for file in files.flatten() {
                let name = file.file_name();
                let Some(name) = name.to_str() else { continue };
                if let Ok(meta) = file.metadata() {
                    f(name, &file.path(), &meta);
                }
            }
        }
    }

    pub fn usage(&self) -> Usage {
        let mut u = Usage::default();
        Self::walk_sharded(&self.root.join("blobs"), |_, _, m| {
            u.blobs += 1;
            u.bytes += m.len();
        });
        Self::walk_sharded(&self.root.join("entries"), |_, _, m| {
            u.entries += 1;
            u.bytes += m.len();
        });
        Self::walk_sharded(&self.root.join("manifests"), |_, _, m| {
            u.manifests += 1;
            u.bytes += m.len();
        });
        u
    }

    /// Evicts least-recently-used entries (and manifests) until the store is
    /// at most `limit` bytes, then removes blobs no remaining entry uses.
    /// `keep` names blobs that must stay whatever their entries' age (placed
    /// in a mount): they are counted apart, not against the limit (removing
    /// anything frees none of them), and an entry whose blobs are all kept
    /// is never evicted (it would free next to nothing and lose a hit).
    /// Blobs touched after gc began are kept: a compile may be
    /// about to publish the entry that references them. A restore in progress
    /// holds its blobs open, so removing a name never takes its bytes.
    pub fn gc(&self, limit: u64, keep: &HashSet<String>) -> io::Result<GcReport> {
        let _lock = FileLock::acquire(&self.lock_path("gc"), LockMode::Exclusive)?;
        let started = SystemTime::now() - Duration::from_secs(2);
        let tmp_cutoff = SystemTime::now() - Duration::from_secs(3600);
        // Stale temporaries from killed processes.
        if let Ok(rd) = fs::read_dir(self.tmp_dir()) {
            for t in rd.flatten() {
                if t.metadata()
                    .and_then(|m| m.modified())
                    .is_ok_and(|m| m < tmp_cutoff)
                {
                    let _ = fs::remove_file(t.path());
                }
            }
        }

        struct Item {
            path: PathBuf,
            mtime: SystemTime,
            size: u64,
            blobs: Vec<String>,
            is_entry: bool,
        }
        let mut items: Vec<Item> = Vec::new();
        Self::walk_sharded(&self.root.join("entries"), |_, p, m| {
            let blobs = fs::read(p)
                .ok()
                .and_then(|b| Entry::decode(&b).ok())
                .map(|e| e.outputs.into_iter().map(|o| o.blob).collect())
                .unwrap_or_default();
            items.push(Item {
                path: p.to_path_buf(),
                mtime: m.modified().unwrap_or(SystemTime::UNIX_EPOCH),
                size: m.len(),
                blobs,
                is_entry: true,
            });
        });
        Self::walk_sharded(&self.root.join("manifests"), |_, p, m| {
            items.push(Item {
                path: p.to_path_buf(),
                mtime: m.modified().unwrap_or(SystemTime::UNIX_EPOCH),
                size: m.len(),
                blobs: Vec::new(),
                is_entry: false,
            });
        });
        let mut blob_sizes: HashMap<String, (u64, SystemTime, PathBuf)> = HashMap::new();
        Self::walk_sharded(&self.root.join("blobs"), |name, p, m| {
            blob_sizes.insert(
                name.to_string(),
                (
                    m.len(),
                    m.modified().unwrap_or(SystemTime::UNIX_EPOCH),
                    p.to_path_buf(),
                ),
            );
        });

        let before: u64 = items.iter().map(|i| i.size).sum::<u64>()
            + blob_sizes.values().map(|b| b.0).sum::<u64>();
        let mut report = GcReport {
            bytes_before: before,
            ..Default::default()
        };

        // Newest first; keep items while the referenced set fits. A blob
        // counts once, however many entries share it.
        items.sort_by_key(|i| std::cmp::Reverse(i.mtime));
        let mut kept_blobs: HashSet<String> = keep.clone();
        report.held_bytes = keep
            .iter()
            .filter_map(|b| blob_sizes.get(b))
            .map(|b| b.0)
            .sum();
        let mut total: u64 = 0;
        let mut doomed: Vec<&Item> = Vec::new();
        for item in &items {
            if !item.blobs.is_empty() && item.blobs.iter().all(|b| keep.contains(b)) {
                total += item.size;
                continue;
            }
            // Each blob is charged once, by the newest entry that uses it (a
            // set: two outputs with the same bytes share one blob).
            let extra: u64 = item
                .blobs
                .iter()
                .filter(|b| !kept_blobs.contains(*b))
                .collect::<HashSet<_>>()
                .into_iter()
                .filter_map(|b| blob_sizes.get(b))
                .map(|b| b.0)
                .sum();
            if doomed.is_empty() && total + item.size + extra <= limit {
                total += item.size + extra;
                kept_blobs.extend(item.blobs.iter().cloned());
            } else {
                // Once one item does not fit, every older one goes too: LRU order.
                doomed.push(item);
            }
        }
        // Young blobs no kept entry uses are kept too (see above), and only
        // now charged. Charging them before the entries (as this once did)
        // let a burst of fresh blobs push every entry, the newest included,
        // out of the store while freeing nothing: a gc right after a few
        // puts over the limit emptied the cache.
        for (name, (size, mtime, _)) in &blob_sizes {
            if *mtime >= started && kept_blobs.insert(name.clone()) {
                total += size;
            }
        }
        for item in doomed {
            // Re-check just before removing: an entry used or re-published
            // since the scan has a newer mtime, and removing it would throw
            // away the last publication of that key (a racing re-publish
            // would be lost) or the entry a hit just used. It stays, and so do the blobs it was scanned with.
            let unchanged = fs::symlink_metadata(&item.path)
                .and_then(|m| m.modified())
                .is_ok_and(|m| m == item.mtime);
            if !unchanged {
                for b in &item.blobs {
                    if kept_blobs.insert(b.clone()) {
                        total += blob_sizes.get(b).map_or(0, |b| b.0);
                    }
                }
                total += item.size;
                continue;
            }
            if fs::remove_file(&item.path).is_ok() {
                match item.is_entry {
                    true => report.entries_removed += 1,
                    false => report.manifests_removed += 1,
                }
            }
        }
        for (name, (_, _, path)) in &blob_sizes {
            if !kept_blobs.contains(name) && fs::remove_file(path).is_ok() {
                report.blobs_removed += 1;
            }
        }
        report.bytes_after = total + report.held_bytes;
        Ok(report)
    }

    /// Removes entries and manifests not used for longer than `age` (an
    /// entry's mtime is its last use); returns how many. Their blobs go with
    /// the next [`Store::gc`] (for `kache gc --older-than`).
    pub fn evict_unused_for(&self, age: Duration) -> io::Result<u64> {
        let _lock = FileLock::acquire(&self.lock_path("gc"), LockMode::Exclusive)?;
        let cutoff = SystemTime::now()
            .checked_sub(age)
            .unwrap_or(SystemTime::UNIX_EPOCH);
        let mut old = Vec::new();
        for dir in ["entries", "manifests"] {
            Self::walk_sharded(&self.root.join(dir), |_, p, m| {
                if m.modified().is_ok_and(|t| t < cutoff) {
                    old.push(p.to_path_buf());
                }
            });
        }
        Ok(old.iter().filter(|p| fs::remove_file(p).is_ok()).count() as u64)
    }

    /// Re-hashes every blob and decodes every entry; removes what is corrupt.
    pub fn verify(&self, mut progress: impl FnMut(u64)) -> VerifyReport {
        let mut report = VerifyReport::default();
        Self::walk_sharded(&self.root.join("blobs"), |name, p, _| {
            report.blobs_checked += 1;
            progress(report.blobs_checked);
            let ok = File::open(p)
                .and_then(|mut f| hash_reader(&mut f))
                .map(|(h, _)| h == name)
                .unwrap_or(false);
            if !ok {
                report.corrupt_blobs.push(name.to_string());
                if fs::remove_file(p).is_ok() {
                    report.removed += 1;
                }
            }
        });
        Self::walk_sharded(&self.root.join("entries"), |name, p, _| {
            let ok = fs::read(p).ok().is_some_and(|b| Entry::decode(&b).is_ok());
            if !ok {
                report.corrupt_entries.push(name.to_string());
                if fs::remove_file(p).is_ok() {
                    report.removed += 1;
                }
            }
        });
        report
    }
}

/// blake3 of everything `r` yields, with its length.
pub fn hash_reader(r: &mut impl Read) -> io::Result<(String, u64)> {
    copy_hashing(r, &mut io::sink(), &mut |_| {})
}

/// blake3 of a file's contents. A small file (a source, a header) is read
/// whole: the copy loop's 256 KiB buffer would cost more to allocate and
/// zero than the file costs to hash, on every input a hit hashes.
pub fn hash_file(path: &Path) -> io::Result<(String, u64)> {
    const WHOLE: u64 = 64 * 1024;
    let mut f = File::open(path)?;
    let len = f.metadata()?.len();
    if len > WHOLE {
        return hash_reader(&mut f);
    }
    let mut bytes = Vec::with_capacity(len as usize + 1);
    f.read_to_end(&mut bytes)?;
    let hash = blake3::hash(&bytes).to_hex().to_string();
    Ok((hash, bytes.len() as u64))
}

/// Copies `r` into `w`, hashing what passes and showing it to `inspect`
/// (the one read loop of the store).
/// The lock every background store holds shared (see [`Store::background_lock`]).
const BACKGROUND_MARKER: &str = "background";

fn manifest_identity_of(m: &fs::Metadata) -> (u64, u64) {
    let sig = kache_platform::file_signature(m);
    (sig.inode, sig.size)
}

/// [`Store::settle`] for the store at `root`, without opening (or creating) it.
pub fn settle(root: &Path, timeout: Duration) -> bool {
    let path = root.join("locks").join(BACKGROUND_MARKER);
    if !path.exists() {
        return true;
    }
    matches!(
        FileLock::acquire_timeout(&path, LockMode::Exclusive, timeout),
        Ok(Some(_))
    )
}

fn copy_hashing(
    r: &mut impl Read,
    w: &mut impl Write,
    inspect: &mut dyn FnMut(&[u8]),
) -> io::Result<(String, u64)> {
    let mut hasher = blake3::Hasher::new();
    let mut buf = vec![0u8; 256 * 1024];
    let mut n_total = 0u64;
    loop {
        let n = match r.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        hasher.update(&buf[..n]);
        inspect(&buf[..n]);
        w.write_all(&buf[..n])?;
        n_total += n as u64;
    }
    Ok((hasher.finalize().to_hex().to_string(), n_total))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Other bytes under a blob's name, keeping its size, then the same content stored
    /// again: the store must end up with the right bytes under the name, not keep the
    /// damaged file because its size matches (a kache mount would then serve it).
    #[test]
    fn storing_content_again_replaces_a_blob_damaged_in_place() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("store")).unwrap();
        let content = b"the bytes a compile made, long enough to damage in the middle";
        let src = dir.path().join("output");
        fs::write(&src, content).unwrap();
        for put in 0..3 {
            let stored = match put {
                0 => store.put_blob_from_path(&src).unwrap(),
                1 => store.put_blob_bytes(content).unwrap(),
                _ => store.put_blob_bytes_unsynced(content).unwrap(),
            };
            let blob = store.blob_path(&stored.hash);
            let mut damaged = fs::read(&blob).unwrap();
            damaged[10..20].copy_from_slice(b"XXXXXXXXXX");
            // Same name, same size, other bytes (a new file: blobs are read-only).
            fs::remove_file(&blob).unwrap();
            fs::write(&blob, &damaged).unwrap();
            let again = match put {
                0 => store.put_blob_from_path(&src).unwrap(),
                1 => store.put_blob_bytes(content).unwrap(),
                _ => store.put_blob_bytes_unsynced(content).unwrap(),
            };
            assert_eq!(again.hash, stored.hash);
            assert_eq!(fs::read(&blob).unwrap(), content, "put {put}");
        }
    }

    /// A blob this store published and nobody touched is kept (not copied again).
    #[test]
    fn an_intact_blob_is_kept() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("store")).unwrap();
        let first = store.put_blob_bytes(b"same content").unwrap();
        let blob = store.blob_path(&first.hash);
        let ino = kache_platform::file_signature(&fs::metadata(&blob).unwrap()).inode;
        store.put_blob_bytes(b"same content").unwrap();
        let again = kache_platform::file_signature(&fs::metadata(&blob).unwrap()).inode;
        assert_eq!(ino, again, "the intact blob was replaced");
    }
}
