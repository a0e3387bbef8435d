-- What reactors need kept (decision record 0055). Times are milliseconds
-- since the Unix epoch, given by the host.
--
-- `reactors`: each reactor's checkpoint, moved in the transaction that
-- records a page of its reactions, from the position the page was read at.
CREATE TABLE reactors (
    name          TEXT    PRIMARY KEY,
    version       TEXT    NOT NULL,
    digest        TEXT    NOT NULL,
    position      INTEGER NOT NULL,
    updated_at_ms INTEGER NOT NULL
);

-- The outbox: commands to send and messages to deliver, under the id the
-- host derived for each (the command id, the Idempotency-Key).
CREATE TABLE reaction_actions (
    id         TEXT     PRIMARY KEY,
    reactor    TEXT     NOT NULL,
    position   INTEGER NOT NULL,
    action     TEXT     NOT NULL,
    status     TEXT     NOT NULL,
    outcome    TEXT,
    attempts   INTEGER NOT NULL DEFAULT 0,
    next_at_ms INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX reaction_actions_pending ON reaction_actions (reactor, status, next_at_ms, position);

-- Durable timers, one per key of a reactor: scheduling a key again
-- replaces it; firing moves its command to the outbox under the timer's id.
CREATE TABLE reactor_timers (
    reactor   TEXT    NOT NULL,
    key       TEXT    NOT NULL,
    id        TEXT    NOT NULL,
    position  INTEGER NOT NULL,
    due_at_ms INTEGER NOT NULL,
    command   TEXT    NOT NULL,
    PRIMARY KEY (reactor, key)
);
CREATE INDEX reactor_timers_due ON reactor_timers (reactor, due_at_ms);

-- Events a reactor refused or failed, with the reason.
CREATE TABLE reactor_parked (
    reactor  TEXT    NOT NULL,
    position INTEGER NOT NULL,
    event    TEXT    NOT NULL,
    reason   TEXT    NOT NULL,
    at_ms    INTEGER NOT NULL,
    PRIMARY KEY (reactor, position)
);

-- The one runner active for each reactor, until its lease lapses.
CREATE TABLE reactor_leases (
    reactor  TEXT    PRIMARY KEY,
    holder   TEXT    NOT NULL,
    until_ms INTEGER NOT NULL
);
