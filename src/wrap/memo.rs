//! Memoized facts about files and tools, kept in the store so every wrapper
//! process shares them:
//! - file digests keyed by (path, size, mtime, ctime, inode): a hit hashes
//!   only files whose stat changed (ccache's "inode cache");
//! - tool identities (`rustc -vV`, `cc --version`) keyed by the tool binary's
//!   path, size and mtime: per-compiler facts only, never per-file ones
//!   (lesson 10).
//!
//! A memo is only an accelerator: an unreadable or damaged memo is ignored
//! and the fact recomputed.

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
    if let Some(dir) = path.parent() {
        if !dir.is_dir() && fs::create_dir_all(dir).is_err() {
            return;
        }
    }
    let _ = kache_platform::replace_unsynced(&store.tmp_dir(), path, text.as_bytes());
}

fn stat_sig(meta: &fs::Metadata) -> String {
    kache_platform::file_signature(meta).to_text()
}

/// A file's (blake3, size), using the memo when its stat is unchanged.
pub fn file_digest(store: &Store, path: &Path) -> io::Result<(String, u64)> {
    let meta = fs::metadata(path)?;
    let sig = stat_sig(&meta);
    let mp = memo_path(store, "files", &path.to_string_lossy());
    if let Ok(text) = fs::read_to_string(&mp) {
        if let Some((s, hash)) = text.rsplit_once(' ') {
            if s == sig && hash.len() == 64 {
                return Ok((hash.to_string(), meta.len()));
            }
        }
    }
    let (hash, size) = hash_file(path)?;
    remember_digest(store, path, &meta, &hash);
    Ok((hash, size))
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
    let mp = memo_path(store, "files", &path.to_string_lossy());
    write_memo(store, &mp, &format!("{} {hash}", stat_sig(meta)));
}

/// Records the digest of a file kache itself just placed or verified
/// (a restored output, a blob it hardlinked and re-stamped). Unlike
/// [`remember_digest`] this trusts a fresh stat: the content is known, not
/// read back, so no write in the same clock tick can hide behind it.
pub fn remember_output(store: &Store, path: &Path, hash: &str) {
    if let Ok(meta) = fs::metadata(path) {
        let mp = memo_path(store, "files", &path.to_string_lossy());
        write_memo(store, &mp, &format!("{} {hash}", stat_sig(&meta)));
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

/// Finds `name` on PATH (or returns it if it has a slash).
pub fn which(name: &str) -> Option<PathBuf> {
    if name.contains('/') {
        let p = PathBuf::from(name);
        return p.is_file().then_some(p);
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}
