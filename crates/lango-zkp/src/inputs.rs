//! Statements and witnesses from JSON documents, for the CLI and for operators who want to
//! prove or check a statement by hand. One document shape per circuit; the prover's file
//! holds `secret` (and the issuer's `salt`), the verifier's file holds `idCommitment`
//! instead and never needs a secret.
//!
//! ```json
//! {"secret": "<64 hex: 32-byte little-endian field element>",
//!  "nonce": "<64 hex>", "initiatorDid": "did:lango:…", "responderDid": "did:lango:…",
//!  "protocolId": "/lango/handshake/1.1.0"}
//! ```

use halo2_proofs::pasta::Fp;
use serde::Deserialize;

use crate::{
    CircuitId, Error, IdentitySecret, Witness,
    circuits::{balance_commitment, capability_commitment},
    encoding::{self, AttestedRequest, fe_from_bytes},
};

/// The largest inputs document read.
pub const MAX_INPUTS_BYTES: usize = 64 * 1024;

/// A statement document (every circuit's fields; each circuit reads its own).
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Inputs {
    /// The ZK identity secret (prover only).
    pub secret: Option<String>,
    /// The ZK identity commitment (verifier; derived from `secret` when absent).
    pub id_commitment: Option<String>,
    /// A 32-byte nonce (hex): the handshake's, the verifier's, or the requester's.
    pub nonce: Option<String>,
    /// Ownership: the handshake's initiator.
    pub initiator_did: Option<String>,
    /// Ownership: the handshake's responder.
    pub responder_did: Option<String>,
    /// Ownership: the handshake protocol ID.
    pub protocol_id: Option<String>,
    /// Attestation: the exact result bytes as transmitted (a JSON text).
    pub result: Option<String>,
    /// Attestation: the request.
    pub request_id: Option<String>,
    /// Attestation: the requester's DID.
    pub requester_did: Option<String>,
    /// Attestation: the request type.
    pub request_type: Option<String>,
    /// Attestation: the tool.
    pub tool_name: Option<String>,
    /// Attestation: the responder's time.
    pub timestamp: Option<u64>,
    /// Attestation: the window's start.
    pub min_timestamp: Option<u64>,
    /// Attestation: the window's end.
    pub max_timestamp: Option<u64>,
    /// Capability: its name.
    pub capability_id: Option<String>,
    /// Capability: the issued score (prover only).
    pub score: Option<u64>,
    /// Capability: the verifier's threshold.
    pub min_score: Option<u64>,
    /// Balance: the attested amount (prover only).
    pub balance: Option<u64>,
    /// Balance: when it was observed.
    pub as_of: Option<u64>,
    /// Balance: the verifier's threshold.
    pub threshold: Option<u64>,
    /// Capability and balance: the issuer's salt (prover only, hex field element).
    pub salt: Option<String>,
    /// Capability and balance: the issuer-signed commitment (hex field element); computed
    /// from the secret values when absent.
    pub commitment: Option<String>,
    /// Capability and balance: the verifier's DID.
    pub verifier_did: Option<String>,
    /// Capability and balance: the prover's DID.
    pub prover_did: Option<String>,
}

impl Inputs {
    /// Parses a document of at most [`MAX_INPUTS_BYTES`].
    pub fn from_slice(b: &[u8]) -> Result<Self, Error> {
        if b.len() > MAX_INPUTS_BYTES {
            return Err(Error::Encoding(format!(
                "inputs of {} bytes exceed {MAX_INPUTS_BYTES}",
                b.len()
            )));
        }
        serde_json::from_slice(b).map_err(|e| Error::Encoding(format!("inputs: {e}")))
    }

    fn need<'a, T>(v: &'a Option<T>, name: &str) -> Result<&'a T, Error> {
        v.as_ref().ok_or_else(|| {
            Error::Encoding(format!("inputs: \"{name}\" is required for this circuit"))
        })
    }

    fn fe(v: &Option<String>, name: &str) -> Result<Fp, Error> {
        let h = Self::need(v, name)?;
        let b = hex::decode(h.trim_start_matches("0x"))
            .map_err(|e| Error::Encoding(format!("inputs: \"{name}\" is not hex: {e}")))?;
        fe_from_bytes(&b).map_err(|e| Error::Encoding(format!("inputs: \"{name}\": {e}")))
    }

    fn nonce(&self) -> Result<[u8; 32], Error> {
        let h = Self::need(&self.nonce, "nonce")?;
        hex::decode(h)
            .ok()
            .and_then(|v| v.try_into().ok())
            .ok_or_else(|| Error::Encoding("inputs: \"nonce\" must be 64 hex digits".into()))
    }

    fn secret(&self) -> Result<IdentitySecret, Error> {
        let sk = Self::fe(&self.secret, "secret")?;
        IdentitySecret::from_bytes(&encoding::fe_to_bytes(&sk))
    }

    fn binding(&self, id: CircuitId) -> Result<Fp, Error> {
        fn s<'a>(v: &'a Option<String>, n: &str) -> Result<&'a str, Error> {
            Inputs::need(v, n).map(String::as_str)
        }
        match id {
            CircuitId::WalletOwnershipV2 => encoding::ownership_binding(
                &self.nonce()?,
                s(&self.initiator_did, "initiatorDid")?,
                s(&self.responder_did, "responderDid")?,
                s(&self.protocol_id, "protocolId")?,
            ),
            CircuitId::ResponseAttestationV2 => {
                let nonce = match &self.nonce {
                    Some(_) => Some(self.nonce()?),
                    None => None,
                };
                encoding::attestation_binding(&AttestedRequest {
                    request_id: s(&self.request_id, "requestId")?,
                    requester_did: s(&self.requester_did, "requesterDid")?,
                    responder_did: s(&self.responder_did, "responderDid")?,
                    request_type: s(&self.request_type, "requestType")?,
                    tool_name: self.tool_name.as_deref().unwrap_or(""),
                    nonce: nonce.as_ref(),
                })
            }
            CircuitId::AgentCapabilityV2 | CircuitId::BalanceRangeV2 => encoding::verifier_binding(
                &self.nonce()?,
                s(&self.verifier_did, "verifierDid")?,
                s(&self.prover_did, "proverDid")?,
            ),
        }
    }

    /// The prover's witness for `id`.
    pub fn witness(&self, id: CircuitId) -> Result<Witness, Error> {
        let sk = self.secret()?;
        let binding = self.binding(id)?;
        let n = |v: Option<u64>, name: &str| {
            v.ok_or_else(|| {
                Error::Encoding(format!("inputs: \"{name}\" is required for this circuit"))
            })
        };
        Ok(match id {
            CircuitId::WalletOwnershipV2 => Witness::Ownership { sk, binding },
            CircuitId::ResponseAttestationV2 => Witness::Attestation {
                sk,
                response: encoding::response_limbs(Self::need(&self.result, "result")?.as_bytes()),
                req_binding: binding,
                timestamp: n(self.timestamp, "timestamp")?,
                min_timestamp: n(self.min_timestamp, "minTimestamp")?,
                max_timestamp: n(self.max_timestamp, "maxTimestamp")?,
            },
            CircuitId::AgentCapabilityV2 => {
                let cap_id =
                    encoding::capability_id(Self::need(&self.capability_id, "capabilityId")?)?;
                let score = n(self.score, "score")?;
                let salt = Self::fe(&self.salt, "salt")?;
                let commitment = match &self.commitment {
                    Some(_) => Self::fe(&self.commitment, "commitment")?,
                    None => capability_commitment(sk.commitment(), cap_id, score, salt),
                };
                Witness::Capability {
                    sk,
                    cap_id,
                    score,
                    salt,
                    commitment,
                    min_score: n(self.min_score, "minScore")?,
                    binding,
                }
            }
            CircuitId::BalanceRangeV2 => {
                let balance = n(self.balance, "balance")?;
                let as_of = n(self.as_of, "asOf")?;
                let salt = Self::fe(&self.salt, "salt")?;
                let commitment = match &self.commitment {
                    Some(_) => Self::fe(&self.commitment, "commitment")?,
                    None => balance_commitment(sk.commitment(), balance, as_of, salt),
                };
                Witness::Balance {
                    sk,
                    balance,
                    as_of,
                    salt,
                    commitment,
                    threshold: n(self.threshold, "threshold")?,
                    binding,
                }
            }
        })
    }

    /// The verifier's statement for `id`: every public input computed from this document,
    /// except the tag, which only the prover can compute and which comes with the proof.
    pub fn statement(&self, id: CircuitId, tag: Fp) -> Result<Vec<Fp>, Error> {
        let id_commitment = match (&self.id_commitment, &self.secret) {
            (Some(_), _) => Self::fe(&self.id_commitment, "idCommitment")?,
            (None, Some(_)) => self.secret()?.commitment(),
            (None, None) => {
                return Err(Error::Encoding(
                    "inputs: \"idCommitment\" is required to verify".into(),
                ));
            }
        };
        let binding = self.binding(id)?;
        let n = |v: Option<u64>, name: &str| {
            v.map(encoding::fe_u64).ok_or_else(|| {
                Error::Encoding(format!("inputs: \"{name}\" is required for this circuit"))
            })
        };
        Ok(match id {
            CircuitId::WalletOwnershipV2 => vec![id_commitment, binding, tag],
            CircuitId::ResponseAttestationV2 => {
                let (lo, hi) =
                    encoding::response_limbs(Self::need(&self.result, "result")?.as_bytes());
                vec![
                    id_commitment,
                    lo,
                    hi,
                    binding,
                    n(self.timestamp, "timestamp")?,
                    n(self.min_timestamp, "minTimestamp")?,
                    n(self.max_timestamp, "maxTimestamp")?,
                    tag,
                ]
            }
            CircuitId::AgentCapabilityV2 => vec![
                Self::fe(&self.commitment, "commitment")?,
                id_commitment,
                encoding::capability_id(Self::need(&self.capability_id, "capabilityId")?)?,
                n(self.min_score, "minScore")?,
                binding,
                tag,
            ],
            CircuitId::BalanceRangeV2 => vec![
                Self::fe(&self.commitment, "commitment")?,
                id_commitment,
                n(self.as_of, "asOf")?,
                n(self.threshold, "threshold")?,
                binding,
                tag,
            ],
        })
    }
}
