//! The firewall in front of remote tool calls (protocol spec §3.4, R-4.1..R-4.11).
//!
//! A [`Rule`] names a peer (`"*"` or an exact DID), an action (`allow` or `deny`), the tools
//! it covers and a rate limit. The default policy is deny-all: a call passes only when at
//! least one `allow` rule matches it and no `deny` rule does. [`Firewall::check`] runs the
//! steps of in order and answers with a [`Denial`] whose text is exactly the one peers
//! see (Appendix A):
//!
//! 1. the exact-DID rate limiter of the peer, if a rule created one
//!    (`rate limit exceeded for peer <did>`);
//! 2. the `"*"` rule's rate limit, as a bucket of its own **per peer** (R-4.10), then the
//!    optional bucket shared by all peers, `p2p.globalRateLimit`
//!    (`global rate limit exceeded`); tokens taken by an earlier step are not refunded;
//! 3. the reputation gate: a peer with a record whose score is below the threshold is
//!    refused, even at score 0, and a failed lookup refuses too (R-4.8 hardening);
//! 4. the ACL walk, in insertion order, where any matching `deny` wins;
//! 5. no matching `allow`: refused.
//!
//! The meta requests (`agent_card`, `capability_query`, `price_query`) draw from a separate
//! per-peer bucket of `p2p.metaRateLimit` per minute ([`Firewall::check_meta`], R-4.11);
//! [`Firewall::allowed_tools`] answers "which of these tools would this peer pass the ACL for"
//! without taking any token, for `capability_query`.
//!
//! Rules are validated before they take effect ([`validate_rule`]): an `allow` rule for every
//! peer and every tool is refused with the reference's message, and so are the silent
//! fail-open forms the reference loads (unknown actions, empty DIDs, negative limits, malformed
//! tool patterns).
//!
//! # Buckets
//! A bucket of rate N holds at most N tokens, starts full, and refills continuously at N tokens
//! per 60 s. Per-peer buckets created for the `"*"` rule and for the meta limit are kept in maps
//! bounded by [`MAX_TRACKED_PEERS`]; a bucket idle for [`IDLE_EVICTION`] is dropped (it would be
//! full again by then, so eviction is invisible to the peer).
//!
//! # Threads and time
//! [`Firewall`] is `Send + Sync`: every method takes `&self` and the state sits behind one
//! internal mutex, held only for the few map operations of a check (never across a reputation
//! lookup). Time comes from an injectable [`Clock`]; tests drive a [`ManualClock`].
//!
//! This module depends on nothing else in the crate, so the fuzz workspace compiles it alone.

use std::{
    collections::HashMap,
    fmt,
    sync::{Arc, Mutex, MutexGuard},
    time::{Duration, Instant},
};

use serde::{Deserialize, Serialize};

/// Action string of an allowing rule.
pub const ACTION_ALLOW: &str = "allow";
/// Action string of a denying rule.
pub const ACTION_DENY: &str = "deny";
/// The peer pattern that matches every peer.
pub const ANY_PEER: &str = "*";
/// The message of, exactly as the reference words it.
pub const PERMISSIVE_RULE_MESSAGE: &str =
    "overly permissive rule: allow all peers with all tools is prohibited";
/// Threshold used when the configured one is ≤ 0 or not a number.
pub const DEFAULT_MIN_TRUST_SCORE: f64 = 0.3;
/// Default of `p2p.zkp.attestRateLimit`: response attestations per minute and peer.
pub const DEFAULT_ATTEST_RATE_LIMIT: u32 = 30;

/// Default of `p2p.metaRateLimit`: meta requests per minute and peer.
pub const DEFAULT_META_RATE_LIMIT: u32 = 60;
/// A per-peer bucket unused for this long is dropped.
pub const IDLE_EVICTION: Duration = Duration::from_secs(600);
/// Most peers with a bucket of their own in each of the wildcard and meta maps. When a map is
/// full, idle buckets are dropped first, then the least recently used one.
pub const MAX_TRACKED_PEERS: usize = 10_000;
/// The refill period of every bucket: N tokens per minute.
const REFILL_PERIOD: Duration = Duration::from_secs(60);

/// One firewall rule, as written in `p2p.firewallRules[]` and in `firewall list --json`
/// . The action stays a string so that a wrong one (`Allow`, `permit`) is reported by
/// [`validate_rule`] with its value instead of being lost to a parse error.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct Rule {
    /// `"*"` for every peer, otherwise the exact (case-sensitive) DID of one peer.
    pub peer_did: String,
    /// Exactly `allow` or `deny`.
    pub action: String,
    /// Tool patterns; unset or empty means every tool (serialised as `null` when unset).
    pub tools: Option<Vec<String>>,
    /// Calls per minute for this rule's peer key; 0 means no limiter.
    pub rate_limit: i64,
}

impl Rule {
    /// An `allow` rule for `peer_did` and `tools` (empty: every tool), without rate limit.
    pub fn allow<I, S>(peer_did: impl Into<String>, tools: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        Self::new(peer_did, ACTION_ALLOW, tools)
    }

    /// A `deny` rule for `peer_did` and `tools` (empty: every tool), without rate limit.
    pub fn deny<I, S>(peer_did: impl Into<String>, tools: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        Self::new(peer_did, ACTION_DENY, tools)
    }

    fn new<I, S>(peer_did: impl Into<String>, action: &str, tools: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let tools: Vec<String> = tools.into_iter().map(Into::into).collect();
        Self {
            peer_did: peer_did.into(),
            action: action.into(),
            tools: if tools.is_empty() { None } else { Some(tools) },
            rate_limit: 0,
        }
    }

    /// The same rule with `rateLimit` set to `per_minute`.
    pub fn with_rate_limit(mut self, per_minute: i64) -> Self {
        self.rate_limit = per_minute;
        self
    }

    /// The parsed action, if it is exactly `allow` or `deny`.
    pub fn parsed_action(&self) -> Option<Action> {
        match self.action.as_str() {
            ACTION_ALLOW => Some(Action::Allow),
            ACTION_DENY => Some(Action::Deny),
            _ => None,
        }
    }

    /// Whether this rule's peer pattern covers `peer_did`.
    pub fn matches_peer(&self, peer_did: &str) -> bool {
        self.peer_did == ANY_PEER || (!self.peer_did.is_empty() && self.peer_did == peer_did)
    }

    /// Whether this rule's tool list covers `tool`: an unset or empty list covers all.
    pub fn matches_tool(&self, tool: &str) -> bool {
        match &self.tools {
            None => true,
            Some(list) if list.is_empty() => true,
            Some(list) => list.iter().any(|p| tool_matches(p, tool)),
        }
    }

    /// Whether the tool list covers every tool: unset, empty, or containing `"*"`.
    fn covers_all_tools(&self) -> bool {
        match &self.tools {
            None => true,
            Some(list) => list.is_empty() || list.iter().any(|t| t == "*"),
        }
    }
}

/// The action of a valid rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// The rule allows matching calls (unless a deny rule also matches).
    Allow,
    /// The rule refuses matching calls, whatever allow rules say.
    Deny,
}

/// Whether the tool pattern `pattern` matches the tool name `tool`.
///
/// `"*"` matches every tool; a pattern ending in `*` matches names starting with the text before
/// that star (`search*` matches `search` and `search_web`); anything else must be equal,
/// case-sensitively. A star elsewhere is a literal character here; [`validate_rule`] refuses such
/// patterns in rules.
pub fn tool_matches(pattern: &str, tool: &str) -> bool {
    if pattern == "*" {
        return true;
    }
    match pattern.strip_suffix('*') {
        Some(prefix) => tool.starts_with(prefix),
        None => pattern == tool,
    }
}

/// Why a rule is refused (R-4.6 and its Rust additions).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum RuleError {
    /// `allow` for `"*"` with every tool; displays [`PERMISSIVE_RULE_MESSAGE`].
    OverlyPermissive,
    /// The action is not exactly `allow` or `deny`.
    InvalidAction(String),
    /// `peerDid` is empty.
    EmptyPeerDid,
    /// `rateLimit` is negative.
    NegativeRateLimit(i64),
    /// A tool pattern is the empty string.
    EmptyToolPattern,
    /// A tool pattern has more than one star, or a star that is not its last character.
    InvalidToolPattern(String),
}

impl RuleError {
    /// The rule field the problem is about (`None`: the rule as a whole).
    pub fn field(&self) -> Option<&'static str> {
        match self {
            Self::OverlyPermissive => None,
            Self::InvalidAction(_) => Some("action"),
            Self::EmptyPeerDid => Some("peerDid"),
            Self::NegativeRateLimit(_) => Some("rateLimit"),
            Self::EmptyToolPattern | Self::InvalidToolPattern(_) => Some("tools"),
        }
    }
}

impl fmt::Display for RuleError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::OverlyPermissive => f.write_str(PERMISSIVE_RULE_MESSAGE),
            Self::InvalidAction(a) => {
                write!(
                    f,
                    "invalid action {a:?}: must be exactly \"allow\" or \"deny\""
                )
            }
            Self::EmptyPeerDid => {
                f.write_str("peerDid must not be empty (use \"*\" for every peer)")
            }
            Self::NegativeRateLimit(n) => write!(f, "rateLimit must not be negative, got {n}"),
            Self::EmptyToolPattern => f.write_str("tool patterns must not be empty"),
            Self::InvalidToolPattern(p) => write!(
                f,
                "invalid tool pattern {p:?}: \"*\" may appear only once, as the last character"
            ),
        }
    }
}

impl std::error::Error for RuleError {}

/// Every problem of `rule`, in field order, the permissive-rule check last.
pub fn rule_problems(rule: &Rule) -> Vec<RuleError> {
    let mut problems = Vec::new();
    if rule.peer_did.is_empty() {
        problems.push(RuleError::EmptyPeerDid);
    }
    let action = rule.parsed_action();
    if action.is_none() {
        problems.push(RuleError::InvalidAction(rule.action.clone()));
    }
    for pattern in rule.tools.iter().flatten() {
        if pattern.is_empty() {
            problems.push(RuleError::EmptyToolPattern);
        } else if pattern.find('*').is_some_and(|i| i + 1 != pattern.len()) {
            problems.push(RuleError::InvalidToolPattern(pattern.clone()));
        }
    }
    if rule.rate_limit < 0 {
        problems.push(RuleError::NegativeRateLimit(rule.rate_limit));
    }
    if action == Some(Action::Allow) && rule.peer_did == ANY_PEER && rule.covers_all_tools() {
        problems.push(RuleError::OverlyPermissive);
    }
    problems
}

/// Checks `rule`: the first problem found, the permissive-rule check first.
pub fn validate_rule(rule: &Rule) -> Result<(), RuleError> {
    let mut problems = rule_problems(rule);
    if problems.is_empty() {
        return Ok(());
    }
    if let Some(i) = problems
        .iter()
        .position(|p| *p == RuleError::OverlyPermissive)
    {
        return Err(problems.swap_remove(i));
    }
    Err(problems.swap_remove(0))
}

/// A rule refused when a firewall is built, with its position in the list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvalidRule {
    /// Index of the rule in the configured list.
    pub index: usize,
    /// What is wrong with it.
    pub error: RuleError,
}

impl fmt::Display for InvalidRule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "firewall rule {}: {}", self.index, self.error)
    }
}

impl std::error::Error for InvalidRule {}

/// What kind of check refused a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DenialKind {
    /// A per-peer bucket (exact-DID rule, `"*"` rule or meta limit) is empty.
    PeerRateLimit,
    /// The bucket shared by all peers (`p2p.globalRateLimit`) is empty.
    GlobalRateLimit,
    /// The peer's reputation is below the threshold.
    Reputation,
    /// The reputation lookup failed (fail-closed).
    ReputationCheckFailed,
    /// A deny rule matched.
    DenyRule,
    /// No allow rule matched (default deny).
    NoAllowRule,
}

/// A refusal, carrying the exact text sent to the peer with status `denied` (Appendix A).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Denial {
    kind: DenialKind,
    message: String,
}

impl Denial {
    fn new(kind: DenialKind, message: String) -> Self {
        Self { kind, message }
    }

    fn peer_rate(peer_did: &str) -> Self {
        Self::new(
            DenialKind::PeerRateLimit,
            format!("rate limit exceeded for peer {peer_did}"),
        )
    }

    /// Which check refused.
    pub fn kind(&self) -> DenialKind {
        self.kind
    }

    /// The peer-visible error text.
    pub fn message(&self) -> &str {
        &self.message
    }
}

impl fmt::Display for Denial {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Denial {}

/// The reputation seam of the gate: a peer's trust score, `None` when the peer has no
/// record (a new peer).
pub trait ReputationCheck: Send + Sync {
    /// The lookup's error; it is logged, and the request refused.
    type Error: fmt::Display;

    /// The trust score of `peer_did`, `None` without a record.
    fn trust_score(&self, peer_did: &str) -> Result<Option<f64>, Self::Error>;
}

/// A lookup already made: an async caller fetches the score first and passes the answer in.
impl<E: fmt::Display + Send + Sync> ReputationCheck for Result<Option<f64>, E> {
    type Error = String;

    fn trust_score(&self, _peer_did: &str) -> Result<Option<f64>, String> {
        match self {
            Ok(score) => Ok(*score),
            Err(e) => Err(e.to_string()),
        }
    }
}

/// Object-safe form of [`ReputationCheck`], so a firewall can hold any of them.
trait DynReputation: Send + Sync {
    fn lookup(&self, peer_did: &str) -> Result<Option<f64>, String>;
}

impl<R: ReputationCheck> DynReputation for R {
    fn lookup(&self, peer_did: &str) -> Result<Option<f64>, String> {
        self.trust_score(peer_did).map_err(|e| e.to_string())
    }
}

/// Source of the current time for the buckets.
pub trait Clock: Send + Sync {
    /// The current instant.
    fn now(&self) -> Instant;
}

/// The monotonic system clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Instant {
        Instant::now()
    }
}

/// A clock that moves only when told to, for tests and simulations.
#[derive(Debug)]
pub struct ManualClock {
    now: Mutex<Instant>,
}

impl ManualClock {
    /// A clock standing at the current instant.
    pub fn new() -> Self {
        Self {
            now: Mutex::new(Instant::now()),
        }
    }

    /// Moves the clock forward by `by`.
    pub fn advance(&self, by: Duration) {
        let mut now = lock(&self.now);
        *now += by;
    }
}

impl Default for ManualClock {
    fn default() -> Self {
        Self::new()
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Instant {
        *lock(&self.now)
    }
}

/// A mutex guard even after a panic elsewhere: the guarded state stays consistent because
/// every update is a single assignment or map operation.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Settings of a [`Firewall`], usually built from `p2p` configuration keys.
#[derive(Debug, Clone, PartialEq)]
pub struct FirewallConfig {
    /// `p2p.firewallRules`, in order.
    pub rules: Vec<Rule>,
    /// `p2p.minTrustScore`; ≤ 0 or not a number means [`DEFAULT_MIN_TRUST_SCORE`].
    pub min_trust_score: f64,
    /// `p2p.metaRateLimit`: meta requests per minute and peer; 0 turns the limit off.
    pub meta_rate_limit: u32,
    /// `p2p.globalRateLimit`: tool calls per minute over all peers; 0 (default) is off.
    pub global_rate_limit: u32,
    /// `p2p.zkp.attestRateLimit`: response attestations (proofs) per minute and peer; 0 turns
    /// the limit off ([`Firewall::check_attest`]).
    pub attest_rate_limit: u32,
}

impl Default for FirewallConfig {
    fn default() -> Self {
        Self {
            rules: Vec::new(),
            min_trust_score: DEFAULT_MIN_TRUST_SCORE,
            meta_rate_limit: DEFAULT_META_RATE_LIMIT,
            global_rate_limit: 0,
            attest_rate_limit: DEFAULT_ATTEST_RATE_LIMIT,
        }
    }
}

/// The bucket key of a remote peer ID, next to the DID keys (`peer:<peer-id>`; never a DID,
/// so no rule names it).
pub fn source_key(remote_peer: &str) -> String {
    format!("peer:{remote_peer}")
}

/// A token bucket of capacity N refilled at N tokens per minute.
#[derive(Debug, Clone)]
struct Bucket {
    capacity: f64,
    tokens: f64,
    last: Instant,
}

impl Bucket {
    fn full(per_minute: f64, now: Instant) -> Self {
        Self {
            capacity: per_minute,
            tokens: per_minute,
            last: now,
        }
    }

    /// Refills for the time since the last use, then takes one token if there is one.
    fn take(&mut self, now: Instant) -> bool {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        let refill = elapsed * self.capacity / REFILL_PERIOD.as_secs_f64();
        self.tokens = (self.tokens + refill).min(self.capacity);
        if now > self.last {
            self.last = now;
        }
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// Buckets created on demand, one per peer, bounded and evicted when idle.
#[derive(Debug, Default)]
struct PeerBuckets {
    buckets: HashMap<String, Bucket>,
    last_sweep: Option<Instant>,
}

impl PeerBuckets {
    /// Takes a token from `peer_did`'s bucket of rate `per_minute`, creating it full.
    fn take(&mut self, peer_did: &str, per_minute: f64, now: Instant) -> bool {
        self.sweep(now, false);
        if let Some(bucket) = self.buckets.get_mut(peer_did) {
            return bucket.take(now);
        }
        if self.buckets.len() >= MAX_TRACKED_PEERS {
            self.sweep(now, true);
        }
        if self.buckets.len() >= MAX_TRACKED_PEERS
            && let Some(oldest) = self
                .buckets
                .iter()
                .min_by_key(|(_, b)| b.last)
                .map(|(k, _)| k.clone())
        {
            self.buckets.remove(&oldest);
        }
        let mut bucket = Bucket::full(per_minute, now);
        let ok = bucket.take(now);
        self.buckets.insert(peer_did.to_owned(), bucket);
        ok
    }

    /// Drops buckets idle for [`IDLE_EVICTION`]; at most once a minute unless `force`.
    fn sweep(&mut self, now: Instant, force: bool) {
        let due = self
            .last_sweep
            .is_none_or(|t| now.saturating_duration_since(t) >= REFILL_PERIOD);
        if !(force || due) {
            return;
        }
        self.last_sweep = Some(now);
        self.buckets
            .retain(|_, b| now.saturating_duration_since(b.last) < IDLE_EVICTION);
    }

    fn clear(&mut self) {
        self.buckets.clear();
    }

    fn len(&self) -> usize {
        self.buckets.len()
    }
}

/// The mutable state behind the firewall's mutex.
#[derive(Debug, Default)]
struct State {
    rules: Vec<Rule>,
    /// Limiters of exact-DID rules, keyed by DID.
    exact: HashMap<String, Bucket>,
    /// Rate of the latest `"*"` rule with a limit, if any.
    wildcard_rate: Option<f64>,
    /// That rate's buckets, one per peer.
    wildcard: PeerBuckets,
    /// Bucket shared by every peer (`p2p.globalRateLimit`).
    global: Option<Bucket>,
    /// Meta-request buckets.
    meta: PeerBuckets,
    /// Attestation buckets (ZK spec §3.14.3, W-9).
    attest: PeerBuckets,
}

impl State {
    /// Appends a validated rule and (re)creates its limiter.
    fn push(&mut self, rule: Rule, now: Instant) {
        if rule.rate_limit > 0 {
            let rate = rule.rate_limit as f64;
            if rule.peer_did == ANY_PEER {
                self.wildcard_rate = Some(rate);
                self.wildcard.clear();
            } else {
                self.exact
                    .insert(rule.peer_did.clone(), Bucket::full(rate, now));
            }
        }
        self.rules.push(rule);
    }

    /// The ACL walk of steps 4 and 5.
    fn acl(&self, peer_did: &str, tool: &str) -> Result<(), Denial> {
        let mut allowed = false;
        for rule in &self.rules {
            if !rule.matches_peer(peer_did) || !rule.matches_tool(tool) {
                continue;
            }
            match rule.parsed_action() {
                Some(Action::Deny) => {
                    return Err(Denial::new(
                        DenialKind::DenyRule,
                        format!("query denied by firewall rule for peer {peer_did}, tool {tool}"),
                    ));
                }
                Some(Action::Allow) => allowed = true,
                None => {}
            }
        }
        if allowed {
            Ok(())
        } else {
            Err(Denial::new(
                DenialKind::NoAllowRule,
                format!("query denied: no matching allow rule for peer {peer_did}, tool {tool}"),
            ))
        }
    }
}

/// The firewall of one node. See the module documentation for the order of checks.
pub struct Firewall {
    state: Mutex<State>,
    clock: Arc<dyn Clock>,
    reputation: Option<Arc<dyn DynReputation>>,
    threshold: f64,
    meta_rate: Option<f64>,
    attest_rate: Option<f64>,
}

impl fmt::Debug for Firewall {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = lock(&self.state);
        f.debug_struct("Firewall")
            .field("rules", &state.rules)
            .field("threshold", &self.threshold)
            .field("meta_rate", &self.meta_rate)
            .field("global", &state.global.as_ref().map(|b| b.capacity))
            .field("reputation_gate", &self.reputation.is_some())
            .finish_non_exhaustive()
    }
}

impl Firewall {
    /// A firewall with the system clock and no reputation gate. Every rule is validated;
    /// the first invalid one is refused (R-4.6 hardening: a permissive rule stops start-up).
    pub fn new(config: FirewallConfig) -> Result<Self, InvalidRule> {
        Self::with_clock(config, Arc::new(SystemClock))
    }

    /// As [`Firewall::new`], reading time from `clock`.
    pub fn with_clock(config: FirewallConfig, clock: Arc<dyn Clock>) -> Result<Self, InvalidRule> {
        for (index, rule) in config.rules.iter().enumerate() {
            validate_rule(rule).map_err(|error| InvalidRule { index, error })?;
        }
        let now = clock.now();
        let mut state = State {
            global: (config.global_rate_limit > 0)
                .then(|| Bucket::full(f64::from(config.global_rate_limit), now)),
            ..State::default()
        };
        for rule in config.rules {
            state.push(rule, now);
        }
        let threshold = if config.min_trust_score > 0.0 {
            config.min_trust_score
        } else {
            DEFAULT_MIN_TRUST_SCORE
        };
        Ok(Self {
            state: Mutex::new(state),
            clock,
            reputation: None,
            threshold,
            meta_rate: (config.meta_rate_limit > 0).then(|| f64::from(config.meta_rate_limit)),
            attest_rate: (config.attest_rate_limit > 0)
                .then(|| f64::from(config.attest_rate_limit)),
        })
    }

    /// Installs the reputation gate used by [`Firewall::check`] and
    /// [`Firewall::check_price_query`]. Without one the gate is skipped.
    pub fn with_reputation<R: ReputationCheck + 'static>(mut self, checker: R) -> Self {
        self.reputation = Some(Arc::new(checker));
        self
    }

    /// Whether a rule names `peer_did` exactly (not through `"*"`): such a DID is
    /// established on this node, and its downgrade pin is never evicted by a newcomer.
    pub fn names_peer(&self, peer_did: &str) -> bool {
        lock(&self.state)
            .rules
            .iter()
            .any(|r| r.peer_did != ANY_PEER && r.peer_did == peer_did)
    }

    /// The reputation threshold in effect.
    pub fn min_trust_score(&self) -> f64 {
        self.threshold
    }

    /// Checks a tool call (`tool_invoke`, `tool_invoke_paid`) of `peer_did` for `tool` with the
    /// installed reputation gate: steps 1 to 5.
    pub fn check(&self, peer_did: &str, tool: &str) -> Result<(), Denial> {
        self.take_call_tokens(peer_did)?;
        if let Some(rep) = &self.reputation {
            self.gate(peer_did, rep.lookup(peer_did))?;
        }
        self.acl(peer_did, tool)
    }

    /// As [`Firewall::check`], with `reputation` as the gate instead of the installed one (an
    /// async caller may pass the result of a lookup it has already made).
    pub fn check_with<R: ReputationCheck>(
        &self,
        peer_did: &str,
        tool: &str,
        reputation: &R,
    ) -> Result<(), Denial> {
        self.take_call_tokens(peer_did)?;
        self.gate(
            peer_did,
            reputation.trust_score(peer_did).map_err(|e| e.to_string()),
        )?;
        self.acl(peer_did, tool)
    }

    /// Takes one token from the `"*"` limit's bucket of `source`, the remote peer ID a
    /// request came from (see [`source_key`]). The per-DID buckets alone let one peer ID
    /// minting fresh DIDs get a full bucket per DID (issue 17); every tool call takes a token
    /// from its DID's bucket and from its peer ID's.
    pub fn check_source(&self, source: &str) -> Result<(), Denial> {
        let now = self.clock.now();
        let mut state = lock(&self.state);
        if let Some(rate) = state.wildcard_rate
            && !state.wildcard.take(source, rate, now)
        {
            return Err(Denial::peer_rate(source));
        }
        Ok(())
    }

    /// Checks a `price_query`: a token from the meta bucket, the reputation gate
    /// and the ACL for `tool`. Tool-call buckets are not touched.
    pub fn check_price_query(&self, peer_did: &str, tool: &str) -> Result<(), Denial> {
        self.check_meta(peer_did)?;
        if let Some(rep) = &self.reputation {
            self.gate(peer_did, rep.lookup(peer_did))?;
        }
        self.acl(peer_did, tool)
    }

    /// Takes one token from `peer_did`'s meta bucket (`agent_card`, `capability_query`,
    /// `price_query`; ). A peer out of tokens gets `rate limit exceeded for peer <did>`.
    pub fn check_meta(&self, peer_did: &str) -> Result<(), Denial> {
        let Some(rate) = self.meta_rate else {
            return Ok(());
        };
        let now = self.clock.now();
        if lock(&self.state).meta.take(peer_did, rate, now) {
            Ok(())
        } else {
            Err(Denial::peer_rate(peer_did))
        }
    }

    /// Takes one token from `peer_did`'s attestation bucket. A proof costs about a second of
    /// CPU, so one peer calling cheap tools in a loop could otherwise keep the prover pool
    /// busy for everyone (W-9); a peer out of tokens gets its results without attestation.
    pub fn check_attest(&self, peer_did: &str) -> Result<(), Denial> {
        let Some(rate) = self.attest_rate else {
            return Ok(());
        };
        let now = self.clock.now();
        if lock(&self.state).attest.take(peer_did, rate, now) {
            Ok(())
        } else {
            Err(Denial::peer_rate(peer_did))
        }
    }

    /// The ACL alone (R-4.4 steps 4 and 5): no token is taken and no reputation consulted.
    pub fn acl(&self, peer_did: &str, tool: &str) -> Result<(), Denial> {
        lock(&self.state).acl(peer_did, tool)
    }

    /// The names among `tools` that `peer_did` would pass the ACL for, in their order, for
    /// `capability_query` filtering. Takes no token.
    pub fn allowed_tools<I, S>(&self, peer_did: &str, tools: I) -> Vec<S>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let state = lock(&self.state);
        tools
            .into_iter()
            .filter(|t| state.acl(peer_did, t.as_ref()).is_ok())
            .collect()
    }

    /// Validates and appends a rule, creating or resetting its limiter; it applies to the next
    /// check.
    pub fn add_rule(&self, rule: Rule) -> Result<(), RuleError> {
        validate_rule(&rule)?;
        let now = self.clock.now();
        tracing::info!(
            event = "firewall_rule_added",
            peer_did = %rule.peer_did,
            action = %rule.action,
            rate_limit = rule.rate_limit,
            "firewall rule added"
        );
        lock(&self.state).push(rule, now);
        Ok(())
    }

    /// Removes every rule whose `peerDid` equals `peer_did` exactly (`"*"` removes only the
    /// wildcard rules) and that key's limiter; returns how many rules were removed.
    pub fn remove_rules(&self, peer_did: &str) -> usize {
        let mut state = lock(&self.state);
        let before = state.rules.len();
        state.rules.retain(|r| r.peer_did != peer_did);
        let removed = before - state.rules.len();
        if peer_did == ANY_PEER {
            state.wildcard_rate = None;
            state.wildcard.clear();
        } else {
            state.exact.remove(peer_did);
        }
        drop(state);
        tracing::info!(
            event = "firewall_rule_removed",
            peer_did = %peer_did,
            removed,
            "firewall rules removed"
        );
        removed
    }

    /// An independent copy of the rules, in order.
    pub fn rules(&self) -> Vec<Rule> {
        lock(&self.state).rules.clone()
    }

    /// How many per-peer buckets are held for the wildcard limit and the meta limit.
    pub fn tracked_peers(&self) -> (usize, usize) {
        let state = lock(&self.state);
        (state.wildcard.len(), state.meta.len())
    }

    /// steps 1 and 2: exact-DID limiter, the `"*"` limit's bucket for this peer, then the
    /// global bucket. A token taken by an earlier step is kept.
    fn take_call_tokens(&self, peer_did: &str) -> Result<(), Denial> {
        let now = self.clock.now();
        let mut state = lock(&self.state);
        if let Some(bucket) = state.exact.get_mut(peer_did)
            && !bucket.take(now)
        {
            return Err(Denial::peer_rate(peer_did));
        }
        if let Some(rate) = state.wildcard_rate
            && !state.wildcard.take(peer_did, rate, now)
        {
            return Err(Denial::peer_rate(peer_did));
        }
        if let Some(global) = state.global.as_mut()
            && !global.take(now)
        {
            return Err(Denial::new(
                DenialKind::GlobalRateLimit,
                "global rate limit exceeded".to_owned(),
            ));
        }
        Ok(())
    }

    /// step 3 with the hardening of.
    fn gate(&self, peer_did: &str, looked_up: Result<Option<f64>, String>) -> Result<(), Denial> {
        match looked_up {
            Ok(None) => Ok(()),
            // A score that is not a number is refused too.
            Ok(Some(score)) if score.is_nan() || score < self.threshold => Err(Denial::new(
                DenialKind::Reputation,
                format!(
                    "peer {peer_did} reputation {score:.2} below minimum {:.2}",
                    self.threshold
                ),
            )),
            Ok(Some(_)) => Ok(()),
            Err(e) => {
                tracing::warn!(
                    event = "firewall_reputation_error",
                    peer_did = %peer_did,
                    error = %e,
                    "reputation check failed; request refused"
                );
                Err(Denial::new(
                    DenialKind::ReputationCheckFailed,
                    "reputation check failed".to_owned(),
                ))
            }
        }
    }
}
