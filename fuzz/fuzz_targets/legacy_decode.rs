//! Arbitrary bytes through the legacy codecs: a bounded `MessageReader` reading `Challenge`,
//! `ChallengeResponse`, `SessionAck` in turn until one fails, and `wire::decode_message` on the
//! whole payload for each type. See `src/lib.rs` for the invariants.
#![no_main]

use lango_fuzz::{FuzzStream, check_agreement, read_one, split_input};
use lango_handshake::messages::{Challenge, ChallengeResponse, SessionAck};
use lango_handshake::wire::MessageReader;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((limit, chunk, payload)) = split_input(data) else {
        return;
    };

    let mut reader = MessageReader::with_limit(FuzzStream::new(payload, chunk), limit);
    for step in 0usize.. {
        let ok = match step % 3 {
            0 => read_one::<Challenge>(&mut reader),
            1 => read_one::<ChallengeResponse>(&mut reader),
            _ => read_one::<SessionAck>(&mut reader),
        };
        if !ok {
            break;
        }
    }

    check_agreement::<Challenge>(payload, chunk);
    check_agreement::<ChallengeResponse>(payload, chunk);
    check_agreement::<SessionAck>(payload, chunk);
});
