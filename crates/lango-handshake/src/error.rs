//! The handshake error taxonomy (spec §6.2.7), shared by the legacy and the 1.2 protocols.

use std::time::Duration;

use crate::clock::go_duration;

/// Errors of a handshake.
///
/// One variant per code of the spec's error taxonomy (§6.2.7); [`Error::code`] returns the
/// snake_case code that a 1.2 responder puts in the `error` field of its `Result` message.
/// The variant tells the caller what to do: [`Error::is_transient`] errors may be retried later,
/// [`Error::is_security_event`] errors indicate a peer that tried something it must not (feed
/// them to the security event handler), everything else is a plain refusal.
///
/// Display strings keep the Go reference wording where one exists (spec appendix A), so logs
/// stay comparable. No variant ever carries a session token or key material.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Error {
    /// The exchange exceeded its deadline (H-1).
    #[error("handshake timed out")]
    Timeout,
    /// A message exceeded the size limit (H-2). Nothing beyond the limit was read.
    #[error("handshake message exceeds the limit of {limit} bytes")]
    MessageTooLarge {
        /// The limit in bytes, terminating line feed included.
        limit: usize,
    },
    /// A message is not valid JSON of the expected shape (W-2, W-4), or a mandatory 1.2 field
    /// such as `handshakeVersion` has the wrong value.
    #[error("decode: {0}")]
    Decode(String),
    /// The timestamp is not positive or absurdly large.
    #[error("invalid timestamp value: {0}")]
    InvalidTimestamp(i64),
    /// The timestamp is more than 5 minutes in the past.
    #[error("timestamp too old: {} ago (max 5m0s)", go_duration(*age))]
    TimestampTooOld {
        /// How far in the past the timestamp is.
        age: Duration,
    },
    /// The timestamp is more than 30 seconds in the future.
    #[error("timestamp too far in future: {} ahead (max 30s)", go_duration(*ahead))]
    TimestampInFuture {
        /// How far in the future the timestamp is.
        ahead: Duration,
    },
    /// A nonce is not exactly 32 bytes (R-3, P-6).
    #[error("invalid nonce length: {len} (expected 32)")]
    InvalidNonce {
        /// The length received.
        len: usize,
    },
    /// The nonce was seen before inside the replay window.
    #[error("nonce replay detected")]
    NonceReplay,
    /// The replay cache is full of unexpired nonces; the handshake fails closed (N-6).
    #[error("nonce replay cache is full")]
    NonceCacheFull,
    /// `signatureAlgorithm` names an algorithm other than `secp256k1-keccak256` (H-7).
    #[error("unsupported signature algorithm {0:?}")]
    UnsupportedAlgorithm(String),
    /// A `did:lango:v2:` identity (H-7).
    #[error("did:lango:v2 identities are not supported")]
    UnsupportedIdentity,
    /// A signature that is present but not 65 bytes long.
    #[error("invalid signature length: {0} (expected 65)")]
    BadSignatureLength(usize),
    /// A 65-byte signature with a bad recovery id, `r` or `s` out of range, or high-S (C-3).
    #[error("invalid signature encoding: {0}")]
    BadSignatureEncoding(String),
    /// The signature does not recover the claimed public key.
    #[error("signature public key mismatch")]
    SignatureMismatch,
    /// A legacy challenge signed over the double hash (spec §2.7) while signed challenges are
    /// required.
    #[error("double-hashed legacy challenge signature rejected (requireSignedChallenge=true)")]
    LegacySignatureRejected,
    /// An unsigned legacy challenge while signed challenges are required.
    #[error("unsigned challenge rejected (requireSignedChallenge=true)")]
    UnsignedRejected,
    /// A DID that is not `did:lango:` + 66 lowercase hex characters of a valid key.
    #[error("malformed DID: {0}")]
    MalformedDid(String),
    /// The DID does not name the public key that signed (R-6, I-9).
    #[error("DID does not match public key")]
    DidKeyMismatch,
    /// An unauthenticated peer claims the local node's own DID.
    #[error("peer claims our own DID")]
    SelfDid,
    /// The responder is not the peer the caller expected (I-10).
    #[error("unexpected peer DID: expected {expected}, got {got}")]
    UnexpectedPeerDid {
        /// The DID the caller asked for.
        expected: String,
        /// The DID the peer proved.
        got: String,
    },
    /// The peer is pinned to 1.2 and tried a legacy handshake (P-12).
    #[error("downgrade refused: peer is pinned to the 1.2 handshake")]
    DowngradeRefused,
    /// An unauthenticated challenge would replace an authenticated session of another peer
    ///
    #[error("an authenticated session for this DID exists with another peer")]
    AuthenticatedSessionExists,
    /// The DID or peer is in its revocation cooldown (V-9).
    #[error("peer is in its revocation cooldown")]
    Cooldown,
    /// The approval hook failed.
    #[error("approval request: {0}")]
    ApprovalError(String),
    /// The approval hook said no.
    #[error("handshake denied by user")]
    ApprovalDenied,
    /// The responder did not echo our nonce (I-6, P-6).
    #[error("nonce mismatch")]
    NonceMismatch,
    /// The response carries no signature (I-7).
    #[error("no proof or signature in response")]
    NoProofOrSignature,
    /// The responder sent a ZK ownership proof in a scheme we advertised, and it failed: the
    /// peer claimed ZK support and did not back it (kms-and-zk spec §3.14.2).
    #[error("zero-knowledge ownership proof failed")]
    ZkProofInvalid,
    /// A KEM ciphertext in a response to a challenge that offered no KEM key (I-8).
    #[error("unexpected KEM ciphertext in response")]
    UnexpectedKem,
    /// A session token that is not 64 lowercase hex characters.
    #[error("malformed session token")]
    MalformedToken,
    /// The token is already in use for another DID.
    #[error("session token already in use")]
    DuplicateToken,
    /// The proposed session expiry is not in the future (R-13, P-8).
    #[error("session expiry is not in the future")]
    AckExpired,
    /// The 1.2 responder answered `rejected` or with an unacceptable final expiry (P-10). The
    /// string is the peer's error code (untrusted, for logs only).
    #[error("handshake rejected by peer: {0}")]
    RejectedByPeer(String),
    /// The local wallet could not provide its key or a signature.
    #[error("wallet: {0}")]
    Wallet(String),
    /// Reading or writing the stream failed, or the peer closed it.
    #[error("i/o: {message}")]
    Io {
        /// The I/O error kind (`UnexpectedEof` when the peer closed the stream).
        kind: std::io::ErrorKind,
        /// A description.
        message: String,
    },
    /// The local caller passed an invalid argument (never caused by the peer).
    #[error("invalid input: {0}")]
    InvalidInput(String),
    /// The peer's DID is revoked on this node (refused before anything is signed or stored).
    #[error("peer DID is revoked")]
    Revoked,
    /// Too many handshakes in progress, overall or from this peer, or an approval is already
    /// pending for this peer (H-3, A-7). The stream is reset at once.
    #[error("too many handshakes in progress")]
    Busy,
    /// The responder cannot take this handshake: the session store, or this peer's or this
    /// address's share of it or of handshake attempts, is full (issue 17). Refused before
    /// the responder verifies or signs anything; code `busy`, like [`Error::Busy`].
    #[error("refused: {0}")]
    Overloaded(String),
    /// A local resource failed: the session store is full or refused an argument, or the
    /// operating system's random source failed (H-5). Never caused by the peer's message.
    #[error("internal: {0}")]
    Internal(String),
}

impl Error {
    /// The snake_case code of this error (spec §6.2.7), as sent in a 1.2 `Result` message.
    pub fn code(&self) -> &'static str {
        match self {
            Self::Timeout => "timeout",
            Self::MessageTooLarge { .. } => "message_too_large",
            Self::Decode(_) => "decode",
            Self::InvalidTimestamp(_) => "invalid_timestamp",
            Self::TimestampTooOld { .. } => "timestamp_too_old",
            Self::TimestampInFuture { .. } => "timestamp_in_future",
            Self::InvalidNonce { .. } => "invalid_nonce",
            Self::NonceReplay => "nonce_replay",
            Self::NonceCacheFull => "nonce_cache_full",
            Self::UnsupportedAlgorithm(_) => "unsupported_algorithm",
            Self::UnsupportedIdentity => "unsupported_identity",
            Self::BadSignatureLength(_) => "bad_signature_length",
            Self::BadSignatureEncoding(_) => "bad_signature_encoding",
            Self::SignatureMismatch => "signature_mismatch",
            Self::LegacySignatureRejected => "legacy_signature_rejected",
            Self::UnsignedRejected => "unsigned_rejected",
            Self::MalformedDid(_) => "malformed_did",
            Self::DidKeyMismatch => "did_key_mismatch",
            Self::SelfDid => "self_did",
            Self::UnexpectedPeerDid { .. } => "unexpected_peer_did",
            Self::DowngradeRefused => "downgrade_refused",
            Self::AuthenticatedSessionExists => "authenticated_session_exists",
            Self::Cooldown => "cooldown",
            Self::ApprovalError(_) => "approval_error",
            Self::ApprovalDenied => "approval_denied",
            Self::NonceMismatch => "nonce_mismatch",
            Self::NoProofOrSignature => "no_proof_or_signature",
            Self::ZkProofInvalid => "zk_proof_invalid",
            Self::UnexpectedKem => "unexpected_kem",
            Self::MalformedToken => "malformed_token",
            Self::DuplicateToken => "duplicate_token",
            Self::AckExpired => "ack_expired",
            Self::RejectedByPeer(_) => "rejected_by_peer",
            Self::Wallet(_) => "wallet",
            Self::Io { .. } => "io",
            Self::InvalidInput(_) => "invalid_input",
            Self::Busy | Self::Overloaded(_) => "busy",
            Self::Revoked => "revoked",
            Self::Internal(_) => "internal",
        }
    }

    /// Whether retrying later may succeed without anyone changing anything (deadline, I/O,
    /// a momentarily full replay cache, a wallet that was unavailable).
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            Self::Timeout
                | Self::Io { .. }
                | Self::NonceCacheFull
                | Self::Wallet(_)
                | Self::Busy
                | Self::Overloaded(_)
                | Self::Internal(_)
        )
    }

    /// Whether the error shows a peer doing something an honest implementation never does
    /// (forged or replayed proofs, identity claims it cannot back, downgrade attempts).
    pub fn is_security_event(&self) -> bool {
        matches!(
            self,
            Self::NonceReplay
                | Self::BadSignatureEncoding(_)
                | Self::ZkProofInvalid
                | Self::SignatureMismatch
                | Self::LegacySignatureRejected
                | Self::DidKeyMismatch
                | Self::SelfDid
                | Self::DowngradeRefused
                | Self::AuthenticatedSessionExists
                | Self::NonceMismatch
                | Self::UnexpectedKem
                | Self::DuplicateToken
        )
    }

    /// Maps a session-store refusal onto the handshake taxonomy.
    pub(crate) fn from_session(e: lango_session::Error) -> Self {
        use lango_session::Error as S;
        match e {
            S::MalformedToken => Self::MalformedToken,
            S::DuplicateToken => Self::DuplicateToken,
            S::ExpiryNotInFuture => Self::AckExpired,
            S::AuthenticatedSessionExists => Self::AuthenticatedSessionExists,
            S::Cooldown { .. } => Self::Cooldown,
            e @ (S::StoreFull { .. } | S::QuotaExceeded { .. }) => Self::Overloaded(e.to_string()),
            other => Self::Internal(format!("session store: {other}")),
        }
    }

    pub(crate) fn io(e: &std::io::Error) -> Self {
        Self::Io {
            kind: e.kind(),
            message: e.to_string(),
        }
    }
}
