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

/// Sets counters to exact values (used by gc for its measurements).
pub fn set(store: &Store, values: &[(&str, u64)]) -> io::Result<()> {
    update(store, |c| {
        for (k, v) in values {
            c.insert(k.to_string(), *v);
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
