//! The `kache` binary: wrapper mode when the first argument is a compiler
//! (`RUSTC_WRAPPER=kache`, `CC="kache cc"`, a compiler-named shim), CLI mode
//! otherwise. Each CLI subcommand is one function below.

use std::collections::HashSet;
use std::ffi::OsString;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use kache::config::{self, KEYS};
use kache::env::Context;
use kache::stats;

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
    },
    /// Re-hash every blob and check every entry; remove what is corrupt.
    Verify,
    /// Configuration.
    Config {
        #[command(subcommand)]
        command: ConfigCommand,
    },
    /// Store operations for tests and benchmarks (not a stable interface).
    #[command(hide = true)]
    Debug {
        #[command(subcommand)]
        command: kache::debug::DebugCommand,
    },
}

#[derive(Subcommand)]
enum ConfigCommand {
    /// Print every effective value and where it came from.
    Show,
}

fn main() -> ExitCode {
    let args: Vec<OsString> = std::env::args_os().collect();
    if let Some(first) = args.get(1) {
        if kache::wrap::is_compiler(first) {
            return kache::wrap::run(&args[1..]);
        }
    }
    let cli = Cli::parse();
    match try_main(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("kache: {e}");
            ExitCode::from(2)
        }
    }
}

type CliResult = Result<ExitCode, Box<dyn std::error::Error>>;

fn try_main(cli: Cli) -> CliResult {
    let ctx = Context::load()?;
    for w in &ctx.config.warnings {
        eprintln!("kache: warning: {w}");
    }
    match cli.command {
        Command::Stats { json, zero } => cmd_stats(&ctx, json, zero),
        Command::Gc { max_size } => cmd_gc(&ctx, max_size),
        Command::Verify => cmd_verify(&ctx),
        Command::Config {
            command: ConfigCommand::Show,
        } => cmd_config_show(&ctx),
        Command::Debug { command } => Ok(ExitCode::from(kache::debug::run(&ctx, command)? as u8)),
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
    let v = stats::to_json(&counters, &usage, ctx.config.max_size());
    if json {
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(ExitCode::SUCCESS);
    }
    println!("store            {}", store.root().display());
    println!(
        "size             {} in {} blobs, {} entries (limit {})",
        human(usage.bytes),
        usage.blobs,
        usage.entries,
        ctx.config.max_size().map_or("none".into(), human)
    );
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
    Ok(ExitCode::SUCCESS)
}

/// `kache gc`: shrink the store to its limit.
fn cmd_gc(ctx: &Context, max_size: Option<String>) -> CliResult {
    let limit = match max_size {
        Some(s) => {
            config::parse_size(&s).ok_or_else(|| format!("--max-size {s:?} is not a size"))?
        }
        None => ctx
            .config
            .max_size()
            .ok_or("no size limit configured (cache.max_size); pass --max-size")?,
    };
    let store = ctx.open_store()?;
    let r = store.gc(limit, &HashSet::new())?;
    println!(
        "gc: {} -> {} ({} entries and {} blobs removed)",
        human(r.bytes_before),
        human(r.bytes_after),
        r.entries_removed,
        r.blobs_removed
    );
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
        println!("{:<20} = {:<24} # {origin}", def.name, v.to_string());
    }
    println!(
        "{:<20} = {:<24} # resolved",
        "(store)",
        format!("{:?}", ctx.store_dir.display().to_string())
    );
    Ok(ExitCode::SUCCESS)
}

fn human(n: u64) -> String {
    const U: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut x = n as f64;
    let mut i = 0;
    while x >= 1024.0 && i < U.len() - 1 {
        x /= 1024.0;
        i += 1;
    }
    if i == 0 {
        format!("{n} B")
    } else {
        format!("{x:.1} {}", U[i])
    }
}
