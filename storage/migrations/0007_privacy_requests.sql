-- Data-subject requests (D2) and their 30-day clock (D3), plus the indexes the
-- access copy (D1) and erasure need on the two large log tables. Forward-only.

CREATE TABLE privacy_requests (
    id            text PRIMARY KEY,
    account_id    text NOT NULL REFERENCES accounts (id) ON DELETE CASCADE,
    -- No foreign key on purpose: the request outlives the user it erased, as the
    -- record that it was handled in time (D3). The id is opaque.
    user_id       text NOT NULL,
    kind          text NOT NULL
                    CHECK (kind IN ('access', 'rectification', 'erasure', 'restriction')),
    details       text NOT NULL DEFAULT '' CHECK (length(details) <= 2000),
    status        text NOT NULL DEFAULT 'received'
                    CHECK (status IN ('received', 'in_progress', 'completed', 'rejected')),
    received_at   timestamptz NOT NULL,
    due_at        timestamptz NOT NULL CHECK (due_at > received_at),  -- received_at + 30 days
    completed_at  timestamptz,
    resolution    text CHECK (length(resolution) <= 2000),
    -- A closed request (completed or rejected) says when it was closed, an open one does not.
    CHECK ((status IN ('completed', 'rejected')) = (completed_at IS NOT NULL))
);
CREATE INDEX privacy_requests_account_idx ON privacy_requests (account_id, received_at, id);
CREATE INDEX privacy_requests_user_idx ON privacy_requests (user_id, received_at, id);
-- Support's work queue: open requests by deadline.
CREATE INDEX privacy_requests_open_idx
    ON privacy_requests (due_at, id) WHERE status IN ('received', 'in_progress');

-- D1 (the access copy) and D2 (erasure) find a user's rows in the logs by id.
CREATE INDEX access_log_principal_idx ON access_log (principal_id, at);
CREATE INDEX security_log_user_idx ON security_log (user_id, at);
