//! Seeding a new target directory: choose the units, check them, place them.
//!
//! Units come from one donor of the seed set of this rustc identity (the one with the
//! most units of this `Cargo.lock`'s packages, newest on a tie) and must match a
//! registry or git package of the lockfile exactly (name, version, source, checksum),
//! suit the lane, and, for a build-script run, come from a build with this build's
//! environment. Each unit seed is read back and validated, its blobs opened and
//! checked against their hashes; a unit whose dependencies are not all seeded is
//! dropped (cargo would rebuild it anyway). Any doubt skips the unit.
//!
//! Times: cargo compares a unit's outputs with its dependencies' outputs and its
//! dep-info with the files it lists, by mtime. Each unit keeps the relative mtimes of
//! its own files (scaled down when the unit took long, order and equalities kept), and
//! units are laid out one after the other along the dependency graph (a unit after all
//! of its dependencies), ending two seconds in the past so anything compiled now is
//! newer than every seeded file whatever the clock granularity.
//!
//! Placing: in a kache mount, placements (no bytes copied); otherwise reflink, else
//! copy, never a hardlink (each target needs its own mtimes, and a build script may
//! rewrite its files in place). Every unit's data first; then the fingerprint hash
//! files, each written to a temporary name and renamed, last of all: a seeding killed
//! at any point leaves only units cargo does not trust (no hash file) or complete ones.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use kache_platform::{FileLock, HardlinkPolicy, LockMode};

use super::cargo::{Lane, LockedPackage};
use super::outcome::{Method, Skip};
use super::record::{self, Donor, Kind, SeedSet, UnitRef, UnitSeed, TARGET_TOKEN};
use super::report::Report;
use super::state::{self, PendingUnit};
use crate::store::Store;

/// Longest time span kept inside one unit; longer ones are scaled down to it.
const MAX_UNIT_SPAN_NS: i64 = 100_000_000;
/// Gap between a unit and the units depending on it.
const GAP_NS: i64 = 1_000_000;
/// How far in the past the newest seeded file lies.
const END_BEFORE_NOW: Duration = Duration::from_secs(2);
/// Placements per request to a mount.
const MOUNT_BATCH: usize = 512;

/// The build environment a seeding may rely on.
pub enum BuildEnv<'a> {
    /// Known (at cargo's first probe): digest and compared environment.
    Known(&'a str, &'a BTreeMap<String, String>),
    /// Not known yet (at mount time): units that need it are recorded as pending and
    /// checked at the first build's probe. The digest, if any, is a guess (the
    /// environment of the command that mounted) used only to choose a donor.
    Pending(Option<&'a str>),
}

pub struct Request<'a> {
    pub target: &'a Path,
    pub profiles: Vec<String>,
    /// `None`: every lane (mount time, when the command is not known yet).
    pub lane: Option<Lane>,
    pub lock: &'a BTreeSet<LockedPackage>,
    pub identity: &'a str,
    pub env: BuildEnv<'a>,
    /// Variables proc-macros read (`rust.env`): compile units need the donor's values.
    pub declared: &'a [String],
}

/// What a unit seeded before the build environment was known needs of it: the
/// environment digest (build-script runs) and the donor's declared variables.
type EnvNeeds = (Option<String>, BTreeMap<String, Option<String>>);

/// A unit chosen for placing, with its seed read back and its blobs checked.
struct Chosen {
    r: UnitRef,
    seed: UnitSeed,
}

fn in_lock(lock: &BTreeSet<LockedPackage>, p: &LockedPackage) -> bool {
    p.source.is_some() && lock.contains(p)
}

fn lane_units(units: &[UnitRef], lane: Option<Lane>) -> Vec<&UnitRef> {
    match lane {
        None => units.iter().collect(),
        Some(Lane::Build) => units.iter().filter(|u| !u.check_only).collect(),
        Some(Lane::Check) => {
            // `cargo check` builds libraries as metadata, but proc-macros, build scripts
            // and their dependencies fully: keep those and what they depend on.
            let by_fp: HashMap<&str, &UnitRef> = units
                .iter()
                .flat_map(|u| u.fp.iter().map(move |h| (h.as_str(), u)))
                .collect();
            let mut keep: HashSet<&str> = HashSet::new();
            let mut stack: Vec<&UnitRef> = units
                .iter()
                .filter(|u| u.check_only || u.kind != Kind::Lib)
                .collect();
            while let Some(u) = stack.pop() {
                if keep.insert(u.dir.as_str()) {
                    stack.extend(u.deps.iter().filter_map(|d| by_fp.get(d.as_str())));
                }
            }
            units
                .iter()
                .filter(|u| keep.contains(u.dir.as_str()))
                .collect()
        }
    }
}

/// The donor with the most units of this lockfile's packages for `profile` built in
/// this build's environment (a donor built with other RUSTFLAGS, say, holds units
/// cargo would not use here), then with the most such units at all, newest on a tie.
fn best_donor<'a>(set: &'a SeedSet, profile: &str, req: &Request) -> Option<&'a Donor> {
    let same_env = |u: &UnitRef| match req.env {
        BuildEnv::Known(digest, _) | BuildEnv::Pending(Some(digest)) => {
            u.env.as_deref() == Some(digest)
        }
        BuildEnv::Pending(None) => false,
    };
    let mut best: Option<(&Donor, (usize, usize))> = None;
    for d in &set.donors {
        let Some(units) = d.profiles.get(profile) else {
            continue;
        };
        let matching: Vec<&UnitRef> = lane_units(units, req.lane)
            .into_iter()
            .filter(|u| in_lock(req.lock, &u.pkg))
            .collect();
        let score = (
            matching.iter().filter(|u| same_env(u)).count(),
            matching.len(),
        );
        if score.1 > 0 && best.is_none_or(|(_, b)| score > b) {
            best = Some((d, score));
        }
    }
    best.map(|(d, _)| d)
}

/// True when the environment unit `u` needs is this build's; `None` when it cannot be
/// told yet (mount time).
fn env_ok(u: &UnitRef, donor: &Donor, req: &Request, report: &mut Report) -> Option<bool> {
    let BuildEnv::Known(digest, now) = req.env else {
        return None;
    };
    if u.kind == Kind::Run && u.env.as_deref() != Some(digest) {
        if let Some(then) = u.env.as_ref().and_then(|e| donor.envs.get(e)) {
            report.env_differs.extend(super::env::differing(then, now));
        }
        return Some(false);
    }
    if !req.declared.is_empty() {
        let Some(then) = u.env.as_ref().and_then(|e| donor.envs.get(e)) else {
            return Some(false);
        };
        if req.declared.iter().any(|n| then.get(n) != now.get(n)) {
            return Some(false);
        }
    }
    Some(true)
}

/// Reads a unit seed back and checks its blobs against their hashes.
fn load(store: &Store, r: &UnitRef) -> Result<UnitSeed, Skip> {
    let seed = record::get_unit(store, r)?;
    for o in &seed.entry.outputs {
        let path = store.blob_path(&o.blob);
        match fs::metadata(&path) {
            Ok(m) if m.len() == o.size => {}
            Ok(_) => return Err(Skip::BlobSizeMismatch),
            Err(_) => return Err(Skip::BlobMissing),
        }
        // The digest memo re-hashes a blob whose stat changed since it was last hashed.
        match crate::store::memo::file_digest(store, &path) {
            Ok((h, _)) if h == o.blob => {}
            _ => return Err(Skip::BlobCorrupt),
        }
    }
    Ok(seed)
}

/// Drops units whose dependencies are not all chosen, until none is left to drop.
fn prune(units: &mut Vec<Chosen>, report: &mut Report) {
    loop {
        let have: HashSet<String> = units.iter().flat_map(|c| c.r.fp.clone()).collect();
        let before = units.len();
        units.retain(|c| c.r.deps.iter().all(|d| have.contains(d)));
        let dropped = (before - units.len()) as u64;
        if dropped == 0 {
            return;
        }
        report.skip(Skip::DependencyNotSeeded, dropped);
    }
}

/// Absolute mtime of every output of every unit (see the module docs).
fn layout(units: &[Chosen], end: SystemTime) -> Vec<Vec<SystemTime>> {
    let by_fp: HashMap<&str, usize> = units
        .iter()
        .enumerate()
        .flat_map(|(i, c)| c.r.fp.iter().map(move |h| (h.as_str(), i)))
        .collect();
    let spans: Vec<(i64, f64)> = units
        .iter()
        .map(|c| {
            let span = -c.seed.meta.mtimes.iter().copied().min().unwrap_or(0);
            let scale = if span > MAX_UNIT_SPAN_NS {
                MAX_UNIT_SPAN_NS as f64 / span as f64
            } else {
                1.0
            };
            (((span as f64) * scale) as i64, scale)
        })
        .collect();
    // Newest time of each unit, relative to an origin: after all its dependencies.
    let mut newest: Vec<Option<i64>> = vec![None; units.len()];
    fn visit(
        i: usize,
        units: &[Chosen],
        by_fp: &HashMap<&str, usize>,
        spans: &[(i64, f64)],
        newest: &mut Vec<Option<i64>>,
        depth: usize,
    ) -> i64 {
        if let Some(t) = newest[i] {
            return t;
        }
        let mut start = 0;
        if depth < 10_000 {
            for d in &units[i].r.deps {
                if let Some(&j) = by_fp.get(d.as_str()) {
                    if j != i {
                        start =
                            start.max(visit(j, units, by_fp, spans, newest, depth + 1) + GAP_NS);
                    }
                }
            }
        }
        let t = start + spans[i].0;
        newest[i] = Some(t);
        t
    }
    for i in 0..units.len() {
        visit(i, units, &by_fp, &spans, &mut newest, 0);
    }
    let last = newest.iter().flatten().copied().max().unwrap_or(0);
    let end_ns = state::time_ns(end);
    units
        .iter()
        .enumerate()
        .map(|(i, c)| {
            let top = end_ns - (last - newest[i].unwrap_or(last));
            let scale = spans[i].1;
            c.seed
                .meta
                .mtimes
                .iter()
                .map(|rel| state::from_ns(top + ((*rel as f64) * scale) as i64))
                .collect()
        })
        .collect()
}

/// Test hook: `KACHE_SEED_TEST_STALL=data:N` (or `fingerprints:N`) stops the seeding
/// after N files of that phase, as if the machine froze there, so a test can SIGKILL
/// it mid-way. Writes `$KACHE_DIR/seed-stalled` first.
fn maybe_stall(store: &Store, phase: &str, done: u64) {
    let Ok(spec) = std::env::var("KACHE_SEED_TEST_STALL") else {
        return;
    };
    if spec.split_once(':') == Some((phase, &done.to_string())) {
        let _ = fs::write(store.root().join("seed-stalled"), phase);
        std::thread::sleep(Duration::from_secs(600));
    }
}

fn expand(bytes: &[u8], target: &Path) -> Vec<u8> {
    let to = target.to_string_lossy();
    let mut out = Vec::with_capacity(bytes.len());
    let mut rest = bytes;
    while let Some(i) = memchr::memmem::find(rest, TARGET_TOKEN.as_bytes()) {
        out.extend_from_slice(&rest[..i]);
        out.extend_from_slice(to.as_bytes());
        rest = &rest[i + TARGET_TOKEN.len()..];
    }
    out.extend_from_slice(rest);
    out
}

fn set_mtime(path: &Path, t: SystemTime) -> io::Result<()> {
    File::open(path)?.set_modified(t)
}

/// The stamp a harvest would compute for unit `c` whose fingerprint files were placed
/// with mtimes `times`.
fn stamp_of(store: &Store, c: &Chosen, times: &[SystemTime]) -> Option<String> {
    let mut parts: Vec<(String, String)> = Vec::new();
    for &i in &c.seed.meta.fingerprints {
        let o = &c.seed.entry.outputs[i];
        let name = o.name.rsplit('/').next()?.to_string();
        let text = fs::read_to_string(store.blob_path(&o.blob)).ok()?;
        parts.push((
            name.clone(),
            super::harvest::stamp_part(&name, text.trim(), state::time_ns(times[i])),
        ));
    }
    parts.sort();
    Some(parts.into_iter().map(|(_, p)| p).collect())
}

/// Places the chosen units of one profile into a plain directory.
fn place_plain(
    store: &Store,
    target: &Path,
    pdir: &Path,
    units: &[Chosen],
    times: &[Vec<SystemTime>],
    report: &mut Report,
) -> io::Result<Vec<(String, UnitRef)>> {
    let mut placed = Vec::new();
    // The data files of every unit: (unit, output, twin to hardlink instead of copying).
    // cargo hardlinks a build script's executable under two names in its own directory:
    // so do we, rather than copy it twice.
    let mut jobs: Vec<(usize, usize)> = Vec::new();
    let mut twins: Vec<(usize, usize, usize)> = Vec::new();
    let mut made: HashSet<PathBuf> = HashSet::new();
    for (u, c) in units.iter().enumerate() {
        let meta = &c.seed.meta;
        for (i, o) in c.seed.entry.outputs.iter().enumerate() {
            if meta.fingerprints.contains(&i) {
                continue;
            }
            if let Some(parent) = record::join(pdir, &o.name).parent() {
                if made.insert(parent.to_path_buf()) {
                    fs::create_dir_all(parent)?;
                }
            }
            let twin = c.seed.entry.outputs[..i]
                .iter()
                .enumerate()
                .position(|(j, p)| {
                    p.blob == o.blob
                        && o.name.starts_with("build/")
                        && p.name.starts_with("build/")
                        && !meta.rewrite.contains(&j)
                        && !meta.fingerprints.contains(&j)
                });
            match twin {
                Some(j) => twins.push((u, i, j)),
                None => jobs.push((u, i)),
            }
        }
    }
    // Copies are the cost of seeding a plain target (ext4 cannot share extents): a few
    // threads, each with its own placer, keep the disk and the page cache busy.
    let workers = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .clamp(1, 4);
    let done = std::sync::atomic::AtomicU64::new(0);
    let place_one = |placer: &mut kache_platform::place::Placer, u: usize, i: usize| -> bool {
        let c = &units[u];
        let o = &c.seed.entry.outputs[i];
        let dest = record::join(pdir, &o.name);
        let blob = store.blob_path(&o.blob);
        let r = if c.seed.meta.rewrite.contains(&i) {
            fs::read(&blob).and_then(|b| {
                let _ = fs::remove_file(&dest);
                fs::write(&dest, expand(&b, target))
            })
        } else {
            File::open(&blob).and_then(|f| {
                placer
                    .place(&f, &blob, &dest, o.mode, HardlinkPolicy::Never)
                    .map(|_| ())
            })
        };
        let ok = r.and_then(|_| set_mtime(&dest, times[u][i])).is_ok();
        if ok {
            let n = done.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
            maybe_stall(store, "data", n);
        }
        ok
    };
    let failed: Vec<usize> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..workers)
            .map(|w| {
                let jobs = &jobs;
                let place_one = &place_one;
                scope.spawn(move || {
                    let mut placer = kache_platform::place::Placer::default();
                    jobs.iter()
                        .skip(w)
                        .step_by(workers)
                        .filter(|(u, i)| !place_one(&mut placer, *u, *i))
                        .map(|(u, _)| *u)
                        .collect::<Vec<usize>>()
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().unwrap_or_else(|_| (0..units.len()).collect()))
            .collect()
    });
    let mut ok = vec![true; units.len()];
    for u in failed {
        ok[u] = false;
    }
    for &(u, i) in &jobs {
        if ok[u] {
            report.files += 1;
            report.bytes += units[u].seed.entry.outputs[i].size;
        }
    }
    for (u, i, j) in twins {
        if !ok[u] {
            continue;
        }
        let outs = &units[u].seed.entry.outputs;
        let dest = record::join(pdir, &outs[i].name);
        let _ = fs::remove_file(&dest);
        if fs::hard_link(record::join(pdir, &outs[j].name), &dest).is_ok() {
            report.files += 1;
        } else {
            ok[u] = false;
        }
    }
    let mut done = 0;
    for (u, c) in units.iter().enumerate() {
        if !ok[u] {
            report.skip(Skip::PlaceError, 1);
            continue;
        }
        let mut all = true;
        for &i in &c.seed.meta.fingerprints {
            let o = &c.seed.entry.outputs[i];
            let dest = record::join(pdir, &o.name);
            let tmp = dest.with_file_name(format!(
                ".kache-seed-{}",
                dest.file_name()
                    .map(|n| n.to_string_lossy())
                    .unwrap_or_default()
            ));
            let r = fs::read(store.blob_path(&o.blob)).and_then(|b| {
                let mut f = File::create(&tmp)?;
                f.write_all(&b)?;
                f.set_modified(times[u][i])?;
                drop(f);
                fs::rename(&tmp, &dest)
            });
            if r.is_err() {
                let _ = fs::remove_file(&tmp);
                all = false;
                break;
            }
            report.files += 1;
            report.bytes += o.size;
            done += 1;
            maybe_stall(store, "fingerprints", done);
        }
        if all {
            report.units += 1;
            if let Some(stamp) = stamp_of(store, c, &times[u]) {
                placed.push((stamp, c.r.clone()));
            }
        } else {
            report.skip(Skip::PlaceError, 1);
        }
    }
    Ok(placed)
}

/// Places the chosen units of one profile into a kache mount, by reference.
fn place_mount(
    store: &Store,
    target: &Path,
    profile: &str,
    units: &[Chosen],
    times: &[Vec<SystemTime>],
    report: &mut Report,
) -> io::Result<Vec<(String, UnitRef)>> {
    let t0 = Instant::now();
    let mut data: Vec<(kache_fs::Placement, SystemTime)> = Vec::new();
    let mut fps: Vec<(kache_fs::Placement, SystemTime)> = Vec::new();
    let mut placed = Vec::new();
    for (u, c) in units.iter().enumerate() {
        for (i, o) in c.seed.entry.outputs.iter().enumerate() {
            let (hash, size) = if c.seed.meta.rewrite.contains(&i) {
                // The text with this target's paths becomes a blob of its own.
                let b = store.put_blob_bytes_unsynced(&expand(
                    &fs::read(store.blob_path(&o.blob))?,
                    target,
                ))?;
                (b.hash, b.size)
            } else {
                (o.blob.clone(), o.size)
            };
            let p = kache_fs::Placement {
                path: PathBuf::from(profile).join(&o.name),
                hash,
                size,
                mode: o.mode,
            };
            // Each file gets its laid-out mtime in the same request (the fingerprint
            // files' mtimes are never read by cargo: they let a later harvest of this
            // target recognise the units placed here).
            if c.seed.meta.fingerprints.contains(&i) {
                fps.push((p, times[u][i]));
            } else {
                data.push((p, times[u][i]));
            }
        }
        if let Some(stamp) = stamp_of(store, c, &times[u]) {
            placed.push((stamp, c.r.clone()));
        }
    }
    report.phase("prepare", t0);
    let t0 = Instant::now();
    for chunk in data.chunks(MOUNT_BATCH) {
        kache_fs::place_at(target, chunk)?;
    }
    report.phase("place_data", t0);
    report.files += data.len() as u64;
    report.bytes += data.iter().map(|(p, _)| p.size).sum::<u64>();
    maybe_stall(store, "data", data.len() as u64);
    // Last, the files cargo trusts a unit by: a seeding stopped before this point leaves
    // no unit cargo would take as built.
    maybe_stall(store, "fingerprints", 0);
    for chunk in fps.chunks(MOUNT_BATCH) {
        kache_fs::place_at(target, chunk)?;
    }
    report.files += fps.len() as u64;
    report.units += units.len() as u64;
    Ok(placed)
}

/// Seeds `req.profiles` of `req.target`, each only if cargo never built there.
pub fn seed(store: &Store, req: &Request) -> Report {
    let mounted = kache_fs::is_kache_mount(req.target);
    let mut report = Report {
        method: if mounted { Method::Mount } else { Method::Copy },
        ..Report::default()
    };
    let t = Instant::now();
    let set = record::get_set(store, req.identity);
    report.phase("set", t);
    if set.donors.is_empty() {
        report.skip(Skip::NoSeeds, 1);
        return report;
    }
    for profile in &req.profiles {
        if !record::is_profile_dir(profile) {
            continue;
        }
        let Some(donor) = best_donor(&set, profile, req) else {
            continue;
        };
        let pdir = record::join(req.target, profile);
        if fs::create_dir_all(&pdir).is_err() {
            report.skip(Skip::TargetUnwritable, 1);
            continue;
        }
        // cargo's own lock of the profile dir: a cargo that starts meanwhile waits.
        let Ok(Some(_cargo)) =
            FileLock::try_acquire(&pdir.join(".cargo-lock"), LockMode::Exclusive)
        else {
            report.skip(Skip::TargetBusy, 1);
            continue;
        };
        let fresh =
            fs::read_dir(pdir.join(".fingerprint")).map_or(true, |mut d| d.next().is_none());
        if !fresh {
            continue;
        }
        let t = Instant::now();
        let units = donor
            .profiles
            .get(profile)
            .map(Vec::as_slice)
            .unwrap_or(&[]);
        let mut chosen: Vec<Chosen> = Vec::new();
        let mut pending_env: HashMap<String, EnvNeeds> = HashMap::new();
        for u in lane_units(units, req.lane) {
            if !in_lock(req.lock, &u.pkg) {
                continue;
            }
            match env_ok(u, donor, req, &mut report) {
                Some(false) => {
                    report.skip(Skip::EnvDiffers, 1);
                    continue;
                }
                Some(true) => {}
                None => {
                    let declared = req
                        .declared
                        .iter()
                        .map(|n| {
                            let v = u
                                .env
                                .as_ref()
                                .and_then(|e| donor.envs.get(e))
                                .and_then(|m| m.get(n).cloned());
                            (n.clone(), v)
                        })
                        .collect();
                    let needs = if u.kind == Kind::Run {
                        u.env.clone()
                    } else {
                        None
                    };
                    pending_env.insert(u.dir.clone(), (needs, declared));
                }
            }
            match load(store, u) {
                Ok(seed) => chosen.push(Chosen { r: u.clone(), seed }),
                Err(why) => report.skip(why, 1),
            }
        }
        prune(&mut chosen, &mut report);
        if chosen.is_empty() {
            continue;
        }
        report.phase("check", t);
        let t = Instant::now();
        let times = layout(&chosen, SystemTime::now() - END_BEFORE_NOW);
        let placed = if mounted {
            place_mount(store, req.target, profile, &chosen, &times, &mut report)
        } else {
            place_plain(store, req.target, &pdir, &chosen, &times, &mut report)
        };
        report.phase("place", t);
        match placed {
            Ok(p) => {
                report.placed.insert(profile.clone(), p);
            }
            Err(_) => {
                report.skip(Skip::PlaceError, 1);
                continue;
            }
        }
        if matches!(req.env, BuildEnv::Pending(_)) {
            let pend = chosen
                .iter()
                .map(|c| {
                    let (env, declared) = pending_env.remove(&c.r.dir).unwrap_or_default();
                    PendingUnit {
                        unit: c.r.dir.clone(),
                        fingerprints: c
                            .seed
                            .meta
                            .fingerprints
                            .iter()
                            .map(|&i| c.seed.entry.outputs[i].name.clone())
                            .collect(),
                        fp: c.r.fp.clone(),
                        deps: c.r.deps.clone(),
                        env,
                        declared,
                    }
                })
                .collect();
            report.pending.insert(profile.clone(), pend);
        }
        report.profiles.push(profile.clone());
    }
    report
}

/// At the first build of a target seeded before its environment was known: unseeds
/// (removes the fingerprint files of) every unit whose build environment differs from
/// this build's, and every unit depending on one. Returns how many were unseeded.
pub fn check_pending(
    target: &Path,
    pending: &BTreeMap<String, Vec<PendingUnit>>,
    env_digest: &str,
    env_map: &BTreeMap<String, String>,
    differs: &mut BTreeSet<String>,
) -> u64 {
    let mut unseeded = 0;
    for (profile, units) in pending {
        let pdir = record::join(target, profile);
        let mut bad: HashSet<String> = HashSet::new();
        for u in units {
            let env_wrong = u.env.as_deref().is_some_and(|e| e != env_digest);
            let declared_wrong = u.declared.iter().any(|(n, v)| v.as_ref() != env_map.get(n));
            if env_wrong || declared_wrong {
                bad.extend(u.fp.iter().cloned());
                if declared_wrong {
                    differs.extend(
                        u.declared
                            .iter()
                            .filter(|(n, v)| v.as_ref() != env_map.get(*n))
                            .map(|(n, _)| n.clone()),
                    );
                }
            }
        }
        // Everything depending on an unseeded unit goes too.
        loop {
            let before = bad.len();
            for u in units {
                if u.deps.iter().any(|d| bad.contains(d)) {
                    bad.extend(u.fp.iter().cloned());
                }
            }
            if bad.len() == before {
                break;
            }
        }
        for u in units {
            if u.fp.iter().any(|h| bad.contains(h)) {
                for f in &u.fingerprints {
                    let _ = fs::remove_file(record::join(&pdir, f));
                }
                unseeded += 1;
            }
        }
    }
    unseeded
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{Entry, OutputFile};

    fn unit(dir: &str, fp: &str, deps: &[&str], mtimes: &[i64]) -> Chosen {
        let outputs = mtimes
            .iter()
            .enumerate()
            .map(|(i, _)| OutputFile {
                name: format!(".fingerprint/{dir}/f{i}"),
                blob: "0".repeat(64),
                size: 0,
                mode: 0o644,
            })
            .collect();
        Chosen {
            r: UnitRef {
                dir: dir.into(),
                key: "0".repeat(64),
                pkg: LockedPackage {
                    name: "x".into(),
                    version: "1.0.0".into(),
                    source: Some("registry+x".into()),
                    checksum: None,
                },
                kind: Kind::Lib,
                check_only: false,
                fp: vec![fp.into()],
                deps: deps.iter().map(|d| d.to_string()).collect(),
                env: None,
                bytes: 0,
            },
            seed: UnitSeed {
                entry: Entry {
                    outputs,
                    ..Entry::default()
                },
                meta: record::UnitMeta {
                    unit: dir.into(),
                    mtimes: mtimes.to_vec(),
                    rewrite: vec![],
                    fingerprints: vec![0],
                },
            },
        }
    }

    #[test]
    fn every_unit_lies_after_its_dependencies_and_keeps_its_inner_order() {
        let a = "aaaaaaaaaaaaaaaa";
        let b = "bbbbbbbbbbbbbbbb";
        let c = "cccccccccccccccc";
        // c depends on b, b on a; b took ten seconds (scaled down, order kept).
        let units = vec![
            unit("c-cccccccccccccccc", c, &[b], &[0, -5]),
            unit("a-aaaaaaaaaaaaaaaa", a, &[], &[-3, 0, -3]),
            unit(
                "b-bbbbbbbbbbbbbbbb",
                b,
                &[a],
                &[-10_000_000_000, 0, -4_000_000_000],
            ),
        ];
        let end = SystemTime::now();
        let t = layout(&units, end);
        let max = |i: usize| t[i].iter().max().copied().unwrap();
        let min = |i: usize| t[i].iter().min().copied().unwrap();
        assert!(min(2) > max(1), "b starts after a ends");
        assert!(min(0) > max(2), "c starts after b ends");
        assert_eq!(max(0), end, "the newest file is the end");
        // Inside b: order and equal times kept, span capped.
        assert!(t[2][0] < t[2][2] && t[2][2] < t[2][1]);
        let span = t[2][1].duration_since(t[2][0]).unwrap();
        assert!(span <= Duration::from_nanos(MAX_UNIT_SPAN_NS as u64));
        assert_eq!(t[1][0], t[1][2]);
    }

    #[test]
    fn a_unit_whose_dependency_is_not_seeded_is_dropped_with_its_dependents() {
        let mut units = vec![
            unit(
                "a-aaaaaaaaaaaaaaaa",
                "aaaaaaaaaaaaaaaa",
                &["ffffffffffffffff"],
                &[0],
            ),
            unit(
                "b-bbbbbbbbbbbbbbbb",
                "bbbbbbbbbbbbbbbb",
                &["aaaaaaaaaaaaaaaa"],
                &[0],
            ),
            unit("c-cccccccccccccccc", "cccccccccccccccc", &[], &[0]),
        ];
        let mut report = Report::default();
        prune(&mut units, &mut report);
        let left: Vec<&str> = units.iter().map(|c| c.r.dir.as_str()).collect();
        assert_eq!(left, vec!["c-cccccccccccccccc"]);
        assert_eq!(report.skipped[&Skip::DependencyNotSeeded], 2);
    }
}
