-- Reputation (protocol spec §3.7 R-7.1): one row per peer DID.
CREATE TABLE IF NOT EXISTS peer_reputations (
    id                   INTEGER PRIMARY KEY AUTOINCREMENT,
    peer_did             TEXT    NOT NULL UNIQUE CHECK (peer_did <> ''),
    successful_exchanges INTEGER NOT NULL DEFAULT 0,
    failed_exchanges     INTEGER NOT NULL DEFAULT 0,
    timeout_count        INTEGER NOT NULL DEFAULT 0,
    trust_score          REAL    NOT NULL DEFAULT 0,
    first_seen           TEXT    NOT NULL,
    last_interaction     TEXT    NOT NULL,
    created_at           TEXT    NOT NULL,
    updated_at           TEXT    NOT NULL
);
CREATE INDEX IF NOT EXISTS peer_reputations_trust_score ON peer_reputations (trust_score);
CREATE INDEX IF NOT EXISTS peer_reputations_last_interaction ON peer_reputations (last_interaction);

-- Runtime revocations (§2.4.4): DIDs refused everywhere; config `p2p.revokedDids` adds more.
CREATE TABLE IF NOT EXISTS revoked_dids (
    did        TEXT PRIMARY KEY NOT NULL CHECK (did <> ''),
    reason     TEXT NOT NULL DEFAULT '',
    revoked_at TEXT NOT NULL
);
