//! Configuration sections owned by the vault (`security.passphrase`, `security.dbEncryption`,
//! `security.legacy`, `security.secrets`, `security.signer`) and [`VaultConfig`], which bundles
//! everything unlock needs.

use std::path::{Path, PathBuf};

use lango_crypto::KdfConfig;
use lango_keyring::KeyringConfig;
use serde::{Deserialize, Serialize};

use crate::passphrase::Source;

/// `security.passphrase`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct PassphraseConfig {
    /// Keyfile path; empty means `<data-dir>/keyfile`. `LANGO_KEYFILE` overrides both.
    pub keyfile: String,
    /// Keep the keyfile after a successful unlock instead of shredding it (KF-5).
    pub keep_keyfile: bool,
    /// Which sources may be used; the order is always keyring, keyfile, interactive, stdin.
    pub sources: Vec<Source>,
    /// Minimum length of new passphrases in characters (at least 8).
    pub min_length: u32,
}

impl Default for PassphraseConfig {
    fn default() -> Self {
        Self {
            keyfile: String::new(),
            keep_keyfile: false,
            sources: Source::ALL.to_vec(),
            min_length: 12,
        }
    }
}

/// `security.dbEncryption`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct DbEncryptionConfig {
    /// Create new databases encrypted (SQLCipher). Existing databases are not converted
    /// automatically (`security db-migrate` does that).
    pub enabled: bool,
    /// Page size used when a database is created or exported (power of two, 1024..=65536).
    pub cipher_page_size: u32,
}

impl Default for DbEncryptionConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            cipher_page_size: 4096,
        }
    }
}

/// `security.legacy`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct LegacyConfig {
    /// Migrate data written by the Go node at the first unlock (one way).
    pub auto_migrate: bool,
}

impl Default for LegacyConfig {
    fn default() -> Self {
        Self { auto_migrate: true }
    }
}

/// `security.secrets`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct SecretsConfig {
    /// Largest secret value accepted, in bytes.
    pub max_value_bytes: u32,
}

impl Default for SecretsConfig {
    fn default() -> Self {
        Self {
            max_value_bytes: 65_536,
        }
    }
}

/// `security.signer`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct SignerConfig {
    /// `local` (default), or a KMS provider name when one is compiled in.
    pub provider: String,
}

impl Default for SignerConfig {
    fn default() -> Self {
        Self {
            provider: "local".into(),
        }
    }
}

/// Everything the unlock sequence reads from the configuration.
#[derive(Debug, Clone, Default)]
pub struct VaultConfig {
    /// `security.kdf`.
    pub kdf: KdfConfig,
    /// `security.keyring`.
    pub keyring: KeyringConfig,
    /// `security.passphrase`.
    pub passphrase: PassphraseConfig,
    /// `security.dbEncryption`.
    pub db_encryption: DbEncryptionConfig,
    /// `security.legacy`.
    pub legacy: LegacyConfig,
    /// `security.secrets`.
    pub secrets: SecretsConfig,
    /// `security.signer`.
    pub signer: SignerConfig,
    /// Keyfile path from `LANGO_KEYFILE`, which overrides `security.passphrase.keyfile`.
    pub keyfile_env: Option<PathBuf>,
}

impl VaultConfig {
    /// The keyfile path (KF-7).
    pub fn keyfile_path(&self, data_dir: &Path) -> PathBuf {
        if let Some(p) = &self.keyfile_env {
            return p.clone();
        }
        if self.passphrase.keyfile.is_empty() {
            data_dir.join("keyfile")
        } else {
            PathBuf::from(&self.passphrase.keyfile)
        }
    }
}

impl PassphraseConfig {
    /// Checks the section.
    pub fn validate(&self, prefix: &str) -> Result<(), Vec<String>> {
        let mut p = Vec::new();
        if self.min_length < 8 {
            p.push(format!(
                "{prefix}.minLength: {} is below the minimum of 8",
                self.min_length
            ));
        }
        if self.min_length > 1024 {
            p.push(format!(
                "{prefix}.minLength: {} exceeds 1024",
                self.min_length
            ));
        }
        let mut seen = Vec::new();
        for s in &self.sources {
            if seen.contains(s) {
                p.push(format!("{prefix}.sources: {s} is listed twice"));
            }
            seen.push(*s);
        }
        if p.is_empty() { Ok(()) } else { Err(p) }
    }
}

impl DbEncryptionConfig {
    /// Checks the section.
    pub fn validate(&self, prefix: &str) -> Result<(), Vec<String>> {
        let ps = self.cipher_page_size;
        if !(1024..=65536).contains(&ps) || !ps.is_power_of_two() {
            return Err(vec![format!(
                "{prefix}.cipherPageSize: {ps} must be a power of two between 1024 and 65536"
            )]);
        }
        Ok(())
    }
}

impl SecretsConfig {
    /// Checks the section.
    pub fn validate(&self, prefix: &str) -> Result<(), Vec<String>> {
        if self.max_value_bytes == 0 || self.max_value_bytes > 16 * 1024 * 1024 {
            return Err(vec![format!(
                "{prefix}.maxValueBytes: {} must be between 1 and 16777216",
                self.max_value_bytes
            )]);
        }
        Ok(())
    }
}

impl SignerConfig {
    /// Checks the section. Provider names other than `local` are accepted only when the
    /// application registers a KMS backend for them (checked by the application).
    pub fn validate(&self, prefix: &str) -> Result<(), Vec<String>> {
        const KNOWN: [&str; 7] = [
            "local", "rpc", "enclave", "aws-kms", "gcp-kms", "azure-kv", "pkcs11",
        ];
        if !KNOWN.contains(&self.provider.as_str()) {
            return Err(vec![format!(
                "{prefix}.provider: {:?} (must be local, rpc, enclave, aws-kms, gcp-kms, azure-kv, or pkcs11)",
                self.provider
            )]);
        }
        Ok(())
    }
}
