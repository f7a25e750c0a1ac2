//! The `kache` binary: wrapper mode when the first argument is a compiler
//! (`RUSTC_WRAPPER=kache`, `CC="kache cc"`, a compiler-named shim), CLI mode
//! otherwise. Each CLI subcommand is one function below.

use std::ffi::{OsStr, OsString};
use std::path::Path;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use kache::config::KEYS;
use kache::env::Context;
use kache::stats;
use kache_platform::process::stdout_reader_gone;

#[derive(Parser)]
#[command(name = "kache", version, about = "A build cache for Rust and C/C++", long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Show hit, miss and passthrough counters and the store's size.
    Stats {
        /// Print one JSON object.
        #[arg(long)]
        json: bool,
        /// Reset every counter to zero.
        #[arg(long)]
        zero: bool,
    },
    /// Evict least-recently-used entries until the store fits its size limit.
    Gc {
        /// Size to shrink to (default: the configured cache.max_size).
        #[arg(long)]
        max_size: Option<String>,
        /// Also remove entries unused for longer than this (e.g. 30d, 12h).
        #[arg(long)]
        older_than: Option<String>,
    },
    /// Re-hash every blob and check every entry; remove what is corrupt.
    Verify,
    /// Wire cargo to kache, install the daemon as a login service, start it.
    Init {
        /// Do not ask for confirmation.
        #[arg(short = 'y', long)]
        yes: bool,
        /// Print what would change and change nothing (exit 1 if something would).
        #[arg(long)]
        check: bool,
        /// Do not install the login service.
        #[arg(long)]
        no_service: bool,
    },
    /// Check the setup (cargo wiring, conflicting wrappers, store, daemon, service, compilers).
    Doctor {
        /// Repair what can be repaired.
        #[arg(long)]
        fix: bool,
        /// Also re-hash every blob of the store.
        #[arg(long)]
        verify: bool,
    },
    /// The background daemon.
    Daemon {
        #[command(subcommand)]
        command: kache::cli_ops::DaemonCommand,
    },
    /// What kache did, from the event log: top misses, passthrough reasons and flags, restores.
    Report {
        /// Print one JSON object.
        #[arg(long)]
        json: bool,
        /// Only events newer than this (e.g. 30m, 2h, 1d).
        #[arg(long)]
        since: Option<String>,
    },
    /// Which part of the key changed since CRATE was last cached.
    WhyMiss {
        /// The crate name (as cargo prints it).
        #[arg(value_name = "CRATE")]
        krate: String,
        /// Print one JSON object.
        #[arg(long)]
        json: bool,
    },
    /// Print a shell completion script.
    Completions { shell: clap_complete::Shell },
    /// Configuration.
    Config {
        #[command(subcommand)]
        command: ConfigCommand,
    },
    /// Compiler-named symlinks to kache, to put first on PATH.
    Shims {
        #[command(subcommand)]
        command: kache::shims::ShimsCommand,
    },
    /// The remote cache (S3-compatible storage or a shared directory).
    Remote {
        #[command(subcommand)]
        command: kache::remote::cli::RemoteCommand,
    },
    /// Mount a worktree's target/ as a FUSE filesystem backed by the store.
    Mount(kache::mount::cli::MountArgs),
    /// Unmount a worktree's target/ (its files are kept for the next mount).
    Unmount(kache::mount::cli::UnmountArgs),
    /// List mounts: target, state, placed files and bytes, upper bytes.
    Mounts {
        /// Print one JSON array.
        #[arg(long)]
        json: bool,
    },
    /// Git worktrees with a mounted target/ (for agents).
    Worktree {
        #[command(subcommand)]
        command: kache::mount::WorktreeCommand,
    },
    /// Store operations for tests and benchmarks (not a stable interface).
    #[command(hide = true)]
    Debug {
        #[command(subcommand)]
        command: kache::debug::DebugCommand,
    },
    /// Harvest a target dir's finished units as seeds (started by the wrapper after a
    /// build; not a stable interface).
    #[command(hide = true)]
    SeedHarvest {
        /// The target directory.
        #[arg(long)]
        target: std::path::PathBuf,
        /// Wait for this cargo process (pid-starttime) to exit first.
        #[arg(long)]
        after_build: Option<String>,
    },
}

#[derive(Subcommand)]
enum ConfigCommand {
    /// Print every effective value and where it came from.
    Show,
}

fn main() -> ExitCode {
    let args: Vec<OsString> = std::env::args_os().collect();
    if let Some(code) = kache::shims::run_if_shim(&args) {
        return code;
    }
    if let Some(first) = args.get(1) {
        if kache::wrap::is_compiler(first) || is_other_program(first) {
            return kache::wrap::run(&args[1..]);
        }
    }
    let cli = Cli::parse();
    quiet_on_closed_stdout();
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| try_main(cli))) {
        Ok(Ok(code)) => code,
        Ok(Err(e)) => {
            eprintln!("kache: {e}");
            ExitCode::from(2)
        }
        // The reader went away (`kache stats | head -1`): graceful termination.
        Err(_) if stdout_reader_gone() => ExitCode::SUCCESS,
        Err(payload) => std::panic::resume_unwind(payload),
    }
}

/// `println!` (and clap_complete's writer) panic when stdout is a pipe whose
/// reader has exited. For a command whose output nobody reads any more that
/// is not an error: the panic message is silenced here and `main` exits
/// quietly.
fn quiet_on_closed_stdout() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        if !stdout_reader_gone() {
            default(info);
        }
    }));
}

/// True when `first` is not one of kache's subcommands or flags but names
/// a program: in wrapper mode cargo puts whatever it runs after `kache` (a
/// `RUSTC_WORKSPACE_WRAPPER`, rustc under another name), and answering that
/// with a CLI error would break a build plain cargo finishes. A word that
/// names no program stays a CLI error, so a mistyped subcommand is reported.
fn is_other_program(first: &OsStr) -> bool {
    if first.as_encoded_bytes().starts_with(b"-") {
        return false;
    }
    let cli = <Cli as clap::CommandFactory>::command();
    let is_subcommand = first == "help"
        || cli
            .get_subcommands()
            .any(|c| first == c.get_name() || c.get_all_aliases().any(|a| first == a));
    if is_subcommand {
        return false;
    }
    let path = Path::new(first);
    if path.components().count() > 1 {
        return path.is_file();
    }
    kache::path_search::which(&first.to_string_lossy()).is_some()
}

type CliResult = Result<ExitCode, Box<dyn std::error::Error>>;

fn try_main(cli: Cli) -> CliResult {
    let ctx = Context::load()?;
    kache::log::init_from_config(&ctx.config);
    for w in &ctx.config.warnings {
        eprintln!("kache: warning: {w}");
    }
    if reads_what_builds_stored(&cli.command) {
        // A build that returned may still be storing its largest outputs in the
        // background (`cache.background_store`): what this command reads includes them.
        kache::store::settle(&ctx.store_dir, std::time::Duration::from_secs(15));
    }
    match cli.command {
        Command::Stats { json, zero } => cmd_stats(&ctx, json, zero),
        Command::Gc {
            max_size,
            older_than,
        } => kache::cli_ops::gc(&ctx, max_size, older_than),
        Command::Init {
            yes,
            check,
            no_service,
        } => kache::init::run(&ctx, yes, check, no_service),
        Command::Doctor { fix, verify } => {
            kache::doctor::run(&ctx, kache::doctor::Options { fix, verify })
        }
        Command::Daemon { command } => kache::cli_ops::daemon(ctx, command),
        Command::Report { json, since } => kache::report::run_report(&ctx, json, since),
        Command::WhyMiss { krate, json } => kache::report::run_why_miss(&ctx, &krate, json),
        Command::Completions { shell } => {
            kache::cli_ops::completions(shell, <Cli as clap::CommandFactory>::command())
        }
        Command::Verify => cmd_verify(&ctx),
        Command::Config {
            command: ConfigCommand::Show,
        } => cmd_config_show(&ctx),
        Command::Shims { command } => kache::shims::run(command),
        Command::Remote { command } => {
            Ok(ExitCode::from(kache::remote::cli::run(&ctx, command)? as u8))
        }
        Command::Mount(args) => kache::mount::cli::mount(&ctx, args),
        Command::Unmount(args) => kache::mount::cli::unmount(&ctx, args),
        Command::Mounts { json } => kache::mount::cli::mounts(&ctx, json),
        Command::Worktree { command } => kache::mount::cli::worktree(&ctx, command),
        Command::Debug { command } => Ok(ExitCode::from(kache::debug::run(&ctx, command)? as u8)),
        Command::SeedHarvest {
            target,
            after_build,
        } => {
            let store = ctx.open_store()?;
            let target = kache::seed::harvest_arg(&ctx.cwd, &target);
            kache::seed::harvest_after_build(&store, &target, after_build.as_deref());
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// Commands that read the counters, entries or blobs builds leave (not the ones that only
/// set up, serve a mount or run the daemon).
fn reads_what_builds_stored(c: &Command) -> bool {
    match c {
        Command::Stats { .. }
        | Command::Gc { .. }
        | Command::Report { .. }
        | Command::WhyMiss { .. }
        | Command::Verify
        | Command::Remote { .. }
        | Command::Mounts { .. }
        | Command::Worktree { .. }
        | Command::Debug { .. }
        | Command::Doctor { .. } => true,
        Command::Mount(a) => !a.foreground,
        _ => false,
    }
}

/// `kache stats`: counters and store usage.
fn cmd_stats(ctx: &Context, json: bool, zero: bool) -> CliResult {
    let store = ctx.open_store()?;
    if zero {
        stats::zero(&store)?;
        if !json {
            println!("Statistics zeroed.");
            return Ok(ExitCode::SUCCESS);
        }
    }
    let counters = stats::read(&store)?;
    let usage = store.usage();
    let mut v = stats::to_json(&counters, &usage, ctx.config.max_size());
    v["store"]["mount_held_bytes"] = kache::gc::mount_held_bytes(&store).into();
    if json {
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(ExitCode::SUCCESS);
    }
    println!("store            {}", store.root().display());
    println!(
        "size             {} in {} blobs, {} entries (limit {})",
        kache::report::human_bytes(usage.bytes),
        usage.blobs,
        usage.entries,
        ctx.config
            .max_size()
            .map_or("none".into(), kache::report::human_bytes)
    );
    if let Some(held) = v["store"]["mount_held_bytes"].as_u64().filter(|b| *b > 0) {
        println!(
            "held by mounts   {} (not counted against the limit)",
            kache::report::human_bytes(held)
        );
    }
    for lang in stats::LANGUAGES {
        let sec = &v[lang];
        println!(
            "{lang:<5} hits {:>6}  misses {:>6}  passthroughs {:>6}  errors {:>4}  compiler runs {:>6}",
            sec["hits"], sec["misses"], sec["passthroughs"], sec["errors"], sec["compiler_runs"]
        );
        if let Some(reasons) = sec["passthrough_reasons"].as_object() {
            for (r, n) in reasons {
                println!("      passthrough {r}: {n}");
            }
        }
    }
    if let Some(r) = v["restore"].as_object() {
        for (k, n) in r {
            println!("restore {k}: {n}");
        }
    }
    if let Some(s) = v["seed"].as_object() {
        println!(
            "seed  units {}  files {}  bytes {}  harvested {}",
            s.get("units").and_then(|n| n.as_u64()).unwrap_or(0),
            s.get("files").and_then(|n| n.as_u64()).unwrap_or(0),
            kache::report::human_bytes(s.get("bytes").and_then(|n| n.as_u64()).unwrap_or(0)),
            s["harvest"]["units"].as_u64().unwrap_or(0),
        );
        for (section, label) in [("skipped", "skipped"), ("refused", "not harvested")] {
            let m = if section == "refused" {
                &s["harvest"]["refused"]
            } else {
                &s["skipped"]
            };
            for (r, n) in m.as_object().into_iter().flatten() {
                println!("      {label} {r}: {n}");
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `kache verify`: full integrity check of the store.
fn cmd_verify(ctx: &Context) -> CliResult {
    let store = ctx.open_store()?;
    let r = store.verify(|_| {});
    println!(
        "verify: {} blobs checked, {} corrupt blobs, {} corrupt entries, {} removed",
        r.blobs_checked,
        r.corrupt_blobs.len(),
        r.corrupt_entries.len(),
        r.removed
    );
    Ok(
        if r.corrupt_blobs.is_empty() && r.corrupt_entries.is_empty() {
            ExitCode::SUCCESS
        } else {
            ExitCode::from(1)
        },
    )
}

/// `kache config show`: every key, its value and its origin.
fn cmd_config_show(ctx: &Context) -> CliResult {
    for def in KEYS {
        let (v, origin) = &ctx.config.values[def.name];
        // Never print credentials (remote.secret_access_key, remote.session_token).
        let secret =
            (def.name.contains("secret") || def.name.contains("token")) && v.to_string() != "\"\"";
        let shown = if secret {
            "\"<redacted>\"".to_string()
        } else {
            v.to_string()
        };
        println!("{:<20} = {:<24} # {origin}", def.name, shown);
    }
    println!(
        "{:<20} = {:<24} # resolved",
        "(store)",
        format!("{:?}", ctx.store_dir.display().to_string())
    );
    Ok(ExitCode::SUCCESS)
}
