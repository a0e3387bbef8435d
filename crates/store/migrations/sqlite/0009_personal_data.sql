-- Personal data (decision record 0056): each data subject's key, wrapped by
-- a master key the database never sees, and where each subject appears.

-- Keys of the whole store, each wrapped by the master key: `lookup` keys
-- the HMAC that finds a subject's row by their id.
CREATE TABLE personal_keys (
    name TEXT PRIMARY KEY,
    wrapped_key BLOB NOT NULL,
    master_key_id TEXT NOT NULL
);

-- One row per data subject: deleting it forgets them. `lookup` is the
-- HMAC of their id, `sealed_subject` their id under their own key.
CREATE TABLE subjects (
    pseudonym TEXT PRIMARY KEY,
    lookup BLOB NOT NULL UNIQUE,
    wrapped_key BLOB NOT NULL,
    sealed_subject BLOB NOT NULL,
    master_key_id TEXT NOT NULL
);

-- The streams a subject's events were appended to (or were about to be:
-- an entry for an append that failed is harmless), whose snapshots a
-- forget drops.
CREATE TABLE subject_streams (
    pseudonym TEXT NOT NULL,
    aggregate TEXT NOT NULL,
    id TEXT NOT NULL,
    PRIMARY KEY (pseudonym, aggregate, id)
);
