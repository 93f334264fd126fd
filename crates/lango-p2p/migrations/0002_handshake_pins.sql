-- Downgrade pins (handshake spec P-12): peers seen on /lango/handshake/1.2.0-bound, whose
-- legacy handshakes are refused from then on. Bounded to 10 000 rows by the node.
CREATE TABLE IF NOT EXISTS handshake_pins (
    did       TEXT PRIMARY KEY NOT NULL CHECK (did <> ''),
    peer_id   TEXT NOT NULL CHECK (peer_id <> ''),
    last_seen TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS handshake_pins_last_seen ON handshake_pins (last_seen);
