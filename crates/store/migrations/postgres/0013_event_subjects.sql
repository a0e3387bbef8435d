-- Each event names the data subject whose personal data it holds, if any
-- (decision record 0056), so a forget finds the subject's streams through
-- an index on the events rather than a table of appearances: an index
-- entry per personal event instead of a row per (subject, stream), and
-- nothing for any other event. Filled here from the `personal` member of
-- the metadata of the streams `subject_streams` listed.
ALTER TABLE events ADD COLUMN subject TEXT;

UPDATE events e SET subject = s.pseudonym
FROM subject_streams s
WHERE e.aggregate_name = s.aggregate AND e.aggregate_id = s.id
  AND (e.metadata -> 'personal' ->> 'subject') = s.pseudonym;

CREATE INDEX events_subject ON events (subject) WHERE subject IS NOT NULL;

DROP TABLE subject_streams;
