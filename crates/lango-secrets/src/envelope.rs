//! The key envelope file `<data-dir>/key-envelope.json` (secrets spec §2.2.2).
//!
//! It holds the random master key (MK) wrapped by one or more slots: a passphrase slot
//! (Argon2id or PBKDF2 over the passphrase) and optionally keyring slots (HKDF over a random
//! 32-byte secret kept in the OS keyring). Changing the passphrase re-wraps the MK; no data is
//! re-encrypted. The file is at most 64 KiB, JSON with unknown fields rejected, mode 0600, and
//! replaced atomically. KDF parameters read from it are bounded before any KDF work.
//!
//! The amount of KDF work a file can ask for is bounded too, also before any KDF runs: at most
//! [`MAX_SLOTS`] slots in all and at most [`MAX_PASSPHRASE_SLOTS`] passphrase slots
//! ([`Error::EnvelopeTooManySlots`]). lango-rs writes one passphrase slot and at most one
//! keyring slot; the bounds leave room for a second passphrase slot (e.g. a recovery
//! passphrase) and a few keyring slots, while a wrong passphrase costs at most two slot KDFs at
//! the per-slot maximum (Argon2id 1 GiB, 16 passes) instead of the ~150 a 64 KiB file could
//! otherwise hold.

use std::path::{Path, PathBuf};

use base64::{Engine, engine::general_purpose::STANDARD as B64};
use lango_crypto::{KdfParams, MasterKey, MkId, SecretKey32, SecretString, kdf, random};
use serde::{Deserialize, Serialize};

use crate::{Error, Result};

/// File name of the envelope in the data directory.
pub const FILE_NAME: &str = "key-envelope.json";
/// File name of a newer Go node's envelope (never read, only recognised).
pub const GO_ENVELOPE: &str = "envelope.json";
/// Largest envelope accepted.
pub const MAX_BYTES: u64 = 64 * 1024;
/// Most slots an envelope may have (all kinds).
pub const MAX_SLOTS: usize = 8;
/// Most passphrase slots (the ones with a slow KDF) an envelope may have.
pub const MAX_PASSPHRASE_SLOTS: usize = 2;
/// The `format` value.
pub const FORMAT: &str = "lango-key-envelope";
/// Prefix of the value stored in the keyring (2.2.7).
pub const KEYRING_VALUE_PREFIX: &str = "lango-unlock-v1:";

/// Lifecycle state of the envelope.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum State {
    /// Normal.
    Active,
    /// During the one-time migration of Go data (2.4.4).
    PendingLegacy,
}

/// How the legacy database opened, while the legacy migration is pending.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "mode", rename_all = "kebab-case", deny_unknown_fields)]
pub enum LegacyDbKeying {
    /// A plaintext database.
    Plaintext,
    /// SQLCipher keyed with the passphrase.
    Passphrase {
        /// 3 or 4.
        compatibility: u8,
        /// The page size that opened it.
        page_size: u32,
    },
}

/// The database's cipher parameters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DbParams {
    /// Whether the database is SQLCipher-encrypted (the file header is authoritative).
    pub encrypted: bool,
    /// SQLCipher page size.
    pub page_size: u32,
    /// Always 4.
    pub compatibility: u8,
}

/// What a slot is opened with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SlotKind {
    /// A passphrase.
    Passphrase,
    /// A random secret kept in the OS keyring.
    Keyring,
}

/// One way to unwrap the master key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Slot {
    /// UUID v4; part of the wrap's associated data.
    pub id: String,
    /// What opens it.
    pub kind: SlotKind,
    /// How the slot key is derived.
    pub kdf: KdfParams,
    /// Base64 of the 16-byte salt.
    pub salt: String,
    /// Base64 of the 12-byte nonce.
    pub nonce: String,
    /// Base64 of the 48-byte wrapped master key.
    pub wrapped_mk: String,
    /// RFC 3339 UTC.
    pub created_at: String,
    /// Free text (e.g. the keyring backend).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label: Option<String>,
}

/// The envelope file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Envelope {
    /// `lango-key-envelope`.
    pub format: String,
    /// 1.
    pub version: u32,
    /// Hex of the MK identifier.
    pub mk_id: String,
    /// Key generation, incremented by a master-key rotation.
    pub generation: u32,
    /// Lifecycle state.
    pub state: State,
    /// Only while `pending-legacy`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub legacy_db_keying: Option<LegacyDbKeying>,
    /// The database's cipher parameters.
    pub db: DbParams,
    /// At least one.
    pub slots: Vec<Slot>,
    /// RFC 3339 UTC.
    pub created_at: String,
    /// RFC 3339 UTC.
    pub updated_at: String,
}

pub(crate) fn now_rfc3339() -> String {
    time::OffsetDateTime::now_utc()
        .replace_nanosecond(0)
        .unwrap_or_else(|_| time::OffsetDateTime::now_utc())
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

fn corrupt(path: &Path, reason: impl Into<String>) -> Error {
    Error::EnvelopeCorrupt {
        path: path.to_owned(),
        reason: reason.into(),
    }
}

fn b64_exact(path: &Path, what: &str, s: &str, len: usize) -> Result<Vec<u8>> {
    let v = B64
        .decode(s)
        .map_err(|_| corrupt(path, format!("{what} is not valid base64")))?;
    if v.len() != len {
        return Err(corrupt(
            path,
            format!("{what} must be {len} bytes, got {}", v.len()),
        ));
    }
    Ok(v)
}

/// Whether a slot needs a slow (password-hashing) KDF.
fn is_slow(kind: SlotKind, kdf: &KdfParams) -> bool {
    kind == SlotKind::Passphrase || kdf.is_password_hash()
}

/// [`MAX_SLOTS`] and [`MAX_PASSPHRASE_SLOTS`] for an envelope of `total` slots, `slow` of them
/// with a password-hashing KDF.
fn check_slot_bounds(path: &Path, total: usize, slow: usize) -> Result<()> {
    let too_many = |what, found, max| Error::EnvelopeTooManySlots {
        path: path.to_owned(),
        what,
        found,
        max,
    };
    if total > MAX_SLOTS {
        return Err(too_many("key", total, MAX_SLOTS));
    }
    if slow > MAX_PASSPHRASE_SLOTS {
        return Err(too_many("passphrase", slow, MAX_PASSPHRASE_SLOTS));
    }
    Ok(())
}

/// The path of the envelope in `data_dir`.
pub fn path_in(data_dir: &Path) -> PathBuf {
    data_dir.join(FILE_NAME)
}

impl Envelope {
    /// A new envelope for `mk` at generation `generation` with no slots yet.
    pub fn new(mk: &MasterKey, generation: u32, db: DbParams) -> Self {
        let now = now_rfc3339();
        Self {
            format: FORMAT.into(),
            version: 1,
            mk_id: mk.mk_id().to_hex(),
            generation,
            state: State::Active,
            legacy_db_keying: None,
            db,
            slots: Vec::new(),
            created_at: now.clone(),
            updated_at: now,
        }
    }

    /// Parses and validates envelope bytes (no KDF work happens here).
    pub fn parse(path: &Path, bytes: &[u8]) -> Result<Self> {
        if bytes.len() as u64 > MAX_BYTES {
            return Err(corrupt(path, format!("larger than {MAX_BYTES} bytes")));
        }
        // Check the version before the strict parse so a newer file gets a clear message.
        if let Ok(v) = serde_json::from_slice::<serde_json::Value>(bytes)
            && let Some(n) = v.get("version").and_then(serde_json::Value::as_u64)
            && n > 1
        {
            return Err(Error::UnsupportedFormat {
                found: u32::try_from(n).unwrap_or(u32::MAX),
            });
        }
        let e: Envelope =
            serde_json::from_slice(bytes).map_err(|err| corrupt(path, err.to_string()))?;
        e.validate(path)?;
        Ok(e)
    }

    fn validate(&self, path: &Path) -> Result<()> {
        if self.format != FORMAT {
            return Err(corrupt(
                path,
                format!("format is {:?}, expected {FORMAT:?}", self.format),
            ));
        }
        if self.version != 1 {
            return Err(Error::UnsupportedFormat {
                found: self.version,
            });
        }
        MkId::from_hex(&self.mk_id).map_err(|e| corrupt(path, e.to_string()))?;
        if self.generation == 0 {
            return Err(corrupt(path, "generation must be at least 1"));
        }
        if self.slots.is_empty() {
            return Err(corrupt(path, "no slots"));
        }
        self.check_slot_count(path)?;
        if self.db.compatibility != 4 {
            return Err(corrupt(path, "db.compatibility must be 4"));
        }
        let ps = self.db.page_size;
        if !(1024..=65536).contains(&ps) || !ps.is_power_of_two() {
            return Err(corrupt(
                path,
                format!("db.page_size {ps} is not a valid page size"),
            ));
        }
        match (self.state, self.legacy_db_keying) {
            (State::Active, Some(_)) => {
                return Err(corrupt(path, "legacy_db_keying set on an active envelope"));
            }
            (State::PendingLegacy, None) => {
                return Err(corrupt(
                    path,
                    "pending-legacy envelope without legacy_db_keying",
                ));
            }
            _ => {}
        }
        let mut ids = std::collections::HashSet::new();
        for s in &self.slots {
            if uuid::Uuid::parse_str(&s.id).is_err() || !ids.insert(s.id.as_str()) {
                return Err(corrupt(
                    path,
                    format!("slot id {:?} is not a unique UUID", s.id),
                ));
            }
            s.kdf
                .validate()
                .map_err(|e| corrupt(path, format!("slot {}: {e}", s.id)))?;
            match (s.kind, s.kdf.is_password_hash()) {
                (SlotKind::Passphrase, true) | (SlotKind::Keyring, false) => {}
                _ => {
                    return Err(corrupt(
                        path,
                        format!("slot {}: KDF does not fit the slot kind", s.id),
                    ));
                }
            }
            b64_exact(path, "salt", &s.salt, kdf::SALT_LEN)?;
            b64_exact(path, "nonce", &s.nonce, 12)?;
            b64_exact(
                path,
                "wrapped_mk",
                &s.wrapped_mk,
                lango_crypto::hierarchy::WRAPPED_MK_LEN,
            )?;
        }
        Ok(())
    }

    /// Bounds the number of slots, and so the KDF work an unlock attempt can cost. Checked
    /// on parse, before every unwrap and before a slot is added, never after KDF work.
    fn check_slot_count(&self, path: &Path) -> Result<()> {
        let slow = self
            .slots
            .iter()
            .filter(|s| is_slow(s.kind, &s.kdf))
            .count();
        check_slot_bounds(path, self.slots.len(), slow)
    }

    /// Reads `<data-dir>/key-envelope.json`; `Ok(None)` when absent. Symlinks and files
    /// readable by others are refused.
    pub fn load(data_dir: &Path) -> Result<Option<Self>> {
        let path = path_in(data_dir);
        match lango_store::fsutil::check_private_file(&path)? {
            None => Ok(None),
            Some(Err(problem)) => Err(corrupt(&path, problem.to_string())),
            Some(Ok(_)) => {
                let bytes = lango_store::fsutil::read_bounded_nofollow(&path, MAX_BYTES)
                    .map_err(|e| corrupt(&path, e.to_string()))?;
                Self::parse(&path, &bytes).map(Some)
            }
        }
    }

    /// Writes the envelope atomically (0600 temp, fsync, rename, fsync dir).
    pub fn save(&mut self, data_dir: &Path) -> Result<()> {
        self.updated_at = now_rfc3339();
        let path = path_in(data_dir);
        self.validate(&path)?;
        let bytes = serde_json::to_vec_pretty(self).map_err(|e| corrupt(&path, e.to_string()))?;
        lango_store::fsutil::write_atomic_private(&path, &bytes)?;
        Ok(())
    }

    /// Deletes stale temporary files left by an interrupted save.
    pub fn remove_stale_temps(data_dir: &Path) -> Result<()> {
        let prefix = format!("{FILE_NAME}.tmp-");
        let Ok(rd) = std::fs::read_dir(data_dir) else {
            return Ok(());
        };
        for entry in rd.flatten() {
            if entry.file_name().to_string_lossy().starts_with(&prefix) {
                lango_store::fsutil::remove_if_exists(&entry.path())?;
            }
        }
        Ok(())
    }

    /// The MK identifier.
    pub fn mk_id(&self) -> MkId {
        // Validated on load and creation.
        MkId::from_hex(&self.mk_id).unwrap_or(MkId([0; 16]))
    }

    /// Adds a slot wrapping `mk` under a key derived from `secret` with `params`. The KDF is
    /// slow for passphrases: call from a blocking thread.
    pub fn add_slot(
        &mut self,
        mk: &MasterKey,
        kind: SlotKind,
        params: KdfParams,
        secret: &[u8],
        label: Option<String>,
    ) -> Result<String> {
        // The envelope must stay within the slot bounds once this slot is added; checked
        // before the (slow) KDF runs.
        let slow = self
            .slots
            .iter()
            .filter(|s| is_slow(s.kind, &s.kdf))
            .count()
            + usize::from(is_slow(kind, &params));
        check_slot_bounds(Path::new(FILE_NAME), self.slots.len() + 1, slow)?;
        let id = uuid::Uuid::new_v4().to_string();
        let salt = random::bytes::<{ kdf::SALT_LEN }>()?;
        let kek = params.derive_kek(secret, &salt)?;
        let (nonce, wrapped) = mk.wrap_for_slot(&kek, &id)?;
        self.slots.push(Slot {
            id: id.clone(),
            kind,
            kdf: params,
            salt: B64.encode(salt),
            nonce: B64.encode(nonce),
            wrapped_mk: B64.encode(wrapped),
            created_at: now_rfc3339(),
            label,
        });
        Ok(id)
    }

    /// Tries every slot of `kind` with `secret`; the first that unwraps yields the MK. Slow
    /// for passphrases: call from a blocking thread.
    pub fn unwrap(&self, kind: SlotKind, secret: &[u8]) -> Result<Option<(MasterKey, String)>> {
        let path = PathBuf::from(FILE_NAME);
        // Also for envelopes built in memory rather than parsed: bound the work first.
        self.check_slot_count(&path)?;
        for s in self.slots.iter().filter(|s| s.kind == kind) {
            let salt = b64_exact(&path, "salt", &s.salt, kdf::SALT_LEN)?;
            let nonce = b64_exact(&path, "nonce", &s.nonce, 12)?;
            let wrapped = b64_exact(
                &path,
                "wrapped_mk",
                &s.wrapped_mk,
                lango_crypto::hierarchy::WRAPPED_MK_LEN,
            )?;
            let kek = s.kdf.derive_kek(secret, &salt)?;
            match MasterKey::unwrap_slot(&kek, &s.id, &nonce, &wrapped) {
                Ok(mk) => {
                    if mk.mk_id() != self.mk_id() {
                        return Err(corrupt(
                            &path,
                            "a slot unwraps to a key that is not this vault's",
                        ));
                    }
                    return Ok(Some((mk, s.id.clone())));
                }
                Err(lango_crypto::Error::Integrity) => continue,
                Err(e) => return Err(e.into()),
            }
        }
        Ok(None)
    }

    /// Removes every slot of `kind`; returns how many were removed. The last passphrase slot
    /// is never removed.
    pub fn remove_slots(&mut self, kind: SlotKind) -> usize {
        let before = self.slots.len();
        if kind == SlotKind::Passphrase {
            return 0;
        }
        self.slots.retain(|s| s.kind != kind);
        before - self.slots.len()
    }

    /// Whether a slot of `kind` exists.
    pub fn has_slot(&self, kind: SlotKind) -> bool {
        self.slots.iter().any(|s| s.kind == kind)
    }

    /// The keyring account name of this vault (2.2.7).
    pub fn keyring_account(&self) -> String {
        keyring_account(&self.mk_id())
    }

    /// A short description for `security status`.
    pub fn describe_kdf(&self) -> String {
        match self
            .slots
            .iter()
            .find(|s| s.kind == SlotKind::Passphrase)
            .map(|s| s.kdf)
        {
            Some(KdfParams::Argon2id { m_kib, t, p, .. }) => {
                format!("argon2id (m={m_kib} KiB, t={t}, p={p})")
            }
            Some(KdfParams::Pbkdf2Sha256 { iterations }) => {
                format!("pbkdf2-sha256 ({iterations} iterations)")
            }
            _ => "none".into(),
        }
    }
}

/// The keyring account of a vault: `unlock-key/<mk_id hex>`.
pub fn keyring_account(mk_id: &MkId) -> String {
    format!("unlock-key/{}", mk_id.to_hex())
}

/// Encodes a 32-byte keyring secret as the stored value `lango-unlock-v1:<base64>`.
pub fn encode_keyring_secret(secret: &SecretKey32) -> SecretString {
    SecretString::new(format!(
        "{KEYRING_VALUE_PREFIX}{}",
        B64.encode(secret.expose())
    ))
}

/// Decodes a stored keyring value; `None` when it is not a v1 unlock value.
pub fn decode_keyring_secret(value: &SecretString) -> Option<SecretKey32> {
    let rest = value.expose().strip_prefix(KEYRING_VALUE_PREFIX)?;
    // Decoded into one wiping buffer of the final size: a decoding error, a wrong length or
    // success all leave nothing of the secret behind.
    let mut bytes = zeroize::Zeroizing::new(vec![0u8; rest.len().div_ceil(4) * 3]);
    let n = B64.decode_slice(rest, bytes.as_mut_slice()).ok()?;
    SecretKey32::from_slice(bytes.get(..n)?).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn db() -> DbParams {
        DbParams {
            encrypted: true,
            page_size: 4096,
            compatibility: 4,
        }
    }

    fn fast_pbkdf2() -> KdfParams {
        KdfParams::Pbkdf2Sha256 {
            iterations: 600_000,
        }
    }

    #[test]
    fn slots_roundtrip_and_tamper() {
        let mk = MasterKey::generate().unwrap();
        let mut e = Envelope::new(&mk, 1, db());
        e.add_slot(
            &mk,
            SlotKind::Passphrase,
            fast_pbkdf2(),
            b"correct horse battery",
            None,
        )
        .unwrap();
        let kr = SecretKey32::generate().unwrap();
        e.add_slot(
            &mk,
            SlotKind::Keyring,
            KdfParams::HkdfSha256,
            kr.expose(),
            Some("secret-service".into()),
        )
        .unwrap();
        let bytes = serde_json::to_vec(&e).unwrap();
        let parsed = Envelope::parse(Path::new("x"), &bytes).unwrap();
        assert_eq!(parsed, e);
        let (got, _) = parsed
            .unwrap(SlotKind::Passphrase, b"correct horse battery")
            .unwrap()
            .unwrap();
        assert_eq!(got, mk);
        assert!(
            parsed
                .unwrap(SlotKind::Passphrase, b"wrong")
                .unwrap()
                .is_none()
        );
        let (got, _) = parsed
            .unwrap(SlotKind::Keyring, kr.expose())
            .unwrap()
            .unwrap();
        assert_eq!(got, mk);
        // A passphrase never opens a keyring slot and vice versa.
        assert!(
            parsed
                .unwrap(SlotKind::Keyring, b"correct horse battery")
                .unwrap()
                .is_none()
        );

        // Swapping the ids of two slots breaks both (the id is in the AAD).
        let mut swapped = parsed.clone();
        let (a, b) = (swapped.slots[0].id.clone(), swapped.slots[1].id.clone());
        swapped.slots[0].id = b;
        swapped.slots[1].id = a;
        assert!(
            swapped
                .unwrap(SlotKind::Passphrase, b"correct horse battery")
                .unwrap()
                .is_none()
        );
    }

    #[test]
    fn hostile_files_are_refused_before_kdf_work() {
        let mk = MasterKey::generate().unwrap();
        let mut e = Envelope::new(&mk, 1, db());
        e.add_slot(
            &mk,
            SlotKind::Passphrase,
            fast_pbkdf2(),
            b"pw-pw-pw-pw",
            None,
        )
        .unwrap();
        let good = serde_json::to_value(&e).unwrap();
        let cases: Vec<(&str, serde_json::Value)> = vec![
            ("huge memory", {
                let mut v = good.clone();
                v["slots"][0]["kdf"] =
                    serde_json::json!({"alg":"argon2id","version":19,"m_kib":4194304,"t":3,"p":4});
                v
            }),
            ("trivial pbkdf2", {
                let mut v = good.clone();
                v["slots"][0]["kdf"] = serde_json::json!({"alg":"pbkdf2-sha256","iterations":1});
                v
            }),
            ("keyring kdf on a passphrase slot", {
                let mut v = good.clone();
                v["slots"][0]["kdf"] = serde_json::json!({"alg":"hkdf-sha256"});
                v
            }),
            ("unknown field", {
                let mut v = good.clone();
                v["extra"] = serde_json::json!(1);
                v
            }),
            ("no slots", {
                let mut v = good.clone();
                v["slots"] = serde_json::json!([]);
                v
            }),
            ("short salt", {
                let mut v = good.clone();
                v["slots"][0]["salt"] = serde_json::json!("AAAA");
                v
            }),
            ("bad format", {
                let mut v = good.clone();
                v["format"] = serde_json::json!("other");
                v
            }),
        ];
        for (what, v) in cases {
            let r = Envelope::parse(Path::new("x"), &serde_json::to_vec(&v).unwrap());
            assert!(
                matches!(r, Err(Error::EnvelopeCorrupt { .. })),
                "{what}: {r:?}"
            );
        }
        let mut newer = good.clone();
        newer["version"] = serde_json::json!(2);
        assert!(matches!(
            Envelope::parse(Path::new("x"), &serde_json::to_vec(&newer).unwrap()),
            Err(Error::UnsupportedFormat { found: 2 })
        ));
        let big = vec![b' '; 70_000];
        assert!(matches!(
            Envelope::parse(Path::new("x"), &big),
            Err(Error::EnvelopeCorrupt { .. })
        ));
    }

    /// The slot bound is checked before any KDF work: the first slot here opens with the
    /// passphrase, so an implementation that derived even one slot key before checking the
    /// count would unlock instead of refusing.
    #[test]
    fn too_many_slots_are_refused_before_any_kdf() {
        let mk = MasterKey::generate().unwrap();
        let mut e = Envelope::new(&mk, 1, db());
        e.add_slot(
            &mk,
            SlotKind::Passphrase,
            fast_pbkdf2(),
            b"pw-pw-pw-pw",
            None,
        )
        .unwrap();
        let real = e.slots[0].clone();
        let junk = |kdf: KdfParams, kind: SlotKind| Slot {
            id: uuid::Uuid::new_v4().to_string(),
            kind,
            kdf,
            ..real.clone()
        };
        let huge = KdfParams::Argon2id {
            version: lango_crypto::kdf::ARGON2_VERSION,
            m_kib: lango_crypto::kdf::ARGON2_MAX_M_KIB,
            t: lango_crypto::kdf::ARGON2_MAX_T,
            p: lango_crypto::kdf::ARGON2_MAX_P,
        };
        // Too many passphrase slots (each asking for 1 GiB and 16 passes).
        let mut pass = e.clone();
        for _ in 0..MAX_PASSPHRASE_SLOTS {
            pass.slots.push(junk(huge, SlotKind::Passphrase));
        }
        // Too many slots in all (cheap ones).
        let mut all = e.clone();
        for _ in 0..MAX_SLOTS {
            all.slots
                .push(junk(KdfParams::HkdfSha256, SlotKind::Keyring));
        }
        for (what, env, max) in [
            ("passphrase", &pass, MAX_PASSPHRASE_SLOTS),
            ("key", &all, MAX_SLOTS),
        ] {
            let r = env.unwrap(SlotKind::Passphrase, b"pw-pw-pw-pw");
            assert!(
                matches!(r, Err(Error::EnvelopeTooManySlots { what: w, max: m, .. }) if w == what && m == max),
                "{what}: {r:?}"
            );
            let bytes = serde_json::to_vec(env).unwrap();
            let r = Envelope::parse(Path::new("x"), &bytes);
            assert!(
                matches!(r, Err(Error::EnvelopeTooManySlots { .. })),
                "{what}: {r:?}"
            );
        }
        // Adding a slot past the bound is refused before its KDF runs.
        let mut full = e.clone();
        full.slots.push(junk(huge, SlotKind::Passphrase));
        assert!(matches!(
            full.add_slot(&mk, SlotKind::Passphrase, huge, b"pw-pw-pw-pw", None),
            Err(Error::EnvelopeTooManySlots { .. })
        ));
        // At the bound everything still works.
        let mut ok = e.clone();
        ok.slots.push(junk(fast_pbkdf2(), SlotKind::Passphrase));
        for _ in 2..MAX_SLOTS {
            ok.slots
                .push(junk(KdfParams::HkdfSha256, SlotKind::Keyring));
        }
        let parsed = Envelope::parse(Path::new("x"), &serde_json::to_vec(&ok).unwrap()).unwrap();
        assert!(
            parsed
                .unwrap(SlotKind::Passphrase, b"pw-pw-pw-pw")
                .unwrap()
                .is_some()
        );
    }

    #[test]
    fn keyring_value_encoding() {
        let k = SecretKey32::generate().unwrap();
        let v = encode_keyring_secret(&k);
        assert!(v.expose().starts_with("lango-unlock-v1:"));
        assert_eq!(decode_keyring_secret(&v).unwrap(), k);
        assert!(decode_keyring_secret(&SecretString::new("a passphrase".into())).is_none());
    }
}
