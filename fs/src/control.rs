//! The placement protocol: the only way another process places blobs into a mount.
//!
//! A client opens `<mount>/.kache-control`, writes one JSON request
//! (`{"placements":[{"path":…,"hash":…,"size":…,"mode":…}]}`, or `{"clear":true}` to empty the
//! mount), then reads one status line: `ok <count>` or `error: <reason>`. The request is applied
//! when the status is first read. Validation happens before anything changes, so a rejected
//! request changes nothing.
//!
//! Owns: the request codec and status lines, one open control file's exchange, the client
//! functions. Must never: apply a request that did not validate as a whole.

use std::collections::HashSet;
use std::fs::OpenOptions;
use std::io::{self, Read, Write};
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::placement::{Placement, CONTROL_ID, CONTROL_NAME};
use crate::BlobSource;

/// Upper bound on one control request, so a runaway client cannot exhaust memory.
const MAX_CONTROL_REQUEST: usize = 64 << 20;

#[derive(Default, Serialize, Deserialize)]
struct Request {
    #[serde(default)]
    placements: Vec<Placement>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    clear: bool,
}

/// What a valid request asks for.
pub(crate) enum Command {
    Place(Vec<Placement>),
    /// Empty the mount (what `cargo clean` means for it).
    Clear,
}

/// Decodes a request and checks every placement of it; any failure rejects the whole request.
pub(crate) fn validate(request: &[u8], blobs: &dyn BlobSource) -> Result<Command, String> {
    let request: Request =
        serde_json::from_slice(request).map_err(|e| format!("malformed request: {e}"))?;
    if request.clear {
        return match request.placements.is_empty() {
            true => Ok(Command::Clear),
            false => Err("a clear request places nothing".into()),
        };
    }
    let mut seen = HashSet::new();
    let mut valid = Vec::with_capacity(request.placements.len());
    for p in request.placements {
        if !seen.insert(p.path.clone()) {
            return Err(format!("{}: placed twice in one request", p.path.display()));
        }
        valid.push(p.validated(blobs)?);
    }
    Ok(Command::Place(valid))
}

/// The status line of an applied request.
pub(crate) fn ok_line(n: usize) -> String {
    format!("ok {n}\n")
}

/// The status line of a refused or failed request.
pub(crate) fn error_line(reason: &str) -> String {
    format!("error: {}\n", reason.replace('\n', " "))
}

/// One open control file: the request as written so far, then the status being read.
#[derive(Default)]
pub(crate) struct Exchange {
    request: Vec<u8>,
    response: Option<Vec<u8>>,
    /// How much of the response was read: the status is a stream, whatever the file offset
    /// (after writing the request, the client's offset is past it).
    sent: usize,
}

impl Exchange {
    /// Appends request bytes; `false` when the request would grow past the bound.
    pub(crate) fn write(&mut self, data: &[u8]) -> bool {
        if self.request.len() + data.len() > MAX_CONTROL_REQUEST {
            return false;
        }
        self.request.extend_from_slice(data);
        self.response = None;
        true
    }

    /// The next `size` bytes of the status; the first read computes it with `respond`.
    pub(crate) fn read(&mut self, size: usize, respond: impl FnOnce(&[u8]) -> String) -> Vec<u8> {
        if self.response.is_none() {
            self.response = Some(respond(&self.request).into_bytes());
            self.sent = 0;
        }
        let response = self.response.as_deref().unwrap_or_default();
        let start = self.sent.min(response.len());
        let end = (start + size).min(response.len());
        self.sent = end;
        response[start..end].to_vec()
    }
}

/// Place `placements` into the kache mount at `mount_root`, atomically per file: each path
/// then reads as its blob, with mtime = now, replacing whatever was there. All are checked
/// before any is applied; a rejected request (bad path, unknown blob, wrong size) changes
/// nothing and returns `InvalidInput` with the server's reason.
pub fn place(mount_root: &Path, placements: &[Placement]) -> io::Result<()> {
    exchange(
        mount_root,
        &Request {
            placements: placements.to_vec(),
            ..Request::default()
        },
    )
    .map(drop)
}

/// Empties the kache mount at `mount_root` at once, as `rm -rf` of everything in it would
/// (what `cargo clean` means for a mounted target); open files stay readable. Returns how many
/// top-level entries went.
pub fn clear(mount_root: &Path) -> io::Result<usize> {
    exchange(
        mount_root,
        &Request {
            clear: true,
            ..Request::default()
        },
    )
}

/// Sends one request, returns the count of its `ok` status.
fn exchange(mount_root: &Path, request: &Request) -> io::Result<usize> {
    let request = serde_json::to_vec(request).map_err(io::Error::other)?;
    let mut control = OpenOptions::new()
        .read(true)
        .write(true)
        .open(mount_root.join(CONTROL_NAME))?;
    control.write_all(&request)?;
    let mut status = String::new();
    control.read_to_string(&mut status)?;
    match status.strip_prefix("ok ") {
        Some(n) => Ok(n.trim().parse().unwrap_or(0)),
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
    fn the_status_is_streamed_once_whatever_the_read_size() {
        let mut ex = Exchange::default();
        assert!(ex.write(b"{}"));
        let mut calls = 0;
        let mut got = Vec::new();
        loop {
            let chunk = ex.read(3, |req| {
                calls += 1;
                assert_eq!(req, b"{}");
                ok_line(12)
            });
            if chunk.is_empty() {
                break;
            }
            got.extend(chunk);
        }
        assert_eq!(got, b"ok 12\n");
        assert_eq!(calls, 1);
    }

    #[test]
    fn an_error_line_is_one_line() {
        assert_eq!(error_line("a\nb"), "error: a b\n");
    }
}
