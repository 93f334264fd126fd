//! Shared fixtures: the spec's keys and vectors, and instrumented in-memory streams.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures::io::AsyncRead;
use lango_crypto::wallet::{Did, WalletKey};

/// The spec's fixed clock: 1 700 000 000 (2023-11-14T22:13:20Z).
pub const NOW: u64 = 1_700_000_000;

pub fn now() -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(NOW)
}

pub fn at(secs: i64) -> SystemTime {
    if secs >= 0 {
        UNIX_EPOCH + Duration::from_secs(secs as u64)
    } else {
        UNIX_EPOCH - Duration::from_secs(secs.unsigned_abs())
    }
}

/// Wallet key with scalar `n` (key 1 = dI, key 2 = dR).
pub fn key(n: u8) -> WalletKey {
    let mut b = [0u8; 32];
    b[31] = n;
    WalletKey::from_bytes(&b).unwrap()
}

pub fn did(n: u8) -> Did {
    key(n).did()
}

/// nonce = 00 01 02 … 1f.
pub fn nonce() -> [u8; 32] {
    core::array::from_fn(|i| i as u8)
}

pub fn h(s: &str) -> Vec<u8> {
    hex::decode(s.split_whitespace().collect::<String>()).unwrap()
}

pub const PK_I: &str = "0279be667ef9dcbbac55a06295ce870b07029bfcdb2dce28d959f2815b16f81798";
pub const PK_R: &str = "02c6047f9441ed7d6d3045406e95c07cd85c778e4b8cef3ca7abac09b95c709ee5";
pub const DID_I: &str =
    "did:lango:0279be667ef9dcbbac55a06295ce870b07029bfcdb2dce28d959f2815b16f81798";
pub const DID_R: &str =
    "did:lango:02c6047f9441ed7d6d3045406e95c07cd85c778e4b8cef3ca7abac09b95c709ee5";

pub const SIG_I: &str = "2ef332667c6d44c5fa3087b99270a57f481988f82b7af71a6ea9ca88c71451e6\
                         08aec75dc458dd8c8e9002da4c8c076bf43074ebc6d5077b50f9a816fcb5dbe800";
pub const SIG_I_DOUBLE: &str = "c76592dc73cd7efcf44b071917cd77aa857b924c8ea05c20fe67f01d93d2fbdc\
                                3dd68e62da6a96919801296797144e006a0be80317e7b31ee87fb4425e1305d401";
pub const SIG_R: &str = "ea3be0b6beff1ffb98a6ce21bae88abbe9a6a5cc88e354d0c33a49aa273b0869\
                         00ef988d6bc18ee1a8883f4058b726a157aee21bb1f33a2add65e3a61852ef5601";

pub const V1_LINE: &str = r#"{"nonce":"AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=","timestamp":1700000000,"senderDid":"did:lango:0279be667ef9dcbbac55a06295ce870b07029bfcdb2dce28d959f2815b16f81798","publicKey":"Anm+Zn753LusVaBilc6HCwcCm/zbLc4o2VnygVsW+BeY","signature":"LvMyZnxtRMX6MIe5knClf0gZiPgrevcabqnKiMcUUeYIrsddxFjdjI6QAtpMjAdr9DB068bVB3tQ+agW/LXb6AA="}"#;
pub const V1_UNSIGNED_LINE: &str = r#"{"nonce":"AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=","timestamp":1700000000,"senderDid":"did:lango:0279be667ef9dcbbac55a06295ce870b07029bfcdb2dce28d959f2815b16f81798"}"#;
pub const V3_LINE: &str = r#"{"nonce":"AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=","signature":"6jvgtr7/H/uYps4huuiKu+mmpcyI41TQwzpJqic7CGkA75iNa8GO4aiIP0BYtyahV67iG7HzOirdZeOmGFLvVgE=","did":"did:lango:02c6047f9441ed7d6d3045406e95c07cd85c778e4b8cef3ca7abac09b95c709ee5","publicKey":"AsYEf5RB7X1tMEVAbpXAfNhcd45LjO88p6usCblccJ7l"}"#;
pub const V4_TOKEN: &str = "95e9defda3cea475c7459a95ea0bbe012a8ee78f7f42ad2465063cf40ea33b76";
pub const V4_LINE: &str = r#"{"token":"95e9defda3cea475c7459a95ea0bbe012a8ee78f7f42ad2465063cf40ea33b76","expiresAt":1700086400}"#;

/// secp256k1 group order n.
const N: [u8; 32] = [
    0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xfe,
    0xba, 0xae, 0xdc, 0xe6, 0xaf, 0x48, 0xa0, 0x3b, 0xbf, 0xd2, 0x5e, 0x8c, 0xd0, 0x36, 0x41, 0x41,
];

/// Big-endian `a - b` (a ≥ b).
pub fn sub_be(a: &[u8; 32], b: &[u8]) -> [u8; 32] {
    let mut out = [0u8; 32];
    let mut borrow = 0i16;
    for i in (0..32).rev() {
        let mut d = a[i] as i16 - b[i] as i16 - borrow;
        borrow = 0;
        if d < 0 {
            d += 256;
            borrow = 1;
        }
        out[i] = d as u8;
    }
    assert_eq!(borrow, 0);
    out
}

/// The malleated twin of a valid signature: `s' = n − s`, `v' = v ^ 1`. Recovers the same key.
pub fn high_s_twin(sig: &[u8]) -> Vec<u8> {
    let mut out = sig.to_vec();
    let s2 = sub_be(&N, &sig[32..64]);
    out[32..64].copy_from_slice(&s2);
    out[64] ^= 1;
    out
}

pub fn group_order() -> [u8; 32] {
    N
}

/// A reader over fixed bytes that returns at most `chunk` bytes per read and counts every
/// byte handed out.
pub struct CountingReader {
    data: Vec<u8>,
    pos: usize,
    chunk: usize,
    pub pulled: Arc<AtomicUsize>,
}

impl CountingReader {
    pub fn new(data: impl Into<Vec<u8>>, chunk: usize) -> Self {
        Self {
            data: data.into(),
            pos: 0,
            chunk: chunk.max(1),
            pulled: Arc::new(AtomicUsize::new(0)),
        }
    }
}

impl AsyncRead for CountingReader {
    fn poll_read(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<std::io::Result<usize>> {
        let n = buf.len().min(self.chunk).min(self.data.len() - self.pos);
        let start = self.pos;
        buf[..n].copy_from_slice(&self.data[start..start + n]);
        self.pos += n;
        self.pulled.fetch_add(n, Ordering::SeqCst);
        Poll::Ready(Ok(n))
    }
}

/// A reader that produces an endless stream of one byte, counting what it hands out.
pub struct EndlessReader {
    pub byte: u8,
    pub pulled: Arc<AtomicUsize>,
}

impl AsyncRead for EndlessReader {
    fn poll_read(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<std::io::Result<usize>> {
        buf.fill(self.byte);
        self.pulled.fetch_add(buf.len(), Ordering::SeqCst);
        Poll::Ready(Ok(buf.len()))
    }
}

// ---- in-memory duplex stream ----

use std::collections::VecDeque;
use std::sync::Mutex;
use std::task::Waker;

use futures::io::AsyncWrite;

#[derive(Default)]
struct Pipe {
    buf: VecDeque<u8>,
    closed: bool,
    waker: Option<Waker>,
}

/// One end of an in-memory duplex pipe. Records everything it writes; can be told to fail
/// its n-th write.
pub struct End {
    rx: Arc<Mutex<Pipe>>,
    tx: Arc<Mutex<Pipe>>,
    pub written: Arc<Mutex<Vec<u8>>>,
    writes: usize,
    pub fail_write_number: Option<usize>,
    /// The n-th write never completes (a peer that stopped reading).
    pub block_write_number: Option<usize>,
}

pub fn duplex() -> (End, End) {
    let a = Arc::new(Mutex::new(Pipe::default()));
    let b = Arc::new(Mutex::new(Pipe::default()));
    (
        End {
            rx: a.clone(),
            tx: b.clone(),
            written: Default::default(),
            writes: 0,
            fail_write_number: None,
            block_write_number: None,
        },
        End {
            rx: b,
            tx: a,
            written: Default::default(),
            writes: 0,
            fail_write_number: None,
            block_write_number: None,
        },
    )
}

impl AsyncRead for End {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<std::io::Result<usize>> {
        let mut p = self.rx.lock().unwrap();
        if !p.buf.is_empty() {
            let n = buf.len().min(p.buf.len());
            for b in buf.iter_mut().take(n) {
                *b = p.buf.pop_front().unwrap();
            }
            return Poll::Ready(Ok(n));
        }
        if p.closed {
            return Poll::Ready(Ok(0));
        }
        p.waker = Some(cx.waker().clone());
        Poll::Pending
    }
}

impl AsyncWrite for End {
    fn poll_write(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        if self.block_write_number == Some(self.writes + 1) {
            return Poll::Pending;
        }
        self.writes += 1;
        if self.fail_write_number == Some(self.writes) {
            return Poll::Ready(Err(std::io::Error::new(
                std::io::ErrorKind::BrokenPipe,
                "injected write failure",
            )));
        }
        self.written.lock().unwrap().extend_from_slice(buf);
        let mut p = self.tx.lock().unwrap();
        p.buf.extend(buf.iter().copied());
        if let Some(w) = p.waker.take() {
            w.wake();
        }
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_close(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        let mut p = self.tx.lock().unwrap();
        p.closed = true;
        if let Some(w) = p.waker.take() {
            w.wake();
        }
        Poll::Ready(Ok(()))
    }
}

impl Drop for End {
    fn drop(&mut self) {
        for pipe in [&self.tx, &self.rx] {
            let mut p = pipe.lock().unwrap();
            p.closed = true;
            if let Some(w) = p.waker.take() {
                w.wake();
            }
        }
    }
}
