//! The nonce replay cache (spec §3.6, rules N-1…N-7).
//!
//! A bounded set of the 32-byte challenge nonces seen recently, with the time each was first
//! seen. [`NonceCache::check_and_record`] is atomic: of any number of concurrent callers with
//! the same fresh nonce, exactly one gets [`NonceCheck::Fresh`].
//!
//! - An entry expires when `now − recorded > ttl` (strict). As in the reference, an entry that
//!   has expired but has not been cleaned up yet still counts as seen (the conservative choice).
//! - The cache never holds more than its capacity and never evicts an unexpired entry: when it
//!   is full it drops expired entries and, if it is still full, refuses with
//!   [`NonceCheck::Full`], so the handshake fails closed (N-6). That refusal path costs O(1):
//!   it only drops expired entries from the oldest end, so a cache an attacker has filled cannot
//!   be turned into a CPU amplifier. [`NonceCache::cleanup`] (and the background task started by
//!   [`NonceCache::start`]) scans everything.
//! - Time comes from an injectable [`Clock`] — the same wall clock that judges challenge
//!   timestamps, so "remembered as long as its timestamp is acceptable" (N-5) holds whatever the
//!   clock does. If the clock steps backwards, entries live longer, never shorter.

use std::collections::{HashMap, VecDeque};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::thread;
use std::time::{Duration, SystemTime};

use crate::Error;
use crate::clock::{Clock, MAX_TIMESTAMP_AGE, MAX_TIMESTAMP_AHEAD, SystemClock};

/// The nonce size (`NonceSize`).
pub const NONCE_SIZE: usize = 32;
/// Default capacity (`p2p.nonceCacheCapacity`).
pub const DEFAULT_NONCE_CACHE_CAPACITY: usize = 100_000;
/// The default handshake timeout (`p2p.handshakeTimeout`), used when a timeout of zero is given.
pub const DEFAULT_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(30);
/// The shortest TTL the wiring may use: the 300 s past window plus the 30 s future grace.
pub const MIN_WIRED_NONCE_TTL: Duration =
    Duration::from_secs(MAX_TIMESTAMP_AGE.as_secs() + MAX_TIMESTAMP_AHEAD.as_secs());
/// The shortest interval of the background cleanup, whatever the TTL.
const MIN_CLEANUP_INTERVAL: Duration = Duration::from_millis(1);

/// The TTL a node must give its cache (N-5, a deviation from the reference's
/// `2 × handshakeTimeout`): `max(2 × handshake_timeout, 330 s)`. A zero timeout means 30 s.
pub fn wired_nonce_ttl(handshake_timeout: Duration) -> Duration {
    let t = if handshake_timeout.is_zero() {
        DEFAULT_HANDSHAKE_TIMEOUT
    } else {
        handshake_timeout
    };
    t.saturating_mul(2).max(MIN_WIRED_NONCE_TTL)
}

/// The outcome of [`NonceCache::check_and_record`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NonceCheck {
    /// Not seen before; now recorded.
    Fresh,
    /// Seen before (a replay).
    Seen,
    /// Not 32 bytes; not recorded (N-1).
    InvalidLength,
    /// The cache is full of unexpired entries; not recorded (N-6).
    Full,
}

impl NonceCheck {
    /// Whether the nonce was fresh (the reference's boolean).
    pub fn is_fresh(self) -> bool {
        matches!(self, Self::Fresh)
    }

    /// `Ok` for a fresh nonce, otherwise the handshake error: [`Error::NonceReplay`],
    /// [`Error::InvalidNonce`] or [`Error::NonceCacheFull`].
    pub fn into_result(self, len: usize) -> Result<(), Error> {
        match self {
            Self::Fresh => Ok(()),
            Self::Seen => Err(Error::NonceReplay),
            Self::InvalidLength => Err(Error::InvalidNonce { len }),
            Self::Full => Err(Error::NonceCacheFull),
        }
    }
}

#[derive(Debug, Default)]
struct State {
    seen: HashMap<[u8; NONCE_SIZE], SystemTime>,
    /// Nonces in insertion order; each nonce appears at most once, like in `seen`.
    order: VecDeque<[u8; NONCE_SIZE]>,
}

#[derive(Debug)]
struct Shared {
    state: Mutex<State>,
    ttl: Duration,
    capacity: usize,
    clock: Arc<dyn Clock>,
}

impl Shared {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn expired(&self, recorded: SystemTime, now: SystemTime) -> bool {
        // A clock that stepped back gives an error here: the entry is treated as fresh.
        now.duration_since(recorded).is_ok_and(|age| age > self.ttl)
    }

    fn cleanup(&self) -> usize {
        let now = self.clock.now();
        let mut st = self.lock();
        let before = st.seen.len();
        st.seen.retain(|_, t| !self.expired(*t, now));
        let State { seen, order } = &mut *st;
        order.retain(|n| seen.contains_key(n));
        before - st.seen.len()
    }
}

#[derive(Debug)]
struct Cleaner {
    stop: mpsc::Sender<()>,
    handle: thread::JoinHandle<()>,
}

/// The nonce replay cache. See the module documentation for its guarantees.
#[derive(Debug)]
pub struct NonceCache {
    shared: Arc<Shared>,
    cleaner: Mutex<Option<Cleaner>>,
}

impl NonceCache {
    /// A cache with the given TTL and the default capacity, on the system clock.
    pub fn new(ttl: Duration) -> Self {
        Self::with_clock(ttl, DEFAULT_NONCE_CACHE_CAPACITY, Arc::new(SystemClock))
    }

    /// A cache with the given TTL, capacity and clock. A capacity of 0 means the default. The
    /// TTL is kept as given (N-5); node wiring should use [`wired_nonce_ttl`].
    pub fn with_clock(ttl: Duration, capacity: usize, clock: Arc<dyn Clock>) -> Self {
        let capacity = if capacity == 0 {
            DEFAULT_NONCE_CACHE_CAPACITY
        } else {
            capacity
        };
        Self {
            shared: Arc::new(Shared {
                state: Mutex::new(State::default()),
                ttl,
                capacity,
                clock,
            }),
            cleaner: Mutex::new(None),
        }
    }

    /// The TTL.
    pub fn ttl(&self) -> Duration {
        self.shared.ttl
    }

    /// The capacity.
    pub fn capacity(&self) -> usize {
        self.shared.capacity
    }

    /// The number of entries currently held (expired ones not yet cleaned included).
    pub fn len(&self) -> usize {
        self.shared.lock().seen.len()
    }

    /// Whether the cache holds no entry.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Atomically checks whether `nonce` was seen and records it if not (N-1, N-2, N-6).
    pub fn check_and_record(&self, nonce: &[u8]) -> NonceCheck {
        let Ok(key) = <[u8; NONCE_SIZE]>::try_from(nonce) else {
            return NonceCheck::InvalidLength;
        };
        let now = self.shared.clock.now();
        let mut st = self.shared.lock();
        if st.seen.contains_key(&key) {
            return NonceCheck::Seen;
        }
        if st.seen.len() >= self.shared.capacity {
            // Drop expired entries from the oldest end only (O(1) when nothing expired).
            while let Some(front) = st.order.front().copied() {
                let expired = st
                    .seen
                    .get(&front)
                    .is_none_or(|t| self.shared.expired(*t, now));
                if !expired {
                    break;
                }
                st.order.pop_front();
                st.seen.remove(&front);
            }
            if st.seen.len() >= self.shared.capacity {
                return NonceCheck::Full;
            }
        }
        st.seen.insert(key, now);
        st.order.push_back(key);
        NonceCheck::Fresh
    }

    /// [`check_and_record`](Self::check_and_record) as a handshake result.
    pub fn check(&self, nonce: &[u8]) -> Result<(), Error> {
        self.check_and_record(nonce).into_result(nonce.len())
    }

    /// Removes every expired entry; returns how many were removed (N-3).
    pub fn cleanup(&self) -> usize {
        self.shared.cleanup()
    }

    /// Starts a background thread that runs [`cleanup`](Self::cleanup) every `ttl / 2`, so an
    /// entry lives between `ttl` and about `1.5 × ttl` (N-4). Starting a running cache does
    /// nothing. The thread holds no strong reference: dropping the cache stops it.
    pub fn start(&self) -> Result<(), Error> {
        let mut guard = self.cleaner.lock().unwrap_or_else(PoisonError::into_inner);
        if guard.is_some() {
            return Ok(());
        }
        let interval = (self.shared.ttl / 2).max(MIN_CLEANUP_INTERVAL);
        let weak: Weak<Shared> = Arc::downgrade(&self.shared);
        let (tx, rx) = mpsc::channel::<()>();
        let handle = thread::Builder::new()
            .name("lango-nonce-cleanup".to_owned())
            .spawn(move || {
                while let Err(RecvTimeoutError::Timeout) = rx.recv_timeout(interval) {
                    let Some(shared) = weak.upgrade() else { break };
                    shared.cleanup();
                }
            })
            .map_err(|e| Error::io(&e))?;
        *guard = Some(Cleaner { stop: tx, handle });
        Ok(())
    }

    /// Stops the background cleanup and waits for it to end. Idempotent (N-4).
    pub fn stop(&self) {
        let taken = self
            .cleaner
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(c) = taken {
            let _ = c.stop.send(());
            drop(c.stop);
            // The thread never panics; a join error would only mean it already ended.
            let _ = c.handle.join();
        }
    }

    /// Whether the background cleanup is running.
    pub fn is_running(&self) -> bool {
        self.cleaner
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .is_some()
    }
}

impl Drop for NonceCache {
    fn drop(&mut self) {
        self.stop();
    }
}
