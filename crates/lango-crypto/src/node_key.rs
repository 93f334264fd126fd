//! Ed25519 node keys: the libp2p identity of a node.
//!
//! Stored form (secrets store and the legacy `node.key` file): the libp2p protobuf
//! `PrivateKey { Type = Ed25519 (1), Data = seed(32) ‖ public(32) }`, which is exactly
//! `08 01 12 40 ‖ seed ‖ public` (68 bytes). The older 96-byte data form (`12 60`, the public
//! key repeated at the end) is accepted after checking the redundancy; only the 64-byte form is
//! written.
//!
//! The network peer ID is the identity multihash of `PublicKey { Type = Ed25519, Data = pub }`
//! (`00 24 08 01 12 20 ‖ pub`), base58btc — it starts with `12D3KooW`.

use std::fmt;

use ed25519_dalek::{Signer, SigningKey, VerifyingKey};
use zeroize::Zeroize;

use crate::{Error, Result, SecretBytes, SecretKey32, mac};

/// Length of the stored protobuf encoding.
pub const PROTOBUF_LEN: usize = 68;
const PREFIX_64: [u8; 4] = [0x08, 0x01, 0x12, 0x40];
const PREFIX_96: [u8; 4] = [0x08, 0x01, 0x12, 0x60];

/// An Ed25519 node key. Wiped on drop; `Debug` shows only the public key.
pub struct NodeKey(SigningKey);

impl NodeKey {
    /// A fresh key from the operating system's CSPRNG.
    pub fn generate() -> Result<Self> {
        let mut seed = crate::random::bytes::<32>()?;
        let k = SigningKey::from_bytes(&seed);
        seed.zeroize();
        Ok(Self(k))
    }

    /// A key from its 32-byte seed.
    pub fn from_seed(seed: &SecretKey32) -> Self {
        Self(SigningKey::from_bytes(seed.expose()))
    }

    /// Parses the libp2p protobuf encoding (68 bytes, or the legacy 100-byte form). The public
    /// half must match the seed.
    pub fn from_protobuf(bytes: &[u8]) -> Result<Self> {
        let (seed, public) = match bytes.len() {
            68 if bytes[..4] == PREFIX_64 => (&bytes[4..36], &bytes[36..68]),
            100 if bytes[..4] == PREFIX_96 => {
                if !mac::ct_eq(&bytes[36..68], &bytes[68..100]) {
                    return Err(Error::InvalidKey(
                        "96-byte node key: trailing public key does not repeat the public key"
                            .into(),
                    ));
                }
                (&bytes[4..36], &bytes[36..68])
            }
            n => {
                return Err(Error::InvalidKey(format!(
                    "node key is not a libp2p Ed25519 private key ({n} bytes)"
                )));
            }
        };
        let seed = SecretKey32::from_slice(seed)?;
        let key = Self::from_seed(&seed);
        if !mac::ct_eq(&key.public_key(), public) {
            return Err(Error::InvalidKey(
                "node key: public key does not match the private key".into(),
            ));
        }
        Ok(key)
    }

    /// The 68-byte libp2p protobuf encoding, in a wiped-on-drop buffer.
    pub fn to_protobuf(&self) -> SecretBytes {
        let mut out = SecretBytes::new(Vec::with_capacity(PROTOBUF_LEN));
        let buf = out.expose_mut();
        buf.extend_from_slice(&PREFIX_64);
        let mut seed = self.0.to_bytes();
        buf.extend_from_slice(&seed);
        seed.zeroize();
        buf.extend_from_slice(&self.public_key());
        out
    }

    /// The 32-byte seed (to hand to libp2p's keypair constructor).
    pub fn seed(&self) -> SecretKey32 {
        let mut seed = self.0.to_bytes();
        let k = SecretKey32::from_bytes(seed);
        seed.zeroize();
        k
    }

    /// The 32-byte public key.
    pub fn public_key(&self) -> [u8; 32] {
        self.0.verifying_key().to_bytes()
    }

    /// The network peer ID, base58btc.
    pub fn peer_id(&self) -> String {
        peer_id_of(&self.public_key())
    }

    /// Signs `msg` (pure Ed25519).
    pub fn sign(&self, msg: &[u8]) -> [u8; 64] {
        self.0.sign(msg).to_bytes()
    }
}

impl fmt::Debug for NodeKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "NodeKey {{ peer_id: {}, secret: [redacted] }}",
            self.peer_id()
        )
    }
}

/// The libp2p peer ID of an Ed25519 public key.
pub fn peer_id_of(public: &[u8; 32]) -> String {
    let mut b = Vec::with_capacity(38);
    b.extend_from_slice(&[0x00, 0x24, 0x08, 0x01, 0x12, 0x20]);
    b.extend_from_slice(public);
    bs58::encode(b).into_string()
}

/// Verifies an Ed25519 signature strictly (canonical `S`, no small-order keys).
pub fn verify(public: &[u8], msg: &[u8], sig: &[u8]) -> Result<()> {
    let public: [u8; 32] = public.try_into().map_err(|_| {
        Error::InvalidKey(format!(
            "Ed25519 public key must be 32 bytes, got {}",
            public.len()
        ))
    })?;
    let vk = VerifyingKey::from_bytes(&public)
        .map_err(|_| Error::InvalidKey("not a valid Ed25519 public key".into()))?;
    let sig: [u8; 64] = sig.try_into().map_err(|_| {
        Error::InvalidSignature(format!(
            "Ed25519 signature must be 64 bytes, got {}",
            sig.len()
        ))
    })?;
    let sig = ed25519_dalek::Signature::from_bytes(&sig);
    vk.verify_strict(msg, &sig)
        .map_err(|_| Error::InvalidSignature("Ed25519 signature does not verify".into()))
}
