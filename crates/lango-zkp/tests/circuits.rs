//! Circuit soundness with `MockProver` (spec §5.3): valid statements pass; every public
//! input tampered, every out-of-range and wrap-around witness, and a too-small `k` fail.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use ff::Field;
use halo2_proofs::{dev::MockProver, pasta::Fp};
use lango_zkp::{
    CircuitId, IdentitySecret, Witness,
    circuits::{Attestation, Balance, Capability, Ownership, Private},
    encoding::{dom_bal, dom_cap, dom_id, fe_to_bytes, poseidon},
};

fn sk_fe(sk: &IdentitySecret) -> Fp {
    lango_zkp::encoding::fe_from_bytes(&sk.to_bytes()[..]).unwrap()
}

/// Runs the circuit `id` on `private` and `public`; `Err` lists why it is not satisfied.
fn mock_k(id: CircuitId, k: u32, p: Private, public: Vec<Fp>) -> Result<(), String> {
    let run = match id {
        CircuitId::WalletOwnershipV2 => MockProver::run(k, &Ownership(p), vec![public]),
        CircuitId::ResponseAttestationV2 => MockProver::run(k, &Attestation(p), vec![public]),
        CircuitId::AgentCapabilityV2 => MockProver::run(k, &Capability(p), vec![public]),
        CircuitId::BalanceRangeV2 => MockProver::run(k, &Balance(p), vec![public]),
    };
    match run {
        Ok(prover) => prover.verify().map_err(|e| format!("{e:?}")),
        Err(e) => Err(format!("{e:?}")),
    }
}

fn mock(id: CircuitId, p: Private, public: Vec<Fp>) -> Result<(), String> {
    mock_k(id, id.k(), p, public)
}

fn two64() -> Fp {
    Fp::from(u64::MAX) + Fp::ONE
}

/// A valid witness for each circuit.
fn valid(id: CircuitId) -> Witness {
    lango_zkp::testing::example_witness(id, IdentitySecret::generate().unwrap())
}

/// MockProver re-synthesises from the instance it is given, so it accepts any *true*
/// statement: moving a window bound while `T` stays inside it is one. With `T = min = max`
/// every change of a bound makes the statement false, and likewise a score or balance equal to
/// its threshold (the real verifier, which checks the
/// prover's copies of the instance, rejects any change: see tests/service.rs).
#[test]
fn valid_statements_pass_and_every_tampered_public_input_fails() {
    for id in CircuitId::ALL {
        let w = match valid(id) {
            Witness::Attestation {
                sk,
                response,
                req_binding,
                timestamp,
                ..
            } => Witness::Attestation {
                sk,
                response,
                req_binding,
                timestamp,
                min_timestamp: timestamp,
                max_timestamp: timestamp,
            },
            Witness::Capability {
                sk,
                cap_id,
                score,
                salt,
                commitment,
                binding,
                ..
            } => Witness::Capability {
                sk,
                cap_id,
                score,
                salt,
                commitment,
                min_score: score,
                binding,
            },
            Witness::Balance {
                sk,
                balance,
                as_of,
                salt,
                commitment,
                binding,
                ..
            } => Witness::Balance {
                sk,
                balance,
                as_of,
                salt,
                commitment,
                threshold: balance,
                binding,
            },
            w => w,
        };
        let public = w.public_inputs().unwrap();
        assert_eq!(public.len(), id.public_inputs());
        mock(id, Private::of(&w), public.clone()).unwrap_or_else(|e| panic!("{id}: {e}"));
        for row in 0..public.len() {
            let mut bad = public.clone();
            if id.public_input_names()[row] == "maxTimestamp" {
                bad[row] -= Fp::ONE;
            } else {
                bad[row] += Fp::ONE;
            }
            assert!(
                mock(id, Private::of(&w), bad).is_err(),
                "{id}: public input {row} ({}) + 1 still verifies",
                id.public_input_names()[row]
            );
        }
    }
}

#[test]
fn each_circuit_uses_the_smallest_k_that_fits() {
    for id in CircuitId::ALL {
        let w = valid(id);
        let e = mock_k(id, id.k() - 1, Private::of(&w), w.public_inputs().unwrap()).unwrap_err();
        assert!(e.contains("NotEnoughRowsAvailable"), "{id} at k − 1: {e}");
    }
    // And the ownership circuit needs no lookup table (k = 7, not 11).
    assert_eq!(CircuitId::WalletOwnershipV2.k(), 7);
}

#[test]
fn a_different_secret_does_not_satisfy_the_statement() {
    for id in CircuitId::ALL {
        let w = valid(id);
        let public = w.public_inputs().unwrap();
        let other = IdentitySecret::generate().unwrap();
        let p = Private::of(&w);
        let (a, b) = match &w {
            Witness::Capability { score, salt, .. } => (Fp::from(*score), *salt),
            Witness::Balance { balance, salt, .. } => (Fp::from(*balance), *salt),
            _ => (Fp::ZERO, Fp::ZERO),
        };
        let _ = p;
        assert!(
            mock(id, Private::raw(sk_fe(&other), a, b), public.clone()).is_err(),
            "{id}"
        );
        if matches!(id, CircuitId::AgentCapabilityV2 | CircuitId::BalanceRangeV2) {
            // Right identity, another salt or amount than committed.
            let w_sk = match &w {
                Witness::Capability { sk, .. } | Witness::Balance { sk, .. } => sk_fe(sk),
                _ => unreachable!(),
            };
            assert!(
                mock(id, Private::raw(w_sk, a, b + Fp::ONE), public.clone()).is_err(),
                "{id} salt"
            );
            assert!(
                mock(id, Private::raw(w_sk, a + Fp::ONE, b), public.clone()).is_err(),
                "{id} amount"
            );
        }
    }
}

/// Attestation public inputs for raw `t`, `min`, `max` (tag recomputed, so only the range
/// constraints can fail).
fn attestation(sk: Fp, t: Fp, min: Fp, max: Fp) -> (Private, Vec<Fp>) {
    let (lo, hi, req) = (Fp::from(1), Fp::from(2), Fp::from(3));
    let id = poseidon([dom_id(), sk]);
    let tag = poseidon([sk, lo, hi, req, t]);
    (
        Private::raw(sk, Fp::ZERO, Fp::ZERO),
        vec![id, lo, hi, req, t, min, max, tag],
    )
}

#[test]
fn attestation_timestamps_outside_the_window_or_64_bits_fail() {
    let sk = Fp::from(0x5ec);
    let at = |t: Fp, min: u64, max: u64| {
        let (p, public) = attestation(sk, t, Fp::from(min), Fp::from(max));
        mock(CircuitId::ResponseAttestationV2, p, public)
    };
    assert!(at(Fp::from(100), 100, 200).is_ok(), "T = min");
    assert!(at(Fp::from(200), 100, 200).is_ok(), "T = max");
    assert!(
        at(Fp::from(99), 100, 200).is_err(),
        "T = min − 1 (d = p − 1 wraps)"
    );
    assert!(at(Fp::from(201), 100, 200).is_err(), "T = max + 1");
    assert!(at(Fp::from(150), 200, 100).is_err(), "min > max");
    // T = 2^64 inside a window whose bounds are also beyond 64 bits.
    let (p, public) = attestation(sk, two64(), two64(), two64());
    assert!(
        mock(CircuitId::ResponseAttestationV2, p, public).is_err(),
        "T = min = max = 2^64"
    );
    let (p, public) = attestation(sk, -Fp::ONE, Fp::ZERO, -Fp::ONE);
    assert!(
        mock(CircuitId::ResponseAttestationV2, p, public).is_err(),
        "T = p − 1"
    );
}

fn capability(sk: Fp, score: Fp, min: Fp) -> (Private, Vec<Fp>) {
    let (cap_id, salt, binding) = (Fp::from(9), Fp::from(10), Fp::from(11));
    let id = poseidon([dom_id(), sk]);
    let commitment = poseidon([dom_cap(), id, cap_id, score, salt]);
    let tag = poseidon([sk, binding]);
    (
        Private::raw(sk, score, salt),
        vec![commitment, id, cap_id, min, binding, tag],
    )
}

#[test]
fn capability_scores_below_the_threshold_or_beyond_10_bits_fail() {
    let sk = Fp::from(0x5ec);
    let at = |score: Fp, min: Fp| {
        let (p, public) = capability(sk, score, min);
        mock(CircuitId::AgentCapabilityV2, p, public)
    };
    assert!(at(Fp::from(70), Fp::from(70)).is_ok(), "score = min");
    assert!(at(Fp::from(1023), Fp::from(0)).is_ok(), "largest score");
    assert!(at(Fp::from(69), Fp::from(70)).is_err(), "score = min − 1");
    assert!(at(Fp::from(1024), Fp::from(70)).is_err(), "score = 1024");
    assert!(at(Fp::from(1024), Fp::from(1024)).is_err(), "min = 1024");
    // The Go circuit's hole (W-5): a "negative" score p − 1 beats any threshold there.
    assert!(at(-Fp::ONE, Fp::from(70)).is_err(), "score = p − 1");
}

fn balance(sk: Fp, balance: Fp, threshold: Fp) -> (Private, Vec<Fp>) {
    let (as_of, salt, binding) = (Fp::from(5), Fp::from(6), Fp::from(7));
    let id = poseidon([dom_id(), sk]);
    let commitment = poseidon([dom_bal(), id, balance, as_of, salt]);
    let tag = poseidon([sk, binding]);
    (
        Private::raw(sk, balance, salt),
        vec![commitment, id, as_of, threshold, binding, tag],
    )
}

#[test]
fn balances_below_the_threshold_or_beyond_64_bits_fail() {
    let sk = Fp::from(0x5ec);
    let at = |b: Fp, t: Fp| {
        let (p, public) = balance(sk, b, t);
        mock(CircuitId::BalanceRangeV2, p, public)
    };
    assert!(
        at(Fp::from(1000), Fp::from(1000)).is_ok(),
        "balance = threshold"
    );
    assert!(
        at(Fp::from(u64::MAX), Fp::from(0)).is_ok(),
        "largest balance"
    );
    assert!(
        at(Fp::from(999), Fp::from(1000)).is_err(),
        "balance = threshold − 1"
    );
    assert!(at(two64(), Fp::from(1000)).is_err(), "balance = 2^64");
    assert!(at(two64(), two64()).is_err(), "threshold = 2^64");
    assert!(at(-Fp::ONE, Fp::from(1000)).is_err(), "balance = p − 1");
}

#[test]
fn the_native_check_refuses_what_the_circuit_refuses() {
    let w = valid(CircuitId::ResponseAttestationV2);
    let Witness::Attestation {
        sk,
        response,
        req_binding,
        ..
    } = w
    else {
        unreachable!()
    };
    let late = Witness::Attestation {
        sk,
        response,
        req_binding,
        timestamp: 201,
        min_timestamp: 100,
        max_timestamp: 200,
    };
    let e = late.public_inputs().unwrap_err().to_string();
    assert!(e.contains("outside the window"), "{e}");
    let Witness::Capability {
        sk,
        cap_id,
        salt,
        commitment,
        binding,
        ..
    } = valid(CircuitId::AgentCapabilityV2)
    else {
        unreachable!()
    };
    let low = Witness::Capability {
        sk: sk.clone(),
        cap_id,
        score: 80,
        salt,
        commitment,
        min_score: 81,
        binding,
    };
    assert!(
        low.public_inputs()
            .unwrap_err()
            .to_string()
            .contains("below the minimum")
    );
    let forged = Witness::Capability {
        sk,
        cap_id,
        score: 100,
        salt,
        commitment,
        min_score: 90,
        binding,
    };
    assert!(
        forged
            .public_inputs()
            .unwrap_err()
            .to_string()
            .contains("do not open")
    );
}

#[test]
fn native_and_in_circuit_poseidon_agree() {
    // The ownership circuit exposes Poseidon(DOM_ID, sk) and Poseidon(sk, binding) computed
    // in-circuit; the statement computed natively must satisfy it, and a fixed vector pins
    // the function itself.
    let sk = Fp::from(1);
    let public = vec![
        poseidon([dom_id(), sk]),
        Fp::from(2),
        poseidon([sk, Fp::from(2)]),
    ];
    mock(
        CircuitId::WalletOwnershipV2,
        Private::raw(sk, Fp::ZERO, Fp::ZERO),
        public,
    )
    .unwrap();
    assert_eq!(
        hex::encode(fe_to_bytes(&poseidon([Fp::ZERO, Fp::ONE]))),
        GOLDEN_POSEIDON_0_1
    );
}

/// `Poseidon_CL2(0, 1)` with `P128Pow5T3` over Pallas Fp, little-endian: the first vector of
/// zcash-test-vectors `orchard_poseidon/hash/fp.py`, an independent (Python) implementation.
const GOLDEN_POSEIDON_0_1: &str =
    "8358d711a0329d38becd54fba7c283ed3e089a39c91b6a9d10efb02bc3f12f06";
