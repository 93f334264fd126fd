//! Agent cards: the gossip wire form, wallet signatures and the acceptance rules for received
//! cards (protocol spec §2.4, §3.9, weakness W-27).
//!
//! # Wire form
//!
//! A card is the JSON object a Go node's `encoding/json` writes for its `GossipCard` struct.
//! Keys, in the Go struct's field order:
//!
//! | key | Go type | written |
//! |---|---|---|
//! | `name`, `description` | string | always |
//! | `did` | string | when not empty |
//! | `multiaddrs`, `capabilities` | `[]string` | when not empty |
//! | `pricing` | `*PricingInfo` | when present; then all four of `currency`, `perQuery`, `perMinute`, `toolPrices` (`null` or an object) |
//! | `zkCredentials` | `[]ZKCredential` | when not empty; each `{capabilityId, proof, issuedAt, expiresAt}` |
//! | `ontologyDigest` | `*OntologyDigest` | when present (HEAD) |
//! | `peerId`, `timestamp` | string, `time.Time` | always |
//! | `bundle` | `json.RawMessage` | when present (HEAD) |
//! | `signature`, `signatureAlgorithm` | `[]byte`, string | when not empty (HEAD) |
//! | `pqSignerPublicKey`, `pqSignature`, `pqSignatureAlgorithm` | `[]byte`, `[]byte`, string | when not empty (HEAD) |
//!
//! The spec's table lists `ontologyDigest` after `timestamp`; the Go struct declares it before
//! `peerId`, and Go writes struct fields in declaration order, so that is where it goes here.
//!
//! Encoding follows Go exactly, because signatures are computed over these bytes:
//! strings escape `"` `\` `\b` `\f` `\n` `\r` `\t` by name, other control characters and `<`
//! `>` `&` as `\u00xx` (lowercase hex), U+2028 and U+2029 as `\u2028` `\u2029`; `/` and
//! non-ASCII characters are written as they are. `[]byte` is standard base64 with padding
//! (a credential's empty proof is written `null`, as Go writes a nil slice). Map keys are
//! sorted. Times are Go's `RFC3339Nano`: nanoseconds with trailing zeros trimmed (no fraction
//! when zero), `Z` for a zero offset, otherwise `±hh:mm`. The raw `bundle` is compacted and
//! HTML-escaped as Go's `json.Compact` does.
//!
//! Decoding follows Go's `json.Unmarshal` where it matters for interoperability: `null` for a
//! string, list, byte string or time leaves the zero value; a missing or `null` time is Go's
//! zero time `0001-01-01T00:00:00Z` (so a credential without timestamps is expired and
//! stale); times are parsed as Go's strict RFC 3339 (four-digit year, upper-case `T` and `Z`,
//! any number of fraction digits truncated to nanoseconds, offset hours below 24); base64
//! ignores `\r` and `\n` and tolerates non-zero trailing bits. Decoding is stricter than Go
//! in three ways, each of which only drops a card Go would keep: object keys must match
//! exactly (Go also matches them case-insensitively), a key may not repeat (Go keeps the
//! last), and strings must be valid Unicode (Go substitutes U+FFFD).
//!
//! # Signatures
//!
//! The signed payload ([`AgentCard::signing_payload`]) is the wire form with `signature` and
//! `pqSignature` left out — `signatureAlgorithm`, `pqSignerPublicKey` and
//! `pqSignatureAlgorithm` are covered. Lango signs with the wallet key:
//! `signatureAlgorithm = "secp256k1-keccak256"` and `signature` is the 65-byte `r ‖ s ‖ v` of
//! `sign_message(payload)` (Keccak-256 once, RFC 6979, low-S). A received signature is checked
//! against the public key inside the card's DID; high-S signatures are refused. Cards signed
//! with any other algorithm (Go HEAD's `ed25519` with an identity bundle) are refused, since
//! their DIDs are `did:lango:v2` identities this node does not accept anyway.
//!
//! The post-quantum signature (ML-DSA) cannot be verified here. A card whose only signature
//! is post-quantum counts as **unsigned**; next to a valid classical signature the
//! post-quantum one is ignored. The classical signature still covers the PQ public key and
//! algorithm name, so they cannot be altered.
//!
//! # Acceptance ([`CardStore::accept`], §2.4.4)
//!
//! In order; the first failing rule drops the card and counts its [`Rejection`] reason:
//!
//! 1. larger than [`CardPolicy::max_card_bytes`] (checked before parsing) → `too_large`;
//! 2. not a card in JSON → `not_json`;
//! 3. `name` over 256 bytes, `description` over 4 KiB, a capability over 128 bytes →
//!    `field_too_long`; more than 64 capabilities, 32 multiaddrs or 16 credentials →
//!    `too_many`;
//! 4. empty `did` → `empty_did`; a DID that is not canonical `did:lango:<66 lowercase hex>`
//!    → `invalid_did`;
//! 5. a revoked DID → `revoked`, and any card stored for it is deleted;
//! 6. `peerId` differs from the gossipsub message's origin (its signed author) →
//!    `origin_mismatch`;
//! 7. `timestamp` more than [`CardPolicy::max_future`] ahead → `from_future`; older than
//!    [`CardPolicy::card_ttl`] → `stale`;
//! 8. a signature that does not verify → `bad_signature`; no signature while
//!    [`CardPolicy::require_signed`] → `unsigned` (otherwise stored with `verified = false`);
//! 9. a card is stored only if none is stored for the DID or its timestamp is strictly later
//!    → otherwise `not_newer`;
//! 10. credentials: each one that fails [`crate::credential::check`] — Go-shaped
//!     (unverifiable), untrusted or invalid issuer, bad issuer signature, expired
//!     (`expiresAt ≤ now`), stale (`issuedAt + maxCredentialAge < now`), issued more than 30 s
//!     ahead — is removed from the stored copy and counted by reason
//!     ([`CardStore::credentials_dropped`]); the card itself stays. With no trusted issuer
//!     configured no credential is ever kept;
//! 11. when the store holds [`CardPolicy::max_known_peers`] cards, the one with the oldest
//!     timestamp is evicted to make room. Cards older than the TTL are dropped by
//!     [`CardStore::expire`].
//!
//! The stored copy can differ from what was signed (removed credentials); `verified` records
//! the outcome for the card as received.

use std::{
    collections::{BTreeMap, BTreeSet, HashMap, hash_map::Entry},
    fmt,
    time::Duration,
};

use base64::{
    Engine as _, alphabet,
    engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig},
};
use lango_crypto::wallet::{Did, LowS, WalletKey, verify_message};

use crate::credential::CredentialPolicy;
use serde::{Deserialize, Deserializer, Serialize, Serializer, de::Error as _};
use time::{Date, Month, OffsetDateTime, PrimitiveDateTime, Time, UtcOffset};

/// `signatureAlgorithm` of lango wallet signatures: secp256k1 over Keccak-256 of the payload.
pub const SIGNATURE_ALGORITHM: &str = "secp256k1-keccak256";
/// Default largest card accepted, in bytes (64 KiB).
pub const DEFAULT_MAX_CARD_BYTES: usize = 64 * 1024;
/// Longest `name`, in bytes.
pub const MAX_NAME_BYTES: usize = 256;
/// Longest `description`, in bytes.
pub const MAX_DESCRIPTION_BYTES: usize = 4 * 1024;
/// Longest single capability, in bytes.
pub const MAX_CAPABILITY_BYTES: usize = 128;
/// Most capabilities on a card.
pub const MAX_CAPABILITIES: usize = 64;
/// Most multiaddrs on a card.
pub const MAX_MULTIADDRS: usize = 32;
/// Most ZK credentials on a card.
pub const MAX_ZK_CREDENTIALS: usize = 16;

/// Go's zero `time.Time`, which is what a missing or `null` timestamp decodes to.
pub const GO_ZERO_TIME: OffsetDateTime = time::macros::datetime!(0001-01-01 0:00 UTC);

/// Base64 as Go's `encoding/json` handles `[]byte`: standard alphabet, padding written and
/// required, non-zero trailing bits tolerated on decode.
const GO_BASE64: GeneralPurpose = GeneralPurpose::new(
    &alphabet::STANDARD,
    GeneralPurposeConfig::new()
        .with_encode_padding(true)
        .with_decode_allow_trailing_bits(true)
        .with_decode_padding_mode(DecodePaddingMode::RequireCanonical),
);

// ---------------------------------------------------------------------------------------------
// Types
// ---------------------------------------------------------------------------------------------

/// An agent card as published on the gossip topic (Go `GossipCard`).
///
/// Decode with [`AgentCard::from_wire`] and encode with [`AgentCard::to_wire`]; those two are
/// byte-exact with Go. The `serde` implementations use the same keys, order, omission rules
/// and value encodings and are meant for embedding a card in other JSON; the bytes then
/// depend on the serializer (`serde_json` does not HTML-escape), and the `bundle` goes through
/// a parsed value (see [`RawJson`]). Signatures are only ever computed over `to_wire`'s form.
#[derive(Debug, Clone, PartialEq)]
pub struct AgentCard {
    /// Agent name (`a2a.agentName`).
    pub name: String,
    /// Free-text description; may be empty.
    pub description: String,
    /// `did:lango:<hex compressed secp256k1 key>` of the agent's wallet.
    pub did: String,
    /// The node's listen addresses.
    pub multiaddrs: Vec<String>,
    /// Capabilities announced (what discovery by tag matches).
    pub capabilities: Vec<String>,
    /// Prices, when the agent charges.
    pub pricing: Option<Pricing>,
    /// Zero-knowledge capability credentials.
    pub zk_credentials: Vec<ZkCredential>,
    /// Summary of the agent's ontology (Go HEAD).
    pub ontology_digest: Option<OntologyDigest>,
    /// The publishing host's libp2p peer ID.
    pub peer_id: String,
    /// Publication time.
    pub timestamp: OffsetDateTime,
    /// Serialised identity bundle (Go HEAD), kept verbatim so signatures still verify.
    pub bundle: Option<RawJson>,
    /// Classical signature over [`AgentCard::signing_payload`]; empty when unsigned.
    pub signature: Vec<u8>,
    /// Algorithm of [`AgentCard::signature`]; empty means [`SIGNATURE_ALGORITHM`].
    pub signature_algorithm: String,
    /// ML-DSA public key of the post-quantum signer (Go HEAD); covered by the classical
    /// signature, never used for verification here.
    pub pq_signer_public_key: Vec<u8>,
    /// Post-quantum signature (Go HEAD); not verifiable here and not covered by the payload.
    pub pq_signature: Vec<u8>,
    /// Algorithm of [`AgentCard::pq_signature`].
    pub pq_signature_algorithm: String,
}

/// Prices of an agent's services (Go `PricingInfo`). All four keys are always written.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Pricing {
    /// Currency code, e.g. `USDC`.
    #[serde(default, deserialize_with = "de_string")]
    pub currency: String,
    /// Price per query, as a decimal string.
    #[serde(default, deserialize_with = "de_string")]
    pub per_query: String,
    /// Price per minute, as a decimal string.
    #[serde(default, deserialize_with = "de_string")]
    pub per_minute: String,
    /// Price per tool; `None` is written as `null`, an empty map as `{}`.
    #[serde(default, deserialize_with = "de_string_map")]
    pub tool_prices: Option<BTreeMap<String, String>>,
}

/// A capability credential: the issuer-signed Rust shape, or Go's `ZKCredential` (decoded for
/// interoperability, never kept: see [`crate::credential`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ZkCredential {
    /// The capability.
    #[serde(default, deserialize_with = "de_string")]
    pub capability_id: String,
    /// Go shape only: the proof bytes (base64 on the wire; empty is written `null`).
    #[serde(
        default,
        deserialize_with = "de_bytes",
        serialize_with = "ser_bytes_or_null",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub proof: Vec<u8>,
    /// Rust shape: the capability commitment (32-byte field element, base64).
    #[serde(
        default,
        deserialize_with = "de_bytes",
        serialize_with = "ser_bytes_or_null",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub cap_commitment: Vec<u8>,
    /// Rust shape: the issuer's DID.
    #[serde(
        default,
        deserialize_with = "de_string",
        skip_serializing_if = "String::is_empty"
    )]
    pub issuer_did: String,
    /// Rust shape: the issuer's 65-byte wallet signature over the statement (base64).
    #[serde(
        default,
        deserialize_with = "de_bytes",
        serialize_with = "ser_bytes_or_null",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub issuer_signature: Vec<u8>,
    /// Issue time; missing decodes as [`GO_ZERO_TIME`].
    #[serde(
        default = "go_zero_time",
        deserialize_with = "de_time",
        serialize_with = "ser_time"
    )]
    pub issued_at: OffsetDateTime,
    /// Expiry time; missing decodes as [`GO_ZERO_TIME`].
    #[serde(
        default = "go_zero_time",
        deserialize_with = "de_time",
        serialize_with = "ser_time"
    )]
    pub expires_at: OffsetDateTime,
}

/// Summary of an agent's ontology schema (Go HEAD `OntologyDigest`).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OntologyDigest {
    /// Schema version.
    #[serde(default, deserialize_with = "de_int")]
    pub schema_version: i64,
    /// Digest of the schema.
    #[serde(default, deserialize_with = "de_string")]
    pub digest: String,
    /// Number of types.
    #[serde(default, deserialize_with = "de_int")]
    pub type_count: i64,
    /// Number of predicates.
    #[serde(default, deserialize_with = "de_int")]
    pub predicate_count: i64,
    /// Type names; omitted when empty.
    #[serde(
        default,
        deserialize_with = "de_strings",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub type_names: Vec<String>,
}

/// A JSON value kept as text (Go `json.RawMessage`), always valid and stored in the compact,
/// HTML-escaped form Go writes.
///
/// Through [`AgentCard::from_wire`] the text is the received one, compacted: numbers, key
/// order, duplicate keys and escapes survive, so a signature over it still verifies. Through
/// the `serde` implementations it is rebuilt from a parsed value, which can normalise numbers,
/// key order and escapes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawJson(String);

impl RawJson {
    /// Validates `text` as one JSON value and stores its compact Go form.
    pub fn new(text: &str) -> Result<Self, serde_json::Error> {
        serde_json::from_str::<serde::de::IgnoredAny>(text)?;
        Ok(Self(go_compact(text)))
    }

    /// The compact JSON text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for RawJson {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Outcome of [`AgentCard::verify_signature`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SignatureCheck {
    /// No classical signature. A card carrying only a post-quantum signature is also
    /// unsigned: ML-DSA cannot be verified here.
    Unsigned,
    /// The classical signature verifies against the key in the card's DID.
    Valid,
    /// A signature is present and does not verify, or uses an unsupported algorithm.
    Invalid(String),
}

/// Why [`AgentCard::sign`] refused to sign.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SignError {
    /// The card names another DID than the wallet's; peers would refuse the signature.
    #[error("the card's DID {card:?} is not the signing wallet's DID {wallet}")]
    DidMismatch {
        /// The card's DID.
        card: String,
        /// The wallet's DID.
        wallet: String,
    },
    /// The card carries an identity bundle. Go peers verify bundle cards with the bundle's
    /// Ed25519 key and a `did:lango:v2` DID, which this signer does not produce.
    #[error("the card carries an identity bundle, which this signer cannot sign for")]
    BundleUnsupported,
    /// The card breaks a limit receivers apply, so it would be dropped.
    #[error("the card would be rejected by peers: {0}")]
    OutOfBounds(Rejection),
    /// A time Go cannot encode (year outside 0–9999, or an offset of 24 hours or more).
    #[error("{0} cannot be encoded as RFC 3339 by Go peers")]
    UnencodableTime(&'static str),
    /// The wallet failed to sign.
    #[error("sign the agent card: {0}")]
    Crypto(#[from] lango_crypto::Error),
}

// ---------------------------------------------------------------------------------------------
// Card construction, wire form and signatures
// ---------------------------------------------------------------------------------------------

impl AgentCard {
    /// The local node's card: no description, pricing or credentials, unsigned. Sign it with
    /// [`AgentCard::sign`] before publishing.
    pub fn local(
        name: impl Into<String>,
        did: impl Into<String>,
        peer_id: impl Into<String>,
        multiaddrs: Vec<String>,
        capabilities: Vec<String>,
        now: OffsetDateTime,
    ) -> Self {
        Self {
            name: name.into(),
            description: String::new(),
            did: did.into(),
            multiaddrs,
            capabilities,
            pricing: None,
            zk_credentials: Vec::new(),
            ontology_digest: None,
            peer_id: peer_id.into(),
            timestamp: now,
            bundle: None,
            signature: Vec::new(),
            signature_algorithm: String::new(),
            pq_signer_public_key: Vec::new(),
            pq_signature: Vec::new(),
            pq_signature_algorithm: String::new(),
        }
    }

    /// Decodes a card from its JSON bytes, keeping the raw `bundle` text so that
    /// [`AgentCard::signing_payload`] reproduces what the publisher signed. Does not bound
    /// the input size; [`CardStore::accept`] does that before calling it.
    pub fn from_wire(raw: &[u8]) -> Result<Self, serde_json::Error> {
        let MapOnly(wire) = serde_json::from_slice::<MapOnly<WireCard>>(raw)?;
        let bundle = match wire.bundle {
            None => None,
            Some(_) => {
                let span = top_level_value(raw, "bundle").ok_or_else(|| {
                    serde_json::Error::custom("bundle: raw value not found in the card")
                })?;
                let text = std::str::from_utf8(span)
                    .map_err(|_| serde_json::Error::custom("bundle: not valid UTF-8"))?;
                Some(RawJson::new(text)?)
            }
        };
        Ok(wire.into_card(bundle))
    }

    /// The card as Go's `encoding/json` writes it, signatures included: what is published.
    pub fn to_wire(&self) -> Vec<u8> {
        self.write_go(true)
    }

    /// The bytes that are signed: the Go form without `signature` and `pqSignature`.
    pub fn signing_payload(&self) -> Vec<u8> {
        self.write_go(false)
    }

    /// Signs the card with the wallet: sets `signatureAlgorithm` to [`SIGNATURE_ALGORITHM`]
    /// and `signature` to the 65-byte `sign_message(signing_payload)`. Post-quantum fields
    /// are cleared first, since no ML-DSA signature can be produced here and a stale one would
    /// not match. A refused card is left as it was; a wallet failure leaves it unsigned.
    pub fn sign(&mut self, wallet: &WalletKey) -> Result<(), SignError> {
        let wallet_did = wallet.did();
        if self.did != wallet_did.as_str() {
            return Err(SignError::DidMismatch {
                card: self.did.clone(),
                wallet: wallet_did.to_string(),
            });
        }
        if self.bundle.is_some() {
            return Err(SignError::BundleUnsupported);
        }
        self.check_bounds().map_err(SignError::OutOfBounds)?;
        self.check_encodable()?;
        self.signature.clear();
        self.pq_signature.clear();
        self.pq_signer_public_key.clear();
        self.pq_signature_algorithm.clear();
        self.signature_algorithm = SIGNATURE_ALGORITHM.to_owned();
        let sig = wallet.sign_message(&self.signing_payload())?;
        self.signature = sig.to_bytes().to_vec();
        Ok(())
    }

    /// Checks the classical signature (see the module documentation).
    pub fn verify_signature(&self) -> SignatureCheck {
        if self.signature.is_empty() {
            // Also when only a post-quantum signature is present: it cannot be checked here.
            return SignatureCheck::Unsigned;
        }
        match self.signature_algorithm.as_str() {
            "" | SIGNATURE_ALGORITHM => {}
            other => {
                let shown: String = other.chars().take(64).collect();
                return SignatureCheck::Invalid(format!(
                    "unsupported signature algorithm {shown:?}"
                ));
            }
        }
        let key = match Did::parse(&self.did).and_then(|d| d.public_key()) {
            Ok(k) => k,
            Err(e) => return SignatureCheck::Invalid(format!("card DID: {e}")),
        };
        match verify_message(
            &key,
            &self.signing_payload(),
            &self.signature,
            LowS::Require,
        ) {
            Ok(()) => SignatureCheck::Valid,
            Err(e) => SignatureCheck::Invalid(e.to_string()),
        }
    }

    /// Checks the field limits receivers apply (§2.4.4), in the order [`CardStore::accept`]
    /// applies them.
    pub fn check_bounds(&self) -> Result<(), Rejection> {
        if self.name.len() > MAX_NAME_BYTES {
            return Err(Rejection::FieldTooLong("name"));
        }
        if self.description.len() > MAX_DESCRIPTION_BYTES {
            return Err(Rejection::FieldTooLong("description"));
        }
        if self.capabilities.len() > MAX_CAPABILITIES {
            return Err(Rejection::TooMany("capabilities"));
        }
        if self
            .capabilities
            .iter()
            .any(|c| c.len() > MAX_CAPABILITY_BYTES)
        {
            return Err(Rejection::FieldTooLong("capabilities"));
        }
        if self.multiaddrs.len() > MAX_MULTIADDRS {
            return Err(Rejection::TooMany("multiaddrs"));
        }
        if self.zk_credentials.len() > MAX_ZK_CREDENTIALS {
            return Err(Rejection::TooMany("zkCredentials"));
        }
        Ok(())
    }

    /// Whether the card announces `capability`.
    pub fn has_capability(&self, capability: &str) -> bool {
        self.capabilities.iter().any(|c| c == capability)
    }

    fn check_encodable(&self) -> Result<(), SignError> {
        if !go_encodable(self.timestamp) {
            return Err(SignError::UnencodableTime("timestamp"));
        }
        for c in &self.zk_credentials {
            if !go_encodable(c.issued_at) {
                return Err(SignError::UnencodableTime("zkCredentials.issuedAt"));
            }
            if !go_encodable(c.expires_at) {
                return Err(SignError::UnencodableTime("zkCredentials.expiresAt"));
            }
        }
        Ok(())
    }

    /// The one Go-form writer behind [`AgentCard::to_wire`] and
    /// [`AgentCard::signing_payload`].
    fn write_go(&self, with_signatures: bool) -> Vec<u8> {
        let mut o = Vec::with_capacity(512);
        o.extend_from_slice(b"{\"name\":");
        write_go_string(&mut o, &self.name);
        o.extend_from_slice(b",\"description\":");
        write_go_string(&mut o, &self.description);
        if !self.did.is_empty() {
            o.extend_from_slice(b",\"did\":");
            write_go_string(&mut o, &self.did);
        }
        if !self.multiaddrs.is_empty() {
            o.extend_from_slice(b",\"multiaddrs\":");
            write_go_strings(&mut o, &self.multiaddrs);
        }
        if !self.capabilities.is_empty() {
            o.extend_from_slice(b",\"capabilities\":");
            write_go_strings(&mut o, &self.capabilities);
        }
        if let Some(p) = &self.pricing {
            o.extend_from_slice(b",\"pricing\":");
            write_go_pricing(&mut o, p);
        }
        if !self.zk_credentials.is_empty() {
            o.extend_from_slice(b",\"zkCredentials\":[");
            for (i, c) in self.zk_credentials.iter().enumerate() {
                if i > 0 {
                    o.push(b',');
                }
                write_go_credential(&mut o, c);
            }
            o.push(b']');
        }
        if let Some(d) = &self.ontology_digest {
            o.extend_from_slice(b",\"ontologyDigest\":");
            write_go_digest(&mut o, d);
        }
        o.extend_from_slice(b",\"peerId\":");
        write_go_string(&mut o, &self.peer_id);
        o.extend_from_slice(b",\"timestamp\":");
        write_go_time(&mut o, self.timestamp);
        if let Some(b) = &self.bundle {
            o.extend_from_slice(b",\"bundle\":");
            o.extend_from_slice(b.as_str().as_bytes());
        }
        if with_signatures && !self.signature.is_empty() {
            o.extend_from_slice(b",\"signature\":");
            write_go_bytes(&mut o, &self.signature);
        }
        if !self.signature_algorithm.is_empty() {
            o.extend_from_slice(b",\"signatureAlgorithm\":");
            write_go_string(&mut o, &self.signature_algorithm);
        }
        if !self.pq_signer_public_key.is_empty() {
            o.extend_from_slice(b",\"pqSignerPublicKey\":");
            write_go_bytes(&mut o, &self.pq_signer_public_key);
        }
        if with_signatures && !self.pq_signature.is_empty() {
            o.extend_from_slice(b",\"pqSignature\":");
            write_go_bytes(&mut o, &self.pq_signature);
        }
        if !self.pq_signature_algorithm.is_empty() {
            o.extend_from_slice(b",\"pqSignatureAlgorithm\":");
            write_go_string(&mut o, &self.pq_signature_algorithm);
        }
        o.push(b'}');
        o
    }
}

impl ZkCredential {
    /// Whether the credential has expired: `expires_at < now` (R-9.1).
    pub fn is_expired(&self, now: OffsetDateTime) -> bool {
        self.expires_at < now
    }

    /// Whether the credential is older than `max_age`: `issued_at + max_age < now` (R-9.2).
    pub fn is_stale(&self, now: OffsetDateTime, max_age: Duration) -> bool {
        match sub(now, max_age) {
            Some(cutoff) => self.issued_at < cutoff,
            // `now - max_age` is before the earliest representable time: nothing is older.
            None => false,
        }
    }

    /// Whether this is the issuer-signed Rust shape (otherwise Go's).
    pub fn is_issuer_signed(&self) -> bool {
        !self.issuer_did.is_empty()
            || !self.issuer_signature.is_empty()
            || !self.cap_commitment.is_empty()
    }

    fn zero() -> Self {
        Self {
            capability_id: String::new(),
            proof: Vec::new(),
            cap_commitment: Vec::new(),
            issuer_did: String::new(),
            issuer_signature: Vec::new(),
            issued_at: GO_ZERO_TIME,
            expires_at: GO_ZERO_TIME,
        }
    }
}

// ---------------------------------------------------------------------------------------------
// serde
// ---------------------------------------------------------------------------------------------

/// Decoding target with Go's names and `null` handling; the `bundle` is captured as a value
/// here and replaced by its raw text in [`AgentCard::from_wire`].
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct WireCard {
    #[serde(default, deserialize_with = "de_string")]
    name: String,
    #[serde(default, deserialize_with = "de_string")]
    description: String,
    #[serde(default, deserialize_with = "de_string")]
    did: String,
    #[serde(default, deserialize_with = "de_strings")]
    multiaddrs: Vec<String>,
    #[serde(default, deserialize_with = "de_strings")]
    capabilities: Vec<String>,
    #[serde(default)]
    pricing: Option<MapOnly<Pricing>>,
    #[serde(default, deserialize_with = "de_credentials")]
    zk_credentials: Vec<ZkCredential>,
    #[serde(default)]
    ontology_digest: Option<MapOnly<OntologyDigest>>,
    #[serde(default, deserialize_with = "de_string")]
    peer_id: String,
    #[serde(default = "go_zero_time", deserialize_with = "de_time")]
    timestamp: OffsetDateTime,
    #[serde(default, deserialize_with = "de_present_value")]
    bundle: Option<serde_json::Value>,
    #[serde(default, deserialize_with = "de_bytes")]
    signature: Vec<u8>,
    #[serde(default, deserialize_with = "de_string")]
    signature_algorithm: String,
    #[serde(default, deserialize_with = "de_bytes")]
    pq_signer_public_key: Vec<u8>,
    #[serde(default, deserialize_with = "de_bytes")]
    pq_signature: Vec<u8>,
    #[serde(default, deserialize_with = "de_string")]
    pq_signature_algorithm: String,
}

impl WireCard {
    fn into_card(self, bundle: Option<RawJson>) -> AgentCard {
        AgentCard {
            name: self.name,
            description: self.description,
            did: self.did,
            multiaddrs: self.multiaddrs,
            capabilities: self.capabilities,
            pricing: self.pricing.map(|p| p.0),
            zk_credentials: self.zk_credentials,
            ontology_digest: self.ontology_digest.map(|d| d.0),
            peer_id: self.peer_id,
            timestamp: self.timestamp,
            bundle,
            signature: self.signature,
            signature_algorithm: self.signature_algorithm,
            pq_signer_public_key: self.pq_signer_public_key,
            pq_signature: self.pq_signature,
            pq_signature_algorithm: self.pq_signature_algorithm,
        }
    }
}

impl<'de> Deserialize<'de> for AgentCard {
    /// Same rules as [`AgentCard::from_wire`], except that the `bundle` is rebuilt from a
    /// parsed value (see [`RawJson`]).
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let MapOnly(mut wire) = MapOnly::<WireCard>::deserialize(d)?;
        let bundle = match wire.bundle.take() {
            None => None,
            Some(v) => {
                let text = serde_json::to_string(&v).map_err(D::Error::custom)?;
                Some(RawJson::new(&text).map_err(D::Error::custom)?)
            }
        };
        Ok(wire.into_card(bundle))
    }
}

impl Serialize for AgentCard {
    /// The keys, order and omissions of [`AgentCard::to_wire`]; the `bundle` goes through a
    /// parsed value.
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct;
        let mut st = s.serialize_struct("AgentCard", 16)?;
        st.serialize_field("name", &self.name)?;
        st.serialize_field("description", &self.description)?;
        macro_rules! opt {
            ($key:literal, $present:expr, $value:expr) => {
                if $present {
                    st.serialize_field($key, $value)?;
                } else {
                    st.skip_field($key)?;
                }
            };
        }
        opt!("did", !self.did.is_empty(), &self.did);
        opt!("multiaddrs", !self.multiaddrs.is_empty(), &self.multiaddrs);
        opt!(
            "capabilities",
            !self.capabilities.is_empty(),
            &self.capabilities
        );
        opt!("pricing", self.pricing.is_some(), &self.pricing);
        opt!(
            "zkCredentials",
            !self.zk_credentials.is_empty(),
            &self.zk_credentials
        );
        opt!(
            "ontologyDigest",
            self.ontology_digest.is_some(),
            &self.ontology_digest
        );
        st.serialize_field("peerId", &self.peer_id)?;
        st.serialize_field("timestamp", &GoTime(self.timestamp))?;
        match &self.bundle {
            Some(b) => {
                let v: serde_json::Value =
                    serde_json::from_str(b.as_str()).map_err(serde::ser::Error::custom)?;
                st.serialize_field("bundle", &v)?;
            }
            None => st.skip_field("bundle")?,
        }
        opt!(
            "signature",
            !self.signature.is_empty(),
            &GO_BASE64.encode(&self.signature)
        );
        opt!(
            "signatureAlgorithm",
            !self.signature_algorithm.is_empty(),
            &self.signature_algorithm
        );
        opt!(
            "pqSignerPublicKey",
            !self.pq_signer_public_key.is_empty(),
            &GO_BASE64.encode(&self.pq_signer_public_key)
        );
        opt!(
            "pqSignature",
            !self.pq_signature.is_empty(),
            &GO_BASE64.encode(&self.pq_signature)
        );
        opt!(
            "pqSignatureAlgorithm",
            !self.pq_signature_algorithm.is_empty(),
            &self.pq_signature_algorithm
        );
        st.end()
    }
}

/// A time serialised in Go's `RFC3339Nano` form.
struct GoTime(OffsetDateTime);

impl Serialize for GoTime {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&format_go_time(self.0))
    }
}

fn go_zero_time() -> OffsetDateTime {
    GO_ZERO_TIME
}

fn ser_time<S: Serializer>(t: &OffsetDateTime, s: S) -> Result<S::Ok, S::Error> {
    GoTime(*t).serialize(s)
}

fn ser_bytes_or_null<S: Serializer>(b: &[u8], s: S) -> Result<S::Ok, S::Error> {
    if b.is_empty() {
        s.serialize_none()
    } else {
        s.serialize_str(&GO_BASE64.encode(b))
    }
}

/// A string; `null` leaves it empty.
fn de_string<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    Ok(Option::<String>::deserialize(d)?.unwrap_or_default())
}

/// A list of strings; `null` (for the list or an element) leaves the zero value.
fn de_strings<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    Ok(Option::<Vec<Option<String>>>::deserialize(d)?
        .unwrap_or_default()
        .into_iter()
        .map(Option::unwrap_or_default)
        .collect())
}

/// A string map; `null` is `None`, a `null` value is an empty string.
fn de_string_map<'de, D: Deserializer<'de>>(
    d: D,
) -> Result<Option<BTreeMap<String, String>>, D::Error> {
    Ok(
        Option::<BTreeMap<String, Option<String>>>::deserialize(d)?.map(|m| {
            m.into_iter()
                .map(|(k, v)| (k, v.unwrap_or_default()))
                .collect()
        }),
    )
}

/// A Go `int`; `null` is 0.
fn de_int<'de, D: Deserializer<'de>>(d: D) -> Result<i64, D::Error> {
    Ok(Option::<i64>::deserialize(d)?.unwrap_or_default())
}

/// A Go `[]byte`: base64 text, or `null` for empty.
fn de_bytes<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
    match Option::<String>::deserialize(d)? {
        None => Ok(Vec::new()),
        Some(s) => go_base64_decode(&s).ok_or_else(|| D::Error::custom("illegal base64 data")),
    }
}

/// A Go `time.Time`: strict RFC 3339, or `null` for the zero time.
fn de_time<'de, D: Deserializer<'de>>(d: D) -> Result<OffsetDateTime, D::Error> {
    match Option::<String>::deserialize(d)? {
        None => Ok(GO_ZERO_TIME),
        Some(s) => parse_go_time(&s).ok_or_else(|| {
            let shown: String = s.chars().take(40).collect();
            D::Error::custom(format!("time {shown:?} is not RFC 3339"))
        }),
    }
}

/// Credentials; `null` for the list is empty, a `null` element is a zero credential.
fn de_credentials<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<ZkCredential>, D::Error> {
    Ok(
        Option::<Vec<Option<MapOnly<ZkCredential>>>>::deserialize(d)?
            .unwrap_or_default()
            .into_iter()
            .map(|c| c.map_or_else(ZkCredential::zero, |c| c.0))
            .collect(),
    )
}

/// A struct decoded from a JSON object only. Derived struct decoding also takes an array of
/// the fields in order, which Go refuses; accepting it would let cards in through a form no
/// Go node reads.
struct MapOnly<T>(T);

impl<'de, T: Deserialize<'de>> Deserialize<'de> for MapOnly<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct ObjectVisitor<T>(std::marker::PhantomData<T>);
        impl<'de, T: Deserialize<'de>> serde::de::Visitor<'de> for ObjectVisitor<T> {
            type Value = T;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, map: A) -> Result<T, A::Error> {
                T::deserialize(serde::de::value::MapAccessDeserializer::new(map))
            }
        }
        d.deserialize_map(ObjectVisitor(std::marker::PhantomData))
            .map(MapOnly)
    }
}

/// Any value, `null` included, marked present (a `json.RawMessage` keeps `null`).
fn de_present_value<'de, D: Deserializer<'de>>(
    d: D,
) -> Result<Option<serde_json::Value>, D::Error> {
    serde_json::Value::deserialize(d).map(Some)
}

// ---------------------------------------------------------------------------------------------
// Go encoding primitives
// ---------------------------------------------------------------------------------------------

/// Writes `s` as a JSON string with Go's `encoding/json` escaping (HTML-safe, Go ≥ 1.22).
fn write_go_string(o: &mut Vec<u8>, s: &str) {
    lango_handshake::wire::write_go_string(o, s);
}

fn write_go_strings(o: &mut Vec<u8>, list: &[String]) {
    o.push(b'[');
    for (i, s) in list.iter().enumerate() {
        if i > 0 {
            o.push(b',');
        }
        write_go_string(o, s);
    }
    o.push(b']');
}

fn write_go_bytes(o: &mut Vec<u8>, b: &[u8]) {
    o.push(b'"');
    o.extend_from_slice(GO_BASE64.encode(b).as_bytes());
    o.push(b'"');
}

fn write_go_pricing(o: &mut Vec<u8>, p: &Pricing) {
    o.extend_from_slice(b"{\"currency\":");
    write_go_string(o, &p.currency);
    o.extend_from_slice(b",\"perQuery\":");
    write_go_string(o, &p.per_query);
    o.extend_from_slice(b",\"perMinute\":");
    write_go_string(o, &p.per_minute);
    o.extend_from_slice(b",\"toolPrices\":");
    match &p.tool_prices {
        None => o.extend_from_slice(b"null"),
        Some(m) => {
            o.push(b'{');
            // BTreeMap order is byte order of the keys, which is Go's sort order.
            for (i, (k, v)) in m.iter().enumerate() {
                if i > 0 {
                    o.push(b',');
                }
                write_go_string(o, k);
                o.push(b':');
                write_go_string(o, v);
            }
            o.push(b'}');
        }
    }
    o.push(b'}');
}

/// A credential in the order Go writes its struct; the Rust shape replaces `proof` by the three
/// issuer fields (a Go node ignores them, so it re-encodes such a card differently and cannot
/// check its signature — cards with Rust credentials are for Rust nodes).
fn write_go_credential(o: &mut Vec<u8>, c: &ZkCredential) {
    o.extend_from_slice(b"{\"capabilityId\":");
    write_go_string(o, &c.capability_id);
    if c.is_issuer_signed() {
        o.extend_from_slice(b",\"capCommitment\":");
        write_go_bytes(o, &c.cap_commitment);
        o.extend_from_slice(b",\"issuerDid\":");
        write_go_string(o, &c.issuer_did);
        o.extend_from_slice(b",\"issuerSignature\":");
        write_go_bytes(o, &c.issuer_signature);
    } else {
        o.extend_from_slice(b",\"proof\":");
        if c.proof.is_empty() {
            o.extend_from_slice(b"null");
        } else {
            write_go_bytes(o, &c.proof);
        }
    }
    o.extend_from_slice(b",\"issuedAt\":");
    write_go_time(o, c.issued_at);
    o.extend_from_slice(b",\"expiresAt\":");
    write_go_time(o, c.expires_at);
    o.push(b'}');
}

fn write_go_digest(o: &mut Vec<u8>, d: &OntologyDigest) {
    o.extend_from_slice(b"{\"schemaVersion\":");
    o.extend_from_slice(d.schema_version.to_string().as_bytes());
    o.extend_from_slice(b",\"digest\":");
    write_go_string(o, &d.digest);
    o.extend_from_slice(b",\"typeCount\":");
    o.extend_from_slice(d.type_count.to_string().as_bytes());
    o.extend_from_slice(b",\"predicateCount\":");
    o.extend_from_slice(d.predicate_count.to_string().as_bytes());
    if !d.type_names.is_empty() {
        o.extend_from_slice(b",\"typeNames\":");
        write_go_strings(o, &d.type_names);
    }
    o.push(b'}');
}

fn write_go_time(o: &mut Vec<u8>, t: OffsetDateTime) {
    o.push(b'"');
    o.extend_from_slice(format_go_time(t).as_bytes());
    o.push(b'"');
}

fn push_padded(s: &mut String, v: u64, width: usize) {
    let digits = v.to_string();
    for _ in digits.len()..width {
        s.push('0');
    }
    s.push_str(&digits);
}

/// Go's `t.Format(time.RFC3339Nano)`: `2006-01-02T15:04:05.999999999Z07:00`.
fn format_go_time(t: OffsetDateTime) -> String {
    let mut s = String::with_capacity(35);
    let year = t.year();
    if year < 0 {
        s.push('-');
    }
    push_padded(&mut s, u64::from(year.unsigned_abs()), 4);
    s.push('-');
    push_padded(&mut s, u64::from(u8::from(t.month())), 2);
    s.push('-');
    push_padded(&mut s, u64::from(t.day()), 2);
    s.push('T');
    push_padded(&mut s, u64::from(t.hour()), 2);
    s.push(':');
    push_padded(&mut s, u64::from(t.minute()), 2);
    s.push(':');
    push_padded(&mut s, u64::from(t.second()), 2);
    let ns = t.nanosecond();
    if ns != 0 {
        let mut frac = String::with_capacity(9);
        push_padded(&mut frac, u64::from(ns), 9);
        s.push('.');
        s.push_str(frac.trim_end_matches('0'));
    }
    let offset = t.offset().whole_seconds();
    if offset == 0 {
        s.push('Z');
    } else {
        // Go: zone = offset/60 (truncating), sign from zone, then hh:mm.
        let mut zone = offset / 60;
        if zone < 0 {
            s.push('-');
            zone = -zone;
        } else {
            s.push('+');
        }
        let zone = u64::from(zone.unsigned_abs());
        push_padded(&mut s, zone / 60, 2);
        s.push(':');
        push_padded(&mut s, zone % 60, 2);
    }
    s
}

/// Whether Go's `Time.MarshalJSON` can encode `t`.
fn go_encodable(t: OffsetDateTime) -> bool {
    (0..=9999).contains(&t.year()) && t.offset().whole_hours().unsigned_abs() < 24
}

/// Go's strict RFC 3339 parse of a JSON time (`time.Time.UnmarshalJSON`).
fn parse_go_time(s: &str) -> Option<OffsetDateTime> {
    let b = s.as_bytes();
    if b.len() < 19
        || b[4] != b'-'
        || b[7] != b'-'
        || b[10] != b'T'
        || b[13] != b':'
        || b[16] != b':'
    {
        return None;
    }
    let num = |range: std::ops::Range<usize>, min: u32, max: u32| -> Option<u32> {
        let mut v: u32 = 0;
        for &c in b.get(range)? {
            if !c.is_ascii_digit() {
                return None;
            }
            v = v * 10 + u32::from(c - b'0');
        }
        (min..=max).contains(&v).then_some(v)
    };
    let year = num(0..4, 0, 9999)?;
    let month = num(5..7, 1, 12)?;
    let day = num(8..10, 1, 31)?;
    let hour = num(11..13, 0, 23)?;
    let minute = num(14..16, 0, 59)?;
    let second = num(17..19, 0, 59)?;
    let mut rest = &b[19..];
    let mut nanos: u32 = 0;
    if rest.len() >= 2 && rest[0] == b'.' && rest[1].is_ascii_digit() {
        let n = 1 + rest[1..].iter().take_while(|c| c.is_ascii_digit()).count();
        // Go keeps nine digits and drops the rest.
        for k in 0..9 {
            let d = rest
                .get(1 + k)
                .filter(|_| 1 + k < n)
                .map_or(0, |d| d - b'0');
            nanos = nanos * 10 + u32::from(d);
        }
        rest = &rest[n..];
    }
    let offset = if rest == b"Z" {
        UtcOffset::UTC
    } else {
        if rest.len() != 6 || !(rest[0] == b'+' || rest[0] == b'-') || rest[3] != b':' {
            return None;
        }
        let two = |i: usize, max: u8| -> Option<i8> {
            let (h, l) = (rest[i], rest[i + 1]);
            if !h.is_ascii_digit() || !l.is_ascii_digit() {
                return None;
            }
            let v = (h - b'0') * 10 + (l - b'0');
            (v <= max).then_some(v as i8)
        };
        let (hh, mm) = (two(1, 23)?, two(4, 59)?);
        let sign = if rest[0] == b'-' { -1 } else { 1 };
        UtcOffset::from_hms(sign * hh, sign * mm, 0).ok()?
    };
    let date = Date::from_calendar_date(
        i32::try_from(year).ok()?,
        Month::try_from(u8::try_from(month).ok()?).ok()?,
        u8::try_from(day).ok()?,
    )
    .ok()?;
    let time = Time::from_hms_nano(
        u8::try_from(hour).ok()?,
        u8::try_from(minute).ok()?,
        u8::try_from(second).ok()?,
        nanos,
    )
    .ok()?;
    Some(PrimitiveDateTime::new(date, time).assume_offset(offset))
}

/// Go's `[]byte` decoding: `\r` and `\n` are ignored, padding is required.
fn go_base64_decode(s: &str) -> Option<Vec<u8>> {
    if s.contains(['\r', '\n']) {
        let cleaned: String = s.chars().filter(|c| !matches!(c, '\r' | '\n')).collect();
        GO_BASE64.decode(cleaned).ok()
    } else {
        GO_BASE64.decode(s).ok()
    }
}

/// Go's `json.Compact` with HTML escaping, as `json.Marshal` applies it to a
/// `json.RawMessage`: whitespace outside strings is removed; inside strings `<` `>` `&`
/// U+2028 U+2029 are escaped and everything else, existing escapes included, is kept.
fn go_compact(src: &str) -> String {
    let mut out = String::with_capacity(src.len());
    let mut in_string = false;
    let mut escaped = false;
    for c in src.chars() {
        if !in_string {
            match c {
                ' ' | '\t' | '\n' | '\r' => {}
                '"' => {
                    in_string = true;
                    out.push(c);
                }
                _ => out.push(c),
            }
            continue;
        }
        if escaped {
            escaped = false;
            out.push(c);
            continue;
        }
        match c {
            '\\' => {
                escaped = true;
                out.push(c);
            }
            '"' => {
                in_string = false;
                out.push(c);
            }
            '<' => out.push_str("\\u003c"),
            '>' => out.push_str("\\u003e"),
            '&' => out.push_str("\\u0026"),
            '\u{2028}' => out.push_str("\\u2028"),
            '\u{2029}' => out.push_str("\\u2029"),
            _ => out.push(c),
        }
    }
    out
}

/// The raw text of the value under `key` in the top-level object of `doc`, a JSON document
/// that has already been validated. `None` when the key is absent or the scan goes wrong.
fn top_level_value<'a>(doc: &'a [u8], key: &str) -> Option<&'a [u8]> {
    let mut s = Scan { b: doc, i: 0 };
    s.ws();
    s.eat(b'{')?;
    s.ws();
    if s.eat(b'}').is_some() {
        return None;
    }
    loop {
        s.ws();
        let k = s.string()?;
        s.ws();
        s.eat(b':')?;
        s.ws();
        let start = s.i;
        s.skip_value()?;
        if k == key {
            return doc.get(start..s.i);
        }
        s.ws();
        s.eat(b',')?;
    }
}

/// A cursor over validated JSON bytes.
struct Scan<'a> {
    b: &'a [u8],
    i: usize,
}

impl Scan<'_> {
    fn peek(&self) -> Option<u8> {
        self.b.get(self.i).copied()
    }

    fn ws(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t' | b'\n' | b'\r')) {
            self.i += 1;
        }
    }

    fn eat(&mut self, c: u8) -> Option<()> {
        (self.peek() == Some(c)).then(|| self.i += 1)
    }

    fn hex4(&mut self) -> Option<u32> {
        let h = self.b.get(self.i..self.i + 4)?;
        let v = u32::from_str_radix(std::str::from_utf8(h).ok()?, 16).ok()?;
        self.i += 4;
        Some(v)
    }

    /// Decodes the string at the cursor.
    fn string(&mut self) -> Option<String> {
        self.eat(b'"')?;
        let mut out: Vec<u8> = Vec::new();
        loop {
            let c = self.peek()?;
            self.i += 1;
            match c {
                b'"' => return String::from_utf8(out).ok(),
                b'\\' => {
                    let e = self.peek()?;
                    self.i += 1;
                    let ch = match e {
                        b'"' => '"',
                        b'\\' => '\\',
                        b'/' => '/',
                        b'b' => '\u{8}',
                        b'f' => '\u{c}',
                        b'n' => '\n',
                        b'r' => '\r',
                        b't' => '\t',
                        b'u' => {
                            let hi = self.hex4()?;
                            let cp = if (0xD800..0xDC00).contains(&hi)
                                && self.b.get(self.i..self.i + 2) == Some(b"\\u")
                            {
                                let save = self.i;
                                self.i += 2;
                                match self.hex4()? {
                                    lo @ 0xDC00..0xE000 => {
                                        0x10000 + ((hi - 0xD800) << 10) + (lo - 0xDC00)
                                    }
                                    _ => {
                                        self.i = save;
                                        0xFFFD
                                    }
                                }
                            } else {
                                hi
                            };
                            char::from_u32(cp).unwrap_or('\u{FFFD}')
                        }
                        _ => return None,
                    };
                    let mut buf = [0u8; 4];
                    out.extend_from_slice(ch.encode_utf8(&mut buf).as_bytes());
                }
                _ => out.push(c),
            }
        }
    }

    fn skip_string(&mut self) -> Option<()> {
        self.eat(b'"')?;
        loop {
            match self.peek()? {
                b'\\' => self.i += 2,
                b'"' => {
                    self.i += 1;
                    return Some(());
                }
                _ => self.i += 1,
            }
        }
    }

    fn skip_value(&mut self) -> Option<()> {
        match self.peek()? {
            b'"' => self.skip_string(),
            b'{' | b'[' => {
                let mut depth: usize = 0;
                loop {
                    match self.peek()? {
                        b'"' => {
                            self.skip_string()?;
                            continue;
                        }
                        b'{' | b'[' => depth += 1,
                        b'}' | b']' => {
                            depth = depth.checked_sub(1)?;
                            if depth == 0 {
                                self.i += 1;
                                return Some(());
                            }
                        }
                        _ => {}
                    }
                    self.i += 1;
                }
            }
            _ => {
                let start = self.i;
                while let Some(c) = self.peek() {
                    if matches!(c, b',' | b'}' | b']' | b' ' | b'\t' | b'\n' | b'\r') {
                        break;
                    }
                    self.i += 1;
                }
                (self.i > start).then_some(())
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Acceptance
// ---------------------------------------------------------------------------------------------

/// Limits applied to received cards (`p2p.discovery.*`, `p2p.zkp.maxCredentialAge`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CardPolicy {
    /// Largest card accepted, in bytes (64 KiB).
    pub max_card_bytes: usize,
    /// How far a card's timestamp may be ahead of the local clock (30 s).
    pub max_future: Duration,
    /// Cards older than this are dropped on receipt and expired from the store
    /// (`p2p.discovery.cardTtl`, 5 min).
    pub card_ttl: Duration,
    /// Which credentials are kept: trusted issuers (`p2p.zkp.trustedIssuers`) and the maximum
    /// age (`p2p.zkp.maxCredentialAge`, 24 h).
    pub credentials: CredentialPolicy,
    /// Drop cards without a verifiable signature (`p2p.discovery.requireSignedCards`, false).
    pub require_signed: bool,
    /// Most cards kept (`p2p.discovery.maxKnownPeers`, 1000). At least one is always kept.
    pub max_known_peers: usize,
}

impl Default for CardPolicy {
    fn default() -> Self {
        Self {
            max_card_bytes: DEFAULT_MAX_CARD_BYTES,
            max_future: Duration::from_secs(30),
            card_ttl: Duration::from_secs(5 * 60),
            credentials: CredentialPolicy::default(),
            require_signed: false,
            max_known_peers: 1000,
        }
    }
}

/// Why a received card was dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Rejection {
    /// Larger than [`CardPolicy::max_card_bytes`].
    TooLarge,
    /// Not valid card JSON.
    NotJson,
    /// The named field is over its byte limit (`name` 256, `description` 4096, each of
    /// `capabilities` 128).
    FieldTooLong(&'static str),
    /// The named list has too many entries (`capabilities` 64, `multiaddrs` 32,
    /// `zkCredentials` 16).
    TooMany(&'static str),
    /// No DID.
    EmptyDid,
    /// The DID is not a canonical `did:lango:` identifier.
    InvalidDid,
    /// The DID is revoked.
    Revoked,
    /// `peerId` is not the message's origin.
    OriginMismatch,
    /// The timestamp is too far in the future.
    FromFuture,
    /// The timestamp is older than the card TTL.
    Stale,
    /// A signature is present and does not verify (or its algorithm is unsupported).
    BadSignature,
    /// No signature while signed cards are required.
    Unsigned,
    /// A card at least as new is already stored for the DID.
    NotNewer,
}

impl Rejection {
    /// Stable snake_case label, used in logs and counters.
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::TooLarge => "too_large",
            Self::NotJson => "not_json",
            Self::FieldTooLong(_) => "field_too_long",
            Self::TooMany(_) => "too_many",
            Self::EmptyDid => "empty_did",
            Self::InvalidDid => "invalid_did",
            Self::Revoked => "revoked",
            Self::OriginMismatch => "origin_mismatch",
            Self::FromFuture => "from_future",
            Self::Stale => "stale",
            Self::BadSignature => "bad_signature",
            Self::Unsigned => "unsigned",
            Self::NotNewer => "not_newer",
        }
    }
}

impl fmt::Display for Rejection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::TooLarge => f.write_str("the card exceeds the size limit"),
            Self::NotJson => f.write_str("the card is not valid card JSON"),
            Self::FieldTooLong(field) => write!(f, "the card's {field} exceeds its size limit"),
            Self::TooMany(field) => write!(f, "the card's {field} has too many entries"),
            Self::EmptyDid => f.write_str("the card has no DID"),
            Self::InvalidDid => f.write_str("the card's DID is not a canonical did:lango DID"),
            Self::Revoked => f.write_str("the card's DID is revoked"),
            Self::OriginMismatch => {
                f.write_str("the card's peer ID is not the peer that published it")
            }
            Self::FromFuture => f.write_str("the card's timestamp is too far in the future"),
            Self::Stale => f.write_str("the card's timestamp is older than the card TTL"),
            Self::BadSignature => f.write_str("the card's signature is invalid"),
            Self::Unsigned => f.write_str("the card is unsigned and signed cards are required"),
            Self::NotNewer => f.write_str("the card is not newer than the one already stored"),
        }
    }
}

impl std::error::Error for Rejection {}

/// A card kept by the [`CardStore`].
#[derive(Debug, Clone, PartialEq)]
pub struct StoredCard {
    /// The card, with every credential that failed its check removed.
    pub card: AgentCard,
    /// Whether the card as received carried a valid signature.
    pub verified: bool,
    /// When it was accepted (the `now` passed to [`CardStore::accept`]).
    pub received_at: OffsetDateTime,
}

/// The known agent cards, keyed by DID, with the acceptance rules of §2.4.4.
pub struct CardStore {
    policy: CardPolicy,
    cards: HashMap<String, StoredCard>,
    /// `(timestamp as Unix nanoseconds, DID)` of every stored card, oldest first.
    by_age: BTreeSet<(i128, String)>,
    rejections: BTreeMap<&'static str, u64>,
    credentials_dropped: BTreeMap<&'static str, u64>,
    accepted: u64,
}

impl fmt::Debug for CardStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CardStore")
            .field("policy", &self.policy)
            .field("cards", &self.cards.len())
            .field("rejections", &self.rejections)
            .field("accepted", &self.accepted)
            .finish()
    }
}

impl CardStore {
    /// An empty store.
    pub fn new(policy: CardPolicy) -> Self {
        Self {
            policy,
            cards: HashMap::new(),
            by_age: BTreeSet::new(),
            rejections: BTreeMap::new(),
            credentials_dropped: BTreeMap::new(),
            accepted: 0,
        }
    }

    /// The policy in force.
    pub fn policy(&self) -> &CardPolicy {
        &self.policy
    }

    /// Applies the acceptance rules (module documentation) to the gossip message payload
    /// `raw` whose signed author is `origin_peer_id`, and stores the card if it passes.
    pub fn accept(
        &mut self,
        raw: &[u8],
        origin_peer_id: &str,
        now: OffsetDateTime,
        is_revoked: &dyn Fn(&str) -> bool,
    ) -> Result<&StoredCard, Rejection> {
        match self.check(raw, origin_peer_id, now, is_revoked) {
            Ok(stored) => {
                self.accepted = self.accepted.saturating_add(1);
                Ok(self.insert(stored))
            }
            Err(r) => {
                let n = self.rejections.entry(r.as_str()).or_insert(0);
                *n = n.saturating_add(1);
                Err(r)
            }
        }
    }

    /// Every rule but storage; returns the card to store.
    fn check(
        &mut self,
        raw: &[u8],
        origin_peer_id: &str,
        now: OffsetDateTime,
        is_revoked: &dyn Fn(&str) -> bool,
    ) -> Result<StoredCard, Rejection> {
        if raw.len() > self.policy.max_card_bytes {
            return Err(Rejection::TooLarge);
        }
        let mut card = AgentCard::from_wire(raw).map_err(|e| {
            tracing::debug!(error = %e, "agent card is not valid JSON");
            Rejection::NotJson
        })?;
        card.check_bounds()?;
        if card.did.is_empty() {
            return Err(Rejection::EmptyDid);
        }
        match Did::parse(&card.did) {
            Ok(d) if d.as_str() == card.did => {}
            _ => return Err(Rejection::InvalidDid),
        }
        if is_revoked(&card.did) {
            self.remove(&card.did);
            return Err(Rejection::Revoked);
        }
        if card.peer_id != origin_peer_id {
            return Err(Rejection::OriginMismatch);
        }
        let future_limit = add(now, self.policy.max_future);
        if future_limit.is_some_and(|limit| card.timestamp > limit) {
            return Err(Rejection::FromFuture);
        }
        if sub(now, self.policy.card_ttl).is_some_and(|cutoff| card.timestamp < cutoff) {
            return Err(Rejection::Stale);
        }
        let verified = match card.verify_signature() {
            SignatureCheck::Valid => true,
            SignatureCheck::Invalid(reason) => {
                tracing::debug!(did = %card.did, reason = %reason, "agent card signature invalid");
                return Err(Rejection::BadSignature);
            }
            SignatureCheck::Unsigned if self.policy.require_signed => {
                return Err(Rejection::Unsigned);
            }
            SignatureCheck::Unsigned => false,
        };
        if let Some(existing) = self.cards.get(&card.did)
            && card.timestamp <= existing.card.timestamp
        {
            return Err(Rejection::NotNewer);
        }
        card.zk_credentials = self.checked_credentials(&card, now);
        Ok(StoredCard {
            card,
            verified,
            received_at: now,
        })
    }

    /// The credentials to keep (those passing [`crate::credential::check`]); the others are
    /// counted by reason.
    fn checked_credentials(&mut self, card: &AgentCard, now: OffsetDateTime) -> Vec<ZkCredential> {
        let mut kept = Vec::with_capacity(card.zk_credentials.len());
        for cred in &card.zk_credentials {
            match crate::credential::check(cred, &card.did, now, &self.policy.credentials) {
                Ok(()) => kept.push(cred.clone()),
                Err(e) => {
                    tracing::debug!(did = %card.did, capability = %cred.capability_id,
                        reason = e.as_str(), "capability credential dropped");
                    let n = self.credentials_dropped.entry(e.as_str()).or_insert(0);
                    *n = n.saturating_add(1);
                }
            }
        }
        kept
    }

    /// Stores `stored`, replacing the DID's card or evicting the oldest card when full.
    fn insert(&mut self, stored: StoredCard) -> &StoredCard {
        let did = stored.card.did.clone();
        if let Some(old) = self.cards.get(&did) {
            self.by_age.remove(&age_key(&old.card));
        } else if self.cards.len() >= self.policy.max_known_peers
            && let Some((_, oldest)) = self.by_age.pop_first()
        {
            self.cards.remove(&oldest);
            tracing::debug!(evicted = %oldest, "card store full; evicted the oldest card");
        }
        self.by_age.insert(age_key(&stored.card));
        match self.cards.entry(did) {
            Entry::Occupied(mut o) => {
                o.insert(stored);
                o.into_mut()
            }
            Entry::Vacant(v) => v.insert(stored),
        }
    }

    /// Deletes the card of `did`; whether there was one.
    pub fn remove(&mut self, did: &str) -> bool {
        match self.cards.remove(did) {
            Some(old) => {
                self.by_age.remove(&age_key(&old.card));
                true
            }
            None => false,
        }
    }

    /// Drops cards whose timestamp is older than the card TTL; how many.
    pub fn expire(&mut self, now: OffsetDateTime) -> usize {
        let Some(cutoff) = sub(now, self.policy.card_ttl) else {
            return 0;
        };
        let cutoff = cutoff.unix_timestamp_nanos();
        let mut n = 0;
        while let Some((ts, _)) = self.by_age.first()
            && *ts < cutoff
        {
            if let Some((_, did)) = self.by_age.pop_first() {
                self.cards.remove(&did);
                n += 1;
            }
        }
        n
    }

    /// The card stored for `did`.
    pub fn get(&self, did: &str) -> Option<&StoredCard> {
        self.cards.get(did)
    }

    /// Stored cards, only those announcing `capability` when given, sorted by name then DID.
    pub fn list(&self, capability: Option<&str>) -> Vec<&StoredCard> {
        let mut out: Vec<&StoredCard> = self
            .cards
            .values()
            .filter(|c| capability.is_none_or(|cap| c.card.has_capability(cap)))
            .collect();
        out.sort_by(|a, b| {
            (a.card.name.as_str(), a.card.did.as_str())
                .cmp(&(b.card.name.as_str(), b.card.did.as_str()))
        });
        out
    }

    /// Number of stored cards.
    pub fn len(&self) -> usize {
        self.cards.len()
    }

    /// Whether no card is stored.
    pub fn is_empty(&self) -> bool {
        self.cards.is_empty()
    }

    /// Rejected cards since creation, by [`Rejection::as_str`] label.
    pub fn rejections(&self) -> BTreeMap<&'static str, u64> {
        self.rejections.clone()
    }

    /// Credentials removed from received cards, by [`crate::credential::CredentialError`]
    /// label.
    pub fn credentials_dropped(&self) -> BTreeMap<&'static str, u64> {
        self.credentials_dropped.clone()
    }

    /// Cards accepted since creation (new and replacing).
    pub fn accepted_total(&self) -> u64 {
        self.accepted
    }
}

fn age_key(card: &AgentCard) -> (i128, String) {
    (card.timestamp.unix_timestamp_nanos(), card.did.clone())
}

/// `t + d`, `None` past the representable range.
fn add(t: OffsetDateTime, d: Duration) -> Option<OffsetDateTime> {
    t.checked_add(time::Duration::try_from(d).ok()?)
}

/// `t - d`, `None` before the representable range.
fn sub(t: OffsetDateTime, d: Duration) -> Option<OffsetDateTime> {
    t.checked_sub(time::Duration::try_from(d).ok()?)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use time::macros::datetime;

    use super::*;

    /// 1 700 000 000: 2023-11-14T22:13:20Z.
    const NOW: OffsetDateTime = datetime!(2023-11-14 22:13:20 UTC);
    const DID1: &str =
        "did:lango:0279be667ef9dcbbac55a06295ce870b07029bfcdb2dce28d959f2815b16f81798";
    const PEER: &str = "12D3KooWEyoppNCUx8Yx66oV9fJnriXwCcXwDDUA2kj6vnc6iDEp";

    fn key(n: u8) -> WalletKey {
        let mut b = [0u8; 32];
        b[31] = n;
        b[0] = 0x10;
        WalletKey::from_bytes(&b).unwrap()
    }

    fn secs(n: u64) -> Duration {
        Duration::from_secs(n)
    }

    /// A reference card written by hand in the exact form Go's `json.Marshal` produces for
    /// the HEAD `GossipCard`, with every field set.
    fn head_fixture() -> String {
        [
            r#"{"name":"research \u003cagent\u003e \u0026 co","#,
            r#""description":"Finds papers\nand summarises them — fast","#,
            r#""did":"did:lango:0279be667ef9dcbbac55a06295ce870b07029bfcdb2dce28d959f2815b16f81798","#,
            r#""multiaddrs":["/ip4/127.0.0.1/tcp/9000","/ip4/127.0.0.1/udp/9000/quic-v1"],"#,
            r#""capabilities":["search","summarise"],"#,
            r#""pricing":{"currency":"USDC","perQuery":"0.01","perMinute":"0.10","toolPrices":{"search":"0.02","web_fetch":"0.05"}},"#,
            r#""zkCredentials":[{"capabilityId":"search","proof":"AQIDBA==","issuedAt":"2023-11-14T22:00:00Z","expiresAt":"2023-11-15T07:00:00.5+09:00"}],"#,
            r#""ontologyDigest":{"schemaVersion":1,"digest":"9f86d081884c7d65","typeCount":3,"predicateCount":5,"typeNames":["Paper","Author","Venue"]},"#,
            r#""peerId":"12D3KooWEyoppNCUx8Yx66oV9fJnriXwCcXwDDUA2kj6vnc6iDEp","#,
            r#""timestamp":"2023-11-14T22:13:20.123456789Z","#,
            r#""bundle":{"version":1,"signing_key":{"algorithm":"ed25519","public_key":"ERERERERERERERERERERERERERERERERERERERERERE="},"legacy_did":"did:lango:x","note":"a\u003cb"},"#,
            r#""signature":"AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8gISIjJCUmJygpKissLS4vMDEyMzQ1Njc4OTo7PD0+P0A=","#,
            r#""signatureAlgorithm":"secp256k1-keccak256","#,
            r#""pqSignerPublicKey":"cHEtcHVibGlj","#,
            r#""pqSignature":"cHEtc2ln","#,
            r#""pqSignatureAlgorithm":"mldsa65"}"#,
        ]
        .concat()
    }

    /// A card as the reference (`2856d8a9`) publishes it: no HEAD fields, local time zone.
    const REFERENCE_FIXTURE: &str = r#"{"name":"lango","description":"","did":"did:lango:0279be667ef9dcbbac55a06295ce870b07029bfcdb2dce28d959f2815b16f81798","multiaddrs":["/ip4/10.0.0.5/tcp/9000"],"pricing":{"currency":"USDC","perQuery":"0.5","perMinute":"","toolPrices":null},"peerId":"12D3KooWEyoppNCUx8Yx66oV9fJnriXwCcXwDDUA2kj6vnc6iDEp","timestamp":"2024-03-01T07:00:00.05-05:00"}"#;

    // --- T-F1: wire form -----------------------------------------------------------------

    #[test]
    fn tf1_head_fixture_round_trips_byte_identically() {
        let fixture = head_fixture();
        let card = AgentCard::from_wire(fixture.as_bytes()).unwrap();
        assert_eq!(String::from_utf8(card.to_wire()).unwrap(), fixture);
    }

    #[test]
    fn tf1_head_fixture_decodes_every_field() {
        let card = AgentCard::from_wire(head_fixture().as_bytes()).unwrap();
        assert_eq!(card.name, "research <agent> & co");
        assert_eq!(card.description, "Finds papers\nand summarises them — fast");
        assert_eq!(card.did, DID1);
        assert_eq!(
            card.multiaddrs,
            ["/ip4/127.0.0.1/tcp/9000", "/ip4/127.0.0.1/udp/9000/quic-v1"]
        );
        assert_eq!(card.capabilities, ["search", "summarise"]);
        let p = card.pricing.as_ref().unwrap();
        assert_eq!(
            (
                p.currency.as_str(),
                p.per_query.as_str(),
                p.per_minute.as_str()
            ),
            ("USDC", "0.01", "0.10")
        );
        let tp = p.tool_prices.as_ref().unwrap();
        assert_eq!(tp["search"], "0.02");
        assert_eq!(tp["web_fetch"], "0.05");
        let c = &card.zk_credentials[0];
        assert_eq!(c.capability_id, "search");
        assert_eq!(c.proof, [1, 2, 3, 4]);
        assert_eq!(c.issued_at, datetime!(2023-11-14 22:00:00 UTC));
        assert_eq!(c.expires_at, datetime!(2023-11-14 22:00:00.5 UTC));
        assert_eq!(c.expires_at.offset().whole_hours(), 9);
        let d = card.ontology_digest.as_ref().unwrap();
        assert_eq!(
            (d.schema_version, d.type_count, d.predicate_count),
            (1, 3, 5)
        );
        assert_eq!(d.type_names, ["Paper", "Author", "Venue"]);
        assert_eq!(card.peer_id, PEER);
        assert_eq!(card.timestamp, datetime!(2023-11-14 22:13:20.123456789 UTC));
        assert!(
            card.bundle
                .as_ref()
                .unwrap()
                .as_str()
                .starts_with(r#"{"version":1,"#)
        );
        assert_eq!(card.signature, (0u8..65).collect::<Vec<_>>());
        assert_eq!(card.signature_algorithm, SIGNATURE_ALGORITHM);
        assert_eq!(card.pq_signer_public_key, b"pq-public");
        assert_eq!(card.pq_signature, b"pq-sig");
        assert_eq!(card.pq_signature_algorithm, "mldsa65");
    }

    #[test]
    fn tf1_reference_fixture_round_trips_and_keeps_its_offset() {
        let card = AgentCard::from_wire(REFERENCE_FIXTURE.as_bytes()).unwrap();
        assert_eq!(card.timestamp, datetime!(2024-03-01 12:00:00.05 UTC));
        assert_eq!(card.pricing.as_ref().unwrap().tool_prices, None);
        assert!(card.signature.is_empty() && card.bundle.is_none());
        assert_eq!(
            String::from_utf8(card.to_wire()).unwrap(),
            REFERENCE_FIXTURE
        );
        // Unsigned: the payload is the whole card.
        assert_eq!(card.signing_payload(), card.to_wire());
        assert_eq!(card.verify_signature(), SignatureCheck::Unsigned);
    }

    #[test]
    fn tf1_empty_fields_are_omitted_as_go_omits_them() {
        let card = AgentCard::local("", "", "", vec![], vec![], GO_ZERO_TIME);
        assert_eq!(
            String::from_utf8(card.to_wire()).unwrap(),
            r#"{"name":"","description":"","peerId":"","timestamp":"0001-01-01T00:00:00Z"}"#
        );
        // An empty pricing map is `{}`, a missing one `null`; an empty proof is `null`.
        let mut card = AgentCard::local("a", DID1, PEER, vec![], vec![], NOW);
        card.pricing = Some(Pricing {
            tool_prices: Some(BTreeMap::new()),
            ..Pricing::default()
        });
        card.zk_credentials = vec![ZkCredential::zero()];
        card.ontology_digest = Some(OntologyDigest::default());
        let wire = String::from_utf8(card.to_wire()).unwrap();
        assert!(
            wire.contains(
                r#""pricing":{"currency":"","perQuery":"","perMinute":"","toolPrices":{}}"#
            )
        );
        assert!(wire.contains(
            r#""zkCredentials":[{"capabilityId":"","proof":null,"issuedAt":"0001-01-01T00:00:00Z","expiresAt":"0001-01-01T00:00:00Z"}]"#
        ));
        assert!(wire.contains(
            r#""ontologyDigest":{"schemaVersion":0,"digest":"","typeCount":0,"predicateCount":0},"peerId""#
        ));
    }

    #[test]
    fn tf1_loose_input_reencodes_in_go_form() {
        // Whitespace, nulls, key order, base64 with a line break and non-zero trailing
        // bits, an unescaped '<', a bundle with whitespace and escapes, unknown keys.
        let loose = concat!(
            "{ \"timestamp\" : \"2023-11-14T22:13:20.000Z\", \"peerId\":\"p\",\n",
            "  \"name\":\"a<b\", \"description\":null, \"did\":\"",
            "did:lango:0279be667ef9dcbbac55a06295ce870b07029bfcdb2dce28d959f2815b16f81798\",",
            "  \"multiaddrs\":null, \"capabilities\":[\"x\",null], \"unknown\":{\"a\":[1,2]},",
            "  \"zkCredentials\":[{\"capabilityId\":\"c\",\"proof\":\"AQID\\nBB==\"}],",
            "  \"bundle\" : { \"k\" : [ 1.0 , \"\\u00e9 & \\/\" ], \"a\" : 1e3 },",
            "  \"signature\":\"\", \"pqSignature\":null }"
        );
        let card = AgentCard::from_wire(loose.as_bytes()).unwrap();
        assert_eq!(card.capabilities, ["x", ""]);
        assert_eq!(card.zk_credentials[0].proof, [1, 2, 3, 4]);
        assert_eq!(card.zk_credentials[0].issued_at, GO_ZERO_TIME);
        assert_eq!(
            String::from_utf8(card.to_wire()).unwrap(),
            concat!(
                r#"{"name":"a\u003cb","description":"","#,
                r#""did":"did:lango:0279be667ef9dcbbac55a06295ce870b07029bfcdb2dce28d959f2815b16f81798","#,
                r#""capabilities":["x",""],"#,
                r#""zkCredentials":[{"capabilityId":"c","proof":"AQIDBA==","issuedAt":"0001-01-01T00:00:00Z","expiresAt":"0001-01-01T00:00:00Z"}],"#,
                r#""peerId":"p","timestamp":"2023-11-14T22:13:20Z","#,
                r#""bundle":{"k":[1.0,"\u00e9 \u0026 \/"],"a":1e3}}"#
            )
        );
        // `"bundle": null` is kept, as a json.RawMessage keeps it.
        let card = AgentCard::from_wire(br#"{"name":"n","peerId":"p","bundle":null}"#).unwrap();
        assert_eq!(card.bundle.as_ref().unwrap().as_str(), "null");
        assert!(
            String::from_utf8(card.to_wire())
                .unwrap()
                .ends_with(r#","bundle":null}"#)
        );
    }

    #[test]
    fn tf1_malformed_cards_do_not_decode() {
        for bad in [
            &b"{"[..],
            b"[]",
            br#"["n","d"]"#,
            b"null",
            br#"{"name":5}"#,
            br#"{"name":"a","name":"b"}"#,
            br#"{"timestamp":"2023-11-14 22:13:20Z"}"#,
            br#"{"signature":"AQ"}"#,
            br#"{"signature":"AQ=x"}"#,
            br#"{"pricing":["USDC","1","2",null]}"#,
            br#"{"zkCredentials":[["c"]]}"#,
            br#"{"ontologyDigest":[1]}"#,
            br#"{"zkCredentials":[{"proof":"***"}]}"#,
            br#"{"ontologyDigest":{"typeCount":1.5}}"#,
            br#"{"name":"a"} x"#,
        ] {
            assert!(
                AgentCard::from_wire(bad).is_err(),
                "{:?} decoded",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn serde_impls_use_the_wire_names() {
        let card = AgentCard::from_wire(head_fixture().as_bytes()).unwrap();
        let v = serde_json::to_value(&card).unwrap();
        let wire: serde_json::Value = serde_json::from_slice(&card.to_wire()).unwrap();
        assert_eq!(v, wire);
        let back: AgentCard = serde_json::from_value(v).unwrap();
        let bundle = |c: &AgentCard| -> serde_json::Value {
            serde_json::from_str(c.bundle.as_ref().unwrap().as_str()).unwrap()
        };
        assert_eq!(bundle(&back), bundle(&card));
        // Without a bundle the serde path is exact.
        let mut without_bundle = card.clone();
        without_bundle.bundle = None;
        let text = serde_json::to_string(&without_bundle).unwrap();
        let back: AgentCard = serde_json::from_str(&text).unwrap();
        assert_eq!(back.to_wire(), without_bundle.to_wire());
        assert!(serde_json::from_str::<AgentCard>("[]").is_err());
    }

    // --- Go encoding primitives ----------------------------------------------------------

    fn go_string(s: &str) -> String {
        let mut o = Vec::new();
        write_go_string(&mut o, s);
        String::from_utf8(o).unwrap()
    }

    #[test]
    fn go_string_escaping() {
        for (input, want) in [
            ("plain", r#""plain""#),
            ("<script>&", r#""\u003cscript\u003e\u0026""#),
            ("\u{2028}x\u{2029}", r#""\u2028x\u2029""#),
            ("a\nb\rc\td", r#""a\nb\rc\td""#),
            ("\u{8}\u{c}", r#""\b\f""#),
            ("\u{0}\u{1}\u{1f}\u{b}", r#""\u0000\u0001\u001f\u000b""#),
            ("\"quoted\" \\ back", r#""\"quoted\" \\ back""#),
            ("/ip4/1.2.3.4", r#""/ip4/1.2.3.4""#),
            ("\u{7f}", "\"\u{7f}\""),
            ("é — 😀 中", "\"é — 😀 中\""),
        ] {
            assert_eq!(go_string(input), want, "{input:?}");
        }
    }

    #[test]
    fn go_compact_matches_json_compact() {
        assert_eq!(
            go_compact(" { \"a\" : [ 1 , 2.50 , true ] ,\n\t\"b\\\"<\" : \"x > y\u{2028}\" } "),
            r#"{"a":[1,2.50,true],"b\"\u003c":"x \u003e y\u2028"}"#
        );
        // Escapes already present are left as written.
        assert_eq!(go_compact(r#"["\u003c\n\/"]"#), r#"["\u003c\n\/"]"#);
        assert!(RawJson::new("{").is_err());
        assert!(RawJson::new("1 2").is_err());
    }

    #[test]
    fn go_time_formatting() {
        for (t, want) in [
            (datetime!(2023-11-14 22:13:20 UTC), "2023-11-14T22:13:20Z"),
            (
                datetime!(2023-11-14 22:13:20.1 UTC),
                "2023-11-14T22:13:20.1Z",
            ),
            (
                datetime!(2023-11-14 22:13:20.120 UTC),
                "2023-11-14T22:13:20.12Z",
            ),
            (
                datetime!(2023-11-14 22:13:20.000000001 UTC),
                "2023-11-14T22:13:20.000000001Z",
            ),
            (
                datetime!(2023-11-14 22:13:20.123456789 +05:30),
                "2023-11-14T22:13:20.123456789+05:30",
            ),
            (
                datetime!(2024-03-01 07:00:00 -09:45),
                "2024-03-01T07:00:00-09:45",
            ),
            (datetime!(0001-01-01 0:00 UTC), "0001-01-01T00:00:00Z"),
            (
                datetime!(2024-03-01 07:00:00 +00:00),
                "2024-03-01T07:00:00Z",
            ),
        ] {
            assert_eq!(format_go_time(t), want);
        }
    }

    #[test]
    fn rfc3339_parsing_matches_go() {
        let ok = [
            ("2023-11-14T22:13:20Z", datetime!(2023-11-14 22:13:20 UTC)),
            (
                "2023-11-14T22:13:20.5Z",
                datetime!(2023-11-14 22:13:20.5 UTC),
            ),
            (
                "2023-11-14T22:13:20.1234567891234Z",
                datetime!(2023-11-14 22:13:20.123456789 UTC),
            ),
            (
                "2023-11-15T03:43:20+05:30",
                datetime!(2023-11-14 22:13:20 UTC),
            ),
            (
                "2023-11-14T22:13:20-00:00",
                datetime!(2023-11-14 22:13:20 UTC),
            ),
            ("2024-02-29T00:00:00Z", datetime!(2024-02-29 0:00 UTC)),
            ("0000-01-01T00:00:00Z", datetime!(0000-01-01 0:00 UTC)),
        ];
        for (s, want) in ok {
            assert_eq!(parse_go_time(s), Some(want), "{s}");
        }
        // Offsets are kept, and "-00:00" becomes Z as in Go.
        assert_eq!(
            format_go_time(parse_go_time("2023-11-15T03:43:20.50+05:30").unwrap()),
            "2023-11-15T03:43:20.5+05:30"
        );
        assert_eq!(
            format_go_time(parse_go_time("2023-11-14T22:13:20-00:00").unwrap()),
            "2023-11-14T22:13:20Z"
        );
        for bad in [
            "",
            "2023-11-14",
            "2023-11-14t22:13:20Z",
            "2023-11-14T22:13:20z",
            "2023-11-14 22:13:20Z",
            "2023-11-14T22:13:20",
            "2023-11-14T22:13:20,5Z",
            "2023-11-14T22:13:20.Z",
            "2023-11-14T24:00:00Z",
            "2023-11-14T22:60:00Z",
            "2023-11-14T23:59:60Z",
            "2023-02-29T00:00:00Z",
            "2023-13-01T00:00:00Z",
            "2023-11-14T22:13:20+24:00",
            "2023-11-14T22:13:20+05:60",
            "2023-11-14T22:13:20+0530",
            "2023-11-14T22:13:20+05:30:00",
            "+2023-11-14T22:13:20Z",
            "12023-11-14T22:13:20Z",
            "2023-11-14T2:13:20Z",
        ] {
            assert_eq!(parse_go_time(bad), None, "{bad:?} parsed");
        }
    }

    #[test]
    fn missing_credential_timestamps_are_go_zero_time() {
        let card = AgentCard::from_wire(
            br#"{"name":"a","peerId":"p","zkCredentials":[{"capabilityId":"c","proof":"AQ==","issuedAt":null},null]}"#,
        )
        .unwrap();
        assert_eq!(card.timestamp, GO_ZERO_TIME);
        for c in &card.zk_credentials {
            assert_eq!((c.issued_at, c.expires_at), (GO_ZERO_TIME, GO_ZERO_TIME));
            assert!(c.is_expired(NOW));
            assert!(c.is_stale(NOW, secs(24 * 3600)));
        }
        assert_eq!(card.zk_credentials[1], ZkCredential::zero());
    }

    // --- T-F8: signatures ----------------------------------------------------------------

    fn full_card(wallet: &WalletKey, at: OffsetDateTime) -> AgentCard {
        let mut card = AgentCard::local(
            "agent",
            wallet.did().as_str(),
            PEER,
            vec!["/ip4/127.0.0.1/tcp/9000".into()],
            vec!["search".into(), "summarise".into()],
            at,
        );
        card.description = "desc <&>".into();
        card.pricing = Some(Pricing {
            currency: "USDC".into(),
            per_query: "0.01".into(),
            per_minute: "0.1".into(),
            tool_prices: Some(BTreeMap::from([("search".into(), "0.02".into())])),
        });
        card.zk_credentials = vec![ZkCredential {
            capability_id: "search".into(),
            proof: vec![9, 8, 7],
            cap_commitment: Vec::new(),
            issuer_did: String::new(),
            issuer_signature: Vec::new(),
            issued_at: at - secs(60),
            expires_at: at + secs(3600),
        }];
        card.ontology_digest = Some(OntologyDigest {
            schema_version: 1,
            digest: "abc".into(),
            type_count: 2,
            predicate_count: 3,
            type_names: vec!["T".into()],
        });
        card
    }

    #[test]
    fn tf8_sign_then_verify_is_valid() {
        let w = key(1);
        let mut card = full_card(&w, NOW);
        card.pq_signer_public_key = b"stale".to_vec();
        card.pq_signature = b"stale".to_vec();
        card.sign(&w).unwrap();
        assert_eq!(card.signature_algorithm, SIGNATURE_ALGORITHM);
        assert_eq!(card.signature.len(), 65);
        assert!(card.pq_signature.is_empty() && card.pq_signer_public_key.is_empty());
        assert_eq!(card.verify_signature(), SignatureCheck::Valid);
        // Through the wire and back.
        let back = AgentCard::from_wire(&card.to_wire()).unwrap();
        assert_eq!(back.to_wire(), card.to_wire());
        assert_eq!(back.verify_signature(), SignatureCheck::Valid);
        // The signature is sign_message over the payload, which excludes only signatures.
        let payload = card.signing_payload();
        lango_crypto::wallet::verify_message(
            &w.public_key(),
            &payload,
            &card.signature,
            LowS::Require,
        )
        .unwrap();
        let text = String::from_utf8(payload).unwrap();
        assert!(!text.contains("\"signature\":"));
        assert!(text.ends_with(r#","signatureAlgorithm":"secp256k1-keccak256"}"#));
        // An absent algorithm with a signature present is read as secp256k1 — but the
        // algorithm is covered, so removing it after signing breaks the signature.
        let mut no_alg = card.clone();
        no_alg.signature_algorithm.clear();
        assert!(matches!(
            no_alg.verify_signature(),
            SignatureCheck::Invalid(_)
        ));
        let mut signed_without_alg = card.clone();
        signed_without_alg.signature_algorithm.clear();
        signed_without_alg.signature = w
            .sign_message(&signed_without_alg.signing_payload())
            .unwrap()
            .to_bytes()
            .to_vec();
        assert_eq!(signed_without_alg.verify_signature(), SignatureCheck::Valid);
    }

    #[test]
    fn tf8_every_tampered_field_breaks_the_signature() {
        let w = key(1);
        let mut signed = full_card(&w, NOW);
        signed.sign(&w).unwrap();
        type Tamper = fn(&mut AgentCard);
        let tampers: &[(&str, Tamper)] = &[
            ("name", |c| c.name.push('x')),
            ("description", |c| c.description.clear()),
            ("did", |c| c.did = key(2).did().to_string()),
            ("multiaddrs", |c| {
                c.multiaddrs.push("/ip4/6.6.6.6/tcp/1".into())
            }),
            ("capabilities", |c| c.capabilities.reverse()),
            ("pricing", |c| c.pricing = None),
            ("pricing.perQuery", |c| {
                c.pricing.as_mut().unwrap().per_query = "0".into()
            }),
            ("toolPrices", |c| {
                c.pricing.as_mut().unwrap().tool_prices = None
            }),
            ("zkCredentials", |c| c.zk_credentials.clear()),
            ("proof", |c| c.zk_credentials[0].proof[0] ^= 1),
            ("expiresAt", |c| c.zk_credentials[0].expires_at += secs(1)),
            ("ontologyDigest", |c| {
                c.ontology_digest.as_mut().unwrap().type_count += 1
            }),
            ("peerId", |c| c.peer_id.push('x')),
            ("timestamp", |c| c.timestamp += Duration::from_nanos(1)),
            ("timestamp offset", |c| {
                c.timestamp = c.timestamp.to_offset(UtcOffset::from_hms(1, 0, 0).unwrap())
            }),
            ("bundle", |c| c.bundle = Some(RawJson::new("{}").unwrap())),
            ("signatureAlgorithm", |c| c.signature_algorithm.clear()),
            ("pqSignerPublicKey", |c| {
                c.pq_signer_public_key = b"k".to_vec()
            }),
            ("pqSignatureAlgorithm", |c| {
                c.pq_signature_algorithm = "mldsa65".into()
            }),
            ("signature", |c| c.signature[10] ^= 0x40),
        ];
        for (what, tamper) in tampers {
            let mut c = signed.clone();
            tamper(&mut c);
            assert!(
                matches!(c.verify_signature(), SignatureCheck::Invalid(_)),
                "tampered {what} still verifies"
            );
            // And through the store.
            let mut store = CardStore::new(CardPolicy::default());
            let r = store.accept(&c.to_wire(), &c.peer_id.clone(), NOW, &|_| false);
            assert_eq!(r.err(), Some(Rejection::BadSignature), "{what}");
        }
        // The PQ signature itself is not covered (it cannot be checked here).
        let mut c = signed.clone();
        c.pq_signature = b"anything".to_vec();
        assert_eq!(c.verify_signature(), SignatureCheck::Valid);
    }

    /// n − s mod the secp256k1 group order: the malleated twin of a signature.
    fn malleate(sig: &[u8]) -> Vec<u8> {
        const N: [u8; 32] = [
            0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
            0xff, 0xfe, 0xba, 0xae, 0xdc, 0xe6, 0xaf, 0x48, 0xa0, 0x3b, 0xbf, 0xd2, 0x5e, 0x8c,
            0xd0, 0x36, 0x41, 0x41,
        ];
        let mut out = sig.to_vec();
        let mut borrow = 0i16;
        for i in (0..32).rev() {
            let mut d = i16::from(N[i]) - i16::from(sig[32 + i]) - borrow;
            borrow = i16::from(d < 0);
            if d < 0 {
                d += 256;
            }
            out[32 + i] = d as u8;
        }
        out[64] ^= 1;
        out
    }

    #[test]
    fn tf8_malleated_truncated_or_foreign_signatures_are_invalid() {
        let w = key(1);
        let mut card = full_card(&w, NOW);
        card.sign(&w).unwrap();
        let mut high_s = card.clone();
        high_s.signature = malleate(&card.signature);
        assert!(matches!(
            high_s.verify_signature(),
            SignatureCheck::Invalid(r) if r.contains("high-S")
        ));
        let mut short = card.clone();
        short.signature.pop();
        assert!(matches!(
            short.verify_signature(),
            SignatureCheck::Invalid(_)
        ));
        // Signed by another key than the DID's.
        let mut foreign = card.clone();
        foreign.signature = key(2)
            .sign_message(&card.signing_payload())
            .unwrap()
            .to_bytes()
            .to_vec();
        assert!(matches!(
            foreign.verify_signature(),
            SignatureCheck::Invalid(_)
        ));
    }

    #[test]
    fn tf8_unsupported_algorithm_is_invalid() {
        let w = key(1);
        let mut card = full_card(&w, NOW);
        card.sign(&w).unwrap();
        for alg in ["ed25519", "SECP256K1-KECCAK256", "mldsa65"] {
            let mut c = card.clone();
            c.signature_algorithm = alg.into();
            match c.verify_signature() {
                SignatureCheck::Invalid(r) => {
                    assert!(r.contains("unsupported signature algorithm"), "{r}")
                }
                other => panic!("{alg}: {other:?}"),
            }
            let mut store = CardStore::new(CardPolicy::default());
            assert_eq!(
                store.accept(&c.to_wire(), PEER, NOW, &|_| false).err(),
                Some(Rejection::BadSignature)
            );
        }
    }

    #[test]
    fn tf8_pq_only_card_counts_as_unsigned() {
        let w = key(1);
        let mut card = full_card(&w, NOW);
        card.pq_signer_public_key = b"pq-public".to_vec();
        card.pq_signature = b"pq-sig".to_vec();
        card.pq_signature_algorithm = "mldsa65".into();
        assert_eq!(card.verify_signature(), SignatureCheck::Unsigned);
        let mut store = CardStore::new(CardPolicy::default());
        assert!(
            !store
                .accept(&card.to_wire(), PEER, NOW, &|_| false)
                .unwrap()
                .verified
        );
        let mut strict = CardStore::new(CardPolicy {
            require_signed: true,
            ..CardPolicy::default()
        });
        assert_eq!(
            strict.accept(&card.to_wire(), PEER, NOW, &|_| false).err(),
            Some(Rejection::Unsigned)
        );
    }

    #[test]
    fn tf8_sign_refuses_cards_peers_would_drop() {
        let w = key(1);
        let mut card = full_card(&key(2), NOW);
        assert!(matches!(card.sign(&w), Err(SignError::DidMismatch { .. })));
        assert!(card.signature.is_empty());
        let mut card = full_card(&w, NOW);
        card.bundle = Some(RawJson::new("{}").unwrap());
        assert!(matches!(card.sign(&w), Err(SignError::BundleUnsupported)));
        let mut card = full_card(&w, NOW);
        card.name = "n".repeat(MAX_NAME_BYTES + 1);
        assert!(matches!(
            card.sign(&w),
            Err(SignError::OutOfBounds(Rejection::FieldTooLong("name")))
        ));
        let mut card = full_card(&w, NOW);
        card.timestamp = Date::from_calendar_date(-1, Month::January, 1)
            .unwrap()
            .midnight()
            .assume_utc();
        assert!(matches!(
            card.sign(&w),
            Err(SignError::UnencodableTime("timestamp"))
        ));
    }

    // --- Acceptance ----------------------------------------------------------------------

    fn signed_wire(wallet: &WalletKey, at: OffsetDateTime) -> Vec<u8> {
        let mut c = AgentCard::local(
            "agent",
            wallet.did().as_str(),
            PEER,
            vec![],
            vec!["search".into()],
            at,
        );
        c.sign(wallet).unwrap();
        c.to_wire()
    }

    fn store() -> CardStore {
        CardStore::new(CardPolicy::default())
    }

    fn never(_: &str) -> bool {
        false
    }

    #[test]
    fn tf8_unsigned_is_stored_unverified_and_rejected_when_signatures_are_required() {
        let w = key(1);
        let unsigned = AgentCard::local("a", w.did().as_str(), PEER, vec![], vec![], NOW);
        let mut s = store();
        let stored = s.accept(&unsigned.to_wire(), PEER, NOW, &never).unwrap();
        assert!(!stored.verified);
        assert_eq!(stored.received_at, NOW);
        let mut s = CardStore::new(CardPolicy {
            require_signed: true,
            ..CardPolicy::default()
        });
        assert_eq!(
            s.accept(&unsigned.to_wire(), PEER, NOW, &never).err(),
            Some(Rejection::Unsigned)
        );
        assert!(
            s.accept(&signed_wire(&w, NOW), PEER, NOW, &never)
                .unwrap()
                .verified
        );
    }

    #[test]
    fn tf2_empty_invalid_and_revoked_dids() {
        let w = key(1);
        let mut s = store();
        let mut c = AgentCard::local("a", "", PEER, vec![], vec![], NOW);
        assert_eq!(
            s.accept(&c.to_wire(), PEER, NOW, &never).err(),
            Some(Rejection::EmptyDid)
        );
        let did = w.did().to_string();
        for bad in [
            did.to_uppercase().replace("DID:LANGO:", "did:lango:"),
            format!("{did}00"),
            did.replace("did:lango:", "did:other:"),
            format!("did:lango:04{}", &did[12..]),
            "did:lango:v2:abcdef".into(),
        ] {
            c.did = bad.clone();
            assert_eq!(
                s.accept(&c.to_wire(), PEER, NOW, &never).err(),
                Some(Rejection::InvalidDid),
                "{bad}"
            );
        }
        // Revoked: dropped, and the already stored card is deleted.
        s.accept(&signed_wire(&w, NOW), PEER, NOW, &never).unwrap();
        assert!(s.get(&did).is_some());
        let revoked = |d: &str| d == did;
        assert_eq!(
            s.accept(&signed_wire(&w, NOW + secs(1)), PEER, NOW, &revoked)
                .err(),
            Some(Rejection::Revoked)
        );
        assert!(s.get(&did).is_none());
        assert_eq!(s.len(), 0);
    }

    #[test]
    fn tf6_origin_must_be_the_cards_peer_id() {
        let w = key(1);
        let mut s = store();
        let other = "12D3KooWSomeoneElseXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXX";
        assert_eq!(
            s.accept(&signed_wire(&w, NOW), other, NOW, &never).err(),
            Some(Rejection::OriginMismatch)
        );
        assert!(s.is_empty());
        assert!(s.accept(&signed_wire(&w, NOW), PEER, NOW, &never).is_ok());
    }

    #[test]
    fn tf5_freshness_window() {
        let w = key(1);
        let mut s = store();
        assert_eq!(
            s.accept(&signed_wire(&w, NOW + secs(31)), PEER, NOW, &never)
                .err(),
            Some(Rejection::FromFuture)
        );
        assert_eq!(
            s.accept(&signed_wire(&w, NOW - secs(301)), PEER, NOW, &never)
                .err(),
            Some(Rejection::Stale)
        );
        // The bounds themselves are inside the window.
        assert!(
            s.accept(&signed_wire(&w, NOW - secs(300)), PEER, NOW, &never)
                .is_ok()
        );
        assert!(
            s.accept(&signed_wire(&w, NOW + secs(30)), PEER, NOW, &never)
                .is_ok()
        );
        // A card without a timestamp is Go's zero time: stale.
        let c = br#"{"name":"a","did":"DID","peerId":"PEER"}"#;
        let c = String::from_utf8_lossy(c)
            .replace("DID", w.did().as_str())
            .replace("PEER", PEER);
        assert_eq!(
            s.accept(c.as_bytes(), PEER, NOW, &never).err(),
            Some(Rejection::Stale)
        );
    }

    #[test]
    fn tf5_only_strictly_newer_cards_replace() {
        let w = key(1);
        let did = w.did().to_string();
        let mut s = store();
        s.accept(&signed_wire(&w, NOW - secs(10)), PEER, NOW, &never)
            .unwrap();
        assert_eq!(
            s.accept(&signed_wire(&w, NOW - secs(10)), PEER, NOW, &never)
                .err(),
            Some(Rejection::NotNewer)
        );
        assert_eq!(
            s.accept(&signed_wire(&w, NOW - secs(20)), PEER, NOW, &never)
                .err(),
            Some(Rejection::NotNewer)
        );
        assert_eq!(s.get(&did).unwrap().card.timestamp, NOW - secs(10));
        let newer = s.accept(
            &signed_wire(&w, NOW - Duration::from_nanos(9_999_999_999)),
            PEER,
            NOW,
            &never,
        );
        assert_eq!(
            newer.unwrap().card.timestamp,
            NOW - Duration::from_nanos(9_999_999_999)
        );
        // The same instant written with another offset is not newer.
        let mut c = AgentCard::from_wire(&signed_wire(&w, NOW)).unwrap();
        s.accept(&c.to_wire(), PEER, NOW, &never).unwrap();
        c.timestamp = c.timestamp.to_offset(UtcOffset::from_hms(2, 0, 0).unwrap());
        c.sign(&w).unwrap();
        assert_eq!(
            s.accept(&c.to_wire(), PEER, NOW, &never).err(),
            Some(Rejection::NotNewer)
        );
        assert_eq!(s.len(), 1);
        assert_eq!(s.accepted_total(), 3);
    }

    /// The issuer every credential test trusts.
    fn issuer() -> WalletKey {
        key(7)
    }

    fn trusting(issuers: &[&WalletKey]) -> CardPolicy {
        CardPolicy {
            credentials: CredentialPolicy {
                trusted_issuers: issuers.iter().map(|w| w.did().to_string()).collect(),
                ..CredentialPolicy::default()
            },
            ..CardPolicy::default()
        }
    }

    /// A credential `by` issues to `subject` for capability `id`, over a real commitment.
    fn cred_by(
        by: &WalletKey,
        subject: &WalletKey,
        id: &str,
        issued: OffsetDateTime,
        expires: OffsetDateTime,
    ) -> ZkCredential {
        use lango_zkp::{circuits, encoding};
        let identity = circuits::IdentitySecret::from_bytes(&[5; 32]).unwrap();
        let commitment = circuits::capability_commitment(
            identity.commitment(),
            encoding::capability_id(id).unwrap(),
            700,
            encoding::fe_u64(42),
        );
        crate::credential::issue(
            by,
            subject.did().as_str(),
            id,
            encoding::fe_to_bytes(&commitment),
            issued,
            expires,
        )
        .unwrap()
    }

    fn cred(id: &str, issued: OffsetDateTime, expires: OffsetDateTime) -> ZkCredential {
        cred_by(&issuer(), &key(1), id, issued, expires)
    }

    fn card_with_creds(w: &WalletKey, creds: Vec<ZkCredential>) -> Vec<u8> {
        let mut c = AgentCard::local("a", w.did().as_str(), PEER, vec![], vec![], NOW);
        c.zk_credentials = creds;
        c.sign(w).unwrap();
        c.to_wire()
    }

    fn kept_ids(stored: &StoredCard) -> Vec<&str> {
        stored
            .card
            .zk_credentials
            .iter()
            .map(|c| c.capability_id.as_str())
            .collect()
    }

    #[test]
    fn tf3_each_failing_credential_is_dropped_and_the_card_kept() {
        let w = key(1);
        let hour = secs(3600);
        let mut other_dates = cred("other-dates", NOW - hour, NOW + hour);
        other_dates.expires_at = NOW + 100 * hour;
        let mut forged_commitment = cred("forged-commitment", NOW - hour, NOW + hour);
        forged_commitment.cap_commitment[0] ^= 1;
        let mut non_canonical = cred("non-canonical", NOW - hour, NOW + hour);
        non_canonical.cap_commitment = vec![0xff; 32];
        let mut go_shaped = ZkCredential::zero();
        go_shaped.capability_id = "go".into();
        go_shaped.proof = vec![1, 2, 3];
        go_shaped.issued_at = NOW - hour;
        go_shaped.expires_at = NOW + hour;
        let raw = card_with_creds(
            &w,
            vec![
                cred("fresh", NOW - hour, NOW + hour),
                cred("edge-age", NOW - 24 * hour, NOW + hour),
                cred("edge-future", NOW + secs(30), NOW + hour),
                cred("expired", NOW - 2 * hour, NOW - secs(1)),
                cred("expires-now", NOW - hour, NOW),
                cred("stale", NOW - 24 * hour - secs(1), NOW + hour),
                cred("future", NOW + secs(31), NOW + hour),
                cred_by(&key(8), &w, "unknown-issuer", NOW - hour, NOW + hour),
                cred_by(&issuer(), &key(2), "someone-elses", NOW - hour, NOW + hour),
                other_dates,
                forged_commitment,
                non_canonical,
                go_shaped,
            ],
        );
        let mut s = CardStore::new(trusting(&[&issuer()]));
        let stored = s.accept(&raw, PEER, NOW, &never).unwrap();
        assert!(
            stored.verified,
            "the card's own signature covers the credentials as sent"
        );
        assert_eq!(kept_ids(stored), ["fresh", "edge-age", "edge-future"]);
        let dropped = s.credentials_dropped();
        let want = [
            ("expired", 2),
            ("stale", 1),
            ("from_future", 1),
            ("untrusted_issuer", 1),
            ("bad_signature", 3),
            ("malformed_commitment", 1),
            ("unverifiable", 1),
        ];
        for (label, n) in want {
            assert_eq!(dropped.get(label), Some(&n), "{label}: {dropped:?}");
        }
        assert_eq!(dropped.len(), want.len(), "{dropped:?}");
        assert!(s.rejections().is_empty(), "no card was dropped");
    }

    #[test]
    fn tf3_without_a_trusted_issuer_no_credential_is_kept() {
        let w = key(1);
        let hour = secs(3600);
        let raw = card_with_creds(&w, vec![cred("good", NOW - hour, NOW + hour)]);
        let mut s = store();
        let stored = s.accept(&raw, PEER, NOW, &never).unwrap();
        assert!(stored.verified);
        assert!(stored.card.zk_credentials.is_empty());
        assert_eq!(s.credentials_dropped().get("untrusted_issuer"), Some(&1));
        // The same card is kept with its credential by a node that trusts the issuer.
        let mut s = CardStore::new(trusting(&[&key(8), &issuer()]));
        assert_eq!(
            kept_ids(s.accept(&raw, PEER, NOW, &never).unwrap()),
            ["good"]
        );
    }

    #[test]
    fn tf3_max_credential_age_is_the_policys() {
        let w = key(1);
        let mut policy = trusting(&[&issuer()]);
        policy.credentials.max_age = secs(60);
        let mut s = CardStore::new(policy);
        let raw = card_with_creds(
            &w,
            vec![
                cred("old", NOW - secs(61), NOW + secs(3600)),
                cred("young", NOW - secs(59), NOW + secs(3600)),
            ],
        );
        let stored = s.accept(&raw, PEER, NOW, &never).unwrap();
        assert_eq!(kept_ids(stored), ["young"]);
    }

    #[test]
    fn tf3_issuer_signed_credentials_round_trip_on_the_wire() {
        let w = key(1);
        let hour = secs(3600);
        let c = cred("search", NOW - hour, NOW + hour);
        let raw = card_with_creds(&w, vec![c.clone()]);
        let text = std::str::from_utf8(&raw).unwrap();
        let at = text.find("\"zkCredentials\":[{").unwrap();
        let order: Vec<usize> = [
            "\"capabilityId\"",
            "\"capCommitment\"",
            "\"issuerDid\"",
            "\"issuerSignature\"",
            "\"issuedAt\"",
            "\"expiresAt\"",
        ]
        .iter()
        .map(|k| text[at..].find(k).unwrap())
        .collect();
        assert!(order.windows(2).all(|p| p[0] < p[1]), "{text}");
        assert!(!text[at..].contains("\"proof\""), "{text}");
        let back = AgentCard::from_wire(&raw).unwrap();
        assert_eq!(back.zk_credentials, [c]);
        assert_eq!(back.to_wire(), raw);
        assert_eq!(back.verify_signature(), SignatureCheck::Valid);
    }

    #[test]
    fn tf7_size_limit_applies_before_parsing() {
        let w = key(1);
        let mut s = store();
        let mut raw = signed_wire(&w, NOW);
        raw.resize(DEFAULT_MAX_CARD_BYTES, b' ');
        assert!(s.accept(&raw, PEER, NOW, &never).is_ok(), "exactly 64 KiB");
        raw.push(b' ');
        assert_eq!(
            s.accept(&raw, PEER, NOW, &never).err(),
            Some(Rejection::TooLarge)
        );
        let junk = vec![b'['; DEFAULT_MAX_CARD_BYTES + 1];
        assert_eq!(
            s.accept(&junk, PEER, NOW, &never).err(),
            Some(Rejection::TooLarge)
        );
        assert_eq!(
            s.accept(&junk[..1000], PEER, NOW, &never).err(),
            Some(Rejection::NotJson)
        );
    }

    #[test]
    fn tf7_field_bounds() {
        let w = key(1);
        let base = AgentCard::local("a", w.did().as_str(), PEER, vec![], vec![], NOW);
        type Edit = fn(&mut AgentCard);
        let cases: &[(Edit, Edit, Rejection)] = &[
            (
                |c| c.name = "n".repeat(256),
                |c| c.name = "n".repeat(257),
                Rejection::FieldTooLong("name"),
            ),
            (
                |c| c.description = "d".repeat(4096),
                |c| c.description = "d".repeat(4097),
                Rejection::FieldTooLong("description"),
            ),
            (
                |c| c.capabilities = vec!["c".repeat(128)],
                |c| c.capabilities = vec!["c".repeat(129)],
                Rejection::FieldTooLong("capabilities"),
            ),
            (
                |c| c.capabilities = (0..64).map(|i| i.to_string()).collect(),
                |c| c.capabilities = (0..65).map(|i| i.to_string()).collect(),
                Rejection::TooMany("capabilities"),
            ),
            (
                |c| c.multiaddrs = vec!["/ip4/1.1.1.1/tcp/1".into(); 32],
                |c| c.multiaddrs = vec!["/ip4/1.1.1.1/tcp/1".into(); 33],
                Rejection::TooMany("multiaddrs"),
            ),
            (
                |c| c.zk_credentials = vec![ZkCredential::zero(); 16],
                |c| c.zk_credentials = vec![ZkCredential::zero(); 17],
                Rejection::TooMany("zkCredentials"),
            ),
        ];
        for (at_limit, over, want) in cases {
            let mut c = base.clone();
            at_limit(&mut c);
            let mut s = store();
            assert!(
                s.accept(&c.to_wire(), PEER, NOW, &never).is_ok(),
                "{want:?}"
            );
            let mut c = base.clone();
            over(&mut c);
            assert_eq!(c.check_bounds(), Err(*want));
            let mut s = store();
            assert_eq!(s.accept(&c.to_wire(), PEER, NOW, &never).err(), Some(*want));
            assert_eq!(s.rejections()[want.as_str()], 1);
        }
        // Bytes, not characters: 129 two-byte characters is over 256 bytes.
        let mut c = base.clone();
        c.name = "é".repeat(129);
        assert_eq!(c.check_bounds(), Err(Rejection::FieldTooLong("name")));
    }

    #[test]
    fn tf7_full_store_evicts_the_oldest() {
        let mut s = CardStore::new(CardPolicy {
            max_known_peers: 3,
            ..CardPolicy::default()
        });
        let keys: Vec<WalletKey> = (1..=5).map(key).collect();
        // Ages: key1 oldest … key3 newest.
        for (i, k) in keys[..3].iter().enumerate() {
            let at = NOW - secs(100 - 10 * i as u64);
            s.accept(&signed_wire(k, at), PEER, NOW, &never).unwrap();
        }
        assert_eq!(s.len(), 3);
        // Refreshing a stored DID does not evict anything.
        s.accept(&signed_wire(&keys[0], NOW - secs(5)), PEER, NOW, &never)
            .unwrap();
        assert_eq!(s.len(), 3);
        // A fourth DID evicts the oldest (now key2).
        s.accept(&signed_wire(&keys[3], NOW - secs(50)), PEER, NOW, &never)
            .unwrap();
        assert_eq!(s.len(), 3);
        assert!(s.get(keys[1].did().as_str()).is_none());
        for k in [&keys[0], &keys[2], &keys[3]] {
            assert!(s.get(k.did().as_str()).is_some());
        }
        // The card just accepted is kept even when it is the oldest.
        let stored = s
            .accept(&signed_wire(&keys[4], NOW - secs(200)), PEER, NOW, &never)
            .unwrap();
        assert_eq!(stored.card.did, keys[4].did().as_str());
        assert_eq!(s.len(), 3);
        assert!(s.get(keys[2].did().as_str()).is_none());
    }

    #[test]
    fn expire_drops_cards_older_than_the_ttl() {
        let mut s = store();
        let (a, b) = (key(1), key(2));
        s.accept(&signed_wire(&a, NOW - secs(200)), PEER, NOW, &never)
            .unwrap();
        s.accept(&signed_wire(&b, NOW - secs(10)), PEER, NOW, &never)
            .unwrap();
        assert_eq!(s.expire(NOW + secs(100)), 0);
        assert_eq!(s.expire(NOW + secs(101)), 1);
        assert!(s.get(a.did().as_str()).is_none());
        assert!(s.get(b.did().as_str()).is_some());
        assert_eq!(s.expire(NOW + secs(400)), 1);
        assert!(s.is_empty());
        // The expired DID can be stored again.
        assert!(s.accept(&signed_wire(&a, NOW), PEER, NOW, &never).is_ok());
    }

    #[test]
    fn list_get_and_remove() {
        let mut s = store();
        for (n, name, caps) in [
            (1u8, "beta", vec!["search"]),
            (2, "alpha", vec!["translate"]),
            (3, "alpha", vec!["search", "translate"]),
        ] {
            let w = key(n);
            let mut c = AgentCard::local(
                name,
                w.did().as_str(),
                PEER,
                vec![],
                caps.into_iter().map(String::from).collect(),
                NOW,
            );
            c.sign(&w).unwrap();
            s.accept(&c.to_wire(), PEER, NOW, &never).unwrap();
        }
        let got: Vec<(String, String)> = s
            .list(None)
            .iter()
            .map(|c| (c.card.name.clone(), c.card.did.clone()))
            .collect();
        let mut alphas = [key(2).did().to_string(), key(3).did().to_string()];
        alphas.sort();
        let want = vec![
            ("alpha".to_string(), alphas[0].clone()),
            ("alpha".to_string(), alphas[1].clone()),
            ("beta".to_string(), key(1).did().to_string()),
        ];
        assert_eq!(got, want);
        let search: Vec<&str> = s
            .list(Some("search"))
            .iter()
            .map(|c| c.card.name.as_str())
            .collect();
        assert_eq!(search, ["alpha", "beta"]);
        assert!(s.list(Some("none")).is_empty());
        assert!(s.remove(key(1).did().as_str()));
        assert!(!s.remove(key(1).did().as_str()));
        assert!(s.get(key(1).did().as_str()).is_none());
        assert_eq!(s.len(), 2);
    }

    #[test]
    fn rejection_counters_count_each_reason() {
        let w = key(1);
        let mut s = CardStore::new(CardPolicy {
            require_signed: true,
            ..CardPolicy::default()
        });
        let revoked_did = key(9).did().to_string();
        let is_revoked = |d: &str| d == revoked_did;
        let mut tampered = AgentCard::from_wire(&signed_wire(&w, NOW)).unwrap();
        tampered.name = "other".into();
        let unsigned = AgentCard::local("a", w.did().as_str(), PEER, vec![], vec![], NOW);
        let mut long = unsigned.clone();
        long.name = "n".repeat(300);
        let mut many = unsigned.clone();
        many.multiaddrs = vec![String::new(); 40];
        let mut no_did = unsigned.clone();
        no_did.did.clear();
        let mut bad_did = unsigned.clone();
        bad_did.did = "did:lango:zz".into();
        let inputs: Vec<(Vec<u8>, Rejection)> = vec![
            (vec![b' '; 70_000], Rejection::TooLarge),
            (b"not json".to_vec(), Rejection::NotJson),
            (long.to_wire(), Rejection::FieldTooLong("name")),
            (many.to_wire(), Rejection::TooMany("multiaddrs")),
            (no_did.to_wire(), Rejection::EmptyDid),
            (bad_did.to_wire(), Rejection::InvalidDid),
            (signed_wire(&key(9), NOW), Rejection::Revoked),
            (signed_wire(&key(2), NOW + secs(60)), Rejection::FromFuture),
            (signed_wire(&key(2), NOW - secs(600)), Rejection::Stale),
            (tampered.to_wire(), Rejection::BadSignature),
            (unsigned.to_wire(), Rejection::Unsigned),
        ];
        for (raw, want) in &inputs {
            assert_eq!(s.accept(raw, PEER, NOW, &is_revoked).err(), Some(*want));
        }
        assert_eq!(
            s.accept(&signed_wire(&w, NOW), "someone-else", NOW, &is_revoked)
                .err(),
            Some(Rejection::OriginMismatch)
        );
        s.accept(&signed_wire(&w, NOW), PEER, NOW, &is_revoked)
            .unwrap();
        for _ in 0..2 {
            assert_eq!(
                s.accept(&signed_wire(&w, NOW), PEER, NOW, &is_revoked)
                    .err(),
                Some(Rejection::NotNewer)
            );
        }
        let counts = s.rejections();
        let labels = [
            "too_large",
            "not_json",
            "field_too_long",
            "too_many",
            "empty_did",
            "invalid_did",
            "revoked",
            "origin_mismatch",
            "from_future",
            "stale",
            "bad_signature",
            "unsigned",
        ];
        for l in labels {
            assert_eq!(counts.get(l), Some(&1), "{l}: {counts:?}");
        }
        assert_eq!(counts.get("not_newer"), Some(&2));
        assert_eq!(counts.len(), labels.len() + 1);
        assert_eq!(s.accepted_total(), 1);
        // Labels are distinct and Display says something for each.
        for (_, r) in &inputs {
            assert!(!r.to_string().is_empty());
        }
        assert_eq!(Rejection::NotNewer.as_str(), "not_newer");
    }

    #[test]
    fn top_level_value_finds_escaped_keys_and_skips_nested_ones() {
        let doc = br#" { "a" : {"bundle":1, "s":"}\"]"}, "bund\u006ce" : [ {"x":"]"} ] , "z":2 } "#;
        assert_eq!(
            top_level_value(doc, "bundle"),
            Some(&br#"[ {"x":"]"} ]"#[..])
        );
        assert_eq!(top_level_value(doc, "z"), Some(&b"2"[..]));
        assert_eq!(top_level_value(doc, "missing"), None);
        assert_eq!(top_level_value(b"{}", "a"), None);
        // Through from_wire: the escaped key is the bundle.
        let card = AgentCard::from_wire(br#"{"name":"n","bund\u006ce":{"b":1,"a":2}}"#).unwrap();
        assert_eq!(card.bundle.unwrap().as_str(), r#"{"b":1,"a":2}"#);
    }
}
