//! Zero-knowledge ownership proofs in the legacy handshake (kms-and-zk spec §3.10.5,
//! §3.11.1, §3.14.2): the `wallet_ownership/v2` circuit of `lango-zkp` behind the handshake's
//! [`ZkHook`] (initiator: advertise, verify) and [`ZkProver`] (responder: prove).
//!
//! A proof never replaces the handshake signature. It adds a verified claim: the responder
//! holds the ZK identity whose commitment its wallet key certified (`zkIdBinding`), and used
//! it for *this* handshake (the nonce, both DIDs and the protocol are in the statement), so a
//! proof seen once is useless in any other handshake. A session is `zk_verified` only when
//! this node verified such a proof.

use std::sync::Arc;

use async_trait::async_trait;
use lango_crypto::wallet::{LowS, PublicKey, verify_message};
use lango_handshake::{
    hooks::{ZkHook, ZkInputs, ZkOutcome, ZkProofFields, ZkProver},
    signer::Wallet,
};
use lango_zkp::{
    CircuitId, Fp, IdentitySecret, Proof, ProverService, Witness,
    encoding::{fe_from_bytes, fe_to_bytes, ownership_binding},
};

/// The scheme advertised in challenges and named in responses.
pub const SCHEME: &str = "halo2-ipa-pasta/wallet_ownership/v2";

/// The name of the ZK identity secret in the vault.
pub const IDENTITY_SECRET_NAME: &str = "p2p.zk.identity";

/// The message the wallet signs to certify an identity commitment:
/// `"lango-zkid-v1" ‖ id_commitment (32 bytes LE) ‖ UTF-8(DID)`.
pub fn id_binding_message(id_commitment: &Fp, did: &str) -> Vec<u8> {
    let mut m = b"lango-zkid-v1".to_vec();
    m.extend_from_slice(&fe_to_bytes(id_commitment));
    m.extend_from_slice(did.as_bytes());
    m
}

struct Identity {
    sk: IdentitySecret,
    commitment: Fp,
    binding_sig: Vec<u8>,
}

/// ZK ownership for one node: verifies peers' proofs and, when it holds a ZK identity,
/// proves its own.
pub struct ZkOwnership {
    service: Arc<ProverService>,
    identity: Option<Identity>,
}

impl std::fmt::Debug for ZkOwnership {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ZkOwnership")
            .field("prover", &self.identity.is_some())
            .finish_non_exhaustive()
    }
}

impl ZkOwnership {
    /// A verifier only.
    pub fn verifier(service: Arc<ProverService>) -> Self {
        Self {
            service,
            identity: None,
        }
    }

    /// A verifier and prover for the identity `sk`, certified once by `wallet`.
    pub async fn prover(
        service: Arc<ProverService>,
        sk: IdentitySecret,
        wallet: &dyn Wallet,
    ) -> Result<Self, String> {
        let pk = wallet.public_key().await.map_err(|e| e.to_string())?;
        let did = lango_crypto::wallet::Did::from_public_key(&pk);
        let commitment = sk.commitment();
        let sig = wallet
            .sign_message(&id_binding_message(&commitment, did.as_str()))
            .await
            .map_err(|e| e.to_string())?;
        Ok(Self {
            service,
            identity: Some(Identity {
                sk,
                commitment,
                binding_sig: sig.to_bytes().to_vec(),
            }),
        })
    }

    /// Whether this node holds a ZK identity and can answer with proofs.
    pub fn can_prove(&self) -> bool {
        self.identity.is_some()
    }

    /// Generates the circuit's keys (slow the first time; call it in the background).
    pub async fn warm_up(&self) -> Result<(), String> {
        self.service
            .compile_async(CircuitId::WalletOwnershipV2)
            .await
            .map_err(|e| e.to_string())
    }

    fn binding(inputs: &ZkInputs<'_>) -> Option<Fp> {
        let nonce: &[u8; 32] = inputs.nonce.try_into().ok()?;
        ownership_binding(
            nonce,
            inputs.initiator_did,
            inputs.responder_did,
            inputs.protocol_id,
        )
        .ok()
    }
}

#[async_trait]
impl ZkHook for ZkOwnership {
    fn schemes(&self) -> Vec<String> {
        vec![SCHEME.to_owned()]
    }

    async fn verify(&self, f: &ZkProofFields, inputs: ZkInputs<'_>) -> ZkOutcome {
        if f.scheme != SCHEME {
            return ZkOutcome::Unsupported;
        }
        let invalid = |why: &str| {
            tracing::warn!(
                event = "zk_handshake_proof_invalid",
                peer_did = inputs.responder_did,
                reason = why,
                "the peer's ownership proof failed"
            );
            ZkOutcome::Invalid
        };
        // Cheap checks first (W-9): encodings, then the wallet's certificate, then the proof.
        let (Ok(id), Ok(tag)) = (fe_from_bytes(&f.id_commitment), fe_from_bytes(&f.tag)) else {
            return invalid("identity commitment or tag is not a canonical field element");
        };
        let Ok(pk) = PublicKey::from_compressed(inputs.public_key) else {
            return invalid("responder key");
        };
        if verify_message(
            &pk,
            &id_binding_message(&id, inputs.responder_did),
            &f.id_binding,
            LowS::Require,
        )
        .is_err()
        {
            return invalid("the wallet did not certify this identity commitment");
        }
        let Some(binding) = Self::binding(&inputs) else {
            return invalid("binding");
        };
        if let Err(e) = self.warm_up().await {
            tracing::warn!(error = %e, "ZK keys unavailable; proof not checked");
            return ZkOutcome::Unsupported;
        }
        let proof = Proof {
            circuit: CircuitId::WalletOwnershipV2,
            scheme: lango_zkp::SCHEME.to_owned(),
            data: f.proof.clone(),
            public_inputs: Vec::new(),
            vk_digest: None,
        };
        match self
            .service
            .verify_async(proof, vec![id, binding, tag])
            .await
        {
            Ok(true) => ZkOutcome::Verified,
            Ok(false) => invalid("the proof does not verify for this handshake"),
            Err(e) => invalid(&e.to_string()),
        }
    }
}

#[async_trait]
impl ZkProver for ZkOwnership {
    fn scheme(&self) -> &str {
        SCHEME
    }

    async fn prove(&self, inputs: ZkInputs<'_>) -> Result<ZkProofFields, String> {
        let id = self.identity.as_ref().ok_or("no ZK identity")?;
        let binding = Self::binding(&inputs).ok_or("malformed handshake binding")?;
        self.warm_up().await?;
        let proof = self
            .service
            .prove_async(Witness::Ownership {
                sk: id.sk.clone(),
                binding,
            })
            .await
            .map_err(|e| e.to_string())?;
        let tag = proof
            .public_inputs
            .get(2)
            .copied()
            .ok_or("proof without a tag")?;
        Ok(ZkProofFields {
            scheme: SCHEME.to_owned(),
            proof: proof.data,
            id_commitment: fe_to_bytes(&id.commitment).to_vec(),
            tag: fe_to_bytes(&tag).to_vec(),
            id_binding: id.binding_sig.clone(),
        })
    }
}

// ------------------------------------------------------------------ response attestations

/// The attestation's circuit on the wire.
pub const ATTESTATION_CIRCUIT: &str = "response_attestation/v2";

/// The default window when the requester sent no `zkAttest`: `[now − 300, now + 30]`.
pub const ATTEST_WINDOW_PAST_SECS: u64 = 300;
/// See [`ATTEST_WINDOW_PAST_SECS`].
pub const ATTEST_WINDOW_FUTURE_SECS: u64 = 30;
/// Clock skew allowed when the verifier checks a window it did not choose.
pub const ATTEST_SKEW_SECS: u64 = 30;

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Attests tool responses with `response_attestation/v2` (kms-and-zk spec §3.11.2, §3.14.3):
/// the responder's ZK identity produced exactly these result bytes, for this request, at a
/// time inside the requester's window.
pub struct ZkAttester {
    service: Arc<ProverService>,
    identity: Identity,
    did: String,
    window: (u64, u64),
}

impl std::fmt::Debug for ZkAttester {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ZkAttester")
            .field("did", &self.did)
            .finish_non_exhaustive()
    }
}

impl ZkAttester {
    /// An attester for the identity `sk`, certified by `wallet`.
    pub async fn new(
        service: Arc<ProverService>,
        sk: IdentitySecret,
        wallet: &dyn Wallet,
    ) -> Result<Self, String> {
        let z = ZkOwnership::prover(service.clone(), sk, wallet).await?;
        let pk = wallet.public_key().await.map_err(|e| e.to_string())?;
        let identity = z.identity.ok_or("no identity")?;
        Ok(Self {
            service,
            identity,
            did: lango_crypto::wallet::Did::from_public_key(&pk)
                .as_str()
                .to_owned(),
            window: (ATTEST_WINDOW_PAST_SECS, ATTEST_WINDOW_FUTURE_SECS),
        })
    }

    /// The window used when the requester asks for none: `past` seconds before now to
    /// `future` after (default 300 and 30).
    #[must_use]
    pub fn with_window(mut self, past: u64, future: u64) -> Self {
        self.window = (past, future);
        self
    }

    /// Generates the circuit's keys (slow the first time; call it in the background).
    pub async fn warm_up(&self) -> Result<(), String> {
        self.service
            .compile_async(CircuitId::ResponseAttestationV2)
            .await
            .map_err(|e| e.to_string())
    }
}

#[async_trait]
impl crate::a2a::Attester for ZkAttester {
    async fn attest(
        &self,
        r: crate::a2a::AttestRequest<'_>,
    ) -> Result<Option<crate::protocol::Attestation>, String> {
        let now = unix_now();
        let (nonce, min, max) = match r.zk_attest {
            Some(z) => (Some(z.nonce), z.min_ts, z.max_ts),
            None => (None, now.saturating_sub(self.window.0), now + self.window.1),
        };
        if !(min..=max).contains(&now) {
            return Err(format!(
                "the requested window [{min}, {max}] does not contain this node's time {now}"
            ));
        }
        let req_binding =
            lango_zkp::encoding::attestation_binding(&lango_zkp::encoding::AttestedRequest {
                request_id: r.request_id,
                requester_did: r.requester_did,
                responder_did: &self.did,
                request_type: r.request_type,
                tool_name: r.tool_name,
                nonce: nonce.as_ref(),
            })
            .map_err(|e| e.to_string())?;
        self.warm_up().await?;
        let proof = self
            .service
            .prove_async(Witness::Attestation {
                sk: self.identity.sk.clone(),
                response: lango_zkp::encoding::response_limbs(r.result_bytes),
                req_binding,
                timestamp: now,
                min_timestamp: min,
                max_timestamp: max,
            })
            .await
            .map_err(|e| e.to_string())?;
        let tag = proof
            .public_inputs
            .get(7)
            .copied()
            .ok_or("proof without a tag")?;
        Ok(Some(crate::protocol::Attestation {
            proof: proof.data,
            public_inputs: lango_zkp::encoding::fes_to_bytes(&proof.public_inputs),
            circuit_id: ATTESTATION_CIRCUIT.to_owned(),
            scheme: lango_zkp::SCHEME.to_owned(),
            timestamp: Some(now),
            min_timestamp: Some(min),
            max_timestamp: Some(max),
            id_commitment: Some(fe_to_bytes(&self.identity.commitment).to_vec()),
            tag: Some(fe_to_bytes(&tag).to_vec()),
            vk_digest: proof.vk_digest.map(hex::encode),
            id_binding: Some(self.identity.binding_sig.clone()),
        }))
    }
}

/// What the requester knows about its own request.
#[derive(Debug, Clone)]
pub struct AttestationCheck<'a> {
    /// The request's ID.
    pub request_id: &'a str,
    /// This node's DID.
    pub requester_did: &'a str,
    /// The responder's DID (from the session).
    pub responder_did: &'a str,
    /// The request type.
    pub request_type: &'a str,
    /// The tool called.
    pub tool_name: &'a str,
    /// The `zkAttest` this node sent, if any.
    pub zk_attest: Option<crate::a2a::ZkAttest>,
    /// The exact `result` bytes received.
    pub result_bytes: &'a [u8],
}

/// Why an attestation was not accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AttestationError {
    /// None, or one in a scheme/circuit this node does not verify (Go's plonk/groth16).
    #[error("the response carries no verifiable attestation")]
    Absent,
    /// Present and in our scheme, but false for this request.
    #[error("the response attestation does not verify: {0}")]
    Invalid(String),
}

/// Verifies a response attestation against the requester's own statement: every public
/// input is recomputed here (W-8), the identity must be certified by the responder's wallet,
/// and the time must lie in the window this node chose (or, without one, near its clock).
pub async fn verify_attestation(
    service: &Arc<ProverService>,
    a: Option<&crate::protocol::Attestation>,
    c: &AttestationCheck<'_>,
) -> Result<(), AttestationError> {
    let a = a.ok_or(AttestationError::Absent)?;
    if a.scheme != lango_zkp::SCHEME || a.circuit_id != ATTESTATION_CIRCUIT {
        tracing::debug!(scheme = %a.scheme, circuit = %a.circuit_id, "attestation in another scheme treated as absent");
        return Err(AttestationError::Absent);
    }
    let bad = |s: &str| AttestationError::Invalid(s.to_owned());
    let (Some(idc), Some(tag), Some(binding_sig), Some(t)) =
        (&a.id_commitment, &a.tag, &a.id_binding, a.timestamp)
    else {
        return Err(bad("missing identity, tag, certificate or timestamp"));
    };
    let (Ok(id), Ok(tag)) = (fe_from_bytes(idc), fe_from_bytes(tag)) else {
        return Err(bad("identity or tag is not a canonical field element"));
    };
    let key = c
        .responder_did
        .strip_prefix(lango_crypto::wallet::DID_PREFIX)
        .and_then(|h| hex::decode(h).ok())
        .and_then(|b| PublicKey::from_compressed(&b).ok())
        .ok_or_else(|| bad("the responder's DID names no wallet key"))?;
    if verify_message(
        &key,
        &id_binding_message(&id, c.responder_did),
        binding_sig,
        LowS::Require,
    )
    .is_err()
    {
        return Err(bad(
            "the identity is not certified by the responder's wallet",
        ));
    }
    let (min, max) = match c.zk_attest {
        Some(z) => (z.min_ts, z.max_ts),
        None => {
            // A window the responder chose: check it against this node's clock.
            let (Some(min), Some(max)) = (a.min_timestamp, a.max_timestamp) else {
                return Err(bad("no time window"));
            };
            let now = unix_now();
            let lo = now.saturating_sub(ATTEST_WINDOW_PAST_SECS + ATTEST_SKEW_SECS);
            let hi = now + ATTEST_WINDOW_FUTURE_SECS + ATTEST_SKEW_SECS;
            if !(lo..=hi).contains(&t)
                || !(min..=max).contains(&t)
                || max - min > ATTEST_WINDOW_PAST_SECS + ATTEST_WINDOW_FUTURE_SECS
            {
                return Err(bad("the attested time is not recent"));
            }
            (min, max)
        }
    };
    let req_binding =
        lango_zkp::encoding::attestation_binding(&lango_zkp::encoding::AttestedRequest {
            request_id: c.request_id,
            requester_did: c.requester_did,
            responder_did: c.responder_did,
            request_type: c.request_type,
            tool_name: c.tool_name,
            nonce: c.zk_attest.as_ref().map(|z| &z.nonce),
        })
        .map_err(|e| bad(&e.to_string()))?;
    let (lo, hi) = lango_zkp::encoding::response_limbs(c.result_bytes);
    let public = vec![
        id,
        lo,
        hi,
        req_binding,
        lango_zkp::encoding::fe_u64(t),
        lango_zkp::encoding::fe_u64(min),
        lango_zkp::encoding::fe_u64(max),
        tag,
    ];
    service
        .compile_async(CircuitId::ResponseAttestationV2)
        .await
        .map_err(|e| bad(&e.to_string()))?;
    let proof = Proof {
        circuit: CircuitId::ResponseAttestationV2,
        scheme: a.scheme.clone(),
        data: a.proof.clone(),
        public_inputs: Vec::new(),
        vk_digest: a
            .vk_digest
            .as_deref()
            .and_then(|h| hex::decode(h).ok())
            .and_then(|v| v.try_into().ok()),
    };
    match service.verify_async(proof, public).await {
        Ok(true) => Ok(()),
        Ok(false) => Err(bad("the proof is not for this request, result and window")),
        Err(e) => Err(bad(&e.to_string())),
    }
}
