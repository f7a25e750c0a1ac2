//! C/C++ direct mode where ccache documents its limits: each case, with real
//! gcc and real clang, first compiles and hits directly, then changes
//! something no file the last compile read holds (a header newly shadowing
//! one later on the search path, a precompiled header, a source's mtime, a
//! variable, the spelling of a path), and proves the next compile gives the
//! object the real compiler gives now, without a direct hit. What the input
//! recorder's lookups cannot prove (time macros) falls back to the
//! preprocessor, and `kache report` says why each direct lookup fell back.

#![cfg(target_os = "linux")] // the input recorder (LD_PRELOAD, glibc) is Linux-only

mod common;

use common::*;
use std::path::Path;

/// Both compilers for one case, as `<case>::gcc` and `<case>::clang`.
macro_rules! with_gcc_and_clang {
    ($case:ident) => {
        mod $case {
            #[test]
            fn gcc() {
                super::$case("gcc");
            }
            #[test]
            fn clang() {
                super::$case("clang");
            }
        }
    };
}

/// Compiles `args` in `dir` (below the project root) through kache to
/// `x.o`, and with the real compiler (same arguments, environment and
/// directory) to `ref.o`; the two objects must be identical. Returns the
/// object.
fn as_the_real_compiler(
    p: &CcProject,
    dir: &str,
    compiler: &str,
    args: &[&str],
    env: &[(&str, &str)],
) -> Vec<u8> {
    need_tool(compiler);
    let cwd = p.root.join(dir);
    let mut k = kache_cc(&cwd, &p.store, compiler, args);
    k.args(["-o", "x.o"]).envs(env.iter().copied());
    run_ok(k);
    let mut real = isolated(compiler, &cwd, &p.store);
    real.args(args)
        .args(["-o", "ref.o"])
        .envs(env.iter().copied());
    run_ok(real);
    let got = std::fs::read(cwd.join("x.o")).unwrap();
    let want = std::fs::read(cwd.join("ref.o")).unwrap();
    assert!(
        got == want,
        "{compiler} {args:?} in {dir:?} with {env:?}: kache's object differs from the real compiler's\n{}",
        p.stats()
    );
    got
}

fn direct_hits(p: &CcProject) -> u64 {
    counter_at(&p.stats(), "cc.direct_hits")
}

/// The fallback label of the last call (`direct_fallback` of its event).
fn last_fallback(store: &Path) -> Option<String> {
    let log = std::fs::read_to_string(store.join("events.jsonl")).unwrap_or_default();
    let last: serde_json::Value = serde_json::from_str(log.lines().last()?).ok()?;
    last["direct_fallback"].as_str().map(String::from)
}

/// One case: `setup`, a miss and a direct hit (so direct mode was in play),
/// then `change`; the next compile must give the real compiler's new object,
/// which differs from the old one, without a direct hit, and say why the
/// direct lookup fell back (`label`).
struct Case<'a> {
    compiler: &'a str,
    dir: &'a str,
    args: &'a [&'a str],
    env_before: &'a [(&'a str, &'a str)],
    env_after: &'a [(&'a str, &'a str)],
    label: &'a str,
}

impl Case<'_> {
    fn run(&self, setup: impl FnOnce(&CcProject), change: impl FnOnce(&CcProject)) {
        let p = CcProject::new();
        setup(&p);
        let (c, d, a) = (self.compiler, self.dir, self.args);
        let before = as_the_real_compiler(&p, d, c, a, self.env_before);
        assert_eq!(as_the_real_compiler(&p, d, c, a, self.env_before), before);
        let hits = direct_hits(&p);
        assert_eq!(hits, 1, "the second compile hits directly\n{}", p.stats());
        change(&p);
        let after = as_the_real_compiler(&p, d, c, a, self.env_after);
        assert_ne!(
            after, before,
            "the change makes the real compiler's object differ"
        );
        assert_eq!(
            direct_hits(&p),
            hits,
            "direct mode served the old object\n{}",
            p.stats()
        );
        assert_eq!(
            last_fallback(&p.store).as_deref(),
            Some(self.label),
            "why the direct lookup fell back"
        );
    }
}

fn header_in_an_earlier_include_dir(compiler: &str) {
    Case {
        compiler,
        dir: "",
        args: &["-c", "x.c", "-Iinc1", "-Iinc2"],
        env_before: &[],
        env_after: &[],
        label: "changed:now-present",
    }
    .run(
        |p| {
            p.write("x.c", "#include \"h.h\"\nint v = V;\n");
            p.write("inc2/h.h", "#define V 2\n");
            std::fs::create_dir_all(p.root.join("inc1")).unwrap();
        },
        |p| p.write("inc1/h.h", "#define V 1\n"),
    );
}
with_gcc_and_clang!(header_in_an_earlier_include_dir);

/// A record holds a lookup below a directory that did not exist as that
/// directory absent: creating it with the header (an include directory
/// made later, a subdirectory of one) is seen.
fn header_in_a_directory_that_did_not_exist(compiler: &str) {
    for header in ["gen/h.h", "inc1/sub/h.h"] {
        Case {
            compiler,
            dir: "",
            args: &["-c", "x.c", "-Igen", "-Iinc1", "-Iinc2"],
            env_before: &[],
            env_after: &[],
            label: "changed:now-present",
        }
        .run(
            |p| {
                p.write(
                    "x.c",
                    "#include \"h.h\"\n#include <sub/h.h>\nint v = V + W;\n",
                );
                p.write("inc2/h.h", "#define V 2\n");
                p.write("inc2/sub/h.h", "#define W 20\n");
                std::fs::create_dir_all(p.root.join("inc1")).unwrap();
            },
            |p| {
                let define = match header {
                    "gen/h.h" => "#define V 1\n",
                    _ => "#define W 10\n",
                };
                p.write(header, define);
            },
        );
    }
}
with_gcc_and_clang!(header_in_a_directory_that_did_not_exist);

fn header_in_an_iquote_dir(compiler: &str) {
    Case {
        compiler,
        dir: "",
        args: &["-c", "x.c", "-iquote", "q", "-Iinc"],
        env_before: &[],
        env_after: &[],
        label: "changed:now-present",
    }
    .run(
        |p| {
            p.write("x.c", "#include \"h.h\"\nint v = V;\n");
            p.write("inc/h.h", "#define V 2\n");
            std::fs::create_dir_all(p.root.join("q")).unwrap();
        },
        |p| p.write("q/h.h", "#define V 1\n"),
    );
}
with_gcc_and_clang!(header_in_an_iquote_dir);

fn header_next_to_the_including_file(compiler: &str) {
    Case {
        compiler,
        dir: "",
        args: &["-c", "src/x.c", "-Iinc"],
        env_before: &[],
        env_after: &[],
        label: "changed:now-present",
    }
    .run(
        |p| {
            p.write("src/x.c", "#include \"h.h\"\nint v = V;\n");
            p.write("inc/h.h", "#define V 2\n");
        },
        |p| p.write("src/h.h", "#define V 1\n"),
    );
}
with_gcc_and_clang!(header_next_to_the_including_file);

/// `CPATH` (searched like `-I`), `C_INCLUDE_PATH` and, for C++, `CPLUS_INCLUDE_PATH` (like
/// `-isystem`): a header newly in an earlier directory of the variable.
fn header_in_an_earlier_dir_of_cpath_or_c_include_path(compiler: &str) {
    for (var, source) in [
        ("CPATH", "x.c"),
        ("C_INCLUDE_PATH", "x.c"),
        ("CPLUS_INCLUDE_PATH", "x.cpp"),
    ] {
        Case {
            compiler,
            dir: "",
            args: &["-c", source],
            env_before: &[(var, "c1:c2")],
            env_after: &[(var, "c1:c2")],
            label: "changed:now-present",
        }
        .run(
            |p| {
                p.write(source, "#include <h.h>\nint v = V;\n");
                p.write("c2/h.h", "#define V 2\n");
                std::fs::create_dir_all(p.root.join("c1")).unwrap();
            },
            |p| p.write("c1/h.h", "#define V 1\n"),
        );
    }
}
with_gcc_and_clang!(header_in_an_earlier_dir_of_cpath_or_c_include_path);

/// `CPATH` (or, for C++, `CPLUS_INCLUDE_PATH`) newly set to a directory searched before the
/// one the header was found in (`-idirafter` is searched last).
fn cpath_newly_set(compiler: &str) {
    for (var, source) in [("CPATH", "x.c"), ("CPLUS_INCLUDE_PATH", "x.cpp")] {
        Case {
            compiler,
            dir: "",
            args: &["-c", source, "-idirafter", "late"],
            env_before: &[],
            env_after: &[(var, "early")],
            label: "changed:variable",
        }
        .run(
            |p| {
                p.write(source, "#include <h.h>\nint v = V;\n");
                p.write("late/h.h", "#define V 2\n");
                p.write("early/h.h", "#define V 1\n");
            },
            |_| {},
        );
    }
}
with_gcc_and_clang!(cpath_newly_set);

fn include_next_finding_a_new_header(compiler: &str) {
    Case {
        compiler,
        dir: "",
        args: &["-c", "x.c", "-Ii1", "-Ii2", "-Ii3"],
        env_before: &[],
        env_after: &[],
        label: "changed:now-present",
    }
    .run(
        |p| {
            p.write("x.c", "#include <h.h>\nint v = V;\n");
            p.write("i1/h.h", "#include_next <h.h>\n");
            p.write("i3/h.h", "#define V 3\n");
            std::fs::create_dir_all(p.root.join("i2")).unwrap();
        },
        |p| p.write("i2/h.h", "#define V 2\n"),
    );
}
with_gcc_and_clang!(include_next_finding_a_new_header);

fn has_include_of_a_file_that_appears(compiler: &str) {
    Case {
        compiler,
        dir: "",
        args: &["-c", "x.c"],
        env_before: &[],
        env_after: &[],
        label: "changed:now-present",
    }
    .run(
        |p| {
            p.write(
                "x.c",
                "#if __has_include(\"opt.h\")\n#include \"opt.h\"\n#else\n#define V 3\n#endif\nint v = V;\n",
            );
        },
        |p| p.write("opt.h", "#define V 9\n"),
    );
}
with_gcc_and_clang!(has_include_of_a_file_that_appears);

/// `-include pre.h`: its content, and a `pre.h` newly in the working
/// directory, searched before the include path.
fn forced_include_files(compiler: &str) {
    let case = |label: &'static str| Case {
        compiler,
        dir: "",
        args: &["-c", "x.c", "-Iinc", "-include", "pre.h"],
        env_before: &[],
        env_after: &[],
        label,
    };
    let setup = |p: &CcProject| {
        p.write("x.c", "int v = V;\n");
        p.write("inc/pre.h", "#define V 2\n");
    };
    case("changed:file").run(setup, |p| p.write("inc/pre.h", "#define V 7\n"));
    case("changed:now-present").run(setup, |p| p.write("pre.h", "#define V 1\n"));
}
with_gcc_and_clang!(forced_include_files);

/// A precompiled header made from other content than the header it stands
/// for, newly next to it: both compilers load one for `-include` (GCC
/// `h.h.gch`, clang `h.h.pch`), GCC also for the first `#include`, found
/// next to the header or in an earlier include directory. kache passes those
/// compiles through (`cc:pch`), so they equal the real compiler's.
fn precompiled_header_newly_next_to_a_header(compiler: &str) {
    let pch = |p: &CcProject, at: &str| {
        p.write("pchsrc/h.h", "#define V 1\n");
        let mut c = isolated(compiler, &p.root, &p.store);
        c.args(["-x", "c-header", "pchsrc/h.h", "-o", at]);
        run_ok(c);
    };
    let ext = match compiler {
        "gcc" => "gch",
        _ => "pch",
    };
    let forced = format!("h.h.{ext}");
    Case {
        compiler,
        dir: "",
        args: &["-c", "x.c", "-include", "h.h"],
        env_before: &[],
        env_after: &[],
        label: "changed:now-present",
    }
    .run(
        |p| {
            p.write("x.c", "int v = V;\n");
            p.write("h.h", "#define V 2\n");
        },
        |p| pch(p, &forced),
    );
    let setup = |p: &CcProject| {
        p.write("x.c", "#include \"h.h\"\nint v = V;\n");
        p.write("inc/h.h", "#define V 2\n");
        std::fs::create_dir_all(p.root.join("early")).unwrap();
    };
    let args = &["-c", "x.c", "-Iearly", "-Iinc"];
    if compiler == "gcc" {
        for at in ["inc/h.h.gch", "early/h.h.gch"] {
            Case {
                compiler,
                dir: "",
                args,
                env_before: &[],
                env_after: &[],
                label: "changed:now-present",
            }
            .run(setup, |p| pch(p, at));
        }
    } else {
        // clang loads no PCH for an `#include`: the object stays what it
        // was, and serving it is right.
        let p = CcProject::new();
        setup(&p);
        let before = as_the_real_compiler(&p, "", compiler, args, &[]);
        pch(&p, "inc/h.h.gch");
        pch(&p, "inc/h.h.pch");
        assert_eq!(as_the_real_compiler(&p, "", compiler, args, &[]), before);
    }
}
with_gcc_and_clang!(precompiled_header_newly_next_to_a_header);

/// `__TIMESTAMP__` is the modification time of the file it is in: touching
/// the source (or a system header, where GCC does not report time macros)
/// changes the object with no byte of any file changed. Such sources never
/// hit directly (`time-macros`); the preprocessor decides, or, where the
/// compiler ignores SOURCE_DATE_EPOCH (clang before 16), they pass through.
/// `__TIMESTAMP__` is the mtime of the file it is expanded in: a touch without
/// a change of content changes the object. In the source, in a system header
/// (where GCC's `-Wdate-time` report is silent unless `-Wsystem-headers`), made
/// by token pasting (no file spells it), and under a pragma that silences the
/// report (clang honours it on the preprocessor run).
fn timestamp_follows_the_mtime(compiler: &str) {
    let sde = [("SOURCE_DATE_EPOCH", "1700000000")];
    let pasted = "#define CAT(a, b) a##b\nstatic const char *t = CAT(__TIME, STAMP__);\n";
    let include = "#include <t.h>\nconst char *f(void) { return t; }\n";
    let silenced = "#pragma clang diagnostic ignored \"-Wdate-time\"\n\
                    #pragma GCC diagnostic ignored \"-Wdate-time\"\n\
                    #define CAT(a, b) a##b\n\
                    const char *f(void) { return CAT(__TIME, STAMP__); }\n";
    let cases: [(&str, &str, &str, &[&str]); 4] = [
        (
            "x.c",
            "",
            "const char *f(void) { return __TIMESTAMP__; }\n",
            &["-c", "x.c"],
        ),
        (
            "sys/t.h",
            "static const char *t = __TIMESTAMP__;\n",
            include,
            &["-c", "x.c", "-isystem", "sys"],
        ),
        (
            "sys/t.h",
            pasted,
            include,
            &["-c", "x.c", "-isystem", "sys"],
        ),
        ("x.c", "", silenced, &["-c", "x.c"]),
    ];
    for (file, header, source, args) in cases {
        let p = CcProject::new();
        p.write("sys/t.h", header);
        p.write("x.c", source);
        let at = |secs: u64| {
            let t = std::time::UNIX_EPOCH + std::time::Duration::from_secs(secs);
            let f = std::fs::File::options()
                .write(true)
                .open(p.root.join(file))
                .unwrap();
            f.set_modified(t).unwrap();
        };
        at(1_500_000_000);
        let before = as_the_real_compiler(&p, "", compiler, args, &sde);
        assert_eq!(as_the_real_compiler(&p, "", compiler, args, &sde), before);
        at(1_600_000_000);
        let after = as_the_real_compiler(&p, "", compiler, args, &sde);
        assert_ne!(
            after, before,
            "{file}: the object holds the new mtime\n{source}"
        );
        assert_eq!(direct_hits(&p), 0, "{source}\n{}", p.stats());
        assert_eq!(last_fallback(&p.store).as_deref(), Some("time-macros"));
    }
}
with_gcc_and_clang!(timestamp_follows_the_mtime);

/// Whether `compiler` expands `__DATE__` from SOURCE_DATE_EPOCH (GCC 7+,
/// clang 16+), asked of the compiler itself.
fn honours_source_date_epoch(compiler: &str) -> bool {
    let date = |sde: &str| {
        let mut c = std::process::Command::new(compiler);
        c.args(["-E", "-P", "-x", "c", "-"])
            .env("SOURCE_DATE_EPOCH", sde)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped());
        let mut child = c.spawn().unwrap();
        use std::io::Write;
        child
            .stdin
            .take()
            .unwrap()
            .write_all(b"__DATE__\n")
            .unwrap();
        child.wait_with_output().unwrap().stdout
    };
    date("0") != date("1600000000")
}

/// `__DATE__`/`__TIME__` follow SOURCE_DATE_EPOCH when the compiler honours
/// it and the user pinned it: a new date is a new object, the same pinned
/// date hits through the preprocessor, never directly. Unpinned, or with a
/// compiler that ignores it (then the clock decides), the compile passes
/// through: a key per second would be worthless.
fn date_and_time_follow_source_date_epoch(compiler: &str) {
    need_tool(compiler);
    let p = CcProject::new();
    p.write("x.c", "const char *built = __DATE__ \" \" __TIME__;\n");
    let args = &["-c", "x.c"];
    let one = [("SOURCE_DATE_EPOCH", "1500000000")];
    let two = [("SOURCE_DATE_EPOCH", "1600000000")];
    let passthroughs =
        |p: &CcProject| counter_at(&p.stats(), "cc.passthrough_reasons.cc:time-macros");
    if honours_source_date_epoch(compiler) {
        let first = as_the_real_compiler(&p, "", compiler, args, &one);
        assert_eq!(as_the_real_compiler(&p, "", compiler, args, &one), first);
        let second = as_the_real_compiler(&p, "", compiler, args, &two);
        assert_ne!(first, second, "the object holds the pinned date");
        assert_eq!(as_the_real_compiler(&p, "", compiler, args, &one), first);
        let s = p.stats();
        assert_eq!(
            (
                counter_at(&s, "cc.direct_hits"),
                counter_at(&s, "cc.preprocessed_hits")
            ),
            (0, 2),
            "{s}"
        );
    } else {
        for sde in [&one, &two] {
            let mut c = p.cmd(compiler, &["-c", "x.c", "-o", "x.o"]);
            c.envs(sde.iter().copied());
            run_ok(c);
        }
        assert_eq!(passthroughs(&p), 2, "{}", p.stats());
    }
    let before = passthroughs(&p);
    run_ok(p.cmd(compiler, &["-c", "x.c", "-o", "x.o"]));
    assert_eq!(
        passthroughs(&p),
        before + 1,
        "an unpinned date passes through\n{}",
        p.stats()
    );
    assert_eq!(last_fallback(&p.store).as_deref(), Some("time-macros"));
}
with_gcc_and_clang!(date_and_time_follow_source_date_epoch);

/// `__FILE__` is the path as spelled on the command line (and as each
/// header was found through it): the same source compiled under four
/// spellings from three directories gives four objects, each what the real
/// compiler gives, and each spelling hits directly its own.
fn file_macro_follows_the_spelling_and_directory(compiler: &str) {
    let p = CcProject::new();
    p.write(
        "src/x.c",
        "#include \"h.h\"\nconst char *me = __FILE__;\nconst char *hdr = H;\n",
    );
    p.write("src/h.h", "#define H __FILE__\n");
    std::fs::create_dir_all(p.root.join("build")).unwrap();
    let spellings: [(&str, &[&str]); 4] = [
        ("", &["-c", "src/x.c"]),
        ("", &["-c", "./src/x.c"]),
        ("src", &["-c", "x.c"]),
        ("build", &["-c", "../src/x.c"]),
    ];
    let mut objects = Vec::new();
    for (dir, args) in spellings {
        objects.push(as_the_real_compiler(&p, dir, compiler, args, &[]));
    }
    for (i, a) in objects.iter().enumerate() {
        for b in &objects[i + 1..] {
            assert_ne!(a, b, "each spelling is its own __FILE__");
        }
    }
    for ((dir, args), object) in spellings.iter().zip(&objects) {
        assert_eq!(&as_the_real_compiler(&p, dir, compiler, args, &[]), object);
    }
    assert_eq!(direct_hits(&p), 4, "{}", p.stats());
}
with_gcc_and_clang!(file_macro_follows_the_spelling_and_directory);
