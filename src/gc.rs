//! Keeping the store under its size limit without a daemon.
//!
//! Every store adds its bytes to the `gc.pending_bytes` counter. When the
//! last measured total plus what was added since passes the limit, the
//! process that notices runs a collection down to 90% of the limit, unless
//! another process is already collecting (then it simply carries on).

use std::collections::HashSet;

use kache_platform::{FileLock, LockMode};

use crate::stats;
use crate::store::{GcReport, Store};
use crate::wrap::Wrapper;

/// Fraction of the limit a collection shrinks the store to.
const LOW_WATER: f64 = 0.9;

/// Called after a miss stored `added` bytes.
pub fn maybe_collect(w: &mut Wrapper, added: u64) {
    w.count("gc.pending_bytes", added);
    let Some(limit) = w.ctx.config.max_size() else {
        return;
    };
    let Ok(c) = stats::read(&w.store) else { return };
    let estimate = c.get("gc.last_total").copied().unwrap_or(0)
        + c.get("gc.pending_bytes").copied().unwrap_or(0)
        + added;
    // Without a measurement yet, measure once the pending bytes alone could matter.
    if estimate <= limit {
        return;
    }
    // Counters of this call are flushed later; include them now.
    let _ = collect(&w.store, limit, false);
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
    crate::wrap::memo::prune(store, std::time::Duration::from_secs(7 * 24 * 3600));
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
            ("gc.last_total", report.bytes_after - report.held_bytes),
            ("gc.pending_bytes", 0),
        ],
    )?;
    stats::bump(
        store,
        &[
            ("gc.runs".to_string(), 1),
            ("gc.entries_evicted".to_string(), report.entries_removed),
        ],
    )
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
