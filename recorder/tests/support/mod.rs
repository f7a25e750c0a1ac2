//! Helpers for the recorder's tests: a recorder in a private directory, C helper programs
//! compiled with the system compiler, and running a command under a session.
#![allow(dead_code)]

use kache_recorder::{Filter, Incomplete, ObservedInputs, Recorder};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// Fails (never skips) when a tool the test needs is missing.
pub fn need_tool(name: &str) -> PathBuf {
    let found = std::env::var_os("PATH").and_then(|p| {
        std::env::split_paths(&p)
            .map(|d| d.join(name))
            .find(|c| c.is_file())
    });
    match found {
        Some(p) => p,
        None => panic!("{name} is missing from PATH: the recorder's tests need it"),
    }
}

pub fn recorder(tmp: &Path) -> Recorder {
    match Recorder::new(&tmp.join("recorder")) {
        Ok(r) => r,
        Err(e) => panic!("the recorder must be available on this machine (Linux, glibc): {e}"),
    }
}

/// Compiles tests/c/<name>.c into `dir` with `extra` flags and returns the program.
pub fn compile_c(name: &str, dir: &Path, extra: &[&str]) -> PathBuf {
    need_tool("cc");
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("tests/c/{name}.c"));
    let out = dir.join(name);
    let o = Command::new("cc")
        .arg("-O1")
        .arg("-o")
        .arg(&out)
        .arg(&src)
        .args(extra)
        .output()
        .expect("run cc");
    assert!(
        o.status.success(),
        "cc {name}.c failed: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    out
}

/// Runs `cmd` under a new session of `rec`; returns the command's output and the result.
pub fn record(rec: &Recorder, mut cmd: Command) -> (Output, Result<ObservedInputs, Incomplete>) {
    let session = rec.session().expect("session");
    session.apply(&mut cmd);
    let out = cmd.output().expect("spawn the recorded command");
    let result = session.finish(&Filter::pseudo_filesystems());
    (out, result)
}

pub fn ok(out: &Output) {
    assert!(
        out.status.success(),
        "command failed: {}\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

pub fn complete(result: Result<ObservedInputs, Incomplete>) -> ObservedInputs {
    match result {
        Ok(i) => i,
        Err(e) => panic!("recording incomplete: {:?}", e.reasons),
    }
}

pub fn canonical(p: &Path) -> PathBuf {
    std::fs::canonicalize(p).expect("canonicalize")
}
