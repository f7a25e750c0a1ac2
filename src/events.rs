//! The event log, `$KACHE_DIR/events.jsonl`: one JSON line per wrapper call
//! (time, language, outcome, reasons, unit, milliseconds, bytes, key-group
//! digests), and one per seeding of a new target dir. Written by
//! [`crate::wrap`] and [`crate::seed`] through the same values that bump the
//! counters, read by `kache report` and `kache why-miss`.
//!
//! Append-only, one `write` of a short line with `O_APPEND` per call, so
//! concurrent wrappers never interleave records. A line that does not parse
//! is skipped by readers: a torn line must not hide the rest.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;

use serde::{Deserialize, Serialize};

const FILE: &str = "events.jsonl";

/// One line of the event log.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Event {
    #[serde(default)]
    pub t: u64,
    #[serde(default)]
    pub lang: String,
    /// `hit`, `miss`, `passthrough` or `error`; `seed` for a seeding.
    #[serde(default)]
    pub outcome: String,
    /// A miss's reason or a passthrough's (the labels `kache stats` counts).
    #[serde(default)]
    pub reason: Option<String>,
    /// For a miss whose result was not stored, why (`compile-failed`, …).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub not_stored: Option<String>,
    /// For a call whose direct lookup could not serve it (it fell back to
    /// the key ahead: C/C++'s preprocessor), why.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub direct_fallback: Option<String>,
    #[serde(default)]
    pub unit: Option<String>,
    #[serde(default)]
    pub ms: u64,
    #[serde(default)]
    pub bytes: u64,
    #[serde(default)]
    pub build: Option<String>,
    #[serde(default)]
    pub groups: Option<BTreeMap<String, String>>,
    /// What a seeding did (`outcome` `seed`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seed: Option<SeedEvent>,
}

/// The part of a seeding's event that only seedings have (its bytes and milliseconds are the
/// event's own).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SeedEvent {
    #[serde(default)]
    pub units: u64,
    #[serde(default)]
    pub files: u64,
    /// `mount` (placements) or `copy` (reflink where the filesystem can, else a copy).
    #[serde(default)]
    pub method: String,
    /// The profile dirs seeded (`debug`, `<triple>/release`).
    #[serde(default)]
    pub profiles: Vec<String>,
    /// Units left for the wrapper, by reason.
    #[serde(default)]
    pub skipped: BTreeMap<String, u64>,
    /// Variables whose values differed from a donor build's (build-script runs not seeded).
    #[serde(default)]
    pub env_differs: Vec<String>,
    /// Milliseconds per phase (`harvest`, `set`, `check`, `place`, …).
    #[serde(default)]
    pub phases_ms: BTreeMap<String, u64>,
}

/// Appends `e` to the store's log. Best effort: the log is for reports, and
/// failing to write it must not fail a compile.
pub fn append(store_root: &Path, e: &Event) {
    let Ok(mut line) = serde_json::to_string(e) else {
        return;
    };
    line.push('\n');
    if let Ok(mut f) = std::fs::OpenOptions::new()
        .append(true)
        .create(true)
        .open(store_root.join(FILE))
    {
        let _ = f.write_all(line.as_bytes());
    }
}

/// Every well-formed event of the store's log, oldest first.
pub fn read(store_root: &Path) -> Vec<Event> {
    let Ok(text) = std::fs::read_to_string(store_root.join(FILE)) else {
        return Vec::new();
    };
    text.lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}
