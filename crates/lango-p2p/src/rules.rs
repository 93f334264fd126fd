//! Runtime firewall rules kept in the node database. Separate from [`crate::firewall`],
//! which stays free of crate references so the fuzz crate can compile it alone.

use crate::firewall::{Rule, validate_rule};

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

    /// The stored rules in the order they were added. A row that no longer validates is
    /// skipped with a warning rather than applied.
    pub async fn load(&self) -> crate::Result<Vec<Rule>> {
        use sqlx::Row;
        let rows = sqlx::query(
            "SELECT peer_did, action, tools, rate_limit FROM firewall_rules ORDER BY id LIMIT 10000",
        )
        .fetch_all(&self.pool)
        .await
        .map_err(|e| crate::Error::Store(e.to_string()))?;
        let mut rules = Vec::with_capacity(rows.len());
        for row in rows {
            let tools: Option<String> = row.try_get("tools").unwrap_or(None);
            let rule = Rule {
                peer_did: row.try_get("peer_did").unwrap_or_default(),
                action: row.try_get("action").unwrap_or_default(),
                tools: tools.and_then(|t| serde_json::from_str(&t).ok()),
                rate_limit: row.try_get("rate_limit").unwrap_or(0),
            };
            match validate_rule(&rule) {
                Ok(()) => rules.push(rule),
                Err(e) => tracing::warn!(error = %e, "stored firewall rule skipped"),
            }
        }
        Ok(rules)
    }

    /// Stores a rule (validated first).
    pub async fn add(&self, rule: &Rule) -> crate::Result<()> {
        validate_rule(rule).map_err(|e| crate::Error::Config {
            key: "p2p.firewallRules".into(),
            message: e.to_string(),
        })?;
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
        Ok(())
    }

    /// Deletes every stored rule for `peer_did`; returns how many.
    pub async fn remove(&self, peer_did: &str) -> crate::Result<u64> {
        let r = sqlx::query("DELETE FROM firewall_rules WHERE peer_did = ?1")
            .bind(peer_did)
            .execute(&self.pool)
            .await
            .map_err(|e| crate::Error::Store(e.to_string()))?;
        Ok(r.rows_affected())
    }
}
