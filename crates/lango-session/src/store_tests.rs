//! White-box tests of the store: internal consistency under concurrency and on every
//! removal path.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Barrier};
use std::thread;
use std::time::Duration;

use super::*;
use crate::{ManualClock, Role};

fn store_with(clock: &Arc<ManualClock>, history: i64) -> SessionStore {
    let config = SessionConfig {
        session_token_ttl: Duration::from_secs(3600),
        invalidation_history_limit: history,
        ..SessionConfig::default()
    };
    SessionStore::builder(&config)
        .clock(clock.clone())
        .build()
        .unwrap()
}

fn new<'a>(did: &'a str, peer: &'a str) -> NewSession<'a> {
    NewSession {
        peer_did: did,
        peer_id: peer,
        protocol: "/lango/handshake/1.1.0",
        role: Role::Responder,
        authenticated: true,
        channel_bound: false,
        zk_verified: false,
        remote_ip: None,
    }
}

/// A small deterministic PRNG (xorshift64*), so failures are reproducible per seed.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// §7 "Concurrency stress: 16 threads × 10 000 mixed create/validate/get/invalidate/resolve
/// operations. No panics. Invariants hold: a validated token always belongs to a
/// non-expired, non-invalidated session."
#[test]
fn stress_16_threads_by_10000_mixed_operations() {
    const THREADS: u64 = 16;
    const OPS: u64 = 10_000;
    const DIDS: u64 = 48;
    let clock = Arc::new(ManualClock::at_unix(1_700_000_000));
    let store = store_with(&clock, 100_000);
    let callbacks = Arc::new(AtomicUsize::new(0));
    {
        let callbacks = callbacks.clone();
        store.add_invalidation_callback(move |_| {
            callbacks.fetch_add(1, Ordering::Relaxed);
        });
    }
    let invalidations = Arc::new(AtomicUsize::new(0));
    let resolved = Arc::new(AtomicUsize::new(0));
    let expired = Arc::new(AtomicUsize::new(0));
    let start = Arc::new(Barrier::new(THREADS as usize));
    let handles: Vec<_> = (0..THREADS)
        .map(|t| {
            let store = store.clone();
            let clock = clock.clone();
            let invalidations = invalidations.clone();
            let resolved = resolved.clone();
            let expired = expired.clone();
            let start = start.clone();
            thread::spawn(move || {
                let mut rng = Rng(0x9e37_79b9_7f4a_7c15 ^ (t + 1));
                // The tokens this thread was issued, per DID index.
                let mut mine: HashMap<u64, String> = HashMap::new();
                start.wait();
                for _ in 0..OPS {
                    let i = rng.below(DIDS);
                    let did = format!("did:lango:stress-{i}");
                    let peer = format!("peer-{i}");
                    match rng.below(100) {
                        0..=19 => {
                            if let Ok(issued) = store.create(new(&did, &peer)) {
                                assert_eq!(issued.session.peer_did, did);
                                mine.insert(i, issued.token.expose().to_owned());
                            }
                        }
                        20..=44 => {
                            if let Some(tok) = mine.get(&i) {
                                let before = clock.now();
                                match store.resolve(tok, &peer) {
                                    Ok(info) => {
                                        resolved.fetch_add(1, Ordering::Relaxed);
                                        assert_eq!(info.peer_did, did);
                                        assert_eq!(info.peer_id, peer);
                                        assert!(!info.invalidated);
                                        assert!(
                                            info.expires_at >= before,
                                            "resolved an expired session"
                                        );
                                    }
                                    Err(Error::Expired) => {
                                        expired.fetch_add(1, Ordering::Relaxed);
                                    }
                                    Err(e) => assert_eq!(e, Error::InvalidToken),
                                }
                                // Never for another peer.
                                assert!(store.resolve(tok, "peer-intruder").is_err());
                            }
                        }
                        45..=59 => {
                            if let Some(tok) = mine.get(&i)
                                && store.validate(&did, tok)
                            {
                                // The token validated, so it is the token of the live session
                                // stored for this DID right now (or it was replaced since).
                                if let Some(info) = store.get(&did) {
                                    assert_eq!(info.peer_did, did);
                                }
                            }
                            // A token issued for one DID never validates for another.
                            if let Some(tok) = mine.get(&i) {
                                let other = format!("did:lango:stress-{}", (i + 1) % DIDS);
                                assert!(!store.validate(&other, tok));
                            }
                        }
                        60..=74 => {
                            if let Some(info) = store.get(&did) {
                                assert_eq!(info.peer_did, did);
                                assert!(info.expires_at >= info.created_at);
                            }
                        }
                        75..=86 => {
                            store.invalidate(&did, InvalidationReason::Logout);
                            invalidations.fetch_add(1, Ordering::Relaxed);
                        }
                        87..=92 => {
                            let list = store.list();
                            assert!(list.windows(2).all(|w| w[0].peer_did < w[1].peer_did));
                        }
                        93..=95 => {
                            store.purge_expired();
                        }
                        96..=97 => {
                            let n = store
                                .invalidate_by_condition(InvalidationReason::SecurityEvent, |s| {
                                    s.peer_did.ends_with('7')
                                });
                            invalidations.fetch_add(n, Ordering::Relaxed);
                        }
                        _ => {
                            if t == 0 {
                                // Now and then every live session expires at once.
                                let step = if rng.below(4) == 0 { 3601 } else { 60 };
                                clock.advance(Duration::from_secs(step));
                            }
                        }
                    }
                }
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
    store.check_invariants();
    // The run exercised the interesting paths, not only failures.
    assert!(
        resolved.load(Ordering::Relaxed) > 1000,
        "too few successful resolutions"
    );
    assert!(
        expired.load(Ordering::Relaxed) > 0,
        "no session expired during the run"
    );
    let n = invalidations.load(Ordering::Relaxed);
    assert_eq!(store.history().len(), n.min(100_000));
    assert_eq!(callbacks.load(Ordering::Relaxed), n);
    // Every listed session still resolves through the index for its own peer only.
    for info in store.list() {
        assert_eq!(store.get(&info.peer_did).as_ref(), Some(&info));
    }
}

#[test]
fn every_removal_path_keeps_the_index_in_step() {
    let clock = Arc::new(ManualClock::at_unix(1_700_000_000));
    let store = store_with(&clock, 1000);
    let dids: Vec<String> = (0..10).map(|i| format!("did:lango:{i}")).collect();
    for d in &dids {
        store.create(new(d, "p")).unwrap();
    }
    // Replacement.
    store.create(new(&dids[0], "p")).unwrap();
    store.check_invariants();
    // remove, remove_if_token, invalidate, by_condition.
    assert!(store.remove(&dids[1]));
    let t = store.create(new(&dids[2], "p")).unwrap().token;
    assert!(store.remove_if_token(&dids[2], &t));
    assert!(store.invalidate(&dids[3], InvalidationReason::Logout));
    assert_eq!(
        store.invalidate_by_condition(InvalidationReason::Logout, |s| s.peer_did == dids[4]),
        1
    );
    store.check_invariants();
    // Expiry through get, validate, resolve, purge.
    clock.advance(Duration::from_secs(3601));
    assert!(store.get(&dids[5]).is_none());
    assert!(!store.validate(&dids[6], &"0".repeat(64)));
    store.check_invariants();
    assert_eq!(store.purge_expired(), 4);
    store.check_invariants();
    assert_eq!(store.lock().sessions.len(), 0);
    assert_eq!(store.lock().by_token.len(), 0);
}

#[test]
fn failure_counters_are_dropped_with_their_session() {
    let clock = Arc::new(ManualClock::at_unix(1_700_000_000));
    let store = store_with(&clock, 1000);
    store.create(new("did:a", "p")).unwrap();
    assert!(matches!(
        store.record_failure_inner("did:a", 5),
        FailureStep::Counted(1)
    ));
    assert_eq!(store.tracked_failures(), 1);
    store.invalidate("did:a", InvalidationReason::Logout);
    assert_eq!(store.tracked_failures(), 0);
}
