//! What the input recorder saw a compile read is what its key holds, and
//! what kache leaves out it leaves out on purpose (src/wrap/observe.rs,
//! recorder/src/env_table.rs): a directory put first on PATH, a renamed
//! asset a proc-macro lists, a new loader search path, a record made without
//! the recorder each miss; files added to rustc's own search directories
//! and `CI` (for compiles that load no proc-macro) cost no hit.
//!
//! Each test uses real cargo and rustc through kache with a private store;
//! the worktrees of one test share the store, so the cache alone decides
//! what the second one gets.

#![cfg(target_os = "linux")] // the input recorder (LD_PRELOAD, glibc) is Linux-only

mod common;

use common::*;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Writes `files` (relative path, text) below `root` and returns it.
fn write_tree(root: &Path, files: &[(&str, &str)]) -> PathBuf {
    for (rel, text) in files {
        let p = root.join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, text).unwrap();
    }
    root.to_path_buf()
}

/// An executable shell script at `path`.
fn write_script(path: &Path, body: &str) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, format!("#!/bin/sh\n{body}\n")).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).unwrap();
}

/// Runs `exe` and returns its trimmed stdout.
fn output_of(exe: &Path) -> String {
    let out = Command::new(exe).output().unwrap();
    assert!(out.status.success(), "{} failed", exe.display());
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

fn path_with_first(dir: &Path) -> String {
    format!(
        "{}:{}",
        dir.display(),
        std::env::var("PATH").unwrap_or_default()
    )
}

#[test]
fn a_cc_newly_first_on_path_links_what_it_would_link_without_the_cache() {
    let tmp = tempfile::tempdir().unwrap();
    let store = tmp.path().join("store");
    let a = fixture_at(&tmp.path().join("a"));
    let b = fixture_at(&tmp.path().join("b"));
    build(&a, &store);
    let units = counter(&stats(&store), "rust", "misses");

    // B runs with another `cc` first on PATH: rustc runs `cc` by name to
    // link, so B's binary is that cc's link, whatever A's was.
    let log = tmp.path().join("cc.log");
    let real = which("cc");
    write_script(
        &tmp.path().join("shim/cc"),
        &format!(
            "echo \"$@\" >> {}\nexec {} \"$@\"",
            log.display(),
            real.display()
        ),
    );
    let mut c = cargo(&b, &store, &["build"]);
    c.env("PATH", path_with_first(&tmp.path().join("shim")));
    run_ok(c);
    let calls = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(
        calls.lines().any(|l| l.contains("/deps/app-")),
        "the cc first on PATH never linked app: A's binary was served\n{calls}"
    );
    let s = stats(&store);
    // Libraries start no program, so PATH is not theirs to key.
    assert!(
        counter(&s, "rust", "hits") >= 5 && counter(&s, "rust", "misses") < 2 * units,
        "libraries should still hit: {s}"
    );
    assert_eq!(
        output_of(&b.join("target/debug/app")),
        run_app(&a, "debug").trim()
    );
}

fn which(name: &str) -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|d| d.join(name))
        .find(|p| p.is_file())
        .unwrap_or_else(|| panic!("{name} is missing from PATH"))
}

const LISTING_PM: &str = r#"use proc_macro::TokenStream;

/// The names in the calling crate's `assets/` directory, sorted, as a string
/// literal: it lists the directory and reads no file in it.
#[proc_macro]
pub fn asset_names(_: TokenStream) -> TokenStream {
    let dir = std::path::Path::new(&std::env::var("CARGO_MANIFEST_DIR").unwrap()).join("assets");
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    format!("{:?}", names.join(",")).parse().unwrap()
}
"#;

fn listing_workspace(root: &Path, asset: &str) -> PathBuf {
    write_tree(
        root,
        &[
            (
                "Cargo.toml",
                "[workspace]\nmembers = [\"app\", \"pm\"]\nresolver = \"2\"\n",
            ),
            (
                "pm/Cargo.toml",
                "[package]\nname = \"pm\"\nversion = \"0.1.0\"\nedition = \"2021\"\n\n[lib]\nproc-macro = true\n",
            ),
            ("pm/src/lib.rs", LISTING_PM),
            (
                "app/Cargo.toml",
                "[package]\nname = \"app\"\nversion = \"0.1.0\"\nedition = \"2021\"\n\n[dependencies]\npm = { path = \"../pm\" }\n",
            ),
            (
                "app/src/main.rs",
                "fn main() {\n    println!(\"{}\", pm::asset_names!());\n}\n",
            ),
            (&format!("app/assets/{asset}"), "same bytes\n"),
        ],
    )
}

#[test]
fn an_asset_renamed_in_a_directory_a_proc_macro_lists_misses() {
    let tmp = tempfile::tempdir().unwrap();
    let store = tmp.path().join("store");
    let a = listing_workspace(&tmp.path().join("a"), "logo.png");
    let b = listing_workspace(&tmp.path().join("b"), "icon.png");
    build(&a, &store);
    assert_eq!(output_of(&a.join("target/debug/app")), "logo.png");
    build(&b, &store);
    assert_eq!(
        output_of(&b.join("target/debug/app")),
        "icon.png",
        "the expansion of A's listing was served for B's renamed asset"
    );
    // The proc-macro itself reads nothing that differs: it hits.
    assert!(counter(&stats(&store), "rust", "hits") >= 1);
    // Both results are kept apart: A, rebuilt, gets its own again.
    run_ok(cargo(&a, &store, &["clean"]));
    build(&a, &store);
    assert_eq!(output_of(&a.join("target/debug/app")), "logo.png");
}

#[test]
fn files_added_to_rustcs_own_search_dirs_cost_no_hit() {
    let tmp = tempfile::tempdir().unwrap();
    let store = tmp.path().join("store");
    let a = fixture_at(&tmp.path().join("a"));
    build(&a, &store);
    let units = counter(&stats(&store), "rust", "misses");
    run_ok(cargo(&a, &store, &["clean"]));
    // rustc lists target/debug/deps on every run; what else lies there
    // (here a file no compile asks for) is not an input.
    let deps = a.join("target/debug/deps");
    std::fs::create_dir_all(&deps).unwrap();
    std::fs::write(deps.join("libunrelated-0123456789abcdef.rlib"), "x").unwrap();
    build(&a, &store);
    let s = stats(&store);
    assert_eq!(counter(&s, "rust", "hits"), units, "{s}");
}

#[test]
fn ci_set_costs_no_hit_for_compiles_that_load_no_proc_macro() {
    let tmp = tempfile::tempdir().unwrap();
    let store = tmp.path().join("store");
    let a = fixture_at(&tmp.path().join("a"));
    let b = fixture_at(&tmp.path().join("b"));
    let mut c = cargo(&a, &store, &["build"]);
    c.env_remove("CI");
    run_ok(c);
    let units = counter(&stats(&store), "rust", "misses");

    let mut c = cargo(&b, &store, &["build"]);
    c.env("CI", "true");
    run_ok(c);
    let s = stats(&store);
    // rustc reads CI only to turn off crash dialogs; `app` loads the
    // fixture's proc-macro, which could read it too.
    assert_eq!(counter(&s, "rust", "misses"), units + 1, "{s}");
    assert_eq!(counter(&s, "rust", "hits"), units - 1, "{s}");
}

#[test]
fn a_new_loader_search_path_misses() {
    let tmp = tempfile::tempdir().unwrap();
    let store = tmp.path().join("store");
    let a = fixture_at(&tmp.path().join("a"));
    let b = fixture_at(&tmp.path().join("b"));
    build(&a, &store);
    let units = counter(&stats(&store), "rust", "misses");

    // A directory the dynamic loader would search first for every library
    // of rustc, cc and ld: what it would find there was never looked up.
    let libs = tmp.path().join("libs");
    std::fs::create_dir_all(&libs).unwrap();
    let mut c = cargo(&b, &store, &["build"]);
    c.env("LD_LIBRARY_PATH", &libs);
    run_ok(c);
    let s = stats(&store);
    assert_eq!(counter(&s, "rust", "hits"), 0, "{s}");
    assert_eq!(counter(&s, "rust", "misses"), 2 * units, "{s}");
}

#[test]
fn records_inferred_without_the_recorder_are_not_served_to_an_observing_build() {
    let tmp = tempfile::tempdir().unwrap();
    let store = tmp.path().join("store");
    let a = fixture_at(&tmp.path().join("a"));
    let mut c = cargo(&a, &store, &["build"]);
    c.env("KACHE_OBSERVE", "off");
    run_ok(c);
    let units = counter(&stats(&store), "rust", "misses");
    assert_eq!(counter(&stats(&store), "rust", "observed"), 0);

    // Observing, the inferred records may lack an input a recording would
    // have: every unit compiles again, under the recorder.
    run_ok(cargo(&a, &store, &["clean"]));
    build(&a, &store);
    let s = stats(&store);
    assert_eq!(counter(&s, "rust", "hits"), 0, "{s}");
    assert_eq!(counter(&s, "rust", "observed"), units, "{s}");

    run_ok(cargo(&a, &store, &["clean"]));
    build(&a, &store);
    assert_eq!(counter(&stats(&store), "rust", "hits"), units);
}

#[test]
fn a_target_dir_reached_through_a_symbolic_link_is_cached_and_shared() {
    // A kache mount is reached this way too: `target` links into the store.
    let tmp = tempfile::tempdir().unwrap();
    let store = tmp.path().join("store");
    let mut units = 0;
    for (i, name) in ["a", "b"].iter().enumerate() {
        let wt = fixture_at(&tmp.path().join(name));
        let real = tmp.path().join(format!("elsewhere/{name}-target"));
        std::fs::create_dir_all(&real).unwrap();
        std::os::unix::fs::symlink(&real, wt.join("target")).unwrap();
        build(&wt, &store);
        let s = stats(&store);
        if i == 0 {
            units = counter(&s, "rust", "misses");
            assert!(
                s["rust"]["not_stored"].as_object().is_none_or(|m| m.is_empty()),
                "rustc's temporaries, written through one name and read through the other, were taken for inputs: {s}"
            );
        } else {
            assert_eq!(counter(&s, "rust", "hits"), units, "{s}");
        }
    }
}

#[test]
fn a_linker_the_recorder_cannot_see_into_falls_back_to_inference_and_still_hits() {
    let tmp = tempfile::tempdir().unwrap();
    let store = tmp.path().join("store");
    // A linker driver that runs the real one with LD_PRELOAD removed: the
    // recorder sees the library dropped, so what the link read is unknown.
    let linker = tmp.path().join("blind-cc");
    write_script(&linker, "exec env -u LD_PRELOAD cc \"$@\"");
    let flags = format!("-C linker={}", linker.display());
    let mut units = 0;
    for (i, name) in ["a", "b"].iter().enumerate() {
        let wt = fixture_at(&tmp.path().join(name));
        let mut c = cargo(&wt, &store, &["build"]);
        c.env("RUSTFLAGS", &flags);
        run_ok(c);
        let s = stats(&store);
        if i == 0 {
            units = counter(&s, "rust", "misses");
            // The binary, the build scripts and the proc-macro link; the
            // libraries link nothing and are observed whole.
            let fallbacks = counter(&s, "rust", "observe_fallbacks");
            assert!(fallbacks >= 4, "{s}");
            assert_eq!(counter(&s, "rust", "observed") + fallbacks, units, "{s}");
            assert!(
                s["rust"]["not_stored"]
                    .as_object()
                    .is_none_or(|m| m.is_empty()),
                "{s}"
            );
        } else {
            assert_eq!(counter(&s, "rust", "hits"), units, "{s}");
        }
        assert!(run_app(&wt, "debug").contains("csys: 5"));
    }
}
