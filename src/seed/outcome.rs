//! What a seeding and a harvest decided, as types: why a unit was left for the wrapper
//! ([`Skip`]), why a finished unit was not recorded as a seed ([`NotHarvested`]), and what one
//! seeding did ([`Report`]).
//!
//! As for a wrapper call's outcome (`crate::wrap::outcome`), the counters (`kache stats`:
//! `seed.*`) and the event-log record (`kache report`) of a seeding are both derived from the
//! one [`Report`], so they cannot disagree. Labels are a shipped interface: keep their spelling.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Instant;

use super::record::UnitRef;
use super::state::PendingUnit;
use crate::events::{Event, SeedEvent};
use crate::stats::{Breakdown, Counter, Lang, Tally};

/// Why a seeding left a unit (or, for the first rows, a whole profile or target) to the
/// wrapper. Skipping is always safe: the unit is then built or served as without seeding.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Skip {
    /// No build with this rustc finished a unit yet.
    NoSeeds,
    /// The workspace has no `Cargo.lock` to match packages by.
    NoLockfile,
    /// A cargo command whose lane and profile cannot be told (an alias, a plugin).
    UnknownCommand,
    TargetUnwritable,
    /// cargo holds the profile directory's lock already.
    TargetBusy,
    /// A build-script run (or a compile reading a declared variable) from a build whose
    /// environment differs from this one's.
    EnvDiffers,
    /// A unit one of whose dependencies is not seeded: cargo would rebuild it anyway.
    DependencyNotSeeded,
    /// Placing its files failed; its fingerprint was never placed.
    PlaceError,
    /// The unit's seed is gone from the store (evicted).
    RecordMissing,
    /// The unit's seed does not pass validation.
    BadRecord,
    BlobMissing,
    BlobSizeMismatch,
    /// A blob whose bytes no longer match its name.
    BlobCorrupt,
}

impl Skip {
    pub fn label(self) -> &'static str {
        match self {
            Skip::NoSeeds => "no-seeds",
            Skip::NoLockfile => "no-lockfile",
            Skip::UnknownCommand => "unknown-command",
            Skip::TargetUnwritable => "target-unwritable",
            Skip::TargetBusy => "target-busy",
            Skip::EnvDiffers => "env-differs",
            Skip::DependencyNotSeeded => "dependency-not-seeded",
            Skip::PlaceError => "place-error",
            Skip::RecordMissing => "record-missing",
            Skip::BadRecord => "bad-record",
            Skip::BlobMissing => "blob-missing",
            Skip::BlobSizeMismatch => "blob-size-mismatch",
            Skip::BlobCorrupt => "blob-corrupt",
        }
    }
}

/// Why a finished unit was not recorded as a seed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NotHarvested {
    /// A symlink among the unit's files (cargo makes none).
    Symlink,
    Unreadable,
    NonUtf8Name,
    /// A FIFO, socket or device among the unit's files.
    SpecialFile,
    BadUnitName,
    /// A fingerprint cargo truncated when it started rebuilding the unit.
    Unfinished,
    /// A fingerprint of a kind seeding does not know (a binary, a test, a doc unit).
    UnitKind,
    /// Files the unit must have are missing.
    Incomplete,
    /// No build kache saw tells which rustc built it.
    RustcUnknown,
    /// A build-script run whose environment is not known.
    EnvUnknown,
    /// A file names the donor's worktree, or its target dir outside relocatable text.
    DonorPath,
    /// A file already holds the token relocatable paths become.
    TokenInFile,
    /// The unit changed while it was read.
    Changed,
    StoreError,
    /// A workspace member or other path dependency: cargo trusts its source mtimes.
    PathPackage,
    PackageUnknown,
    /// The package's sources live in the donor worktree.
    SourceInWorktree,
    /// The unit's directory is not named after the package its dep-info names.
    PackageMismatch,
    NoLockfile,
    NotInLock,
    /// Two packages of one name and version in the lockfile.
    AmbiguousPackage,
}

impl NotHarvested {
    pub fn label(self) -> &'static str {
        match self {
            NotHarvested::Symlink => "symlink",
            NotHarvested::Unreadable => "unreadable",
            NotHarvested::NonUtf8Name => "non-utf8-name",
            NotHarvested::SpecialFile => "special-file",
            NotHarvested::BadUnitName => "bad-unit-name",
            NotHarvested::Unfinished => "unfinished",
            NotHarvested::UnitKind => "unit-kind",
            NotHarvested::Incomplete => "incomplete",
            NotHarvested::RustcUnknown => "rustc-unknown",
            NotHarvested::EnvUnknown => "env-unknown",
            NotHarvested::DonorPath => "donor-path",
            NotHarvested::TokenInFile => "token-in-file",
            NotHarvested::Changed => "changed",
            NotHarvested::StoreError => "store-error",
            NotHarvested::PathPackage => "path-package",
            NotHarvested::PackageUnknown => "package-unknown",
            NotHarvested::SourceInWorktree => "source-in-worktree",
            NotHarvested::PackageMismatch => "package-mismatch",
            NotHarvested::NoLockfile => "no-lockfile",
            NotHarvested::NotInLock => "not-in-lock",
            NotHarvested::AmbiguousPackage => "ambiguous-package",
        }
    }
}

/// How a seeding placed its files.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Method {
    /// Placements in a kache mount: no bytes copied.
    Mount,
    /// Reflinks where the filesystem can clone, else copies; never hardlinks.
    #[default]
    Copy,
}

impl Method {
    pub fn label(self) -> &'static str {
        match self {
            Method::Mount => "mount",
            Method::Copy => "copy",
        }
    }
}

/// What one seeding did: counted, logged, and told to its caller.
#[derive(Debug, Default)]
pub struct Report {
    pub units: u64,
    pub files: u64,
    pub bytes: u64,
    pub skipped: BTreeMap<Skip, u64>,
    pub profiles: Vec<String>,
    pub method: Method,
    /// Variables whose values differed from a donor build's (build-script runs skipped).
    pub env_differs: BTreeSet<String>,
    pub pending: BTreeMap<String, Vec<PendingUnit>>,
    /// Milliseconds per phase (`harvest`, `set`, `check`, `place`), for the event log.
    pub phases: BTreeMap<&'static str, u64>,
    /// Profile → units placed, with the stamp of their fingerprint files as placed
    /// (recorded as harvested, so a later harvest of this target skips them).
    pub placed: BTreeMap<String, Vec<(String, UnitRef)>>,
}

impl Report {
    pub fn skip(&mut self, why: Skip, n: u64) {
        if n > 0 {
            *self.skipped.entry(why).or_default() += n;
        }
    }

    pub fn merge(&mut self, other: Report) {
        self.units += other.units;
        self.files += other.files;
        self.bytes += other.bytes;
        for (r, n) in other.skipped {
            self.skip(r, n);
        }
        self.profiles.extend(other.profiles);
        self.method = other.method;
        self.env_differs.extend(other.env_differs);
        self.pending.extend(other.pending);
        self.placed.extend(other.placed);
        for (k, v) in other.phases {
            *self.phases.entry(k).or_default() += v;
        }
    }

    pub fn phase(&mut self, name: &'static str, since: Instant) {
        *self.phases.entry(name).or_default() += ms_since(since);
    }

    /// Whether there is anything to count or log.
    pub fn is_empty(&self) -> bool {
        self.units == 0 && self.skipped.is_empty()
    }

    /// The counters this seeding adds.
    pub fn tally(&self) -> Tally {
        let mut t = Tally::default();
        t.add_store(Counter::SeedUnits, self.units);
        t.add_store(Counter::SeedFiles, self.files);
        t.add_store(Counter::SeedBytes, self.bytes);
        for (why, n) in &self.skipped {
            t.add_label_n(None, Breakdown::SeedSkipped, why.label(), *n);
        }
        t
    }

    /// The event-log record of this seeding (the caller sets its time and build).
    pub fn event(&self, ms: u64) -> Event {
        Event {
            lang: Lang::Rust.as_str().into(),
            outcome: "seed".into(),
            ms,
            bytes: self.bytes,
            seed: Some(SeedEvent {
                units: self.units,
                files: self.files,
                method: self.method.label().into(),
                profiles: self.profiles.clone(),
                skipped: self
                    .skipped
                    .iter()
                    .map(|(why, n)| (why.label().to_string(), *n))
                    .collect(),
                env_differs: self.env_differs.iter().cloned().collect(),
                phases_ms: self
                    .phases
                    .iter()
                    .map(|(k, v)| (k.to_string(), *v))
                    .collect(),
            }),
            ..Event::default()
        }
    }
}

/// Elapsed milliseconds since `t`.
pub fn ms_since(t: Instant) -> u64 {
    t.elapsed().as_millis() as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The counters and the event of one seeding name the same reasons and amounts.
    #[test]
    fn counters_and_event_of_a_seeding_agree() {
        let mut r = Report {
            units: 3,
            files: 10,
            bytes: 4096,
            method: Method::Mount,
            ..Report::default()
        };
        r.skip(Skip::EnvDiffers, 2);
        r.skip(Skip::DependencyNotSeeded, 0);
        let t = r.tally();
        let got: BTreeMap<&str, u64> = t.updates().iter().map(|(k, n)| (k.as_str(), *n)).collect();
        assert_eq!(
            got,
            BTreeMap::from([
                ("seed.units", 3),
                ("seed.files", 10),
                ("seed.bytes", 4096),
                ("seed.skipped.env-differs", 2),
            ])
        );
        let e = r.event(12);
        let s = e.seed.as_ref().unwrap();
        assert_eq!((e.outcome.as_str(), e.bytes, e.ms), ("seed", 4096, 12));
        assert_eq!((s.units, s.method.as_str()), (3, "mount"));
        assert_eq!(s.skipped, BTreeMap::from([("env-differs".to_string(), 2)]));
    }
}
