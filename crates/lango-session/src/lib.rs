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
//! - [`SessionStore`]: one session per peer DID. [`create`](SessionStore::create) mints a
//!   token (64 lowercase hex characters from 256 random bits, spec §2.6);
//!   [`insert_remote`](SessionStore::insert_remote) stores a token the peer chose, clamped to
//!   the local TTL; [`resolve`](SessionStore::resolve) finds the session of an A2A request
//!   through a keyed-hash index, confirms the token in constant time and refuses it unless the
//!   request comes from the peer ID that ran the handshake.
//! - Invalidation ([`invalidate`](SessionStore::invalidate),
//!   [`invalidate_all`](SessionStore::invalidate_all),
//!   [`invalidate_by_condition`](SessionStore::invalidate_by_condition)) with the five
//!   [`InvalidationReason`]s, a bounded [`history`](SessionStore::history), callbacks and a
//!   tokio broadcast ([`subscribe`](SessionStore::subscribe)); `repeated_failures`,
//!   `reputation_drop` and `manual_revoke` start a revoke cool-down that
//!   [`may_handshake`](SessionStore::may_handshake) and session creation enforce.
//! - [`SecurityEventHandler`]: consecutive-failure threshold and reputation drop.
//! - [`SessionConfig`]: `p2p.sessionTokenTtl`, `p2p.sessionMaxFailures`,
//!   `p2p.sessionRevokeCooldown`, `p2p.invalidationHistoryLimit`.
//!
//! Every bound: sessions ([`DEFAULT_MAX_SESSIONS`], fail closed when full), history
//! (`invalidationHistoryLimit`), cool-down lists ([`COOLDOWN_CAPACITY`]), failure counters
//! ([`FAILURE_TRACKER_CAPACITY`]), input field lengths ([`MAX_DID_LEN`], [`MAX_PEER_ID_LEN`],
//! [`MAX_PROTOCOL_LEN`]).
//!
//! ## What it must never do
//! Print a token, resolve a token for a peer that does not own it, or hold a lock while calling
//! back into user code.
//!
//! Tokens live in [`SessionToken`], whose `Debug` and `Display` print `[redacted]` and whose
//! memory is wiped on drop; the snapshots the store hands out ([`SessionInfo`]) have no token
//! field at all.
//!
//! ## Place in the layers
//! Above `lango-crypto`; used by `lango-handshake` and `lango-p2p`.
//!
//! ## Example
//!
//! ```
//! use lango_session::{
//!     Error, InvalidationReason, NewSession, Role, SessionConfig, SessionStore,
//! };
//!
//! # fn main() -> Result<(), Error> {
//! let store = SessionStore::new(&SessionConfig::default())?;
//! let issued = store.create(NewSession {
//!     peer_did: "did:lango:02c6047f9441ed7d6d3045406e95c07cd85c778e4b8cef3ca7abac09b95c709ee5",
//!     peer_id: "12D3KooWDwTirQce1RRKnasT5fPVFgzXCy6SiRgSwrwPGLC7zE91",
//!     protocol: "/lango/handshake/1.2.0-bound",
//!     role: Role::Initiator,
//!     authenticated: true,
//!     channel_bound: true,
//!     zk_verified: false,
//!     remote_ip: None,
//! })?;
//! // The token goes on the wire, never into logs: formatting it prints "[redacted]".
//! assert_eq!(issued.token.expose().len(), 64);
//! assert!(!format!("{issued:?}").contains(issued.token.expose()));
//!
//! // Only the peer that ran the handshake can use it.
//! let wire = issued.token.expose();
//! assert!(store.resolve(wire, "12D3KooWDwTirQce1RRKnasT5fPVFgzXCy6SiRgSwrwPGLC7zE91").is_ok());
//! assert_eq!(store.resolve(wire, "12D3KooWQK1wnefoLrcVHbbnf5tLzbopUd3K3bFAoJpA7YJgL5pV"),
//!            Err(Error::InvalidToken));
//!
//! // The operator revokes it; the DID is then in a cool-down.
//! assert!(store.invalidate(&issued.session.peer_did, InvalidationReason::ManualRevoke));
//! assert!(store.resolve(wire, &issued.session.peer_id).is_err());
//! assert!(matches!(
//!     store.may_handshake(&issued.session.peer_did, &issued.session.peer_id),
//!     Err(Error::Cooldown { .. })
//! ));
//! # Ok(()) }
//! ```
#![forbid(unsafe_code)]

use std::time::SystemTime;

mod clock;
pub mod config;
mod events;
mod invalidation;
mod limits;
mod session;
mod store;
mod token;

pub use clock::{Clock, ManualClock, SystemClock};
pub use config::SessionConfig;
pub use events::{DEFAULT_MIN_TRUST_SCORE, FailureOutcome, SecurityEventHandler};
pub use invalidation::{
    CallbackId, InvalidationCallback, InvalidationEvent, InvalidationReason, InvalidationRecord,
};
pub use session::{Issued, NewSession, Role, SessionInfo};
pub use store::{
    COOLDOWN_CAPACITY, DEFAULT_MAX_SESSIONS, DEFAULT_MAX_SESSIONS_PER_ADDR,
    DEFAULT_MAX_SESSIONS_PER_PEER, EVENT_CHANNEL_CAPACITY, FAILURE_TRACKER_CAPACITY, MAX_DID_LEN,
    MAX_PEER_ID_LEN, MAX_PROTOCOL_LEN, SessionStore, SessionStoreBuilder,
};
pub use token::{SessionToken, TOKEN_HEX_LEN, TOKEN_RANDOM_BYTES};

/// Errors of the session store. No variant carries a token or any part of one.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Error {
    /// No live session matches the token for this peer. Also the answer for a valid token
    /// presented by a peer that does not own it, and for a malformed token, so a caller
    /// learns nothing more than "no".
    #[error("invalid or expired session token")]
    InvalidToken,
    /// The session expired (reported only to the peer that owns it).
    #[error("session expired")]
    Expired,
    /// A token received from a peer is not 64 lowercase hex characters (R-13).
    #[error("malformed session token: expected 64 lowercase hex characters")]
    MalformedToken,
    /// The token is already in use by another peer DID's session (R-13).
    #[error("session token already in use for another peer")]
    DuplicateToken,
    /// A proposed expiry is not in the future (R-13, P-8).
    #[error("session expiry is not in the future")]
    ExpiryNotInFuture,
    /// The DID has a session that this one may not replace: an authenticated session held by
    /// another peer ID and an unauthenticated claim (R-8), or a channel-bound session and a
    /// session that is not (P-11).
    #[error("an authenticated session exists for this peer DID")]
    AuthenticatedSessionExists,
    /// The DID or the peer ID is in a revoke cool-down (V-9, R-8.4).
    #[error("peer is in a revoke cool-down until {}", clock::rfc3339(*until).unwrap_or_default())]
    Cooldown {
        /// When the cool-down ends.
        until: SystemTime,
    },
    /// The store holds its maximum number of live sessions.
    #[error("session store is full ({max} live sessions)")]
    StoreFull {
        /// The bound.
        max: usize,
    },
    /// The remote peer ID or IP address holds its share of incoming sessions, or incoming
    /// sessions fill their share of the store (the rest is kept for sessions this node
    /// initiates).
    #[error("session quota reached: {what} ({max})")]
    QuotaExceeded {
        /// Which quota: `per peer ID`, `per address`, `incoming`.
        what: &'static str,
        /// The bound.
        max: usize,
    },
    /// A session field is empty, too long or contains control characters.
    #[error("invalid {field}: {problem}")]
    InvalidArgument {
        /// Which field.
        field: &'static str,
        /// What is wrong with it.
        problem: &'static str,
    },
    /// A string is not one of the five invalidation reasons.
    #[error(
        "unknown invalidation reason (expected logout, reputation_drop, repeated_failures, \
         manual_revoke or security_event)"
    )]
    UnknownReason,
    /// The configuration is invalid (every problem, with its key path).
    #[error("invalid session configuration: {0}")]
    Config(String),
    /// The operating system's random number generator failed (no fallback, H-5).
    #[error("the operating system's random number generator failed")]
    Rng,
}
