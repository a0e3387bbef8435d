-- Payloads keep the exact text the guest wrote. jsonb normalises it (numbers
-- such as -0 and 1E2, repeated keys, key order), so a guest replaying its
-- stream would be handed something other than what it decided; json stores
-- the text as given and still checks that it is JSON. Payloads recorded
-- before this migration stay as jsonb gave them back.
ALTER TABLE events ALTER COLUMN payload TYPE json USING payload::json;
