//! Mounting, unmounting and checking mounts; statistics over a mount's state directory.
//!
//! Owns: the fuser session, the read-only bind of the blob directory, mount discovery through
//! `/proc/self/mountinfo`. Must never: block the caller forever on a wedged mount (health checks
//! time out), or unmount anything that is not a kache mount.

use std::fs::File;
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use fuser::{BackgroundSession, Config, MountOption, Session, SessionACL};
use kache_platform::process::is_root;
use rustix::fs::{OFlags, CWD};
use rustix::io::Errno;
use rustix::mount::{MountFlags, UnmountFlags};
use rustix::process::{Resource, Rlimit};

use crate::control::{self, is_kache_mount};
use crate::fs::KacheFs;
use crate::placement::Blob;
use crate::state::Shared;
use crate::sys;
use crate::{BlobSource, MountHealth, MountOptions, MountStats, PlacedFile};

/// Type shown in `/proc/self/mountinfo` (`fuse.kache`) and its source name.
const FS_NAME: &str = "kache";
/// Serving threads: enough that a slow copy-up or an invalidation never stalls the others.
const THREADS: usize = 4;

/// A live mount served by background threads. Dropping it unmounts.
pub struct MountHandle {
    session: Option<BackgroundSession>,
    shared: Arc<Shared>,
    mountpoint: PathBuf,
    /// A duplicate of the FUSE connection's descriptor, for a keeper (see `takeover.rs`).
    device: OwnedFd,
}

impl MountHandle {
    /// The mounted directory.
    pub fn mountpoint(&self) -> &Path {
        &self.mountpoint
    }

    /// Empty the mount as `rm -rf` of its contents would, in one step (what `cargo clean` means
    /// for a mounted target); see [`crate::clear`]. Returns how many top-level entries went.
    pub fn clear(&self) -> io::Result<usize> {
        self.shared.clear()
    }

    /// Whether this handle serves a connection taken over from a dead server.
    pub fn resumed(&self) -> bool {
        self.shared.inodes.took_over()
    }

    pub(crate) fn device(&self) -> BorrowedFd<'_> {
        self.device.as_fd()
    }

    /// Unmount and wait for the serving threads to finish.
    pub fn unmount(mut self) -> io::Result<()> {
        self.end()
    }

    fn end(&mut self) -> io::Result<()> {
        let Some(session) = self.session.take() else {
            return Ok(());
        };
        // A taken-over connection: fuser does not know the mount, so it is unmounted here.
        if self.resumed() {
            // The threads end when the unmount ends the connection; if it fails (busy), they
            // serve on in the background and the process's exit ends them.
            unmount(&self.mountpoint, false)?;
            session.join()
        } else {
            session.umount_and_join()
        }
    }
}

impl Drop for MountHandle {
    fn drop(&mut self) {
        let _ = self.end();
    }
}

/// Why a mount cannot be made here, in one line; `None` when it can.
pub fn unavailable() -> Option<String> {
    if !Path::new("/dev/fuse").exists() {
        return Some("/dev/fuse is missing (FUSE kernel module not loaded, or not exposed to this container)".into());
    }
    let root = is_root();
    match std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/fuse")
    {
        Ok(_) => {}
        Err(e) if root || e.kind() != io::ErrorKind::PermissionDenied => {
            return Some(format!("/dev/fuse cannot be opened: {e}"));
        }
        // The FUSE library mounts through /dev/fuse itself (then through the setuid
        // fusermount3 for the mount call): a user who cannot open it cannot mount.
        Err(_) => {
            return Some(format!(
                "/dev/fuse is not accessible to this user (uid {}): a mount needs read-write \
                 access to it (most distributions make it crw-rw-rw-: `sudo chmod 0666 /dev/fuse`, \
                 or a udev rule), or run kache mount as root",
                rustix::process::geteuid().as_raw()
            ));
        }
    }
    let helper = std::env::var_os("PATH")
        .is_some_and(|p| std::env::split_paths(&p).any(|d| d.join("fusermount3").is_file()));
    if !root && !helper {
        return Some("not root and fusermount3 is not installed (package fuse3)".into());
    }
    None
}

struct Prepared {
    fs: KacheFs,
    shared: Arc<Shared>,
    config: Config,
}

fn prepare(opts: &MountOptions, blobs: Arc<dyn BlobSource>) -> io::Result<Prepared> {
    if !Path::new("/dev/fuse").exists() {
        return Err(io::Error::new(
            io::ErrorKind::NotFound,
            "/dev/fuse is missing: the FUSE kernel module is not available",
        ));
    }
    let upper = opts.state_dir.join("upper");
    std::fs::create_dir_all(&upper)?;
    check_user_xattrs(&opts.state_dir)?;
    raise_fd_limit();
    let upper_fd: OwnedFd = File::open(&upper)?.into();
    let blob_view = blobs.blob_root().and_then(|root| {
        let view = read_only_view(&root, &opts.state_dir.join("blobs-ro")).ok()?;
        Some((root, view))
    });
    let shared = Arc::new(Shared::new(upper_fd, blobs, blob_view)?);
    let mut config = Config::default();
    config.mount_options = vec![
        MountOption::FSName(FS_NAME.to_string()),
        MountOption::Subtype(FS_NAME.to_string()),
        MountOption::DefaultPermissions,
    ];
    // A root daemon serves users' worktrees: let them in; permissions are checked by the kernel.
    config.acl = if is_root() {
        SessionACL::All
    } else {
        SessionACL::Owner
    };
    config.n_threads = Some(THREADS);
    // One descriptor for all threads, not a clone each: requests a thread has read belong to
    // the descriptor it read them from, and only the shared one outlives a killed server (in
    // its keeper), so only its requests can be sent again to the next server.
    config.clone_fd = false;
    Ok(Prepared {
        fs: KacheFs {
            shared: shared.clone(),
        },
        shared,
        config,
    })
}

/// Mount in the background; the returned handle unmounts when dropped.
pub fn mount(opts: MountOptions, blobs: Arc<dyn BlobSource>) -> io::Result<MountHandle> {
    let p = prepare(&opts, blobs)?;
    let session = Session::new(p.fs, &opts.mountpoint, &p.config)?;
    let device = session.as_fd().try_clone_to_owned()?;
    serve_in_background(p.shared, session, opts.mountpoint, device)
}

/// Starts the serving threads of `session`, whose FUSE connection `device` also names.
fn serve_in_background(
    shared: Arc<Shared>,
    session: Session<KacheFs>,
    mountpoint: PathBuf,
    device: OwnedFd,
) -> io::Result<MountHandle> {
    let _ = shared.notifier.set(session.notifier());
    Ok(MountHandle {
        session: Some(session.spawn()?),
        shared,
        mountpoint,
        device,
    })
}

/// Serve the FUSE connection `device` of a mount whose server died (see `takeover.rs`).
///
/// The kernel negotiated the connection with the dead server and will not again, but fuser
/// starts every session with that negotiation. So the session starts on one end of a socket
/// pair that carries a made-up INIT request, and once it has answered, its descriptor number
/// is pointed at the FUSE connection before any serving thread reads from it. The inode
/// table starts knowing only the root and learns the other node ids the kernel still uses
/// from the upper directory when they are asked for. Last, the kernel is asked to send again
/// the requests the dead server had read and never answered.
pub fn resume(
    opts: MountOptions,
    blobs: Arc<dyn BlobSource>,
    device: OwnedFd,
) -> io::Result<MountHandle> {
    let p = prepare(&opts, blobs)?;
    p.shared.inodes.learn_lost_ids(opts.state_dir.join("upper"));
    let (ours, theirs) = rustix::net::socketpair(
        rustix::net::AddressFamily::UNIX,
        rustix::net::SocketType::SEQPACKET,
        rustix::net::SocketFlags::CLOEXEC,
        None,
    )?;
    rustix::io::write(&ours, &sys::init_request())?;
    let session = Session::from_fd(p.fs, theirs, p.config.acl, p.config.clone())?;
    sys::point_fd_at(device.as_fd(), session.as_fd())?;
    drop(ours);
    // Before any thread reads: where the kernel cannot resend, nothing is served, and the
    // connection ends with this process (as it would have with the dead server).
    sys::resend_unanswered(device.as_fd())?;
    serve_in_background(p.shared, session, opts.mountpoint, device)
}

/// Mount and serve on this thread until the filesystem is unmounted.
pub fn mount_foreground(opts: MountOptions, blobs: Arc<dyn BlobSource>) -> io::Result<()> {
    let p = prepare(&opts, blobs)?;
    let session = Session::new(p.fs, &opts.mountpoint, &p.config)?;
    let _ = p.shared.notifier.set(session.notifier());
    session.run()
}

/// Unmount the kache mount at `mountpoint`. With `force`, first abort its FUSE connection
/// (so a hung or dead server cannot block), then detach lazily.
pub fn unmount(mountpoint: &Path, force: bool) -> io::Result<()> {
    let Some(info) = find_mount(mountpoint)? else {
        return Err(io::Error::new(
            io::ErrorKind::NotFound,
            format!("{} is not a kache mount", mountpoint.display()),
        ));
    };
    if force {
        abort_connection(info.minor);
    }
    let flags = if force {
        UnmountFlags::DETACH
    } else {
        UnmountFlags::empty()
    };
    match rustix::mount::unmount(&info.mountpoint, flags) {
        Ok(()) => return Ok(()),
        Err(Errno::PERM) => {}
        Err(e) => return Err(e.into()),
    }
    // Not root: the setuid helper may unmount what the user mounted.
    let mut cmd = Command::new("fusermount3");
    cmd.arg("-u");
    if force {
        cmd.arg("-z");
    }
    let out = cmd.arg(&info.mountpoint).output()?;
    if out.status.success() {
        Ok(())
    } else {
        Err(io::Error::other(format!(
            "fusermount3 -u failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        )))
    }
}

/// Check the mount at `mountpoint` without ever hanging the caller (2 s limit).
pub fn mount_health(mountpoint: &Path) -> MountHealth {
    match find_mount(mountpoint) {
        Ok(Some(_)) => {}
        Ok(None) => return MountHealth::NotMounted,
        Err(e) => return MountHealth::Broken(format!("reading mountinfo: {e}")),
    }
    let root = mountpoint.to_path_buf();
    let (tx, rx) = std::sync::mpsc::channel();
    // A status read always reaches the server (a stat may be answered from the kernel's cache).
    // A wedged server would block it forever: run it aside and stop waiting.
    let spawned = std::thread::Builder::new()
        .name("kache-fs-health".into())
        .spawn(move || {
            let _ = tx.send(control::ping(&root).map(|()| is_kache_mount(&root)));
        });
    if let Err(e) = spawned {
        return MountHealth::Broken(format!("cannot check: {e}"));
    }
    match rx.recv_timeout(Duration::from_secs(2)) {
        Ok(Ok(true)) => MountHealth::Healthy,
        Ok(Ok(false)) => MountHealth::Broken("control file has the wrong identity".into()),
        Ok(Err(e)) if Errno::from_io_error(&e) == Some(Errno::NOTCONN) => {
            MountHealth::Broken("server is gone (transport endpoint is not connected)".into())
        }
        Ok(Err(e)) => MountHealth::Broken(e.to_string()),
        Err(_) => MountHealth::Broken("server does not answer within 2 s".into()),
    }
}

/// Every placed file in a mount's state directory: what eviction must keep.
pub fn scan_placements(state_dir: &Path) -> io::Result<Vec<PlacedFile>> {
    let mut scan = Scan::default();
    let upper = state_dir.join("upper");
    scan.walk(&upper, &upper)?;
    Ok(scan.found)
}

/// Placed files and bytes, and ordinary bytes, of a mount's state directory.
pub fn mount_stats(state_dir: &Path) -> io::Result<MountStats> {
    let mut scan = Scan::default();
    let upper = state_dir.join("upper");
    scan.walk(&upper, &upper)?;
    Ok(MountStats {
        placed_files: scan.found.len() as u64,
        placed_bytes: scan.found.iter().map(|p| p.size).sum(),
        upper_bytes: scan.upper_bytes,
        disk_bytes: scan.disk_bytes,
    })
}

#[derive(Default)]
struct Scan {
    seen: std::collections::HashSet<u64>,
    found: Vec<PlacedFile>,
    upper_bytes: u64,
    disk_bytes: u64,
}

impl Scan {
    /// Each inode is counted once, under the first name met (hard links share a placement).
    /// What disappears during the walk (the trash of a `clear` being deleted) is passed over.
    fn walk(&mut self, root: &Path, dir: &Path) -> io::Result<()> {
        use std::os::unix::fs::MetadataExt;
        let gone = |e: &io::Error| e.kind() == io::ErrorKind::NotFound;
        let entries = match std::fs::read_dir(dir) {
            Err(e) if gone(&e) && dir != root => return Ok(()),
            other => other?,
        };
        for entry in entries {
            let entry = match entry {
                Err(e) if gone(&e) => continue,
                other => other?,
            };
            let meta = match entry.metadata() {
                Err(e) if gone(&e) => continue,
                other => other?,
            };
            if !self.seen.insert(meta.ino()) {
                continue;
            }
            self.disk_bytes += meta.blocks() * 512;
            let path = entry.path();
            if meta.is_dir() {
                self.walk(root, &path)?;
            } else if meta.is_file() {
                let fd: OwnedFd = match File::open(&path) {
                    Ok(f) => f.into(),
                    Err(_) => continue,
                };
                match Blob::of_marker(fd.as_fd())? {
                    Some(blob) => self.found.push(PlacedFile {
                        path: path.strip_prefix(root).unwrap_or(&path).to_path_buf(),
                        hash: blob.hash,
                        size: blob.size,
                    }),
                    None => self.upper_bytes += meta.len(),
                }
            }
        }
        Ok(())
    }
}

fn check_user_xattrs(state_dir: &Path) -> io::Result<()> {
    let probe_path = state_dir.join(".xattr-probe");
    let probe = File::create(&probe_path)?;
    let set = sys::fsetxattr(&probe, c"user.kache.probe", b"1");
    let _ = std::fs::remove_file(&probe_path);
    set.map_err(|e| {
        io::Error::new(
            e.kind(),
            format!(
                "{}: the filesystem does not keep user xattrs ({e}); kache placements need them",
                state_dir.display()
            ),
        )
    })
}

/// Every inode the kernel knows holds one descriptor: lift the soft limit to the hard one.
fn raise_fd_limit() {
    let lim = rustix::process::getrlimit(Resource::Nofile);
    // `None` is unlimited.
    let below_hard = match (lim.current, lim.maximum) {
        (Some(current), Some(maximum)) => current < maximum,
        (Some(_), None) => true,
        (None, _) => false,
    };
    if below_hard {
        let _ = rustix::process::setrlimit(
            Resource::Nofile,
            Rlimit {
                current: lim.maximum,
                maximum: lim.maximum,
            },
        );
    }
}

pub(crate) struct MountInfo {
    mountpoint: PathBuf,
    pub(crate) minor: u32,
}

/// The topmost kache mount at `mountpoint`, from `/proc/self/mountinfo` (never touches the
/// mount itself, so a dead server cannot block it).
pub(crate) fn find_mount(mountpoint: &Path) -> io::Result<Option<MountInfo>> {
    let wanted = match (mountpoint.parent(), mountpoint.file_name()) {
        (Some(parent), Some(name)) => std::fs::canonicalize(parent)
            .unwrap_or_else(|_| parent.to_path_buf())
            .join(name),
        _ => mountpoint.to_path_buf(),
    };
    let table = std::fs::read_to_string("/proc/self/mountinfo")?;
    let mut found = None;
    for line in table.lines() {
        let fields: Vec<&str> = line.split(' ').collect();
        let Some(sep) = fields.iter().position(|f| *f == "-") else {
            continue;
        };
        let (Some(devs), Some(point), Some(fstype), Some(source)) = (
            fields.get(2),
            fields.get(4),
            fields.get(sep + 1),
            fields.get(sep + 2),
        ) else {
            continue;
        };
        // A direct mount(2) shows type `fuse` with our source name; fusermount3 `fuse.kache`.
        let ours = *fstype == "fuse.kache" || (*fstype == "fuse" && *source == FS_NAME);
        if !ours || Path::new(&unescape(point)) != wanted {
            continue;
        }
        let minor = devs
            .split(':')
            .nth(1)
            .and_then(|m| m.parse().ok())
            .unwrap_or(0);
        found = Some(MountInfo {
            mountpoint: wanted.clone(),
            minor,
        });
    }
    Ok(found)
}

/// mountinfo escapes space, tab, newline and backslash as `\ooo`.
fn unescape(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\'
            && i + 3 < bytes.len()
            && bytes[i + 1..i + 4].iter().all(u8::is_ascii_digit)
        {
            let code = u8::from_str_radix(&field[i + 1..i + 4], 8).unwrap_or(b'?');
            out.push(code);
            i += 4;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn abort_connection(minor: u32) {
    let dir = Path::new("/sys/fs/fuse/connections");
    if !dir.join(minor.to_string()).exists() {
        let _ = rustix::mount::mount(
            c"fusectl",
            c"/sys/fs/fuse/connections",
            c"fusectl",
            MountFlags::empty(),
            None,
        );
    }
    let _ = std::fs::write(dir.join(minor.to_string()).join("abort"), b"1");
}

/// A read-only view of the blob directory: bind-mounted read-only, opened, then detached at
/// once, so it lives exactly as long as the returned descriptor (nothing is left in the mount
/// table if the server dies). Blobs opened through it cannot be written even by root, so a
/// mistake fails with EROFS instead of corrupting the store.
fn read_only_view(source: &Path, target: &Path) -> io::Result<OwnedFd> {
    std::fs::create_dir_all(target)?;
    rustix::mount::mount_bind(source, target)?;
    let view = rustix::mount::mount_remount(target, MountFlags::BIND | MountFlags::RDONLY, c"")
        .map_err(io::Error::from)
        .and_then(|()| {
            let target = sys::cstr(target.as_os_str())?;
            sys::openat(CWD, &target, OFlags::PATH | OFlags::DIRECTORY, 0)
        });
    let _ = rustix::mount::unmount(target, UnmountFlags::DETACH);
    view
}
