//! Process facts that differ by OS.

use std::process::ExitStatus;

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

/// An identifier of the cargo process this process runs under (its pid and
/// start time, so a reused pid is a new build), found by walking up to four
/// parents; `None` when not under cargo or not on Linux. Lets `kache report`
/// group wrapper calls by build.
pub fn build_id() -> Option<String> {
    sys::build_id()
}

#[cfg(target_os = "linux")]
mod sys {
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

#[cfg(not(target_os = "linux"))]
mod sys {
    pub fn build_id() -> Option<String> {
        None
    }
}
