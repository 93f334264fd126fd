//! The legacy handshake's ZK ownership mode (kms-and-zk spec §5.4.8) with real Halo2 proofs:
//! a Go-style challenge gets a signature only; Rust↔Rust with ZK carries both and the
//! initiator's session is `zk_verified`; a bad tag, a replayed proof, an identity the wallet
//! did not certify or a missing signature are refused; a Go-style proof without a scheme is
//! ignored.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::{
    pin::Pin,
    sync::{Arc, OnceLock},
    task::{Context, Poll},
    time::Duration,
};

use lango_crypto::wallet::WalletKey;
use lango_handshake::{
    Error,
    clock::{Clock, SystemClock},
    exchange::{HandshakeConfig, Initiator, Responder, StreamContext},
    hooks::{ZkInputs, ZkProver},
    legacy::sign_response,
    messages::{Challenge, ChallengeResponse},
    nonce::{NonceCache, wired_nonce_ttl},
    protocol::Protocol,
    signer::Wallet,
    wire::{MessageReader, write_message},
};
use lango_p2p::zk::{SCHEME, ZkOwnership};
use lango_session::{SessionConfig, SessionStore};
use lango_zkp::{IdentitySecret, ProverService, params::ParamsSource};

const PEER_I: &str = "12D3KooWQK1wnefoLrcVHbbnf5tLzbopUd3K3bFAoJpA7YJgL5pV";
const PEER_R: &str = "12D3KooWDwTirQce1RRKnasT5fPVFgzXCy6SiRgSwrwPGLC7zE91";

/// A `futures::io` view of one end of a tokio in-memory duplex pipe.
struct Pipe(tokio::io::DuplexStream);

impl futures::io::AsyncRead for Pipe {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<std::io::Result<usize>> {
        let mut rb = tokio::io::ReadBuf::new(buf);
        match tokio::io::AsyncRead::poll_read(Pin::new(&mut self.0), cx, &mut rb) {
            Poll::Ready(Ok(())) => Poll::Ready(Ok(rb.filled().len())),
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => Poll::Pending,
        }
    }
}

impl futures::io::AsyncWrite for Pipe {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        tokio::io::AsyncWrite::poll_write(Pin::new(&mut self.0), cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        tokio::io::AsyncWrite::poll_flush(Pin::new(&mut self.0), cx)
    }
    fn poll_close(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        tokio::io::AsyncWrite::poll_shutdown(Pin::new(&mut self.0), cx)
    }
}

fn pipe() -> (Pipe, Pipe) {
    let (a, b) = tokio::io::duplex(1 << 16);
    (Pipe(a), Pipe(b))
}

fn ctx(local: &str, remote: &str) -> StreamContext {
    ctx_on(local, remote, Protocol::Legacy11)
}

fn ctx_on(local: &str, remote: &str, protocol: Protocol) -> StreamContext {
    StreamContext {
        local_peer_id: local.into(),
        remote_peer_id: remote.into(),
        remote_addr: "/ip4/127.0.0.1/tcp/9000".into(),
        protocol,
    }
}

fn service() -> Arc<ProverService> {
    static S: OnceLock<Arc<ProverService>> = OnceLock::new();
    S.get_or_init(|| Arc::new(ProverService::new(ParamsSource::Memory)))
        .clone()
}

fn store() -> SessionStore {
    SessionStore::builder(&SessionConfig::default())
        .build()
        .unwrap()
}

fn wallet() -> Arc<WalletKey> {
    Arc::new(WalletKey::generate().unwrap())
}

async fn zk_prover(w: &WalletKey) -> Arc<ZkOwnership> {
    Arc::new(
        ZkOwnership::prover(service(), IdentitySecret::generate().unwrap(), w)
            .await
            .unwrap(),
    )
}

fn initiator(w: Arc<WalletKey>, zk: bool) -> (Initiator, SessionStore) {
    let s = store();
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let mut i = Initiator::new(w, s.clone(), clock, HandshakeConfig::default());
    if zk {
        i = i.with_zk(Arc::new(ZkOwnership::verifier(service())));
    }
    (i, s)
}

fn responder(
    w: Arc<WalletKey>,
    prover: Option<Arc<ZkOwnership>>,
) -> (Arc<Responder>, SessionStore) {
    let s = store();
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let cache = Arc::new(NonceCache::with_clock(
        wired_nonce_ttl(Duration::from_secs(30)),
        0,
        clock.clone(),
    ));
    let mut r = Responder::new(w, s.clone(), cache, clock, HandshakeConfig::default());
    if let Some(p) = prover {
        r = r.with_zk_prover(p);
    }
    (Arc::new(r), s)
}

/// A full exchange between a real initiator and a real responder.
async fn exchange(
    i: &Initiator,
    r: Arc<Responder>,
) -> (
    Result<lango_session::SessionInfo, Error>,
    Result<lango_session::SessionInfo, Error>,
) {
    let (a, b) = pipe();
    let task = tokio::spawn(async move { r.handle(b, &ctx(PEER_R, PEER_I)).await });
    let mine = i.initiate(a, &ctx(PEER_I, PEER_R), None).await;
    (mine, task.await.unwrap())
}

/// The initiator against a scripted responder that answers with `make(challenge)`.
async fn against<F, Fut>(i: &Initiator, make: F) -> Result<lango_session::SessionInfo, Error>
where
    F: FnOnce(Challenge) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ChallengeResponse> + Send,
{
    let (a, b) = pipe();
    let task = tokio::spawn(async move {
        let mut reader = MessageReader::new(b);
        let ch: Challenge = reader.read_message().await.unwrap();
        let resp = make(ch).await;
        write_message(reader.get_mut(), &resp).await.unwrap();
        // Read the ack if one comes; the initiator may also just hang up.
        let _ = reader
            .read_message::<lango_handshake::messages::SessionAck>()
            .await;
    });
    let r = i.initiate(a, &ctx(PEER_I, PEER_R), None).await;
    task.abort();
    r
}

/// An honest response with a proof for `ch`, from `w` with prover `p`.
async fn proved_response(w: &WalletKey, p: &ZkOwnership, ch: &Challenge) -> ChallengeResponse {
    let nonce: [u8; 32] = ch.nonce.clone().try_into().unwrap();
    let mut resp = sign_response(w, &nonce).await.unwrap();
    let f = p
        .prove(ZkInputs {
            nonce: &nonce,
            public_key: &resp.public_key,
            initiator_did: &ch.sender_did,
            responder_did: &resp.did,
            protocol_id: Protocol::Legacy11.id(),
        })
        .await
        .unwrap();
    resp.set_zk(f);
    resp
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rust_to_rust_carries_signature_and_proof_and_only_the_initiator_is_zk_verified() {
    let wr = wallet();
    let p = zk_prover(&wr).await;
    let (r, r_store) = responder(wr, Some(p));
    let (i, _) = initiator(wallet(), true);
    let (mine, theirs) = exchange(&i, r).await;
    let mine = mine.unwrap();
    assert!(mine.authenticated && mine.zk_verified, "{mine:?}");
    // The responder's own session never claims ZK from its own proof (W-2).
    assert!(!theirs.unwrap().zk_verified);
    assert!(r_store.list().iter().all(|s| !s.zk_verified));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_go_style_challenge_gets_the_signature_only() {
    let wr = wallet();
    let p = zk_prover(&wr).await;
    let (r, _) = responder(wr, Some(p));
    // No ZK hook: the challenge advertises nothing, like a Go initiator's.
    let (i, _) = initiator(wallet(), false);
    let (a, b) = pipe();
    let task = tokio::spawn(async move { r.handle(b, &ctx(PEER_R, PEER_I)).await });
    let mine = i.initiate(a, &ctx(PEER_I, PEER_R), None).await.unwrap();
    task.await.unwrap().unwrap();
    assert!(mine.authenticated && !mine.zk_verified);
    // And the wire shows it: a challenge without zkSchemes gets no zk fields back.
    let w = wallet();
    let (r, _) = responder(w.clone(), Some(zk_prover(&w).await));
    let (a, b) = pipe();
    let task = tokio::spawn(async move { r.handle(b, &ctx(PEER_R, PEER_I)).await });
    let mut reader = MessageReader::new(a);
    let wi = WalletKey::generate().unwrap();
    let ch = lango_handshake::legacy::sign_challenge(&wi, &[9u8; 32], now())
        .await
        .unwrap();
    assert!(ch.zk_schemes.is_empty());
    write_message(reader.get_mut(), &ch).await.unwrap();
    let resp: ChallengeResponse = reader.read_message().await.unwrap();
    assert!(!resp.signature.is_empty());
    assert!(resp.zk_proof.is_empty() && resp.zk_scheme.is_empty() && resp.zk_id_binding.is_empty());
    drop(reader);
    let _ = task.await;
}

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_tag_or_an_uncertified_identity_rejects_the_handshake() {
    let (i, store) = initiator(wallet(), true);
    let wr = wallet();
    let p = zk_prover(&wr).await;
    let (w2, p2) = (wr.clone(), p.clone());
    let e = against(&i, move |ch| async move {
        let mut r = proved_response(&w2, &p2, &ch).await;
        r.zk_tag[0] ^= 1;
        r
    })
    .await
    .unwrap_err();
    assert!(matches!(e, Error::ZkProofInvalid), "{e}");
    assert!(e.is_security_event());
    // Another wallet's certificate over the same identity commitment.
    let other = wallet();
    let (w2, p2) = (wr.clone(), p.clone());
    let e = against(&i, move |ch| async move {
        let mut r = proved_response(&w2, &p2, &ch).await;
        let id = lango_zkp::encoding::fe_from_bytes(&r.zk_id_commitment).unwrap();
        let msg = lango_p2p::zk::id_binding_message(&id, &r.did);
        r.zk_id_binding = other.sign_message(&msg).await.unwrap().to_bytes().to_vec();
        r
    })
    .await
    .unwrap_err();
    assert!(matches!(e, Error::ZkProofInvalid), "{e}");
    assert!(
        store.list().is_empty(),
        "a session was stored after a failed proof"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_proof_replayed_into_another_handshake_is_refused() {
    let wr = wallet();
    let p = zk_prover(&wr).await;
    let (i, _) = initiator(wallet(), true);
    let recorded = Arc::new(std::sync::Mutex::new(None));
    let (w2, p2, rec) = (wr.clone(), p.clone(), recorded.clone());
    let first = against(&i, move |ch| async move {
        let r = proved_response(&w2, &p2, &ch).await;
        *rec.lock().unwrap() = Some(r.clone());
        r
    })
    .await
    .unwrap();
    assert!(first.zk_verified);
    // A second handshake: a fresh nonce, the recorded proof fields pasted in.
    let old = recorded.lock().unwrap().clone().unwrap();
    let w2 = wr.clone();
    let e = against(&i, move |ch| async move {
        let nonce: [u8; 32] = ch.nonce.clone().try_into().unwrap();
        let mut r = sign_response(&*w2, &nonce).await.unwrap();
        r.zk_scheme = old.zk_scheme;
        r.zk_proof = old.zk_proof;
        r.zk_id_commitment = old.zk_id_commitment;
        r.zk_tag = old.zk_tag;
        r.zk_id_binding = old.zk_id_binding;
        r
    })
    .await
    .unwrap_err();
    assert!(matches!(e, Error::ZkProofInvalid), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_valid_proof_never_replaces_the_signature_and_go_proofs_are_ignored() {
    let wr = wallet();
    let p = zk_prover(&wr).await;
    let (i, _) = initiator(wallet(), true);
    let (w2, p2) = (wr.clone(), p.clone());
    let e = against(&i, move |ch| async move {
        let mut r = proved_response(&w2, &p2, &ch).await;
        r.signature.clear();
        r
    })
    .await
    .unwrap_err();
    assert!(matches!(e, Error::NoProofOrSignature), "{e}");
    // A Go-style proof (opaque bytes, no scheme) next to a valid signature: ignored.
    let w2 = wr.clone();
    let s = against(&i, move |ch| async move {
        let nonce: [u8; 32] = ch.nonce.clone().try_into().unwrap();
        let mut r = sign_response(&*w2, &nonce).await.unwrap();
        r.zk_proof = vec![0xde, 0xad, 0xbe, 0xef];
        r
    })
    .await
    .unwrap();
    assert!(s.authenticated && !s.zk_verified);
    // A scheme we never advertised: ignored as well.
    let (w2, p2) = (wr.clone(), p.clone());
    let s = against(&i, move |ch| async move {
        let mut r = proved_response(&w2, &p2, &ch).await;
        r.zk_scheme = "plonk/ownership".into();
        r
    })
    .await
    .unwrap();
    assert!(!s.zk_verified);
    assert_eq!(SCHEME, "halo2-ipa-pasta/wallet_ownership/v2");
}

/// The channel-bound 1.2 handshake (what two lango-rs nodes negotiate) carries the same
/// proof in its Proof message, bound to the initiator's nonce and the 1.2 protocol ID.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_bound_handshake_carries_the_proof_too() {
    let wr = wallet();
    let p = zk_prover(&wr).await;
    let (r, r_store) = responder(wr, Some(p));
    let (i, _) = initiator(wallet(), true);
    let (a, b) = pipe();
    let task = tokio::spawn(async move {
        r.handle(b, &ctx_on(PEER_R, PEER_I, Protocol::Bound12))
            .await
    });
    let mine = i
        .initiate(a, &ctx_on(PEER_I, PEER_R, Protocol::Bound12), None)
        .await
        .unwrap();
    task.await.unwrap().unwrap();
    assert!(mine.channel_bound && mine.zk_verified, "{mine:?}");
    assert!(r_store.list().iter().all(|s| !s.zk_verified));
    // Without a prover on the other side: authenticated, not ZK-verified.
    let (r, _) = responder(wallet(), None);
    let (a, b) = pipe();
    let task = tokio::spawn(async move {
        r.handle(b, &ctx_on(PEER_R, PEER_I, Protocol::Bound12))
            .await
    });
    let mine = i
        .initiate(a, &ctx_on(PEER_I, PEER_R, Protocol::Bound12), None)
        .await
        .unwrap();
    task.await.unwrap().unwrap();
    assert!(mine.channel_bound && !mine.zk_verified);
}

/// Issue 17: proofs cost the responder CPU and DIDs cost an attacker nothing. One peer ID
/// starting handshakes with many fresh DIDs gets at most the per-peer proof budget (8 a
/// minute); the rest are answered with the signature only. Another peer ID still gets its
/// proof.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fresh_dids_from_one_peer_get_only_its_proof_budget() {
    let wr = wallet();
    let p = zk_prover(&wr).await;
    let (r, _) = responder(wr, Some(p));
    let mut proved = 0;
    for _ in 0..12 {
        // A fresh DID each time, always from the same peer ID.
        let (i, _) = initiator(wallet(), true);
        let (mine, theirs) = exchange(&i, r.clone()).await;
        let mine = mine.unwrap();
        theirs.unwrap();
        assert!(mine.authenticated, "{mine:?}");
        if mine.zk_verified {
            proved += 1;
        }
    }
    assert_eq!(proved, 8, "proofs made for one peer ID");
    // Another peer ID has its own budget.
    let (i, _) = initiator(wallet(), true);
    let (a, b) = pipe();
    let other = "12D3KooWRBhwfeP2Y4TCx1SM6s9rUoHhR5nPdfmbBpVrwhkeebQe";
    let task = tokio::spawn({
        let r = r.clone();
        async move { r.handle(b, &ctx(PEER_R, other)).await }
    });
    let mine = i.initiate(a, &ctx(other, PEER_R), None).await.unwrap();
    task.await.unwrap().unwrap();
    assert!(mine.zk_verified, "{mine:?}");
}
