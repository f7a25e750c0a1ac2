//! Portable advisory file locks.
//!
//! On Unix this is `flock(2)`: the lock belongs to the open file description,
//! so it is released when the process dies, however it dies. That is what makes
//! a lock held by a killed process recoverable without any stale-lock heuristics.

use std::fs::{File, OpenOptions};
use std::io;
use std::path::Path;
use std::time::{Duration, Instant};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LockMode {
    Shared,
    Exclusive,
}

/// A held lock; dropping it releases the lock.
#[derive(Debug)]
pub struct FileLock {
    file: File,
}

impl FileLock {
    fn open(path: &Path) -> io::Result<File> {
        OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)
    }

    /// Blocks until the lock is taken.
    pub fn acquire(path: &Path, mode: LockMode) -> io::Result<FileLock> {
        let file = Self::open(path)?;
        sys::lock(&file, mode, true)?;
        Ok(FileLock { file })
    }

    /// Takes the lock if it is free now; `Ok(None)` if another holder has it.
    pub fn try_acquire(path: &Path, mode: LockMode) -> io::Result<Option<FileLock>> {
        let file = Self::open(path)?;
        match sys::lock(&file, mode, false) {
            Ok(()) => Ok(Some(FileLock { file })),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Polls for the lock until `timeout` passes; `Ok(None)` on time-out.
    pub fn acquire_timeout(
        path: &Path,
        mode: LockMode,
        timeout: Duration,
    ) -> io::Result<Option<FileLock>> {
        let file = Self::open(path)?;
        let deadline = Instant::now() + timeout;
        let mut pause = Duration::from_millis(1);
        loop {
            match sys::lock(&file, mode, false) {
                Ok(()) => return Ok(Some(FileLock { file })),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => return Err(e),
            }
            if Instant::now() >= deadline {
                return Ok(None);
            }
            std::thread::sleep(pause);
            pause = (pause * 2).min(Duration::from_millis(50));
        }
    }

    pub fn file(&self) -> &File {
        &self.file
    }
}

#[cfg(unix)]
mod sys {
    use super::LockMode;
    use rustix::fs::FlockOperation;
    use rustix::io::Errno;
    use std::fs::File;
    use std::io;

    pub fn lock(file: &File, mode: LockMode, block: bool) -> io::Result<()> {
        let op = match (mode, block) {
            (LockMode::Shared, true) => FlockOperation::LockShared,
            (LockMode::Exclusive, true) => FlockOperation::LockExclusive,
            (LockMode::Shared, false) => FlockOperation::NonBlockingLockShared,
            (LockMode::Exclusive, false) => FlockOperation::NonBlockingLockExclusive,
        };
        loop {
            match rustix::fs::flock(file, op) {
                Ok(()) => return Ok(()),
                Err(Errno::INTR) => continue,
                Err(Errno::WOULDBLOCK) => {
                    return Err(io::Error::new(io::ErrorKind::WouldBlock, "lock is held"))
                }
                Err(e) => return Err(e.into()),
            }
        }
    }
}

#[cfg(not(unix))]
mod sys {
    use super::LockMode;
    use std::fs::File;
    use std::io;

    // Windows groundwork: `File::lock`/`try_lock` from std (stable since 1.89)
    // map to LockFileEx, which has the same process-death semantics.
    pub fn lock(file: &File, mode: LockMode, block: bool) -> io::Result<()> {
        match (mode, block) {
            (LockMode::Shared, true) => file.lock_shared(),
            (LockMode::Exclusive, true) => file.lock(),
            (LockMode::Shared, false) => file.try_lock_shared().map_err(Into::into),
            (LockMode::Exclusive, false) => file.try_lock().map_err(Into::into),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exclusive_lock_excludes_second_holder_until_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("l");
        let a = FileLock::acquire(&p, LockMode::Exclusive).unwrap();
        assert!(FileLock::try_acquire(&p, LockMode::Exclusive)
            .unwrap()
            .is_none());
        assert!(FileLock::try_acquire(&p, LockMode::Shared)
            .unwrap()
            .is_none());
        drop(a);
        assert!(FileLock::try_acquire(&p, LockMode::Exclusive)
            .unwrap()
            .is_some());
    }

    #[test]
    fn shared_locks_coexist_and_timeout_reports_none() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("l");
        let _a = FileLock::acquire(&p, LockMode::Shared).unwrap();
        let _b = FileLock::acquire(&p, LockMode::Shared).unwrap();
        let t = FileLock::acquire_timeout(&p, LockMode::Exclusive, Duration::from_millis(20));
        assert!(t.unwrap().is_none());
    }
}
