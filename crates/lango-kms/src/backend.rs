//! Provider names and the raw backend trait each cloud KMS or HSM implements.
//!
//! A [`KmsBackend`] is deliberately thin: one remote call per method, no retries, no
//! post-processing. [`crate::KmsProvider`] adds the retry policy, the per-attempt deadline,
//! envelope encryption and signature normalisation on top of any backend, so that this logic
//! exists once rather than four times.
//!
//! Key-id aliasing (spec §2.1, parity): the ids `""`, `"local"` and `"default"` name the
//! backend's configured default key for the operation's purpose (signing or encryption, K-2);
//! any other string is passed to the service verbatim (AWS key id, ARN or `alias/…`; GCP
//! resource name; Azure key name; PKCS#11 label).

use std::{fmt, str::FromStr};

use async_trait::async_trait;
use lango_crypto::{
    SecretBytes,
    aead::ProviderTag,
    provider::{PublicKeyInfo, Signature},
};

use crate::{Error, error::KmsError};

/// The four KMS/HSM backends (`KMSProviderName.Valid()` accepts exactly these).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum KmsProviderName {
    /// AWS KMS (`aws-kms`).
    AwsKms,
    /// GCP Cloud KMS (`gcp-kms`).
    GcpKms,
    /// Azure Key Vault (`azure-kv`).
    AzureKv,
    /// A PKCS#11 token (`pkcs11`).
    Pkcs11,
}

impl KmsProviderName {
    /// Every backend, in the order the factory's error message lists them.
    pub const ALL: [Self; 4] = [Self::AwsKms, Self::GcpKms, Self::AzureKv, Self::Pkcs11];

    /// The configuration name: `aws-kms`, `gcp-kms`, `azure-kv`, `pkcs11`.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::AwsKms => "aws-kms",
            Self::GcpKms => "gcp-kms",
            Self::AzureKv => "azure-kv",
            Self::Pkcs11 => "pkcs11",
        }
    }

    /// The short name used in [`KmsError::provider`]: `aws`, `gcp`, `azure`, `pkcs11`.
    pub const fn short_name(self) -> &'static str {
        match self {
            Self::AwsKms => "aws",
            Self::GcpKms => "gcp",
            Self::AzureKv => "azure",
            Self::Pkcs11 => "pkcs11",
        }
    }

    /// The inverse of [`KmsProviderName::short_name`].
    pub fn from_short_name(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|n| n.short_name() == s)
    }

    /// The name shown in messages such as "AWS KMS support not compiled".
    pub const fn display_name(self) -> &'static str {
        match self {
            Self::AwsKms => "AWS KMS",
            Self::GcpKms => "GCP KMS",
            Self::AzureKv => "Azure Key Vault",
            Self::Pkcs11 => "PKCS#11",
        }
    }

    /// The cargo feature that compiles the backend in.
    pub const fn feature(self) -> &'static str {
        match self {
            Self::AwsKms => "kms-aws",
            Self::GcpKms => "kms-gcp",
            Self::AzureKv => "kms-azure",
            Self::Pkcs11 => "kms-pkcs11",
        }
    }

    /// The tag written into the header of the v1 blobs this backend encrypts.
    pub const fn tag(self) -> ProviderTag {
        match self {
            Self::AwsKms => ProviderTag::AwsKms,
            Self::GcpKms => ProviderTag::GcpKms,
            Self::AzureKv => ProviderTag::AzureKv,
            Self::Pkcs11 => ProviderTag::Pkcs11,
        }
    }

    /// The backend that writes blobs with `tag`, if any.
    pub fn from_tag(tag: ProviderTag) -> Option<Self> {
        Self::ALL.into_iter().find(|n| n.tag() == tag)
    }

    /// The error the factory returns when this backend's feature is off.
    pub const fn not_compiled(self) -> Error {
        Error::NotCompiled {
            backend: self.display_name(),
            feature: self.feature(),
        }
    }
}

impl fmt::Display for KmsProviderName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for KmsProviderName {
    type Err = Error;

    /// Accepts exactly the four configuration names (case-sensitive, as in Go).
    fn from_str(s: &str) -> Result<Self, Error> {
        Self::ALL
            .into_iter()
            .find(|n| n.as_str() == s)
            .ok_or_else(|| Error::UnknownProvider(s.to_owned()))
    }
}

/// What a key is used for; selects the default key an alias resolves to (K-2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum KeyRole {
    /// `sign` and `public_key`.
    Signing,
    /// `encrypt` and `decrypt` (wrapping data keys).
    Encryption,
}

/// Key ids that name the configured default key rather than a key of the service.
pub const KEY_ALIASES: [&str; 3] = ["", "local", "default"];

/// Whether `key_id` is one of the [`KEY_ALIASES`].
pub fn is_alias(key_id: &str) -> bool {
    KEY_ALIASES.contains(&key_id)
}

/// Resolves an alias to `default`; any other id is returned verbatim.
pub fn resolve_key_id<'a>(key_id: &'a str, default: &'a str) -> &'a str {
    if is_alias(key_id) { default } else { key_id }
}

/// A small value encrypted directly by the backend.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Wrapped {
    /// The backend's ciphertext (opaque to lango).
    pub ciphertext: Vec<u8>,
    /// The key version that produced it, when the service reports one (Azure `kid` version,
    /// GCP `cryptoKeyVersions/N`); passed back to [`KmsBackend::unwrap`].
    pub key_version: Option<String>,
}

/// What a key is for, as the service reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum KeyUsage {
    /// Asymmetric signing.
    Sign,
    /// Encryption (symmetric or asymmetric).
    Encrypt,
}

/// A key as the backend lists it (`kms keys --remote`).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct RemoteKeyInfo {
    /// The id to pass to the backend (ARN, resource name, key name, label).
    pub key_id: String,
    /// Human-friendly names (AWS aliases, PKCS#11 label), if any.
    pub aliases: Vec<String>,
    /// The key's usage, if reported.
    pub usage: Option<KeyUsage>,
    /// The service's algorithm name (`ECC_NIST_P256`, `EC_SIGN_P256_SHA256`, ...), if reported.
    pub algorithm: Option<String>,
    /// Whether the key is enabled, if reported.
    pub enabled: Option<bool>,
}

impl RemoteKeyInfo {
    /// A key known only by its id.
    pub fn new(key_id: impl Into<String>) -> Self {
        Self {
            key_id: key_id.into(),
            aliases: Vec::new(),
            usage: None,
            algorithm: None,
            enabled: None,
        }
    }
}

/// One cloud KMS or HSM, reduced to the calls lango needs.
///
/// Contract for implementations:
/// - make **exactly one attempt** per call, with SDK-level retries disabled: retries and the
///   per-attempt deadline belong to [`crate::RetryPolicy`], applied by [`crate::KmsProvider`];
/// - classify every failure into a [`KmsError`] with the short provider name, the operation
///   (`sign`, `encrypt`, `decrypt`, `public-key`, `list-keys`) and the key id received;
/// - never put key material, plaintext, ciphertext or PINs into an error or a log line;
/// - receive already-resolved key ids from [`crate::KmsProvider`] (resolving again with
///   [`KmsBackend::resolve_key_id`] is harmless).
#[async_trait]
pub trait KmsBackend: Send + Sync {
    /// Which backend this is.
    fn name(&self) -> KmsProviderName;

    /// The default key for signing aliases (`security.kms.signingKeyId`, else `keyId`).
    fn signing_key_id(&self) -> &str;

    /// The default key for encryption aliases (`security.kms.encryptionKeyId`, else `keyId`).
    fn encryption_key_id(&self) -> &str;

    /// Resolves `key_id` for `role`: aliases become the role's default key, anything else is
    /// returned verbatim.
    fn resolve_key_id<'a>(&'a self, role: KeyRole, key_id: &'a str) -> &'a str {
        let default = match role {
            KeyRole::Signing => self.signing_key_id(),
            KeyRole::Encryption => self.encryption_key_id(),
        };
        resolve_key_id(key_id, default)
    }

    /// Signs SHA-256(`payload`) with `key_id`. The backend hashes (or has the service hash)
    /// the payload exactly once and reports the encoding it returns in
    /// [`Signature::algorithm`]; it never normalises or verifies.
    async fn sign(&self, key_id: &str, payload: &[u8]) -> Result<Signature, KmsError>;

    /// The public key of `key_id`: a SEC1 point for EC keys (converted from SPKI or JWK by the
    /// backend), SPKI DER for RSA.
    async fn public_key(&self, key_id: &str) -> Result<PublicKeyInfo, KmsError>;

    /// Encrypts a small value (a 32-byte data key) under `key_id`, binding `context` with the
    /// service's native mechanism where it has one (AWS encryption context, GCP additional
    /// authenticated data, PKCS#11 GCM AAD). Azure RSA-OAEP has none; there the data key's
    /// AES-GCM tag over the same bytes provides the binding.
    async fn wrap(
        &self,
        key_id: &str,
        plaintext: &[u8],
        context: &[u8],
    ) -> Result<Wrapped, KmsError>;

    /// Reverses [`KmsBackend::wrap`]. `key_version` is what `wrap` reported.
    async fn unwrap(
        &self,
        key_id: &str,
        ciphertext: &[u8],
        key_version: Option<&str>,
        context: &[u8],
    ) -> Result<SecretBytes, KmsError>;

    /// Lists the keys the backend can see.
    async fn list_keys(&self) -> Result<Vec<RemoteKeyInfo>, KmsError>;

    /// Releases sessions and connections (PKCS#11: logout, close, finalize). Called once on
    /// shutdown; later calls may fail.
    async fn close(&self);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for n in KmsProviderName::ALL {
            assert_eq!(n.as_str().parse::<KmsProviderName>().ok(), Some(n));
            assert_eq!(n.to_string(), n.as_str());
            assert_eq!(KmsProviderName::from_short_name(n.short_name()), Some(n));
            assert_eq!(KmsProviderName::from_tag(n.tag()), Some(n));
        }
        let names: Vec<_> = KmsProviderName::ALL.iter().map(|n| n.as_str()).collect();
        assert_eq!(names, ["aws-kms", "gcp-kms", "azure-kv", "pkcs11"]);
        let short: Vec<_> = KmsProviderName::ALL
            .iter()
            .map(|n| n.short_name())
            .collect();
        assert_eq!(short, ["aws", "gcp", "azure", "pkcs11"]);
        assert_eq!(KmsProviderName::from_tag(ProviderTag::LocalMk), None);
    }

    #[test]
    fn parsing_is_exact() {
        for bad in ["AWS-KMS", "aws", "kms-aws", " pkcs11", "local", ""] {
            let e = bad.parse::<KmsProviderName>();
            assert!(
                matches!(e, Err(Error::UnknownProvider(ref s)) if s == bad),
                "{bad}"
            );
        }
    }

    #[test]
    fn tags_and_features() {
        assert_eq!(KmsProviderName::AwsKms.tag() as u8, 0x02);
        assert_eq!(KmsProviderName::GcpKms.tag() as u8, 0x03);
        assert_eq!(KmsProviderName::AzureKv.tag() as u8, 0x04);
        assert_eq!(KmsProviderName::Pkcs11.tag() as u8, 0x05);
        assert_eq!(
            KmsProviderName::AzureKv.not_compiled().to_string(),
            "Azure Key Vault support not compiled: rebuild with --features kms-azure"
        );
    }

    #[test]
    fn aliases_resolve_to_the_default_and_the_rest_pass_through() {
        for alias in ["", "local", "default"] {
            assert!(is_alias(alias));
            assert_eq!(resolve_key_id(alias, "alias/main"), "alias/main");
        }
        for verbatim in [
            "arn:aws:kms:eu-west-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab",
            "alias/x",
            "projects/p/locations/l/keyRings/r/cryptoKeys/k",
            "my-azure-key",
            "hsm-label",
            "Default",
            "LOCAL",
        ] {
            assert!(!is_alias(verbatim));
            assert_eq!(resolve_key_id(verbatim, "alias/main"), verbatim);
        }
    }
}
