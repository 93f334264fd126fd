//! The A2A request handler, server and client (protocol spec §3.3, §3.10).
//!
//! Every request is bounded ([`protocol::read_request`]), authenticated by its session token
//! bound to the libp2p peer that opened the stream, then dispatched. `tool_invoke` and
//! `tool_invoke_paid` pass, in this order: tool-name checks, the firewall, the worker-registry
//! check (after the firewall, so a peer without an allow rule learns nothing), the payment
//! gate, the params check, owner approval (bounded; a timeout is a denial), and execution in
//! the sandbox executor only. Every outcome is recorded for consecutive-failure tracking and
//! reputation; every result and error passes the sanitizer and the owner shield before it
//! leaves; an attestation is attached when an attester is configured.

use std::{
    collections::{HashMap, HashSet},
    sync::{Arc, Mutex},
    time::Duration,
};

use async_trait::async_trait;
use futures::{AsyncRead, AsyncWrite, StreamExt};
use lango_sandbox::{ErrorKind, Executor, ToolRegistry, protocol::valid_tool_name};
use lango_session::{SecurityEventHandler, SessionStore};
use libp2p::{PeerId, StreamProtocol};
use serde_json::{Map, Value, json};

use crate::{
    Error, Result,
    auth::PeerAuth,
    firewall::Firewall,
    node::NodeHandle,
    protocol::{
        self, Attestation, MAX_TOKEN_BYTES, PROTOCOL, ReadError, Request, Response, ResponseError,
        Status,
    },
    reputation::{Outcome, Reputation, Standing},
    sanitize::ResponseFilter,
};

/// Peer-visible texts of Appendix A used here.
pub mod text {
    /// Bad or expired session.
    pub const INVALID_SESSION: &str = "invalid or expired session token";
    /// Missing tool name.
    pub const MISSING_TOOL: &str = "missing toolName in payload";
    /// Tool name syntax (Rust).
    pub const INVALID_TOOL: &str = "invalid toolName";
    /// Non-object params (Rust).
    pub const PARAMS_NOT_OBJECT: &str = "params must be an object";
    /// Not a worker tool (Rust).
    pub const NOT_AVAILABLE: &str = "tool not available to remote peers";
    /// No approval function.
    pub const NO_APPROVAL: &str = "no approval handler configured for remote tool invocation";
    /// Approval false or timed out.
    pub const DENIED_BY_OWNER: &str = "tool invocation denied by owner";
    /// No sandbox executor.
    pub const NO_EXECUTOR: &str =
        "tool execution refused: no sandbox executor configured for remote peer requests";
    /// No card.
    pub const NO_CARD: &str = "agent card not available";
    /// Safety gate (HEAD).
    pub const SAFETY_BLOCKED: &str = "tool blocked by P2P safety level policy";
    /// Invalid payment.
    pub const INVALID_PAYMENT: &str = "invalid payment authorization";
}

/// Owner approval of one remote call.
#[async_trait]
pub trait ToolApproval: Send + Sync {
    /// `Ok(true)` approves, `Ok(false)` denies, `Err` is an approval failure.
    async fn approve(
        &self,
        peer_did: &str,
        tool: &str,
        params: &Map<String, Value>,
    ) -> std::result::Result<bool, String>;
}

/// `p2p.approvalPolicy`: `deny` refuses everything, `allow-listed` approves the tools named
/// in `p2p.approvedTools`.
#[derive(Debug, Clone)]
pub enum ApprovalPolicy {
    /// Nothing is approved (the default).
    Deny,
    /// These tools are approved for every peer the firewall lets through.
    AllowListed(HashSet<String>),
}

#[async_trait]
impl ToolApproval for ApprovalPolicy {
    async fn approve(
        &self,
        _peer_did: &str,
        tool: &str,
        _params: &Map<String, Value>,
    ) -> std::result::Result<bool, String> {
        Ok(match self {
            Self::Deny => false,
            Self::AllowListed(tools) => tools.contains(tool),
        })
    }
}

/// One call waiting for the owner's decision.
#[derive(Debug, Clone, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PendingApproval {
    /// Handle for `approve` / `deny`.
    pub id: u64,
    /// The calling peer.
    pub peer_did: String,
    /// The tool.
    pub tool: String,
    /// The params, as JSON text cut to 512 bytes.
    pub params: String,
    /// Seconds since the call arrived.
    pub waiting_secs: u64,
}

struct Waiting {
    info: PendingApproval,
    since: std::time::Instant,
    answer: tokio::sync::oneshot::Sender<bool>,
}

/// `p2p.approvalPolicy = "interactive"`: each call waits (bounded by `p2p.approvalTimeout`)
/// until the owner approves or denies it through the admin socket (`p2p approvals`). A
/// timeout, a full queue or a dropped request is a denial.
#[derive(Default)]
pub struct InteractiveApproval {
    queue: Mutex<(u64, HashMap<u64, Waiting>)>,
}

/// Most calls waiting at once; more are denied.
pub const MAX_PENDING_APPROVALS: usize = 100;

/// How many streams a client tries for one request the peer refused before reading.
const STREAM_ATTEMPTS: u32 = 4;

impl InteractiveApproval {
    /// An empty queue.
    pub fn new() -> Self {
        Self::default()
    }

    /// The calls waiting, oldest first.
    pub fn pending(&self) -> Vec<PendingApproval> {
        let Ok(q) = self.queue.lock() else {
            return Vec::new();
        };
        let mut v: Vec<PendingApproval> =
            q.1.values()
                .map(|w| PendingApproval {
                    waiting_secs: w.since.elapsed().as_secs(),
                    ..w.info.clone()
                })
                .collect();
        v.sort_by_key(|p| p.id);
        v
    }

    /// Answers call `id`; `false` when no such call is waiting.
    pub fn decide(&self, id: u64, approve: bool) -> bool {
        let waiting = self.queue.lock().ok().and_then(|mut q| q.1.remove(&id));
        match waiting {
            Some(w) => w.answer.send(approve).is_ok(),
            None => false,
        }
    }
}

/// Removes a waiting call when its request ends (answered, timed out or dropped).
struct Unqueue<'a> {
    owner: &'a InteractiveApproval,
    id: u64,
}

impl Drop for Unqueue<'_> {
    fn drop(&mut self) {
        if let Ok(mut q) = self.owner.queue.lock() {
            q.1.remove(&self.id);
        }
    }
}

#[async_trait]
impl ToolApproval for InteractiveApproval {
    async fn approve(
        &self,
        peer_did: &str,
        tool: &str,
        params: &Map<String, Value>,
    ) -> std::result::Result<bool, String> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let id = {
            let Ok(mut q) = self.queue.lock() else {
                return Ok(false);
            };
            if q.1.len() >= MAX_PENDING_APPROVALS {
                return Ok(false);
            }
            q.0 += 1;
            let id = q.0;
            let text = serde_json::to_string(params).unwrap_or_default();
            q.1.insert(
                id,
                Waiting {
                    info: PendingApproval {
                        id,
                        peer_did: peer_did.to_owned(),
                        tool: tool.to_owned(),
                        params: lango_sandbox::protocol::truncate_utf8(&text, 512).to_owned(),
                        waiting_secs: 0,
                    },
                    since: std::time::Instant::now(),
                    answer: tx,
                },
            );
            id
        };
        let _unqueue = Unqueue { owner: self, id };
        tracing::info!(
            event = "approval_requested",
            id,
            peer_did,
            tool,
            "remote tool call awaits approval (p2p approvals)"
        );
        Ok(rx.await.unwrap_or(false))
    }
}

/// The payment gate of paid calls (a seam: no payment implementation in this project).
#[derive(Debug, Clone, PartialEq)]
pub enum PaymentDecision {
    /// The tool is free.
    Free,
    /// The payment authorization verified.
    Verified,
    /// Payment is needed: the quote.
    Required(Map<String, Value>),
    /// The authorization is invalid.
    Invalid,
}

/// Decides whether a paid call may proceed.
#[async_trait]
pub trait PaymentGate: Send + Sync {
    /// Checks `payload` (with its `paymentAuth`) for `tool`.
    async fn check(
        &self,
        peer_did: &str,
        tool: &str,
        payload: &Map<String, Value>,
    ) -> std::result::Result<PaymentDecision, String>;
}

/// What a response attestation is bound to (kms-and-zk spec §3.11.2).
#[derive(Debug, Clone)]
pub struct AttestRequest<'a> {
    /// The request's ID.
    pub request_id: &'a str,
    /// The requester's DID (its session's).
    pub requester_did: &'a str,
    /// The request type.
    pub request_type: &'a str,
    /// The tool called.
    pub tool_name: &'a str,
    /// The exact bytes of the `result` value as it will be sent.
    pub result_bytes: &'a [u8],
    /// The requester's `zkAttest` (nonce and window), when it sent one.
    pub zk_attest: Option<ZkAttest>,
}

/// A requester's `"zkAttest": {"nonce": <b64 32 bytes>, "minTs": u64, "maxTs": u64}`: the
/// responder must prove a time inside this window, bound to this nonce.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ZkAttest {
    /// 32 random bytes chosen by the requester.
    pub nonce: [u8; 32],
    /// The window's start (requester's clock).
    pub min_ts: u64,
    /// The window's end.
    pub max_ts: u64,
}

/// Longest attestation window a requester may ask for.
pub const MAX_ATTEST_WINDOW_SECS: u64 = 3600;

impl ZkAttest {
    /// Reads `zkAttest` from a request payload; `None` when absent or malformed (a malformed
    /// one is treated as absent: the response goes out without a requester-bound proof).
    pub fn from_payload(payload: Option<&Map<String, Value>>) -> Option<Self> {
        use base64::Engine;
        let z = payload?.get("zkAttest")?.as_object()?;
        let nonce = base64::engine::general_purpose::STANDARD
            .decode(z.get("nonce")?.as_str()?)
            .ok()?
            .try_into()
            .ok()?;
        let (min_ts, max_ts) = (z.get("minTs")?.as_u64()?, z.get("maxTs")?.as_u64()?);
        (min_ts <= max_ts && max_ts - min_ts <= MAX_ATTEST_WINDOW_SECS).then_some(Self {
            nonce,
            min_ts,
            max_ts,
        })
    }

    /// The payload entry for this request.
    pub fn to_value(&self) -> Value {
        use base64::Engine;
        json!({
            "nonce": base64::engine::general_purpose::STANDARD.encode(self.nonce),
            "minTs": self.min_ts,
            "maxTs": self.max_ts,
        })
    }
}

/// Attests successful responses (`lango_p2p::zk::ZkAttester` with Halo2 proofs).
#[async_trait]
pub trait Attester: Send + Sync {
    /// An attestation of the sanitized result for `request`, or `None`.
    async fn attest(
        &self,
        request: AttestRequest<'_>,
    ) -> std::result::Result<Option<Attestation>, String>;
}

/// How long a response waits for its attestation before it goes out without one, by
/// default (`p2p.zkp.attestTimeout`).
pub const ATTEST_DEADLINE: Duration = Duration::from_secs(5);

/// Limits of the handler (`p2p.protocol.*`, `p2p.approvalTimeout`).
#[derive(Debug, Clone)]
pub struct HandlerLimits {
    /// Largest request.
    pub max_request_bytes: usize,
    /// Deadline for reading a request.
    pub read_timeout: Duration,
    /// Requests in progress per remote peer.
    pub max_streams_per_peer: usize,
    /// Requests in progress in total.
    pub max_streams: usize,
    /// Longest wait for owner approval.
    pub approval_timeout: Duration,
    /// Longest wait for a response attestation before the result goes out without one.
    pub attest_timeout: Duration,
}

impl Default for HandlerLimits {
    fn default() -> Self {
        Self {
            max_request_bytes: protocol::DEFAULT_MAX_REQUEST_BYTES,
            read_timeout: protocol::DEFAULT_READ_TIMEOUT,
            max_streams_per_peer: 4,
            max_streams: 64,
            approval_timeout: Duration::from_secs(120),
            attest_timeout: ATTEST_DEADLINE,
        }
    }
}

/// What the handler needs.
pub struct HandlerParts {
    /// Live sessions.
    pub sessions: SessionStore,
    /// Failure tracking that invalidates sessions.
    pub events: SecurityEventHandler,
    /// Reputation (recording and the firewall's gate).
    pub reputation: Option<Reputation>,
    /// The firewall.
    pub firewall: Arc<Firewall>,
    /// Sanitizer and owner shield.
    pub filter: Arc<ResponseFilter>,
    /// The tools peers may call.
    pub registry: Arc<ToolRegistry>,
    /// The sandbox executor; `None` refuses every tool call.
    pub executor: Option<Arc<dyn Executor>>,
    /// Owner approval; `None` refuses every tool call.
    pub approval: Option<Arc<dyn ToolApproval>>,
    /// The payment gate of paid calls.
    pub payment: Option<Arc<dyn PaymentGate>>,
    /// Revoked DIDs: checked on every request, so a session that outlived its DID's
    /// revocation (a lagged broadcast, a handshake parked across the revoke) serves nothing.
    pub revocations: Option<crate::revocation::Revocations>,
    /// Response attestation.
    pub attester: Option<Arc<dyn Attester>>,
    /// This agent's card.
    pub card: Option<Value>,
    /// The safety gate: the highest level a remote call may have, and the tools that
    /// bypass it.
    pub safety: (lango_sandbox::SafetyLevel, HashSet<String>),
    /// Limits.
    pub limits: HandlerLimits,
}

/// The A2A handler. Cheap to clone.
#[derive(Clone)]
pub struct Handler {
    parts: Arc<HandlerParts>,
    inflight: Arc<Mutex<(usize, HashMap<String, usize>)>>,
}

/// A slot in the concurrency limits, released on drop.
struct Slot {
    inflight: Arc<Mutex<(usize, HashMap<String, usize>)>>,
    peer: String,
}

impl Drop for Slot {
    fn drop(&mut self) {
        if let Ok(mut g) = self.inflight.lock() {
            g.0 = g.0.saturating_sub(1);
            if let Some(n) = g.1.get_mut(&self.peer) {
                *n = n.saturating_sub(1);
                if *n == 0 {
                    g.1.remove(&self.peer);
                }
            }
        }
    }
}

/// Who sent a request: the session's DID and the name the firewall, approval and payment
/// know the caller by.
struct Caller<'a> {
    /// The session's DID (claimed only, when not authenticated).
    did: &'a str,
    /// `did` when authenticated, otherwise [`unauthenticated_subject`] of the stream's peer.
    subject: &'a str,
    /// Whether the session authenticated its DID.
    authenticated: bool,
    /// The bucket key of the stream's peer ID ([`crate::firewall::source_key`]): rate limits
    /// hold per peer ID as well as per DID, so fresh DIDs buy no fresh tokens.
    source: &'a str,
}

/// Prefix of the name under which an unauthenticated session's requests are checked.
pub const UNAUTHENTICATED_PREFIX: &str = "unauthenticated:";

/// The name the firewall, approval and payment know an unauthenticated session from
/// `remote_peer` by: not a DID, so only `*` rules match it, and per peer ID, so each such
/// peer gets its own `*` rate-limit bucket.
pub fn unauthenticated_subject(remote_peer: &str) -> String {
    format!("{UNAUTHENTICATED_PREFIX}{remote_peer}")
}

fn payload_str<'a>(payload: &'a Map<String, Value>, key: &str) -> Option<&'a str> {
    payload
        .get(key)
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
}

impl Handler {
    /// Over `parts`.
    pub fn new(parts: HandlerParts) -> Self {
        Self {
            parts: Arc::new(parts),
            inflight: Arc::new(Mutex::new((0, HashMap::new()))),
        }
    }

    fn slot(&self, peer: &str) -> Option<Slot> {
        let mut g = self.inflight.lock().ok()?;
        let per_peer = g.1.get(peer).copied().unwrap_or(0);
        if g.0 >= self.parts.limits.max_streams
            || per_peer >= self.parts.limits.max_streams_per_peer
        {
            return None;
        }
        g.0 += 1;
        *g.1.entry(peer.to_owned()).or_insert(0) += 1;
        Some(Slot {
            inflight: self.inflight.clone(),
            peer: peer.to_owned(),
        })
    }

    /// Serves one stream from `remote_peer`: reads the request (bounded), answers, closes.
    /// Over the concurrency limits the stream is dropped (reset) without an answer.
    pub async fn serve<S: AsyncRead + AsyncWrite + Unpin>(&self, remote_peer: &str, mut stream: S) {
        let Some(slot) = self.slot(remote_peer) else {
            tracing::warn!(
                event = "a2a_stream_refused",
                peer = remote_peer,
                "too many A2A requests in progress"
            );
            return;
        };
        let limits = &self.parts.limits;
        let response = match protocol::read_request(
            &mut stream,
            limits.max_request_bytes,
            limits.read_timeout,
        )
        .await
        {
            Ok(req) => {
                let whole = limits.approval_timeout + Duration::from_secs(40);
                match tokio::time::timeout(whole, self.handle(remote_peer, &req)).await {
                    Ok(r) => r,
                    Err(_) => Response::failure(&req.request_id, Status::Error, "request timeout"),
                }
            }
            Err(e @ (ReadError::TooLarge | ReadError::Timeout)) => {
                Response::failure("", Status::Error, e.to_string())
            }
            Err(e) => Response::failure(
                "",
                Status::Error,
                self.parts.filter.filter_error(&e.to_string()),
            ),
        };
        // The work is done: free the slot before the (bounded) write, so a client that sends
        // its next request as soon as it reads this response is not refused by the limit.
        drop(slot);
        if let Err(e) = protocol::write_response(&mut stream, &response).await {
            tracing::debug!(peer = remote_peer, error = %e, "could not write the A2A response");
        }
    }

    /// Answers one decoded request from the libp2p peer `remote_peer`.
    pub async fn handle(&self, remote_peer: &str, req: &Request) -> Response {
        let id = req.request_id.as_str();
        let p = &self.parts;
        if req.session_token.len() > MAX_TOKEN_BYTES {
            return Response::failure(id, Status::Denied, text::INVALID_SESSION);
        }
        let session = match p.sessions.resolve(&req.session_token, remote_peer) {
            Ok(s) => s,
            Err(_) => return Response::failure(id, Status::Denied, text::INVALID_SESSION),
        };
        let peer_did = session.peer_did.as_str();
        if p.revocations
            .as_ref()
            .is_some_and(|r| r.is_revoked(peer_did))
        {
            tracing::warn!(
                event = "a2a_revoked_session",
                peer = remote_peer,
                peer_did,
                "request on the session of a revoked DID; session ended"
            );
            p.sessions
                .invalidate(peer_did, lango_session::InvalidationReason::SecurityEvent);
            return Response::failure(id, Status::Denied, text::INVALID_SESSION);
        }
        // X-3 (issue 17): the DID of an unauthenticated session is an unverified claim. The
        // firewall, approval and payment see it as an anonymous peer named after its libp2p
        // peer ID, which no DID rule names (only `*` rules apply), and no reputation is read
        // or written for the claimed DID.
        let anonymous;
        let source = crate::firewall::source_key(remote_peer);
        let caller = if session.authenticated {
            Caller {
                did: peer_did,
                subject: peer_did,
                authenticated: true,
                source: &source,
            }
        } else {
            anonymous = unauthenticated_subject(remote_peer);
            Caller {
                did: peer_did,
                subject: &anonymous,
                authenticated: false,
                source: &source,
            }
        };

        let subject = caller.subject;
        let meta = || {
            p.firewall
                .check_meta(subject)
                .and_then(|()| p.firewall.check_meta(&source))
        };
        let empty = Map::new();
        let payload = req.payload.as_ref().unwrap_or(&empty);
        let response = match req.kind.as_str() {
            "tool_invoke" => self.invoke(id, &caller, payload, false).await,
            "tool_invoke_paid" => self.invoke(id, &caller, payload, true).await,
            "price_query" => match p.firewall.check_meta(&source) {
                Err(d) => Response::failure(id, Status::Denied, d.message()),
                Ok(()) => self.price(id, subject, payload).await,
            },
            "agent_card" => match meta() {
                Err(d) => Response::failure(id, Status::Denied, d.message()),
                Ok(()) => match &p.card {
                    Some(card) => self.filtered_ok(id, card.clone()),
                    None => Response::failure(id, Status::Error, text::NO_CARD),
                },
            },
            "capability_query" => match meta() {
                Err(d) => Response::failure(id, Status::Denied, d.message()),
                Ok(()) => {
                    let filter = payload_str(payload, "filter").unwrap_or("");
                    let names: Vec<String> = p
                        .registry
                        .worker_safe()
                        .map(|t| t.name.clone())
                        .filter(|n| n.starts_with(filter) && self.passes_safety(n))
                        .collect();
                    let allowed = p.firewall.allowed_tools(subject, names);
                    self.filtered_ok(id, json!({ "capabilities": allowed }))
                }
            },
            other => Response::failure(
                id,
                Status::Error,
                p.filter
                    .filter_error(&format!("unknown request type: {other}")),
            ),
        };
        tracing::info!(
            event = "a2a_request",
            peer_did,
            authenticated = caller.authenticated,
            kind = %req.kind,
            status = ?response.status,
            "A2A request answered"
        );
        response
    }

    fn filtered_ok(&self, id: &str, v: Value) -> Response {
        let filtered = self.parts.filter.filter_value(v);
        filtered.report.log();
        match filtered.value {
            Value::Object(m) => Response::ok(id, m),
            other => {
                let mut m = Map::new();
                m.insert("result".into(), other);
                Response::ok(id, m)
            }
        }
    }

    /// The safety gate (runs before payment and approval).
    fn passes_safety(&self, tool: &str) -> bool {
        let (max, bypass) = &self.parts.safety;
        bypass.contains(tool) || self.parts.registry.safety(tool) <= *max
    }

    /// The reputation lookup the firewall's gate takes.
    async fn standing(&self, peer_did: &str) -> std::result::Result<Option<f64>, String> {
        match &self.parts.reputation {
            None => Ok(None),
            Some(r) => match r.standing(peer_did).await {
                Ok(Standing::New) => Ok(None),
                Ok(Standing::Trusted(s) | Standing::Untrusted(s)) => Ok(Some(s)),
                Err(e) => Err(e.to_string()),
            },
        }
    }

    /// The payload's tool name, or the peer-visible error text.
    fn tool_name(payload: &Map<String, Value>) -> std::result::Result<&str, &'static str> {
        let Some(tool) = payload_str(payload, "toolName") else {
            return Err(text::MISSING_TOOL);
        };
        if !valid_tool_name(tool) {
            return Err(text::INVALID_TOOL);
        }
        Ok(tool)
    }

    async fn price(&self, id: &str, peer_did: &str, payload: &Map<String, Value>) -> Response {
        let p = &self.parts;
        let tool = match Self::tool_name(payload) {
            Ok(t) => t,
            Err(e) => return Response::failure(id, Status::Error, e),
        };
        if let Err(d) = p.firewall.check_price_query(peer_did, tool) {
            return Response::failure(id, Status::Denied, d.message());
        }
        let free = json!({"toolName": tool, "isFree": true});
        match &p.payment {
            None => self.filtered_ok(id, free),
            Some(gate) => match gate.check(peer_did, tool, &Map::new()).await {
                Err(e) => Response::failure(
                    id,
                    Status::Error,
                    p.filter.filter_error(&format!("price query {tool}: {e}")),
                ),
                Ok(PaymentDecision::Required(quote)) => self.filtered_ok(id, Value::Object(quote)),
                Ok(_) => self.filtered_ok(id, free),
            },
        }
    }

    async fn invoke(
        &self,
        id: &str,
        caller: &Caller<'_>,
        payload: &Map<String, Value>,
        paid: bool,
    ) -> Response {
        let p = &self.parts;
        // Session-level failure tracking stays with the session's DID (it ends this session);
        // every other decision is about `subject`.
        let (peer_did, subject) = (caller.did, caller.subject);
        let tool = match Self::tool_name(payload) {
            Ok(t) => t,
            Err(e) => return Response::failure(id, Status::Error, e),
        };
        let standing = if caller.authenticated {
            self.standing(subject).await
        } else {
            Ok(None)
        };
        if let Err(d) = p
            .firewall
            .check_source(caller.source)
            .and_then(|()| p.firewall.check_with(subject, tool, &standing))
        {
            return Response::failure(id, Status::Denied, d.message());
        }
        if !p.registry.is_worker_safe(tool) {
            return Response::failure(id, Status::Denied, text::NOT_AVAILABLE);
        }
        if !self.passes_safety(tool) {
            return Response::failure(id, Status::Denied, text::SAFETY_BLOCKED);
        }
        if paid && let Some(gate) = &p.payment {
            match gate.check(subject, tool, payload).await {
                Err(e) => {
                    return Response::failure(
                        id,
                        Status::Error,
                        p.filter.filter_error(&format!("payment check {tool}: {e}")),
                    );
                }
                Ok(PaymentDecision::Required(quote)) => {
                    let mut r = self.filtered_ok(id, Value::Object(quote));
                    r.status = Status::PaymentRequired;
                    return r;
                }
                Ok(PaymentDecision::Invalid) => {
                    return Response::failure(id, Status::Error, text::INVALID_PAYMENT);
                }
                Ok(PaymentDecision::Free | PaymentDecision::Verified) => {}
            }
        }
        let params = match payload.get("params") {
            None | Some(Value::Null) => Map::new(),
            Some(Value::Object(m)) => m.clone(),
            Some(_) => return Response::failure(id, Status::Error, text::PARAMS_NOT_OBJECT),
        };
        let Some(approval) = &p.approval else {
            return Response::failure(id, Status::Denied, text::NO_APPROVAL);
        };
        match tokio::time::timeout(
            p.limits.approval_timeout,
            approval.approve(subject, tool, &params),
        )
        .await
        {
            Ok(Ok(true)) => {}
            Ok(Ok(false)) | Err(_) => {
                return Response::failure(id, Status::Denied, text::DENIED_BY_OWNER);
            }
            Ok(Err(e)) => {
                return Response::failure(
                    id,
                    Status::Error,
                    p.filter.filter_error(&format!("approval check: {e}")),
                );
            }
        }
        let Some(executor) = &p.executor else {
            return Response::failure(id, Status::Denied, text::NO_EXECUTOR);
        };
        match executor.execute(tool, params).await {
            Err(e) => {
                tracing::warn!(event = "a2a_tool_failed", peer_did, tool, error = %e, "remote tool call failed");
                let _ = p.events.record_failure(peer_did);
                let outcome = if e.kind() == ErrorKind::Timeout {
                    Outcome::Timeout
                } else {
                    Outcome::Failure
                };
                self.record(caller, outcome).await;
                Response::failure(id, Status::Error, p.filter.filter_error(&e.peer_message()))
            }
            Ok(out) => {
                p.events.record_success(peer_did);
                self.record(caller, Outcome::Success).await;
                let mut response = self.filtered_ok(id, Value::Object(out));
                let attest = match (&p.attester, &response.result) {
                    (Some(attester), Some(result)) => match p
                        .firewall
                        .check_attest(subject)
                        .and_then(|()| p.firewall.check_attest(caller.source))
                    {
                        Ok(()) => Some((attester, result)),
                        Err(d) => {
                            tracing::warn!(event = "attestation_rate_limited", peer_did,
                                reason = %d, "response sent without attestation");
                            None
                        }
                    },
                    _ => None,
                };
                if let Some((attester, result)) = attest {
                    // The result is serialised once more exactly as `write_response` will
                    // embed it (compact serde_json), so the digest covers the sent bytes.
                    let bytes = serde_json::to_vec(result).unwrap_or_default();
                    let request = AttestRequest {
                        request_id: id,
                        requester_did: peer_did,
                        request_type: if paid {
                            "tool_invoke_paid"
                        } else {
                            "tool_invoke"
                        },
                        tool_name: tool,
                        result_bytes: &bytes,
                        zk_attest: ZkAttest::from_payload(Some(payload)),
                    };
                    match tokio::time::timeout(p.limits.attest_timeout, attester.attest(request))
                        .await
                    {
                        // Rust responders never send the deprecated `attestationProof`.
                        Ok(Ok(Some(a))) => response.attestation = Some(a),
                        Ok(Ok(None)) => {}
                        Ok(Err(e)) => tracing::warn!(event = "attestation_failed", error = %e,
                            "response sent without attestation"),
                        Err(_) => tracing::warn!(
                            event = "attestation_timeout",
                            "attestation took too long; response sent without it"
                        ),
                    }
                }
                response
            }
        }
    }

    /// Records `outcome` in the reputation of an authenticated caller's DID. An
    /// unauthenticated caller's claimed DID gets nothing: its failures would otherwise bring
    /// the real owner's score down for good (X-3, issue 17).
    async fn record(&self, caller: &Caller<'_>, outcome: Outcome) {
        if !caller.authenticated {
            return;
        }
        let peer_did = caller.did;
        if let Some(r) = &self.parts.reputation
            && let Err(e) = r.record(peer_did, outcome).await
        {
            tracing::warn!(peer_did, error = %e, "could not record reputation");
        }
    }
}

/// Serves `/lango/a2a/1.0.0` on a running node with `handler` until dropped.
pub struct Server {
    task: tokio::task::JoinHandle<()>,
}

impl Server {
    /// Registers the protocol and starts accepting streams.
    pub fn start(node: &NodeHandle, handler: Handler) -> Result<Self> {
        let mut incoming = node
            .streams()
            .accept(StreamProtocol::new(PROTOCOL))
            .map_err(|e| Error::Network(format!("register {PROTOCOL}: {e}")))?;
        let task = tokio::spawn(async move {
            while let Some((peer, stream)) = incoming.next().await {
                let handler = handler.clone();
                tokio::spawn(async move {
                    handler.serve(&peer.to_base58(), stream).await;
                });
            }
        });
        Ok(Self { task })
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Why a client call failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// No session could be established (handshake failed or was refused).
    #[error("{0}")]
    Session(Error),
    /// The peer ended the session (invalidated, revoked or expired on its side) and refused a
    /// new handshake, typically during its cool-down.
    #[error(
        "{peer_did} ended the session and refused a new handshake (it may be in its cool-down after an invalidation or revocation): {reason}"
    )]
    SessionEnded {
        /// The peer.
        peer_did: String,
        /// The handshake error.
        reason: String,
    },
    /// The stream could not be opened.
    #[error("open stream to {peer}: {reason}")]
    Open {
        /// The peer.
        peer: String,
        /// Why.
        reason: String,
    },
    /// Sending or receiving failed.
    #[error("{0}")]
    Exchange(protocol::ResponseError),
    /// `p2p.zkp.requireAttestation` is on and the response's attestation is missing or
    /// does not verify for this request.
    #[error("attestation required: {0}")]
    Attestation(String),
    /// The peer answered with a non-`ok` status.
    #[error("remote tool {tool} error: {error}")]
    Remote {
        /// The tool (or request type).
        tool: String,
        /// The peer's status.
        status: Status,
        /// The peer's error text, or `unknown error`.
        error: String,
    },
}

/// Calls tools on other nodes: a session (handshake on demand), one stream per request, the
/// response checked for size, deadline and request ID.
#[derive(Clone)]
pub struct Client {
    node: NodeHandle,
    auth: PeerAuth,
    max_response_bytes: usize,
    timeout: Duration,
    attestation: Option<AttestationPolicy>,
}

/// How a client treats response attestations of tool calls.
#[derive(Clone)]
pub struct AttestationPolicy {
    /// The proof system.
    pub service: Arc<lango_zkp::ProverService>,
    /// `p2p.zkp.requireAttestation`: a missing or failing attestation fails the call
    /// (otherwise it is logged and the result returned, as Go does).
    pub require: bool,
    /// The window asked for: seconds before and after now (`attestWindowPastSecs`,
    /// `attestWindowFutureSecs`).
    pub window: (u64, u64),
}

impl Client {
    /// Over a running node and its authentication service.
    pub fn new(node: NodeHandle, auth: PeerAuth, timeout: Duration) -> Self {
        Self {
            node,
            auth,
            max_response_bytes: protocol::DEFAULT_MAX_RESPONSE_BYTES,
            timeout,
            attestation: None,
        }
    }

    /// Asks every tool call for a response attestation bound to a fresh nonce and a window
    /// on this node's clock, and verifies it under `policy`.
    #[must_use]
    pub fn with_attestation(mut self, policy: AttestationPolicy) -> Self {
        self.attestation = Some(policy);
        self
    }

    /// Sends a request of `kind` with `payload` to `peer` and returns the raw response. When
    /// the peer no longer knows the session (it expired or was invalidated there), the local
    /// copy is dropped and one fresh handshake is tried; the peer may refuse it (cool-down).
    pub async fn request(
        &self,
        peer: PeerId,
        kind: &str,
        payload: Option<Map<String, Value>>,
    ) -> std::result::Result<Response, ClientError> {
        self.request_from(peer, kind, payload).await.map(|(r, _)| r)
    }

    /// [`Self::request`], also returning the responder's DID (from the session).
    async fn request_from(
        &self,
        peer: PeerId,
        kind: &str,
        payload: Option<Map<String, Value>>,
    ) -> std::result::Result<(Response, String), ClientError> {
        let first = self.request_once(peer, kind, payload.clone()).await?;
        let (response, did) = first;
        if response.status == Status::Denied && response.error == text::INVALID_SESSION {
            tracing::info!(peer = %peer, "the peer ended our session; handshaking again");
            self.auth.sessions().remove(&did);
            return match self.request_once(peer, kind, payload).await {
                Ok(r) => Ok(r),
                Err(ClientError::Session(e)) => Err(ClientError::SessionEnded {
                    peer_did: did,
                    reason: e.to_string(),
                }),
                Err(e) => Err(e),
            };
        }
        Ok((response, did))
    }

    async fn request_once(
        &self,
        peer: PeerId,
        kind: &str,
        payload: Option<Map<String, Value>>,
    ) -> std::result::Result<(Response, String), ClientError> {
        let auth = self
            .auth
            .ensure_session(peer)
            .await
            .map_err(ClientError::Session)?;
        let did = auth.session.peer_did.clone();
        let token = self
            .auth
            .sessions()
            .token_for(&did)
            .ok_or_else(|| ClientError::Session(Error::Network("session ended".into())))?;
        let request = Request {
            kind: kind.to_owned(),
            session_token: token.expose().to_owned(),
            request_id: uuid::Uuid::new_v4().to_string(),
            payload,
        };
        // A peer may refuse a stream before reading it (libp2p-stream drops an inbound stream
        // when its accept queue is full; the per-peer stream limit); then the same request
        // goes out again on a new stream, but only when it cannot have run: it was never
        // written, or the stream ended without a byte of answer while the connection stayed
        // up (a handler that read the request always answers; a lost connection is ambiguous
        // for a tool call and is reported, not retried).
        let side_effects = matches!(kind, "tool_invoke" | "tool_invoke_paid");
        let mut attempt = 0u32;
        loop {
            attempt += 1;
            let (e, retry) = match self.exchange_once(peer, &request).await {
                Err(e @ ClientError::Exchange(ResponseError::NotSent(_))) => (e, true),
                Err(e @ ClientError::Exchange(ResponseError::NoAnswer)) => {
                    (e, !side_effects || self.connected(peer).await)
                }
                r => return r.map(|resp| (resp, did)),
            };
            if !retry || attempt >= STREAM_ATTEMPTS {
                return Err(e);
            }
            tracing::debug!(peer = %peer, attempt, "the peer refused the stream; sending again");
            tokio::time::sleep(Duration::from_millis(20 * u64::from(attempt))).await;
        }
    }

    async fn connected(&self, peer: PeerId) -> bool {
        let id = peer.to_base58();
        self.node
            .peers()
            .await
            .is_ok_and(|peers| peers.iter().any(|p| p.peer_id == id))
    }

    async fn exchange_once(
        &self,
        peer: PeerId,
        request: &Request,
    ) -> std::result::Result<Response, ClientError> {
        let mut control = self.node.streams();
        let mut stream = tokio::time::timeout(
            self.timeout,
            control.open_stream(peer, StreamProtocol::new(PROTOCOL)),
        )
        .await
        .map_err(|_| ClientError::Open {
            peer: peer.to_base58(),
            reason: "timed out".into(),
        })?
        .map_err(|e| ClientError::Open {
            peer: peer.to_base58(),
            reason: e.to_string(),
        })?;
        protocol::exchange(&mut stream, request, self.max_response_bytes, self.timeout)
            .await
            .map_err(ClientError::Exchange)
    }

    /// Invokes `tool` on `peer` with `params` and returns its result.
    pub async fn invoke(
        &self,
        peer: PeerId,
        tool: &str,
        params: Map<String, Value>,
    ) -> std::result::Result<Map<String, Value>, ClientError> {
        let mut payload = Map::new();
        payload.insert("toolName".into(), Value::from(tool));
        payload.insert("params".into(), Value::Object(params));
        let zk_attest = match &self.attestation {
            Some(policy) => {
                let now = time::OffsetDateTime::now_utc().unix_timestamp().max(0) as u64;
                let nonce = lango_crypto::random::bytes::<32>()
                    .map_err(|e| ClientError::Attestation(format!("nonce: {e}")))?;
                let z = ZkAttest {
                    nonce,
                    min_ts: now.saturating_sub(policy.window.0),
                    max_ts: now + policy.window.1,
                };
                payload.insert("zkAttest".into(), z.to_value());
                Some(z)
            }
            None => None,
        };
        let (r, responder_did) = self
            .request_from(peer, "tool_invoke", Some(payload))
            .await?;
        match r.status {
            Status::Ok => {
                if let Some(policy) = &self.attestation {
                    self.check_attestation(policy, &r, &responder_did, tool, zk_attest)
                        .await?;
                }
                Ok(r.result.unwrap_or_default())
            }
            status => Err(ClientError::Remote {
                tool: tool.into(),
                status,
                error: if r.error.is_empty() {
                    "unknown error".into()
                } else {
                    r.error
                },
            }),
        }
    }

    async fn check_attestation(
        &self,
        policy: &AttestationPolicy,
        r: &Response,
        responder_did: &str,
        tool: &str,
        zk_attest: Option<ZkAttest>,
    ) -> std::result::Result<(), ClientError> {
        let own = self
            .node
            .did()
            .map(|d| d.as_str().to_owned())
            .unwrap_or_default();
        let check = crate::zk::AttestationCheck {
            request_id: &r.request_id,
            requester_did: &own,
            responder_did,
            request_type: "tool_invoke",
            tool_name: tool,
            zk_attest,
            result_bytes: r.raw_result.as_deref().unwrap_or(b"null"),
        };
        match crate::zk::verify_attestation(&policy.service, r.attestation.as_ref(), &check).await {
            Ok(()) => {
                tracing::info!(
                    event = "attestation_verified",
                    peer_did = responder_did,
                    tool,
                    "response attestation verified"
                );
                Ok(())
            }
            Err(e) if policy.require => Err(ClientError::Attestation(format!("{tool}: {e}"))),
            Err(e) => {
                tracing::warn!(event = "attestation_unverified", peer_did = responder_did, tool, error = %e,
                    "returning the result without a verified attestation");
                Ok(())
            }
        }
    }

    /// The tools `peer` lets this node call (`capability_query`).
    pub async fn capabilities(
        &self,
        peer: PeerId,
    ) -> std::result::Result<Vec<String>, ClientError> {
        let r = self.request(peer, "capability_query", None).await?;
        match r.status {
            Status::Ok => Ok(r
                .result
                .and_then(|m| m.get("capabilities").cloned())
                .and_then(|v| serde_json::from_value(v).ok())
                .unwrap_or_default()),
            status => Err(ClientError::Remote {
                tool: "capability_query".into(),
                status,
                error: if r.error.is_empty() {
                    "unknown error".into()
                } else {
                    r.error
                },
            }),
        }
    }
}
