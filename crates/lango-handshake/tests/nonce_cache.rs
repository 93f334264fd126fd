//! The nonce replay cache (§3.6, N-1…N-7).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::{Arc, Barrier};
use std::thread;
use std::time::{Duration, Instant};

use lango_handshake::Error;
use lango_handshake::clock::ManualClock;
use lango_handshake::nonce::{NonceCache, NonceCheck, wired_nonce_ttl};

fn manual(ttl_ms: u64, capacity: usize) -> (NonceCache, Arc<ManualClock>) {
    let clock = Arc::new(ManualClock::at_unix(1_700_000_000));
    (
        NonceCache::with_clock(Duration::from_millis(ttl_ms), capacity, clock.clone()),
        clock,
    )
}

fn n(i: u32) -> [u8; 32] {
    let mut b = [0u8; 32];
    b[..4].copy_from_slice(&i.to_be_bytes());
    b
}

#[test]
fn first_seen_is_fresh_then_seen() {
    let (c, _) = manual(60_000, 0);
    assert_eq!(c.check_and_record(&n(1)), NonceCheck::Fresh);
    assert_eq!(c.check_and_record(&n(1)), NonceCheck::Seen);
    assert_eq!(c.check_and_record(&n(2)), NonceCheck::Fresh);
    assert_eq!(c.check(&n(2)), Err(Error::NonceReplay));
    assert_eq!(c.len(), 2);
}

#[test]
fn wrong_lengths_are_refused_and_not_recorded() {
    let (c, _) = manual(60_000, 0);
    for len in [0usize, 16, 31, 33, 64] {
        let v = vec![7u8; len];
        assert_eq!(c.check_and_record(&v), NonceCheck::InvalidLength);
        assert_eq!(c.check(&v), Err(Error::InvalidNonce { len }));
    }
    assert!(c.is_empty());
}

#[test]
fn expiry_is_strict_and_cleanup_frees_entries() {
    let (c, clock) = manual(50, 0);
    assert!(c.check_and_record(&n(1)).is_fresh());
    clock.advance(Duration::from_millis(50));
    assert_eq!(c.cleanup(), 0, "exactly ttl old is not expired");
    assert_eq!(c.check_and_record(&n(1)), NonceCheck::Seen);
    clock.advance(Duration::from_millis(10));
    // Expired but not cleaned: still counts as seen (reference behaviour).
    assert_eq!(c.check_and_record(&n(1)), NonceCheck::Seen);
    assert_eq!(c.cleanup(), 1);
    assert_eq!(c.check_and_record(&n(1)), NonceCheck::Fresh);
}

#[test]
fn a_clock_stepping_back_never_shortens_the_memory() {
    let (c, clock) = manual(1_000, 0);
    assert!(c.check_and_record(&n(1)).is_fresh());
    clock.set(std::time::UNIX_EPOCH + Duration::from_secs(1_700_000_000 - 3600));
    assert_eq!(c.cleanup(), 0);
    assert_eq!(c.check_and_record(&n(1)), NonceCheck::Seen);
}

#[test]
fn background_cleanup_runs_every_half_ttl() {
    let (c, clock) = manual(50, 0);
    c.start().unwrap();
    c.start().unwrap(); // idempotent
    assert!(c.is_running());
    assert!(c.check_and_record(&n(1)).is_fresh());
    assert_eq!(c.check_and_record(&n(1)), NonceCheck::Seen);
    clock.advance(Duration::from_millis(60));
    // No manual cleanup: the background thread (every 25 ms of real time) removes it.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if c.check_and_record(&n(1)).is_fresh() {
            break;
        }
        assert!(Instant::now() < deadline, "background cleanup never ran");
        thread::sleep(Duration::from_millis(5));
    }
    c.stop();
    c.stop(); // idempotent, no panic
    assert!(!c.is_running());
}

#[test]
fn dropping_a_started_cache_stops_its_thread() {
    let (c, _) = manual(10, 0);
    c.start().unwrap();
    drop(c); // joins the thread; must not hang or panic
}

#[test]
fn capacity_fails_closed_and_never_evicts_unexpired_entries() {
    let (c, clock) = manual(330_000, 3);
    assert_eq!(c.capacity(), 3);
    assert!(c.check_and_record(&n(1)).is_fresh());
    clock.advance(Duration::from_secs(200));
    assert!(c.check_and_record(&n(2)).is_fresh());
    assert!(c.check_and_record(&n(3)).is_fresh());
    assert_eq!(c.check_and_record(&n(4)), NonceCheck::Full);
    assert_eq!(c.check(&n(4)), Err(Error::NonceCacheFull));
    // Nothing was evicted, the refused nonce was not recorded.
    assert_eq!(c.len(), 3);
    for i in 1..=3 {
        assert_eq!(c.check_and_record(&n(i)), NonceCheck::Seen);
    }
    // n(1) expires: the full path drops it and makes room for exactly one.
    clock.advance(Duration::from_secs(131));
    assert!(c.check_and_record(&n(4)).is_fresh());
    assert_eq!(c.check_and_record(&n(5)), NonceCheck::Full);
    assert_eq!(c.check_and_record(&n(2)), NonceCheck::Seen);
    // n(1) was dropped, but the cache is full again: refused, not re-admitted.
    assert_eq!(c.check_and_record(&n(1)), NonceCheck::Full);
}

#[test]
fn explicit_cleanup_frees_space_in_a_full_cache() {
    let (c, clock) = manual(1_000, 10);
    for i in 0..10 {
        assert!(c.check_and_record(&n(i)).is_fresh());
    }
    assert_eq!(c.check_and_record(&n(100)), NonceCheck::Full);
    clock.advance(Duration::from_millis(1_001));
    assert_eq!(c.cleanup(), 10);
    assert!(c.check_and_record(&n(100)).is_fresh());
}

#[test]
fn unique_nonces_from_50_threads_are_all_fresh() {
    let c = Arc::new(NonceCache::new(Duration::from_secs(60)));
    let handles: Vec<_> = (0..50u32)
        .map(|i| {
            let c = c.clone();
            thread::spawn(move || c.check_and_record(&n(i)))
        })
        .collect();
    for h in handles {
        assert_eq!(h.join().unwrap(), NonceCheck::Fresh);
    }
    assert_eq!(c.len(), 50);
}

#[test]
fn a_recorded_nonce_is_seen_by_50_threads() {
    let c = Arc::new(NonceCache::new(Duration::from_secs(60)));
    assert!(c.check_and_record(&n(9)).is_fresh());
    let handles: Vec<_> = (0..50)
        .map(|_| {
            let c = c.clone();
            thread::spawn(move || c.check_and_record(&n(9)))
        })
        .collect();
    for h in handles {
        assert_eq!(h.join().unwrap(), NonceCheck::Seen);
    }
}

#[test]
fn racing_threads_on_a_fresh_nonce_get_exactly_one_fresh() {
    for round in 0..20u32 {
        let c = Arc::new(NonceCache::new(Duration::from_secs(60)));
        let barrier = Arc::new(Barrier::new(32));
        let handles: Vec<_> = (0..32)
            .map(|_| {
                let (c, b) = (c.clone(), barrier.clone());
                thread::spawn(move || {
                    b.wait();
                    c.check_and_record(&n(round))
                })
            })
            .collect();
        let fresh = handles
            .into_iter()
            .map(|h| h.join().unwrap())
            .filter(|r| r.is_fresh())
            .count();
        assert_eq!(fresh, 1);
    }
}

#[test]
fn racing_threads_never_exceed_capacity() {
    let small = Arc::new(NonceCache::with_clock(
        Duration::from_secs(60),
        100,
        Arc::new(ManualClock::at_unix(1)),
    ));
    let handles: Vec<_> = (0..8u32)
        .map(|t| {
            let s = small.clone();
            thread::spawn(move || {
                (0..100u32)
                    .filter(|i| s.check_and_record(&n(t * 1000 + i)).is_fresh())
                    .count()
            })
        })
        .collect();
    let fresh: usize = handles.into_iter().map(|h| h.join().unwrap()).sum();
    assert_eq!(fresh, 100);
    assert_eq!(small.len(), 100);
}

#[test]
fn wired_ttl_covers_the_timestamp_window() {
    assert_eq!(
        wired_nonce_ttl(Duration::from_secs(30)),
        Duration::from_secs(330)
    );
    assert_eq!(wired_nonce_ttl(Duration::ZERO), Duration::from_secs(330));
    assert_eq!(
        wired_nonce_ttl(Duration::from_secs(200)),
        Duration::from_secs(400)
    );
    assert!(wired_nonce_ttl(Duration::from_millis(1)) >= Duration::from_secs(330));
}
