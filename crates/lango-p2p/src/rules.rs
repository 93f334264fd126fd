//! Runtime firewall rules kept in the node database. Separate from [`crate::firewall`],
//! which stays free of crate references so the fuzz crate can compile it alone.

use crate::firewall::{ANY_PEER, Rule, validate_rule};
use lango_crypto::wallet::{DID_PREFIX, Did, PublicKey};

/// The canonical spelling of a rule's peer: `"*"` stays, a DID becomes `did:lango:` + the
/// lowercase hex of its compressed key (any case of the prefix and of the hex, and an
/// uncompressed key, are accepted). Anything that does not name a valid key is an error, so a
/// rule can never be written for a spelling that no peer would present.
pub fn canonical_peer(peer_did: &str) -> crate::Result<String> {
    if peer_did == ANY_PEER {
        return Ok(peer_did.to_owned());
    }
    let invalid = |reason: String| crate::Error::InvalidDid {
        did: peer_did.chars().take(80).collect(),
        reason,
    };
    let key = peer_did
        .get(..DID_PREFIX.len())
        .filter(|p| p.eq_ignore_ascii_case(DID_PREFIX))
        .and_then(|_| peer_did.get(DID_PREFIX.len()..))
        .ok_or_else(|| {
            invalid(format!(
                "a firewall rule's peerDid must be \"*\" or a {DID_PREFIX}<hex key> DID"
            ))
        })?;
    if key.len() == 130 {
        // Uncompressed SEC1 (04 ‖ x ‖ y): the same key, spelled the long way.
        let mut raw = [0u8; 65];
        hex::decode_to_slice(key, &mut raw).map_err(|e| invalid(format!("public key: {e}")))?;
        let pk = PublicKey::from_sec1(&raw).map_err(|e| invalid(e.to_string()))?;
        return Ok(Did::from_public_key(&pk).as_str().to_owned());
    }
    let lowered = format!("{DID_PREFIX}{}", key.to_ascii_lowercase());
    Did::parse(&lowered)
        .map(|d| d.as_str().to_owned())
        .map_err(|e| invalid(e.to_string()))
}

/// `rule` with its peer in canonical form ([`canonical_peer`]), validated.
pub fn canonical_rule(rule: &Rule) -> crate::Result<Rule> {
    let rule = Rule {
        peer_did: canonical_peer(&rule.peer_did)?,
        ..rule.clone()
    };
    validate_rule(&rule).map_err(|e| crate::Error::Config {
        key: "p2p.firewallRules".into(),
        message: e.to_string(),
    })?;
    Ok(rule)
}

/// The result of [`RuleStore::load`].
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct LoadedRules {
    /// The rules to apply, in the order they were added.
    pub rules: Vec<Rule>,
    /// Rows that could not be read or no longer validate (skipped, or kept as a deny).
    pub damaged: usize,
}

/// A stored row as a rule, strictly: any column that does not read as its type is an error.
fn decode_row(row: &sqlx::sqlite::SqliteRow) -> Result<Rule, String> {
    use sqlx::Row;
    let peer_did: String = row
        .try_get("peer_did")
        .map_err(|e| format!("peer_did: {e}"))?;
    let action: String = row.try_get("action").map_err(|e| format!("action: {e}"))?;
    let tools: Option<String> = row.try_get("tools").map_err(|e| format!("tools: {e}"))?;
    let tools = match tools {
        None => None,
        Some(t) => Some(
            serde_json::from_str::<Vec<String>>(&t)
                .map_err(|e| format!("tools is not a JSON list of strings: {e}"))?,
        ),
    };
    let rate_limit: i64 = row
        .try_get("rate_limit")
        .map_err(|e| format!("rate_limit: {e}"))?;
    if rate_limit < 0 {
        return Err(format!("rate_limit is negative: {rate_limit}"));
    }
    Ok(Rule {
        peer_did,
        action,
        tools,
        rate_limit,
    })
}

/// For an unreadable row whose action reads as `deny` and whose peer reads as a DID or `"*"`:
/// a deny of every tool for that peer (dropping a deny could let an allow through).
fn fallback_deny(row: &sqlx::sqlite::SqliteRow) -> Option<Rule> {
    use sqlx::Row;
    let action: String = row.try_get("action").ok()?;
    let peer_did: String = row.try_get("peer_did").ok()?;
    if action != crate::firewall::ACTION_DENY || peer_did.is_empty() {
        return None;
    }
    canonical_rule(&Rule::deny(peer_did, Vec::<String>::new())).ok()
}

/// Runtime firewall rules kept in the node database (`firewall_rules`), so `p2p firewall
/// add|remove` survive a restart. Rules from the config file are not stored here.
#[derive(Clone)]
pub struct RuleStore {
    pool: sqlx::SqlitePool,
}

impl RuleStore {
    /// Over the node database (after [`crate::migrate`]).
    pub fn new(pool: sqlx::SqlitePool) -> Self {
        Self { pool }
    }

    /// The stored rules in the order they were added. A row that cannot be read (a column
    /// of the wrong type, a `tools` value that is not a JSON list of strings, a negative
    /// rate limit) or no longer validates never widens access: an `allow` row is skipped, a
    /// `deny` row whose peer is readable is kept as a deny of every tool for that peer. Each
    /// such row is logged and counted in [`LoadedRules::damaged`].
    pub async fn load(&self) -> crate::Result<LoadedRules> {
        let rows = sqlx::query(
            "SELECT id, peer_did, action, tools, rate_limit FROM firewall_rules ORDER BY id LIMIT 10000",
        )
        .fetch_all(&self.pool)
        .await
        .map_err(|e| crate::Error::Store(e.to_string()))?;
        let mut loaded = LoadedRules::default();
        for row in rows {
            let id: i64 = sqlx::Row::try_get(&row, "id").unwrap_or(-1);
            let problem = match decode_row(&row) {
                Ok(rule) => match canonical_rule(&rule) {
                    Ok(rule) => {
                        loaded.rules.push(rule);
                        continue;
                    }
                    Err(e) => e.to_string(),
                },
                Err(e) => e,
            };
            loaded.damaged += 1;
            match fallback_deny(&row) {
                Some(deny) => {
                    tracing::warn!(row = id, error = %problem, peer = %deny.peer_did,
                        "stored firewall deny rule unreadable: denying every tool for its peer");
                    loaded.rules.push(deny);
                }
                None => {
                    tracing::warn!(row = id, error = %problem, "stored firewall rule unreadable: skipped");
                }
            }
        }
        Ok(loaded)
    }

    /// Stores a rule, its peer in canonical form ([`canonical_rule`]); returns what was stored.
    /// An invalid DID is refused.
    pub async fn add(&self, rule: &Rule) -> crate::Result<Rule> {
        let rule = canonical_rule(rule)?;
        let tools = match &rule.tools {
            Some(t) => {
                Some(serde_json::to_string(t).map_err(|e| crate::Error::Store(e.to_string()))?)
            }
            None => None,
        };
        sqlx::query(
            "INSERT INTO firewall_rules (peer_did, action, tools, rate_limit, created_at) VALUES (?1, ?2, ?3, ?4, ?5)",
        )
        .bind(&rule.peer_did)
        .bind(&rule.action)
        .bind(tools)
        .bind(rule.rate_limit)
        .bind(crate::db_now())
        .execute(&self.pool)
        .await
        .map_err(|e| crate::Error::Store(e.to_string()))?;
        Ok(rule)
    }

    /// Deletes every stored rule for `peer_did` in any spelling of the same DID (and rows
    /// stored under exactly this string); returns how many.
    pub async fn remove(&self, peer_did: &str) -> crate::Result<u64> {
        use sqlx::Row;
        let canonical = canonical_peer(peer_did).ok();
        let rows = sqlx::query("SELECT id, peer_did FROM firewall_rules")
            .fetch_all(&self.pool)
            .await
            .map_err(|e| crate::Error::Store(e.to_string()))?;
        let mut removed = 0;
        for row in rows {
            let (Ok(id), Ok(stored)) = (
                row.try_get::<i64, _>("id"),
                row.try_get::<String, _>("peer_did"),
            ) else {
                continue;
            };
            let same = stored == peer_did
                || (canonical.is_some() && canonical_peer(&stored).ok() == canonical);
            if same {
                removed += sqlx::query("DELETE FROM firewall_rules WHERE id = ?1")
                    .bind(id)
                    .execute(&self.pool)
                    .await
                    .map_err(|e| crate::Error::Store(e.to_string()))?
                    .rows_affected();
            }
        }
        Ok(removed)
    }
}
