//! Compiles csrc/recorder.c into the preload library whose bytes the crate embeds.
//!
//! The library only exists for Linux with glibc. For any other *target* (checked through
//! CARGO_CFG_TARGET_*, not `cfg!`, which describes the host running this script) nothing is
//! compiled and the crate reports the recorder unavailable, so that a cross `cargo check`
//! for Windows or macOS needs no C compiler. A missing or failing C compiler on Linux also
//! degrades to "unavailable" with a warning: the recorder must never break kache's build.

use std::env;
use std::path::PathBuf;

#[path = "src/target_check.rs"]
mod target_check;

fn unavailable(reason: &str) {
    println!("cargo:rustc-env=KACHE_RECORDER_UNAVAILABLE={reason}");
}

fn main() {
    println!("cargo:rerun-if-changed=csrc/recorder.c");
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo::rustc-check-cfg=cfg(kache_recorder_built)");
    let os = env::var("CARGO_CFG_TARGET_OS").unwrap_or_default();
    let target_env = env::var("CARGO_CFG_TARGET_ENV").unwrap_or_default();
    if let Some(why) = target_check::unsupported(&os, &target_env) {
        unavailable(&why);
        return;
    }
    let Some(out_dir) = env::var_os("OUT_DIR").map(PathBuf::from) else {
        unavailable("OUT_DIR was not set when kache-recorder was built");
        return;
    };
    let out = out_dir.join("kache-recorder.so");
    // The cc crate finds the C compiler for the target (CC_<target>, CC, cross prefixes) and
    // the target's flags; linking a shared object is done by hand because cc only makes
    // static archives.
    let compiler = match cc::Build::new().cargo_metadata(false).try_get_compiler() {
        Ok(c) => c,
        Err(e) => {
            println!("cargo:warning=kache-recorder: no C compiler ({e}); the input recorder is unavailable");
            unavailable("kache was built without a C compiler, so without its input recorder");
            return;
        }
    };
    let mut cmd = compiler.to_command();
    cmd.args([
        "-shared",
        "-fPIC",
        "-O2",
        // dlopen of a bare name must reach glibc as a tail call, so that the loader still
        // sees the program's object as the caller (and searches its RUNPATH).
        "-foptimize-sibling-calls",
        "-fvisibility=hidden",
        // Hooks must cope with NULL paths the way libc does; without this, the `nonnull`
        // attributes of glibc's headers let the compiler delete those checks.
        "-fno-delete-null-pointer-checks",
        // Our stat/stat64 and open/open64 are distinct symbols: the 64-bit aliasing of
        // _FILE_OFFSET_BITS=64 (or fortified inline wrappers) from CFLAGS would merge them.
        "-U_FILE_OFFSET_BITS",
        "-U_FORTIFY_SOURCE",
        "-Wall",
        "-Wno-nonnull-compare",
        "-o",
    ])
    .arg(&out)
    .arg("csrc/recorder.c")
    .arg("-ldl");
    match cmd.output() {
        Ok(o) if o.status.success() => {
            println!("cargo:rustc-cfg=kache_recorder_built");
        }
        Ok(o) => {
            println!(
                "cargo:warning=kache-recorder: compiling the preload library failed; the input recorder is unavailable: {}",
                String::from_utf8_lossy(&o.stderr).lines().next().unwrap_or("")
            );
            unavailable("kache's input recorder failed to compile when kache was built");
        }
        Err(e) => {
            println!("cargo:warning=kache-recorder: could not run the C compiler ({e}); the input recorder is unavailable");
            unavailable("kache was built without a C compiler, so without its input recorder");
        }
    }
}
