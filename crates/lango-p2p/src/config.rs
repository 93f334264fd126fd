//! The `p2p` and `a2a` configuration sections.
//!
//! Keys are camelCase, as in the Go node. Durations accept Go's syntax (`30s`, `1h30m`,
//! `1.5h`, `300ms`) and, as Go's profiles store them, integer nanoseconds; they are written
//! back as strings. Defaults live here and nowhere else; [`P2pConfig::validate`] reports every
//! problem with its full key path.

use std::{fmt, time::Duration};

use crate::firewall::{self, FirewallConfig, Rule};
use crate::sanitize::OwnerProtectionConfig;
use lango_handshake::exchange::HandshakeConfig;
use lango_session::SessionConfig;
use lango_session::config::go_duration;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A duration written in Go's syntax.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub struct GoDuration(pub Duration);

impl GoDuration {
    /// `secs` seconds.
    pub const fn secs(secs: u64) -> Self {
        Self(Duration::from_secs(secs))
    }

    /// Parses Go's `time.ParseDuration` syntax. Negative durations are refused: no key of
    /// this node has a meaning for them.
    pub fn parse(s: &str) -> Result<Self, String> {
        if s.trim().starts_with('-') {
            return Err(format!("{s:?}: negative durations are not allowed"));
        }
        go_duration::parse(s).map(Self)
    }
}

impl fmt::Display for GoDuration {
    /// Go's `Duration.String()` form (`1h30m0s`, `300ms`, `0s`).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&go_duration::format(self.0))
    }
}

impl Serialize for GoDuration {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_string())
    }
}

impl<'de> Deserialize<'de> for GoDuration {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Nanos(i64),
            Text(String),
        }
        match Raw::deserialize(d)? {
            Raw::Nanos(n) if n >= 0 => Ok(Self(Duration::from_nanos(n.unsigned_abs()))),
            Raw::Nanos(_) => Err(serde::de::Error::custom(
                "negative durations are not allowed",
            )),
            Raw::Text(t) => Self::parse(&t).map_err(serde::de::Error::custom),
        }
    }
}

/// The `p2p` section: the node on the network.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct P2pConfig {
    /// Networking on or off. `serve` and the `p2p` commands need it on. On by default in
    /// lango-rs (the Go node defaults to off, which makes a fresh `serve` do nothing).
    pub enabled: bool,
    /// Multiaddrs to listen on (TCP and QUIC v1).
    pub listen_addrs: Vec<String>,
    /// Peers dialled at start: each must end in `/p2p/<peer-id>`, which is pinned — a peer
    /// that authenticates with another ID is dropped.
    pub bootstrap_peers: Vec<String>,
    /// Most established connections (incoming and outgoing together).
    pub max_peers: u32,
    /// mDNS discovery. Not built into this node; `true` is reported as unavailable.
    pub enable_mdns: bool,
    /// Circuit relay. Not built into this node; `true` is reported as unavailable.
    pub enable_relay: bool,
    /// How often the local agent card is published (≤ 0 means 30 s).
    pub gossip_interval: GoDuration,
    /// Reputation threshold in (0, 1]: peers below it are not trusted.
    pub min_trust_score: f64,
    /// DIDs refused everywhere (cards, handshakes), in addition to runtime revocations.
    pub revoked_dids: Vec<String>,
    /// Agent-card acceptance.
    pub discovery: DiscoveryConfig,
    /// Proof-related discovery settings.
    pub zkp: ZkpConfig,
    /// Deadline for a whole handshake exchange, every read, write, approval and signature
    /// included (≤ 0 means 30 s).
    pub handshake_timeout: GoDuration,
    /// Refuse legacy challenges that carry no valid single-hash signature.
    pub require_signed_challenge: bool,
    /// Skip approval for a peer that already holds an authenticated session, and approve
    /// peers whose reputation is at least `minTrustScore`.
    pub auto_approve_known_peers: bool,
    /// ZK ownership proofs in legacy handshakes: as initiator, advertise
    /// `halo2-ipa-pasta/wallet_ownership/v2` and verify the proof a responder adds (a session
    /// is `zkVerified` only then); as responder, add a proof for initiators that advertise it.
    /// Creates the ZK identity `p2p.zk.identity` in the vault on first start. Always in
    /// addition to the wallet signature, never instead.
    pub zk_handshake: bool,
    /// Response attestations (`response_attestation/v2`): as responder, attach a proof to
    /// every successful tool result (about a second of proving each, off the async workers,
    /// at most 5 s, then the result goes without); as requester, ask for one bound to a fresh
    /// nonce and a window on this node's clock, and verify it (see
    /// `p2p.zkp.requireAttestation`).
    pub zk_attestation: bool,
    /// Register and offer the legacy 1.0.0/1.1.0 handshakes (Go interop). `false` for
    /// lango-rs-only networks.
    pub handshake_allow_legacy: bool,
    /// Refuse legacy handshakes with a peer once seen on 1.2.0-bound (downgrade pins).
    pub handshake_pin_upgraded_peers: bool,
    /// Largest handshake message, line feed included.
    pub handshake_max_message_bytes: usize,
    /// Most incoming handshakes in progress (4 per peer at most).
    pub handshake_max_concurrent: usize,
    /// Incoming handshakes one remote peer ID may start per minute (0 means 120).
    pub handshake_attempts_per_peer: u32,
    /// Incoming handshakes one remote IP address may start per minute (0 means 1200).
    pub handshake_attempts_per_addr: u32,
    /// Which incoming handshakes are approved.
    pub handshake_approval: HandshakeApproval,
    /// DIDs approved under `handshakeApproval = "allowlist"`.
    pub handshake_allowed_dids: Vec<String>,
    /// Most remembered handshake nonces; a full cache refuses handshakes (fails closed).
    pub nonce_cache_capacity: usize,
    /// Lifetime of a new session (≤ 0 means 24 h).
    pub session_token_ttl: GoDuration,
    /// Consecutive tool failures that invalidate a peer's session (≤ 0 means 5).
    #[serde(alias = "maxConsecutiveFailures")]
    pub session_max_failures: i64,
    /// How long a revoked or auto-invalidated peer may not handshake again (≤ 0 means 5 min).
    #[serde(alias = "invalidationCooldown")]
    pub session_revoke_cooldown: GoDuration,
    /// Invalidation records kept.
    pub invalidation_history_limit: i64,
    /// Upstream Go's post-quantum handshake switch. Accepted and ignored: this node never
    /// speaks the bare `/lango/handshake/1.2.0` dialect.
    #[serde(skip_serializing)]
    pub enable_pq_handshake: Option<bool>,
    /// Isolated execution of remote tool calls.
    pub tool_isolation: ToolIsolationConfig,
    /// Firewall rules, in evaluation order; empty means deny-all (protocol spec R-4.1..R-4.6).
    /// Every rule is validated at load: a permissive `allow` for `"*"` with all tools, an
    /// unknown action, an empty `peerDid`, a negative `rateLimit` or a malformed tool pattern
    /// stops start-up.
    pub firewall_rules: Vec<Rule>,
    /// Owner approval of remote tool calls: `deny` (default) or `allow-listed`.
    pub approval_policy: ApprovalPolicyKind,
    /// Tools approved under `approvalPolicy = "allow-listed"`.
    pub approved_tools: Vec<String>,
    /// Longest wait for an approval; a timeout is a denial.
    pub approval_timeout: GoDuration,
    /// Highest safety level a remote call may have: `safe`, `moderate` (default) or
    /// `dangerous`.
    pub max_safety_level: String,
    /// Tools that bypass the safety gate (and only it).
    pub allowed_tools: Vec<String>,
    /// A2A stream limits.
    pub protocol: ProtocolConfig,
    /// Meta requests (`agent_card`, `capability_query`, `price_query`) per minute and peer;
    /// 0 turns the limit off (R-4.11).
    pub meta_rate_limit: u32,
    /// Tool calls per minute over all peers together; 0 (the default) is off (R-4.10).
    pub global_rate_limit: u32,
    /// What the owner shield hides from peers (R-6.1..R-6.7).
    pub owner_protection: OwnerProtectionConfig,
    /// Deprecated: directory of the legacy plaintext `node.key` (default `<data-dir>/p2p`).
    /// Read for migration and for the no-secrets-store mode only; never written.
    #[serde(skip_serializing)]
    pub key_dir: Option<String>,
    /// Deprecated and ignored: the node key's secret name is the constant
    /// `p2p.node.privatekey`.
    #[serde(skip_serializing)]
    pub node_key_name: Option<String>,
}

impl Default for P2pConfig {
    fn default() -> Self {
        let session_defaults = SessionConfig::default();
        Self {
            enabled: true,
            listen_addrs: vec![
                "/ip4/0.0.0.0/tcp/9000".into(),
                "/ip4/0.0.0.0/udp/9000/quic-v1".into(),
            ],
            bootstrap_peers: Vec::new(),
            max_peers: 50,
            enable_mdns: false,
            enable_relay: false,
            gossip_interval: GoDuration::secs(30),
            min_trust_score: 0.3,
            revoked_dids: Vec::new(),
            discovery: DiscoveryConfig::default(),
            zkp: ZkpConfig::default(),
            handshake_timeout: GoDuration::secs(30),
            require_signed_challenge: false,
            auto_approve_known_peers: false,
            zk_handshake: false,
            zk_attestation: false,
            handshake_allow_legacy: true,
            handshake_pin_upgraded_peers: true,
            handshake_max_message_bytes: lango_handshake::wire::DEFAULT_MAX_MESSAGE_BYTES,
            handshake_max_concurrent: lango_handshake::exchange::DEFAULT_MAX_CONCURRENT,
            handshake_attempts_per_peer: lango_handshake::exchange::DEFAULT_ATTEMPTS_PER_PEER,
            handshake_attempts_per_addr: lango_handshake::exchange::DEFAULT_ATTEMPTS_PER_ADDR,
            handshake_approval: HandshakeApproval::Authenticated,
            handshake_allowed_dids: Vec::new(),
            nonce_cache_capacity: lango_handshake::nonce::DEFAULT_NONCE_CACHE_CAPACITY,
            session_token_ttl: GoDuration(session_defaults.session_token_ttl),
            session_max_failures: session_defaults.session_max_failures,
            session_revoke_cooldown: GoDuration(session_defaults.session_revoke_cooldown),
            invalidation_history_limit: session_defaults.invalidation_history_limit,
            enable_pq_handshake: None,
            tool_isolation: ToolIsolationConfig::default(),
            firewall_rules: Vec::new(),
            meta_rate_limit: firewall::DEFAULT_META_RATE_LIMIT,
            global_rate_limit: 0,
            owner_protection: OwnerProtectionConfig::default(),
            approval_policy: ApprovalPolicyKind::Deny,
            approved_tools: Vec::new(),
            approval_timeout: GoDuration::secs(120),
            max_safety_level: "moderate".into(),
            allowed_tools: Vec::new(),
            protocol: ProtocolConfig::default(),
            key_dir: None,
            node_key_name: None,
        }
    }
}

/// `p2p.handshakeApproval`: which incoming handshakes this node accepts, after the checks
/// every handshake passes (signatures, replay, revocation, cool-down, overwrite guard).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum HandshakeApproval {
    /// Peers that proved control of their DID's key (every 1.2.0-bound peer, signed legacy
    /// challenges), unless their reputation is below `minTrustScore`. Unsigned legacy
    /// challenges are refused. The default.
    Authenticated,
    /// Only the DIDs in `handshakeAllowedDids`, authenticated.
    Allowlist,
    /// Also unsigned legacy challenges (Go 2856d8a9 initiators); their sessions are marked
    /// unauthenticated.
    Open,
    /// No incoming handshake: this node only initiates.
    Deny,
}

/// `p2p.toolIsolation`: how remote tool calls are isolated (protocol spec §4). Off by default:
/// then remote tool calls are refused. Defaults come from [`lango_sandbox::SandboxConfig`].
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct ToolIsolationConfig {
    /// Run remote tool calls isolated; `false` refuses them.
    pub enabled: bool,
    /// Deadline of one call (0 means 30 s; at most 10 min).
    pub timeout_per_tool: GoDuration,
    /// Memory cap in MiB.
    #[serde(rename = "maxMemoryMB", alias = "maxMemoryMb")]
    pub max_memory_mb: u64,
    /// Refuse subprocess calls without OS isolation (namespaces).
    pub require_os_isolation: bool,
    /// Cap of a call's result.
    pub max_output_bytes: usize,
    /// Process cap of a call.
    pub max_processes: u64,
    /// Open-file cap of a call.
    pub max_open_files: u64,
    /// File-size cap in MiB.
    #[serde(rename = "maxFileSizeMB", alias = "maxFileSizeMb")]
    pub max_file_size_mb: u64,
    /// First host uid a node running as root runs calls as (one uid per running call).
    pub sandbox_uid_first: u32,
    /// How many uids from `sandboxUidFirst` are reserved for calls.
    pub sandbox_uid_count: u32,
    /// Container mode.
    pub container: ContainerSection,
    /// Operator-configured command tools peers may call (subprocess mode).
    pub command_tools: Vec<CommandToolConfig>,
}

/// `p2p.toolIsolation.container`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct ContainerSection {
    /// Container mode on.
    pub enabled: bool,
    /// `auto`, `docker`, `gvisor` or `native`.
    pub runtime: String,
    /// Image, present locally (build it with `cargo xtask sandbox-image`).
    pub image: String,
    /// `none` or a network listed in `allowedNetworks`.
    pub network_mode: String,
    /// Read-only root file system (unset means true).
    pub read_only_rootfs: Option<bool>,
    /// CPU quota per 100 ms (0 means one CPU).
    pub cpu_quota_us: i64,
    /// Warm pool size (0: off).
    pub pool_size: usize,
    /// Age at which an unused pooled container is replaced.
    pub pool_idle_timeout: GoDuration,
    /// No container runtime is an error rather than a fallback to subprocess mode.
    pub require_container: bool,
    /// `uid:gid` of the tool; never root.
    pub user: String,
    /// Process cap.
    pub pids_limit: i64,
    /// `/tmp` tmpfs size in MiB.
    #[serde(rename = "tmpfsSizeMB", alias = "tmpfsSizeMb")]
    pub tmpfs_size_mb: u64,
    /// Networks besides `none` that `networkMode` may name.
    pub allowed_networks: Vec<String>,
}

/// One `[[p2p.toolIsolation.commandTools]]` entry: `program args…` gets the call's params as
/// JSON on stdin and writes a JSON value on stdout; a non-zero exit is a tool error.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct CommandToolConfig {
    /// Tool name peers call.
    pub name: String,
    /// One line for capability listings.
    pub description: String,
    /// Absolute path of the program.
    pub program: String,
    /// Fixed arguments.
    pub args: Vec<String>,
    /// `safe`, `moderate` (default) or `dangerous`, for `p2p.maxSafetyLevel`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub safety: Option<String>,
}

impl Default for ToolIsolationConfig {
    fn default() -> Self {
        let d = lango_sandbox::SandboxConfig::default();
        let c = d.container;
        Self {
            enabled: d.enabled,
            timeout_per_tool: GoDuration(d.timeout_per_tool),
            max_memory_mb: d.max_memory_mb,
            require_os_isolation: d.require_os_isolation,
            max_output_bytes: d.max_output_bytes,
            max_processes: d.max_processes,
            max_open_files: d.max_open_files,
            max_file_size_mb: d.max_file_size_mb,
            sandbox_uid_first: d.uid_range.first,
            sandbox_uid_count: d.uid_range.count,
            container: ContainerSection {
                enabled: c.enabled,
                runtime: c.runtime.as_str().into(),
                image: c.image,
                network_mode: c.network_mode,
                read_only_rootfs: None,
                cpu_quota_us: c.cpu_quota_us,
                pool_size: c.pool_size,
                pool_idle_timeout: GoDuration(c.pool_idle_timeout),
                require_container: c.require_container,
                user: c.user,
                pids_limit: c.pids_limit,
                tmpfs_size_mb: c.tmpfs_size_mb,
                allowed_networks: c.allowed_networks,
            },
            command_tools: Vec::new(),
        }
    }
}

impl Default for ContainerSection {
    fn default() -> Self {
        ToolIsolationConfig::default().container
    }
}

impl ContainerSection {
    /// The parsed runtime choice (unknown values are reported by validation).
    pub fn runtime_choice(&self) -> Result<lango_sandbox::RuntimeChoice, String> {
        lango_sandbox::RuntimeChoice::parse(&self.runtime)
    }
}

impl ToolIsolationConfig {
    /// The sandbox settings these keys describe.
    pub fn sandbox_config(&self) -> lango_sandbox::SandboxConfig {
        let c = &self.container;
        lango_sandbox::SandboxConfig {
            enabled: self.enabled,
            timeout_per_tool: self.timeout_per_tool.0,
            max_memory_mb: self.max_memory_mb,
            require_os_isolation: self.require_os_isolation,
            max_output_bytes: self.max_output_bytes,
            max_processes: self.max_processes,
            max_open_files: self.max_open_files,
            max_file_size_mb: self.max_file_size_mb,
            uid_range: lango_sandbox::UidRange {
                first: self.sandbox_uid_first,
                count: self.sandbox_uid_count,
            },
            container: lango_sandbox::ContainerConfig {
                enabled: c.enabled,
                runtime: c
                    .runtime_choice()
                    .unwrap_or(lango_sandbox::RuntimeChoice::Auto),
                image: c.image.clone(),
                network_mode: c.network_mode.clone(),
                read_only_rootfs: c.read_only_rootfs.unwrap_or(true),
                cpu_quota_us: c.cpu_quota_us,
                pool_size: c.pool_size,
                pool_idle_timeout: c.pool_idle_timeout.0,
                require_container: c.require_container,
                user: c.user.clone(),
                pids_limit: c.pids_limit,
                tmpfs_size_mb: c.tmpfs_size_mb,
                allowed_networks: c.allowed_networks.clone(),
            },
        }
    }

    /// The tools peers may call: the worker's built-ins and the configured command tools.
    pub fn tool_registry(&self) -> Result<lango_sandbox::ToolRegistry, String> {
        let mut r = lango_sandbox::ToolRegistry::builtin();
        for t in &self.command_tools {
            r.register_command(lango_sandbox::CommandTool {
                name: t.name.clone(),
                description: t.description.clone(),
                program: t.program.clone().into(),
                args: t.args.clone(),
            })
            .map_err(|e| e.to_string())?;
            if let Some(level) = &t.safety {
                r.set_safety(&t.name, lango_sandbox::SafetyLevel::parse(level)?);
            }
        }
        Ok(r)
    }

    /// Every problem, with its key path under `prefix` (`p2p.toolIsolation`).
    pub fn validate(&self, prefix: &str) -> Result<(), Vec<String>> {
        let mut p = Vec::new();
        if let Err(e) = self.container.runtime_choice() {
            p.push(format!("{prefix}.container.runtime: {e}"));
        }
        if let Err(e) = self.sandbox_config().validate(prefix) {
            p.extend(e);
        }
        if let Err(e) = self.tool_registry() {
            p.push(format!("{prefix}.commandTools: {e}"));
        }
        for t in &self.command_tools {
            if !std::path::Path::new(&t.program).is_file() {
                p.push(format!(
                    "{prefix}.commandTools: {:?}: program {} does not exist",
                    t.name, t.program
                ));
            }
        }
        if p.is_empty() { Ok(()) } else { Err(p) }
    }
}

/// `p2p.approvalPolicy`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ApprovalPolicyKind {
    /// Every remote tool call is denied by the owner (the default).
    Deny,
    /// The tools in `approvedTools` are approved for peers the firewall lets through.
    AllowListed,
    /// Each call waits for the owner (`lango-node p2p approvals`), at most `approvalTimeout`.
    Interactive,
}

/// `p2p.protocol`: A2A stream limits (protocol spec §2.1.8).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct ProtocolConfig {
    /// Largest request.
    pub max_request_bytes: usize,
    /// Largest response the client reads.
    pub max_response_bytes: usize,
    /// Deadline for reading a request.
    pub read_timeout: GoDuration,
    /// Requests in progress per remote peer.
    pub max_concurrent_streams_per_peer: usize,
    /// Requests in progress in total.
    pub max_concurrent_streams: usize,
}

impl Default for ProtocolConfig {
    fn default() -> Self {
        Self {
            max_request_bytes: 1 << 20,
            max_response_bytes: 4 << 20,
            read_timeout: GoDuration::secs(15),
            max_concurrent_streams_per_peer: 4,
            max_concurrent_streams: 64,
        }
    }
}

/// `p2p.discovery`: agent-card acceptance (protocol spec §2.4.4).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct DiscoveryConfig {
    /// Drop cards that carry no signature.
    pub require_signed_cards: bool,
    /// Most cards kept; the oldest is evicted when full.
    pub max_known_peers: u32,
    /// Cards older than this are dropped on receipt and expired from the store.
    pub card_ttl: GoDuration,
}

impl Default for DiscoveryConfig {
    fn default() -> Self {
        Self {
            require_signed_cards: false,
            max_known_peers: 1000,
            card_ttl: GoDuration::secs(300),
        }
    }
}

/// `p2p.zkp`: credential checks on received cards.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct ZkpConfig {
    /// Credentials issued longer ago than this are removed from stored cards. Must be > 0.
    pub max_credential_age: GoDuration,
    /// Issuers (`did:lango:` DIDs) whose capability credentials are kept on received cards;
    /// empty (default) keeps none (Rust addition).
    pub trusted_issuers: Vec<String>,
    /// A JSON file with this node's own issuer-signed credentials (an array in the card's
    /// credential form), published on its agent card; empty: none (Rust addition).
    pub credentials_file: String,
    /// With `p2p.zkAttestation`: a tool result whose attestation is missing or does not
    /// verify fails the call (default: logged, and the result returned, as Go does).
    pub require_attestation: bool,
    /// Longest a tool result waits for its attestation before it is sent without one
    /// (default 5 s). Must be > 0.
    pub attest_timeout: GoDuration,
    /// Go key, accepted: `halo2` (this node's only scheme); `plonk` and `groth16` are read
    /// as `halo2` with a warning (Go proofs never verified across nodes anyway).
    pub proving_scheme: String,
    /// `file` (default): parameters cached on disk, checked against pinned digests before
    /// use; `unsafe` (the Go name, safe here): generated in memory at start-up.
    pub srs_mode: String,
    /// The parameter file for `file` mode; must contain `{k}`. Empty:
    /// `<proofCacheDir>/params-k{k}.bin`.
    pub srs_path: String,
    /// Go key: where the parameter cache lives. Empty: `<data-dir>/zkp`.
    pub proof_cache_dir: String,
    /// Largest proof accepted from a peer.
    pub max_proof_bytes: usize,
    /// Proofs and verifications at once on the blocking pool (0: half the CPUs, at least 1).
    pub max_concurrent_proofs: usize,
    /// Response attestations per minute and requesting peer (default 30; 0 turns the limit
    /// off). Beyond it results go out without attestation (Rust addition, W-9).
    pub attest_rate_limit: u32,
    /// The attestation window this node asks for (and uses when none is asked): seconds
    /// before now.
    pub attest_window_past_secs: u64,
    /// Seconds after now.
    pub attest_window_future_secs: u64,
}

impl Default for ZkpConfig {
    fn default() -> Self {
        Self {
            max_credential_age: GoDuration::secs(24 * 3600),
            trusted_issuers: Vec::new(),
            credentials_file: String::new(),
            attest_rate_limit: crate::firewall::DEFAULT_ATTEST_RATE_LIMIT,
            require_attestation: false,
            attest_timeout: GoDuration::secs(5),
            proving_scheme: "halo2".into(),
            srs_mode: "file".into(),
            srs_path: String::new(),
            proof_cache_dir: String::new(),
            max_proof_bytes: 16 * 1024,
            max_concurrent_proofs: 0,
            attest_window_past_secs: 300,
            attest_window_future_secs: 30,
        }
    }
}

/// The `a2a` section: how this agent describes itself.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct A2aConfig {
    /// Name on the agent card.
    pub agent_name: String,
    /// Description on the agent card.
    pub description: String,
    /// Capabilities announced on the agent card (what `p2p discover --tag` matches).
    pub capabilities: Vec<String>,
}

impl Default for A2aConfig {
    fn default() -> Self {
        Self {
            agent_name: "lango".into(),
            description: String::new(),
            capabilities: Vec::new(),
        }
    }
}

/// Largest number of listen or bootstrap addresses accepted.
const MAX_ADDRS: usize = 64;

impl P2pConfig {
    /// The gossip interval in effect (≤ 0 means 30 s).
    pub fn effective_gossip_interval(&self) -> Duration {
        if self.gossip_interval.0.is_zero() {
            Duration::from_secs(30)
        } else {
            self.gossip_interval.0
        }
    }

    /// The handshake settings these keys describe.
    pub fn handshake_config(&self) -> HandshakeConfig {
        HandshakeConfig {
            handshake_timeout: self.handshake_timeout.0,
            max_message_bytes: self.handshake_max_message_bytes,
            require_signed_challenge: self.require_signed_challenge,
            auto_approve_known_peers: self.auto_approve_known_peers,
            pin_upgraded_peers: self.handshake_pin_upgraded_peers,
            max_concurrent: self.handshake_max_concurrent,
            attempts_per_peer: self.handshake_attempts_per_peer,
            attempts_per_addr: self.handshake_attempts_per_addr,
            ..HandshakeConfig::default()
        }
    }

    /// The A2A handler's limits these keys describe.
    pub fn handler_limits(&self) -> crate::a2a::HandlerLimits {
        crate::a2a::HandlerLimits {
            max_request_bytes: self.protocol.max_request_bytes,
            read_timeout: self.protocol.read_timeout.0,
            max_streams_per_peer: self.protocol.max_concurrent_streams_per_peer,
            max_streams: self.protocol.max_concurrent_streams,
            approval_timeout: self.approval_timeout.0,
            attest_timeout: self.zkp.attest_timeout.0,
        }
    }

    /// The safety gate: the highest level allowed (moderate when unparsable; validation
    /// reports it) and the bypass list.
    pub fn safety_gate(&self) -> (lango_sandbox::SafetyLevel, Vec<String>) {
        (
            lango_sandbox::SafetyLevel::parse(&self.max_safety_level)
                .unwrap_or(lango_sandbox::SafetyLevel::Moderate),
            self.allowed_tools.clone(),
        )
    }

    /// The owner-approval policy these keys describe.
    pub fn approval_policy(&self) -> crate::a2a::ApprovalPolicy {
        match self.approval_policy {
            ApprovalPolicyKind::Deny => crate::a2a::ApprovalPolicy::Deny,
            ApprovalPolicyKind::AllowListed => crate::a2a::ApprovalPolicy::AllowListed(
                self.approved_tools.iter().cloned().collect(),
            ),
            // The caller installs an InteractiveApproval; this is what stands in its place.
            ApprovalPolicyKind::Interactive => crate::a2a::ApprovalPolicy::Deny,
        }
    }

    /// The session-store settings these keys describe.
    pub fn session_config(&self) -> SessionConfig {
        SessionConfig {
            session_token_ttl: self.session_token_ttl.0,
            session_max_failures: self.session_max_failures,
            session_revoke_cooldown: self.session_revoke_cooldown.0,
            invalidation_history_limit: self.invalidation_history_limit,
        }
    }

    /// The firewall settings these keys describe.
    pub fn firewall_config(&self) -> FirewallConfig {
        FirewallConfig {
            // A non-canonical spelling of a valid DID matches that DID (issue 17).
            rules: self
                .firewall_rules
                .iter()
                .map(|r| crate::rules::canonical_rule(r).unwrap_or_else(|_| r.clone()))
                .collect(),
            min_trust_score: self.min_trust_score,
            meta_rate_limit: self.meta_rate_limit,
            global_rate_limit: self.global_rate_limit,
            attest_rate_limit: self.zkp.attest_rate_limit,
        }
    }

    /// Checks every key; `prefix` is the section's path (`p2p`).
    pub fn validate(&self, prefix: &str) -> Result<(), Vec<String>> {
        let mut p = Vec::new();
        for (i, rule) in self.firewall_rules.iter().enumerate() {
            // An invalid DID names no peer that could ever authenticate (issue 17).
            if !rule.peer_did.is_empty()
                && let Err(e) = crate::rules::canonical_peer(&rule.peer_did)
            {
                p.push(format!("{prefix}.firewallRules[{i}].peerDid: {e}"));
            }
            for problem in firewall::rule_problems(rule) {
                match problem.field() {
                    Some(field) => {
                        p.push(format!("{prefix}.firewallRules[{i}].{field}: {problem}"))
                    }
                    None => p.push(format!("{prefix}.firewallRules[{i}]: {problem}")),
                }
            }
        }
        if let Err(e) = self
            .owner_protection
            .validate(&format!("{prefix}.ownerProtection"))
        {
            p.extend(e);
        }
        for (key, list) in [
            ("listenAddrs", &self.listen_addrs),
            ("bootstrapPeers", &self.bootstrap_peers),
        ] {
            if list.len() > MAX_ADDRS {
                p.push(format!("{prefix}.{key}: at most {MAX_ADDRS} addresses"));
            }
            for a in list {
                if let Err(e) = a.parse::<libp2p::Multiaddr>() {
                    p.push(format!("{prefix}.{key}: {a:?} is not a multiaddr: {e}"));
                }
            }
        }
        for a in &self.bootstrap_peers {
            if let Ok(m) = a.parse::<libp2p::Multiaddr>()
                && crate::peer_id_of_addr(&m).is_none()
            {
                p.push(format!(
                    "{prefix}.bootstrapPeers: {a:?} must end in /p2p/<peer-id> so the peer can be pinned"
                ));
            }
        }
        if self.max_peers == 0 || self.max_peers > 10_000 {
            p.push(format!("{prefix}.maxPeers: must be between 1 and 10000"));
        }
        if !(self.min_trust_score > 0.0 && self.min_trust_score <= 1.0) {
            p.push(format!(
                "{prefix}.minTrustScore: must be in (0, 1], got {}",
                self.min_trust_score
            ));
        }
        for d in &self.revoked_dids {
            if let Err(e) = crate::identity::canonical_did(d) {
                p.push(format!("{prefix}.revokedDids: {e}"));
            }
        }
        if self.discovery.max_known_peers == 0 || self.discovery.max_known_peers > 100_000 {
            p.push(format!(
                "{prefix}.discovery.maxKnownPeers: must be between 1 and 100000"
            ));
        }
        if self.discovery.card_ttl.0 < Duration::from_secs(1) {
            p.push(format!("{prefix}.discovery.cardTtl: must be at least 1s"));
        }
        for d in &self.zkp.trusted_issuers {
            if let Err(e) = crate::identity::canonical_did(d) {
                p.push(format!("{prefix}.zkp.trustedIssuers: {e}"));
            }
        }
        if self.zkp.max_credential_age.0.is_zero() {
            p.push(format!(
                "{prefix}.zkp.maxCredentialAge: must be greater than 0"
            ));
        }
        if self.zkp.attest_timeout.0.is_zero() {
            p.push(format!(
                "{prefix}.zkp.attestTimeout: must be greater than 0"
            ));
        }
        if !matches!(
            self.zkp.proving_scheme.as_str(),
            "halo2" | "plonk" | "groth16"
        ) {
            p.push(format!(
                "invalid {prefix}.zkp.provingScheme: {:?} (must be halo2, plonk or groth16)",
                self.zkp.proving_scheme
            ));
        }
        if !matches!(self.zkp.srs_mode.as_str(), "file" | "unsafe") {
            p.push(format!(
                "{prefix}.zkp.srsMode: {:?} is not file or unsafe",
                self.zkp.srs_mode
            ));
        }
        if !self.zkp.srs_path.is_empty() && !self.zkp.srs_path.contains("{k}") {
            p.push(format!(
                "{prefix}.zkp.srsPath: must contain {{k}} (one file per circuit size), got {:?}",
                self.zkp.srs_path
            ));
        }
        if self.zkp.max_proof_bytes < 1024 || self.zkp.max_proof_bytes > 1 << 20 {
            p.push(format!(
                "{prefix}.zkp.maxProofBytes: must be between 1024 and 1048576"
            ));
        }
        let window = self.zkp.attest_window_past_secs + self.zkp.attest_window_future_secs;
        if window == 0 || window > crate::a2a::MAX_ATTEST_WINDOW_SECS {
            p.push(format!(
                "{prefix}.zkp.attestWindowPastSecs + attestWindowFutureSecs: must be between 1 and {}",
                crate::a2a::MAX_ATTEST_WINDOW_SECS
            ));
        }
        if let Err(e) = self.handshake_config().validate(prefix) {
            p.extend(e);
        }
        if let Err(e) = self.session_config().validate(prefix) {
            p.extend(e);
        }
        if let Err(e) = self
            .tool_isolation
            .validate(&format!("{prefix}.toolIsolation"))
        {
            p.extend(e);
        }
        let pr = &self.protocol;
        if !(1024..=(16 << 20)).contains(&pr.max_request_bytes) {
            p.push(format!(
                "{prefix}.protocol.maxRequestBytes: between 1024 and 16777216"
            ));
        }
        if !(1024..=(64 << 20)).contains(&pr.max_response_bytes) {
            p.push(format!(
                "{prefix}.protocol.maxResponseBytes: between 1024 and 67108864"
            ));
        }
        if pr.read_timeout.0 < Duration::from_secs(1)
            || pr.read_timeout.0 > Duration::from_secs(300)
        {
            p.push(format!(
                "{prefix}.protocol.readTimeout: between 1s and 5m0s"
            ));
        }
        if pr.max_concurrent_streams_per_peer == 0
            || pr.max_concurrent_streams == 0
            || pr.max_concurrent_streams_per_peer > pr.max_concurrent_streams
            || pr.max_concurrent_streams > 4096
        {
            p.push(format!(
                "{prefix}.protocol: maxConcurrentStreamsPerPeer must be between 1 and maxConcurrentStreams (at most 4096)"
            ));
        }
        if self.approval_timeout.0 < Duration::from_secs(1)
            || self.approval_timeout.0 > Duration::from_secs(3600)
        {
            p.push(format!("{prefix}.approvalTimeout: between 1s and 1h0m0s"));
        }
        if let Err(e) = lango_sandbox::SafetyLevel::parse(&self.max_safety_level) {
            p.push(format!("{prefix}.maxSafetyLevel: {e}"));
        }
        for t in &self.approved_tools {
            if !lango_sandbox::protocol::valid_tool_name(t) {
                p.push(format!("{prefix}.approvedTools: {t:?} is not a tool name"));
            }
        }
        if self.nonce_cache_capacity != 0
            && !(1_000..=10_000_000).contains(&self.nonce_cache_capacity)
        {
            p.push(format!(
                "{prefix}.nonceCacheCapacity: between 1000 and 10000000"
            ));
        }
        for d in &self.handshake_allowed_dids {
            if let Err(e) = crate::identity::canonical_did(d) {
                p.push(format!("{prefix}.handshakeAllowedDids: {e}"));
            }
        }
        if self.gossip_interval.0 > Duration::from_secs(3600) {
            p.push(format!("{prefix}.gossipInterval: at most 1h"));
        }
        if self.effective_gossip_interval() * 2 > self.discovery.card_ttl.0 {
            p.push(format!(
                "{prefix}.discovery.cardTtl ({}) must be at least twice {prefix}.gossipInterval ({}), \
                 or peers' cards expire between publications",
                self.discovery.card_ttl,
                GoDuration(self.effective_gossip_interval())
            ));
        }
        if p.is_empty() { Ok(()) } else { Err(p) }
    }
}

impl A2aConfig {
    /// Checks the card fields against the limits receivers apply (§2.4.4).
    pub fn validate(&self, prefix: &str) -> Result<(), Vec<String>> {
        let mut p = Vec::new();
        if self.agent_name.is_empty() || self.agent_name.len() > 256 {
            p.push(format!("{prefix}.agentName: 1 to 256 bytes"));
        }
        if self.description.len() > 4096 {
            p.push(format!("{prefix}.description: at most 4096 bytes"));
        }
        if self.capabilities.len() > 64 {
            p.push(format!("{prefix}.capabilities: at most 64 entries"));
        }
        if self
            .capabilities
            .iter()
            .any(|c| c.is_empty() || c.len() > 128)
        {
            p.push(format!("{prefix}.capabilities: each 1 to 128 bytes"));
        }
        if p.is_empty() { Ok(()) } else { Err(p) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_durations_parse() {
        let cases = [
            ("30s", 30.0),
            ("1h30m", 5400.0),
            ("1.5h", 5400.0),
            ("300ms", 0.3),
            ("0", 0.0),
            ("2h45m10.5s", 9910.5),
            ("1us", 1e-6),
            ("10ns", 1e-8),
        ];
        for (s, secs) in cases {
            let d = GoDuration::parse(s).unwrap();
            assert!((d.0.as_secs_f64() - secs).abs() < 1e-9, "{s}");
        }
        for bad in ["", "abc", "10", "-5s", "1x", "5s3", ".s", "1..2s"] {
            assert!(GoDuration::parse(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn go_durations_print_like_go() {
        for (d, s) in [
            (Duration::ZERO, "0s"),
            (Duration::from_secs(30), "30s"),
            (Duration::from_secs(300), "5m0s"),
            (Duration::from_secs(5400), "1h30m0s"),
            (Duration::from_millis(300), "300ms"),
            (Duration::from_millis(1500), "1.5s"),
            (Duration::from_secs(24 * 3600), "24h0m0s"),
        ] {
            assert_eq!(GoDuration(d).to_string(), s);
            assert_eq!(GoDuration::parse(s).unwrap().0, d);
        }
    }

    #[test]
    fn durations_accept_nanoseconds_and_strings() {
        #[derive(Deserialize)]
        struct T {
            d: GoDuration,
        }
        let t: T = serde_json::from_str(r#"{"d": 30000000000}"#).unwrap();
        assert_eq!(t.d.0, Duration::from_secs(30));
        let t: T = serde_json::from_str(r#"{"d": "24h"}"#).unwrap();
        assert_eq!(t.d.0, Duration::from_secs(86400));
        assert!(serde_json::from_str::<T>(r#"{"d": "abc"}"#).is_err());
        assert!(serde_json::from_str::<T>(r#"{"d": -1}"#).is_err());
    }

    /// A Go configuration's `p2p.zkp` section loads (spec: accept all Go keys); what this
    /// node cannot honour is a configuration error with its path.
    #[test]
    fn go_zkp_keys_are_accepted_and_bad_values_named() {
        let z: ZkpConfig = serde_json::from_str(
            r#"{"proofCacheDir": "~/.lango/p2p/zkp-cache", "provingScheme": "plonk",
                "srsMode": "unsafe", "srsPath": "", "maxCredentialAge": "1h30m"}"#,
        )
        .unwrap();
        assert_eq!(z.max_credential_age.0, Duration::from_secs(5400));
        // §5.4.10: the maxCredentialAge forms, and an unparsable one is an error (Go ignored it).
        for (text, secs) in [
            ("24h", 86_400),
            ("90m", 5_400),
            ("1h30m", 5_400),
            ("45s", 45),
        ] {
            let z: ZkpConfig =
                serde_json::from_str(&format!(r#"{{"maxCredentialAge": "{text}"}}"#)).unwrap();
            assert_eq!(z.max_credential_age.0, Duration::from_secs(secs), "{text}");
        }
        for bad in ["1 day", "", "24", "-1h"] {
            let e =
                serde_json::from_str::<ZkpConfig>(&format!(r#"{{"maxCredentialAge": "{bad}"}}"#));
            assert!(e.is_err(), "{bad:?} was accepted");
        }
        let c = P2pConfig {
            zkp: z,
            ..P2pConfig::default()
        };
        c.validate("p2p").unwrap();
        let c = P2pConfig {
            zkp: ZkpConfig {
                proving_scheme: "stark".into(),
                srs_mode: "random".into(),
                srs_path: "/var/lib/srs.bin".into(),
                attest_window_past_secs: 4000,
                ..ZkpConfig::default()
            },
            ..P2pConfig::default()
        };
        let problems = c.validate("p2p").unwrap_err().join("\n");
        for want in [
            "invalid p2p.zkp.provingScheme: \"stark\"",
            "p2p.zkp.srsMode: \"random\"",
            "p2p.zkp.srsPath: must contain {k}",
            "attestWindowFutureSecs: must be between 1 and 3600",
        ] {
            assert!(problems.contains(want), "{want} missing from:\n{problems}");
        }
    }

    #[test]
    fn defaults_validate() {
        P2pConfig::default().validate("p2p").unwrap();
        A2aConfig::default().validate("a2a").unwrap();
    }

    #[test]
    fn bad_values_are_reported_with_paths() {
        let c = P2pConfig {
            bootstrap_peers: vec!["/ip4/127.0.0.1/tcp/1".into(), "nope".into()],
            min_trust_score: 0.0,
            zkp: ZkpConfig {
                max_credential_age: GoDuration(Duration::ZERO),
                ..ZkpConfig::default()
            },
            revoked_dids: vec!["did:lango:ZZ".into()],
            ..P2pConfig::default()
        };
        let mut c = c;
        c.zkp.trusted_issuers = vec!["did:lango:issuer".into()];
        let problems = c.validate("p2p").unwrap_err().join("\n");
        for needle in [
            "p2p.zkp.trustedIssuers",
            "p2p.bootstrapPeers: \"/ip4/127.0.0.1/tcp/1\" must end in /p2p/",
            "p2p.bootstrapPeers: \"nope\" is not a multiaddr",
            "p2p.minTrustScore",
            "p2p.zkp.maxCredentialAge: must be greater than 0",
            "p2p.revokedDids",
        ] {
            assert!(
                problems.contains(needle),
                "{needle} missing in:\n{problems}"
            );
        }
    }
}
