//! Invalidation reasons, history records and events (spec §3.9).

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;
use std::time::SystemTime;

use serde::{Deserialize, Serialize};

use crate::Error;
use crate::clock::serde_rfc3339;

/// Why a session was invalidated (V-1). The wire/JSON form is the exact snake_case string.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum InvalidationReason {
    /// The peer or the local agent ended the session.
    Logout,
    /// The peer's reputation fell below the minimum trust score (E-4).
    ReputationDrop,
    /// Too many consecutive tool failures (E-2).
    RepeatedFailures,
    /// The operator revoked the session (CLI `session revoke`, `revoke-all`).
    ManualRevoke,
    /// Another security component asked for it.
    SecurityEvent,
}

impl InvalidationReason {
    /// Every reason, in the spec's order.
    pub const ALL: [Self; 5] = [
        Self::Logout,
        Self::ReputationDrop,
        Self::RepeatedFailures,
        Self::ManualRevoke,
        Self::SecurityEvent,
    ];

    /// The exact string: `logout`, `reputation_drop`, `repeated_failures`, `manual_revoke`,
    /// `security_event`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Logout => "logout",
            Self::ReputationDrop => "reputation_drop",
            Self::RepeatedFailures => "repeated_failures",
            Self::ManualRevoke => "manual_revoke",
            Self::SecurityEvent => "security_event",
        }
    }

    /// Whether this reason puts the DID (and its session's peer ID) on the revoke
    /// cool-down (V-9): `repeated_failures`, `reputation_drop` and `manual_revoke`.
    pub fn starts_cooldown(self) -> bool {
        matches!(
            self,
            Self::RepeatedFailures | Self::ReputationDrop | Self::ManualRevoke
        )
    }
}

impl fmt::Display for InvalidationReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for InvalidationReason {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self, Error> {
        Self::ALL
            .into_iter()
            .find(|r| r.as_str() == s)
            .ok_or(Error::UnknownReason)
    }
}

/// One entry of the invalidation history (V-2, V-5). JSON keys: `peerDid`, `reason`,
/// `invalidatedAt`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct InvalidationRecord {
    /// The DID named in the invalidation (whether or not it had a session).
    pub peer_did: String,
    /// Why.
    pub reason: InvalidationReason,
    /// When (the store's clock).
    #[serde(with = "serde_rfc3339")]
    pub invalidated_at: SystemTime,
}

/// What callbacks and broadcast subscribers receive for each invalidation: the history
/// record plus what the store knew about the session.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct InvalidationEvent {
    /// The history record written for this invalidation.
    #[serde(flatten)]
    pub record: InvalidationRecord,
    /// Whether a live session existed and was removed.
    pub had_session: bool,
    /// The libp2p peer ID of the removed session, if there was one (for example to close
    /// that peer's A2A streams, V-8).
    pub peer_id: Option<String>,
}

/// Handle of a registered invalidation callback, for
/// [`SessionStore::remove_invalidation_callback`](crate::SessionStore::remove_invalidation_callback).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CallbackId(pub(crate) u64);

/// An invalidation callback. Called once per invalidated DID, after the store's lock is
/// released, on the thread that invalidated. It may call back into the store.
pub type InvalidationCallback = Arc<dyn Fn(&InvalidationEvent) + Send + Sync>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reasons_have_the_exact_strings() {
        let strings: Vec<_> = InvalidationReason::ALL.iter().map(|r| r.as_str()).collect();
        assert_eq!(
            strings,
            [
                "logout",
                "reputation_drop",
                "repeated_failures",
                "manual_revoke",
                "security_event"
            ]
        );
        for r in InvalidationReason::ALL {
            assert_eq!(r.to_string(), r.as_str());
            assert_eq!(r.as_str().parse::<InvalidationReason>().unwrap(), r);
            let json = serde_json::to_string(&r).unwrap();
            assert_eq!(json, format!("\"{}\"", r.as_str()));
            assert_eq!(
                serde_json::from_str::<InvalidationReason>(&json).unwrap(),
                r
            );
        }
        assert_eq!(
            "Logout".parse::<InvalidationReason>(),
            Err(Error::UnknownReason)
        );
        assert!(serde_json::from_str::<InvalidationReason>("\"revoked\"").is_err());
    }

    #[test]
    fn cooldown_reasons() {
        use InvalidationReason::*;
        assert!(RepeatedFailures.starts_cooldown());
        assert!(ReputationDrop.starts_cooldown());
        assert!(ManualRevoke.starts_cooldown());
        assert!(!Logout.starts_cooldown());
        assert!(!SecurityEvent.starts_cooldown());
    }

    #[test]
    fn record_json_keys() {
        let r = InvalidationRecord {
            peer_did: "did:lango:x".into(),
            reason: InvalidationReason::ManualRevoke,
            invalidated_at: std::time::UNIX_EPOCH + std::time::Duration::from_secs(1_700_000_000),
        };
        let v = serde_json::to_value(&r).unwrap();
        assert_eq!(
            v,
            serde_json::json!({
                "peerDid": "did:lango:x",
                "reason": "manual_revoke",
                "invalidatedAt": "2023-11-14T22:13:20Z"
            })
        );
    }
}
