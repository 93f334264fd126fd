//! Decoder and encoder behaviour of spec §2.3 / §7 ("Crypto and encoding"), plus property tests.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::io::ErrorKind;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use common::*;
use futures::executor::block_on;
use futures::io::Cursor;
use lango_handshake::Error;
use lango_handshake::messages::{
    Challenge, ChallengeResponse, Finish, HandshakeResult, Hello, Proof, ResultStatus, SessionAck,
};
use lango_handshake::wire::{self, MessageReader, WireToken};
use proptest::prelude::*;

fn read_one<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T, Error> {
    block_on(MessageReader::new(Cursor::new(bytes.to_vec())).read_message::<T>())
}

fn v1() -> Challenge {
    read_one(V1_LINE.as_bytes()).unwrap()
}

// ---- accepted input ----

#[test]
fn decoder_accepts_keys_in_any_order() {
    let reordered = r#"{"signature":"LvMyZnxtRMX6MIe5knClf0gZiPgrevcabqnKiMcUUeYIrsddxFjdjI6QAtpMjAdr9DB068bVB3tQ+agW/LXb6AA=","publicKey":"Anm+Zn753LusVaBilc6HCwcCm/zbLc4o2VnygVsW+BeY","senderDid":"did:lango:0279be667ef9dcbbac55a06295ce870b07029bfcdb2dce28d959f2815b16f81798","timestamp":1700000000,"nonce":"AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8="}"#;
    assert_eq!(read_one::<Challenge>(reordered.as_bytes()).unwrap(), v1());
}

#[test]
fn decoder_ignores_unknown_keys_and_reads_head_fields() {
    let line = V1_LINE.replacen(
        "{",
        r#"{"bundle":{"signingKey":{"publicKey":"AA==","x":[1,{"y":null}]}},"future":[true,"}"],"kemPublicKey":"AQID","kemAlgorithm":"X25519-MLKEM768","signatureAlgorithm":"secp256k1-keccak256","#,
        1,
    );
    let ch: Challenge = read_one(line.as_bytes()).unwrap();
    assert_eq!(ch.kem_public_key, vec![1, 2, 3]);
    assert_eq!(ch.kem_algorithm, "X25519-MLKEM768");
    assert_eq!(ch.signature_algorithm, "secp256k1-keccak256");
    assert_eq!(ch.signature, v1().signature);
}

#[test]
fn decoder_accepts_null_and_absent_fields() {
    let ch: Challenge = read_one(
        br#"{"nonce":null,"timestamp":null,"senderDid":null,"publicKey":null,"signature":""}"#,
    )
    .unwrap();
    assert_eq!(ch, Challenge::default());
    let ch: Challenge = read_one(b"{}").unwrap();
    assert_eq!(ch, Challenge::default());
    let r: ChallengeResponse = read_one(br#"{"did":"x","publicKey":null}"#).unwrap();
    assert!(r.public_key.is_empty() && r.nonce.is_empty() && r.did == "x");
    let ack: SessionAck = read_one(br#"{"token":null}"#).unwrap();
    assert_eq!(ack.token.expose(), "");
    assert_eq!(ack.expires_at, 0);
}

#[test]
fn decoder_accepts_leading_whitespace_and_missing_final_lf() {
    let mut input = b" \t\r\n\n  ".to_vec();
    input.extend_from_slice(V1_LINE.as_bytes()); // no LF, then EOF
    assert_eq!(read_one::<Challenge>(&input).unwrap(), v1());
}

#[test]
fn decoder_accepts_an_object_split_over_lines() {
    let pretty = serde_json::to_string_pretty(&v1()).unwrap();
    assert!(pretty.contains('\n'));
    assert_eq!(read_one::<Challenge>(pretty.as_bytes()).unwrap(), v1());
}

#[test]
fn decoder_accepts_the_int64_bounds() {
    let ch: Challenge = read_one(br#"{"timestamp":-9223372036854775808}"#).unwrap();
    assert_eq!(ch.timestamp, i64::MIN);
    let ch: Challenge = read_one(br#"{"timestamp":9223372036854775807}"#).unwrap();
    assert_eq!(ch.timestamp, i64::MAX);
    // serde_json reads `-0` as a float, so it is refused (Go would read 0; no Go encoder ever
    // writes it).
    assert!(matches!(
        read_one::<Challenge>(br#"{"timestamp":-0}"#),
        Err(Error::Decode(_))
    ));
}

#[test]
fn decoder_accepts_json_escapes_inside_strings() {
    // Go decodes JSON escapes before base64 and string use.
    let ch: Challenge =
        read_one(br#"{"nonce":"\u0041\u0041\u0045\u0043","senderDid":"a\u003cb"}"#).unwrap();
    assert_eq!(ch.nonce, vec![0, 1, 2]);
    assert_eq!(ch.sender_did, "a<b");
}

#[test]
fn back_to_back_messages_in_one_write_are_both_read() {
    let resp_line = V3_LINE;
    let input = format!("{V1_LINE}\n{resp_line}\n{V4_LINE}\n");
    for chunk in [1, 7, 64, 4096] {
        let reader = CountingReader::new(input.as_bytes().to_vec(), chunk);
        let mut r = MessageReader::new(reader);
        let ch: Challenge = block_on(r.read_message()).unwrap();
        assert_eq!(ch, v1());
        let resp: ChallengeResponse = block_on(r.read_message()).unwrap();
        assert_eq!(resp.did, DID_R);
        let ack: SessionAck = block_on(r.read_message()).unwrap();
        assert_eq!(ack.expires_at, 1_700_086_400);
        let end = block_on(r.read_message::<SessionAck>()).unwrap_err();
        assert!(
            matches!(
                end,
                Error::Io {
                    kind: ErrorKind::UnexpectedEof,
                    ..
                }
            ),
            "{end:?}"
        );
    }
}

#[test]
fn message_without_lf_followed_by_next_message() {
    // Go's decoder does not need the LF; neither do we.
    let input = format!("{V4_LINE}{V4_LINE}");
    let mut r = MessageReader::new(Cursor::new(input.into_bytes()));
    for _ in 0..2 {
        let ack: SessionAck = block_on(r.read_message()).unwrap();
        assert_eq!(ack.token.expose(), V4_TOKEN);
    }
}

// ---- rejected input ----

#[test]
fn decoder_rejects_invalid_base64() {
    for bad in [
        r#"{"nonce":"AAECAw=A"}"#, // padding in the middle
        r#"{"nonce":"!!!!"}"#,
        r#"{"nonce":"AAECAwQ"}"#,    // missing padding
        r#"{"nonce":"AAEC_-Q="}"#,   // URL-safe alphabet
        r#"{"nonce":"AAEC\nAwQ="}"#, // CR/LF inside (Go skips them; we refuse)
        r#"{"nonce":"AAECAwQ=="}"#,  // wrong padding
        r#"{"nonce":12}"#,
        r#"{"nonce":[0,1]}"#,
    ] {
        let err = read_one::<Challenge>(bad.as_bytes()).unwrap_err();
        assert!(matches!(err, Error::Decode(_)), "{bad}: {err:?}");
    }
}

#[test]
fn decoder_rejects_non_integer_timestamps() {
    for bad in [
        r#"{"timestamp":1700000000.0}"#,
        r#"{"timestamp":1.7e9}"#,
        r#"{"timestamp":17e8}"#,
        r#"{"timestamp":"1700000000"}"#,
        r#"{"timestamp":9223372036854775808}"#,
        r#"{"timestamp":-9223372036854775809}"#,
        r#"{"timestamp":true}"#,
    ] {
        let err = read_one::<Challenge>(bad.as_bytes()).unwrap_err();
        assert!(matches!(err, Error::Decode(_)), "{bad}: {err:?}");
    }
}

#[test]
fn decoder_rejects_top_level_non_objects() {
    for bad in ["[]", "null", "\"x\"", "42", "true", "  [{}]", "}"] {
        let err = read_one::<Challenge>(bad.as_bytes()).unwrap_err();
        assert!(matches!(err, Error::Decode(_)), "{bad}: {err:?}");
        let err = wire::decode_message::<Challenge>(bad.as_bytes()).unwrap_err();
        assert!(matches!(err, Error::Decode(_)), "{bad}: {err:?}");
    }
}

#[test]
fn decoder_rejects_a_non_object_at_its_first_byte_without_reading_more() {
    let pulled = Arc::new(AtomicUsize::new(0));
    let reader = EndlessReader {
        byte: b'[',
        pulled: pulled.clone(),
    };
    let err = block_on(MessageReader::new(reader).read_message::<Challenge>()).unwrap_err();
    assert!(matches!(err, Error::Decode(_)));
    assert!(pulled.load(Ordering::SeqCst) <= 4096);
}

#[test]
fn decoder_rejects_truncated_json() {
    let line = V1_LINE.as_bytes();
    for cut in [1, 10, line.len() / 2, line.len() - 1] {
        let err = read_one::<Challenge>(&line[..cut]).unwrap_err();
        assert!(matches!(err, Error::Decode(_)), "cut {cut}: {err:?}");
    }
}

#[test]
fn decoder_rejects_malformed_json_inside_an_object() {
    for bad in [
        r#"{"nonce" "x"}"#,
        r#"{"timestamp":1,}"#,
        r#"{"a":[}"#,
        "{\"senderDid\":\"a\u{1}b\"}",
    ] {
        let err = read_one::<Challenge>(bad.as_bytes()).unwrap_err();
        assert!(matches!(err, Error::Decode(_)), "{bad}: {err:?}");
    }
}

#[test]
fn decoder_rejects_duplicate_keys() {
    let err = read_one::<Challenge>(br#"{"timestamp":1,"timestamp":2}"#).unwrap_err();
    assert!(matches!(err, Error::Decode(_)), "{err:?}");
}

#[test]
fn eof_before_any_message_is_an_io_error() {
    for input in [&b""[..], b"  \n\n"] {
        let err = read_one::<Challenge>(input).unwrap_err();
        assert!(
            matches!(
                err,
                Error::Io {
                    kind: ErrorKind::UnexpectedEof,
                    ..
                }
            ),
            "{err:?}"
        );
    }
}

#[test]
fn oversized_message_is_refused_without_buffering_beyond_the_limit() {
    // A 1 MiB object: refused, and no more than the limit was taken from the stream.
    let mut big = br#"{"senderDid":""#.to_vec();
    big.extend(std::iter::repeat_n(b'a', 1 << 20));
    big.extend_from_slice(b"\"}\n");
    let reader = CountingReader::new(big, 1 << 20);
    let pulled = reader.pulled.clone();
    let err = block_on(MessageReader::new(reader).read_message::<Challenge>()).unwrap_err();
    assert_eq!(err, Error::MessageTooLarge { limit: 65_536 });
    assert!(
        pulled.load(Ordering::SeqCst) <= 65_536,
        "{}",
        pulled.load(Ordering::SeqCst)
    );

    // An endless object never ends the read loop by itself: the limit does.
    let pulled = Arc::new(AtomicUsize::new(0));
    let mut r = MessageReader::with_limit(
        futures::io::AsyncReadExt::chain(
            Cursor::new(br#"{"a":""#.to_vec()),
            EndlessReader {
                byte: b'x',
                pulled: pulled.clone(),
            },
        ),
        10_000,
    );
    let err = block_on(r.read_message::<Challenge>()).unwrap_err();
    assert_eq!(err, Error::MessageTooLarge { limit: 10_000 });
    assert!(pulled.load(Ordering::SeqCst) <= 10_000);
}

#[test]
fn endless_leading_whitespace_counts_against_the_limit() {
    let pulled = Arc::new(AtomicUsize::new(0));
    let reader = EndlessReader {
        byte: b' ',
        pulled: pulled.clone(),
    };
    let err =
        block_on(MessageReader::with_limit(reader, 1000).read_message::<Challenge>()).unwrap_err();
    assert_eq!(err, Error::MessageTooLarge { limit: 1000 });
    assert!(pulled.load(Ordering::SeqCst) <= 1000);
}

/// A Challenge line of exactly `total` bytes including its LF.
fn line_of_len(total: usize) -> Vec<u8> {
    let base = wire::encode_line(&Challenge::default()).unwrap();
    // {"nonce":null,"timestamp":0,"senderDid":""}\n  — pad the DID.
    let pad = total - base.len();
    wire::encode_line(&Challenge {
        sender_did: "a".repeat(pad),
        ..Challenge::default()
    })
    .unwrap()
}

#[test]
fn limit_boundary_counts_the_lf() {
    let limit = 1000;
    let ok = line_of_len(limit);
    assert_eq!(ok.len(), limit);
    let ch: Challenge =
        block_on(MessageReader::with_limit(Cursor::new(ok.clone()), limit).read_message()).unwrap();
    assert!(!ch.sender_did.is_empty() && ch.sender_did.bytes().all(|c| c == b'a'));

    // Also without the LF at EOF: the LF's byte is reserved either way.
    let no_lf = &ok[..ok.len() - 1];
    assert!(
        block_on(
            MessageReader::with_limit(Cursor::new(no_lf.to_vec()), limit)
                .read_message::<Challenge>()
        )
        .is_ok()
    );

    let too_big = line_of_len(limit + 1);
    let err = block_on(
        MessageReader::with_limit(Cursor::new(too_big), limit).read_message::<Challenge>(),
    )
    .unwrap_err();
    assert_eq!(err, Error::MessageTooLarge { limit });
}

#[test]
fn limit_applies_per_message_not_per_stream() {
    let limit = 500;
    let one = line_of_len(400);
    let mut input = Vec::new();
    for _ in 0..10 {
        input.extend_from_slice(&one);
    }
    let mut r = MessageReader::with_limit(CountingReader::new(input, 333), limit);
    for _ in 0..10 {
        let _: Challenge = block_on(r.read_message()).unwrap();
        assert!(r.buffered().len() <= limit);
    }
}

#[test]
fn read_errors_are_io_errors() {
    struct Failing;
    impl futures::io::AsyncRead for Failing {
        fn poll_read(
            self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
            _: &mut [u8],
        ) -> std::task::Poll<std::io::Result<usize>> {
            std::task::Poll::Ready(Err(std::io::Error::new(
                ErrorKind::ConnectionReset,
                "reset",
            )))
        }
    }
    let err = block_on(MessageReader::new(Failing).read_message::<Challenge>()).unwrap_err();
    assert!(matches!(
        err,
        Error::Io {
            kind: ErrorKind::ConnectionReset,
            ..
        }
    ));
}

// ---- encoder ----

#[test]
fn encoder_escapes_like_go() {
    let ch = Challenge {
        sender_did: "<script>&\u{2028}\u{2029}\"\\\n\u{7}é😀".to_owned(),
        ..Challenge::default()
    };
    let line = String::from_utf8(wire::encode_line(&ch).unwrap()).unwrap();
    assert_eq!(
        line,
        "{\"nonce\":null,\"timestamp\":0,\"senderDid\":\"\\u003cscript\\u003e\\u0026\\u2028\\u2029\\\"\\\\\\n\\u0007é😀\"}\n"
    );
}

#[test]
fn encoder_field_order_and_omitempty_follow_the_go_structs() {
    let ch = Challenge {
        nonce: vec![1],
        timestamp: -5,
        sender_did: "d".into(),
        public_key: vec![2],
        signature: vec![3],
        signature_algorithm: "a".into(),
        kem_public_key: vec![4],
        kem_algorithm: "k".into(),
        zk_schemes: vec!["z".into()],
    };
    assert_eq!(
        wire::encode_line(&ch).unwrap(),
        br#"{"nonce":"AQ==","timestamp":-5,"senderDid":"d","publicKey":"Ag==","signature":"Aw==","signatureAlgorithm":"a","kemPublicKey":"BA==","kemAlgorithm":"k","zkSchemes":["z"]}
"#
    );
    let r = ChallengeResponse {
        nonce: vec![1],
        signature: vec![2],
        zk_proof: vec![3],
        did: "d".into(),
        public_key: vec![4],
        signature_algorithm: "a".into(),
        kem_ciphertext: vec![5],
        zk_scheme: "z".into(),
        zk_id_commitment: vec![6],
        zk_tag: vec![7],
        zk_id_binding: vec![8],
    };
    assert_eq!(
        wire::encode_line(&r).unwrap(),
        br#"{"nonce":"AQ==","signature":"Ag==","zkProof":"Aw==","did":"d","publicKey":"BA==","signatureAlgorithm":"a","kemCiphertext":"BQ==","zkScheme":"z","zkIdCommitment":"Bg==","zkTag":"Bw==","zkIdBinding":"CA=="}
"#
    );
    // publicKey is not omitempty in Go: a nil key is null.
    assert_eq!(
        wire::encode_line(&ChallengeResponse::default()).unwrap(),
        b"{\"nonce\":null,\"did\":\"\",\"publicKey\":null}\n"
    );
    assert_eq!(
        wire::encode_line(&HandshakeResult::ok(5)).unwrap(),
        b"{\"status\":\"ok\",\"expiresAt\":5}\n"
    );
    assert_eq!(
        wire::encode_line(&HandshakeResult::rejected(&Error::SignatureMismatch)).unwrap(),
        b"{\"status\":\"rejected\",\"error\":\"signature_mismatch\"}\n"
    );
    let hello = Hello::default();
    assert_eq!(
        wire::encode_line(&hello).unwrap(),
        br#"{"handshakeVersion":"","nonce":null,"timestamp":0,"senderDid":"","publicKey":null,"signatureAlgorithm":"","signature":null}
"#
    );
    assert_eq!(
        wire::encode_line(&Proof::default()).unwrap(),
        br#"{"handshakeVersion":"","nonce":null,"responderNonce":null,"did":"","publicKey":null,"signatureAlgorithm":"","signature":null}
"#
    );
    assert_eq!(
        wire::encode_line(&Finish::default()).unwrap(),
        b"{\"token\":\"\",\"expiresAt\":0,\"signature\":null}\n"
    );
}

#[test]
fn result_status_must_be_known() {
    let r: HandshakeResult = read_one(br#"{"status":"ok","expiresAt":7}"#).unwrap();
    assert_eq!((r.status, r.expires_at), (ResultStatus::Ok, 7));
    let r: HandshakeResult = read_one(br#"{}"#).unwrap();
    assert_eq!(r.status, ResultStatus::Rejected);
    assert!(matches!(
        read_one::<HandshakeResult>(br#"{"status":"OK"}"#),
        Err(Error::Decode(_))
    ));
}

#[test]
fn tokens_never_appear_in_debug_output() {
    let ack: SessionAck = read_one(V4_LINE.as_bytes()).unwrap();
    let dbg = format!("{ack:?}");
    assert!(!dbg.contains(V4_TOKEN), "{dbg}");
    assert!(dbg.contains("redacted"));
    let fin = Finish {
        token: WireToken::new(V4_TOKEN.into()),
        ..Finish::default()
    };
    assert!(!format!("{fin:?}").contains(V4_TOKEN));
}

#[test]
fn write_message_writes_the_line_and_flushes() {
    let mut out = Cursor::new(Vec::new());
    block_on(wire::write_message(&mut out, &v1())).unwrap();
    assert_eq!(out.into_inner(), format!("{V1_LINE}\n").into_bytes());
}

// ---- properties ----

fn bytes() -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(any::<u8>(), 0..80)
}

fn text() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<String>(),
        "[<>&\u{2028}\u{2029}\"\\\\\n\r\t\u{0}-\u{1f}a-z{}\\[\\]]{0,20}",
    ]
}

prop_compose! {
    fn challenge()(nonce in bytes(), timestamp in any::<i64>(), sender_did in text(),
                   public_key in bytes(), signature in bytes(), signature_algorithm in text(),
                   kem_public_key in bytes(), kem_algorithm in text()) -> Challenge {
        Challenge { nonce, timestamp, sender_did, public_key, signature, signature_algorithm,
                    kem_public_key, kem_algorithm, zk_schemes: Vec::new() }
    }
}

prop_compose! {
    fn response()(nonce in bytes(), signature in bytes(), zk_proof in bytes(), did in text(),
                  public_key in bytes(), signature_algorithm in text(), kem_ciphertext in bytes())
                  -> ChallengeResponse {
        ChallengeResponse { nonce, signature, zk_proof, did, public_key, signature_algorithm,
                            kem_ciphertext, ..ChallengeResponse::default() }
    }
}

prop_compose! {
    fn hello()(handshake_version in text(), nonce in bytes(), timestamp in any::<i64>(),
               sender_did in text(), public_key in bytes(), signature_algorithm in text(),
               signature in bytes()) -> Hello {
        Hello { handshake_version, nonce, timestamp, sender_did, public_key, signature_algorithm,
                signature, zk_schemes: Vec::new() }
    }
}

prop_compose! {
    fn proof()(handshake_version in text(), nonce in bytes(), responder_nonce in bytes(),
               did in text(), public_key in bytes(), signature_algorithm in text(),
               signature in bytes()) -> Proof {
        Proof { handshake_version, nonce, responder_nonce, did, public_key, signature_algorithm,
                signature, ..Proof::default() }
    }
}

fn assert_line_shape(line: &[u8]) {
    assert_eq!(line.last(), Some(&b'\n'));
    let body = &line[..line.len() - 1];
    assert!(!body.contains(&b'\n'));
    assert!(!body.contains(&b'<') && !body.contains(&b'>') && !body.contains(&b'&'));
    let s = std::str::from_utf8(body).unwrap();
    assert!(!s.contains('\u{2028}') && !s.contains('\u{2029}'));
}

proptest! {
    #[test]
    fn challenge_round_trips(ch in challenge()) {
        let line = wire::encode_line(&ch).unwrap();
        assert_line_shape(&line);
        prop_assert_eq!(read_one::<Challenge>(&line).unwrap(), ch.clone());
        // serde_json agrees that the line is one JSON value.
        let v: serde_json::Value = serde_json::from_slice(&line).unwrap();
        prop_assert!(v.is_object());
    }

    #[test]
    fn response_round_trips(r in response()) {
        let line = wire::encode_line(&r).unwrap();
        assert_line_shape(&line);
        prop_assert_eq!(read_one::<ChallengeResponse>(&line).unwrap(), r);
    }

    #[test]
    fn ack_finish_and_result_round_trip(token in text(), exp in any::<i64>(), sig in bytes(),
                                        ok in any::<bool>(), err in text()) {
        let ack = SessionAck { token: WireToken::new(token.clone()), expires_at: exp };
        let line = wire::encode_line(&ack).unwrap();
        assert_line_shape(&line);
        prop_assert_eq!(read_one::<SessionAck>(&line).unwrap(), ack);
        let fin = Finish { token: WireToken::new(token), expires_at: exp, signature: sig };
        prop_assert_eq!(read_one::<Finish>(&wire::encode_line(&fin).unwrap()).unwrap(), fin);
        let res = HandshakeResult {
            status: if ok { ResultStatus::Ok } else { ResultStatus::Rejected },
            expires_at: exp,
            error: err,
        };
        prop_assert_eq!(read_one::<HandshakeResult>(&wire::encode_line(&res).unwrap()).unwrap(), res);
    }

    #[test]
    fn hello_and_proof_round_trip(hl in hello(), p in proof()) {
        prop_assert_eq!(read_one::<Hello>(&wire::encode_line(&hl).unwrap()).unwrap(), hl);
        prop_assert_eq!(read_one::<Proof>(&wire::encode_line(&p).unwrap()).unwrap(), p);
    }

    #[test]
    fn streams_of_messages_survive_any_chunking(msgs in prop::collection::vec(challenge(), 1..6),
                                                chunk in 1usize..300, ws in "[ \t\r\n]{0,3}") {
        let mut input = Vec::new();
        for m in &msgs {
            input.extend_from_slice(ws.as_bytes());
            input.extend_from_slice(&wire::encode_line(m).unwrap());
        }
        let mut r = MessageReader::new(CountingReader::new(input, chunk));
        for m in &msgs {
            prop_assert_eq!(&block_on(r.read_message::<Challenge>()).unwrap(), m);
        }
        let end = block_on(r.read_message::<Challenge>()).unwrap_err();
        let is_eof = matches!(end, Error::Io { kind: ErrorKind::UnexpectedEof, .. });
        prop_assert!(is_eof);
    }

    #[test]
    fn base64_matches_the_standard_padded_encoding(b in bytes()) {
        let s = wire::base64_encode(&b);
        prop_assert_eq!(s.len() % 4, 0);
        prop_assert!(s.bytes().all(|c| c.is_ascii_alphanumeric() || c == b'+' || c == b'/' || c == b'='));
        prop_assert_eq!(wire::base64_decode(&s).unwrap(), b);
    }

    #[test]
    fn arbitrary_input_never_panics_and_never_exceeds_the_limit(data in prop::collection::vec(any::<u8>(), 0..2000),
                                                                 chunk in 1usize..500) {
        let reader = CountingReader::new(data, chunk);
        let pulled = reader.pulled.clone();
        let mut r = MessageReader::with_limit(reader, 256);
        for _ in 0..4 {
            let _ = block_on(r.read_message::<Challenge>());
        }
        // Each read takes at most one limit's worth beyond what is buffered.
        prop_assert!(pulled.load(Ordering::SeqCst) <= 4 * 256);
    }
}

#[test]
fn deep_nesting_never_overflows_the_stack() {
    let nested = format!("{}{}", "[".repeat(30_000), "]".repeat(30_000));
    // In an unknown key it is skipped (iteratively), as Go skips it.
    let ch: Challenge = read_one(format!(r#"{{"bundle":{nested}}}"#).as_bytes()).unwrap();
    assert_eq!(ch, Challenge::default());
    // In a known key it is a type error.
    let err = read_one::<Challenge>(format!(r#"{{"nonce":{nested}}}"#).as_bytes()).unwrap_err();
    assert!(matches!(err, Error::Decode(_)), "{err:?}");
    // Unbalanced nesting up to the limit: refused as too large, not by recursion.
    let open = format!(r#"{{"bundle":{}"#, "[".repeat(70_000));
    let err = read_one::<Challenge>(open.as_bytes()).unwrap_err();
    assert_eq!(err, Error::MessageTooLarge { limit: 65_536 });
}
