//! The PKCS#11 backend against a real SoftHSM2 token (spec §5.2 "PKCS#11 with SoftHSM2",
//! items 1–6), with signatures checked by an independent verifier (the `openssl` CLI) and
//! keys created both by this process (through `cryptoki`) and by an independent client
//! (`pkcs11-tool`).
//!
//! Each test initialises its own token: a temporary SoftHSM2 configuration is put into
//! `SOFTHSM2_CONF` once per process, before the module is first loaded, and every test calls
//! `softhsm2-util --init-token --free` for a token of its own, found afterwards by its label
//! (the slot id is random, P29). Under nextest every test is its own process. Under
//! `cargo test` the tests of this binary share one process: they run one at a time (one test
//! sets `LANGO_PKCS11_PIN`, and SoftHSM2 only sees tokens that existed at `C_Initialize`), and
//! each later test finalises and initialises the module again to see its new token.
//!
//! Without SoftHSM2 (module, `softhsm2-util`), `pkcs11-tool` or `openssl` the tests print why
//! and pass, except with `CI=true`, where they fail.
#![cfg(feature = "kms-pkcs11")]
// `std::env::set_var` (edition 2024) and `C_CloseAllSessions` through cryptoki-sys.
#![allow(unsafe_code)]
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::print_stderr
)]

use std::{
    path::{Path, PathBuf},
    process::Command,
    sync::{
        Arc, Mutex, MutexGuard, OnceLock, PoisonError,
        atomic::{AtomicUsize, Ordering},
    },
};

use cryptoki::{
    context::{CInitializeArgs, CInitializeFlags, Pkcs11 as Context},
    mechanism::Mechanism,
    object::{Attribute, KeyType, ObjectClass},
    session::{Session, UserType},
    slot::Slot,
    types::AuthPin,
};
use lango_crypto::{
    CryptoProvider, LocalCryptoProvider, MasterKey, SecretKey32, SecretString,
    aead::{self, BlobPurpose, ProviderTag},
    digest::sha256,
    provider::{AeadContext, Health, KeyAlgorithm, ProviderErrorKind, SignatureAlgorithm},
};
use lango_kms::{
    CompositeProvider, Connection, Error, HealthChecker, KeyRole, KmsBackend, KmsConfig,
    KmsErrorKind, KmsProvider, KmsProviderName, backend::KeyUsage, error::kms_kind, pkcs11::Pkcs11,
};

const PIN: &str = "1234";
const SO_PIN: &str = "5678";
const DEFAULT_MODULE: &str = "/usr/lib/softhsm/libsofthsm2.so";
const P256_PARAMS: [u8; 10] = [0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07];
const SECP256K1_PARAMS: [u8; 7] = [0x06, 0x05, 0x2b, 0x81, 0x04, 0x00, 0x0a];
/// The value of the extractable AES key `known-aes`, so that wrap output can be opened by an
/// independent AES-GCM implementation.
const KNOWN_AES: [u8; 32] = [0x5a; 32];

// ---------------------------------------------------------------------------------------------
// Harness

fn module() -> String {
    std::env::var("PKCS11_MODULE").unwrap_or_else(|_| DEFAULT_MODULE.to_owned())
}

fn in_ci() -> bool {
    matches!(std::env::var("CI").as_deref(), Ok("true" | "1"))
}

fn program_missing(program: &str, arg: &str) -> Option<String> {
    match Command::new(program).arg(arg).output() {
        Ok(_) => None,
        Err(e) => Some(format!("{program} not runnable: {e}")),
    }
}

/// Whether the token tools are present; panics in CI when they are not.
fn require(test: &str) -> bool {
    let module = module();
    let missing = if Path::new(&module).exists() {
        program_missing("softhsm2-util", "--version")
            .or_else(|| program_missing("pkcs11-tool", "--help"))
            .or_else(|| program_missing("openssl", "version"))
    } else {
        Some(format!(
            "PKCS#11 module {module} not found (install softhsm2)"
        ))
    };
    match missing {
        None => true,
        Some(why) if in_ci() => panic!("{test}: SoftHSM2 tooling is required in CI: {why}"),
        Some(why) => {
            eprintln!("skipping {test}: {why}");
            false
        }
    }
}

/// The process-wide SoftHSM2 configuration, installed before the module is first loaded.
fn softhsm_dir() -> &'static Path {
    static DIR: OnceLock<tempfile::TempDir> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let tokens = dir.path().join("tokens");
        std::fs::create_dir(&tokens).unwrap();
        let conf = dir.path().join("softhsm2.conf");
        std::fs::write(
            &conf,
            format!(
                "directories.tokendir = {}\nobjectstore.backend = file\nlog.level = ERROR\nslots.removable = false\n",
                tokens.display()
            ),
        )
        .unwrap();
        // SAFETY: runs once, before this process loads the PKCS#11 module (which reads the
        // variable in C_Initialize); no other thread of the test reads the environment now.
        unsafe { std::env::set_var("SOFTHSM2_CONF", &conf) };
        dir
    })
    .path()
}

/// The test's own handle on the module, independent of the backend's.
fn context() -> &'static Context {
    static CTX: OnceLock<Context> = OnceLock::new();
    CTX.get_or_init(|| {
        let ctx = Context::new(module()).unwrap();
        match ctx.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK)) {
            Ok(())
            | Err(cryptoki::error::Error::Pkcs11(
                cryptoki::error::RvError::CryptokiAlreadyInitialized,
                _,
            )) => {}
            Err(e) => panic!("C_Initialize: {e}"),
        }
        ctx
    })
}

fn run(program: &str, args: &[&str]) -> String {
    let o = Command::new(program).args(args).output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(o.status.success(), "{program} {args:?} failed: {text}");
    text
}

/// A freshly initialised token with the test keys. Holding it keeps other tests of the
/// process waiting.
struct Token {
    slot: u64,
    label: String,
    _serial: MutexGuard<'static, ()>,
}

impl Token {
    fn new(test: &str) -> Option<Self> {
        if !require(test) {
            return None;
        }
        static SERIAL: Mutex<()> = Mutex::new(());
        let serial = SERIAL.lock().unwrap_or_else(PoisonError::into_inner);
        softhsm_dir();
        static N: AtomicUsize = AtomicUsize::new(0);
        let n = N.fetch_add(1, Ordering::SeqCst);
        let label = match n {
            0 => "lango-test".to_owned(),
            n => format!("lango-test-{n}"),
        };
        let module = module();
        run(
            "softhsm2-util",
            &[
                "--init-token",
                "--free",
                "--label",
                &label,
                "--pin",
                PIN,
                "--so-pin",
                SO_PIN,
            ],
        );
        // Keys made by an independent client.
        let tool = |extra: &[&str]| {
            let mut args = vec![
                "--module",
                &module,
                "--token-label",
                &label,
                "--login",
                "--pin",
                PIN,
            ];
            args.extend_from_slice(extra);
            run("pkcs11-tool", &args);
        };
        tool(&[
            "--keypairgen",
            "--key-type",
            "EC:prime256v1",
            "--label",
            "tool-ec",
            "--id",
            "7001",
            "--usage-sign",
        ]);
        tool(&[
            "--keygen",
            "--key-type",
            "AES:32",
            "--label",
            "tool-aes",
            "--id",
            "7002",
            "--usage-decrypt",
            "--sensitive",
        ]);

        // The slot moved to a random id (P29): find it by label.
        let ctx = context();
        if n > 0 {
            // An earlier test of this process initialised the module before this token
            // existed; SoftHSM2 scans the token directory in C_Initialize only. The earlier
            // test is over and its providers are gone.
            ctx.clone().finalize().unwrap();
            ctx.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK))
                .unwrap();
        }
        let slot = ctx
            .get_slots_with_token()
            .unwrap()
            .into_iter()
            .find(|s| ctx.get_token_info(*s).unwrap().label().trim_end() == label)
            .unwrap_or_else(|| panic!("token {label} not visible"));
        let s = ctx.open_rw_session(slot).unwrap();
        s.login(UserType::User, Some(&AuthPin::from(PIN))).unwrap();
        create_keys(&s);
        drop(s);
        Some(Self {
            slot: slot.id(),
            label,
            _serial: serial,
        })
    }

    fn session(&self) -> Session {
        let s = context()
            .open_rw_session(Slot::try_from(self.slot).unwrap())
            .unwrap();
        match s.login(UserType::User, Some(&AuthPin::from(PIN))) {
            Ok(())
            | Err(cryptoki::error::Error::Pkcs11(
                cryptoki::error::RvError::UserAlreadyLoggedIn,
                _,
            )) => {}
            Err(e) => panic!("login: {e}"),
        }
        s
    }

    /// A configuration for this token: default signing key `lango-ec` (the key label),
    /// encryption key `lango-aes`.
    fn config(&self, pin: Option<&str>) -> KmsConfig {
        let mut c = KmsConfig {
            encryption_key_id: Some("lango-aes".to_owned()),
            ..KmsConfig::default()
        };
        c.pkcs11.module_path = module();
        c.pkcs11.slot_id = self.slot;
        c.pkcs11.pin = pin.map(|p| SecretString::new(p.to_owned()));
        c.pkcs11.key_label = "lango-ec".to_owned();
        c
    }
}

fn create_keys(s: &Session) {
    // AES-256 `lango-aes`: encrypt/decrypt, sensitive, not extractable.
    s.generate_key(
        &Mechanism::AesKeyGen,
        &[
            Attribute::Token(true),
            Attribute::Private(true),
            Attribute::Label(b"lango-aes".to_vec()),
            Attribute::ValueLen(32.into()),
            Attribute::Encrypt(true),
            Attribute::Decrypt(true),
            Attribute::Sensitive(true),
            Attribute::Extractable(false),
        ],
    )
    .unwrap();
    // An AES key of known value, to check the wrap layout with an independent AES-GCM.
    s.create_object(&[
        Attribute::Class(ObjectClass::SECRET_KEY),
        Attribute::KeyType(KeyType::AES),
        Attribute::Token(true),
        Attribute::Private(true),
        Attribute::Label(b"known-aes".to_vec()),
        Attribute::Value(KNOWN_AES.to_vec()),
        Attribute::Encrypt(true),
        Attribute::Decrypt(true),
    ])
    .unwrap();
    for (label, params) in [
        ("lango-ec", P256_PARAMS.to_vec()),
        ("lango-k1", SECP256K1_PARAMS.to_vec()),
    ] {
        let id = sha256(label.as_bytes())[..8].to_vec();
        s.generate_key_pair(
            &Mechanism::EccKeyPairGen,
            &[
                Attribute::Token(true),
                Attribute::Label(label.as_bytes().to_vec()),
                Attribute::Id(id.clone()),
                Attribute::EcParams(params),
                Attribute::Verify(true),
            ],
            &[
                Attribute::Token(true),
                Attribute::Private(true),
                Attribute::Label(label.as_bytes().to_vec()),
                Attribute::Id(id),
                Attribute::Sign(true),
                Attribute::Sensitive(true),
                Attribute::Extractable(false),
            ],
        )
        .unwrap();
    }
}

async fn open(cfg: &KmsConfig) -> Result<Pkcs11, Error> {
    Pkcs11::new(cfg).await
}

async fn backend(t: &Token) -> Arc<Pkcs11> {
    Arc::new(open(&t.config(Some(PIN))).await.unwrap())
}

fn provider(b: &Arc<Pkcs11>) -> KmsProvider {
    let policy = KmsConfig::default().retry_policy();
    KmsProvider::new(b.clone() as Arc<dyn KmsBackend>, policy)
}

fn ctx(row: &[u8]) -> AeadContext<'_> {
    AeadContext {
        purpose: BlobPurpose::Secrets,
        context: row,
        max_blob_len: 4 << 20,
    }
}

fn init_error(r: Result<Pkcs11, Error>) -> lango_kms::KmsError {
    match r {
        Ok(b) => panic!("constructed: {b:?}"),
        Err(Error::Init(e)) => e,
        Err(e) => panic!("not an init error: {e}"),
    }
}

// ---------------------------------------------------------------------------------------------
// Independent verification with the openssl CLI

fn spki_der(algorithm: KeyAlgorithm, point: &[u8]) -> Vec<u8> {
    let prefix = match algorithm {
        KeyAlgorithm::P256 => "3059301306072a8648ce3d020106082a8648ce3d030107034200",
        KeyAlgorithm::Secp256k1 => "3056301006072a8648ce3d020106052b8104000a034200",
        other => panic!("unexpected key type {other:?}"),
    };
    assert_eq!(point.len(), 65);
    assert_eq!(point[0], 0x04, "uncompressed SEC1 point");
    let mut der = hex::decode(prefix).unwrap();
    der.extend_from_slice(point);
    der
}

fn der_integer(bytes: &[u8]) -> Vec<u8> {
    let start = bytes
        .iter()
        .position(|b| *b != 0)
        .unwrap_or(bytes.len() - 1);
    let mut body = bytes[start..].to_vec();
    if body[0] & 0x80 != 0 {
        body.insert(0, 0);
    }
    let mut out = vec![0x02, u8::try_from(body.len()).unwrap()];
    out.extend_from_slice(&body);
    out
}

/// Raw `r‖s` → DER `SEQUENCE { INTEGER r, INTEGER s }`, written here rather than by the
/// crates under test.
fn raw_to_der(raw: &[u8]) -> Vec<u8> {
    assert_eq!(raw.len(), 64);
    let mut body = der_integer(&raw[..32]);
    body.extend_from_slice(&der_integer(&raw[32..]));
    let mut out = vec![0x30, u8::try_from(body.len()).unwrap()];
    out.extend_from_slice(&body);
    out
}

/// `openssl dgst -sha256 -verify`: whether the DER signature verifies over `msg`.
fn openssl_verifies(spki: &[u8], sig_der: &[u8], msg: &[u8]) -> bool {
    let dir = tempfile::tempdir().unwrap();
    let path = |n: &str| -> PathBuf { dir.path().join(n) };
    std::fs::write(path("pub.der"), spki).unwrap();
    std::fs::write(path("sig.der"), sig_der).unwrap();
    std::fs::write(path("msg"), msg).unwrap();
    let o = Command::new("openssl")
        .arg("dgst")
        .arg("-sha256")
        .arg("-verify")
        .arg(path("pub.der"))
        .args(["-keyform", "DER", "-signature"])
        .arg(path("sig.der"))
        .arg(path("msg"))
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&o.stdout);
    if o.status.success() {
        assert!(out.contains("Verified OK"), "{out}");
        true
    } else {
        assert!(
            out.contains("Verification failure"),
            "openssl error: {out}{}",
            String::from_utf8_lossy(&o.stderr)
        );
        false
    }
}

fn is_low_s_p256(raw: &[u8]) -> bool {
    let sig = p256::ecdsa::Signature::from_slice(raw).unwrap();
    sig.normalize_s() == sig
}

// ---------------------------------------------------------------------------------------------
// 1. Construction

#[tokio::test]
async fn construction_with_the_pin_in_config_logs_in_and_hides_the_pin() {
    let Some(t) = Token::new("construction_with_the_pin_in_config") else {
        return;
    };
    let pin = "Pin-7fd0c2a9";
    t.session()
        .set_pin(&AuthPin::from(PIN), &AuthPin::from(pin))
        .unwrap();
    let b = open(&t.config(Some(pin))).await.unwrap();
    // Logged in: the private key is visible and signs.
    let sig = b.sign("lango-ec", b"hello").await.unwrap();
    assert_eq!(sig.bytes.len(), 64);
    assert_eq!(b.module_path(), module());
    assert_eq!(b.slot_id(), t.slot);

    let debug = format!("{b:?}");
    assert!(debug.contains(&module()), "{debug}");
    assert!(debug.contains(&t.slot.to_string()), "{debug}");
    for label in ["lango-aes", "lango-ec", "tool-ec", "tool-aes"] {
        assert!(debug.contains(label), "{debug}");
    }
    assert!(!debug.contains(pin), "{debug}");

    // A wrong PIN is refused without echoing it.
    b.close().await;
    let wrong = "Wrong-4c1e9b";
    let e = init_error(open(&t.config(Some(wrong))).await);
    assert!(!e.to_string().contains(wrong), "{e}");
    assert!(!format!("{e:?}").contains(wrong), "{e:?}");
}

#[tokio::test]
async fn lango_pkcs11_pin_overrides_a_wrong_config_pin() {
    let Some(t) = Token::new("lango_pkcs11_pin_overrides_a_wrong_config_pin") else {
        return;
    };
    let cfg = t.config(Some("0000"));
    // Without the variable the wrong configured PIN fails...
    let e = init_error(Pkcs11::new(&cfg).await);
    assert_eq!(
        (e.op.as_ref(), e.kind),
        ("login", KmsErrorKind::Pkcs11Session)
    );
    // ...with it, the variable wins.
    // SAFETY: the tests of this process run one at a time (`Token`); no other thread reads
    // the environment now.
    unsafe { std::env::set_var("LANGO_PKCS11_PIN", PIN) };
    let r = Pkcs11::new(&cfg).await;
    // SAFETY: as above.
    unsafe { std::env::remove_var("LANGO_PKCS11_PIN") };
    let b = r.unwrap();
    assert_eq!(b.sign("lango-ec", b"m").await.unwrap().bytes.len(), 64);
    // An empty variable does not override the configuration.
    b.close().await;
    // SAFETY: as above.
    unsafe { std::env::set_var("LANGO_PKCS11_PIN", "") };
    let r = Pkcs11::new(&t.config(Some(PIN))).await;
    // SAFETY: as above.
    unsafe { std::env::remove_var("LANGO_PKCS11_PIN") };
    r.unwrap().close().await;
}

#[tokio::test]
async fn wrong_pin_is_a_login_session_error() {
    let Some(t) = Token::new("wrong_pin_is_a_login_session_error") else {
        return;
    };
    let e = init_error(open(&t.config(Some("9999"))).await);
    assert_eq!(e.provider, "pkcs11");
    assert_eq!(e.op, "login");
    assert_eq!(e.kind, KmsErrorKind::Pkcs11Session);
    assert!(!e.is_transient());
    assert_eq!(
        e.to_string(),
        "kms pkcs11 login (key=): PKCS#11 session error: C_Login: CKR_PIN_INCORRECT"
    );
}

#[tokio::test]
async fn wrong_slot_is_an_open_session_error() {
    let Some(t) = Token::new("wrong_slot_is_an_open_session_error") else {
        return;
    };
    let used: Vec<u64> = context()
        .get_all_slots()
        .unwrap()
        .iter()
        .map(Slot::id)
        .collect();
    let unused = (1..)
        .map(|d| t.slot ^ d)
        .find(|s| !used.contains(s))
        .unwrap();
    let mut cfg = t.config(Some(PIN));
    cfg.pkcs11.slot_id = unused;
    let e = init_error(open(&cfg).await);
    assert_eq!(e.provider, "pkcs11");
    assert_eq!(e.op, "open-session");
    assert_eq!(e.kind, KmsErrorKind::Pkcs11Session);
    assert!(
        e.message
            .starts_with(&format!("slot {unused}: C_OpenSession: ")),
        "{e}"
    );
}

#[tokio::test]
async fn without_a_pin_private_objects_are_invisible() {
    let Some(t) = Token::new("without_a_pin_private_objects_are_invisible") else {
        return;
    };
    let b = open(&t.config(None)).await.unwrap();
    // Only the public object is seen: pkcs11-tool creates secret keys with CKA_PRIVATE false
    // unless told otherwise; our keys are private objects.
    let listed: Vec<String> = b
        .list_keys()
        .await
        .unwrap()
        .into_iter()
        .map(|k| k.key_id)
        .collect();
    assert_eq!(listed, ["tool-aes"]);
    for label in ["lango-ec", "lango-aes"] {
        let e = b.sign(label, b"m").await.unwrap_err();
        assert_eq!(
            (e.op.as_ref(), e.kind),
            ("resolve-key", KmsErrorKind::InvalidKey)
        );
    }
    let w = b
        .wrap("tool-aes", b"public key object", b"c")
        .await
        .unwrap();
    let plain = b
        .unwrap("tool-aes", &w.ciphertext, None, b"c")
        .await
        .unwrap();
    assert_eq!(plain.expose(), b"public key object");
    b.close().await;
}

#[tokio::test]
async fn the_factory_builds_the_backend() {
    let Some(t) = Token::new("the_factory_builds_the_backend") else {
        return;
    };
    assert!(lango_kms::is_compiled(KmsProviderName::Pkcs11));
    let b = lango_kms::new_kms_provider("pkcs11", &t.config(Some(PIN)))
        .await
        .unwrap();
    assert_eq!(b.name(), KmsProviderName::Pkcs11);
    assert_eq!(b.signing_key_id(), "lango-ec");
    assert_eq!(b.encryption_key_id(), "lango-aes");
    b.close().await;
}

// ---------------------------------------------------------------------------------------------
// 2. Label discovery and aliases

#[tokio::test]
async fn labels_are_discovered_and_aliases_resolve_to_the_key_label() {
    let Some(t) = Token::new("labels_are_discovered_and_aliases_resolve") else {
        return;
    };
    let b = backend(&t).await;
    let mut keys: Vec<(String, Option<KeyUsage>, Option<String>)> = b
        .list_keys()
        .await
        .unwrap()
        .into_iter()
        .map(|k| {
            assert_eq!(k.aliases, std::slice::from_ref(&k.key_id));
            (k.key_id, k.usage, k.algorithm)
        })
        .collect();
    keys.sort_by(|x, y| x.0.cmp(&y.0));
    let s = |x: &str| Some(x.to_owned());
    assert_eq!(
        keys,
        [
            ("known-aes".to_owned(), Some(KeyUsage::Encrypt), s("AES")),
            ("lango-aes".to_owned(), Some(KeyUsage::Encrypt), s("AES")),
            ("lango-ec".to_owned(), Some(KeyUsage::Sign), s("EC_P256")),
            (
                "lango-k1".to_owned(),
                Some(KeyUsage::Sign),
                s("EC_SECP256K1")
            ),
            ("tool-aes".to_owned(), Some(KeyUsage::Encrypt), s("AES")),
            ("tool-ec".to_owned(), Some(KeyUsage::Sign), s("EC_P256")),
        ]
    );

    // Unknown labels.
    let e = b.sign("no-such-key", b"m").await.unwrap_err();
    assert_eq!(
        (e.op.as_ref(), e.key_id.as_str(), e.kind),
        ("resolve-key", "no-such-key", KmsErrorKind::InvalidKey)
    );
    let e = b.wrap("no-such-key", &[0; 32], b"c").await.unwrap_err();
    assert_eq!(
        (e.op.as_ref(), e.key_id.as_str(), e.kind),
        ("resolve-key", "no-such-key", KmsErrorKind::InvalidKey)
    );
    // A label of the other class is an invalid key for the operation (K-2).
    let e = b.sign("lango-aes", b"m").await.unwrap_err();
    assert_eq!((e.op.as_ref(), e.kind), ("sign", KmsErrorKind::InvalidKey));
    let e = b.wrap("lango-ec", &[0; 32], b"c").await.unwrap_err();
    assert_eq!(
        (e.op.as_ref(), e.kind),
        ("encrypt", KmsErrorKind::InvalidKey)
    );

    // Aliases: the signing default is keyLabel, the encryption default encryptionKeyId.
    assert_eq!(b.signing_key_id(), "lango-ec");
    assert_eq!(b.encryption_key_id(), "lango-aes");
    let ec = b.public_key("lango-ec").await.unwrap();
    for alias in ["", "local", "default"] {
        assert_eq!(b.public_key(alias).await.unwrap(), ec, "{alias:?}");
    }
    assert_ne!(b.public_key("tool-ec").await.unwrap(), ec);
    // Through the provider, the alias signs with lango-ec (verified against its key).
    let p = provider(&b);
    let sig = p.sign("local", b"aliased").await.unwrap();
    assert!(openssl_verifies(
        &spki_der(ec.algorithm, &ec.bytes),
        &raw_to_der(&sig.bytes),
        b"aliased"
    ));
    // Encryption aliases resolve to lango-aes: the blob records that key id.
    let blob = p.encrypt("default", b"v", ctx(b"row")).await.unwrap();
    assert_eq!(blob[9] as usize, "lango-aes".len());
    assert_eq!(&blob[10..19], b"lango-aes");
    assert_eq!(
        p.decrypt("lango-aes", &blob, ctx(b"row"))
            .await
            .unwrap()
            .expose(),
        b"v"
    );
    b.close().await;
}

// ---------------------------------------------------------------------------------------------
// 3. Encryption

#[tokio::test]
async fn envelope_round_trips_through_kms_provider() {
    let Some(t) = Token::new("envelope_round_trips_through_kms_provider") else {
        return;
    };
    let b = backend(&t).await;
    let p = provider(&b);
    assert_eq!(p.health().await, Health::Healthy);
    for n in [0usize, 1, 31, 32, 4096, 1 << 20] {
        let value: Vec<u8> = (0..n).map(|i| (i * 7 + n) as u8).collect();
        for key in ["", "lango-aes", "tool-aes"] {
            let blob = p.encrypt(key, &value, ctx(b"row-1")).await.unwrap();
            assert_eq!(blob[4], 0x05, "PKCS#11 provider tag");
            let plain = p.decrypt(key, &blob, ctx(b"row-1")).await.unwrap();
            assert_eq!(plain.expose(), value.as_slice(), "n = {n}, key {key:?}");
            // Bound to the row: the token's AAD check refuses another one.
            let e = p.decrypt(key, &blob, ctx(b"row-2")).await.unwrap_err();
            assert_eq!(e.kind, ProviderErrorKind::DecryptionFailed, "{e}");
        }
    }
    b.close().await;
}

#[tokio::test]
async fn wrap_output_is_iv_ciphertext_tag_with_fresh_ivs_and_the_context_as_aad() {
    let Some(t) = Token::new("wrap_output_layout") else {
        return;
    };
    let b = backend(&t).await;
    for n in [0usize, 1, 31, 32, 4096] {
        let value: Vec<u8> = (0..n).map(|i| i as u8 ^ 0xa5).collect();
        let w1 = b.wrap("lango-aes", &value, b"ctx").await.unwrap();
        let w2 = b.wrap("lango-aes", &value, b"ctx").await.unwrap();
        assert_eq!(w1.key_version, None);
        assert_eq!(w1.ciphertext.len(), 12 + n + 16);
        assert_ne!(
            w1.ciphertext[..12],
            w2.ciphertext[..12],
            "fresh IV per call"
        );
        for w in [&w1, &w2] {
            let plain = b
                .unwrap("lango-aes", &w.ciphertext, None, b"ctx")
                .await
                .unwrap();
            assert_eq!(plain.expose(), value.as_slice());
        }
        let e = b
            .unwrap("lango-aes", &w1.ciphertext, None, b"other")
            .await
            .unwrap_err();
        assert_eq!(e.kind, KmsErrorKind::DecryptionFailed, "{e}");
    }
    // The layout and the AAD, checked with an independent AES-256-GCM (ring, via lango-crypto)
    // under a key of known value.
    let w = b
        .wrap("known-aes", b"data key bytes", b"the context")
        .await
        .unwrap();
    let k = SecretKey32::from_bytes(KNOWN_AES);
    let plain = aead::open(&k, b"the context", &w.ciphertext).unwrap();
    assert_eq!(plain.expose(), b"data key bytes");
    assert!(
        aead::open(&k, b"", &w.ciphertext).is_err(),
        "context is AAD"
    );
    // And the other way: what the independent implementation seals, the token opens.
    let sealed = aead::seal(&k, b"ctx", b"sealed by ring").unwrap();
    let plain = b.unwrap("known-aes", &sealed, None, b"ctx").await.unwrap();
    assert_eq!(plain.expose(), b"sealed by ring");
    b.close().await;
}

#[tokio::test]
async fn every_flipped_or_dropped_byte_is_decryption_failed() {
    let Some(t) = Token::new("every_flipped_byte_is_decryption_failed") else {
        return;
    };
    let b = backend(&t).await;
    let w = b.wrap("lango-aes", &[7; 32], b"ctx").await.unwrap();
    assert_eq!(w.ciphertext.len(), 60);
    for i in 0..w.ciphertext.len() {
        let mut bad = w.ciphertext.clone();
        bad[i] ^= 0x01;
        let e = b.unwrap("lango-aes", &bad, None, b"ctx").await.unwrap_err();
        assert_eq!(
            (e.op.as_ref(), e.kind),
            ("decrypt", KmsErrorKind::DecryptionFailed),
            "byte {i}: {e}"
        );
        // Reported by the token (SoftHSM2 says CKR_GENERAL_ERROR for a tag mismatch), not by
        // a check of ours.
        assert!(e.message.starts_with("C_Decrypt: "), "{e}");
    }
    for len in 28..w.ciphertext.len() {
        let e = b
            .unwrap("lango-aes", &w.ciphertext[..len], None, b"ctx")
            .await
            .unwrap_err();
        assert_eq!(e.kind, KmsErrorKind::DecryptionFailed, "len {len}: {e}");
    }
    // The session survived all of that.
    let plain = b
        .unwrap("lango-aes", &w.ciphertext, None, b"ctx")
        .await
        .unwrap();
    assert_eq!(plain.expose(), &[7; 32]);
    b.close().await;
}

#[tokio::test]
async fn short_ciphertexts_are_refused_before_the_token_is_called() {
    let Some(t) = Token::new("short_ciphertexts_are_refused_before_the_token") else {
        return;
    };
    let b = backend(&t).await;
    let check_short = |e: lango_kms::KmsError| {
        assert_eq!(
            (e.op.as_ref(), e.kind, e.message.as_str()),
            (
                "decrypt",
                KmsErrorKind::DecryptionFailed,
                "ciphertext too short"
            )
        );
    };
    for len in [0usize, 11, 12, 27] {
        check_short(
            b.unwrap("lango-aes", &vec![0; len], None, b"c")
                .await
                .unwrap_err(),
        );
    }
    // With the session closed, a 28-byte input reaches the session layer and fails there,
    // while shorter inputs are still refused by the length check: it comes first.
    b.close().await;
    let e = b
        .unwrap("lango-aes", &[0; 28], None, b"c")
        .await
        .unwrap_err();
    assert_eq!(e.kind, KmsErrorKind::Pkcs11Session);
    assert_eq!(e.message, "provider is closed");
    for len in [0usize, 11, 12, 27] {
        check_short(
            b.unwrap("lango-aes", &vec![0; len], None, b"c")
                .await
                .unwrap_err(),
        );
    }
}

// ---------------------------------------------------------------------------------------------
// 4. Signatures

#[tokio::test]
async fn signatures_verify_with_openssl_for_our_keys_and_pkcs11_tool_keys() {
    let Some(t) = Token::new("signatures_verify_with_openssl") else {
        return;
    };
    let b = backend(&t).await;
    let msg = b"a message longer than thirty-two bytes, signed over its SHA-256";
    for label in ["lango-ec", "tool-ec"] {
        let pk = b.public_key(label).await.unwrap();
        assert_eq!(pk.algorithm, KeyAlgorithm::P256);
        let sig = b.sign(label, msg).await.unwrap();
        assert_eq!(sig.algorithm, SignatureAlgorithm::EcdsaP256Sha256Raw);
        assert_eq!(sig.bytes.len(), 64);
        let spki = spki_der(pk.algorithm, &pk.bytes);
        assert!(
            openssl_verifies(&spki, &raw_to_der(&sig.bytes), msg),
            "{label}"
        );
        assert!(!openssl_verifies(
            &spki,
            &raw_to_der(&sig.bytes),
            b"another message"
        ));
    }
    // secp256k1: the seam has no raw identifier, so the backend returns DER.
    let pk = b.public_key("lango-k1").await.unwrap();
    assert_eq!(pk.algorithm, KeyAlgorithm::Secp256k1);
    let sig = b.sign("lango-k1", msg).await.unwrap();
    assert_eq!(sig.algorithm, SignatureAlgorithm::EcdsaSecp256k1Sha256Der);
    assert!(openssl_verifies(
        &spki_der(pk.algorithm, &pk.bytes),
        &sig.bytes,
        msg
    ));
    // And through the provider (normalised, self-verified).
    let p = provider(&b);
    let sig = p.sign("lango-k1", msg).await.unwrap();
    assert!(openssl_verifies(
        &spki_der(pk.algorithm, &pk.bytes),
        &sig.bytes,
        msg
    ));
    b.close().await;
}

#[tokio::test]
async fn k3_messages_sharing_a_32_byte_prefix_do_not_share_signatures() {
    let Some(t) = Token::new("k3_messages_sharing_a_32_byte_prefix") else {
        return;
    };
    let b = backend(&t).await;
    let prefix = [0x41u8; 32];
    let m1 = [&prefix[..], b"pay alice 1"].concat();
    let m2 = [&prefix[..], b"pay mallory 1000"].concat();
    let pk = b.public_key("lango-ec").await.unwrap();
    let spki = spki_der(pk.algorithm, &pk.bytes);
    let s1 = b.sign("lango-ec", &m1).await.unwrap().bytes;
    let s2 = b.sign("lango-ec", &m2).await.unwrap().bytes;
    assert!(openssl_verifies(&spki, &raw_to_der(&s1), &m1));
    assert!(openssl_verifies(&spki, &raw_to_der(&s2), &m2));
    assert!(!openssl_verifies(&spki, &raw_to_der(&s1), &m2));
    assert!(!openssl_verifies(&spki, &raw_to_der(&s2), &m1));
    // What the Go provider produced: a signature whose "digest" is the shared prefix. Ours
    // is not one.
    use p256::ecdsa::{VerifyingKey, signature::hazmat::PrehashVerifier};
    let vk = VerifyingKey::from_sec1_bytes(&pk.bytes).unwrap();
    let sig = p256::ecdsa::Signature::from_slice(&s1)
        .unwrap()
        .normalize_s();
    assert!(vk.verify_prehash(&prefix, &sig).is_err());
    assert!(vk.verify_prehash(&sha256(&m1), &sig).is_ok());
    b.close().await;
}

#[tokio::test]
async fn signatures_are_low_s_after_kms_provider() {
    let Some(t) = Token::new("signatures_are_low_s_after_kms_provider") else {
        return;
    };
    let b = backend(&t).await;
    // The token itself returns high-S about half of the time...
    let mut high = 0;
    for i in 0..32u8 {
        if !is_low_s_p256(&b.sign("lango-ec", &[i]).await.unwrap().bytes) {
            high += 1;
        }
    }
    assert!(
        high > 0,
        "no high-S signature in 32: the check below would prove nothing"
    );
    // ...the provider never does, and what it returns still verifies.
    let p = provider(&b);
    let pk = p.public_key("").await.unwrap();
    let spki = spki_der(pk.algorithm, &pk.bytes);
    for i in 0..32u8 {
        let sig = p.sign("", &[i]).await.unwrap();
        assert_eq!(sig.algorithm, SignatureAlgorithm::EcdsaP256Sha256Raw);
        assert!(is_low_s_p256(&sig.bytes), "signature {i} is high-S");
        if i < 4 {
            assert!(openssl_verifies(&spki, &raw_to_der(&sig.bytes), &[i]));
        }
    }
    b.close().await;
}

// ---------------------------------------------------------------------------------------------
// 5. Session loss

/// `C_CloseAllSessions(slot)` through an independent handle on the module: every session of
/// this process on the token disappears behind the backend's back.
fn close_all_sessions(slot: u64) {
    // SAFETY: loads the same module (dlopen returns the loaded instance); C_CloseAllSessions
    // takes a slot id and touches no caller memory.
    let rv = unsafe {
        let lib = cryptoki_sys::Pkcs11::new(module()).unwrap();
        lib.C_CloseAllSessions(slot as cryptoki_sys::CK_SLOT_ID)
    };
    assert_eq!(rv, cryptoki_sys::CKR_OK);
}

#[tokio::test]
async fn a_closed_session_is_unavailable_and_reopened_with_login() {
    let Some(t) = Token::new("a_closed_session_is_unavailable_and_reopened") else {
        return;
    };
    let b = backend(&t).await;
    let blob_key = b.wrap("lango-aes", &[1; 32], b"c").await.unwrap();

    // The raw backend: one attempt fails as Unavailable (transient), the next one reopens,
    // logs in (the keys are private objects) and succeeds.
    close_all_sessions(t.slot);
    let e = b.sign("lango-ec", b"m").await.unwrap_err();
    assert_eq!(e.kind, KmsErrorKind::Unavailable, "{e}");
    assert!(e.is_transient());
    assert_eq!(b.sign("lango-ec", b"m").await.unwrap().bytes.len(), 64);

    // Through KmsProvider the retry hides it, for every operation.
    let p = provider(&b);
    close_all_sessions(t.slot);
    p.sign("", b"after loss").await.unwrap();
    close_all_sessions(t.slot);
    let blob = p.encrypt("", b"value", ctx(b"r")).await.unwrap();
    close_all_sessions(t.slot);
    assert_eq!(
        p.decrypt("", &blob, ctx(b"r")).await.unwrap().expose(),
        b"value"
    );
    close_all_sessions(t.slot);
    assert_eq!(
        b.unwrap("lango-aes", &blob_key.ciphertext, None, b"c")
            .await
            .map_err(|e| e.kind),
        Err(KmsErrorKind::Unavailable)
    );
    assert_eq!(
        b.unwrap("lango-aes", &blob_key.ciphertext, None, b"c")
            .await
            .unwrap()
            .expose(),
        &[1; 32]
    );
    b.close().await;
}

#[tokio::test]
async fn a_logout_behind_the_backends_back_is_recovered() {
    let Some(t) = Token::new("a_logout_behind_the_backends_back") else {
        return;
    };
    let b = backend(&t).await;
    let p = provider(&b);
    p.sign("", b"before").await.unwrap();
    // Login state is per token and process: a logout in any session logs every session out.
    let other = t.session();
    other.logout().unwrap();
    drop(other);
    let sig = p.sign("", b"after").await.unwrap();
    assert_eq!(sig.bytes.len(), 64);
    let blob = p.encrypt("", b"v", ctx(b"r")).await.unwrap();
    assert_eq!(
        p.decrypt("", &blob, ctx(b"r")).await.unwrap().expose(),
        b"v"
    );
    b.close().await;
}

// ---------------------------------------------------------------------------------------------
// 6. Several providers, close

#[tokio::test]
async fn two_providers_on_one_module_work_and_close_twice_is_harmless() {
    let Some(t) = Token::new("two_providers_on_one_module") else {
        return;
    };
    let a = backend(&t).await;
    let b = backend(&t).await;
    let (pa, pb) = (provider(&a), provider(&b));
    let blob = pa.encrypt("", b"shared", ctx(b"r")).await.unwrap();
    assert_eq!(
        pb.decrypt("", &blob, ctx(b"r")).await.unwrap().expose(),
        b"shared"
    );
    pa.sign("", b"a").await.unwrap();
    pb.sign("", b"b").await.unwrap();

    // Closing one (twice) neither logs the other out nor finalises the module under it.
    a.close().await;
    a.close().await;
    let e = a.sign("lango-ec", b"m").await.unwrap_err();
    assert_eq!(
        (e.kind, e.message.as_str()),
        (KmsErrorKind::Pkcs11Session, "provider is closed")
    );
    assert_eq!(
        a.list_keys().await.unwrap_err().kind,
        KmsErrorKind::Pkcs11Session
    );
    let e = pa.sign("", b"m").await.unwrap_err();
    assert_eq!(kms_kind(&e), Some(KmsErrorKind::Pkcs11Session));
    // The other provider's very next attempt works (no retry needed: the raw backend).
    assert_eq!(b.sign("lango-ec", b"m").await.unwrap().bytes.len(), 64);
    assert_eq!(
        pb.decrypt("", &blob, ctx(b"r")).await.unwrap().expose(),
        b"shared"
    );
    b.close().await;
    b.close().await;
    assert!(format!("{b:?}").contains("closed: true"));

    // After both closed, a new provider on the module works again.
    let c = backend(&t).await;
    assert_eq!(c.sign("lango-ec", b"m").await.unwrap().bytes.len(), 64);
    c.close().await;
}

// ---------------------------------------------------------------------------------------------
// 7. A key deleted from the token (issue 17)

/// Issue 17: deleting the HSM key (the incident response of K-1) must stop the node from
/// writing new values, not move them to the local key. The AES key is destroyed by an
/// independent client (pkcs11-tool) while the backend runs with its label map of the key;
/// the health probe then reports the key refused, and the composite returns the HSM's
/// refusal instead of falling back, whether or not the retry policy may retry (with
/// `maxRetries = 0` the stale handle must not read as an outage either).
#[tokio::test]
async fn a_deleted_key_is_refused_and_the_composite_never_falls_back() {
    let Some(t) = Token::new("a_deleted_key_is_refused_and_the_composite_never_falls_back") else {
        return;
    };
    for max_retries in [3, 0] {
        let doomed = format!("doomed-aes-{max_retries}");
        {
            let s = t.session();
            s.generate_key(
                &Mechanism::AesKeyGen,
                &[
                    Attribute::Token(true),
                    Attribute::Private(true),
                    Attribute::Label(doomed.as_bytes().to_vec()),
                    Attribute::ValueLen(32.into()),
                    Attribute::Encrypt(true),
                    Attribute::Decrypt(true),
                    Attribute::Sensitive(true),
                    Attribute::Extractable(false),
                ],
            )
            .unwrap();
        }
        let mut cfg = t.config(Some(PIN));
        cfg.encryption_key_id = Some(doomed.clone());
        cfg.max_retries = max_retries;
        let b = Arc::new(open(&cfg).await.unwrap());
        let primary: Arc<dyn CryptoProvider> = Arc::new(KmsProvider::new(
            b.clone() as Arc<dyn KmsBackend>,
            cfg.retry_policy(),
        ));
        let interval = std::time::Duration::from_millis(50);
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

        let before = composite.encrypt("", b"before", ctx(b"r1")).await.unwrap();
        assert_eq!(before[4], ProviderTag::Pkcs11 as u8);
        assert!(checker.check().await);

        // Destroyed by an independent client.
        run(
            "pkcs11-tool",
            &[
                "--module",
                &module(),
                "--token-label",
                &t.label,
                "--login",
                "--pin",
                PIN,
                "--delete-object",
                "--type",
                "secrkey",
                "--label",
                &doomed,
            ],
        );
        tokio::time::sleep(interval * 2).await;

        let e = composite
            .encrypt("", b"after", ctx(b"r2"))
            .await
            .unwrap_err();
        let state = checker.state().await;
        let Connection::Refused(f) = &state else {
            panic!("max_retries {max_retries}: the probe must see a refused key: {state:?}");
        };
        assert_eq!(f.kind, ProviderErrorKind::InvalidKey, "{f}");
        assert_eq!(f.key_state(), "not found or invalid");
        assert_eq!(e.kind, ProviderErrorKind::InvalidKey, "{e}");
        assert!(e.to_string().contains(&doomed), "{e}");
        assert!(
            e.to_string().contains("key state: not found or invalid"),
            "{e}"
        );
        assert_eq!(composite.fallback_count(), 0, "max_retries {max_retries}");
        assert!(!composite.used_local());
        // What the HSM sealed stays the HSM's: the local key is not asked to open it.
        let e = composite
            .decrypt("", &before, ctx(b"r1"))
            .await
            .unwrap_err();
        assert_eq!(e.kind, ProviderErrorKind::InvalidKey, "{e}");
        assert!(!composite.used_local());
        // The refusal is per key: signatures with the untouched EC key still work.
        assert_eq!(
            composite.sign("", b"m").await.unwrap().algorithm,
            SignatureAlgorithm::EcdsaP256Sha256Raw
        );
        assert_eq!(composite.fallback_count(), 0);
        b.close().await;
    }
}
