//! Database file state detection (secrets spec §2.3).

use std::{fmt, io::Read, path::Path};

use crate::{Error, Result};

/// The 16-byte header of a plaintext SQLite file.
pub const SQLITE_HEADER: &[u8; 16] = b"SQLite format 3\0";

/// What a database path holds. Exactly one applies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileState {
    /// No file.
    Absent,
    /// A regular file of size 0.
    Empty,
    /// A plaintext SQLite database.
    Plaintext,
    /// At least 16 bytes without the SQLite header: SQLCipher or something else; only a key
    /// attempt tells.
    EncryptedOrForeign,
    /// 1 to 15 bytes: not a database.
    Truncated,
    /// A symlink, directory, FIFO or device.
    NotRegularFile,
}

impl FileState {
    /// Whether the file exists as a database-like regular file.
    pub fn is_present(self) -> bool {
        matches!(self, Self::Plaintext | Self::EncryptedOrForeign)
    }
}

impl fmt::Display for FileState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Absent => "absent",
            Self::Empty => "empty",
            Self::Plaintext => "a plaintext database",
            Self::EncryptedOrForeign => "encrypted (or not a database)",
            Self::Truncated => "truncated (shorter than a database header)",
            Self::NotRegularFile => "not a regular file",
        })
    }
}

/// Classifies `path` without following symlinks.
pub fn detect(path: &Path) -> Result<FileState> {
    let meta = match std::fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(FileState::Absent),
        Err(e) => return Err(Error::io(format!("inspect {}", path.display()), e)),
    };
    if !meta.file_type().is_file() {
        return Ok(FileState::NotRegularFile);
    }
    match meta.len() {
        0 => return Ok(FileState::Empty),
        1..=15 => return Ok(FileState::Truncated),
        _ => {}
    }
    let mut header = [0u8; 16];
    std::fs::File::open(path)
        .and_then(|mut f| f.read_exact(&mut header))
        .map_err(|e| Error::io(format!("read header of {}", path.display()), e))?;
    Ok(if &header == SQLITE_HEADER {
        FileState::Plaintext
    } else {
        FileState::EncryptedOrForeign
    })
}

/// Like [`detect`], but `Truncated` and `NotRegularFile` are errors.
pub fn detect_usable(path: &Path) -> Result<FileState> {
    let s = detect(path)?;
    match s {
        FileState::Truncated | FileState::NotRegularFile => Err(Error::BadFile {
            path: path.to_owned(),
            reason: format!("the file is {s}; refusing to treat it as a database"),
        }),
        _ => Ok(s),
    }
}
