//! # lango-zkp
//!
//! Zero-knowledge proofs with Halo2 (IPA over the Pasta curves; no trusted setup).
//!
//! ## What it owns
//! The four v2 circuits (wallet ownership, response attestation, agent capability, balance
//! range), the prover service (key generation once per circuit, proving and verification off
//! the async workers), deterministic public parameters with a checksummed on-disk cache, and
//! the proof and attestation wire encodings.
//!
//! ## What it must never do
//! Accept a proof not bound to its challenge, compare field elements in a way that can wrap,
//! or use parameters whose digest does not match the pinned one.
//!
//! ## Place in the layers
//! Above `lango-crypto`; plugged into the handshake and the A2A handler by `lango-p2p`.
#![forbid(unsafe_code)]

/// Errors of the proof system.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// No circuit with this identifier.
    #[error("unknown circuit {0:?}")]
    UnknownCircuit(String),
    /// The proof does not verify.
    #[error("proof does not verify")]
    InvalidProof,
    /// The inputs are malformed or out of range.
    #[error("invalid inputs: {0}")]
    InvalidInputs(String),
}
