//! File helpers for files that hold or sit next to secrets: private creation (0600 / 0700,
//! `O_EXCL`, no symlinks), atomic replacement, directory fsync, ownership and mode checks, and
//! best-effort overwriting before unlink.
//!
//! Overwriting a file with zeros before deleting it is best effort only: SSD block remapping,
//! copy-on-write and journaling file systems, and snapshots may keep the old bytes.

use std::{
    fs::{File, OpenOptions},
    io::Write,
    os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt},
    path::{Path, PathBuf},
};

use zeroize::Zeroizing;

use crate::{Error, Result};

/// Mode bits that give group or others any access.
const GROUP_OTHER: u32 = 0o077;

fn nofollow() -> i32 {
    nix::fcntl::OFlag::O_NOFOLLOW.bits()
}

/// The parent directory of `path` (`.` for a bare file name).
pub fn parent_dir(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

/// What [`ensure_private_dir`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DirCheck {
    /// Created now with 0700.
    Created,
    /// Existed and is private.
    Private,
    /// Existed and is readable by group or others (a warning, not an error).
    ReadableByOthers,
}

/// Creates `dir` with mode 0700 when absent. An existing directory writable by group or
/// others is refused; one readable by them is reported.
pub fn ensure_private_dir(dir: &Path) -> Result<DirCheck> {
    match std::fs::metadata(dir) {
        Ok(meta) => {
            if !meta.is_dir() {
                return Err(Error::Insecure {
                    path: dir.to_owned(),
                    reason: "is not a directory".into(),
                });
            }
            let mode = meta.permissions().mode();
            if mode & 0o022 != 0 {
                return Err(Error::Insecure {
                    path: dir.to_owned(),
                    reason: format!(
                        "directory is writable by group or others (mode {:03o}); run `chmod 700 {}`",
                        mode & 0o777,
                        dir.display()
                    ),
                });
            }
            if mode & GROUP_OTHER != 0 {
                return Ok(DirCheck::ReadableByOthers);
            }
            Ok(DirCheck::Private)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)
                .map_err(|e| Error::io(format!("create {}", dir.display()), e))?;
            // The mode passed to mkdir is filtered by the umask; make sure.
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
                .map_err(|e| Error::io(format!("chmod {}", dir.display()), e))?;
            Ok(DirCheck::Created)
        }
        Err(e) => Err(Error::io(format!("inspect {}", dir.display()), e)),
    }
}

/// Creates a new file with mode 0600, failing if anything exists at `path` (including a
/// symlink).
pub fn create_private_file(path: &Path) -> Result<File> {
    let f = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(nofollow())
        .open(path)
        .map_err(|e| Error::io(format!("create {}", path.display()), e))?;
    // Never wider than 0600 whatever the umask; never narrower than the owner needs.
    f.set_permissions(std::fs::Permissions::from_mode(0o600))
        .map_err(|e| Error::io(format!("chmod {}", path.display()), e))?;
    Ok(f)
}

/// fsyncs a directory so renames and unlinks in it are durable.
pub fn fsync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| Error::io(format!("fsync directory {}", dir.display()), e))
}

/// A unique sibling name `<file>.<tag>-<16 random hex>`.
pub fn unique_sibling(path: &Path, tag: &str) -> Result<PathBuf> {
    let r = lango_crypto::random::hex_string(8)
        .map_err(|_| Error::io("random name", std::io::Error::other("random source failed")))?;
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    Ok(parent_dir(path).join(format!("{name}.{tag}-{r}")))
}

/// Replaces `path` atomically with `bytes`: a fresh 0600 temporary file beside it
/// (`O_CREAT|O_EXCL`), written, fsynced, renamed over `path`, then the directory fsynced.
/// A crash leaves either the old content or the new one.
pub fn write_atomic_private(path: &Path, bytes: &[u8]) -> Result<()> {
    let tmp = unique_sibling(path, "tmp")?;
    let result = (|| {
        let mut f = create_private_file(&tmp)?;
        f.write_all(bytes)
            .and_then(|()| f.sync_all())
            .map_err(|e| Error::io(format!("write {}", tmp.display()), e))?;
        std::fs::rename(&tmp, path)
            .map_err(|e| Error::io(format!("rename {} to {}", tmp.display(), path.display()), e))?;
        fsync_dir(parent_dir(path))
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// Overwrites a regular file with zeros of its length, fsyncs and unlinks it, then fsyncs
/// the directory. Best effort against recovery from the disk; see the module docs.
pub fn overwrite_and_remove(path: &Path) -> Result<()> {
    let meta = match std::fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(Error::io(format!("inspect {}", path.display()), e)),
    };
    if meta.file_type().is_file() {
        let mut f = OpenOptions::new()
            .write(true)
            .custom_flags(nofollow())
            .open(path)
            .map_err(|e| Error::io(format!("open {} for overwriting", path.display()), e))?;
        let zeros = vec![0u8; 64 * 1024];
        let mut left = meta.len();
        while left > 0 {
            let n = left.min(zeros.len() as u64) as usize;
            f.write_all(&zeros[..n])
                .map_err(|e| Error::io(format!("overwrite {}", path.display()), e))?;
            left -= n as u64;
        }
        f.sync_all()
            .map_err(|e| Error::io(format!("fsync {}", path.display()), e))?;
    }
    remove_if_exists(path)?;
    fsync_dir(parent_dir(path))
}

/// Unlinks `path`; absent is fine.
pub fn remove_if_exists(path: &Path) -> Result<()> {
    match std::fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(Error::io(format!("remove {}", path.display()), e)),
    }
}

/// Why a file that must be private is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PrivateFileProblem {
    /// A symlink, directory or other non-regular file.
    NotRegular,
    /// Owned by another user.
    WrongOwner {
        /// The file's owner.
        uid: u32,
    },
    /// Group or other permission bits are set.
    Mode(u32),
    /// The directory holding it is writable by group or others.
    ParentWritable(u32),
}

impl std::fmt::Display for PrivateFileProblem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::NotRegular => f.write_str("not a regular file (symlinks are refused)"),
            Self::WrongOwner { uid } => write!(f, "owned by uid {uid}, not by the current user"),
            Self::Mode(m) => write!(
                f,
                "mode {m:03o} gives group or others access; run `chmod 600` on it"
            ),
            Self::ParentWritable(m) => write!(
                f,
                "its directory is writable by group or others (mode {m:03o})"
            ),
        }
    }
}

/// Checks with `lstat` that `path` is a regular file owned by the effective user with no
/// group/other bits, in a directory not writable by group or others. `Ok(None)` when the file
/// does not exist.
pub fn check_private_file(
    path: &Path,
) -> Result<Option<std::result::Result<u64, PrivateFileProblem>>> {
    let meta = match std::fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(Error::io(format!("inspect {}", path.display()), e)),
    };
    if !meta.file_type().is_file() {
        return Ok(Some(Err(PrivateFileProblem::NotRegular)));
    }
    let euid = nix::unistd::geteuid().as_raw();
    if meta.uid() != euid {
        return Ok(Some(Err(PrivateFileProblem::WrongOwner {
            uid: meta.uid(),
        })));
    }
    let mode = meta.mode() & 0o777;
    if mode & GROUP_OTHER != 0 {
        return Ok(Some(Err(PrivateFileProblem::Mode(mode))));
    }
    if let Ok(parent) = std::fs::metadata(parent_dir(path)) {
        let pm = parent.mode() & 0o777;
        if pm & 0o022 != 0 {
            return Ok(Some(Err(PrivateFileProblem::ParentWritable(pm))));
        }
    }
    Ok(Some(Ok(meta.len())))
}

/// Reads a small file that holds a secret (a keyfile) into one zeroizing buffer.
///
/// The buffer is allocated once with room for `max + 1` bytes and never grows, so no
/// reallocation leaves a copy of the secret in freed memory; it is wiped when dropped,
/// including on every error path. The file is opened without following symlinks and without
/// blocking (a FIFO swapped in after the caller's checks cannot hang the read), and must be a
/// regular file ([`Error::BadFile`] otherwise). More than `max` bytes is [`Error::TooLarge`].
pub fn read_secret_nofollow(path: &Path, max: usize) -> Result<Zeroizing<Vec<u8>>> {
    use std::io::Read;
    let mut f = OpenOptions::new()
        .read(true)
        .custom_flags(nofollow() | nix::fcntl::OFlag::O_NONBLOCK.bits())
        .open(path)
        .map_err(|e| Error::io(format!("open {}", path.display()), e))?;
    let meta = f
        .metadata()
        .map_err(|e| Error::io(format!("inspect {}", path.display()), e))?;
    if !meta.is_file() {
        return Err(Error::BadFile {
            path: path.to_owned(),
            reason: "not a regular file".into(),
        });
    }
    let too_large = || Error::TooLarge {
        path: path.to_owned(),
        max,
    };
    if meta.len() > max as u64 {
        return Err(too_large());
    }
    let cap = max.checked_add(1).ok_or_else(too_large)?;
    // Full length up front: reads go straight into this allocation, never into a temporary.
    let mut buf = Zeroizing::new(vec![0u8; cap]);
    let mut filled = 0;
    while filled < cap {
        match f.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(Error::io(format!("read {}", path.display()), e)),
        }
    }
    if filled > max {
        return Err(too_large());
    }
    // Shrinking the length keeps the allocation (and its capacity); the tail is zeros.
    buf.truncate(filled);
    Ok(buf)
}

/// Opens an existing regular file for reading without following symlinks, reading at most
/// `max` bytes; more is an error naming the limit.
pub fn read_bounded_nofollow(path: &Path, max: u64) -> Result<Vec<u8>> {
    use std::io::Read;
    let f = OpenOptions::new()
        .read(true)
        .custom_flags(nofollow())
        .open(path)
        .map_err(|e| Error::io(format!("open {}", path.display()), e))?;
    let mut buf = Vec::new();
    f.take(max + 1)
        .read_to_end(&mut buf)
        .map_err(|e| Error::io(format!("read {}", path.display()), e))?;
    if buf.len() as u64 > max {
        return Err(Error::BadFile {
            path: path.to_owned(),
            reason: format!("larger than the limit of {max} bytes"),
        });
    }
    Ok(buf)
}
