//! The crate's error type. No variant ever carries secret material.

/// Errors of the cryptographic layer. Each variant is something a caller can act on;
/// none of them contains key material, plaintext or ciphertext.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Error {
    /// Authentication failed: the ciphertext, its associated data or the key is not the one
    /// it was sealed with. Never distinguishes which.
    #[error("integrity check failed: the data was modified, moved, or the key is wrong")]
    Integrity,
    /// The data is not in a format this version understands.
    #[error("unsupported format: {0}")]
    UnsupportedFormat(String),
    /// A v1 blob names a provider tag that is not assigned.
    #[error("unknown provider tag 0x{0:02x} in ciphertext header")]
    UnknownProvider(u8),
    /// A v1 blob was written under a key generation the caller does not know.
    #[error("ciphertext was written under key generation {0}, which is not available")]
    UnknownGeneration(u32),
    /// The input is shorter than the smallest well-formed value.
    #[error("ciphertext too short: {len} bytes, at least {min} needed")]
    TooShort {
        /// Length received.
        len: usize,
        /// Minimum length of a well-formed value.
        min: usize,
    },
    /// The input exceeds the bound set for it.
    #[error("input too large: {len} bytes exceeds the limit of {max}")]
    TooLarge {
        /// Length received.
        len: usize,
        /// The bound.
        max: usize,
    },
    /// KDF parameters outside the accepted bounds (a tampered or hostile file).
    #[error("KDF parameters out of bounds: {0}")]
    KdfParams(String),
    /// Bytes that should be a key are not a valid key.
    #[error("invalid key: {0}")]
    InvalidKey(String),
    /// A signature that is malformed or does not verify.
    #[error("invalid signature: {0}")]
    InvalidSignature(String),
    /// A string that should be a `did:lango:` identifier is not one.
    #[error("invalid DID: {0}")]
    InvalidDid(String),
    /// The operating system's random source failed.
    #[error("the operating system's random number generator failed")]
    Rng,
}
