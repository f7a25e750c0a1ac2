//! `kache worktree add|remove|list`: git worktrees whose `target/` is a kache mount, for
//! agents that open a fresh worktree per task. Scriptable: `--json` prints one JSON value.

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::time::Instant;

use clap::Subcommand;
use serde_json::json;

use super::{mount_worktree, target_of, unmount_worktree, MountError, Registry};
use crate::env::Context;

type CliResult = Result<ExitCode, Box<dyn std::error::Error>>;

#[derive(Subcommand, Debug)]
pub enum WorktreeCommand {
    /// `git worktree add PATH [BRANCH]`, then mount PATH/target.
    Add {
        path: PathBuf,
        /// Branch to check out; created from HEAD when it does not exist.
        branch: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// Unmount PATH/target, forget its mount, then `git worktree remove PATH`.
    Remove {
        path: PathBuf,
        /// Remove even with uncommitted changes or open files.
        #[arg(long)]
        force: bool,
        #[arg(long)]
        json: bool,
    },
    /// Worktrees of the current repository with the state of their mounts.
    List {
        #[arg(long)]
        json: bool,
    },
}

pub fn run(ctx: &Context, cmd: WorktreeCommand) -> CliResult {
    match cmd {
        WorktreeCommand::Add { path, branch, json } => add(ctx, &ctx.cwd.join(path), branch, json),
        WorktreeCommand::Remove { path, force, json } => {
            remove(ctx, &ctx.cwd.join(path), force, json)
        }
        WorktreeCommand::List { json } => list(ctx, json),
    }
}

/// Runs git in `dir`; its stderr becomes the error.
fn git(dir: &Path, args: &[&std::ffi::OsStr]) -> Result<String, MountError> {
    let out = Command::new("git")
        .current_dir(dir)
        .args(args)
        .output()
        .map_err(|e| MountError(format!("cannot run git: {e}")))?;
    if !out.status.success() {
        return Err(MountError(format!(
            "git {}: {}",
            args.first().map_or("".into(), |a| a.to_string_lossy()),
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn os(s: &str) -> &std::ffi::OsStr {
    std::ffi::OsStr::new(s)
}

/// `kache worktree add PATH [BRANCH]`.
fn add(ctx: &Context, path: &Path, branch: Option<String>, json: bool) -> CliResult {
    let started = Instant::now();
    let mut args = vec![os("worktree"), os("add")];
    if let Some(b) = &branch {
        let exists = git(
            &ctx.cwd,
            &[
                os("rev-parse"),
                os("--verify"),
                os("--quiet"),
                os(&format!("refs/heads/{b}")),
            ],
        )
        .is_ok();
        if !exists {
            args.extend([os("-b"), os(b)]);
        }
    }
    args.push(path.as_os_str());
    if let Some(b) = &branch {
        if args.len() == 3 {
            args.push(os(b));
        }
    }
    git(&ctx.cwd, &args)?;
    let git_ms = started.elapsed().as_millis();
    let mounted = mount_worktree(&ctx.store_dir, path, false, false);
    let wt = std::fs::canonicalize(path)?;
    let target = target_of(&wt);
    let (state, problem) = match &mounted {
        Ok(_) => ("healthy", None),
        Err(e) => ("unmounted", Some(e.to_string())),
    };
    let total_ms = started.elapsed().as_millis();
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&json!({
                "path": wt,
                "branch": branch,
                "target": target,
                "mount": state,
                "problem": problem,
                "git_ms": git_ms,
                "total_ms": total_ms,
            }))?
        );
    } else {
        println!("worktree {} created", wt.display());
        match &problem {
            None => println!("mounted: {}", target.display()),
            Some(p) => println!("not mounted ({p}); builds use ordinary restores"),
        }
    }
    // The worktree exists either way; a failed mount is a degraded, not failed, command.
    Ok(ExitCode::SUCCESS)
}

/// `kache worktree remove PATH [--force]`: refuses, like git, when the worktree has changes.
fn remove(ctx: &Context, path: &Path, force: bool, json: bool) -> CliResult {
    let wt =
        std::fs::canonicalize(path).map_err(|e| MountError(format!("{}: {e}", path.display())))?;
    if !force {
        let status = git(
            &wt,
            &[
                os("status"),
                os("--porcelain"),
                os("--untracked-files=normal"),
            ],
        )?;
        // The mounted target/ itself is ours, not a change of the user's.
        let changes: Vec<&str> = status
            .lines()
            .filter(|l| l.trim_end() != "?? target/")
            .collect();
        if !changes.is_empty() {
            return Err(Box::new(MountError(format!(
                "{} has changes ({} paths, e.g. `{}`): commit or discard them, or use --force",
                wt.display(),
                changes.len(),
                changes[0].trim()
            ))));
        }
    }
    // What this worktree built outlives it as seeds for the next ones.
    crate::seed::before_remove(&ctx.store_dir, &target_of(&wt));
    let was_mounted = unmount_worktree(&ctx.store_dir, &wt, force, false)?;
    let target = target_of(&wt);
    // An empty mount point is all that is left of target/.
    let _ = std::fs::remove_dir(&target);
    let mut args = vec![os("worktree"), os("remove")];
    if force {
        args.push(os("--force"));
    }
    args.push(wt.as_os_str());
    git(&ctx.cwd, &args)?;
    let reg = Registry::new(&ctx.store_dir);
    reg.forget(&Registry::id_for(&target))?;
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(
                &json!({ "path": wt, "removed": true, "was_mounted": was_mounted })
            )?
        );
    } else {
        println!("worktree {} removed", wt.display());
    }
    Ok(ExitCode::SUCCESS)
}

/// `kache worktree list [--json]`.
fn list(ctx: &Context, json: bool) -> CliResult {
    let text = git(&ctx.cwd, &[os("worktree"), os("list"), os("--porcelain")])?;
    let mounts = super::list(&ctx.store_dir);
    let mut rows = Vec::new();
    for block in text.split("\n\n").filter(|b| !b.trim().is_empty()) {
        let mut path = None;
        let mut branch = None;
        let mut head = None;
        for line in block.lines() {
            if let Some(p) = line.strip_prefix("worktree ") {
                path = Some(PathBuf::from(p));
            } else if let Some(b) = line.strip_prefix("branch ") {
                branch = Some(b.trim_start_matches("refs/heads/").to_string());
            } else if let Some(h) = line.strip_prefix("HEAD ") {
                head = Some(h.to_string());
            }
        }
        let Some(path) = path else { continue };
        let canon = std::fs::canonicalize(&path).unwrap_or(path.clone());
        let m = mounts.iter().find(|m| m.worktree == canon);
        rows.push(json!({
            "path": path,
            "branch": branch,
            "head": head,
            "mount": m.map_or("none", |m| m.state),
            "placed_files": m.map_or(0, |m| m.placed_files),
            "placed_bytes": m.map_or(0, |m| m.placed_bytes),
            "upper_bytes": m.map_or(0, |m| m.upper_bytes),
        }));
    }
    if json {
        println!("{}", serde_json::to_string_pretty(&rows)?);
    } else {
        for r in &rows {
            println!(
                "{:<10} {}  [{}]",
                r["mount"].as_str().unwrap_or(""),
                r["path"].as_str().unwrap_or(""),
                r["branch"].as_str().unwrap_or("detached")
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}
