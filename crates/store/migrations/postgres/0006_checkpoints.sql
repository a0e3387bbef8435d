-- Where each durable reader of the global log (the NATS relay, later the
-- projections) has got to: the position of the last event it handled.
CREATE TABLE checkpoints (
    name       TEXT        PRIMARY KEY,
    position   BIGINT      NOT NULL,
    updated_at TIMESTAMPTZ NOT NULL DEFAULT now()
);
