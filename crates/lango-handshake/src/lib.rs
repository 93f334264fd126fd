//! # lango-handshake
//!
//! Peer authentication over any byte stream: the legacy 1.0.0/1.1.0 handshakes, wire-compatible
//! with Go nodes, and the channel-bound mutual 1.2.0-bound handshake.
//!
//! ## What it owns
//! Message codecs (bounded), the initiator and responder state machines, the timestamp window
//! and the nonce replay cache, DID-to-key binding, downgrade pins, and the approval and
//! zero-knowledge hooks.
//!
//! ## What it must never do
//! Accept a double-hashed challenge as authenticated, sign a caller-chosen digest, wait without
//! a deadline, or read an unbounded message.
//!
//! ## Place in the layers
//! Above `lango-crypto` and `lango-session`; transport-agnostic, wired to libp2p by `lango-p2p`.
//!
//! ## On the wire
//!
//! Every message is one compact JSON object followed by one line feed, byte-identical to Go's
//! `json.Encoder` output ([`wire`]). The legacy exchange is
//! `Challenge → ChallengeResponse → SessionAck`; the 1.2 exchange is
//! `Hello → Proof → Finish → Result` ([`messages`]). Streams are `futures::io`
//! `AsyncRead`/`AsyncWrite`, the traits libp2p streams implement.
//!
//! ## Modules
//!
//! - [`wire`]: framing, Go-parity JSON encoding, the bounded [`wire::MessageReader`];
//! - [`messages`]: the message types;
//! - [`legacy`]: legacy payloads, signing and verification (including the double-hash rule);
//! - [`v12`]: 1.2 transcripts, signing and verification;
//! - [`nonce`]: the bounded replay cache;
//! - [`exchange`]: the legacy responder and initiator state machines, under one deadline;
//! - [`hooks`]: approval, ZK and downgrade-pin seams;
//! - [`clock`]: injectable clocks and the timestamp window;
//! - [`identity`], [`sig`], [`signer`], [`protocol`]: DIDs, signature checks, the wallet seam,
//!   protocol IDs.
//!
//! ## Example
//!
//! ```
//! # use lango_handshake::{legacy, messages::Challenge, wire};
//! # use lango_crypto::wallet::WalletKey;
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let mut scalar = [0u8; 32];
//! scalar[31] = 1;
//! let key = WalletKey::from_bytes(&scalar)?;
//! let nonce: [u8; 32] = core::array::from_fn(|i| i as u8);
//! let challenge = futures::executor::block_on(legacy::sign_challenge(&key, &nonce, 1_700_000_000))?;
//! let line = wire::encode_line(&challenge)?;
//! assert!(line.starts_with(br#"{"nonce":"AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=","#));
//!
//! let now = std::time::UNIX_EPOCH + std::time::Duration::from_secs(1_700_000_000);
//! let decoded: Challenge = wire::decode_message(&line)?;
//! let ok = legacy::validate_challenge(&decoded, now, None, true, None)?;
//! assert!(ok.auth.is_authenticated());
//! # Ok(()) }
//! ```
#![forbid(unsafe_code)]

pub mod clock;
mod error;
pub mod exchange;
pub mod hooks;
pub mod identity;
pub mod legacy;
pub mod messages;
pub mod nonce;
pub mod protocol;
pub mod sig;
pub mod signer;
pub mod v12;
pub mod wire;

pub use error::Error;

/// Result alias for this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;
