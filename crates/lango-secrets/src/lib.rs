//! # lango-secrets
//!
//! The vault: unlocking the master key, and the secrets encrypted under it.
//!
//! ## What it owns
//! The unlock sequence (passphrase acquisition chain, keyfile, keyring slot), the key envelope
//! file with its passphrase and keyring slots, the secrets store and key registry, legacy (Go)
//! detection and one-time migration, and helpers for the well-known secrets (node key, wallet
//! key).
//!
//! ## What it must never do
//! Print or log secret values, or generate new key material when existing material cannot be
//! read — only "not found" ever leads to generating a key.
//!
//! ## Place in the layers
//! Above `lango-crypto`, `lango-store` and `lango-keyring`; used by `lango-p2p` and the app.
//!
//! The vault arrives with the keys-at-rest work; today the crate defines the errors its callers
//! will handle.
#![forbid(unsafe_code)]

/// Errors of the vault.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The passphrase does not open any passphrase slot.
    #[error("wrong passphrase")]
    WrongPassphrase,
    /// A secret of that name does not exist.
    #[error("secret {0:?} not found")]
    NotFound(String),
    /// A cryptographic failure (integrity, format).
    #[error(transparent)]
    Crypto(#[from] lango_crypto::Error),
    /// A storage failure.
    #[error(transparent)]
    Store(#[from] lango_store::Error),
    /// A keyring failure.
    #[error(transparent)]
    Keyring(#[from] lango_keyring::Error),
}
