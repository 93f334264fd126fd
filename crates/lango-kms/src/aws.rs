//! AWS KMS backend (feature `kms-aws`, spec §2.4.1), built on `aws-sdk-kms`.
//!
//! ## Construction
//!
//! [`AwsKms::new`]:
//! 1. rejects an empty default key (`security.kms.keyId`, or both `signingKeyId` and
//!    `encryptionKeyId` unset) with `new AWS KMS provider: KMS invalid key` (kind `InvalidKey`);
//! 2. rejects an `endpoint` that is not `https://…`, or `http://…` unless
//!    `allowInsecureEndpoint` is set (K-12; the same rule as [`KmsConfig::validate`], enforced
//!    again here because a caller may skip validation);
//! 3. loads the SDK default configuration chain (environment, shared profile, web identity,
//!    ECS/IMDS) within a budget of 10 s ([`CONFIG_LOAD_BUDGET`]); credentials themselves are
//!    resolved lazily on the first call, with the same 10 s budget per load;
//!    `security.kms.region` overrides the region when non-empty, and construction fails when
//!    no region can be found at all (the SDK would otherwise fail every call);
//! 4. replaces the service base URL with `endpoint` when it is non-empty (local test servers);
//! 5. disables the SDK's own retries (one attempt per call): [`crate::RetryPolicy`], applied by
//!    [`crate::KmsProvider`], is the only retry layer (K-6; Go stacked both, multiplying the
//!    attempts).
//!
//! ## Operations
//!
//! - **sign**: `Sign` with `ECDSA_SHA_256` and `MessageType = RAW`: AWS hashes the payload with
//!   SHA-256 once. RAW messages are limited to 1..=4096 bytes; anything else is refused before
//!   the call (kind `Other`). The DER signature is returned as received, labelled
//!   [`SignatureAlgorithm::EcdsaP256Sha256Der`] or
//!   [`SignatureAlgorithm::EcdsaSecp256k1Sha256Der`] after the key's spec, which is read once
//!   per key id with `GetPublicKey` and cached (read again when `Sign` reports another key
//!   than `GetPublicKey` did, i.e. an alias was moved). The curve is taken from `KeySpec`,
//!   else the deprecated `CustomerMasterKeySpec` (the only one moto reports), else the SPKI. Only `SIGN_VERIFY` keys of spec `ECC_NIST_P256` or
//!   `ECC_SECG_P256K1` are accepted (others: `InvalidKey`).
//! - **public_key**: `GetPublicKey`; the SPKI DER is parsed for the key's curve and returned as
//!   an uncompressed SEC1 point.
//! - **wrap**: `Encrypt` with `SYMMETRIC_DEFAULT`; plaintext limited to 1..=4096 bytes, checked
//!   before the call. A non-empty `context` becomes the KMS encryption context
//!   `{"lango:aad": base64(context)}` (standard alphabet, padded; [`ENCRYPTION_CONTEXT_KEY`]):
//!   AWS authenticates it and `Decrypt` succeeds only with the same map. An empty `context`
//!   sends no encryption context at all, which is what the Go node did, so its headerless
//!   blobs decrypt through [`crate::KmsProvider::decrypt_legacy`].
//! - **unwrap**: `Decrypt` with `SYMMETRIC_DEFAULT`, the resolved `KeyId` (a blob of another
//!   key then fails instead of being decrypted with whatever key it names) and the same
//!   encryption context. Blobs outside 1..=6144 bytes are refused before the call
//!   (`DecryptionFailed`). `key_version` is ignored: the AWS blob is self-describing, and
//!   [`KmsBackend::wrap`] reports none.
//! - **list_keys**: `ListKeys` and `ListAliases`, 100 per page, at most [`MAX_LISTED_KEYS`]
//!   keys and [`MAX_LISTED_ALIASES`] aliases; each key is reported by ARN with its aliases.
//! - **close**: nothing to release (the HTTP client closes its connections when dropped).
//!
//! ## Errors
//!
//! Every failure is a [`KmsError`] with provider `aws`, op `sign` / `encrypt` / `decrypt` /
//! `public-key` / `list-keys`, the resolved key id, and a kind taken from the SDK's error
//! *code* (never from message text):
//!
//! | code | kind |
//! |---|---|
//! | `AccessDeniedException`, and the authentication failures `UnrecognizedClientException`, `InvalidSignatureException`, `IncompleteSignature`, `MissingAuthenticationToken`, `ExpiredTokenException` | `AccessDenied` |
//! | `DisabledException`, `KMSInvalidStateException` | `KeyDisabled` |
//! | `NotFoundException`, `InvalidKeyUsageException`, `InvalidArnException`, `UnsupportedOperationException` | `InvalidKey` |
//! | `ThrottlingException`, `Throttling`, `ThrottledException`, `TooManyRequestsException`, `RequestLimitExceeded` | `Throttled` |
//! | `ServiceUnavailableException`, `KMSInternalException`, `DependencyTimeoutException`, `KeyUnavailableException`, `InternalFailure`, `InternalServerError` | `Unavailable` |
//! | `InvalidCiphertextException`, `IncorrectKeyException` | `DecryptionFailed` |
//! | any other code (or none): HTTP 429 | `Throttled` |
//! | any other code (or none): HTTP 500, 502, 503, 504 | `Unavailable` |
//! | any other code | `Other` |
//!
//! Requests that got no answer: SDK timeouts and dispatch failures (connection refused or
//! reset, dropped connection, DNS) are `Unavailable`; credential loading that timed out or
//! failed in its provider is `Unavailable`, while no credentials at all or an invalid
//! credential configuration is `AccessDenied`; an invalid request the SDK refused to build or
//! send is `Other`. The message is `<code>: <service message>` or the SDK's error chain; the
//! SDK error is kept as the source. Neither ever contains credentials, plaintext or keys.

use std::{
    collections::{BTreeMap, HashMap},
    fmt,
    sync::{Mutex, PoisonError},
    time::Duration,
};

use async_trait::async_trait;
use aws_config::{BehaviorVersion, Region, identity::IdentityCache, retry::RetryConfig};
use aws_credential_types::provider::error::CredentialsError;
use aws_sdk_kms::{
    Client,
    error::{DisplayErrorContext, ProvideErrorMetadata, SdkError},
    primitives::Blob,
    types::{EncryptionAlgorithmSpec, KeySpec, KeyUsageType, MessageType, SigningAlgorithmSpec},
};
use base64::Engine as _;
use lango_crypto::{
    SecretBytes,
    provider::{KeyAlgorithm, PublicKeyInfo, Signature, SignatureAlgorithm},
};

use crate::{
    Error,
    backend::{KeyRole, KmsBackend, KmsProviderName, RemoteKeyInfo, Wrapped},
    config::KmsConfig,
    error::{KmsError, KmsErrorKind},
};

/// The short provider name in every [`KmsError`].
const PROVIDER: &str = "aws";

/// Largest RAW message `Sign` accepts.
pub const MAX_SIGN_MESSAGE_LEN: usize = 4096;
/// Largest plaintext `Encrypt` accepts.
pub const MAX_PLAINTEXT_LEN: usize = 4096;
/// Largest ciphertext blob `Decrypt` accepts.
pub const MAX_CIPHERTEXT_LEN: usize = 6144;
/// Budget for loading the SDK configuration, and for each credentials load.
pub const CONFIG_LOAD_BUDGET: Duration = Duration::from_secs(10);
/// Most keys [`KmsBackend::list_keys`] reports.
pub const MAX_LISTED_KEYS: usize = 1000;
/// Most aliases [`KmsBackend::list_keys`] reads.
pub const MAX_LISTED_ALIASES: usize = 1000;
/// The encryption-context key that carries the base64 of the wrap context.
pub const ENCRYPTION_CONTEXT_KEY: &str = "lango:aad";
/// Page size of `ListKeys` and `ListAliases`.
const PAGE_SIZE: i32 = 100;

/// What a signing key is, as far as [`AwsKms::sign`](KmsBackend::sign) needs to know.
#[derive(Debug, Clone)]
struct SigningKey {
    /// The key id `GetPublicKey` reported, taken out of its ARN (empty if it reported none).
    key_uuid: String,
    /// Its curve.
    curve: KeyAlgorithm,
    /// Its public key, uncompressed SEC1.
    point: Vec<u8>,
}

/// The AWS KMS backend. See the [module documentation](self).
pub struct AwsKms {
    client: Client,
    region: String,
    endpoint: Option<String>,
    signing_key_id: String,
    encryption_key_id: String,
    signing_keys: Mutex<HashMap<String, SigningKey>>,
}

impl fmt::Debug for AwsKms {
    // Never prints the SDK configuration (it holds the credentials provider).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AwsKms")
            .field("region", &self.region)
            .field("endpoint", &self.endpoint)
            .field("signing_key_id", &self.signing_key_id)
            .field("encryption_key_id", &self.encryption_key_id)
            .finish_non_exhaustive()
    }
}

fn invalid_config(kind: KmsErrorKind, message: impl fmt::Display) -> Error {
    Error::InvalidConfig {
        kind,
        message: format!("new AWS KMS provider: {message}"),
    }
}

/// Checks `security.kms.endpoint` (K-12).
fn check_endpoint(endpoint: &str, allow_insecure: bool) -> Result<(), Error> {
    let scheme = endpoint
        .split_once("://")
        .map(|(s, _)| s.to_ascii_lowercase());
    match scheme.as_deref() {
        Some("https") => Ok(()),
        Some("http") if allow_insecure => Ok(()),
        Some("http") => Err(invalid_config(
            KmsErrorKind::Other,
            format_args!(
                "security.kms.endpoint uses plain http:// ({endpoint}); set security.kms.allowInsecureEndpoint to allow it (tests only)"
            ),
        )),
        _ => Err(invalid_config(
            KmsErrorKind::Other,
            format_args!("security.kms.endpoint must be an https:// URL, got {endpoint:?}"),
        )),
    }
}

impl AwsKms {
    /// Builds the backend from `security.kms` (see the [module documentation](self)). Loads the
    /// SDK configuration but makes no KMS call.
    pub async fn new(cfg: &KmsConfig) -> Result<Self, Error> {
        let signing_key_id = cfg.default_key_id(KeyRole::Signing).to_owned();
        let encryption_key_id = cfg.default_key_id(KeyRole::Encryption).to_owned();
        if signing_key_id.is_empty() && encryption_key_id.is_empty() {
            return Err(invalid_config(
                KmsErrorKind::InvalidKey,
                KmsErrorKind::InvalidKey
                    .sentinel()
                    .unwrap_or("KMS invalid key"),
            ));
        }
        let endpoint = (!cfg.endpoint.is_empty()).then(|| cfg.endpoint.clone());
        if let Some(e) = &endpoint {
            check_endpoint(e, cfg.allow_insecure_endpoint)?;
        }

        let mut loader = aws_config::defaults(BehaviorVersion::latest())
            .retry_config(RetryConfig::disabled())
            .identity_cache(
                IdentityCache::lazy()
                    .load_timeout(CONFIG_LOAD_BUDGET)
                    .build(),
            );
        if !cfg.region.is_empty() {
            loader = loader.region(Region::new(cfg.region.clone()));
        }
        let sdk = tokio::time::timeout(CONFIG_LOAD_BUDGET, loader.load())
            .await
            .map_err(|_| {
                Error::Init(KmsError::new(
                    PROVIDER,
                    "init",
                    "",
                    KmsErrorKind::Unavailable,
                    format!(
                        "loading the AWS configuration took longer than {CONFIG_LOAD_BUDGET:?}"
                    ),
                ))
            })?;
        let Some(region) = sdk.region().map(|r| r.as_ref().to_owned()) else {
            return Err(invalid_config(
                KmsErrorKind::Other,
                "no AWS region: set security.kms.region, AWS_REGION or a profile region",
            ));
        };

        let mut builder =
            aws_sdk_kms::config::Builder::from(&sdk).retry_config(RetryConfig::disabled());
        if let Some(e) = &endpoint {
            builder = builder.endpoint_url(e.clone());
        }
        let client = Client::from_conf(builder.build());
        tracing::debug!(
            region = %region,
            endpoint = endpoint.as_deref().unwrap_or("(default)"),
            signing_key_id = %signing_key_id,
            encryption_key_id = %encryption_key_id,
            "AWS KMS backend ready"
        );
        Ok(Self {
            client,
            region,
            endpoint,
            signing_key_id,
            encryption_key_id,
            signing_keys: Mutex::new(HashMap::new()),
        })
    }

    /// The region in use.
    pub fn region(&self) -> &str {
        &self.region
    }

    /// The custom endpoint, if any.
    pub fn endpoint(&self) -> Option<&str> {
        self.endpoint.as_deref()
    }

    fn cached_signing_key(&self, key_id: &str) -> Option<SigningKey> {
        self.signing_keys
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(key_id)
            .cloned()
    }

    /// `GetPublicKey` for `key_id`, checked and cached; errors carry `op`.
    async fn fetch_signing_key(
        &self,
        op: &'static str,
        key_id: &str,
    ) -> Result<SigningKey, KmsError> {
        let out = self
            .client
            .get_public_key()
            .key_id(key_id)
            .send()
            .await
            .map_err(|e| classify(op, key_id, e))?;
        let err = |kind, msg: String| KmsError::new(PROVIDER, op, key_id, kind, msg);
        match out.key_usage() {
            Some(KeyUsageType::SignVerify) | None => {}
            Some(other) => {
                return Err(err(
                    KmsErrorKind::InvalidKey,
                    format!("key usage is {}, not SIGN_VERIFY", other.as_str()),
                ));
            }
        }
        // `KeySpec`, else the deprecated `CustomerMasterKeySpec` (all moto reports), else the
        // curve of the SPKI itself.
        #[allow(deprecated)]
        let spec = out
            .key_spec()
            .map(KeySpec::as_str)
            .or_else(|| out.customer_master_key_spec().map(|s| s.as_str()));
        let der: &[u8] = out.public_key().map_or(&[], |b| b.as_ref());
        let curve = match spec {
            Some("ECC_NIST_P256") => Some(KeyAlgorithm::P256),
            Some("ECC_SECG_P256K1") => Some(KeyAlgorithm::Secp256k1),
            Some(other) => {
                return Err(err(
                    KmsErrorKind::InvalidKey,
                    format!(
                        "key spec {other} is not supported for signing (use ECC_NIST_P256 or ECC_SECG_P256K1)"
                    ),
                ));
            }
            None => None,
        };
        let parsed = [KeyAlgorithm::P256, KeyAlgorithm::Secp256k1]
            .into_iter()
            .filter(|c| curve.is_none_or(|want| want == *c))
            .find_map(|c| sec1_from_spki(c, der).map(|point| (c, point)));
        let Some((curve, point)) = parsed else {
            return Err(err(
                KmsErrorKind::InvalidKey,
                format!(
                    "GetPublicKey returned no P-256 or secp256k1 public key{}",
                    spec.map(|s| format!(" for key spec {s}"))
                        .unwrap_or_default()
                ),
            ));
        };
        let key = SigningKey {
            key_uuid: out
                .key_id()
                .and_then(key_uuid)
                .unwrap_or_default()
                .to_owned(),
            curve,
            point,
        };
        self.signing_keys
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(key_id.to_owned(), key.clone());
        Ok(key)
    }

    async fn signing_key(&self, key_id: &str) -> Result<SigningKey, KmsError> {
        match self.cached_signing_key(key_id) {
            Some(k) => Ok(k),
            None => self.fetch_signing_key("sign", key_id).await,
        }
    }
}

/// The key id inside a key ARN (`arn:…:key/<id>`) or a bare key id; `None` for aliases and
/// alias ARNs, which do not say which key they named.
fn key_uuid(id: &str) -> Option<&str> {
    if let Some(rest) = id.strip_prefix("arn:") {
        rest.split_once(":key/").map(|(_, k)| k)
    } else if id.starts_with("alias/") || id.is_empty() {
        None
    } else {
        Some(id)
    }
}

/// Parses an EC SPKI of `curve` into an uncompressed SEC1 point.
fn sec1_from_spki(curve: KeyAlgorithm, der: &[u8]) -> Option<Vec<u8>> {
    match curve {
        KeyAlgorithm::P256 => {
            use p256::{elliptic_curve::sec1::ToSec1Point, pkcs8::DecodePublicKey};
            p256::PublicKey::from_public_key_der(der)
                .ok()
                .map(|pk| pk.to_sec1_point(false).as_bytes().to_vec())
        }
        KeyAlgorithm::Secp256k1 => {
            use k256::{elliptic_curve::sec1::ToSec1Point, pkcs8::DecodePublicKey};
            k256::PublicKey::from_public_key_der(der)
                .ok()
                .map(|pk| pk.to_sec1_point(false).as_bytes().to_vec())
        }
        _ => None,
    }
}

/// Refuses an empty resolved key id (the role's default key is not configured).
fn require_key(op: &'static str, key_id: &str, role: KeyRole) -> Result<(), KmsError> {
    if key_id.is_empty() {
        let what = match role {
            KeyRole::Signing => "signing",
            KeyRole::Encryption => "encryption",
        };
        return Err(KmsError::new(
            PROVIDER,
            op,
            key_id,
            KmsErrorKind::InvalidKey,
            format!("no default {what} key is configured"),
        ));
    }
    Ok(())
}

/// The KMS encryption context for a wrap context: none for an empty one (Go-written blobs).
fn encryption_context(context: &[u8]) -> Option<HashMap<String, String>> {
    (!context.is_empty()).then(|| {
        HashMap::from([(
            ENCRYPTION_CONTEXT_KEY.to_owned(),
            base64::engine::general_purpose::STANDARD.encode(context),
        )])
    })
}

/// The kind of a KMS error code (spec §2.4.1 plus the Rust additions of K-6).
fn kind_for_code(code: &str) -> Option<KmsErrorKind> {
    Some(match code {
        "AccessDeniedException"
        | "UnrecognizedClientException"
        | "InvalidSignatureException"
        | "IncompleteSignature"
        | "MissingAuthenticationToken"
        | "ExpiredTokenException" => KmsErrorKind::AccessDenied,
        "DisabledException" | "KMSInvalidStateException" => KmsErrorKind::KeyDisabled,
        "NotFoundException"
        | "InvalidKeyUsageException"
        | "InvalidArnException"
        | "UnsupportedOperationException" => KmsErrorKind::InvalidKey,
        "ThrottlingException"
        | "Throttling"
        | "ThrottledException"
        | "TooManyRequestsException"
        | "RequestLimitExceeded" => KmsErrorKind::Throttled,
        "ServiceUnavailableException"
        | "KMSInternalException"
        | "DependencyTimeoutException"
        | "KeyUnavailableException"
        | "InternalFailure"
        | "InternalServerError" => KmsErrorKind::Unavailable,
        "InvalidCiphertextException" | "IncorrectKeyException" => KmsErrorKind::DecryptionFailed,
        _ => return None,
    })
}

/// The kind of an HTTP status without a recognised error code.
fn kind_for_status(status: u16) -> KmsErrorKind {
    match status {
        429 => KmsErrorKind::Throttled,
        500 | 502 | 503 | 504 => KmsErrorKind::Unavailable,
        _ => KmsErrorKind::Other,
    }
}

/// The kind of a request that got no answer.
fn kind_for_dispatch(err: &aws_sdk_kms::error::ConnectorError) -> KmsErrorKind {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(err);
    while let Some(e) = cur {
        if let Some(c) = e.downcast_ref::<CredentialsError>() {
            return match c {
                CredentialsError::CredentialsNotLoaded(_)
                | CredentialsError::InvalidConfiguration(_) => KmsErrorKind::AccessDenied,
                CredentialsError::ProviderTimedOut(_) | CredentialsError::ProviderError(_) => {
                    KmsErrorKind::Unavailable
                }
                _ => KmsErrorKind::Other,
            };
        }
        cur = e.source();
    }
    if err.is_user() {
        KmsErrorKind::Other
    } else {
        // I/O (refused, reset, dropped), timeouts, and unrecognised transport failures.
        KmsErrorKind::Unavailable
    }
}

/// Classifies an SDK error into a [`KmsError`] (table in the module documentation).
fn classify<E>(
    op: &'static str,
    key_id: &str,
    err: SdkError<E, aws_sdk_kms::config::http::HttpResponse>,
) -> KmsError
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    let status = err.raw_response().map(|r| r.status().as_u16());
    let (kind, message) = match &err {
        SdkError::ServiceError(_) | SdkError::ResponseError(_) => {
            let code = err.code().filter(|c| !c.is_empty());
            let kind = code
                .and_then(kind_for_code)
                .or_else(|| status.map(kind_for_status))
                .unwrap_or(KmsErrorKind::Other);
            let message = match (code, err.message()) {
                (Some(c), Some(m)) => format!("{c}: {m}"),
                (Some(c), None) => c.to_owned(),
                (None, _) => match status {
                    Some(s) => format!("HTTP {s}: {}", DisplayErrorContext(&err)),
                    None => DisplayErrorContext(&err).to_string(),
                },
            };
            (kind, message)
        }
        SdkError::TimeoutError(_) => (
            KmsErrorKind::Unavailable,
            DisplayErrorContext(&err).to_string(),
        ),
        SdkError::DispatchFailure(d) => (
            d.as_connector_error()
                .map_or(KmsErrorKind::Unavailable, kind_for_dispatch),
            DisplayErrorContext(&err).to_string(),
        ),
        _ => (KmsErrorKind::Other, DisplayErrorContext(&err).to_string()),
    };
    KmsError::new(PROVIDER, op, key_id, kind, message).with_source(err)
}

#[async_trait]
impl KmsBackend for AwsKms {
    fn name(&self) -> KmsProviderName {
        KmsProviderName::AwsKms
    }

    fn signing_key_id(&self) -> &str {
        &self.signing_key_id
    }

    fn encryption_key_id(&self) -> &str {
        &self.encryption_key_id
    }

    async fn sign(&self, key_id: &str, payload: &[u8]) -> Result<Signature, KmsError> {
        let key_id = self.resolve_key_id(KeyRole::Signing, key_id);
        require_key("sign", key_id, KeyRole::Signing)?;
        if payload.is_empty() || payload.len() > MAX_SIGN_MESSAGE_LEN {
            return Err(KmsError::new(
                PROVIDER,
                "sign",
                key_id,
                KmsErrorKind::Other,
                format!(
                    "AWS KMS signs RAW messages of 1 to {MAX_SIGN_MESSAGE_LEN} bytes, got {}",
                    payload.len()
                ),
            ));
        }
        let mut key = self.signing_key(key_id).await?;
        let out = self
            .client
            .sign()
            .key_id(key_id)
            .message(Blob::new(payload))
            .message_type(MessageType::Raw)
            .signing_algorithm(SigningAlgorithmSpec::EcdsaSha256)
            .send()
            .await
            .map_err(|e| classify("sign", key_id, e))?;
        if let Some(signer) = out.key_id().and_then(key_uuid)
            && !key.key_uuid.is_empty()
            && signer != key.key_uuid
        {
            // The alias now names another key: learn its curve before labelling the signature.
            key = self.fetch_signing_key("sign", key_id).await?;
        }
        let bytes = out.signature.map(Blob::into_inner).unwrap_or_default();
        if bytes.is_empty() {
            return Err(KmsError::new(
                PROVIDER,
                "sign",
                key_id,
                KmsErrorKind::Other,
                "Sign response has no signature",
            ));
        }
        let algorithm = match key.curve {
            KeyAlgorithm::Secp256k1 => SignatureAlgorithm::EcdsaSecp256k1Sha256Der,
            _ => SignatureAlgorithm::EcdsaP256Sha256Der,
        };
        Ok(Signature { algorithm, bytes })
    }

    async fn public_key(&self, key_id: &str) -> Result<PublicKeyInfo, KmsError> {
        let key_id = self.resolve_key_id(KeyRole::Signing, key_id);
        require_key("public-key", key_id, KeyRole::Signing)?;
        let key = self.fetch_signing_key("public-key", key_id).await?;
        Ok(PublicKeyInfo {
            algorithm: key.curve,
            bytes: key.point,
        })
    }

    async fn wrap(
        &self,
        key_id: &str,
        plaintext: &[u8],
        context: &[u8],
    ) -> Result<Wrapped, KmsError> {
        let key_id = self.resolve_key_id(KeyRole::Encryption, key_id);
        require_key("encrypt", key_id, KeyRole::Encryption)?;
        if plaintext.is_empty() || plaintext.len() > MAX_PLAINTEXT_LEN {
            return Err(KmsError::new(
                PROVIDER,
                "encrypt",
                key_id,
                KmsErrorKind::Other,
                format!(
                    "AWS KMS encrypts 1 to {MAX_PLAINTEXT_LEN} bytes directly, got {}",
                    plaintext.len()
                ),
            ));
        }
        let out = self
            .client
            .encrypt()
            .key_id(key_id)
            .plaintext(Blob::new(plaintext))
            .encryption_algorithm(EncryptionAlgorithmSpec::SymmetricDefault)
            .set_encryption_context(encryption_context(context))
            .send()
            .await
            .map_err(|e| classify("encrypt", key_id, e))?;
        let ciphertext = out
            .ciphertext_blob
            .map(Blob::into_inner)
            .unwrap_or_default();
        if ciphertext.is_empty() {
            return Err(KmsError::new(
                PROVIDER,
                "encrypt",
                key_id,
                KmsErrorKind::Other,
                "Encrypt response has no ciphertext",
            ));
        }
        Ok(Wrapped {
            ciphertext,
            key_version: None,
        })
    }

    async fn unwrap(
        &self,
        key_id: &str,
        ciphertext: &[u8],
        _key_version: Option<&str>,
        context: &[u8],
    ) -> Result<SecretBytes, KmsError> {
        let key_id = self.resolve_key_id(KeyRole::Encryption, key_id);
        require_key("decrypt", key_id, KeyRole::Encryption)?;
        if ciphertext.is_empty() || ciphertext.len() > MAX_CIPHERTEXT_LEN {
            return Err(KmsError::new(
                PROVIDER,
                "decrypt",
                key_id,
                KmsErrorKind::DecryptionFailed,
                format!(
                    "an AWS KMS ciphertext has 1 to {MAX_CIPHERTEXT_LEN} bytes, got {}",
                    ciphertext.len()
                ),
            ));
        }
        let out = self
            .client
            .decrypt()
            .key_id(key_id)
            .ciphertext_blob(Blob::new(ciphertext))
            .encryption_algorithm(EncryptionAlgorithmSpec::SymmetricDefault)
            .set_encryption_context(encryption_context(context))
            .send()
            .await
            .map_err(|e| classify("decrypt", key_id, e))?;
        match out.plaintext {
            Some(p) => Ok(SecretBytes::new(p.into_inner())),
            None => Err(KmsError::new(
                PROVIDER,
                "decrypt",
                key_id,
                KmsErrorKind::Other,
                "Decrypt response has no plaintext",
            )),
        }
    }

    async fn list_keys(&self) -> Result<Vec<RemoteKeyInfo>, KmsError> {
        let mut aliases: BTreeMap<String, Vec<String>> = BTreeMap::new();
        let mut marker: Option<String> = None;
        let mut seen = 0;
        loop {
            let out = self
                .client
                .list_aliases()
                .limit(PAGE_SIZE)
                .set_marker(marker.take())
                .send()
                .await
                .map_err(|e| classify("list-keys", "", e))?;
            for a in out.aliases() {
                seen += 1;
                if let (Some(target), Some(name)) = (a.target_key_id(), a.alias_name()) {
                    aliases
                        .entry(target.to_owned())
                        .or_default()
                        .push(name.to_owned());
                }
            }
            marker = out.next_marker().map(str::to_owned);
            if !out.truncated() || marker.is_none() || seen >= MAX_LISTED_ALIASES {
                break;
            }
        }

        let mut keys = Vec::new();
        loop {
            let out = self
                .client
                .list_keys()
                .limit(PAGE_SIZE)
                .set_marker(marker.take())
                .send()
                .await
                .map_err(|e| classify("list-keys", "", e))?;
            for k in out.keys() {
                if keys.len() >= MAX_LISTED_KEYS {
                    break;
                }
                let Some(id) = k.key_id() else { continue };
                let mut info = RemoteKeyInfo::new(k.key_arn().unwrap_or(id));
                info.aliases = aliases.remove(id).unwrap_or_default();
                keys.push(info);
            }
            marker = out.next_marker().map(str::to_owned);
            if !out.truncated() || marker.is_none() || keys.len() >= MAX_LISTED_KEYS {
                break;
            }
        }
        Ok(keys)
    }

    async fn close(&self) {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_map_to_the_spec_kinds() {
        use KmsErrorKind::*;
        for (code, kind) in [
            ("AccessDeniedException", AccessDenied),
            ("UnrecognizedClientException", AccessDenied),
            ("DisabledException", KeyDisabled),
            ("KMSInvalidStateException", KeyDisabled),
            ("NotFoundException", InvalidKey),
            ("InvalidKeyUsageException", InvalidKey),
            ("UnsupportedOperationException", InvalidKey),
            ("ThrottlingException", Throttled),
            ("ServiceUnavailableException", Unavailable),
            ("KMSInternalException", Unavailable),
            ("DependencyTimeoutException", Unavailable),
            ("KeyUnavailableException", Unavailable),
            ("InvalidCiphertextException", DecryptionFailed),
            ("IncorrectKeyException", DecryptionFailed),
        ] {
            assert_eq!(kind_for_code(code), Some(kind), "{code}");
        }
        assert_eq!(kind_for_code("ValidationException"), None);
        assert_eq!(kind_for_code("throttlingexception"), None);
        assert_eq!(kind_for_status(429), Throttled);
        for s in [500, 502, 503, 504] {
            assert_eq!(kind_for_status(s), Unavailable);
        }
        for s in [400, 403, 404, 501] {
            assert_eq!(kind_for_status(s), Other);
        }
    }

    #[test]
    fn key_ids_are_compared_without_their_arn() {
        let id = "1234abcd-12ab-34cd-56ef-1234567890ab";
        assert_eq!(
            key_uuid(&format!("arn:aws:kms:us-east-1:111122223333:key/{id}")),
            Some(id)
        );
        assert_eq!(key_uuid(id), Some(id));
        for none in ["alias/x", "arn:aws:kms:us-east-1:111122223333:alias/x", ""] {
            assert_eq!(key_uuid(none), None, "{none}");
        }
    }

    #[test]
    fn empty_context_sends_no_encryption_context() {
        assert_eq!(encryption_context(b""), None);
        let ctx = encryption_context(b"\x00ab").unwrap();
        assert_eq!(ctx.len(), 1);
        assert_eq!(ctx[ENCRYPTION_CONTEXT_KEY], "AGFi");
    }

    #[test]
    fn endpoints_must_be_https_unless_allowed() {
        assert!(check_endpoint("https://kms.example", false).is_ok());
        assert!(check_endpoint("HTTPS://kms.example", false).is_ok());
        assert!(check_endpoint("http://127.0.0.1:1", true).is_ok());
        let e = check_endpoint("http://127.0.0.1:1", false).unwrap_err();
        assert_eq!(e.kind(), KmsErrorKind::Other);
        assert_eq!(
            e.to_string(),
            "new AWS KMS provider: security.kms.endpoint uses plain http:// (http://127.0.0.1:1); set security.kms.allowInsecureEndpoint to allow it (tests only)"
        );
        for bad in ["kms.example", "ftp://x", ""] {
            assert!(check_endpoint(bad, true).is_err(), "{bad}");
        }
    }

    #[test]
    fn spki_is_parsed_for_the_right_curve_only() {
        use p256::pkcs8::EncodePublicKey;
        let sk = p256::SecretKey::from_slice(&[7; 32]).unwrap();
        let der = sk.public_key().to_public_key_der().unwrap();
        let point = sec1_from_spki(KeyAlgorithm::P256, der.as_bytes()).unwrap();
        assert_eq!(point.len(), 65);
        assert_eq!(point[0], 4);
        assert!(sec1_from_spki(KeyAlgorithm::Secp256k1, der.as_bytes()).is_none());
        assert!(sec1_from_spki(KeyAlgorithm::P256, &der.as_bytes()[1..]).is_none());
        assert!(sec1_from_spki(KeyAlgorithm::Rsa, der.as_bytes()).is_none());
    }
}
