//! Real proofs through the prover service (spec §5.3, §5.4): keygen once, prove, verify;
//! every tampered public input, a wrong secret, another circuit, flipped, truncated and
//! oversized proof bytes, replay with another binding; golden verifying-key digests; a
//! bounded pool; and a proof made in another process verifying here.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::{Arc, OnceLock};

use ff::Field;
use lango_zkp::{
    CircuitId, Error, Fp, IdentitySecret, Proof, ProverService, Witness, circuits::Private,
    encoding::ownership_binding, params::ParamsSource, testing::example_witness as witness,
    wire::ProofJson,
};

/// One service for the whole test binary: key generation is the slow part.
fn service() -> &'static ProverService {
    static S: OnceLock<ProverService> = OnceLock::new();
    S.get_or_init(|| {
        let s = ProverService::new(ParamsSource::Memory);
        for id in CircuitId::ALL {
            s.compile(id).unwrap();
        }
        s
    })
}

fn proved(id: CircuitId) -> (Proof, Vec<Fp>) {
    let w = witness(id, IdentitySecret::generate().unwrap());
    let public = w.public_inputs().unwrap();
    (service().prove(&w).unwrap(), public)
}

#[test]
fn valid_proofs_verify_and_every_tampered_public_input_fails() {
    let s = service();
    for id in CircuitId::ALL {
        let (proof, public) = proved(id);
        assert_eq!(proof.public_inputs, public);
        assert!(s.verify(&proof, &public).unwrap(), "{id}");
        for row in 0..public.len() {
            let mut bad = public.clone();
            bad[row] += Fp::ONE;
            assert!(
                !s.verify(&proof, &bad).unwrap(),
                "{id}: row {row} + 1 verified"
            );
            assert_eq!(proof.differs_at(&bad), Some(id.public_input_names()[row]));
        }
    }
}

#[test]
fn a_forced_proof_from_a_wrong_secret_does_not_verify() {
    let s = service();
    let w = witness(
        CircuitId::WalletOwnershipV2,
        IdentitySecret::generate().unwrap(),
    );
    let public = w.public_inputs().unwrap();
    let other = Fp::from(12345);
    let forced = s
        .prove_unchecked(
            CircuitId::WalletOwnershipV2,
            Private::raw(other, Fp::ZERO, Fp::ZERO),
            public.clone(),
        )
        .unwrap();
    assert!(!s.verify(&forced, &public).unwrap());
    // The service itself refuses a witness that does not open the issued commitment.
    let Witness::Capability {
        sk,
        cap_id,
        salt,
        commitment,
        binding,
        ..
    } = witness(
        CircuitId::AgentCapabilityV2,
        IdentitySecret::generate().unwrap(),
    )
    else {
        unreachable!()
    };
    let lie = Witness::Capability {
        sk,
        cap_id,
        score: 95,
        salt,
        commitment,
        min_score: 90,
        binding,
    };
    assert!(matches!(s.prove(&lie), Err(Error::UnsatisfiedWitness(_))));
}

#[test]
fn replayed_ownership_proofs_fail_for_another_challenge() {
    let s = service();
    let sk = IdentitySecret::generate().unwrap();
    let id = sk.commitment();
    let nonce = [1u8; 32];
    let b = |n: &[u8; 32], i: &str, r: &str, p: &str| ownership_binding(n, i, r, p).unwrap();
    let binding = b(
        &nonce,
        "did:lango:a",
        "did:lango:b",
        "/lango/handshake/1.1.0",
    );
    let proof = s.prove(&Witness::Ownership { sk, binding }).unwrap();
    let tag = proof.public_inputs[2];
    assert!(s.verify(&proof, &[id, binding, tag]).unwrap());
    for other in [
        b(
            &[2u8; 32],
            "did:lango:a",
            "did:lango:b",
            "/lango/handshake/1.1.0",
        ),
        b(
            &nonce,
            "did:lango:b",
            "did:lango:a",
            "/lango/handshake/1.1.0",
        ),
        b(
            &nonce,
            "did:lango:a",
            "did:lango:c",
            "/lango/handshake/1.1.0",
        ),
        b(
            &nonce,
            "did:lango:a",
            "did:lango:b",
            "/lango/handshake/1.0.0",
        ),
    ] {
        assert!(!s.verify(&proof, &[id, other, tag]).unwrap());
    }
}

#[test]
fn a_proof_for_one_circuit_fails_as_another() {
    let s = service();
    let (att, att_public) = proved(CircuitId::ResponseAttestationV2);
    let (cap, cap_public) = proved(CircuitId::AgentCapabilityV2);
    // Same k, same arity: relabelled, it does not verify.
    let relabelled = Proof {
        circuit: CircuitId::BalanceRangeV2,
        vk_digest: None,
        ..cap.clone()
    };
    assert!(!s.verify(&relabelled, &cap_public).unwrap());
    // Another arity: refused before verification.
    let relabelled = Proof {
        circuit: CircuitId::AgentCapabilityV2,
        vk_digest: None,
        ..att.clone()
    };
    assert!(matches!(
        s.verify(&relabelled, &att_public),
        Err(Error::PublicInputArity {
            want: 6,
            got: 8,
            ..
        })
    ));
    // With its digest, the mismatch is named.
    let relabelled = Proof {
        circuit: CircuitId::BalanceRangeV2,
        ..cap.clone()
    };
    assert!(matches!(
        s.verify(&relabelled, &cap_public),
        Err(Error::VersionMismatch { .. })
    ));
    // Another proof's statement of the same circuit.
    let (cap2, cap2_public) = proved(CircuitId::AgentCapabilityV2);
    assert!(!s.verify(&cap, &cap2_public).unwrap());
    assert!(s.verify(&cap2, &cap2_public).unwrap());
}

#[test]
fn damaged_proof_bytes_never_verify() {
    let s = service();
    let (proof, public) = proved(CircuitId::WalletOwnershipV2);
    for i in 0..64 {
        let mut p = proof.clone();
        p.data[i] ^= 0x01;
        match s.verify(&p, &public) {
            Ok(false) | Err(Error::MalformedProof(_)) => {}
            other => panic!("byte {i} flipped: {other:?}"),
        }
    }
    let cut = |n: usize| Proof {
        data: proof.data[..n].to_vec(),
        ..proof.clone()
    };
    assert!(matches!(s.verify(&cut(0), &public), Err(Error::EmptyProof)));
    assert!(matches!(
        s.verify(&cut(1), &public),
        Err(Error::MalformedProof(_))
    ));
    assert!(matches!(
        s.verify(&cut(proof.data.len() / 2), &public),
        Err(Error::MalformedProof(_))
    ));
    let mut long = proof.clone();
    long.data.push(0);
    assert!(
        matches!(s.verify(&long, &public), Err(Error::MalformedProof(m)) if m.contains("trailing"))
    );
    let mut huge = proof.clone();
    huge.data.resize(lango_zkp::DEFAULT_MAX_PROOF_BYTES + 1, 0);
    assert!(matches!(
        s.verify(&huge, &public),
        Err(Error::ProofTooLarge { .. })
    ));
    let plonk = Proof {
        scheme: "plonk".into(),
        ..proof.clone()
    };
    let e = s.verify(&plonk, &public).unwrap_err();
    assert!(e.to_string().contains("unsupported proving scheme"), "{e}");
    assert_eq!(Error::EmptyProof.to_string(), "empty proof");
}

#[test]
fn the_service_compiles_once_and_names_unknown_and_uncompiled_circuits() {
    let s = ProverService::new(ParamsSource::Memory);
    assert!(!s.is_compiled(CircuitId::WalletOwnershipV2));
    let w = witness(
        CircuitId::WalletOwnershipV2,
        IdentitySecret::generate().unwrap(),
    );
    let e = s.prove(&w).unwrap_err();
    assert!(e.to_string().contains("not compiled"), "{e}");
    s.compile(CircuitId::WalletOwnershipV2).unwrap();
    s.compile(CircuitId::WalletOwnershipV2).unwrap();
    assert_eq!(s.keygen_count(), 1, "the second compile did work");
    assert!(s.is_compiled(CircuitId::WalletOwnershipV2));
    assert!(matches!(
        "groth16/ownership".parse::<CircuitId>(),
        Err(Error::UnknownCircuit(_))
    ));
    assert!(matches!(
        "wallet_ownership".parse::<CircuitId>(),
        Err(Error::UnknownCircuit(_))
    ));
}

/// Verifying-key digests recorded in the repository: a change to any circuit changes its
/// digest and must come with a new `/vN` identifier.
#[test]
fn verifying_key_digests_match_the_golden_file() {
    let golden: serde_json::Value =
        serde_json::from_str(include_str!("../golden/vk-digests.json")).unwrap();
    for id in CircuitId::ALL {
        assert_eq!(
            hex::encode(service().vk_digest(id).unwrap()),
            golden[id.as_str()].as_str().unwrap(),
            "{id}"
        );
    }
}

#[test]
fn proofs_round_trip_through_json() {
    let (proof, public) = proved(CircuitId::BalanceRangeV2);
    let json = serde_json::to_vec(&ProofJson::from(&proof)).unwrap();
    let back = ProofJson::from_slice(&json)
        .unwrap()
        .decode(16 * 1024)
        .unwrap();
    assert_eq!(back, proof);
    assert!(service().verify(&back, &public).unwrap());
    let mut v: serde_json::Value = serde_json::from_slice(&json).unwrap();
    v["circuitId"] = "balance_range".into();
    let e = serde_json::from_value::<ProofJson>(v)
        .unwrap()
        .decode(16 * 1024)
        .unwrap_err();
    assert!(matches!(e, Error::UnknownCircuit(_)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eight_parallel_proofs_share_a_two_slot_pool() {
    let s = Arc::new(ProverService::with_pool(ParamsSource::Memory, 2));
    s.compile_async(CircuitId::WalletOwnershipV2).await.unwrap();
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let s = s.clone();
        tasks.push(tokio::spawn(async move {
            let w = witness(
                CircuitId::WalletOwnershipV2,
                IdentitySecret::generate().unwrap(),
            );
            let public = w.public_inputs().unwrap();
            let proof = s.prove_async(w).await.unwrap();
            s.verify_async(proof, public).await.unwrap()
        }));
    }
    for t in tasks {
        assert!(t.await.unwrap());
    }
    // The blocking pool has far more than two threads: only the permits keep it at two.
    assert_eq!(
        s.peak_concurrency(),
        2,
        "the pool was not used to its limit, or exceeded it"
    );
}

/// Callers that give up (their futures dropped mid-proof, as a timed-out request does) do not
/// free their pool slot while the proof still runs: a one-slot pool never runs two at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropped_callers_keep_their_slot_until_the_proof_ends() {
    let s = Arc::new(ProverService::with_pool(ParamsSource::Memory, 1));
    s.compile_async(CircuitId::WalletOwnershipV2).await.unwrap();
    let prove = |s: Arc<ProverService>| async move {
        let w = witness(
            CircuitId::WalletOwnershipV2,
            IdentitySecret::generate().unwrap(),
        );
        s.prove_async(w).await
    };
    for _ in 0..4 {
        // Gives up long before the proof (tens of ms) ends.
        let _ = tokio::time::timeout(std::time::Duration::from_millis(2), prove(s.clone())).await;
    }
    let proof = prove(s.clone()).await.unwrap();
    assert_eq!(proof.circuit, CircuitId::WalletOwnershipV2);
    assert_eq!(
        s.peak_concurrency(),
        1,
        "abandoned proofs ran beside a new one on a one-slot pool"
    );
}
