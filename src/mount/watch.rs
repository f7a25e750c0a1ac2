//! What a mount server waits on: its stop signals and changes to its worktree (inotify), so it
//! notices `cargo clean` or a removed worktree within milliseconds instead of at its next tick.
//!
//! Owns: one inotify instance and one signalfd. Must never: block a stop signal from reaching
//! the server (the signals are blocked in every thread and read here only).

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::time::Duration;

/// Why [`Watch::wait`] returned.
#[derive(Debug, PartialEq, Eq)]
pub enum Woke {
    Signal(i32),
    /// Something changed in a watched directory (or a watched directory itself went).
    Changed,
    Timeout,
}

pub struct Watch {
    signals: OwnedFd,
    /// None when inotify is unavailable (then only the periodic check notices changes).
    inotify: Option<OwnedFd>,
}

/// The signals that stop a server. They must be blocked in every thread before any thread is
/// spawned ([`block_stop_signals`]), so that only the signalfd receives them.
const STOP: [i32; 3] = [libc::SIGTERM, libc::SIGINT, libc::SIGHUP];

fn stop_set() -> libc::sigset_t {
    // SAFETY: sigset operations on a local set.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        for s in STOP {
            libc::sigaddset(&mut set, s);
        }
        set
    }
}

/// Blocks the stop signals in this thread (and every thread it spawns later).
pub fn block_stop_signals() {
    let set = stop_set();
    // SAFETY: valid set; the old mask is not needed.
    unsafe { libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut()) };
}

impl Watch {
    /// Watches the stop signals and the entries of `dirs` (those that exist).
    pub fn new(dirs: &[&Path]) -> io::Result<Watch> {
        let set = stop_set();
        // SAFETY: valid set; the returned descriptor is owned below.
        let sfd = unsafe { libc::signalfd(-1, &set, libc::SFD_CLOEXEC) };
        if sfd < 0 {
            return Err(io::Error::last_os_error());
        }
        let signals = unsafe { OwnedFd::from_raw_fd(sfd) };
        // SAFETY: plain syscall; the descriptor is owned below.
        let ifd = unsafe { libc::inotify_init1(libc::IN_CLOEXEC | libc::IN_NONBLOCK) };
        let inotify = (ifd >= 0).then(|| unsafe { OwnedFd::from_raw_fd(ifd) });
        if let Some(fd) = &inotify {
            let mask = libc::IN_CREATE
                | libc::IN_DELETE
                | libc::IN_MOVED_FROM
                | libc::IN_MOVED_TO
                | libc::IN_DELETE_SELF
                | libc::IN_MOVE_SELF
                | libc::IN_ONLYDIR;
            for dir in dirs {
                let Ok(c) = std::ffi::CString::new(dir.as_os_str().as_bytes()) else {
                    continue;
                };
                // SAFETY: valid C string and descriptor. A failure leaves that one unwatched.
                unsafe { libc::inotify_add_watch(fd.as_raw_fd(), c.as_ptr(), mask) };
            }
        }
        Ok(Watch { signals, inotify })
    }

    /// Waits up to `timeout` for a stop signal or a change.
    pub fn wait(&self, timeout: Duration) -> Woke {
        let mut fds = vec![libc::pollfd {
            fd: self.signals.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        }];
        if let Some(fd) = &self.inotify {
            fds.push(libc::pollfd {
                fd: fd.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            });
        }
        let ms = timeout.as_millis().min(i32::MAX as u128) as i32;
        // SAFETY: `fds` is a valid array of its length.
        let n = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, ms) };
        if n <= 0 {
            return Woke::Timeout;
        }
        if fds[0].revents & libc::POLLIN != 0 {
            // SAFETY: a zeroed siginfo buffer of the size signalfd writes.
            let mut info: libc::signalfd_siginfo = unsafe { std::mem::zeroed() };
            let size = std::mem::size_of::<libc::signalfd_siginfo>();
            let got = unsafe {
                libc::read(
                    self.signals.as_raw_fd(),
                    (&mut info as *mut libc::signalfd_siginfo).cast(),
                    size,
                )
            };
            if got == size as isize {
                return Woke::Signal(info.ssi_signo as i32);
            }
        }
        if let Some(fd) = &self.inotify {
            // Drain: what changed is looked at afresh by the caller, not read from events.
            let mut buf = [0u8; 4096];
            // SAFETY: reading into a local buffer of its length; the descriptor is non-blocking.
            while unsafe { libc::read(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) } > 0 {}
        }
        Woke::Changed
    }
}
