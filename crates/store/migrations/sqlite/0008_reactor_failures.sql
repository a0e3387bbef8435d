-- What a reactor does with an event it refuses or whose reaction fails
-- (decision record 0055): `park` it and go on (the default), or `stop`
-- there, the checkpoint before it, until it is retried.
ALTER TABLE reactors ADD COLUMN on_failure TEXT NOT NULL DEFAULT 'park';

-- When someone asked to retry a parked event (NULL: not asked); the runner
-- reacts to it again with the version it runs.
ALTER TABLE reactor_parked ADD COLUMN retry_requested_at_ms INTEGER;
