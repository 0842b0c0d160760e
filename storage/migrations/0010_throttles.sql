-- Throttles (issue 10): a budget of attempts per key (an e-mail, a source
-- address) per fixed window, taken in one statement before any password is
-- hashed, so concurrent attempts are counted one after the other. The keys
-- name e-mails and addresses: the daily purge removes rows of windows long
-- past (S3). Forward-only.
CREATE TABLE throttles (
    key                text PRIMARY KEY,
    window_started_at  timestamptz NOT NULL,
    count              integer NOT NULL CHECK (count >= 0)
);
CREATE INDEX throttles_window_idx ON throttles (window_started_at);

-- S2: attempts refused before they started (a malformed request) are logged too.
ALTER TABLE security_log DROP CONSTRAINT security_log_outcome_check;
ALTER TABLE security_log ADD CONSTRAINT security_log_outcome_check
    CHECK (outcome IN ('success', 'failure', 'throttled', 'refused', 'info'));
