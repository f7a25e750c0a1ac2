//! Inputs the compiler reads that no argument list or dep-info names: a
//! proc-macro reading an environment variable or a file while it expands,
//! an assembler `.incbin`, and a file that was absent when the compile ran
//! and changes its result once present (a module candidate, a header earlier
//! on the include path). A change to any of them must reach the artifact.
//!
//! The Rust cases build a second worktree on the same store, so cargo's own
//! freshness tracking plays no part: the cache alone decides what B gets.
#![cfg(unix)] // shell-script compilers and build scripts, mode bits

mod common;
mod correctness_support;

use common::{need_tool, CcProject};
use correctness_support::*;

const PM_MANIFEST: &str =
    "[package]\nname = \"pm\"\nversion = \"0.1.0\"\nedition = \"2021\"\n\n[lib]\nproc-macro = true\n";
const APP_MANIFEST: &str =
    "[package]\nname = \"app\"\nversion = \"0.1.0\"\nedition = \"2021\"\n\n[dependencies]\npm = { path = \"../pm\" }\n";
const WORKSPACE: &str = "[workspace]\nmembers = [\"app\", \"pm\"]\nresolver = \"2\"\n";
const APP_MAIN: &str = "fn main() {\n    println!(\"{}\", pm::secret!());\n}\n";

/// A proc-macro `secret!()` expanding to a string literal computed by
/// `body` (an expression of type String) at expansion time, used by `app`.
fn proc_macro_workspace(body: &str) -> Vec<(&'static str, String)> {
    let pm = format!(
        "use proc_macro::TokenStream;\n\n#[proc_macro]\npub fn secret(_: TokenStream) -> TokenStream {{\n    let value: String = {body};\n    format!(\"{{value:?}}\").parse().unwrap()\n}}\n"
    );
    vec![
        ("Cargo.toml", WORKSPACE.to_string()),
        ("pm/Cargo.toml", PM_MANIFEST.to_string()),
        ("pm/src/lib.rs", pm),
        ("app/Cargo.toml", APP_MANIFEST.to_string()),
        ("app/src/main.rs", APP_MAIN.to_string()),
    ]
}

fn refs<'a>(files: &'a [(&'a str, String)]) -> Vec<(&'a str, &'a str)> {
    files.iter().map(|(p, t)| (*p, t.as_str())).collect()
}

#[test]
fn proc_macro_reading_an_env_var_at_expansion_sees_its_new_value() {
    let s = Scratch::new();
    let files = proc_macro_workspace("std::env::var(\"PM_SECRET\").unwrap_or_default()");
    let a = s.worktree("a", &refs(&files));
    let b = s.worktree("b", &refs(&files));
    let mut build_a = s.cargo(&a, &["build"]);
    build_a.env("PM_SECRET", "one");
    common::run_ok(build_a);
    assert_eq!(output_of(&a.join("target/debug/app")), "one");

    let mut build_b = s.cargo(&b, &["build"]);
    build_b.env("PM_SECRET", "two");
    common::run_ok(build_b);
    assert_eq!(
        output_of(&b.join("target/debug/app")),
        "two",
        "the expansion made with PM_SECRET=one was served for PM_SECRET=two"
    );
}

#[test]
fn proc_macro_reading_a_file_at_expansion_sees_its_new_content() {
    let s = Scratch::new();
    // CARGO_MANIFEST_DIR is the crate being compiled (app), as for
    // include_dir!-style macros that read assets next to the manifest.
    let mut files = proc_macro_workspace(
        "std::fs::read_to_string(std::path::Path::new(&std::env::var(\"CARGO_MANIFEST_DIR\").unwrap()).join(\"secret.txt\")).unwrap().trim().to_string()",
    );
    files.push(("app/secret.txt", "one\n".to_string()));
    let a = s.worktree("a", &refs(&files));
    let b = s.worktree("b", &refs(&files));
    std::fs::write(b.join("app/secret.txt"), "two\n").unwrap();

    s.cargo_ok(&a, &["build"]);
    assert_eq!(output_of(&a.join("target/debug/app")), "one");
    s.cargo_ok(&b, &["build"]);
    assert_eq!(
        output_of(&b.join("target/debug/app")),
        "two",
        "the expansion of another worktree's secret.txt was served"
    );
}

#[test]
fn incbin_data_file_change_reaches_the_object() {
    need_tool("gcc");
    let p = CcProject::new();
    p.write(
        "blob.c",
        "__asm__(\".section .rodata\\n.globl blob\\nblob:\\n.incbin \\\"data.bin\\\"\\n.byte 0\\n.previous\\n\");\n",
    );
    p.write("data.bin", "INCBIN-ONE");
    p.cc("gcc", &["-c", "blob.c", "-o", "blob.o"]);
    assert!(contains_bytes(&p.read("blob.o"), "INCBIN-ONE"));

    p.write("data.bin", "INCBIN-TWO");
    p.cc("gcc", &["-c", "blob.c", "-o", "blob.o"]);
    let obj = p.read("blob.o");
    assert!(
        contains_bytes(&obj, "INCBIN-TWO") && !contains_bytes(&obj, "INCBIN-ONE"),
        "the object still embeds the old data.bin"
    );
}

/// Without an input recorder (`KACHE_OBSERVE=off`), a source whose
/// assembly reads a file kache cannot see is never cached.
#[test]
fn incbin_is_a_passthrough_when_inputs_are_inferred_strictly() {
    need_tool("gcc");
    let s = Scratch::observing(Observe::Strict);
    let dir = s.worktree(
        "c",
        &[
            (
                "blob.c",
                "__asm__(\".section .rodata\\n.globl blob\\nblob:\\n.incbin \\\"data.bin\\\"\\n.byte 0\\n.previous\\n\");\n",
            ),
            ("data.bin", "INCBIN-ONE"),
        ],
    );
    common::run_ok(s.kache_cc(&dir, "gcc", &["-c", "blob.c", "-o", "blob.o"]));
    std::fs::write(dir.join("data.bin"), "INCBIN-TWO").unwrap();
    common::run_ok(s.kache_cc(&dir, "gcc", &["-c", "blob.c", "-o", "blob.o"]));
    assert!(contains_bytes(
        &std::fs::read(dir.join("blob.o")).unwrap(),
        "INCBIN-TWO"
    ));
    let v = s.stats();
    assert_eq!(
        (
            common::counter_at(&v, "cc.passthrough_reasons.cc:incbin"),
            common::counter_at(&v, "cc.misses") + common::counter_at(&v, "cc.hits")
        ),
        (2, 0),
        "{v}"
    );
}

#[test]
fn module_file_newly_shadowing_another_fails_as_rustc_does() {
    let s = Scratch::new();
    let files = [
        (
            "Cargo.toml",
            "[package]\nname = \"shadow\"\nversion = \"0.1.0\"\nedition = \"2021\"\n\n[workspace]\n",
        ),
        (
            "src/main.rs",
            "mod foo;\n\nfn main() {\n    println!(\"{}\", foo::NAME);\n}\n",
        ),
        ("src/foo.rs", "pub const NAME: &str = \"foo.rs\";\n"),
    ];
    let a = s.worktree("a", &files);
    let b = s.worktree("b", &files);
    s.cargo_ok(&a, &["build"]);
    assert_eq!(output_of(&a.join("target/debug/shadow")), "foo.rs");

    // B is A plus foo/mod.rs (a branch that adds it): both candidates for
    // `mod foo;` exist, which rustc rejects.
    write_files(
        &b,
        &[("src/foo/mod.rs", "pub const NAME: &str = \"foo/mod.rs\";\n")],
    );
    let out = s.cargo(&b, &["build"]).output().unwrap();
    assert!(
        !out.status.success() && stderr_of(&out).contains("E0761"),
        "expected error E0761 (file for module `foo` found at both locations); got {}:\n{}",
        out.status,
        stderr_of(&out)
    );
}

#[test]
fn header_newly_shadowing_one_later_on_the_include_path_is_used() {
    need_tool("gcc");
    let p = CcProject::new();
    p.write(
        "x.c",
        "#include \"h.h\"\nconst char *which_header = WHICH;\n",
    );
    p.write("inc2/h.h", "#define WHICH \"from-inc2\"\n");
    std::fs::create_dir_all(p.root.join("inc1")).unwrap();
    let args = ["-c", "x.c", "-Iinc1", "-Iinc2", "-o", "x.o"];
    p.cc("gcc", &args);
    assert!(contains_bytes(&p.read("x.o"), "from-inc2"));

    p.write("inc1/h.h", "#define WHICH \"from-inc1\"\n");
    p.cc("gcc", &args);
    assert!(
        contains_bytes(&p.read("x.o"), "from-inc1"),
        "the object was compiled against the shadowed header"
    );
}
