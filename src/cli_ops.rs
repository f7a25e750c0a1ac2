//! Operations commands: `kache daemon …`, `kache gc`, `kache completions`.
//! (`init`, `doctor`, `report` and `why-miss` have their own modules.)

use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use clap::Subcommand;
use indicatif::{ProgressBar, ProgressDrawTarget};
use kache_platform::service;

use crate::config;
use crate::daemon::client::{self, Started, State, Stopped};
use crate::daemon::server::{self, RunError};
use crate::env::Context;
use crate::init::{self, Setup};
use crate::report::{human_bytes, parse_duration};

type CliResult = Result<ExitCode, Box<dyn std::error::Error>>;

#[derive(Subcommand, Debug)]
pub enum DaemonCommand {
    /// Run the daemon in the foreground (what the login service runs).
    Run,
    /// Start the daemon in the background unless it already runs.
    Start,
    /// Stop the daemon.
    Stop,
    /// Is the daemon running, which version, what is it doing?
    Status {
        /// Print the daemon's status object as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Install (and enable) the login service that runs the daemon.
    Install,
    /// Remove the login service and stop the daemon.
    Uninstall,
}

/// `kache daemon …`.
pub fn daemon(ctx: Context, cmd: DaemonCommand) -> CliResult {
    let store_dir = ctx.store_dir.clone();
    match cmd {
        DaemonCommand::Run => match server::run(ctx) {
            Ok(()) => Ok(ExitCode::SUCCESS),
            Err(RunError::AlreadyRunning) => {
                eprintln!(
                    "kache daemon: another daemon already serves {}",
                    store_dir.display()
                );
                Ok(ExitCode::SUCCESS)
            }
            Err(RunError::Io(e)) => Err(format!("daemon: {e}").into()),
        },
        DaemonCommand::Start => {
            let exe = std::env::current_exe()?;
            match client::start(&store_dir, &exe)? {
                Started::AlreadyRunning(r) => {
                    println!("daemon already running (pid {})", r.data["pid"]);
                    if let Some(why) = init::daemon_mismatch(&r, &exe) {
                        println!(
                            "note: {why}; `kache daemon stop && kache daemon start` replaces it"
                        );
                    }
                }
                Started::Started(r) => println!("daemon started (pid {})", r.data["pid"]),
            }
            Ok(ExitCode::SUCCESS)
        }
        DaemonCommand::Stop => {
            match client::stop(&store_dir)? {
                Stopped::NotRunning => println!("daemon not running"),
                Stopped::Stopped => println!("daemon stopped"),
                Stopped::Killed(pid) => {
                    println!("daemon (pid {pid}) did not stop when asked; terminated")
                }
                Stopped::StaleRemoved => println!("daemon not running; removed a stale socket"),
            }
            Ok(ExitCode::SUCCESS)
        }
        DaemonCommand::Status { json } => {
            let state = client::probe(&store_dir, Duration::from_secs(2));
            if json {
                let v = match &state {
                    State::Running(r) => serde_json::json!({
                        "schema_version": 1, "state": "running",
                        "version": r.version, "protocol": r.protocol, "daemon": r.data,
                    }),
                    State::NotRunning => {
                        serde_json::json!({"schema_version": 1, "state": "not-running"})
                    }
                    State::Stale => {
                        serde_json::json!({"schema_version": 1, "state": "stale-socket"})
                    }
                    State::Unresponsive(w) => {
                        serde_json::json!({"schema_version": 1, "state": "unresponsive", "error": w})
                    }
                };
                println!("{}", serde_json::to_string_pretty(&v)?);
            } else {
                match &state {
                    State::Running(r) => {
                        println!(
                            "running: pid {}, version {}, up {}s, binary {}, store {}",
                            r.data["pid"],
                            r.version,
                            r.data["uptime_s"],
                            r.data["binary"].as_str().unwrap_or("?"),
                            r.data["store"].as_str().unwrap_or("?")
                        );
                        for t in r.data["tasks"].as_array().into_iter().flatten() {
                            println!(
                                "  task {}: {} runs{}",
                                t["name"].as_str().unwrap_or("?"),
                                t["runs"],
                                t["last_error"]
                                    .as_str()
                                    .map(|e| format!(", last error: {e}"))
                                    .unwrap_or_default()
                            );
                        }
                    }
                    State::NotRunning => println!("not running"),
                    State::Stale => println!("not running (stale socket left by a killed daemon; `kache daemon start` cleans it)"),
                    State::Unresponsive(w) => println!("unresponsive: {w}"),
                }
            }
            Ok(if matches!(state, State::Running(_)) {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(3)
            })
        }
        DaemonCommand::Install => {
            let setup = Setup::from_env(&ctx)?;
            let spec = setup.service_spec();
            let change = service::install(&spec, &setup.dirs)?;
            let path = service::definition_path(&spec.label, &setup.dirs);
            println!(
                "{} {}",
                match change {
                    service::Change::Unchanged => "unchanged",
                    service::Change::Created => "created",
                    service::Change::Updated => "updated",
                },
                path.display()
            );
            println!("{}", init::bring_up_daemon(&setup, true)?);
            Ok(ExitCode::SUCCESS)
        }
        DaemonCommand::Uninstall => {
            let setup = Setup::from_env(&ctx)?;
            if service::manager_available() {
                service::deactivate("kache", &setup.dirs);
            }
            let removed = service::uninstall("kache", &setup.dirs)?;
            let path = service::definition_path("kache", &setup.dirs);
            println!(
                "{} {}",
                if removed { "removed" } else { "not installed:" },
                path.display()
            );
            client::stop(&store_dir)?;
            println!("daemon stopped");
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// Runs `f` and shows a spinner with `msg` only if it takes longer than a
/// moment (and stderr is a terminal).
pub fn with_spinner<T>(msg: &str, f: impl FnOnce() -> T) -> T {
    let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::hidden());
    bar.set_message(msg.to_string());
    let done = Arc::new(AtomicBool::new(false));
    {
        let bar = bar.clone();
        let done = Arc::clone(&done);
        std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(300));
            if !done.load(Ordering::SeqCst) {
                bar.set_draw_target(ProgressDrawTarget::stderr());
                bar.enable_steady_tick(Duration::from_millis(100));
            }
        });
    }
    let r = f();
    done.store(true, Ordering::SeqCst);
    bar.finish_and_clear();
    r
}

/// `kache gc [--max-size SIZE] [--older-than DUR]`.
pub fn gc(ctx: &Context, max_size: Option<String>, older_than: Option<String>) -> CliResult {
    let store = ctx.open_store()?;
    // Mounts of worktrees removed while their server was down hold nothing any more.
    crate::mount::release_orphans(&ctx.store_dir);
    let pinned = crate::gc::pinned_blobs(&store);
    let mut aged = 0;
    if let Some(d) = &older_than {
        let age = parse_duration(d)
            .ok_or_else(|| format!("--older-than {d:?} is not a duration (e.g. 30d, 12h)"))?;
        aged = with_spinner("removing unused entries", || store.evict_unused_for(age))?;
    }
    let limit = match (&max_size, &older_than) {
        (Some(s), _) => {
            config::parse_size(s).ok_or_else(|| format!("--max-size {s:?} is not a size"))?
        }
        // Age only: drop the blobs the removed entries leave unreferenced.
        (None, Some(_)) => u64::MAX,
        (None, None) => ctx
            .config
            .max_size()
            .ok_or("no size limit configured (cache.max_size); pass --max-size")?,
    };
    let r = with_spinner("collecting", || store.gc(limit, &pinned))?;
    crate::gc::record(&store, &r)?;
    if older_than.is_some() {
        println!(
            "gc: {aged} entries unused for longer than {} removed",
            older_than.unwrap_or_default()
        );
    }
    println!(
        "gc: {} -> {} ({} entries and {} blobs removed, {} manifests)",
        human_bytes(r.bytes_before),
        human_bytes(r.bytes_after),
        r.entries_removed,
        r.blobs_removed,
        r.manifests_removed
    );
    if r.held_bytes > 0 {
        println!(
            "gc: mounts hold {} of it (blobs placed in mounted worktrees: not counted against the \
             limit, freed when the worktree or its mount goes)",
            human_bytes(r.held_bytes)
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// `kache completions SHELL`: prints a completion script.
pub fn completions(shell: clap_complete::Shell, mut cmd: clap::Command) -> CliResult {
    clap_complete::generate(shell, &mut cmd, "kache", &mut std::io::stdout());
    Ok(ExitCode::SUCCESS)
}
