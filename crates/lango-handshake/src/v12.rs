//! Transcripts, signing and verification of the hardened 1.2.0-bound protocol
//! (spec §6.2.3…§6.2.5).
//!
//! Every signature covers a transcript ("SigInput") that starts with a length-prefixed domain
//! label and binds the role, the negotiated protocol ID, both node peer IDs as each side
//! observes them on its authenticated connection, both nonces, both DIDs and keys, and (in the
//! finish) the token's SHA-256 and the proposed expiry:
//!
//! ```text
//! prefix(role) = lp("lango-p2p-handshake") ‖ lp(role) ‖ lp(protocol_id) ‖ lp(peer_I) ‖ lp(peer_R)
//! init_part    = lp(nonce_I) ‖ be64(ts_I) ‖ lp(did_I) ‖ lp(pk_I)
//! resp_part    = lp(nonce_R) ‖ lp(did_R) ‖ lp(pk_R)
//! hello  = prefix("initiator-hello")  ‖ init_part
//! proof  = prefix("responder-proof")  ‖ init_part ‖ resp_part
//! finish = prefix("initiator-finish") ‖ init_part ‖ resp_part ‖ lp(SHA-256(token)) ‖ be64(expiresAt)
//! ```
//!
//! `lp(x)` is a 4-byte big-endian length followed by `x`. Peer IDs are their binary multihash
//! bytes. Signatures are `sign_message(SigInput)`: secp256k1 over Keccak-256, low-S required.
//!
//! The peer IDs always come from the local connection ([`ChannelBinding`]), never from a
//! message, which is what defeats relaying (X-5).
//!
//! SHA-256 is not available from `lango-crypto`, so the finish helpers take the token's
//! SHA-256 digest from the caller ([`TokenDigest`]).

use std::time::{Duration, SystemTime};

use lango_crypto::mac::ct_eq;
use lango_crypto::wallet::{Did, PublicKey};

use crate::Error;
use crate::clock::{check_timestamp, is_in_future};
use crate::identity::{did_names_key, parse_peer_did, parse_peer_key};
use crate::legacy::{local_expiry, require_nonce};
use crate::messages::{Finish, HandshakeResult, Hello, Proof, ResultStatus};
use crate::nonce::NONCE_SIZE;
use crate::protocol::{HANDSHAKE_VERSION_1_2, PROTOCOL_1_2_BOUND, SIGNATURE_ALGORITHM};
use crate::sig::verify_signed_message;
use crate::signer::{Wallet, sign_checked};
use crate::wire::{WireToken, is_well_formed_token};

/// The domain label every 1.2 transcript starts with (after its 4-byte length `00000013`).
pub const DOMAIN_LABEL: &str = "lango-p2p-handshake";
/// The longest peer ID, in bytes, a [`ChannelBinding`] accepts (libp2p peer IDs are at most
/// a few dozen bytes).
pub const MAX_PEER_ID_BYTES: usize = 128;

/// The SHA-256 digest of a session token's UTF-8 bytes, as bound by the finish transcript.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct TokenDigest(pub [u8; 32]);

impl std::fmt::Debug for TokenDigest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TokenDigest([redacted])")
    }
}

/// The role a transcript is signed in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// M1, signed by the initiator.
    InitiatorHello,
    /// M2, signed by the responder.
    ResponderProof,
    /// M3, signed by the initiator.
    InitiatorFinish,
}

impl Role {
    /// The role label.
    pub fn label(self) -> &'static str {
        match self {
            Self::InitiatorHello => "initiator-hello",
            Self::ResponderProof => "responder-proof",
            Self::InitiatorFinish => "initiator-finish",
        }
    }
}

/// What binds a transcript to one connection: the negotiated protocol ID and the initiator's
/// and responder's node peer IDs (binary multihash), as observed on the local connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChannelBinding {
    protocol_id: String,
    peer_i: Vec<u8>,
    peer_r: Vec<u8>,
}

impl ChannelBinding {
    /// A binding with explicit initiator and responder peer IDs. Peer IDs must be 1 to
    /// [`MAX_PEER_ID_BYTES`] bytes and the protocol ID 1 to 1024 bytes
    /// ([`Error::InvalidInput`] otherwise).
    pub fn new(protocol_id: &str, peer_i: &[u8], peer_r: &[u8]) -> Result<Self, Error> {
        for (name, p) in [("initiator", peer_i), ("responder", peer_r)] {
            if p.is_empty() || p.len() > MAX_PEER_ID_BYTES {
                return Err(Error::InvalidInput(format!(
                    "{name} peer ID must be 1 to {MAX_PEER_ID_BYTES} bytes, got {}",
                    p.len()
                )));
            }
        }
        if protocol_id.is_empty() || protocol_id.len() > 1024 {
            return Err(Error::InvalidInput(
                "protocol ID must be 1 to 1024 bytes".to_owned(),
            ));
        }
        Ok(Self {
            protocol_id: protocol_id.to_owned(),
            peer_i: peer_i.to_vec(),
            peer_r: peer_r.to_vec(),
        })
    }

    /// The initiator's view of `/lango/handshake/1.2.0-bound`: (local, remote).
    pub fn initiator(local_peer: &[u8], remote_peer: &[u8]) -> Result<Self, Error> {
        Self::new(PROTOCOL_1_2_BOUND, local_peer, remote_peer)
    }

    /// The responder's view of `/lango/handshake/1.2.0-bound`: (remote, local).
    pub fn responder(local_peer: &[u8], remote_peer: &[u8]) -> Result<Self, Error> {
        Self::new(PROTOCOL_1_2_BOUND, remote_peer, local_peer)
    }

    /// The protocol ID.
    pub fn protocol_id(&self) -> &str {
        &self.protocol_id
    }

    /// The initiator's peer ID bytes.
    pub fn initiator_peer(&self) -> &[u8] {
        &self.peer_i
    }

    /// The responder's peer ID bytes.
    pub fn responder_peer(&self) -> &[u8] {
        &self.peer_r
    }
}

/// The initiator's contribution to every transcript. The DID is derived from the key, so the
/// two are bound by construction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InitPart {
    nonce: [u8; NONCE_SIZE],
    timestamp: i64,
    did: Did,
    public_key: PublicKey,
}

impl InitPart {
    /// The initiator part for a nonce, a timestamp and the initiator's key.
    pub fn new(nonce: [u8; NONCE_SIZE], timestamp: i64, public_key: PublicKey) -> Self {
        Self {
            nonce,
            timestamp,
            did: Did::from_public_key(&public_key),
            public_key,
        }
    }

    /// `nonce_I`.
    pub fn nonce(&self) -> &[u8; NONCE_SIZE] {
        &self.nonce
    }

    /// `ts_I`.
    pub fn timestamp(&self) -> i64 {
        self.timestamp
    }

    /// `did_I`.
    pub fn did(&self) -> &Did {
        &self.did
    }

    /// `pk_I`.
    pub fn public_key(&self) -> &PublicKey {
        &self.public_key
    }
}

/// The responder's contribution to the proof and finish transcripts; DID bound to key by
/// construction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RespPart {
    nonce: [u8; NONCE_SIZE],
    did: Did,
    public_key: PublicKey,
}

impl RespPart {
    /// The responder part for a nonce and the responder's key.
    pub fn new(nonce: [u8; NONCE_SIZE], public_key: PublicKey) -> Self {
        Self {
            nonce,
            did: Did::from_public_key(&public_key),
            public_key,
        }
    }

    /// `nonce_R`.
    pub fn nonce(&self) -> &[u8; NONCE_SIZE] {
        &self.nonce
    }

    /// `did_R`.
    pub fn did(&self) -> &Did {
        &self.did
    }

    /// `pk_R`.
    pub fn public_key(&self) -> &PublicKey {
        &self.public_key
    }
}

fn lp(out: &mut Vec<u8>, x: &[u8]) {
    // Every input is bounded by construction (labels, a protocol ID ≤ 1024 bytes, peer IDs
    // ≤ 128 bytes, 32-byte nonces and digests, 76-byte DIDs, 33-byte keys), so the length
    // always fits in 32 bits.
    let len = u32::try_from(x.len()).unwrap_or(u32::MAX);
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(x);
}

fn prefix(out: &mut Vec<u8>, role: Role, b: &ChannelBinding) {
    lp(out, DOMAIN_LABEL.as_bytes());
    lp(out, role.label().as_bytes());
    lp(out, b.protocol_id.as_bytes());
    lp(out, &b.peer_i);
    lp(out, &b.peer_r);
}

fn init_part(out: &mut Vec<u8>, i: &InitPart) {
    lp(out, &i.nonce);
    out.extend_from_slice(&i.timestamp.to_be_bytes());
    lp(out, i.did.as_str().as_bytes());
    lp(out, &i.public_key.to_compressed());
}

fn resp_part(out: &mut Vec<u8>, r: &RespPart) {
    lp(out, &r.nonce);
    lp(out, r.did.as_str().as_bytes());
    lp(out, &r.public_key.to_compressed());
}

/// SigInput(`initiator-hello`).
pub fn hello_sig_input(b: &ChannelBinding, i: &InitPart) -> Vec<u8> {
    let mut out = Vec::with_capacity(320);
    prefix(&mut out, Role::InitiatorHello, b);
    init_part(&mut out, i);
    out
}

/// SigInput(`responder-proof`).
pub fn proof_sig_input(b: &ChannelBinding, i: &InitPart, r: &RespPart) -> Vec<u8> {
    let mut out = Vec::with_capacity(480);
    prefix(&mut out, Role::ResponderProof, b);
    init_part(&mut out, i);
    resp_part(&mut out, r);
    out
}

/// SigInput(`initiator-finish`).
pub fn finish_sig_input(
    b: &ChannelBinding,
    i: &InitPart,
    r: &RespPart,
    token_sha256: &TokenDigest,
    expires_at: i64,
) -> Vec<u8> {
    let mut out = Vec::with_capacity(520);
    prefix(&mut out, Role::InitiatorFinish, b);
    init_part(&mut out, i);
    resp_part(&mut out, r);
    lp(&mut out, &token_sha256.0);
    out.extend_from_slice(&expires_at.to_be_bytes());
    out
}

fn check_version_and_algorithm(version: &str, alg: &str) -> Result<(), Error> {
    if version != HANDSHAKE_VERSION_1_2 {
        return Err(Error::Decode(format!(
            "handshakeVersion must be \"{HANDSHAKE_VERSION_1_2}\""
        )));
    }
    if alg != SIGNATURE_ALGORITHM {
        return Err(Error::UnsupportedAlgorithm(alg.chars().take(64).collect()));
    }
    Ok(())
}

/// Checks an identity claim: a v2 DID is [`Error::UnsupportedIdentity`], a non-canonical DID
/// [`Error::MalformedDid`], and a key that is invalid or not the one the DID names
/// [`Error::DidKeyMismatch`].
fn bound_identity(did: &str, public_key: &[u8]) -> Result<PublicKey, Error> {
    let did = parse_peer_did(did)?;
    let pk = parse_peer_key(public_key).ok_or(Error::DidKeyMismatch)?;
    if !did_names_key(did.as_str(), &pk) {
        return Err(Error::DidKeyMismatch);
    }
    Ok(pk)
}

/// Builds M1 (I → R): signs SigInput(`initiator-hello`) with the wallet.
pub async fn sign_hello<W: Wallet + ?Sized>(
    wallet: &W,
    binding: &ChannelBinding,
    nonce: [u8; NONCE_SIZE],
    timestamp: i64,
) -> Result<(Hello, InitPart), Error> {
    let pk = wallet.public_key().await?;
    let init = InitPart::new(nonce, timestamp, pk);
    let sig = sign_checked(wallet, &pk, &hello_sig_input(binding, &init)).await?;
    let hello = Hello {
        handshake_version: HANDSHAKE_VERSION_1_2.to_owned(),
        nonce: nonce.to_vec(),
        timestamp,
        sender_did: init.did.as_str().to_owned(),
        public_key: pk.to_compressed().to_vec(),
        signature_algorithm: SIGNATURE_ALGORITHM.to_owned(),
        signature: sig.to_bytes().to_vec(),
        zk_schemes: Vec::new(),
    };
    Ok((hello, init))
}

/// The responder's field checks on M1 that come before the replay cache (P-3): version,
/// algorithm, timestamp window (R-2) and the 32-byte nonce (R-3). Returns the nonce, which the
/// caller then records in the replay cache before calling [`verify_hello`].
pub fn check_hello(hello: &Hello, now: SystemTime) -> Result<[u8; NONCE_SIZE], Error> {
    check_version_and_algorithm(&hello.handshake_version, &hello.signature_algorithm)?;
    check_timestamp(hello.timestamp, now)?;
    require_nonce(&hello.nonce)
}

/// The responder's identity and signature checks on M1 (P-3), after [`check_hello`] and the
/// replay cache: the key and DID must be bound, and the signature over
/// SigInput(`initiator-hello`) — with the responder's view of the connection — must recover the
/// key.
pub fn verify_hello(hello: &Hello, binding: &ChannelBinding) -> Result<InitPart, Error> {
    let nonce = require_nonce(&hello.nonce)?;
    let pk = bound_identity(&hello.sender_did, &hello.public_key)?;
    let init = InitPart::new(nonce, hello.timestamp, pk);
    verify_signed_message(&pk, &hello_sig_input(binding, &init), &hello.signature)?;
    Ok(init)
}

/// Builds M2 (R → I): signs SigInput(`responder-proof`), the only thing a 1.2 responder ever
/// signs (P-5).
pub async fn sign_proof<W: Wallet + ?Sized>(
    wallet: &W,
    binding: &ChannelBinding,
    init: &InitPart,
    responder_nonce: [u8; NONCE_SIZE],
) -> Result<(Proof, RespPart), Error> {
    let pk = wallet.public_key().await?;
    let resp = RespPart::new(responder_nonce, pk);
    let sig = sign_checked(wallet, &pk, &proof_sig_input(binding, init, &resp)).await?;
    let proof = Proof {
        handshake_version: HANDSHAKE_VERSION_1_2.to_owned(),
        nonce: init.nonce.to_vec(),
        responder_nonce: responder_nonce.to_vec(),
        did: resp.did.as_str().to_owned(),
        public_key: pk.to_compressed().to_vec(),
        signature_algorithm: SIGNATURE_ALGORITHM.to_owned(),
        signature: sig.to_bytes().to_vec(),
        ..Proof::default()
    };
    Ok((proof, resp))
}

/// The initiator's checks on M2 (P-6), in order: version and algorithm, the constant-time
/// nonce echo ([`Error::NonceMismatch`]), a 32-byte `responderNonce`, the bound identity, the
/// expected DID if any ([`Error::UnexpectedPeerDid`]), and the signature over
/// SigInput(`responder-proof`) with the initiator's view of the connection.
pub fn verify_proof(
    proof: &Proof,
    binding: &ChannelBinding,
    init: &InitPart,
    expected_did: Option<&Did>,
) -> Result<RespPart, Error> {
    check_version_and_algorithm(&proof.handshake_version, &proof.signature_algorithm)?;
    if !ct_eq(&proof.nonce, &init.nonce) {
        return Err(Error::NonceMismatch);
    }
    let nonce_r = require_nonce(&proof.responder_nonce)?;
    let pk = bound_identity(&proof.did, &proof.public_key)?;
    let resp = RespPart::new(nonce_r, pk);
    if let Some(expected) = expected_did
        && !ct_eq(expected.as_str().as_bytes(), resp.did.as_str().as_bytes())
    {
        return Err(Error::UnexpectedPeerDid {
            expected: expected.as_str().to_owned(),
            got: resp.did.as_str().to_owned(),
        });
    }
    verify_signed_message(
        &pk,
        &proof_sig_input(binding, init, &resp),
        &proof.signature,
    )?;
    Ok(resp)
}

/// Builds M3 (I → R): signs SigInput(`initiator-finish`). `token_sha256` MUST be the SHA-256
/// of `token`'s UTF-8 bytes.
pub async fn sign_finish<W: Wallet + ?Sized>(
    wallet: &W,
    binding: &ChannelBinding,
    init: &InitPart,
    resp: &RespPart,
    token: WireToken,
    token_sha256: &TokenDigest,
    expires_at: i64,
) -> Result<Finish, Error> {
    if !token.is_well_formed() {
        return Err(Error::InvalidInput(
            "session token must be 64 lowercase hex characters".to_owned(),
        ));
    }
    let pk = wallet.public_key().await?;
    if !ct_eq(&pk.to_compressed(), &init.public_key.to_compressed()) {
        return Err(Error::Wallet(
            "wallet key differs from the key in the hello".to_owned(),
        ));
    }
    let input = finish_sig_input(binding, init, resp, token_sha256, expires_at);
    let sig = sign_checked(wallet, &pk, &input).await?;
    Ok(Finish {
        token,
        expires_at,
        signature: sig.to_bytes().to_vec(),
    })
}

/// The responder's checks on M3 (P-8, without the duplicate-token check, which needs the
/// store): the token format ([`Error::MalformedToken`]), a proposed expiry after `now`
/// ([`Error::AckExpired`]), and the signature over SigInput(`initiator-finish`) by `pk_I` from
/// M1. `token_sha256` MUST be the SHA-256 of `finish.token`'s UTF-8 bytes.
///
/// Returns the final expiry `min(expiresAt, floor(now + local_ttl))`.
pub fn verify_finish(
    finish: &Finish,
    binding: &ChannelBinding,
    init: &InitPart,
    resp: &RespPart,
    token_sha256: &TokenDigest,
    now: SystemTime,
    local_ttl: Duration,
) -> Result<i64, Error> {
    if !is_well_formed_token(finish.token.expose()) {
        return Err(Error::MalformedToken);
    }
    if !is_in_future(finish.expires_at, now) {
        return Err(Error::AckExpired);
    }
    let input = finish_sig_input(binding, init, resp, token_sha256, finish.expires_at);
    verify_signed_message(&init.public_key, &input, &finish.signature)?;
    Ok(finish.expires_at.min(local_expiry(now, local_ttl)))
}

/// The initiator's check on M4 (P-10): `ok` with `0 < expiresAt ≤ proposed`. Returns the final
/// expiry; a `rejected` result is [`Error::RejectedByPeer`] with the peer's code.
pub fn check_result(result: &HandshakeResult, proposed_expires_at: i64) -> Result<i64, Error> {
    match result.status {
        ResultStatus::Rejected => Err(Error::RejectedByPeer(if result.error.is_empty() {
            "rejected".to_owned()
        } else {
            result.error.chars().take(64).collect()
        })),
        ResultStatus::Ok if result.expires_at <= 0 || result.expires_at > proposed_expires_at => {
            Err(Error::RejectedByPeer(format!(
                "final expiry {} outside (0, {proposed_expires_at}]",
                result.expires_at
            )))
        }
        ResultStatus::Ok => Ok(result.expires_at),
    }
}
