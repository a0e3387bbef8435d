-- What each host serves. `components` keeps each deployed component's
-- bytes once per digest, so every host serving this store loads them from
-- here. `deployments` is the history: what is live for a name is its
-- newest entry whose action is not 'refused'; a refused digest is never
-- loaded, nor checked again.
CREATE TABLE components (
    digest TEXT PRIMARY KEY,
    bytes  BLOB NOT NULL
);

CREATE TABLE deployments (
    id       INTEGER PRIMARY KEY AUTOINCREMENT,
    kind     TEXT    NOT NULL,
    name     TEXT    NOT NULL,
    version  TEXT    NOT NULL,
    digest   TEXT    NOT NULL,
    action   TEXT    NOT NULL,
    reason   TEXT,
    by_token TEXT,
    at       TEXT    NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))
);

CREATE INDEX deployments_by_name ON deployments (kind, name, id);
CREATE INDEX deployments_by_digest ON deployments (kind, name, digest, id);
