//! The data-directory lock (`<data-dir>/.lock`, rule LK-1).
//!
//! Shared by the running node and by commands that only read or update rows; exclusive for
//! anything that replaces files (the export procedure, the legacy migration, envelope
//! rewrites). Taking a lock never waits: a conflict is [`Error::Busy`] at once (LK-2).
//!
//! # What the lock guarantees, and how
//!
//! - **Changing the mode has no unlocked window.** On Linux the lock is an open-file-description
//!   record lock (`fcntl(F_OFD_SETLK)`) over the whole file. Converting such a lock between
//!   shared and exclusive is atomic, and a refused conversion leaves the lock held in its old
//!   mode. (`flock(2)` is not used there: a refused `flock` upgrade silently *drops* the shared
//!   lock, so a process that was told "busy" would go on without any lock at all.) Like
//!   `flock`, an OFD lock belongs to one open file, so two [`DataDirLock`]s in one process
//!   conflict exactly as two processes do, and it is released when the file is closed.
//! - **Everyone locks the same inode.** The lock file is created with `O_CREAT` and without
//!   `O_EXCL`/`O_TRUNC`, never renamed or replaced. After locking, [`DataDirLock::acquire`]
//!   checks that the path still names the inode it locked and starts over if not. The file is
//!   only ever unlinked by [`DataDirLock::release_and_remove`], which requires the exclusive
//!   lock on the inode the path names; anyone who opened that inode before the unlink notices
//!   the change after locking it and retries on the new file. So two concurrent first starts
//!   can never each hold a lock on a different `.lock`.
//!
//! On Unix systems other than Linux there are no OFD locks; `flock` is used and a refused
//! upgrade is reported as [`Error::LockLost`] (the caller must stop using the data directory).

use std::{
    fs::{File, OpenOptions},
    os::unix::fs::{MetadataExt, OpenOptionsExt},
    path::{Path, PathBuf},
};

use crate::{Error, Result};

/// Name of the lock file in the data directory.
pub const LOCK_FILE: &str = ".lock";

/// How often [`DataDirLock::acquire`] starts over when the lock file was replaced while it was
/// locking it. Each retry needs another process to remove the file in between, which only a
/// holder of the exclusive lock does, so more than a few retries means something else is
/// tampering with the directory.
const MAX_REOPEN: usize = 16;

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

/// Whether the lock could be had.
enum Try {
    Held,
    Conflict,
}

#[cfg(target_os = "linux")]
fn set_lock(file: &File, mode: LockMode) -> std::io::Result<Try> {
    use nix::{
        errno::Errno,
        fcntl::{FcntlArg, fcntl},
        libc,
    };
    let l_type = match mode {
        LockMode::Shared => libc::F_RDLCK,
        LockMode::Exclusive => libc::F_WRLCK,
    };
    // The whole file (start 0, length 0 = to the end and beyond); l_pid must be 0 for OFD locks.
    let request = libc::flock {
        l_type: l_type as libc::c_short,
        l_whence: libc::SEEK_SET as libc::c_short,
        l_start: 0,
        l_len: 0,
        l_pid: 0,
    };
    loop {
        match fcntl(file, FcntlArg::F_OFD_SETLK(&request)) {
            Ok(_) => return Ok(Try::Held),
            Err(Errno::EAGAIN | Errno::EACCES) => return Ok(Try::Conflict),
            Err(Errno::EINTR) => continue,
            Err(e) => return Err(std::io::Error::from(e)),
        }
    }
}

#[cfg(not(target_os = "linux"))]
fn set_lock(file: &File, mode: LockMode) -> std::io::Result<Try> {
    let r = match mode {
        LockMode::Shared => file.try_lock_shared(),
        LockMode::Exclusive => file.try_lock(),
    };
    match r {
        Ok(()) => Ok(Try::Held),
        Err(std::fs::TryLockError::WouldBlock) => Ok(Try::Conflict),
        Err(std::fs::TryLockError::Error(e)) => Err(e),
    }
}

/// The error for an upgrade another process prevented. With OFD locks the shared lock is
/// still held.
#[cfg(target_os = "linux")]
fn refused_upgrade(dir: PathBuf) -> Error {
    Error::Busy(dir)
}

/// The error for an upgrade another process prevented: `flock` dropped the shared lock when
/// it refused the conversion.
#[cfg(not(target_os = "linux"))]
fn refused_upgrade(dir: PathBuf) -> Error {
    Error::LockLost(dir)
}

/// Whether `file` is still the inode that `path` names.
fn still_linked(file: &File, path: &Path) -> std::io::Result<bool> {
    let held = file.metadata()?;
    match std::fs::symlink_metadata(path) {
        Ok(now) => Ok(now.dev() == held.dev() && now.ino() == held.ino() && held.nlink() > 0),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(e),
    }
}

impl DataDirLock {
    /// Takes the lock in `mode` without waiting.
    pub fn acquire(data_dir: &Path, mode: LockMode) -> Result<Self> {
        let path = data_dir.join(LOCK_FILE);
        for _ in 0..MAX_REOPEN {
            // O_CREAT without O_EXCL or O_TRUNC: every process opens the one existing file.
            let file = OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false)
                .mode(0o600)
                .custom_flags(nix::fcntl::OFlag::O_NOFOLLOW.bits())
                .open(&path)
                .map_err(|e| Error::io(format!("open lock file {}", path.display()), e))?;
            if !file
                .metadata()
                .map_err(|e| Error::io(format!("inspect lock file {}", path.display()), e))?
                .is_file()
            {
                return Err(Error::Insecure {
                    path,
                    reason: "the lock file is not a regular file".into(),
                });
            }
            match set_lock(&file, mode)
                .map_err(|e| Error::io(format!("lock {}", path.display()), e))?
            {
                Try::Conflict => return Err(Error::Busy(data_dir.to_owned())),
                Try::Held => {}
            }
            // The holder of the exclusive lock may have removed the file between our open and
            // our lock: then we hold a lock nobody else will ever look at. Start over.
            if still_linked(&file, &path)
                .map_err(|e| Error::io(format!("inspect lock file {}", path.display()), e))?
            {
                return Ok(Self { file, path, mode });
            }
        }
        Err(Error::io(
            format!("lock {}", path.display()),
            std::io::Error::other(
                "the lock file keeps being replaced; is another program deleting it?",
            ),
        ))
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
        match set_lock(&self.file, LockMode::Shared)
            .map_err(|e| Error::io(format!("downgrade lock {}", self.path.display()), e))?
        {
            Try::Held => {
                self.mode = LockMode::Shared;
                Ok(())
            }
            // Nobody else can hold a lock while we hold the exclusive one.
            Try::Conflict => Err(Error::io(
                format!("downgrade lock {}", self.path.display()),
                std::io::Error::other("the exclusive lock could not be converted"),
            )),
        }
    }

    /// Upgrades a shared lock to exclusive without waiting. When another process holds the
    /// lock too, this is [`Error::Busy`] and the shared lock is still held (no window in which
    /// this process holds nothing).
    pub fn try_upgrade(&mut self) -> Result<()> {
        if self.mode == LockMode::Exclusive {
            return Ok(());
        }
        let dir = self.path.parent().map(Path::to_owned).unwrap_or_default();
        match set_lock(&self.file, LockMode::Exclusive)
            .map_err(|e| Error::io(format!("lock {}", self.path.display()), e))?
        {
            Try::Held => {
                self.mode = LockMode::Exclusive;
                Ok(())
            }
            Try::Conflict => Err(refused_upgrade(dir)),
        }
    }

    /// Removes the lock file and releases the lock: for a command that created the lock file
    /// and failed, so the data directory is left as it was found. Needs the exclusive lock;
    /// otherwise (or when the path no longer names the locked file) nothing is removed and the
    /// lock is simply released. Returns whether the file was removed.
    pub fn release_and_remove(self) -> Result<bool> {
        if self.mode != LockMode::Exclusive
            || !still_linked(&self.file, &self.path)
                .map_err(|e| Error::io(format!("inspect lock file {}", self.path.display()), e))?
        {
            return Ok(false);
        }
        // Unlinked while still locked: whoever opened this inode meanwhile sees that it is no
        // longer the lock file once they get the lock, and starts over on a new one.
        crate::fsutil::remove_if_exists(&self.path)?;
        drop(self.file);
        Ok(true)
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
