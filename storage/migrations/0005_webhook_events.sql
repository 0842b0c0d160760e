-- Customer webhook events (API.md "Webhook deliveries"), written in the same
-- transaction as the change they report; delivered by a worker (issue 5).
CREATE TABLE webhook_events (
    seq              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    id               text NOT NULL UNIQUE,            -- the stable `webhook-id` across retries
    account_id       text NOT NULL REFERENCES accounts (id) ON DELETE CASCADE,
    type             text NOT NULL,
    payload          jsonb NOT NULL,                  -- {type, timestamp, data}
    created_at       timestamptz NOT NULL,
    attempts         integer NOT NULL DEFAULT 0,
    next_attempt_at  timestamptz NOT NULL,
    delivered_at     timestamptz,
    given_up_at      timestamptz,
    last_error       text
);
CREATE INDEX webhook_events_pending_idx
    ON webhook_events (next_attempt_at) WHERE delivered_at IS NULL AND given_up_at IS NULL;
CREATE INDEX webhook_events_account_idx ON webhook_events (account_id, seq);
