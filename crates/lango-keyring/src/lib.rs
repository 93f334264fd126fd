//! # lango-keyring
//!
//! Access to the operating system's credential store, behind the [`Keyring`] trait.
//!
//! ## What it owns
//! The [`Keyring`] trait (get / set / delete / read-only probe) and its backends: Secret
//! Service over D-Bus and Linux keyutils on Linux, the macOS Keychain and the Windows
//! Credential Manager on their targets.
//!
//! ## What it must never do
//! Write anything during a probe, log or return secret values in errors, block longer than its
//! timeout, or fall back silently to an in-memory store.
//!
//! ## Place in the layers
//! Above `lango-crypto` (for [`SecretString`]); used by `lango-secrets`, which stores only an
//! unlock secret here — never the passphrase.
#![forbid(unsafe_code)]

use lango_crypto::SecretString;

/// Errors of a keyring backend. None carries a secret value.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// No keyring service can be reached (no D-Bus session, no daemon, locked collection).
    /// Callers move on to the next unlock source.
    #[error("keyring unavailable ({backend}): {reason}")]
    Unavailable {
        /// The backend that was tried.
        backend: String,
        /// Why it is unavailable.
        reason: String,
    },
    /// The backend refused access to the entry.
    #[error("keyring access denied ({backend})")]
    AccessDenied {
        /// The backend.
        backend: String,
    },
    /// The backend did not answer in time.
    #[error("keyring timed out after {0:?}")]
    Timeout(std::time::Duration),
    /// Any other backend failure.
    #[error("keyring error ({backend}): {reason}")]
    Backend {
        /// The backend.
        backend: String,
        /// The failure, without any secret.
        reason: String,
    },
}

/// What a read-only probe found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Probe {
    /// The backend name (`secret-service`, `keyutils`, `macos`, `windows`).
    pub backend: String,
    /// Whether the entry exists.
    pub entry_present: bool,
}

/// A credential store addressed by service and account.
pub trait Keyring: Send + Sync {
    /// The backend's name.
    fn backend(&self) -> &str;
    /// Reads an entry; `Ok(None)` when it does not exist.
    fn get(&self, service: &str, account: &str) -> Result<Option<SecretString>, Error>;
    /// Creates or replaces an entry.
    fn set(
        &self,
        service: &str,
        account: &str,
        label: &str,
        secret: &SecretString,
    ) -> Result<(), Error>;
    /// Deletes an entry; `Ok(false)` when there was none.
    fn delete(&self, service: &str, account: &str) -> Result<bool, Error>;
    /// Reports whether the backend is reachable and the entry exists, writing nothing.
    fn probe(&self, service: &str, account: &str) -> Result<Probe, Error>;
}
