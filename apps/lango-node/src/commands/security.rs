//! `lango-node security …`: the operator's view of keys at rest (secrets spec §5).

use std::{io::Read, path::Path, process::ExitCode, sync::Arc};

use anyhow::{Context as _, Result, anyhow, bail};
use lango_crypto::SecretBytes;
use lango_keyring::Keyring;
use lango_secrets::{
    Caller, UnlockOptions, Vault,
    envelope::{Envelope, SlotKind},
    passphrase::Prompter,
    vault::{KEYRING_SERVICE, LEGACY_KEYRING_ACCOUNT, db_path},
};
use lango_store::{FileState, state};
use serde_json::{Value, json};
use zeroize::Zeroize;

use crate::{
    cli::{KeyringCommand, SecretsCommand, SecurityCommand},
    config::NodeConfig,
    context::Context,
    output, terminal,
};

pub fn run(ctx: &Context, cmd: SecurityCommand) -> Result<ExitCode> {
    let loaded = ctx.load_config()?;
    let config = loaded.config;
    crate::hardening::apply();
    let rt = tokio::runtime::Runtime::new().context("start the async runtime")?;
    rt.block_on(async move {
        match cmd {
            SecurityCommand::Status { unlock } => status(ctx, &config, unlock).await,
            SecurityCommand::Secrets(c) => secrets(ctx, &config, c).await,
            SecurityCommand::Keyring(c) => keyring(ctx, &config, c).await,
            SecurityCommand::DbMigrate { force } => convert(ctx, &config, force, true).await,
            SecurityCommand::DbDecrypt { force } => convert(ctx, &config, force, false).await,
            SecurityCommand::ChangePassphrase => change_passphrase(ctx, &config).await,
            SecurityCommand::RotateMasterKey { force } => rotate(ctx, &config, force).await,
            SecurityCommand::UpgradeLegacy => upgrade_legacy(ctx, &config).await,
            SecurityCommand::Kms(c) => super::kms::run(ctx, &config, c).await,
        }
    })
}

/// Unlocks the vault for a command.
pub async fn open_vault(ctx: &Context, config: &NodeConfig, opts: UnlockOptions) -> Result<Vault> {
    if std::env::var_os("LANGO_PASSPHRASE").is_some() {
        output::note(
            "warning: LANGO_PASSPHRASE is ignored: lango never reads a passphrase from the environment \
             (use the OS keyring, a keyfile, the prompt or --passphrase-stdin)",
        );
    }
    let prompter = ctx.prompter();
    let vault =
        lango_secrets::unlock(&ctx.data_dir, &config.security.vault(), &prompter, opts).await?;
    let r = vault.report();
    if r.created {
        output::note(format!(
            "Created a new vault in {}.",
            ctx.data_dir.display()
        ));
    }
    if let Some((s, p)) = r.legacy_migrated {
        output::note(format!(
            "Migrated data from the Go node: {s} secrets and {p} configuration profiles re-encrypted."
        ));
    }
    let mut vault = vault;
    let provider = config.security.signer.provider.as_str();
    if crate::kms::is_kms(provider) {
        // §2.12: the KMS must be usable at start-up; no silent start on the local key.
        let attached = async {
            let kms = crate::kms::Kms::build(provider, &config.security.kms).await?;
            let key = kms.default_key(lango_kms::backend::KeyRole::Encryption);
            let store_provider = kms.for_store(vault.provider());
            vault.attach_kms(store_provider, &key).await?;
            anyhow::Ok(())
        }
        .await;
        if let Err(e) = attached {
            vault.close().await;
            bail!("security init: KMS provider {provider:?}: {e:#}");
        }
    }
    Ok(vault)
}

fn keyring_backend(
    config: &NodeConfig,
) -> std::result::Result<Arc<dyn Keyring>, lango_keyring::Error> {
    lango_keyring::open_backend(config.security.keyring.backend).map(Arc::from)
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| anyhow!("worker failed: {e}"))
}

// ------------------------------------------------------------------------------------ status

struct KeyringState {
    available: bool,
    backend: String,
    error: Option<String>,
    has_unlock_key: bool,
    has_legacy: bool,
    disabled: bool,
}

async fn keyring_state(config: &NodeConfig, env: Option<&Envelope>) -> KeyringState {
    let kr_cfg = config.security.keyring.clone();
    let account = env.map(Envelope::keyring_account);
    let r = blocking(
        move || -> std::result::Result<(String, bool, bool), lango_keyring::Error> {
            let kr = lango_keyring::open_backend(kr_cfg.backend)?;
            let v1 = match &account {
                Some(a) => kr.probe(KEYRING_SERVICE, a)?.entry_present,
                None => false,
            };
            let legacy = kr
                .probe(KEYRING_SERVICE, LEGACY_KEYRING_ACCOUNT)?
                .entry_present;
            Ok((kr.backend().to_owned(), v1, legacy))
        },
    )
    .await;
    let disabled = !config.security.keyring.is_active();
    match r {
        Ok(Ok((backend, v1, legacy))) => KeyringState {
            available: true,
            backend,
            error: None,
            has_unlock_key: v1,
            has_legacy: legacy,
            disabled,
        },
        Ok(Err(e)) => KeyringState {
            available: false,
            backend: format!("{:?}", config.security.keyring.backend).to_lowercase(),
            error: Some(e.to_string()),
            has_unlock_key: false,
            has_legacy: false,
            disabled,
        },
        Err(e) => KeyringState {
            available: false,
            backend: "?".into(),
            error: Some(e.to_string()),
            has_unlock_key: false,
            has_legacy: false,
            disabled,
        },
    }
}

fn keyfile_state(path: &Path) -> (String, Value) {
    match lango_store::fsutil::check_private_file(path) {
        Ok(None) => ("absent".into(), json!("absent")),
        Ok(Some(Ok(_))) => ("present".into(), json!("present")),
        Ok(Some(Err(p))) => (
            format!("present (insecure: {p})"),
            json!(format!("present (insecure: {p})")),
        ),
        Err(e) => (
            format!("unreadable: {e}"),
            json!(format!("unreadable: {e}")),
        ),
    }
}

async fn plaintext_counts(path: &Path) -> Option<(i64, i64)> {
    let db = lango_store::Database::open(
        path,
        lango_store::Keying::Plaintext,
        lango_store::OpenOptions::default(),
    )
    .await
    .ok()?;
    let count = |sql: &'static str| {
        let pool = db.pool().clone();
        async move {
            sqlx::query_scalar::<_, i64>(sql)
                .fetch_one(&pool)
                .await
                .ok()
        }
    };
    let keys = count("SELECT count(*) FROM keys").await;
    let secrets = count("SELECT count(*) FROM secrets").await;
    db.close().await;
    Some((keys?, secrets?))
}

async fn status(ctx: &Context, config: &NodeConfig, do_unlock: bool) -> Result<ExitCode> {
    let data = &ctx.data_dir;
    let env = if data.is_dir() {
        Envelope::load(data).ok().flatten()
    } else {
        None
    };
    let db_file = db_path(data);
    let db_state = state::detect(&db_file)?;
    let cipher_version = lango_store::db::cipher_version().await.ok();
    let enabled = config.security.db_encryption.enabled;
    // DB-6: a plaintext file where the key envelope records an encrypted database is refused
    // by unlock; status says so and does not open it either.
    let refused_plaintext =
        db_state == FileState::Plaintext && env.as_ref().is_some_and(|e| e.db.encrypted);
    let db_encryption = match db_state {
        FileState::Plaintext if refused_plaintext => {
            "refused: lango.db is plaintext but the key envelope records an encrypted database"
                .to_owned()
        }
        FileState::EncryptedOrForeign => "encrypted (active)".to_owned(),
        FileState::Plaintext if enabled => "enabled (pending migration)".to_owned(),
        FileState::Plaintext => "disabled (plaintext)".to_owned(),
        FileState::Absent | FileState::Empty => {
            if enabled {
                "enabled (no database yet)".to_owned()
            } else {
                "disabled (no database yet)".to_owned()
            }
        }
        other => format!("unusable: {other}"),
    };
    let mismatch = (db_state == FileState::EncryptedOrForeign && !enabled)
        .then_some("warning: the database is encrypted but security.dbEncryption.enabled is false; it stays encrypted");
    let legacy = env.is_none() && db_state.is_present();
    let key_envelope = match &env {
        Some(e) if e.state == lango_secrets::envelope::State::PendingLegacy => {
            "legacy (migration pending)".to_owned()
        }
        Some(e) => format!("v1 (generation {}, {} slots)", e.generation, e.slots.len()),
        None if legacy => "legacy (migration pending)".to_owned(),
        None => "absent".to_owned(),
    };
    let kdf = env
        .as_ref()
        .map_or_else(|| "none".to_owned(), Envelope::describe_kdf);
    let kr = keyring_state(config, env.as_ref()).await;
    let keyring_text = if kr.disabled {
        "disabled".to_owned()
    } else if kr.available {
        format!(
            "{} ({})",
            kr.backend,
            if kr.has_unlock_key {
                "unlock key stored"
            } else {
                "no unlock key"
            }
        )
    } else {
        format!("unavailable: {}", kr.error.clone().unwrap_or_default())
    };
    let keyfile_path = config.security.vault().keyfile_path(data);
    let (keyfile_text, keyfile_json) = keyfile_state(&keyfile_path);

    let counts: Option<(i64, i64)> = if do_unlock && (env.is_some() || legacy) {
        let v = open_vault(ctx, config, UnlockOptions::default()).await?;
        let c = (
            v.registry()?.list().await?.len() as i64,
            v.secrets()?.count().await?,
        );
        v.close().await;
        Some(c)
    } else if db_state == FileState::Plaintext && !refused_plaintext {
        plaintext_counts(&db_file).await
    } else if !db_state.is_present() {
        Some((0, 0))
    } else {
        None
    };
    let slots: Vec<Value> = env
        .iter()
        .flat_map(|e| e.slots.iter())
        .map(|s| json!({ "id": s.id, "kind": s.kind, "kdf": s.kdf, "created_at": s.created_at, "label": s.label }))
        .collect();
    if ctx.json {
        let mut v = json!({
            "data_dir": data,
            "signer_provider": config.security.signer.provider,
            "encryption_keys": counts.map(|c| c.0),
            "stored_secrets": counts.map(|c| c.1),
            "db_encryption": db_encryption,
            "cipher_version": cipher_version,
            "key_envelope": key_envelope,
            "kdf": kdf,
            "slots": slots,
            "keyring": {
                "enabled": !kr.disabled,
                "available": kr.available,
                "backend": kr.backend,
                "has_unlock_key": kr.has_unlock_key,
            },
            "keyfile": keyfile_json,
        });
        if let Some(m) = mismatch {
            v["warning"] = json!(m);
        }
        output::json(&v)?;
    } else {
        let count = |n: Option<i64>| n.map_or_else(|| "locked".to_owned(), |n| n.to_string());
        output::line("Security Status");
        let rows = [
            ("Signer Provider", config.security.signer.provider.clone()),
            ("Encryption Keys", count(counts.map(|c| c.0))),
            ("Stored Secrets", count(counts.map(|c| c.1))),
            ("DB Encryption", db_encryption),
            (
                "SQLCipher",
                cipher_version.unwrap_or_else(|| "unavailable".into()),
            ),
            ("Key Envelope", key_envelope),
            ("KDF", kdf),
            ("Keyring", keyring_text),
            ("Keyfile", keyfile_text),
        ];
        for (k, v) in rows {
            output::line(format!("  {:<20}{v}", format!("{k}:")));
        }
        if let Some(m) = mismatch {
            output::line(format!("  {m}"));
        }
        if env.is_none() && !legacy {
            output::note(format!(
                "\nNo vault in {} yet. Create one with `lango-node security secrets set <name>` \
                 (asks for a new passphrase) or start a node with `lango-node serve`.",
                data.display()
            ));
        } else if counts.is_none() {
            output::note(
                "\nCounts are locked: the database is encrypted. Add --unlock to count keys and secrets.",
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

// ----------------------------------------------------------------------------------- secrets

fn local_time(s: &str) -> String {
    match lango_secrets::store::parse_db_time(s) {
        Some(t) => {
            let t = t.to_offset(crate::local_offset());
            format!(
                "{:04}-{:02}-{:02} {:02}:{:02}",
                t.year(),
                u8::from(t.month()),
                t.day(),
                t.hour(),
                t.minute()
            )
        }
        None => s.to_owned(),
    }
}

fn rfc3339(s: &str) -> String {
    lango_secrets::store::parse_db_time(s)
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_else(|| s.to_owned())
}

async fn secrets(ctx: &Context, config: &NodeConfig, cmd: SecretsCommand) -> Result<ExitCode> {
    match cmd {
        SecretsCommand::List => {
            let v = open_vault(ctx, config, UnlockOptions::default()).await?;
            let list = v.secrets()?.list().await;
            v.close().await;
            let list = list?;
            if ctx.json {
                let items: Vec<Value> = list
                    .iter()
                    .map(|i| {
                        json!({
                            "id": i.id, "name": i.name, "key_id": i.key_id, "key_name": i.key_name,
                            "created_at": rfc3339(&i.created_at), "updated_at": rfc3339(&i.updated_at),
                            "access_count": i.access_count,
                        })
                    })
                    .collect();
                output::json(&items)?;
            } else if list.is_empty() {
                output::line("No secrets stored.");
            } else {
                let mut rows = vec![vec![
                    "NAME".to_owned(),
                    "KEY".into(),
                    "CREATED".into(),
                    "UPDATED".into(),
                    "ACCESS_COUNT".into(),
                ]];
                for i in &list {
                    rows.push(vec![
                        i.name.clone(),
                        i.key_name.clone(),
                        local_time(&i.created_at),
                        local_time(&i.updated_at),
                        i.access_count.to_string(),
                    ]);
                }
                output::table(&rows);
            }
            Ok(ExitCode::SUCCESS)
        }
        SecretsCommand::Set {
            name,
            stdin,
            hex,
            force,
            value_hex,
        } => {
            if value_hex.is_some() {
                bail!(
                    "--value-hex is not supported: it exposes the value in the process list and shell history; use `--stdin --hex` and pipe the value instead"
                );
            }
            if stdin && ctx.passphrase_stdin {
                bail!(
                    "--stdin and --passphrase-stdin cannot both read standard input; unlock with the keyring or a keyfile, or type the value at the prompt"
                );
            }
            lango_secrets::store::validate_name(&name)?;
            let max = config.security.secrets.max_value_bytes as usize;
            let mut value = read_value(stdin, hex, max)?;
            let v = open_vault(
                ctx,
                config,
                UnlockOptions {
                    allow_create: true,
                    ..UnlockOptions::default()
                },
            )
            .await?;
            let result = async {
                let store = v.secrets()?;
                if lango_secrets::store::is_reserved(&name) {
                    output::note(format!("warning: '{name}' is a reserved name (key material of the node); handle it with care"));
                    let exists = store.list().await?.iter().any(|i| i.name == name);
                    if exists && !force {
                        match terminal::confirm(&format!("Replace existing secret '{name}'?")) {
                            Some(true) => {}
                            Some(false) => return Ok(false),
                            None => bail!("secret '{name}' exists and is reserved; pass --force to replace it"),
                        }
                    }
                }
                store.put(&name, value.expose(), Caller::Operator).await?;
                Ok(true)
            }
            .await;
            v.close().await;
            value.zeroize();
            if result? {
                output::line(format!("Secret '{name}' stored successfully."));
            } else {
                output::line("Aborted.");
            }
            Ok(ExitCode::SUCCESS)
        }
        SecretsCommand::Delete { name, force } => {
            if !force {
                match terminal::confirm(&format!("Delete secret '{name}'?")) {
                    Some(true) => {}
                    Some(false) => {
                        output::line("Aborted.");
                        return Ok(ExitCode::SUCCESS);
                    }
                    None => bail!("use --force for non-interactive deletion"),
                }
            }
            let v = open_vault(ctx, config, UnlockOptions::default()).await?;
            let r = v.secrets()?.delete(&name, Caller::Operator).await;
            v.close().await;
            r?;
            output::line(format!("Secret '{name}' deleted."));
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// Reads a secret value from a hidden prompt or stdin (never argv).
fn read_value(from_stdin: bool, hex: bool, max: usize) -> Result<SecretBytes> {
    let mut raw = if from_stdin {
        let mut buf = Vec::new();
        std::io::stdin()
            .take(max as u64 * 2 + 3)
            .read_to_end(&mut buf)
            .context("read the value from stdin")?;
        if buf.ends_with(b"\r\n") {
            buf.truncate(buf.len() - 2);
        } else if buf.ends_with(b"\n") {
            buf.truncate(buf.len() - 1);
        }
        SecretBytes::new(buf)
    } else {
        if !terminal::interactive_available() {
            bail!(
                "this command requires an interactive terminal (use --stdin for non-interactive)"
            );
        }
        let p = rpassword::prompt_password("Enter secret value: ").context("read the value")?;
        SecretBytes::new(p.into_bytes())
    };
    if hex {
        let text = std::str::from_utf8(raw.expose()).map_err(|_| anyhow!("invalid hex value"))?;
        let t = text.trim();
        let t = t
            .strip_prefix("0x")
            .or_else(|| t.strip_prefix("0X"))
            .unwrap_or(t);
        let decoded = ::hex::decode(t).map_err(|_| anyhow!("invalid hex value"))?;
        raw.zeroize();
        raw = SecretBytes::new(decoded);
    }
    if raw.is_empty() {
        bail!("the secret value is empty");
    }
    if raw.len() > max {
        bail!(
            "secret value is {} bytes; the limit is {max} (security.secrets.maxValueBytes)",
            raw.len()
        );
    }
    Ok(raw)
}

// ----------------------------------------------------------------------------------- keyring

async fn keyring(ctx: &Context, config: &NodeConfig, cmd: KeyringCommand) -> Result<ExitCode> {
    match cmd {
        KeyringCommand::Status => {
            let env = Envelope::load(&ctx.data_dir).ok().flatten();
            let kr = keyring_state(config, env.as_ref()).await;
            if ctx.json {
                let mut v = json!({
                    "available": kr.available,
                    "backend": kr.backend,
                    "enabled": !kr.disabled,
                    "has_unlock_key": kr.has_unlock_key,
                    "has_legacy_passphrase": kr.has_legacy,
                    "has_passphrase": kr.has_unlock_key || kr.has_legacy,
                });
                if let Some(e) = &kr.error {
                    v["error"] = json!(e);
                }
                output::json(&v)?;
            } else {
                output::line("OS Keyring Status");
                let yn = |b: bool| if b { "yes" } else { "no" };
                let mut rows = vec![
                    ("Enabled", yn(!kr.disabled).to_owned()),
                    ("Available", yn(kr.available).to_owned()),
                    ("Backend", kr.backend.clone()),
                ];
                if let Some(e) = &kr.error {
                    rows.push(("Error", e.clone()));
                }
                rows.push(("Has Unlock Key", yn(kr.has_unlock_key).to_owned()));
                rows.push(("Has Legacy Passphrase", yn(kr.has_legacy).to_owned()));
                for (k, v) in rows {
                    output::line(format!("  {:<23}{v}", format!("{k}:")));
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        KeyringCommand::Store => {
            if !config.security.keyring.is_active() {
                bail!(
                    "the OS keyring is disabled (security.keyring.enabled / security.keyring.backend)"
                );
            }
            let kr =
                keyring_backend(config).map_err(|e| anyhow!("OS keyring not available: {e}"))?;
            let probe_kr = kr.clone();
            blocking(move || probe_kr.probe(KEYRING_SERVICE, "availability"))
                .await?
                .map_err(|e| anyhow!("OS keyring not available: {e}"))?;
            let mut v = open_vault(
                ctx,
                config,
                UnlockOptions {
                    exclusive: true,
                    use_keyring: false,
                    ..UnlockOptions::default()
                },
            )
            .await?;
            let r = v.store_in_keyring(kr).await;
            v.close().await;
            let backend = r?;
            output::line(format!("Unlock key stored in OS keyring ({backend})."));
            Ok(ExitCode::SUCCESS)
        }
        KeyringCommand::Clear { force } => {
            let env = Envelope::load(&ctx.data_dir).ok().flatten();
            let kr =
                keyring_backend(config).map_err(|e| anyhow!("OS keyring not available: {e}"))?;
            let state = keyring_state(config, env.as_ref()).await;
            let has_slot = env.as_ref().is_some_and(|e| e.has_slot(SlotKind::Keyring));
            if !state.has_unlock_key && !state.has_legacy && !has_slot {
                output::line("No unlock key stored in keyring.");
                return Ok(ExitCode::SUCCESS);
            }
            if !force {
                match terminal::confirm("Remove lango unlock key from OS keyring?") {
                    Some(true) => {}
                    Some(false) => {
                        output::line("Aborted.");
                        return Ok(ExitCode::SUCCESS);
                    }
                    None => bail!("use --force for non-interactive deletion"),
                }
            }
            lango_secrets::clear_keyring(&ctx.data_dir, kr).await?;
            output::line("Unlock key removed from OS keyring.");
            Ok(ExitCode::SUCCESS)
        }
    }
}

// ----------------------------------------------------------------------- database conversion

fn progress_bar(message: &str) -> indicatif::ProgressBar {
    let pb = indicatif::ProgressBar::with_draw_target(
        Some(lango_store::export::Step::ALL.len() as u64),
        indicatif::ProgressDrawTarget::stderr(),
    );
    if let Ok(style) =
        indicatif::ProgressStyle::with_template("{prefix} [{bar:30}] {pos}/{len} {msg}")
    {
        pb.set_style(style.progress_chars("=> "));
    }
    pb.set_prefix(message.to_owned());
    pb
}

async fn convert(
    ctx: &Context,
    config: &NodeConfig,
    force: bool,
    encrypt: bool,
) -> Result<ExitCode> {
    let db_file = db_path(&ctx.data_dir);
    let st = state::detect_usable(&db_file)?;
    if encrypt && st == FileState::EncryptedOrForeign {
        bail!("database is already encrypted");
    }
    if !encrypt && st == FileState::Plaintext {
        bail!("database is not encrypted");
    }
    if !st.is_present() {
        bail!("there is no database in {} yet", ctx.data_dir.display());
    }
    if !force {
        let q = if encrypt {
            "This will encrypt your database. Continue?"
        } else {
            "This will decrypt your database to plaintext. Secret values stay encrypted, but everything else in it becomes readable to anyone who can read the file. Continue?"
        };
        match terminal::confirm(q) {
            Some(true) => {}
            Some(false) => {
                output::line("Aborted.");
                return Ok(ExitCode::SUCCESS);
            }
            None => bail!(
                "this command requires an interactive terminal (use --force for non-interactive)"
            ),
        }
    }
    let mut v = open_vault(
        ctx,
        config,
        UnlockOptions {
            exclusive: true,
            ..UnlockOptions::default()
        },
    )
    .await?;
    output::note(if encrypt {
        "Encrypting database..."
    } else {
        "Decrypting database..."
    });
    let pb = progress_bar(if encrypt { "encrypt" } else { "decrypt" });
    let report = {
        let pb2 = pb.clone();
        let progress = move |s: lango_store::export::Step| {
            pb2.set_message(s.describe());
            pb2.inc(1);
        };
        if encrypt {
            v.encrypt_database(&progress).await
        } else {
            v.decrypt_database(&progress).await
        }
    };
    pb.finish_and_clear();
    v.close().await;
    let report = report?;
    if encrypt {
        output::line("Database encrypted successfully.");
        if report.old_was_plaintext {
            output::note(
                "warning: copies of the old plaintext database may survive in backups, snapshots, \
                 SSD remapped blocks or copy-on-write file systems; the old file was overwritten on a \
                 best-effort basis only.",
            );
        }
    } else {
        output::line("Database decrypted successfully.");
        if config.security.db_encryption.enabled {
            output::note(
                "Set security.dbEncryption.enabled=false in config.toml to keep new databases unencrypted.",
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

// ---------------------------------------------------------------------- passphrase and keys

async fn change_passphrase(ctx: &Context, config: &NodeConfig) -> Result<ExitCode> {
    if ctx.non_interactive || !terminal::interactive_available() {
        bail!("this command requires an interactive terminal");
    }
    let mut v = open_vault(
        ctx,
        config,
        UnlockOptions {
            exclusive: true,
            ..UnlockOptions::default()
        },
    )
    .await?;
    let prompter = ctx.prompter();
    let result = async {
        if v.report().source != lango_secrets::passphrase::Source::Interactive {
            let current = prompter
                .prompt_hidden("Enter CURRENT passphrase: ")?
                .ok_or_else(|| anyhow!("no input"))?;
            if !v.verify_passphrase(&current).await? {
                return Err(anyhow!(lango_secrets::Error::WrongPassphrase {
                    via: lango_secrets::passphrase::Source::Interactive,
                    legacy_db: false,
                }));
            }
        }
        let new = prompter
            .prompt_hidden("Enter NEW passphrase: ")?
            .ok_or_else(|| anyhow!("no input"))?;
        lango_secrets::passphrase::check_policy(&new, config.security.passphrase.min_length)?;
        let again = prompter
            .prompt_hidden("Confirm NEW passphrase: ")?
            .ok_or_else(|| anyhow!("no input"))?;
        if again != new {
            bail!("passphrases do not match");
        }
        v.change_passphrase(&new).await?;
        Ok(())
    }
    .await;
    v.close().await;
    result?;
    output::line("Passphrase changed.");
    Ok(ExitCode::SUCCESS)
}

async fn rotate(ctx: &Context, config: &NodeConfig, force: bool) -> Result<ExitCode> {
    if !force {
        match terminal::confirm(
            "This re-encrypts every secret under a new master key and re-keys the database. Continue?",
        ) {
            Some(true) => {}
            Some(false) => {
                output::line("Aborted.");
                return Ok(ExitCode::SUCCESS);
            }
            None => bail!(
                "this command requires an interactive terminal (use --force for non-interactive)"
            ),
        }
    }
    // The passphrase re-wraps the new master key, so it is needed even after a keyring unlock.
    let prompter = ctx.prompter();
    let passphrase = if prompter.interactive() {
        prompter
            .prompt_hidden("Enter passphrase: ")?
            .ok_or_else(|| anyhow!("no input"))?
    } else if ctx.passphrase_stdin {
        prompter
            .read_stdin_line()?
            .ok_or_else(|| anyhow!("no passphrase on stdin"))?
    } else {
        bail!(
            "rotating the master key needs the passphrase: run it in a terminal or with --passphrase-stdin"
        );
    };
    let tty = crate::terminal::Tty {
        non_interactive: true,
        passphrase_stdin: false,
    };
    let vault_cfg = config.security.vault();
    // Unlock with the passphrase just read (it must not be read twice from stdin).
    let script = lango_secrets::passphrase::Given::new(passphrase.duplicate(), &tty);
    let mut v = lango_secrets::unlock(
        &ctx.data_dir,
        &vault_cfg,
        &script,
        UnlockOptions {
            exclusive: true,
            use_keyring: false,
            ..UnlockOptions::default()
        },
    )
    .await?;
    let kr = if v.envelope().has_slot(SlotKind::Keyring) {
        keyring_backend(config).ok()
    } else {
        None
    };
    let pb = progress_bar("rotate");
    let r = {
        let pb2 = pb.clone();
        let progress = move |s: lango_store::export::Step| {
            pb2.set_message(s.describe());
            pb2.inc(1);
        };
        v.rotate_master_key(&passphrase, kr, &progress).await
    };
    pb.finish_and_clear();
    v.close().await;
    let r = r?;
    output::line(format!(
        "Master key rotated (generation {}, {} values re-encrypted).",
        r.generation, r.rows
    ));
    if r.keyring_dropped {
        output::note(
            "The keyring unlock key could not be renewed; run `lango-node security keyring store` again.",
        );
    }
    Ok(ExitCode::SUCCESS)
}

async fn upgrade_legacy(ctx: &Context, config: &NodeConfig) -> Result<ExitCode> {
    let v = open_vault(
        ctx,
        config,
        UnlockOptions {
            force_legacy_migration: true,
            ..UnlockOptions::default()
        },
    )
    .await?;
    let migrated = v.report().legacy_migrated;
    v.close().await;
    match migrated {
        Some((s, p)) => output::line(format!(
            "Migrated {s} secrets and {p} configuration profiles."
        )),
        None => output::line("Nothing to migrate: the data is already in the lango-rs format."),
    }
    Ok(ExitCode::SUCCESS)
}
