//! Local state that keeps a slow, dead or empty remote cheap, shared by every
//! kache process of one store through small files under `$KACHE_DIR/remote/`:
//!
//! ```text
//! remote/neg/<kind>-<key>   "not found" remembered briefly (content: unix time)
//! remote/breaker            "<consecutive failures> <open until, unix time>"
//! remote/locks/<key>        one in-flight request per key (flock)
//! remote/spool/             queued uploads (spool.rs)
//! ```
//! None of these files is ever needed for correctness: losing one costs at
//! most a repeated request.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use kache_platform::{FileLock, LockMode};

use crate::store::Store;

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Writes a small file by rename, without fsync: these files are hints,
/// and a lost one only repeats a request.
fn write_hint(tmp_dir: &Path, dest: &Path, text: &str) -> io::Result<()> {
    let tmp = kache_platform::atomic::temp_name_in(tmp_dir);
    fs::write(&tmp, text)?;
    fs::rename(&tmp, dest).inspect_err(|_| {
        let _ = fs::remove_file(&tmp);
    })
}

pub struct LocalState {
    dir: PathBuf,
    tmp: PathBuf,
}

impl LocalState {
    pub fn new(store: &Store) -> LocalState {
        LocalState {
            dir: store.root().join("remote"),
            tmp: store.tmp_dir(),
        }
    }

    fn sub(&self, name: &str) -> io::Result<PathBuf> {
        let d = self.dir.join(name);
        if !d.is_dir() {
            fs::create_dir_all(&d)?;
        }
        Ok(d)
    }

    // ------------------------------------------------------ negative cache

    fn neg_path(&self, kind: &str, key: &str) -> PathBuf {
        self.dir.join("neg").join(format!("{kind}-{key}"))
    }

    /// True when the remote said "not found" for this key less than `ttl` ago.
    pub fn is_negative(&self, kind: &str, key: &str, ttl: Duration) -> bool {
        let Ok(text) = fs::read_to_string(self.neg_path(kind, key)) else {
            return false;
        };
        let Ok(t) = text.trim().parse::<u64>() else {
            return false;
        };
        now_secs().saturating_sub(t) < ttl.as_secs()
    }

    pub fn mark_negative(&self, kind: &str, key: &str) {
        if let Ok(d) = self.sub("neg") {
            let _ = write_hint(
                &self.tmp,
                &d.join(format!("{kind}-{key}")),
                &now_secs().to_string(),
            );
        }
    }

    pub fn clear_negative(&self, kind: &str, key: &str) {
        let _ = fs::remove_file(self.neg_path(kind, key));
    }

    /// Removes remembered "not found"s older than `ttl`.
    pub fn prune_negative(&self, ttl: Duration) -> u64 {
        let Ok(rd) = fs::read_dir(self.dir.join("neg")) else {
            return 0;
        };
        let mut n = 0;
        for e in rd.flatten() {
            let stale = fs::read_to_string(e.path())
                .ok()
                .and_then(|t| t.trim().parse::<u64>().ok())
                .is_none_or(|t| now_secs().saturating_sub(t) >= ttl.as_secs());
            if stale && fs::remove_file(e.path()).is_ok() {
                n += 1;
            }
        }
        n
    }

    // ----------------------------------------------------- circuit breaker

    fn breaker_path(&self) -> PathBuf {
        self.dir.join("breaker")
    }

    /// (consecutive failures, open until)
    pub fn breaker_state(&self) -> (u64, u64) {
        let text = fs::read_to_string(self.breaker_path()).unwrap_or_default();
        let mut it = text
            .split_whitespace()
            .map(|x| x.parse::<u64>().unwrap_or(0));
        (it.next().unwrap_or(0), it.next().unwrap_or(0))
    }

    /// Seconds until the breaker closes again; 0 when closed.
    pub fn breaker_open_for(&self) -> u64 {
        let (_, until) = self.breaker_state();
        until.saturating_sub(now_secs())
    }

    /// Counts one failure; the `threshold`-th in a row opens the breaker
    /// for `cooldown`.
    pub fn record_failure(&self, threshold: u64, cooldown: Duration) {
        let Ok(locks) = self.sub("locks") else { return };
        let _lock = FileLock::acquire_timeout(
            &locks.join("breaker"),
            LockMode::Exclusive,
            Duration::from_millis(200),
        );
        let (failures, until) = self.breaker_state();
        let failures = failures + 1;
        let text = if failures >= threshold {
            format!("0 {}\n", now_secs() + cooldown.as_secs())
        } else {
            format!("{failures} {until}\n")
        };
        let _ = write_hint(&self.tmp, &self.breaker_path(), &text);
    }

    /// A success closes the breaker and resets the count. Writes only when
    /// there is something to reset (the common case costs one read).
    pub fn record_success(&self) {
        if self.breaker_state() != (0, 0) {
            let _ = write_hint(&self.tmp, &self.breaker_path(), "0 0\n");
        }
    }

    // ------------------------------------------------------- per-key locks

    /// Takes the in-flight lock of `key`, waiting at most `wait`.
    pub fn key_lock(&self, key: &str, wait: Duration) -> Option<FileLock> {
        let locks = self.sub("locks").ok()?;
        FileLock::acquire_timeout(&locks.join(key), LockMode::Exclusive, wait)
            .ok()
            .flatten()
    }

    pub fn spool_dir(&self) -> io::Result<PathBuf> {
        self.sub("spool")
    }

    pub fn drain_lock_path(&self) -> io::Result<PathBuf> {
        Ok(self.sub("locks")?.join("drain"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn breaker_opens_after_threshold_failures_and_success_closes_it() {
        let d = tempfile::tempdir().unwrap();
        let s = Store::open(d.path()).unwrap();
        let l = LocalState::new(&s);
        let cool = Duration::from_secs(60);
        l.record_failure(3, cool);
        l.record_failure(3, cool);
        assert_eq!(l.breaker_open_for(), 0);
        l.record_failure(3, cool);
        assert!(l.breaker_open_for() > 50);
        l.record_success();
        assert_eq!(l.breaker_open_for(), 0);
        assert_eq!(l.breaker_state(), (0, 0));
    }

    #[test]
    fn negative_results_expire() {
        let d = tempfile::tempdir().unwrap();
        let s = Store::open(d.path()).unwrap();
        let l = LocalState::new(&s);
        let k = "ab".repeat(32);
        assert!(!l.is_negative("m", &k, Duration::from_secs(30)));
        l.mark_negative("m", &k);
        assert!(l.is_negative("m", &k, Duration::from_secs(30)));
        assert!(!l.is_negative("m", &k, Duration::from_secs(0)));
        assert!(!l.is_negative("e", &k, Duration::from_secs(30)));
        assert_eq!(l.prune_negative(Duration::from_secs(0)), 1);
        assert!(!l.is_negative("m", &k, Duration::from_secs(30)));
    }
}
