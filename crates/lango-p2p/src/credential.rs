//! Issuer-signed capability credentials on agent cards (ZK spec §3.11.3, §3.14.4, weakness W-7).
//!
//! # What a credential says
//!
//! A trusted evaluator (the *issuer*, identified by its own `did:lango:` DID) tested agent A for
//! capability C and committed to A's score without revealing it:
//!
//! ```text
//! cap_commitment = Poseidon(DOM_CAP, id_commitment_A, cap_id, score, salt)
//! cap_id         = fe248(SHA-256("lango/cap-id/v2" ‖ lp(capabilityId)))
//! ```
//!
//! The issuer signs, with its wallet key (`sign_message`, Keccak-256, low-S, 65 bytes), the
//! statement
//!
//! ```text
//! "lango-cap-v2" ‖ cap_commitment (32 B LE) ‖ cap_id (32 B LE)
//!                ‖ issuedAt (u64 BE, Unix seconds) ‖ expiresAt (u64 BE, Unix seconds)
//!                ‖ lp(subject DID)
//! ```
//!
//! (`lp(s)` = 2-byte big-endian length, then the bytes). The dates and the subject are inside the
//! signature, so a credential can be neither refreshed nor moved to another agent's card —
//! both were possible with Go's unsigned `issuedAt`/`expiresAt` (W-7).
//!
//! # Wire form
//!
//! On a card, a credential is
//! `{"capabilityId", "capCommitment", "issuerDid", "issuerSignature", "issuedAt", "expiresAt"}`
//! (byte strings standard base64, times RFC 3339 like the rest of the card). The Go shape
//! `{"capabilityId", "proof", "issuedAt", "expiresAt"}` is decoded but never kept: it cannot be
//! verified. Proofs against a credential (`agent_capability/v2`) are interactive — their binding
//! contains the verifier's nonce — so they are requested on demand and never broadcast.
//!
//! # Acceptance ([`check`])
//!
//! A received credential is kept only if: it has the Rust shape; its issuer is in the
//! configured trusted set (`p2p.zkp.trustedIssuers`); `expiresAt > now`;
//! `issuedAt + maxCredentialAge ≥ now`; `issuedAt ≤ now + 30 s`; both times are whole seconds
//! after 1970; the commitment is a canonical field element; and the issuer's signature over the
//! statement verifies. Anything else drops that credential from the stored card, never the card.

use std::{collections::BTreeSet, fmt, time::Duration};

use lango_crypto::wallet::{Did, LowS, WalletKey, verify_message};
use time::OffsetDateTime;

use crate::card::ZkCredential;

/// Domain string at the start of every signed credential statement.
pub const STATEMENT_DOMAIN: &[u8] = b"lango-cap-v2";

/// Length of a commitment on the wire (one field element, little-endian).
pub const COMMITMENT_LEN: usize = 32;

/// Why a credential was not kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum CredentialError {
    /// A Go-shaped credential (a bare proof with unsigned dates): nothing to verify.
    Unverifiable,
    /// The issuer DID is not a canonical `did:lango:` DID.
    InvalidIssuer,
    /// The issuer is not in the trusted set.
    UntrustedIssuer,
    /// `expiresAt ≤ now`.
    Expired,
    /// `issuedAt + maxCredentialAge < now`.
    Stale,
    /// `issuedAt` is more than the allowed skew in the future.
    FromFuture,
    /// A time is before 1970 or not a whole second (the signature covers Unix seconds).
    UnsignableTime,
    /// The commitment is not 32 bytes encoding a canonical field element.
    MalformedCommitment,
    /// The capability id or subject DID cannot be length-prefixed (over 65535 bytes).
    FieldTooLong,
    /// The issuer's signature does not verify over the statement.
    BadSignature,
}

impl CredentialError {
    /// Stable snake_case label for logs and counters.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Unverifiable => "unverifiable",
            Self::InvalidIssuer => "invalid_issuer",
            Self::UntrustedIssuer => "untrusted_issuer",
            Self::Expired => "expired",
            Self::Stale => "stale",
            Self::FromFuture => "from_future",
            Self::UnsignableTime => "unsignable_time",
            Self::MalformedCommitment => "malformed_commitment",
            Self::FieldTooLong => "field_too_long",
            Self::BadSignature => "bad_signature",
        }
    }
}

impl fmt::Display for CredentialError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Unverifiable => "the credential has no issuer signature (Go shape)",
            Self::InvalidIssuer => "the issuer DID is not a canonical did:lango DID",
            Self::UntrustedIssuer => "the issuer is not trusted",
            Self::Expired => "the credential has expired",
            Self::Stale => "the credential is older than maxCredentialAge",
            Self::FromFuture => "the credential is issued in the future",
            Self::UnsignableTime => "the credential's times are not whole Unix seconds",
            Self::MalformedCommitment => "the capability commitment is malformed",
            Self::FieldTooLong => "a credential field is too long",
            Self::BadSignature => "the issuer signature is invalid",
        })
    }
}

impl std::error::Error for CredentialError {}

/// What a received credential is checked against.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CredentialPolicy {
    /// Issuers whose credentials are kept (`p2p.zkp.trustedIssuers`); empty keeps none.
    pub trusted_issuers: BTreeSet<String>,
    /// Oldest credential kept (`p2p.zkp.maxCredentialAge`, 24 h).
    pub max_age: Duration,
    /// How far `issuedAt` may be ahead of the local clock (30 s).
    pub max_future: Duration,
}

impl Default for CredentialPolicy {
    fn default() -> Self {
        Self {
            trusted_issuers: BTreeSet::new(),
            max_age: Duration::from_secs(24 * 3600),
            max_future: Duration::from_secs(30),
        }
    }
}

/// Whether `cred`, found on the card of `subject_did`, is kept at time `now`.
pub fn check(
    cred: &ZkCredential,
    subject_did: &str,
    now: OffsetDateTime,
    policy: &CredentialPolicy,
) -> Result<(), CredentialError> {
    if cred.issuer_did.is_empty() && cred.issuer_signature.is_empty() {
        return Err(CredentialError::Unverifiable);
    }
    let issuer = match Did::parse(&cred.issuer_did) {
        Ok(d) if d.as_str() == cred.issuer_did => d,
        _ => return Err(CredentialError::InvalidIssuer),
    };
    if !policy.trusted_issuers.contains(issuer.as_str()) {
        return Err(CredentialError::UntrustedIssuer);
    }
    if cred.expires_at <= now {
        return Err(CredentialError::Expired);
    }
    if now
        .checked_sub(to_time_duration(policy.max_age))
        .is_some_and(|cutoff| cred.issued_at < cutoff)
    {
        return Err(CredentialError::Stale);
    }
    if now
        .checked_add(to_time_duration(policy.max_future))
        .is_some_and(|limit| cred.issued_at > limit)
    {
        return Err(CredentialError::FromFuture);
    }
    let commitment: [u8; COMMITMENT_LEN] = cred
        .cap_commitment
        .as_slice()
        .try_into()
        .map_err(|_| CredentialError::MalformedCommitment)?;
    let message = statement(
        &cred.capability_id,
        &commitment,
        cred.issued_at,
        cred.expires_at,
        subject_did,
    )?;
    let key = issuer
        .public_key()
        .map_err(|_| CredentialError::InvalidIssuer)?;
    verify_message(&key, &message, &cred.issuer_signature, LowS::Require)
        .map_err(|_| CredentialError::BadSignature)
}

/// The bytes an issuer signs (module documentation).
pub fn statement(
    capability_id: &str,
    cap_commitment: &[u8; COMMITMENT_LEN],
    issued_at: OffsetDateTime,
    expires_at: OffsetDateTime,
    subject_did: &str,
) -> Result<Vec<u8>, CredentialError> {
    lango_zkp::encoding::fe_from_bytes(cap_commitment)
        .map_err(|_| CredentialError::MalformedCommitment)?;
    let cap_id = lango_zkp::encoding::capability_id(capability_id)
        .map_err(|_| CredentialError::FieldTooLong)?;
    let subject_len =
        u16::try_from(subject_did.len()).map_err(|_| CredentialError::FieldTooLong)?;
    let mut m =
        Vec::with_capacity(STATEMENT_DOMAIN.len() + 2 * COMMITMENT_LEN + 18 + subject_did.len());
    m.extend_from_slice(STATEMENT_DOMAIN);
    m.extend_from_slice(cap_commitment);
    m.extend_from_slice(&lango_zkp::encoding::fe_to_bytes(&cap_id));
    m.extend_from_slice(&unix_seconds(issued_at)?.to_be_bytes());
    m.extend_from_slice(&unix_seconds(expires_at)?.to_be_bytes());
    m.extend_from_slice(&subject_len.to_be_bytes());
    m.extend_from_slice(subject_did.as_bytes());
    Ok(m)
}

/// Issues a credential: `issuer` signs the statement for `subject_did`. The times are truncated
/// to whole seconds (what the signature covers).
pub fn issue(
    issuer: &WalletKey,
    subject_did: &str,
    capability_id: &str,
    cap_commitment: [u8; COMMITMENT_LEN],
    issued_at: OffsetDateTime,
    expires_at: OffsetDateTime,
) -> Result<ZkCredential, CredentialError> {
    let issued_at = issued_at
        .replace_nanosecond(0)
        .map_err(|_| CredentialError::UnsignableTime)?;
    let expires_at = expires_at
        .replace_nanosecond(0)
        .map_err(|_| CredentialError::UnsignableTime)?;
    let message = statement(
        capability_id,
        &cap_commitment,
        issued_at,
        expires_at,
        subject_did,
    )?;
    let signature = issuer
        .sign_message(&message)
        .map_err(|_| CredentialError::BadSignature)?;
    Ok(ZkCredential {
        capability_id: capability_id.to_owned(),
        proof: Vec::new(),
        cap_commitment: cap_commitment.to_vec(),
        issuer_did: issuer.did().as_str().to_owned(),
        issuer_signature: signature.to_bytes().to_vec(),
        issued_at,
        expires_at,
    })
}

/// Largest credentials file read (`p2p.zkp.credentialsFile`).
pub const MAX_CREDENTIALS_FILE_BYTES: u64 = 64 * 1024;

/// Reads this node's own credentials (a JSON array in the card's credential form) from `path`
/// and checks each one was issued to `own_did` with a valid issuer signature. Expired ones are
/// left out with a warning (they would be dropped by every receiver); anything malformed is an
/// error naming the entry, so a broken file stops the start-up instead of publishing nothing.
pub fn load_own(
    path: &std::path::Path,
    own_did: &str,
    now: OffsetDateTime,
) -> Result<Vec<ZkCredential>, crate::Error> {
    use std::io::Read as _;
    let err = |message: String| crate::Error::Config {
        key: "p2p.zkp.credentialsFile".into(),
        message,
    };
    let file = std::fs::File::open(path).map_err(|e| err(format!("{}: {e}", path.display())))?;
    let mut text = Vec::new();
    file.take(MAX_CREDENTIALS_FILE_BYTES + 1)
        .read_to_end(&mut text)
        .map_err(|e| err(format!("{}: {e}", path.display())))?;
    if text.len() as u64 > MAX_CREDENTIALS_FILE_BYTES {
        return Err(err(format!(
            "{} is larger than {MAX_CREDENTIALS_FILE_BYTES} bytes",
            path.display()
        )));
    }
    let all: Vec<ZkCredential> = serde_json::from_slice(&text).map_err(|e| {
        err(format!(
            "{}: not a JSON array of credentials: {e}",
            path.display()
        ))
    })?;
    if all.len() > crate::card::MAX_ZK_CREDENTIALS {
        return Err(err(format!(
            "{} holds {} credentials; a card carries at most {}",
            path.display(),
            all.len(),
            crate::card::MAX_ZK_CREDENTIALS
        )));
    }
    let mut kept = Vec::with_capacity(all.len());
    for (i, cred) in all.into_iter().enumerate() {
        let policy = CredentialPolicy {
            trusted_issuers: BTreeSet::from([cred.issuer_did.clone()]),
            max_age: Duration::MAX,
            max_future: Duration::from_secs(30),
        };
        match check(&cred, own_did, now, &policy) {
            Ok(()) => kept.push(cred),
            Err(CredentialError::Expired) => tracing::warn!(
                capability = %cred.capability_id,
                "credential {i} in {} has expired; not published", path.display()
            ),
            Err(e) => {
                return Err(err(format!(
                    "{}: credential {i} ({:?}): {e}",
                    path.display(),
                    cred.capability_id
                )));
            }
        }
    }
    Ok(kept)
}

fn unix_seconds(t: OffsetDateTime) -> Result<u64, CredentialError> {
    if t.nanosecond() != 0 {
        return Err(CredentialError::UnsignableTime);
    }
    u64::try_from(t.unix_timestamp()).map_err(|_| CredentialError::UnsignableTime)
}

fn to_time_duration(d: Duration) -> time::Duration {
    time::Duration::try_from(d).unwrap_or(time::Duration::MAX)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use time::macros::datetime;

    use super::*;

    const NOW: OffsetDateTime = datetime!(2026-11-29 12:00 UTC);

    fn key(b: u8) -> WalletKey {
        WalletKey::from_bytes(&[b; 32]).unwrap()
    }

    #[test]
    fn statement_layout_is_domain_commitment_cap_id_times_subject() {
        let c = [3u8; 32];
        let m = statement("search", &c, NOW, NOW + Duration::from_secs(60), "did:x").unwrap();
        assert_eq!(&m[..12], STATEMENT_DOMAIN);
        assert_eq!(&m[12..44], &c);
        let cap_id = lango_zkp::encoding::capability_id("search").unwrap();
        assert_eq!(&m[44..76], &lango_zkp::encoding::fe_to_bytes(&cap_id));
        let t = NOW.unix_timestamp() as u64;
        assert_eq!(&m[76..84], &t.to_be_bytes());
        assert_eq!(&m[84..92], &(t + 60).to_be_bytes());
        assert_eq!(&m[92..94], &5u16.to_be_bytes());
        assert_eq!(&m[94..], b"did:x");
        // Non-canonical commitments and sub-second or pre-1970 times are not signable.
        assert_eq!(
            statement("s", &[0xff; 32], NOW, NOW, "d"),
            Err(CredentialError::MalformedCommitment)
        );
        let frac = NOW + time::Duration::milliseconds(5);
        assert_eq!(
            statement("s", &c, frac, NOW, "d"),
            Err(CredentialError::UnsignableTime)
        );
        assert_eq!(
            statement("s", &c, datetime!(1969-12-31 0:00 UTC), NOW, "d"),
            Err(CredentialError::UnsignableTime)
        );
    }

    #[test]
    fn issue_truncates_to_seconds_and_check_accepts_it() {
        let (issuer, subject) = (key(1), key(2));
        let frac = NOW + time::Duration::milliseconds(750);
        let cred = issue(
            &issuer,
            subject.did().as_str(),
            "search",
            [0; 32],
            frac,
            frac + Duration::from_secs(3600),
        )
        .unwrap();
        assert_eq!(cred.issued_at, NOW);
        assert_eq!(cred.issuer_signature.len(), 65);
        let policy = CredentialPolicy {
            trusted_issuers: BTreeSet::from([issuer.did().to_string()]),
            ..CredentialPolicy::default()
        };
        assert_eq!(check(&cred, subject.did().as_str(), NOW, &policy), Ok(()));
        // Another subject, another capability, a malleated (high-S) signature: refused.
        assert_eq!(
            check(&cred, key(3).did().as_str(), NOW, &policy),
            Err(CredentialError::BadSignature)
        );
        let mut renamed = cred.clone();
        renamed.capability_id = "admin".into();
        assert_eq!(
            check(&renamed, subject.did().as_str(), NOW, &policy),
            Err(CredentialError::BadSignature)
        );
        let mut bad_issuer = cred.clone();
        bad_issuer.issuer_did = "did:lango:00".into();
        assert_eq!(
            check(&bad_issuer, subject.did().as_str(), NOW, &policy),
            Err(CredentialError::InvalidIssuer)
        );
    }

    #[test]
    fn own_credentials_file_is_checked_at_load() {
        let (issuer, me) = (key(1), key(2));
        let hour = Duration::from_secs(3600);
        let good = issue(
            &issuer,
            me.did().as_str(),
            "search",
            [0; 32],
            NOW,
            NOW + hour,
        )
        .unwrap();
        let expired = issue(
            &issuer,
            me.did().as_str(),
            "old",
            [0; 32],
            NOW - 2 * hour,
            NOW - hour,
        )
        .unwrap();
        let t = tempfile::tempdir().unwrap();
        let path = t.path().join("creds.json");
        std::fs::write(&path, serde_json::to_vec(&[&good, &expired]).unwrap()).unwrap();
        let loaded = load_own(&path, me.did().as_str(), NOW).unwrap();
        assert_eq!(loaded, [good]);
        // Issued to someone else: an error naming the entry.
        let e = load_own(&path, key(3).did().as_str(), NOW)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("credential 0") && e.contains("issuer signature"),
            "{e}"
        );
        // Not JSON, too large.
        std::fs::write(&path, b"{").unwrap();
        assert!(
            load_own(&path, me.did().as_str(), NOW)
                .unwrap_err()
                .to_string()
                .contains("not a JSON array")
        );
        std::fs::write(&path, vec![b' '; 70 * 1024]).unwrap();
        assert!(
            load_own(&path, me.did().as_str(), NOW)
                .unwrap_err()
                .to_string()
                .contains("larger than")
        );
    }
}
