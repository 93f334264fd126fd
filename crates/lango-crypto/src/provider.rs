//! The `CryptoProvider` seam and the local provider.
//!
//! A provider owns keys and performs sign / encrypt / decrypt with them. The local provider
//! works from keys derived from the master key; KMS and HSM backends (crate `lango-kms`, each
//! behind a cargo feature) implement the same trait.
//!
//! Contract every implementation upholds:
//! - `encrypt` returns a complete v1 blob (see [`crate::aead`]) whose header names the
//!   provider, and binds the [`AeadContext`] (purpose and row) as associated data — natively
//!   (KMS encryption context, GCM AAD) or by wrapping a fresh data key locally;
//! - `decrypt` checks the same binding and returns the plaintext in a wiped-on-drop buffer;
//! - every [`Signature`] names its algorithm, so callers never guess the format;
//! - errors are classified ([`ProviderErrorKind`]), transient or not, and never contain key
//!   material, plaintext or ciphertext.

use std::fmt;

use async_trait::async_trait;

use crate::{
    SecretBytes, SecretKey32,
    aead::{self, BlobPurpose, ProviderTag},
    hierarchy::{KeyPurpose, MasterKey},
    mac,
};

/// What a provider is asked to do (for error reports).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operation {
    /// `sign`
    Sign,
    /// `public_key`
    PublicKey,
    /// `encrypt`
    Encrypt,
    /// `decrypt`
    Decrypt,
    /// `health`
    Health,
}

impl fmt::Display for Operation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Sign => "sign",
            Self::PublicKey => "public-key",
            Self::Encrypt => "encrypt",
            Self::Decrypt => "decrypt",
            Self::Health => "health",
        })
    }
}

/// Classification of a provider failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ProviderErrorKind {
    /// The service cannot be reached (transient).
    Unavailable,
    /// The service is rate limiting (transient).
    Throttled,
    /// The caller is not allowed to use the key.
    AccessDenied,
    /// The key exists but is disabled.
    KeyDisabled,
    /// The key id does not name a usable key, or the key has the wrong type.
    InvalidKey,
    /// The ciphertext did not authenticate (tampered, moved, or wrong key).
    DecryptionFailed,
    /// The backend is not compiled into this build.
    NotCompiled,
    /// The provider cannot perform this operation (e.g. `public_key` of a symmetric key).
    Unsupported,
    /// The input is malformed or out of bounds.
    InvalidInput,
    /// Anything else.
    Other,
}

impl ProviderErrorKind {
    /// Whether a retry may succeed.
    pub fn is_transient(self) -> bool {
        matches!(self, Self::Unavailable | Self::Throttled)
    }

    fn text(self) -> &'static str {
        match self {
            Self::Unavailable => "service unavailable",
            Self::Throttled => "request throttled",
            Self::AccessDenied => "access denied",
            Self::KeyDisabled => "key is disabled",
            Self::InvalidKey => "invalid key",
            Self::DecryptionFailed => "decryption failed",
            Self::NotCompiled => "support not compiled",
            Self::Unsupported => "operation not supported",
            Self::InvalidInput => "invalid input",
            Self::Other => "provider error",
        }
    }
}

/// A classified provider failure. `Display`: `<provider> <op> (key=<key_id>): <kind>: <detail>`.
#[derive(Debug, thiserror::Error)]
#[error("{provider} {op} (key={key_id}): {}{}", kind.text(), if detail.is_empty() { String::new() } else { format!(": {detail}") })]
pub struct ProviderError {
    /// Which provider failed (`local`, `aws-kms`, ...).
    pub provider: String,
    /// What it was asked to do.
    pub op: Operation,
    /// The resolved key id.
    pub key_id: String,
    /// The classification.
    pub kind: ProviderErrorKind,
    /// A human-readable detail (never secret).
    pub detail: String,
    /// The underlying error, if any.
    #[source]
    pub source: Option<Box<dyn std::error::Error + Send + Sync>>,
}

impl ProviderError {
    /// A new error without a source.
    pub fn new(
        provider: &str,
        op: Operation,
        key_id: &str,
        kind: ProviderErrorKind,
        detail: impl Into<String>,
    ) -> Self {
        Self {
            provider: provider.to_owned(),
            op,
            key_id: key_id.to_owned(),
            kind,
            detail: detail.into(),
            source: None,
        }
    }

    /// Whether a retry may succeed.
    pub fn is_transient(&self) -> bool {
        self.kind.is_transient()
    }
}

/// The algorithm of a [`Signature`], with a stable identifier.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum SignatureAlgorithm {
    /// HMAC-SHA256, 32 bytes.
    HmacSha256,
    /// secp256k1 over Keccak-256, 65 bytes `r‖s‖v`, low-S.
    EcdsaSecp256k1Keccak256Recoverable,
    /// secp256k1 ECDSA over SHA-256, DER.
    EcdsaSecp256k1Sha256Der,
    /// P-256 ECDSA over SHA-256, DER.
    EcdsaP256Sha256Der,
    /// P-256 ECDSA over SHA-256, raw `r‖s`.
    EcdsaP256Sha256Raw,
    /// Ed25519, 64 bytes.
    Ed25519,
}

impl SignatureAlgorithm {
    /// The stable identifier reported next to every signature.
    pub const fn id(self) -> &'static str {
        match self {
            Self::HmacSha256 => "hmac-sha256",
            Self::EcdsaSecp256k1Keccak256Recoverable => "ecdsa-secp256k1-keccak256-recoverable",
            Self::EcdsaSecp256k1Sha256Der => "ecdsa-secp256k1-sha256-der",
            Self::EcdsaP256Sha256Der => "ecdsa-p256-sha256-der",
            Self::EcdsaP256Sha256Raw => "ecdsa-p256-sha256-raw",
            Self::Ed25519 => "ed25519",
        }
    }
}

/// A signature together with the algorithm that produced it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Signature {
    /// The algorithm.
    pub algorithm: SignatureAlgorithm,
    /// The signature bytes, in the algorithm's encoding.
    pub bytes: Vec<u8>,
}

/// The type of a public key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum KeyAlgorithm {
    /// secp256k1.
    Secp256k1,
    /// NIST P-256.
    P256,
    /// RSA.
    Rsa,
    /// Ed25519.
    Ed25519,
}

/// A public key as a provider reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublicKeyInfo {
    /// The key type.
    pub algorithm: KeyAlgorithm,
    /// SEC1 point for EC keys, raw 32 bytes for Ed25519, SPKI DER for RSA.
    pub bytes: Vec<u8>,
}

/// What a ciphertext is bound to.
#[derive(Debug, Clone, Copy)]
pub struct AeadContext<'a> {
    /// The purpose (part of the associated data).
    pub purpose: BlobPurpose,
    /// The row or caller context (part of the associated data).
    pub context: &'a [u8],
    /// The largest blob `decrypt` accepts for this purpose.
    pub max_blob_len: usize,
}

/// Result of a health probe.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Health {
    /// The provider works.
    Healthy,
    /// The provider does not work; the reason is safe to show.
    Unhealthy(String),
}

/// The seam every key holder implements: the local master key, cloud KMS, HSMs.
#[async_trait]
pub trait CryptoProvider: Send + Sync {
    /// The provider's name (`local`, `aws-kms`, `gcp-kms`, `azure-kv`, `pkcs11`).
    fn id(&self) -> &str;

    /// The tag written into the header of the blobs this provider encrypts.
    fn tag(&self) -> ProviderTag;

    /// Signs `payload` with the key `key_id`.
    async fn sign(&self, key_id: &str, payload: &[u8]) -> Result<Signature, ProviderError>;

    /// The public key of `key_id`.
    async fn public_key(&self, key_id: &str) -> Result<PublicKeyInfo, ProviderError>;

    /// Encrypts `plaintext` bound to `aad`; returns a complete v1 blob.
    async fn encrypt(
        &self,
        key_id: &str,
        plaintext: &[u8],
        aad: AeadContext<'_>,
    ) -> Result<Vec<u8>, ProviderError>;

    /// Decrypts a v1 blob produced by [`CryptoProvider::encrypt`] for the same `aad`.
    async fn decrypt(
        &self,
        key_id: &str,
        blob: &[u8],
        aad: AeadContext<'_>,
    ) -> Result<SecretBytes, ProviderError>;

    /// Probes whether the provider works.
    async fn health(&self) -> Health;
}

/// Key ids the local provider answers to.
pub const LOCAL_KEY_IDS: [&str; 3] = ["", "local", "default"];

/// The provider backed by the local master key. Encryption uses the HKDF purpose keys
/// (`secrets`, `config-profiles`, `tool-encrypt`) under the envelope's key generation; signing
/// is HMAC-SHA256 under the `tool-sign` key (a MAC, reported as such — never passed off as an
/// ECDSA signature).
///
/// Unlike the Go provider, an unknown key id is an error rather than silently the local key.
pub struct LocalCryptoProvider {
    generation: u32,
    secrets: SecretKey32,
    config_profiles: SecretKey32,
    tool_encrypt: SecretKey32,
    tool_sign: SecretKey32,
}

impl LocalCryptoProvider {
    /// Derives the working keys from `mk`. `generation` is the envelope's key generation,
    /// written into and checked against every blob header.
    pub fn new(mk: &MasterKey, generation: u32) -> Self {
        Self {
            generation,
            secrets: mk.derive(KeyPurpose::Secrets),
            config_profiles: mk.derive(KeyPurpose::ConfigProfiles),
            tool_encrypt: mk.derive(KeyPurpose::ToolEncrypt),
            tool_sign: mk.derive(KeyPurpose::ToolSign),
        }
    }

    /// The key generation this provider writes.
    pub fn generation(&self) -> u32 {
        self.generation
    }

    fn key(&self, purpose: BlobPurpose) -> &SecretKey32 {
        match purpose {
            BlobPurpose::Secrets => &self.secrets,
            BlobPurpose::ConfigProfiles => &self.config_profiles,
            BlobPurpose::ToolEncrypt => &self.tool_encrypt,
        }
    }

    fn check_key_id(&self, op: Operation, key_id: &str) -> Result<(), ProviderError> {
        if LOCAL_KEY_IDS.contains(&key_id) {
            Ok(())
        } else {
            Err(ProviderError::new(
                "local",
                op,
                key_id,
                ProviderErrorKind::InvalidKey,
                "the local provider has only the key \"local\"",
            ))
        }
    }

    fn err(op: Operation, key_id: &str, e: crate::Error) -> ProviderError {
        let kind = match e {
            crate::Error::Integrity => ProviderErrorKind::DecryptionFailed,
            crate::Error::TooLarge { .. }
            | crate::Error::TooShort { .. }
            | crate::Error::UnsupportedFormat(_)
            | crate::Error::UnknownProvider(_)
            | crate::Error::UnknownGeneration(_) => ProviderErrorKind::InvalidInput,
            _ => ProviderErrorKind::Other,
        };
        let mut pe = ProviderError::new("local", op, key_id, kind, e.to_string());
        pe.source = Some(Box::new(e));
        pe
    }

    /// Synchronous encrypt (the work is microseconds; no need for a runtime).
    pub fn encrypt_sync(&self, plaintext: &[u8], aad: AeadContext<'_>) -> crate::Result<Vec<u8>> {
        aead::seal_v1(
            self.key(aad.purpose),
            ProviderTag::LocalMk,
            self.generation,
            aad.purpose,
            aad.context,
            plaintext,
        )
    }

    /// Synchronous decrypt.
    pub fn decrypt_sync(&self, blob: &[u8], aad: AeadContext<'_>) -> crate::Result<SecretBytes> {
        let key = self.key(aad.purpose);
        let generation = self.generation;
        aead::open_v1(blob, aad.purpose, aad.context, aad.max_blob_len, |g| {
            (g == generation).then_some(key)
        })
    }

    /// Synchronous HMAC-SHA256 under the `tool-sign` key.
    pub fn sign_sync(&self, payload: &[u8]) -> Signature {
        Signature {
            algorithm: SignatureAlgorithm::HmacSha256,
            bytes: mac::hmac_sha256(self.tool_sign.expose(), payload).to_vec(),
        }
    }
}

impl fmt::Debug for LocalCryptoProvider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LocalCryptoProvider")
            .field("generation", &self.generation)
            .field("keys", &"[redacted]")
            .finish()
    }
}

#[async_trait]
impl CryptoProvider for LocalCryptoProvider {
    fn id(&self) -> &str {
        "local"
    }

    fn tag(&self) -> ProviderTag {
        ProviderTag::LocalMk
    }

    async fn sign(&self, key_id: &str, payload: &[u8]) -> Result<Signature, ProviderError> {
        self.check_key_id(Operation::Sign, key_id)?;
        Ok(self.sign_sync(payload))
    }

    async fn public_key(&self, key_id: &str) -> Result<PublicKeyInfo, ProviderError> {
        self.check_key_id(Operation::PublicKey, key_id)?;
        Err(ProviderError::new(
            "local",
            Operation::PublicKey,
            key_id,
            ProviderErrorKind::Unsupported,
            "the local key is symmetric (HMAC-SHA256) and has no public key",
        ))
    }

    async fn encrypt(
        &self,
        key_id: &str,
        plaintext: &[u8],
        aad: AeadContext<'_>,
    ) -> Result<Vec<u8>, ProviderError> {
        self.check_key_id(Operation::Encrypt, key_id)?;
        self.encrypt_sync(plaintext, aad)
            .map_err(|e| Self::err(Operation::Encrypt, key_id, e))
    }

    async fn decrypt(
        &self,
        key_id: &str,
        blob: &[u8],
        aad: AeadContext<'_>,
    ) -> Result<SecretBytes, ProviderError> {
        self.check_key_id(Operation::Decrypt, key_id)?;
        self.decrypt_sync(blob, aad)
            .map_err(|e| Self::err(Operation::Decrypt, key_id, e))
    }

    async fn health(&self) -> Health {
        Health::Healthy
    }
}
