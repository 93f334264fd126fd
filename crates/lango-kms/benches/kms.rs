//! KMS costs (spec §5.5, informational, local servers only), for `cargo xtask bench`:
//! - `kms/overhead/*`: the retry/envelope layer (`KmsProvider`) and the composite over a
//!   backend that answers at once (wrap = copy, sign = a fixed key), i.e. what lango adds;
//! - `kms/pkcs11/*` (feature `kms-pkcs11`): a SoftHSM2 token made here with softhsm2-util and
//!   pkcs11-tool: envelope encrypt/decrypt of 32 bytes, sign, and the token's own AES-GCM on
//!   1 KiB and 1 MiB (throughput);
//! - `kms/aws_moto/*` (feature `kms-aws`): moto in server mode on 127.0.0.1, started by the
//!   tests' harness (`LANGO_TEST_PYTHON` or `python3` with moto): envelope encrypt/decrypt
//!   and sign.
//!
//! - `kms/gcp_local/*`, `kms/azure_local/*` (features `kms-gcp`, `kms-azure`): the tests' local
//!   servers speaking the Cloud KMS and Key Vault REST shapes (real P-256, AES-GCM, RSA-OAEP).
//!
//! A group whose component is missing prints why and is left out.
#![allow(
    missing_docs,
    unsafe_code,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::print_stderr
)]

use std::{hint::black_box, sync::Arc, time::Duration};

use async_trait::async_trait;
use criterion::Criterion;
use lango_crypto::{
    SecretBytes,
    aead::BlobPurpose,
    provider::{AeadContext, CryptoProvider, KeyAlgorithm, PublicKeyInfo, Signature},
};
use lango_kms::{
    CompositeProvider, KmsBackend, KmsError, KmsProvider, KmsProviderName, RemoteKeyInfo,
    RetryPolicy, Wrapped,
};

fn aad() -> AeadContext<'static> {
    AeadContext {
        purpose: BlobPurpose::Secrets,
        context: b"bench.secret",
        max_blob_len: 4 * 1024 * 1024,
    }
}

/// Answers at once: wrap is a copy, signatures come from a fixed P-256 key. Only for
/// measuring the layers above a backend.
struct Instant {
    key: p256::ecdsa::SigningKey,
}

#[async_trait]
impl KmsBackend for Instant {
    fn name(&self) -> KmsProviderName {
        KmsProviderName::Pkcs11
    }
    fn signing_key_id(&self) -> &str {
        "k"
    }
    fn encryption_key_id(&self) -> &str {
        "k"
    }
    async fn sign(&self, _key_id: &str, payload: &[u8]) -> Result<Signature, KmsError> {
        use p256::ecdsa::signature::Signer as _;
        let sig: p256::ecdsa::Signature = self.key.sign(payload);
        Ok(Signature {
            algorithm: lango_crypto::provider::SignatureAlgorithm::EcdsaP256Sha256Raw,
            bytes: sig.to_bytes().to_vec(),
        })
    }
    async fn public_key(&self, _key_id: &str) -> Result<PublicKeyInfo, KmsError> {
        use p256::elliptic_curve::sec1::ToSec1Point as _;
        Ok(PublicKeyInfo {
            algorithm: KeyAlgorithm::P256,
            bytes: p256::PublicKey::from(*self.key.verifying_key())
                .to_sec1_point(false)
                .as_bytes()
                .to_vec(),
        })
    }
    async fn wrap(&self, _: &str, plaintext: &[u8], _: &[u8]) -> Result<Wrapped, KmsError> {
        Ok(Wrapped {
            ciphertext: plaintext.to_vec(),
            key_version: None,
        })
    }
    async fn unwrap(
        &self,
        _: &str,
        ciphertext: &[u8],
        _: Option<&str>,
        _: &[u8],
    ) -> Result<SecretBytes, KmsError> {
        Ok(SecretBytes::from_slice(ciphertext))
    }
    async fn list_keys(&self) -> Result<Vec<RemoteKeyInfo>, KmsError> {
        Ok(Vec::new())
    }
    async fn close(&self) {}
}

/// Envelope encrypt + decrypt of 32 bytes, and sign, through `provider`.
fn round_trips(
    c: &mut Criterion,
    rt: &tokio::runtime::Runtime,
    group: &str,
    provider: &dyn CryptoProvider,
    enc_key: &str,
    sign_key: Option<&str>,
) {
    let mut g = c.benchmark_group(format!("kms/{group}"));
    let value = [7u8; 32];
    let blob = rt
        .block_on(provider.encrypt(enc_key, &value, aad()))
        .unwrap();
    g.bench_function("encrypt_32B", |b| {
        b.iter(|| {
            black_box(
                rt.block_on(provider.encrypt(enc_key, &value, aad()))
                    .unwrap(),
            )
        })
    });
    g.bench_function("decrypt_32B", |b| {
        b.iter(|| {
            black_box(
                rt.block_on(provider.decrypt(enc_key, &blob, aad()))
                    .unwrap(),
            )
        })
    });
    if let Some(k) = sign_key {
        g.bench_function("sign", |b| {
            b.iter(|| {
                black_box(
                    rt.block_on(provider.sign(k, b"lango bench message"))
                        .unwrap(),
                )
            })
        });
    }
    g.finish();
}

fn overhead(c: &mut Criterion, rt: &tokio::runtime::Runtime) {
    let backend = Arc::new(Instant {
        key: p256::ecdsa::SigningKey::from_slice(&[0x42; 32]).unwrap(),
    });
    let kms = Arc::new(KmsProvider::new(backend, RetryPolicy::default()));
    round_trips(c, rt, "overhead/kms_provider", kms.as_ref(), "k", Some("k"));
    let composite = CompositeProvider::new(kms.clone() as Arc<dyn CryptoProvider>);
    // No checker: parity mode uses the fallback only; give it the KMS as primary with a
    // checker that is always up, so the measured path is primary + composite bookkeeping.
    struct Up;
    #[async_trait]
    impl lango_kms::ConnectionChecker for Up {
        async fn connection(&self) -> lango_kms::health::Connection {
            lango_kms::health::Connection::Up
        }
    }
    let composite = composite.with_checker(Arc::new(Up));
    round_trips(c, rt, "overhead/composite", &composite, "k", Some("k"));
}

#[cfg(feature = "kms-pkcs11")]
mod pkcs11 {
    use std::{path::Path, process::Command};

    use super::*;
    use lango_kms::KmsConfig;

    const MODULE: &str = "/usr/lib/softhsm/libsofthsm2.so";

    fn run(program: &str, args: &[&str]) -> Result<String, String> {
        let out = Command::new(program)
            .args(args)
            .output()
            .map_err(|e| format!("{program}: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "{program} {args:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// A token in a temporary directory with `lango-aes` and `lango-ec`; returns the slot.
    fn token(dir: &Path) -> Result<u64, String> {
        if !Path::new(MODULE).exists() {
            return Err(format!("{MODULE} is missing"));
        }
        std::fs::create_dir_all(dir.join("tokens")).map_err(|e| e.to_string())?;
        let conf = dir.join("softhsm2.conf");
        std::fs::write(
            &conf,
            format!(
                "directories.tokendir = {}\nobjectstore.backend = file\nlog.level = ERROR\n",
                dir.join("tokens").display()
            ),
        )
        .map_err(|e| e.to_string())?;
        // SAFETY: the bench is single-threaded here; no runtime or module is loaded yet.
        unsafe { std::env::set_var("SOFTHSM2_CONF", &conf) };
        run(
            "softhsm2-util",
            &[
                "--init-token",
                "--free",
                "--label",
                "bench",
                "--pin",
                "1234",
                "--so-pin",
                "5678",
            ],
        )?;
        let listing = run("pkcs11-tool", &["--module", MODULE, "-L"])?;
        let slot = listing
            .lines()
            .find_map(|l| {
                let hex = l.trim().strip_prefix("Slot ")?.split('(').nth(1)?;
                u64::from_str_radix(hex.trim_start_matches("0x").split(')').next()?, 16).ok()
            })
            .ok_or("no slot")?;
        let base = ["--module", MODULE, "--login", "--pin", "1234"];
        let mut aes = base.to_vec();
        aes.extend(["--keygen", "--key-type", "AES:32", "--label", "lango-aes"]);
        run("pkcs11-tool", &aes)?;
        let mut ec = base.to_vec();
        ec.extend([
            "--keypairgen",
            "--key-type",
            "EC:prime256v1",
            "--label",
            "lango-ec",
        ]);
        run("pkcs11-tool", &ec)?;
        Ok(slot)
    }

    pub fn bench(c: &mut Criterion, rt: &tokio::runtime::Runtime) {
        let dir = tempfile::tempdir().unwrap();
        let slot = match token(dir.path()) {
            Ok(s) => s,
            Err(why) => {
                eprintln!("kms/pkcs11 left out: {why}");
                return;
            }
        };
        let mut cfg = KmsConfig::default();
        cfg.pkcs11.module_path = MODULE.into();
        cfg.pkcs11.slot_id = slot;
        cfg.pkcs11.pin = Some(lango_crypto::SecretString::new("1234".into()));
        cfg.pkcs11.key_label = "lango-aes".into();
        cfg.signing_key_id = Some("lango-ec".into());
        let backend = rt
            .block_on(lango_kms::new_kms_provider("pkcs11", &cfg))
            .unwrap();
        let kms = KmsProvider::new(backend.clone(), cfg.retry_policy());
        round_trips(c, rt, "pkcs11", &kms, "lango-aes", Some("lango-ec"));
        let mut g = c.benchmark_group("kms/pkcs11/token_aes_gcm");
        for size in [1024usize, 1024 * 1024] {
            let value = vec![9u8; size];
            g.throughput(criterion::Throughput::Bytes(size as u64));
            g.bench_function(format!("wrap_{size}B"), |b| {
                b.iter(|| {
                    black_box(
                        rt.block_on(backend.wrap("lango-aes", &value, b"ctx"))
                            .unwrap(),
                    )
                })
            });
        }
        g.finish();
        rt.block_on(backend.close());
    }
}

#[cfg(feature = "kms-aws")]
#[path = "../tests/support/aws_moto.rs"]
#[allow(dead_code, clippy::panic)]
mod aws_moto;

#[cfg(feature = "kms-aws")]
mod aws {
    use aws_sdk_kms::types::{KeySpec, KeyUsageType};

    use super::*;
    use lango_kms::KmsConfig;

    pub fn bench(c: &mut Criterion, rt: &tokio::runtime::Runtime) {
        // The tests' harness: moto on a free port, dummy credentials, an admin client.
        let Some(moto) = super::aws_moto::Moto::start("kms/aws bench") else {
            return;
        };
        let admin = moto.admin();
        let key = |spec: KeySpec, usage: KeyUsageType| {
            rt.block_on(admin.create_key().key_spec(spec).key_usage(usage).send())
                .unwrap()
                .key_metadata()
                .unwrap()
                .key_id()
                .to_owned()
        };
        let enc = key(KeySpec::SymmetricDefault, KeyUsageType::EncryptDecrypt);
        let sign = key(KeySpec::EccNistP256, KeyUsageType::SignVerify);
        let cfg = KmsConfig {
            key_id: enc.clone(),
            signing_key_id: Some(sign.clone()),
            region: super::aws_moto::REGION.into(),
            endpoint: moto.url(),
            allow_insecure_endpoint: true,
            ..KmsConfig::default()
        };
        let backend = rt
            .block_on(lango_kms::new_kms_provider("aws-kms", &cfg))
            .unwrap();
        let kms = KmsProvider::new(backend, cfg.retry_policy());
        round_trips(c, rt, "aws_moto", &kms, &enc, Some(&sign));
    }
}

#[cfg(feature = "kms-azure")]
#[path = "../tests/support/rest_azure.rs"]
mod rest_azure;
#[cfg(feature = "kms-gcp")]
#[path = "../tests/support/rest_gcp.rs"]
mod rest_gcp;
#[cfg(any(feature = "kms-gcp", feature = "kms-azure"))]
#[path = "../tests/support/rest_server.rs"]
mod rest_server;

#[cfg(feature = "kms-gcp")]
fn gcp(c: &mut Criterion, rt: &tokio::runtime::Runtime) {
    use lango_kms::{KmsConfig, gcp::GcpKms, rest::StaticToken};
    use rest_gcp::{FakeGcp, TOKEN, enc_key, signer};
    let fake = FakeGcp::new();
    let server = rt.block_on(fake.serve());
    let cfg = KmsConfig {
        key_id: enc_key(),
        signing_key_id: Some(signer()),
        encryption_key_id: Some(enc_key()),
        endpoint: server.url(),
        allow_insecure_endpoint: true,
        ..KmsConfig::default()
    };
    let backend =
        Arc::new(GcpKms::with_token_source(&cfg, Arc::new(StaticToken::new(TOKEN))).unwrap());
    let kms = KmsProvider::new(backend, cfg.retry_policy());
    round_trips(c, rt, "gcp_local", &kms, &enc_key(), Some(&signer()));
}

#[cfg(feature = "kms-azure")]
fn azure(c: &mut Criterion, rt: &tokio::runtime::Runtime) {
    use lango_kms::{KmsConfig, azure::AzureKv, config::AzureConfig, rest::StaticToken};
    use rest_azure::{FakeAzure, SIGNER, TOKEN, WRAPPER};
    let fake = FakeAzure::new();
    let server = rt.block_on(fake.serve());
    let cfg = KmsConfig {
        key_id: WRAPPER.into(),
        signing_key_id: Some(SIGNER.into()),
        encryption_key_id: Some(WRAPPER.into()),
        allow_insecure_endpoint: true,
        azure: AzureConfig {
            vault_url: server.url(),
            ..AzureConfig::default()
        },
        ..KmsConfig::default()
    };
    let backend =
        Arc::new(AzureKv::with_token_source(&cfg, Arc::new(StaticToken::new(TOKEN))).unwrap());
    let kms = KmsProvider::new(backend, cfg.retry_policy());
    round_trips(c, rt, "azure_local", &kms, WRAPPER, Some(SIGNER));
}

fn main() {
    let mut c = Criterion::default()
        .configure_from_args()
        .sample_size(20)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(3));
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    overhead(&mut c, &rt);
    #[cfg(feature = "kms-pkcs11")]
    pkcs11::bench(&mut c, &rt);
    #[cfg(feature = "kms-aws")]
    aws::bench(&mut c, &rt);
    #[cfg(feature = "kms-gcp")]
    gcp(&mut c, &rt);
    #[cfg(feature = "kms-azure")]
    azure(&mut c, &rt);
    c.final_summary();
}
