//! The KMS error taxonomy (spec §2.8).
//!
//! Every backend classifies each failure into a [`KmsErrorKind`] and reports it as a
//! [`KmsError`] naming the provider (short name: `aws`, `gcp`, `azure`, `pkcs11`), the
//! operation and the *resolved* key id. The rendering keeps the Go wording, which users see:
//!
//! ```text
//! kms <provider> <op> (key=<key_id>): <sentinel text>: <message>
//! ```
//!
//! Only [`KmsErrorKind::Unavailable`] and [`KmsErrorKind::Throttled`] are transient; the retry
//! policy and the composite provider's fallback decision rely on nothing else.
//!
//! Messages are written by backends from service error codes and descriptions. They must never
//! contain key material, plaintext, ciphertext or PINs; this crate's own messages never do.

use std::{borrow::Cow, error::Error as StdError, fmt};

use lango_crypto::provider::{Operation, ProviderError, ProviderErrorKind};

use crate::backend::KmsProviderName;

/// Classification of a KMS or HSM failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum KmsErrorKind {
    /// The service cannot be reached or failed internally (transient).
    Unavailable,
    /// The service is rate limiting (transient).
    Throttled,
    /// The credentials may not use the key.
    AccessDenied,
    /// The key exists but is disabled (or pending deletion).
    KeyDisabled,
    /// The key id names no usable key, or a key of the wrong type or usage.
    InvalidKey,
    /// The PKCS#11 module could not be loaded or initialised.
    Pkcs11Module,
    /// A PKCS#11 session could not be opened or logged in.
    Pkcs11Session,
    /// The ciphertext did not authenticate (tampered, moved, or wrong key).
    DecryptionFailed,
    /// The backend is not compiled into this build.
    NotCompiled,
    /// The caller cancelled the operation while it was being retried.
    Cancelled,
    /// An unclassified failure; the message is the backend's own.
    Other,
}

impl KmsErrorKind {
    /// The Go sentinel text of this kind, or `None` for [`KmsErrorKind::Other`].
    pub const fn sentinel(self) -> Option<&'static str> {
        Some(match self {
            Self::Unavailable => "KMS service unavailable",
            Self::Throttled => "KMS request throttled",
            Self::AccessDenied => "KMS access denied",
            Self::KeyDisabled => "KMS key is disabled",
            Self::InvalidKey => "KMS invalid key",
            Self::Pkcs11Module => "PKCS#11 module error",
            Self::Pkcs11Session => "PKCS#11 session error",
            Self::DecryptionFailed => "decryption failed",
            Self::NotCompiled => "support not compiled",
            Self::Cancelled => "operation cancelled",
            Self::Other => return None,
        })
    }

    /// Whether a retry may succeed: true exactly for `Unavailable` and `Throttled`.
    pub const fn is_transient(self) -> bool {
        matches!(self, Self::Unavailable | Self::Throttled)
    }

    /// The provider-neutral kind this maps to at the `CryptoProvider` seam. PKCS#11 module and
    /// session failures and cancellations have no counterpart there and become `Other`; the
    /// original kind stays reachable through the error's source.
    pub const fn to_provider_kind(self) -> ProviderErrorKind {
        match self {
            Self::Unavailable => ProviderErrorKind::Unavailable,
            Self::Throttled => ProviderErrorKind::Throttled,
            Self::AccessDenied => ProviderErrorKind::AccessDenied,
            Self::KeyDisabled => ProviderErrorKind::KeyDisabled,
            Self::InvalidKey => ProviderErrorKind::InvalidKey,
            Self::DecryptionFailed => ProviderErrorKind::DecryptionFailed,
            Self::NotCompiled => ProviderErrorKind::NotCompiled,
            Self::Pkcs11Module | Self::Pkcs11Session | Self::Cancelled | Self::Other => {
                ProviderErrorKind::Other
            }
        }
    }
}

/// A classified failure of one KMS operation.
///
/// `Display`: `kms <provider> <op> (key=<key_id>): <sentinel text>: <message>`; for
/// [`KmsErrorKind::Other`] the part after the colon is the message alone, and an empty message
/// leaves only the sentinel text.
pub struct KmsError {
    /// The backend's short name: `aws`, `gcp`, `azure` or `pkcs11`.
    pub provider: &'static str,
    /// The operation: `sign`, `encrypt`, `decrypt`, `public-key`, `list-keys`, `init`, ...
    pub op: Cow<'static, str>,
    /// The resolved key id (never an alias).
    pub key_id: String,
    /// The classification.
    pub kind: KmsErrorKind,
    /// The backend's description of the failure (never secret).
    pub message: String,
    /// The underlying error, if any.
    pub source: Option<Box<dyn StdError + Send + Sync>>,
}

impl KmsError {
    /// A new error without a source.
    pub fn new(
        provider: &'static str,
        op: impl Into<Cow<'static, str>>,
        key_id: impl Into<String>,
        kind: KmsErrorKind,
        message: impl Into<String>,
    ) -> Self {
        Self {
            provider,
            op: op.into(),
            key_id: key_id.into(),
            kind,
            message: message.into(),
            source: None,
        }
    }

    /// Attaches the underlying error.
    #[must_use]
    pub fn with_source(mut self, source: impl Into<Box<dyn StdError + Send + Sync>>) -> Self {
        self.source = Some(source.into());
        self
    }

    /// Whether a retry may succeed (see [`KmsErrorKind::is_transient`]).
    pub fn is_transient(&self) -> bool {
        self.kind.is_transient()
    }

    /// Converts into the seam's error for a known operation (more precise than the `From`
    /// conversion, which infers the operation from [`KmsError::op`]).
    pub fn into_provider_error(self, op: Operation) -> ProviderError {
        let provider = KmsProviderName::from_short_name(self.provider)
            .map_or_else(|| self.provider.to_owned(), |n| n.as_str().to_owned());
        let kind = self.kind.to_provider_kind();
        let mut detail = match self.kind {
            // These kinds lose their identity at the seam; keep their text in the detail.
            KmsErrorKind::Pkcs11Module | KmsErrorKind::Pkcs11Session | KmsErrorKind::Cancelled => {
                match (self.kind.sentinel(), self.message.is_empty()) {
                    (Some(s), true) => s.to_owned(),
                    (Some(s), false) => format!("{s}: {}", self.message),
                    (None, _) => self.message.clone(),
                }
            }
            _ => self.message.clone(),
        };
        if op_of(&self.op) != Some(op) {
            detail = format!("during {}: {detail}", self.op);
        }
        let key_id = self.key_id.clone();
        let mut pe = ProviderError::new(&provider, op, &key_id, kind, detail);
        pe.source = Some(Box::new(self));
        pe
    }
}

fn op_of(op: &str) -> Option<Operation> {
    Some(match op {
        "sign" => Operation::Sign,
        "encrypt" => Operation::Encrypt,
        "decrypt" => Operation::Decrypt,
        "public-key" | "public_key" | "get-public-key" => Operation::PublicKey,
        "health" | "probe" => Operation::Health,
        _ => return None,
    })
}

impl fmt::Display for KmsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "kms {} {} (key={}): ",
            self.provider, self.op, self.key_id
        )?;
        match (self.kind.sentinel(), self.message.is_empty()) {
            (Some(s), true) => f.write_str(s),
            (Some(s), false) => write!(f, "{s}: {}", self.message),
            (None, _) => f.write_str(&self.message),
        }
    }
}

impl fmt::Debug for KmsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KmsError")
            .field("provider", &self.provider)
            .field("op", &self.op)
            .field("key_id", &self.key_id)
            .field("kind", &self.kind)
            .field("message", &self.message)
            .field("source", &self.source)
            .finish()
    }
}

impl StdError for KmsError {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        self.source
            .as_deref()
            .map(|e| e as &(dyn StdError + 'static))
    }
}

/// Maps a KMS error to the `CryptoProvider` seam's error. The operation is inferred from
/// [`KmsError::op`]; an operation the seam does not name (`init`, `list-keys`, ...) is reported
/// as [`Operation::Health`] with the original operation kept in the detail. The original
/// `KmsError` is the source, so its exact kind stays reachable by downcasting.
impl From<KmsError> for ProviderError {
    fn from(e: KmsError) -> Self {
        let op = op_of(&e.op).unwrap_or(Operation::Health);
        e.into_provider_error(op)
    }
}

/// Whether `err`, or the first KMS or provider error in its source chain, is transient.
///
/// The walk stops at the first [`KmsError`] or [`ProviderError`] it meets, so a
/// [`KmsErrorKind::Cancelled`] error is not transient even though it carries a transient error
/// as its source.
pub fn is_transient(err: &(dyn StdError + 'static)) -> bool {
    let mut cur = Some(err);
    while let Some(e) = cur {
        if let Some(k) = e.downcast_ref::<KmsError>() {
            return k.is_transient();
        }
        if let Some(p) = e.downcast_ref::<ProviderError>() {
            return p.is_transient();
        }
        cur = e.source();
    }
    false
}

/// The [`KmsErrorKind`] behind a seam error, when it came from this crate.
pub fn kms_kind(err: &ProviderError) -> Option<KmsErrorKind> {
    err.source
        .as_deref()
        .and_then(|s| s.downcast_ref::<KmsError>())
        .map(|k| k.kind)
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALL: [KmsErrorKind; 11] = [
        KmsErrorKind::Unavailable,
        KmsErrorKind::Throttled,
        KmsErrorKind::AccessDenied,
        KmsErrorKind::KeyDisabled,
        KmsErrorKind::InvalidKey,
        KmsErrorKind::Pkcs11Module,
        KmsErrorKind::Pkcs11Session,
        KmsErrorKind::DecryptionFailed,
        KmsErrorKind::NotCompiled,
        KmsErrorKind::Cancelled,
        KmsErrorKind::Other,
    ];

    #[test]
    fn display_keeps_the_go_wording() {
        let e = KmsError::new(
            "aws",
            "encrypt",
            "k1",
            KmsErrorKind::Throttled,
            "ThrottlingException: rate exceeded",
        );
        assert_eq!(
            e.to_string(),
            "kms aws encrypt (key=k1): KMS request throttled: ThrottlingException: rate exceeded"
        );
        let other = KmsError::new("gcp", "sign", "projects/p", KmsErrorKind::Other, "boom");
        assert_eq!(other.to_string(), "kms gcp sign (key=projects/p): boom");
        let bare = KmsError::new("pkcs11", "init", "", KmsErrorKind::Pkcs11Module, "");
        assert_eq!(
            bare.to_string(),
            "kms pkcs11 init (key=): PKCS#11 module error"
        );
    }

    #[test]
    fn sentinel_texts_are_the_go_texts() {
        let texts: Vec<_> = ALL.iter().map(|k| k.sentinel()).collect();
        assert_eq!(
            texts,
            [
                Some("KMS service unavailable"),
                Some("KMS request throttled"),
                Some("KMS access denied"),
                Some("KMS key is disabled"),
                Some("KMS invalid key"),
                Some("PKCS#11 module error"),
                Some("PKCS#11 session error"),
                Some("decryption failed"),
                Some("support not compiled"),
                Some("operation cancelled"),
                None,
            ]
        );
    }

    #[test]
    fn transient_exactly_for_unavailable_and_throttled() {
        for k in ALL {
            let expected = matches!(k, KmsErrorKind::Unavailable | KmsErrorKind::Throttled);
            assert_eq!(k.is_transient(), expected, "{k:?}");
            let e = KmsError::new("aws", "sign", "k", k, "m");
            assert_eq!(e.is_transient(), expected, "{k:?}");
            assert_eq!(is_transient(&e), expected, "{k:?}");
        }
    }

    #[derive(Debug)]
    struct Wrapper(KmsError);
    impl fmt::Display for Wrapper {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("while storing a secret")
        }
    }
    impl StdError for Wrapper {
        fn source(&self) -> Option<&(dyn StdError + 'static)> {
            Some(&self.0)
        }
    }

    #[test]
    fn transient_through_wrapping_but_not_through_cancellation() {
        let inner = KmsError::new("aws", "sign", "k", KmsErrorKind::Unavailable, "503");
        assert!(is_transient(&Wrapper(inner)));
        let denied = KmsError::new("aws", "sign", "k", KmsErrorKind::AccessDenied, "no");
        assert!(!is_transient(&Wrapper(denied)));
        let last = KmsError::new("aws", "sign", "k", KmsErrorKind::Throttled, "slow down");
        let cancelled =
            KmsError::new("aws", "sign", "k", KmsErrorKind::Cancelled, "").with_source(last);
        assert!(!is_transient(&cancelled));
        assert!(cancelled.source().is_some());
        // And through the seam's error.
        let pe: ProviderError =
            KmsError::new("gcp", "decrypt", "k", KmsErrorKind::Throttled, "").into();
        assert!(is_transient(&pe));
    }

    #[test]
    fn conversion_to_the_seam_keeps_kind_message_and_source() {
        let pe: ProviderError = KmsError::new(
            "aws",
            "decrypt",
            "alias/x",
            KmsErrorKind::KeyDisabled,
            "Disabled",
        )
        .into();
        assert_eq!(pe.provider, "aws-kms");
        assert_eq!(pe.op, Operation::Decrypt);
        assert_eq!(pe.key_id, "alias/x");
        assert_eq!(pe.kind, ProviderErrorKind::KeyDisabled);
        assert_eq!(pe.detail, "Disabled");
        assert_eq!(kms_kind(&pe), Some(KmsErrorKind::KeyDisabled));

        let pe: ProviderError = KmsError::new(
            "pkcs11",
            "sign",
            "lbl",
            KmsErrorKind::Pkcs11Session,
            "CKR_PIN",
        )
        .into();
        assert_eq!(pe.provider, "pkcs11");
        assert_eq!(pe.kind, ProviderErrorKind::Other);
        assert_eq!(pe.detail, "PKCS#11 session error: CKR_PIN");
        assert_eq!(kms_kind(&pe), Some(KmsErrorKind::Pkcs11Session));

        let pe: ProviderError =
            KmsError::new("aws", "sign", "k", KmsErrorKind::Cancelled, "").into();
        assert_eq!(pe.kind, ProviderErrorKind::Other);
        assert!(!pe.is_transient());

        let pe: ProviderError =
            KmsError::new("gcp", "list-keys", "ring", KmsErrorKind::Unavailable, "503").into();
        assert_eq!(pe.op, Operation::Health);
        assert_eq!(pe.detail, "during list-keys: 503");
        assert_eq!(pe.kind, ProviderErrorKind::Unavailable);
    }

    #[test]
    fn every_kind_maps_to_a_seam_kind_with_the_same_transience() {
        for k in ALL {
            assert_eq!(
                k.to_provider_kind().is_transient(),
                k.is_transient(),
                "{k:?}"
            );
        }
    }
}
