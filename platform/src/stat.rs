//! What the OS says about files beyond std's portable metadata: a file's stat signature (what
//! changes when its content may have changed, to memoize content hashes like ccache's inode
//! cache), permission bits, the disk a tree really takes, and symlinks.

use std::fs::Metadata;
use std::io;
use std::path::Path;

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
pub fn symlink_file(target: &Path, link: &Path) -> io::Result<()> {
    std::os::unix::fs::symlink(target, link)
}

#[cfg(not(unix))]
pub fn symlink_file(_target: &Path, _link: &Path) -> io::Result<()> {
    Err(io::Error::new(
        io::ErrorKind::Unsupported,
        "symlinked compiler shims are Unix-only for now",
    ))
}

/// Creates a symlink `link` → `target` (a directory). On Windows this needs a privilege or
/// developer mode, and fails with the OS's error without it.
pub fn symlink_dir(target: &Path, link: &Path) -> io::Result<()> {
    #[cfg(unix)]
    {
        std::os::unix::fs::symlink(target, link)
    }
    #[cfg(windows)]
    {
        std::os::windows::fs::symlink_dir(target, link)
    }
}

/// Makes `to` a symlink with the same target as the symlink `from` (a copy of the link, not of
/// what it points to). Windows keeps the file-or-directory kind of the original.
pub fn copy_symlink(from: &Path, to: &Path) -> io::Result<()> {
    let target = std::fs::read_link(from)?;
    #[cfg(unix)]
    {
        std::os::unix::fs::symlink(target, to)
    }
    #[cfg(windows)]
    {
        use std::os::windows::fs::FileTypeExt;
        if std::fs::symlink_metadata(from)?
            .file_type()
            .is_symlink_dir()
        {
            std::os::windows::fs::symlink_dir(target, to)
        } else {
            std::os::windows::fs::symlink_file(target, to)
        }
    }
}

/// The disk space the files and directories under `dir` take, as `du` counts it: allocated
/// blocks, each inode once (hard links), symlinks not followed. Where the OS gives neither
/// blocks nor inode numbers through std (Windows), the sum of file lengths.
pub fn disk_usage(dir: &Path) -> u64 {
    let mut seen = std::collections::HashSet::new();
    let mut total = 0;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let Ok(m) = e.metadata() else { continue };
            if let Some((id, bytes)) = allocation(&m) {
                if seen.insert(id) {
                    total += bytes;
                }
            }
            if m.is_dir() {
                stack.push(e.path());
            }
        }
    }
    total
}

/// (inode, allocated bytes) of one entry; `None` when it must not be counted.
#[cfg(unix)]
fn allocation(m: &Metadata) -> Option<(u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    Some((m.ino(), m.blocks() * 512))
}

#[cfg(not(unix))]
fn allocation(m: &Metadata) -> Option<(u64, u64)> {
    use std::sync::atomic::{AtomicU64, Ordering};
    // No inode numbers: every file counts, under an id of its own.
    static NEXT: AtomicU64 = AtomicU64::new(0);
    m.is_file()
        .then(|| (NEXT.fetch_add(1, Ordering::Relaxed), m.len()))
}

#[cfg(all(test, unix))]
mod tests {
    use super::*;

    #[test]
    fn disk_usage_counts_a_hard_linked_file_once_and_follows_no_symlink() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("t");
        std::fs::create_dir_all(dir.join("sub")).unwrap();
        std::fs::write(dir.join("sub/a"), vec![7u8; 64 * 1024]).unwrap();
        let one = disk_usage(&dir);
        assert!(one >= 64 * 1024, "{one}");
        std::fs::hard_link(dir.join("sub/a"), dir.join("b")).unwrap();
        let outside = tmp.path().join("outside");
        std::fs::create_dir(&outside).unwrap();
        std::fs::write(outside.join("big"), vec![1u8; 256 * 1024]).unwrap();
        symlink_dir(&outside, &dir.join("link")).unwrap();
        // Counting the link twice would add 64 KiB, following the symlink 256 KiB; the
        // symlink's own inode may take a block.
        let after = disk_usage(&dir);
        assert!(after < one + 64 * 1024, "{one} then {after}");
    }

    #[test]
    fn a_copied_symlink_points_where_the_original_did() {
        let tmp = tempfile::tempdir().unwrap();
        symlink_file(Path::new("../somewhere"), &tmp.path().join("a")).unwrap();
        copy_symlink(&tmp.path().join("a"), &tmp.path().join("b")).unwrap();
        assert_eq!(
            std::fs::read_link(tmp.path().join("b")).unwrap(),
            Path::new("../somewhere")
        );
    }
}
