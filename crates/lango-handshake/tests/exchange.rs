//! The legacy responder and initiator state machines over in-memory streams (§3.2, §3.3).
//! Every rejection asserts the error variant, that nothing was sent, and that no session exists.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;
use lango_crypto::wallet::WalletKey;
use lango_handshake::Error;
use lango_handshake::clock::{Clock, ManualClock};
use lango_handshake::exchange::{HandshakeConfig, Initiator, Responder, StreamContext};
use lango_handshake::hooks::{ApprovalHook, DowngradePins, MemoryPins, PendingHandshake};
use lango_handshake::messages::{Challenge, ChallengeResponse, SessionAck};
use lango_handshake::nonce::{NonceCache, wired_nonce_ttl};
use lango_handshake::protocol::Protocol;
use lango_handshake::signer::Wallet;
use lango_handshake::wire::{self, MessageReader};
use lango_session::{SessionConfig, SessionStore};

const PEER_I: &str = "12D3KooWQK1wnefoLrcVHbbnf5tLzbopUd3K3bFAoJpA7YJgL5pV";
const PEER_R: &str = "12D3KooWDwTirQce1RRKnasT5fPVFgzXCy6SiRgSwrwPGLC7zE91";
const PEER_X: &str = "12D3KooWJ7vD9cUq1HvnGs6sV6ny2xzA4xN3N3M4Fy7fQJvKZ8aB";

fn clock() -> Arc<ManualClock> {
    Arc::new(ManualClock::at_unix(NOW))
}

fn store(clock: &Arc<ManualClock>) -> SessionStore {
    SessionStore::builder(&SessionConfig::default())
        .clock(clock.clone())
        .build()
        .unwrap()
}

fn wallet(n: u8) -> Arc<dyn Wallet> {
    Arc::new(key(n))
}

fn ctx(local: &str, remote: &str, protocol: Protocol) -> StreamContext {
    StreamContext {
        local_peer_id: local.into(),
        remote_peer_id: remote.into(),
        remote_addr: "/ip4/127.0.0.1/tcp/9000".into(),
        protocol,
    }
}

fn rctx() -> StreamContext {
    ctx(PEER_R, PEER_I, Protocol::Legacy11)
}

struct R {
    responder: Arc<Responder>,
    store: SessionStore,
    clock: Arc<ManualClock>,
}

fn responder_with(config: HandshakeConfig, f: impl FnOnce(Responder) -> Responder) -> R {
    let clock = clock();
    let store = store(&clock);
    let cache = Arc::new(NonceCache::with_clock(
        wired_nonce_ttl(Duration::from_secs(30)),
        0,
        clock.clone(),
    ));
    let c: Arc<dyn Clock> = clock.clone();
    let responder = f(Responder::new(wallet(2), store.clone(), cache, c, config));
    R {
        responder: Arc::new(responder),
        store,
        clock,
    }
}

fn responder(config: HandshakeConfig) -> R {
    responder_with(config, |r| r)
}

/// Plays a scripted initiator against `r`: sends `challenge`, and if a response comes, sends
/// `ack`. Returns the responder's result, the response (if any) and what the responder wrote.
async fn drive(
    r: &R,
    c: &StreamContext,
    challenge: &[u8],
    ack: Option<&[u8]>,
) -> (
    Result<lango_session::SessionInfo, Error>,
    Option<ChallengeResponse>,
    Vec<u8>,
) {
    let (mine, theirs) = duplex();
    let written = theirs.written.clone();
    let responder = r.responder.clone();
    let c2 = c.clone();
    let task = tokio::spawn(async move { responder.handle(theirs, &c2).await });
    let mut reader = MessageReader::new(mine);
    futures::io::AsyncWriteExt::write_all(reader.get_mut(), challenge)
        .await
        .unwrap();
    let resp = reader.read_message::<ChallengeResponse>().await.ok();
    if let (Some(_), Some(ack)) = (&resp, ack) {
        futures::io::AsyncWriteExt::write_all(reader.get_mut(), ack)
            .await
            .unwrap();
    }
    let result = task.await.unwrap();
    drop(reader);
    let w = written.lock().unwrap().clone();
    (result, resp, w)
}

fn line(s: &str) -> Vec<u8> {
    format!("{s}\n").into_bytes()
}

fn ack_line(token: &str, exp: i64) -> Vec<u8> {
    wire::encode_line(&SessionAck {
        token: lango_handshake::wire::WireToken::new(token.into()),
        expires_at: exp,
    })
    .unwrap()
}

fn challenge_line(ch: &Challenge) -> Vec<u8> {
    wire::encode_line(ch).unwrap()
}

fn signed(signer: &WalletKey, sender_did: &str, nonce: &[u8], ts: i64) -> Challenge {
    let cp = lango_handshake::legacy::challenge_payload(nonce, ts, sender_did);
    Challenge {
        nonce: nonce.to_vec(),
        timestamp: ts,
        sender_did: sender_did.to_owned(),
        public_key: signer.public_key().to_compressed().to_vec(),
        signature: signer.sign_message(&cp).unwrap().to_bytes().to_vec(),
        ..Challenge::default()
    }
}

async fn assert_refused(r: &R, c: &StreamContext, challenge: &[u8], expected: Error) {
    let (res, resp, written) = drive(r, c, challenge, Some(&line(V4_LINE))).await;
    assert_eq!(res.unwrap_err(), expected);
    assert!(resp.is_none(), "a response was sent");
    assert!(written.is_empty(), "bytes were sent");
    assert!(r.store.is_empty(), "a session was stored");
}

// ---- responder: happy paths ----

#[tokio::test]
async fn responder_signed_v1_exchange_matches_the_vectors() {
    let r = responder(HandshakeConfig::default());
    let (res, resp, written) = drive(&r, &rctx(), &line(V1_LINE), Some(&line(V4_LINE))).await;
    let s = res.unwrap();
    // The response line is exactly V3.
    assert_eq!(written, line(V3_LINE));
    assert!(resp.unwrap().zk_proof.is_empty());
    assert_eq!(s.peer_did, DID_I);
    assert!(s.authenticated && !s.channel_bound && !s.zk_verified);
    assert_eq!(s.peer_id, PEER_I);
    assert_eq!(s.protocol, "/lango/handshake/1.1.0");
    assert_eq!(
        lango_handshake::clock::unix_seconds(s.expires_at),
        1_700_086_400
    );
    assert!(r.store.validate(DID_I, V4_TOKEN));
    assert!(r.store.resolve(V4_TOKEN, PEER_I).is_ok());
}

#[tokio::test]
async fn responder_accepts_unsigned_when_allowed() {
    let r = responder(HandshakeConfig::default());
    let (res, _, _) = drive(&r, &rctx(), &line(V1_UNSIGNED_LINE), Some(&line(V4_LINE))).await;
    let s = res.unwrap();
    assert!(!s.authenticated);
    // Only publicKey: unsigned as well.
    let r = responder(HandshakeConfig::default());
    let mut ch: Challenge = wire::decode_message(V1_LINE.as_bytes()).unwrap();
    ch.signature.clear();
    let (res, _, _) = drive(&r, &rctx(), &challenge_line(&ch), Some(&line(V4_LINE))).await;
    assert!(!res.unwrap().authenticated);
}

#[tokio::test]
async fn responder_treats_double_hash_as_unsigned_or_refuses_it() {
    let mut ch: Challenge = wire::decode_message(V1_LINE.as_bytes()).unwrap();
    ch.signature = h(SIG_I_DOUBLE);
    let r = responder(HandshakeConfig::default());
    let (res, _, _) = drive(&r, &rctx(), &challenge_line(&ch), Some(&line(V4_LINE))).await;
    assert!(!res.unwrap().authenticated);
    let r = responder(HandshakeConfig {
        require_signed_challenge: true,
        ..Default::default()
    });
    assert_refused(
        &r,
        &rctx(),
        &challenge_line(&ch),
        Error::LegacySignatureRejected,
    )
    .await;
}

#[tokio::test]
async fn responder_clamps_the_ack_expiry() {
    let r = responder(HandshakeConfig::default());
    let (res, _, _) = drive(
        &r,
        &rctx(),
        &line(V1_LINE),
        Some(&ack_line(V4_TOKEN, 253_402_300_799)),
    )
    .await;
    let s = res.unwrap();
    assert_eq!(
        lango_handshake::clock::unix_seconds(s.expires_at),
        NOW as i64 + 86_400
    );
}

// ---- responder: rejections ----

#[tokio::test]
async fn responder_refuses_unsigned_when_required() {
    let r = responder(HandshakeConfig {
        require_signed_challenge: true,
        ..Default::default()
    });
    assert_refused(
        &r,
        &rctx(),
        &line(V1_UNSIGNED_LINE),
        Error::UnsignedRejected,
    )
    .await;
}

#[tokio::test]
async fn responder_refuses_a_did_of_another_key() {
    let r = responder(HandshakeConfig::default());
    let ch = signed(&key(3), DID_I, &nonce(), NOW as i64);
    assert_refused(&r, &rctx(), &challenge_line(&ch), Error::DidKeyMismatch).await;
}

#[tokio::test]
async fn responder_refuses_high_s_and_bad_v() {
    let r = responder(HandshakeConfig::default());
    let mut ch: Challenge = wire::decode_message(V1_LINE.as_bytes()).unwrap();
    ch.signature = high_s_twin(&ch.signature);
    let (res, resp, written) = drive(&r, &rctx(), &challenge_line(&ch), None).await;
    assert!(matches!(res, Err(Error::BadSignatureEncoding(_))));
    assert!(resp.is_none() && written.is_empty() && r.store.is_empty());
    let mut ch: Challenge = wire::decode_message(V1_LINE.as_bytes()).unwrap();
    ch.nonce = vec![9; 32];
    ch.signature[64] = 27;
    let (res, _, written) = drive(&r, &rctx(), &challenge_line(&ch), None).await;
    assert!(matches!(res, Err(Error::BadSignatureEncoding(_))));
    assert!(written.is_empty());
}

#[tokio::test]
async fn responder_never_signs_a_long_nonce() {
    let r = responder(HandshakeConfig::default());
    let mut n = vec![0x19, 0x01];
    n.extend_from_slice(&[0xab; 64]);
    let ch = Challenge {
        nonce: n,
        timestamp: NOW as i64,
        sender_did: DID_I.into(),
        ..Challenge::default()
    };
    assert_refused(
        &r,
        &rctx(),
        &challenge_line(&ch),
        Error::InvalidNonce { len: 66 },
    )
    .await;
}

#[tokio::test]
async fn responder_refuses_replays_across_streams() {
    let r = responder(HandshakeConfig::default());
    let (res, _, _) = drive(&r, &rctx(), &line(V1_LINE), Some(&line(V4_LINE))).await;
    assert!(res.is_ok());
    r.store.remove(DID_I);
    r.clock.advance(Duration::from_secs(120));
    let (res, resp, written) = drive(&r, &rctx(), &line(V1_LINE), Some(&line(V4_LINE))).await;
    assert_eq!(res.unwrap_err(), Error::NonceReplay);
    assert!(resp.is_none() && written.is_empty() && r.store.is_empty());
}

#[tokio::test]
async fn responder_refuses_stale_and_future_timestamps() {
    let r = responder(HandshakeConfig::default());
    let ch = signed(&key(1), DID_I, &nonce(), NOW as i64 - 301);
    let (res, _, written) = drive(&r, &rctx(), &challenge_line(&ch), None).await;
    assert!(matches!(res, Err(Error::TimestampTooOld { .. })) && written.is_empty());
    let ch = signed(&key(1), DID_I, &[5; 32], NOW as i64 + 31);
    let (res, _, written) = drive(&r, &rctx(), &challenge_line(&ch), None).await;
    assert!(matches!(res, Err(Error::TimestampInFuture { .. })) && written.is_empty());
}

#[tokio::test]
async fn responder_refuses_unsupported_algorithms_and_v2_dids() {
    let r = responder(HandshakeConfig::default());
    let mut ch: Challenge = wire::decode_message(V1_LINE.as_bytes()).unwrap();
    ch.signature_algorithm = "ed25519".into();
    assert_refused(
        &r,
        &rctx(),
        &challenge_line(&ch),
        Error::UnsupportedAlgorithm("ed25519".into()),
    )
    .await;
    let ch = Challenge {
        nonce: vec![3; 32],
        timestamp: NOW as i64,
        sender_did: "did:lango:v2:0011".into(),
        ..Challenge::default()
    };
    assert_refused(
        &r,
        &rctx(),
        &challenge_line(&ch),
        Error::UnsupportedIdentity,
    )
    .await;
}

#[tokio::test]
async fn responder_refuses_an_unauthenticated_claim_of_its_own_did() {
    let r = responder(HandshakeConfig::default());
    let ch = Challenge {
        nonce: vec![4; 32],
        timestamp: NOW as i64,
        sender_did: DID_R.into(),
        ..Challenge::default()
    };
    assert_refused(&r, &rctx(), &challenge_line(&ch), Error::SelfDid).await;
}

#[tokio::test]
async fn responder_refuses_oversized_and_truncated_messages() {
    let r = responder(HandshakeConfig {
        max_message_bytes: 1024,
        ..Default::default()
    });
    let mut big = V1_LINE.replacen("{", &format!("{{\"pad\":\"{}\",", "x".repeat(2000)), 1);
    big.push('\n');
    assert_refused(
        &r,
        &rctx(),
        big.as_bytes(),
        Error::MessageTooLarge { limit: 1024 },
    )
    .await;

    // Truncated: the initiator closes the stream mid-object.
    let (mine, theirs) = duplex();
    let written = theirs.written.clone();
    let responder = r.responder.clone();
    let task = tokio::spawn(async move { responder.handle(theirs, &rctx()).await });
    let mut mine = mine;
    futures::io::AsyncWriteExt::write_all(&mut mine, &V1_LINE.as_bytes()[..50])
        .await
        .unwrap();
    drop(mine);
    assert!(matches!(task.await.unwrap(), Err(Error::Decode(_))));
    assert!(written.lock().unwrap().is_empty() && r.store.is_empty());
}

#[tokio::test]
async fn responder_validates_the_ack() {
    for (ack, expected) in [
        (
            ack_line(&V4_TOKEN[..63], 1_700_086_400),
            Error::MalformedToken,
        ),
        (
            ack_line(&V4_TOKEN.to_uppercase(), 1_700_086_400),
            Error::MalformedToken,
        ),
        (ack_line("", 1_700_086_400), Error::MalformedToken),
        (ack_line(V4_TOKEN, NOW as i64 - 1), Error::AckExpired),
    ] {
        let r = responder(HandshakeConfig::default());
        let (res, resp, _) = drive(&r, &rctx(), &line(V1_LINE), Some(&ack)).await;
        assert!(resp.is_some());
        assert_eq!(res.unwrap_err(), expected);
        assert!(r.store.is_empty());
    }
}

#[tokio::test]
async fn responder_refuses_a_token_in_use_for_another_did() {
    let r = responder(HandshakeConfig::default());
    let (res, _, _) = drive(&r, &rctx(), &line(V1_LINE), Some(&line(V4_LINE))).await;
    assert!(res.is_ok());
    // Key 3 reuses the same token for its own DID.
    let ch = signed(&key(3), did(3).as_str(), &[8; 32], NOW as i64);
    let c = ctx(PEER_R, PEER_X, Protocol::Legacy10);
    let (res, _, _) = drive(&r, &c, &challenge_line(&ch), Some(&line(V4_LINE))).await;
    assert_eq!(res.unwrap_err(), Error::DuplicateToken);
    assert!(r.store.get(did(3).as_str()).is_none());
}

#[tokio::test]
async fn responder_overwrite_guard() {
    let r = responder(HandshakeConfig::default());
    let (res, _, _) = drive(&r, &rctx(), &line(V1_LINE), Some(&line(V4_LINE))).await;
    assert!(res.unwrap().authenticated);
    // An unsigned claim of DID_I from another peer: refused, the session stays.
    let unsigned = Challenge {
        nonce: vec![6; 32],
        timestamp: NOW as i64,
        sender_did: DID_I.into(),
        ..Challenge::default()
    };
    let other = ctx(PEER_R, PEER_X, Protocol::Legacy11);
    let (res, resp, written) = drive(
        &r,
        &other,
        &challenge_line(&unsigned),
        Some(&ack_line(&"a".repeat(64), NOW as i64 + 60)),
    )
    .await;
    assert_eq!(res.unwrap_err(), Error::AuthenticatedSessionExists);
    assert!(resp.is_none() && written.is_empty());
    assert_eq!(r.store.get(DID_I).unwrap().peer_id, PEER_I);
    // The same from the original peer replaces it.
    let mut again = unsigned.clone();
    again.nonce = vec![7; 32];
    let (res, _, _) = drive(
        &r,
        &rctx(),
        &challenge_line(&again),
        Some(&ack_line(&"b".repeat(64), NOW as i64 + 60)),
    )
    .await;
    assert!(!res.unwrap().authenticated);
    assert!(r.store.validate(DID_I, &"b".repeat(64)));
}

#[derive(Default)]
struct Recorder {
    calls: Mutex<Vec<PendingHandshake>>,
    answer: Mutex<Option<Result<bool, String>>>,
    delay: Option<Duration>,
}

#[async_trait::async_trait]
impl ApprovalHook for Recorder {
    async fn approve(&self, p: &PendingHandshake) -> Result<bool, String> {
        self.calls.lock().unwrap().push(p.clone());
        if let Some(d) = self.delay {
            tokio::time::sleep(d).await;
        }
        self.answer.lock().unwrap().clone().unwrap_or(Ok(true))
    }
}

fn with_hook(config: HandshakeConfig, hook: Arc<Recorder>) -> R {
    responder_with(config, move |r| r.with_approval(hook))
}

#[tokio::test]
async fn approval_hook_gets_the_pending_handshake() {
    let hook = Arc::new(Recorder::default());
    let r = with_hook(HandshakeConfig::default(), hook.clone());
    let (res, _, _) = drive(&r, &rctx(), &line(V1_LINE), Some(&line(V4_LINE))).await;
    assert!(res.is_ok());
    let calls = hook.calls.lock().unwrap().clone();
    assert_eq!(calls.len(), 1);
    let p = &calls[0];
    assert_eq!(p.peer_id, PEER_I);
    assert_eq!(p.peer_did, DID_I);
    assert_eq!(p.remote_addr, "/ip4/127.0.0.1/tcp/9000");
    assert_eq!(p.timestamp, now());
    assert!(p.authenticated);
    assert_eq!(
        serde_json::to_string(p).unwrap(),
        format!(
            r#"{{"peerId":"{PEER_I}","peerDid":"{DID_I}","remoteAddr":"/ip4/127.0.0.1/tcp/9000","timestamp":"2023-11-14T22:13:20Z","authenticated":true}}"#
        )
    );
}

#[tokio::test]
async fn approval_denied_or_failing_sends_nothing() {
    let hook = Arc::new(Recorder::default());
    *hook.answer.lock().unwrap() = Some(Ok(false));
    let r = with_hook(HandshakeConfig::default(), hook.clone());
    assert_refused(&r, &rctx(), &line(V1_LINE), Error::ApprovalDenied).await;

    let hook = Arc::new(Recorder::default());
    *hook.answer.lock().unwrap() = Some(Err("ui gone".into()));
    let r = with_hook(HandshakeConfig::default(), hook);
    assert_refused(
        &r,
        &rctx(),
        &line(V1_LINE),
        Error::ApprovalError("ui gone".into()),
    )
    .await;
}

#[tokio::test]
async fn slow_approval_hits_the_deadline() {
    let hook = Arc::new(Recorder {
        delay: Some(Duration::from_secs(30)),
        ..Default::default()
    });
    let r = with_hook(
        HandshakeConfig {
            handshake_timeout: Duration::from_millis(200),
            ..Default::default()
        },
        hook,
    );
    assert_refused(&r, &rctx(), &line(V1_LINE), Error::Timeout).await;
}

#[tokio::test]
async fn auto_approve_skips_the_hook_only_for_known_authenticated_peers() {
    let hook = Arc::new(Recorder::default());
    let config = HandshakeConfig {
        auto_approve_known_peers: true,
        ..Default::default()
    };
    let r = with_hook(config.clone(), hook.clone());
    // First handshake: unknown, hook called.
    let (res, _, _) = drive(&r, &rctx(), &line(V1_LINE), Some(&line(V4_LINE))).await;
    assert!(res.is_ok());
    assert_eq!(hook.calls.lock().unwrap().len(), 1);
    // Known authenticated session + authenticated challenge: not called.
    let ch = signed(&key(1), DID_I, &[1; 32], NOW as i64);
    let (res, _, _) = drive(
        &r,
        &rctx(),
        &challenge_line(&ch),
        Some(&ack_line(&"c".repeat(64), NOW as i64 + 60)),
    )
    .await;
    assert!(res.is_ok());
    assert_eq!(hook.calls.lock().unwrap().len(), 1);
    // Known authenticated session, unauthenticated challenge from the same peer ID: known,
    // not called. (From another peer ID it never reaches approval: R-8 refuses it first,
    // see responder_overwrite_guard.)
    let unsigned = Challenge {
        nonce: vec![2; 32],
        timestamp: NOW as i64,
        sender_did: DID_I.into(),
        ..Challenge::default()
    };
    let (res, _, _) = drive(
        &r,
        &rctx(),
        &challenge_line(&unsigned),
        Some(&ack_line(&"d".repeat(64), NOW as i64 + 60)),
    )
    .await;
    assert!(res.is_ok());
    assert_eq!(
        hook.calls.lock().unwrap().len(),
        1,
        "same peer, authenticated session: known"
    );

    // autoApproveKnownPeers=false: always called.
    let hook = Arc::new(Recorder::default());
    let r = with_hook(HandshakeConfig::default(), hook.clone());
    for n in 0..2u8 {
        let ch = signed(&key(1), DID_I, &[0x50 + n; 32], NOW as i64);
        let (res, _, _) = drive(
            &r,
            &rctx(),
            &challenge_line(&ch),
            Some(&ack_line(&format!("{:064x}", n + 1), NOW as i64 + 60)),
        )
        .await;
        assert!(res.is_ok());
    }
    assert_eq!(hook.calls.lock().unwrap().len(), 2);
}

#[tokio::test]
async fn auto_approve_does_not_trust_a_spoofed_known_did() {
    // An unauthenticated session for DID_I exists (from PEER_I); a later unsigned claim of
    // DID_I from another peer must still ask.
    let hook = Arc::new(Recorder::default());
    let r = with_hook(
        HandshakeConfig {
            auto_approve_known_peers: true,
            ..Default::default()
        },
        hook.clone(),
    );
    let (res, _, _) = drive(&r, &rctx(), &line(V1_UNSIGNED_LINE), Some(&line(V4_LINE))).await;
    assert!(!res.unwrap().authenticated);
    assert_eq!(hook.calls.lock().unwrap().len(), 1);
    let unsigned = Challenge {
        nonce: vec![0x33; 32],
        timestamp: NOW as i64,
        sender_did: DID_I.into(),
        ..Challenge::default()
    };
    let other = ctx(PEER_R, PEER_X, Protocol::Legacy11);
    let _ = drive(
        &r,
        &other,
        &challenge_line(&unsigned),
        Some(&ack_line(&"e".repeat(64), NOW as i64 + 60)),
    )
    .await;
    assert_eq!(hook.calls.lock().unwrap().len(), 2);
}

#[tokio::test]
async fn responder_refuses_pinned_dids_and_peers() {
    let pins = Arc::new(MemoryPins::default());
    pins.record(DID_I, "12D3KooWsomeotherpeer");
    let p2: Arc<dyn DowngradePins> = pins.clone();
    let r = responder_with(HandshakeConfig::default(), move |r| r.with_pins(p2));
    assert_refused(&r, &rctx(), &line(V1_LINE), Error::DowngradeRefused).await;

    let pins = Arc::new(MemoryPins::default());
    pins.record(did(9).as_str(), PEER_I);
    let p2: Arc<dyn DowngradePins> = pins.clone();
    let r = responder_with(HandshakeConfig::default(), move |r| r.with_pins(p2));
    assert_refused(&r, &rctx(), &line(V1_LINE), Error::DowngradeRefused).await;

    // Pinning disabled by configuration: accepted.
    let p2: Arc<dyn DowngradePins> = pins;
    let r = responder_with(
        HandshakeConfig {
            pin_upgraded_peers: false,
            ..Default::default()
        },
        move |r| r.with_pins(p2),
    );
    let (res, _, _) = drive(&r, &rctx(), &line(V1_LINE), Some(&line(V4_LINE))).await;
    assert!(res.is_ok());
}

#[tokio::test]
async fn responder_refuses_peers_in_cooldown() {
    let r = responder(HandshakeConfig::default());
    let (res, _, _) = drive(&r, &rctx(), &line(V1_LINE), Some(&line(V4_LINE))).await;
    assert!(res.is_ok());
    r.store
        .invalidate(DID_I, lango_session::InvalidationReason::ManualRevoke);
    let ch = signed(&key(1), DID_I, &[0x44; 32], NOW as i64);
    assert_refused(&r, &rctx(), &challenge_line(&ch), Error::Cooldown).await;
}

#[tokio::test]
async fn responder_resets_a_silent_peer_at_the_deadline() {
    let r = responder(HandshakeConfig {
        handshake_timeout: Duration::from_millis(200),
        ..Default::default()
    });
    // Sends the challenge, then never sends the ack.
    let (res, resp, _) = drive(&r, &rctx(), &line(V1_LINE), None).await;
    assert!(resp.is_some());
    assert_eq!(res.unwrap_err(), Error::Timeout);
    assert!(r.store.is_empty());
}

async fn wait_in_progress(r: &R, n: usize) {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while r.responder.in_progress() < n {
        assert!(
            std::time::Instant::now() < deadline,
            "handshakes never started"
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    assert_eq!(r.responder.in_progress(), n);
}

#[tokio::test]
async fn responder_limits_concurrent_handshakes_per_peer_and_overall() {
    let r = responder(HandshakeConfig {
        max_concurrent: 6,
        ..Default::default()
    });
    let mut keep = Vec::new();
    let mut tasks = Vec::new();
    // Four silent handshakes from PEER_I occupy its slots.
    for _ in 0..4 {
        let (mine, theirs) = duplex();
        keep.push(mine);
        let (resp, c) = (r.responder.clone(), rctx());
        tasks.push(tokio::spawn(async move { resp.handle(theirs, &c).await }));
    }
    wait_in_progress(&r, 4).await;
    let (_mine, theirs) = duplex();
    assert_eq!(
        r.responder.handle(theirs, &rctx()).await.unwrap_err(),
        Error::Busy
    );
    // Two from another peer fill the overall bound of 6; the next one is refused.
    for _ in 0..2 {
        let (mine, theirs) = duplex();
        keep.push(mine);
        let (resp, c) = (r.responder.clone(), ctx(PEER_R, PEER_X, Protocol::Legacy11));
        tasks.push(tokio::spawn(async move { resp.handle(theirs, &c).await }));
    }
    wait_in_progress(&r, 6).await;
    let (_mine, theirs) = duplex();
    let c = ctx(PEER_R, "12D3KooWthird", Protocol::Legacy11);
    assert_eq!(
        r.responder.handle(theirs, &c).await.unwrap_err(),
        Error::Busy
    );
    // Closing the streams frees the slots.
    drop(keep);
    for t in tasks {
        assert!(t.await.unwrap().is_err());
    }
    assert_eq!(r.responder.in_progress(), 0);
    let (res, _, _) = drive(&r, &rctx(), &line(V1_LINE), Some(&line(V4_LINE))).await;
    assert!(res.is_ok());
}

#[tokio::test]
async fn one_pending_approval_per_peer() {
    let hook = Arc::new(Recorder {
        delay: Some(Duration::from_millis(500)),
        ..Default::default()
    });
    let r = with_hook(HandshakeConfig::default(), hook.clone());
    let (mine, theirs) = duplex();
    let (resp, c) = (r.responder.clone(), rctx());
    let first = tokio::spawn(async move { resp.handle(theirs, &c).await });
    let mut mine = mine;
    futures::io::AsyncWriteExt::write_all(&mut mine, &line(V1_LINE))
        .await
        .unwrap();
    while hook.calls.lock().unwrap().is_empty() {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let ch = signed(&key(1), DID_I, &[0x66; 32], NOW as i64);
    let (res, resp, written) = drive(&r, &rctx(), &challenge_line(&ch), None).await;
    assert_eq!(res.unwrap_err(), Error::Busy);
    assert!(resp.is_none() && written.is_empty());
    drop(mine);
    let _ = first.await;
}

// ---- initiator ----

struct I {
    initiator: Initiator,
    store: SessionStore,
}

fn initiator_with(
    config: HandshakeConfig,
    w: Arc<dyn Wallet>,
    f: impl FnOnce(Initiator) -> Initiator,
) -> I {
    let clock = clock();
    let store = store(&clock);
    let c: Arc<dyn Clock> = clock;
    let initiator =
        f(Initiator::new(w, store.clone(), c, config).with_nonce_source(Arc::new(|| Ok(nonce()))));
    I { initiator, store }
}

fn initiator() -> I {
    initiator_with(HandshakeConfig::default(), wallet(1), |i| i)
}

fn ictx() -> StreamContext {
    ctx(PEER_I, PEER_R, Protocol::Legacy10)
}

/// Plays a scripted responder: reads the challenge, answers with `response` (if any), reads
/// the ack. Returns the initiator's result, the challenge bytes and the ack.
async fn drive_initiator(
    i: &I,
    response: Option<Vec<u8>>,
    expected: Option<&lango_crypto::wallet::Did>,
    fail_ack_write: bool,
) -> (
    Result<lango_session::SessionInfo, Error>,
    Vec<u8>,
    Option<SessionAck>,
) {
    let (mine, mut theirs) = duplex();
    if fail_ack_write {
        theirs.fail_write_number = Some(2);
    }
    let written = theirs.written.clone();
    let script = async move {
        let mut reader = MessageReader::new(mine);
        let _ = reader.read_message::<Challenge>().await;
        if let Some(resp) = response {
            futures::io::AsyncWriteExt::write_all(reader.get_mut(), &resp)
                .await
                .unwrap();
            reader.read_message::<SessionAck>().await.ok()
        } else {
            None
        }
    };
    let c = ictx();
    let (res, ack) = tokio::join!(i.initiator.initiate(theirs, &c, expected), script);
    let w = written.lock().unwrap().clone();
    (res, w, ack)
}

#[tokio::test]
async fn initiator_sends_v1_and_acks_with_the_minted_token() {
    let i = initiator();
    let (res, written, ack) = drive_initiator(&i, Some(line(V3_LINE)), Some(&did(2)), false).await;
    let s = res.unwrap();
    assert!(
        written.starts_with(&line(V1_LINE)),
        "challenge bytes differ from V1"
    );
    let ack = ack.unwrap();
    assert_eq!(ack.expires_at, NOW as i64 + 86_400);
    assert!(ack.token.is_well_formed());
    assert!(i.store.validate(DID_R, ack.token.expose()));
    assert_eq!(s.peer_did, DID_R);
    assert_eq!(s.peer_id, PEER_R);
    assert!(s.authenticated && !s.channel_bound && !s.zk_verified);
    assert_eq!(s.protocol, "/lango/handshake/1.0.0");
    // Exactly the challenge and the ack were written.
    let expected_tail = wire::encode_line(&ack).unwrap();
    assert_eq!(written.len(), V1_LINE.len() + 1 + expected_tail.len());
}

#[tokio::test]
async fn initiator_ignores_zk_proofs_for_authentication() {
    let i = initiator();
    let mut r: ChallengeResponse = wire::decode_message(V3_LINE.as_bytes()).unwrap();
    r.zk_proof = vec![1, 2, 3];
    let (res, _, _) = drive_initiator(&i, Some(wire::encode_line(&r).unwrap()), None, false).await;
    assert!(!res.unwrap().zk_verified);
    // A zkProof alone never authenticates.
    let i = initiator();
    r.signature.clear();
    let (res, _, ack) =
        drive_initiator(&i, Some(wire::encode_line(&r).unwrap()), None, false).await;
    assert_eq!(res.unwrap_err(), Error::NoProofOrSignature);
    assert!(ack.is_none() && i.store.is_empty());
}

async fn assert_initiator_refuses(
    resp: ChallengeResponse,
    expected_did: Option<&lango_crypto::wallet::Did>,
    expected: Error,
) {
    let i = initiator();
    let (res, written, ack) = drive_initiator(
        &i,
        Some(wire::encode_line(&resp).unwrap()),
        expected_did,
        false,
    )
    .await;
    assert_eq!(res.unwrap_err(), expected);
    assert!(ack.is_none(), "an ack was sent");
    assert_eq!(written, line(V1_LINE), "more than the challenge was sent");
    assert!(i.store.is_empty());
}

#[tokio::test]
async fn initiator_rejections() {
    let v3: ChallengeResponse = wire::decode_message(V3_LINE.as_bytes()).unwrap();
    // X-4: Mallory's valid signature with Victor's DID.
    let mut r =
        futures::executor::block_on(lango_handshake::legacy::sign_response(&key(3), &nonce()))
            .unwrap();
    r.did = DID_R.into();
    assert_initiator_refuses(r, None, Error::DidKeyMismatch).await;
    let mut r = v3.clone();
    r.nonce.push(0);
    assert_initiator_refuses(r, None, Error::NonceMismatch).await;
    let mut r = v3.clone();
    r.signature.truncate(64);
    assert_initiator_refuses(r, None, Error::BadSignatureLength(64)).await;
    let mut r = v3.clone();
    r.public_key = key(3).public_key().to_compressed().to_vec();
    assert_initiator_refuses(r, None, Error::SignatureMismatch).await;
    let mut r = v3.clone();
    r.signature = high_s_twin(&r.signature);
    let i = initiator();
    let (res, _, _) = drive_initiator(&i, Some(wire::encode_line(&r).unwrap()), None, false).await;
    assert!(matches!(res, Err(Error::BadSignatureEncoding(_))) && i.store.is_empty());
    let mut r = v3.clone();
    r.kem_ciphertext = vec![1; 8];
    assert_initiator_refuses(r, None, Error::UnexpectedKem).await;
    assert_initiator_refuses(
        v3.clone(),
        Some(&did(3)),
        Error::UnexpectedPeerDid {
            expected: did(3).as_str().into(),
            got: DID_R.into(),
        },
    )
    .await;
}

#[tokio::test]
async fn failed_ack_write_removes_the_session() {
    let i = initiator();
    let (res, _, _) = drive_initiator(&i, Some(line(V3_LINE)), None, true).await;
    assert!(matches!(res, Err(Error::Io { .. })));
    assert!(i.store.is_empty());
}

#[tokio::test]
async fn deadline_during_the_ack_write_removes_the_session() {
    let i = initiator_with(
        HandshakeConfig {
            handshake_timeout: Duration::from_millis(300),
            ..Default::default()
        },
        wallet(1),
        |i| i,
    );
    let (mine, mut theirs) = duplex();
    theirs.block_write_number = Some(2);
    let script = async move {
        let mut reader = MessageReader::new(mine);
        let _ = reader.read_message::<Challenge>().await;
        futures::io::AsyncWriteExt::write_all(reader.get_mut(), &line(V3_LINE))
            .await
            .unwrap();
        reader
    };
    let c = ictx();
    let (res, _reader) = tokio::join!(i.initiator.initiate(theirs, &c, None), script);
    assert_eq!(res.unwrap_err(), Error::Timeout);
    assert!(
        i.store.is_empty(),
        "the session created before the ack must be removed"
    );
}

#[tokio::test]
async fn initiator_times_out_on_a_silent_responder() {
    let i = initiator_with(
        HandshakeConfig {
            handshake_timeout: Duration::from_millis(200),
            ..Default::default()
        },
        wallet(1),
        |i| i,
    );
    let (mine, theirs) = duplex();
    let res = i.initiator.initiate(theirs, &ictx(), None).await;
    assert_eq!(res.unwrap_err(), Error::Timeout);
    assert!(i.store.is_empty());
    drop(mine);
}

#[tokio::test]
async fn signing_failure_aborts_without_sending() {
    struct Broken(AtomicUsize);
    #[async_trait::async_trait]
    impl Wallet for Broken {
        async fn public_key(&self) -> Result<lango_crypto::wallet::PublicKey, Error> {
            Ok(key(1).public_key())
        }
        async fn sign_message(
            &self,
            _: &[u8],
        ) -> Result<lango_crypto::wallet::RecoverableSignature, Error> {
            self.0.fetch_add(1, Ordering::SeqCst);
            Err(Error::Wallet("companion unreachable".into()))
        }
    }
    let i = initiator_with(
        HandshakeConfig::default(),
        Arc::new(Broken(AtomicUsize::new(0))),
        |i| i,
    );
    let (mine, theirs) = duplex();
    let written = theirs.written.clone();
    let res = i.initiator.initiate(theirs, &ictx(), None).await;
    assert!(matches!(res, Err(Error::Wallet(_))));
    assert!(written.lock().unwrap().is_empty(), "no unsigned fallback");
    drop(mine);
}

#[tokio::test]
async fn initiator_refuses_pinned_peers_and_dids() {
    let pins = Arc::new(MemoryPins::default());
    pins.record("did:lango:other", PEER_R);
    let p: Arc<dyn DowngradePins> = pins;
    let i = initiator_with(HandshakeConfig::default(), wallet(1), move |i| {
        i.with_pins(p)
    });
    let (mine, theirs) = duplex();
    let written = theirs.written.clone();
    assert_eq!(
        i.initiator
            .initiate(theirs, &ictx(), None)
            .await
            .unwrap_err(),
        Error::DowngradeRefused
    );
    assert!(written.lock().unwrap().is_empty());
    drop(mine);

    let pins = Arc::new(MemoryPins::default());
    pins.record(DID_R, "12D3KooWelsewhere");
    let p: Arc<dyn DowngradePins> = pins;
    let i = initiator_with(HandshakeConfig::default(), wallet(1), move |i| {
        i.with_pins(p)
    });
    let (res, _, ack) = drive_initiator(&i, Some(line(V3_LINE)), None, false).await;
    assert_eq!(res.unwrap_err(), Error::DowngradeRefused);
    assert!(ack.is_none() && i.store.is_empty());
}

// ---- Rust ↔ Rust ----

#[tokio::test]
async fn rust_to_rust_legacy_exchange() {
    let r = responder_with(
        HandshakeConfig {
            require_signed_challenge: true,
            ..Default::default()
        },
        |r| r,
    );
    let clock = clock();
    let istore = store(&clock);
    let c: Arc<dyn Clock> = clock;
    let init = Initiator::new(wallet(1), istore.clone(), c, HandshakeConfig::default());
    let (a, b) = duplex();
    let ack_bytes = a.written.clone();
    let (ic, rc, want) = (ictx(), rctx(), did(2));
    let (ri, rr) = tokio::join!(
        init.initiate(a, &ic, Some(&want)),
        r.responder.handle(b, &rc)
    );
    let (si, sr) = (ri.unwrap(), rr.unwrap());
    assert_eq!(si.peer_did, DID_R);
    assert_eq!(sr.peer_did, DID_I);
    assert!(si.authenticated && sr.authenticated);
    // Both sides hold the same token.
    let bytes = ack_bytes.lock().unwrap().clone();
    let mut reader = MessageReader::new(futures::io::Cursor::new(bytes));
    let _: Challenge = reader.read_message().await.unwrap();
    let ack: SessionAck = reader.read_message().await.unwrap();
    assert!(istore.validate(DID_R, ack.token.expose()));
    assert!(r.store.validate(DID_I, ack.token.expose()));
    assert!(r.store.resolve(ack.token.expose(), PEER_I).is_ok());
    assert!(r.store.resolve(ack.token.expose(), PEER_X).is_err());
}

#[test]
fn handshake_futures_are_send() {
    fn assert_send<T: Send>(_: &T) {}
    let r = responder(HandshakeConfig::default());
    let i = initiator();
    let (a, b) = duplex();
    let c = rctx();
    let f1 = r.responder.handle(a, &c);
    assert_send(&f1);
    let f2 = i.initiator.initiate(b, &c, None);
    assert_send(&f2);
}

#[test]
fn config_validation() {
    assert!(HandshakeConfig::default().validate("p2p").is_ok());
    let zero = HandshakeConfig {
        handshake_timeout: Duration::ZERO,
        max_message_bytes: 0,
        max_concurrent: 0,
        max_per_peer: 0,
        ..Default::default()
    };
    assert!(zero.validate("p2p").is_ok());
    assert_eq!(zero.effective_timeout(), Duration::from_secs(30));
    let bad = HandshakeConfig {
        handshake_timeout: Duration::from_secs(3600),
        max_message_bytes: 10,
        max_concurrent: 2,
        max_per_peer: 4,
        ..Default::default()
    };
    let errs = bad.validate("p2p").unwrap_err();
    assert_eq!(errs.len(), 3, "{errs:?}");
    assert!(errs.iter().any(|e| e.starts_with("p2p.handshakeTimeout")));
    assert!(
        errs.iter()
            .any(|e| e.starts_with("p2p.handshakeMaxMessageBytes"))
    );
    assert!(
        errs.iter()
            .any(|e| e.starts_with("p2p.handshakeMaxConcurrent"))
    );
}

#[test]
fn memory_pins_are_bounded_and_evict_the_least_recently_seen() {
    let pins = MemoryPins::new(2);
    let addr = "/ip4/10.0.0.1/tcp/4001";
    assert!(pins.record_incoming("did:a", "peer-a", addr));
    assert!(pins.record_incoming("did:b", "peer-b", addr));
    assert!(pins.record_incoming("did:a", "peer-a", addr)); // a seen again: b is now the oldest
    assert!(pins.record_incoming("did:c", "peer-c", addr));
    assert_eq!(pins.len(), 2);
    assert!(pins.is_did_pinned("did:a") && pins.is_did_pinned("did:c"));
    assert!(!pins.is_did_pinned("did:b") && !pins.is_peer_pinned("peer-b"));
    assert!(pins.unpin("did:a"));
    assert!(!pins.is_did_pinned("did:a") && !pins.is_peer_pinned("peer-a"));
    assert!(!pins.unpin("did:a"));
}

/// Issue 17: newcomers never evict established pins, and one peer ID (or one address) pins
/// only a few new DIDs per period.
#[test]
fn memory_pins_keep_established_pins_and_bound_newcomers_per_peer_and_address() {
    use lango_handshake::hooks::PinPolicy;
    let pins = MemoryPins::with_policy(PinPolicy {
        capacity: 100,
        new_per_peer: 10,
        new_per_addr: 1000,
        ..PinPolicy::default()
    });
    // The victim has a session here (the guard says so); an outgoing pin is sticky.
    pins.set_guard(Arc::new(|did: &str| did == "did:victim"));
    assert!(pins.record_incoming("did:victim", "peer-victim", "/ip4/10.0.0.9/tcp/1"));
    pins.record("did:dialled", "peer-dialled");
    // Ten thousand fresh DIDs from one peer ID: ten are pinned, the rest are not recorded.
    let mut recorded = 0;
    for i in 0..10_000 {
        if pins.record_incoming(
            &format!("did:sybil:{i}"),
            "peer-mallory",
            "/ip4/10.0.0.66/tcp/1",
        ) {
            recorded += 1;
        }
    }
    assert_eq!(recorded, 10);
    // From many peer IDs on one address, the table fills and newcomers evict only each other.
    for i in 0..10_000 {
        pins.record_incoming(
            &format!("did:horde:{i}"),
            &format!("peer-horde-{i}"),
            "/ip4/10.0.0.67/tcp/1",
        );
    }
    assert_eq!(pins.len(), 100);
    assert!(pins.is_did_pinned("did:victim") && pins.is_peer_pinned("peer-victim"));
    assert!(pins.is_did_pinned("did:dialled") && pins.is_peer_pinned("peer-dialled"));
    assert!(pins.not_recorded() >= 9_990);
    // The address quota: a thousand new pins from 10.0.0.67, then nothing more.
    assert!(!pins.record_incoming("did:late", "peer-late", "/ip4/10.0.0.67/tcp/1"));
    // With every pin established, a newcomer is not recorded rather than evicting one.
    let full = MemoryPins::with_policy(PinPolicy {
        capacity: 3,
        ..PinPolicy::default()
    });
    full.set_guard(Arc::new(|_: &str| true));
    for d in ["did:1", "did:2", "did:3"] {
        assert!(full.record_incoming(d, d, "/ip4/10.0.0.1/tcp/1"));
    }
    assert!(!full.record_incoming("did:4", "did:4", "/ip4/10.0.0.2/tcp/1"));
    assert!(
        ["did:1", "did:2", "did:3"]
            .iter()
            .all(|d| full.is_did_pinned(d))
    );
}
