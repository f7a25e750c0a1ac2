//! The placement protocol: the only way another process places blobs into a mount.
//!
//! A client opens `<mount>/.kache-control`, writes one JSON request
//! (`{"placements":[{"path":…,"hash":…,"size":…,"mode":…}]}`), then reads one status line:
//! `ok <count>` or `error: <reason>`. The request is applied when the status is first read.
//! Validation happens before anything changes, so a rejected request changes nothing.
//!
//! Owns: request parsing and validation, the client functions. Must never: accept a path that
//! leaves the mount, or a blob whose size does not match.

use std::collections::HashSet;
use std::fs::OpenOptions;
use std::io::{self, Read, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Component, Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::fs::{CONTROL_ID, CONTROL_NAME, PLACING_PREFIX};
use crate::BlobSource;

/// One file to place: `path` (relative to the mount root) will read as the blob `hash`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Placement {
    /// Path relative to the mount root, without `..`; parent directories are created.
    pub path: PathBuf,
    /// blake3 of the content, 64 lowercase hex characters.
    pub hash: String,
    /// Size of the blob in bytes; must match the blob file.
    pub size: u64,
    /// Permission bits (e.g. `0o644`, `0o755` for executables).
    pub mode: u32,
}

/// A placement on the wire: optionally with the mtime its file gets (nanoseconds since the
/// epoch) instead of the placement time.
#[derive(Serialize, Deserialize)]
struct WirePlacement {
    #[serde(flatten)]
    placement: Placement,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    mtime_ns: Option<i64>,
}

#[derive(Serialize, Deserialize)]
struct Request {
    placements: Vec<WirePlacement>,
}

/// A placement that passed validation.
pub(crate) struct ValidPlacement {
    pub path: PathBuf,
    pub hash: String,
    pub size: u64,
    pub mode: u32,
    pub mtime: Option<std::time::SystemTime>,
}

pub(crate) fn ok_line(n: usize) -> String {
    format!("ok {n}\n")
}

pub(crate) fn error_line(reason: &str) -> String {
    format!("error: {}\n", reason.replace('\n', " "))
}

fn is_blob_hash(hash: &str) -> bool {
    hash.len() == 64 && hash.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

fn check_path(path: &Path) -> Result<(), String> {
    let mut components = 0;
    for comp in path.components() {
        match comp {
            Component::Normal(name) => {
                if name
                    .as_encoded_bytes()
                    .starts_with(PLACING_PREFIX.as_bytes())
                {
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
    if path == Path::new(CONTROL_NAME) {
        return Err(format!("{CONTROL_NAME}: reserved name"));
    }
    Ok(())
}

/// Check every placement of a request; any failure rejects the whole request.
pub(crate) fn validate(
    request: &[u8],
    blobs: &dyn BlobSource,
) -> Result<Vec<ValidPlacement>, String> {
    let request: Request =
        serde_json::from_slice(request).map_err(|e| format!("malformed request: {e}"))?;
    let mut seen = HashSet::new();
    let mut valid = Vec::with_capacity(request.placements.len());
    for w in request.placements {
        let p = w.placement;
        let mtime = w.mtime_ns.map(|ns| {
            let t = std::time::UNIX_EPOCH;
            if ns >= 0 {
                t + std::time::Duration::from_nanos(ns as u64)
            } else {
                t - std::time::Duration::from_nanos(ns.unsigned_abs())
            }
        });
        check_path(&p.path)?;
        if !seen.insert(p.path.clone()) {
            return Err(format!("{}: placed twice in one request", p.path.display()));
        }
        if !is_blob_hash(&p.hash) {
            return Err(format!("{}: malformed blob hash", p.path.display()));
        }
        let blob = blobs
            .blob_path(&p.hash)
            .ok_or_else(|| format!("{}: blob {} not in the store", p.path.display(), p.hash))?;
        let meta = std::fs::metadata(&blob)
            .map_err(|e| format!("{}: blob {}: {e}", p.path.display(), p.hash))?;
        if !meta.is_file() || meta.len() != p.size {
            return Err(format!(
                "{}: blob {} has {} bytes, request says {}",
                p.path.display(),
                p.hash,
                meta.len(),
                p.size
            ));
        }
        valid.push(ValidPlacement {
            path: p.path,
            hash: p.hash,
            size: p.size,
            mode: p.mode & 0o777,
            mtime,
        });
    }
    Ok(valid)
}

/// Place `placements` into the kache mount at `mount_root`, atomically per file: each path
/// then reads as its blob, with mtime = now, replacing whatever was there. All are checked
/// before any is applied; a rejected request (bad path, unknown blob, wrong size) changes
/// nothing and returns `InvalidInput` with the server's reason.
pub fn place(mount_root: &Path, placements: &[Placement]) -> io::Result<()> {
    let wire = placements
        .iter()
        .map(|p| WirePlacement {
            placement: p.clone(),
            mtime_ns: None,
        })
        .collect();
    send(mount_root, wire)
}

/// Like [`place`], each file getting the given mtime instead of the placement time (one
/// request, where setting times afterwards would cost a round trip per file): for files
/// whose relative mtimes matter to cargo, such as a seeded unit's.
pub fn place_at(
    mount_root: &Path,
    placements: &[(Placement, std::time::SystemTime)],
) -> io::Result<()> {
    let wire = placements
        .iter()
        .map(|(p, t)| WirePlacement {
            placement: p.clone(),
            mtime_ns: Some(match t.duration_since(std::time::UNIX_EPOCH) {
                Ok(d) => d.as_nanos() as i64,
                Err(e) => -(e.duration().as_nanos() as i64),
            }),
        })
        .collect();
    send(mount_root, wire)
}

fn send(mount_root: &Path, placements: Vec<WirePlacement>) -> io::Result<()> {
    let request = serde_json::to_vec(&Request { placements }).map_err(io::Error::other)?;
    let mut control = OpenOptions::new()
        .read(true)
        .write(true)
        .open(mount_root.join(CONTROL_NAME))?;
    control.write_all(&request)?;
    let mut status = String::new();
    control.read_to_string(&mut status)?;
    match status.strip_prefix("ok ") {
        Some(_) => Ok(()),
        None => Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            status.trim_end().trim_start_matches("error: ").to_string(),
        )),
    }
}

/// Whether `dir` is the root of a live kache mount: one `stat` of its control file.
pub fn is_kache_mount(dir: &Path) -> bool {
    std::fs::metadata(dir.join(CONTROL_NAME)).is_ok_and(|m| m.ino() == CONTROL_ID)
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
        ] {
            assert!(check_path(Path::new(bad)).is_err(), "{bad} accepted");
        }
        assert!(check_path(Path::new("debug/deps/libx.rlib")).is_ok());
    }

    #[test]
    fn only_lowercase_blake3_hex_is_a_hash() {
        assert!(is_blob_hash(&"ab".repeat(32)));
        assert!(!is_blob_hash(&"AB".repeat(32)));
        assert!(!is_blob_hash("abc"));
        assert!(!is_blob_hash(&format!("../{}", "a".repeat(61))));
    }
}
