//! `lango-node zkp` as a new user runs it (issue 8): four circuits with their digests, a
//! proof made by one process (its own data directory) verified by another, a modified
//! proof or another statement refused with a clear message, and the parameter cache
//! checked and rebuilt.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::PathBuf;

use lango_e2e::{Node, stderr, stdout};
use serde_json::Value;

fn example(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../examples/zkp")
        .join(name)
}

fn ok(o: &std::process::Output) -> String {
    assert!(o.status.success(), "{}\n{}", stdout(o), stderr(o));
    stdout(o)
}

#[test]
fn circuits_list_four_ids_with_the_golden_digests() {
    let n = Node::new();
    let list: Value = serde_json::from_str(&ok(&n.run(&["--json", "zkp", "circuits"]))).unwrap();
    let golden: Value = serde_json::from_str(include_str!(
        "../../crates/lango-zkp/golden/vk-digests.json"
    ))
    .unwrap();
    let list = list.as_array().unwrap();
    assert_eq!(list.len(), 4);
    for c in list {
        let id = c["circuitId"].as_str().unwrap();
        assert_eq!(c["vkDigest"], golden[id], "{id}");
        assert_eq!(c["scheme"], "halo2-ipa-pasta");
    }
    let text = ok(&n.run(&["zkp", "circuits"]));
    assert!(
        text.contains("wallet_ownership/v2") && text.contains("balance_range/v2"),
        "{text}"
    );
}

#[test]
fn a_proof_from_one_process_verifies_in_another_and_a_modified_one_does_not() {
    let prover = Node::new();
    let verifier = Node::new();
    let proof = prover.data_dir().join("proof.json");
    let out = ok(&prover.run(&[
        "zkp",
        "prove",
        "wallet_ownership/v2",
        "--inputs",
        example("wallet_ownership.json").to_str().unwrap(),
        "--out",
        proof.to_str().unwrap(),
    ]));
    assert!(out.contains("Proved wallet_ownership/v2"), "{out}");
    let statement = example("wallet_ownership.statement.json");
    let args = |p: &str| {
        vec![
            "zkp".to_owned(),
            "verify".to_owned(),
            "wallet_ownership/v2".to_owned(),
            "--proof".to_owned(),
            p.to_owned(),
            "--inputs".to_owned(),
            statement.to_str().unwrap().to_owned(),
        ]
    };
    let a = args(proof.to_str().unwrap());
    let v = ok(&verifier.run(&a.iter().map(String::as_str).collect::<Vec<_>>()));
    assert!(v.contains("Proof verifies"), "{v}");

    // One byte of the transcript changed.
    let mut doc: Value = serde_json::from_slice(&std::fs::read(&proof).unwrap()).unwrap();
    use base64::Engine;
    let b64 = base64::engine::general_purpose::STANDARD;
    let mut bytes = b64.decode(doc["proof"].as_str().unwrap()).unwrap();
    bytes[200] ^= 0x01;
    doc["proof"] = b64.encode(&bytes).into();
    let bad = verifier.data_dir().join("bad.json");
    std::fs::write(&bad, serde_json::to_vec(&doc).unwrap()).unwrap();
    let a = args(bad.to_str().unwrap());
    let o = verifier.run(&a.iter().map(String::as_str).collect::<Vec<_>>());
    assert!(!o.status.success());
    let e = stderr(&o);
    assert!(
        e.contains("the proof does not verify for wallet_ownership/v2")
            || e.contains("malformed proof"),
        "{e}"
    );

    // The same proof against another nonce (a replay into another handshake).
    let mut st: Value = serde_json::from_slice(&std::fs::read(&statement).unwrap()).unwrap();
    st["nonce"] = "00".repeat(32).into();
    let other = verifier.data_dir().join("other.json");
    std::fs::write(&other, serde_json::to_vec(&st).unwrap()).unwrap();
    let o = verifier.run(&[
        "zkp",
        "verify",
        "wallet_ownership/v2",
        "--proof",
        proof.to_str().unwrap(),
        "--inputs",
        other.to_str().unwrap(),
    ]);
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("its public input binding differs"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn the_parameter_cache_is_checked_and_rebuilt() {
    let n = Node::new();
    let o = n.run(&["zkp", "params", "--verify"]);
    assert!(!o.status.success(), "an empty cache verified");
    let built: Value = serde_json::from_str(&ok(&n.run(&["--json", "zkp", "params"]))).unwrap();
    assert_eq!(built.as_array().unwrap().len(), 2);
    ok(&n.run(&["zkp", "params", "--verify"]));
    let file = n.data_dir().join("zkp/params-k11.bin");
    let mut bytes = std::fs::read(&file).unwrap();
    bytes[1000] ^= 0x80;
    std::fs::write(&file, &bytes).unwrap();
    let o = n.run(&["zkp", "params", "--verify"]);
    assert!(!o.status.success());
    assert!(
        stdout(&o).contains("does not match the pinned digest"),
        "{}",
        stdout(&o)
    );
    let again = ok(&n.run(&["zkp", "params"]));
    assert!(again.contains("built"), "{again}");
    ok(&n.run(&["zkp", "params", "--verify"]));
}

#[test]
fn bad_inputs_get_clear_errors() {
    let n = Node::new();
    let o = n.run(&[
        "zkp",
        "prove",
        "nope/v2",
        "--inputs",
        example("balance_range.json").to_str().unwrap(),
    ]);
    assert!(
        stderr(&o).contains("unknown circuit \"nope/v2\""),
        "{}",
        stderr(&o)
    );
    // The ownership inputs lack what the balance circuit needs.
    let o = n.run(&[
        "zkp",
        "prove",
        "balance_range/v2",
        "--inputs",
        example("wallet_ownership.json").to_str().unwrap(),
    ]);
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("is required for this circuit"),
        "{}",
        stderr(&o)
    );
    // A balance under the threshold is refused before any proof is made.
    let mut doc: Value =
        serde_json::from_slice(&std::fs::read(example("balance_range.json")).unwrap()).unwrap();
    doc["threshold"] = 3_000_000_000u64.into();
    let f = n.data_dir().join("low.json");
    std::fs::create_dir_all(n.data_dir()).unwrap();
    std::fs::write(&f, serde_json::to_vec(&doc).unwrap()).unwrap();
    let o = n.run(&[
        "zkp",
        "prove",
        "balance_range/v2",
        "--inputs",
        f.to_str().unwrap(),
    ]);
    assert!(
        stderr(&o).contains("is below the threshold"),
        "{}",
        stderr(&o)
    );
}
