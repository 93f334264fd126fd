//! `lango-node security kms …`: the configured KMS or HSM (kms-and-zk spec §2.14).
//!
//! `status` and `test` talk to the KMS only (no vault unlock); `keys` lists the key registry
//! in the database (unlocks the vault) or, with `--remote`, the keys the backend reports.

use std::{process::ExitCode, time::Instant};

use anyhow::{Result, bail};
use lango_crypto::{
    aead::BlobPurpose,
    provider::{AeadContext, CryptoProvider},
};
use lango_kms::{Connection, backend::KeyRole};
use serde_json::{Value, json};

use crate::{
    cli::KmsCommand,
    config::NodeConfig,
    context::Context,
    kms::{Kms, is_kms},
    output,
};

/// Runs one `security kms` command.
pub async fn run(ctx: &Context, config: &NodeConfig, cmd: KmsCommand) -> Result<ExitCode> {
    match cmd {
        KmsCommand::Status => status(ctx, config).await,
        KmsCommand::Test { sign } => test(ctx, config, sign).await,
        KmsCommand::Keys { remote } => keys(ctx, config, remote).await,
    }
}

fn compiled() -> Vec<&'static str> {
    lango_kms::compiled_backends()
        .into_iter()
        .map(|n| n.as_str())
        .collect()
}

async fn status(ctx: &Context, config: &NodeConfig) -> Result<ExitCode> {
    let provider = config.security.signer.provider.as_str();
    let kms = &config.security.kms;
    let fallback = if kms.fallback_to_local {
        "enabled"
    } else {
        "disabled"
    };
    let mut status = "not configured".to_owned();
    let mut key_state = None;
    let mut error = None;
    let mut error_kind = None;
    let mut latency_ms = None;
    if is_kms(provider) {
        match Kms::build(provider, kms).await {
            Err(e) => status = format!("error: {e:#}"),
            Ok(k) => {
                let started = Instant::now();
                let checker = k.checker();
                // Issue 17: an unreachable KMS and a key the KMS refuses are different states
                // (the second stops the node from writing secrets), and both are shown.
                let state = checker.state().await;
                status = match &state {
                    Connection::Up => {
                        latency_ms = Some(started.elapsed().as_secs_f64() * 1000.0);
                        "connected"
                    }
                    Connection::Unreachable(_) => "unreachable",
                    Connection::Refused(_) => "key refused",
                }
                .into();
                key_state = Some(state.key_state());
                if let Some(f) = state.failure() {
                    error = Some(f.message.clone());
                    error_kind = Some(match f.kms_kind {
                        Some(k) => format!("{k:?}"),
                        None => format!("{:?}", f.kind),
                    });
                }
                k.backend.close().await;
            }
        }
    }
    if ctx.json {
        let mut v = json!({
            "provider": provider,
            "key_id": kms.key_id,
            "fallback": fallback,
            "status": status,
            "compiled": compiled(),
        });
        if !kms.region.is_empty() {
            v["region"] = json!(kms.region);
        }
        if let Some(k) = key_state {
            v["key_state"] = json!(k);
        }
        if let Some(e) = &error {
            v["error"] = json!(e);
        }
        if let Some(k) = &error_kind {
            v["error_kind"] = json!(k);
        }
        if let Some(ms) = latency_ms {
            v["latency_ms"] = json!(ms);
        }
        output::json(&v)?;
    } else {
        output::line("KMS Status");
        output::line(format!("  Provider:      {provider}"));
        output::line(format!("  Key ID:        {}", kms.key_id));
        if !kms.region.is_empty() {
            output::line(format!("  Region:        {}", kms.region));
        }
        output::line(format!("  Fallback:      {fallback}"));
        output::line(format!("  Status:        {status}"));
        if let Some(k) = key_state {
            output::line(format!("  Key state:     {k}"));
        }
        if let Some(e) = &error {
            output::line(format!("  Error:         {e}"));
        }
        if let Some(ms) = latency_ms {
            output::line(format!("  Probe:         {ms:.1} ms (encrypt + decrypt)"));
        }
        let c = compiled();
        output::line(format!(
            "  Compiled:      {}",
            if c.is_empty() {
                "none (rebuild with --features kms-all)".to_owned()
            } else {
                c.join(", ")
            }
        ));
    }
    Ok(if status == "connected" || !is_kms(provider) {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

async fn test(ctx: &Context, config: &NodeConfig, sign: bool) -> Result<ExitCode> {
    let provider = config.security.signer.provider.as_str();
    if !is_kms(provider) {
        bail!("current provider {provider:?} is not a KMS provider");
    }
    let k = match Kms::build(provider, &config.security.kms).await {
        Ok(k) => k,
        Err(e) => bail!("create KMS provider: {e:#}"),
    };
    let result = round_trip(ctx, &k, sign).await;
    k.backend.close().await;
    let report = result?;
    if ctx.json {
        output::json(&report)?;
    }
    Ok(ExitCode::SUCCESS)
}

/// The round trip of `kms test`, printing each step as it passes.
async fn round_trip(ctx: &Context, k: &Kms, sign: bool) -> Result<Value> {
    let key_id = k.default_key(KeyRole::Encryption);
    let say = |s: String| {
        if !ctx.json {
            output::line(s);
        }
    };
    say(format!("Testing KMS roundtrip with key {key_id:?}..."));
    let plaintext = lango_crypto::random::bytes::<32>()?;
    let aad = AeadContext {
        purpose: BlobPurpose::ToolEncrypt,
        context: b"lango-kms-test",
        max_blob_len: 64 * 1024,
    };
    let started = Instant::now();
    let blob = k
        .provider
        .encrypt(&key_id, &plaintext, aad)
        .await
        .map_err(|e| anyhow::anyhow!("encrypt: {e}"))?;
    let encrypt_ms = started.elapsed().as_secs_f64() * 1000.0;
    say(format!(
        "  Encrypt: OK ({} bytes → {} bytes)",
        plaintext.len(),
        blob.len()
    ));
    let started = Instant::now();
    let back = k
        .provider
        .decrypt(&key_id, &blob, aad)
        .await
        .map_err(|e| anyhow::anyhow!("decrypt: {e}"))?;
    let decrypt_ms = started.elapsed().as_secs_f64() * 1000.0;
    say(format!("  Decrypt: OK ({} bytes)", back.expose().len()));
    if back.expose().len() != plaintext.len() {
        bail!(
            "roundtrip mismatch: got {} bytes, want {}",
            back.expose().len(),
            plaintext.len()
        );
    }
    if let Some(i) = back
        .expose()
        .iter()
        .zip(plaintext.iter())
        .position(|(a, b)| a != b)
    {
        bail!("roundtrip mismatch at byte {i}");
    }
    say("  Roundtrip: PASS".to_owned());
    let mut report = json!({
        "key_id": key_id,
        "encrypt": { "plaintext_bytes": plaintext.len(), "blob_bytes": blob.len(), "ms": encrypt_ms },
        "decrypt": { "bytes": back.expose().len(), "ms": decrypt_ms },
        "roundtrip": "pass",
    });
    if sign {
        let signing_key = k.default_key(KeyRole::Signing);
        let started = Instant::now();
        // The provider self-verifies every ECDSA signature against the key's public key and
        // normalises it to low-S before returning it.
        let sig = k
            .provider
            .sign(&signing_key, b"lango-kms-test: sign probe")
            .await
            .map_err(|e| anyhow::anyhow!("sign: {e}"))?;
        let sign_ms = started.elapsed().as_secs_f64() * 1000.0;
        say(format!(
            "  Sign: OK ({}, {} bytes)",
            sig.algorithm.id(),
            sig.bytes.len()
        ));
        report["sign"] = json!({
            "key_id": signing_key,
            "algorithm": sig.algorithm.id(),
            "bytes": sig.bytes.len(),
            "ms": sign_ms,
        });
    }
    Ok(report)
}

async fn keys(ctx: &Context, config: &NodeConfig, remote: bool) -> Result<ExitCode> {
    if remote {
        let provider = config.security.signer.provider.as_str();
        if !is_kms(provider) {
            bail!("current provider {provider:?} is not a KMS provider");
        }
        let k = Kms::build(provider, &config.security.kms).await?;
        let listed = k.backend.list_keys().await;
        k.backend.close().await;
        let listed = listed?;
        if ctx.json {
            let v: Vec<Value> = listed
                .iter()
                .map(|r| {
                    json!({
                        "key_id": r.key_id,
                        "aliases": r.aliases,
                        "usage": r.usage.map(|u| format!("{u:?}").to_lowercase()),
                        "algorithm": r.algorithm,
                        "enabled": r.enabled,
                    })
                })
                .collect();
            output::json(&v)?;
        } else if listed.is_empty() {
            output::line("No keys in the KMS.");
        } else {
            let mut rows = vec![vec![
                "KEY ID".to_owned(),
                "USAGE".to_owned(),
                "ALGORITHM".to_owned(),
                "ALIASES".to_owned(),
            ]];
            for r in &listed {
                rows.push(vec![
                    r.key_id.clone(),
                    r.usage
                        .map(|u| format!("{u:?}").to_lowercase())
                        .unwrap_or_default(),
                    r.algorithm.clone().unwrap_or_default(),
                    r.aliases.join(","),
                ]);
            }
            output::table(&rows);
        }
        return Ok(ExitCode::SUCCESS);
    }
    let vault =
        super::security::open_vault(ctx, config, lango_secrets::UnlockOptions::default()).await?;
    let listed = async { Ok::<_, anyhow::Error>(vault.registry()?.list().await?) }.await;
    vault.close().await;
    let mut listed = listed?;
    listed.sort_by(|a, b| b.created_at.cmp(&a.created_at));
    if ctx.json {
        let v: Vec<Value> = listed
            .iter()
            .map(|k| {
                json!({
                    "ID": k.id,
                    "Name": k.name,
                    "RemoteKeyID": k.remote_key_id,
                    "Type": k.key_type,
                    "CreatedAt": k.created_at,
                    "LastUsedAt": k.last_used_at,
                })
            })
            .collect();
        output::json(&v)?;
    } else if listed.is_empty() {
        output::line("No keys registered.");
    } else {
        output::line(format!(
            "{:<36}  {:<20}  {:<12}  {:<40}",
            "ID", "NAME", "TYPE", "REMOTE KEY ID"
        ));
        for k in &listed {
            output::line(format!(
                "{:<36}  {:<20}  {:<12}  {:<40}",
                k.id, k.name, k.key_type, k.remote_key_id
            ));
        }
    }
    Ok(ExitCode::SUCCESS)
}
