-- Metadata is stored as the text the host wrote, as payloads are (0004).
-- jsonb parsed it into its binary form on every insert, for no reader's
-- benefit: nothing queries inside metadata, and every reader parses the
-- text it gets back. json still checks that it is JSON.
ALTER TABLE events ALTER COLUMN metadata TYPE json USING metadata::json;
