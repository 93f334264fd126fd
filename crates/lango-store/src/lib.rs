//! # lango-store
//!
//! The one factory that opens lango's SQLite database, encrypted with SQLCipher 4.
//!
//! ## What it owns
//!
//! - [`Database::open`]: a sqlx pool on which *every* connection is keyed (raw 256-bit key,
//!   pinned `cipher_compatibility = 4` and page size) before any other statement, and the key is
//!   proved by a read before the pool exists, so a wrong key is [`Error::WrongKey`] and never a
//!   late I/O error ([`db`]).
//! - File-state detection ([`state`]): absent, empty, plaintext, encrypted-or-foreign,
//!   truncated, not a regular file.
//! - The journaled export procedure ([`export`]) for encrypt, decrypt, re-key and legacy
//!   conversion, crash safe with [`export::recover`] at start-up.
//! - The data-directory lock ([`lock`]) and private-file helpers ([`fsutil`]).
//! - Running each crate's additive migrations in its own history table
//!   ([`Database::migrate`]).
//!
//! ## What it must never do
//!
//! See a passphrase on the normal path (it receives a 32-byte key; only the legacy Go path
//! keys SQLCipher with a passphrase), hand out a connection that was not keyed and verified,
//! continue without SQLCipher 4, use shared-cache mode, or drop tables it does not own.
//!
//! ## Place in the layers
//!
//! Above `lango-crypto` (secret types only); used by `lango-secrets` and `lango-p2p`.
//!
//! ## Example
//!
//! ```no_run
//! use lango_crypto::SecretKey32;
//! use lango_store::{Database, Keying, OpenOptions};
//!
//! # async fn demo() -> Result<(), lango_store::Error> {
//! let key = SecretKey32::generate().map_err(|_| lango_store::Error::WrongKey)?;
//! let db = Database::open(
//!     std::path::Path::new("/tmp/example.db"),
//!     Keying::RawKey { key: &key, page_size: 4096 },
//!     OpenOptions { create: true, ..OpenOptions::default() },
//! )
//! .await?;
//! sqlx::query("CREATE TABLE IF NOT EXISTS t (v TEXT)").execute(db.pool()).await
//!     .map_err(|e| lango_store::Error::sql("create", e))?;
//! db.close().await; // always close before exiting
//! # Ok(()) }
//! ```
#![forbid(unsafe_code)]

pub mod db;
mod error;
pub mod export;
pub mod fsutil;
pub mod lock;
pub mod state;

pub use db::{Database, Keying, OpenOptions};
pub use error::{Error, is_busy, is_not_a_database};
pub use lock::{DataDirLock, LockMode};
pub use state::FileState;

/// Result alias for this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

pub use sqlx;
