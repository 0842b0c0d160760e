-- Deletion by crypto-shredding (R3), recording retention, account termination
-- and the five-year removal of account personal data (D4). Forward-only.

-- A deleted recording keeps its row (status 'deleted') for the audit trail;
-- its wrapped data key is NULL from the moment of deletion, and the blobs go
-- afterwards. blobs_deleted_at says the second step is done, so a crash
-- between the two is finished by the retention worker.
ALTER TABLE recordings
    ADD COLUMN deleted_at        timestamptz,
    ADD COLUMN blobs_deleted_at  timestamptz;
CREATE INDEX recordings_blobs_pending_idx
    ON recordings (deleted_at) WHERE status = 'deleted' AND blobs_deleted_at IS NULL;
CREATE INDEX recordings_retention_idx
    ON recordings (account_id, ended_at) WHERE status IN ('completed', 'interrupted');

-- terminated_at exists since 0001. After it: recordings are deleted once the
-- grace period ends; account personal data five years later (D4).
ALTER TABLE accounts
    ADD COLUMN recordings_purge_after     timestamptz,
    ADD COLUMN exported_at                timestamptz,
    ADD COLUMN personal_data_removed_at   timestamptz;
CREATE INDEX accounts_terminated_idx ON accounts (terminated_at) WHERE terminated_at IS NOT NULL;
