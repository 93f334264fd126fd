//! The handshake over real libp2p hosts on 127.0.0.1: negotiation, 1.2.0-bound between two
//! lango-rs nodes, downgrade pins, revocation, and the three-node relay attack (handshake
//! spec §6.1 X-5, §7 "Hardened 1.2").
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;
use common::Peer;

use std::{sync::Arc, time::Duration};

use futures::{AsyncReadExt, AsyncWriteExt, StreamExt};
use lango_handshake::{
    Error as HsError,
    clock::{Clock, SystemClock},
    exchange::{HandshakeConfig, Responder, StreamContext},
    messages::Hello,
    nonce::{NonceCache, wired_nonce_ttl},
    protocol::{PROTOCOL_1_0, PROTOCOL_1_1, PROTOCOL_1_2_BOUND, Protocol},
    v12,
    wire::{MessageReader, write_message},
};
use lango_p2p::{
    Error,
    auth::PeerAuth,
    config::{GoDuration, P2pConfig},
};
use lango_session::{SessionConfig, SessionStore};
use libp2p::{PeerId, StreamProtocol};

/// Methods only the negotiation tests need.
impl Peer {
    /// A bare responder for `protocols` on this node (no PeerAuth): a peer that speaks only
    /// some of the handshake IDs.
    fn serve_only(&self, protocols: &[Protocol]) -> SessionStore {
        let sessions = SessionStore::new(&SessionConfig::default()).unwrap();
        let clock: Arc<dyn Clock> = Arc::new(SystemClock);
        let responder = Arc::new(Responder::new(
            self.wallet.clone(),
            sessions.clone(),
            Arc::new(NonceCache::with_clock(
                wired_nonce_ttl(Duration::from_secs(30)),
                0,
                clock.clone(),
            )),
            clock,
            HandshakeConfig::default(),
        ));
        for p in protocols {
            let mut incoming = self
                .node
                .streams()
                .accept(StreamProtocol::new(p.id()))
                .unwrap();
            let (responder, local, p) = (responder.clone(), self.node.peer_id(), *p);
            tokio::spawn(async move {
                while let Some((peer, stream)) = incoming.next().await {
                    let ctx = ctx(local, peer, p);
                    let _ = responder.handle(stream, &ctx).await;
                }
            });
        }
        sessions
    }
}

fn ctx(local: PeerId, remote: PeerId, protocol: Protocol) -> StreamContext {
    StreamContext {
        local_peer_id: local.to_base58(),
        remote_peer_id: remote.to_base58(),
        remote_addr: String::new(),
        protocol,
    }
}

/// The session a legacy responder stores once the ack arrives — just after the initiator
/// returned, since legacy has no final message.
async fn stored(sessions: &SessionStore, did: &str) -> lango_session::SessionInfo {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        if let Some(s) = sessions.get(did) {
            return s;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no session stored for {did}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn hs_code(e: &Error) -> &'static str {
    match e {
        Error::Handshake(h) => h.code(),
        other => panic!("not a handshake error: {other}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_lango_nodes_authenticate_each_other_on_1_2_bound() {
    let (a, b) = (Peer::start().await, Peer::start().await);
    let auth_a = a.auth(P2pConfig::default()).await;
    // B's sessions live one hour: the final expiry is the smaller TTL, on both sides.
    let auth_b = b
        .auth(P2pConfig {
            session_token_ttl: GoDuration::secs(3600),
            ..P2pConfig::default()
        })
        .await;
    a.dial(&b).await;
    let s = auth_a.handshake(b.node.peer_id(), None).await.unwrap();
    assert_eq!(s.protocol, PROTOCOL_1_2_BOUND);
    assert_eq!(s.peer_did, b.did());
    assert_eq!(s.peer_id, b.node.peer_id().to_base58());
    assert!(s.authenticated && s.channel_bound && !s.zk_verified);
    let lifetime = s.expires_at.duration_since(s.created_at).unwrap();
    assert!(lifetime <= Duration::from_secs(3600), "{lifetime:?}");

    // The responder stores before it replies (P-9), so its session is already there.
    let r = auth_b
        .sessions()
        .get(&a.did())
        .expect("B holds a session for A");
    assert_eq!(r.peer_id, a.node.peer_id().to_base58());
    assert!(r.authenticated && r.channel_bound);
    assert_eq!(
        r.expires_at, s.expires_at,
        "both sides hold the same final expiry"
    );

    // Pins on both sides, persisted in each node's database.
    use lango_handshake::hooks::DowngradePins;
    assert!(auth_a.pins().is_did_pinned(&b.did()));
    assert!(auth_b.pins().is_peer_pinned(&a.node.peer_id().to_base58()));

    // Handshake on demand reuses the live session.
    let again = auth_a.ensure_session(b.node.peer_id()).await.unwrap();
    assert!(!again.fresh);
    assert_eq!(again.session.expires_at, s.expires_at);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn negotiation_reaches_legacy_only_responders_and_respects_allow_legacy() {
    let a = Peer::start().await;
    let auth_a = a.auth(P2pConfig::default()).await;
    let strict = Peer::start().await;
    let auth_strict = strict
        .auth(P2pConfig {
            handshake_allow_legacy: false,
            ..P2pConfig::default()
        })
        .await;
    for (only, id) in [
        (Protocol::Legacy10, PROTOCOL_1_0),
        (Protocol::Legacy11, PROTOCOL_1_1),
    ] {
        let go_like = Peer::start().await;
        let their_sessions = go_like.serve_only(&[only]);
        a.dial(&go_like).await;
        let s = auth_a
            .handshake(go_like.node.peer_id(), None)
            .await
            .unwrap();
        assert_eq!(s.protocol, id);
        assert!(s.authenticated && !s.channel_bound);
        assert_eq!(stored(&their_sessions, &a.did()).await.protocol, id);

        // A node with handshakeAllowLegacy = false offers only 1.2.0-bound.
        strict.dial(&go_like).await;
        let e = auth_strict
            .handshake(go_like.node.peer_id(), None)
            .await
            .unwrap_err();
        assert!(
            e.to_string()
                .contains("speaks none of the handshake protocols"),
            "{e}"
        );
        assert!(auth_strict.sessions().get(&go_like.did()).is_none());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pinned_peer_that_drops_1_2_is_refused_and_pins_survive_a_restart() {
    let (a, b) = (Peer::start().await, Peer::start().await);
    let auth_a = a.auth(P2pConfig::default()).await;
    let auth_b = b.auth(P2pConfig::default()).await;
    a.dial(&b).await;
    auth_a.handshake(b.node.peer_id(), None).await.unwrap();

    // B "loses" 1.2.0-bound: its PeerAuth goes (unregistering every handshake protocol) and
    // only a legacy 1.1.0 responder remains.
    drop(auth_b);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let b_sessions = b.serve_only(&[Protocol::Legacy11]);
    auth_a
        .sessions()
        .invalidate(&b.did(), lango_session::InvalidationReason::Logout);
    let e = auth_a.handshake(b.node.peer_id(), None).await.unwrap_err();
    assert_eq!(hs_code(&e), "downgrade_refused", "{e}");
    assert!(b_sessions.get(&a.did()).is_none(), "no legacy exchange ran");
    assert!(auth_a.sessions().get(&b.did()).is_none());

    // The pin is in A's database: a restarted PeerAuth refuses just the same.
    drop(auth_a);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let auth_a2 = a.auth(P2pConfig::default()).await;
    let e = auth_a2.handshake(b.node.peer_id(), None).await.unwrap_err();
    assert_eq!(hs_code(&e), "downgrade_refused", "{e}");

    // The operator removes the pin; legacy works again.
    assert!(auth_a2.pins().unpin(&b.did()).await.unwrap());
    let s = auth_a2.handshake(b.node.peer_id(), None).await.unwrap();
    assert_eq!(s.protocol, PROTOCOL_1_1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_did_loses_its_session_and_cannot_handshake_again() {
    let (a, b) = (Peer::start().await, Peer::start().await);
    let auth_a = a.auth(P2pConfig::default()).await;
    let auth_b = b.auth(P2pConfig::default()).await;
    a.dial(&b).await;
    auth_a.handshake(b.node.peer_id(), None).await.unwrap();
    assert!(auth_b.sessions().get(&a.did()).is_some());

    assert!(b.revocations.revoke(&a.did(), "compromised").await.unwrap());
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while auth_b.sessions().get(&a.did()).is_some() {
        assert!(tokio::time::Instant::now() < deadline, "session survived");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let last = auth_b.sessions().history().pop().unwrap();
    assert_eq!(last.reason.as_str(), "security_event");

    // B refuses before signing anything, so A sees the stream end.
    auth_a
        .sessions()
        .invalidate(&b.did(), lango_session::InvalidationReason::Logout);
    assert!(auth_a.handshake(b.node.peer_id(), None).await.is_err());
    assert!(auth_b.sessions().get(&a.did()).is_none());
    assert!(auth_a.sessions().get(&b.did()).is_none());
}

/// Mallory accepts `protocol` and relays every byte to Victor on the same protocol.
fn relay(mallory: &Peer, victor: PeerId, protocol: &'static str) {
    let mut incoming = mallory
        .node
        .streams()
        .accept(StreamProtocol::new(protocol))
        .unwrap();
    let node = mallory.node.clone();
    tokio::spawn(async move {
        while let Some((_alice, from_alice)) = incoming.next().await {
            let to_victor = node
                .streams()
                .open_stream(victor, StreamProtocol::new(protocol))
                .await
                .unwrap();
            tokio::spawn(async move {
                let (ar, mut aw) = from_alice.split();
                let (vr, mut vw) = to_victor.split();
                // Each direction ends with a close, so an end on one side reaches the other.
                let _ = futures::future::join(
                    async {
                        let _ = futures::io::copy(ar, &mut vw).await;
                        let _ = vw.close().await;
                    },
                    async {
                        let _ = futures::io::copy(vr, &mut aw).await;
                        let _ = aw.close().await;
                    },
                )
                .await;
            });
        }
    });
}

struct Cast {
    alice: Peer,
    mallory: Peer,
    victor: Peer,
    auth_alice: PeerAuth,
    auth_victor: PeerAuth,
}

async fn cast() -> Cast {
    let (alice, mallory, victor) = (
        Peer::start().await,
        Peer::start().await,
        Peer::start().await,
    );
    let auth_alice = alice.auth(P2pConfig::default()).await;
    let auth_victor = victor.auth(P2pConfig::default()).await;
    alice.dial(&mallory).await;
    mallory.dial(&victor).await;
    Cast {
        alice,
        mallory,
        victor,
        auth_alice,
        auth_victor,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn legacy_1_1_is_relayable_end_to_end() {
    let c = cast().await;
    // Mallory speaks no 1.2, so Alice falls back to 1.1.0 and Mallory relays it to Victor.
    relay(&c.mallory, c.victor.node.peer_id(), PROTOCOL_1_1);
    let s = c
        .auth_alice
        .handshake(c.mallory.node.peer_id(), None)
        .await
        .expect("the relayed legacy handshake succeeds");
    // Alice now believes her connection peer Mallory is Victor …
    assert_eq!(s.protocol, PROTOCOL_1_1);
    assert_eq!(s.peer_did, c.victor.did());
    assert_eq!(s.peer_id, c.mallory.node.peer_id().to_base58());
    // … and Victor believes Mallory's connection is Alice, authenticated by Alice's signature.
    // Victor stores once the relayed ack arrives, just after Alice returns.
    let v = stored(c.auth_victor.sessions(), &c.alice.did()).await;
    assert_eq!(v.peer_id, c.mallory.node.peer_id().to_base58());
    assert!(v.authenticated && !v.channel_bound);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relayed_1_2_hello_is_rejected_by_victor() {
    let c = cast().await;
    relay(&c.mallory, c.victor.node.peer_id(), PROTOCOL_1_2_BOUND);
    let e = c
        .auth_alice
        .handshake(c.mallory.node.peer_id(), None)
        .await
        .unwrap_err();
    // Victor verified Alice's hello with (peer_I = Mallory, peer_R = Victor) and closed the
    // stream without a word; Alice sees it end.
    assert!(
        matches!(e, Error::Handshake(HsError::Io { .. } | HsError::Decode(_))),
        "{e}"
    );
    assert!(c.auth_victor.sessions().list().is_empty());
    assert!(c.auth_alice.sessions().list().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn victors_proof_forwarded_to_alice_is_rejected_by_alice() {
    let c = cast().await;
    // Mallory answers Alice's hello by running her own hello to Victor — with Alice's nonce
    // and timestamp, so Victor's proof even echoes the right nonce — and forwards the proof.
    let mut incoming = c
        .mallory
        .node
        .streams()
        .accept(StreamProtocol::new(PROTOCOL_1_2_BOUND))
        .unwrap();
    let (node, wallet, victor) = (
        c.mallory.node.clone(),
        c.mallory.wallet.clone(),
        c.victor.node.peer_id(),
    );
    tokio::spawn(async move {
        while let Some((_alice, from_alice)) = incoming.next().await {
            let mut alice = MessageReader::new(from_alice);
            let alice_hello: Hello = alice.read_message().await.unwrap();
            let to_victor = node
                .streams()
                .open_stream(victor, StreamProtocol::new(PROTOCOL_1_2_BOUND))
                .await
                .unwrap();
            let binding = ctx(node.peer_id(), victor, Protocol::Bound12)
                .initiator_binding()
                .unwrap();
            let nonce: [u8; 32] = alice_hello.nonce.clone().try_into().unwrap();
            let (hello, _) = v12::sign_hello(&*wallet, &binding, nonce, alice_hello.timestamp)
                .await
                .unwrap();
            let mut v = MessageReader::new(to_victor);
            write_message(v.get_mut(), &hello).await.unwrap();
            let proof: lango_handshake::messages::Proof = v.read_message().await.unwrap();
            write_message(alice.get_mut(), &proof).await.unwrap();
            // Keep both streams open until Alice gives up.
            let _ = alice.read_message::<Hello>().await;
        }
    });
    let e = c
        .auth_alice
        .handshake(c.mallory.node.peer_id(), None)
        .await
        .unwrap_err();
    assert_eq!(hs_code(&e), "signature_mismatch", "{e}");
    assert!(c.auth_alice.sessions().list().is_empty());
    // Victor got no Finish: no session names Mallory or Alice there.
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(c.auth_victor.sessions().list().is_empty());
}
