//! The daemon's wire protocol: one JSON object per line each way, every
//! message carrying the kache `version` and the `protocol` number.
//!
//! A request is `{"version":"0.1.0","protocol":1,"request":"status", …}`;
//! the answer is one [`Response`] line. Unknown requests get an error
//! answer, never a dropped connection, so an older daemon tells a newer
//! client what it does not understand.
//!
//! Extension point: a new request (mount, unmount, remote upload drain …) is
//! one variant of [`Request`] plus a [`super::Task::handle`] that answers it.

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Bumped when a message changes shape incompatibly.
pub const PROTOCOL: u32 = 1;

/// The version of this kache binary (what `doctor` compares).
pub fn kache_version() -> &'static str {
    env!("CARGO_PKG_VERSION")
}

/// What a client asks of the daemon.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "request", rename_all = "snake_case")]
pub enum Request {
    /// Is anyone there? Answered at once.
    Ping,
    /// Pid, binary, store, uptime and the state of every background task.
    Status,
    /// Stop the daemon (tasks are stopped first).
    Shutdown,
    /// Run an eviction pass now.
    Gc,
    // Add variants for your subsystem here (e.g. `Mount { worktree: PathBuf }`,
    // `UploadDrain`) and answer them in your task's `handle`.
}

/// A request as it travels: the request plus the sender's version.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Envelope {
    pub version: String,
    pub protocol: u32,
    #[serde(flatten)]
    pub request: Request,
}

impl Envelope {
    pub fn new(request: Request) -> Envelope {
        Envelope {
            version: kache_version().to_string(),
            protocol: PROTOCOL,
            request,
        }
    }
}

/// The daemon's answer.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Response {
    /// The daemon's kache version.
    pub version: String,
    #[serde(default)]
    pub protocol: u32,
    #[serde(default)]
    pub ok: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Request-specific payload (for `status`: see `server::status`).
    #[serde(default)]
    pub data: Value,
}

impl Response {
    pub fn ok(data: Value) -> Response {
        Response {
            version: kache_version().to_string(),
            protocol: PROTOCOL,
            ok: true,
            error: None,
            data,
        }
    }

    pub fn error(msg: impl Into<String>) -> Response {
        Response {
            version: kache_version().to_string(),
            protocol: PROTOCOL,
            ok: false,
            error: Some(msg.into()),
            data: Value::Null,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_are_tagged_lines_with_a_version() {
        let line = serde_json::to_string(&Envelope::new(Request::Status)).unwrap();
        assert!(line.contains("\"request\":\"status\""));
        assert!(line.contains("\"version\""));
        let back: Envelope = serde_json::from_str(&line).unwrap();
        assert_eq!(back.request, Request::Status);
        assert!(serde_json::from_str::<Envelope>(
            r#"{"version":"9","protocol":1,"request":"launch_rockets"}"#
        )
        .is_err());
    }
}
