//! Peer authentication on the swarm: the handshake protocols registered on the node's
//! streams, sessions, approval policy, downgrade pins and security events.
//!
//! ## Protocols and negotiation
//!
//! The responder accepts `/lango/handshake/1.2.0-bound` always, and `/lango/handshake/1.1.0`
//! and `/lango/handshake/1.0.0` when `p2p.handshakeAllowLegacy` is set (P-2). The bare
//! `/lango/handshake/1.2.0` (upstream Go's post-quantum dialect) is never registered.
//!
//! The initiator proposes the same list in that order. Each proposal is one multistream-select
//! attempt on a new substream, so a peer that answers `na` for 1.2.0-bound is offered 1.1.0,
//! then 1.0.0 — exactly what a Go dialer proposing several IDs gets. A peer pinned as
//! 1.2-capable is never offered legacy (I-1). Once 1.2.0-bound is negotiated, a failure is
//! final: there is no legacy retry (P-2).
//!
//! ## Wiring
//!
//! - Approval: `p2p.handshakeApproval` ([`HandshakeApproval`]) through [`PolicyApproval`].
//! - Revoked DIDs are refused before approval and before anything is signed.
//! - A DID revoked at runtime loses its session (`security_event`).
//! - Reputation drops invalidate the peer's session (`reputation_drop`, E-4, E-6).
//! - Expired sessions are purged every `min(ttl, 5 min)` (S-7).
//! - The nonce cache lives `max(2 × handshakeTimeout, 330 s)` (N-5) and is bounded (N-6).
//!
//! [`HandshakeApproval`]: crate::config::HandshakeApproval

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use futures::StreamExt;
use lango_crypto::wallet::{Did, WalletKey};
use lango_handshake::clock::{Clock, SystemClock};
use lango_handshake::exchange::{Initiator, Responder, StreamContext};
use lango_handshake::hooks::{ApprovalHook, PendingHandshake, RevocationCheck};
use lango_handshake::nonce::{NonceCache, wired_nonce_ttl};
use lango_handshake::protocol::{Protocol, proposals};
use lango_session::{InvalidationReason, SecurityEventHandler, SessionInfo, SessionStore};
use libp2p::{PeerId, StreamProtocol};
use libp2p_stream::OpenStreamError;
use tokio::task::JoinHandle;

use crate::config::{HandshakeApproval, P2pConfig};
use crate::node::{DIAL_TIMEOUT, NodeHandle};
use crate::pins::Pins;
use crate::reputation::{Reputation, Standing};
use crate::revocation::Revocations;
use crate::{Error, Result};

/// Everything [`PeerAuth::start`] needs besides the node.
pub struct PeerAuthOptions {
    /// The `p2p` section (handshake, session and approval keys).
    pub config: P2pConfig,
    /// The wallet whose DID this node proves.
    pub wallet: Arc<WalletKey>,
    /// The session store (built from [`P2pConfig::session_config`]).
    pub sessions: SessionStore,
    /// Revoked DIDs, refused in both roles.
    pub revocations: Revocations,
    /// Reputation: consulted by the approval policy; its drops invalidate sessions.
    pub reputation: Option<Reputation>,
    /// Persistent downgrade pins.
    pub pins: Pins,
    /// ZK ownership proofs in legacy handshakes (`p2p.zkHandshake`): verified as initiator,
    /// produced as responder when it holds an identity.
    pub zk: Option<Arc<crate::zk::ZkOwnership>>,
}

/// A handshake that completed, as the initiator saw it.
#[derive(Debug, Clone)]
pub struct Authenticated {
    /// The session stored for the peer.
    pub session: SessionInfo,
    /// Whether this call ran a handshake (`false`: an existing session was reused).
    pub fresh: bool,
}

/// The authentication service of a running node. Cheap to clone; the background tasks stop
/// when the last clone is dropped.
#[derive(Clone)]
pub struct PeerAuth {
    inner: Arc<Inner>,
}

struct Inner {
    node: NodeHandle,
    initiator: Initiator,
    responder: Arc<Responder>,
    sessions: SessionStore,
    events: SecurityEventHandler,
    pins: Pins,
    allow_legacy: bool,
    tasks: Vec<JoinHandle<()>>,
    nonce_cache: Arc<NonceCache>,
}

/// Why a DID could not be resolved to a peer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DidLookupError {
    /// No live session with the DID.
    #[error("no session with {0}; connect to it first (p2p connect <multiaddr>)")]
    NoSession(String),
    /// The only session claiming the DID is unauthenticated (X-3, issue 17).
    #[error(
        "the session claiming {0} is not authenticated (the DID is only claimed); reach that peer by its peer ID, or connect to the DID's owner (p2p connect <multiaddr>)"
    )]
    Unauthenticated(String),
    /// The session's peer ID does not parse.
    #[error("session peer ID {0}: {1}")]
    BadPeerId(String, String),
}

/// The peer holding `peer_did`'s session, only when that session authenticated the DID: an
/// unauthenticated session's DID is a claim anyone can make, so it never routes a call meant
/// for the DID's owner (X-3, issue 17).
pub fn peer_for_did(
    sessions: &SessionStore,
    peer_did: &str,
) -> std::result::Result<PeerId, DidLookupError> {
    let session = sessions
        .get(peer_did)
        .ok_or_else(|| DidLookupError::NoSession(peer_did.to_owned()))?;
    if !session.authenticated {
        return Err(DidLookupError::Unauthenticated(peer_did.to_owned()));
    }
    session
        .peer_id
        .parse()
        .map_err(|e: libp2p::identity::ParseError| {
            DidLookupError::BadPeerId(session.peer_id.clone(), e.to_string())
        })
}

impl Drop for Inner {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
        self.nonce_cache.stop();
    }
}

impl std::fmt::Debug for PeerAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PeerAuth")
            .field("peer_id", &self.inner.node.peer_id())
            .field("allow_legacy", &self.inner.allow_legacy)
            .finish_non_exhaustive()
    }
}

impl RevocationCheck for Revocations {
    fn is_revoked(&self, did: &str) -> std::result::Result<bool, String> {
        Ok(Revocations::is_revoked(self, did))
    }
}

/// The approval hook of `p2p.handshakeApproval`. A reputation below `minTrustScore`
/// always denies; with `autoApproveKnownPeers`, a reputation at or above it approves (the
/// spec's recommended rule); otherwise the policy decides. A failed reputation lookup denies
/// by returning an error (fail closed).
pub struct PolicyApproval {
    policy: HandshakeApproval,
    allowed: HashSet<String>,
    auto_approve_known: bool,
    reputation: Option<Reputation>,
}

impl PolicyApproval {
    /// The hook for `config`.
    pub fn new(config: &P2pConfig, reputation: Option<Reputation>) -> Self {
        Self {
            policy: config.handshake_approval,
            allowed: config.handshake_allowed_dids.iter().cloned().collect(),
            auto_approve_known: config.auto_approve_known_peers,
            reputation,
        }
    }
}

#[async_trait]
impl ApprovalHook for PolicyApproval {
    /// A policy, not a person: no per-peer prompt slot (A-7 is about prompts).
    fn is_interactive(&self) -> bool {
        false
    }

    async fn approve(&self, p: &PendingHandshake) -> std::result::Result<bool, String> {
        if self.policy == HandshakeApproval::Deny {
            return Ok(false);
        }
        if let Some(rep) = &self.reputation {
            match rep
                .standing(&p.peer_did)
                .await
                .map_err(|e| format!("reputation lookup: {e}"))?
            {
                Standing::Untrusted(_) => return Ok(false),
                Standing::Trusted(_) if self.auto_approve_known && p.authenticated => {
                    return Ok(true);
                }
                _ => {}
            }
        }
        Ok(match self.policy {
            HandshakeApproval::Deny => false,
            HandshakeApproval::Allowlist => p.authenticated && self.allowed.contains(&p.peer_did),
            HandshakeApproval::Authenticated => p.authenticated,
            HandshakeApproval::Open => true,
        })
    }
}

fn hs_err(e: lango_handshake::Error) -> Error {
    Error::Handshake(e)
}

impl PeerAuth {
    /// Registers the handshake protocols on `node` and starts the background tasks (accept
    /// loops, session purge, reputation drops). Must run inside a tokio runtime.
    pub fn start(node: &NodeHandle, opts: PeerAuthOptions) -> Result<Self> {
        let hs = opts.config.handshake_config();
        let clock: Arc<dyn Clock> = Arc::new(SystemClock);
        let nonce_cache = Arc::new(NonceCache::with_clock(
            wired_nonce_ttl(hs.effective_timeout()),
            opts.config.nonce_cache_capacity,
            clock.clone(),
        ));
        nonce_cache.start().map_err(hs_err)?;
        let wallet: Arc<dyn lango_handshake::signer::Wallet> = opts.wallet.clone();
        // A DID with a live session is established: its pin is never evicted by a newcomer.
        let guard_sessions = opts.sessions.clone();
        opts.pins
            .add_guard(Arc::new(move |did: &str| guard_sessions.get(did).is_some()));
        let pins: Arc<dyn lango_handshake::hooks::DowngradePins> = Arc::new(opts.pins.clone());
        let revoked: Arc<dyn RevocationCheck> = Arc::new(opts.revocations.clone());
        let responder = Responder::new(
            wallet.clone(),
            opts.sessions.clone(),
            nonce_cache.clone(),
            clock.clone(),
            hs.clone(),
        )
        .with_approval(Arc::new(PolicyApproval::new(
            &opts.config,
            opts.reputation.clone(),
        )))
        .with_pins(pins.clone())
        .with_revocations(revoked.clone());
        let responder = Arc::new(match &opts.zk {
            Some(zk) if zk.can_prove() => responder.with_zk_prover(zk.clone()),
            _ => responder,
        });
        let initiator = Initiator::new(wallet, opts.sessions.clone(), clock, hs)
            .with_pins(pins)
            .with_revocations(revoked);
        let initiator = match &opts.zk {
            Some(zk) => initiator.with_zk(zk.clone()),
            None => initiator,
        };
        let events = SecurityEventHandler::from_config(
            opts.sessions.clone(),
            &opts.config.session_config(),
            opts.config.min_trust_score,
        );

        let allow_legacy = opts.config.handshake_allow_legacy;
        let mut tasks = Vec::new();
        let mut control = node.streams();
        for p in proposals(allow_legacy) {
            let incoming = control
                .accept(StreamProtocol::new(p.id()))
                .map_err(|e| Error::Network(format!("register {}: {e}", p.id())))?;
            tasks.push(tokio::spawn(accept_loop(
                node.clone(),
                responder.clone(),
                *p,
                incoming,
            )));
        }
        let sessions = opts.sessions.clone();
        let purge_every = sessions.purge_interval();
        tasks.push(tokio::spawn(async move {
            let mut tick = tokio::time::interval(purge_every);
            tick.tick().await;
            loop {
                tick.tick().await;
                let n = sessions.purge_expired();
                if n > 0 {
                    tracing::debug!(
                        event = "sessions_purged",
                        count = n,
                        "expired sessions purged"
                    );
                }
            }
        }));
        // A DID revoked at runtime loses its session at once (V-8: the connection stays).
        let mut revoked_rx = opts.revocations.subscribe();
        let revoked_sessions = opts.sessions.clone();
        let revocations_list = opts.revocations.clone();
        tasks.push(tokio::spawn(async move {
            loop {
                match revoked_rx.recv().await {
                    Ok(did) => {
                        if revoked_sessions.get(&did).is_some() {
                            revoked_sessions.invalidate(&did, InvalidationReason::SecurityEvent);
                        }
                    }
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                        // Events were missed: re-scan every session against the list.
                        let gone = revoked_sessions
                            .invalidate_by_condition(InvalidationReason::SecurityEvent, |s| {
                                revocations_list.is_revoked(&s.peer_did)
                            });
                        tracing::warn!(
                            missed = n,
                            invalidated = gone,
                            "revocation events missed; sessions re-checked against the list"
                        );
                    }
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => break,
                }
            }
        }));
        if let Some(rep) = &opts.reputation {
            let mut drops = rep.subscribe_drops();
            let events = events.clone();
            tasks.push(tokio::spawn(async move {
                loop {
                    match drops.recv().await {
                        Ok(d) => {
                            events.on_reputation_change(&d.peer_did, d.score);
                        }
                        Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                            tracing::warn!(missed = n, "reputation drops missed");
                        }
                        Err(tokio::sync::broadcast::error::RecvError::Closed) => break,
                    }
                }
            }));
        }
        Ok(Self {
            inner: Arc::new(Inner {
                node: node.clone(),
                initiator,
                responder,
                sessions: opts.sessions,
                events,
                pins: opts.pins,
                allow_legacy,
                tasks,
                nonce_cache,
            }),
        })
    }

    /// The session store.
    pub fn sessions(&self) -> &SessionStore {
        &self.inner.sessions
    }

    /// The peer to reach `peer_did` at: see [`peer_for_did`].
    pub fn peer_for_did(&self, peer_did: &str) -> std::result::Result<PeerId, DidLookupError> {
        peer_for_did(&self.inner.sessions, peer_did)
    }

    /// The security event handler (tool failures and reputation drops).
    pub fn security_events(&self) -> &SecurityEventHandler {
        &self.inner.events
    }

    /// The downgrade pins.
    pub fn pins(&self) -> &Pins {
        &self.inner.pins
    }

    /// Incoming handshakes in progress.
    pub fn handshakes_in_progress(&self) -> usize {
        self.inner.responder.in_progress()
    }

    /// Runs a handshake with `peer` (dialling it if needed, through the addresses the swarm
    /// knows) and returns the session stored for it. `expected_did`, when given, is the DID
    /// the caller means to reach (I-10).
    pub async fn handshake(&self, peer: PeerId, expected_did: Option<&Did>) -> Result<SessionInfo> {
        let (stream, protocol) = self.negotiate(peer).await?;
        let ctx = StreamContext {
            local_peer_id: self.inner.node.peer_id().to_base58(),
            remote_peer_id: peer.to_base58(),
            remote_addr: String::new(),
            protocol,
        };
        self.inner
            .initiator
            .initiate(stream, &ctx, expected_did)
            .await
            .map_err(hs_err)
    }

    /// The live session with `peer`, running a handshake first when there is none: what the
    /// A2A client calls before every request (handshake on demand).
    pub async fn ensure_session(&self, peer: PeerId) -> Result<Authenticated> {
        let id = peer.to_base58();
        if let Some(session) = self
            .inner
            .sessions
            .list()
            .into_iter()
            .find(|s| s.peer_id == id)
        {
            return Ok(Authenticated {
                session,
                fresh: false,
            });
        }
        Ok(Authenticated {
            session: self.handshake(peer, None).await?,
            fresh: true,
        })
    }

    /// Opens a handshake stream: 1.2.0-bound first, then the legacy IDs when allowed and the
    /// peer is not pinned (I-1, P-2).
    async fn negotiate(&self, peer: PeerId) -> Result<(libp2p::Stream, Protocol)> {
        let mut control = self.inner.node.streams();
        let pinned = self.inner.initiator.is_peer_pinned(&peer.to_base58());
        for p in proposals(self.inner.allow_legacy) {
            if p.is_legacy() && pinned {
                return Err(hs_err(lango_handshake::Error::DowngradeRefused));
            }
            let open = control.open_stream(peer, StreamProtocol::new(p.id()));
            match tokio::time::timeout(DIAL_TIMEOUT, open).await {
                Ok(Ok(stream)) => return Ok((stream, *p)),
                Ok(Err(OpenStreamError::UnsupportedProtocol(_))) => {}
                Ok(Err(e)) => return Err(Error::Network(format!("open handshake stream: {e}"))),
                Err(_) => return Err(Error::Timeout("opening a handshake stream".into())),
            }
        }
        Err(Error::Network(format!(
            "peer {peer} speaks none of the handshake protocols offered ({})",
            proposals(self.inner.allow_legacy)
                .iter()
                .map(|p| p.id())
                .collect::<Vec<_>>()
                .join(", ")
        )))
    }
}

async fn accept_loop(
    node: NodeHandle,
    responder: Arc<Responder>,
    protocol: Protocol,
    mut incoming: libp2p_stream::IncomingStreams,
) {
    let local = node.peer_id().to_base58();
    while let Some((peer, stream)) = incoming.next().await {
        let responder = responder.clone();
        let node = node.clone();
        let local = local.clone();
        tokio::spawn(async move {
            let ctx = StreamContext {
                local_peer_id: local,
                remote_peer_id: peer.to_base58(),
                remote_addr: remote_addr(&node, peer).await,
                protocol,
            };
            // Outcomes are logged by the responder; a failure drops (resets) the stream.
            let _ = responder.handle(stream, &ctx).await;
        });
    }
}

/// The remote address of the first connection to `peer`, for the approval prompt.
async fn remote_addr(node: &NodeHandle, peer: PeerId) -> String {
    let id = peer.to_base58();
    match tokio::time::timeout(Duration::from_secs(2), node.peers()).await {
        Ok(Ok(peers)) => peers
            .into_iter()
            .find(|p| p.peer_id == id)
            .and_then(|p| p.addrs.into_iter().next())
            .unwrap_or_default(),
        _ => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reputation::Outcome;
    use crate::test_support::{did, open_db};

    fn pending(did: &str, authenticated: bool) -> PendingHandshake {
        PendingHandshake {
            peer_id: "12D3KooWQK1wnefoLrcVHbbnf5tLzbopUd3K3bFAoJpA7YJgL5pV".into(),
            peer_did: did.into(),
            remote_addr: String::new(),
            timestamp: std::time::SystemTime::now(),
            authenticated,
        }
    }

    fn hook(
        policy: HandshakeApproval,
        allowed: &[&str],
        rep: Option<Reputation>,
    ) -> PolicyApproval {
        PolicyApproval::new(
            &P2pConfig {
                handshake_approval: policy,
                handshake_allowed_dids: allowed.iter().map(|s| (*s).to_owned()).collect(),
                ..P2pConfig::default()
            },
            rep,
        )
    }

    #[tokio::test]
    async fn each_policy_approves_what_it_says() {
        let (known, stranger) = (did(), did());
        use HandshakeApproval::*;
        let cases = [
            (Authenticated, true, &known, true),
            (Authenticated, false, &known, false),
            (Allowlist, true, &known, true),
            (Allowlist, true, &stranger, false),
            (Allowlist, false, &known, false),
            (Open, false, &stranger, true),
            (Deny, true, &known, false),
        ];
        for (policy, auth, who, want) in cases {
            let h = hook(policy, &[known.as_str()], None);
            assert_eq!(
                h.approve(&pending(who, auth)).await.unwrap(),
                want,
                "{policy:?} authenticated={auth}"
            );
        }
    }

    #[tokio::test]
    async fn reputation_below_the_threshold_denies_and_known_peers_are_auto_approved() {
        let dir = tempfile::tempdir().unwrap();
        let db = open_db(dir.path(), "auth.db", true).await;
        let rep = Reputation::new(db.pool().clone(), 0.3);
        let (bad, good) = (did(), did());
        rep.record(&bad, Outcome::Failure).await.unwrap();
        for _ in 0..5 {
            rep.record(&good, Outcome::Success).await.unwrap();
        }
        // Below the threshold: denied whatever the policy.
        let open = hook(HandshakeApproval::Open, &[], Some(rep.clone()));
        assert!(!open.approve(&pending(&bad, true)).await.unwrap());
        // A new peer (no record) is judged by the policy alone.
        assert!(open.approve(&pending(&did(), false)).await.unwrap());
        // autoApproveKnownPeers: a trusted, authenticated peer is approved even off the list.
        let mut known = hook(HandshakeApproval::Allowlist, &[], Some(rep.clone()));
        assert!(!known.approve(&pending(&good, true)).await.unwrap());
        known.auto_approve_known = true;
        assert!(known.approve(&pending(&good, true)).await.unwrap());
        assert!(!known.approve(&pending(&good, false)).await.unwrap());
        // A failed lookup refuses (fail closed): the pool is gone.
        db.pool().close().await;
        assert!(open.approve(&pending(&good, true)).await.is_err());
    }
}
