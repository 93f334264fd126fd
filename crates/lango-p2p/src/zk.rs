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
