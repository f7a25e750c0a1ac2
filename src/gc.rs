//! Keeping the store under its size limit without a daemon.
//!
//! Every store adds its bytes to the `gc.pending_bytes` counter. When the
//! last measured total plus what was added since passes the limit, the
//! process that notices runs a collection down to 90% of the limit, unless
//! another process is already collecting (then it simply carries on).

use std::collections::HashSet;

use kache_platform::{FileLock, LockMode};

use crate::stats::{self, Counter, Tally};
use crate::store::{GcReport, Store};

/// Fraction of the limit a collection shrinks the store to.
const LOW_WATER: f64 = 0.9;

/// Called after a miss stored `added` bytes (which the caller counts in
/// `gc.pending_bytes`). Collects when the estimate passes `limit`; returns
/// true when this call collected.
pub fn maybe_collect(store: &Store, limit: Option<u64>, added: u64) -> bool {
    let Some(limit) = limit else {
        return false;
    };
    let Ok(c) = stats::read(store) else {
        return false;
    };
    // The caller's own pending bytes are flushed later; include them now.
    let read = |k: Counter| c.get(&k.key(None)).copied().unwrap_or(0);
    let estimate = read(Counter::GcLastTotal) + read(Counter::GcPendingBytes) + added;
    estimate > limit && collect(store, limit, false).unwrap_or(false)
}

/// Runs a collection to the low-water mark of `limit`. With `wait` false,
/// returns `Ok(false)` when another process holds the gc lock.
pub fn collect(store: &Store, limit: u64, wait: bool) -> std::io::Result<bool> {
    let guard_path = store.lock_path("gc-trigger");
    let guard = if wait {
        Some(FileLock::acquire(&guard_path, LockMode::Exclusive)?)
    } else {
        FileLock::try_acquire(&guard_path, LockMode::Exclusive)?
    };
    let Some(_guard) = guard else {
        return Ok(false);
    };
    let target = (limit as f64 * LOW_WATER) as u64;
    let report = store.gc(target, &pinned_blobs(store))?;
    // Digest memos are cheap to recompute; keep a week of them.
    crate::store::memo::prune(store, std::time::Duration::from_secs(7 * 24 * 3600));
    // A recording session older than a day belongs to a wrapper that was
    // killed mid-compile.
    crate::wrap::observe::prune_sessions(store, std::time::Duration::from_secs(24 * 3600));
    record(store, &report)?;
    Ok(true)
}

/// Counts a collection (automatic or `kache gc`) in the store's counters, so `kache stats`
/// agrees with what the collection said: `gc.entries_evicted` grows by the entries it removed.
pub fn record(store: &Store, report: &GcReport) -> std::io::Result<()> {
    stats::set(
        store,
        &[
            // What counts against the limit: blobs held by mounts are counted apart.
            (
                Counter::GcLastTotal,
                report.bytes_after.saturating_sub(report.held_bytes),
            ),
            (Counter::GcPendingBytes, 0),
        ],
    )?;
    let mut t = Tally::default();
    t.add_store(Counter::GcRuns, 1);
    t.add_store(Counter::GcEntriesEvicted, report.entries_removed);
    t.flush(store)
}

/// Blobs that must survive any collection: every blob placed in a kache mount's state
/// directory (`mounts/<id>/`), mounted or not.
pub fn pinned_blobs(store: &Store) -> HashSet<String> {
    crate::mount::placed_blobs(store.root())
}

/// Bytes of the store's blobs that mounts hold (placed in a mount's state directory): what
/// `kache stats` shows as `store.mount_held_bytes`, and gc counts apart from its limit.
pub fn mount_held_bytes(store: &Store) -> u64 {
    crate::mount::placed_blobs(store.root())
        .iter()
        .filter_map(|b| std::fs::metadata(store.blob_path(b)).ok())
        .map(|m| m.len())
        .sum()
}
