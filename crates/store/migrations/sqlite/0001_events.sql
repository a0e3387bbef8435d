-- The event store in SQLite: the same columns and the same guard as PostgreSQL.
CREATE TABLE events (
    position        INTEGER PRIMARY KEY AUTOINCREMENT,
    aggregate_name  TEXT    NOT NULL,
    aggregate_id    TEXT    NOT NULL,
    sequence_number INTEGER NOT NULL CHECK (sequence_number >= 1),
    event_name      TEXT    NOT NULL,
    payload         TEXT    NOT NULL CHECK (json_valid(payload)),
    metadata        TEXT    NOT NULL CHECK (json_valid(metadata)),
    created_at      TEXT    NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
    -- The concurrency guard: a lost race is extended result code 2067
    -- (SQLITE_CONSTRAINT_UNIQUE), the only unique constraint on this table.
    CONSTRAINT events_stream_sequence_key UNIQUE (aggregate_name, aggregate_id, sequence_number)
);
