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
