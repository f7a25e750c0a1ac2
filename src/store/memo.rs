//! Memoized facts about files and tools, kept in the store so every wrapper
//! process shares them:
//! - file digests keyed by (path, size, mtime, ctime, inode): a hit hashes
//!   only files whose stat changed (ccache's "inode cache");
//! - verified sets: a manifest record's files, each with its stat and the
//!   content it must have, all seen to match at once, so the next hit with
//!   the same stats checks one memo instead of one per file (a linked
//!   output's record names its whole link closure);
//! - tool identities (`rustc -vV`, `cc --version`) keyed by the tool binary's
//!   path, size and mtime: per-compiler facts only, never per-file ones (a
//!   memo of anything per-file, shared by concurrent compiles of different
//!   files, would let one file's facts leak into another's key).
//!
//! A memo is only an accelerator: an unreadable or damaged memo is ignored
//! and the fact recomputed.
//!
//! File memos are named by (path, stat signature) and never rewritten: a
//! changed file gets a new memo name, and the old one ages out (`prune`).
//! Rewriting one name (rename over it, or truncate it) would make ext4 flush
//! synchronously (`auto_da_alloc`) on every hit.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use crate::store::{hash_file, Store};

fn memo_path(store: &Store, kind: &str, id: &str) -> PathBuf {
    let h = blake3::hash(id.as_bytes()).to_hex();
    store
        .root()
        .join("memo")
        .join(kind)
        .join(&h[..2])
        .join(&h[2..])
}

fn write_memo(store: &Store, path: &Path, text: &str) {
    if path.exists() {
        return;
    }
    if let Some(dir) = path.parent() {
        if !dir.is_dir() && fs::create_dir_all(dir).is_err() {
            return;
        }
    }
    let _ = kache_platform::replace_unsynced(&store.tmp_dir(), path, text.as_bytes());
}

fn file_memo_path(store: &Store, path: &Path, sig: &str) -> PathBuf {
    memo_path(
        store,
        "files",
        &format!("{}\0{sig}", path.to_string_lossy()),
    )
}

/// Removes file and verified-set memos not created in the last `max_age`
/// (they are recomputed on demand). Returns how many were removed.
pub fn prune(store: &Store, max_age: std::time::Duration) -> u64 {
    ["files", "verified"]
        .iter()
        .map(|kind| prune_kind(store, kind, max_age))
        .sum()
}

fn prune_kind(store: &Store, kind: &str, max_age: std::time::Duration) -> u64 {
    let cutoff = SystemTime::now() - max_age;
    let mut removed = 0;
    let Ok(shards) = fs::read_dir(store.root().join("memo").join(kind)) else {
        return 0;
    };
    for shard in shards.flatten() {
        let Ok(files) = fs::read_dir(shard.path()) else {
            continue;
        };
        for f in files.flatten() {
            let old = f
                .metadata()
                .and_then(|m| m.modified())
                .is_ok_and(|m| m < cutoff);
            if old && fs::remove_file(f.path()).is_ok() {
                removed += 1;
            }
        }
    }
    removed
}

fn stat_sig(meta: &fs::Metadata) -> String {
    kache_platform::file_signature(meta).to_text()
}

/// A file's (blake3, size), using the memo when its stat is unchanged.
pub fn file_digest(store: &Store, path: &Path) -> io::Result<(String, u64)> {
    let meta = fs::metadata(path)?;
    file_digest_of(store, path, &meta)
}

/// [`file_digest`] for a file whose stat the caller already has.
pub fn file_digest_of(
    store: &Store,
    path: &Path,
    meta: &fs::Metadata,
) -> io::Result<(String, u64)> {
    if let Some(hash) = known_digest(store, path, meta) {
        return Ok((hash, meta.len()));
    }
    let (hash, size) = hash_file(path)?;
    remember_digest(store, path, meta, &hash);
    Ok((hash, size))
}

/// The digest the memo holds for `path` with stat `meta`, if any; nothing is hashed.
pub fn known_digest(store: &Store, path: &Path, meta: &fs::Metadata) -> Option<String> {
    let text = fs::read_to_string(file_memo_path(store, path, &stat_sig(meta))).ok()?;
    crate::store::is_valid_hash(&text).then_some(text)
}

/// Records that `path` (with stat `meta`) has content `hash`. Files changed
/// within the last two seconds are not memoized: a write in the same clock
/// tick could change the content without changing the stat.
pub fn remember_digest(store: &Store, path: &Path, meta: &fs::Metadata, hash: &str) {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    if kache_platform::file_signature(meta).changed_secs() >= now - 2 {
        return;
    }
    write_memo(store, &file_memo_path(store, path, &stat_sig(meta)), hash);
}

/// Records the digest of a file kache itself just placed or verified
/// (a restored output, a blob it hardlinked and re-stamped). Unlike
/// [`remember_digest`] this trusts a fresh stat: the content is known, not
/// read back, so no write in the same clock tick can hide behind it.
pub fn remember_output(store: &Store, path: &Path, hash: &str) {
    if let Ok(meta) = fs::metadata(path) {
        remember_output_as(store, path, &meta, hash);
    }
}

/// Like [`remember_output`] for a file whose stat `meta` was taken when `hash` was read
/// from it (through its descriptor): the path may hold another file by now, and a memo
/// keyed by that file's stat would vouch for bytes it does not have.
pub fn remember_output_as(store: &Store, path: &Path, meta: &fs::Metadata, hash: &str) {
    write_memo(store, &file_memo_path(store, path, &stat_sig(meta)), hash);
}

/// A set of files, each with its current stat and the content it must
/// have, as one memo key (see [`set_verified`]).
#[derive(Debug, Default)]
pub struct FileSet {
    key: String,
    /// Some file changed too recently for its stat to vouch for its content.
    recent: bool,
}

impl FileSet {
    /// Adds `path` (with stat `meta`) that must hold `hash`.
    pub fn add(&mut self, path: &Path, meta: &fs::Metadata, hash: &str) {
        let sig = kache_platform::file_signature(meta);
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs() as i64)
            .unwrap_or(0);
        self.recent |= sig.changed_secs() >= now - 2;
        self.key.push_str(&format!(
            "{}\0{}\0{hash}\n",
            path.to_string_lossy(),
            sig.to_text()
        ));
    }
}

/// True when every file of `set` was seen, with exactly these stats, to
/// hold its content (one `stat` of one memo).
pub fn set_verified(store: &Store, set: &FileSet) -> bool {
    !set.key.is_empty() && memo_path(store, "verified", &set.key).is_file()
}

/// Records that every file of `set` holds its content (just checked file
/// by file). Not when one changed in the last two seconds: a write in the
/// same clock tick could change content without changing the stat.
pub fn remember_set_verified(store: &Store, set: &FileSet) {
    if !set.key.is_empty() && !set.recent {
        write_memo(store, &memo_path(store, "verified", &set.key), "ok");
    }
}

/// The identity text of a tool, memoized by the binary's path, size and
/// mtime plus `extra` (e.g. the rustup toolchain). `probe` computes it.
pub fn tool_identity(
    store: &Store,
    binary: &Path,
    extra: &str,
    probe: impl FnOnce() -> io::Result<String>,
) -> io::Result<(String, bool)> {
    let meta = fs::metadata(binary)?;
    let sig = kache_platform::file_signature(&meta);
    let id = format!(
        "{}\0{}\0{}\0{}",
        binary.display(),
        sig.size,
        sig.mtime_ns,
        extra
    );
    let mp = memo_path(store, "tools", &id);
    if let Ok(text) = fs::read_to_string(&mp) {
        return Ok((text, false));
    }
    let text = probe()?;
    write_memo(store, &mp, &text);
    Ok((text, true))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set_of(path: &Path, hash: &str) -> FileSet {
        let mut set = FileSet::default();
        set.add(path, &fs::metadata(path).unwrap(), hash);
        set
    }

    #[test]
    fn a_verified_set_stops_vouching_once_a_file_changes() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("store")).unwrap();
        let f = dir.path().join("input");
        fs::write(&f, "one").unwrap();
        let old = SystemTime::now() - std::time::Duration::from_secs(60);
        fs::File::options()
            .write(true)
            .open(&f)
            .unwrap()
            .set_modified(old)
            .unwrap();
        // ctime is now: a set verified this instant is not remembered.
        let fresh = set_of(&f, "h1");
        remember_set_verified(&store, &fresh);
        assert!(!set_verified(&store, &fresh));

        // Once the stat is old enough, one memo vouches for the set.
        let aged = FileSet {
            key: fresh.key.clone(),
            recent: false,
        };
        remember_set_verified(&store, &aged);
        assert!(set_verified(&store, &set_of(&f, "h1")));
        // Another expected content is another set.
        assert!(!set_verified(&store, &set_of(&f, "h2")));
        // A write changes the stat, so the set is no longer the same.
        std::thread::sleep(std::time::Duration::from_millis(20));
        fs::write(&f, "two").unwrap();
        assert!(!set_verified(&store, &set_of(&f, "h1")));
    }
}
