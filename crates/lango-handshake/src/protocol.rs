//! Protocol identifiers, algorithm names and negotiation order (spec §2.2, §6.2.1).

/// Legacy protocol 1.0.0. Same handler and behaviour as 1.1.0 (H-6).
pub const PROTOCOL_1_0: &str = "/lango/handshake/1.0.0";
/// Legacy protocol 1.1.0 ("signed challenge"). Same handler and behaviour as 1.0.0 (H-6).
pub const PROTOCOL_1_1: &str = "/lango/handshake/1.1.0";
/// The hardened, channel-bound protocol of spec §6.2 (P-1).
pub const PROTOCOL_1_2_BOUND: &str = "/lango/handshake/1.2.0-bound";
/// Upstream HEAD's post-quantum dialect. Rust MUST NOT register or propose it (§2.2); it is
/// named here only so that code can refuse it explicitly.
pub const PROTOCOL_1_2_UPSTREAM_PQ: &str = "/lango/handshake/1.2.0";

/// The only signature algorithm Rust speaks: secp256k1 over Keccak-256 (H-7).
pub const SIGNATURE_ALGORITHM: &str = "secp256k1-keccak256";
/// The `handshakeVersion` of every 1.2 message.
pub const HANDSHAKE_VERSION_1_2: &str = "1.2";

/// A handshake protocol this crate implements.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Protocol {
    /// `/lango/handshake/1.0.0`.
    Legacy10,
    /// `/lango/handshake/1.1.0`.
    Legacy11,
    /// `/lango/handshake/1.2.0-bound`.
    Bound12,
}

impl Protocol {
    /// The protocol ID string.
    pub fn id(self) -> &'static str {
        match self {
            Self::Legacy10 => PROTOCOL_1_0,
            Self::Legacy11 => PROTOCOL_1_1,
            Self::Bound12 => PROTOCOL_1_2_BOUND,
        }
    }

    /// Parses a negotiated protocol ID. The bare upstream `1.2.0` is not one of ours.
    pub fn from_id(id: &str) -> Option<Self> {
        match id {
            PROTOCOL_1_0 => Some(Self::Legacy10),
            PROTOCOL_1_1 => Some(Self::Legacy11),
            PROTOCOL_1_2_BOUND => Some(Self::Bound12),
            _ => None,
        }
    }

    /// Whether this is one of the legacy protocols.
    pub fn is_legacy(self) -> bool {
        !matches!(self, Self::Bound12)
    }
}

/// What an initiator proposes, in order (I-1, P-2): 1.2-bound first, then the legacy IDs only
/// when `p2p.handshakeAllowLegacy` is set. Also the set a responder registers.
pub fn proposals(allow_legacy: bool) -> &'static [Protocol] {
    if allow_legacy {
        &[Protocol::Bound12, Protocol::Legacy11, Protocol::Legacy10]
    } else {
        &[Protocol::Bound12]
    }
}
