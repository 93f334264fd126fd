//! The running node: a libp2p swarm and the task that drives it.
//!
//! ## On the wire
//! - Transports: TCP with noise (XX, Ed25519 node key) and yamux; QUIC v1 (TLS 1.3 with the
//!   same key). Every connection is authenticated to a peer ID before any protocol runs.
//! - `/ipfs/id/1.0.0` identify (protocol version `/lango/1.0.0`), `/ipfs/ping/1.0.0`,
//!   `/ipfs/kad/1.0.0` Kademlia in server mode for peer routing, and gossipsub 1.1 with strict
//!   signing: each message carries its author's peer ID and signature, and unsigned or
//!   mis-signed messages are dropped by the library before this code sees them.
//! - Raw streams for the protocols layered on top (the handshake, A2A): [`NodeHandle::streams`]
//!   opens a stream to a peer for a protocol ID or accepts the inbound streams of one.
//! - Agent cards travel on the topic `/lango/agentcard/1.0.0` ([`crate::card`]). A received
//!   card is validated before gossipsub forwards it: rejected cards are reported to gossipsub
//!   as invalid (the sender's score drops and the card goes no further), stale repeats are
//!   ignored.
//!
//! ## Pinning
//! Bootstrap addresses must end in `/p2p/<peer-id>`. The node dials them with that peer ID as
//! a condition, so a peer that authenticates with a different key is disconnected during the
//! security handshake; the refusal is logged (`event = "bootstrap_pin_mismatch"`) and counted
//! in [`Status::bootstrap_refused`].
//!
//! ## Control
//! [`start`] returns a [`NodeHandle`]; every query and action goes through it to the one task
//! that owns the swarm, each with a timeout.

use std::{
    collections::{BTreeMap, HashMap, HashSet},
    sync::Arc,
    time::Duration,
};

use futures::StreamExt;
use lango_crypto::wallet::{Did, WalletKey};
use libp2p::{
    Multiaddr, PeerId, Swarm, connection_limits, gossipsub, identify, kad, noise, ping,
    swarm::{ConnectionId, NetworkBehaviour, SwarmEvent, dial_opts::DialOpts},
    tcp, yamux,
};
use serde::Serialize;
use tokio::sync::{mpsc, oneshot};

use crate::{
    Error, Result,
    card::{AgentCard, CardPolicy, CardStore, StoredCard, ZkCredential},
    config::{A2aConfig, P2pConfig},
    credential::CredentialPolicy,
    identity::KeyStorage,
    revocation::Revocations,
};

/// Gossipsub topic of agent cards.
pub const AGENT_CARD_TOPIC: &str = "/lango/agentcard/1.0.0";
/// Identify protocol version announced by this node.
pub const IDENTIFY_PROTOCOL_VERSION: &str = "/lango/1.0.0";
/// How long a dial may take.
pub const DIAL_TIMEOUT: Duration = Duration::from_secs(15);
/// How long a control request waits for the node task.
const CONTROL_TIMEOUT: Duration = Duration::from_secs(20);
/// How often unconnected bootstrap peers are dialled again.
const BOOTSTRAP_RETRY: Duration = Duration::from_secs(10);
/// How often the Kademlia routing table is refreshed.
const KAD_REFRESH: Duration = Duration::from_secs(300);
/// Least time between two publications of the local card (new subscribers trigger one).
const MIN_REPUBLISH: Duration = Duration::from_secs(1);
/// Largest gossipsub message accepted (a card is at most 64 KiB; room for the envelope).
const MAX_GOSSIP_BYTES: usize = 64 * 1024 + 2048;

pub use crate::peer_id_of_addr;

#[derive(NetworkBehaviour)]
#[behaviour(to_swarm = "BehaviourEvent")]
struct Behaviour {
    limits: connection_limits::Behaviour,
    identify: identify::Behaviour,
    ping: ping::Behaviour,
    kad: kad::Behaviour<kad::store::MemoryStore>,
    gossipsub: gossipsub::Behaviour,
    streams: libp2p_stream::Behaviour,
}

#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
enum BehaviourEvent {
    Identify(identify::Event),
    Gossipsub(gossipsub::Event),
    /// Ping, Kademlia and stream events: the behaviours act on them themselves.
    Ignored,
}

impl From<std::convert::Infallible> for BehaviourEvent {
    fn from(e: std::convert::Infallible) -> Self {
        match e {}
    }
}
impl From<identify::Event> for BehaviourEvent {
    fn from(e: identify::Event) -> Self {
        Self::Identify(e)
    }
}
impl From<ping::Event> for BehaviourEvent {
    fn from(_: ping::Event) -> Self {
        Self::Ignored
    }
}
impl From<kad::Event> for BehaviourEvent {
    fn from(_: kad::Event) -> Self {
        Self::Ignored
    }
}
impl From<()> for BehaviourEvent {
    fn from((): ()) -> Self {
        Self::Ignored
    }
}
impl From<gossipsub::Event> for BehaviourEvent {
    fn from(e: gossipsub::Event) -> Self {
        Self::Gossipsub(e)
    }
}

/// Everything the node needs to start.
pub struct NodeOptions {
    /// The `p2p` section.
    pub p2p: P2pConfig,
    /// The `a2a` section (the local card).
    pub a2a: A2aConfig,
    /// The libp2p identity (from [`crate::identity::load_node_key`]).
    pub keypair: libp2p::identity::Keypair,
    /// Where that key is kept, for `p2p identity`.
    pub key_storage: KeyStorage,
    /// The wallet, which signs the local card. Without it no card is published.
    pub wallet: Option<Arc<WalletKey>>,
    /// Revoked DIDs.
    pub revocations: Revocations,
    /// This node's own issuer-signed capability credentials, published on its card.
    pub credentials: Vec<ZkCredential>,
}

/// A connected peer.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PeerInfo {
    /// Its peer ID.
    pub peer_id: String,
    /// Remote addresses of its connections, first connection first.
    pub addrs: Vec<String>,
}

/// A snapshot of the node.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Status {
    /// The node's peer ID.
    pub peer_id: String,
    /// The agent's DID, when a wallet is loaded.
    pub did: Option<String>,
    /// Where the node key is kept.
    pub key_storage: KeyStorage,
    /// Addresses the node listens on.
    pub listen_addrs: Vec<String>,
    /// Peers with at least one connection.
    pub connected_peers: usize,
    /// `p2p.maxPeers`.
    pub max_peers: u32,
    /// Whether mDNS runs (never in this build).
    pub mdns: bool,
    /// Whether the relay runs (never in this build).
    pub relay: bool,
    /// `p2p.zkHandshake`, shown only: no handshake carries or accepts a ZK proof (Z-4).
    pub zk_handshake: bool,
    /// Agent cards currently known.
    pub known_cards: usize,
    /// Cards accepted since start.
    pub cards_accepted: u64,
    /// Cards rejected since start, by reason.
    pub cards_rejected: BTreeMap<String, u64>,
    /// Credentials removed from received cards since start, by reason.
    pub credentials_dropped: BTreeMap<String, u64>,
    /// Bootstrap connections refused because the peer ID did not match the pin.
    pub bootstrap_refused: u64,
    /// Peers in the Kademlia routing table.
    pub routing_table_peers: usize,
    /// Seconds since the node started.
    pub uptime_secs: u64,
}

enum Command {
    Status(oneshot::Sender<Status>),
    Peers(oneshot::Sender<Vec<PeerInfo>>),
    Dial(Multiaddr, oneshot::Sender<Result<PeerId>>),
    Disconnect(PeerId, oneshot::Sender<bool>),
    Cards(Option<String>, oneshot::Sender<Vec<StoredCard>>),
    Shutdown(oneshot::Sender<()>),
}

/// A handle on the running node. Cheap to clone; the node stops when [`NodeHandle::shutdown`]
/// is called or every handle is dropped.
#[derive(Clone)]
pub struct NodeHandle {
    tx: mpsc::Sender<Command>,
    peer_id: PeerId,
    did: Option<Did>,
    revocations: Revocations,
    streams: libp2p_stream::Control,
}

impl std::fmt::Debug for NodeHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeHandle")
            .field("peer_id", &self.peer_id)
            .finish()
    }
}

impl NodeHandle {
    /// The node's peer ID.
    pub fn peer_id(&self) -> PeerId {
        self.peer_id
    }

    /// The agent's DID, when a wallet is loaded.
    pub fn did(&self) -> Option<&Did> {
        self.did.as_ref()
    }

    /// Opens and accepts raw streams on this node's connections, one protocol ID each. The
    /// handshake and A2A protocols run over these; a protocol accepted here is announced to
    /// peers through identify.
    pub fn streams(&self) -> libp2p_stream::Control {
        self.streams.clone()
    }

    /// The revocation list the node enforces.
    pub fn revocations(&self) -> &Revocations {
        &self.revocations
    }

    async fn ask<T>(&self, make: impl FnOnce(oneshot::Sender<T>) -> Command) -> Result<T> {
        let (tx, rx) = oneshot::channel();
        self.tx
            .send(make(tx))
            .await
            .map_err(|_| Error::NodeStopped)?;
        match tokio::time::timeout(CONTROL_TIMEOUT, rx).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(_)) => Err(Error::NodeStopped),
            Err(_) => Err(Error::Timeout("node control request".into())),
        }
    }

    /// A snapshot of the node's state.
    pub async fn status(&self) -> Result<Status> {
        self.ask(Command::Status).await
    }

    /// Connected peers, sorted by peer ID.
    pub async fn peers(&self) -> Result<Vec<PeerInfo>> {
        self.ask(Command::Peers).await
    }

    /// Dials `addr`, which must end in `/p2p/<peer-id>`, and waits until the connection is
    /// established and authenticated as that peer (at most [`DIAL_TIMEOUT`]).
    pub async fn connect(&self, addr: Multiaddr) -> Result<PeerId> {
        self.ask(|tx| Command::Dial(addr, tx)).await?
    }

    /// Closes every connection to `peer`; `false` if there was none.
    pub async fn disconnect(&self, peer: PeerId) -> Result<bool> {
        self.ask(|tx| Command::Disconnect(peer, tx)).await
    }

    /// Known agent cards, optionally only those announcing `capability`.
    pub async fn cards(&self, capability: Option<String>) -> Result<Vec<StoredCard>> {
        self.ask(|tx| Command::Cards(capability, tx)).await
    }

    /// Stops the node and waits for its task to finish.
    pub async fn shutdown(&self) -> Result<()> {
        self.ask(Command::Shutdown).await
    }
}

fn net_err(what: &str, e: impl std::fmt::Display) -> Error {
    Error::Network(format!("{what}: {e}"))
}

fn build_swarm(opts: &NodeOptions) -> Result<Swarm<Behaviour>> {
    let max_peers = opts.p2p.max_peers;
    let swarm = libp2p::SwarmBuilder::with_existing_identity(opts.keypair.clone())
        .with_tokio()
        .with_tcp(
            tcp::Config::default().nodelay(true),
            noise::Config::new,
            yamux::Config::default,
        )
        .map_err(|e| net_err("TCP transport", e))?
        .with_quic()
        .with_behaviour(|key| {
            let peer_id = key.public().to_peer_id();
            let limits = connection_limits::ConnectionLimits::default()
                .with_max_established(Some(max_peers))
                .with_max_established_per_peer(Some(4))
                .with_max_pending_incoming(Some(64))
                .with_max_pending_outgoing(Some(64));
            let identify = identify::Behaviour::new(
                identify::Config::new(IDENTIFY_PROTOCOL_VERSION.into(), key.public())
                    .with_agent_version(format!("lango-rs/{}", env!("CARGO_PKG_VERSION"))),
            );
            let mut kad_config = kad::Config::new(kad::PROTOCOL_NAME);
            kad_config.set_query_timeout(Duration::from_secs(30));
            // Bootstrapping is driven by the node (on connecting to a bootstrap peer and
            // every KAD_REFRESH), so an isolated node does not warn every few seconds.
            kad_config.set_periodic_bootstrap_interval(None);
            let mut kad = kad::Behaviour::with_config(
                peer_id,
                kad::store::MemoryStore::new(peer_id),
                kad_config,
            );
            kad.set_mode(Some(kad::Mode::Server));
            let gossip_config = gossipsub::ConfigBuilder::default()
                .validation_mode(gossipsub::ValidationMode::Strict)
                .validate_messages()
                .max_transmit_size(MAX_GOSSIP_BYTES)
                .heartbeat_interval(Duration::from_secs(1))
                .build()
                .map_err(|e| Box::new(std::io::Error::other(e.to_string())))?;
            let gossipsub = gossipsub::Behaviour::new(
                gossipsub::MessageAuthenticity::Signed(key.clone()),
                gossip_config,
            )
            .map_err(|e| Box::new(std::io::Error::other(e.to_owned())))?;
            Ok(Behaviour {
                limits: connection_limits::Behaviour::new(limits),
                identify,
                ping: ping::Behaviour::new(ping::Config::new()),
                kad,
                gossipsub,
                streams: libp2p_stream::Behaviour::new(),
            })
        })
        .map_err(|e| net_err("behaviour", e))?
        .with_swarm_config(|c| c.with_idle_connection_timeout(Duration::from_secs(120)))
        .build();
    Ok(swarm)
}

/// Builds the swarm, starts listening, dials the bootstrap peers and runs the node in a task.
/// Fails if any listen address cannot be bound.
pub async fn start(opts: NodeOptions) -> Result<NodeHandle> {
    let mut swarm = build_swarm(&opts)?;
    let topic = gossipsub::IdentTopic::new(AGENT_CARD_TOPIC);
    swarm
        .behaviour_mut()
        .gossipsub
        .subscribe(&topic)
        .map_err(|e| net_err("subscribe to agent cards", e))?;

    let mut listen_ids = Vec::new();
    for a in &opts.p2p.listen_addrs {
        let addr: Multiaddr = a
            .parse()
            .map_err(|e| net_err(&format!("listen address {a}"), e))?;
        let id = swarm
            .listen_on(addr)
            .map_err(|e| net_err(&format!("listen on {a}"), e))?;
        listen_ids.push((id, a.clone()));
    }
    // Wait until every listener reports an address or fails: a node that says it is up must be.
    let mut listen_addrs = Vec::new();
    let mut pending: HashSet<_> = listen_ids.iter().map(|(id, _)| *id).collect();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !pending.is_empty() {
        let event = tokio::time::timeout_at(deadline, swarm.select_next_some())
            .await
            .map_err(|_| Error::Timeout("listening".into()))?;
        match event {
            SwarmEvent::NewListenAddr {
                listener_id,
                address,
            } => {
                pending.remove(&listener_id);
                listen_addrs.push(address);
            }
            SwarmEvent::ListenerClosed {
                listener_id,
                reason: Err(e),
                ..
            }
            | SwarmEvent::ListenerError {
                listener_id,
                error: e,
            } => {
                let which = listen_ids
                    .iter()
                    .find(|(id, _)| *id == listener_id)
                    .map_or("?", |(_, a)| a.as_str());
                return Err(net_err(&format!("listen on {which}"), e));
            }
            _ => {}
        }
    }

    let peer_id = *swarm.local_peer_id();
    let streams = swarm.behaviour().streams.new_control();
    let did = opts.wallet.as_ref().map(|w| w.did());
    let policy = CardPolicy {
        card_ttl: opts.p2p.discovery.card_ttl.0,
        credentials: CredentialPolicy {
            trusted_issuers: opts.p2p.zkp.trusted_issuers.iter().cloned().collect(),
            max_age: opts.p2p.zkp.max_credential_age.0,
            ..CredentialPolicy::default()
        },
        require_signed: opts.p2p.discovery.require_signed_cards,
        max_known_peers: opts.p2p.discovery.max_known_peers as usize,
        ..CardPolicy::default()
    };
    let mut bootstrap = HashMap::new();
    for b in &opts.p2p.bootstrap_peers {
        let addr: Multiaddr = b
            .parse()
            .map_err(|e| net_err(&format!("bootstrap peer {b}"), e))?;
        let Some(id) = peer_id_of_addr(&addr) else {
            return Err(Error::Config {
                key: "p2p.bootstrapPeers".into(),
                message: format!("{b} must end in /p2p/<peer-id>"),
            });
        };
        if id == peer_id {
            continue;
        }
        bootstrap.insert(id, addr);
    }
    let (tx, rx) = mpsc::channel(64);
    let revocations = opts.revocations.clone();
    let mut task = NodeTask {
        swarm,
        topic,
        started: std::time::Instant::now(),
        cards: CardStore::new(policy),
        credentials: opts.credentials.clone(),
        revocations: opts.revocations.clone(),
        wallet: opts.wallet.clone(),
        a2a: opts.a2a.clone(),
        max_peers: opts.p2p.max_peers,
        zk_handshake: opts.p2p.zk_handshake,
        key_storage: opts.key_storage,
        gossip_interval: opts.p2p.effective_gossip_interval(),
        listen_addrs,
        bootstrap,
        dials: HashMap::new(),
        connections: HashMap::new(),
        bootstrap_refused: 0,
        bootstrap_backoff: HashMap::new(),
        last_publish: None,
    };
    if opts.p2p.enable_mdns {
        tracing::warn!("p2p.enableMdns is set, but this node has no mDNS support; ignored");
    }
    if opts.p2p.enable_relay {
        tracing::warn!("p2p.enableRelay is set, but this node has no relay support; ignored");
    }
    task.dial_bootstrap();
    let revoked_rx = opts.revocations.subscribe();
    tokio::spawn(task.run(rx, revoked_rx));
    Ok(NodeHandle {
        tx,
        peer_id,
        did,
        revocations,
        streams,
    })
}

struct NodeTask {
    swarm: Swarm<Behaviour>,
    topic: gossipsub::IdentTopic,
    started: std::time::Instant,
    cards: CardStore,
    credentials: Vec<ZkCredential>,
    revocations: Revocations,
    wallet: Option<Arc<WalletKey>>,
    a2a: A2aConfig,
    max_peers: u32,
    zk_handshake: bool,
    key_storage: KeyStorage,
    gossip_interval: Duration,
    listen_addrs: Vec<Multiaddr>,
    bootstrap: HashMap<PeerId, Multiaddr>,
    dials: HashMap<ConnectionId, (PeerId, oneshot::Sender<Result<PeerId>>)>,
    /// Open connections per peer, oldest first, with their remote address.
    connections: HashMap<PeerId, Vec<(ConnectionId, Multiaddr)>>,
    bootstrap_refused: u64,
    /// Failed attempts and the next allowed dial, per bootstrap peer.
    bootstrap_backoff: HashMap<PeerId, (u32, std::time::Instant)>,
    last_publish: Option<std::time::Instant>,
}

impl NodeTask {
    async fn run(
        mut self,
        mut rx: mpsc::Receiver<Command>,
        mut revoked: tokio::sync::broadcast::Receiver<String>,
    ) {
        let mut gossip = tokio::time::interval(self.gossip_interval);
        let mut retry = tokio::time::interval(BOOTSTRAP_RETRY);
        retry.tick().await;
        let mut kad_refresh = tokio::time::interval(KAD_REFRESH);
        kad_refresh.tick().await;
        loop {
            tokio::select! {
                event = self.swarm.select_next_some() => self.on_swarm_event(event),
                cmd = rx.recv() => match cmd {
                    Some(Command::Shutdown(done)) => {
                        tracing::info!(event = "node_stopping", "stopping the P2P node");
                        let _ = done.send(());
                        break;
                    }
                    Some(cmd) => self.on_command(cmd),
                    None => break,
                },
                _ = gossip.tick() => {
                    self.publish_card();
                    let expired = self.cards.expire(time::OffsetDateTime::now_utc());
                    if expired > 0 {
                        tracing::debug!(expired, "expired agent cards");
                    }
                }
                _ = retry.tick() => self.dial_bootstrap(),
                _ = kad_refresh.tick() => self.kad_bootstrap(),
                r = revoked.recv() => match r {
                    Ok(did) => {
                        if self.cards.remove(&did) {
                            tracing::info!(event = "card_removed_revoked", did = %did, "removed the card of a revoked DID");
                        }
                    }
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {
                        let before = self.cards.len();
                        let revocations = self.revocations.clone();
                        for c in self.cards.list(None).into_iter().map(|c| c.card.did.clone()).collect::<Vec<_>>() {
                            if revocations.is_revoked(&c) {
                                self.cards.remove(&c);
                            }
                        }
                        tracing::debug!(removed = before - self.cards.len(), "re-checked cards after missed revocations");
                    }
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => {
                        revoked = self.revocations.subscribe();
                    }
                },
            }
        }
    }

    /// Dials the bootstrap peers that are not connected and are due: after each failed
    /// attempt the wait doubles, from [`BOOTSTRAP_RETRY`] up to [`KAD_REFRESH`].
    fn dial_bootstrap(&mut self) {
        let now = std::time::Instant::now();
        let targets: Vec<(PeerId, Multiaddr)> = self
            .bootstrap
            .iter()
            .filter(|(id, _)| !self.swarm.is_connected(id))
            .filter(|(id, _)| {
                self.bootstrap_backoff
                    .get(id)
                    .is_none_or(|(_, at)| *at <= now)
            })
            .map(|(id, a)| (*id, a.clone()))
            .collect();
        for (id, addr) in targets {
            let entry = self.bootstrap_backoff.entry(id).or_insert((0, now));
            entry.0 = entry.0.saturating_add(1);
            let wait = BOOTSTRAP_RETRY
                .saturating_mul(1 << entry.0.saturating_sub(1).min(5))
                .min(KAD_REFRESH);
            entry.1 = now + wait;
            self.swarm
                .behaviour_mut()
                .kad
                .add_address(&id, addr.clone());
            let opts = DialOpts::peer_id(id).addresses(vec![addr.clone()]).build();
            if let Err(e) = self.swarm.dial(opts) {
                tracing::debug!(peer = %id, error = %e, "bootstrap dial not started");
            }
        }
    }

    /// Refreshes the Kademlia routing table; a no-op while it is empty.
    fn kad_bootstrap(&mut self) {
        if let Err(e) = self.swarm.behaviour_mut().kad.bootstrap() {
            tracing::debug!(error = %e, "kademlia bootstrap not started");
        }
    }

    fn local_card(&self) -> Option<AgentCard> {
        let wallet = self.wallet.as_ref()?;
        let mut card = AgentCard::local(
            &self.a2a.agent_name,
            wallet.did().as_str(),
            self.swarm.local_peer_id().to_string(),
            self.listen_addrs.iter().map(|a| a.to_string()).collect(),
            self.a2a.capabilities.clone(),
            time::OffsetDateTime::now_utc(),
        );
        card.description = self.a2a.description.clone();
        card.zk_credentials = self.credentials.clone();
        if let Err(e) = card.sign(wallet) {
            tracing::warn!(error = %e, "could not sign the agent card; not publishing it");
            return None;
        }
        Some(card)
    }

    fn publish_card(&mut self) {
        let Some(card) = self.local_card() else {
            return;
        };
        self.last_publish = Some(std::time::Instant::now());
        let topic = self.topic.clone();
        match self
            .swarm
            .behaviour_mut()
            .gossipsub
            .publish(topic, card.to_wire())
        {
            Ok(_) => tracing::trace!("published the agent card"),
            Err(gossipsub::PublishError::NoPeersSubscribedToTopic) => {
                tracing::trace!("no peer subscribed to agent cards yet")
            }
            Err(e) => tracing::debug!(error = %e, "agent card not published"),
        }
    }

    fn on_command(&mut self, cmd: Command) {
        match cmd {
            Command::Status(reply) => {
                let mut cards_rejected = BTreeMap::new();
                for (k, v) in self.cards.rejections() {
                    cards_rejected.insert(k.to_owned(), v);
                }
                let routing_table_peers = self
                    .swarm
                    .behaviour_mut()
                    .kad
                    .kbuckets()
                    .map(|b| b.num_entries())
                    .sum();
                let _ = reply.send(Status {
                    peer_id: self.swarm.local_peer_id().to_string(),
                    did: self.wallet.as_ref().map(|w| w.did().to_string()),
                    key_storage: self.key_storage,
                    listen_addrs: self.listen_addrs.iter().map(|a| a.to_string()).collect(),
                    connected_peers: self.swarm.connected_peers().count(),
                    max_peers: self.max_peers,
                    mdns: false,
                    relay: false,
                    zk_handshake: self.zk_handshake,
                    known_cards: self.cards.len(),
                    cards_accepted: self.cards.accepted_total(),
                    cards_rejected,
                    credentials_dropped: self
                        .cards
                        .credentials_dropped()
                        .into_iter()
                        .map(|(k, v)| (k.to_owned(), v))
                        .collect(),
                    bootstrap_refused: self.bootstrap_refused,
                    routing_table_peers,
                    uptime_secs: self.started.elapsed().as_secs(),
                });
            }
            Command::Peers(reply) => {
                let mut peers: Vec<PeerInfo> = self
                    .swarm
                    .connected_peers()
                    .map(|p| PeerInfo {
                        peer_id: p.to_string(),
                        addrs: Vec::new(),
                    })
                    .collect();
                peers.sort_by(|a, b| a.peer_id.cmp(&b.peer_id));
                let _ = reply.send(self.fill_addrs(peers));
            }
            Command::Dial(addr, reply) => {
                let Some(peer) = peer_id_of_addr(&addr) else {
                    let _ = reply.send(Err(Error::Config {
                        key: "multiaddr".into(),
                        message: format!("{addr} must end in /p2p/<peer-id>"),
                    }));
                    return;
                };
                if peer == *self.swarm.local_peer_id() {
                    let _ = reply.send(Err(net_err(
                        &format!("connect to {peer}"),
                        "that is this node",
                    )));
                    return;
                }
                if self.swarm.is_connected(&peer) {
                    let _ = reply.send(Ok(peer));
                    return;
                }
                // `Disconnected`, not the default `DisconnectedAndNotDialing`: the node may be
                // redialing this peer on its own (a known peer that restarted), and the
                // operator's connect must not fail because of that.
                let opts = DialOpts::peer_id(peer)
                    .condition(libp2p::swarm::dial_opts::PeerCondition::Disconnected)
                    .addresses(vec![addr])
                    .build();
                let id = opts.connection_id();
                match self.swarm.dial(opts) {
                    Ok(()) => {
                        self.dials.insert(id, (peer, reply));
                    }
                    Err(e) => {
                        let _ = reply.send(Err(net_err(&format!("connect to {peer}"), e)));
                    }
                }
            }
            Command::Disconnect(peer, reply) => {
                let _ = reply.send(self.swarm.disconnect_peer_id(peer).is_ok());
            }
            Command::Cards(capability, reply) => {
                let now = time::OffsetDateTime::now_utc();
                self.cards.expire(now);
                let cards = self
                    .cards
                    .list(capability.as_deref())
                    .into_iter()
                    .cloned()
                    .collect();
                let _ = reply.send(cards);
            }
            Command::Shutdown(_) => {}
        }
    }

    /// Fills each peer's remote addresses from the tracked connections.
    fn fill_addrs(&self, mut peers: Vec<PeerInfo>) -> Vec<PeerInfo> {
        for p in &mut peers {
            if let Ok(id) = p.peer_id.parse::<PeerId>()
                && let Some(conns) = self.connections.get(&id)
            {
                p.addrs = conns.iter().map(|(_, a)| a.to_string()).collect();
            }
        }
        peers
    }

    fn on_swarm_event(&mut self, event: SwarmEvent<BehaviourEvent>) {
        match event {
            SwarmEvent::NewListenAddr { address, .. } if !self.listen_addrs.contains(&address) => {
                tracing::info!(event = "listening", address = %address, "listening");
                self.listen_addrs.push(address);
            }
            SwarmEvent::ExpiredListenAddr { address, .. } => {
                self.listen_addrs.retain(|a| a != &address);
            }
            SwarmEvent::ConnectionEstablished {
                peer_id,
                connection_id,
                endpoint,
                ..
            } => {
                tracing::debug!(event = "peer_connected", peer = %peer_id,
                    address = %endpoint.get_remote_address(), "connection established");
                self.connections
                    .entry(peer_id)
                    .or_default()
                    .push((connection_id, endpoint.get_remote_address().clone()));
                if self.bootstrap.contains_key(&peer_id) {
                    self.bootstrap_backoff.remove(&peer_id);
                    self.kad_bootstrap();
                }
                if let Some((expected, reply)) = self.dials.remove(&connection_id) {
                    let _ = reply.send(if expected == peer_id {
                        Ok(peer_id)
                    } else {
                        Err(net_err(
                            &format!("connect to {expected}"),
                            format!("peer authenticated as {peer_id}"),
                        ))
                    });
                }
            }
            SwarmEvent::ConnectionClosed {
                peer_id,
                connection_id,
                cause,
                ..
            } => {
                if let Some(conns) = self.connections.get_mut(&peer_id) {
                    conns.retain(|(id, _)| *id != connection_id);
                    if conns.is_empty() {
                        self.connections.remove(&peer_id);
                    }
                }
                tracing::debug!(event = "peer_disconnected", peer = %peer_id,
                    cause = ?cause.map(|c| c.to_string()), "connection closed");
            }
            SwarmEvent::OutgoingConnectionError {
                connection_id,
                peer_id,
                error,
            } => {
                if let libp2p::swarm::DialError::WrongPeerId { obtained, address } = &error
                    && let Some(expected) = peer_id
                {
                    if self.bootstrap.contains_key(&expected) {
                        self.bootstrap_refused += 1;
                    }
                    tracing::warn!(event = "bootstrap_pin_mismatch", expected = %expected,
                        obtained = %obtained, address = %address,
                        "refused a connection: the peer authenticated with a different peer ID than pinned");
                }
                if let Some((expected, reply)) = self.dials.remove(&connection_id) {
                    let _ = reply.send(Err(net_err(&format!("connect to {expected}"), &error)));
                } else {
                    tracing::debug!(peer = ?peer_id, error = %error, "dial failed");
                }
            }
            SwarmEvent::Behaviour(BehaviourEvent::Identify(identify::Event::Received {
                peer_id,
                info,
                ..
            })) if info.protocols.contains(&kad::PROTOCOL_NAME) => {
                // Only a peer that speaks Kademlia goes into the routing table.
                for a in info.listen_addrs.into_iter().take(32) {
                    self.swarm.behaviour_mut().kad.add_address(&peer_id, a);
                }
            }
            SwarmEvent::Behaviour(BehaviourEvent::Gossipsub(gossipsub::Event::Subscribed {
                topic,
                ..
            })) if topic == self.topic.hash()
                && self
                    .last_publish
                    .is_none_or(|t| t.elapsed() >= MIN_REPUBLISH) =>
            {
                // A newcomer gets our card now rather than at the next interval.
                self.publish_card();
            }
            SwarmEvent::Behaviour(BehaviourEvent::Gossipsub(gossipsub::Event::Message {
                propagation_source,
                message_id,
                message,
            })) => self.on_card(propagation_source, message_id, message),
            _ => {}
        }
    }

    fn on_card(&mut self, from: PeerId, id: gossipsub::MessageId, message: gossipsub::Message) {
        use gossipsub::MessageAcceptance;
        let local = *self.swarm.local_peer_id();
        let acceptance = match message.source {
            Some(origin) if origin == local => MessageAcceptance::Ignore,
            None => MessageAcceptance::Reject,
            Some(origin) => {
                let now = time::OffsetDateTime::now_utc();
                let revocations = self.revocations.clone();
                let is_revoked = move |did: &str| revocations.is_revoked(did);
                match self
                    .cards
                    .accept(&message.data, &origin.to_string(), now, &is_revoked)
                {
                    Ok(stored) => {
                        tracing::debug!(event = "card_accepted", did = %stored.card.did,
                            peer = %origin, verified = stored.verified, "agent card accepted");
                        MessageAcceptance::Accept
                    }
                    Err(reason) => {
                        let level_warn = !matches!(reason, crate::card::Rejection::NotNewer);
                        if level_warn {
                            tracing::warn!(event = "card_rejected", reason = reason.as_str(),
                                origin = %origin, via = %from, "rejected an agent card: {reason}");
                            MessageAcceptance::Reject
                        } else {
                            MessageAcceptance::Ignore
                        }
                    }
                }
            }
        };
        self.swarm
            .behaviour_mut()
            .gossipsub
            .report_message_validation_result(&id, &from, acceptance);
    }
}
