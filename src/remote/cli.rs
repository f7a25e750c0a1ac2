//! `kache remote …`: the remote tier's commands.

use std::time::{Duration, Instant};

use clap::Subcommand;
use serde_json::json;

use super::backend::{count, Backend};
use super::fetch::{self, Kind, Outcome};
use super::local::LocalState;
use super::{spool, RemoteConfig, Target, LAYOUT};
use crate::env::Context;
use crate::store::is_valid_hash;

#[derive(Subcommand, Debug)]
pub enum RemoteCommand {
    /// Reachability, latency, object counts, queued uploads.
    Status {
        /// Print one JSON object.
        #[arg(long)]
        json: bool,
    },
    /// Upload everything queued in the spool, then exit.
    Drain {
        /// Run as the detached drainer a wrapper starts: exit at once if
        /// another drainer runs, print nothing.
        #[arg(long)]
        background: bool,
    },
    /// Look KEY up as a wrapper would (manifest of a direct key, or with
    /// --entry an entry) and import it; prints the outcome as JSON.
    #[command(hide = true)]
    Lookup {
        key: String,
        #[arg(long)]
        entry: bool,
    },
}

type CliResult = Result<i32, Box<dyn std::error::Error>>;

/// Entry point of `kache remote`.
pub fn run(ctx: &Context, cmd: RemoteCommand) -> CliResult {
    let store = ctx.open_store()?;
    let rc = match RemoteConfig::from_config(&ctx.config) {
        None => {
            if matches!(cmd, RemoteCommand::Drain { background: true }) {
                return Ok(0);
            }
            return Err("no remote configured: set remote.url or KACHE_REMOTE \
                        (s3://bucket/prefix or file:///path)"
                .into());
        }
        Some(r) => r?,
    };
    match cmd {
        RemoteCommand::Status { json } => cmd_status(&store, &rc, json),
        RemoteCommand::Drain { background } => {
            match spool::drain(&store, &ctx.config, !background) {
                Ok(r) => {
                    if !background {
                        println!(
                            "drain: {} uploads done ({} objects, {} bytes sent, {} already there), {} dropped, {} still queued{}",
                            r.items,
                            r.objects_up,
                            r.bytes_up,
                            r.already_there,
                            r.dropped,
                            r.remaining,
                            if rc.read_only { " (read-only: nothing uploaded)" } else { "" }
                        );
                    }
                    Ok(0)
                }
                Err(e) => {
                    if background {
                        return Ok(1);
                    }
                    Err(e.into())
                }
            }
        }
        RemoteCommand::Lookup { key, entry } => {
            if !is_valid_hash(&key) {
                return Err(format!("{key:?} is not a key").into());
            }
            let kind = if entry { Kind::Entry } else { Kind::Manifest };
            let t = Instant::now();
            let o = fetch::lookup(&store, &rc, kind, &key);
            let ms = t.elapsed().as_secs_f64() * 1000.0;
            let _ = o.tally().flush(&store);
            let (outcome, reason) = match &o {
                Outcome::Imported { .. } => ("imported", None),
                Outcome::Miss { reason, .. } => ("miss", Some(reason.clone())),
                Outcome::Error { reason } => ("error", Some(reason.clone())),
            };
            println!(
                "{}",
                json!({ "outcome": outcome, "reason": reason, "ms": ms })
            );
            Ok(if outcome == "imported" { 0 } else { 3 })
        }
    }
}

/// `kache remote status`.
fn cmd_status(store: &crate::store::Store, rc: &RemoteConfig, as_json: bool) -> CliResult {
    let state = LocalState::new(store);
    let backend = Backend::open(rc)?;
    let limit = rc.transfer_timeout.min(Duration::from_secs(10));
    let mut samples = Vec::new();
    let mut error = None;
    for _ in 0..3 {
        match fetch::probe_latency(&backend, limit) {
            Ok(d) => samples.push(d),
            Err(e) => {
                error = Some(e.to_string());
                break;
            }
        }
    }
    samples.sort();
    let latency_ms = samples
        .get(samples.len() / 2)
        .map(|d| d.as_secs_f64() * 1000.0);
    let reachable = error.is_none();
    let mut counts = serde_json::Map::new();
    if reachable {
        for kind in ["blobs", "entries", "manifests"] {
            let op = backend.op.clone();
            let dir = format!("{LAYOUT}/{kind}/");
            match backend.run(rc.transfer_timeout, async move { count(&op, &dir).await }) {
                Ok((n, bytes)) => {
                    counts.insert(kind.into(), json!({ "objects": n, "bytes": bytes }));
                }
                Err(e) => {
                    error = Some(e.to_string());
                    break;
                }
            }
        }
    }
    let (target, endpoint) = match &rc.target {
        Target::S3 { .. } => ("s3", rc.endpoint.clone()),
        Target::Dir(_) => ("dir", String::new()),
    };
    let v = json!({
        "url": rc.url,
        "backend": target,
        "endpoint": if endpoint.is_empty() { serde_json::Value::Null } else { json!(endpoint) },
        "region": if target == "s3" { json!(rc.region) } else { serde_json::Value::Null },
        "read_only": rc.read_only,
        "reachable": reachable,
        "error": error,
        "latency_ms": latency_ms,
        "objects": counts,
        "spool_queued": spool::queued(store),
        "breaker_open_for_s": state.breaker_open_for(),
        "drainer_running": drainer_running(&state),
    });
    if as_json {
        println!("{}", serde_json::to_string_pretty(&v)?);
    } else {
        println!("remote     {}", rc.url);
        if target == "s3" {
            println!(
                "endpoint   {} (region {})",
                if endpoint.is_empty() {
                    "AWS default"
                } else {
                    &endpoint
                },
                rc.region
            );
        }
        println!(
            "mode       {}",
            if rc.read_only {
                "read-only"
            } else {
                "read-write"
            }
        );
        match (&v["error"], latency_ms) {
            (serde_json::Value::Null, Some(ms)) => {
                println!("reachable  yes, {ms:.1} ms per request (median of 3)")
            }
            (e, _) => println!("reachable  NO: {}", e.as_str().unwrap_or("unknown")),
        }
        for kind in ["blobs", "entries", "manifests"] {
            if let Some(c) = counts.get(kind) {
                println!("{kind:<10} {} objects, {} bytes", c["objects"], c["bytes"]);
            }
        }
        println!("spool      {} uploads queued", v["spool_queued"]);
        let open = state.breaker_open_for();
        if open > 0 {
            println!("breaker    open: the remote is not asked for {open} more s");
        } else {
            println!("breaker    closed");
        }
    }
    Ok(if reachable { 0 } else { 1 })
}

fn drainer_running(state: &LocalState) -> bool {
    let Ok(p) = state.drain_lock_path() else {
        return false;
    };
    matches!(
        kache_platform::FileLock::try_acquire(&p, kache_platform::LockMode::Exclusive),
        Ok(None)
    )
}
