//! The background daemon: one per store, optional, never on the build's path.
//!
//! It owns `$KACHE_DIR/daemon.lock` (single instance: whoever holds the lock
//! is the daemon; the lock file holds its pid) and serves newline-delimited
//! JSON on `$KACHE_DIR/daemon.sock` ([`protocol`]). It runs background
//! [`Task`]s (periodic eviction today; mounts and remote uploads plug in
//! here), and re-executes itself when its binary file is replaced.
//!
//! The wrapper never depends on it: a client connects with a short bound
//! ([`client::notify`]) and carries on alone when nobody answers. This module
//! must never hold a store lock across a client's request.

pub mod client;
mod mounts;
pub mod protocol;
pub mod server;

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::env::Context;
use crate::store::Store;

pub use protocol::{Request, Response};

/// Files of the daemon inside a store.
#[derive(Debug, Clone)]
pub struct Paths {
    pub socket: PathBuf,
    pub lock: PathBuf,
    pub log: PathBuf,
}

pub fn paths(store_dir: &Path) -> Paths {
    Paths {
        socket: store_dir.join("daemon.sock"),
        lock: store_dir.join("daemon.lock"),
        log: store_dir.join("daemon.log"),
    }
}

/// What a task sees of the daemon.
pub struct DaemonCtx {
    pub ctx: Context,
    pub store: Store,
}

/// A background job of the daemon. Tasks are ticked one after another on
/// one thread; a task whose work is slow or blocking (network, FUSE
/// serving) starts its own threads in `start` and keeps `tick` short.
pub trait Task: Send {
    fn name(&self) -> &'static str;
    /// Time between two ticks.
    fn interval(&self) -> Duration;
    /// Called once when the daemon starts (e.g. remount persisted mounts).
    fn start(&mut self, _d: &DaemonCtx) {}
    /// Periodic work; the error is shown by `kache daemon status`.
    fn tick(&mut self, d: &DaemonCtx) -> Result<(), String>;
    /// Answers a request this task owns; `None` passes it on.
    fn handle(&mut self, _d: &DaemonCtx, _req: &Request) -> Option<Response> {
        None
    }
    /// Called before the daemon exits or re-executes itself (upgrade).
    fn stop(&mut self, _d: &DaemonCtx) {}
}

/// Every background task the daemon runs. Register a subsystem's task here
/// (mount server, remote upload drain): one line each.
pub fn registry() -> Vec<Box<dyn Task>> {
    vec![
        Box::new(Eviction),
        Box::new(mounts::MountSupervisor::default()),
        Box::new(RemoteDrain::default()),
    ]
}

/// Drains the remote upload spool in the background, so uploads continue
/// (and resume after a restart) without any build waiting for them.
#[derive(Default)]
struct RemoteDrain {
    running: Option<std::thread::JoinHandle<()>>,
}

impl Task for RemoteDrain {
    fn name(&self) -> &'static str {
        "remote-drain"
    }

    fn interval(&self) -> Duration {
        Duration::from_secs(10)
    }

    fn tick(&mut self, d: &DaemonCtx) -> Result<(), String> {
        if self.running.as_ref().is_some_and(|h| !h.is_finished()) {
            return Ok(());
        }
        let config = match Context::load() {
            Ok(c) => c.config,
            Err(_) => d.ctx.config.clone(),
        };
        if config.str("remote.url").is_empty() {
            return Ok(());
        }
        let store = d.store.clone();
        // drain_spool blocks on the network: keep it off the task thread.
        self.running = Some(std::thread::spawn(move || {
            let _ = crate::remote::drain_spool(&store, &config);
        }));
        Ok(())
    }

    fn stop(&mut self, _d: &DaemonCtx) {
        if let Some(h) = self.running.take() {
            let _ = h.join();
        }
    }
}

/// Keeps the store under `cache.max_size` (the wrappers also collect on
/// their own when they notice the limit is passed; this catches the rest
/// and keeps that work off the build).
struct Eviction;

impl Task for Eviction {
    fn name(&self) -> &'static str {
        "eviction"
    }

    fn interval(&self) -> Duration {
        Duration::from_secs(300)
    }

    fn tick(&mut self, d: &DaemonCtx) -> Result<(), String> {
        // Re-read the configuration: the limit may have changed.
        let limit = match Context::load() {
            Ok(c) => c.config.max_size(),
            Err(_) => d.ctx.config.max_size(),
        };
        let Some(limit) = limit else { return Ok(()) };
        if d.store.usage().bytes <= limit {
            return Ok(());
        }
        crate::gc::collect(&d.store, limit, false)
            .map(|_| ())
            .map_err(|e| e.to_string())
    }

    fn handle(&mut self, d: &DaemonCtx, req: &Request) -> Option<Response> {
        if *req != Request::Gc {
            return None;
        }
        let Some(limit) = d.ctx.config.max_size() else {
            return Some(Response::ok(serde_json::json!({ "limit": null })));
        };
        Some(match crate::gc::collect(&d.store, limit, true) {
            Ok(_) => Response::ok(serde_json::json!({ "limit": limit })),
            Err(e) => Response::error(e.to_string()),
        })
    }
}
