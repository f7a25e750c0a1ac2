//! The placement protocol: the only way another process places blobs into a mount.
//!
//! A client sets the xattr `user.kache.request` of `<mount>/.kache-control` to one JSON request
//! (`{"placements":[{"path":…,"hash":…,"size":…,"mode":…}]}`, each optionally with `"mtime_ns"`,
//! or `{"clear":true}` to empty the mount). The server validates and applies it before the call returns: success is 0, a refused
//! request fails with EINVAL, one that failed while applying with EIO. The status line of the
//! calling thread's last request (`ok <count>` or `error: <reason>`) is then the value of the
//! xattr `user.kache.status`. Validation happens before anything changes, so a rejected request
//! changes nothing.
//!
//! Why xattrs and not a file to write and read: one round trip, and it needs no `open`, which
//! this filesystem does not implement (see `fs.rs`).
//!
//! Owns: the request codec and status lines, the statuses kept for clients, the client
//! functions. Must never: apply a request that did not validate as a whole.

use std::collections::{HashMap, HashSet};
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rustix::fs::XattrFlags;
use rustix::io::Errno;
use serde::{Deserialize, Serialize};

use crate::inodes::lock;
use crate::placement::{CONTROL_ID, CONTROL_NAME};
use crate::{BlobSource, Placement};

/// The xattr a request is written to.
pub(crate) const REQUEST_XATTR: &str = "user.kache.request";
/// The xattr the status of the caller's last request is read from.
pub(crate) const STATUS_XATTR: &str = "user.kache.status";
/// The largest request one call carries (the kernel's limit on an xattr value is 64 KiB):
/// [`place`] sends longer lists in several requests, each checked and applied as a whole.
const MAX_REQUEST: usize = 60 * 1024;
/// Statuses kept for clients that have not read theirs; the oldest go first.
const MAX_STATUSES: usize = 1024;

#[derive(Default, Serialize, Deserialize)]
struct Request {
    #[serde(default)]
    placements: Vec<WirePlacement>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    clear: bool,
}

/// A placement as a request carries it: with `mtime_ns` (nanoseconds since the epoch) its file
/// gets that mtime instead of the placement time.
#[derive(Serialize, Deserialize)]
struct WirePlacement {
    #[serde(flatten)]
    placement: Placement,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    mtime_ns: Option<i64>,
}

/// What a valid request asks for.
pub(crate) enum Command {
    Place(Vec<(Placement, Option<SystemTime>)>),
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
    for WirePlacement {
        placement,
        mtime_ns,
    } in request.placements
    {
        if !seen.insert(placement.path.clone()) {
            return Err(format!(
                "{}: placed twice in one request",
                placement.path.display()
            ));
        }
        valid.push((placement.validated(blobs)?, mtime_ns.map(from_epoch_ns)));
    }
    Ok(Command::Place(valid))
}

/// The outcome of one request, as the server answers it.
pub(crate) enum Status {
    Done(usize),
    Refused(String),
    Failed(String),
}

impl Status {
    fn line(&self) -> String {
        match self {
            Status::Done(n) => format!("ok {n}\n"),
            Status::Refused(reason) | Status::Failed(reason) => {
                format!("error: {}\n", reason.replace('\n', " "))
            }
        }
    }

    /// The errno the request call returns.
    pub(crate) fn errno(&self) -> Option<fuser::Errno> {
        match self {
            Status::Done(_) => None,
            Status::Refused(_) => Some(fuser::Errno::EINVAL),
            Status::Failed(_) => Some(fuser::Errno::EIO),
        }
    }
}

/// The status line of each client's last request, by the client's thread id.
#[derive(Default)]
pub(crate) struct Statuses(Mutex<HashMap<u32, (u64, String)>>);

impl Statuses {
    pub(crate) fn keep(&self, client: u32, status: &Status) {
        let mut map = lock(&self.0);
        let seq = map.values().map(|(s, _)| *s).max().unwrap_or(0) + 1;
        if map.len() >= MAX_STATUSES && !map.contains_key(&client) {
            if let Some(oldest) = map.iter().min_by_key(|(_, (s, _))| *s).map(|(k, _)| *k) {
                map.remove(&oldest);
            }
        }
        map.insert(client, (seq, status.line()));
    }

    /// The client's last status line (read once), if it has one.
    pub(crate) fn take(&self, client: u32) -> Option<String> {
        lock(&self.0).remove(&client).map(|(_, line)| line)
    }
}

/// Sends one request to the mount at `mount_root`; with `count`, returns how many things it
/// did (a second round trip, for the status). A refusal or failure returns the server's reason
/// (`InvalidInput` for a refusal).
fn exchange(mount_root: &Path, request: &Request, count: bool) -> io::Result<usize> {
    let body = serde_json::to_vec(request).map_err(io::Error::other)?;
    let control = mount_root.join(CONTROL_NAME);
    let sent = rustix::fs::setxattr(&control, REQUEST_XATTR, &body, XattrFlags::empty());
    if sent.is_ok() && !count {
        return Ok(0);
    }
    let status = read_status(&control);
    match (sent, status) {
        (Ok(()), Some(line)) => Ok(line
            .trim_end()
            .strip_prefix("ok ")
            .and_then(|n| n.parse().ok())
            .unwrap_or(0)),
        (Ok(()), None) => Ok(0),
        (Err(e), Some(line)) => Err(io::Error::new(
            match e {
                Errno::INVAL => io::ErrorKind::InvalidInput,
                e => io::Error::from(e).kind(),
            },
            line.trim_end().trim_start_matches("error: ").to_string(),
        )),
        (Err(e), None) => Err(e.into()),
    }
}

fn read_status(control: &Path) -> Option<String> {
    let mut buf = vec![0u8; 4096];
    let n = rustix::fs::getxattr(control, STATUS_XATTR, &mut buf[..]).ok()?;
    Some(String::from_utf8_lossy(&buf[..n]).into_owned())
}

/// Place `placements` into the kache mount at `mount_root`, atomically per file: each path
/// then reads as its blob, with mtime = now, replacing whatever was there. A request is checked
/// before any of it is applied; a rejected one (bad path, unknown blob, wrong size) changes
/// nothing and returns `InvalidInput` with the server's reason. Lists longer than one request
/// holds (about 250 placements) go in several requests, each checked and applied as a whole.
pub fn place(mount_root: &Path, placements: &[Placement]) -> io::Result<()> {
    send_all(
        mount_root,
        placements.iter().map(|p| WirePlacement {
            placement: p.clone(),
            mtime_ns: None,
        }),
    )
}

/// Like [`place`], each file getting the given mtime instead of the placement time, in the
/// same request (setting times afterwards would cost a round trip per file): for files whose
/// relative mtimes matter to cargo, such as a seeded unit's.
pub fn place_at(mount_root: &Path, placements: &[(Placement, SystemTime)]) -> io::Result<()> {
    send_all(
        mount_root,
        placements.iter().map(|(p, t)| WirePlacement {
            placement: p.clone(),
            mtime_ns: Some(to_epoch_ns(*t)),
        }),
    )
}

/// Sends `placements` in as few requests as fit the xattr limit (at least one).
fn send_all(mount_root: &Path, placements: impl Iterator<Item = WirePlacement>) -> io::Result<()> {
    let mut batch: Vec<WirePlacement> = Vec::new();
    let mut size = 0;
    let mut sent_any = false;
    for p in placements {
        let one = serde_json::to_vec(&p).map_err(io::Error::other)?.len() + 1;
        if !batch.is_empty() && size + one > MAX_REQUEST {
            send(mount_root, std::mem::take(&mut batch))?;
            sent_any = true;
            size = 0;
        }
        size += one;
        batch.push(p);
    }
    if !batch.is_empty() || !sent_any {
        send(mount_root, batch)?;
    }
    Ok(())
}

fn send(mount_root: &Path, placements: Vec<WirePlacement>) -> io::Result<()> {
    let request = Request {
        placements,
        ..Request::default()
    };
    exchange(mount_root, &request, false).map(drop)
}

fn to_epoch_ns(t: SystemTime) -> i64 {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_nanos()).unwrap_or(i64::MAX),
        Err(e) => i64::try_from(e.duration().as_nanos()).map_or(i64::MIN, |ns| -ns),
    }
}

fn from_epoch_ns(ns: i64) -> SystemTime {
    let d = Duration::from_nanos(ns.unsigned_abs());
    match ns >= 0 {
        true => UNIX_EPOCH + d,
        false => UNIX_EPOCH - d,
    }
}

/// Empties the kache mount at `mount_root` at once, as `rm -rf` of everything in it would
/// (what `cargo clean` means for a mounted target); open files stay readable. Returns how many
/// top-level entries went.
pub fn clear(mount_root: &Path) -> io::Result<usize> {
    let request = Request {
        clear: true,
        ..Request::default()
    };
    exchange(mount_root, &request, true)
}

/// Whether `dir` is the root of a live kache mount: one `stat` of its control file.
pub fn is_kache_mount(dir: &Path) -> bool {
    std::fs::metadata(dir.join(CONTROL_NAME)).is_ok_and(|m| m.ino() == CONTROL_ID)
}

/// Asks the server of the mount at `mount_root` something only it can answer (a status read,
/// never answered from the kernel's caches): `Ok` when it answers.
pub(crate) fn ping(mount_root: &Path) -> io::Result<()> {
    let control = mount_root.join(CONTROL_NAME);
    // A size query: the server answers it even when it has no status for us (ENODATA).
    match rustix::fs::getxattr_query(&control, STATUS_XATTR) {
        Ok(_) | Err(Errno::NODATA) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_are_kept_per_client_and_read_once() {
        let s = Statuses::default();
        s.keep(7, &Status::Done(3));
        s.keep(8, &Status::Refused("bad\npath".into()));
        assert_eq!(s.take(8).as_deref(), Some("error: bad path\n"));
        assert_eq!(s.take(7).as_deref(), Some("ok 3\n"));
        assert_eq!(s.take(7), None);
    }

    #[test]
    fn placement_times_survive_the_wire_before_and_after_the_epoch() {
        for t in [
            UNIX_EPOCH + Duration::from_nanos(1_700_000_000_123_456_789),
            UNIX_EPOCH - Duration::from_nanos(86_400_000_000_007),
            UNIX_EPOCH,
        ] {
            assert_eq!(from_epoch_ns(to_epoch_ns(t)), t);
        }
    }

    #[test]
    fn forgotten_statuses_are_bounded() {
        let s = Statuses::default();
        for client in 0..(MAX_STATUSES as u32 + 10) {
            s.keep(client, &Status::Done(1));
        }
        assert_eq!(lock(&s.0).len(), MAX_STATUSES);
        assert_eq!(s.take(0), None, "the oldest went first");
        assert!(s.take(MAX_STATUSES as u32 + 9).is_some());
    }
}
