//! `lango-node serve`: unlock, join the network, serve the admin socket, stop on a signal.

use std::{process::ExitCode, sync::Arc};

use anyhow::{Context as _, Result, anyhow, bail};
use lango_p2p::{
    auth::{PeerAuth, PeerAuthOptions},
    identity::{self, KeyOrigin, KeyStorage},
    node::{self, NodeHandle, NodeOptions},
    pins::Pins,
    reputation::Reputation,
    revocation::Revocations,
};
use lango_secrets::UnlockOptions;
use lango_session::{InvalidationReason, SessionStore};
use serde_json::{Value, json};

use crate::{
    admin::{self, Request},
    commands::security::open_vault,
    config::NodeConfig,
    context::Context,
    output,
};

/// Runs the node until Ctrl-C or SIGTERM.
pub fn run(ctx: &Context) -> Result<ExitCode> {
    let loaded = ctx.load_config()?;
    let config = loaded.config;
    ctx.init_logging(&config.log.level, config.log.format);
    for w in &loaded.warnings {
        tracing::warn!(event = "config_warning", "{w}");
    }
    crate::hardening::apply();
    require_enabled(&config)?;
    let rt = tokio::runtime::Runtime::new().context("start the async runtime")?;
    rt.block_on(serve(ctx, config))
}

/// The `p2p.enabled` gate every P2P command shares.
pub fn require_enabled(config: &NodeConfig) -> Result<()> {
    if config.p2p.enabled {
        Ok(())
    } else {
        bail!("P2P networking is not enabled (set p2p.enabled = true)")
    }
}

/// What the admin socket serves: the running node and the stores it shares.
pub struct Services {
    node: NodeHandle,
    auth: PeerAuth,
    reputation: Reputation,
    revocations: Revocations,
    key_storage: KeyStorage,
    key_origin: KeyOrigin,
    /// The sandbox remote tool calls run in (the A2A handler's executor).
    sandbox: Sandbox,
    /// Serves `/lango/a2a/1.0.0` while the node runs.
    _a2a: lango_p2p::a2a::Server,
    /// Calls tools on other nodes.
    a2a_client: lango_p2p::a2a::Client,
    /// The firewall the A2A handler applies.
    firewall: Arc<lango_p2p::firewall::Firewall>,
    /// Runtime firewall rules, kept in the database.
    rule_store: lango_p2p::rules::RuleStore,
    /// Calls waiting for the owner under `approvalPolicy = "interactive"`.
    approvals: Option<Arc<lango_p2p::a2a::InteractiveApproval>>,
}

/// The executor selection made at start, kept for status and for the protocol handler.
pub struct Sandbox {
    config: lango_sandbox::SandboxConfig,
    registry: Arc<lango_sandbox::ToolRegistry>,
    selection: lango_sandbox::select::Selection,
}

impl Services {
    /// A peer ID, or the DID of a peer this node holds a session with.
    fn resolve_peer(&self, peer: &str) -> Result<libp2p::PeerId> {
        if peer.starts_with("did:") {
            // Only an authenticated session routes a DID (X-3, issue 17).
            return self.auth.peer_for_did(peer).map_err(|e| anyhow!("{e}"));
        }
        peer.parse()
            .map_err(|e| anyhow!("{peer:?} is neither a peer ID nor a DID: {e}"))
    }

    async fn connect(&self, addr: &str, no_handshake: bool) -> Result<Value> {
        let ma: libp2p::Multiaddr = addr.parse().map_err(|e| anyhow!("parse multiaddr: {e}"))?;
        if lango_p2p::peer_id_of_addr(&ma).is_none() {
            bail!("parse peer info: the address must end in /p2p/<peer-id>");
        }
        let peer = tokio::time::timeout(node::DIAL_TIMEOUT, self.node.connect(ma))
            .await
            .map_err(|_| anyhow!("connect: timed out after {:?}", node::DIAL_TIMEOUT))?
            .map_err(|e| anyhow!("connect: {e}"))?;
        if no_handshake {
            return Ok(json!({ "peerId": peer.to_string() }));
        }
        let session = self
            .auth
            .handshake(peer, None)
            .await
            .map_err(|e| anyhow!("handshake with {peer}: {e}"))?;
        Ok(json!({
            "peerId": peer.to_string(),
            "peerDid": session.peer_did,
            "protocol": session.protocol,
            "authenticated": session.authenticated,
            "channelBound": session.channel_bound,
            "expiresAt": serde_json::to_value(&session)?.get("expiresAt"),
        }))
    }

    async fn identity(&self) -> Result<Value> {
        let status = self.node.status().await?;
        Ok(json!({
            "peerId": status.peer_id,
            "did": status.did,
            "keyStorage": self.key_storage,
            "keyOrigin": self.key_origin,
            "listenAddrs": status.listen_addrs,
        }))
    }
}

/// A card as the CLI shows it: the card's own fields plus `verified`.
pub fn card_json(stored: &lango_p2p::card::StoredCard) -> Value {
    let mut v: Value = serde_json::from_slice(&stored.card.to_wire()).unwrap_or(Value::Null);
    if let Value::Object(m) = &mut v {
        m.insert("verified".into(), Value::Bool(stored.verified));
    }
    v
}

impl admin::Handler for Services {
    async fn handle(&self, req: Request) -> Result<Value> {
        match req {
            Request::Identity => self.identity().await,
            Request::Status => {
                let mut v = serde_json::to_value(self.node.status().await?)?;
                if let Value::Object(m) = &mut v {
                    m.insert("sessions".into(), json!(self.auth.sessions().list().len()));
                    m.insert("pinnedPeers".into(), json!(self.auth.pins().len()));
                    m.insert(
                        "handshakesInProgress".into(),
                        json!(self.auth.handshakes_in_progress()),
                    );
                }
                Ok(v)
            }
            Request::Peers => Ok(serde_json::to_value(self.node.peers().await?)?),
            Request::Connect { addr, no_handshake } => self.connect(&addr, no_handshake).await,
            Request::Disconnect { peer } => {
                let id: libp2p::PeerId = peer.parse().map_err(|e| anyhow!("parse peer ID: {e}"))?;
                let was = self.node.disconnect(id).await?;
                Ok(json!({ "peerId": id.to_string(), "wasConnected": was }))
            }
            Request::Discover { tag } => {
                let cards = self.node.cards(tag).await?;
                Ok(Value::Array(cards.iter().map(card_json).collect()))
            }
            Request::Reputation { did } => {
                let rec = self.reputation.details(&did).await?;
                Ok(match rec {
                    Some(r) => {
                        serde_json::to_value(crate::commands::p2p::ReputationView::from(&r))?
                    }
                    None => Value::Null,
                })
            }
            Request::Revoke { did, reason } => {
                let new = self.revocations.revoke(&did, &reason).await?;
                Ok(json!({ "did": did, "newlyRevoked": new }))
            }
            Request::Revocations => Ok(serde_json::to_value(self.revocations.list())?),
            Request::Sessions => Ok(serde_json::to_value(self.auth.sessions().list())?),
            Request::SessionRevoke { did, unpin } => {
                let sessions = self.auth.sessions();
                let had = sessions.invalidate(&did, InvalidationReason::ManualRevoke);
                let unpinned = if unpin {
                    self.auth.pins().unpin(&did).await?
                } else {
                    false
                };
                Ok(json!({ "peerDid": did, "revoked": had, "unpinned": unpinned }))
            }
            Request::SessionRevokeAll => {
                let n = self
                    .auth
                    .sessions()
                    .invalidate_all(InvalidationReason::ManualRevoke);
                Ok(json!({ "revoked": n }))
            }
            Request::SandboxStatus => {
                let s = &self.sandbox;
                Ok(crate::commands::sandbox::status_json(
                    &s.config,
                    &s.registry,
                    &s.selection,
                    "running node",
                )
                .await)
            }
            Request::Invoke { peer, tool, params } => {
                let peer = self.resolve_peer(&peer)?;
                let params = match params {
                    Value::Object(m) => m,
                    Value::Null => serde_json::Map::new(),
                    _ => bail!("params must be a JSON object"),
                };
                let out = self.a2a_client.invoke(peer, &tool, params).await?;
                Ok(json!({ "peerId": peer.to_base58(), "tool": tool, "result": out }))
            }
            Request::Tools { peer } => {
                let peer = self.resolve_peer(&peer)?;
                let tools = self.a2a_client.capabilities(peer).await?;
                Ok(json!({ "peerId": peer.to_base58(), "capabilities": tools }))
            }
            Request::Approvals => match &self.approvals {
                Some(a) => Ok(serde_json::to_value(a.pending())?),
                None => bail!("approvals are not interactive on this node (p2p.approvalPolicy)"),
            },
            Request::ApprovalDecide { id, approve } => match &self.approvals {
                Some(a) if a.decide(id, approve) => Ok(json!({ "id": id, "approved": approve })),
                Some(_) => bail!("no call {id} is waiting for approval (answered or timed out)"),
                None => bail!("approvals are not interactive on this node (p2p.approvalPolicy)"),
            },
            Request::FirewallList => Ok(serde_json::to_value(self.firewall.rules())?),
            Request::FirewallAdd { rule } => {
                lango_p2p::firewall::validate_rule(&rule).map_err(|e| anyhow!("{e}"))?;
                // The peer in canonical form (an invalid DID is refused), as stored.
                let rule = lango_p2p::rules::canonical_rule(&rule).map_err(|e| anyhow!("{e}"))?;
                // Stored first: a rule in effect that a restart would forget is worse than
                // none.
                self.rule_store.add(&rule).await?;
                self.firewall
                    .add_rule(rule.clone())
                    .map_err(|e| anyhow!("{e}"))?;
                Ok(json!({ "added": rule, "persisted": true }))
            }
            Request::FirewallRemove { peer_did } => {
                let stored = self.rule_store.remove(&peer_did).await?;
                let canonical = lango_p2p::rules::canonical_peer(&peer_did);
                let mut n = self.firewall.remove_rules(&peer_did);
                if let Ok(c) = canonical.as_deref()
                    && c != peer_did
                {
                    n += self.firewall.remove_rules(c);
                }
                Ok(json!({ "peerDid": peer_did, "removed": n, "removedStored": stored }))
            }
            Request::SandboxCleanup { force } => {
                crate::commands::sandbox::cleanup_on_node(&self.sandbox.selection, force).await
            }
        }
    }
}

/// SIGTERM and SIGINT handlers, installed before the node reports that it runs, so a signal
/// sent as soon as the `started` line appears stops it cleanly instead of killing it.
struct Signals {
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
}

impl Signals {
    fn install() -> Result<Self> {
        use tokio::signal::unix::{SignalKind, signal};
        Ok(Self {
            term: signal(SignalKind::terminate()).context("install the SIGTERM handler")?,
            int: signal(SignalKind::interrupt()).context("install the SIGINT handler")?,
        })
    }

    async fn wait(&mut self) -> &'static str {
        tokio::select! {
            _ = self.term.recv() => "SIGTERM",
            _ = self.int.recv() => "SIGINT",
        }
    }
}

async fn serve(ctx: &Context, config: NodeConfig) -> Result<ExitCode> {
    let p2p = config.p2p.clone();
    let vault = open_vault(
        ctx,
        &config,
        UnlockOptions {
            allow_create: true,
            ..UnlockOptions::default()
        },
    )
    .await?;
    let result = run_node(ctx, &config, &vault, p2p).await;
    vault.close().await;
    result
}

async fn run_node(
    ctx: &Context,
    config: &NodeConfig,
    vault: &lango_secrets::Vault,
    p2p: lango_p2p::config::P2pConfig,
) -> Result<ExitCode> {
    let mut signals = Signals::install()?;
    let db = vault.database()?;
    lango_p2p::migrate(db).await?;
    let pool = db.pool().clone();
    let revocations = Revocations::load(pool.clone(), &p2p.revoked_dids).await?;
    let reputation = Reputation::new(pool, p2p.min_trust_score);
    let store = vault.secrets()?;
    let key_dir = identity::key_dir(p2p.key_dir.as_deref(), &ctx.data_dir);
    let ident = identity::load_node_key(Some(&store), &key_dir).await?;
    let (wallet, wallet_created) = identity::load_or_create_wallet(&store).await?;
    let keypair = identity::libp2p_keypair(&ident.key)?;
    let wallet = Arc::new(wallet);
    let credentials = match p2p.zkp.credentials_file.as_str() {
        "" => Vec::new(),
        f => lango_p2p::credential::load_own(
            std::path::Path::new(&expand(f)),
            wallet.did().as_str(),
            time::OffsetDateTime::now_utc(),
        )?,
    };
    let p2p_config = p2p.clone();
    let node = node::start(NodeOptions {
        p2p,
        a2a: config.a2a.clone(),
        keypair,
        key_storage: ident.storage,
        wallet: Some(wallet.clone()),
        revocations: revocations.clone(),
        credentials,
    })
    .await?;
    let zk = match start_zk(&p2p_config, &store, &wallet, &ctx.data_dir).await {
        Ok(zk) => zk,
        Err(e) => {
            let _ = node.shutdown().await;
            return Err(e);
        }
    };
    let auth = match start_auth(
        &node,
        &p2p_config,
        &wallet,
        db,
        &revocations,
        &reputation,
        zk.ownership.clone(),
    )
    .await
    {
        Ok(a) => a,
        Err(e) => {
            let _ = node.shutdown().await;
            return Err(e);
        }
    };
    let server = match admin::Server::bind(&ctx.data_dir) {
        Ok(s) => s,
        Err(e) => {
            let _ = node.shutdown().await;
            return Err(e);
        }
    };
    let sandbox = match start_sandbox(ctx, config).await {
        Ok(s) => s,
        Err(e) => {
            let _ = node.shutdown().await;
            return Err(e);
        }
    };
    let status = node.status().await?;
    let did = wallet.did().to_string();
    if ctx.json {
        // One compact line: a long-running process prints JSON Lines.
        output::line(serde_json::to_string(&json!({
            "event": "started",
            "peerId": status.peer_id,
            "did": did,
            "keyStorage": ident.storage,
            "keyOrigin": ident.origin,
            "walletCreated": wallet_created,
            "listenAddrs": status.listen_addrs,
            "adminSocket": admin::socket_path(&ctx.data_dir),
        }))?);
    } else {
        output::line("lango node running");
        output::line(format!("  Peer ID:      {}", status.peer_id));
        output::line(format!("  DID:          {did}"));
        output::line(format!(
            "  Key Storage:  {} ({})",
            ident.storage.as_str(),
            origin_text(ident.origin)
        ));
        output::line("  Listen Addrs:");
        for a in &status.listen_addrs {
            output::line(format!("    {a}/p2p/{}", status.peer_id));
        }
        output::line(format!(
            "  Admin Socket: {}",
            admin::socket_path(&ctx.data_dir).display()
        ));
        output::line("Press Ctrl-C to stop.");
    }
    tracing::info!(event = "node_started", peer_id = %status.peer_id, did = %did, "node started");

    let rule_store = lango_p2p::rules::RuleStore::new(db.pool().clone());
    let stored_rules = match rule_store.load().await {
        Ok(r) => {
            if r.damaged > 0 {
                tracing::warn!(
                    damaged = r.damaged,
                    "stored firewall rules unreadable: allows skipped, denies kept for every tool"
                );
            }
            r.rules
        }
        Err(e) => {
            let _ = node.shutdown().await;
            return Err(e.into());
        }
    };
    // The vault's values as known secrets of the response filter (R-5.4 item 4).
    let filter =
        match lango_p2p::known_secrets::response_filter(&config.p2p.owner_protection, &store).await
        {
            Ok(f) => f,
            Err(e) => {
                let _ = node.shutdown().await;
                return Err(e.into());
            }
        };
    let approvals = (config.p2p.approval_policy
        == lango_p2p::config::ApprovalPolicyKind::Interactive)
        .then(|| Arc::new(lango_p2p::a2a::InteractiveApproval::new()));
    let (a2a_server, a2a_client, firewall) = match start_a2a(
        &node,
        &auth,
        config,
        &reputation,
        &revocations,
        &sandbox,
        &did,
        stored_rules,
        filter,
        approvals.clone(),
        &zk,
    ) {
        Ok(parts) => parts,
        Err(e) => {
            let _ = node.shutdown().await;
            return Err(e);
        }
    };
    // A DID the firewall names is established: its downgrade pin outlives newcomers.
    let fw = firewall.clone();
    auth.pins()
        .add_guard(Arc::new(move |did: &str| fw.names_peer(did)));
    let services = Arc::new(Services {
        node: node.clone(),
        auth,
        reputation: reputation.clone(),
        revocations,
        key_storage: ident.storage,
        key_origin: ident.origin,
        sandbox,
        _a2a: a2a_server,
        a2a_client,
        firewall,
        rule_store,
        approvals,
    });
    let admin_task = tokio::spawn(server.run(services.clone()));
    let mut drops = reputation.subscribe_drops();
    let drops_task = tokio::spawn(async move {
        while let Ok(d) = drops.recv().await {
            tracing::warn!(event = "reputation_drop", peer_did = %d.peer_did, score = d.score,
                threshold = d.threshold, "peer reputation fell below the trust threshold");
        }
    });

    let signal = signals.wait().await;
    tracing::info!(event = "node_stopping", signal, "stopping");
    admin_task.abort();
    drops_task.abort();
    let _ = admin_task.await;
    if let Some(rt) = &services.sandbox.selection.runtime {
        rt.shutdown().await;
    }
    if let Err(e) = node.shutdown().await {
        tracing::warn!(error = %e, "node did not stop cleanly");
    }
    if !ctx.json {
        output::note("Stopped.");
    }
    Ok(ExitCode::SUCCESS)
}

/// Chooses the sandbox executor with the startup orphan sweep, the warm pool and the
/// `sandbox_echo` self-test, and logs the outcome.
async fn start_sandbox(ctx: &Context, config: &NodeConfig) -> Result<Sandbox> {
    let (config, registry, selection) =
        crate::commands::sandbox::select_for(ctx, config, true, true).await?;
    for (runtime, why) in &selection.skipped {
        tracing::info!(event = "sandbox_runtime_skipped", runtime, reason = %why, "container runtime skipped");
    }
    match (&selection.executor, &selection.error) {
        (Some(_), None) => {
            tracing::info!(event = "sandbox_selected", isolation = %selection.effective, "{}", selection.log)
        }
        (Some(_), Some(_)) => {
            tracing::warn!(event = "sandbox_selected", isolation = %selection.effective, "{}", selection.log)
        }
        (None, _) if !config.enabled => {
            tracing::warn!(event = "sandbox_disabled", "{}", selection.log)
        }
        (None, _) => tracing::error!(event = "sandbox_unavailable", "{}", selection.log),
    }
    Ok(Sandbox {
        config,
        registry,
        selection,
    })
}

/// The A2A handler on the node: firewall, sanitizer and owner shield, approval policy,
/// the sandbox executor chosen at start, reputation and failure tracking.
// Composition: every argument is a separately started part of the node.
#[allow(clippy::too_many_arguments)]
fn start_a2a(
    node: &NodeHandle,
    auth: &PeerAuth,
    config: &NodeConfig,
    reputation: &Reputation,
    revocations: &Revocations,
    sandbox: &Sandbox,
    did: &str,
    stored_rules: Vec<lango_p2p::firewall::Rule>,
    filter: lango_p2p::sanitize::ResponseFilter,
    interactive: Option<Arc<lango_p2p::a2a::InteractiveApproval>>,
    zk: &Zk,
) -> Result<(
    lango_p2p::a2a::Server,
    lango_p2p::a2a::Client,
    Arc<lango_p2p::firewall::Firewall>,
)> {
    use lango_p2p::a2a::{Client, Handler, HandlerParts, Server};
    let p2p = &config.p2p;
    let firewall = Arc::new(
        lango_p2p::firewall::Firewall::new(p2p.firewall_config())
            .map_err(|e| anyhow!("firewall: {e}"))?,
    );
    // Rules added at runtime before the last restart, after the configured ones.
    for rule in stored_rules {
        if let Err(e) = firewall.add_rule(rule) {
            tracing::warn!(error = %e, "stored firewall rule not applied");
        }
    }
    let card = json!({
        "name": config.a2a.agent_name,
        "description": config.a2a.description,
        "did": did,
        "capabilities": config.a2a.capabilities,
    });
    let handler = Handler::new(HandlerParts {
        sessions: auth.sessions().clone(),
        events: auth.security_events().clone(),
        reputation: Some(reputation.clone()),
        firewall: firewall.clone(),
        filter: Arc::new(filter),
        registry: sandbox.registry.clone(),
        executor: sandbox.selection.serving_executor(),
        approval: Some(match interactive {
            Some(i) => i as Arc<dyn lango_p2p::a2a::ToolApproval>,
            None => Arc::new(p2p.approval_policy()),
        }),
        payment: None,
        revocations: Some(revocations.clone()),
        attester: zk
            .attester
            .clone()
            .map(|a| a as Arc<dyn lango_p2p::a2a::Attester>),
        card: Some(card),
        safety: {
            let (max, bypass) = p2p.safety_gate();
            (max, bypass.into_iter().collect())
        },
        limits: p2p.handler_limits(),
    });
    let server = Server::start(node, handler)?;
    let client = Client::new(
        node.clone(),
        auth.clone(),
        sandbox.config.timeout() + p2p.approval_timeout.0 + std::time::Duration::from_secs(10),
    );
    let client = match (&zk.service, p2p.zk_attestation) {
        (Some(service), true) => client.with_attestation(lango_p2p::a2a::AttestationPolicy {
            service: service.clone(),
            require: p2p.zkp.require_attestation,
            window: (
                p2p.zkp.attest_window_past_secs,
                p2p.zkp.attest_window_future_secs,
            ),
        }),
        _ => client,
    };
    Ok((server, client, firewall))
}

/// The zero-knowledge parts `p2p.zkHandshake` and `p2p.zkAttestation` turn on: one prover
/// service (parameters cached under `<data-dir>/zkp/`), the ZK identity from the vault
/// (created on first use), keys generated in the background.
#[derive(Default)]
struct Zk {
    service: Option<Arc<lango_zkp::ProverService>>,
    ownership: Option<Arc<lango_p2p::zk::ZkOwnership>>,
    attester: Option<Arc<lango_p2p::zk::ZkAttester>>,
}

async fn start_zk(
    p2p: &lango_p2p::config::P2pConfig,
    store: &lango_secrets::SecretsStore,
    wallet: &Arc<lango_crypto::wallet::WalletKey>,
    data_dir: &std::path::Path,
) -> Result<Zk> {
    if !p2p.zk_handshake && !p2p.zk_attestation {
        return Ok(Zk::default());
    }
    let sk = identity::load_or_create_zk_identity(store).await?;
    let z = &p2p.zkp;
    if z.proving_scheme != "halo2" {
        tracing::warn!(scheme = %z.proving_scheme,
            "p2p.zkp.provingScheme is a Go scheme; this node proves and verifies with halo2");
    }
    let source = match (z.srs_mode.as_str(), z.srs_path.is_empty()) {
        ("unsafe", _) => lango_zkp::params::ParamsSource::Memory,
        (_, false) => lango_zkp::params::ParamsSource::Pattern(expand(&z.srs_path)),
        (_, true) if z.proof_cache_dir.is_empty() => {
            lango_zkp::params::ParamsSource::Dir(data_dir.join("zkp"))
        }
        (_, true) => lango_zkp::params::ParamsSource::Dir(expand(&z.proof_cache_dir).into()),
    };
    let pool = match z.max_concurrent_proofs {
        0 => std::thread::available_parallelism().map_or(1, |n| (n.get() / 2).max(1)),
        n => n,
    };
    let service = Arc::new(
        lango_zkp::ProverService::with_pool(source, pool).max_proof_bytes(z.max_proof_bytes),
    );
    let zk_err = |e: String| anyhow::anyhow!("ZK identity: {e}");
    let ownership = match p2p.zk_handshake {
        true => Some(Arc::new(
            lango_p2p::zk::ZkOwnership::prover(service.clone(), sk.clone(), &**wallet)
                .await
                .map_err(zk_err)?,
        )),
        false => None,
    };
    let attester = match p2p.zk_attestation {
        true => Some(Arc::new(
            lango_p2p::zk::ZkAttester::new(service.clone(), sk, &**wallet)
                .await
                .map_err(zk_err)?
                .with_window(z.attest_window_past_secs, z.attest_window_future_secs),
        )),
        false => None,
    };
    // Keys in the background: start-up never waits for them.
    let (o, a) = (ownership.clone(), attester.clone());
    tokio::spawn(async move {
        if let Some(o) = o
            && let Err(e) = o.warm_up().await
        {
            tracing::warn!(error = %e, "ZK handshake keys could not be generated");
        }
        if let Some(a) = a
            && let Err(e) = a.warm_up().await
        {
            tracing::warn!(error = %e, "ZK attestation keys could not be generated");
        }
        tracing::info!(event = "zk_keys_ready", "zero-knowledge proving keys ready");
    });
    Ok(Zk {
        service: Some(service),
        ownership,
        attester,
    })
}

/// Sessions, pins and the handshake protocols on the started node.
async fn start_auth(
    node: &NodeHandle,
    p2p: &lango_p2p::config::P2pConfig,
    wallet: &Arc<lango_crypto::wallet::WalletKey>,
    db: &lango_store::Database,
    revocations: &Revocations,
    reputation: &Reputation,
    zk: Option<Arc<lango_p2p::zk::ZkOwnership>>,
) -> Result<PeerAuth> {
    let sessions = SessionStore::new(&p2p.session_config()).context("create the session store")?;
    let pins = Pins::load(db.pool().clone()).await?;
    Ok(PeerAuth::start(
        node,
        PeerAuthOptions {
            config: p2p.clone(),
            wallet: wallet.clone(),
            sessions,
            revocations: revocations.clone(),
            reputation: Some(reputation.clone()),
            pins,
            zk,
        },
    )?)
}

/// Words for where the node key came from this start.
pub fn origin_text(o: KeyOrigin) -> &'static str {
    match o {
        KeyOrigin::Stored => "loaded",
        KeyOrigin::Generated => "generated now",
        KeyOrigin::Migrated => "migrated from the legacy node.key, file deleted",
        KeyOrigin::MigratedFileKept => {
            "migrated from the legacy node.key; the file could not be removed"
        }
        KeyOrigin::MigrationPending => "read from the legacy node.key; migration will be retried",
        KeyOrigin::File => "read from the key file",
    }
}

/// `~/` at the start of a configured path is the home directory.
fn expand(p: &str) -> String {
    match (p.strip_prefix("~/"), std::env::home_dir()) {
        (Some(rest), Some(home)) => home.join(rest).to_string_lossy().into_owned(),
        _ => p.to_owned(),
    }
}
