//! # lango-session
//!
//! Sessions between authenticated peers.
//!
//! ## What it owns
//! A concurrent session store (TTL, 256-bit tokens, constant-time resolution bound to the peer
//! that owns the session), explicit invalidation (one, all, by condition) with reasons and a
//! bounded history, a broadcast of invalidation events, and the security event handler that
//! turns repeated failures and reputation drops into invalidation.
//!
//! ## What it must never do
//! Print a token, resolve a token for a peer that does not own it, or hold a lock while calling
//! back into user code.
//!
//! ## Place in the layers
//! Above `lango-crypto`; used by `lango-handshake` and `lango-p2p`.
#![forbid(unsafe_code)]

/// Errors of the session store.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Error {
    /// No live session matches the token for this peer.
    #[error("invalid or expired session token")]
    InvalidToken,
    /// The session expired.
    #[error("session expired")]
    Expired,
    /// The session was explicitly invalidated.
    #[error("session revoked: {0}")]
    Revoked(String),
}
