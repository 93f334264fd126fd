//! Downgrade pins kept in the node database (handshake spec P-12).
//!
//! A peer seen on `/lango/handshake/1.2.0-bound` is pinned: its DID and its node peer ID. From
//! then on a legacy handshake claiming that DID, or arriving from (or dialled to) that peer
//! ID, is refused, so a relaying attacker cannot force the weaker protocol. Pins live in
//! memory ([`MemoryPins`], bounded, least-recently-seen evicted) and are written through to
//! the `handshake_pins` table, so they survive restarts.

use std::sync::Arc;

use lango_handshake::hooks::{DEFAULT_PIN_CAPACITY, DowngradePins, MemoryPins};
use sqlx::{Row, SqlitePool};

use crate::{Error, Result};

/// Persistent downgrade pins. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Pins {
    memory: Arc<MemoryPins>,
    pool: SqlitePool,
}

impl Pins {
    /// Loads the pins, most recently seen first, up to the bound.
    pub async fn load(pool: SqlitePool) -> Result<Self> {
        let rows =
            sqlx::query("SELECT did, peer_id FROM handshake_pins ORDER BY last_seen DESC LIMIT ?1")
                .bind(DEFAULT_PIN_CAPACITY as i64)
                .fetch_all(&pool)
                .await
                .map_err(|e| Error::db("load handshake pins", e))?;
        let memory = Arc::new(MemoryPins::new(DEFAULT_PIN_CAPACITY));
        // Oldest first, so the in-memory recency order matches the table's.
        for row in rows.iter().rev() {
            memory.record(row.get::<&str, _>(0), row.get::<&str, _>(1));
        }
        Ok(Self { memory, pool })
    }

    /// The number of pinned DIDs.
    pub fn len(&self) -> usize {
        self.memory.len()
    }

    /// Whether nothing is pinned.
    pub fn is_empty(&self) -> bool {
        self.memory.is_empty()
    }

    /// Removes the pin of `did` and of the peer ID recorded with it (operator action, e.g.
    /// `p2p session revoke --unpin` for a peer that legitimately went back to a Go build).
    pub async fn unpin(&self, did: &str) -> Result<bool> {
        let in_memory = self.memory.unpin(did);
        let r = sqlx::query("DELETE FROM handshake_pins WHERE did = ?1")
            .bind(did)
            .execute(&self.pool)
            .await
            .map_err(|e| Error::db("delete handshake pin", e))?;
        Ok(in_memory || r.rows_affected() > 0)
    }

    async fn persist(pool: SqlitePool, did: String, peer_id: String) -> Result<()> {
        let mut tx = pool
            .begin()
            .await
            .map_err(|e| Error::db("record handshake pin", e))?;
        sqlx::query(
            "INSERT INTO handshake_pins (did, peer_id, last_seen) VALUES (?1, ?2, ?3) \
             ON CONFLICT(did) DO UPDATE SET peer_id = excluded.peer_id, \
             last_seen = excluded.last_seen",
        )
        .bind(&did)
        .bind(&peer_id)
        .bind(crate::db_now())
        .execute(&mut *tx)
        .await
        .map_err(|e| Error::db("record handshake pin", e))?;
        sqlx::query(
            "DELETE FROM handshake_pins WHERE did NOT IN \
             (SELECT did FROM handshake_pins ORDER BY last_seen DESC LIMIT ?1)",
        )
        .bind(DEFAULT_PIN_CAPACITY as i64)
        .execute(&mut *tx)
        .await
        .map_err(|e| Error::db("trim handshake pins", e))?;
        tx.commit()
            .await
            .map_err(|e| Error::db("record handshake pin", e))
    }
}

impl DowngradePins for Pins {
    fn is_did_pinned(&self, did: &str) -> bool {
        self.memory.is_did_pinned(did)
    }

    fn is_peer_pinned(&self, peer_id: &str) -> bool {
        self.memory.is_peer_pinned(peer_id)
    }

    /// Pins in memory at once (the MUST: as long as the process), then writes through to the
    /// database in the background; a failed write is logged and the pin still holds.
    fn record(&self, did: &str, peer_id: &str) {
        self.memory.record(did, peer_id);
        let (pool, did, peer_id) = (self.pool.clone(), did.to_owned(), peer_id.to_owned());
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.spawn(async move {
                if let Err(e) = Self::persist(pool, did, peer_id).await {
                    tracing::warn!(error = %e, "downgrade pin not persisted; it holds until restart");
                }
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::open_db;

    #[tokio::test]
    async fn pins_survive_a_restart_and_can_be_removed() {
        let dir = tempfile::tempdir().unwrap();
        let database = open_db(dir.path(), "pins.db", true).await;
        let pins = Pins::load(database.pool().clone()).await.unwrap();
        assert!(pins.is_empty());
        pins.record("did:lango:aa", "12D3KooWPeer");
        assert!(pins.is_did_pinned("did:lango:aa") && pins.is_peer_pinned("12D3KooWPeer"));
        // The write-through runs in the background; wait for it.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        loop {
            let reloaded = Pins::load(database.pool().clone()).await.unwrap();
            if reloaded.is_did_pinned("did:lango:aa") {
                assert!(reloaded.is_peer_pinned("12D3KooWPeer"));
                assert!(reloaded.unpin("did:lango:aa").await.unwrap());
                break;
            }
            assert!(std::time::Instant::now() < deadline, "pin never persisted");
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        let after = Pins::load(database.pool().clone()).await.unwrap();
        assert!(!after.is_did_pinned("did:lango:aa") && !after.is_peer_pinned("12D3KooWPeer"));
        assert!(!after.unpin("did:lango:aa").await.unwrap());
    }
}
