//! Seeds as content of the store.
//!
//! A **unit seed** is every file of one finished cargo unit of a registry or git
//! package: its `.fingerprint/<unit>/` directory, its `deps/*-<hash>*` files and its
//! `build/<unit>/` tree, each as (path relative to the profile directory, blob, mode,
//! mtime relative to the unit's newest file). It is stored as a store entry (outputs =
//! the files, `meta.seed_unit` = the rest), so it is published atomically, keeps its
//! blobs alive through eviction like any entry, ages out like one, and can travel
//! through a remote tier the same way. It names no absolute path: the few text files
//! that named the donor's target directory hold [`TARGET_TOKEN`] instead.
//!
//! A **seed set** lists, per rustc identity, the units harvested from each donor
//! target (newest donors first, a bounded number), with what matching needs without
//! opening every unit: package, kind, lane, cargo's fingerprint hashes of the unit and
//! of its dependencies, and the environment its build ran in. It is an entry too, keyed
//! by the rustc identity alone, so another machine with the same toolchain finds it.
//!
//! Everything read back is validated before use, like a downloaded entry: paths must
//! stay inside the unit's own directories, hashes must be well-formed.

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

use super::cargo::LockedPackage;
use super::outcome::Skip;
use crate::store::{is_valid_hash, Entry, Store};

/// What the donor's target directory becomes inside relocatable text files.
pub const TARGET_TOKEN: &str = "@KACHE_SEED_TARGET@";
const UNIT_DOMAIN: &str = "kache-seed-unit-v1";
const SET_DOMAIN: &str = "kache-seed-set-v1";
/// Donors kept per seed set (each a few hundred units at most).
pub const MAX_DONORS: usize = 12;
/// Largest relocatable text file (dep-info, build-script output) rewritten.
pub const MAX_TEXT: u64 = 16 << 20;

/// What a unit is, as far as seeding cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Kind {
    /// A library (rlib, or rmeta only for `cargo check`).
    Lib,
    /// A proc-macro (or another dynamic library): built fully in both lanes.
    ProcMacro,
    /// The compile of a build script.
    BuildScript,
    /// The run of a build script (its output and `OUT_DIR`).
    Run,
}

/// A unit as listed in a seed set.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UnitRef {
    /// `<package>-<16 hex>`: the unit's directory name, the same in every target.
    pub dir: String,
    /// Key of the unit seed entry.
    pub key: String,
    pub pkg: LockedPackage,
    pub kind: Kind,
    /// A library built as metadata only (`cargo check`).
    pub check_only: bool,
    /// cargo's fingerprint hash(es) of this unit (16 hex digits each).
    pub fp: Vec<String>,
    /// cargo's fingerprint hashes of the units it depends on.
    pub deps: Vec<String>,
    /// Digest of the environment of the build that produced it, when known (always
    /// known for a build-script run: one of unknown environment is never harvested).
    pub env: Option<String>,
    pub bytes: u64,
}

/// The units of one donor target.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Donor {
    /// Opaque id of the donor target (a digest of its path).
    pub id: String,
    /// Last harvest, seconds since the epoch.
    pub t: u64,
    /// Profile directory (`debug`, `x86_64-unknown-linux-gnu/release`) → units.
    pub profiles: BTreeMap<String, Vec<UnitRef>>,
    /// Environment digest → the compared environment (name → value digest), so a
    /// refusal can name the variables that differ.
    pub envs: BTreeMap<String, BTreeMap<String, String>>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SeedSet {
    pub donors: Vec<Donor>,
}

/// The seed-specific facts of a unit seed entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UnitMeta {
    pub unit: String,
    /// Per output: mtime in ns relative to the unit's newest file (≤ 0).
    pub mtimes: Vec<i64>,
    /// Outputs whose content holds [`TARGET_TOKEN`].
    pub rewrite: Vec<usize>,
    /// Outputs cargo trusts a unit by (its fingerprint hashes): placed last.
    pub fingerprints: Vec<usize>,
}

/// A unit seed read back and checked.
#[derive(Debug)]
pub struct UnitSeed {
    pub entry: Entry,
    pub meta: UnitMeta,
}

fn key_of(domain: &str, body: &[u8]) -> String {
    let mut h = blake3::Hasher::new();
    h.update(domain.as_bytes());
    h.update(&[0]);
    h.update(body);
    h.finalize().to_hex().to_string()
}

/// The key of the seed set of rustc identity `identity`.
pub fn set_key(identity: &str) -> String {
    key_of(SET_DOMAIN, identity.as_bytes())
}

/// The 16-hex-digit hash at the end of a unit directory name.
pub fn unit_hash(dir: &str) -> Option<&str> {
    let (name, hash) = dir.rsplit_once('-')?;
    let ok = !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
        && hash.len() == 16
        && hash
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
    ok.then_some(hash)
}

pub fn is_fp_hash(s: &str) -> bool {
    s.len() == 16
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// A profile directory name: one or two plain components (`debug`, `<triple>/release`).
pub fn is_profile_dir(p: &str) -> bool {
    let parts: Vec<&str> = p.split('/').collect();
    (1..=2).contains(&parts.len())
        && parts.iter().all(|c| {
            !c.is_empty()
                && *c != "."
                && *c != ".."
                && c.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"_-.".contains(&b))
        })
}

/// True when `name` (an output of unit `dir`) stays inside that unit's own files.
pub fn is_unit_path(dir: &str, name: &str) -> bool {
    let Some(hash) = unit_hash(dir) else {
        return false;
    };
    let parts: Vec<&str> = name.split('/').collect();
    let plain = parts.iter().all(|c| {
        !c.is_empty() && *c != "." && *c != ".." && !c.contains('\\') && !c.contains('\0')
    });
    if !plain || parts.len() < 2 {
        return false;
    }
    match parts[0] {
        ".fingerprint" => parts.len() == 3 && parts[1] == dir,
        "build" => parts[1] == dir && parts.len() >= 3,
        "deps" => {
            parts.len() == 2 && {
                let f = parts[1];
                let tag = format!("-{hash}");
                f.ends_with(&tag) || f.contains(&format!("{tag}."))
            }
        }
        _ => false,
    }
}

/// Publishes a unit seed; returns its key.
pub fn put_unit(store: &Store, entry: &Entry) -> std::io::Result<String> {
    let key = key_of(UNIT_DOMAIN, &entry.encode());
    if !store.has_entry(&key) {
        // Unsynced: a seed is checked on every read (see `get_unit`), and a harvest
        // publishes hundreds of them.
        store.put_entry_unsynced(&key, entry)?;
    }
    Ok(key)
}

/// Reads and checks a unit seed: every path inside the unit, one mtime per output,
/// indices in range, fingerprints under `.fingerprint/`.
pub fn get_unit(store: &Store, r: &UnitRef) -> Result<UnitSeed, Skip> {
    if !is_valid_hash(&r.key) {
        return Err(Skip::BadRecord);
    }
    let entry = store.get_entry(&r.key).map_err(|e| match e {
        crate::store::MissReason::NotFound => Skip::RecordMissing,
        _ => Skip::BadRecord,
    })?;
    let meta: UnitMeta =
        serde_json::from_value(entry.meta["seed_unit"].clone()).map_err(|_| Skip::BadRecord)?;
    let n = entry.outputs.len();
    let ok = meta.unit == r.dir
        && meta.mtimes.len() == n
        && meta.mtimes.iter().all(|m| *m <= 0)
        && meta.rewrite.iter().all(|i| *i < n)
        && !meta.fingerprints.is_empty()
        && meta
            .fingerprints
            .iter()
            .all(|i| *i < n && entry.outputs[*i].name.starts_with(".fingerprint/"))
        && entry
            .outputs
            .iter()
            .all(|o| is_unit_path(&r.dir, &o.name) && is_valid_hash(&o.blob));
    if !ok {
        return Err(Skip::BadRecord);
    }
    Ok(UnitSeed { entry, meta })
}

/// Checks a seed set read from the store; drops the units that do not pass.
fn sanitize(mut set: SeedSet) -> SeedSet {
    set.donors.retain(|d| !d.id.is_empty());
    for d in &mut set.donors {
        d.profiles.retain(|p, _| is_profile_dir(p));
        for units in d.profiles.values_mut() {
            units.retain(|u| {
                unit_hash(&u.dir).is_some()
                    && is_valid_hash(&u.key)
                    && !u.fp.is_empty()
                    && u.fp.iter().chain(&u.deps).all(|h| is_fp_hash(h))
                    && (u.kind != Kind::Run || u.env.is_some())
            });
        }
    }
    set
}

pub fn get_set(store: &Store, identity: &str) -> SeedSet {
    store
        .get_entry(&set_key(identity))
        .ok()
        .and_then(|e| serde_json::from_value::<SeedSet>(e.meta["seed_set"].clone()).ok())
        .map(sanitize)
        .unwrap_or_default()
}

/// Replaces donor `donor.id` in the set of `identity` (under the set's lock, so two
/// harvests never lose each other's donor).
pub fn put_donor(store: &Store, identity: &str, donor: Donor) -> std::io::Result<()> {
    let key = set_key(identity);
    let _lock = kache_platform::FileLock::acquire(
        &store.lock_path(&format!("seed-set-{}", &key[..32])),
        kache_platform::LockMode::Exclusive,
    )?;
    let mut set = get_set(store, identity);
    set.donors.retain(|d| d.id != donor.id);
    if !donor.profiles.values().all(Vec::is_empty) {
        set.donors.insert(0, donor);
    }
    set.donors.sort_by_key(|d| std::cmp::Reverse(d.t));
    set.donors.truncate(MAX_DONORS);
    let entry = Entry {
        meta: serde_json::json!({ "seed_set": set }),
        ..Entry::default()
    };
    store.put_entry_unsynced(&key, &entry)
}

/// A path inside a profile dir, joined component by component (validated names only).
pub fn join(profile_dir: &Path, name: &str) -> std::path::PathBuf {
    name.split('/')
        .fold(profile_dir.to_path_buf(), |p, c| p.join(c))
}

#[cfg(test)]
mod tests {
    use super::*;

    const DIR: &str = "serde-0123456789abcdef";

    #[test]
    fn unit_paths_stay_inside_the_unit() {
        for ok in [
            ".fingerprint/serde-0123456789abcdef/lib-serde",
            "deps/libserde-0123456789abcdef.rlib",
            "deps/serde-0123456789abcdef.d",
            "build/serde-0123456789abcdef/out/gen.rs",
        ] {
            assert!(is_unit_path(DIR, ok), "{ok} refused");
        }
        for bad in [
            "../x",
            "/etc/passwd",
            ".fingerprint/other-0123456789abcdef/lib-x",
            "deps/libserde-fedcba9876543210.rlib",
            "deps/sub/libserde-0123456789abcdef.rlib",
            "build/serde-0123456789abcdef/../../x",
            "build/serde-0123456789abcdef",
            "incremental/serde-0123456789abcdef/x",
            "deps/x\\..\\y-0123456789abcdef",
        ] {
            assert!(!is_unit_path(DIR, bad), "{bad} accepted");
        }
    }

    #[test]
    fn unit_dirs_end_in_sixteen_hex_digits() {
        assert_eq!(unit_hash(DIR), Some("0123456789abcdef"));
        assert_eq!(
            unit_hash("find-msvc-tools-045ee616268de01c"),
            Some("045ee616268de01c")
        );
        assert_eq!(unit_hash("x-0123"), None);
        assert_eq!(unit_hash("-0123456789abcdef"), None);
        assert_eq!(unit_hash("a/b-0123456789abcdef"), None);
    }

    #[test]
    fn profile_dirs_are_one_or_two_plain_components() {
        assert!(is_profile_dir("debug"));
        assert!(is_profile_dir("x86_64-unknown-linux-gnu/release"));
        assert!(!is_profile_dir("../debug"));
        assert!(!is_profile_dir("a/b/c"));
        assert!(!is_profile_dir(""));
    }
}
