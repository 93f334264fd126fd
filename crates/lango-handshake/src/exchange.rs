//! The handshake state machines over any stream: legacy 1.0.0/1.1.0 (spec §3.2, §3.3) and the
//! channel-bound 1.2.0-bound exchange (§6.2.5).
//!
//! [`Responder::handle`] and [`Initiator::initiate`] run one complete exchange on a
//! `futures::io` `AsyncRead + AsyncWrite` stream (a libp2p stream, or an in-memory pipe in
//! tests), under **one deadline for the whole exchange** (H-1): every read and write, the
//! approval wait and wallet signing. On a failure before the 1.2 Finish the stream is dropped
//! without a reply (W-3); dropping a libp2p stream resets it. A 1.2 responder that refuses the
//! Finish says so with a `rejected` Result (P-8). On success the stream is closed.
//!
//! Both must run inside a tokio runtime (the deadline is a tokio timer).
//!
//! Negotiation (multistream-select, I-1) belongs to the transport adapter, which passes the
//! negotiated protocol in [`StreamContext`]; the protocol decides which exchange runs. Once
//! 1.2.0-bound was negotiated, a failure is final: nothing here falls back to legacy (P-2).

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, UNIX_EPOCH};

use futures::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use lango_crypto::wallet::Did;
use lango_session::{NewSession, Role, SessionInfo, SessionStore, SessionToken};

use crate::Error;
use crate::clock::{Clock, check_timestamp, unix_seconds};
use crate::hooks::RevocationCheck;
use crate::hooks::{
    ApprovalHook, DowngradePins, NoZk, PendingHandshake, ZkHook, ZkInputs, ZkOutcome,
    ZkProofFields, ZkProver,
};
use crate::legacy::{
    InitiatorAuth, UnsignedReason, check_sender_did, classify_challenge, local_expiry,
    require_nonce, sign_challenge, sign_response, validate_ack, verify_response,
};
use crate::messages::{
    Challenge, ChallengeResponse, Finish, HandshakeResult, Hello, Proof, SessionAck,
};
use crate::nonce::{DEFAULT_HANDSHAKE_TIMEOUT, NONCE_SIZE, NonceCache};
use crate::protocol::Protocol;
use crate::signer::Wallet;
use crate::v12::{self, ChannelBinding, InitPart, RespPart, TokenDigest};
use crate::wire::{
    DEFAULT_MAX_MESSAGE_BYTES, MIN_MAX_MESSAGE_BYTES, MessageReader, WireToken, write_message,
};

/// Default bound on incoming handshakes in progress (`p2p.handshakeMaxConcurrent`, H-3).
pub const DEFAULT_MAX_CONCURRENT: usize = 64;
/// Bound on incoming handshakes in progress from one remote peer ID (H-3).
pub const DEFAULT_MAX_PER_PEER: usize = 4;
/// Bound on incoming handshakes in progress from one remote IP address.
pub const DEFAULT_MAX_PER_ADDR: usize = 16;
/// Default ZK ownership proofs per minute for one remote peer ID.
pub const DEFAULT_ZK_PROOFS_PER_PEER: u32 = 8;
/// Default incoming handshake attempts per minute from one remote peer ID.
pub const DEFAULT_ATTEMPTS_PER_PEER: u32 = 120;
/// Default incoming handshake attempts per minute from one remote IP address.
pub const DEFAULT_ATTEMPTS_PER_ADDR: u32 = 1200;
/// The longest handshake deadline [`HandshakeConfig::validate`] accepts.
pub const MAX_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(600);
/// The largest per-message limit [`HandshakeConfig::validate`] accepts.
pub const MAX_MAX_MESSAGE_BYTES: usize = 1 << 20;
/// How many peers the "double-hash warning logged" set remembers before starting over.
const WARNED_PEERS_CAPACITY: usize = 4096;

/// Handshake settings (spec §4).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HandshakeConfig {
    /// `p2p.handshakeTimeout`: the deadline for a whole exchange. Zero means 30 s.
    pub handshake_timeout: Duration,
    /// `p2p.handshakeMaxMessageBytes`: per-message limit, LF included. Zero means 65 536.
    pub max_message_bytes: usize,
    /// `p2p.requireSignedChallenge`.
    pub require_signed_challenge: bool,
    /// `p2p.autoApproveKnownPeers`.
    pub auto_approve_known_peers: bool,
    /// `p2p.handshakePinUpgradedPeers` (P-12).
    pub pin_upgraded_peers: bool,
    /// `p2p.handshakeMaxConcurrent` (H-3). Zero means 64.
    pub max_concurrent: usize,
    /// Incoming handshakes in progress per remote peer ID (H-3). Zero means 4.
    pub max_per_peer: usize,
    /// Incoming handshakes in progress per remote IP address. Zero means 16.
    pub max_per_addr: usize,
    /// `p2p.handshakeAttemptsPerPeer`: incoming handshakes a remote peer ID may start per
    /// minute. Zero means 120.
    pub attempts_per_peer: u32,
    /// `p2p.handshakeAttemptsPerAddr`: incoming handshakes a remote IP address may start per
    /// minute. Zero means 1200.
    pub attempts_per_addr: u32,
    /// ZK ownership proofs this responder makes per minute for one remote peer ID (each costs
    /// tens of milliseconds of CPU; fresh DIDs are free). Past it the answer carries the
    /// signature only. Zero means 8.
    pub zk_proofs_per_peer: u32,
}

impl Default for HandshakeConfig {
    fn default() -> Self {
        Self {
            handshake_timeout: DEFAULT_HANDSHAKE_TIMEOUT,
            max_message_bytes: DEFAULT_MAX_MESSAGE_BYTES,
            require_signed_challenge: false,
            auto_approve_known_peers: false,
            pin_upgraded_peers: true,
            max_concurrent: DEFAULT_MAX_CONCURRENT,
            max_per_peer: DEFAULT_MAX_PER_PEER,
            max_per_addr: DEFAULT_MAX_PER_ADDR,
            attempts_per_peer: DEFAULT_ATTEMPTS_PER_PEER,
            attempts_per_addr: DEFAULT_ATTEMPTS_PER_ADDR,
            zk_proofs_per_peer: DEFAULT_ZK_PROOFS_PER_PEER,
        }
    }
}

impl HandshakeConfig {
    /// The deadline in effect.
    pub fn effective_timeout(&self) -> Duration {
        if self.handshake_timeout.is_zero() {
            DEFAULT_HANDSHAKE_TIMEOUT
        } else {
            self.handshake_timeout
        }
    }

    /// Checks every setting; `prefix` is the section's path (`p2p`). Each problem names its
    /// key. Zero values are accepted (they mean the defaults).
    pub fn validate(&self, prefix: &str) -> Result<(), Vec<String>> {
        let mut p = Vec::new();
        if self.handshake_timeout > MAX_HANDSHAKE_TIMEOUT {
            p.push(format!(
                "{prefix}.handshakeTimeout: at most {}s",
                MAX_HANDSHAKE_TIMEOUT.as_secs()
            ));
        }
        if self.max_message_bytes != 0
            && !(MIN_MAX_MESSAGE_BYTES..=MAX_MAX_MESSAGE_BYTES).contains(&self.max_message_bytes)
        {
            p.push(format!(
                "{prefix}.handshakeMaxMessageBytes: between {MIN_MAX_MESSAGE_BYTES} and \
                 {MAX_MAX_MESSAGE_BYTES}"
            ));
        }
        let (total, per_peer) = self.concurrency();
        if per_peer > total {
            p.push(format!(
                "{prefix}.handshakeMaxConcurrent: must not be below the per-peer bound ({per_peer})"
            ));
        }
        if p.is_empty() { Ok(()) } else { Err(p) }
    }

    fn message_limit(&self) -> usize {
        if self.max_message_bytes == 0 {
            DEFAULT_MAX_MESSAGE_BYTES
        } else {
            self.max_message_bytes
        }
    }

    fn concurrency(&self) -> (usize, usize) {
        let or = |v: usize, d: usize| if v == 0 { d } else { v };
        (
            or(self.max_concurrent, DEFAULT_MAX_CONCURRENT),
            or(self.max_per_peer, DEFAULT_MAX_PER_PEER),
        )
    }

    /// (concurrent per address, attempts per peer per minute, attempts per address per minute)
    fn source_limits(&self) -> (usize, u32, u32) {
        let or = |v: u32, d: u32| if v == 0 { d } else { v };
        (
            if self.max_per_addr == 0 {
                DEFAULT_MAX_PER_ADDR
            } else {
                self.max_per_addr
            },
            or(self.attempts_per_peer, DEFAULT_ATTEMPTS_PER_PEER),
            or(self.attempts_per_addr, DEFAULT_ATTEMPTS_PER_ADDR),
        )
    }
}

/// What the transport knows about the stream a handshake runs on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamContext {
    /// This node's peer ID (base58).
    pub local_peer_id: String,
    /// The remote peer ID, as authenticated by the secure channel (base58).
    pub remote_peer_id: String,
    /// The remote multiaddr (for the approval prompt).
    pub remote_addr: String,
    /// The negotiated protocol.
    pub protocol: Protocol,
}

impl StreamContext {
    /// The initiator's view of the channel for a 1.2 transcript: (local, remote). Peer IDs are
    /// decoded from base58 to their binary multihash, the form the transcript signs.
    pub fn initiator_binding(&self) -> Result<ChannelBinding, Error> {
        ChannelBinding::initiator(
            &peer_id_bytes(&self.local_peer_id)?,
            &peer_id_bytes(&self.remote_peer_id)?,
        )
    }

    /// The responder's view of the channel: (remote, local). See
    /// [`initiator_binding`](Self::initiator_binding).
    pub fn responder_binding(&self) -> Result<ChannelBinding, Error> {
        ChannelBinding::responder(
            &peer_id_bytes(&self.local_peer_id)?,
            &peer_id_bytes(&self.remote_peer_id)?,
        )
    }
}

/// Decodes a base58 peer ID to its multihash bytes.
fn peer_id_bytes(peer_id: &str) -> Result<Vec<u8>, Error> {
    if peer_id.is_empty() || peer_id.len() > 2 * v12::MAX_PEER_ID_BYTES {
        return Err(Error::InvalidInput(format!(
            "peer ID of {} characters",
            peer_id.len()
        )));
    }
    bs58::decode(peer_id)
        .into_vec()
        .map_err(|e| Error::InvalidInput(format!("peer ID is not base58: {e}")))
}

fn sha256_token(token: &str) -> TokenDigest {
    TokenDigest(lango_crypto::digest::sha256(token.as_bytes()))
}

fn unix_time(secs: i64) -> std::time::SystemTime {
    UNIX_EPOCH + Duration::from_secs(u64::try_from(secs).unwrap_or(0))
}

fn check_revoked(check: Option<&Arc<dyn RevocationCheck>>, did: &str) -> Result<(), Error> {
    match check.map(|c| c.is_revoked(did)) {
        None | Some(Ok(false)) => Ok(()),
        Some(Ok(true)) => Err(Error::Revoked),
        Some(Err(e)) => Err(Error::Internal(format!("revocation lookup: {e}"))),
    }
}

async fn with_deadline<T>(
    deadline: Duration,
    fut: impl std::future::Future<Output = Result<T, Error>>,
) -> Result<T, Error> {
    match tokio::time::timeout(deadline, fut).await {
        Ok(r) => r,
        Err(_) => Err(Error::Timeout),
    }
}

#[derive(Debug, Default)]
struct Limits {
    total: usize,
    per_peer: HashMap<String, usize>,
    per_addr: HashMap<String, usize>,
    approvals: HashSet<String>,
    attempts_peer: crate::hooks::Quota,
    attempts_addr: crate::hooks::Quota,
    zk_proofs_peer: crate::hooks::Quota,
}

fn release(map: &mut HashMap<String, usize>, key: &str) {
    if let Some(n) = map.get_mut(key) {
        *n = n.saturating_sub(1);
        if *n == 0 {
            map.remove(key);
        }
    }
}

/// A slot among the handshakes in progress; released on drop.
struct Slot<'a> {
    limits: &'a Mutex<Limits>,
    peer: String,
    addr: Option<String>,
}

impl Drop for Slot<'_> {
    fn drop(&mut self) {
        let mut l = self.limits.lock().unwrap_or_else(PoisonError::into_inner);
        l.total = l.total.saturating_sub(1);
        release(&mut l.per_peer, &self.peer);
        if let Some(a) = &self.addr {
            release(&mut l.per_addr, a);
        }
    }
}

/// The pending approval of a peer; released on drop.
struct ApprovalSlot<'a> {
    limits: &'a Mutex<Limits>,
    peer: String,
}

impl Drop for ApprovalSlot<'_> {
    fn drop(&mut self) {
        self.limits
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .approvals
            .remove(&self.peer);
    }
}

/// The responder: legacy `HandleIncoming` (R-1…R-15) and the 1.2 responder (P-3…P-9), sharing
/// one set of concurrency limits, one replay cache, one approval hook and one set of pins.
pub struct Responder {
    wallet: Arc<dyn Wallet>,
    sessions: SessionStore,
    nonce_cache: Arc<NonceCache>,
    clock: Arc<dyn Clock>,
    approval: Option<Arc<dyn ApprovalHook>>,
    pins: Option<Arc<dyn DowngradePins>>,
    revocations: Option<Arc<dyn RevocationCheck>>,
    zk_prover: Option<Arc<dyn ZkProver>>,
    config: HandshakeConfig,
    limits: Mutex<Limits>,
    warned: Mutex<HashSet<String>>,
    nonce_source: NonceSource,
}

impl std::fmt::Debug for Responder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Responder")
            .field("config", &self.config)
            .field("approval", &self.approval.is_some())
            .field("pins", &self.pins.is_some())
            .field("revocations", &self.revocations.is_some())
            .finish_non_exhaustive()
    }
}

/// What the responder learned about the initiator before approval.
struct Claim<'a> {
    did: &'a str,
    authenticated: bool,
}

impl Responder {
    /// A responder. The nonce cache is mandatory here; give it
    /// [`wired_nonce_ttl`](crate::nonce::wired_nonce_ttl) (N-5). Without an approval hook
    /// every handshake that passes the checks is accepted: node wiring must add one.
    pub fn new(
        wallet: Arc<dyn Wallet>,
        sessions: SessionStore,
        nonce_cache: Arc<NonceCache>,
        clock: Arc<dyn Clock>,
        config: HandshakeConfig,
    ) -> Self {
        Self {
            wallet,
            sessions,
            nonce_cache,
            clock,
            approval: None,
            pins: None,
            revocations: None,
            zk_prover: None,
            config,
            limits: Mutex::new(Limits::default()),
            warned: Mutex::new(HashSet::new()),
            nonce_source: Arc::new(os_nonce),
        }
    }

    /// Adds a ZK ownership prover: legacy responses to initiators that advertise its scheme
    /// carry a proof next to the signature (never instead of it).
    #[must_use]
    pub fn with_zk_prover(mut self, prover: Arc<dyn ZkProver>) -> Self {
        self.zk_prover = Some(prover);
        self
    }

    /// Adds the approval hook.
    #[must_use]
    pub fn with_approval(mut self, hook: Arc<dyn ApprovalHook>) -> Self {
        self.approval = Some(hook);
        self
    }

    /// Adds downgrade pins: consulted by the legacy path when `pin_upgraded_peers` is set
    /// recorded by every successful 1.2 exchange (P-9, P-12).
    #[must_use]
    pub fn with_pins(mut self, pins: Arc<dyn DowngradePins>) -> Self {
        self.pins = Some(pins);
        self
    }

    /// Adds the revocation list: a revoked DID is refused before approval and before anything
    /// is signed ([`Error::Revoked`]).
    #[must_use]
    pub fn with_revocations(mut self, check: Arc<dyn RevocationCheck>) -> Self {
        self.revocations = Some(check);
        self
    }

    /// Replaces the source of 1.2 responder nonces. For known-answer tests only: production
    /// nonces MUST come from the OS CSPRNG (H-5), which is the default.
    #[must_use]
    pub fn with_nonce_source(mut self, source: NonceSource) -> Self {
        self.nonce_source = source;
        self
    }

    /// The session store sessions are written to.
    pub fn sessions(&self) -> &SessionStore {
        &self.sessions
    }

    /// The number of incoming handshakes in progress (H-3).
    pub fn in_progress(&self) -> usize {
        self.limits
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .total
    }

    fn acquire(&self, peer: &str, remote_addr: &str) -> Result<Slot<'_>, Error> {
        let (max_total, max_peer) = self.config.concurrency();
        let (max_addr, attempts_peer, attempts_addr) = self.config.source_limits();
        let addr = crate::hooks::ip_of_multiaddr(remote_addr);
        let mut l = self.limits.lock().unwrap_or_else(PoisonError::into_inner);
        let per = l.per_peer.get(peer).copied().unwrap_or(0);
        let per_addr = addr.map_or(0, |a| l.per_addr.get(a).copied().unwrap_or(0));
        if l.total >= max_total || per >= max_peer || per_addr >= max_addr {
            return Err(Error::Busy);
        }
        // Attempts per minute, per peer ID and per address (issue 17: fresh DIDs are free,
        // handshakes are not).
        let now = std::time::Instant::now();
        let minute = Duration::from_secs(60);
        if !l.attempts_peer.take(peer, attempts_peer, minute, now)
            || addr.is_some_and(|a| !l.attempts_addr.take(a, attempts_addr, minute, now))
        {
            return Err(Error::Overloaded(
                "handshake attempts from this peer or address".into(),
            ));
        }
        l.total += 1;
        l.per_peer.insert(peer.to_owned(), per + 1);
        if let Some(a) = addr {
            l.per_addr.insert(a.to_owned(), per_addr + 1);
        }
        Ok(Slot {
            limits: &self.limits,
            peer: peer.to_owned(),
            addr: addr.map(str::to_owned),
        })
    }

    /// Issue 17, P-8 as amended: refuses, before anything is verified or signed, a handshake
    /// whose session the store or a quota could not take.
    fn precheck_store(&self, ctx: &StreamContext, claimed_did: &str) -> Result<(), Error> {
        let ip = crate::hooks::ip_of_multiaddr(&ctx.remote_addr);
        match self
            .sessions
            .may_admit_incoming(claimed_did, &ctx.remote_peer_id, ip)
        {
            Ok(()) => Ok(()),
            // Cool-downs are refused by `admit` with their own code, after the DID is settled.
            Err(lango_session::Error::Cooldown { .. }) => Ok(()),
            Err(e) => Err(Error::from_session(e)),
        }
    }

    fn acquire_approval(&self, peer: &str) -> Result<ApprovalSlot<'_>, Error> {
        let mut l = self.limits.lock().unwrap_or_else(PoisonError::into_inner);
        if !l.approvals.insert(peer.to_owned()) {
            return Err(Error::Busy);
        }
        Ok(ApprovalSlot {
            limits: &self.limits,
            peer: peer.to_owned(),
        })
    }

    fn warn_double_hash_once(&self, peer: &str, did: &str) {
        let mut w = self.warned.lock().unwrap_or_else(PoisonError::into_inner);
        if w.len() >= WARNED_PEERS_CAPACITY {
            w.clear();
        }
        if w.insert(peer.to_owned()) {
            tracing::warn!(
                event = "legacy_double_hash_challenge",
                peer = %peer,
                sender_did = %did,
                "challenge signed over the double hash (Go 2856d8a9); treated as unsigned"
            );
        }
    }

    /// Runs the responder side of one exchange on `stream`, under the protocol negotiated in
    /// `ctx`, and returns the stored session. Errors follow the taxonomy of [`Error`].
    pub async fn handle<S>(&self, stream: S, ctx: &StreamContext) -> Result<SessionInfo, Error>
    where
        S: AsyncRead + AsyncWrite + Unpin + Send,
    {
        let result = match self.acquire(&ctx.remote_peer_id, &ctx.remote_addr) {
            Ok(_slot) => {
                let deadline = self.config.effective_timeout();
                if ctx.protocol.is_legacy() {
                    with_deadline(deadline, self.run_legacy(stream, ctx)).await
                } else {
                    with_deadline(deadline, self.run_bound(stream, ctx)).await
                }
            }
            Err(e) => Err(e),
        };
        match &result {
            Ok(s) => tracing::info!(
                event = "handshake_accepted",
                peer = %ctx.remote_peer_id,
                remote_did = %s.peer_did,
                authenticated = s.authenticated,
                channel_bound = s.channel_bound,
                zk_verified = false,
                protocol = ctx.protocol.id(),
                "handshake accepted"
            ),
            Err(e) => tracing::warn!(
                event = "handshake_failed",
                peer = %ctx.remote_peer_id,
                protocol = ctx.protocol.id(),
                code = e.code(),
                error = %e,
                "incoming handshake failed"
            ),
        }
        result
    }

    /// Revocation, cool-down (V-9), the overwrite guard and approval (A-1…A-7), in that
    /// order, for a claim whose DID and authentication are settled.
    async fn admit(&self, ctx: &StreamContext, claim: Claim<'_>) -> Result<(), Error> {
        let remote = ctx.remote_peer_id.as_str();
        check_revoked(self.revocations.as_ref(), claim.did)?;
        self.sessions
            .may_handshake(claim.did, remote)
            .map_err(Error::from_session)?;

        let existing = self.sessions.get(claim.did);
        if let Some(e) = &existing
            && !claim.authenticated
            && e.authenticated
            && e.peer_id != remote
        {
            return Err(Error::AuthenticatedSessionExists);
        }

        let known = self.config.auto_approve_known_peers
            && existing
                .as_ref()
                .is_some_and(|e| e.authenticated && (claim.authenticated || e.peer_id == remote));
        if !known && let Some(hook) = &self.approval {
            let _pending_slot = if hook.is_interactive() {
                Some(self.acquire_approval(remote)?)
            } else {
                None
            };
            let pending = PendingHandshake {
                peer_id: remote.to_owned(),
                peer_did: claim.did.to_owned(),
                remote_addr: ctx.remote_addr.clone(),
                timestamp: self.clock.now(),
                authenticated: claim.authenticated,
            };
            match hook.approve(&pending).await {
                Ok(true) => {}
                Ok(false) => return Err(Error::ApprovalDenied),
                Err(e) => return Err(Error::ApprovalError(e)),
            }
        }
        Ok(())
    }

    async fn run_legacy<S>(&self, stream: S, ctx: &StreamContext) -> Result<SessionInfo, Error>
    where
        S: AsyncRead + AsyncWrite + Unpin + Send,
    {
        let remote = ctx.remote_peer_id.as_str();
        let mut reader = MessageReader::with_limit(stream, self.config.message_limit());

        // R-1 … R-4
        let ch: Challenge = reader.read_message().await?;
        check_timestamp(ch.timestamp, self.clock.now())?;
        let nonce = require_nonce(&ch.nonce)?;
        self.nonce_cache.check(&nonce)?;
        // Issue 17: a session the store cannot take is refused before any signature work.
        self.precheck_store(ctx, &ch.sender_did)?;

        //
        let own_did = Did::from_public_key(&self.wallet.public_key().await?);
        let auth = classify_challenge(&ch, self.config.require_signed_challenge)?;
        if auth == InitiatorAuth::Unsigned(UnsignedReason::LegacyDoubleHash) {
            self.warn_double_hash_once(remote, &ch.sender_did);
        }
        let did = check_sender_did(&ch, &auth, Some(&own_did))?;
        let authenticated = auth.is_authenticated();

        // R-7 (pins; the cool-down is part of `admit`)
        if self.config.pin_upgraded_peers
            && let Some(pins) = &self.pins
            && (pins.is_did_pinned(did.as_str()) || pins.is_peer_pinned(remote))
        {
            return Err(Error::DowngradeRefused);
        }

        //
        self.admit(
            ctx,
            Claim {
                did: did.as_str(),
                authenticated,
            },
        )
        .await?;

        //
        let mut resp: ChallengeResponse = sign_response(&*self.wallet, &nonce).await?;
        let inputs = ZkInputs {
            nonce: &nonce,
            public_key: &resp.public_key,
            initiator_did: did.as_str(),
            responder_did: own_did.as_str(),
            protocol_id: ctx.protocol.id(),
        };
        if let Some(f) = self.zk_proof(&ch.zk_schemes, inputs, remote).await {
            resp.set_zk(f);
        }
        write_message(reader.get_mut(), &resp).await?;

        //
        let ack: SessionAck = reader.read_message().await?;
        let expires = validate_ack(&ack, self.clock.now(), self.sessions.ttl())?;
        let token = SessionToken::parse(ack.token.expose()).map_err(Error::from_session)?;

        //
        let info = self
            .sessions
            .insert_remote(
                NewSession {
                    peer_did: did.as_str(),
                    peer_id: remote,
                    protocol: ctx.protocol.id(),
                    role: Role::Responder,
                    authenticated,
                    channel_bound: false,
                    zk_verified: false,
                    remote_ip: crate::hooks::ip_of_multiaddr(&ctx.remote_addr),
                },
                token.duplicate(),
                unix_time(expires),
            )
            .map_err(Error::from_session)?;
        // Issue 17: a DID revoked while this handshake was parked gets no session.
        if let Err(e) = check_revoked(self.revocations.as_ref(), did.as_str()) {
            self.sessions.remove_if_token(did.as_str(), &token);
            return Err(e);
        }

        // the session is stored; a failing close changes nothing.
        let _ = reader.get_mut().close().await;
        Ok(info)
    }

    async fn run_bound<S>(&self, stream: S, ctx: &StreamContext) -> Result<SessionInfo, Error>
    where
        S: AsyncRead + AsyncWrite + Unpin + Send,
    {
        let remote = ctx.remote_peer_id.as_str();
        let binding = ctx.responder_binding()?;
        let mut reader = MessageReader::with_limit(stream, self.config.message_limit());

        // P-3: version, algorithm, window, nonce length, replay, identity, signature.
        let hello: Hello = reader.read_message().await?;
        let nonce = v12::check_hello(&hello, self.clock.now())?;
        // Issue 17 (P-8 as amended): refused before verifying or signing, with a `rejected`
        // Result in place of the Proof so the initiator learns the code.
        if let Err(e) = self.precheck_store(ctx, hello.sender_did.as_str()) {
            return Err(refuse(reader.get_mut(), e).await);
        }
        self.nonce_cache.check(&nonce)?;
        let init = v12::verify_hello(&hello, &binding)?;
        self.admit(
            ctx,
            Claim {
                did: init.did().as_str(),
                authenticated: true,
            },
        )
        .await?;

        // P-4, P-5: the proof is the only thing this side signs.
        let (mut proof, resp): (Proof, RespPart) =
            v12::sign_proof(&*self.wallet, &binding, &init, (self.nonce_source)()?).await?;
        let inputs = ZkInputs {
            nonce: &nonce,
            public_key: &proof.public_key,
            initiator_did: init.did().as_str(),
            responder_did: resp.did().as_str(),
            protocol_id: ctx.protocol.id(),
        };
        if let Some(f) = self.zk_proof(&hello.zk_schemes, inputs, remote).await {
            proof.set_zk(f);
        }
        write_message(reader.get_mut(), &proof).await?;

        // P-8: a refusal from here on is reported with a `rejected` Result.
        let finish: Finish = match reader.read_message().await {
            Ok(f) => f,
            // A Finish that does not decode (or is too large) is refused like any other;
            // a closed or failing stream cannot carry a Result.
            Err(e @ Error::Io { .. }) => return Err(e),
            Err(e) => return Err(refuse(reader.get_mut(), e).await),
        };
        let token_text = zeroize::Zeroizing::new(finish.token.expose().to_owned());
        let stored = self.store_bound(ctx, &binding, &init, &resp, &finish, &token_text);
        let (info, token) = match stored {
            Ok(v) => v,
            Err(e) => return Err(refuse(reader.get_mut(), e).await),
        };
        // Issue 17: a DID revoked while this handshake was parked gets no session.
        if let Err(e) = check_revoked(self.revocations.as_ref(), info.peer_did.as_str()) {
            self.sessions.remove_if_token(&info.peer_did, &token);
            return Err(refuse(reader.get_mut(), e).await);
        }

        // P-9: pin, then reply; if the reply cannot be written the session goes.
        if let Some(pins) = &self.pins
            && !pins.record_incoming(info.peer_did.as_str(), remote, &ctx.remote_addr)
        {
            tracing::info!(event = "pin_not_recorded", peer = remote, did = %info.peer_did,
                "downgrade pin not recorded: quota spent or the pin table is full");
        }
        let mut guard = CreatedSession {
            store: &self.sessions,
            did: info.peer_did.clone(),
            token: Some(token),
        };
        let ok = HandshakeResult::ok(unix_seconds(info.expires_at));
        write_message(reader.get_mut(), &ok).await?;
        guard.token = None;
        let _ = reader.get_mut().close().await;
        Ok(info)
    }

    /// A ZK ownership proof for an initiator that advertised our prover's scheme; `None`
    /// (signature only) otherwise or when proving fails.
    async fn zk_proof(
        &self,
        advertised: &[String],
        inputs: ZkInputs<'_>,
        remote: &str,
    ) -> Option<ZkProofFields> {
        let prover = self.zk_prover.as_ref()?;
        if !advertised.iter().any(|s| s == prover.scheme()) {
            return None;
        }
        let per_minute = match self.config.zk_proofs_per_peer {
            0 => DEFAULT_ZK_PROOFS_PER_PEER,
            n => n,
        };
        let allowed = self
            .limits
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .zk_proofs_peer
            .take(
                remote,
                per_minute,
                Duration::from_secs(60),
                std::time::Instant::now(),
            );
        if !allowed {
            tracing::warn!(
                event = "zk_proof_throttled",
                peer = remote,
                per_minute,
                "ZK proof budget of this peer ID spent; answering with the signature only"
            );
            return None;
        }
        match prover.prove(inputs).await {
            Ok(f) => Some(f),
            Err(e) => {
                tracing::warn!(event = "zk_prove_failed", peer = remote, error = %e,
                    "answering with the signature only");
                None
            }
        }
    }

    /// P-8 and the insert of P-9: checks the Finish and stores the session.
    fn store_bound(
        &self,
        ctx: &StreamContext,
        binding: &ChannelBinding,
        init: &InitPart,
        resp: &RespPart,
        finish: &Finish,
        token_text: &str,
    ) -> Result<(SessionInfo, SessionToken), Error> {
        let digest = sha256_token(token_text);
        let final_expiry = v12::verify_finish(
            finish,
            binding,
            init,
            resp,
            &digest,
            self.clock.now(),
            self.sessions.ttl(),
        )?;
        let token = SessionToken::parse(token_text).map_err(Error::from_session)?;
        let info = self
            .sessions
            .insert_remote(
                NewSession {
                    peer_did: init.did().as_str(),
                    peer_id: &ctx.remote_peer_id,
                    protocol: ctx.protocol.id(),
                    role: Role::Responder,
                    authenticated: true,
                    channel_bound: true,
                    zk_verified: false,
                    remote_ip: crate::hooks::ip_of_multiaddr(&ctx.remote_addr),
                },
                token.duplicate(),
                unix_time(final_expiry),
            )
            .map_err(Error::from_session)?;
        Ok((info, token))
    }
}

/// Reads M2: a Proof, or a `rejected` Result from a responder that refused the Hello before
/// doing any work (issue 17), reported as [`Error::RejectedByPeer`] with its code.
async fn read_proof<S: AsyncRead + Unpin>(reader: &mut MessageReader<S>) -> Result<Proof, Error> {
    let value: serde_json::Value = reader.read_message().await?;
    let bytes = serde_json::to_vec(&value).map_err(|e| Error::Decode(e.to_string()))?;
    if value.get("status").is_some() && value.get("signature").is_none() {
        let result: HandshakeResult = crate::wire::decode_message(&bytes)?;
        v12::check_result(&result, 0)?;
        return Err(Error::Decode("a Result in place of the Proof".into()));
    }
    crate::wire::decode_message(&bytes)
}

/// Answers a refused 1.2 Finish with a `rejected` Result (best effort) and closes the stream.
async fn refuse<S: AsyncRead + AsyncWrite + Unpin>(stream: &mut S, e: Error) -> Error {
    let _ = write_message(stream, &HandshakeResult::rejected(&e)).await;
    let _ = stream.close().await;
    // Give the initiator a moment to read the Result before the stream is dropped: dropping
    // resets it, and a reset can overtake data still in flight. Bounded in time and bytes.
    let linger = async {
        let mut buf = [0u8; 256];
        let mut budget = 4096usize;
        while budget > 0 {
            match futures::io::AsyncReadExt::read(stream, &mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => budget = budget.saturating_sub(n),
            }
        }
    };
    let _ = tokio::time::timeout(REFUSAL_LINGER, linger).await;
    e
}

/// How long a refusing responder waits for the initiator to close after a `rejected` Result.
const REFUSAL_LINGER: Duration = Duration::from_secs(2);

/// A source of handshake nonces.
pub type NonceSource = Arc<dyn Fn() -> Result<[u8; NONCE_SIZE], Error> + Send + Sync>;

fn os_nonce() -> Result<[u8; NONCE_SIZE], Error> {
    lango_crypto::random::bytes::<NONCE_SIZE>()
        .map_err(|_| Error::Internal("generate nonce: the OS random source failed".to_owned()))
}

/// Removes a just-stored session unless disarmed: on an ack or result write failure, and when
/// the deadline drops the exchange midway (I-13, P-9).
struct CreatedSession<'a> {
    store: &'a SessionStore,
    did: String,
    token: Option<SessionToken>,
}

impl Drop for CreatedSession<'_> {
    fn drop(&mut self) {
        if let Some(token) = self.token.take() {
            self.store.remove_if_token(&self.did, &token);
        }
    }
}

/// The initiator: legacy `Initiate` (I-1…I-14) and the 1.2 initiator (P-6, P-7, P-10).
pub struct Initiator {
    wallet: Arc<dyn Wallet>,
    sessions: SessionStore,
    clock: Arc<dyn Clock>,
    zk: Arc<dyn ZkHook>,
    pins: Option<Arc<dyn DowngradePins>>,
    revocations: Option<Arc<dyn RevocationCheck>>,
    config: HandshakeConfig,
    nonce_source: NonceSource,
}

impl std::fmt::Debug for Initiator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Initiator")
            .field("config", &self.config)
            .field("pins", &self.pins.is_some())
            .field("revocations", &self.revocations.is_some())
            .finish_non_exhaustive()
    }
}

impl Initiator {
    /// An initiator with OS-random nonces and no ZK ([`NoZk`]).
    pub fn new(
        wallet: Arc<dyn Wallet>,
        sessions: SessionStore,
        clock: Arc<dyn Clock>,
        config: HandshakeConfig,
    ) -> Self {
        Self {
            wallet,
            sessions,
            clock,
            zk: Arc::new(NoZk),
            pins: None,
            revocations: None,
            config,
            nonce_source: Arc::new(os_nonce),
        }
    }

    /// Adds downgrade pins: consulted by the legacy path when `pin_upgraded_peers` is set
    /// (I-1, I-11), recorded by every successful 1.2 exchange (P-10, P-12).
    #[must_use]
    pub fn with_pins(mut self, pins: Arc<dyn DowngradePins>) -> Self {
        self.pins = Some(pins);
        self
    }

    /// Adds the revocation list: no session is stored for a revoked responder DID.
    #[must_use]
    pub fn with_revocations(mut self, check: Arc<dyn RevocationCheck>) -> Self {
        self.revocations = Some(check);
        self
    }

    /// Replaces the ZK hook. A proof is only looked at after the signature verified (Z-4).
    #[must_use]
    pub fn with_zk(mut self, zk: Arc<dyn ZkHook>) -> Self {
        self.zk = zk;
        self
    }

    /// Replaces the nonce source. For known-answer tests and simulations only: production
    /// nonces MUST come from the OS CSPRNG (H-5), which is the default.
    #[must_use]
    pub fn with_nonce_source(mut self, source: NonceSource) -> Self {
        self.nonce_source = source;
        self
    }

    /// The session store sessions are written to.
    pub fn sessions(&self) -> &SessionStore {
        &self.sessions
    }

    /// Whether a legacy exchange with this peer ID would be refused as a downgrade (I-1).
    /// Transport adapters use it to stop offering legacy IDs to a pinned peer.
    pub fn is_peer_pinned(&self, peer_id: &str) -> bool {
        self.pinned(|p| p.is_peer_pinned(peer_id))
    }

    fn pinned(&self, check: impl Fn(&dyn DowngradePins) -> bool) -> bool {
        self.config.pin_upgraded_peers && self.pins.as_deref().is_some_and(check)
    }

    /// Runs the initiator side of one exchange on `stream`, under the protocol negotiated in
    /// `ctx`, and returns the session it stored for the responder. `expected_did`, when
    /// given, is the DID the caller means to reach (I-10).
    pub async fn initiate<S>(
        &self,
        stream: S,
        ctx: &StreamContext,
        expected_did: Option<&Did>,
    ) -> Result<SessionInfo, Error>
    where
        S: AsyncRead + AsyncWrite + Unpin + Send,
    {
        let deadline = self.config.effective_timeout();
        let result = if ctx.protocol.is_legacy() {
            with_deadline(deadline, self.run_legacy(stream, ctx, expected_did)).await
        } else {
            with_deadline(deadline, self.run_bound(stream, ctx, expected_did)).await
        };
        match &result {
            Ok(s) => tracing::info!(
                event = "handshake_initiated",
                peer = %ctx.remote_peer_id,
                remote_did = %s.peer_did,
                channel_bound = s.channel_bound,
                zk_verified = s.zk_verified,
                protocol = ctx.protocol.id(),
                "handshake initiated"
            ),
            Err(e) => tracing::warn!(
                event = "handshake_failed",
                peer = %ctx.remote_peer_id,
                protocol = ctx.protocol.id(),
                code = e.code(),
                error = %e,
                "outgoing handshake failed"
            ),
        }
        result
    }

    async fn run_legacy<S>(
        &self,
        stream: S,
        ctx: &StreamContext,
        expected_did: Option<&Did>,
    ) -> Result<SessionInfo, Error>
    where
        S: AsyncRead + AsyncWrite + Unpin + Send,
    {
        let remote = ctx.remote_peer_id.as_str();
        // I-1: a pinned peer that negotiated legacy is a downgrade.
        if self.pinned(|p| p.is_peer_pinned(remote)) {
            return Err(Error::DowngradeRefused);
        }

        // I-2 … I-4
        let nonce = (self.nonce_source)()?;
        let ts = unix_seconds(self.clock.now());
        let mut challenge = sign_challenge(&*self.wallet, &nonce, ts).await?;
        challenge.zk_schemes = self.zk.schemes();
        let mut reader = MessageReader::with_limit(stream, self.config.message_limit());
        write_message(reader.get_mut(), &challenge).await?;

        // I-5 … I-10
        let resp: ChallengeResponse = reader.read_message().await?;
        let verified = verify_response(&resp, &nonce, expected_did)?;

        // I-11
        if self.pinned(|p| p.is_did_pinned(verified.did.as_str())) {
            return Err(Error::DowngradeRefused);
        }
        check_revoked(self.revocations.as_ref(), verified.did.as_str())?;

        // Z-4: a proof can only add to the verified signature.
        let zk_verified = self
            .check_zk(
                &challenge.zk_schemes,
                resp.zk(),
                ZkInputs {
                    nonce: &nonce,
                    public_key: &resp.public_key,
                    initiator_did: challenge.sender_did.as_str(),
                    responder_did: verified.did.as_str(),
                    protocol_id: ctx.protocol.id(),
                },
            )
            .await?;

        // I-12
        let issued = self
            .sessions
            .create(NewSession {
                peer_did: verified.did.as_str(),
                peer_id: remote,
                protocol: ctx.protocol.id(),
                role: Role::Initiator,
                authenticated: true,
                channel_bound: false,
                zk_verified,
                remote_ip: None,
            })
            .map_err(Error::from_session)?;
        let mut guard = CreatedSession {
            store: &self.sessions,
            did: verified.did.as_str().to_owned(),
            token: Some(issued.token.duplicate()),
        };

        // I-13: on failure (or the deadline) the guard removes the session.
        let ack = SessionAck {
            token: WireToken::new(issued.token.expose().to_owned()),
            expires_at: unix_seconds(issued.session.expires_at),
        };
        write_message(reader.get_mut(), &ack).await?;
        guard.token = None;

        let _ = reader.get_mut().close().await;
        Ok(issued.session)
    }

    /// Z-4: whether the responder's ZK proof verified. A proof in a scheme this side did not
    /// advertise (Go's, or none) is ignored; one in an advertised scheme must verify, or the
    /// handshake fails ([`Error::ZkProofInvalid`]).
    async fn check_zk(
        &self,
        advertised: &[String],
        fields: ZkProofFields,
        inputs: ZkInputs<'_>,
    ) -> Result<bool, Error> {
        if fields.proof.is_empty()
            || fields.scheme.is_empty()
            || !advertised.contains(&fields.scheme)
        {
            return Ok(false);
        }
        match self.zk.verify(&fields, inputs).await {
            ZkOutcome::Verified => Ok(true),
            ZkOutcome::Unsupported => Ok(false),
            ZkOutcome::Invalid => Err(Error::ZkProofInvalid),
        }
    }

    async fn run_bound<S>(
        &self,
        stream: S,
        ctx: &StreamContext,
        expected_did: Option<&Did>,
    ) -> Result<SessionInfo, Error>
    where
        S: AsyncRead + AsyncWrite + Unpin + Send,
    {
        let remote = ctx.remote_peer_id.as_str();
        let binding = ctx.initiator_binding()?;
        let mut reader = MessageReader::with_limit(stream, self.config.message_limit());

        // M1
        let nonce = (self.nonce_source)()?;
        let ts = unix_seconds(self.clock.now());
        let (mut hello, init) = v12::sign_hello(&*self.wallet, &binding, nonce, ts).await?;
        hello.zk_schemes = self.zk.schemes();
        write_message(reader.get_mut(), &hello).await?;

        // P-6
        let proof = read_proof(&mut reader).await?;
        let resp = v12::verify_proof(&proof, &binding, &init, expected_did)?;
        check_revoked(self.revocations.as_ref(), resp.did().as_str())?;
        // Z-4: after the signature, never instead of it.
        let zk_verified = self
            .check_zk(
                &hello.zk_schemes,
                proof.zk(),
                ZkInputs {
                    nonce: &nonce,
                    public_key: &proof.public_key,
                    initiator_did: init.did().as_str(),
                    responder_did: resp.did().as_str(),
                    protocol_id: ctx.protocol.id(),
                },
            )
            .await?;

        // P-7: the token is minted now and stored only after an `ok` Result.
        let token = self
            .sessions
            .mint_token(resp.did().as_str())
            .map_err(Error::from_session)?;
        let proposed = local_expiry(self.clock.now(), self.sessions.ttl());
        let finish = v12::sign_finish(
            &*self.wallet,
            &binding,
            &init,
            &resp,
            WireToken::new(token.expose().to_owned()),
            &sha256_token(token.expose()),
            proposed,
        )
        .await?;
        write_message(reader.get_mut(), &finish).await?;

        // P-10
        let result: HandshakeResult = reader.read_message().await?;
        let final_expiry = v12::check_result(&result, proposed)?;
        let info = self
            .sessions
            .insert_remote(
                NewSession {
                    peer_did: resp.did().as_str(),
                    peer_id: remote,
                    protocol: ctx.protocol.id(),
                    role: Role::Initiator,
                    authenticated: true,
                    channel_bound: true,
                    zk_verified,
                    remote_ip: None,
                },
                token,
                unix_time(final_expiry),
            )
            .map_err(Error::from_session)?;
        if let Some(pins) = &self.pins {
            pins.record(info.peer_did.as_str(), remote);
        }
        let _ = reader.get_mut().close().await;
        Ok(info)
    }
}
