//! A throwaway user for the operations tests: its own HOME, CARGO_HOME,
//! XDG dirs and KACHE_DIR, no service manager (the daemon is started
//! directly), and a guard that stops any daemon it started.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

pub fn kache_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_kache"))
}

pub struct Sandbox {
    pub dir: tempfile::TempDir,
    pub home: PathBuf,
    pub cargo_home: PathBuf,
    pub config_home: PathBuf,
    pub kache_dir: PathBuf,
    /// The kache binary commands run (tests may point it at a copy).
    pub exe: PathBuf,
}

impl Sandbox {
    pub fn new() -> Sandbox {
        let dir = tempfile::Builder::new().prefix("kops").tempdir().unwrap();
        let root = dir.path().to_path_buf();
        let s = Sandbox {
            home: root.join("home"),
            cargo_home: root.join("home/.cargo"),
            config_home: root.join("home/.config"),
            kache_dir: root.join("store"),
            exe: kache_bin(),
            dir,
        };
        std::fs::create_dir_all(&s.cargo_home).unwrap();
        std::fs::create_dir_all(&s.config_home).unwrap();
        s
    }

    /// `kache ARGS` as this user.
    pub fn kache(&self, args: &[&str]) -> Command {
        let mut c = Command::new(&self.exe);
        c.args(args);
        self.user_env(&mut c);
        c
    }

    pub fn user_env(&self, c: &mut Command) {
        for v in [
            "RUSTC_WRAPPER",
            "CARGO_BUILD_RUSTC_WRAPPER",
            "KACHE_FALLBACK",
            "KACHE_MAX_SIZE",
            "KACHE_DISABLE",
            "XDG_CACHE_HOME",
        ] {
            c.env_remove(v);
        }
        // rustup's proxies find their toolchains through RUSTUP_HOME.
        let rustup = std::env::var("RUSTUP_HOME")
            .unwrap_or_else(|_| format!("{}/.rustup", std::env::var("HOME").unwrap_or_default()));
        let path = format!(
            "{}:{}",
            self.exe.parent().unwrap().display(),
            std::env::var("PATH").unwrap_or_default()
        );
        c.env("HOME", &self.home)
            .env("CARGO_HOME", &self.cargo_home)
            .env("RUSTUP_HOME", rustup)
            .env("XDG_CONFIG_HOME", &self.config_home)
            .env("KACHE_DIR", &self.kache_dir)
            .env("KACHE_SERVICE_MANAGER", "none")
            .env("PATH", path)
            .current_dir(&self.home);
    }

    pub fn run(&self, args: &[&str]) -> Output {
        self.kache(args).output().unwrap()
    }

    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "kache {args:?} failed ({:?})\nstdout:\n{}\nstderr:\n{}",
            out.status,
            text(&out.stdout),
            text(&out.stderr)
        );
        text(&out.stdout)
    }

    pub fn cargo_config(&self) -> PathBuf {
        self.cargo_home.join("config.toml")
    }

    pub fn unit_file(&self) -> PathBuf {
        self.config_home.join("systemd/user/kache.service")
    }

    pub fn socket(&self) -> PathBuf {
        self.kache_dir.join("daemon.sock")
    }

    /// `kache daemon status --json`.
    pub fn status(&self) -> serde_json::Value {
        let out = self.run(&["daemon", "status", "--json"]);
        serde_json::from_slice(&out.stdout).unwrap_or_else(|_| {
            panic!("status is not JSON: {}", text(&out.stdout));
        })
    }

    pub fn daemon_pid(&self) -> Option<u32> {
        let s = self.status();
        (s["state"] == "running").then(|| s["daemon"]["pid"].as_u64().unwrap() as u32)
    }
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        let _ = self.run(&["daemon", "stop"]);
    }
}

pub fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

pub fn kill9(pid: u32) {
    let st = Command::new("kill")
        .args(["-9", &pid.to_string()])
        .status()
        .unwrap();
    assert!(st.success());
    // Wait until it is gone (a zombie of another parent counts as gone once
    // its lock is released; give the kernel a moment).
    let deadline = Instant::now() + Duration::from_secs(5);
    while Path::new(&format!("/proc/{pid}/status")).exists() && Instant::now() < deadline {
        let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
        if s.contains("State:\tZ") {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Processes running `kache daemon run` for `store` (from /proc).
pub fn daemons_of(store: &Path) -> Vec<u32> {
    let want = format!("KACHE_DIR={}", store.display());
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(cmd) = std::fs::read(e.path().join("cmdline")) else {
            continue;
        };
        let args: Vec<&[u8]> = cmd.split(|b| *b == 0).collect();
        let is_daemon = args.len() >= 3 && args[1] == b"daemon" && args[2] == b"run";
        if !is_daemon {
            continue;
        }
        let status = std::fs::read_to_string(e.path().join("status")).unwrap_or_default();
        if status.contains("State:\tZ") {
            continue;
        }
        let env = std::fs::read(e.path().join("environ")).unwrap_or_default();
        if env.split(|b| *b == 0).any(|kv| kv == want.as_bytes()) {
            out.push(pid);
        }
    }
    out
}

/// A stand-in daemon on the sandbox's socket, in this test process:
/// `answer` Some(line) replies that line to every request; None accepts
/// connections and never answers (a hung daemon).
#[cfg(unix)]
pub fn fake_daemon(sock: &Path, answer: Option<String>) -> std::thread::JoinHandle<()> {
    let _ = std::fs::remove_file(sock);
    let l = std::os::unix::net::UnixListener::bind(sock).unwrap();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for s in l.incoming().flatten() {
            match &answer {
                None => held.push(s),
                Some(line) => {
                    let line = line.clone();
                    std::thread::spawn(move || {
                        use std::io::{BufRead, BufReader, Write};
                        let mut w = s.try_clone().unwrap();
                        let mut r = BufReader::new(s);
                        let mut buf = String::new();
                        while r.read_line(&mut buf).is_ok_and(|n| n > 0) {
                            let _ = w.write_all(format!("{line}\n").as_bytes());
                            buf.clear();
                        }
                    });
                }
            }
        }
    })
}

pub fn wait_until(limit: Duration, mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    f()
}
