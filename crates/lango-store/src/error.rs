//! The storage layer's error type.

use std::path::PathBuf;

use crate::state::FileState;

/// Errors of the storage layer. None of them carries key material.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The key does not open the database ("file is not a database" after keying).
    #[error("the database key is wrong (the file did not decrypt)")]
    WrongKey,
    /// The linked SQLite is not SQLCipher 4; lango never continues unencrypted.
    #[error("SQLCipher 4 is not available in this build (cipher_version: {0:?})")]
    SqlcipherUnavailable(Option<String>),
    /// The database file is in a state that cannot be used for this operation.
    #[error("database file {path}: {reason}")]
    BadFile {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// A file that must be small (a keyfile) is larger than its limit.
    #[error("{path} is larger than the limit of {max} bytes")]
    TooLarge {
        /// The file.
        path: PathBuf,
        /// The limit.
        max: usize,
    },
    /// The file is not in the state the operation needs (e.g. already encrypted).
    #[error("{what} ({path} is {found})")]
    WrongState {
        /// What the operation needed, as the user-facing message.
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// What was found.
        found: FileState,
    },
    /// Another lango process holds the data-directory lock.
    #[error("another lango process is using this data directory ({0})")]
    Busy(PathBuf),
    /// A refused lock upgrade released the shared lock (only where the platform has no
    /// open-file-description locks). Stop using the data directory and start over.
    #[error(
        "the data-directory lock of {0} was lost while trying to upgrade it; close this \
         process's use of the data directory and retry"
    )]
    LockLost(PathBuf),
    /// A plaintext SQLite file sits where an encrypted database must be (DB-6 / UN-7): it was
    /// refused and nothing was changed.
    #[error(
        "{path} is a plaintext SQLite database, but it must be the encrypted lango database; \
         it was refused and nothing was changed. If the file was replaced without your \
         knowledge, restore the encrypted lango.db from a backup"
    )]
    UnexpectedPlaintext {
        /// The database file.
        path: PathBuf,
    },
    /// Leftovers of an interrupted conversion exist but no journal says what to do.
    #[error(
        "an interrupted database conversion left files behind and no journal explains them: {}; \
         move them aside only after checking which one holds your data",
        files.iter().map(|f| f.display().to_string()).collect::<Vec<_>>().join(", ")
    )]
    RecoveryNeeded {
        /// The leftover files.
        files: Vec<PathBuf>,
    },
    /// The exported copy did not match the source; the original is untouched.
    #[error("export verification failed: {0}; the original database was not changed")]
    Verification(String),
    /// A file or directory has permissions that would expose secrets.
    #[error("{path}: {reason}")]
    Insecure {
        /// The file or directory.
        path: PathBuf,
        /// Why it is refused.
        reason: String,
    },
    /// The conversion journal is unreadable.
    #[error("conversion journal {path} is unreadable: {reason}")]
    Journal {
        /// The journal file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// An I/O error on a file the store manages.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// A database error.
    #[error("{context}: {source}")]
    Sql {
        /// What was being done.
        context: String,
        /// The error.
        #[source]
        source: sqlx::Error,
    },
    /// A schema migration failed.
    #[error("schema migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
}

impl Error {
    /// An I/O error with context.
    pub fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        Self::Io {
            context: context.into(),
            source,
        }
    }

    /// A database error with context. "file is not a database" (SQLITE_NOTADB) becomes
    /// [`Error::WrongKey`].
    pub fn sql(context: impl Into<String>, source: sqlx::Error) -> Self {
        if is_not_a_database(&source) {
            return Self::WrongKey;
        }
        Self::Sql {
            context: context.into(),
            source,
        }
    }
}

/// Whether an error is SQLite's "file is not a database" (code 26).
pub fn is_not_a_database(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::Database(db) => {
            db.code().as_deref() == Some("26") || db.message().contains("file is not a database")
        }
        _ => false,
    }
}

/// Whether an error is SQLite's "database is locked" / busy (codes 5 and 6).
pub fn is_busy(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::Database(db) => {
            matches!(db.code().as_deref(), Some("5" | "6" | "517" | "261"))
        }
        _ => false,
    }
}
