//! Canonical, injective encodings of integers, digests and byte strings as field elements
//! (spec §3.10.4), the binding digests every statement is tied to, and native Poseidon.
//!
//! Every circuit works over the Pallas base field `Fp` (`p ≈ 2^254`). A 32-byte digest does
//! not fit, so it is either cut to 248 bits ([`fe248`], for binding values) or split into two
//! 128-bit limbs ([`limbs128`], where the whole digest must be bound).

use ff::PrimeField;
use halo2_gadgets::poseidon::primitives::{self as poseidon, ConstantLength, P128Pow5T3};
use halo2_proofs::pasta::Fp;
use sha2::{Digest, Sha256};

use crate::Error;

/// Bytes of one encoded field element.
pub const FE_BYTES: usize = 32;

/// `DOM_ID`: the domain tag of identity commitments (`"LGZK-ID1"` as a big-endian u64).
pub fn dom_id() -> Fp {
    domain(b"LGZK-ID1")
}

/// `DOM_CAP`: the domain tag of capability commitments.
pub fn dom_cap() -> Fp {
    domain(b"LGZK-CP1")
}

/// `DOM_BAL`: the domain tag of balance commitments.
pub fn dom_bal() -> Fp {
    domain(b"LGZK-BL1")
}

fn domain(tag: &[u8; 8]) -> Fp {
    fe_u64(u64::from_be_bytes(*tag))
}

/// The integer `x` as a field element.
pub fn fe_u64(x: u64) -> Fp {
    Fp::from(x)
}

/// The little-endian integer of the first 31 bytes of `d` (248 bits, always below `p`).
pub fn fe248(d: &[u8; 32]) -> Fp {
    let mut repr = [0u8; 32];
    repr[..31].copy_from_slice(&d[..31]);
    // Below 2^248 < p: always canonical.
    Fp::from_repr(repr).unwrap_or(Fp::zero())
}

/// `(lo, hi)`: the little-endian integers of `d[0..16]` and `d[16..32]`.
pub fn limbs128(d: &[u8; 32]) -> (Fp, Fp) {
    let half = |b: &[u8]| {
        let mut repr = [0u8; 32];
        repr[..16].copy_from_slice(b);
        Fp::from_repr(repr).unwrap_or(Fp::zero())
    };
    (half(&d[..16]), half(&d[16..]))
}

/// The 32-byte little-endian canonical encoding of `x`.
pub fn fe_to_bytes(x: &Fp) -> [u8; FE_BYTES] {
    x.to_repr()
}

/// Decodes 32 little-endian bytes; values `≥ p` (non-canonical) are refused.
pub fn fe_from_bytes(b: &[u8]) -> Result<Fp, Error> {
    let repr: [u8; FE_BYTES] = b.try_into().map_err(|_| {
        Error::Encoding(format!(
            "a field element is {FE_BYTES} bytes, not {}",
            b.len()
        ))
    })?;
    Option::from(Fp::from_repr(repr)).ok_or_else(|| {
        Error::Encoding("non-canonical field element (not below the modulus)".into())
    })
}

/// Concatenated 32-byte encodings of `values`.
pub fn fes_to_bytes(values: &[Fp]) -> Vec<u8> {
    values.iter().flat_map(fe_to_bytes).collect()
}

/// Decodes a concatenation of 32-byte encodings (at most `max` values).
pub fn fes_from_bytes(b: &[u8], max: usize) -> Result<Vec<Fp>, Error> {
    if !b.len().is_multiple_of(FE_BYTES) || b.len() / FE_BYTES > max {
        return Err(Error::Encoding(format!(
            "public inputs are whole 32-byte values, at most {max}; got {} bytes",
            b.len()
        )));
    }
    b.chunks(FE_BYTES).map(fe_from_bytes).collect()
}

/// `lp(s)`: a 2-byte big-endian length, then the bytes. Strings longer than 65535 bytes are
/// refused rather than truncated (truncation would make two statements collide).
fn lp(out: &mut Vec<u8>, s: &str) -> Result<(), Error> {
    let n = u16::try_from(s.len())
        .map_err(|_| Error::Encoding(format!("a bound string is {} bytes, over 65535", s.len())))?;
    out.extend_from_slice(&n.to_be_bytes());
    out.extend_from_slice(s.as_bytes());
    Ok(())
}

fn digest(
    domain: &str,
    build: impl FnOnce(&mut Vec<u8>) -> Result<(), Error>,
) -> Result<[u8; 32], Error> {
    let mut m = domain.as_bytes().to_vec();
    build(&mut m)?;
    Ok(Sha256::digest(&m).into())
}

/// The ownership proof's binding: this handshake's nonce, both DIDs and the protocol ID.
pub fn ownership_binding(
    nonce: &[u8; 32],
    initiator_did: &str,
    responder_did: &str,
    protocol_id: &str,
) -> Result<Fp, Error> {
    digest("lango/zk/own/v2", |m| {
        m.extend_from_slice(nonce);
        lp(m, initiator_did)?;
        lp(m, responder_did)?;
        lp(m, protocol_id)
    })
    .map(|d| fe248(&d))
}

/// What an attestation is bound to besides the response bytes (spec §3.11.2).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttestedRequest<'a> {
    /// The request's `requestId`.
    pub request_id: &'a str,
    /// The requester's DID.
    pub requester_did: &'a str,
    /// The responder's DID.
    pub responder_did: &'a str,
    /// The request type (`tool_invoke`, ...).
    pub request_type: &'a str,
    /// The tool called (empty for other request types).
    pub tool_name: &'a str,
    /// The requester's `zkAttest.nonce`, or `None` (32 zero bytes).
    pub nonce: Option<&'a [u8; 32]>,
}

/// `req_binding` of the attestation circuit.
pub fn attestation_binding(r: &AttestedRequest<'_>) -> Result<Fp, Error> {
    digest("lango/zk/att/v2", |m| {
        lp(m, r.request_id)?;
        lp(m, r.requester_did)?;
        lp(m, r.responder_did)?;
        lp(m, r.request_type)?;
        lp(m, r.tool_name)?;
        m.extend_from_slice(r.nonce.unwrap_or(&[0u8; 32]));
        Ok(())
    })
    .map(|d| fe248(&d))
}

/// `(resp_lo, resp_hi)`: the SHA-256 of the exact response bytes, as two 128-bit limbs.
pub fn response_limbs(result_bytes: &[u8]) -> (Fp, Fp) {
    limbs128(&Sha256::digest(result_bytes).into())
}

/// `cap_id` of a capability name.
pub fn capability_id(capability: &str) -> Result<Fp, Error> {
    digest("lango/cap-id/v2", |m| lp(m, capability)).map(|d| fe248(&d))
}

/// The capability (and balance) proof's binding: the verifier's nonce and both DIDs.
pub fn verifier_binding(
    nonce: &[u8; 32],
    verifier_did: &str,
    prover_did: &str,
) -> Result<Fp, Error> {
    digest("lango/zk/cap/v2", |m| {
        m.extend_from_slice(nonce);
        lp(m, verifier_did)?;
        lp(m, prover_did)
    })
    .map(|d| fe248(&d))
}

/// Native Poseidon (`P128Pow5T3`, `ConstantLength<L>`): the same function the circuits
/// compute in-circuit.
pub fn poseidon<const L: usize>(message: [Fp; L]) -> Fp {
    poseidon::Hash::<Fp, P128Pow5T3, ConstantLength<L>, 3, 2>::init().hash(message)
}

#[cfg(test)]
mod tests {
    use super::*;
    use ff::Field;

    #[test]
    fn domain_tags_are_the_ascii_read_big_endian() {
        assert_eq!(dom_id(), Fp::from(0x4c475a4b2d494431));
        assert_ne!(dom_id(), dom_cap());
        assert_ne!(dom_cap(), dom_bal());
    }

    #[test]
    fn fe248_takes_31_bytes_and_limbs_split_in_halves() {
        let mut d = [0u8; 32];
        d[0] = 1;
        d[31] = 0xff; // dropped by fe248
        assert_eq!(fe248(&d), Fp::from(1));
        d[16] = 2;
        let (lo, hi) = limbs128(&d);
        assert_eq!(lo, Fp::from(1));
        assert_eq!(hi, Fp::from(2) + Fp::from(0xff) * Fp::from(2).pow([120]));
    }

    #[test]
    fn field_encoding_round_trips_and_refuses_non_canonical_values() {
        let x = Fp::from(123_456_789);
        assert_eq!(fe_from_bytes(&fe_to_bytes(&x)).unwrap(), x);
        assert_eq!(
            fe_from_bytes(&fe_to_bytes(&-Fp::one())).unwrap(),
            -Fp::one()
        );
        // p itself and 2^256 − 1 are not canonical.
        let p_repr = (-Fp::one()).to_repr();
        let mut p = p_repr;
        p[0] += 1;
        assert!(matches!(fe_from_bytes(&p), Err(Error::Encoding(_))));
        assert!(fe_from_bytes(&[0xff; 32]).is_err());
        assert!(fe_from_bytes(&[0; 31]).is_err());
        assert!(fes_from_bytes(&[0; 65], 8).is_err());
        assert!(fes_from_bytes(&[0; 96], 2).is_err());
        assert_eq!(
            fes_from_bytes(&fes_to_bytes(&[x, x]), 2).unwrap(),
            vec![x, x]
        );
    }

    #[test]
    fn bindings_separate_every_field() {
        let n = [7u8; 32];
        let a = ownership_binding(&n, "did:a", "did:b", "/p").unwrap();
        assert_ne!(a, ownership_binding(&n, "did:b", "did:a", "/p").unwrap());
        assert_ne!(
            a,
            ownership_binding(&[8u8; 32], "did:a", "did:b", "/p").unwrap()
        );
        // Length prefixes: moving a byte from one field to the next changes the digest.
        assert_ne!(
            ownership_binding(&n, "did:ab", "c", "/p").unwrap(),
            ownership_binding(&n, "did:a", "bc", "/p").unwrap()
        );
        let long = "x".repeat(70_000);
        assert!(ownership_binding(&n, &long, "b", "/p").is_err());
        let r = AttestedRequest {
            request_id: "r1",
            requester_did: "did:a",
            responder_did: "did:b",
            request_type: "tool_invoke",
            tool_name: "echo",
            nonce: None,
        };
        let base = attestation_binding(&r).unwrap();
        let zero = [0u8; 32];
        // An explicit all-zero nonce is the documented encoding of "no nonce".
        assert_eq!(
            base,
            attestation_binding(&AttestedRequest {
                nonce: Some(&zero),
                ..r.clone()
            })
            .unwrap()
        );
        assert_ne!(
            base,
            attestation_binding(&AttestedRequest {
                nonce: Some(&n),
                ..r.clone()
            })
            .unwrap()
        );
        assert_ne!(
            base,
            attestation_binding(&AttestedRequest {
                tool_name: "echo2",
                ..r.clone()
            })
            .unwrap()
        );
        assert_ne!(
            base,
            attestation_binding(&AttestedRequest {
                request_id: "r2",
                ..r
            })
            .unwrap()
        );
        assert_ne!(
            verifier_binding(&n, "did:v", "did:p").unwrap(),
            verifier_binding(&n, "did:p", "did:v").unwrap()
        );
    }

    #[test]
    fn native_poseidon_separates_arities() {
        let one = Fp::one();
        assert_ne!(poseidon([one, one]), poseidon([one, one, Fp::zero()]));
        assert_eq!(poseidon([one, Fp::zero()]), poseidon([one, Fp::zero()]));
    }
}
