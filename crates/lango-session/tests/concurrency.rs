//! Many tokio tasks creating, resolving and invalidating at once; the final state is
//! consistent (spec S-9, §7 concurrency stress, black-box part).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use common::*;
use lango_session::{Error, InvalidationReason, SessionConfig, SessionToken};
use tokio::sync::broadcast::error::TryRecvError;

#[tokio::test(flavor = "multi_thread", worker_threads = 8)]
async fn many_tasks_at_once_leave_a_consistent_store() {
    const TASKS: usize = 16;
    const OWN: usize = 8;
    const ROUNDS: usize = 400;
    let (store, _) = store_with(&SessionConfig {
        invalidation_history_limit: 100_000,
        ..config()
    });
    let callbacks = Arc::new(AtomicUsize::new(0));
    let c2 = callbacks.clone();
    store.add_invalidation_callback(move |_| {
        c2.fetch_add(1, Ordering::Relaxed);
    });
    let mut rx = store.subscribe();
    let invalidations = Arc::new(AtomicUsize::new(0));

    let mut tasks = Vec::new();
    for t in 0..TASKS {
        let store = store.clone();
        let invalidations = invalidations.clone();
        tasks.push(tokio::spawn(async move {
            // This task's own DIDs (touched by nobody else) and its own peer ID.
            let peer = format!("peer-{t}");
            let mut last: HashMap<String, Option<SessionToken>> = HashMap::new();
            for r in 0..ROUNDS {
                let own = did(1000 + t * OWN + r % OWN);
                let shared = did(r % 5);
                match (r * 7 + t) % 5 {
                    0 | 1 => {
                        let issued = store.create(legacy(&own, &peer)).unwrap();
                        last.insert(own.clone(), Some(issued.token));
                        // The contended DIDs: every task fights over them.
                        if let Ok(i) = store.create(unsigned(&shared, &peer)) {
                            let got = store.resolve(i.token.expose(), &peer);
                            // Either still ours, or already replaced by another task.
                            assert!(
                                matches!(got, Ok(ref s) if s.peer_did == shared)
                                    || got == Err(Error::InvalidToken)
                            );
                        }
                    }
                    2 => {
                        if let Some(Some(tok)) = last.get(&own) {
                            let s = store.resolve(tok.expose(), &peer).unwrap();
                            assert_eq!(s.peer_did, own);
                            assert_eq!(
                                store.resolve(tok.expose(), "intruder"),
                                Err(Error::InvalidToken)
                            );
                        }
                    }
                    3 => {
                        store.invalidate(&own, InvalidationReason::Logout);
                        store.invalidate(&shared, InvalidationReason::SecurityEvent);
                        invalidations.fetch_add(2, Ordering::Relaxed);
                        last.insert(own.clone(), None);
                    }
                    _ => {
                        let list = store.list();
                        assert!(list.windows(2).all(|w| w[0].peer_did < w[1].peer_did));
                        tokio::task::yield_now().await;
                    }
                }
            }
            last
        }));
    }
    let mut expected: HashMap<String, Option<SessionToken>> = HashMap::new();
    for task in tasks {
        expected.extend(task.await.unwrap());
    }

    // Each task's own DIDs end exactly as that task left them.
    for (d, tok) in &expected {
        match tok {
            Some(tok) => {
                let s = store.get(d).unwrap();
                let again = store.resolve(tok.expose(), &s.peer_id).unwrap();
                assert_eq!(again, s);
            }
            None => assert!(store.get(d).is_none(), "{d} should be invalidated"),
        }
    }
    // The contended DIDs hold at most one session each, and it resolves for its owner only.
    let live_own = expected.values().filter(|t| t.is_some()).count();
    let shared_live = (0..5).filter(|i| store.get(&did(*i)).is_some()).count();
    assert_eq!(store.len(), live_own + shared_live);
    // One record, one callback and one broadcast per invalidation call.
    let n = invalidations.load(Ordering::Relaxed);
    assert_eq!(store.history().len(), n);
    assert_eq!(callbacks.load(Ordering::Relaxed), n);
    let (mut events, mut missed) = (0u64, 0u64);
    loop {
        match rx.try_recv() {
            Ok(_) => events += 1,
            Err(TryRecvError::Lagged(k)) => missed += k,
            Err(_) => break,
        }
    }
    // Every event was sent; a receiver that did not keep up is told how many it missed,
    // and the broadcast buffer keeps the most recent EVENT_CHANNEL_CAPACITY of them.
    assert_eq!((events + missed) as usize, n);
    assert_eq!(
        events as usize,
        n.min(lango_session::EVENT_CHANNEL_CAPACITY)
    );
}
