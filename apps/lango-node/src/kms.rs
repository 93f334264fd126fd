//! `security.kms`: the configuration file's form of [`lango_kms::KmsConfig`], and the
//! composition of the KMS provider the node uses (backend → retry/envelope → optional local
//! fallback).
//!
//! The section is plain data with Go's camelCase keys; durations accept Go's syntax (`5s`,
//! `1m30s`) and integer nanoseconds (what Go profiles store). The PKCS#11 PIN may be set here
//! (Go parity) but `LANGO_PKCS11_PIN` takes precedence and keeps it out of the file; it is
//! never written back or printed.

use std::{sync::Arc, time::Duration};

use lango_crypto::{SecretString, provider::CryptoProvider};
use lango_kms::{
    HealthChecker, KmsBackend, KmsConfig, KmsProvider,
    backend::KeyRole,
    config::{AzureConfig, Pkcs11Config},
};
use lango_session::config::go_duration;
use serde::{Deserialize, Serialize, Serializer};

/// `security.kms` as written in the configuration file.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct KmsSection {
    /// AWS region (SDK default chain when empty).
    pub region: String,
    /// AWS key id/ARN/alias, GCP resource name, Azure key name; optional for PKCS#11.
    pub key_id: String,
    /// Default key for signatures (empty: `keyId`).
    pub signing_key_id: String,
    /// Default key for encryption and the health probe (empty: `keyId`).
    pub encryption_key_id: String,
    /// Custom endpoint (local servers in tests).
    pub endpoint: String,
    /// Fall back to the local key while the KMS is unreachable.
    pub fallback_to_local: bool,
    /// Deadline of one attempt (default 5 s; zero means the default).
    #[serde(with = "go_duration")]
    pub timeout_per_operation: Duration,
    /// Retries after the first attempt (default 3; 0 = none; negative is an error).
    pub max_retries: i64,
    /// `unavailable-only` (default: fail closed on denied/disabled keys) or `any-error` (Go).
    pub fallback_mode: String,
    /// Backoff settings.
    pub retry: RetrySection,
    /// Go key, accepted (every blob lango-rs writes is tagged with its provider).
    pub tagged_ciphertext: bool,
    /// Envelope encryption (default on).
    pub envelope: bool,
    /// Allow `http://` endpoints (tests only).
    pub allow_insecure_endpoint: bool,
    /// Azure Key Vault settings.
    pub azure: AzureSection,
    /// PKCS#11 settings.
    pub pkcs11: Pkcs11Section,
}

/// `security.kms.retry`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct RetrySection {
    /// Cap on one backoff delay (default 5 s).
    #[serde(with = "go_duration")]
    pub max_delay: Duration,
    /// `equal` (default) or `none`.
    pub jitter: String,
}

/// `security.kms.azure`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct AzureSection {
    /// e.g. `https://myvault.vault.azure.net`.
    pub vault_url: String,
    /// Empty: the latest version.
    pub key_version: String,
    /// `RSA-OAEP` (Go) or `RSA-OAEP-256`.
    pub encryption_algorithm: String,
}

/// `security.kms.pkcs11`.
#[derive(Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct Pkcs11Section {
    /// The PKCS#11 module (`.so`).
    pub module_path: String,
    /// The slot.
    pub slot_id: u64,
    /// The user PIN; prefer `LANGO_PKCS11_PIN`. Never written back.
    #[serde(serialize_with = "redacted")]
    pub pin: String,
    /// Default key label for the aliases `""`, `local`, `default`.
    pub key_label: String,
}

impl std::fmt::Debug for Pkcs11Section {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pkcs11Section")
            .field("module_path", &self.module_path)
            .field("slot_id", &self.slot_id)
            .field(
                "pin",
                &if self.pin.is_empty() {
                    ""
                } else {
                    "[redacted]"
                },
            )
            .field("key_label", &self.key_label)
            .finish()
    }
}

fn redacted<S: Serializer>(pin: &str, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(if pin.is_empty() { "" } else { "[redacted]" })
}

impl Default for KmsSection {
    fn default() -> Self {
        let d = KmsConfig::default();
        Self {
            region: String::new(),
            key_id: String::new(),
            signing_key_id: String::new(),
            encryption_key_id: String::new(),
            endpoint: String::new(),
            fallback_to_local: d.fallback_to_local,
            timeout_per_operation: d.timeout_per_operation,
            max_retries: i64::from(d.max_retries),
            fallback_mode: d.fallback_mode.as_str().into(),
            retry: RetrySection::default(),
            tagged_ciphertext: d.tagged_ciphertext,
            envelope: d.envelope,
            allow_insecure_endpoint: false,
            azure: AzureSection::default(),
            pkcs11: Pkcs11Section::default(),
        }
    }
}

impl Default for RetrySection {
    fn default() -> Self {
        Self {
            max_delay: KmsConfig::default().retry_max_delay,
            jitter: "equal".into(),
        }
    }
}

impl Default for AzureSection {
    fn default() -> Self {
        Self {
            vault_url: String::new(),
            key_version: String::new(),
            encryption_algorithm: AzureConfig::default().encryption_algorithm.as_str().into(),
        }
    }
}

impl KmsSection {
    /// The crate's configuration; every unparsable value is reported with its key.
    pub fn to_config(&self) -> Result<KmsConfig, Vec<String>> {
        match self.convert() {
            (c, p) if p.is_empty() => Ok(c),
            (_, p) => Err(p),
        }
    }

    /// The configuration with defaults in place of unparsable values, and the problems.
    fn convert(&self) -> (KmsConfig, Vec<String>) {
        let mut p = Vec::new();
        let max_retries = lango_kms::config::parse_max_retries(self.max_retries)
            .map_err(|e| p.push(e))
            .unwrap_or_default();
        let fallback_mode = self
            .fallback_mode
            .parse()
            .map_err(|e: String| p.push(e))
            .unwrap_or_default();
        let retry_jitter = self
            .retry
            .jitter
            .parse()
            .map_err(|e: String| p.push(format!("security.kms.retry.jitter: {e}")))
            .unwrap_or_default();
        let encryption_algorithm = self
            .azure
            .encryption_algorithm
            .parse()
            .map_err(|e: String| p.push(e))
            .unwrap_or_default();
        let opt = |s: &str| (!s.is_empty()).then(|| s.to_owned());
        let config = KmsConfig {
            region: self.region.clone(),
            key_id: self.key_id.clone(),
            signing_key_id: opt(&self.signing_key_id),
            encryption_key_id: opt(&self.encryption_key_id),
            endpoint: self.endpoint.clone(),
            fallback_to_local: self.fallback_to_local,
            timeout_per_operation: self.timeout_per_operation,
            max_retries,
            fallback_mode,
            retry_max_delay: self.retry.max_delay,
            retry_jitter,
            tagged_ciphertext: self.tagged_ciphertext,
            envelope: self.envelope,
            allow_insecure_endpoint: self.allow_insecure_endpoint,
            azure: AzureConfig {
                vault_url: self.azure.vault_url.clone(),
                key_version: self.azure.key_version.clone(),
                encryption_algorithm,
            },
            pkcs11: Pkcs11Config {
                module_path: self.pkcs11.module_path.clone(),
                slot_id: self.pkcs11.slot_id,
                pin: opt(&self.pkcs11.pin).map(SecretString::new),
                key_label: self.pkcs11.key_label.clone(),
            },
        };
        (config, p)
    }

    /// Checks the section for `security.signer.provider = provider` (Go's messages).
    pub fn validate(&self, provider: &str) -> Result<(), Vec<String>> {
        let (config, mut problems) = self.convert();
        if let Err(more) = config.validate(provider) {
            problems.extend(more);
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(problems)
        }
    }
}

/// Whether `provider` names a KMS backend (`aws-kms`, `gcp-kms`, `azure-kv`, `pkcs11`).
pub fn is_kms(provider: &str) -> bool {
    provider.parse::<lango_kms::KmsProviderName>().is_ok()
}

/// A built backend and the provider stack over it.
pub struct Kms {
    /// The backend (one attempt per call).
    pub backend: Arc<dyn KmsBackend>,
    /// Retries, envelope encryption, low-S: what the node uses when there is no fallback.
    pub provider: Arc<KmsProvider>,
    /// The configuration it was built from.
    pub config: KmsConfig,
}

impl Kms {
    /// Builds the backend `provider` from the section.
    pub async fn build(provider: &str, section: &KmsSection) -> anyhow::Result<Self> {
        let config = section
            .to_config()
            .map_err(|p| anyhow::anyhow!("{}", p.join("; ")))?;
        let backend = lango_kms::new_kms_provider(provider, &config).await?;
        let kms = Arc::new(KmsProvider::new(backend.clone(), config.retry_policy()));
        Ok(Self {
            backend,
            provider: kms,
            config,
        })
    }

    /// The key `role` uses when none is named, as the backend resolves the aliases (PKCS#11:
    /// the role's key id, else `keyLabel`, else `keyId`; the cloud backends: the role's key
    /// id, else `keyId`).
    pub fn default_key(&self, role: KeyRole) -> String {
        match role {
            KeyRole::Signing => self.backend.signing_key_id(),
            KeyRole::Encryption => self.backend.encryption_key_id(),
        }
        .to_owned()
    }

    /// The provider the secrets store uses: the KMS alone, or with the local key as fallback
    /// while the KMS is unreachable (`fallbackToLocal`; never for signatures, and never for a
    /// denied, disabled or deleted key unless `fallbackMode = "any-error"`: when the health
    /// probe finds the key refused, new values are refused too, issue 17).
    pub fn for_store(&self, local: Arc<dyn CryptoProvider>) -> Arc<dyn CryptoProvider> {
        if self.config.fallback_to_local {
            Arc::new(
                lango_kms::CompositeProvider::new(self.provider.clone() as Arc<dyn CryptoProvider>)
                    .with_fallback(local)
                    .with_checker(self.checker() as Arc<dyn lango_kms::ConnectionChecker>)
                    .with_mode(self.config.fallback_mode),
            )
        } else {
            self.provider.clone()
        }
    }

    /// A health checker on the encryption key (the probe the CLI and the composite use).
    pub fn checker(&self) -> Arc<HealthChecker> {
        Arc::new(HealthChecker::new(
            self.provider.clone() as Arc<dyn CryptoProvider>,
            self.default_key(KeyRole::Encryption),
            KeyRole::Encryption,
            None,
        ))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;
    use crate::config::{from_table, validate};

    fn load(doc: &str) -> Result<crate::config::NodeConfig, Vec<String>> {
        let table: toml::Table = toml::from_str(doc).unwrap();
        from_table(table, &[], "<test>")
            .map(|l| l.config)
            .map_err(|e| match e {
                crate::config::ConfigError::Invalid { problems, .. } => problems,
                other => vec![other.to_string()],
            })
    }

    /// §5.1 item 9: defaults, durations in both forms, and the Go validation messages.
    #[test]
    fn defaults_and_durations() {
        let d = KmsSection::default().to_config().unwrap();
        assert!(d.fallback_to_local);
        assert_eq!(d.timeout_per_operation, Duration::from_secs(5));
        assert_eq!(d.max_retries, 3);
        for (text, want) in [
            ("\"5s\"", Duration::from_secs(5)),
            ("\"1m30s\"", Duration::from_secs(90)),
            ("2500000000", Duration::from_millis(2500)),
        ] {
            let c = load(&format!(
                "[security.kms]\ntimeoutPerOperation = {text}\n[security.kms.retry]\nmaxDelay = {text}\n"
            ))
            .unwrap();
            assert_eq!(c.security.kms.timeout_per_operation, want, "{text}");
            assert_eq!(c.security.kms.retry.max_delay, want, "{text}");
        }
    }

    #[test]
    fn validation_messages_are_gos_and_reported_together() {
        let cases = [
            (
                "[security.signer]\nprovider = \"aws-kms\"\n",
                vec!["security.kms.keyId is required when provider is \"aws-kms\""],
            ),
            (
                "[security.signer]\nprovider = \"azure-kv\"\n",
                vec![
                    "security.kms.azure.vaultUrl is required when provider is 'azure-kv'",
                    "security.kms.keyId is required when provider is 'azure-kv'",
                ],
            ),
            (
                "[security.signer]\nprovider = \"pkcs11\"\n",
                vec!["security.kms.pkcs11.modulePath is required when provider is 'pkcs11'"],
            ),
            (
                "[security.signer]\nprovider = \"gcp-kms\"\n[security.kms]\nkeyId = \"k\"\nmaxRetries = -1\nendpoint = \"http://127.0.0.1:1\"\n",
                vec!["maxRetries", "allowInsecureEndpoint"],
            ),
        ];
        for (doc, wants) in cases {
            let problems = load(doc).unwrap_err().join("\n");
            for w in wants {
                assert!(problems.contains(w), "{w:?} missing from:\n{problems}");
            }
        }
        // The same section is fine while the signer is local.
        let c = load("[security.kms]\nendpoint = \"http://127.0.0.1:1\"\n").unwrap();
        validate(&c).unwrap();
    }

    #[test]
    fn the_pin_never_leaves_the_process() {
        let c = load("[security.kms.pkcs11]\npin = \"1234\"\nmodulePath = \"/m.so\"\n").unwrap();
        assert_eq!(c.security.kms.pkcs11.pin, "1234");
        let shown = format!("{:?}", c.security.kms);
        assert!(!shown.contains("1234"), "{shown}");
        let written = toml::to_string(&c).unwrap();
        assert!(!written.contains("1234"), "{written}");
        let k = c.security.kms.to_config().unwrap();
        assert!(!format!("{k:?}").contains("1234"));
        assert_eq!(
            k.pkcs11
                .pin
                .as_ref()
                .map(|p| p.expose().to_owned())
                .as_deref(),
            Some("1234")
        );
    }
}
