-- Each event names the data subject whose personal data it holds, if any
-- (decision record 0056), so a forget finds the subject's streams through
-- an index on the events rather than a table of appearances: an index
-- entry per personal event instead of a row per (subject, stream), and
-- nothing for any other event. Filled here from the `personal` member of
-- the metadata of the streams `subject_streams` listed.
ALTER TABLE events ADD COLUMN subject TEXT;

UPDATE events SET subject = json_extract(metadata, '$.personal.subject')
WHERE EXISTS (
    SELECT 1 FROM subject_streams s
    WHERE s.aggregate = events.aggregate_name AND s.id = events.aggregate_id
      AND s.pseudonym = json_extract(events.metadata, '$.personal.subject')
);

CREATE INDEX events_subject ON events (subject) WHERE subject IS NOT NULL;

DROP TABLE subject_streams;
