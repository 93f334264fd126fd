//! Arbitrary bytes as an A2A request stream (protocol spec T-K1).
//!
//! Input: the first byte picks the read chunk size (1–64), the rest is the stream. The
//! stream is read with a 4 KiB cap.
//!
//! Invariants (each a panic): no panic; the bytes kept never exceed the cap (a refusal is
//! `request too large`, never a larger buffer); a decoded request re-encodes and decodes
//! back equal; when the whole input is one request value, the streaming reader agrees.
#![no_main]

use std::time::Duration;

use lango_fuzz::{FuzzStream, protocol};
use libfuzzer_sys::fuzz_target;

const CAP: usize = 4096;

fuzz_target!(|data: &[u8]| {
    let Some((&chunk, body)) = data.split_first() else {
        return;
    };
    let rt = match tokio::runtime::Builder::new_current_thread().enable_time().build() {
        Ok(rt) => rt,
        Err(_) => return,
    };
    let mut stream = FuzzStream::new(body, usize::from(chunk % 64) + 1);
    let read = rt.block_on(protocol::read_request(&mut stream, CAP, Duration::from_secs(5)));
    match read {
        Ok(req) => {
            let line = serde_json::to_vec(&req).expect("a decoded request re-encodes");
            let again = protocol::decode_request(&line).expect("and decodes back");
            assert_eq!(again, req);
        }
        Err(protocol::ReadError::TooLarge) => assert!(body.len() >= CAP, "refused below the cap"),
        Err(protocol::ReadError::Timeout) => panic!("an in-memory stream cannot time out"),
        Err(protocol::ReadError::Decode(_)) => {}
    }
    if body.len() < CAP
        && let Ok(whole) = serde_json::from_slice::<protocol::Request>(body)
    {
        let mut s = FuzzStream::new(body, 7);
        let streamed = rt
            .block_on(protocol::read_request(&mut s, CAP, Duration::from_secs(5)))
            .expect("a whole-input request also reads from the stream");
        assert_eq!(streamed, whole);
    }
});
