//! The legacy 1.0.0/1.1.0 state machines over any stream (spec §3.2, §3.3).
//!
//! [`LegacyResponder::handle`] and [`LegacyInitiator::initiate`] run one complete exchange on
//! a `futures::io` `AsyncRead + AsyncWrite` stream (a libp2p stream, or an in-memory pipe in
//! tests), under **one deadline for the whole exchange** (H-1): every read and write, the
//! approval wait and wallet signing. On any failure the stream is dropped without a reply
//! (W-3); dropping a libp2p stream resets it. On success the stream is closed.
//!
//! Both must run inside a tokio runtime (the deadline is a tokio timer).
//!
//! Negotiation (multistream-select, I-1) belongs to the transport adapter, which passes the
//! negotiated protocol in [`StreamContext`]. The 1.2.0-bound exchange is not run here: these
//! types refuse it with [`Error::InvalidInput`].

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, UNIX_EPOCH};

use futures::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use lango_crypto::wallet::Did;
use lango_session::{NewSession, Role, SessionInfo, SessionStore, SessionToken};

use crate::Error;
use crate::clock::{Clock, check_timestamp, unix_seconds};
use crate::hooks::{
    ApprovalHook, DowngradePins, NoZk, PendingHandshake, ZkHook, ZkInputs, ZkOutcome,
};
use crate::legacy::{
    InitiatorAuth, UnsignedReason, check_sender_did, classify_challenge, require_nonce,
    sign_challenge, sign_response, validate_ack, verify_response,
};
use crate::messages::{Challenge, ChallengeResponse, SessionAck};
use crate::nonce::{DEFAULT_HANDSHAKE_TIMEOUT, NONCE_SIZE, NonceCache};
use crate::protocol::Protocol;
use crate::signer::Wallet;
use crate::wire::{
    DEFAULT_MAX_MESSAGE_BYTES, MIN_MAX_MESSAGE_BYTES, MessageReader, WireToken, write_message,
};

/// Default bound on incoming handshakes in progress (`p2p.handshakeMaxConcurrent`, H-3).
pub const DEFAULT_MAX_CONCURRENT: usize = 64;
/// Bound on incoming handshakes in progress from one remote peer ID (H-3).
pub const DEFAULT_MAX_PER_PEER: usize = 4;
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

fn legacy_only(ctx: &StreamContext) -> Result<(), Error> {
    if ctx.protocol.is_legacy() {
        Ok(())
    } else {
        Err(Error::InvalidInput(
            "the legacy state machine does not run the 1.2.0-bound protocol".to_owned(),
        ))
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
    approvals: HashSet<String>,
}

/// A slot among the handshakes in progress; released on drop.
struct Slot<'a> {
    limits: &'a Mutex<Limits>,
    peer: String,
}

impl Drop for Slot<'_> {
    fn drop(&mut self) {
        let mut l = self.limits.lock().unwrap_or_else(PoisonError::into_inner);
        l.total = l.total.saturating_sub(1);
        if let Some(n) = l.per_peer.get_mut(&self.peer) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                l.per_peer.remove(&self.peer);
            }
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

/// The responder of the legacy protocols (`HandleIncoming`, rules R-1…R-15).
pub struct LegacyResponder {
    wallet: Arc<dyn Wallet>,
    sessions: SessionStore,
    nonce_cache: Arc<NonceCache>,
    clock: Arc<dyn Clock>,
    approval: Option<Arc<dyn ApprovalHook>>,
    pins: Option<Arc<dyn DowngradePins>>,
    config: HandshakeConfig,
    limits: Mutex<Limits>,
    warned: Mutex<HashSet<String>>,
}

impl std::fmt::Debug for LegacyResponder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LegacyResponder")
            .field("config", &self.config)
            .field("approval", &self.approval.is_some())
            .field("pins", &self.pins.is_some())
            .finish_non_exhaustive()
    }
}

impl LegacyResponder {
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
            config,
            limits: Mutex::new(Limits::default()),
            warned: Mutex::new(HashSet::new()),
        }
    }

    /// Adds the approval hook.
    #[must_use]
    pub fn with_approval(mut self, hook: Arc<dyn ApprovalHook>) -> Self {
        self.approval = Some(hook);
        self
    }

    /// Adds downgrade pins, consulted when `pin_upgraded_peers` is set.
    #[must_use]
    pub fn with_pins(mut self, pins: Arc<dyn DowngradePins>) -> Self {
        self.pins = Some(pins);
        self
    }

    /// The number of incoming handshakes in progress (H-3).
    pub fn in_progress(&self) -> usize {
        self.limits
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .total
    }

    fn acquire(&self, peer: &str) -> Result<Slot<'_>, Error> {
        let (max_total, max_peer) = self.config.concurrency();
        let mut l = self.limits.lock().unwrap_or_else(PoisonError::into_inner);
        let per = l.per_peer.get(peer).copied().unwrap_or(0);
        if l.total >= max_total || per >= max_peer {
            return Err(Error::Busy);
        }
        l.total += 1;
        l.per_peer.insert(peer.to_owned(), per + 1);
        Ok(Slot {
            limits: &self.limits,
            peer: peer.to_owned(),
        })
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

    /// Runs the responder side of one legacy exchange on `stream` and returns the stored
    /// session. Errors follow the taxonomy of [`Error`]; nothing is sent on failure.
    pub async fn handle<S>(&self, stream: S, ctx: &StreamContext) -> Result<SessionInfo, Error>
    where
        S: AsyncRead + AsyncWrite + Unpin + Send,
    {
        let result = match legacy_only(ctx).and_then(|()| self.acquire(&ctx.remote_peer_id)) {
            Ok(_slot) => {
                with_deadline(self.config.effective_timeout(), self.run(stream, ctx)).await
            }
            Err(e) => Err(e),
        };
        match &result {
            Ok(s) => tracing::info!(
                event = "handshake_accepted",
                peer = %ctx.remote_peer_id,
                remote_did = %s.peer_did,
                authenticated = s.authenticated,
                zk_verified = false,
                protocol = ctx.protocol.id(),
                "handshake accepted"
            ),
            Err(e) => tracing::warn!(
                event = "handshake_failed",
                peer = %ctx.remote_peer_id,
                code = e.code(),
                error = %e,
                "incoming handshake failed"
            ),
        }
        result
    }

    async fn run<S>(&self, stream: S, ctx: &StreamContext) -> Result<SessionInfo, Error>
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

        //
        let own_did = Did::from_public_key(&self.wallet.public_key().await?);
        let auth = classify_challenge(&ch, self.config.require_signed_challenge)?;
        if auth == InitiatorAuth::Unsigned(UnsignedReason::LegacyDoubleHash) {
            self.warn_double_hash_once(remote, &ch.sender_did);
        }
        let did = check_sender_did(&ch, &auth, Some(&own_did))?;
        let authenticated = auth.is_authenticated();

        //
        if self.config.pin_upgraded_peers
            && let Some(pins) = &self.pins
            && (pins.is_did_pinned(did.as_str()) || pins.is_peer_pinned(remote))
        {
            return Err(Error::DowngradeRefused);
        }
        self.sessions
            .may_handshake(did.as_str(), remote)
            .map_err(Error::from_session)?;

        //
        let existing = self.sessions.get(did.as_str());
        if let Some(e) = &existing
            && !authenticated
            && e.authenticated
            && e.peer_id != remote
        {
            return Err(Error::AuthenticatedSessionExists);
        }

        // R-9 (A-1 … A-7)
        let known = self.config.auto_approve_known_peers
            && existing
                .as_ref()
                .is_some_and(|e| e.authenticated && (authenticated || e.peer_id == remote));
        if !known && let Some(hook) = &self.approval {
            let _pending_slot = self.acquire_approval(remote)?;
            let pending = PendingHandshake {
                peer_id: remote.to_owned(),
                peer_did: did.as_str().to_owned(),
                remote_addr: ctx.remote_addr.clone(),
                timestamp: self.clock.now(),
                authenticated,
            };
            match hook.approve(&pending).await {
                Ok(true) => {}
                Ok(false) => return Err(Error::ApprovalDenied),
                Err(e) => return Err(Error::ApprovalError(e)),
            }
        }

        //
        let resp: ChallengeResponse = sign_response(&*self.wallet, &nonce).await?;
        write_message(reader.get_mut(), &resp).await?;

        //
        let ack: SessionAck = reader.read_message().await?;
        let expires = validate_ack(&ack, self.clock.now(), self.sessions.ttl())?;
        let token = SessionToken::parse(ack.token.expose()).map_err(Error::from_session)?;
        let expires_at = UNIX_EPOCH + Duration::from_secs(u64::try_from(expires).unwrap_or(0));

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
                },
                token,
                expires_at,
            )
            .map_err(Error::from_session)?;

        // the session is stored; a failing close changes nothing.
        let _ = reader.get_mut().close().await;
        Ok(info)
    }
}

/// A source of challenge nonces.
pub type NonceSource = Arc<dyn Fn() -> Result<[u8; NONCE_SIZE], Error> + Send + Sync>;

fn os_nonce() -> Result<[u8; NONCE_SIZE], Error> {
    lango_crypto::random::bytes::<NONCE_SIZE>()
        .map_err(|_| Error::Internal("generate nonce: the OS random source failed".to_owned()))
}

/// Removes a just-created session unless disarmed: on an ack write failure, and when the
/// deadline drops the exchange midway (I-13).
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

/// The initiator of the legacy protocols (`Initiate`, rules I-1…I-14).
pub struct LegacyInitiator {
    wallet: Arc<dyn Wallet>,
    sessions: SessionStore,
    clock: Arc<dyn Clock>,
    zk: Arc<dyn ZkHook>,
    pins: Option<Arc<dyn DowngradePins>>,
    config: HandshakeConfig,
    nonce_source: NonceSource,
}

impl std::fmt::Debug for LegacyInitiator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LegacyInitiator")
            .field("config", &self.config)
            .field("pins", &self.pins.is_some())
            .finish_non_exhaustive()
    }
}

impl LegacyInitiator {
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
            config,
            nonce_source: Arc::new(os_nonce),
        }
    }

    /// Adds downgrade pins (I-1, I-11), consulted when `pin_upgraded_peers` is set.
    #[must_use]
    pub fn with_pins(mut self, pins: Arc<dyn DowngradePins>) -> Self {
        self.pins = Some(pins);
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

    fn pinned(&self, check: impl Fn(&dyn DowngradePins) -> bool) -> bool {
        self.config.pin_upgraded_peers && self.pins.as_deref().is_some_and(check)
    }

    /// Runs the initiator side of one legacy exchange on `stream` and returns the session it
    /// created for the responder. `expected_did`, when given, is the DID the caller means to
    /// reach (I-10).
    pub async fn initiate<S>(
        &self,
        stream: S,
        ctx: &StreamContext,
        expected_did: Option<&Did>,
    ) -> Result<SessionInfo, Error>
    where
        S: AsyncRead + AsyncWrite + Unpin + Send,
    {
        let result = match legacy_only(ctx) {
            Ok(()) => {
                with_deadline(
                    self.config.effective_timeout(),
                    self.run(stream, ctx, expected_did),
                )
                .await
            }
            Err(e) => Err(e),
        };
        match &result {
            Ok(s) => tracing::info!(
                event = "handshake_initiated",
                peer = %ctx.remote_peer_id,
                remote_did = %s.peer_did,
                zk_verified = s.zk_verified,
                protocol = ctx.protocol.id(),
                "handshake initiated"
            ),
            Err(e) => tracing::warn!(
                event = "handshake_failed",
                peer = %ctx.remote_peer_id,
                code = e.code(),
                error = %e,
                "outgoing handshake failed"
            ),
        }
        result
    }

    async fn run<S>(
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
        let challenge = sign_challenge(&*self.wallet, &nonce, ts).await?;
        let mut reader = MessageReader::with_limit(stream, self.config.message_limit());
        write_message(reader.get_mut(), &challenge).await?;

        // I-5 … I-10
        let resp: ChallengeResponse = reader.read_message().await?;
        let verified = verify_response(&resp, &nonce, expected_did)?;

        // I-11
        if self.pinned(|p| p.is_did_pinned(verified.did.as_str())) {
            return Err(Error::DowngradeRefused);
        }

        // Z-4: a proof can only add to the verified signature.
        let zk_verified = verified.zk_proof_present
            && self
                .zk
                .verify(
                    &resp.zk_proof,
                    ZkInputs {
                        nonce: &nonce,
                        public_key: &resp.public_key,
                        initiator_peer_id: &ctx.local_peer_id,
                        responder_peer_id: remote,
                    },
                )
                .await
                == ZkOutcome::Verified;

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
}
