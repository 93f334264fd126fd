//! Arbitrary bytes as the whole input stream of `Responder::handle`; what it writes is
//! discarded. The first byte picks the protocol (`% 3`: 1.0.0, 1.1.0, 1.2.0-bound), whether
//! signed challenges are required, and the read chunk size. The clock is a `ManualClock` at
//! 1 700 000 000 (the spec's vector time, so the spec's signed messages are valid seeds) and
//! the deadline is short, so an exchange that stalls ends.
//!
//! Invariants:
//! - 1.2.0-bound never stores a session: the Finish must be signed over the responder's fresh
//!   random nonce, which no fixed input can contain;
//! - legacy stores a session exactly when `handle` succeeds, never channel-bound; an
//!   authenticated session (and any session when signed challenges are required) needs a
//!   first message that is a validly signed challenge for the stored DID; the session's peer
//!   ID is the remote one.
#![no_main]

use std::sync::{Arc, OnceLock};
use std::time::{Duration, UNIX_EPOCH};

use lango_crypto::wallet::WalletKey;
use lango_fuzz::FuzzStream;
use lango_handshake::clock::{Clock, ManualClock};
use lango_handshake::exchange::{HandshakeConfig, Responder, StreamContext};
use lango_handshake::legacy;
use lango_handshake::messages::Challenge;
use lango_handshake::nonce::{NonceCache, wired_nonce_ttl};
use lango_handshake::protocol::Protocol;
use lango_handshake::signer::Wallet;
use lango_handshake::wire::MessageReader;
use lango_session::{SessionConfig, SessionStore};
use libfuzzer_sys::fuzz_target;

/// The spec's fixed time (section 2.8).
const NOW: u64 = 1_700_000_000;
/// The spec's peer IDs (section 6.2.6): the initiator is remote, the responder local.
const PEER_I: &str = "12D3KooWQK1wnefoLrcVHbbnf5tLzbopUd3K3bFAoJpA7YJgL5pV";
const PEER_R: &str = "12D3KooWDwTirQce1RRKnasT5fPVFgzXCy6SiRgSwrwPGLC7zE91";
const MAX_MESSAGE_BYTES: usize = 1024;
const TIMEOUT: Duration = Duration::from_millis(100);

fn runtime() -> &'static tokio::runtime::Runtime {
    static RT: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap_or_else(|e| panic!("tokio runtime: {e}"))
    })
}

/// The responder's wallet: the spec's key 2.
fn wallet() -> Arc<dyn Wallet> {
    static KEY: OnceLock<Arc<WalletKey>> = OnceLock::new();
    KEY.get_or_init(|| {
        let mut scalar = [0u8; 32];
        scalar[31] = 2;
        Arc::new(WalletKey::from_bytes(&scalar).unwrap_or_else(|e| panic!("wallet: {e}")))
    })
    .clone()
}

fuzz_target!(|data: &[u8]| {
    let Some((&sel, stream)) = data.split_first() else {
        return;
    };
    let protocol = match sel % 3 {
        0 => Protocol::Legacy10,
        1 => Protocol::Legacy11,
        _ => Protocol::Bound12,
    };
    let rest = sel / 3;
    let require_signed = rest % 2 == 1;
    let chunk = match rest / 2 {
        0 => usize::MAX,
        n => usize::from(n),
    };

    let clock = Arc::new(ManualClock::at_unix(NOW));
    let dyn_clock: Arc<dyn Clock> = clock.clone();
    let store = SessionStore::builder(&SessionConfig::default())
        .clock(dyn_clock.clone())
        .build()
        .unwrap_or_else(|e| panic!("session store: {e}"));
    let cache = Arc::new(NonceCache::with_clock(
        wired_nonce_ttl(TIMEOUT),
        0,
        dyn_clock.clone(),
    ));
    let config = HandshakeConfig {
        handshake_timeout: TIMEOUT,
        max_message_bytes: MAX_MESSAGE_BYTES,
        require_signed_challenge: require_signed,
        ..HandshakeConfig::default()
    };
    let responder = Responder::new(wallet(), store.clone(), cache, dyn_clock, config);
    let ctx = StreamContext {
        local_peer_id: PEER_R.to_owned(),
        remote_peer_id: PEER_I.to_owned(),
        remote_addr: "/ip4/127.0.0.1/tcp/9000".to_owned(),
        protocol,
    };

    let result = runtime().block_on(responder.handle(FuzzStream::new(stream, chunk), &ctx));

    let stored = store.list();
    assert!(
        stored.len() <= 1,
        "one input stored {} sessions",
        stored.len()
    );
    if protocol == Protocol::Bound12 {
        assert!(
            stored.is_empty() && result.is_err(),
            "a 1.2 session was stored from fixed bytes: {result:?}"
        );
        return;
    }
    assert_eq!(
        result.is_ok(),
        !stored.is_empty(),
        "handle's result and the store disagree: {result:?}"
    );
    let Some(session) = stored.first() else {
        return;
    };
    assert!(
        !session.channel_bound,
        "legacy session marked channel-bound"
    );
    assert_eq!(session.peer_id, PEER_I, "session bound to the wrong peer");
    if let Ok(info) = &result {
        assert_eq!(info, session, "returned and stored sessions differ");
    }
    if session.authenticated || require_signed {
        assert!(
            session.authenticated,
            "unsigned session despite the requirement"
        );
        // Independently re-read the first message and check that it is a signed challenge
        // for the stored DID.
        let mut reader =
            MessageReader::with_limit(FuzzStream::new(stream, chunk), MAX_MESSAGE_BYTES);
        let ch: Challenge =
            futures::executor::block_on(reader.read_message()).unwrap_or_else(|e| {
                panic!("session stored but the first message is no challenge: {e}")
            });
        let now = UNIX_EPOCH + Duration::from_secs(NOW);
        let valid = legacy::validate_challenge(&ch, now, None, true, None)
            .unwrap_or_else(|e| panic!("authenticated session from an unsigned challenge: {e}"));
        assert!(valid.auth.is_authenticated());
        assert_eq!(
            valid.sender_did.as_str(),
            session.peer_did,
            "stored DID differs"
        );
    }
});
