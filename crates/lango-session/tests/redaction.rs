//! Tokens never appear in Debug/Display output, logs or the CLI JSON (spec §3.7, §5.6,
//! H-8, §7 "Tokens never appear in Debug output, logs or CLI JSON").
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::io::Write;
use std::sync::{Arc, Mutex};

use common::*;
use lango_session::{Error, InvalidationReason, SecurityEventHandler, SessionToken};

#[derive(Clone, Default)]
struct Capture(Arc<Mutex<Vec<u8>>>);

impl Write for Capture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Capture {
    fn text(&self) -> String {
        String::from_utf8(self.0.lock().unwrap().clone()).unwrap()
    }
}

#[test]
fn debug_and_display_never_show_the_token() {
    let (store, _) = store();
    let issued = store.create(legacy(&did(1), PEER_A)).unwrap();
    let hex = issued.token.expose().to_owned();
    let parsed = SessionToken::parse(&hex).unwrap();
    let outputs = [
        format!("{:?}", issued.token),
        format!("{}", issued.token),
        format!("{:#?}", issued.token),
        format!("{issued:?}"),
        format!("{issued:#?}"),
        format!("{:?}", issued.session),
        format!("{:?}", store.get(&did(1))),
        format!("{:?}", store.list()),
        format!("{store:?}"),
        format!("{parsed:?}"),
        format!("{parsed}"),
        format!("{:?}", store.resolve(&hex, PEER_B)),
        format!("{}", store.resolve(&hex, PEER_B).unwrap_err()),
        format!("{:?}", SessionToken::parse(&hex[..63])),
    ];
    for out in &outputs {
        assert!(!out.contains(&hex), "token leaked in {out}");
        assert!(!out.contains(&hex[..16]), "token prefix leaked in {out}");
    }
    assert!(outputs[0].contains("redacted"));
    assert!(outputs[3].contains("redacted"));
}

/// §5.6: the JSON view has no token, the listed keys, and `[]` when empty.
#[test]
fn json_view_has_no_token_and_the_spec_keys() {
    let (store, _) = store();
    assert_eq!(serde_json::to_string(&store.list()).unwrap(), "[]");
    let issued = store.create(bound(&did(1), PEER_A)).unwrap();
    let hex = issued.token.expose().to_owned();
    let json = serde_json::to_value(store.list()).unwrap();
    let text = json.to_string();
    assert!(!text.contains(&hex));
    assert!(!text.contains("token"));
    let obj = json[0].as_object().unwrap();
    let mut keys: Vec<_> = obj.keys().cloned().collect();
    keys.sort();
    assert_eq!(
        keys,
        [
            "authenticated",
            "channelBound",
            "createdAt",
            "expiresAt",
            "invalidated",
            "peerDid",
            "peerId",
            "protocol",
            "zkVerified"
        ]
    );
    assert_eq!(obj["peerDid"], did(1));
    assert_eq!(obj["peerId"], PEER_A);
    assert_eq!(obj["protocol"], "/lango/handshake/1.2.0-bound");
    assert_eq!(obj["createdAt"], "2023-11-14T22:13:20Z");
    assert_eq!(obj["expiresAt"], "2023-11-14T23:13:20Z");
    assert_eq!(obj["zkVerified"], false);
    assert_eq!(obj["invalidated"], false);
    assert_eq!(obj["authenticated"], true);
    assert_eq!(obj["channelBound"], true);
    // Events serialise without tokens too.
    let mut rx = store.subscribe();
    store.invalidate(&did(1), InvalidationReason::ManualRevoke);
    let event = serde_json::to_value(rx.try_recv().unwrap()).unwrap();
    assert_eq!(event["reason"], "manual_revoke");
    assert_eq!(event["peerDid"], did(1));
    assert_eq!(event["hadSession"], true);
    assert!(!event.to_string().contains(&hex));
}

/// Every log line this crate writes, at every level, is free of tokens, and the security
/// warnings carry the stable `event` field and the reference messages.
#[test]
fn logs_never_contain_tokens_and_security_events_are_structured() {
    let capture = Capture::default();
    let writer = capture.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .finish();
    let mut tokens = Vec::new();
    tracing::subscriber::with_default(subscriber, || {
        let (store, _) = store();
        let h = SecurityEventHandler::new(store.clone(), 2, 0.3);
        for i in 0..3 {
            tokens.push(
                store
                    .create(legacy(&did(i), PEER_A))
                    .unwrap()
                    .token
                    .expose()
                    .to_owned(),
            );
        }
        let t = store.mint_token(&did(9)).unwrap();
        tokens.push(t.expose().to_owned());
        store
            .insert_remote(
                legacy(&did(9), PEER_B),
                t,
                std::time::SystemTime::now() + TTL * 100,
            )
            .unwrap();
        for t in &tokens {
            let _ = store.resolve(t, PEER_A);
            let _ = store.resolve(t, PEER_B);
        }
        h.record_failure(&did(0));
        h.record_failure(&did(0));
        h.on_reputation_change(&did(1), 0.1);
        store.invalidate(&did(2), InvalidationReason::ManualRevoke);
        let _ = store.create(legacy(&did(2), PEER_A));
        store.invalidate_all(InvalidationReason::Logout);
    });
    let logs = capture.text();
    for t in &tokens {
        assert!(!logs.contains(t.as_str()), "token in logs:\n{logs}");
        assert!(!logs.contains(&t[..16]), "token prefix in logs:\n{logs}");
    }
    assert!(
        logs.contains("auto-invalidating session: repeated failures"),
        "{logs}"
    );
    assert!(
        logs.contains("auto-invalidating session: reputation drop"),
        "{logs}"
    );
    assert!(logs.contains("session_auto_invalidated"), "{logs}");
    assert!(logs.contains("session_invalidated"), "{logs}");
    assert!(logs.contains("session_created"), "{logs}");
    assert!(logs.contains("WARN"), "{logs}");
}

#[test]
fn errors_carry_no_token_material() {
    let hex = "0123456789abcdef".repeat(4);
    for e in [
        Error::InvalidToken,
        Error::Expired,
        Error::MalformedToken,
        Error::DuplicateToken,
        Error::ExpiryNotInFuture,
        Error::AuthenticatedSessionExists,
    ] {
        assert!(!e.to_string().contains(&hex));
        assert!(!format!("{e:?}").contains(&hex));
    }
    let bad = format!("{}X", &hex[..63]);
    let e = SessionToken::parse(&bad).unwrap_err();
    assert!(!e.to_string().contains(&hex[..63]));
}
