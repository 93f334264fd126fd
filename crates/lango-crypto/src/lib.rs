//! # lango-crypto
//!
//! The cryptographic floor of lango-rs: every primitive the other crates use, the types
//! that hold secrets, and the [`CryptoProvider`] seam that KMS and HSM backends implement.
//!
//! ## What it owns
//!
//! - **Secret types** ([`SecretKey32`], [`SecretBytes`], [`SecretString`]): wiped on drop
//!   with volatile writes, never `Clone`, `Debug` and `Display` print `[redacted]`, equality is
//!   constant time.
//! - **AES-256-GCM** ([`aead`]): the legacy Go blob (`nonce ‖ ct ‖ tag`, no associated data) and
//!   the v1 blob (`"LGO" ‖ 0x01 ‖ provider ‖ generation ‖ nonce ‖ ct ‖ tag`) whose associated
//!   data binds the header, the purpose and the row it belongs to, so a ciphertext cannot be
//!   moved to another row or another purpose. Nonces are 96 random bits from the OS for every
//!   encryption.
//! - **Key derivation** ([`kdf`]): Argon2id for new passphrase slots, PBKDF2-HMAC-SHA256 (Go's
//!   100,000-iteration legacy key and the ≥ 600,000-iteration alternative), HKDF-SHA256 for
//!   per-purpose keys. Parameters are explicit values ([`KdfParams`]) stored next to what they
//!   protect and bounded before any work starts.
//! - **The key hierarchy** ([`hierarchy`]): a random master key, its per-purpose HKDF keys and
//!   its public identifier, and wrapping it under a slot key.
//! - **MACs and comparisons** ([`mac`]): HMAC-SHA256 and constant-time equality.
//! - **Wallet signatures** ([`wallet`]): secp256k1 over Keccak-256 exactly as go-ethereum's
//!   `crypto.Sign` (65 bytes `r ‖ s ‖ v`, `v ∈ {0,1}`, low-S), public-key recovery, strict
//!   verification, and `did:lango:` identifiers.
//! - **Node keys** ([`node_key`]): Ed25519 keys for the libp2p identity and their 68-byte
//!   libp2p protobuf encoding.
//! - **The provider seam** ([`provider`]): the [`CryptoProvider`] trait (sign, public key,
//!   encrypt, decrypt, id, health) and [`LocalCryptoProvider`], which works from the master key.
//!
//! ## What it must never do
//!
//! Read or write files, open databases, prompt, log, or use a random source other than the
//! operating system's CSPRNG. It never returns or formats secret material in an error.
//!
//! ## Place in the layers
//!
//! The bottom layer: it depends on no other lango crate, and every crate but `lango-sandbox`
//! builds on it.
//!
//! ## Example
//!
//! ```
//! use lango_crypto::{hierarchy::{MasterKey, KeyPurpose}, aead::{self, ProviderTag, BlobPurpose}};
//!
//! # fn main() -> Result<(), lango_crypto::Error> {
//! let mk = MasterKey::generate()?;
//! let key = mk.derive(KeyPurpose::Secrets);
//! let blob = aead::seal_v1(&key, ProviderTag::LocalMk, 1, BlobPurpose::Secrets, b"api.key", b"s3cr3t")?;
//! let plain = aead::open_v1(&blob, BlobPurpose::Secrets, b"api.key", 65_536 + 1024, |generation| {
//!     (generation == 1).then_some(&key)
//! })?;
//! assert_eq!(plain.expose(), b"s3cr3t");
//! // The same ciphertext does not open as another row.
//! assert!(aead::open_v1(&blob, BlobPurpose::Secrets, b"other", 65_536 + 1024, |_| Some(&key)).is_err());
//! # Ok(()) }
//! ```
#![forbid(unsafe_code)]

pub mod aead;
pub mod digest;
mod error;
pub mod hierarchy;
pub mod kdf;
pub mod mac;
pub mod node_key;
pub mod provider;
pub mod random;
mod secret;
pub mod wallet;

pub use error::Error;
pub use hierarchy::{KeyPurpose, MasterKey, MkId};
pub use kdf::{KdfConfig, KdfParams};
pub use provider::{CryptoProvider, LocalCryptoProvider};
pub use secret::{SecretBytes, SecretKey32, SecretString};

/// Result alias for this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;
