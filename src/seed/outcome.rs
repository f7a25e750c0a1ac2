//! What a seeding and a harvest decided, as types: why a unit was left for the wrapper
//! ([`Skip`]), why a finished unit was not recorded as a seed ([`NotHarvested`]), and how a
//! seeding placed files ([`Method`]). What one seeding did is `super::report::Report`.
//!
//! As for a wrapper call's outcome (`crate::wrap::outcome`), the counters (`kache stats`:
//! `seed.*`) and the event-log record (`kache report`) of a seeding are both derived from the
//! one report, so they cannot disagree. Labels are a shipped interface: keep their spelling.

use std::time::Instant;

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

/// Elapsed milliseconds since `t`.
pub fn ms_since(t: Instant) -> u64 {
    t.elapsed().as_millis() as u64
}
