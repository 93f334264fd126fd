//! Azure Key Vault backend against a local REST server that answers the real API 7.4 shapes
//! (spec §5.2 "Azure against a local REST server", items 1–3).
//!
//! The server (tests/support/rest_azure.rs) signs ES256 with a real P-256 key, encrypts with
//! RSA-2048 OAEP (SHA-1 and SHA-256) per key version, and asserts the bearer token; signatures
//! are verified with the `openssl` command line.
#![cfg(feature = "kms-azure")]
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "support/rest_azure.rs"]
mod rest_azure;
#[path = "support/rest_server.rs"]
mod rest_server;

use std::{sync::Arc, time::Duration};

use base64::{Engine as _, engine::general_purpose::URL_SAFE_NO_PAD};
use lango_crypto::{
    CryptoProvider,
    aead::ProviderTag,
    digest::sha256,
    provider::{KeyAlgorithm, ProviderErrorKind, SignatureAlgorithm},
};
use lango_kms::{
    KmsBackend, KmsConfig, KmsErrorKind, KmsProvider, KmsProviderName,
    azure::{AzureCredentialChain, AzureKv, DEFAULT_SCOPE},
    config::{AzureConfig, AzureEncryptionAlgorithm},
    envelope::EnvelopePayload,
    error::kms_kind,
    new_kms_provider,
    rest::{self, StaticToken},
};
use rest_azure::{FakeAzure, Fault, SIGNER, SIGNER_VERSION, TOKEN, WRAPPER, version_id};
use rest_server::{RestServer, ctx, openssl_verify, policy, provider};

fn config(server: &RestServer, algorithm: AzureEncryptionAlgorithm) -> KmsConfig {
    KmsConfig {
        key_id: WRAPPER.into(),
        signing_key_id: Some(SIGNER.into()),
        encryption_key_id: Some(WRAPPER.into()),
        allow_insecure_endpoint: true,
        azure: AzureConfig {
            vault_url: server.url(),
            key_version: String::new(),
            encryption_algorithm: algorithm,
        },
        ..KmsConfig::default()
    }
}

fn backend_with(cfg: &KmsConfig) -> Arc<AzureKv> {
    Arc::new(AzureKv::with_token_source(cfg, Arc::new(StaticToken::new(TOKEN))).unwrap())
}

fn backend(server: &RestServer) -> Arc<AzureKv> {
    backend_with(&config(server, AzureEncryptionAlgorithm::RsaOaep))
}

fn raw_to_der(raw: &[u8]) -> Vec<u8> {
    p256::ecdsa::Signature::from_slice(raw)
        .unwrap()
        .to_der()
        .as_bytes()
        .to_vec()
}

#[tokio::test]
async fn construction_errors_keep_the_go_texts() {
    // The vault URL is checked before the key id.
    let empty = KmsConfig::default();
    let e = AzureKv::new(&empty).await.unwrap_err();
    assert_eq!(
        e.to_string(),
        "new Azure KV provider: vault URL is required"
    );
    let Err(e) = new_kms_provider("azure-kv", &empty).await else {
        panic!("built without a vault URL");
    };
    assert_eq!(
        e.to_string(),
        "new Azure KV provider: vault URL is required"
    );

    let no_key = KmsConfig {
        azure: AzureConfig {
            vault_url: "https://lango.vault.azure.net".into(),
            ..AzureConfig::default()
        },
        ..KmsConfig::default()
    };
    let e = AzureKv::new(&no_key).await.unwrap_err();
    assert_eq!(e.to_string(), "new Azure KV provider: KMS invalid key");
    assert_eq!(e.kind(), KmsErrorKind::InvalidKey);

    let insecure = KmsConfig {
        key_id: WRAPPER.into(),
        azure: AzureConfig {
            vault_url: "http://127.0.0.1:9".into(),
            ..AzureConfig::default()
        },
        ..KmsConfig::default()
    };
    let e = AzureKv::new(&insecure).await.unwrap_err();
    assert_eq!(
        e.to_string(),
        "new Azure KV provider: security.kms.azure.vaultUrl uses plain http:// (http://127.0.0.1:9); set security.kms.allowInsecureEndpoint to allow it (tests only)"
    );
    let bad_version = KmsConfig {
        key_id: WRAPPER.into(),
        azure: AzureConfig {
            vault_url: "https://lango.vault.azure.net".into(),
            key_version: "../../secrets/x".into(),
            ..AzureConfig::default()
        },
        ..KmsConfig::default()
    };
    assert_eq!(
        AzureKv::new(&bad_version).await.unwrap_err().kind(),
        KmsErrorKind::InvalidKey
    );

    // A valid configuration builds the production credential chain without contacting
    // anything, through the factory too.
    let ok = KmsConfig {
        key_id: WRAPPER.into(),
        azure: AzureConfig {
            vault_url: "https://lango.vault.azure.net/".into(),
            ..AzureConfig::default()
        },
        ..KmsConfig::default()
    };
    let b = AzureKv::new(&ok).await.unwrap();
    assert_eq!(b.vault_url(), "https://lango.vault.azure.net");
    let b = new_kms_provider("azure-kv", &ok).await.unwrap();
    assert_eq!(b.name(), KmsProviderName::AzureKv);
    let chain = AzureCredentialChain::from_environment(DEFAULT_SCOPE).unwrap();
    assert_eq!(chain.source_names().last(), Some(&"developer-tools"));
}

#[tokio::test]
async fn sign_returns_64_raw_bytes_that_verify_independently() {
    let fake = FakeAzure::new();
    let server = fake.serve().await;
    let b = backend(&server);
    let payload = b"lango: sign me through Key Vault";
    let sig = b.sign("default", payload).await.unwrap();
    assert_eq!(sig.algorithm, SignatureAlgorithm::EcdsaP256Sha256Raw);
    assert_eq!(sig.bytes.len(), 64);
    let digest = sha256(payload);
    assert_eq!(fake.digests.lock().unwrap().as_slice(), &[digest.to_vec()]);
    assert!(openssl_verify(
        &fake.ec_pem(),
        payload,
        &raw_to_der(&sig.bytes)
    ));
    assert!(!openssl_verify(
        &fake.ec_pem(),
        b"another payload",
        &raw_to_der(&sig.bytes)
    ));

    // The request: latest version as an empty segment, API 7.4, ES256 over the digest.
    let req = &server.requests()[0];
    assert_eq!(req.method, "POST");
    assert_eq!(req.path, format!("/keys/{SIGNER}//sign"));
    assert_eq!(req.query.as_deref(), Some("api-version=7.4"));
    assert_eq!(
        req.header("authorization"),
        Some(format!("Bearer {TOKEN}").as_str())
    );
    let body = req.json();
    assert_eq!(body["alg"], "ES256");
    assert_eq!(body["value"], URL_SAFE_NO_PAD.encode(digest));

    // With a configured version, the path names it.
    let cfg = KmsConfig {
        azure: AzureConfig {
            key_version: SIGNER_VERSION.into(),
            ..config(&server, AzureEncryptionAlgorithm::RsaOaep).azure
        },
        ..config(&server, AzureEncryptionAlgorithm::RsaOaep)
    };
    server.clear();
    backend_with(&cfg).sign("", payload).await.unwrap();
    assert_eq!(
        server.requests()[0].path,
        format!("/keys/{SIGNER}/{SIGNER_VERSION}/sign")
    );

    // Through the provider: a high-S answer comes back low-S, still raw and verifying.
    fake.high_s.store(true, std::sync::atomic::Ordering::SeqCst);
    let raw = b.sign("", payload).await.unwrap();
    let high = p256::ecdsa::Signature::from_slice(&raw.bytes).unwrap();
    assert_ne!(high.normalize_s(), high);
    let p = provider(&b);
    let sig = p.sign("", payload).await.unwrap();
    assert_eq!(sig.algorithm, SignatureAlgorithm::EcdsaP256Sha256Raw);
    assert_eq!(sig.bytes.len(), 64);
    let low = p256::ecdsa::Signature::from_slice(&sig.bytes).unwrap();
    assert_eq!(low.normalize_s(), low);
    assert!(openssl_verify(
        &fake.ec_pem(),
        payload,
        &raw_to_der(&sig.bytes)
    ));
}

#[tokio::test]
async fn public_keys_come_from_the_jwk() {
    let fake = FakeAzure::new();
    let server = fake.serve().await;
    let b = backend(&server);
    let ec = b.public_key("").await.unwrap();
    assert_eq!(ec.algorithm, KeyAlgorithm::P256);
    assert_eq!(ec.bytes, fake.ec_sec1());
    assert_eq!(server.requests()[0].method, "GET");
    assert_eq!(server.requests()[0].path, format!("/keys/{SIGNER}/"));
    let rsa = b.public_key(WRAPPER).await.unwrap();
    assert_eq!(rsa.algorithm, KeyAlgorithm::Rsa);
    assert_eq!(
        rsa.bytes,
        fake.rsa_spki(&version_id(1)),
        "SPKI rebuilt from n and e"
    );
    // Names that are not Key Vault names never reach a URL.
    server.clear();
    let long = "k".repeat(128);
    for bad in ["a/b", "x?api-version=1", "näme", "..", long.as_str()] {
        let e = b.public_key(bad).await.unwrap_err();
        assert_eq!(e.kind, KmsErrorKind::InvalidKey, "{bad}");
        assert!(b.sign(bad, b"m").await.is_err());
        assert!(b.wrap(bad, b"dk", &[]).await.is_err());
    }
    assert_eq!(server.count(), 0);
}

#[tokio::test]
async fn rsa_oaep_takes_214_bytes_and_refuses_215() {
    // K-5: direct RSA-OAEP (SHA-1) encryption of values is limited by the modulus.
    let fake = FakeAzure::new();
    let server = fake.serve().await;
    let b = backend(&server);
    let ok = vec![0xabu8; 214];
    let w = b.wrap("", &ok, b"ignored").await.unwrap();
    assert_eq!(w.ciphertext.len(), 256);
    assert_eq!(w.key_version, Some(version_id(1)));
    let back = b
        .unwrap("", &w.ciphertext, w.key_version.as_deref(), b"ignored")
        .await
        .unwrap();
    assert_eq!(back.expose(), ok.as_slice());
    let body = server.matching("/encrypt")[0].json();
    assert_eq!(body["alg"], "RSA-OAEP");
    assert_eq!(body["value"], URL_SAFE_NO_PAD.encode(&ok));
    assert!(body.get("aad").is_none(), "RSA-OAEP has no associated data");

    server.clear();
    let e = b.wrap("", &[0xab; 215], &[]).await.unwrap_err();
    assert_eq!(e.kind, KmsErrorKind::Other);
    assert!(!e.is_transient());
    assert!(e.message.contains("BadParameter"), "{e}");
    assert_eq!(server.count(), 1);

    // RSA-OAEP-256 (SHA-256): 190 bytes.
    let b256 = backend_with(&config(&server, AzureEncryptionAlgorithm::RsaOaep256));
    let w = b256.wrap("", &[1; 190], &[]).await.unwrap();
    assert_eq!(
        server.matching("/encrypt").last().unwrap().json()["alg"],
        "RSA-OAEP-256"
    );
    let back = b256
        .unwrap("", &w.ciphertext, w.key_version.as_deref(), &[])
        .await
        .unwrap();
    assert_eq!(back.expose(), [1; 190]);
    assert_eq!(
        b256.wrap("", &[1; 191], &[]).await.unwrap_err().kind,
        KmsErrorKind::Other
    );
    // The algorithms do not mix.
    let e = b
        .unwrap("", &w.ciphertext, w.key_version.as_deref(), &[])
        .await;
    assert!(e.is_err());
}

#[tokio::test]
async fn the_envelope_handles_1_mib_and_survives_rotation() {
    // K-5: the service only wraps 32-byte data keys, and each blob records the key version.
    for algorithm in [
        AzureEncryptionAlgorithm::RsaOaep,
        AzureEncryptionAlgorithm::RsaOaep256,
    ] {
        let fake = FakeAzure::new();
        let server = fake.serve().await;
        let b = backend_with(&config(&server, algorithm));
        let p = provider(&b);
        let big: Vec<u8> = (0..1024 * 1024).map(|i| (i % 253) as u8).collect();
        let blob = p.encrypt("", &big, ctx(b"row-1")).await.unwrap();
        assert_eq!(
            p.decrypt("", &blob, ctx(b"row-1")).await.unwrap().expose(),
            big.as_slice()
        );
        let empty = p.encrypt("", b"", ctx(b"row-1")).await.unwrap();
        assert!(
            p.decrypt("", &empty, ctx(b"row-1"))
                .await
                .unwrap()
                .is_empty()
        );
        assert!(fake.plaintext_lens.lock().unwrap().iter().all(|n| *n == 32));
        let env = EnvelopePayload::parse(&blob[9..]).unwrap();
        assert_eq!(env.key_id, WRAPPER);
        assert_eq!(env.key_version, Some(version_id(1).as_str()));

        // RSA has no AAD: the data key unwraps for another row, but the value does not open.
        server.clear();
        let e = p.decrypt("", &blob, ctx(b"row-2")).await.unwrap_err();
        assert_eq!(e.kind, ProviderErrorKind::DecryptionFailed);
        assert_eq!(
            server.matching("/decrypt").len(),
            1,
            "the unwrap itself succeeded"
        );

        // Rotation with keyVersion empty: new values use the new version, old ones decrypt
        // with the version they recorded.
        let v2 = fake.rotate();
        server.clear();
        let newer = p.encrypt("", b"newer", ctx(b"row-1")).await.unwrap();
        assert_eq!(
            EnvelopePayload::parse(&newer[9..]).unwrap().key_version,
            Some(v2.as_str())
        );
        assert_eq!(
            server.requests()[0].path,
            format!("/keys/{WRAPPER}//encrypt")
        );
        assert_eq!(
            p.decrypt("", &blob, ctx(b"row-1")).await.unwrap().expose(),
            big.as_slice()
        );
        assert_eq!(
            server.requests()[1].path,
            format!("/keys/{WRAPPER}/{}/decrypt", version_id(1))
        );
        assert_eq!(
            p.decrypt("", &newer, ctx(b"row-1")).await.unwrap().expose(),
            b"newer"
        );
        assert_eq!(
            server.requests()[2].path,
            format!("/keys/{WRAPPER}/{v2}/decrypt")
        );
    }
}

#[tokio::test]
async fn unwrap_uses_the_recorded_version_and_go_blobs_the_configured_one() {
    let fake = FakeAzure::new();
    let server = fake.serve().await;
    let b = backend(&server);
    let w = b.wrap("", b"data key", &[]).await.unwrap();
    assert_eq!(w.key_version, Some(version_id(1)));
    fake.rotate();
    server.clear();
    let back = b
        .unwrap("", &w.ciphertext, w.key_version.as_deref(), &[])
        .await
        .unwrap();
    assert_eq!(back.expose(), b"data key");
    assert_eq!(
        server.requests()[0].path,
        format!("/keys/{WRAPPER}/{}/decrypt", version_id(1))
    );
    // A Go-written value has no recorded version: it goes to "latest" (empty segment), which
    // after a rotation is the wrong key — the breakage K-5 describes.
    let e = b.unwrap("", &w.ciphertext, None, &[]).await.unwrap_err();
    assert_eq!(
        server.requests()[1].path,
        format!("/keys/{WRAPPER}//decrypt")
    );
    assert_eq!(e.kind, KmsErrorKind::Other);
    // A recorded version that is not a version is refused locally.
    server.clear();
    let e = b
        .unwrap("", &w.ciphertext, Some("../x"), &[])
        .await
        .unwrap_err();
    assert_eq!(e.kind, KmsErrorKind::InvalidKey);
    assert_eq!(server.count(), 0);
}

#[tokio::test]
async fn statuses_map_to_parity_and_rust_kinds() {
    let fake = FakeAzure::new();
    let server = fake.serve().await;
    let b = backend(&server);
    let table = [
        // Go parity.
        (401, "Unauthorized", KmsErrorKind::AccessDenied),
        (403, "Forbidden", KmsErrorKind::AccessDenied),
        (429, "Throttled", KmsErrorKind::Throttled),
        (503, "ServiceUnavailable", KmsErrorKind::Unavailable),
        // Rust additions (K-6).
        (404, "KeyNotFound", KmsErrorKind::InvalidKey),
        (500, "InternalServerError", KmsErrorKind::Unavailable),
        (502, "BadGateway", KmsErrorKind::Unavailable),
        (504, "GatewayTimeout", KmsErrorKind::Unavailable),
        // Everything else stays unclassified, with the service's message.
        (400, "BadParameter", KmsErrorKind::Other),
        (409, "Conflict", KmsErrorKind::Other),
    ];
    for (status, code, kind) in table {
        server.clear();
        fake.fail_next([Fault::Status(status, code)]);
        let e = b.sign("", b"m").await.unwrap_err();
        assert_eq!(e.kind, kind, "{status}");
        assert_eq!(
            (e.provider, &*e.op, e.key_id.as_str()),
            ("azure", "sign", SIGNER)
        );
        assert!(
            e.message
                .contains(&format!("HTTP {status} {code}: injected {status} {code}")),
            "{e}"
        );
        assert_eq!(rest::http_status(&e).map(|s| s.status), Some(status));
        assert_eq!(server.count(), 1, "one attempt per backend call");
    }
    // A real 404: unknown key.
    let e = b.sign("no-such-key", b"m").await.unwrap_err();
    assert_eq!(e.kind, KmsErrorKind::InvalidKey);
    assert!(e.message.contains("KeyNotFound"), "{e}");
}

#[tokio::test]
async fn retry_after_is_exposed_and_throttling_is_retried() {
    let fake = FakeAzure::new();
    let server = fake.serve().await;
    let b = backend(&server);
    fake.fail_next([Fault::StatusWithHeaders(429, vec![("retry-after", "2")])]);
    let e = b.sign("", b"m").await.unwrap_err();
    assert_eq!(e.kind, KmsErrorKind::Throttled);
    assert_eq!(rest::retry_after(&e), Some(Duration::from_secs(2)));
    assert!(e.message.ends_with("(retry after 2000 ms)"), "{e}");
    fake.fail_next([Fault::StatusWithHeaders(
        503,
        vec![("retry-after", "9"), ("x-ms-retry-after-ms", "150")],
    )]);
    let e = b.sign("", b"m").await.unwrap_err();
    assert_eq!(e.kind, KmsErrorKind::Unavailable);
    assert_eq!(rest::retry_after(&e), Some(Duration::from_millis(150)));
    fake.fail_next([Fault::Status(429, "Throttled")]);
    assert_eq!(
        rest::retry_after(&b.sign("", b"m").await.unwrap_err()),
        None
    );

    // The provider retries throttling and outages (on its own backoff: the core RetryPolicy has
    // no input for the server's hint, which stays available through `rest::retry_after`).
    let p = provider(&b);
    server.clear();
    fake.fail_next([
        Fault::StatusWithHeaders(429, vec![("retry-after", "1")]),
        Fault::Status(503, "ServiceUnavailable"),
        Fault::Status(504, "GatewayTimeout"),
    ]);
    p.sign("", b"m").await.unwrap();
    assert_eq!(server.matching("/sign").len(), 4);
    server.clear();
    fake.fail_next([Fault::Status(403, "Forbidden")]);
    let e = p.sign("", b"m").await.unwrap_err();
    assert_eq!(e.kind, ProviderErrorKind::AccessDenied);
    assert_eq!(server.count(), 1, "a refusal is not retried");
}

#[tokio::test]
async fn dropped_connections_and_slow_answers_are_unavailable_and_retried() {
    let fake = FakeAzure::new();
    let server = fake.serve().await;
    let b = backend(&server);
    fake.fail_next([Fault::Drop]);
    let e = b.wrap("", b"dk", &[]).await.unwrap_err();
    assert_eq!(e.kind, KmsErrorKind::Unavailable, "{e}");
    assert!(
        rest::http_status(&e).is_none(),
        "a transport error, not a response: {e}"
    );
    assert_eq!(server.count(), 1);

    let p = provider(&b);
    server.clear();
    fake.fail_next([Fault::Drop, Fault::Drop]);
    let blob = p.encrypt("", b"value", ctx(b"row")).await.unwrap();
    assert_eq!(server.matching("/encrypt").len(), 3);
    server.clear();
    fake.fail_next(std::iter::repeat_n(Fault::Drop, 4));
    let e = p.decrypt("", &blob, ctx(b"row")).await.unwrap_err();
    assert_eq!(kms_kind(&e), Some(KmsErrorKind::Unavailable));
    assert_eq!(server.matching("/decrypt").len(), 4);

    let quick = KmsProvider::new(b.clone(), policy(1, Duration::from_millis(300)));
    server.clear();
    fake.fail_next([Fault::Delay(Duration::from_secs(3))]);
    quick.sign("", b"m").await.unwrap();
    assert_eq!(server.matching("/sign").len(), 2);
}

#[tokio::test]
async fn the_bearer_token_is_asserted_and_never_shown() {
    let fake = FakeAzure::new();
    let server = fake.serve().await;
    let cfg = config(&server, AzureEncryptionAlgorithm::RsaOaep);
    let wrong =
        AzureKv::with_token_source(&cfg, Arc::new(StaticToken::new("not-the-token"))).unwrap();
    let e = wrong.sign("", b"m").await.unwrap_err();
    assert_eq!(e.kind, KmsErrorKind::AccessDenied);
    assert!(e.message.contains("Unauthorized"), "{e}");
    assert_eq!(
        server.requests()[0].header("authorization"),
        Some("Bearer not-the-token")
    );

    server.clear();
    let b = backend(&server);
    let p = provider(&b);
    let blob = p.encrypt("", b"v", ctx(b"r")).await.unwrap();
    p.decrypt("", &blob, ctx(b"r")).await.unwrap();
    p.sign("", b"m").await.unwrap();
    b.list_keys().await.unwrap();
    let reqs = server.requests();
    assert!(reqs.len() >= 5);
    for r in reqs {
        assert_eq!(
            r.header("authorization"),
            Some(format!("Bearer {TOKEN}").as_str())
        );
        assert_eq!(r.query_param("api-version").as_deref(), Some("7.4"));
    }
    assert!(!format!("{b:?} {p:?}").contains(TOKEN));
}

#[tokio::test]
async fn list_keys_follows_next_link_only_on_the_vault() {
    let fake = FakeAzure::new();
    let server = fake.serve().await;
    let b = backend(&server);
    let keys = b.list_keys().await.unwrap();
    let names: Vec<_> = keys.iter().map(|k| k.key_id.as_str()).collect();
    assert_eq!(names, [SIGNER, WRAPPER, rest_azure::OTHER]);
    assert_eq!(keys[0].enabled, Some(true));
    assert_eq!(keys[2].enabled, Some(false));
    assert_eq!(server.matching("/keys").len(), 2);

    server.clear();
    fake.fail_next([Fault::EvilNextLink]);
    let e = b.list_keys().await.unwrap_err();
    assert_eq!(e.kind, KmsErrorKind::Other);
    assert!(e.message.contains("leaves the vault"), "{e}");
    assert_eq!(
        server.count(),
        1,
        "the token never followed the foreign link"
    );
}

#[tokio::test]
async fn a_kid_naming_another_key_is_refused() {
    let fake = FakeAzure::new();
    let server = fake.serve().await;
    let b = backend(&server);
    fake.fail_next([Fault::WrongKid]);
    let e = b.wrap("", b"dk", &[]).await.unwrap_err();
    assert_eq!(e.kind, KmsErrorKind::Other);
    assert!(e.message.contains("another key"), "{e}");
    fake.fail_next([Fault::WrongKid]);
    assert!(b.sign("", b"m").await.is_err());
    assert_eq!(server.count(), 2);
}

/// Issue 17: a key disabled in Key Vault (403 `KeyDisabled` for decrypt and sign; encrypt
/// still works, being a public-key operation) or a caller whose role was removed (403
/// `ForbiddenByRbac`) must stop new values, not move them to the local key, and not seal
/// them under the disabled key either.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_disabled_or_denied_key_fails_closed_in_the_composite() {
    let fake = FakeAzure::new();
    let server = fake.serve().await;
    let b = backend(&server);
    let interval = Duration::from_millis(200);
    let (composite, checker) = rest_server::probed_composite(Arc::new(provider(&b)), interval);
    rest_server::assert_refusal_fails_closed(
        &composite,
        &checker,
        ProviderTag::AzureKv,
        interval,
        || fake.set_enabled(WRAPPER, false),
        || fake.set_enabled(WRAPPER, true),
        rest_server::Refusal {
            kind: ProviderErrorKind::KeyDisabled,
            key_state: "disabled",
            server_text: "Operation decrypt is not allowed on a disabled key",
        },
    )
    .await;
    // Disabled: the probe's own encrypt reached the vault (Key Vault encrypts with a disabled
    // key), the refused call's did not.
    fake.set_enabled(WRAPPER, false);
    tokio::time::sleep(interval + Duration::from_millis(50)).await;
    assert!(!checker.check().await);
    let sent = fake.plaintext_lens.lock().unwrap().len();
    assert!(composite.encrypt("", b"v", ctx(b"r")).await.is_err());
    assert_eq!(fake.plaintext_lens.lock().unwrap().len(), sent);
    fake.set_enabled(WRAPPER, true);
    tokio::time::sleep(interval + Duration::from_millis(50)).await;

    rest_server::assert_refusal_fails_closed(
        &composite,
        &checker,
        ProviderTag::AzureKv,
        interval,
        || fake.denied.store(true, std::sync::atomic::Ordering::SeqCst),
        || {
            fake.denied
                .store(false, std::sync::atomic::Ordering::SeqCst)
        },
        rest_server::Refusal {
            kind: ProviderErrorKind::AccessDenied,
            key_state: "access denied",
            server_text: "ForbiddenByRbac",
        },
    )
    .await;
    assert_eq!(composite.fallback_count(), 0);
}
