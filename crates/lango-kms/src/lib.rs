//! # lango-kms
//!
//! Cloud KMS and HSM signers behind cargo features: AWS KMS (`kms-aws`), GCP Cloud KMS
//! (`kms-gcp`), Azure Key Vault (`kms-azure`) and PKCS#11 (`kms-pkcs11`); `kms-all` enables
//! all four. The default build contains none of them.
//!
//! ## What it owns
//! Implementations of `lango_crypto::CryptoProvider` for those backends, the error
//! classification (transient or not), retry with capped, jittered exponential backoff, the
//! health checker and the composite provider whose fallback is explicit and fails closed.
//!
//! ## What it must never do
//! Fall back silently to a local key, pass off an HMAC as an ECDSA signature, log key material,
//! or retry a non-transient error.
//!
//! ## Place in the layers
//! Above `lango-crypto`; composed by the app, behind its features.
#![forbid(unsafe_code)]

/// Errors raised before a backend exists (configuration, feature selection).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The requested backend is not compiled into this build.
    #[error("{backend} support not compiled: rebuild with --features {feature}")]
    NotCompiled {
        /// The backend's display name.
        backend: &'static str,
        /// The cargo feature that enables it.
        feature: &'static str,
    },
    /// The provider name is not one of the four backends.
    #[error("unknown KMS provider: {0:?} (supported: aws-kms, gcp-kms, azure-kv, pkcs11)")]
    UnknownProvider(String),
}
