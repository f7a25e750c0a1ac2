//! The recorder on a real `cargo build`: rustc runs under it as `RUSTC_WRAPPER`
//! (`kache-record`), and what proc-macros and the linker read shows up in the compile that
//! ran them.
#![cfg(target_os = "linux")]

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use support::need_tool;

/// A workspace: `pm` (proc-macro reading PM_SECRET and data.txt when it expands), `util`
/// (lib), `app` (bin using both).
fn write_fixture(root: &Path) {
    let files: &[(&str, &str)] = &[
        (
            "Cargo.toml",
            "[workspace]\nmembers = [\"pm\", \"util\", \"app\"]\nresolver = \"2\"\n",
        ),
        (
            "pm/Cargo.toml",
            "[package]\nname = \"pm\"\nversion = \"0.1.0\"\nedition = \"2021\"\n\n[lib]\nproc-macro = true\n",
        ),
        (
            "pm/src/lib.rs",
            r#"use proc_macro::TokenStream;

#[proc_macro]
pub fn secret(_: TokenStream) -> TokenStream {
    let v = std::env::var("PM_SECRET").unwrap_or_else(|_| "unset".to_string());
    let data = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/data.txt"))
        .unwrap_or_default();
    format!("({:?}, {:?})", v, data.trim()).parse().unwrap()
}
"#,
        ),
        ("pm/data.txt", "read at expansion time\n"),
        (
            "util/Cargo.toml",
            "[package]\nname = \"util\"\nversion = \"0.1.0\"\nedition = \"2021\"\n",
        ),
        ("util/src/lib.rs", "pub fn twice(x: u32) -> u32 {\n    x * 2\n}\n"),
        (
            "app/Cargo.toml",
            "[package]\nname = \"app\"\nversion = \"0.1.0\"\nedition = \"2021\"\n\n[dependencies]\npm = { path = \"../pm\" }\nutil = { path = \"../util\" }\n",
        ),
        (
            "app/src/main.rs",
            "fn main() {\n    let (s, d) = pm::secret!();\n    println!(\"{s} {d} {}\", util::twice(21));\n}\n",
        ),
    ];
    for (name, text) in files {
        let p = root.join(name);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, text).unwrap();
    }
}

/// The workspace root and the report of each rustc call, built once for this file's tests.
fn build() -> &'static (PathBuf, Vec<String>) {
    static BUILD: OnceLock<(PathBuf, Vec<String>)> = OnceLock::new();
    BUILD.get_or_init(|| {
        need_tool("cargo");
        need_tool("cc");
        let base = Path::new(env!("CARGO_TARGET_TMPDIR")).join("recorder-cargo-rustc");
        let _ = std::fs::remove_dir_all(&base);
        let ws = base.join("ws");
        let out = base.join("reports");
        std::fs::create_dir_all(&out).unwrap();
        write_fixture(&ws);
        let mut cmd = Command::new("cargo");
        cmd.current_dir(&ws).args(["build", "--offline"]);
        for v in [
            "CARGO_TARGET_DIR",
            "CARGO_BUILD_TARGET_DIR",
            "RUSTFLAGS",
            "CARGO_ENCODED_RUSTFLAGS",
            "RUSTC_WORKSPACE_WRAPPER",
            "CARGO_BUILD_RUSTC_WRAPPER",
            "CARGO_INCREMENTAL",
        ] {
            cmd.env_remove(v);
        }
        cmd.env("RUSTC_WRAPPER", env!("CARGO_BIN_EXE_kache-record"))
            .env("KACHE_RECORD_OUT", &out)
            .env("KACHE_RECORD_DIR", base.join("recorder"))
            .env("PM_SECRET", "hunter2")
            .env("CARGO_TERM_COLOR", "never");
        let o = cmd.output().expect("run cargo");
        assert!(
            o.status.success(),
            "cargo build failed:\n{}",
            String::from_utf8_lossy(&o.stderr)
        );
        let run = Command::new(ws.join("target/debug/app")).output().unwrap();
        assert_eq!(
            String::from_utf8_lossy(&run.stdout),
            "hunter2 read at expansion time 42\n"
        );
        let reports = std::fs::read_dir(&out)
            .unwrap()
            .map(|e| std::fs::read_to_string(e.unwrap().path()).unwrap())
            .collect();
        (ws, reports)
    })
}

/// The report of the compile that read `source`.
fn report_reading(source: &Path) -> &'static str {
    let (_, reports) = build();
    let line = format!("read\t{}\n", source.display());
    let found: Vec<_> = reports.iter().filter(|r| r.contains(&line)).collect();
    assert_eq!(found.len(), 1, "one compile reads {}", source.display());
    found[0]
}

fn lines<'a>(report: &'a str, tag: &str) -> Vec<&'a str> {
    report
        .lines()
        .filter_map(|l| l.strip_prefix(tag)?.strip_prefix('\t'))
        .collect()
}

#[test]
fn a_proc_macro_reading_env_and_a_file_at_expansion_is_seen_under_cargo() {
    let (ws, _) = build();
    let report = report_reading(&ws.join("app/src/main.rs"));
    assert!(lines(report, "lost").is_empty(), "{report}");
    assert!(
        lines(report, "env").contains(&"PM_SECRET\thunter2"),
        "the macro's std::env::var(\"PM_SECRET\") is not among the env reads:\n{report}"
    );
    let data = ws.join("pm/data.txt");
    assert!(
        lines(report, "read").contains(&data.to_str().unwrap()),
        "the macro's read of {} is not seen:\n{report}",
        data.display()
    );
    // The proc-macro itself was loaded by rustc (dlopen).
    assert!(
        lines(report, "read")
            .iter()
            .any(|l| l.contains("/target/debug/deps/libpm-") && l.ends_with(".so")),
        "{report}"
    );
}

#[test]
fn linking_a_bin_shows_the_rlibs_and_libgcc_the_linker_read() {
    let (ws, _) = build();
    let report = report_reading(&ws.join("app/src/main.rs"));
    let reads = lines(report, "read");
    assert!(
        reads
            .iter()
            .any(|l| l.contains("/target/debug/deps/libutil-") && l.ends_with(".rlib")),
        "the util rlib is not read:\n{report}"
    );
    // The linker's libgcc, from gcc's own directory (rustc itself maps the system's
    // libgcc_s.so.1 when it starts, in every compile).
    let linker_libgcc = |l: &&str| l.contains("/gcc/") && l.contains("libgcc");
    assert!(
        reads.iter().any(linker_libgcc),
        "libgcc is not read by the linker:\n{report}"
    );
    assert!(
        lines(report, "program").iter().any(|l| l.ends_with("/cc")),
        "the linker driver is not among the programs:\n{report}"
    );
    // A lib compile runs no linker.
    let lib = report_reading(&ws.join("util/src/lib.rs"));
    assert!(!lines(lib, "read").iter().any(linker_libgcc), "{lib}");
}
