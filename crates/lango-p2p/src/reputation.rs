//! Peer reputation (protocol spec §3.7, R-7.1..R-7.8).
//!
//! One row per peer DID in `peer_reputations` holds lifetime counts of successful exchanges,
//! failures and timeouts, and the trust score derived from them:
//!
//! ```text
//! score = s / (s + 2.0·f + 1.5·t + 1.0)
//! ```
//!
//! Recording an outcome is one atomic upsert (R-7.3 hardening): the counters are incremented and
//! the score recomputed from the incremented counters inside a single SQL statement, so
//! concurrent writers never lose updates. After the statement has completed, and outside any
//! transaction, the new score is published to the change subscribers and, when it crosses
//! below the threshold, to the drop subscribers (R-7.8).
//!
//! Queries never turn an error into trust: [`Reputation::standing`] returns database errors and
//! unreadable rows as errors, and callers must fail closed. A peer without a record is
//! [`Standing::New`], a state distinct from a score of 0 (R-4.8 hardening).
//!
//! Decay (R-7.6) is not implemented: counts are lifetime totals.

use std::sync::Arc;

use sqlx::{Row, SqlitePool, sqlite::SqliteRow};
use time::{OffsetDateTime, format_description::well_known::Rfc3339};
use tokio::sync::broadcast;

use crate::{Error, Result};

/// Weight of one failed exchange in the score's denominator (R-7.2).
pub const FAILURE_WEIGHT: f64 = 2.0;
/// Weight of one timeout in the score's denominator (R-7.2).
pub const TIMEOUT_WEIGHT: f64 = 1.5;
/// Constant added to the score's denominator, so one success alone scores 0.5 (R-7.2).
pub const BASE_PENALTY: f64 = 1.0;

/// Threshold used when the configured `p2p.minTrustScore` is ≤ 0 or not a number (R-7.7).
pub const DEFAULT_MIN_TRUST_SCORE: f64 = 0.3;

/// How many notifications a slow subscriber may fall behind before it sees `Lagged`.
const CHANNEL_CAPACITY: usize = 1024;

/// The trust score of the given counts: `s / (s + 2.0·f + 1.5·t + 1.0)` (R-7.2).
///
/// The result lies in `[0, 1)` (it can round to 1.0 only beyond 2^53 successes). Negative
/// counts cannot be stored and are treated as 0. The database computes the stored score with
/// exactly the same floating-point operations, so the two agree bit for bit.
pub fn score(successes: i64, failures: i64, timeouts: i64) -> f64 {
    let s = successes.max(0) as f64;
    let f = failures.max(0) as f64;
    let t = timeouts.max(0) as f64;
    s / (s + FAILURE_WEIGHT * f + TIMEOUT_WEIGHT * t + BASE_PENALTY)
}

/// The outcome of one exchange with a peer (R-7.5).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The exchange completed successfully.
    Success,
    /// The exchange failed.
    Failure,
    /// The exchange timed out.
    Timeout,
}

impl Outcome {
    /// The increments of (successes, failures, timeouts) this outcome adds.
    fn increments(self) -> (i64, i64, i64) {
        match self {
            Self::Success => (1, 0, 0),
            Self::Failure => (0, 1, 0),
            Self::Timeout => (0, 0, 1),
        }
    }
}

/// A peer's stored reputation (R-7.1).
#[derive(Debug, Clone, PartialEq)]
pub struct Record {
    /// The peer's DID.
    pub peer_did: String,
    /// Successful exchanges.
    pub successes: i64,
    /// Failed exchanges.
    pub failures: i64,
    /// Timed-out exchanges.
    pub timeouts: i64,
    /// The stored trust score, in `[0, 1]`.
    pub trust_score: f64,
    /// When the record was created; never changes.
    pub first_seen: OffsetDateTime,
    /// When an outcome was last recorded.
    pub last_interaction: OffsetDateTime,
}

/// How a peer stands against the trust threshold.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Standing {
    /// No record exists: a peer never seen before. This is not the same as a score of 0.
    New,
    /// A record exists and its score is at or above the threshold.
    Trusted(f64),
    /// A record exists and its score is below the threshold (even when it is exactly 0).
    Untrusted(f64),
}

/// A recorded change of a peer's score, sent to [`Reputation::subscribe_changes`] subscribers.
#[derive(Debug, Clone, PartialEq)]
pub struct ScoreChange {
    /// The peer's DID.
    pub peer_did: String,
    /// The score after the change.
    pub score: f64,
    /// The score before the change; `None` when this change created the record.
    pub previous: Option<f64>,
}

/// A peer's score fell below the threshold, sent to [`Reputation::subscribe_drops`]
/// subscribers once per crossing (R-7.8).
#[derive(Debug, Clone, PartialEq)]
pub struct ReputationDrop {
    /// The peer's DID.
    pub peer_did: String,
    /// The score after the change, strictly below `threshold`.
    pub score: f64,
    /// The threshold in force.
    pub threshold: f64,
}

struct Inner {
    pool: SqlitePool,
    threshold: f64,
    changes: broadcast::Sender<ScoreChange>,
    drops: broadcast::Sender<ReputationDrop>,
}

/// The reputation store. Cheap to clone: clones share the pool and the subscriptions.
#[derive(Clone)]
pub struct Reputation {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Reputation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reputation")
            .field("threshold", &self.inner.threshold)
            .field("change_subscribers", &self.inner.changes.receiver_count())
            .field("drop_subscribers", &self.inner.drops.receiver_count())
            .finish_non_exhaustive()
    }
}

/// One atomic upsert: create the row from zero or increment it, recompute the score from the
/// incremented counters (SQLite evaluates every `SET` expression against the row as it was
/// before the update), and return the result. `?6`, `?7`, `?8` are the R-7.2 weights.
const RECORD_SQL: &str = "\
INSERT INTO peer_reputations (peer_did, successful_exchanges, failed_exchanges, timeout_count,
                              trust_score, first_seen, last_interaction, created_at, updated_at)
VALUES (?1, ?2, ?3, ?4,
        CAST(?2 AS REAL) / (?2 + ?6 * ?3 + ?7 * ?4 + ?8),
        ?5, ?5, ?5, ?5)
ON CONFLICT (peer_did) DO UPDATE SET
    successful_exchanges = successful_exchanges + excluded.successful_exchanges,
    failed_exchanges = failed_exchanges + excluded.failed_exchanges,
    timeout_count = timeout_count + excluded.timeout_count,
    trust_score = CAST(successful_exchanges + excluded.successful_exchanges AS REAL)
        / ((successful_exchanges + excluded.successful_exchanges)
           + ?6 * (failed_exchanges + excluded.failed_exchanges)
           + ?7 * (timeout_count + excluded.timeout_count)
           + ?8),
    last_interaction = excluded.last_interaction,
    updated_at = excluded.updated_at
RETURNING successful_exchanges, failed_exchanges, timeout_count, trust_score";

const DETAILS_SQL: &str = "\
SELECT peer_did, successful_exchanges, failed_exchanges, timeout_count, trust_score,
       first_seen, last_interaction
FROM peer_reputations WHERE peer_did = ?1";

const LIST_SQL: &str = "\
SELECT peer_did, successful_exchanges, failed_exchanges, timeout_count, trust_score,
       first_seen, last_interaction
FROM peer_reputations ORDER BY trust_score DESC, peer_did ASC LIMIT ?1";

const SCORE_SQL: &str = "SELECT trust_score FROM peer_reputations WHERE peer_did = ?1";

impl Reputation {
    /// A store on `pool` (which must have run [`crate::migrate`]) with trust threshold
    /// `min_trust_score` (`p2p.minTrustScore`).
    ///
    /// A threshold ≤ 0 or NaN means [`DEFAULT_MIN_TRUST_SCORE`] (R-7.7). Any other value is used
    /// as given: the configuration layer is responsible for rejecting values above 1 (with
    /// which no peer with a record could ever be trusted).
    pub fn new(pool: SqlitePool, min_trust_score: f64) -> Self {
        // `!(x > 0.0)` is also true for NaN.
        let threshold = if min_trust_score > 0.0 {
            min_trust_score
        } else {
            DEFAULT_MIN_TRUST_SCORE
        };
        let (changes, _) = broadcast::channel(CHANNEL_CAPACITY);
        let (drops, _) = broadcast::channel(CHANNEL_CAPACITY);
        Self {
            inner: Arc::new(Inner {
                pool,
                threshold,
                changes,
                drops,
            }),
        }
    }

    /// The trust threshold in force (after the R-7.7 default was applied).
    pub fn threshold(&self) -> f64 {
        self.inner.threshold
    }

    /// Records one outcome for `peer_did` atomically (R-7.3) and returns the change.
    ///
    /// The record is created from zero counts when absent; `first_seen` is set then and never
    /// changed, `last_interaction` is set on every call. Once the statement has completed, the
    /// change is sent to the change subscribers and, if the score went from "none or at least
    /// the threshold" to strictly below it, a [`ReputationDrop`] to the drop subscribers.
    ///
    /// # Errors
    /// [`Error::InvalidDid`] for an empty DID; [`Error::Database`] when the statement fails or
    /// the stored row is corrupt.
    pub async fn record(&self, peer_did: &str, outcome: Outcome) -> Result<ScoreChange> {
        check_did(peer_did)?;
        let (ds, df, dt) = outcome.increments();
        let now = crate::db_now();
        let row = sqlx::query(RECORD_SQL)
            .bind(peer_did)
            .bind(ds)
            .bind(df)
            .bind(dt)
            .bind(&now)
            .bind(FAILURE_WEIGHT)
            .bind(TIMEOUT_WEIGHT)
            .bind(BASE_PENALTY)
            .fetch_one(&self.inner.pool)
            .await
            .map_err(|e| Error::db(format!("record reputation for {peer_did}"), e))?;
        let what = || format!("record reputation for {peer_did}");
        let s: i64 = get(&row, "successful_exchanges", what)?;
        let f: i64 = get(&row, "failed_exchanges", what)?;
        let t: i64 = get(&row, "timeout_count", what)?;
        let new_score: f64 = get(&row, "trust_score", what)?;
        check_counts_and_score(peer_did, s, f, t, new_score)?;
        let (ps, pf, pt) = (s - ds, f - df, t - dt);
        if ps < 0 || pf < 0 || pt < 0 {
            return Err(corrupt(
                peer_did,
                "counters are smaller than the increment just applied",
            ));
        }
        // The row existed before this statement unless all previous counts are zero: every row
        // is created by this statement with one counter at 1, and counters only grow.
        let previous = (ps != 0 || pf != 0 || pt != 0).then(|| score(ps, pf, pt));
        let change = ScoreChange {
            peer_did: peer_did.to_owned(),
            score: new_score,
            previous,
        };
        self.notify(&change);
        Ok(change)
    }

    /// Publishes a completed change. Send errors only mean there is no subscriber.
    fn notify(&self, change: &ScoreChange) {
        let threshold = self.inner.threshold;
        let was_trusted = change.previous.is_none_or(|p| p >= threshold);
        if was_trusted && change.score < threshold {
            tracing::info!(
                peer_did = %change.peer_did,
                score = change.score,
                threshold,
                "peer reputation dropped below the minimum trust score"
            );
            let _ = self.inner.drops.send(ReputationDrop {
                peer_did: change.peer_did.clone(),
                score: change.score,
                threshold,
            });
        }
        let _ = self.inner.changes.send(change.clone());
    }

    /// The peer's trust score; 0.0 when it has no record (R-7.4). Use [`Self::standing`] to
    /// tell a new peer from one that scores 0.
    ///
    /// # Errors
    /// [`Error::InvalidDid`] for an empty DID; [`Error::Database`] when the query fails or the
    /// stored score is out of range.
    pub async fn score(&self, peer_did: &str) -> Result<f64> {
        check_did(peer_did)?;
        let row = sqlx::query(SCORE_SQL)
            .bind(peer_did)
            .fetch_optional(&self.inner.pool)
            .await
            .map_err(|e| Error::db(format!("read reputation score for {peer_did}"), e))?;
        let Some(row) = row else {
            return Ok(0.0);
        };
        let v: f64 = get(&row, "trust_score", || {
            format!("read reputation score for {peer_did}")
        })?;
        if !score_in_range(v) {
            return Err(corrupt(
                peer_did,
                &format!("trust score {v} is out of range"),
            ));
        }
        Ok(v)
    }

    /// The peer's full record; `None` when it has none (R-7.4).
    ///
    /// # Errors
    /// [`Error::InvalidDid`] for an empty DID; [`Error::Database`] when the query fails or the
    /// row is corrupt (negative counts, score out of range, unparsable time).
    pub async fn details(&self, peer_did: &str) -> Result<Option<Record>> {
        check_did(peer_did)?;
        let row = sqlx::query(DETAILS_SQL)
            .bind(peer_did)
            .fetch_optional(&self.inner.pool)
            .await
            .map_err(|e| Error::db(format!("read reputation for {peer_did}"), e))?;
        row.as_ref().map(record_from_row).transpose()
    }

    /// How the peer stands against the threshold: [`Standing::New`] without a record, otherwise
    /// [`Standing::Trusted`] when the score is at least the threshold and
    /// [`Standing::Untrusted`] when it is below (R-4.8 hardening).
    ///
    /// # Errors
    /// As [`Self::details`]. Errors are never mapped to a standing: callers must fail closed.
    pub async fn standing(&self, peer_did: &str) -> Result<Standing> {
        Ok(match self.details(peer_did).await? {
            None => Standing::New,
            Some(r) if r.trust_score >= self.inner.threshold => Standing::Trusted(r.trust_score),
            Some(r) => Standing::Untrusted(r.trust_score),
        })
    }

    /// Up to `limit` records, highest score first (ties by DID).
    ///
    /// # Errors
    /// [`Error::Database`] when the query fails or a row is corrupt.
    pub async fn list(&self, limit: u32) -> Result<Vec<Record>> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let rows = sqlx::query(LIST_SQL)
            .bind(i64::from(limit))
            .fetch_all(&self.inner.pool)
            .await
            .map_err(|e| Error::db("list reputations", e))?;
        rows.iter().map(record_from_row).collect()
    }

    /// Every recorded change from now on, in the order the statements completed per task.
    /// A receiver that falls more than 1024 changes behind gets `Lagged`.
    pub fn subscribe_changes(&self) -> broadcast::Receiver<ScoreChange> {
        self.inner.changes.subscribe()
    }

    /// Every crossing below the threshold from now on: a change whose previous score was absent
    /// or at least the threshold and whose new score is strictly below it. A peer that stays
    /// below does not fire again; one that recovers and falls again does.
    pub fn subscribe_drops(&self) -> broadcast::Receiver<ReputationDrop> {
        self.inner.drops.subscribe()
    }
}

fn check_did(peer_did: &str) -> Result<()> {
    if peer_did.is_empty() {
        return Err(Error::InvalidDid {
            did: String::new(),
            reason: "a reputation record needs a non-empty peer DID".into(),
        });
    }
    Ok(())
}

fn score_in_range(v: f64) -> bool {
    (0.0..=1.0).contains(&v)
}

fn corrupt(peer_did: &str, message: &str) -> Error {
    Error::Database {
        what: format!("read reputation for {peer_did}"),
        message: format!("corrupt reputation row: {message}"),
    }
}

fn check_counts_and_score(peer_did: &str, s: i64, f: i64, t: i64, v: f64) -> Result<()> {
    if s < 0 || f < 0 || t < 0 {
        return Err(corrupt(
            peer_did,
            &format!("negative counters ({s}, {f}, {t})"),
        ));
    }
    if !score_in_range(v) {
        return Err(corrupt(
            peer_did,
            &format!("trust score {v} is out of range"),
        ));
    }
    Ok(())
}

fn get<'r, T>(row: &'r SqliteRow, column: &str, what: impl FnOnce() -> String) -> Result<T>
where
    T: sqlx::Decode<'r, sqlx::Sqlite> + sqlx::Type<sqlx::Sqlite>,
{
    row.try_get(column).map_err(|e| Error::db(what(), e))
}

fn parse_time(peer_did: &str, column: &str, text: &str) -> Result<OffsetDateTime> {
    OffsetDateTime::parse(text, &Rfc3339).map_err(|e| Error::Database {
        what: format!("read reputation for {peer_did}"),
        message: format!("corrupt reputation row: {column} {text:?} is not RFC 3339: {e}"),
    })
}

fn record_from_row(row: &SqliteRow) -> Result<Record> {
    let peer_did: String = get(row, "peer_did", || "read reputation".to_owned())?;
    let what = || format!("read reputation for {peer_did}");
    let successes: i64 = get(row, "successful_exchanges", what)?;
    let failures: i64 = get(row, "failed_exchanges", what)?;
    let timeouts: i64 = get(row, "timeout_count", what)?;
    let trust_score: f64 = get(row, "trust_score", what)?;
    let first_seen: String = get(row, "first_seen", what)?;
    let last_interaction: String = get(row, "last_interaction", what)?;
    check_counts_and_score(&peer_did, successes, failures, timeouts, trust_score)?;
    let first_seen = parse_time(&peer_did, "first_seen", &first_seen)?;
    let last_interaction = parse_time(&peer_did, "last_interaction", &last_interaction)?;
    Ok(Record {
        peer_did,
        successes,
        failures,
        timeouts,
        trust_score,
        first_seen,
        last_interaction,
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use std::{collections::BTreeSet, time::Duration};

    use lango_store::Database;
    use tempfile::TempDir;
    use tokio::sync::broadcast::error::TryRecvError;

    use super::*;

    async fn open_db(dir: &TempDir) -> Database {
        crate::test_support::open_db(dir.path(), "reputation.db", true).await
    }

    use crate::test_support::did;

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-12
    }

    async fn count_rows(db: &Database) -> i64 {
        sqlx::query_scalar("SELECT count(*) FROM peer_reputations")
            .fetch_one(db.pool())
            .await
            .unwrap()
    }

    // ---- T-D1: the score function ----

    #[test]
    fn score_table_r_7_2() {
        let table: [((i64, i64, i64), f64); 7] = [
            ((0, 0, 0), 0.0),
            ((1, 0, 0), 0.5),
            ((1, 1, 0), 0.25),
            ((1, 0, 1), 1.0 / 3.5),
            ((10, 0, 0), 10.0 / 11.0),
            ((10, 2, 1), 10.0 / 16.5),
            ((0, 5, 0), 0.0),
        ];
        for ((s, f, t), want) in table {
            let got = score(s, f, t);
            assert!(close(got, want), "score({s},{f},{t}) = {got}, want {want}");
        }
        assert_eq!(FAILURE_WEIGHT, 2.0);
        assert_eq!(TIMEOUT_WEIGHT, 1.5);
        assert_eq!(BASE_PENALTY, 1.0);
    }

    #[test]
    fn score_progression_rises_with_successes() {
        let mut prev = score(0, 0, 0);
        assert_eq!(prev, 0.0);
        for s in 1..=10_000 {
            let cur = score(s, 0, 0);
            assert!(
                cur > prev,
                "score({s},0,0) = {cur} did not rise above {prev}"
            );
            assert!((0.0..1.0).contains(&cur));
            prev = cur;
        }
        // s / (s + 1) crosses 0.999 at s = 999 and is well past it at 10 000.
        assert!(score(998, 0, 0) < 0.999);
        assert!(score(10_000, 0, 0) > 0.999);
        assert!(score(10_000, 0, 0) < 1.0);
    }

    #[test]
    fn failure_penalises_more_than_timeout() {
        for s in 1..200 {
            for n in 0..20 {
                let base = score(s, n, n);
                let with_failure = score(s, n + 1, n);
                let with_timeout = score(s, n, n + 1);
                assert!(with_failure < with_timeout, "s={s} n={n}");
                assert!(with_timeout < base, "s={s} n={n}");
                assert!(score(s + 1, n, n) > base, "s={s} n={n}");
            }
        }
        // Without successes the score is 0 whatever the failures and timeouts.
        assert_eq!(score(0, 7, 3), 0.0);
        // Negative counts cannot occur; they count as zero.
        assert_eq!(score(-5, -1, -1), 0.0);
        assert_eq!(score(1, -3, -3), 0.5);
    }

    #[tokio::test]
    async fn threshold_defaults_r_7_7() {
        let dir = TempDir::new().unwrap();
        let db = open_db(&dir).await;
        let p = db.pool().clone();
        assert_eq!(Reputation::new(p.clone(), 0.0).threshold(), 0.3);
        assert_eq!(Reputation::new(p.clone(), -1.0).threshold(), 0.3);
        assert_eq!(Reputation::new(p.clone(), f64::NAN).threshold(), 0.3);
        assert_eq!(Reputation::new(p.clone(), 0.5).threshold(), 0.5);
        assert_eq!(Reputation::new(p, 1.0).threshold(), 1.0);
        db.close().await;
    }

    // ---- T-D2: recording against the database ----

    #[tokio::test]
    async fn record_updates_counters_times_and_notifies() {
        let dir = TempDir::new().unwrap();
        let db = open_db(&dir).await;
        let rep = Reputation::new(db.pool().clone(), 0.3);
        let mut changes = rep.subscribe_changes();
        let peer = did();

        let c1 = rep.record(&peer, Outcome::Success).await.unwrap();
        assert_eq!(
            c1,
            ScoreChange {
                peer_did: peer.clone(),
                score: 0.5,
                previous: None
            }
        );
        assert_eq!(changes.try_recv().unwrap(), c1);
        let r1 = rep.details(&peer).await.unwrap().unwrap();
        assert_eq!((r1.successes, r1.failures, r1.timeouts), (1, 0, 0));
        assert_eq!(r1.trust_score, 0.5);
        assert_eq!(r1.first_seen, r1.last_interaction);
        let age = OffsetDateTime::now_utc() - r1.first_seen;
        assert!(age >= time::Duration::ZERO && age < time::Duration::minutes(1));

        tokio::time::sleep(Duration::from_millis(10)).await;
        let c2 = rep.record(&peer, Outcome::Failure).await.unwrap();
        assert_eq!(c2.previous, Some(0.5));
        assert_eq!(c2.score, score(1, 1, 0));
        assert_eq!(changes.try_recv().unwrap(), c2);
        let r2 = rep.details(&peer).await.unwrap().unwrap();
        assert_eq!((r2.successes, r2.failures, r2.timeouts), (1, 1, 0));
        assert_eq!(r2.first_seen, r1.first_seen, "first_seen must not change");
        assert!(r2.last_interaction > r1.last_interaction);

        tokio::time::sleep(Duration::from_millis(10)).await;
        let c3 = rep.record(&peer, Outcome::Timeout).await.unwrap();
        assert_eq!(c3.previous, Some(score(1, 1, 0)));
        assert_eq!(c3.score, score(1, 1, 1));
        assert_eq!(changes.try_recv().unwrap(), c3);
        let r3 = rep.details(&peer).await.unwrap().unwrap();
        assert_eq!((r3.successes, r3.failures, r3.timeouts), (1, 1, 1));
        assert_eq!(r3.trust_score, score(1, 1, 1));
        assert_eq!(r3.first_seen, r1.first_seen);
        assert!(r3.last_interaction > r2.last_interaction);
        assert!(matches!(changes.try_recv(), Err(TryRecvError::Empty)));

        assert_eq!(rep.score(&peer).await.unwrap(), score(1, 1, 1));
        assert_eq!(count_rows(&db).await, 1);

        // created_at stays, updated_at follows last_interaction.
        let (created, updated, first, last): (String, String, String, String) = sqlx::query_as(
            "SELECT created_at, updated_at, first_seen, last_interaction
             FROM peer_reputations WHERE peer_did = ?1",
        )
        .bind(&peer)
        .fetch_one(db.pool())
        .await
        .unwrap();
        assert_eq!(created, first);
        assert_eq!(updated, last);
        assert_ne!(created, updated);
        db.close().await;
    }

    #[tokio::test]
    async fn sql_score_matches_rust_score_exactly() {
        let dir = TempDir::new().unwrap();
        let db = open_db(&dir).await;
        let rep = Reputation::new(db.pool().clone(), 0.3);
        let peer = did();
        let (mut s, mut f, mut t) = (0i64, 0i64, 0i64);
        // A fixed, irregular sequence of outcomes.
        for i in 0..60u32 {
            let o = match i % 7 {
                0 | 2 | 3 | 5 => Outcome::Success,
                1 | 6 => Outcome::Timeout,
                _ => Outcome::Failure,
            };
            match o {
                Outcome::Success => s += 1,
                Outcome::Failure => f += 1,
                Outcome::Timeout => t += 1,
            }
            let c = rep.record(&peer, o).await.unwrap();
            assert_eq!(c.score.to_bits(), score(s, f, t).to_bits(), "step {i}");
        }
        let r = rep.details(&peer).await.unwrap().unwrap();
        assert_eq!((r.successes, r.failures, r.timeouts), (s, f, t));
        db.close().await;
    }

    #[tokio::test]
    async fn record_rejects_empty_did() {
        let dir = TempDir::new().unwrap();
        let db = open_db(&dir).await;
        let rep = Reputation::new(db.pool().clone(), 0.3);
        let mut changes = rep.subscribe_changes();
        for outcome in [Outcome::Success, Outcome::Failure, Outcome::Timeout] {
            assert!(matches!(
                rep.record("", outcome).await,
                Err(Error::InvalidDid { .. })
            ));
        }
        assert!(matches!(
            rep.standing("").await,
            Err(Error::InvalidDid { .. })
        ));
        assert!(matches!(rep.score("").await, Err(Error::InvalidDid { .. })));
        assert_eq!(count_rows(&db).await, 0);
        assert!(matches!(changes.try_recv(), Err(TryRecvError::Empty)));
        db.close().await;
    }

    // ---- T-D3: concurrency ----

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn concurrent_records_are_atomic() {
        let dir = TempDir::new().unwrap();
        let db = open_db(&dir).await;
        let rep = Reputation::new(db.pool().clone(), 0.3);
        let mut changes = rep.subscribe_changes();
        let peer = did();
        let tasks: Vec<_> = (0..100)
            .map(|_| {
                let rep = rep.clone();
                let peer = peer.clone();
                tokio::spawn(async move { rep.record(&peer, Outcome::Success).await })
            })
            .collect();
        let mut scores = BTreeSet::new();
        let mut fresh = 0;
        for t in tasks {
            let c = t.await.unwrap().unwrap();
            if c.previous.is_none() {
                fresh += 1;
            }
            scores.insert(c.score.to_bits());
        }
        let r = rep.details(&peer).await.unwrap().unwrap();
        assert_eq!((r.successes, r.failures, r.timeouts), (100, 0, 0));
        assert_eq!(r.trust_score, score(100, 0, 0));
        // Each statement saw a distinct count: exactly one created the row, and the scores
        // returned are those of 1..=100 successes, each once.
        assert_eq!(fresh, 1);
        let want: BTreeSet<u64> = (1..=100).map(|s| score(s, 0, 0).to_bits()).collect();
        assert_eq!(scores, want);
        let mut received = 0;
        while let Ok(c) = changes.try_recv() {
            assert_eq!(c.peer_did, peer);
            received += 1;
        }
        assert_eq!(received, 100);
        assert_eq!(count_rows(&db).await, 1);
        db.close().await;
    }

    // ---- T-D4: unknown peers ----

    #[tokio::test]
    async fn unknown_peer_queries() {
        let dir = TempDir::new().unwrap();
        let db = open_db(&dir).await;
        let rep = Reputation::new(db.pool().clone(), 0.3);
        let peer = did();
        assert_eq!(rep.score(&peer).await.unwrap(), 0.0);
        assert_eq!(rep.details(&peer).await.unwrap(), None);
        assert_eq!(rep.standing(&peer).await.unwrap(), Standing::New);
        assert!(rep.list(10).await.unwrap().is_empty());
        // Queries create nothing.
        assert_eq!(count_rows(&db).await, 0);
        db.close().await;
    }

    #[tokio::test]
    async fn standing_distinguishes_new_from_zero() {
        let dir = TempDir::new().unwrap();
        let db = open_db(&dir).await;
        let rep = Reputation::new(db.pool().clone(), 0.3);
        let peer = did();
        rep.record(&peer, Outcome::Failure).await.unwrap();
        assert_eq!(rep.score(&peer).await.unwrap(), 0.0);
        assert_eq!(rep.standing(&peer).await.unwrap(), Standing::Untrusted(0.0));
        rep.record(&peer, Outcome::Success).await.unwrap(); // 1/(1+2+1) = 0.25
        assert_eq!(
            rep.standing(&peer).await.unwrap(),
            Standing::Untrusted(0.25)
        );
        rep.record(&peer, Outcome::Success).await.unwrap(); // 2/5 = 0.4
        assert_eq!(rep.standing(&peer).await.unwrap(), Standing::Trusted(0.4));
        // Equal to the threshold is trusted.
        let at = Reputation::new(db.pool().clone(), 0.25);
        let other = did();
        at.record(&other, Outcome::Success).await.unwrap();
        at.record(&other, Outcome::Failure).await.unwrap();
        assert_eq!(at.standing(&other).await.unwrap(), Standing::Trusted(0.25));
        db.close().await;
    }

    #[tokio::test]
    async fn list_orders_by_score_and_limits() {
        let dir = TempDir::new().unwrap();
        let db = open_db(&dir).await;
        let rep = Reputation::new(db.pool().clone(), 0.3);
        let (a, b, c) = (did(), did(), did());
        rep.record(&a, Outcome::Failure).await.unwrap(); // 0
        for _ in 0..3 {
            rep.record(&b, Outcome::Success).await.unwrap(); // 0.75
        }
        rep.record(&c, Outcome::Success).await.unwrap(); // 0.5
        let all = rep.list(10).await.unwrap();
        let order: Vec<_> = all.iter().map(|r| r.peer_did.as_str()).collect();
        assert_eq!(order, [b.as_str(), c.as_str(), a.as_str()]);
        assert_eq!(all[0].successes, 3);
        assert_eq!(all[0].trust_score, 0.75);
        let two = rep.list(2).await.unwrap();
        assert_eq!(two, all[..2].to_vec());
        assert!(rep.list(0).await.unwrap().is_empty());
        db.close().await;
    }

    // ---- T-D5: drop subscription ----

    #[tokio::test]
    async fn drop_fires_once_per_crossing() {
        let dir = TempDir::new().unwrap();
        let db = open_db(&dir).await;
        let rep = Reputation::new(db.pool().clone(), 0.3);
        let mut drops = rep.subscribe_drops();
        let peer = did();

        // A new peer whose first record is a failure drops at once.
        let c = rep.record(&peer, Outcome::Failure).await.unwrap();
        assert_eq!((c.score, c.previous), (0.0, None));
        assert_eq!(
            drops.try_recv().unwrap(),
            ReputationDrop {
                peer_did: peer.clone(),
                score: 0.0,
                threshold: 0.3
            }
        );
        // Already below: no second drop.
        rep.record(&peer, Outcome::Failure).await.unwrap(); // (0,2,0) = 0
        assert!(matches!(drops.try_recv(), Err(TryRecvError::Empty)));
        // Recover above the threshold: no drops.
        for _ in 0..3 {
            rep.record(&peer, Outcome::Success).await.unwrap();
        }
        assert_eq!(rep.score(&peer).await.unwrap(), 3.0 / 8.0);
        assert!(matches!(drops.try_recv(), Err(TryRecvError::Empty)));
        // Falling to exactly the threshold is not a drop: (3,3,0) = 3/10.
        let c = rep.record(&peer, Outcome::Failure).await.unwrap();
        assert_eq!(c.score, 0.3);
        assert!(matches!(drops.try_recv(), Err(TryRecvError::Empty)));
        // Falling below it again fires again: (3,4,0) = 3/12.
        rep.record(&peer, Outcome::Failure).await.unwrap();
        assert_eq!(
            drops.try_recv().unwrap(),
            ReputationDrop {
                peer_did: peer.clone(),
                score: 0.25,
                threshold: 0.3
            }
        );
        assert!(matches!(drops.try_recv(), Err(TryRecvError::Empty)));
        db.close().await;
    }

    #[tokio::test]
    async fn drop_below_threshold_and_not_at_it() {
        let dir = TempDir::new().unwrap();
        let db = open_db(&dir).await;

        // Threshold 0.3: success (0.5) then failure (0.25) is a drop.
        let rep = Reputation::new(db.pool().clone(), 0.3);
        let mut drops = rep.subscribe_drops();
        let peer = did();
        rep.record(&peer, Outcome::Success).await.unwrap();
        assert!(matches!(drops.try_recv(), Err(TryRecvError::Empty)));
        let c = rep.record(&peer, Outcome::Failure).await.unwrap();
        assert_eq!((c.score, c.previous), (0.25, Some(0.5)));
        let d = drops.try_recv().unwrap();
        assert_eq!((d.peer_did.as_str(), d.score), (peer.as_str(), 0.25));

        // Threshold 0.25: the same sequence ends exactly at the threshold, which is not a drop.
        let at = Reputation::new(db.pool().clone(), 0.25);
        let mut at_drops = at.subscribe_drops();
        let other = did();
        at.record(&other, Outcome::Success).await.unwrap();
        let c = at.record(&other, Outcome::Failure).await.unwrap();
        assert_eq!(c.score, 0.25);
        assert!(matches!(at_drops.try_recv(), Err(TryRecvError::Empty)));

        // A timeout below the threshold counts too: (1,0,1) = 1/3.5 < 0.3.
        let third = did();
        rep.record(&third, Outcome::Success).await.unwrap();
        rep.record(&third, Outcome::Timeout).await.unwrap();
        assert_eq!(drops.try_recv().unwrap().peer_did, third);
        // Recording without any subscriber is fine.
        drop(drops);
        drop(at_drops);
        rep.record(&third, Outcome::Failure).await.unwrap();
        db.close().await;
    }

    // ---- Failing closed ----

    #[tokio::test]
    async fn database_errors_are_returned_not_trusted() {
        let dir = TempDir::new().unwrap();
        let db = open_db(&dir).await;
        let rep = Reputation::new(db.pool().clone(), 0.3);
        let peer = did();
        rep.record(&peer, Outcome::Success).await.unwrap();
        assert_eq!(rep.standing(&peer).await.unwrap(), Standing::Trusted(0.5));

        sqlx::query("DROP TABLE peer_reputations")
            .execute(db.pool())
            .await
            .unwrap();
        let err = rep.standing(&peer).await.unwrap_err();
        match &err {
            Error::Database { what, .. } => assert!(what.contains(&peer), "{err}"),
            other => panic!("unexpected {other:?}"),
        }
        assert!(matches!(
            rep.score(&peer).await,
            Err(Error::Database { .. })
        ));
        match rep.record(&peer, Outcome::Success).await.unwrap_err() {
            Error::Database { what, .. } => {
                assert_eq!(what, format!("record reputation for {peer}"));
            }
            other => panic!("unexpected {other:?}"),
        }
        assert!(matches!(rep.list(5).await, Err(Error::Database { .. })));
        db.close().await;
    }

    #[tokio::test]
    async fn closed_pool_fails_closed() {
        let dir = TempDir::new().unwrap();
        let db = open_db(&dir).await;
        let rep = Reputation::new(db.pool().clone(), 0.3);
        let peer = did();
        rep.record(&peer, Outcome::Success).await.unwrap();
        db.close().await;
        assert!(matches!(
            rep.standing(&peer).await,
            Err(Error::Database { .. })
        ));
        assert!(matches!(
            rep.record(&peer, Outcome::Success).await,
            Err(Error::Database { .. })
        ));
    }

    #[tokio::test]
    async fn corrupt_rows_are_errors() {
        let dir = TempDir::new().unwrap();
        let db = open_db(&dir).await;
        let rep = Reputation::new(db.pool().clone(), 0.3);
        let now = crate::db_now();
        let (bad_time, bad_score, negative) = (did(), did(), did());
        let rows: [(&str, i64, f64, &str); 3] = [
            (&bad_time, 1, 0.5, "yesterday"),
            (&bad_score, 1, 1.5, now.as_str()),
            (&negative, -1, 0.0, now.as_str()),
        ];
        for (d, s, v, t) in rows {
            sqlx::query(
                "INSERT INTO peer_reputations (peer_did, successful_exchanges, trust_score,
                     first_seen, last_interaction, created_at, updated_at)
                 VALUES (?1, ?2, ?3, ?4, ?4, ?4, ?4)",
            )
            .bind(d)
            .bind(s)
            .bind(v)
            .bind(t)
            .execute(db.pool())
            .await
            .unwrap();
        }
        for d in [&bad_time, &bad_score, &negative] {
            let err = rep.standing(d).await.unwrap_err();
            match &err {
                Error::Database { what, message } => {
                    assert!(what.contains(d.as_str()), "{err}");
                    assert!(message.contains("corrupt"), "{err}");
                }
                other => panic!("unexpected {other:?}"),
            }
        }
        assert!(matches!(
            rep.score(&bad_score).await,
            Err(Error::Database { .. })
        ));
        assert!(matches!(rep.list(10).await, Err(Error::Database { .. })));
        // Incrementing a row with negative counters is reported, not silently accepted.
        assert!(matches!(
            rep.record(&negative, Outcome::Failure).await,
            Err(Error::Database { .. })
        ));
        db.close().await;
    }
}
