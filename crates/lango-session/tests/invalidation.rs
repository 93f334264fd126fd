//! Invalidation, history, callbacks, events and cool-down: spec §3.9, §7 "Session store",
//! protocol spec, T-D8, T-D9.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;
use lango_session::{Error, InvalidationEvent, InvalidationReason, SessionConfig, SessionStore};

fn recorder(store: &SessionStore) -> Arc<Mutex<Vec<InvalidationEvent>>> {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let s = seen.clone();
    store.add_invalidation_callback(move |e| s.lock().unwrap().push(e.clone()));
    seen
}

#[test]
fn invalidate_existing_session() {
    let (store, clock) = store();
    let seen = recorder(&store);
    let issued = store.create(legacy(&did(1), PEER_A)).unwrap();
    clock.advance(Duration::from_secs(7));
    assert!(store.invalidate(&did(1), InvalidationReason::ManualRevoke));
    assert!(store.list().is_empty());
    let h = store.history();
    assert_eq!(h.len(), 1);
    assert_eq!(h[0].peer_did, did(1));
    assert_eq!(h[0].reason, InvalidationReason::ManualRevoke);
    assert_eq!(h[0].invalidated_at, clock.now());
    assert!(h[0].invalidated_at > std::time::UNIX_EPOCH);
    let seen = seen.lock().unwrap();
    assert_eq!(seen.len(), 1, "callback fires exactly once");
    assert_eq!(seen[0].record, h[0]);
    assert!(seen[0].had_session);
    assert_eq!(seen[0].peer_id.as_deref(), Some(PEER_A));
    assert_eq!(
        store.resolve(issued.token.expose(), PEER_A),
        Err(Error::InvalidToken)
    );
}

/// V-2: history and callback even when no session existed.
#[test]
fn invalidate_unknown_did_still_records_and_calls_back() {
    let (store, _) = store();
    let seen = recorder(&store);
    assert!(!store.invalidate(&did(9), InvalidationReason::Logout));
    let h = store.history();
    assert_eq!(h.len(), 1);
    assert_eq!(h[0].peer_did, did(9));
    assert_eq!(h[0].reason, InvalidationReason::Logout);
    let seen = seen.lock().unwrap();
    assert_eq!(seen.len(), 1);
    assert!(!seen[0].had_session);
    assert_eq!(seen[0].peer_id, None);
}

#[test]
fn invalidating_an_expired_session_reports_no_session() {
    let (store, clock) = store();
    store.create(legacy(&did(1), PEER_A)).unwrap();
    clock.advance(TTL + Duration::from_secs(1));
    assert!(!store.invalidate(&did(1), InvalidationReason::Logout));
    assert_eq!(store.history().len(), 1);
}

/// V-3: three sessions → three records with the same reason and timestamp, three callbacks.
#[test]
fn invalidate_all() {
    let (store, clock) = store();
    let seen = recorder(&store);
    assert_eq!(store.invalidate_all(InvalidationReason::ManualRevoke), 0);
    assert!(store.history().is_empty(), "empty store: no records");
    assert!(seen.lock().unwrap().is_empty(), "empty store: no callbacks");

    let tokens: Vec<_> = (0..3)
        .map(|i| store.create(legacy(&did(i), PEER_A)).unwrap().token)
        .collect();
    clock.advance(Duration::from_secs(3));
    assert_eq!(store.invalidate_all(InvalidationReason::ManualRevoke), 3);
    let h = store.history();
    assert_eq!(h.len(), 3);
    assert!(
        h.iter()
            .all(|r| r.reason == InvalidationReason::ManualRevoke)
    );
    assert!(h.iter().all(|r| r.invalidated_at == clock.now()));
    let mut dids: Vec<_> = h.iter().map(|r| r.peer_did.clone()).collect();
    dids.sort();
    assert_eq!(dids, [did(0), did(1), did(2)]);
    assert_eq!(seen.lock().unwrap().len(), 3);
    assert!(store.is_empty());
    for t in &tokens {
        assert_eq!(store.resolve(t.expose(), PEER_A), Err(Error::InvalidToken));
    }
}

/// V-4, reference test: remove only the non-ZK sessions; the predicate may call the store.
#[test]
fn invalidate_by_condition_removes_only_matching_and_predicate_may_reenter() {
    let (store, _) = store();
    let seen = recorder(&store);
    store
        .create(lango_session::NewSession {
            zk_verified: true,
            ..legacy(&did(1), PEER_A)
        })
        .unwrap();
    store.create(legacy(&did(2), PEER_A)).unwrap();
    store.create(legacy(&did(3), PEER_B)).unwrap();
    let s2 = store.clone();
    let n = within_deadline("predicate calling the store", move || {
        s2.invalidate_by_condition(InvalidationReason::SecurityEvent, |s| {
            // Re-entrant calls from the predicate.
            assert!(s2.get(&s.peer_did).is_some());
            let _ = s2.list();
            !s.zk_verified
        })
    });
    assert_eq!(n, 2);
    let left: Vec<_> = store.list().into_iter().map(|s| s.peer_did).collect();
    assert_eq!(left, [did(1)]);
    assert_eq!(store.history().len(), 2);
    assert_eq!(seen.lock().unwrap().len(), 2);
    assert_eq!(
        store.invalidate_by_condition(InvalidationReason::Logout, |_| false),
        0
    );
    assert_eq!(store.history().len(), 2, "no match: no record");
}

/// V-4: a session replaced while the predicate ran is not removed: the predicate judged
/// the old one.
#[test]
fn invalidate_by_condition_skips_sessions_replaced_meanwhile() {
    let (store, _) = store();
    store.create(legacy(&did(1), PEER_A)).unwrap();
    let s2 = store.clone();
    let fresh = Arc::new(Mutex::new(None));
    let f2 = fresh.clone();
    let n = store.invalidate_by_condition(InvalidationReason::Logout, move |s| {
        let issued = s2.create(legacy(&s.peer_did, PEER_A)).unwrap();
        *f2.lock().unwrap() = Some(issued.token);
        true
    });
    assert_eq!(n, 0);
    let fresh = fresh.lock().unwrap().take().unwrap();
    assert!(store.resolve(fresh.expose(), PEER_A).is_ok());
    assert!(store.history().is_empty());
}

/// S-9: callbacks run with no lock held; one that calls back into the store
/// (get, list, create, invalidate, history, subscribe, callback registration) does not
/// deadlock.
#[test]
fn reentrant_callback_does_not_deadlock() {
    let (store, _) = store();
    let s2 = store.clone();
    let observed = Arc::new(Mutex::new(Vec::new()));
    let o2 = observed.clone();
    store.add_invalidation_callback(move |e| {
        // Inside the callback the invalidation is already visible.
        assert!(s2.get(&e.record.peer_did).is_none());
        let listed = s2.list().len();
        let history = s2.history().len();
        if e.record.reason == InvalidationReason::Logout {
            // Re-create a session for another DID and invalidate a third one.
            s2.create(legacy(&did(100), PEER_B)).unwrap();
            s2.invalidate(&did(200), InvalidationReason::SecurityEvent);
            let _rx = s2.subscribe();
            let id = s2.add_invalidation_callback(|_| {});
            s2.remove_invalidation_callback(id);
        }
        o2.lock()
            .unwrap()
            .push((e.record.peer_did.clone(), listed, history));
    });
    store.create(legacy(&did(1), PEER_A)).unwrap();
    let s3 = store.clone();
    within_deadline("re-entrant callback", move || {
        s3.invalidate(&did(1), InvalidationReason::Logout);
        s3.invalidate_all(InvalidationReason::ManualRevoke);
    });
    let observed = observed.lock().unwrap();
    let dids: Vec<_> = observed.iter().map(|(d, _, _)| d.clone()).collect();
    // The nested invalidation of did(200) ran inside the first callback; invalidate_all then
    // removed the session the callback created.
    assert_eq!(dids, [did(200), did(1), did(100)]);
    assert!(store.is_empty());
    assert_eq!(store.history().len(), 3);
}

#[test]
fn callbacks_can_be_removed_and_all_registered_ones_fire() {
    let (store, _) = store();
    let a = recorder(&store);
    let b = Arc::new(Mutex::new(0));
    let b2 = b.clone();
    let id = store.add_invalidation_callback(move |_| *b2.lock().unwrap() += 1);
    store.invalidate(&did(1), InvalidationReason::Logout);
    assert!(store.remove_invalidation_callback(id));
    assert!(!store.remove_invalidation_callback(id));
    store.invalidate(&did(2), InvalidationReason::Logout);
    assert_eq!(a.lock().unwrap().len(), 2);
    assert_eq!(*b.lock().unwrap(), 1);
}

#[tokio::test]
async fn invalidations_are_broadcast() {
    let (store, _) = store();
    let mut rx1 = store.subscribe();
    let mut rx2 = store.subscribe();
    store.create(legacy(&did(1), PEER_A)).unwrap();
    store.invalidate(&did(1), InvalidationReason::RepeatedFailures);
    store.invalidate(&did(2), InvalidationReason::Logout);
    for rx in [&mut rx1, &mut rx2] {
        let e = rx.recv().await.unwrap();
        assert_eq!(e.record.peer_did, did(1));
        assert_eq!(e.record.reason, InvalidationReason::RepeatedFailures);
        assert!(e.had_session);
        assert_eq!(e.peer_id.as_deref(), Some(PEER_A));
        let e = rx.recv().await.unwrap();
        assert_eq!(e.record.peer_did, did(2));
        assert!(!e.had_session);
        assert!(rx.try_recv().is_err());
    }
    // A subscriber sees only what happens after it subscribed.
    let mut late = store.subscribe();
    assert!(late.try_recv().is_err());
}

/// V-5 / T-D9: the history is bounded (default 1000), oldest dropped first, order kept.
#[test]
fn history_is_bounded_to_the_default_1000_oldest_first() {
    let (store, clock) = store();
    for i in 0..1500 {
        clock.advance(Duration::from_millis(1));
        store.invalidate(&did(i), InvalidationReason::Logout);
    }
    let h = store.history();
    assert_eq!(h.len(), 1000);
    let dids: Vec<_> = h.iter().map(|r| r.peer_did.clone()).collect();
    let expected: Vec<_> = (500..1500).map(did).collect();
    assert_eq!(dids, expected);
    assert!(
        h.windows(2)
            .all(|w| w[0].invalidated_at < w[1].invalidated_at)
    );
}

#[test]
fn history_limit_is_configurable() {
    let (store, _) = store_with(&SessionConfig {
        invalidation_history_limit: 3,
        ..config()
    });
    for i in 0..3 {
        store.create(legacy(&did(i), PEER_A)).unwrap();
    }
    store.invalidate(&did(10), InvalidationReason::Logout);
    store.invalidate_all(InvalidationReason::ManualRevoke);
    store.invalidate(&did(11), InvalidationReason::Logout);
    let h = store.history();
    assert_eq!(h.len(), 3);
    assert_eq!(h[2].peer_did, did(11));
    assert!(
        h[..2]
            .iter()
            .all(|r| r.reason == InvalidationReason::ManualRevoke)
    );
}

/// V-9 / R-8.4 / T-D8: after repeated_failures, reputation_drop or manual_revoke the DID and
/// the session's peer ID are refused new sessions for the cool-down, then allowed again.
#[test]
fn cooldown_after_revocation_reasons() {
    for reason in [
        InvalidationReason::RepeatedFailures,
        InvalidationReason::ReputationDrop,
        InvalidationReason::ManualRevoke,
    ] {
        let (store, clock) = store();
        store.create(legacy(&did(1), PEER_A)).unwrap();
        store.invalidate(&did(1), reason);
        let until = clock.now() + COOLDOWN;
        let refused = Error::Cooldown { until };
        assert_eq!(
            store.may_handshake(&did(1), PEER_B),
            Err(refused.clone()),
            "{reason}: by DID"
        );
        assert_eq!(
            store.may_handshake(&did(2), PEER_A),
            Err(refused.clone()),
            "{reason}: by peer ID"
        );
        assert_eq!(store.may_handshake(&did(2), PEER_B), Ok(()));
        // create and insert_remote refuse too, whatever the handshake checked.
        assert_eq!(
            store.create(legacy(&did(1), PEER_B)).err(),
            Some(refused.clone())
        );
        assert_eq!(
            store.create(bound(&did(3), PEER_A)).err(),
            Some(refused.clone())
        );
        let tok = lango_session::SessionToken::parse(&"ab".repeat(32)).unwrap();
        assert_eq!(
            store
                .insert_remote(legacy(&did(1), PEER_B), tok, clock.now() + TTL)
                .err(),
            Some(refused)
        );
        assert!(store.is_empty());
        clock.advance(COOLDOWN - Duration::from_nanos(1));
        assert!(store.may_handshake(&did(1), PEER_B).is_err(), "{reason}");
        clock.advance(Duration::from_nanos(1));
        assert_eq!(store.may_handshake(&did(1), PEER_A), Ok(()), "{reason}");
        store.create(legacy(&did(1), PEER_A)).unwrap();
    }
}

#[test]
fn cooldown_applies_even_without_a_session_and_via_invalidate_all() {
    let (store, _) = store();
    store.invalidate(&did(1), InvalidationReason::ReputationDrop);
    assert!(matches!(
        store.may_handshake(&did(1), PEER_A),
        Err(Error::Cooldown { .. })
    ));
    store.create(legacy(&did(2), PEER_B)).unwrap();
    store.invalidate_all(InvalidationReason::ManualRevoke);
    assert!(store.may_handshake(&did(2), "other-peer").is_err());
    assert!(store.may_handshake(&did(3), PEER_B).is_err());
}

#[test]
fn logout_and_security_event_do_not_start_a_cooldown() {
    let (store, _) = store();
    for reason in [
        InvalidationReason::Logout,
        InvalidationReason::SecurityEvent,
    ] {
        store.create(legacy(&did(1), PEER_A)).unwrap();
        store.invalidate(&did(1), reason);
        assert_eq!(store.may_handshake(&did(1), PEER_A), Ok(()), "{reason}");
    }
}

#[test]
fn configured_cooldown_is_used() {
    let (store, clock) = store_with(&SessionConfig {
        session_revoke_cooldown: Duration::from_secs(3600),
        ..config()
    });
    assert_eq!(store.revoke_cooldown(), Duration::from_secs(3600));
    store.invalidate(&did(1), InvalidationReason::ManualRevoke);
    clock.advance(Duration::from_secs(3599));
    assert!(store.may_handshake(&did(1), PEER_A).is_err());
    clock.advance(Duration::from_secs(1));
    assert!(store.may_handshake(&did(1), PEER_A).is_ok());
}

/// Issue 17: ten thousand cheap invalidations (fresh DIDs, each one revoke cool-down) do not
/// end an operator's manual revoke early.
#[test]
fn a_manual_revoke_outlasts_ten_thousand_cheap_invalidations() {
    let (store, clock) = store();
    let victim = did(1);
    store.create(legacy(&victim, PEER_A)).unwrap();
    assert!(store.invalidate(&victim, InvalidationReason::ManualRevoke));
    clock.advance(std::time::Duration::from_secs(1));
    for i in 0..lango_session::COOLDOWN_CAPACITY + 10 {
        store.invalidate(&did(100_000 + i), InvalidationReason::ReputationDrop);
    }
    assert!(
        matches!(
            store.may_handshake(&victim, PEER_B),
            Err(Error::Cooldown { .. })
        ),
        "the manual revoke's cool-down was evicted"
    );
    assert!(matches!(
        store.may_handshake(&did(2), PEER_A),
        Err(Error::Cooldown { .. })
    ));
}
