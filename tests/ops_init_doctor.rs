//! `kache init` and `kache doctor` in a throwaway user (HOME, CARGO_HOME,
//! XDG dirs, KACHE_DIR): the cargo config keeps what it had, the service
//! names this binary, a second run changes nothing; each broken setup is
//! named by doctor, repaired by `--fix`, and healthy afterwards.
#![cfg(unix)] // a stand-in daemon on a Unix socket

mod ops_support;

use std::time::Duration;

use ops_support::*;

const USER_CONFIG: &str =
    "# my cargo settings\n[net]\nretry = 3 # flaky network\n\n[build]\njobs = 2 # small machine\n";

fn mtime(p: &std::path::Path) -> std::time::SystemTime {
    std::fs::metadata(p).unwrap().modified().unwrap()
}

fn doctor(sb: &Sandbox, args: &[&str]) -> (i32, String) {
    let mut a = vec!["doctor"];
    a.extend_from_slice(args);
    let out = sb.run(&a);
    (
        out.status.code().unwrap_or(-1),
        text(&out.stdout) + &text(&out.stderr),
    )
}

fn initialized() -> Sandbox {
    let sb = Sandbox::new();
    std::fs::write(sb.cargo_config(), USER_CONFIG).unwrap();
    sb.ok(&["init", "-y"]);
    sb
}

/// doctor names the problem and fails; `--fix` repairs it; then healthy.
fn assert_doctor_repairs(sb: &Sandbox, extra: &[&str], needle: &str) {
    let (code, out) = doctor(sb, extra);
    assert_ne!(code, 0, "doctor should fail:\n{out}");
    assert!(out.contains("problem"), "{out}");
    assert!(
        out.contains(needle),
        "doctor should name `{needle}`:\n{out}"
    );
    let mut fix = extra.to_vec();
    fix.push("--fix");
    let (code, out) = doctor(sb, &fix);
    assert_eq!(code, 0, "doctor --fix should repair:\n{out}");
    let (code, out) = doctor(sb, extra);
    assert_eq!(code, 0, "doctor after --fix should pass:\n{out}");
}

#[test]
fn init_wires_cargo_keeping_comments_and_keys_and_writes_the_unit() {
    let sb = initialized();
    let cfg = std::fs::read_to_string(sb.cargo_config()).unwrap();
    let exe = sb.exe.display().to_string();
    assert!(cfg.contains(&format!("rustc-wrapper = \"{exe}\"")), "{cfg}");
    for kept in [
        "# my cargo settings",
        "retry = 3 # flaky network",
        "jobs = 2 # small machine",
    ] {
        assert!(cfg.contains(kept), "lost `{kept}`:\n{cfg}");
    }
    let backup = std::fs::read_to_string(sb.cargo_home.join("config.toml.kache-backup")).unwrap();
    assert_eq!(backup, USER_CONFIG);
    let unit = std::fs::read_to_string(sb.unit_file()).unwrap();
    assert!(
        unit.contains(&format!("ExecStart=\"{exe}\" \"daemon\" \"run\"")),
        "{unit}"
    );
    // No systemd user session here: init started the daemon itself.
    assert_eq!(sb.status()["state"], "running");
}

#[test]
fn second_init_changes_nothing_and_says_so() {
    let sb = initialized();
    let before = (
        std::fs::read(sb.cargo_config()).unwrap(),
        mtime(&sb.cargo_config()),
        mtime(&sb.unit_file()),
        sb.daemon_pid(),
    );
    std::thread::sleep(Duration::from_millis(20));
    let out = sb.ok(&["init", "-y"]);
    assert!(out.contains("nothing to change"), "{out}");
    let after = (
        std::fs::read(sb.cargo_config()).unwrap(),
        mtime(&sb.cargo_config()),
        mtime(&sb.unit_file()),
        sb.daemon_pid(),
    );
    assert_eq!(before, after);
    let check = sb.run(&["init", "--check"]);
    assert!(check.status.success(), "{}", text(&check.stdout));
}

#[test]
fn init_check_changes_no_file() {
    let sb = Sandbox::new();
    std::fs::write(sb.cargo_config(), USER_CONFIG).unwrap();
    let out = sb.run(&["init", "--check"]);
    assert_eq!(
        out.status.code(),
        Some(1),
        "--check reports pending changes"
    );
    let said = text(&out.stdout);
    assert!(
        said.contains("would") && said.contains("rustc-wrapper"),
        "{said}"
    );
    assert_eq!(
        std::fs::read_to_string(sb.cargo_config()).unwrap(),
        USER_CONFIG
    );
    assert!(!sb.unit_file().exists());
    assert!(!sb.cargo_home.join("config.toml.kache-backup").exists());
    assert!(!sb.socket().exists());
    assert_eq!(sb.status()["state"], "not-running");
}

#[test]
fn doctor_passes_on_a_healthy_setup() {
    let sb = initialized();
    let (code, out) = doctor(&sb, &["--verify"]);
    assert_eq!(code, 0, "{out}");
    for line in ["cargo wiring", "service", "daemon", "rustc", "store"] {
        assert!(
            out.lines().any(|l| l.starts_with("ok") && l.contains(line)),
            "no ok `{line}`:\n{out}"
        );
    }
}

#[test]
fn doctor_repairs_a_missing_wrapper() {
    let sb = initialized();
    std::fs::write(sb.cargo_config(), USER_CONFIG).unwrap();
    assert_doctor_repairs(&sb, &[], "rustc-wrapper is not set");
    let cfg = std::fs::read_to_string(sb.cargo_config()).unwrap();
    assert!(
        cfg.contains("rustc-wrapper") && cfg.contains("retry = 3 # flaky network"),
        "{cfg}"
    );
}

#[test]
fn doctor_moves_cargo_off_sccache_keeping_it_as_fallback() {
    let sb = initialized();
    std::fs::write(
        sb.cargo_config(),
        format!("{USER_CONFIG}rustc-wrapper = \"sccache\"\n"),
    )
    .unwrap();
    std::fs::write(
        sb.home.join(".bashrc"),
        "alias ll='ls -l'\nexport RUSTC_WRAPPER=sccache\n",
    )
    .unwrap();
    assert_doctor_repairs(&sb, &[], "sccache");
    let cfg = std::fs::read_to_string(sb.cargo_config()).unwrap();
    assert!(cfg.contains(&sb.exe.display().to_string()), "{cfg}");
    let kache_cfg = std::fs::read_to_string(sb.config_home.join("kache/config.toml")).unwrap();
    assert!(kache_cfg.contains("fallback = \"sccache\""), "{kache_cfg}");
    let rc = std::fs::read_to_string(sb.home.join(".bashrc")).unwrap();
    assert!(
        rc.contains("alias ll") && rc.contains("# disabled by `kache doctor --fix`"),
        "{rc}"
    );
    // kache's own config now names the fallback and stays valid.
    sb.ok(&["config", "show"]);
}

#[test]
fn doctor_verify_finds_and_removes_a_corrupt_blob() {
    let sb = initialized();
    let f = sb.dir.path().join("payload");
    std::fs::write(&f, b"some object bytes").unwrap();
    let key = "ab".repeat(32);
    sb.ok(&["debug", "put", &key, f.to_str().unwrap()]);
    let blobs = sb.kache_dir.join("blobs");
    let shard = std::fs::read_dir(&blobs)
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let blob = std::fs::read_dir(shard)
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let mut perm = std::fs::metadata(&blob).unwrap().permissions();
    #[allow(clippy::permissions_set_readonly_false)]
    perm.set_readonly(false);
    std::fs::set_permissions(&blob, perm).unwrap();
    std::fs::write(&blob, b"some object bytez").unwrap();
    assert_doctor_repairs(&sb, &["--verify"], "corrupt");
    assert!(!blob.exists());
}

#[test]
fn doctor_replaces_a_daemon_of_another_version() {
    let sb = initialized();
    sb.ok(&["daemon", "stop"]);
    let _fake = fake_daemon(
        &sb.socket(),
        Some(r#"{"version":"0.0.1-old","protocol":1,"ok":true,"data":{"pid":1,"binary":"/old/kache"}}"#.into()),
    );
    assert_doctor_repairs(&sb, &[], "version 0.0.1-old");
    let s = sb.status();
    assert_eq!(s["state"], "running");
    assert_eq!(s["version"], env!("CARGO_PKG_VERSION"));
}

#[test]
fn doctor_cleans_a_stale_socket() {
    let sb = initialized();
    let pid = sb.daemon_pid().unwrap();
    kill9(pid);
    assert!(sb.socket().exists(), "a killed daemon leaves its socket");
    assert_doctor_repairs(&sb, &[], "stale socket");
    assert_ne!(sb.daemon_pid(), Some(pid));
}
