//! Seeded targets: a new worktree's first build finds the registry and git units that
//! other builds already finished in place, by reference in a kache mount, before cargo
//! looks, so cargo finds them Fresh and never calls the wrapper for them.
//!
//! Owns: harvesting finished units into the store ([`harvest`]), matching and placing
//! them into a new target dir ([`place`]), the environment comparison ([`env`]), what
//! seeding reads of cargo's command line and configuration ([`cargo`]), the seed
//! records in the store ([`record`]), the local bookkeeping of known targets
//! ([`state`]) and what is counted and logged ([`outcome`]). Hooks elsewhere: the
//! wrapper's compiler probes ([`at_probe`]), `kache mount` / `kache worktree add`
//! ([`at_mount`]), `kache worktree remove` and the release of a mount whose worktree is
//! gone ([`before_remove`]), and the background harvest after a build
//! ([`harvest_after_build`], `kache seed-harvest`).
//!
//! Must never: seed a path package (cargo trusts their source mtimes), a unit naming
//! the donor's paths outside what is provably relocatable, or a build-script run into
//! a build whose environment differs; seed a target cargo already built in; fail or
//! noticeably delay a build (every error skips the unit or the seeding), print to
//! stdout during a probe (cargo reads it).

pub mod cargo;
pub mod env;
pub mod harvest;
pub mod outcome;
pub mod place;
pub mod record;
pub mod report;
pub mod state;

use std::collections::BTreeMap;
use std::ffi::{OsStr, OsString};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use kache_platform::process::{self, Detach};

use self::outcome::{ms_since, Skip};
use self::report::Report;
use crate::config::Config;
use crate::env::Context;
use crate::stats::{Counter, Lang, Tally};
use crate::store::{memo, Store};

/// cargo's cache of rustc facts in a target dir (its absence makes cargo probe rustc);
/// also the name of the fence that keeps it absent while seeds await their check.
const PROBE_FENCE: &str = ".rustc_info.json";

/// How long a seeding waits for another process's harvest of the same donor (the one
/// started after the donor's build, typically a second or two after a cold build):
/// bounded, since a build must not wait on it for long.
const HARVEST_WAIT: Duration = Duration::from_secs(3);
/// Time a seeding may spend harvesting other targets first (the background harvest
/// after each build normally leaves nothing to do).
const HARVEST_BUDGET: Duration = Duration::from_secs(3);
/// The same two bounds when a mount is seeded (`kache mount`, `kache worktree add`): no build
/// waits then, and a build without its seeds costs more than this wait (a worktree made just
/// after another's first build finished meets that build's harvest still running: ~700 MiB
/// read for a 200-unit project).
const MOUNT_HARVEST_WAIT: Duration = Duration::from_secs(10);
/// How often the background harvest checks whether cargo is still running.
const WAIT_POLL: Duration = Duration::from_millis(20);

pub fn enabled(config: &Config) -> bool {
    config.bool("cache.seed")
}

/// True for cargo's compiler probes (`rustc -vV`, `rustc - --print=…`).
fn is_probe(args: &[String]) -> bool {
    args.iter()
        .any(|a| a == "-vV" || a == "-V" || a.starts_with("--print"))
}

/// Digest of a rustc's `-vV` text: the identity seeds are matched by.
fn identity_digest(vv: &str) -> String {
    blake3::hash(vv.as_bytes()).to_hex()[..32].to_string()
}

/// The identity of the rustc cargo is probing: the same `-vV` text, memoized the same way,
/// as the compiles' keys name (a rustc kache cannot identify is not seeded for).
fn probed_identity(store: &Store, compiler: &OsStr, tally: &mut Tally) -> Option<String> {
    let bin = crate::path_search::which(&compiler.to_string_lossy())?;
    let toolchain = std::env::var("RUSTUP_TOOLCHAIN").unwrap_or_default();
    let (vv, probed) = memo::tool_identity(store, &bin, &toolchain, || {
        let out = Command::new(compiler).arg("-vV").output()?;
        match out.status.success() {
            true => Ok(String::from_utf8_lossy(&out.stdout).into_owned()),
            false => Err(std::io::Error::other("rustc -vV failed")),
        }
    })
    .ok()?;
    if probed {
        tally.add(Lang::Rust, Counter::CompilerRuns, 1);
    }
    Some(identity_digest(&vv))
}

/// The compared environment of this process for a build in `ws` / `target`.
fn current_env(ws: &Path, target: &Path) -> (String, BTreeMap<String, String>) {
    let roots = [
        (ws.to_string_lossy().into_owned(), "@WS@"),
        (target.to_string_lossy().into_owned(), "@TARGET@"),
    ];
    let map = env::fingerprint(env::process_vars(), &roots);
    (env::digest_of(&map), map)
}

/// cargo's `CACHEDIR.TAG`: cargo writes it only into a target dir it creates itself,
/// and the wrapper recognises a target dir by it.
fn ensure_cachedir_tag(target: &Path) {
    let tag = target.join("CACHEDIR.TAG");
    if !tag.exists() {
        let _ = std::fs::write(
            &tag,
            "Signature: 8a477f597d28d172789f06886806bc55\n\
             # This file is a cache directory tag created by cargo.\n\
             # For information about cache directory tags see https://bford.info/cachedir/\n",
        );
    }
}

/// Harvests every known target but `except`, within `budget`.
fn harvest_known(
    store: &Store,
    except: &Path,
    budget: Duration,
    wait: Duration,
    tally: &mut Tally,
) {
    let deadline = Instant::now() + budget;
    for t in state::known_targets(store) {
        if t == except {
            continue;
        }
        if Instant::now() > deadline {
            tally.add_store(Counter::SeedHarvestDeferred, 1);
            break;
        }
        harvest::harvest_target(store, &t, &t, wait, Some(deadline), tally);
    }
}

/// Counts a seeding and appends its event, from the one report (nothing when it did
/// nothing).
fn record(store: &Store, tally: &mut Tally, build: Option<&str>, report: &Report, ms: u64) {
    if report.is_empty() {
        return;
    }
    tally.extend(report.tally());
    let mut e = report.event(ms);
    e.t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    e.build = build.map(String::from);
    crate::events::append(store.root(), &e);
}

/// Starts the background harvest of `target` after cargo process `build` exits.
fn spawn_harvest_after(store: &Store, target: &Path, build: &str, cwd: &Path) {
    let Ok(exe) = std::env::current_exe() else {
        return;
    };
    let mut cmd = Command::new(exe);
    cmd.arg("seed-harvest")
        .arg("--target")
        .arg(target)
        .arg("--after-build")
        .arg(build)
        .env("KACHE_DIR", store.root())
        .current_dir(cwd)
        // cargo reads the probe's stdout to its end: the harvest must not hold it open.
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    // Out of reach of the terminal's Ctrl-C, and without cargo's jobserver pipe.
    process::detach(&mut cmd, Detach::Group);
    if let Ok(mut child) = cmd.spawn() {
        // Reaped by whoever adopts it once this wrapper call exits.
        std::thread::spawn(move || child.wait());
    }
}

/// The wrapper's hook on cargo's compiler probes, which cargo makes before any
/// freshness check (and only when the target dir's rustc facts are not cached, which
/// is the case for a new target dir). Records the build (time, rustc, environment) for
/// the harvest, starts the background harvest for after the build, checks units seeded
/// at mount time against this build's environment, and seeds a new target dir. What it
/// did is logged as one event; its counters are returned, for the wrapper call to add.
pub fn at_probe(ctx: &Context, store: &Store, compiler: &OsStr, args: &[OsString]) -> Tally {
    let mut tally = Tally::default();
    let args: Vec<String> = args
        .iter()
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    if is_probe(&args) && enabled(&ctx.config) {
        seed_at_probe(ctx, store, compiler, &mut tally);
    }
    tally
}

fn seed_at_probe(ctx: &Context, store: &Store, compiler: &OsStr, tally: &mut Tally) {
    let started = Instant::now();
    let Some(build) = process::build_id() else {
        return;
    };
    let Some(argv) = build
        .split('-')
        .next()
        .and_then(|p| p.parse::<u32>().ok())
        .and_then(process::args_of)
    else {
        return;
    };
    let cmd = cargo::parse_command(&argv);
    let cwd = &ctx.cwd;
    let Some(ws) = cargo::workspace_root(cwd, cmd.manifest_path.as_deref()) else {
        return;
    };
    let Some(target) = cargo::target_dir(cwd, &ws, &cmd) else {
        return;
    };
    let identity = cmd
        .lane
        .and_then(|_| probed_identity(store, compiler, tally));
    let Some(lock) = state::lock(store, &target, HARVEST_WAIT) else {
        return;
    };
    let mut st = state::load(store, &target);
    if st.probes.last().and_then(|p| p.build.as_deref()) == Some(build.as_str()) {
        return; // cargo probes more than once per build; the first one did the work.
    }
    let new_target = !target.join(PROBE_FENCE).is_file();
    let mut report = Report::default();
    let (env_digest, env_map) = current_env(&ws, &target);
    // Units seeded at mount time that need this build's environment: checked first,
    // whatever cargo is about to do.
    let pending = std::mem::take(&mut st.pending);
    if !pending.is_empty() {
        let n = place::check_pending(
            &target,
            &pending,
            &env_digest,
            &env_map,
            &mut report.env_differs,
        );
        report.skip(Skip::EnvDiffers, n);
    }
    if cmd.lane.is_none() {
        // `cargo metadata` (rust-analyzer runs it often) and friends probe rustc too but
        // build nothing (an alias's profile cannot be told). What differs from this
        // environment is withdrawn already; the rest waits for the first build's own
        // environment (the probe fence keeps every command probing until then).
        if !pending.is_empty() {
            st.pending = pending;
            let _ = state::save(store, &mut st);
        }
        if new_target && !cmd.subcommand.as_deref().is_some_and(cargo::builds_nothing) {
            report.skip(Skip::UnknownCommand, 1);
        }
        record(store, tally, Some(&build), &report, ms_since(started));
        return;
    }
    if !pending.is_empty() {
        // This build settled the check: cargo may cache its rustc facts again.
        let _ = std::fs::remove_dir(target.join(PROBE_FENCE));
    }
    let Some(identity) = identity else {
        let _ = state::save(store, &mut st);
        return;
    };
    let pkgs = cargo::read_lock(&ws.join("Cargo.lock"));
    st.worktree = ws.clone();
    st.lock = pkgs.clone();
    st.probes.push(state::Probe {
        build: Some(build.clone()),
        started_ns: state::now_ns(),
        ended_ns: None,
        identity: identity.clone(),
        env: env_digest.clone(),
        env_map: env_map.clone(),
    });
    let _ = state::save(store, &mut st);
    drop(lock);
    spawn_harvest_after(store, &target, &build, &ws);

    let plan = match (new_target, cmd.lane, &cmd.profile) {
        (true, Some(lane), Some(profile)) => Some((lane, profile.clone())),
        _ => None,
    };
    if let Some((lane, profile)) = plan {
        match pkgs {
            None => report.skip(Skip::NoLockfile, 1),
            Some(pkgs) => {
                let t = Instant::now();
                harvest_known(store, &target, HARVEST_BUDGET, HARVEST_WAIT, tally);
                report.phase("harvest", t);
                let mut profiles = vec![profile.clone()];
                profiles.extend(cmd.targets.iter().map(|t| format!("{t}/{profile}")));
                let created = !target.exists();
                if std::fs::create_dir_all(&target).is_ok() {
                    if created {
                        ensure_cachedir_tag(&target);
                    }
                    let declared = ctx.config.list("rust.env").to_vec();
                    let seeded = place::seed(
                        store,
                        &place::Request {
                            target: &target,
                            profiles,
                            lane: Some(lane),
                            lock: &pkgs,
                            identity: &identity,
                            env: place::BuildEnv::Known(&env_digest, &env_map),
                            declared: &declared,
                        },
                    );
                    report.merge(seeded);
                }
            }
        }
    }
    if !report.placed.is_empty() {
        if let Some(_lock) = state::lock(store, &target, HARVEST_WAIT) {
            let mut st = state::load(store, &target);
            record_placed(&mut st, &report, &identity);
            let _ = state::save(store, &mut st);
        }
    }
    record(store, tally, Some(&build), &report, ms_since(started));
}

/// Records the units a seeding placed as harvested from this target (they are the
/// donor's units, already in the store): a later harvest here skips them.
fn record_placed(st: &mut state::TargetState, report: &Report, identity: &str) {
    for (profile, units) in &report.placed {
        let index = st.harvested.entry(profile.clone()).or_default();
        for (stamp, r) in units {
            index.insert(
                r.dir.clone(),
                state::Harvested {
                    stamp: stamp.clone(),
                    identity: Some(identity.to_string()),
                    seed: Some(r.clone()),
                    refused: None,
                },
            );
        }
    }
}

/// The identity of the rustc cargo will use in `worktree` (rustup picks the toolchain
/// by directory, so it is asked there).
fn worktree_identity(worktree: &Path) -> Option<String> {
    let rustc = std::env::var_os("RUSTC").unwrap_or_else(|| "rustc".into());
    let out = Command::new(rustc)
        .arg("-vV")
        .current_dir(worktree)
        .stdin(std::process::Stdio::null())
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| identity_digest(&String::from_utf8_lossy(&out.stdout)))
}

/// The hook of `kache mount` / `kache worktree add`: seeds the freshly mounted target of
/// `worktree` (every lane and every profile the best donor has, placements cost no
/// bytes). The build environment is not known yet: units that depend on it are checked
/// at the first build's probe. Returns a one-line summary, or `None` when nothing was
/// seeded.
pub fn at_mount(store_dir: &Path, worktree: &Path, target: &Path) -> Option<String> {
    let started = Instant::now();
    let config = Config::load(worktree, &crate::env::process_env).ok()?;
    // Only a target cargo never built in (a remount of a used one keeps its files).
    if !enabled(&config)
        || target.join(PROBE_FENCE).exists()
        || !harvest::profile_dirs(target).is_empty()
    {
        return None;
    }
    let store = Store::open(store_dir).ok()?;
    let pkgs = cargo::read_lock(&worktree.join("Cargo.lock"))?;
    let identity = worktree_identity(worktree)?;
    let mut tally = Tally::default();
    harvest_known(
        &store,
        target,
        MOUNT_HARVEST_WAIT,
        MOUNT_HARVEST_WAIT,
        &mut tally,
    );
    let set = record::get_set(&store, &identity);
    let mut profiles: Vec<String> = set
        .donors
        .iter()
        .flat_map(|d| d.profiles.keys().cloned())
        .collect();
    profiles.sort();
    profiles.dedup();
    let declared = config.list("rust.env").to_vec();
    // The environment of the command that mounts is likely the build's: a hint for
    // choosing the donor, never trusted (the first build's probe checks).
    let (guess, _) = current_env(worktree, target);
    let lock = state::lock(&store, target, HARVEST_WAIT)?;
    let report = place::seed(
        &store,
        &place::Request {
            target,
            profiles,
            lane: None,
            lock: &pkgs,
            identity: &identity,
            env: place::BuildEnv::Pending(Some(&guess)),
            declared: &declared,
        },
    );
    let mut st = state::load(&store, target);
    st.worktree = worktree.to_path_buf();
    st.pending = report.pending.clone();
    if !st.pending.is_empty() {
        // cargo caches its rustc facts in `.rustc_info.json` and then skips its compiler
        // probe, our only moment to check these units against the build's environment
        // (`cargo metadata` writes it into an existing target dir without building). A
        // directory of that name cannot be written over: cargo quietly probes every time
        // until the first build's probe removes it.
        let _ = std::fs::create_dir(target.join(PROBE_FENCE));
    }
    record_placed(&mut st, &report, &identity);
    let _ = state::save(&store, &mut st);
    drop(lock);
    let ms = ms_since(started);
    record(&store, &mut tally, None, &report, ms);
    let _ = tally.flush(&store);
    (report.units > 0).then(|| {
        format!(
            "seeded {} units ({} files, {}) in {ms} ms",
            report.units,
            report.files,
            crate::report::human_bytes(report.bytes)
        )
    })
}

/// The hook of `kache worktree remove`, of the release of a mount whose worktree is gone,
/// and of the emptying of a mount whose target link was removed (`cargo clean`, or the
/// first step of `rm -rf WT`): harvests the target before its files go, so they outlive
/// it as seeds. `mounted`: the mount point a mounted target's files can still be read at
/// when its link is gone already.
pub fn before_remove(store_dir: &Path, worktree: &Path, target: &Path, mounted: Option<&Path>) {
    let at = match mounted {
        Some(m) if !target.is_dir() && kache_fs::is_kache_mount(m) => m,
        _ => target,
    };
    if harvest::profile_dirs(at).is_empty() {
        return; // nothing cargo built there (an emptied mount, a target never built in)
    }
    let config = match worktree.is_dir() {
        true => Config::load(worktree, &crate::env::process_env),
        false => Config::load(Path::new("/"), &crate::env::process_env),
    };
    if !config.is_ok_and(|c| enabled(&c)) {
        return;
    }
    let Ok(store) = Store::open(store_dir) else {
        return;
    };
    let mut tally = Tally::default();
    harvest::harvest_target(&store, target, at, HARVEST_WAIT, None, &mut tally);
    let _ = tally.flush(&store);
}

/// `kache seed-harvest --target T --after-build B`: waits for cargo process B to exit,
/// closes its build window (the last moment it was seen running), then harvests T.
pub fn harvest_after_build(store: &Store, target: &Path, build: Option<&str>) {
    if let Some(b) = build {
        let mut last_alive = state::now_ns();
        let give_up = Instant::now() + Duration::from_secs(24 * 3600);
        while process::build_running(b) && Instant::now() < give_up {
            last_alive = state::now_ns();
            std::thread::sleep(WAIT_POLL);
        }
        if let Some(_lock) = state::lock(store, target, Duration::from_secs(60)) {
            let mut st = state::load(store, target);
            if let Some(p) = st
                .probes
                .iter_mut()
                .rev()
                .find(|p| p.build.as_deref() == Some(b) && p.ended_ns.is_none())
            {
                p.ended_ns = Some(last_alive);
                let _ = state::save(store, &mut st);
            }
        }
    }
    // The build's largest outputs may still be on their way into the store.
    store.settle(Duration::from_secs(60));
    let mut tally = Tally::default();
    harvest::harvest_target(
        store,
        target,
        target,
        Duration::from_secs(60),
        None,
        &mut tally,
    );
    let _ = tally.flush(store);
}

/// Where `kache seed-harvest` was pointed: an absolute target dir.
pub fn harvest_arg(cwd: &Path, target: &Path) -> PathBuf {
    cwd.join(target)
}
