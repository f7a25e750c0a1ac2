//! The remote tier (S3-compatible object storage, shared directory).
//!
//! The compile pipeline calls exactly two functions here, each taking the
//! store and the configuration and returning what happened (the caller
//! counts it):
//! - [`import`]: after a local miss, fetch the manifest of a direct key (and
//!   the entries and blobs it names) or the entry of a result key into the
//!   local store, within the configured time budget;
//! - [`queue_upload`]: after a miss stored locally, queue the manifest (if
//!   any), the entry and its blobs for asynchronous upload.
//!
//! Uploads happen in [`drain_spool`] (`kache remote drain`, the daemon, or a
//! detached drainer the wrapper starts), never in a build's critical path.
//!
//! Remote layout (the format version is part of every path):
//! ```text
//! <prefix>/v1/blobs/ab/<blake3>      file contents, named by their hash
//! <prefix>/v1/entries/ab/<key>       result key → entry (self-checking format)
//! <prefix>/v1/manifests/ab/<key>     direct key → manifest JSON + blake3 trailer
//! ```
//! Local state of the remote tier lives in `$KACHE_DIR/remote/` (spool,
//! negative cache, breaker, per-key locks).
//!
//! Trust: nothing downloaded is used before it is checked: names must be
//! 64-hex hashes or single safe file names, sizes are bounded before bytes are
//! read, every blob is re-hashed against its name, entries go through the
//! self-checking decoder. A remote that lies produces a miss with a reason and
//! never writes anything outside the store. Until `remote.url` is set, every
//! function here returns at once.

pub mod backend;
pub mod cli;
pub mod fetch;
pub mod local;
pub mod spool;

use std::path::PathBuf;
use std::time::Duration;

use crate::config::Config;
use crate::stats::{Breakdown, Counter, Tally};
use crate::store::{is_valid_hash, Store};

pub use fetch::{Kind, Outcome};
pub use spool::{drain_spool, DrainReport};

/// The format version in every remote path.
pub const LAYOUT: &str = "v1";

/// Where the objects live.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// `s3://bucket/prefix`
    S3 { bucket: String, prefix: String },
    /// `file:///path`: a shared directory (NFS, SMB, a local disk).
    Dir(PathBuf),
}

/// The remote configuration, resolved from `[remote]` keys and the standard
/// AWS variables.
#[derive(Debug, Clone)]
pub struct RemoteConfig {
    pub url: String,
    pub target: Target,
    pub endpoint: String,
    pub region: String,
    pub access_key_id: String,
    pub secret_access_key: String,
    pub session_token: String,
    pub ec2_metadata: bool,
    pub read_only: bool,
    /// Hard budget of one lookup made for a compile.
    pub budget: Duration,
    /// Limit of one background transfer (upload, status listing).
    pub transfer_timeout: Duration,
    pub max_blob: u64,
    pub max_meta: u64,
    pub negative_ttl: Duration,
    pub breaker_failures: u64,
    pub breaker_cooldown: Duration,
    pub background_drain: bool,
}

/// Parses `s3://bucket/prefix` or `file:///path`.
pub fn parse_url(url: &str) -> Result<Target, String> {
    if let Some(rest) = url.strip_prefix("s3://") {
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        if bucket.is_empty() {
            return Err(format!("remote.url {url:?} names no bucket"));
        }
        let prefix = prefix.trim_matches('/');
        if prefix.split('/').any(|c| c == ".." || c == ".") {
            return Err(format!(
                "remote.url {url:?}: prefix must not contain . or .."
            ));
        }
        return Ok(Target::S3 {
            bucket: bucket.to_string(),
            prefix: prefix.to_string(),
        });
    }
    if let Some(path) = url.strip_prefix("file://") {
        let p = PathBuf::from(path);
        if !p.is_absolute() {
            return Err(format!("remote.url {url:?}: use file:///absolute/path"));
        }
        return Ok(Target::Dir(p));
    }
    Err(format!(
        "remote.url {url:?} is neither s3://bucket/prefix nor file:///path"
    ))
}

fn first_env(names: &[&str]) -> String {
    names
        .iter()
        .filter_map(|n| std::env::var(n).ok())
        .find(|v| !v.is_empty())
        .unwrap_or_default()
}

impl RemoteConfig {
    /// `None` when no remote is configured; `Some(Err)` when it is but the
    /// URL is unusable.
    pub fn from_config(c: &Config) -> Option<Result<RemoteConfig, String>> {
        let url = c.str("remote.url").trim().to_string();
        if url.is_empty() {
            return None;
        }
        let target = match parse_url(&url) {
            Ok(t) => t,
            Err(e) => return Some(Err(e)),
        };
        let or_env = |key: &str, vars: &[&str]| {
            let v = c.str(key);
            if v.is_empty() {
                first_env(vars)
            } else {
                v.to_string()
            }
        };
        let mut region = or_env("remote.region", &["AWS_REGION", "AWS_DEFAULT_REGION"]);
        if region.is_empty() {
            region = "us-east-1".into();
        }
        Some(Ok(RemoteConfig {
            url,
            target,
            endpoint: or_env(
                "remote.endpoint",
                &["AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL"],
            ),
            region,
            // Empty: opendal's signer reads AWS_ACCESS_KEY_ID & co. and the
            // profile files itself.
            access_key_id: c.str("remote.access_key_id").to_string(),
            secret_access_key: c.str("remote.secret_access_key").to_string(),
            session_token: c.str("remote.session_token").to_string(),
            ec2_metadata: c.bool("remote.ec2_metadata"),
            read_only: c.bool("remote.read_only"),
            budget: Duration::from_millis(c.int("remote.timeout_ms").max(1)),
            transfer_timeout: Duration::from_millis(c.int("remote.transfer_timeout_ms").max(1)),
            max_blob: c.int("remote.max_blob_size"),
            max_meta: c.int("remote.max_entry_size"),
            negative_ttl: Duration::from_secs(c.int("remote.negative_ttl_s")),
            breaker_failures: c.int("remote.breaker_failures").max(1),
            breaker_cooldown: Duration::from_secs(c.int("remote.breaker_cooldown_s")),
            background_drain: c.bool("remote.background_drain"),
        }))
    }
}

// ------------------------------------------------------------------ layout

fn shard(kind: &str, name: &str) -> String {
    format!("{LAYOUT}/{kind}/{}/{name}", &name[..2])
}

/// Remote path of a blob. `hash` must have passed [`is_valid_hash`].
pub fn blob_path(hash: &str) -> String {
    shard("blobs", hash)
}

pub fn entry_path(key: &str) -> String {
    shard("entries", key)
}

pub fn manifest_path(key: &str) -> String {
    shard("manifests", key)
}

/// An output name from a downloaded entry is usable only as one plain file
/// name: no separators, no `.`/`..`, no control characters, not too long.
pub fn is_safe_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 255
        && name != "."
        && name != ".."
        && !name
            .chars()
            .any(|c| c == '/' || c == '\\' || c == ':' || c.is_control())
}

/// An output mode from a downloaded entry is usable only as plain permission
/// bits its owner can read: a restore reproduces the mode it is given, so a
/// setuid, setgid or sticky bit would arrive on a file in the worktree, and
/// an unreadable output would fail the build that restored it.
pub fn is_safe_mode(mode: u32) -> bool {
    mode & !0o777 == 0 && mode & 0o400 != 0
}

// ------------------------------------------------------------- the hooks

/// The remote configuration, when one is set and usable.
fn configured(config: &Config) -> Option<RemoteConfig> {
    match RemoteConfig::from_config(config)? {
        Ok(rc) => Some(rc),
        Err(e) => {
            tracing::debug!("remote disabled: {e}");
            None
        }
    }
}

impl Outcome {
    /// The counters this lookup's outcome adds.
    pub fn tally(&self) -> Tally {
        let mut t = Tally::default();
        match self {
            Outcome::Imported { bytes_down, .. } => {
                t.add_store(Counter::RemoteImported, 1);
                t.add_store(Counter::RemoteBytesDown, *bytes_down);
            }
            Outcome::Miss { reason, bytes_down } => {
                t.add_store(Counter::RemoteMisses, 1);
                t.add_label(None, Breakdown::RemoteMissReasons, reason);
                t.add_store(Counter::RemoteBytesDown, *bytes_down);
            }
            Outcome::Error { reason } => {
                t.add_store(Counter::RemoteErrors, 1);
                t.add_label(None, Breakdown::RemoteErrorReasons, reason);
            }
        }
        t
    }
}

/// After a local miss: imports the manifest of a direct key
/// ([`Kind::Manifest`]) or the entry of a result key ([`Kind::Entry`]), and
/// what it references. Never blocks longer than `remote.timeout_ms`.
/// `None` when no remote is configured (nothing was asked).
pub fn import(store: &Store, config: &Config, kind: Kind, key: &str) -> Option<Outcome> {
    let rc = configured(config)?;
    if !is_valid_hash(key) {
        return None;
    }
    let o = fetch::lookup(store, &rc, kind, key);
    match &o {
        Outcome::Imported { bytes_down, .. } => {
            tracing::debug!(?kind, key, bytes_down, "remote: imported")
        }
        Outcome::Miss { reason, .. } => tracing::debug!(?kind, key, "remote miss: {reason}"),
        Outcome::Error { reason } => tracing::debug!(?kind, key, "remote error: {reason}"),
    }
    Some(o)
}

/// What [`queue_upload`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Upload {
    Queued,
    AlreadyQueued,
    /// The spool could not be written.
    Failed,
}

impl Upload {
    pub fn tally(&self) -> Tally {
        let mut t = Tally::default();
        match self {
            Upload::Queued => t.add_store(Counter::RemoteQueued, 1),
            Upload::AlreadyQueued => {}
            Upload::Failed => {
                t.add_store(Counter::RemoteErrors, 1);
                t.add_label(None, Breakdown::RemoteErrorReasons, "spool-write");
            }
        }
        t
    }
}

/// After a miss stored locally: queues `direct`'s manifest (when given),
/// entry `result` and its blobs for upload. Returns at once: the build never
/// waits for an upload. `None` when there is no (writable) remote.
pub fn queue_upload(
    store: &Store,
    config: &Config,
    direct: Option<&str>,
    result: &str,
) -> Option<Upload> {
    let rc = configured(config)?;
    if rc.read_only || !is_valid_hash(result) || direct.is_some_and(|d| !is_valid_hash(d)) {
        return None;
    }
    let done = match spool::enqueue(store, direct, result) {
        Ok(true) => Upload::Queued,
        Ok(false) => Upload::AlreadyQueued,
        Err(e) => {
            tracing::debug!(result, "cannot queue upload: {e}");
            return Some(Upload::Failed);
        }
    };
    tracing::debug!(direct, result, "remote: upload {done:?}");
    if rc.background_drain {
        spool::start_background_drain(store);
    }
    Some(done)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_parse_into_targets_and_bad_ones_are_refused() {
        assert_eq!(
            parse_url("s3://bkt/team/cache/").unwrap(),
            Target::S3 {
                bucket: "bkt".into(),
                prefix: "team/cache".into()
            }
        );
        assert_eq!(
            parse_url("s3://bkt").unwrap(),
            Target::S3 {
                bucket: "bkt".into(),
                prefix: "".into()
            }
        );
        assert_eq!(
            parse_url("file:///srv/kache").unwrap(),
            Target::Dir("/srv/kache".into())
        );
        for bad in ["s3://", "s3:///x", "file://rel", "http://x", "s3://b/../x"] {
            assert!(parse_url(bad).is_err(), "{bad} accepted");
        }
    }

    #[test]
    fn only_single_plain_file_names_are_safe() {
        for ok in ["libx-abc.rlib", "x.d", "app-0123", "obj"] {
            assert!(is_safe_name(ok), "{ok}");
        }
        for bad in [
            "",
            ".",
            "..",
            "a/b",
            "../x",
            "/etc/passwd",
            "a\\b",
            "c:x",
            "a\nb",
        ] {
            assert!(!is_safe_name(bad), "{bad:?}");
        }
    }

    #[test]
    fn only_plain_readable_modes_are_safe() {
        for ok in [0o644, 0o755, 0o444, 0o555, 0o600, 0o700] {
            assert!(is_safe_mode(ok), "{ok:o}");
        }
        for bad in [
            0o4755,
            0o2755,
            0o1777,
            0o6777,
            0o000,
            0o044,
            0o200,
            0o100000 | 0o644,
        ] {
            assert!(!is_safe_mode(bad), "{bad:o}");
        }
    }

    #[test]
    fn paths_carry_the_layout_version_and_a_shard() {
        let h = "ab".repeat(32);
        assert_eq!(blob_path(&h), format!("v1/blobs/ab/{h}"));
        assert_eq!(entry_path(&h), format!("v1/entries/ab/{h}"));
        assert_eq!(manifest_path(&h), format!("v1/manifests/ab/{h}"));
    }
}
