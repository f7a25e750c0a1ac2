//! Processes: exit codes, privileges, who our parent is, starting processes detached from
//! their spawner, signalling them, replacing this one, and whether stdout still has a reader.

use std::io;
use std::path::Path;
use std::process::{Command, ExitStatus, Stdio};

/// An exit status as a process exit code; death by a signal becomes 128+n,
/// as a shell reports it, so a killed compiler never looks like success.
pub fn exit_code_of(status: &ExitStatus) -> i32 {
    if let Some(c) = status.code() {
        return c;
    }
    #[cfg(unix)]
    {
        use std::os::unix::process::ExitStatusExt;
        if let Some(sig) = status.signal() {
            return 128 + sig;
        }
    }
    1
}

/// True when this process runs with root's privileges (effective uid 0):
/// it may mount, bind-mount and serve other users. Never on Windows, where
/// kache does not ask for elevation.
pub fn is_root() -> bool {
    #[cfg(unix)]
    {
        rustix::process::geteuid().is_root()
    }
    #[cfg(not(unix))]
    {
        false
    }
}

/// The id of the process that started this one (for a wrapper call: cargo). `None` where the
/// OS does not say it cheaply (Windows).
pub fn parent_id() -> Option<u32> {
    #[cfg(unix)]
    {
        Some(std::os::unix::process::parent_id())
    }
    #[cfg(not(unix))]
    {
        None
    }
}

/// An identifier of the cargo process this process runs under (its pid and
/// start time, so a reused pid is a new build), found by walking up to four
/// parents; `None` when not under cargo or not on Linux. Lets `kache report`
/// group wrapper calls by build.
pub fn build_id() -> Option<String> {
    sys::build_id()
}

/// True while the process a [`build_id`] names still runs (its pid with the same start time,
/// so a recycled pid is not taken for it). Always false where [`build_id`] is `None`.
pub fn build_running(build: &str) -> bool {
    sys::build_running(build)
}

/// The arguments of process `pid` after its program name, where the OS shows them to this
/// user cheaply (Linux); `None` elsewhere or when the process is gone.
pub fn args_of(pid: u32) -> Option<Vec<String>> {
    sys::args_of(pid)
}

/// How a spawned process is cut off from the process that spawns it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Detach {
    /// A new session: no controlling terminal, so it outlives the shell (and a test harness)
    /// that started it. The daemon.
    Session,
    /// Its own process group (a Ctrl-C at the spawner's terminal does not reach it), inheriting
    /// no descriptor above stderr: a server started by a wrapper call must not keep its
    /// spawner's descriptors (cargo's jobserver pipe) for life. A mount server.
    Group,
}

/// Makes `cmd` start detached from this process, as `how` says. Unix only; on Windows the
/// command is left as it is (neither the daemon nor a mount server runs there yet).
pub fn detach(cmd: &mut Command, how: Detach) {
    sys::detach(cmd, how);
}

/// Starts `cmd` in a new session with stdin from the null device ([`Detach::Session`]);
/// returns its pid.
pub fn spawn_detached(cmd: &mut Command) -> io::Result<u32> {
    detach(cmd, Detach::Session);
    cmd.stdin(Stdio::null());
    let child = cmd.spawn()?;
    Ok(child.id())
}

/// True when a process with this id exists.
pub fn pid_alive(pid: u32) -> bool {
    sys::pid_alive(pid)
}

/// Asks a process to terminate (SIGTERM), or kills it outright (`force`: SIGKILL). A pid
/// that names no single process (0, or past `i32::MAX`: a process group or every process to
/// the kernel) is refused with `InvalidInput`.
pub fn signal_terminate(pid: u32, force: bool) -> io::Result<()> {
    sys::signal_terminate(pid, force)
}

/// Replaces the current process image with `program args…` (same pid, so a
/// service manager keeps tracking it). Returns only on failure. Every
/// descriptor Rust opened is close-on-exec, so locks and sockets of the old
/// image are released. On Windows, which has no exec, the new image is
/// started and this process exits.
pub fn reexec(program: &Path, args: &[String]) -> io::Error {
    sys::reexec(program, args)
}

/// Which side of [`fork_to_background`] this process is on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Forked {
    /// The process that called: its caller finishes its part and exits as it would have.
    Parent,
    /// The copy that carries on in the background: in a session of its own, its standard
    /// streams and every inherited pipe on the null device, so nobody waiting for this
    /// process's output (cargo reading a compiler's stdout and stderr, a shell's `| head`)
    /// waits for it.
    Background,
}

/// Splits this process in two so the rest of its work runs after its spawner has seen it
/// exit. Refused (`Unsupported`) where it cannot be done safely: outside Linux, and while
/// this process runs more than one thread (a fork copies only the calling thread, and a
/// lock another thread held would stay locked forever in the copy). File locks (`flock`)
/// and open files are shared by both sides, so a lock the parent took stays held until the
/// background side ends.
pub fn fork_to_background() -> io::Result<Forked> {
    sys::fork_to_background()
}

/// True when stdout is a pipe or socket nobody reads any more (`kache stats | head -1` after
/// `head` exited): asked of the descriptor itself, not guessed from a write error.
pub fn stdout_reader_gone() -> bool {
    sys::stdout_reader_gone()
}

#[cfg(unix)]
mod sys {
    use super::Detach;
    use rustix::event::{PollFd, PollFlags, Timespec};
    use rustix::process::{Pid, Signal};
    use std::io;
    use std::os::unix::process::CommandExt;
    use std::path::Path;
    use std::process::Command;

    pub fn detach(cmd: &mut Command, how: Detach) {
        let in_child: fn() -> io::Result<()> = match how {
            Detach::Session => new_session,
            Detach::Group => {
                cmd.process_group(0);
                keep_only_stdio
            }
        };
        // SAFETY: `pre_exec` runs the hook in the forked child before exec, where only
        // async-signal-safe calls are allowed. Both hooks make one system call, allocate
        // nothing and touch no lock. std has no safe way to start a session or to stop
        // descriptors the spawner inherited from leaking into the child.
        unsafe {
            cmd.pre_exec(in_child);
        }
    }

    fn new_session() -> io::Result<()> {
        // Already a session leader is the only failure; the child is then detached enough.
        let _ = rustix::process::setsid();
        Ok(())
    }

    /// Marks every descriptor above stderr close-on-exec: marked, not closed, so the spawn's
    /// own error pipe still reports a failed exec.
    #[cfg(target_os = "linux")]
    fn keep_only_stdio() -> io::Result<()> {
        const CLOSE_RANGE_CLOEXEC: libc::c_uint = 1 << 2;
        // SAFETY: close_range(2) reads no memory of ours; neither rustix nor nix wraps it.
        // A kernel before 5.11 refuses the flag, and the descriptors then stay inherited.
        unsafe { libc::syscall(libc::SYS_close_range, 3u32, u32::MAX, CLOSE_RANGE_CLOEXEC) };
        Ok(())
    }

    /// No `close_range` here; no mount server runs on this OS either.
    #[cfg(not(target_os = "linux"))]
    fn keep_only_stdio() -> io::Result<()> {
        Ok(())
    }

    /// A pid as the kernel's type; `None` for 0 and values past `i32::MAX`, which
    /// would address a process group or every process, never one process.
    fn unix_pid(pid: u32) -> Option<Pid> {
        Pid::from_raw(i32::try_from(pid).ok()?)
    }

    pub fn pid_alive(pid: u32) -> bool {
        // Signal 0: existence and permission only. EPERM means it exists.
        let Some(pid) = unix_pid(pid) else {
            return false;
        };
        matches!(
            rustix::process::test_kill_process(pid),
            Ok(()) | Err(rustix::io::Errno::PERM)
        )
    }

    pub fn signal_terminate(pid: u32, force: bool) -> io::Result<()> {
        let sig = if force { Signal::KILL } else { Signal::TERM };
        let pid = unix_pid(pid).ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("not a process id: {pid}"),
            )
        })?;
        Ok(rustix::process::kill_process(pid, sig)?)
    }

    pub fn reexec(program: &Path, args: &[String]) -> io::Error {
        Command::new(program).args(args).exec()
    }

    pub fn stdout_reader_gone() -> bool {
        let stdout = std::io::stdout();
        let mut fds = [PollFd::new(&stdout, PollFlags::OUT)];
        let now = Timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        matches!(rustix::event::poll(&mut fds, Some(&now)), Ok(1))
            && fds[0].revents().intersects(PollFlags::ERR | PollFlags::HUP)
    }

    #[cfg(target_os = "linux")]
    pub fn fork_to_background() -> io::Result<super::Forked> {
        use std::os::fd::{AsFd, AsRawFd};
        let status = std::fs::read_to_string("/proc/self/status")?;
        let threads = status
            .lines()
            .find_map(|l| l.strip_prefix("Threads:"))
            .and_then(|n| n.trim().parse::<u32>().ok());
        if threads != Some(1) {
            return Err(io::Error::new(
                io::ErrorKind::Unsupported,
                format!("{threads:?} threads: a fork would copy only one"),
            ));
        }
        let null = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open("/dev/null")?;
        // SAFETY: this process has one thread (checked just above, and nothing here starts
        // one), so the child is a whole copy: no lock is held by a thread that does not
        // exist in it, and it may go on running ordinary Rust code. Neither std nor rustix
        // offers fork.
        match unsafe { libc::fork() } {
            -1 => Err(io::Error::last_os_error()),
            0 => {
                let _ = rustix::process::setsid();
                let mut pipes = vec![0, 1, 2];
                if let Ok(dir) = std::fs::read_dir("/proc/self/fd") {
                    for e in dir.flatten() {
                        let Some(fd) = e.file_name().to_str().and_then(|n| n.parse().ok()) else {
                            continue;
                        };
                        let is_pipe = std::fs::metadata(e.path()).is_ok_and(|m| {
                            use std::os::unix::fs::FileTypeExt;
                            m.file_type().is_fifo()
                        });
                        if fd > 2 && is_pipe {
                            pipes.push(fd);
                        }
                    }
                }
                for fd in pipes {
                    if fd == null.as_raw_fd() {
                        continue;
                    }
                    // SAFETY: `fd` is open in this process (listed just now, or a standard
                    // stream); dup2 keeps its number valid and points it at the null device,
                    // so whatever owns it reads end of file and writes nowhere.
                    unsafe { libc::dup2(null.as_fd().as_raw_fd(), fd) };
                }
                Ok(super::Forked::Background)
            }
            _ => Ok(super::Forked::Parent),
        }
    }

    #[cfg(not(target_os = "linux"))]
    pub fn fork_to_background() -> io::Result<super::Forked> {
        Err(io::Error::new(io::ErrorKind::Unsupported, "only on Linux"))
    }

    #[cfg(target_os = "linux")]
    pub use super::linux::{args_of, build_id, build_running};

    #[cfg(not(target_os = "linux"))]
    pub fn build_id() -> Option<String> {
        None
    }

    #[cfg(not(target_os = "linux"))]
    pub fn build_running(_build: &str) -> bool {
        false
    }

    #[cfg(not(target_os = "linux"))]
    pub fn args_of(_pid: u32) -> Option<Vec<String>> {
        None
    }
}

#[cfg(target_os = "linux")]
mod linux {
    /// (comm, ppid, starttime) of a process from /proc/PID/stat.
    fn stat(pid: u32) -> Option<(String, u32, u64)> {
        let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        let open = text.find('(')?;
        let close = text.rfind(')')?;
        let comm = text.get(open + 1..close)?.to_string();
        let rest: Vec<&str> = text.get(close + 2..)?.split_whitespace().collect();
        // After the comm: state(0) ppid(1) … starttime is field 22 of the
        // line, index 19 here.
        let ppid = rest.get(1)?.parse().ok()?;
        let start = rest.get(19)?.parse().ok()?;
        Some((comm, ppid, start))
    }

    pub fn build_running(build: &str) -> bool {
        let Some((pid, start)) = build.split_once('-') else {
            return false;
        };
        let (Ok(pid), Ok(start)) = (pid.parse::<u32>(), start.parse::<u64>()) else {
            return false;
        };
        stat(pid).is_some_and(|(_, _, s)| s == start)
    }

    pub fn args_of(pid: u32) -> Option<Vec<String>> {
        let raw = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
        let mut args: Vec<String> = raw
            .split(|b| *b == 0)
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect();
        // The list ends with a NUL, which leaves an empty last piece.
        if args.last().is_some_and(|a| a.is_empty()) {
            args.pop();
        }
        (!args.is_empty()).then(|| args.split_off(1))
    }

    pub fn build_id() -> Option<String> {
        let mut pid = std::os::unix::process::parent_id();
        for _ in 0..4 {
            let (comm, ppid, start) = stat(pid)?;
            if comm == "cargo" {
                return Some(format!("{pid}-{start}"));
            }
            if ppid <= 1 {
                return None;
            }
            pid = ppid;
        }
        None
    }
}

#[cfg(not(unix))]
mod sys {
    use super::Detach;
    use std::io;
    use std::path::Path;
    use std::process::Command;

    pub fn detach(_cmd: &mut Command, _how: Detach) {}

    pub fn pid_alive(_pid: u32) -> bool {
        false
    }

    pub fn signal_terminate(_pid: u32, _force: bool) -> io::Result<()> {
        Err(io::Error::new(io::ErrorKind::Unsupported, "not on Windows"))
    }

    pub fn reexec(program: &Path, args: &[String]) -> io::Error {
        // No exec on Windows: start the new image and let the caller exit.
        match Command::new(program).args(args).spawn() {
            Ok(_) => std::process::exit(0),
            Err(e) => e,
        }
    }

    pub fn stdout_reader_gone() -> bool {
        false
    }

    pub fn fork_to_background() -> io::Result<super::Forked> {
        Err(io::Error::new(io::ErrorKind::Unsupported, "not on Windows"))
    }

    pub fn build_id() -> Option<String> {
        None
    }

    pub fn build_running(_build: &str) -> bool {
        false
    }

    pub fn args_of(_pid: u32) -> Option<Vec<String>> {
        None
    }
}

#[cfg(all(test, unix))]
mod tests {
    use super::*;

    #[test]
    fn a_pid_that_names_no_single_process_is_never_signalled() {
        // As kill(2)'s pid_t, u32::MAX is -1 (every process the user may
        // signal) and 0 is the caller's own process group.
        for pid in [0, u32::MAX, i32::MAX as u32 + 1] {
            assert!(!pid_alive(pid), "{pid}");
            let e = signal_terminate(pid, false).unwrap_err();
            assert_eq!(e.kind(), io::ErrorKind::InvalidInput, "{pid}");
        }
        assert!(pid_alive(std::process::id()));
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn a_group_detached_child_inherits_no_descriptor_above_stderr() {
        use std::os::fd::AsRawFd;
        // A descriptor this process inherited from its spawner is not close-on-exec (cargo's
        // jobserver pipe): stand one in with a pipe whose flag is cleared.
        let (read_end, _write_end) = std::io::pipe().unwrap();
        rustix::io::fcntl_setfd(&read_end, rustix::io::FdFlags::empty()).unwrap();
        let fd = read_end.as_raw_fd();
        let probe = format!("test -e /proc/self/fd/{fd} && echo inherited || echo closed");
        let run = |how: Option<Detach>| {
            let mut cmd = Command::new("sh");
            cmd.args(["-c", &probe]);
            if let Some(how) = how {
                detach(&mut cmd, how);
            }
            let out = cmd.output().unwrap();
            String::from_utf8_lossy(&out.stdout).trim().to_string()
        };
        assert_eq!(run(None), "inherited", "the stand-in must be inheritable");
        assert_eq!(run(Some(Detach::Group)), "closed");
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn a_group_detached_child_leads_its_own_process_group() {
        // Field 5 of /proc/PID/stat is the process group (the shell's comm has no space).
        let mut cmd = Command::new("sh");
        cmd.args(["-c", "cut -d' ' -f5 /proc/$$/stat; echo $$"]);
        detach(&mut cmd, Detach::Group);
        let out = cmd.output().unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        let nums: Vec<&str> = text.split_whitespace().collect();
        assert_eq!(nums.len(), 2, "{text}");
        assert_eq!(nums[0], nums[1], "process group == pid");
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn a_running_process_is_known_by_its_start_time_and_shows_its_args() {
        let mut child = Command::new("sleep").arg("30").spawn().unwrap();
        let pid = child.id();
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
        let start = stat[stat.rfind(')').unwrap() + 2..]
            .split_whitespace()
            .nth(19)
            .unwrap()
            .to_string();
        // A vfork-style spawn returns once the child's exec released the old memory, which is
        // before the new one holds the arguments: /proc/PID/cmdline reads empty for a moment.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(2);
        while args_of(pid).is_none() && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        assert_eq!(args_of(pid), Some(vec!["30".to_string()]));
        assert!(build_running(&format!("{pid}-{start}")));
        assert!(
            !build_running(&format!("{pid}-1{start}")),
            "another start time"
        );
        assert!(!build_running("not-a-build"));
        child.kill().unwrap();
        child.wait().unwrap();
        assert!(!build_running(&format!("{pid}-{start}")));
        assert_eq!(args_of(pid), None);
    }
}
