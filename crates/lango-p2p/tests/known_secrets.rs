//! Known-secret redaction of the production response filter against a real vault (protocol
//! spec item 4): a value stored in the vault is redacted when a tool echoes it.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::Path;

use lango_crypto::{KdfConfig, SecretString, kdf::Argon2Config};
use lango_p2p::sanitize::{OwnerProtectionConfig, SECRET_REDACTED};
use lango_secrets::{
    Caller, UnlockOptions, Vault, VaultConfig,
    passphrase::{Given, NoPrompt},
};
use serde_json::json;

const PASS: &str = "correct horse battery staple";

async fn vault(dir: &Path) -> Vault {
    let mut config = VaultConfig {
        kdf: KdfConfig {
            argon2: Argon2Config {
                memory_kib: 19_456,
                time_cost: 2,
                parallelism: 1,
            },
            ..KdfConfig::default()
        },
        ..VaultConfig::default()
    };
    config.keyring.enabled = false;
    let given = Given::new(SecretString::new(PASS.into()), &NoPrompt);
    lango_secrets::unlock(
        dir,
        &config,
        &given,
        UnlockOptions {
            allow_create: true,
            ..UnlockOptions::default()
        },
    )
    .await
    .unwrap()
}

/// Values no generic rule recognises as secret: only the vault makes them known.
const LONG: &str = "purple-harbour-lantern-7731";
const SHORT: &str = "plum42";

#[tokio::test]
async fn vault_values_are_redacted_by_the_serving_filter() {
    let t = tempfile::tempdir().unwrap();
    let v = vault(&t.path().join("lango")).await;
    let store = v.secrets().unwrap();
    store
        .put("partner-api-token", LONG.as_bytes(), Caller::Operator)
        .await
        .unwrap();
    store
        .put("door-code", SHORT.as_bytes(), Caller::Operator)
        .await
        .unwrap();

    let filter =
        lango_p2p::known_secrets::response_filter(&OwnerProtectionConfig::default(), &store)
            .await
            .unwrap();
    let out = filter.filter_value(json!({
        "echo": format!("the token is {LONG}, keep it safe"),
        "exact": LONG,
        "code": SHORT,
        "list": ["harmless", format!("x{LONG}y")],
        "note": "a short value inside text (plum42x) is matched only whole",
    }));
    let text = serde_json::to_string(&out.value).unwrap();
    assert!(!text.contains(LONG), "{text}");
    assert_eq!(out.value["exact"], SECRET_REDACTED);
    assert_eq!(out.value["code"], SECRET_REDACTED);
    assert_eq!(out.value["echo"], SECRET_REDACTED);
    assert_eq!(out.value["list"][0], "harmless");
    assert!(!out.report.sanitized.is_empty());
    // Errors go through the same sanitizer.
    assert!(
        !filter
            .filter_error(&format!("failed with {LONG}"))
            .contains(LONG)
    );
    v.close().await;
}
