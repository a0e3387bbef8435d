-- The event store: one row per event, one stream per (aggregate_name, aggregate_id).
CREATE TABLE events (
    position        BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    aggregate_name  TEXT        NOT NULL,
    aggregate_id    TEXT        NOT NULL,
    sequence_number BIGINT      NOT NULL CHECK (sequence_number >= 1),
    event_name      TEXT        NOT NULL,
    payload         JSONB       NOT NULL,
    metadata        JSONB       NOT NULL,
    created_at      TIMESTAMPTZ NOT NULL DEFAULT now(),
    -- The concurrency guard: two writers appending at the same expected
    -- version collide here (SQLSTATE 23505 on this constraint).
    CONSTRAINT events_stream_sequence_key UNIQUE (aggregate_name, aggregate_id, sequence_number)
);
