//! `kache debug …`: direct access to the store for tests and benchmarks
//! (concurrency and crash tests drive many processes through these). Hidden
//! from `--help`; not a stable interface.

use std::path::PathBuf;

use clap::Subcommand;
use kache_platform::HardlinkPolicy;

use crate::env::Context;
use crate::stats;
use crate::store::{Entry, OutputFile};

#[derive(Subcommand, Debug)]
pub enum DebugCommand {
    /// Store each FILE as a blob and publish an entry KEY listing them.
    Put {
        key: String,
        files: Vec<PathBuf>,
        /// Also add 1 to this counter (e.g. rust.misses).
        #[arg(long)]
        count: Option<String>,
    },
    /// Restore entry KEY's outputs into DIR (by their names). Exit 0 on a
    /// hit, 3 on a miss (reason on stderr).
    Get {
        key: String,
        dir: PathBuf,
        #[arg(long)]
        count: Option<String>,
        /// Allow hardlink restores.
        #[arg(long)]
        hardlink: bool,
    },
}

pub fn run(ctx: &Context, cmd: DebugCommand) -> Result<i32, Box<dyn std::error::Error>> {
    let store = ctx.open_store()?;
    match cmd {
        DebugCommand::Put { key, files, count } => {
            let mut outputs = Vec::new();
            for f in &files {
                let blob = store.put_blob_from_path(f)?;
                outputs.push(OutputFile {
                    name: f
                        .file_name()
                        .ok_or("file has no name")?
                        .to_string_lossy()
                        .into_owned(),
                    blob: blob.hash,
                    size: blob.size,
                    mode: kache_platform::file_mode(&std::fs::metadata(f)?),
                });
            }
            let entry = Entry {
                outputs,
                stderr: format!("stored {key}\n").into_bytes(),
                ..Default::default()
            };
            store.put_entry(&key, &entry)?;
            if let Some(c) = count {
                stats::bump(&store, &[(c, 1)])?;
            }
            Ok(0)
        }
        DebugCommand::Get {
            key,
            dir,
            count,
            hardlink,
        } => {
            let entry = match store.get_entry(&key) {
                Ok(e) => e,
                Err(r) => {
                    eprintln!("miss: {r}");
                    return Ok(3);
                }
            };
            let opened = match store.open_blobs(&entry) {
                Ok(o) => o,
                Err(r) => {
                    eprintln!("miss: {r}");
                    return Ok(3);
                }
            };
            std::fs::create_dir_all(&dir)?;
            let policy = if hardlink {
                HardlinkPolicy::IfSoleConsumer
            } else {
                HardlinkPolicy::Never
            };
            let report = store.restore(&entry, &opened, |o| Some((dir.join(&o.name), policy)))?;
            println!(
                "restored {} files: reflink {} hardlink {} copy {}",
                report.files, report.reflink_bytes, report.hardlink_bytes, report.copy_bytes
            );
            if let Some(c) = count {
                stats::bump(&store, &[(c, 1)])?;
            }
            Ok(0)
        }
    }
}
