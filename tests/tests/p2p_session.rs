//! Authentication as operators see it: two `lango-node serve` processes on 127.0.0.1,
//! `p2p connect` running the 1.2.0-bound handshake, and `p2p session list|revoke|revoke-all`
//! acting on the running nodes through the admin socket (handshake spec §5.4, §5.6–5.8).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::process::Output;

use lango_e2e::{Node, stderr, stdout};
use serde_json::Value;

/// Runs a command with the local time zone pinned to UTC, so times print with `Z`.
fn run(n: &Node, args: &[&str]) -> Output {
    n.cmd().env("TZ", "UTC").args(args).output().unwrap()
}

fn ok(o: &Output) -> String {
    assert!(o.status.success(), "{}\n{}", stdout(o), stderr(o));
    stdout(o)
}

fn json(n: &Node, args: &[&str]) -> Value {
    let mut full = vec!["--json"];
    full.extend_from_slice(args);
    let out = ok(&run(n, &full));
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("not JSON ({e}): {out}"))
}

/// `2026-11-28T17:06:15.123456789Z` → `2026-11-28T17:06:15Z`.
fn seconds(rfc3339: &str) -> String {
    let (head, _) = rfc3339
        .split_once('.')
        .unwrap_or((rfc3339.trim_end_matches('Z'), ""));
    format!("{}Z", head.trim_end_matches('Z'))
}

#[test]
fn connect_authenticates_on_1_2_bound_and_sessions_are_listed_and_revoked() {
    let a = Node::for_serve("", "");
    let b = Node::for_serve("", "");
    let (sa, sb) = (a.serve(), b.serve());

    // connect: transport, then the handshake; the negotiated protocol is reported.
    let out = ok(&run(&a, &["p2p", "connect", &sb.tcp_addr()]));
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 6, "{out}");
    assert_eq!(lines[0], format!("Connected to peer {}", sb.peer_id()));
    assert_eq!(lines[1], format!("  Peer DID:       {}", sb.did()));
    assert_eq!(lines[2], "  Protocol:       /lango/handshake/1.2.0-bound");
    assert_eq!(lines[3], "  Authenticated:  true");
    assert_eq!(lines[4], "  Channel Bound:  true");
    assert!(
        lines[5].starts_with("  Expires:        20") && lines[5].ends_with('Z'),
        "{out}"
    );

    // status: the Go lines first, exactly; then this node's additions.
    let st = ok(&run(&a, &["p2p", "status"]));
    let addrs: Vec<&str> = sa.started["listenAddrs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert!(
        st.starts_with(&format!(
            "P2P Node Status\n  Peer ID:          {}\n  Listen Addrs:     [{}]\n  \
             Connected Peers:  1 / 50\n  mDNS:             false\n  Relay:            false\n  \
             ZK Handshake:     false\n",
            sa.peer_id(),
            addrs.join(" ")
        )),
        "{st}"
    );
    assert!(
        st.contains("\n  Sessions:         1\n  Pinned Peers:     1\n"),
        "{st}"
    );
    let sj = json(&a, &["p2p", "status"]);
    for key in [
        "connectedPeers",
        "listenAddrs",
        "maxPeers",
        "mdns",
        "peerId",
        "relay",
        "zkHandshake",
    ] {
        assert!(sj.get(key).is_some(), "status JSON lacks {key}: {sj}");
    }
    assert_eq!(sj["sessions"], 1);

    // peers: the Go table.
    let peers = ok(&run(&a, &["p2p", "peers"]));
    let mut rows = peers.lines();
    assert_eq!(rows.next().unwrap(), format!("{:<52}  ADDRESS", "PEER ID"));
    let row = rows.next().unwrap();
    assert!(
        row.starts_with(&format!("{}  /ip4/127.0.0.1/tcp/", sb.peer_id())),
        "{peers}"
    );

    // session list --json: the Go keys in Go order, the Rust additions, never a token.
    let list = json(&a, &["p2p", "session", "list"]);
    let raw = ok(&run(&a, &["--json", "p2p", "session", "list"]));
    assert!(!raw.to_lowercase().contains("token"), "{raw}");
    assert!(
        raw.starts_with("[\n  {\n    \"peerDid\": "),
        "pretty, two spaces:\n{raw}"
    );
    let s = &list.as_array().unwrap()[0];
    // serde_json's Value sorts keys, so the order is read from the text.
    let keys: Vec<&str> = raw
        .lines()
        .filter_map(|l| l.strip_prefix("    \"")?.split_once('"').map(|(k, _)| k))
        .collect();
    assert_eq!(
        keys,
        [
            "peerDid",
            "createdAt",
            "expiresAt",
            "zkVerified",
            "invalidated",
            "peerId",
            "protocol",
            "authenticated",
            "channelBound"
        ]
    );
    assert_eq!(s["peerDid"], sb.did());
    assert_eq!(s["peerId"], sb.peer_id());
    assert_eq!(s["channelBound"], true);

    // session list: the table, aligned with two spaces of padding, times in seconds.
    let created = seconds(s["createdAt"].as_str().unwrap());
    let expires = seconds(s["expiresAt"].as_str().unwrap());
    let w = sb.did().len();
    let table = ok(&run(&a, &["p2p", "session", "list"]));
    assert_eq!(
        table,
        format!(
            "{:<w$}  {:<20}  {:<20}  ZK VERIFIED\n{}  {created}  {expires}  false\n",
            "PEER DID",
            "CREATED",
            "EXPIRES",
            sb.did(),
        )
    );

    // The responder holds the session too.
    let on_b = json(&b, &["p2p", "session", "list"]);
    assert_eq!(on_b[0]["peerDid"], sa.did());
    assert_eq!(on_b[0]["peerId"], sa.peer_id());
    assert_eq!(on_b[0]["expiresAt"], s["expiresAt"]);

    // revoke needs the flag.
    let o = run(&b, &["p2p", "session", "revoke"]);
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("--peer-did is required"),
        "{}",
        stderr(&o)
    );

    // revoke on B removes A's session there, and says so only when there was one.
    let out = ok(&run(
        &b,
        &["p2p", "session", "revoke", "--peer-did", sa.did()],
    ));
    assert_eq!(out, format!("Session for {} revoked.\n", sa.did()));
    assert_eq!(
        ok(&run(&b, &["p2p", "session", "list"])),
        "No active sessions.\n"
    );
    assert_eq!(ok(&run(&b, &["--json", "p2p", "session", "list"])), "[]\n");
    let out = ok(&run(
        &b,
        &["p2p", "session", "revoke", "--peer-did", sa.did()],
    ));
    assert_eq!(out, format!("No active session for {}.\n", sa.did()));

    // A revoked peer is in its cool-down: its next handshake is refused by B.
    let o = run(&a, &["p2p", "connect", &sb.tcp_addr()]);
    assert!(!o.status.success(), "{}", stdout(&o));
    assert!(stderr(&o).contains("handshake with"), "{}", stderr(&o));
    assert_eq!(ok(&run(&b, &["--json", "p2p", "session", "list"])), "[]\n");

    // revoke-all on A counts what it ended.
    assert_eq!(
        ok(&run(&a, &["p2p", "session", "revoke-all"])),
        "All sessions revoked (1).\n"
    );
    assert_eq!(
        ok(&run(&a, &["p2p", "session", "list"])),
        "No active sessions.\n"
    );

    drop(sa);
    drop(sb);
}

#[test]
fn session_commands_need_a_running_node_and_p2p_enabled() {
    let n = Node::for_serve("", "");
    for args in [
        &["p2p", "session", "list"][..],
        &["p2p", "session", "revoke", "--peer-did", "did:lango:02aa"][..],
        &["p2p", "session", "revoke-all"][..],
    ] {
        let o = run(&n, args);
        assert!(!o.status.success(), "{args:?}");
        assert!(stdout(&o).is_empty(), "no success text: {}", stdout(&o));
        assert!(
            stderr(&o).contains("no lango node is running"),
            "{}",
            stderr(&o)
        );
    }
    let off = Node::for_serve("enabled = false", "");
    for args in [
        &["p2p", "session", "list"][..],
        &["p2p", "session", "revoke-all"][..],
        &["p2p", "connect", "/ip4/127.0.0.1/tcp/1"][..],
    ] {
        let o = run(&off, args);
        assert!(!o.status.success());
        assert!(
            stderr(&o).contains("P2P networking is not enabled (set p2p.enabled = true)"),
            "{}",
            stderr(&o)
        );
    }
}

#[test]
fn connect_needs_a_peer_id_in_the_address() {
    let n = Node::for_serve("", "");
    let _s = n.serve();
    let o = run(&n, &["p2p", "connect", "/ip4/127.0.0.1/tcp/1"]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("parse peer info"), "{}", stderr(&o));
    let o = run(&n, &["p2p", "disconnect", "not-a-peer-id"]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("parse peer ID"), "{}", stderr(&o));
}
