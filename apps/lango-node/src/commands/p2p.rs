//! `lango-node p2p …`: the operator's view of the node on the network (handshake spec §5,
//! protocol spec §5.7–5.8). Live state comes from the running node through the admin socket;
//! identity, reputation and revocations are read from the vault when no node runs.

use std::{io::Read as _, process::ExitCode};

use anyhow::{Context as _, Result};
use lango_p2p::{
    identity,
    reputation::{Record, Reputation},
    revocation::Revocations,
};
use lango_secrets::{UnlockOptions, Vault};
use serde_json::{Value, json};

use crate::{
    admin::{self, Request},
    cli::{P2pCommand, SessionCommand},
    commands::{security::open_vault, serve::require_enabled},
    config::NodeConfig,
    context::Context,
    output,
};

pub fn run(ctx: &Context, cmd: P2pCommand) -> Result<ExitCode> {
    let config = ctx.load_config()?.config;
    crate::hardening::apply();
    // Reputation reads the local database and the sandbox is local: both work with
    // networking off (§5.1, §5.7).
    if !matches!(cmd, P2pCommand::Reputation { .. } | P2pCommand::Sandbox(_)) {
        require_enabled(&config)?;
    }
    let rt = tokio::runtime::Runtime::new().context("start the async runtime")?;
    rt.block_on(async move {
        match cmd {
            P2pCommand::Identity => identity_cmd(ctx, &config).await,
            P2pCommand::Status => status(ctx).await,
            P2pCommand::Peers => peers(ctx).await,
            P2pCommand::Connect {
                multiaddr,
                no_handshake,
            } => connect(ctx, multiaddr, no_handshake).await,
            P2pCommand::Disconnect { peer_id } => {
                let v =
                    admin::require(&ctx.data_dir, &Request::Disconnect { peer: peer_id }).await?;
                print_or_json(ctx, &v, |v| {
                    output::line(format!("Disconnected from peer {}", str_of(v, "peerId")))
                })
            }
            P2pCommand::Discover { tag } => discover(ctx, tag).await,
            P2pCommand::Reputation { did, peer_did } => {
                reputation(ctx, &config, did.or(peer_did)).await
            }
            P2pCommand::Revoke { did, reason } => revoke(ctx, &config, did, reason).await,
            P2pCommand::Revocations => revocations(ctx, &config).await,
            P2pCommand::Session(cmd) => session(ctx, cmd).await,
            P2pCommand::Sandbox(cmd) => crate::commands::sandbox::run(ctx, &config, cmd).await,
            P2pCommand::Invoke { peer, tool, params } => invoke(ctx, peer, tool, params).await,
            P2pCommand::Tools { peer } => {
                let v = admin::require(&ctx.data_dir, &Request::Tools { peer }).await?;
                print_or_json(ctx, &v, |v| {
                    let tools = strings_of(v, "capabilities");
                    if tools.is_empty() {
                        output::line("No tools available to this node.");
                    }
                    for t in tools {
                        output::line(t);
                    }
                })
            }
            P2pCommand::Firewall(cmd) => firewall(ctx, cmd).await,
            P2pCommand::Approvals(cmd) => approvals(ctx, cmd).await,
        }
    })
}

async fn invoke(
    ctx: &Context,
    peer: String,
    tool: String,
    params: Option<String>,
) -> Result<ExitCode> {
    let text = match params.as_deref() {
        None => "{}".to_owned(),
        Some("-") => {
            let mut s = String::new();
            std::io::Read::take(std::io::stdin(), 1 << 20)
                .read_to_string(&mut s)
                .context("read params from stdin")?;
            s
        }
        Some(p) => p.to_owned(),
    };
    let params: Value = serde_json::from_str(&text).context("--params is not JSON")?;
    if !params.is_object() {
        anyhow::bail!("--params must be a JSON object");
    }
    let v = admin::require(&ctx.data_dir, &Request::Invoke { peer, tool, params }).await?;
    // The result is JSON either way: compact for --json, pretty for people.
    if ctx.json {
        output::json(&v["result"])?;
    } else {
        output::line(serde_json::to_string_pretty(&v["result"])?);
    }
    Ok(ExitCode::SUCCESS)
}

async fn approvals(ctx: &Context, cmd: crate::cli::ApprovalsCommand) -> Result<ExitCode> {
    use crate::cli::ApprovalsCommand as A;
    let (id, approve) = match cmd {
        A::List => {
            let v = admin::require(&ctx.data_dir, &Request::Approvals).await?;
            return print_or_json(ctx, &v, |v| {
                let list = v.as_array().cloned().unwrap_or_default();
                if list.is_empty() {
                    output::line("No calls waiting for approval.");
                    return;
                }
                let mut rows = vec![
                    ["ID", "PEER DID", "TOOL", "PARAMS", "WAITING"]
                        .map(String::from)
                        .to_vec(),
                ];
                for p in list {
                    rows.push(vec![
                        p["id"].to_string(),
                        str_of(&p, "peerDid").to_owned(),
                        str_of(&p, "tool").to_owned(),
                        str_of(&p, "params").to_owned(),
                        format!("{}s", p["waitingSecs"]),
                    ]);
                }
                output::table(&rows);
            });
        }
        A::Approve { id } => (id, true),
        A::Deny { id } => (id, false),
    };
    let v = admin::require(&ctx.data_dir, &Request::ApprovalDecide { id, approve }).await?;
    print_or_json(ctx, &v, |_| {
        output::line(format!(
            "Call {id} {}.",
            if approve { "approved" } else { "denied" }
        ))
    })
}

async fn firewall(ctx: &Context, cmd: crate::cli::FirewallCommand) -> Result<ExitCode> {
    use crate::cli::FirewallCommand as F;
    match cmd {
        F::List => {
            let v = admin::require(&ctx.data_dir, &Request::FirewallList).await?;
            print_or_json(ctx, &v, |v| {
                let rules = v.as_array().cloned().unwrap_or_default();
                if rules.is_empty() {
                    output::line("No firewall rules configured. Default policy: deny-all.");
                    return;
                }
                let mut rows = vec![vec![
                    "PEER DID".to_owned(),
                    "ACTION".to_owned(),
                    "TOOLS".to_owned(),
                    "RATE LIMIT".to_owned(),
                ]];
                for r in rules {
                    let tools = strings_of(&r, "tools");
                    let rate = r["rateLimit"].as_i64().unwrap_or(0);
                    rows.push(vec![
                        str_of(&r, "peerDid").to_owned(),
                        str_of(&r, "action").to_owned(),
                        if tools.is_empty() {
                            "*".to_owned()
                        } else {
                            tools.join(", ")
                        },
                        if rate > 0 {
                            format!("{rate}/min")
                        } else {
                            "unlimited".to_owned()
                        },
                    ]);
                }
                output::table(&rows);
            })
        }
        F::Add {
            peer_did,
            action,
            tools,
            rate_limit,
        } => {
            let rule = lango_p2p::firewall::Rule {
                peer_did,
                action,
                tools,
                rate_limit,
            };
            lango_p2p::firewall::validate_rule(&rule).map_err(|e| anyhow::anyhow!("{e}"))?;
            // The peer in canonical form; an invalid DID is refused before the node is asked.
            let rule =
                lango_p2p::rules::canonical_rule(&rule).map_err(|e| anyhow::anyhow!("{e}"))?;
            let v =
                admin::require(&ctx.data_dir, &Request::FirewallAdd { rule: rule.clone() }).await?;
            print_or_json(ctx, &v, |_| {
                output::line("Firewall rule added to the running node:");
                output::line(format!("  Peer DID:    {}", rule.peer_did));
                output::line(format!("  Action:      {}", rule.action));
                output::line(format!(
                    "  Tools:       {}",
                    rule.tools
                        .as_ref()
                        .filter(|t| !t.is_empty())
                        .map(|t| t.join(", "))
                        .unwrap_or_else(|| "*".into())
                ));
                if rule.rate_limit > 0 {
                    output::line(format!("  Rate Limit:  {}/min", rule.rate_limit));
                }
            })
        }
        F::Remove { peer_did } => {
            let v = admin::require(
                &ctx.data_dir,
                &Request::FirewallRemove {
                    peer_did: peer_did.clone(),
                },
            )
            .await?;
            print_or_json(ctx, &v, |v| {
                output::line(format!(
                    "Removed {} firewall rule(s) for {peer_did}.",
                    v["removed"].as_u64().unwrap_or(0)
                ))
            })
        }
    }
}

fn str_of<'a>(v: &'a Value, key: &str) -> &'a str {
    v.get(key).and_then(Value::as_str).unwrap_or("")
}

fn strings_of(v: &Value, key: &str) -> Vec<String> {
    v.get(key)
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|x| x.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

fn print_or_json(ctx: &Context, v: &Value, text: impl FnOnce(&Value)) -> Result<ExitCode> {
    if ctx.json {
        output::json(v)?;
    } else {
        text(v);
    }
    Ok(ExitCode::SUCCESS)
}

/// Unlocks the vault (no creation) and makes sure this crate's tables exist.
async fn open_local(ctx: &Context, config: &NodeConfig) -> Result<Vault> {
    let vault = open_vault(ctx, config, UnlockOptions::default()).await?;
    lango_p2p::migrate(vault.database()?).await?;
    Ok(vault)
}

async fn identity_cmd(ctx: &Context, config: &NodeConfig) -> Result<ExitCode> {
    let v = match admin::request(&ctx.data_dir, &Request::Identity).await? {
        Some(v) => v,
        None => {
            let vault = open_local(ctx, config).await?;
            let r = local_identity(ctx, config, &vault).await;
            vault.close().await;
            r?
        }
    };
    print_or_json(ctx, &v, |v| {
        output::line("P2P Identity");
        output::line(format!("  Peer ID:      {}", str_of(v, "peerId")));
        if let Some(did) = v.get("did").and_then(Value::as_str) {
            output::line(format!("  DID:          {did}"));
        }
        output::line(format!("  Key Storage:  {}", str_of(v, "keyStorage")));
        output::line("  Listen Addrs:");
        for a in strings_of(v, "listenAddrs") {
            output::line(format!("    {a}"));
        }
    })
}

async fn local_identity(ctx: &Context, config: &NodeConfig, vault: &Vault) -> Result<Value> {
    let p2p = &config.p2p;
    let store = vault.secrets()?;
    let key_dir = identity::key_dir(p2p.key_dir.as_deref(), &ctx.data_dir);
    let ident = identity::load_node_key(Some(&store), &key_dir).await?;
    let (wallet, _) = identity::load_or_create_wallet(&store).await?;
    Ok(json!({
        "peerId": ident.key.peer_id(),
        "did": wallet.did().to_string(),
        "keyStorage": ident.storage,
        "keyOrigin": ident.origin,
        "listenAddrs": p2p.listen_addrs,
    }))
}

async fn status(ctx: &Context) -> Result<ExitCode> {
    let v = admin::require(&ctx.data_dir, &Request::Status).await?;
    print_or_json(ctx, &v, |v| {
        let n = |k: &str| v.get(k).and_then(Value::as_u64).unwrap_or(0);
        let b = |k: &str| v.get(k).and_then(Value::as_bool).unwrap_or(false);
        output::line("P2P Node Status");
        output::line(format!("  Peer ID:          {}", str_of(v, "peerId")));
        output::line(format!(
            "  Listen Addrs:     [{}]",
            strings_of(v, "listenAddrs").join(" ")
        ));
        output::line(format!(
            "  Connected Peers:  {} / {}",
            n("connectedPeers"),
            n("maxPeers")
        ));
        output::line(format!("  mDNS:             {}", b("mdns")));
        output::line(format!("  Relay:            {}", b("relay")));
        output::line(format!("  ZK Handshake:     {}", b("zkHandshake")));
        if let Some(did) = v.get("did").and_then(Value::as_str) {
            output::line(format!("  DID:              {did}"));
        }
        output::line(format!("  Known Cards:      {}", n("knownCards")));
        output::line(format!("  Cards Accepted:   {}", n("cardsAccepted")));
        let rejected: Vec<String> = v
            .get("cardsRejected")
            .and_then(Value::as_object)
            .map(|m| {
                m.iter()
                    .map(|(k, c)| format!("{k}={}", c.as_u64().unwrap_or(0)))
                    .collect()
            })
            .unwrap_or_default();
        output::line(format!(
            "  Cards Rejected:   {}{}",
            rejected.len(),
            if rejected.is_empty() {
                String::new()
            } else {
                format!(" ({})", rejected.join(", "))
            }
        ));
        output::line(format!("  Bootstrap Refused: {}", n("bootstrapRefused")));
        output::line(format!("  Routing Table:    {}", n("routingTablePeers")));
        output::line(format!("  Sessions:         {}", n("sessions")));
        output::line(format!("  Pinned Peers:     {}", n("pinnedPeers")));
    })
}

async fn peers(ctx: &Context) -> Result<ExitCode> {
    let v = admin::require(&ctx.data_dir, &Request::Peers).await?;
    print_or_json(ctx, &v, |v| {
        let list = v.as_array().cloned().unwrap_or_default();
        if list.is_empty() {
            output::line("No connected peers.");
            return;
        }
        let mut rows = vec![vec!["PEER ID".to_owned(), "ADDRESS".to_owned()]];
        for p in &list {
            let first = strings_of(p, "addrs")
                .into_iter()
                .next()
                .unwrap_or_default();
            rows.push(vec![str_of(p, "peerId").to_owned(), first]);
        }
        output::table(&rows);
    })
}

async fn connect(ctx: &Context, addr: String, no_handshake: bool) -> Result<ExitCode> {
    let v = admin::require(&ctx.data_dir, &Request::Connect { addr, no_handshake }).await?;
    print_or_json(ctx, &v, |v| {
        output::line(format!("Connected to peer {}", str_of(v, "peerId")));
        if !no_handshake {
            let b = |k: &str| v.get(k).and_then(Value::as_bool).unwrap_or(false);
            output::line(format!("  Peer DID:       {}", str_of(v, "peerDid")));
            output::line(format!("  Protocol:       {}", str_of(v, "protocol")));
            output::line(format!("  Authenticated:  {}", b("authenticated")));
            output::line(format!("  Channel Bound:  {}", b("channelBound")));
            output::line(format!(
                "  Expires:        {}",
                rfc3339_seconds(str_of(v, "expiresAt"))
            ));
        }
    })
}

/// RFC 3339 with seconds precision in the local offset (`Z` for UTC), as the Go CLI prints
/// session times.
fn rfc3339_seconds(s: &str) -> String {
    time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339)
        .ok()
        .and_then(|t| {
            t.to_offset(crate::local_offset())
                .replace_nanosecond(0)
                .ok()?
                .format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_else(|| s.to_owned())
}

/// A session as `session list --json` prints it: the Go `Session` keys in Go's field order
/// (minus `token`, which is never shown), then the Rust additions.
#[derive(serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct SessionView {
    peer_did: String,
    created_at: String,
    expires_at: String,
    zk_verified: bool,
    invalidated: bool,
    peer_id: String,
    protocol: String,
    authenticated: bool,
    channel_bound: bool,
}

async fn session(ctx: &Context, cmd: SessionCommand) -> Result<ExitCode> {
    match cmd {
        SessionCommand::List => {
            let v = admin::require(&ctx.data_dir, &Request::Sessions).await?;
            if ctx.json {
                let list: Vec<SessionView> = serde_json::from_value(v)
                    .context("the node answered with an unexpected session list")?;
                output::json(&list)?;
                return Ok(ExitCode::SUCCESS);
            }
            print_or_json(ctx, &v, |v| {
                let list = v.as_array().cloned().unwrap_or_default();
                if list.is_empty() {
                    output::line("No active sessions.");
                    return;
                }
                let mut rows = vec![vec![
                    "PEER DID".to_owned(),
                    "CREATED".to_owned(),
                    "EXPIRES".to_owned(),
                    "ZK VERIFIED".to_owned(),
                ]];
                for s in &list {
                    rows.push(vec![
                        str_of(s, "peerDid").to_owned(),
                        rfc3339_seconds(str_of(s, "createdAt")),
                        rfc3339_seconds(str_of(s, "expiresAt")),
                        s.get("zkVerified")
                            .and_then(Value::as_bool)
                            .unwrap_or(false)
                            .to_string(),
                    ]);
                }
                output::table(&rows);
            })
        }
        SessionCommand::Revoke { peer_did, unpin } => {
            let Some(did) = peer_did else {
                anyhow::bail!("--peer-did is required");
            };
            let v = admin::require(
                &ctx.data_dir,
                &Request::SessionRevoke {
                    did: did.clone(),
                    unpin,
                },
            )
            .await?;
            print_or_json(ctx, &v, |v| {
                let b = |k: &str| v.get(k).and_then(Value::as_bool).unwrap_or(false);
                if b("revoked") {
                    output::line(format!("Session for {did} revoked."));
                } else {
                    output::line(format!("No active session for {did}."));
                }
                if b("unpinned") {
                    output::line(format!("Downgrade pin for {did} removed."));
                }
            })
        }
        SessionCommand::RevokeAll => {
            let v = admin::require(&ctx.data_dir, &Request::SessionRevokeAll).await?;
            print_or_json(ctx, &v, |v| {
                let n = v.get("revoked").and_then(Value::as_u64).unwrap_or(0);
                output::line(format!("All sessions revoked ({n})."));
            })
        }
    }
}

async fn discover(ctx: &Context, tag: Option<String>) -> Result<ExitCode> {
    let v = admin::require(&ctx.data_dir, &Request::Discover { tag }).await?;
    print_or_json(ctx, &v, |v| {
        let list = v.as_array().cloned().unwrap_or_default();
        if list.is_empty() {
            output::line("No agents discovered. Try connecting to bootstrap peers first.");
            return;
        }
        let mut rows = vec![
            ["NAME", "DID", "CAPABILITIES", "PEER ID", "VERIFIED"]
                .map(str::to_owned)
                .to_vec(),
        ];
        for c in &list {
            let verified = c.get("verified").and_then(Value::as_bool).unwrap_or(false);
            rows.push(vec![
                str_of(c, "name").to_owned(),
                str_of(c, "did").to_owned(),
                strings_of(c, "capabilities").join(", "),
                str_of(c, "peerId").to_owned(),
                if verified { "yes" } else { "no" }.to_owned(),
            ]);
        }
        output::table(&rows);
    })
}

/// A reputation record as the admin socket carries it and `p2p reputation --json` prints
/// it (§5.7): fields in the reference's order, times in RFC 3339.
#[derive(serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ReputationView {
    peer_did: String,
    trust_score: f64,
    successful_exchanges: i64,
    failed_exchanges: i64,
    timeout_count: i64,
    first_seen: String,
    last_interaction: String,
}

impl From<&Record> for ReputationView {
    fn from(r: &Record) -> Self {
        let rfc3339 = |t: time::OffsetDateTime| {
            t.format(&time::format_description::well_known::Rfc3339)
                .unwrap_or_default()
        };
        Self {
            peer_did: r.peer_did.clone(),
            trust_score: r.trust_score,
            successful_exchanges: r.successes,
            failed_exchanges: r.failures,
            timeout_count: r.timeouts,
            first_seen: rfc3339(r.first_seen),
            last_interaction: rfc3339(r.last_interaction),
        }
    }
}

fn local_seconds(s: &str) -> String {
    time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339)
        .map(|t| {
            let t = t.to_offset(crate::local_offset());
            format!(
                "{:04}-{:02}-{:02} {:02}:{:02}:{:02}",
                t.year(),
                u8::from(t.month()),
                t.day(),
                t.hour(),
                t.minute(),
                t.second()
            )
        })
        .unwrap_or_else(|_| s.to_owned())
}

async fn reputation(ctx: &Context, config: &NodeConfig, did: Option<String>) -> Result<ExitCode> {
    let Some(did) = did else {
        return reputation_all(ctx, config).await;
    };
    identity::canonical_did(&did)?;
    let v = match admin::request(&ctx.data_dir, &Request::Reputation { did: did.clone() }).await? {
        Some(v) => v,
        None => {
            let vault = open_local(ctx, config).await?;
            let rep = Reputation::new(vault.database()?.pool().clone(), config.p2p.min_trust_score);
            let r = rep.details(&did).await;
            vault.close().await;
            match r? {
                Some(rec) => serde_json::to_value(ReputationView::from(&rec))?,
                None => Value::Null,
            }
        }
    };
    if v.is_null() {
        if ctx.json {
            output::json(&json!({
                "message": "no reputation record found",
                "peerDid": did,
                "trustScore": 0,
            }))?;
        } else {
            output::line(format!("No reputation record found for {did}"));
        }
        return Ok(ExitCode::SUCCESS);
    }
    let view: ReputationView = serde_json::from_value(v)?;
    if ctx.json {
        output::json(&view)?;
        return Ok(ExitCode::SUCCESS);
    }
    output::line("Peer Reputation");
    output::line(format!("  Peer DID:          {}", view.peer_did));
    output::line(format!("  Trust Score:       {:.4}", view.trust_score));
    output::line(format!(
        "  Successes:         {}",
        view.successful_exchanges
    ));
    output::line(format!("  Failures:          {}", view.failed_exchanges));
    output::line(format!("  Timeouts:          {}", view.timeout_count));
    output::line(format!(
        "  First Seen:        {}",
        local_seconds(&view.first_seen)
    ));
    output::line(format!(
        "  Last Interaction:  {}",
        local_seconds(&view.last_interaction)
    ));
    Ok(ExitCode::SUCCESS)
}

async fn reputation_all(ctx: &Context, config: &NodeConfig) -> Result<ExitCode> {
    let vault = open_local(ctx, config).await?;
    let rep = Reputation::new(vault.database()?.pool().clone(), config.p2p.min_trust_score);
    let records = rep.list(1000).await;
    vault.close().await;
    let records = records?;
    let views: Vec<ReputationView> = records.iter().map(ReputationView::from).collect();
    let v = serde_json::to_value(&views)?;
    print_or_json(ctx, &v, |_| {
        if records.is_empty() {
            output::line("No reputation records.");
            return;
        }
        let mut rows = vec![
            ["PEER DID", "SCORE", "SUCCESSES", "FAILURES", "TIMEOUTS"]
                .map(str::to_owned)
                .to_vec(),
        ];
        for r in &records {
            rows.push(vec![
                r.peer_did.clone(),
                format!("{:.4}", r.trust_score),
                r.successes.to_string(),
                r.failures.to_string(),
                r.timeouts.to_string(),
            ]);
        }
        output::table(&rows);
    })
}

async fn revoke(
    ctx: &Context,
    config: &NodeConfig,
    did: String,
    reason: String,
) -> Result<ExitCode> {
    let req = Request::Revoke {
        did: did.clone(),
        reason: reason.clone(),
    };
    let (v, live) = match admin::request(&ctx.data_dir, &req).await? {
        Some(v) => (v, true),
        None => {
            let vault = open_local(ctx, config).await?;
            let revs =
                Revocations::load(vault.database()?.pool().clone(), &config.p2p.revoked_dids).await;
            let r = match revs {
                Ok(revs) => revs
                    .revoke(&did, &reason)
                    .await
                    .map_err(anyhow::Error::from),
                Err(e) => Err(e.into()),
            };
            vault.close().await;
            (json!({ "did": did, "newlyRevoked": r? }), false)
        }
    };
    print_or_json(ctx, &v, |v| {
        let new = v
            .get("newlyRevoked")
            .and_then(Value::as_bool)
            .unwrap_or(false);
        if new {
            output::line(format!("Revoked {did}."));
        } else {
            output::line(format!("{did} was already revoked."));
        }
        if !live {
            output::note("No node is running; the revocation applies when it starts.");
        }
    })
}

async fn revocations(ctx: &Context, config: &NodeConfig) -> Result<ExitCode> {
    let v = match admin::request(&ctx.data_dir, &Request::Revocations).await? {
        Some(v) => v,
        None => {
            let vault = open_local(ctx, config).await?;
            let revs =
                Revocations::load(vault.database()?.pool().clone(), &config.p2p.revoked_dids).await;
            vault.close().await;
            serde_json::to_value(revs?.list())?
        }
    };
    print_or_json(ctx, &v, |v| {
        let list = v.as_array().cloned().unwrap_or_default();
        if list.is_empty() {
            output::line("No revoked DIDs.");
            return;
        }
        let mut rows = vec![
            ["DID", "SOURCE", "REVOKED", "REASON"]
                .map(str::to_owned)
                .to_vec(),
        ];
        for r in &list {
            rows.push(vec![
                str_of(r, "did").to_owned(),
                str_of(r, "source").to_owned(),
                r.get("revokedAt")
                    .and_then(Value::as_str)
                    .map(local_seconds)
                    .unwrap_or_else(|| "-".into()),
                str_of(r, "reason").to_owned(),
            ]);
        }
        output::table(&rows);
    })
}
