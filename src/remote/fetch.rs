//! Downloads on a local miss: a manifest (or an entry) and everything it
//! references, checked and imported into the local store within the lookup's
//! time budget.
//!
//! Order of trust: sizes are bounded before bytes are read; a manifest must
//! carry its blake3 trailer and decode as a manifest (`store::manifest`); an
//! entry must pass the self-checking decoder and name only single safe file
//! names and 64-hex blobs; a blob must hash to its name and have the size its
//! entry says. Blobs are stored first, then the entry, then the manifest, so
//! the local store never holds a reference to something missing. A record
//! whose entry or blobs fail is dropped; when none survives the lookup is a
//! miss whose reason names the first failure.

use std::collections::HashSet;
use std::fs;
use std::io::Write;
use std::time::{Duration, Instant};

use opendal::Operator;
use tokio::task::JoinSet;

use super::backend::{get_bounded, get_range, Backend, Got, RemoteError};
use super::local::LocalState;
use super::{blob_path, entry_path, is_safe_mode, is_safe_name, manifest_path, RemoteConfig};
use crate::store::{is_valid_hash, manifest, Entry, Manifest, Store};

/// Blobs up to this size are checked in memory; larger ones stream to a
/// temporary file.
const IN_MEMORY: u64 = 16 << 20;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A direct key's manifest (rust).
    Manifest,
    /// A result key's entry (C/C++).
    Entry,
}

impl Kind {
    fn tag(self) -> &'static str {
        match self {
            Kind::Manifest => "m",
            Kind::Entry => "e",
        }
    }
}

/// What one lookup did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Something usable is now in the local store.
    Imported { bytes_down: u64, objects: u64 },
    /// The remote answered but had nothing usable (`not-found`,
    /// `blob-hash-mismatch`, `corrupt-entry`…), or was not asked
    /// (`negative-cached`, `breaker-open`).
    Miss { reason: String, bytes_down: u64 },
    /// The remote failed (timeout, network, server error).
    Error { reason: String },
}

#[derive(Debug, Clone, Copy)]
struct Limits {
    max_blob: u64,
    max_meta: u64,
}

/// Accumulated result of one import step.
#[derive(Debug, Default)]
struct Moved {
    bytes: u64,
    objects: u64,
}

/// A step's verdict: moved bytes, or a miss reason (with the bytes read
/// before the reason was found).
type Step = Result<Moved, (String, u64)>;

fn miss(reason: &str, bytes: u64) -> Step {
    Err((reason.to_string(), bytes))
}

/// Looks `key` up on the remote and imports what it finds, within
/// `rc.budget` (including the wait for a concurrent wrapper asking for the
/// same key).
pub fn lookup(store: &Store, rc: &RemoteConfig, kind: Kind, key: &str) -> Outcome {
    let started = Instant::now();
    let state = LocalState::new(store);
    if state.breaker_open_for() > 0 {
        return Outcome::Miss {
            reason: "breaker-open".into(),
            bytes_down: 0,
        };
    }
    if state.is_negative(kind.tag(), key, rc.negative_ttl) {
        return Outcome::Miss {
            reason: "negative-cached".into(),
            bytes_down: 0,
        };
    }
    // One request per key: a concurrent wrapper asking for the same key
    // waits here, then finds the peer's result (imported, or negative).
    let Some(_lock) = state.key_lock(key, rc.budget) else {
        return Outcome::Miss {
            reason: "busy".into(),
            bytes_down: 0,
        };
    };
    if state.is_negative(kind.tag(), key, rc.negative_ttl) {
        return Outcome::Miss {
            reason: "negative-cached".into(),
            bytes_down: 0,
        };
    }
    if kind == Kind::Entry && store.has_entry(key) {
        // A peer imported it while we waited.
        return Outcome::Imported {
            bytes_down: 0,
            objects: 0,
        };
    }
    let backend = match Backend::open(rc) {
        Ok(b) => b,
        Err(e) => {
            tracing::debug!("remote: cannot open the backend: {e}");
            return Outcome::Error {
                reason: "config".into(),
            };
        }
    };
    let limits = Limits {
        max_blob: rc.max_blob,
        max_meta: rc.max_meta,
    };
    let remaining = rc.budget.saturating_sub(started.elapsed());
    let op = backend.op.clone();
    let st = store.clone();
    let key_owned = key.to_string();
    let res = backend.run(remaining, async move {
        match kind {
            Kind::Manifest => import_manifest(op, st, limits, key_owned).await,
            Kind::Entry => import_entry(op, st, limits, key_owned, true).await,
        }
    });
    match res {
        Ok(Ok(m)) => {
            state.record_success();
            state.clear_negative(kind.tag(), key);
            Outcome::Imported {
                bytes_down: m.bytes,
                objects: m.objects,
            }
        }
        Ok(Err((reason, bytes_down))) => {
            state.record_success();
            if reason == "not-found" {
                state.mark_negative(kind.tag(), key);
            }
            Outcome::Miss { reason, bytes_down }
        }
        Err(e) => {
            state.record_failure(rc.breaker_failures, rc.breaker_cooldown);
            Outcome::Error { reason: e.label() }
        }
    }
}

async fn import_manifest(
    op: Operator,
    store: Store,
    limits: Limits,
    key: String,
) -> Result<Step, RemoteError> {
    let bytes = match get_bounded(&op, &manifest_path(&key), limits.max_meta).await? {
        Got::NotFound => return Ok(miss("not-found", 0)),
        Got::TooLarge => return Ok(miss("manifest-too-large", limits.max_meta)),
        Got::Found(b) => b,
    };
    let mut moved = Moved {
        bytes: bytes.len() as u64,
        objects: 1,
    };
    let Some(body) = manifest::unseal(&bytes) else {
        return Ok(miss("corrupt-manifest", moved.bytes));
    };
    // A path-local record is never shared; one found on a remote is not used.
    let Some(records) = Manifest::decode(body).map(|m| m.shareable().records) else {
        return Ok(miss("bad-manifest", moved.bytes));
    };
    if records.is_empty() {
        return Ok(miss("bad-manifest", moved.bytes));
    }
    // Every record's entry and blobs at once; the records that verify are kept.
    let mut set = JoinSet::new();
    for (i, rec) in records.iter().enumerate() {
        let (op, store, result) = (op.clone(), store.clone(), rec.result.clone());
        set.spawn(async move { (i, import_entry(op, store, limits, result, false).await) });
    }
    let mut good = vec![false; records.len()];
    let mut first_reason: Option<(usize, String)> = None;
    while let Some(joined) = set.join_next().await {
        let Ok((i, res)) = joined else { continue };
        match res? {
            Ok(m) => {
                good[i] = true;
                moved.bytes += m.bytes;
                moved.objects += m.objects;
            }
            Err((reason, b)) => {
                moved.bytes += b;
                if first_reason.as_ref().is_none_or(|(j, _)| i < *j) {
                    first_reason = Some((i, reason));
                }
            }
        }
    }
    let kept = Manifest {
        records: records
            .into_iter()
            .zip(good)
            .filter(|(_, g)| *g)
            .map(|(r, _)| r)
            .collect(),
    };
    if kept.records.is_empty() {
        let reason = first_reason.map_or("bad-manifest".to_string(), |(_, r)| r);
        return Ok(miss(&reason, moved.bytes));
    }
    let merged = kept.merge(store.get_manifest(&key).unwrap_or_default());
    if store.put_manifest(&key, &merged).is_err() {
        return Ok(miss("store-io", moved.bytes));
    }
    Ok(Ok(moved))
}

/// Makes entry `key` and all its blobs local. `direct_lookup`: the entry
/// itself was asked for (its absence is `not-found`), rather than named by a
/// manifest (its absence is `entry-missing`).
async fn import_entry(
    op: Operator,
    store: Store,
    limits: Limits,
    key: String,
    direct_lookup: bool,
) -> Result<Step, RemoteError> {
    let mut moved = Moved::default();
    let (entry, fetched) = match store.get_entry(&key) {
        Ok(e) => (e, false),
        Err(_) => {
            let bytes = match get_bounded(&op, &entry_path(&key), limits.max_meta).await? {
                Got::NotFound => {
                    let r = if direct_lookup {
                        "not-found"
                    } else {
                        "entry-missing"
                    };
                    return Ok(miss(r, 0));
                }
                Got::TooLarge => return Ok(miss("entry-too-large", limits.max_meta)),
                Got::Found(b) => b,
            };
            moved.bytes += bytes.len() as u64;
            moved.objects += 1;
            match Entry::decode(&bytes) {
                Ok(e) => (e, true),
                Err(_) => return Ok(miss("corrupt-entry", moved.bytes)),
            }
        }
    };
    for out in &entry.outputs {
        if !is_safe_name(&out.name) {
            return Ok(miss("unsafe-output-name", moved.bytes));
        }
        if !is_valid_hash(&out.blob) {
            return Ok(miss("bad-blob-name", moved.bytes));
        }
        if !is_safe_mode(out.mode) {
            return Ok(miss("unsafe-mode", moved.bytes));
        }
        if out.size > limits.max_blob {
            return Ok(miss("blob-too-large", moved.bytes));
        }
    }
    let mut set = JoinSet::new();
    let mut seen = HashSet::new();
    for out in &entry.outputs {
        if !seen.insert(out.blob.clone()) || blob_is_local(&store, &out.blob, out.size) {
            continue;
        }
        let (op, store, hash, size) = (op.clone(), store.clone(), out.blob.clone(), out.size);
        set.spawn(async move { import_blob(&op, &store, &hash, size).await });
    }
    let mut failure: Option<String> = None;
    while let Some(joined) = set.join_next().await {
        let Ok(res) = joined else {
            failure.get_or_insert("task-failed".into());
            continue;
        };
        match res? {
            Ok(m) => {
                moved.bytes += m.bytes;
                moved.objects += m.objects;
            }
            Err((reason, b)) => {
                moved.bytes += b;
                failure.get_or_insert(reason);
            }
        }
    }
    if let Some(reason) = failure {
        return Ok(miss(&reason, moved.bytes));
    }
    if fetched && store.put_entry(&key, &entry).is_err() {
        return Ok(miss("store-io", moved.bytes));
    }
    Ok(Ok(moved))
}

fn blob_is_local(store: &Store, hash: &str, size: u64) -> bool {
    fs::metadata(store.blob_path(hash)).is_ok_and(|m| m.len() == size)
}

/// Downloads blob `hash` of `size` bytes, re-hashes it, and stores it.
async fn import_blob(
    op: &Operator,
    store: &Store,
    hash: &str,
    size: u64,
) -> Result<Step, RemoteError> {
    let path = blob_path(hash);
    if size <= IN_MEMORY {
        // One byte more than expected reveals a longer object.
        let bytes = match get_range(op, &path, 0, size + 1).await? {
            Got::NotFound => return Ok(miss("blob-missing", 0)),
            Got::TooLarge => return Ok(miss("blob-size-mismatch", 0)),
            Got::Found(b) => b,
        };
        let n = bytes.len() as u64;
        if n != size {
            return Ok(miss("blob-size-mismatch", n));
        }
        if blake3::hash(&bytes).to_hex().as_str() != hash {
            return Ok(miss("blob-hash-mismatch", n));
        }
        return Ok(match store.put_blob_bytes(&bytes) {
            Ok(_) => Ok(Moved {
                bytes: n,
                objects: 1,
            }),
            Err(_) => miss("store-io", n),
        });
    }
    // Large: stream into a temporary file while hashing, then store it.
    const CHUNK: u64 = 16 << 20;
    let tmp = kache_platform::atomic::temp_name_in(&store.tmp_dir());
    let cleanup = TempGuard(tmp.clone());
    let Ok(mut file) = fs::File::create(&tmp) else {
        return Ok(miss("store-io", 0));
    };
    let mut hasher = blake3::Hasher::new();
    let mut got = 0u64;
    // Ranges up to one byte past the expected end: a longer object shows.
    while got <= size {
        let end = (got + CHUNK).min(size + 1);
        let chunk = match get_range(op, &path, got, end).await? {
            Got::NotFound => return Ok(miss("blob-missing", got)),
            Got::TooLarge => return Ok(miss("blob-size-mismatch", got)),
            Got::Found(b) => b,
        };
        let short = (chunk.len() as u64) < end - got;
        got += chunk.len() as u64;
        if got > size {
            return Ok(miss("blob-size-mismatch", got));
        }
        hasher.update(&chunk);
        if file.write_all(&chunk).is_err() {
            return Ok(miss("store-io", got));
        }
        if short {
            break;
        }
    }
    if got != size {
        return Ok(miss("blob-size-mismatch", got));
    }
    if hasher.finalize().to_hex().as_str() != hash {
        return Ok(miss("blob-hash-mismatch", got));
    }
    drop(file);
    let stored = store.put_blob_from_path(&tmp);
    drop(cleanup);
    Ok(match stored {
        Ok(b) if b.hash == hash => Ok(Moved {
            bytes: got,
            objects: 1,
        }),
        // The temporary changed under us: refuse it.
        Ok(_) => miss("blob-hash-mismatch", got),
        Err(_) => miss("store-io", got),
    })
}

struct TempGuard(std::path::PathBuf);

impl Drop for TempGuard {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.0);
    }
}

/// For `kache remote status`: a HEAD-like request's round trip.
pub fn probe_latency(backend: &Backend, limit: Duration) -> Result<Duration, RemoteError> {
    let op = backend.op.clone();
    let t = Instant::now();
    backend.run(limit, async move {
        super::backend::exists(&op, &format!("{}/probe-absent", super::LAYOUT)).await
    })?;
    Ok(t.elapsed())
}
