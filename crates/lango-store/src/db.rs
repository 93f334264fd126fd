//! The one factory that opens the database (rules DB-1..DB-13).
//!
//! Every connection — the verification connection and every connection the pool opens later —
//! runs, in this order and before anything else:
//!
//! 1. `PRAGMA key = "x'<64 hex>'"` (raw key: SQLCipher skips its own KDF), or for a legacy Go
//!    database the passphrase as a quoted literal;
//! 2. `PRAGMA cipher_compatibility = 4` (or 3 for a legacy SQLCipher 3 file) and
//!    `PRAGMA cipher_page_size = <n>`;
//!
//! then, on the verification connection, `SELECT count(*) FROM sqlite_master`: "file is not a
//! database" is [`Error::WrongKey`] here, not a late I/O error. Only after that does the pool
//! open, and each pooled connection then sets `journal_mode = WAL`, `busy_timeout = 5000`,
//! `foreign_keys = ON`, `temp_store = MEMORY` and `secure_delete = ON`.
//!
//! Statement logging is switched off on every connection so the key never reaches a log.
//! Unavoidable transient copies of the key (MEM-3): the hex text of the `PRAGMA key` statement
//! lives in the sqlx connection options and in SQLite's statement buffer while the statement is
//! prepared; both are owned by sqlx/SQLite and not zeroized by them.

use std::{path::Path, str::FromStr, sync::OnceLock, time::Duration};

use lango_crypto::{SecretKey32, SecretString};
use sqlx::{
    ConnectOptions, Connection, Executor, SqliteConnection, SqlitePool,
    sqlite::{SqliteConnectOptions, SqlitePoolOptions},
};
use zeroize::Zeroize;

use crate::{
    Error, Result, fsutil,
    state::{self, FileState},
};

/// The default SQLCipher page size.
pub const DEFAULT_PAGE_SIZE: u32 = 4096;

/// How a database file is keyed.
#[derive(Clone, Copy)]
pub enum Keying<'a> {
    /// A plaintext SQLite file.
    Plaintext,
    /// SQLCipher 4 with a raw 256-bit key (everything lango-rs writes).
    RawKey {
        /// The key (the HKDF `sqlcipher` key of the vault).
        key: &'a SecretKey32,
        /// `cipher_page_size`.
        page_size: u32,
    },
    /// A database written by the Go node: the passphrase is SQLCipher's key.
    LegacyPassphrase {
        /// The passphrase.
        passphrase: &'a SecretString,
        /// 3 or 4.
        compatibility: u8,
        /// `cipher_page_size`.
        page_size: u32,
    },
}

impl std::fmt::Debug for Keying<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Plaintext => f.write_str("Plaintext"),
            Self::RawKey { page_size, .. } => {
                write!(f, "RawKey {{ page_size: {page_size}, key: [redacted] }}")
            }
            Self::LegacyPassphrase {
                compatibility,
                page_size,
                ..
            } => write!(
                f,
                "LegacyPassphrase {{ compatibility: {compatibility}, page_size: {page_size}, passphrase: [redacted] }}"
            ),
        }
    }
}

impl Keying<'_> {
    /// Whether this keying encrypts.
    pub fn is_encrypted(&self) -> bool {
        !matches!(self, Self::Plaintext)
    }

    /// The value of `PRAGMA key` (or of `ATTACH ... KEY`), in a wiping buffer.
    pub(crate) fn key_literal(&self) -> Result<Option<SecretString>> {
        match self {
            Self::Plaintext => Ok(None),
            Self::RawKey { key, .. } => {
                let mut hex = hex::encode_upper(key.expose());
                let lit = SecretString::new(format!("\"x'{hex}'\""));
                hex.zeroize();
                Ok(Some(lit))
            }
            Self::LegacyPassphrase { passphrase, .. } => {
                let p = passphrase.expose();
                if p.contains('\0') {
                    return Err(Error::BadFile {
                        path: Default::default(),
                        reason: "a passphrase containing NUL cannot key a SQLCipher database"
                            .into(),
                    });
                }
                Ok(Some(SecretString::new(format!(
                    "'{}'",
                    p.replace('\'', "''")
                ))))
            }
        }
    }

    /// The text bound to `ATTACH ... KEY ?`: `x'<hex>'` for a raw key, `''` for plaintext.
    pub(crate) fn attach_key(&self) -> Result<SecretString> {
        match self {
            Self::Plaintext => Ok(SecretString::new(String::new())),
            Self::RawKey { key, .. } => {
                let mut hex = hex::encode_upper(key.expose());
                let s = SecretString::new(format!("x'{hex}'"));
                hex.zeroize();
                Ok(s)
            }
            Self::LegacyPassphrase { passphrase, .. } => Ok(passphrase.duplicate()),
        }
    }

    fn page_size(&self) -> Option<u32> {
        match self {
            Self::Plaintext => None,
            Self::RawKey { page_size, .. } | Self::LegacyPassphrase { page_size, .. } => {
                Some(*page_size)
            }
        }
    }
}

/// Options of [`Database::open`].
#[derive(Debug, Clone)]
pub struct OpenOptions {
    /// Create the file (0600, before SQLite touches it) when it is absent or empty.
    pub create: bool,
    /// Pool size.
    pub max_connections: u32,
    /// How long `acquire` waits for a pooled connection.
    pub acquire_timeout: Duration,
}

impl Default for OpenOptions {
    fn default() -> Self {
        Self {
            create: false,
            max_connections: 4,
            acquire_timeout: Duration::from_secs(10),
        }
    }
}

/// An open, keyed and verified database.
#[derive(Debug, Clone)]
pub struct Database {
    pool: SqlitePool,
    encrypted: bool,
}

fn connect_options(path: &Path, keying: &Keying<'_>) -> Result<SqliteConnectOptions> {
    let mut opts = SqliteConnectOptions::from_str("sqlite://")
        .map_err(|e| Error::sql("build connection options", e))?
        .filename(path)
        .create_if_missing(false)
        .shared_cache(false)
        .log_statements(log::LevelFilter::Off)
        .log_slow_statements(log::LevelFilter::Off, Duration::from_secs(3600));
    if let Some(mut lit) = keying.key_literal()? {
        opts = opts.pragma("key", lit.expose().to_owned());
        lit.zeroize();
        let compat = match keying {
            Keying::LegacyPassphrase { compatibility, .. } => *compatibility,
            _ => 4,
        };
        opts = opts.pragma("cipher_compatibility", compat.to_string());
        if let Some(ps) = keying.page_size() {
            opts = opts.pragma("cipher_page_size", ps.to_string());
        }
    }
    Ok(opts)
}

/// The per-connection settings applied once the key is verified (step 4 of §2.2.5).
const AFTER_KEY: &str = "PRAGMA journal_mode = WAL; PRAGMA busy_timeout = 5000; \
     PRAGMA foreign_keys = ON; PRAGMA temp_store = MEMORY; PRAGMA secure_delete = ON;";

/// Checks a `PRAGMA cipher_version` answer: it must start with `4.` (T-28).
pub fn check_cipher_version(v: Option<&str>) -> Result<String> {
    match v {
        Some(s) if s.trim().starts_with("4.") => Ok(s.trim().to_owned()),
        other => Err(Error::SqlcipherUnavailable(other.map(str::to_owned))),
    }
}

static CIPHER_VERSION: OnceLock<String> = OnceLock::new();

/// The SQLCipher version of this build, checked once per process (§2.2.5 step 5). Also turns
/// SQLCipher's own logging to stderr off (it is process wide).
pub async fn cipher_version() -> Result<String> {
    if let Some(v) = CIPHER_VERSION.get() {
        return Ok(v.clone());
    }
    let mut conn = SqliteConnectOptions::from_str("sqlite::memory:")
        .map_err(|e| Error::sql("open in-memory database", e))?
        .log_statements(log::LevelFilter::Off)
        .connect()
        .await
        .map_err(|e| Error::sql("open in-memory database", e))?;
    let v: Option<String> = sqlx::query_scalar("PRAGMA cipher_version")
        .fetch_optional(&mut conn)
        .await
        .map_err(|e| Error::sql("query cipher_version", e))?;
    let _ = conn.execute("PRAGMA cipher_log_level = NONE").await;
    let _ = conn.close().await;
    let v = check_cipher_version(v.as_deref())?;
    Ok(CIPHER_VERSION.get_or_init(|| v).clone())
}

/// Opens one keyed connection and proves the key with a read. The caller closes it.
pub(crate) async fn connect_verified(path: &Path, keying: &Keying<'_>) -> Result<SqliteConnection> {
    if keying.is_encrypted() {
        cipher_version().await?;
    }
    let opts = connect_options(path, keying)?;
    let mut conn = opts
        .connect()
        .await
        .map_err(|e| Error::sql(format!("open {}", path.display()), e))?;
    let check = sqlx::query_scalar::<_, i64>("SELECT count(*) FROM sqlite_master")
        .fetch_one(&mut conn)
        .await;
    match check {
        Ok(_) => Ok(conn),
        Err(e) => {
            let _ = conn.close().await;
            Err(Error::sql(format!("read {}", path.display()), e))
        }
    }
}

impl Database {
    /// Opens `path` with `keying`, verifying the key before the pool exists.
    ///
    /// With `create`, an absent or empty file is created 0600 first; otherwise the file must
    /// exist and its header must agree with the keying (plaintext header for
    /// [`Keying::Plaintext`], no plaintext header for a key).
    pub async fn open(path: &Path, keying: Keying<'_>, opts: OpenOptions) -> Result<Self> {
        let st = state::detect_usable(path)?;
        match st {
            FileState::Absent if opts.create => {
                drop(fsutil::create_private_file(path)?);
                fsutil::fsync_dir(fsutil::parent_dir(path))?;
            }
            FileState::Empty if opts.create => {}
            FileState::Absent | FileState::Empty => {
                return Err(Error::WrongState {
                    what: "the database does not exist",
                    path: path.to_owned(),
                    found: st,
                });
            }
            FileState::Plaintext if keying.is_encrypted() => return Err(Error::WrongKey),
            FileState::EncryptedOrForeign if !keying.is_encrypted() => {
                return Err(Error::WrongState {
                    what: "the database is encrypted and needs a key",
                    path: path.to_owned(),
                    found: st,
                });
            }
            _ => {}
        }
        let conn = connect_verified(path, &keying).await?;
        conn.close()
            .await
            .map_err(|e| Error::sql("close verification connection", e))?;
        let pool = SqlitePoolOptions::new()
            .max_connections(opts.max_connections.max(1))
            .min_connections(0)
            .acquire_timeout(opts.acquire_timeout)
            .after_connect(|conn, _meta| {
                Box::pin(async move {
                    conn.execute(AFTER_KEY).await?;
                    Ok(())
                })
            })
            .connect_with(connect_options(path, &keying)?)
            .await
            .map_err(|e| Error::sql(format!("open pool on {}", path.display()), e))?;
        Ok(Self {
            pool,
            encrypted: keying.is_encrypted(),
        })
    }

    /// The connection pool. Every connection in it is keyed and configured.
    pub fn pool(&self) -> &SqlitePool {
        &self.pool
    }

    /// Whether the file is SQLCipher-encrypted.
    pub fn is_encrypted(&self) -> bool {
        self.encrypted
    }

    /// Runs a crate's migrations, recorded in that crate's own history table `table` so
    /// crates migrate independently. Migrations are additive (DB-14).
    pub async fn migrate(
        &self,
        migrator: &sqlx::migrate::Migrator,
        table: &'static str,
    ) -> Result<()> {
        let mut m = sqlx::migrate::Migrator::with_migrations(migrator.iter().cloned().collect());
        m.dangerous_set_table_name(table);
        m.run(&self.pool).await?;
        Ok(())
    }

    /// Closes every connection. Always call this before the process exits: SQLCipher can crash
    /// when a connection is finalised during process teardown.
    pub async fn close(self) {
        self.pool.close().await;
    }
}
