//! The P2P node as operators run it: real `lango-node serve` processes on 127.0.0.1 that find
//! each other through one bootstrap node, and the `p2p` commands acting on them through the
//! admin socket.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeSet;

use lango_e2e::{Node, Serving, component, stderr, stdout, wait_for};
use serde_json::Value;

fn json_of(o: &std::process::Output) -> Value {
    assert!(o.status.success(), "{}\n{}", stdout(o), stderr(o));
    serde_json::from_slice(&o.stdout)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}\n{}", stdout(o), stderr(o)))
}

fn discovered(n: &Node, tag: Option<&str>) -> BTreeSet<String> {
    let mut args = vec!["--json", "p2p", "discover"];
    if let Some(t) = tag {
        args.extend(["--tag", t]);
    }
    let v = json_of(&n.run(&args));
    v.as_array()
        .unwrap()
        .iter()
        .map(|c| c["did"].as_str().unwrap().to_owned())
        .collect()
}

fn connected(n: &Node) -> BTreeSet<String> {
    json_of(&n.run(&["--json", "p2p", "peers"]))
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["peerId"].as_str().unwrap().to_owned())
        .collect()
}

fn status(n: &Node) -> Value {
    json_of(&n.run(&["--json", "p2p", "status"]))
}

fn bootstrap_cfg(addr: &str) -> String {
    format!("bootstrapPeers = [\"{addr}\"]")
}

/// Starts a bootstrap node A and two nodes B, C that know only A.
fn three_nodes() -> ((Node, Serving), (Node, Serving), (Node, Serving)) {
    let a = Node::for_serve("", "[a2a]\nagentName = \"alpha\"\n");
    let sa = a.serve();
    let boot = bootstrap_cfg(&sa.tcp_addr());
    let b = Node::for_serve(
        &boot,
        "[a2a]\nagentName = \"bravo\"\ncapabilities = [\"translate\"]\n",
    );
    let sb = b.serve();
    let c = Node::for_serve(&boot, "[a2a]\nagentName = \"charlie\"\n");
    let sc = c.serve();
    ((a, sa), (b, sb), (c, sc))
}

#[test]
fn three_nodes_find_each_other_through_one_bootstrap_and_exchange_cards() {
    let ((a, sa), (b, sb), (c, sc)) = three_nodes();
    let dids: BTreeSet<String> = [sa.did(), sb.did(), sc.did()]
        .iter()
        .map(|s| s.to_string())
        .collect();
    assert_eq!(dids.len(), 3, "three distinct identities");

    // The bootstrap node sees both others as connected peers.
    let peers = wait_for(30, || {
        let p = connected(&a);
        (p.contains(sb.peer_id()) && p.contains(sc.peer_id())).then_some(p)
    });
    assert!(peers.is_some(), "A's peers: {:?}", connected(&a));

    // Every node discovers the other two agents' cards (B and C only through A).
    for (n, s) in [(&a, &sa), (&b, &sb), (&c, &sc)] {
        let want: BTreeSet<String> = dids.iter().filter(|d| *d != s.did()).cloned().collect();
        let got = wait_for(45, || {
            let d = discovered(n, None);
            (d == want).then_some(d)
        });
        assert!(
            got.is_some(),
            "{} discovered {:?}, wanted {:?}\n{}",
            s.peer_id(),
            discovered(n, None),
            want,
            s.log()
        );
    }

    // Cards are signed by the agents' wallets and shown as verified; lookup by capability.
    let cards = json_of(&c.run(&["--json", "p2p", "discover"]));
    for card in cards.as_array().unwrap() {
        assert_eq!(card["verified"], Value::Bool(true), "{card}");
        assert_eq!(card["signatureAlgorithm"], "secp256k1-keccak256");
    }
    let tagged = discovered(&c, Some("translate"));
    assert_eq!(tagged, BTreeSet::from([sb.did().to_owned()]));
    let text = stdout(&c.run(&["p2p", "discover"]));
    assert!(text.starts_with("NAME"), "{text}");
    assert!(text.contains("bravo") && text.contains("yes"), "{text}");

    // Text formats of status and peers.
    let st = stdout(&a.run(&["p2p", "status"]));
    assert!(
        st.starts_with("P2P Node Status\n  Peer ID:          "),
        "{st}"
    );
    assert!(st.contains("Connected Peers:  2 / 50"), "{st}");
    let pt = stdout(&a.run(&["p2p", "peers"]));
    assert!(pt.starts_with("PEER ID"), "{pt}");

    // A clean shutdown on SIGTERM removes the admin socket.
    assert!(sb.stop().success());
    assert!(!b.data_dir().join("admin.sock").exists());
    let o = b.run(&["p2p", "peers"]);
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("no lango node is running"),
        "{}",
        stderr(&o)
    );
    drop(sc);
}

#[test]
fn a_pinned_bootstrap_with_the_wrong_peer_id_is_refused() {
    let a = Node::for_serve("", "");
    let sa = a.serve();
    let other = Node::for_serve("", "");
    let so = other.serve();
    // A's address, but pinned to another node's peer ID.
    let addr = sa.tcp_addr().replace(sa.peer_id(), so.peer_id());
    let d = Node::for_serve(&bootstrap_cfg(&addr), "");
    let sd = d.serve();
    let refused = wait_for(30, || {
        let s = status(&d);
        (s["bootstrapRefused"].as_u64().unwrap_or(0) >= 1).then_some(s)
    });
    assert!(refused.is_some(), "status: {}\n{}", status(&d), sd.log());
    assert!(!connected(&d).contains(sa.peer_id()));
    assert!(sd.log().contains("bootstrap_pin_mismatch"), "{}", sd.log());

    // Connecting by hand with the wrong pin fails the same way, with the reference wording.
    let o = d.run(&["p2p", "connect", &addr]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("connect to"), "{}", stderr(&o));
    // The right pin works, and disconnect reports it.
    let o = d.run(&["p2p", "connect", &sa.tcp_addr()]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(
        stdout(&o).lines().next().unwrap_or_default(),
        format!("Connected to peer {}", sa.peer_id())
    );
    let o = d.run(&["p2p", "disconnect", sa.peer_id()]);
    assert_eq!(
        stdout(&o).trim(),
        format!("Disconnected from peer {}", sa.peer_id())
    );
    let o = d.run(&["p2p", "connect", "/ip4/127.0.0.1/tcp/1"]);
    assert!(stderr(&o).contains("parse peer info"), "{}", stderr(&o));
}

#[test]
fn revoking_a_did_deletes_its_card_refuses_new_ones_and_survives_a_restart() {
    let ((a, sa), (_b, sb), (_c, sc)) = three_nodes();
    let got = wait_for(45, || {
        let d = discovered(&a, None);
        (d.contains(sb.did()) && d.contains(sc.did())).then_some(d)
    });
    assert!(got.is_some(), "{}", sa.log());

    let o = a.run(&["p2p", "revoke", sb.did(), "--reason", "compromised"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(stdout(&o).trim(), format!("Revoked {}.", sb.did()));
    // The card is gone at once, and B's next publications are rejected as revoked.
    assert!(!discovered(&a, None).contains(sb.did()));
    let counted = wait_for(20, || {
        let s = status(&a);
        (s["cardsRejected"]["revoked"].as_u64().unwrap_or(0) >= 1).then_some(s)
    });
    assert!(counted.is_some(), "{}", status(&a));
    assert!(!discovered(&a, None).contains(sb.did()));
    let again = a.run(&["p2p", "revoke", sb.did()]);
    assert!(
        stdout(&again).contains("already revoked"),
        "{}",
        stdout(&again)
    );

    // Restart A: the revocation was persisted.
    let a_peer = sa.peer_id().to_owned();
    assert!(sa.stop().success());
    let listed = json_of(&a.run(&["--json", "p2p", "revocations"]));
    assert_eq!(listed[0]["did"], sb.did());
    assert_eq!(listed[0]["source"], "runtime");
    assert_eq!(listed[0]["reason"], "compromised");
    let sa2 = a.serve();
    assert_eq!(sa2.peer_id(), a_peer, "same identity after restart");
    // C authenticates; B's DID is revoked, so the handshake with B is refused, though the
    // transport connection (and with it B's gossip, which A must reject) stays up.
    let o = a.run(&["p2p", "connect", &sc.tcp_addr()]);
    assert!(o.status.success(), "{}", stderr(&o));
    let o = a.run(&["p2p", "connect", &sb.tcp_addr()]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("peer DID is revoked"), "{}", stderr(&o));
    assert!(connected(&a).contains(sb.peer_id()));
    let c_back = wait_for(30, || discovered(&a, None).contains(sc.did()).then_some(()));
    assert!(c_back.is_some(), "{}", sa2.log());
    let refused = wait_for(20, || {
        let s = status(&a);
        (s["cardsRejected"]["revoked"].as_u64().unwrap_or(0) >= 1).then_some(s)
    });
    assert!(refused.is_some(), "{}", status(&a));
    assert!(!discovered(&a, None).contains(sb.did()));
}

#[test]
fn legacy_node_key_is_migrated_and_the_identity_survives_restarts() {
    let n = Node::for_serve("", "");
    let key = lango_crypto::node_key::NodeKey::generate().unwrap();
    let dir = n.data_dir().join("p2p");
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("node.key");
    std::fs::write(&file, key.to_protobuf().expose()).unwrap();
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700)).unwrap();
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).unwrap();
    }
    // First start creates the vault, migrates the file, deletes it.
    let s = n.serve();
    assert_eq!(s.peer_id(), key.peer_id());
    assert_eq!(s.started["keyOrigin"], "migrated");
    assert_eq!(s.started["keyStorage"], "secrets-store");
    assert!(!file.exists(), "legacy file deleted after a verified copy");
    let did = s.did().to_owned();
    assert!(s.stop().success());

    // Reputation reads the local database when no node runs (nothing recorded yet).
    let o = n.run(&["p2p", "reputation", &did]);
    assert_eq!(
        stdout(&o),
        format!("No reputation record found for {did}\n")
    );
    let v = json_of(&n.run(&["--json", "p2p", "reputation", "--peer-did", &did]));
    assert_eq!(v["message"], "no reputation record found");
    assert_eq!(v["trustScore"], 0);
    assert_eq!(
        stdout(&n.run(&["p2p", "reputation"])),
        "No reputation records.\n"
    );
    let o = n.run(&["p2p", "reputation", "did:lango:XYZ"]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("invalid DID"), "{}", stderr(&o));

    // Without a node: identity from the store, same peer ID and DID.
    let v = json_of(&n.run(&["--json", "p2p", "identity"]));
    assert_eq!(v["peerId"], key.peer_id());
    assert_eq!(v["did"], did);
    assert_eq!(v["keyStorage"], "secrets-store");
    assert_eq!(v["keyOrigin"], "stored");
    let text = stdout(&n.run(&["p2p", "identity"]));
    assert!(
        text.starts_with(&format!(
            "P2P Identity\n  Peer ID:      {}\n  DID:          {did}\n  Key Storage:  secrets-store\n  Listen Addrs:\n",
            key.peer_id()
        )),
        "{text}"
    );
    // Restart: same identity, loaded.
    let s2 = n.serve();
    assert_eq!(s2.peer_id(), key.peer_id());
    assert_eq!(s2.did(), did);
    assert_eq!(s2.started["keyOrigin"], "stored");
    // With the node running, identity comes from it.
    let v = json_of(&n.run(&["--json", "p2p", "identity"]));
    assert_eq!(v["peerId"], key.peer_id());
}

#[test]
fn admin_socket_is_owner_only_and_commands_need_a_running_node() {
    use std::os::unix::fs::PermissionsExt;
    let n = Node::for_serve("", "");
    let o = n.run(&["p2p", "status"]);
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("no lango node is running"),
        "{}",
        stderr(&o)
    );
    let s = n.serve();
    let sock = n.data_dir().join("admin.sock");
    let mode = std::fs::metadata(&sock).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    let dir_mode = std::fs::metadata(n.data_dir())
        .unwrap()
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(dir_mode, 0o700);

    // Another user cannot connect. This needs root to switch users; as a normal user the
    // file modes above are the check.
    let euid = std::process::Command::new("id").arg("-u").output().unwrap();
    if stdout(&euid).trim() == "0" {
        if !component::require(
            "admin_socket_other_user",
            "python3",
            component::program("python3"),
        ) {
            return;
        }
        let script = "import os,socket,sys\n\
                      os.setgroups([]); os.setgid(65534); os.setuid(65534)\n\
                      s=socket.socket(socket.AF_UNIX)\n\
                      try:\n  s.connect(sys.argv[1]); s.sendall(b'{\"cmd\":\"status\"}\\n'); print('answer:', s.recv(100))\n\
                      except PermissionError as e:\n  print('refused', e)\n";
        let o = std::process::Command::new("python3")
            .args(["-c", script])
            .arg(&sock)
            .output()
            .unwrap();
        assert!(
            stdout(&o).starts_with("refused"),
            "{}{}",
            stdout(&o),
            stderr(&o)
        );

        // Second gate: with the file modes opened up (inside this test's own data dir), the
        // node still refuses the other user by its SO_PEERCRED uid and answers nothing.
        std::fs::set_permissions(n.data_dir(), std::fs::Permissions::from_mode(0o711)).unwrap();
        std::fs::set_permissions(&sock, std::fs::Permissions::from_mode(0o666)).unwrap();
        let closed = "import os,socket,sys\n\
                      os.setgroups([]); os.setgid(65534); os.setuid(65534)\n\
                      s=socket.socket(socket.AF_UNIX); s.connect(sys.argv[1])\n\
                      try:\n  s.sendall(b'{\"cmd\":\"status\"}\\n'); a=s.recv(100)\n\
                      except (BrokenPipeError, ConnectionResetError):\n  a=b''\n\
                      print('closed' if a==b'' else 'answer: '+repr(a))\n";
        let o = std::process::Command::new("python3")
            .args(["-c", closed])
            .arg(&sock)
            .output()
            .unwrap();
        std::fs::set_permissions(&sock, std::fs::Permissions::from_mode(0o600)).unwrap();
        std::fs::set_permissions(n.data_dir(), std::fs::Permissions::from_mode(0o700)).unwrap();
        assert_eq!(stdout(&o).trim(), "closed", "{}{}", stdout(&o), stderr(&o));
        let logged = wait_for(5, || s.log().contains("admin_refused").then_some(()));
        assert!(logged.is_some(), "{}", s.log());
    }
    // The owner can.
    assert_eq!(status(&n)["peerId"], s.peer_id());
}
