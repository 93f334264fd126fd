//! Signature checks (C-3) and recovery shared by both protocols.

use lango_crypto::mac::ct_eq;
use lango_crypto::wallet::{EcdsaSignature, LowS, PublicKey, keccak256, recover};

use crate::Error;

/// Length of a recoverable signature `r ‖ s ‖ v`.
pub const SIGNATURE_LEN: usize = 65;

/// Checks the encoding of a recoverable signature (C-3): 65 bytes, `v ∈ {0,1}`,
/// `0 < r, s < n`, and low-S. Low-S is required in both protocols: it is a MUST in 1.2, and
/// for legacy the spec's SHOULD is taken (Go signers never produce high-S).
pub fn check_signature_encoding(sig: &[u8]) -> Result<(), Error> {
    if sig.len() != SIGNATURE_LEN {
        return Err(Error::BadSignatureLength(sig.len()));
    }
    let v = sig[64];
    if v > 1 {
        return Err(Error::BadSignatureEncoding(format!(
            "recovery id must be 0 or 1, got {v}"
        )));
    }
    let rs = EcdsaSignature::from_raw(&sig[..64]).map_err(|_| {
        Error::BadSignatureEncoding("r or s is zero or not below the group order".to_owned())
    })?;
    if rs.is_high_s() {
        return Err(Error::BadSignatureEncoding("high-S signature".to_owned()));
    }
    Ok(())
}

/// Whether `sig` over `digest` recovers exactly `expected` (compressed keys compared in
/// constant time). A recovery failure counts as "does not recover". Call
/// [`check_signature_encoding`] first.
pub(crate) fn recovers_to(digest: &[u8; 32], sig: &[u8], expected: &PublicKey) -> bool {
    match recover(digest, sig, LowS::Require) {
        Ok(pk) => ct_eq(&pk.to_compressed(), &expected.to_compressed()),
        Err(_) => false,
    }
}

/// Checks the encoding, then that `sig` is over `Keccak-256(message)` by `expected`
/// ([`Error::SignatureMismatch`] otherwise).
pub fn verify_signed_message(
    expected: &PublicKey,
    message: &[u8],
    sig: &[u8],
) -> Result<(), Error> {
    check_signature_encoding(sig)?;
    if recovers_to(&keccak256(message), sig, expected) {
        Ok(())
    } else {
        Err(Error::SignatureMismatch)
    }
}
