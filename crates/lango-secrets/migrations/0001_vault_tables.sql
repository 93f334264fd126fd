-- Tables of the vault, compatible with the ones the Go node's ORM created (secrets spec 2.1.3,
-- 2.1.4): on a Go database they already exist and are left as they are (CREATE ... IF NOT
-- EXISTS); on a new database they are created with the same columns.

CREATE TABLE IF NOT EXISTS security_config (
    name TEXT PRIMARY KEY,
    value BLOB NOT NULL,
    checksum BLOB
);

CREATE TABLE IF NOT EXISTS keys (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    remote_key_id TEXT NOT NULL,
    type TEXT NOT NULL DEFAULT 'encryption',
    created_at DATETIME NOT NULL,
    last_used_at DATETIME
);

CREATE TABLE IF NOT EXISTS secrets (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    encrypted_value BLOB NOT NULL,
    created_at DATETIME NOT NULL,
    updated_at DATETIME NOT NULL,
    access_count INTEGER NOT NULL DEFAULT 0,
    key_secrets TEXT NOT NULL
);

CREATE INDEX IF NOT EXISTS secret_name ON secrets (name);
CREATE INDEX IF NOT EXISTS secret_created_at ON secrets (created_at);
CREATE INDEX IF NOT EXISTS key_name ON keys (name);
CREATE INDEX IF NOT EXISTS key_type ON keys (type);
