//! Where a C/C++ compile goes when kache does not cache it (the fallback
//! wrapper, exclusions) and how kache is put in front of a compiler (names,
//! paths, compiler-named shims on PATH).
#![cfg(unix)] // symlinked shims, mode bits

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::{counter_at, kache_bin, need_tool, run_ok, CcProject};

/// A fake fallback wrapper that logs its arguments and runs them.
fn fake_fallback(dir: &Path) -> PathBuf {
    let bin = dir.join("fakebin");
    std::fs::create_dir_all(&bin).unwrap();
    let script = bin.join("fakefb");
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\necho \"$@\" >> {}\nexec \"$@\"\n",
            dir.join("fallback.log").display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    bin
}

fn path_with(dir: &Path) -> std::ffi::OsString {
    let mut dirs = vec![dir.to_path_buf()];
    dirs.extend(std::env::split_paths(
        &std::env::var_os("PATH").unwrap_or_default(),
    ));
    std::env::join_paths(dirs).unwrap()
}

fn log_lines(p: &CcProject) -> Vec<String> {
    std::fs::read_to_string(p.root.join("fallback.log"))
        .unwrap_or_default()
        .lines()
        .map(str::to_owned)
        .collect()
}

#[test]
fn passthroughs_go_to_the_fallback_and_cached_compiles_do_not() {
    need_tool("gcc");
    let p = CcProject::new();
    p.write("x.c", "int x(void) { return 1; }\n");
    let bin = fake_fallback(&p.root);
    let run = |args: &[&str]| {
        let mut c = p.cmd("gcc", args);
        c.env("KACHE_FALLBACK", "fakefb")
            .env("PATH", path_with(&bin));
        run_ok(c)
    };
    run(&["-c", "x.c", "-o", "x.o"]); // miss
    run(&["-c", "x.c", "-o", "x.o"]); // hit
    assert!(
        log_lines(&p).is_empty(),
        "cached compiles reached the fallback"
    );
    run(&["-c", "x.c", "-o", "cov.o", "--coverage"]);
    run(&["-S", "x.c", "-o", "x.s"]);
    let lines = log_lines(&p);
    assert_eq!(lines.len(), 2, "{lines:?}");
    // The fallback gets the real compiler (never kache, never a shim) first.
    assert!(
        lines[0].ends_with("gcc -c x.c -o cov.o --coverage"),
        "{lines:?}"
    );
    assert!(!lines[0].contains("kache"), "{lines:?}");
    assert!(p.root.join("cov.o").exists() && p.root.join("x.s").exists());
    let s = p.stats();
    assert_eq!(
        (counter_at(&s, "cc.hits"), counter_at(&s, "cc.misses")),
        (1, 1)
    );
    assert_eq!(counter_at(&s, "cc.passthroughs"), 2);

    // `off` disables it.
    let mut c = p.cmd("gcc", &["-S", "x.c", "-o", "y.s"]);
    c.env("KACHE_FALLBACK", "off").env("PATH", path_with(&bin));
    run_ok(c);
    assert_eq!(log_lines(&p).len(), 2);

    // Rust passthroughs go there too.
    std::fs::write(p.root.join("m.rs"), "fn main() {}\n").unwrap();
    let mut c = common::isolated(kache_bin(), &p.root, &p.store);
    c.args([
        "rustc",
        "--crate-name",
        "m",
        "--crate-type",
        "bin",
        "m.rs",
        "-C",
    ])
    .arg(format!("incremental={}", p.root.join("inc").display()))
    .env("KACHE_RUST_INCREMENTAL", "passthrough")
    .env("KACHE_FALLBACK", "fakefb")
    .env("PATH", path_with(&bin));
    run_ok(c);
    let lines = log_lines(&p);
    assert_eq!(lines.len(), 3, "{lines:?}");
    assert!(lines[2].starts_with("rustc "), "{lines:?}");
}

#[test]
fn a_missing_fallback_warns_once_and_builds_succeed() {
    need_tool("gcc");
    let p = CcProject::new();
    p.write("x.c", "int x(void) { return 1; }\n");
    let mut warnings = 0;
    for i in 0..4 {
        let out = format!("cov{i}.o");
        let mut c = p.cmd("gcc", &["-c", "x.c", "--coverage", "-o", &out]);
        c.env("KACHE_FALLBACK", "no-such-fallback-wrapper");
        let o = run_ok(c);
        warnings += String::from_utf8_lossy(&o.stderr)
            .matches("no-such-fallback-wrapper")
            .count();
        assert!(p.root.join(&out).exists());
    }
    assert_eq!(warnings, 1, "warn once, not once per compile");
    assert_eq!(counter_at(&p.stats(), "cc.passthroughs"), 4);
}

#[test]
fn excluded_sources_get_no_lookup_and_no_store() {
    need_tool("gcc");
    let p = CcProject::new();
    p.write(".kache.toml", "[cache]\nexclude = [\"vendor/odd/**\"]\n");
    p.write("vendor/odd/v.c", "int v(void) { return 2; }\n");
    p.write("src/s.c", "int s(void) { return 3; }\n");
    for _ in 0..2 {
        p.cc("gcc", &["-c", "vendor/odd/v.c", "-o", "v.o"]);
    }
    let s = p.stats();
    assert_eq!(counter_at(&s, "cc.passthrough_reasons.excluded"), 2);
    assert_eq!(
        (
            counter_at(&s, "cc.hits"),
            counter_at(&s, "cc.misses"),
            counter_at(&s, "store.entries")
        ),
        (0, 0, 0),
        "an excluded source was looked up or stored: {s}"
    );
    // Only the compile itself ran: no preprocessor run for a key.
    assert_eq!(counter_at(&s, "cc.compiler_runs"), 2);
    // A source outside the pattern is cached as usual.
    p.cc("gcc", &["-c", "src/s.c", "-o", "s.o"]);
    assert_eq!(counter_at(&p.stats(), "store.entries"), 1);
}

/// `kache gcc-12`, `kache x86_64-linux-gnu-gcc-12`, `kache /usr/bin/cc`: every
/// name the real gcc answers to on this machine is recognised and cached.
#[test]
fn versioned_target_prefixed_and_absolute_compiler_names_are_cached() {
    need_tool("gcc");
    let gcc = which("gcc");
    let canonical = gcc.canonicalize().unwrap();
    let mut names: Vec<String> = vec![gcc.display().to_string()];
    names.push(
        canonical
            .file_name()
            .unwrap()
            .to_string_lossy()
            .into_owned(),
    );
    let major = String::from_utf8(
        {
            let mut c = Command::new("gcc");
            c.arg("-dumpversion");
            run_ok(c)
        }
        .stdout,
    )
    .unwrap()
    .trim()
    .split('.')
    .next()
    .unwrap()
    .to_string();
    for n in [
        format!("gcc-{major}"),
        format!("x86_64-linux-gnu-gcc-{major}"),
    ] {
        if which_opt(&n).is_some() {
            names.push(n);
        }
    }
    let p = CcProject::new();
    p.write("x.c", "int x(void) { return 1; }\n");
    for name in &names {
        let before = p.stats();
        p.cc(name, &["-c", "x.c", "-o", "x.o"]);
        p.cc(name, &["-c", "x.c", "-o", "x.o"]);
        let after = p.stats();
        let d = |k: &str| counter_at(&after, k) - counter_at(&before, k);
        assert!(
            d("cc.hits") >= 1 && d("cc.misses") <= 1,
            "kache {name}: {}",
            after["cc"]
        );
        assert_eq!(counter_at(&after, "cc.passthroughs"), 0, "kache {name}");
    }
}

fn which_opt(name: &str) -> Option<PathBuf> {
    std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default())
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

fn which(name: &str) -> PathBuf {
    which_opt(name).unwrap_or_else(|| panic!("{name} is missing from PATH"))
}

#[test]
fn shims_first_on_path_cache_compiles_and_run_the_real_compiler() {
    need_tool("gcc");
    need_tool("clang");
    let p = CcProject::new();
    p.write("x.c", "int x(void) { return 1; }\n");
    let shims = p.root.join("shims");
    let out = run_ok(p.cmd("shims", &["install", shims.to_str().unwrap()]));
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    for name in ["cc", "gcc", "clang"] {
        let link = shims.join(name);
        assert_eq!(
            std::fs::canonicalize(&link).unwrap(),
            std::fs::canonicalize(kache_bin()).unwrap(),
            "{name}: {text}"
        );
    }
    // Idempotent, and `list` names the real compiler behind each shim.
    let again = run_ok(p.cmd("shims", &["install", shims.to_str().unwrap()]));
    assert!(String::from_utf8_lossy(&again.stdout).contains("already installed"));
    let list = run_ok(p.cmd("shims", &["list", shims.to_str().unwrap()]));
    let list = String::from_utf8_lossy(&list.stdout).to_string();
    let real_gcc = which("gcc");
    assert!(
        list.contains(&format!("gcc      -> {}", real_gcc.display())),
        "{list}"
    );

    let shim = |args: &[&str], extra: &[(&str, &str)]| {
        let mut c = common::isolated(shims.join("gcc"), &p.root, &p.store);
        c.args(args).env("PATH", path_with(&shims));
        for (k, v) in extra {
            c.env(k, v);
        }
        let child = c.output().expect("spawn");
        assert!(child.status.success(), "{args:?} {extra:?}: {child:?}");
        child
    };
    shim(&["-c", "x.c", "-o", "x.o"], &[]);
    shim(&["-c", "x.c", "-o", "x.o"], &[]);
    let s = p.stats();
    assert_eq!(
        (counter_at(&s, "cc.misses"), counter_at(&s, "cc.hits")),
        (1, 1),
        "{}",
        s["cc"]
    );
    // Probes, KACHE_DISABLE and a broken config run the real compiler, not the shim again.
    let v = shim(&["--version"], &[]);
    assert!(String::from_utf8_lossy(&v.stdout).contains("gcc"));
    shim(&["-c", "x.c", "-o", "d.o"], &[("KACHE_DISABLE", "1")]);
    assert!(p.root.join("d.o").exists());
    p.write(".kache.toml", "[cache\nbroken");
    let broken = shim(&["-c", "x.c", "-o", "b.o"], &[]);
    assert!(String::from_utf8_lossy(&broken.stderr).contains("without the cache"));
    std::fs::remove_file(p.root.join(".kache.toml")).unwrap();

    let removed = run_ok(p.cmd("shims", &["remove", shims.to_str().unwrap()]));
    assert!(String::from_utf8_lossy(&removed.stdout).contains("removed"));
    assert!(!shims.join("gcc").exists());
}
