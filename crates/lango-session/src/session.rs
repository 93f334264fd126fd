//! What a session is, as callers see it: the request to create one and the token-free
//! snapshot the store hands out.

use std::fmt;
use std::time::SystemTime;

use serde::Serialize;

use crate::SessionToken;
use crate::clock::serde_rfc3339;

/// Which side of the handshake this node was on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// This node dialled and authenticated the peer (I-12, P-10).
    Initiator,
    /// The peer dialled this node (R-14, P-9).
    Responder,
}

impl Role {
    /// `initiator` or `responder`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Initiator => "initiator",
            Self::Responder => "responder",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The facts the handshake established about a peer, from which a session is made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NewSession<'a> {
    /// The peer's DID (the store key). 1 to [`MAX_DID_LEN`](crate::MAX_DID_LEN) bytes.
    pub peer_did: &'a str,
    /// The libp2p peer ID seen on the handshake connection (base58 text). Tokens resolve
    /// only for requests from this peer (T-1). 1 to [`MAX_PEER_ID_LEN`](crate::MAX_PEER_ID_LEN)
    /// bytes.
    pub peer_id: &'a str,
    /// The negotiated handshake protocol ID (display only, H-6). At most
    /// [`MAX_PROTOCOL_LEN`](crate::MAX_PROTOCOL_LEN) bytes.
    pub protocol: &'a str,
    /// Which side this node was on.
    pub role: Role,
    /// The peer proved control of the DID's key.
    pub authenticated: bool,
    /// The handshake was the channel-bound 1.2 protocol.
    pub channel_bound: bool,
    /// A ZK ownership proof was verified. Always `false` from lango-rs handshakes (Z-4);
    /// kept for parity with the reference record.
    pub zk_verified: bool,
    /// The remote IP address of the handshake connection, when known. Incoming sessions
    /// count against the per-address quota under it.
    pub remote_ip: Option<&'a str>,
}

/// A snapshot of a live session. It has no token field at all, so it can be logged,
/// printed and serialised freely.
///
/// JSON (§5.6, with the Rust deviation): `peerDid`, `createdAt`, `expiresAt`,
/// `zkVerified`, `invalidated`, `peerId`, `protocol`, `authenticated`, `channelBound`.
/// Times are RFC 3339 in UTC with nanosecond precision. There is no `token` key and no
/// `role` key (§5.6 lists exactly the reference keys minus `token`, plus four).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SessionInfo {
    /// The peer's DID.
    pub peer_did: String,
    /// When the session was created.
    #[serde(with = "serde_rfc3339")]
    pub created_at: SystemTime,
    /// When it expires. It is valid up to and including this instant (S-8).
    #[serde(with = "serde_rfc3339")]
    pub expires_at: SystemTime,
    /// Always `false` from lango-rs handshakes (Z-4).
    pub zk_verified: bool,
    /// Always `false` in a snapshot: the store hands out live sessions only (V-7).
    pub invalidated: bool,
    /// The libp2p peer ID the session is bound to. Dial this one, never an ID derived
    /// from the DID (T-4).
    pub peer_id: String,
    /// The negotiated handshake protocol ID.
    pub protocol: String,
    /// Which side of the handshake this node was on.
    #[serde(skip)]
    pub role: Role,
    /// The peer proved control of the DID's key.
    pub authenticated: bool,
    /// The session came from the channel-bound 1.2 handshake.
    pub channel_bound: bool,
}

/// A session just created by [`SessionStore::create`](crate::SessionStore::create): the token
/// to send to the peer, and the snapshot.
///
/// `Debug` shows the snapshot and a redacted token.
#[derive(Debug)]
pub struct Issued {
    /// The new bearer token (redacted in `Debug`/`Display`, wiped on drop).
    pub token: SessionToken,
    /// The session as stored.
    pub session: SessionInfo,
}
