//! The hardened 1.2.0-bound protocol at the message level (§6.2.5), adversarial cases.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::*;
use futures::executor::block_on;
use lango_crypto::wallet::WalletKey;
use lango_handshake::Error;
use lango_handshake::clock::ManualClock;
use lango_handshake::messages::{Finish, HandshakeResult, Hello, Proof, ResultStatus};
use lango_handshake::nonce::{NonceCache, wired_nonce_ttl};
use lango_handshake::protocol::PROTOCOL_1_1;
use lango_handshake::v12::{self, ChannelBinding, InitPart, RespPart, TokenDigest};
use lango_handshake::wire::WireToken;

const TS: i64 = 1_700_000_000;
const EXP: i64 = 1_700_086_400;
const TTL: Duration = Duration::from_secs(86_400);
const TOKEN_SHA256: &str = "328f14b73ddba36b1fca93b1a76d1b808d70093a0039ace346e3add92489eab8";
const TAMPERED_TOKEN: &str = "95e9defda3cea475c7459a95ea0bbe012a8ee78f7f42ad2465063cf40ea33b77";
const TAMPERED_TOKEN_SHA256: &str =
    "cc07e135e2ca76de0cc4c3c229a85de5e968d61bcc69f1ea56164c6ea25dc378";

/// Node peer IDs (binary multihash). Alice = RFC 8032 key 1's node, Victor = key 2's, Mallory
/// a third.
fn peer(n: u8) -> Vec<u8> {
    let mut p = vec![0x00, 0x24, 0x08, 0x01, 0x12, 0x20];
    p.extend_from_slice(&[n; 32]);
    p
}

const ALICE: u8 = 1;
const VICTOR: u8 = 2;
const MALLORY: u8 = 3;

fn digest(hex_str: &str) -> TokenDigest {
    TokenDigest(h(hex_str).try_into().unwrap())
}

struct Exchange {
    ib: ChannelBinding,
    rb: ChannelBinding,
    hello: Hello,
    init: InitPart,
    proof: Proof,
    resp: RespPart,
    finish: Finish,
}

/// A complete honest exchange between initiator `i` (wallet key i, node peer i) and responder `r`.
fn exchange(i: u8, r: u8, nonce_i: [u8; 32], nonce_r: [u8; 32]) -> Exchange {
    let ib = ChannelBinding::initiator(&peer(i), &peer(r)).unwrap();
    let rb = ChannelBinding::responder(&peer(r), &peer(i)).unwrap();
    let (hello, init) = block_on(v12::sign_hello(&key(i), &ib, nonce_i, TS)).unwrap();
    let (proof, resp) = block_on(v12::sign_proof(&key(r), &rb, &init, nonce_r)).unwrap();
    let finish = block_on(v12::sign_finish(
        &key(i),
        &ib,
        &init,
        &resp,
        WireToken::new(V4_TOKEN.into()),
        &digest(TOKEN_SHA256),
        EXP,
    ))
    .unwrap();
    Exchange {
        ib,
        rb,
        hello,
        init,
        proof,
        resp,
        finish,
    }
}

fn honest() -> Exchange {
    exchange(ALICE, VICTOR, nonce(), [0x20; 32])
}

/// The responder's full processing of M1 (P-3), cache included.
fn responder_m1(hello: &Hello, rb: &ChannelBinding, cache: &NonceCache) -> Result<InitPart, Error> {
    let n = v12::check_hello(hello, now())?;
    cache.check(&n)?;
    v12::verify_hello(hello, rb)
}

fn cache() -> NonceCache {
    NonceCache::with_clock(
        wired_nonce_ttl(Duration::from_secs(30)),
        0,
        Arc::new(ManualClock::at_unix(NOW)),
    )
}

#[test]
fn honest_exchange_verifies_on_both_sides() {
    let x = honest();
    let c = cache();
    let init = responder_m1(&x.hello, &x.rb, &c).unwrap();
    assert_eq!(init, x.init);
    let resp = v12::verify_proof(&x.proof, &x.ib, &x.init, Some(&did(VICTOR))).unwrap();
    assert_eq!(resp, x.resp);
    let fin = v12::verify_finish(
        &x.finish,
        &x.rb,
        &init,
        &x.resp,
        &digest(TOKEN_SHA256),
        now(),
        TTL,
    )
    .unwrap();
    assert_eq!(fin, EXP);
    assert_eq!(
        v12::check_result(&HandshakeResult::ok(fin), EXP).unwrap(),
        EXP
    );
}

// ---- relaying and forwarding (X-5) ----

#[test]
fn relayed_hello_is_refused_by_the_real_responder() {
    // Alice dials Mallory; Mallory forwards Alice's Hello unchanged to Victor.
    let alice_to_mallory = exchange(ALICE, MALLORY, nonce(), [0x20; 32]);
    let victor_view = ChannelBinding::responder(&peer(VICTOR), &peer(MALLORY)).unwrap();
    let c = cache();
    assert_eq!(
        responder_m1(&alice_to_mallory.hello, &victor_view, &c).unwrap_err(),
        Error::SignatureMismatch
    );
}

#[test]
fn relayed_proof_is_refused_by_the_initiator() {
    // Alice dials Mallory. Mallory runs her own Hello to Victor, reusing Alice's nonce, and
    // forwards Victor's Proof to Alice.
    let alice_ib = ChannelBinding::initiator(&peer(ALICE), &peer(MALLORY)).unwrap();
    let (_alice_hello, alice_init) =
        block_on(v12::sign_hello(&key(ALICE), &alice_ib, nonce(), TS)).unwrap();
    let mallory_to_victor = exchange(MALLORY, VICTOR, nonce(), [0x20; 32]);
    assert_eq!(
        v12::verify_proof(&mallory_to_victor.proof, &alice_ib, &alice_init, None).unwrap_err(),
        Error::SignatureMismatch
    );
    // Even if Mallory's key were Alice's (she cannot have it), the peer IDs would still differ.
    let victor_rb = ChannelBinding::responder(&peer(VICTOR), &peer(MALLORY)).unwrap();
    let (proof, _) = block_on(v12::sign_proof(
        &key(VICTOR),
        &victor_rb,
        &alice_init,
        [0x20; 32],
    ))
    .unwrap();
    assert_eq!(
        v12::verify_proof(&proof, &alice_ib, &alice_init, None).unwrap_err(),
        Error::SignatureMismatch
    );
}

#[test]
fn hello_forwarded_to_another_responder_is_refused() {
    let x = honest();
    let other = ChannelBinding::responder(&peer(MALLORY), &peer(ALICE)).unwrap();
    assert_eq!(
        v12::verify_hello(&x.hello, &other).unwrap_err(),
        Error::SignatureMismatch
    );
}

#[test]
fn transcript_binds_the_protocol_id() {
    let x = honest();
    let legacy_view = ChannelBinding::new(PROTOCOL_1_1, &peer(ALICE), &peer(VICTOR)).unwrap();
    assert_eq!(
        v12::verify_hello(&x.hello, &legacy_view).unwrap_err(),
        Error::SignatureMismatch
    );
}

// ---- replay ----

#[test]
fn replayed_hello_is_refused() {
    let x = honest();
    let c = cache();
    assert!(responder_m1(&x.hello, &x.rb, &c).is_ok());
    assert_eq!(
        responder_m1(&x.hello, &x.rb, &c).unwrap_err(),
        Error::NonceReplay
    );
}

#[test]
fn old_finish_does_not_verify_in_a_new_exchange() {
    let old = honest();
    // A new exchange with the same Hello but a fresh responder nonce.
    let new = exchange(ALICE, VICTOR, nonce(), [0x21; 32]);
    assert_eq!(
        v12::verify_finish(
            &old.finish,
            &new.rb,
            &new.init,
            &new.resp,
            &digest(TOKEN_SHA256),
            now(),
            TTL
        )
        .unwrap_err(),
        Error::SignatureMismatch
    );
}

// ---- M3 ----

#[test]
fn finish_signed_by_another_key_is_refused() {
    let x = honest();
    let mallory_finish = block_on(v12::sign_finish(
        &key(MALLORY),
        &x.ib,
        &InitPart::new(nonce(), TS, key(MALLORY).public_key()),
        &x.resp,
        WireToken::new(V4_TOKEN.into()),
        &digest(TOKEN_SHA256),
        EXP,
    ))
    .unwrap();
    let err = v12::verify_finish(
        &mallory_finish,
        &x.rb,
        &x.init,
        &x.resp,
        &digest(TOKEN_SHA256),
        now(),
        TTL,
    )
    .unwrap_err();
    assert_eq!(err, Error::SignatureMismatch);
    assert_eq!(HandshakeResult::rejected(&err).error, "signature_mismatch");
}

#[test]
fn tampered_finish_token_or_expiry_is_refused() {
    let x = honest();
    let mut f = x.finish.clone();
    f.token = WireToken::new(TAMPERED_TOKEN.into());
    assert_eq!(
        v12::verify_finish(
            &f,
            &x.rb,
            &x.init,
            &x.resp,
            &digest(TAMPERED_TOKEN_SHA256),
            now(),
            TTL
        )
        .unwrap_err(),
        Error::SignatureMismatch
    );
    let mut f = x.finish.clone();
    f.expires_at += 1;
    assert_eq!(
        v12::verify_finish(
            &f,
            &x.rb,
            &x.init,
            &x.resp,
            &digest(TOKEN_SHA256),
            now(),
            TTL
        )
        .unwrap_err(),
        Error::SignatureMismatch
    );
    let mut f = x.finish.clone();
    f.signature = high_s_twin(&f.signature);
    assert!(matches!(
        v12::verify_finish(
            &f,
            &x.rb,
            &x.init,
            &x.resp,
            &digest(TOKEN_SHA256),
            now(),
            TTL
        ),
        Err(Error::BadSignatureEncoding(_))
    ));
}

#[test]
fn finish_token_format_and_expiry_are_checked() {
    let x = honest();
    let mut f = x.finish.clone();
    f.token = WireToken::new(V4_TOKEN.to_uppercase());
    assert_eq!(
        v12::verify_finish(
            &f,
            &x.rb,
            &x.init,
            &x.resp,
            &digest(TOKEN_SHA256),
            now(),
            TTL
        )
        .unwrap_err(),
        Error::MalformedToken
    );
    let later = now() + Duration::from_secs(86_400);
    assert_eq!(
        v12::verify_finish(
            &x.finish,
            &x.rb,
            &x.init,
            &x.resp,
            &digest(TOKEN_SHA256),
            later,
            TTL
        )
        .unwrap_err(),
        Error::AckExpired
    );
    // The responder's shorter TTL wins.
    assert_eq!(
        v12::verify_finish(
            &x.finish,
            &x.rb,
            &x.init,
            &x.resp,
            &digest(TOKEN_SHA256),
            now(),
            Duration::from_secs(60)
        )
        .unwrap(),
        TS + 60
    );
}

#[test]
fn sign_finish_refuses_malformed_tokens() {
    let x = honest();
    let r = block_on(v12::sign_finish(
        &key(ALICE),
        &x.ib,
        &x.init,
        &x.resp,
        WireToken::new("abc".into()),
        &digest(TOKEN_SHA256),
        EXP,
    ));
    assert!(matches!(r, Err(Error::InvalidInput(_))));
}

// ---- M4 ----

#[test]
fn result_must_be_ok_and_not_extend_the_expiry() {
    let rejected = HandshakeResult::rejected(&Error::SignatureMismatch);
    assert_eq!(
        v12::check_result(&rejected, EXP).unwrap_err(),
        Error::RejectedByPeer("signature_mismatch".into())
    );
    assert!(matches!(
        v12::check_result(&HandshakeResult::ok(EXP + 1), EXP),
        Err(Error::RejectedByPeer(_))
    ));
    assert!(matches!(
        v12::check_result(&HandshakeResult::ok(0), EXP),
        Err(Error::RejectedByPeer(_))
    ));
    let missing_status = HandshakeResult {
        status: ResultStatus::Rejected,
        expires_at: EXP,
        error: String::new(),
    };
    assert!(matches!(
        v12::check_result(&missing_status, EXP),
        Err(Error::RejectedByPeer(_))
    ));
    assert_eq!(
        v12::check_result(&HandshakeResult::ok(EXP - 10), EXP).unwrap(),
        EXP - 10
    );
}

// ---- field checks ----

#[test]
fn version_and_algorithm_are_required() {
    let x = honest();
    for v in ["", "1.1", "1.2.0", " 1.2"] {
        let mut hl = x.hello.clone();
        hl.handshake_version = v.into();
        assert!(
            matches!(v12::check_hello(&hl, now()), Err(Error::Decode(_))),
            "{v:?}"
        );
        let mut p = x.proof.clone();
        p.handshake_version = v.into();
        assert!(matches!(
            v12::verify_proof(&p, &x.ib, &x.init, None),
            Err(Error::Decode(_))
        ));
    }
    for a in ["", "ed25519"] {
        let mut hl = x.hello.clone();
        hl.signature_algorithm = a.into();
        assert_eq!(
            v12::check_hello(&hl, now()).unwrap_err(),
            Error::UnsupportedAlgorithm(a.into())
        );
        let mut p = x.proof.clone();
        p.signature_algorithm = a.into();
        assert_eq!(
            v12::verify_proof(&p, &x.ib, &x.init, None).unwrap_err(),
            Error::UnsupportedAlgorithm(a.into())
        );
    }
}

#[test]
fn hello_timestamp_and_nonce_are_checked() {
    let ib = ChannelBinding::initiator(&peer(ALICE), &peer(VICTOR)).unwrap();
    let (old, _) = block_on(v12::sign_hello(&key(ALICE), &ib, nonce(), TS - 301)).unwrap();
    assert!(matches!(
        v12::check_hello(&old, now()),
        Err(Error::TimestampTooOld { .. })
    ));
    let (future, _) = block_on(v12::sign_hello(&key(ALICE), &ib, nonce(), TS + 31)).unwrap();
    assert!(matches!(
        v12::check_hello(&future, now()),
        Err(Error::TimestampInFuture { .. })
    ));
    let mut hl = honest().hello;
    hl.nonce.push(0);
    assert_eq!(
        v12::check_hello(&hl, now()).unwrap_err(),
        Error::InvalidNonce { len: 33 }
    );
    assert_eq!(
        v12::verify_hello(
            &hl,
            &ChannelBinding::responder(&peer(VICTOR), &peer(ALICE)).unwrap()
        )
        .unwrap_err(),
        Error::InvalidNonce { len: 33 }
    );
}

#[test]
fn hello_identity_must_be_bound() {
    let x = honest();
    // Mallory signs with her key and claims Alice's DID.
    let mut hl = x.hello.clone();
    hl.public_key = key(MALLORY).public_key().to_compressed().to_vec();
    assert_eq!(
        v12::verify_hello(&hl, &x.rb).unwrap_err(),
        Error::DidKeyMismatch
    );
    let mut hl = x.hello.clone();
    hl.public_key = key(ALICE).public_key().to_uncompressed().to_vec();
    assert_eq!(
        v12::verify_hello(&hl, &x.rb).unwrap_err(),
        Error::DidKeyMismatch
    );
    let mut hl = x.hello.clone();
    hl.sender_did = "did:lango:v2:abcd".into();
    assert_eq!(
        v12::verify_hello(&hl, &x.rb).unwrap_err(),
        Error::UnsupportedIdentity
    );
    let mut hl = x.hello.clone();
    hl.sender_did = DID_I.to_uppercase();
    assert!(matches!(
        v12::verify_hello(&hl, &x.rb),
        Err(Error::MalformedDid(_))
    ));
}

#[test]
fn hello_signature_checks() {
    let x = honest();
    let mut hl = x.hello.clone();
    hl.signature = high_s_twin(&hl.signature);
    assert!(matches!(
        v12::verify_hello(&hl, &x.rb),
        Err(Error::BadSignatureEncoding(_))
    ));
    let mut hl = x.hello.clone();
    hl.signature.clear();
    assert_eq!(
        v12::verify_hello(&hl, &x.rb).unwrap_err(),
        Error::BadSignatureLength(0)
    );
    let mut hl = x.hello.clone();
    hl.timestamp += 1;
    assert_eq!(
        v12::verify_hello(&hl, &x.rb).unwrap_err(),
        Error::SignatureMismatch
    );
}

#[test]
fn proof_checks() {
    let x = honest();
    let mut p = x.proof.clone();
    p.nonce[0] ^= 1;
    assert_eq!(
        v12::verify_proof(&p, &x.ib, &x.init, None).unwrap_err(),
        Error::NonceMismatch
    );
    let mut p = x.proof.clone();
    p.nonce.pop();
    assert_eq!(
        v12::verify_proof(&p, &x.ib, &x.init, None).unwrap_err(),
        Error::NonceMismatch
    );
    let mut p = x.proof.clone();
    p.responder_nonce.truncate(16);
    assert_eq!(
        v12::verify_proof(&p, &x.ib, &x.init, None).unwrap_err(),
        Error::InvalidNonce { len: 16 }
    );
    let mut p = x.proof.clone();
    p.did = DID_I.into();
    assert_eq!(
        v12::verify_proof(&p, &x.ib, &x.init, None).unwrap_err(),
        Error::DidKeyMismatch
    );
    let mut p = x.proof.clone();
    p.did = "did:lango:v2:x".into();
    assert_eq!(
        v12::verify_proof(&p, &x.ib, &x.init, None).unwrap_err(),
        Error::UnsupportedIdentity
    );
    assert!(matches!(
        v12::verify_proof(&x.proof, &x.ib, &x.init, Some(&did(MALLORY))),
        Err(Error::UnexpectedPeerDid { .. })
    ));
    let mut p = x.proof.clone();
    p.responder_nonce[0] ^= 1;
    assert_eq!(
        v12::verify_proof(&p, &x.ib, &x.init, None).unwrap_err(),
        Error::SignatureMismatch
    );
    let mut p = x.proof.clone();
    p.signature = high_s_twin(&p.signature);
    assert!(matches!(
        v12::verify_proof(&p, &x.ib, &x.init, None),
        Err(Error::BadSignatureEncoding(_))
    ));
}

#[test]
fn channel_binding_refuses_bad_peer_ids() {
    assert!(matches!(
        ChannelBinding::initiator(&[], &peer(1)),
        Err(Error::InvalidInput(_))
    ));
    assert!(matches!(
        ChannelBinding::initiator(&peer(1), &[0u8; 129]),
        Err(Error::InvalidInput(_))
    ));
    assert!(matches!(
        ChannelBinding::new("", &peer(1), &peer(2)),
        Err(Error::InvalidInput(_))
    ));
}

#[test]
fn responder_signs_only_transcripts() {
    // P-5: the only responder signature is over a transcript that starts with the domain label
    // and embeds the responder's own fresh nonce; it is never over the initiator's nonce alone.
    struct Recorder(std::sync::Mutex<Vec<Vec<u8>>>, WalletKey);
    #[async_trait::async_trait]
    impl lango_handshake::signer::Wallet for Recorder {
        async fn public_key(&self) -> Result<lango_crypto::wallet::PublicKey, Error> {
            Ok(self.1.public_key())
        }
        async fn sign_message(
            &self,
            m: &[u8],
        ) -> Result<lango_crypto::wallet::RecoverableSignature, Error> {
            self.0.lock().unwrap().push(m.to_vec());
            Ok(self.1.sign_message(m).unwrap())
        }
    }
    let w = Recorder(Default::default(), key(VICTOR));
    let x = honest();
    block_on(v12::sign_proof(&w, &x.rb, &x.init, [0x77; 32])).unwrap();
    let signed = w.0.lock().unwrap().clone();
    assert_eq!(signed.len(), 1);
    assert_eq!(&signed[0][..23], b"\x00\x00\x00\x13lango-p2p-handshake");
    assert!(signed[0].windows(32).any(|w| w == [0x77; 32]));
    assert!(signed[0].len() > 32);
}

mod properties {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(32))]

        /// A hello verifies only under the exact channel binding it was signed for.
        #[test]
        fn hello_binds_both_peer_ids(
            pi in prop::collection::vec(any::<u8>(), 1..64),
            pr in prop::collection::vec(any::<u8>(), 1..64),
            other in prop::collection::vec(any::<u8>(), 1..64),
            n in prop::array::uniform32(any::<u8>()),
        ) {
            let ib = ChannelBinding::initiator(&pi, &pr).unwrap();
            let (hello, init) = block_on(v12::sign_hello(&key(ALICE), &ib, n, TS)).unwrap();
            let rb = ChannelBinding::responder(&pr, &pi).unwrap();
            prop_assert_eq!(v12::verify_hello(&hello, &rb).unwrap(), init);
            if other != pi {
                let relayed = ChannelBinding::responder(&pr, &other).unwrap();
                prop_assert_eq!(v12::verify_hello(&hello, &relayed).unwrap_err(), Error::SignatureMismatch);
            }
            if other != pr {
                let forwarded = ChannelBinding::responder(&other, &pi).unwrap();
                prop_assert_eq!(v12::verify_hello(&hello, &forwarded).unwrap_err(), Error::SignatureMismatch);
            }
        }

        /// Transcripts of different roles or inputs never coincide, and all carry the label.
        #[test]
        fn transcripts_are_domain_separated(
            pi in prop::collection::vec(any::<u8>(), 1..64),
            pr in prop::collection::vec(any::<u8>(), 1..64),
            n in prop::array::uniform32(any::<u8>()),
            nr in prop::array::uniform32(any::<u8>()),
            exp in any::<i64>(),
        ) {
            let b = ChannelBinding::initiator(&pi, &pr).unwrap();
            let i = InitPart::new(n, TS, key(ALICE).public_key());
            let r = RespPart::new(nr, key(VICTOR).public_key());
            let a = v12::hello_sig_input(&b, &i);
            let p = v12::proof_sig_input(&b, &i, &r);
            let f = v12::finish_sig_input(&b, &i, &r, &digest(TOKEN_SHA256), exp);
            prop_assert!(a != p && p != f && a != f);
            for t in [&a, &p, &f] {
                prop_assert_eq!(&t[..23], b"\x00\x00\x00\x13lango-p2p-handshake".as_slice());
                // ≥ 300 bytes with real peer IDs (§6.2.4); never near 32 bytes in any case.
                prop_assert!(t.len() > 200);
            }
        }
    }
}
