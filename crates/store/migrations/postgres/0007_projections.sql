-- Projections: read models built from the global log by projection guests.
-- A projection's view is built in generations; `projections.generation` is
-- the live one, the one readers see. A rebuild fills the next generation
-- beside it and switches over in one transaction.
CREATE TABLE projections (
    name       TEXT        PRIMARY KEY,
    generation BIGINT      NOT NULL,
    version    TEXT        NOT NULL,
    digest     TEXT        NOT NULL,
    status     TEXT        NOT NULL,
    error      TEXT,
    updated_at TIMESTAMPTZ NOT NULL DEFAULT now()
);

-- Each generation's checkpoint: the position of the last event its
-- documents include, moved in the same transaction as the documents.
CREATE TABLE view_generations (
    projection TEXT   NOT NULL,
    generation BIGINT NOT NULL,
    position   BIGINT NOT NULL,
    PRIMARY KEY (projection, generation)
);

CREATE TABLE view_documents (
    projection TEXT   NOT NULL,
    generation BIGINT NOT NULL,
    key        TEXT   NOT NULL,
    body       json   NOT NULL,
    PRIMARY KEY (projection, generation, key)
);
