//! # lango-zkp
//!
//! Zero-knowledge proofs with Halo2 (PLONKish arithmetisation, IPA commitments over the
//! Pasta curves): no trusted setup, so every node derives bit-identical parameters and keys
//! and a proof made on one node verifies on any other.
//!
//! ## What it owns
//! * Four v2 circuits ([`CircuitId`]): `wallet_ownership/v2` (a ZK identity took part in
//!   *this* handshake), `response_attestation/v2` (these response bytes, for this request,
//!   inside the requester's time window), `agent_capability/v2` (an issuer-certified score
//!   at or above a threshold) and `balance_range/v2` (an attested balance at or above a
//!   threshold). Hashing is Poseidon (`P128Pow5T3`); every integer that takes part in a
//!   comparison is range-checked with a 10-bit lookup table, so no comparison can wrap
//!   around the field.
//! * [`ProverService`]: key generation once per circuit, proving and verification with
//!   typed errors, a bounded pool for async callers, verifying-key digests that two nodes
//!   compare.
//! * [`params`]: deterministic public parameters per `k`, with an on-disk cache checked
//!   against pinned digests before use.
//! * [`wire`]: the proof and attestation encodings.
//!
//! ## Example
//! ```no_run
//! use lango_zkp::{IdentitySecret, ProverService, Witness, encoding, params::ParamsSource};
//! # fn main() -> Result<(), lango_zkp::Error> {
//! let service = ProverService::new(ParamsSource::Memory);
//! let sk = IdentitySecret::generate()?;
//! let binding = encoding::ownership_binding(&[7; 32], "did:lango:a", "did:lango:b", "/lango/handshake/1.1.0")?;
//! let id = sk.commitment();
//! let proof = service.prove(&Witness::Ownership { sk, binding })?;
//! // The verifier computes the statement itself: its nonce, both DIDs, the peer's identity.
//! let tag = proof.public_inputs[2];
//! assert!(service.verify(&proof, &[id, binding, tag])?);
//! # Ok(()) }
//! ```
//!
//! ## What it must never do
//! Accept a proof not bound to its challenge, compare field elements in a way that can wrap,
//! take the statement from the prover, or use parameters whose digest does not match the
//! pinned one.
//!
//! ## Place in the layers
//! Above `lango-crypto`; plugged into the handshake and the A2A handler by `lango-p2p`.
#![forbid(unsafe_code)]

pub mod circuits;
pub mod encoding;
mod gadgets;
pub mod inputs;
pub mod params;
mod service;
#[doc(hidden)]
pub mod testing;
pub mod wire;

pub use circuits::{CircuitId, IdentitySecret, Witness};
pub use halo2_proofs::pasta::Fp;
pub use service::{DEFAULT_MAX_PROOF_BYTES, Proof, ProverService, SCHEME};

/// Errors of the proof system. A proof that is well-formed but false is not an error:
/// [`ProverService::verify`] returns `Ok(false)`.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// No circuit with this identifier.
    #[error(
        "unknown circuit {0:?} (known: wallet_ownership/v2, response_attestation/v2, agent_capability/v2, balance_range/v2)"
    )]
    UnknownCircuit(String),
    /// Keys for the circuit were not generated yet.
    #[error("circuit \"{0}\" not compiled")]
    NotCompiled(CircuitId),
    /// Key generation failed.
    #[error("key generation for circuit \"{id}\" failed: {reason}")]
    Setup {
        /// The circuit.
        id: CircuitId,
        /// halo2's error.
        reason: String,
    },
    /// The witness does not satisfy the circuit; no proof was made.
    #[error("the inputs do not satisfy the circuit: {0}")]
    UnsatisfiedWitness(String),
    /// Proving failed for another reason.
    #[error("proving failed: {0}")]
    Prove(String),
    /// The proof has no bytes.
    #[error("empty proof")]
    EmptyProof,
    /// The proof is larger than allowed.
    #[error("proof of {len} bytes exceeds the limit of {max} bytes")]
    ProofTooLarge {
        /// Its size.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// Another proving system.
    #[error("unsupported proving scheme {0:?} (this node verifies halo2-ipa-pasta)")]
    UnsupportedScheme(String),
    /// Wrong number of public inputs for the circuit.
    #[error("circuit {id} takes {want} public inputs, got {got}")]
    PublicInputArity {
        /// The circuit.
        id: CircuitId,
        /// Expected.
        want: usize,
        /// Given.
        got: usize,
    },
    /// The proof was made with another version of the circuit.
    #[error(
        "verifying-key digest {theirs} does not match this node's {ours} for {id}: the circuits differ"
    )]
    VersionMismatch {
        /// The circuit.
        id: CircuitId,
        /// Ours (hex).
        ours: String,
        /// Theirs (hex).
        theirs: String,
    },
    /// The proof bytes cannot be read as a transcript of this circuit.
    #[error("malformed proof: {0}")]
    MalformedProof(String),
    /// A malformed encoding (field element, base64, JSON).
    #[error("{0}")]
    Encoding(String),
    /// The parameter cache could not be used.
    #[error("parameters: {0}")]
    Params(String),
}
