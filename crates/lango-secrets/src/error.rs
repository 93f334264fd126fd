//! The vault's error type. No variant carries a secret value, a passphrase or a ciphertext.

use std::path::PathBuf;

use crate::passphrase::Source;

/// Errors of the vault. Each variant is something a caller can act on.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The unlock material from `source` does not open the vault (WP-1).
    #[error("{}", wrong_passphrase_text(*via, *legacy_db))]
    WrongPassphrase {
        /// Where the rejected material came from.
        via: Source,
        /// Whether this was an encrypted legacy database that no attempt opened.
        legacy_db: bool,
    },
    /// No passphrase source applied (PA-6). `tried` says why each did not.
    #[error("no passphrase available: {}", tried.iter().map(|(s, why)| format!("{s}: {why}")).collect::<Vec<_>>().join("; "))]
    NoPassphraseSource {
        /// Each source and why it yielded nothing.
        tried: Vec<(Source, String)>,
    },
    /// A new passphrase breaks the policy (PA-10).
    #[error("passphrase rejected: {reason}")]
    PassphrasePolicy {
        /// Which rule.
        reason: String,
    },
    /// The two entries of a new passphrase differ.
    #[error("passphrases do not match")]
    PassphraseMismatch,
    /// The keyfile exists but may not be used (KF-1, KF-2).
    #[error("keyfile {path} refused: {reason}")]
    KeyfileInsecure {
        /// The keyfile.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// The keyfile is empty after trimming (KF-3).
    #[error("keyfile {0} is empty")]
    KeyfileEmpty(PathBuf),
    /// The keyfile exceeds 4 KiB (KF-2).
    #[error("keyfile {0} is larger than 4096 bytes")]
    KeyfileTooLarge(PathBuf),
    /// The data directory has permissions that expose it (UN-1).
    #[error("data directory {path}: {reason}")]
    InsecureDataDir {
        /// The directory.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// A newer Go node's `envelope.json` is here and no lango-rs envelope (UN-3, W-24).
    #[error(
        "{0} was written by a newer Go version of lango, which this build cannot read; \
         nothing was changed"
    )]
    NewerGoFormat(PathBuf),
    /// The database says it belongs to a v1 vault but `key-envelope.json` is missing.
    #[error(
        "the database belongs to a lango-rs vault but {0} is missing; restore the key envelope \
         that was backed up with the database"
    )]
    EnvelopeMissing(PathBuf),
    /// A plaintext SQLite `lango.db` sits where the key envelope records an encrypted
    /// database (DB-6, UN-7). It is refused before anything is written: the node never opens
    /// it and never rewrites the envelope to "plaintext" on its own.
    #[error(
        "{path} is a plaintext SQLite database, but the key envelope {envelope} records the \
         database as encrypted; it was refused and nothing was changed. If the file was \
         replaced without your knowledge, restore the encrypted lango.db from a backup. If you \
         decrypted it on purpose with another tool, set \"encrypted\": false in the \"db\" \
         section of the key envelope to accept it (and run `lango-node security db-migrate` \
         to encrypt it again)"
    )]
    PlaintextDatabase {
        /// The database file.
        path: PathBuf,
        /// The key envelope that says it is encrypted.
        envelope: PathBuf,
    },
    /// The key envelope has more slots than any lango-rs writes; refused before any KDF work.
    #[error(
        "key envelope {path} has {found} {what} slots; at most {max} are accepted, so no \
         passphrase was tried. lango-rs never writes that many: restore key-envelope.json from \
         a backup"
    )]
    EnvelopeTooManySlots {
        /// The file.
        path: PathBuf,
        /// `passphrase` or `key`.
        what: &'static str,
        /// How many it has.
        found: usize,
        /// The bound.
        max: usize,
    },
    /// The master key opened but the database is not this vault's (UN-7, WP-5).
    #[error("the database does not belong to this key envelope ({0})")]
    EnvelopeDbMismatch(String),
    /// The key envelope file is malformed, tampered with, or asks for out-of-range KDF work.
    #[error("key envelope {path} is corrupt: {reason}")]
    EnvelopeCorrupt {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// The key envelope has a newer format version.
    #[error("key envelope format version {found} is newer than this build supports (1)")]
    UnsupportedFormat {
        /// The version found.
        found: u32,
    },
    /// Legacy (Go) data needs `security upgrade-legacy` (auto migration is off).
    #[error(
        "this data directory holds data from the Go node; run `lango-node security upgrade-legacy` \
         (security.legacy.autoMigrate is false)"
    )]
    LegacyMigrationRequired,
    /// The vault does not exist yet and the caller did not allow creating it.
    #[error("no vault exists in {0} yet")]
    NotInitialised(PathBuf),
    /// A secret of that name does not exist.
    #[error("secret not found: {0}")]
    NotFound(String),
    /// `create` of a name that exists (SS-2).
    #[error("secret {0:?} already exists")]
    AlreadyExists(String),
    /// A secret whose key row is missing (SS-3).
    #[error("secret {0:?} is linked to a key that no longer exists")]
    OrphanedSecret(String),
    /// The stored value of `0` does not authenticate (tampered, moved from another row).
    #[error("secret {0:?} failed its integrity check (the row was modified or moved)")]
    Integrity(String),
    /// A legacy row could not be decrypted during migration.
    #[error(
        "legacy {table} row {name:?} does not decrypt with the legacy key; nothing was migrated"
    )]
    LegacyIntegrity {
        /// The table.
        table: &'static str,
        /// The row name.
        name: String,
    },
    /// A secret name that breaks SS-1.
    #[error("invalid secret name {name:?}: {reason}")]
    InvalidName {
        /// The name.
        name: String,
        /// Why.
        reason: &'static str,
    },
    /// A value over `security.secrets.maxValueBytes`.
    #[error("secret value is {len} bytes; the limit is {max} (security.secrets.maxValueBytes)")]
    ValueTooLarge {
        /// Its size.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// A reserved name through an agent- or peer-facing API (SS-7).
    #[error("secret {0:?} is reserved and cannot be used by agents or peers")]
    ReservedName(String),
    /// Deleting a key that secrets still use (KRG-3).
    #[error("key {name:?} is used by {count} secrets")]
    KeyInUse {
        /// The key.
        name: String,
        /// How many secrets use it.
        count: i64,
    },
    /// No key row with this name.
    #[error("key not found: {0}")]
    KeyNotFound(String),
    /// The operation needs the vault's exclusive lock and another process holds the lock.
    #[error("another lango process is using this data directory ({0}); stop it and retry")]
    Busy(PathBuf),
    /// The keyring is not available for an operation that needs it.
    #[error("OS keyring not available: {0}")]
    KeyringUnavailable(String),
    /// A cryptographic failure.
    #[error(transparent)]
    Crypto(#[from] lango_crypto::Error),
    /// A storage failure.
    #[error(transparent)]
    Store(lango_store::Error),
    /// A keyring failure.
    #[error(transparent)]
    Keyring(#[from] lango_keyring::Error),
    /// A provider failure.
    #[error(transparent)]
    Provider(#[from] lango_crypto::provider::ProviderError),
    /// A database statement failed.
    #[error("{context}: {source}")]
    Sql {
        /// What was being done.
        context: String,
        /// The error.
        #[source]
        source: lango_store::sqlx::Error,
    },
    /// A file operation failed.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The error.
        #[source]
        source: std::io::Error,
    },
}

fn wrong_passphrase_text(source: Source, legacy_db: bool) -> String {
    let what = match source {
        Source::Keyring => "the unlock key from the OS keyring was rejected",
        Source::Keyfile => "the passphrase from the keyfile was rejected",
        Source::Interactive => "wrong passphrase",
        Source::Stdin => "the passphrase read from stdin was rejected",
    };
    if legacy_db {
        format!("{what}: wrong passphrase, or not a lango database (is key-envelope.json missing?)")
    } else {
        what.to_owned()
    }
}

impl From<lango_store::Error> for Error {
    fn from(e: lango_store::Error) -> Self {
        match e {
            lango_store::Error::Busy(p) => Self::Busy(p),
            lango_store::Error::UnexpectedPlaintext { path } => {
                let envelope = crate::envelope::path_in(lango_store::fsutil::parent_dir(&path));
                Self::PlaintextDatabase { path, envelope }
            }
            other => Self::Store(other),
        }
    }
}

impl Error {
    /// A database error with context.
    pub(crate) fn sql(context: impl Into<String>, source: lango_store::sqlx::Error) -> Self {
        if lango_store::is_not_a_database(&source) {
            return Self::Store(lango_store::Error::WrongKey);
        }
        Self::Sql {
            context: context.into(),
            source,
        }
    }

    /// An I/O error with context.
    pub(crate) fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        Self::Io {
            context: context.into(),
            source,
        }
    }

    /// Whether this is a rejected passphrase (exit code 3 in the CLI, WP-4).
    pub fn is_wrong_passphrase(&self) -> bool {
        matches!(self, Self::WrongPassphrase { .. })
    }
}
