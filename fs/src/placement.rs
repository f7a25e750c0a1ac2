//! Placements: files of a mount whose bytes are a blob.
//!
//! A placed file is an empty *marker* in the upper directory carrying the xattr
//! `user.kache.blob = "<hash>:<size>"`; its mode and mtime are the marker's. This module owns
//! that representation, the validation of a [`Placement`], the names a mount reserves
//! for itself (the control file, staging names), and applying validated placements to the upper
//! directory. Must never: accept a path that leaves the mount, a blob whose size does not match,
//! or follow a symlink while creating the directories of a placement.

use std::collections::HashMap;
use std::ffi::{CStr, CString, OsStr};
use std::fs::File;
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::fs::PermissionsExt;
use std::path::{Component, Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::SystemTime;

use rustix::fs::{AtFlags, Mode, OFlags, RenameFlags};
use rustix::io::Errno;

use crate::sys;
use crate::{BlobSource, Placement};

/// Name of the control file at the mount root (hidden from listings).
pub(crate) const CONTROL_NAME: &str = ".kache-control";
/// Node id and st_ino of the control file (never an upper inode number).
pub(crate) const CONTROL_ID: u64 = u64::MAX - 1;
/// Prefix of the temporary markers a placement renames into place; hidden from readdir.
pub(crate) const PLACING_PREFIX: &str = ".kache-placing.";
/// Name of the xattr that marks an upper file as a placement: value `"<hash>:<size>"`.
pub(crate) const PLACED_XATTR: &str = "user.kache.blob";

impl Placement {
    /// This placement, checked: a relative path inside the mount that names no reserved file, a
    /// well-formed hash of a blob present in `blobs` with exactly `size` bytes; permission bits
    /// only. The server applies nothing that did not pass through here.
    pub(crate) fn validated(self, blobs: &dyn BlobSource) -> Result<Placement, String> {
        check_path(&self.path)?;
        let shown = self.path.display();
        if !is_blob_hash(&self.hash) {
            return Err(format!("{shown}: malformed blob hash"));
        }
        let blob = blobs
            .blob_path(&self.hash)
            .ok_or_else(|| format!("{shown}: blob {} not in the store", self.hash))?;
        let meta =
            std::fs::metadata(&blob).map_err(|e| format!("{shown}: blob {}: {e}", self.hash))?;
        if !meta.is_file() || meta.len() != self.size {
            return Err(format!(
                "{shown}: blob {} has {} bytes, request says {}",
                self.hash,
                meta.len(),
                self.size
            ));
        }
        Ok(Placement {
            mode: self.mode & 0o777,
            ..self
        })
    }
}

/// Whether `name` is one a mount keeps for itself at `at_root` (the control file) or anywhere
/// (staging names): users can neither create nor see such names.
pub(crate) fn is_reserved(name: &OsStr, at_root: bool) -> bool {
    (at_root && name == CONTROL_NAME)
        || name
            .as_encoded_bytes()
            .starts_with(PLACING_PREFIX.as_bytes())
}

fn is_blob_hash(hash: &str) -> bool {
    hash.len() == 64 && hash.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

fn check_path(path: &Path) -> Result<(), String> {
    let mut components = 0;
    for comp in path.components() {
        match comp {
            Component::Normal(name) => {
                if is_reserved(name, path == Path::new(name)) {
                    return Err(format!("{}: reserved name", path.display()));
                }
                components += 1;
            }
            _ => {
                return Err(format!(
                    "{}: must be relative, without `.` or `..`",
                    path.display()
                ))
            }
        }
    }
    if components == 0 {
        return Err("empty path".to_string());
    }
    Ok(())
}

/// Bytes of a placed file: which blob, and how long it is (the marker's xattr).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Blob {
    pub hash: String,
    pub size: u64,
}

impl Blob {
    fn xattr_value(&self) -> String {
        format!("{}:{}", self.hash, self.size)
    }

    fn parse(value: &[u8]) -> Option<Blob> {
        let value = std::str::from_utf8(value).ok()?;
        let (hash, size) = value.split_once(':')?;
        Some(Blob {
            hash: hash.to_string(),
            size: size.parse().ok()?,
        })
    }

    /// The placement an upper file carries, if it is a marker.
    pub(crate) fn of_marker(fd: BorrowedFd<'_>) -> io::Result<Option<Blob>> {
        Ok(sys::getxattr_fd(fd, &xattr_name())?.and_then(|v| Blob::parse(&v)))
    }
}

pub(crate) fn xattr_name() -> CString {
    CString::new(PLACED_XATTR).unwrap_or_default()
}

/// Who new upper files and directories belong to (a root server creates them for users).
pub(crate) type Owner = Option<(u32, u32)>;

fn give_to(owner: Owner, fd: BorrowedFd<'_>) {
    if let Some((uid, gid)) = owner {
        let _ = sys::chown_fd(fd, Some(uid), Some(gid));
    }
}

/// Makes every placement of `items` (validated; each with the mtime its file gets, the
/// placement time when `None`) real under the upper directory `root`: each
/// marker is created under a staging name first, then each is renamed over its destination
/// (each replacement is atomic). `changed(dir, name)` is called for every name this creates or
/// replaces (directories made on the way too), so the caller can drop what the kernel cached
/// of it. A failure while staging removes what was staged and changes no file. Returns how
/// many were placed.
pub(crate) fn apply(
    root: BorrowedFd<'_>,
    items: &[(Placement, Option<SystemTime>)],
    owner: Owner,
    changed: &mut dyn FnMut(&OwnedFd, &CStr),
) -> io::Result<usize> {
    static STAGED: AtomicU64 = AtomicU64::new(0);
    let mut staged: Vec<(Arc<OwnedFd>, CString, CString)> = Vec::new();
    // Most placements of one request share a directory: resolve each directory once.
    let mut dirs: HashMap<PathBuf, Arc<OwnedFd>> = HashMap::new();
    let result = (|| -> io::Result<()> {
        for (item, mtime) in items {
            let dir_path = item.path.parent().unwrap_or(Path::new("")).to_path_buf();
            let parent = match dirs.get(&dir_path) {
                Some(fd) => fd.clone(),
                None => {
                    let fd = Arc::new(ensure_dirs(root, &dir_path, owner, changed)?);
                    dirs.insert(dir_path, fd.clone());
                    fd
                }
            };
            let name = sys::cstr(item.path.file_name().unwrap_or_default())?;
            let tmp = sys::cstr(OsStr::new(&format!(
                "{PLACING_PREFIX}{}.{}",
                std::process::id(),
                STAGED.fetch_add(1, Ordering::Relaxed)
            )))?;
            let fd = sys::openat(
                &*parent,
                &tmp,
                OFlags::CREATE | OFlags::EXCL | OFlags::WRONLY,
                0o600,
            )?;
            staged.push((parent, tmp, name));
            let marker = File::from(fd);
            let blob = Blob {
                hash: item.hash.clone(),
                size: item.size,
            };
            sys::fsetxattr(&marker, &xattr_name(), blob.xattr_value().as_bytes())?;
            marker.set_permissions(std::fs::Permissions::from_mode(item.mode))?;
            // A rename keeps the mtime, so the file appears with it in one step.
            if let Some(t) = mtime {
                marker.set_modified(*t)?;
            }
            give_to(owner, marker.as_fd());
        }
        Ok(())
    })();
    if let Err(e) = result {
        for (parent, tmp, _) in &staged {
            let _ = rustix::fs::unlinkat(&**parent, tmp.as_c_str(), AtFlags::empty());
        }
        return Err(e);
    }
    let mut first_error = None;
    for (parent, tmp, name) in &staged {
        let done = rustix::fs::renameat_with(
            &**parent,
            tmp.as_c_str(),
            &**parent,
            name.as_c_str(),
            RenameFlags::empty(),
        );
        if let Err(e) = done {
            let _ = rustix::fs::unlinkat(&**parent, tmp.as_c_str(), AtFlags::empty());
            first_error.get_or_insert(e.into());
            continue;
        }
        changed(parent, name);
    }
    match first_error {
        Some(e) => Err(e),
        None => Ok(staged.len()),
    }
}

/// Walks (creating as needed) the directories of a relative path, never following symlinks.
fn ensure_dirs(
    root: BorrowedFd<'_>,
    dirs: &Path,
    owner: Owner,
    changed: &mut dyn FnMut(&OwnedFd, &CStr),
) -> io::Result<OwnedFd> {
    let mut dir = sys::openat(root, c".", OFlags::PATH | OFlags::DIRECTORY, 0)?;
    for comp in dirs.components() {
        let name = sys::cstr(comp.as_os_str())?;
        match rustix::fs::mkdirat(&dir, name.as_c_str(), Mode::from_raw_mode(0o755)) {
            Ok(()) => {
                if let Ok(fd) = sys::open_path(&dir, &name) {
                    give_to(owner, fd.as_fd());
                }
                changed(&dir, &name);
            }
            Err(Errno::EXIST) => {}
            Err(e) => return Err(e.into()),
        }
        dir = sys::openat(
            &dir,
            &name,
            OFlags::PATH | OFlags::DIRECTORY | OFlags::NOFOLLOW,
            0,
        )?;
    }
    Ok(dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_that_leave_the_mount_are_refused() {
        for bad in [
            "../x",
            "/etc/passwd",
            "a/../../x",
            "",
            ".",
            "./a",
            ".kache-control",
            "debug/.kache-placing.1.2",
        ] {
            assert!(check_path(Path::new(bad)).is_err(), "{bad} accepted");
        }
        assert!(check_path(Path::new("debug/deps/libx.rlib")).is_ok());
        assert!(check_path(Path::new("debug/.kache-control")).is_ok());
    }

    #[test]
    fn only_lowercase_blake3_hex_is_a_hash() {
        assert!(is_blob_hash(&"ab".repeat(32)));
        assert!(!is_blob_hash(&"AB".repeat(32)));
        assert!(!is_blob_hash("abc"));
        assert!(!is_blob_hash(&format!("../{}", "a".repeat(61))));
    }

    #[test]
    fn marker_values_round_trip() {
        let b = Blob {
            hash: "ab".repeat(32),
            size: 42,
        };
        assert_eq!(Blob::parse(b.xattr_value().as_bytes()), Some(b));
        assert_eq!(Blob::parse(b"nonsense"), None);
    }
}
