//! `kache doctor`: one line per check (ok / warn / problem + the fix), and
//! with `--fix` the repairs, applied in order (cargo wiring before the
//! service, the service before the daemon). Exits non-zero while a problem
//! remains.
//!
//! Diagnosis never changes anything; only `--fix` writes (always with a
//! backup of an edited file).

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::time::Duration;

use kache_platform::service;

use crate::daemon::client::{self, State};
use crate::env::{process_env, Context};
use crate::init::{self, wrapper_stem, Setup, Wiring};
use crate::path_search::which;
use crate::store::Store;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Ok,
    /// Worth knowing; does not fail the doctor.
    Warn,
    Problem,
    /// Was a problem; `--fix` repaired it.
    Fixed,
}

/// The outcome of one check.
#[derive(Debug, Clone)]
pub struct Check {
    pub name: &'static str,
    pub status: Status,
    pub detail: String,
    /// What repairs it (shown with a problem).
    pub fix: Option<String>,
}

impl Check {
    fn ok(name: &'static str, detail: impl Into<String>) -> Check {
        Check {
            name,
            status: Status::Ok,
            detail: detail.into(),
            fix: None,
        }
    }
    fn warn(name: &'static str, detail: impl Into<String>, fix: impl Into<String>) -> Check {
        Check {
            name,
            status: Status::Warn,
            detail: detail.into(),
            fix: Some(fix.into()),
        }
    }
    fn problem(name: &'static str, detail: impl Into<String>, fix: impl Into<String>) -> Check {
        Check {
            name,
            status: Status::Problem,
            detail: detail.into(),
            fix: Some(fix.into()),
        }
    }
    fn fixed(name: &'static str, detail: impl Into<String>) -> Check {
        Check {
            name,
            status: Status::Fixed,
            detail: detail.into(),
            fix: None,
        }
    }
    /// After a failed repair: still a problem, with the reason.
    fn fix_failed(mut self, err: impl std::fmt::Display) -> Check {
        self.detail = format!("{} (fix failed: {err})", self.detail);
        self
    }
}

/// Options of one doctor run.
pub struct Options {
    pub fix: bool,
    pub verify: bool,
}

/// `kache doctor`.
pub fn run(ctx: &Context, opts: Options) -> Result<ExitCode, Box<dyn std::error::Error>> {
    let setup = Setup::from_env(ctx)?;
    let mut checks = Vec::new();
    checks.push(check_binary(&setup));
    checks.push(check_cargo_wiring(&setup, opts.fix));
    checks.extend(check_conflicts(&setup, &ctx.cwd, opts.fix));
    checks.push(check_store(ctx, opts.verify, opts.fix));
    checks.push(check_service(&setup, opts.fix));
    checks.push(check_daemon(&setup, opts.fix));
    checks.extend(mount_checks(ctx, opts.fix));
    checks.extend(check_compilers());

    let mut problems = 0;
    for c in &checks {
        let tag = match c.status {
            Status::Ok => "ok     ",
            Status::Warn => "warn   ",
            Status::Problem => "problem",
            Status::Fixed => "fixed  ",
        };
        println!("{tag}  {}: {}", c.name, c.detail);
        if matches!(c.status, Status::Problem | Status::Warn) {
            if let Some(f) = &c.fix {
                println!("         fix: {f}");
            }
        }
        if c.status == Status::Problem {
            problems += 1;
        }
    }
    if problems == 0 {
        println!("kache doctor: everything looks healthy");
        Ok(ExitCode::SUCCESS)
    } else {
        println!(
            "kache doctor: {problems} problem{} {}",
            if problems == 1 { "" } else { "s" },
            if opts.fix {
                "remain"
            } else {
                "(`kache doctor --fix` repairs what it can)"
            }
        );
        Ok(ExitCode::from(1))
    }
}

fn same_file(a: &Path, b: &Path) -> bool {
    a == b || (a.canonicalize().ok().is_some() && a.canonicalize().ok() == b.canonicalize().ok())
}

/// Is `kache` on PATH, and is it this binary?
fn check_binary(setup: &Setup) -> Check {
    const NAME: &str = "binary";
    match which("kache") {
        Some(p) if same_file(&p, &setup.exe) => Check::ok(NAME, format!("{} (on PATH)", p.display())),
        Some(p) => Check::warn(
            NAME,
            format!("PATH finds {}, not this binary {}", p.display(), setup.exe.display()),
            "put the kache you use first on PATH (cargo is wired by absolute path, so builds are fine)",
        ),
        None => Check::warn(
            NAME,
            format!("{} is not on PATH", setup.exe.display()),
            format!(
                "add {} to PATH (cargo is wired by absolute path, so builds are fine)",
                setup.exe.parent().unwrap_or(Path::new("/")).display()
            ),
        ),
    }
}

/// `build.rustc-wrapper` in `$CARGO_HOME/config.toml`.
fn check_cargo_wiring(setup: &Setup, fix: bool) -> Check {
    const NAME: &str = "cargo wiring";
    let cfg = setup.cargo_config();
    let env_wrapper = process_env("RUSTC_WRAPPER").filter(|v| !v.is_empty());
    let value = init::read_wrapper(&cfg);
    let problem = match value.as_deref() {
        Some(v) if wrapper_stem(v) == "kache" && Path::new(v).is_file() => {
            if same_file(Path::new(v), &setup.exe) {
                return Check::ok(
                    NAME,
                    format!("{}: build.rustc-wrapper = {v}", cfg.display()),
                );
            }
            return Check::warn(
                NAME,
                format!(
                    "{}: build.rustc-wrapper = {v}, another kache than this one",
                    cfg.display()
                ),
                "`kache init` with the kache you want",
            );
        }
        Some(v) if wrapper_stem(v) == "kache" => {
            format!(
                "{}: build.rustc-wrapper = {v}, which does not exist",
                cfg.display()
            )
        }
        Some(v) if wrapper_stem(v) == "sccache" => format!(
            "{}: build.rustc-wrapper = {v}: sccache is configured, not kache",
            cfg.display()
        ),
        Some(v) => format!("{}: build.rustc-wrapper = {v}, not kache", cfg.display()),
        None => {
            if env_wrapper
                .as_deref()
                .is_some_and(|v| wrapper_stem(v) == "kache")
            {
                return Check::warn(
                    NAME,
                    "kache is wired only through RUSTC_WRAPPER in this environment",
                    format!("`kache init` sets it in {}", cfg.display()),
                );
            }
            format!(
                "{}: build.rustc-wrapper is not set: cargo does not use kache",
                cfg.display()
            )
        }
    };
    let c = Check::problem(
        NAME,
        problem,
        format!(
            "set build.rustc-wrapper = \"{}\" (`kache init`; sccache is kept as kache's fallback)",
            setup.exe.display()
        ),
    );
    if !fix {
        return c;
    }
    match init::wire_cargo(&cfg, &setup.exe, &setup.kache_config(), true) {
        Ok(Wiring::Set { previous }) => Check::fixed(
            NAME,
            format!(
                "{}: build.rustc-wrapper = {} (was {}; backup {}.kache-backup)",
                cfg.display(),
                setup.exe.display(),
                previous.as_deref().unwrap_or("unset"),
                cfg.display()
            ),
        ),
        Ok(Wiring::AlreadySet) => Check::ok(NAME, "already set"),
        Err(e) => c.fix_failed(e),
    }
}

/// Shell start-up files where a `RUSTC_WRAPPER=…sccache` export hides.
fn rc_files(setup: &Setup) -> Vec<PathBuf> {
    let h = &setup.home;
    vec![
        h.join(".bashrc"),
        h.join(".bash_profile"),
        h.join(".profile"),
        h.join(".zshrc"),
        h.join(".zshenv"),
        setup.dirs.config_home.join("fish/config.fish"),
    ]
}

/// Cargo config files of the current directory's ancestors (they override
/// `$CARGO_HOME`'s), nearest first.
fn project_cargo_configs(setup: &Setup, cwd: &Path) -> Vec<PathBuf> {
    let home_cfg = setup.cargo_config();
    let mut out = Vec::new();
    let mut dir = Some(cwd);
    while let Some(d) = dir {
        for name in ["config.toml", "config"] {
            let p = d.join(".cargo").join(name);
            if p.is_file() && !same_file(&p, &home_cfg) {
                out.push(p);
                break;
            }
        }
        dir = d.parent();
    }
    out
}

/// Another wrapper (sccache…) configured somewhere that overrides kache:
/// the environment, a project's cargo config, a shell rc file.
fn check_conflicts(setup: &Setup, cwd: &Path, fix: bool) -> Vec<Check> {
    const NAME: &str = "conflicting wrappers";
    let mut out = Vec::new();
    for var in ["RUSTC_WRAPPER", "CARGO_BUILD_RUSTC_WRAPPER"] {
        if let Some(v) = process_env(var).filter(|v| !v.is_empty() && wrapper_stem(v) != "kache") {
            out.push(Check::problem(
                NAME,
                format!("{var}={v} in the environment overrides cargo's config"),
                format!("unset {var} (and remove it from where your shell sets it)"),
            ));
        }
    }
    for p in project_cargo_configs(setup, cwd) {
        let Some(v) = init::read_wrapper(&p) else {
            continue;
        };
        if wrapper_stem(&v) == "kache" {
            continue;
        }
        let c = Check::problem(
            NAME,
            format!(
                "{}: build.rustc-wrapper = {v} overrides the user's cargo config",
                p.display()
            ),
            format!("remove build.rustc-wrapper from {}", p.display()),
        );
        out.push(if !fix {
            c
        } else {
            let kept = if wrapper_stem(&v) == "sccache" {
                init::keep_fallback(&setup.kache_config(), &v, true).map(|_| ())
            } else {
                Ok(())
            };
            match kept.and_then(|_| init::unwire_cargo(&p, true)) {
                Ok(_) => Check::fixed(
                    NAME,
                    format!("{}: removed build.rustc-wrapper = {v}", p.display()),
                ),
                Err(e) => c.fix_failed(e),
            }
        });
    }
    for rc in rc_files(setup) {
        let Ok(text) = std::fs::read_to_string(&rc) else {
            continue;
        };
        let offending = |l: &str| {
            let t = l.trim_start();
            !t.starts_with('#') && t.contains("RUSTC_WRAPPER") && t.contains("sccache")
        };
        let lines: Vec<&str> = text.lines().filter(|l| offending(l)).collect();
        if lines.is_empty() {
            continue;
        }
        let c = Check::problem(
            NAME,
            format!(
                "{} sets RUSTC_WRAPPER to sccache: {}",
                rc.display(),
                lines[0].trim()
            ),
            format!(
                "comment that line out in {} (sccache stays kache's fallback)",
                rc.display()
            ),
        );
        if !fix {
            out.push(c);
            continue;
        }
        let mut new = String::new();
        for l in text.lines() {
            if offending(l) {
                new.push_str("# disabled by `kache doctor --fix` (kache wraps rustc; sccache is its fallback): ");
            }
            new.push_str(l);
            new.push('\n');
        }
        let mut backup = rc.as_os_str().to_owned();
        backup.push(".kache-backup");
        let r = std::fs::write(PathBuf::from(backup), &text)
            .and_then(|_| std::fs::write(&rc, new))
            .and_then(|_| init::keep_fallback(&setup.kache_config(), "sccache", true).map(|_| ()));
        out.push(match r {
            Ok(()) => Check::fixed(
                NAME,
                format!(
                    "{}: RUSTC_WRAPPER line commented out (open a new shell)",
                    rc.display()
                ),
            ),
            Err(e) => c.fix_failed(e),
        });
    }
    if out.is_empty() {
        out.push(Check::ok(
            NAME,
            "none (environment, project cargo configs, shell rc files)",
        ));
    }
    out
}

/// Blobs whose content does not match their name, found without changing
/// anything (repair is `Store::verify`, which removes them).
fn corrupt_blobs(store: &Store) -> (u64, Vec<String>) {
    let blobs = store.root().join("blobs");
    let total = store.usage().blobs;
    let bar = indicatif::ProgressBar::new(total);
    bar.set_style(
        indicatif::ProgressStyle::with_template("verifying {bar:30} {pos}/{len} blobs")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    let mut checked = 0;
    let mut bad = Vec::new();
    for shard in std::fs::read_dir(&blobs).into_iter().flatten().flatten() {
        for f in std::fs::read_dir(shard.path())
            .into_iter()
            .flatten()
            .flatten()
        {
            let name = f.file_name().to_string_lossy().into_owned();
            checked += 1;
            bar.inc(1);
            match crate::store::hash_file(&f.path()) {
                Ok((h, _)) if h == name => {}
                _ => bad.push(name),
            }
        }
    }
    bar.finish_and_clear();
    (checked, bad)
}

/// The store opens, is writable, and (with `--verify`) every blob matches
/// its hash.
fn check_store(ctx: &Context, verify: bool, fix: bool) -> Check {
    const NAME: &str = "store";
    let dir = ctx.store_dir.display().to_string();
    let store = match ctx.open_store() {
        Ok(s) => s,
        Err(e) => {
            return Check::problem(
                NAME,
                format!("{dir}: cannot open: {e}"),
                "check the permissions of the directory, or set KACHE_DIR / cache.dir",
            )
        }
    };
    let probe = store
        .tmp_dir()
        .join(format!("doctor-{}", std::process::id()));
    if let Err(e) = std::fs::write(&probe, b"") {
        return Check::problem(
            NAME,
            format!("{dir}: not writable: {e}"),
            "check the permissions of the directory",
        );
    }
    let _ = std::fs::remove_file(&probe);
    let u = store.usage();
    let summary = format!(
        "{dir}: {} blobs, {} entries, {} bytes",
        u.blobs, u.entries, u.bytes
    );
    if !verify {
        return Check::ok(NAME, format!("{summary} (`--verify` re-hashes every blob)"));
    }
    let (checked, bad) = corrupt_blobs(&store);
    if bad.is_empty() {
        return Check::ok(
            NAME,
            format!("{summary}; {checked} blobs re-hashed, all intact"),
        );
    }
    let c = Check::problem(
        NAME,
        format!(
            "{dir}: {} of {checked} blobs are corrupt (e.g. {})",
            bad.len(),
            &bad[0]
        ),
        "remove them (`kache verify`); their entries become misses and are rebuilt",
    );
    if !fix {
        return c;
    }
    let r = store.verify(|_| {});
    Check::fixed(
        NAME,
        format!(
            "{dir}: removed {} corrupt blobs and {} corrupt entries",
            r.corrupt_blobs.len(),
            r.corrupt_entries.len()
        ),
    )
}

/// The login service is installed and runs this binary.
fn check_service(setup: &Setup, fix: bool) -> Check {
    const NAME: &str = "service";
    let spec = setup.service_spec();
    let path = service::definition_path(&spec.label, &setup.dirs);
    let kind = service::Manager::current().name();
    let c = match std::fs::read_to_string(&path) {
        Err(_) => Check::problem(
            NAME,
            format!("no {kind} at {}", path.display()),
            "`kache init` (or `kache daemon install`) installs it",
        ),
        Ok(text) => match service::installed_program(&text) {
            Some(p)
                if same_file(&p, &setup.exe)
                    || (cfg!(windows) && text.contains(&*setup.exe.to_string_lossy())) =>
            {
                return Check::ok(
                    NAME,
                    format!("{} runs {}", path.display(), setup.exe.display()),
                )
            }
            Some(p) => Check::problem(
                NAME,
                format!(
                    "{} runs {}, not this binary {}",
                    path.display(),
                    p.display(),
                    setup.exe.display()
                ),
                "rewrite it (`kache daemon install`)",
            ),
            None => Check::problem(
                NAME,
                format!("{} is not readable as a {kind}", path.display()),
                "rewrite it (`kache daemon install`)",
            ),
        },
    };
    if !fix {
        return c;
    }
    match service::install(&spec, &setup.dirs) {
        Ok(_) => {
            if service::manager_available() {
                if let Err(e) = service::activate(&spec, &setup.dirs) {
                    return c.fix_failed(e);
                }
            }
            Check::fixed(
                NAME,
                format!("wrote {} (runs {})", path.display(), setup.exe.display()),
            )
        }
        Err(e) => c.fix_failed(e),
    }
}

/// A daemon answers on the store's socket, with this binary's version.
fn check_daemon(setup: &Setup, fix: bool) -> Check {
    const NAME: &str = "daemon";
    let sock = crate::daemon::paths(&setup.store_dir).socket;
    let c = match client::probe(&setup.store_dir, Duration::from_secs(1)) {
        State::Running(r) => match init::daemon_mismatch(&r, &setup.exe) {
            None => {
                return Check::ok(
                    NAME,
                    format!("running (pid {}, version {})", r.data["pid"], r.version),
                )
            }
            Some(why) => Check::problem(
                NAME,
                why,
                "restart it (`kache daemon stop && kache daemon start`)",
            ),
        },
        State::NotRunning => Check::problem(NAME, "not running", "`kache daemon start`"),
        State::Stale => Check::problem(
            NAME,
            format!(
                "stale socket {} (a daemon was killed); nothing is listening",
                sock.display()
            ),
            "`kache daemon start` removes it and starts a daemon",
        ),
        State::Unresponsive(why) => Check::problem(
            NAME,
            format!(
                "something holds {} but does not answer ({why})",
                sock.display()
            ),
            "`kache daemon stop && kache daemon start`",
        ),
    };
    if !fix {
        return c;
    }
    let installed = service::definition_path("kache", &setup.dirs).is_file();
    match init::bring_up_daemon(setup, installed) {
        Ok(said) => match client::probe(&setup.store_dir, Duration::from_secs(1)) {
            State::Running(r) if init::daemon_mismatch(&r, &setup.exe).is_none() => {
                Check::fixed(NAME, said)
            }
            _ => c.fix_failed(format!("{said}, but it does not answer")),
        },
        Err(e) => c.fix_failed(e),
    }
}

/// MOUNTS: the health of `kache mount` mounts (stale FUSE connections,
/// persisted mounts not mounted, a wedged server). Owned by the mount
/// subsystem: return one `Check` per problem found (repairing it when `fix`
/// is true), or one ok line. Nothing is reported until mounts exist.
pub fn mount_checks(ctx: &Context, fix: bool) -> Vec<Check> {
    let mounts = crate::mount::list(&ctx.store_dir);
    if mounts.is_empty() {
        return Vec::new();
    }
    let mut out = Vec::new();
    for m in &mounts {
        // A mount the user asked for that is broken or gone.
        let broken = m.state == "broken" || (m.wanted && m.state != "healthy");
        if !broken {
            continue;
        }
        let what = format!(
            "{} is {}{}",
            m.target.display(),
            m.state,
            m.problem
                .as_ref()
                .map(|p| format!(" ({p})"))
                .unwrap_or_default()
        );
        if fix {
            match crate::mount::mount_worktree(&ctx.store_dir, &m.worktree, false, false) {
                Ok(_) => {
                    out.push(Check::ok("mounts", format!("{what}: remounted")));
                    continue;
                }
                Err(e) => out.push(Check::problem(
                    "mounts",
                    format!("{what}; remount failed: {e}"),
                    format!("kache unmount --force {}", m.worktree.display()),
                )),
            }
        } else {
            out.push(Check::problem(
                "mounts",
                what,
                format!("kache mount {}", m.worktree.display()),
            ));
        }
    }
    if out.is_empty() {
        out.push(Check::ok(
            "mounts",
            format!("{} mount(s) healthy", mounts.len()),
        ));
    }
    out
}

/// rustc (required) and a C compiler (for `-sys` crates) are found.
fn check_compilers() -> Vec<Check> {
    let mut out = Vec::new();
    let version = |bin: &Path, arg: &str| {
        Command::new(bin)
            .arg(arg)
            .output()
            .ok()
            .filter(|o| o.status.success())
            .and_then(|o| {
                String::from_utf8_lossy(&o.stdout)
                    .lines()
                    .next()
                    .map(|l| l.trim().to_string())
            })
    };
    match which("rustc").and_then(|p| version(&p, "-V").map(|v| (p, v))) {
        Some((p, v)) => out.push(Check::ok("rustc", format!("{v} ({})", p.display()))),
        None => out.push(Check::problem(
            "rustc",
            "rustc not found on PATH or does not run",
            "install a toolchain (rustup) and put it on PATH",
        )),
    }
    let cc = ["cc", "gcc", "clang"]
        .iter()
        .find_map(|n| which(n).and_then(|p| version(&p, "--version").map(|v| (p, v))));
    match cc {
        Some((p, v)) => out.push(Check::ok("c compiler", format!("{v} ({})", p.display()))),
        None => out.push(Check::warn(
            "c compiler",
            "no cc, gcc or clang on PATH: C/C++ compiles of -sys crates cannot be cached",
            "install one (e.g. `apt-get install gcc`)",
        )),
    }
    out
}
