//! Example statements for tests, benches and documentation: one satisfied witness per
//! circuit, with a fresh identity each call. Not for production use.

use halo2_proofs::pasta::Fp;

use crate::{
    CircuitId, IdentitySecret, Witness,
    circuits::{balance_commitment, capability_commitment},
    encoding,
};

/// A satisfied witness for `id` under the identity `sk`: a handshake binding, a one-line
/// result in a 330-second window, a score of 87 against 80, a balance of 2 500 000 000
/// against 1 000 000 000.
pub fn example_witness(id: CircuitId, sk: IdentitySecret) -> Witness {
    let binding = encoding::ownership_binding(
        &[7; 32],
        "did:lango:a",
        "did:lango:b",
        "/lango/handshake/1.1.0",
    )
    .unwrap_or(Fp::from(7));
    match id {
        CircuitId::WalletOwnershipV2 => Witness::Ownership { sk, binding },
        CircuitId::ResponseAttestationV2 => Witness::Attestation {
            sk,
            response: encoding::response_limbs(br#"{"echo":"hi"}"#),
            req_binding: binding,
            timestamp: 1_795_000_000,
            min_timestamp: 1_794_999_700,
            max_timestamp: 1_795_000_030,
        },
        CircuitId::AgentCapabilityV2 => {
            let cap_id = encoding::capability_id("code-review").unwrap_or(Fp::from(9));
            let salt = Fp::from(99);
            let commitment = capability_commitment(sk.commitment(), cap_id, 87, salt);
            Witness::Capability {
                sk,
                cap_id,
                score: 87,
                salt,
                commitment,
                min_score: 80,
                binding,
            }
        }
        CircuitId::BalanceRangeV2 => {
            let salt = Fp::from(98);
            let commitment = balance_commitment(sk.commitment(), 2_500_000_000, 21_000_000, salt);
            Witness::Balance {
                sk,
                balance: 2_500_000_000,
                as_of: 21_000_000,
                salt,
                commitment,
                threshold: 1_000_000_000,
                binding,
            }
        }
    }
}
