//! Memoized facts about files and tools, kept in the store so every wrapper
//! process shares them:
//! - file digests keyed by (path, size, mtime, ctime, inode): a hit hashes
//!   only files whose stat changed (ccache's "inode cache");
//! - verified file sets keyed by each file's (path, stat signature, digest):
//!   a manifest record whose files all kept their stat is checked with one
//!   stat per file and no memo read per file;
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

/// Removes file and file-set memos not created in the last `max_age` (they
/// are recomputed on demand). Returns how many were removed.
pub fn prune(store: &Store, max_age: std::time::Duration) -> u64 {
    let cutoff = SystemTime::now() - max_age;
    let mut removed = 0;
    for kind in ["files", "sets"] {
        let Ok(shards) = fs::read_dir(store.root().join("memo").join(kind)) else {
            continue;
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
    let sig = stat_sig(meta);
    let mp = file_memo_path(store, path, &sig);
    if let Ok(text) = fs::read_to_string(&mp) {
        if crate::store::is_valid_hash(&text) {
            return Ok((text, meta.len()));
        }
    }
    let (hash, size) = hash_file(path)?;
    remember_digest(store, path, meta, &hash);
    Ok((hash, size))
}

/// The stat signature of a file as memos name it.
pub fn signature(meta: &fs::Metadata) -> String {
    stat_sig(meta)
}

/// True when a set of files, named by `id` (built by the caller from each
/// file's path, stat signature and expected digest), was verified before:
/// every digest then matched, and no stat has changed since.
pub fn set_verified(store: &Store, id: &str) -> bool {
    memo_path(store, "sets", id).exists()
}

/// Records that the set `id` verified. Not when one of its files changed
/// within the last two seconds (see [`remember_digest`]): `newest_change`
/// is the latest change time among them, in seconds.
pub fn remember_set_verified(store: &Store, id: &str, newest_change: i64) {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    if newest_change >= now - 2 {
        return;
    }
    write_memo(store, &memo_path(store, "sets", id), "");
}

/// The latest change time (mtime or ctime, seconds) of a stat.
pub fn changed_secs(meta: &fs::Metadata) -> i64 {
    kache_platform::file_signature(meta).changed_secs()
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
        write_memo(store, &file_memo_path(store, path, &stat_sig(&meta)), hash);
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
