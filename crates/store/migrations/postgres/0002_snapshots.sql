-- Snapshots of guest state, so loading a long stream reads the latest
-- snapshot plus the events after it. Keyed by the component's digest: a new
-- version of a component never reads a snapshot another version wrote.
CREATE TABLE snapshots (
    aggregate_name   TEXT        NOT NULL,
    aggregate_id     TEXT        NOT NULL,
    component_digest TEXT        NOT NULL,
    version          BIGINT      NOT NULL CHECK (version >= 1),
    state            BYTEA       NOT NULL,
    created_at       TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (aggregate_name, aggregate_id, component_digest)
);
