//! The environment a compile runs in: values kache cannot decode must not
//! break a build, spellings that mean the same thing must not cost hits, and
//! `-C target-cpu=native` (whose meaning is the machine's CPU) must never
//! bring one machine's code to another.
#![cfg(unix)] // shell-script compilers and build scripts, mode bits

mod common;
mod correctness_support;
mod remote_support;

use common::{counter_at, need_tool, CcProject};
use correctness_support::*;
use std::ffi::OsString;
use std::os::unix::ffi::OsStringExt;

const LIB_AND_BIN: [(&str, &str); 5] = [
    (
        "Cargo.toml",
        "[workspace]\nmembers = [\"app\", \"greet\"]\nresolver = \"2\"\n",
    ),
    (
        "greet/Cargo.toml",
        "[package]\nname = \"greet\"\nversion = \"0.1.0\"\nedition = \"2021\"\n",
    ),
    (
        "greet/src/lib.rs",
        "pub fn greet() -> &'static str {\n    \"hello\"\n}\n",
    ),
    (
        "app/Cargo.toml",
        "[package]\nname = \"app\"\nversion = \"0.1.0\"\nedition = \"2021\"\n\n[dependencies]\ngreet = { path = \"../greet\" }\n",
    ),
    (
        "app/src/main.rs",
        "fn main() {\n    println!(\"{}\", greet::greet());\n}\n",
    ),
];

fn not_utf8() -> OsString {
    OsString::from_vec(b"caf\xe9 \xff".to_vec())
}

#[test]
fn non_utf8_environment_variable_does_not_break_a_cargo_build() {
    let s = Scratch::new();
    let ws = s.worktree("ws", &LIB_AND_BIN);
    let mut c = s.cargo(&ws, &["build"]);
    c.env("KACHE_TEST_NOT_UTF8", not_utf8());
    let out = c.output().unwrap();
    assert!(
        out.status.success(),
        "a variable holding non-UTF-8 bytes broke the build:\n{}",
        stderr_of(&out)
    );
    assert_eq!(output_of(&ws.join("target/debug/app")), "hello");
}

#[test]
fn unrelated_non_utf8_variable_does_not_stop_caching() {
    let s = Scratch::new();
    let ws = s.worktree("ws", &LIB_AND_BIN);
    let build = || {
        let mut c = s.cargo(&ws, &["build"]);
        c.env("KACHE_TEST_NOT_UTF8", not_utf8());
        common::run_ok(c);
    };
    build();
    let first = s.stats();
    let units = counter_at(&first, "rust.misses");
    assert!(units >= 2, "{first}");
    assert_eq!(counter_at(&first, "rust.passthroughs"), 0, "{first}");
    s.cargo_ok(&ws, &["clean"]);
    build();
    let second = s.stats();
    assert_eq!(
        counter_at(&second, "rust.hits"),
        units,
        "a variable no key reads made compiles uncacheable: {second}"
    );
    assert_eq!(output_of(&ws.join("target/debug/app")), "hello");
}

#[test]
fn non_utf8_environment_variable_does_not_break_a_c_compile() {
    need_tool("gcc");
    let p = CcProject::new();
    p.write("x.c", "int x(void) { return 1; }\n");
    for _ in 0..2 {
        let mut c = p.cmd("gcc", &["-c", "x.c", "-o", "x.o"]);
        c.env("KACHE_TEST_NOT_UTF8", not_utf8());
        common::run_ok(c);
        assert!(p.read("x.o").starts_with(b"\x7fELF"));
    }
    let v = p.stats();
    assert_eq!(
        (counter_at(&v, "cc.misses"), counter_at(&v, "cc.hits")),
        (1, 1),
        "the unrelated variable stopped caching: {v}"
    );
}

#[test]
fn empty_rustflags_and_unset_rustflags_share_entries() {
    let s = Scratch::new();
    let ws = s.worktree("ws", &LIB_AND_BIN);
    s.cargo_ok(&ws, &["build"]);
    let first = s.stats();
    let units = counter_at(&first, "rust.misses");
    assert!(units >= 2, "{first}");

    s.cargo_ok(&ws, &["clean"]);
    let mut c = s.cargo(&ws, &["build"]);
    c.env("RUSTFLAGS", "");
    common::run_ok(c);
    let second = s.stats();
    assert_eq!(
        (
            counter_at(&second, "rust.hits"),
            counter_at(&second, "rust.misses")
        ),
        (units, units),
        "RUSTFLAGS=\"\" (cargo passes no flag either way) missed: {second}"
    );
}

/// `-C target-cpu=native` means "this machine's CPU". Machine B is
/// simulated honestly: its rustc runs under qemu-user with an older CPU
/// model (Nehalem), so LLVM's host detection sees that CPU, while rustc's
/// identity (`rustc -vV`) and every argument are the same as on machine A.
/// The two machines share a remote directory. Whatever kache does (key on
/// the CPU native resolves to, or keep such entries local), B's program
/// must report B's CPU features.
#[cfg(target_arch = "x86_64")]
#[test]
fn native_cpu_entries_are_never_served_to_a_machine_with_another_cpu() {
    use remote_support::Remote;

    need_tool("qemu-x86_64");
    const FEATURES: [&str; 6] = ["sse4.2", "avx", "avx2", "bmi2", "fma", "avx512f"];
    let rustc = real_rustc();
    let nehalem = |args: &[&str]| {
        let out = std::process::Command::new("qemu-x86_64")
            .args(["-cpu", "Nehalem"])
            .arg(&rustc)
            .args(args)
            .output()
            .expect("spawn qemu-x86_64");
        assert!(out.status.success(), "{}", stderr_of(&out));
        String::from_utf8(out.stdout).unwrap()
    };
    let host_cfg = std::process::Command::new(&rustc)
        .args(["--print", "cfg", "-C", "target-cpu=native"])
        .output()
        .unwrap();
    let host_cfg = String::from_utf8(host_cfg.stdout).unwrap();
    let b_cfg = nehalem(&["--print", "cfg", "-C", "target-cpu=native"]);
    let line_for = |cfg: &str| {
        FEATURES
            .iter()
            .map(|f| {
                let on = cfg.lines().any(|l| l == format!("target_feature=\"{f}\""));
                format!("{f}={on}")
            })
            .collect::<Vec<_>>()
            .join(" ")
    };
    let (want_a, want_b) = (line_for(&host_cfg), line_for(&b_cfg));
    assert_ne!(
        want_a, want_b,
        "this host's CPU has the same features as Nehalem; the test cannot tell machines apart"
    );

    let main = format!(
        "fn main() {{\n    let parts = [{}];\n    println!(\"{{}}\", parts.join(\" \"));\n}}\n",
        FEATURES
            .iter()
            .map(|f| format!("format!(\"{f}={{}}\", cfg!(target_feature = \"{f}\"))"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    let files = [
        (
            "Cargo.toml",
            "[package]\nname = \"cpu\"\nversion = \"0.1.0\"\nedition = \"2021\"\n\n[workspace]\n",
        ),
        ("src/main.rs", main.as_str()),
    ];
    let s = Scratch::new();
    let remote = Remote::Dir(s.path("shared/kache"));
    let (store_a, store_b) = (s.path("machine-a/store"), s.path("machine-b/store"));
    let a = s.worktree("machine-a/wt", &files);
    let b = s.worktree("machine-b/wt", &files);

    let mut build_a = cargo_with_store(&a, &store_a, &["build"]);
    build_a.env("RUSTFLAGS", "-C target-cpu=native");
    remote.apply(&mut build_a);
    common::run_ok(build_a);
    assert_eq!(output_of(&a.join("target/debug/cpu")), want_a);
    remote_support::kache_ok(&store_a, &remote, &["remote", "drain"]);

    let b_rustc = s.path("machine-b/toolchain/rustc");
    write_script(
        &b_rustc,
        &format!("exec qemu-x86_64 -cpu Nehalem '{}' \"$@\"", rustc.display()),
    );
    let mut build_b = cargo_with_store(&b, &store_b, &["build"]);
    build_b
        .env("RUSTFLAGS", "-C target-cpu=native")
        .env("RUSTC", &b_rustc);
    remote.apply(&mut build_b);
    common::run_ok(build_b);
    assert_eq!(
        output_of(&b.join("target/debug/cpu")),
        want_b,
        "machine B was served code built for machine A's CPU: {}",
        common::stats(&store_b)
    );
}
