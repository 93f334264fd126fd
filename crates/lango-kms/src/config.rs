//! The `security.kms` configuration the backends and wrappers need (spec §2.13).
//!
//! The application's loader parses JSON (camelCase keys, Go durations as text or integer
//! nanoseconds) into [`KmsConfig`]; this module holds the defaults, the effective values, and
//! the validation with Go's user-visible messages plus the Rust additions.
//!
//! `max_retries` is unsigned: a negative `security.kms.maxRetries` must be rejected while
//! parsing, with [`parse_max_retries`]. An explicit `0` means "no retries" (K-6).

use std::{fmt, time::Duration};

use lango_crypto::SecretString;

use crate::{
    backend::{KeyRole, KmsProviderName},
    composite::FallbackMode,
    retry::{DEFAULT_ATTEMPT_TIMEOUT, DEFAULT_MAX_DELAY, DEFAULT_MAX_RETRIES, Jitter, RetryPolicy},
};

/// The signer providers `security.signer.provider` accepts.
pub const SIGNER_PROVIDERS: [&str; 7] = [
    "local", "rpc", "enclave", "aws-kms", "gcp-kms", "azure-kv", "pkcs11",
];

/// Azure Key Vault encryption algorithm for wrapping data keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum AzureEncryptionAlgorithm {
    /// `RSA-OAEP` (SHA-1; Go parity, default).
    #[default]
    RsaOaep,
    /// `RSA-OAEP-256` (recommended for new vaults).
    RsaOaep256,
}

impl AzureEncryptionAlgorithm {
    /// The Key Vault name of the algorithm.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::RsaOaep => "RSA-OAEP",
            Self::RsaOaep256 => "RSA-OAEP-256",
        }
    }
}

impl std::str::FromStr for AzureEncryptionAlgorithm {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "RSA-OAEP" => Ok(Self::RsaOaep),
            "RSA-OAEP-256" => Ok(Self::RsaOaep256),
            other => Err(format!(
                "invalid security.kms.azure.encryptionAlgorithm: {other:?} (must be RSA-OAEP or RSA-OAEP-256)"
            )),
        }
    }
}

/// `security.kms.azure`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AzureConfig {
    /// `vaultUrl`, e.g. `https://myvault.vault.azure.net`.
    pub vault_url: String,
    /// `keyVersion`; empty = latest.
    pub key_version: String,
    /// `encryptionAlgorithm`.
    pub encryption_algorithm: AzureEncryptionAlgorithm,
}

/// `security.kms.pkcs11`. `Debug` never shows the PIN.
#[derive(Debug, Default)]
pub struct Pkcs11Config {
    /// `modulePath`: the `.so`/`.dylib`/`.dll` to load.
    pub module_path: String,
    /// `slotId`.
    pub slot_id: u64,
    /// `pin`; prefer `LANGO_PKCS11_PIN`, read once at start-up and removed from the
    /// environment (K-8). Wiped on drop, `[redacted]` in `Debug`.
    pub pin: Option<SecretString>,
    /// `keyLabel`: the default key for aliases.
    pub key_label: String,
}

impl Clone for Pkcs11Config {
    fn clone(&self) -> Self {
        Self {
            module_path: self.module_path.clone(),
            slot_id: self.slot_id,
            pin: self.pin.as_ref().map(SecretString::duplicate),
            key_label: self.key_label.clone(),
        }
    }
}

/// `security.kms`.
#[derive(Debug, Clone)]
pub struct KmsConfig {
    /// `region` (AWS only; SDK default chain when empty).
    pub region: String,
    /// `keyId`: AWS key id/ARN/alias, GCP resource name, Azure key name; optional for PKCS#11.
    pub key_id: String,
    /// `signingKeyId`: default key for `sign` aliases; `None` = `key_id` (K-2).
    pub signing_key_id: Option<String>,
    /// `encryptionKeyId`: default key for `encrypt`/`decrypt` aliases and the probe; `None` =
    /// `key_id` (K-2).
    pub encryption_key_id: Option<String>,
    /// `endpoint`: custom service endpoint (tests).
    pub endpoint: String,
    /// `fallbackToLocal`: wrap the backend in the composite provider.
    pub fallback_to_local: bool,
    /// `timeoutPerOperation`: deadline of each attempt; zero means the default (5 s).
    pub timeout_per_operation: Duration,
    /// `maxRetries`: retries after the first attempt; `0` = none.
    pub max_retries: u32,
    /// `fallbackMode`.
    pub fallback_mode: FallbackMode,
    /// `retry.maxDelay`: cap on one backoff delay; zero means the default (5 s).
    pub retry_max_delay: Duration,
    /// `retry.jitter`.
    pub retry_jitter: Jitter,
    /// `taggedCiphertext`. Every blob lango-rs writes carries the v1 header with its provider
    /// tag, so this only matters to code that still writes Go-format blobs.
    pub tagged_ciphertext: bool,
    /// `envelope`: wrap a data key with the KMS and encrypt locally (K-5).
    pub envelope: bool,
    /// `allowInsecureEndpoint`: permit `http://` endpoints (tests only, K-12).
    pub allow_insecure_endpoint: bool,
    /// `azure`.
    pub azure: AzureConfig,
    /// `pkcs11`.
    pub pkcs11: Pkcs11Config,
}

impl Default for KmsConfig {
    fn default() -> Self {
        Self {
            region: String::new(),
            key_id: String::new(),
            signing_key_id: None,
            encryption_key_id: None,
            endpoint: String::new(),
            fallback_to_local: true,
            timeout_per_operation: DEFAULT_ATTEMPT_TIMEOUT,
            max_retries: DEFAULT_MAX_RETRIES,
            fallback_mode: FallbackMode::UnavailableOnly,
            retry_max_delay: DEFAULT_MAX_DELAY,
            retry_jitter: Jitter::Equal,
            tagged_ciphertext: false,
            envelope: true,
            allow_insecure_endpoint: false,
            azure: AzureConfig::default(),
            pkcs11: Pkcs11Config::default(),
        }
    }
}

/// Checks a raw `security.kms.maxRetries`: negative values are a configuration error.
pub fn parse_max_retries(value: i64) -> Result<u32, String> {
    u32::try_from(value).map_err(|_| {
        if value < 0 {
            format!(
                "security.kms.maxRetries must not be negative (got {value}); 0 disables retries"
            )
        } else {
            format!("security.kms.maxRetries is too large (got {value})")
        }
    })
}

fn non_empty(s: &Option<String>) -> Option<&str> {
    s.as_deref().filter(|s| !s.is_empty())
}

impl KmsConfig {
    /// The default key for `role`: `signingKeyId` / `encryptionKeyId` when set, else `keyId`.
    /// (PKCS#11 backends fall back further to `pkcs11.keyLabel`.)
    pub fn default_key_id(&self, role: KeyRole) -> &str {
        let specific = match role {
            KeyRole::Signing => non_empty(&self.signing_key_id),
            KeyRole::Encryption => non_empty(&self.encryption_key_id),
        };
        specific.unwrap_or(&self.key_id)
    }

    /// The per-attempt deadline, with zero replaced by 5 s.
    pub fn effective_timeout(&self) -> Duration {
        if self.timeout_per_operation.is_zero() {
            DEFAULT_ATTEMPT_TIMEOUT
        } else {
            self.timeout_per_operation
        }
    }

    /// The retry policy this configuration describes.
    pub fn retry_policy(&self) -> RetryPolicy {
        RetryPolicy {
            max_retries: self.max_retries,
            max_delay: if self.retry_max_delay.is_zero() {
                DEFAULT_MAX_DELAY
            } else {
                self.retry_max_delay
            },
            jitter: self.retry_jitter,
            per_attempt_timeout: self.effective_timeout(),
            ..RetryPolicy::default()
        }
    }

    /// Validates the KMS part of the configuration for `security.signer.provider = provider`.
    /// Returns every problem at once, with Go's messages where Go has one. An empty provider
    /// (no security subsystem) and the non-KMS providers need nothing from this section.
    pub fn validate(&self, provider: &str) -> Result<(), Vec<String>> {
        let mut errors = Vec::new();
        if provider.is_empty() {
            return Ok(());
        }
        if !SIGNER_PROVIDERS.contains(&provider) {
            errors.push(format!(
                "invalid security.signer.provider: {provider:?} (must be local, rpc, enclave, aws-kms, gcp-kms, azure-kv, or pkcs11)"
            ));
            return Err(errors);
        }
        let Ok(name) = provider.parse::<KmsProviderName>() else {
            return Ok(());
        };
        match name {
            KmsProviderName::AwsKms | KmsProviderName::GcpKms => {
                if self.key_id.is_empty() {
                    errors.push(format!(
                        "security.kms.keyId is required when provider is {provider:?}"
                    ));
                }
            }
            KmsProviderName::AzureKv => {
                if self.azure.vault_url.is_empty() {
                    errors.push(
                        "security.kms.azure.vaultUrl is required when provider is 'azure-kv'"
                            .to_owned(),
                    );
                }
                if self.key_id.is_empty() {
                    errors.push(
                        "security.kms.keyId is required when provider is 'azure-kv'".to_owned(),
                    );
                }
            }
            KmsProviderName::Pkcs11 => {
                if self.pkcs11.module_path.is_empty() {
                    errors.push(
                        "security.kms.pkcs11.modulePath is required when provider is 'pkcs11'"
                            .to_owned(),
                    );
                }
            }
        }
        for (key, url) in [
            ("security.kms.endpoint", &self.endpoint),
            ("security.kms.azure.vaultUrl", &self.azure.vault_url),
        ] {
            if is_plain_http(url) && !self.allow_insecure_endpoint {
                errors.push(format!(
                    "{key} uses plain http:// ({url}); set security.kms.allowInsecureEndpoint to allow it (tests only)"
                ));
            }
        }
        if errors.is_empty() {
            Ok(())
        } else {
            Err(errors)
        }
    }

    /// Problems worth a warning that do not stop the start.
    pub fn warnings(&self, provider: &str) -> Vec<String> {
        let mut w = Vec::new();
        if provider == "pkcs11" && self.key_id.is_empty() && self.pkcs11.key_label.is_empty() {
            w.push(
                "neither security.kms.keyId nor security.kms.pkcs11.keyLabel is set: key aliases (\"\", \"local\", \"default\") resolve to no key"
                    .to_owned(),
            );
        }
        if self.fallback_mode == FallbackMode::AnyError && self.fallback_to_local {
            w.push(
                "security.kms.fallbackMode is \"any-error\": a denied or disabled KMS key silently falls back to the local key"
                    .to_owned(),
            );
        }
        w
    }
}

fn is_plain_http(url: &str) -> bool {
    url.get(..7)
        .is_some_and(|p| p.eq_ignore_ascii_case("http://"))
}

/// Formats validation errors as Go does: `configuration validation failed:` followed by one
/// `  - <msg>` line per error.
pub fn format_errors(errors: &[String]) -> String {
    struct Lines<'a>(&'a [String]);
    impl fmt::Display for Lines<'_> {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("configuration validation failed:")?;
            for e in self.0 {
                write!(f, "\n  - {e}")?;
            }
            Ok(())
        }
    }
    Lines(errors).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults() {
        let c = KmsConfig::default();
        assert!(c.fallback_to_local);
        assert_eq!(c.timeout_per_operation, Duration::from_secs(5));
        assert_eq!(c.max_retries, 3);
        assert_eq!(c.fallback_mode, FallbackMode::UnavailableOnly);
        assert_eq!(c.retry_max_delay, Duration::from_secs(5));
        assert_eq!(c.retry_jitter, Jitter::Equal);
        assert!(!c.tagged_ciphertext);
        assert!(c.envelope);
        assert!(!c.allow_insecure_endpoint);
        assert_eq!(c.azure.encryption_algorithm.as_str(), "RSA-OAEP");
        let p = c.retry_policy();
        assert_eq!(
            (p.max_retries, p.max_delay, p.per_attempt_timeout),
            (3, Duration::from_secs(5), Duration::from_secs(5))
        );
    }

    #[test]
    fn zero_timeout_and_delay_mean_the_defaults_but_zero_retries_means_none() {
        let c = KmsConfig {
            timeout_per_operation: Duration::ZERO,
            retry_max_delay: Duration::ZERO,
            max_retries: 0,
            ..KmsConfig::default()
        };
        let p = c.retry_policy();
        assert_eq!(p.per_attempt_timeout, Duration::from_secs(5));
        assert_eq!(p.max_delay, Duration::from_secs(5));
        assert_eq!(p.max_retries, 0);
    }

    #[test]
    fn key_ids_per_role() {
        let mut c = KmsConfig {
            key_id: "k".into(),
            ..KmsConfig::default()
        };
        assert_eq!(c.default_key_id(KeyRole::Signing), "k");
        assert_eq!(c.default_key_id(KeyRole::Encryption), "k");
        c.signing_key_id = Some("s".into());
        c.encryption_key_id = Some(String::new());
        assert_eq!(c.default_key_id(KeyRole::Signing), "s");
        assert_eq!(c.default_key_id(KeyRole::Encryption), "k");
    }

    #[test]
    fn negative_max_retries_is_rejected() {
        assert_eq!(parse_max_retries(0), Ok(0));
        assert_eq!(parse_max_retries(3), Ok(3));
        assert_eq!(
            parse_max_retries(-1),
            Err(
                "security.kms.maxRetries must not be negative (got -1); 0 disables retries"
                    .to_owned()
            )
        );
        assert!(parse_max_retries(i64::MAX).is_err());
    }

    #[test]
    fn go_validation_messages_verbatim() {
        let empty = KmsConfig::default();
        let one = |p: &str| empty.validate(p).unwrap_err();
        assert_eq!(
            one("vault"),
            [
                "invalid security.signer.provider: \"vault\" (must be local, rpc, enclave, aws-kms, gcp-kms, azure-kv, or pkcs11)"
            ]
        );
        assert_eq!(
            one("aws-kms"),
            ["security.kms.keyId is required when provider is \"aws-kms\""]
        );
        assert_eq!(
            one("gcp-kms"),
            ["security.kms.keyId is required when provider is \"gcp-kms\""]
        );
        // Several errors are reported together, vault URL first.
        assert_eq!(
            one("azure-kv"),
            [
                "security.kms.azure.vaultUrl is required when provider is 'azure-kv'",
                "security.kms.keyId is required when provider is 'azure-kv'",
            ]
        );
        assert_eq!(
            one("pkcs11"),
            ["security.kms.pkcs11.modulePath is required when provider is 'pkcs11'"]
        );
        for ok in ["", "local", "rpc", "enclave"] {
            assert_eq!(empty.validate(ok), Ok(()), "{ok}");
        }
        assert_eq!(
            format_errors(&one("azure-kv")),
            "configuration validation failed:\n  - security.kms.azure.vaultUrl is required when provider is 'azure-kv'\n  - security.kms.keyId is required when provider is 'azure-kv'"
        );
    }

    #[test]
    fn complete_configurations_pass() {
        let aws = KmsConfig {
            key_id: "alias/lango".into(),
            endpoint: "https://kms.eu-west-1.amazonaws.com".into(),
            ..KmsConfig::default()
        };
        assert_eq!(aws.validate("aws-kms"), Ok(()));
        let azure = KmsConfig {
            key_id: "lango".into(),
            azure: AzureConfig {
                vault_url: "https://v.vault.azure.net".into(),
                ..AzureConfig::default()
            },
            ..KmsConfig::default()
        };
        assert_eq!(azure.validate("azure-kv"), Ok(()));
        let mut hsm = KmsConfig::default();
        hsm.pkcs11.module_path = "/usr/lib/softhsm/libsofthsm2.so".into();
        assert_eq!(hsm.validate("pkcs11"), Ok(()));
        assert_eq!(hsm.warnings("pkcs11").len(), 1);
        hsm.pkcs11.key_label = "lango".into();
        assert!(hsm.warnings("pkcs11").is_empty());
    }

    #[test]
    fn plain_http_endpoint_needs_the_flag() {
        let mut c = KmsConfig {
            key_id: "k".into(),
            endpoint: "HTTP://localhost:4566".into(),
            ..KmsConfig::default()
        };
        let e = c.validate("aws-kms").unwrap_err();
        assert_eq!(e.len(), 1);
        assert!(
            e[0].starts_with("security.kms.endpoint uses plain http://"),
            "{}",
            e[0]
        );
        c.allow_insecure_endpoint = true;
        assert_eq!(c.validate("aws-kms"), Ok(()));
        // Errors accumulate with the Go ones.
        let c = KmsConfig {
            endpoint: "http://127.0.0.1:8080".into(),
            ..KmsConfig::default()
        };
        assert_eq!(c.validate("gcp-kms").unwrap_err().len(), 2);
    }

    #[test]
    fn pin_never_appears_in_debug() {
        let mut c = KmsConfig::default();
        c.pkcs11.pin = Some(SecretString::new("pin-1234-canary".into()));
        let copy = c.clone();
        for out in [
            format!("{c:?}"),
            format!("{copy:?}"),
            format!("{:#?}", c.pkcs11),
        ] {
            assert!(!out.contains("1234"), "{out}");
            assert!(out.contains("[redacted]"), "{out}");
        }
        assert_eq!(copy.pkcs11.pin.unwrap().expose(), "pin-1234-canary");
    }

    #[test]
    fn azure_algorithm_spellings() {
        for a in [
            AzureEncryptionAlgorithm::RsaOaep,
            AzureEncryptionAlgorithm::RsaOaep256,
        ] {
            assert_eq!(a.as_str().parse::<AzureEncryptionAlgorithm>(), Ok(a));
        }
        assert!("RSA1_5".parse::<AzureEncryptionAlgorithm>().is_err());
    }
}
