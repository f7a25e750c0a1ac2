//! Talking to the daemon: bounded requests for the CLI, fire-and-forget
//! notes for wrapper mode, and start/stop of the daemon process.

use std::io::{self, BufRead, BufReader, Write};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use kache_platform::ipc;
use kache_platform::process::{pid_alive, signal_terminate, spawn_detached};
use kache_platform::{FileLock, LockMode};

use super::paths;
use super::protocol::{Envelope, Request, Response};

/// The bound a wrapper-mode caller may spend on the daemon, connect and
/// write included. A build never waits longer than this for it.
pub const WRAPPER_BUDGET: Duration = Duration::from_millis(50);

/// Sends one request and reads the answer, each step bounded by `timeout`.
pub fn request(store_dir: &Path, req: Request, timeout: Duration) -> io::Result<Response> {
    let p = paths(store_dir);
    let mut stream = ipc::connect(&p.socket, timeout)?;
    let mut line = serde_json::to_string(&Envelope::new(req)).map_err(io::Error::other)?;
    line.push('\n');
    stream.write_all(line.as_bytes())?;
    let mut answer = String::new();
    BufReader::new(stream).read_line(&mut answer)?;
    if answer.is_empty() {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "daemon closed the connection",
        ));
    }
    serde_json::from_str(answer.trim()).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
}

/// For wrapper mode: delivers `req` if a daemon takes it within
/// [`WRAPPER_BUDGET`], and ignores every failure (no daemon, stale socket,
/// hung daemon). Does not wait for the answer.
pub fn notify(store_dir: &Path, req: Request) {
    let p = paths(store_dir);
    if let Ok(mut s) = ipc::connect(&p.socket, WRAPPER_BUDGET) {
        if let Ok(mut line) = serde_json::to_string(&Envelope::new(req)) {
            line.push('\n');
            let _ = s.write_all(line.as_bytes());
        }
    }
}

/// What is at a store's daemon endpoint.
#[derive(Debug)]
pub enum State {
    /// A daemon answered `status`.
    Running(Response),
    /// No socket, no daemon.
    NotRunning,
    /// A socket file nobody listens on (a killed daemon's leftover).
    Stale,
    /// Something accepts connections but does not answer properly.
    Unresponsive(String),
}

/// Looks at the endpoint without changing anything.
pub fn probe(store_dir: &Path, timeout: Duration) -> State {
    let p = paths(store_dir);
    if !ipc::endpoint_exists(&p.socket) {
        return State::NotRunning;
    }
    match request(store_dir, Request::Status, timeout) {
        Ok(r) if r.ok => State::Running(r),
        Ok(r) => State::Unresponsive(r.error.unwrap_or_else(|| "error answer".into())),
        Err(e)
            if matches!(
                e.kind(),
                io::ErrorKind::ConnectionRefused | io::ErrorKind::NotFound
            ) =>
        {
            State::Stale
        }
        // A daemon killed a moment ago can still take a connection and then
        // reset it: a hang-up from something that does not hold the store's
        // daemon lock is a leftover. (Silence is not: that stays unresponsive.)
        Err(e)
            if matches!(
                e.kind(),
                io::ErrorKind::ConnectionReset
                    | io::ErrorKind::ConnectionAborted
                    | io::ErrorKind::BrokenPipe
                    | io::ErrorKind::UnexpectedEof
            ) && lock_holder(store_dir).is_none() =>
        {
            State::Stale
        }
        Err(e) => State::Unresponsive(e.to_string()),
    }
}

/// The pid of the daemon holding the store's lock, or None when no process
/// holds it (then whatever sits at the socket is not a kache daemon of
/// this store, or is dead).
pub fn lock_holder(store_dir: &Path) -> Option<u32> {
    let p = paths(store_dir);
    match FileLock::try_acquire(&p.lock, LockMode::Shared) {
        Ok(Some(_free)) => None,
        Ok(None) => std::fs::read_to_string(&p.lock)
            .ok()
            .and_then(|t| t.trim().parse().ok()),
        Err(_) => None,
    }
}

#[derive(Debug)]
pub enum Started {
    AlreadyRunning(Response),
    Started(Response),
}

/// Starts a daemon for the store unless one answers already; waits until
/// it answers. Two concurrent starts leave one daemon: the second `daemon
/// run` finds the lock taken and exits.
pub fn start(store_dir: &Path, exe: &Path) -> io::Result<Started> {
    match probe(store_dir, Duration::from_millis(500)) {
        State::Running(r) => return Ok(Started::AlreadyRunning(r)),
        State::Unresponsive(why) => {
            if let Some(pid) = lock_holder(store_dir) {
                return Err(io::Error::other(format!(
                    "the daemon (pid {pid}) does not answer ({why}); run `kache daemon stop` first"
                )));
            }
        }
        State::Stale | State::NotRunning => {}
    }
    let p = paths(store_dir);
    std::fs::create_dir_all(store_dir)?;
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&p.log)?;
    let mut cmd = Command::new(exe);
    cmd.args(["daemon", "run"])
        .env("KACHE_DIR", store_dir)
        .current_dir(store_dir)
        .stdout(log.try_clone()?)
        .stderr(log);
    spawn_detached(&mut cmd)?;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let State::Running(r) = probe(store_dir, Duration::from_millis(500)) {
            return Ok(Started::Started(r));
        }
        if Instant::now() > deadline {
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!("the daemon did not come up; see {}", p.log.display()),
            ));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[derive(Debug, PartialEq, Eq)]
pub enum Stopped {
    NotRunning,
    /// Asked politely, it left.
    Stopped,
    /// It did not answer or did not leave; it was terminated.
    Killed(u32),
    /// Removed a socket file no live daemon owned.
    StaleRemoved,
}

/// Stops the store's daemon: `shutdown` request, then SIGTERM/SIGKILL to
/// the lock holder if it does not leave, then removal of a leftover socket
/// when no daemon holds the lock.
pub fn stop(store_dir: &Path) -> io::Result<Stopped> {
    let p = paths(store_dir);
    let had_daemon = lock_holder(store_dir).is_some();
    let wait_gone = |limit: Duration| {
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if lock_holder(store_dir).is_none() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        false
    };
    let mut outcome = Stopped::NotRunning;
    if had_daemon {
        let asked =
            request(store_dir, Request::Shutdown, Duration::from_secs(2)).is_ok_and(|r| r.ok);
        if asked && wait_gone(Duration::from_secs(5)) {
            outcome = Stopped::Stopped;
        } else if let Some(pid) = lock_holder(store_dir) {
            let _ = signal_terminate(pid, false);
            if !wait_gone(Duration::from_secs(3)) {
                let _ = signal_terminate(pid, true);
                wait_gone(Duration::from_secs(3));
            }
            if pid_alive(pid) && lock_holder(store_dir) == Some(pid) {
                return Err(io::Error::other(format!("daemon pid {pid} would not stop")));
            }
            outcome = Stopped::Killed(pid);
        } else {
            outcome = Stopped::Stopped;
        }
    }
    // No daemon holds the lock now: whatever is at the socket path is a
    // leftover (a killed daemon's) or an impostor; either way it goes.
    if lock_holder(store_dir).is_none() && ipc::endpoint_exists(&p.socket) {
        ipc::remove_endpoint(&p.socket)?;
        if outcome == Stopped::NotRunning {
            outcome = Stopped::StaleRemoved;
        }
    }
    Ok(outcome)
}

#[cfg(all(test, unix))]
mod tests {
    use super::*;

    /// The wrapper's budget holds whatever is at the socket.
    #[test]
    fn notify_returns_within_budget_for_absent_stale_and_hung_daemons() {
        let dir = tempfile::tempdir().unwrap();
        let sock = paths(dir.path()).socket;
        let timed = |what: &str| {
            let t = Instant::now();
            notify(dir.path(), Request::Ping);
            let el = t.elapsed();
            assert!(el < Duration::from_millis(200), "{what}: {el:?}");
            el
        };
        timed("absent");
        drop(std::os::unix::net::UnixListener::bind(&sock).unwrap());
        timed("stale");
        std::fs::remove_file(&sock).unwrap();
        let hung = std::os::unix::net::UnixListener::bind(&sock).unwrap();
        timed("hung");
        let t = Instant::now();
        assert!(request(dir.path(), Request::Status, WRAPPER_BUDGET).is_err());
        assert!(t.elapsed() < Duration::from_millis(500));
        drop(hung);
    }

    /// Something at the socket that accepts and hangs up without answering,
    /// while no daemon holds the store's lock, is a leftover: `doctor` calls
    /// it stale (and `--fix` replaces it), not a live daemon in trouble.
    #[test]
    fn a_socket_that_hangs_up_without_a_lock_holder_is_stale() {
        let dir = tempfile::tempdir().unwrap();
        let sock = paths(dir.path()).socket;
        let listener = std::os::unix::net::UnixListener::bind(&sock).unwrap();
        let hangs_up = std::thread::spawn(move || {
            if let Ok((conn, _)) = listener.accept() {
                drop(conn);
            }
        });
        let state = probe(dir.path(), Duration::from_secs(2));
        hangs_up.join().unwrap();
        assert!(matches!(state, State::Stale), "got {state:?}");
    }
}
