//! The seams a node plugs into the handshake: approval (§3.4), zero-knowledge ownership proofs
//! (§3.5) and downgrade pins (P-12).

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime};

use async_trait::async_trait;
use serde::Serialize;

/// An incoming handshake waiting for approval. Never sent on the wire.
///
/// JSON keys, if serialised: `peerId`, `peerDid`, `remoteAddr`, `timestamp` (RFC 3339 in UTC
/// with nanoseconds and trailing zeros trimmed, as Go's `time.Time`), plus the Rust addition
/// `authenticated`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PendingHandshake {
    /// The remote node peer ID (base58).
    pub peer_id: String,
    /// The DID the peer claims (proved when `authenticated`).
    pub peer_did: String,
    /// The connection's remote multiaddr.
    pub remote_addr: String,
    /// When the approval was requested.
    #[serde(serialize_with = "rfc3339")]
    pub timestamp: SystemTime,
    /// Whether the peer proved control of the DID's key; a UI should show "unverified"
    /// otherwise.
    pub authenticated: bool,
}

fn rfc3339<S: serde::Serializer>(t: &SystemTime, s: S) -> Result<S::Ok, S::Error> {
    let nanos = crate::clock::unix_nanos(*t);
    let odt = time::OffsetDateTime::from_unix_timestamp_nanos(nanos)
        .map_err(serde::ser::Error::custom)?;
    let text = odt
        .format(&time::format_description::well_known::Rfc3339)
        .map_err(serde::ser::Error::custom)?;
    s.serialize_str(&text)
}

/// Decides whether an incoming handshake may proceed. Called by the responder after the
/// challenge checks and before it signs anything, inside the handshake deadline.
///
/// `Ok(true)` grants, `Ok(false)` denies ([`crate::Error::ApprovalDenied`]), `Err` rejects
/// with [`crate::Error::ApprovalError`]. With no hook configured the handshake proceeds
/// node wiring MUST configure one.
#[async_trait]
pub trait ApprovalHook: Send + Sync {
    /// Asks for approval.
    async fn approve(&self, pending: &PendingHandshake) -> Result<bool, String>;

    /// Whether a human may be asked (a prompt per handshake). Only then is one pending
    /// approval per peer enforced; an automatic policy answers at once and the H-3
    /// bound of 4 handshakes per peer applies alone (issue 17).
    fn is_interactive(&self) -> bool {
        true
    }
}

/// What a ZK ownership check concluded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ZkOutcome {
    /// No ZK ownership scheme is available.
    Unsupported,
    /// The proof verified against the bound public inputs.
    Verified,
    /// The proof did not verify.
    Invalid,
}

/// What a ZK ownership proof is bound to (Z-4, kms-and-zk spec §3.11.1): this handshake's
/// nonce, both DIDs and the protocol, plus the responder's wallet key that certifies the
/// identity commitment.
#[derive(Debug, Clone, Copy)]
pub struct ZkInputs<'a> {
    /// The challenge nonce.
    pub nonce: &'a [u8],
    /// The responder's 33-byte wallet key.
    pub public_key: &'a [u8],
    /// The initiator's DID.
    pub initiator_did: &'a str,
    /// The responder's DID.
    pub responder_did: &'a str,
    /// The handshake protocol ID (`/lango/handshake/1.1.0`, ...).
    pub protocol_id: &'a str,
}

/// The ZK fields of a challenge response.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ZkProofFields {
    /// `<scheme>/<circuit>`, e.g. `halo2-ipa-pasta/wallet_ownership/v2`.
    pub scheme: String,
    /// The proof transcript.
    pub proof: Vec<u8>,
    /// The prover's 32-byte identity commitment.
    pub id_commitment: Vec<u8>,
    /// The 32-byte tag over this handshake's binding.
    pub tag: Vec<u8>,
    /// The wallet's 65-byte signature certifying the identity commitment.
    pub id_binding: Vec<u8>,
}

/// Verifies zero-knowledge proofs of ownership (initiator side). Z-4: a proof only ever comes
/// **in addition** to the signature, never instead of it; the signature is always checked
/// first, and a proof is only looked at when its scheme is one this hook advertised.
#[async_trait]
pub trait ZkHook: Send + Sync {
    /// The schemes advertised in this node's challenges (`zkSchemes`); empty for none.
    fn schemes(&self) -> Vec<String> {
        Vec::new()
    }

    /// Verifies a received proof. Only called after the response signature verified.
    async fn verify(&self, fields: &ZkProofFields, inputs: ZkInputs<'_>) -> ZkOutcome;
}

/// Proves ownership (responder side), for initiators that advertised [`Self::scheme`].
#[async_trait]
pub trait ZkProver: Send + Sync {
    /// The scheme this prover produces.
    fn scheme(&self) -> &str;

    /// A proof bound to `inputs`, or why none could be made (the response then carries the
    /// signature only).
    async fn prove(&self, inputs: ZkInputs<'_>) -> Result<ZkProofFields, String>;
}

/// No ZK: nothing advertised, every proof [`ZkOutcome::Unsupported`], so `zk_verified`
/// stays false (Z-4).
#[derive(Debug, Default, Clone, Copy)]
pub struct NoZk;

#[async_trait]
impl ZkHook for NoZk {
    async fn verify(&self, _fields: &ZkProofFields, _inputs: ZkInputs<'_>) -> ZkOutcome {
        ZkOutcome::Unsupported
    }
}

/// Which DIDs this node refuses outright (credential revocation). Consulted by the responder
/// before approval and by the initiator before it stores a session; a lookup error refuses
/// the handshake (fail closed).
pub trait RevocationCheck: Send + Sync {
    /// Whether `did` is revoked.
    fn is_revoked(&self, did: &str) -> Result<bool, String>;
}

/// Downgrade pins (P-12): peers known to speak 1.2, which legacy handshakes must refuse.
pub trait DowngradePins: Send + Sync {
    /// Whether this DID is pinned to 1.2.
    fn is_did_pinned(&self, did: &str) -> bool;
    /// Whether this node peer ID is pinned to 1.2.
    fn is_peer_pinned(&self, peer_id: &str) -> bool;
    /// Records a successful 1.2 handshake this node chose to run (it dialled the peer):
    /// `did → peer_id` and `peer_id`. Such a pin is established: no newcomer evicts it.
    fn record(&self, did: &str, peer_id: &str);
    /// Records a successful incoming 1.2 handshake from `peer_id` at `remote_addr` (a
    /// multiaddr). Incoming pins are subject to the per-peer and per-address quotas and never
    /// evict an established pin (P-12 as amended); returns whether the pin was recorded.
    fn record_incoming(&self, did: &str, peer_id: &str, remote_addr: &str) -> bool {
        let _ = remote_addr;
        self.record(did, peer_id);
        true
    }
}

/// The default bound of [`MemoryPins`] (P-12).
pub const DEFAULT_PIN_CAPACITY: usize = 10_000;
/// Default number of new DIDs one remote peer ID may pin per [`PinPolicy::period`].
pub const DEFAULT_NEW_PINS_PER_PEER: u32 = 32;
/// Default number of new DIDs one remote IP address may pin per [`PinPolicy::period`].
pub const DEFAULT_NEW_PINS_PER_ADDR: u32 = 256;
/// How many eviction candidates one new pin looks at, at most (keeps upkeep O(log n)).
const EVICTION_SCAN: usize = 16;
/// Bound on the quota maps (peer IDs and addresses tracked at once).
const QUOTA_KEYS: usize = 4096;

/// Whether a DID is established on this node (a live session, a firewall rule, a reputation
/// record, an operator action): its pin is never evicted by a newcomer.
pub type PinGuard = Arc<dyn Fn(&str) -> bool + Send + Sync>;

/// Bounds of [`MemoryPins`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PinPolicy {
    /// Most pinned DIDs (0 means [`DEFAULT_PIN_CAPACITY`]).
    pub capacity: usize,
    /// New DIDs one remote peer ID may pin per period (0 means
    /// [`DEFAULT_NEW_PINS_PER_PEER`]).
    pub new_per_peer: u32,
    /// New DIDs one remote IP address may pin per period (0 means
    /// [`DEFAULT_NEW_PINS_PER_ADDR`]).
    pub new_per_addr: u32,
    /// The quota period (zero means one hour).
    pub period: Duration,
}

impl Default for PinPolicy {
    fn default() -> Self {
        Self {
            capacity: DEFAULT_PIN_CAPACITY,
            new_per_peer: DEFAULT_NEW_PINS_PER_PEER,
            new_per_addr: DEFAULT_NEW_PINS_PER_ADDR,
            period: Duration::from_secs(3600),
        }
    }
}

impl PinPolicy {
    fn effective(mut self) -> Self {
        let d = Self::default();
        if self.capacity == 0 {
            self.capacity = d.capacity;
        }
        if self.new_per_peer == 0 {
            self.new_per_peer = d.new_per_peer;
        }
        if self.new_per_addr == 0 {
            self.new_per_addr = d.new_per_addr;
        }
        if self.period.is_zero() {
            self.period = d.period;
        }
        self
    }
}

/// What one [`MemoryPins`] record did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PinChange {
    /// The pin is held now.
    pub recorded: bool,
    /// The DID whose pin made room, if any.
    pub evicted: Option<String>,
}

#[derive(Debug)]
struct PinEntry {
    peer: String,
    tick: u64,
    /// Established by this node's own action (outgoing handshake, load from disk of an
    /// established pin): never in the eviction order.
    sticky: bool,
}

/// New-pin counters per key over fixed windows, bounded, with O(1) amortised upkeep: window
/// ends are monotonic in insertion order, so ended windows are popped from the front.
#[derive(Debug, Default)]
pub(crate) struct Quota {
    counts: HashMap<String, (Instant, u32)>,
    ends: VecDeque<(Instant, String)>,
}

impl Quota {
    /// Takes one unit for `key` unless it has used `max` this window.
    pub(crate) fn take(&mut self, key: &str, max: u32, period: Duration, now: Instant) -> bool {
        while let Some((end, k)) = self.ends.front() {
            if *end > now {
                break;
            }
            if self.counts.get(k).is_some_and(|(e, _)| e == end) {
                self.counts.remove(k);
            }
            self.ends.pop_front();
        }
        if let Some((_, n)) = self.counts.get_mut(key) {
            if *n >= max {
                return false;
            }
            *n += 1;
            return true;
        }
        if self.counts.len() >= QUOTA_KEYS {
            // Fail closed: too many distinct sources at once.
            return false;
        }
        let end = now + period;
        self.counts.insert(key.to_owned(), (end, 1));
        self.ends.push_back((end, key.to_owned()));
        true
    }
}

#[derive(Default)]
struct PinState {
    tick: u64,
    dids: HashMap<String, PinEntry>,
    /// Tick → DID of the evictable (not sticky) pins, least recently seen first.
    order: BTreeMap<u64, String>,
    /// Peer ID → number of pinned DIDs recorded with it.
    peers: HashMap<String, usize>,
    by_peer: Quota,
    by_addr: Quota,
    not_recorded: u64,
    guard: Option<PinGuard>,
}

impl PinState {
    fn next_tick(&mut self) -> u64 {
        self.tick += 1;
        self.tick
    }

    fn remove(&mut self, did: &str) -> Option<PinEntry> {
        let e = self.dids.remove(did)?;
        self.order.remove(&e.tick);
        if let Some(n) = self.peers.get_mut(&e.peer) {
            *n -= 1;
            if *n == 0 {
                self.peers.remove(&e.peer);
            }
        }
        Some(e)
    }

    fn insert(&mut self, did: &str, peer: &str, sticky: bool) {
        let tick = self.next_tick();
        if !sticky {
            self.order.insert(tick, did.to_owned());
        }
        *self.peers.entry(peer.to_owned()).or_insert(0) += 1;
        self.dids.insert(
            did.to_owned(),
            PinEntry {
                peer: peer.to_owned(),
                tick,
                sticky,
            },
        );
    }

    /// Refreshes a pin already held (same or new peer ID); sticky stays sticky.
    fn refresh(&mut self, did: &str, peer: &str, sticky: bool) {
        let was_sticky = self.remove(did).is_some_and(|e| e.sticky);
        self.insert(did, peer, sticky || was_sticky);
    }

    /// Makes room for one pin: evicts the least recently seen pin that is neither sticky nor
    /// established, looking at no more than [`EVICTION_SCAN`] candidates (an established one
    /// is moved to the recent end). `None` when nothing may go.
    fn make_room(&mut self) -> Option<String> {
        for _ in 0..EVICTION_SCAN {
            let (_, did) = self.order.pop_first()?;
            let established = self.guard.as_ref().is_some_and(|g| g(&did));
            if established {
                let tick = self.next_tick();
                if let Some(e) = self.dids.get_mut(&did) {
                    e.tick = tick;
                    self.order.insert(tick, did);
                }
                continue;
            }
            // Re-insert so `remove` finds it consistent, then drop it.
            if let Some(tick) = self.dids.get(&did).map(|e| e.tick) {
                self.order.insert(tick, did.clone());
            }
            self.remove(&did);
            return Some(did);
        }
        None
    }
}

/// In-memory downgrade pins, bounded (P-12 as amended by issue 17).
///
/// - A pin recorded by [`DowngradePins::record`] (this node dialled the peer) is sticky.
/// - An incoming pin ([`DowngradePins::record_incoming`]) for a new DID uses one unit of the
///   remote peer ID's and the remote address's new-pin quota ([`PinPolicy`]); without quota
///   it is not recorded (the handshake still succeeds).
/// - When the table is full, a new pin evicts the least recently seen pin that is not
///   sticky and whose DID the [`PinGuard`] does not call established; if there is none among
///   the oldest few, the new pin is not recorded and [`MemoryPins::not_recorded`] counts it.
/// - Every operation is O(log n) in the number of pins.
///
/// Persisting pins is the node's job (P-12 SHOULD); this type lasts as long as the process.
pub struct MemoryPins {
    policy: PinPolicy,
    state: Mutex<PinState>,
}

impl std::fmt::Debug for MemoryPins {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryPins")
            .field("policy", &self.policy)
            .field("len", &self.len())
            .finish_non_exhaustive()
    }
}

impl MemoryPins {
    /// Pins with the given bound (0 means [`DEFAULT_PIN_CAPACITY`]) and the default quotas.
    pub fn new(capacity: usize) -> Self {
        Self::with_policy(PinPolicy {
            capacity,
            ..PinPolicy::default()
        })
    }

    /// Pins with the given bounds.
    pub fn with_policy(policy: PinPolicy) -> Self {
        Self {
            policy: policy.effective(),
            state: Mutex::new(PinState::default()),
        }
    }

    /// The bounds in effect.
    pub fn policy(&self) -> &PinPolicy {
        &self.policy
    }

    /// Sets what makes a DID established (its pin is never evicted by a newcomer). Called
    /// under the pins' lock, so it must not call back into these pins.
    pub fn set_guard(&self, guard: PinGuard) {
        self.lock().guard = Some(guard);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, PinState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Removes the pin of a DID (and its peer ID's, if no other DID pins it). Operator action.
    pub fn unpin(&self, did: &str) -> bool {
        self.lock().remove(did).is_some()
    }

    /// The number of pinned DIDs.
    pub fn len(&self) -> usize {
        self.lock().dids.len()
    }

    /// Whether nothing is pinned.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// How many pins were not recorded (quota spent, or the table full of established pins).
    pub fn not_recorded(&self) -> u64 {
        self.lock().not_recorded
    }

    /// Records a pin and says what changed.
    pub fn record_change(&self, did: &str, peer_id: &str, source: PinSource<'_>) -> PinChange {
        let sticky = matches!(source, PinSource::Outgoing);
        let incoming = match source {
            PinSource::Incoming { remote_addr } => Some(remote_addr),
            _ => None,
        };
        let mut st = self.lock();
        if st.dids.contains_key(did) {
            st.refresh(did, peer_id, sticky);
            return PinChange {
                recorded: true,
                evicted: None,
            };
        }
        if let Some(addr) = incoming {
            let now = Instant::now();
            let p = &self.policy;
            let ip = ip_of_multiaddr(addr);
            let peer_ok = st.by_peer.take(peer_id, p.new_per_peer, p.period, now);
            let addr_ok =
                peer_ok && ip.is_none_or(|ip| st.by_addr.take(ip, p.new_per_addr, p.period, now));
            if !addr_ok {
                st.not_recorded += 1;
                return PinChange::default();
            }
        }
        let mut evicted = None;
        if st.dids.len() >= self.policy.capacity {
            evicted = st.make_room();
            if evicted.is_none() {
                st.not_recorded += 1;
                return PinChange::default();
            }
        }
        st.insert(did, peer_id, sticky);
        PinChange {
            recorded: true,
            evicted,
        }
    }
}

/// Where a pin comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PinSource<'a> {
    /// This node dialled the peer: the pin is sticky (never evicted by a newcomer).
    Outgoing,
    /// The peer dialled this node from `remote_addr` (a multiaddr): the pin pays the remote
    /// peer ID's and IP address's new-pin quotas and may be evicted later.
    Incoming {
        /// The connection's remote multiaddr.
        remote_addr: &'a str,
    },
    /// Reloaded from storage: no quota, evictable unless established.
    Restored,
}

impl Default for MemoryPins {
    fn default() -> Self {
        Self::with_policy(PinPolicy::default())
    }
}

/// The IP address in a multiaddr's first component (`/ip4/…`, `/ip6/…`), if any.
pub fn ip_of_multiaddr(addr: &str) -> Option<&str> {
    let mut parts = addr.split('/').skip(1);
    match parts.next()? {
        "ip4" | "ip6" => parts.next().filter(|s| !s.is_empty()),
        _ => None,
    }
}

impl DowngradePins for MemoryPins {
    fn is_did_pinned(&self, did: &str) -> bool {
        self.lock().dids.contains_key(did)
    }

    fn is_peer_pinned(&self, peer_id: &str) -> bool {
        self.lock().peers.contains_key(peer_id)
    }

    fn record(&self, did: &str, peer_id: &str) {
        self.record_change(did, peer_id, PinSource::Outgoing);
    }

    fn record_incoming(&self, did: &str, peer_id: &str, remote_addr: &str) -> bool {
        self.record_change(did, peer_id, PinSource::Incoming { remote_addr })
            .recorded
    }
}
