//! Azure Key Vault over its REST API (feature `kms-azure`, spec §2.4.3).
//!
//! Requests go to `security.kms.azure.vaultUrl` with API version [`API_VERSION`] and a bearer
//! token from the Azure credential chain ([`AzureCredentialChain`], scope derived from the vault
//! host, `https://vault.azure.net/.default` for public-cloud vaults), one request per call:
//!
//! | method | request | notes |
//! |---|---|---|
//! | `sign` | `POST {vault}/keys/{name}/{version}/sign` `{"alg":"ES256","value"}` | SHA-256 computed locally; raw `r‖s`, 64 bytes |
//! | `public_key` | `GET {vault}/keys/{name}/{version}` | JWK → SEC1 point (EC) or SPKI DER (RSA) |
//! | `wrap` | `POST …/encrypt` `{"alg","value"}` | `RSA-OAEP` or `RSA-OAEP-256`; `key_version` = the version in the response `kid` |
//! | `unwrap` | `POST …/decrypt` `{"alg","value"}` | uses the version recorded by `wrap` (K-5) |
//! | `list_keys` | `GET {vault}/keys` | follows `nextLink` on the vault's own origin only, bounded |
//!
//! Values are base64url without padding (JWS). With `keyVersion` empty the version path
//! segment is left empty (`/keys/{name}//sign`), exactly as the official SDKs build it.
//!
//! Context binding: RSA-OAEP has no associated data, so `wrap` cannot bind `context` at the
//! service. The binding comes from the envelope: the data key wrapped here seals the value
//! with AES-256-GCM under the same associated data, so a wrapped key moved to another row or
//! purpose unwraps but its value does not open.
//!
//! Errors are classified by HTTP status: 401/403 `AccessDenied`, 429 `Throttled`, 503
//! `Unavailable` (parity), and 404 `InvalidKey`, 500/502/504 `Unavailable` (K-6); anything else
//! is `Other` with the service's message. A 403 whose inner error code is `KeyDisabled` (what
//! Key Vault answers to decrypt, sign and unwrap with a disabled key) is `KeyDisabled`. The server's `Retry-After` is kept in the message
//! and in the [`crate::rest::HttpStatus`] source ([`crate::rest::retry_after`]).

use std::{
    fmt,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
};

use async_trait::async_trait;
use azure_core::{credentials::TokenCredential, error::ErrorKind as AzErrorKind};
use base64::{
    Engine as _,
    alphabet::URL_SAFE,
    engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig},
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
    backend::{KeyRole, KmsBackend, KmsProviderName, RemoteKeyInfo, Wrapped},
    config::AzureEncryptionAlgorithm,
    error::{KmsError, KmsErrorKind},
    rest::{self, RestClient, TokenSource},
};

/// The Key Vault REST API version used for every request.
pub const API_VERSION: &str = "7.4";
/// The token scope of public-cloud vaults.
pub const DEFAULT_SCOPE: &str = "https://vault.azure.net/.default";
/// Most pages `list_keys` reads.
const MAX_PAGES: usize = 100;

const PROVIDER: &str = "azure";

/// base64url, no padding on output, padding tolerated on input.
const B64URL: GeneralPurpose = GeneralPurpose::new(
    &URL_SAFE,
    GeneralPurposeConfig::new()
        .with_encode_padding(false)
        .with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// The token scope for a vault: Key Vault and Managed HSM in the public and sovereign clouds
/// each have their own resource; unknown hosts use the public-cloud scope.
pub fn scope_for(vault_url: &str) -> String {
    let host = Url::parse(vault_url)
        .ok()
        .and_then(|u| u.host_str().map(str::to_ascii_lowercase))
        .unwrap_or_default();
    for suffix in [
        "vault.azure.cn",
        "vault.usgovcloudapi.net",
        "vault.microsoftazure.de",
        "managedhsm.azure.net",
        "managedhsm.azure.cn",
        "managedhsm.usgovcloudapi.net",
    ] {
        if host.ends_with(&format!(".{suffix}")) {
            return format!("https://{suffix}/.default");
        }
    }
    DEFAULT_SCOPE.to_owned()
}

/// Key Vault names: 1 to 127 letters, digits and dashes. Versions: letters and digits.
fn valid_name(s: &str) -> bool {
    (1..=127).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
}

fn valid_version(s: &str) -> bool {
    s.len() <= 64 && s.bytes().all(|b| b.is_ascii_alphanumeric())
}

/// The `(name, version)` of a key identifier `https://{vault}/keys/{name}/{version}`.
fn parse_kid(kid: &str) -> Option<(String, String)> {
    let url = Url::parse(kid).ok()?;
    let segs: Vec<&str> = url.path_segments()?.collect();
    match segs.as_slice() {
        ["keys", name, version]
            if valid_name(name) && !version.is_empty() && valid_version(version) =>
        {
            Some(((*name).to_owned(), (*version).to_owned()))
        }
        _ => None,
    }
}

#[derive(Deserialize)]
struct OpResult {
    kid: Option<String>,
    value: Option<SecretText>,
}

/// A JSON string wiped on drop (decrypted plaintext in base64url).
struct SecretText(SecretString);

impl<'de> Deserialize<'de> for SecretText {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d).map(|s| Self(SecretString::new(s)))
    }
}

#[derive(Deserialize)]
struct KeyBundle {
    key: Option<Jwk>,
}

#[derive(Deserialize)]
struct Jwk {
    kty: Option<String>,
    crv: Option<String>,
    x: Option<String>,
    y: Option<String>,
    n: Option<String>,
    e: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct KeyList {
    #[serde(default)]
    value: Vec<KeyItem>,
    next_link: Option<String>,
}

#[derive(Deserialize)]
struct KeyItem {
    kid: Option<String>,
    attributes: Option<Attributes>,
}

#[derive(Deserialize)]
struct Attributes {
    enabled: Option<bool>,
}

#[derive(Deserialize)]
struct ErrorBody {
    error: Option<ErrorDetail>,
}

#[derive(Deserialize)]
struct ErrorDetail {
    code: Option<String>,
    message: Option<String>,
    #[serde(rename = "innererror", alias = "innerError")]
    inner: Option<InnerError>,
}

#[derive(Deserialize)]
struct InnerError {
    code: Option<String>,
}

/// The kind of a Key Vault error response: a disabled key (`403` with the inner code
/// `KeyDisabled`, which Key Vault sends for decrypt, sign and unwrap with a disabled key) is
/// `KeyDisabled`; everything else by its HTTP status.
fn classify_response(status: u16, inner_code: Option<&str>) -> KmsErrorKind {
    match (status, inner_code) {
        (403, Some("KeyDisabled")) => KmsErrorKind::KeyDisabled,
        _ => classify(status),
    }
}

/// The kind of a Key Vault error response, by HTTP status (§2.4.3 plus K-6).
fn classify(status: u16) -> KmsErrorKind {
    match status {
        401 | 403 => KmsErrorKind::AccessDenied,
        429 => KmsErrorKind::Throttled,
        500 | 502 | 503 | 504 => KmsErrorKind::Unavailable,
        404 => KmsErrorKind::InvalidKey,
        _ => KmsErrorKind::Other,
    }
}

/// The production token source: the credentials Go's `DefaultAzureCredential` would try, in
/// its order. Sources whose environment is absent are left out at construction:
///
/// 1. environment: `ClientSecretCredential` from `AZURE_TENANT_ID`, `AZURE_CLIENT_ID`,
///    `AZURE_CLIENT_SECRET`;
/// 2. workload identity, when `AZURE_FEDERATED_TOKEN_FILE` is set;
/// 3. managed identity (user-assigned by `AZURE_CLIENT_ID` when set);
/// 4. developer tools: Azure CLI, then Azure Developer CLI.
///
/// The first source that yields a token is used for every later request. Until one has
/// worked, failures are `AccessDenied` (fail closed: no credentials is not an outage); after
/// that, I/O and connection failures and 5xx/429 answers of the token endpoint are transient.
pub struct AzureCredentialChain {
    sources: Vec<(&'static str, Arc<dyn TokenCredential>)>,
    chosen: AtomicUsize,
    scope: String,
}

impl fmt::Debug for AzureCredentialChain {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<&str> = self.sources.iter().map(|(n, _)| *n).collect();
        f.debug_struct("AzureCredentialChain")
            .field("sources", &names)
            .field("scope", &self.scope)
            .finish_non_exhaustive()
    }
}

const UNCHOSEN: usize = usize::MAX;

impl AzureCredentialChain {
    /// Builds the chain for tokens of `scope`. Nothing is contacted yet.
    pub fn from_environment(scope: impl Into<String>) -> Result<Self, azure_core::Error> {
        use azure_identity::{
            ClientSecretCredential, DeveloperToolsCredential, ManagedIdentityCredential,
            ManagedIdentityCredentialOptions, UserAssignedId, WorkloadIdentityCredential,
        };
        let env = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
        let mut sources: Vec<(&'static str, Arc<dyn TokenCredential>)> = Vec::new();
        if let (Some(tenant), Some(client), Some(secret)) = (
            env("AZURE_TENANT_ID"),
            env("AZURE_CLIENT_ID"),
            env("AZURE_CLIENT_SECRET"),
        ) {
            let cred = ClientSecretCredential::new(
                &tenant,
                client,
                azure_core::credentials::Secret::new(secret),
                None,
            )?;
            sources.push(("environment", cred));
        }
        if env("AZURE_FEDERATED_TOKEN_FILE").is_some() {
            // Incomplete workload-identity settings leave it out of the chain, as in Go.
            if let Ok(w) = WorkloadIdentityCredential::new(None) {
                sources.push(("workload-identity", w));
            }
        }
        let managed = ManagedIdentityCredential::new(Some(ManagedIdentityCredentialOptions {
            user_assigned_id: env("AZURE_CLIENT_ID").map(UserAssignedId::ClientId),
            ..Default::default()
        }));
        // Unsupported managed-identity environments are simply not part of the chain.
        if let Ok(m) = managed {
            sources.push(("managed-identity", m));
        }
        sources.push(("developer-tools", DeveloperToolsCredential::new(None)?));
        Ok(Self {
            sources,
            chosen: AtomicUsize::new(UNCHOSEN),
            scope: scope.into(),
        })
    }

    /// The names of the sources in the chain, in the order they are tried.
    pub fn source_names(&self) -> Vec<&'static str> {
        self.sources.iter().map(|(n, _)| *n).collect()
    }
}

/// The kind of a token failure of a source that has worked before.
fn azure_error_kind(e: &azure_core::Error) -> KmsErrorKind {
    match e.kind() {
        AzErrorKind::Io | AzErrorKind::Connection => KmsErrorKind::Unavailable,
        AzErrorKind::HttpResponse { status, .. } => match u16::from(*status) {
            429 => KmsErrorKind::Throttled,
            500..=599 => KmsErrorKind::Unavailable,
            _ => KmsErrorKind::AccessDenied,
        },
        _ => KmsErrorKind::AccessDenied,
    }
}

#[async_trait]
impl TokenSource for AzureCredentialChain {
    async fn token(&self) -> Result<SecretString, KmsError> {
        let scopes = [self.scope.as_str()];
        let chosen = self.chosen.load(Ordering::Relaxed);
        if let Some((name, cred)) = self.sources.get(chosen) {
            return match cred.get_token(&scopes, None).await {
                Ok(t) => Ok(SecretString::new(t.token.secret().to_owned())),
                Err(e) => Err(KmsError::new(
                    PROVIDER,
                    "token",
                    "",
                    azure_error_kind(&e),
                    format!("{name}: {e}"),
                )),
            };
        }
        let mut failures = Vec::new();
        for (i, (name, cred)) in self.sources.iter().enumerate() {
            match cred.get_token(&scopes, None).await {
                Ok(t) => {
                    self.chosen.store(i, Ordering::Relaxed);
                    return Ok(SecretString::new(t.token.secret().to_owned()));
                }
                Err(e) => failures.push(format!("{name}: {e}")),
            }
        }
        Err(KmsError::new(
            PROVIDER,
            "token",
            "",
            KmsErrorKind::AccessDenied,
            format!(
                "no Azure credential produced a token ({})",
                failures.join("; ")
            ),
        ))
    }
}

/// Azure Key Vault backend.
pub struct AzureKv {
    client: RestClient,
    vault: String,
    key_version: String,
    algorithm: AzureEncryptionAlgorithm,
    signing_key_id: String,
    encryption_key_id: String,
}

impl fmt::Debug for AzureKv {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AzureKv")
            .field("vault", &self.vault)
            .field("key_version", &self.key_version)
            .field("algorithm", &self.algorithm)
            .field("signing_key_id", &self.signing_key_id)
            .field("encryption_key_id", &self.encryption_key_id)
            .finish_non_exhaustive()
    }
}

fn config_error(kind: KmsErrorKind, detail: &str) -> Error {
    Error::InvalidConfig {
        kind,
        message: format!("new Azure KV provider: {detail}"),
    }
}

impl AzureKv {
    /// Builds the backend with the Azure credential chain ([`AzureCredentialChain`]).
    ///
    /// Fails with `new Azure KV provider: vault URL is required` (checked first), then
    /// `new Azure KV provider: KMS invalid key` for an empty `keyId`, then on a vault URL that
    /// is not https (plain http needs `allowInsecureEndpoint`) or an invalid `keyVersion`.
    pub async fn new(cfg: &KmsConfig) -> Result<Self, Error> {
        let vault = Self::check(cfg)?;
        let chain = AzureCredentialChain::from_environment(scope_for(&vault)).map_err(|e| {
            Error::Init(
                KmsError::new(
                    PROVIDER,
                    "init",
                    cfg.key_id.as_str(),
                    KmsErrorKind::AccessDenied,
                    format!("cannot build the Azure credential chain: {e}"),
                )
                .with_source(e),
            )
        })?;
        Self::with_token_source(cfg, Arc::new(chain))
    }

    /// Builds the backend with another token source (a fixed token in tests). Applies the same
    /// checks as [`AzureKv::new`].
    pub fn with_token_source(cfg: &KmsConfig, tokens: Arc<dyn TokenSource>) -> Result<Self, Error> {
        let vault = Self::check(cfg)?;
        let client = RestClient::new(PROVIDER, tokens, cfg.allow_insecure_endpoint)
            .map_err(|m| config_error(KmsErrorKind::Other, &m))?;
        Ok(Self {
            client,
            vault,
            key_version: cfg.azure.key_version.clone(),
            algorithm: cfg.azure.encryption_algorithm,
            signing_key_id: cfg.default_key_id(KeyRole::Signing).to_owned(),
            encryption_key_id: cfg.default_key_id(KeyRole::Encryption).to_owned(),
        })
    }

    fn check(cfg: &KmsConfig) -> Result<String, Error> {
        if cfg.azure.vault_url.trim().is_empty() {
            return Err(config_error(KmsErrorKind::Other, "vault URL is required"));
        }
        if cfg.key_id.is_empty() {
            return Err(config_error(KmsErrorKind::InvalidKey, "KMS invalid key"));
        }
        if !valid_version(&cfg.azure.key_version) {
            return Err(config_error(
                KmsErrorKind::InvalidKey,
                &format!(
                    "invalid security.kms.azure.keyVersion {:?} (letters and digits only)",
                    cfg.azure.key_version
                ),
            ));
        }
        rest::base_url(
            &cfg.azure.vault_url,
            "security.kms.azure.vaultUrl",
            cfg.allow_insecure_endpoint,
        )
        .map_err(|m| config_error(KmsErrorKind::Other, &m))
    }

    /// The vault URL requests go to.
    pub fn vault_url(&self) -> &str {
        &self.vault
    }

    fn err(&self, op: &'static str, key_id: &str, kind: KmsErrorKind, msg: String) -> KmsError {
        self.client.error(op, key_id, kind, msg)
    }

    fn check_name(&self, op: &'static str, key_id: &str) -> Result<(), KmsError> {
        if valid_name(key_id) {
            Ok(())
        } else {
            Err(self.err(
                op,
                key_id,
                KmsErrorKind::InvalidKey,
                "not a Key Vault key name (1 to 127 letters, digits and dashes)".to_owned(),
            ))
        }
    }

    /// `{vault}/keys/{name}/{version}[/{action}]?api-version=…`; an empty version leaves the
    /// segment empty, as the official SDKs do.
    fn key_url(&self, name: &str, version: &str, action: Option<&str>) -> String {
        match action {
            Some(a) => format!(
                "{}/keys/{name}/{version}/{a}?api-version={API_VERSION}",
                self.vault
            ),
            None => format!(
                "{}/keys/{name}/{version}?api-version={API_VERSION}",
                self.vault
            ),
        }
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
        let detail = serde_json::from_slice::<ErrorBody>(resp.body.expose())
            .ok()
            .and_then(|b| b.error);
        let inner = detail
            .as_ref()
            .and_then(|d| d.inner.as_ref())
            .and_then(|i| i.code.clone());
        let text = match detail {
            Some(d) => format!(
                "HTTP {} {}{}: {}",
                resp.status,
                d.code.unwrap_or_default(),
                inner
                    .as_deref()
                    .map(|c| format!(" ({c})"))
                    .unwrap_or_default(),
                d.message.unwrap_or_default()
            ),
            None => format!("HTTP {}", resp.status),
        };
        Err(rest::status_error(
            &self.client,
            op,
            key_id,
            classify_response(resp.status, inner.as_deref()),
            &resp,
            text,
        ))
    }

    /// One key operation (`sign`, `encrypt`, `decrypt`): `{"alg","value"}` in, `{"kid","value"}`
    /// out. Returns the decoded value and the version named by `kid`.
    async fn key_op(
        &self,
        op: &'static str,
        key_id: &str,
        version: &str,
        action: &str,
        alg: &str,
        value: &[u8],
    ) -> Result<(SecretBytes, String), KmsError> {
        self.check_name(op, key_id)?;
        if !valid_version(version) {
            return Err(self.err(
                op,
                key_id,
                KmsErrorKind::InvalidKey,
                format!("invalid key version {version:?}"),
            ));
        }
        let url = self.key_url(key_id, version, Some(action));
        let body = json!({ "alg": alg, "value": B64URL.encode(value) });
        let resp = self
            .call(op, key_id, Method::POST, &url, Some(body))
            .await?;
        let r: OpResult = self.client.json(op, key_id, resp.expose())?;
        let malformed = |what: &str| {
            self.err(
                op,
                key_id,
                KmsErrorKind::Other,
                format!("malformed response: {what}"),
            )
        };
        let kid = r.kid.ok_or_else(|| malformed("no kid"))?;
        let (name, used) =
            parse_kid(&kid).ok_or_else(|| malformed("kid is not a versioned key identifier"))?;
        if !name.eq_ignore_ascii_case(key_id)
            || (!version.is_empty() && !used.eq_ignore_ascii_case(version))
        {
            return Err(self.err(
                op,
                key_id,
                KmsErrorKind::Other,
                format!("the response names another key ({kid})"),
            ));
        }
        let text = r.value.ok_or_else(|| malformed("no value"))?;
        let out = B64URL
            .decode(text.0.expose())
            .map_err(|_| malformed("value is not base64url"))?;
        Ok((SecretBytes::new(out), used))
    }

    async fn list_page(
        &self,
        url: &str,
        out: &mut Vec<RemoteKeyInfo>,
    ) -> Result<Option<String>, KmsError> {
        const OP: &str = "list-keys";
        let body = self.call(OP, "", Method::GET, url, None).await?;
        let page: KeyList = self.client.json(OP, "", body.expose())?;
        for item in page.value {
            let Some(name) = item.kid.as_deref().and_then(|kid| {
                let u = Url::parse(kid).ok()?;
                let segs: Vec<String> = u.path_segments()?.map(str::to_owned).collect();
                match segs.as_slice() {
                    [keys, name] if keys == "keys" => Some(name.clone()),
                    _ => None,
                }
            }) else {
                continue;
            };
            out.push(RemoteKeyInfo {
                enabled: item.attributes.and_then(|a| a.enabled),
                ..RemoteKeyInfo::new(name)
            });
        }
        Ok(page.next_link.filter(|l| !l.is_empty()))
    }
}

/// DER of a length.
fn der_len(n: usize, out: &mut Vec<u8>) {
    if n < 0x80 {
        out.push(n as u8);
    } else {
        let bytes = n.to_be_bytes();
        let skip = bytes.iter().take_while(|b| **b == 0).count();
        out.push(0x80 | (bytes.len() - skip) as u8);
        out.extend_from_slice(&bytes[skip..]);
    }
}

fn der_tlv(tag: u8, content: &[u8], out: &mut Vec<u8>) {
    out.push(tag);
    der_len(content.len(), out);
    out.extend_from_slice(content);
}

/// A positive DER INTEGER from big-endian magnitude bytes.
fn der_uint(bytes: &[u8], out: &mut Vec<u8>) {
    let trimmed: &[u8] = match bytes.iter().position(|b| *b != 0) {
        Some(i) => &bytes[i..],
        None => &[0],
    };
    let mut content = Vec::with_capacity(trimmed.len() + 1);
    if trimmed[0] & 0x80 != 0 {
        content.push(0);
    }
    content.extend_from_slice(trimmed);
    der_tlv(0x02, &content, out);
}

/// `SubjectPublicKeyInfo` DER of the RSA public key `(n, e)`.
fn rsa_spki(n: &[u8], e: &[u8]) -> Vec<u8> {
    // AlgorithmIdentifier { rsaEncryption (1.2.840.113549.1.1.1), NULL }
    const ALG: [u8; 15] = [
        0x30, 0x0d, 0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01, 0x05, 0x00,
    ];
    let mut ints = Vec::new();
    der_uint(n, &mut ints);
    der_uint(e, &mut ints);
    let mut rsa_key = Vec::new();
    der_tlv(0x30, &ints, &mut rsa_key);
    let mut bits = vec![0u8];
    bits.extend_from_slice(&rsa_key);
    let mut body = ALG.to_vec();
    der_tlv(0x03, &bits, &mut body);
    let mut out = Vec::new();
    der_tlv(0x30, &body, &mut out);
    out
}

/// Converts a JWK into a [`PublicKeyInfo`]: EC keys as uncompressed SEC1 points (validated on
/// the curve), RSA keys as SPKI DER.
fn jwk_to_info(jwk: &Jwk) -> Result<PublicKeyInfo, String> {
    let field = |v: &Option<String>, name: &str| -> Result<Vec<u8>, String> {
        let s = v.as_deref().ok_or_else(|| format!("JWK has no {name}"))?;
        B64URL
            .decode(s)
            .map_err(|_| format!("JWK {name} is not base64url"))
    };
    match jwk.kty.as_deref() {
        Some("EC" | "EC-HSM") => {
            let (x, y) = (field(&jwk.x, "x")?, field(&jwk.y, "y")?);
            if x.len() > 32 || y.len() > 32 {
                return Err("JWK coordinates longer than 32 bytes".to_owned());
            }
            let mut point = vec![0x04];
            for c in [&x, &y] {
                point.extend(std::iter::repeat_n(0, 32 - c.len()));
                point.extend_from_slice(c);
            }
            let algorithm = match jwk.crv.as_deref() {
                Some("P-256") => {
                    p256::PublicKey::from_sec1_bytes(&point)
                        .map_err(|_| "JWK is not a point on P-256".to_owned())?;
                    KeyAlgorithm::P256
                }
                Some("P-256K" | "SECP256K1") => {
                    k256::PublicKey::from_sec1_bytes(&point)
                        .map_err(|_| "JWK is not a point on secp256k1".to_owned())?;
                    KeyAlgorithm::Secp256k1
                }
                other => return Err(format!("unsupported EC curve {other:?}")),
            };
            Ok(PublicKeyInfo {
                algorithm,
                bytes: point,
            })
        }
        Some("RSA" | "RSA-HSM") => {
            let (n, e) = (field(&jwk.n, "n")?, field(&jwk.e, "e")?);
            if n.is_empty() || e.is_empty() {
                return Err("JWK has an empty RSA modulus or exponent".to_owned());
            }
            Ok(PublicKeyInfo {
                algorithm: KeyAlgorithm::Rsa,
                bytes: rsa_spki(&n, &e),
            })
        }
        other => Err(format!("unsupported key type {other:?}")),
    }
}

#[async_trait]
impl KmsBackend for AzureKv {
    fn name(&self) -> KmsProviderName {
        KmsProviderName::AzureKv
    }

    fn signing_key_id(&self) -> &str {
        &self.signing_key_id
    }

    fn encryption_key_id(&self) -> &str {
        &self.encryption_key_id
    }

    /// `ES256` over SHA-256(`payload`): raw `r‖s`, 64 bytes, as returned.
    async fn sign(&self, key_id: &str, payload: &[u8]) -> Result<Signature, KmsError> {
        const OP: &str = "sign";
        let key_id = self.resolve_key_id(KeyRole::Signing, key_id);
        let digest = sha256(payload);
        let (sig, _) = self
            .key_op(OP, key_id, &self.key_version, "sign", "ES256", &digest)
            .await?;
        if sig.len() != 64 {
            return Err(self.err(
                OP,
                key_id,
                KmsErrorKind::Other,
                format!(
                    "malformed response: an ES256 signature has 64 bytes, got {}",
                    sig.len()
                ),
            ));
        }
        Ok(Signature {
            algorithm: SignatureAlgorithm::EcdsaP256Sha256Raw,
            bytes: sig.expose().to_vec(),
        })
    }

    async fn public_key(&self, key_id: &str) -> Result<PublicKeyInfo, KmsError> {
        const OP: &str = "public-key";
        let key_id = self.resolve_key_id(KeyRole::Signing, key_id);
        self.check_name(OP, key_id)?;
        let url = self.key_url(key_id, &self.key_version, None);
        let body = self.call(OP, key_id, Method::GET, &url, None).await?;
        let bundle: KeyBundle = self.client.json(OP, key_id, body.expose())?;
        let jwk = bundle.key.ok_or_else(|| {
            self.err(
                OP,
                key_id,
                KmsErrorKind::Other,
                "malformed response: no key".to_owned(),
            )
        })?;
        jwk_to_info(&jwk).map_err(|m| self.err(OP, key_id, KmsErrorKind::InvalidKey, m))
    }

    /// Encrypts with `RSA-OAEP` or `RSA-OAEP-256` under the configured version (latest when
    /// empty) and records the version the vault used. `context` is not sent: RSA-OAEP has no
    /// associated data (see the module documentation for where the binding comes from).
    async fn wrap(
        &self,
        key_id: &str,
        plaintext: &[u8],
        _context: &[u8],
    ) -> Result<Wrapped, KmsError> {
        const OP: &str = "encrypt";
        let key_id = self.resolve_key_id(KeyRole::Encryption, key_id);
        let (ct, used) = self
            .key_op(
                OP,
                key_id,
                &self.key_version,
                "encrypt",
                self.algorithm.as_str(),
                plaintext,
            )
            .await?;
        if ct.is_empty() {
            return Err(self.err(
                OP,
                key_id,
                KmsErrorKind::Other,
                "malformed response: empty ciphertext".to_owned(),
            ));
        }
        Ok(Wrapped {
            ciphertext: ct.expose().to_vec(),
            key_version: Some(used),
        })
    }

    /// Decrypts with the version `wrap` recorded, so rotation does not strand old values (K-5);
    /// without one (Go-written blobs) the configured version is used.
    async fn unwrap(
        &self,
        key_id: &str,
        ciphertext: &[u8],
        key_version: Option<&str>,
        _context: &[u8],
    ) -> Result<SecretBytes, KmsError> {
        const OP: &str = "decrypt";
        let key_id = self.resolve_key_id(KeyRole::Encryption, key_id);
        let version = key_version
            .filter(|v| !v.is_empty())
            .unwrap_or(&self.key_version);
        let (plain, _) = self
            .key_op(
                OP,
                key_id,
                version,
                "decrypt",
                self.algorithm.as_str(),
                ciphertext,
            )
            .await?;
        Ok(plain)
    }

    /// `GET {vault}/keys`, following `nextLink` while it stays on the vault's origin.
    async fn list_keys(&self) -> Result<Vec<RemoteKeyInfo>, KmsError> {
        const OP: &str = "list-keys";
        let origin = rest::origin(&self.vault);
        let mut url = format!(
            "{}/keys?api-version={API_VERSION}&maxresults=25",
            self.vault
        );
        let mut out = Vec::new();
        for _ in 0..MAX_PAGES {
            match self.list_page(&url, &mut out).await? {
                None => return Ok(out),
                Some(next) => {
                    if origin.is_none() || rest::origin(&next) != origin {
                        return Err(self.err(
                            OP,
                            "",
                            KmsErrorKind::Other,
                            format!("nextLink {next:?} leaves the vault; listing stopped"),
                        ));
                    }
                    url = next;
                }
            }
        }
        Err(self.err(
            OP,
            "",
            KmsErrorKind::Other,
            format!("more than {MAX_PAGES} pages of keys; listing stopped"),
        ))
    }

    async fn close(&self) {}
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A credential that fails its first `fail_first` calls with `kind`, then succeeds.
    #[derive(Debug)]
    struct Scripted {
        calls: std::sync::atomic::AtomicU32,
        fail_first: u32,
        kind: fn() -> AzErrorKind,
        token: &'static str,
    }

    #[async_trait]
    impl TokenCredential for Scripted {
        async fn get_token(
            &self,
            scopes: &[&str],
            _: Option<azure_core::credentials::TokenRequestOptions<'_>>,
        ) -> azure_core::Result<azure_core::credentials::AccessToken> {
            assert_eq!(scopes, ["https://vault.azure.net/.default"]);
            let n = self.calls.fetch_add(1, Ordering::SeqCst);
            if n < self.fail_first {
                return Err((self.kind)().into_error());
            }
            Ok(azure_core::credentials::AccessToken::new(
                self.token,
                azure_core::time::OffsetDateTime::now_utc(),
            ))
        }
    }

    fn scripted(fail_first: u32, kind: fn() -> AzErrorKind, token: &'static str) -> Arc<Scripted> {
        Arc::new(Scripted {
            calls: Default::default(),
            fail_first,
            kind,
            token,
        })
    }

    #[tokio::test]
    async fn the_chain_sticks_to_the_first_source_that_works() {
        let never = scripted(u32::MAX, || AzErrorKind::Credential, "-");
        let flaky = scripted(0, || AzErrorKind::Io, "t-2");
        let chain = AzureCredentialChain {
            sources: vec![("first", never.clone()), ("second", flaky.clone())],
            chosen: AtomicUsize::new(UNCHOSEN),
            scope: DEFAULT_SCOPE.to_owned(),
        };
        assert_eq!(chain.token().await.unwrap().expose(), "t-2");
        assert_eq!(chain.token().await.unwrap().expose(), "t-2");
        // The failing source was tried once, before the chain settled.
        assert_eq!(never.calls.load(Ordering::SeqCst), 1);
        assert_eq!(flaky.calls.load(Ordering::SeqCst), 2);
        assert!(!format!("{chain:?}").contains("t-2"));

        // Nothing works: fail closed, naming every source.
        let chain = AzureCredentialChain {
            sources: vec![
                ("first", scripted(u32::MAX, || AzErrorKind::Credential, "-")),
                ("second", scripted(u32::MAX, || AzErrorKind::Io, "-")),
            ],
            chosen: AtomicUsize::new(UNCHOSEN),
            scope: DEFAULT_SCOPE.to_owned(),
        };
        let e = chain.token().await.unwrap_err();
        assert_eq!(e.kind, KmsErrorKind::AccessDenied);
        assert!(
            e.message.contains("first:") && e.message.contains("second:"),
            "{e}"
        );

        // A chosen source that now cannot be reached is an outage, not a refusal.
        let chain = AzureCredentialChain {
            sources: vec![("only", scripted(u32::MAX, || AzErrorKind::Io, "-"))],
            chosen: AtomicUsize::new(0),
            scope: DEFAULT_SCOPE.to_owned(),
        };
        let e = chain.token().await.unwrap_err();
        assert_eq!(e.kind, KmsErrorKind::Unavailable);
        assert!(e.message.starts_with("only: "), "{e}");
        assert_eq!(
            azure_error_kind(&AzErrorKind::Io.into_error()),
            KmsErrorKind::Unavailable
        );
        assert_eq!(
            azure_error_kind(&AzErrorKind::Credential.into_error()),
            KmsErrorKind::AccessDenied
        );
    }

    #[test]
    fn status_table() {
        use KmsErrorKind::*;
        for (status, kind) in [
            (401, AccessDenied),
            (403, AccessDenied),
            (429, Throttled),
            (503, Unavailable),
            (404, InvalidKey),
            (500, Unavailable),
            (502, Unavailable),
            (504, Unavailable),
            (400, Other),
            (409, Other),
        ] {
            assert_eq!(classify(status), kind, "{status}");
            assert_eq!(classify_response(status, None), kind, "{status}");
        }
        // A disabled key is told apart from a denied caller by the inner error code.
        assert_eq!(classify_response(403, Some("KeyDisabled")), KeyDisabled);
        assert_eq!(
            classify_response(403, Some("ForbiddenByRbac")),
            AccessDenied
        );
        assert_eq!(classify_response(401, Some("KeyDisabled")), AccessDenied);
    }

    #[test]
    fn kids_and_names() {
        assert_eq!(
            parse_kid("https://v.vault.azure.net/keys/my-key/0123abcd"),
            Some(("my-key".to_owned(), "0123abcd".to_owned()))
        );
        for bad in [
            "https://v.vault.azure.net/keys/my-key",
            "https://v.vault.azure.net/keys/my-key/",
            "https://v.vault.azure.net/secrets/my-key/01",
            "https://v.vault.azure.net/keys/my_key/01",
            "not a url",
        ] {
            assert_eq!(parse_kid(bad), None, "{bad}");
        }
        assert!(valid_name("a-1"));
        assert!(!valid_name(""));
        assert!(!valid_name("a/b"));
        assert!(!valid_name(&"k".repeat(128)));
        assert!(valid_version(""));
        assert!(!valid_version("../x"));
    }

    #[test]
    fn scopes_follow_the_cloud() {
        assert_eq!(scope_for("https://v.vault.azure.net"), DEFAULT_SCOPE);
        assert_eq!(
            scope_for("https://v.vault.azure.cn"),
            "https://vault.azure.cn/.default"
        );
        assert_eq!(
            scope_for("https://h.managedhsm.azure.net"),
            "https://managedhsm.azure.net/.default"
        );
        assert_eq!(scope_for("http://127.0.0.1:8080"), DEFAULT_SCOPE);
    }

    #[test]
    fn rsa_spki_encoding() {
        // n with the high bit set gets a leading zero; e = 65537.
        let n = [0xc0u8; 256];
        let spki = rsa_spki(&n, &[1, 0, 1]);
        assert_eq!(&spki[..4], &[0x30, 0x82, 0x01, 0x22]);
        assert_eq!(spki.len(), 0x122 + 4);
        assert_eq!(&spki[spki.len() - 5..], &[0x02, 0x03, 0x01, 0x00, 0x01]);
    }
}
