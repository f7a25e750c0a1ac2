//! Observed inputs: a compile run under kache's input recorder
//! (`kache-recorder`, an `LD_PRELOAD` library inherited by every process of
//! the compile), and what it was seen to read turned into a manifest record
//! ([`to_observed`]) that a later call validates before it hits
//! (`pipeline::inputs_match`).
//!
//! Everything seen is keyed, except what [`NOT_KEYED`] lists: one reviewed
//! table, a reason per row. Variables follow the recorder's own table
//! (`kache_recorder::env_table`), plus the rows here. Two things are added
//! to what was seen, because the recorder cannot see them being looked up:
//! - the dynamic loader's search along `LD_PRELOAD`/`LD_LIBRARY_PATH`
//!   happens inside glibc: every shared library a process mapped is keyed
//!   absent from each `LD_LIBRARY_PATH` directory searched before the one
//!   it came from (and the value of the variable is keyed, by the table);
//! - the program search along `PATH` (`execvp`) is keyed by its value
//!   whenever a program was started (the recorder's table).
//!
//! Owns: whether a call observes, the recorder's filter, the conversion of a
//! recording into record fields, and the checks a hit makes on them. Must
//! never: key a file the compile wrote, or drop an input the table does not
//! name.

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use kache_recorder::{Filter, Incomplete, ObservedInputs, Recorder, Unavailable};
use kache_wrapper::key::KeyBuilder;
use kache_wrapper::paths::tokenize_bounded;

use super::inputs::Observed;
use super::outcome::NotStored;
use crate::config::{Config, Observe};
use crate::store::manifest::FoundBy;
use crate::store::{memo, Store};

/// What a recorded compile yields: what it read, or why that is not known.
pub type Recording = Result<ObservedInputs, Incomplete>;

/// What the recording of a compile leaves out of its key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NotKeyed {
    Sysroot,
    RecorderLibrary,
    PseudoFilesystems,
    MadeByTheCompile,
    OwnSearchDirListings,
    TemporaryDirectories,
    CanonicalSpellings,
    IgnoredVariables,
    CiWithoutPlugins,
}

/// One row of [`NOT_KEYED`].
pub struct NotKeyedRow {
    pub what: NotKeyed,
    pub reason: &'static str,
}

const fn row(what: NotKeyed, reason: &'static str) -> NotKeyedRow {
    NotKeyedRow { what, reason }
}

/// The table of what is seen and not keyed. Anything a compile was seen to
/// read that no row covers is keyed.
#[rustfmt::skip]
pub const NOT_KEYED: &[NotKeyedRow] = &[
    row(NotKeyed::Sysroot, "the toolchain's sysroot (rustc's libraries, its linker, rust-lld): covered by `rustc -vV`, part of the direct key"),
    row(NotKeyed::RecorderLibrary, "the recorder's own library, loaded into every process of the compile only to observe it"),
    row(NotKeyed::PseudoFilesystems, "/proc, /sys and /dev describe the running system, not sources; /dev/null is both read and written by every compile"),
    row(NotKeyed::MadeByTheCompile, "files and directories the compile wrote, created, renamed or removed (its outputs and temporaries): dropped by the recorder"),
    row(NotKeyed::OwnSearchDirListings, "listings of rustc's own -L directories (target/debug/deps, build/*/out): rustc lists each one on every run and the build writes into them, so a listing would never match again; each file opened from them is keyed by content, and the linker's own search through them file by file; cargo names each unit's files with a hash of its configuration, so no second candidate for rustc's choice from the listing appears there"),
    row(NotKeyed::TemporaryDirectories, "whether the temporary directory exists (TMPDIR, TMP, TEMP, /tmp, /var/tmp, /usr/tmp): compilers look them up to choose where to put files they delete, never named in an output (files read below them are keyed)"),
    row(NotKeyed::CanonicalSpellings, "realpath of a path that was already canonical: the file it names is keyed by content, its existence by lookup"),
    row(NotKeyed::IgnoredVariables, "the recorder's environment table rows marked Ignore (jobserver, terminal, temporary directory, allocator tuning), each with its reason"),
    row(NotKeyed::CiWithoutPlugins, "CI, when the compile loads no proc-macro: rustc reads it once, when LLVM starts, only to turn off crash dialogs on Windows; a compile that loads a proc-macro keys it, since the macro may read it"),
];

/// The row for `what`.
pub fn reason(what: NotKeyed) -> &'static str {
    NOT_KEYED
        .iter()
        .find(|r| r.what == what)
        .map_or("", |r| r.reason)
}

/// Whether calls of this configuration observe their compiles: `auto`, a
/// build of kache that carries the recorder, and a store whose path
/// `LD_PRELOAD` can name (no space, tab or colon: they separate its
/// entries). Decided without touching the library, so a hit pays nothing.
pub fn enabled(config: &Config, store: &Store) -> bool {
    let usable = store
        .root()
        .to_str()
        .is_some_and(|p| !p.contains([' ', '\t', ':']));
    config.observe() == Observe::Auto && kache_recorder::built_in() && usable
}

/// The recorder of `store`, installed on first use under `recorder/`.
pub fn recorder(store: &Store) -> Result<Recorder, Unavailable> {
    Recorder::new(&store.root().join("recorder"))
}

/// The recorder's filter: pseudo-filesystems, the recorder itself, and
/// `unobserved` (what the key covers otherwise: the sysroot). Each of
/// `spelled` (the worktree roots as the compile names them) that is reached
/// through a symbolic link (a `target` linked into a kache mount, a worktree
/// below a linked directory) is one directory under both names, reported
/// under the compile's.
pub fn filter(store: &Store, unobserved: &[PathBuf], spelled: &[PathBuf]) -> Filter {
    let mut f = Filter::pseudo_filesystems().drop_under(store.root().join("recorder"));
    for r in unobserved {
        f = f.drop_under(r);
    }
    for r in spelled {
        if let Ok(real) = fs::canonicalize(r) {
            f = f.alias(real, r);
        }
    }
    f
}

/// Where a recorded compile ran, as the conversion needs it.
pub struct Scope<'a> {
    /// The worktree's roots and their tokens: a path below one is recorded
    /// in token form, so another worktree checks its own file.
    pub roots: &'a [(&'a str, &'a str)],
    /// A variable's value → token form, exactly as the language turns the
    /// current value into it on a hit ([`super::pipeline::Language::tokenize`]).
    pub tokenize: &'a dyn Fn(&str) -> String,
    /// Directories whose listings are not keyed ([`NotKeyed::OwnSearchDirListings`]).
    pub own_search_dirs: &'a [PathBuf],
    /// Whether the compile loads a proc-macro (or any plugin that may read
    /// the environment): see [`NotKeyed::CiWithoutPlugins`].
    pub loads_plugins: bool,
    /// When the compile started: an input changed since may not be what it
    /// read.
    pub started: SystemTime,
    /// What the recorder filtered out (the filter also drops programs).
    pub filter: &'a Filter,
    /// Record a path looked up below a directory that does not exist as
    /// that directory, absent (see [`highest_absent`]). Only where absent
    /// paths stay out of the result key (a key computed ahead): which
    /// directories exist differs between machines, the lookups do not.
    pub collapse_absent: bool,
}

/// The record fields of a complete recording. Anything that makes one of
/// them unknowable (an input gone or changed since the compile read it)
/// means nothing is stored.
pub fn to_observed(
    store: &Store,
    seen: &ObservedInputs,
    scope: &Scope,
) -> Result<Observed, NotStored> {
    convert(store, seen, scope, true).map(|mut o| {
        o.found_by = FoundBy::Observed;
        o
    })
}

/// The record fields of what an incomplete recording did see, to add to
/// strict inference. A process the recorder could not see may have written
/// files that others then read (a linker's output, its temporaries), so an
/// input that changed or vanished since the compile started, an absent
/// path that now exists, is left out rather than refused: strict inference
/// stands on its own, this only adds to it.
pub fn partial(store: &Store, seen: &ObservedInputs, scope: &Scope) -> Observed {
    let mut o = convert(store, seen, scope, false).unwrap_or_default();
    o.found_by = FoundBy::Fallback;
    o
}

fn convert(
    store: &Store,
    seen: &ObservedInputs,
    scope: &Scope,
    complete: bool,
) -> Result<Observed, NotStored> {
    // In a complete recording an input that cannot be keyed refuses the
    // whole record; in a partial one it is only left out.
    let refuse = |why: NotStored| if complete { Err(why) } else { Ok(()) };
    let text = |p: &Path| p.to_str().map(|t| tokenize_bounded(t, scope.roots));
    let mut out = Observed::default();
    let mut present: Vec<&Path> = seen.paths_present.iter().map(PathBuf::as_path).collect();
    // The programs run are read like any file: the recorder reports the
    // root process's executable without filtering it.
    let programs = seen
        .programs
        .iter()
        .filter(|p| !seen.files_read.contains(*p) && !scope.filter.covers(p));
    for p in seen.files_read.iter().chain(programs) {
        let Ok(meta) = fs::metadata(p) else {
            refuse(vanished(p))?;
            continue;
        };
        if meta.is_dir() {
            present.push(p);
            continue;
        }
        if !meta.is_file() {
            refuse(NotStored::InputNotAFile)?;
            continue;
        }
        if meta.modified().is_ok_and(|m| m > scope.started) {
            tracing::debug!("{} changed during the compile", p.display());
            refuse(NotStored::InputModifiedDuringCompile)?;
            continue;
        }
        let (Ok((h, size)), Some(shown)) = (memo::file_digest_of(store, p, &meta), text(p)) else {
            refuse(NotStored::InputUnreadable)?;
            continue;
        };
        out.files.push((shown, h, size));
    }
    let temp = temporary_directories();
    for p in present {
        if temp.iter().any(|t| t == p) || (!complete && !p.exists()) {
            continue;
        }
        match text(p) {
            Some(t) => out.present.push(t),
            None => refuse(NotStored::InputPathNotUtf8)?,
        }
    }
    let candidates = loader_candidates(seen, scope)
        .into_iter()
        .filter(|c| is_absent(c));
    let mut dirs_present = std::collections::HashSet::new();
    for p in seen.paths_absent.iter().cloned().chain(candidates) {
        if temp.iter().any(|t| t == &p) || (!complete && !is_absent(&p)) {
            continue;
        }
        let p = match scope.collapse_absent {
            true => highest_absent(p, &mut dirs_present),
            false => p,
        };
        match text(&p) {
            Some(t) if !out.absent.contains(&t) => out.absent.push(t),
            Some(_) => {}
            None => refuse(NotStored::InputPathNotUtf8)?,
        }
    }
    for d in &seen.dirs_listed {
        if scope.own_search_dirs.iter().any(|o| o == d) {
            continue;
        }
        let Ok(meta) = fs::metadata(d) else {
            refuse(vanished(d))?;
            continue;
        };
        if meta.modified().is_ok_and(|m| m > scope.started) {
            tracing::debug!("{} listed and changed during the compile", d.display());
            refuse(NotStored::InputModifiedDuringCompile)?;
            continue;
        }
        match (listing_digest(d), text(d)) {
            (Ok(digest), Some(t)) => out.listed.push((t, digest)),
            _ => refuse(NotStored::InputUnreadable)?,
        }
    }
    for (p, target) in &seen.links {
        if p == target {
            continue;
        }
        match (text(p), text(target)) {
            (Some(p), Some(t)) => out.links.push((p, t)),
            _ => refuse(NotStored::InputPathNotUtf8)?,
        }
    }
    for (name, value) in &seen.env {
        let value = match value {
            Some(v) => v.to_str().map(|v| Some((scope.tokenize)(v))),
            None => Some(None),
        };
        let (Some(name), Some(value)) = (name.to_str(), value) else {
            refuse(NotStored::NonUtf8Env)?;
            continue;
        };
        if name == "CI" && !scope.loads_plugins {
            continue;
        }
        out.env.push((name.to_string(), value));
    }
    out.files.sort();
    out.present.sort();
    out.absent.sort();
    Ok(out)
}

fn vanished(p: &Path) -> NotStored {
    tracing::debug!("{} was read and is gone", p.display());
    NotStored::InputVanished
}

/// The directories compilers choose among for their temporary files
/// ([`NotKeyed::TemporaryDirectories`]).
fn temporary_directories() -> Vec<PathBuf> {
    let mut dirs: Vec<PathBuf> = ["TMPDIR", "TMP", "TEMP"]
        .iter()
        .filter_map(std::env::var_os)
        .map(PathBuf::from)
        .collect();
    dirs.extend(["/tmp", "/var/tmp", "/usr/tmp"].iter().map(PathBuf::from));
    dirs
}

/// The result key of a record that holds lookups (paths absent or present,
/// listings, links) as well: `result` (from the files and variables read)
/// with each of them folded in, so two compiles that read the same files and
/// saw different directories never share an entry. A record without lookups
/// keeps `result` as it is.
pub fn with_lookups(
    (result, mut groups): (String, BTreeMap<String, String>),
    o: &Observed,
) -> (String, BTreeMap<String, String>) {
    if o.absent.is_empty() && o.present.is_empty() && o.listed.is_empty() && o.links.is_empty() {
        return (result, groups);
    }
    let mut k = KeyBuilder::new("kache-result-lookups-v1");
    k.group("result").str("key", &result);
    k.group("absent");
    for p in &o.absent {
        k.str("path", p);
    }
    k.group("present");
    for p in &o.present {
        k.str("path", p);
    }
    k.group("listed");
    for (d, digest) in &o.listed {
        k.str(d, digest);
    }
    k.group("links");
    for (p, t) in &o.links {
        k.str(p, t);
    }
    let (key, more) = k.finish();
    for (g, d) in more {
        if g != "result" && g != "domain" {
            groups.insert(g, d);
        }
    }
    (key, groups)
}

/// Where the dynamic loader looked for each shared library a process mapped
/// before it found it, along `LD_LIBRARY_PATH` (its value as the compile
/// was given it). Each directory's `glibc-hwcaps` subdirectory is a
/// candidate too (searched first by glibc 2.33 and later). Those absent now
/// are keyed absent; one present was passed over by the loader and cannot
/// change what it picks.
fn loader_candidates(seen: &ObservedInputs, scope: &Scope) -> Vec<PathBuf> {
    let value = seen
        .env
        .get(OsStr::new("LD_LIBRARY_PATH"))
        .and_then(|v| v.as_ref());
    let Some(value) = value else {
        return Vec::new();
    };
    let dirs: Vec<PathBuf> = std::env::split_paths(value)
        .filter(|d| d.is_absolute() && !scope.filter.covers(d))
        .collect();
    let mut out = Vec::new();
    for d in &dirs {
        out.push(d.join("glibc-hwcaps"));
    }
    for lib in &seen.files_read {
        let Some(name) = lib.file_name() else {
            continue;
        };
        if !name.to_string_lossy().contains(".so") {
            continue;
        }
        for d in &dirs {
            let candidate = d.join(name);
            if &candidate == lib {
                break;
            }
            out.push(candidate);
        }
    }
    out
}

/// The highest missing directory above `p`, or `p` itself when its parent
/// exists. A record holding that directory absent says more than one holding
/// `p` absent (it fails on any new file there, not only on `p`), never less,
/// and a hit checks it once for every header candidate below it: a compiler
/// looks each header up in every include directory, and most of those
/// lookups are below subdirectories (`bits/`, `sys/`) that exist in one
/// directory only. `present` caches directories seen to exist.
fn highest_absent(p: PathBuf, present: &mut std::collections::HashSet<PathBuf>) -> PathBuf {
    let mut top = None;
    for dir in p.ancestors().skip(1) {
        if dir.as_os_str().is_empty() || present.contains(dir) {
            break;
        }
        match is_absent(dir) {
            true => top = Some(dir.to_path_buf()),
            false => {
                present.insert(dir.to_path_buf());
                break;
            }
        }
    }
    top.unwrap_or(p)
}

/// True when `p` is not there (not found, or a component is not a
/// directory), as the recorder records an absent path.
pub fn is_absent(p: &Path) -> bool {
    match fs::metadata(p) {
        Ok(_) => false,
        Err(e) => matches!(
            e.kind(),
            io::ErrorKind::NotFound | io::ErrorKind::NotADirectory
        ),
    }
}

/// The first of `paths` (record text, path now) that is no longer absent.
/// A path below a directory found absent is absent too and is not looked
/// up again (a record holds many candidates below one missing include or
/// library directory).
pub fn first_present<'a>(paths: impl Iterator<Item = (&'a String, PathBuf)>) -> Option<&'a String> {
    let mut gone: std::collections::HashSet<PathBuf> = std::collections::HashSet::new();
    for (text, p) in paths {
        if p.ancestors().skip(1).any(|a| gone.contains(a)) {
            continue;
        }
        if !is_absent(&p) {
            return Some(text);
        }
        gone.insert(p);
    }
    None
}

/// The digest of a directory's listing: its names and their types, sorted.
pub fn listing_digest(dir: &Path) -> io::Result<String> {
    let mut names = Vec::new();
    for e in fs::read_dir(dir)? {
        let e = e?;
        let t = e.file_type()?;
        let kind = if t.is_dir() {
            'd'
        } else if t.is_file() {
            'f'
        } else if t.is_symlink() {
            'l'
        } else {
            'o'
        };
        names.push((e.file_name(), kind));
    }
    names.sort();
    let mut h = blake3::Hasher::new();
    for (n, k) in names {
        let bytes = n.as_encoded_bytes();
        h.update(&(bytes.len() as u64).to_le_bytes());
        h.update(bytes);
        h.update(&[k as u8]);
    }
    Ok(h.finalize().to_hex().to_string())
}

/// True when `path` still resolves to `target` (realpath, or the link's
/// own text when it was read with readlink).
pub fn resolves_to(path: &Path, target: &Path) -> bool {
    fs::canonicalize(path).is_ok_and(|c| c == target)
        || fs::read_link(path).is_ok_and(|l| l == target)
}

/// Removes session logs older than `max_age`: a compile whose wrapper was
/// killed leaves its log behind. Returns how many were removed.
pub fn prune_sessions(store: &Store, max_age: std::time::Duration) -> u64 {
    let cutoff = SystemTime::now() - max_age;
    let Ok(logs) = fs::read_dir(store.root().join("recorder").join("sessions")) else {
        return 0;
    };
    let mut removed = 0;
    for log in logs.flatten() {
        let old = log
            .metadata()
            .and_then(|m| m.modified())
            .is_ok_and(|m| m < cutoff);
        if old && fs::remove_file(log.path()).is_ok() {
            removed += 1;
        }
    }
    removed
}

/// Logs why a recording was incomplete (kache's debug log).
pub fn note_incomplete(why: &Incomplete) {
    tracing::debug!("{why}; inputs inferred strictly");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_exclusion_has_one_row_with_a_reason() {
        let all = [
            NotKeyed::Sysroot,
            NotKeyed::RecorderLibrary,
            NotKeyed::PseudoFilesystems,
            NotKeyed::MadeByTheCompile,
            NotKeyed::OwnSearchDirListings,
            NotKeyed::TemporaryDirectories,
            NotKeyed::CanonicalSpellings,
            NotKeyed::IgnoredVariables,
            NotKeyed::CiWithoutPlugins,
        ];
        for w in all {
            assert_eq!(NOT_KEYED.iter().filter(|r| r.what == w).count(), 1, "{w:?}");
            assert!(!reason(w).is_empty(), "{w:?}");
        }
        assert_eq!(NOT_KEYED.len(), all.len());
    }

    #[test]
    fn a_listing_digest_changes_when_an_entry_is_renamed_and_not_when_a_file_is_written() {
        let d = tempfile::tempdir().unwrap();
        fs::write(d.path().join("a.txt"), "1").unwrap();
        fs::create_dir(d.path().join("sub")).unwrap();
        let before = listing_digest(d.path()).unwrap();
        fs::write(d.path().join("a.txt"), "changed").unwrap();
        assert_eq!(listing_digest(d.path()).unwrap(), before);
        fs::rename(d.path().join("a.txt"), d.path().join("b.txt")).unwrap();
        assert_ne!(listing_digest(d.path()).unwrap(), before);
    }

    #[test]
    fn results_that_saw_different_directories_never_share_a_key() {
        let base = || ("r".repeat(64), BTreeMap::new());
        let plain = Observed::default();
        assert_eq!(with_lookups(base(), &plain).0, "r".repeat(64));
        let listed = |digest: &str| Observed {
            listed: vec![("@KACHE_WS@/assets".into(), digest.into())],
            ..Observed::default()
        };
        let (one, groups) = with_lookups(base(), &listed("1"));
        assert_ne!(one, with_lookups(base(), &listed("2")).0);
        assert!(groups.contains_key("listed"), "{groups:?}");
        let absent = Observed {
            absent: vec!["@KACHE_WS@/src/foo/mod.rs".into()],
            ..Observed::default()
        };
        assert_ne!(with_lookups(base(), &absent).0, "r".repeat(64));
    }

    #[test]
    fn each_library_is_looked_for_along_ld_library_path_before_where_it_was_found() {
        let mut seen = ObservedInputs::default();
        seen.env.insert(
            "LD_LIBRARY_PATH".into(),
            Some("/t/deps:/sysroot/lib:/d2".into()),
        );
        seen.files_read.insert("/d2/libfoo.so.1".into());
        seen.files_read.insert("/lib/libc.so.6".into());
        seen.files_read.insert("/w/src/lib.rs".into());
        let filter = Filter::new().drop_under("/sysroot");
        let scope = Scope {
            roots: &[],
            tokenize: &|t| t.to_string(),
            own_search_dirs: &[],
            loads_plugins: false,
            started: SystemTime::now(),
            filter: &filter,
            collapse_absent: false,
        };
        let got: Vec<PathBuf> = loader_candidates(&seen, &scope);
        let want: Vec<PathBuf> = [
            "/t/deps/glibc-hwcaps",
            "/d2/glibc-hwcaps",
            "/t/deps/libfoo.so.1",
            "/t/deps/libc.so.6",
            "/d2/libc.so.6",
        ]
        .iter()
        .map(PathBuf::from)
        .collect();
        assert_eq!(got, want);
    }

    #[test]
    fn a_path_below_a_directory_still_absent_is_not_looked_up_again() {
        let d = tempfile::tempdir().unwrap();
        let texts: Vec<String> = ["gone", "gone/a.h", "gone/b/c.h", "here"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let paths = || texts.iter().map(|t| (t, d.path().join(t)));
        assert_eq!(first_present(paths()), None);
        fs::write(d.path().join("here"), "").unwrap();
        assert_eq!(first_present(paths()).map(String::as_str), Some("here"));
        fs::create_dir(d.path().join("gone")).unwrap();
        fs::write(d.path().join("gone/a.h"), "").unwrap();
        assert_eq!(first_present(paths()).map(String::as_str), Some("gone"));
    }

    #[test]
    fn a_lookup_below_a_missing_directory_is_recorded_as_that_directory() {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir(d.path().join("inc")).unwrap();
        std::fs::write(d.path().join("f"), "").unwrap();
        let mut present = std::collections::HashSet::new();
        let mut top = |p: &str| highest_absent(d.path().join(p), &mut present);
        assert_eq!(top("inc/bits/types/x.h"), d.path().join("inc/bits"));
        assert_eq!(top("inc/h.h"), d.path().join("inc/h.h"));
        assert_eq!(top("gone/h.h"), d.path().join("gone"));
        assert_eq!(top("f/below/h.h"), d.path().join("f/below"));
    }

    #[test]
    fn absent_means_not_found_or_below_a_file() {
        let d = tempfile::tempdir().unwrap();
        fs::write(d.path().join("f"), "").unwrap();
        assert!(is_absent(&d.path().join("nope")));
        assert!(is_absent(&d.path().join("f/below")));
        assert!(!is_absent(&d.path().join("f")));
    }
}
