-- Commands whose events are recorded, keyed by the command id: a repeated id
-- collides here (SQLSTATE 23505 on commands_pkey) in the same statement that
-- would append its events, so a command is recorded once or not at all.
CREATE TABLE commands (
    command_id      TEXT        NOT NULL,
    aggregate_name  TEXT        NOT NULL,
    aggregate_id    TEXT        NOT NULL,
    command_name    TEXT        NOT NULL,
    -- sha256 of the command name and payload: a reused id with another
    -- command is an error, not a replay.
    fingerprint     TEXT        NOT NULL,
    first_sequence  BIGINT      NOT NULL CHECK (first_sequence >= 1),
    event_count     INTEGER     NOT NULL CHECK (event_count >= 1),
    created_at      TIMESTAMPTZ NOT NULL DEFAULT now(),
    CONSTRAINT commands_pkey PRIMARY KEY (command_id)
);
