//! The DID revocation list (protocol spec §2.4.4 "Revocation", R-9.3, R-9.5).
//!
//! A DID is revoked when it is listed in the configuration (`p2p.revokedDids`) or was revoked
//! at runtime; runtime revocations are persisted in `revoked_dids` so they survive restarts.
//! The whole list is held in memory, so [`Revocations::is_revoked`] is a synchronous lookup
//! that discovery and the handshake can call on every card and every session.
//!
//! Only canonical DIDs (`did:lango:` followed by the 66 lowercase hex characters of a valid
//! compressed secp256k1 key) can be revoked: one key has exactly one DID, so a revoked key
//! cannot come back under another spelling. Lookups compare the exact string.
//!
//! A runtime revocation is written to the database first and only then added to the memory
//! set, and subscribers are told the DID so they can delete stored cards (§2.4.4).

use std::{
    collections::BTreeMap,
    sync::{Arc, PoisonError, RwLock},
};

use serde::Serialize;
use sqlx::{Row, SqlitePool};
use time::{OffsetDateTime, format_description::well_known::Rfc3339};
use tokio::sync::{Mutex, broadcast};

use crate::{Error, Result};

/// The configuration key holding revoked DIDs.
const CONFIG_KEY: &str = "p2p.revokedDids";
/// The reason shown for a DID revoked only by the configuration.
const CONFIG_REASON: &str = "listed in p2p.revokedDids";
/// How many revocations a slow subscriber may fall behind before it sees `Lagged`.
const CHANNEL_CAPACITY: usize = 256;

/// Where a revocation comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum RevocationSource {
    /// The configuration (`p2p.revokedDids`); removed only by editing the configuration.
    Config,
    /// A runtime revocation stored in the database.
    Runtime,
}

/// One revoked DID, as listed by [`Revocations::list`].
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Revocation {
    /// The revoked DID (canonical form).
    pub did: String,
    /// Why it was revoked. For a DID listed only in the configuration: "listed in
    /// p2p.revokedDids".
    pub reason: String,
    /// When it was revoked at runtime; `None` (JSON `null`) for a DID listed only in the
    /// configuration. Serialised as RFC 3339.
    #[serde(serialize_with = "serialize_rfc3339_option")]
    pub revoked_at: Option<OffsetDateTime>,
    /// [`RevocationSource::Config`] when the configuration lists the DID (even if it was also
    /// revoked at runtime, since only the configuration can lift it), otherwise
    /// [`RevocationSource::Runtime`].
    pub source: RevocationSource,
}

/// Serialises an optional time as RFC 3339 or `null` (the shape of
/// `time::serde::rfc3339::option`, whose crate feature this workspace does not enable).
fn serialize_rfc3339_option<S: serde::Serializer>(
    t: &Option<OffsetDateTime>,
    s: S,
) -> std::result::Result<S::Ok, S::Error> {
    match t {
        Some(t) => {
            let text = t.format(&Rfc3339).map_err(serde::ser::Error::custom)?;
            s.serialize_some(&text)
        }
        None => s.serialize_none(),
    }
}

/// A runtime revocation as stored in `revoked_dids`.
#[derive(Debug, Clone, PartialEq)]
struct Stored {
    reason: String,
    revoked_at: OffsetDateTime,
}

/// One DID of the in-memory list: revoked by configuration, at runtime, or both.
#[derive(Debug, Clone, Default)]
struct Entry {
    config: bool,
    runtime: Option<Stored>,
}

struct Inner {
    pool: SqlitePool,
    entries: RwLock<BTreeMap<String, Entry>>,
    /// Serialises `revoke` and `unrevoke` so the database and the memory set change together.
    write: Mutex<()>,
    revoked: broadcast::Sender<String>,
}

/// The revocation list. Cheap to clone: clones share the list and the subscription.
#[derive(Clone)]
pub struct Revocations {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Revocations {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Revocations")
            .field("revoked", &self.read().len())
            .finish_non_exhaustive()
    }
}

/// Checks that `did` is a canonical `did:lango:` DID (`Did::parse` accepts nothing else);
/// the error is the reason.
fn check_canonical(did: &str) -> std::result::Result<(), String> {
    lango_crypto::wallet::Did::parse(did)
        .map(drop)
        .map_err(|e| e.to_string())
}

fn parse_revoked_at(did: &str, text: &str) -> Result<OffsetDateTime> {
    OffsetDateTime::parse(text, &Rfc3339).map_err(|e| Error::Database {
        what: format!("read revocation of {did}"),
        message: format!("corrupt revoked_dids row: revoked_at {text:?} is not RFC 3339: {e}"),
    })
}

impl Revocations {
    /// Loads the list: the runtime revocations stored on `pool` (which must have run
    /// [`crate::migrate`]) plus `config_dids` (`p2p.revokedDids`). Duplicates are merged.
    ///
    /// # Errors
    /// [`Error::Config`] (key `p2p.revokedDids`) when a configured entry is not a canonical DID;
    /// [`Error::Database`] when the table cannot be read or a stored time does not parse.
    pub async fn load(pool: SqlitePool, config_dids: &[String]) -> Result<Self> {
        let mut entries: BTreeMap<String, Entry> = BTreeMap::new();
        for (i, did) in config_dids.iter().enumerate() {
            check_canonical(did).map_err(|reason| Error::Config {
                key: CONFIG_KEY.into(),
                message: format!("entry {i} ({did:?}) is not a canonical DID: {reason}"),
            })?;
            entries.entry(did.clone()).or_default().config = true;
        }
        let rows = sqlx::query("SELECT did, reason, revoked_at FROM revoked_dids ORDER BY did")
            .fetch_all(&pool)
            .await
            .map_err(|e| Error::db("load revoked DIDs", e))?;
        for row in rows {
            let did: String = row
                .try_get("did")
                .map_err(|e| Error::db("load revoked DIDs", e))?;
            let reason: String = row
                .try_get("reason")
                .map_err(|e| Error::db(format!("read revocation of {did}"), e))?;
            let revoked_at: String = row
                .try_get("revoked_at")
                .map_err(|e| Error::db(format!("read revocation of {did}"), e))?;
            let revoked_at = parse_revoked_at(&did, &revoked_at)?;
            if let Err(reason) = check_canonical(&did) {
                // Never written by `revoke`. Keeping it can only refuse more, never less.
                tracing::warn!(did = %did, %reason, "stored revocation of a non-canonical DID");
            }
            entries.entry(did).or_default().runtime = Some(Stored { reason, revoked_at });
        }
        let (revoked, _) = broadcast::channel(CHANNEL_CAPACITY);
        Ok(Self {
            inner: Arc::new(Inner {
                pool,
                entries: RwLock::new(entries),
                write: Mutex::new(()),
                revoked,
            }),
        })
    }

    // The map is only ever changed by single insert/remove calls, which leave it consistent
    // even if a panic poisoned the lock, so a poisoned lock is used as is.
    fn read(&self) -> std::sync::RwLockReadGuard<'_, BTreeMap<String, Entry>> {
        self.inner
            .entries
            .read()
            .unwrap_or_else(PoisonError::into_inner)
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, BTreeMap<String, Entry>> {
        self.inner
            .entries
            .write()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Whether `did` is revoked: an exact comparison with the canonical DIDs on the list.
    pub fn is_revoked(&self, did: &str) -> bool {
        self.read().contains_key(did)
    }

    /// Revokes `did` at runtime with `reason`. The revocation is stored in the database before
    /// the in-memory list changes; subscribers then receive the DID.
    ///
    /// Returns `false` when the DID was already revoked (by configuration or at runtime); no
    /// second row is written and the stored reason is kept. If another process stored the
    /// revocation first, it is adopted into this list (and subscribers are told) but `false`
    /// is still returned.
    ///
    /// # Errors
    /// [`Error::InvalidDid`] when `did` is not canonical; [`Error::Database`] when the write
    /// fails, in which case the in-memory list is unchanged.
    pub async fn revoke(&self, did: &str, reason: &str) -> Result<bool> {
        check_canonical(did).map_err(|r| Error::InvalidDid {
            did: did.to_owned(),
            reason: r,
        })?;
        let _guard = self.inner.write.lock().await;
        if self.is_revoked(did) {
            return Ok(false);
        }
        let now = OffsetDateTime::now_utc();
        let inserted = sqlx::query(
            "INSERT INTO revoked_dids (did, reason, revoked_at) VALUES (?1, ?2, ?3)
             ON CONFLICT (did) DO NOTHING",
        )
        .bind(did)
        .bind(reason)
        .bind(crate::format_time(now))
        .execute(&self.inner.pool)
        .await
        .map_err(|e| Error::db(format!("revoke {did}"), e))?
        .rows_affected()
            == 1;
        let stored = if inserted {
            Stored {
                reason: reason.to_owned(),
                revoked_at: now,
            }
        } else {
            // Stored by another process since this list was loaded: adopt its row.
            let row = sqlx::query("SELECT reason, revoked_at FROM revoked_dids WHERE did = ?1")
                .bind(did)
                .fetch_one(&self.inner.pool)
                .await
                .map_err(|e| Error::db(format!("read revocation of {did}"), e))?;
            let reason: String = row
                .try_get("reason")
                .map_err(|e| Error::db(format!("read revocation of {did}"), e))?;
            let revoked_at: String = row
                .try_get("revoked_at")
                .map_err(|e| Error::db(format!("read revocation of {did}"), e))?;
            Stored {
                reason,
                revoked_at: parse_revoked_at(did, &revoked_at)?,
            }
        };
        self.write().entry(did.to_owned()).or_default().runtime = Some(stored);
        if inserted {
            tracing::info!(did = %did, reason = %reason, "revoked DID");
        } else {
            tracing::info!(did = %did, "adopted a revocation stored by another process");
        }
        // No subscriber is not an error.
        let _ = self.inner.revoked.send(did.to_owned());
        Ok(inserted)
    }

    /// Lifts a runtime revocation: the row is deleted first, then the DID leaves the list.
    /// Returns `false` when `did` was not revoked.
    ///
    /// # Errors
    /// [`Error::InvalidDid`] when `did` is not canonical; [`Error::Config`] when the
    /// configuration lists the DID (it must be removed from `p2p.revokedDids`; the list is
    /// unchanged); [`Error::Database`] when the delete fails (the list is unchanged).
    pub async fn unrevoke(&self, did: &str) -> Result<bool> {
        check_canonical(did).map_err(|r| Error::InvalidDid {
            did: did.to_owned(),
            reason: r,
        })?;
        let _guard = self.inner.write.lock().await;
        let (listed, in_config) = match self.read().get(did) {
            Some(e) => (true, e.config),
            None => (false, false),
        };
        if in_config {
            return Err(Error::Config {
                key: CONFIG_KEY.into(),
                message: format!(
                    "{did} is revoked by the configuration; remove it from {CONFIG_KEY} to lift the revocation"
                ),
            });
        }
        let deleted = sqlx::query("DELETE FROM revoked_dids WHERE did = ?1")
            .bind(did)
            .execute(&self.inner.pool)
            .await
            .map_err(|e| Error::db(format!("unrevoke {did}"), e))?
            .rows_affected()
            > 0;
        self.write().remove(did);
        if listed || deleted {
            tracing::info!(did = %did, "lifted the revocation of a DID");
        }
        Ok(listed || deleted)
    }

    /// Every revoked DID, sorted by DID.
    pub fn list(&self) -> Vec<Revocation> {
        self.read()
            .iter()
            .map(|(did, e)| Revocation {
                did: did.clone(),
                reason: e
                    .runtime
                    .as_ref()
                    .map_or_else(|| CONFIG_REASON.to_owned(), |s| s.reason.clone()),
                revoked_at: e.runtime.as_ref().map(|s| s.revoked_at),
                source: if e.config {
                    RevocationSource::Config
                } else {
                    RevocationSource::Runtime
                },
            })
            .collect()
    }

    /// The DIDs revoked from now on, each once, as they join the list. A receiver that falls
    /// more than 256 behind gets `Lagged` and should re-check with [`Self::is_revoked`].
    pub fn subscribe(&self) -> broadcast::Receiver<String> {
        self.inner.revoked.subscribe()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use lango_crypto::wallet::WalletKey;
    use lango_store::Database;
    use tempfile::TempDir;
    use tokio::sync::broadcast::error::TryRecvError;

    use super::*;

    async fn open_db(dir: &TempDir, create: bool) -> Database {
        crate::test_support::open_db(dir.path(), "revocations.db", create).await
    }

    use crate::test_support::did;

    async fn rows(db: &Database) -> Vec<(String, String)> {
        sqlx::query_as("SELECT did, reason FROM revoked_dids ORDER BY did")
            .fetch_all(db.pool())
            .await
            .unwrap()
    }

    /// Non-canonical spellings of real keys and other malformed DIDs.
    fn bad_dids() -> Vec<String> {
        let k = WalletKey::generate().unwrap();
        let canonical = k.did().as_str().to_owned();
        let hex = &canonical["did:lango:".len()..];
        vec![
            String::new(),
            "did:lango:".into(),
            format!("did:lango:{}", hex.to_uppercase()),
            format!("DID:LANGO:{hex}"),
            format!(
                "did:lango:{}",
                hex::encode(k.public_key().to_uncompressed())
            ),
            format!(" {canonical}"),
            format!("{canonical}\n"),
            format!("did:key:{hex}"),
            format!("did:lango:02{}", "00".repeat(32)),
            "did:lango:v2:abc".into(),
        ]
    }

    #[tokio::test]
    async fn revoke_persists_and_survives_reload() {
        let dir = TempDir::new().unwrap();
        let db = open_db(&dir, true).await;
        let revs = Revocations::load(db.pool().clone(), &[]).await.unwrap();
        let (a, b) = (did(), did());
        assert!(!revs.is_revoked(&a));
        assert!(revs.revoke(&a, "spammed tool calls").await.unwrap());
        assert!(revs.is_revoked(&a));
        assert!(!revs.is_revoked(&b));
        assert_eq!(
            rows(&db).await,
            [(a.clone(), "spammed tool calls".to_owned())]
        );
        let listed = revs.list();
        assert_eq!(listed.len(), 1);
        assert_eq!(listed[0].did, a);
        assert_eq!(listed[0].reason, "spammed tool calls");
        assert_eq!(listed[0].source, RevocationSource::Runtime);
        let at = listed[0].revoked_at.unwrap();
        let age = OffsetDateTime::now_utc() - at;
        assert!(age >= time::Duration::ZERO && age < time::Duration::minutes(1));

        // Re-load from the same pool.
        let again = Revocations::load(db.pool().clone(), &[]).await.unwrap();
        assert!(again.is_revoked(&a));
        assert_eq!(again.list(), listed);

        // Close the file and open it again.
        db.close().await;
        let db = open_db(&dir, false).await;
        let reopened = Revocations::load(db.pool().clone(), &[]).await.unwrap();
        assert!(reopened.is_revoked(&a));
        assert!(!reopened.is_revoked(&b));
        assert_eq!(reopened.list(), listed);
        db.close().await;
    }

    #[tokio::test]
    async fn config_entries_are_listed_with_source_config() {
        let dir = TempDir::new().unwrap();
        let db = open_db(&dir, true).await;
        let (c1, c2, r) = (did(), did(), did());
        let config = vec![c1.clone(), c2.clone(), c1.clone()];
        let revs = Revocations::load(db.pool().clone(), &config).await.unwrap();
        assert!(revs.is_revoked(&c1) && revs.is_revoked(&c2));
        assert!(revs.revoke(&r, "manual").await.unwrap());
        let listed = revs.list();
        let mut dids = vec![c1.clone(), c2.clone(), r.clone()];
        dids.sort();
        assert_eq!(
            listed.iter().map(|x| x.did.clone()).collect::<Vec<_>>(),
            dids,
            "sorted by DID, duplicates merged"
        );
        for x in &listed {
            if x.did == r {
                assert_eq!(x.source, RevocationSource::Runtime);
                assert!(x.revoked_at.is_some());
            } else {
                assert_eq!(x.source, RevocationSource::Config);
                assert_eq!(x.revoked_at, None);
                assert_eq!(x.reason, CONFIG_REASON);
            }
        }
        // Config entries are not written to the database.
        assert_eq!(rows(&db).await, [(r.clone(), "manual".to_owned())]);
        db.close().await;
    }

    #[tokio::test]
    async fn config_entry_also_stored_at_runtime_stays_config() {
        let dir = TempDir::new().unwrap();
        let db = open_db(&dir, true).await;
        let d = did();
        let first = Revocations::load(db.pool().clone(), &[]).await.unwrap();
        assert!(first.revoke(&d, "abuse").await.unwrap());
        let both = Revocations::load(db.pool().clone(), std::slice::from_ref(&d))
            .await
            .unwrap();
        let listed = both.list();
        assert_eq!(listed.len(), 1);
        assert_eq!(listed[0].source, RevocationSource::Config);
        assert_eq!(listed[0].reason, "abuse");
        assert!(listed[0].revoked_at.is_some());
        assert!(matches!(both.unrevoke(&d).await, Err(Error::Config { .. })));
        assert!(both.is_revoked(&d));
        assert_eq!(rows(&db).await.len(), 1);
        db.close().await;
    }

    #[tokio::test]
    async fn invalid_config_dids_are_rejected() {
        let dir = TempDir::new().unwrap();
        let db = open_db(&dir, true).await;
        for bad in bad_dids() {
            let config = vec![did(), bad.clone()];
            match Revocations::load(db.pool().clone(), &config).await {
                Err(Error::Config { key, message }) => {
                    assert_eq!(key, "p2p.revokedDids");
                    assert!(message.contains("entry 1"), "{message}");
                }
                Err(other) => panic!("{bad:?}: unexpected {other:?}"),
                Ok(_) => panic!("{bad:?} was accepted"),
            }
        }
        db.close().await;
    }

    #[tokio::test]
    async fn invalid_dids_are_not_revoked() {
        let dir = TempDir::new().unwrap();
        let db = open_db(&dir, true).await;
        let revs = Revocations::load(db.pool().clone(), &[]).await.unwrap();
        let mut sub = revs.subscribe();
        for bad in bad_dids() {
            match revs.revoke(&bad, "x").await {
                Err(Error::InvalidDid { did, .. }) => assert_eq!(did, bad),
                other => panic!("{bad:?}: unexpected {other:?}"),
            }
            assert!(!revs.is_revoked(&bad));
            assert!(matches!(
                revs.unrevoke(&bad).await,
                Err(Error::InvalidDid { .. })
            ));
        }
        assert!(rows(&db).await.is_empty());
        assert!(revs.list().is_empty());
        assert!(matches!(sub.try_recv(), Err(TryRecvError::Empty)));
        db.close().await;
    }

    #[tokio::test]
    async fn lookups_compare_the_exact_canonical_string() {
        let dir = TempDir::new().unwrap();
        let db = open_db(&dir, true).await;
        let revs = Revocations::load(db.pool().clone(), &[]).await.unwrap();
        let d = did();
        revs.revoke(&d, "").await.unwrap();
        assert!(revs.is_revoked(&d));
        assert!(!revs.is_revoked(&d.to_uppercase()));
        assert!(!revs.is_revoked(&format!("{d} ")));
        assert!(!revs.is_revoked(""));
        // An empty reason is stored as such.
        assert_eq!(revs.list()[0].reason, "");
        db.close().await;
    }

    #[tokio::test]
    async fn duplicate_revoke_returns_false_without_a_second_row() {
        let dir = TempDir::new().unwrap();
        let db = open_db(&dir, true).await;
        let c = did();
        let revs = Revocations::load(db.pool().clone(), std::slice::from_ref(&c))
            .await
            .unwrap();
        let mut sub = revs.subscribe();
        let d = did();
        assert!(revs.revoke(&d, "first").await.unwrap());
        assert!(!revs.revoke(&d, "second").await.unwrap());
        assert_eq!(rows(&db).await, [(d.clone(), "first".to_owned())]);
        assert_eq!(
            revs.list().iter().find(|x| x.did == d).unwrap().reason,
            "first"
        );
        // A configured DID is already revoked: nothing is stored.
        assert!(!revs.revoke(&c, "again").await.unwrap());
        assert_eq!(rows(&db).await.len(), 1);
        // Exactly one notification.
        assert_eq!(sub.try_recv().unwrap(), d);
        assert!(matches!(sub.try_recv(), Err(TryRecvError::Empty)));
        db.close().await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn concurrent_revokes_of_one_did_succeed_once() {
        let dir = TempDir::new().unwrap();
        let db = open_db(&dir, true).await;
        let revs = Revocations::load(db.pool().clone(), &[]).await.unwrap();
        let mut sub = revs.subscribe();
        let d = did();
        let tasks: Vec<_> = (0..20)
            .map(|i| {
                let revs = revs.clone();
                let d = d.clone();
                tokio::spawn(async move { revs.revoke(&d, &format!("task {i}")).await })
            })
            .collect();
        let mut new = 0;
        for t in tasks {
            if t.await.unwrap().unwrap() {
                new += 1;
            }
        }
        assert_eq!(new, 1);
        assert_eq!(rows(&db).await.len(), 1);
        assert_eq!(sub.try_recv().unwrap(), d);
        assert!(matches!(sub.try_recv(), Err(TryRecvError::Empty)));
        db.close().await;
    }

    #[tokio::test]
    async fn subscriber_receives_revoked_dids() {
        let dir = TempDir::new().unwrap();
        let db = open_db(&dir, true).await;
        let revs = Revocations::load(db.pool().clone(), &[]).await.unwrap();
        let mut sub = revs.subscribe();
        let mut clone_sub = revs.clone().subscribe();
        let (a, b) = (did(), did());
        revs.revoke(&a, "a").await.unwrap();
        revs.clone().revoke(&b, "b").await.unwrap();
        assert_eq!(sub.recv().await.unwrap(), a);
        assert_eq!(sub.recv().await.unwrap(), b);
        assert_eq!(clone_sub.recv().await.unwrap(), a);
        assert_eq!(clone_sub.recv().await.unwrap(), b);
        // Unrevoking is not announced on this channel.
        revs.unrevoke(&a).await.unwrap();
        assert!(matches!(sub.try_recv(), Err(TryRecvError::Empty)));
        db.close().await;
    }

    #[tokio::test]
    async fn revocation_stored_by_another_process_is_adopted() {
        let dir = TempDir::new().unwrap();
        let db = open_db(&dir, true).await;
        let revs = Revocations::load(db.pool().clone(), &[]).await.unwrap();
        let other = Revocations::load(db.pool().clone(), &[]).await.unwrap();
        let mut sub = revs.subscribe();
        let d = did();
        assert!(other.revoke(&d, "elsewhere").await.unwrap());
        assert!(!revs.is_revoked(&d));
        assert!(!revs.revoke(&d, "here").await.unwrap());
        assert!(revs.is_revoked(&d));
        assert_eq!(revs.list(), other.list());
        assert_eq!(revs.list()[0].reason, "elsewhere");
        assert_eq!(sub.try_recv().unwrap(), d);
        assert_eq!(rows(&db).await.len(), 1);
        db.close().await;
    }

    #[tokio::test]
    async fn unrevoke_lifts_runtime_entries_only() {
        let dir = TempDir::new().unwrap();
        let db = open_db(&dir, true).await;
        let c = did();
        let revs = Revocations::load(db.pool().clone(), std::slice::from_ref(&c))
            .await
            .unwrap();
        match revs.unrevoke(&c).await {
            Err(Error::Config { key, message }) => {
                assert_eq!(key, "p2p.revokedDids");
                assert!(message.contains(&c), "{message}");
                assert!(
                    message.contains("remove it from p2p.revokedDids"),
                    "{message}"
                );
            }
            other => panic!("unexpected {other:?}"),
        }
        assert!(revs.is_revoked(&c));

        let d = did();
        revs.revoke(&d, "temporary").await.unwrap();
        assert!(revs.unrevoke(&d).await.unwrap());
        assert!(!revs.is_revoked(&d));
        assert!(rows(&db).await.is_empty());
        assert!(!revs.unrevoke(&d).await.unwrap());
        assert!(!revs.unrevoke(&did()).await.unwrap());
        let reloaded = Revocations::load(db.pool().clone(), &[]).await.unwrap();
        assert!(!reloaded.is_revoked(&d));
        // It can be revoked again afterwards.
        assert!(revs.revoke(&d, "again").await.unwrap());
        db.close().await;
    }

    #[tokio::test]
    async fn database_failure_leaves_memory_unchanged() {
        let dir = TempDir::new().unwrap();
        let db = open_db(&dir, true).await;
        let revs = Revocations::load(db.pool().clone(), &[]).await.unwrap();
        let mut sub = revs.subscribe();
        let kept = did();
        revs.revoke(&kept, "kept").await.unwrap();
        assert_eq!(sub.try_recv().unwrap(), kept);
        sqlx::query("DROP TABLE revoked_dids")
            .execute(db.pool())
            .await
            .unwrap();
        let d = did();
        match revs.revoke(&d, "x").await {
            Err(Error::Database { what, .. }) => assert!(what.contains(&d), "{what}"),
            other => panic!("unexpected {other:?}"),
        }
        assert!(!revs.is_revoked(&d));
        assert!(matches!(sub.try_recv(), Err(TryRecvError::Empty)));
        assert!(matches!(
            revs.unrevoke(&kept).await,
            Err(Error::Database { .. })
        ));
        assert!(
            revs.is_revoked(&kept),
            "a failed unrevoke must keep the DID revoked"
        );
        assert!(matches!(
            Revocations::load(db.pool().clone(), &[]).await,
            Err(Error::Database { .. })
        ));
        db.close().await;
    }

    #[tokio::test]
    async fn corrupt_stored_time_fails_load() {
        let dir = TempDir::new().unwrap();
        let db = open_db(&dir, true).await;
        let d = did();
        sqlx::query("INSERT INTO revoked_dids (did, reason, revoked_at) VALUES (?1, '', 'soon')")
            .bind(&d)
            .execute(db.pool())
            .await
            .unwrap();
        match Revocations::load(db.pool().clone(), &[]).await {
            Err(Error::Database { what, message }) => {
                assert!(what.contains(&d), "{what}");
                assert!(message.contains("soon"), "{message}");
            }
            Err(other) => panic!("unexpected {other:?}"),
            Ok(_) => panic!("a corrupt row was accepted"),
        }
        db.close().await;
    }

    #[tokio::test]
    async fn serialises_as_camel_case_json() {
        let dir = TempDir::new().unwrap();
        let db = open_db(&dir, true).await;
        let c = did();
        let revs = Revocations::load(db.pool().clone(), std::slice::from_ref(&c))
            .await
            .unwrap();
        let d = did();
        revs.revoke(&d, "why").await.unwrap();
        for r in revs.list() {
            let v = serde_json::to_value(&r).unwrap();
            let obj = v.as_object().unwrap();
            let mut keys: Vec<_> = obj.keys().map(String::as_str).collect();
            keys.sort_unstable();
            assert_eq!(keys, ["did", "reason", "revokedAt", "source"]);
            if r.did == c {
                assert_eq!(v["source"], "config");
                assert!(v["revokedAt"].is_null());
            } else {
                assert_eq!(v["source"], "runtime");
                assert_eq!(v["reason"], "why");
                let text = v["revokedAt"].as_str().unwrap();
                assert_eq!(
                    OffsetDateTime::parse(text, &Rfc3339).unwrap(),
                    r.revoked_at.unwrap()
                );
            }
        }
        db.close().await;
    }
}
