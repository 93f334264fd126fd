//! GCP Cloud KMS backend against a local REST server that answers the real v1 shapes
//! (spec §5.2 "GCP against a local REST server", items 1–4).
//!
//! The server (tests/support/rest_gcp.rs) signs with real P-256 and secp256k1 keys, encrypts
//! with AES-256-GCM under server-side keys, checks every request CRC32C and asserts the bearer
//! token; signatures are verified with the `openssl` command line.
#![cfg(feature = "kms-gcp")]
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "support/rest_gcp.rs"]
mod rest_gcp;
#[path = "support/rest_server.rs"]
mod rest_server;

use std::{sync::Arc, time::Duration};

use async_trait::async_trait;
use base64::{Engine as _, engine::general_purpose::STANDARD};
use lango_crypto::{
    CryptoProvider, SecretString,
    aead::ProviderTag,
    digest::sha256,
    provider::{KeyAlgorithm, ProviderErrorKind, SignatureAlgorithm},
};
use lango_kms::{
    KmsBackend, KmsConfig, KmsError, KmsErrorKind, KmsProvider,
    backend::KeyUsage,
    envelope::EnvelopePayload,
    error::kms_kind,
    gcp::{DEFAULT_BASE_URL, GcpKms},
    new_kms_provider,
    rest::{self, StaticToken, TokenSource},
};
use rest_gcp::{
    FakeGcp, Fault, RING, TOKEN, enc_key, enc_version, http_code, k1_signer, rsa_signer, signer,
};
use rest_server::{RestServer, ctx, openssl_verify, policy, provider};

fn config(server: &RestServer) -> KmsConfig {
    KmsConfig {
        key_id: enc_key(),
        signing_key_id: Some(signer()),
        encryption_key_id: Some(enc_key()),
        endpoint: server.url(),
        allow_insecure_endpoint: true,
        ..KmsConfig::default()
    }
}

fn backend_with(cfg: &KmsConfig) -> Arc<GcpKms> {
    Arc::new(GcpKms::with_token_source(cfg, Arc::new(StaticToken::new(TOKEN))).unwrap())
}

fn backend(server: &RestServer) -> Arc<GcpKms> {
    backend_with(&config(server))
}

fn crc(data: &[u8]) -> String {
    crc32c::crc32c(data).to_string()
}

fn assert_token_everywhere(server: &RestServer) {
    let reqs = server.requests();
    assert!(!reqs.is_empty());
    for r in reqs {
        assert_eq!(
            r.header("authorization"),
            Some(format!("Bearer {TOKEN}").as_str()),
            "{} {}",
            r.method,
            r.path
        );
    }
}

#[tokio::test]
async fn construction_errors_keep_the_go_texts() {
    let empty = KmsConfig::default();
    let e = GcpKms::new(&empty).await.unwrap_err();
    assert_eq!(e.to_string(), "new GCP KMS provider: KMS invalid key");
    assert_eq!(e.kind(), KmsErrorKind::InvalidKey);
    let Err(e) = new_kms_provider("gcp-kms", &empty).await else {
        panic!("built without a key id");
    };
    assert_eq!(e.to_string(), "new GCP KMS provider: KMS invalid key");
    assert!(lango_kms::is_compiled(lango_kms::KmsProviderName::GcpKms));

    // Plain http is refused before any credential is looked up (K-12).
    let insecure = KmsConfig {
        key_id: enc_key(),
        endpoint: "http://127.0.0.1:9".into(),
        ..KmsConfig::default()
    };
    let e = GcpKms::new(&insecure).await.unwrap_err();
    assert_eq!(
        e.to_string(),
        "new GCP KMS provider: security.kms.endpoint uses plain http:// (http://127.0.0.1:9); set security.kms.allowInsecureEndpoint to allow it (tests only)"
    );
    let tokens: Arc<dyn TokenSource> = Arc::new(StaticToken::new(TOKEN));
    assert!(GcpKms::with_token_source(&insecure, tokens.clone()).is_err());

    // host:port means https; no endpoint means the public service.
    let hostport = KmsConfig {
        key_id: enc_key(),
        endpoint: "kms.internal.example:8443".into(),
        ..KmsConfig::default()
    };
    let b = GcpKms::with_token_source(&hostport, tokens.clone()).unwrap();
    assert_eq!(b.base_url(), "https://kms.internal.example:8443");
    let default = KmsConfig {
        key_id: enc_key(),
        ..KmsConfig::default()
    };
    let b = GcpKms::with_token_source(&default, tokens).unwrap();
    assert_eq!(b.base_url(), DEFAULT_BASE_URL);
    assert_eq!(b.base_url(), "https://cloudkms.googleapis.com");
    // Aliases resolve to the role's key (K-2).
    assert_eq!(b.signing_key_id(), enc_key());
}

#[tokio::test]
async fn sign_verifies_independently_and_sends_sha256_of_the_payload() {
    let fake = FakeGcp::new();
    let server = fake.serve().await;
    let b = backend(&server);
    let payload = b"lango: sign me through Cloud KMS";

    let sig = b.sign("default", payload).await.unwrap();
    assert_eq!(sig.algorithm, SignatureAlgorithm::EcdsaP256Sha256Der);
    assert_eq!(sig.bytes[0], 0x30, "DER");
    // The digest sent is SHA-256 of the payload, computed locally.
    let digest = sha256(payload);
    assert_eq!(fake.digests.lock().unwrap().as_slice(), &[digest.to_vec()]);
    // An independent verifier accepts it, for this payload only.
    assert!(openssl_verify(&fake.p256_pem(), payload, &sig.bytes));
    assert!(!openssl_verify(
        &fake.p256_pem(),
        b"another payload",
        &sig.bytes
    ));

    // The curve was learnt from getPublicKey, once; the request carried the digest's CRC32C.
    let reqs = server.requests();
    let lines: Vec<_> = reqs
        .iter()
        .map(|r| format!("{} {}", r.method, r.path))
        .collect();
    assert_eq!(
        lines,
        [
            format!("GET /v1/{}/publicKey", signer()),
            format!("POST /v1/{}:asymmetricSign", signer()),
        ]
    );
    let body = reqs[1].json();
    assert_eq!(body["digest"]["sha256"], STANDARD.encode(digest));
    assert_eq!(body["digestCrc32c"], crc(&digest));
    b.sign(&signer(), b"again").await.unwrap();
    assert_eq!(server.count(), 3, "the algorithm is cached per version");
    assert_token_everywhere(&server);

    // Through the provider: a high-S answer is normalised to low-S and still verifies.
    fake.high_s.store(true, std::sync::atomic::Ordering::SeqCst);
    let raw = b.sign("", payload).await.unwrap();
    let raw_sig = p256::ecdsa::Signature::from_der(&raw.bytes).unwrap();
    assert_ne!(raw_sig.normalize_s(), raw_sig, "the server answered high-S");
    assert!(openssl_verify(&fake.p256_pem(), payload, &raw.bytes));
    let p = provider(&b);
    let sig = p.sign("", payload).await.unwrap();
    assert_eq!(sig.algorithm, SignatureAlgorithm::EcdsaP256Sha256Der);
    let low = p256::ecdsa::Signature::from_der(&sig.bytes).unwrap();
    assert_eq!(low.normalize_s(), low);
    assert_eq!(low.r(), raw_sig.r());
    assert!(openssl_verify(&fake.p256_pem(), payload, &sig.bytes));
}

#[tokio::test]
async fn secp256k1_versions_are_detected_from_their_public_key() {
    let fake = FakeGcp::new();
    let server = fake.serve().await;
    let cfg = KmsConfig {
        signing_key_id: Some(k1_signer()),
        ..config(&server)
    };
    let b = backend_with(&cfg);
    let pk = b.public_key("").await.unwrap();
    assert_eq!(pk.algorithm, KeyAlgorithm::Secp256k1);
    assert_eq!(pk.bytes.len(), 65);
    let sig = b.sign("", b"k1 payload").await.unwrap();
    assert_eq!(sig.algorithm, SignatureAlgorithm::EcdsaSecp256k1Sha256Der);
    assert!(openssl_verify(&fake.k256_pem(), b"k1 payload", &sig.bytes));
    // public_key() filled the algorithm cache: no second getPublicKey.
    assert_eq!(server.matching("/publicKey").len(), 1);
    let via_provider = provider(&b).sign("", b"k1 payload").await.unwrap();
    assert!(openssl_verify(
        &fake.k256_pem(),
        b"k1 payload",
        &via_provider.bytes
    ));
}

#[tokio::test]
async fn public_keys_and_key_names() {
    let fake = FakeGcp::new();
    let server = fake.serve().await;
    let b = backend(&server);
    let pk = b.public_key("local").await.unwrap();
    assert_eq!(pk.algorithm, KeyAlgorithm::P256);
    assert_eq!(pk.bytes, fake.p256_sec1());
    let rsa = b.public_key(&rsa_signer()).await.unwrap();
    assert_eq!(rsa.algorithm, KeyAlgorithm::Rsa);
    assert_eq!(rsa.bytes, fake.rsa_spki());

    // RSA keys have no signature identifier here: refused before asymmetricSign.
    let e = b.sign(&rsa_signer(), b"m").await.unwrap_err();
    assert_eq!(e.kind, KmsErrorKind::InvalidKey);
    assert!(server.matching(":asymmetricSign").is_empty());

    // Signing needs a version name; garbage never reaches a URL.
    server.clear();
    for bad in [
        enc_key(),
        format!("{RING}/cryptoKeys/signer"),
        "alias/x".to_owned(),
        format!("{RING}/cryptoKeys/signer/cryptoKeyVersions/1:encrypt?x="),
        format!("{RING}/cryptoKeys/../cryptoKeys/signer/cryptoKeyVersions/1"),
    ] {
        let e = b.sign(&bad, b"m").await.unwrap_err();
        assert_eq!(e.kind, KmsErrorKind::InvalidKey, "{bad}");
        assert_eq!(e.key_id, bad);
        assert_eq!(e.provider, "gcp");
    }
    assert_eq!(server.count(), 0);
}

#[tokio::test]
async fn envelope_round_trips_and_the_server_sees_only_data_keys() {
    let fake = FakeGcp::new();
    let server = fake.serve().await;
    let b = backend(&server);
    let p = provider(&b);
    for n in [0usize, 1, 31, 4096, 64 * 1024 + 1, 1024 * 1024] {
        let value: Vec<u8> = (0..n).map(|i| (i * 7 % 251) as u8).collect();
        let blob = p.encrypt("", &value, ctx(b"row-1")).await.unwrap();
        let back = p.decrypt("", &blob, ctx(b"row-1")).await.unwrap();
        assert_eq!(back.expose(), value.as_slice(), "{n} bytes");
    }
    // Only 32-byte data keys went to the service, each bound to the row through the AAD.
    for (len, aad) in fake.encrypts.lock().unwrap().iter() {
        assert_eq!(*len, 32);
        assert!(aad.ends_with(b"secrets\0row-1"), "{aad:?}");
    }
    // The blob records the key and the version that wrapped its data key.
    let blob = p.encrypt("", b"secret", ctx(b"row-1")).await.unwrap();
    let env = EnvelopePayload::parse(&blob[9..]).unwrap();
    assert_eq!(env.key_id, enc_key());
    assert_eq!(env.key_version, Some("cryptoKeyVersions/1"));

    // Moved to another row: the service's AAD check refuses the data key.
    let e = p.decrypt("", &blob, ctx(b"row-2")).await.unwrap_err();
    assert_eq!(e.kind, ProviderErrorKind::DecryptionFailed);
    assert_eq!(kms_kind(&e), Some(KmsErrorKind::DecryptionFailed));

    // Rotation: new values use the new primary; old blobs still open (GCP reads the version
    // from the ciphertext).
    assert_eq!(fake.rotate(), 2);
    let newer = p.encrypt("", b"newer", ctx(b"row-1")).await.unwrap();
    let env = EnvelopePayload::parse(&newer[9..]).unwrap();
    assert_eq!(env.key_version, Some("cryptoKeyVersions/2"));
    assert_eq!(
        p.decrypt("", &blob, ctx(b"row-1")).await.unwrap().expose(),
        b"secret"
    );
    assert_eq!(
        p.decrypt("", &newer, ctx(b"row-1")).await.unwrap().expose(),
        b"newer"
    );
    assert_token_everywhere(&server);
}

#[tokio::test]
async fn direct_wrap_and_unwrap_send_aad_and_checksums() {
    let fake = FakeGcp::new();
    let server = fake.serve().await;
    let b = backend(&server);
    let dk = [0x42u8; 32];
    let w = b.wrap("", &dk, b"context-bytes").await.unwrap();
    assert_eq!(w.key_version.as_deref(), Some("cryptoKeyVersions/1"));
    let req = &server.matching(":encrypt")[0];
    assert_eq!(req.path, format!("/v1/{}:encrypt", enc_key()));
    let body = req.json();
    assert_eq!(body["plaintext"], STANDARD.encode(dk));
    assert_eq!(body["plaintextCrc32c"], crc(&dk));
    assert_eq!(
        body["additionalAuthenticatedData"],
        STANDARD.encode(b"context-bytes")
    );
    assert_eq!(
        body["additionalAuthenticatedDataCrc32c"],
        crc(b"context-bytes")
    );

    let back = b
        .unwrap(
            "",
            &w.ciphertext,
            w.key_version.as_deref(),
            b"context-bytes",
        )
        .await
        .unwrap();
    assert_eq!(back.expose(), dk);
    let body = server.matching(":decrypt")[0].json();
    assert_eq!(body["ciphertext"], STANDARD.encode(&w.ciphertext));
    assert_eq!(body["ciphertextCrc32c"], crc(&w.ciphertext));

    let e = b
        .unwrap("", &w.ciphertext, None, b"other context")
        .await
        .unwrap_err();
    assert_eq!(e.kind, KmsErrorKind::DecryptionFailed);
    assert!(e.message.contains("Decryption failed"), "{e}");

    // No context (Go-written values): no AAD fields at all, and the round trip works.
    server.clear();
    let w = b.wrap("", b"go value", &[]).await.unwrap();
    let body = server.matching(":encrypt")[0].json();
    assert!(body.get("additionalAuthenticatedData").is_none());
    assert!(body.get("additionalAuthenticatedDataCrc32c").is_none());
    let back = b.unwrap("", &w.ciphertext, None, &[]).await.unwrap();
    assert_eq!(back.expose(), b"go value");

    // Over 64 KiB is refused before the call.
    server.clear();
    let e = b.wrap("", &vec![0; 64 * 1024 + 1], &[]).await.unwrap_err();
    assert_eq!(e.kind, KmsErrorKind::Other);
    assert_eq!(server.count(), 0);
}

#[tokio::test]
async fn decrypt_with_a_version_name_is_invalid_key() {
    // K-2: decrypt needs the CryptoKey; the version comes from the ciphertext.
    let fake = FakeGcp::new();
    let server = fake.serve().await;
    let b = backend(&server);
    let w = b.wrap(&enc_key(), b"dk", b"c").await.unwrap();
    server.clear();
    let e = b
        .unwrap(&enc_version(1), &w.ciphertext, None, b"c")
        .await
        .unwrap_err();
    assert_eq!(e.kind, KmsErrorKind::InvalidKey);
    assert_eq!(e.op, "decrypt");
    assert_eq!(e.key_id, enc_version(1));
    assert!(e.message.contains("CryptoKey"), "{e}");
    // Encrypting under a version would write values this key id could never decrypt.
    let e = b.wrap(&enc_version(1), b"dk", b"c").await.unwrap_err();
    assert_eq!(e.kind, KmsErrorKind::InvalidKey);
    assert_eq!(server.count(), 0, "refused before any request");

    // Configured as the encryption key, the provider fails the same way, without fallback.
    let cfg = KmsConfig {
        encryption_key_id: Some(enc_version(1)),
        ..config(&server)
    };
    let p = provider(&backend_with(&cfg));
    let e = p.encrypt("", b"v", ctx(b"r")).await.unwrap_err();
    assert_eq!(e.kind, ProviderErrorKind::InvalidKey);
    assert!(!e.is_transient());
}

#[tokio::test]
async fn each_status_maps_to_its_kind() {
    let fake = FakeGcp::new();
    let server = fake.serve().await;
    let b = backend(&server);
    b.sign("", b"warm").await.unwrap(); // caches the curve: one request per sign below
    let table = [
        ("PERMISSION_DENIED", KmsErrorKind::AccessDenied),
        ("UNAUTHENTICATED", KmsErrorKind::AccessDenied),
        ("NOT_FOUND", KmsErrorKind::InvalidKey),
        ("FAILED_PRECONDITION", KmsErrorKind::KeyDisabled),
        ("RESOURCE_EXHAUSTED", KmsErrorKind::Throttled),
        ("UNAVAILABLE", KmsErrorKind::Unavailable),
        ("INTERNAL", KmsErrorKind::Unavailable),
        ("INVALID_ARGUMENT", KmsErrorKind::InvalidKey),
        ("DEADLINE_EXCEEDED", KmsErrorKind::Unavailable),
        ("CANCELLED", KmsErrorKind::Other),
        ("ABORTED", KmsErrorKind::Other),
    ];
    for (status, kind) in table {
        server.clear();
        fake.fail_next([Fault::Status(status)]);
        let e = b.sign("", b"m").await.unwrap_err();
        assert_eq!(e.kind, kind, "{status}");
        assert_eq!((e.provider, &*e.op), ("gcp", "sign"));
        assert_eq!(e.key_id, signer());
        assert!(e.message.contains(status), "{e}");
        assert!(e.message.contains(&format!("injected {status}")), "{e}");
        assert_eq!(
            rest::http_status(&e).map(|s| s.status),
            Some(http_code(status))
        );
        assert_eq!(e.is_transient(), kind.is_transient());
        assert_eq!(server.count(), 1, "one attempt per backend call");
    }
    // Bodies that are not Cloud KMS errors (a proxy's page) fall back to the HTTP status.
    fake.fail_next([Fault::Html(502)]);
    let e = b.sign("", b"m").await.unwrap_err();
    assert_eq!(e.kind, KmsErrorKind::Unavailable);
    fake.fail_next([Fault::Html(400)]);
    let e = b.sign("", b"m").await.unwrap_err();
    assert_eq!(e.kind, KmsErrorKind::Other);
    assert!(e.message.contains("HTTP 400"), "{e}");
}

#[tokio::test]
async fn deadline_exceeded_and_dropped_connections_are_unavailable_and_retried() {
    let fake = FakeGcp::new();
    let server = fake.serve().await;
    let b = backend(&server);

    // One backend call is one request, even when the connection drops.
    fake.fail_next([Fault::Drop]);
    let e = b.wrap("", b"dk", b"c").await.unwrap_err();
    assert_eq!(e.kind, KmsErrorKind::Unavailable, "{e}");
    assert!(
        rest::http_status(&e).is_none(),
        "a transport error, not a response: {e}"
    );
    assert_eq!(server.matching(":encrypt").len(), 1);

    // Through the provider: transient failures are retried until success.
    let p = provider(&b);
    server.clear();
    fake.fail_next([
        Fault::Status("DEADLINE_EXCEEDED"),
        Fault::Drop,
        Fault::Status("UNAVAILABLE"),
    ]);
    let blob = p.encrypt("", b"value", ctx(b"row")).await.unwrap();
    assert_eq!(server.matching(":encrypt").len(), 4);
    assert_eq!(
        p.decrypt("", &blob, ctx(b"row")).await.unwrap().expose(),
        b"value"
    );

    // Dropped every time: maxRetries + 1 attempts, then Unavailable.
    server.clear();
    fake.fail_next([Fault::Drop, Fault::Drop, Fault::Drop, Fault::Drop]);
    let e = p.encrypt("", b"value", ctx(b"row")).await.unwrap_err();
    assert_eq!(e.kind, ProviderErrorKind::Unavailable);
    assert_eq!(kms_kind(&e), Some(KmsErrorKind::Unavailable));
    assert_eq!(server.matching(":encrypt").len(), 4);

    // Decrypt and sign are retried the same way; a refusal is not retried.
    server.clear();
    fake.fail_next([Fault::Status("DEADLINE_EXCEEDED")]);
    p.decrypt("", &blob, ctx(b"row")).await.unwrap();
    assert_eq!(server.matching(":decrypt").len(), 2);
    p.sign("", b"warm").await.unwrap();
    server.clear();
    fake.fail_next([Fault::Drop]);
    p.sign("", b"m").await.unwrap();
    assert_eq!(server.matching(":asymmetricSign").len(), 2);
    server.clear();
    fake.fail_next([Fault::Status("PERMISSION_DENIED")]);
    let e = p.encrypt("", b"value", ctx(b"row")).await.unwrap_err();
    assert_eq!(e.kind, ProviderErrorKind::AccessDenied);
    assert_eq!(server.count(), 1);

    // A server slower than the per-attempt deadline: that attempt is Unavailable, and retried.
    let quick = KmsProvider::new(b.clone(), policy(2, Duration::from_millis(300)));
    server.clear();
    fake.fail_next([Fault::Delay(Duration::from_secs(3))]);
    quick.encrypt("", b"value", ctx(b"row")).await.unwrap();
    assert_eq!(server.matching(":encrypt").len(), 2);
}

#[tokio::test]
async fn crc32c_mismatches_fail_the_request() {
    let fake = FakeGcp::new();
    let server = fake.serve().await;
    let b = backend(&server);
    b.sign("", b"warm").await.unwrap();
    let integrity = |e: &KmsError, what: &str| {
        assert_eq!(e.kind, KmsErrorKind::Unavailable, "{e}");
        assert!(e.message.starts_with("integrity check failed"), "{e}");
        assert!(e.message.contains(what), "{e}");
    };

    fake.fail_next([Fault::CorruptResponseCrc]);
    integrity(&b.sign("", b"m").await.unwrap_err(), "signature");
    fake.fail_next([Fault::UnverifiedRequestCrc]);
    integrity(&b.sign("", b"m").await.unwrap_err(), "digest CRC32C");

    fake.fail_next([Fault::CorruptResponseCrc]);
    integrity(&b.wrap("", b"dk", b"c").await.unwrap_err(), "ciphertext");
    fake.fail_next([Fault::UnverifiedRequestCrc]);
    integrity(
        &b.wrap("", b"dk", b"c").await.unwrap_err(),
        "plaintext CRC32C",
    );

    let w = b.wrap("", b"dk", b"c").await.unwrap();
    fake.fail_next([Fault::CorruptResponseCrc]);
    integrity(
        &b.unwrap("", &w.ciphertext, None, b"c").await.unwrap_err(),
        "plaintext",
    );
    fake.fail_next([Fault::CorruptResponseCrc]);
    integrity(&b.public_key("").await.unwrap_err(), "pem");

    // The provider retries a corrupted answer (Google's advice) and gives up after the budget.
    let p = provider(&b);
    server.clear();
    fake.fail_next([Fault::CorruptResponseCrc]);
    p.encrypt("", b"v", ctx(b"r")).await.unwrap();
    assert_eq!(server.matching(":encrypt").len(), 2);
    server.clear();
    fake.fail_next(std::iter::repeat_n(Fault::CorruptResponseCrc, 4));
    let e = p.encrypt("", b"v", ctx(b"r")).await.unwrap_err();
    assert!(e.detail.contains("integrity check failed"), "{e}");
    assert_eq!(server.matching(":encrypt").len(), 4);
    assert_eq!(fake.pending_faults(), 0);
}

struct BrokenTokens;

#[async_trait]
impl TokenSource for BrokenTokens {
    async fn token(&self) -> Result<SecretString, KmsError> {
        Err(KmsError::new(
            "gcp",
            "token",
            "",
            KmsErrorKind::Unavailable,
            "metadata server unreachable",
        ))
    }
}

#[tokio::test]
async fn the_bearer_token_is_checked_and_never_shown() {
    let fake = FakeGcp::new();
    let server = fake.serve().await;
    let cfg = config(&server);
    let wrong = GcpKms::with_token_source(&cfg, Arc::new(StaticToken::new("wrong-token"))).unwrap();
    let e = wrong.wrap("", b"dk", b"c").await.unwrap_err();
    assert_eq!(e.kind, KmsErrorKind::AccessDenied);
    assert!(e.message.contains("UNAUTHENTICATED"), "{e}");
    assert_eq!(
        server.requests()[0].header("authorization"),
        Some("Bearer wrong-token")
    );

    // A token failure keeps its kind, names the call, and sends nothing.
    server.clear();
    let broken = GcpKms::with_token_source(&cfg, Arc::new(BrokenTokens)).unwrap();
    let e = broken.wrap("", b"dk", b"c").await.unwrap_err();
    assert_eq!(e.kind, KmsErrorKind::Unavailable);
    assert_eq!((&*e.op, e.key_id.as_str()), ("encrypt", enc_key().as_str()));
    assert!(e.message.contains("metadata server unreachable"), "{e}");
    assert_eq!(server.count(), 0);

    let good = backend(&server);
    good.sign("", b"m").await.unwrap();
    assert!(!format!("{good:?}").contains(TOKEN));
    fake.fail_next([Fault::Status("PERMISSION_DENIED")]);
    let e = good.sign("", b"m").await.unwrap_err();
    assert!(!format!("{e} {e:?}").contains(TOKEN));
}

#[tokio::test]
async fn list_keys_reads_every_page_of_the_key_ring() {
    let fake = FakeGcp::new();
    let server = fake.serve().await;
    let b = backend(&server);
    let keys = b.list_keys().await.unwrap();
    let names: Vec<_> = keys.iter().map(|k| k.key_id.clone()).collect();
    assert_eq!(
        names,
        [
            format!("{RING}/cryptoKeys/signer"),
            format!("{RING}/cryptoKeys/k1signer"),
            format!("{RING}/cryptoKeys/rsasigner"),
            enc_key(),
        ]
    );
    assert_eq!(keys[0].usage, Some(KeyUsage::Sign));
    assert_eq!(keys[0].algorithm.as_deref(), Some("EC_SIGN_P256_SHA256"));
    assert_eq!(keys[0].enabled, None);
    assert_eq!(keys[3].usage, Some(KeyUsage::Encrypt));
    assert_eq!(
        keys[3].algorithm.as_deref(),
        Some("GOOGLE_SYMMETRIC_ENCRYPTION")
    );
    assert_eq!(keys[3].enabled, Some(true));
    // Both configured keys share one ring: listed once, in two pages.
    let lists = server.matching("/cryptoKeys");
    assert_eq!(lists.len(), 2);
    assert_eq!(lists[0].query_param("pageToken"), None);
    assert_eq!(lists[0].query_param("pageSize").as_deref(), Some("100"));
    assert_eq!(lists[1].query_param("pageToken").as_deref(), Some("tok-2"));
}

#[tokio::test]
async fn oversized_responses_are_refused() {
    let fake = FakeGcp::new();
    let server = fake.serve().await;
    let b = backend(&server);
    fake.fail_next([Fault::HugeBody]);
    let e = b.wrap("", b"dk", b"c").await.unwrap_err();
    assert_eq!(e.kind, KmsErrorKind::Other);
    assert!(e.message.contains("exceeds 1048576 bytes"), "{e}");
}

/// Issue 17: a key version disabled in Cloud KMS (FAILED_PRECONDITION) or a caller whose IAM
/// binding was removed (PERMISSION_DENIED) must stop new values, not move them to the local
/// key.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_disabled_or_denied_key_fails_closed_in_the_composite() {
    let fake = FakeGcp::new();
    let server = fake.serve().await;
    let b = backend(&server);
    let interval = Duration::from_millis(200);
    let (composite, checker) = rest_server::probed_composite(Arc::new(provider(&b)), interval);
    rest_server::assert_refusal_fails_closed(
        &composite,
        &checker,
        ProviderTag::GcpKms,
        interval,
        || fake.set_version_enabled(1, false),
        || fake.set_version_enabled(1, true),
        rest_server::Refusal {
            kind: ProviderErrorKind::KeyDisabled,
            key_state: "disabled",
            server_text: "current state is: DISABLED",
        },
    )
    .await;
    rest_server::assert_refusal_fails_closed(
        &composite,
        &checker,
        ProviderTag::GcpKms,
        interval,
        || fake.denied.store(true, std::sync::atomic::Ordering::SeqCst),
        || {
            fake.denied
                .store(false, std::sync::atomic::Ordering::SeqCst)
        },
        rest_server::Refusal {
            kind: ProviderErrorKind::AccessDenied,
            key_state: "access denied",
            server_text: "PERMISSION_DENIED",
        },
    )
    .await;
    assert_eq!(composite.fallback_count(), 0);
}
