-- Firewall rules added at runtime (`p2p firewall add`), kept across restarts and applied
-- after the rules of p2p.firewallRules. Each row passed validate_rule when it was written.
CREATE TABLE IF NOT EXISTS firewall_rules (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    peer_did   TEXT NOT NULL CHECK (peer_did <> ''),
    action     TEXT NOT NULL CHECK (action IN ('allow', 'deny')),
    tools      TEXT,
    rate_limit INTEGER NOT NULL CHECK (rate_limit >= 0),
    created_at TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS firewall_rules_peer ON firewall_rules (peer_did);
