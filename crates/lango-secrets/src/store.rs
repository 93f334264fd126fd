//! The secrets store and the key registry (rules SS and KRG).
//!
//! Every value is a v1 blob bound to its row: the associated data names the purpose `secrets`
//! and the secret's name, so a ciphertext moved to another row, or a row edited on disk, fails
//! with [`Error::Integrity`] instead of returning another secret's value.

use std::sync::Arc;

use lango_crypto::{
    SecretBytes,
    aead::{self, BlobPurpose, ProviderTag},
    provider::{AeadContext, CryptoProvider, LocalCryptoProvider, ProviderErrorKind},
};
use lango_store::sqlx::{self, Row, SqlitePool};

use crate::{Error, Result};

/// Name of the local key row.
pub const LOCAL_KEY_NAME: &str = "default";
/// Remote id of the local key.
pub const LOCAL_REMOTE_ID: &str = "local";

/// Registry name of the KMS key new values go to when a KMS provider is configured (Go:
/// `kms-default`).
pub const KMS_KEY_NAME: &str = "kms-default";
/// Names reserved for key material (SS-7).
pub const RESERVED_PREFIXES: [&str; 3] = ["wallet.", "p2p.", "lango."];

/// Who is asking: the operator (CLI, node start-up) or an agent/peer-facing tool.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Caller {
    /// The node itself or its operator.
    Operator,
    /// An agent- or peer-facing tool: reserved names are refused.
    Agent,
}

/// Current time in the layout the Go node wrote (`YYYY-MM-DD HH:MM:SS[.fraction]±HH:MM`).
pub(crate) fn db_now() -> String {
    let now = time::OffsetDateTime::now_utc();
    let base = format!(
        "{:04}-{:02}-{:02} {:02}:{:02}:{:02}",
        now.year(),
        u8::from(now.month()),
        now.day(),
        now.hour(),
        now.minute(),
        now.second()
    );
    let nanos = now.nanosecond();
    if nanos == 0 {
        format!("{base}+00:00")
    } else {
        let frac = format!("{nanos:09}");
        format!("{base}.{}+00:00", frac.trim_end_matches('0'))
    }
}

/// Parses the time layouts the Go SQLite driver accepts; `None` if none fits.
pub fn parse_db_time(s: &str) -> Option<time::OffsetDateTime> {
    use time::{
        OffsetDateTime, PrimitiveDateTime, format_description::well_known::Rfc3339,
        macros::format_description,
    };
    if let Ok(t) = OffsetDateTime::parse(s, &Rfc3339) {
        return Some(t);
    }
    let t = s.replacen(' ', "T", 1);
    if let Ok(t) = OffsetDateTime::parse(&t, &Rfc3339) {
        return Some(t);
    }
    let offset_fmt = format_description!(
        "[year]-[month]-[day]T[hour]:[minute]:[second][optional [.[subsecond]]][offset_hour sign:mandatory]:[offset_minute]"
    );
    if let Ok(v) = OffsetDateTime::parse(&t, offset_fmt) {
        return Some(v);
    }
    let naive = format_description!(
        "[year]-[month]-[day]T[hour]:[minute]:[second][optional [.[subsecond]]]"
    );
    PrimitiveDateTime::parse(&t, naive)
        .ok()
        .map(PrimitiveDateTime::assume_utc)
}

/// What a secret row's ciphertext is bound to: purpose `secrets`, context = its name.
pub(crate) fn secret_aad(name: &str, max_value: usize) -> AeadContext<'_> {
    AeadContext {
        purpose: BlobPurpose::Secrets,
        context: name.as_bytes(),
        max_blob_len: max_value + 1024,
    }
}

/// Validates a new secret name (SS-1).
pub fn validate_name(name: &str) -> Result<()> {
    let bad = |reason| {
        Err(Error::InvalidName {
            name: name.chars().take(64).collect(),
            reason,
        })
    };
    if name.is_empty() || name.len() > 128 {
        return bad("must be 1 to 128 bytes");
    }
    if !name
        .bytes()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'.' | b'_' | b'/' | b'-'))
    {
        return bad("may contain only A-Z a-z 0-9 . _ / -");
    }
    Ok(())
}

/// Whether a name is reserved for key material (SS-7).
pub fn is_reserved(name: &str) -> bool {
    RESERVED_PREFIXES.iter().any(|p| name.starts_with(p))
}

fn check_caller(name: &str, caller: Caller) -> Result<()> {
    if caller == Caller::Agent && is_reserved(name) {
        tracing::warn!(
            event = "secrets.reserved_name_denied",
            name,
            "reserved secret name refused"
        );
        return Err(Error::ReservedName(name.to_owned()));
    }
    Ok(())
}

/// A row of the key registry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyInfo {
    /// UUID.
    pub id: String,
    /// Unique name (`default` for the local key).
    pub name: String,
    /// `local`, or the KMS key id.
    pub remote_key_id: String,
    /// `encryption` or `signing`.
    pub key_type: String,
    /// When it was registered.
    pub created_at: String,
    /// When a secret using it was last read.
    pub last_used_at: Option<String>,
}

/// The key registry (table `keys`).
#[derive(Debug, Clone)]
pub struct KeyRegistry {
    pool: SqlitePool,
}

fn key_from_row(r: &sqlx::sqlite::SqliteRow) -> Result<KeyInfo> {
    let get = |c: &str| -> Result<String> {
        r.try_get::<String, _>(c)
            .map_err(|e| Error::sql("read key row", e))
    };
    Ok(KeyInfo {
        id: get("id")?,
        name: get("name")?,
        remote_key_id: get("remote_key_id")?,
        key_type: get("type")?,
        created_at: get("created_at")?,
        last_used_at: r
            .try_get::<Option<String>, _>("last_used_at")
            .map_err(|e| Error::sql("read key row", e))?,
    })
}

impl KeyRegistry {
    /// The registry over `pool`.
    pub fn new(pool: SqlitePool) -> Self {
        Self { pool }
    }

    /// Creates `name` or updates its remote id and type; `created_at` never changes (KRG-1).
    pub async fn register(
        &self,
        name: &str,
        remote_key_id: &str,
        key_type: &str,
    ) -> Result<KeyInfo> {
        if let Some(k) = self.get(name).await?
            && k.remote_key_id == remote_key_id
            && k.key_type == key_type
        {
            // Nothing to change: do not write (an unlock must not rewrite the database).
            return Ok(k);
        }
        sqlx::query(
            "INSERT INTO keys (id, name, remote_key_id, type, created_at) VALUES (?1, ?2, ?3, ?4, ?5)
             ON CONFLICT(name) DO UPDATE SET remote_key_id = excluded.remote_key_id, type = excluded.type",
        )
        .bind(uuid::Uuid::new_v4().to_string())
        .bind(name)
        .bind(remote_key_id)
        .bind(key_type)
        .bind(db_now())
        .execute(&self.pool)
        .await
        .map_err(|e| Error::sql("register key", e))?;
        self.get(name)
            .await?
            .ok_or_else(|| Error::KeyNotFound(name.to_owned()))
    }

    /// The key named `name`.
    pub async fn get(&self, name: &str) -> Result<Option<KeyInfo>> {
        let r = sqlx::query("SELECT id, name, remote_key_id, type, CAST(created_at AS TEXT) AS created_at, CAST(last_used_at AS TEXT) AS last_used_at FROM keys WHERE name = ?1")
            .bind(name)
            .fetch_optional(&self.pool)
            .await
            .map_err(|e| Error::sql("read key", e))?;
        r.as_ref().map(key_from_row).transpose()
    }

    /// The default key: the row named by `security_config.default_key`, else the newest
    /// `encryption` row, ties broken by name (KRG-2).
    pub async fn default_key(&self) -> Result<KeyInfo> {
        let named: Option<String> = sqlx::query_scalar(
            "SELECT CAST(value AS TEXT) FROM security_config WHERE name = 'default_key'",
        )
        .fetch_optional(&self.pool)
        .await
        .map_err(|e| Error::sql("read default key", e))?;
        if let Some(n) = named
            && let Some(k) = self.get(&n).await?
        {
            return Ok(k);
        }
        let r = sqlx::query(
            "SELECT id, name, remote_key_id, type, CAST(created_at AS TEXT) AS created_at, CAST(last_used_at AS TEXT) AS last_used_at
             FROM keys WHERE type = 'encryption' ORDER BY created_at DESC, name ASC LIMIT 1",
        )
        .fetch_optional(&self.pool)
        .await
        .map_err(|e| Error::sql("read default key", e))?;
        match r {
            Some(r) => key_from_row(&r),
            None => Err(Error::KeyNotFound("(default encryption key)".into())),
        }
    }

    /// Makes `name` the default key.
    pub async fn set_default(&self, name: &str) -> Result<()> {
        set_config_text(&self.pool, "default_key", name).await
    }

    /// Deletes a key no secret uses (KRG-3).
    pub async fn delete(&self, name: &str) -> Result<()> {
        let key = self
            .get(name)
            .await?
            .ok_or_else(|| Error::KeyNotFound(name.to_owned()))?;
        let count: i64 = sqlx::query_scalar("SELECT count(*) FROM secrets WHERE key_secrets = ?1")
            .bind(&key.id)
            .fetch_one(&self.pool)
            .await
            .map_err(|e| Error::sql("count secrets of key", e))?;
        if count > 0 {
            return Err(Error::KeyInUse {
                name: name.to_owned(),
                count,
            });
        }
        sqlx::query("DELETE FROM keys WHERE id = ?1")
            .bind(&key.id)
            .execute(&self.pool)
            .await
            .map_err(|e| Error::sql("delete key", e))?;
        Ok(())
    }

    /// Every key, newest first.
    pub async fn list(&self) -> Result<Vec<KeyInfo>> {
        let rows = sqlx::query(
            "SELECT id, name, remote_key_id, type, CAST(created_at AS TEXT) AS created_at, CAST(last_used_at AS TEXT) AS last_used_at
             FROM keys ORDER BY created_at DESC, name ASC",
        )
        .fetch_all(&self.pool)
        .await
        .map_err(|e| Error::sql("list keys", e))?;
        rows.iter().map(key_from_row).collect()
    }
}

/// Sets a text row of `security_config`.
pub(crate) async fn set_config_text<'e, E: sqlx::SqliteExecutor<'e>>(
    e: E,
    name: &str,
    value: &str,
) -> Result<()> {
    sqlx::query("INSERT INTO security_config (name, value) VALUES (?1, CAST(?2 AS BLOB)) ON CONFLICT(name) DO UPDATE SET value = excluded.value")
        .bind(name)
        .bind(value)
        .execute(e)
        .await
        .map_err(|e| Error::sql("write security_config", e))?;
    Ok(())
}

/// Metadata of a stored secret (never the value).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct SecretInfo {
    /// UUID.
    pub id: String,
    /// Name.
    pub name: String,
    /// The key row id.
    pub key_id: String,
    /// The key row name (empty if orphaned).
    pub key_name: String,
    /// Creation time as stored.
    pub created_at: String,
    /// Last write time as stored.
    pub updated_at: String,
    /// Successful reads since the last write.
    pub access_count: i64,
}

/// The secrets store.
#[derive(Clone)]
pub struct SecretsStore {
    pool: SqlitePool,
    registry: KeyRegistry,
    local: Arc<LocalCryptoProvider>,
    /// The KMS or HSM provider for keys whose remote id is not `local`.
    remote: Option<Arc<dyn CryptoProvider>>,
    max_value: usize,
}

impl std::fmt::Debug for SecretsStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SecretsStore")
            .field("max_value", &self.max_value)
            .finish_non_exhaustive()
    }
}

impl SecretsStore {
    /// A store over `pool` encrypting with `local` (the master key's provider).
    pub fn new(pool: SqlitePool, local: Arc<LocalCryptoProvider>, max_value: usize) -> Self {
        Self {
            registry: KeyRegistry::new(pool.clone()),
            pool,
            local,
            remote: None,
            max_value,
        }
    }

    /// Encrypts and decrypts values under KMS keys (registry rows whose remote id is not
    /// `local`) with `remote`. When `remote` falls back to the local key (a composite provider
    /// while the KMS is unreachable), the row is linked to the local key it was actually
    /// encrypted with, so the key link always names the key that opens the value.
    pub fn with_remote(mut self, remote: Arc<dyn CryptoProvider>) -> Self {
        self.remote = Some(remote);
        self
    }

    /// The key registry.
    pub fn registry(&self) -> &KeyRegistry {
        &self.registry
    }

    fn aad<'a>(&self, name: &'a str) -> AeadContext<'a> {
        secret_aad(name, self.max_value)
    }

    async fn encrypt_for(&self, key: &KeyInfo, name: &str, value: &[u8]) -> Result<Vec<u8>> {
        if key.remote_key_id == LOCAL_REMOTE_ID {
            return Ok(self
                .local
                .encrypt(LOCAL_REMOTE_ID, value, self.aad(name))
                .await?);
        }
        match &self.remote {
            Some(remote) => Ok(remote
                .encrypt(&key.remote_key_id, value, self.aad(name))
                .await?),
            None => Err(Error::Provider(no_remote(
                lango_crypto::provider::Operation::Encrypt,
                &key.remote_key_id,
            ))),
        }
    }

    fn check_value(&self, value: &[u8]) -> Result<()> {
        if value.len() > self.max_value {
            return Err(Error::ValueTooLarge {
                len: value.len(),
                max: self.max_value,
            });
        }
        Ok(())
    }

    /// Stores `value` under `name`, replacing an existing value (SS-1): the row gets the new
    /// ciphertext and key link, `access_count = 0` and a new `updated_at`.
    pub async fn put(&self, name: &str, value: &[u8], caller: Caller) -> Result<()> {
        self.write(
            name,
            value,
            caller,
            "ON CONFLICT(name) DO UPDATE SET encrypted_value = excluded.encrypted_value,
                 key_secrets = excluded.key_secrets, access_count = 0, updated_at = excluded.updated_at",
        )
        .await
        .map(|_| ())
    }

    /// Stores `value` under a new `name`; an existing name is [`Error::AlreadyExists`] and
    /// nothing is written (SS-2). Used for key material, which must never be overwritten.
    pub async fn create(&self, name: &str, value: &[u8], caller: Caller) -> Result<()> {
        if self
            .write(name, value, caller, "ON CONFLICT(name) DO NOTHING")
            .await?
            == 0
        {
            return Err(Error::AlreadyExists(name.to_owned()));
        }
        Ok(())
    }

    /// Validates, encrypts under the default key and inserts with `on_conflict`; returns the
    /// number of rows written.
    async fn write(
        &self,
        name: &str,
        value: &[u8],
        caller: Caller,
        on_conflict: &'static str,
    ) -> Result<u64> {
        validate_name(name)?;
        check_caller(name, caller)?;
        self.check_value(value)?;
        let mut key = self.registry.default_key().await?;
        let blob = self.encrypt_for(&key, name, value).await?;
        if key.remote_key_id != LOCAL_REMOTE_ID
            && matches!(aead::BlobHeader::parse(&blob), Ok((h, _)) if h.provider == ProviderTag::LocalMk)
        {
            // The KMS provider fell back to the local key: link the row to that key.
            key = self
                .registry
                .get(LOCAL_KEY_NAME)
                .await?
                .ok_or_else(|| Error::Integrity(name.to_owned()))?;
        }
        let sql = format!(
            "INSERT INTO secrets (id, name, encrypted_value, created_at, updated_at, access_count, key_secrets)
             VALUES (?1, ?2, ?3, ?4, ?4, 0, ?5) {on_conflict}"
        );
        let r = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(uuid::Uuid::new_v4().to_string())
            .bind(name)
            .bind(blob)
            .bind(db_now())
            .bind(&key.id)
            .execute(&self.pool)
            .await
            .map_err(|e| Error::sql("store secret", e))?;
        Ok(r.rows_affected())
    }

    /// Reads and decrypts `name` (SS-3). Counts the access atomically and stamps the key's
    /// `last_used_at`; `updated_at` is not changed by reads.
    pub async fn get(&self, name: &str, caller: Caller) -> Result<SecretBytes> {
        check_caller(name, caller)?;
        let row = sqlx::query(
            "SELECT s.id AS id, s.encrypted_value AS blob, k.id AS key_id, k.remote_key_id AS remote
             FROM secrets s LEFT JOIN keys k ON k.id = s.key_secrets WHERE s.name = ?1",
        )
        .bind(name)
        .fetch_optional(&self.pool)
        .await
        .map_err(|e| Error::sql("read secret", e))?
        .ok_or_else(|| Error::NotFound(name.to_owned()))?;
        let id: String = row
            .try_get("id")
            .map_err(|e| Error::sql("read secret", e))?;
        let blob: Vec<u8> = row
            .try_get("blob")
            .map_err(|e| Error::sql("read secret", e))?;
        let key_id: Option<String> = row
            .try_get("key_id")
            .map_err(|e| Error::sql("read secret", e))?;
        let remote: Option<String> = row
            .try_get("remote")
            .map_err(|e| Error::sql("read secret", e))?;
        let (Some(key_id), Some(remote)) = (key_id, remote) else {
            return Err(Error::OrphanedSecret(name.to_owned()));
        };
        let value = self.decrypt_row(name, &remote, &blob).await?;
        // Both bookkeeping writes in one transaction: one commit (one fsync) per read.
        if let Err(e) = self.record_access(&id, &key_id).await {
            tracing::warn!(error = %e, "could not record a secret access");
        }
        Ok(value)
    }

    async fn record_access(
        &self,
        secret_id: &str,
        key_id: &str,
    ) -> std::result::Result<(), sqlx::Error> {
        let mut tx = self.pool.begin().await?;
        sqlx::query("UPDATE secrets SET access_count = access_count + 1 WHERE id = ?1")
            .bind(secret_id)
            .execute(&mut *tx)
            .await?;
        sqlx::query("UPDATE keys SET last_used_at = ?1 WHERE id = ?2")
            .bind(db_now())
            .bind(key_id)
            .execute(&mut *tx)
            .await?;
        tx.commit().await
    }

    async fn decrypt_row(
        &self,
        name: &str,
        remote_key_id: &str,
        blob: &[u8],
    ) -> Result<SecretBytes> {
        let tag = aead::BlobHeader::parse(blob).map(|(h, _)| h.provider);
        match tag {
            // KRG-4: the blob's provider must agree with the key row's.
            Ok(ProviderTag::LocalMk) if remote_key_id == LOCAL_REMOTE_ID => {
                match self
                    .local
                    .decrypt(LOCAL_REMOTE_ID, blob, self.aad(name))
                    .await
                {
                    Ok(v) => Ok(v),
                    Err(e) if e.kind == ProviderErrorKind::DecryptionFailed => {
                        Err(Error::Integrity(name.to_owned()))
                    }
                    Err(e) => Err(Error::Provider(e)),
                }
            }
            Ok(tag) if remote_key_id != LOCAL_REMOTE_ID && tag != ProviderTag::LocalMk => {
                let Some(remote) = &self.remote else {
                    return Err(Error::Provider(no_remote(
                        lango_crypto::provider::Operation::Decrypt,
                        remote_key_id,
                    )));
                };
                // KRG-4 again: the blob's provider must be the one configured for the key.
                if tag != remote.tag() {
                    return Err(Error::Integrity(name.to_owned()));
                }
                match remote.decrypt(remote_key_id, blob, self.aad(name)).await {
                    Ok(v) => Ok(v),
                    Err(e) if e.kind == ProviderErrorKind::DecryptionFailed => {
                        Err(Error::Integrity(name.to_owned()))
                    }
                    Err(e) => Err(Error::Provider(e)),
                }
            }
            _ => Err(Error::Integrity(name.to_owned())),
        }
    }

    /// Metadata of every secret, ordered by name; never decrypts (SS-4).
    pub async fn list(&self) -> Result<Vec<SecretInfo>> {
        let rows = sqlx::query(
            "SELECT s.id AS id, s.name AS name, s.key_secrets AS key_id, COALESCE(k.name, '') AS key_name,
                    CAST(s.created_at AS TEXT) AS created_at, CAST(s.updated_at AS TEXT) AS updated_at,
                    s.access_count AS access_count
             FROM secrets s LEFT JOIN keys k ON k.id = s.key_secrets ORDER BY s.name",
        )
        .fetch_all(&self.pool)
        .await
        .map_err(|e| Error::sql("list secrets", e))?;
        rows.iter()
            .map(|r| {
                let g = |c: &str| {
                    r.try_get::<String, _>(c)
                        .map_err(|e| Error::sql("list secrets", e))
                };
                Ok(SecretInfo {
                    id: g("id")?,
                    name: g("name")?,
                    key_id: g("key_id")?,
                    key_name: g("key_name")?,
                    created_at: g("created_at")?,
                    updated_at: g("updated_at")?,
                    access_count: r
                        .try_get("access_count")
                        .map_err(|e| Error::sql("list secrets", e))?,
                })
            })
            .collect()
    }

    /// Deletes `name` (SS-5).
    pub async fn delete(&self, name: &str, caller: Caller) -> Result<()> {
        check_caller(name, caller)?;
        let r = sqlx::query("DELETE FROM secrets WHERE name = ?1")
            .bind(name)
            .execute(&self.pool)
            .await
            .map_err(|e| Error::sql("delete secret", e))?;
        if r.rows_affected() == 0 {
            return Err(Error::NotFound(name.to_owned()));
        }
        Ok(())
    }

    /// Number of stored secrets.
    pub async fn count(&self) -> Result<i64> {
        sqlx::query_scalar("SELECT count(*) FROM secrets")
            .fetch_one(&self.pool)
            .await
            .map_err(|e| Error::sql("count secrets", e))
    }
}

/// The error for a KMS key while no KMS provider is configured in this process.
fn no_remote(
    op: lango_crypto::provider::Operation,
    remote_key_id: &str,
) -> lango_crypto::provider::ProviderError {
    lango_crypto::provider::ProviderError::new(
        "secrets",
        op,
        remote_key_id,
        ProviderErrorKind::NotCompiled,
        "the key is a KMS key, and no KMS provider is configured in this process \
         (security.signer.provider)",
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        for ok in [
            "a",
            "api.key",
            "p2p.node.privatekey",
            "x/y_z-1",
            &"n".repeat(128),
        ] {
            validate_name(ok).unwrap();
        }
        for bad in ["", "with space", "é", "semi;colon", &"n".repeat(129)] {
            assert!(validate_name(bad).is_err(), "{bad:?}");
        }
        assert!(is_reserved("wallet.privatekey"));
        assert!(is_reserved("p2p.node.privatekey"));
        assert!(!is_reserved("walletx"));
    }

    #[test]
    fn time_layouts() {
        let now = db_now();
        assert!(parse_db_time(&now).is_some(), "{now}");
        for s in [
            "2026-02-25 14:03:11.5+09:00",
            "2026-02-25 14:03:11+09:00",
            "2026-02-25T14:03:11Z",
            "2026-02-25T14:03:11.123456789Z",
            "2026-02-25 14:03:11",
        ] {
            assert!(parse_db_time(s).is_some(), "{s}");
        }
        assert_eq!(
            parse_db_time("2026-02-25 14:03:11.5+09:00")
                .unwrap()
                .unix_timestamp(),
            parse_db_time("2026-02-25T05:03:11.5Z")
                .unwrap()
                .unix_timestamp()
        );
    }
}
