//! [`KmsProvider`]: any [`KmsBackend`] as a `lango_crypto::CryptoProvider`.
//!
//! ## Envelope encryption (K-5)
//!
//! `encrypt` draws a fresh 256-bit data key, has the backend wrap it under the encryption key
//! with the v1 associated data as the service's encryption context, and seals the value locally
//! with AES-256-GCM (lango-crypto) under the same associated data. Size limits of the services
//! stop mattering, and the blob records which key and key version wrapped its data key, so
//! rotation does not strand old values. The result is a v1 blob (see `lango_crypto::aead`):
//!
//! ```text
//! offset  size  field
//! 0       3     magic "LGO"
//! 3       1     format version 0x01
//! 4       1     provider tag (0x02 aws, 0x03 gcp, 0x04 azure, 0x05 pkcs11)
//! 5       4     key generation, always 0 for remote providers
//! 9       1     key-id length k (1..=255)
//! 10      k     key id (UTF-8): the resolved id that wrapped the data key
//! 10+k    1     key-version length v (0 = the backend reported none)
//! 11+k    v     key version (UTF-8)
//! 11+k+v  2     wrapped-key length w, u16 big-endian (1..=65535)
//! 13+k+v  w     wrapped data key (the backend's ciphertext)
//! ...           nonce (12) ‖ ciphertext ‖ tag (16)
//! ```
//!
//! Associated data, for both the backend's wrap and the local seal: the 9 header bytes ‖ ASCII
//! purpose ‖ `0x00` ‖ context (`lango_crypto::aead::v1_aad`). A blob therefore opens only for
//! the purpose and row it was written for.
//!
//! `decrypt` refuses a blob longer than `max_blob_len` before reading it, checks every length
//! against what remains, accepts only a key id equal to the requested (resolved) key or one of
//! the explicitly accepted previous keys ([`KmsProvider::with_accepted_key_ids`]) — so a blob
//! cannot be redirected to another key the credentials can use — unwraps, and opens. Every
//! inconsistency after the header is `DecryptionFailed`.
//!
//! ## Signatures (K-3, K-4)
//!
//! The backend signs SHA-256 of the payload. For ECDSA (P-256 and secp256k1, DER or raw `r‖s`)
//! the signature is parsed strictly, normalised to low-S, and verified against the key's public
//! key (fetched once and cached; fetched again once if verification fails, for rotated keys).
//! The encoding and [`Signature::algorithm`] stay what the backend returned. A signature that
//! does not verify is `InvalidKey`.
//!
//! ## Retries and cancellation
//!
//! Every backend call runs under the [`RetryPolicy`] with its per-attempt deadline. The
//! provider's [`CancellationToken`] (for shutdown) cancels waits and attempts in flight.

use std::{
    collections::HashMap,
    fmt,
    sync::{Arc, Mutex, PoisonError},
};

use async_trait::async_trait;
use lango_crypto::{
    CryptoProvider, SecretBytes, SecretKey32,
    aead::{self, BlobHeader, NONCE_LEN, ProviderTag, TAG_LEN},
    digest::sha256,
    provider::{
        AeadContext, Health, KeyAlgorithm, Operation, ProviderError, ProviderErrorKind,
        PublicKeyInfo, Signature, SignatureAlgorithm,
    },
};
use tokio_util::sync::CancellationToken;

use crate::{
    backend::{KeyRole, KmsBackend, RemoteKeyInfo},
    error::{KmsError, KmsErrorKind},
    health,
    retry::{Call, RetryPolicy},
};

/// Longest key id or key version the layout can record.
pub const MAX_KEY_ID_LEN: usize = u8::MAX as usize;
/// Longest wrapped data key the layout can record.
pub const MAX_WRAPPED_LEN: usize = u16::MAX as usize;
/// Length of a data key.
pub const DATA_KEY_LEN: usize = 32;

/// The parsed payload of an envelope blob (everything after the 9-byte header).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EnvelopePayload<'a> {
    /// The key that wrapped the data key.
    pub key_id: &'a str,
    /// The key version the backend reported, if any.
    pub key_version: Option<&'a str>,
    /// The wrapped data key.
    pub wrapped: &'a [u8],
    /// `nonce ‖ ciphertext ‖ tag` under the data key.
    pub sealed: &'a [u8],
}

impl<'a> EnvelopePayload<'a> {
    /// Appends the payload encoding to `out`; fails when a field is out of range.
    pub fn encode_into(&self, out: &mut Vec<u8>) -> Result<(), String> {
        let version = self.key_version.unwrap_or("");
        if self.key_id.is_empty() || self.key_id.len() > MAX_KEY_ID_LEN {
            return Err(format!(
                "key id must be 1 to {MAX_KEY_ID_LEN} bytes, got {}",
                self.key_id.len()
            ));
        }
        if version.len() > MAX_KEY_ID_LEN {
            return Err(format!(
                "key version longer than {MAX_KEY_ID_LEN} bytes ({})",
                version.len()
            ));
        }
        if self.wrapped.is_empty() || self.wrapped.len() > MAX_WRAPPED_LEN {
            return Err(format!(
                "wrapped data key must be 1 to {MAX_WRAPPED_LEN} bytes, got {}",
                self.wrapped.len()
            ));
        }
        // The checks above make these conversions exact.
        out.push(self.key_id.len() as u8);
        out.extend_from_slice(self.key_id.as_bytes());
        out.push(version.len() as u8);
        out.extend_from_slice(version.as_bytes());
        out.extend_from_slice(&(self.wrapped.len() as u16).to_be_bytes());
        out.extend_from_slice(self.wrapped);
        out.extend_from_slice(self.sealed);
        Ok(())
    }

    /// Parses a payload, checking every length against the bytes that remain.
    pub fn parse(payload: &'a [u8]) -> Result<Self, &'static str> {
        let mut r = Reader(payload);
        let k = r.u8().ok_or("truncated key-id length")?;
        let key_id = r.take(usize::from(k)).ok_or("truncated key id")?;
        let v = r.u8().ok_or("truncated key-version length")?;
        let version = r.take(usize::from(v)).ok_or("truncated key version")?;
        let w = r.u16().ok_or("truncated wrapped-key length")?;
        let wrapped = r.take(usize::from(w)).ok_or("truncated wrapped key")?;
        let sealed = r.0;
        if key_id.is_empty() {
            return Err("empty key id");
        }
        if wrapped.is_empty() {
            return Err("empty wrapped key");
        }
        if sealed.len() < NONCE_LEN + TAG_LEN {
            return Err("truncated ciphertext");
        }
        let key_id = std::str::from_utf8(key_id).map_err(|_| "key id is not UTF-8")?;
        let version = std::str::from_utf8(version).map_err(|_| "key version is not UTF-8")?;
        Ok(Self {
            key_id,
            key_version: (!version.is_empty()).then_some(version),
            wrapped,
            sealed,
        })
    }
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.0.len() < n {
            return None;
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Some(head)
    }

    fn u8(&mut self) -> Option<u8> {
        self.take(1).map(|b| b[0])
    }

    fn u16(&mut self) -> Option<u16> {
        self.take(2).map(|b| u16::from_be_bytes([b[0], b[1]]))
    }
}

/// A [`KmsBackend`] with retries, envelope encryption and signature normalisation, usable
/// wherever a `CryptoProvider` is expected.
pub struct KmsProvider {
    backend: Arc<dyn KmsBackend>,
    policy: RetryPolicy,
    cancel: CancellationToken,
    accepted_key_ids: Vec<String>,
    public_keys: Mutex<HashMap<String, PublicKeyInfo>>,
}

impl fmt::Debug for KmsProvider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KmsProvider")
            .field("backend", &self.backend.name())
            .field("policy", &self.policy)
            .field("accepted_key_ids", &self.accepted_key_ids)
            .finish_non_exhaustive()
    }
}

/// Why an ECDSA signature was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SigFault {
    Malformed,
    BadKey,
    Mismatch,
}

macro_rules! ecdsa_normalise {
    ($name:ident, $curve:ident) => {
        /// Strict parse, low-S, verify over the SHA-256 prehash, re-encode as received.
        fn $name(
            sig: &[u8],
            der: bool,
            prehash: &[u8; 32],
            sec1: &[u8],
        ) -> Result<Vec<u8>, SigFault> {
            use $curve::ecdsa::{Signature as S, VerifyingKey, signature::hazmat::PrehashVerifier};
            let parsed = if der {
                S::from_der(sig)
            } else {
                S::from_slice(sig)
            }
            .map_err(|_| SigFault::Malformed)?;
            let low = parsed.normalize_s();
            let vk = VerifyingKey::from_sec1_bytes(sec1).map_err(|_| SigFault::BadKey)?;
            vk.verify_prehash(prehash, &low)
                .map_err(|_| SigFault::Mismatch)?;
            Ok(if der {
                low.to_der().as_bytes().to_vec()
            } else {
                low.to_bytes().to_vec()
            })
        }
    };
}

ecdsa_normalise!(normalise_p256, p256);
ecdsa_normalise!(normalise_k256, k256);

impl KmsProvider {
    /// Wraps `backend` with `policy`.
    pub fn new(backend: Arc<dyn KmsBackend>, policy: RetryPolicy) -> Self {
        Self {
            backend,
            policy,
            cancel: CancellationToken::new(),
            accepted_key_ids: Vec::new(),
            public_keys: Mutex::new(HashMap::new()),
        }
    }

    /// Uses `cancel` (typically the node's shutdown token) to abandon retries.
    #[must_use]
    pub fn with_cancellation(mut self, cancel: CancellationToken) -> Self {
        self.cancel = cancel;
        self
    }

    /// Key ids, besides the requested one, whose blobs `decrypt` accepts (keys rotated away
    /// from, whose values have not been re-encrypted yet).
    #[must_use]
    pub fn with_accepted_key_ids(mut self, ids: impl IntoIterator<Item = String>) -> Self {
        self.accepted_key_ids = ids.into_iter().collect();
        self
    }

    /// The backend.
    pub fn backend(&self) -> &Arc<dyn KmsBackend> {
        &self.backend
    }

    /// The retry policy.
    pub fn policy(&self) -> &RetryPolicy {
        &self.policy
    }

    fn name(&self) -> &'static str {
        self.backend.name().as_str()
    }

    fn call<'a>(&self, op: &'static str, key_id: &'a str) -> Call<'a> {
        Call {
            provider: self.backend.name().short_name(),
            op,
            key_id,
        }
    }

    fn perr(
        &self,
        op: Operation,
        key_id: &str,
        kind: ProviderErrorKind,
        detail: impl Into<String>,
    ) -> ProviderError {
        ProviderError::new(self.name(), op, key_id, kind, detail)
    }

    /// Lists the backend's keys (with retries).
    pub async fn list_keys(&self) -> Result<Vec<RemoteKeyInfo>, KmsError> {
        let backend = &*self.backend;
        self.policy
            .run(&self.cancel, self.call("list-keys", ""), move || {
                backend.list_keys()
            })
            .await
    }

    /// Cancels pending retries and releases the backend's sessions.
    pub async fn close(&self) {
        self.cancel.cancel();
        self.backend.close().await;
    }

    /// Decrypts a headerless blob written by the Go node, which encrypted the value directly
    /// with the backend and no encryption context. For the one-time migration only: such
    /// blobs are bound to neither purpose nor row.
    pub async fn decrypt_legacy(&self, key_id: &str, blob: &[u8]) -> Result<SecretBytes, KmsError> {
        let resolved = self.backend.resolve_key_id(KeyRole::Encryption, key_id);
        let backend = &*self.backend;
        self.policy
            .run(&self.cancel, self.call("decrypt", resolved), move || {
                backend.unwrap(resolved, blob, None, &[])
            })
            .await
    }

    async fn fetch_public_key(
        &self,
        resolved: &str,
        refresh: bool,
    ) -> Result<PublicKeyInfo, KmsError> {
        if !refresh {
            let cache = self
                .public_keys
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            if let Some(pk) = cache.get(resolved) {
                return Ok(pk.clone());
            }
        }
        let backend = &*self.backend;
        let pk = self
            .policy
            .run(&self.cancel, self.call("public-key", resolved), move || {
                backend.public_key(resolved)
            })
            .await?;
        self.public_keys
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(resolved.to_owned(), pk.clone());
        Ok(pk)
    }

    /// Normalises and self-verifies an ECDSA signature; other algorithms pass through.
    async fn post_process(
        &self,
        resolved: &str,
        payload: &[u8],
        sig: Signature,
    ) -> Result<Signature, KmsError> {
        type Normalise = fn(&[u8], bool, &[u8; 32], &[u8]) -> Result<Vec<u8>, SigFault>;
        let (curve, der, normalise): (KeyAlgorithm, bool, Normalise) = match sig.algorithm {
            SignatureAlgorithm::EcdsaP256Sha256Der => (KeyAlgorithm::P256, true, normalise_p256),
            SignatureAlgorithm::EcdsaP256Sha256Raw => (KeyAlgorithm::P256, false, normalise_p256),
            SignatureAlgorithm::EcdsaSecp256k1Sha256Der => {
                (KeyAlgorithm::Secp256k1, true, normalise_k256)
            }
            _ => return Ok(sig),
        };
        let err = |kind, msg: String| {
            KmsError::new(
                self.backend.name().short_name(),
                "sign",
                resolved,
                kind,
                msg,
            )
        };
        let prehash = sha256(payload);
        let mut refreshed = false;
        loop {
            let pk = self.fetch_public_key(resolved, refreshed).await?;
            let outcome = if pk.algorithm == curve {
                normalise(&sig.bytes, der, &prehash, &pk.bytes)
            } else {
                Err(SigFault::BadKey)
            };
            match outcome {
                Ok(bytes) => {
                    return Ok(Signature {
                        algorithm: sig.algorithm,
                        bytes,
                    });
                }
                Err(SigFault::Malformed) => {
                    return Err(err(
                        KmsErrorKind::Other,
                        format!(
                            "backend returned a malformed {} signature",
                            sig.algorithm.id()
                        ),
                    ));
                }
                // The key may have been rotated since it was cached: fetch it once more.
                Err(_) if !refreshed => refreshed = true,
                Err(SigFault::BadKey) => {
                    return Err(err(
                        KmsErrorKind::InvalidKey,
                        format!(
                            "public key of type {:?} cannot verify a {} signature",
                            pk.algorithm,
                            sig.algorithm.id()
                        ),
                    ));
                }
                Err(SigFault::Mismatch) => {
                    return Err(err(
                        KmsErrorKind::InvalidKey,
                        "signature does not verify against the key's public key".to_owned(),
                    ));
                }
            }
        }
    }
}

#[async_trait]
impl CryptoProvider for KmsProvider {
    fn id(&self) -> &str {
        self.name()
    }

    fn tag(&self) -> ProviderTag {
        self.backend.name().tag()
    }

    async fn sign(&self, key_id: &str, payload: &[u8]) -> Result<Signature, ProviderError> {
        let resolved = self.backend.resolve_key_id(KeyRole::Signing, key_id);
        let backend = &*self.backend;
        let sig = self
            .policy
            .run(&self.cancel, self.call("sign", resolved), move || {
                backend.sign(resolved, payload)
            })
            .await
            .map_err(|e| e.into_provider_error(Operation::Sign))?;
        self.post_process(resolved, payload, sig)
            .await
            .map_err(|e| e.into_provider_error(Operation::Sign))
    }

    async fn public_key(&self, key_id: &str) -> Result<PublicKeyInfo, ProviderError> {
        let resolved = self.backend.resolve_key_id(KeyRole::Signing, key_id);
        self.fetch_public_key(resolved, false)
            .await
            .map_err(|e| e.into_provider_error(Operation::PublicKey))
    }

    async fn encrypt(
        &self,
        key_id: &str,
        plaintext: &[u8],
        aad: AeadContext<'_>,
    ) -> Result<Vec<u8>, ProviderError> {
        let op = Operation::Encrypt;
        let resolved = self.backend.resolve_key_id(KeyRole::Encryption, key_id);
        if resolved.is_empty() || resolved.len() > MAX_KEY_ID_LEN {
            return Err(self.perr(
                op,
                resolved,
                ProviderErrorKind::InvalidKey,
                format!(
                    "key id must be 1 to {MAX_KEY_ID_LEN} bytes, got {}",
                    resolved.len()
                ),
            ));
        }
        let header = BlobHeader {
            provider: self.tag(),
            generation: 0,
        }
        .encode();
        let binding = aead::v1_aad(&header, aad.purpose, aad.context);
        let data_key = SecretKey32::generate()
            .map_err(|e| self.perr(op, resolved, ProviderErrorKind::Other, e.to_string()))?;
        let (backend, dk, ctx) = (&*self.backend, data_key.expose().as_slice(), &binding[..]);
        let wrapped = self
            .policy
            .run(&self.cancel, self.call("encrypt", resolved), move || {
                backend.wrap(resolved, dk, ctx)
            })
            .await
            .map_err(|e| e.into_provider_error(op))?;
        let sealed = aead::seal(&data_key, &binding, plaintext)
            .map_err(|e| self.perr(op, resolved, ProviderErrorKind::Other, e.to_string()))?;
        drop(data_key);
        let mut blob = Vec::with_capacity(
            header.len() + 4 + resolved.len() + wrapped.ciphertext.len() + sealed.len() + 255,
        );
        blob.extend_from_slice(&header);
        EnvelopePayload {
            key_id: resolved,
            key_version: wrapped.key_version.as_deref(),
            wrapped: &wrapped.ciphertext,
            sealed: &sealed,
        }
        .encode_into(&mut blob)
        .map_err(|d| self.perr(op, resolved, ProviderErrorKind::Other, d))?;
        if blob.len() > aad.max_blob_len {
            return Err(self.perr(
                op,
                resolved,
                ProviderErrorKind::InvalidInput,
                format!(
                    "ciphertext of {} bytes would exceed the limit of {} for this purpose",
                    blob.len(),
                    aad.max_blob_len
                ),
            ));
        }
        Ok(blob)
    }

    async fn decrypt(
        &self,
        key_id: &str,
        blob: &[u8],
        aad: AeadContext<'_>,
    ) -> Result<SecretBytes, ProviderError> {
        let op = Operation::Decrypt;
        let expected = self.backend.resolve_key_id(KeyRole::Encryption, key_id);
        let failed =
            |detail: &str| self.perr(op, expected, ProviderErrorKind::DecryptionFailed, detail);
        if blob.len() > aad.max_blob_len {
            return Err(self.perr(
                op,
                expected,
                ProviderErrorKind::InvalidInput,
                format!(
                    "ciphertext of {} bytes exceeds the limit of {}",
                    blob.len(),
                    aad.max_blob_len
                ),
            ));
        }
        let (header, payload) = BlobHeader::parse(blob)
            .map_err(|e| self.perr(op, expected, ProviderErrorKind::InvalidInput, e.to_string()))?;
        if header.provider != self.tag() {
            return Err(self.perr(
                op,
                expected,
                ProviderErrorKind::InvalidInput,
                format!(
                    "ciphertext was written by provider {:?}, not {}",
                    header.provider,
                    self.name()
                ),
            ));
        }
        if header.generation != 0 {
            return Err(failed("unexpected key generation in header"));
        }
        let env = EnvelopePayload::parse(payload).map_err(failed)?;
        if env.key_id != expected && !self.accepted_key_ids.iter().any(|k| k == env.key_id) {
            return Err(failed(&format!(
                "ciphertext names key {:?}, which is neither the requested key nor an accepted one",
                env.key_id
            )));
        }
        let binding = aead::v1_aad(&header.encode(), aad.purpose, aad.context);
        let (backend, ctx) = (&*self.backend, &binding[..]);
        let dk = self
            .policy
            .run(&self.cancel, self.call("decrypt", env.key_id), move || {
                backend.unwrap(env.key_id, env.wrapped, env.key_version, ctx)
            })
            .await
            .map_err(|e| e.into_provider_error(op))?;
        if dk.len() != DATA_KEY_LEN {
            return Err(failed("unwrapped data key has the wrong length"));
        }
        let dk = SecretKey32::from_slice(dk.expose())
            .map_err(|_| failed("unwrapped data key has the wrong length"))?;
        aead::open(&dk, &binding, env.sealed).map_err(|e| {
            let mut pe = failed("ciphertext did not authenticate");
            pe.source = Some(Box::new(e));
            pe
        })
    }

    /// A single probe within the 5 s budget: an encrypt/decrypt round trip when an encryption
    /// key is configured, else a signature.
    async fn health(&self) -> Health {
        let role = if self.backend.encryption_key_id().is_empty() {
            KeyRole::Signing
        } else {
            KeyRole::Encryption
        };
        match health::probe_within(self, "", role, health::PROBE_BUDGET).await {
            Ok(()) => Health::Healthy,
            Err(failure) => Health::Unhealthy(failure.message),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::{
        collections::VecDeque,
        sync::atomic::{AtomicU32, Ordering},
        time::Duration,
    };

    use lango_crypto::aead::BlobPurpose;

    use super::*;
    use crate::{
        backend::{KmsProviderName, Wrapped},
        retry::Jitter,
    };

    const ENC_KEY: &str = "alias/enc";
    const SIGN_KEY: &str = "alias/sign";
    const VERSION: &str = "v7";

    /// An in-process backend: wraps with AES-GCM under a fixed KEK bound to the context and
    /// key id, signs with real P-256 / secp256k1 keys, and can be told to fail or misbehave.
    struct Fake {
        kek: SecretKey32,
        p256: p256::ecdsa::SigningKey,
        k256: k256::ecdsa::SigningKey,
        algorithm: Mutex<SignatureAlgorithm>,
        /// Return the high-S twin of each signature.
        high_s: std::sync::atomic::AtomicBool,
        /// Report this public key instead of the signing key's (0 = correct one).
        wrong_pubkey: std::sync::atomic::AtomicBool,
        failures: Mutex<VecDeque<KmsErrorKind>>,
        seen_contexts: Mutex<Vec<(String, Vec<u8>)>>,
        wraps: AtomicU32,
        unwraps: AtomicU32,
        signs: AtomicU32,
        pubkeys: AtomicU32,
        closed: std::sync::atomic::AtomicBool,
    }

    impl Fake {
        fn new() -> Self {
            Self {
                kek: SecretKey32::from_bytes([0x4b; 32]),
                p256: p256::ecdsa::SigningKey::from_slice(&[0x11; 32]).unwrap(),
                k256: k256::ecdsa::SigningKey::from_slice(&[0x22; 32]).unwrap(),
                algorithm: Mutex::new(SignatureAlgorithm::EcdsaP256Sha256Der),
                high_s: false.into(),
                wrong_pubkey: false.into(),
                failures: Mutex::new(VecDeque::new()),
                seen_contexts: Mutex::new(Vec::new()),
                wraps: AtomicU32::new(0),
                unwraps: AtomicU32::new(0),
                signs: AtomicU32::new(0),
                pubkeys: AtomicU32::new(0),
                closed: false.into(),
            }
        }

        fn fail_next(&self, kinds: &[KmsErrorKind]) {
            self.failures.lock().unwrap().extend(kinds.iter().copied());
        }

        fn injected(&self, op: &'static str, key_id: &str) -> Result<(), KmsError> {
            match self.failures.lock().unwrap().pop_front() {
                Some(kind) => Err(KmsError::new("aws", op, key_id, kind, "injected")),
                None => Ok(()),
            }
        }

        fn binding(key_id: &str, context: &[u8]) -> Vec<u8> {
            let mut b = key_id.as_bytes().to_vec();
            b.push(0);
            b.extend_from_slice(context);
            b
        }
    }

    fn high_s_p256(sig: p256::ecdsa::Signature) -> p256::ecdsa::Signature {
        let low = sig.normalize_s();
        p256::ecdsa::Signature::from_scalars(low.r().to_bytes(), (-*low.s()).to_bytes()).unwrap()
    }

    fn high_s_k256(sig: k256::ecdsa::Signature) -> k256::ecdsa::Signature {
        let low = sig.normalize_s();
        k256::ecdsa::Signature::from_scalars(low.r().to_bytes(), (-*low.s()).to_bytes()).unwrap()
    }

    #[async_trait]
    impl KmsBackend for Fake {
        fn name(&self) -> KmsProviderName {
            KmsProviderName::AwsKms
        }
        fn signing_key_id(&self) -> &str {
            SIGN_KEY
        }
        fn encryption_key_id(&self) -> &str {
            ENC_KEY
        }
        async fn sign(&self, key_id: &str, payload: &[u8]) -> Result<Signature, KmsError> {
            use k256::ecdsa::signature::hazmat::PrehashSigner;
            self.signs.fetch_add(1, Ordering::SeqCst);
            self.injected("sign", key_id)?;
            let digest = sha256(payload);
            let high = self.high_s.load(Ordering::SeqCst);
            let algorithm = *self.algorithm.lock().unwrap();
            let bytes = match algorithm {
                SignatureAlgorithm::EcdsaP256Sha256Der | SignatureAlgorithm::EcdsaP256Sha256Raw => {
                    let s: p256::ecdsa::Signature = self.p256.sign_prehash(&digest).unwrap();
                    let s = if high {
                        high_s_p256(s)
                    } else {
                        s.normalize_s()
                    };
                    if algorithm == SignatureAlgorithm::EcdsaP256Sha256Der {
                        s.to_der().as_bytes().to_vec()
                    } else {
                        s.to_bytes().to_vec()
                    }
                }
                SignatureAlgorithm::EcdsaSecp256k1Sha256Der => {
                    let s: k256::ecdsa::Signature = self.k256.sign_prehash(&digest).unwrap();
                    let s = if high { high_s_k256(s) } else { s };
                    s.to_der().as_bytes().to_vec()
                }
                _ => vec![0xaa; 32],
            };
            Ok(Signature { algorithm, bytes })
        }
        async fn public_key(&self, key_id: &str) -> Result<PublicKeyInfo, KmsError> {
            self.pubkeys.fetch_add(1, Ordering::SeqCst);
            self.injected("public-key", key_id)?;
            let wrong = self.wrong_pubkey.load(Ordering::SeqCst);
            let p256 = if wrong {
                p256::ecdsa::SigningKey::from_slice(&[0x33; 32]).unwrap()
            } else {
                self.p256.clone()
            };
            Ok(match *self.algorithm.lock().unwrap() {
                SignatureAlgorithm::EcdsaSecp256k1Sha256Der => PublicKeyInfo {
                    algorithm: KeyAlgorithm::Secp256k1,
                    bytes: self.k256.verifying_key().to_sec1_bytes().to_vec(),
                },
                _ => PublicKeyInfo {
                    algorithm: KeyAlgorithm::P256,
                    bytes: p256.verifying_key().to_sec1_bytes().to_vec(),
                },
            })
        }
        async fn wrap(
            &self,
            key_id: &str,
            plaintext: &[u8],
            context: &[u8],
        ) -> Result<Wrapped, KmsError> {
            self.wraps.fetch_add(1, Ordering::SeqCst);
            self.injected("encrypt", key_id)?;
            self.seen_contexts
                .lock()
                .unwrap()
                .push((key_id.to_owned(), context.to_vec()));
            Ok(Wrapped {
                ciphertext: aead::seal(&self.kek, &Self::binding(key_id, context), plaintext)
                    .unwrap(),
                key_version: Some(VERSION.to_owned()),
            })
        }
        async fn unwrap(
            &self,
            key_id: &str,
            ciphertext: &[u8],
            key_version: Option<&str>,
            context: &[u8],
        ) -> Result<SecretBytes, KmsError> {
            self.unwraps.fetch_add(1, Ordering::SeqCst);
            self.injected("decrypt", key_id)?;
            let fail = |m: &str| {
                KmsError::new("aws", "decrypt", key_id, KmsErrorKind::DecryptionFailed, m)
            };
            if key_version.is_some() && key_version != Some(VERSION) {
                return Err(KmsError::new(
                    "aws",
                    "decrypt",
                    key_id,
                    KmsErrorKind::InvalidKey,
                    "no such key version",
                ));
            }
            aead::open(&self.kek, &Self::binding(key_id, context), ciphertext)
                .map_err(|_| fail("InvalidCiphertextException"))
        }
        async fn list_keys(&self) -> Result<Vec<RemoteKeyInfo>, KmsError> {
            self.injected("list-keys", "")?;
            Ok(vec![
                RemoteKeyInfo::new(ENC_KEY),
                RemoteKeyInfo::new(SIGN_KEY),
            ])
        }
        async fn close(&self) {
            self.closed.store(true, Ordering::SeqCst);
        }
    }

    fn no_jitter() -> RetryPolicy {
        RetryPolicy {
            jitter: Jitter::None,
            ..RetryPolicy::default()
        }
    }

    fn provider() -> (Arc<Fake>, KmsProvider) {
        let fake = Arc::new(Fake::new());
        let p = KmsProvider::new(fake.clone(), no_jitter());
        (fake, p)
    }

    fn ctx(row: &[u8]) -> AeadContext<'_> {
        AeadContext {
            purpose: BlobPurpose::Secrets,
            context: row,
            max_blob_len: 64 * 1024,
        }
    }

    #[tokio::test(start_paused = true)]
    async fn envelope_round_trip_and_layout() {
        let (fake, p) = provider();
        let blob = p
            .encrypt("default", b"wallet private key", ctx(b"wallet.key"))
            .await
            .unwrap();
        // Header: magic, version, AWS tag, generation 0.
        assert_eq!(&blob[..9], b"LGO\x01\x02\x00\x00\x00\x00");
        let env = EnvelopePayload::parse(&blob[9..]).unwrap();
        assert_eq!(env.key_id, ENC_KEY);
        assert_eq!(env.key_version, Some(VERSION));
        assert_eq!(env.sealed.len(), NONCE_LEN + 18 + TAG_LEN);
        assert_eq!(
            blob.len(),
            9 + 1 + ENC_KEY.len() + 1 + VERSION.len() + 2 + env.wrapped.len() + env.sealed.len()
        );
        // The backend bound the wrap to the v1 associated data of this row.
        let seen = fake.seen_contexts.lock().unwrap().clone();
        let expected = aead::v1_aad(
            blob[..9].try_into().unwrap(),
            BlobPurpose::Secrets,
            b"wallet.key",
        );
        assert_eq!(seen, vec![(ENC_KEY.to_owned(), expected)]);
        // The plaintext is nowhere in the blob.
        assert!(!blob.windows(6).any(|w| w == b"wallet"));
        for alias in ["", "local", "default", ENC_KEY] {
            let plain = p.decrypt(alias, &blob, ctx(b"wallet.key")).await.unwrap();
            assert_eq!(plain.expose(), b"wallet private key");
        }
        // Two encryptions of the same value differ (fresh data key and nonce).
        let again = p
            .encrypt("default", b"wallet private key", ctx(b"wallet.key"))
            .await
            .unwrap();
        assert_ne!(blob, again);
    }

    #[tokio::test(start_paused = true)]
    async fn every_tamper_fails_and_payload_tampering_is_decryption_failed() {
        let (_, p) = provider();
        let blob = p.encrypt("", b"value", ctx(b"row")).await.unwrap();
        // The key-version field: a backend may report an unknown version as an invalid key.
        let version = 9 + 1 + ENC_KEY.len()..9 + 1 + ENC_KEY.len() + 1 + VERSION.len();
        for i in 0..blob.len() {
            let mut t = blob.clone();
            t[i] ^= 0x01;
            let e = p.decrypt("", &t, ctx(b"row")).await.unwrap_err();
            if version.contains(&i) {
                assert!(
                    matches!(
                        e.kind,
                        ProviderErrorKind::InvalidKey | ProviderErrorKind::DecryptionFailed
                    ),
                    "byte {i}: {e}"
                );
            } else if i >= 5 {
                assert_eq!(e.kind, ProviderErrorKind::DecryptionFailed, "byte {i}: {e}");
            } else {
                assert!(
                    matches!(
                        e.kind,
                        ProviderErrorKind::InvalidInput | ProviderErrorKind::DecryptionFailed
                    ),
                    "byte {i}: {e}"
                );
            }
        }
    }

    #[tokio::test(start_paused = true)]
    async fn every_truncation_fails() {
        let (_, p) = provider();
        let blob = p.encrypt("", b"value", ctx(b"row")).await.unwrap();
        for len in 0..blob.len() {
            assert!(
                p.decrypt("", &blob[..len], ctx(b"row")).await.is_err(),
                "len {len}"
            );
        }
        let mut longer = blob.clone();
        longer.push(0);
        let e = p.decrypt("", &longer, ctx(b"row")).await.unwrap_err();
        assert_eq!(e.kind, ProviderErrorKind::DecryptionFailed);
    }

    #[tokio::test(start_paused = true)]
    async fn bounds_are_checked_before_the_backend_is_called() {
        let (fake, p) = provider();
        let blob = p.encrypt("", b"value", ctx(b"row")).await.unwrap();
        // A wrapped-key length pointing past the end.
        let kid_end = 9 + 1 + ENC_KEY.len();
        let wl = kid_end + 1 + VERSION.len();
        let mut t = blob[..wl + 2].to_vec();
        t[wl] = 0xff;
        t[wl + 1] = 0xff;
        t.extend_from_slice(&[0; 40]);
        let e = p.decrypt("", &t, ctx(b"row")).await.unwrap_err();
        assert_eq!(e.kind, ProviderErrorKind::DecryptionFailed);
        assert!(e.detail.contains("truncated wrapped key"), "{e}");
        // A blob longer than the purpose's bound is refused unread.
        let small = AeadContext {
            max_blob_len: blob.len() - 1,
            ..ctx(b"row")
        };
        let e = p.decrypt("", &blob, small).await.unwrap_err();
        assert_eq!(e.kind, ProviderErrorKind::InvalidInput);
        // Neither reached the backend.
        assert_eq!(fake.unwraps.load(Ordering::SeqCst), 0);
        // Encrypt refuses to produce a blob decrypt would refuse.
        let e = p.encrypt("", b"value", small).await.unwrap_err();
        assert_eq!(e.kind, ProviderErrorKind::InvalidInput);
    }

    #[tokio::test(start_paused = true)]
    async fn blob_is_bound_to_row_and_purpose() {
        let (_, p) = provider();
        let blob = p.encrypt("", b"value", ctx(b"a")).await.unwrap();
        let e = p.decrypt("", &blob, ctx(b"b")).await.unwrap_err();
        assert_eq!(e.kind, ProviderErrorKind::DecryptionFailed);
        let other_purpose = AeadContext {
            purpose: BlobPurpose::ToolEncrypt,
            ..ctx(b"a")
        };
        let e = p.decrypt("", &blob, other_purpose).await.unwrap_err();
        assert_eq!(e.kind, ProviderErrorKind::DecryptionFailed);
    }

    #[tokio::test(start_paused = true)]
    async fn a_blob_naming_another_key_is_refused_unless_accepted() {
        let fake = Arc::new(Fake::new());
        let p = KmsProvider::new(fake.clone(), no_jitter());
        let blob = p.encrypt("alias/old", b"value", ctx(b"row")).await.unwrap();
        // Asked for the default key, the blob names alias/old: refused without a KMS call.
        let e = p.decrypt("default", &blob, ctx(b"row")).await.unwrap_err();
        assert_eq!(e.kind, ProviderErrorKind::DecryptionFailed);
        assert!(e.detail.contains("alias/old"));
        assert_eq!(fake.unwraps.load(Ordering::SeqCst), 0);
        // Asked for it explicitly, or with the key accepted after rotation: fine.
        assert!(p.decrypt("alias/old", &blob, ctx(b"row")).await.is_ok());
        let rotated = KmsProvider::new(fake.clone(), no_jitter())
            .with_accepted_key_ids(["alias/old".to_owned()]);
        let plain = rotated
            .decrypt("default", &blob, ctx(b"row"))
            .await
            .unwrap();
        assert_eq!(plain.expose(), b"value");
    }

    #[tokio::test(start_paused = true)]
    async fn wrong_provider_tag_is_not_ours() {
        let (_, p) = provider();
        let mut blob = p.encrypt("", b"value", ctx(b"row")).await.unwrap();
        blob[4] = ProviderTag::GcpKms as u8;
        let e = p.decrypt("", &blob, ctx(b"row")).await.unwrap_err();
        assert_eq!(e.kind, ProviderErrorKind::InvalidInput);
        assert_eq!(e.provider, "aws-kms");
    }

    #[tokio::test(start_paused = true)]
    async fn transient_backend_errors_are_retried_and_others_are_not() {
        let (fake, p) = provider();
        fake.fail_next(&[KmsErrorKind::Throttled, KmsErrorKind::Unavailable]);
        let start = tokio::time::Instant::now();
        let blob = p.encrypt("", b"v", ctx(b"row")).await.unwrap();
        assert_eq!(fake.wraps.load(Ordering::SeqCst), 3);
        assert_eq!(start.elapsed(), Duration::from_millis(300));

        fake.fail_next(&[KmsErrorKind::AccessDenied]);
        let e = p.decrypt("", &blob, ctx(b"row")).await.unwrap_err();
        assert_eq!(e.kind, ProviderErrorKind::AccessDenied);
        assert_eq!(e.op, Operation::Decrypt);
        assert_eq!(e.key_id, ENC_KEY);
        assert_eq!(fake.unwraps.load(Ordering::SeqCst), 1);
        assert_eq!(crate::error::kms_kind(&e), Some(KmsErrorKind::AccessDenied));
    }

    #[tokio::test(start_paused = true)]
    async fn cancellation_stops_retries() {
        let fake = Arc::new(Fake::new());
        let cancel = CancellationToken::new();
        let p = KmsProvider::new(fake.clone(), no_jitter()).with_cancellation(cancel.clone());
        fake.fail_next(&[KmsErrorKind::Unavailable; 4]);
        cancel.cancel();
        let e = p.sign("", b"m").await.unwrap_err();
        assert_eq!(crate::error::kms_kind(&e), Some(KmsErrorKind::Cancelled));
        assert!(!e.is_transient());
        assert_eq!(fake.signs.load(Ordering::SeqCst), 1);
    }

    async fn verify_p256(p: &KmsProvider, sig: &Signature, msg: &[u8]) {
        use p256::ecdsa::{VerifyingKey, signature::Verifier};
        let pk = p.public_key("").await.unwrap();
        let vk = VerifyingKey::from_sec1_bytes(&pk.bytes).unwrap();
        let s = match sig.algorithm {
            SignatureAlgorithm::EcdsaP256Sha256Der => {
                p256::ecdsa::Signature::from_der(&sig.bytes).unwrap()
            }
            _ => p256::ecdsa::Signature::from_slice(&sig.bytes).unwrap(),
        };
        assert_eq!(s.normalize_s(), s, "low-S");
        vk.verify(msg, &s).unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn p256_high_s_is_normalised_and_keeps_its_encoding() {
        for alg in [
            SignatureAlgorithm::EcdsaP256Sha256Der,
            SignatureAlgorithm::EcdsaP256Sha256Raw,
        ] {
            let (fake, p) = provider();
            *fake.algorithm.lock().unwrap() = alg;
            fake.high_s.store(true, Ordering::SeqCst);
            let raw = fake.sign(SIGN_KEY, b"message").await.unwrap();
            let sig = p.sign("default", b"message").await.unwrap();
            assert_eq!(sig.algorithm, alg);
            assert_ne!(sig.bytes, raw.bytes, "the high-S form was replaced");
            if alg == SignatureAlgorithm::EcdsaP256Sha256Raw {
                assert_eq!(sig.bytes.len(), 64);
            } else {
                assert_eq!(sig.bytes[0], 0x30);
            }
            verify_p256(&p, &sig, b"message").await;
        }
    }

    #[tokio::test(start_paused = true)]
    async fn secp256k1_high_s_is_normalised() {
        use k256::ecdsa::{VerifyingKey, signature::Verifier};
        let (fake, p) = provider();
        *fake.algorithm.lock().unwrap() = SignatureAlgorithm::EcdsaSecp256k1Sha256Der;
        fake.high_s.store(true, Ordering::SeqCst);
        let sig = p.sign("", b"message").await.unwrap();
        assert_eq!(sig.algorithm, SignatureAlgorithm::EcdsaSecp256k1Sha256Der);
        let s = k256::ecdsa::Signature::from_der(&sig.bytes).unwrap();
        // k256 verification rejects high-S, so this passing proves normalisation.
        let vk: &VerifyingKey = fake.k256.verifying_key();
        vk.verify(b"message", &s).unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn public_key_is_fetched_once_and_sign_uses_the_signing_key() {
        let (fake, p) = provider();
        for _ in 0..3 {
            p.sign("local", b"m").await.unwrap();
        }
        assert_eq!(fake.pubkeys.load(Ordering::SeqCst), 1);
        assert_eq!(fake.signs.load(Ordering::SeqCst), 3);
        assert_eq!(
            p.public_key("").await.unwrap().algorithm,
            KeyAlgorithm::P256
        );
        assert_eq!(fake.pubkeys.load(Ordering::SeqCst), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn a_signature_from_another_key_is_invalid_key() {
        let (fake, p) = provider();
        fake.wrong_pubkey.store(true, Ordering::SeqCst);
        let e = p.sign("", b"m").await.unwrap_err();
        assert_eq!(e.kind, ProviderErrorKind::InvalidKey);
        assert_eq!(e.key_id, SIGN_KEY);
        // Fetched again once before giving up (a rotated key would have been picked up).
        assert_eq!(fake.pubkeys.load(Ordering::SeqCst), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn a_rotated_key_is_picked_up() {
        let (fake, p) = provider();
        fake.wrong_pubkey.store(true, Ordering::SeqCst);
        // Cache the wrong key through public_key, then "rotate" back.
        p.public_key("").await.unwrap();
        fake.wrong_pubkey.store(false, Ordering::SeqCst);
        p.sign("", b"m").await.unwrap();
        assert_eq!(fake.pubkeys.load(Ordering::SeqCst), 2);
        p.sign("", b"m").await.unwrap();
        assert_eq!(fake.pubkeys.load(Ordering::SeqCst), 2);
    }

    #[test]
    fn strict_signature_parsing() {
        let sk = p256::ecdsa::SigningKey::from_slice(&[0x11; 32]).unwrap();
        let pk = sk.verifying_key().to_sec1_bytes();
        let digest = sha256(b"m");
        let sig: p256::ecdsa::Signature =
            p256::ecdsa::signature::hazmat::PrehashSigner::sign_prehash(&sk, &digest).unwrap();
        let der = sig.to_der().as_bytes().to_vec();
        assert!(normalise_p256(&der, true, &digest, &pk).is_ok());
        // Non-minimal length encoding (long form for a short length).
        let mut long_form = vec![0x30, 0x81, der[1]];
        long_form.extend_from_slice(&der[2..]);
        assert_eq!(
            normalise_p256(&long_form, true, &digest, &pk),
            Err(SigFault::Malformed)
        );
        // Trailing garbage.
        let mut trailing = der.clone();
        trailing.push(0);
        assert_eq!(
            normalise_p256(&trailing, true, &digest, &pk),
            Err(SigFault::Malformed)
        );
        // r = 0, and s = n (out of range), in raw form.
        let raw = sig.to_bytes();
        let mut zero_r = raw.to_vec();
        zero_r[..32].fill(0);
        assert_eq!(
            normalise_p256(&zero_r, false, &digest, &pk),
            Err(SigFault::Malformed)
        );
        let n = hex::decode("ffffffff00000000ffffffffffffffffbce6faada7179e84f3b9cac2fc632551")
            .unwrap();
        let mut s_is_n = raw.to_vec();
        s_is_n[32..].copy_from_slice(&n);
        assert_eq!(
            normalise_p256(&s_is_n, false, &digest, &pk),
            Err(SigFault::Malformed)
        );
        assert_eq!(
            normalise_p256(&raw[..63], false, &digest, &pk),
            Err(SigFault::Malformed)
        );
        // Another message.
        assert_eq!(
            normalise_p256(&der, true, &sha256(b"n"), &pk),
            Err(SigFault::Mismatch)
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_malformed_backend_signature_is_an_error() {
        struct Garbage(Fake);
        #[async_trait]
        impl KmsBackend for Garbage {
            fn name(&self) -> KmsProviderName {
                KmsProviderName::GcpKms
            }
            fn signing_key_id(&self) -> &str {
                SIGN_KEY
            }
            fn encryption_key_id(&self) -> &str {
                ENC_KEY
            }
            async fn sign(&self, _: &str, _: &[u8]) -> Result<Signature, KmsError> {
                Ok(Signature {
                    algorithm: SignatureAlgorithm::EcdsaP256Sha256Der,
                    bytes: vec![0x30, 0x00],
                })
            }
            async fn public_key(&self, k: &str) -> Result<PublicKeyInfo, KmsError> {
                self.0.public_key(k).await
            }
            async fn wrap(&self, k: &str, p: &[u8], c: &[u8]) -> Result<Wrapped, KmsError> {
                self.0.wrap(k, p, c).await
            }
            async fn unwrap(
                &self,
                k: &str,
                ct: &[u8],
                v: Option<&str>,
                c: &[u8],
            ) -> Result<SecretBytes, KmsError> {
                self.0.unwrap(k, ct, v, c).await
            }
            async fn list_keys(&self) -> Result<Vec<RemoteKeyInfo>, KmsError> {
                self.0.list_keys().await
            }
            async fn close(&self) {}
        }
        let p = KmsProvider::new(Arc::new(Garbage(Fake::new())), no_jitter());
        let e = p.sign("", b"m").await.unwrap_err();
        assert_eq!(e.kind, ProviderErrorKind::Other);
        assert_eq!(e.provider, "gcp-kms");
        assert!(e.detail.contains("malformed ecdsa-p256-sha256-der"), "{e}");
    }

    #[tokio::test(start_paused = true)]
    async fn legacy_blobs_list_keys_health_and_close() {
        let (fake, p) = provider();
        // A Go-written blob: the backend's ciphertext under no context.
        let legacy = fake.wrap(ENC_KEY, b"old secret", &[]).await.unwrap();
        let plain = p
            .decrypt_legacy("default", &legacy.ciphertext)
            .await
            .unwrap();
        assert_eq!(plain.expose(), b"old secret");
        // Never through the strict path.
        assert!(
            p.decrypt("", &legacy.ciphertext, ctx(b"row"))
                .await
                .is_err()
        );

        let keys = p.list_keys().await.unwrap();
        assert_eq!(keys.len(), 2);
        assert_eq!(p.health().await, Health::Healthy);
        fake.fail_next(&[KmsErrorKind::AccessDenied]);
        assert!(matches!(p.health().await, Health::Unhealthy(r) if r.contains("access denied")));
        p.close().await;
        assert!(fake.closed.load(Ordering::SeqCst));
        assert_eq!(p.id(), "aws-kms");
        assert_eq!(p.tag(), ProviderTag::AwsKms);
    }

    #[test]
    fn payload_encoding_rejects_out_of_range_fields() {
        let long = "k".repeat(256);
        let mut out = Vec::new();
        let p = |key_id, key_version, wrapped| EnvelopePayload {
            key_id,
            key_version,
            wrapped,
            sealed: &[0; 28],
        };
        assert!(p(&long, None, &[1]).encode_into(&mut out).is_err());
        assert!(p("", None, &[1]).encode_into(&mut out).is_err());
        assert!(p("k", Some(&long), &[1]).encode_into(&mut out).is_err());
        assert!(p("k", None, &[]).encode_into(&mut out).is_err());
        let huge = vec![0; 65_536];
        assert!(p("k", None, &huge).encode_into(&mut out).is_err());
        assert!(out.is_empty());
        p("k", None, &[9]).encode_into(&mut out).unwrap();
        assert_eq!(&out[..6], &[1, b'k', 0, 0, 1, 9]);
        let parsed = EnvelopePayload::parse(&out).unwrap();
        assert_eq!(parsed.key_version, None);
        assert_eq!(parsed.wrapped, &[9]);
    }
}
