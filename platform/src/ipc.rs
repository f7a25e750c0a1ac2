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

/// The longest socket path the OS accepts (bytes, without the final NUL).
#[cfg(unix)]
fn max_path_len() -> usize {
    // SAFETY: sockaddr_un is plain old data; zeroed is a valid value.
    let addr: libc::sockaddr_un = unsafe { std::mem::zeroed() };
    addr.sun_path.len() - 1
}

impl Listener {
    /// Binds `path`. The caller removes a stale endpoint first (and only
    /// while it holds the lock that proves no live server owns it).
    #[cfg(unix)]
    pub fn bind(path: &Path) -> io::Result<Listener> {
        use std::os::unix::ffi::OsStrExt;
        if path.as_os_str().as_bytes().len() > max_path_len() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("socket path too long: {}", path.display()),
            ));
        }
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
    use std::os::fd::FromRawFd;
    use std::os::unix::ffi::OsStrExt;

    let bytes = path.as_os_str().as_bytes();
    if bytes.len() > max_path_len() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "socket path too long",
        ));
    }
    // SAFETY: plain libc calls on a descriptor we own; the descriptor is
    // handed to a UnixStream (which closes it) on every path that returns it
    // and closed explicitly otherwise.
    unsafe {
        let fd = libc::socket(libc::AF_UNIX, libc::SOCK_STREAM, 0);
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        let stream = Stream::from_raw_fd(fd);
        libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC);
        let flags = libc::fcntl(fd, libc::F_GETFL);
        libc::fcntl(fd, libc::F_SETFL, flags | libc::O_NONBLOCK);

        let mut addr: libc::sockaddr_un = std::mem::zeroed();
        addr.sun_family = libc::AF_UNIX as libc::sa_family_t;
        for (d, s) in addr.sun_path.iter_mut().zip(bytes) {
            *d = *s as libc::c_char;
        }
        let len = std::mem::size_of::<libc::sa_family_t>() + bytes.len() + 1;
        let rc = libc::connect(
            fd,
            &addr as *const libc::sockaddr_un as *const libc::sockaddr,
            len as libc::socklen_t,
        );
        if rc != 0 {
            let err = io::Error::last_os_error();
            if err.raw_os_error() != Some(libc::EINPROGRESS) {
                // EAGAIN (backlog full), ECONNREFUSED (stale file), ENOENT …
                return Err(err);
            }
            let mut pfd = libc::pollfd {
                fd,
                events: libc::POLLOUT,
                revents: 0,
            };
            let ms = timeout.as_millis().min(i32::MAX as u128) as i32;
            if libc::poll(&mut pfd, 1, ms) <= 0 {
                return Err(io::Error::new(io::ErrorKind::TimedOut, "connect timed out"));
            }
            let mut so_err: libc::c_int = 0;
            let mut l = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
            libc::getsockopt(
                fd,
                libc::SOL_SOCKET,
                libc::SO_ERROR,
                &mut so_err as *mut libc::c_int as *mut libc::c_void,
                &mut l,
            );
            if so_err != 0 {
                return Err(io::Error::from_raw_os_error(so_err));
            }
        }
        libc::fcntl(fd, libc::F_SETFL, flags & !libc::O_NONBLOCK);
        let t = Some(timeout.max(Duration::from_millis(1)));
        stream.set_read_timeout(t)?;
        stream.set_write_timeout(t)?;
        Ok(stream)
    }
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
