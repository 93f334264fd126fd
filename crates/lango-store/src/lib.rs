//! # lango-store
//!
//! The one factory that opens lango's SQLite database, encrypted with SQLCipher.
//!
//! ## What it owns
//! Opening the database with a raw 256-bit key applied to every pooled connection before any
//! other statement, verifying the key with a read, detecting the state of the database file,
//! the journaled export procedure (encrypt, decrypt, re-key, legacy conversion) with crash
//! recovery, file-permission helpers, and the schema migrations of the tables it owns.
//!
//! ## What it must never do
//! See a passphrase (it receives a 32-byte key), hand out a connection that was not keyed and
//! verified, continue without SQLCipher, or touch tables it does not own.
//!
//! ## Place in the layers
//! Above `lango-crypto` (secret types only); used by `lango-secrets` and `lango-p2p`.
//!
//! The database itself arrives with the keys-at-rest work; today the crate defines the errors
//! its callers will handle.
#![forbid(unsafe_code)]

/// Errors of the storage layer.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The key does not open the database ("file is not a database" after keying).
    #[error("the database key is wrong (the file did not decrypt)")]
    WrongKey,
    /// The linked SQLite is not SQLCipher 4; lango never continues unencrypted.
    #[error("SQLCipher 4 is not available in this build (cipher_version: {0:?})")]
    SqlcipherUnavailable(Option<String>),
    /// The database file is in a state that cannot be opened safely.
    #[error("database file {path}: {reason}")]
    BadFile {
        /// The file.
        path: std::path::PathBuf,
        /// What is wrong with it.
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
}
