-- Commands whose events are recorded (see the PostgreSQL migration of the
-- same name). Inserted in the append's transaction, before its events.
CREATE TABLE commands (
    command_id      TEXT    NOT NULL PRIMARY KEY,
    aggregate_name  TEXT    NOT NULL,
    aggregate_id    TEXT    NOT NULL,
    command_name    TEXT    NOT NULL,
    fingerprint     TEXT    NOT NULL,
    first_sequence  INTEGER NOT NULL CHECK (first_sequence >= 1),
    event_count     INTEGER NOT NULL CHECK (event_count >= 1),
    created_at      TEXT    NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))
);
