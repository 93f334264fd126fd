//! The seams a node plugs into the handshake: approval (§3.4), zero-knowledge ownership proofs
//! (§3.5) and downgrade pins (P-12).

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};
use std::time::SystemTime;

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
    /// Records a successful 1.2 handshake: `did → peer_id` and `peer_id`.
    fn record(&self, did: &str, peer_id: &str);
}

/// The default bound of [`MemoryPins`] (P-12).
pub const DEFAULT_PIN_CAPACITY: usize = 10_000;

#[derive(Debug, Default)]
struct PinState {
    tick: u64,
    dids: HashMap<String, (String, u64)>,
    peers: HashMap<String, u64>,
}

/// In-memory downgrade pins, bounded, least-recently-seen evicted. Persisting them is the
/// node's job (P-12 SHOULD); this type lasts as long as the process (the MUST).
#[derive(Debug)]
pub struct MemoryPins {
    capacity: usize,
    state: Mutex<PinState>,
}

impl MemoryPins {
    /// Pins with the given bound per map (0 means [`DEFAULT_PIN_CAPACITY`]).
    pub fn new(capacity: usize) -> Self {
        Self {
            capacity: if capacity == 0 {
                DEFAULT_PIN_CAPACITY
            } else {
                capacity
            },
            state: Mutex::new(PinState::default()),
        }
    }

    /// Removes the pin of a DID and of the peer ID recorded with it (operator action).
    pub fn unpin(&self, did: &str) -> bool {
        let mut st = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        match st.dids.remove(did) {
            Some((peer, _)) => {
                st.peers.remove(&peer);
                true
            }
            None => false,
        }
    }

    /// The number of pinned DIDs.
    pub fn len(&self) -> usize {
        self.state
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .dids
            .len()
    }

    /// Whether nothing is pinned.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Default for MemoryPins {
    fn default() -> Self {
        Self::new(DEFAULT_PIN_CAPACITY)
    }
}

fn evict_oldest<V>(map: &mut HashMap<String, V>, seen: impl Fn(&V) -> u64) {
    if let Some(k) = map
        .iter()
        .min_by_key(|(_, v)| seen(v))
        .map(|(k, _)| k.clone())
    {
        map.remove(&k);
    }
}

impl DowngradePins for MemoryPins {
    fn is_did_pinned(&self, did: &str) -> bool {
        self.state
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .dids
            .contains_key(did)
    }

    fn is_peer_pinned(&self, peer_id: &str) -> bool {
        self.state
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .peers
            .contains_key(peer_id)
    }

    fn record(&self, did: &str, peer_id: &str) {
        let mut st = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        st.tick += 1;
        let tick = st.tick;
        if !st.dids.contains_key(did) && st.dids.len() >= self.capacity {
            evict_oldest(&mut st.dids, |v| v.1);
        }
        st.dids.insert(did.to_owned(), (peer_id.to_owned(), tick));
        if !st.peers.contains_key(peer_id) && st.peers.len() >= self.capacity {
            evict_oldest(&mut st.peers, |v| *v);
        }
        st.peers.insert(peer_id.to_owned(), tick);
    }
}
