//! Canonical payloads, signing and verification for the legacy 1.0.0/1.1.0 protocols
//! (spec §2.6, §2.7, rules R-2…, I-2, I-3, I-6…I-10).
//!
//! **Signed payloads.** The challenge payload is
//! `CP = nonce ‖ BE64(timestamp) ‖ UTF-8(senderDid)` (no separators), extended by
//! `‖ UTF-8(kemAlgorithm) ‖ kemPublicKey` when an upstream HEAD initiator offered a KEM key. The
//! initiator signs `Keccak-256(CP)` once (`sign_message(CP)`); the responder signs
//! `Keccak-256(nonce)` (`sign_message(nonce)`).
//!
//! **The double-hash defect (§2.7).** A Go initiator at `2856d8a9` signs `Keccak-256(Keccak-256(CP))`.
//! Such a signature never authenticates: anybody can obtain one for any victim from a legacy
//! responder, which signs `Keccak-256(X)` for any 32-byte `X`. [`classify_challenge`] recognises
//! it and either refuses it ([`Error::LegacySignatureRejected`], when signed challenges are
//! required) or downgrades the challenge to unsigned.

use std::time::{Duration, SystemTime};

use lango_crypto::mac::ct_eq;
use lango_crypto::wallet::{Did, PublicKey, keccak256};

use crate::Error;
use crate::clock::{check_timestamp, is_in_future, unix_seconds};
use crate::identity::{DID_V2_PREFIX, did_names_key, parse_peer_did, parse_peer_key};
use crate::messages::{Challenge, ChallengeResponse, SessionAck};
use crate::nonce::{NONCE_SIZE, NonceCache};
use crate::protocol::SIGNATURE_ALGORITHM;
use crate::sig::{check_signature_encoding, recovers_to};
use crate::signer::{Wallet, sign_checked};
use crate::wire::is_well_formed_token;

/// The challenge payload `CP = nonce ‖ BE64(timestamp) ‖ UTF-8(sender_did)`.
pub fn challenge_payload(nonce: &[u8], timestamp: i64, sender_did: &str) -> Vec<u8> {
    let mut cp = Vec::with_capacity(nonce.len() + 8 + sender_did.len());
    cp.extend_from_slice(nonce);
    cp.extend_from_slice(&timestamp.to_be_bytes());
    cp.extend_from_slice(sender_did.as_bytes());
    cp
}

impl Challenge {
    /// The payload this challenge's signature must cover: `CP`, or
    /// `CP ‖ UTF-8(kemAlgorithm) ‖ kemPublicKey` when `kemPublicKey` is non-empty (upstream
    /// HEAD interop, R-5).
    pub fn signed_payload(&self) -> Vec<u8> {
        let mut p = challenge_payload(&self.nonce, self.timestamp, &self.sender_did);
        if !self.kem_public_key.is_empty() {
            p.extend_from_slice(self.kem_algorithm.as_bytes());
            p.extend_from_slice(&self.kem_public_key);
        }
        p
    }
}

/// Checks `signatureAlgorithm` of a legacy message (H-7): absent, empty or
/// `secp256k1-keccak256`; anything else is [`Error::UnsupportedAlgorithm`].
pub fn check_legacy_algorithm(alg: &str) -> Result<(), Error> {
    if alg.is_empty() || alg == SIGNATURE_ALGORITHM {
        Ok(())
    } else {
        Err(Error::UnsupportedAlgorithm(alg.chars().take(64).collect()))
    }
}

/// Requires a nonce of exactly 32 bytes. Enforced by the handshake itself, with or
/// without a replay cache, so the responder can never be made to sign a longer value.
pub fn require_nonce(nonce: &[u8]) -> Result<[u8; NONCE_SIZE], Error> {
    <[u8; NONCE_SIZE]>::try_from(nonce).map_err(|_| Error::InvalidNonce { len: nonce.len() })
}

/// Why a challenge counts as unsigned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UnsignedReason {
    /// Neither `signature` nor `publicKey` (a 1.0-style challenge).
    NoSignature,
    /// `publicKey` without `signature` (a Go initiator whose signing failed).
    PublicKeyOnly,
    /// `signature` without `publicKey`.
    SignatureOnly,
    /// A signature over the double hash from a `2856d8a9` Go initiator (§2.7). Log a warning.
    LegacyDoubleHash,
}

/// How far a legacy challenge authenticates its initiator.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InitiatorAuth {
    /// The signature over `Keccak-256(payload)` recovers `publicKey`.
    Authenticated {
        /// The initiator's key.
        public_key: PublicKey,
    },
    /// Accepted as unauthenticated (only when signed challenges are not required).
    Unsigned(UnsignedReason),
}

impl InitiatorAuth {
    /// Whether the initiator proved its key.
    pub fn is_authenticated(&self) -> bool {
        matches!(self, Self::Authenticated { .. })
    }
}

/// Classifies the challenge signature, after the algorithm check of H-7:
///
/// - `signature` and `publicKey` both present: the key must be a valid 33-byte compressed
///   point and the signature 65 well-formed bytes (C-3, low-S required). A signature over
///   `Keccak-256(payload)` that recovers the key authenticates. One over the double hash is
///   [`Error::LegacySignatureRejected`] when `require_signed`, else unsigned. Anything else is
///   [`Error::SignatureMismatch`] — including a key that is not a valid compressed point, which
///   can never equal a recovered key (Go reports "public key mismatch" too).
/// - exactly one present, or none: unsigned; [`Error::UnsignedRejected`] when `require_signed`.
pub fn classify_challenge(ch: &Challenge, require_signed: bool) -> Result<InitiatorAuth, Error> {
    check_legacy_algorithm(&ch.signature_algorithm)?;
    let reason = match (ch.signature.is_empty(), ch.public_key.is_empty()) {
        (false, false) => return classify_signed(ch, require_signed),
        (true, true) => UnsignedReason::NoSignature,
        (true, false) => UnsignedReason::PublicKeyOnly,
        (false, true) => UnsignedReason::SignatureOnly,
    };
    if require_signed {
        return Err(Error::UnsignedRejected);
    }
    Ok(InitiatorAuth::Unsigned(reason))
}

fn classify_signed(ch: &Challenge, require_signed: bool) -> Result<InitiatorAuth, Error> {
    let public_key = parse_peer_key(&ch.public_key).ok_or(Error::SignatureMismatch)?;
    check_signature_encoding(&ch.signature)?;
    let h1 = keccak256(&ch.signed_payload());
    if recovers_to(&h1, &ch.signature, &public_key) {
        return Ok(InitiatorAuth::Authenticated { public_key });
    }
    let h2 = keccak256(&h1);
    if recovers_to(&h2, &ch.signature, &public_key) {
        if require_signed {
            return Err(Error::LegacySignatureRejected);
        }
        return Ok(InitiatorAuth::Unsigned(UnsignedReason::LegacyDoubleHash));
    }
    Err(Error::SignatureMismatch)
}

/// Checks `senderDid`: a `did:lango:v2:` DID is [`Error::UnsupportedIdentity`]; a DID that
/// is not canonical is [`Error::MalformedDid`]; an authenticated challenge whose DID does not
/// name its key is [`Error::DidKeyMismatch`]; an unauthenticated claim of `own_did` is
/// [`Error::SelfDid`].
pub fn check_sender_did(
    ch: &Challenge,
    auth: &InitiatorAuth,
    own_did: Option<&Did>,
) -> Result<Did, Error> {
    let did = parse_peer_did(&ch.sender_did)?;
    match auth {
        InitiatorAuth::Authenticated { public_key } => {
            if !did_names_key(did.as_str(), public_key) {
                return Err(Error::DidKeyMismatch);
            }
        }
        InitiatorAuth::Unsigned(_) => {
            if own_did.is_some_and(|own| ct_eq(own.as_str().as_bytes(), did.as_str().as_bytes())) {
                return Err(Error::SelfDid);
            }
        }
    }
    Ok(did)
}

/// A challenge that passed R-2…R-6.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValidatedChallenge {
    /// The 32-byte nonce, to be signed in the response.
    pub nonce: [u8; NONCE_SIZE],
    /// The initiator's canonical DID (its claim, unless authenticated).
    pub sender_did: Did,
    /// Whether and how the initiator is authenticated.
    pub auth: InitiatorAuth,
}

/// Runs the responder's checks R-2…R-6 in the mandated order: timestamp window, nonce length,
/// replay (the nonce is recorded before any signature check, so a rejected challenge still
/// uses it up), signature classification, DID checks.
///
/// `nonce_cache` may be `None` (the reference allows running without one); the nonce length is
/// enforced either way.
pub fn validate_challenge(
    ch: &Challenge,
    now: SystemTime,
    nonce_cache: Option<&NonceCache>,
    require_signed: bool,
    own_did: Option<&Did>,
) -> Result<ValidatedChallenge, Error> {
    check_timestamp(ch.timestamp, now)?;
    let nonce = require_nonce(&ch.nonce)?;
    if let Some(cache) = nonce_cache {
        cache.check(&nonce)?;
    }
    let auth = classify_challenge(ch, require_signed)?;
    let sender_did = check_sender_did(ch, &auth, own_did)?;
    Ok(ValidatedChallenge {
        nonce,
        sender_did,
        auth,
    })
}

/// Builds the initiator's challenge (I-2, I-3): the given nonce and timestamp, the wallet's DID
/// and key, and a signature over `Keccak-256(CP)`, hashed once. `signatureAlgorithm` is
/// omitted. A wallet failure is an error; there is no unsigned fallback.
pub async fn sign_challenge<W: Wallet + ?Sized>(
    wallet: &W,
    nonce: &[u8; NONCE_SIZE],
    timestamp: i64,
) -> Result<Challenge, Error> {
    let pk = wallet.public_key().await?;
    let did = Did::from_public_key(&pk);
    let cp = challenge_payload(nonce, timestamp, did.as_str());
    let sig = sign_checked(wallet, &pk, &cp).await?;
    Ok(Challenge {
        nonce: nonce.to_vec(),
        timestamp,
        sender_did: did.as_str().to_owned(),
        public_key: pk.to_compressed().to_vec(),
        signature: sig.to_bytes().to_vec(),
        ..Challenge::default()
    })
}

/// Builds the responder's reply: the nonce echoed, a signature over
/// `Keccak-256(nonce)`, the wallet's DID and key. Never a `zkProof` or `signatureAlgorithm`.
///
/// The nonce is a `[u8; 32]` by type: the responder cannot be asked to sign anything else.
pub async fn sign_response<W: Wallet + ?Sized>(
    wallet: &W,
    nonce: &[u8; NONCE_SIZE],
) -> Result<ChallengeResponse, Error> {
    let pk = wallet.public_key().await?;
    let sig = sign_checked(wallet, &pk, nonce).await?;
    Ok(ChallengeResponse {
        nonce: nonce.to_vec(),
        signature: sig.to_bytes().to_vec(),
        did: Did::from_public_key(&pk).as_str().to_owned(),
        public_key: pk.to_compressed().to_vec(),
        ..ChallengeResponse::default()
    })
}

/// A responder that passed I-6…I-10.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedResponse {
    /// The responder's DID, bound to its key.
    pub did: Did,
    /// The responder's wallet key.
    pub public_key: PublicKey,
    /// Whether the response carried a `zkProof` (ignored for authentication, I-7, Z-4).
    pub zk_proof_present: bool,
}

/// Verifies a response to our challenge, in order:
///
/// 1. the echoed nonce equals ours, compared in constant time including the length
///    ([`Error::NonceMismatch`]);
/// 2. a signature is present ([`Error::NoProofOrSignature`]; a `zkProof` alone never
///    authenticates);
/// 3. 65 well-formed bytes, low-S (C-3);
/// 4. `signatureAlgorithm` (H-7) and no `kemCiphertext` ([`Error::UnexpectedKem`]);
/// 5. the signature over `Keccak-256(own nonce)` recovers `publicKey`
///    ([`Error::SignatureMismatch`]; an invalid key also ends here);
/// 6. `did` is exactly the canonical DID of `publicKey` ([`Error::UnsupportedIdentity`] for a v2
///    DID, [`Error::DidKeyMismatch`] otherwise, X-4);
/// 7. `did` is the expected one, if the caller named one ([`Error::UnexpectedPeerDid`]).
pub fn verify_response(
    resp: &ChallengeResponse,
    own_nonce: &[u8; NONCE_SIZE],
    expected_did: Option<&Did>,
) -> Result<VerifiedResponse, Error> {
    if !ct_eq(&resp.nonce, own_nonce) {
        return Err(Error::NonceMismatch);
    }
    if resp.signature.is_empty() {
        return Err(Error::NoProofOrSignature);
    }
    check_signature_encoding(&resp.signature)?;
    check_legacy_algorithm(&resp.signature_algorithm)?;
    if !resp.kem_ciphertext.is_empty() {
        return Err(Error::UnexpectedKem);
    }
    let public_key = parse_peer_key(&resp.public_key).ok_or(Error::SignatureMismatch)?;
    if !recovers_to(&keccak256(own_nonce), &resp.signature, &public_key) {
        return Err(Error::SignatureMismatch);
    }
    if resp.did.starts_with(DID_V2_PREFIX) {
        return Err(Error::UnsupportedIdentity);
    }
    if !did_names_key(&resp.did, &public_key) {
        return Err(Error::DidKeyMismatch);
    }
    let did = Did::from_public_key(&public_key);
    if let Some(expected) = expected_did
        && !ct_eq(expected.as_str().as_bytes(), did.as_str().as_bytes())
    {
        return Err(Error::UnexpectedPeerDid {
            expected: expected.as_str().to_owned(),
            got: did.as_str().to_owned(),
        });
    }
    Ok(VerifiedResponse {
        did,
        public_key,
        zk_proof_present: !resp.zk_proof.is_empty(),
    })
}

/// Validates a session ack on the responder (R-13, without the duplicate-token check, which
/// needs the store): the token must be 64 lowercase hex characters ([`Error::MalformedToken`])
/// and `expiresAt` must lie after `now` ([`Error::AckExpired`]). Returns the expiry to store,
/// `min(expiresAt, floor(now + local_ttl))`, in Unix seconds.
pub fn validate_ack(ack: &SessionAck, now: SystemTime, local_ttl: Duration) -> Result<i64, Error> {
    if !is_well_formed_token(ack.token.expose()) {
        return Err(Error::MalformedToken);
    }
    if !is_in_future(ack.expires_at, now) {
        return Err(Error::AckExpired);
    }
    Ok(ack.expires_at.min(local_expiry(now, local_ttl)))
}

/// `floor(now + ttl)` in Unix seconds, saturating.
pub fn local_expiry(now: SystemTime, ttl: Duration) -> i64 {
    now.checked_add(ttl).map_or(i64::MAX, unix_seconds)
}
