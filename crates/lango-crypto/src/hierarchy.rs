//! The key hierarchy: one random master key (MK), per-purpose keys derived from it, and the
//! wrapping of the MK under slot keys.
//!
//! ```text
//! passphrase ──Argon2id──► KEK_pass ─┐
//! keyring secret ──HKDF──► KEK_kr  ──┼─ AES-256-GCM unwrap ─► MK (32 random bytes)
//! MK ──HKDF-SHA256(salt = "", info = "lango/v1/" + purpose)──► secrets | config-profiles |
//!        tool-encrypt | tool-sign | sqlcipher | mk-id
//! ```
//!
//! The MK itself never encrypts anything, and no two purposes share a key. The MK identifier
//! (`mk_id`, the first 16 bytes of the `mk-id` output) is public: it names the vault in the
//! envelope file, in the database and in keyring account names.

use std::fmt;

use crate::{Error, Result, SecretKey32, aead, kdf};

/// The purposes a key is derived for. Each gets its own HKDF `info`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum KeyPurpose {
    /// AEAD key for secret rows.
    Secrets,
    /// AEAD key for legacy configuration profile rows.
    ConfigProfiles,
    /// AEAD key for the agent-facing encrypt/decrypt tool.
    ToolEncrypt,
    /// HMAC-SHA256 key for the agent-facing sign tool.
    ToolSign,
    /// Raw 256-bit SQLCipher database key.
    Sqlcipher,
}

impl KeyPurpose {
    /// The HKDF `info` string.
    pub const fn info(self) -> &'static str {
        match self {
            Self::Secrets => "lango/v1/secrets",
            Self::ConfigProfiles => "lango/v1/config-profiles",
            Self::ToolEncrypt => "lango/v1/tool-encrypt",
            Self::ToolSign => "lango/v1/tool-sign",
            Self::Sqlcipher => "lango/v1/sqlcipher",
        }
    }

    /// The AEAD purpose a derived key is used for, where it is an AEAD key.
    pub const fn for_blob(purpose: aead::BlobPurpose) -> Self {
        match purpose {
            aead::BlobPurpose::Secrets => Self::Secrets,
            aead::BlobPurpose::ConfigProfiles => Self::ConfigProfiles,
            aead::BlobPurpose::ToolEncrypt => Self::ToolEncrypt,
        }
    }
}

const MK_ID_INFO: &[u8] = b"lango/v1/mk-id";
/// AAD prefix of a wrapped master key; followed by `0x00` and the slot id.
pub const MK_WRAP_AAD_PREFIX: &[u8] = b"lango/v1/mk-wrap";
/// Length of a wrapped master key (ciphertext ‖ tag, without the nonce).
pub const WRAPPED_MK_LEN: usize = 48;

/// The public 16-byte identifier of a master key. Shown as lowercase hex.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct MkId(pub [u8; 16]);

impl MkId {
    /// Lowercase hex.
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }

    /// Parses 32 lowercase hex characters.
    pub fn from_hex(s: &str) -> Result<Self> {
        if s.len() != 32 || s.bytes().any(|c| c.is_ascii_uppercase()) {
            return Err(Error::UnsupportedFormat(format!(
                "mk_id must be 32 lowercase hex characters, got {} characters",
                s.len()
            )));
        }
        let mut out = [0u8; 16];
        hex::decode_to_slice(s, &mut out)
            .map_err(|_| Error::UnsupportedFormat("mk_id is not hex".into()))?;
        Ok(Self(out))
    }
}

impl fmt::Display for MkId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl fmt::Debug for MkId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "MkId({})", self.to_hex())
    }
}

/// The master key. Wiped on drop, never printed, never `Clone`.
#[derive(Debug, PartialEq, Eq)]
pub struct MasterKey(SecretKey32);

impl MasterKey {
    /// A fresh random master key.
    pub fn generate() -> Result<Self> {
        Ok(Self(SecretKey32::generate()?))
    }

    /// An explicit copy (there is deliberately no `Clone`), e.g. to hand to a worker thread.
    pub fn duplicate(&self) -> Self {
        Self(self.0.duplicate())
    }

    /// Wraps existing key bytes (unwrapping, tests).
    pub fn from_key(k: SecretKey32) -> Self {
        Self(k)
    }

    /// Derives the key for `purpose`: HKDF-SHA256(IKM = MK, salt = empty,
    /// info = `lango/v1/<purpose>`, L = 32).
    pub fn derive(&self, purpose: KeyPurpose) -> SecretKey32 {
        self.hkdf(purpose.info().as_bytes())
    }

    /// The public identifier of this key.
    pub fn mk_id(&self) -> MkId {
        let full = self.hkdf(MK_ID_INFO);
        let mut id = [0u8; 16];
        id.copy_from_slice(&full.expose()[..16]);
        MkId(id)
    }

    fn hkdf(&self, info: &[u8]) -> SecretKey32 {
        kdf::hkdf_sha256_32(self.0.expose(), &[], info)
    }

    /// Wraps the MK under a slot key with a fresh nonce. Returns `(nonce, wrapped_mk)`.
    pub fn wrap_for_slot(&self, kek: &SecretKey32, slot_id: &str) -> Result<([u8; 12], Vec<u8>)> {
        let nonce = crate::random::bytes::<12>()?;
        let wrapped = self.wrap_with_nonce(kek, slot_id, nonce)?;
        Ok((nonce, wrapped))
    }

    fn wrap_with_nonce(
        &self,
        kek: &SecretKey32,
        slot_id: &str,
        nonce: [u8; 12],
    ) -> Result<Vec<u8>> {
        let mut sealed = Vec::with_capacity(12 + WRAPPED_MK_LEN);
        aead::seal_raw(kek, nonce, &wrap_aad(slot_id), self.0.expose(), &mut sealed)?;
        Ok(sealed.split_off(12))
    }

    /// Unwraps an MK wrapped for `slot_id`. A wrong key or a tampered slot is
    /// [`Error::Integrity`].
    pub fn unwrap_slot(
        kek: &SecretKey32,
        slot_id: &str,
        nonce: &[u8],
        wrapped: &[u8],
    ) -> Result<Self> {
        if nonce.len() != 12 {
            return Err(Error::UnsupportedFormat(format!(
                "slot nonce must be 12 bytes, got {}",
                nonce.len()
            )));
        }
        if wrapped.len() != WRAPPED_MK_LEN {
            return Err(Error::UnsupportedFormat(format!(
                "wrapped master key must be {WRAPPED_MK_LEN} bytes, got {}",
                wrapped.len()
            )));
        }
        let mut sealed = Vec::with_capacity(12 + WRAPPED_MK_LEN);
        sealed.extend_from_slice(nonce);
        sealed.extend_from_slice(wrapped);
        let mk = aead::open(kek, &wrap_aad(slot_id), &sealed)?;
        Ok(Self(SecretKey32::from_slice(mk.expose())?))
    }
}

/// The AAD of a wrapped master key: `lango/v1/mk-wrap ‖ 0x00 ‖ slot id`.
pub fn wrap_aad(slot_id: &str) -> Vec<u8> {
    let mut aad = Vec::with_capacity(MK_WRAP_AAD_PREFIX.len() + 1 + slot_id.len());
    aad.extend_from_slice(MK_WRAP_AAD_PREFIX);
    aad.push(0);
    aad.extend_from_slice(slot_id.as_bytes());
    aad
}

/// Fixed-nonce wrapping for the known-answer test of the spec.
#[cfg(feature = "test-vectors")]
pub fn wrap_with_nonce_for_tests(
    mk: &MasterKey,
    kek: &SecretKey32,
    slot_id: &str,
    nonce: [u8; 12],
) -> Result<Vec<u8>> {
    mk.wrap_with_nonce(kek, slot_id, nonce)
}
