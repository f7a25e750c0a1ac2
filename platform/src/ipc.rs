//! The daemon's local IPC endpoint: a Unix domain socket on Unix, a named
//! pipe on Windows (not implemented yet: every call there reports
//! `Unsupported`, and kache carries on without a daemon).
//!
//! The one property callers rely on: [`connect`] never blocks longer than the
//! timeout it is given, whatever state the other end is in (gone, stale
//! socket file, hung, backlog full). A compile must never wait on the daemon.

use std::io;
use std::path::Path;
use std::time::Duration;

#[cfg(unix)]
pub use std::os::unix::net::UnixStream as Stream;

#[cfg(windows)]
pub use self::windows::Stream;

/// A bound endpoint accepting connections.
pub struct Listener {
    #[cfg(unix)]
    inner: std::os::unix::net::UnixListener,
}

/// Refuses a path the OS cannot bind or connect to (longer than
/// `sun_path`), with a message naming it.
#[cfg(unix)]
fn check_path_len(path: &Path) -> io::Result<()> {
    match rustix::net::SocketAddrUnix::new(path) {
        Err(rustix::io::Errno::NAMETOOLONG) => Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("socket path too long: {}", path.display()),
        )),
        _ => Ok(()),
    }
}

impl Listener {
    /// Binds `path`. The caller removes a stale endpoint first (and only
    /// while it holds the lock that proves no live server owns it).
    #[cfg(unix)]
    pub fn bind(path: &Path) -> io::Result<Listener> {
        check_path_len(path)?;
        let inner = std::os::unix::net::UnixListener::bind(path)?;
        Ok(Listener { inner })
    }

    #[cfg(windows)]
    pub fn bind(path: &Path) -> io::Result<Listener> {
        let _ = path;
        Err(windows::unsupported())
    }

    /// Waits for the next connection.
    #[cfg(unix)]
    pub fn accept(&self) -> io::Result<Stream> {
        self.inner.accept().map(|(s, _)| s)
    }

    #[cfg(windows)]
    pub fn accept(&self) -> io::Result<Stream> {
        Err(windows::unsupported())
    }
}

/// Connects to the endpoint at `path` without ever blocking longer than
/// `timeout`, and sets `timeout` as the read and write timeout of the
/// stream, so a server that accepts and never answers costs at most that.
#[cfg(unix)]
pub fn connect(path: &Path, timeout: Duration) -> io::Result<Stream> {
    use rustix::event::{poll, PollFd, PollFlags};
    use rustix::fs::{fcntl_getfl, fcntl_setfl, OFlags};
    use rustix::io::{fcntl_setfd, Errno, FdFlags};
    use rustix::net::{AddressFamily, SocketAddrUnix, SocketType};

    check_path_len(path)?;
    let addr = SocketAddrUnix::new(path)?;
    // Plain `socket` plus fcntl rather than SOCK_CLOEXEC|SOCK_NONBLOCK, which
    // macOS does not have.
    let fd = rustix::net::socket(AddressFamily::UNIX, SocketType::STREAM, None)?;
    fcntl_setfd(&fd, FdFlags::CLOEXEC)?;
    let flags = fcntl_getfl(&fd)?;
    fcntl_setfl(&fd, flags | OFlags::NONBLOCK)?;
    match rustix::net::connect(&fd, &addr) {
        Ok(()) => {}
        Err(Errno::INPROGRESS) => {
            let mut pfd = [PollFd::new(&fd, PollFlags::OUT)];
            // A timeout too long for a timespec waits forever, as asked.
            let wait = rustix::event::Timespec::try_from(timeout).ok();
            if poll(&mut pfd, wait.as_ref())? == 0 {
                return Err(io::Error::new(io::ErrorKind::TimedOut, "connect timed out"));
            }
            rustix::net::sockopt::socket_error(&fd)??;
        }
        // EAGAIN (backlog full), ECONNREFUSED (stale file), ENOENT …
        Err(e) => return Err(e.into()),
    }
    fcntl_setfl(&fd, flags)?;
    let stream = Stream::from(fd);
    let t = Some(timeout.max(Duration::from_millis(1)));
    stream.set_read_timeout(t)?;
    stream.set_write_timeout(t)?;
    Ok(stream)
}

#[cfg(windows)]
pub fn connect(path: &Path, timeout: Duration) -> io::Result<Stream> {
    let _ = (path, timeout);
    Err(windows::unsupported())
}

/// True when something exists at the endpoint's path (a live server or a
/// stale leftover).
pub fn endpoint_exists(path: &Path) -> bool {
    std::fs::symlink_metadata(path).is_ok()
}

/// Removes an endpoint file. Call only while holding the server lock.
pub fn remove_endpoint(path: &Path) -> io::Result<()> {
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

/// A stable identity of the endpoint file (device, inode), so a server can
/// notice that its socket was removed or replaced by another one.
pub fn endpoint_identity(path: &Path) -> Option<(u64, u64)> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        std::fs::symlink_metadata(path)
            .ok()
            .map(|m| (m.dev(), m.ino()))
    }
    #[cfg(windows)]
    {
        let _ = path;
        None
    }
}

#[cfg(windows)]
mod windows {
    use std::io;

    pub fn unsupported() -> io::Error {
        io::Error::new(
            io::ErrorKind::Unsupported,
            "the kache daemon's named pipe is not implemented on Windows yet",
        )
    }

    /// Placeholder for the named-pipe stream.
    pub struct Stream;

    impl Stream {
        pub fn set_read_timeout(&self, _: Option<std::time::Duration>) -> io::Result<()> {
            Err(unsupported())
        }
        pub fn set_write_timeout(&self, _: Option<std::time::Duration>) -> io::Result<()> {
            Err(unsupported())
        }
        pub fn try_clone(&self) -> io::Result<Stream> {
            Err(unsupported())
        }
    }

    impl io::Read for Stream {
        fn read(&mut self, _: &mut [u8]) -> io::Result<usize> {
            Err(unsupported())
        }
    }

    impl io::Write for Stream {
        fn write(&mut self, _: &[u8]) -> io::Result<usize> {
            Err(unsupported())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }
}

#[cfg(all(test, unix))]
mod tests {
    use super::*;
    use std::io::{BufRead, BufReader, Write};

    #[test]
    fn connect_to_a_stale_socket_file_fails_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("s.sock");
        drop(Listener::bind(&p).unwrap());
        assert!(endpoint_exists(&p));
        let t = std::time::Instant::now();
        assert!(connect(&p, Duration::from_millis(50)).is_err());
        assert!(t.elapsed() < Duration::from_millis(500));
    }

    #[test]
    fn a_silent_server_costs_at_most_the_timeout() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("s.sock");
        let l = Listener::bind(&p).unwrap();
        let t = std::time::Instant::now();
        let mut s = connect(&p, Duration::from_millis(50)).unwrap();
        s.write_all(b"hello\n").unwrap();
        let mut line = String::new();
        assert!(BufReader::new(&mut s).read_line(&mut line).is_err());
        assert!(t.elapsed() < Duration::from_millis(1000));
        drop(l);
    }
}
