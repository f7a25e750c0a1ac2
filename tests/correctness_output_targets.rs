//! An output path that is not a regular file (`-o` naming a character
//! device, as `-o /dev/null` does in configure-style probes) is written
//! through by the compiler and must never be replaced by a restore, nor
//! recorded as an empty object that a later real compile is served.
//!
//! The device is a private node made with mknod in a temporary directory
//! (major 1, minor 3: the null device), never the system's /dev/null.
#![cfg(unix)] // shell-script compilers and build scripts, mode bits

mod common;

use common::{counter_at, need_tool, run_ok, CcProject};
use std::os::unix::fs::FileTypeExt;
use std::path::Path;
use std::process::Command;

fn make_null_device(path: &Path) {
    need_tool("mknod");
    let out = Command::new("mknod")
        .arg(path)
        .args(["c", "1", "3"])
        .output()
        .expect("spawn mknod");
    assert!(
        out.status.success(),
        "this test needs root to create a character device with mknod: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn is_char_device(path: &Path) -> bool {
    std::fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_char_device())
}

const SOURCE: &str = "#include <stdio.h>\nint main(void) { printf(\"forty-two\\n\"); return 0; }\n";

fn project_with_device() -> (CcProject, std::path::PathBuf) {
    need_tool("gcc");
    let p = CcProject::new();
    p.write("x.c", SOURCE);
    let dev = p.root.join("null-device");
    make_null_device(&dev);
    (p, dev)
}

#[test]
fn compile_to_a_character_device_keeps_the_device_node() {
    let (p, dev) = project_with_device();
    for attempt in ["first", "second", "third"] {
        p.cc("gcc", &["-c", "x.c", "-o", "null-device"]);
        assert!(
            is_char_device(&dev),
            "after the {attempt} compile, the device node was replaced by a {:?}",
            std::fs::symlink_metadata(&dev).map(|m| m.file_type())
        );
    }
    // The plain compiler agrees the device is still usable.
    let mut plain = Command::new("gcc");
    plain
        .current_dir(&p.root)
        .args(["-c", "x.c", "-o"])
        .arg(&dev);
    run_ok(plain);
    assert!(is_char_device(&dev));
}

#[test]
fn compile_to_a_real_file_after_one_to_a_device_gets_a_real_object() {
    let (p, _dev) = project_with_device();
    p.cc("gcc", &["-c", "x.c", "-o", "null-device"]);
    let before = p.stats();
    p.cc("gcc", &["-c", "x.c", "-o", "real.o"]);
    let obj = p.read("real.o");
    assert!(
        obj.starts_with(b"\x7fELF"),
        "real.o is not an object ({} bytes): what was read back from the device was served",
        obj.len()
    );
    assert_eq!(p.link_and_run(&["real.o"]), "forty-two\n");
    // Counted once, whatever the outcome.
    let calls = |v: &serde_json::Value| {
        ["cc.hits", "cc.misses", "cc.passthroughs"]
            .iter()
            .map(|k| counter_at(v, k))
            .sum::<u64>()
    };
    assert_eq!(calls(&p.stats()), calls(&before) + 1);
}

#[test]
fn compile_through_a_symlink_to_a_device_keeps_the_link_and_the_device() {
    let (p, dev) = project_with_device();
    let link = p.root.join("out.o");
    std::os::unix::fs::symlink(&dev, &link).unwrap();
    for _ in 0..2 {
        p.cc("gcc", &["-c", "x.c", "-o", "out.o"]);
        let m = std::fs::symlink_metadata(&link).unwrap();
        assert!(
            m.file_type().is_symlink(),
            "the symlink was replaced by a {:?}",
            m.file_type()
        );
        assert!(is_char_device(&dev));
    }
    let v = p.stats();
    assert_eq!(
        counter_at(&v, "cc.passthrough_reasons.output-not-a-file"),
        2,
        "{v}"
    );
}

#[test]
fn compile_to_a_directory_fails_as_the_compiler_does_and_leaves_it() {
    need_tool("gcc");
    let p = CcProject::new();
    p.write("x.c", SOURCE);
    std::fs::create_dir(p.root.join("out.o")).unwrap();
    let plain = Command::new("gcc")
        .current_dir(&p.root)
        .args(["-c", "x.c", "-o", "out.o"])
        .output()
        .unwrap();
    assert!(
        !plain.status.success(),
        "gcc wrote an object over a directory"
    );
    let out = p
        .cmd("gcc", &["-c", "x.c", "-o", "out.o"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), plain.status.code());
    assert!(std::fs::symlink_metadata(p.root.join("out.o"))
        .unwrap()
        .is_dir());
}
