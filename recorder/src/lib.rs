//! kache's input recorder: observes what a compile reads instead of inferring it.
//!
//! A compile run through a [`Session`] loads a small preload library of ours (`LD_PRELOAD`,
//! Linux with glibc) into the compiler and every dynamically linked program it starts; the
//! library logs each file looked up (found or not), each directory listed, each environment
//! variable read and each program executed. [`Session::finish`] turns the log into
//! [`ObservedInputs`], or into [`Incomplete`] when something ran that the recorder could not
//! see into (a static binary, a stripped environment…): the caller must then not cache.
//!
//! ```no_run
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use kache_recorder::{Filter, Recorder};
//! let recorder = Recorder::new("/home/me/.cache/kache/recorder".as_ref())?;
//! let session = recorder.session()?;
//! let mut cmd = std::process::Command::new("rustc");
//! cmd.arg("src/lib.rs");
//! session.apply(&mut cmd);
//! let status = cmd.status()?;
//! let filter = Filter::pseudo_filesystems().drop_under("/path/to/sysroot");
//! match session.finish(&filter) {
//!     Ok(inputs) => println!("{} files read", inputs.files_read.len()),
//!     Err(incomplete) => println!("not cached: {incomplete}"),
//! }
//! # let _ = status; Ok(()) }
//! ```
//!
//! The library is compiled from `csrc/recorder.c` by build.rs and embedded in this crate, so
//! `cargo install kache` carries it; [`Recorder::new`] writes it once into a directory under
//! its hash. Where it cannot exist (not Linux, not glibc, no C compiler at build time) or
//! cannot be used, [`Recorder::new`] says [`Unavailable`]. See README.md for what is hooked
//! and what cannot be observed.

pub mod env_table;
mod log;
mod reduce;
#[cfg(test)]
mod target_check;

pub use reduce::{parse, Filter, Incomplete, Lost, ObservedInputs, PSEUDO_FILESYSTEMS};

use std::ffi::{OsStr, OsString};
use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};

/// The variable naming the log file each recorded process appends to.
pub const LOG_VAR: &str = "KACHE_RECORDER_LOG";
/// The variable naming the process that made the session: its direct child records its whole
/// environment (see `ObservedInputs::env`).
pub const ROOT_VAR: &str = "KACHE_RECORDER_ROOT";

#[cfg(kache_recorder_built)]
static LIBRARY: Option<&[u8]> = Some(include_bytes!(concat!(
    env!("OUT_DIR"),
    "/kache-recorder.so"
)));
#[cfg(not(kache_recorder_built))]
static LIBRARY: Option<&[u8]> = None;

/// Whether this build carries the preload library (Linux with glibc, built with a C
/// compiler). Cheap: it decides nothing else; [`Recorder::new`] can still be `Unavailable`.
pub fn built_in() -> bool {
    LIBRARY.is_some()
}

/// Why the recorder cannot be used here; the caller falls back to inference made strict.
#[derive(Debug)]
pub enum Unavailable {
    /// This build of kache has no recorder (another OS or C library, or no C compiler when it
    /// was built).
    Platform(&'static str),
    /// The library could not be written into the directory given.
    Install(PathBuf, io::Error),
    /// `LD_PRELOAD` cannot name the library at this path (relative, or holding a space or a
    /// colon, which separate its entries).
    UnusablePath(PathBuf),
}

impl fmt::Display for Unavailable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Unavailable::Platform(why) => write!(f, "input recorder unavailable: {why}"),
            Unavailable::Install(p, e) => {
                write!(f, "input recorder unavailable: cannot install {}: {e}", p.display())
            }
            Unavailable::UnusablePath(p) => write!(
                f,
                "input recorder unavailable: LD_PRELOAD cannot name {} (spaces and colons separate its entries)",
                p.display()
            ),
        }
    }
}

impl std::error::Error for Unavailable {}

/// The installed preload library.
#[derive(Debug, Clone)]
pub struct Recorder {
    library: PathBuf,
    sessions: PathBuf,
}

impl Recorder {
    /// Installs the library into `dir` (once: `dir/<blake3>.so`, written to a temporary name,
    /// made read-only (0555) and renamed into place) and returns a recorder using it. Session
    /// logs go to `dir/sessions/`.
    pub fn new(dir: &Path) -> Result<Recorder, Unavailable> {
        Recorder::with_library(dir, LIBRARY)
    }

    fn with_library(dir: &Path, library: Option<&[u8]>) -> Result<Recorder, Unavailable> {
        let Some(bytes) = library else {
            return Err(Unavailable::Platform(
                option_env!("KACHE_RECORDER_UNAVAILABLE")
                    .unwrap_or("this build of kache has no input recorder"),
            ));
        };
        let dir = std::path::absolute(dir).map_err(|e| Unavailable::Install(dir.into(), e))?;
        let name = format!("{}.so", blake3::hash(bytes).to_hex());
        let library = dir.join(name);
        let text = library.as_os_str().as_encoded_bytes();
        if text.contains(&b' ') || text.contains(&b':') || text.contains(&b'\t') {
            return Err(Unavailable::UnusablePath(library));
        }
        install(&library, bytes).map_err(|e| Unavailable::Install(library.clone(), e))?;
        let sessions = dir.join("sessions");
        std::fs::create_dir_all(&sessions)
            .map_err(|e| Unavailable::Install(sessions.clone(), e))?;
        Ok(Recorder { library, sessions })
    }

    /// The path of the installed library (what `LD_PRELOAD` names).
    pub fn library(&self) -> &Path {
        &self.library
    }

    /// A new, empty log for one compile.
    pub fn session(&self) -> io::Result<Session> {
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let log = self
            .sessions
            .join(format!("{}-{nanos}-{n}.log", std::process::id()));
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            options.mode(0o600);
        }
        options.open(&log)?;
        Ok(Session {
            log,
            library: self.library.clone(),
        })
    }
}

/// Writes the library unless a file with exactly its bytes is already there.
fn install(path: &Path, bytes: &[u8]) -> io::Result<()> {
    if let Ok(existing) = std::fs::read(path) {
        if existing == bytes {
            return Ok(());
        }
    }
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir)?;
    let tmp = dir.join(format!(
        ".{}.{}.tmp",
        path.file_name()
            .and_then(OsStr::to_str)
            .unwrap_or("recorder"),
        std::process::id()
    ));
    let result = (|| {
        std::fs::write(&tmp, bytes)?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o555))?;
        }
        std::fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// One recorded compile: a log file, and the environment that makes a process write to it.
/// Dropping a session deletes its log.
#[derive(Debug)]
pub struct Session {
    log: PathBuf,
    library: PathBuf,
}

impl Session {
    /// The variables a recorded process needs: `LD_PRELOAD` with the library put first
    /// (before `existing_preload`, the value the process would otherwise get), the log, and
    /// this process as the root's parent.
    pub fn vars(&self, existing_preload: Option<&OsStr>) -> Vec<(OsString, OsString)> {
        let mut preload = self.library.clone().into_os_string();
        if let Some(old) = existing_preload.filter(|v| !v.is_empty()) {
            let ours = self.library.as_os_str().as_encoded_bytes();
            let already = old
                .as_encoded_bytes()
                .split(|&b| b == b':' || b == b' ')
                .any(|e| e == ours);
            if already {
                preload = old.to_os_string();
            } else {
                preload.push(":");
                preload.push(old);
            }
        }
        vec![
            ("LD_PRELOAD".into(), preload),
            (LOG_VAR.into(), self.log.clone().into_os_string()),
            (ROOT_VAR.into(), std::process::id().to_string().into()),
        ]
    }

    /// Sets the variables of [`Session::vars`] on `cmd`, keeping an `LD_PRELOAD` the command
    /// or this process already has (after ours). Call it after the command's environment is
    /// otherwise set up, and start the command from this process.
    pub fn apply(&self, cmd: &mut Command) {
        let explicit = cmd
            .get_envs()
            .find(|(k, _)| *k == OsStr::new("LD_PRELOAD"))
            .map(|(_, v)| v.map(OsStr::to_os_string));
        let existing = match explicit {
            Some(v) => v,
            None => std::env::var_os("LD_PRELOAD"),
        };
        for (k, v) in self.vars(existing.as_deref()) {
            cmd.env(k, v);
        }
    }

    /// The log file.
    pub fn log_path(&self) -> &Path {
        &self.log
    }

    /// Reads and deletes the log and reduces it (see [`parse`]). Call it once every process
    /// of the compile has exited.
    pub fn finish(self, filter: &Filter) -> Result<ObservedInputs, Incomplete> {
        match std::fs::read(&self.log) {
            Ok(bytes) => parse(&bytes, &self.library, filter),
            Err(e) => Err(Incomplete {
                reasons: vec![Lost::LogUnreadable(e.to_string())],
                observed: Box::default(),
            }),
        }
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.log);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_linux_with_glibc_targets_build_the_library() {
        assert_eq!(target_check::unsupported("linux", "gnu"), None);
        for (os, env) in [
            ("windows", "gnu"),
            ("windows", "msvc"),
            ("macos", ""),
            ("linux", "musl"),
        ] {
            let why = target_check::unsupported(os, env).unwrap();
            assert!(why.contains("needs Linux with glibc"), "{why}");
        }
    }

    #[test]
    fn a_build_without_the_library_reports_unavailable_with_its_reason() {
        let tmp = std::env::temp_dir().join(format!("kache-recorder-unit-{}", std::process::id()));
        let err = Recorder::with_library(&tmp, None).unwrap_err();
        assert!(matches!(err, Unavailable::Platform(_)));
        assert!(
            err.to_string().starts_with("input recorder unavailable: "),
            "{err}"
        );
        assert!(!tmp.exists(), "nothing is written when there is no library");
    }

    #[test]
    fn vars_put_the_library_first_and_do_not_repeat_it() {
        let s = Session {
            log: "/k/s/1.log".into(),
            library: "/k/rec.so".into(),
        };
        let v = s.vars(Some(OsStr::new("/u/mine.so")));
        assert_eq!(v[0].1, OsString::from("/k/rec.so:/u/mine.so"));
        let v = s.vars(Some(OsStr::new("/u/mine.so /k/rec.so")));
        assert_eq!(v[0].1, OsString::from("/u/mine.so /k/rec.so"));
        let v = s.vars(None);
        assert_eq!(v[0].1, OsString::from("/k/rec.so"));
        assert_eq!(
            v[1],
            (OsString::from(LOG_VAR), OsString::from("/k/s/1.log"))
        );
    }
}
