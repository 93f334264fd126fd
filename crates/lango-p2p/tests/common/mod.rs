//! Fixtures shared by this crate's integration tests.
#![allow(dead_code, clippy::unwrap_used, missing_docs)]

/// A fresh plaintext node database in `dir`, with this crate's tables.
pub async fn plain_db(dir: &std::path::Path) -> lango_store::Database {
    let db = lango_store::Database::open(
        &dir.join("lango.db"),
        lango_store::Keying::Plaintext,
        lango_store::OpenOptions {
            create: true,
            ..lango_store::OpenOptions::default()
        },
    )
    .await
    .unwrap();
    lango_p2p::migrate(&db).await.unwrap();
    db
}

use std::sync::Arc;

use lango_crypto::wallet::WalletKey;
use lango_p2p::{
    auth::{PeerAuth, PeerAuthOptions},
    config::{A2aConfig, GoDuration, P2pConfig},
    identity::KeyStorage,
    node::{self, NodeHandle, NodeOptions},
    pins::Pins,
    revocation::Revocations,
};
use lango_session::SessionStore;

/// A real libp2p node on 127.0.0.1 with a fresh wallet and its own database.
pub struct Peer {
    pub node: NodeHandle,
    pub wallet: Arc<WalletKey>,
    pub db: lango_store::Database,
    pub revocations: Revocations,
    _dir: tempfile::TempDir,
}

impl Peer {
    pub async fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let db = plain_db(dir.path()).await;
        let revocations = Revocations::load(db.pool().clone(), &[]).await.unwrap();
        let wallet = Arc::new(WalletKey::generate().unwrap());
        let node = node::start(NodeOptions {
            p2p: P2pConfig {
                listen_addrs: vec!["/ip4/127.0.0.1/tcp/0".into()],
                gossip_interval: GoDuration::secs(1),
                ..P2pConfig::default()
            },
            a2a: A2aConfig::default(),
            keypair: libp2p::identity::Keypair::generate_ed25519(),
            key_storage: KeyStorage::SecretsStore,
            wallet: Some(wallet.clone()),
            revocations: revocations.clone(),
            credentials: Vec::new(),
        })
        .await
        .unwrap();
        Self {
            node,
            wallet,
            db,
            revocations,
            _dir: dir,
        }
    }

    pub fn did(&self) -> String {
        self.wallet.did().as_str().to_owned()
    }

    /// Handshakes on this node with `config`, `sessions` and `pins`.
    pub async fn auth_with(
        &self,
        config: P2pConfig,
        sessions: SessionStore,
        pins: Pins,
    ) -> PeerAuth {
        PeerAuth::start(
            &self.node,
            PeerAuthOptions {
                config,
                wallet: self.wallet.clone(),
                sessions,
                revocations: self.revocations.clone(),
                reputation: None,
                pins,
                zk: None,
            },
        )
        .unwrap()
    }

    /// Handshakes on this node with `config`, a fresh session store and its stored pins.
    pub async fn auth(&self, config: P2pConfig) -> PeerAuth {
        let sessions = SessionStore::new(&config.session_config()).unwrap();
        let pins = Pins::load(self.db.pool().clone()).await.unwrap();
        self.auth_with(config, sessions, pins).await
    }

    pub async fn dial(&self, other: &Peer) {
        let status = other.node.status().await.unwrap();
        let addr = format!("{}/p2p/{}", status.listen_addrs[0], status.peer_id)
            .parse()
            .unwrap();
        assert_eq!(self.node.connect(addr).await.unwrap(), other.node.peer_id());
    }
}
