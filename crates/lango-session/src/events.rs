//! The security event handler (spec §3.10; protocol spec §3.8): consecutive tool failures
//! and reputation drops turn into invalidation.

use std::fmt;

use crate::SessionStore;
use crate::config::{SessionConfig, effective_max_failures};
use crate::invalidation::InvalidationReason;
use crate::store::FailureStep;

/// Minimum trust score used when the configured one is not positive (E-1, R-7.7).
pub const DEFAULT_MIN_TRUST_SCORE: f64 = 0.3;

/// What [`SecurityEventHandler::record_failure`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureOutcome {
    /// The DID has no live session; nothing was counted. (A failure that arrives after the
    /// session ended belongs to a request that raced with the invalidation.)
    NoSession,
    /// The failure was counted; the session is still valid.
    Counted {
        /// Consecutive failures so far for the current session.
        failures: u32,
    },
    /// The threshold was reached: the session was invalidated with `repeated_failures`
    /// and the counter deleted.
    Invalidated {
        /// The count that reached the threshold.
        failures: u32,
    },
}

/// Turns tool outcomes and reputation changes into session invalidation.
///
/// - [`record_failure`](Self::record_failure) / [`record_success`](Self::record_success):
///   a per-DID count of consecutive tool-execution failures (E-2, E-3, R-8.1). At the
///   threshold (`sessionMaxFailures`, ≤ 0 means 5) the session is invalidated with
///   `repeated_failures` and the count deleted. Increment, check, invalidation and reset are
///   one atomic step, so concurrent failures invalidate exactly once. A success deletes the
///   count. The counts are kept for at most
///   [`FAILURE_TRACKER_CAPACITY`](crate::FAILURE_TRACKER_CAPACITY) DIDs, least recently
///   updated evicted (E-7). Counts belong to one session: a new session starts from zero.
/// - [`on_reputation_change`](Self::on_reputation_change): a score strictly below the
///   minimum trust score invalidates with `reputation_drop` (E-4, R-7.8).
///
/// Both automatic invalidations start the revoke cool-down (V-9, R-8.4) and log a warning
/// with the stable field `event = "session_auto_invalidated"` and the reference message.
///
/// Cheap to clone; clones share the store.
#[derive(Clone)]
pub struct SecurityEventHandler {
    store: SessionStore,
    max_failures: u32,
    min_trust_score: f64,
}

impl SecurityEventHandler {
    /// A handler over `store`. `max_failures` ≤ 0 means 5 (values above 1000 are capped);
    /// a `min_trust_score` that is not positive (or NaN) means 0.3 (E-1).
    pub fn new(store: SessionStore, max_failures: i64, min_trust_score: f64) -> Self {
        let min_trust_score = if min_trust_score > 0.0 {
            min_trust_score
        } else {
            DEFAULT_MIN_TRUST_SCORE
        };
        Self {
            store,
            max_failures: effective_max_failures(max_failures),
            min_trust_score,
        }
    }

    /// A handler with the threshold from `p2p.sessionMaxFailures` and the given
    /// `p2p.minTrustScore`.
    pub fn from_config(store: SessionStore, config: &SessionConfig, min_trust_score: f64) -> Self {
        Self::new(store, config.session_max_failures, min_trust_score)
    }

    /// The failure threshold in effect.
    pub fn max_failures(&self) -> u32 {
        self.max_failures
    }

    /// The minimum trust score in effect.
    pub fn min_trust_score(&self) -> f64 {
        self.min_trust_score
    }

    /// The store this handler invalidates in.
    pub fn store(&self) -> &SessionStore {
        &self.store
    }

    /// Records a tool-execution failure of `peer_did` (only executor errors count, E-5).
    pub fn record_failure(&self, peer_did: &str) -> FailureOutcome {
        match self.store.record_failure_inner(peer_did, self.max_failures) {
            FailureStep::NoSession => FailureOutcome::NoSession,
            FailureStep::Counted(failures) => FailureOutcome::Counted { failures },
            FailureStep::Invalidated(failures, pending) => {
                tracing::warn!(
                    event = "session_auto_invalidated",
                    reason = InvalidationReason::RepeatedFailures.as_str(),
                    peer_did = %peer_did,
                    failures,
                    "auto-invalidating session: repeated failures"
                );
                self.store.announce(pending);
                FailureOutcome::Invalidated { failures }
            }
        }
    }

    /// Records a successful tool execution of `peer_did`: its failure count is deleted.
    pub fn record_success(&self, peer_did: &str) {
        self.store.record_success_inner(peer_did);
    }

    /// The reputation store's change callback (E-4, E-6): if `score` is strictly below the
    /// minimum trust score, invalidates `peer_did` with `reputation_drop` and returns true.
    /// A score equal to the threshold keeps the session. A NaN score is treated as a drop
    /// (fail closed). As with every invalidation, a history record is written even when the
    /// DID has no session.
    pub fn on_reputation_change(&self, peer_did: &str, score: f64) -> bool {
        let drop_below = score.is_nan() || score < self.min_trust_score;
        if !drop_below {
            return false;
        }
        tracing::warn!(
            event = "session_auto_invalidated",
            reason = InvalidationReason::ReputationDrop.as_str(),
            peer_did = %peer_did,
            score,
            threshold = self.min_trust_score,
            "auto-invalidating session: reputation drop"
        );
        self.store
            .invalidate(peer_did, InvalidationReason::ReputationDrop);
        true
    }

    /// Consecutive failures counted against `peer_did`'s current session.
    pub fn failure_count(&self, peer_did: &str) -> u32 {
        self.store.failure_count(peer_did)
    }

    /// Number of DIDs with a failure count (at most
    /// [`FAILURE_TRACKER_CAPACITY`](crate::FAILURE_TRACKER_CAPACITY)).
    pub fn tracked_peers(&self) -> usize {
        self.store.tracked_failures()
    }
}

impl fmt::Debug for SecurityEventHandler {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SecurityEventHandler")
            .field("max_failures", &self.max_failures)
            .field("min_trust_score", &self.min_trust_score)
            .finish_non_exhaustive()
    }
}
