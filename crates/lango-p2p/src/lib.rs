//! # lango-p2p
//!
//! The agent node on the libp2p network.
//!
//! ## What it owns
//! The swarm (TCP and QUIC, noise, yamux, identify, ping, Kademlia, gossipsub), the node key
//! kept in the secrets store, discovery of agent cards with credential checks and revocation,
//! reputation, the A2A protocol handler with its firewall and owner shield, and the wiring of
//! the handshake, sessions, sandbox and proofs onto the network.
//!
//! ## What it must never do
//! Replace an identity it cannot read, serve a request from a peer without a live session,
//! execute a peer's tool call outside the sandbox, or return unsanitised output to a peer.
//!
//! ## Place in the layers
//! The top library crate: it composes every crate below it except `lango-kms`; the app runs it.
#![forbid(unsafe_code)]

/// Errors of the node.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A firewall rule refused the request.
    #[error("denied by firewall rule {rule}")]
    Denied {
        /// The rule that matched.
        rule: String,
    },
    /// The peer's DID is revoked.
    #[error("peer DID {0} is revoked")]
    Revoked(String),
}
