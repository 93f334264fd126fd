//! Legacy 1.0/1.1 payloads and checks (R-2…R-6, R-13, I-6…I-10, C-3, H-7), adversarial cases.
//! Every rejection asserts the exact error variant, so removing a defence fails its test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::*;
use futures::executor::block_on;
use lango_crypto::wallet::{Did, WalletKey};
use lango_handshake::Error;
use lango_handshake::clock::ManualClock;
use lango_handshake::legacy::{self, InitiatorAuth, UnsignedReason};
use lango_handshake::messages::{Challenge, ChallengeResponse, SessionAck};
use lango_handshake::nonce::{NonceCache, wired_nonce_ttl};
use lango_handshake::wire::{self, WireToken};

const TS: i64 = 1_700_000_000;

/// A challenge with `sender_did`, signed (single hash) by `signer` over CP.
fn signed(signer: &WalletKey, sender_did: &str, nonce: &[u8], ts: i64) -> Challenge {
    let cp = legacy::challenge_payload(nonce, ts, sender_did);
    Challenge {
        nonce: nonce.to_vec(),
        timestamp: ts,
        sender_did: sender_did.to_owned(),
        public_key: signer.public_key().to_compressed().to_vec(),
        signature: signer.sign_message(&cp).unwrap().to_bytes().to_vec(),
        ..Challenge::default()
    }
}

fn v1() -> Challenge {
    wire::decode_message(V1_LINE.as_bytes()).unwrap()
}

fn validate(ch: &Challenge, require: bool) -> Result<legacy::ValidatedChallenge, Error> {
    legacy::validate_challenge(ch, now(), None, require, None)
}

// ---- R-5 classification ----

#[test]
fn signed_single_hash_challenge_authenticates() {
    let v = validate(&v1(), true).unwrap();
    assert!(v.auth.is_authenticated());
    assert_eq!(v.nonce, nonce());
}

#[test]
fn unsigned_challenges_follow_require_signed() {
    let unsigned: Challenge = wire::decode_message(V1_UNSIGNED_LINE.as_bytes()).unwrap();
    assert_eq!(
        validate(&unsigned, false).unwrap().auth,
        InitiatorAuth::Unsigned(UnsignedReason::NoSignature)
    );
    assert_eq!(
        validate(&unsigned, true).unwrap_err(),
        Error::UnsignedRejected
    );

    let mut only_key = v1();
    only_key.signature.clear();
    assert_eq!(
        validate(&only_key, false).unwrap().auth,
        InitiatorAuth::Unsigned(UnsignedReason::PublicKeyOnly)
    );
    assert_eq!(
        validate(&only_key, true).unwrap_err(),
        Error::UnsignedRejected
    );

    let mut only_sig = v1();
    only_sig.public_key.clear();
    assert_eq!(
        validate(&only_sig, false).unwrap().auth,
        InitiatorAuth::Unsigned(UnsignedReason::SignatureOnly)
    );
    assert_eq!(
        validate(&only_sig, true).unwrap_err(),
        Error::UnsignedRejected
    );
}

#[test]
fn double_hash_signature_never_authenticates() {
    let mut ch = v1();
    ch.signature = h(SIG_I_DOUBLE);
    let v = validate(&ch, false).unwrap();
    assert!(!v.auth.is_authenticated());
    assert_eq!(
        v.auth,
        InitiatorAuth::Unsigned(UnsignedReason::LegacyDoubleHash)
    );
    assert_eq!(
        validate(&ch, true).unwrap_err(),
        Error::LegacySignatureRejected
    );
}

#[test]
fn tampered_signature_or_signed_fields_are_signature_mismatch() {
    let base = v1();
    let mut cases: Vec<(&str, Challenge)> = Vec::new();
    let mut c = base.clone();
    c.signature[31] ^= 0x01; // lowest bit of r
    cases.push(("r", c));
    let mut c = base.clone();
    c.signature[63] ^= 0x01; // lowest bit of s (stays low-S)
    cases.push(("s", c));
    let mut c = base.clone();
    c.signature[64] ^= 0x01; // v
    cases.push(("v", c));
    let mut c = base.clone();
    c.nonce[0] ^= 0x80;
    cases.push(("nonce", c));
    let mut c = base.clone();
    c.timestamp += 1;
    cases.push(("timestamp", c));
    let mut c = base.clone();
    c.sender_did = DID_R.to_owned();
    cases.push(("did", c));
    let mut c = base.clone();
    c.public_key = key(2).public_key().to_compressed().to_vec();
    cases.push(("publicKey", c));
    for (what, ch) in cases {
        for require in [false, true] {
            assert_eq!(
                validate(&ch, require).unwrap_err(),
                Error::SignatureMismatch,
                "{what}"
            );
        }
    }
}

#[test]
fn wrong_signature_lengths_are_refused() {
    for len in [1, 64, 66, 130] {
        let mut ch = v1();
        ch.signature.resize(len, 0xab);
        assert_eq!(
            validate(&ch, false).unwrap_err(),
            Error::BadSignatureLength(len)
        );
    }
}

#[test]
fn bad_recovery_ids_are_refused() {
    for v in [2u8, 3, 27, 28] {
        let mut ch = v1();
        ch.signature[64] = v;
        assert!(
            matches!(validate(&ch, false), Err(Error::BadSignatureEncoding(_))),
            "v = {v}"
        );
    }
}

#[test]
fn out_of_range_r_and_s_are_refused() {
    let n = group_order();
    for (what, patch) in [
        ("r = 0", (0usize, [0u8; 32])),
        ("s = 0", (32, [0u8; 32])),
        ("r = n", (0, n)),
        ("s = n", (32, n)),
        ("s = 2^256-1", (32, [0xff; 32])),
    ] {
        let mut ch = v1();
        ch.signature[patch.0..patch.0 + 32].copy_from_slice(&patch.1);
        assert!(
            matches!(validate(&ch, false), Err(Error::BadSignatureEncoding(_))),
            "{what}"
        );
    }
}

#[test]
fn high_s_twin_is_refused_in_legacy() {
    let mut ch = v1();
    ch.signature = high_s_twin(&ch.signature);
    // The twin is a mathematically valid signature of the same key (Go would accept it) ...
    let pk = lango_crypto::wallet::recover(
        &lango_crypto::wallet::keccak256(&ch.signed_payload()),
        &ch.signature,
        lango_crypto::wallet::LowS::Allow,
    )
    .unwrap();
    assert_eq!(pk, key(1).public_key());
    // ... and is refused here.
    assert!(matches!(
        validate(&ch, false),
        Err(Error::BadSignatureEncoding(_))
    ));
}

#[test]
fn invalid_public_keys_are_refused() {
    let uncompressed = key(1).public_key().to_uncompressed().to_vec();
    let mut not_on_curve = vec![0x02];
    not_on_curve.extend_from_slice(&[0u8; 32]);
    for pk in [uncompressed, not_on_curve, vec![0x02; 32], vec![0x04; 33]] {
        let mut ch = v1();
        ch.public_key = pk;
        assert_eq!(validate(&ch, false).unwrap_err(), Error::SignatureMismatch);
    }
}

#[test]
fn unsupported_algorithms_are_refused() {
    for alg in ["ed25519", "secp256k1", "SECP256K1-KECCAK256", " "] {
        for mut ch in [
            v1(),
            wire::decode_message(V1_UNSIGNED_LINE.as_bytes()).unwrap(),
        ] {
            ch.signature_algorithm = alg.to_owned();
            assert_eq!(
                validate(&ch, false).unwrap_err(),
                Error::UnsupportedAlgorithm(alg.to_owned())
            );
        }
    }
    let mut ch = v1();
    ch.signature_algorithm = "secp256k1-keccak256".to_owned();
    assert!(validate(&ch, true).unwrap().auth.is_authenticated());
}

#[test]
fn head_kem_challenges_sign_over_the_kem_fields() {
    let kem_pub = vec![7u8; 1216];
    let mut cp = legacy::challenge_payload(&nonce(), TS, DID_I);
    cp.extend_from_slice(b"X25519-MLKEM768");
    cp.extend_from_slice(&kem_pub);
    let mut ch = Challenge {
        nonce: nonce().to_vec(),
        timestamp: TS,
        sender_did: DID_I.to_owned(),
        public_key: key(1).public_key().to_compressed().to_vec(),
        signature: key(1).sign_message(&cp).unwrap().to_bytes().to_vec(),
        signature_algorithm: "secp256k1-keccak256".to_owned(),
        kem_public_key: kem_pub,
        kem_algorithm: "X25519-MLKEM768".to_owned(),
        zk_schemes: Vec::new(),
    };
    assert!(validate(&ch, true).unwrap().auth.is_authenticated());
    // The same KEM fields with a signature over CP only: refused.
    ch.signature = v1().signature;
    assert_eq!(validate(&ch, true).unwrap_err(), Error::SignatureMismatch);
}

// ---- R-6 DIDs ----

#[test]
fn did_of_another_key_is_refused_even_with_a_valid_signature() {
    // X-2: Mallory (key 3) signs with her own key but claims Victor's (key 1) DID.
    let mallory = key(3);
    let ch = signed(&mallory, DID_I, &nonce(), TS);
    assert_eq!(validate(&ch, false).unwrap_err(), Error::DidKeyMismatch);
    assert_eq!(validate(&ch, true).unwrap_err(), Error::DidKeyMismatch);
    // Her own DID works.
    let ch = signed(&mallory, mallory.did().as_str(), &nonce(), TS);
    assert!(validate(&ch, true).unwrap().auth.is_authenticated());
}

#[test]
fn malformed_sender_dids_are_refused() {
    let upper = format!("did:lango:{}", PK_I.to_uppercase());
    let uncompressed = format!(
        "did:lango:{}",
        hex::encode(key(1).public_key().to_uncompressed())
    );
    let off_curve = format!("did:lango:02{}", "00".repeat(32));
    for d in [
        "",
        "did:lango:",
        "did:other:0279be667ef9dcbbac55a06295ce870b07029bfcdb2dce28d959f2815b16f81798",
        "DID:LANGO:0279be667ef9dcbbac55a06295ce870b07029bfcdb2dce28d959f2815b16f81798",
        "did:lango:gg00ff",
        &upper,
        &uncompressed,
        &off_curve,
        &format!("{DID_I} "),
    ] {
        let ch = Challenge {
            nonce: nonce().to_vec(),
            timestamp: TS,
            sender_did: d.to_owned(),
            ..Challenge::default()
        };
        assert!(
            matches!(validate(&ch, false), Err(Error::MalformedDid(_))),
            "{d:?}"
        );
        // Signed by key 1 over that DID: the DID check still refuses it.
        let ch = signed(&key(1), d, &nonce(), TS);
        assert!(
            matches!(validate(&ch, false), Err(Error::MalformedDid(_))),
            "{d:?}"
        );
    }
}

#[test]
fn v2_dids_are_unsupported() {
    let ch = Challenge {
        nonce: nonce().to_vec(),
        timestamp: TS,
        sender_did: "did:lango:v2:2b6f0cc904d137be2e1730235f5664094b831186".to_owned(),
        ..Challenge::default()
    };
    assert_eq!(
        validate(&ch, false).unwrap_err(),
        Error::UnsupportedIdentity
    );
    let ch = signed(&key(1), "did:lango:v2:abcd", &nonce(), TS);
    assert_eq!(validate(&ch, true).unwrap_err(), Error::UnsupportedIdentity);
}

#[test]
fn unauthenticated_claim_of_our_own_did_is_refused() {
    let own = did(2);
    let ch = Challenge {
        nonce: nonce().to_vec(),
        timestamp: TS,
        sender_did: DID_R.to_owned(),
        ..Challenge::default()
    };
    assert_eq!(
        legacy::validate_challenge(&ch, now(), None, false, Some(&own)).unwrap_err(),
        Error::SelfDid
    );
    // Authenticated by our own key (e.g. a loopback test): allowed.
    let ch = signed(&key(2), DID_R, &nonce(), TS);
    assert!(legacy::validate_challenge(&ch, now(), None, false, Some(&own)).is_ok());
}

// ---- R-2 timestamps and R-3 nonces ----

#[test]
fn timestamp_window_is_enforced() {
    let unsigned = |ts: i64| Challenge {
        nonce: nonce().to_vec(),
        timestamp: ts,
        sender_did: DID_I.to_owned(),
        ..Challenge::default()
    };
    for ts in [0, -1, i64::MIN, 1 << 62, i64::MAX] {
        assert_eq!(
            validate(&unsigned(ts), false).unwrap_err(),
            Error::InvalidTimestamp(ts)
        );
    }
    assert!(matches!(
        validate(&unsigned(TS - 301), false),
        Err(Error::TimestampTooOld { .. })
    ));
    assert!(validate(&unsigned(TS - 299), false).is_ok());
    assert!(matches!(
        validate(&unsigned(TS + 31), false),
        Err(Error::TimestampInFuture { .. })
    ));
    assert!(validate(&unsigned(TS + 29), false).is_ok());
    // Signed challenges outside the window are refused before any signature work.
    let ch = signed(&key(1), DID_I, &nonce(), TS - 400);
    assert!(matches!(
        validate(&ch, true),
        Err(Error::TimestampTooOld { .. })
    ));
}

#[test]
fn nonce_length_is_enforced_without_a_cache() {
    for len in [0usize, 16, 31, 33, 66] {
        let mut n = vec![0x42u8; len];
        if len == 66 {
            // An EIP-712 digest preimage: 0x19 0x01 ‖ domainSeparator ‖ structHash (X-6).
            n[0] = 0x19;
            n[1] = 0x01;
        }
        for ch in [
            Challenge {
                nonce: n.clone(),
                timestamp: TS,
                sender_did: DID_I.to_owned(),
                ..Challenge::default()
            },
            signed(&key(1), DID_I, &n, TS),
        ] {
            for require in [false, true] {
                assert_eq!(
                    legacy::validate_challenge(&ch, now(), None, require, None).unwrap_err(),
                    Error::InvalidNonce { len },
                    "len {len}"
                );
            }
        }
    }
}

// ---- R-4 replay ----

#[test]
fn replayed_challenge_is_refused() {
    let clock = Arc::new(ManualClock::at_unix(NOW));
    let cache = NonceCache::with_clock(wired_nonce_ttl(Duration::from_secs(30)), 0, clock.clone());
    let ch = v1();
    assert!(legacy::validate_challenge(&ch, now(), Some(&cache), true, None).is_ok());
    assert_eq!(
        legacy::validate_challenge(&ch, now(), Some(&cache), true, None).unwrap_err(),
        Error::NonceReplay
    );
    // 120 s later (after the reference's 60 s TTL, inside the 300 s window), even after a
    // cleanup, the wired TTL still remembers the nonce.
    clock.advance(Duration::from_secs(120));
    cache.cleanup();
    let later = now() + Duration::from_secs(120);
    assert_eq!(
        legacy::validate_challenge(&ch, later, Some(&cache), true, None).unwrap_err(),
        Error::NonceReplay
    );
}

#[test]
fn reference_ttl_would_let_the_replay_through() {
    // Contrast for the test above: with the reference wiring (2 × 30 s) the same replay passes.
    let clock = Arc::new(ManualClock::at_unix(NOW));
    let cache = NonceCache::with_clock(Duration::from_secs(60), 0, clock.clone());
    let ch = v1();
    assert!(legacy::validate_challenge(&ch, now(), Some(&cache), true, None).is_ok());
    clock.advance(Duration::from_secs(120));
    cache.cleanup();
    let later = now() + Duration::from_secs(120);
    assert!(legacy::validate_challenge(&ch, later, Some(&cache), true, None).is_ok());
}

#[test]
fn nonce_is_used_up_even_when_the_challenge_is_rejected() {
    let cache = NonceCache::with_clock(
        Duration::from_secs(330),
        0,
        Arc::new(ManualClock::at_unix(NOW)),
    );
    let mut bad = v1();
    bad.signature[63] ^= 1;
    assert_eq!(
        legacy::validate_challenge(&bad, now(), Some(&cache), true, None).unwrap_err(),
        Error::SignatureMismatch
    );
    assert_eq!(
        legacy::validate_challenge(&v1(), now(), Some(&cache), true, None).unwrap_err(),
        Error::NonceReplay
    );
}

#[test]
fn full_nonce_cache_fails_closed() {
    let clock = Arc::new(ManualClock::at_unix(NOW));
    let cache = NonceCache::with_clock(Duration::from_secs(330), 2, clock);
    for i in 0..2u8 {
        let ch = signed(&key(1), DID_I, &[i; 32], TS);
        assert!(legacy::validate_challenge(&ch, now(), Some(&cache), true, None).is_ok());
    }
    assert_eq!(
        legacy::validate_challenge(&v1(), now(), Some(&cache), true, None).unwrap_err(),
        Error::NonceCacheFull
    );
    assert_eq!(cache.len(), 2);
}

// ---- responder side of the initiator (I-6…I-10) ----

fn v3() -> ChallengeResponse {
    wire::decode_message(V3_LINE.as_bytes()).unwrap()
}

#[test]
fn response_nonce_must_echo_ours() {
    let mut r = v3();
    r.nonce[31] ^= 1;
    assert_eq!(
        legacy::verify_response(&r, &nonce(), None).unwrap_err(),
        Error::NonceMismatch
    );
    for len in [0, 31, 33] {
        let mut r = v3();
        r.nonce.resize(len, 0x1f);
        assert_eq!(
            legacy::verify_response(&r, &nonce(), None).unwrap_err(),
            Error::NonceMismatch
        );
    }
}

#[test]
fn response_without_signature_is_refused() {
    let mut r = v3();
    r.signature.clear();
    assert_eq!(
        legacy::verify_response(&r, &nonce(), None).unwrap_err(),
        Error::NoProofOrSignature
    );
    r.zk_proof = vec![1, 2, 3];
    assert_eq!(
        legacy::verify_response(&r, &nonce(), None).unwrap_err(),
        Error::NoProofOrSignature
    );
}

#[test]
fn response_signature_checks() {
    let mut r = v3();
    r.signature.truncate(64);
    assert_eq!(
        legacy::verify_response(&r, &nonce(), None).unwrap_err(),
        Error::BadSignatureLength(64)
    );
    let mut r = v3();
    r.signature = high_s_twin(&r.signature);
    assert!(matches!(
        legacy::verify_response(&r, &nonce(), None),
        Err(Error::BadSignatureEncoding(_))
    ));
    let mut r = v3();
    r.signature[64] = 27;
    assert!(matches!(
        legacy::verify_response(&r, &nonce(), None),
        Err(Error::BadSignatureEncoding(_))
    ));
    // Signed by another key than the one claimed.
    let mut r = v3();
    r.signature = key(3).sign_message(&nonce()).unwrap().to_bytes().to_vec();
    assert_eq!(
        legacy::verify_response(&r, &nonce(), None).unwrap_err(),
        Error::SignatureMismatch
    );
    // A signature over another nonce.
    let mut r = v3();
    r.signature = key(2).sign_message(&[9u8; 32]).unwrap().to_bytes().to_vec();
    assert_eq!(
        legacy::verify_response(&r, &nonce(), None).unwrap_err(),
        Error::SignatureMismatch
    );
    let mut r = v3();
    r.signature_algorithm = "ed25519".into();
    assert_eq!(
        legacy::verify_response(&r, &nonce(), None).unwrap_err(),
        Error::UnsupportedAlgorithm("ed25519".into())
    );
    let mut r = v3();
    r.kem_ciphertext = vec![1; 32];
    assert_eq!(
        legacy::verify_response(&r, &nonce(), None).unwrap_err(),
        Error::UnexpectedKem
    );
}

#[test]
fn response_did_must_name_the_signing_key() {
    // X-4: Mallory answers with her own valid signature and key, but Alice's DID.
    let mallory = key(3);
    let mut r = block_on(legacy::sign_response(&mallory, &nonce())).unwrap();
    r.did = DID_R.to_owned();
    assert_eq!(
        legacy::verify_response(&r, &nonce(), None).unwrap_err(),
        Error::DidKeyMismatch
    );
    r.did = format!(
        "did:lango:{}",
        hex::encode(mallory.public_key().to_compressed()).to_uppercase()
    );
    assert_eq!(
        legacy::verify_response(&r, &nonce(), None).unwrap_err(),
        Error::DidKeyMismatch
    );
    r.did = "did:lango:v2:abc".into();
    assert_eq!(
        legacy::verify_response(&r, &nonce(), None).unwrap_err(),
        Error::UnsupportedIdentity
    );
}

#[test]
fn response_from_an_unexpected_peer_is_refused() {
    let err = legacy::verify_response(&v3(), &nonce(), Some(&did(3))).unwrap_err();
    assert_eq!(
        err,
        Error::UnexpectedPeerDid {
            expected: did(3).as_str().to_owned(),
            got: DID_R.to_owned()
        }
    );
}

#[test]
fn zk_proof_next_to_a_valid_signature_is_ignored() {
    let mut r = v3();
    r.zk_proof = vec![0xde, 0xad];
    let v = legacy::verify_response(&r, &nonce(), None).unwrap();
    assert!(v.zk_proof_present);
    assert_eq!(v.did, did(2));
}

#[test]
fn responder_never_sends_zk_proof_or_algorithm() {
    let r = block_on(legacy::sign_response(&key(2), &nonce())).unwrap();
    assert!(
        r.zk_proof.is_empty() && r.signature_algorithm.is_empty() && r.kem_ciphertext.is_empty()
    );
    let line = String::from_utf8(wire::encode_line(&r).unwrap()).unwrap();
    assert!(!line.contains("zkProof") && !line.contains("signatureAlgorithm"));
}

// ---- R-13 ack ----

fn ack(token: &str, expires_at: i64) -> SessionAck {
    SessionAck {
        token: WireToken::new(token.to_owned()),
        expires_at,
    }
}

#[test]
fn ack_token_must_be_64_lowercase_hex() {
    let ttl = Duration::from_secs(3600);
    for t in [
        "",
        &V4_TOKEN[..63],
        &format!("{V4_TOKEN}0"),
        &V4_TOKEN.to_uppercase(),
        &format!("{}g", &V4_TOKEN[..63]),
        &format!("{} ", &V4_TOKEN[..63]),
    ] {
        assert_eq!(
            legacy::validate_ack(&ack(t, TS + 10), now(), ttl).unwrap_err(),
            Error::MalformedToken,
            "{t:?}"
        );
    }
}

#[test]
fn ack_expiry_must_be_in_the_future_and_is_clamped() {
    let ttl = Duration::from_secs(86_400);
    for past in [0, -1, TS - 1, TS] {
        assert_eq!(
            legacy::validate_ack(&ack(V4_TOKEN, past), now(), ttl).unwrap_err(),
            Error::AckExpired
        );
    }
    assert_eq!(
        legacy::validate_ack(&ack(V4_TOKEN, TS + 1), now(), ttl).unwrap(),
        TS + 1
    );
    // Year 9999 is clamped to now + TTL.
    assert_eq!(
        legacy::validate_ack(&ack(V4_TOKEN, 253_402_300_799), now(), ttl).unwrap(),
        TS + 86_400
    );
    assert_eq!(
        legacy::validate_ack(&ack(V4_TOKEN, i64::MAX), now(), ttl).unwrap(),
        TS + 86_400
    );
}

#[test]
fn signing_helpers_refuse_a_wallet_whose_key_and_signatures_differ() {
    // C-8: a composite wallet that signs with one key and reports another.
    struct Split;
    #[async_trait::async_trait]
    impl lango_handshake::signer::Wallet for Split {
        async fn public_key(&self) -> Result<lango_crypto::wallet::PublicKey, Error> {
            Ok(key(1).public_key())
        }
        async fn sign_message(
            &self,
            m: &[u8],
        ) -> Result<lango_crypto::wallet::RecoverableSignature, Error> {
            Ok(key(2).sign_message(m).unwrap())
        }
    }
    assert!(matches!(
        block_on(legacy::sign_challenge(&Split, &nonce(), TS)),
        Err(Error::Wallet(_))
    ));
    assert!(matches!(
        block_on(legacy::sign_response(&Split, &nonce())),
        Err(Error::Wallet(_))
    ));
}

#[test]
fn did_type_is_canonical() {
    // The DID a challenge is built with is the wallet's canonical DID.
    let ch = block_on(legacy::sign_challenge(&key(1), &nonce(), TS)).unwrap();
    assert_eq!(Did::parse(&ch.sender_did).unwrap(), did(1));
}

mod properties {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        /// A challenge signed by any key over any in-window timestamp authenticates; changing
        /// any single byte of what the signature covers, or of the signature, never does.
        #[test]
        fn no_single_byte_change_keeps_authentication(
            scalar in 1u8..=250,
            n in prop::array::uniform32(any::<u8>()),
            age in -29i64..=299,
            field in 0usize..4,
            pos in any::<prop::sample::Index>(),
            bit in 0u8..8,
        ) {
            let k = key(scalar);
            let d = k.did();
            let ts = TS - age;
            let ch = signed(&k, d.as_str(), &n, ts);
            let v = legacy::validate_challenge(&ch, now(), None, true, None).unwrap();
            prop_assert!(v.auth.is_authenticated());

            let mut t = ch.clone();
            match field {
                0 => { let i = pos.index(32); t.nonce[i] ^= 1 << bit; }
                1 => { t.timestamp ^= 1 << bit; }
                2 => {
                    // Flip a hex digit of the key part into another valid lowercase hex digit.
                    let i = 10 + pos.index(66);
                    let mut b = t.sender_did.into_bytes();
                    b[i] = if b[i] == b'0' { b'1' } else { b'0' };
                    t.sender_did = String::from_utf8(b).unwrap();
                }
                _ => { let i = pos.index(65); t.signature[i] ^= 1 << bit; }
            }
            if t == ch {
                return Ok(());
            }
            let r = legacy::validate_challenge(&t, now(), None, true, None);
            prop_assert!(!matches!(r, Ok(ref v) if v.auth.is_authenticated()), "{:?}", r);
        }

        /// A valid response verifies only for the nonce it signed.
        #[test]
        fn response_binds_the_nonce(
            scalar in 1u8..=250,
            n in prop::array::uniform32(any::<u8>()),
            other in prop::array::uniform32(any::<u8>()),
        ) {
            let k = key(scalar);
            let r = block_on(legacy::sign_response(&k, &n)).unwrap();
            prop_assert_eq!(legacy::verify_response(&r, &n, Some(&k.did())).unwrap().did, k.did());
            if other != n {
                prop_assert!(legacy::verify_response(&r, &other, None).is_err());
                // Even with the echo rewritten to the other nonce, the signature does not match.
                let mut forged = r.clone();
                forged.nonce = other.to_vec();
                prop_assert_eq!(
                    legacy::verify_response(&forged, &other, None).unwrap_err(),
                    Error::SignatureMismatch
                );
            }
        }
    }
}
