//! Surviving the death of a mount's server: a *keeper* process holds the mount's FUSE
//! connection, and takes over serving it when the server dies.
//!
//! When the last descriptor of a FUSE connection closes, the kernel aborts it: every request in
//! flight fails (ECONNABORTED), every later access to the mount fails (ENOTCONN), and a build
//! in the middle of writing its target fails with it. So the server hands a duplicate of its
//! `/dev/fuse` descriptor to a small child, the keeper, which does nothing but wait. If the
//! server dies (SIGKILL, the OOM killer, a crash), the connection lives on in the keeper: the
//! kernel queues new requests, and the keeper becomes the server ([`crate::resume`]): it serves
//! the same descriptor and asks the kernel to send again the requests the dead server had read
//! but not answered (FUSE_NOTIFY_RESEND, Linux 6.9). Processes using the mount only wait.
//!
//! Owns: the hand-over of the descriptor (SCM_RIGHTS over a socket that is the keeper's stdin),
//! the keeper's wait, and its decision. Must never: read from the descriptor while waiting (it
//! would take requests nobody answers), or take over a mount that was unmounted on purpose.

use std::io::{self, IoSlice, IoSliceMut};
use std::mem::MaybeUninit;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};

use rustix::net::{
    RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags, SendAncillaryBuffer,
    SendAncillaryMessage, SendFlags,
};

use crate::mount::{find_mount, MountHandle};

/// What the server writes to its keeper before it ends on purpose.
const DISMISS: u8 = b'q';

/// The server's side of its keeper.
pub struct Keeper {
    child: Child,
    socket: UnixStream,
}

impl Keeper {
    /// Starts `command` (a process that calls [`keep`]) with a duplicate of the mount's FUSE
    /// descriptor. Its stdin is the socket the descriptor comes through; its end of file is
    /// how the keeper learns that the server is gone.
    pub fn spawn(handle: &MountHandle, mut command: Command) -> io::Result<Keeper> {
        let (ours, theirs) = UnixStream::pair()?;
        command.stdin(Stdio::from(OwnedFd::from(theirs)));
        let child = command.spawn()?;
        // The command holds its copy of `theirs` until dropped: the keeper must see only ours.
        drop(command);
        let fds = [handle.device()];
        let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(1))];
        let mut control = SendAncillaryBuffer::new(&mut space);
        control.push(SendAncillaryMessage::ScmRights(&fds));
        let sent = rustix::net::sendmsg(
            &ours,
            &[IoSlice::new(b"f")],
            &mut control,
            SendFlags::empty(),
        );
        let keeper = Keeper {
            child,
            socket: ours,
        };
        if let Err(e) = sent {
            keeper.dismiss();
            return Err(e.into());
        }
        Ok(keeper)
    }

    /// The keeper's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Whether the keeper has exited (then the server should start another).
    pub fn exited(&mut self) -> bool {
        !matches!(self.child.try_wait(), Ok(None))
    }

    /// Tells the keeper the server ends on purpose, and waits for it to exit.
    pub fn dismiss(mut self) {
        use std::io::Write;
        let _ = self.socket.write_all(&[DISMISS]);
        drop(self.socket);
        let _ = self.child.wait();
    }
}

/// The keeper's side: takes the descriptor from stdin and waits for the server to go. Returns
/// the descriptor when the server died and its mount is still there (the caller takes over),
/// `None` when the server ended on purpose or the mount is gone.
pub fn keep(mountpoint: &Path) -> io::Result<Option<OwnedFd>> {
    let stdin = io::stdin();
    let socket = stdin.as_fd();
    let mut byte = [0u8; 1];
    let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(1))];
    let mut control = RecvAncillaryBuffer::new(&mut space);
    let got = rustix::net::recvmsg(
        socket,
        &mut [IoSliceMut::new(&mut byte)],
        &mut control,
        RecvFlags::CMSG_CLOEXEC,
    )?;
    let mut device = None;
    for message in control.drain() {
        if let RecvAncillaryMessage::ScmRights(fds) = message {
            for fd in fds {
                device.get_or_insert(fd);
            }
        }
    }
    let Some(device) = device.filter(|_| got.bytes == 1) else {
        return Err(io::Error::other("the mount server sent no FUSE descriptor"));
    };
    // The connection this descriptor belongs to, as the mount table names it.
    let connection = find_mount(mountpoint)?.map(|m| m.minor);
    // Wait for a word from the server or its end (end of file: all its descriptors closed).
    let word = loop {
        match rustix::io::read(socket, &mut byte) {
            Ok(n) => break n,
            Err(rustix::io::Errno::INTR) => continue,
            Err(e) => return Err(e.into()),
        }
    };
    if word != 0 {
        // DISMISS, or anything else: the server is alive and means it.
        return Ok(None);
    }
    // The server died. Take over only the same connection, still mounted at the same place:
    // an unmount (even a forced one) removes it from the mount table first.
    let now = find_mount(mountpoint)?.map(|m| m.minor);
    if connection.is_none() || now != connection {
        return Ok(None);
    }
    Ok(Some(device))
}
