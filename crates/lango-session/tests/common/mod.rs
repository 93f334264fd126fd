//! Helpers shared by the integration tests.
#![allow(dead_code, clippy::unwrap_used, clippy::panic)]

use std::sync::Arc;
use std::sync::mpsc;
use std::thread;
use std::time::Duration;

#[allow(unused_imports)]
pub use lango_session::Clock;
use lango_session::{ManualClock, NewSession, Role, SessionConfig, SessionStore};

/// 2023-11-14T22:13:20Z, the spec's test clock.
pub const T0: u64 = 1_700_000_000;
pub const TTL: Duration = Duration::from_secs(3600);
pub const COOLDOWN: Duration = Duration::from_secs(300);

pub const PEER_A: &str = "12D3KooWQK1wnefoLrcVHbbnf5tLzbopUd3K3bFAoJpA7YJgL5pV";
pub const PEER_B: &str = "12D3KooWDwTirQce1RRKnasT5fPVFgzXCy6SiRgSwrwPGLC7zE91";

pub fn did(i: usize) -> String {
    format!("did:lango:{i:066x}")
}

pub fn config() -> SessionConfig {
    SessionConfig {
        session_token_ttl: TTL,
        session_revoke_cooldown: COOLDOWN,
        ..SessionConfig::default()
    }
}

pub fn store_with(config: &SessionConfig) -> (SessionStore, Arc<ManualClock>) {
    let clock = Arc::new(ManualClock::at_unix(T0));
    let store = SessionStore::builder(config)
        .clock(clock.clone())
        .build()
        .unwrap();
    (store, clock)
}

pub fn store() -> (SessionStore, Arc<ManualClock>) {
    store_with(&config())
}

/// An authenticated legacy session from `peer`.
pub fn legacy<'a>(did: &'a str, peer: &'a str) -> NewSession<'a> {
    NewSession {
        peer_did: did,
        peer_id: peer,
        protocol: "/lango/handshake/1.1.0",
        role: Role::Responder,
        authenticated: true,
        channel_bound: false,
        zk_verified: false,
        remote_ip: None,
    }
}

/// A channel-bound 1.2 session from `peer`.
pub fn bound<'a>(did: &'a str, peer: &'a str) -> NewSession<'a> {
    NewSession {
        protocol: "/lango/handshake/1.2.0-bound",
        channel_bound: true,
        ..legacy(did, peer)
    }
}

/// An unauthenticated legacy session (unsigned challenge) from `peer`.
pub fn unsigned<'a>(did: &'a str, peer: &'a str) -> NewSession<'a> {
    NewSession {
        authenticated: false,
        ..legacy(did, peer)
    }
}

/// Runs `f` on another thread and fails the test if it has not finished within 10 s
/// (a deadlock), instead of hanging the test run.
pub fn within_deadline<T: Send + 'static>(what: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        let _ = tx.send(f());
    });
    match rx.recv_timeout(Duration::from_secs(10)) {
        Ok(v) => v,
        Err(_) => panic!("{what}: did not finish within 10 s (deadlock?)"),
    }
}
