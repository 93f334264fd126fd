//! AES-256-GCM and the two ciphertext layouts lango stores.
//!
//! ## Raw layout (used by both formats)
//!
//! `nonce (12 random bytes) ‖ ciphertext ‖ tag (16)` — 28 bytes of overhead.
//!
//! ## Legacy blob (written by the Go node)
//!
//! The raw layout with no associated data, no version and no key identifier. It is read only
//! by the legacy migration; [`open_v1`] never accepts it.
//!
//! ## v1 blob (everything lango-rs writes)
//!
//! ```text
//! offset  size  field
//! 0       3     magic "LGO"
//! 3       1     format version 0x01
//! 4       1     provider tag (ProviderTag)
//! 5       4     key generation, u32 big-endian
//! 9       ...   provider payload; local: nonce(12) ‖ ciphertext ‖ tag(16)
//! ```
//!
//! Associated data = the 9 header bytes ‖ ASCII purpose ‖ `0x00` ‖ context (for secret rows,
//! the secret's name). Changing any header byte, moving the blob to another row, or opening it
//! for another purpose fails with [`Error::Integrity`].

use ring::aead::{AES_256_GCM, Aad, LessSafeKey, Nonce, UnboundKey};

use crate::{Error, Result, SecretBytes, SecretKey32, random};

/// Nonce length of AES-256-GCM.
pub const NONCE_LEN: usize = 12;
/// Tag length of AES-256-GCM.
pub const TAG_LEN: usize = 16;
/// Magic bytes of a v1 blob.
pub const V1_MAGIC: [u8; 3] = *b"LGO";
/// Version byte of a v1 blob.
pub const V1_VERSION: u8 = 0x01;
/// Length of the v1 header.
pub const V1_HEADER_LEN: usize = 9;
/// Shortest well-formed local v1 blob (empty plaintext).
pub const V1_MIN_LOCAL_LEN: usize = V1_HEADER_LEN + NONCE_LEN + TAG_LEN;
/// Bound on `config-profiles` and `tool-encrypt` blobs.
pub const LARGE_BLOB_MAX: usize = 1024 * 1024;

/// Who produced a v1 blob's payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum ProviderTag {
    /// AES-256-GCM under a key derived from the local master key.
    LocalMk = 0x01,
    /// AWS KMS.
    AwsKms = 0x02,
    /// GCP Cloud KMS.
    GcpKms = 0x03,
    /// Azure Key Vault.
    AzureKv = 0x04,
    /// PKCS#11 token.
    Pkcs11 = 0x05,
    /// Companion app over RPC.
    RpcCompanion = 0x06,
}

impl ProviderTag {
    /// Parses a tag byte; unassigned values are errors.
    pub fn from_byte(b: u8) -> Result<Self> {
        Ok(match b {
            0x01 => Self::LocalMk,
            0x02 => Self::AwsKms,
            0x03 => Self::GcpKms,
            0x04 => Self::AzureKv,
            0x05 => Self::Pkcs11,
            0x06 => Self::RpcCompanion,
            other => return Err(Error::UnknownProvider(other)),
        })
    }
}

/// What a v1 blob protects. The purpose is part of the associated data, so a blob made for
/// one purpose never opens for another.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BlobPurpose {
    /// A row of the secrets table; context = the secret's name.
    Secrets,
    /// A legacy configuration profile row; context = the profile name.
    ConfigProfiles,
    /// Output of the agent-facing encrypt tool; context supplied by the caller.
    ToolEncrypt,
}

impl BlobPurpose {
    /// The ASCII label used in the associated data.
    pub const fn label(self) -> &'static str {
        match self {
            Self::Secrets => "secrets",
            Self::ConfigProfiles => "config-profiles",
            Self::ToolEncrypt => "tool-encrypt",
        }
    }
}

/// The parsed 9-byte header of a v1 blob.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BlobHeader {
    /// Who produced the payload.
    pub provider: ProviderTag,
    /// Key generation (local: the envelope generation; remote providers: 0).
    pub generation: u32,
}

impl BlobHeader {
    /// The header bytes.
    pub fn encode(&self) -> [u8; V1_HEADER_LEN] {
        let mut h = [0u8; V1_HEADER_LEN];
        h[..3].copy_from_slice(&V1_MAGIC);
        h[3] = V1_VERSION;
        h[4] = self.provider as u8;
        h[5..9].copy_from_slice(&self.generation.to_be_bytes());
        h
    }

    /// Splits a v1 blob into its header and payload, rejecting wrong magic, version and
    /// unknown provider tags.
    pub fn parse(blob: &[u8]) -> Result<(Self, &[u8])> {
        if blob.len() < V1_HEADER_LEN {
            if !blob.is_empty() && !V1_MAGIC.starts_with(&blob[..blob.len().min(3)]) {
                return Err(Error::UnsupportedFormat("not a v1 ciphertext".into()));
            }
            return Err(Error::TooShort {
                len: blob.len(),
                min: V1_HEADER_LEN,
            });
        }
        if blob[..3] != V1_MAGIC {
            return Err(Error::UnsupportedFormat("not a v1 ciphertext".into()));
        }
        if blob[3] != V1_VERSION {
            return Err(Error::UnsupportedFormat(format!(
                "ciphertext format version {} (this build reads version 1)",
                blob[3]
            )));
        }
        let provider = ProviderTag::from_byte(blob[4])?;
        let generation = u32::from_be_bytes([blob[5], blob[6], blob[7], blob[8]]);
        Ok((
            Self {
                provider,
                generation,
            },
            &blob[V1_HEADER_LEN..],
        ))
    }
}

/// The associated data of a v1 blob: header ‖ purpose ‖ 0x00 ‖ context.
pub fn v1_aad(header: &[u8; V1_HEADER_LEN], purpose: BlobPurpose, context: &[u8]) -> Vec<u8> {
    let label = purpose.label().as_bytes();
    let mut aad = Vec::with_capacity(V1_HEADER_LEN + label.len() + 1 + context.len());
    aad.extend_from_slice(header);
    aad.extend_from_slice(label);
    aad.push(0);
    aad.extend_from_slice(context);
    aad
}

fn key(k: &SecretKey32) -> Result<LessSafeKey> {
    let unbound = UnboundKey::new(&AES_256_GCM, k.expose())
        .map_err(|_| Error::InvalidKey("AES-256-GCM key rejected".into()))?;
    Ok(LessSafeKey::new(unbound))
}

pub(crate) fn seal_raw(
    k: &SecretKey32,
    nonce: [u8; NONCE_LEN],
    aad: &[u8],
    plaintext: &[u8],
    out: &mut Vec<u8>,
) -> Result<()> {
    let key = key(k)?;
    let start = out.len();
    out.extend_from_slice(&nonce);
    out.extend_from_slice(plaintext);
    let body_start = start + NONCE_LEN;
    let tag = key
        .seal_in_place_separate_tag(
            Nonce::assume_unique_for_key(nonce),
            Aad::from(aad),
            &mut out[body_start..],
        )
        .map_err(|_| Error::TooLarge {
            len: plaintext.len(),
            max: usize::MAX,
        })?;
    out.extend_from_slice(tag.as_ref());
    Ok(())
}

/// AES-256-GCM with a fresh random nonce: returns `nonce ‖ ciphertext ‖ tag`.
pub fn seal(k: &SecretKey32, aad: &[u8], plaintext: &[u8]) -> Result<Vec<u8>> {
    let nonce = random::bytes::<NONCE_LEN>()?;
    let mut out = Vec::with_capacity(NONCE_LEN + plaintext.len() + TAG_LEN);
    seal_raw(k, nonce, aad, plaintext, &mut out)?;
    Ok(out)
}

/// Opens `nonce ‖ ciphertext ‖ tag`. Any failure is [`Error::Integrity`] (or
/// [`Error::TooShort`] when there is not even room for a nonce and a tag).
pub fn open(k: &SecretKey32, aad: &[u8], sealed: &[u8]) -> Result<SecretBytes> {
    if sealed.len() < NONCE_LEN + TAG_LEN {
        return Err(Error::TooShort {
            len: sealed.len(),
            min: NONCE_LEN + TAG_LEN,
        });
    }
    let key = key(k)?;
    let mut nonce = [0u8; NONCE_LEN];
    nonce.copy_from_slice(&sealed[..NONCE_LEN]);
    let mut buf = SecretBytes::from_slice(&sealed[NONCE_LEN..]);
    let n = key
        .open_in_place(
            Nonce::assume_unique_for_key(nonce),
            Aad::from(aad),
            buf.expose_mut(),
        )
        .map_err(|_| Error::Integrity)?
        .len();
    buf.expose_mut().truncate(n);
    Ok(buf)
}

/// Seals a Go-format legacy blob (no associated data). Only used to produce fixtures that
/// look like Go data and by the one-time migration's tests; lango-rs stores v1 blobs.
pub fn seal_legacy(k: &SecretKey32, plaintext: &[u8]) -> Result<Vec<u8>> {
    seal(k, &[], plaintext)
}

/// Opens a Go-format legacy blob (no associated data). Read only by the legacy migration.
pub fn open_legacy(k: &SecretKey32, blob: &[u8]) -> Result<SecretBytes> {
    open(k, &[], blob)
}

/// Seals a local v1 blob for `purpose` and `context` under key generation `generation`.
pub fn seal_v1(
    k: &SecretKey32,
    provider: ProviderTag,
    generation: u32,
    purpose: BlobPurpose,
    context: &[u8],
    plaintext: &[u8],
) -> Result<Vec<u8>> {
    seal_v1_with_nonce(
        k,
        provider,
        generation,
        purpose,
        context,
        plaintext,
        random::bytes()?,
    )
}

fn seal_v1_with_nonce(
    k: &SecretKey32,
    provider: ProviderTag,
    generation: u32,
    purpose: BlobPurpose,
    context: &[u8],
    plaintext: &[u8],
    nonce: [u8; NONCE_LEN],
) -> Result<Vec<u8>> {
    let header = BlobHeader {
        provider,
        generation,
    }
    .encode();
    let aad = v1_aad(&header, purpose, context);
    let mut out = Vec::with_capacity(V1_MIN_LOCAL_LEN + plaintext.len());
    out.extend_from_slice(&header);
    seal_raw(k, nonce, &aad, plaintext, &mut out)?;
    Ok(out)
}

/// Opens a local v1 blob. `key_for_generation` returns the key for the header's generation,
/// or `None` when it is unknown. Rejects, in this order: a blob longer than `max_len`, wrong
/// magic or version, an unknown provider tag, a non-local provider, an unknown generation, a
/// truncated payload, and any authentication failure.
pub fn open_v1<'k>(
    blob: &[u8],
    purpose: BlobPurpose,
    context: &[u8],
    max_len: usize,
    key_for_generation: impl FnOnce(u32) -> Option<&'k SecretKey32>,
) -> Result<SecretBytes> {
    if blob.len() > max_len {
        return Err(Error::TooLarge {
            len: blob.len(),
            max: max_len,
        });
    }
    let (header, payload) = BlobHeader::parse(blob)?;
    if header.provider != ProviderTag::LocalMk {
        return Err(Error::UnsupportedFormat(format!(
            "ciphertext was written by provider {:?}, not the local master key",
            header.provider
        )));
    }
    let k =
        key_for_generation(header.generation).ok_or(Error::UnknownGeneration(header.generation))?;
    if payload.len() < NONCE_LEN + TAG_LEN {
        return Err(Error::TooShort {
            len: blob.len(),
            min: V1_MIN_LOCAL_LEN,
        });
    }
    let aad = v1_aad(&header.encode(), purpose, context);
    open(k, &aad, payload)
}

/// Fixed-nonce sealing for known-answer tests. Compiled only with the `test-vectors` feature,
/// which no production crate enables.
#[cfg(feature = "test-vectors")]
pub mod testing {
    use super::*;

    /// [`seal`] with a caller-chosen nonce.
    pub fn seal_with_nonce(
        k: &SecretKey32,
        nonce: [u8; NONCE_LEN],
        aad: &[u8],
        plaintext: &[u8],
    ) -> Result<Vec<u8>> {
        let mut out = Vec::new();
        seal_raw(k, nonce, aad, plaintext, &mut out)?;
        Ok(out)
    }

    /// [`seal_v1`] with a caller-chosen nonce.
    pub fn seal_v1_with_nonce(
        k: &SecretKey32,
        provider: ProviderTag,
        generation: u32,
        purpose: BlobPurpose,
        context: &[u8],
        plaintext: &[u8],
        nonce: [u8; NONCE_LEN],
    ) -> Result<Vec<u8>> {
        super::seal_v1_with_nonce(k, provider, generation, purpose, context, plaintext, nonce)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn k() -> SecretKey32 {
        SecretKey32::from_bytes([0x42; 32])
    }

    #[test]
    fn roundtrip_and_tamper() {
        let blob = seal(&k(), b"aad", b"hello").unwrap();
        assert_eq!(blob.len(), 5 + 28);
        assert_eq!(open(&k(), b"aad", &blob).unwrap().expose(), b"hello");
        assert_eq!(open(&k(), b"aaD", &blob), Err(Error::Integrity));
        for i in 0..blob.len() {
            let mut t = blob.clone();
            t[i] ^= 1;
            assert_eq!(open(&k(), b"aad", &t), Err(Error::Integrity), "byte {i}");
        }
    }

    #[test]
    fn header_roundtrip() {
        let h = BlobHeader {
            provider: ProviderTag::LocalMk,
            generation: 1,
        };
        assert_eq!(hex::encode(h.encode()), "4c474f010100000001");
        let enc = h.encode();
        let (p, rest) = BlobHeader::parse(&enc).unwrap();
        assert_eq!(p, h);
        assert!(rest.is_empty());
    }

    /// T-4: every truncation from 0 to 36 bytes fails; 37 bytes with an empty plaintext opens;
    /// a 37-byte prefix of a longer blob fails with Integrity.
    #[test]
    fn truncations() {
        let key = k();
        let long = seal_v1(
            &key,
            ProviderTag::LocalMk,
            1,
            BlobPurpose::Secrets,
            b"n",
            b"payload",
        )
        .unwrap();
        for len in 0..V1_MIN_LOCAL_LEN {
            let r = open_v1(&long[..len], BlobPurpose::Secrets, b"n", 1 << 20, |_| {
                Some(&key)
            });
            assert!(matches!(r, Err(Error::TooShort { .. })), "len {len}: {r:?}");
        }
        let r = open_v1(
            &long[..V1_MIN_LOCAL_LEN],
            BlobPurpose::Secrets,
            b"n",
            1 << 20,
            |_| Some(&key),
        );
        assert_eq!(r, Err(Error::Integrity));
        let empty = seal_v1(
            &key,
            ProviderTag::LocalMk,
            1,
            BlobPurpose::Secrets,
            b"n",
            b"",
        )
        .unwrap();
        assert_eq!(empty.len(), V1_MIN_LOCAL_LEN);
        assert!(
            open_v1(&empty, BlobPurpose::Secrets, b"n", 1 << 20, |_| Some(&key))
                .unwrap()
                .is_empty()
        );
    }

    #[test]
    fn header_rejections() {
        let key = k();
        let blob = seal_v1(
            &key,
            ProviderTag::LocalMk,
            1,
            BlobPurpose::Secrets,
            b"n",
            b"v",
        )
        .unwrap();
        let open = |b: &[u8]| {
            open_v1(b, BlobPurpose::Secrets, b"n", 1 << 20, |g| {
                (g == 1).then_some(&key)
            })
        };
        let mut m = blob.clone();
        m[0] = b'X';
        assert!(matches!(open(&m), Err(Error::UnsupportedFormat(_))));
        let mut v = blob.clone();
        v[3] = 2;
        assert!(matches!(open(&v), Err(Error::UnsupportedFormat(_))));
        let mut p = blob.clone();
        p[4] = 0x07;
        assert_eq!(open(&p), Err(Error::UnknownProvider(7)));
        let mut r = blob.clone();
        r[4] = 0x02;
        assert!(matches!(open(&r), Err(Error::UnsupportedFormat(_))));
        let mut g = blob.clone();
        g[8] = 2;
        assert_eq!(open(&g), Err(Error::UnknownGeneration(2)));
        assert!(matches!(
            open_v1(&blob, BlobPurpose::Secrets, b"n", blob.len() - 1, |_| Some(
                &key
            )),
            Err(Error::TooLarge { .. })
        ));
        // A legacy (headerless) blob is never accepted by the v1 path.
        let legacy = seal_legacy(&key, b"v").unwrap();
        assert!(open(&legacy).is_err());
    }

    #[test]
    fn binding_to_row_and_purpose() {
        let key = k();
        let blob = seal_v1(
            &key,
            ProviderTag::LocalMk,
            1,
            BlobPurpose::Secrets,
            b"a",
            b"v",
        )
        .unwrap();
        assert_eq!(
            open_v1(&blob, BlobPurpose::Secrets, b"b", 1 << 20, |_| Some(&key)),
            Err(Error::Integrity)
        );
        assert_eq!(
            open_v1(&blob, BlobPurpose::ToolEncrypt, b"a", 1 << 20, |_| Some(
                &key
            )),
            Err(Error::Integrity)
        );
    }
}
