//! Downgrade pins kept in the node database (handshake spec P-12).
//!
//! A peer seen on `/lango/handshake/1.2.0-bound` is pinned: its DID and its node peer ID. From
//! then on a legacy handshake claiming that DID, or arriving from (or dialled to) that peer
//! ID, is refused, so a relaying attacker cannot force the weaker protocol. Pins live in
//! memory ([`MemoryPins`]) and are written through to the `handshake_pins` table by one
//! background writer, so they survive restarts.
//!
//! DIDs cost nothing to make, so the bound must not let newcomers flush established pins
//! (issue 17, P-12 as amended): a pin whose DID has a live session, a firewall rule, a
//! reputation record, or that this node dialled, is never evicted by a new pin; each remote
//! peer ID and IP address may create only a few new pins per hour; and when nothing may be
//! evicted the new pin is simply not recorded. Upkeep is O(log n) per handshake: the
//! database sees one upsert per pin and one delete per eviction, never a table scan.

use std::collections::HashSet;
use std::sync::{Arc, Mutex, PoisonError};

use lango_handshake::hooks::{DowngradePins, MemoryPins, PinGuard, PinPolicy, PinSource};
use sqlx::{Row, SqlitePool};
use tokio::sync::mpsc;

use crate::{Error, Result};

/// Writes queued for the database, in order.
const WRITE_QUEUE: usize = 8192;

enum Write {
    Upsert { did: String, peer_id: String },
    Delete(String),
}

/// Persistent downgrade pins. Cheap to clone.
#[derive(Clone)]
pub struct Pins {
    memory: Arc<MemoryPins>,
    pool: SqlitePool,
    writes: mpsc::Sender<Write>,
    /// DIDs established by a reputation record or a stored firewall rule.
    protected: Arc<Mutex<HashSet<String>>>,
    guards: Arc<Mutex<Vec<PinGuard>>>,
}

impl std::fmt::Debug for Pins {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pins")
            .field("memory", &self.memory)
            .finish_non_exhaustive()
    }
}

impl Pins {
    /// Loads the pins with the default bounds. Must run inside a tokio runtime (it starts
    /// the writer task).
    pub async fn load(pool: SqlitePool) -> Result<Self> {
        Self::load_with(pool, PinPolicy::default()).await
    }

    /// Loads the pins, most recently seen first, up to `policy.capacity`, and the DIDs that
    /// hold a reputation record or a stored firewall rule (their pins are established).
    pub async fn load_with(pool: SqlitePool, policy: PinPolicy) -> Result<Self> {
        let memory = Arc::new(MemoryPins::with_policy(policy));
        let capacity = memory.policy().capacity as i64;
        let rows =
            sqlx::query("SELECT did, peer_id FROM handshake_pins ORDER BY last_seen DESC LIMIT ?1")
                .bind(capacity)
                .fetch_all(&pool)
                .await
                .map_err(|e| Error::db("load handshake pins", e))?;
        // Oldest first, so the in-memory recency order matches the table's.
        for row in rows.iter().rev() {
            memory.record_change(
                row.get::<&str, _>(0),
                row.get::<&str, _>(1),
                PinSource::Restored,
            );
        }
        let established = sqlx::query(
            "SELECT peer_did FROM peer_reputations \
             UNION SELECT peer_did FROM firewall_rules WHERE peer_did <> '*' LIMIT ?1",
        )
        .bind(capacity)
        .fetch_all(&pool)
        .await
        .map_err(|e| Error::db("load established DIDs", e))?;
        let protected: Arc<Mutex<HashSet<String>>> = Arc::new(Mutex::new(
            established.iter().map(|r| r.get::<String, _>(0)).collect(),
        ));
        let guards: Arc<Mutex<Vec<PinGuard>>> = Arc::default();
        let (p, g) = (protected.clone(), guards.clone());
        memory.set_guard(Arc::new(move |did: &str| {
            p.lock()
                .unwrap_or_else(PoisonError::into_inner)
                .contains(did)
                || g.lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .iter()
                    .any(|guard| guard(did))
        }));
        let (writes, rx) = mpsc::channel(WRITE_QUEUE);
        tokio::spawn(writer(pool.clone(), rx));
        Ok(Self {
            memory,
            pool,
            writes,
            protected,
            guards,
        })
    }

    /// The number of pinned DIDs.
    pub fn len(&self) -> usize {
        self.memory.len()
    }

    /// Whether nothing is pinned.
    pub fn is_empty(&self) -> bool {
        self.memory.is_empty()
    }

    /// How many incoming pins were not recorded (quota spent, or the table full of
    /// established pins).
    pub fn not_recorded(&self) -> u64 {
        self.memory.not_recorded()
    }

    /// Marks `did` established (a reputation record, a firewall rule, an operator action):
    /// its pin is never evicted by a newcomer. Bounded by the pin capacity.
    pub fn protect(&self, did: &str) {
        let mut p = self
            .protected
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if p.len() < self.memory.policy().capacity {
            p.insert(did.to_owned());
        }
    }

    /// Adds a test of establishment (for example "has a live session", "has a firewall
    /// rule"). It runs under the pins' lock: it must be quick and must not touch the pins.
    pub fn add_guard(&self, guard: PinGuard) {
        self.guards
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(guard);
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

    fn record_source(&self, did: &str, peer_id: &str, source: PinSource<'_>) -> bool {
        let change = self.memory.record_change(did, peer_id, source);
        if let Some(evicted) = change.evicted {
            self.queue(Write::Delete(evicted));
        }
        if change.recorded {
            self.queue(Write::Upsert {
                did: did.to_owned(),
                peer_id: peer_id.to_owned(),
            });
        }
        change.recorded
    }

    fn queue(&self, w: Write) {
        if self.writes.try_send(w).is_err() {
            tracing::warn!(
                event = "pin_write_dropped",
                "downgrade pin write queue full; the pin holds until restart"
            );
        }
    }
}

/// The one writer of `handshake_pins`: applies writes in order, one statement each.
async fn writer(pool: SqlitePool, mut rx: mpsc::Receiver<Write>) {
    while let Some(w) = rx.recv().await {
        let r = match &w {
            Write::Upsert { did, peer_id } => sqlx::query(
                "INSERT INTO handshake_pins (did, peer_id, last_seen) VALUES (?1, ?2, ?3) \
                 ON CONFLICT(did) DO UPDATE SET peer_id = excluded.peer_id, \
                 last_seen = excluded.last_seen",
            )
            .bind(did)
            .bind(peer_id)
            .bind(crate::db_now())
            .execute(&pool)
            .await
            .map(|_| ()),
            Write::Delete(did) => sqlx::query("DELETE FROM handshake_pins WHERE did = ?1")
                .bind(did)
                .execute(&pool)
                .await
                .map(|_| ()),
        };
        if let Err(e) = r {
            tracing::warn!(error = %e, "downgrade pin not persisted; it holds until restart");
        }
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
        self.record_source(did, peer_id, PinSource::Outgoing);
    }

    fn record_incoming(&self, did: &str, peer_id: &str, remote_addr: &str) -> bool {
        self.record_source(did, peer_id, PinSource::Incoming { remote_addr })
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
        // Each load started a background writer holding the pool; close every connection
        // before the runtime and the process go away (SQLCipher threads still closing at
        // exit crashed the test process once, after the test had passed).
        database.pool().close().await;
    }
}
