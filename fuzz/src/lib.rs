//! Helpers shared by the fuzz targets: an in-memory stream over the fuzz input and the codec
//! invariants checked by `legacy_decode` and `bound_decode`.
//!
//! Invariants (each a panic, so libFuzzer reports it as a crash):
//!
//! - **bounded reads**: for every message a [`MessageReader`] returns or refuses, the bytes it
//!   pulled from the stream since the message started never exceed the configured limit, and
//!   what it keeps buffered never exceeds the limit either (spec §2.3 W-2, H-2);
//! - **re-encoding**: a decoded message re-encodes without error as exactly one line ending in
//!   LF (W-1), and that line decodes back to an equal message;
//! - **agreement**: whenever `wire::decode_message` accepts the whole input as one message,
//!   the streaming reader returns the same message from the same bytes.

use std::fmt::Debug;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use futures::io::{AsyncRead, AsyncWrite};
use lango_handshake::wire::{self, MessageReader};
use serde::{Serialize, de::DeserializeOwned};

/// A stream over fixed bytes: reads hand out at most `chunk` bytes at a time and then EOF;
/// writes are accepted and discarded. Counts the bytes handed out.
#[derive(Debug)]
pub struct FuzzStream<'a> {
    data: &'a [u8],
    pos: usize,
    chunk: usize,
}

impl<'a> FuzzStream<'a> {
    /// A stream over `data` that returns at most `chunk` bytes per read (at least 1).
    pub fn new(data: &'a [u8], chunk: usize) -> Self {
        Self {
            data,
            pos: 0,
            chunk: chunk.max(1),
        }
    }

    /// How many bytes reads have handed out so far.
    pub fn pulled(&self) -> usize {
        self.pos
    }
}

impl AsyncRead for FuzzStream<'_> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        let n = buf.len().min(self.chunk).min(self.data.len() - self.pos);
        let start = self.pos;
        buf[..n].copy_from_slice(&self.data[start..start + n]);
        self.pos += n;
        Poll::Ready(Ok(n))
    }
}

impl AsyncWrite for FuzzStream<'_> {
    fn poll_write(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_close(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

/// Splits the fuzz input into (per-message limit, read chunk size, payload). The first byte
/// picks a limit between 64 and 4 144 bytes, the second a chunk size (0 = whole reads).
pub fn split_input(data: &[u8]) -> Option<(usize, usize, &[u8])> {
    let (&a, rest) = data.split_first()?;
    let (&b, payload) = rest.split_first()?;
    let limit = wire::MIN_MAX_MESSAGE_BYTES + usize::from(a) * 16;
    let chunk = if b == 0 { usize::MAX } else { usize::from(b) };
    Some((limit, chunk, payload))
}

/// Re-encodes a decoded message and checks W-1 and the round trip.
pub fn check_reencode<T>(msg: &T)
where
    T: Serialize + DeserializeOwned + PartialEq + Debug,
{
    let line = match wire::encode_line(msg) {
        Ok(l) => l,
        Err(e) => panic!("decoded message does not re-encode: {e}; {msg:?}"),
    };
    assert_eq!(line.last(), Some(&b'\n'), "encoded line must end in LF");
    assert_eq!(
        line.iter().filter(|&&b| b == b'\n').count(),
        1,
        "encoded line must hold exactly one LF"
    );
    match wire::decode_message::<T>(&line) {
        Ok(back) => assert_eq!(&back, msg, "re-encoded message decodes differently"),
        Err(e) => panic!("re-encoded message does not decode: {e}; {msg:?}"),
    }
}

/// Reads one `T` from `reader`, checking the bounded-read invariant and, on success, the
/// re-encoding invariant. Returns whether a message was read.
pub fn read_one<T>(reader: &mut MessageReader<FuzzStream<'_>>) -> bool
where
    T: Serialize + DeserializeOwned + PartialEq + Debug,
{
    let limit = reader.limit();
    let start = reader.get_ref().pulled() - reader.buffered().len();
    let res = futures::executor::block_on(reader.read_message::<T>());
    let pulled = reader.get_ref().pulled() - start;
    assert!(
        pulled <= limit,
        "reader pulled {pulled} bytes for one message, limit {limit}"
    );
    assert!(
        reader.buffered().len() <= limit,
        "reader buffers {} bytes, limit {limit}",
        reader.buffered().len()
    );
    match res {
        Ok(msg) => {
            check_reencode(&msg);
            true
        }
        Err(_) => false,
    }
}

/// The agreement invariant for one message type: if `decode_message` accepts `payload`, the
/// streaming reader (with room for the whole payload) yields the same message. Also checks
/// the re-encoding of whatever `decode_message` accepts.
pub fn check_agreement<T>(payload: &[u8], chunk: usize)
where
    T: Serialize + DeserializeOwned + PartialEq + Debug,
{
    let Ok(whole) = wire::decode_message::<T>(payload) else {
        return;
    };
    check_reencode(&whole);
    let mut reader = MessageReader::with_limit(FuzzStream::new(payload, chunk), payload.len() + 1);
    match futures::executor::block_on(reader.read_message::<T>()) {
        Ok(streamed) => assert_eq!(streamed, whole, "reader and decode_message disagree"),
        Err(e) => panic!("decode_message accepts what the reader refuses: {e}"),
    }
}

/// lango-p2p's firewall, compiled here from its own source file. The module depends on nothing
/// else in lango-p2p, and including it keeps this workspace from building libp2p, SQLCipher and
/// the sandbox under the sanitizers just to reach two pure-logic modules.
#[path = "../../crates/lango-p2p/src/firewall.rs"]
pub mod firewall;

/// lango-p2p's A2A wire format (bounded request reading), compiled here from its own source
/// file (see [`firewall`] for why).
#[path = "../../crates/lango-p2p/src/protocol.rs"]
pub mod protocol;

/// lango-p2p's response sanitizer and owner shield, compiled here from its own source file (see
/// [`firewall`] for why).
#[path = "../../crates/lango-p2p/src/sanitize.rs"]
pub mod sanitize;
