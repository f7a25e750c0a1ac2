//! Compiler shims: a directory of symlinks named like compilers (`cc`, `gcc`,
//! `clang++`, …) that all point at the kache binary. Put first on PATH, they
//! route every C/C++ compile of a build system that knows nothing of kache
//! through the cache.
//!
//! Owns `kache shims install|list|remove DIR` and the argv[0] check that makes
//! a shim act as `kache <name> <args…>`. A shim must never run itself: the
//! real compiler is looked up further down PATH by
//! [`crate::path_search::real_compiler`], which skips every kache binary.
//! Never touches a file in DIR that is not a symlink to a kache binary.

use std::ffi::{OsStr, OsString};
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::Subcommand;

use crate::path_search::{is_kache_binary, real_compiler};

/// The compiler names `kache shims install` creates, when the compiler exists.
pub const SHIM_NAMES: [&str; 6] = ["cc", "c++", "gcc", "g++", "clang", "clang++"];

#[derive(Subcommand, Debug)]
pub enum ShimsCommand {
    /// Create symlinks named cc, c++, gcc, g++, clang, clang++ (for each
    /// compiler found on PATH) in DIR, pointing at this kache binary.
    /// Put DIR first on PATH to cache every C/C++ compile.
    Install { dir: PathBuf },
    /// Show the shims in DIR and the real compiler each one runs.
    List { dir: PathBuf },
    /// Remove the shims from DIR (only symlinks to a kache binary).
    Remove { dir: PathBuf },
}

/// Wrapper mode through a shim: when the program was started under a
/// compiler's name (argv[0] is `cc`, `/shims/clang++`, …), runs it as
/// `kache <that name> <args…>`. `None` when argv[0] is not a compiler name.
pub fn run_if_shim(args: &[OsString]) -> Option<ExitCode> {
    let argv0 = args.first()?;
    let name = Path::new(argv0).file_name()?;
    kache_wrapper::cc::compiler_kind(&name.to_string_lossy())?;
    // The bare name: the real compiler is searched on PATH, skipping kache.
    let mut call = Vec::with_capacity(args.len());
    call.push(name.to_os_string());
    call.extend_from_slice(&args[1..]);
    Some(crate::wrap::run(&call))
}

/// Entry point of `kache shims …`.
pub fn run(cmd: ShimsCommand) -> Result<ExitCode, Box<dyn std::error::Error>> {
    let me = std::env::current_exe()?.canonicalize()?;
    match cmd {
        ShimsCommand::Install { dir } => install(&dir, &me),
        ShimsCommand::List { dir } => list(&dir),
        ShimsCommand::Remove { dir } => remove(&dir),
    }
}

/// True when `path` is a symlink whose target is a kache binary.
fn is_kache_link(path: &Path) -> bool {
    fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_symlink())
        && path.canonicalize().is_ok_and(|t| is_kache_binary(&t))
}

fn install(dir: &Path, me: &Path) -> Result<ExitCode, Box<dyn std::error::Error>> {
    fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let mut problems = 0;
    for name in SHIM_NAMES {
        let link = dir.join(name);
        let Some(real) = real_compiler(OsStr::new(name)) else {
            println!("{name:<8} skipped: no {name} on PATH");
            continue;
        };
        match fs::symlink_metadata(&link) {
            Ok(_) if is_kache_link(&link) => {
                if fs::read_link(&link).is_ok_and(|t| t == me) {
                    println!("{name:<8} already installed (runs {})", real.display());
                    continue;
                }
                // A shim to another kache binary: point it at this one.
                fs::remove_file(&link)?;
            }
            Ok(_) => {
                eprintln!(
                    "kache: {} exists and is not a kache shim; left alone",
                    link.display()
                );
                problems += 1;
                continue;
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(format!("cannot inspect {}: {e}", link.display()).into()),
        }
        symlink(me, &link).map_err(|e| format!("cannot create {}: {e}", link.display()))?;
        println!("{name:<8} installed (runs {})", real.display());
    }
    println!(
        "put {} first on PATH to cache C/C++ compiles",
        dir.display()
    );
    Ok(if problems == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

fn list(dir: &Path) -> Result<ExitCode, Box<dyn std::error::Error>> {
    for name in SHIM_NAMES {
        let link = dir.join(name);
        if !is_kache_link(&link) {
            continue;
        }
        let real = real_compiler(OsStr::new(name)).map_or_else(
            || "(no compiler on PATH)".into(),
            |p| p.display().to_string(),
        );
        println!("{name:<8} -> {real}");
    }
    Ok(ExitCode::SUCCESS)
}

fn remove(dir: &Path) -> Result<ExitCode, Box<dyn std::error::Error>> {
    for name in SHIM_NAMES {
        let link = dir.join(name);
        if is_kache_link(&link) {
            fs::remove_file(&link).map_err(|e| format!("cannot remove {}: {e}", link.display()))?;
            println!("{name:<8} removed");
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn symlink(target: &Path, link: &Path) -> io::Result<()> {
    kache_platform::symlink_file(target, link)
}
