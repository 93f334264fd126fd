//! The session store (spec §3.7–§3.9).

use std::collections::{HashMap, HashSet, VecDeque};
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, SystemTime};

use lango_crypto::{SecretKey32, mac};
use tokio::sync::broadcast;

use crate::Error;
use crate::clock::{Clock, SystemClock, add_saturating};
use crate::config::SessionConfig;
use crate::invalidation::{
    CallbackId, InvalidationCallback, InvalidationEvent, InvalidationReason, InvalidationRecord,
};
use crate::limits::{Cooldowns, FailureTracker};
use crate::session::{Issued, NewSession, Role, SessionInfo};
use crate::token::{self, SessionToken};

/// Default bound on live sessions. When the store is full, expired sessions are purged; if
/// it is still full, a session for a new DID is refused with [`Error::StoreFull`] (fail
/// closed; no live session is ever evicted to make room). Replacing the session of a DID
/// that already has one is always possible.
pub const DEFAULT_MAX_SESSIONS: usize = 10_000;
/// Default bound on incoming sessions held by one remote peer ID. DIDs cost nothing to
/// make; a peer ID holding more than a few sessions is one peer minting identities.
pub const DEFAULT_MAX_SESSIONS_PER_PEER: usize = 32;
/// Default bound on incoming sessions held through one remote IP address.
pub const DEFAULT_MAX_SESSIONS_PER_ADDR: usize = 512;
/// Longest accepted peer DID, in bytes (a canonical `did:lango:` DID has 76).
pub const MAX_DID_LEN: usize = 256;
/// Longest accepted libp2p peer ID text, in bytes (an Ed25519 peer ID has 52).
pub const MAX_PEER_ID_LEN: usize = 128;
/// Longest accepted protocol ID, in bytes.
pub const MAX_PROTOCOL_LEN: usize = 128;
/// Bound on each cool-down list (DIDs, peer IDs).
pub const COOLDOWN_CAPACITY: usize = 10_000;
/// Bound on the consecutive-failure tracker (E-7, R-8.2).
pub const FAILURE_TRACKER_CAPACITY: usize = 10_000;
/// Capacity of the invalidation broadcast channel. A subscriber that falls further behind
/// receives `RecvError::Lagged` and misses the oldest events; callbacks never miss any.
pub const EVENT_CHANNEL_CAPACITY: usize = 1024;

/// The concurrent session store.
///
/// Cheap to clone (an `Arc` inside); every clone is the same store. All operations are
/// linearizable under one internal lock, which is never held while user code runs: callbacks
/// and `invalidate_by_condition` predicates run with no lock held and may call back into the
/// store (S-9, V-4).
///
/// Invariants the store keeps:
/// - one session per peer DID (S-2); a new session replaces the old one, whose token stops
///   resolving at once and is wiped;
/// - a token resolves only for the peer ID that ran the handshake (T-1);
/// - at most `max_sessions` sessions ([`DEFAULT_MAX_SESSIONS`]);
/// - the history, the cool-down lists and the failure tracker are bounded.
#[derive(Clone)]
pub struct SessionStore {
    inner: Arc<Inner>,
}

struct Inner {
    state: Mutex<State>,
    callbacks: Mutex<Vec<(CallbackId, InvalidationCallback)>>,
    next_callback: AtomicU64,
    events: broadcast::Sender<InvalidationEvent>,
    /// HMAC key for minting tokens (§2.6, S-1). Wiped on drop.
    token_key: SecretKey32,
    /// HMAC key for the token index. Wiped on drop.
    index_key: SecretKey32,
    /// Compared against when a token is not in the index, so a miss costs about as much as
    /// a hit.
    decoy: SessionToken,
    clock: Arc<dyn Clock>,
    ttl: Duration,
    cooldown: Duration,
    history_limit: usize,
    max_sessions: usize,
    quotas: Quotas,
}

/// Bounds on incoming (responder-role) sessions.
#[derive(Debug, Clone, Copy)]
struct Quotas {
    per_peer: usize,
    per_addr: usize,
    /// Most incoming sessions: `max_sessions` minus the room kept for outgoing ones.
    incoming: usize,
}

struct State {
    sessions: HashMap<String, Entry>,
    /// Keyed HMAC of the token → peer DID.
    by_token: HashMap<[u8; 32], String>,
    history: VecDeque<InvalidationRecord>,
    cooldowns: Cooldowns,
    failures: FailureTracker,
    next_id: u64,
    /// Incoming sessions by remote peer ID and by remote IP address.
    by_peer: HashMap<String, HashSet<String>>,
    by_addr: HashMap<String, HashSet<String>>,
    incoming: usize,
}

struct Entry {
    /// Internal identity of this session (changes on every create/replace).
    id: u64,
    token: SessionToken,
    index: [u8; 32],
    info: SessionInfo,
    remote_ip: Option<String>,
}

/// Builder for a [`SessionStore`] with a non-default clock or session bound.
#[derive(Debug)]
pub struct SessionStoreBuilder {
    config: SessionConfig,
    clock: Arc<dyn Clock>,
    max_sessions: usize,
    per_peer: usize,
    per_addr: usize,
    outgoing_reserve: Option<usize>,
}

impl SessionStoreBuilder {
    /// Sets the bound on incoming sessions per remote peer ID (default
    /// [`DEFAULT_MAX_SESSIONS_PER_PEER`]; at least 1).
    pub fn max_sessions_per_peer(mut self, max: usize) -> Self {
        self.per_peer = max;
        self
    }

    /// Sets the bound on incoming sessions per remote IP address (default
    /// [`DEFAULT_MAX_SESSIONS_PER_ADDR`]; at least 1).
    pub fn max_sessions_per_addr(mut self, max: usize) -> Self {
        self.per_addr = max;
        self
    }

    /// Sets how many of the `max_sessions` slots incoming sessions may never take, so this
    /// node's own outgoing handshakes still find room (default: a tenth of the bound).
    pub fn outgoing_reserve(mut self, reserve: usize) -> Self {
        self.outgoing_reserve = Some(reserve);
        self
    }

    /// Uses `clock` for every time-dependent rule (default: the system clock).
    pub fn clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// Sets the bound on live sessions (default [`DEFAULT_MAX_SESSIONS`]; at least 1).
    pub fn max_sessions(mut self, max: usize) -> Self {
        self.max_sessions = max;
        self
    }

    /// Validates the configuration and generates the store's keys from the operating
    /// system's CSPRNG.
    ///
    /// Errors: [`Error::Config`] for an invalid configuration or a zero session bound,
    /// [`Error::Rng`] if the CSPRNG fails (there is no fallback, H-5).
    pub fn build(self) -> Result<SessionStore, Error> {
        self.config
            .validate("p2p")
            .map_err(|problems| Error::Config(problems.join("; ")))?;
        if self.max_sessions == 0 || self.per_peer == 0 || self.per_addr == 0 {
            return Err(Error::Config(
                "max_sessions and the per-peer and per-address quotas must be at least 1".into(),
            ));
        }
        let reserve = self
            .outgoing_reserve
            .unwrap_or(self.max_sessions / 10)
            .min(self.max_sessions.saturating_sub(1));
        let quotas = Quotas {
            per_peer: self.per_peer,
            per_addr: self.per_addr,
            incoming: self.max_sessions - reserve,
        };
        let token_key = SecretKey32::generate().map_err(|_| Error::Rng)?;
        let index_key = SecretKey32::generate().map_err(|_| Error::Rng)?;
        let decoy = token::mint_random(&token_key, "decoy")?;
        let (events, _) = broadcast::channel(EVENT_CHANNEL_CAPACITY);
        let history_limit = self.config.effective_history_limit();
        Ok(SessionStore {
            inner: Arc::new(Inner {
                state: Mutex::new(State {
                    sessions: HashMap::new(),
                    by_token: HashMap::new(),
                    history: VecDeque::with_capacity(history_limit.min(1024)),
                    cooldowns: Cooldowns::new(COOLDOWN_CAPACITY),
                    failures: FailureTracker::new(FAILURE_TRACKER_CAPACITY),
                    next_id: 0,
                    by_peer: HashMap::new(),
                    by_addr: HashMap::new(),
                    incoming: 0,
                }),
                callbacks: Mutex::new(Vec::new()),
                next_callback: AtomicU64::new(0),
                events,
                token_key,
                index_key,
                decoy,
                clock: self.clock,
                ttl: self.config.effective_ttl(),
                cooldown: self.config.effective_revoke_cooldown(),
                history_limit,
                max_sessions: self.max_sessions,
                quotas,
            }),
        })
    }
}

/// Invalidations decided under the lock, to be announced after it is released.
#[must_use = "pending invalidations must be announced with SessionStore::announce"]
pub(crate) struct Pending(Vec<InvalidationEvent>);

/// What [`SessionStore::record_failure_inner`] did.
pub(crate) enum FailureStep {
    NoSession,
    Counted(u32),
    Invalidated(u32, Pending),
}

impl SessionStore {
    /// A store with the system clock and the default session bound. See
    /// [`SessionStoreBuilder::build`] for the errors.
    pub fn new(config: &SessionConfig) -> Result<Self, Error> {
        Self::builder(config).build()
    }

    /// A builder, to set the clock or the session bound.
    pub fn builder(config: &SessionConfig) -> SessionStoreBuilder {
        SessionStoreBuilder {
            config: config.clone(),
            clock: Arc::new(SystemClock),
            max_sessions: DEFAULT_MAX_SESSIONS,
            per_peer: DEFAULT_MAX_SESSIONS_PER_PEER,
            per_addr: DEFAULT_MAX_SESSIONS_PER_ADDR,
            outgoing_reserve: None,
        }
    }

    /// The session lifetime in effect.
    pub fn ttl(&self) -> Duration {
        self.inner.ttl
    }

    /// The revoke cool-down in effect.
    pub fn revoke_cooldown(&self) -> Duration {
        self.inner.cooldown
    }

    /// How often wiring should call [`purge_expired`](Self::purge_expired): `min(ttl, 5 min)`
    /// (S-7).
    pub fn purge_interval(&self) -> Duration {
        self.inner.ttl.min(Duration::from_secs(300))
    }

    /// Creates a session with a fresh token (S-2, I-12): `created_at = now`,
    /// `expires_at = now + ttl`. Replaces the DID's previous session, whose token stops
    /// resolving at once and is wiped.
    ///
    /// Refused with [`Error::Cooldown`] while the DID or the peer ID is in a revoke cool-down
    /// (V-9), [`Error::AuthenticatedSessionExists`] if the replacement would downgrade the
    /// existing session (R-8, P-11), [`Error::StoreFull`] at the session bound, and
    /// [`Error::InvalidArgument`] for empty or oversized fields.
    pub fn create(&self, new: NewSession<'_>) -> Result<Issued, Error> {
        check_fields(&new)?;
        let token = token::mint_random(&self.inner.token_key, new.peer_did)?;
        let now = self.now();
        let expires_at = add_saturating(now, self.inner.ttl);
        let info = self.insert_entry(&new, token.duplicate(), now, expires_at)?;
        tracing::debug!(
            event = "session_created",
            peer_did = %new.peer_did,
            peer_id = %new.peer_id,
            protocol = %new.protocol,
            role = %new.role,
            authenticated = new.authenticated,
            channel_bound = new.channel_bound,
            "session created"
        );
        Ok(Issued {
            token,
            session: info,
        })
    }

    /// Mints a token for `peer_did` without storing anything: the 1.2 initiator proposes it
    /// in Finish (P-7) and stores it with [`insert_remote`](Self::insert_remote) after the
    /// responder's Result (P-10).
    pub fn mint_token(&self, peer_did: &str) -> Result<SessionToken, Error> {
        check_len("peer_did", peer_did, MAX_DID_LEN)?;
        token::mint_random(&self.inner.token_key, peer_did)
    }

    /// Stores a session whose token was chosen elsewhere: by the initiator, on the
    /// responder side (R-13, R-14, P-8, P-9), or by this node with
    /// [`mint_token`](Self::mint_token) for the 1.2 initiator (P-10).
    ///
    /// - `expires_at` must be later than now ([`Error::ExpiryNotInFuture`]); the stored
    ///   expiry is `min(expires_at, now + ttl)`, so a peer cannot extend a session beyond
    ///   the local TTL (P-11).
    /// - A token already stored for a different DID is refused ([`Error::DuplicateToken`]).
    /// - The same admission rules as [`create`](Self::create) apply, checked atomically with
    ///   the insert.
    ///
    /// Returns the stored snapshot (its `expires_at` is the final expiry to report).
    pub fn insert_remote(
        &self,
        new: NewSession<'_>,
        token: SessionToken,
        expires_at: SystemTime,
    ) -> Result<SessionInfo, Error> {
        check_fields(&new)?;
        if !token::is_well_formed(token.expose()) {
            return Err(Error::MalformedToken);
        }
        let now = self.now();
        if expires_at <= now {
            return Err(Error::ExpiryNotInFuture);
        }
        let final_expiry = expires_at.min(add_saturating(now, self.inner.ttl));
        let info = self.insert_entry(&new, token, now, final_expiry)?;
        tracing::debug!(
            event = "session_stored",
            peer_did = %new.peer_did,
            peer_id = %new.peer_id,
            protocol = %new.protocol,
            role = %new.role,
            authenticated = new.authenticated,
            channel_bound = new.channel_bound,
            "session stored"
        );
        Ok(info)
    }

    fn insert_entry(
        &self,
        new: &NewSession<'_>,
        token: SessionToken,
        now: SystemTime,
        expires_at: SystemTime,
    ) -> Result<SessionInfo, Error> {
        let index = token::index_key(&self.inner.index_key, token.expose());
        let mut st = self.lock();
        st.admit(new, now, self.inner.max_sessions, self.inner.quotas)?;
        if let Some(owner) = st.by_token.get(&index)
            && owner != new.peer_did
        {
            return Err(Error::DuplicateToken);
        }
        st.next_id += 1;
        let info = SessionInfo {
            peer_did: new.peer_did.to_owned(),
            created_at: now,
            expires_at,
            zk_verified: new.zk_verified,
            invalidated: false,
            peer_id: new.peer_id.to_owned(),
            protocol: new.protocol.to_owned(),
            role: new.role,
            authenticated: new.authenticated,
            channel_bound: new.channel_bound,
        };
        let entry = Entry {
            id: st.next_id,
            token,
            index,
            info: info.clone(),
            remote_ip: new.remote_ip.map(str::to_owned),
        };
        // The replaced session (if any) is dropped here, which wipes its token; the old
        // token's index entry is removed with it.
        let replaced = st.remove_session(new.peer_did);
        st.by_token.insert(index, new.peer_did.to_owned());
        st.account(&entry, true);
        st.sessions.insert(new.peer_did.to_owned(), entry);
        drop(st);
        drop(replaced);
        Ok(info)
    }

    /// Resolves a token presented on an A2A request from `remote_peer_id` (T-1).
    ///
    /// - The token must be 64 lowercase hex characters.
    /// - It is found through a keyed-hash index and confirmed with a constant-time
    ///   comparison.
    /// - It resolves only if the session belongs to `remote_peer_id`. A valid token
    ///   presented by any other peer gives [`Error::InvalidToken`], exactly like an unknown
    ///   token.
    /// - A session past its expiry is removed; its owner gets [`Error::Expired`], anyone
    ///   else [`Error::InvalidToken`].
    pub fn resolve(&self, token: &str, remote_peer_id: &str) -> Result<SessionInfo, Error> {
        if !token::is_well_formed(token) {
            return Err(Error::InvalidToken);
        }
        let index = token::index_key(&self.inner.index_key, token);
        let now = self.now();
        let mut st = self.lock();
        let Some(did) = st.by_token.get(&index).cloned() else {
            // Do the same comparison work as for a hit.
            let _ = self.inner.decoy.matches(token);
            let _ = mac::ct_eq(remote_peer_id.as_bytes(), remote_peer_id.as_bytes());
            return Err(Error::InvalidToken);
        };
        let Some(entry) = st.sessions.get(&did) else {
            return Err(Error::InvalidToken);
        };
        let token_ok = entry.token.matches(token);
        let peer_ok = mac::ct_eq(entry.info.peer_id.as_bytes(), remote_peer_id.as_bytes());
        let expired = is_expired(&entry.info, now);
        let info = entry.info.clone();
        if !token_ok {
            return Err(Error::InvalidToken);
        }
        if expired {
            let removed = st.remove_session(&did);
            drop(st);
            drop(removed);
            return Err(if peer_ok {
                Error::Expired
            } else {
                Error::InvalidToken
            });
        }
        if !peer_ok {
            return Err(Error::InvalidToken);
        }
        Ok(info)
    }

    /// Whether `token` is the token of `peer_did`'s live session (S-3). An expired session is
    /// removed. A wrong token does not remove the session. The comparison is constant time.
    pub fn validate(&self, peer_did: &str, token: &str) -> bool {
        let now = self.now();
        let mut st = self.lock();
        match st.live(peer_did, now) {
            Some(entry) => entry.token.matches(token),
            None => false,
        }
    }

    /// A snapshot of `peer_did`'s live session (S-4). An expired session is removed and
    /// `None` returned.
    pub fn get(&self, peer_did: &str) -> Option<SessionInfo> {
        let now = self.now();
        let mut st = self.lock();
        st.live(peer_did, now).map(|e| e.info.clone())
    }

    /// A copy of the token of `peer_did`'s live session, for presenting it on an A2A request
    /// to that peer. `None` when there is no live session (an expired one is removed).
    pub fn token_for(&self, peer_did: &str) -> Option<SessionToken> {
        let now = self.now();
        let mut st = self.lock();
        st.live(peer_did, now).map(|e| e.token.duplicate())
    }

    /// Snapshots of every live session, sorted by peer DID (S-6). Removes nothing; expired
    /// sessions are left out.
    pub fn list(&self) -> Vec<SessionInfo> {
        let now = self.now();
        let st = self.lock();
        let mut out: Vec<SessionInfo> = st
            .sessions
            .values()
            .filter(|e| !is_expired(&e.info, now))
            .map(|e| e.info.clone())
            .collect();
        drop(st);
        out.sort_by(|a, b| a.peer_did.cmp(&b.peer_did));
        out
    }

    /// Number of live (unexpired) sessions.
    pub fn len(&self) -> usize {
        let now = self.now();
        self.lock()
            .sessions
            .values()
            .filter(|e| !is_expired(&e.info, now))
            .count()
    }

    /// Whether there is no live session.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Deletes `peer_did`'s session without history, callback or cool-down (S-5). Returns
    /// whether one was stored. To end a session for a reason, use
    /// [`invalidate`](Self::invalidate).
    pub fn remove(&self, peer_did: &str) -> bool {
        let removed = self.lock().remove_session(peer_did);
        removed.is_some()
    }

    /// Deletes `peer_did`'s session only if its token is `token` (constant-time compare), so
    /// a handshake that failed after storing its session (I-13, P-9) cannot remove a newer
    /// session stored meanwhile by another handshake. Returns whether it removed one.
    pub fn remove_if_token(&self, peer_did: &str, token: &SessionToken) -> bool {
        let mut st = self.lock();
        let matches = st
            .sessions
            .get(peer_did)
            .is_some_and(|e| e.token.matches(token.expose()));
        if !matches {
            return false;
        }
        let removed = st.remove_session(peer_did);
        drop(st);
        removed.is_some()
    }

    /// Removes every expired session (S-7) and every ended cool-down. Returns the number of
    /// sessions removed.
    pub fn purge_expired(&self) -> usize {
        let now = self.now();
        let mut st = self.lock();
        st.cooldowns.purge(now);
        let removed = st.purge_expired(now);
        drop(st);
        removed.len()
    }

    /// Whether a new session may be made for `peer_did` arriving from `peer_id` (V-9, R-7):
    /// [`Error::Cooldown`] while either is in a revoke cool-down. The handshake calls this
    /// before approval; [`create`](Self::create) and [`insert_remote`](Self::insert_remote)
    /// check it again atomically.
    pub fn may_handshake(&self, peer_did: &str, peer_id: &str) -> Result<(), Error> {
        let now = self.now();
        self.lock().cooldowns.check(peer_did, peer_id, now)
    }

    /// Whether an incoming session for `claimed_did` from `peer_id` at `remote_ip` would
    /// be admitted now: cool-downs, the store bound, the room kept for outgoing sessions and
    /// the per-peer and per-address quotas. The responder asks before it verifies or signs
    /// anything, so a handshake the store cannot take costs it nothing; the insert checks
    /// again atomically. Nothing is reserved.
    pub fn may_admit_incoming(
        &self,
        claimed_did: &str,
        peer_id: &str,
        remote_ip: Option<&str>,
    ) -> Result<(), Error> {
        let now = self.now();
        let new = NewSession {
            peer_did: claimed_did,
            peer_id,
            protocol: "-",
            role: Role::Responder,
            // The most permissive shape: the replacement rules are the insert's business.
            authenticated: true,
            channel_bound: true,
            zk_verified: false,
            remote_ip,
        };
        self.lock()
            .admit(&new, now, self.inner.max_sessions, self.inner.quotas)
    }

    /// Incoming sessions held for `peer_id` (live or not yet purged).
    pub fn incoming_for_peer(&self, peer_id: &str) -> usize {
        self.lock().by_peer.get(peer_id).map_or(0, HashSet::len)
    }

    /// Invalidates `peer_did`'s session (V-2). Returns whether a live session existed.
    ///
    /// Whether or not one existed, a history record `{peerDid, reason, invalidatedAt}` is
    /// appended and callbacks and subscribers are told, once, after the lock is released.
    /// `repeated_failures`, `reputation_drop` and `manual_revoke` also start the DID's revoke
    /// cool-down, and that of the removed session's peer ID.
    pub fn invalidate(&self, peer_did: &str, reason: InvalidationReason) -> bool {
        let (had, pending) = self.invalidate_deferred(peer_did, reason);
        self.announce(pending);
        had
    }

    pub(crate) fn invalidate_deferred(
        &self,
        peer_did: &str,
        reason: InvalidationReason,
    ) -> (bool, Pending) {
        let now = self.now();
        let mut st = self.lock();
        let removed = st.take_live(peer_did, now);
        let event = self.record_invalidation(&mut st, peer_did, removed.as_ref(), reason, now);
        drop(st);
        let had = removed.is_some();
        drop(removed);
        (had, Pending(vec![event]))
    }

    /// Invalidates every live session (V-3), all with the same timestamp. Expired sessions
    /// are purged first, without records. Returns the number invalidated. An empty store
    /// produces no record and no callback.
    pub fn invalidate_all(&self, reason: InvalidationReason) -> usize {
        let now = self.now();
        let mut st = self.lock();
        let expired = st.purge_expired(now);
        let dids: Vec<String> = st.sessions.keys().cloned().collect();
        let mut removed = Vec::with_capacity(dids.len());
        let mut events = Vec::with_capacity(dids.len());
        for did in dids {
            let entry = st.remove_session(&did);
            events.push(self.record_invalidation(&mut st, &did, entry.as_ref(), reason, now));
            removed.push(entry);
        }
        drop(st);
        drop(expired);
        drop(removed);
        let n = events.len();
        self.announce(Pending(events));
        n
    }

    /// Invalidates the live sessions for which `predicate` returns true (V-4). Returns the
    /// number invalidated.
    ///
    /// The predicate runs on snapshots with no lock held, so it may call the store. A
    /// session is removed only if it is still the very session the predicate saw (not
    /// replaced meanwhile).
    pub fn invalidate_by_condition<F>(&self, reason: InvalidationReason, predicate: F) -> usize
    where
        F: Fn(&SessionInfo) -> bool,
    {
        let now = self.now();
        let snapshot: Vec<(u64, SessionInfo)> = {
            let st = self.lock();
            st.sessions
                .values()
                .filter(|e| !is_expired(&e.info, now))
                .map(|e| (e.id, e.info.clone()))
                .collect()
        };
        let chosen: Vec<(u64, String)> = snapshot
            .into_iter()
            .filter(|(_, info)| predicate(info))
            .map(|(id, info)| (id, info.peer_did))
            .collect();
        if chosen.is_empty() {
            return 0;
        }
        let now = self.now();
        let mut st = self.lock();
        let mut removed = Vec::with_capacity(chosen.len());
        let mut events = Vec::with_capacity(chosen.len());
        for (id, did) in chosen {
            let still_same = st
                .sessions
                .get(&did)
                .is_some_and(|e| e.id == id && !is_expired(&e.info, now));
            if !still_same {
                continue;
            }
            let entry = st.remove_session(&did);
            events.push(self.record_invalidation(&mut st, &did, entry.as_ref(), reason, now));
            removed.push(entry);
        }
        drop(st);
        drop(removed);
        let n = events.len();
        self.announce(Pending(events));
        n
    }

    /// The invalidation history, oldest first (V-5). Bounded to
    /// `invalidationHistoryLimit` records; the oldest are dropped first.
    pub fn history(&self) -> Vec<InvalidationRecord> {
        self.lock().history.iter().cloned().collect()
    }

    /// Registers a callback called once per invalidated DID (V-2, V-3), after the store's
    /// lock is released, on the invalidating thread. It may call back into the store. A
    /// panicking callback propagates to the caller of the invalidation, after the store's
    /// state is already consistent; the callbacks after it are skipped for that event.
    pub fn add_invalidation_callback<F>(&self, callback: F) -> CallbackId
    where
        F: Fn(&InvalidationEvent) + Send + Sync + 'static,
    {
        let id = CallbackId(self.inner.next_callback.fetch_add(1, Ordering::Relaxed));
        self.inner
            .callbacks
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push((id, Arc::new(callback)));
        id
    }

    /// Unregisters a callback. Returns whether it was registered.
    pub fn remove_invalidation_callback(&self, id: CallbackId) -> bool {
        let mut cbs = self
            .inner
            .callbacks
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let before = cbs.len();
        cbs.retain(|(i, _)| *i != id);
        cbs.len() != before
    }

    /// A receiver of every invalidation event from now on (tokio broadcast; see
    /// [`EVENT_CHANNEL_CAPACITY`] for slow receivers).
    pub fn subscribe(&self) -> broadcast::Receiver<InvalidationEvent> {
        self.inner.events.subscribe()
    }

    // --- used by the security event handler -------------------------------------------

    /// One failure for `peer_did`, counted against its live session; at `max_failures` the
    /// session is invalidated with `repeated_failures` and the counter deleted — all under
    /// one lock acquisition, so concurrent failures trigger exactly one invalidation (E-2).
    /// A DID without a live session is not counted.
    pub(crate) fn record_failure_inner(&self, peer_did: &str, max_failures: u32) -> FailureStep {
        let now = self.now();
        let mut st = self.lock();
        let Some(session_id) = st.live(peer_did, now).map(|e| e.id) else {
            st.failures.forget(peer_did);
            return FailureStep::NoSession;
        };
        let count = st.failures.increment(peer_did, session_id);
        if count < max_failures {
            return FailureStep::Counted(count);
        }
        st.failures.forget(peer_did);
        let removed = st.take_live(peer_did, now);
        let event = self.record_invalidation(
            &mut st,
            peer_did,
            removed.as_ref(),
            InvalidationReason::RepeatedFailures,
            now,
        );
        drop(st);
        drop(removed);
        FailureStep::Invalidated(count, Pending(vec![event]))
    }

    pub(crate) fn record_success_inner(&self, peer_did: &str) {
        self.lock().failures.forget(peer_did);
    }

    pub(crate) fn failure_count(&self, peer_did: &str) -> u32 {
        let now = self.now();
        let mut st = self.lock();
        match st.live(peer_did, now).map(|e| e.id) {
            Some(id) => st.failures.count(peer_did, id),
            None => 0,
        }
    }

    pub(crate) fn tracked_failures(&self) -> usize {
        self.lock().failures.len()
    }

    /// Tells subscribers and callbacks about invalidations, with no lock held.
    pub(crate) fn announce(&self, pending: Pending) {
        if pending.0.is_empty() {
            return;
        }
        let callbacks: Vec<InvalidationCallback> = self
            .inner
            .callbacks
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .map(|(_, cb)| Arc::clone(cb))
            .collect();
        for event in pending.0 {
            tracing::info!(
                event = "session_invalidated",
                peer_did = %event.record.peer_did,
                reason = %event.record.reason,
                had_session = event.had_session,
                "session invalidated"
            );
            // No receiver is not an error: nobody subscribed.
            let _ = self.inner.events.send(event.clone());
            for cb in &callbacks {
                cb(&event);
            }
        }
    }

    // --- internals --------------------------------------------------------------------

    fn now(&self) -> SystemTime {
        self.inner.clock.now()
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // No user code runs under this lock, so a poisoned lock can only come from a bug in
        // this module; the state is still structurally valid.
        self.inner
            .state
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Appends the history record, starts the cool-down if the reason calls for one, and
    /// builds the event. Called under the lock.
    fn record_invalidation(
        &self,
        st: &mut State,
        peer_did: &str,
        removed: Option<&Entry>,
        reason: InvalidationReason,
        now: SystemTime,
    ) -> InvalidationEvent {
        let record = InvalidationRecord {
            peer_did: peer_did.to_owned(),
            reason,
            invalidated_at: now,
        };
        while st.history.len() >= self.inner.history_limit {
            st.history.pop_front();
        }
        st.history.push_back(record.clone());
        let peer_id = removed.map(|e| e.info.peer_id.clone());
        if reason.starts_cooldown() {
            let until = add_saturating(now, self.inner.cooldown);
            // X-3 (issue 17): an unauthenticated session only claimed its DID, so its
            // automatic invalidation cools down its peer ID, never the DID's real owner.
            let claimed = removed.filter(|e| !e.info.authenticated);
            if let Some(e) = claimed
                && reason != InvalidationReason::ManualRevoke
            {
                st.cooldowns.add_peer(&e.info.peer_id, until, now);
            } else if reason == InvalidationReason::ManualRevoke {
                st.cooldowns
                    .add_manual(peer_did, peer_id.as_deref(), until, now);
            } else {
                st.cooldowns.add(peer_did, peer_id.as_deref(), until, now);
            }
        }
        InvalidationEvent {
            record,
            had_session: removed.is_some(),
            peer_id,
        }
    }

    #[cfg(test)]
    pub(crate) fn check_invariants(&self) {
        let st = self.lock();
        assert_eq!(st.sessions.len(), st.by_token.len(), "index out of step");
        for (index, did) in &st.by_token {
            let e = st
                .sessions
                .get(did)
                .expect("index points at a missing session");
            assert_eq!(&e.index, index);
            assert_eq!(&e.info.peer_did, did);
            assert_eq!(
                token::index_key(&self.inner.index_key, e.token.expose()),
                *index
            );
        }
        assert!(st.sessions.len() <= self.inner.max_sessions);
        assert!(st.history.len() <= self.inner.history_limit);
    }
}

impl fmt::Debug for SessionStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let st = self.lock();
        f.debug_struct("SessionStore")
            .field("sessions", &st.sessions.len())
            .field("history", &st.history.len())
            .field("cooldowns", &st.cooldowns.len())
            .field("ttl", &self.inner.ttl)
            .field("max_sessions", &self.inner.max_sessions)
            .finish_non_exhaustive()
    }
}

impl State {
    /// The DID's session if it is live; an expired one is removed (and wiped).
    fn live(&mut self, did: &str, now: SystemTime) -> Option<&Entry> {
        let expired = self.sessions.get(did).map(|e| is_expired(&e.info, now))?;
        if expired {
            let _wiped = self.remove_session(did);
            return None;
        }
        self.sessions.get(did)
    }

    /// Removes and returns the DID's session if it is live; an expired one is removed and
    /// `None` returned.
    fn take_live(&mut self, did: &str, now: SystemTime) -> Option<Entry> {
        let entry = self.remove_session(did)?;
        if is_expired(&entry.info, now) {
            None
        } else {
            Some(entry)
        }
    }

    /// Removes the DID's session and its index entry and failure counter. The caller drops
    /// the returned entry (after releasing the lock), which wipes its token.
    fn remove_session(&mut self, did: &str) -> Option<Entry> {
        let entry = self.sessions.remove(did)?;
        self.by_token.remove(&entry.index);
        self.failures.forget(did);
        self.account(&entry, false);
        Some(entry)
    }

    /// Adds (`add`) or removes an incoming session from the quota indexes.
    fn account(&mut self, entry: &Entry, add: bool) {
        if entry.info.role != Role::Responder {
            return;
        }
        let did = &entry.info.peer_did;
        let keys = [
            (&mut self.by_peer, Some(entry.info.peer_id.as_str())),
            (&mut self.by_addr, entry.remote_ip.as_deref()),
        ];
        for (map, key) in keys {
            let Some(key) = key else { continue };
            if add {
                map.entry(key.to_owned()).or_default().insert(did.clone());
            } else if let Some(set) = map.get_mut(key) {
                set.remove(did);
                if set.is_empty() {
                    map.remove(key);
                }
            }
        }
        if add {
            self.incoming += 1;
        } else {
            self.incoming = self.incoming.saturating_sub(1);
        }
    }

    /// Removes the expired sessions among `dids` (a quota's members; bounded by the quota).
    fn purge_among(&mut self, dids: Vec<String>, now: SystemTime) {
        for did in dids {
            if self
                .sessions
                .get(&did)
                .is_some_and(|e| is_expired(&e.info, now))
            {
                let _wiped = self.remove_session(&did);
            }
        }
    }

    /// Whether `key`'s set in the quota map `which` is below `max`, after purging its
    /// expired members.
    fn under_quota(&mut self, which: QuotaKind, key: &str, max: usize, now: SystemTime) -> bool {
        let map = match which {
            QuotaKind::Peer => &self.by_peer,
            QuotaKind::Addr => &self.by_addr,
        };
        let Some(set) = map.get(key) else {
            return true;
        };
        if set.len() < max {
            return true;
        }
        let members: Vec<String> = set.iter().cloned().collect();
        self.purge_among(members, now);
        let map = match which {
            QuotaKind::Peer => &self.by_peer,
            QuotaKind::Addr => &self.by_addr,
        };
        map.get(key).map_or(0, HashSet::len) < max
    }

    fn purge_expired(&mut self, now: SystemTime) -> Vec<Entry> {
        let expired: Vec<String> = self
            .sessions
            .iter()
            .filter(|(_, e)| is_expired(&e.info, now))
            .map(|(did, _)| did.clone())
            .collect();
        expired
            .iter()
            .filter_map(|did| self.remove_session(did))
            .collect()
    }

    /// Admission rules for a new session, checked under the lock right before the insert.
    fn admit(
        &mut self,
        new: &NewSession<'_>,
        now: SystemTime,
        max: usize,
        quotas: Quotas,
    ) -> Result<(), Error> {
        self.cooldowns.check(new.peer_did, new.peer_id, now)?;
        let mut same_slot = false;
        if let Some(existing) = self.live(new.peer_did, now) {
            let e = &existing.info;
            // P-11: a channel-bound session is replaced only by another channel-bound one.
            let downgrade = e.channel_bound && !new.channel_bound;
            // an unauthenticated claim cannot displace an authenticated session held
            // by another peer.
            let spoof = !new.authenticated && e.authenticated && e.peer_id != new.peer_id;
            if downgrade || spoof {
                return Err(Error::AuthenticatedSessionExists);
            }
            // A replacement from the same peer, address and role takes no new slot.
            same_slot = e.role == new.role
                && e.peer_id == new.peer_id
                && existing.remote_ip.as_deref() == new.remote_ip;
            if new.role == Role::Initiator || same_slot {
                return Ok(());
            }
        }
        let replacing = self.sessions.contains_key(new.peer_did);
        if !replacing && self.sessions.len() >= max {
            let _wiped = self.purge_expired(now);
        }
        if !replacing && self.sessions.len() >= max {
            return Err(Error::StoreFull { max });
        }
        if new.role != Role::Responder || same_slot {
            return Ok(());
        }
        // Incoming: the room kept for outgoing sessions, then the per-peer and per-address
        // quotas (issue 17: one peer ID minting DIDs must not fill the store).
        if self.incoming >= quotas.incoming {
            let _wiped = self.purge_expired(now);
            if self.incoming >= quotas.incoming {
                return Err(Error::QuotaExceeded {
                    what: "incoming sessions",
                    max: quotas.incoming,
                });
            }
        }
        if !self.under_quota(QuotaKind::Peer, new.peer_id, quotas.per_peer, now) {
            return Err(Error::QuotaExceeded {
                what: "sessions per peer ID",
                max: quotas.per_peer,
            });
        }
        if let Some(ip) = new.remote_ip
            && !self.under_quota(QuotaKind::Addr, ip, quotas.per_addr, now)
        {
            return Err(Error::QuotaExceeded {
                what: "sessions per address",
                max: quotas.per_addr,
            });
        }
        Ok(())
    }
}

#[derive(Clone, Copy)]
enum QuotaKind {
    Peer,
    Addr,
}

/// S-8: expired when `now > expires_at` (strict).
fn is_expired(info: &SessionInfo, now: SystemTime) -> bool {
    now > info.expires_at
}

fn check_fields(new: &NewSession<'_>) -> Result<(), Error> {
    check_len("peer_did", new.peer_did, MAX_DID_LEN)?;
    check_len("peer_id", new.peer_id, MAX_PEER_ID_LEN)?;
    check_len("protocol", new.protocol, MAX_PROTOCOL_LEN)
}

fn check_len(field: &'static str, value: &str, max: usize) -> Result<(), Error> {
    if value.is_empty() {
        return Err(Error::InvalidArgument {
            field,
            problem: "must not be empty",
        });
    }
    if value.len() > max {
        return Err(Error::InvalidArgument {
            field,
            problem: "too long",
        });
    }
    if value.chars().any(char::is_control) {
        return Err(Error::InvalidArgument {
            field,
            problem: "contains control characters",
        });
    }
    Ok(())
}

#[cfg(test)]
#[path = "store_tests.rs"]
mod tests;
