//! The four v2 circuits (spec §3.11) and the native statement behind each: what the prover
//! knows ([`Witness`]), the public inputs a verifier recomputes, and the relation checked
//! natively before any proof is attempted.

use ff::Field;
use halo2_proofs::{
    circuit::{Layouter, SimpleFloorPlanner, Value},
    pasta::Fp,
    plonk::{Circuit, ConstraintSystem, Error as PlonkError},
};

use crate::{
    Error,
    encoding::{dom_bal, dom_cap, dom_id, fe_u64, poseidon},
    gadgets::Config,
};

/// A circuit identifier; the `/vN` suffix versions the relation (W-10).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum CircuitId {
    /// `wallet_ownership/v2`: the holder of a ZK identity took part in this handshake.
    WalletOwnershipV2,
    /// `response_attestation/v2`: exactly these response bytes, for this request, in time.
    ResponseAttestationV2,
    /// `agent_capability/v2`: an issuer-certified score at or above a threshold.
    AgentCapabilityV2,
    /// `balance_range/v2`: an attested balance at or above a threshold.
    BalanceRangeV2,
}

impl CircuitId {
    /// Every circuit, in a stable order.
    pub const ALL: [CircuitId; 4] = [
        CircuitId::WalletOwnershipV2,
        CircuitId::ResponseAttestationV2,
        CircuitId::AgentCapabilityV2,
        CircuitId::BalanceRangeV2,
    ];

    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            CircuitId::WalletOwnershipV2 => "wallet_ownership/v2",
            CircuitId::ResponseAttestationV2 => "response_attestation/v2",
            CircuitId::AgentCapabilityV2 => "agent_capability/v2",
            CircuitId::BalanceRangeV2 => "balance_range/v2",
        }
    }

    /// `log2` of the circuit's rows: the smallest that fits (checked by a test at `k − 1`).
    pub fn k(self) -> u32 {
        match self {
            CircuitId::WalletOwnershipV2 => 7,
            _ => 11,
        }
    }

    /// How many public inputs (instance rows) the circuit has.
    pub fn public_inputs(self) -> usize {
        match self {
            CircuitId::WalletOwnershipV2 => 3,
            CircuitId::ResponseAttestationV2 => 8,
            CircuitId::AgentCapabilityV2 | CircuitId::BalanceRangeV2 => 6,
        }
    }

    /// What the public inputs are, in instance-row order (for messages and `--help`).
    pub fn public_input_names(self) -> &'static [&'static str] {
        match self {
            CircuitId::WalletOwnershipV2 => &["idCommitment", "binding", "tag"],
            CircuitId::ResponseAttestationV2 => &[
                "idCommitment",
                "respLo",
                "respHi",
                "reqBinding",
                "timestamp",
                "minTimestamp",
                "maxTimestamp",
                "tag",
            ],
            CircuitId::AgentCapabilityV2 => &[
                "capCommitment",
                "idCommitment",
                "capId",
                "minScore",
                "binding",
                "tag",
            ],
            CircuitId::BalanceRangeV2 => &[
                "balCommitment",
                "idCommitment",
                "asOf",
                "threshold",
                "binding",
                "tag",
            ],
        }
    }
}

impl std::fmt::Display for CircuitId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for CircuitId {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self, Error> {
        CircuitId::ALL
            .into_iter()
            .find(|c| c.as_str() == s)
            .ok_or_else(|| Error::UnknownCircuit(s.to_owned()))
    }
}

/// A ZK identity secret `sk` (spec §3.10.5). Overwritten with zero when dropped; never
/// printed.
#[derive(Clone, PartialEq, Eq)]
pub struct IdentitySecret(Fp);

impl IdentitySecret {
    /// A fresh uniformly random secret (64 random bytes reduced modulo `p`).
    pub fn generate() -> Result<Self, Error> {
        let mut wide = zeroize::Zeroizing::new([0u8; 64]);
        lango_crypto::random::fill(wide.as_mut())
            .map_err(|e| Error::Encoding(format!("random bytes for a ZK identity: {e}")))?;
        Ok(Self(<Fp as ff::FromUniformBytes<64>>::from_uniform_bytes(
            &wide,
        )))
    }

    /// From its 32-byte encoding (canonical only).
    pub fn from_bytes(b: &[u8]) -> Result<Self, Error> {
        crate::encoding::fe_from_bytes(b).map(Self)
    }

    /// Its 32-byte encoding, for the secrets store.
    pub fn to_bytes(&self) -> zeroize::Zeroizing<[u8; 32]> {
        zeroize::Zeroizing::new(crate::encoding::fe_to_bytes(&self.0))
    }

    /// `id_commitment = Poseidon_CL2(DOM_ID, sk)`.
    pub fn commitment(&self) -> Fp {
        poseidon([dom_id(), self.0])
    }

    /// `tag = Poseidon_CL2(sk, binding)`: a PRF of the secret over the binding.
    pub fn tag(&self, binding: Fp) -> Fp {
        poseidon([self.0, binding])
    }

    fn value(&self) -> Value<Fp> {
        Value::known(self.0)
    }
}

impl Drop for IdentitySecret {
    fn drop(&mut self) {
        self.0 = Fp::ZERO;
    }
}

impl std::fmt::Debug for IdentitySecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("IdentitySecret(..)")
    }
}

/// What a prover knows, per circuit, and the public values it proves against.
#[derive(Debug, Clone)]
pub enum Witness {
    /// `wallet_ownership/v2`.
    Ownership {
        /// The ZK identity.
        sk: IdentitySecret,
        /// [`crate::encoding::ownership_binding`] of this handshake.
        binding: Fp,
    },
    /// `response_attestation/v2`.
    Attestation {
        /// The ZK identity.
        sk: IdentitySecret,
        /// [`crate::encoding::response_limbs`] of the exact result bytes.
        response: (Fp, Fp),
        /// [`crate::encoding::attestation_binding`] of the request.
        req_binding: Fp,
        /// The responder's time (Unix seconds).
        timestamp: u64,
        /// The window's start.
        min_timestamp: u64,
        /// The window's end.
        max_timestamp: u64,
    },
    /// `agent_capability/v2`.
    Capability {
        /// The ZK identity.
        sk: IdentitySecret,
        /// [`crate::encoding::capability_id`].
        cap_id: Fp,
        /// The issued score, `0..1024`.
        score: u64,
        /// The issuer's salt.
        salt: Fp,
        /// The issuer-signed commitment the proof must open.
        commitment: Fp,
        /// The verifier's threshold, `0..1024`.
        min_score: u64,
        /// [`crate::encoding::verifier_binding`].
        binding: Fp,
    },
    /// `balance_range/v2`.
    Balance {
        /// The ZK identity.
        sk: IdentitySecret,
        /// The attested balance in base units.
        balance: u64,
        /// When the attestor observed it.
        as_of: u64,
        /// The attestor's salt.
        salt: Fp,
        /// The attestor-signed commitment the proof must open.
        commitment: Fp,
        /// The verifier's threshold.
        threshold: u64,
        /// [`crate::encoding::verifier_binding`].
        binding: Fp,
    },
}

/// The capability commitment an issuer signs: `Poseidon_CL5(DOM_CAP, id, cap_id, score, salt)`.
pub fn capability_commitment(id_commitment: Fp, cap_id: Fp, score: u64, salt: Fp) -> Fp {
    poseidon([dom_cap(), id_commitment, cap_id, fe_u64(score), salt])
}

/// The balance commitment an attestor signs: `Poseidon_CL5(DOM_BAL, id, balance, as_of, salt)`.
pub fn balance_commitment(id_commitment: Fp, balance: u64, as_of: u64, salt: Fp) -> Fp {
    poseidon([
        dom_bal(),
        id_commitment,
        fe_u64(balance),
        fe_u64(as_of),
        salt,
    ])
}

/// Scores are 10-bit integers.
pub const MAX_SCORE: u64 = (1 << 10) - 1;

impl Witness {
    /// The circuit this witness is for.
    pub fn circuit(&self) -> CircuitId {
        match self {
            Witness::Ownership { .. } => CircuitId::WalletOwnershipV2,
            Witness::Attestation { .. } => CircuitId::ResponseAttestationV2,
            Witness::Capability { .. } => CircuitId::AgentCapabilityV2,
            Witness::Balance { .. } => CircuitId::BalanceRangeV2,
        }
    }

    /// The public inputs, computed natively, without checking the relation.
    pub fn public_inputs_unchecked(&self) -> Vec<Fp> {
        match self {
            Witness::Ownership { sk, binding } => vec![sk.commitment(), *binding, sk.tag(*binding)],
            Witness::Attestation {
                sk,
                response: (lo, hi),
                req_binding,
                timestamp,
                min_timestamp,
                max_timestamp,
            } => {
                let t = fe_u64(*timestamp);
                vec![
                    sk.commitment(),
                    *lo,
                    *hi,
                    *req_binding,
                    t,
                    fe_u64(*min_timestamp),
                    fe_u64(*max_timestamp),
                    poseidon([sk.0, *lo, *hi, *req_binding, t]),
                ]
            }
            Witness::Capability {
                sk,
                cap_id,
                commitment,
                min_score,
                binding,
                ..
            } => vec![
                *commitment,
                sk.commitment(),
                *cap_id,
                fe_u64(*min_score),
                *binding,
                sk.tag(*binding),
            ],
            Witness::Balance {
                sk,
                as_of,
                commitment,
                threshold,
                binding,
                ..
            } => vec![
                *commitment,
                sk.commitment(),
                fe_u64(*as_of),
                fe_u64(*threshold),
                *binding,
                sk.tag(*binding),
            ],
        }
    }

    /// The public inputs, after checking natively that the circuit would be satisfied: a
    /// halo2 prover given a bad witness would emit a proof that just fails to verify.
    pub fn public_inputs(&self) -> Result<Vec<Fp>, Error> {
        let bad = |why: String| Err(Error::UnsatisfiedWitness(why));
        match self {
            Witness::Ownership { .. } => {}
            Witness::Attestation {
                timestamp,
                min_timestamp,
                max_timestamp,
                ..
            } => {
                if !(min_timestamp <= timestamp && timestamp <= max_timestamp) {
                    return bad(format!(
                        "timestamp {timestamp} is outside the window [{min_timestamp}, {max_timestamp}]"
                    ));
                }
            }
            Witness::Capability {
                sk,
                cap_id,
                score,
                salt,
                commitment,
                min_score,
                ..
            } => {
                if *score > MAX_SCORE || *min_score > MAX_SCORE {
                    return bad(format!(
                        "scores are 0..={MAX_SCORE}: score {score}, minimum {min_score}"
                    ));
                }
                if score < min_score {
                    return bad(format!("score {score} is below the minimum {min_score}"));
                }
                if capability_commitment(sk.commitment(), *cap_id, *score, *salt) != *commitment {
                    return bad(
                        "the identity, score and salt do not open the issued commitment".into(),
                    );
                }
            }
            Witness::Balance {
                sk,
                balance,
                as_of,
                salt,
                commitment,
                threshold,
                ..
            } => {
                if balance < threshold {
                    return bad(format!(
                        "balance {balance} is below the threshold {threshold}"
                    ));
                }
                if balance_commitment(sk.commitment(), *balance, *as_of, *salt) != *commitment {
                    return bad(
                        "the identity, balance and salt do not open the attested commitment".into(),
                    );
                }
            }
        }
        Ok(self.public_inputs_unchecked())
    }
}

/// Private values as circuit inputs (unknown during key generation).
#[derive(Clone, Debug, Default)]
pub struct Private {
    pub(crate) sk: Value<Fp>,
    pub(crate) a: Value<Fp>,
    pub(crate) b: Value<Fp>,
}

impl Private {
    /// The private part of `w`.
    pub fn of(w: &Witness) -> Self {
        match w {
            Witness::Ownership { sk, .. } | Witness::Attestation { sk, .. } => Self {
                sk: sk.value(),
                a: Value::unknown(),
                b: Value::unknown(),
            },
            Witness::Capability {
                sk, score, salt, ..
            } => Self {
                sk: sk.value(),
                a: Value::known(fe_u64(*score)),
                b: Value::known(*salt),
            },
            Witness::Balance {
                sk, balance, salt, ..
            } => Self {
                sk: sk.value(),
                a: Value::known(fe_u64(*balance)),
                b: Value::known(*salt),
            },
        }
    }

    /// Raw private values, for tests that try witnesses the native check refuses.
    #[doc(hidden)]
    pub fn raw(sk: Fp, a: Fp, b: Fp) -> Self {
        Self {
            sk: Value::known(sk),
            a: Value::known(a),
            b: Value::known(b),
        }
    }
}

macro_rules! circuit {
    ($(#[$m:meta])* $name:ident, $range:expr, $synth:ident) => {
        $(#[$m])*
        #[derive(Clone, Debug, Default)]
        pub struct $name(pub Private);

        impl Circuit<Fp> for $name {
            type Config = Config;
            type FloorPlanner = SimpleFloorPlanner;

            fn without_witnesses(&self) -> Self {
                Self::default()
            }

            fn configure(meta: &mut ConstraintSystem<Fp>) -> Config {
                Config::configure(meta, $range)
            }

            fn synthesize(&self, config: Config, mut layouter: impl Layouter<Fp>) -> Result<(), PlonkError> {
                config.load_table(&mut layouter)?;
                $synth(&config, &self.0, &mut layouter)
            }
        }
    };
}

circuit!(
    /// `wallet_ownership/v2`: `Poseidon(DOM_ID, sk) = id`, `Poseidon(sk, binding) = tag`.
    Ownership, false, ownership
);
circuit!(
    /// `response_attestation/v2`: identity, `tag = Poseidon(sk, lo, hi, req, T)`,
    /// `min ≤ T ≤ max` on 64-bit integers.
    Attestation, true, attestation
);
circuit!(
    /// `agent_capability/v2`: identity, the issuer's commitment opens to `score`, 10-bit
    /// `min ≤ score`, tag over the verifier's binding.
    Capability, true, capability
);
circuit!(
    /// `balance_range/v2`: identity, the attestor's commitment opens to `balance`, 64-bit
    /// `threshold ≤ balance`, tag over the verifier's binding.
    Balance, true, balance
);

fn identity(
    c: &Config,
    p: &Private,
    l: &mut impl Layouter<Fp>,
    row: usize,
) -> Result<halo2_proofs::circuit::AssignedCell<Fp, Fp>, PlonkError> {
    let sk = c.witness(l, p.sk)?;
    let dom = c.constant(l, dom_id())?;
    let id = c.hash(l, [dom, sk.clone()])?;
    c.expose(l, &id, row)?;
    Ok(sk)
}

fn ownership(c: &Config, p: &Private, l: &mut impl Layouter<Fp>) -> Result<(), PlonkError> {
    let sk = identity(c, p, l, 0)?;
    let binding = c.public(l, 1)?;
    let tag = c.hash(l, [sk, binding])?;
    c.expose(l, &tag, 2)
}

fn attestation(c: &Config, p: &Private, l: &mut impl Layouter<Fp>) -> Result<(), PlonkError> {
    let sk = identity(c, p, l, 0)?;
    let lo = c.public(l, 1)?;
    let hi = c.public(l, 2)?;
    let req = c.public(l, 3)?;
    let t = c.public(l, 4)?;
    let min = c.public(l, 5)?;
    let max = c.public(l, 6)?;
    let tag = c.hash(l, [sk, lo, hi, req, t.clone()])?;
    c.expose(l, &tag, 7)?;
    for x in [&t, &min, &max] {
        c.range_u64(l, x)?;
    }
    c.assert_le_u64(l, &min, &t)?;
    c.assert_le_u64(l, &t, &max)
}

fn capability(c: &Config, p: &Private, l: &mut impl Layouter<Fp>) -> Result<(), PlonkError> {
    let sk = identity(c, p, l, 1)?;
    let id = c.public(l, 1)?;
    let cap_id = c.public(l, 2)?;
    let score = c.witness(l, p.a)?;
    let salt = c.witness(l, p.b)?;
    let dom = c.constant(l, dom_cap())?;
    let commitment = c.hash(l, [dom, id, cap_id, score.clone(), salt])?;
    c.expose(l, &commitment, 0)?;
    let min = c.public(l, 3)?;
    c.range_bits(l, &score, 10)?;
    c.range_bits(l, &min, 10)?;
    let d = c.sub(l, &score, &min)?;
    c.range_bits(l, &d, 10)?;
    let binding = c.public(l, 4)?;
    let tag = c.hash(l, [sk, binding])?;
    c.expose(l, &tag, 5)
}

fn balance(c: &Config, p: &Private, l: &mut impl Layouter<Fp>) -> Result<(), PlonkError> {
    let sk = identity(c, p, l, 1)?;
    let id = c.public(l, 1)?;
    let balance = c.witness(l, p.a)?;
    let as_of = c.public(l, 2)?;
    let salt = c.witness(l, p.b)?;
    let dom = c.constant(l, dom_bal())?;
    let commitment = c.hash(l, [dom, id, balance.clone(), as_of.clone(), salt])?;
    c.expose(l, &commitment, 0)?;
    let threshold = c.public(l, 3)?;
    for x in [&balance, &threshold, &as_of] {
        c.range_u64(l, x)?;
    }
    c.assert_le_u64(l, &threshold, &balance)?;
    let binding = c.public(l, 4)?;
    let tag = c.hash(l, [sk, binding])?;
    c.expose(l, &tag, 5)
}
