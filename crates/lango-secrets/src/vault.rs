//! The unlock sequence (secrets spec §3.4, rules UN-1..UN-12) and the unlocked [`Vault`].
//!
//! ```text
//! UN-1  data directory: created 0700; writable by others → refused
//! UN-2  data-directory lock; recovery of an interrupted export / envelope write
//! UN-3  classify: v1 (key-envelope.json) | first run | legacy Go data | newer Go format
//! UN-4  unlock material from keyring → keyfile → interactive → stdin, verified at once
//! UN-5  v1: unwrap the master key from a matching slot (nothing else is opened before)
//! UN-6  legacy: checksum or trial decryption, then the one-time migration (2.4.4)
//! UN-7  open the database through the one factory; its mk_id must be the envelope's
//! UN-8  additive migrations      UN-9  key registry defaults      UN-10 keyfile shredded
//! UN-11 first run: policy check before anything is written; envelope first, then database
//! UN-12 the Vault handle; dropping it wipes the master key and every derived key
//! ```

use std::{
    path::{Path, PathBuf},
    sync::Arc,
};

use lango_crypto::{
    MasterKey, SecretKey32, SecretString,
    aead::{self, BlobPurpose, ProviderTag},
    hierarchy::KeyPurpose,
    provider::{AeadContext, LocalCryptoProvider},
};
use lango_keyring::Keyring;
use lango_store::{
    DataDirLock, Database, FileState, Keying, LockMode, OpenOptions,
    export::{self, ExportHooks, Operation, Step, Target},
    fsutil,
    sqlx::{self, Row},
    state,
};

use crate::{
    Error, Result,
    config::VaultConfig,
    envelope::{self, DbParams, Envelope, LegacyDbKeying, SlotKind, State},
    passphrase::{self, Prompter, Source},
    store::{self, KeyRegistry, SecretsStore},
};

/// File name of the database in the data directory.
pub const DB_FILE: &str = "lango.db";
/// The keyring service name.
pub const KEYRING_SERVICE: &str = "lango";
/// The Go node's keyring account (its value is the passphrase).
pub const LEGACY_KEYRING_ACCOUNT: &str = "master-passphrase";
/// History table of this crate's migrations.
pub(crate) const MIGRATIONS_TABLE: &str = "_lango_secrets_migrations";
pub(crate) static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

/// How an unlock may proceed.
#[derive(Debug, Clone, Copy)]
pub struct UnlockOptions {
    /// Create a new vault when none exists (first run). Otherwise that is
    /// [`Error::NotInitialised`].
    pub allow_create: bool,
    /// Keep the data-directory lock exclusive for the vault's life (commands that replace
    /// files). Otherwise it is downgraded to shared after start-up steps.
    pub exclusive: bool,
    /// Whether the keyring may be used as an unlock source (false for `keyring store`).
    pub use_keyring: bool,
    /// Migrate Go data even when `security.legacy.autoMigrate` is off (`upgrade-legacy`).
    pub force_legacy_migration: bool,
}

impl Default for UnlockOptions {
    fn default() -> Self {
        Self {
            allow_create: false,
            exclusive: false,
            use_keyring: true,
            force_legacy_migration: false,
        }
    }
}

/// What happened during unlock, for messages and events.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnlockReport {
    /// Where the unlock material came from.
    pub source: Source,
    /// A new vault was created.
    pub created: bool,
    /// Go data was migrated: (secrets, profiles) re-encrypted.
    pub legacy_migrated: Option<(usize, usize)>,
    /// The keyfile was shredded.
    pub keyfile_shredded: bool,
    /// Warnings shown to the operator.
    pub warnings: Vec<String>,
}

/// The unlocked vault (UN-12). Dropping it wipes the master key and the derived keys.
pub struct Vault {
    data_dir: PathBuf,
    config: VaultConfig,
    lock: DataDirLock,
    db: Option<Database>,
    envelope: Envelope,
    mk: MasterKey,
    local: Arc<LocalCryptoProvider>,
    /// The KMS or HSM provider attached by the application ([`Vault::attach_kms`]).
    remote: Option<Arc<dyn lango_crypto::provider::CryptoProvider>>,
    report: UnlockReport,
}

impl std::fmt::Debug for Vault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Vault")
            .field("data_dir", &self.data_dir)
            .field("mk_id", &self.envelope.mk_id)
            .field("generation", &self.envelope.generation)
            .finish_non_exhaustive()
    }
}

/// Updates the envelope's database parameters when the export procedure replaces the file.
pub(crate) struct EnvelopeHook<'a> {
    pub(crate) data_dir: &'a Path,
    pub(crate) progress: &'a (dyn Fn(Step) + Sync),
}

impl ExportHooks for EnvelopeHook<'_> {
    fn step(&self, step: Step) {
        (self.progress)(step);
    }

    fn database_replaced(&self, encrypted: bool, page_size: u32) -> lango_store::Result<()> {
        let map = |e: Error| {
            lango_store::Error::io("update key envelope", std::io::Error::other(e.to_string()))
        };
        if let Some(mut env) = Envelope::load(self.data_dir).map_err(map)? {
            env.db.encrypted = encrypted;
            env.db.page_size = page_size;
            env.save(self.data_dir).map_err(map)?;
        }
        Ok(())
    }
}

pub(crate) fn no_progress(_: Step) {}

/// The database path of a data directory.
pub fn db_path(data_dir: &Path) -> PathBuf {
    data_dir.join(DB_FILE)
}

/// Runs a KDF (or anything slow) on the blocking pool.
pub(crate) async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T> + Send + 'static,
) -> Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| Error::io("KDF worker", std::io::Error::other(e.to_string())))?
}

/// Adds a passphrase slot wrapping `mk` under `p` with `params`, on the blocking pool (the
/// KDF is deliberately slow).
pub(crate) async fn with_passphrase_slot(
    mut env: Envelope,
    mk: &MasterKey,
    params: lango_crypto::KdfParams,
    p: &SecretString,
) -> Result<Envelope> {
    let (mk, p) = (mk.duplicate(), p.duplicate());
    blocking(move || {
        env.add_slot(
            &mk,
            SlotKind::Passphrase,
            params,
            p.expose().as_bytes(),
            None,
        )?;
        Ok(env)
    })
    .await
}

async fn try_passphrase(env: &Envelope, p: &SecretString) -> Result<Option<MasterKey>> {
    let env = env.clone();
    let p = p.duplicate();
    blocking(move || {
        Ok(env
            .unwrap(SlotKind::Passphrase, p.expose().as_bytes())?
            .map(|(mk, _)| mk))
    })
    .await
}

async fn try_keyring_secret(env: &Envelope, secret: &SecretKey32) -> Result<Option<MasterKey>> {
    env.unwrap(SlotKind::Keyring, secret.expose())
        .map(|o| o.map(|(mk, _)| mk))
}

fn source_enabled(config: &VaultConfig, s: Source) -> bool {
    config.passphrase.sources.contains(&s)
}

/// Checks the data directory (UN-1).
fn check_data_dir(
    data_dir: &Path,
    prompter: &dyn Prompter,
    warnings: &mut Vec<String>,
) -> Result<()> {
    match fsutil::ensure_private_dir(data_dir) {
        Ok(fsutil::DirCheck::ReadableByOthers) => {
            let w = format!(
                "warning: data directory {} is readable by group or others; run `chmod 700` on it",
                data_dir.display()
            );
            prompter.warn(&w);
            warnings.push(w);
            Ok(())
        }
        Ok(_) => Ok(()),
        Err(lango_store::Error::Insecure { path, reason }) => {
            Err(Error::InsecureDataDir { path, reason })
        }
        Err(e) => Err(e.into()),
    }
}

/// Takes the lock and runs recovery (UN-2). Returns the lock (exclusive if it could be had).
fn lock_and_recover(data_dir: &Path, exclusive_required: bool) -> Result<DataDirLock> {
    let db = db_path(data_dir);
    match DataDirLock::acquire(data_dir, LockMode::Exclusive) {
        Ok(lock) => {
            Envelope::remove_stale_temps(data_dir)?;
            let hook = EnvelopeHook {
                data_dir,
                progress: &no_progress,
            };
            export::recover(&db, &hook)?;
            Ok(lock)
        }
        Err(lango_store::Error::Busy(p)) if !exclusive_required => {
            let lock = DataDirLock::acquire(data_dir, LockMode::Shared)?;
            // Recovery needs the exclusive lock; refuse rather than read a half-converted file.
            if export::journal_path(&db).exists() || !export::leftovers(&db)?.is_empty() {
                return Err(Error::Busy(p));
            }
            Ok(lock)
        }
        Err(e) => Err(e.into()),
    }
}

/// What the data directory holds (UN-3).
enum Layout {
    V1(Envelope),
    FirstRun,
    Legacy { sqlcipher: bool },
}

async fn classify(data_dir: &Path) -> Result<Layout> {
    let env = Envelope::load(data_dir)?;
    if let Some(env) = env {
        return Ok(Layout::V1(env));
    }
    if data_dir.join(envelope::GO_ENVELOPE).exists() {
        return Err(Error::NewerGoFormat(data_dir.join(envelope::GO_ENVELOPE)));
    }
    let db = db_path(data_dir);
    match state::detect_usable(&db)? {
        FileState::Absent | FileState::Empty => Ok(Layout::FirstRun),
        FileState::EncryptedOrForeign => Ok(Layout::Legacy { sqlcipher: true }),
        FileState::Plaintext => {
            let d = Database::open(&db, Keying::Plaintext, OpenOptions::default()).await?;
            let rows = config_rows(d.pool()).await;
            d.close().await;
            let rows = rows?;
            if rows.iter().any(|r| r == "format") {
                Err(Error::EnvelopeMissing(envelope::path_in(data_dir)))
            } else if rows.iter().any(|r| r == "default") {
                Ok(Layout::Legacy { sqlcipher: false })
            } else {
                Ok(Layout::FirstRun)
            }
        }
        FileState::Truncated | FileState::NotRegularFile => unreachable_state(&db),
    }
}

fn unreachable_state(db: &Path) -> Result<Layout> {
    Err(Error::Store(lango_store::Error::BadFile {
        path: db.to_owned(),
        reason: "not a database".into(),
    }))
}

/// Names of the `security_config` rows (empty when the table does not exist).
async fn config_rows(pool: &sqlx::SqlitePool) -> Result<Vec<String>> {
    let exists: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = 'security_config'",
    )
    .fetch_one(pool)
    .await
    .map_err(|e| Error::sql("inspect schema", e))?;
    if exists == 0 {
        return Ok(Vec::new());
    }
    sqlx::query_scalar("SELECT name FROM security_config")
        .fetch_all(pool)
        .await
        .map_err(|e| Error::sql("read security_config", e))
}

async fn config_blob(pool: &sqlx::SqlitePool, name: &str) -> Result<Option<Vec<u8>>> {
    sqlx::query_scalar("SELECT CAST(value AS BLOB) FROM security_config WHERE name = ?1")
        .bind(name)
        .fetch_optional(pool)
        .await
        .map_err(|e| Error::sql("read security_config", e))
}

/// Acquires unlock material for a v1 vault and unwraps the master key (UN-4, UN-5, PA-7).
async fn acquire_v1(
    data_dir: &Path,
    env: &Envelope,
    config: &VaultConfig,
    prompter: &dyn Prompter,
    opts: UnlockOptions,
    passphrase_only: bool,
    warnings: &mut Vec<String>,
) -> Result<(MasterKey, Source, Option<PathBuf>, Option<SecretString>)> {
    let mut tried: Vec<(Source, String)> = Vec::new();

    if source_enabled(config, Source::Keyring) {
        if !opts.use_keyring {
            tried.push((Source::Keyring, "not used by this command".into()));
        } else if !config.keyring.is_active() {
            tried.push((Source::Keyring, "disabled in the configuration".into()));
        } else if passphrase_only || !env.has_slot(SlotKind::Keyring) {
            tried.push((
                Source::Keyring,
                "no keyring slot in the key envelope".into(),
            ));
        } else {
            match keyring_get(config, KEYRING_SERVICE, &env.keyring_account()).await {
                Ok(Some(value)) => match envelope::decode_keyring_secret(&value) {
                    Some(secret) => match try_keyring_secret(env, &secret).await? {
                        Some(mk) => return Ok((mk, Source::Keyring, None, None)),
                        None => {
                            let w = "warning: the unlock key in the OS keyring no longer opens this vault (run `lango-node security keyring store` again)".to_owned();
                            tracing::warn!(
                                event = "secrets.unlock.failed",
                                source = "keyring",
                                reason = "rejected"
                            );
                            prompter.warn(&w);
                            warnings.push(w);
                            tried.push((
                                Source::Keyring,
                                "the stored unlock key was rejected".into(),
                            ));
                        }
                    },
                    None => tried.push((
                        Source::Keyring,
                        "the keyring entry is not a lango unlock key".into(),
                    )),
                },
                Ok(None) => tried.push((Source::Keyring, "no unlock key stored".into())),
                Err(e) => {
                    if e.is_unavailable() {
                        tracing::debug!(error = %e, "keyring unavailable");
                    } else {
                        let w = format!("warning: OS keyring: {e}");
                        prompter.warn(&w);
                        warnings.push(w);
                    }
                    tried.push((Source::Keyring, e.to_string()));
                }
            }
        }
    }

    if source_enabled(config, Source::Keyfile) {
        let path = config.keyfile_path(data_dir);
        match passphrase::read_keyfile(&path)? {
            Some(p) => {
                return match try_passphrase(env, &p).await? {
                    Some(mk) => Ok((
                        mk,
                        Source::Keyfile,
                        Some(path),
                        passphrase_only.then_some(p),
                    )),
                    None => Err(wrong(Source::Keyfile)),
                };
            }
            None => tried.push((
                Source::Keyfile,
                format!("{} does not exist", path.display()),
            )),
        }
    }

    if source_enabled(config, Source::Interactive) {
        if prompter.interactive() {
            for attempt in 1..=3 {
                match prompter.prompt_hidden("Enter passphrase: ")? {
                    Some(p) => match try_passphrase(env, &p).await? {
                        Some(mk) => {
                            return Ok((
                                mk,
                                Source::Interactive,
                                None,
                                passphrase_only.then_some(p),
                            ));
                        }
                        None if attempt < 3 => prompter.warn("Wrong passphrase, try again."),
                        None => return Err(wrong(Source::Interactive)),
                    },
                    None => {
                        tried.push((Source::Interactive, "no input".into()));
                        break;
                    }
                }
            }
        } else {
            tried.push((Source::Interactive, "no terminal".into()));
        }
    }

    if source_enabled(config, Source::Stdin) {
        if prompter.stdin_available() {
            match prompter.read_stdin_line()? {
                Some(p) => {
                    return match try_passphrase(env, &p).await? {
                        Some(mk) => Ok((mk, Source::Stdin, None, passphrase_only.then_some(p))),
                        None => Err(wrong(Source::Stdin)),
                    };
                }
                None => tried.push((Source::Stdin, "no passphrase line".into())),
            }
        } else {
            tried.push((Source::Stdin, "not available".into()));
        }
    }
    Err(Error::NoPassphraseSource { tried })
}

fn wrong(source: Source) -> Error {
    tracing::warn!(
        event = "secrets.unlock.failed",
        source = source.name(),
        reason = "wrong passphrase"
    );
    Error::WrongPassphrase {
        via: source,
        legacy_db: false,
    }
}

async fn keyring_get(
    config: &VaultConfig,
    service: &str,
    account: &str,
) -> std::result::Result<Option<SecretString>, lango_keyring::Error> {
    let kr_config = config.keyring.clone();
    let (s, a) = (service.to_owned(), account.to_owned());
    tokio::task::spawn_blocking(move || lango_keyring::open(&kr_config)?.get(&s, &a))
        .await
        .map_err(|e| lango_keyring::Error::Backend {
            backend: "thread".into(),
            reason: e.to_string(),
        })?
}

/// Acquires a new passphrase for a first run (PA-9): keyfile (no confirmation),
/// interactive (twice, up to 3 tries), stdin (one line). Policy checked before use.
async fn acquire_new(
    data_dir: &Path,
    config: &VaultConfig,
    prompter: &dyn Prompter,
) -> Result<(SecretString, Source, Option<PathBuf>)> {
    let mut tried = vec![(Source::Keyring, "not used for a new vault".to_owned())];
    if source_enabled(config, Source::Keyfile) {
        let path = config.keyfile_path(data_dir);
        match passphrase::read_keyfile(&path)? {
            Some(p) => {
                passphrase::check_policy(&p, config.passphrase.min_length)?;
                return Ok((p, Source::Keyfile, Some(path)));
            }
            None => tried.push((
                Source::Keyfile,
                format!("{} does not exist", path.display()),
            )),
        }
    }
    if source_enabled(config, Source::Interactive) {
        if prompter.interactive() {
            for attempt in 1..=3 {
                let Some(p) = prompter.prompt_hidden("Enter new passphrase: ")? else {
                    break;
                };
                if let Err(e) = passphrase::check_policy(&p, config.passphrase.min_length) {
                    if attempt == 3 {
                        return Err(e);
                    }
                    prompter.warn(&e.to_string());
                    continue;
                }
                let Some(again) = prompter.prompt_hidden("Confirm passphrase: ")? else {
                    break;
                };
                if again == p {
                    return Ok((p, Source::Interactive, None));
                }
                if attempt == 3 {
                    return Err(Error::PassphraseMismatch);
                }
                prompter.warn("Passphrases do not match, try again.");
            }
            tried.push((Source::Interactive, "no input".into()));
        } else {
            tried.push((Source::Interactive, "no terminal".into()));
        }
    }
    if source_enabled(config, Source::Stdin) {
        if prompter.stdin_available() {
            if let Some(p) = prompter.read_stdin_line()? {
                passphrase::check_policy(&p, config.passphrase.min_length)?;
                return Ok((p, Source::Stdin, None));
            }
            tried.push((Source::Stdin, "no passphrase line".into()));
        } else {
            tried.push((Source::Stdin, "not available".into()));
        }
    }
    Err(Error::NoPassphraseSource { tried })
}

/// Unlocks (or, when allowed, creates) the vault in `data_dir`.
///
/// A failed unlock changes nothing in the data directory (WP-2): not even the lock file is
/// left behind when this call created it.
pub async fn unlock(
    data_dir: &Path,
    config: &VaultConfig,
    prompter: &dyn Prompter,
    opts: UnlockOptions,
) -> Result<Vault> {
    let mut warnings = Vec::new();
    check_data_dir(data_dir, prompter, &mut warnings)?;
    if !envelope::path_in(data_dir).exists() && data_dir.join(envelope::GO_ENVELOPE).exists() {
        return Err(Error::NewerGoFormat(data_dir.join(envelope::GO_ENVELOPE)));
    }
    let lock_file = data_dir.join(lango_store::lock::LOCK_FILE);
    let lock_existed = lock_file.exists();
    let result = unlock_locked(data_dir, config, prompter, opts, warnings).await;
    if result.is_err() && !lock_existed {
        // Leave no lock file behind, but never pull it from under another process: it is
        // removed only while this process holds it exclusively (others then notice and retry
        // on a new file, see lango_store::lock); if anyone else holds it, it stays.
        if let Ok(lock) = DataDirLock::acquire(data_dir, LockMode::Exclusive) {
            let _ = lock.release_and_remove();
        }
    }
    result
}

/// Whether the database file is encrypted, from its header (DB-6), checked against the key
/// envelope: a plaintext file where the envelope records an encrypted database is refused
/// ([`Error::PlaintextDatabase`]), never opened and never adopted by rewriting the envelope.
/// An absent or empty file takes the envelope's word (it is about to be created).
fn header_says_encrypted(data_dir: &Path, env: &Envelope) -> Result<bool> {
    let db_file = db_path(data_dir);
    match state::detect_usable(&db_file)? {
        FileState::Absent | FileState::Empty => Ok(env.db.encrypted),
        FileState::Plaintext if env.db.encrypted => {
            tracing::warn!(
                event = "secrets.db.unexpected_plaintext",
                path = %db_file.display(),
                "a plaintext database sits where the key envelope records an encrypted one; refused"
            );
            Err(Error::PlaintextDatabase {
                path: db_file,
                envelope: envelope::path_in(data_dir),
            })
        }
        FileState::Plaintext => Ok(false),
        _ => Ok(true),
    }
}

async fn unlock_locked(
    data_dir: &Path,
    config: &VaultConfig,
    prompter: &dyn Prompter,
    opts: UnlockOptions,
    mut warnings: Vec<String>,
) -> Result<Vault> {
    let lock = lock_and_recover(data_dir, opts.exclusive)?;
    let mut preverified = None;
    if data_dir.join(ROTATION_FILE).exists() {
        if lock.mode() != LockMode::Exclusive {
            return Err(Error::Busy(data_dir.to_owned()));
        }
        preverified =
            Some(recover_rotation(data_dir, config, prompter, opts, &lock, &mut warnings).await?);
    }
    let layout = classify(data_dir).await?;
    let need_exclusive = matches!(layout, Layout::FirstRun | Layout::Legacy { .. })
        || matches!(&layout, Layout::V1(e) if e.state == State::PendingLegacy);
    if need_exclusive && lock.mode() != LockMode::Exclusive {
        return Err(Error::Busy(data_dir.to_owned()));
    }
    let mut vault = match layout {
        Layout::V1(env) => {
            open_v1(
                data_dir,
                env,
                config,
                prompter,
                opts,
                lock,
                preverified,
                warnings,
            )
            .await?
        }
        Layout::FirstRun => {
            if !opts.allow_create {
                return Err(Error::NotInitialised(data_dir.to_owned()));
            }
            create(data_dir, config, prompter, lock, warnings).await?
        }
        Layout::Legacy { sqlcipher } => {
            if !config.legacy.auto_migrate && !opts.force_legacy_migration {
                return Err(Error::LegacyMigrationRequired);
            }
            crate::legacy::unlock_and_migrate(data_dir, config, prompter, lock, sqlcipher, warnings)
                .await?
        }
    };
    if !opts.exclusive {
        vault.lock.downgrade()?;
    }
    tracing::info!(
        event = "secrets.unlock.ok",
        source = vault.report.source.name(),
        created = vault.report.created,
        "vault unlocked"
    );
    Ok(vault)
}

fn finish_keyfile(config: &VaultConfig, prompter: &dyn Prompter, keyfile: Option<&Path>) -> bool {
    match keyfile {
        Some(path) if !config.passphrase.keep_keyfile => {
            passphrase::shred_keyfile(path, prompter);
            !path.exists()
        }
        _ => false,
    }
}

#[allow(clippy::too_many_arguments)]
async fn open_v1(
    data_dir: &Path,
    env: Envelope,
    config: &VaultConfig,
    prompter: &dyn Prompter,
    opts: UnlockOptions,
    lock: DataDirLock,
    preverified: Option<(SecretString, Source, Option<PathBuf>)>,
    mut warnings: Vec<String>,
) -> Result<Vault> {
    let pending = env.state == State::PendingLegacy;
    let (mk, source, keyfile, passphrase) = match preverified {
        // A rotation recovery already asked for the passphrase: do not ask twice.
        Some((p, source, keyfile)) => match try_passphrase(&env, &p).await? {
            Some(mk) => (mk, source, keyfile, pending.then_some(p)),
            None => return Err(wrong(source)),
        },
        None => {
            acquire_v1(
                data_dir,
                &env,
                config,
                prompter,
                opts,
                pending,
                &mut warnings,
            )
            .await?
        }
    };
    if env.state == State::PendingLegacy {
        // The legacy migration was interrupted; finish it with the passphrase just verified.
        let p = passphrase.ok_or(Error::LegacyMigrationRequired)?;
        let mut v = crate::legacy::resume(
            data_dir, config, prompter, lock, env, mk, p, source, warnings,
        )
        .await?;
        v.report.keyfile_shredded = finish_keyfile(config, prompter, keyfile.as_deref());
        return Ok(v);
    }
    let mut vault = Vault::assemble(data_dir, config, lock, env, mk, source, warnings).await?;
    vault.report.keyfile_shredded = finish_keyfile(config, prompter, keyfile.as_deref());
    Ok(vault)
}

async fn create(
    data_dir: &Path,
    config: &VaultConfig,
    prompter: &dyn Prompter,
    lock: DataDirLock,
    warnings: Vec<String>,
) -> Result<Vault> {
    let (p, source, keyfile) = acquire_new(data_dir, config, prompter).await?;
    let mk = MasterKey::generate()?;
    let db_state = state::detect_usable(&db_path(data_dir))?;
    // An existing plaintext database (no vault in it) stays plaintext (DB-7).
    let encrypted = config.db_encryption.enabled && !db_state.is_present();
    let mut env = Envelope::new(
        &mk,
        1,
        DbParams {
            encrypted,
            page_size: config.db_encryption.cipher_page_size,
            compatibility: 4,
        },
    );
    env = with_passphrase_slot(env, &mk, config.kdf.params(), &p).await?;
    drop(p);
    // Envelope first: a crash now leaves an envelope whose database is absent, which the next
    // unlock completes (UN-11).
    env.save(data_dir)?;
    export::fault("UN11");
    let mut vault = Vault::assemble(data_dir, config, lock, env, mk, source, warnings).await?;
    vault.report.created = true;
    vault.report.keyfile_shredded = finish_keyfile(config, prompter, keyfile.as_deref());
    Ok(vault)
}

impl Vault {
    /// Opens (creating when absent) the database of an unlocked envelope, checks that it
    /// belongs to it (UN-7), migrates (UN-8) and registers the default key (UN-9).
    pub(crate) async fn assemble(
        data_dir: &Path,
        config: &VaultConfig,
        lock: DataDirLock,
        mut env: Envelope,
        mk: MasterKey,
        source: Source,
        warnings: Vec<String>,
    ) -> Result<Self> {
        let db_file = db_path(data_dir);
        let sql_key = mk.derive(KeyPurpose::Sqlcipher);
        // A plaintext file where the envelope says "encrypted" is refused here, before it is
        // opened. The other disagreement (an encrypted file, envelope "plaintext") is repaired
        // below, once the vault's key has opened the file (DB-6).
        let header_encrypted = header_says_encrypted(data_dir, &env)?;
        let repair = header_encrypted != env.db.encrypted;
        let keying = if header_encrypted {
            Keying::RawKey {
                key: &sql_key,
                page_size: env.db.page_size,
            }
        } else {
            Keying::Plaintext
        };
        let db = match Database::open(
            &db_file,
            keying,
            OpenOptions {
                create: true,
                ..OpenOptions::default()
            },
        )
        .await
        {
            Ok(db) => db,
            Err(lango_store::Error::WrongKey) => {
                return Err(Error::EnvelopeDbMismatch(
                    "the database does not open with this vault's key".into(),
                ));
            }
            Err(e) => return Err(e.into()),
        };
        if repair {
            // DB-6: the file opened with this vault's key, so it is encrypted and ours; record
            // that when we may write the envelope.
            tracing::warn!(
                header_encrypted,
                "key envelope disagreed with the database header; using the header"
            );
            env.db.encrypted = header_encrypted;
            if lock.mode() == LockMode::Exclusive
                && let Err(e) = env.save(data_dir)
            {
                db.close().await;
                return Err(e);
            }
        }
        let check = async {
            let marker = if config_rows(db.pool()).await?.iter().any(|r| r == "mk_id") {
                config_blob(db.pool(), "mk_id").await?
            } else {
                None
            };
            match marker {
                Some(m) if m.as_slice() == env.mk_id().0 => {}
                Some(_) => {
                    return Err(Error::EnvelopeDbMismatch(
                        "the database was written by another lango-rs installation".into(),
                    ));
                }
                None => {
                    // A fresh database (first run, or a first run that crashed after writing
                    // the envelope). A database holding Go data is never adopted silently.
                    if config_rows(db.pool()).await?.iter().any(|r| r == "default") {
                        return Err(Error::EnvelopeDbMismatch(
                            "the database holds legacy data of another vault".into(),
                        ));
                    }
                }
            }
            db.migrate(&MIGRATOR, MIGRATIONS_TABLE).await?;
            let present = config_rows(db.pool()).await?;
            if !(present.iter().any(|r| r == "mk_id") && present.iter().any(|r| r == "format")) {
                let mut tx = db.pool().begin().await.map_err(|e| Error::sql("begin", e))?;
                sqlx::query("INSERT INTO security_config (name, value) VALUES ('mk_id', ?1) ON CONFLICT(name) DO NOTHING")
                    .bind(env.mk_id().0.to_vec())
                    .execute(&mut *tx)
                    .await
                    .map_err(|e| Error::sql("write mk_id", e))?;
                sqlx::query("INSERT INTO security_config (name, value) VALUES ('format', CAST('v1' AS BLOB)) ON CONFLICT(name) DO NOTHING")
                    .execute(&mut *tx)
                    .await
                    .map_err(|e| Error::sql("write format", e))?;
                tx.commit().await.map_err(|e| Error::sql("commit", e))?;
            }
            let registry = KeyRegistry::new(db.pool().clone());
            registry.register(store::LOCAL_KEY_NAME, store::LOCAL_REMOTE_ID, "encryption").await?;
            if config.signer.provider == "local" {
                // Back to the local provider after a KMS: new values go to the local key
                // again (values under the KMS key still need it to be read).
                let current: Option<Vec<u8>> = config_blob(db.pool(), "default_key").await?;
                if current.as_deref() != Some(store::LOCAL_KEY_NAME.as_bytes()) {
                    registry.set_default(store::LOCAL_KEY_NAME).await?;
                }
            }
            Ok(())
        }
        .await;
        if let Err(e) = check {
            db.close().await;
            return Err(e);
        }
        let local = Arc::new(LocalCryptoProvider::new(&mk, env.generation));
        Ok(Self {
            data_dir: data_dir.to_owned(),
            config: config.clone(),
            lock,
            db: Some(db),
            envelope: env,
            mk,
            local,
            remote: None,
            report: UnlockReport {
                source,
                created: false,
                legacy_migrated: None,
                keyfile_shredded: false,
                warnings,
            },
        })
    }

    /// What happened during unlock.
    pub fn report(&self) -> &UnlockReport {
        &self.report
    }

    pub(crate) fn report_mut(&mut self) -> &mut UnlockReport {
        &mut self.report
    }

    /// The database.
    pub fn database(&self) -> Result<&Database> {
        self.db
            .as_ref()
            .ok_or_else(|| Error::io("database", std::io::Error::other("the database is closed")))
    }

    /// The secrets store (with the KMS provider when one is attached).
    pub fn secrets(&self) -> Result<SecretsStore> {
        let store = SecretsStore::new(
            self.database()?.pool().clone(),
            self.local.clone(),
            self.config.secrets.max_value_bytes as usize,
        );
        Ok(match &self.remote {
            Some(r) => store.with_remote(r.clone()),
            None => store,
        })
    }

    /// Puts new values under a KMS or HSM key (kms-and-zk spec §2.12): registers the key
    /// `kms-default` with `remote_key_id`, makes it the default key, and lets the secrets
    /// store use `provider` for it. Values already stored keep their key.
    pub async fn attach_kms(
        &mut self,
        provider: Arc<dyn lango_crypto::provider::CryptoProvider>,
        remote_key_id: &str,
    ) -> Result<()> {
        let registry = self.registry()?;
        registry
            .register(store::KMS_KEY_NAME, remote_key_id, "encryption")
            .await?;
        let current: Option<Vec<u8>> = config_blob(self.database()?.pool(), "default_key").await?;
        if current.as_deref() != Some(store::KMS_KEY_NAME.as_bytes()) {
            registry.set_default(store::KMS_KEY_NAME).await?;
        }
        self.remote = Some(provider);
        Ok(())
    }

    /// The key registry.
    pub fn registry(&self) -> Result<KeyRegistry> {
        Ok(KeyRegistry::new(self.database()?.pool().clone()))
    }

    /// The provider backed by the master key.
    pub fn provider(&self) -> Arc<LocalCryptoProvider> {
        self.local.clone()
    }

    /// The key envelope as it is now.
    pub fn envelope(&self) -> &Envelope {
        &self.envelope
    }

    /// The data directory.
    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    fn require_exclusive(&mut self) -> Result<()> {
        self.lock.try_upgrade().map_err(Error::from)
    }

    /// Closes the database. Always call before the process exits.
    pub async fn close(mut self) {
        if let Some(db) = self.db.take() {
            db.close().await;
        }
    }

    /// Replaces the passphrase slot (5.8): a new salt and the configured KDF; no data is
    /// touched. A kept keyfile is rewritten with the new passphrase (KF-6).
    pub async fn change_passphrase(&mut self, new: &SecretString) -> Result<()> {
        passphrase::check_policy(new, self.config.passphrase.min_length)?;
        self.require_exclusive()?;
        let mut env = self.envelope.clone();
        env.slots.retain(|s| s.kind != SlotKind::Passphrase);
        let mut env = with_passphrase_slot(env, &self.mk, self.config.kdf.params(), new).await?;
        env.save(&self.data_dir)?;
        self.envelope = env;
        let keyfile = self.config.keyfile_path(&self.data_dir);
        if self.config.passphrase.keep_keyfile && keyfile.exists() {
            passphrase::write_keyfile(&keyfile, new)?;
        }
        tracing::info!(event = "secrets.passphrase.changed", "passphrase changed");
        Ok(())
    }

    /// Checks a passphrase against the passphrase slot (for `change-passphrase` when the
    /// vault was not unlocked interactively).
    pub async fn verify_passphrase(&self, p: &SecretString) -> Result<bool> {
        Ok(try_passphrase(&self.envelope, p).await?.is_some())
    }

    /// Creates a keyring slot with a fresh random secret and stores the secret in `keyring`
    /// (5.5). If the keyring write fails, the slot is removed again.
    pub async fn store_in_keyring(&mut self, keyring: Arc<dyn Keyring>) -> Result<String> {
        self.require_exclusive()?;
        let secret = SecretKey32::generate()?;
        let backend = keyring.backend().to_owned();
        let previous = self.envelope.clone();
        let mut env = self.envelope.clone();
        env.remove_slots(SlotKind::Keyring);
        env.add_slot(
            &self.mk,
            SlotKind::Keyring,
            lango_crypto::KdfParams::HkdfSha256,
            secret.expose(),
            Some(backend.clone()),
        )?;
        env.save(&self.data_dir)?;
        let value = envelope::encode_keyring_secret(&secret);
        let account = env.keyring_account();
        let label = format!("lango unlock key {}", env.mk_id);
        let kr = keyring.clone();
        let written =
            tokio::task::spawn_blocking(move || kr.set(KEYRING_SERVICE, &account, &label, &value))
                .await
                .map_err(|e| Error::io("keyring worker", std::io::Error::other(e.to_string())))?;
        if let Err(e) = written {
            let mut back = previous;
            back.save(&self.data_dir)?;
            self.envelope = back;
            return Err(e.into());
        }
        self.envelope = env;
        tracing::info!(event = "keyring.slot.created", backend = %backend, "keyring slot created");
        Ok(backend)
    }

    /// Encrypts a plaintext database with the vault's SQLCipher key (2.4.2). No second
    /// passphrase is asked for: the key comes from the verified master key.
    pub async fn encrypt_database(
        &mut self,
        progress: &(dyn Fn(Step) + Sync),
    ) -> Result<export::ExportReport> {
        self.convert(true, progress).await
    }

    /// Decrypts the database to plaintext (2.4.3); secret values stay AEAD-encrypted.
    pub async fn decrypt_database(
        &mut self,
        progress: &(dyn Fn(Step) + Sync),
    ) -> Result<export::ExportReport> {
        self.convert(false, progress).await
    }

    async fn convert(
        &mut self,
        encrypt: bool,
        progress: &(dyn Fn(Step) + Sync),
    ) -> Result<export::ExportReport> {
        self.require_exclusive()?;
        // A plaintext file swapped in under an encrypted envelope is never "encrypted" (and so
        // adopted) by db-migrate.
        header_says_encrypted(&self.data_dir, &self.envelope)?;
        let db_file = db_path(&self.data_dir);
        let current = state::detect_usable(&db_file)?;
        let is_encrypted = current == FileState::EncryptedOrForeign;
        if encrypt && is_encrypted {
            return Err(Error::Store(lango_store::Error::WrongState {
                what: "database is already encrypted",
                path: db_file,
                found: current,
            }));
        }
        if !encrypt && !is_encrypted {
            return Err(Error::Store(lango_store::Error::WrongState {
                what: "database is not encrypted",
                path: db_file,
                found: current,
            }));
        }
        if let Some(db) = self.db.take() {
            db.close().await;
        }
        let key = self.mk.derive(KeyPurpose::Sqlcipher);
        let page_size = if encrypt {
            self.config.db_encryption.cipher_page_size
        } else {
            self.envelope.db.page_size
        };
        let raw = Keying::RawKey {
            key: &key,
            page_size,
        };
        let (op, src, dst) = if encrypt {
            (Operation::Encrypt, Keying::Plaintext, raw)
        } else {
            (Operation::Decrypt, raw, Keying::Plaintext)
        };
        let hook = EnvelopeHook {
            data_dir: &self.data_dir,
            progress,
        };
        let result =
            export::export(&db_file, op, src, Target { keying: dst }, &self.lock, &hook).await;
        // Reopen whatever is there now, success or not.
        if let Some(env) = Envelope::load(&self.data_dir)? {
            self.envelope = env;
        }
        let reopened = self.reopen().await;
        let report = result?;
        reopened?;
        Ok(report)
    }

    async fn reopen(&mut self) -> Result<()> {
        let db_file = db_path(&self.data_dir);
        let key = self.mk.derive(KeyPurpose::Sqlcipher);
        let keying = if header_says_encrypted(&self.data_dir, &self.envelope)? {
            Keying::RawKey {
                key: &key,
                page_size: self.envelope.db.page_size,
            }
        } else {
            Keying::Plaintext
        };
        self.db = Some(Database::open(&db_file, keying, OpenOptions::default()).await?);
        Ok(())
    }

    /// Replaces the master key (2.5): a new random MK at generation + 1, every local
    /// ciphertext re-encrypted in one transaction, the SQLCipher key changed through the export
    /// procedure, the slots re-wrapped. The passphrase is needed to re-wrap the passphrase
    /// slot; keyring slots whose secret cannot be read from `keyring` are dropped.
    ///
    /// Crash safety: the new envelope is written to `key-envelope.json.next` first; the
    /// database transaction records the new `mk_id`; unlock finishes or discards an
    /// interrupted rotation by comparing the two.
    pub async fn rotate_master_key(
        &mut self,
        passphrase: &SecretString,
        keyring: Option<Arc<dyn Keyring>>,
        progress: &(dyn Fn(Step) + Sync),
    ) -> Result<RotationReport> {
        self.require_exclusive()?;
        if try_passphrase(&self.envelope, passphrase).await?.is_none() {
            return Err(Error::WrongPassphrase {
                via: Source::Interactive,
                legacy_db: false,
            });
        }
        let new_mk = MasterKey::generate()?;
        let generation = self.envelope.generation + 1;
        let mut next = with_passphrase_slot(
            Envelope::new(&new_mk, generation, self.envelope.db),
            &new_mk,
            self.config.kdf.params(),
            passphrase,
        )
        .await?;
        let mut keyring_dropped = false;
        let mut old_keyring: Option<(Arc<dyn Keyring>, String)> = None;
        if self.envelope.has_slot(SlotKind::Keyring) {
            match keyring {
                Some(kr) => {
                    let secret = SecretKey32::generate()?;
                    next.add_slot(
                        &new_mk,
                        SlotKind::Keyring,
                        lango_crypto::KdfParams::HkdfSha256,
                        secret.expose(),
                        Some(kr.backend().to_owned()),
                    )?;
                    let value = envelope::encode_keyring_secret(&secret);
                    let account = next.keyring_account();
                    let old_account = self.envelope.keyring_account();
                    let label = format!("lango unlock key {}", next.mk_id);
                    old_keyring = Some((kr.clone(), old_account));
                    let r = tokio::task::spawn_blocking(move || {
                        kr.set(KEYRING_SERVICE, &account, &label, &value)
                    })
                    .await
                    .map_err(|e| {
                        Error::io("keyring worker", std::io::Error::other(e.to_string()))
                    })?;
                    if let Err(e) = r {
                        tracing::warn!(error = %e, "keyring slot dropped during master-key rotation");
                        next.remove_slots(SlotKind::Keyring);
                        keyring_dropped = true;
                    }
                }
                None => keyring_dropped = true,
            }
        }
        let next_path = self.data_dir.join(ROTATION_FILE);
        next.updated_at = envelope::now_rfc3339();
        let bytes = serde_json::to_vec_pretty(&next)
            .map_err(|e| Error::io("serialise envelope", std::io::Error::other(e)))?;
        fsutil::write_atomic_private(&next_path, &bytes)?;

        // One transaction: every local ciphertext re-encrypted, the marker moved to the new key.
        let new_local = LocalCryptoProvider::new(&new_mk, generation);
        export::fault("R1");
        let rows = reencrypt_all(
            self.database()?,
            &self.local,
            &new_local,
            &next,
            self.config.secrets.max_value_bytes as usize,
        )
        .await?;
        export::fault("R2");

        // The SQLCipher key follows the master key.
        if self.envelope.db.encrypted {
            if let Some(db) = self.db.take() {
                db.close().await;
            }
            let old_key = self.mk.derive(KeyPurpose::Sqlcipher);
            let new_key = new_mk.derive(KeyPurpose::Sqlcipher);
            let page_size = self.envelope.db.page_size;
            let hook = EnvelopeHook {
                data_dir: &self.data_dir,
                progress,
            };
            export::export(
                &db_path(&self.data_dir),
                Operation::Rekey,
                Keying::RawKey {
                    key: &old_key,
                    page_size,
                },
                Target {
                    keying: Keying::RawKey {
                        key: &new_key,
                        page_size,
                    },
                },
                &self.lock,
                &hook,
            )
            .await?;
        }
        export::fault("R3");
        std::fs::rename(&next_path, envelope::path_in(&self.data_dir))
            .map_err(|e| Error::io("install the new key envelope", e))?;
        fsutil::fsync_dir(&self.data_dir)?;
        self.envelope = next;
        self.mk = new_mk;
        self.local = Arc::new(new_local);
        self.reopen().await?;
        // The old keyring entry stays valid until the new envelope is in place.
        if let Some((kr, account)) = old_keyring {
            let _ = tokio::task::spawn_blocking(move || kr.delete(KEYRING_SERVICE, &account)).await;
        }
        tracing::info!(
            event = "secrets.master_key.rotated",
            generation,
            rows,
            "master key rotated"
        );
        Ok(RotationReport {
            generation,
            rows,
            keyring_dropped,
        })
    }
}

/// Finishes or discards a master-key rotation that was interrupted (the next envelope is
/// still beside the current one). The database's `mk_id` marker tells whether the
/// re-encryption transaction committed; a passphrase opens both envelopes.
async fn recover_rotation(
    data_dir: &Path,
    config: &VaultConfig,
    prompter: &dyn Prompter,
    opts: UnlockOptions,
    lock: &DataDirLock,
    warnings: &mut Vec<String>,
) -> Result<(SecretString, Source, Option<PathBuf>)> {
    let next_path = data_dir.join(ROTATION_FILE);
    let bytes = fsutil::read_bounded_nofollow(&next_path, envelope::MAX_BYTES)?;
    let next = Envelope::parse(&next_path, &bytes)?;
    let current = Envelope::load(data_dir)?
        .ok_or_else(|| Error::EnvelopeMissing(envelope::path_in(data_dir)))?;
    let w =
        "an interrupted master-key rotation is being finished; the passphrase is needed".to_owned();
    prompter.warn(&w);
    warnings.push(w);
    let (old_mk, source, keyfile, p) = acquire_v1(
        data_dir,
        &current,
        config,
        prompter,
        UnlockOptions {
            use_keyring: false,
            ..opts
        },
        true,
        warnings,
    )
    .await?;
    let p = p.ok_or(Error::LegacyMigrationRequired)?;
    let new_mk = try_passphrase(&next, &p)
        .await?
        .ok_or_else(|| Error::EnvelopeCorrupt {
            path: next_path.clone(),
            reason: "the passphrase does not open the rotated envelope".into(),
        })?;
    let db_file = db_path(data_dir);
    let old_key = old_mk.derive(KeyPurpose::Sqlcipher);
    let new_key = new_mk.derive(KeyPurpose::Sqlcipher);
    let ps = current.db.page_size;
    let (db, under_old_key) = match state::detect_usable(&db_file)? {
        FileState::EncryptedOrForeign => match Database::open(
            &db_file,
            Keying::RawKey {
                key: &old_key,
                page_size: ps,
            },
            OpenOptions::default(),
        )
        .await
        {
            Ok(db) => (db, true),
            Err(lango_store::Error::WrongKey) => (
                Database::open(
                    &db_file,
                    Keying::RawKey {
                        key: &new_key,
                        page_size: ps,
                    },
                    OpenOptions::default(),
                )
                .await?,
                false,
            ),
            Err(e) => return Err(e.into()),
        },
        _ => {
            // Refuses a plaintext file that the envelope records as encrypted.
            header_says_encrypted(data_dir, &current)?;
            (
                Database::open(&db_file, Keying::Plaintext, OpenOptions::default()).await?,
                true,
            )
        }
    };
    let marker = config_blob(db.pool(), "mk_id").await;
    db.close().await;
    if marker?.as_deref() == Some(&next.mk_id().0[..]) {
        if under_old_key && current.db.encrypted {
            let hook = EnvelopeHook {
                data_dir,
                progress: &no_progress,
            };
            export::export(
                &db_file,
                Operation::Rekey,
                Keying::RawKey {
                    key: &old_key,
                    page_size: ps,
                },
                Target {
                    keying: Keying::RawKey {
                        key: &new_key,
                        page_size: ps,
                    },
                },
                lock,
                &hook,
            )
            .await?;
        }
        std::fs::rename(&next_path, envelope::path_in(data_dir))
            .map_err(|e| Error::io("install the rotated key envelope", e))?;
        tracing::warn!(
            event = "secrets.master_key.rotation_recovered",
            action = "completed",
            "finished an interrupted master-key rotation"
        );
    } else {
        fsutil::remove_if_exists(&next_path)?;
        tracing::warn!(
            event = "secrets.master_key.rotation_recovered",
            action = "rolled-back",
            "discarded an interrupted master-key rotation"
        );
    }
    fsutil::fsync_dir(data_dir)?;
    Ok((p, source, keyfile))
}

/// Temporary name of the next envelope during a master-key rotation.
pub const ROTATION_FILE: &str = "key-envelope.json.next";

/// What a rotation did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RotationReport {
    /// The new generation.
    pub generation: u32,
    /// Rows re-encrypted.
    pub rows: usize,
    /// Whether the keyring slot had to be dropped.
    pub keyring_dropped: bool,
}

async fn reencrypt_all(
    db: &Database,
    old: &LocalCryptoProvider,
    new: &LocalCryptoProvider,
    next: &Envelope,
    max_value: usize,
) -> Result<usize> {
    let mut tx = db
        .pool()
        .begin()
        .await
        .map_err(|e| Error::sql("begin", e))?;
    let rows = sqlx::query("SELECT id, name, encrypted_value FROM secrets")
        .fetch_all(&mut *tx)
        .await
        .map_err(|e| Error::sql("read secrets", e))?;
    let mut n = 0;
    for r in rows {
        let id: String = r.try_get("id").map_err(|e| Error::sql("read secret", e))?;
        let name: String = r
            .try_get("name")
            .map_err(|e| Error::sql("read secret", e))?;
        let blob: Vec<u8> = r
            .try_get("encrypted_value")
            .map_err(|e| Error::sql("read secret", e))?;
        if !matches!(aead::BlobHeader::parse(&blob), Ok((h, _)) if h.provider == ProviderTag::LocalMk)
        {
            continue; // KMS rows are not under the master key.
        }
        let aad = store::secret_aad(&name, max_value);
        let plain = old
            .decrypt_sync(&blob, aad)
            .map_err(|_| Error::Integrity(name.clone()))?;
        let fresh = new.encrypt_sync(plain.expose(), aad)?;
        sqlx::query("UPDATE secrets SET encrypted_value = ?1 WHERE id = ?2")
            .bind(fresh)
            .bind(id)
            .execute(&mut *tx)
            .await
            .map_err(|e| Error::sql("update secret", e))?;
        n += 1;
    }
    let has_profiles: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = 'config_profiles'",
    )
    .fetch_one(&mut *tx)
    .await
    .map_err(|e| Error::sql("inspect schema", e))?;
    if has_profiles > 0 {
        let rows = sqlx::query("SELECT id, name, encrypted_data FROM config_profiles")
            .fetch_all(&mut *tx)
            .await
            .map_err(|e| Error::sql("read profiles", e))?;
        for r in rows {
            let id: String = r.try_get("id").map_err(|e| Error::sql("read profile", e))?;
            let name: String = r
                .try_get("name")
                .map_err(|e| Error::sql("read profile", e))?;
            let blob: Vec<u8> = r
                .try_get("encrypted_data")
                .map_err(|e| Error::sql("read profile", e))?;
            let aad = AeadContext {
                purpose: BlobPurpose::ConfigProfiles,
                context: name.as_bytes(),
                max_blob_len: aead::LARGE_BLOB_MAX,
            };
            let plain = old
                .decrypt_sync(&blob, aad)
                .map_err(|_| Error::Integrity(name.clone()))?;
            let fresh = new.encrypt_sync(plain.expose(), aad)?;
            sqlx::query("UPDATE config_profiles SET encrypted_data = ?1 WHERE id = ?2")
                .bind(fresh)
                .bind(id)
                .execute(&mut *tx)
                .await
                .map_err(|e| Error::sql("update profile", e))?;
            n += 1;
        }
    }
    sqlx::query("UPDATE security_config SET value = ?1 WHERE name = 'mk_id'")
        .bind(next.mk_id().0.to_vec())
        .execute(&mut *tx)
        .await
        .map_err(|e| Error::sql("update mk_id", e))?;
    tx.commit()
        .await
        .map_err(|e| Error::sql("commit rotation", e))?;
    Ok(n)
}

/// Removes the keyring unlock entries of the vault in `data_dir` (its v1 entry and the Go
/// passphrase entry) and every keyring slot (KR-7). No unlock needed. Returns whether anything
/// was removed.
pub async fn clear_keyring(data_dir: &Path, keyring: Arc<dyn Keyring>) -> Result<bool> {
    let _lock = DataDirLock::acquire(data_dir, LockMode::Exclusive)?;
    let mut env = Envelope::load(data_dir)?;
    let account = env.as_ref().map(Envelope::keyring_account);
    let kr = keyring.clone();
    let (v1, legacy) = tokio::task::spawn_blocking(
        move || -> std::result::Result<(bool, bool), lango_keyring::Error> {
            let v1 = match &account {
                Some(a) => kr.delete(KEYRING_SERVICE, a)?,
                None => false,
            };
            let legacy = kr.delete(KEYRING_SERVICE, LEGACY_KEYRING_ACCOUNT)?;
            Ok((v1, legacy))
        },
    )
    .await
    .map_err(|e| Error::io("keyring worker", std::io::Error::other(e.to_string())))??;
    let mut removed_slots = 0;
    if let Some(env) = env.as_mut() {
        removed_slots = env.remove_slots(SlotKind::Keyring);
        if removed_slots > 0 {
            env.save(data_dir)?;
            tracing::info!(
                event = "keyring.slot.removed",
                count = removed_slots,
                "keyring slots removed"
            );
        }
    }
    Ok(v1 || legacy || removed_slots > 0)
}

/// The SQLCipher keying of a legacy database, for the legacy module.
pub(crate) fn legacy_keying<'a>(k: LegacyDbKeying, p: &'a SecretString) -> Keying<'a> {
    match k {
        LegacyDbKeying::Plaintext => Keying::Plaintext,
        LegacyDbKeying::Passphrase {
            compatibility,
            page_size,
        } => Keying::LegacyPassphrase {
            passphrase: p,
            compatibility,
            page_size,
        },
    }
}
