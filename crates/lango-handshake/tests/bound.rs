//! The 1.2.0-bound exchange driven end to end by [`Responder`] and [`Initiator`] over in-memory
//! streams (spec §6.2.3–§6.2.7, "Hardened 1.2" of the §7 checklist). Transcript-level vectors and
//! checks live in `tests/v12.rs`; these tests are about the drivers: what they write, what they
//! store, and that every refusal leaves no session behind.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;
use futures::executor::block_on;
use futures::io::AsyncWriteExt;
use lango_crypto::node_key::peer_id_of;
use lango_crypto::wallet::{Did, PublicKey, RecoverableSignature, WalletKey};
use lango_handshake::Error;
use lango_handshake::clock::{Clock, ManualClock, unix_seconds};
use lango_handshake::exchange::{
    HandshakeConfig, Initiator, NonceSource, Responder, StreamContext,
};
use lango_handshake::hooks::{
    ApprovalHook, DowngradePins, MemoryPins, PendingHandshake, RevocationCheck,
};
use lango_handshake::messages::{Finish, HandshakeResult, Hello, Proof, ResultStatus};
use lango_handshake::nonce::{NonceCache, wired_nonce_ttl};
use lango_handshake::protocol::{PROTOCOL_1_1, PROTOCOL_1_2_BOUND, Protocol};
use lango_handshake::signer::Wallet;
use lango_handshake::v12::{self, ChannelBinding, InitPart, RespPart, TokenDigest};
use lango_handshake::wire::{self, MessageReader, WireToken};
use lango_session::{InvalidationReason, Role, SessionConfig, SessionInfo, SessionStore};
use serde::Serialize;
use serde::de::DeserializeOwned;

const PEER_I: &str = "12D3KooWQK1wnefoLrcVHbbnf5tLzbopUd3K3bFAoJpA7YJgL5pV";
const PEER_R: &str = "12D3KooWDwTirQce1RRKnasT5fPVFgzXCy6SiRgSwrwPGLC7zE91";
const ADDR: &str = "/ip4/127.0.0.1/tcp/9000";
const DAY: Duration = Duration::from_secs(86_400);
const HOUR: Duration = Duration::from_secs(3_600);
/// §6.2.6: sig (key 1) over SigInput(initiator-hello).
const HELLO_SIG: &str = "353ea325eb9ed9a1ccc559df3b4484df9252b68e9c3bed211c7925ddada0b12d\
                         3b2865c63186d722030268f5195622386ec11f1ee2f548a2df7ac7c1416685ad01";
/// §6.2.6: sig (key 2) over SigInput(responder-proof).
const PROOF_SIG: &str = "d39d526dfd185ed5a60a124970f28fdaf40a3a227bf14e46bab2b97c3eaca675\
                         6324c542cce062b89dd5a60c49f8ffd506700856cbf4d5a0af5508c4baadc05300";
/// V4's token with its last nibble changed.
const OTHER_TOKEN: &str = "95e9defda3cea475c7459a95ea0bbe012a8ee78f7f42ad2465063cf40ea33b77";
const EXP: i64 = NOW as i64 + 86_400;

/// Mallory's node peer ID.
fn mallory() -> String {
    peer_id_of(&[0xaa; 32])
}

/// A node that is neither I nor R.
fn elsewhere() -> String {
    peer_id_of(&[0xbb; 32])
}

/// nonce_R of §6.2.6: 20 21 … 3f.
fn nonce_r() -> [u8; 32] {
    core::array::from_fn(|i| 0x20 + i as u8)
}

fn fixed(n: [u8; 32]) -> NonceSource {
    Arc::new(move || Ok(n))
}

/// Nonces that are unique across the whole test binary, so no test trips a replay cache by
/// accident.
fn unique_nonces() -> NonceSource {
    static NEXT: AtomicU64 = AtomicU64::new(1);
    Arc::new(|| {
        let mut n = [0xc5; 32];
        n[24..].copy_from_slice(&NEXT.fetch_add(1, Ordering::SeqCst).to_be_bytes());
        Ok(n)
    })
}

fn clock() -> Arc<ManualClock> {
    Arc::new(ManualClock::at_unix(NOW))
}

fn wallet(n: u8) -> Arc<dyn Wallet> {
    Arc::new(key(n))
}

fn ctx(local: &str, remote: &str, protocol: Protocol) -> StreamContext {
    StreamContext {
        local_peer_id: local.into(),
        remote_peer_id: remote.into(),
        remote_addr: ADDR.into(),
        protocol,
    }
}

fn bctx(local: &str, remote: &str) -> StreamContext {
    ctx(local, remote, Protocol::Bound12)
}

fn ictx() -> StreamContext {
    bctx(PEER_I, PEER_R)
}

fn rctx() -> StreamContext {
    bctx(PEER_R, PEER_I)
}

fn store(clock: &Arc<ManualClock>, ttl: Duration) -> SessionStore {
    SessionStore::builder(&SessionConfig {
        session_token_ttl: ttl,
        ..SessionConfig::default()
    })
    .clock(clock.clone())
    .build()
    .unwrap()
}

struct R {
    responder: Arc<Responder>,
    store: SessionStore,
    pins: Arc<MemoryPins>,
}

/// A responder on `clock` with its own store (TTL `ttl`), replay cache and pins, and the
/// §6.2.6 responder nonce unless `f` replaces it.
fn responder_on(
    clock: &Arc<ManualClock>,
    w: Arc<dyn Wallet>,
    ttl: Duration,
    config: HandshakeConfig,
    f: impl FnOnce(Responder) -> Responder,
) -> R {
    let store = store(clock, ttl);
    let cache = Arc::new(NonceCache::with_clock(
        wired_nonce_ttl(Duration::from_secs(30)),
        0,
        clock.clone(),
    ));
    let pins = Arc::new(MemoryPins::default());
    let p: Arc<dyn DowngradePins> = pins.clone();
    let c: Arc<dyn Clock> = clock.clone();
    let responder = f(Responder::new(w, store.clone(), cache, c, config)
        .with_pins(p)
        .with_nonce_source(fixed(nonce_r())));
    R {
        responder: Arc::new(responder),
        store,
        pins,
    }
}

/// Victor (key 2) at NOW with a one-day TTL.
fn responder() -> R {
    responder_on(&clock(), wallet(2), DAY, HandshakeConfig::default(), |r| r)
}

struct I {
    initiator: Initiator,
    store: SessionStore,
    pins: Arc<MemoryPins>,
}

/// An initiator on `clock` with its own store (TTL `ttl`) and pins, and unique nonces unless
/// `f` replaces them.
fn initiator_on(
    clock: &Arc<ManualClock>,
    w: Arc<dyn Wallet>,
    ttl: Duration,
    config: HandshakeConfig,
    f: impl FnOnce(Initiator) -> Initiator,
) -> I {
    let store = store(clock, ttl);
    let pins = Arc::new(MemoryPins::default());
    let p: Arc<dyn DowngradePins> = pins.clone();
    let c: Arc<dyn Clock> = clock.clone();
    let initiator = f(Initiator::new(w, store.clone(), c, config)
        .with_pins(p)
        .with_nonce_source(unique_nonces()));
    I {
        initiator,
        store,
        pins,
    }
}

/// Alice (key 1) at NOW with a one-day TTL.
fn initiator() -> I {
    initiator_on(&clock(), wallet(1), DAY, HandshakeConfig::default(), |i| i)
}

fn line<T: Serialize>(msg: &T) -> Vec<u8> {
    wire::encode_line(msg).unwrap()
}

/// `msg` encoded with the JSON key `drop` left out.
fn line_without<T: Serialize>(msg: &T, drop: &str) -> Vec<u8> {
    let mut v = serde_json::to_value(msg).unwrap();
    assert!(v.as_object_mut().unwrap().remove(drop).is_some());
    let mut out = serde_json::to_vec(&v).unwrap();
    out.push(b'\n');
    out
}

/// The LF-terminated lines of what one side wrote.
fn lines(bytes: &[u8]) -> Vec<Vec<u8>> {
    bytes
        .split_inclusive(|b| *b == b'\n')
        .map(<[u8]>::to_vec)
        .collect()
}

fn decode<T: DeserializeOwned>(line: &[u8]) -> T {
    wire::decode_message(line).unwrap()
}

fn sha256(token: &str) -> TokenDigest {
    TokenDigest(lango_crypto::digest::sha256(token.as_bytes()))
}

/// A predicate on the expected error of one case.
type ErrorIs = fn(&Error) -> bool;
/// A modification of a signed Finish.
type FinishTamper = Box<dyn FnOnce(&mut Finish)>;

fn assert_rejected_with(result: &Option<HandshakeResult>, code: &str) {
    let r = result.as_ref().expect("no Result was written");
    assert_eq!(r.status, ResultStatus::Rejected);
    assert_eq!(r.error, code);
    assert_eq!(r.expires_at, 0);
}

// ---- Rust ↔ Rust ----

/// Both sides of one exchange on a duplex pipe.
struct Pair {
    initiator: Result<SessionInfo, Error>,
    responder: Result<SessionInfo, Error>,
    /// Everything the initiator wrote.
    by_initiator: Vec<u8>,
    /// Everything the responder wrote.
    by_responder: Vec<u8>,
}

async fn pair(
    i: &I,
    r: &R,
    ic: &StreamContext,
    rc: &StreamContext,
    expected: Option<&Did>,
) -> Pair {
    let (a, b) = duplex();
    let (wa, wb) = (a.written.clone(), b.written.clone());
    let (initiator, responder) = tokio::join!(
        i.initiator.initiate(a, ic, expected),
        r.responder.handle(b, rc)
    );
    let by_initiator = wa.lock().unwrap().clone();
    let by_responder = wb.lock().unwrap().clone();
    Pair {
        initiator,
        responder,
        by_initiator,
        by_responder,
    }
}

impl Pair {
    /// The Hello and Finish the initiator sent (panics unless it sent exactly those).
    fn hello_and_finish(&self) -> (Hello, Finish) {
        let l = lines(&self.by_initiator);
        assert_eq!(l.len(), 2, "the initiator must write Hello and Finish");
        (decode(&l[0]), decode(&l[1]))
    }

    /// The Proof and Result the responder sent (panics unless it sent exactly those).
    fn proof_and_result(&self) -> (Proof, HandshakeResult) {
        let l = lines(&self.by_responder);
        assert_eq!(l.len(), 2, "the responder must write Proof and Result");
        (decode(&l[0]), decode(&l[1]))
    }

    fn token(&self) -> String {
        self.hello_and_finish().1.token.expose().to_owned()
    }
}

#[tokio::test]
async fn rust_to_rust_exchange_shares_one_token_and_the_shorter_expiry() {
    for (ttl_i, ttl_r) in [(2 * HOUR, HOUR), (HOUR, 2 * HOUR)] {
        let clock = clock();
        let i = initiator_on(&clock, wallet(1), ttl_i, HandshakeConfig::default(), |i| i);
        let r = responder_on(&clock, wallet(2), ttl_r, HandshakeConfig::default(), |r| r);
        let out = pair(&i, &r, &ictx(), &rctx(), Some(&did(2))).await;
        let (si, sr) = (
            out.initiator.clone().unwrap(),
            out.responder.clone().unwrap(),
        );

        let proposed = NOW as i64 + ttl_i.as_secs() as i64;
        let final_expiry = NOW as i64 + ttl_i.min(ttl_r).as_secs() as i64;
        let (hello, finish) = out.hello_and_finish();
        let (proof, result) = out.proof_and_result();
        assert_eq!(hello.sender_did, DID_I);
        assert_eq!(proof.did, DID_R);
        assert_eq!(proof.nonce, hello.nonce);
        assert_eq!(finish.expires_at, proposed);
        assert_eq!(result, HandshakeResult::ok(final_expiry));
        assert!(finish.token.is_well_formed());

        // The same token on both sides, bound to the other side's peer ID.
        let token = finish.token.expose();
        assert!(i.store.validate(DID_R, token));
        assert!(r.store.validate(DID_I, token));
        assert_eq!(i.store.resolve(token, PEER_R).unwrap(), si);
        assert_eq!(r.store.resolve(token, PEER_I).unwrap(), sr);
        assert!(r.store.resolve(token, &mallory()).is_err());
        assert!(i.store.resolve(token, PEER_I).is_err());

        for (s, store, peer_did, peer_id, role) in [
            (&si, &i.store, DID_R, PEER_R, Role::Initiator),
            (&sr, &r.store, DID_I, PEER_I, Role::Responder),
        ] {
            assert_eq!(store.list(), vec![s.clone()]);
            assert_eq!(s.peer_did, peer_did);
            assert_eq!(s.peer_id, peer_id);
            assert_eq!(s.protocol, PROTOCOL_1_2_BOUND);
            assert_eq!(s.protocol, "/lango/handshake/1.2.0-bound");
            assert_eq!(s.role, role);
            assert!(s.authenticated && s.channel_bound);
            assert!(!s.zk_verified && !s.invalidated);
            assert_eq!(s.created_at, now());
            assert_eq!(
                unix_seconds(s.expires_at),
                final_expiry,
                "final expiry = min(TTL_I, TTL_R) (ttl_i={ttl_i:?}, ttl_r={ttl_r:?})"
            );
        }

        // Pins on both sides, for the other side only.
        assert_eq!(i.pins.len(), 1);
        assert!(i.pins.is_did_pinned(DID_R) && i.pins.is_peer_pinned(PEER_R));
        assert!(i.initiator.is_peer_pinned(PEER_R));
        assert_eq!(r.pins.len(), 1);
        assert!(r.pins.is_did_pinned(DID_I) && r.pins.is_peer_pinned(PEER_I));
        assert!(!r.pins.is_did_pinned(DID_R) && !i.pins.is_did_pinned(DID_I));
    }
}

#[tokio::test]
async fn hello_and_proof_on_the_wire_carry_the_vector_signatures() {
    // §6.2.6: nonce_I = 00..1f, ts_I = NOW, key 1 on 12D3KooWQK1…L5pV dialling key 2 on
    // 12D3KooWDwT…zE91, nonce_R = 20..3f.
    let clock = clock();
    let i = initiator_on(&clock, wallet(1), DAY, HandshakeConfig::default(), |i| {
        i.with_nonce_source(fixed(nonce()))
    });
    let r = responder_on(&clock, wallet(2), DAY, HandshakeConfig::default(), |r| r);
    let out = pair(&i, &r, &ictx(), &rctx(), None).await;
    out.initiator.as_ref().unwrap();
    out.responder.as_ref().unwrap();

    let hello = Hello {
        handshake_version: "1.2".into(),
        nonce: nonce().to_vec(),
        timestamp: NOW as i64,
        sender_did: DID_I.into(),
        public_key: h(PK_I),
        signature_algorithm: "secp256k1-keccak256".into(),
        signature: h(HELLO_SIG),
        zk_schemes: Vec::new(),
    };
    let l = lines(&out.by_initiator);
    assert_eq!(l[0], line(&hello), "the Hello line differs from §6.2.6");

    let proof = Proof {
        handshake_version: "1.2".into(),
        nonce: nonce().to_vec(),
        responder_nonce: nonce_r().to_vec(),
        did: DID_R.into(),
        public_key: h(PK_R),
        signature_algorithm: "secp256k1-keccak256".into(),
        signature: h(PROOF_SIG),
        ..Proof::default()
    };
    let l = lines(&out.by_responder);
    assert_eq!(l[0], line(&proof), "the Proof line differs from §6.2.6");

    // The Finish the initiator sent verifies against the same transcript parts.
    let (_, finish) = out.hello_and_finish();
    let init = InitPart::new(nonce(), NOW as i64, key(1).public_key());
    let resp = RespPart::new(nonce_r(), key(2).public_key());
    let binding = ictx().initiator_binding().unwrap();
    assert_eq!(binding, rctx().responder_binding().unwrap());
    assert_eq!(
        v12::verify_finish(
            &finish,
            &binding,
            &init,
            &resp,
            &sha256(finish.token.expose()),
            now(),
            DAY
        )
        .unwrap(),
        EXP
    );
}

#[tokio::test]
async fn drivers_sign_only_domain_separated_transcripts() {
    struct Recording {
        key: WalletKey,
        signed: Mutex<Vec<Vec<u8>>>,
    }
    #[async_trait::async_trait]
    impl Wallet for Recording {
        async fn public_key(&self) -> Result<PublicKey, Error> {
            Ok(self.key.public_key())
        }
        async fn sign_message(&self, m: &[u8]) -> Result<RecoverableSignature, Error> {
            self.signed.lock().unwrap().push(m.to_vec());
            Ok(self.key.sign_message(m).unwrap())
        }
    }
    let wi = Arc::new(Recording {
        key: key(1),
        signed: Mutex::default(),
    });
    let wr = Arc::new(Recording {
        key: key(2),
        signed: Mutex::default(),
    });
    let clock = clock();
    let i = initiator_on(&clock, wi.clone(), DAY, HandshakeConfig::default(), |i| i);
    let r = responder_on(&clock, wr.clone(), DAY, HandshakeConfig::default(), |r| r);
    let out = pair(&i, &r, &ictx(), &rctx(), None).await;
    assert!(out.initiator.is_ok() && out.responder.is_ok());

    let by_i = wi.signed.lock().unwrap().clone();
    let by_r = wr.signed.lock().unwrap().clone();
    assert_eq!(
        by_i.len(),
        2,
        "the initiator signs the hello and the finish, nothing else"
    );
    assert_eq!(
        by_r.len(),
        1,
        "the responder signs the proof, nothing else (P-5)"
    );
    for (m, role) in [
        (&by_i[0], "initiator-hello"),
        (&by_i[1], "initiator-finish"),
        (&by_r[0], "responder-proof"),
    ] {
        assert_eq!(hex::encode(&m[..4]), "00000013");
        assert_eq!(&m[4..23], b"lango-p2p-handshake");
        assert_eq!(&m[23..27], &(role.len() as u32).to_be_bytes());
        assert_eq!(&m[27..27 + role.len()], role.as_bytes());
        assert!(m.len() > 32, "a transcript can never be a 32-byte digest");
        assert!(m.len() >= 300, "{role}: {} bytes", m.len());
    }
    // The responder never signed the initiator's nonce on its own.
    let (hello, _) = out.hello_and_finish();
    assert_ne!(by_r[0], hello.nonce);
}

// ---- scripted initiator against the real responder ----

/// An honest initiator played by hand: signs with wallet key `key`, binding its transcripts to
/// (`local`, `remote`) as it observes its connection.
struct Alice {
    key: u8,
    binding: ChannelBinding,
    nonce: [u8; 32],
}

impl Alice {
    fn new(key: u8, local: &str, remote: &str, nonce: [u8; 32]) -> Self {
        Self {
            key,
            binding: bctx(local, remote).initiator_binding().unwrap(),
            nonce,
        }
    }

    fn hello(&self) -> (Hello, InitPart) {
        block_on(v12::sign_hello(
            &key(self.key),
            &self.binding,
            self.nonce,
            NOW as i64,
        ))
        .unwrap()
    }

    /// A Finish answering `proof`, signed by wallet key `signer`.
    fn finish(&self, signer: u8, init: &InitPart, proof: &Proof, token: &str, exp: i64) -> Finish {
        let resp = RespPart::new(
            proof.responder_nonce.clone().try_into().unwrap(),
            PublicKey::from_compressed(&proof.public_key).unwrap(),
        );
        let input = v12::finish_sig_input(&self.binding, init, &resp, &sha256(token), exp);
        Finish {
            token: WireToken::new(token.into()),
            expires_at: exp,
            signature: key(signer)
                .sign_message(&input)
                .unwrap()
                .to_bytes()
                .to_vec(),
        }
    }
}

/// What happened when a scripted initiator ran against the real responder.
struct RRun {
    res: Result<SessionInfo, Error>,
    proof: Option<Proof>,
    result: Option<HandshakeResult>,
    written: Vec<u8>,
}

/// Sends `hello`; if a Proof comes back and `finish` returns a line, sends it and reads the
/// Result. The scripted side closes its end when done.
async fn drive_responder(
    r: &R,
    c: &StreamContext,
    hello: Vec<u8>,
    finish: impl FnOnce(&Proof) -> Option<Vec<u8>>,
) -> RRun {
    let (mine, theirs) = duplex();
    let written = theirs.written.clone();
    let script = async move {
        let mut reader = MessageReader::new(mine);
        reader.get_mut().write_all(&hello).await.unwrap();
        let proof = reader.read_message::<Proof>().await.ok();
        let mut result = None;
        if let Some(p) = &proof
            && let Some(f) = finish(p)
        {
            reader.get_mut().write_all(&f).await.unwrap();
            result = reader.read_message::<HandshakeResult>().await.ok();
        }
        (proof, result)
    };
    let (res, (proof, result)) = tokio::join!(r.responder.handle(theirs, c), script);
    let written = written.lock().unwrap().clone();
    RRun {
        res,
        proof,
        result,
        written,
    }
}

/// The responder refused `hello` before answering: the error, nothing written, nothing stored
/// or pinned.
async fn assert_hello_refused(r: &R, c: &StreamContext, hello: Vec<u8>, expected: &Error) {
    let run = drive_responder(r, c, hello, |_| panic!("a Proof was sent")).await;
    assert_eq!(&run.res.unwrap_err(), expected);
    assert!(
        run.proof.is_none() && run.written.is_empty(),
        "bytes were sent"
    );
    assert!(r.store.is_empty(), "a session was stored");
    assert!(r.pins.is_empty(), "a pin was recorded");
}

#[tokio::test]
async fn replayed_hello_is_refused_by_the_same_responder() {
    let clock = clock();
    let i = initiator_on(&clock, wallet(1), DAY, HandshakeConfig::default(), |i| i);
    let r = responder_on(&clock, wallet(2), DAY, HandshakeConfig::default(), |r| r);
    let out = pair(&i, &r, &ictx(), &rctx(), None).await;
    let first = out.responder.clone().unwrap();
    let token = out.token();
    let hello_line = lines(&out.by_initiator)[0].clone();

    let run = drive_responder(&r, &rctx(), hello_line, |_| panic!("a Proof was sent")).await;
    assert_eq!(run.res.unwrap_err(), Error::NonceReplay);
    assert!(run.proof.is_none() && run.written.is_empty());
    // The session of the genuine exchange is untouched.
    assert_eq!(r.store.list(), vec![first]);
    assert!(r.store.validate(DID_I, &token));
}

#[tokio::test]
async fn replayed_hello_and_old_finish_fail_at_a_fresh_responder() {
    let clock = clock();
    let i = initiator_on(&clock, wallet(1), DAY, HandshakeConfig::default(), |i| i);
    let r = responder_on(&clock, wallet(2), DAY, HandshakeConfig::default(), |r| r);
    let out = pair(&i, &r, &ictx(), &rctx(), None).await;
    assert!(out.initiator.is_ok() && out.responder.is_ok());
    let l = lines(&out.by_initiator);
    let (hello_line, finish_line) = (l[0].clone(), l[1].clone());

    // Same wallet and node peer ID, new replay cache (a restart), new responder nonce.
    let fresh = responder_on(&clock, wallet(2), DAY, HandshakeConfig::default(), |r| {
        r.with_nonce_source(fixed([0x40; 32]))
    });
    let run = drive_responder(&fresh, &rctx(), hello_line, |p| {
        assert_eq!(p.responder_nonce, vec![0x40; 32]);
        Some(finish_line)
    })
    .await;
    assert!(run.proof.is_some(), "the replayed hello itself verifies");
    assert_eq!(run.res.unwrap_err(), Error::SignatureMismatch);
    assert_rejected_with(&run.result, "signature_mismatch");
    assert!(fresh.store.is_empty() && fresh.pins.is_empty());
}

#[tokio::test]
async fn hello_forwarded_to_another_responder_is_refused() {
    // Alice's hello for Victor's node, delivered to another node (same wallet even).
    let (hello, _) = Alice::new(1, PEER_I, PEER_R, nonce()).hello();
    let other = responder();
    assert_hello_refused(
        &other,
        &bctx(&elsewhere(), PEER_I),
        line(&hello),
        &Error::SignatureMismatch,
    )
    .await;
}

#[tokio::test]
async fn relayed_hello_is_refused() {
    let mallory = mallory();
    let victor = responder();
    // Alice dialled Mallory, so her hello binds (Alice, Mallory); Mallory forwards it to
    // Victor, who sees the connection (Mallory, Victor).
    let (hello, _) = Alice::new(1, PEER_I, &mallory, [1; 32]).hello();
    assert_hello_refused(
        &victor,
        &bctx(PEER_R, &mallory),
        line(&hello),
        &Error::SignatureMismatch,
    )
    .await;
    // A hello bound to (Alice, Victor) that arrives over Mallory's connection.
    let (hello, _) = Alice::new(1, PEER_I, PEER_R, [2; 32]).hello();
    assert_hello_refused(
        &victor,
        &bctx(PEER_R, &mallory),
        line(&hello),
        &Error::SignatureMismatch,
    )
    .await;
}

#[tokio::test]
async fn relayed_proof_is_refused_by_the_initiator() {
    // Alice dials Mallory; Mallory runs her own hello to Victor (reusing Alice's nonce and
    // timestamp) and forwards Victor's proof to Alice.
    let clock = clock();
    let alice = initiator_on(&clock, wallet(1), DAY, HandshakeConfig::default(), |i| i);
    let victor = responder_on(&clock, wallet(2), DAY, HandshakeConfig::default(), |r| r);
    let m = mallory();
    let (alice_end, from_alice) = duplex();
    let (to_victor, victor_end) = duplex();
    let alice_wrote = alice_end.written.clone();
    let m2 = m.clone();
    let mallory_script = async move {
        let mut from_alice = MessageReader::new(from_alice);
        let mut to_victor = MessageReader::new(to_victor);
        let hello: Hello = from_alice.read_message().await.unwrap();
        let binding = bctx(&m2, PEER_R).initiator_binding().unwrap();
        let (own, _) = block_on(v12::sign_hello(
            &key(3),
            &binding,
            hello.nonce.clone().try_into().unwrap(),
            hello.timestamp,
        ))
        .unwrap();
        to_victor.get_mut().write_all(&line(&own)).await.unwrap();
        let proof: Proof = to_victor.read_message().await.unwrap();
        from_alice.get_mut().write_all(&line(&proof)).await.unwrap();
        // Alice must not answer with a Finish.
        from_alice.read_message::<Finish>().await.is_err()
    };
    let (actx, vctx, want) = (bctx(PEER_I, &m), bctx(PEER_R, &m), did(2));
    let (ra, rv, no_finish) = tokio::join!(
        alice.initiator.initiate(alice_end, &actx, Some(&want)),
        victor.responder.handle(victor_end, &vctx),
        mallory_script
    );
    assert_eq!(ra.unwrap_err(), Error::SignatureMismatch);
    assert!(no_finish);
    assert_eq!(
        lines(&alice_wrote.lock().unwrap()).len(),
        1,
        "only the hello"
    );
    assert!(alice.store.is_empty() && alice.pins.is_empty());
    // Victor never got a Finish from Mallory, so nothing on his side either.
    assert!(matches!(rv, Err(Error::Io { .. })));
    assert!(victor.store.is_empty() && victor.pins.is_empty());
}

#[tokio::test]
async fn finish_signed_by_another_key_is_rejected_with_a_result() {
    let r = responder();
    let alice = Alice::new(1, PEER_I, PEER_R, nonce());
    let (hello, init) = alice.hello();
    let run = drive_responder(&r, &rctx(), line(&hello), |p| {
        Some(line(&alice.finish(3, &init, p, V4_TOKEN, EXP)))
    })
    .await;
    assert_eq!(run.res.unwrap_err(), Error::SignatureMismatch);
    assert_rejected_with(&run.result, "signature_mismatch");
    // Exactly the proof, then the rejected Result.
    let l = lines(&run.written);
    assert_eq!(l.len(), 2);
    assert_eq!(
        l[1],
        b"{\"status\":\"rejected\",\"error\":\"signature_mismatch\"}\n".to_vec()
    );
    assert!(r.store.is_empty() && r.pins.is_empty());
}

/// Runs an honest hello from Alice, then a Finish that `tamper` modifies after signing.
async fn finish_tampered(tamper: impl FnOnce(&mut Finish)) -> (R, RRun) {
    let r = responder();
    let alice = Alice::new(1, PEER_I, PEER_R, nonce());
    let (hello, init) = alice.hello();
    let run = drive_responder(&r, &rctx(), line(&hello), |p| {
        let mut f = alice.finish(1, &init, p, V4_TOKEN, EXP);
        tamper(&mut f);
        Some(line(&f))
    })
    .await;
    (r, run)
}

#[tokio::test]
async fn tampered_finish_is_rejected_with_a_result() {
    // Control: untampered, accepted.
    let (r, run) = finish_tampered(|_| {}).await;
    assert_eq!(run.res.unwrap().peer_did, DID_I);
    assert_eq!(run.result, Some(HandshakeResult::ok(EXP)));
    assert!(r.store.validate(DID_I, V4_TOKEN));

    let cases: Vec<(FinishTamper, Error)> = vec![
        (
            Box::new(|f| f.token = WireToken::new(OTHER_TOKEN.into())),
            Error::SignatureMismatch,
        ),
        (Box::new(|f| f.expires_at += 1), Error::SignatureMismatch),
        (
            Box::new(|f| f.expires_at -= 3_600),
            Error::SignatureMismatch,
        ),
        (Box::new(|f| f.signature[10] ^= 1), Error::SignatureMismatch),
        (
            Box::new(|f| f.token = WireToken::new(V4_TOKEN.to_uppercase())),
            Error::MalformedToken,
        ),
        (Box::new(|f| f.expires_at = NOW as i64), Error::AckExpired),
    ];
    for (tamper, expected) in cases {
        let (r, run) = finish_tampered(tamper).await;
        assert_eq!(run.res.unwrap_err(), expected);
        assert_rejected_with(&run.result, expected.code());
        assert!(r.store.is_empty() && r.pins.is_empty());
    }
}

#[tokio::test]
async fn undecodable_finish_is_rejected_with_a_result() {
    // P-8 / §6.2.3: failures while processing M3 are reported with a `rejected` Result.
    let oversized = format!(
        "{{\"token\":\"{}\",\"expiresAt\":{EXP}}}\n",
        "a".repeat(70_000)
    );
    let cases: Vec<(Vec<u8>, ErrorIs)> = vec![
        (
            format!("{{\"token\":42,\"expiresAt\":{EXP}}}\n").into_bytes(),
            |e| matches!(e, Error::Decode(_)),
        ),
        (b"[1,2,3]\n".to_vec(), |e| matches!(e, Error::Decode(_))),
        (oversized.into_bytes(), |e| {
            matches!(e, Error::MessageTooLarge { .. })
        }),
    ];
    for (bad, is_expected) in cases {
        let r = responder();
        let (hello, _) = Alice::new(1, PEER_I, PEER_R, nonce()).hello();
        let run = drive_responder(&r, &rctx(), line(&hello), |_| Some(bad)).await;
        let e = run.res.unwrap_err();
        assert!(is_expected(&e), "{e:?}");
        assert_rejected_with(&run.result, e.code());
        assert!(r.store.is_empty() && r.pins.is_empty());
    }
}

#[tokio::test]
async fn finish_reusing_another_peers_token_is_rejected() {
    // Alice's session holds V4_TOKEN; Carol (key 3, another node) proposes the same token in a
    // correctly signed Finish.
    let r = responder();
    let alice = Alice::new(1, PEER_I, PEER_R, nonce());
    let (hello, init) = alice.hello();
    let run = drive_responder(&r, &rctx(), line(&hello), |p| {
        Some(line(&alice.finish(1, &init, p, V4_TOKEN, EXP)))
    })
    .await;
    let alice_session = run.res.unwrap();

    let carol_peer = elsewhere();
    let carol = Alice::new(3, &carol_peer, PEER_R, [3; 32]);
    let (hello, init) = carol.hello();
    let run = drive_responder(&r, &bctx(PEER_R, &carol_peer), line(&hello), |p| {
        Some(line(&carol.finish(3, &init, p, V4_TOKEN, EXP)))
    })
    .await;
    assert_eq!(run.res.unwrap_err(), Error::DuplicateToken);
    assert_rejected_with(&run.result, "duplicate_token");
    assert_eq!(r.store.list(), vec![alice_session]);
    assert!(r.store.get(did(3).as_str()).is_none());
    assert!(!r.pins.is_did_pinned(did(3).as_str()));
}

#[tokio::test]
async fn hello_with_wrong_version_or_algorithm_is_refused() {
    let (hello, _) = Alice::new(1, PEER_I, PEER_R, nonce()).hello();
    let mut v11 = hello.clone();
    v11.handshake_version = "1.1".into();
    let mut ed = hello.clone();
    ed.signature_algorithm = "ed25519".into();
    let cases: Vec<(Vec<u8>, ErrorIs)> = vec![
        (line(&v11), |e| matches!(e, Error::Decode(_))),
        (line_without(&hello, "handshakeVersion"), |e| {
            matches!(e, Error::Decode(_))
        }),
        (line(&ed), |e| {
            *e == Error::UnsupportedAlgorithm("ed25519".into())
        }),
        (line_without(&hello, "signatureAlgorithm"), |e| {
            *e == Error::UnsupportedAlgorithm(String::new())
        }),
    ];
    for (l, is_expected) in cases {
        let r = responder();
        let run = drive_responder(&r, &rctx(), l, |_| panic!("a Proof was sent")).await;
        let e = run.res.unwrap_err();
        assert!(is_expected(&e), "{e:?}");
        assert!(run.written.is_empty() && r.store.is_empty() && r.pins.is_empty());
    }
}

#[tokio::test]
async fn hello_with_a_did_of_another_key_is_refused() {
    // Signed by key 1 over a transcript naming key 3's DID.
    let (mut hello, _) = Alice::new(1, PEER_I, PEER_R, nonce()).hello();
    hello.sender_did = did(3).as_str().into();
    assert_hello_refused(&responder(), &rctx(), line(&hello), &Error::DidKeyMismatch).await;
    // Key 3's DID and key, signature by key 1.
    let (mut hello, _) = Alice::new(1, PEER_I, PEER_R, [9; 32]).hello();
    hello.sender_did = did(3).as_str().into();
    hello.public_key = key(3).public_key().to_compressed().to_vec();
    assert_hello_refused(
        &responder(),
        &rctx(),
        line(&hello),
        &Error::SignatureMismatch,
    )
    .await;
}

// ---- scripted responder against the real initiator ----

/// What happened when a scripted responder ran against the real initiator.
struct IRun {
    res: Result<SessionInfo, Error>,
    finish: Option<Finish>,
    written: Vec<u8>,
}

/// Victor's honest proof for `hello`.
fn victor_proof(hello: &Hello) -> Proof {
    let rb = rctx().responder_binding().unwrap();
    let init = v12::verify_hello(hello, &rb).unwrap();
    block_on(v12::sign_proof(&key(2), &rb, &init, nonce_r()))
        .unwrap()
        .0
}

/// Reads the hello; sends what `proof` returns (if anything); if sent, reads the Finish and
/// sends what `result` returns (if anything). The scripted side closes its end when done.
async fn drive_initiator(
    i: &I,
    expected: Option<&Did>,
    proof: impl FnOnce(&Hello) -> Option<Vec<u8>>,
    result: impl FnOnce(&Finish) -> Option<Vec<u8>>,
) -> IRun {
    let (mine, theirs) = duplex();
    let written = theirs.written.clone();
    let script = async move {
        let mut reader = MessageReader::new(mine);
        let hello: Hello = reader.read_message().await.unwrap();
        let p = proof(&hello)?;
        reader.get_mut().write_all(&p).await.unwrap();
        let finish = reader.read_message::<Finish>().await.ok()?;
        if let Some(r) = result(&finish) {
            reader.get_mut().write_all(&r).await.unwrap();
        }
        Some(finish)
    };
    let c = ictx();
    let (res, finish) = tokio::join!(i.initiator.initiate(theirs, &c, expected), script);
    let written = written.lock().unwrap().clone();
    IRun {
        res,
        finish,
        written,
    }
}

#[tokio::test]
async fn initiator_stores_only_after_an_acceptable_result() {
    type Answer = Box<dyn FnOnce(&Finish) -> Option<Vec<u8>>>;
    let refused: Vec<(Answer, ErrorIs)> = vec![
        // M4 missing: the responder closes after the Finish.
        (
            Box::new(|_| None),
            |e| matches!(e, Error::Io { kind, .. } if *kind == std::io::ErrorKind::UnexpectedEof),
        ),
        (
            Box::new(|_| Some(line(&HandshakeResult::rejected(&Error::Cooldown)))),
            |e| *e == Error::RejectedByPeer("cooldown".into()),
        ),
        (
            Box::new(|_| Some(b"{\"status\":\"rejected\"}\n".to_vec())),
            |e| *e == Error::RejectedByPeer("rejected".into()),
        ),
        (
            Box::new(|f| Some(line(&HandshakeResult::ok(f.expires_at + 1)))),
            |e| matches!(e, Error::RejectedByPeer(_)),
        ),
        (
            Box::new(|f| Some(line(&HandshakeResult::ok(f.expires_at + 86_400)))),
            |e| matches!(e, Error::RejectedByPeer(_)),
        ),
        (Box::new(|_| Some(line(&HandshakeResult::ok(0)))), |e| {
            matches!(e, Error::RejectedByPeer(_))
        }),
        // An `ok` Result that is not one: unknown status.
        (
            Box::new(|_| Some(b"{\"status\":\"okay\"}\n".to_vec())),
            |e| matches!(e, Error::Decode(_)),
        ),
    ];
    for (answer, is_expected) in refused {
        let i = initiator();
        let run =
            drive_initiator(&i, Some(&did(2)), |h| Some(line(&victor_proof(h))), answer).await;
        let e = run.res.unwrap_err();
        assert!(is_expected(&e), "{e:?}");
        assert!(run.finish.is_some(), "the finish was sent");
        assert!(i.store.is_empty(), "a session was stored after {e:?}");
        assert!(i.pins.is_empty(), "a pin was recorded after {e:?}");
    }

    // Control: an `ok` below the proposal is taken as the final expiry.
    let i = initiator();
    let run = drive_initiator(
        &i,
        Some(&did(2)),
        |h| Some(line(&victor_proof(h))),
        |f| Some(line(&HandshakeResult::ok(f.expires_at - 600))),
    )
    .await;
    let s = run.res.unwrap();
    let finish = run.finish.unwrap();
    assert_eq!(unix_seconds(s.expires_at), finish.expires_at - 600);
    assert_eq!(finish.expires_at, EXP);
    assert!(i.store.validate(DID_R, finish.token.expose()));
    assert!(i.pins.is_did_pinned(DID_R) && i.pins.is_peer_pinned(PEER_R));
}

#[tokio::test]
async fn proof_with_wrong_version_or_algorithm_is_refused() {
    type Tamper = Box<dyn Fn(&Proof) -> Vec<u8>>;
    let cases: Vec<(Tamper, ErrorIs)> = vec![
        (
            Box::new(|p| {
                let mut p = p.clone();
                p.handshake_version = "1.1".into();
                line(&p)
            }),
            |e| matches!(e, Error::Decode(_)),
        ),
        (
            Box::new(|p| {
                let mut p = p.clone();
                p.handshake_version = "1.2.0".into();
                line(&p)
            }),
            |e| matches!(e, Error::Decode(_)),
        ),
        (Box::new(|p| line_without(p, "handshakeVersion")), |e| {
            matches!(e, Error::Decode(_))
        }),
        (
            Box::new(|p| {
                let mut p = p.clone();
                p.signature_algorithm = "ed25519".into();
                line(&p)
            }),
            |e| *e == Error::UnsupportedAlgorithm("ed25519".into()),
        ),
        (Box::new(|p| line_without(p, "signatureAlgorithm")), |e| {
            *e == Error::UnsupportedAlgorithm(String::new())
        }),
    ];
    for (tamper, is_expected) in cases {
        let i = initiator();
        let run = drive_initiator(
            &i,
            None,
            |h| Some(tamper(&victor_proof(h))),
            |_| panic!("a Finish was sent"),
        )
        .await;
        let e = run.res.unwrap_err();
        assert!(is_expected(&e), "{e:?}");
        assert!(run.finish.is_none());
        assert_eq!(lines(&run.written).len(), 1, "only the hello was sent");
        assert!(i.store.is_empty() && i.pins.is_empty());
    }
}

#[tokio::test]
async fn proof_identity_is_checked() {
    // A DID naming another key than the one that signed.
    let i = initiator();
    let run = drive_initiator(
        &i,
        None,
        |h| {
            let mut p = victor_proof(h);
            p.did = did(3).as_str().into();
            Some(line(&p))
        },
        |_| panic!("a Finish was sent"),
    )
    .await;
    assert_eq!(run.res.unwrap_err(), Error::DidKeyMismatch);
    assert!(run.finish.is_none() && i.store.is_empty() && i.pins.is_empty());

    // Key 3's DID and key around key 2's signature.
    let i = initiator();
    let run = drive_initiator(
        &i,
        None,
        |h| {
            let mut p = victor_proof(h);
            p.did = did(3).as_str().into();
            p.public_key = key(3).public_key().to_compressed().to_vec();
            Some(line(&p))
        },
        |_| panic!("a Finish was sent"),
    )
    .await;
    assert_eq!(run.res.unwrap_err(), Error::SignatureMismatch);
    assert!(run.finish.is_none() && i.store.is_empty());

    // A genuine proof from someone other than the DID the caller wanted, Rust ↔ Rust.
    let clock = clock();
    let i = initiator_on(&clock, wallet(1), DAY, HandshakeConfig::default(), |i| i);
    let r = responder_on(&clock, wallet(2), DAY, HandshakeConfig::default(), |r| r);
    let out = pair(&i, &r, &ictx(), &rctx(), Some(&did(3))).await;
    assert_eq!(
        out.initiator.unwrap_err(),
        Error::UnexpectedPeerDid {
            expected: did(3).as_str().into(),
            got: DID_R.into(),
        }
    );
    assert_eq!(lines(&out.by_initiator).len(), 1, "no Finish");
    assert!(matches!(out.responder, Err(Error::Io { .. })));
    assert!(i.store.is_empty() && r.store.is_empty());
    assert!(i.pins.is_empty() && r.pins.is_empty());
}

// ---- downgrade pins ----

fn legacy(local: &str, remote: &str) -> StreamContext {
    ctx(local, remote, Protocol::Legacy11)
}

#[tokio::test]
async fn pinned_peers_are_refused_a_legacy_handshake() {
    let clock = clock();
    let i = initiator_on(&clock, wallet(1), DAY, HandshakeConfig::default(), |i| i);
    let r = responder_on(&clock, wallet(2), DAY, HandshakeConfig::default(), |r| r);
    let out = pair(&i, &r, &ictx(), &rctx(), None).await;
    let (bound_i, bound_r) = (out.initiator.unwrap(), out.responder.unwrap());

    // R refuses a legacy challenge from I's DID (an initiator that lost its pins).
    let unpinned = initiator_on(&clock, wallet(1), DAY, HandshakeConfig::default(), |i| i);
    let out = pair(
        &unpinned,
        &r,
        &legacy(PEER_I, PEER_R),
        &legacy(PEER_R, PEER_I),
        None,
    )
    .await;
    assert_eq!(out.responder.unwrap_err(), Error::DowngradeRefused);
    assert!(out.by_responder.is_empty(), "the responder answered");
    assert!(matches!(out.initiator, Err(Error::Io { .. })));
    assert!(unpinned.store.is_empty());
    assert_eq!(r.store.list(), vec![bound_r.clone()]);

    // … and any legacy challenge from I's peer ID, whatever DID it claims.
    let carol = initiator_on(&clock, wallet(3), DAY, HandshakeConfig::default(), |i| i);
    let out = pair(
        &carol,
        &r,
        &legacy(PEER_I, PEER_R),
        &legacy(PEER_R, PEER_I),
        None,
    )
    .await;
    assert_eq!(out.responder.unwrap_err(), Error::DowngradeRefused);
    assert!(out.by_responder.is_empty());
    assert_eq!(r.store.list(), vec![bound_r]);

    // I refuses to run legacy to the pinned peer: nothing is written.
    let (a, _b) = duplex();
    let written = a.written.clone();
    assert_eq!(
        i.initiator
            .initiate(a, &legacy(PEER_I, PEER_R), None)
            .await
            .unwrap_err(),
        Error::DowngradeRefused
    );
    assert!(written.lock().unwrap().is_empty());
    assert_eq!(i.store.list(), vec![bound_i]);
}

#[tokio::test]
async fn legacy_is_not_refused_as_a_downgrade_when_pinning_is_off() {
    let config = HandshakeConfig {
        pin_upgraded_peers: false,
        ..Default::default()
    };
    let clock = clock();
    let i = initiator_on(&clock, wallet(1), DAY, config.clone(), |i| i);
    let r = responder_on(&clock, wallet(2), DAY, config, |r| r);
    let out = pair(&i, &r, &ictx(), &rctx(), None).await;
    assert!(out.initiator.is_ok() && out.responder.is_ok());
    assert!(i.pins.is_did_pinned(DID_R) && r.pins.is_did_pinned(DID_I));

    // Not a downgrade refusal; the live channel-bound sessions are still not replaced by
    // legacy ones (P-11).
    let out = pair(
        &i,
        &r,
        &legacy(PEER_I, PEER_R),
        &legacy(PEER_R, PEER_I),
        None,
    )
    .await;
    assert_eq!(
        out.initiator.unwrap_err(),
        Error::AuthenticatedSessionExists
    );
    assert!(i.store.get(DID_R).unwrap().channel_bound);
    assert!(r.store.get(DID_I).unwrap().channel_bound);

    // Without those sessions, the legacy exchange completes.
    assert!(i.store.remove(DID_R) && r.store.remove(DID_I));
    let out = pair(
        &i,
        &r,
        &legacy(PEER_I, PEER_R),
        &legacy(PEER_R, PEER_I),
        None,
    )
    .await;
    let (si, sr) = (out.initiator.unwrap(), out.responder.unwrap());
    for s in [&si, &sr] {
        assert_eq!(s.protocol, PROTOCOL_1_1);
        assert!(s.authenticated && !s.channel_bound);
    }
}

// ---- revocation ----

struct Revocations {
    answer: Result<Vec<String>, String>,
    asked: Mutex<Vec<String>>,
}

impl Revocations {
    fn of(dids: &[&str]) -> Arc<Self> {
        Arc::new(Self {
            answer: Ok(dids.iter().map(|d| (*d).to_owned()).collect()),
            asked: Mutex::default(),
        })
    }

    fn failing() -> Arc<Self> {
        Arc::new(Self {
            answer: Err("revocation database unavailable".into()),
            asked: Mutex::default(),
        })
    }
}

impl RevocationCheck for Revocations {
    fn is_revoked(&self, did: &str) -> Result<bool, String> {
        self.asked.lock().unwrap().push(did.to_owned());
        self.answer
            .as_ref()
            .map(|l| l.iter().any(|d| d == did))
            .map_err(Clone::clone)
    }
}

async fn pair_with_revocations(
    at_initiator: Option<Arc<Revocations>>,
    at_responder: Option<Arc<Revocations>>,
) -> (I, R, Pair) {
    let clock = clock();
    let i = initiator_on(
        &clock,
        wallet(1),
        DAY,
        HandshakeConfig::default(),
        |i| match at_initiator {
            Some(c) => i.with_revocations(c),
            None => i,
        },
    );
    let r = responder_on(
        &clock,
        wallet(2),
        DAY,
        HandshakeConfig::default(),
        |r| match at_responder {
            Some(c) => r.with_revocations(c),
            None => r,
        },
    );
    let out = pair(&i, &r, &ictx(), &rctx(), None).await;
    (i, r, out)
}

fn assert_nothing_stored(i: &I, r: &R) {
    assert!(
        i.store.is_empty() && r.store.is_empty(),
        "a session was stored"
    );
    assert!(i.pins.is_empty() && r.pins.is_empty(), "a pin was recorded");
}

#[tokio::test]
async fn revoked_initiator_is_refused_before_the_proof() {
    let check = Revocations::of(&[DID_I]);
    let (i, r, out) = pair_with_revocations(None, Some(check.clone())).await;
    assert_eq!(out.responder.unwrap_err(), Error::Revoked);
    assert!(out.by_responder.is_empty(), "the responder answered");
    assert!(matches!(out.initiator, Err(Error::Io { .. })));
    assert_eq!(*check.asked.lock().unwrap(), vec![DID_I.to_owned()]);
    assert_nothing_stored(&i, &r);

    // A list naming someone else changes nothing.
    let (_, _, out) = pair_with_revocations(None, Some(Revocations::of(&[DID_R]))).await;
    assert!(out.initiator.is_ok() && out.responder.is_ok());
}

#[tokio::test]
async fn revoked_responder_gets_no_finish_and_no_session() {
    let check = Revocations::of(&[DID_R]);
    let (i, r, out) = pair_with_revocations(Some(check.clone()), None).await;
    assert_eq!(out.initiator.unwrap_err(), Error::Revoked);
    assert_eq!(lines(&out.by_initiator).len(), 1, "a Finish was sent");
    assert!(matches!(out.responder, Err(Error::Io { .. })));
    assert_eq!(*check.asked.lock().unwrap(), vec![DID_R.to_owned()]);
    assert_nothing_stored(&i, &r);
}

#[tokio::test]
async fn failing_revocation_lookup_fails_closed() {
    let (i, r, out) = pair_with_revocations(None, Some(Revocations::failing())).await;
    assert!(
        matches!(out.responder, Err(Error::Internal(_))),
        "{:?}",
        out.responder
    );
    assert!(out.by_responder.is_empty());
    assert_nothing_stored(&i, &r);

    let (i, r, out) = pair_with_revocations(Some(Revocations::failing()), None).await;
    assert!(
        matches!(out.initiator, Err(Error::Internal(_))),
        "{:?}",
        out.initiator
    );
    assert_eq!(lines(&out.by_initiator).len(), 1, "a Finish was sent");
    assert_nothing_stored(&i, &r);
}

// ---- approval ----

#[derive(Default)]
struct Approvals {
    calls: Mutex<Vec<PendingHandshake>>,
    deny: bool,
}

#[async_trait::async_trait]
impl ApprovalHook for Approvals {
    async fn approve(&self, p: &PendingHandshake) -> Result<bool, String> {
        self.calls.lock().unwrap().push(p.clone());
        Ok(!self.deny)
    }
}

#[tokio::test]
async fn approval_is_asked_for_an_authenticated_peer() {
    let hook = Arc::new(Approvals::default());
    let h: Arc<dyn ApprovalHook> = hook.clone();
    let clock = clock();
    let i = initiator_on(&clock, wallet(1), DAY, HandshakeConfig::default(), |i| i);
    let r = responder_on(&clock, wallet(2), DAY, HandshakeConfig::default(), |r| {
        r.with_approval(h)
    });
    let out = pair(&i, &r, &ictx(), &rctx(), None).await;
    assert!(out.initiator.is_ok() && out.responder.is_ok());
    assert_eq!(
        *hook.calls.lock().unwrap(),
        vec![PendingHandshake {
            peer_id: PEER_I.into(),
            peer_did: DID_I.into(),
            remote_addr: ADDR.into(),
            timestamp: now(),
            authenticated: true,
        }]
    );

    // A hello that fails verification never reaches the hook.
    let (hello, _) = Alice::new(1, PEER_I, &mallory(), [0x11; 32]).hello();
    let run = drive_responder(&r, &rctx(), line(&hello), |_| panic!("a Proof was sent")).await;
    assert_eq!(run.res.unwrap_err(), Error::SignatureMismatch);
    assert_eq!(hook.calls.lock().unwrap().len(), 1);
}

#[tokio::test]
async fn denied_approval_sends_nothing() {
    let hook = Arc::new(Approvals {
        deny: true,
        ..Default::default()
    });
    let h: Arc<dyn ApprovalHook> = hook.clone();
    let clock = clock();
    let i = initiator_on(&clock, wallet(1), DAY, HandshakeConfig::default(), |i| i);
    let r = responder_on(&clock, wallet(2), DAY, HandshakeConfig::default(), |r| {
        r.with_approval(h)
    });
    let out = pair(&i, &r, &ictx(), &rctx(), None).await;
    assert_eq!(out.responder.unwrap_err(), Error::ApprovalDenied);
    assert!(out.by_responder.is_empty(), "the responder answered");
    assert!(matches!(out.initiator, Err(Error::Io { .. })));
    assert_eq!(hook.calls.lock().unwrap().len(), 1);
    assert!(hook.calls.lock().unwrap()[0].authenticated);
    assert_nothing_stored(&i, &r);
}

#[tokio::test]
async fn auto_approve_skips_the_hook_for_a_known_bound_peer() {
    let hook = Arc::new(Approvals::default());
    let h: Arc<dyn ApprovalHook> = hook.clone();
    let clock = clock();
    let config = HandshakeConfig {
        auto_approve_known_peers: true,
        ..Default::default()
    };
    let i = initiator_on(&clock, wallet(1), DAY, HandshakeConfig::default(), |i| i);
    let r = responder_on(&clock, wallet(2), DAY, config, |r| r.with_approval(h));
    for _ in 0..2 {
        let out = pair(&i, &r, &ictx(), &rctx(), None).await;
        assert!(out.initiator.is_ok() && out.responder.is_ok());
    }
    assert_eq!(
        hook.calls.lock().unwrap().len(),
        1,
        "asked once, then known"
    );
}

// ---- cool-down ----

#[tokio::test]
async fn revoked_session_blocks_new_handshakes_until_the_cooldown_ends() {
    let clock = clock();
    let i = initiator_on(&clock, wallet(1), DAY, HandshakeConfig::default(), |i| i);
    let r = responder_on(&clock, wallet(2), DAY, HandshakeConfig::default(), |r| r);
    let out = pair(&i, &r, &ictx(), &rctx(), None).await;
    assert!(out.initiator.is_ok() && out.responder.is_ok());
    assert!(r.store.invalidate(DID_I, InvalidationReason::ManualRevoke));

    let out = pair(&i, &r, &ictx(), &rctx(), None).await;
    assert_eq!(out.responder.unwrap_err(), Error::Cooldown);
    assert!(out.by_responder.is_empty());
    assert!(matches!(out.initiator, Err(Error::Io { .. })));
    assert!(r.store.is_empty());

    // The revoked session's peer ID is in the cool-down too, whatever DID it now claims.
    let carol = initiator_on(&clock, wallet(3), DAY, HandshakeConfig::default(), |i| i);
    let out = pair(&carol, &r, &ictx(), &rctx(), None).await;
    assert_eq!(out.responder.unwrap_err(), Error::Cooldown);
    assert!(r.store.is_empty() && carol.store.is_empty());

    // Just before the end: still refused. After it: accepted.
    let cooldown = r.store.revoke_cooldown();
    assert_eq!(cooldown, Duration::from_secs(300));
    clock.advance(cooldown - Duration::from_secs(1));
    let out = pair(&i, &r, &ictx(), &rctx(), None).await;
    assert_eq!(out.responder.unwrap_err(), Error::Cooldown);
    clock.advance(Duration::from_secs(2));
    let out = pair(&i, &r, &ictx(), &rctx(), None).await;
    let s = out.responder.clone().unwrap();
    assert!(s.channel_bound);
    assert!(r.store.validate(DID_I, &out.token()));
    assert!(i.store.validate(DID_R, &out.token()));
}

// ---- deadline and result delivery ----

#[tokio::test]
async fn responder_times_out_on_an_initiator_silent_after_the_hello() {
    let r = responder_on(
        &clock(),
        wallet(2),
        DAY,
        HandshakeConfig {
            handshake_timeout: Duration::from_millis(200),
            ..Default::default()
        },
        |r| r,
    );
    let (hello, _) = Alice::new(1, PEER_I, PEER_R, nonce()).hello();
    let (mine, theirs) = duplex();
    let written = theirs.written.clone();
    let script = async move {
        let mut reader = MessageReader::new(mine);
        reader.get_mut().write_all(&line(&hello)).await.unwrap();
        let proof = reader.read_message::<Proof>().await;
        // Silent from here on; this read ends when the responder drops the stream.
        let after = reader.read_message::<HandshakeResult>().await;
        (proof.is_ok(), after.is_err())
    };
    let started = Instant::now();
    let c = rctx();
    let (res, (got_proof, no_result)) = tokio::join!(r.responder.handle(theirs, &c), script);
    assert_eq!(res.unwrap_err(), Error::Timeout);
    assert!(started.elapsed() < Duration::from_secs(10));
    assert!(got_proof && no_result);
    assert_eq!(lines(&written.lock().unwrap()).len(), 1, "only the proof");
    assert!(r.store.is_empty() && r.pins.is_empty());
}

#[tokio::test]
async fn initiator_times_out_on_a_responder_silent_after_the_finish() {
    let i = initiator_on(
        &clock(),
        wallet(1),
        DAY,
        HandshakeConfig {
            handshake_timeout: Duration::from_millis(200),
            ..Default::default()
        },
        |i| i,
    );
    let (mine, theirs) = duplex();
    let script = async move {
        let mut reader = MessageReader::new(mine);
        let hello: Hello = reader.read_message().await.unwrap();
        reader
            .get_mut()
            .write_all(&line(&victor_proof(&hello)))
            .await
            .unwrap();
        let finish = reader.read_message::<Finish>().await;
        // Silent from here on; this read ends when the initiator drops the stream.
        let _ = reader.read_message::<Finish>().await;
        finish.is_ok()
    };
    let c = ictx();
    let (res, got_finish) = tokio::join!(i.initiator.initiate(theirs, &c, None), script);
    assert_eq!(res.unwrap_err(), Error::Timeout);
    assert!(got_finish);
    assert!(i.store.is_empty() && i.pins.is_empty());
}

#[tokio::test]
async fn undelivered_result_removes_the_responder_session() {
    // The Result write fails outright, or never completes before the deadline.
    for block in [false, true] {
        let r = responder_on(
            &clock(),
            wallet(2),
            DAY,
            HandshakeConfig {
                handshake_timeout: Duration::from_millis(300),
                ..Default::default()
            },
            |r| r,
        );
        let alice = Alice::new(1, PEER_I, PEER_R, nonce());
        let (hello, init) = alice.hello();
        let (mine, mut theirs) = duplex();
        if block {
            theirs.block_write_number = Some(2);
        } else {
            theirs.fail_write_number = Some(2);
        }
        let script = async move {
            let mut reader = MessageReader::new(mine);
            reader.get_mut().write_all(&line(&hello)).await.unwrap();
            let proof: Proof = reader.read_message().await.unwrap();
            let finish = alice.finish(1, &init, &proof, V4_TOKEN, EXP);
            reader.get_mut().write_all(&line(&finish)).await.unwrap();
            reader.read_message::<HandshakeResult>().await.is_err()
        };
        let c = rctx();
        let (res, no_result) = tokio::join!(r.responder.handle(theirs, &c), script);
        let e = res.unwrap_err();
        if block {
            assert_eq!(e, Error::Timeout);
        } else {
            assert!(matches!(e, Error::Io { .. }), "{e:?}");
        }
        assert!(no_result);
        assert!(
            r.store.is_empty(),
            "the session outlived its undelivered Result"
        );
        assert!(!r.store.validate(DID_I, V4_TOKEN));
    }
}
