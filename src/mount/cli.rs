//! The `kache mount`, `kache unmount` and `kache mounts` commands (dispatched from main).

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;

use super::{list, mount_worktree, unmount_worktree, MountError, Mounted};
use crate::env::Context;

type CliResult = Result<ExitCode, Box<dyn std::error::Error>>;

#[derive(Args, Debug)]
pub struct MountArgs {
    /// The worktree whose target/ to mount (default: the worktree of the current directory).
    pub worktree: Option<PathBuf>,
    /// Serve the mount in this process until it is unmounted (instead of a background server).
    #[arg(long)]
    pub foreground: bool,
    /// Mount over a non-empty target/, moving its contents into the mount.
    #[arg(long)]
    pub force: bool,
}

#[derive(Args, Debug)]
pub struct UnmountArgs {
    /// The worktree whose target/ to unmount (default: the worktree of the current directory).
    pub worktree: Option<PathBuf>,
    /// Unmount even with files open (aborts the connection, detaches lazily).
    #[arg(long)]
    pub force: bool,
    /// Also delete the mount's state (its files and placements) and the target link.
    #[arg(long)]
    pub forget: bool,
}

/// The worktree a command is about: the one given, or the one containing the current directory.
pub fn worktree_arg(ctx: &Context, given: Option<PathBuf>) -> Result<PathBuf, MountError> {
    match given {
        Some(p) => Ok(ctx.cwd.join(p)),
        None => super::find_worktree(&ctx.cwd).ok_or_else(|| {
            MountError(format!(
                "{} is not inside a cargo worktree (no Cargo.toml with .git or Cargo.lock above it); \
                 name the worktree",
                ctx.cwd.display()
            ))
        }),
    }
}

/// `kache mount [WORKTREE] [--foreground] [--force]`.
pub fn mount(ctx: &Context, args: MountArgs) -> CliResult {
    let wt = worktree_arg(ctx, args.worktree)?;
    let (outcome, _child) = mount_worktree(&ctx.store_dir, &wt, args.force, args.foreground)?;
    if args.foreground {
        return Ok(ExitCode::SUCCESS);
    }
    let target = super::target_of(&std::fs::canonicalize(&wt)?);
    let what = match outcome {
        Mounted::Fresh => "mounted",
        Mounted::AlreadyMounted => "already mounted",
        Mounted::Repaired => "repaired and mounted",
    };
    println!("{what}: {}", target.display());
    Ok(ExitCode::SUCCESS)
}

/// `kache unmount [WORKTREE] [--force] [--forget]`.
pub fn unmount(ctx: &Context, args: UnmountArgs) -> CliResult {
    let wt = worktree_arg(ctx, args.worktree)?;
    let (_, target, _) = super::locate(&ctx.store_dir, &wt)?;
    let was = unmount_worktree(&ctx.store_dir, &wt, args.force, args.forget)?;
    println!(
        "{}: {}",
        if was { "unmounted" } else { "not mounted" },
        target.display()
    );
    Ok(ExitCode::SUCCESS)
}

/// `kache mounts [--json]`: every registered mount with its state and sizes. Exits 1 when a
/// mount is broken (so scripts notice), 0 otherwise.
pub fn mounts(ctx: &Context, json: bool) -> CliResult {
    let rows = list(&ctx.store_dir);
    if json {
        println!("{}", serde_json::to_string_pretty(&rows)?);
    } else if rows.is_empty() {
        println!("no mounts");
    } else {
        // OWN: the disk this worktree alone takes; SHARED: placed blobs, kept once in the store
        // for every worktree; SEEN: what `du` of the target shows.
        println!(
            "{:<10} {:>10} {:>10} {:>10}  TARGET",
            "STATE", "OWN DISK", "SHARED", "SEEN"
        );
        for r in &rows {
            println!(
                "{:<10} {:>10} {:>10} {:>10}  {}",
                r.state,
                human(r.disk_bytes),
                human(r.placed_bytes),
                human(r.apparent_bytes),
                r.target.display()
            );
            if let Some(p) = &r.problem {
                println!(
                    "           problem: {p} (repair: kache mount {})",
                    r.worktree.display()
                );
            }
        }
    }
    Ok(if rows.iter().any(|r| r.state == "broken") {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

pub(crate) use crate::report::human_bytes as human;

/// `kache worktree add|remove|list`.
pub fn worktree(ctx: &Context, cmd: super::WorktreeCommand) -> CliResult {
    super::worktree::run(ctx, cmd)
}
