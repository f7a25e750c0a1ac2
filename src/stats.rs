//! Counters shared by every kache process using one store.
//!
//! The counters live in `$KACHE_DIR/stats` as `dotted.key value` lines.
//! Each update takes an exclusive lock on `locks/stats`, reads, adds, and
//! renames a new file into place, so concurrent wrappers never lose an
//! increment and a crash never leaves a half-written file.

use std::collections::BTreeMap;
use std::fs;
use std::io;
use std::path::Path;

use std::io::{Read, Seek, SeekFrom, Write};

use kache_platform::{FileLock, LockMode};
use serde_json::{json, Map, Value};

use crate::store::{Store, Usage};

pub type Counters = BTreeMap<String, u64>;

/// The language sections of `kache stats`, each with the same counters.
pub const LANGUAGES: [&str; 2] = ["rust", "cc"];
pub const BASE_COUNTERS: [&str; 5] = ["hits", "misses", "passthroughs", "errors", "compiler_runs"];

/// The language section a wrapper call is counted in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lang {
    Rust,
    Cc,
}

impl Lang {
    pub fn as_str(self) -> &'static str {
        match self {
            Lang::Rust => "rust",
            Lang::Cc => "cc",
        }
    }
}

/// Every counter kache bumps. Its key and meaning are one row of
/// [`COUNTERS`] (in the same order); keys are a shipped interface
/// (`kache stats --json`), so rows are added, never renamed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Counter {
    Hits,
    Misses,
    Passthroughs,
    Errors,
    CompilerRuns,
    RemoteHits,
    BytesSaved,
    RestoreFiles,
    ReflinkBytes,
    HardlinkBytes,
    CopyBytes,
    MountBytes,
    MountFiles,
    MountErrors,
    MountDeduplicatedBytes,
    MountDedupErrors,
    GcPendingBytes,
    GcLastTotal,
    GcRuns,
    GcEntriesEvicted,
    RemoteImported,
    RemoteMisses,
    RemoteErrors,
    RemoteBytesDown,
    RemoteQueued,
    RemoteUploads,
    RemoteBytesUp,
    DirectHits,
    AheadHits,
    Observed,
    ObserveFallbacks,
    SeedUnits,
    SeedFiles,
    SeedBytes,
    SeedHarvestUnits,
    SeedHarvestDeferred,
}

/// Whether a counter has one value per language (`rust.hits`, `cc.hits`)
/// or one for the store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    PerLanguage,
    Store,
}

/// One counter: its key (below the language for per-language ones) and
/// what it counts.
pub struct CounterDef {
    pub counter: Counter,
    pub scope: Scope,
    pub key: &'static str,
    pub doc: &'static str,
}

const fn row(counter: Counter, scope: Scope, key: &'static str, doc: &'static str) -> CounterDef {
    CounterDef {
        counter,
        scope,
        key,
        doc,
    }
}

use Scope::{PerLanguage as L, Store as S};

pub const COUNTERS: &[CounterDef] = &[
    row(
        Counter::Hits,
        L,
        "hits",
        "outputs restored, no compiler process",
    ),
    row(
        Counter::Misses,
        L,
        "misses",
        "the compiler ran for a cacheable call",
    ),
    row(
        Counter::Passthroughs,
        L,
        "passthroughs",
        "the compiler ran, nothing cached",
    ),
    row(
        Counter::Errors,
        L,
        "errors",
        "the compiler could not be started",
    ),
    row(
        Counter::CompilerRuns,
        L,
        "compiler_runs",
        "compiler processes started (probes, preprocessor, compiles)",
    ),
    row(
        Counter::RemoteHits,
        L,
        "remote_hits",
        "hits served from what the remote just provided",
    ),
    row(
        Counter::BytesSaved,
        S,
        "restore.bytes_saved",
        "bytes of outputs a hit provided",
    ),
    row(
        Counter::RestoreFiles,
        S,
        "restore.files",
        "files restored by reflink, hardlink or copy",
    ),
    row(
        Counter::ReflinkBytes,
        S,
        "restore.reflink_bytes",
        "bytes restored by reflink",
    ),
    row(
        Counter::HardlinkBytes,
        S,
        "restore.hardlink_bytes",
        "bytes restored by hardlink",
    ),
    row(
        Counter::CopyBytes,
        S,
        "restore.copy_bytes",
        "bytes restored by copy",
    ),
    row(
        Counter::MountBytes,
        S,
        "restore.mount_bytes",
        "bytes placed by reference in a kache mount",
    ),
    row(
        Counter::MountFiles,
        S,
        "restore.mount_files",
        "files placed by reference in a kache mount",
    ),
    row(
        Counter::MountErrors,
        S,
        "restore.mount_errors",
        "placements refused by a mount (restored instead)",
    ),
    row(
        Counter::MountDeduplicatedBytes,
        S,
        "mount.deduplicated_bytes",
        "bytes a miss turned from upper files into placements",
    ),
    row(
        Counter::MountDedupErrors,
        S,
        "mount.dedup_errors",
        "failed turns of upper files into placements",
    ),
    row(
        Counter::GcPendingBytes,
        S,
        "gc.pending_bytes",
        "bytes stored since the last collection",
    ),
    row(
        Counter::GcLastTotal,
        S,
        "gc.last_total",
        "store size measured by the last collection",
    ),
    row(Counter::GcRuns, S, "gc.runs", "collections run"),
    row(
        Counter::GcEntriesEvicted,
        S,
        "gc.entries_evicted",
        "entries and manifests evicted",
    ),
    row(
        Counter::RemoteImported,
        S,
        "remote.hits",
        "remote lookups that imported something usable",
    ),
    row(
        Counter::RemoteMisses,
        S,
        "remote.misses",
        "remote lookups with nothing usable",
    ),
    row(
        Counter::RemoteErrors,
        S,
        "remote.errors",
        "remote lookups or queueing that failed",
    ),
    row(
        Counter::RemoteBytesDown,
        S,
        "remote.bytes_down",
        "bytes downloaded",
    ),
    row(Counter::RemoteQueued, S, "remote.queued", "uploads queued"),
    row(
        Counter::RemoteUploads,
        S,
        "remote.uploads",
        "objects uploaded",
    ),
    row(
        Counter::RemoteBytesUp,
        S,
        "remote.bytes_up",
        "bytes uploaded",
    ),
    row(
        Counter::DirectHits,
        L,
        "direct_hits",
        "hits found through a manifest of the direct key (no preprocessor, no compiler)",
    ),
    row(
        Counter::AheadHits,
        L,
        "preprocessed_hits",
        "hits found by the key computed ahead (C/C++: the preprocessed source)",
    ),
    row(
        Counter::Observed,
        L,
        "observed",
        "compiles whose inputs the input recorder observed",
    ),
    row(
        Counter::ObserveFallbacks,
        L,
        "observe_fallbacks",
        "recorded compiles the recorder could not see entirely (inputs inferred strictly)",
    ),
    row(
        Counter::SeedUnits,
        S,
        "seed.units",
        "units placed into new target dirs before cargo looked",
    ),
    row(Counter::SeedFiles, S, "seed.files", "files of seeded units"),
    row(
        Counter::SeedBytes,
        S,
        "seed.bytes",
        "bytes of seeded units (placed in a mount, else copied or reflinked)",
    ),
    row(
        Counter::SeedHarvestUnits,
        S,
        "seed.harvest.units",
        "finished units recorded as seeds",
    ),
    row(
        Counter::SeedHarvestDeferred,
        S,
        "seed.harvest.deferred",
        "harvests cut short by their time budget (finished later)",
    ),
];

impl Counter {
    pub fn def(self) -> &'static CounterDef {
        &COUNTERS[self as usize]
    }

    /// The full dotted key (`rust.hits`, `restore.files`); `lang` is only
    /// read for per-language counters.
    pub fn key(self, lang: Option<Lang>) -> String {
        let d = self.def();
        match (d.scope, lang) {
            (Scope::PerLanguage, Some(l)) => format!("{}.{}", l.as_str(), d.key),
            _ => d.key.to_string(),
        }
    }
}

/// Counters broken down by a label: `rust.passthrough_reasons.excluded`,
/// `remote.miss_reasons.not-found`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Breakdown {
    PassthroughReasons,
    PassthroughFlags,
    MissReasons,
    NotStored,
    DirectFallbacks,
    RemoteMissReasons,
    RemoteErrorReasons,
    /// Units a seeding left for the wrapper, and why (`seed.skipped.env-differs`).
    SeedSkipped,
    /// Finished units not recorded as seeds, and why (`seed.harvest.refused.donor-path`).
    SeedHarvestRefused,
}

impl Breakdown {
    /// The dotted key of one label; `lang` is only read for per-language
    /// breakdowns (all but the remote's and the seeds').
    pub fn key(self, lang: Option<Lang>, label: &str) -> String {
        let (section, per_language) = match self {
            Breakdown::PassthroughReasons => ("passthrough_reasons", true),
            Breakdown::PassthroughFlags => ("passthrough_flags", true),
            Breakdown::MissReasons => ("miss_reasons", true),
            Breakdown::NotStored => ("not_stored", true),
            Breakdown::RemoteMissReasons => ("remote.miss_reasons", false),
            Breakdown::RemoteErrorReasons => ("remote.error_reasons", false),
            Breakdown::SeedSkipped => ("seed.skipped", false),
            Breakdown::SeedHarvestRefused => ("seed.harvest.refused", false),
            Breakdown::DirectFallbacks => ("direct_fallbacks", true),
        };
        let label = key_segment(label);
        match (per_language, lang) {
            (true, Some(l)) => format!("{}.{section}.{label}", l.as_str()),
            _ => format!("{section}.{label}"),
        }
    }
}

/// A label as one key segment: no dots, no whitespace.
pub fn key_segment(label: &str) -> String {
    label
        .chars()
        .map(|c| {
            if c == '.' || c.is_whitespace() {
                '_'
            } else {
                c
            }
        })
        .collect()
}

/// Counter updates gathered during one call and written at its end, in one
/// locked update of the stats file.
#[derive(Debug, Default)]
pub struct Tally {
    updates: Vec<(String, u64)>,
}

impl Tally {
    /// Adds `n` to a per-language counter of `lang`.
    pub fn add(&mut self, lang: Lang, c: Counter, n: u64) {
        self.updates.push((c.key(Some(lang)), n));
    }

    /// Adds `n` to a counter of the store (`restore.*`, `gc.*`, `remote.*`).
    pub fn add_store(&mut self, c: Counter, n: u64) {
        self.updates.push((c.key(None), n));
    }

    /// Counts one `label` of a breakdown (`lang` for per-language ones).
    pub fn add_label(&mut self, lang: Option<Lang>, b: Breakdown, label: &str) {
        self.add_label_n(lang, b, label, 1);
    }

    /// Counts `n` of one `label` of a breakdown.
    pub fn add_label_n(&mut self, lang: Option<Lang>, b: Breakdown, label: &str, n: u64) {
        if n > 0 {
            self.updates.push((b.key(lang, label), n));
        }
    }

    pub fn extend(&mut self, other: Tally) {
        self.updates.extend(other.updates);
    }

    pub fn updates(&self) -> &[(String, u64)] {
        &self.updates
    }

    pub fn flush(self, store: &Store) -> io::Result<()> {
        bump(store, &self.updates)
    }
}

fn parse(text: &str) -> Counters {
    let mut c = Counters::new();
    for line in text.lines() {
        if let Some((k, v)) = line.rsplit_once(' ') {
            if let Ok(v) = v.parse::<u64>() {
                c.insert(k.to_string(), v);
            }
        }
    }
    c
}

fn render(c: &Counters) -> String {
    let mut s = String::new();
    for (k, v) in c {
        s.push_str(k);
        s.push(' ');
        s.push_str(&v.to_string());
        s.push('\n');
    }
    s
}

/// Adds each `(key, amount)` to the store's counters. Keys are dotted paths
/// (`rust.hits`, `rust.passthrough_reasons.incremental`); a key must not
/// contain spaces or newlines (they are replaced).
pub fn bump(store: &Store, updates: &[(String, u64)]) -> io::Result<()> {
    if updates.is_empty() {
        return Ok(());
    }
    update(store, |c| {
        for (k, v) in updates {
            let k: String = k
                .chars()
                .map(|ch| if ch.is_whitespace() { '_' } else { ch })
                .collect();
            *c.entry(k).or_insert(0) += v;
        }
    })
}

/// Sets store counters to exact values (gc's measurements).
pub fn set(store: &Store, values: &[(Counter, u64)]) -> io::Result<()> {
    update(store, |c| {
        for (k, v) in values {
            c.insert(k.key(None), *v);
        }
    })
}

/// Read-modify-write of the counters under the exclusive stats lock.
///
/// The file is rewritten in place rather than renamed over: on ext4 both a
/// rename over an existing file and a truncate-to-zero make the kernel flush
/// the new data synchronously (`auto_da_alloc`), which cost every cache hit
/// about a millisecond of waiting on the disk. Readers take the lock too, so
/// nobody sees a half-written file; a crash mid-write can only garble lines,
/// which the lossy parser drops.
fn update(store: &Store, f: impl FnOnce(&mut Counters)) -> io::Result<()> {
    let _lock = FileLock::acquire(&store.lock_path("stats"), LockMode::Exclusive)?;
    let mut file = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(store.root().join("stats"))?;
    let mut bytes = Vec::new();
    file.read_to_end(&mut bytes)?;
    let mut c = parse(&String::from_utf8_lossy(&bytes));
    f(&mut c);
    let text = render(&c);
    file.seek(SeekFrom::Start(0))?;
    file.write_all(text.as_bytes())?;
    if (text.len() as u64) < bytes.len() as u64 {
        file.set_len(text.len() as u64)?;
    }
    Ok(())
}

fn read_file(path: &Path) -> io::Result<Counters> {
    // Lossy: a stats file damaged from outside (bad sector, a stray editor)
    // loses its unreadable lines, instead of failing every later `bump` and
    // `kache stats` with "stream did not contain valid UTF-8".
    match fs::read(path) {
        Ok(b) => Ok(parse(&String::from_utf8_lossy(&b))),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Counters::new()),
        Err(e) => Err(e),
    }
}

pub fn read(store: &Store) -> io::Result<Counters> {
    // On a read-only store the lock file cannot be opened, and nobody can be
    // writing the counters either: read them unlocked.
    let _lock = FileLock::acquire(&store.lock_path("stats"), LockMode::Shared).ok();
    read_file(&store.root().join("stats"))
}

/// Resets every counter to zero.
pub fn zero(store: &Store) -> io::Result<()> {
    update(store, |c| c.clear())
}

fn insert_dotted(root: &mut Map<String, Value>, key: &str, v: u64) {
    let mut parts = key.splitn(2, '.');
    let head = parts.next().unwrap_or(key);
    match parts.next() {
        None => {
            root.insert(head.to_string(), json!(v));
        }
        Some(rest) => {
            let child = root
                .entry(head.to_string())
                .or_insert_with(|| Value::Object(Map::new()));
            if !child.is_object() {
                *child = Value::Object(Map::new());
            }
            if let Value::Object(m) = child {
                insert_dotted(m, rest, v);
            }
        }
    }
}

/// The `kache stats --json` object.
pub fn to_json(c: &Counters, usage: &Usage, limit: Option<u64>) -> Value {
    let mut root = Map::new();
    root.insert("schema_version".into(), json!(1));
    for lang in LANGUAGES {
        let mut m = Map::new();
        for k in BASE_COUNTERS {
            m.insert(k.to_string(), json!(0));
        }
        m.insert("passthrough_reasons".into(), json!({}));
        root.insert(lang.to_string(), Value::Object(m));
    }
    for (k, v) in c {
        insert_dotted(&mut root, k, *v);
    }
    let store = root
        .entry("store")
        .or_insert_with(|| Value::Object(Map::new()));
    if let Value::Object(m) = store {
        m.insert("bytes".into(), json!(usage.bytes));
        m.insert("blobs".into(), json!(usage.blobs));
        m.insert("entries".into(), json!(usage.entries));
        m.insert("manifests".into(), json!(usage.manifests));
        m.insert("max_size".into(), limit.map_or(Value::Null, |l| json!(l)));
    }
    Value::Object(root)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_render_as_nested_json_with_every_base_counter() {
        let mut c = Counters::new();
        c.insert("rust.hits".into(), 3);
        c.insert("rust.passthrough_reasons.incremental".into(), 2);
        let v = to_json(&c, &Usage::default(), Some(10));
        assert_eq!(v["rust"]["hits"], 3);
        assert_eq!(v["rust"]["misses"], 0);
        assert_eq!(v["cc"]["compiler_runs"], 0);
        assert_eq!(v["rust"]["passthrough_reasons"]["incremental"], 2);
        assert_eq!(v["store"]["max_size"], 10);
    }

    #[test]
    fn the_counter_table_is_in_enum_order_with_unique_keys() {
        let mut keys = std::collections::HashSet::new();
        for (i, d) in COUNTERS.iter().enumerate() {
            assert_eq!(d.counter as usize, i, "row {} out of order", d.key);
            assert!(keys.insert(d.key), "{} twice", d.key);
        }
        assert_eq!(Counter::Hits.key(Some(Lang::Cc)), "cc.hits");
        assert_eq!(
            Counter::BytesSaved.key(Some(Lang::Rust)),
            "restore.bytes_saved"
        );
        assert_eq!(
            Breakdown::PassthroughReasons.key(Some(Lang::Cc), "cc:link-step"),
            "cc.passthrough_reasons.cc:link-step"
        );
        assert_eq!(
            Breakdown::RemoteMissReasons.key(Some(Lang::Rust), "not found.x"),
            "remote.miss_reasons.not_found_x"
        );
        assert_eq!(
            Breakdown::SeedSkipped.key(Some(Lang::Rust), "env-differs"),
            "seed.skipped.env-differs"
        );
        assert_eq!(Counter::SeedUnits.key(Some(Lang::Rust)), "seed.units");
    }

    #[test]
    fn bump_adds_and_zero_resets() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(dir.path()).unwrap();
        bump(&s, &[("rust.hits".into(), 1), ("cc.misses".into(), 2)]).unwrap();
        bump(&s, &[("rust.hits".into(), 4)]).unwrap();
        let c = read(&s).unwrap();
        assert_eq!(c["rust.hits"], 5);
        assert_eq!(c["cc.misses"], 2);
        zero(&s).unwrap();
        assert!(read(&s).unwrap().is_empty());
    }
}
