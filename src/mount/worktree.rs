//! `kache worktree add|remove|list`: git worktrees whose target is a kache mount, for agents
//! that open a fresh worktree per task. Scriptable: `--json` prints one JSON value. Removal
//! works from any half-removed state (worktree deleted by hand, by git, mount already gone).

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::time::Instant;

use clap::Subcommand;
use serde_json::json;

use super::{locate, mount_worktree, target_of, unmount_worktree, MountError};
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
    let wired = cargo_uses_kache(&wt);
    let unwired = "cargo in this worktree does not run kache (no RUSTC_WRAPPER, no \
                   build.rustc-wrapper): the mount will save nothing; run `kache init`";
    if !wired && mounted.is_ok() {
        eprintln!("kache: warning: {unwired}");
    }
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
                // What the worktree got instead of a mount: a plain target/ of its own.
                "fallback": mounted.is_err().then_some("plain-target"),
                "cargo_uses_kache": wired,
                "git_ms": git_ms,
                "total_ms": total_ms,
            }))?
        );
    } else {
        println!("worktree {} created", wt.display());
        match &problem {
            None => println!("mounted: {}", target.display()),
            Some(p) => println!(
                "not mounted ({p}): the worktree builds into a plain target/ with ordinary restores"
            ),
        }
    }
    // The worktree exists either way; a failed mount is a degraded, not failed, command.
    Ok(ExitCode::SUCCESS)
}

/// Whether a build in `wt` runs kache: `RUSTC_WRAPPER` (or cargo's own variable), else the
/// nearest cargo config that sets `build.rustc-wrapper`, the worktree's first, `$CARGO_HOME`'s
/// last (cargo's precedence).
fn cargo_uses_kache(wt: &Path) -> bool {
    let is_kache = |v: &str| crate::init::wrapper_stem(v) == "kache";
    for var in ["RUSTC_WRAPPER", "CARGO_BUILD_RUSTC_WRAPPER"] {
        if let Some(v) = std::env::var(var).ok().filter(|v| !v.is_empty()) {
            return is_kache(&v);
        }
    }
    let cargo_home = std::env::var_os("CARGO_HOME")
        .filter(|h| !h.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cargo")));
    let dirs = wt.ancestors().map(|d| d.join(".cargo")).chain(cargo_home);
    for dir in dirs {
        for name in ["config.toml", "config"] {
            if let Some(v) = crate::init::read_wrapper(&dir.join(name)) {
                return is_kache(&v);
            }
        }
    }
    false
}

/// `kache worktree remove PATH [--force]`: refuses, like git, when the worktree has changes.
/// Works from every half-removed state: the worktree deleted by hand (`rm -rf`) or by git, its
/// mount already released or still there; nothing left at all is not an error.
fn remove(ctx: &Context, path: &Path, force: bool, json: bool) -> CliResult {
    let exists = path.exists();
    let wt = real_path(path);
    let listed = listed_worktree(ctx, path);
    if exists && listed.is_some() && !force {
        let status = git(
            &wt,
            &[
                os("status"),
                os("--porcelain"),
                os("--untracked-files=normal"),
            ],
        )?;
        // The target link (or a mounted target/) is ours, not a change of the user's.
        let changes: Vec<&str> = status
            .lines()
            .filter(|l| !matches!(l.trim_end(), "?? target" | "?? target/"))
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
    // What this worktree built outlives it as seeds for the next ones: harvested before
    // its mount or its target goes.
    if let Ok((wt, target, id)) = locate(&ctx.store_dir, path) {
        let rec = super::Registry::new(&ctx.store_dir).load(&id);
        let mountpoint = rec.as_ref().map(|r| r.mountpoint());
        crate::seed::before_remove(&ctx.store_dir, &wt, &target, mountpoint);
    }
    // The mount goes first, whatever state the worktree is in (its link goes with it).
    let had_mount = locate(&ctx.store_dir, path)
        .is_ok_and(|(_, _, id)| super::Registry::new(&ctx.store_dir).load(&id).is_some());
    let was_mounted = if had_mount {
        unmount_worktree(&ctx.store_dir, path, force, true)?
    } else {
        false
    };
    if exists && listed.is_none() {
        return Err(Box::new(MountError(format!(
            "{} is not a worktree of this repository (`git worktree list` does not name it){}",
            wt.display(),
            if had_mount {
                "; its mount was released"
            } else {
                ""
            }
        ))));
    }
    if let Some(listed) = &listed {
        let mut args = vec![os("worktree"), os("remove")];
        if force {
            args.push(os("--force"));
        }
        args.push(listed.as_os_str());
        git(&ctx.cwd, &args)?;
    }
    let removed = exists || listed.is_some() || had_mount;
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&json!({
                "path": wt,
                "removed": removed,
                "was_mounted": was_mounted,
                "mount_released": had_mount,
                "git_removed": listed.is_some(),
            }))?
        );
    } else if removed {
        println!("worktree {} removed", wt.display());
    } else {
        println!("nothing to remove at {}", wt.display());
    }
    Ok(ExitCode::SUCCESS)
}

/// `path` canonical, or for a path that is gone, its parent's canonical path joined with its
/// name (how git and kache registered it).
fn real_path(path: &Path) -> PathBuf {
    if let Ok(p) = std::fs::canonicalize(path) {
        return p;
    }
    let abs = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
    match (abs.parent().map(std::fs::canonicalize), abs.file_name()) {
        (Some(Ok(parent)), Some(name)) => parent.join(name),
        _ => abs,
    }
}

/// The path under which git lists the worktree at `path` (it may be gone from disk).
fn listed_worktree(ctx: &Context, path: &Path) -> Option<PathBuf> {
    let text = git(&ctx.cwd, &[os("worktree"), os("list"), os("--porcelain")]).ok()?;
    let wanted = real_path(path);
    text.lines()
        .filter_map(|l| l.strip_prefix("worktree "))
        .map(PathBuf::from)
        .find(|p| *p == wanted)
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
            // A plain target/ costs all it holds; a mounted one only its upper directory.
            "apparent_bytes": m.map_or_else(|| kache_platform::disk_usage(&target_of(&canon)), |m| m.apparent_bytes),
            "disk_bytes": m.map_or_else(|| kache_platform::disk_usage(&target_of(&canon)), |m| m.disk_bytes),
        }));
    }
    if json {
        println!("{}", serde_json::to_string_pretty(&rows)?);
    } else {
        println!(
            "{:<10} {:>10} {:>10}  WORKTREE",
            "MOUNT", "OWN DISK", "SEEN"
        );
        for r in &rows {
            let bytes = |k: &str| crate::report::human_bytes(r[k].as_u64().unwrap_or(0));
            println!(
                "{:<10} {:>10} {:>10}  {}  [{}]",
                r["mount"].as_str().unwrap_or(""),
                bytes("disk_bytes"),
                bytes("apparent_bytes"),
                r["path"].as_str().unwrap_or(""),
                r["branch"].as_str().unwrap_or("detached")
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}
