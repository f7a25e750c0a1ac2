//! The durable upload spool: `$KACHE_DIR/remote/spool/<result>.<direct|->`,
//! one small JSON file per queued upload, written atomically by the wrapper
//! after a miss and removed only once its blobs, entry and manifest are all on
//! the remote. Any process can drain it: `kache remote drain`, the daemon
//! (through [`drain_spool`]), or the detached drainer a wrapper starts. A
//! killed drainer leaves the spool as it was; the next one picks it up.
//!
//! One drainer at a time (flock on `remote/locks/drain`). The hand-off with
//! wrappers has no gap: a wrapper writes its spool file *before* checking the
//! lock, and a drainer that found the spool empty re-checks it *after*
//! releasing the lock, so a file queued at any moment is seen by someone.

use std::collections::HashSet;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use kache_platform::{write_atomic, FileLock, LockMode};
use serde::{Deserialize, Serialize};
use tokio::task::JoinSet;

use super::backend::{self, get_bounded, Backend, Got, RemoteError};
use super::local::LocalState;
use super::{blob_path, entry_path, manifest_path, RemoteConfig};
use crate::config::Config;
use crate::stats::{Counter, Tally};
use crate::store::{is_valid_hash, manifest, Manifest, Store};

#[derive(Debug, Serialize, Deserialize)]
struct Item {
    direct: Option<String>,
    result: String,
    queued: u64,
}

/// What one drain did.
#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize)]
pub struct DrainReport {
    /// Spool items fully uploaded and removed.
    pub items: u64,
    /// Objects written (blobs, entries, manifests).
    pub objects_up: u64,
    pub bytes_up: u64,
    /// Blobs and entries the remote already had (not sent again).
    pub already_there: u64,
    /// Items dropped because their entry left the local store (evicted).
    pub dropped: u64,
    /// Items still queued when the drain ended.
    pub remaining: u64,
    /// True when another drainer held the lock and this one did nothing.
    pub busy: bool,
}

fn item_name(direct: Option<&str>, result: &str) -> String {
    format!("{result}.{}", direct.unwrap_or("-"))
}

/// Queues an upload; `Ok(false)` when the same upload is already queued.
pub fn enqueue(store: &Store, direct: Option<&str>, result: &str) -> io::Result<bool> {
    let dir = LocalState::new(store).spool_dir()?;
    let dest = dir.join(item_name(direct, result));
    if dest.exists() {
        return Ok(false);
    }
    let item = Item {
        direct: direct.map(String::from),
        result: result.to_string(),
        queued: SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0),
    };
    let text = serde_json::to_vec(&item).map_err(io::Error::other)?;
    write_atomic(&store.tmp_dir(), &dest, &text, None)?;
    Ok(true)
}

/// Starts `kache remote drain --background` unless a drainer is running
/// (which will then find what was just queued). Never waits for it.
pub fn start_background_drain(store: &Store) {
    let Ok(lock_path) = LocalState::new(store).drain_lock_path() else {
        return;
    };
    match FileLock::try_acquire(&lock_path, LockMode::Exclusive) {
        Ok(Some(l)) => drop(l),
        _ => return,
    }
    let Ok(exe) = std::env::current_exe() else {
        return;
    };
    // Detached: no stdio shared with the compiler's caller (cargo reads the
    // wrapper's pipes to their end), and nobody waits for it.
    let spawned = Command::new(exe)
        .args(["remote", "drain", "--background"])
        .env("KACHE_DIR", store.root())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn();
    if let Err(e) = spawned {
        tracing::debug!("cannot start a background drain: {e}");
    }
}

/// Spool files, oldest first.
fn pending(dir: &Path) -> Vec<PathBuf> {
    let Ok(rd) = fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut v: Vec<(SystemTime, PathBuf)> = rd
        .flatten()
        .filter(|e| !e.file_name().to_string_lossy().starts_with('.'))
        .map(|e| {
            let t = e
                .metadata()
                .and_then(|m| m.modified())
                .unwrap_or(UNIX_EPOCH);
            (t, e.path())
        })
        .collect();
    v.sort();
    v.into_iter().map(|(_, p)| p).collect()
}

/// Number of uploads waiting in the spool.
pub fn queued(store: &Store) -> u64 {
    LocalState::new(store)
        .spool_dir()
        .map(|d| pending(&d).len() as u64)
        .unwrap_or(0)
}

/// Uploads everything in the spool, waiting first for a drainer already at
/// work. This is what the daemon calls periodically; it blocks (call it from
/// a plain thread or `spawn_blocking`, never inside an async task: it runs
/// its own runtime). Read-only mode uploads nothing and leaves the spool.
pub fn drain_spool(store: &Store, config: &Config) -> Result<DrainReport, String> {
    drain(store, config, true)
}

/// `wait` false: return at once (`busy`) if another drainer holds the lock.
pub fn drain(store: &Store, config: &Config, wait: bool) -> Result<DrainReport, String> {
    let rc = match RemoteConfig::from_config(config) {
        None => return Err("no remote configured (remote.url / KACHE_REMOTE)".into()),
        Some(r) => r?,
    };
    let state = LocalState::new(store);
    let dir = state.spool_dir().map_err(|e| format!("spool: {e}"))?;
    let mut report = DrainReport::default();
    if rc.read_only {
        report.remaining = pending(&dir).len() as u64;
        return Ok(report);
    }
    state.prune_negative(rc.negative_ttl);
    let lock_path = state.drain_lock_path().map_err(|e| format!("spool: {e}"))?;
    let mut backend: Option<Backend> = None;
    loop {
        let lock = if wait {
            FileLock::acquire_timeout(&lock_path, LockMode::Exclusive, Duration::from_secs(3600))
        } else {
            FileLock::try_acquire(&lock_path, LockMode::Exclusive)
        }
        .map_err(|e| format!("drain lock: {e}"))?;
        let Some(lock) = lock else {
            report.busy = true;
            report.remaining = pending(&dir).len() as u64;
            return Ok(report);
        };
        let mut result = Ok(());
        loop {
            let items = pending(&dir);
            if items.is_empty() {
                break;
            }
            if backend.is_none() {
                backend = Some(Backend::open(&rc)?);
            }
            let Some(b) = backend.as_ref() else { break };
            for path in items {
                if let Err(e) = drain_item(b, store, &rc, &path, &mut report) {
                    state.record_failure(rc.breaker_failures, rc.breaker_cooldown);
                    result = Err(e);
                    break;
                }
                state.record_success();
            }
            if result.is_err() {
                break;
            }
        }
        drop(lock);
        report.remaining = pending(&dir).len() as u64;
        if let Err(e) = result {
            return Err(format!(
                "{e} ({} uploads still queued; the next drain retries them)",
                report.remaining
            ));
        }
        // Queued after our last look but before we let go: take it too.
        if report.remaining == 0 {
            return Ok(report);
        }
    }
}

fn bump(store: &Store, objects: u64, bytes: u64) {
    if objects > 0 {
        let mut t = Tally::default();
        t.add_store(Counter::RemoteUploads, objects);
        t.add_store(Counter::RemoteBytesUp, bytes);
        let _ = t.flush(store);
    }
}

/// Uploads one spool item: blobs the remote lacks, then the entry, then the
/// manifest merged with the remote's; removes the spool file on success.
fn drain_item(
    b: &Backend,
    store: &Store,
    rc: &RemoteConfig,
    path: &Path,
    report: &mut DrainReport,
) -> Result<(), RemoteError> {
    let item: Option<Item> = fs::read(path)
        .ok()
        .and_then(|t| serde_json::from_slice(&t).ok());
    let Some(item) =
        item.filter(|i| is_valid_hash(&i.result) && i.direct.as_deref().is_none_or(is_valid_hash))
    else {
        // Unreadable (hand-made, or a foreign format): nothing to upload.
        let _ = fs::remove_file(path);
        report.dropped += 1;
        return Ok(());
    };
    let Ok(entry) = store.get_entry(&item.result) else {
        let _ = fs::remove_file(path);
        report.dropped += 1;
        return Ok(());
    };
    let mut blobs: Vec<(String, PathBuf, u64)> = Vec::new();
    let mut seen = HashSet::new();
    for o in &entry.outputs {
        if !seen.insert(o.blob.clone()) {
            continue;
        }
        let p = store.blob_path(&o.blob);
        if o.size > rc.max_blob || fs::metadata(&p).map(|m| m.len()).ok() != Some(o.size) {
            // Too large to share, or gone locally: this entry cannot be served
            // remotely, so do not publish it.
            let _ = fs::remove_file(path);
            report.dropped += 1;
            return Ok(());
        }
        blobs.push((o.blob.clone(), p, o.size));
    }
    let op = b.op.clone();
    let (objects, bytes, present) = b.run(rc.transfer_timeout, async move {
        let mut set = JoinSet::new();
        for (hash, local, _) in blobs {
            let op = op.clone();
            set.spawn(async move {
                let remote = blob_path(&hash);
                if backend::exists(&op, &remote).await? {
                    return Ok::<_, RemoteError>(None);
                }
                backend::put_file(&op, &remote, &local).await.map(Some)
            });
        }
        let (mut objects, mut bytes, mut present) = (0u64, 0u64, 0u64);
        while let Some(j) = set.join_next().await {
            match j.map_err(|_| RemoteError::Io("task-failed".into()))?? {
                Some(n) => {
                    objects += 1;
                    bytes += n;
                }
                None => present += 1,
            }
        }
        Ok((objects, bytes, present))
    })?;
    report.objects_up += objects;
    report.bytes_up += bytes;
    report.already_there += present;
    bump(store, objects, bytes);

    // The entry only after all its blobs: a reader never finds an entry
    // whose blobs are not there yet.
    let ekey = entry_path(&item.result);
    let op = b.op.clone();
    let encoded = entry.encode();
    let n = encoded.len() as u64;
    let sent = b.run(rc.transfer_timeout, async move {
        if backend::exists(&op, &ekey).await? {
            return Ok(false);
        }
        backend::put(&op, &ekey, encoded).await.map(|_| true)
    })?;
    if sent {
        report.objects_up += 1;
        report.bytes_up += n;
        bump(store, 1, n);
    } else {
        report.already_there += 1;
    }

    if let Some(direct) = &item.direct {
        // Path-local records hold this worktree's paths: they stay here.
        if let Ok(local) = store.get_manifest(direct).map(Manifest::shareable) {
            let mkey = manifest_path(direct);
            let op = b.op.clone();
            let max = rc.max_meta;
            let n = b.run(rc.transfer_timeout, async move {
                // Keep what other machines published for this key.
                let remote = match get_bounded(&op, &mkey, max).await? {
                    Got::Found(bytes) => manifest::unseal(&bytes)
                        .and_then(Manifest::decode)
                        .unwrap_or_default(),
                    _ => Manifest::default(),
                };
                let merged = local.merge(remote.clone());
                if merged == remote {
                    return Ok(0);
                }
                let obj = manifest::seal(&merged.encode());
                let n = obj.len() as u64;
                backend::put(&op, &mkey, obj).await.map(|_| n)
            })?;
            if n > 0 {
                report.objects_up += 1;
                report.bytes_up += n;
                bump(store, 1, n);
            }
        }
    }
    let _ = fs::remove_file(path);
    report.items += 1;
    Ok(())
}
