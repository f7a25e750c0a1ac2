//! Wrapper-mode dispatch: whatever program cargo puts after `kache` (a
//! `RUSTC_WORKSPACE_WRAPPER`, a rustc under another name, a build script's
//! probe) runs, and the build ends as it would without kache. Calls kache
//! does not understand are passthroughs, counted with a reason.
#![cfg(unix)] // shell-script compilers and build scripts, mode bits

mod common;
mod correctness_support;

use common::counter_at;
use correctness_support::*;

const HELLO: [(&str, &str); 2] = [
    (
        "Cargo.toml",
        "[package]\nname = \"hello\"\nversion = \"0.1.0\"\nedition = \"2021\"\n\n[workspace]\n",
    ),
    ("src/main.rs", "fn main() {\n    println!(\"hello\");\n}\n"),
];

/// Every counted outcome of a Rust call.
fn rust_calls(v: &serde_json::Value) -> u64 {
    ["rust.hits", "rust.misses", "rust.passthroughs"]
        .iter()
        .map(|k| counter_at(v, k))
        .sum()
}

fn assert_builds_and_runs(
    s: &Scratch,
    ws: &std::path::Path,
    what: &str,
    configure: impl Fn(&mut std::process::Command),
) {
    let mut c = s.cargo(ws, &["build"]);
    configure(&mut c);
    let out = c.output().unwrap();
    assert!(
        out.status.success(),
        "cargo build with {what} failed through kache:\n{}",
        stderr_of(&out)
    );
    assert_eq!(output_of(&ws.join("target/debug/hello")), "hello");
    assert!(
        rust_calls(&s.stats()) >= 1,
        "the compile was not counted: {}",
        s.stats()
    );
}

#[test]
fn workspace_wrapper_script_in_front_of_rustc_builds() {
    let s = Scratch::new();
    let ws = s.worktree("ws", &HELLO);
    let wrapper = s.path("bin/ws-wrapper");
    write_script(&wrapper, "exec \"$@\"");
    assert_builds_and_runs(&s, &ws, "RUSTC_WORKSPACE_WRAPPER", |c| {
        c.env("RUSTC_WORKSPACE_WRAPPER", &wrapper);
    });
}

#[test]
fn rustc_symlinked_under_another_name_builds() {
    let s = Scratch::new();
    let ws = s.worktree("ws", &HELLO);
    let myrustc = s.path("bin/myrustc");
    std::fs::create_dir_all(myrustc.parent().unwrap()).unwrap();
    std::os::unix::fs::symlink(real_rustc(), &myrustc).unwrap();
    assert_builds_and_runs(&s, &ws, "RUSTC=myrustc (a symlink)", |c| {
        c.env("RUSTC", &myrustc);
    });
}

#[test]
fn rustc_behind_a_script_under_another_name_builds() {
    let s = Scratch::new();
    let ws = s.worktree("ws", &HELLO);
    let myrustc = s.path("bin/myrustc");
    write_script(
        &myrustc,
        &format!("exec '{}' \"$@\"", real_rustc().display()),
    );
    assert_builds_and_runs(&s, &ws, "RUSTC=myrustc (a script)", |c| {
        c.env("RUSTC", &myrustc);
    });
}

/// A build script probing the compiler the way anyhow's and proc-macro2's
/// do: it runs `$RUSTC_WRAPPER $RUSTC` on a file using a nightly feature,
/// which fails on stable by design and only decides a cfg.
const PROBING: [(&str, &str); 4] = [
    (
        "Cargo.toml",
        "[package]\nname = \"probing\"\nversion = \"0.1.0\"\nedition = \"2021\"\nbuild = \"build.rs\"\n\n[workspace]\n",
    ),
    (
        "build.rs",
        r#"use std::env;
use std::process::{Command, Stdio};

fn main() {
    println!("cargo:rustc-check-cfg=cfg(probing_has_never_type)");
    let rustc = env::var_os("RUSTC").unwrap();
    let out_dir = env::var_os("OUT_DIR").unwrap();
    let mut cmd = match env::var_os("RUSTC_WRAPPER").filter(|w| !w.is_empty()) {
        Some(wrapper) => {
            let mut c = Command::new(wrapper);
            c.arg(rustc);
            c
        }
        None => Command::new(rustc),
    };
    cmd.stderr(Stdio::null())
        .arg("--cfg=probing_build_probe")
        .arg("--edition=2021")
        .arg("--crate-name=probing")
        .arg("--crate-type=lib")
        .arg("--emit=dep-info,metadata")
        .arg("--cap-lints=allow")
        .arg("--out-dir")
        .arg(&out_dir)
        .arg("build/probe.rs");
    if let Some(target) = env::var_os("TARGET") {
        cmd.arg("--target").arg(target);
    }
    if cmd.status().is_ok_and(|s| s.success()) {
        println!("cargo:rustc-cfg=probing_has_never_type");
    }
}
"#,
    ),
    (
        "build/probe.rs",
        "#![feature(never_type)]\n\npub fn diverges() -> ! {\n    loop {}\n}\n",
    ),
    (
        "src/lib.rs",
        "pub const HAS_NEVER_TYPE: bool = cfg!(probing_has_never_type);\n",
    ),
];

#[test]
fn build_script_probe_that_fails_by_design_is_a_probe_passthrough_not_a_miss() {
    let s = Scratch::new();
    let ws = s.worktree("ws", &PROBING);
    s.cargo_ok(&ws, &["build"]);
    let v = s.stats();
    // The build script and the library are the build's compiles; the probe
    // is a question the build script asks the compiler.
    assert_eq!(
        (
            counter_at(&v, "rust.misses"),
            counter_at(&v, "rust.passthrough_reasons.probe")
        ),
        (2, 1),
        "expected 2 misses (build script, lib) and 1 passthrough `probe`: {v}"
    );
}

#[test]
fn mistyped_subcommand_is_still_a_cli_error() {
    let s = Scratch::new();
    let out = std::process::Command::new(common::kache_bin())
        .arg("statz-not-a-program")
        .env("KACHE_DIR", &s.store)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", stderr_of(&out));
    assert!(
        stderr_of(&out).contains("unrecognized subcommand"),
        "{}",
        stderr_of(&out)
    );
}
