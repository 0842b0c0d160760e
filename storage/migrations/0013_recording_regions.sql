-- Issue 12: data residency. A recording's audio lives in the blob store of one region,
-- fixed when the recording starts: its account's data_region at that moment. Changing
-- the account's region moves only the recordings started afterwards. Forward-only.

ALTER TABLE recordings ADD COLUMN blob_region text;
UPDATE recordings r SET blob_region = a.data_region FROM accounts a WHERE a.id = r.account_id;
ALTER TABLE recordings ALTER COLUMN blob_region SET NOT NULL;

-- Set at the insert (unless the insert names one), in the database, so every way a
-- recording is made takes its account's region in the same statement; never changed
-- afterwards, so the blob router may cache it (storage/blobs/regions.py).
CREATE FUNCTION recording_blob_region() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        IF NEW.blob_region IS NULL THEN
            SELECT data_region INTO NEW.blob_region FROM accounts WHERE id = NEW.account_id;
        END IF;
    ELSIF NEW.blob_region IS DISTINCT FROM OLD.blob_region THEN
        RAISE EXCEPTION 'a recording''s blob region never changes'
            USING ERRCODE = 'check_violation';
    END IF;
    RETURN NEW;
END $$;
CREATE TRIGGER recordings_blob_region BEFORE INSERT OR UPDATE OF blob_region ON recordings
    FOR EACH ROW EXECUTE FUNCTION recording_blob_region();
