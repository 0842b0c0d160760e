-- Idempotency-Key (API.md conventions): the first response to a keyed POST is
-- kept for 24 hours and replayed to retries of the same request.
CREATE TABLE idempotency_keys (
    scope          text NOT NULL,          -- the principal's id, or 'anonymous'
    key            text NOT NULL,
    request_hash   bytea NOT NULL,         -- SHA-256 of method, path and body
    status         integer,                -- NULL while the first request runs
    content_type   text,
    body           bytea,
    created_at     timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (scope, key)
);
CREATE INDEX idempotency_keys_created_idx ON idempotency_keys (created_at);
