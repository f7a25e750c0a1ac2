//! C/C++ caching across worktrees and build systems: a second checkout at
//! another path hits and gets no path of the first; a `-sys` crate's C compile
//! is cached through cargo; `make -j8` of 50 translation units hits all 50 the
//! second time, through `CC="kache cc"`, the launcher form and the shims.

mod common;

use std::path::Path;
use std::process::Command;

use common::{counter_at, isolated, kache_bin, kache_cc, need_tool, run_ok, CcProject};

fn write_sources(p: &CcProject) {
    p.write(
        "inc/a.h",
        "#define GREETING \"hello\"\nconst char *where(void);\n",
    );
    p.write(
        "src/a.c",
        "#include <stdio.h>\n#include \"a.h\"\n\
         const char *where(void) { return __FILE__; }\n\
         int main(void) { printf(\"%s from %s\\n\", GREETING, where()); return 0; }\n",
    );
    std::fs::create_dir_all(p.root.join("build")).unwrap();
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

/// With `-g`, from the worktree root and from a subdirectory: the second
/// worktree hits, and neither object names the first worktree's path.
#[test]
fn second_worktree_hits_with_debug_info_and_carries_no_first_path() {
    for compiler in ["gcc", "clang"] {
        need_tool(compiler);
        let first = CcProject::at_name("wt-first-checkout");
        let second = CcProject::at_name("wt-second-checkout");
        write_sources(&first);
        write_sources(&second);
        let store = &first.store;
        let calls: [(&str, &[&str], &str); 2] = [
            (
                "",
                &["-g", "-O1", "-Iinc", "-c", "src/a.c", "-o", "build/a.o"],
                "build/a.o",
            ),
            (
                "src",
                &["-g", "-I../inc", "-c", "a.c", "-o", "../build/b.o"],
                "build/b.o",
            ),
        ];
        for (sub, args, obj) in calls {
            run_ok(kache_cc(&first.root.join(sub), store, compiler, args));
            let before = counter_at(&common::stats(store), "cc.hits");
            run_ok(kache_cc(&second.root.join(sub), store, compiler, args));
            let after = counter_at(&common::stats(store), "cc.hits");
            assert_eq!(
                after,
                before + 1,
                "{compiler} {args:?}: second worktree must hit"
            );
            let bytes = second.read(obj);
            let first_path = first.root.parent().unwrap().to_string_lossy().into_owned();
            assert!(
                !contains(&bytes, first_path.as_bytes()),
                "{compiler} {args:?}: the second worktree's object names {first_path}"
            );
            assert!(
                !contains(&first.read(obj), first_path.as_bytes()),
                "{compiler} {args:?}: objects must not carry the producing worktree's path"
            );
            // The structure below the root is kept (lesson 11): __FILE__ still
            // names src/a.c.
            assert!(contains(&bytes, b"a.c"));
        }
        // The program from the restored object works and prints a relative path.
        let out = second.link_and_run(&["build/a.o"]);
        assert!(out.starts_with("hello from "), "{out}");
        assert!(!out.contains("wt-first-checkout"), "{out}");
    }
}

/// A crate whose build script compiles C with the `cc` crate
/// (`tests/fixtures/ws/csys`): built in a second worktree, its C compile hits.
#[test]
fn sys_crate_c_compile_is_cached_in_a_second_worktree() {
    need_tool("cc");
    let tmp = tempfile::tempdir().unwrap();
    let store = tmp.path().join("store");
    let one = common::fixture_at(&tmp.path().join("one"));
    common::build(&one, &store);
    let s1 = common::stats(&store);
    assert!(
        counter_at(&s1, "cc.misses") >= 1,
        "first build: {}",
        s1["cc"]
    );
    let two = common::fixture_at(&tmp.path().join("two"));
    common::build(&two, &store);
    let s2 = common::stats(&store);
    assert!(
        counter_at(&s2, "cc.hits") >= 1,
        "second worktree: no C hit: {}",
        s2["cc"]
    );
    assert_eq!(
        counter_at(&s2, "cc.misses"),
        counter_at(&s1, "cc.misses"),
        "second worktree recompiled C: {}",
        s2["cc"]
    );
    assert_eq!(
        common::run_app(&two, "debug"),
        common::run_app(&one, "debug")
    );
}

const UNITS: usize = 50;

/// A make project of 50 translation units (49 functions and a main).
fn make_project(p: &CcProject) {
    p.write("inc/common.h", "#define BASE 1000\n");
    let mut main = String::from("#include <stdio.h>\n#include \"common.h\"\n");
    for i in 1..UNITS {
        p.write(
            &format!("src/f{i}.c"),
            &format!("#include \"common.h\"\nint f{i}(void) {{ return BASE + {i}; }}\n"),
        );
        main.push_str(&format!("int f{i}(void);\n"));
    }
    main.push_str("int main(void) {\n  long s = 0;\n");
    for i in 1..UNITS {
        main.push_str(&format!("  s += f{i}();\n"));
    }
    main.push_str("  printf(\"%ld\\n\", s);\n  return 0;\n}\n");
    p.write("src/main.c", &main);
    p.write(
        "Makefile",
        "OBJS := $(patsubst %.c,%.o,$(wildcard src/*.c))\n\
         prog: $(OBJS)\n\t$(CC) -o $@ $^\n\
         %.o: %.c\n\t$(CC) -O2 -Wall -Iinc -MMD -MP -c $< -o $@\n\
         -include $(OBJS:.o=.d)\n\
         clean:\n\trm -f prog src/*.o src/*.d\n",
    );
}

fn make(p: &CcProject, cc: &str, path_prefix: Option<&Path>) -> String {
    let mut c = isolated("make", &p.root, &p.store);
    c.args(["-j8", "prog"]).arg(format!("CC={cc}"));
    if let Some(dir) = path_prefix {
        let path = std::env::var_os("PATH").unwrap_or_default();
        let mut dirs = vec![dir.to_path_buf()];
        dirs.extend(std::env::split_paths(&path));
        c.env("PATH", std::env::join_paths(dirs).unwrap());
    }
    run_ok(c);
    let out = run_ok(Command::new(p.root.join("prog")));
    String::from_utf8(out.stdout).unwrap()
}

/// `make -j8` of 50 units: every compile succeeds; a clean rebuild hits all 50,
/// whichever way kache is put in front of the compiler.
#[test]
fn make_j8_of_50_units_hits_all_of_them_the_second_time() {
    need_tool("make");
    need_tool("cc");
    let p = CcProject::new();
    make_project(&p);
    let expected: i64 = (1..UNITS as i64).map(|i| 1000 + i).sum();
    let expected = format!("{expected}\n");
    let clean = || {
        let mut c = isolated("make", &p.root, &p.store);
        c.arg("clean");
        run_ok(c)
    };

    assert_eq!(make(&p, &format!("{} cc", kache_bin()), None), expected);
    let s = p.stats();
    assert_eq!(counter_at(&s, "cc.misses"), UNITS as u64, "{}", s["cc"]);
    assert_eq!(counter_at(&s, "cc.passthrough_reasons.cc:link-step"), 1);

    // The launcher form (CMAKE_C_COMPILER_LAUNCHER=kache runs
    // `kache /usr/bin/cc …`): the same entries.
    let real_cc = resolve("cc");
    let forms = [
        (format!("{} {}", kache_bin(), real_cc.display()), None),
        ("cc".to_string(), Some(p.root.join("shims"))),
    ];
    run_ok(kache_cc(&p.root, &p.store, "shims", &["install", "shims"]));
    for (cc, path_prefix) in forms {
        clean();
        let before = counter_at(&p.stats(), "cc.hits");
        assert_eq!(make(&p, &cc, path_prefix.as_deref()), expected, "CC={cc}");
        let s = p.stats();
        assert_eq!(
            counter_at(&s, "cc.hits") - before,
            UNITS as u64,
            "CC={cc}: {}",
            s["cc"]
        );
        assert_eq!(counter_at(&s, "cc.misses"), UNITS as u64, "CC={cc}");
        // Dep files came back with the objects: a no-op make does nothing.
        let out = {
            let mut c = isolated("make", &p.root, &p.store);
            c.args(["-q", "prog"]);
            run_ok(c)
        };
        assert!(out.status.success());
    }
}

fn resolve(name: &str) -> std::path::PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|d| d.join(name))
        .find(|p| p.is_file())
        .unwrap_or_else(|| panic!("{name} not on PATH"))
}
