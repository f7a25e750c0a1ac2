//! Worktree paths: a value rustc bakes into an output as a runtime string
//! (CARGO_MANIFEST_DIR, OUT_DIR) keeps the unit local to its worktree, however
//! the macro that reads it is spelled; and dep-info restored into another
//! worktree names that worktree only, even when its path holds a space.
//!
//! Each runtime-path crate also includes a file through
//! `include!(concat!(env!("…"), …))`: that one use is path-independent, and
//! a cache that takes it as proof that every use is must still see the other.
#![cfg(unix)] // shell-script compilers and build scripts, mode bits

mod common;
mod correctness_support;
mod remote_support;

use correctness_support::*;
use std::path::Path;

fn bin_package(name: &str, main: &str, with_build_script: bool) -> Vec<(String, String)> {
    let mut manifest =
        format!("[package]\nname = \"{name}\"\nversion = \"0.1.0\"\nedition = \"2021\"\n");
    let mut files = Vec::new();
    if with_build_script {
        manifest.push_str("build = \"build.rs\"\n");
        files.push((
            format!("{name}/build.rs"),
            r#"fn main() {
    let out = std::env::var("OUT_DIR").unwrap();
    std::fs::write(format!("{out}/gen.rs"), "pub const GENERATED: u32 = 7;\n").unwrap();
}
"#
            .to_string(),
        ));
    }
    files.push((format!("{name}/Cargo.toml"), manifest));
    files.push((format!("{name}/src/main.rs"), main.to_string()));
    files.push((
        format!("{name}/src/consts.rs"),
        "pub const FROM_MANIFEST_DIR: u32 = 7;\n".to_string(),
    ));
    files
}

/// A one-package workspace `name` whose main is `main`.
fn one_crate(name: &str, main: &str, with_build_script: bool) -> Vec<(String, String)> {
    let mut files = bin_package(name, main, with_build_script);
    files.push((
        "Cargo.toml".to_string(),
        format!("[workspace]\nmembers = [\"{name}\"]\nresolver = \"2\"\n"),
    ));
    files
}

fn as_refs(files: &[(String, String)]) -> Vec<(&str, &str)> {
    files
        .iter()
        .map(|(p, t)| (p.as_str(), t.as_str()))
        .collect()
}

/// Builds crate `name` in worktree A, then in worktree B (same store), then
/// in a fresh B after A is deleted: B's program must print a path inside B
/// each time.
fn runtime_path_stays_in_its_worktree(name: &str, main: &str, with_build_script: bool) {
    let s = Scratch::new();
    let files = one_crate(name, main, with_build_script);
    let a = s.worktree("worktree-alpha", &as_refs(&files));
    let b = s.worktree("worktree-bravo", &as_refs(&files));
    let exe = |wt: &Path| wt.join("target/debug").join(name);

    s.cargo_ok(&a, &["build"]);
    let printed_a = output_of(&exe(&a));
    assert!(
        printed_a.starts_with(a.to_str().unwrap()),
        "A prints {printed_a}"
    );

    s.cargo_ok(&b, &["build"]);
    let printed_b = output_of(&exe(&b));
    assert!(
        printed_b.starts_with(b.to_str().unwrap()),
        "worktree B's program prints {printed_b}, a path of another worktree"
    );

    std::fs::remove_dir_all(&a).unwrap();
    std::fs::remove_dir_all(b.join("target")).unwrap();
    s.cargo_ok(&b, &["build"]);
    let printed_b = output_of(&exe(&b));
    assert!(
        printed_b.starts_with(b.to_str().unwrap()),
        "after A was deleted, B's program prints {printed_b}"
    );
}

const INCLUDE_FROM_MANIFEST_DIR: &str =
    "include!(concat!(env!(\"CARGO_MANIFEST_DIR\"), \"/src/consts.rs\"));\n";

#[test]
fn manifest_dir_read_with_braces_stays_in_its_worktree() {
    let main = format!(
        "{INCLUDE_FROM_MANIFEST_DIR}fn main() {{\n    let _ = FROM_MANIFEST_DIR;\n    println!(\"{{}}\", env!{{\"CARGO_MANIFEST_DIR\"}});\n}}\n"
    );
    runtime_path_stays_in_its_worktree("braces", &main, false);
}

#[test]
fn manifest_dir_read_with_brackets_stays_in_its_worktree() {
    let main = format!(
        "{INCLUDE_FROM_MANIFEST_DIR}fn main() {{\n    let _ = FROM_MANIFEST_DIR;\n    println!(\"{{}}\", env![\"CARGO_MANIFEST_DIR\"]);\n}}\n"
    );
    runtime_path_stays_in_its_worktree("brackets", &main, false);
}

#[test]
fn manifest_dir_read_through_a_macro_rules_macro_stays_in_its_worktree() {
    let main = format!(
        "{INCLUDE_FROM_MANIFEST_DIR}macro_rules! baked {{\n    ($name:literal) => {{\n        env!($name)\n    }};\n}}\n\nfn main() {{\n    let _ = FROM_MANIFEST_DIR;\n    println!(\"{{}}\", baked!(\"CARGO_MANIFEST_DIR\"));\n}}\n"
    );
    runtime_path_stays_in_its_worktree("through_macro", &main, false);
}

#[test]
fn manifest_dir_read_with_option_env_stays_in_its_worktree() {
    let main = format!(
        "{INCLUDE_FROM_MANIFEST_DIR}fn main() {{\n    let _ = FROM_MANIFEST_DIR;\n    println!(\"{{}}\", option_env!(\"CARGO_MANIFEST_DIR\").unwrap());\n}}\n"
    );
    runtime_path_stays_in_its_worktree("optional", &main, false);
}

#[test]
fn manifest_dir_read_with_option_env_in_braces_stays_in_its_worktree() {
    let main = format!(
        "{INCLUDE_FROM_MANIFEST_DIR}fn main() {{\n    let _ = FROM_MANIFEST_DIR;\n    println!(\"{{}}\", option_env!{{\"CARGO_MANIFEST_DIR\"}}.unwrap());\n}}\n"
    );
    runtime_path_stays_in_its_worktree("optional_braces", &main, false);
}

#[test]
fn out_dir_as_a_runtime_string_stays_in_its_worktree() {
    let main = "include!(concat!(env!(\"OUT_DIR\"), \"/gen.rs\"));\n\nfn main() {\n    let _ = GENERATED;\n    println!(\"{}\", env![\"OUT_DIR\"]);\n}\n";
    runtime_path_stays_in_its_worktree("outdir", main, true);
}

/// Every `.d` file under `dir`.
fn dep_files(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut found = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let p = e.path();
            if e.file_type().unwrap().is_dir() {
                stack.push(p);
            } else if p.extension().is_some_and(|x| x == "d") {
                found.push(p);
            }
        }
    }
    found
}

#[test]
fn worktree_path_with_a_space_gets_its_own_dep_info_and_stays_fresh() {
    let s = Scratch::new();
    let main = "include!(concat!(env!(\"OUT_DIR\"), \"/gen.rs\"));\n\nfn main() {\n    println!(\"{GENERATED}\");\n}\n";
    let files = one_crate("spaced", main, true);
    let a = s.worktree("work tree alpha", &as_refs(&files));
    let b = s.worktree("work tree bravo", &as_refs(&files));
    s.cargo_ok(&a, &["build"]);
    s.cargo_ok(&b, &["build"]);
    std::fs::remove_dir_all(&a).unwrap();
    s.cargo_ok(&b, &["build"]);
    assert_eq!(output_of(&b.join("target/debug/spaced")), "7");

    let before = s.stats();
    let again = s.cargo_ok(&b, &["build"]);
    let after = s.stats();
    let rebuilt = compiled(&again);
    assert!(
        rebuilt.is_empty(),
        "a build with nothing changed recompiled {rebuilt:?}"
    );
    for k in ["rust.hits", "rust.misses", "rust.compiler_runs"] {
        assert_eq!(
            common::counter_at(&after, k),
            common::counter_at(&before, k),
            "{k} moved in a build with nothing changed"
        );
    }
    let d_files = dep_files(&b.join("target"));
    assert!(!d_files.is_empty());
    for d in d_files {
        let text = std::fs::read_to_string(&d).unwrap();
        assert!(
            !text.contains("alpha"),
            "{} names the other worktree:\n{text}",
            d.display()
        );
    }
}

/// A path-local result is right only where its roots are the same; it is
/// kept out of the remote even for a machine at the very same path (which
/// could not tell a stale path from its own). The library it uses is shared.
#[test]
fn path_local_results_are_never_uploaded() {
    use remote_support::Remote;
    let s = Scratch::new();
    let main =
        "fn main() {\n    println!(\"{} {}\", greet::hello(), env!(\"CARGO_MANIFEST_DIR\"));\n}\n";
    let files = [
        (
            "Cargo.toml",
            "[workspace]\nmembers = [\"app\", \"greet\"]\nresolver = \"2\"\n",
        ),
        (
            "greet/Cargo.toml",
            "[package]\nname = \"greet\"\nversion = \"0.1.0\"\nedition = \"2021\"\n",
        ),
        ("greet/src/lib.rs", "pub fn hello() -> &'static str {\n    \"hello\"\n}\n"),
        (
            "app/Cargo.toml",
            "[package]\nname = \"app\"\nversion = \"0.1.0\"\nedition = \"2021\"\n\n[dependencies]\ngreet = { path = \"../greet\" }\n",
        ),
        ("app/src/main.rs", main),
    ];
    let ws = s.worktree("ws", &files);
    let remote = Remote::Dir(s.path("shared"));
    let build = |store: &Path| {
        let mut c = cargo_with_store(&ws, store, &["build"]);
        remote.apply(&mut c);
        common::run_ok(c);
        assert_eq!(
            output_of(&ws.join("target/debug/app")),
            format!("hello {}", ws.join("app").display())
        );
    };
    let first = s.path("first-store");
    build(&first);
    remote_support::kache_ok(&first, &remote, &["remote", "drain"]);

    std::fs::remove_dir_all(ws.join("target")).unwrap();
    let second = s.path("second-store");
    build(&second);
    let v = common::stats(&second);
    assert_eq!(
        (
            common::counter_at(&v, "rust.remote_hits"),
            common::counter_at(&v, "rust.misses")
        ),
        (1, 1),
        "expected the library from the remote and the path-local binary compiled: {v}"
    );
}
