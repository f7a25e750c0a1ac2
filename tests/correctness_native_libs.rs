//! Linked outputs (binaries, test harnesses, cdylibs, dylibs, static
//! libraries, proc-macros) must be rebuilt when native code they link
//! changes, however the native library reaches the linker: through a
//! dependency of a dependency, a `#[link]` attribute (in the binary or in a
//! library that bundles the archive), `cargo:rustc-link-lib` without a kind,
//! a bare object passed with `cargo:rustc-link-arg`, or an archive that
//! newly appears earlier on the search path. Each test builds, edits the C
//! source (a returned string), rebuilds, and checks the new string is what
//! runs.
//!
//! Every test runs twice (`in_both_modes!`): with the default observation
//! and with `KACHE_OBSERVE=off`, the strict inference used wherever no input
//! recorder can run.
#![cfg(unix)] // shell-script compilers and build scripts, mode bits

mod common;
mod correctness_support;

use correctness_support::*;
use std::path::Path;

/// A build script that compiles `c/foo.c` into `$OUT_DIR` with plain `cc`
/// and `ar` (no `cc` crate, so nothing but the edited file changes), then
/// prints `{directives}` with `{out}` standing for OUT_DIR.
fn build_rs(directives: &[&str]) -> String {
    let prints: String = directives
        .iter()
        .map(|d| format!("    println!(\"{d}\");\n"))
        .collect();
    format!(
        r#"use std::process::Command;

fn run(c: &mut Command) {{
    let s = c.status().expect("spawn");
    assert!(s.success(), "{{c:?}} failed");
}}

fn main() {{
    let out = std::env::var("OUT_DIR").unwrap();
    let _ = std::fs::remove_file(format!("{{out}}/libfoo.a"));
    run(Command::new("cc").args(["-c", "-fPIC", "c/foo.c", "-o"]).arg(format!("{{out}}/foo.o")));
    run(Command::new("ar").arg("crs").arg(format!("{{out}}/libfoo.a")).arg(format!("{{out}}/foo.o")));
    println!("cargo:rerun-if-changed=c/foo.c");
{prints}}}
"#
    )
}

fn need_c_tools() {
    common::need_tool("cc");
    common::need_tool("ar");
}

const FOO_C: &str = "const char *foo_version(void) { return \"foo-v1\"; }\n";

const FFI: &str = r#"extern "C" {
    fn foo_version() -> *const std::os::raw::c_char;
}

pub fn version() -> String {
    // SAFETY: foo_version returns a static NUL-terminated string.
    unsafe { std::ffi::CStr::from_ptr(foo_version()) }
        .to_string_lossy()
        .into_owned()
}
"#;

fn package(name: &str, deps: &str, extra: &str) -> String {
    format!(
        "[package]\nname = \"{name}\"\nversion = \"0.1.0\"\nedition = \"2021\"\n{extra}\n[dependencies]\n{deps}"
    )
}

/// app (bin, with a unit test) → mid (lib) → sys (lib; build script makes
/// libfoo.a and links it statically); plug (cdylib), dynlib (dylib) and
/// archive (staticlib) → mid; pm (proc-macro) → mid, expanded by `expand`
/// (bin) into a string literal.
fn transitive_workspace(s: &Scratch) -> std::path::PathBuf {
    need_c_tools();
    let sys_build = build_rs(&[
        "cargo:rustc-link-search=native={out}",
        "cargo:rustc-link-lib=static=foo",
    ]);
    let app_main = r#"fn main() {
    println!("{}", mid::version());
}

#[cfg(test)]
mod tests {
    #[test]
    fn prints_version() {
        println!("harness sees {}", mid::version());
    }
}
"#;
    let plug = r#"#[no_mangle]
pub extern "C" fn plug_version() -> usize {
    mid::version().len()
}
"#;
    let pm = r#"use proc_macro::TokenStream;

#[proc_macro]
pub fn version_at_expansion(_: TokenStream) -> TokenStream {
    format!("{:?}", mid::version()).parse().unwrap()
}
"#;
    s.worktree(
        "ws",
        &[
            (
                "Cargo.toml",
                "[workspace]\nmembers = [\"app\", \"mid\", \"sys\", \"plug\", \"dynlib\", \"archive\", \"pm\", \"expand\"]\nresolver = \"2\"\n",
            ),
            ("sys/Cargo.toml", &package("sys", "", "build = \"build.rs\"")),
            ("sys/build.rs", &sys_build),
            ("sys/c/foo.c", FOO_C),
            ("sys/src/lib.rs", FFI),
            ("mid/Cargo.toml", &package("mid", "sys = { path = \"../sys\" }", "")),
            (
                "mid/src/lib.rs",
                "pub fn version() -> String {\n    format!(\"mid({})\", sys::version())\n}\n",
            ),
            ("app/Cargo.toml", &package("app", "mid = { path = \"../mid\" }", "")),
            ("app/src/main.rs", app_main),
            (
                "plug/Cargo.toml",
                &package(
                    "plug",
                    "mid = { path = \"../mid\" }",
                    "[lib]\ncrate-type = [\"cdylib\"]\n",
                ),
            ),
            ("plug/src/lib.rs", plug),
            (
                "dynlib/Cargo.toml",
                &package(
                    "dynlib",
                    "mid = { path = \"../mid\" }",
                    "[lib]\ncrate-type = [\"dylib\"]\n",
                ),
            ),
            ("dynlib/src/lib.rs", &plug.replace("plug_version", "dynlib_version")),
            (
                "archive/Cargo.toml",
                &package(
                    "archive",
                    "mid = { path = \"../mid\" }",
                    "[lib]\ncrate-type = [\"staticlib\"]\n",
                ),
            ),
            ("archive/src/lib.rs", &plug.replace("plug_version", "archive_version")),
            (
                "pm/Cargo.toml",
                &package(
                    "pm",
                    "mid = { path = \"../mid\" }",
                    "[lib]\nproc-macro = true\n",
                ),
            ),
            ("pm/src/lib.rs", pm),
            ("expand/Cargo.toml", &package("expand", "pm = { path = \"../pm\" }", "")),
            (
                "expand/src/main.rs",
                "fn main() {\n    println!(\"{}\", pm::version_at_expansion!());\n}\n",
            ),
        ],
    )
}

fn bump_foo(c_file: &Path) {
    edit(c_file, "foo-v1", "foo-v2");
}

fn binary_relinks_edited_c_code_of_a_transitive_dependency(mode: Observe) {
    let s = Scratch::observing(mode);
    let ws = transitive_workspace(&s);
    s.cargo_ok(&ws, &["build", "-p", "app"]);
    assert_eq!(output_of(&ws.join("target/debug/app")), "mid(foo-v1)");
    bump_foo(&ws.join("sys/c/foo.c"));
    s.cargo_ok(&ws, &["build", "-p", "app"]);
    assert_eq!(
        output_of(&ws.join("target/debug/app")),
        "mid(foo-v2)",
        "the binary still links the old libfoo.a of a dependency's dependency"
    );
}

fn test_harness_relinks_edited_c_code_of_a_transitive_dependency(mode: Observe) {
    let s = Scratch::observing(mode);
    let ws = transitive_workspace(&s);
    let args = ["test", "-p", "app", "--", "--nocapture"];
    let first = s.cargo_ok(&ws, &args);
    assert!(
        stdout_of(&first).contains("harness sees mid(foo-v1)"),
        "{}",
        stdout_of(&first)
    );
    bump_foo(&ws.join("sys/c/foo.c"));
    let second = s.cargo_ok(&ws, &args);
    assert!(
        stdout_of(&second).contains("harness sees mid(foo-v2)"),
        "the test harness still links the old libfoo.a:\n{}",
        stdout_of(&second)
    );
}

fn cdylib_relinks_edited_c_code_of_a_transitive_dependency(mode: Observe) {
    let s = Scratch::observing(mode);
    let ws = transitive_workspace(&s);
    let so = ws.join("target/debug/libplug.so");
    s.cargo_ok(&ws, &["build", "-p", "plug"]);
    assert!(contains_bytes(&std::fs::read(&so).unwrap(), "foo-v1"));
    bump_foo(&ws.join("sys/c/foo.c"));
    s.cargo_ok(&ws, &["build", "-p", "plug"]);
    let bytes = std::fs::read(&so).unwrap();
    assert!(
        contains_bytes(&bytes, "foo-v2") && !contains_bytes(&bytes, "foo-v1"),
        "the cdylib still holds the old foo.c code"
    );
}

fn proc_macro_relinks_edited_c_code_it_runs_at_expansion(mode: Observe) {
    let s = Scratch::observing(mode);
    let ws = transitive_workspace(&s);
    s.cargo_ok(&ws, &["build", "-p", "expand"]);
    assert_eq!(output_of(&ws.join("target/debug/expand")), "mid(foo-v1)");
    bump_foo(&ws.join("sys/c/foo.c"));
    s.cargo_ok(&ws, &["build", "-p", "expand"]);
    assert_eq!(
        output_of(&ws.join("target/debug/expand")),
        "mid(foo-v2)",
        "the proc-macro still runs the old foo.c code when it expands"
    );
}

/// One bin package whose build script makes `libfoo.a` and `foo.o` in
/// OUT_DIR and prints `directives`; `main.rs` is `ffi` plus a main printing
/// the version.
fn native_bin(s: &Scratch, directives: &[&str], ffi: &str) -> std::path::PathBuf {
    need_c_tools();
    let main = format!("{ffi}\nfn main() {{\n    println!(\"{{}}\", version());\n}}\n");
    s.worktree(
        "ws",
        &[
            (
                "Cargo.toml",
                &format!(
                    "{}[workspace]\n",
                    package("nat", "", "build = \"build.rs\"")
                ),
            ),
            ("build.rs", &build_rs(directives)),
            ("c/foo.c", FOO_C),
            ("src/main.rs", &main),
        ],
    )
}

fn assert_binary_follows_c_edit(s: &Scratch, ws: &Path) {
    s.cargo_ok(ws, &["build"]);
    assert_eq!(output_of(&ws.join("target/debug/nat")), "foo-v1");
    bump_foo(&ws.join("c/foo.c"));
    s.cargo_ok(ws, &["build"]);
    assert_eq!(
        output_of(&ws.join("target/debug/nat")),
        "foo-v2",
        "the binary still links the old native code"
    );
}

fn link_attribute_in_the_binarys_own_source_relinks_an_edited_archive(mode: Observe) {
    let s = Scratch::observing(mode);
    let ffi = FFI.replace(
        "extern \"C\" {",
        "#[link(name = \"foo\", kind = \"static\")]\nextern \"C\" {",
    );
    let ws = native_bin(&s, &["cargo:rustc-link-search=native={out}"], &ffi);
    assert_binary_follows_c_edit(&s, &ws);
}

fn link_lib_without_a_kind_resolving_to_an_archive_relinks_it_when_edited(mode: Observe) {
    let s = Scratch::observing(mode);
    let ws = native_bin(
        &s,
        &[
            "cargo:rustc-link-search=native={out}",
            "cargo:rustc-link-lib=foo",
        ],
        FFI,
    );
    assert_binary_follows_c_edit(&s, &ws);
}

fn object_passed_as_a_link_arg_relinks_when_edited(mode: Observe) {
    let s = Scratch::observing(mode);
    let ws = native_bin(&s, &["cargo:rustc-link-arg={out}/foo.o"], FFI);
    assert_binary_follows_c_edit(&s, &ws);
}

fn dylib_relinks_edited_c_code_of_a_transitive_dependency(mode: Observe) {
    let s = Scratch::observing(mode);
    let ws = transitive_workspace(&s);
    let so = ws.join("target/debug/libdynlib.so");
    s.cargo_ok(&ws, &["build", "-p", "dynlib"]);
    assert!(contains_bytes(&std::fs::read(&so).unwrap(), "foo-v1"));
    bump_foo(&ws.join("sys/c/foo.c"));
    s.cargo_ok(&ws, &["build", "-p", "dynlib"]);
    let bytes = std::fs::read(&so).unwrap();
    assert!(
        contains_bytes(&bytes, "foo-v2") && !contains_bytes(&bytes, "foo-v1"),
        "the dylib still holds the old foo.c code"
    );
}

fn static_library_holds_edited_c_code_of_a_transitive_dependency(mode: Observe) {
    let s = Scratch::observing(mode);
    let ws = transitive_workspace(&s);
    let a = ws.join("target/debug/libarchive.a");
    s.cargo_ok(&ws, &["build", "-p", "archive"]);
    assert!(contains_bytes(&std::fs::read(&a).unwrap(), "foo-v1"));
    bump_foo(&ws.join("sys/c/foo.c"));
    s.cargo_ok(&ws, &["build", "-p", "archive"]);
    let bytes = std::fs::read(&a).unwrap();
    assert!(
        contains_bytes(&bytes, "foo-v2") && !contains_bytes(&bytes, "foo-v1"),
        "the static library still holds the old foo.c code"
    );
}

/// A library whose own source links `libfoo.a` statically through
/// `#[link]` (so the rlib bundles the archive; no `-l` names it), used by
/// the package's binary.
fn link_attribute_in_a_library_bundles_the_edited_archive(mode: Observe) {
    let s = Scratch::observing(mode);
    need_c_tools();
    let ffi = FFI.replace(
        "extern \"C\" {",
        "#[link(name = \"foo\", kind = \"static\")]\nextern \"C\" {",
    );
    let ws = s.worktree(
        "ws",
        &[
            (
                "Cargo.toml",
                &format!(
                    "{}[workspace]\n",
                    package("nat", "", "build = \"build.rs\"")
                ),
            ),
            (
                "build.rs",
                &build_rs(&["cargo:rustc-link-search=native={out}"]),
            ),
            ("c/foo.c", FOO_C),
            ("src/lib.rs", &ffi),
            (
                "src/main.rs",
                "fn main() {\n    println!(\"{}\", nat::version());\n}\n",
            ),
        ],
    );
    assert_binary_follows_c_edit(&s, &ws);
}

/// `-lfoo` (no kind) with two search directories: the archive is first
/// found in the second; then one appears in the first, which the linker
/// now takes. The archive in the second stays byte for byte the same.
fn archive_newly_shadowing_one_later_on_the_search_path_is_linked(mode: Observe) {
    let s = Scratch::observing(mode);
    need_c_tools();
    let build = r#"use std::process::Command;

fn run(c: &mut Command) {
    let s = c.status().expect("spawn");
    assert!(s.success(), "{c:?} failed");
}

fn archive(dir: &str, define: &str) {
    std::fs::create_dir_all(dir).unwrap();
    run(Command::new("cc").args(["-c", "-fPIC", define, "c/foo.c", "-o"]).arg(format!("{dir}/foo.o")));
    run(Command::new("ar").arg("crs").arg(format!("{dir}/libfoo.a")).arg(format!("{dir}/foo.o")));
}

fn main() {
    let out = std::env::var("OUT_DIR").unwrap();
    let (first, second) = (format!("{out}/first"), format!("{out}/second"));
    std::fs::create_dir_all(&first).unwrap();
    if !std::path::Path::new(&format!("{second}/libfoo.a")).exists() {
        archive(&second, "-DFOO_WHICH=\"foo-second\"");
    }
    if std::env::var_os("FOO_IN_FIRST").is_some() {
        archive(&first, "-DFOO_WHICH=\"foo-first\"");
    }
    println!("cargo:rerun-if-env-changed=FOO_IN_FIRST");
    println!("cargo:rerun-if-changed=c/foo.c");
    println!("cargo:rustc-link-search=native={first}");
    println!("cargo:rustc-link-search=native={second}");
    println!("cargo:rustc-link-lib=foo");
}
"#;
    let main = format!("{FFI}\nfn main() {{\n    println!(\"{{}}\", version());\n}}\n");
    let ws = s.worktree(
        "ws",
        &[
            (
                "Cargo.toml",
                &format!(
                    "{}[workspace]\n",
                    package("nat", "", "build = \"build.rs\"")
                ),
            ),
            ("build.rs", build),
            (
                "c/foo.c",
                "const char *foo_version(void) { return FOO_WHICH; }\n",
            ),
            ("src/main.rs", &main),
        ],
    );
    s.cargo_ok(&ws, &["build"]);
    assert_eq!(output_of(&ws.join("target/debug/nat")), "foo-second");
    let mut again = s.cargo(&ws, &["build"]);
    again.env("FOO_IN_FIRST", "1");
    common::run_ok(again);
    assert_eq!(
        output_of(&ws.join("target/debug/nat")),
        "foo-first",
        "the binary was linked against the archive the linker no longer picks"
    );
}

in_both_modes!(
    binary_relinks_edited_c_code_of_a_transitive_dependency,
    test_harness_relinks_edited_c_code_of_a_transitive_dependency,
    cdylib_relinks_edited_c_code_of_a_transitive_dependency,
    dylib_relinks_edited_c_code_of_a_transitive_dependency,
    static_library_holds_edited_c_code_of_a_transitive_dependency,
    proc_macro_relinks_edited_c_code_it_runs_at_expansion,
    link_attribute_in_the_binarys_own_source_relinks_an_edited_archive,
    link_attribute_in_a_library_bundles_the_edited_archive,
    link_lib_without_a_kind_resolving_to_an_archive_relinks_it_when_edited,
    object_passed_as_a_link_arg_relinks_when_edited,
    archive_newly_shadowing_one_later_on_the_search_path_is_linked,
);
