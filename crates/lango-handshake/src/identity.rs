//! DID checks shared by both protocols (R-6, I-9, H-7).

use lango_crypto::mac::ct_eq;
use lango_crypto::wallet::{Did, PublicKey};

use crate::Error;

/// The prefix of upstream HEAD's hash-based DIDs, which Rust refuses (H-7).
pub const DID_V2_PREFIX: &str = "did:lango:v2:";

/// Parses a DID received from a peer. A `did:lango:v2:` DID gives
/// [`Error::UnsupportedIdentity`]; anything that is not `did:lango:` + 66 lowercase hex
/// characters of a valid compressed key gives [`Error::MalformedDid`].
pub fn parse_peer_did(s: &str) -> Result<Did, Error> {
    if s.starts_with(DID_V2_PREFIX) {
        return Err(Error::UnsupportedIdentity);
    }
    Did::parse(s).map_err(|e| Error::MalformedDid(e.to_string()))
}

/// Whether `did` is exactly the canonical DID of `pk` (constant-time comparison).
pub fn did_names_key(did: &str, pk: &PublicKey) -> bool {
    let canonical = Did::from_public_key(pk);
    ct_eq(did.as_bytes(), canonical.as_str().as_bytes())
}

/// Parses a 33-byte compressed public key received from a peer. Used where a bad key means
/// the identity claim cannot be bound.
pub(crate) fn parse_peer_key(bytes: &[u8]) -> Option<PublicKey> {
    if bytes.len() != 33 {
        return None;
    }
    PublicKey::from_compressed(bytes).ok()
}
