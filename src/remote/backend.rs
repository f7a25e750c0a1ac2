//! The one storage interface of the remote tier, over opendal's S3 and
//! filesystem services, driven by a small current-thread tokio runtime that
//! lives only inside this module's callers (no runtime leaks into the
//! wrapper). Every operation here is bounded by a caller's timeout; nothing
//! here interprets object contents (that is `fetch`'s job).

use std::future::Future;
use std::time::Duration;

use opendal::{ErrorKind, Operator};

use super::{RemoteConfig, Target};

/// What a bounded read found.
#[derive(Debug)]
pub enum Got {
    Found(Vec<u8>),
    NotFound,
    /// The object is larger than the caller allows; nothing more was read.
    TooLarge,
}

/// A failure talking to the remote (not a missing object).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RemoteError {
    Timeout,
    /// Server or network failure, with a short kind for counters.
    Io(String),
}

impl RemoteError {
    /// A short stable label for counters.
    pub fn label(&self) -> String {
        match self {
            RemoteError::Timeout => "timeout".into(),
            RemoteError::Io(k) => k.clone(),
        }
    }
}

impl std::fmt::Display for RemoteError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RemoteError::Timeout => write!(f, "remote timed out"),
            RemoteError::Io(e) => write!(f, "remote error: {e}"),
        }
    }
}

impl std::error::Error for RemoteError {}

fn io_err(e: opendal::Error) -> RemoteError {
    let kind = match e.kind() {
        ErrorKind::PermissionDenied => "permission-denied",
        ErrorKind::RateLimited => "rate-limited",
        ErrorKind::ConfigInvalid => "config-invalid",
        ErrorKind::Unexpected => "unexpected",
        _ => "io",
    };
    tracing::debug!("remote: {e}");
    RemoteError::Io(kind.to_string())
}

/// An opened remote: the operator and the runtime that drives it.
pub struct Backend {
    pub op: Operator,
    /// Always `Some` until drop.
    rt: Option<tokio::runtime::Runtime>,
}

impl Drop for Backend {
    fn drop(&mut self) {
        // Never wait for a transfer abandoned at its deadline (a hung NFS
        // read in a blocking thread): the process is about to move on.
        if let Some(rt) = self.rt.take() {
            rt.shutdown_background();
        }
    }
}

impl Backend {
    /// Builds the operator. Builds no connection: the first request does.
    pub fn open(rc: &RemoteConfig) -> Result<Backend, String> {
        let op = match &rc.target {
            Target::S3 { bucket, prefix } => {
                let mut b = opendal::services::S3::default()
                    .bucket(bucket)
                    .root(&format!("/{prefix}"))
                    .region(&rc.region)
                    // Public buckets read without credentials.
                    .allow_anonymous();
                if !rc.endpoint.is_empty() {
                    b = b.endpoint(&rc.endpoint);
                }
                if !rc.access_key_id.is_empty() {
                    b = b.access_key_id(&rc.access_key_id);
                }
                if !rc.secret_access_key.is_empty() {
                    b = b.secret_access_key(&rc.secret_access_key);
                }
                if !rc.session_token.is_empty() {
                    b = b.session_token(&rc.session_token);
                }
                if !rc.ec2_metadata {
                    // Off unless asked for: probing the metadata address from
                    // a laptop costs a timeout per process.
                    b = b.disable_ec2_metadata();
                }
                Operator::new(b).map(|o| o.finish())
            }
            Target::Dir(path) => {
                // Writes are staged in a directory beside the objects (same
                // filesystem) and renamed into place: readers on other
                // machines see a whole object or none.
                let root = path.to_string_lossy();
                let staging = path.join(".kache-staging");
                let b = opendal::services::Fs::default()
                    .root(&root)
                    .atomic_write_dir(&staging.to_string_lossy());
                Operator::new(b).map(|o| o.finish())
            }
        }
        .map_err(|e| format!("cannot open remote {}: {e}", rc.url))?;
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| format!("cannot start the remote runtime: {e}"))?;
        Ok(Backend { op, rt: Some(rt) })
    }

    /// Runs `f` to completion, or gives up after `limit`.
    pub fn run<T>(
        &self,
        limit: Duration,
        f: impl Future<Output = Result<T, RemoteError>>,
    ) -> Result<T, RemoteError> {
        let Some(rt) = &self.rt else {
            return Err(RemoteError::Io("runtime-gone".into()));
        };
        rt.block_on(async {
            tokio::time::timeout(limit, f)
                .await
                .unwrap_or(Err(RemoteError::Timeout))
        })
    }
}

/// Reads `[start, end)` of `path`, or less when the object ends sooner (one
/// ranged GET, streamed: a short object is not an error here, the caller
/// checks what it got).
async fn read_up_to(op: &Operator, path: &str, start: u64, end: u64) -> Result<Got, RemoteError> {
    use futures_core::Stream;
    use std::pin::Pin;
    let reader = match op.reader(path).await {
        Ok(r) => r,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(Got::NotFound),
        Err(e) => return Err(io_err(e)),
    };
    let mut stream = match reader.into_stream(start..end).await {
        Ok(s) => s,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(Got::NotFound),
        Err(e) if e.kind() == ErrorKind::RangeNotSatisfied => return Ok(Got::Found(Vec::new())),
        Err(e) => return Err(io_err(e)),
    };
    let mut out = Vec::new();
    loop {
        let next = std::future::poll_fn(|cx| Pin::new(&mut stream).poll_next(cx)).await;
        match next {
            None => break,
            Some(Ok(buf)) => {
                for chunk in buf {
                    out.extend_from_slice(&chunk);
                }
                if out.len() as u64 >= end - start {
                    out.truncate((end - start) as usize);
                    break;
                }
            }
            Some(Err(e)) if e.kind() == ErrorKind::NotFound => return Ok(Got::NotFound),
            Some(Err(e)) if e.kind() == ErrorKind::RangeNotSatisfied => break,
            // opendal's own length check: the object is shorter than the
            // range asked for. That is an answer, not a failure.
            Some(Err(e)) if e.to_string().contains("reader got too little data") => break,
            Some(Err(e)) => return Err(io_err(e)),
        }
    }
    Ok(Got::Found(out))
}

/// Reads at most `max` bytes of `path`; a larger object is `TooLarge`
/// without more than `max + 1` of its bytes being read.
pub async fn get_bounded(op: &Operator, path: &str, max: u64) -> Result<Got, RemoteError> {
    // Ask for one byte more than allowed: getting it proves the object is too
    // large, whatever its (untrusted) metadata says.
    Ok(
        match read_up_to(op, path, 0, max.saturating_add(1)).await? {
            Got::Found(b) if b.len() as u64 > max => Got::TooLarge,
            other => other,
        },
    )
}

/// Reads `[start, end)` of `path` (fewer bytes when the object is shorter).
pub async fn get_range(
    op: &Operator,
    path: &str,
    start: u64,
    end: u64,
) -> Result<Got, RemoteError> {
    read_up_to(op, path, start, end).await
}

pub async fn exists(op: &Operator, path: &str) -> Result<bool, RemoteError> {
    op.exists(path).await.map_err(io_err)
}

pub async fn put(op: &Operator, path: &str, bytes: Vec<u8>) -> Result<(), RemoteError> {
    op.write(path, bytes).await.map(|_| ()).map_err(io_err)
}

/// Uploads a local file in chunks (multipart on S3 for large files).
pub async fn put_file(
    op: &Operator,
    path: &str,
    file: &std::path::Path,
) -> Result<u64, RemoteError> {
    use std::io::Read;
    const CHUNK: usize = 8 << 20;
    let mut f =
        std::fs::File::open(file).map_err(|e| RemoteError::Io(format!("local:{}", e.kind())))?;
    let len = f
        .metadata()
        .map_err(|e| RemoteError::Io(format!("local:{}", e.kind())))?
        .len();
    if len as usize <= CHUNK {
        let mut buf = Vec::with_capacity(len as usize);
        f.read_to_end(&mut buf)
            .map_err(|e| RemoteError::Io(format!("local:{}", e.kind())))?;
        let n = buf.len() as u64;
        put(op, path, buf).await?;
        return Ok(n);
    }
    let mut w = op.writer_with(path).chunk(CHUNK).await.map_err(io_err)?;
    let mut total = 0u64;
    loop {
        let mut buf = vec![0u8; CHUNK];
        let mut filled = 0;
        while filled < CHUNK {
            match f.read(&mut buf[filled..]) {
                Ok(0) => break,
                Ok(n) => filled += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(RemoteError::Io(format!("local:{}", e.kind()))),
            }
        }
        if filled == 0 {
            break;
        }
        buf.truncate(filled);
        total += filled as u64;
        w.write(buf).await.map_err(io_err)?;
    }
    w.close().await.map_err(io_err)?;
    Ok(total)
}

/// Objects and bytes under `dir` (recursive listing).
pub async fn count(op: &Operator, dir: &str) -> Result<(u64, u64), RemoteError> {
    let entries = match op.list_with(dir).recursive(true).await {
        Ok(e) => e,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok((0, 0)),
        Err(e) => return Err(io_err(e)),
    };
    let mut n = 0;
    let mut bytes = 0;
    for e in entries {
        if e.metadata().is_file() {
            n += 1;
            bytes += e.metadata().content_length();
        }
    }
    Ok((n, bytes))
}
