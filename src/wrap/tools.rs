//! The identities of the tools a key names (rustc, the linker, a C/C++
//! compiler), probed once per binary and memoized by its stat: per-compiler
//! facts only, never per-file ones.

use std::io;
use std::path::Path;
use std::process::Command;

use super::outcome::{Passthrough, Tool};
use super::Call;
use crate::path_search;
use crate::stats::Counter;
use crate::store::{hash_file, memo};

/// What a probe printed; `must_succeed` refuses a failed probe.
fn stdout_of(cmd: &mut Command, must_succeed: bool) -> io::Result<String> {
    let out = cmd.output()?;
    if must_succeed && !out.status.success() {
        return Err(io::Error::other("the probe failed"));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// `rustc -vV` of `compiler` (a name or path) under the selected rustup
/// toolchain; a probe counts as a compiler run.
pub fn rustc(call: &mut Call, compiler: &str) -> Result<String, Passthrough> {
    let bin = path_search::which(compiler).ok_or(Passthrough::ToolNotFound(Tool::Rustc))?;
    let toolchain = std::env::var("RUSTUP_TOOLCHAIN").unwrap_or_default();
    let probe = || stdout_of(Command::new(compiler).arg("-vV"), true);
    identity(call, &bin, &toolchain, Tool::Rustc, probe)
}

/// The memoized identity of `bin`; a probe of a compiler counts as a
/// compiler run.
fn identity(
    call: &mut Call,
    bin: &Path,
    extra: &str,
    tool: Tool,
    probe: impl FnOnce() -> io::Result<String>,
) -> Result<String, Passthrough> {
    let (id, probed) = memo::tool_identity(&call.store, bin, extra, probe)
        .map_err(|_| Passthrough::ToolIdentity(tool))?;
    if probed && tool != Tool::Linker {
        call.count(Counter::CompilerRuns, 1);
    }
    Ok(id)
}

/// The linker's banner, its binary by content (`-C linker=` may name a
/// script or a wrapper), and the host libc (linked outputs embed its symbol
/// versions).
pub fn linker(call: &mut Call, name: &str) -> Result<String, Passthrough> {
    let bin = path_search::which(name).ok_or(Passthrough::ToolNotFound(Tool::Linker))?;
    // A linker driver may print its version and still exit non-zero.
    let probe = || {
        let banner = stdout_of(Command::new(&bin).arg("--version"), false)?;
        let content = hash_file(&bin)?.0;
        Ok(format!("{banner}\ncontent {content}\nlibc {}", host_libc()))
    };
    identity(call, &bin, "linker-v2", Tool::Linker, probe)
}

/// rustc's sysroot (`--print sysroot`): what it holds (the standard
/// library, the bundled linker) is the compiler's identity, not an input.
pub fn rustc_sysroot(call: &mut Call, compiler: &str) -> Result<String, Passthrough> {
    let bin = path_search::which(compiler).ok_or(Passthrough::ToolNotFound(Tool::Rustc))?;
    let toolchain = std::env::var("RUSTUP_TOOLCHAIN").unwrap_or_default();
    let probe = || {
        let out = stdout_of(Command::new(compiler).args(["--print", "sysroot"]), true)?;
        Ok(out.trim_end().to_string())
    };
    identity(
        call,
        &bin,
        &format!("sysroot\0{toolchain}"),
        Tool::Rustc,
        probe,
    )
}

/// What `-C target-cpu=native` resolves to on this machine: the CPU rustc
/// names ("currently …") and the target features it enables, for `target`
/// (the host when `None`). Memoized per rustc binary, toolchain, target and
/// host name, so a store shared by two machines never mixes them up.
pub fn native_cpu(
    call: &mut Call,
    compiler: &str,
    target: Option<&str>,
) -> Result<String, Passthrough> {
    let bin = path_search::which(compiler).ok_or(Passthrough::ToolNotFound(Tool::Rustc))?;
    let toolchain = std::env::var("RUSTUP_TOOLCHAIN").unwrap_or_default();
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    let extra = format!(
        "native-cpu\0{toolchain}\0{}\0{}",
        target.unwrap_or(""),
        host.trim()
    );
    let probe = || {
        let mut cmd = Command::new(compiler);
        cmd.args([
            "--print",
            "target-cpus",
            "--print",
            "cfg",
            "-C",
            "target-cpu=native",
        ]);
        if let Some(t) = target {
            cmd.args(["--target", t]);
        }
        let out = stdout_of(&mut cmd, true)?;
        // Only the line naming the host CPU and the features matter; the
        // list of every CPU rustc knows is the compiler's identity.
        let meaning: Vec<&str> = out
            .lines()
            .filter(|l| l.contains("(currently ") || l.starts_with("target_feature="))
            .collect();
        if meaning.is_empty() {
            return Err(io::Error::other("rustc did not say what native means"));
        }
        Ok(meaning.join("\n"))
    };
    identity(call, &bin, &extra, Tool::Rustc, probe).map_err(|_| Passthrough::NativeCpuUnknown)
}

/// The host glibc, as the dynamic loader reports it.
fn host_libc() -> String {
    ["/lib64/ld-linux-x86-64.so.2", "/lib/ld-linux-aarch64.so.1"]
        .iter()
        .filter_map(|ld| stdout_of(Command::new(ld).arg("--version"), false).ok())
        .find_map(|out| out.lines().next().map(String::from))
        .unwrap_or_else(|| "unknown".into())
}

/// A C/C++ compiler's version banner and binary content hash; a probe
/// counts as a compiler run.
pub fn cc(call: &mut Call, bin: &Path) -> Result<String, Passthrough> {
    let probe = || {
        let banner = stdout_of(Command::new(bin).arg("--version"), false)?;
        Ok(format!("{banner}\n{}", hash_file(bin)?.0))
    };
    identity(call, bin, "cc", Tool::Cc, probe)
}
