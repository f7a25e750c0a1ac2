//! The one compile pipeline, for every language:
//!
//! ```text
//!  direct key? ──► manifest ──► record whose inputs still match (stat memo)
//!       │                              │ result key
//!       ▼ miss                         ▼
//!  key ahead of compiling? ──────► entry ──► verify blobs ──► restore or place ──► hit
//!       │ miss                                                (one "outputs to place" list)
//!       ▼
//!  remote import ──► look up again ──► hit
//!       │ miss
//!       ▼
//!  lock the key ──► look up again (a peer may have just stored it) ──► hit
//!       │ miss
//!       ▼
//!  compile (under the input recorder) ──► inputs ──► result key
//!          ──► blobs, entry, manifest record
//!          ──► queue upload, turn mounted outputs into placements, gc
//! ```
//!
//! A language plugs in through [`Language`]: how its calls are keyed, where
//! their outputs go, how stored text is rewritten for a worktree, and what a
//! compile read. Rust keys directly (a manifest per direct key); C/C++ keys
//! by a direct key too where the recorder runs, and by its preprocessed
//! source. What a compile read comes back from [`Language::observed_inputs`]
//! as data: what the recorder saw (`observe.rs`), or, without a complete
//! recording, what dep-info and strict inference name. The manifest stores
//! it and a hit validates every field in [`inputs_match`] (a call that
//! observes trusts only observed or fallback records: `trusted`).
//!
//! Owns: lookup order, locking, blob verification, restore/placement,
//! storing, and the recording of every outcome. Must never: serve an entry
//! whose blobs do not hash to their names, or let a failure of its own
//! change the compiler's exit status or output.

use std::collections::BTreeMap;
use std::ffi::{OsStr, OsString};
use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, SystemTime};

use kache_platform::process::Forked;
use kache_platform::{FileLock, HardlinkPolicy, LockMode};
use kache_wrapper::paths::has_tokens;

use super::exec::{self, Captured};
use super::observe::{self, Recording};
use super::outcome::{MissReason, NotStored, Outcome, Passthrough};
use super::path_local;
use super::Call;
use crate::log;
use crate::remote;
use crate::stats::Counter;
use crate::store::manifest::FoundBy;
use crate::store::{memo, Entry, ManifestMiss, OpenedBlobs, OutputFile, Record, RestoreReport};

/// How long a compile waits for a peer compiling the same key.
const LOCK_WAIT: Duration = Duration::from_secs(600);

pub use super::inputs::Observed;

/// A key and the digests of its groups (what `why-miss` compares).
pub type KeyAndGroups = (String, BTreeMap<String, String>);

/// Where one stored output goes in this call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Dest {
    /// Placed as stored (reflink, hardlink, copy, or by reference in a
    /// kache mount).
    Place {
        path: PathBuf,
        hardlink: HardlinkPolicy,
    },
    /// Text rewritten for this worktree ([`Language::rewrite`]), written as
    /// a plain file.
    Rewrite { path: PathBuf },
}

/// One output of a successful compile, to store.
pub struct Produced {
    /// The name the entry knows it by.
    pub name: String,
    pub content: Content,
}

pub enum Content {
    /// A file the compiler wrote (stored by clone or copy).
    File { path: PathBuf, executable: bool },
    /// Text already in stored (token) form.
    Text(Vec<u8>),
}

/// A language adapter: everything the pipeline does not know about one
/// compiler's calls. Made by the adapter's parse step, which has already
/// refused what cannot be cached.
pub trait Language {
    /// The name events and `why-miss` know the call by (crate or source).
    fn unit(&self) -> String;

    /// A key from what is known before compiling, looked up through its
    /// manifest (the recorded inputs decide the result key). `None` when the
    /// language has no direct mode.
    fn direct_key(&mut self, _call: &mut Call) -> Result<Option<String>, Passthrough> {
        Ok(None)
    }

    /// A result key that can be computed without compiling (C/C++: from the
    /// preprocessed source), asked only after the direct lookup missed.
    fn key_ahead(&mut self, _call: &mut Call) -> Result<Option<String>, Passthrough> {
        Ok(None)
    }

    /// Absolute path text → token form (stored records, text, diagnostics).
    fn tokenize(&self, text: &str) -> String;

    /// Token form → this worktree's paths.
    fn expand(&self, text: &str) -> String;

    /// Where each output of `entry` goes (in entry order), or why the entry
    /// does not fit this call.
    fn destinations(&self, entry: &Entry) -> Result<Vec<Dest>, MissReason>;

    /// A stored text output as this worktree needs it, or why it cannot be
    /// served (a dep file naming a path that does not exist here).
    fn rewrite(&self, stored: &[u8]) -> Result<Vec<u8>, MissReason>;

    /// Stored diagnostics as this worktree prints them (by default
    /// rewritten like any stored text).
    fn replay_stderr(&self, stored: &[u8]) -> Result<Vec<u8>, MissReason> {
        self.rewrite(stored)
    }

    /// Files the real compile writes (read-only restored ones are unlinked
    /// first, so the compiler can replace them).
    fn written_paths(&self) -> Vec<PathBuf>;

    /// The real compile.
    fn command(&self) -> Command;

    /// What the successful compile `run` read, which a later call must find
    /// unchanged to hit: from `recording` when the compile ran under the
    /// input recorder, else inferred (dep-info, strict inference). Files
    /// changed since `started` refuse. `None`: no manifest record (a
    /// language whose key ahead already covers everything read, or that
    /// cannot prove what a direct hit would need).
    fn observed_inputs(
        &mut self,
        _call: &mut Call,
        _run: &Captured,
        _started: SystemTime,
        _recording: Option<Recording>,
    ) -> Result<Option<Observed>, NotStored> {
        Ok(None)
    }

    /// Why no manifest record of the direct key can serve this call, when
    /// the key-ahead step found out (C/C++: time macros, whose expansion no
    /// recorded input holds): the label of the fallback in `kache report`.
    fn direct_refusal(&self) -> Option<&'static str> {
        None
    }

    /// What the key-ahead step itself was seen to read (C/C++: the
    /// preprocessor run), for a manifest record of the direct key after a
    /// hit through the key ahead. `None` when it was not observed.
    fn seen_ahead(&mut self) -> Option<Observed> {
        None
    }

    /// Directories whose contents the key covers otherwise (rustc's
    /// sysroot: the compiler identity), left out of a recording.
    fn unobserved_roots(&mut self, _call: &mut Call) -> Vec<PathBuf> {
        Vec::new()
    }

    /// The worktree's roots as the compile names them (what a recording
    /// reports a path through a linked root under).
    fn spelled_roots(&self) -> Vec<PathBuf> {
        Vec::new()
    }

    /// The value of variable `name` that the real compile would be given
    /// (what a recorded read is compared with on a hit).
    fn compile_env(&self, name: &str) -> Option<OsString> {
        std::env::var_os(name)
    }

    /// The result key of a compile with direct key `direct` that read
    /// `observed`, with its key groups (for `why-miss`). Asked only when no
    /// key was known ahead, so a language with a key ahead never is.
    fn result_key(&self, _direct: &str, _observed: &Observed) -> Option<KeyAndGroups> {
        None
    }

    /// What to store of a successful compile.
    fn produced(&self, run: &Captured) -> Result<Vec<Produced>, NotStored>;

    /// Diagnostics in stored form.
    fn stored_stderr(&self, run: &Captured) -> Result<Vec<u8>, NotStored>;

    /// Free-form facts kept with the entry (`kache debug`).
    fn meta(&self, groups: &BTreeMap<String, String>) -> serde_json::Value;

    /// Whether later cached compiles read this language's outputs as
    /// inputs (an rlib is another crate's extern): then a hit memoizes the
    /// digest of each output it placed, so keying them costs no hashing. A
    /// C object is read by a link or an archiver, never by a cached compile,
    /// and the memo would cost every hit a file creation.
    fn outputs_read_by_later_compiles(&self) -> bool {
        true
    }

    /// The directory the outputs go to (where a kache mount is looked for).
    fn out_dir(&self) -> &Path;

    /// When a failed compile is an answer rather than a broken build (a
    /// build script asking whether a feature compiles): the passthrough it
    /// is recorded as, instead of a miss.
    fn expected_failure(&self) -> Option<Passthrough> {
        None
    }

    /// The absolute roots (name, path) the key leaves out so that worktrees
    /// share entries. Outputs found to hold one after a compile make the
    /// result path-local. Empty for a language whose key keeps every path.
    fn path_roots(&self) -> Vec<(String, String)> {
        Vec::new()
    }
}

/// The keys a call is looked up by.
#[derive(Debug, Default)]
struct Keys {
    direct: Option<String>,
    ahead: Option<String>,
    /// The direct key's manifest as the first lookup found it (see
    /// [`Store::manifest_identity`](crate::store::Store::manifest_identity)): looking again
    /// (after the key ahead, under the lock) re-checks its records only if it was replaced.
    manifest_seen: Option<(Option<(u64, u64)>, MissReason)>,
}

impl Keys {
    /// The key whose lock serializes identical compiles: the key ahead when there is one.
    /// It names the result itself, while two calls making the same result may have different
    /// direct keys (a C compile run in a registry crate's directory writing into each
    /// worktree's target has one per worktree), and they must still compile once.
    fn lock_key(&self) -> Option<&str> {
        self.ahead.as_deref().or(self.direct.as_deref())
    }
}

/// Runs one cacheable call: hit, or compile and store. `compiler` and
/// `args` are what a passthrough runs.
pub fn run<L: Language>(call: &mut Call, lang: &mut L, compiler: &OsStr, args: &[OsString]) -> i32 {
    // A device, FIFO, directory or symlink where an output goes is written
    // through by the compiler; a restore would replace it, and what the
    // compiler wrote into it cannot be read back as the output.
    if lang.written_paths().iter().any(|p| !is_file_or_absent(p)) {
        return call.passthrough(compiler, args, Passthrough::OutputNotAFile);
    }
    let unit = lang.unit();
    let mount = crate::mount::mount_root_of(lang.out_dir()).map(Path::to_path_buf);
    let mut keys = Keys {
        direct: match lang.direct_key(call) {
            Ok(k) => k,
            Err(p) => return call.passthrough(compiler, args, p),
        },
        ahead: None,
        manifest_seen: None,
    };
    if let Some(k) = &keys.direct {
        tracing::debug!(unit = %unit, key = %k, "direct key");
    }
    let mut first_miss = None;
    let mut direct_miss = None;
    if let Some(direct) = &keys.direct {
        match look_up_direct(call, &target(lang, &mount), direct) {
            Ok(served) => return hit(call, lang, &keys, &unit, served, false),
            Err(m) => {
                keys.manifest_seen = Some((m.manifest, m.reason.clone()));
                first_miss = Some(m.reason);
                direct_miss = Some(m.label);
            }
        }
    }
    let ahead = lang.key_ahead(call);
    if keys.direct.is_some() && matches!(ahead, Ok(Some(_)) | Err(_)) {
        // The call falls back from its direct key to the key ahead (C/C++:
        // the preprocessor ran), or to a passthrough the key-ahead step
        // decided: say why the direct lookup could not serve it. What the
        // language learnt while computing the key ahead (time macros: no
        // record can ever hold) explains it better than a missing manifest.
        call.direct_fallback = lang.direct_refusal().map(String::from).or(direct_miss);
    }
    keys.ahead = match ahead {
        Ok(k) => k,
        Err(p) => return call.passthrough(compiler, args, p),
    };
    if let Some(k) = &keys.ahead {
        tracing::debug!(unit = %unit, key = %k, "key ahead of compiling");
    }
    if keys.ahead.is_some() {
        match look_up(call, &target(lang, &mount), &keys) {
            Ok(served) => return hit(call, lang, &keys, &unit, served, false),
            Err(r) => first_miss = Some(r),
        }
    }
    let Some(lock_key) = keys.lock_key().map(String::from) else {
        // A language always yields one of the two keys; without either
        // there is nothing to look up or store under.
        let reason = first_miss.unwrap_or(MissReason::NoManifest);
        return compile(call, lang, &keys, &unit, reason, mount.as_deref(), compiler);
    };

    if import_from_remote(call, &keys) {
        if let Ok(served) = look_up(call, &target(lang, &mount), &keys) {
            return hit(call, lang, &keys, &unit, served, true);
        }
    }

    // One compile per key at a time; a peer that finished while we waited
    // has published the entry, so look again under the lock.
    let lock = FileLock::acquire_timeout(
        &call.store.lock_path(&lock_key),
        LockMode::Exclusive,
        LOCK_WAIT,
    )
    .ok()
    .flatten();
    if lock.is_none() {
        tracing::debug!(unit = %unit, "key lock not taken: compiling without it");
    }
    let reason = match look_up(call, &target(lang, &mount), &keys) {
        Ok(served) => return hit(call, lang, &keys, &unit, served, false),
        Err(r) => r,
    };
    let code = compile(call, lang, &keys, &unit, reason, mount.as_deref(), compiler);
    drop(lock);
    code
}

fn target<'a, L>(lang: &'a L, mount: &'a Option<PathBuf>) -> Target<'a, L> {
    Target {
        lang,
        mount: mount.as_deref(),
    }
}

/// Records a hit. A hit through the key ahead, when the key-ahead step was
/// observed, also records what it read under the direct key, so the next
/// call hits without it.
fn hit<L: Language>(
    call: &mut Call,
    lang: &mut L,
    keys: &Keys,
    unit: &str,
    served: Served,
    remote: bool,
) -> i32 {
    if let (Some(direct), Some(ahead), false) = (&keys.direct, &keys.ahead, served.direct) {
        if let Some(seen) = lang.seen_ahead() {
            let mut manifest = call.store.get_manifest(direct).unwrap_or_default();
            manifest.add(seen.record(ahead));
            let _ = call.store.put_manifest(direct, &manifest);
        }
    }
    let outcome = Outcome::Hit {
        bytes: served.bytes,
        remote,
        direct: served.direct,
    };
    call.record(&outcome, Some(unit));
    0
}

/// What a lookup served: the bytes provided, and whether through a manifest
/// record of the direct key (no preprocessor, no compiler) or through the
/// key ahead.
#[derive(Debug, Clone, Copy)]
struct Served {
    bytes: u64,
    direct: bool,
}

/// Asks the remote for the direct key's manifest, else the key known ahead's
/// entry; true when something usable was imported.
fn import_from_remote(call: &mut Call, keys: &Keys) -> bool {
    let asks = [
        (remote::Kind::Manifest, keys.direct.as_deref()),
        (remote::Kind::Entry, keys.ahead.as_deref()),
    ];
    for (kind, key) in asks {
        let Some(key) = key else { continue };
        let Some(o) = remote::import(&call.store, &call.ctx.config, kind, key) else {
            return false;
        };
        call.count_all(o.tally());
        if matches!(o, remote::Outcome::Imported { .. }) {
            tracing::debug!(?kind, key, "imported from the remote; looking up again");
            return true;
        }
    }
    false
}

/// Where a call's outputs go: its language adapter and the kache mount
/// holding its output directory, if any.
struct Target<'a, L> {
    lang: &'a L,
    mount: Option<&'a Path>,
}

/// Looks the call up by its keys; on success the outputs are in place and
/// the diagnostics replayed.
fn look_up<L: Language>(call: &mut Call, t: &Target<L>, keys: &Keys) -> Result<Served, MissReason> {
    let mut miss = MissReason::NoManifest;
    if let Some(direct) = &keys.direct {
        let now = call.store.manifest_identity(direct);
        match &keys.manifest_seen {
            // The records the first lookup refused, unchanged: one that did not hold then
            // may hold now only if its inputs changed back meanwhile, and missing that
            // costs a compile, never a wrong result.
            Some((seen, why)) if *seen == now => miss = why.clone(),
            _ => match look_up_direct(call, t, direct) {
                Ok(served) => return Ok(served),
                Err(m) => miss = m.reason,
            },
        }
    }
    match &keys.ahead {
        Some(key) => serve(call, t, key).map(|bytes| Served {
            bytes,
            direct: false,
        }),
        None => Err(miss),
    }
}

/// Why a direct lookup served nothing: the miss reason, and the finer label
/// `kache report` shows for a fallback to the key ahead (which input of the
/// newest record no longer holds).
struct DirectMiss {
    reason: MissReason,
    label: String,
    /// The identity of the manifest file whose records were refused (`None`: there was
    /// none, or it was damaged and removed).
    manifest: Option<(u64, u64)>,
}

/// Looks the call up through the manifest of its direct key: the first
/// record (newest first) whose inputs all hold is served.
fn look_up_direct<L: Language>(
    call: &mut Call,
    t: &Target<L>,
    direct: &str,
) -> Result<Served, DirectMiss> {
    let (manifest, identity) = match call.store.read_manifest(direct) {
        Ok(m) => m,
        Err(ManifestMiss::Absent) => return Err(DirectMiss::of(MissReason::NoManifest)),
        Err(ManifestMiss::Damaged) => return Err(DirectMiss::of(MissReason::BadManifest)),
    };
    let mut miss: Option<DirectMiss> = None;
    for rec in &manifest.records {
        let checked = match trusted(call, rec) {
            true => inputs_match(call, t.lang, rec).map_err(|what| format!("changed:{what}")),
            false => Err("untrusted-record".to_string()),
        };
        let why = match checked {
            Ok(()) => match serve(call, t, &rec.result) {
                Ok(bytes) => {
                    return Ok(Served {
                        bytes,
                        direct: true,
                    })
                }
                Err(r) => DirectMiss {
                    label: r.label().to_string(),
                    reason: r,
                    manifest: Some(identity),
                },
            },
            Err(label) => DirectMiss {
                reason: MissReason::InputsChanged,
                label,
                manifest: Some(identity),
            },
        };
        // The newest record's reason is the one a user can act on (what
        // changed since the last compile), unless an older record matched
        // and its entry could not be served.
        if miss.is_none() || why.reason != MissReason::InputsChanged {
            miss = Some(why);
        }
    }
    Err(miss.unwrap_or_else(|| DirectMiss {
        manifest: Some(identity),
        ..DirectMiss::of(MissReason::InputsChanged)
    }))
}

impl DirectMiss {
    fn of(reason: MissReason) -> DirectMiss {
        DirectMiss {
            label: reason.label().to_string(),
            reason,
            manifest: None,
        }
    }
}

/// Whether this call may serve `rec`. A call that observes its compiles
/// holds records to what was seen: one inferred where nobody observed
/// (`cache.observe = "off"`, or a machine without the recorder) may miss an
/// input a recording would have keyed, so it is not served. A fallback
/// record (the recorder ran and could not see everything) is: the same
/// compile here would fall back the same way.
fn trusted(call: &Call, rec: &Record) -> bool {
    !call.observe || rec.found_by != FoundBy::Inferred
}

/// True when `p` is a regular file (not through a symlink) or nothing.
fn is_file_or_absent(p: &Path) -> bool {
    match fs::symlink_metadata(p) {
        Ok(m) => m.file_type().is_file(),
        Err(e) => e.kind() == io::ErrorKind::NotFound,
    }
}

/// True when every input `rec` names is as it was: the roots of a
/// path-local record, variables by value (as the compile would be given
/// them), paths looked up absent still absent and present ones present,
/// links resolving the same way, files by content (through the stat memo:
/// only a file whose stat changed is hashed again; one memo vouches for the
/// whole set when no stat changed since it was last verified), listings
/// unchanged. Cheap checks first. `Err` names the kind of input that no
/// longer holds (the label `kache report` counts a fallback under).
fn inputs_match<L: Language>(call: &Call, lang: &L, rec: &Record) -> Result<(), &'static str> {
    let changed = |what: &'static str, name: &str| {
        tracing::debug!("record for {} does not hold: {what} {name}", rec.result);
        Err(what)
    };
    if rec.is_path_local() {
        let now = lang.path_roots();
        if !rec.local.iter().all(|held| now.contains(held)) {
            return changed("roots", "of a path-local result");
        }
    }
    for (name, want) in &rec.env {
        let now = match lang.compile_env(name) {
            Some(v) => match v.into_string() {
                Ok(v) => Some(v),
                // A value a record cannot hold cannot match one it does.
                Err(_) => return changed("variable", name),
            },
            None => None,
        };
        let now_form = now.map(|v| match want.as_deref().is_some_and(has_tokens) {
            true => lang.tokenize(&v),
            false => v,
        });
        if &now_form != want {
            return changed("variable", &format!("{name} {want:?} now {now_form:?}"));
        }
    }
    let path = |p: &str| call.ctx.cwd.join(lang.expand(p));
    // Files below the worktree (token form) first: they are what an edit changes, so a
    // record of an earlier edit is refused after a few stats instead of hundreds.
    files_match(call, rec, true, &path).or_else(|p| changed("file", p))?;
    if let Some(p) = observe::first_present(rec.absent.iter().map(|p| (p, path(p)))) {
        return changed("now-present", p);
    }
    if let Some(p) = rec.present.iter().find(|p| !path(p).exists()) {
        return changed("now-absent", p);
    }
    let resolves = |(p, t): &&(String, String)| observe::resolves_to(&path(p), &path(t));
    if let Some((p, _)) = rec.links.iter().find(|l| !resolves(l)) {
        return changed("link", p);
    }
    files_match(call, rec, false, &path).or_else(|p| changed("file", p))?;
    let listed = |(d, digest): &&(String, String)| {
        observe::listing_digest(&path(d)).is_ok_and(|now| &now == digest)
    };
    match rec.listed.iter().find(|l| !listed(l)) {
        Some((d, _)) => changed("listing", d),
        None => Ok(()),
    }
}

/// True (`Ok`) when every file of `rec` below the worktree (`in_worktree`: token form) or
/// outside it holds the content recorded; else the first one that does not. One memo
/// vouches for a whole set when no stat changed since it was last verified; otherwise each
/// file through its own digest memo. The two sets are kept apart so a new worktree hashes
/// its own files and still finds the rest (the toolchain's, the same for every worktree)
/// verified.
fn files_match<'r>(
    call: &Call,
    rec: &'r Record,
    in_worktree: bool,
    path: &dyn Fn(&str) -> PathBuf,
) -> Result<(), &'r str> {
    let mut set = memo::FileSet::default();
    let mut files = Vec::new();
    for (p, hash, size) in rec
        .files
        .iter()
        .filter(|(p, ..)| has_tokens(p) == in_worktree)
    {
        let abs = path(p);
        let meta = match fs::metadata(&abs) {
            Ok(m) if m.len() == *size => m,
            _ => return Err(p),
        };
        set.add(&abs, &meta, hash);
        files.push((p, abs, meta, hash));
    }
    if files.is_empty() || memo::set_verified(&call.store, &set) {
        return Ok(());
    }
    for (p, abs, meta, hash) in files {
        match memo::file_digest_of(&call.store, &abs, &meta) {
            Ok((h, _)) if h == *hash => {}
            _ => return Err(p),
        }
    }
    memo::remember_set_verified(&call.store, &set);
    Ok(())
}

/// Serves entry `key`: verified, rewritten for this worktree, then placed.
fn serve<L: Language>(call: &mut Call, t: &Target<L>, key: &str) -> Result<u64, MissReason> {
    let lang = t.lang;
    let entry = call.store.get_entry(key).map_err(MissReason::Entry)?;
    let opened = call.store.open_blobs(&entry).map_err(MissReason::Entry)?;
    // Sizes are checked by open_blobs; content is checked through the digest
    // memo, which re-hashes any blob whose stat changed since it was last
    // hashed (a write into a blob always changes its ctime).
    for out in &entry.outputs {
        let path = call.store.blob_path(&out.blob);
        match memo::file_digest(&call.store, &path) {
            Ok((h, _)) if h == out.blob => {}
            _ => {
                tracing::debug!(blob = %out.blob, "blob does not hash to its name: removed");
                let _ = fs::remove_file(&path);
                return Err(MissReason::BlobCorrupt);
            }
        }
    }
    let dests = lang.destinations(&entry)?;
    // Everything that can refuse the entry is decided before anything is
    // written: a refused entry leaves the worktree as it was.
    let mut texts = Vec::new();
    for (out, dest) in entry.outputs.iter().zip(&dests) {
        if let Dest::Rewrite { path } = dest {
            let stored = fs::read(call.store.blob_path(&out.blob))
                .map_err(|_| MissReason::TextUnreadable)?;
            texts.push((path, lang.rewrite(&stored)?));
        }
    }
    let stderr = lang.replay_stderr(&entry.stderr)?;

    let to_place = outputs_to_place(&entry, &dests);
    let placed = restore(call, &entry, &opened, &to_place, t.mount)?;
    for (path, text) in texts {
        let _ = fs::remove_file(path);
        fs::write(path, text).map_err(|_| MissReason::TextUnwritable)?;
    }
    if lang.outputs_read_by_later_compiles() {
        for p in &to_place {
            memo::remember_output(&call.store, &p.path, &p.out.blob);
        }
    }
    if placed.hardlink_bytes > 0 {
        // A hardlink restore re-stamped the blob's inode; its content was
        // verified above, so refresh its memo instead of re-hashing next time.
        for p in &to_place {
            let blob = call.store.blob_path(&p.out.blob);
            memo::remember_output(&call.store, &blob, &p.out.blob);
        }
    }
    let _ = io::stdout().write_all(&entry.stdout);
    let _ = io::stdout().flush();
    let _ = io::stderr().write_all(&stderr);
    let _ = io::stderr().flush();
    Ok(placed.total_bytes() + placed.mount_bytes)
}

/// One stored output and where it goes.
struct ToPlace<'a> {
    /// Its position in the entry (and in the opened blobs).
    index: usize,
    out: &'a OutputFile,
    path: PathBuf,
    hardlink: HardlinkPolicy,
}

/// The outputs to place: those of `entry` whose destination is a placement
/// (text outputs are rewritten instead).
fn outputs_to_place<'a>(entry: &'a Entry, dests: &[Dest]) -> Vec<ToPlace<'a>> {
    let mut list = Vec::new();
    for (index, (out, d)) in entry.outputs.iter().zip(dests).enumerate() {
        if let Dest::Place { path, hardlink } = d {
            list.push(ToPlace {
                index,
                out,
                path: path.clone(),
                hardlink: *hardlink,
            });
        }
    }
    list
}

/// What a restore placed, per method.
#[derive(Default)]
struct Placed {
    report: RestoreReport,
    mount_bytes: u64,
}

impl std::ops::Deref for Placed {
    type Target = RestoreReport;
    fn deref(&self) -> &RestoreReport {
        &self.report
    }
}

/// The one restore: the outputs to place, by reference when they go into a
/// kache mount (one request; no bytes copied), otherwise by reflink,
/// hardlink or copy. A refused placement falls back to restoring.
fn restore(
    call: &mut Call,
    entry: &Entry,
    opened: &OpenedBlobs,
    to_place: &[ToPlace],
    mount: Option<&Path>,
) -> Result<Placed, MissReason> {
    if let Some(root) = mount {
        match place_in_mount(root, to_place) {
            Some(Ok(bytes)) => {
                tracing::debug!(
                    mount = %root.display(),
                    files = to_place.len(),
                    bytes,
                    "placed by reference in the mount"
                );
                call.count(Counter::MountBytes, bytes);
                call.count(Counter::MountFiles, to_place.len() as u64);
                return Ok(Placed {
                    mount_bytes: bytes,
                    ..Placed::default()
                });
            }
            Some(Err(e)) => {
                tracing::debug!(mount = %root.display(), "placement refused ({e}): restoring");
                call.count(Counter::MountErrors, 1);
            }
            None => {
                tracing::debug!(mount = %root.display(), "an output is outside it: restoring");
            }
        }
    }
    // In entry order: where each output goes, `None` for those not placed.
    let mut dests: Vec<Option<(PathBuf, HardlinkPolicy)>> = vec![None; entry.outputs.len()];
    for p in to_place {
        dests[p.index] = Some((p.path.clone(), p.hardlink));
    }
    let mut dests = dests.into_iter();
    let report = call
        .store
        .restore(entry, opened, |_| dests.next().flatten())
        .map_err(|e| {
            tracing::debug!("restore failed: {e}");
            MissReason::RestoreIo
        })?;
    tracing::debug!(
        files = report.files,
        reflink_bytes = report.reflink_bytes,
        hardlink_bytes = report.hardlink_bytes,
        copy_bytes = report.copy_bytes,
        "restored"
    );
    call.count(Counter::ReflinkBytes, report.reflink_bytes);
    call.count(Counter::HardlinkBytes, report.hardlink_bytes);
    call.count(Counter::CopyBytes, report.copy_bytes);
    call.count(Counter::RestoreFiles, report.files);
    Ok(Placed {
        report,
        mount_bytes: 0,
    })
}

/// Places outputs into the mount at `root` by reference (the only call into
/// the mount's placement). `None` when an output lies outside the mount.
fn place_in_mount(root: &Path, to_place: &[ToPlace]) -> Option<io::Result<u64>> {
    let outs: Vec<kache_fs::Placement> = to_place
        .iter()
        .map(|p| {
            Some(kache_fs::Placement {
                path: p.path.strip_prefix(root).ok()?.to_path_buf(),
                hash: p.out.blob.clone(),
                size: p.out.size,
                mode: p.out.mode,
            })
        })
        .collect::<Option<_>>()?;
    Some(crate::mount::place_outputs(root, &outs))
}

/// A miss: runs the compiler, stores what it produced, records the outcome.
fn compile<L: Language>(
    call: &mut Call,
    lang: &mut L,
    keys: &Keys,
    unit: &str,
    reason: MissReason,
    mount: Option<&Path>,
    compiler: &OsStr,
) -> i32 {
    let _ = kache_platform::remove_readonly_outputs(&lang.written_paths());
    let mut cmd = lang.command();
    let recording = call
        .observe
        .then(|| start_recording(call, &mut cmd))
        .flatten();
    let looked_up = call.started.elapsed();
    let started = SystemTime::now();
    let run = match exec::run_captured(cmd) {
        Ok(c) => c,
        Err(e) => {
            call.count(Counter::CompilerRuns, 1);
            log::error(&format!("cannot run {}: {e}", compiler.to_string_lossy()));
            call.record(&Outcome::Error, Some(unit));
            return 1;
        }
    };
    let code = exec::exit_code_of(&run.status);
    if code != 0 {
        if let Some(p) = lang.expected_failure() {
            // Counts its one compiler run itself.
            call.record(&Outcome::Passthrough(p), Some(unit));
            return code;
        }
    }
    call.count(Counter::CompilerRuns, 1);
    let compiled = SystemTime::now();
    let stored = match code {
        0 => {
            let recording = recording.map(|session| {
                let unobserved = lang.unobserved_roots(call);
                let spelled = lang.spelled_roots();
                session.finish(&observe::filter(&call.store, &unobserved, &spelled))
            });
            match store(call, lang, keys, &run, started, recording, mount) {
                Ok(Stored::Bytes(n)) => Ok(n),
                Ok(Stored::InBackground) => {
                    call.hand_over();
                    return code;
                }
                Err(e) => Err(e),
            }
        }
        _ => Err(NotStored::CompileFailed),
    };
    let took = |from: SystemTime, to: SystemTime| to.duration_since(from).unwrap_or_default();
    tracing::debug!(
        "{unit}: before the compiler {looked_up:?}, compiler {:?}, storing {:?}",
        took(started, compiled),
        took(compiled, SystemTime::now())
    );
    call.record(&Outcome::Miss { reason, stored }, Some(unit));
    code
}

/// Puts `cmd` under a new recording session of the store's recorder;
/// `None` (the compile then runs unobserved) when the recorder cannot be
/// installed or a session cannot be opened.
fn start_recording(call: &mut Call, cmd: &mut Command) -> Option<kache_recorder::Session> {
    let session = match observe::recorder(&call.store) {
        Ok(r) => r.session().ok()?,
        Err(e) => {
            tracing::debug!("{e}");
            return None;
        }
    };
    session.apply(cmd);
    Some(session)
}

/// Stores a successful compile: blobs, then the entry, then the manifest
/// record (so nothing ever references what is not there yet); then the
/// hooks. Returns the bytes stored.
fn store<L: Language>(
    call: &mut Call,
    lang: &mut L,
    keys: &Keys,
    run: &Captured,
    started: SystemTime,
    recording: Option<Recording>,
    mount: Option<&Path>,
) -> Result<Stored, NotStored> {
    match &recording {
        Some(Ok(_)) => call.count(Counter::Observed, 1),
        Some(Err(why)) => {
            observe::note_incomplete(why);
            call.count(Counter::ObserveFallbacks, 1);
        }
        None => {}
    }
    let mut observed = lang.observed_inputs(call, run, started, recording)?;
    let produced = lang.produced(run)?;
    for p in &produced {
        if let Content::File { path, .. } = &p.content {
            if !is_file_or_absent(path) {
                return Err(NotStored::OutputNotAFile);
            }
        }
    }
    let stderr = lang.stored_stderr(run)?;
    // Each output file is opened now, while it surely holds what the compile wrote, and is
    // read through that descriptor: a build that rewrites the path later makes a new file
    // (and is noticed if it writes into this one).
    let mut opened = Vec::with_capacity(produced.len());
    for p in &produced {
        opened.push(match &p.content {
            Content::File { path, .. } => {
                let f = fs::File::open(path).map_err(|_| NotStored::OutputMissing)?;
                let meta = f.metadata().map_err(|_| NotStored::OutputMissing)?;
                Some((f, meta))
            }
            Content::Text(_) => None,
        });
    }
    if let Some(lock) = background(call, mount, &opened) {
        // The outcome is recorded after cargo may be gone: find its build now.
        let build = kache_platform::process::build_id();
        match kache_platform::process::fork_to_background() {
            Ok(Forked::Parent) => return Ok(Stored::InBackground),
            Ok(Forked::Background) => {
                tracing::debug!(pid = std::process::id(), "storing in the background");
                call.background = Some(lock);
                call.build = build;
                test_delay();
            }
            Err(e) => tracing::debug!("storing before returning: {e}"),
        }
    }
    // Blobs first (named by content, whatever the key turns out to be): the
    // one read of each output that hashes and copies it also looks for the
    // worktree's roots in it, which decides the result key.
    let roots = lang.path_roots();
    let needles = path_local::needles(&roots);
    let mut search = path_local::Searcher::new(&needles, roots.len());
    search.feed(&run.stdout);
    search.end();
    let mut outputs = Vec::new();
    let mut bytes = 0;
    for (p, opened) in produced.into_iter().zip(opened) {
        let (blob, mode) = match (&p.content, opened) {
            // Already in token form: nothing to search.
            (Content::Text(t), _) => (call.store.put_blob_bytes(t)?, 0o644),
            (Content::File { path, executable }, Some((file, meta))) => {
                let blob = call
                    .store
                    .put_blob_from_file(&file, *executable, &mut |b| search.feed(b))?;
                search.end();
                // A write changes the size or the mtime. Not the ctime: cargo's hard link
                // of a binary into target/debug changes that, and only that.
                let now = file.metadata().map_err(|_| NotStored::OutputMissing)?;
                let (was, is) = (
                    kache_platform::file_signature(&meta),
                    kache_platform::file_signature(&now),
                );
                if (was.size, was.mtime_ns) != (is.size, is.mtime_ns) {
                    tracing::debug!(path = %path.display(), "written again before it was stored");
                    return Err(NotStored::OutputChanged);
                }
                memo::remember_output_as(&call.store, path, &meta, &blob.hash);
                bytes += blob.size;
                let exec_bits = if *executable { 0o111 } else { 0 };
                (blob, kache_platform::file_mode(&meta) | exec_bits)
            }
            (Content::File { .. }, None) => return Err(NotStored::OutputMissing),
        };
        outputs.push(OutputFile {
            name: p.name,
            blob: blob.hash,
            size: blob.size,
            mode,
        });
    }
    let local: Vec<(String, String)> = roots
        .into_iter()
        .zip(search.found())
        .filter_map(|(r, f)| f.then_some(r))
        .collect();
    tracing::debug!(bytes, "stored the outputs; roots they hold: {local:?}");
    if let Some(o) = &mut observed {
        o.local = local.clone();
    }
    let (result, groups) = match (&keys.ahead, &keys.direct, &observed) {
        (Some(k), _, _) => (k.clone(), BTreeMap::new()),
        (None, Some(d), Some(o)) => {
            observe::with_lookups(lang.result_key(d, o).ok_or(NotStored::NoResultKey)?, o)
        }
        (None, _, _) => return Err(NotStored::NoResultKey),
    };
    for (g, d) in &groups {
        if g != "direct" && g != "domain" {
            call.key_groups.insert(format!("result.{g}"), d.clone());
        }
    }
    let entry = Entry {
        outputs,
        exit_status: 0,
        stdout: run.stdout.clone(),
        stderr,
        meta: lang.meta(&groups),
    };
    call.store.put_entry(&result, &entry)?;
    if let (Some(direct), Some(observed)) = (&keys.direct, observed) {
        let mut manifest = call.store.get_manifest(direct).unwrap_or_default();
        manifest.add(observed.record(&result));
        call.store.put_manifest(direct, &manifest)?;
    }
    // A path-local result is right only where its roots are: never shared.
    let shared = local.is_empty().then(|| {
        remote::queue_upload(
            &call.store,
            &call.ctx.config,
            keys.direct.as_deref(),
            &result,
        )
    });
    if let Some(Some(u)) = shared {
        call.count_all(u.tally());
    }
    if let Some(root) = mount {
        dedup_into_mount(call, lang, &entry, root);
    }
    call.count(Counter::GcPendingBytes, bytes);
    crate::gc::maybe_collect(&call.store, call.ctx.config.max_size(), bytes);
    Ok(Stored::Bytes(bytes))
}

/// How [`store`] ended for the process that called it.
enum Stored {
    /// Stored: this many bytes of output files.
    Bytes(u64),
    /// A background copy of this process stores it and records the call's outcome; this
    /// process only returns the compiler's exit status.
    InBackground,
}

/// Output files at least this large (together) are stored after the call returns: a
/// linked debug binary of tens of MB costs about 90 ms to hash, copy and fsync, the
/// whole of what kache adds to an edit-rebuild loop's last step. Smaller outputs are
/// stored at once, which costs less than the fork.
const BACKGROUND_STORE_BYTES: u64 = 1 << 20;

/// Whether this call's outputs are stored in the background: large enough, allowed
/// (`cache.background_store`), and not in a kache mount (turning the outputs into
/// placements there replaces files by path, which must not happen after the build went
/// on). Returns the shared lock on the store's background marker, to be held by the
/// background side until it ends: `kache stats` and the other readers wait for it.
fn background(
    call: &Call,
    mount: Option<&Path>,
    opened: &[Option<(fs::File, fs::Metadata)>],
) -> Option<FileLock> {
    let bytes: u64 = opened.iter().flatten().map(|(_, m)| m.len()).sum();
    if mount.is_some() || bytes < BACKGROUND_STORE_BYTES || !call.ctx.config.background_store() {
        return None;
    }
    match call.store.background_lock() {
        Ok(l) => Some(l),
        Err(e) => {
            tracing::debug!("storing before returning: background marker: {e}");
            None
        }
    }
}

/// Test hook: `KACHE_TEST_BACKGROUND_DELAY_MS` holds a background store back this long,
/// so a test can act between the build's return and the store.
fn test_delay() {
    if let Some(ms) = std::env::var("KACHE_TEST_BACKGROUND_DELAY_MS")
        .ok()
        .and_then(|v| v.parse::<u64>().ok())
    {
        std::thread::sleep(Duration::from_millis(ms.min(60_000)));
    }
}

/// In a kache-mounted target, what the compiler just wrote sits in the
/// mount's upper directory while the same bytes are now blobs: replace those
/// files by placements so a miss costs the disk once, not twice. Measured on
/// the fixture workspace before this existed: a cold mounted build left
/// 25.3 MB in the upper directory, 100% of it identical to store blobs.
/// Readers that already opened an output (cargo pipelining) keep the old
/// inode; new opens see the same bytes through the placement. Best effort:
/// on failure the files simply stay in the upper directory.
fn dedup_into_mount<L: Language>(call: &mut Call, lang: &L, entry: &Entry, root: &Path) {
    let Ok(dests) = lang.destinations(entry) else {
        return;
    };
    let to_place = outputs_to_place(entry, &dests);
    // Placement stamps "now"; put back the times the compiler gave the
    // files, or a dependent that already compiled against an rmeta
    // (pipelining) would look older than its dependency to cargo.
    let times: Vec<Option<SystemTime>> = to_place
        .iter()
        .map(|p| fs::metadata(&p.path).and_then(|m| m.modified()).ok())
        .collect();
    match place_in_mount(root, &to_place) {
        Some(Ok(bytes)) => {
            tracing::debug!(
                mount = %root.display(),
                bytes,
                "compiled outputs turned into placements"
            );
            call.count(Counter::MountDeduplicatedBytes, bytes);
            for (p, t) in to_place.iter().zip(times) {
                let reset =
                    t.and_then(|t| fs::File::open(&p.path).and_then(|f| f.set_modified(t)).ok());
                if reset.is_none() {
                    call.count(Counter::MountDedupErrors, 1);
                }
            }
        }
        Some(Err(e)) => {
            tracing::debug!(mount = %root.display(), "outputs stay in the upper directory: {e}");
            call.count(Counter::MountDedupErrors, 1);
        }
        None => {}
    }
}
