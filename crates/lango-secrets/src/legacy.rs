//! Reading data written by the Go node and migrating it, once, into the v1 format
//! (secrets spec §2.1, §2.4.4, §2.4.5; rules UN-6, KR-6).
//!
//! ```text
//! L0 the legacy key K0 is verified (checksum, or trial decryption when there is none)
//! L1 new master key; envelope with a passphrase slot, state pending-legacy — written first
//! L2 one transaction: every local row re-encrypted as v1 bound to its name; the Go salt and
//!    checksum row deleted; the v1 markers written
//! L3 VACUUM + WAL checkpoint with secure_delete, so old ciphertexts and the checksum are gone
//! L4 a passphrase-keyed SQLCipher file is exported to the raw HKDF key
//! L5 the envelope becomes active
//! ```
//! A crash before the L2 commit leaves Go data (the pending envelope is reused); after it,
//! the next unlock with the same passphrase finishes L3–L5.

use std::path::{Path, PathBuf};

use lango_crypto::{
    MasterKey, SecretKey32, SecretString,
    aead::{self, BlobPurpose},
    hierarchy::KeyPurpose,
    kdf,
    provider::{AeadContext, LocalCryptoProvider},
};
use lango_store::{
    DataDirLock, Database, Keying, OpenOptions,
    export::{self, Operation, Target},
    sqlx::{self, Row},
};

use crate::{
    Error, Result,
    config::VaultConfig,
    envelope::{self, DbParams, Envelope, LegacyDbKeying, State},
    passphrase::{self, Prompter, Source},
    store::{self, LOCAL_KEY_NAME, LOCAL_REMOTE_ID},
    vault::{self, KEYRING_SERVICE, LEGACY_KEYRING_ACCOUNT, Vault, blocking, db_path},
};
use zeroize::Zeroizing;

/// A verified legacy database.
struct LegacyOpen {
    db: Database,
    keying: LegacyDbKeying,
    k0: SecretKey32,
}

/// Opens a Go SQLCipher database with the passphrase (2.4.5): SQLCipher 4 defaults, then
/// SQLCipher 3 settings, with 4096-byte pages and, if configured differently, the configured
/// page size. `None` when no attempt opens it.
async fn open_legacy_sqlcipher(
    path: &Path,
    p: &SecretString,
    page_size: u32,
) -> Result<Option<(Database, LegacyDbKeying)>> {
    let mut attempts = vec![(4u8, 4096u32), (3, 4096)];
    if page_size != 4096 {
        attempts.push((4, page_size));
        attempts.push((3, page_size));
    }
    for (compatibility, page_size) in attempts {
        let keying = Keying::LegacyPassphrase {
            passphrase: p,
            compatibility,
            page_size,
        };
        match Database::open(path, keying, OpenOptions::default()).await {
            Ok(db) => {
                return Ok(Some((
                    db,
                    LegacyDbKeying::Passphrase {
                        compatibility,
                        page_size,
                    },
                )));
            }
            Err(lango_store::Error::WrongKey) => continue,
            Err(lango_store::Error::BadFile { reason, .. }) if reason.contains("NUL") => {
                return Ok(None);
            }
            Err(e) => return Err(e.into()),
        }
    }
    Ok(None)
}

async fn table_exists(pool: &sqlx::SqlitePool, name: &str) -> Result<bool> {
    let n: i64 =
        sqlx::query_scalar("SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = ?1")
            .bind(name)
            .fetch_one(pool)
            .await
            .map_err(|e| Error::sql("inspect schema", e))?;
    Ok(n > 0)
}

/// Verifies a candidate passphrase against the legacy data (UN-6). `None` = wrong.
async fn verify(
    data_dir: &Path,
    sqlcipher: bool,
    p: &SecretString,
    config: &VaultConfig,
    warnings: &mut Vec<String>,
) -> Result<Option<LegacyOpen>> {
    let path = db_path(data_dir);
    let (db, keying) = if sqlcipher {
        match open_legacy_sqlcipher(&path, p, config.db_encryption.cipher_page_size).await? {
            Some(x) => x,
            None => return Ok(None),
        }
    } else {
        (
            Database::open(&path, Keying::Plaintext, OpenOptions::default()).await?,
            LegacyDbKeying::Plaintext,
        )
    };
    match check_k0(&db, p, warnings).await {
        Ok(Some(k0)) => Ok(Some(LegacyOpen { db, keying, k0 })),
        Ok(None) => {
            db.close().await;
            Ok(None)
        }
        Err(e) => {
            db.close().await;
            Err(e)
        }
    }
}

/// Reads the salt and checksum and derives K0, rejecting a wrong passphrase.
async fn check_k0(
    db: &Database,
    p: &SecretString,
    warnings: &mut Vec<String>,
) -> Result<Option<SecretKey32>> {
    let pool = db.pool();
    if !table_exists(pool, "security_config").await? {
        return Err(Error::EnvelopeMissing(PathBuf::from(envelope::FILE_NAME)));
    }
    let row = sqlx::query("SELECT CAST(value AS BLOB) AS salt, CAST(checksum AS BLOB) AS checksum FROM security_config WHERE name = 'default'")
        .fetch_optional(pool)
        .await
        .map_err(|e| Error::sql("read legacy salt", e))?;
    let Some(row) = row else {
        return Err(Error::EnvelopeMissing(PathBuf::from(envelope::FILE_NAME)));
    };
    let salt: Vec<u8> = row
        .try_get("salt")
        .map_err(|e| Error::sql("read legacy salt", e))?;
    let checksum: Option<Vec<u8>> = row
        .try_get("checksum")
        .map_err(|e| Error::sql("read legacy checksum", e))?;
    if let Some(sum) = &checksum {
        // Constant time, before any key derivation.
        if !kdf::legacy_checksum_matches(p.expose().as_bytes(), &salt, sum) {
            return Ok(None);
        }
    }
    let (pp, s) = (p.duplicate(), salt.clone());
    let k0 = blocking(move || Ok(kdf::legacy_key(pp.expose().as_bytes(), &s)?)).await?;
    if checksum.is_none() {
        // No verifier: trial-decrypt something encrypted with K0 (UN-6).
        let mut probe: Option<Vec<u8>> = None;
        if table_exists(pool, "config_profiles").await? {
            probe = sqlx::query_scalar(
                "SELECT encrypted_data FROM config_profiles WHERE active = 1 LIMIT 1",
            )
            .fetch_optional(pool)
            .await
            .map_err(|e| Error::sql("read legacy profile", e))?;
        }
        if probe.is_none() && table_exists(pool, "secrets").await? {
            probe = sqlx::query_scalar(
                "SELECT s.encrypted_value FROM secrets s JOIN keys k ON k.id = s.key_secrets
                 WHERE k.remote_key_id = 'local' ORDER BY s.name LIMIT 1",
            )
            .fetch_optional(pool)
            .await
            .map_err(|e| Error::sql("read legacy secret", e))?;
        }
        match probe {
            Some(blob) => {
                if aead::open_legacy(&k0, &blob).is_err() {
                    return Ok(None);
                }
            }
            None => warnings.push(
                "warning: the Go data has no passphrase checksum and nothing encrypted to check the passphrase against; it was accepted".into(),
            ),
        }
    }
    Ok(Some(k0))
}

/// Decodes the payload of a Go keyring value written with a macOS prefix
/// (`go-keyring-base64:` or `go-keyring-encoded:` + hex) into one wiping buffer allocated at
/// its final size, so decoding never reallocates and never leaves a copy behind. `None` when
/// there is no such prefix or the payload does not decode; what was decoded until the error
/// is wiped with the buffer.
pub(crate) fn decode_go_prefixed(s: &str) -> Option<Zeroizing<Vec<u8>>> {
    use base64::Engine;
    if let Some(rest) = s.strip_prefix("go-keyring-base64:") {
        let mut buf = Zeroizing::new(vec![0u8; rest.len().div_ceil(4) * 3]);
        let n = base64::engine::general_purpose::STANDARD
            .decode_slice(rest, buf.as_mut_slice())
            .ok()?;
        buf.truncate(n);
        Some(buf)
    } else if let Some(rest) = s.strip_prefix("go-keyring-encoded:") {
        let mut buf = Zeroizing::new(vec![0u8; rest.len() / 2]);
        hex::decode_to_slice(rest, buf.as_mut_slice()).ok()?;
        Some(buf)
    } else {
        None
    }
}

/// Decodes a Go keyring value (macOS prefixes included, KR-6). A value whose payload does not
/// decode to UTF-8 text is used as it is (without its decoded bytes surviving anywhere).
fn decode_go_keyring_value(v: SecretString) -> SecretString {
    let Some(mut bytes) = decode_go_prefixed(v.expose()) else {
        return v;
    };
    // Moves the allocation into the string; invalid UTF-8 hands it back to the wiping buffer.
    match String::from_utf8(std::mem::take(&mut *bytes)) {
        Ok(t) => SecretString::new(t),
        Err(e) => {
            *bytes = e.into_bytes();
            v
        }
    }
}

/// Unlocks Go data with the first source that verifies and migrates it (2.4.4).
pub(crate) async fn unlock_and_migrate(
    data_dir: &Path,
    config: &VaultConfig,
    prompter: &dyn Prompter,
    lock: DataDirLock,
    sqlcipher: bool,
    mut warnings: Vec<String>,
) -> Result<Vault> {
    let wrong = |source| Error::WrongPassphrase {
        via: source,
        legacy_db: sqlcipher,
    };
    let mut tried: Vec<(Source, String)> = Vec::new();
    let enabled = |s| config.passphrase.sources.contains(&s);
    let mut found: Option<(SecretString, Source, LegacyOpen, Option<PathBuf>)> = None;

    if enabled(Source::Keyring) && config.keyring.is_active() {
        let kr_config = config.keyring.clone();
        let got = tokio::task::spawn_blocking(move || {
            lango_keyring::open(&kr_config)?.get(KEYRING_SERVICE, LEGACY_KEYRING_ACCOUNT)
        })
        .await
        .map_err(|e| Error::io("keyring worker", std::io::Error::other(e.to_string())))?;
        match got {
            Ok(Some(v)) => {
                let p = decode_go_keyring_value(v);
                match verify(data_dir, sqlcipher, &p, config, &mut warnings).await? {
                    Some(open) => found = Some((p, Source::Keyring, open, None)),
                    None => {
                        let w = "warning: the Go passphrase stored in the OS keyring was rejected"
                            .to_owned();
                        prompter.warn(&w);
                        warnings.push(w);
                        tried.push((Source::Keyring, "the stored passphrase was rejected".into()));
                    }
                }
            }
            Ok(None) => tried.push((Source::Keyring, "no Go passphrase entry".into())),
            Err(e) => tried.push((Source::Keyring, e.to_string())),
        }
    }
    if found.is_none() && enabled(Source::Keyfile) {
        let path = config.keyfile_path(data_dir);
        match passphrase::read_keyfile(&path)? {
            Some(p) => match verify(data_dir, sqlcipher, &p, config, &mut warnings).await? {
                Some(open) => found = Some((p, Source::Keyfile, open, Some(path))),
                None => return Err(wrong(Source::Keyfile)),
            },
            None => tried.push((
                Source::Keyfile,
                format!("{} does not exist", path.display()),
            )),
        }
    }
    if found.is_none() && enabled(Source::Interactive) {
        if prompter.interactive() {
            for attempt in 1..=3 {
                let Some(p) = prompter.prompt_hidden("Enter passphrase: ")? else {
                    tried.push((Source::Interactive, "no input".into()));
                    break;
                };
                match verify(data_dir, sqlcipher, &p, config, &mut warnings).await? {
                    Some(open) => {
                        found = Some((p, Source::Interactive, open, None));
                        break;
                    }
                    None if attempt < 3 => prompter.warn("Wrong passphrase, try again."),
                    None => return Err(wrong(Source::Interactive)),
                }
            }
        } else {
            tried.push((Source::Interactive, "no terminal".into()));
        }
    }
    if found.is_none() && enabled(Source::Stdin) {
        if prompter.stdin_available() {
            match prompter.read_stdin_line()? {
                Some(p) => match verify(data_dir, sqlcipher, &p, config, &mut warnings).await? {
                    Some(open) => found = Some((p, Source::Stdin, open, None)),
                    None => return Err(wrong(Source::Stdin)),
                },
                None => tried.push((Source::Stdin, "no passphrase line".into())),
            }
        } else {
            tried.push((Source::Stdin, "not available".into()));
        }
    }
    let Some((p, source, open, keyfile)) = found else {
        return Err(Error::NoPassphraseSource { tried });
    };

    // L1: envelope first, pending.
    let mk = MasterKey::generate()?;
    let mut env = Envelope::new(
        &mk,
        1,
        DbParams {
            encrypted: sqlcipher,
            page_size: config.db_encryption.cipher_page_size,
            compatibility: 4,
        },
    );
    env.state = State::PendingLegacy;
    env.legacy_db_keying = Some(open.keying);
    env = vault::with_passphrase_slot(env, &mk, config.kdf.params(), &p).await?;
    if let Err(e) = env.save(data_dir) {
        open.db.close().await;
        return Err(e);
    }
    let counts = match reencrypt(&open.db, &open.k0, &mk, &env, config).await {
        Ok(c) => c,
        Err(e) => {
            open.db.close().await;
            return Err(e);
        }
    };
    let mut vault = finish(
        data_dir, config, lock, env, mk, &p, open.db, source, warnings,
    )
    .await?;
    vault.report_mut().legacy_migrated = Some(counts);
    if source == Source::Keyring {
        convert_keyring_entry(&mut vault, config).await;
    }
    if let Some(path) = keyfile
        && !config.passphrase.keep_keyfile
    {
        passphrase::shred_keyfile(&path, prompter);
        vault.report_mut().keyfile_shredded = !path.exists();
    }
    Ok(vault)
}

/// KR-6: replace the Go passphrase entry by a keyring slot and its v1 entry.
async fn convert_keyring_entry(vault: &mut Vault, config: &VaultConfig) {
    let kr = match lango_keyring::open(&config.keyring) {
        Ok(k) => std::sync::Arc::<dyn lango_keyring::Keyring>::from(k),
        Err(_) => return,
    };
    match vault.store_in_keyring(kr.clone()).await {
        Ok(_) => {
            let _ = tokio::task::spawn_blocking(move || {
                kr.delete(KEYRING_SERVICE, LEGACY_KEYRING_ACCOUNT)
            })
            .await;
            tracing::info!(
                event = "keyring.legacy_entry_converted",
                "Go keyring entry replaced by a lango unlock key"
            );
        }
        Err(e) => tracing::warn!(error = %e, "could not convert the Go keyring entry"),
    }
}

/// L2: the one transaction.
async fn reencrypt(
    db: &Database,
    k0: &SecretKey32,
    mk: &MasterKey,
    env: &Envelope,
    config: &VaultConfig,
) -> Result<(usize, usize)> {
    let pool = db.pool();
    // The vault's own tables (created only if the Go schema lacks them).
    db.migrate(&vault::MIGRATOR, vault::MIGRATIONS_TABLE)
        .await?;
    let local = LocalCryptoProvider::new(mk, env.generation);
    let max_value = config.secrets.max_value_bytes as usize;
    let mut tx = pool
        .begin()
        .await
        .map_err(|e| Error::sql("begin legacy migration", e))?;
    let result = async {
        sqlx::query(
            "INSERT INTO keys (id, name, remote_key_id, type, created_at) VALUES (?1, ?2, ?3, 'encryption', ?4)
             ON CONFLICT(name) DO UPDATE SET remote_key_id = excluded.remote_key_id",
        )
        .bind(uuid::Uuid::new_v4().to_string())
        .bind(LOCAL_KEY_NAME)
        .bind(LOCAL_REMOTE_ID)
        .bind(store::db_now())
        .execute(&mut *tx)
        .await
        .map_err(|e| Error::sql("register the local key", e))?;
        let local_key_id: String = sqlx::query_scalar("SELECT id FROM keys WHERE name = ?1")
            .bind(LOCAL_KEY_NAME)
            .fetch_one(&mut *tx)
            .await
            .map_err(|e| Error::sql("read the local key", e))?;

        let mut secrets = 0;
        let rows = sqlx::query(
            "SELECT s.id AS id, s.name AS name, s.encrypted_value AS blob, k.remote_key_id AS remote
             FROM secrets s LEFT JOIN keys k ON k.id = s.key_secrets",
        )
        .fetch_all(&mut *tx)
        .await
        .map_err(|e| Error::sql("read legacy secrets", e))?;
        for r in rows {
            let id: String = r.try_get("id").map_err(|e| Error::sql("read legacy secret", e))?;
            let name: String = r.try_get("name").map_err(|e| Error::sql("read legacy secret", e))?;
            let blob: Vec<u8> = r.try_get("blob").map_err(|e| Error::sql("read legacy secret", e))?;
            let remote: Option<String> = r.try_get("remote").map_err(|e| Error::sql("read legacy secret", e))?;
            let is_local = remote.as_deref() == Some(LOCAL_REMOTE_ID);
            let plain = match aead::open_legacy(k0, &blob) {
                Ok(p) => p,
                // A KMS ciphertext: left byte for byte (CP-8).
                Err(_) if !is_local => continue,
                Err(_) => return Err(Error::LegacyIntegrity { table: "secrets", name }),
            };
            let aad = store::secret_aad(&name, max_value.max(plain.len()));
            let fresh = local.encrypt_sync(plain.expose(), aad)?;
            sqlx::query("UPDATE secrets SET encrypted_value = ?1, key_secrets = ?2 WHERE id = ?3")
                .bind(fresh)
                .bind(&local_key_id)
                .bind(id)
                .execute(&mut *tx)
                .await
                .map_err(|e| Error::sql("rewrite secret", e))?;
            secrets += 1;
        }

        let mut profiles = 0;
        let has_profiles: i64 = sqlx::query_scalar("SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = 'config_profiles'")
            .fetch_one(&mut *tx)
            .await
            .map_err(|e| Error::sql("inspect schema", e))?;
        if has_profiles > 0 {
            let rows = sqlx::query("SELECT id, name, encrypted_data FROM config_profiles")
                .fetch_all(&mut *tx)
                .await
                .map_err(|e| Error::sql("read legacy profiles", e))?;
            for r in rows {
                let id: String = r.try_get("id").map_err(|e| Error::sql("read legacy profile", e))?;
                let name: String = r.try_get("name").map_err(|e| Error::sql("read legacy profile", e))?;
                let blob: Vec<u8> = r.try_get("encrypted_data").map_err(|e| Error::sql("read legacy profile", e))?;
                let plain = aead::open_legacy(k0, &blob).map_err(|_| Error::LegacyIntegrity {
                    table: "config_profiles",
                    name: name.clone(),
                })?;
                let aad = AeadContext {
                    purpose: BlobPurpose::ConfigProfiles,
                    context: name.as_bytes(),
                    max_blob_len: aead::LARGE_BLOB_MAX,
                };
                let fresh = local.encrypt_sync(plain.expose(), aad)?;
                sqlx::query("UPDATE config_profiles SET encrypted_data = ?1 WHERE id = ?2")
                    .bind(fresh)
                    .bind(id)
                    .execute(&mut *tx)
                    .await
                    .map_err(|e| Error::sql("rewrite profile", e))?;
                profiles += 1;
            }
        }
        sqlx::query("DELETE FROM security_config WHERE name = 'default'")
            .execute(&mut *tx)
            .await
            .map_err(|e| Error::sql("delete the legacy salt", e))?;
        sqlx::query("INSERT INTO security_config (name, value) VALUES ('mk_id', ?1) ON CONFLICT(name) DO UPDATE SET value = excluded.value")
            .bind(env.mk_id().0.to_vec())
            .execute(&mut *tx)
            .await
            .map_err(|e| Error::sql("write mk_id", e))?;
        store::set_config_text(&mut *tx, "format", "v1").await?;
        store::set_config_text(&mut *tx, "default_key", LOCAL_KEY_NAME).await?;
        export::fault("L2");
        Ok::<_, Error>((secrets, profiles))
    }
    .await;
    match result {
        Ok(counts) => {
            tx.commit()
                .await
                .map_err(|e| Error::sql("commit legacy migration", e))?;
            Ok(counts)
        }
        Err(e) => {
            let _ = tx.rollback().await;
            Err(e)
        }
    }
}

/// L3–L5 and the vault.
#[allow(clippy::too_many_arguments)]
async fn finish(
    data_dir: &Path,
    config: &VaultConfig,
    lock: DataDirLock,
    mut env: Envelope,
    mk: MasterKey,
    p: &SecretString,
    db: Database,
    source: Source,
    warnings: Vec<String>,
) -> Result<Vault> {
    export::fault("L3");
    // L3: purge old ciphertexts and the checksum from free pages and the WAL.
    let purged = async {
        sqlx::query("VACUUM")
            .execute(db.pool())
            .await
            .map_err(|e| Error::sql("vacuum", e))?;
        sqlx::query("PRAGMA wal_checkpoint(TRUNCATE)")
            .execute(db.pool())
            .await
            .map_err(|e| Error::sql("checkpoint", e))?;
        Ok::<_, Error>(())
    }
    .await;
    db.close().await;
    purged?;
    // L4: a passphrase-keyed SQLCipher file moves to the raw HKDF key.
    if let Some(LegacyDbKeying::Passphrase {
        compatibility,
        page_size,
    }) = env.legacy_db_keying
    {
        let path = db_path(data_dir);
        let key = mk.derive(KeyPurpose::Sqlcipher);
        let still_legacy = Database::open(
            &path,
            Keying::LegacyPassphrase {
                passphrase: p,
                compatibility,
                page_size,
            },
            OpenOptions::default(),
        )
        .await;
        match still_legacy {
            Ok(db) => {
                db.close().await;
                let hook = vault::EnvelopeHook {
                    data_dir,
                    progress: &vault::no_progress,
                };
                export::export(
                    &path,
                    Operation::LegacyRekey,
                    Keying::LegacyPassphrase {
                        passphrase: p,
                        compatibility,
                        page_size,
                    },
                    Target {
                        keying: Keying::RawKey {
                            key: &key,
                            page_size: env.db.page_size,
                        },
                    },
                    &lock,
                    &hook,
                )
                .await?;
                if let Some(e) = Envelope::load(data_dir)? {
                    env.db = e.db;
                }
            }
            // Already exported before a crash (export recovery completed it).
            Err(lango_store::Error::WrongKey) => {}
            Err(e) => return Err(e.into()),
        }
        env.db.encrypted = true;
    }
    export::fault("L5");
    // L5.
    env.state = State::Active;
    env.legacy_db_keying = None;
    env.save(data_dir)?;
    let vault = Vault::assemble(data_dir, config, lock, env, mk, source, warnings).await?;
    tracing::info!(
        event = "secrets.legacy.migrated",
        "Go data migrated to the v1 format"
    );
    Ok(vault)
}

/// Finishes an interrupted migration whose envelope is `pending-legacy`.
#[allow(clippy::too_many_arguments)]
pub(crate) async fn resume(
    data_dir: &Path,
    config: &VaultConfig,
    _prompter: &dyn Prompter,
    lock: DataDirLock,
    env: Envelope,
    mk: MasterKey,
    p: SecretString,
    source: Source,
    mut warnings: Vec<String>,
) -> Result<Vault> {
    let path = db_path(data_dir);
    let legacy = env.legacy_db_keying.unwrap_or(LegacyDbKeying::Plaintext);
    let opened = Database::open(
        &path,
        vault::legacy_keying(legacy, &p),
        OpenOptions::default(),
    )
    .await;
    let db = match opened {
        Ok(db) => db,
        Err(lango_store::Error::WrongKey) => {
            // L4 completed before the crash: only L5 is left.
            let mut env = env;
            env.state = State::Active;
            env.legacy_db_keying = None;
            env.db.encrypted = true;
            env.save(data_dir)?;
            return Vault::assemble(data_dir, config, lock, env, mk, source, warnings).await;
        }
        Err(e) => return Err(e.into()),
    };
    let marker: Option<Vec<u8>> = if table_exists(db.pool(), "security_config").await? {
        sqlx::query_scalar("SELECT CAST(value AS BLOB) FROM security_config WHERE name = 'mk_id'")
            .fetch_optional(db.pool())
            .await
            .map_err(|e| Error::sql("read mk_id", e))?
    } else {
        None
    };
    if marker.as_deref() != Some(&env.mk_id().0[..]) {
        // L2 never committed: run it now with this envelope's key.
        let k0 = match check_k0(&db, &p, &mut warnings).await? {
            Some(k) => k,
            None => {
                db.close().await;
                return Err(Error::WrongPassphrase {
                    via: source,
                    legacy_db: false,
                });
            }
        };
        if let Err(e) = reencrypt(&db, &k0, &mk, &env, config).await {
            db.close().await;
            return Err(e);
        }
    }
    finish(data_dir, config, lock, env, mk, &p, db, source, warnings).await
}

/// Writes a Go-format legacy blob with the legacy key (for building Go-like test data).
pub fn seal_go_blob(passphrase: &SecretString, salt: &[u8], plaintext: &[u8]) -> Result<Vec<u8>> {
    let k0 = kdf::legacy_key(passphrase.expose().as_bytes(), salt)?;
    Ok(aead::seal_legacy(&k0, plaintext)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The decoded Go keyring value lives in one wiping buffer, allocated at its final size
    /// (the capacity shows no reallocation left a copy in freed memory). Freed memory cannot be
    /// inspected from safe Rust, so this pins the buffer's type and allocation instead.
    #[test]
    fn go_keyring_values_decode_into_one_wiping_buffer() {
        fn wiping(b: &Zeroizing<Vec<u8>>) -> &Zeroizing<Vec<u8>> {
            b
        }
        let pass = "a legacy passphrase that is long enough to need several reallocations";
        let b64 = format!(
            "go-keyring-base64:{}",
            base64::Engine::encode(&base64::engine::general_purpose::STANDARD, pass)
        );
        let hexed = format!("go-keyring-encoded:{}", hex::encode(pass));
        for (value, cap) in [
            (b64.as_str(), (b64.len() - 18).div_ceil(4) * 3),
            (hexed.as_str(), pass.len()),
        ] {
            let d = decode_go_prefixed(value).unwrap();
            assert_eq!(wiping(&d).as_slice(), pass.as_bytes());
            assert_eq!(d.capacity(), cap, "{value}: the buffer was reallocated");
            let v = decode_go_keyring_value(SecretString::new(value.to_owned()));
            assert_eq!(v.expose(), pass);
        }
        // Undecodable payloads: no bytes come back, the value is used as stored.
        for bad in [
            "go-keyring-base64:!!!notbase64",
            "go-keyring-encoded:abc",
            "go-keyring-encoded:zz",
        ] {
            assert!(decode_go_prefixed(bad).is_none(), "{bad}");
            assert_eq!(
                decode_go_keyring_value(SecretString::new(bad.to_owned())).expose(),
                bad
            );
        }
        // Decodes, but not to text: the raw value is used; the decoded bytes were wiped.
        let not_text = "go-keyring-encoded:ff00fe";
        assert!(decode_go_prefixed(not_text).is_some());
        assert_eq!(
            decode_go_keyring_value(SecretString::new(not_text.to_owned())).expose(),
            not_text
        );
        assert!(decode_go_prefixed("plain passphrase").is_none());
    }
}
