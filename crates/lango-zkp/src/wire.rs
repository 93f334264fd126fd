//! Wire encodings (spec §3.14.1): proofs and response attestations as JSON with base64
//! (standard alphabet, padded) bytes, as Go encodes `[]byte`.

use base64::{Engine, engine::general_purpose::STANDARD};
use serde::{Deserialize, Serialize};

use crate::{
    CircuitId, Error, Proof,
    encoding::{fes_from_bytes, fes_to_bytes},
    service::DEFAULT_MAX_PROOF_BYTES,
};

/// Most public inputs any circuit has.
const MAX_PUBLIC_INPUTS: usize = 8;

/// A proof file or message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ProofJson {
    /// `wallet_ownership/v2`, ...
    pub circuit_id: String,
    /// `halo2-ipa-pasta`.
    pub scheme: String,
    /// The transcript, base64.
    pub proof: String,
    /// The prover's public inputs, 32 bytes each, base64.
    pub public_inputs: String,
    /// The prover's verifying-key digest, hex.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vk_digest: Option<String>,
}

impl From<&Proof> for ProofJson {
    fn from(p: &Proof) -> Self {
        Self {
            circuit_id: p.circuit.as_str().into(),
            scheme: p.scheme.clone(),
            proof: STANDARD.encode(&p.data),
            public_inputs: STANDARD.encode(fes_to_bytes(&p.public_inputs)),
            vk_digest: p.vk_digest.map(hex::encode),
        }
    }
}

impl ProofJson {
    /// Decodes into a [`Proof`]; sizes are checked before decoding base64.
    pub fn decode(&self, max_proof_bytes: usize) -> Result<Proof, Error> {
        let circuit: CircuitId = self.circuit_id.parse()?;
        if self.proof.len() > max_proof_bytes.div_ceil(3) * 4 {
            return Err(Error::ProofTooLarge {
                len: self.proof.len() / 4 * 3,
                max: max_proof_bytes,
            });
        }
        let data = STANDARD
            .decode(&self.proof)
            .map_err(|e| Error::Encoding(format!("proof: not base64: {e}")))?;
        if self.public_inputs.len() > (MAX_PUBLIC_INPUTS * 32).div_ceil(3) * 4 {
            return Err(Error::Encoding("publicInputs: too long".into()));
        }
        let public = STANDARD
            .decode(&self.public_inputs)
            .map_err(|e| Error::Encoding(format!("publicInputs: not base64: {e}")))?;
        let vk_digest = match &self.vk_digest {
            None => None,
            Some(h) => Some(
                hex::decode(h)
                    .ok()
                    .and_then(|v| <[u8; 32]>::try_from(v).ok())
                    .ok_or_else(|| Error::Encoding("vkDigest: not 64 hex digits".into()))?,
            ),
        };
        Ok(Proof {
            circuit,
            scheme: self.scheme.clone(),
            data,
            public_inputs: fes_from_bytes(&public, MAX_PUBLIC_INPUTS)?,
            vk_digest,
        })
    }

    /// Parses a proof JSON document of at most `4/3 · DEFAULT_MAX_PROOF_BYTES + 4 KiB`.
    pub fn from_slice(bytes: &[u8]) -> Result<Self, Error> {
        if bytes.len() > DEFAULT_MAX_PROOF_BYTES * 4 / 3 + 4096 {
            return Err(Error::Encoding(format!(
                "proof document of {} bytes is too large",
                bytes.len()
            )));
        }
        serde_json::from_slice(bytes).map_err(|e| Error::Encoding(format!("proof document: {e}")))
    }
}
