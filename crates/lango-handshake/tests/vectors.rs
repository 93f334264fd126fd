//! The worked examples of spec §2.8 (V1–V4) and §6.2.6, byte for byte.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::*;
use futures::executor::block_on;
use lango_crypto::wallet::{LowS, PublicKey, keccak256, recover};
use lango_handshake::legacy::{self, InitiatorAuth, UnsignedReason};
use lango_handshake::messages::{Challenge, ChallengeResponse, SessionAck};
use lango_handshake::v12::{self, ChannelBinding, InitPart, RespPart, TokenDigest};
use lango_handshake::wire::{self, WireToken};

const CP_HEX: &str = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f
    000000006553f100
    6469643a6c616e676f3a303237396265363637656639646362626163353561303632393563653837306230373032396266636462326463653238643935396632383135623136663831373938";

#[test]
fn keys_and_dids_of_the_vectors() {
    assert_eq!(hex::encode(key(1).public_key().to_compressed()), PK_I);
    assert_eq!(hex::encode(key(2).public_key().to_compressed()), PK_R);
    assert_eq!(did(1).as_str(), DID_I);
    assert_eq!(did(2).as_str(), DID_R);
}

#[test]
fn v1_challenge_payload_hash_and_signature() {
    let cp = legacy::challenge_payload(&nonce(), 1_700_000_000, DID_I);
    assert_eq!(cp, h(CP_HEX));
    assert_eq!(cp.len(), 116);
    assert_eq!(
        hex::encode(keccak256(&cp)),
        "698d9a37e6b4b3f41c1d8e8667dc0142f55b31b78c7fb768f511eff7ac7de8c9"
    );
    let ch = block_on(legacy::sign_challenge(&key(1), &nonce(), 1_700_000_000)).unwrap();
    assert_eq!(ch.signature, h(SIG_I));
    assert_eq!(ch.signed_payload(), cp);
    // Verification relies on recovery, not on byte equality.
    let pk = recover(&keccak256(&cp), &h(SIG_I), LowS::Require).unwrap();
    assert_eq!(hex::encode(pk.to_compressed()), PK_I);
}

#[test]
fn v1_exact_wire_lines_signed_and_unsigned() {
    let ch = block_on(legacy::sign_challenge(&key(1), &nonce(), 1_700_000_000)).unwrap();
    let line = wire::encode_line(&ch).unwrap();
    assert_eq!(line, format!("{V1_LINE}\n").into_bytes());

    let unsigned = Challenge {
        nonce: nonce().to_vec(),
        timestamp: 1_700_000_000,
        sender_did: DID_I.to_owned(),
        ..Challenge::default()
    };
    assert_eq!(
        wire::encode_line(&unsigned).unwrap(),
        format!("{V1_UNSIGNED_LINE}\n").into_bytes()
    );
}

#[test]
fn v1_is_accepted_as_authenticated() {
    let ch: Challenge = wire::decode_message(V1_LINE.as_bytes()).unwrap();
    let v = legacy::validate_challenge(&ch, now(), None, true, None).unwrap();
    assert_eq!(v.sender_did.as_str(), DID_I);
    assert_eq!(
        v.auth,
        InitiatorAuth::Authenticated {
            public_key: key(1).public_key()
        }
    );
}

#[test]
fn v2_double_hash_form_and_oracle() {
    let cp = h(CP_HEX);
    let h1 = keccak256(&cp);
    assert_eq!(
        hex::encode(keccak256(&h1)),
        "11ce531088ad85f8cc69cb17f5506611ea1e92d4b0d30070ba97a31ad30b6fd0"
    );
    // What a 2856d8a9 Go initiator sends: SignMessage(Keccak-256(CP)).
    let sig = key(1).sign_message(&h1).unwrap();
    assert_eq!(sig.to_bytes().to_vec(), h(SIG_I_DOUBLE));
    assert_eq!(
        wire::base64_encode(&h(SIG_I_DOUBLE)),
        "x2WS3HPNfvz0SwcZF813qoV7kkyOoFwg/mfwHZPS+9w91o5i2mqWkZgBKWeXFE4AagvoAxfnsx7of7RCXhMF1AE="
    );
    let wrong = recover(&h1, &h(SIG_I_DOUBLE), LowS::Require).unwrap();
    assert_eq!(
        hex::encode(wrong.to_compressed()),
        "03ef4bbdeec18110d6008041de2a9642d0516db0bee4678490ac8e44e294dd360b"
    );
    // Oracle: a legacy responder with key 1 that receives nonce = Keccak-256(CP) returns
    // exactly sig_I_double.
    let resp = block_on(legacy::sign_response(&key(1), &h1)).unwrap();
    assert_eq!(resp.signature, h(SIG_I_DOUBLE));

    // Classified as unsigned (require=false) or refused (require=true), never authenticated.
    let mut ch: Challenge = wire::decode_message(V1_LINE.as_bytes()).unwrap();
    ch.signature = h(SIG_I_DOUBLE);
    let v = legacy::validate_challenge(&ch, now(), None, false, None).unwrap();
    assert_eq!(
        v.auth,
        InitiatorAuth::Unsigned(UnsignedReason::LegacyDoubleHash)
    );
    assert_eq!(
        legacy::validate_challenge(&ch, now(), None, true, None),
        Err(lango_handshake::Error::LegacySignatureRejected)
    );
}

#[test]
fn v3_response_signature_and_line() {
    assert_eq!(
        hex::encode(keccak256(&nonce())),
        "8ae1aa597fa146ebd3aa2ceddf360668dea5e526567e92b0321816a4e895bd2d"
    );
    let resp = block_on(legacy::sign_response(&key(2), &nonce())).unwrap();
    assert_eq!(resp.signature, h(SIG_R));
    assert_eq!(
        wire::encode_line(&resp).unwrap(),
        format!("{V3_LINE}\n").into_bytes()
    );
    let decoded: ChallengeResponse = wire::decode_message(V3_LINE.as_bytes()).unwrap();
    let v = legacy::verify_response(&decoded, &nonce(), Some(&did(2))).unwrap();
    assert_eq!(v.did.as_str(), DID_R);
    assert_eq!(v.public_key, key(2).public_key());
    assert!(!v.zk_proof_present);
}

#[test]
fn v4_session_ack_line() {
    let ack = SessionAck {
        token: WireToken::new(V4_TOKEN.to_owned()),
        expires_at: 1_700_086_400,
    };
    assert_eq!(
        wire::encode_line(&ack).unwrap(),
        format!("{V4_LINE}\n").into_bytes()
    );
    let back: SessionAck = wire::decode_message(V4_LINE.as_bytes()).unwrap();
    assert_eq!(back, ack);
}

#[test]
fn base64_sizes_on_the_wire() {
    let ch: Challenge = wire::decode_message(V1_LINE.as_bytes()).unwrap();
    let n = wire::base64_encode(&ch.nonce);
    let k = wire::base64_encode(&ch.public_key);
    let s = wire::base64_encode(&ch.signature);
    assert!(n.len() == 44 && n.ends_with('=') && !n.ends_with("=="));
    assert!(k.len() == 44 && !k.contains('='));
    assert!(s.len() == 88 && s.ends_with('=') && !s.ends_with("=="));
}

// ---- §6.2.6 ----

const PEER_I: &str = "002408011220d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a";
const PEER_R: &str = "0024080112203d4017c3e843895a92b70aa74d1b7ebc9c982ccf2ec4968cc0cd55f12af4660c";
const NONCE_R: &str = "202122232425262728292a2b2c2d2e2f303132333435363738393a3b3c3d3e3f";
const TOKEN_SHA256: &str = "328f14b73ddba36b1fca93b1a76d1b808d70093a0039ace346e3add92489eab8";

const HELLO_INPUT: &str = "000000136c616e676f2d7032702d68616e647368616b650000000f696e69746961746f722d68656c6c6f0000001c2f6c616e676f2f68616e647368616b652f312e322e302d626f756e6400000026002408011220d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a000000260024080112203d4017c3e843895a92b70aa74d1b7ebc9c982ccf2ec4968cc0cd55f12af4660c00000020000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f000000006553f1000000004c6469643a6c616e676f3a303237396265363637656639646362626163353561303632393563653837306230373032396266636462326463653238643935396632383135623136663831373938000000210279be667ef9dcbbac55a06295ce870b07029bfcdb2dce28d959f2815b16f81798";
const HELLO_HASH: &str = "d68df97bae3dbb32918b43376850af018d0655060f4ab2c3da02dcfa0f54374e";
const HELLO_SIG: &str = "353ea325eb9ed9a1ccc559df3b4484df9252b68e9c3bed211c7925ddada0b12d3b2865c63186d722030268f5195622386ec11f1ee2f548a2df7ac7c1416685ad01";

const PROOF_INPUT: &str = "000000136c616e676f2d7032702d68616e647368616b650000000f726573706f6e6465722d70726f6f660000001c2f6c616e676f2f68616e647368616b652f312e322e302d626f756e6400000026002408011220d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a000000260024080112203d4017c3e843895a92b70aa74d1b7ebc9c982ccf2ec4968cc0cd55f12af4660c00000020000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f000000006553f1000000004c6469643a6c616e676f3a303237396265363637656639646362626163353561303632393563653837306230373032396266636462326463653238643935396632383135623136663831373938000000210279be667ef9dcbbac55a06295ce870b07029bfcdb2dce28d959f2815b16f8179800000020202122232425262728292a2b2c2d2e2f303132333435363738393a3b3c3d3e3f0000004c6469643a6c616e676f3a3032633630343766393434316564376436643330343534303665393563303763643835633737386534623863656633636137616261633039623935633730396565350000002102c6047f9441ed7d6d3045406e95c07cd85c778e4b8cef3ca7abac09b95c709ee5";
const PROOF_HASH: &str = "84b19b118281d50e4337726a0986ee7abd533e359db331ea480e4979e56b7770";
const PROOF_SIG: &str = "d39d526dfd185ed5a60a124970f28fdaf40a3a227bf14e46bab2b97c3eaca6756324c542cce062b89dd5a60c49f8ffd506700856cbf4d5a0af5508c4baadc05300";

const FINISH_INPUT: &str = "000000136c616e676f2d7032702d68616e647368616b6500000010696e69746961746f722d66696e6973680000001c2f6c616e676f2f68616e647368616b652f312e322e302d626f756e6400000026002408011220d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a000000260024080112203d4017c3e843895a92b70aa74d1b7ebc9c982ccf2ec4968cc0cd55f12af4660c00000020000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f000000006553f1000000004c6469643a6c616e676f3a303237396265363637656639646362626163353561303632393563653837306230373032396266636462326463653238643935396632383135623136663831373938000000210279be667ef9dcbbac55a06295ce870b07029bfcdb2dce28d959f2815b16f8179800000020202122232425262728292a2b2c2d2e2f303132333435363738393a3b3c3d3e3f0000004c6469643a6c616e676f3a3032633630343766393434316564376436643330343534303665393563303763643835633737386534623863656633636137616261633039623935633730396565350000002102c6047f9441ed7d6d3045406e95c07cd85c778e4b8cef3ca7abac09b95c709ee500000020328f14b73ddba36b1fca93b1a76d1b808d70093a0039ace346e3add92489eab80000000065554280";
const FINISH_HASH: &str = "0676e07024c00a312da69cd03cbc3431a534c12a2bb1e9469894da442509dac0";
const FINISH_SIG: &str = "54d4b472da1134c62cbe7d6a4524f485a1c3c37a384750c2e0af7a2f1745b1e04b100f59568c72a4da0a8483a68ec985156d49a536bbeb3fccafbb207e5990d701";

fn parts() -> (ChannelBinding, InitPart, RespPart) {
    let b = ChannelBinding::initiator(&h(PEER_I), &h(PEER_R)).unwrap();
    assert_eq!(
        b,
        ChannelBinding::responder(&h(PEER_R), &h(PEER_I)).unwrap()
    );
    let i = InitPart::new(nonce(), 1_700_000_000, key(1).public_key());
    let r = RespPart::new(h(NONCE_R).try_into().unwrap(), key(2).public_key());
    (b, i, r)
}

fn token_digest() -> TokenDigest {
    TokenDigest(h(TOKEN_SHA256).try_into().unwrap())
}

fn assert_recovers(input: &[u8], sig: &str, pk: &PublicKey) {
    let got = recover(&keccak256(input), &h(sig), LowS::Require).unwrap();
    assert_eq!(&got, pk);
}

#[test]
fn v12_hello_transcript_hash_and_signature() {
    let (b, i, _) = parts();
    let input = v12::hello_sig_input(&b, &i);
    assert_eq!(input, h(HELLO_INPUT));
    assert_eq!(input.len(), 319);
    assert_eq!(hex::encode(keccak256(&input)), HELLO_HASH);
    assert_eq!(
        key(1).sign_message(&input).unwrap().to_bytes().to_vec(),
        h(HELLO_SIG)
    );
    assert_recovers(&input, HELLO_SIG, &key(1).public_key());

    let (hello, init) = block_on(v12::sign_hello(&key(1), &b, nonce(), 1_700_000_000)).unwrap();
    assert_eq!(init, i);
    assert_eq!(hello.signature, h(HELLO_SIG));
}

#[test]
fn v12_proof_transcript_hash_and_signature() {
    let (b, i, r) = parts();
    let input = v12::proof_sig_input(&b, &i, &r);
    assert_eq!(input, h(PROOF_INPUT));
    assert_eq!(input.len(), 472);
    assert_eq!(hex::encode(keccak256(&input)), PROOF_HASH);
    assert_eq!(
        key(2).sign_message(&input).unwrap().to_bytes().to_vec(),
        h(PROOF_SIG)
    );
    assert_recovers(&input, PROOF_SIG, &key(2).public_key());

    let (proof, resp) = block_on(v12::sign_proof(
        &key(2),
        &b,
        &i,
        h(NONCE_R).try_into().unwrap(),
    ))
    .unwrap();
    assert_eq!(resp, r);
    assert_eq!(proof.signature, h(PROOF_SIG));
}

#[test]
fn v12_finish_transcript_hash_and_signature() {
    let (b, i, r) = parts();
    let input = v12::finish_sig_input(&b, &i, &r, &token_digest(), 1_700_086_400);
    assert_eq!(input, h(FINISH_INPUT));
    assert_eq!(input.len(), 517);
    assert_eq!(hex::encode(keccak256(&input)), FINISH_HASH);
    assert_eq!(
        key(1).sign_message(&input).unwrap().to_bytes().to_vec(),
        h(FINISH_SIG)
    );
    assert_recovers(&input, FINISH_SIG, &key(1).public_key());

    let finish = block_on(v12::sign_finish(
        &key(1),
        &b,
        &i,
        &r,
        WireToken::new(V4_TOKEN.to_owned()),
        &token_digest(),
        1_700_086_400,
    ))
    .unwrap();
    assert_eq!(finish.signature, h(FINISH_SIG));
}

#[test]
fn v12_every_transcript_starts_with_the_domain_label_and_is_long() {
    let (b, i, r) = parts();
    for input in [
        v12::hello_sig_input(&b, &i),
        v12::proof_sig_input(&b, &i, &r),
        v12::finish_sig_input(&b, &i, &r, &token_digest(), 1_700_086_400),
    ] {
        assert_eq!(&input[..4], &[0, 0, 0, 0x13]);
        assert_eq!(&input[4..23], b"lango-p2p-handshake");
        assert!(input.len() >= 300, "{}", input.len());
        assert_ne!(input[0], 0x19);
    }
}

#[test]
fn v12_full_verification_chain_on_the_vectors() {
    let (b, i, r) = parts();
    let (hello, _) = block_on(v12::sign_hello(&key(1), &b, nonce(), 1_700_000_000)).unwrap();
    let rb = ChannelBinding::responder(&h(PEER_R), &h(PEER_I)).unwrap();
    assert_eq!(v12::check_hello(&hello, now()).unwrap(), nonce());
    assert_eq!(v12::verify_hello(&hello, &rb).unwrap(), i);
    let (proof, _) = block_on(v12::sign_proof(
        &key(2),
        &rb,
        &i,
        h(NONCE_R).try_into().unwrap(),
    ))
    .unwrap();
    assert_eq!(v12::verify_proof(&proof, &b, &i, Some(&did(2))).unwrap(), r);
    let finish = block_on(v12::sign_finish(
        &key(1),
        &b,
        &i,
        &r,
        WireToken::new(V4_TOKEN.to_owned()),
        &token_digest(),
        1_700_086_400,
    ))
    .unwrap();
    let fin = v12::verify_finish(
        &finish,
        &rb,
        &i,
        &r,
        &token_digest(),
        now(),
        std::time::Duration::from_secs(3600),
    )
    .unwrap();
    // Responder TTL 1 h < proposed 24 h: the final expiry is the responder's.
    assert_eq!(fin, 1_700_003_600);
}
