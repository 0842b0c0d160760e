-- Customer webhook delivery (API.md "Webhook deliveries", DESIGN "Delivery").
-- Forward-only: never edit once landed.

-- The account's Standard Webhooks signing secret, wrapped (AES-256-GCM) by the
-- account key with owner id 'whsec:<account id>': only ciphertext at rest, the
-- plain secret is shown to the owner once. Destroying the account key (account
-- deletion) makes it unreadable together with everything else of the account.
CREATE TABLE webhook_secrets (
    account_id      text PRIMARY KEY REFERENCES accounts (id) ON DELETE CASCADE,
    wrapped_secret  bytea NOT NULL,
    created_at      timestamptz NOT NULL,
    rotated_at      timestamptz
);

-- An event of an account without a webhook_url is skipped: final like
-- given_up_at, but no endpoint failed. At most one final state per event.
ALTER TABLE webhook_events
    ADD COLUMN skipped_at timestamptz,
    ADD CONSTRAINT webhook_events_one_final_state
        CHECK (num_nonnulls(delivered_at, given_up_at, skipped_at) <= 1);

-- The worker looks for each account's oldest open event (head of line: an
-- account's events go out in order), so index open events by account.
DROP INDEX webhook_events_pending_idx;
CREATE INDEX webhook_events_open_idx ON webhook_events (account_id, seq)
    WHERE delivered_at IS NULL AND given_up_at IS NULL AND skipped_at IS NULL;

-- GET /v1/webhook-events pages newest first by (created_at, id).
CREATE INDEX webhook_events_listing_idx ON webhook_events (account_id, created_at, id);
