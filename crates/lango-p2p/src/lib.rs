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

pub mod a2a;
pub mod auth;
pub mod card;
pub mod config;
pub mod credential;
mod error;
pub mod firewall;
pub mod identity;
pub mod known_secrets;
pub mod node;
pub mod pins;
pub mod protocol;
pub mod reputation;
pub mod revocation;
pub mod rules;
pub mod sanitize;
#[cfg(test)]
mod test_support;
pub mod zk;

pub use error::{Error, Result};

/// The crate's database migrations, recorded in their own history table.
static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");
/// History table of this crate's migrations.
const MIGRATIONS_TABLE: &str = "_lango_p2p_migrations";

/// Creates or upgrades this crate's tables (reputation, revocations).
pub async fn migrate(db: &lango_store::Database) -> Result<()> {
    db.migrate(&MIGRATOR, MIGRATIONS_TABLE)
        .await
        .map_err(|e| Error::Store(e.to_string()))
}

/// Current time as stored in this crate's tables: RFC 3339 UTC with nanoseconds.
pub(crate) fn db_now() -> String {
    format_time(time::OffsetDateTime::now_utc())
}

/// RFC 3339 with up to nanosecond precision, `Z` for UTC.
pub(crate) fn format_time(t: time::OffsetDateTime) -> String {
    t.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

/// The peer ID in the last `/p2p/<id>` component of `addr`, if there is one.
pub fn peer_id_of_addr(addr: &libp2p::Multiaddr) -> Option<libp2p::PeerId> {
    match addr.iter().last() {
        Some(libp2p::multiaddr::Protocol::P2p(id)) => Some(id),
        _ => None,
    }
}
