//! The recorder observes what processes read, whatever process reads it and however it was
//! started, and says so when it could not see something.
#![cfg(target_os = "linux")]

mod support;

use kache_recorder::Lost;
use std::path::{Path, PathBuf};
use std::process::Command;
use support::*;

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

#[test]
fn a_child_process_reads_are_seen() {
    let tmp = tempfile::tempdir().unwrap();
    let rec = recorder(tmp.path());
    let input = write(tmp.path(), "input.txt", "hello from a grandchild\n");
    let mut cmd = Command::new(need_tool("sh"));
    cmd.arg("-c").arg("cat \"$1\"").arg("sh").arg(&input);
    let (out, result) = record(&rec, cmd);
    ok(&out);
    assert_eq!(out.stdout, b"hello from a grandchild\n");
    let inputs = complete(result);
    assert!(
        inputs.files_read.contains(&input),
        "cat's read of {} not seen: {:?}",
        input.display(),
        inputs.files_read
    );
    let cat = canonical(&need_tool("cat"));
    assert!(
        inputs.programs.contains(&cat),
        "{} not among the programs: {:?}",
        cat.display(),
        inputs.programs
    );
    assert!(inputs.processes >= 2, "sh and cat both report in");
}

#[test]
fn a_failed_lookup_is_recorded_as_absent_at_its_absolute_path() {
    let tmp = tempfile::tempdir().unwrap();
    let rec = recorder(tmp.path());
    let work = tmp.path().join("work");
    std::fs::create_dir(&work).unwrap();
    // A relative path: the recorder resolves it against the process's directory.
    let mut cmd = Command::new(need_tool("sh"));
    cmd.current_dir(&work)
        .arg("-c")
        .arg("cat sub/missing.h 2>/dev/null; exit 0");
    let (out, result) = record(&rec, cmd);
    ok(&out);
    let inputs = complete(result);
    let missing = work.join("sub/missing.h");
    assert!(
        inputs.paths_absent.contains(&missing),
        "{} not recorded absent: {:?}",
        missing.display(),
        inputs.paths_absent
    );
    assert!(!inputs.files_read.contains(&missing));
}

#[test]
fn many_threads_opening_files_at_once_write_whole_records() {
    let tmp = tempfile::tempdir().unwrap();
    let rec = recorder(tmp.path());
    let prog = compile_c("threads", tmp.path(), &["-pthread"]);
    let files = tmp.path().join("files");
    std::fs::create_dir(&files).unwrap();
    let per_thread = 300;
    let mut expected = Vec::new();
    for t in 0..16 {
        for i in 0..per_thread {
            let name = format!(
                "t{t:02}-{i:04}-{}.txt",
                "a-long-name-so-that-records-are-large-enough-to-tear-if-writes-were-split-xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"
            );
            expected.push(write(&files, &name, ""));
        }
    }
    let mut cmd = Command::new(&prog);
    cmd.arg(&files)
        .arg(per_thread.to_string())
        .env("KR_THREAD_VAR", "threads-value");
    let (out, result) = record(&rec, cmd);
    // The program checks that every open worked and that a failed open left errno ENOENT.
    ok(&out);
    // A torn record would make the log malformed and the recording incomplete.
    let inputs = complete(result);
    let missing: Vec<_> = expected
        .iter()
        .filter(|p| !inputs.files_read.contains(*p))
        .collect();
    assert!(missing.is_empty(), "{} opens not seen", missing.len());
    assert!(
        inputs.records >= 16 * per_thread * 2,
        "{} records",
        inputs.records
    );
    for t in 0..16 {
        assert!(inputs
            .paths_absent
            .contains(&files.join(format!("missing-{t}"))));
    }
    assert_eq!(
        inputs.env.get(std::ffi::OsStr::new("KR_THREAD_VAR")),
        Some(&Some("threads-value".into()))
    );
}

#[test]
fn children_started_every_way_are_observed() {
    let tmp = tempfile::tempdir().unwrap();
    let rec = recorder(tmp.path());
    let prog = compile_c("spawner", tmp.path(), &[]);
    let cat = need_tool("cat");
    let inputs: Vec<PathBuf> = ["spawned", "vforked", "forked", "system"]
        .iter()
        .map(|n| write(tmp.path(), &format!("{n}.txt"), n))
        .collect();
    let mut cmd = Command::new(&prog);
    cmd.arg(&cat).args(&inputs);
    let (out, result) = record(&rec, cmd);
    ok(&out);
    assert_eq!(out.stdout, b"spawnedvforkedforkedsystem");
    let observed = complete(result);
    for p in &inputs {
        assert!(
            observed.files_read.contains(p),
            "{} not seen: {:?}",
            p.display(),
            observed.files_read
        );
    }
    // posix_spawnp and execlp searched PATH: the directories before cat's were looked in.
    assert!(observed.programs.contains(&cat));
}

#[test]
fn a_child_that_strips_ld_preload_makes_the_recording_incomplete() {
    let tmp = tempfile::tempdir().unwrap();
    let rec = recorder(tmp.path());
    let input = write(tmp.path(), "input.txt", "unseen\n");
    need_tool("env");
    let mut cmd = Command::new(need_tool("sh"));
    cmd.arg("-c")
        .arg("env -u LD_PRELOAD cat \"$1\"")
        .arg("sh")
        .arg(&input);
    let (out, result) = record(&rec, cmd);
    ok(&out);
    assert_eq!(
        out.stdout, b"unseen\n",
        "the program still behaves as asked"
    );
    let err = result.expect_err("a child without the recorder cannot make a complete recording");
    let cat = need_tool("cat");
    assert!(
        err.reasons.contains(&Lost::PreloadStripped(cat.clone())),
        "{:?}",
        err.reasons
    );
    assert!(
        err.to_string().contains("started without LD_PRELOAD"),
        "{err}"
    );
    assert!(!err.observed.files_read.contains(&input));
}

#[test]
fn a_statically_linked_program_makes_the_recording_incomplete() {
    let tmp = tempfile::tempdir().unwrap();
    let rec = recorder(tmp.path());
    assert!(
        Path::new("/usr/lib/x86_64-linux-gnu/libc.a").exists() || Path::new("/usr/lib/libc.a").exists(),
        "libc.a is missing: install the C library's static archive (libc6-dev) to link a static test program"
    );
    let prog = compile_c("hello", tmp.path(), &["-static"]);
    let input = write(tmp.path(), "input.txt", "");

    // Started by an observed shell: the shell's exec sees a binary with no ELF interpreter.
    let mut cmd = Command::new(need_tool("sh"));
    cmd.arg("-c")
        .arg("\"$1\" \"$2\"")
        .arg("sh")
        .arg(&prog)
        .arg(&input);
    let (out, result) = record(&rec, cmd);
    ok(&out);
    assert_eq!(out.stdout, b"static hello\n");
    let err = result.expect_err("a static program's reads cannot be observed");
    assert!(
        err.reasons.contains(&Lost::StaticProgram(prog.clone())),
        "{:?}",
        err.reasons
    );

    // Started directly as the compiler: nothing reports in at all.
    let mut cmd = Command::new(&prog);
    cmd.arg(&input);
    let (out, result) = record(&rec, cmd);
    ok(&out);
    let err = result.expect_err("a static root cannot be observed");
    assert_eq!(err.reasons, vec![Lost::RootNotObserved]);
}

#[test]
fn the_recorded_process_runs_with_the_library_in_ld_preload() {
    // The recorded process sees its own LD_PRELOAD entries after ours, and runs normally.
    let tmp = tempfile::tempdir().unwrap();
    let rec = recorder(tmp.path());
    let mut cmd = Command::new(need_tool("sh"));
    cmd.arg("-c").arg("echo \"$LD_PRELOAD\"");
    let (out, result) = record(&rec, cmd);
    ok(&out);
    let shown = String::from_utf8(out.stdout).unwrap();
    assert_eq!(shown.trim(), rec.library().to_str().unwrap());
    complete(result);
}

#[test]
fn a_library_loaded_by_bare_name_still_loads_through_runpath_and_is_reported() {
    let tmp = tempfile::tempdir().unwrap();
    let rec = recorder(tmp.path());
    let lib = tmp.path().join("lib");
    std::fs::create_dir(&lib).unwrap();
    let plugin = compile_c("plugin", &lib, &["-shared", "-fPIC"]);
    std::fs::rename(&plugin, lib.join("libkrplugin.so")).unwrap();
    // RUNPATH (not RPATH) applies only to the object that calls dlopen.
    let loader = compile_c(
        "loader",
        tmp.path(),
        &["-Wl,--enable-new-dtags,-rpath,$ORIGIN/lib", "-ldl"],
    );
    let (out, result) = record(&rec, Command::new(&loader));
    ok(&out);
    assert_eq!(out.stdout, b"42\n");
    let err = result.expect_err("a library found by the loader's own search is not observed");
    assert_eq!(
        err.reasons,
        vec![Lost::LibraryByName("libkrplugin.so".into())]
    );
}

#[test]
fn a_child_whose_environment_was_changed_is_still_observed() {
    let tmp = tempfile::tempdir().unwrap();
    let rec = recorder(tmp.path());
    let a = write(tmp.path(), "a.txt", "a");
    let b = write(tmp.path(), "b.txt", "b");
    // One child gets another LD_PRELOAD (the recorder puts itself first again), the other
    // loses the log variable (the recorder puts it back).
    let libc = Path::new("/lib/x86_64-linux-gnu/libc.so.6");
    assert!(libc.exists(), "{} is missing", libc.display());
    let mut cmd = Command::new(need_tool("sh"));
    cmd.arg("-c")
        .arg("LD_PRELOAD=\"$3\" cat \"$1\"; env -u KACHE_RECORDER_LOG cat \"$2\"")
        .arg("sh")
        .arg(&a)
        .arg(&b)
        .arg(libc);
    let (out, result) = record(&rec, cmd);
    ok(&out);
    assert_eq!(out.stdout, b"ab");
    let inputs = complete(result);
    assert!(inputs.files_read.contains(&a), "{:?}", inputs.files_read);
    assert!(inputs.files_read.contains(&b), "{:?}", inputs.files_read);
}
