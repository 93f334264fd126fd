//! Spec §7.1: the A2A handler pipeline on in-memory requests (T-A6…T-A18, T-A22). The session
//! store, firewall, sanitizer and owner shield are the real ones; the executor, approval and
//! payment seams are spies that record whether they were reached.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::{
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use async_trait::async_trait;
use lango_p2p::{
    a2a::{
        ApprovalPolicy, Handler, HandlerLimits, HandlerParts, PaymentDecision, PaymentGate,
        ToolApproval, text,
    },
    auth::{DidLookupError, peer_for_did},
    firewall::{Firewall, FirewallConfig, Rule},
    protocol::{Request, Status},
    reputation::{Reputation, Standing},
    sanitize::{OwnerProtectionConfig, ResponseFilter},
};
use lango_sandbox::{ExecError, Executor, IsolationClass, ToolRegistry};
use lango_session::{NewSession, Role, SecurityEventHandler, SessionConfig, SessionStore};
use serde_json::{Map, Value, json};

const PEER: &str = "12D3KooWQK1wnefoLrcVHbbnf5tLzbopUd3K3bFAoJpA7YJgL5pV";
const OTHER_PEER: &str = "12D3KooWRBhwfeP2Y4TCx1SM6s9rUoHhR5STiGwxBhgFRcw3UERE";

fn did(n: u8) -> String {
    format!("did:lango:02{}", hex::encode([n; 32]))
}

/// A scripted tool outcome.
type Answer = fn(&str, Map<String, Value>) -> Result<Map<String, Value>, ExecError>;

/// An executor that records calls and answers from a script.
struct Spy {
    calls: AtomicUsize,
    answer: Answer,
}

#[async_trait]
impl Executor for Spy {
    async fn execute(
        &self,
        tool: &str,
        params: Map<String, Value>,
    ) -> Result<Map<String, Value>, ExecError> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        (self.answer)(tool, params)
    }
    fn isolation(&self) -> String {
        "spy".into()
    }
}

struct CountingApproval {
    calls: AtomicUsize,
    answer: Result<bool, String>,
    delay: Duration,
}

#[async_trait]
impl ToolApproval for CountingApproval {
    async fn approve(&self, _: &str, _: &str, _: &Map<String, Value>) -> Result<bool, String> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        tokio::time::sleep(self.delay).await;
        self.answer.clone()
    }
}

struct CountingGate {
    calls: AtomicUsize,
    decision: PaymentDecision,
}

#[async_trait]
impl PaymentGate for CountingGate {
    async fn check(
        &self,
        _: &str,
        _: &str,
        _: &Map<String, Value>,
    ) -> Result<PaymentDecision, String> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        Ok(self.decision.clone())
    }
}

struct Fixture {
    handler: Handler,
    sessions: SessionStore,
    events: SecurityEventHandler,
    exec: Arc<Spy>,
    approval: Arc<CountingApproval>,
    gate: Arc<CountingGate>,
    token: String,
    did: String,
}

fn echo(_: &str, params: Map<String, Value>) -> Result<Map<String, Value>, ExecError> {
    Ok(params)
}

#[derive(Default)]
struct Opts {
    revocations: Option<lango_p2p::revocation::Revocations>,
    rules: Vec<Rule>,
    no_executor: bool,
    no_approval: bool,
    approval: Option<Result<bool, String>>,
    approval_delay: Duration,
    gate: Option<PaymentDecision>,
    answer: Option<Answer>,
    bypass: Vec<String>,
    attester: Option<Arc<dyn lango_p2p::a2a::Attester>>,
    /// `p2p.zkp.attestRateLimit`; `None` keeps the default.
    attest_rate_limit: Option<u32>,
    /// The session is an unauthenticated legacy claim of its DID (open approval).
    unauthenticated: bool,
    /// The reputation store the handler records in.
    reputation: Option<Reputation>,
}

fn fixture(o: Opts) -> Fixture {
    let sessions = SessionStore::new(&SessionConfig::default()).unwrap();
    let card_did = did(9);
    let did = did(7);
    let issued = sessions
        .create(NewSession {
            peer_did: &did,
            peer_id: PEER,
            protocol: if o.unauthenticated {
                "/lango/handshake/1.0.0"
            } else {
                "/lango/handshake/1.2.0-bound"
            },
            role: Role::Responder,
            authenticated: !o.unauthenticated,
            channel_bound: !o.unauthenticated,
            zk_verified: false,
            remote_ip: None,
        })
        .unwrap();
    let events = SecurityEventHandler::new(sessions.clone(), 5, 0.3);
    let mut registry = ToolRegistry::builtin();
    registry
        .register_fn("search_web", "", IsolationClass::WorkerSafe, |p| {
            Ok(Value::Object(p.clone()))
        })
        .unwrap();
    registry
        .register_fn("wallet_sign", "", IsolationClass::LocalOnly, |_| {
            Ok(Value::Null)
        })
        .unwrap();
    registry
        .register_fn("shell_exec", "", IsolationClass::WorkerSafe, |_| {
            Ok(Value::Null)
        })
        .unwrap();
    registry.set_safety("shell_exec", lango_sandbox::SafetyLevel::Dangerous);
    let exec = Arc::new(Spy {
        calls: AtomicUsize::new(0),
        answer: o.answer.unwrap_or(echo),
    });
    let approval = Arc::new(CountingApproval {
        calls: AtomicUsize::new(0),
        answer: o.approval.unwrap_or(Ok(true)),
        delay: o.approval_delay,
    });
    let gate = Arc::new(CountingGate {
        calls: AtomicUsize::new(0),
        decision: o.gate.clone().unwrap_or(PaymentDecision::Free),
    });
    let firewall = Firewall::new(FirewallConfig {
        rules: o.rules,
        attest_rate_limit: o
            .attest_rate_limit
            .unwrap_or(FirewallConfig::default().attest_rate_limit),
        ..FirewallConfig::default()
    })
    .unwrap();
    let owner = OwnerProtectionConfig {
        owner_name: "Alice Kim".into(),
        ..Default::default()
    };
    let handler = Handler::new(HandlerParts {
        sessions: sessions.clone(),
        events: events.clone(),
        reputation: o.reputation,
        firewall: Arc::new(firewall),
        filter: Arc::new(ResponseFilter::from_config(&owner)),
        registry: Arc::new(registry),
        executor: (!o.no_executor).then(|| exec.clone() as Arc<dyn Executor>),
        approval: (!o.no_approval).then(|| approval.clone() as Arc<dyn ToolApproval>),
        payment: o.gate.map(|_| gate.clone() as Arc<dyn PaymentGate>),
        revocations: o.revocations,
        attester: o.attester,
        card: Some(json!({"name": "b", "did": card_did})),
        safety: (
            lango_sandbox::SafetyLevel::Moderate,
            o.bypass.iter().cloned().collect(),
        ),
        limits: HandlerLimits {
            approval_timeout: Duration::from_millis(300),
            ..HandlerLimits::default()
        },
    });
    Fixture {
        handler,
        sessions,
        events,
        exec,
        approval,
        gate,
        token: issued.token.expose().to_owned(),
        did,
    }
}

fn allow_all_tools(did: &str) -> Vec<Rule> {
    vec![Rule::allow(did, ["*"])]
}

/// Sends a request from the session's own peer and returns the answer.
async fn call(f: &Fixture, kind: &str, payload: Value) -> lango_p2p::protocol::Response {
    f.handler.handle(PEER, &req(f, kind, payload)).await
}

fn req(f: &Fixture, kind: &str, payload: Value) -> Request {
    Request {
        kind: kind.into(),
        session_token: f.token.clone(),
        request_id: "req-1".into(),
        payload: payload.as_object().cloned(),
    }
}

#[tokio::test]
async fn t_a6_t_a7_tokens_must_be_live_and_bound_to_the_stream_peer() {
    let f = fixture(Opts::default());
    let mut r = req(&f, "agent_card", json!({}));
    assert_eq!(f.handler.handle(PEER, &r).await.status, Status::Ok);
    // The same token from another libp2p peer: denied (binding).
    let other = f.handler.handle(OTHER_PEER, &r).await;
    assert_eq!(other.status, Status::Denied);
    assert_eq!(other.error, text::INVALID_SESSION);
    assert_eq!(other.request_id, "req-1");
    for bad in ["", "00", &"a".repeat(300), &"f".repeat(64)] {
        r.session_token = bad.to_owned();
        let resp = f.handler.handle(PEER, &r).await;
        assert_eq!(
            (resp.status, resp.error.as_str()),
            (Status::Denied, text::INVALID_SESSION)
        );
    }
    // An invalidated session is refused.
    f.sessions
        .invalidate(&f.did, lango_session::InvalidationReason::ManualRevoke);
    let r = req(&f, "agent_card", json!({}));
    assert_eq!(
        f.handler.handle(PEER, &r).await.error,
        text::INVALID_SESSION
    );
}

#[tokio::test]
async fn t_a8_t_a9_t_a10_request_shape_errors() {
    let f = fixture(Opts {
        rules: allow_all_tools(&did(7)),
        ..Default::default()
    });
    let unknown = call(&f, "foo", json!({})).await;
    assert_eq!(
        (unknown.status, unknown.error.as_str()),
        (Status::Error, "unknown request type: foo")
    );
    for payload in [json!({}), json!({"toolName": 5}), json!({"toolName": ""})] {
        let r = call(&f, "tool_invoke", payload).await;
        assert_eq!(r.error, text::MISSING_TOOL);
    }
    for name in ["../x", &"a".repeat(200)] {
        let r = call(&f, "tool_invoke", json!({"toolName": name})).await;
        assert_eq!(r.error, text::INVALID_TOOL);
    }
    let r = call(
        &f,
        "tool_invoke",
        json!({"toolName": "sandbox_echo", "params": [1]}),
    )
    .await;
    assert_eq!(r.error, text::PARAMS_NOT_OBJECT);
    // Absent or null params reach the tool as {}.
    for payload in [
        json!({"toolName": "sandbox_echo"}),
        json!({"toolName": "sandbox_echo", "params": null}),
    ] {
        let r = call(&f, "tool_invoke", payload).await;
        assert_eq!(r.status, Status::Ok, "{}", r.error);
        assert!(r.result.unwrap_or_default().is_empty());
    }
    assert_eq!(f.exec.calls.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn t_a11_t_a12_approval() {
    for paid in ["tool_invoke", "tool_invoke_paid"] {
        let f = fixture(Opts {
            rules: allow_all_tools(&did(7)),
            no_approval: true,
            ..Default::default()
        });
        let r = call(&f, paid, json!({"toolName": "sandbox_echo"})).await;
        assert_eq!(
            (r.status, r.error.as_str()),
            (Status::Denied, text::NO_APPROVAL)
        );
        assert_eq!(f.exec.calls.load(Ordering::SeqCst), 0);
    }
    let f = fixture(Opts {
        rules: allow_all_tools(&did(7)),
        approval: Some(Ok(false)),
        ..Default::default()
    });
    let r = call(&f, "tool_invoke", json!({"toolName": "sandbox_echo"})).await;
    assert_eq!(
        (r.status, r.error.as_str()),
        (Status::Denied, text::DENIED_BY_OWNER)
    );
    let f = fixture(Opts {
        rules: allow_all_tools(&did(7)),
        approval: Some(Err("prompt crashed at /home/alice/.lango".into())),
        ..Default::default()
    });
    let r = call(&f, "tool_invoke", json!({"toolName": "sandbox_echo"})).await;
    assert_eq!(r.status, Status::Error);
    assert!(r.error.starts_with("approval check: "), "{}", r.error);
    assert!(!r.error.contains("/home/alice"), "sanitized: {}", r.error);
    // An approval that hangs is a denial at approvalTimeout.
    let f = fixture(Opts {
        rules: allow_all_tools(&did(7)),
        approval_delay: Duration::from_secs(30),
        ..Default::default()
    });
    let t = std::time::Instant::now();
    let r = call(&f, "tool_invoke", json!({"toolName": "sandbox_echo"})).await;
    assert_eq!(r.error, text::DENIED_BY_OWNER);
    assert!(t.elapsed() < Duration::from_secs(5));
    assert_eq!(f.exec.calls.load(Ordering::SeqCst), 0);
    // The built-in policies.
    let empty = Map::new();
    assert!(
        !ApprovalPolicy::Deny
            .approve("d", "t", &empty)
            .await
            .unwrap()
    );
    let listed = ApprovalPolicy::AllowListed(["t".to_owned()].into());
    assert!(listed.approve("d", "t", &empty).await.unwrap());
    assert!(!listed.approve("d", "u", &empty).await.unwrap());
}

#[tokio::test]
async fn t_a13_no_executor_refuses_and_records_nothing() {
    for kind in ["tool_invoke", "tool_invoke_paid"] {
        let f = fixture(Opts {
            rules: allow_all_tools(&did(7)),
            no_executor: true,
            ..Default::default()
        });
        let r = call(&f, kind, json!({"toolName": "sandbox_echo"})).await;
        assert_eq!(
            (r.status, r.error.as_str()),
            (Status::Denied, text::NO_EXECUTOR)
        );
        assert_eq!(f.events.failure_count(&f.did), 0);
    }
}

#[tokio::test]
async fn t_a14_t_a15_gate_order() {
    // No allow rule: the firewall's denial, not "not available", and nothing later is reached.
    let f = fixture(Opts {
        gate: Some(PaymentDecision::Free),
        ..Default::default()
    });
    let r = call(&f, "tool_invoke_paid", json!({"toolName": "wallet_sign"})).await;
    assert_eq!(
        r.error,
        format!(
            "query denied: no matching allow rule for peer {}, tool wallet_sign",
            f.did
        )
    );
    assert_eq!(
        f.gate.calls.load(Ordering::SeqCst) + f.approval.calls.load(Ordering::SeqCst),
        0
    );
    // Allowed by the firewall but not a worker tool: refused before payment and approval.
    let f = fixture(Opts {
        rules: allow_all_tools(&did(7)),
        gate: Some(PaymentDecision::Free),
        ..Default::default()
    });
    for tool in ["wallet_sign", "does_not_exist"] {
        let r = call(&f, "tool_invoke_paid", json!({"toolName": tool})).await;
        assert_eq!(
            (r.status, r.error.as_str()),
            (Status::Denied, text::NOT_AVAILABLE)
        );
    }
    assert_eq!(
        f.gate.calls.load(Ordering::SeqCst) + f.approval.calls.load(Ordering::SeqCst),
        0
    );
    // Payment required: the quote comes back, approval is not asked.
    let quote =
        json!({"toolName": "search_web", "price": "0.01", "currency": "USDC", "isFree": false});
    let f = fixture(Opts {
        rules: allow_all_tools(&did(7)),
        gate: Some(PaymentDecision::Required(
            quote.as_object().cloned().unwrap(),
        )),
        ..Default::default()
    });
    let r = call(&f, "tool_invoke_paid", json!({"toolName": "search_web"})).await;
    assert_eq!(r.status, Status::PaymentRequired);
    assert_eq!(Value::Object(r.result.unwrap()), quote);
    assert_eq!(f.approval.calls.load(Ordering::SeqCst), 0);
    let f = fixture(Opts {
        rules: allow_all_tools(&did(7)),
        gate: Some(PaymentDecision::Invalid),
        ..Default::default()
    });
    let r = call(&f, "tool_invoke_paid", json!({"toolName": "search_web"})).await;
    assert_eq!(r.error, text::INVALID_PAYMENT);
}

#[tokio::test]
async fn t_a16_t_a17_meta_requests() {
    let f = fixture(Opts {
        rules: vec![Rule::allow(did(7), ["search*"])],
        ..Default::default()
    });
    let r = call(&f, "price_query", json!({"toolName": "search_web"})).await;
    assert_eq!(
        Value::Object(r.result.unwrap()),
        json!({"toolName": "search_web", "isFree": true})
    );
    let r = call(&f, "capability_query", json!({})).await;
    assert_eq!(
        Value::Object(r.result.unwrap()),
        json!({"capabilities": ["search_web"]})
    );
    let r = call(&f, "capability_query", json!({"filter": "sandbox"})).await;
    assert_eq!(
        Value::Object(r.result.unwrap()),
        json!({"capabilities": []})
    );
    let r = call(&f, "agent_card", json!({})).await;
    assert_eq!(r.result.unwrap()["name"], "b");
    // A peer without rules learns nothing.
    let f = fixture(Opts::default());
    let r = call(&f, "capability_query", json!({})).await;
    assert_eq!(
        Value::Object(r.result.unwrap()),
        json!({"capabilities": []})
    );
}

#[tokio::test]
async fn t_a18_concurrency_limit_resets_extra_streams() {
    // Streams that never send: the first four per peer hold their slots until the read
    // deadline, the fifth is dropped at once without a response.
    struct Silent;
    impl futures::AsyncRead for Silent {
        fn poll_read(
            self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
            _: &mut [u8],
        ) -> std::task::Poll<std::io::Result<usize>> {
            std::task::Poll::Pending
        }
    }
    impl futures::AsyncWrite for Silent {
        fn poll_write(
            self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
            b: &[u8],
        ) -> std::task::Poll<std::io::Result<usize>> {
            std::task::Poll::Ready(Ok(b.len()))
        }
        fn poll_flush(
            self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
        ) -> std::task::Poll<std::io::Result<()>> {
            std::task::Poll::Ready(Ok(()))
        }
        fn poll_close(
            self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
        ) -> std::task::Poll<std::io::Result<()>> {
            std::task::Poll::Ready(Ok(()))
        }
    }
    let f = fixture(Opts::default());
    let h = f.handler.clone();
    let mut held = Vec::new();
    for _ in 0..4 {
        let h = h.clone();
        held.push(tokio::spawn(async move { h.serve(PEER, Silent).await }));
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    let t = std::time::Instant::now();
    h.serve(PEER, Silent).await;
    assert!(
        t.elapsed() < Duration::from_secs(1),
        "the fifth stream was not refused at once"
    );
    // Another peer is unaffected (its stream is accepted and waits for its request).
    let other = tokio::time::timeout(Duration::from_millis(300), h.serve(OTHER_PEER, Silent)).await;
    assert!(other.is_err(), "another peer's stream should be served");
    for t in held {
        t.abort();
    }
}

#[tokio::test]
async fn t_a22_errors_sent_to_peers_leak_nothing() {
    fn fail(tool: &str, _: Map<String, Value>) -> Result<Map<String, Value>, ExecError> {
        Err(ExecError::tool_error(
            tool,
            "cannot open /home/alice/.lango/lango.db for Alice Kim",
        ))
    }
    let f = fixture(Opts {
        rules: allow_all_tools(&did(7)),
        answer: Some(fail),
        ..Default::default()
    });
    let r = call(&f, "tool_invoke", json!({"toolName": "search_web"})).await;
    assert_eq!(r.status, Status::Error);
    assert!(!r.error.contains("/home/alice"), "{}", r.error);
    assert!(!r.error.to_lowercase().contains("alice kim"), "{}", r.error);
    // The failure is counted for the peer (consecutive-failure tracking).
    assert_eq!(f.events.failure_count(&f.did), 1);
    // Successful output is sanitized and shielded too.
    let f = fixture(Opts {
        rules: allow_all_tools(&did(7)),
        ..Default::default()
    });
    let r = call(&f, "tool_invoke",
                json!({"toolName": "search_web", "params": {"api_key": "k", "who": "A l i c e  K i m", "ok": 1}})).await;
    let out = Value::Object(r.result.unwrap());
    assert_eq!(out["ok"], 1);
    assert!(out.get("api_key").is_none(), "{out}");
    assert_eq!(out["who"], "[owner-data-redacted]");
}

#[tokio::test]
async fn five_failures_invalidate_the_session() {
    fn fail(tool: &str, _: Map<String, Value>) -> Result<Map<String, Value>, ExecError> {
        Err(ExecError::failure(tool, "boom"))
    }
    let f = fixture(Opts {
        rules: allow_all_tools(&did(7)),
        answer: Some(fail),
        ..Default::default()
    });
    for _ in 0..5 {
        let r = call(&f, "tool_invoke", json!({"toolName": "search_web"})).await;
        assert_eq!(r.error, "tool \"search_web\" execution failed");
    }
    let r = call(&f, "tool_invoke", json!({"toolName": "search_web"})).await;
    assert_eq!(
        r.error,
        text::INVALID_SESSION,
        "the session was invalidated (repeated_failures)"
    );
}

#[tokio::test]
async fn safety_gate_runs_before_approval_and_allowed_tools_bypass_it() {
    let f = fixture(Opts {
        rules: allow_all_tools(&did(7)),
        ..Default::default()
    });
    let r = call(&f, "tool_invoke", json!({"toolName": "shell_exec"})).await;
    assert_eq!(
        (r.status, r.error.as_str()),
        (Status::Denied, text::SAFETY_BLOCKED)
    );
    assert_eq!(f.approval.calls.load(Ordering::SeqCst), 0);
    let caps = call(&f, "capability_query", json!({})).await;
    let names = Value::Object(caps.result.unwrap());
    assert!(
        !names["capabilities"]
            .as_array()
            .unwrap()
            .contains(&json!("shell_exec")),
        "{names}"
    );
    let f = fixture(Opts {
        rules: allow_all_tools(&did(7)),
        bypass: vec!["shell_exec".into()],
        ..Default::default()
    });
    let r = call(&f, "tool_invoke", json!({"toolName": "shell_exec"})).await;
    assert_eq!(r.status, Status::Ok, "{}", r.error);
}

/// What an attester was asked: request ID, requester, tool, result bytes, zkAttest.
type Seen = (
    String,
    String,
    String,
    Vec<u8>,
    Option<lango_p2p::a2a::ZkAttest>,
);

/// Records what it was asked to attest; answers after `delay`.
struct RecordingAttester {
    seen: std::sync::Mutex<Vec<Seen>>,
    delay: Duration,
}

#[async_trait]
impl lango_p2p::a2a::Attester for RecordingAttester {
    async fn attest(
        &self,
        r: lango_p2p::a2a::AttestRequest<'_>,
    ) -> Result<Option<lango_p2p::protocol::Attestation>, String> {
        self.seen.lock().unwrap().push((
            r.request_id.to_owned(),
            r.requester_did.to_owned(),
            r.tool_name.to_owned(),
            r.result_bytes.to_vec(),
            r.zk_attest,
        ));
        tokio::time::sleep(self.delay).await;
        Ok(Some(lango_p2p::protocol::Attestation {
            proof: vec![1, 2, 3],
            public_inputs: Vec::new(),
            circuit_id: "response_attestation/v2".into(),
            scheme: "halo2-ipa-pasta".into(),
            timestamp: Some(1),
            min_timestamp: None,
            max_timestamp: None,
            id_commitment: None,
            tag: None,
            vk_digest: None,
            id_binding: None,
        }))
    }
}

/// The attester sees the sanitized result exactly as it is sent, the session's DID, the tool
/// and the requester's zkAttest; the deprecated `attestationProof` is never sent; a slow
/// attestation is dropped after its deadline and the result still goes out (§3.14.3).
#[tokio::test(start_paused = true)]
async fn attestations_cover_the_sent_bytes_and_never_hold_up_the_result() {
    use base64::Engine;
    let attester = Arc::new(RecordingAttester {
        seen: Default::default(),
        delay: Duration::ZERO,
    });
    let f = fixture(Opts {
        rules: allow_all_tools(&did(7)),
        attester: Some(attester.clone()),
        ..Default::default()
    });
    let nonce = base64::engine::general_purpose::STANDARD.encode([9u8; 32]);
    let r = call(
        &f,
        "tool_invoke",
        json!({"toolName": "search_web", "params": {"q": "/home/alice/x"},
               "zkAttest": {"nonce": nonce, "minTs": 100, "maxTs": 400}}),
    )
    .await;
    assert_eq!(r.status, Status::Ok, "{}", r.error);
    assert!(r.attestation.is_some());
    assert!(
        r.attestation_proof.is_none(),
        "deprecated attestationProof sent"
    );
    let line = serde_json::to_vec(&r).unwrap();
    let seen = attester.seen.lock().unwrap().pop().unwrap();
    assert_eq!(
        (seen.0.as_str(), seen.1.as_str(), seen.2.as_str()),
        ("req-1", f.did.as_str(), "search_web")
    );
    // The attested bytes are the `result` value exactly as it appears in the response line.
    let sent = serde_json::to_vec(r.result.as_ref().unwrap()).unwrap();
    assert_eq!(seen.3, sent);
    assert!(line.windows(sent.len()).any(|w| w == sent.as_slice()));
    assert_eq!(
        seen.4,
        Some(lango_p2p::a2a::ZkAttest {
            nonce: [9u8; 32],
            min_ts: 100,
            max_ts: 400
        })
    );
    // A window wider than an hour is ignored (treated as absent).
    let _ = call(
        &f,
        "tool_invoke",
        json!({"toolName": "search_web", "params": {},
               "zkAttest": {"nonce": nonce, "minTs": 0, "maxTs": 100000}}),
    )
    .await;
    assert_eq!(attester.seen.lock().unwrap().pop().unwrap().4, None);

    // Slow: past the 5 s deadline the response goes out without an attestation.
    let slow = Arc::new(RecordingAttester {
        seen: Default::default(),
        delay: Duration::from_secs(3600),
    });
    let f = fixture(Opts {
        rules: allow_all_tools(&did(7)),
        attester: Some(slow),
        ..Default::default()
    });
    let r = call(
        &f,
        "tool_invoke",
        json!({"toolName": "search_web", "params": {}}),
    )
    .await;
    assert_eq!(r.status, Status::Ok);
    assert!(r.attestation.is_none());
}

/// W-9: a peer past `p2p.zkp.attestRateLimit` gets its results without attestation, and the
/// prover is not asked at all; the call itself still succeeds.
#[tokio::test(start_paused = true)]
async fn attestation_work_past_the_peer_limit_is_not_done() {
    let attester = Arc::new(RecordingAttester {
        seen: Default::default(),
        delay: Duration::ZERO,
    });
    let f = fixture(Opts {
        rules: allow_all_tools(&did(7)),
        attester: Some(attester.clone()),
        attest_rate_limit: Some(1),
        ..Default::default()
    });
    let invoke = json!({"toolName": "search_web", "params": {}});
    let first = call(&f, "tool_invoke", invoke.clone()).await;
    assert_eq!(first.status, Status::Ok, "{}", first.error);
    assert!(first.attestation.is_some());
    let second = call(&f, "tool_invoke", invoke).await;
    assert_eq!(second.status, Status::Ok, "{}", second.error);
    assert!(second.attestation.is_none(), "attested past the limit");
    assert_eq!(
        attester.seen.lock().unwrap().len(),
        1,
        "the prover was asked twice"
    );
}

// ---- Issue 17: an unauthenticated session's DID is only a claim ----

/// A reputation store in a fresh database under `dir`.
async fn reputation_in(dir: &std::path::Path) -> (Reputation, lango_store::Database) {
    let key = lango_crypto::SecretKey32::from_bytes([0x3c; 32]);
    let db = lango_store::Database::open(
        &dir.join("reputation.db"),
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
    (Reputation::new(db.pool().clone(), 0.3), db)
}

#[tokio::test]
async fn unauthenticated_claim_gets_none_of_the_dids_allow_rules() {
    // The owner allows DID 7 every tool; an unsigned legacy challenge claimed DID 7.
    let f = fixture(Opts {
        rules: allow_all_tools(&did(7)),
        unauthenticated: true,
        ..Default::default()
    });
    let r = call(&f, "tool_invoke", json!({"toolName": "search_web"})).await;
    assert_eq!(r.status, Status::Denied, "{r:?}");
    assert_eq!(f.exec.calls.load(Ordering::SeqCst), 0);
    assert_eq!(f.approval.calls.load(Ordering::SeqCst), 0);
    let r = call(&f, "tool_invoke_paid", json!({"toolName": "search_web"})).await;
    assert_eq!(r.status, Status::Denied, "{r:?}");
    let r = call(&f, "price_query", json!({"toolName": "search_web"})).await;
    assert_eq!(r.status, Status::Denied, "{r:?}");
    let r = call(&f, "capability_query", json!({})).await;
    assert_eq!(r.status, Status::Ok, "{r:?}");
    assert_eq!(r.result.unwrap()["capabilities"], json!([]));
    assert_eq!(f.exec.calls.load(Ordering::SeqCst), 0);

    // Rules for `*` still apply to it.
    let f = fixture(Opts {
        rules: vec![Rule::allow("*", ["search_web"])],
        unauthenticated: true,
        ..Default::default()
    });
    let r = call(&f, "tool_invoke", json!({"toolName": "search_web"})).await;
    assert_eq!(r.status, Status::Ok, "{r:?}");
    assert_eq!(f.exec.calls.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn unauthenticated_failures_leave_the_claimed_dids_reputation_alone() {
    fn fail(tool: &str, _: Map<String, Value>) -> Result<Map<String, Value>, ExecError> {
        Err(ExecError::failure(tool, "boom"))
    }
    let dir = tempfile::TempDir::new().unwrap();
    let (rep, db) = reputation_in(dir.path()).await;
    let f = fixture(Opts {
        rules: vec![Rule::allow("*", ["search_web"])],
        answer: Some(fail),
        unauthenticated: true,
        reputation: Some(rep.clone()),
        ..Default::default()
    });
    for _ in 0..3 {
        let r = call(&f, "tool_invoke", json!({"toolName": "search_web"})).await;
        assert_eq!(r.error, "tool \"search_web\" execution failed");
    }
    assert_eq!(f.exec.calls.load(Ordering::SeqCst), 3, "the calls ran");
    assert_eq!(rep.standing(&did(7)).await.unwrap(), Standing::New);
    assert!(rep.details(&did(7)).await.unwrap().is_none());
    assert!(rep.list(100).await.unwrap().is_empty(), "nothing recorded");

    // The same failures from an authenticated session are recorded (the harness records).
    let f = fixture(Opts {
        rules: vec![Rule::allow("*", ["search_web"])],
        answer: Some(fail),
        reputation: Some(rep.clone()),
        ..Default::default()
    });
    let r = call(&f, "tool_invoke", json!({"toolName": "search_web"})).await;
    assert_eq!(r.error, "tool \"search_web\" execution failed");
    let record = rep.details(&did(7)).await.unwrap().unwrap();
    assert_eq!(record.failures, 1);
    db.close().await;
}

#[tokio::test]
async fn a_did_resolves_only_to_its_authenticated_session() {
    let sessions = SessionStore::new(&SessionConfig::default()).unwrap();
    let x = did(7);
    let session = |peer_id, authenticated| NewSession {
        peer_did: &x,
        peer_id,
        protocol: "/lango/handshake/1.0.0",
        role: Role::Responder,
        authenticated,
        channel_bound: false,
        zk_verified: false,
        remote_ip: None,
    };
    assert_eq!(
        peer_for_did(&sessions, &x),
        Err(DidLookupError::NoSession(x.clone()))
    );
    // An unsigned claim of X from another peer is never a route to X.
    sessions.create(session(OTHER_PEER, false)).unwrap();
    assert_eq!(
        peer_for_did(&sessions, &x),
        Err(DidLookupError::Unauthenticated(x.clone()))
    );
    // X's owner authenticates: its session replaces the claim and is the one chosen.
    sessions.create(session(PEER, true)).unwrap();
    assert_eq!(peer_for_did(&sessions, &x).unwrap().to_base58(), PEER);
    // A later claim cannot take the route back.
    assert!(sessions.create(session(OTHER_PEER, false)).is_err());
    assert_eq!(peer_for_did(&sessions, &x).unwrap().to_base58(), PEER);
}

#[tokio::test]
async fn an_unauthenticated_claims_failures_cool_down_its_peer_not_the_did() {
    fn fail(tool: &str, _: Map<String, Value>) -> Result<Map<String, Value>, ExecError> {
        Err(ExecError::failure(tool, "boom"))
    }
    let f = fixture(Opts {
        rules: vec![Rule::allow("*", ["search_web"])],
        answer: Some(fail),
        unauthenticated: true,
        ..Default::default()
    });
    for _ in 0..5 {
        let r = call(&f, "tool_invoke", json!({"toolName": "search_web"})).await;
        assert_eq!(r.error, "tool \"search_web\" execution failed");
    }
    let r = call(&f, "tool_invoke", json!({"toolName": "search_web"})).await;
    assert_eq!(r.error, text::INVALID_SESSION, "the claim's session ended");
    // The claimant's peer ID is cooled down; the DID's real owner may still handshake.
    assert!(f.sessions.may_handshake(&did(7), PEER).is_err());
    f.sessions.may_handshake(&did(7), OTHER_PEER).unwrap();
}

/// Issue 17 (revocation races): a DID revoked while its session lives (the broadcast that
/// would end the session is late, or the handshake was parked across the revoke) gets nothing
/// more from that session: the next request is refused, the tool does not run, and the
/// session is gone.
#[tokio::test]
async fn a_session_outliving_its_dids_revocation_serves_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (_reputation, db) = reputation_in(dir.path()).await;
    let revocations = lango_p2p::revocation::Revocations::load(db.pool().clone(), &[])
        .await
        .unwrap();
    let f = fixture(Opts {
        rules: allow_all_tools(&did(7)),
        revocations: Some(revocations.clone()),
        ..Default::default()
    });
    let r = call(&f, "tool_invoke", json!({"toolName": "search_web"})).await;
    assert_eq!(r.status, Status::Ok, "{}", r.error);
    // Only the list changes; nothing here ends the session.
    assert!(revocations.revoke(&f.did, "key stolen").await.unwrap());
    assert!(f.sessions.get(&f.did).is_some());
    let r = call(&f, "tool_invoke", json!({"toolName": "search_web"})).await;
    assert_eq!(r.status, Status::Denied);
    assert_eq!(r.error, text::INVALID_SESSION);
    assert_eq!(f.exec.calls.load(Ordering::SeqCst), 1, "the tool ran again");
    assert!(f.sessions.get(&f.did).is_none(), "the session lives on");
}

/// Issue 17: a `*` rule's rate limit holds per peer ID as well as per DID. One peer with many
/// fresh DIDs (each its own session) gets no more calls than one DID would.
#[tokio::test]
async fn fresh_dids_from_one_peer_share_its_rate_limit() {
    let f = fixture(Opts {
        rules: vec![Rule {
            rate_limit: 5,
            ..Rule::allow("*", ["search_web"])
        }],
        ..Default::default()
    });
    let mut ok = 0;
    for n in 20..32u8 {
        let d = did(n);
        let issued = f
            .sessions
            .create(NewSession {
                peer_did: &d,
                peer_id: PEER,
                protocol: "/lango/handshake/1.2.0-bound",
                role: Role::Responder,
                authenticated: true,
                channel_bound: true,
                zk_verified: false,
                remote_ip: None,
            })
            .unwrap();
        let r = f
            .handler
            .handle(
                PEER,
                &Request {
                    kind: "tool_invoke".into(),
                    session_token: issued.token.expose().to_owned(),
                    request_id: format!("req-{n}"),
                    payload: json!({"toolName": "search_web"}).as_object().cloned(),
                },
            )
            .await;
        if r.status == Status::Ok {
            ok += 1;
        } else {
            assert!(r.error.contains("rate limit"), "{}", r.error);
        }
    }
    assert_eq!(ok, 5, "calls served to one peer ID across 12 fresh DIDs");
    // Another peer ID has its own bucket.
    let other = "12D3KooWRBhwfeP2Y4TCx1SM6s9rUoHhR5nPdfmbBpVrwhkeebQe";
    let d = did(40);
    let issued = f
        .sessions
        .create(NewSession {
            peer_did: &d,
            peer_id: other,
            protocol: "/lango/handshake/1.2.0-bound",
            role: Role::Responder,
            authenticated: true,
            channel_bound: true,
            zk_verified: false,
            remote_ip: None,
        })
        .unwrap();
    let r = f
        .handler
        .handle(
            other,
            &Request {
                kind: "tool_invoke".into(),
                session_token: issued.token.expose().to_owned(),
                request_id: "req-other".into(),
                payload: json!({"toolName": "search_web"}).as_object().cloned(),
            },
        )
        .await;
    assert_eq!(r.status, Status::Ok, "{}", r.error);
}
