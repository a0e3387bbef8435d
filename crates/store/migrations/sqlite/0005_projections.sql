-- Projections: read models built from the global log by projection guests.
-- A projection's view is built in generations; `projections.generation` is
-- the live one, the one readers see. A rebuild fills the next generation
-- beside it and switches over in one transaction.
CREATE TABLE projections (
    name       TEXT    PRIMARY KEY,
    generation INTEGER NOT NULL,
    version    TEXT    NOT NULL,
    digest     TEXT    NOT NULL,
    status     TEXT    NOT NULL,
    error      TEXT,
    updated_at TEXT    NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))
);

-- Each generation's checkpoint: the position of the last event its
-- documents include, moved in the same transaction as the documents.
CREATE TABLE view_generations (
    projection TEXT    NOT NULL,
    generation INTEGER NOT NULL,
    position   INTEGER NOT NULL,
    PRIMARY KEY (projection, generation)
);

CREATE TABLE view_documents (
    projection TEXT    NOT NULL,
    generation INTEGER NOT NULL,
    key        TEXT    NOT NULL,
    body       TEXT    NOT NULL,
    PRIMARY KEY (projection, generation, key)
);
