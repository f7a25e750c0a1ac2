//! Running the real compiler: with stderr streamed through to our stderr as
//! it arrives (cargo reads rustc's artifact notifications from it to start
//! dependent crates early) and recorded at the same time.

use std::ffi::OsStr;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::process::{Command, ExitStatus, Stdio};

pub struct Captured {
    pub status: ExitStatus,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
}

/// Runs `cmd`, forwarding stdout/stderr line by line while recording them.
pub fn run_captured(mut cmd: Command) -> io::Result<Captured> {
    cmd.stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .stdin(Stdio::null());
    let mut child = cmd.spawn()?;
    let (Some(out), Some(err)) = (child.stdout.take(), child.stderr.take()) else {
        // Both were asked for as pipes; should the platform not give them,
        // reap the child and let the caller report it.
        let _ = child.wait();
        return Err(io::Error::other("the compiler's output pipes are missing"));
    };
    let out_thread = std::thread::spawn(move || forward(out, io::stdout()));
    let stderr = forward(err, io::stderr());
    let stdout = out_thread.join().unwrap_or_default();
    let status = child.wait()?;
    Ok(Captured {
        status,
        stdout,
        stderr,
    })
}

fn forward(from: impl Read, to: impl Write) -> Vec<u8> {
    let mut reader = BufReader::new(from);
    let mut to = to;
    let mut all = Vec::new();
    let mut line = Vec::new();
    loop {
        line.clear();
        match reader.read_until(b'\n', &mut line) {
            Ok(0) => break,
            Ok(_) => {
                // The user must see the compiler's output even if our own
                // stream is closed; recording continues regardless.
                let _ = to.write_all(&line);
                let _ = to.flush();
                all.extend_from_slice(&line);
            }
            Err(_) => break,
        }
    }
    all
}

/// Runs a compiler with inherited streams (passthrough).
pub fn run_inherited(program: &OsStr, args: &[std::ffi::OsString]) -> io::Result<ExitStatus> {
    Command::new(program).args(args).status()
}

/// An exit status as a process exit code (see the platform layer).
pub fn exit_code_of(status: &ExitStatus) -> i32 {
    kache_platform::process::exit_code_of(status)
}
