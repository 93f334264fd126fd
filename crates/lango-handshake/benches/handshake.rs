//! Complete handshakes per second over loopback TCP, next to their crypto floor
//! (`cargo xtask bench handshake`).
//!
//! - `handshake/tcp_legacy11`, `handshake/tcp_bound12`: one iteration is one complete
//!   exchange between a Rust initiator and a Rust responder on a fresh loopback TCP
//!   connection (connect, accept, `Initiator::initiate` ‖ `Responder::handle`, both sides
//!   done). The responder has a real `NonceCache` with the wired TTL, the system clock and no
//!   approval hook.
//! - `handshake_crypto_floor/*`: the signatures and recoveries one exchange performs, measured
//!   directly with `WalletKey::sign_message` and `sig::verify_signed_message` on the same
//!   messages. Every signing helper self-verifies (`sign_checked`), so one signed message
//!   costs one sign and two recoveries (signer and peer):
//!   - 1.1: 2 signs (challenge, response) + 4 recoveries;
//!   - 1.2: 3 signs (hello, proof, finish) + 6 recoveries.
//!
//! After the run the bench prints handshake time / crypto floor for each version and writes
//! the ratios as metric files (`<criterion dir>/handshake/ratio_<version>.json`), which
//! `cargo xtask bench` adds to its report.
#![allow(
    missing_docs,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::print_stderr
)]

use std::hint::black_box;
use std::io;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime};

use criterion::{Criterion, Throughput};
use lango_crypto::node_key::NodeKey;
use lango_crypto::wallet::WalletKey;
use lango_handshake::clock::{Clock, SystemClock};
use lango_handshake::exchange::{HandshakeConfig, Initiator, Responder, StreamContext};
use lango_handshake::legacy::challenge_payload;
use lango_handshake::nonce::{NonceCache, wired_nonce_ttl};
use lango_handshake::protocol::Protocol;
use lango_handshake::sig::verify_signed_message;
use lango_handshake::v12::{
    ChannelBinding, InitPart, RespPart, TokenDigest, finish_sig_input, hello_sig_input,
    proof_sig_input,
};
use lango_session::{SessionConfig, SessionStore};
use tokio::net::{TcpListener, TcpStream};

/// `tokio::net::TcpStream` as a `futures::io` stream (tokio-util is not a workspace
/// dependency, so this is the few lines of `tokio_util::compat` the bench needs).
struct Compat(TcpStream);

impl futures::io::AsyncRead for Compat {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        let mut rb = tokio::io::ReadBuf::new(buf);
        match tokio::io::AsyncRead::poll_read(Pin::new(&mut self.0), cx, &mut rb) {
            Poll::Ready(Ok(())) => Poll::Ready(Ok(rb.filled().len())),
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => Poll::Pending,
        }
    }
}

impl futures::io::AsyncWrite for Compat {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        tokio::io::AsyncWrite::poll_write(Pin::new(&mut self.0), cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        tokio::io::AsyncWrite::poll_flush(Pin::new(&mut self.0), cx)
    }

    fn poll_close(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        tokio::io::AsyncWrite::poll_shutdown(Pin::new(&mut self.0), cx)
    }
}

fn wallet_key(n: u8) -> WalletKey {
    let mut b = [0u8; 32];
    b[31] = n;
    WalletKey::from_bytes(&b).unwrap()
}

/// One initiator and one responder, each with its own session store, and a listener.
struct Pair {
    rt: tokio::runtime::Runtime,
    listener: TcpListener,
    responder: Responder,
    initiator: Initiator,
    rctx: StreamContext,
    ictx: StreamContext,
}

impl Pair {
    fn new(protocol: Protocol) -> Self {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let listener = rt.block_on(TcpListener::bind("127.0.0.1:0")).unwrap();
        let clock: Arc<dyn Clock> = Arc::new(SystemClock);
        let config = HandshakeConfig::default();
        let nonce_cache = Arc::new(NonceCache::with_clock(
            wired_nonce_ttl(config.effective_timeout()),
            0,
            clock.clone(),
        ));
        let sessions = |c: &Arc<dyn Clock>| {
            SessionStore::builder(&SessionConfig::default())
                .clock(c.clone())
                .build()
                .unwrap()
        };
        let responder = Responder::new(
            Arc::new(wallet_key(2)),
            sessions(&clock),
            nonce_cache,
            clock.clone(),
            config.clone(),
        );
        let initiator = Initiator::new(Arc::new(wallet_key(1)), sessions(&clock), clock, config);
        let peer_i = NodeKey::generate().unwrap().peer_id();
        let peer_r = NodeKey::generate().unwrap().peer_id();
        let remote_addr = "/ip4/127.0.0.1/tcp/0".to_owned();
        Self {
            rt,
            listener,
            responder,
            initiator,
            rctx: StreamContext {
                local_peer_id: peer_r.clone(),
                remote_peer_id: peer_i.clone(),
                remote_addr: remote_addr.clone(),
                protocol,
            },
            ictx: StreamContext {
                local_peer_id: peer_i,
                remote_peer_id: peer_r,
                remote_addr,
                protocol,
            },
        }
    }

    /// One complete exchange on a new connection; returns once both sides are done.
    fn handshake(&self) {
        let addr = self.listener.local_addr().unwrap();
        self.rt.block_on(async {
            let server = async {
                let (s, _) = self.listener.accept().await.unwrap();
                s.set_nodelay(true).unwrap();
                self.responder.handle(Compat(s), &self.rctx).await
            };
            let client = async {
                let s = TcpStream::connect(addr).await.unwrap();
                s.set_nodelay(true).unwrap();
                self.initiator.initiate(Compat(s), &self.ictx, None).await
            };
            let (r, i) = tokio::join!(server, client);
            r.expect("responder");
            i.expect("initiator");
        });
    }
}

fn handshakes(c: &mut Criterion) {
    let mut g = c.benchmark_group("handshake");
    g.throughput(Throughput::Elements(1));
    for (name, protocol) in [
        ("tcp_legacy11", Protocol::Legacy11),
        ("tcp_bound12", Protocol::Bound12),
    ] {
        let mut pair = None;
        g.bench_function(name, |b| {
            let p = pair.get_or_insert_with(|| Pair::new(protocol));
            b.iter(|| p.handshake());
        });
    }
    g.finish();
}

/// The messages one exchange signs, built exactly as the protocol builds them.
struct Messages {
    i: WalletKey,
    r: WalletKey,
    challenge: Vec<u8>,
    nonce: [u8; 32],
    hello: Vec<u8>,
    proof: Vec<u8>,
    finish: Vec<u8>,
}

fn messages() -> Messages {
    let i = wallet_key(1);
    let r = wallet_key(2);
    let nonce: [u8; 32] = core::array::from_fn(|k| k as u8);
    let nonce_r: [u8; 32] = core::array::from_fn(|k| 32 + k as u8);
    let ts = 1_700_000_000;
    let challenge = challenge_payload(&nonce, ts, i.did().as_str());
    let binding: ChannelBinding = StreamContext {
        local_peer_id: NodeKey::generate().unwrap().peer_id(),
        remote_peer_id: NodeKey::generate().unwrap().peer_id(),
        remote_addr: String::new(),
        protocol: Protocol::Bound12,
    }
    .initiator_binding()
    .unwrap();
    let init = InitPart::new(nonce, ts, i.public_key());
    let resp = RespPart::new(nonce_r, r.public_key());
    let token = TokenDigest([0x5a; 32]);
    Messages {
        hello: hello_sig_input(&binding, &init),
        proof: proof_sig_input(&binding, &init, &resp),
        finish: finish_sig_input(&binding, &init, &resp, &token, ts + 86_400),
        challenge,
        nonce,
        i,
        r,
    }
}

/// `sign_checked` then the peer's check: one sign, two recoveries.
fn signed_and_checked(key: &WalletKey, msg: &[u8]) {
    let sig = key.sign_message(black_box(msg)).unwrap().to_bytes();
    let pk = key.public_key();
    verify_signed_message(&pk, msg, &sig).unwrap();
    verify_signed_message(&pk, black_box(msg), black_box(&sig)).unwrap();
}

fn crypto_floor(c: &mut Criterion) {
    let m = messages();
    let mut g = c.benchmark_group("handshake_crypto_floor");
    g.throughput(Throughput::Elements(1));
    g.bench_function("sign_message", |b| {
        b.iter(|| m.i.sign_message(black_box(&m.hello)).unwrap())
    });
    let sig = m.i.sign_message(&m.hello).unwrap().to_bytes();
    let pk = m.i.public_key();
    g.bench_function("verify_signed_message", |b| {
        b.iter(|| verify_signed_message(&pk, black_box(&m.hello), black_box(&sig)).unwrap())
    });
    // 1.1: the challenge (initiator) and the response over the nonce (responder).
    g.bench_function("legacy11", |b| {
        b.iter(|| {
            signed_and_checked(&m.i, &m.challenge);
            signed_and_checked(&m.r, &m.nonce);
        })
    });
    // 1.2: hello and finish (initiator), proof (responder).
    g.bench_function("bound12", |b| {
        b.iter(|| {
            signed_and_checked(&m.i, &m.hello);
            signed_and_checked(&m.r, &m.proof);
            signed_and_checked(&m.i, &m.finish);
        })
    });
    g.finish();
}

/// Where criterion writes its results (the same rule criterion uses, resolved from the bench
/// executable when neither variable is set: `<target>/release/deps/<bench>`).
fn criterion_dir() -> PathBuf {
    if let Some(home) = std::env::var_os("CRITERION_HOME") {
        return PathBuf::from(home);
    }
    if let Some(t) = std::env::var_os("CARGO_TARGET_DIR") {
        return PathBuf::from(t).join("criterion");
    }
    std::env::current_exe()
        .ok()
        .and_then(|exe| exe.ancestors().nth(3).map(|t| t.join("criterion")))
        .unwrap_or_else(|| PathBuf::from("target/criterion"))
}

/// The median (ns) of a benchmark measured by this process, if it ran.
fn fresh_median(dir: &std::path::Path, started: SystemTime) -> Option<f64> {
    let est = dir.join("new/estimates.json");
    let modified = std::fs::metadata(&est).ok()?.modified().ok()?;
    if modified < started {
        return None;
    }
    let v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(est).ok()?).ok()?;
    v["median"]["point_estimate"].as_f64()
}

/// Writes one metric file for `cargo xtask bench` (format documented in xtask/src/bench.rs).
fn write_metric(
    dir: &std::path::Path,
    file: &str,
    metric: &str,
    value: f64,
    unit: &str,
    note: &str,
) {
    let body = serde_json::json!({ "metric": metric, "value": value, "unit": unit, "note": note });
    if std::fs::create_dir_all(dir).is_ok() {
        let _ = std::fs::write(dir.join(file), body.to_string());
    }
}

fn report_ratios(started: SystemTime) {
    let root = criterion_dir();
    for (version, hs, floor) in [
        ("legacy11", "tcp_legacy11", "legacy11"),
        ("bound12", "tcp_bound12", "bound12"),
    ] {
        let h = fresh_median(&root.join("handshake").join(hs), started);
        let f = fresh_median(&root.join("handshake_crypto_floor").join(floor), started);
        if let (Some(h), Some(f)) = (h, f) {
            let ratio = h / f;
            eprintln!(
                "handshake {version}: {:.0} handshakes/s ({:.1} µs), crypto floor {:.1} µs \
                 ({:.0}/s), handshake / floor = {ratio:.2}",
                1e9 / h,
                h / 1e3,
                f / 1e3,
                1e9 / f
            );
            write_metric(
                &root.join("handshake"),
                &format!("ratio_{version}.json"),
                &format!("handshake/{version}: handshake time / crypto floor"),
                ratio,
                "x",
                "median of handshake/tcp_* over median of handshake_crypto_floor/*",
            );
        }
    }
}

fn main() {
    let started = SystemTime::now() - Duration::from_secs(1);
    let mut c = Criterion::default().configure_from_args();
    handshakes(&mut c);
    crypto_floor(&mut c);
    c.final_summary();
    report_ratios(started);
}
