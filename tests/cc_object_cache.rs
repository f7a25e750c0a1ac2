//! C/C++ object caching with real gcc and clang: what is cached hits with the
//! same bytes, what is refused runs the compiler once and is counted with its
//! reason, and every input that changes the object changes the key.

mod common;

use common::{counter_at, need_tool, CcProject};

const COMPILERS: [&str; 2] = ["gcc", "clang"];

fn lib_source(p: &CcProject) {
    p.write(
        "inc/lib.h",
        "#ifndef LIB_H\n#define LIB_H\nint twice(int x);\n#endif\n",
    );
    p.write(
        "src/lib.c",
        "#include \"lib.h\"\n#ifndef FACTOR\n#define FACTOR 2\n#endif\nint twice(int x) { return x * FACTOR; }\n",
    );
    p.write("src/pre.h", "#define FROM_INCLUDE 1\n");
}

/// One flag set per category (and all at once): a miss, then a hit whose
/// object is byte-identical to the miss's.
#[test]
fn each_category_hits_with_a_byte_identical_object() {
    let categories: [(&str, &[&str]); 4] = [
        (
            "modeled",
            &["-O2", "-fPIC", "-std=c11", "-g", "-march=x86-64"],
        ),
        (
            "preprocessor",
            &["-DFACTOR=3", "-UNOTHING", "-Iinc", "-include", "src/pre.h"],
        ),
        (
            "no-effect",
            &["-Wall", "-Wextra", "-pipe", "-MD", "-MF", "out/lib.d"],
        ),
        (
            "all",
            &[
                "-O1", "-fno-PIC", "-Iinc", "-DX=1", "-Wall", "-MMD", "-MP", "-pipe",
            ],
        ),
    ];
    for compiler in COMPILERS {
        need_tool(compiler);
        let p = CcProject::new();
        lib_source(&p);
        for (name, flags) in categories {
            let mut args = vec!["-c", "src/lib.c", "-o", "out/lib.o", "-Iinc"];
            args.extend_from_slice(flags);
            std::fs::create_dir_all(p.root.join("out")).unwrap();
            let before = p.stats();
            p.cc(compiler, &args);
            let first = p.read("out/lib.o");
            std::fs::remove_file(p.root.join("out/lib.o")).unwrap();
            p.cc(compiler, &args);
            let after = p.stats();
            assert_eq!(
                p.read("out/lib.o"),
                first,
                "{compiler} {name}: the hit's object differs from the miss's"
            );
            let d = |k: &str| counter_at(&after, k) - counter_at(&before, k);
            assert_eq!(
                (d("cc.misses"), d("cc.hits"), d("cc.passthroughs")),
                (1, 1, 0),
                "{compiler} {name}: expected one miss then one hit"
            );
        }
    }
}

/// Arguments, the counted reason, the counted flag, an output the compiler makes.
type RefusedCase = (
    &'static [&'static str],
    &'static str,
    Option<&'static str>,
    Option<&'static str>,
);

/// Shapes kache must not cache: each runs the real compiler exactly once,
/// gives the compiler's own result, and is counted with its reason (and, for
/// a flag, the flag).
#[test]
fn refused_shapes_pass_through_run_the_compiler_once_and_are_counted() {
    need_tool("gcc");
    let p = CcProject::new();
    lib_source(&p);
    p.write(
        "src/main.c",
        "int twice(int);\nint main(void) { return twice(0); }\n",
    );
    p.write("args.rsp", "-c src/lib.c -Iinc -o rsp.o\n");
    p.cc("gcc", &["-c", "src/lib.c", "-Iinc", "-o", "lib.o"]);
    p.cc("gcc", &["-c", "src/main.c", "-o", "main.o"]);
    let cases: [RefusedCase; 11] = [
        (
            &["lib.o", "src/main.c", "-o", "prog1"],
            "cc:no-c",
            None,
            Some("prog1"),
        ),
        (
            &["lib.o", "main.o", "-o", "prog2"],
            "cc:link-step",
            None,
            Some("prog2"),
        ),
        (
            &["-E", "src/lib.c", "-Iinc", "-o", "lib.i"],
            "cc:preprocess-only",
            Some("-E"),
            Some("lib.i"),
        ),
        (
            &["-S", "src/lib.c", "-Iinc", "-o", "lib.s"],
            "cc:assemble-only",
            None,
            Some("lib.s"),
        ),
        (
            &["-c", "src/lib.c", "src/main.c", "-Iinc"],
            "cc:multiple-sources",
            None,
            Some("main.o"),
        ),
        (&["@args.rsp"], "cc:response-file", None, Some("rsp.o")),
        (
            &["-c", "src/lib.c", "-Iinc", "--coverage", "-o", "cov.o"],
            "cc:coverage",
            Some("--coverage"),
            Some("cov.o"),
        ),
        (
            &["-c", "src/lib.c", "-Iinc", "-gsplit-dwarf", "-o", "split.o"],
            "cc:split-dwarf",
            Some("-gsplit-dwarf"),
            Some("split.o"),
        ),
        (
            &[
                "-c",
                "src/lib.c",
                "-Iinc",
                "-Wa,--noexecstack",
                "-o",
                "wa.o",
            ],
            "cc:tool-passthrough",
            Some("-Wa,--noexecstack"),
            Some("wa.o"),
        ),
        (
            &["-c", "src/lib.c", "-Iinc", "-flto", "-o", "lto.o"],
            "cc:unknown-flag",
            Some("-flto"),
            Some("lto.o"),
        ),
        (
            &[
                "-c",
                "src/lib.c",
                "-Iinc",
                "-march=native",
                "-o",
                "native.o",
            ],
            "cc:native-arch",
            Some("-march"),
            Some("native.o"),
        ),
    ];
    for (args, reason, flag, output) in cases {
        let before = p.stats();
        p.cc("gcc", args);
        let after = p.stats();
        let d = |k: &str| counter_at(&after, k) - counter_at(&before, k);
        assert_eq!(d("cc.passthroughs"), 1, "{args:?}");
        assert_eq!(
            d("cc.compiler_runs"),
            1,
            "{args:?}: the compiler must run once"
        );
        assert_eq!((d("cc.hits"), d("cc.misses")), (0, 0), "{args:?}");
        assert_eq!(
            d(&format!("cc.passthrough_reasons.{reason}")),
            1,
            "{args:?}: reason {reason}"
        );
        if let Some(flag) = flag {
            assert_eq!(
                d(&format!("cc.passthrough_flags.{flag}")),
                1,
                "{args:?}: flag {flag} counted; stats: {}",
                after["cc"]["passthrough_flags"]
            );
        }
        if let Some(out) = output {
            assert!(p.root.join(out).exists(), "{args:?}: {out} not produced");
        }
    }
    // A failing passthrough keeps the compiler's exit status.
    let out = p.cmd("gcc", &["nosuch.o", "-o", "x"]).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
}

/// Compiles `src/lib.c` with `args` and returns the object's bytes.
fn object(p: &CcProject, compiler: &str, extra: &[&str]) -> Vec<u8> {
    let mut args = vec!["-c", "src/lib.c", "-Iinc", "-o", "lib.o"];
    args.extend_from_slice(extra);
    p.cc(compiler, &args);
    p.read("lib.o")
}

fn misses(p: &CcProject) -> u64 {
    counter_at(&p.stats(), "cc.misses")
}

/// Each input that changes the object gives a new key: a miss and an object
/// with the right behaviour, never the previous object.
#[test]
fn every_input_that_changes_the_object_changes_the_key() {
    need_tool("gcc");
    need_tool("clang");
    let p = CcProject::new();
    lib_source(&p);
    p.write(
        "src/main.c",
        "#include <stdio.h>\nint twice(int);\nint main(void) { printf(\"%d\\n\", twice(10)); return 0; }\n",
    );
    p.cc("gcc", &["-c", "src/main.c", "-o", "main.o"]);
    let run = || p.link_and_run(&["main.o", "lib.o"]);

    // A -D value.
    object(&p, "gcc", &["-DFACTOR=3"]);
    assert_eq!(run(), "30\n");
    let m = misses(&p);
    object(&p, "gcc", &["-DFACTOR=4"]);
    assert_eq!(run(), "40\n", "-D value");
    assert_eq!(misses(&p), m + 1);

    // The same through -Wp,-D.
    object(&p, "gcc", &["-Wp,-DFACTOR=5"]);
    assert_eq!(run(), "50\n", "-Wp,-D value");
    object(&p, "gcc", &["-Wp,-DFACTOR=6"]);
    assert_eq!(run(), "60\n", "-Wp,-D value");

    // A header's content.
    p.write("inc/factor.h", "#define FACTOR 7\n");
    object(&p, "gcc", &["-include", "factor.h"]);
    assert_eq!(run(), "70\n");
    p.write("inc/factor.h", "#define FACTOR 8\n");
    object(&p, "gcc", &["-include", "factor.h"]);
    assert_eq!(run(), "80\n", "-include file content");
    p.write(
        "inc/lib.h",
        "#ifndef LIB_H\n#define LIB_H\nint twice(int x);\n#define FACTOR 9\n#endif\n",
    );
    object(&p, "gcc", &[]);
    assert_eq!(run(), "90\n", "header content");
    lib_source(&p);
    object(&p, "gcc", &[]);
    assert_eq!(run(), "20\n", "header restored");

    // Code generation flags: different objects, each a miss.
    let pairs: [(&[&str], &[&str]); 3] = [
        (&["-O0"], &["-O2"]),
        (&["-march=x86-64", "-O3"], &["-march=x86-64-v3", "-O3"]),
        (&["-fno-PIC", "-O2"], &["-fPIC", "-O2"]),
    ];
    p.write(
        "src/lib.c",
        "#include \"lib.h\"\nextern int g;\nint twice(int x) { return x * 2 + g; }\n\
         void scale(float *restrict a, const float *restrict b, int n) { for (int i = 0; i < n; i++) a[i] = a[i] * 3.0f + b[i]; }\n",
    );
    for (a, b) in pairs {
        let m = misses(&p);
        let oa = object(&p, "gcc", a);
        let ob = object(&p, "gcc", b);
        assert_ne!(oa, ob, "{a:?} vs {b:?} gave the same object");
        assert_eq!(misses(&p), m + 2, "{a:?} vs {b:?}");
    }

    // A second compiler.
    let g = object(&p, "gcc", &["-O2"]);
    let m = misses(&p);
    let c = object(&p, "clang", &["-O2"]);
    assert_ne!(g, c, "gcc and clang objects");
    assert_eq!(misses(&p), m + 1, "clang must not be served gcc's object");
}

/// `__DATE__` is pinned by SOURCE_DATE_EPOCH for the key and the compile
/// alike: another epoch gives another object with the right date.
#[test]
fn date_macros_follow_source_date_epoch() {
    need_tool("gcc");
    let p = CcProject::new();
    p.write(
        "src/date.c",
        "#include <stdio.h>\nint main(void) { puts(__DATE__); return 0; }\n",
    );
    let compile = |epoch: &str| {
        let mut c = p.cmd("gcc", &["-c", "src/date.c", "-o", "date.o"]);
        c.env("SOURCE_DATE_EPOCH", epoch);
        common::run_ok(c);
        p.link_and_run(&["date.o"])
    };
    assert_eq!(compile("0"), "Jan  1 1970\n");
    let m = misses(&p);
    assert_eq!(compile("31536000"), "Jan  1 1971\n");
    assert_eq!(misses(&p), m + 1);
    assert_eq!(compile("0"), "Jan  1 1970\n", "served from the first entry");
    assert_eq!(counter_at(&p.stats(), "cc.hits"), 1);
}

/// Warnings are replayed on a hit, and `-Werror` is never answered by a hit
/// of the same source compiled without it (lesson 13).
#[test]
fn hits_replay_warnings_and_werror_still_fails() {
    need_tool("gcc");
    let p = CcProject::new();
    p.write("src/w.c", "int f(void) { int unused; return 0; }\n");
    let args = ["-c", "src/w.c", "-o", "w.o", "-Wall"];
    let miss = p.cc("gcc", &args);
    let hit = p.cc("gcc", &args);
    assert_eq!(counter_at(&p.stats(), "cc.hits"), 1);
    let warn = String::from_utf8_lossy(&miss.stderr).to_string();
    assert!(warn.contains("unused"), "{warn}");
    assert_eq!(
        String::from_utf8_lossy(&hit.stderr),
        warn,
        "replayed exactly"
    );
    let out = p
        .cmd("gcc", &["-c", "src/w.c", "-o", "w.o", "-Wall", "-Werror"])
        .output()
        .unwrap();
    assert!(!out.status.success(), "-Werror must fail the compile");
}
