-- Snapshots of guest state (see the PostgreSQL migration of the same name).
CREATE TABLE snapshots (
    aggregate_name   TEXT    NOT NULL,
    aggregate_id     TEXT    NOT NULL,
    component_digest TEXT    NOT NULL,
    version          INTEGER NOT NULL CHECK (version >= 1),
    state            BLOB    NOT NULL,
    created_at       TEXT    NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
    PRIMARY KEY (aggregate_name, aggregate_id, component_digest)
);
