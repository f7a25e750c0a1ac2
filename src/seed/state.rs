//! What this machine knows about the target directories it has seen: local bookkeeping,
//! not content (it names absolute paths and never leaves the machine).
//!
//! `$KACHE_DIR/seeds/targets/<id>.json` per target dir: its path and worktree, the
//! builds kache saw start there (cargo's first compiler probe: time, rustc identity,
//! environment; and, once cargo exited, the end of that window), the index of units
//! already harvested (so a harvest is a readdir per profile plus the new units only),
//! and the seeded units whose environment must still be checked at the first build.
//! Rewritten whole, atomically, under `locks/seed-target-<id>`.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use kache_platform::{FileLock, LockMode};
use serde::{Deserialize, Serialize};

use super::cargo::LockedPackage;
use super::record::UnitRef;
use crate::store::Store;

/// One build kache saw start in a target (its first compiler probe).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Probe {
    /// The cargo process (pid-starttime), when known.
    pub build: Option<String>,
    pub started_ns: i64,
    /// The last moment cargo was seen alive: every unit stamped in
    /// `started_ns..=ended_ns` ran in this build's environment. `None` while unknown.
    pub ended_ns: Option<i64>,
    /// Digest of `rustc -vV`.
    pub identity: String,
    /// Digest of the compared environment, and the environment itself (digests).
    pub env: String,
    pub env_map: BTreeMap<String, String>,
}

/// One unit directory as last harvested.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Harvested {
    /// The unit's fingerprint files as they were (content and mtime): harvested again
    /// only when this changes.
    pub stamp: String,
    pub identity: Option<String>,
    pub seed: Option<UnitRef>,
    pub refused: Option<String>,
}

/// A unit placed by a seeding whose build environment was not known yet (at mount
/// time): checked at the first build's probe, unseeded if it differs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PendingUnit {
    pub unit: String,
    /// Fingerprint files (relative to the profile dir) to remove to unseed it.
    pub fingerprints: Vec<String>,
    pub fp: Vec<String>,
    pub deps: Vec<String>,
    /// Environment digest it needs (build-script runs), if any.
    pub env: Option<String>,
    /// Per declared variable (`rust.env`), the digest the donor built with.
    pub declared: BTreeMap<String, Option<String>>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TargetState {
    pub target: PathBuf,
    pub worktree: PathBuf,
    pub probes: Vec<Probe>,
    /// Profile dir → unit dir → what the harvest found.
    pub harvested: BTreeMap<String, BTreeMap<String, Harvested>>,
    /// Profile dir → units seeded at mount time, awaiting the first build's check.
    pub pending: BTreeMap<String, Vec<PendingUnit>>,
    /// The lockfile's packages at the last build: what a harvest matches units by once
    /// the worktree is gone.
    #[serde(default)]
    pub lock: Option<BTreeSet<LockedPackage>>,
}

/// Probes kept per target (older ones cannot own any unit still in the target
/// that a newer harvest has not already seen).
const MAX_PROBES: usize = 16;

pub fn now_ns() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as i64)
}

pub fn time_ns(t: SystemTime) -> i64 {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => d.as_nanos() as i64,
        Err(e) => -(e.duration().as_nanos() as i64),
    }
}

pub fn from_ns(ns: i64) -> SystemTime {
    if ns >= 0 {
        UNIX_EPOCH + Duration::from_nanos(ns as u64)
    } else {
        UNIX_EPOCH - Duration::from_nanos(ns.unsigned_abs())
    }
}

/// The id of a target dir: a digest of its path.
pub fn target_id(target: &Path) -> String {
    blake3::hash(target.as_os_str().as_encoded_bytes()).to_hex()[..32].to_string()
}

fn dir(store: &Store) -> PathBuf {
    store.root().join("seeds").join("targets")
}

fn path_of(store: &Store, id: &str) -> PathBuf {
    dir(store).join(format!("{id}.json"))
}

/// Exclusive access to one target's state. `wait`: how long to wait for another
/// process (a harvest in progress) before giving up.
pub fn lock(store: &Store, target: &Path, wait: Duration) -> Option<FileLock> {
    let path = store.lock_path(&format!("seed-target-{}", target_id(target)));
    FileLock::acquire_timeout(&path, LockMode::Exclusive, wait)
        .ok()
        .flatten()
}

pub fn load(store: &Store, target: &Path) -> TargetState {
    fs::read(path_of(store, &target_id(target)))
        .ok()
        .and_then(|b| serde_json::from_slice::<TargetState>(&b).ok())
        .filter(|s| s.target == target)
        .unwrap_or_else(|| TargetState {
            target: target.to_path_buf(),
            ..TargetState::default()
        })
}

pub fn save(store: &Store, state: &mut TargetState) -> std::io::Result<()> {
    if state.probes.len() > MAX_PROBES {
        let drop = state.probes.len() - MAX_PROBES;
        state.probes.drain(..drop);
    }
    let d = dir(store);
    fs::create_dir_all(&d)?;
    let bytes = serde_json::to_vec(state).map_err(std::io::Error::other)?;
    kache_platform::write_atomic(
        &store.tmp_dir(),
        &path_of(store, &target_id(&state.target)),
        &bytes,
        None,
    )
}

/// Forgets a target (its directory is gone; what was harvested stays in the store).
pub fn forget(store: &Store, target: &Path) {
    let _ = fs::remove_file(path_of(store, &target_id(target)));
}

/// Every target dir this machine has seen.
pub fn known_targets(store: &Store) -> Vec<PathBuf> {
    let Ok(rd) = fs::read_dir(dir(store)) else {
        return Vec::new();
    };
    let mut out: Vec<(SystemTime, PathBuf)> = Vec::new();
    for e in rd.flatten() {
        let Ok(bytes) = fs::read(e.path()) else {
            continue;
        };
        if let Ok(s) = serde_json::from_slice::<TargetState>(&bytes) {
            let t = e
                .metadata()
                .and_then(|m| m.modified())
                .unwrap_or(UNIX_EPOCH);
            out.push((t, s.target));
        }
    }
    // Most recently touched first: they are the likeliest to hold new units.
    out.sort_by_key(|(t, _)| std::cmp::Reverse(*t));
    out.into_iter().map(|(_, p)| p).collect()
}

impl TargetState {
    /// The latest build's window is still open although its cargo has exited: the
    /// background harvest is about to close it.
    pub fn closing(&self) -> bool {
        self.probes.last().is_some_and(|p| {
            p.ended_ns.is_none()
                && p.build
                    .as_deref()
                    .is_some_and(|b| !kache_platform::process::build_running(b))
        })
    }

    /// Gives up on the latest build's window (its background harvest never came): an
    /// empty window, so no unit is attributed to it.
    pub fn abandon_open_window(&mut self) {
        if let Some(p) = self.probes.last_mut() {
            if p.ended_ns.is_none() {
                p.ended_ns = Some(p.started_ns - 1);
            }
        }
    }

    /// The probe whose window holds time `t`, if its window is closed.
    pub fn window_of(&self, t: i64) -> Option<&Probe> {
        self.probes
            .iter()
            .rev()
            .find(|p| p.started_ns <= t && p.ended_ns.is_some_and(|e| t <= e))
    }

    /// The rustc identity in effect at time `t`: the latest probe started before it
    /// (cargo probes rustc again whenever the compiler changed).
    pub fn identity_at(&self, t: i64) -> Option<&str> {
        self.probes
            .iter()
            .rev()
            .find(|p| p.started_ns <= t)
            .map(|p| p.identity.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn probe(start: i64, end: Option<i64>, id: &str) -> Probe {
        Probe {
            build: None,
            started_ns: start,
            ended_ns: end,
            identity: id.into(),
            env: "e".into(),
            env_map: BTreeMap::new(),
        }
    }

    #[test]
    fn units_belong_to_the_closed_window_they_fall_in() {
        let s = TargetState {
            probes: vec![probe(10, Some(20), "a"), probe(30, None, "b")],
            ..Default::default()
        };
        assert_eq!(s.window_of(15).map(|p| p.identity.as_str()), Some("a"));
        assert!(s.window_of(25).is_none());
        assert!(s.window_of(35).is_none(), "an open window owns nothing");
        assert_eq!(s.identity_at(25), Some("a"));
        assert_eq!(s.identity_at(35), Some("b"));
        assert_eq!(s.identity_at(5), None);
    }

    #[test]
    fn state_round_trips_through_the_store() {
        let tmp = tempfile::tempdir().unwrap();
        let store = Store::open(&tmp.path().join("s")).unwrap();
        let t = tmp.path().join("t");
        let mut s = load(&store, &t);
        s.probes.push(probe(1, Some(2), "x"));
        save(&store, &mut s).unwrap();
        assert_eq!(load(&store, &t), s);
        assert_eq!(known_targets(&store), vec![t.clone()]);
        forget(&store, &t);
        assert!(known_targets(&store).is_empty());
    }
}
