//! Remote tool invocation as operators see it (issue 7, first slice): two `lango-node serve`
//! processes on 127.0.0.1; B offers an operator-configured command tool; A calls it with
//! `p2p invoke`. The firewall on B denies by default, `p2p firewall add` on B lets A's call
//! through, the call runs in B's sandbox and comes back sanitized, and removing the rule
//! makes the same call fail with the reference text.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::process::Output;

use lango_e2e::{Node, component, stderr, stdout};
use serde_json::Value;

fn run(n: &Node, args: &[&str]) -> Output {
    n.cmd().args(args).output().unwrap()
}

fn ok(o: &Output) -> String {
    assert!(o.status.success(), "{}\n{}", stdout(o), stderr(o));
    stdout(o)
}

/// A command tool: echoes its params back under `echo` (JSON on stdin, JSON on stdout).
const APPROVE: &str = "approvalPolicy = \"allow-listed\"\napprovedTools = [\"shout\"]\n";
const SHOUT: &str = "[[p2p.toolIsolation.commandTools]]\nname = \"shout\"\ndescription = \"echoes its params\"\n\
program = \"/bin/sh\"\nargs = [\"-c\", \"read -r x; printf '{\\\"echo\\\":%s}' \\\"$x\\\"\"]\n";

#[test]
fn invoke_goes_through_the_firewall_the_sandbox_and_the_sanitizer() {
    if !component::bubblewrap("invoke_goes_through_the_firewall_the_sandbox_and_the_sanitizer") {
        return;
    }
    let a = Node::for_serve("", "");
    let b = Node::for_serve(APPROVE, SHOUT);
    let sa = a.serve();
    let sb = b.serve();
    ok(&run(&a, &["p2p", "connect", &sb.tcp_addr()]));
    let params = r#"{"text":"hello from /home/alice/.lango/secret.db","n":3}"#;

    // Default deny on B: the reference text comes back to A.
    let denied = run(
        &a,
        &["p2p", "invoke", sb.peer_id(), "shout", "--params", params],
    );
    assert!(!denied.status.success());
    assert!(
        stderr(&denied).contains(&format!(
            "remote tool shout error: query denied: no matching allow rule for peer {}, tool shout",
            sa.did()
        )),
        "{}",
        stderr(&denied)
    );
    // A learns nothing about B's tools either.
    let tools: Value =
        serde_json::from_str(&ok(&run(&a, &["--json", "p2p", "tools", sb.peer_id()]))).unwrap();
    assert_eq!(tools["capabilities"], serde_json::json!([]));

    // B allows A to call shout: the call runs in B's sandbox, and the path is redacted.
    ok(&run(
        &b,
        &[
            "p2p",
            "firewall",
            "add",
            "--peer-did",
            sa.did(),
            "--tools",
            "shout",
        ],
    ));
    let list = ok(&run(&b, &["p2p", "firewall", "list"]));
    assert!(list.contains(sa.did()) && list.contains("shout"), "{list}");
    let out = ok(&run(
        &a,
        &[
            "--json",
            "p2p",
            "invoke",
            sb.peer_id(),
            "shout",
            "--params",
            params,
        ],
    ));
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["echo"]["n"], 3);
    let text = v["echo"]["text"].as_str().unwrap();
    assert!(!text.contains("/home/alice"), "{text}");
    assert!(text.contains("[path-redacted]"), "{text}");
    // By DID too, and the capability list now shows the tool.
    ok(&run(
        &a,
        &["p2p", "invoke", sb.did(), "shout", "--params", "{}"],
    ));
    let tools: Value =
        serde_json::from_str(&ok(&run(&a, &["--json", "p2p", "tools", sb.peer_id()]))).unwrap();
    assert_eq!(tools["capabilities"], serde_json::json!(["shout"]));

    // The rule survives a restart of B (it is kept in B's database); A reconnects.
    drop(sb);
    let sb = b.serve();
    let list = ok(&run(&b, &["p2p", "firewall", "list"]));
    assert!(
        list.contains(sa.did()),
        "rule lost across a restart: {list}"
    );
    ok(&run(&a, &["p2p", "connect", &sb.tcp_addr()]));
    ok(&run(
        &a,
        &["p2p", "invoke", sb.peer_id(), "shout", "--params", "{}"],
    ));

    // A tool B does not offer: refused without running anything.
    let missing = run(
        &a,
        &["p2p", "invoke", sb.peer_id(), "rm_rf", "--params", "{}"],
    );
    assert!(!missing.status.success());
    assert!(
        stderr(&missing).contains("query denied"),
        "{}",
        stderr(&missing)
    );

    // Removing the rule makes the same call fail again.
    let removed = ok(&run(&b, &["p2p", "firewall", "remove", sa.did()]));
    assert_eq!(
        removed.trim(),
        format!("Removed 1 firewall rule(s) for {}.", sa.did())
    );
    let again = run(
        &a,
        &["p2p", "invoke", sb.peer_id(), "shout", "--params", params],
    );
    assert!(!again.status.success());
    assert!(
        stderr(&again).contains("no matching allow rule"),
        "{}",
        stderr(&again)
    );
    assert!(stdout(&again).is_empty());

    // A permissive rule is refused with the reference text.
    let permissive = run(&b, &["p2p", "firewall", "add", "--peer-did", "*"]);
    assert!(!permissive.status.success());
    assert!(
        stderr(&permissive)
            .contains("overly permissive rule: allow all peers with all tools is prohibited"),
        "{}",
        stderr(&permissive)
    );
}

#[test]
fn repeated_failures_invalidate_the_session_until_the_cool_down_ends() {
    if !component::bubblewrap("repeated_failures_invalidate_the_session_until_the_cool_down_ends") {
        return;
    }
    let a = Node::for_serve("", "");
    let sa = a.serve();
    let b = Node::for_serve(
        &format!(
            "approvalPolicy = \"allow-listed\"\napprovedTools = [\"shout\", \"fail3\"]\n\
             sessionMaxFailures = 3\nsessionRevokeCooldown = \"4s\"\n\
             firewallRules = [{{ peerDid = \"{}\", action = \"allow\", tools = [\"shout\", \"fail3\"] }}]\n",
            sa.did()
        ),
        &format!(
            "{SHOUT}[[p2p.toolIsolation.commandTools]]\nname = \"fail3\"\nprogram = \"/bin/sh\"\n\
             args = [\"-c\", \"exit 3\"]\n"
        ),
    );
    let sb = b.serve();
    ok(&run(&a, &["p2p", "connect", &sb.tcp_addr()]));
    // A good record first: with only failures A's reputation would be 0 and B would refuse
    // its handshakes for good (R-8.4), which is not what this test is about.
    for _ in 0..10 {
        ok(&run(&a, &["p2p", "invoke", sb.peer_id(), "shout"]));
    }
    for _ in 0..3 {
        let f = run(&a, &["p2p", "invoke", sb.peer_id(), "fail3"]);
        assert!(
            stderr(&f)
                .contains("remote tool fail3 error: tool \"fail3\": command exited with status 3"),
            "{}",
            stderr(&f)
        );
    }
    // B invalidated the session (repeated_failures); A's next call needs a new handshake,
    // which B refuses during the cool-down.
    let refused = run(&a, &["p2p", "invoke", sb.peer_id(), "shout"]);
    assert!(!refused.status.success(), "{}", stdout(&refused));
    assert!(
        stderr(&refused).contains("ended the session and refused a new handshake"),
        "{}",
        stderr(&refused)
    );
    let sessions = ok(&run(&b, &["p2p", "session", "list"]));
    assert!(
        !sessions.contains(sa.did()),
        "B still holds A's session: {sessions}"
    );
    // After the cool-down the call goes through again.
    std::thread::sleep(std::time::Duration::from_millis(4500));
    ok(&run(&a, &["p2p", "invoke", sb.peer_id(), "shout"]));
}

#[test]
fn three_nodes_interactive_approval_strangers_and_revocation() {
    if !component::bubblewrap("three_nodes_interactive_approval_strangers_and_revocation") {
        return;
    }
    let a = Node::for_serve("", "");
    let c = Node::for_serve("", "");
    let (sa, sc) = (a.serve(), c.serve());
    let b = Node::for_serve(
        &format!(
            "approvalPolicy = \"interactive\"\napprovalTimeout = \"20s\"\n\
             firewallRules = [{{ peerDid = \"{}\", action = \"allow\", tools = [\"shout\"] }}]\n",
            sa.did()
        ),
        SHOUT,
    );
    let sb = b.serve();
    ok(&run(&a, &["p2p", "connect", &sb.tcp_addr()]));
    ok(&run(&c, &["p2p", "connect", &sb.tcp_addr()]));

    // C has no allow rule: it learns nothing and cannot call.
    let tools: Value =
        serde_json::from_str(&ok(&run(&c, &["--json", "p2p", "tools", sb.peer_id()]))).unwrap();
    assert_eq!(tools["capabilities"], serde_json::json!([]));
    let denied = run(&c, &["p2p", "invoke", sb.peer_id(), "shout"]);
    assert!(stderr(&denied).contains(&format!("no matching allow rule for peer {}", sc.did())));

    // A's call waits for B's owner, who approves it.
    let call = |n: &Node| {
        n.cmd()
            .args([
                "--json",
                "p2p",
                "invoke",
                sb.peer_id(),
                "shout",
                "--params",
                r#"{"k":1}"#,
            ])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap()
    };
    let waiting_id = |b: &Node| {
        lango_e2e::wait_for(15, || {
            let v: Value =
                serde_json::from_str(&ok(&run(b, &["--json", "p2p", "approvals", "list"]))).ok()?;
            let first = v.as_array()?.first()?.clone();
            Some(first)
        })
        .expect("a call shows up in p2p approvals list")
    };
    let pending_call = call(&a);
    let p = waiting_id(&b);
    assert_eq!(p["peerDid"], sa.did());
    assert_eq!(p["tool"], "shout");
    assert_eq!(p["params"], r#"{"k":1}"#);
    let id = p["id"].to_string();
    ok(&run(&b, &["p2p", "approvals", "approve", &id]));
    let out = pending_call.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["echo"]["k"], 1);

    // Denied by the owner.
    let pending_call = call(&a);
    let id = waiting_id(&b)["id"].to_string();
    ok(&run(&b, &["p2p", "approvals", "deny", &id]));
    let out = pending_call.wait_with_output().unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("tool invocation denied by owner"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let none = ok(&run(&b, &["p2p", "approvals", "list"]));
    assert_eq!(none.trim(), "No calls waiting for approval.");

    // B revokes A's session: A's next call is refused (its re-handshake hits the cool-down).
    ok(&run(
        &b,
        &["p2p", "session", "revoke", "--peer-did", sa.did()],
    ));
    let refused = run(&a, &["p2p", "invoke", sb.peer_id(), "shout"]);
    assert!(!refused.status.success());
    let list = ok(&run(&b, &["p2p", "approvals", "list"]));
    assert_eq!(
        list.trim(),
        "No calls waiting for approval.",
        "nothing reached approval"
    );
}

#[test]
fn a_new_peers_first_failure_drops_its_reputation_and_its_session() {
    if !component::bubblewrap("a_new_peers_first_failure_drops_its_reputation_and_its_session") {
        return;
    }
    let a = Node::for_serve("", "");
    let sa = a.serve();
    let b = Node::for_serve(
        &format!(
            "approvalPolicy = \"allow-listed\"\napprovedTools = [\"fail3\"]\n\
             firewallRules = [{{ peerDid = \"{}\", action = \"allow\", tools = [\"fail3\"] }}]\n",
            sa.did()
        ),
        "[[p2p.toolIsolation.commandTools]]\nname = \"fail3\"\nprogram = \"/bin/sh\"\nargs = [\"-c\", \"exit 3\"]\n",
    );
    let sb = b.serve();
    ok(&run(&a, &["p2p", "connect", &sb.tcp_addr()]));
    assert!(ok(&run(&b, &["p2p", "session", "list"])).contains(sa.did()));
    let f = run(&a, &["p2p", "invoke", sb.peer_id(), "fail3"]);
    assert!(!f.status.success());
    // One failure and no success: score 0, below minTrustScore 0.3 → reputation_drop.
    let rep: Value =
        serde_json::from_str(&ok(&run(&b, &["--json", "p2p", "reputation", sa.did()]))).unwrap();
    assert_eq!(rep["failedExchanges"], 1, "{rep}");
    let gone = lango_e2e::wait_for(5, || {
        (!ok(&run(&b, &["p2p", "session", "list"])).contains(sa.did())).then_some(())
    });
    assert!(
        gone.is_some(),
        "B kept A's session after the reputation drop"
    );
}

/// Several callers on A at once share one connection to B: every call must come back, none
/// may fail on the transport (a stream refused by B's per-peer limit, a connection closed
/// under a caller). Four callers match B's default `maxConcurrentStreamsPerPeer`.
#[test]
fn concurrent_callers_share_the_connection_without_losing_calls() {
    if !component::bubblewrap("concurrent_callers_share_the_connection_without_losing_calls") {
        return;
    }
    // Both with ZK handshakes on: the identity is created in the vault and the keys are
    // generated in the background without delaying anything.
    let a = Node::for_serve("zkHandshake = true\n", "");
    let sa = a.serve();
    let b = Node::for_serve(
        &format!(
            "zkHandshake = true\n{APPROVE}firewallRules = [{{ peerDid = \"{}\", action = \"allow\", tools = [\"shout\"] }}]\n",
            sa.did()
        ),
        SHOUT,
    );
    let sb = b.serve();
    ok(&run(&a, &["p2p", "connect", &sb.tcp_addr()]));
    ok(&run(&a, &["p2p", "invoke", sb.peer_id(), "shout"]));
    // The 1.2 handshake carried B's ownership proof: A's session is ZK-verified, B's (whose
    // own proof it was) is not.
    let sessions: Value =
        serde_json::from_str(&ok(&run(&a, &["--json", "p2p", "session", "list"]))).unwrap();
    let to_b = sessions
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["peerDid"] == sb.did())
        .unwrap_or_else(|| panic!("no session with B: {sessions}"));
    assert_eq!(to_b["zkVerified"], true, "{to_b}");
    assert_eq!(to_b["channelBound"], true, "{to_b}");
    let on_b: Value =
        serde_json::from_str(&ok(&run(&b, &["--json", "p2p", "session", "list"]))).unwrap();
    assert!(
        on_b.as_array()
            .unwrap()
            .iter()
            .all(|s| s["zkVerified"] == false),
        "{on_b}"
    );
    let peer = sb.peer_id().to_owned();
    let failures: Vec<String> = std::thread::scope(|s| {
        let workers: Vec<_> = (0..4)
            .map(|w| {
                let (a, peer) = (&a, &peer);
                s.spawn(move || {
                    let mut failed = Vec::new();
                    for i in 0..15 {
                        let params = format!(r#"{{"w":{w},"i":{i}}}"#);
                        let o = run(
                            a,
                            &[
                                "--json", "p2p", "invoke", peer, "shout", "--params", &params,
                            ],
                        );
                        match serde_json::from_str::<Value>(&stdout(&o)) {
                            Ok(v) if o.status.success() && v["echo"]["i"] == i => {}
                            _ => failed.push(format!("worker {w} call {i}: {}", stderr(&o))),
                        }
                    }
                    failed
                })
            })
            .collect();
        workers
            .into_iter()
            .flat_map(|h| h.join().unwrap())
            .collect()
    });
    assert!(
        failures.is_empty(),
        "{} of 60 calls failed:\n{}\nA:\n{}\nB:\n{}",
        failures.len(),
        failures.join("\n"),
        sa.log(),
        sb.log()
    );
}

/// Response attestations end to end (issue 8): B attests its tool results with a Halo2 proof
/// bound to A's request, A's nonce and window and the exact result bytes; A, which requires
/// attestations, verifies it. Against C, which does not attest, the same call fails on A.
#[test]
fn attested_results_verify_on_the_caller_and_missing_attestations_fail_when_required() {
    if !component::bubblewrap(
        "attested_results_verify_on_the_caller_and_missing_attestations_fail_when_required",
    ) {
        return;
    }
    let a = Node::for_serve("zkAttestation = true\nzkp.requireAttestation = true\n", "");
    let sa = a.serve();
    let allow = format!(
        "{APPROVE}firewallRules = [{{ peerDid = \"{}\", action = \"allow\", tools = [\"shout\"] }}]\n",
        sa.did()
    );
    // A generous proving deadline: CI runs this next to other tests on two cores, and a
    // debug build proves in about two seconds when the machine is idle.
    let b = Node::for_serve(
        &format!("zkAttestation = true\nzkp.attestTimeout = \"120s\"\n{allow}"),
        SHOUT,
    );
    let c = Node::for_serve(&allow, SHOUT);
    let (sb, sc) = (b.serve(), c.serve());
    ok(&run(&a, &["p2p", "connect", &sb.tcp_addr()]));
    ok(&run(&a, &["p2p", "connect", &sc.tcp_addr()]));
    // B generates its keys in the background; a response that cannot be attested within
    // 5 s goes out without an attestation, which A would (rightly) refuse.
    assert!(
        lango_e2e::wait_for(120, || sb.log().contains("zk_keys_ready").then_some(())).is_some(),
        "B never reported its ZK keys ready:\n{}",
        sb.log()
    );
    let o = run(
        &a,
        &[
            "--json",
            "p2p",
            "invoke",
            sb.peer_id(),
            "shout",
            "--params",
            r#"{"n":1}"#,
        ],
    );
    assert!(o.status.success(), "{}\nB:\n{}", stderr(&o), sb.log());
    let out = stdout(&o);
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["echo"]["n"], 1);
    assert!(
        sa.log().contains("response attestation verified"),
        "A did not verify B's attestation:\n{}",
        sa.log()
    );
    let refused = run(
        &a,
        &["p2p", "invoke", sc.peer_id(), "shout", "--params", "{}"],
    );
    assert!(!refused.status.success(), "{}", stdout(&refused));
    assert!(
        stderr(&refused).contains(
            "attestation required: shout: the response carries no verifiable attestation"
        ),
        "{}",
        stderr(&refused)
    );
}
