//! A file's stat signature: what changes when its content may have changed.
//! Used to memoize content hashes (size, mtime, ctime, inode, like ccache's
//! inode cache).

use std::fs::Metadata;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileSignature {
    pub size: u64,
    pub mtime_ns: i128,
    pub ctime_ns: i128,
    pub inode: u64,
}

impl FileSignature {
    pub fn to_text(&self) -> String {
        format!(
            "{} {} {} {}",
            self.size, self.mtime_ns, self.ctime_ns, self.inode
        )
    }

    /// Seconds since the epoch of the later of mtime and ctime.
    pub fn changed_secs(&self) -> i64 {
        (self.mtime_ns.max(self.ctime_ns) / 1_000_000_000) as i64
    }
}

#[cfg(unix)]
pub fn file_signature(m: &Metadata) -> FileSignature {
    use std::os::unix::fs::MetadataExt;
    FileSignature {
        size: m.len(),
        mtime_ns: m.mtime() as i128 * 1_000_000_000 + m.mtime_nsec() as i128,
        ctime_ns: m.ctime() as i128 * 1_000_000_000 + m.ctime_nsec() as i128,
        inode: m.ino(),
    }
}

#[cfg(not(unix))]
pub fn file_signature(m: &Metadata) -> FileSignature {
    let ns = |t: std::io::Result<std::time::SystemTime>| {
        t.ok()
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .map_or(0, |d| d.as_nanos() as i128)
    };
    FileSignature {
        size: m.len(),
        mtime_ns: ns(m.modified()),
        ctime_ns: ns(m.created()),
        inode: 0,
    }
}

/// Unix permission bits of a file (on Windows: read-only maps to 0o444).
#[cfg(unix)]
pub fn file_mode(m: &Metadata) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    m.permissions().mode() & 0o7777
}

#[cfg(not(unix))]
pub fn file_mode(m: &Metadata) -> u32 {
    if m.permissions().readonly() {
        0o444
    } else {
        0o644
    }
}

/// Creates a symlink `link` → `target` (a file). Windows needs a privilege
/// or developer mode for symlinks; there it reports `Unsupported` for now.
#[cfg(unix)]
pub fn symlink_file(target: &std::path::Path, link: &std::path::Path) -> std::io::Result<()> {
    std::os::unix::fs::symlink(target, link)
}

#[cfg(not(unix))]
pub fn symlink_file(_target: &std::path::Path, _link: &std::path::Path) -> std::io::Result<()> {
    Err(std::io::Error::new(
        std::io::ErrorKind::Unsupported,
        "symlinked compiler shims are Unix-only for now",
    ))
}
