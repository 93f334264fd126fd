//! Issue 17, "Throwaway identities must buy nothing": floods of handshakes with fresh DIDs
//! from ONE peer ID, over real libp2p hosts on 127.0.0.1, against a node's pins, session
//! store and quotas. Each test asserts what the user relies on, from outside.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;
use common::Peer;

use std::{sync::Arc, time::Duration};

use futures::{StreamExt, stream};
use lango_crypto::wallet::WalletKey;
use lango_handshake::{
    clock::{Clock, SystemClock},
    exchange::{HandshakeConfig, Initiator, StreamContext},
    hooks::{DowngradePins, PinPolicy},
    legacy,
    messages::ChallengeResponse,
    protocol::{PROTOCOL_1_1, PROTOCOL_1_2_BOUND, Protocol},
    v12,
    wire::{MessageReader, write_message},
};
use lango_p2p::{config::P2pConfig, pins::Pins};
use lango_session::{SessionConfig, SessionStore};
use libp2p::{PeerId, StreamProtocol};

/// A config whose handshake-attempt rate does not stop the flood first, so the defence under
/// test is the one that has to hold.
fn flood_config() -> P2pConfig {
    P2pConfig {
        handshake_attempts_per_peer: 1_000_000,
        handshake_attempts_per_addr: 1_000_000,
        ..P2pConfig::default()
    }
}

/// What one flooding handshake ended with.
#[derive(Debug, Default)]
struct Tally {
    ok: usize,
    refused_busy: usize,
    other: Vec<String>,
}

/// Mallory's node runs `count` 1.2 handshakes with `target`, each with a fresh DID, proposing
/// sessions of `ttl`, all from her one peer ID.
async fn flood(mallory: &Peer, target: PeerId, count: usize, ttl: Duration) -> Tally {
    flood_n(mallory, target, count, ttl, 1).await
}

/// [`flood`] with `parallel` handshakes in flight at once.
async fn flood_n(
    mallory: &Peer,
    target: PeerId,
    count: usize,
    ttl: Duration,
    parallel: usize,
) -> Tally {
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let local = mallory.node.peer_id();
    let results: Vec<Result<(), lango_handshake::Error>> = stream::iter(0..count)
        .map(|_| {
            let clock = clock.clone();
            let control = mallory.node.streams();
            async move {
                let mut control = control;
                let sessions = SessionStore::new(&SessionConfig {
                    session_token_ttl: ttl,
                    ..SessionConfig::default()
                })
                .unwrap();
                let wallet = Arc::new(WalletKey::generate().unwrap());
                let initiator = Initiator::new(wallet, sessions, clock, HandshakeConfig::default());
                let s = tokio::time::timeout(
                    Duration::from_secs(10),
                    control.open_stream(target, StreamProtocol::new(PROTOCOL_1_2_BOUND)),
                )
                .await
                .expect("open stream in time")
                .expect("open stream");
                let ctx = StreamContext {
                    local_peer_id: local.to_base58(),
                    remote_peer_id: target.to_base58(),
                    remote_addr: String::new(),
                    protocol: Protocol::Bound12,
                };
                initiator.initiate(s, &ctx, None).await.map(|_| ())
            }
        })
        .buffer_unordered(parallel)
        .collect()
        .await;
    let mut t = Tally::default();
    for r in results {
        match r {
            Ok(()) => t.ok += 1,
            Err(lango_handshake::Error::RejectedByPeer(code)) if code == "busy" => {
                t.refused_busy += 1
            }
            Err(e) => t.other.push(format!("{}: {e}", e.code())),
        }
    }
    t
}

/// Mallory relays a legacy 1.1 challenge that the victim signed, from her own peer ID. Returns
/// whether the target answered it (signed a response).
async fn relayed_legacy_challenge_answered(mallory: &Peer, target: PeerId, victim: &Peer) -> bool {
    let mut control = mallory.node.streams();
    let s = control
        .open_stream(target, StreamProtocol::new(PROTOCOL_1_1))
        .await
        .expect("legacy is registered");
    let nonce: [u8; 32] = lango_crypto::random::bytes().unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let challenge = legacy::sign_challenge(&*victim.wallet, &nonce, now)
        .await
        .unwrap();
    let mut r = MessageReader::new(s);
    write_message(r.get_mut(), &challenge).await.unwrap();
    matches!(
        tokio::time::timeout(
            Duration::from_secs(10),
            r.read_message::<ChallengeResponse>()
        )
        .await,
        Ok(Ok(_))
    )
}

/// Mallory sends one 1.2 Hello with a fresh DID and returns the node's first reply as JSON.
async fn first_reply_to_fresh_hello(mallory: &Peer, target: PeerId) -> serde_json::Value {
    let mut control = mallory.node.streams();
    let s = control
        .open_stream(target, StreamProtocol::new(PROTOCOL_1_2_BOUND))
        .await
        .unwrap();
    let ctx = StreamContext {
        local_peer_id: mallory.node.peer_id().to_base58(),
        remote_peer_id: target.to_base58(),
        remote_addr: String::new(),
        protocol: Protocol::Bound12,
    };
    let wallet = WalletKey::generate().unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let (hello, _) = v12::sign_hello(
        &wallet,
        &ctx.initiator_binding().unwrap(),
        lango_crypto::random::bytes().unwrap(),
        now,
    )
    .await
    .unwrap();
    let mut r = MessageReader::new(s);
    write_message(r.get_mut(), &hello).await.unwrap();
    tokio::time::timeout(Duration::from_secs(10), r.read_message())
        .await
        .expect("a reply in time")
        .expect("a reply")
}

/// Defence 1 (X-5, P-12 as amended): a flood of fresh DIDs from one peer ID does not evict the
/// pin of a peer that has a session here, so its relayed legacy challenge is still refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fresh_dids_from_one_peer_cannot_flush_the_victims_downgrade_pin() {
    let (node, victim, mallory) = (
        Peer::start().await,
        Peer::start().await,
        Peer::start().await,
    );
    // A small table, so the flood is bounded in time; the bound is the thing attacked.
    let pins = Pins::load_with(
        node.db.pool().clone(),
        PinPolicy {
            capacity: 50,
            ..PinPolicy::default()
        },
    )
    .await
    .unwrap();
    let config = flood_config();
    // Nor does the session quota stop the flood first: the pins must hold on their own.
    let sessions = SessionStore::builder(&config.session_config())
        .max_sessions_per_peer(100_000)
        .build()
        .unwrap();
    let auth_node = node.auth_with(config, sessions, pins).await;
    let auth_victim = victim.auth(P2pConfig::default()).await;
    victim.dial(&node).await;
    auth_victim
        .handshake(node.node.peer_id(), None)
        .await
        .unwrap();
    assert!(auth_node.pins().is_did_pinned(&victim.did()));

    mallory.dial(&node).await;
    let t = flood(&mallory, node.node.peer_id(), 400, Duration::from_secs(3)).await;
    assert!(
        t.other.is_empty(),
        "{} ok, {} busy, {} other: {:?}",
        t.ok,
        t.refused_busy,
        t.other.len(),
        &t.other[..t.other.len().min(5)]
    );
    assert!(t.ok > 0, "{t:?}");

    // What the user relies on: the victim is still pinned, and a legacy challenge the victim
    // signed, relayed from another peer ID, is refused before the node signs anything.
    assert!(auth_node.pins().len() <= 50);
    assert!(
        auth_node.pins().is_did_pinned(&victim.did()),
        "the victim's pin was evicted by {} fresh DIDs",
        t.ok
    );
    assert!(
        !relayed_legacy_challenge_answered(&mallory, node.node.peer_id(), &victim).await,
        "the node answered a relayed legacy challenge of a 1.2 peer"
    );
    assert!(
        auth_node
            .sessions()
            .get(&victim.did())
            .unwrap()
            .channel_bound
    );
}

/// Defences 2 and 3: one peer ID minting DIDs cannot fill the session store. Its surplus
/// handshakes are refused with `busy` before the node verifies or signs anything; another
/// peer and the node's own outgoing handshake still get sessions.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fresh_dids_from_one_peer_cannot_fill_the_session_store() {
    let (node, mallory, other, outgoing) = (
        Peer::start().await,
        Peer::start().await,
        Peer::start().await,
        Peer::start().await,
    );
    let config = flood_config();
    // 60 slots: 32 per peer ID (the default quota), 6 kept for outgoing sessions.
    let sessions = SessionStore::builder(&config.session_config())
        .max_sessions(60)
        .build()
        .unwrap();
    let pins = Pins::load(node.db.pool().clone()).await.unwrap();
    let auth_node = node.auth_with(config, sessions, pins).await;
    mallory.dial(&node).await;
    let t = flood(
        &mallory,
        node.node.peer_id(),
        300,
        Duration::from_secs(24 * 3600),
    )
    .await;
    assert!(
        t.other.is_empty(),
        "{} ok, {} busy, {} other: {:?}",
        t.ok,
        t.refused_busy,
        t.other.len(),
        &t.other[..t.other.len().min(5)]
    );
    assert_eq!(t.ok, lango_session::DEFAULT_MAX_SESSIONS_PER_PEER, "{t:?}");
    assert_eq!(t.refused_busy, 300 - t.ok, "refused with the busy code");
    // Refused before the node verified or signed anything: the first reply to a Hello is a
    // `rejected` Result, not a Proof.
    assert_eq!(
        first_reply_to_fresh_hello(&mallory, node.node.peer_id()).await,
        serde_json::json!({"status": "rejected", "error": "busy"})
    );

    // Another peer still gets a session …
    let auth_other = other.auth(P2pConfig::default()).await;
    other.dial(&node).await;
    auth_other
        .handshake(node.node.peer_id(), None)
        .await
        .expect("another peer is admitted after the flood");
    assert!(auth_node.sessions().get(&other.did()).is_some());
    // … and so does this node's own outgoing handshake (`p2p connect`).
    let _auth_outgoing = outgoing.auth(P2pConfig::default()).await;
    node.dial(&outgoing).await;
    let s = auth_node
        .handshake(outgoing.node.peer_id(), None)
        .await
        .expect("the node's own connect works after the flood");
    assert_eq!(s.peer_did, outgoing.did());
}

/// Defence 5 (H-3, A-7): under the automatic `authenticated` policy, two handshakes in flight
/// from one peer are both served; one pending approval per peer applies to prompts only.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_handshakes_in_flight_from_one_peer_are_both_served() {
    let (node, peer) = (Peer::start().await, Peer::start().await);
    let config = flood_config();
    let sessions = SessionStore::builder(&config.session_config())
        .max_sessions_per_peer(100_000)
        .build()
        .unwrap();
    let pins = Pins::load(node.db.pool().clone()).await.unwrap();
    let auth_node = node.auth_with(config, sessions, pins).await;
    peer.dial(&node).await;
    let t = flood_n(
        &peer,
        node.node.peer_id(),
        100,
        Duration::from_secs(3600),
        2,
    )
    .await;
    // With one pending approval per peer enforced, 25-40 % were refused `busy`. A few
    // streams still end with "connection is closed" on this transport under concurrency
    // (a separate, open problem), hence a bound rather than all 100.
    // The property itself: no handshake of this peer is refused `busy` (4 in flight allowed).
    assert_eq!(t.refused_busy, 0, "{t:?}");
    assert!(!t.other.iter().any(|e| e.contains("busy")), "{t:?}");
    assert!(t.ok >= 85, "{} ok, other: {:?}", t.ok, t.other);
    assert_eq!(auth_node.sessions().len(), t.ok);
}
