//! # lango-keyring
//!
//! Access to the operating system's credential store, behind the [`Keyring`] trait.
//!
//! ## What it owns
//!
//! - The [`Keyring`] trait: get / set / delete and a read-only [`Keyring::probe`].
//! - Backends: the Secret Service over D-Bus (GNOME Keyring, KWallet; encrypted DH session,
//!   items in the default collection with exactly the attributes `service` and `username`), and
//!   the Linux kernel keyring (keyutils: a `user` key in the user keyring, description
//!   `<service>:<account>`, readable and searchable by the owning user only; lost on reboot).
//!   macOS Keychain and Windows Credential Manager are not built yet: on those systems `auto`
//!   reports the keyring as unavailable and unlock moves on to the next source.
//! - [`KeyringConfig`], the `security.keyring` section, and [`open`], which picks the backend.
//!
//! Every backend call runs on its own thread with a deadline ([`CALL_TIMEOUT`]); a call that
//! does not answer in time is [`Error::Timeout`] and the caller treats the keyring as
//! unavailable. A thread stuck in a dead D-Bus service is left behind rather than blocking the
//! node.
//!
//! ## What it must never do
//!
//! Write anything during a probe, log or return secret values in errors (backend errors that
//! could carry a value are reduced to a fixed description), or fall back silently to an
//! in-memory store.
//!
//! ## Place in the layers
//!
//! Above `lango-crypto` (for [`SecretString`]); used by `lango-secrets`, which keeps only a
//! random per-vault unlock secret here — never the passphrase.
//!
//! ## Example
//!
//! ```no_run
//! use lango_keyring::{KeyringConfig, open};
//!
//! let kr = open(&KeyringConfig::default()).expect("keyring enabled by default");
//! match kr.probe("lango", "unlock-key/0123") {
//!     Ok(p) => println!("{}: entry present = {}", p.backend, p.entry_present),
//!     Err(e) => println!("keyring unavailable: {e}"),
//! }
//! ```
#![forbid(unsafe_code)]

use std::{sync::mpsc, time::Duration};

use lango_crypto::SecretString;
use serde::{Deserialize, Serialize};

#[cfg(target_os = "linux")]
mod keyutils;
#[cfg(target_os = "linux")]
mod secret_service;

/// How long one backend call may take before the keyring counts as unavailable (KR-2).
pub const CALL_TIMEOUT: Duration = Duration::from_secs(5);

/// Errors of a keyring backend. None carries a secret value.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// No keyring service can be reached (no D-Bus session, no daemon, locked collection,
    /// unsupported platform). Callers move on to the next unlock source.
    #[error("keyring unavailable ({backend}): {reason}")]
    Unavailable {
        /// The backend that was tried.
        backend: String,
        /// Why it is unavailable.
        reason: String,
    },
    /// The backend refused access to the entry.
    #[error("keyring access denied ({backend}): {reason}")]
    AccessDenied {
        /// The backend.
        backend: String,
        /// Why, without any secret.
        reason: String,
    },
    /// The backend did not answer in time.
    #[error("keyring did not answer within {0:?}")]
    Timeout(Duration),
    /// The keyring is switched off in the configuration.
    #[error("the OS keyring is disabled in the configuration")]
    Disabled,
    /// Any other backend failure.
    #[error("keyring error ({backend}): {reason}")]
    Backend {
        /// The backend.
        backend: String,
        /// The failure, without any secret.
        reason: String,
    },
}

impl Error {
    /// Whether this means "the keyring cannot be used right now" (as opposed to a refusal).
    pub fn is_unavailable(&self) -> bool {
        matches!(
            self,
            Self::Unavailable { .. } | Self::Timeout(_) | Self::Disabled
        )
    }
}

/// What a read-only probe found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Probe {
    /// The backend name (`secret-service`, `keyutils`).
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

/// Which backend `security.keyring.backend` selects.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum Backend {
    /// The platform's usual store: Secret Service on Linux.
    #[default]
    Auto,
    /// Secret Service over D-Bus.
    SecretService,
    /// Linux kernel keyutils (only when chosen explicitly; lost on reboot).
    Keyutils,
    /// macOS Keychain (not built yet).
    Macos,
    /// Windows Credential Manager (not built yet).
    Windows,
    /// Never contact a keyring.
    None,
}

/// The `security.keyring` configuration section.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct KeyringConfig {
    /// `false` → the keyring is never contacted (except by `keyring status`, which reports
    /// `disabled`).
    pub enabled: bool,
    /// `auto`, `secret-service`, `keyutils`, `macos`, `windows` or `none`.
    pub backend: Backend,
}

impl Default for KeyringConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            backend: Backend::Auto,
        }
    }
}

impl KeyringConfig {
    /// Whether the keyring may be contacted at all.
    pub fn is_active(&self) -> bool {
        self.enabled && self.backend != Backend::None
    }

    /// Checks the section (`prefix` is its path, e.g. `security.keyring`).
    pub fn validate(&self, prefix: &str) -> Result<(), Vec<String>> {
        let native = if cfg!(target_os = "macos") {
            Backend::Macos
        } else if cfg!(target_os = "windows") {
            Backend::Windows
        } else {
            Backend::SecretService
        };
        match self.backend {
            Backend::Macos | Backend::Windows if self.backend != native => Err(vec![format!(
                "{prefix}.backend: {:?} is not available on this operating system",
                self.backend
            )]),
            Backend::Keyutils if !cfg!(target_os = "linux") => Err(vec![format!(
                "{prefix}.backend: keyutils exists only on Linux"
            )]),
            _ => Ok(()),
        }
    }
}

/// Opens the configured backend. [`Error::Disabled`] when the configuration switches the
/// keyring off; [`Error::Unavailable`] for a backend this build or platform lacks. Opening does
/// not contact the backend; [`Keyring::probe`] does.
pub fn open(config: &KeyringConfig) -> Result<Box<dyn Keyring>, Error> {
    if !config.is_active() {
        return Err(Error::Disabled);
    }
    open_backend(config.backend)
}

/// Opens a backend regardless of `enabled` (for `keyring status`).
pub fn open_backend(backend: Backend) -> Result<Box<dyn Keyring>, Error> {
    match backend {
        #[cfg(target_os = "linux")]
        Backend::Auto | Backend::SecretService => Ok(Box::new(secret_service::SecretService)),
        #[cfg(target_os = "linux")]
        Backend::Keyutils => Ok(Box::new(keyutils::Keyutils)),
        Backend::None => Err(Error::Disabled),
        other => Err(Error::Unavailable {
            backend: format!("{other:?}").to_lowercase(),
            reason: "this backend is not built for this platform".into(),
        }),
    }
}

/// Runs `f` on its own thread and waits at most `timeout` for it.
pub(crate) fn with_timeout<T, F>(timeout: Duration, f: F) -> Result<T, Error>
where
    T: Send + 'static,
    F: FnOnce() -> Result<T, Error> + Send + 'static,
{
    let (tx, rx) = mpsc::sync_channel(1);
    std::thread::Builder::new()
        .name("lango-keyring".into())
        .spawn(move || {
            let _ = tx.send(f());
        })
        .map_err(|e| Error::Backend {
            backend: "thread".into(),
            reason: e.to_string(),
        })?;
    match rx.recv_timeout(timeout) {
        Ok(r) => r,
        Err(mpsc::RecvTimeoutError::Timeout) => Err(Error::Timeout(timeout)),
        Err(mpsc::RecvTimeoutError::Disconnected) => Err(Error::Backend {
            backend: "thread".into(),
            reason: "the keyring call panicked".into(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timeouts_are_reported_as_unavailable() {
        let r: Result<(), Error> = with_timeout(Duration::from_millis(50), || {
            std::thread::sleep(Duration::from_secs(2));
            Ok(())
        });
        let e = r.unwrap_err();
        assert!(matches!(e, Error::Timeout(_)));
        assert!(e.is_unavailable());
    }

    #[test]
    fn disabled_config_never_opens() {
        let off = KeyringConfig {
            enabled: false,
            backend: Backend::Auto,
        };
        assert!(matches!(open(&off), Err(Error::Disabled)));
        let none = KeyringConfig {
            enabled: true,
            backend: Backend::None,
        };
        assert!(matches!(open(&none), Err(Error::Disabled)));
    }

    #[test]
    fn config_validation() {
        KeyringConfig::default()
            .validate("security.keyring")
            .unwrap();
        if cfg!(target_os = "linux") {
            let mac = KeyringConfig {
                enabled: true,
                backend: Backend::Macos,
            };
            let e = mac.validate("security.keyring").unwrap_err();
            assert!(e[0].starts_with("security.keyring.backend"));
        }
    }
}
