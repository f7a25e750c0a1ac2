//! How a wrapper call ended, as types: a hit, a miss (with why the lookup
//! failed and, when the result was not stored, why not), a passthrough with
//! its reason, or an error starting the compiler.
//!
//! Each reason has one stable label, and [`Outcome::tally`] and
//! [`Outcome::event`] derive the counters (`kache stats`) and the event-log
//! record (`kache report`) from the same value, so the two can never
//! disagree. Labels are a shipped interface: keep their spelling.

use kache_wrapper::cc;
use kache_wrapper::rustc;

use crate::events::Event;
use crate::stats::{Breakdown, Counter, Lang, Tally};
use crate::store;

/// Why a call ran the compiler without the cache.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Passthrough {
    /// The source matches `cache.exclude`.
    Excluded,
    /// clippy's lints depend on clippy.toml files no dep-info names.
    ClippyDriver,
    NonUtf8Args,
    /// A variable that enters the key is not UTF-8.
    NonUtf8Env,
    /// `-C incremental` under `rust.incremental = "passthrough"`.
    Incremental,
    /// A worktree or target path that cannot be substituted safely inside
    /// JSON diagnostics.
    UnusualPath,
    RustRefused(rustc::Refusal),
    CcRefused(cc::Refusal),
    /// A tool the key names could not be found or identified.
    ToolNotFound(Tool),
    ToolIdentity(Tool),
    /// A file whose content enters the key could not be read.
    Unreadable(KeyedFile),
    /// `-l static=NAME` found in no search path.
    NativeLibNotFound,
    /// The preprocessor run that computes a C/C++ key failed.
    PreprocessFailed,
    /// A precompiled header next to an included one would be used instead.
    PchFound,
    /// A rustc call through a program kache has no name for (a
    /// `RUSTC_WORKSPACE_WRAPPER`, rustc under another name): what it does
    /// with its arguments is unknown.
    UnrecognizedCompiler,
    /// An output path that is not a regular file (a device such as
    /// `/dev/null`, a FIFO, a directory, a symlink): the compiler writes
    /// through it, and a restore would replace it.
    OutputNotAFile,
    /// A build script's question to the compiler (does this feature
    /// compile?) answered "no": the failure is the answer, not a broken
    /// build, so it is not a miss. (A probe that compiles is cached.)
    Probe,
    /// An assembler `.incbin`/`.include` in a C/C++ source: it reads a file
    /// that neither the preprocessor nor the dep file names.
    AssemblerInclude,
    /// What `-C target-cpu=native` means here could not be asked.
    NativeCpuUnknown,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tool {
    Rustc,
    Linker,
    Cc,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyedFile {
    TargetSpec,
    Extern,
    NativeLib,
}

impl Passthrough {
    pub fn label(&self) -> String {
        match self {
            Passthrough::Excluded => "excluded".into(),
            Passthrough::UnrecognizedCompiler => "unrecognized-compiler".into(),
            Passthrough::ClippyDriver => "clippy-driver".into(),
            Passthrough::NonUtf8Args => "non-utf8-args".into(),
            Passthrough::NonUtf8Env => "non-utf8-env".into(),
            Passthrough::Incremental => "incremental".into(),
            Passthrough::UnusualPath => "unusual-path".into(),
            Passthrough::RustRefused(r) => r.label(),
            Passthrough::CcRefused(r) => r.reason().into(),
            Passthrough::ToolNotFound(Tool::Rustc) => "rustc-not-found".into(),
            Passthrough::ToolNotFound(Tool::Linker) => "linker-not-found".into(),
            Passthrough::ToolNotFound(Tool::Cc) => "cc:not-found".into(),
            Passthrough::ToolIdentity(Tool::Rustc) => "rustc-identity".into(),
            Passthrough::ToolIdentity(Tool::Linker) => "linker-identity".into(),
            Passthrough::ToolIdentity(Tool::Cc) => "cc:identity".into(),
            Passthrough::Unreadable(KeyedFile::TargetSpec) => "target-spec-unreadable".into(),
            Passthrough::Unreadable(KeyedFile::Extern) => "extern-unreadable".into(),
            Passthrough::Unreadable(KeyedFile::NativeLib) => "native-lib-unreadable".into(),
            Passthrough::NativeLibNotFound => "native-lib-not-found".into(),
            Passthrough::PreprocessFailed => "cc:preprocess-failed".into(),
            Passthrough::PchFound => "cc:pch".into(),
            Passthrough::OutputNotAFile => "output-not-a-file".into(),
            Passthrough::Probe => "probe".into(),
            Passthrough::AssemblerInclude => "cc:incbin".into(),
            Passthrough::NativeCpuUnknown => "native-cpu-unknown".into(),
        }
    }
}

/// Why a cacheable call was not a hit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MissReason {
    /// No manifest under the direct key.
    NoManifest,
    /// A manifest whose bytes were damaged (removed).
    BadManifest,
    /// No record of the manifest matches the files and variables now.
    InputsChanged,
    /// The entry could not be used (absent, corrupt, a blob missing…).
    Entry(store::MissReason),
    /// A blob's content no longer matches its name (removed).
    BlobCorrupt,
    /// The entry's outputs are not the ones this call produces.
    OutputMismatch,
    /// A stored dependency file names a path this worktree lacks.
    DepFileStale,
    /// Stored text (dep file, diagnostics) cannot be rewritten for this
    /// worktree.
    TextUnusable,
    /// A stored text output could not be read.
    TextUnreadable,
    /// A rewritten text output could not be written.
    TextUnwritable,
    /// Placing the outputs failed.
    RestoreIo,
}

impl MissReason {
    pub fn label(&self) -> &'static str {
        match self {
            MissReason::NoManifest => "no-manifest",
            MissReason::BadManifest => "bad-manifest",
            MissReason::InputsChanged => "inputs-changed",
            MissReason::Entry(r) => r.label(),
            MissReason::BlobCorrupt => "blob-corrupt",
            MissReason::OutputMismatch => "entry-output-mismatch",
            MissReason::DepFileStale => "depfile-stale",
            MissReason::TextUnusable => "text-unusable",
            MissReason::TextUnreadable => "depinfo-blob",
            MissReason::TextUnwritable => "depinfo-write",
            MissReason::RestoreIo => "restore-io",
        }
    }
}

/// Why a miss's result was not stored (the compile's own result stands).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NotStored {
    /// The compiler failed: its diagnostics are not cached.
    CompileFailed,
    /// Without dep-info kache cannot know what the compile read, and a
    /// result whose inputs are unknown cannot be validated later.
    NoDepInfo,
    NonUtf8Output,
    BadArtifactLine,
    UnexpectedArtifact,
    DepInfoUnreadable,
    /// A dep file already holding the placeholder token.
    DepFileUnstorable,
    DiagnosticsUnstorable,
    InputVanished,
    InputModifiedDuringCompile,
    InputUnreadable,
    OutputMissing,
    /// An output was written again after its compile ended and before it was stored (a
    /// store that runs after the build returned, while a new build rewrote the file in
    /// place): what is there now is not what that compile made.
    OutputChanged,
    /// An output is not a regular file (the compiler wrote into a device or
    /// through a symlink): nothing of it can be stored.
    OutputNotAFile,
    /// An input's path is not UTF-8: a record cannot hold it faithfully.
    InputPathNotUtf8,
    /// The compile read something that is not a regular file or directory
    /// (a FIFO, a socket, a device outside /dev): not reproducible.
    InputNotAFile,
    /// A variable the compile read has a name or value that is not UTF-8.
    NonUtf8Env,
    /// The input recorder could not see everything the compile did, and
    /// nothing else can stand in for it.
    RecordingIncomplete,
    /// The linker command line rustc printed could not be read or
    /// understood (a response file, an unexpected shape): the link closure
    /// is unknown.
    LinkLineUnknown,
    /// The link named an input that cannot be keyed (gone after the link, a
    /// program directory or a linker outside the toolchain that cannot be
    /// found).
    LinkInputUnknown,
    /// The language gave no result key to store under (an adapter without
    /// either key kind).
    NoResultKey,
    /// The store refused a write.
    Store(std::io::ErrorKind),
}

impl NotStored {
    pub fn label(&self) -> String {
        match self {
            NotStored::CompileFailed => "compile-failed".into(),
            NotStored::NoDepInfo => "no-dep-info".into(),
            NotStored::NonUtf8Output => "non-utf8-output".into(),
            NotStored::BadArtifactLine => "bad-artifact-line".into(),
            NotStored::UnexpectedArtifact => "unexpected-artifact".into(),
            NotStored::DepInfoUnreadable => "dep-info-unreadable".into(),
            NotStored::DepFileUnstorable => "depfile-unstorable".into(),
            NotStored::DiagnosticsUnstorable => "diagnostics-unstorable".into(),
            NotStored::InputVanished => "input-vanished".into(),
            NotStored::InputModifiedDuringCompile => "input-modified-during-compile".into(),
            NotStored::InputUnreadable => "input-unreadable".into(),
            NotStored::OutputMissing => "output-missing".into(),
            NotStored::OutputChanged => "output-changed".into(),
            NotStored::OutputNotAFile => "output-not-a-file".into(),
            NotStored::InputPathNotUtf8 => "input-path-not-utf8".into(),
            NotStored::InputNotAFile => "input-not-a-file".into(),
            NotStored::NonUtf8Env => "non-utf8-env".into(),
            NotStored::RecordingIncomplete => "recording-incomplete".into(),
            NotStored::LinkLineUnknown => "link-line-unknown".into(),
            NotStored::LinkInputUnknown => "link-input-unknown".into(),
            NotStored::NoResultKey => "no-result-key".into(),
            NotStored::Store(kind) => format!("store:{kind}"),
        }
    }
}

impl From<std::io::Error> for NotStored {
    fn from(e: std::io::Error) -> NotStored {
        NotStored::Store(e.kind())
    }
}

/// How one wrapper call ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Outputs restored, no compiler process; `remote` when what made it
    /// possible was just imported from the remote.
    Hit {
        bytes: u64,
        remote: bool,
        /// Found through a manifest record of the direct key (no
        /// preprocessor, no compiler), not through the key computed ahead.
        direct: bool,
    },
    /// The compiler ran; `stored` is the bytes stored or why nothing was.
    Miss {
        reason: MissReason,
        stored: Result<u64, NotStored>,
    },
    Passthrough(Passthrough),
    /// The compiler could not be started at all.
    Error,
}

impl Outcome {
    /// The counters this outcome adds.
    pub fn tally(&self, lang: Lang) -> Tally {
        let mut t = Tally::default();
        match self {
            Outcome::Hit {
                bytes,
                remote,
                direct,
            } => {
                t.add(lang, Counter::Hits, 1);
                match direct {
                    true => t.add(lang, Counter::DirectHits, 1),
                    false => t.add(lang, Counter::AheadHits, 1),
                }
                if *remote {
                    t.add(lang, Counter::RemoteHits, 1);
                }
                t.add_store(Counter::BytesSaved, *bytes);
            }
            Outcome::Miss { reason, stored } => {
                t.add(lang, Counter::Misses, 1);
                t.add_label(Some(lang), Breakdown::MissReasons, reason.label());
                if let Err(why) = stored {
                    t.add_label(Some(lang), Breakdown::NotStored, &why.label());
                }
            }
            Outcome::Passthrough(p) => {
                t.add(lang, Counter::Passthroughs, 1);
                t.add_label(Some(lang), Breakdown::PassthroughReasons, &p.label());
                if let Passthrough::CcRefused(r) = p {
                    if let Some(flag) = r.flag() {
                        t.add_label(Some(lang), Breakdown::PassthroughFlags, flag);
                    }
                }
                // The passthrough itself runs the compiler once.
                t.add(lang, Counter::CompilerRuns, 1);
            }
            Outcome::Error => t.add(lang, Counter::Errors, 1),
        }
        t
    }

    /// The event-log record of this outcome (time, unit and key groups are
    /// the caller's).
    pub fn event(&self, lang: Lang) -> Event {
        let (outcome, reason, not_stored, bytes) = match self {
            Outcome::Hit { bytes, .. } => ("hit", None, None, *bytes),
            Outcome::Miss { reason, stored } => (
                "miss",
                Some(reason.label().to_string()),
                stored.as_ref().err().map(NotStored::label),
                *stored.as_ref().unwrap_or(&0),
            ),
            Outcome::Passthrough(p) => ("passthrough", Some(p.label()), None, 0),
            Outcome::Error => ("error", None, None, 0),
        };
        Event {
            lang: lang.as_str().into(),
            outcome: outcome.into(),
            reason,
            not_stored,
            bytes,
            ..Event::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_hit_counts_as_direct_or_preprocessed_and_hits_are_their_sum() {
        let keys = |direct| -> Vec<String> {
            let hit = Outcome::Hit {
                bytes: 7,
                remote: false,
                direct,
            };
            let t = hit.tally(Lang::Cc);
            t.updates().iter().map(|(k, _)| k.clone()).collect()
        };
        assert_eq!(
            keys(true),
            ["cc.hits", "cc.direct_hits", "restore.bytes_saved"]
        );
        assert_eq!(
            keys(false),
            ["cc.hits", "cc.preprocessed_hits", "restore.bytes_saved"]
        );
    }

    /// The counters and the event of one outcome name the same reasons.
    #[test]
    fn counters_and_event_agree_on_reasons() {
        let failed = Outcome::Miss {
            reason: MissReason::NoManifest,
            stored: Err(NotStored::CompileFailed),
        };
        let t = failed.tally(Lang::Rust);
        let keys: Vec<&str> = t.updates().iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(
            keys,
            [
                "rust.misses",
                "rust.miss_reasons.no-manifest",
                "rust.not_stored.compile-failed"
            ]
        );
        let e = failed.event(Lang::Rust);
        assert_eq!(
            (
                e.outcome.as_str(),
                e.reason.as_deref(),
                e.not_stored.as_deref()
            ),
            ("miss", Some("no-manifest"), Some("compile-failed"))
        );

        let p = Outcome::Passthrough(Passthrough::RustRefused(rustc::Refusal::Emit("asm".into())));
        let keys: Vec<String> = p
            .tally(Lang::Rust)
            .updates()
            .iter()
            .map(|(k, _)| k.clone())
            .collect();
        assert!(keys.contains(&"rust.passthrough_reasons.emit:asm".to_string()));
        assert_eq!(p.event(Lang::Rust).reason.as_deref(), Some("emit:asm"));
    }
}
