//! A local Cloud KMS REST server that answers the real v1 shapes:
//!
//! - `POST /v1/{version}:asymmetricSign` — `{"digest":{"sha256"},"digestCrc32c"}` →
//!   `{"name","signature","signatureCrc32c","verifiedDigestCrc32c","protectionLevel"}`, signed
//!   with a real P-256 (or secp256k1) key over the digest as given;
//! - `GET /v1/{version}/publicKey` — `{"name","pem","pemCrc32c","algorithm","protectionLevel"}`;
//! - `POST /v1/{key or version}:encrypt` — AES-256-GCM under a server-side key per version,
//!   with the additional authenticated data; `{"name","ciphertext","ciphertextCrc32c",
//!   "verifiedPlaintextCrc32c","verifiedAdditionalAuthenticatedDataCrc32c"}`;
//! - `POST /v1/{key}:decrypt` — the version is read from the ciphertext; a version name is
//!   refused; `{"plaintext","plaintextCrc32c","usedPrimary"}`;
//! - `GET /v1/{keyRing}/cryptoKeys?pageSize&pageToken` — at most 2 keys per page;
//! - errors as `{"error":{"code","message","status"}}` with the HTTP code of the status.
//!
//! Request CRC32C fields are checked like the service does (mismatch → INVALID_ARGUMENT), and
//! every request must carry `Authorization: Bearer TOKEN`. Faults can be queued: an error
//! status, a dropped connection, a delay, a corrupted response checksum, an unverified request
//! checksum, or an oversized body.
#![allow(dead_code)]

use std::{
    collections::VecDeque,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use aws_lc_rs::{
    aead::{AES_256_GCM, Aad, LessSafeKey, Nonce, UnboundKey},
    encoding::AsDer,
    rsa::{KeySize, PrivateDecryptingKey},
};
use base64::{Engine as _, engine::general_purpose::STANDARD};
use serde_json::{Value, json};

use crate::rest_server::{Recorded, Reply, RestServer, spki_pem};

pub const TOKEN: &str = "gcp-test-token-8d41c2";
pub const RING: &str = "projects/lango-test/locations/global/keyRings/ring";

pub fn signer() -> String {
    format!("{RING}/cryptoKeys/signer/cryptoKeyVersions/1")
}
pub fn k1_signer() -> String {
    format!("{RING}/cryptoKeys/k1signer/cryptoKeyVersions/1")
}
pub fn rsa_signer() -> String {
    format!("{RING}/cryptoKeys/rsasigner/cryptoKeyVersions/1")
}
pub fn enc_key() -> String {
    format!("{RING}/cryptoKeys/enc")
}
pub fn enc_version(n: usize) -> String {
    format!("{}/cryptoKeyVersions/{n}", enc_key())
}

/// The HTTP code Google APIs use for each canonical status.
pub fn http_code(status: &str) -> u16 {
    match status {
        "INVALID_ARGUMENT" | "FAILED_PRECONDITION" | "OUT_OF_RANGE" => 400,
        "UNAUTHENTICATED" => 401,
        "PERMISSION_DENIED" => 403,
        "NOT_FOUND" => 404,
        "ALREADY_EXISTS" | "ABORTED" => 409,
        "RESOURCE_EXHAUSTED" => 429,
        "CANCELLED" => 499,
        "INTERNAL" | "UNKNOWN" | "DATA_LOSS" => 500,
        "UNIMPLEMENTED" => 501,
        "UNAVAILABLE" => 503,
        "DEADLINE_EXCEEDED" => 504,
        _ => 500,
    }
}

pub fn error(status: &str, message: &str) -> Reply {
    let code = http_code(status);
    Reply::json(
        code,
        json!({"error": {"code": code, "message": message, "status": status}}),
    )
}

fn crc(data: &[u8]) -> String {
    crc32c::crc32c(data).to_string()
}

/// A fault applied to the next request.
#[derive(Debug, Clone)]
pub enum Fault {
    /// Answer with this canonical status.
    Status(&'static str),
    /// Answer with this canonical status and message.
    StatusWith(&'static str, &'static str),
    /// Close the connection without an answer.
    Drop,
    /// Answer normally after this delay.
    Delay(Duration),
    /// Answer normally, but with the response data's CRC32C off by one.
    CorruptResponseCrc,
    /// Answer normally, but claim the request checksums were not verified.
    UnverifiedRequestCrc,
    /// Answer 200 with a 2 MiB body.
    HugeBody,
    /// Answer with a non-JSON body and this HTTP code (a proxy's error page).
    Html(u16),
}

pub struct FakeGcp {
    p256: p256::ecdsa::SigningKey,
    k256: k256::ecdsa::SigningKey,
    rsa_spki: Vec<u8>,
    /// AES-256 keys of versions 1..=n of `enc`.
    aes: Mutex<Vec<[u8; 32]>>,
    primary: Mutex<usize>,
    faults: Mutex<VecDeque<Fault>>,
    /// Return the high-S twin of P-256 signatures.
    pub high_s: AtomicBool,
    /// Every digest asymmetricSign received.
    pub digests: Mutex<Vec<Vec<u8>>>,
    /// Every (plaintext length, additional authenticated data) encrypt received.
    pub encrypts: Mutex<Vec<(usize, Vec<u8>)>>,
    /// Versions of `enc` in state `DISABLED` (the service answers FAILED_PRECONDITION).
    disabled: Mutex<Vec<usize>>,
    /// The caller's IAM binding on `enc` was removed (PERMISSION_DENIED).
    pub denied: AtomicBool,
}

impl FakeGcp {
    pub fn new() -> Arc<Self> {
        let rsa = PrivateDecryptingKey::generate(KeySize::Rsa2048).unwrap();
        let rsa_spki = rsa.public_key().as_der().unwrap().as_ref().to_vec();
        Arc::new(Self {
            p256: p256::ecdsa::SigningKey::from_slice(&[0x5a; 32]).unwrap(),
            k256: k256::ecdsa::SigningKey::from_slice(&[0x6b; 32]).unwrap(),
            rsa_spki,
            aes: Mutex::new(vec![[0x11; 32]]),
            primary: Mutex::new(1),
            faults: Mutex::new(VecDeque::new()),
            high_s: AtomicBool::new(false),
            digests: Mutex::new(Vec::new()),
            encrypts: Mutex::new(Vec::new()),
            disabled: Mutex::new(Vec::new()),
            denied: AtomicBool::new(false),
        })
    }

    /// Disables (`false`) or enables version `n` of `enc`, as `cryptoKeyVersions.patch` with
    /// `state` would.
    pub fn set_version_enabled(&self, n: usize, enabled: bool) {
        let mut d = self.disabled.lock().unwrap();
        d.retain(|v| *v != n);
        if !enabled {
            d.push(n);
        }
    }

    /// The service's answer to using version `version` of `enc` with `permission`, if it
    /// refuses.
    fn refusal(&self, version: usize, permission: &str) -> Option<Reply> {
        if self.denied.load(Ordering::SeqCst) {
            return Some(error(
                "PERMISSION_DENIED",
                &format!(
                    "Permission 'cloudkms.cryptoKeyVersions.{permission}' denied on resource '{}' (or it may not exist).",
                    enc_key()
                ),
            ));
        }
        if self.disabled.lock().unwrap().contains(&version) {
            return Some(error(
                "FAILED_PRECONDITION",
                &format!(
                    "{} is not enabled, current state is: DISABLED.",
                    enc_version(version)
                ),
            ));
        }
        None
    }

    pub async fn serve(self: &Arc<Self>) -> RestServer {
        let me = self.clone();
        RestServer::start(Arc::new(move |r: &Recorded| me.handle(r))).await
    }

    pub fn fail_next(&self, faults: impl IntoIterator<Item = Fault>) {
        self.faults.lock().unwrap().extend(faults);
    }

    pub fn pending_faults(&self) -> usize {
        self.faults.lock().unwrap().len()
    }

    /// Adds a version of `enc` and makes it primary; returns its number.
    pub fn rotate(&self) -> usize {
        let mut aes = self.aes.lock().unwrap();
        let n = aes.len() + 1;
        aes.push([n as u8 ^ 0xa5; 32]);
        *self.primary.lock().unwrap() = n;
        n
    }

    pub fn p256_pem(&self) -> String {
        use p256::pkcs8::EncodePublicKey as _;
        let der = self.p256.verifying_key().to_public_key_der().unwrap();
        spki_pem(der.as_bytes())
    }

    pub fn k256_pem(&self) -> String {
        use k256::pkcs8::EncodePublicKey as _;
        let der = self.k256.verifying_key().to_public_key_der().unwrap();
        spki_pem(der.as_bytes())
    }

    pub fn p256_sec1(&self) -> Vec<u8> {
        self.p256
            .verifying_key()
            .to_sec1_point(false)
            .as_bytes()
            .to_vec()
    }

    pub fn rsa_spki(&self) -> Vec<u8> {
        self.rsa_spki.clone()
    }

    fn handle(&self, r: &Recorded) -> Reply {
        if r.header("authorization") != Some(&format!("Bearer {TOKEN}")) {
            return error(
                "UNAUTHENTICATED",
                "Request had invalid authentication credentials. Expected OAuth 2 access token.",
            );
        }
        let fault = self.faults.lock().unwrap().pop_front();
        let (corrupt, unverified) = match fault {
            None => (false, false),
            Some(Fault::Status(s)) => return error(s, &format!("injected {s}")),
            Some(Fault::StatusWith(s, m)) => return error(s, m),
            Some(Fault::Drop) => return Reply::Drop,
            Some(Fault::Delay(d)) => return Reply::Delay(d, Box::new(self.route(r, false, false))),
            Some(Fault::CorruptResponseCrc) => (true, false),
            Some(Fault::UnverifiedRequestCrc) => (false, true),
            Some(Fault::HugeBody) => {
                return Reply::Http {
                    status: 200,
                    headers: vec![],
                    body: vec![b' '; 2 * 1024 * 1024],
                };
            }
            Some(Fault::Html(code)) => {
                return Reply::Http {
                    status: code,
                    headers: vec![("content-type".into(), "text/html".into())],
                    body: b"<html><body>Bad Gateway</body></html>".to_vec(),
                };
            }
        };
        self.route(r, corrupt, unverified)
    }

    fn route(&self, r: &Recorded, corrupt: bool, unverified: bool) -> Reply {
        let Some(rest) = r.path.strip_prefix("/v1/") else {
            return error("NOT_FOUND", "unknown path");
        };
        match r.method.as_str() {
            "GET" => {
                if let Some(name) = rest.strip_suffix("/publicKey") {
                    self.public_key(name, corrupt)
                } else if let Some(ring) = rest.strip_suffix("/cryptoKeys") {
                    self.list(ring, r)
                } else {
                    error("NOT_FOUND", "unknown path")
                }
            }
            "POST" => {
                let Some((name, verb)) = rest.rsplit_once(':') else {
                    return error("NOT_FOUND", "no method");
                };
                let body = r.json();
                match verb {
                    "asymmetricSign" => self.sign(name, &body, corrupt, unverified),
                    "encrypt" => self.encrypt(name, &body, corrupt, unverified),
                    "decrypt" => self.decrypt(name, &body, corrupt),
                    _ => error("NOT_FOUND", "unknown method"),
                }
            }
            _ => error("NOT_FOUND", "unknown method"),
        }
    }

    fn public_key(&self, name: &str, corrupt: bool) -> Reply {
        let (pem, algorithm) = if name == signer() {
            (self.p256_pem(), "EC_SIGN_P256_SHA256")
        } else if name == k1_signer() {
            (self.k256_pem(), "EC_SIGN_SECP256K1_SHA256")
        } else if name == rsa_signer() {
            (spki_pem(&self.rsa_spki), "RSA_SIGN_PKCS1_2048_SHA256")
        } else if name.starts_with(&enc_key()) {
            return error(
                "FAILED_PRECONDITION",
                "The request cannot be fulfilled: a symmetric key has no public key.",
            );
        } else {
            return error("NOT_FOUND", &format!("{name} not found."));
        };
        let mut sum = crc32c::crc32c(pem.as_bytes());
        if corrupt {
            sum = sum.wrapping_add(1);
        }
        Reply::json(
            200,
            json!({
                "pem": pem,
                "algorithm": algorithm,
                "pemCrc32c": sum.to_string(),
                "name": name,
                "protectionLevel": "SOFTWARE",
            }),
        )
    }

    fn sign(&self, name: &str, body: &Value, corrupt: bool, unverified: bool) -> Reply {
        let known = [signer(), k1_signer(), rsa_signer()];
        if !known.iter().any(|k| k == name) {
            if known.iter().any(|k| k.starts_with(&format!("{name}/"))) {
                return error(
                    "INVALID_ARGUMENT",
                    "Resource name must be a CryptoKeyVersion.",
                );
            }
            return error("NOT_FOUND", &format!("{name} not found."));
        }
        let Some(digest) = body["digest"]["sha256"]
            .as_str()
            .and_then(|d| STANDARD.decode(d).ok())
        else {
            return error("INVALID_ARGUMENT", "digest.sha256 is required.");
        };
        if digest.len() != 32 {
            return error(
                "INVALID_ARGUMENT",
                "Digest length must be 32 bytes for the key algorithm.",
            );
        }
        let sent_crc = body["digestCrc32c"].as_str();
        if sent_crc.is_some_and(|c| c != crc(&digest)) {
            return error(
                "INVALID_ARGUMENT",
                "The checksum in field digest_crc32c did not match the data in field digest.",
            );
        }
        self.digests.lock().unwrap().push(digest.clone());
        let signature = if name == signer() {
            use p256::ecdsa::signature::hazmat::PrehashSigner as _;
            let sig: p256::ecdsa::Signature = self.p256.sign_prehash(&digest).unwrap();
            let sig = if self.high_s.load(Ordering::SeqCst) {
                let low = sig.normalize_s();
                p256::ecdsa::Signature::from_scalars(low.r().to_bytes(), (-*low.s()).to_bytes())
                    .unwrap()
            } else {
                sig
            };
            sig.to_der().as_bytes().to_vec()
        } else if name == k1_signer() {
            use k256::ecdsa::signature::hazmat::PrehashSigner as _;
            let sig: k256::ecdsa::Signature = self.k256.sign_prehash(&digest).unwrap();
            sig.to_der().as_bytes().to_vec()
        } else {
            return error(
                "INVALID_ARGUMENT",
                "This test server does not sign with RSA keys.",
            );
        };
        let mut sum = crc32c::crc32c(&signature);
        if corrupt {
            sum = sum.wrapping_add(1);
        }
        Reply::json(
            200,
            json!({
                "name": name,
                "signature": STANDARD.encode(&signature),
                "signatureCrc32c": sum.to_string(),
                "verifiedDigestCrc32c": sent_crc.is_some() && !unverified,
                "protectionLevel": "SOFTWARE",
            }),
        )
    }

    fn aes(&self, version: usize) -> Option<LessSafeKey> {
        let aes = self.aes.lock().unwrap();
        let k = aes.get(version.checked_sub(1)?)?;
        Some(LessSafeKey::new(UnboundKey::new(&AES_256_GCM, k).unwrap()))
    }

    /// The optional `additionalAuthenticatedData` with its checksum checked.
    fn aad(body: &Value) -> Result<(Vec<u8>, bool), Reply> {
        let aad = match body["additionalAuthenticatedData"].as_str() {
            Some(a) => STANDARD
                .decode(a)
                .map_err(|_| error("INVALID_ARGUMENT", "bad additionalAuthenticatedData"))?,
            None => Vec::new(),
        };
        let sent = body["additionalAuthenticatedDataCrc32c"].as_str();
        if sent.is_some_and(|c| c != crc(&aad)) {
            return Err(error(
                "INVALID_ARGUMENT",
                "The checksum in field additional_authenticated_data_crc32c did not match the data in field additional_authenticated_data.",
            ));
        }
        Ok((aad, sent.is_some()))
    }

    fn encrypt(&self, name: &str, body: &Value, corrupt: bool, unverified: bool) -> Reply {
        let version = if name == enc_key() {
            *self.primary.lock().unwrap()
        } else if let Some(n) = name
            .strip_prefix(&format!("{}/cryptoKeyVersions/", enc_key()))
            .and_then(|n| n.parse::<usize>().ok())
        {
            n
        } else if name.contains("signer") {
            return error(
                "INVALID_ARGUMENT",
                "The request's CryptoKey has purpose ASYMMETRIC_SIGN, but ENCRYPT_DECRYPT is required.",
            );
        } else {
            return error("NOT_FOUND", &format!("{name} not found."));
        };
        let Some(key) = self.aes(version) else {
            return error("NOT_FOUND", &format!("{name} not found."));
        };
        if let Some(reply) = self.refusal(version, "useToEncrypt") {
            return reply;
        }
        let Some(plaintext) = body["plaintext"]
            .as_str()
            .and_then(|p| STANDARD.decode(p).ok())
        else {
            return error("INVALID_ARGUMENT", "plaintext is required.");
        };
        if plaintext.len() > 64 * 1024 {
            return error(
                "INVALID_ARGUMENT",
                "The plaintext must be no larger than 64KiB.",
            );
        }
        let sent_crc = body["plaintextCrc32c"].as_str();
        if sent_crc.is_some_and(|c| c != crc(&plaintext)) {
            return error(
                "INVALID_ARGUMENT",
                "The checksum in field plaintext_crc32c did not match the data in field plaintext.",
            );
        }
        let (aad, aad_crc_sent) = match Self::aad(body) {
            Ok(a) => a,
            Err(reply) => return reply,
        };
        self.encrypts
            .lock()
            .unwrap()
            .push((plaintext.len(), aad.clone()));
        let mut nonce = [0u8; 12];
        aws_lc_rs::rand::fill(&mut nonce).unwrap();
        let mut sealed = plaintext;
        key.seal_in_place_append_tag(
            Nonce::assume_unique_for_key(nonce),
            Aad::from(&aad[..]),
            &mut sealed,
        )
        .unwrap();
        // The ciphertext names the version that produced it, as the service's does.
        let mut ciphertext = vec![version as u8];
        ciphertext.extend_from_slice(&nonce);
        ciphertext.extend_from_slice(&sealed);
        let mut sum = crc32c::crc32c(&ciphertext);
        if corrupt {
            sum = sum.wrapping_add(1);
        }
        Reply::json(
            200,
            json!({
                "name": enc_version(version),
                "ciphertext": STANDARD.encode(&ciphertext),
                "ciphertextCrc32c": sum.to_string(),
                "verifiedPlaintextCrc32c": sent_crc.is_some() && !unverified,
                "verifiedAdditionalAuthenticatedDataCrc32c": aad_crc_sent && !unverified,
                "protectionLevel": "SOFTWARE",
            }),
        )
    }

    fn decrypt(&self, name: &str, body: &Value, corrupt: bool) -> Reply {
        if name.starts_with(&format!("{}/", enc_key())) {
            return error(
                "INVALID_ARGUMENT",
                "Resource name must be a CryptoKey, not a CryptoKeyVersion.",
            );
        }
        if name != enc_key() {
            return error("NOT_FOUND", &format!("{name} not found."));
        }
        let Some(ciphertext) = body["ciphertext"]
            .as_str()
            .and_then(|c| STANDARD.decode(c).ok())
        else {
            return error("INVALID_ARGUMENT", "ciphertext is required.");
        };
        if body["ciphertextCrc32c"]
            .as_str()
            .is_some_and(|c| c != crc(&ciphertext))
        {
            return error(
                "INVALID_ARGUMENT",
                "The checksum in field ciphertext_crc32c did not match the data in field ciphertext.",
            );
        }
        let (aad, _) = match Self::aad(body) {
            Ok(a) => a,
            Err(reply) => return reply,
        };
        let failed = || {
            error(
                "INVALID_ARGUMENT",
                "Decryption failed: verify that 'name' refers to the correct CryptoKey.",
            )
        };
        if ciphertext.len() < 1 + 12 + 16 {
            return error(
                "INVALID_ARGUMENT",
                "Decryption failed: the ciphertext is invalid.",
            );
        }
        let version = usize::from(ciphertext[0]);
        let Some(key) = self.aes(version) else {
            return failed();
        };
        if let Some(reply) = self.refusal(version, "useToDecrypt") {
            return reply;
        }
        let nonce = Nonce::try_assume_unique_for_key(&ciphertext[1..13]).unwrap();
        let mut buf = ciphertext[13..].to_vec();
        let Ok(plain) = key.open_in_place(nonce, Aad::from(&aad[..]), &mut buf) else {
            return failed();
        };
        let plain = plain.to_vec();
        let mut sum = crc32c::crc32c(&plain);
        if corrupt {
            sum = sum.wrapping_add(1);
        }
        Reply::json(
            200,
            json!({
                "plaintext": STANDARD.encode(&plain),
                "plaintextCrc32c": sum.to_string(),
                "usedPrimary": version == *self.primary.lock().unwrap(),
                "protectionLevel": "SOFTWARE",
            }),
        )
    }

    fn list(&self, ring: &str, r: &Recorded) -> Reply {
        if ring != RING {
            return error("NOT_FOUND", &format!("{ring} not found."));
        }
        let keys = [
            json!({"name": format!("{RING}/cryptoKeys/signer"), "purpose": "ASYMMETRIC_SIGN",
                   "versionTemplate": {"algorithm": "EC_SIGN_P256_SHA256", "protectionLevel": "SOFTWARE"}}),
            json!({"name": format!("{RING}/cryptoKeys/k1signer"), "purpose": "ASYMMETRIC_SIGN",
                   "versionTemplate": {"algorithm": "EC_SIGN_SECP256K1_SHA256", "protectionLevel": "HSM"}}),
            json!({"name": format!("{RING}/cryptoKeys/rsasigner"), "purpose": "ASYMMETRIC_SIGN",
                   "versionTemplate": {"algorithm": "RSA_SIGN_PKCS1_2048_SHA256", "protectionLevel": "SOFTWARE"}}),
            json!({"name": enc_key(), "purpose": "ENCRYPT_DECRYPT",
                   "primary": {"name": enc_version(*self.primary.lock().unwrap()), "state": "ENABLED",
                               "algorithm": "GOOGLE_SYMMETRIC_ENCRYPTION"},
                   "versionTemplate": {"algorithm": "GOOGLE_SYMMETRIC_ENCRYPTION", "protectionLevel": "SOFTWARE"}}),
        ];
        let size = r
            .query_param("pageSize")
            .and_then(|s| s.parse::<usize>().ok())
            .unwrap_or(1000)
            .clamp(1, 2);
        let start = r
            .query_param("pageToken")
            .and_then(|t| t.strip_prefix("tok-").map(str::to_owned))
            .and_then(|s| s.parse::<usize>().ok())
            .unwrap_or(0);
        let end = (start + size).min(keys.len());
        let mut page = json!({
            "cryptoKeys": keys[start..end].to_vec(),
            "totalSize": keys.len(),
        });
        if end < keys.len() {
            page["nextPageToken"] = format!("tok-{end}").into();
        }
        Reply::json(200, page)
    }
}
