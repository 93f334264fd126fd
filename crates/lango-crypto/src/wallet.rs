//! The secp256k1 wallet key, Keccak-256, recoverable signatures and `did:lango:` identifiers.
//!
//! Signatures are produced exactly as go-ethereum's `crypto.Sign` over `Keccak-256(message)`:
//! RFC 6979 deterministic nonces, low-S, 65 bytes `r (32) ‖ s (32) ‖ v (1)` with `v ∈ {0, 1}`
//! (never 27/28) and no EIP-191 prefix.
//!
//! Domain separation (rule C-5): this module deliberately offers no signer that takes a raw
//! 32-byte digest. Anything signed goes through [`WalletKey::sign_message`], which hashes once.
//!
//! Verification ([`recover`], [`verify_message`]) rejects a length other than 65, `v ∉ {0, 1}`,
//! `r` or `s` equal to zero or not below the group order, and — under [`LowS::Require`] —
//! high-S signatures (the malleated twin of a valid signature).

use std::fmt;

use k256::{
    ecdsa::{RecoveryId, Signature as KSignature, SigningKey, VerifyingKey},
    elliptic_curve::scalar::IsHigh,
};
use sha3::{Digest, Keccak256};
use zeroize::Zeroize;

use crate::{Error, Result, SecretKey32, mac};

/// Keccak-256 (the original Keccak padding used by Ethereum, not SHA3-256).
pub fn keccak256(data: &[u8]) -> [u8; 32] {
    let mut h = Keccak256::new();
    h.update(data);
    h.finalize().into()
}

/// Whether a verifier accepts high-S signatures.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LowS {
    /// Reject `s > n/2` (1.2 handshake, and lango's default).
    Require,
    /// Accept either form (interop with verifiers that never normalised).
    Allow,
}

/// A 65-byte recoverable signature `r ‖ s ‖ v`.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct RecoverableSignature(pub [u8; 65]);

impl RecoverableSignature {
    /// Copies 65 bytes; any other length is an error.
    pub fn from_slice(b: &[u8]) -> Result<Self> {
        let arr: [u8; 65] = b.try_into().map_err(|_| {
            Error::InvalidSignature(format!("signature must be 65 bytes, got {}", b.len()))
        })?;
        Ok(Self(arr))
    }

    /// The recovery id byte.
    pub fn v(&self) -> u8 {
        self.0[64]
    }

    /// The bytes.
    pub fn to_bytes(&self) -> [u8; 65] {
        self.0
    }
}

impl fmt::Debug for RecoverableSignature {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RecoverableSignature({})", hex::encode(self.0))
    }
}

/// A secp256k1 public key, always handled in its 33-byte compressed form.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct PublicKey(VerifyingKey);

impl PublicKey {
    /// Parses a SEC1 compressed key (33 bytes, prefix 0x02/0x03). Uncompressed keys are
    /// refused: lango only ever exchanges compressed keys.
    pub fn from_compressed(bytes: &[u8]) -> Result<Self> {
        if bytes.len() != 33 || !(bytes[0] == 0x02 || bytes[0] == 0x03) {
            return Err(Error::InvalidKey(format!(
                "expected a 33-byte compressed secp256k1 key, got {} bytes",
                bytes.len()
            )));
        }
        Self::from_sec1(bytes)
    }

    /// Parses any SEC1 encoding (compressed or uncompressed), for keys from other systems.
    pub fn from_sec1(bytes: &[u8]) -> Result<Self> {
        VerifyingKey::from_sec1_bytes(bytes)
            .map(Self)
            .map_err(|_| Error::InvalidKey("not a valid secp256k1 point".into()))
    }

    /// The 33-byte SEC1 compressed encoding.
    pub fn to_compressed(&self) -> [u8; 33] {
        let p = self.0.to_sec1_point(true);
        let mut out = [0u8; 33];
        out.copy_from_slice(p.as_bytes());
        out
    }

    /// The 65-byte uncompressed encoding `0x04 ‖ x ‖ y`.
    pub fn to_uncompressed(&self) -> [u8; 65] {
        let p = self.0.to_sec1_point(false);
        let mut out = [0u8; 65];
        out.copy_from_slice(p.as_bytes());
        out
    }

    /// The EIP-55 checksummed Ethereum address `0x…`.
    pub fn eth_address(&self) -> String {
        let unc = self.to_uncompressed();
        let h = keccak256(&unc[1..]);
        let addr = hex::encode(&h[12..]);
        let check = keccak256(addr.as_bytes());
        let mut out = String::with_capacity(42);
        out.push_str("0x");
        for (i, c) in addr.chars().enumerate() {
            let nibble = (check[i / 2] >> (if i % 2 == 0 { 4 } else { 0 })) & 0x0f;
            if c.is_ascii_alphabetic() && nibble >= 8 {
                out.push(c.to_ascii_uppercase());
            } else {
                out.push(c);
            }
        }
        out
    }

    /// Verifies a plain ECDSA signature over a prehashed message (the digest is truncated or
    /// padded to 256 bits as ECDSA specifies). Used for signatures from other systems (KMS,
    /// HSM); lango's own wallet signatures are checked with [`verify_message`].
    pub fn verify_prehash(&self, prehash: &[u8], sig: &EcdsaSignature, low_s: LowS) -> Result<()> {
        use k256::ecdsa::signature::hazmat::PrehashVerifier;
        let s = sig.0;
        let high = bool::from(s.s().is_high());
        if high && low_s == LowS::Require {
            return Err(Error::InvalidSignature("high-S signature".into()));
        }
        let normalised = s.normalize_s();
        self.0
            .verify_prehash(prehash, &normalised)
            .map_err(|_| Error::InvalidSignature("signature does not verify".into()))
    }
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PublicKey({})", hex::encode(self.to_compressed()))
    }
}

/// A plain (non-recoverable) ECDSA secp256k1 signature `(r, s)`.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct EcdsaSignature(KSignature);

impl EcdsaSignature {
    /// Parses strict ASN.1 DER (non-minimal encodings are rejected).
    pub fn from_der(der: &[u8]) -> Result<Self> {
        KSignature::from_der(der)
            .map(Self)
            .map_err(|_| Error::InvalidSignature("malformed DER signature".into()))
    }

    /// Parses raw `r ‖ s` (64 bytes, IEEE P1363).
    pub fn from_raw(rs: &[u8]) -> Result<Self> {
        KSignature::from_slice(rs)
            .map(Self)
            .map_err(|_| Error::InvalidSignature("malformed r‖s signature".into()))
    }

    /// Whether `s > n/2`.
    pub fn is_high_s(&self) -> bool {
        self.0.s().is_high().into()
    }

    /// The low-S form.
    pub fn normalize_s(&self) -> Self {
        Self(self.0.normalize_s())
    }

    /// Raw `r ‖ s`.
    pub fn to_raw(&self) -> [u8; 64] {
        let mut out = [0u8; 64];
        out.copy_from_slice(&self.0.to_bytes());
        out
    }
}

/// The wallet's secp256k1 private key. Wiped on drop; `Debug` shows only the public key.
pub struct WalletKey(SigningKey);

impl WalletKey {
    /// A fresh key from the operating system's CSPRNG.
    pub fn generate() -> Result<Self> {
        loop {
            let mut b = crate::random::bytes::<32>()?;
            let k = SigningKey::from_slice(&b);
            b.zeroize();
            if let Ok(k) = k {
                return Ok(Self(k));
            }
        }
    }

    /// Parses the stored form: the 32-byte big-endian scalar, in `[1, n-1]`.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self> {
        if bytes.len() != 32 {
            return Err(Error::InvalidKey(format!(
                "wallet key must be 32 bytes, got {}",
                bytes.len()
            )));
        }
        SigningKey::from_slice(bytes)
            .map(Self)
            .map_err(|_| Error::InvalidKey("wallet key is not a valid secp256k1 scalar".into()))
    }

    /// The stored form: the 32-byte big-endian scalar.
    pub fn to_bytes(&self) -> SecretKey32 {
        let mut b: [u8; 32] = self.0.to_bytes().into();
        let k = SecretKey32::from_bytes(b);
        b.zeroize();
        k
    }

    /// The public key.
    pub fn public_key(&self) -> PublicKey {
        PublicKey(*self.0.verifying_key())
    }

    /// The `did:lango:` identifier of this key.
    pub fn did(&self) -> Did {
        Did::from_public_key(&self.public_key())
    }

    /// Signs `Keccak-256(message)`: RFC 6979, low-S, `v ∈ {0,1}` (go-ethereum `crypto.Sign`).
    pub fn sign_message(&self, message: &[u8]) -> Result<RecoverableSignature> {
        let digest = keccak256(message);
        let (sig, recid) = self.0.sign_prehash_recoverable(&digest);
        // k256 normalises to low-S and adjusts the recovery id accordingly.
        let v = recid.to_byte();
        if v > 1 {
            // x-coordinate overflowed the group order (probability ~2^-127): not representable
            // as an Ethereum signature.
            return Err(Error::InvalidSignature(
                "signature needs recovery id > 1; not representable".into(),
            ));
        }
        let mut out = [0u8; 65];
        out[..64].copy_from_slice(&sig.to_bytes());
        out[64] = v;
        Ok(RecoverableSignature(out))
    }
}

impl fmt::Debug for WalletKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "WalletKey {{ public: {:?}, secret: [redacted] }}",
            self.public_key()
        )
    }
}

/// Recovers the signer's public key from a 65-byte signature over `digest`.
pub fn recover(digest: &[u8; 32], sig: &[u8], low_s: LowS) -> Result<PublicKey> {
    let sig = RecoverableSignature::from_slice(sig)?;
    let v = sig.v();
    if v > 1 {
        return Err(Error::InvalidSignature(format!(
            "recovery id must be 0 or 1, got {v}"
        )));
    }
    let ksig = KSignature::from_slice(&sig.0[..64]).map_err(|_| {
        Error::InvalidSignature("r or s is zero or not below the group order".into())
    })?;
    if bool::from(ksig.s().is_high()) && low_s == LowS::Require {
        return Err(Error::InvalidSignature("high-S signature".into()));
    }
    let recid = RecoveryId::from_byte(v)
        .ok_or_else(|| Error::InvalidSignature("bad recovery id".into()))?;
    VerifyingKey::recover_from_prehash(digest, &ksig, recid)
        .map(PublicKey)
        .map_err(|_| Error::InvalidSignature("no public key recovers from this signature".into()))
}

/// Verifies a 65-byte signature over `Keccak-256(message)` against `expected`, comparing the
/// recovered compressed key in constant time.
pub fn verify_message(expected: &PublicKey, message: &[u8], sig: &[u8], low_s: LowS) -> Result<()> {
    let got = recover(&keccak256(message), sig, low_s)?;
    if mac::ct_eq(&got.to_compressed(), &expected.to_compressed()) {
        Ok(())
    } else {
        Err(Error::InvalidSignature("public key mismatch".into()))
    }
}

/// The `did:lango:` prefix.
pub const DID_PREFIX: &str = "did:lango:";

/// A canonical `did:lango:<66 lowercase hex>` identifier of a compressed wallet key.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Did(String);

impl Did {
    /// The DID of a public key.
    pub fn from_public_key(pk: &PublicKey) -> Self {
        Self(format!("{DID_PREFIX}{}", hex::encode(pk.to_compressed())))
    }

    /// Parses a DID strictly: the prefix, 66 lowercase hex characters, a valid compressed key.
    /// Uppercase hex and uncompressed keys are rejected so that one key has one DID.
    pub fn parse(s: &str) -> Result<Self> {
        let Some(key) = s.strip_prefix(DID_PREFIX) else {
            return Err(Error::InvalidDid(format!(
                "invalid DID scheme: expected prefix \"{DID_PREFIX}\", got {:?}",
                s.chars().take(16).collect::<String>()
            )));
        };
        if key.is_empty() {
            return Err(Error::InvalidDid(format!("empty public key in DID {s:?}")));
        }
        if key.starts_with("v2:") {
            return Err(Error::InvalidDid(
                "did:lango:v2 identifiers are not supported".into(),
            ));
        }
        if key.len() != 66 {
            return Err(Error::InvalidDid(format!(
                "public key part must be 66 hex characters, got {}",
                key.len()
            )));
        }
        if key
            .bytes()
            .any(|c| !(c.is_ascii_digit() || (b'a'..=b'f').contains(&c)))
        {
            return Err(Error::InvalidDid(
                "public key part must be lowercase hex".into(),
            ));
        }
        let mut raw = [0u8; 33];
        hex::decode_to_slice(key, &mut raw)
            .map_err(|_| Error::InvalidDid("public key part is not hex".into()))?;
        PublicKey::from_compressed(&raw).map_err(|_| {
            Error::InvalidDid("public key part is not a valid secp256k1 key".into())
        })?;
        Ok(Self(s.to_owned()))
    }

    /// The DID string.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The wallet public key named by this DID.
    pub fn public_key(&self) -> Result<PublicKey> {
        let mut raw = [0u8; 33];
        hex::decode_to_slice(&self.0[DID_PREFIX.len()..], &mut raw)
            .map_err(|_| Error::InvalidDid("public key part is not hex".into()))?;
        PublicKey::from_compressed(&raw)
    }

    /// The wallet-derived libp2p peer ID (`16Uiu2HA…`): identity multihash of the protobuf
    /// `PublicKey{Type=Secp256k1, Data=<33 bytes>}`. This is **not** the node's network peer
    /// ID and must never be used to dial.
    pub fn wallet_peer_id(&self) -> Result<String> {
        let pk = self.public_key()?.to_compressed();
        let mut b = Vec::with_capacity(39);
        b.extend_from_slice(&[0x00, 0x25, 0x08, 0x02, 0x12, 0x21]);
        b.extend_from_slice(&pk);
        Ok(bs58::encode(b).into_string())
    }
}

impl fmt::Display for Did {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for Did {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Did({})", self.0)
    }
}

impl std::str::FromStr for Did {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        Self::parse(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(n: u8) -> WalletKey {
        let mut b = [0u8; 32];
        b[31] = n;
        WalletKey::from_bytes(&b).unwrap()
    }

    #[test]
    fn keccak_known_answers() {
        assert_eq!(
            hex::encode(keccak256(b"")),
            "c5d2460186f7233c927e7db2dcc703c0e500b653ca82273b7bfad8045d85a470"
        );
        assert_eq!(
            hex::encode(keccak256(b"abc")),
            "4e03657aea45a94fc7d47ba826c8d667c0d1e6e33a64a036ec44f58fa12d6c45"
        );
    }

    #[test]
    fn eth_address_of_key_one() {
        assert_eq!(
            key(1).public_key().eth_address(),
            "0x7E5F4552091A69125d5DfCb7b8C2659029395Bdf"
        );
    }

    #[test]
    fn wallet_key_rejects_bad_scalars() {
        assert!(WalletKey::from_bytes(&[0u8; 32]).is_err());
        assert!(WalletKey::from_bytes(&[0xffu8; 32]).is_err());
        assert!(WalletKey::from_bytes(&[1u8; 31]).is_err());
    }

    #[test]
    fn debug_hides_the_scalar() {
        let k = key(1);
        let s = format!("{k:?}");
        assert!(s.contains("[redacted]"));
        assert!(!s.contains(&hex::encode(k.to_bytes().expose())));
    }

    #[test]
    fn did_parse_rules() {
        let d = key(1).did();
        assert_eq!(
            d.as_str(),
            "did:lango:0279be667ef9dcbbac55a06295ce870b07029bfcdb2dce28d959f2815b16f81798"
        );
        assert_eq!(Did::parse(d.as_str()).unwrap(), d);
        assert!(Did::parse("did:other:02").is_err());
        assert!(Did::parse("did:lango:").is_err());
        assert!(
            Did::parse(
                &d.as_str()
                    .to_uppercase()
                    .replace("DID:LANGO:", "did:lango:")
            )
            .is_err()
        );
        assert!(Did::parse("did:lango:v2:abcd").is_err());
        // Uncompressed key in a DID is refused.
        let unc = hex::encode(key(1).public_key().to_uncompressed());
        assert!(Did::parse(&format!("did:lango:{unc}")).is_err());
        // Not on the curve.
        assert!(Did::parse(&format!("did:lango:02{}", "00".repeat(32))).is_err());
    }
}
