//! Arbitrary bytes through the 1.2.0-bound codecs: a bounded `MessageReader` reading `Hello`,
//! `Proof`, `Finish`, `HandshakeResult` in turn until one fails, and `wire::decode_message` on
//! the whole payload for each type. See `src/lib.rs` for the invariants.
#![no_main]

use lango_fuzz::{FuzzStream, check_agreement, read_one, split_input};
use lango_handshake::messages::{Finish, HandshakeResult, Hello, Proof};
use lango_handshake::wire::MessageReader;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((limit, chunk, payload)) = split_input(data) else {
        return;
    };

    let mut reader = MessageReader::with_limit(FuzzStream::new(payload, chunk), limit);
    for step in 0usize.. {
        let ok = match step % 4 {
            0 => read_one::<Hello>(&mut reader),
            1 => read_one::<Proof>(&mut reader),
            2 => read_one::<Finish>(&mut reader),
            _ => read_one::<HandshakeResult>(&mut reader),
        };
        if !ok {
            break;
        }
    }

    check_agreement::<Hello>(payload, chunk);
    check_agreement::<Proof>(payload, chunk);
    check_agreement::<Finish>(payload, chunk);
    check_agreement::<HandshakeResult>(payload, chunk);
});
