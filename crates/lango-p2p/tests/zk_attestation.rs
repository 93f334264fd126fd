//! Response attestations with real Halo2 proofs (kms-and-zk spec §3.11.2, §3.14.3, §5.4.9):
//! a responder's attestation verifies for the requester's own request, result bytes and
//! window; one changed byte, another request, another window, an identity the responder's
//! wallet did not certify, or a Go-style attestation do not.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::{Arc, OnceLock};

use lango_crypto::wallet::WalletKey;
use lango_p2p::{
    a2a::{AttestRequest, Attester, ZkAttest},
    protocol::Attestation,
    zk::{AttestationCheck, AttestationError, ZkAttester, id_binding_message, verify_attestation},
};
use lango_zkp::{IdentitySecret, ProverService, params::ParamsSource};

fn service() -> Arc<ProverService> {
    static S: OnceLock<Arc<ProverService>> = OnceLock::new();
    S.get_or_init(|| Arc::new(ProverService::new(ParamsSource::Memory)))
        .clone()
}

const REQUESTER: &str =
    "did:lango:02a1b2c3d4e5f60718293a4b5c6d7e8f90a1b2c3d4e5f60718293a4b5c6d7e8f90";
const RESULT: &[u8] = br#"{"echo":{"text":"hello"}}"#;

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn window() -> ZkAttest {
    ZkAttest {
        nonce: [5u8; 32],
        min_ts: now() - 300,
        max_ts: now() + 30,
    }
}

struct Responder {
    attester: ZkAttester,
    did: String,
    wallet: WalletKey,
}

async fn responder() -> Responder {
    let wallet = WalletKey::generate().unwrap();
    let attester = ZkAttester::new(service(), IdentitySecret::generate().unwrap(), &wallet)
        .await
        .unwrap();
    Responder {
        attester,
        did: wallet.did().as_str().to_owned(),
        wallet,
    }
}

async fn attest(r: &Responder, zk: Option<ZkAttest>) -> Attestation {
    r.attester
        .attest(AttestRequest {
            request_id: "req-1",
            requester_did: REQUESTER,
            request_type: "tool_invoke",
            tool_name: "echo",
            result_bytes: RESULT,
            zk_attest: zk,
        })
        .await
        .unwrap()
        .unwrap()
}

fn check<'a>(r: &'a Responder, zk: Option<ZkAttest>) -> AttestationCheck<'a> {
    AttestationCheck {
        request_id: "req-1",
        requester_did: REQUESTER,
        responder_did: &r.did,
        request_type: "tool_invoke",
        tool_name: "echo",
        zk_attest: zk,
        result_bytes: RESULT,
    }
}

async fn verify(a: &Attestation, c: &AttestationCheck<'_>) -> Result<(), AttestationError> {
    verify_attestation(&service(), Some(a), c).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_attestation_verifies_only_for_its_request_result_and_window() {
    let r = responder().await;
    let z = window();
    let a = attest(&r, Some(z)).await;
    assert_eq!(a.circuit_id, "response_attestation/v2");
    assert_eq!(a.scheme, "halo2-ipa-pasta");
    verify(&a, &check(&r, Some(z))).await.unwrap();

    let bad = |e: Result<(), AttestationError>| matches!(e, Err(AttestationError::Invalid(_)));
    // One byte of the result changed.
    let mut c = check(&r, Some(z));
    c.result_bytes = br#"{"echo":{"text":"hellO"}}"#;
    assert!(bad(verify(&a, &c).await), "changed result");
    // Another request, requester, tool, or type.
    for (field, c) in [
        (
            "request id",
            AttestationCheck {
                request_id: "req-2",
                ..check(&r, Some(z))
            },
        ),
        (
            "requester",
            AttestationCheck {
                requester_did: &r.did,
                ..check(&r, Some(z))
            },
        ),
        (
            "tool",
            AttestationCheck {
                tool_name: "rm",
                ..check(&r, Some(z))
            },
        ),
        (
            "type",
            AttestationCheck {
                request_type: "tool_invoke_paid",
                ..check(&r, Some(z))
            },
        ),
    ] {
        assert!(bad(verify(&a, &c).await), "{field}");
    }
    // Another nonce or window than the one this requester chose.
    let other_nonce = ZkAttest {
        nonce: [6u8; 32],
        ..z
    };
    assert!(
        bad(verify(&a, &check(&r, Some(other_nonce))).await),
        "nonce"
    );
    let later = ZkAttest {
        min_ts: z.min_ts + 1000,
        max_ts: z.max_ts + 1000,
        ..z
    };
    assert!(bad(verify(&a, &check(&r, Some(later))).await), "window");
    // A recorded attestation replayed to a requester that asked with its own nonce.
    let replay = attest(&r, None).await;
    assert!(
        bad(verify(&replay, &check(&r, Some(z))).await),
        "replayed to another requester nonce"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_requested_window_the_time_is_checked_against_the_local_clock() {
    let r = responder().await;
    let a = attest(&r, None).await;
    verify(&a, &check(&r, None)).await.unwrap();
    // The responder's window claims to be wider than the default: refused before the proof.
    let mut wide = a.clone();
    wide.min_timestamp = Some(0);
    let e = verify(&wide, &check(&r, None)).await.unwrap_err();
    assert!(
        matches!(e, AttestationError::Invalid(ref m) if m.contains("not recent")),
        "{e}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn identities_must_be_certified_by_the_responders_wallet() {
    let r = responder().await;
    let z = window();
    let a = attest(&r, Some(z)).await;
    // Claimed by another DID: the certificate names r's DID and key.
    let other = responder().await;
    let c = AttestationCheck {
        responder_did: &other.did,
        ..check(&r, Some(z))
    };
    assert!(matches!(
        verify(&a, &c).await,
        Err(AttestationError::Invalid(_))
    ));
    // A certificate from another wallet over r's identity commitment.
    let mut forged = a.clone();
    let id = lango_zkp::encoding::fe_from_bytes(forged.id_commitment.as_ref().unwrap()).unwrap();
    forged.id_binding = Some(
        other
            .wallet
            .sign_message(&id_binding_message(&id, &r.did))
            .unwrap()
            .to_bytes()
            .to_vec(),
    );
    let e = verify(&forged, &check(&r, Some(z))).await.unwrap_err();
    assert!(
        matches!(e, AttestationError::Invalid(ref m) if m.contains("not certified")),
        "{e}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_and_go_style_attestations_count_as_absent() {
    let r = responder().await;
    let c = check(&r, None);
    assert_eq!(
        verify_attestation(&service(), None, &c).await,
        Err(AttestationError::Absent)
    );
    let a = attest(&r, None).await;
    let go = Attestation {
        scheme: "plonk".into(),
        ..a.clone()
    };
    assert_eq!(verify(&go, &c).await, Err(AttestationError::Absent));
    let v1 = Attestation {
        circuit_id: "attestation".into(),
        ..a.clone()
    };
    assert_eq!(verify(&v1, &c).await, Err(AttestationError::Absent));
    // The wire form round-trips, optional keys omitted when absent.
    let json = serde_json::to_value(&a).unwrap();
    assert!(json["idCommitment"].is_string() && json["vkDigest"].is_string());
    let back: Attestation = serde_json::from_value(json).unwrap();
    assert_eq!(back, a);
    let go_json = serde_json::json!({"proof": "AQID", "publicInputs": "", "circuitId": "attestation", "scheme": "plonk"});
    let go: Attestation = serde_json::from_value(go_json).unwrap();
    assert!(go.id_commitment.is_none() && go.timestamp.is_none());
}
