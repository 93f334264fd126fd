//! The data-directory lock (`<data-dir>/.lock`, rule LK-1).
//!
//! Shared by the running node and by commands that only read or update rows; exclusive for
//! anything that replaces files (the export procedure, the legacy migration, envelope
//! rewrites). Taking a lock never waits: a conflict is [`Error::Busy`] at once (LK-2).

use std::{
    fs::{File, OpenOptions},
    os::unix::fs::OpenOptionsExt,
    path::{Path, PathBuf},
};

use crate::{Error, Result};

/// Name of the lock file in the data directory.
pub const LOCK_FILE: &str = ".lock";

/// How the lock is held.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LockMode {
    /// Many readers and row writers.
    Shared,
    /// One process replacing files.
    Exclusive,
}

/// A held data-directory lock; released on drop (or when the process ends).
#[derive(Debug)]
pub struct DataDirLock {
    file: File,
    path: PathBuf,
    mode: LockMode,
}

impl DataDirLock {
    /// Takes the lock in `mode` without waiting.
    pub fn acquire(data_dir: &Path, mode: LockMode) -> Result<Self> {
        let path = data_dir.join(LOCK_FILE);
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .custom_flags(nix::fcntl::OFlag::O_NOFOLLOW.bits())
            .open(&path)
            .map_err(|e| Error::io(format!("open lock file {}", path.display()), e))?;
        let r = match mode {
            LockMode::Shared => file.try_lock_shared(),
            LockMode::Exclusive => file.try_lock(),
        };
        match r {
            Ok(()) => Ok(Self { file, path, mode }),
            Err(std::fs::TryLockError::WouldBlock) => Err(Error::Busy(data_dir.to_owned())),
            Err(std::fs::TryLockError::Error(e)) => {
                Err(Error::io(format!("lock {}", path.display()), e))
            }
        }
    }

    /// The mode held.
    pub fn mode(&self) -> LockMode {
        self.mode
    }

    /// Turns an exclusive lock into a shared one (LK-3), without a window in which another
    /// process could take it exclusively.
    pub fn downgrade(&mut self) -> Result<()> {
        if self.mode == LockMode::Shared {
            return Ok(());
        }
        // flock converts the lock atomically on Linux.
        self.file
            .lock_shared()
            .map_err(|e| Error::io(format!("downgrade lock {}", self.path.display()), e))?;
        self.mode = LockMode::Shared;
        Ok(())
    }

    /// Upgrades a shared lock to exclusive without waiting.
    pub fn try_upgrade(&mut self) -> Result<()> {
        if self.mode == LockMode::Exclusive {
            return Ok(());
        }
        match self.file.try_lock() {
            Ok(()) => {
                self.mode = LockMode::Exclusive;
                Ok(())
            }
            Err(std::fs::TryLockError::WouldBlock) => Err(Error::Busy(
                self.path.parent().map(Path::to_owned).unwrap_or_default(),
            )),
            Err(std::fs::TryLockError::Error(e)) => {
                Err(Error::io(format!("lock {}", self.path.display()), e))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exclusive_conflicts_and_shared_coexist() {
        let dir = tempfile::tempdir().unwrap();
        let a = DataDirLock::acquire(dir.path(), LockMode::Shared).unwrap();
        let b = DataDirLock::acquire(dir.path(), LockMode::Shared).unwrap();
        assert!(matches!(
            DataDirLock::acquire(dir.path(), LockMode::Exclusive),
            Err(Error::Busy(_))
        ));
        drop((a, b));
        let mut x = DataDirLock::acquire(dir.path(), LockMode::Exclusive).unwrap();
        assert!(matches!(
            DataDirLock::acquire(dir.path(), LockMode::Shared),
            Err(Error::Busy(_))
        ));
        x.downgrade().unwrap();
        let _c = DataDirLock::acquire(dir.path(), LockMode::Shared).unwrap();
    }
}
