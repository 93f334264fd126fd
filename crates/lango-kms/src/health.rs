//! The health checker (spec §2.10, K-1, K-7).
//!
//! [`HealthChecker::is_connected`] answers from a cached result while it is younger than the
//! probe interval (default 30 s); both "up" and "down" are cached. When the result is stale,
//! one caller probes the provider with a budget of 5 s while the others wait for that probe
//! (single flight: at most one probe is ever in flight). Once a result exists, callers that
//! arrive while a refresh is running get the previous result instead of waiting.
//!
//! The probe depends on the key's purpose ([`KeyRole`]), because an encryption probe against a
//! signing key always fails (K-1):
//! - encryption key: encrypt the fixed plaintext `kms-health-probe`, decrypt it, and compare;
//! - signing key: sign a fixed 32-byte message.
//!
//! The probe goes through the provider's normal retry policy, so a slow outage uses up the
//! budget and reads as "down".
//!
//! A failed probe keeps its classified error kind ([`ProbeFailure`]), because "down" has two
//! meanings that call for opposite reactions (K-1):
//! - [`Connection::Unreachable`]: the KMS could not be reached, throttled the probe, or did
//!   not answer within the budget (transient kinds). The composite may serve from the local
//!   fallback meanwhile.
//! - [`Connection::Refused`]: the KMS answered and refused the key: access denied, key
//!   disabled or scheduled for deletion, key not found or of the wrong type, a failed round
//!   trip. This is what disabling the key (the incident response) looks like; the composite
//!   fails closed and never moves new values to the local key.

use std::{
    sync::{Arc, Mutex, PoisonError},
    time::{Duration, SystemTime},
};

use async_trait::async_trait;
use lango_crypto::{
    CryptoProvider,
    aead::BlobPurpose,
    provider::{AeadContext, Health, ProviderError, ProviderErrorKind},
};
use tokio::time::Instant;

use crate::{KmsErrorKind, backend::KeyRole, error::kms_kind};

/// Default time a probe result stays valid.
pub const DEFAULT_PROBE_INTERVAL: Duration = Duration::from_secs(30);
/// Time budget of one probe.
pub const PROBE_BUDGET: Duration = Duration::from_secs(5);
/// The plaintext of the encryption probe (Go parity).
pub const PROBE_PLAINTEXT: &[u8] = b"kms-health-probe";
/// The message of the signing probe (32 bytes).
pub const SIGN_PROBE_MESSAGE: &[u8; 32] = b"lango-kms-health-probe-32-bytes!";
/// The associated-data context of the encryption probe.
const PROBE_CONTEXT: &[u8] = b"lango-kms-health-probe";

/// Why a probe failed: the classified kind, and a reason safe to show (provider errors never
/// carry secrets).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProbeFailure {
    /// The kind at the `CryptoProvider` seam. A probe that ran out of its time budget is
    /// [`ProviderErrorKind::Unavailable`]; a round trip that returned another plaintext is
    /// [`ProviderErrorKind::Other`].
    pub kind: ProviderErrorKind,
    /// The finer kind when the error came from a KMS backend (e.g. `Pkcs11Session`).
    pub kms_kind: Option<KmsErrorKind>,
    /// What failed, e.g. `encrypt probe failed: kms aws encrypt (key=…): KMS key is disabled`.
    pub message: String,
}

impl ProbeFailure {
    fn from_provider(step: &str, e: &ProviderError) -> Self {
        Self {
            kind: e.kind,
            kms_kind: kms_kind(e),
            message: format!("{step} probe failed: {e}"),
        }
    }

    /// Whether the failure may go away by itself (unreachable, throttled, timed out).
    pub fn is_transient(&self) -> bool {
        self.kind.is_transient()
    }

    /// The state of the key this failure shows, in words (see [`key_state_of`]).
    pub fn key_state(&self) -> &'static str {
        key_state_of(self.kind)
    }
}

/// The state of a key that failed with `kind`, in words: `unknown (KMS unreachable)`,
/// `unknown (KMS throttled)`, `disabled`, `access denied`, `not found or invalid`,
/// `unusable (decryption failed)` or `unusable`.
pub fn key_state_of(kind: ProviderErrorKind) -> &'static str {
    match kind {
        ProviderErrorKind::Unavailable => "unknown (KMS unreachable)",
        ProviderErrorKind::Throttled => "unknown (KMS throttled)",
        ProviderErrorKind::KeyDisabled => "disabled",
        ProviderErrorKind::AccessDenied => "access denied",
        ProviderErrorKind::InvalidKey => "not found or invalid",
        ProviderErrorKind::DecryptionFailed => "unusable (decryption failed)",
        _ => "unusable",
    }
}

impl std::fmt::Display for ProbeFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

/// What a checker knows about the primary provider and its key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Connection {
    /// The last probe succeeded.
    Up,
    /// The last probe failed transiently: the KMS could not be reached, throttled, or did not
    /// answer in time. A fallback may serve meanwhile.
    Unreachable(ProbeFailure),
    /// The KMS answered and refused the key (denied, disabled, not found, wrong type, failed
    /// round trip). Nothing may be moved to another key because of this.
    Refused(ProbeFailure),
}

impl Connection {
    /// Classifies a probe result: transient failures are `Unreachable`, all others `Refused`.
    pub fn from_probe(result: Result<(), ProbeFailure>) -> Self {
        match result {
            Ok(()) => Self::Up,
            Err(f) if f.is_transient() => Self::Unreachable(f),
            Err(f) => Self::Refused(f),
        }
    }

    /// Whether the primary works.
    pub fn is_up(&self) -> bool {
        matches!(self, Self::Up)
    }

    /// The failure, unless the primary is up.
    pub fn failure(&self) -> Option<&ProbeFailure> {
        match self {
            Self::Up => None,
            Self::Unreachable(f) | Self::Refused(f) => Some(f),
        }
    }

    /// The key's state in words: `usable`, or [`ProbeFailure::key_state`].
    pub fn key_state(&self) -> &'static str {
        self.failure().map_or("usable", ProbeFailure::key_state)
    }
}

/// Something that knows whether the primary provider is reachable, and if not, why.
#[async_trait]
pub trait ConnectionChecker: Send + Sync {
    /// The primary's state (from a cache or a fresh probe).
    async fn connection(&self) -> Connection;

    /// Whether the provider currently works.
    async fn is_connected(&self) -> bool {
        self.connection().await.is_up()
    }
}

/// One probe of `provider` with `key_id`, without caching or a time budget.
pub async fn probe(
    provider: &dyn CryptoProvider,
    key_id: &str,
    role: KeyRole,
) -> Result<(), ProbeFailure> {
    match role {
        KeyRole::Encryption => {
            let aad = AeadContext {
                purpose: BlobPurpose::ToolEncrypt,
                context: PROBE_CONTEXT,
                max_blob_len: 64 * 1024,
            };
            let blob = provider
                .encrypt(key_id, PROBE_PLAINTEXT, aad)
                .await
                .map_err(|e| ProbeFailure::from_provider("encrypt", &e))?;
            let plain = provider
                .decrypt(key_id, &blob, aad)
                .await
                .map_err(|e| ProbeFailure::from_provider("decrypt", &e))?;
            if plain.expose() != PROBE_PLAINTEXT {
                return Err(ProbeFailure {
                    kind: ProviderErrorKind::Other,
                    kms_kind: None,
                    message: "round-trip probe returned a different plaintext".to_owned(),
                });
            }
            Ok(())
        }
        KeyRole::Signing => provider
            .sign(key_id, SIGN_PROBE_MESSAGE)
            .await
            .map(|_| ())
            .map_err(|e| ProbeFailure::from_provider("sign", &e)),
    }
}

/// [`probe`] under a time budget; running out of time is a transient failure
/// ([`ProviderErrorKind::Unavailable`]).
pub async fn probe_within(
    provider: &dyn CryptoProvider,
    key_id: &str,
    role: KeyRole,
    budget: Duration,
) -> Result<(), ProbeFailure> {
    match tokio::time::timeout(budget, probe(provider, key_id, role)).await {
        Ok(r) => r,
        Err(_) => Err(ProbeFailure {
            kind: ProviderErrorKind::Unavailable,
            kms_kind: None,
            message: format!("health probe timed out after {budget:?}"),
        }),
    }
}

#[derive(Debug, Default)]
struct State {
    /// When the cached result was taken, and what it was.
    result: Option<(Instant, Connection)>,
    last_checked: Option<SystemTime>,
}

/// Cached, single-flight health probing of one provider and key.
pub struct HealthChecker {
    key_id: String,
    role: KeyRole,
    interval: Duration,
    budget: Duration,
    state: Mutex<State>,
    in_flight: tokio::sync::Mutex<()>,
    provider: Arc<dyn CryptoProvider>,
}

impl std::fmt::Debug for HealthChecker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HealthChecker")
            .field("provider", &self.provider.id())
            .field("key_id", &self.key_id)
            .field("role", &self.role)
            .field("interval", &self.interval)
            .finish_non_exhaustive()
    }
}

impl HealthChecker {
    /// A checker probing `key_id` of `provider` for `role`. `interval` of `None` or zero means
    /// the default of 30 s (Go: `probeInterval <= 0`).
    pub fn new(
        provider: Arc<dyn CryptoProvider>,
        key_id: impl Into<String>,
        role: KeyRole,
        interval: Option<Duration>,
    ) -> Self {
        let interval = match interval {
            Some(d) if !d.is_zero() => d,
            _ => DEFAULT_PROBE_INTERVAL,
        };
        Self {
            key_id: key_id.into(),
            role,
            interval,
            budget: PROBE_BUDGET,
            state: Mutex::new(State::default()),
            in_flight: tokio::sync::Mutex::new(()),
            provider,
        }
    }

    /// The probe interval in use.
    pub fn interval(&self) -> Duration {
        self.interval
    }

    /// When the last probe finished (wall clock), if any.
    pub fn last_checked(&self) -> Option<SystemTime> {
        self.lock().last_checked
    }

    /// Why the last probe failed; `None` after a successful probe or before any.
    pub fn last_error(&self) -> Option<String> {
        self.last_failure().map(|f| f.message)
    }

    /// The last probe's failure with its classified kind; `None` after a successful probe or
    /// before any.
    pub fn last_failure(&self) -> Option<ProbeFailure> {
        self.lock()
            .result
            .as_ref()
            .and_then(|(_, c)| c.failure().cloned())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The cached result if it is still fresh.
    fn fresh(&self) -> Option<Connection> {
        match &self.lock().result {
            Some((at, c)) if at.elapsed() < self.interval => Some(c.clone()),
            _ => None,
        }
    }

    /// Whether the provider works, probing at most once per interval.
    pub async fn check(&self) -> bool {
        self.state().await.is_up()
    }

    /// The provider's state, probing at most once per interval.
    pub async fn state(&self) -> Connection {
        if let Some(c) = self.fresh() {
            return c;
        }
        let _guard = match self.in_flight.try_lock() {
            Ok(g) => g,
            Err(_) => {
                // A probe is running. Serve the previous result if there is one rather than
                // queueing behind the remote call (K-7); otherwise wait for the probe.
                if let Some((_, c)) = &self.lock().result {
                    return c.clone();
                }
                self.in_flight.lock().await
            }
        };
        // Another caller may have finished a probe while we waited.
        if let Some(c) = self.fresh() {
            return c;
        }
        let outcome = Connection::from_probe(
            probe_within(self.provider.as_ref(), &self.key_id, self.role, self.budget).await,
        );
        match &outcome {
            Connection::Up => {}
            Connection::Unreachable(f) => tracing::warn!(
                provider = self.provider.id(),
                key_id = %self.key_id,
                kind = ?f.kind,
                reason = %f.message,
                "KMS health probe failed: KMS unreachable"
            ),
            Connection::Refused(f) => tracing::warn!(
                event = "kms.key.refused",
                provider = self.provider.id(),
                key_id = %self.key_id,
                kind = ?f.kind,
                key_state = f.key_state(),
                reason = %f.message,
                "KMS health probe failed: the KMS refused the key"
            ),
        }
        let mut st = self.lock();
        st.result = Some((Instant::now(), outcome.clone()));
        st.last_checked = Some(SystemTime::now());
        outcome
    }

    /// The result as the seam's [`Health`].
    pub async fn health(&self) -> Health {
        match self.state().await.failure() {
            None => Health::Healthy,
            Some(f) => Health::Unhealthy(f.message.clone()),
        }
    }
}

#[async_trait]
impl ConnectionChecker for HealthChecker {
    async fn connection(&self) -> Connection {
        self.state().await
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};

    use lango_crypto::{
        SecretBytes,
        aead::ProviderTag,
        provider::{
            Operation, ProviderError, ProviderErrorKind, PublicKeyInfo, Signature,
            SignatureAlgorithm,
        },
    };

    use super::*;

    /// An in-process provider for checker tests: counts calls and fails on demand.
    #[derive(Default)]
    struct Probe {
        encrypts: AtomicU32,
        decrypts: AtomicU32,
        signs: AtomicU32,
        fail_encrypt: AtomicBool,
        fail_decrypt: AtomicBool,
        mismatch: AtomicBool,
        hang: AtomicBool,
        /// The kind of the injected failures (default `Unavailable`).
        fail_kind: Mutex<Option<ProviderErrorKind>>,
        /// Per-call latency, to make concurrent callers overlap.
        delay_ms: u64,
    }

    fn unavailable(op: Operation) -> ProviderError {
        ProviderError::new("fake", op, "k", ProviderErrorKind::Unavailable, "down")
    }

    impl Probe {
        fn failure(&self, op: Operation) -> ProviderError {
            match *self.fail_kind.lock().unwrap() {
                Some(kind) => ProviderError::new("fake", op, "k", kind, "injected"),
                None => unavailable(op),
            }
        }

        async fn pause(&self) {
            if self.hang.load(Ordering::SeqCst) {
                std::future::pending::<()>().await;
            }
            tokio::time::sleep(Duration::from_millis(self.delay_ms)).await;
        }
    }

    #[async_trait]
    impl CryptoProvider for Probe {
        fn id(&self) -> &str {
            "fake"
        }
        fn tag(&self) -> ProviderTag {
            ProviderTag::AwsKms
        }
        async fn sign(&self, _: &str, payload: &[u8]) -> Result<Signature, ProviderError> {
            self.signs.fetch_add(1, Ordering::SeqCst);
            self.pause().await;
            assert_eq!(payload, SIGN_PROBE_MESSAGE);
            Ok(Signature {
                algorithm: SignatureAlgorithm::EcdsaP256Sha256Raw,
                bytes: vec![1; 64],
            })
        }
        async fn public_key(&self, _: &str) -> Result<PublicKeyInfo, ProviderError> {
            Err(unavailable(Operation::PublicKey))
        }
        async fn encrypt(
            &self,
            _: &str,
            plaintext: &[u8],
            _: AeadContext<'_>,
        ) -> Result<Vec<u8>, ProviderError> {
            self.encrypts.fetch_add(1, Ordering::SeqCst);
            self.pause().await;
            if self.fail_encrypt.load(Ordering::SeqCst) {
                return Err(self.failure(Operation::Encrypt));
            }
            Ok(plaintext.iter().map(|b| b ^ 0x55).collect())
        }
        async fn decrypt(
            &self,
            _: &str,
            blob: &[u8],
            _: AeadContext<'_>,
        ) -> Result<SecretBytes, ProviderError> {
            self.decrypts.fetch_add(1, Ordering::SeqCst);
            if self.fail_decrypt.load(Ordering::SeqCst) {
                return Err(self.failure(Operation::Decrypt));
            }
            let mut out: Vec<u8> = blob.iter().map(|b| b ^ 0x55).collect();
            if self.mismatch.load(Ordering::SeqCst) {
                out[0] ^= 1;
            }
            Ok(SecretBytes::new(out))
        }
        async fn health(&self) -> Health {
            Health::Healthy
        }
    }

    fn checker(p: &Arc<Probe>, role: KeyRole, interval: Option<Duration>) -> HealthChecker {
        HealthChecker::new(p.clone(), "alias/main", role, interval)
    }

    #[tokio::test(start_paused = true)]
    async fn default_and_custom_interval() {
        let p = Arc::new(Probe::default());
        assert_eq!(
            checker(&p, KeyRole::Encryption, None).interval(),
            DEFAULT_PROBE_INTERVAL
        );
        assert_eq!(
            checker(&p, KeyRole::Encryption, Some(Duration::ZERO)).interval(),
            Duration::from_secs(30)
        );
        let c = checker(&p, KeyRole::Encryption, Some(Duration::from_secs(2)));
        assert_eq!(c.interval(), Duration::from_secs(2));
        assert!(c.check().await);
        tokio::time::advance(Duration::from_millis(1999)).await;
        assert!(c.check().await);
        assert_eq!(p.encrypts.load(Ordering::SeqCst), 1);
        tokio::time::advance(Duration::from_millis(1)).await;
        assert!(c.check().await);
        assert_eq!(p.encrypts.load(Ordering::SeqCst), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn success_is_connected_and_round_trips() {
        let p = Arc::new(Probe::default());
        let c = checker(&p, KeyRole::Encryption, None);
        assert!(c.last_checked().is_none());
        assert!(c.is_connected().await);
        assert_eq!(p.encrypts.load(Ordering::SeqCst), 1);
        assert_eq!(p.decrypts.load(Ordering::SeqCst), 1);
        assert_eq!(p.signs.load(Ordering::SeqCst), 0);
        assert!(c.last_checked().is_some());
        assert_eq!(c.last_error(), None);
        assert_eq!(c.health().await, Health::Healthy);
    }

    #[tokio::test(start_paused = true)]
    async fn encrypt_failure_is_down_without_decrypting() {
        let p = Arc::new(Probe::default());
        p.fail_encrypt.store(true, Ordering::SeqCst);
        let c = checker(&p, KeyRole::Encryption, None);
        assert!(!c.is_connected().await);
        assert_eq!(p.decrypts.load(Ordering::SeqCst), 0);
        assert!(
            c.last_error()
                .unwrap()
                .starts_with("encrypt probe failed: ")
        );
    }

    #[tokio::test(start_paused = true)]
    async fn decrypt_failure_is_down() {
        let p = Arc::new(Probe::default());
        p.fail_decrypt.store(true, Ordering::SeqCst);
        let c = checker(&p, KeyRole::Encryption, None);
        assert!(!c.is_connected().await);
        assert!(
            c.last_error()
                .unwrap()
                .starts_with("decrypt probe failed: ")
        );
    }

    #[tokio::test(start_paused = true)]
    async fn round_trip_mismatch_is_down() {
        let p = Arc::new(Probe::default());
        p.mismatch.store(true, Ordering::SeqCst);
        let c = checker(&p, KeyRole::Encryption, None);
        assert!(!c.is_connected().await);
        assert_eq!(
            c.last_error().as_deref(),
            Some("round-trip probe returned a different plaintext")
        );
        assert!(matches!(c.health().await, Health::Unhealthy(r) if r.contains("different")));
    }

    #[tokio::test(start_paused = true)]
    async fn results_are_cached_for_the_interval_both_up_and_down() {
        let p = Arc::new(Probe::default());
        let c = checker(&p, KeyRole::Encryption, None);
        assert!(c.check().await);
        p.fail_encrypt.store(true, Ordering::SeqCst);
        tokio::time::advance(Duration::from_secs(29)).await;
        assert!(c.check().await, "cached up");
        assert_eq!(p.encrypts.load(Ordering::SeqCst), 1);
        tokio::time::advance(Duration::from_secs(1)).await;
        assert!(!c.check().await, "re-probed after the interval");
        assert_eq!(p.encrypts.load(Ordering::SeqCst), 2);
        p.fail_encrypt.store(false, Ordering::SeqCst);
        tokio::time::advance(Duration::from_secs(29)).await;
        assert!(!c.check().await, "cached down");
        assert_eq!(p.encrypts.load(Ordering::SeqCst), 2);
        tokio::time::advance(Duration::from_secs(1)).await;
        assert!(c.check().await);
        assert_eq!(c.last_error(), None);
    }

    #[tokio::test(start_paused = true)]
    async fn twenty_concurrent_callers_cause_exactly_one_probe() {
        let p = Arc::new(Probe {
            delay_ms: 50,
            ..Probe::default()
        });
        let c = Arc::new(checker(&p, KeyRole::Encryption, None));
        let tasks: Vec<_> = (0..20)
            .map(|_| {
                let c = c.clone();
                tokio::spawn(async move { c.is_connected().await })
            })
            .collect();
        for t in tasks {
            assert!(t.await.unwrap());
        }
        assert_eq!(p.encrypts.load(Ordering::SeqCst), 1);
        assert_eq!(p.decrypts.load(Ordering::SeqCst), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn stale_result_is_served_while_a_refresh_runs() {
        let p = Arc::new(Probe {
            delay_ms: 1000,
            ..Probe::default()
        });
        let c = Arc::new(checker(&p, KeyRole::Encryption, None));
        assert!(c.check().await);
        tokio::time::advance(Duration::from_secs(31)).await;
        p.fail_encrypt.store(true, Ordering::SeqCst);
        let refresher = {
            let c = c.clone();
            tokio::spawn(async move { c.check().await })
        };
        tokio::task::yield_now().await;
        let start = Instant::now();
        assert!(c.check().await, "previous result while refreshing");
        assert_eq!(start.elapsed(), Duration::ZERO);
        assert!(!refresher.await.unwrap());
        assert_eq!(p.encrypts.load(Ordering::SeqCst), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn hanging_provider_is_down_after_five_seconds() {
        let p = Arc::new(Probe::default());
        p.hang.store(true, Ordering::SeqCst);
        let c = checker(&p, KeyRole::Encryption, None);
        let start = Instant::now();
        assert!(!c.is_connected().await);
        assert_eq!(start.elapsed(), Duration::from_secs(5));
        assert_eq!(
            c.last_error().as_deref(),
            Some("health probe timed out after 5s")
        );
    }

    /// Issue 17: the checker keeps the classified kind, so that "the KMS cannot be reached"
    /// (a fallback may serve) is told apart from "the KMS refused the key" (it may not).
    #[tokio::test(start_paused = true)]
    async fn failures_keep_their_kind_and_split_unreachable_from_refused() {
        use ProviderErrorKind as K;
        for (kind, state, transient) in [
            (K::Unavailable, "unknown (KMS unreachable)", true),
            (K::Throttled, "unknown (KMS throttled)", true),
            (K::KeyDisabled, "disabled", false),
            (K::AccessDenied, "access denied", false),
            (K::InvalidKey, "not found or invalid", false),
            (K::DecryptionFailed, "unusable (decryption failed)", false),
            (K::Other, "unusable", false),
        ] {
            for fail_decrypt in [false, true] {
                let p = Arc::new(Probe::default());
                *p.fail_kind.lock().unwrap() = Some(kind);
                if fail_decrypt {
                    p.fail_decrypt.store(true, Ordering::SeqCst);
                } else {
                    p.fail_encrypt.store(true, Ordering::SeqCst);
                }
                let c = checker(&p, KeyRole::Encryption, None);
                let conn = c.connection().await;
                assert!(!c.is_connected().await);
                let f = c.last_failure().unwrap();
                assert_eq!(f.kind, kind);
                assert_eq!(f.key_state(), state);
                assert_eq!(conn.key_state(), state);
                assert_eq!(conn.failure(), Some(&f));
                if transient {
                    assert_eq!(conn, Connection::Unreachable(f), "{kind:?}");
                } else {
                    assert_eq!(conn, Connection::Refused(f), "{kind:?}");
                }
            }
        }
        // A probe that runs out of time is an outage, not a refusal.
        let p = Arc::new(Probe::default());
        p.hang.store(true, Ordering::SeqCst);
        let c = checker(&p, KeyRole::Encryption, None);
        assert!(matches!(
            c.state().await,
            Connection::Unreachable(ProbeFailure {
                kind: ProviderErrorKind::Unavailable,
                ..
            })
        ));
        // A round trip that returns another plaintext is not.
        let p = Arc::new(Probe::default());
        p.mismatch.store(true, Ordering::SeqCst);
        let c = checker(&p, KeyRole::Encryption, None);
        assert!(matches!(c.state().await, Connection::Refused(_)));
        assert_eq!(Connection::Up.key_state(), "usable");
    }

    #[tokio::test(start_paused = true)]
    async fn signing_key_is_probed_with_sign() {
        let p = Arc::new(Probe::default());
        // An encryption probe would fail; the signing probe must not use it.
        p.fail_encrypt.store(true, Ordering::SeqCst);
        let c = checker(&p, KeyRole::Signing, None);
        assert!(c.is_connected().await);
        assert_eq!(p.signs.load(Ordering::SeqCst), 1);
        assert_eq!(p.encrypts.load(Ordering::SeqCst), 0);
    }
}
