//! The composite provider: a KMS primary with an explicit, fail-closed local fallback
//! (spec §2.11, K-1, K-7).
//!
//! For `encrypt` and `decrypt` of data without a v1 header:
//!
//! 1. if a checker is present and reports the primary connected, the primary is called; its
//!    success is returned;
//! 2. the fallback is used when the checker reports the primary [`Connection::Unreachable`]
//!    (its probe failed transiently: unavailable, throttled, timed out), when there is **no
//!    checker** (Go parity: then the primary is never used), or when the primary failed in a
//!    way the [`FallbackMode`] allows: [`FallbackMode::UnavailableOnly`] (default) only for
//!    transient errors (and, for `decrypt`, input the primary says is not its format);
//!    [`FallbackMode::AnyError`] (Go) for any error. Access denied, disabled or invalid keys and
//!    failed decryptions are returned to the caller: a revoked KMS key stops the node instead
//!    of silently moving new secrets to the local key.
//! 3. when the checker reports the key [`Connection::Refused`] (its probe was answered with
//!    access denied, key disabled, key not found ...), `UnavailableOnly` never falls back:
//!    `encrypt` fails at once with the probe's kind and the key's state (nothing new is
//!    sealed, under the local key or under a key the KMS refuses: Azure still encrypts with a
//!    disabled key it will not decrypt with) until a probe finds the key usable again;
//!    `decrypt`, `sign` and `public_key` go to the primary alone (a key enabled again is used
//!    at once), and any error it returns is final. `AnyError` treats a refused key like an
//!    unreachable one (Go).
//! 4. with no fallback provider the result is `no crypto provider available`.
//!
//! `sign` and `public_key` never fall back under `UnavailableOnly`: a KMS ECDSA signature and a
//! local HMAC are not interchangeable. When the primary is "down" they fail at once with
//! `Unavailable`.
//!
//! `decrypt` of a v1 blob goes straight to the provider whose tag the header carries (byte 4),
//! primary or fallback, with no health check and no fallback: only that provider can open it.
//!
//! The fallback is always asked for its default key (`"local"`): the caller's key id names a
//! KMS key, which the local provider does not have.
//!
//! There is no lock around remote calls; a semaphore bounds concurrency (default 16). Every
//! fallback increments [`CompositeProvider::fallback_count`] and logs a warning with the
//! operation, the key id and the primary's error kind.

use std::{
    fmt,
    str::FromStr,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
};

use async_trait::async_trait;
use lango_crypto::{
    CryptoProvider, SecretBytes,
    aead::{ProviderTag, V1_MAGIC, V1_VERSION},
    provider::{
        AeadContext, Health, Operation, ProviderError, ProviderErrorKind, PublicKeyInfo, Signature,
    },
};
use tokio::sync::Semaphore;

use crate::health::{Connection, ConnectionChecker, key_state_of};

/// Default bound on concurrent operations.
pub const DEFAULT_MAX_CONCURRENCY: usize = 16;
/// The error text when neither provider may serve a request (Go parity).
pub const NO_PROVIDER: &str = "no crypto provider available";
/// The key id the fallback is asked for.
pub const FALLBACK_KEY_ID: &str = "local";

/// When the composite may use the local fallback.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum FallbackMode {
    /// Only when the primary is down or failed transiently; never for `sign` (default).
    #[default]
    UnavailableOnly,
    /// On any primary error, for every operation (Go behaviour).
    AnyError,
}

impl FallbackMode {
    /// The configuration spelling: `unavailable-only` or `any-error`.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::UnavailableOnly => "unavailable-only",
            Self::AnyError => "any-error",
        }
    }
}

impl FromStr for FallbackMode {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "unavailable-only" => Ok(Self::UnavailableOnly),
            "any-error" => Ok(Self::AnyError),
            other => Err(format!(
                "invalid security.kms.fallbackMode: {other:?} (must be unavailable-only or any-error)"
            )),
        }
    }
}

impl fmt::Display for FallbackMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A request, so that routing is written once for all operations.
enum Req<'a> {
    Sign(&'a [u8]),
    PublicKey,
    Encrypt(&'a [u8], AeadContext<'a>),
    Decrypt(&'a [u8], AeadContext<'a>),
}

enum Resp {
    Sig(Signature),
    Pk(PublicKeyInfo),
    Blob(Vec<u8>),
    Plain(SecretBytes),
}

impl Req<'_> {
    fn op(&self) -> Operation {
        match self {
            Self::Sign(_) => Operation::Sign,
            Self::PublicKey => Operation::PublicKey,
            Self::Encrypt(..) => Operation::Encrypt,
            Self::Decrypt(..) => Operation::Decrypt,
        }
    }

    async fn send(&self, p: &dyn CryptoProvider, key_id: &str) -> Result<Resp, ProviderError> {
        Ok(match *self {
            Self::Sign(payload) => Resp::Sig(p.sign(key_id, payload).await?),
            Self::PublicKey => Resp::Pk(p.public_key(key_id).await?),
            Self::Encrypt(plaintext, aad) => Resp::Blob(p.encrypt(key_id, plaintext, aad).await?),
            Self::Decrypt(blob, aad) => Resp::Plain(p.decrypt(key_id, blob, aad).await?),
        })
    }
}

/// Why the fallback was chosen (for the log).
#[derive(Debug, Clone, Copy)]
enum Reason {
    NoChecker,
    /// The probe failed transiently with this kind.
    Down(ProviderErrorKind),
    /// The probe was refused with this kind (`AnyError` mode only).
    Refused(ProviderErrorKind),
    PrimaryError(ProviderErrorKind),
}

/// The tag of a v1 blob: `None` if `blob` has no v1 header, `Some(Err(byte))` for an
/// unassigned tag.
fn v1_tag(blob: &[u8]) -> Option<Result<ProviderTag, u8>> {
    if blob.len() < 5 || blob[..3] != V1_MAGIC || blob[3] != V1_VERSION {
        return None;
    }
    Some(ProviderTag::from_byte(blob[4]).map_err(|_| blob[4]))
}

/// A primary provider with an optional local fallback and health checker.
pub struct CompositeProvider {
    primary: Arc<dyn CryptoProvider>,
    fallback: Option<Arc<dyn CryptoProvider>>,
    checker: Option<Arc<dyn ConnectionChecker>>,
    mode: FallbackMode,
    permits: Semaphore,
    fallbacks: AtomicU64,
    used_local: AtomicBool,
}

impl fmt::Debug for CompositeProvider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CompositeProvider")
            .field("primary", &self.primary.id())
            .field(
                "fallback",
                &self.fallback.as_ref().map(|p| p.id().to_owned()),
            )
            .field("checker", &self.checker.is_some())
            .field("mode", &self.mode)
            .field("fallbacks", &self.fallback_count())
            .finish_non_exhaustive()
    }
}

impl CompositeProvider {
    /// A composite with only a primary: no fallback, no checker, default mode and concurrency.
    /// Add a checker, or the primary is never used.
    pub fn new(primary: Arc<dyn CryptoProvider>) -> Self {
        Self {
            primary,
            fallback: None,
            checker: None,
            mode: FallbackMode::default(),
            permits: Semaphore::new(DEFAULT_MAX_CONCURRENCY),
            fallbacks: AtomicU64::new(0),
            used_local: AtomicBool::new(false),
        }
    }

    /// Sets the fallback (the bootstrap's local provider).
    #[must_use]
    pub fn with_fallback(mut self, fallback: Arc<dyn CryptoProvider>) -> Self {
        self.fallback = Some(fallback);
        self
    }

    /// Sets the health checker of the primary.
    #[must_use]
    pub fn with_checker(mut self, checker: Arc<dyn ConnectionChecker>) -> Self {
        self.checker = Some(checker);
        self
    }

    /// Sets the fallback mode.
    #[must_use]
    pub fn with_mode(mut self, mode: FallbackMode) -> Self {
        self.mode = mode;
        self
    }

    /// Bounds concurrent operations (at least 1).
    #[must_use]
    pub fn with_max_concurrency(mut self, permits: usize) -> Self {
        self.permits = Semaphore::new(permits.max(1));
        self
    }

    /// The fallback mode in use.
    pub fn mode(&self) -> FallbackMode {
        self.mode
    }

    /// How many operations used the fallback because of the primary's state.
    pub fn fallback_count(&self) -> u64 {
        self.fallbacks.load(Ordering::Relaxed)
    }

    /// Whether the most recently completed operation was served by the fallback (with
    /// concurrent operations, whichever finished last).
    pub fn used_local(&self) -> bool {
        self.used_local.load(Ordering::Relaxed)
    }

    fn error(
        &self,
        op: Operation,
        key_id: &str,
        kind: ProviderErrorKind,
        detail: impl Into<String>,
    ) -> ProviderError {
        ProviderError::new("composite", op, key_id, kind, detail)
    }

    async fn connection(&self) -> Option<Connection> {
        match &self.checker {
            Some(c) => Some(c.connection().await),
            None => None,
        }
    }

    /// A failure of the primary, returned instead of falling back (K-1). When the KMS refused
    /// the key (access denied, disabled, not found or invalid), the error says so and names
    /// the key's state; other errors are returned as they are.
    fn refusal(&self, mut e: ProviderError) -> ProviderError {
        if !matches!(
            e.kind,
            ProviderErrorKind::AccessDenied
                | ProviderErrorKind::KeyDisabled
                | ProviderErrorKind::InvalidKey
        ) {
            return e;
        }
        tracing::warn!(
            event = "kms.fallback.refused",
            op = %e.op,
            key_id = %e.key_id,
            primary = self.primary.id(),
            kind = ?e.kind,
            key_state = key_state_of(e.kind),
            error = %e,
            "the KMS refused the key; the local fallback is not used for refusals"
        );
        let note = format!(
            "the KMS refused the key (key state: {}); the local key is not used in its place",
            key_state_of(e.kind)
        );
        e.detail = if e.detail.is_empty() {
            note
        } else {
            format!("{}; {note}", e.detail)
        };
        e
    }

    /// Whether a primary error of `kind` lets `op` fall back.
    fn falls_back_on(&self, op: Operation, kind: ProviderErrorKind) -> bool {
        match self.mode {
            FallbackMode::AnyError => true,
            FallbackMode::UnavailableOnly => {
                kind.is_transient()
                    || (op == Operation::Decrypt
                        && matches!(
                            kind,
                            ProviderErrorKind::InvalidInput | ProviderErrorKind::Unsupported
                        ))
            }
        }
    }

    fn may_fall_back(&self, op: Operation) -> bool {
        self.mode == FallbackMode::AnyError || !matches!(op, Operation::Sign | Operation::PublicKey)
    }

    async fn route(&self, key_id: &str, req: Req<'_>) -> Result<Resp, ProviderError> {
        let op = req.op();
        let _permit = self
            .permits
            .acquire()
            .await
            .map_err(|_| self.error(op, key_id, ProviderErrorKind::Other, "provider closed"))?;

        if let Req::Decrypt(blob, _) = &req
            && let Some(tag) = v1_tag(blob)
        {
            return self.route_tagged(key_id, tag, &req).await;
        }

        let (reason, primary_error) = match self.connection().await {
            Some(Connection::Up) => match req.send(self.primary.as_ref(), key_id).await {
                Ok(r) => {
                    self.used_local.store(false, Ordering::Relaxed);
                    return Ok(r);
                }
                Err(e) if self.may_fall_back(op) && self.falls_back_on(op, e.kind) => {
                    (Reason::PrimaryError(e.kind), Some(e))
                }
                Err(e) => {
                    self.used_local.store(false, Ordering::Relaxed);
                    return Err(if self.may_fall_back(op) {
                        self.refusal(e)
                    } else {
                        e
                    });
                }
            },
            Some(Connection::Refused(f)) if self.mode == FallbackMode::AnyError => {
                (Reason::Refused(f.kind), None)
            }
            // The KMS refused the key: nothing new is sealed, neither under the local key nor
            // under a key the KMS refuses to use (Azure, for one, still encrypts with a
            // disabled key that it will not decrypt with), until a probe finds it usable.
            Some(Connection::Refused(f)) if op == Operation::Encrypt => {
                self.used_local.store(false, Ordering::Relaxed);
                tracing::warn!(
                    event = "kms.fallback.refused",
                    op = %op,
                    key_id = %key_id,
                    primary = self.primary.id(),
                    kind = ?f.kind,
                    key_state = f.key_state(),
                    reason = %f.message,
                    "the KMS refused the key; nothing is encrypted until it accepts the key again"
                );
                return Err(ProviderError::new(
                    self.primary.id(),
                    op,
                    key_id,
                    f.kind,
                    format!(
                        "the KMS refused the key (key state: {}; {}); no value is sealed, under the local key or any other, until the KMS accepts the key again",
                        f.key_state(),
                        f.message
                    ),
                ));
            }
            // Other operations: only the primary may serve (a key enabled again is read and
            // signed with at once), and a failure is final, transient or not. (Only input that
            // is not the primary's format may still be decrypted by the fallback: that reads
            // what the local key wrote, nothing more.)
            Some(Connection::Refused(_)) => match req.send(self.primary.as_ref(), key_id).await {
                Ok(r) => {
                    self.used_local.store(false, Ordering::Relaxed);
                    return Ok(r);
                }
                Err(e)
                    if self.may_fall_back(op)
                        && !e.kind.is_transient()
                        && self.falls_back_on(op, e.kind) =>
                {
                    (Reason::PrimaryError(e.kind), Some(e))
                }
                Err(e) => {
                    self.used_local.store(false, Ordering::Relaxed);
                    return Err(self.refusal(e));
                }
            },
            Some(Connection::Unreachable(f)) => (Reason::Down(f.kind), None),
            None => (Reason::NoChecker, None),
        };

        if !self.may_fall_back(op) {
            self.used_local.store(false, Ordering::Relaxed);
            let why = match reason {
                Reason::NoChecker => "the primary is not used without a health checker",
                _ => "the primary provider is down",
            };
            return Err(self.error(
                op,
                key_id,
                ProviderErrorKind::Unavailable,
                format!(
                    "{why}, and {op} never falls back to the local key in unavailable-only mode"
                ),
            ));
        }

        let Some(fallback) = &self.fallback else {
            self.used_local.store(false, Ordering::Relaxed);
            let mut e = self.error(op, key_id, ProviderErrorKind::Unavailable, NO_PROVIDER);
            e.source = primary_error.map(|p| Box::new(p) as _);
            return Err(e);
        };
        self.fallbacks.fetch_add(1, Ordering::Relaxed);
        let (primary_error_kind, probe_error_kind) = match reason {
            Reason::PrimaryError(k) => (Some(k), None),
            Reason::Down(k) | Reason::Refused(k) => (None, Some(k)),
            Reason::NoChecker => (None, None),
        };
        tracing::warn!(
            op = %op,
            key_id = %key_id,
            primary = self.primary.id(),
            fallback = fallback.id(),
            reason = ?reason,
            primary_error_kind = ?primary_error_kind,
            probe_error_kind = ?probe_error_kind,
            primary_error = primary_error.as_ref().map(|e| e.to_string()),
            "crypto operation fell back to the local provider"
        );
        let r = req.send(fallback.as_ref(), FALLBACK_KEY_ID).await;
        self.used_local.store(true, Ordering::Relaxed);
        r
    }

    async fn route_tagged(
        &self,
        key_id: &str,
        tag: Result<ProviderTag, u8>,
        req: &Req<'_>,
    ) -> Result<Resp, ProviderError> {
        let op = req.op();
        let tag = tag.map_err(|b| {
            self.error(
                op,
                key_id,
                ProviderErrorKind::InvalidInput,
                format!("unknown provider tag 0x{b:02x} in ciphertext header"),
            )
        })?;
        if tag == self.primary.tag() {
            let r = req.send(self.primary.as_ref(), key_id).await;
            self.used_local.store(false, Ordering::Relaxed);
            return r;
        }
        match &self.fallback {
            Some(f) if f.tag() == tag => {
                let r = req.send(f.as_ref(), FALLBACK_KEY_ID).await;
                self.used_local.store(true, Ordering::Relaxed);
                r
            }
            _ => Err(self.error(
                op,
                key_id,
                ProviderErrorKind::InvalidInput,
                format!("ciphertext was written by provider {tag:?}, which is not configured"),
            )),
        }
    }

    fn mismatch(&self, op: Operation, key_id: &str) -> ProviderError {
        self.error(
            op,
            key_id,
            ProviderErrorKind::Other,
            "internal: response does not match the request",
        )
    }
}

#[async_trait]
impl CryptoProvider for CompositeProvider {
    /// The primary's name.
    fn id(&self) -> &str {
        self.primary.id()
    }

    /// The primary's tag.
    fn tag(&self) -> ProviderTag {
        self.primary.tag()
    }

    async fn sign(&self, key_id: &str, payload: &[u8]) -> Result<Signature, ProviderError> {
        match self.route(key_id, Req::Sign(payload)).await? {
            Resp::Sig(s) => Ok(s),
            _ => Err(self.mismatch(Operation::Sign, key_id)),
        }
    }

    async fn public_key(&self, key_id: &str) -> Result<PublicKeyInfo, ProviderError> {
        match self.route(key_id, Req::PublicKey).await? {
            Resp::Pk(p) => Ok(p),
            _ => Err(self.mismatch(Operation::PublicKey, key_id)),
        }
    }

    async fn encrypt(
        &self,
        key_id: &str,
        plaintext: &[u8],
        aad: AeadContext<'_>,
    ) -> Result<Vec<u8>, ProviderError> {
        match self.route(key_id, Req::Encrypt(plaintext, aad)).await? {
            Resp::Blob(b) => Ok(b),
            _ => Err(self.mismatch(Operation::Encrypt, key_id)),
        }
    }

    async fn decrypt(
        &self,
        key_id: &str,
        blob: &[u8],
        aad: AeadContext<'_>,
    ) -> Result<SecretBytes, ProviderError> {
        match self.route(key_id, Req::Decrypt(blob, aad)).await? {
            Resp::Plain(p) => Ok(p),
            _ => Err(self.mismatch(Operation::Decrypt, key_id)),
        }
    }

    /// Healthy only when the primary is connected; otherwise says whether the fallback serves.
    async fn health(&self) -> Health {
        let state = match self.connection().await {
            Some(Connection::Up) => return Health::Healthy,
            Some(Connection::Refused(f)) if self.mode == FallbackMode::UnavailableOnly => {
                return Health::Unhealthy(format!(
                    "the KMS refused the key (key state: {}): {}; the local fallback is not used for refusals",
                    f.key_state(),
                    f.message
                ));
            }
            Some(Connection::Refused(_) | Connection::Unreachable(_)) => {
                "the primary provider is down"
            }
            None => "the primary provider is not used (no health checker)",
        };
        match &self.fallback {
            Some(f) => match f.health().await {
                Health::Healthy => Health::Unhealthy(format!(
                    "{state}; operating on the local fallback ({})",
                    f.id()
                )),
                Health::Unhealthy(r) => {
                    Health::Unhealthy(format!("{state}; the fallback is unhealthy too: {r}"))
                }
            },
            None => Health::Unhealthy(format!("{state}; {NO_PROVIDER}")),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::{
        collections::VecDeque,
        sync::{Mutex, atomic::AtomicU32},
        time::Duration,
    };

    use lango_crypto::{
        LocalCryptoProvider, MasterKey,
        aead::{BlobHeader, BlobPurpose},
        provider::{KeyAlgorithm, SignatureAlgorithm},
    };

    use super::*;
    use crate::{HealthChecker, KeyRole};

    /// A primary that writes v1-headed (unencrypted) blobs with the AWS tag, counts calls,
    /// and fails with queued error kinds.
    #[derive(Default)]
    struct Primary {
        calls: AtomicU32,
        decrypts: AtomicU32,
        failures: Mutex<VecDeque<ProviderErrorKind>>,
        delay_ms: u64,
    }

    impl Primary {
        fn failing(kinds: &[ProviderErrorKind]) -> Arc<Self> {
            let p = Self::default();
            p.failures.lock().unwrap().extend(kinds.iter().copied());
            Arc::new(p)
        }

        async fn enter(&self, op: Operation, key_id: &str) -> Result<(), ProviderError> {
            self.calls.fetch_add(1, Ordering::SeqCst);
            tokio::time::sleep(Duration::from_millis(self.delay_ms)).await;
            match self.failures.lock().unwrap().pop_front() {
                Some(kind) => Err(ProviderError::new("aws-kms", op, key_id, kind, "injected")),
                None => Ok(()),
            }
        }
    }

    #[async_trait]
    impl CryptoProvider for Primary {
        fn id(&self) -> &str {
            "aws-kms"
        }
        fn tag(&self) -> ProviderTag {
            ProviderTag::AwsKms
        }
        async fn sign(&self, key_id: &str, _: &[u8]) -> Result<Signature, ProviderError> {
            self.enter(Operation::Sign, key_id).await?;
            Ok(Signature {
                algorithm: SignatureAlgorithm::EcdsaP256Sha256Der,
                bytes: vec![0x30],
            })
        }
        async fn public_key(&self, key_id: &str) -> Result<PublicKeyInfo, ProviderError> {
            self.enter(Operation::PublicKey, key_id).await?;
            Ok(PublicKeyInfo {
                algorithm: KeyAlgorithm::P256,
                bytes: vec![4],
            })
        }
        async fn encrypt(
            &self,
            key_id: &str,
            plaintext: &[u8],
            _: AeadContext<'_>,
        ) -> Result<Vec<u8>, ProviderError> {
            self.enter(Operation::Encrypt, key_id).await?;
            let mut b = BlobHeader {
                provider: ProviderTag::AwsKms,
                generation: 0,
            }
            .encode()
            .to_vec();
            b.extend_from_slice(plaintext);
            Ok(b)
        }
        async fn decrypt(
            &self,
            key_id: &str,
            blob: &[u8],
            _: AeadContext<'_>,
        ) -> Result<SecretBytes, ProviderError> {
            self.decrypts.fetch_add(1, Ordering::SeqCst);
            self.enter(Operation::Decrypt, key_id).await?;
            match BlobHeader::parse(blob) {
                Ok((h, rest)) if h.provider == ProviderTag::AwsKms => {
                    Ok(SecretBytes::from_slice(rest))
                }
                _ => Err(ProviderError::new(
                    "aws-kms",
                    Operation::Decrypt,
                    key_id,
                    ProviderErrorKind::InvalidInput,
                    "not an aws-kms blob",
                )),
            }
        }
        async fn health(&self) -> Health {
            Health::Healthy
        }
    }

    /// A checker with a fixed answer.
    struct Fixed(Connection);

    #[async_trait]
    impl ConnectionChecker for Fixed {
        async fn connection(&self) -> Connection {
            self.0.clone()
        }
    }

    fn failure(kind: ProviderErrorKind) -> crate::health::ProbeFailure {
        crate::health::ProbeFailure {
            kind,
            kms_kind: None,
            message: format!("encrypt probe failed: {kind:?}"),
        }
    }

    /// Up, or unreachable (a transient probe failure).
    fn checker(up: bool) -> Arc<Fixed> {
        Arc::new(Fixed(if up {
            Connection::Up
        } else {
            Connection::Unreachable(failure(ProviderErrorKind::Unavailable))
        }))
    }

    fn local() -> Arc<LocalCryptoProvider> {
        Arc::new(LocalCryptoProvider::new(&MasterKey::generate().unwrap(), 1))
    }

    fn ctx() -> AeadContext<'static> {
        AeadContext {
            purpose: BlobPurpose::Secrets,
            context: b"row",
            max_blob_len: 1 << 16,
        }
    }

    fn composite(primary: &Arc<Primary>, up: Option<bool>) -> CompositeProvider {
        let c = CompositeProvider::new(primary.clone()).with_fallback(local());
        match up {
            Some(up) => c.with_checker(checker(up)),
            None => c,
        }
    }

    #[tokio::test]
    async fn connected_primary_is_used() {
        let primary = Arc::new(Primary::default());
        let c = composite(&primary, Some(true));
        let blob = c.encrypt("alias/k", b"v", ctx()).await.unwrap();
        assert_eq!(blob[4], ProviderTag::AwsKms as u8);
        assert!(!c.used_local());
        assert_eq!(c.fallback_count(), 0);
        assert_eq!(primary.calls.load(Ordering::SeqCst), 1);
        assert_eq!(c.health().await, Health::Healthy);
    }

    #[tokio::test]
    async fn disconnected_primary_falls_back_to_local() {
        let primary = Arc::new(Primary::default());
        let c = composite(&primary, Some(false));
        let blob = c.encrypt("alias/k", b"v", ctx()).await.unwrap();
        assert_eq!(blob[4], ProviderTag::LocalMk as u8);
        assert!(c.used_local());
        assert_eq!(c.fallback_count(), 1);
        assert_eq!(primary.calls.load(Ordering::SeqCst), 0);
        assert!(matches!(c.health().await, Health::Unhealthy(r) if r.contains("local fallback")));
    }

    #[tokio::test]
    async fn transient_primary_error_falls_back() {
        for kind in [ProviderErrorKind::Unavailable, ProviderErrorKind::Throttled] {
            let primary = Primary::failing(&[kind]);
            let c = composite(&primary, Some(true));
            let blob = c.encrypt("alias/k", b"v", ctx()).await.unwrap();
            assert_eq!(blob[4], ProviderTag::LocalMk as u8);
            assert!(c.used_local());
            assert_eq!(c.fallback_count(), 1);
        }
    }

    #[tokio::test]
    async fn permanent_errors_fail_closed_by_default_and_fall_back_in_any_error_mode() {
        for kind in [
            ProviderErrorKind::AccessDenied,
            ProviderErrorKind::KeyDisabled,
            ProviderErrorKind::InvalidKey,
            ProviderErrorKind::DecryptionFailed,
        ] {
            let primary = Primary::failing(&[kind]);
            let c = composite(&primary, Some(true));
            let e = c.encrypt("alias/k", b"v", ctx()).await.unwrap_err();
            assert_eq!(e.kind, kind);
            assert!(!c.used_local());
            assert_eq!(c.fallback_count(), 0);

            let primary = Primary::failing(&[kind]);
            let c = composite(&primary, Some(true)).with_mode(FallbackMode::AnyError);
            let blob = c.encrypt("alias/k", b"v", ctx()).await.unwrap();
            assert_eq!(blob[4], ProviderTag::LocalMk as u8, "{kind:?}");
            assert!(c.used_local());
            assert_eq!(c.fallback_count(), 1);
        }
    }

    #[tokio::test]
    async fn sign_never_falls_back_in_default_mode() {
        // Primary error, transient or not: returned.
        let primary = Primary::failing(&[ProviderErrorKind::Unavailable]);
        let c = composite(&primary, Some(true));
        let e = c.sign("alias/k", b"m").await.unwrap_err();
        assert_eq!(e.kind, ProviderErrorKind::Unavailable);
        assert_eq!(e.provider, "aws-kms");
        assert_eq!(c.fallback_count(), 0);
        // Primary down: fails at once, neither provider signs.
        let primary = Arc::new(Primary::default());
        let c = composite(&primary, Some(false));
        let e = c.sign("alias/k", b"m").await.unwrap_err();
        assert_eq!(e.kind, ProviderErrorKind::Unavailable);
        assert!(e.detail.contains("never falls back"), "{e}");
        assert_eq!(primary.calls.load(Ordering::SeqCst), 0);
        assert!(!c.used_local());
        assert!(c.public_key("alias/k").await.is_err());
        // Any-error mode reproduces Go: the local HMAC, reported as such.
        let c = composite(&primary, Some(false)).with_mode(FallbackMode::AnyError);
        let sig = c.sign("alias/k", b"m").await.unwrap();
        assert_eq!(sig.algorithm, SignatureAlgorithm::HmacSha256);
        assert!(c.used_local());
    }

    #[tokio::test]
    async fn no_fallback_provider_is_no_crypto_provider_available() {
        let primary = Primary::failing(&[ProviderErrorKind::Unavailable]);
        let c = CompositeProvider::new(primary.clone()).with_checker(checker(true));
        let e = c.encrypt("alias/k", b"v", ctx()).await.unwrap_err();
        assert!(e.to_string().ends_with(NO_PROVIDER), "{e}");
        assert_eq!(e.source.as_ref().unwrap().to_string(), {
            let p = ProviderError::new(
                "aws-kms",
                Operation::Encrypt,
                "alias/k",
                ProviderErrorKind::Unavailable,
                "injected",
            );
            p.to_string()
        });
        let c = CompositeProvider::new(primary).with_checker(checker(false));
        let e = c
            .decrypt("alias/k", b"headerless", ctx())
            .await
            .unwrap_err();
        assert_eq!(e.detail, NO_PROVIDER);
    }

    #[tokio::test]
    async fn without_a_checker_the_primary_is_never_used() {
        let primary = Arc::new(Primary::default());
        let c = composite(&primary, None);
        let blob = c.encrypt("alias/k", b"v", ctx()).await.unwrap();
        assert_eq!(blob[4], ProviderTag::LocalMk as u8);
        assert!(c.used_local());
        assert!(c.sign("alias/k", b"m").await.is_err());
        assert_eq!(primary.calls.load(Ordering::SeqCst), 0);
    }

    #[tokio::test]
    async fn tagged_ciphertext_goes_to_the_provider_that_wrote_it() {
        let primary = Arc::new(Primary::default());
        let fallback = local();
        // A local blob, read while the primary is connected: straight to local.
        let local_blob = fallback.encrypt("local", b"old", ctx()).await.unwrap();
        let c = CompositeProvider::new(primary.clone())
            .with_fallback(fallback.clone())
            .with_checker(checker(true));
        let plain = c.decrypt("alias/k", &local_blob, ctx()).await.unwrap();
        assert_eq!(plain.expose(), b"old");
        assert!(c.used_local());
        assert_eq!(primary.decrypts.load(Ordering::SeqCst), 0);
        assert_eq!(c.fallback_count(), 0, "routing by tag is not a fallback");
        // A KMS blob, read while the checker says down: still the primary, never local.
        let kms_blob = primary.encrypt("alias/k", b"new", ctx()).await.unwrap();
        let c = CompositeProvider::new(primary.clone())
            .with_fallback(fallback)
            .with_checker(checker(false));
        let plain = c.decrypt("alias/k", &kms_blob, ctx()).await.unwrap();
        assert_eq!(plain.expose(), b"new");
        assert!(!c.used_local());
        // A tag nobody here wrote.
        let mut gcp = kms_blob.clone();
        gcp[4] = ProviderTag::GcpKms as u8;
        let e = c.decrypt("alias/k", &gcp, ctx()).await.unwrap_err();
        assert_eq!(e.kind, ProviderErrorKind::InvalidInput);
        gcp[4] = 0x7f;
        let e = c.decrypt("alias/k", &gcp, ctx()).await.unwrap_err();
        assert!(e.detail.contains("0x7f"));
    }

    #[tokio::test]
    async fn headerless_ciphertext_tries_primary_then_local() {
        let primary = Arc::new(Primary::default());
        let c = composite(&primary, Some(true));
        let e = c
            .decrypt("alias/k", b"legacy-go-blob", ctx())
            .await
            .unwrap_err();
        assert_eq!(primary.decrypts.load(Ordering::SeqCst), 1);
        // The local provider had its say too (and refused a non-v1 blob).
        assert!(c.used_local());
        assert_eq!(c.fallback_count(), 1);
        assert_eq!(e.provider, "local");
    }

    #[tokio::test(start_paused = true)]
    async fn no_global_lock_and_bounded_concurrency() {
        let primary = Arc::new(Primary {
            delay_ms: 1000,
            ..Primary::default()
        });
        for (permits, expected) in [(16, 1000), (1, 2000)] {
            let c = Arc::new(composite(&primary, Some(true)).with_max_concurrency(permits));
            let start = tokio::time::Instant::now();
            let a = {
                let c = c.clone();
                tokio::spawn(async move { c.sign("k", b"a").await.is_ok() })
            };
            let b = {
                let c = c.clone();
                tokio::spawn(async move { c.sign("k", b"b").await.is_ok() })
            };
            assert!(a.await.unwrap() && b.await.unwrap());
            assert_eq!(
                start.elapsed(),
                Duration::from_millis(expected),
                "{permits}"
            );
        }
    }

    /// The kinds a KMS answers when the key itself is refused ("not found" is `InvalidKey`).
    const REFUSALS: [ProviderErrorKind; 3] = [
        ProviderErrorKind::KeyDisabled,
        ProviderErrorKind::AccessDenied,
        ProviderErrorKind::InvalidKey,
    ];

    /// A composite over `primary` with the local fallback and a real health checker probing
    /// the primary's encryption key.
    fn probed(primary: &Arc<Primary>) -> (CompositeProvider, Arc<HealthChecker>) {
        let checker = Arc::new(HealthChecker::new(
            primary.clone(),
            "alias/k",
            KeyRole::Encryption,
            None,
        ));
        let c = CompositeProvider::new(primary.clone())
            .with_fallback(local())
            .with_checker(checker.clone());
        (c, checker)
    }

    /// Issue 17: a key the KMS refuses (disabled, denied, deleted) makes the probe fail, and
    /// that failure must not send new values to the local key: nothing is encrypted at all.
    #[tokio::test(start_paused = true)]
    async fn a_refused_probe_never_falls_back() {
        for kind in REFUSALS {
            // Every call to the primary is refused, the probe's and the caller's.
            let primary = Primary::failing(&[kind; 8]);
            let (c, checker) = probed(&primary);
            let e = c.encrypt("alias/k", b"v", ctx()).await.unwrap_err();
            assert!(
                matches!(checker.state().await, Connection::Refused(ref f) if f.kind == kind),
                "{kind:?}: {:?}",
                checker.state().await
            );
            assert_eq!(e.kind, kind, "{e}");
            assert_eq!(e.provider, "aws-kms", "the primary's own error: {e}");
            assert!(
                e.to_string()
                    .contains(&format!("key state: {}", key_state_of(kind))),
                "{e}"
            );
            assert!(!c.used_local(), "{kind:?}");
            assert_eq!(c.fallback_count(), 0, "{kind:?}");
            // A headerless blob, too, is the primary's to refuse, not the local key's.
            let e = c.decrypt("alias/k", b"legacy", ctx()).await.unwrap_err();
            assert_eq!(e.kind, kind, "{e}");
            assert_eq!(c.fallback_count(), 0, "{kind:?}");
            assert!(
                matches!(c.health().await, Health::Unhealthy(r) if r.contains("refused")),
                "{kind:?}"
            );
            // Served again by the KMS: still nothing is encrypted until a probe says so ...
            primary.failures.lock().unwrap().clear();
            let calls = primary.calls.load(Ordering::SeqCst);
            let e = c.encrypt("alias/k", b"v", ctx()).await.unwrap_err();
            assert_eq!(e.kind, kind, "{e}");
            assert_eq!(primary.calls.load(Ordering::SeqCst), calls, "nothing sent");
            // ... while reading goes to the KMS at once.
            let blob = primary.encrypt("alias/k", b"w", ctx()).await.unwrap();
            assert_eq!(
                c.decrypt("alias/k", &blob, ctx()).await.unwrap().expose(),
                b"w"
            );
            tokio::time::advance(crate::health::DEFAULT_PROBE_INTERVAL).await;
            let blob = c.encrypt("alias/k", b"v", ctx()).await.unwrap();
            assert_eq!(blob[4], ProviderTag::AwsKms as u8);
            assert_eq!(c.fallback_count(), 0);
        }
    }

    /// Even when a call then fails transiently, a refused key stays refused.
    #[tokio::test(start_paused = true)]
    async fn a_refused_key_does_not_fall_back_on_a_later_transient_error() {
        let primary = Primary::failing(&[
            ProviderErrorKind::KeyDisabled,
            ProviderErrorKind::Unavailable,
        ]);
        let (c, _) = probed(&primary);
        let e = c.decrypt("alias/k", b"legacy", ctx()).await.unwrap_err();
        assert_eq!(e.kind, ProviderErrorKind::Unavailable, "{e}");
        assert_eq!(c.fallback_count(), 0);
        assert!(!c.used_local());
    }

    /// The other side of issue 17: a KMS that is unreachable, throttling or too slow is an
    /// outage, and the fallback serves meanwhile.
    #[tokio::test(start_paused = true)]
    async fn a_transient_probe_failure_still_falls_back() {
        for kind in [ProviderErrorKind::Unavailable, ProviderErrorKind::Throttled] {
            let primary = Primary::failing(&[kind; 8]);
            let (c, checker) = probed(&primary);
            let blob = c.encrypt("alias/k", b"v", ctx()).await.unwrap();
            assert!(
                matches!(checker.state().await, Connection::Unreachable(ref f) if f.kind == kind),
                "{kind:?}"
            );
            assert_eq!(blob[4], ProviderTag::LocalMk as u8, "{kind:?}");
            assert!(c.used_local());
            assert_eq!(c.fallback_count(), 1);
        }
        // Timeout: a primary slower than the probe budget.
        let primary = Arc::new(Primary {
            delay_ms: 10_000,
            ..Primary::default()
        });
        let (c, checker) = probed(&primary);
        let blob = c.encrypt("alias/k", b"v", ctx()).await.unwrap();
        assert!(
            matches!(checker.state().await, Connection::Unreachable(ref f) if f.message.contains("timed out")),
            "{:?}",
            checker.state().await
        );
        assert_eq!(blob[4], ProviderTag::LocalMk as u8);
        assert_eq!(c.fallback_count(), 1);
    }

    /// Any-error mode keeps Go's behaviour: a refused key reads as "down" and falls back.
    #[tokio::test(start_paused = true)]
    async fn any_error_mode_treats_a_refused_key_as_down() {
        let primary = Primary::failing(&[ProviderErrorKind::KeyDisabled; 8]);
        let checker = Arc::new(Fixed(Connection::Refused(failure(
            ProviderErrorKind::KeyDisabled,
        ))));
        let c = CompositeProvider::new(primary.clone())
            .with_fallback(local())
            .with_checker(checker)
            .with_mode(FallbackMode::AnyError);
        let blob = c.encrypt("alias/k", b"v", ctx()).await.unwrap();
        assert_eq!(blob[4], ProviderTag::LocalMk as u8);
        assert_eq!(primary.calls.load(Ordering::SeqCst), 0);
    }

    #[test]
    fn fallback_mode_spellings() {
        assert_eq!(FallbackMode::default(), FallbackMode::UnavailableOnly);
        for m in [FallbackMode::UnavailableOnly, FallbackMode::AnyError] {
            assert_eq!(m.as_str().parse::<FallbackMode>(), Ok(m));
        }
        assert!("always".parse::<FallbackMode>().is_err());
    }
}
