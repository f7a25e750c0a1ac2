//! Manifests: what a compile read, recorded under its direct key, so a later
//! call with the same direct key can find its result key without compiling.
//!
//! Owns the record type, its codec (JSON body + blake3 trailer, the same bytes
//! locally and on the remote) and the merge rule (newest first, no duplicate,
//! at most [`RECORDS_KEPT`]). Must never: hand out a record whose result key
//! is not a 64-hex hash, or read damaged bytes as a manifest (damage is
//! absence).
//!
//! A record is the inputs one compile read, found one of two ways (see
//! [`FoundBy`]): *observed* by the input recorder under the compiler (every
//! file read by content, every path looked up and absent or present, the
//! listings read, the links resolved, the variables read), or *inferred*
//! (dep-info: files by path and content, the variables rustc reports, and
//! for linked outputs the link closure). A path-local record (an output
//! holds a worktree path) names the roots it holds and only matches where
//! they are the same. Fields are added with `serde(default)` and left out
//! when empty, so manifests written before stay readable and records
//! without them serialize to the same bytes. A record with a field this
//! version does not know is dropped, never read with the field ignored: a
//! check it cannot make would be a check skipped.
//!
//! Format: `{"records":[{"files":[[path,blake3,size]…],"env":[[name,value|null]…],
//! "result":key}…]}` followed by the 32-byte blake3 of that body. Paths and
//! values may hold the worktree tokens of [`kache_wrapper::paths`].

use serde::{Deserialize, Serialize};

use super::is_valid_hash;

/// How many (inputs → result) records a manifest keeps, newest first.
pub const RECORDS_KEPT: usize = 8;

/// Length of the blake3 trailer that makes damage read as absence.
const TRAILER: usize = 32;

/// How a record's inputs were found.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum FoundBy {
    /// From dep-info and strict inference, where no recorder ran (another
    /// platform, `cache.observe = "off"`). Records written before the
    /// recorder existed are of this kind.
    #[default]
    Inferred,
    /// Observed by the input recorder: everything the compile was seen to
    /// read.
    Observed,
    /// The recorder ran but could not see everything (a statically linked
    /// tool, …): inferred strictly, plus what it did see.
    Fallback,
}

impl FoundBy {
    pub fn is_inferred(&self) -> bool {
        *self == FoundBy::Inferred
    }
}

/// One compile's inputs and the result key they led to.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Record {
    /// Files read: (path, possibly in token form; blake3; size).
    pub files: Vec<(String, String, u64)>,
    /// Environment variables read: (name, value in token form or raw, or
    /// `None` when it was unset).
    pub env: Vec<(String, Option<String>)>,
    /// Paths (possibly in token form) that were looked up and not found: a
    /// file appearing there would have changed the result.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub absent: Vec<String>,
    /// For a path-local result: the roots (name, absolute path) its outputs
    /// hold. Such a record only matches where every one is the same, and is
    /// never shared through a remote.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub local: Vec<(String, String)>,
    /// Paths (possibly in token form) looked up and found without being
    /// read (a directory, a program probed for): their existence is an input.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub present: Vec<String>,
    /// Directories whose listing was read: (path, blake3 of the sorted
    /// names and their types).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub listed: Vec<(String, String)>,
    /// Paths that resolved elsewhere through a symbolic link: (path, what
    /// it resolved to).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub links: Vec<(String, String)>,
    /// How these inputs were found.
    #[serde(default, skip_serializing_if = "FoundBy::is_inferred")]
    pub found_by: FoundBy,
    /// The result key of the entry these inputs produced.
    pub result: String,
}

impl Record {
    /// True when the outputs hold a path of the worktree that made them.
    pub fn is_path_local(&self) -> bool {
        !self.local.is_empty()
    }
}

/// The records of one direct key, newest first.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct Manifest {
    pub records: Vec<Record>,
}

/// A manifest body whose records are decoded one by one, so a record of an
/// unknown shape (hand-made, or from a remote that lies) is dropped instead
/// of hiding the good ones.
#[derive(Deserialize)]
struct Lenient {
    records: Vec<serde_json::Value>,
}

impl Manifest {
    /// Decodes a body (trailer already removed). `None` when it is not a
    /// manifest at all; otherwise only well-formed records whose result is a
    /// 64-hex key, at most [`RECORDS_KEPT`].
    pub fn decode(body: &[u8]) -> Option<Manifest> {
        // The common case, every record well formed, in one pass.
        let mut records = match serde_json::from_slice::<Manifest>(body) {
            Ok(m) => m.records,
            Err(_) => serde_json::from_slice::<Lenient>(body)
                .ok()?
                .records
                .into_iter()
                .filter_map(|v| serde_json::from_value(v).ok())
                .collect(),
        };
        records.retain(|r: &Record| is_valid_hash(&r.result));
        records.truncate(RECORDS_KEPT);
        Some(Manifest { records })
    }

    /// The body bytes (without trailer).
    pub fn encode(&self) -> Vec<u8> {
        // A struct of strings and numbers always serializes.
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// Puts `rec` first, dropping an equal older record and the oldest
    /// beyond [`RECORDS_KEPT`].
    pub fn add(&mut self, rec: Record) {
        self.records.retain(|r| r != &rec);
        self.records.insert(0, rec);
        self.records.truncate(RECORDS_KEPT);
    }

    /// `self`'s records (newer) followed by those of `older` it lacks.
    pub fn merge(mut self, older: Manifest) -> Manifest {
        for r in older.records {
            if !self.records.contains(&r) {
                self.records.push(r);
            }
        }
        self.records.truncate(RECORDS_KEPT);
        self
    }

    /// The records another machine may use: path-local ones stay here.
    pub fn shareable(mut self) -> Manifest {
        self.records.retain(|r| !r.is_path_local());
        self
    }

    /// The result key of the newest record.
    pub fn newest_result(&self) -> Option<&str> {
        self.records.first().map(|r| r.result.as_str())
    }
}

/// A manifest object as stored and uploaded: body then blake3 trailer.
pub fn seal(body: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(body.len() + TRAILER);
    v.extend_from_slice(body);
    v.extend_from_slice(blake3::hash(body).as_bytes());
    v
}

/// The body of a sealed object, or `None` when any byte was damaged.
pub fn unseal(bytes: &[u8]) -> Option<&[u8]> {
    if bytes.len() < TRAILER {
        return None;
    }
    let (body, sum) = bytes.split_at(bytes.len() - TRAILER);
    (blake3::hash(body).as_bytes() == sum).then_some(body)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(result: &str) -> Record {
        Record {
            files: vec![("src/lib.rs".into(), "x".into(), 3)],
            env: vec![("A".into(), None)],
            result: result.into(),
            ..Record::default()
        }
    }

    #[test]
    fn trailer_detects_any_change() {
        let obj = seal(b"{\"records\":[]}");
        assert_eq!(unseal(&obj), Some(&b"{\"records\":[]}"[..]));
        for i in 0..obj.len() {
            let mut o = obj.clone();
            o[i] ^= 1;
            assert!(unseal(&o).is_none());
        }
        assert!(unseal(&obj[..10]).is_none());
    }

    #[test]
    fn decode_keeps_only_well_formed_records() {
        let good = "ab".repeat(32);
        let body = serde_json::json!({"records": [
            {"files": [["src/lib.rs", "x", 3]], "env": [["A", null]], "result": good},
            {"files": [], "env": [], "result": "../../etc"},
            {"files": "nope", "env": [], "result": good},
        ]})
        .to_string();
        let m = Manifest::decode(body.as_bytes()).unwrap();
        assert_eq!(m.records, vec![rec(&good)]);
        assert!(Manifest::decode(b"[1,2]").is_none());
    }

    #[test]
    fn encoding_is_the_format_written_before_this_module() {
        // Manifests already in stores and on remotes were written as this
        // exact JSON; they must decode, and re-encode to the same bytes.
        let k = "cd".repeat(32);
        let old = format!(
            "{{\"records\":[{{\"files\":[[\"@KACHE_WS@/src/lib.rs\",\"h\",7]],\"env\":[[\"OUT_DIR\",\"@KACHE_TARGET@/x\"],[\"U\",null]],\"result\":\"{k}\"}}]}}"
        );
        let m = Manifest::decode(old.as_bytes()).unwrap();
        assert_eq!(m.records.len(), 1);
        assert_eq!(m.encode(), old.as_bytes());
    }

    #[test]
    fn absent_paths_and_local_roots_round_trip_and_local_records_are_not_shared() {
        let (a, b) = ("a".repeat(64), "b".repeat(64));
        let mut local = rec(&a);
        local.absent = vec!["@KACHE_TARGET@/out/libz.a".into()];
        local.local = vec![("ws".into(), "/w/a".into())];
        let m = Manifest {
            records: vec![local.clone(), rec(&b)],
        };
        let back = Manifest::decode(&m.encode()).unwrap();
        assert_eq!(back, m);
        assert_eq!(m.shareable().records, vec![rec(&b)]);
    }

    #[test]
    fn observed_records_round_trip_and_a_field_this_version_does_not_know_drops_the_record() {
        let (a, b) = ("a".repeat(64), "b".repeat(64));
        let mut seen = rec(&a);
        seen.found_by = FoundBy::Observed;
        seen.present = vec!["/usr/bin/cc".into()];
        seen.listed = vec![("@KACHE_WS@/assets".into(), "h".into())];
        seen.links = vec![("/usr/bin/cc".into(), "/usr/bin/gcc-12".into())];
        let m = Manifest {
            records: vec![seen, rec(&b)],
        };
        let body = m.encode();
        assert!(String::from_utf8_lossy(&body).contains("\"found_by\":\"observed\""));
        assert_eq!(Manifest::decode(&body).unwrap(), m);

        let future = serde_json::json!({"records": [
            {"files": [], "env": [], "checked_later": [1], "result": a},
            {"files": [["src/lib.rs", "x", 3]], "env": [["A", null]], "result": b},
        ]})
        .to_string();
        assert_eq!(
            Manifest::decode(future.as_bytes()).unwrap().records,
            vec![rec(&b)]
        );
    }

    #[test]
    fn add_and_merge_put_newest_first_without_duplicates() {
        let (a, b, c) = ("a".repeat(64), "b".repeat(64), "c".repeat(64));
        let mut m = Manifest::default();
        m.add(rec(&c));
        m.add(rec(&b));
        m.add(rec(&c));
        assert_eq!(m.newest_result(), Some(c.as_str()));
        let newer = Manifest {
            records: vec![rec(&a), rec(&b)],
        };
        let merged = newer.merge(m);
        let order: Vec<&str> = merged.records.iter().map(|r| r.result.as_str()).collect();
        assert_eq!(order, vec![a.as_str(), b.as_str(), c.as_str()]);
        let mut many = Manifest::default();
        for i in 0..20u8 {
            many.add(rec(&format!("{:064x}", i)));
        }
        assert_eq!(many.records.len(), RECORDS_KEPT);
    }
}
