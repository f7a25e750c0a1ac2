//! C/C++ direct mode under the input recorder: a manifest per direct key
//! whose records hold what the preprocessor or the compile was seen to read.
//! A record that still holds gives the result without starting any process
//! (counted with a logging compiler first on PATH); what direct mode cannot
//! prove (time macros) is left to the preprocessor, and `kache report` says
//! why each direct lookup fell back. The cases ccache documents as its limits
//! are in `cc_direct_mode_limits.rs`.

#![cfg(target_os = "linux")] // the input recorder (LD_PRELOAD, glibc) is Linux-only

mod common;

use common::*;
use std::path::Path;

/// A directory holding `name`, a script that logs each call to `log` and
/// runs the real compiler of that name.
fn logging_compiler(dir: &Path, name: &str, log: &Path) {
    use std::os::unix::fs::PermissionsExt;
    let path = std::env::var_os("PATH").unwrap_or_default();
    let real = std::env::split_paths(&path)
        .map(|d| d.join(name))
        .find(|p| p.is_file())
        .unwrap_or_else(|| panic!("{name} is missing from PATH"));
    std::fs::create_dir_all(dir).unwrap();
    let script = dir.join(name);
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\necho \"$@\" >> {}\nexec {} \"$@\"\n",
            log.display(),
            real.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
}

fn calls(log: &Path) -> usize {
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .count()
}

fn a_direct_hit_starts_no_compiler_process(compiler: &str) {
    need_tool(compiler);
    let p = CcProject::new();
    p.write(
        "x.c",
        "#include \"h.h\"\n#include <stddef.h>\nint f(void) { return X + (int)sizeof(size_t); }\n",
    );
    p.write("inc/h.h", "#define X 3\n");
    let shim = p.root.join("../shim");
    let log = p.root.join("../calls.log");
    logging_compiler(&shim, compiler, &log);
    let path = format!(
        "{}:{}",
        shim.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let args = ["-c", "x.c", "-Iinc", "-O2", "-o", "x.o"];
    let run = || {
        let mut c = p.cmd(compiler, &args);
        c.env("PATH", &path);
        run_ok(c);
    };
    run();
    let first = calls(&log);
    assert!(first >= 2, "the miss ran the compiler: {first} calls");
    let object = p.read("x.o");
    std::fs::remove_file(p.root.join("x.o")).unwrap();

    run();
    assert_eq!(
        calls(&log),
        first,
        "the hit started the compiler:\n{}\n{}",
        std::fs::read_to_string(&log).unwrap_or_default(),
        p.stats()
    );
    assert_eq!(p.read("x.o"), object);
    let s = p.stats();
    assert_eq!(
        (
            counter_at(&s, "cc.direct_hits"),
            counter_at(&s, "cc.hits"),
            counter_at(&s, "cc.misses")
        ),
        (1, 1, 1),
        "{s}"
    );
}

#[test]
fn a_gcc_direct_hit_starts_no_compiler_process() {
    a_direct_hit_starts_no_compiler_process("gcc");
}

#[test]
fn a_clang_direct_hit_starts_no_compiler_process() {
    a_direct_hit_starts_no_compiler_process("clang");
}

#[test]
fn a_preprocessed_hit_records_what_the_preprocessor_read_so_the_next_call_hits_directly() {
    need_tool("gcc");
    let p = CcProject::new();
    p.write("x.c", "#include \"h.h\"\nint f(void) { return X; }\n");
    p.write("h.h", "#define X 4\n");
    let args = ["-c", "x.c", "-o", "x.o"];
    p.cc("gcc", &args);
    // Without the manifests (as after importing only an entry), the
    // preprocessed source finds the entry.
    std::fs::remove_dir_all(p.store.join("manifests")).unwrap();
    p.cc("gcc", &args);
    p.cc("gcc", &args);
    let s = p.stats();
    assert_eq!(
        (
            counter_at(&s, "cc.preprocessed_hits"),
            counter_at(&s, "cc.direct_hits")
        ),
        (1, 1),
        "{s}"
    );
}

#[test]
fn an_edited_header_misses_the_direct_record_and_reverting_it_hits_the_first() {
    need_tool("gcc");
    let p = CcProject::new();
    p.write("x.c", "#include \"h.h\"\nconst char *v = V;\n");
    p.write("h.h", "#define V \"one\"\n");
    let args = ["-c", "x.c", "-o", "x.o"];
    p.cc("gcc", &args);
    p.write("h.h", "#define V \"two\"\n");
    p.cc("gcc", &args);
    assert!(String::from_utf8_lossy(&p.read("x.o")).contains("two"));
    p.write("h.h", "#define V \"one\"\n");
    p.cc("gcc", &args);
    assert!(String::from_utf8_lossy(&p.read("x.o")).contains("one"));
    let s = p.stats();
    assert_eq!(
        (
            counter_at(&s, "cc.misses"),
            counter_at(&s, "cc.direct_hits")
        ),
        (2, 1),
        "{s}"
    );
}

#[test]
fn sources_using_time_macros_are_never_served_by_direct_mode() {
    need_tool("gcc");
    let p = CcProject::new();
    // __TIMESTAMP__ is the source's modification time: no file content
    // says it, so only the preprocessor can.
    p.write("t.c", "const char *when = __TIMESTAMP__ \" \" __DATE__;\n");
    let args = ["-c", "t.c", "-o", "t.o"];
    let run = || {
        let mut c = p.cmd("gcc", &args);
        c.env("SOURCE_DATE_EPOCH", "1700000000");
        run_ok(c);
    };
    run();
    run();
    let s = p.stats();
    assert_eq!(
        (
            counter_at(&s, "cc.direct_hits"),
            counter_at(&s, "cc.preprocessed_hits")
        ),
        (0, 1),
        "{s}"
    );
}

#[test]
fn a_second_worktree_hits_the_build_scripts_c_compiles_directly() {
    let tmp = tempfile::tempdir().unwrap();
    let store = tmp.path().join("store");
    let a = fixture_at(&tmp.path().join("a"));
    let b = fixture_at(&tmp.path().join("b"));
    build(&a, &store);
    let misses = counter_at(&stats(&store), "cc.misses");
    assert!(misses >= 1, "the fixture compiles C through the cc crate");
    build(&b, &store);
    let s = stats(&store);
    assert_eq!(counter_at(&s, "cc.direct_hits"), misses, "{s}");
    assert_eq!(counter_at(&s, "cc.misses"), misses, "{s}");
}

#[test]
fn identical_compiles_from_two_worktrees_at_once_compile_once_when_their_direct_keys_differ() {
    // A `-sys` crate from a registry: the cc crate runs the compiler in the crate's own
    // directory (shared by every worktree, inside none) and writes the object into each
    // worktree's target, so each worktree has a direct key of its own for the same compile.
    need_tool("gcc");
    let tmp = tempfile::tempdir().unwrap();
    let store = tmp.path().join("store");
    let src = tmp.path().join("registry/sys-0.1.0");
    std::fs::create_dir_all(&src).unwrap();
    // Long enough to compile (seconds at -O2) that the two calls overlap.
    let body: String = (0..600)
        .map(|i| {
            format!(
                "long f{i}(long x) {{ long s = 0; for (long j = 0; j < x; j++) s += j * {i} ^ (s >> 3); return s; }}\n"
            )
        })
        .collect();
    std::fs::write(src.join("big.c"), body).unwrap();
    let objects: Vec<_> = ["wt1", "wt2"]
        .iter()
        .map(|w| {
            let wt = tmp.path().join(w);
            std::fs::create_dir_all(wt.join(".git")).unwrap();
            std::fs::create_dir_all(wt.join("target")).unwrap();
            wt.join("target/big.o")
        })
        .collect();
    let calls: Vec<_> = objects
        .iter()
        .map(|o| {
            let o = o.to_str().unwrap();
            kache_cc(&src, &store, "gcc", &["-c", "big.c", "-O2", "-g", "-o", o])
                .spawn()
                .unwrap()
        })
        .collect();
    for mut c in calls {
        assert!(c.wait().unwrap().success());
    }
    assert_eq!(
        std::fs::read(&objects[0]).unwrap(),
        std::fs::read(&objects[1]).unwrap()
    );
    let s = stats(&store);
    assert_eq!(
        (counter_at(&s, "cc.misses"), counter_at(&s, "cc.hits")),
        (1, 1),
        "the second call waits for the first and hits: {s}"
    );
}

#[test]
fn report_names_why_each_direct_lookup_fell_back_to_the_preprocessor() {
    need_tool("gcc");
    let p = CcProject::new();
    p.write("x.c", "#include \"h.h\"\nint v = V;\n");
    p.write("inc2/h.h", "#define V 2\n");
    std::fs::create_dir_all(p.root.join("inc1")).unwrap();
    std::fs::create_dir_all(p.root.join("empty")).unwrap();
    p.write("t.c", "const char *built = __DATE__;\n");
    let x = ["-c", "x.c", "-Iinc1", "-Iinc2", "-o", "x.o"];
    let t = ["-c", "t.c", "-o", "t.o"];
    let with = |args: &[&str], var: &str, value: &str| {
        let mut c = p.cmd("gcc", args);
        c.env(var, value);
        run_ok(c);
    };
    p.cc("gcc", &x); // no-manifest
    p.cc("gcc", &x); // direct hit: no fallback
    p.write("inc2/h.h", "#define V 3\n");
    p.cc("gcc", &x); // changed:file
    p.write("inc1/h.h", "#define V 1\n");
    p.cc("gcc", &x); // changed:now-present
    with(&x, "CPATH", "empty"); // changed:variable (then a preprocessed hit)
    with(&t, "SOURCE_DATE_EPOCH", "1700000000"); // time-macros
    with(&t, "SOURCE_DATE_EPOCH", "1700000000"); // time-macros

    let expected = serde_json::json!({
        "no-manifest": 1,
        "changed:file": 1,
        "changed:now-present": 1,
        "changed:variable": 1,
        "time-macros": 2,
    });
    let out = run_ok({
        let mut c = isolated(kache_bin(), &p.root, &p.store);
        c.args(["report", "--json"]);
        c
    });
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["direct_fallbacks"]["cc"], expected, "{report}");
    assert_eq!(p.stats()["cc"]["direct_fallbacks"], expected);
    let s = p.stats();
    assert_eq!(
        (
            counter_at(&s, "cc.direct_hits"),
            counter_at(&s, "cc.preprocessed_hits")
        ),
        (1, 2),
        "{s}"
    );

    let out = run_ok({
        let mut c = isolated(kache_bin(), &p.root, &p.store);
        c.arg("report");
        c
    });
    let text = String::from_utf8(out.stdout).unwrap();
    let section = text
        .split("direct lookups that fell back")
        .nth(1)
        .unwrap_or_else(|| panic!("no fallback section in the report:\n{text}"));
    for line in ["cc   2  time-macros", "cc   1  changed:now-present"] {
        assert!(section.contains(line), "{line:?} missing from:\n{text}");
    }
}
