//! The crate's error type.

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
    /// A DID that is not canonical `did:lango:<33-byte compressed key hex>`.
    #[error("invalid DID {did:?}: {reason}")]
    InvalidDid {
        /// The rejected string.
        did: String,
        /// Why.
        reason: String,
    },
    /// A database statement failed; `what` says which operation.
    #[error("{what}: {message}")]
    Database {
        /// The operation.
        what: String,
        /// The driver's message.
        message: String,
    },
    /// Opening or migrating the store failed.
    #[error("store: {0}")]
    Store(String),
    /// The node key or wallet key could not be loaded; start-up must stop (K-3, C-6).
    #[error("{context}: {message}")]
    Identity {
        /// What was being done (the reference's wording, e.g. "read node key").
        context: &'static str,
        /// The cause.
        message: String,
    },
    /// Configuration value out of range or unparsable.
    #[error("configuration {key}: {message}")]
    Config {
        /// Dotted key path.
        key: String,
        /// What is wrong.
        message: String,
    },
    /// The swarm could not be built or could not listen.
    #[error("network: {0}")]
    Network(String),
    /// The node's event loop has stopped.
    #[error("the node is not running")]
    NodeStopped,
    /// A handshake failed; the inner error has the spec's code (`Error::code`).
    #[error("handshake: {0}")]
    Handshake(lango_handshake::Error),
    /// A bounded wait ran out.
    #[error("{0} timed out")]
    Timeout(String),
}

impl Error {
    pub(crate) fn db(what: impl Into<String>, e: sqlx::Error) -> Self {
        Self::Database {
            what: what.into(),
            message: e.to_string(),
        }
    }
}

impl From<crate::firewall::InvalidRule> for Error {
    fn from(e: crate::firewall::InvalidRule) -> Self {
        let key = match e.error.field() {
            Some(field) => format!("p2p.firewallRules[{}].{field}", e.index),
            None => format!("p2p.firewallRules[{}]", e.index),
        };
        Self::Config {
            key,
            message: e.error.to_string(),
        }
    }
}

/// Result with [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
