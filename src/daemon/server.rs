//! `kache daemon run`: the daemon process itself.
//!
//! Start-up order matters for "one daemon per store": take the lock first
//! (a loser exits quietly), only then remove a stale socket left by a killed
//! predecessor and bind a fresh one. A thread per connection answers
//! requests; one thread ticks the tasks and watches for three reasons to
//! stop: the binary was replaced (re-exec: upgrade), the socket file was
//! removed or replaced (someone else owns the store now), or the store
//! directory is gone.

use std::io::{self, BufRead, BufReader, Write};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use kache_platform::ipc::{self, Listener};
use kache_platform::process::reexec;
use kache_platform::service::file_fingerprint;
use kache_platform::{FileLock, LockMode};
use serde_json::json;

use super::protocol::{Envelope, Request, Response};
use super::{paths, registry, DaemonCtx, Task};
use crate::env::Context;

/// How often the watcher looks at the binary, the socket and the store.
const WATCH_EVERY: Duration = Duration::from_millis(500);

/// Why `run` returned without serving.
#[derive(Debug)]
pub enum RunError {
    /// Another daemon holds the lock of this store.
    AlreadyRunning,
    Io(io::Error),
}

impl From<io::Error> for RunError {
    fn from(e: io::Error) -> Self {
        RunError::Io(e)
    }
}

struct TaskSlot {
    task: Box<dyn Task>,
    next: Instant,
    runs: u64,
    last_error: Option<String>,
}

struct Daemon {
    d: DaemonCtx,
    tasks: Mutex<Vec<TaskSlot>>,
    started: SystemTime,
    exe: PathBuf,
    socket: PathBuf,
    socket_ident: Option<(u64, u64)>,
    stopping: AtomicBool,
    _lock: FileLock,
}

/// Serves until asked to stop. Returns `AlreadyRunning` at once when another
/// daemon owns the store.
pub fn run(ctx: Context) -> Result<(), RunError> {
    let store = ctx.open_store()?;
    let p = paths(&ctx.store_dir);
    // A client checking who holds the lock takes it shared for an instant,
    // and a predecessor whose socket was removed needs up to one watch
    // period to notice and leave: do not mistake either for a live daemon.
    let mut lock = None;
    for _ in 0..60 {
        lock = FileLock::try_acquire(&p.lock, LockMode::Exclusive)?;
        if lock.is_some() {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let Some(lock) = lock else {
        return Err(RunError::AlreadyRunning);
    };
    {
        let mut f = lock.file();
        f.set_len(0)?;
        writeln!(f, "{}", std::process::id())?;
    }
    // We hold the lock, so whatever is at the socket path is a leftover.
    ipc::remove_endpoint(&p.socket)?;
    let listener = Listener::bind(&p.socket)?;
    let ident = ipc::endpoint_identity(&p.socket);
    let exe = std::env::current_exe()?;
    let exe_print = file_fingerprint(&exe);

    let mut tasks: Vec<TaskSlot> = registry()
        .into_iter()
        .map(|task| TaskSlot {
            next: Instant::now() + task.interval(),
            task,
            runs: 0,
            last_error: None,
        })
        .collect();
    let d = DaemonCtx { ctx, store };
    for t in &mut tasks {
        t.task.start(&d);
    }
    let daemon = Arc::new(Daemon {
        d,
        tasks: Mutex::new(tasks),
        started: SystemTime::now(),
        exe: exe.clone(),
        socket: p.socket.clone(),
        socket_ident: ident,
        stopping: AtomicBool::new(false),
        _lock: lock,
    });
    eprintln!(
        "kache daemon {} (pid {}) serving {}",
        super::protocol::kache_version(),
        std::process::id(),
        p.socket.display()
    );

    let watcher = Arc::clone(&daemon);
    std::thread::spawn(move || loop {
        std::thread::sleep(WATCH_EVERY);
        if file_fingerprint(&watcher.exe).is_some_and(|f| Some(f) != exe_print) {
            eprintln!("kache daemon: binary replaced; restarting");
            watcher.shutdown(true);
        }
        if ipc::endpoint_identity(&watcher.socket) != watcher.socket_ident {
            eprintln!("kache daemon: socket removed or replaced; exiting");
            watcher.shutdown(false);
        }
        if !watcher.d.store.root().is_dir() {
            watcher.shutdown(false);
        }
        watcher.tick_due();
    });

    loop {
        match listener.accept() {
            Ok(stream) => {
                let dm = Arc::clone(&daemon);
                std::thread::spawn(move || dm.serve(stream));
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => {
                eprintln!("kache daemon: accept failed: {e}");
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    }
}

impl Daemon {
    fn tick_due(&self) {
        let Ok(mut tasks) = self.tasks.lock() else {
            return;
        };
        let now = Instant::now();
        for slot in tasks.iter_mut().filter(|s| s.next <= now) {
            slot.last_error = slot.task.tick(&self.d).err();
            slot.runs += 1;
            slot.next = Instant::now() + slot.task.interval();
        }
    }

    /// Answers requests on one connection until the client hangs up.
    fn serve(&self, stream: ipc::Stream) {
        let _ = stream.set_read_timeout(Some(Duration::from_secs(60)));
        let Ok(mut out) = stream.try_clone() else {
            return;
        };
        let mut reader = BufReader::new(stream);
        let mut line = String::new();
        loop {
            line.clear();
            match reader.read_line(&mut line) {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
            let (resp, then_stop) = match serde_json::from_str::<Envelope>(line.trim()) {
                Ok(env) => self.handle(env.request),
                Err(e) => (Response::error(format!("bad request: {e}")), false),
            };
            let mut text = serde_json::to_string(&resp).unwrap_or_default();
            text.push('\n');
            if out.write_all(text.as_bytes()).is_err() {
                return;
            }
            let _ = out.flush();
            if then_stop {
                self.shutdown(false);
            }
        }
    }

    fn handle(&self, req: Request) -> (Response, bool) {
        match req {
            Request::Ping => (Response::ok(json!({ "pid": std::process::id() })), false),
            Request::Status => (Response::ok(self.status()), false),
            Request::Shutdown => (Response::ok(json!({ "stopping": true })), true),
            other => {
                let Ok(mut tasks) = self.tasks.lock() else {
                    return (Response::error("daemon state poisoned"), false);
                };
                for slot in tasks.iter_mut() {
                    if let Some(r) = slot.task.handle(&self.d, &other) {
                        return (r, false);
                    }
                }
                (
                    Response::error(format!("unhandled request {other:?}")),
                    false,
                )
            }
        }
    }

    fn status(&self) -> serde_json::Value {
        let tasks: Vec<serde_json::Value> = self
            .tasks
            .lock()
            .map(|t| {
                t.iter()
                    .map(|s| {
                        json!({
                            "name": s.task.name(),
                            "runs": s.runs,
                            "last_error": s.last_error,
                        })
                    })
                    .collect()
            })
            .unwrap_or_default();
        let secs = |t: SystemTime| t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
        json!({
            "pid": std::process::id(),
            "binary": self.exe,
            "store": self.d.store.root(),
            "started": secs(self.started),
            "uptime_s": self.started.elapsed().map_or(0, |d| d.as_secs()),
            "tasks": tasks,
        })
    }

    /// Stops every task, removes our socket, then exits or re-executes the
    /// (new) binary. Only the first caller does anything.
    fn shutdown(&self, restart: bool) {
        if self.stopping.swap(true, Ordering::SeqCst) {
            return;
        }
        if let Ok(mut tasks) = self.tasks.lock() {
            for slot in tasks.iter_mut() {
                slot.task.stop(&self.d);
            }
        }
        if restart {
            // The new image removes our socket itself once it holds the lock.
            let err = reexec(&self.exe, &["daemon".into(), "run".into()]);
            eprintln!("kache daemon: cannot restart: {err}");
        }
        // Remove the socket only if it is still ours (not a successor's).
        if ipc::endpoint_identity(&self.socket) == self.socket_ident {
            let _ = ipc::remove_endpoint(&self.socket);
        }
        std::process::exit(0);
    }
}
