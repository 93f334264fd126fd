//! The handshake messages and their JSON form.
//!
//! Legacy 1.0.0/1.1.0 messages ([`Challenge`], [`ChallengeResponse`], [`SessionAck`]) follow
//! the Go structs of the reference field by field (spec §2.4), including the `omitempty` rules
//! and the fields upstream HEAD added, which Rust reads (H-7, R-5, I-8) but never sets. Go's
//! `bundle` object is not modelled: it is ignored like any unknown key.
//!
//! The 1.2.0-bound messages ([`Hello`], [`Proof`], [`Finish`], [`HandshakeResult`]) follow
//! spec §6.2.3; all their fields are always written.
//!
//! Every type decodes with the same tolerance as Go: keys in any order, unknown keys ignored,
//! absent or `null` fields read as empty/0. See [`crate::wire`] for the field encodings.

use serde::{Deserialize, Serialize};

use crate::wire::{WireToken, go};

/// M0 of the legacy protocol (initiator → responder), Go type `Challenge`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct Challenge {
    /// 32 random bytes chosen by the initiator.
    #[serde(with = "go::bytes")]
    pub nonce: Vec<u8>,
    /// The initiator's wall clock, Unix seconds.
    #[serde(with = "go::int64")]
    pub timestamp: i64,
    /// The initiator's DID.
    #[serde(with = "go::string")]
    pub sender_did: String,
    /// The initiator's 33-byte compressed wallet key ("v1.1"; omitted when empty).
    #[serde(with = "go::bytes", skip_serializing_if = "Vec::is_empty")]
    pub public_key: Vec<u8>,
    /// The 65-byte signature over the challenge payload ("v1.1"; omitted when empty).
    #[serde(with = "go::bytes", skip_serializing_if = "Vec::is_empty")]
    pub signature: Vec<u8>,
    /// Upstream HEAD: the signature algorithm (omitted when empty; Rust never sets it).
    #[serde(with = "go::string", skip_serializing_if = "String::is_empty")]
    pub signature_algorithm: String,
    /// Upstream HEAD: an ephemeral KEM public key (omitted when empty; Rust never sets it).
    #[serde(with = "go::bytes", skip_serializing_if = "Vec::is_empty")]
    pub kem_public_key: Vec<u8>,
    /// Upstream HEAD: the KEM algorithm name (omitted when empty; Rust never sets it).
    #[serde(with = "go::string", skip_serializing_if = "String::is_empty")]
    pub kem_algorithm: String,
    /// lango-rs: the ZK ownership schemes this initiator verifies, e.g.
    /// `halo2-ipa-pasta/wallet_ownership/v2` (omitted when empty). Go responders ignore it;
    /// a Rust responder sends a proof only when it is present (Go initiators abort on a
    /// proof they cannot verify). Not covered by the challenge signature: removing it only
    /// turns the proof off.
    #[serde(with = "go::strings", skip_serializing_if = "Vec::is_empty")]
    pub zk_schemes: Vec<String>,
}

/// M1 of the legacy protocol (responder → initiator), Go type `ChallengeResponse`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct ChallengeResponse {
    /// Echo of the challenge nonce.
    #[serde(with = "go::bytes")]
    pub nonce: Vec<u8>,
    /// 65-byte signature over Keccak-256(nonce) (omitted when empty).
    #[serde(with = "go::bytes", skip_serializing_if = "Vec::is_empty")]
    pub signature: Vec<u8>,
    /// A ZK ownership proof (omitted when empty). Rust sends one only to an initiator that
    /// advertised `zkSchemes`, always next to the signature (Z-4).
    #[serde(with = "go::bytes", skip_serializing_if = "Vec::is_empty")]
    pub zk_proof: Vec<u8>,
    /// The responder's DID.
    #[serde(with = "go::string")]
    pub did: String,
    /// The responder's 33-byte compressed wallet key (not `omitempty`: `null` when empty).
    #[serde(with = "go::bytes")]
    pub public_key: Vec<u8>,
    /// Upstream HEAD: the signature algorithm (omitted when empty; Rust never sets it).
    #[serde(with = "go::string", skip_serializing_if = "String::is_empty")]
    pub signature_algorithm: String,
    /// Upstream HEAD: a KEM ciphertext (omitted when empty; refused by Rust initiators, I-8).
    #[serde(with = "go::bytes", skip_serializing_if = "Vec::is_empty")]
    pub kem_ciphertext: Vec<u8>,
    /// lango-rs: the proof's scheme and circuit (omitted when empty). A proof without one
    /// (Go's) is ignored.
    #[serde(with = "go::string", skip_serializing_if = "String::is_empty")]
    pub zk_scheme: String,
    /// lango-rs: the prover's 32-byte ZK identity commitment (omitted when empty).
    #[serde(with = "go::bytes", skip_serializing_if = "Vec::is_empty")]
    pub zk_id_commitment: Vec<u8>,
    /// lango-rs: the proof's 32-byte tag over this handshake's binding (omitted when empty).
    #[serde(with = "go::bytes", skip_serializing_if = "Vec::is_empty")]
    pub zk_tag: Vec<u8>,
    /// lango-rs: the wallet's 65-byte signature certifying the identity commitment (omitted
    /// when empty).
    #[serde(with = "go::bytes", skip_serializing_if = "Vec::is_empty")]
    pub zk_id_binding: Vec<u8>,
}

/// M2 of the legacy protocol (initiator → responder), Go type `SessionAck`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct SessionAck {
    /// The session token (64 lowercase hex characters when well formed).
    pub token: WireToken,
    /// The initiator's session expiry, Unix seconds.
    #[serde(with = "go::int64")]
    pub expires_at: i64,
}

/// M1 of the 1.2.0-bound protocol (initiator → responder).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct Hello {
    /// Must be `"1.2"`.
    #[serde(with = "go::string")]
    pub handshake_version: String,
    /// `nonce_I`, 32 bytes.
    #[serde(with = "go::bytes")]
    pub nonce: Vec<u8>,
    /// `ts_I`, Unix seconds.
    #[serde(with = "go::int64")]
    pub timestamp: i64,
    /// The initiator's canonical DID.
    #[serde(with = "go::string")]
    pub sender_did: String,
    /// The initiator's 33-byte key.
    #[serde(with = "go::bytes")]
    pub public_key: Vec<u8>,
    /// Must be `"secp256k1-keccak256"`.
    #[serde(with = "go::string")]
    pub signature_algorithm: String,
    /// 65 bytes over SigInput(`initiator-hello`).
    #[serde(with = "go::bytes")]
    pub signature: Vec<u8>,
    /// The ZK ownership schemes this initiator verifies (omitted when empty; not in the
    /// signature input: removing it only turns the proof off).
    #[serde(with = "go::strings", skip_serializing_if = "Vec::is_empty")]
    pub zk_schemes: Vec<String>,
}

/// M2 of the 1.2.0-bound protocol (responder → initiator).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct Proof {
    /// Must be `"1.2"`.
    #[serde(with = "go::string")]
    pub handshake_version: String,
    /// Echo of `nonce_I`.
    #[serde(with = "go::bytes")]
    pub nonce: Vec<u8>,
    /// `nonce_R`, 32 bytes.
    #[serde(with = "go::bytes")]
    pub responder_nonce: Vec<u8>,
    /// The responder's canonical DID.
    #[serde(with = "go::string")]
    pub did: String,
    /// The responder's 33-byte key.
    #[serde(with = "go::bytes")]
    pub public_key: Vec<u8>,
    /// Must be `"secp256k1-keccak256"`.
    #[serde(with = "go::string")]
    pub signature_algorithm: String,
    /// 65 bytes over SigInput(`responder-proof`).
    #[serde(with = "go::bytes")]
    pub signature: Vec<u8>,
    /// A ZK ownership proof for an initiator that advertised its scheme (omitted when
    /// empty), next to the signature, never instead of it.
    #[serde(with = "go::string", skip_serializing_if = "String::is_empty")]
    pub zk_scheme: String,
    /// The proof transcript (omitted when empty).
    #[serde(with = "go::bytes", skip_serializing_if = "Vec::is_empty")]
    pub zk_proof: Vec<u8>,
    /// The prover's 32-byte identity commitment (omitted when empty).
    #[serde(with = "go::bytes", skip_serializing_if = "Vec::is_empty")]
    pub zk_id_commitment: Vec<u8>,
    /// The proof's 32-byte tag (omitted when empty).
    #[serde(with = "go::bytes", skip_serializing_if = "Vec::is_empty")]
    pub zk_tag: Vec<u8>,
    /// The wallet's 65-byte certificate of the identity commitment (omitted when empty).
    #[serde(with = "go::bytes", skip_serializing_if = "Vec::is_empty")]
    pub zk_id_binding: Vec<u8>,
}

/// M3 of the 1.2.0-bound protocol (initiator → responder).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct Finish {
    /// The session token, 64 lowercase hex characters.
    pub token: WireToken,
    /// The proposed expiry, Unix seconds.
    #[serde(with = "go::int64")]
    pub expires_at: i64,
    /// 65 bytes over SigInput(`initiator-finish`).
    #[serde(with = "go::bytes")]
    pub signature: Vec<u8>,
}

/// The status of a 1.2 [`HandshakeResult`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ResultStatus {
    /// The responder stored the session.
    Ok,
    /// The responder refused; `error` says why. Also what an absent status means.
    #[default]
    Rejected,
}

/// M4 of the 1.2.0-bound protocol (responder → initiator).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct HandshakeResult {
    /// `ok` or `rejected`. Any other value fails to decode.
    pub status: ResultStatus,
    /// The final expiry when `ok` (omitted when 0).
    #[serde(with = "go::int64", skip_serializing_if = "go::is_zero")]
    pub expires_at: i64,
    /// An error code of spec §6.2.7 when `rejected` (omitted when empty).
    #[serde(with = "go::string", skip_serializing_if = "String::is_empty")]
    pub error: String,
}

impl HandshakeResult {
    /// An `ok` result with the final expiry.
    pub fn ok(expires_at: i64) -> Self {
        Self {
            status: ResultStatus::Ok,
            expires_at,
            error: String::new(),
        }
    }

    /// A `rejected` result carrying the error's code.
    pub fn rejected(err: &crate::Error) -> Self {
        Self {
            status: ResultStatus::Rejected,
            expires_at: 0,
            error: err.code().to_owned(),
        }
    }
}

macro_rules! zk_fields {
    ($t:ty) => {
        impl $t {
            /// The ZK ownership fields, as the hooks see them.
            pub fn zk(&self) -> crate::hooks::ZkProofFields {
                crate::hooks::ZkProofFields {
                    scheme: self.zk_scheme.clone(),
                    proof: self.zk_proof.clone(),
                    id_commitment: self.zk_id_commitment.clone(),
                    tag: self.zk_tag.clone(),
                    id_binding: self.zk_id_binding.clone(),
                }
            }

            /// Sets the ZK ownership fields from a prover's output.
            pub fn set_zk(&mut self, f: crate::hooks::ZkProofFields) {
                self.zk_scheme = f.scheme;
                self.zk_proof = f.proof;
                self.zk_id_commitment = f.id_commitment;
                self.zk_tag = f.tag;
                self.zk_id_binding = f.id_binding;
            }
        }
    };
}

zk_fields!(ChallengeResponse);
zk_fields!(Proof);
