//! The stream plumbing the handshake and A2A protocols use: two real nodes on 127.0.0.1,
//! one accepting a protocol, the other opening a stream to it and exchanging bytes.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::{sync::Arc, time::Duration};

use futures::{AsyncReadExt, AsyncWriteExt, StreamExt};
use lango_crypto::wallet::WalletKey;
use lango_p2p::{
    config::{A2aConfig, P2pConfig},
    identity::KeyStorage,
    node::{self, NodeHandle, NodeOptions},
    revocation::Revocations,
};
use libp2p::StreamProtocol;

async fn start(dir: &std::path::Path) -> (NodeHandle, lango_store::Database) {
    let db = common::plain_db(dir).await;
    let node = node::start(NodeOptions {
        p2p: P2pConfig {
            listen_addrs: vec![
                "/ip4/127.0.0.1/udp/0/quic-v1".into(),
                "/ip4/127.0.0.1/tcp/0".into(),
            ],
            ..P2pConfig::default()
        },
        a2a: A2aConfig::default(),
        keypair: libp2p::identity::Keypair::generate_ed25519(),
        key_storage: KeyStorage::SecretsStore,
        wallet: Some(Arc::new(WalletKey::generate().unwrap())),
        revocations: Revocations::load(db.pool().clone(), &[]).await.unwrap(),
        credentials: Vec::new(),
    })
    .await
    .unwrap();
    (node, db)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_protocol_stream_carries_bytes_both_ways_over_tcp_and_quic() {
    const ECHO: StreamProtocol = StreamProtocol::new("/lango/test-echo/1.0.0");
    let (ta, tb) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (a, dba) = start(ta.path()).await;
    let (b, dbb) = start(tb.path()).await;

    let mut incoming = b.streams().accept(ECHO).unwrap();
    let server = tokio::spawn(async move {
        while let Some((peer, mut s)) = incoming.next().await {
            let mut buf = Vec::new();
            (&mut s).take(1024).read_to_end(&mut buf).await.unwrap();
            buf.extend_from_slice(peer.to_string().as_bytes());
            s.write_all(&buf).await.unwrap();
            s.close().await.unwrap();
        }
    });

    let status = b.status().await.unwrap();
    for listen in &status.listen_addrs {
        let addr = format!("{listen}/p2p/{}", status.peer_id).parse().unwrap();
        assert_eq!(a.connect(addr).await.unwrap(), b.peer_id());
        let mut s = tokio::time::timeout(
            Duration::from_secs(10),
            a.streams().open_stream(b.peer_id(), ECHO),
        )
        .await
        .unwrap()
        .unwrap();
        s.write_all(b"ping:").await.unwrap();
        s.close().await.unwrap();
        let mut back = Vec::new();
        s.read_to_end(&mut back).await.unwrap();
        assert_eq!(
            back,
            format!("ping:{}", a.peer_id()).into_bytes(),
            "{listen}"
        );
        assert!(a.disconnect(b.peer_id()).await.unwrap());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // A protocol nobody accepts is refused, not hung.
    let addr = format!("{}/p2p/{}", status.listen_addrs[0], status.peer_id)
        .parse()
        .unwrap();
    a.connect(addr).await.unwrap();
    let r = tokio::time::timeout(
        Duration::from_secs(10),
        a.streams()
            .open_stream(b.peer_id(), StreamProtocol::new("/lango/nobody/1.0.0")),
    )
    .await
    .unwrap();
    assert!(r.is_err());

    server.abort();
    a.shutdown().await.unwrap();
    b.shutdown().await.unwrap();
    dba.close().await;
    dbb.close().await;
}
