//! `kache init`: wire cargo to kache, install the daemon as a login service,
//! start it. One idempotent step; `--check` only says what it would do.
//!
//! The pieces (cargo config editing, the service description, bringing the
//! daemon up to date) are also what `kache doctor --fix` applies, so both
//! commands repair a setup the same way. Cargo's config is edited as TOML
//! (comments, order and every other key survive) and backed up first.

use std::io::{self, IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use kache_platform::service::{self, Change, ServiceSpec, UserDirs};
use toml_edit::DocumentMut;

use crate::daemon::client::{self, Started, State};
use crate::env::{process_env, Context};

/// Where the files `init` and `doctor` look at live, read once from the
/// environment.
#[derive(Debug, Clone)]
pub struct Setup {
    pub home: PathBuf,
    pub cargo_home: PathBuf,
    pub dirs: UserDirs,
    /// This binary: what cargo, the service and the daemon must run.
    pub exe: PathBuf,
    pub store_dir: PathBuf,
}

impl Setup {
    pub fn from_env(ctx: &Context) -> io::Result<Setup> {
        let home = PathBuf::from(process_env("HOME").unwrap_or_else(|| "/".into()));
        let cargo_home = process_env("CARGO_HOME")
            .filter(|s| !s.is_empty())
            .map(PathBuf::from)
            .unwrap_or_else(|| home.join(".cargo"));
        let config_home = process_env("XDG_CONFIG_HOME")
            .filter(|s| !s.is_empty())
            .map(PathBuf::from)
            .unwrap_or_else(|| home.join(".config"));
        Ok(Setup {
            dirs: UserDirs {
                home: home.clone(),
                config_home,
            },
            home,
            cargo_home,
            exe: std::env::current_exe()?,
            store_dir: ctx.store_dir.clone(),
        })
    }

    /// `$CARGO_HOME/config.toml`, or the legacy `config` when only it exists.
    pub fn cargo_config(&self) -> PathBuf {
        let toml = self.cargo_home.join("config.toml");
        let legacy = self.cargo_home.join("config");
        if !toml.exists() && legacy.is_file() {
            legacy
        } else {
            toml
        }
    }

    /// kache's own user configuration file.
    pub fn kache_config(&self) -> PathBuf {
        self.dirs.config_home.join("kache").join("config.toml")
    }

    /// The login service: this binary running `daemon run`.
    pub fn service_spec(&self) -> ServiceSpec {
        let mut env = Vec::new();
        // A store chosen by environment must reach the service too.
        if let Some(d) = process_env("KACHE_DIR").filter(|d| !d.is_empty()) {
            env.push(("KACHE_DIR".to_string(), d));
        }
        ServiceSpec {
            label: "kache".into(),
            description: "kache build cache daemon".into(),
            program: self.exe.clone(),
            args: vec!["daemon".into(), "run".into()],
            env,
        }
    }
}

/// The file stem of a wrapper value (`/usr/bin/sccache` → `sccache`).
pub fn wrapper_stem(value: &str) -> String {
    Path::new(value.trim())
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default()
}

fn parse_doc(path: &Path) -> io::Result<(String, DocumentMut)> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == io::ErrorKind::NotFound => String::new(),
        Err(e) => return Err(e),
    };
    let doc = text.parse::<DocumentMut>().map_err(|e| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("{}: not valid TOML, left untouched: {e}", path.display()),
        )
    })?;
    Ok((text, doc))
}

/// `build.rustc-wrapper` of a cargo config file, if set.
pub fn read_wrapper(path: &Path) -> Option<String> {
    let (_, doc) = parse_doc(path).ok()?;
    doc.get("build")?
        .get("rustc-wrapper")?
        .as_str()
        .map(String::from)
}

/// Writes `text` to `path` after copying the old file to `<path>.kache-backup`.
fn write_with_backup(path: &Path, old: &str, text: &str) -> io::Result<()> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)?;
    }
    if path.exists() {
        let mut backup = path.as_os_str().to_owned();
        backup.push(".kache-backup");
        std::fs::write(PathBuf::from(backup), old)?;
    }
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".kache-tmp");
    let tmp = PathBuf::from(tmp);
    std::fs::write(&tmp, text)?;
    std::fs::rename(&tmp, path)
}

/// Result of wiring one cargo config file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Wiring {
    AlreadySet,
    /// Set (or would set, with `apply` false); the previous value if any.
    Set {
        previous: Option<String>,
    },
}

/// Sets `build.rustc-wrapper = exe` in the cargo config at `path`, keeping
/// everything else as it was. When the previous wrapper was sccache, it is
/// kept as kache's fallback in `kache_config`.
pub fn wire_cargo(path: &Path, exe: &Path, kache_config: &Path, apply: bool) -> io::Result<Wiring> {
    let (old, mut doc) = parse_doc(path)?;
    let want = exe.to_string_lossy().into_owned();
    let previous = doc
        .get("build")
        .and_then(|b| b.get("rustc-wrapper"))
        .and_then(|v| v.as_str())
        .map(String::from);
    if previous.as_deref() == Some(want.as_str()) {
        return Ok(Wiring::AlreadySet);
    }
    if apply {
        if previous
            .as_deref()
            .is_some_and(|p| wrapper_stem(p) == "sccache")
        {
            keep_fallback(kache_config, previous.as_deref().unwrap_or("sccache"), true)?;
        }
        doc["build"]["rustc-wrapper"] = toml_edit::value(want);
        write_with_backup(path, &old, &doc.to_string())?;
    }
    Ok(Wiring::Set { previous })
}

/// Removes `build.rustc-wrapper` from a cargo config (a project config that
/// names another wrapper and would override the user's). Returns true when
/// something was (or would be) removed.
pub fn unwire_cargo(path: &Path, apply: bool) -> io::Result<bool> {
    let (old, mut doc) = parse_doc(path)?;
    let Some(build) = doc.get_mut("build").and_then(|b| b.as_table_like_mut()) else {
        return Ok(false);
    };
    if build.remove("rustc-wrapper").is_none() {
        return Ok(false);
    }
    if apply {
        write_with_backup(path, &old, &doc.to_string())?;
    }
    Ok(true)
}

/// Sets `[cache] fallback` in kache's config unless one is already set.
pub fn keep_fallback(kache_config: &Path, wrapper: &str, apply: bool) -> io::Result<bool> {
    let (old, mut doc) = parse_doc(kache_config)?;
    if doc
        .get("cache")
        .and_then(|c| c.get("fallback"))
        .is_some_and(|f| f.as_str().is_some_and(|s| !s.trim().is_empty()))
    {
        return Ok(false);
    }
    if apply {
        doc["cache"]["fallback"] = toml_edit::value(wrapper_stem(wrapper));
        write_with_backup(kache_config, &old, &doc.to_string())?;
    }
    Ok(true)
}

/// Why a running daemon is not the one this binary would run, if it isn't.
pub fn daemon_mismatch(resp: &crate::daemon::Response, exe: &Path) -> Option<String> {
    let ours = crate::daemon::protocol::kache_version();
    if resp.version != ours {
        return Some(format!(
            "daemon is version {}, this binary {ours}",
            resp.version
        ));
    }
    let theirs = resp.data["binary"].as_str().map(PathBuf::from);
    let same = theirs.as_ref().is_some_and(|t| {
        t == exe
            || (t.canonicalize().ok().is_some() && t.canonicalize().ok() == exe.canonicalize().ok())
    });
    if !same {
        return Some(format!(
            "daemon runs {}, not {}",
            theirs.map_or("an unknown binary".into(), |t| t.display().to_string()),
            exe.display()
        ));
    }
    None
}

/// Makes sure the current daemon runs for the store: through the service
/// manager when there is one (the service was just installed), directly
/// otherwise. A daemon of another version or binary is replaced. Returns a
/// sentence saying what happened.
pub fn bring_up_daemon(setup: &Setup, use_manager: bool) -> io::Result<String> {
    match client::probe(&setup.store_dir, Duration::from_millis(500)) {
        State::Running(r) if daemon_mismatch(&r, &setup.exe).is_none() => {
            return Ok("daemon already running".into())
        }
        State::Running(_) | State::Unresponsive(_) => {
            client::stop(&setup.store_dir)?;
        }
        State::Stale | State::NotRunning => {}
    }
    if use_manager && service::manager_available() {
        service::activate(&setup.service_spec(), &setup.dirs)?;
        // The manager starts it asynchronously; give it a moment to answer.
        for _ in 0..100 {
            if let State::Running(_) = client::probe(&setup.store_dir, Duration::from_millis(200)) {
                return Ok(format!(
                    "daemon started by the {}",
                    service::Manager::current().name()
                ));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        return Ok(format!(
            "{} activated; the daemon has not answered yet",
            service::Manager::current().name()
        ));
    }
    let pid = |r: &crate::daemon::Response| r.data["pid"].as_u64().unwrap_or(0);
    Ok(match client::start(&setup.store_dir, &setup.exe)? {
        Started::AlreadyRunning(r) => format!("daemon already running (pid {})", pid(&r)),
        Started::Started(r) if use_manager => format!(
            "the service manager is not reachable here (no user session): started the daemon directly (pid {}); the {} starts it at your next login",
            pid(&r),
            service::Manager::current().name()
        ),
        Started::Started(r) => format!("started the daemon (pid {})", pid(&r)),
    })
}

/// `kache init`.
pub fn run(
    ctx: &Context,
    yes: bool,
    check: bool,
    no_service: bool,
) -> Result<ExitCode, Box<dyn std::error::Error>> {
    let setup = Setup::from_env(ctx)?;
    let cargo_cfg = setup.cargo_config();
    let mut todo: Vec<String> = Vec::new();

    // 1. cargo wiring
    let wiring = wire_cargo(&cargo_cfg, &setup.exe, &setup.kache_config(), false)?;
    match &wiring {
        Wiring::AlreadySet => println!(
            "ok       {}: build.rustc-wrapper = {}",
            cargo_cfg.display(),
            setup.exe.display()
        ),
        Wiring::Set { previous } => {
            todo.push(format!(
                "set build.rustc-wrapper = {:?} in {} (was {}; backup kept)",
                setup.exe.display().to_string(),
                cargo_cfg.display(),
                previous.as_deref().unwrap_or("unset")
            ));
            if previous
                .as_deref()
                .is_some_and(|p| wrapper_stem(p) == "sccache")
                && keep_fallback(&setup.kache_config(), "sccache", false)?
            {
                todo.push(format!(
                    "keep sccache as kache's fallback: [cache] fallback = \"sccache\" in {}",
                    setup.kache_config().display()
                ));
            }
        }
    }

    // 2. login service
    let spec = setup.service_spec();
    let unit = service::definition_path(&spec.label, &setup.dirs);
    let unit_current = std::fs::read_to_string(&unit).ok() == Some(service::render(&spec));
    if !no_service {
        if unit_current {
            println!(
                "ok       {}: {}",
                service::Manager::current().name(),
                unit.display()
            );
        } else {
            todo.push(format!(
                "write the {} {} (runs `{} daemon run`)",
                service::Manager::current().name(),
                unit.display(),
                setup.exe.display()
            ));
        }
    }

    // 3. the daemon itself
    let daemon_ok = match client::probe(&setup.store_dir, Duration::from_millis(500)) {
        State::Running(r) => match daemon_mismatch(&r, &setup.exe) {
            None => {
                println!("ok       daemon running (pid {})", r.data["pid"]);
                true
            }
            Some(why) => {
                todo.push(format!("restart the daemon ({why})"));
                false
            }
        },
        State::NotRunning => {
            todo.push("start the daemon".into());
            false
        }
        State::Stale => {
            todo.push("remove a stale daemon socket and start the daemon".into());
            false
        }
        State::Unresponsive(why) => {
            todo.push(format!("replace a daemon that does not answer ({why})"));
            false
        }
    };

    if let Some(v) = process_env("RUSTC_WRAPPER").filter(|v| wrapper_stem(v) != "kache") {
        println!(
            "note     RUSTC_WRAPPER={v} in your environment overrides cargo's config; remove it (see `kache doctor`)"
        );
    }

    if todo.is_empty() {
        println!("kache init: nothing to change");
        return Ok(ExitCode::SUCCESS);
    }
    for t in &todo {
        println!("{}  {t}", if check { "would" } else { "will " });
    }
    if check {
        return Ok(ExitCode::from(1));
    }
    if !yes && io::stdin().is_terminal() {
        print!("Proceed? [Y/n] ");
        io::stdout().flush()?;
        let mut answer = String::new();
        io::stdin().read_line(&mut answer)?;
        if answer.trim().to_ascii_lowercase().starts_with('n') {
            println!("nothing changed");
            return Ok(ExitCode::from(1));
        }
    }

    if let Wiring::Set { .. } = wiring {
        wire_cargo(&cargo_cfg, &setup.exe, &setup.kache_config(), true)?;
        println!(
            "changed  {}: build.rustc-wrapper = {}",
            cargo_cfg.display(),
            setup.exe.display()
        );
    }
    let mut service_changed = false;
    if !no_service {
        let change = service::install(&spec, &setup.dirs)?;
        if change != Change::Unchanged {
            service_changed = true;
            println!("changed  wrote {}", unit.display());
        }
    }
    if !daemon_ok || service_changed {
        let said = bring_up_daemon(&setup, !no_service)?;
        println!("changed  {said}");
    }
    println!("kache init: done; `kache doctor` checks the setup");
    Ok(ExitCode::SUCCESS)
}
