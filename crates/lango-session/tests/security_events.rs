//! Security event handler: spec §3.10, §7 "Security events"; protocol spec,
//! T-D5, T-D7, T-D8.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::sync::{Arc, Barrier};
use std::thread;
use std::time::Duration;

use common::*;
use lango_session::{
    DEFAULT_MIN_TRUST_SCORE, Error, FAILURE_TRACKER_CAPACITY, FailureOutcome, InvalidationReason,
    ManualClock, SecurityEventHandler, SessionConfig, SessionStore,
};

fn handler(max_failures: i64) -> (SecurityEventHandler, SessionStore, Arc<ManualClock>) {
    let (store, clock) = store();
    (
        SecurityEventHandler::new(store.clone(), max_failures, 0.3),
        store,
        clock,
    )
}

#[test]
fn threshold_3_third_failure_invalidates_with_one_record() {
    let (h, store, _) = handler(3);
    let issued = store.create(legacy(&did(1), PEER_A)).unwrap();
    assert_eq!(
        h.record_failure(&did(1)),
        FailureOutcome::Counted { failures: 1 }
    );
    assert_eq!(
        h.record_failure(&did(1)),
        FailureOutcome::Counted { failures: 2 }
    );
    assert!(store.validate(&did(1), issued.token.expose()));
    assert_eq!(
        h.record_failure(&did(1)),
        FailureOutcome::Invalidated { failures: 3 }
    );
    assert!(!store.validate(&did(1), issued.token.expose()));
    let history = store.history();
    assert_eq!(history.len(), 1);
    assert_eq!(history[0].reason, InvalidationReason::RepeatedFailures);
    assert_eq!(history[0].peer_did, did(1));
    // The counter was deleted.
    assert_eq!(h.failure_count(&did(1)), 0);
    assert_eq!(h.tracked_peers(), 0);
}

/// E-3: after F, F, S, F, F the session is still valid, and the next F invalidates.
#[test]
fn success_resets_the_count() {
    let (h, store, _) = handler(3);
    store.create(legacy(&did(1), PEER_A)).unwrap();
    h.record_failure(&did(1));
    h.record_failure(&did(1));
    h.record_success(&did(1));
    assert_eq!(h.failure_count(&did(1)), 0);
    h.record_failure(&did(1));
    assert_eq!(
        h.record_failure(&did(1)),
        FailureOutcome::Counted { failures: 2 }
    );
    assert!(store.get(&did(1)).is_some());
    assert_eq!(
        h.record_failure(&did(1)),
        FailureOutcome::Invalidated { failures: 3 }
    );
    assert!(store.get(&did(1)).is_none());
}

/// T-D7: 4 failures then a success reset; 5 failures invalidate and reset; the threshold
/// comes from the configuration, ≤ 0 meaning 5.
#[test]
fn default_threshold_is_5_and_comes_from_config() {
    for raw in [0, -3, 5] {
        let (store, _) = store_with(&SessionConfig {
            session_max_failures: raw,
            ..config()
        });
        let h = SecurityEventHandler::from_config(
            store.clone(),
            &SessionConfig {
                session_max_failures: raw,
                ..config()
            },
            0.3,
        );
        assert_eq!(h.max_failures(), 5, "raw {raw}");
        store.create(legacy(&did(1), PEER_A)).unwrap();
        for _ in 0..4 {
            h.record_failure(&did(1));
        }
        h.record_success(&did(1));
        for _ in 0..4 {
            assert!(matches!(
                h.record_failure(&did(1)),
                FailureOutcome::Counted { .. }
            ));
        }
        assert!(store.get(&did(1)).is_some());
        assert_eq!(
            h.record_failure(&did(1)),
            FailureOutcome::Invalidated { failures: 5 }
        );
        assert_eq!(h.failure_count(&did(1)), 0);
    }
    let (store, _) = store();
    let h = SecurityEventHandler::from_config(
        store,
        &SessionConfig {
            session_max_failures: 2,
            ..config()
        },
        0.3,
    );
    assert_eq!(h.max_failures(), 2);
}

/// A failure for a DID without a live session is not counted, and counts of an earlier
/// session do not carry over to the next one.
#[test]
fn counts_belong_to_the_current_session() {
    let (h, store, _) = handler(3);
    assert_eq!(h.record_failure(&did(1)), FailureOutcome::NoSession);
    assert!(store.history().is_empty());
    store.create(legacy(&did(1), PEER_A)).unwrap();
    h.record_failure(&did(1));
    h.record_failure(&did(1));
    // A new handshake replaces the session: the count starts again.
    store.create(legacy(&did(1), PEER_A)).unwrap();
    assert_eq!(h.failure_count(&did(1)), 0);
    assert_eq!(
        h.record_failure(&did(1)),
        FailureOutcome::Counted { failures: 1 }
    );
}

/// E-4 / T-D5: below the threshold invalidates; equal or above keeps.
#[test]
fn reputation_drop() {
    let (h, store, _) = handler(5);
    store.create(legacy(&did(1), PEER_A)).unwrap();
    assert!(!h.on_reputation_change(&did(1), 0.5));
    assert!(
        !h.on_reputation_change(&did(1), 0.3),
        "equal to the threshold keeps it"
    );
    assert!(store.get(&did(1)).is_some());
    assert!(store.history().is_empty());
    assert!(h.on_reputation_change(&did(1), 0.2));
    assert!(store.get(&did(1)).is_none());
    let history = store.history();
    assert_eq!(history.len(), 1);
    assert_eq!(history[0].reason, InvalidationReason::ReputationDrop);
}

/// T-D5: a new peer whose first exchange is a failure scores 0 and is invalidated at once;
/// the record is written even without a session.
#[test]
fn first_failure_score_zero_invalidates_at_once() {
    let (h, store, _) = handler(5);
    store.create(legacy(&did(1), PEER_A)).unwrap();
    assert!(h.on_reputation_change(&did(1), 0.0));
    assert!(store.get(&did(1)).is_none());
    assert!(h.on_reputation_change(&did(2), 0.0));
    assert_eq!(store.history().len(), 2);
    assert_eq!(store.history()[1].peer_did, did(2));
}

#[test]
fn nan_score_fails_closed_and_bad_threshold_means_default() {
    let (store, _) = store();
    let h = SecurityEventHandler::new(store.clone(), 5, 0.0);
    assert_eq!(h.min_trust_score(), DEFAULT_MIN_TRUST_SCORE);
    let h = SecurityEventHandler::new(store.clone(), 5, f64::NAN);
    assert_eq!(h.min_trust_score(), 0.3);
    store.create(legacy(&did(1), PEER_A)).unwrap();
    assert!(h.on_reputation_change(&did(1), f64::NAN));
    assert!(store.get(&did(1)).is_none());
}

/// E-2 (deviation): 10 concurrent failures with threshold 5 give exactly one invalidation
/// and one record. Repeated over many rounds to give races a chance.
#[test]
fn concurrent_failures_invalidate_exactly_once() {
    for round in 0..50 {
        let (h, store, _) = handler(5);
        store.create(legacy(&did(1), PEER_A)).unwrap();
        let barrier = Arc::new(Barrier::new(10));
        let outcomes: Vec<FailureOutcome> = (0..10)
            .map(|_| {
                let h = h.clone();
                let barrier = barrier.clone();
                thread::spawn(move || {
                    barrier.wait();
                    h.record_failure(&did(1))
                })
            })
            .collect::<Vec<_>>()
            .into_iter()
            .map(|t| t.join().unwrap())
            .collect();
        let invalidations = outcomes
            .iter()
            .filter(|o| matches!(o, FailureOutcome::Invalidated { .. }))
            .count();
        assert_eq!(invalidations, 1, "round {round}: {outcomes:?}");
        assert_eq!(store.history().len(), 1, "round {round}");
        let counted = outcomes
            .iter()
            .filter(|o| matches!(o, FailureOutcome::Counted { .. }))
            .count();
        assert_eq!(counted, 4, "round {round}: {outcomes:?}");
    }
}

/// E-7 / R-8.2: the counter map is bounded to 10 000 DIDs, least recently updated evicted.
#[test]
fn failure_tracker_is_bounded_lru() {
    let extra = 25;
    let clock = Arc::new(ManualClock::at_unix(T0));
    let store = SessionStore::builder(&config())
        .clock(clock)
        .max_sessions(FAILURE_TRACKER_CAPACITY + extra)
        .max_sessions_per_peer(usize::MAX)
        .outgoing_reserve(0)
        .build()
        .unwrap();
    let h = SecurityEventHandler::new(store.clone(), 5, 0.3);
    for i in 0..FAILURE_TRACKER_CAPACITY + extra {
        store.create(legacy(&did(i), PEER_A)).unwrap();
    }
    // did(0) is touched first and again once the tracker is full, so it is recently used.
    for i in 0..FAILURE_TRACKER_CAPACITY + extra {
        h.record_failure(&did(i));
        if i == FAILURE_TRACKER_CAPACITY - 1 {
            h.record_failure(&did(0));
        }
    }
    assert_eq!(FAILURE_TRACKER_CAPACITY, 10_000);
    assert_eq!(h.tracked_peers(), FAILURE_TRACKER_CAPACITY);
    assert_eq!(
        h.failure_count(&did(0)),
        2,
        "recently updated entry was kept"
    );
    assert_eq!(
        h.failure_count(&did(1)),
        0,
        "least recently updated entry was evicted"
    );
    assert_eq!(
        h.failure_count(&did(FAILURE_TRACKER_CAPACITY + extra - 1)),
        1
    );
}

/// V-9 / T-D8: after either automatic invalidation, a new session for that DID is refused
/// until the cool-down ends.
#[test]
fn automatic_invalidations_start_the_cooldown() {
    let (h, store, clock) = handler(2);
    store.create(legacy(&did(1), PEER_A)).unwrap();
    h.record_failure(&did(1));
    h.record_failure(&did(1));
    assert!(matches!(
        store.may_handshake(&did(1), PEER_B),
        Err(Error::Cooldown { .. })
    ));
    assert!(matches!(
        store.create(legacy(&did(1), PEER_B)).map(|i| i.session),
        Err(Error::Cooldown { .. })
    ));

    store.create(legacy(&did(2), PEER_B)).unwrap();
    h.on_reputation_change(&did(2), 0.1);
    assert!(matches!(
        store.may_handshake(&did(2), "12D3KooWother"),
        Err(Error::Cooldown { .. })
    ));

    clock.advance(COOLDOWN);
    store.create(legacy(&did(1), PEER_A)).unwrap();
    store.create(legacy(&did(2), PEER_B)).unwrap();
    clock.advance(Duration::from_secs(1));
    assert_eq!(store.len(), 2);
}

/// A callback that reports failures back into the handler (re-entrancy through the
/// handler) does not deadlock.
#[test]
fn callback_reentering_the_handler_does_not_deadlock() {
    let (h, store, _) = handler(1);
    let h2 = h.clone();
    store.add_invalidation_callback(move |e| {
        let _ = h2.record_failure(&e.record.peer_did);
        h2.record_success(&e.record.peer_did);
        let _ = h2.on_reputation_change("did:lango:other", 1.0);
    });
    store.create(legacy(&did(1), PEER_A)).unwrap();
    let out = within_deadline("handler re-entrancy", move || h.record_failure(&did(1)));
    assert_eq!(out, FailureOutcome::Invalidated { failures: 1 });
}
