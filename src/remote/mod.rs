//! The remote tier (S3-compatible object storage, shared directory).
//!
//! The wrappers call exactly three functions here:
//! - [`import_direct`]: after a local direct-mode miss, fetch the manifest of
//!   a direct key and the entries/blobs it names into the local store, within
//!   the configured time budget; true when something usable was imported;
//! - [`import_entry`]: the same for a result key (the C/C++ path);
//! - [`queue_upload`]: after a miss stored locally, queue the manifest (if
//!   any), the entry and its blobs for asynchronous upload.
//!
//! Until a remote is configured (`remote.url`) these do nothing.

use crate::wrap::Wrapper;

/// Imports the manifest of `direct` and what it references. Never blocks
/// longer than `remote.timeout_ms`.
pub fn import_direct(w: &mut Wrapper, direct: &str) -> bool {
    let _ = (w, direct);
    false
}

/// Imports the entry `result` and its blobs.
pub fn import_entry(w: &mut Wrapper, result: &str) -> bool {
    let _ = (w, result);
    false
}

/// Queues `direct`'s manifest (when given), entry `result` and its blobs
/// for upload. Must return at once: the build never waits for an upload.
pub fn queue_upload(w: &mut Wrapper, direct: Option<&str>, result: &str) {
    let _ = (w, direct, result);
}
