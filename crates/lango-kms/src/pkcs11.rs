//! PKCS#11 backend (feature `kms-pkcs11`, spec §2.4.4), built on `cryptoki`.
//!
//! ## Construction
//!
//! 1. `security.kms.pkcs11.modulePath` is required
//!    (`new PKCS#11 provider: module path is required`).
//! 2. The module is loaded and `C_Initialize`d once per module path per process and shared by
//!    every provider on it; `CKR_CRYPTOKI_ALREADY_INITIALIZED` (another library of the process
//!    initialised it) counts as success. Failures: op `init`, kind `Pkcs11Module`.
//! 3. One read/write session is opened on `slotId` (op `open-session`, kind `Pkcs11Session`,
//!    text `slot <n>: …`).
//! 4. The PIN is `LANGO_PKCS11_PIN` when set and non-empty, else `security.kms.pkcs11.pin`. It is
//!    read once, kept in a zeroize-on-drop secret and never shown by `Debug`, logs or errors.
//!    With a non-empty PIN the session logs in as `CKU_USER` (op `login`); an empty PIN means no
//!    login (private objects stay invisible).
//! 5. Up to 100 secret keys and up to 100 private keys are discovered by `CKA_LABEL`. Failures
//!    of the secret-key search are errors (ops `find-keys-init`, `find-keys`, `find-keys-final`);
//!    failures of the private-key search are logged and ignored (Go parity).
//!
//! ## Key ids
//!
//! Key ids are object labels. The aliases `""`, `"local"` and `"default"` name the role's
//! default key: `security.kms.signingKeyId` / `encryptionKeyId` when set, else
//! `security.kms.pkcs11.keyLabel`, else `security.kms.keyId`. Lookups are per role (deviation
//! from Go, K-2): `sign` and `public_key` look among private keys, `wrap`/`unwrap` among secret
//! keys, so an EC key pair and an AES key may share a label. A label found only in the other
//! class is `InvalidKey` with a message saying so; an unknown label is
//! `KmsError{op:"resolve-key", key_id:<label>, kind: InvalidKey}`.
//!
//! ## Operations
//!
//! - **sign**: SHA-256 of the payload is computed locally and the 32-byte digest is signed
//!   with `CKM_ECDSA` (K-3: Go passed the raw payload, so messages sharing a 32-byte prefix
//!   shared signatures). P-256 signatures are returned raw (`r‖s`,
//!   [`SignatureAlgorithm::EcdsaP256Sha256Raw`]); secp256k1 signatures are converted to DER
//!   ([`SignatureAlgorithm::EcdsaSecp256k1Sha256Der`]), since the seam has no raw secp256k1
//!   identifier. Signatures may be high-S; [`crate::KmsProvider`] normalises and verifies them.
//! - **public_key**: the public-key object with the private key's label (else its `CKA_ID`);
//!   `CKA_EC_PARAMS` selects the curve and `CKA_EC_POINT` (a DER OCTET STRING around the SEC1
//!   point; a bare point is accepted too) gives the key, returned as an uncompressed SEC1 point.
//! - **wrap**: `CKM_AES_GCM` with a fresh 96-bit IV from the OS RNG per call, a 128-bit tag and
//!   the caller's context as additional authenticated data (deviation: Go used no AAD; the
//!   envelope binds purpose and row this way). Output `IV(12) ‖ ciphertext ‖ tag(16)`. Random
//!   96-bit IVs bound the safe use of one AES key to about 2^32 wraps (NIST SP 800-38D §8.3).
//! - **unwrap**: input shorter than 28 bytes is refused before the token is called
//!   (`DecryptionFailed`, `ciphertext too short`); tag failures (`CKR_ENCRYPTED_DATA_INVALID`,
//!   `CKR_ENCRYPTED_DATA_LEN_RANGE`, and `CKR_GENERAL_ERROR` / `CKR_FUNCTION_FAILED` from
//!   `C_Decrypt` itself after a successful `C_DecryptInit`, which is how SoftHSM2 reports a bad
//!   tag) are `DecryptionFailed`.
//!
//! Every token call runs on the blocking thread pool with the provider's session mutex held
//! (one session, serialised, as in Go).
//!
//! ## Session loss (K-6)
//!
//! `CKR_SESSION_HANDLE_INVALID`, `CKR_SESSION_CLOSED`, `CKR_DEVICE_REMOVED`, `CKR_DEVICE_ERROR`,
//! `CKR_TOKEN_NOT_PRESENT`, `CKR_USER_NOT_LOGGED_IN`, `CKR_CRYPTOKI_NOT_INITIALIZED` and stale
//! object handles (`CKR_KEY_HANDLE_INVALID`, `CKR_OBJECT_HANDLE_INVALID`) are `Unavailable`:
//! the session is dropped, and the next attempt (the retry policy retries `Unavailable`) opens
//! a new one, logs in and discovers the labels again before it runs. A stale object handle
//! (the key was deleted or replaced on the token) is not left to the retry policy: the labels
//! are discovered again at once and the operation runs once more, so a deleted key is the
//! refusal `InvalidKey` ("no key with label …") even with `maxRetries = 0`, never an outage
//! that would let the composite fall back (issue 17). Everything else is
//! classified once and not retried: `CKR_KEY_TYPE_INCONSISTENT` and
//! `CKR_KEY_FUNCTION_NOT_PERMITTED` are `InvalidKey`, the rest `Pkcs11Session`.
//!
//! ## Shutdown
//!
//! [`KmsBackend::close`] logs out (only when no other provider of the process still uses the
//! same slot: the login state of a token is shared by all sessions of a process), closes the
//! session and, with the last provider on a module this crate initialised, calls
//! `C_Finalize`. It is idempotent; later calls fail with `Pkcs11Session`. Dropping an unclosed
//! provider does the same.
//!
//! A PIN given to a second provider on a slot where this process is already logged in is not
//! checked by the token (`CKR_USER_ALREADY_LOGGED_IN` is accepted as success).

use std::{
    collections::{BTreeMap, HashMap},
    fmt,
    num::NonZeroUsize,
    sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError},
};

use async_trait::async_trait;
use cryptoki::{
    context::{CInitializeArgs, CInitializeFlags, Function, Pkcs11 as Context},
    error::{Error as CkError, RvError},
    mechanism::{Mechanism, aead::GcmParams},
    object::{Attribute, AttributeType, KeyType, ObjectClass, ObjectHandle},
    session::{Session, UserType},
    slot::Slot,
    types::{AuthPin, Ulong},
};
use lango_crypto::{
    SecretBytes,
    digest::sha256,
    provider::{KeyAlgorithm, PublicKeyInfo, Signature, SignatureAlgorithm},
    random,
};

use crate::{
    Error,
    backend::{KeyRole, KeyUsage, KmsBackend, KmsProviderName, RemoteKeyInfo, Wrapped},
    config::KmsConfig,
    error::{KmsError, KmsErrorKind},
};

/// The provider name in [`KmsError::provider`].
const PROVIDER: &str = "pkcs11";
/// The environment variable that overrides `security.kms.pkcs11.pin`.
pub const PIN_ENV: &str = "LANGO_PKCS11_PIN";
/// At most this many keys of each class are discovered (Go parity).
pub const MAX_KEYS_PER_CLASS: usize = 100;
/// AES-GCM IV length.
pub const IV_LEN: usize = 12;
/// AES-GCM tag length.
pub const TAG_LEN: usize = 16;
/// DER of the P-256 named-curve OID (1.2.840.10045.3.1.7), as in `CKA_EC_PARAMS`.
const P256_PARAMS: &[u8] = &[0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07];
/// DER of the secp256k1 named-curve OID (1.3.132.0.10), as in `CKA_EC_PARAMS`.
const SECP256K1_PARAMS: &[u8] = &[0x06, 0x05, 0x2b, 0x81, 0x04, 0x00, 0x0a];

/// The elliptic curves this backend signs with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Curve {
    P256,
    Secp256k1,
}

impl Curve {
    fn from_params(params: &[u8]) -> Option<Self> {
        match params {
            P256_PARAMS => Some(Self::P256),
            SECP256K1_PARAMS => Some(Self::Secp256k1),
            _ => None,
        }
    }

    const fn algorithm(self) -> KeyAlgorithm {
        match self {
            Self::P256 => KeyAlgorithm::P256,
            Self::Secp256k1 => KeyAlgorithm::Secp256k1,
        }
    }

    const fn name(self) -> &'static str {
        match self {
            Self::P256 => "EC_P256",
            Self::Secp256k1 => "EC_SECP256K1",
        }
    }
}

#[derive(Debug, Clone)]
struct SecretKeyEntry {
    handle: ObjectHandle,
    key_type: Option<KeyType>,
}

#[derive(Debug, Clone)]
struct PrivateKeyEntry {
    handle: ObjectHandle,
    key_type: Option<KeyType>,
    curve: Option<Curve>,
    id: Option<Vec<u8>>,
}

/// The label maps built by key discovery.
#[derive(Debug, Default)]
struct Keys {
    secret: BTreeMap<String, SecretKeyEntry>,
    private: BTreeMap<String, PrivateKeyEntry>,
}

impl Keys {
    fn labels(&self) -> Vec<&str> {
        let mut v: Vec<&str> = self
            .secret
            .keys()
            .chain(self.private.keys())
            .map(String::as_str)
            .collect();
        v.sort_unstable();
        v.dedup();
        v
    }

    fn secret(&self, op: &'static str, label: &str) -> Result<&SecretKeyEntry, KmsError> {
        if let Some(e) = self.secret.get(label) {
            return Ok(e);
        }
        Err(if self.private.contains_key(label) {
            KmsError::new(
                PROVIDER,
                op,
                label,
                KmsErrorKind::InvalidKey,
                format!("label {label:?} names a private key, not an AES secret key"),
            )
        } else {
            not_found(label)
        })
    }

    fn private(&self, op: &'static str, label: &str) -> Result<&PrivateKeyEntry, KmsError> {
        if let Some(e) = self.private.get(label) {
            return Ok(e);
        }
        Err(if self.secret.contains_key(label) {
            KmsError::new(
                PROVIDER,
                op,
                label,
                KmsErrorKind::InvalidKey,
                format!("label {label:?} names a secret key, not a signing key"),
            )
        } else {
            not_found(label)
        })
    }
}

fn not_found(label: &str) -> KmsError {
    KmsError::new(
        PROVIDER,
        "resolve-key",
        label,
        KmsErrorKind::InvalidKey,
        format!("no key with label {label:?}"),
    )
}

// ---------------------------------------------------------------------------------------------
// Process-wide module registry: one initialised context per module path.

struct Module {
    ctx: Context,
    /// Whether our `C_Initialize` succeeded (rather than finding the module initialised).
    owned: bool,
    /// Live providers on this module.
    users: usize,
    /// Live providers per slot id (login state is per token and process).
    slots: HashMap<u64, usize>,
}

fn registry() -> MutexGuard<'static, HashMap<String, Module>> {
    static MODULES: OnceLock<Mutex<HashMap<String, Module>>> = OnceLock::new();
    MODULES
        .get_or_init(|| Mutex::new(HashMap::new()))
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
}

fn init_error(message: String) -> KmsError {
    KmsError::new(PROVIDER, "init", "", KmsErrorKind::Pkcs11Module, message)
}

/// `C_Initialize` with OS locking; `true` when this call initialised the module.
fn initialize(ctx: &Context) -> Result<bool, CkError> {
    match ctx.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK)) {
        Ok(()) => Ok(true),
        Err(CkError::Pkcs11(RvError::CryptokiAlreadyInitialized, _)) => Ok(false),
        Err(e) => Err(e),
    }
}

/// Loads and initialises `path` (once per process) and registers a provider on `slot`.
fn acquire(path: &str, slot: u64) -> Result<Context, KmsError> {
    let mut reg = registry();
    if let Some(m) = reg.get_mut(path) {
        m.users += 1;
        *m.slots.entry(slot).or_default() += 1;
        return Ok(m.ctx.clone());
    }
    let ctx = Context::new(path)
        .map_err(|e| init_error(format!("load module {path}: {e}")).with_source(e))?;
    let owned = initialize(&ctx)
        .map_err(|e| init_error(format!("initialize {path}: {}", describe(&e))).with_source(e))?;
    reg.insert(
        path.to_owned(),
        Module {
            ctx: ctx.clone(),
            owned,
            users: 1,
            slots: HashMap::from([(slot, 1)]),
        },
    );
    Ok(ctx)
}

/// Unregisters a provider; returns whether it was the last one on `slot`. Finalises the
/// module when the last provider on it goes and this crate initialised it.
fn release(path: &str, slot: u64, before_finalize: impl FnOnce(bool)) {
    let mut reg = registry();
    let Some(m) = reg.get_mut(path) else {
        before_finalize(true);
        return;
    };
    let last_on_slot = match m.slots.get_mut(&slot) {
        Some(n) if *n > 1 => {
            *n -= 1;
            false
        }
        _ => {
            m.slots.remove(&slot);
            true
        }
    };
    before_finalize(last_on_slot);
    m.users = m.users.saturating_sub(1);
    if m.users == 0
        && let Some(m) = reg.remove(path)
        && m.owned
        && let Err(e) = m.ctx.finalize()
    {
        tracing::debug!(module = path, error = %e, "C_Finalize failed");
    }
}

// ---------------------------------------------------------------------------------------------
// Error classification.

/// `PinIncorrect` → `CKR_PIN_INCORRECT`.
fn rv_name(rv: RvError) -> String {
    let camel = format!("{rv:?}");
    let mut out = String::from("CKR_");
    for (i, c) in camel.chars().enumerate() {
        if c.is_ascii_uppercase() && i > 0 {
            out.push('_');
        }
        out.push(c.to_ascii_uppercase());
    }
    out
}

/// A short, secret-free description: `C_Login: CKR_PIN_INCORRECT`.
fn describe(e: &CkError) -> String {
    match e {
        CkError::Pkcs11(rv, f) => format!("C_{f:?}: {}", rv_name(*rv)),
        other => other.to_string(),
    }
}

/// The operation name for a failed PKCS#11 function, where Go names it.
fn op_of(f: Function, default: &'static str) -> &'static str {
    match f {
        Function::Initialize => "init",
        Function::OpenSession => "open-session",
        Function::Login => "login",
        Function::FindObjectsInit => "find-keys-init",
        Function::FindObjects => "find-keys",
        Function::FindObjectsFinal => "find-keys-final",
        Function::SignInit => "sign-init",
        Function::Sign => "sign",
        Function::EncryptInit => "encrypt-init",
        Function::Encrypt => "encrypt",
        Function::DecryptInit => "decrypt-init",
        Function::Decrypt => "decrypt",
        _ => default,
    }
}

/// Return values after which the session (or the handles it found) must be replaced.
const fn is_session_loss(rv: RvError) -> bool {
    matches!(
        rv,
        RvError::SessionHandleInvalid
            | RvError::SessionClosed
            | RvError::DeviceRemoved
            | RvError::DeviceError
            | RvError::TokenNotPresent
            | RvError::UserNotLoggedIn
            | RvError::CryptokiNotInitialized
            | RvError::KeyHandleInvalid
            | RvError::ObjectHandleInvalid
    )
}

/// Whether `e` came from a handle of an object that no longer exists.
fn is_stale_handle(e: &KmsError) -> bool {
    matches!(
        e.source
            .as_deref()
            .and_then(|s| s.downcast_ref::<CkError>()),
        Some(CkError::Pkcs11(
            RvError::KeyHandleInvalid | RvError::ObjectHandleInvalid,
            _
        ))
    )
}

/// Classifies a `cryptoki` error of operation `default_op` on `key_id`.
fn classify(default_op: &'static str, key_id: &str, e: CkError) -> KmsError {
    let (op, kind) = match &e {
        CkError::Pkcs11(rv, f) => {
            let kind = match (*rv, *f) {
                (rv, _) if is_session_loss(rv) => KmsErrorKind::Unavailable,
                (RvError::EncryptedDataInvalid | RvError::EncryptedDataLenRange, _) => {
                    KmsErrorKind::DecryptionFailed
                }
                // SoftHSM2 reports a GCM tag mismatch from C_Decrypt as CKR_GENERAL_ERROR;
                // C_DecryptInit already accepted key, mechanism and IV at that point.
                (RvError::GeneralError | RvError::FunctionFailed, Function::Decrypt) => {
                    KmsErrorKind::DecryptionFailed
                }
                (RvError::KeyTypeInconsistent | RvError::KeyFunctionNotPermitted, _) => {
                    KmsErrorKind::InvalidKey
                }
                _ => KmsErrorKind::Pkcs11Session,
            };
            (op_of(*f, default_op), kind)
        }
        _ => (default_op, KmsErrorKind::Pkcs11Session),
    };
    KmsError::new(PROVIDER, op, key_id, kind, describe(&e)).with_source(e)
}

// ---------------------------------------------------------------------------------------------
// The session state, used on blocking threads only.

struct Inner {
    ctx: Context,
    module_path: String,
    slot: Slot,
    pin: Option<AuthPin>,
    session: Option<Session>,
    logged_in: bool,
    keys: Keys,
    closed: bool,
}

impl Inner {
    /// Loads the module and opens, logs in and discovers, with the construction error kinds.
    fn open(module_path: String, slot_id: u64, pin: Option<AuthPin>) -> Result<Self, KmsError> {
        let slot = Slot::try_from(slot_id).map_err(|e| {
            KmsError::new(
                PROVIDER,
                "open-session",
                "",
                KmsErrorKind::Pkcs11Session,
                format!("slot {slot_id}: {e}"),
            )
        })?;
        let ctx = acquire(&module_path, slot_id)?;
        // From here on, dropping `inner` unregisters it again.
        let mut inner = Self {
            ctx,
            module_path,
            slot,
            pin,
            session: None,
            logged_in: false,
            keys: Keys::default(),
            closed: false,
        };
        inner.connect().map_err(|mut e| {
            // Construction reports every session-level failure as Pkcs11Session (parity).
            if e.kind != KmsErrorKind::Pkcs11Module {
                e.kind = KmsErrorKind::Pkcs11Session;
            }
            e
        })?;
        Ok(inner)
    }

    fn slot_id(&self) -> u64 {
        self.slot.id()
    }

    /// Opens a session, logs in and discovers the keys, replacing any previous session.
    fn connect(&mut self) -> Result<(), KmsError> {
        self.drop_session();
        let slot_id = self.slot_id();
        let open_err = |e: CkError| {
            let mut k = classify("open-session", "", e);
            k.op = "open-session".into();
            k.message = format!("slot {slot_id}: {}", k.message);
            k
        };
        let session = match self.ctx.open_rw_session(self.slot) {
            // Finalised behind our back: initialise again and retry once.
            Err(CkError::Pkcs11(RvError::CryptokiNotInitialized, _)) => {
                initialize(&self.ctx).map_err(open_err)?;
                self.ctx.open_rw_session(self.slot)
            }
            other => other,
        }
        .map_err(open_err)?;
        let mut logged_in = false;
        if let Some(pin) = &self.pin {
            match session.login(UserType::User, Some(pin)) {
                Ok(()) | Err(CkError::Pkcs11(RvError::UserAlreadyLoggedIn, _)) => {
                    logged_in = true;
                }
                Err(e) => {
                    let mut k = classify("login", "", e);
                    k.op = "login".into();
                    // Let the failed session go without a logout.
                    drop(session);
                    return Err(k);
                }
            }
        }
        let keys = discover(&session)?;
        tracing::debug!(
            slot = slot_id,
            secret_keys = keys.secret.len(),
            private_keys = keys.private.len(),
            "PKCS#11 session opened"
        );
        self.session = Some(session);
        self.logged_in = logged_in;
        self.keys = keys;
        Ok(())
    }

    /// Closes the current session, if any, ignoring errors (it may already be gone).
    fn drop_session(&mut self) {
        if let Some(s) = self.session.take()
            && let Err(e) = s.close()
        {
            tracing::debug!(error = %describe(&e), "closing a lost PKCS#11 session failed");
        }
    }

    /// Runs `f` on a live session, reconnecting first when the previous one was lost, and
    /// drops the session when `f` reports its loss.
    ///
    /// A stale object handle (`CKR_KEY_HANDLE_INVALID`, `CKR_OBJECT_HANDLE_INVALID`) means the
    /// key the label map pointed at was deleted or replaced on the token. The labels are then
    /// discovered again at once and `f` runs once more, so that a deleted key is answered as
    /// the refusal it is (`InvalidKey`, "no key with label") and a replaced key is used, even
    /// with no retries configured; an outage (`Unavailable`) must not stand for a deleted key,
    /// or the composite provider would move new values to the local key (issue 17).
    fn with_session<T>(
        &mut self,
        op: &'static str,
        key_id: &str,
        f: impl Fn(&Session, &Keys) -> Result<T, KmsError>,
    ) -> Result<T, KmsError> {
        if self.closed {
            return Err(closed(op, key_id));
        }
        if self.session.is_none() {
            self.connect()?;
            tracing::info!(slot = self.slot_id(), "PKCS#11 session reopened");
        }
        let Some(session) = self.session.as_ref() else {
            return Err(closed(op, key_id));
        };
        let result = f(session, &self.keys);
        let Err(e) = &result else {
            return result;
        };
        if e.kind != KmsErrorKind::Unavailable {
            return result;
        }
        if is_stale_handle(e) {
            tracing::info!(
                slot = self.slot_id(),
                op = %e.op,
                key_id,
                error = %e.message,
                "PKCS#11 key handle is stale; discovering the keys again"
            );
            self.connect()?;
            let Some(session) = self.session.as_ref() else {
                return Err(closed(op, key_id));
            };
            let again = f(session, &self.keys);
            if matches!(&again, Err(e) if e.kind == KmsErrorKind::Unavailable) {
                self.drop_session();
            }
            return again;
        }
        tracing::warn!(
            slot = self.slot_id(),
            op = %e.op,
            error = %e.message,
            "PKCS#11 session lost; it will be reopened before the next attempt"
        );
        self.drop_session();
        result
    }

    fn close(&mut self) {
        if self.closed {
            return;
        }
        self.closed = true;
        let session = self.session.take();
        let logged_in = self.logged_in;
        release(&self.module_path, self.slot.id(), |last_on_slot| {
            if let Some(s) = session {
                if logged_in
                    && last_on_slot
                    && let Err(e) = s.logout()
                {
                    tracing::debug!(error = %describe(&e), "C_Logout failed");
                }
                if let Err(e) = s.close() {
                    tracing::debug!(error = %describe(&e), "C_CloseSession failed");
                }
            }
        });
        self.keys = Keys::default();
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.close();
    }
}

fn closed(op: &'static str, key_id: &str) -> KmsError {
    KmsError::new(
        PROVIDER,
        op,
        key_id,
        KmsErrorKind::Pkcs11Session,
        "provider is closed",
    )
}

fn label_of(attrs: &[Attribute]) -> Option<String> {
    attrs.iter().find_map(|a| match a {
        Attribute::Label(l) if !l.is_empty() => Some(String::from_utf8_lossy(l).into_owned()),
        _ => None,
    })
}

fn key_type_of(attrs: &[Attribute]) -> Option<KeyType> {
    attrs.iter().find_map(|a| match a {
        Attribute::KeyType(t) => Some(*t),
        _ => None,
    })
}

/// Finds up to [`MAX_KEYS_PER_CLASS`] objects of `class`.
fn find(session: &Session, class: ObjectClass) -> Result<Vec<ObjectHandle>, CkError> {
    let cache = NonZeroUsize::new(MAX_KEYS_PER_CLASS).unwrap_or(NonZeroUsize::MIN);
    session
        .iter_objects_with_cache_size(&[Attribute::Class(class)], cache)?
        .take(MAX_KEYS_PER_CLASS)
        .collect()
}

fn discover(session: &Session) -> Result<Keys, KmsError> {
    let mut keys = Keys::default();
    let err = |e| classify("find-keys", "", e);
    for handle in find(session, ObjectClass::SECRET_KEY).map_err(err)? {
        let attrs = session
            .get_attributes(handle, &[AttributeType::Label, AttributeType::KeyType])
            .map_err(err)?;
        if let Some(label) = label_of(&attrs) {
            keys.secret.insert(
                label,
                SecretKeyEntry {
                    handle,
                    key_type: key_type_of(&attrs),
                },
            );
        }
    }
    // Failures of the private-key search are not fatal (Go parity): signing then reports the
    // label as unknown.
    let private = find(session, ObjectClass::PRIVATE_KEY).and_then(|handles| {
        let mut out = Vec::with_capacity(handles.len());
        for handle in handles {
            let attrs = session.get_attributes(
                handle,
                &[
                    AttributeType::Label,
                    AttributeType::KeyType,
                    AttributeType::EcParams,
                    AttributeType::Id,
                ],
            )?;
            out.push((handle, attrs));
        }
        Ok(out)
    });
    match private {
        Ok(found) => {
            for (handle, attrs) in found {
                let Some(label) = label_of(&attrs) else {
                    continue;
                };
                let curve = attrs.iter().find_map(|a| match a {
                    Attribute::EcParams(p) => Curve::from_params(p),
                    _ => None,
                });
                let id = attrs.iter().find_map(|a| match a {
                    Attribute::Id(id) if !id.is_empty() => Some(id.clone()),
                    _ => None,
                });
                keys.private.insert(
                    label,
                    PrivateKeyEntry {
                        handle,
                        key_type: key_type_of(&attrs),
                        curve,
                        id,
                    },
                );
            }
        }
        Err(e) => {
            tracing::warn!(error = %describe(&e), "PKCS#11 private-key discovery failed; continuing without private keys");
        }
    }
    Ok(keys)
}

/// The SEC1 point inside a `CKA_EC_POINT` value: a DER OCTET STRING (standard), or a bare
/// uncompressed point (some tokens).
fn ec_point(value: &[u8]) -> Option<&[u8]> {
    if let [0x04, rest @ ..] = value {
        let (len, body) = match rest {
            [n, body @ ..] if *n < 0x80 => (usize::from(*n), body),
            [0x81, n, body @ ..] if *n >= 0x80 => (usize::from(*n), body),
            [0x82, hi, lo, body @ ..] => (usize::from(u16::from_be_bytes([*hi, *lo])), body),
            _ => (usize::MAX, &[][..]),
        };
        if len == body.len() {
            return Some(body);
        }
    }
    (value.len() == 65 && value[0] == 0x04).then_some(value)
}

/// Checks that `point` is on `curve` and returns its uncompressed SEC1 encoding.
fn checked_point(curve: Curve, point: &[u8]) -> Option<Vec<u8>> {
    match curve {
        Curve::P256 => {
            use p256::elliptic_curve::sec1::ToSec1Point;
            p256::PublicKey::from_sec1_bytes(point)
                .ok()
                .map(|pk| pk.to_sec1_point(false).as_bytes().to_vec())
        }
        Curve::Secp256k1 => {
            use k256::elliptic_curve::sec1::ToSec1Point;
            k256::PublicKey::from_sec1_bytes(point)
                .ok()
                .map(|pk| pk.to_sec1_point(false).as_bytes().to_vec())
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The backend.

/// A PKCS#11 token as a [`KmsBackend`]: ECDSA signing with EC private keys, AES-GCM wrapping
/// with AES secret keys, both found by label. See the module documentation.
pub struct Pkcs11 {
    module_path: String,
    slot_id: u64,
    signing_key: String,
    encryption_key: String,
    inner: Arc<Mutex<Inner>>,
}

impl fmt::Debug for Pkcs11 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("Pkcs11");
        d.field("module_path", &self.module_path)
            .field("slot_id", &self.slot_id)
            .field("signing_key", &self.signing_key)
            .field("encryption_key", &self.encryption_key);
        match self.inner.try_lock() {
            Ok(inner) => d
                .field("labels", &inner.keys.labels())
                .field("logged_in", &inner.logged_in)
                .field("closed", &inner.closed),
            Err(_) => d.field("labels", &format_args!("<busy>")),
        };
        d.finish_non_exhaustive()
    }
}

/// The PIN: `LANGO_PKCS11_PIN` when set and non-empty, else the configured one; `None` when
/// both are empty (no login).
fn read_pin(cfg: &KmsConfig) -> Option<AuthPin> {
    if let Ok(pin) = std::env::var(PIN_ENV)
        && !pin.is_empty()
    {
        return Some(AuthPin::from(pin));
    }
    cfg.pkcs11
        .pin
        .as_ref()
        .map(|p| p.expose())
        .filter(|p| !p.is_empty())
        .map(AuthPin::from)
}

/// The default key for `role`: the role's own id, else `pkcs11.keyLabel`, else `keyId`.
fn default_label(cfg: &KmsConfig, role: KeyRole) -> String {
    let specific = match role {
        KeyRole::Signing => cfg.signing_key_id.as_deref(),
        KeyRole::Encryption => cfg.encryption_key_id.as_deref(),
    }
    .filter(|s| !s.is_empty());
    specific
        .or_else(|| Some(cfg.pkcs11.key_label.as_str()).filter(|s| !s.is_empty()))
        .unwrap_or(&cfg.key_id)
        .to_owned()
}

fn worker_failed(op: &'static str, key_id: &str, e: &tokio::task::JoinError) -> KmsError {
    KmsError::new(
        PROVIDER,
        op,
        key_id,
        KmsErrorKind::Other,
        format!("PKCS#11 worker failed: {e}"),
    )
}

impl Pkcs11 {
    /// Loads the module, opens and logs in to a session on the configured slot and discovers
    /// the keys (spec §2.4.4 "Construction").
    pub async fn new(cfg: &KmsConfig) -> Result<Self, Error> {
        let p = &cfg.pkcs11;
        if p.module_path.is_empty() {
            return Err(Error::InvalidConfig {
                kind: KmsErrorKind::Other,
                message: "new PKCS#11 provider: module path is required".to_owned(),
            });
        }
        let pin = read_pin(cfg);
        let (module_path, slot_id) = (p.module_path.clone(), p.slot_id);
        let path = module_path.clone();
        let inner = tokio::task::spawn_blocking(move || Inner::open(path, slot_id, pin))
            .await
            .map_err(|e| worker_failed("init", "", &e))??;
        Ok(Self {
            module_path,
            slot_id,
            signing_key: default_label(cfg, KeyRole::Signing),
            encryption_key: default_label(cfg, KeyRole::Encryption),
            inner: Arc::new(Mutex::new(inner)),
        })
    }

    /// The module path.
    pub fn module_path(&self) -> &str {
        &self.module_path
    }

    /// The slot id.
    pub fn slot_id(&self) -> u64 {
        self.slot_id
    }

    /// Runs `f` with the session state on the blocking pool.
    async fn blocking<T: Send + 'static>(
        &self,
        op: &'static str,
        key_id: &str,
        f: impl FnOnce(&mut Inner) -> Result<T, KmsError> + Send + 'static,
    ) -> Result<T, KmsError> {
        let inner = Arc::clone(&self.inner);
        tokio::task::spawn_blocking(move || {
            let mut guard = inner.lock().unwrap_or_else(PoisonError::into_inner);
            f(&mut guard)
        })
        .await
        .map_err(|e| worker_failed(op, key_id, &e))?
    }
}

#[async_trait]
impl KmsBackend for Pkcs11 {
    fn name(&self) -> KmsProviderName {
        KmsProviderName::Pkcs11
    }

    fn signing_key_id(&self) -> &str {
        &self.signing_key
    }

    fn encryption_key_id(&self) -> &str {
        &self.encryption_key
    }

    async fn sign(&self, key_id: &str, payload: &[u8]) -> Result<Signature, KmsError> {
        let label = self.resolve_key_id(KeyRole::Signing, key_id).to_owned();
        // K-3: CKM_ECDSA signs what it is given as a digest, so give it one.
        let digest = sha256(payload);
        let l = label.clone();
        self.blocking("sign", &label, move |inner| {
            inner.with_session("sign", &l, |session, keys| {
                let key = keys.private("sign", &l)?;
                let Some(curve) = key.curve else {
                    return Err(KmsError::new(
                        PROVIDER,
                        "sign",
                        l.as_str(),
                        KmsErrorKind::InvalidKey,
                        format!(
                            "key {l:?} is not a P-256 or secp256k1 EC key (type {})",
                            key.key_type
                                .map_or_else(|| "unknown".to_owned(), |t| t.to_string())
                        ),
                    ));
                };
                let raw = session
                    .sign(&Mechanism::Ecdsa, key.handle, &digest)
                    .map_err(|e| classify("sign", &l, e))?;
                let malformed = || {
                    KmsError::new(
                        PROVIDER,
                        "sign",
                        l.as_str(),
                        KmsErrorKind::Other,
                        format!(
                            "token returned a malformed {}-byte ECDSA signature",
                            raw.len()
                        ),
                    )
                };
                if raw.len() != 64 {
                    return Err(malformed());
                }
                Ok(match curve {
                    Curve::P256 => Signature {
                        algorithm: SignatureAlgorithm::EcdsaP256Sha256Raw,
                        bytes: raw,
                    },
                    Curve::Secp256k1 => {
                        let sig =
                            k256::ecdsa::Signature::from_slice(&raw).map_err(|_| malformed())?;
                        Signature {
                            algorithm: SignatureAlgorithm::EcdsaSecp256k1Sha256Der,
                            bytes: sig.to_der().as_bytes().to_vec(),
                        }
                    }
                })
            })
        })
        .await
    }

    async fn public_key(&self, key_id: &str) -> Result<PublicKeyInfo, KmsError> {
        const OP: &str = "public-key";
        let label = self.resolve_key_id(KeyRole::Signing, key_id).to_owned();
        let l = label.clone();
        self.blocking(OP, &label, move |inner| {
            inner.with_session(OP, &l, |session, keys| {
                let key = keys.private(OP, &l)?;
                let err = |kind, msg: String| KmsError::new(PROVIDER, OP, l.as_str(), kind, msg);
                // The matching public-key object: same label and id, else same label, else
                // same id. (A wrong match is caught by KmsProvider's self-verification.)
                let label = Attribute::Label(l.as_bytes().to_vec());
                let id = key.id.clone().map(Attribute::Id);
                let mut templates = Vec::with_capacity(3);
                if let Some(id) = &id {
                    templates.push(vec![label.clone(), id.clone()]);
                }
                templates.push(vec![label]);
                templates.extend(id.map(|id| vec![id]));
                let mut found = Vec::new();
                for mut template in templates {
                    template.push(Attribute::Class(ObjectClass::PUBLIC_KEY));
                    found = session
                        .find_objects(&template)
                        .map_err(|e| classify(OP, &l, e))?;
                    if !found.is_empty() {
                        break;
                    }
                }
                let Some(&handle) = found.first() else {
                    return Err(err(
                        KmsErrorKind::InvalidKey,
                        format!("no public-key object with the label or id of key {l:?}"),
                    ));
                };
                let attrs = session
                    .get_attributes(handle, &[AttributeType::EcParams, AttributeType::EcPoint])
                    .map_err(|e| classify(OP, &l, e))?;
                let params = attrs.iter().find_map(|a| match a {
                    Attribute::EcParams(p) => Some(p.as_slice()),
                    _ => None,
                });
                let point = attrs.iter().find_map(|a| match a {
                    Attribute::EcPoint(p) => Some(p.as_slice()),
                    _ => None,
                });
                let (Some(params), Some(point)) = (params, point) else {
                    return Err(err(
                        KmsErrorKind::InvalidKey,
                        format!("public key of {l:?} is not an EC key"),
                    ));
                };
                let Some(curve) = Curve::from_params(params) else {
                    return Err(err(
                        KmsErrorKind::InvalidKey,
                        format!("public key of {l:?} is on an unsupported curve"),
                    ));
                };
                let bytes = ec_point(point)
                    .and_then(|p| checked_point(curve, p))
                    .ok_or_else(|| {
                        err(
                            KmsErrorKind::Other,
                            format!(
                                "CKA_EC_POINT of {l:?} is not a valid {} point",
                                curve.name()
                            ),
                        )
                    })?;
                Ok(PublicKeyInfo {
                    algorithm: curve.algorithm(),
                    bytes,
                })
            })
        })
        .await
    }

    async fn wrap(
        &self,
        key_id: &str,
        plaintext: &[u8],
        context: &[u8],
    ) -> Result<Wrapped, KmsError> {
        const OP: &str = "encrypt";
        let label = self.resolve_key_id(KeyRole::Encryption, key_id).to_owned();
        let plaintext = SecretBytes::from_slice(plaintext);
        let context = context.to_vec();
        let l = label.clone();
        self.blocking(OP, &label, move |inner| {
            inner.with_session(OP, &l, |session, keys| {
                let key = keys.secret(OP, &l)?;
                check_aes(OP, &l, key)?;
                // A fresh IV for every attempt.
                let iv: [u8; IV_LEN] = random::bytes().map_err(|e| {
                    KmsError::new(PROVIDER, OP, l.as_str(), KmsErrorKind::Other, e.to_string())
                })?;
                let mut iv_param = iv;
                let params = gcm(&mut iv_param, &context, OP, &l)?;
                let ct = session
                    .encrypt(&Mechanism::AesGcm(params), key.handle, plaintext.expose())
                    .map_err(|e| classify(OP, &l, e))?;
                if ct.len() != plaintext.len() + TAG_LEN {
                    return Err(KmsError::new(
                        PROVIDER,
                        OP,
                        l.as_str(),
                        KmsErrorKind::Other,
                        format!(
                            "token returned {} bytes for {} bytes of AES-GCM input",
                            ct.len(),
                            plaintext.len()
                        ),
                    ));
                }
                let mut out = Vec::with_capacity(IV_LEN + ct.len());
                out.extend_from_slice(&iv);
                out.extend_from_slice(&ct);
                Ok(Wrapped {
                    ciphertext: out,
                    key_version: None,
                })
            })
        })
        .await
    }

    async fn unwrap(
        &self,
        key_id: &str,
        ciphertext: &[u8],
        _key_version: Option<&str>,
        context: &[u8],
    ) -> Result<SecretBytes, KmsError> {
        const OP: &str = "decrypt";
        let label = self.resolve_key_id(KeyRole::Encryption, key_id).to_owned();
        // Refused before the token is called (deviation: Go only required 12 bytes).
        if ciphertext.len() < IV_LEN + TAG_LEN {
            return Err(KmsError::new(
                PROVIDER,
                OP,
                label,
                KmsErrorKind::DecryptionFailed,
                "ciphertext too short",
            ));
        }
        let ciphertext = ciphertext.to_vec();
        let context = context.to_vec();
        let l = label.clone();
        self.blocking(OP, &label, move |inner| {
            inner.with_session(OP, &l, |session, keys| {
                let key = keys.secret(OP, &l)?;
                check_aes(OP, &l, key)?;
                let (iv, body) = ciphertext.split_at(IV_LEN);
                let mut iv_param = [0u8; IV_LEN];
                iv_param.copy_from_slice(iv);
                let params = gcm(&mut iv_param, &context, OP, &l)?;
                session
                    .decrypt(&Mechanism::AesGcm(params), key.handle, body)
                    .map(SecretBytes::new)
                    .map_err(|e| classify(OP, &l, e))
            })
        })
        .await
    }

    async fn list_keys(&self) -> Result<Vec<RemoteKeyInfo>, KmsError> {
        const OP: &str = "list-keys";
        self.blocking(OP, "", |inner| {
            if inner.closed {
                return Err(closed(OP, ""));
            }
            let keys = &inner.keys;
            let mut out = Vec::with_capacity(keys.secret.len() + keys.private.len());
            for (label, k) in &keys.private {
                let mut info = RemoteKeyInfo::new(label.clone());
                info.aliases = vec![label.clone()];
                info.usage = Some(KeyUsage::Sign);
                info.algorithm = Some(match (k.curve, k.key_type) {
                    (Some(c), _) => c.name().to_owned(),
                    (None, Some(t)) => t.to_string(),
                    (None, None) => "unknown".to_owned(),
                });
                out.push(info);
            }
            for (label, k) in &keys.secret {
                let mut info = RemoteKeyInfo::new(label.clone());
                info.aliases = vec![label.clone()];
                info.usage = Some(KeyUsage::Encrypt);
                info.algorithm = Some(match k.key_type {
                    Some(KeyType::AES) => "AES".to_owned(),
                    Some(t) => t.to_string(),
                    None => "unknown".to_owned(),
                });
                out.push(info);
            }
            Ok(out)
        })
        .await
    }

    async fn close(&self) {
        let inner = Arc::clone(&self.inner);
        let done = tokio::task::spawn_blocking(move || {
            inner.lock().unwrap_or_else(PoisonError::into_inner).close();
        })
        .await;
        if let Err(e) = done {
            tracing::warn!(error = %e, "closing the PKCS#11 provider failed");
        }
    }
}

fn check_aes(op: &'static str, label: &str, key: &SecretKeyEntry) -> Result<(), KmsError> {
    match key.key_type {
        Some(KeyType::AES) | None => Ok(()),
        Some(t) => Err(KmsError::new(
            PROVIDER,
            op,
            label,
            KmsErrorKind::InvalidKey,
            format!("key {label:?} is a {t} key, not an AES key"),
        )),
    }
}

fn gcm<'a>(
    iv: &'a mut [u8; IV_LEN],
    aad: &'a [u8],
    op: &'static str,
    label: &str,
) -> Result<GcmParams<'a>, KmsError> {
    let tag_bits = Ulong::from(u64::try_from(TAG_LEN * 8).unwrap_or(128));
    GcmParams::new(iv, aad, tag_bits).map_err(|e| {
        KmsError::new(
            PROVIDER,
            op,
            label,
            KmsErrorKind::Other,
            format!("AES-GCM parameters: {e}"),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rv_names_are_the_pkcs11_names() {
        assert_eq!(rv_name(RvError::PinIncorrect), "CKR_PIN_INCORRECT");
        assert_eq!(
            rv_name(RvError::SessionHandleInvalid),
            "CKR_SESSION_HANDLE_INVALID"
        );
        let e = CkError::Pkcs11(RvError::PinIncorrect, Function::Login);
        assert_eq!(describe(&e), "C_Login: CKR_PIN_INCORRECT");
    }

    #[test]
    fn session_loss_is_unavailable_and_the_rest_is_not_transient() {
        let cases = [
            (
                RvError::SessionHandleInvalid,
                Function::Sign,
                "sign",
                KmsErrorKind::Unavailable,
            ),
            (
                RvError::SessionClosed,
                Function::EncryptInit,
                "encrypt-init",
                KmsErrorKind::Unavailable,
            ),
            (
                RvError::DeviceRemoved,
                Function::Decrypt,
                "decrypt",
                KmsErrorKind::Unavailable,
            ),
            (
                RvError::DeviceError,
                Function::SignInit,
                "sign-init",
                KmsErrorKind::Unavailable,
            ),
            (
                RvError::TokenNotPresent,
                Function::Encrypt,
                "encrypt",
                KmsErrorKind::Unavailable,
            ),
            (
                RvError::UserNotLoggedIn,
                Function::SignInit,
                "sign-init",
                KmsErrorKind::Unavailable,
            ),
            (
                RvError::KeyHandleInvalid,
                Function::SignInit,
                "sign-init",
                KmsErrorKind::Unavailable,
            ),
            (
                RvError::EncryptedDataInvalid,
                Function::Decrypt,
                "decrypt",
                KmsErrorKind::DecryptionFailed,
            ),
            (
                RvError::EncryptedDataLenRange,
                Function::Decrypt,
                "decrypt",
                KmsErrorKind::DecryptionFailed,
            ),
            (
                RvError::GeneralError,
                Function::Decrypt,
                "decrypt",
                KmsErrorKind::DecryptionFailed,
            ),
            (
                RvError::GeneralError,
                Function::Encrypt,
                "encrypt",
                KmsErrorKind::Pkcs11Session,
            ),
            (
                RvError::KeyTypeInconsistent,
                Function::SignInit,
                "sign-init",
                KmsErrorKind::InvalidKey,
            ),
            (
                RvError::KeyFunctionNotPermitted,
                Function::EncryptInit,
                "encrypt-init",
                KmsErrorKind::InvalidKey,
            ),
            (
                RvError::PinIncorrect,
                Function::Login,
                "login",
                KmsErrorKind::Pkcs11Session,
            ),
            (
                RvError::SlotIdInvalid,
                Function::OpenSession,
                "open-session",
                KmsErrorKind::Pkcs11Session,
            ),
            (
                RvError::MechanismInvalid,
                Function::SignInit,
                "sign-init",
                KmsErrorKind::Pkcs11Session,
            ),
            (
                RvError::FunctionFailed,
                Function::FindObjectsInit,
                "find-keys-init",
                KmsErrorKind::Pkcs11Session,
            ),
        ];
        for (rv, f, op, kind) in cases {
            let e = classify("x", "lbl", CkError::Pkcs11(rv, f));
            assert_eq!((e.op.as_ref(), e.kind), (op, kind), "{rv:?} in {f:?}");
            assert_eq!(e.provider, "pkcs11");
            assert_eq!(e.key_id, "lbl");
            assert_eq!(e.is_transient(), kind == KmsErrorKind::Unavailable);
        }
        // Not a return value: keeps the caller's op.
        let e = classify("public-key", "k", CkError::InvalidValue);
        assert_eq!(
            (e.op.as_ref(), e.kind),
            ("public-key", KmsErrorKind::Pkcs11Session)
        );
    }

    #[test]
    fn ec_point_accepts_der_and_bare_points() {
        use p256::elliptic_curve::sec1::ToSec1Point;
        let sk = p256::SecretKey::from_slice(&[0x42; 32]).unwrap();
        let point = sk.public_key().to_sec1_point(false).as_bytes().to_vec();
        let mut der = vec![0x04, 0x41];
        der.extend_from_slice(&point);
        assert_eq!(ec_point(&der), Some(point.as_slice()));
        assert_eq!(ec_point(&point), Some(point.as_slice()));
        assert_eq!(
            checked_point(Curve::P256, &point).as_deref(),
            Some(&point[..])
        );
        // Wrong declared length, truncated, not a point, wrong curve.
        let mut bad = der.clone();
        bad[1] = 0x40;
        assert_eq!(ec_point(&bad), None);
        assert_eq!(ec_point(&der[..30]), None);
        let mut off = point.clone();
        off[64] ^= 1;
        assert_eq!(checked_point(Curve::P256, &off), None);
        assert_eq!(checked_point(Curve::Secp256k1, &point), None);
        // Long-form length (a 97-byte P-384 point would use 0x81 0x61).
        let mut long = vec![0x04, 0x81, 0x41];
        long.extend_from_slice(&point);
        assert_eq!(
            ec_point(&long),
            None,
            "0x81 is only valid for lengths >= 128"
        );
    }

    #[test]
    fn curves_from_params() {
        assert_eq!(Curve::from_params(P256_PARAMS), Some(Curve::P256));
        assert_eq!(Curve::from_params(SECP256K1_PARAMS), Some(Curve::Secp256k1));
        // P-384.
        assert_eq!(
            Curve::from_params(&[0x06, 0x05, 0x2b, 0x81, 0x04, 0x00, 0x22]),
            None
        );
    }

    #[test]
    fn default_labels_prefer_the_role_then_the_label_then_the_key_id() {
        let mut cfg = KmsConfig {
            key_id: "kid".into(),
            ..KmsConfig::default()
        };
        assert_eq!(default_label(&cfg, KeyRole::Signing), "kid");
        cfg.pkcs11.key_label = "label".into();
        assert_eq!(default_label(&cfg, KeyRole::Signing), "label");
        assert_eq!(default_label(&cfg, KeyRole::Encryption), "label");
        cfg.signing_key_id = Some("ec".into());
        cfg.encryption_key_id = Some(String::new());
        assert_eq!(default_label(&cfg, KeyRole::Signing), "ec");
        assert_eq!(default_label(&cfg, KeyRole::Encryption), "label");
    }

    #[tokio::test]
    async fn module_path_is_required_and_a_missing_module_is_a_module_error() {
        let mut cfg = KmsConfig::default();
        let Err(e) = Pkcs11::new(&cfg).await else {
            panic!("built without a module path");
        };
        assert_eq!(
            e.to_string(),
            "new PKCS#11 provider: module path is required"
        );
        cfg.pkcs11.module_path = "/nonexistent/libnothing-pkcs11.so".into();
        let Err(e) = Pkcs11::new(&cfg).await else {
            panic!("loaded a missing module");
        };
        let Error::Init(k) = e else {
            panic!("not an init error: {e}");
        };
        assert_eq!(
            (k.provider, k.op.as_ref(), k.key_id.as_str()),
            ("pkcs11", "init", "")
        );
        assert_eq!(k.kind, KmsErrorKind::Pkcs11Module);
        assert!(
            k.to_string().starts_with(
                "kms pkcs11 init (key=): PKCS#11 module error: load module /nonexistent/libnothing-pkcs11.so"
            ),
            "{k}"
        );
        // A failed construction leaves nothing registered.
        assert!(!registry().contains_key("/nonexistent/libnothing-pkcs11.so"));
    }
}
