//! Session store behaviour: spec §3.7, §3.8, §7 "Session store".
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::time::Duration;

use common::*;
use lango_session::{
    DEFAULT_MAX_SESSIONS, Error, InvalidationReason, NewSession, Role, SessionConfig, SessionStore,
    SessionToken,
};

#[test]
fn create_mints_64_lowercase_hex_token_and_expiry_is_created_plus_ttl() {
    let (store, clock) = store();
    let issued = store.create(legacy(&did(1), PEER_A)).unwrap();
    let tok = issued.token.expose();
    assert_eq!(tok.len(), 64);
    assert!(
        tok.bytes()
            .all(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(&c))
    );
    assert_eq!(issued.session.created_at, clock.now());
    assert_eq!(issued.session.expires_at, clock.now() + TTL);
    assert_eq!(issued.session.peer_did, did(1));
    assert_eq!(issued.session.peer_id, PEER_A);
    assert_eq!(issued.session.protocol, "/lango/handshake/1.1.0");
    assert_eq!(issued.session.role, Role::Responder);
    assert!(issued.session.authenticated);
    assert!(!issued.session.channel_bound);
    assert!(!issued.session.zk_verified);
    assert!(!issued.session.invalidated);
    // Fresh randomness every time, even for the same DID.
    let again = store.create(legacy(&did(1), PEER_A)).unwrap();
    assert_ne!(again.token, issued.token);
}

#[test]
fn ttl_zero_means_24h_and_store_reports_it() {
    let (store, clock) = store_with(&SessionConfig {
        session_token_ttl: Duration::ZERO,
        ..SessionConfig::default()
    });
    assert_eq!(store.ttl(), Duration::from_secs(86_400));
    let s = store.create(legacy(&did(1), PEER_A)).unwrap().session;
    assert_eq!(s.expires_at, clock.now() + Duration::from_secs(86_400));
    assert_eq!(store.purge_interval(), Duration::from_secs(300));
}

#[test]
fn invalid_config_is_refused() {
    let bad = SessionConfig {
        invalidation_history_limit: 0,
        ..SessionConfig::default()
    };
    assert!(
        matches!(SessionStore::new(&bad), Err(Error::Config(m)) if m.contains("invalidationHistoryLimit"))
    );
    let too_long = SessionConfig {
        session_token_ttl: Duration::from_secs(365 * 86_400),
        ..SessionConfig::default()
    };
    assert!(matches!(
        SessionStore::new(&too_long),
        Err(Error::Config(_))
    ));
    assert!(matches!(
        SessionStore::builder(&SessionConfig::default())
            .max_sessions(0)
            .build(),
        Err(Error::Config(_))
    ));
}

/// S-2: one session per DID. The replaced session's token stops resolving at once.
#[test]
fn create_replaces_the_existing_session_and_the_old_token_dies() {
    let (store, _) = store();
    let old = store.create(legacy(&did(1), PEER_A)).unwrap();
    let new = store.create(legacy(&did(1), PEER_A)).unwrap();
    assert_eq!(store.len(), 1);
    assert_eq!(
        store.resolve(old.token.expose(), PEER_A),
        Err(Error::InvalidToken)
    );
    assert!(!store.validate(&did(1), old.token.expose()));
    assert!(store.validate(&did(1), new.token.expose()));
    assert_eq!(
        store.resolve(new.token.expose(), PEER_A).unwrap().peer_did,
        did(1)
    );
}

#[test]
fn validate_right_wrong_expired_invalidated() {
    let (store, clock) = store();
    let issued = store.create(legacy(&did(1), PEER_A)).unwrap();
    let tok = issued.token.expose();
    assert!(store.validate(&did(1), tok));
    // A wrong token is refused and does not remove the session.
    let wrong = format!(
        "{}{}",
        &tok[..63],
        if tok.ends_with('0') { '1' } else { '0' }
    );
    assert!(!store.validate(&did(1), &wrong));
    assert!(!store.validate(&did(1), ""));
    assert!(
        !store.validate(&did(2), tok),
        "a token is only valid for its own DID"
    );
    assert!(store.get(&did(1)).is_some());
    // S-8: valid up to and including expires_at, expired strictly after.
    clock.advance(TTL);
    assert!(store.validate(&did(1), tok));
    clock.advance(Duration::from_nanos(1));
    assert!(!store.validate(&did(1), tok));
    // ...and the expired session was removed.
    clock.set(std::time::UNIX_EPOCH + Duration::from_secs(T0));
    assert!(
        store.get(&did(1)).is_none(),
        "expired session was not removed"
    );

    let again = store.create(legacy(&did(1), PEER_A)).unwrap();
    store.invalidate(&did(1), InvalidationReason::Logout);
    assert!(!store.validate(&did(1), again.token.expose()));
}

#[test]
fn get_is_none_for_missing_expired_and_invalidated() {
    let (store, clock) = store();
    assert!(store.get(&did(1)).is_none());
    let issued = store.create(legacy(&did(1), PEER_A)).unwrap();
    assert_eq!(store.get(&did(1)), Some(issued.session.clone()));
    clock.advance(TTL + Duration::from_secs(1));
    assert!(store.get(&did(1)).is_none());
    // get removed it: even with the clock back, it is gone.
    clock.set(std::time::UNIX_EPOCH + Duration::from_secs(T0));
    assert!(store.get(&did(1)).is_none());
    assert_eq!(
        store.resolve(issued.token.expose(), PEER_A),
        Err(Error::InvalidToken)
    );

    store.create(legacy(&did(2), PEER_A)).unwrap();
    store.invalidate(&did(2), InvalidationReason::Logout);
    assert!(store.get(&did(2)).is_none());
}

#[test]
fn list_excludes_expired_and_invalidated_is_sorted_and_purge_counts() {
    let (store, clock) = store();
    for i in [5, 3, 9, 1] {
        store.create(legacy(&did(i), PEER_A)).unwrap();
    }
    clock.advance(Duration::from_secs(1800));
    store.create(legacy(&did(7), PEER_A)).unwrap();
    store.create(legacy(&did(8), PEER_A)).unwrap();
    store.invalidate(&did(8), InvalidationReason::Logout);
    let dids: Vec<_> = store.list().into_iter().map(|s| s.peer_did).collect();
    assert_eq!(dids, [did(1), did(3), did(5), did(7), did(9)]);
    clock.advance(Duration::from_secs(1801));
    // The first four expired; list leaves them out but removes nothing.
    assert_eq!(
        store
            .list()
            .into_iter()
            .map(|s| s.peer_did)
            .collect::<Vec<_>>(),
        [did(7)]
    );
    assert_eq!(store.len(), 1);
    assert_eq!(store.purge_expired(), 4);
    assert_eq!(store.purge_expired(), 0);
    assert_eq!(store.list().len(), 1);
}

/// T-1: right token from the right peer resolves; from any other peer it is InvalidToken,
/// exactly like an unknown token.
#[test]
fn resolve_is_bound_to_the_peer_that_owns_the_session() {
    let (store, _) = store();
    let issued = store.create(legacy(&did(1), PEER_A)).unwrap();
    let tok = issued.token.expose();
    let info = store.resolve(tok, PEER_A).unwrap();
    assert_eq!(info, issued.session);
    let stolen = store.resolve(tok, PEER_B);
    let unknown = store.resolve(&"ab".repeat(32), PEER_B);
    assert_eq!(stolen, Err(Error::InvalidToken));
    assert_eq!(
        stolen, unknown,
        "a stolen token must look exactly like an unknown one"
    );
    assert_eq!(store.resolve(tok, ""), Err(Error::InvalidToken));
    assert_eq!(
        store.resolve(tok, &format!("{PEER_A} ")),
        Err(Error::InvalidToken)
    );
    // The failed attempt does not hurt the owner.
    assert!(store.resolve(tok, PEER_A).is_ok());
}

#[test]
fn resolve_refuses_malformed_tokens() {
    let (store, _) = store();
    let issued = store.create(legacy(&did(1), PEER_A)).unwrap();
    let tok = issued.token.expose();
    for bad in [
        String::new(),
        tok[..63].to_owned(),
        format!("{tok}0"),
        tok.to_uppercase(),
        format!(" {}", &tok[1..]),
        format!("{tok}\n"),
    ] {
        assert_eq!(
            store.resolve(&bad, PEER_A),
            Err(Error::InvalidToken),
            "{bad:?}"
        );
    }
}

#[test]
fn resolve_refuses_expired_tokens_and_removes_the_session() {
    let (store, clock) = store();
    let issued = store.create(legacy(&did(1), PEER_A)).unwrap();
    let tok = issued.token.expose();
    clock.advance(TTL);
    assert!(
        store.resolve(tok, PEER_A).is_ok(),
        "valid at exactly expires_at (S-8)"
    );
    clock.advance(Duration::from_nanos(1));
    // Another peer learns nothing, not even that the token expired.
    assert_eq!(store.resolve(tok, PEER_B), Err(Error::InvalidToken));
    // The expired session was removed by that lookup.
    assert_eq!(store.resolve(tok, PEER_A), Err(Error::InvalidToken));

    let issued = store.create(legacy(&did(2), PEER_A)).unwrap();
    clock.advance(TTL + Duration::from_secs(1));
    assert_eq!(
        store.resolve(issued.token.expose(), PEER_A),
        Err(Error::Expired)
    );
    assert_eq!(
        store.resolve(issued.token.expose(), PEER_A),
        Err(Error::InvalidToken)
    );
    assert!(store.is_empty());
}

/// V-7: invalidation takes effect immediately for resolve, validate and get.
#[test]
fn invalidated_token_fails_immediately() {
    let (store, _) = store();
    let issued = store.create(legacy(&did(1), PEER_A)).unwrap();
    assert!(store.invalidate(&did(1), InvalidationReason::Logout));
    assert_eq!(
        store.resolve(issued.token.expose(), PEER_A),
        Err(Error::InvalidToken)
    );
    assert!(!store.validate(&did(1), issued.token.expose()));
    assert!(store.get(&did(1)).is_none());
}

/// storing a token the peer chose.
#[test]
fn insert_remote_validates_and_clamps() {
    let (store, clock) = store();
    let now = clock.now();
    let tok = "0123456789abcdef".repeat(4);
    // Expiry in the past or now: refused.
    assert_eq!(
        store.insert_remote(
            legacy(&did(1), PEER_A),
            SessionToken::parse(&tok).unwrap(),
            now
        ),
        Err(Error::ExpiryNotInFuture)
    );
    // Year 9999 is clamped to now + TTL.
    let far = std::time::UNIX_EPOCH + Duration::from_secs(253_402_300_799);
    let info = store
        .insert_remote(
            legacy(&did(1), PEER_A),
            SessionToken::parse(&tok).unwrap(),
            far,
        )
        .unwrap();
    assert_eq!(info.expires_at, now + TTL);
    assert_eq!(store.get(&did(1)).unwrap().expires_at, now + TTL);
    // A shorter proposal is kept as is.
    let tok2 = "fedcba9876543210".repeat(4);
    let soon = now + Duration::from_secs(60);
    let info = store
        .insert_remote(
            legacy(&did(2), PEER_A),
            SessionToken::parse(&tok2).unwrap(),
            soon,
        )
        .unwrap();
    assert_eq!(info.expires_at, soon);
    assert!(store.resolve(&tok2, PEER_A).is_ok());
    // The same token for another DID is refused, and the first DID keeps it.
    assert_eq!(
        store.insert_remote(
            legacy(&did(3), PEER_B),
            SessionToken::parse(&tok).unwrap(),
            far
        ),
        Err(Error::DuplicateToken)
    );
    assert_eq!(store.resolve(&tok, PEER_A).unwrap().peer_did, did(1));
    assert!(store.get(&did(3)).is_none());
    // Malformed tokens never get this far.
    assert_eq!(
        SessionToken::parse(&tok[..63]).err(),
        Some(Error::MalformedToken)
    );
    assert_eq!(
        SessionToken::parse(&tok.to_uppercase()).err(),
        Some(Error::MalformedToken)
    );
    assert_eq!(SessionToken::parse("").err(), Some(Error::MalformedToken));
}

/// an unsigned claim cannot displace an authenticated session held by another peer.
#[test]
fn overwrite_guard_protects_authenticated_sessions() {
    let (store, _) = store();
    let victim = store.create(legacy(&did(1), PEER_A)).unwrap();
    assert_eq!(
        store.create(unsigned(&did(1), PEER_B)).map(|i| i.session),
        Err(Error::AuthenticatedSessionExists)
    );
    let tok = "0123456789abcdef".repeat(4);
    let later = std::time::SystemTime::now() + Duration::from_secs(1_000_000_000);
    assert_eq!(
        store.insert_remote(
            unsigned(&did(1), PEER_B),
            SessionToken::parse(&tok).unwrap(),
            later
        ),
        Err(Error::AuthenticatedSessionExists)
    );
    // The victim's session is untouched.
    assert!(store.resolve(victim.token.expose(), PEER_A).is_ok());
    // The same peer may replace it, and an authenticated claim from another peer may too.
    store.create(unsigned(&did(1), PEER_A)).unwrap();
    store.create(legacy(&did(1), PEER_B)).unwrap();
    assert_eq!(store.get(&did(1)).unwrap().peer_id, PEER_B);
    // An unauthenticated session does not block anyone.
    store.create(unsigned(&did(2), PEER_A)).unwrap();
    store.create(unsigned(&did(2), PEER_B)).unwrap();
}

/// P-11: a channel-bound session is replaced only by another channel-bound one.
#[test]
fn channel_bound_session_is_not_downgraded() {
    let (store, _) = store();
    let b = store.create(bound(&did(1), PEER_A)).unwrap();
    assert_eq!(
        store.create(legacy(&did(1), PEER_A)).map(|i| i.session),
        Err(Error::AuthenticatedSessionExists)
    );
    assert!(store.resolve(b.token.expose(), PEER_A).is_ok());
    let b2 = store.create(bound(&did(1), PEER_A)).unwrap();
    assert!(store.resolve(b2.token.expose(), PEER_A).is_ok());
    assert!(store.resolve(b.token.expose(), PEER_A).is_err());
}

#[test]
fn guards_do_not_apply_to_expired_sessions() {
    let (store, clock) = store();
    store.create(bound(&did(1), PEER_A)).unwrap();
    clock.advance(TTL + Duration::from_secs(1));
    store.create(unsigned(&did(1), PEER_B)).unwrap();
    assert!(!store.get(&did(1)).unwrap().authenticated);
}

/// The store is bounded and fails closed: no live session is evicted to make room.
#[test]
fn full_store_fails_closed_but_purges_expired_and_allows_replacement() {
    let clock = std::sync::Arc::new(lango_session::ManualClock::at_unix(T0));
    let store = SessionStore::builder(&config())
        .clock(clock.clone())
        .max_sessions(3)
        .build()
        .unwrap();
    let first = store.create(legacy(&did(0), PEER_A)).unwrap();
    clock.advance(Duration::from_secs(10));
    store.create(legacy(&did(1), PEER_A)).unwrap();
    store.create(legacy(&did(2), PEER_A)).unwrap();
    assert_eq!(
        store.create(legacy(&did(3), PEER_A)).map(|i| i.session),
        Err(Error::StoreFull { max: 3 })
    );
    let tok = "0123456789abcdef".repeat(4);
    assert_eq!(
        store.insert_remote(
            legacy(&did(3), PEER_A),
            SessionToken::parse(&tok).unwrap(),
            clock.now() + TTL
        ),
        Err(Error::StoreFull { max: 3 })
    );
    // Every live session survived.
    assert!(store.resolve(first.token.expose(), PEER_A).is_ok());
    assert_eq!(store.len(), 3);
    // Replacing an existing DID's session is still possible.
    store.create(legacy(&did(1), PEER_A)).unwrap();
    // Once did(0) has expired, it makes room.
    clock.advance(TTL - Duration::from_secs(5));
    store.create(legacy(&did(3), PEER_A)).unwrap();
    assert!(store.get(&did(0)).is_none());
    assert_eq!(store.len(), 3);
    assert_eq!(DEFAULT_MAX_SESSIONS, 10_000);
}

#[test]
fn fields_are_bounded() {
    let (store, _) = store();
    let long_did = format!("did:lango:{}", "a".repeat(300));
    for new in [
        legacy("", PEER_A),
        legacy(&long_did, PEER_A),
        legacy(&did(1), ""),
        legacy("did:lango:x\n", PEER_A),
    ] {
        assert!(matches!(
            store.create(new).map(|i| i.session),
            Err(Error::InvalidArgument { .. })
        ));
    }
    assert!(store.is_empty());
    assert!(store.history().is_empty());
}

/// S-5 and the I-13 / P-9 rollback: `remove_if_token` removes only the session it created.
#[test]
fn remove_and_remove_if_token() {
    let (store, _) = store();
    let mine = store.create(legacy(&did(1), PEER_A)).unwrap();
    let newer = store.create(legacy(&did(1), PEER_A)).unwrap();
    assert!(!store.remove_if_token(&did(1), &mine.token));
    assert!(store.resolve(newer.token.expose(), PEER_A).is_ok());
    assert!(store.remove_if_token(&did(1), &newer.token));
    assert!(store.get(&did(1)).is_none());
    store.create(legacy(&did(2), PEER_A)).unwrap();
    assert!(store.remove(&did(2)));
    assert!(!store.remove(&did(2)));
    // remove writes no history and starts no cool-down.
    assert!(store.history().is_empty());
    assert!(store.may_handshake(&did(2), PEER_A).is_ok());
}

#[test]
fn mint_token_then_insert_for_the_12_initiator() {
    let (store, clock) = store();
    let t = store.mint_token(&did(1)).unwrap();
    assert_eq!(t.expose().len(), 64);
    assert!(store.get(&did(1)).is_none(), "minting stores nothing");
    let wire = t.expose().to_owned();
    let info = store
        .insert_remote(
            lango_session::NewSession {
                role: Role::Initiator,
                ..bound(&did(1), PEER_B)
            },
            t,
            clock.now() + Duration::from_secs(600),
        )
        .unwrap();
    assert_eq!(info.role, Role::Initiator);
    assert!(info.channel_bound);
    assert_eq!(store.resolve(&wire, PEER_B).unwrap(), info);
}

#[test]
fn clones_share_one_store() {
    let (store, _) = store();
    let other = store.clone();
    let issued = other.create(legacy(&did(1), PEER_A)).unwrap();
    assert!(store.resolve(issued.token.expose(), PEER_A).is_ok());
    store.invalidate(&did(1), InvalidationReason::Logout);
    assert!(other.get(&did(1)).is_none());
}

/// Issue 17: one peer ID (or one address) holds only its quota of incoming sessions, and
/// incoming sessions never take the room kept for this node's own outgoing handshakes.
#[test]
fn incoming_quotas_per_peer_and_address_and_the_outgoing_reserve_hold() {
    let store = SessionStore::builder(&config())
        .max_sessions(100)
        .max_sessions_per_peer(5)
        .max_sessions_per_addr(40)
        .outgoing_reserve(10)
        .build()
        .unwrap();
    let quota = |e: Result<_, Error>| matches!(e, Err(Error::QuotaExceeded { .. }));
    // Hundreds of fresh DIDs from one peer ID: five sessions.
    let ok = (0..500)
        .filter(|i| store.create(legacy(&did(*i), "peer-mallory")).is_ok())
        .count();
    assert_eq!(ok, 5);
    assert!(quota(store.may_admit_incoming(
        &did(999),
        "peer-mallory",
        None
    )));
    // Fresh peer IDs behind one address: forty.
    let ip = Some("10.0.0.66");
    let ok = (1000..1500)
        .filter(|i| {
            let peer = format!("peer-{i}");
            store
                .create(NewSession {
                    remote_ip: ip,
                    ..legacy(&did(*i), &peer)
                })
                .is_ok()
        })
        .count();
    assert_eq!(ok, 40);
    // Fresh peer IDs and addresses: incoming sessions stop at 90 of 100 …
    let ok = (2000..2200)
        .filter(|i| {
            let (peer, ip) = (format!("peer-{i}"), format!("10.1.{}.{}", i / 256, i % 256));
            store
                .create(NewSession {
                    remote_ip: Some(&ip),
                    ..legacy(&did(*i), &peer)
                })
                .is_ok()
        })
        .count();
    assert_eq!(ok, 90 - 45);
    // … and this node's own outgoing handshakes still find room.
    for i in 3000..3010 {
        store
            .create(NewSession {
                role: Role::Initiator,
                ..bound(&did(i), &format!("peer-out-{i}"))
            })
            .expect("an outgoing session fits in the reserve");
    }
}
