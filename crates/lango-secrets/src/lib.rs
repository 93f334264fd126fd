//! # lango-secrets
//!
//! The vault: one function to unlock the master key ([`unlock`]), and the secrets encrypted
//! under it.
//!
//! ## What it owns
//!
//! - The unlock sequence (secrets spec §3.4): the passphrase chain keyring → keyfile →
//!   interactive → stdin ([`passphrase`]), the key envelope with passphrase and keyring slots
//!   ([`envelope`]), first-run creation, recovery of interrupted conversions.
//! - The [`SecretsStore`] and [`KeyRegistry`]: values bound to their row with AEAD associated
//!   data, bounded, atomically counted, reserved names protected from agents.
//! - Operations on an unlocked [`Vault`]: change the passphrase (re-wraps the master key
//!   only), keyring slots, encrypt / decrypt the database, rotate the master key.
//! - Reading data written by the Go node and migrating it once, crash-safely ([`legacy`]).
//!
//! ## What it must never do
//!
//! Print or log a secret value, read a passphrase from argv or the environment, or generate
//! new key material when existing material cannot be read — only "not found" ever leads to
//! generating a key.
//!
//! ## Place in the layers
//!
//! Above `lango-crypto`, `lango-store` and `lango-keyring`; used by `lango-p2p` and the app.
//!
//! ## Events
//!
//! Structured `tracing` events with a stable `event` field: `secrets.unlock.ok`,
//! `secrets.unlock.failed`, `secrets.keyfile.shredded`, `secrets.keyfile.shred_failed`,
//! `secrets.legacy.migrated`, `secrets.reserved_name_denied`, `secrets.passphrase.changed`,
//! `secrets.master_key.rotated`, `keyring.slot.created`, `keyring.slot.removed`,
//! `keyring.legacy_entry_converted`, and from `lango-store` `store.db.encrypted`,
//! `store.db.decrypted`, `store.migration.recovered`. None carries secret material.
//!
//! ## Example
//!
//! ```no_run
//! use lango_secrets::{Caller, UnlockOptions, VaultConfig, passphrase::NoPrompt, unlock};
//!
//! # async fn demo() -> Result<(), lango_secrets::Error> {
//! // Unlock material comes from the keyring or the keyfile here (no terminal).
//! let vault = unlock(
//!     std::path::Path::new("/var/lib/lango"),
//!     &VaultConfig::default(),
//!     &NoPrompt,
//!     UnlockOptions::default(),
//! )
//! .await?;
//! let secrets = vault.secrets()?;
//! secrets.put("api.key", b"value", Caller::Operator).await?;
//! let v = secrets.get("api.key", Caller::Operator).await?;
//! assert_eq!(v.expose(), b"value");
//! vault.close().await; // always close before exiting
//! # Ok(()) }
//! ```
#![forbid(unsafe_code)]

pub mod config;
pub mod envelope;
mod error;
pub mod legacy;
pub mod passphrase;
pub mod store;
pub mod vault;

pub use config::VaultConfig;
pub use error::Error;
pub use store::{Caller, KeyRegistry, SecretInfo, SecretsStore};
pub use vault::{UnlockOptions, UnlockReport, Vault, clear_keyring, unlock};

/// Result alias for this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;
