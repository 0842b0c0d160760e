-- Issue 12: a finished recording in an object store becomes one object (its parts are
-- hundreds of small ones, each a request to read). Forward-only.

-- When the compacted whole was written; its parts go an hour later (downloads that listed
-- them before still find them).
ALTER TABLE recordings
    ADD COLUMN compacted_at     timestamptz,
    ADD COLUMN parts_dropped_at timestamptz;

CREATE INDEX recordings_compaction_idx ON recordings (ended_at)
    WHERE compacted_at IS NULL AND status IN ('completed', 'interrupted');
