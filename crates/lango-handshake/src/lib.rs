//! # lango-handshake
//!
//! Peer authentication over any byte stream: the legacy 1.0.0/1.1.0 handshakes, wire-compatible
//! with Go nodes, and the channel-bound mutual 1.2.0-bound handshake.
//!
//! ## What it owns
//! Message codecs (bounded), the initiator and responder state machines, the timestamp window
//! and the nonce replay cache, DID-to-key binding, downgrade pins, and the approval and
//! zero-knowledge hooks.
//!
//! ## What it must never do
//! Accept a double-hashed challenge as authenticated, sign a caller-chosen digest, wait without
//! a deadline, or read an unbounded message.
//!
//! ## Place in the layers
//! Above `lango-crypto` and `lango-session`; transport-agnostic, wired to libp2p by `lango-p2p`.
#![forbid(unsafe_code)]

/// Errors of a handshake. The variant tells the caller what to do (retry, refuse, alert).
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Error {
    /// A nonce seen before inside the replay window.
    #[error("replayed handshake nonce")]
    Replay,
    /// The peer's timestamp is outside the accepted window.
    #[error("handshake timestamp outside the accepted window")]
    Expired,
    /// A signature did not verify or was malformed.
    #[error("handshake signature invalid: {0}")]
    BadSignature(String),
    /// The exchange exceeded its deadline.
    #[error("handshake timed out")]
    Timeout,
    /// The peer or the local policy refused the handshake.
    #[error("handshake denied: {0}")]
    Denied(String),
}
