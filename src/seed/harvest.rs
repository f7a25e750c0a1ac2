//! Harvest: the finished units of a target directory become unit seeds in the store.
//!
//! Cargo writes a unit's fingerprint only after the unit finished, so a unit is
//! harvested from a target once a build there is over: by a background process that
//! waits for the cargo process of a target's first build to exit, at the next seeding
//! (every known target is looked at, cheaply: a readdir per profile and an index of
//! what was already harvested), at `kache mount` / `kache worktree add`, and by
//! `kache worktree remove` before the worktree goes. What is harvested lives in the
//! store, so a donor deleted later still seeds.
//!
//! Refused (and counted under `seed.harvest.refused.<reason>`): path packages and
//! anything whose sources live in the donor worktree (cargo trusts their mtimes),
//! units whose files name the donor's worktree or target directory outside the few
//! text files where such a path is provably relocatable, build-script runs whose
//! environment is unknown, units cargo has not finished or that change while read.
//! Must never: take a profile directory while cargo builds in it (its `.cargo-lock`
//! is held for the whole harvest of that profile), or write into the donor.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fs;
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use kache_platform::{FileLock, LockMode};
use memchr::memmem::Finder;

use super::cargo::{read_lock, LockedPackage};
use super::outcome::NotHarvested;
use super::record::{self, Donor, Kind, UnitMeta, UnitRef, MAX_TEXT, TARGET_TOKEN};
use super::state::{self, Harvested, TargetState};
use crate::stats::{Breakdown, Counter, Tally};
use crate::store::{Entry, OutputFile, Store};

/// Why a unit was not harvested; `retry` when a later harvest may succeed with the
/// same files (so the refusal is not remembered).
struct Refusal {
    reason: NotHarvested,
    retry: bool,
}

fn refuse(reason: NotHarvested) -> Refusal {
    Refusal {
        reason,
        retry: false,
    }
}

fn retry(reason: NotHarvested) -> Refusal {
    Refusal {
        reason,
        retry: true,
    }
}

/// The donor's absolute paths: the target dir (relocatable) and the worktree (not).
pub struct DonorPaths {
    target: Vec<String>,
    worktree: Vec<String>,
}

impl DonorPaths {
    /// `targets`: every path the target dir was seen at (its link and where it leads).
    pub fn of(targets: &[&Path], worktree: &Path) -> DonorPaths {
        let spellings = |p: &Path| -> Vec<String> {
            let mut v = vec![p.to_string_lossy().into_owned()];
            if let Ok(c) = fs::canonicalize(p) {
                let c = c.to_string_lossy().into_owned();
                if !v.contains(&c) {
                    v.push(c);
                }
            }
            v.retain(|s| s.len() > 1);
            // Longest first, so a replacement never leaves the tail of a longer one.
            v.sort_by_key(|s| std::cmp::Reverse(s.len()));
            v
        };
        let mut target: Vec<String> = targets.iter().flat_map(|t| spellings(t)).collect();
        target.sort();
        target.dedup();
        target.sort_by_key(|s| std::cmp::Reverse(s.len()));
        DonorPaths {
            target,
            worktree: if worktree.as_os_str().is_empty() {
                Vec::new()
            } else {
                spellings(worktree)
            },
        }
    }

    fn all(&self) -> impl Iterator<Item = &String> {
        self.target.iter().chain(&self.worktree)
    }
}

/// The profile directories of a target (`debug`, `release`, `<triple>/debug`, …).
pub fn profile_dirs(target: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let Ok(rd) = fs::read_dir(target) else {
        return out;
    };
    for e in rd.flatten() {
        if !e.file_type().is_ok_and(|t| t.is_dir()) {
            continue;
        }
        let name = e.file_name().to_string_lossy().into_owned();
        if e.path().join(".fingerprint").is_dir() {
            out.push(name);
            continue;
        }
        let Ok(sub) = fs::read_dir(e.path()) else {
            continue;
        };
        for s in sub.flatten() {
            if s.path().join(".fingerprint").is_dir() {
                out.push(format!("{name}/{}", s.file_name().to_string_lossy()));
            }
        }
    }
    out.retain(|p| record::is_profile_dir(p));
    out.sort();
    out
}

/// What the fingerprint directory of one unit says.
struct Facts {
    kind: Option<Kind>,
    /// Fingerprint files: (name, hash).
    hashes: Vec<(String, String)>,
    deps: Vec<String>,
    /// The fingerprint files as they are (name, content, mtime): a unit is harvested
    /// again only when this changes.
    stamp: String,
}

/// One fingerprint file's part of a unit's stamp (see [`Facts::stamp`]); the parts are
/// concatenated in file-name order.
pub fn stamp_part(name: &str, hash: &str, mtime_ns: i64) -> String {
    format!("{name}={hash}@{mtime_ns};")
}

/// True when the fingerprint files a stamp names still have its mtimes (the content
/// cargo writes always comes with a new mtime).
fn stamp_holds(fp_dir: &Path, stamp: &str) -> bool {
    !stamp.is_empty()
        && stamp.split(';').filter(|p| !p.is_empty()).all(|part| {
            let Some((name, rest)) = part.split_once('=') else {
                return false;
            };
            let Some((_, mtime)) = rest.rsplit_once('@') else {
                return false;
            };
            fs::metadata(fp_dir.join(name))
                .and_then(|m| m.modified())
                .is_ok_and(|t| state::time_ns(t).to_string() == mtime)
        })
}

fn read_facts(fp_dir: &Path) -> Option<Facts> {
    let mut names: Vec<String> = fs::read_dir(fp_dir)
        .ok()?
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    let hash_files: Vec<&String> = names
        .iter()
        .filter(|n| {
            !n.starts_with("dep-")
                && !n.contains('.')
                && n.as_str() != "invoked"
                && names.contains(&format!("{n}.json"))
        })
        .collect();
    let mut facts = Facts {
        kind: None,
        hashes: Vec::new(),
        deps: Vec::new(),
        stamp: String::new(),
    };
    for name in &hash_files {
        let p = fp_dir.join(name);
        let text = fs::read_to_string(&p).ok()?;
        let mtime = fs::metadata(&p)
            .and_then(|m| m.modified())
            .map(state::time_ns)
            .unwrap_or(0);
        facts.stamp.push_str(&stamp_part(name, text.trim(), mtime));
        facts
            .hashes
            .push((name.to_string(), text.trim().to_string()));
    }
    if let [(name, _)] = facts.hashes.as_slice() {
        facts.kind = match name.as_str() {
            "build-script-build-script-build" => Some(Kind::BuildScript),
            "run-build-script-build-script-build" => Some(Kind::Run),
            n if n.starts_with("lib-") => Some(Kind::Lib),
            _ => None,
        };
        let json = fs::read(fp_dir.join(format!("{name}.json"))).ok()?;
        let v: serde_json::Value = serde_json::from_slice(&json).ok()?;
        for d in v["deps"].as_array().map(Vec::as_slice).unwrap_or(&[]) {
            // The json holds the number; the hash file its little-endian bytes in hex.
            let h = d.get(3).and_then(|h| h.as_u64())?;
            let hex: String = h.to_le_bytes().iter().map(|b| format!("{b:02x}")).collect();
            facts.deps.push(hex);
        }
    }
    Some(facts)
}

/// A package found from a compile's dep-info: (name, version, package root).
type FoundPackage = Result<(String, String, PathBuf), NotHarvested>;

/// Reads the compile's dep-info and finds the package it compiled: the nearest
/// directory with a `Cargo.toml` above the crate root, and its name and version.
fn package_of(dep_info: &Path, cache: &mut HashMap<PathBuf, FoundPackage>) -> FoundPackage {
    let mut text = String::new();
    fs::File::open(dep_info)
        .and_then(|f| f.take(MAX_TEXT).read_to_string(&mut text))
        .map_err(|_| NotHarvested::Incomplete)?;
    let first = text
        .lines()
        .find(|l| l.contains(": "))
        .ok_or(NotHarvested::Incomplete)?;
    let deps = first.split_once(": ").ok_or(NotHarvested::Incomplete)?.1;
    // Paths are space-separated, with spaces inside a path escaped as `\ `.
    let mut root_file = None;
    let mut cur = String::new();
    let mut chars = deps.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\\' if chars.peek() == Some(&' ') => {
                cur.push(' ');
                chars.next();
            }
            ' ' => {
                if cur.ends_with(".rs") {
                    root_file = Some(std::mem::take(&mut cur));
                    break;
                }
                cur.clear();
            }
            c => cur.push(c),
        }
    }
    let root_file = root_file
        .or_else(|| cur.ends_with(".rs").then_some(cur))
        .ok_or(NotHarvested::PackageUnknown)?;
    let root_file = PathBuf::from(root_file);
    if !root_file.is_absolute() {
        // cargo names the sources of workspace members relative to the workspace.
        return Err(NotHarvested::PathPackage);
    }
    let pkg_root = root_file
        .ancestors()
        .skip(1)
        .find(|d| d.join("Cargo.toml").is_file())
        .ok_or(NotHarvested::PackageUnknown)?
        .to_path_buf();
    if let Some(hit) = cache.get(&pkg_root) {
        return hit.clone();
    }
    let found = (|| {
        let manifest = fs::read_to_string(pkg_root.join("Cargo.toml")).ok()?;
        let t = manifest.parse::<toml::Table>().ok()?;
        let p = t.get("package")?;
        let name = p.get("name")?.as_str()?.to_string();
        let version = p.get("version")?.as_str()?.to_string();
        Some((name, version, pkg_root.clone()))
    })()
    .ok_or(NotHarvested::PackageUnknown);
    cache.insert(pkg_root, found.clone());
    found
}

/// blake3 of the file and whether any needle occurs in it, in one read.
fn hash_and_find(path: &Path, needles: &[Finder<'_>]) -> io::Result<(String, bool)> {
    let mut f = fs::File::open(path)?;
    let keep = needles.iter().map(|n| n.needle().len()).max().unwrap_or(1) - 1;
    let mut hasher = blake3::Hasher::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut carry = 0usize;
    let mut found = false;
    loop {
        let n = match f.read(&mut buf[carry..]) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        hasher.update(&buf[carry..carry + n]);
        let window = &buf[..carry + n];
        found = found || needles.iter().any(|f| f.find(window).is_some());
        let tail = keep.min(window.len());
        let start = window.len() - tail;
        buf.copy_within(start..start + tail, 0);
        carry = tail;
    }
    Ok((hasher.finalize().to_hex().to_string(), found))
}

/// Whether any needle occurs in the file (read in large chunks, a needle's length of
/// overlap kept between them).
fn file_contains(path: &Path, needles: &[Finder<'_>]) -> io::Result<bool> {
    let mut f = fs::File::open(path)?;
    let keep = needles.iter().map(|n| n.needle().len()).max().unwrap_or(1) - 1;
    let mut buf = vec![0u8; 1 << 20];
    let mut carry = 0usize;
    loop {
        let n = match f.read(&mut buf[carry..]) {
            Ok(0) => return Ok(false),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        let window = &buf[..carry + n];
        if needles.iter().any(|f| f.find(window).is_some()) {
            return Ok(true);
        }
        let tail = keep.min(window.len());
        let start = window.len() - tail;
        buf.copy_within(start..start + tail, 0);
        carry = tail;
    }
}

fn contains(hay: &[u8], needle: &str) -> bool {
    memchr::memmem::find(hay, needle.as_bytes()).is_some()
}

/// Replaces every occurrence of the path `needle` that ends there (followed by `/`, a
/// separator or the end): `/w/a/target` in `/w/a/target2` is another path, left alone
/// (and then caught by the worktree check).
fn replace_path(hay: &[u8], needle: &str, with: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(hay.len());
    let mut rest = hay;
    while let Some(i) = memchr::memmem::find(rest, needle.as_bytes()) {
        let end = i + needle.len();
        let whole = rest
            .get(end)
            .is_none_or(|b| matches!(b, b'/' | b'\n' | b'\r' | b' ' | b'\t' | b'"' | b':' | b'\0'));
        out.extend_from_slice(&rest[..i]);
        out.extend_from_slice(if whole {
            with.as_bytes()
        } else {
            needle.as_bytes()
        });
        rest = &rest[end..];
    }
    out.extend_from_slice(rest);
    out
}

/// Stores small bytes as a blob and makes sure the blob holds them (an existing blob of
/// that name is checked through the digest memo, replaced if damaged).
fn store_text(store: &Store, bytes: &[u8]) -> io::Result<(String, u64)> {
    let b = store.put_blob_bytes_unsynced(bytes)?;
    let path = store.blob_path(&b.hash);
    if !crate::store::memo::file_digest(store, &path).is_ok_and(|(d, _)| d == b.hash) {
        let _ = fs::remove_file(&path);
        store.put_blob_bytes_unsynced(bytes)?;
        crate::store::memo::remember_output(store, &path, &b.hash);
    }
    Ok((b.hash, b.size))
}

/// Text files in which a path into the donor's target dir is relocated: rustc's
/// dep-info (cargo and kache rewrite those for the consuming target anyway) and a
/// build script's `output`/`root-output`/`stderr` (cargo itself rewrites the old
/// `OUT_DIR`, read from `root-output`, to the new one in `output`).
fn relocatable(name: &str) -> bool {
    let parts: Vec<&str> = name.split('/').collect();
    match parts.as_slice() {
        ["deps", f] => f.ends_with(".d"),
        ["build", _, f] => f.ends_with(".d") || matches!(*f, "output" | "root-output" | "stderr"),
        _ => false,
    }
}

/// Every regular file under `dir`, as paths relative to `base` ('/'-separated).
fn walk(dir: &Path, base: &Path, out: &mut Vec<String>) -> Result<(), Refusal> {
    let rd = fs::read_dir(dir).map_err(|_| retry(NotHarvested::Unreadable))?;
    for e in rd.flatten() {
        let ft = e.file_type().map_err(|_| retry(NotHarvested::Unreadable))?;
        if ft.is_symlink() {
            return Err(refuse(NotHarvested::Symlink));
        }
        if ft.is_dir() {
            walk(&e.path(), base, out)?;
        } else if ft.is_file() {
            let rel = e.path();
            let rel = rel
                .strip_prefix(base)
                .map_err(|_| refuse(NotHarvested::Unreadable))?;
            let parts: Option<Vec<&str>> = rel.iter().map(|c| c.to_str()).collect();
            out.push(parts.ok_or(refuse(NotHarvested::NonUtf8Name))?.join("/"));
        } else {
            return Err(refuse(NotHarvested::SpecialFile));
        }
    }
    Ok(())
}

/// One profile directory being harvested.
struct Profile<'a> {
    store: &'a Store,
    dir: PathBuf,
    donor: &'a DonorPaths,
    lock: Option<&'a BTreeSet<LockedPackage>>,
    facts: BTreeMap<String, Facts>,
    by_fp: HashMap<String, String>,
    deps_files: HashMap<String, Vec<String>>,
    pkg_cache: HashMap<PathBuf, FoundPackage>,
    unit_pkg: HashMap<String, Result<LockedPackage, NotHarvested>>,
    /// rustc identity → unit dir → unit seeds of the seed set.
    known: HashMap<String, HashMap<String, Vec<UnitRef>>>,
}

impl Profile<'_> {
    /// A unit seed already in the store for unit `dir` with fingerprint `fp` (and, for a
    /// build-script run, the same environment).
    fn known(
        &mut self,
        identity: &str,
        dir: &str,
        fp: &[String],
        kind: Kind,
        env: Option<&str>,
    ) -> Option<UnitRef> {
        let store = self.store;
        let index = self.known.entry(identity.to_string()).or_insert_with(|| {
            let mut m: HashMap<String, Vec<UnitRef>> = HashMap::new();
            for d in record::get_set(store, identity).donors {
                for units in d.profiles.into_values() {
                    for u in units {
                        m.entry(u.dir.clone()).or_default().push(u);
                    }
                }
            }
            m
        });
        index
            .get(dir)?
            .iter()
            .find(|u| {
                u.fp == fp
                    && (kind != Kind::Run || (env.is_some() && u.env.as_deref() == env))
                    && store.has_entry(&u.key)
            })
            .cloned()
    }

    /// The locked package unit `dir` belongs to.
    fn package(&mut self, dir: &str, depth: usize) -> Result<LockedPackage, NotHarvested> {
        if let Some(p) = self.unit_pkg.get(dir) {
            return p.clone();
        }
        let r = self.find_package(dir, depth);
        self.unit_pkg.insert(dir.to_string(), r.clone());
        r
    }

    fn find_package(&mut self, dir: &str, depth: usize) -> Result<LockedPackage, NotHarvested> {
        let hash = record::unit_hash(dir).ok_or(NotHarvested::BadUnitName)?;
        let facts = self.facts.get(dir).ok_or(NotHarvested::Incomplete)?;
        let dep_info = match facts.kind {
            Some(Kind::Run) => {
                // A run belongs to the package whose build script it runs.
                let script = facts
                    .deps
                    .iter()
                    .filter_map(|h| self.by_fp.get(h))
                    .find(|d| {
                        self.facts
                            .get(*d)
                            .is_some_and(|f| f.kind == Some(Kind::BuildScript))
                    })
                    .cloned()
                    .ok_or(NotHarvested::Incomplete)?;
                if depth > 2 {
                    return Err(NotHarvested::Incomplete);
                }
                return self.package(&script, depth + 1);
            }
            Some(Kind::BuildScript) => {
                let bdir = self.dir.join("build").join(dir);
                fs::read_dir(&bdir)
                    .map_err(|_| NotHarvested::Incomplete)?
                    .flatten()
                    .map(|e| e.path())
                    .find(|p| p.extension().is_some_and(|e| e == "d"))
                    .ok_or(NotHarvested::Incomplete)?
            }
            _ => {
                let name = self
                    .deps_files
                    .get(hash)
                    .and_then(|v| v.iter().find(|n| n.ends_with(".d")))
                    .ok_or(NotHarvested::Incomplete)?;
                self.dir.join("deps").join(name)
            }
        };
        let (name, version, root) = package_of(&dep_info, &mut self.pkg_cache)?;
        let root_s = root.to_string_lossy();
        if self.donor.all().any(|p| root_s.starts_with(p.as_str())) {
            return Err(NotHarvested::SourceInWorktree);
        }
        if dir.rsplit_once('-').map(|(n, _)| n) != Some(name.as_str()) {
            return Err(NotHarvested::PackageMismatch);
        }
        let lock = self.lock.ok_or(NotHarvested::NoLockfile)?;
        let found: Vec<&LockedPackage> = lock
            .iter()
            .filter(|p| p.name == name && p.version == version)
            .collect();
        match found.as_slice() {
            [] => Err(NotHarvested::NotInLock),
            [p] if p.source.is_none() => Err(NotHarvested::PathPackage),
            [p] => Ok((*p).clone()),
            _ => Err(NotHarvested::AmbiguousPackage),
        }
    }

    /// Harvests unit `dir` into a unit seed.
    fn prepare(&mut self, dir: &str, st: &TargetState) -> Result<Prepared, Refusal> {
        let hash = record::unit_hash(dir)
            .ok_or(refuse(NotHarvested::BadUnitName))?
            .to_string();
        let (kind, facts_stamp, fp, deps, fp_names) = {
            let f = self.facts.get(dir).ok_or(retry(NotHarvested::Incomplete))?;
            let fp_names: Vec<String> = f
                .hashes
                .iter()
                .map(|(n, _)| format!(".fingerprint/{dir}/{n}"))
                .collect();
            let fp: Vec<String> = f.hashes.iter().map(|(_, h)| h.clone()).collect();
            if fp.iter().any(|h| !record::is_fp_hash(h)) {
                // Truncated by cargo when a rebuild of the unit started: not finished.
                return Err(refuse(NotHarvested::Unfinished));
            }
            (
                f.kind.ok_or(refuse(NotHarvested::UnitKind))?,
                f.stamp.clone(),
                fp,
                f.deps.clone(),
                fp_names,
            )
        };
        // The unit's files.
        let mut names: Vec<String> = Vec::new();
        walk(
            &self.dir.join(".fingerprint").join(dir),
            &self.dir,
            &mut names,
        )?;
        let mut kind = kind;
        let mut check_only = false;
        match kind {
            Kind::Lib | Kind::ProcMacro => {
                let files = self.deps_files.get(&hash).cloned().unwrap_or_default();
                let has = |ext: &str| files.iter().any(|f| f.ends_with(ext));
                if has(".rlib") {
                } else if has(".so") || has(".dylib") || has(".dll") {
                    kind = Kind::ProcMacro;
                } else if has(".rmeta") {
                    check_only = true;
                } else {
                    return Err(refuse(NotHarvested::Incomplete));
                }
                names.extend(files.iter().map(|f| format!("deps/{f}")));
            }
            Kind::BuildScript | Kind::Run => {
                let bdir = self.dir.join("build").join(dir);
                walk(&bdir, &self.dir, &mut names)?;
                let present = |f: &str| names.iter().any(|n| n == &format!("build/{dir}/{f}"));
                let complete = match kind {
                    Kind::Run => present("output") && present("root-output"),
                    _ => present("build-script-build"),
                };
                if !complete {
                    return Err(refuse(NotHarvested::Incomplete));
                }
            }
        }
        names.sort();
        names.dedup();

        let pkg = self.package(dir, 0).map_err(refuse)?;

        // Which build it came from: cargo stamps `invoked.timestamp` when the unit starts.
        let invoked = match kind {
            Kind::Run => format!("build/{dir}/invoked.timestamp"),
            _ => format!(".fingerprint/{dir}/invoked.timestamp"),
        };
        let started = fs::metadata(record::join(&self.dir, &invoked))
            .and_then(|m| m.modified())
            .map(state::time_ns)
            .map_err(|_| refuse(NotHarvested::Incomplete))?;
        let identity = st
            .identity_at(started)
            .ok_or(refuse(NotHarvested::RustcUnknown))?
            .to_string();
        let env = st.window_of(started).map(|p| p.env.clone());
        if kind == Kind::Run && env.is_none() {
            // Still open (cargo just exited and the window is being closed): try again.
            let open = st
                .probes
                .last()
                .is_some_and(|p| p.ended_ns.is_none() && p.started_ns <= started);
            return Err(if open {
                retry(NotHarvested::EnvUnknown)
            } else {
                refuse(NotHarvested::EnvUnknown)
            });
        }

        // The same unit (directory and fingerprint) already in the store, from another
        // target or an earlier harvest: nothing to read again.
        if let Some(r) = self.known(&identity, dir, &fp, kind, env.as_deref()) {
            return Ok(Prepared::Known(Box::new(r), identity));
        }
        Ok(Prepared::Read(Box::new(Work {
            dir: dir.to_string(),
            names,
            fp_names,
            facts_stamp,
            identity,
            r: UnitRef {
                dir: dir.to_string(),
                key: String::new(),
                pkg,
                kind,
                check_only,
                fp,
                deps,
                env,
                bytes: 0,
            },
        })))
    }
}

/// A unit whose files are still to be read, with what was found out about it.
struct Work {
    dir: String,
    names: Vec<String>,
    fp_names: Vec<String>,
    facts_stamp: String,
    identity: String,
    r: UnitRef,
}

enum Prepared {
    /// Already in the store (from another target or an earlier harvest).
    Known(Box<UnitRef>, String),
    Read(Box<Work>),
}

/// A harvested unit and the rustc identity it was built by, or why not.
type Harvest = Result<(UnitRef, String), Refusal>;

/// Reads the files of unit `w` of profile dir `pdir`: content into the store, donor
/// paths relocated or refused; publishes the unit seed. Independent of other units, so
/// several run at once.
fn read_unit(
    store: &Store,
    pdir: &Path,
    donor: &DonorPaths,
    w: Work,
) -> Result<(UnitRef, String), Refusal> {
    let Work {
        dir,
        names,
        fp_names,
        facts_stamp,
        identity,
        r,
    } = w;
    let dir = dir.as_str();
    {
        let finders: Vec<Finder> = donor.all().map(|p| Finder::new(p.as_bytes())).collect();
        let mut outputs = Vec::with_capacity(names.len());
        let mut mtimes = Vec::with_capacity(names.len());
        let mut rewrite = Vec::new();
        let mut fingerprints = Vec::new();
        let mut bytes = 0u64;
        for name in &names {
            let path = record::join(pdir, name);
            let meta = fs::metadata(&path).map_err(|_| retry(NotHarvested::Changed))?;
            let mtime = meta
                .modified()
                .map(state::time_ns)
                .map_err(|_| retry(NotHarvested::Changed))?;
            let mode = kache_platform::file_mode(&meta);
            let (blob, size) = if relocatable(name) {
                if meta.len() > MAX_TEXT {
                    return Err(refuse(NotHarvested::DonorPath));
                }
                let raw = fs::read(&path).map_err(|_| retry(NotHarvested::Changed))?;
                if contains(&raw, TARGET_TOKEN) {
                    return Err(refuse(NotHarvested::TokenInFile));
                }
                let mut text = raw.clone();
                for t in &donor.target {
                    text = replace_path(&text, t, TARGET_TOKEN);
                }
                if donor.worktree.iter().any(|w| contains(&text, w)) {
                    return Err(refuse(NotHarvested::DonorPath));
                }
                if text != raw {
                    rewrite.push(outputs.len());
                }
                store_text(store, &text).map_err(|_| retry(NotHarvested::StoreError))?
            } else {
                // Outputs the wrapper stored or restored are known by their stat already.
                let (h, size) = crate::store::memo::file_digest(store, &path)
                    .map_err(|_| retry(NotHarvested::Changed))?;
                let blob_path = store.blob_path(&h);
                let mut present = fs::metadata(&blob_path).is_ok_and(|m| m.len() == size);
                if present {
                    // One read of the blob, in the background, both checks it against its
                    // name (the digest memo then lets a seeding check it by its stat
                    // alone) and, being the same bytes as the file, looks for donor paths.
                    match hash_and_find(&blob_path, &finders) {
                        Ok((d, true)) if d == h => return Err(refuse(NotHarvested::DonorPath)),
                        Ok((d, false)) if d == h => {
                            crate::store::memo::remember_output(store, &blob_path, &h)
                        }
                        _ => {
                            let _ = fs::remove_file(&blob_path);
                            present = false;
                        }
                    }
                }
                if !present {
                    if file_contains(&path, &finders).map_err(|_| retry(NotHarvested::Changed))? {
                        return Err(refuse(NotHarvested::DonorPath));
                    }
                    // What the wrapper did not store already: fingerprint files, what
                    // build scripts wrote. Small; read whole and stored unsynced.
                    let stored = if size <= MAX_TEXT {
                        let bytes = fs::read(&path).map_err(|_| retry(NotHarvested::Changed))?;
                        store_text(store, &bytes).map(|(h, _)| h)
                    } else {
                        store
                            .put_blob_from_path_as(&path, mode & 0o111 != 0)
                            .map(|b| b.hash)
                    }
                    .map_err(|_| retry(NotHarvested::StoreError))?;
                    if stored != h {
                        return Err(retry(NotHarvested::Changed));
                    }
                }
                (h, size)
            };
            if fp_names.contains(name) {
                fingerprints.push(outputs.len());
            }
            bytes += size;
            mtimes.push(mtime);
            outputs.push(OutputFile {
                name: name.clone(),
                blob,
                size,
                mode,
            });
        }
        // Unchanged while read? (The profile lock keeps cargo out; this catches anyone else.)
        let again = read_facts(&pdir.join(".fingerprint").join(dir)).map(|f| f.stamp);
        if again.as_deref() != Some(facts_stamp.as_str()) {
            return Err(retry(NotHarvested::Changed));
        }
        let newest = mtimes.iter().copied().max().unwrap_or(0);
        let meta = UnitMeta {
            unit: dir.to_string(),
            mtimes: mtimes.iter().map(|m| m - newest).collect(),
            rewrite,
            fingerprints,
        };
        if meta.fingerprints.is_empty() {
            return Err(refuse(NotHarvested::Incomplete));
        }
        let entry = Entry {
            outputs,
            meta: serde_json::json!({ "seed_unit": meta }),
            ..Entry::default()
        };
        let key = record::put_unit(store, &entry).map_err(|_| retry(NotHarvested::StoreError))?;
        Ok((UnitRef { key, bytes, ..r }, identity))
    }
}

/// Where a target's files are read (the target, or the mount point behind it), the paths
/// of the donor to look for in them, and the lockfile its packages are matched by.
struct Source<'a> {
    at: &'a Path,
    paths: DonorPaths,
    lock: Option<BTreeSet<LockedPackage>>,
}

/// Harvests one profile directory of `st.target`; true when the index changed.
fn harvest_profile(
    store: &Store,
    st: &mut TargetState,
    source: &Source,
    profile: &str,
    deadline: Option<Instant>,
    tally: &mut Tally,
) -> bool {
    let (donor, lock) = (&source.paths, source.lock.as_ref());
    let dir = record::join(source.at, profile);
    // Never while cargo builds here: cargo holds this lock for a whole build.
    let Ok(Some(_cargo)) = FileLock::try_acquire(&dir.join(".cargo-lock"), LockMode::Exclusive)
    else {
        return false;
    };
    let Ok(rd) = fs::read_dir(dir.join(".fingerprint")) else {
        return false;
    };
    let names: Vec<String> = rd
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| record::unit_hash(n).is_some())
        .collect();
    // The common case, every unit already harvested (or placed by a seeding) and
    // untouched since: one stat per fingerprint file, nothing read.
    let index = st.harvested.entry(profile.to_string()).or_default();
    let unchanged = names.len() == index.len()
        && names.iter().all(|n| {
            index
                .get(n)
                .is_some_and(|h| stamp_holds(&dir.join(".fingerprint").join(n), &h.stamp))
        });
    if unchanged {
        return false;
    }
    let mut p = Profile {
        store,
        dir: dir.clone(),
        donor,
        lock,
        facts: BTreeMap::new(),
        by_fp: HashMap::new(),
        deps_files: HashMap::new(),
        pkg_cache: HashMap::new(),
        unit_pkg: HashMap::new(),
        known: HashMap::new(),
    };
    for name in names {
        if let Some(f) = read_facts(&dir.join(".fingerprint").join(&name)) {
            for (_, h) in &f.hashes {
                p.by_fp.insert(h.clone(), name.clone());
            }
            p.facts.insert(name, f);
        }
    }
    if let Ok(rd) = fs::read_dir(dir.join("deps")) {
        for e in rd.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            // `<stem>-<16 hex>` followed by nothing or an extension.
            let stem = name.split('.').next().unwrap_or(&name);
            if let Some((_, h)) = stem.rsplit_once('-') {
                if record::is_fp_hash(h) && e.file_type().is_ok_and(|t| t.is_file()) {
                    p.deps_files.entry(h.to_string()).or_default().push(name);
                }
            }
        }
    }
    let index = st.harvested.entry(profile.to_string()).or_default();
    let before = index.len();
    index.retain(|d, _| p.facts.contains_key(d));
    let mut changed = index.len() != before;
    let todo: Vec<String> = p
        .facts
        .iter()
        .filter(|(d, f)| index.get(*d).is_none_or(|h| h.stamp != f.stamp))
        .map(|(d, _)| d.clone())
        .collect();
    let snapshot = st.clone();
    // What needs no file read is decided here, one unit after the other; reading the
    // files (most of the cost: every byte is hashed or searched) runs on a few threads.
    let mut results: Vec<(String, Harvest)> = Vec::new();
    let mut work: Vec<(String, Work)> = Vec::new();
    for d in todo {
        if deadline.is_some_and(|t| Instant::now() > t) {
            tally.add_store(Counter::SeedHarvestDeferred, 1);
            break;
        }
        match p.prepare(&d, &snapshot) {
            Ok(Prepared::Known(r, identity)) => results.push((d, Ok((*r, identity)))),
            Ok(Prepared::Read(w)) => work.push((d, *w)),
            Err(r) => results.push((d, Err(r))),
        }
    }
    let workers = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .clamp(1, 4);
    let queue = std::sync::Mutex::new(work);
    let read: Vec<(String, Harvest)> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..workers)
            .map(|_| {
                let queue = &queue;
                let dir = &dir;
                scope.spawn(move || {
                    let mut out = Vec::new();
                    loop {
                        let next = queue.lock().ok().and_then(|mut q| q.pop());
                        let Some((d, w)) = next else { break };
                        out.push((d, read_unit(store, dir, donor, w)));
                    }
                    out
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().unwrap_or_default())
            .collect()
    });
    results.extend(read);
    for (d, result) in results {
        let Some(stamp) = p.facts.get(&d).map(|f| f.stamp.clone()) else {
            continue;
        };
        let index = st.harvested.entry(profile.to_string()).or_default();
        match result {
            Ok((r, identity)) => {
                tally.add_store(Counter::SeedHarvestUnits, 1);
                index.insert(
                    d,
                    Harvested {
                        stamp,
                        identity: Some(identity),
                        seed: Some(r),
                        refused: None,
                    },
                );
                changed = true;
            }
            Err(r) => {
                tally.add_label(None, Breakdown::SeedHarvestRefused, r.reason.label());
                if !r.retry {
                    index.insert(
                        d,
                        Harvested {
                            stamp,
                            identity: None,
                            seed: None,
                            refused: Some(r.reason.label().to_string()),
                        },
                    );
                    changed = true;
                }
            }
        }
    }
    changed
}

/// Harvests every profile of `target`, whose files are read at `at` (the target itself,
/// or the mount point of a mounted target whose link is gone). `wait`: how long to wait
/// for a harvest of the same target already running elsewhere (the background one after
/// a build).
pub fn harvest_target(
    store: &Store,
    target: &Path,
    at: &Path,
    wait: Duration,
    deadline: Option<Instant>,
    tally: &mut Tally,
) {
    // A wedged mount would hang whoever reads it: look only at healthy ones.
    if matches!(kache_fs::mount_health(at), kache_fs::MountHealth::Broken(_)) {
        return;
    }
    let mut tries = 0;
    let mut abandoned = false;
    let (_lock, mut st) = loop {
        let Some(lock) = state::lock(store, target, wait) else {
            return;
        };
        let mut st = state::load(store, target);
        if st.closing() {
            // cargo just exited and the background harvest has not closed its window
            // yet: give it a moment rather than lose the build-script runs.
            if tries < 50 {
                tries += 1;
                drop(lock);
                std::thread::sleep(Duration::from_millis(20));
                continue;
            }
            st.abandon_open_window();
            abandoned = true;
        }
        break (lock, st);
    };
    if !at.is_dir() {
        state::forget(store, target);
        return;
    }
    let source = Source {
        at,
        paths: DonorPaths::of(&[target, at], &st.worktree),
        // A worktree deleted already (its mount being released) left the lockfile of its
        // last build in the state.
        lock: read_lock(&st.worktree.join("Cargo.lock")).or_else(|| st.lock.clone()),
    };
    let mut changed = abandoned;
    for profile in profile_dirs(at) {
        changed |= harvest_profile(store, &mut st, &source, &profile, deadline, tally);
    }
    if !changed {
        return;
    }
    let _ = state::save(store, &mut st);
    publish_donor(store, &st);
}

/// Rewrites this target's donor record in the seed set of every rustc identity it
/// holds units of.
fn publish_donor(store: &Store, st: &TargetState) {
    let id = state::target_id(&st.target);
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let mut by_identity: BTreeMap<&str, Donor> = BTreeMap::new();
    for (profile, units) in &st.harvested {
        for h in units.values() {
            let (Some(identity), Some(seed)) = (&h.identity, &h.seed) else {
                continue;
            };
            let donor = by_identity.entry(identity).or_insert_with(|| Donor {
                id: id.clone(),
                t,
                ..Donor::default()
            });
            if let Some(env) = &seed.env {
                if let Some(p) = st.probes.iter().find(|p| &p.env == env) {
                    donor.envs.insert(env.clone(), p.env_map.clone());
                }
            }
            donor
                .profiles
                .entry(profile.clone())
                .or_default()
                .push(seed.clone());
        }
    }
    for (identity, donor) in by_identity {
        let _ = record::put_donor(store, identity, donor);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_whole_paths_are_relocated() {
        let text = b"/w/a/target/debug/x.d: /w/a/target2/y /w/a/target\n";
        let out = replace_path(text, "/w/a/target", "@T@");
        assert_eq!(out, b"@T@/debug/x.d: /w/a/target2/y @T@\n".to_vec());
    }

    #[test]
    fn a_needle_across_two_reads_is_found() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("big");
        let mut bytes = vec![b'x'; (1 << 20) - 3];
        bytes.extend_from_slice(b"/donor/target/out");
        std::fs::write(&p, &bytes).unwrap();
        let f = [Finder::new(b"/donor/target")];
        assert!(file_contains(&p, &f).unwrap());
        let g = [Finder::new(b"/other")];
        assert!(!file_contains(&p, &g).unwrap());
    }

    #[test]
    fn a_dep_info_names_its_package() {
        let dir = tempfile::tempdir().unwrap();
        let pkg = dir.path().join("reg/serde-1.0.0");
        std::fs::create_dir_all(pkg.join("src")).unwrap();
        std::fs::write(
            pkg.join("Cargo.toml"),
            "[package]\nname = \"serde\"\nversion = \"1.0.0\"\n",
        )
        .unwrap();
        let d = dir.path().join("serde.d");
        std::fs::write(
            &d,
            format!("/t/deps/libserde.rlib: {}/src/lib.rs\n", pkg.display()),
        )
        .unwrap();
        let found = package_of(&d, &mut HashMap::new()).unwrap();
        assert_eq!((found.0.as_str(), found.1.as_str()), ("serde", "1.0.0"));
        std::fs::write(&d, "/t/deps/libapp.rlib: app/src/lib.rs\n").unwrap();
        assert_eq!(
            package_of(&d, &mut HashMap::new()),
            Err(NotHarvested::PathPackage)
        );
    }
}
