//! Retry with capped, jittered exponential backoff and a deadline per attempt (spec §2.9, K-6).
//!
//! - `max_retries + 1` attempts at most (`0` disables retries); the first attempt always
//!   runs, even when the cancellation token has already fired;
//! - only transient errors ([`KmsErrorKind::Unavailable`], [`KmsErrorKind::Throttled`]) are
//!   retried, anything else is returned after one call;
//! - the wait after failed attempt `i` (from 0) is `d = min(max_delay, base · 2^i)`, computed
//!   without overflow for any `i`; with [`Jitter::Equal`] the wait is `d/2 + U(0, d/2)`, with
//!   [`Jitter::None`] exactly `d` (Go: 100, 200, 400 ms for the defaults);
//! - every attempt runs under its own deadline of `per_attempt_timeout`; an attempt that runs
//!   out becomes [`KmsErrorKind::Unavailable`] (`attempt timed out after …`) and is retried;
//! - cancellation while an attempt is in flight or while waiting returns
//!   [`KmsErrorKind::Cancelled`] with the last KMS error, if any, as its source (Go drops it).
//!
//! The random source of the jitter is injectable ([`RetryPolicy::with_rng`]), so tests are
//! deterministic; the default draws from the operating system.

use std::{
    fmt,
    future::Future,
    sync::{Arc, Mutex, PoisonError},
    time::Duration,
};

use tokio_util::sync::CancellationToken;

use crate::error::{KmsError, KmsErrorKind};

/// Delay before the first retry.
pub const DEFAULT_BASE_DELAY: Duration = Duration::from_millis(100);
/// Growth factor of the delay between retries.
pub const BACKOFF_FACTOR: u32 = 2;
/// Cap on a single delay.
pub const DEFAULT_MAX_DELAY: Duration = Duration::from_secs(5);
/// Default number of retries after the first attempt.
pub const DEFAULT_MAX_RETRIES: u32 = 3;
/// Default deadline of one attempt.
pub const DEFAULT_ATTEMPT_TIMEOUT: Duration = Duration::from_secs(5);

/// How the delay between attempts is randomised.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Jitter {
    /// "Equal jitter": half the delay fixed, half uniformly random.
    #[default]
    Equal,
    /// No randomisation (Go behaviour).
    None,
}

impl Jitter {
    /// The configuration spelling: `equal` or `none`.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Equal => "equal",
            Self::None => "none",
        }
    }
}

impl std::str::FromStr for Jitter {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "equal" => Ok(Self::Equal),
            "none" => Ok(Self::None),
            other => Err(format!(
                "invalid security.kms.retry.jitter: {other:?} (must be equal or none)"
            )),
        }
    }
}

/// A source of uniform random numbers in `[0, 1)`; values outside are clamped, NaN counts as 0.5.
pub type JitterSource = Box<dyn FnMut() -> f64 + Send>;

/// What a retried call is, for the errors the policy itself creates (timeouts, cancellation).
#[derive(Debug, Clone, Copy)]
pub struct Call<'a> {
    /// The backend's short name (`aws`, `gcp`, `azure`, `pkcs11`).
    pub provider: &'static str,
    /// The operation (`sign`, `encrypt`, `decrypt`, `public-key`, ...).
    pub op: &'static str,
    /// The resolved key id.
    pub key_id: &'a str,
}

impl Call<'_> {
    fn error(&self, kind: KmsErrorKind, message: impl Into<String>) -> KmsError {
        KmsError::new(self.provider, self.op, self.key_id, kind, message)
    }
}

/// The random source of the jitter. Cheap to clone; clones share the source.
#[derive(Clone)]
pub struct JitterRng(Arc<Mutex<JitterSource>>);

impl JitterRng {
    /// A source drawing from `f` (tests use a fixed sequence).
    pub fn new(f: impl FnMut() -> f64 + Send + 'static) -> Self {
        Self(Arc::new(Mutex::new(Box::new(f))))
    }

    /// A uniform draw from the operating system's CSPRNG.
    pub fn os() -> Self {
        Self::new(os_uniform)
    }

    /// The next draw, clamped into `[0, 1]` (NaN counts as 0.5).
    fn draw(&self) -> f64 {
        let r = (self.0.lock().unwrap_or_else(PoisonError::into_inner))();
        if r.is_nan() { 0.5 } else { r.clamp(0.0, 1.0) }
    }
}

impl Default for JitterRng {
    fn default() -> Self {
        Self::os()
    }
}

impl fmt::Debug for JitterRng {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("JitterRng")
    }
}

/// The retry policy. Cheap to clone; clones share the random source.
#[derive(Debug, Clone)]
pub struct RetryPolicy {
    /// Retries after the first attempt (`0` = none).
    pub max_retries: u32,
    /// Delay before the first retry.
    pub base: Duration,
    /// Cap on a single delay.
    pub max_delay: Duration,
    /// Randomisation of the delays.
    pub jitter: Jitter,
    /// Deadline of each attempt.
    pub per_attempt_timeout: Duration,
    /// The random source of [`Jitter::Equal`].
    pub rng: JitterRng,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_retries: DEFAULT_MAX_RETRIES,
            base: DEFAULT_BASE_DELAY,
            max_delay: DEFAULT_MAX_DELAY,
            jitter: Jitter::Equal,
            per_attempt_timeout: DEFAULT_ATTEMPT_TIMEOUT,
            rng: JitterRng::os(),
        }
    }
}

/// A uniform draw in `[0, 1)` from the operating system's CSPRNG (0.5 if it fails: the jitter
/// only spreads load, it protects nothing).
fn os_uniform() -> f64 {
    match lango_crypto::random::bytes::<8>() {
        // 53 random bits scaled into [0, 1): exact in an f64.
        Ok(b) => (u64::from_be_bytes(b) >> 11) as f64 / (1u64 << 53) as f64,
        Err(_) => 0.5,
    }
}

impl RetryPolicy {
    /// Replaces the random source of the jitter (tests use a fixed sequence).
    #[must_use]
    pub fn with_rng(mut self, rng: impl FnMut() -> f64 + Send + 'static) -> Self {
        self.rng = JitterRng::new(rng);
        self
    }

    /// The un-jittered delay after failed attempt `attempt` (0-based):
    /// `min(max_delay, base · 2^attempt)`, saturating instead of overflowing.
    pub fn delay_for(&self, attempt: u32) -> Duration {
        BACKOFF_FACTOR
            .checked_pow(attempt)
            .and_then(|m| self.base.checked_mul(m))
            .unwrap_or(Duration::MAX)
            .min(self.max_delay)
    }

    /// Applies the jitter to a delay `d`: `d` itself, or a value in `[d/2, d]`.
    pub fn jittered(&self, d: Duration) -> Duration {
        match self.jitter {
            Jitter::None => d,
            Jitter::Equal => {
                let r = self.rng.draw();
                let half = d / 2;
                let extra = Duration::try_from_secs_f64(half.as_secs_f64() * r)
                    .unwrap_or(half)
                    .min(half);
                // d - half = ceil(d / 2): the result never leaves [d/2, d].
                d - half + extra
            }
        }
    }

    /// Runs `op` until it succeeds, fails with a non-transient error, the attempts are used up,
    /// or `cancel` fires. See the module documentation for the exact rules.
    pub async fn run<T, F, Fut>(
        &self,
        cancel: &CancellationToken,
        call: Call<'_>,
        mut op: F,
    ) -> Result<T, KmsError>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, KmsError>>,
    {
        let mut last: Option<KmsError> = None;
        let mut attempt: u32 = 0;
        loop {
            let bounded = tokio::time::timeout(self.per_attempt_timeout, op());
            let outcome = tokio::select! {
                biased;
                r = bounded => r,
                () = cancel.cancelled() => return Err(cancelled(&call, last)),
            };
            let err = match outcome {
                Ok(Ok(v)) => return Ok(v),
                Ok(Err(e)) => e,
                Err(_) => call.error(
                    KmsErrorKind::Unavailable,
                    format!("attempt timed out after {:?}", self.per_attempt_timeout),
                ),
            };
            if !err.is_transient() || attempt >= self.max_retries {
                return Err(err);
            }
            let delay = self.jittered(self.delay_for(attempt));
            attempt += 1;
            tracing::debug!(
                provider = call.provider,
                op = call.op,
                key_id = call.key_id,
                attempt,
                delay_ms = u64::try_from(delay.as_millis()).unwrap_or(u64::MAX),
                kind = ?err.kind,
                "transient KMS error, retrying"
            );
            tokio::select! {
                biased;
                () = cancel.cancelled() => return Err(cancelled(&call, Some(err))),
                () = tokio::time::sleep(delay) => {}
            }
            last = Some(err);
        }
    }
}

fn cancelled(call: &Call<'_>, last: Option<KmsError>) -> KmsError {
    let e = call.error(KmsErrorKind::Cancelled, "");
    match last {
        Some(l) => e.with_source(l),
        None => e,
    }
}

#[cfg(test)]
mod tests {
    use std::{
        error::Error as _,
        sync::{
            Arc, Mutex,
            atomic::{AtomicU32, Ordering},
        },
    };

    use tokio::time::Instant;

    use super::*;

    const CALL: Call<'static> = Call {
        provider: "aws",
        op: "sign",
        key_id: "k1",
    };

    fn policy(max_retries: u32, jitter: Jitter) -> RetryPolicy {
        RetryPolicy {
            max_retries,
            jitter,
            ..RetryPolicy::default()
        }
    }

    fn err(kind: KmsErrorKind, n: u32) -> KmsError {
        KmsError::new("aws", "sign", "k1", kind, format!("attempt {n}"))
    }

    /// Runs `p` with an op that fails with `kind` on the first `failures` calls, then succeeds.
    /// Returns the result, the number of calls and the virtual times of the calls.
    async fn run_failing(
        p: &RetryPolicy,
        cancel: &CancellationToken,
        kind: KmsErrorKind,
        failures: u32,
    ) -> (Result<u32, KmsError>, u32, Vec<Duration>) {
        let start = Instant::now();
        let calls = AtomicU32::new(0);
        let times = Mutex::new(Vec::new());
        let r = p
            .run(cancel, CALL, || {
                let n = calls.fetch_add(1, Ordering::SeqCst) + 1;
                times.lock().unwrap().push(start.elapsed());
                async move {
                    if n <= failures {
                        Err(err(kind, n))
                    } else {
                        Ok(n)
                    }
                }
            })
            .await;
        (r, calls.load(Ordering::SeqCst), times.into_inner().unwrap())
    }

    fn gaps(times: &[Duration]) -> Vec<Duration> {
        times.windows(2).map(|w| w[1] - w[0]).collect()
    }

    #[tokio::test(start_paused = true)]
    async fn immediate_success_is_one_call() {
        let (r, calls, _) = run_failing(
            &RetryPolicy::default(),
            &CancellationToken::new(),
            KmsErrorKind::Unavailable,
            0,
        )
        .await;
        assert_eq!(r.unwrap(), 1);
        assert_eq!(calls, 1);
    }

    #[tokio::test(start_paused = true)]
    async fn transient_twice_then_success_is_three_calls() {
        let start = Instant::now();
        let (r, calls, times) = run_failing(
            &policy(3, Jitter::None),
            &CancellationToken::new(),
            KmsErrorKind::Throttled,
            2,
        )
        .await;
        assert_eq!(r.unwrap(), 3);
        assert_eq!(calls, 3);
        assert_eq!(
            gaps(&times),
            [Duration::from_millis(100), Duration::from_millis(200)]
        );
        assert_eq!(start.elapsed(), Duration::from_millis(300));
    }

    #[tokio::test(start_paused = true)]
    async fn non_transient_is_one_call() {
        for kind in [
            KmsErrorKind::AccessDenied,
            KmsErrorKind::KeyDisabled,
            KmsErrorKind::InvalidKey,
            KmsErrorKind::DecryptionFailed,
            KmsErrorKind::Pkcs11Session,
            KmsErrorKind::Other,
        ] {
            let start = Instant::now();
            let (r, calls, _) =
                run_failing(&policy(3, Jitter::None), &CancellationToken::new(), kind, 9).await;
            assert_eq!(r.unwrap_err().kind, kind);
            assert_eq!(calls, 1, "{kind:?}");
            assert_eq!(start.elapsed(), Duration::ZERO);
        }
    }

    #[tokio::test(start_paused = true)]
    async fn transient_forever_returns_the_last_error_after_max_retries_plus_one_calls() {
        let (r, calls, _) = run_failing(
            &policy(2, Jitter::None),
            &CancellationToken::new(),
            KmsErrorKind::Unavailable,
            u32::MAX,
        )
        .await;
        let e = r.unwrap_err();
        assert_eq!(calls, 3);
        assert_eq!(e.kind, KmsErrorKind::Unavailable);
        assert_eq!(e.message, "attempt 3");
    }

    #[tokio::test(start_paused = true)]
    async fn zero_retries_means_one_attempt() {
        let (r, calls, _) = run_failing(
            &policy(0, Jitter::None),
            &CancellationToken::new(),
            KmsErrorKind::Unavailable,
            u32::MAX,
        )
        .await;
        assert_eq!(r.unwrap_err().message, "attempt 1");
        assert_eq!(calls, 1);
    }

    #[tokio::test(start_paused = true)]
    async fn delays_without_jitter_are_exactly_100_200_400_ms() {
        let start = Instant::now();
        let (_, calls, times) = run_failing(
            &policy(3, Jitter::None),
            &CancellationToken::new(),
            KmsErrorKind::Unavailable,
            u32::MAX,
        )
        .await;
        assert_eq!(calls, 4);
        assert_eq!(
            gaps(&times),
            [100, 200, 400].map(Duration::from_millis).to_vec()
        );
        assert_eq!(start.elapsed(), Duration::from_millis(700));
    }

    #[tokio::test(start_paused = true)]
    async fn equal_jitter_keeps_each_delay_within_half_and_full() {
        // Fixed draws, including out-of-range ones that must be clamped.
        let draws = Arc::new(Mutex::new(vec![0.0, 0.999_999, 0.5, f64::NAN, 7.0, -3.0]));
        let d2 = draws.clone();
        let p = policy(6, Jitter::Equal).with_rng(move || d2.lock().unwrap().remove(0));
        let (_, calls, times) = run_failing(
            &p,
            &CancellationToken::new(),
            KmsErrorKind::Unavailable,
            u32::MAX,
        )
        .await;
        assert_eq!(calls, 7);
        assert!(draws.lock().unwrap().is_empty());
        let g = gaps(&times);
        let ms = |v: u64| Duration::from_millis(v);
        // d = 100, 200, 400, 800, 1600, 3200 ms.
        assert_eq!(g[0], ms(50));
        assert!(g[1] > ms(199) && g[1] <= ms(200), "{:?}", g[1]);
        assert_eq!(g[2], ms(300));
        assert_eq!(g[3], ms(600)); // NaN counts as 0.5
        assert_eq!(g[4], ms(1600)); // 7.0 clamps to 1
        assert_eq!(g[5], ms(1600)); // -3.0 clamps to 0

        // A pseudo-random sequence: every delay lies in [d/2, d].
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
        let p = policy(12, Jitter::Equal).with_rng(move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 11) as f64 / (1u64 << 53) as f64
        });
        let (_, _, times) = run_failing(
            &p,
            &CancellationToken::new(),
            KmsErrorKind::Throttled,
            u32::MAX,
        )
        .await;
        for (i, gap) in gaps(&times).into_iter().enumerate() {
            let d = p.delay_for(i as u32);
            assert!(
                gap >= d / 2 && gap <= d,
                "retry {i}: {gap:?} not in [{:?}, {d:?}]",
                d / 2
            );
        }
    }

    #[tokio::test(start_paused = true)]
    async fn cap_holds_for_forty_retries_without_overflow() {
        let p = policy(40, Jitter::None);
        assert_eq!(p.delay_for(5), Duration::from_millis(3200));
        assert_eq!(p.delay_for(6), Duration::from_secs(5));
        assert_eq!(p.delay_for(40), Duration::from_secs(5));
        assert_eq!(p.delay_for(u32::MAX), Duration::from_secs(5));
        let start = Instant::now();
        let (_, calls, times) = run_failing(
            &p,
            &CancellationToken::new(),
            KmsErrorKind::Unavailable,
            u32::MAX,
        )
        .await;
        assert_eq!(calls, 41);
        assert!(gaps(&times).iter().all(|g| *g <= Duration::from_secs(5)));
        // 100+200+400+800+1600+3200 ms, then 34 waits of 5 s.
        assert_eq!(start.elapsed(), Duration::from_millis(6300 + 34 * 5000));
    }

    #[tokio::test(start_paused = true)]
    async fn cancellation_during_a_wait_returns_cancelled_with_the_last_error() {
        let cancel = CancellationToken::new();
        let c2 = cancel.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(150)).await;
            c2.cancel();
        });
        let start = Instant::now();
        let (r, calls, _) = run_failing(
            &policy(3, Jitter::None),
            &cancel,
            KmsErrorKind::Throttled,
            u32::MAX,
        )
        .await;
        let e = r.unwrap_err();
        assert_eq!(e.kind, KmsErrorKind::Cancelled);
        assert_eq!(calls, 2);
        assert_eq!(start.elapsed(), Duration::from_millis(150));
        let src = e.source().unwrap().downcast_ref::<KmsError>().unwrap();
        assert_eq!(src.kind, KmsErrorKind::Throttled);
        assert_eq!(src.message, "attempt 2");
        assert_eq!(e.to_string(), "kms aws sign (key=k1): operation cancelled");
    }

    #[tokio::test(start_paused = true)]
    async fn already_cancelled_makes_at_most_one_call() {
        let cancel = CancellationToken::new();
        cancel.cancel();
        // A failing first attempt still runs, then the wait is cancelled.
        let (r, calls, _) = run_failing(
            &policy(3, Jitter::None),
            &cancel,
            KmsErrorKind::Unavailable,
            9,
        )
        .await;
        let e = r.unwrap_err();
        assert_eq!((e.kind, calls), (KmsErrorKind::Cancelled, 1));
        assert!(e.source().is_some());
        // A succeeding first attempt returns its value.
        let (r, calls, _) = run_failing(
            &policy(3, Jitter::None),
            &cancel,
            KmsErrorKind::Unavailable,
            0,
        )
        .await;
        assert_eq!((r.unwrap(), calls), (1, 1));
        // A hanging first attempt is abandoned at once.
        let calls = AtomicU32::new(0);
        let r: Result<(), _> = policy(3, Jitter::None)
            .run(&cancel, CALL, || {
                calls.fetch_add(1, Ordering::SeqCst);
                std::future::pending()
            })
            .await;
        let e = r.unwrap_err();
        assert_eq!(
            (e.kind, calls.load(Ordering::SeqCst)),
            (KmsErrorKind::Cancelled, 1)
        );
        assert!(e.source().is_none());
    }

    #[tokio::test(start_paused = true)]
    async fn each_attempt_gets_its_own_deadline_and_a_timeout_is_retried() {
        let p = RetryPolicy {
            max_retries: 1,
            jitter: Jitter::None,
            per_attempt_timeout: Duration::from_secs(5),
            ..RetryPolicy::default()
        };
        let calls = AtomicU32::new(0);
        let start = Instant::now();
        let r: Result<(), _> = p
            .run(&CancellationToken::new(), CALL, || {
                calls.fetch_add(1, Ordering::SeqCst);
                std::future::pending()
            })
            .await;
        let e = r.unwrap_err();
        assert_eq!(calls.load(Ordering::SeqCst), 2);
        assert_eq!(e.kind, KmsErrorKind::Unavailable);
        assert_eq!(
            e.to_string(),
            "kms aws sign (key=k1): KMS service unavailable: attempt timed out after 5s"
        );
        assert_eq!(start.elapsed(), Duration::from_millis(10_100));
    }

    #[test]
    fn jitter_parses_its_two_spellings() {
        assert_eq!("equal".parse::<Jitter>(), Ok(Jitter::Equal));
        assert_eq!("none".parse::<Jitter>(), Ok(Jitter::None));
        assert!("full".parse::<Jitter>().is_err());
        assert_eq!(Jitter::default(), Jitter::Equal);
    }

    #[test]
    fn os_uniform_stays_in_the_unit_interval() {
        for _ in 0..1000 {
            let r = os_uniform();
            assert!((0.0..1.0).contains(&r));
        }
    }
}
