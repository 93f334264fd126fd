//! Agent-card acceptance on a real swarm: a hostile peer — an independent gossipsub host
//! built here, not a lango node — publishes crafted cards to a running node over TCP on
//! 127.0.0.1, and each attack of protocol spec §2.4.4 / W-27 is refused for its own reason.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::{sync::Arc, time::Duration};

use futures::StreamExt;
use lango_crypto::{SecretKey32, wallet::WalletKey};
use lango_p2p::{
    card::AgentCard,
    config::ZkpConfig,
    config::{A2aConfig, GoDuration, P2pConfig},
    credential,
    identity::KeyStorage,
    node::{self, AGENT_CARD_TOPIC, NodeHandle, NodeOptions},
    revocation::Revocations,
};
use libp2p::{Multiaddr, PeerId, Swarm, gossipsub, noise, swarm::SwarmEvent, tcp, yamux};
use time::OffsetDateTime;

/// The capability evaluator the node trusts.
fn issuer() -> WalletKey {
    WalletKey::from_bytes(&[7; 32]).unwrap()
}

async fn start_node(dir: &std::path::Path) -> (NodeHandle, Revocations, lango_store::Database) {
    start_node_with(dir, WalletKey::generate().unwrap(), Vec::new()).await
}

async fn start_node_with(
    dir: &std::path::Path,
    wallet: WalletKey,
    credentials: Vec<lango_p2p::card::ZkCredential>,
) -> (NodeHandle, Revocations, lango_store::Database) {
    let key = SecretKey32::generate().unwrap();
    let db = lango_store::Database::open(
        &dir.join("lango.db"),
        lango_store::Keying::RawKey {
            key: &key,
            page_size: lango_store::db::DEFAULT_PAGE_SIZE,
        },
        lango_store::OpenOptions {
            create: true,
            ..lango_store::OpenOptions::default()
        },
    )
    .await
    .unwrap();
    lango_p2p::migrate(&db).await.unwrap();
    let revocations = Revocations::load(db.pool().clone(), &[]).await.unwrap();
    let p2p = P2pConfig {
        enabled: true,
        listen_addrs: vec!["/ip4/127.0.0.1/tcp/0".into()],
        gossip_interval: GoDuration::secs(1),
        zkp: ZkpConfig {
            trusted_issuers: vec![issuer().did().to_string()],
            ..ZkpConfig::default()
        },
        ..P2pConfig::default()
    };
    let node = node::start(NodeOptions {
        p2p,
        a2a: A2aConfig::default(),
        keypair: libp2p::identity::Keypair::generate_ed25519(),
        key_storage: KeyStorage::SecretsStore,
        wallet: Some(Arc::new(wallet)),
        revocations: revocations.clone(),
        credentials,
    })
    .await
    .unwrap();
    (node, revocations, db)
}

fn rogue() -> Swarm<gossipsub::Behaviour> {
    libp2p::SwarmBuilder::with_new_identity()
        .with_tokio()
        .with_tcp(
            tcp::Config::default(),
            noise::Config::new,
            yamux::Config::default,
        )
        .unwrap()
        .with_behaviour(|key| {
            let cfg = gossipsub::ConfigBuilder::default()
                .validation_mode(gossipsub::ValidationMode::Strict)
                .max_transmit_size(256 * 1024)
                .heartbeat_interval(Duration::from_millis(500))
                .build()
                .unwrap();
            gossipsub::Behaviour::new(gossipsub::MessageAuthenticity::Signed(key.clone()), cfg)
                .unwrap()
        })
        .unwrap()
        .build()
}

/// Runs the rogue swarm until `peer` has subscribed to the card topic.
async fn join(swarm: &mut Swarm<gossipsub::Behaviour>, addr: Multiaddr, peer: PeerId) {
    swarm
        .behaviour_mut()
        .subscribe(&gossipsub::IdentTopic::new(AGENT_CARD_TOPIC))
        .unwrap();
    swarm.dial(addr).unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let ev = tokio::time::timeout_at(deadline, swarm.select_next_some())
            .await
            .expect("the node never subscribed to the card topic");
        if let SwarmEvent::Behaviour(gossipsub::Event::Subscribed { peer_id, .. }) = ev
            && peer_id == peer
        {
            return;
        }
    }
}

/// Publishes `bytes` and keeps the swarm running for a moment so the message goes out.
async fn publish(swarm: &mut Swarm<gossipsub::Behaviour>, bytes: Vec<u8>) {
    swarm
        .behaviour_mut()
        .publish(gossipsub::IdentTopic::new(AGENT_CARD_TOPIC), bytes)
        .unwrap();
    let until = tokio::time::Instant::now() + Duration::from_millis(300);
    while let Ok(_ev) = tokio::time::timeout_at(until, swarm.select_next_some()).await {}
}

fn card(wallet: &WalletKey, peer: &PeerId, at: OffsetDateTime) -> AgentCard {
    let mut c = AgentCard::local(
        "rogue",
        wallet.did().as_str(),
        peer.to_string(),
        vec![],
        vec!["search".into()],
        at,
    );
    c.sign(wallet).unwrap();
    c
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_forged_card_is_rejected_for_its_own_reason() {
    let t = tempfile::tempdir().unwrap();
    let (node, revocations, db) = start_node(t.path()).await;
    let status = node.status().await.unwrap();
    let addr: Multiaddr = format!("{}/p2p/{}", status.listen_addrs[0], status.peer_id)
        .parse()
        .unwrap();
    let mut r = rogue();
    let me = *r.local_peer_id();
    join(&mut r, addr, node.peer_id()).await;
    let now = OffsetDateTime::now_utc();

    // An honest card from the rogue host is accepted (baseline), signed → verified.
    let honest = WalletKey::generate().unwrap();
    publish(&mut r, card(&honest, &me, now).to_wire()).await;

    // Oversized: 64 KiB + 1.
    let mut big = card(&WalletKey::generate().unwrap(), &me, now).to_wire();
    big.resize(64 * 1024 + 1, b' ');
    publish(&mut r, big).await;

    // Forged origin: the card claims the node's own peer ID.
    publish(
        &mut r,
        card(&WalletKey::generate().unwrap(), &node.peer_id(), now).to_wire(),
    )
    .await;

    // From the future (a far-future timestamp would pin a forged card for ever).
    publish(
        &mut r,
        card(
            &WalletKey::generate().unwrap(),
            &me,
            now + Duration::from_secs(3600),
        )
        .to_wire(),
    )
    .await;

    // Stale: older than cardTtl (5 min).
    publish(
        &mut r,
        card(
            &WalletKey::generate().unwrap(),
            &me,
            now - Duration::from_secs(600),
        )
        .to_wire(),
    )
    .await;

    // Tampered after signing.
    let mut tampered = card(&WalletKey::generate().unwrap(), &me, now);
    tampered.name = "someone else".into();
    publish(&mut r, tampered.to_wire()).await;

    // A revoked DID.
    let revoked = WalletKey::generate().unwrap();
    revocations
        .revoke(revoked.did().as_str(), "test")
        .await
        .unwrap();
    publish(&mut r, card(&revoked, &me, now).to_wire()).await;

    // Credentials: expired, over the maximum age, from an untrusted issuer, re-dated by the
    // holder, and one valid. Only the valid one is kept; the card stays.
    let creds = WalletKey::generate().unwrap();
    let mut c = card(&creds, &me, now);
    let cred = |id: &str, issued: OffsetDateTime, expires: OffsetDateTime| {
        credential::issue(
            &issuer(),
            creds.did().as_str(),
            id,
            [1; 32],
            issued,
            expires,
        )
        .unwrap()
    };
    let mut redated = cred(
        "redated",
        now - Duration::from_secs(25 * 3600),
        now + Duration::from_secs(3600),
    );
    redated.issued_at += Duration::from_secs(24 * 3600);
    c.zk_credentials = vec![
        redated,
        credential::issue(
            &WalletKey::generate().unwrap(),
            creds.did().as_str(),
            "self-issued",
            [1; 32],
            now - Duration::from_secs(60),
            now + Duration::from_secs(3600),
        )
        .unwrap(),
        cred(
            "expired",
            now - Duration::from_secs(7200),
            now - Duration::from_secs(1),
        ),
        cred(
            "over-age",
            now - Duration::from_secs(25 * 3600),
            now + Duration::from_secs(3600),
        ),
        cred(
            "fresh",
            now - Duration::from_secs(60),
            now + Duration::from_secs(3600),
        ),
    ];
    c.sign(&creds).unwrap();
    publish(&mut r, c.to_wire()).await;

    let want = [
        "too_large",
        "origin_mismatch",
        "from_future",
        "stale",
        "bad_signature",
        "revoked",
    ];
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    let st = loop {
        let st = node.status().await.unwrap();
        if want
            .iter()
            .all(|k| st.cards_rejected.get(*k).copied().unwrap_or(0) >= 1)
            && st.known_cards >= 2
        {
            break st;
        }
        if tokio::time::Instant::now() > deadline {
            panic!("not every attack was counted: {st:?}");
        }
        publish(
            &mut r,
            card(&honest, &me, OffsetDateTime::now_utc()).to_wire(),
        )
        .await;
    };
    for k in want {
        assert_eq!(st.cards_rejected[k], 1, "{k}: {st:?}");
    }

    let cards = node.cards(None).await.unwrap();
    let dids: Vec<&str> = cards.iter().map(|c| c.card.did.as_str()).collect();
    assert!(dids.contains(&honest.did().as_str()), "{dids:?}");
    assert!(!dids.contains(&revoked.did().as_str()));
    let stored = cards
        .iter()
        .find(|c| c.card.did == creds.did().as_str())
        .expect("the card with credentials is accepted");
    assert!(stored.verified);
    let ids: Vec<&str> = stored
        .card
        .zk_credentials
        .iter()
        .map(|c| c.capability_id.as_str())
        .collect();
    assert_eq!(
        ids,
        ["fresh"],
        "expired, over-age, untrusted and re-dated credentials are removed"
    );
    let dropped = &node.status().await.unwrap().credentials_dropped;
    for (reason, n) in [
        ("expired", 1),
        ("stale", 1),
        ("untrusted_issuer", 1),
        ("bad_signature", 1),
    ] {
        assert_eq!(dropped.get(reason), Some(&n), "{reason}: {dropped:?}");
    }

    // Revoking a DID whose card is stored deletes the card.
    revocations
        .revoke(honest.did().as_str(), "test")
        .await
        .unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while node
        .cards(None)
        .await
        .unwrap()
        .iter()
        .any(|c| c.card.did == honest.did().as_str())
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "revoked card still stored"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    node.shutdown().await.unwrap();
    db.close().await;
}

/// Two lango nodes: A publishes its own issuer-signed credential on its card; B, which trusts
/// the issuer, stores A's card with the credential (§3.14.4 end to end over gossip).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_nodes_own_credential_reaches_a_peer_that_trusts_the_issuer() {
    let (ta, tb) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let wallet_a = WalletKey::generate().unwrap();
    let did_a = wallet_a.did().to_string();
    let now = OffsetDateTime::now_utc();
    let cred = credential::issue(
        &issuer(),
        &did_a,
        "code-review",
        [9; 32],
        now - Duration::from_secs(60),
        now + Duration::from_secs(3600),
    )
    .unwrap();
    let (a, _ra, db_a) = start_node_with(ta.path(), wallet_a, vec![cred.clone()]).await;
    let (b, _rb, db_b) = start_node(tb.path()).await;
    let st = a.status().await.unwrap();
    let addr: Multiaddr = format!("{}/p2p/{}", st.listen_addrs[0], st.peer_id)
        .parse()
        .unwrap();
    b.connect(addr).await.unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let stored = loop {
        if let Some(c) = b
            .cards(None)
            .await
            .unwrap()
            .into_iter()
            .find(|c| c.card.did == did_a)
        {
            break c;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "A's card never reached B"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(stored.verified);
    assert_eq!(stored.card.zk_credentials, [cred]);
    a.shutdown().await.unwrap();
    b.shutdown().await.unwrap();
    db_a.close().await;
    db_b.close().await;
}
