//! GCP Cloud KMS over its REST API (feature `kms-gcp`, spec §2.4.2).
//!
//! Requests go to `https://cloudkms.googleapis.com/v1/…` (or `security.kms.endpoint`) with a
//! bearer token from `gcp_auth` (scope [`SCOPE`]), one request per call:
//!
//! | method | request | notes |
//! |---|---|---|
//! | `sign` | `POST {version}:asymmetricSign` `{"digest":{"sha256"},"digestCrc32c"}` | SHA-256 computed locally; DER out |
//! | `public_key` | `GET {version}/publicKey` | PEM SPKI → SEC1 point (EC) or SPKI DER (RSA) |
//! | `wrap` | `POST {key}:encrypt` `{"plaintext","additionalAuthenticatedData",…Crc32c}` | `key_version` = `cryptoKeyVersions/N` of the response `name` |
//! | `unwrap` | `POST {key}:decrypt` `{"ciphertext","additionalAuthenticatedData",…Crc32c}` | the service finds the version in the ciphertext |
//! | `list_keys` | `GET {keyRing}/cryptoKeys?pageSize=…&pageToken=…` | key rings of the configured keys, bounded |
//!
//! Integrity: every request carries the CRC32C of its payloads, and every response is checked
//! (`verified…Crc32c` must be true, the returned data must match its CRC32C). A mismatch means
//! corruption in transit; it fails the attempt as `Unavailable`, so the retry policy repeats
//! the request, as Google recommends.
//!
//! Key names (K-2): `sign` and `public_key` need a CryptoKeyVersion
//! (`projects/P/locations/L/keyRings/R/cryptoKeys/K/cryptoKeyVersions/N`); `decrypt` needs a
//! CryptoKey (`…/cryptoKeys/K`) because the service reads the version from the ciphertext.
//! A version name given to `wrap` or `unwrap` is refused with `InvalidKey` before any request:
//! encrypting under a version would write values this key id could never decrypt. Names are
//! checked against the resource pattern before they become part of a URL.
//!
//! Errors are classified by the `error.status` string of the JSON error body (the table of
//! §2.4.2, with `DEADLINE_EXCEEDED` as `Unavailable` per K-6, and `INVALID_ARGUMENT`
//! "Decryption failed…" on decrypt as `DecryptionFailed`); bodies without a status fall back
//! to the HTTP status. Transport failures are `Unavailable`.

use std::{
    collections::HashMap,
    fmt,
    sync::{Arc, Mutex, PoisonError},
};

use async_trait::async_trait;
use base64::{
    Engine as _,
    engine::general_purpose::{STANDARD, URL_SAFE},
};
use lango_crypto::{
    SecretBytes, SecretString,
    digest::sha256,
    provider::{KeyAlgorithm, PublicKeyInfo, Signature, SignatureAlgorithm},
};
use reqwest::{Method, Url};
use serde::Deserialize;
use serde_json::json;

use crate::{
    Error, KmsConfig,
    backend::{KeyRole, KeyUsage, KmsBackend, KmsProviderName, RemoteKeyInfo, Wrapped},
    error::{KmsError, KmsErrorKind},
    rest::{self, RestClient, TokenSource},
};

/// The public endpoint of Cloud KMS.
pub const DEFAULT_BASE_URL: &str = "https://cloudkms.googleapis.com";
/// The OAuth2 scope the token is requested for.
pub const SCOPE: &str = "https://www.googleapis.com/auth/cloudkms";
/// Largest plaintext and additional authenticated data `encrypt` accepts (64 KiB).
pub const MAX_PLAINTEXT: usize = 64 * 1024;
/// Page size of `cryptoKeys.list`.
const PAGE_SIZE: u32 = 100;
/// Most pages `list_keys` reads per key ring.
const MAX_PAGES: usize = 100;

const PROVIDER: &str = "gcp";

/// A parsed Cloud KMS resource name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct KeyName<'a> {
    /// `projects/P/locations/L/keyRings/R/cryptoKeys/K`.
    key: &'a str,
    /// `projects/P/locations/L/keyRings/R`.
    ring: &'a str,
    /// `N` of `…/cryptoKeyVersions/N`, when the name is a version.
    version: Option<&'a str>,
}

fn valid_segment(s: &str) -> bool {
    !s.is_empty()
        && s != "."
        && s != ".."
        && s.len() <= 128
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':'))
}

/// Parses `projects/P/locations/L/keyRings/R/cryptoKeys/K[/cryptoKeyVersions/N]`, refusing
/// anything else (so a key id can never smuggle a path, query or verb into the URL).
fn parse_name(name: &str) -> Option<KeyName<'_>> {
    let segs: Vec<&str> = name.split('/').collect();
    let fixed = [
        (0, "projects"),
        (2, "locations"),
        (4, "keyRings"),
        (6, "cryptoKeys"),
    ];
    if !(segs.len() == 8 || segs.len() == 10)
        || fixed.iter().any(|(i, lit)| segs[*i] != *lit)
        || [1, 3, 5, 7].iter().any(|i| !valid_segment(segs[*i]))
    {
        return None;
    }
    let version = if segs.len() == 10 {
        if segs[8] != "cryptoKeyVersions" || !valid_segment(segs[9]) {
            return None;
        }
        Some(segs[9])
    } else {
        None
    };
    // Byte offsets of the prefixes: the segments are ASCII and separated by one '/'.
    let prefix = |n: usize| segs[..n].iter().map(|s| s.len() + 1).sum::<usize>() - 1;
    Some(KeyName {
        key: &name[..prefix(8)],
        ring: &name[..prefix(6)],
        version,
    })
}

/// A `google.protobuf.Int64Value` as proto3 JSON writes it: a decimal string (numbers are
/// accepted too).
#[derive(Deserialize)]
#[serde(untagged)]
enum Int64 {
    Text(String),
    Number(u64),
}

impl Int64 {
    fn value(&self) -> Option<u64> {
        match self {
            Self::Text(s) => s.parse().ok(),
            Self::Number(n) => Some(*n),
        }
    }
}

fn crc(data: &[u8]) -> String {
    crc32c::crc32c(data).to_string()
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct SignResponse {
    signature: Option<String>,
    signature_crc32c: Option<Int64>,
    #[serde(default)]
    verified_digest_crc32c: bool,
    name: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct PublicKeyResponse {
    pem: Option<String>,
    pem_crc32c: Option<Int64>,
    algorithm: Option<String>,
    name: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct EncryptResponse {
    name: Option<String>,
    ciphertext: Option<String>,
    ciphertext_crc32c: Option<Int64>,
    #[serde(default)]
    verified_plaintext_crc32c: bool,
    #[serde(default)]
    verified_additional_authenticated_data_crc32c: bool,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct DecryptResponse {
    plaintext: Option<SecretText>,
    plaintext_crc32c: Option<Int64>,
}

/// A JSON string wiped on drop (decrypted plaintext in base64).
struct SecretText(SecretString);

impl<'de> Deserialize<'de> for SecretText {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d).map(|s| Self(SecretString::new(s)))
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ListResponse {
    #[serde(default)]
    crypto_keys: Vec<CryptoKey>,
    next_page_token: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct CryptoKey {
    name: String,
    purpose: Option<String>,
    primary: Option<CryptoKeyVersion>,
    version_template: Option<VersionTemplate>,
}

#[derive(Deserialize)]
struct CryptoKeyVersion {
    state: Option<String>,
    algorithm: Option<String>,
}

#[derive(Deserialize)]
struct VersionTemplate {
    algorithm: Option<String>,
}

#[derive(Deserialize)]
struct ErrorBody {
    error: Option<ErrorDetail>,
}

#[derive(Deserialize)]
struct ErrorDetail {
    code: Option<i64>,
    message: Option<String>,
    status: Option<String>,
}

/// The kind of a Cloud KMS error: by the canonical status string when the body has one
/// (§2.4.2 table, plus the K-6 deviation), else by the HTTP status.
fn classify(op: &str, status: Option<&str>, message: &str, http: u16) -> KmsErrorKind {
    match status {
        Some("PERMISSION_DENIED" | "UNAUTHENTICATED") => KmsErrorKind::AccessDenied,
        Some("NOT_FOUND") => KmsErrorKind::InvalidKey,
        Some("FAILED_PRECONDITION") => KmsErrorKind::KeyDisabled,
        Some("RESOURCE_EXHAUSTED") => KmsErrorKind::Throttled,
        Some("UNAVAILABLE" | "INTERNAL" | "DEADLINE_EXCEEDED") => KmsErrorKind::Unavailable,
        // The service words a ciphertext that does not authenticate (wrong key, wrong AAD,
        // corrupted) as "Decryption failed: …"; that is not a key problem.
        Some("INVALID_ARGUMENT") if op == "decrypt" && message.starts_with("Decryption failed") => {
            KmsErrorKind::DecryptionFailed
        }
        Some("INVALID_ARGUMENT") => KmsErrorKind::InvalidKey,
        Some(_) => KmsErrorKind::Other,
        None => match http {
            401 | 403 => KmsErrorKind::AccessDenied,
            404 => KmsErrorKind::InvalidKey,
            429 => KmsErrorKind::Throttled,
            500 | 502 | 503 | 504 => KmsErrorKind::Unavailable,
            _ => KmsErrorKind::Other,
        },
    }
}

/// The production token source: Application Default Credentials through `gcp_auth`.
pub struct GcpAuthTokens(Arc<dyn gcp_auth::TokenProvider>);

impl GcpAuthTokens {
    /// Discovers credentials the way `gcp_auth::provider` does: `GOOGLE_APPLICATION_CREDENTIALS`,
    /// the gcloud configuration, then the metadata server.
    pub async fn discover() -> Result<Self, gcp_auth::Error> {
        gcp_auth::provider().await.map(Self)
    }

    /// Uses an existing `gcp_auth` provider.
    pub fn new(provider: Arc<dyn gcp_auth::TokenProvider>) -> Self {
        Self(provider)
    }
}

impl fmt::Debug for GcpAuthTokens {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("GcpAuthTokens")
    }
}

#[async_trait]
impl TokenSource for GcpAuthTokens {
    async fn token(&self) -> Result<SecretString, KmsError> {
        match self.0.token(&[SCOPE]).await {
            Ok(t) => Ok(SecretString::new(t.as_str().to_owned())),
            Err(e) => {
                // A token endpoint that cannot be reached may come back; refused or missing
                // credentials will not, and must fail closed.
                let kind = match &e {
                    gcp_auth::Error::Http(..) => KmsErrorKind::Unavailable,
                    gcp_auth::Error::Other(what, _) if *what == "HTTP request failed" => {
                        KmsErrorKind::Unavailable
                    }
                    _ => KmsErrorKind::AccessDenied,
                };
                Err(KmsError::new(PROVIDER, "token", "", kind, e.to_string()).with_source(e))
            }
        }
    }
}

/// GCP Cloud KMS backend.
pub struct GcpKms {
    client: RestClient,
    base: String,
    signing_key_id: String,
    encryption_key_id: String,
    /// Signature algorithm per key version (versions are immutable), filled by `public_key`.
    algorithms: Mutex<HashMap<String, KeyAlgorithm>>,
}

impl fmt::Debug for GcpKms {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GcpKms")
            .field("base", &self.base)
            .field("signing_key_id", &self.signing_key_id)
            .field("encryption_key_id", &self.encryption_key_id)
            .finish_non_exhaustive()
    }
}

fn config_error(kind: KmsErrorKind, detail: &str) -> Error {
    Error::InvalidConfig {
        kind,
        message: format!("new GCP KMS provider: {detail}"),
    }
}

impl GcpKms {
    /// Builds the backend with Application Default Credentials (`gcp_auth`).
    ///
    /// Fails with `new GCP KMS provider: KMS invalid key` for an empty `keyId`, with an
    /// endpoint error for a plain-http endpoint without `allowInsecureEndpoint`, and with
    /// [`Error::Init`] (`AccessDenied`) when no credentials are found.
    pub async fn new(cfg: &KmsConfig) -> Result<Self, Error> {
        Self::check(cfg)?;
        let tokens = GcpAuthTokens::discover().await.map_err(|e| {
            Error::Init(
                KmsError::new(
                    PROVIDER,
                    "init",
                    cfg.key_id.as_str(),
                    KmsErrorKind::AccessDenied,
                    format!("no Google credentials: {e}"),
                )
                .with_source(e),
            )
        })?;
        Self::with_token_source(cfg, Arc::new(tokens))
    }

    /// Builds the backend with another token source (a fixed token in tests, or a token
    /// minted elsewhere). Applies the same checks as [`GcpKms::new`].
    pub fn with_token_source(cfg: &KmsConfig, tokens: Arc<dyn TokenSource>) -> Result<Self, Error> {
        let base = Self::check(cfg)?;
        let client = RestClient::new(PROVIDER, tokens, cfg.allow_insecure_endpoint)
            .map_err(|m| config_error(KmsErrorKind::Other, &m))?;
        Ok(Self {
            client,
            base,
            signing_key_id: cfg.default_key_id(KeyRole::Signing).to_owned(),
            encryption_key_id: cfg.default_key_id(KeyRole::Encryption).to_owned(),
            algorithms: Mutex::new(HashMap::new()),
        })
    }

    /// The checks done before any credential is looked up; returns the base URL.
    fn check(cfg: &KmsConfig) -> Result<String, Error> {
        if cfg.key_id.is_empty() {
            return Err(config_error(KmsErrorKind::InvalidKey, "KMS invalid key"));
        }
        if cfg.endpoint.trim().is_empty() {
            return Ok(DEFAULT_BASE_URL.to_owned());
        }
        rest::base_url(
            &cfg.endpoint,
            "security.kms.endpoint",
            cfg.allow_insecure_endpoint,
        )
        .map_err(|m| config_error(KmsErrorKind::Other, &m))
    }

    /// The base URL requests go to.
    pub fn base_url(&self) -> &str {
        &self.base
    }

    fn err(&self, op: &'static str, key_id: &str, kind: KmsErrorKind, msg: String) -> KmsError {
        self.client.error(op, key_id, kind, msg)
    }

    fn integrity(&self, op: &'static str, key_id: &str, what: &str) -> KmsError {
        self.err(
            op,
            key_id,
            KmsErrorKind::Unavailable,
            format!("integrity check failed: {what}"),
        )
    }

    fn parse<'a>(&self, op: &'static str, key_id: &'a str) -> Result<KeyName<'a>, KmsError> {
        parse_name(key_id).ok_or_else(|| {
            self.err(
                op,
                key_id,
                KmsErrorKind::InvalidKey,
                "not a Cloud KMS resource name (projects/P/locations/L/keyRings/R/cryptoKeys/K[/cryptoKeyVersions/N])".to_owned(),
            )
        })
    }

    fn need_version<'a>(&self, op: &'static str, key_id: &'a str) -> Result<KeyName<'a>, KmsError> {
        let name = self.parse(op, key_id)?;
        if name.version.is_none() {
            return Err(self.err(
                op,
                key_id,
                KmsErrorKind::InvalidKey,
                "signing needs a CryptoKeyVersion name (…/cryptoKeyVersions/N), not a CryptoKey (K-2)"
                    .to_owned(),
            ));
        }
        Ok(name)
    }

    fn need_key<'a>(&self, op: &'static str, key_id: &'a str) -> Result<KeyName<'a>, KmsError> {
        let name = self.parse(op, key_id)?;
        if name.version.is_some() {
            return Err(self.err(
                op,
                key_id,
                KmsErrorKind::InvalidKey,
                "decrypt needs a CryptoKey name (…/cryptoKeys/K), not a CryptoKeyVersion: the version is read from the ciphertext (K-2)"
                    .to_owned(),
            ));
        }
        Ok(name)
    }

    /// Sends one request and returns the body of a 2xx response; anything else is classified.
    async fn call(
        &self,
        op: &'static str,
        key_id: &str,
        method: Method,
        url: &str,
        body: Option<serde_json::Value>,
    ) -> Result<SecretBytes, KmsError> {
        let body = body.map(|v| v.to_string().into_bytes());
        let resp = self.client.send(op, key_id, method, url, body).await?;
        if resp.is_success() {
            return Ok(resp.body);
        }
        let parsed: Option<ErrorDetail> = serde_json::from_slice::<ErrorBody>(resp.body.expose())
            .ok()
            .and_then(|b| b.error);
        let (status, message, code) = match &parsed {
            Some(d) => (
                d.status.as_deref(),
                d.message.clone().unwrap_or_default(),
                d.code,
            ),
            None => (None, String::new(), None),
        };
        let kind = classify(op, status, &message, resp.status);
        let text = match (status, message.is_empty()) {
            (Some(s), false) => format!("{s} ({}): {message}", code.unwrap_or(resp.status.into())),
            (Some(s), true) => format!("{s} ({})", code.unwrap_or(resp.status.into())),
            (None, _) => format!("HTTP {} without a Cloud KMS error body", resp.status),
        };
        Err(rest::status_error(
            &self.client,
            op,
            key_id,
            kind,
            &resp,
            text,
        ))
    }

    fn decode(
        &self,
        op: &'static str,
        key_id: &str,
        field: &str,
        b64: &str,
    ) -> Result<Vec<u8>, KmsError> {
        STANDARD
            .decode(b64)
            .or_else(|_| URL_SAFE.decode(b64))
            .map_err(|_| {
                self.err(
                    op,
                    key_id,
                    KmsErrorKind::Other,
                    format!("malformed response: {field} is not base64"),
                )
            })
    }

    fn missing(&self, op: &'static str, key_id: &str, field: &str) -> KmsError {
        self.err(
            op,
            key_id,
            KmsErrorKind::Other,
            format!("malformed response: no {field}"),
        )
    }

    /// Checks a returned field against its CRC32C; the checksum must be present.
    fn check_crc(
        &self,
        op: &'static str,
        key_id: &str,
        field: &str,
        data: &[u8],
        sum: Option<&Int64>,
    ) -> Result<(), KmsError> {
        match sum.and_then(Int64::value) {
            Some(v) if v == u64::from(crc32c::crc32c(data)) => Ok(()),
            Some(_) => {
                Err(self.integrity(op, key_id, &format!("{field} does not match its CRC32C")))
            }
            None => Err(self.integrity(op, key_id, &format!("the response has no {field} CRC32C"))),
        }
    }

    async fn fetch_public_key(
        &self,
        op: &'static str,
        key_id: &str,
    ) -> Result<PublicKeyInfo, KmsError> {
        self.need_version(op, key_id)?;
        let url = format!("{}/v1/{key_id}/publicKey", self.base);
        let body = self.call(op, key_id, Method::GET, &url, None).await?;
        let r: PublicKeyResponse = self.client.json(op, key_id, body.expose())?;
        if let Some(name) = &r.name
            && name != key_id
        {
            return Err(self.err(
                op,
                key_id,
                KmsErrorKind::Other,
                format!("the response names another key version ({name})"),
            ));
        }
        let pem = r.pem.ok_or_else(|| self.missing(op, key_id, "pem"))?;
        self.check_crc(op, key_id, "pem", pem.as_bytes(), r.pem_crc32c.as_ref())?;
        let algorithm = r.algorithm.unwrap_or_default();
        let der = pem_to_der(&pem).ok_or_else(|| {
            self.err(
                op,
                key_id,
                KmsErrorKind::Other,
                "malformed response: pem is not a PEM public key".to_owned(),
            )
        })?;
        let info = spki_to_info(&algorithm, &der)
            .map_err(|m| self.err(op, key_id, KmsErrorKind::InvalidKey, m))?;
        self.algorithms
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(key_id.to_owned(), info.algorithm);
        Ok(info)
    }

    async fn key_algorithm(&self, key_id: &str) -> Result<KeyAlgorithm, KmsError> {
        let cached = self
            .algorithms
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(key_id)
            .copied();
        match cached {
            Some(a) => Ok(a),
            None => Ok(self.fetch_public_key("sign", key_id).await?.algorithm),
        }
    }

    async fn list_ring(&self, ring: &str, out: &mut Vec<RemoteKeyInfo>) -> Result<(), KmsError> {
        const OP: &str = "list-keys";
        let mut token: Option<String> = None;
        for _ in 0..MAX_PAGES {
            let mut url = Url::parse(&format!("{}/v1/{ring}/cryptoKeys", self.base))
                .map_err(|e| self.err(OP, ring, KmsErrorKind::Other, format!("bad URL: {e}")))?;
            {
                let mut q = url.query_pairs_mut();
                q.append_pair("pageSize", &PAGE_SIZE.to_string());
                if let Some(t) = &token {
                    q.append_pair("pageToken", t);
                }
            }
            let body = self.call(OP, ring, Method::GET, url.as_str(), None).await?;
            let page: ListResponse = self.client.json(OP, ring, body.expose())?;
            for k in page.crypto_keys {
                out.push(RemoteKeyInfo {
                    usage: match k.purpose.as_deref() {
                        Some("ENCRYPT_DECRYPT" | "ASYMMETRIC_DECRYPT" | "RAW_ENCRYPT_DECRYPT") => {
                            Some(KeyUsage::Encrypt)
                        }
                        Some("ASYMMETRIC_SIGN") => Some(KeyUsage::Sign),
                        _ => None,
                    },
                    algorithm: k
                        .primary
                        .as_ref()
                        .and_then(|p| p.algorithm.clone())
                        .or_else(|| k.version_template.and_then(|t| t.algorithm)),
                    enabled: k
                        .primary
                        .as_ref()
                        .and_then(|p| p.state.as_deref())
                        .map(|s| s == "ENABLED"),
                    ..RemoteKeyInfo::new(k.name)
                });
            }
            match page.next_page_token.filter(|t| !t.is_empty()) {
                Some(t) => token = Some(t),
                None => return Ok(()),
            }
        }
        Err(self.err(
            OP,
            ring,
            KmsErrorKind::Other,
            format!("more than {MAX_PAGES} pages of keys; listing stopped"),
        ))
    }
}

/// Extracts the DER of the first PEM block labelled `PUBLIC KEY`.
fn pem_to_der(pem: &str) -> Option<Vec<u8>> {
    const BEGIN: &str = "-----BEGIN PUBLIC KEY-----";
    const END: &str = "-----END PUBLIC KEY-----";
    let start = pem.find(BEGIN)? + BEGIN.len();
    let len = pem[start..].find(END)?;
    let b64: String = pem[start..start + len]
        .chars()
        .filter(|c| !c.is_ascii_whitespace())
        .collect();
    STANDARD.decode(b64).ok()
}

/// Converts an SPKI public key of the Cloud KMS `algorithm` into a [`PublicKeyInfo`].
fn spki_to_info(algorithm: &str, der: &[u8]) -> Result<PublicKeyInfo, String> {
    use k256::{elliptic_curve::sec1::ToSec1Point as _, pkcs8::DecodePublicKey as _};
    let bad = |curve: &str| format!("the {algorithm} public key is not a valid {curve} SPKI key");
    match algorithm {
        "EC_SIGN_P256_SHA256" => {
            let pk = p256::PublicKey::from_public_key_der(der).map_err(|_| bad("P-256"))?;
            Ok(PublicKeyInfo {
                algorithm: KeyAlgorithm::P256,
                bytes: pk.to_sec1_point(false).as_bytes().to_vec(),
            })
        }
        "EC_SIGN_SECP256K1_SHA256" => {
            let pk = k256::PublicKey::from_public_key_der(der).map_err(|_| bad("secp256k1"))?;
            Ok(PublicKeyInfo {
                algorithm: KeyAlgorithm::Secp256k1,
                bytes: pk.to_sec1_point(false).as_bytes().to_vec(),
            })
        }
        a if a.starts_with("RSA_") => Ok(PublicKeyInfo {
            algorithm: KeyAlgorithm::Rsa,
            bytes: der.to_vec(),
        }),
        other => Err(format!(
            "unsupported key algorithm {other:?} (lango uses EC_SIGN_P256_SHA256, EC_SIGN_SECP256K1_SHA256 or RSA keys)"
        )),
    }
}

#[async_trait]
impl KmsBackend for GcpKms {
    fn name(&self) -> KmsProviderName {
        KmsProviderName::GcpKms
    }

    fn signing_key_id(&self) -> &str {
        &self.signing_key_id
    }

    fn encryption_key_id(&self) -> &str {
        &self.encryption_key_id
    }

    /// `POST {version}:asymmetricSign` over SHA-256(`payload`). The first signature with a
    /// version also fetches its public key once, to learn the curve (versions are immutable).
    async fn sign(&self, key_id: &str, payload: &[u8]) -> Result<Signature, KmsError> {
        const OP: &str = "sign";
        let key_id = self.resolve_key_id(KeyRole::Signing, key_id);
        self.need_version(OP, key_id)?;
        let algorithm = match self.key_algorithm(key_id).await? {
            KeyAlgorithm::P256 => SignatureAlgorithm::EcdsaP256Sha256Der,
            KeyAlgorithm::Secp256k1 => SignatureAlgorithm::EcdsaSecp256k1Sha256Der,
            other => {
                return Err(self.err(
                    OP,
                    key_id,
                    KmsErrorKind::InvalidKey,
                    format!("{other:?} signing keys are not supported (use EC_SIGN_P256_SHA256 or EC_SIGN_SECP256K1_SHA256)"),
                ));
            }
        };
        let digest = sha256(payload);
        let body = json!({
            "digest": { "sha256": STANDARD.encode(digest) },
            "digestCrc32c": crc(&digest),
        });
        let url = format!("{}/v1/{key_id}:asymmetricSign", self.base);
        let resp = self
            .call(OP, key_id, Method::POST, &url, Some(body))
            .await?;
        let r: SignResponse = self.client.json(OP, key_id, resp.expose())?;
        if !r.verified_digest_crc32c {
            return Err(self.integrity(OP, key_id, "the service did not verify the digest CRC32C"));
        }
        if let Some(name) = &r.name
            && name != key_id
        {
            return Err(self.err(
                OP,
                key_id,
                KmsErrorKind::Other,
                format!("the response names another key version ({name})"),
            ));
        }
        let sig = r
            .signature
            .ok_or_else(|| self.missing(OP, key_id, "signature"))?;
        let bytes = self.decode(OP, key_id, "signature", &sig)?;
        self.check_crc(OP, key_id, "signature", &bytes, r.signature_crc32c.as_ref())?;
        Ok(Signature { algorithm, bytes })
    }

    async fn public_key(&self, key_id: &str) -> Result<PublicKeyInfo, KmsError> {
        let key_id = self.resolve_key_id(KeyRole::Signing, key_id);
        self.fetch_public_key("public-key", key_id).await
    }

    /// `POST {key}:encrypt` with `context` as additional authenticated data.
    async fn wrap(
        &self,
        key_id: &str,
        plaintext: &[u8],
        context: &[u8],
    ) -> Result<Wrapped, KmsError> {
        const OP: &str = "encrypt";
        let key_id = self.resolve_key_id(KeyRole::Encryption, key_id);
        let name = self.need_key(OP, key_id)?;
        if plaintext.len() > MAX_PLAINTEXT || context.len() > MAX_PLAINTEXT {
            return Err(self.err(
                OP,
                key_id,
                KmsErrorKind::Other,
                format!("plaintext and additional authenticated data are limited to {MAX_PLAINTEXT} bytes each"),
            ));
        }
        let mut body = json!({
            "plaintext": STANDARD.encode(plaintext),
            "plaintextCrc32c": crc(plaintext),
        });
        if !context.is_empty() {
            body["additionalAuthenticatedData"] = STANDARD.encode(context).into();
            body["additionalAuthenticatedDataCrc32c"] = crc(context).into();
        }
        let url = format!("{}/v1/{key_id}:encrypt", self.base);
        let resp = self
            .call(OP, key_id, Method::POST, &url, Some(body))
            .await?;
        let r: EncryptResponse = self.client.json(OP, key_id, resp.expose())?;
        if !r.verified_plaintext_crc32c {
            return Err(self.integrity(
                OP,
                key_id,
                "the service did not verify the plaintext CRC32C",
            ));
        }
        if !context.is_empty() && !r.verified_additional_authenticated_data_crc32c {
            return Err(self.integrity(
                OP,
                key_id,
                "the service did not verify the additional authenticated data CRC32C",
            ));
        }
        let ct = r
            .ciphertext
            .ok_or_else(|| self.missing(OP, key_id, "ciphertext"))?;
        let ciphertext = self.decode(OP, key_id, "ciphertext", &ct)?;
        self.check_crc(
            OP,
            key_id,
            "ciphertext",
            &ciphertext,
            r.ciphertext_crc32c.as_ref(),
        )?;
        if ciphertext.is_empty() {
            return Err(self.missing(OP, key_id, "ciphertext"));
        }
        let used = r.name.ok_or_else(|| self.missing(OP, key_id, "name"))?;
        let version = match parse_name(&used) {
            Some(KeyName {
                key,
                version: Some(v),
                ..
            }) if key == name.key => format!("cryptoKeyVersions/{v}"),
            _ => {
                return Err(self.err(
                    OP,
                    key_id,
                    KmsErrorKind::Other,
                    format!("the response names {used:?}, not a version of the requested key"),
                ));
            }
        };
        Ok(Wrapped {
            ciphertext,
            key_version: Some(version),
        })
    }

    /// `POST {key}:decrypt`. `key_version` is not sent: the service reads it from the
    /// ciphertext.
    async fn unwrap(
        &self,
        key_id: &str,
        ciphertext: &[u8],
        _key_version: Option<&str>,
        context: &[u8],
    ) -> Result<SecretBytes, KmsError> {
        const OP: &str = "decrypt";
        let key_id = self.resolve_key_id(KeyRole::Encryption, key_id);
        self.need_key(OP, key_id)?;
        let mut body = json!({
            "ciphertext": STANDARD.encode(ciphertext),
            "ciphertextCrc32c": crc(ciphertext),
        });
        if !context.is_empty() {
            body["additionalAuthenticatedData"] = STANDARD.encode(context).into();
            body["additionalAuthenticatedDataCrc32c"] = crc(context).into();
        }
        let url = format!("{}/v1/{key_id}:decrypt", self.base);
        let resp = self
            .call(OP, key_id, Method::POST, &url, Some(body))
            .await?;
        let r: DecryptResponse = self.client.json(OP, key_id, resp.expose())?;
        let text = r
            .plaintext
            .ok_or_else(|| self.missing(OP, key_id, "plaintext"))?;
        let plain = SecretBytes::new(self.decode(OP, key_id, "plaintext", text.0.expose())?);
        self.check_crc(
            OP,
            key_id,
            "plaintext",
            plain.expose(),
            r.plaintext_crc32c.as_ref(),
        )?;
        Ok(plain)
    }

    /// `cryptoKeys.list` under the key ring(s) of the configured signing and encryption keys.
    async fn list_keys(&self) -> Result<Vec<RemoteKeyInfo>, KmsError> {
        let mut rings: Vec<&str> = Vec::new();
        for id in [&self.signing_key_id, &self.encryption_key_id] {
            let name = self.parse("list-keys", id)?;
            if !rings.contains(&name.ring) {
                rings.push(name.ring);
            }
        }
        let mut out = Vec::new();
        for ring in rings {
            self.list_ring(ring, &mut out).await?;
        }
        Ok(out)
    }

    async fn close(&self) {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resource_names() {
        let v = "projects/p-1/locations/global/keyRings/r_1/cryptoKeys/k/cryptoKeyVersions/3";
        assert_eq!(
            parse_name(v),
            Some(KeyName {
                key: "projects/p-1/locations/global/keyRings/r_1/cryptoKeys/k",
                ring: "projects/p-1/locations/global/keyRings/r_1",
                version: Some("3"),
            })
        );
        let k = "projects/example.com:p/locations/eu/keyRings/r/cryptoKeys/k";
        assert_eq!(parse_name(k).map(|n| (n.key, n.version)), Some((k, None)));
        for bad in [
            "",
            "alias/x",
            "projects/p/locations/l/keyRings/r",
            "projects/p/locations/l/keyRings/r/cryptoKeys/",
            "projects/p/locations/l/keyRings/r/cryptoKeys/k/",
            "projects/p/locations/l/keyRings/r/cryptoKeys/k?x=1",
            "projects/p/locations/l/keyRings/r/cryptoKeys/k#f",
            "projects/p/locations/l/keyRings/../cryptoKeys/k",
            "projects/p/locations/l/keyRings/r/cryptoKeys/k/cryptoKeyVersions/1/x",
            "projects/p/locations/l/keyRings/r/cryptoKeys/k/versions/1",
            "Projects/p/locations/l/keyRings/r/cryptoKeys/k",
            "projects/p%2F/locations/l/keyRings/r/cryptoKeys/k",
        ] {
            assert_eq!(parse_name(bad), None, "{bad}");
        }
    }

    #[test]
    fn status_table() {
        use KmsErrorKind::*;
        let cases = [
            ("PERMISSION_DENIED", AccessDenied),
            ("UNAUTHENTICATED", AccessDenied),
            ("NOT_FOUND", InvalidKey),
            ("FAILED_PRECONDITION", KeyDisabled),
            ("RESOURCE_EXHAUSTED", Throttled),
            ("UNAVAILABLE", Unavailable),
            ("INTERNAL", Unavailable),
            ("INVALID_ARGUMENT", InvalidKey),
            ("DEADLINE_EXCEEDED", Unavailable),
            ("CANCELLED", Other),
            ("ABORTED", Other),
        ];
        for (status, kind) in cases {
            assert_eq!(classify("sign", Some(status), "m", 400), kind, "{status}");
        }
        assert_eq!(
            classify(
                "decrypt",
                Some("INVALID_ARGUMENT"),
                "Decryption failed: the ciphertext is invalid.",
                400
            ),
            DecryptionFailed
        );
        assert_eq!(
            classify(
                "encrypt",
                Some("INVALID_ARGUMENT"),
                "Decryption failed",
                400
            ),
            InvalidKey
        );
        for (http, kind) in [
            (401, AccessDenied),
            (403, AccessDenied),
            (404, InvalidKey),
            (429, Throttled),
            (502, Unavailable),
            (418, Other),
        ] {
            assert_eq!(classify("sign", None, "", http), kind, "{http}");
        }
    }

    #[test]
    fn int64_accepts_text_and_numbers() {
        let t: Int64 = serde_json::from_str("\"4294967295\"").unwrap();
        assert_eq!(t.value(), Some(4_294_967_295));
        let n: Int64 = serde_json::from_str("17").unwrap();
        assert_eq!(n.value(), Some(17));
        let bad: Int64 = serde_json::from_str("\"x\"").unwrap();
        assert_eq!(bad.value(), None);
        // The CRC32C check value of "123456789" (RFC 3720 B.4).
        assert_eq!(
            crc(b"123456789"),
            u32::from_str_radix("e3069283", 16).unwrap().to_string()
        );
    }
}
