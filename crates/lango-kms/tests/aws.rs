//! The AWS KMS backend against moto in server mode (spec §5.2 "AWS with moto in server mode",
//! items 1–5), with a fault-injecting proxy between the backend and moto, and signatures
//! checked by an independent verifier (Python `cryptography`).
//!
//! Every test starts its own moto on a free port (`LANGO_TEST_PYTHON -m moto.server`) and,
//! where it talks to the backend, its own proxy; keys are created by a separate SDK client
//! that talks to moto directly. Credentials are dummies in the environment (the SDK default
//! chain is what the backend uses); the region comes from the configuration.
//!
//! moto 5.2.5 ignores `MessageType = DIGEST` (P27), so only RAW signing is exercised here.
//!
//! Without moto the tests print why and pass, except with `CI=true`, where they fail.
#![cfg(feature = "kms-aws")]
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::print_stderr,
    missing_docs
)]

#[path = "support/aws_moto.rs"]
mod aws_moto;
#[path = "support/aws_proxy.rs"]
mod aws_proxy;

use std::{sync::Arc, time::Duration};

use aws_moto::{Moto, SECRET_ACCESS_KEY, credentials_in_env};
use aws_proxy::{Fault, FaultProxy};
use aws_sdk_kms::{
    Client,
    primitives::Blob,
    types::{KeySpec, KeyState, KeyUsageType},
};
use lango_crypto::{
    CryptoProvider, LocalCryptoProvider, MasterKey,
    aead::{BlobPurpose, ProviderTag},
    provider::{AeadContext, KeyAlgorithm, ProviderError, ProviderErrorKind, SignatureAlgorithm},
};
use lango_kms::{
    CompositeProvider, Connection, Error, FallbackMode, HealthChecker, KeyRole, KmsBackend,
    KmsConfig, KmsErrorKind, KmsProvider, RetryPolicy, aws::AwsKms, error::kms_kind,
    new_kms_provider, retry::Jitter,
};

// ---------------------------------------------------------------------------------------------
// Harness

/// moto, a proxy in front of it, and an admin client that bypasses the proxy.
struct Env {
    moto: Moto,
    proxy: FaultProxy,
    admin: Client,
}

async fn env(test: &str) -> Option<Env> {
    let moto = Moto::start(test)?;
    let proxy = FaultProxy::start(moto.addr()).await;
    let admin = moto.admin();
    Some(Env { moto, proxy, admin })
}

/// A created key: its id and ARN.
struct Key {
    id: String,
    arn: String,
}

async fn create_key(admin: &Client, spec: KeySpec, usage: KeyUsageType) -> Key {
    let out = admin
        .create_key()
        .key_spec(spec.clone())
        .key_usage(usage)
        .send()
        .await
        .unwrap_or_else(|e| {
            panic!(
                "moto must support CreateKey {spec:?}: {}",
                aws_sdk_kms::error::DisplayErrorContext(&e)
            )
        });
    let meta = out.key_metadata().expect("key metadata");
    Key {
        id: meta.key_id().to_owned(),
        arn: meta.arn().expect("key ARN").to_owned(),
    }
}

async fn symmetric_key(admin: &Client) -> Key {
    create_key(
        admin,
        KeySpec::SymmetricDefault,
        KeyUsageType::EncryptDecrypt,
    )
    .await
}

async fn alias(admin: &Client, name: &str, key: &Key) {
    admin
        .create_alias()
        .alias_name(name)
        .target_key_id(&key.id)
        .send()
        .await
        .expect("CreateAlias");
}

fn config(endpoint: &str, key_id: &str) -> KmsConfig {
    KmsConfig {
        region: aws_moto::REGION.to_owned(),
        key_id: key_id.to_owned(),
        endpoint: endpoint.to_owned(),
        allow_insecure_endpoint: true,
        ..KmsConfig::default()
    }
}

async fn backend(endpoint: &str, key_id: &str) -> Arc<AwsKms> {
    Arc::new(
        AwsKms::new(&config(endpoint, key_id))
            .await
            .expect("AwsKms::new"),
    )
}

/// Short, deterministic retries for tests.
fn policy(max_retries: u32, per_attempt_timeout: Duration) -> RetryPolicy {
    RetryPolicy {
        max_retries,
        base: Duration::from_millis(10),
        max_delay: Duration::from_millis(40),
        jitter: Jitter::None,
        per_attempt_timeout,
        ..RetryPolicy::default()
    }
}

fn provider(backend: &Arc<AwsKms>, max_retries: u32) -> KmsProvider {
    KmsProvider::new(
        backend.clone() as Arc<dyn KmsBackend>,
        policy(max_retries, Duration::from_secs(5)),
    )
}

fn ctx(row: &[u8]) -> AeadContext<'_> {
    AeadContext {
        purpose: BlobPurpose::Secrets,
        context: row,
        max_blob_len: 4 << 20,
    }
}

fn kind(e: &ProviderError) -> Option<KmsErrorKind> {
    kms_kind(e)
}

// ---------------------------------------------------------------------------------------------
// Construction

#[tokio::test]
async fn construction_enforces_key_endpoint_and_secrecy_rules() {
    credentials_in_env();
    // Empty key id: the Go text, kind InvalidKey, also through the factory.
    let empty = KmsConfig {
        region: "us-east-1".into(),
        ..KmsConfig::default()
    };
    let e = AwsKms::new(&empty).await.unwrap_err();
    assert!(matches!(e, Error::InvalidConfig { .. }), "{e:?}");
    assert_eq!(e.to_string(), "new AWS KMS provider: KMS invalid key");
    assert_eq!(e.kind(), KmsErrorKind::InvalidKey);
    let Err(e) = new_kms_provider("aws-kms", &empty).await else {
        panic!("empty key id accepted by the factory");
    };
    assert_eq!(e.to_string(), "new AWS KMS provider: KMS invalid key");

    // Plain http only with allowInsecureEndpoint (K-12).
    let mut cfg = config("http://127.0.0.1:9", "alias/main");
    cfg.allow_insecure_endpoint = false;
    let e = AwsKms::new(&cfg).await.unwrap_err();
    assert_eq!(e.kind(), KmsErrorKind::Other);
    assert!(e.to_string().contains("allowInsecureEndpoint"), "{e}");
    cfg.endpoint = "127.0.0.1:9".into();
    assert!(AwsKms::new(&cfg).await.is_err());

    // A valid configuration builds without any call; the role defaults follow K-2.
    let mut cfg = config("http://127.0.0.1:9", "alias/main");
    cfg.encryption_key_id = Some("alias/enc".into());
    let b = AwsKms::new(&cfg).await.unwrap();
    assert_eq!(b.signing_key_id(), "alias/main");
    assert_eq!(b.encryption_key_id(), "alias/enc");
    assert_eq!(b.resolve_key_id(KeyRole::Encryption, "local"), "alias/enc");
    assert_eq!(b.resolve_key_id(KeyRole::Signing, "default"), "alias/main");
    assert_eq!(b.region(), "us-east-1");
    assert_eq!(b.endpoint(), Some("http://127.0.0.1:9"));
    let debug = format!("{b:?}");
    assert!(
        debug.contains("us-east-1") && debug.contains("alias/enc"),
        "{debug}"
    );
    assert!(!debug.contains(SECRET_ACCESS_KEY), "{debug}");

    // Through the factory, with the feature on.
    let dynb = new_kms_provider("aws-kms", &cfg).await.unwrap();
    assert_eq!(dynb.name().short_name(), "aws");

    // Nothing listens on port 9: connection refused is Unavailable (transient), and neither
    // the error's Display nor its Debug (which includes the SDK error) shows the secret.
    let e = b.wrap("", &[1; 32], b"ctx").await.unwrap_err();
    assert_eq!(e.kind, KmsErrorKind::Unavailable, "{e}");
    assert_eq!(
        (e.provider, &*e.op, e.key_id.as_str()),
        ("aws", "encrypt", "alias/enc")
    );
    assert!(e.is_transient());
    let shown = format!("{e} {e:?}");
    assert!(!shown.contains(SECRET_ACCESS_KEY), "{shown}");
}

// ---------------------------------------------------------------------------------------------
// §5.2 AWS item 1: encryption

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn envelope_round_trips_by_key_id_arn_and_alias_and_kms_sees_only_data_keys() {
    let Some(env) =
        env("envelope_round_trips_by_key_id_arn_and_alias_and_kms_sees_only_data_keys").await
    else {
        return;
    };
    let key = symmetric_key(&env.admin).await;
    alias(&env.admin, "alias/lango-enc", &key).await;
    let b = backend(&env.proxy.url(), &key.id).await;
    let p = provider(&b, 3);

    let big: Vec<u8> = (0..(1 << 20)).map(|i| (i % 251) as u8).collect();
    let mut encrypts = 0;
    for key_ref in ["", key.id.as_str(), key.arn.as_str(), "alias/lango-enc"] {
        let resolved = if key_ref.is_empty() {
            key.id.as_str()
        } else {
            key_ref
        };
        for plain in [&b""[..], b"x", &[7u8; 4097][..], &big[..]] {
            let blob = p.encrypt(key_ref, plain, ctx(b"row-1")).await.unwrap();
            encrypts += 1;
            assert_eq!(&blob[..4], b"LGO\x01");
            assert_eq!(blob[4], ProviderTag::AwsKms as u8);
            // The header records the resolved key that wrapped the data key.
            assert_eq!(usize::from(blob[9]), resolved.len());
            assert_eq!(&blob[10..10 + resolved.len()], resolved.as_bytes());
            let back = p.decrypt(key_ref, &blob, ctx(b"row-1")).await.unwrap();
            assert_eq!(back.expose(), plain, "{key_ref} {}", plain.len());
            // Bound to the row.
            let e = p.decrypt(key_ref, &blob, ctx(b"row-2")).await.unwrap_err();
            assert_eq!(e.kind, ProviderErrorKind::DecryptionFailed, "{e}");
        }
    }

    // moto saw one Encrypt per value, each with a 32-byte data key and an encryption context,
    // and never a request body anywhere near the size of the values.
    let seen = env.proxy.seen();
    let enc: Vec<_> = seen.iter().filter(|s| s.op == "Encrypt").collect();
    assert_eq!(enc.len(), encrypts);
    for s in &enc {
        assert_eq!(s.plaintext().map(|p| p.len()), Some(32), "{:?}", s.op);
        assert!(s.has_encryption_context());
    }
    assert!(seen.iter().any(|s| s.op == "Decrypt"));
    let largest = seen.iter().map(|s| s.body.len()).max().unwrap();
    assert!(
        largest < 2048,
        "a request of {largest} bytes reached the KMS"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn direct_wrap_limits_context_binding_and_go_written_blobs() {
    let Some(env) = env("direct_wrap_limits_context_binding_and_go_written_blobs").await else {
        return;
    };
    let key = symmetric_key(&env.admin).await;
    alias(&env.admin, "alias/go", &key).await;
    let b = backend(&env.proxy.url(), "alias/go").await;

    // 4096 bytes: one Encrypt, and back.
    let max = vec![0x42; 4096];
    let w = b.wrap("", &max, b"ctx-a").await.unwrap();
    assert_eq!(w.key_version, None);
    let back = b.unwrap("", &w.ciphertext, None, b"ctx-a").await.unwrap();
    assert_eq!(back.expose(), &max[..]);

    // 4097 bytes: refused before the call, not transient.
    let before = env.proxy.count("Encrypt");
    let e = b.wrap("", &[0x42; 4097], b"ctx-a").await.unwrap_err();
    assert_eq!(e.kind, KmsErrorKind::Other, "{e}");
    assert!(!e.is_transient());
    assert!(e.to_string().contains("4096"), "{e}");
    assert_eq!(env.proxy.count("Encrypt"), before);
    // Also through the provider's retry loop: a single refusal, no request.
    let p = provider(&b, 3);
    let e = p.decrypt_legacy("", &[0; 6145]).await.unwrap_err();
    assert_eq!(e.kind, KmsErrorKind::DecryptionFailed, "{e}");
    assert_eq!(env.proxy.count("Decrypt"), 1);

    // The context is the KMS encryption context: another or none does not decrypt.
    for other in [&b"ctx-b"[..], b""] {
        let e = b.unwrap("", &w.ciphertext, None, other).await.unwrap_err();
        assert_eq!(e.kind, KmsErrorKind::DecryptionFailed, "{e}");
        assert_eq!((e.provider, &*e.op), ("aws", "decrypt"));
    }

    // A Go-written blob: a direct Encrypt without context, headerless.
    let go = env
        .admin
        .encrypt()
        .key_id(&key.id)
        .plaintext(Blob::new(b"written by the Go node".to_vec()))
        .send()
        .await
        .unwrap()
        .ciphertext_blob
        .unwrap()
        .into_inner();
    env.proxy.reset_log();
    for key_ref in ["", "default", "alias/go"] {
        let plain = p.decrypt_legacy(key_ref, &go).await.unwrap();
        assert_eq!(plain.expose(), b"written by the Go node");
    }
    let seen = env.proxy.seen();
    assert_eq!(seen.len(), 3);
    assert!(
        seen.iter()
            .all(|s| s.op == "Decrypt" && !s.has_encryption_context())
    );
    // Never through the strict path.
    assert!(p.decrypt("", &go, ctx(b"row")).await.is_err());
}

// ---------------------------------------------------------------------------------------------
// §5.2 AWS item 2: signatures

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn p256_signatures_are_der_and_verify_independently() {
    let Some(env) = env("p256_signatures_are_der_and_verify_independently").await else {
        return;
    };
    let key = create_key(&env.admin, KeySpec::EccNistP256, KeyUsageType::SignVerify).await;
    alias(&env.admin, "alias/sign", &key).await;
    let spki = env
        .admin
        .get_public_key()
        .key_id(&key.id)
        .send()
        .await
        .unwrap()
        .public_key
        .unwrap()
        .into_inner();
    let b = backend(&env.proxy.url(), &key.id).await;
    let p = provider(&b, 3);

    // The public key as a SEC1 point, equal to what an independent parser makes of the SPKI.
    let pk = p.public_key("").await.unwrap();
    assert_eq!(pk.algorithm, KeyAlgorithm::P256);
    assert_eq!(pk.bytes, env.moto.sec1_point_of(&spki));

    for (key_ref, msg) in [
        ("", &b"hello from lango"[..]),
        (key.arn.as_str(), &[0xab; 4096][..]),
        ("alias/sign", b"x"),
    ] {
        let sig = p.sign(key_ref, msg).await.unwrap();
        assert_eq!(sig.algorithm, SignatureAlgorithm::EcdsaP256Sha256Der);
        assert!(env.moto.verify_ecdsa_sha256(&spki, msg, &sig.bytes));
        let mut other = msg.to_vec();
        other[0] ^= 1;
        assert!(!env.moto.verify_ecdsa_sha256(&spki, &other, &sig.bytes));
        // Low-S after the provider's normalisation (K-4).
        let parsed = p256::ecdsa::Signature::from_der(&sig.bytes).unwrap();
        assert_eq!(parsed.normalize_s(), parsed);
        // The backend's raw output is moto's DER, which verifies as well.
        let raw = b.sign(key_ref, msg).await.unwrap();
        assert_eq!(raw.algorithm, SignatureAlgorithm::EcdsaP256Sha256Der);
        assert!(env.moto.verify_ecdsa_sha256(&spki, msg, &raw.bytes));
    }

    // RAW messages over 4096 bytes (and empty ones) are refused before the call.
    let before = env.proxy.count("Sign");
    for bad in [&[0u8; 4097][..], b""] {
        let e = b.sign("", bad).await.unwrap_err();
        assert_eq!(e.kind, KmsErrorKind::Other, "{e}");
        assert!(!e.is_transient());
        assert_eq!(e.op, "sign");
    }
    assert_eq!(env.proxy.count("Sign"), before);
    // Every Sign was RAW ECDSA_SHA_256.
    for s in env.proxy.seen().iter().filter(|s| s.op == "Sign") {
        let body = String::from_utf8_lossy(&s.body);
        assert!(body.contains("\"MessageType\":\"RAW\""), "{body}");
        assert!(
            body.contains("\"SigningAlgorithm\":\"ECDSA_SHA_256\""),
            "{body}"
        );
    }
    // Both caches work: `public_key("")` filled the backend's and the provider's entry for the
    // default key with one request; the ARN and the alias cost one request in each cache.
    assert_eq!(env.proxy.count("GetPublicKey"), 1 + 2 * 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secp256k1_is_supported_by_moto_and_signatures_verify_independently() {
    let Some(env) = env("secp256k1_is_supported_by_moto_and_signatures_verify_independently").await
    else {
        return;
    };
    // The test asserts support explicitly (create_key panics if moto refuses the spec).
    let key = create_key(&env.admin, KeySpec::EccSecgP256K1, KeyUsageType::SignVerify).await;
    let spki = env
        .admin
        .get_public_key()
        .key_id(&key.id)
        .send()
        .await
        .unwrap()
        .public_key
        .unwrap()
        .into_inner();
    let b = backend(&env.proxy.url(), &key.id).await;
    let p = provider(&b, 3);
    let pk = p.public_key("").await.unwrap();
    assert_eq!(pk.algorithm, KeyAlgorithm::Secp256k1);
    assert_eq!(pk.bytes, env.moto.sec1_point_of(&spki));
    // Enough signatures that moto's high-S outputs (P6) are certain to occur among them.
    let mut normalised = 0;
    for i in 0..16u8 {
        let msg = [i; 77];
        let raw = b.sign("", &msg).await.unwrap();
        assert_eq!(raw.algorithm, SignatureAlgorithm::EcdsaSecp256k1Sha256Der);
        let sig = p.sign("", &msg).await.unwrap();
        assert_eq!(sig.algorithm, SignatureAlgorithm::EcdsaSecp256k1Sha256Der);
        let parsed = k256::ecdsa::Signature::from_der(&sig.bytes).unwrap();
        assert_eq!(
            parsed.normalize_s(),
            parsed,
            "provider output must be low-S"
        );
        assert!(env.moto.verify_ecdsa_sha256(&spki, &msg, &sig.bytes));
        let raw_parsed = k256::ecdsa::Signature::from_der(&raw.bytes).unwrap();
        if raw_parsed.normalize_s() != raw_parsed {
            normalised += 1;
        }
    }
    // moto's signatures are high-S about half the time (P6), so the normalisation was
    // exercised (all 16 low-S by chance: probability 2^-16).
    assert!(normalised > 0, "none of 16 raw moto signatures was high-S");
}

// ---------------------------------------------------------------------------------------------
// §5.2 AWS item 3: refusals

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_are_classified_and_never_retried() {
    let Some(env) = env("refusals_are_classified_and_never_retried").await else {
        return;
    };
    let sym = symmetric_key(&env.admin).await;
    let other = symmetric_key(&env.admin).await;
    let sign = create_key(&env.admin, KeySpec::EccNistP256, KeyUsageType::SignVerify).await;
    let b = backend(&env.proxy.url(), &sym.id).await;
    let p = provider(&b, 3);

    // A blob of another key. Through the envelope the provider refuses it itself: the header
    // names the other key, and no Decrypt is sent.
    let blob = p.encrypt(&other.id, b"v", ctx(b"r")).await.unwrap();
    env.proxy.reset_log();
    let e = p.decrypt(&sym.id, &blob, ctx(b"r")).await.unwrap_err();
    assert_eq!(e.kind, ProviderErrorKind::DecryptionFailed, "{e}");
    assert_eq!(env.proxy.count("Decrypt"), 0);
    // Directly (KeyId is sent with the blob): AWS answers IncorrectKeyException, which is
    // DecryptionFailed. moto 5.2.5 answers AccessDeniedException instead
    // (moto/kms/models.py, `decrypt`); both are refusals, never retried.
    let w = b.wrap(&other.id, &[9; 32], b"").await.unwrap();
    let e = b
        .unwrap(&sym.id, &w.ciphertext, None, b"")
        .await
        .unwrap_err();
    assert_eq!(
        e.kind,
        KmsErrorKind::AccessDenied,
        "moto's answer changed: {e}"
    );
    assert_eq!(e.key_id, sym.id);
    let e = p.decrypt_legacy("", &w.ciphertext).await.unwrap_err();
    assert_eq!(e.kind, KmsErrorKind::AccessDenied, "{e}");
    assert_eq!(
        env.proxy.count("Decrypt"),
        2,
        "refusals must not be retried"
    );
    // The AWS answer, injected by the proxy in front of moto.
    env.proxy.inject(
        "Decrypt",
        Fault::Error(400, "IncorrectKeyException"),
        Some(1),
    );
    let e = p.decrypt_legacy("", &w.ciphertext).await.unwrap_err();
    assert_eq!(e.kind, KmsErrorKind::DecryptionFailed, "{e}");
    assert!(e.to_string().contains("IncorrectKeyException"), "{e}");
    assert_eq!(env.proxy.count("Decrypt"), 3);
    // A tampered blob: moto's InvalidCiphertextException, DecryptionFailed.
    let mut tampered = w.ciphertext.clone();
    let last = tampered.len() - 1;
    tampered[last] ^= 1;
    let e = b.unwrap(&other.id, &tampered, None, b"").await.unwrap_err();
    assert_eq!(e.kind, KmsErrorKind::DecryptionFailed, "{e}");

    // Unknown key: InvalidKey, for encryption and signing alike.
    let unknown = "11111111-2222-3333-4444-555555555555";
    env.proxy.reset_log();
    let e = p.encrypt(unknown, b"v", ctx(b"r")).await.unwrap_err();
    assert_eq!(kind(&e), Some(KmsErrorKind::InvalidKey), "{e}");
    assert_eq!(e.kind, ProviderErrorKind::InvalidKey);
    let e = p.sign(unknown, b"m").await.unwrap_err();
    assert_eq!(kind(&e), Some(KmsErrorKind::InvalidKey), "{e}");
    let e = p
        .encrypt("alias/does-not-exist", b"v", ctx(b"r"))
        .await
        .unwrap_err();
    assert_eq!(kind(&e), Some(KmsErrorKind::InvalidKey), "{e}");
    assert_eq!(env.proxy.count("Encrypt"), 2);
    assert_eq!(env.proxy.count("GetPublicKey"), 1);

    // Signing with the symmetric key: InvalidKey, and no signature request at all.
    let e = p.sign(&sym.id, b"m").await.unwrap_err();
    assert_eq!(kind(&e), Some(KmsErrorKind::InvalidKey), "{e}");
    let e = b.public_key(&sym.id).await.unwrap_err();
    assert_eq!(e.kind, KmsErrorKind::InvalidKey, "{e}");
    assert_eq!(e.op, "public-key");
    assert_eq!(env.proxy.count("Sign"), 0);
    // (Encrypting with the signing key: moto 5.2.5 does not check the key usage on Encrypt,
    // so AWS's InvalidKeyUsageException is covered through the proxy in
    // `each_fault_is_classified_and_the_sdk_makes_one_attempt`.)
    assert!(p.encrypt(&sign.id, b"v", ctx(b"r")).await.is_ok());

    // Disabled key. moto 5.2.5 records DisableKey (DescribeKey says Disabled) but keeps
    // serving the key, and has no DisabledException at all; AWS refuses with
    // DisabledException, which the proxy injects here in front of the disabled key.
    env.admin
        .disable_key()
        .key_id(&sym.id)
        .send()
        .await
        .unwrap();
    let state = env
        .admin
        .describe_key()
        .key_id(&sym.id)
        .send()
        .await
        .unwrap()
        .key_metadata
        .unwrap()
        .key_state;
    assert_eq!(state, Some(KeyState::Disabled));
    assert!(
        b.wrap("", &[1; 32], b"c").await.is_ok(),
        "moto now refuses disabled keys: assert on its own answer instead of injecting one"
    );
    env.proxy.reset_log();
    env.proxy
        .inject("Encrypt", Fault::Error(400, "DisabledException"), None);
    env.proxy
        .inject("Sign", Fault::Error(400, "DisabledException"), None);
    let e = b.wrap("", &[1; 32], b"c").await.unwrap_err();
    assert_eq!(e.kind, KmsErrorKind::KeyDisabled, "{e}");
    assert!(
        e.to_string().starts_with(&format!(
            "kms aws encrypt (key={}): KMS key is disabled: DisabledException",
            sym.id
        )),
        "{e}"
    );
    let e = p.encrypt("", b"v", ctx(b"r")).await.unwrap_err();
    assert_eq!(kind(&e), Some(KmsErrorKind::KeyDisabled), "{e}");
    assert_eq!(e.kind, ProviderErrorKind::KeyDisabled);
    let e = p.sign(&sign.id, b"m").await.unwrap_err();
    assert_eq!(kind(&e), Some(KmsErrorKind::KeyDisabled), "{e}");
    assert_eq!(
        env.proxy.count("Encrypt"),
        2,
        "KeyDisabled must not be retried"
    );
    assert_eq!(
        env.proxy.count("Sign"),
        1,
        "KeyDisabled must not be retried"
    );
}

// ---------------------------------------------------------------------------------------------
// §5.2 AWS item 4: faults

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_fault_is_classified_and_the_sdk_makes_one_attempt() {
    let Some(env) = env("each_fault_is_classified_and_the_sdk_makes_one_attempt").await else {
        return;
    };
    let key = symmetric_key(&env.admin).await;
    let b = backend(&env.proxy.url(), &key.id).await;
    for (fault, expected, text) in [
        (
            Fault::Throttle,
            KmsErrorKind::Throttled,
            "ThrottlingException: Rate exceeded",
        ),
        (
            Fault::ServiceUnavailable,
            KmsErrorKind::Unavailable,
            "ServiceUnavailableException",
        ),
        (
            Fault::Internal,
            KmsErrorKind::Unavailable,
            "KMSInternalException",
        ),
        (Fault::Drop, KmsErrorKind::Unavailable, "dispatch failure"),
        (
            Fault::Error(500, "DependencyTimeoutException"),
            KmsErrorKind::Unavailable,
            "DependencyTimeoutException",
        ),
        (
            Fault::Error(500, "KeyUnavailableException"),
            KmsErrorKind::Unavailable,
            "KeyUnavailableException",
        ),
        // An unknown code: the HTTP status decides.
        (
            Fault::Error(502, "SomethingNew"),
            KmsErrorKind::Unavailable,
            "SomethingNew",
        ),
        (
            Fault::Error(429, "SomethingNew"),
            KmsErrorKind::Throttled,
            "SomethingNew",
        ),
    ] {
        env.proxy.reset_log();
        env.proxy.inject("Encrypt", fault, None);
        let e = b.wrap("", &[1; 32], b"c").await.unwrap_err();
        assert_eq!(e.kind, expected, "{fault:?}: {e}");
        assert!(e.is_transient());
        assert!(e.to_string().contains(text), "{fault:?}: {e}");
        assert_eq!(
            (e.provider, &*e.op, e.key_id.as_str()),
            ("aws", "encrypt", key.id.as_str())
        );
        // SDK retries are off: exactly one request per backend call.
        assert_eq!(env.proxy.count("Encrypt"), 1, "{fault:?}");
        assert_eq!(env.proxy.seen()[0].fault, Some(fault));
    }
    // Refusals are not transient.
    for (fault, expected) in [
        (
            Fault::Error(400, "AccessDeniedException"),
            KmsErrorKind::AccessDenied,
        ),
        (
            Fault::Error(400, "KMSInvalidStateException"),
            KmsErrorKind::KeyDisabled,
        ),
        (
            Fault::Error(400, "InvalidKeyUsageException"),
            KmsErrorKind::InvalidKey,
        ),
        (
            Fault::Error(400, "ValidationException"),
            KmsErrorKind::Other,
        ),
    ] {
        env.proxy.inject("Encrypt", fault, None);
        let e = b.wrap("", &[1; 32], b"c").await.unwrap_err();
        assert_eq!(e.kind, expected, "{fault:?}: {e}");
        assert!(!e.is_transient());
    }
    // The same on the other operations.
    env.proxy.clear_faults();
    let w = b.wrap("", &[1; 32], b"c").await.unwrap();
    env.proxy.reset_log();
    env.proxy.inject("Decrypt", Fault::Internal, None);
    let e = b.unwrap("", &w.ciphertext, None, b"c").await.unwrap_err();
    assert_eq!(e.kind, KmsErrorKind::Unavailable, "{e}");
    env.proxy.inject("ListAliases", Fault::Throttle, None);
    let e = b.list_keys().await.unwrap_err();
    assert_eq!(e.kind, KmsErrorKind::Throttled, "{e}");
    assert_eq!(e.op, "list-keys");
    assert_eq!(env.proxy.count("Decrypt"), 1);
    assert_eq!(env.proxy.count("ListAliases"), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_provider_makes_exactly_max_retries_plus_one_attempts() {
    let Some(env) = env("the_provider_makes_exactly_max_retries_plus_one_attempts").await else {
        return;
    };
    let key = symmetric_key(&env.admin).await;
    let sign = create_key(&env.admin, KeySpec::EccNistP256, KeyUsageType::SignVerify).await;
    let b = backend(&env.proxy.url(), &key.id).await;

    for max_retries in [0u32, 2] {
        let p = provider(&b, max_retries);
        let attempts = max_retries as usize + 1;
        for (fault, expected) in [
            (Fault::Throttle, KmsErrorKind::Throttled),
            (Fault::ServiceUnavailable, KmsErrorKind::Unavailable),
            (Fault::Internal, KmsErrorKind::Unavailable),
            (Fault::Drop, KmsErrorKind::Unavailable),
        ] {
            // Always failing: the last error after exactly max_retries + 1 requests.
            env.proxy.reset_log();
            env.proxy.inject("Encrypt", fault, None);
            let e = p.encrypt("", b"value", ctx(b"r")).await.unwrap_err();
            assert_eq!(kind(&e), Some(expected), "{fault:?}: {e}");
            assert!(e.is_transient());
            assert_eq!(
                env.proxy.count("Encrypt"),
                attempts,
                "{fault:?} max_retries={max_retries}"
            );
            // Failing max_retries times, then forwarded: success on the last attempt.
            env.proxy.reset_log();
            env.proxy.inject("Encrypt", fault, Some(max_retries));
            let blob = p.encrypt("", b"value", ctx(b"r")).await.unwrap();
            assert_eq!(env.proxy.count("Encrypt"), attempts, "{fault:?}");
            assert_eq!(
                p.decrypt("", &blob, ctx(b"r")).await.unwrap().expose(),
                b"value"
            );
        }
    }

    // Signing: retried the same way; the key spec lookup is not part of the count.
    let p = provider(&b, 2);
    p.sign(&sign.id, b"warm the caches").await.unwrap();
    env.proxy.reset_log();
    env.proxy.inject("Sign", Fault::Throttle, None);
    let e = p.sign(&sign.id, b"m").await.unwrap_err();
    assert_eq!(kind(&e), Some(KmsErrorKind::Throttled), "{e}");
    assert_eq!(env.proxy.count("Sign"), 3);
    env.proxy.reset_log();
    env.proxy.inject("Sign", Fault::Internal, Some(1));
    p.sign(&sign.id, b"m").await.unwrap();
    assert_eq!(env.proxy.count("Sign"), 2);
    assert_eq!(env.proxy.count("GetPublicKey"), 0);

    // A non-transient answer after a transient one ends the loop at once.
    env.proxy.clear_faults();
    env.proxy.reset_log();
    env.proxy.inject("Encrypt", Fault::Throttle, Some(1));
    let e = p
        .encrypt("alias/missing", b"v", ctx(b"r"))
        .await
        .unwrap_err();
    assert_eq!(kind(&e), Some(KmsErrorKind::InvalidKey), "{e}");
    assert_eq!(env.proxy.count("Encrypt"), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_kms_times_out_per_attempt_and_is_retried() {
    let Some(env) = env("a_slow_kms_times_out_per_attempt_and_is_retried").await else {
        return;
    };
    let key = symmetric_key(&env.admin).await;
    let b = backend(&env.proxy.url(), &key.id).await;
    let p = KmsProvider::new(
        b.clone() as Arc<dyn KmsBackend>,
        policy(2, Duration::from_millis(400)),
    );
    // Warm up (connection set-up, credentials) outside the measured calls.
    p.encrypt("", b"v", ctx(b"r")).await.unwrap();

    env.proxy.reset_log();
    env.proxy
        .inject("Encrypt", Fault::Delay(Duration::from_millis(1500)), None);
    let started = std::time::Instant::now();
    let e = p.encrypt("", b"v", ctx(b"r")).await.unwrap_err();
    assert_eq!(kind(&e), Some(KmsErrorKind::Unavailable), "{e}");
    assert!(e.to_string().contains("timed out"), "{e}");
    assert_eq!(env.proxy.count("Encrypt"), 3);
    // Three attempts cut at 400 ms (plus two short waits), not the proxy's full delays.
    assert!(
        started.elapsed() < Duration::from_millis(3000),
        "{:?}",
        started.elapsed()
    );

    env.proxy.reset_log();
    env.proxy.inject(
        "Encrypt",
        Fault::Delay(Duration::from_millis(1500)),
        Some(2),
    );
    let blob = p.encrypt("", b"v", ctx(b"r")).await.unwrap();
    assert_eq!(env.proxy.count("Encrypt"), 3);
    assert_eq!(
        p.decrypt("", &blob, ctx(b"r")).await.unwrap().expose(),
        b"v"
    );
}

// ---------------------------------------------------------------------------------------------
// §5.2 AWS item 5: health checker and composite end to end

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_checker_and_composite_follow_the_kms_down_and_up() {
    let Some(env) = env("health_checker_and_composite_follow_the_kms_down_and_up").await else {
        return;
    };
    let key = symmetric_key(&env.admin).await;
    let sign = create_key(&env.admin, KeySpec::EccNistP256, KeyUsageType::SignVerify).await;
    let mut cfg = config(&env.proxy.url(), &key.id);
    cfg.signing_key_id = Some(sign.id.clone());
    let b: Arc<dyn KmsBackend> = Arc::new(AwsKms::new(&cfg).await.unwrap());
    let primary: Arc<dyn CryptoProvider> =
        Arc::new(KmsProvider::new(b, policy(1, Duration::from_secs(2))));
    let interval = Duration::from_millis(500);
    let checker = Arc::new(HealthChecker::new(
        primary.clone(),
        "",
        KeyRole::Encryption,
        Some(interval),
    ));
    let local: Arc<dyn CryptoProvider> =
        Arc::new(LocalCryptoProvider::new(&MasterKey::generate().unwrap(), 1));
    let composite = CompositeProvider::new(primary.clone())
        .with_fallback(local)
        .with_checker(checker.clone())
        .with_mode(FallbackMode::UnavailableOnly);
    // Strict: no fallback at all.
    let strict = CompositeProvider::new(primary.clone()).with_checker(checker.clone());

    // Up: the KMS serves everything.
    assert!(checker.check().await);
    let aws_blob = composite
        .encrypt("", b"secret-1", ctx(b"r1"))
        .await
        .unwrap();
    assert_eq!(aws_blob[4], ProviderTag::AwsKms as u8);
    assert!(!composite.used_local());
    let sig = composite.sign("", b"m").await.unwrap();
    assert_eq!(sig.algorithm, SignatureAlgorithm::EcdsaP256Sha256Der);

    // Down: the probe fails once the cached result expires.
    env.proxy.stop().await;
    tokio::time::sleep(interval + Duration::from_millis(100)).await;
    assert!(!checker.check().await);
    assert!(checker.last_error().is_some());
    // Encryption falls back to the local key, loudly counted.
    let local_blob = composite
        .encrypt("", b"secret-2", ctx(b"r2"))
        .await
        .unwrap();
    assert_eq!(local_blob[4], ProviderTag::LocalMk as u8);
    assert!(composite.used_local());
    assert_eq!(composite.fallback_count(), 1);
    // Signing never falls back.
    let e = composite.sign("", b"m").await.unwrap_err();
    assert_eq!(e.kind, ProviderErrorKind::Unavailable, "{e}");
    assert_eq!(composite.fallback_count(), 1);
    // A KMS blob can only be opened by the KMS.
    let e = composite
        .decrypt("", &aws_blob, ctx(b"r1"))
        .await
        .unwrap_err();
    assert_eq!(e.kind, ProviderErrorKind::Unavailable, "{e}");
    // Without a fallback: refused.
    let e = strict
        .encrypt("", b"secret-3", ctx(b"r3"))
        .await
        .unwrap_err();
    assert_eq!(e.kind, ProviderErrorKind::Unavailable, "{e}");

    // Up again after the interval.
    env.proxy.restart().await;
    tokio::time::sleep(interval + Duration::from_millis(100)).await;
    assert!(checker.check().await);
    let aws_blob2 = composite
        .encrypt("", b"secret-4", ctx(b"r4"))
        .await
        .unwrap();
    assert_eq!(aws_blob2[4], ProviderTag::AwsKms as u8);
    assert!(!composite.used_local());
    assert_eq!(composite.fallback_count(), 1);
    for (blob, row, plain) in [
        (&aws_blob, &b"r1"[..], &b"secret-1"[..]),
        (&local_blob, b"r2", b"secret-2"),
        (&aws_blob2, b"r4", b"secret-4"),
    ] {
        let got = composite.decrypt("", blob, ctx(row)).await.unwrap();
        assert_eq!(got.expose(), plain);
    }
    assert!(composite.sign("", b"m").await.is_ok());
}

/// Issue 17: disabling the KMS key, scheduling it for deletion or deleting its alias (the
/// incident responses of K-1) must stop new values, not move them to the local key. The key
/// state is changed in moto by the admin client; moto 5.2.5 records DisableKey and
/// ScheduleKeyDeletion (DescribeKey says so) but keeps serving the key, so the proxy answers
/// for it what AWS answers (`DisabledException`, `KMSInvalidStateException`). A deleted alias
/// is refused by moto itself (`NotFoundException`). The health checker must report the key
/// refused, and the composite must return the refusal with the key's state, never a local
/// blob; once the key is enabled again the KMS serves again (reads at once, new values after
/// the next probe).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_disabled_or_deleted_key_fails_closed_in_the_composite() {
    let Some(env) = env("a_disabled_or_deleted_key_fails_closed_in_the_composite").await else {
        return;
    };
    let key = symmetric_key(&env.admin).await;
    let alias_name = "alias/lango-issue-17";
    alias(&env.admin, alias_name, &key).await;
    let b: Arc<dyn KmsBackend> = Arc::new(
        AwsKms::new(&config(&env.proxy.url(), alias_name))
            .await
            .unwrap(),
    );
    let primary: Arc<dyn CryptoProvider> =
        Arc::new(KmsProvider::new(b, policy(3, Duration::from_secs(2))));
    let interval = Duration::from_millis(300);
    let checker = Arc::new(HealthChecker::new(
        primary.clone(),
        "",
        KeyRole::Encryption,
        Some(interval),
    ));
    let local: Arc<dyn CryptoProvider> =
        Arc::new(LocalCryptoProvider::new(&MasterKey::generate().unwrap(), 1));
    let composite = CompositeProvider::new(primary.clone())
        .with_fallback(local)
        .with_checker(checker.clone());
    let key_state = |admin: Client, id: String| async move {
        admin
            .describe_key()
            .key_id(id)
            .send()
            .await
            .unwrap()
            .key_metadata
            .unwrap()
            .key_state
    };

    let before = composite.encrypt("", b"before", ctx(b"r0")).await.unwrap();
    assert_eq!(before[4], ProviderTag::AwsKms as u8);

    // Refused while disabled or pending deletion: by the probe, and by the call after it.
    for (what, fault, kind, state) in [
        (
            "DisableKey",
            "DisabledException",
            ProviderErrorKind::KeyDisabled,
            KeyState::Disabled,
        ),
        (
            "ScheduleKeyDeletion",
            "KMSInvalidStateException",
            ProviderErrorKind::KeyDisabled,
            KeyState::PendingDeletion,
        ),
    ] {
        if what == "DisableKey" {
            env.admin
                .disable_key()
                .key_id(&key.id)
                .send()
                .await
                .unwrap();
        } else {
            env.admin
                .schedule_key_deletion()
                .key_id(&key.id)
                .pending_window_in_days(7)
                .send()
                .await
                .unwrap();
        }
        assert_eq!(
            key_state(env.admin.clone(), key.id.clone()).await,
            Some(state),
            "{what}"
        );
        env.proxy.inject("Encrypt", Fault::Error(400, fault), None);
        env.proxy.inject("Decrypt", Fault::Error(400, fault), None);
        tokio::time::sleep(interval + Duration::from_millis(100)).await;

        let e = composite
            .encrypt("", b"after", ctx(b"r1"))
            .await
            .unwrap_err();
        let conn = checker.state().await;
        let Connection::Refused(f) = &conn else {
            panic!("{what}: the probe must see a refused key: {conn:?}");
        };
        assert_eq!(f.kind, kind, "{what}: {f}");
        assert_eq!(f.key_state(), "disabled", "{what}");
        assert_eq!(e.kind, kind, "{what}: {e}");
        assert!(e.to_string().contains(fault), "{e}");
        assert!(e.to_string().contains("key state: disabled"), "{e}");
        assert_eq!(composite.fallback_count(), 0, "{what}");
        assert!(!composite.used_local(), "{what}");
        // What the KMS sealed is not opened by the local key either.
        let e = composite
            .decrypt("", &before, ctx(b"r0"))
            .await
            .unwrap_err();
        assert_eq!(e.kind, kind, "{what}: {e}");
        assert!(!composite.used_local());

        // Enabled again (CancelKeyDeletion leaves the key disabled, as in AWS): the KMS serves.
        if what == "ScheduleKeyDeletion" {
            env.admin
                .cancel_key_deletion()
                .key_id(&key.id)
                .send()
                .await
                .unwrap();
        }
        env.admin.enable_key().key_id(&key.id).send().await.unwrap();
        env.proxy.clear_faults();
        assert_eq!(
            composite
                .decrypt("", &before, ctx(b"r0"))
                .await
                .unwrap()
                .expose(),
            b"before"
        );
        tokio::time::sleep(interval + Duration::from_millis(100)).await;
        let blob = composite.encrypt("", b"again", ctx(b"r2")).await.unwrap();
        assert_eq!(blob[4], ProviderTag::AwsKms as u8, "{what}");
        assert!(checker.check().await, "{what}");
    }

    // The alias deleted: moto's own NotFoundException, a key not found.
    env.admin
        .delete_alias()
        .alias_name(alias_name)
        .send()
        .await
        .unwrap();
    tokio::time::sleep(interval + Duration::from_millis(100)).await;
    let e = composite
        .encrypt("", b"after", ctx(b"r3"))
        .await
        .unwrap_err();
    assert!(
        matches!(checker.state().await, Connection::Refused(ref f) if f.kind == ProviderErrorKind::InvalidKey),
        "{:?}",
        checker.state().await
    );
    assert_eq!(e.kind, ProviderErrorKind::InvalidKey, "{e}");
    assert!(e.to_string().contains("NotFoundException"), "{e}");
    assert!(
        e.to_string().contains("key state: not found or invalid"),
        "{e}"
    );
    assert_eq!(composite.fallback_count(), 0);
    assert!(!composite.used_local());
}

// ---------------------------------------------------------------------------------------------
// Listing

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_keys_reports_arns_with_their_aliases() {
    let Some(env) = env("list_keys_reports_arns_with_their_aliases").await else {
        return;
    };
    let a = symmetric_key(&env.admin).await;
    let c = create_key(&env.admin, KeySpec::EccNistP256, KeyUsageType::SignVerify).await;
    alias(&env.admin, "alias/one", &a).await;
    alias(&env.admin, "alias/two", &a).await;
    let b = backend(&env.proxy.url(), &a.id).await;
    let p = provider(&b, 1);
    let keys = p.list_keys().await.unwrap();
    let find = |arn: &str| keys.iter().find(|k| k.key_id == arn).unwrap();
    let mut names = find(&a.arn).aliases.clone();
    names.sort();
    assert_eq!(names, ["alias/one", "alias/two"]);
    assert!(find(&c.arn).aliases.is_empty());
    assert_eq!(keys.len(), 2);
}
