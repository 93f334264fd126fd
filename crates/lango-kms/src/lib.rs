//! # lango-kms
//!
//! Cloud KMS and HSM signers behind cargo features: AWS KMS (`kms-aws`), GCP Cloud KMS
//! (`kms-gcp`), Azure Key Vault (`kms-azure`) and PKCS#11 (`kms-pkcs11`); `kms-all` enables
//! all four. The default build contains none of them, and [`new_kms_provider`] then answers
//! every backend name with [`Error::NotCompiled`].
//!
//! ## Design
//!
//! The crate splits a KMS-backed provider into layers, so that everything but the remote
//! calls is written, and tested, once:
//!
//! ```text
//!   CompositeProvider          fallback policy, fail closed, bounded concurrency   (composite)
//!     ├── HealthChecker        cached, single-flight, purpose-aware probe          (health)
//!     ├── KmsProvider          envelope encryption, low-S + self-verification,     (envelope)
//!     │     │                  RetryPolicy around every call                       (retry)
//!     │     └── dyn KmsBackend one remote call per method, errors classified       (backend, error)
//!     └── LocalCryptoProvider  the fallback (lango-crypto)
//! ```
//!
//! - [`KmsBackend`] is the raw seam each cloud or HSM implements: sign SHA-256 of a payload,
//!   fetch a public key, wrap/unwrap a small value under the service's own binding, list keys,
//!   close. Backends never retry, never post-process, and classify every failure into a
//!   [`KmsError`] whose [`KmsErrorKind`] alone decides whether a retry may help.
//! - [`KmsProvider`] turns any backend into a `lango_crypto::CryptoProvider`: a fresh data key
//!   per value, wrapped by the KMS and bound to the purpose and row through the v1 associated
//!   data; ECDSA outputs normalised to low-S and verified against the cached public key; each
//!   call retried with capped, jittered backoff and its own deadline.
//! - [`CompositeProvider`] adds the local fallback the Go node had, but fails closed: it falls
//!   back only when the KMS is unreachable or failed transiently, never for signatures, and
//!   never when the KMS refused (denied, disabled, invalid key, failed decryption), whether
//!   the refusal came from the call or from the [`HealthChecker`]'s probe
//!   ([`Connection::Refused`]). Decryption of a v1 blob always goes to the provider that wrote
//!   it.
//! - [`KmsConfig`] holds `security.kms`, its defaults and its validation messages.
//!
//! ## What it must never do
//!
//! Fall back silently to a local key, pass off an HMAC as an ECDSA signature, log key material,
//! or retry a non-transient error.
//!
//! ## Place in the layers
//!
//! Above `lango-crypto` (its only lango dependency); composed by the app, behind its features.
#![forbid(unsafe_code)]

#[cfg(feature = "kms-aws")]
pub mod aws;
#[cfg(feature = "kms-azure")]
pub mod azure;
pub mod backend;
pub mod composite;
pub mod config;
pub mod envelope;
pub mod error;
#[cfg(feature = "kms-gcp")]
pub mod gcp;
pub mod health;
#[cfg(feature = "kms-pkcs11")]
pub mod pkcs11;
#[cfg(any(feature = "kms-gcp", feature = "kms-azure"))]
pub mod rest;
pub mod retry;

use std::sync::Arc;

pub use backend::{KeyRole, KmsBackend, KmsProviderName, RemoteKeyInfo, Wrapped};
pub use composite::{CompositeProvider, FallbackMode};
pub use config::KmsConfig;
pub use envelope::KmsProvider;
pub use error::{KmsError, KmsErrorKind};
pub use health::{Connection, ConnectionChecker, HealthChecker, ProbeFailure};
pub use retry::{Jitter, JitterRng, RetryPolicy};

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
    /// The configuration cannot build the backend, e.g. `new AWS KMS provider: KMS invalid key`
    /// (empty key id) or a missing vault URL or module path; `message` is the full text.
    #[error("{message}")]
    InvalidConfig {
        /// The classification (`InvalidKey` for a missing key id, else `Other`).
        kind: KmsErrorKind,
        /// The user-visible text.
        message: String,
    },
    /// Initialising the backend failed (loading the PKCS#11 module, opening a session).
    #[error(transparent)]
    Init(#[from] KmsError),
}

impl Error {
    /// The KMS classification of this error.
    pub fn kind(&self) -> KmsErrorKind {
        match self {
            Self::NotCompiled { .. } => KmsErrorKind::NotCompiled,
            Self::UnknownProvider(_) => KmsErrorKind::Other,
            Self::InvalidConfig { kind, .. } => *kind,
            Self::Init(e) => e.kind,
        }
    }
}

/// Builds the backend `name` (`aws-kms`, `gcp-kms`, `azure-kv`, `pkcs11`) from `cfg`.
///
/// Wrap the result in [`KmsProvider`] (with [`KmsConfig::retry_policy`]) to use it as a
/// `CryptoProvider`.
/// Construction may contact the backend (loading cloud credentials, opening and logging in to
/// a PKCS#11 session), hence `async`.
pub async fn new_kms_provider(name: &str, cfg: &KmsConfig) -> Result<Arc<dyn KmsBackend>, Error> {
    match name.parse::<KmsProviderName>()? {
        KmsProviderName::AwsKms => aws(cfg).await,
        KmsProviderName::GcpKms => gcp(cfg).await,
        KmsProviderName::AzureKv => azure(cfg).await,
        KmsProviderName::Pkcs11 => pkcs11(cfg).await,
    }
}

/// Whether `name`'s backend is compiled into this build.
pub const fn is_compiled(name: KmsProviderName) -> bool {
    match name {
        KmsProviderName::AwsKms => cfg!(feature = "kms-aws"),
        KmsProviderName::GcpKms => cfg!(feature = "kms-gcp"),
        KmsProviderName::AzureKv => cfg!(feature = "kms-azure"),
        KmsProviderName::Pkcs11 => cfg!(feature = "kms-pkcs11"),
    }
}

/// The backends compiled into this build.
pub fn compiled_backends() -> Vec<KmsProviderName> {
    KmsProviderName::ALL
        .into_iter()
        .filter(|n| is_compiled(*n))
        .collect()
}

// One constructor per backend. With its feature on, each calls the backend module's `new`
// (declared together with the feature); with it off, it reports `NotCompiled`.

#[cfg(feature = "kms-aws")]
async fn aws(cfg: &KmsConfig) -> Result<Arc<dyn KmsBackend>, Error> {
    crate::aws::AwsKms::new(cfg)
        .await
        .map(|b| Arc::new(b) as Arc<dyn KmsBackend>)
}

#[cfg(not(feature = "kms-aws"))]
async fn aws(_: &KmsConfig) -> Result<Arc<dyn KmsBackend>, Error> {
    Err(KmsProviderName::AwsKms.not_compiled())
}

#[cfg(feature = "kms-gcp")]
async fn gcp(cfg: &KmsConfig) -> Result<Arc<dyn KmsBackend>, Error> {
    crate::gcp::GcpKms::new(cfg)
        .await
        .map(|b| Arc::new(b) as Arc<dyn KmsBackend>)
}

#[cfg(not(feature = "kms-gcp"))]
async fn gcp(_: &KmsConfig) -> Result<Arc<dyn KmsBackend>, Error> {
    Err(KmsProviderName::GcpKms.not_compiled())
}

#[cfg(feature = "kms-azure")]
async fn azure(cfg: &KmsConfig) -> Result<Arc<dyn KmsBackend>, Error> {
    crate::azure::AzureKv::new(cfg)
        .await
        .map(|b| Arc::new(b) as Arc<dyn KmsBackend>)
}

#[cfg(not(feature = "kms-azure"))]
async fn azure(_: &KmsConfig) -> Result<Arc<dyn KmsBackend>, Error> {
    Err(KmsProviderName::AzureKv.not_compiled())
}

#[cfg(feature = "kms-pkcs11")]
async fn pkcs11(cfg: &KmsConfig) -> Result<Arc<dyn KmsBackend>, Error> {
    crate::pkcs11::Pkcs11::new(cfg)
        .await
        .map(|b| Arc::new(b) as Arc<dyn KmsBackend>)
}

#[cfg(not(feature = "kms-pkcs11"))]
async fn pkcs11(_: &KmsConfig) -> Result<Arc<dyn KmsBackend>, Error> {
    Err(KmsProviderName::Pkcs11.not_compiled())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn unknown_provider_has_the_exact_message() {
        for bad in ["vault", "AWS-KMS", "", "local"] {
            let Err(e) = new_kms_provider(bad, &KmsConfig::default()).await else {
                panic!("{bad} accepted");
            };
            assert!(matches!(e, Error::UnknownProvider(ref s) if s == bad));
            assert_eq!(
                e.to_string(),
                format!(
                    "unknown KMS provider: \"{bad}\" (supported: aws-kms, gcp-kms, azure-kv, pkcs11)"
                )
            );
        }
    }

    #[test]
    fn construction_errors_keep_their_text_and_kind() {
        let e = Error::InvalidConfig {
            kind: KmsErrorKind::InvalidKey,
            message: "new AWS KMS provider: KMS invalid key".into(),
        };
        assert_eq!(e.to_string(), "new AWS KMS provider: KMS invalid key");
        assert_eq!(e.kind(), KmsErrorKind::InvalidKey);
        let e: Error = KmsError::new(
            "pkcs11",
            "init",
            "",
            KmsErrorKind::Pkcs11Module,
            "no such file",
        )
        .into();
        assert_eq!(
            e.to_string(),
            "kms pkcs11 init (key=): PKCS#11 module error: no such file"
        );
        assert_eq!(e.kind(), KmsErrorKind::Pkcs11Module);
        assert_eq!(
            Error::UnknownProvider("x".into()).kind(),
            KmsErrorKind::Other
        );
    }

    #[cfg(not(any(
        feature = "kms-aws",
        feature = "kms-gcp",
        feature = "kms-azure",
        feature = "kms-pkcs11"
    )))]
    #[tokio::test]
    async fn every_backend_is_not_compiled_in_the_default_build() {
        let expected = [
            (
                "aws-kms",
                "AWS KMS support not compiled: rebuild with --features kms-aws",
            ),
            (
                "gcp-kms",
                "GCP KMS support not compiled: rebuild with --features kms-gcp",
            ),
            (
                "azure-kv",
                "Azure Key Vault support not compiled: rebuild with --features kms-azure",
            ),
            (
                "pkcs11",
                "PKCS#11 support not compiled: rebuild with --features kms-pkcs11",
            ),
        ];
        for (name, message) in expected {
            let Err(e) = new_kms_provider(name, &KmsConfig::default()).await else {
                panic!("{name} built without its feature");
            };
            let n: KmsProviderName = name.parse().unwrap();
            assert!(
                matches!(e, Error::NotCompiled { feature, .. } if feature == n.feature()),
                "{name}"
            );
            assert_eq!(e.to_string(), message);
            assert_eq!(e.kind(), KmsErrorKind::NotCompiled);
            assert!(!is_compiled(n));
        }
        assert!(compiled_backends().is_empty());
    }
}
