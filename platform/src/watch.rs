//! What a long-running server waits on: the signals that ask it to stop, and changes in a few
//! directories (so a mount server notices `cargo clean` or a removed worktree within
//! milliseconds instead of at its next periodic check).
//!
//! Linux: the stop signals are blocked in every thread ([`block_stop_signals`], called before
//! any thread is spawned) and read from a signalfd; directories are watched with inotify; one
//! `poll` waits on both. Elsewhere: the stop signals keep their default action (the process
//! ends; no server that needs to clean up runs there yet), and the directories' modification
//! times are compared every 100 ms.
//!
//! Must never: let a stop signal be lost (blocked but never read), or report a change that did
//! not happen as a signal.

use std::fmt;
use std::io;
use std::path::Path;
use std::time::Duration;

/// A signal that asks a server to stop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopSignal {
    /// SIGINT: Ctrl-C, the user's "stop".
    Interrupt,
    /// SIGTERM: shutdown, a service manager, `kill`.
    Terminate,
    /// SIGHUP: the terminal or the session went away (logout).
    Hangup,
}

impl fmt::Display for StopSignal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            StopSignal::Interrupt => "SIGINT",
            StopSignal::Terminate => "SIGTERM",
            StopSignal::Hangup => "SIGHUP",
        })
    }
}

/// Why [`Watch::wait`] returned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Woke {
    Stop(StopSignal),
    /// Something changed in a watched directory (or a watched directory itself went).
    Changed,
    Timeout,
}

/// Blocks the stop signals in this thread and every thread it spawns later, so that only a
/// [`Watch`] receives them. Call it before spawning any thread. A no-op where [`Watch`] cannot
/// receive signals (everywhere but Linux).
pub fn block_stop_signals() {
    sys::block_stop_signals();
}

/// Waits for a stop signal or a change in some directories.
pub struct Watch(sys::Watch);

impl Watch {
    /// Watches the stop signals and the entries of `dirs` (those that exist; a directory that
    /// cannot be watched is only noticed by the caller's own periodic checks).
    pub fn new(dirs: &[&Path]) -> io::Result<Watch> {
        sys::Watch::new(dirs).map(Watch)
    }

    /// Waits up to `timeout` for a stop signal or a change. A change is reported, not
    /// described: the caller looks at the directories afresh.
    pub fn wait(&self, timeout: Duration) -> Woke {
        self.0.wait(timeout)
    }
}

#[cfg(target_os = "linux")]
mod sys {
    use super::{StopSignal, Woke};
    use nix::sys::signal::{SigSet, Signal};
    use nix::sys::signalfd::{SfdFlags, SignalFd};
    use rustix::event::{PollFd, PollFlags, Timespec};
    use rustix::fs::inotify::{self, CreateFlags, WatchFlags};
    use std::io;
    use std::os::fd::OwnedFd;
    use std::path::Path;
    use std::time::Duration;

    const STOP: [(Signal, StopSignal); 3] = [
        (Signal::SIGINT, StopSignal::Interrupt),
        (Signal::SIGTERM, StopSignal::Terminate),
        (Signal::SIGHUP, StopSignal::Hangup),
    ];

    fn stop_set() -> SigSet {
        let mut set = SigSet::empty();
        for (sig, _) in STOP {
            set.add(sig);
        }
        set
    }

    pub fn block_stop_signals() {
        // Fails only for an invalid `how`, which this is not.
        let _ = stop_set().thread_block();
    }

    pub struct Watch {
        signals: SignalFd,
        /// None when inotify is unavailable (then only the caller's periodic check notices).
        inotify: Option<OwnedFd>,
    }

    impl Watch {
        pub fn new(dirs: &[&Path]) -> io::Result<Watch> {
            let signals = SignalFd::with_flags(&stop_set(), SfdFlags::SFD_CLOEXEC)?;
            let inotify = inotify::init(CreateFlags::CLOEXEC | CreateFlags::NONBLOCK).ok();
            if let Some(fd) = &inotify {
                let mask = WatchFlags::CREATE
                    | WatchFlags::DELETE
                    | WatchFlags::MOVED_FROM
                    | WatchFlags::MOVED_TO
                    | WatchFlags::DELETE_SELF
                    | WatchFlags::MOVE_SELF
                    | WatchFlags::ONLYDIR;
                for dir in dirs {
                    // A failure leaves that one unwatched.
                    let _ = inotify::add_watch(fd, *dir, mask);
                }
            }
            Ok(Watch { signals, inotify })
        }

        pub fn wait(&self, timeout: Duration) -> Woke {
            let mut fds = vec![PollFd::new(&self.signals, PollFlags::IN)];
            if let Some(fd) = &self.inotify {
                fds.push(PollFd::new(fd, PollFlags::IN));
            }
            let limit = Timespec {
                tv_sec: timeout.as_secs().min(i64::MAX as u64) as i64,
                tv_nsec: timeout.subsec_nanos().into(),
            };
            match rustix::event::poll(&mut fds, Some(&limit)) {
                Ok(n) if n > 0 => {}
                _ => return Woke::Timeout,
            }
            let signalled = fds[0].revents().contains(PollFlags::IN);
            drop(fds);
            if signalled {
                if let Ok(Some(info)) = self.signals.read_signal() {
                    let got = Signal::try_from(info.ssi_signo as i32).ok();
                    if let Some((_, stop)) = STOP.iter().find(|(sig, _)| Some(*sig) == got) {
                        return Woke::Stop(*stop);
                    }
                }
            }
            if let Some(fd) = &self.inotify {
                // Drain: what changed is looked at afresh by the caller, not read from events.
                let mut buf = [0u8; 4096];
                while rustix::io::read(fd, &mut buf).is_ok_and(|n| n > 0) {}
            }
            Woke::Changed
        }
    }
}

#[cfg(not(target_os = "linux"))]
mod sys {
    pub use super::polling::Watch;

    pub fn block_stop_signals() {}
}

/// Directories compared by modification time: creating, removing or renaming an entry
/// changes its directory's mtime on every filesystem kache runs on.
#[cfg(any(not(target_os = "linux"), test))]
mod polling {
    use super::Woke;
    use std::cell::RefCell;
    use std::io;
    use std::path::{Path, PathBuf};
    use std::time::{Duration, Instant, SystemTime};

    const TICK: Duration = Duration::from_millis(100);

    pub struct Watch {
        dirs: Vec<PathBuf>,
        seen: RefCell<Vec<Option<SystemTime>>>,
    }

    fn look(dirs: &[PathBuf]) -> Vec<Option<SystemTime>> {
        dirs.iter()
            .map(|d| std::fs::metadata(d).and_then(|m| m.modified()).ok())
            .collect()
    }

    impl Watch {
        pub fn new(dirs: &[&Path]) -> io::Result<Watch> {
            let dirs: Vec<PathBuf> = dirs.iter().map(|d| d.to_path_buf()).collect();
            let seen = RefCell::new(look(&dirs));
            Ok(Watch { dirs, seen })
        }

        pub fn wait(&self, timeout: Duration) -> Woke {
            let deadline = Instant::now() + timeout;
            loop {
                let now = look(&self.dirs);
                if now != *self.seen.borrow() {
                    *self.seen.borrow_mut() = now;
                    return Woke::Changed;
                }
                let left = deadline.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    return Woke::Timeout;
                }
                std::thread::sleep(left.min(TICK));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    /// Creates a file in `dir` after a short delay, from another thread.
    fn touch_later(dir: &Path) -> std::thread::JoinHandle<()> {
        let file = dir.join("new");
        std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(150));
            std::fs::write(file, b"x").unwrap();
        })
    }

    #[test]
    fn a_new_entry_in_a_watched_directory_wakes_the_waiter() {
        let dir = tempfile::tempdir().unwrap();
        let watch = Watch::new(&[dir.path()]).unwrap();
        assert_eq!(watch.wait(Duration::from_millis(50)), Woke::Timeout);
        let writer = touch_later(dir.path());
        let start = Instant::now();
        assert_eq!(watch.wait(Duration::from_secs(10)), Woke::Changed);
        assert!(start.elapsed() < Duration::from_secs(5));
        writer.join().unwrap();
    }

    #[test]
    fn a_removed_watched_directory_wakes_the_waiter() {
        let parent = tempfile::tempdir().unwrap();
        let dir = parent.path().join("wt");
        std::fs::create_dir(&dir).unwrap();
        let watch = Watch::new(&[&dir]).unwrap();
        std::fs::remove_dir(&dir).unwrap();
        assert_eq!(watch.wait(Duration::from_secs(10)), Woke::Changed);
    }

    #[test]
    fn the_polling_watch_notices_a_new_entry_and_times_out_otherwise() {
        let dir = tempfile::tempdir().unwrap();
        let watch = polling::Watch::new(&[dir.path()]).unwrap();
        assert_eq!(watch.wait(Duration::from_millis(250)), Woke::Timeout);
        let writer = touch_later(dir.path());
        assert_eq!(watch.wait(Duration::from_secs(10)), Woke::Changed);
        writer.join().unwrap();
        assert_eq!(watch.wait(Duration::from_millis(150)), Woke::Timeout);
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn a_stop_signal_sent_to_the_blocking_thread_is_reported_as_such() {
        use nix::sys::signal::{raise, SigSet, Signal};
        // The signal is raised at this thread only (raise in a threaded process), after it
        // blocked it: the test harness's other threads are never asked to handle it.
        block_stop_signals();
        let watch = Watch::new(&[]).unwrap();
        raise(Signal::SIGHUP).unwrap();
        assert_eq!(
            watch.wait(Duration::from_secs(10)),
            Woke::Stop(StopSignal::Hangup)
        );
        assert_eq!(watch.wait(Duration::from_millis(20)), Woke::Timeout);
        let mut mask = SigSet::empty();
        mask.add(Signal::SIGHUP);
        mask.add(Signal::SIGINT);
        mask.add(Signal::SIGTERM);
        mask.thread_unblock().unwrap();
    }
}
