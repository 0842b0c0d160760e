-- Issue 14: signed receipts (API.md "Signed receipts"). The service's Ed25519 keys, the
-- private half wrapped by the master key as an account key is, the public half published
-- in the JWKS for ever (a receipt signed before a rotation still verifies). One key signs
-- at a time: the one not retired.
CREATE TABLE signing_keys (
    kid             text PRIMARY KEY,  -- the RFC 7638 thumbprint of its JWK
    public_key      bytea NOT NULL,
    wrapped_private bytea NOT NULL,
    master_key_id   text NOT NULL,
    created_at      timestamptz NOT NULL,
    retired_at      timestamptz
);
CREATE UNIQUE INDEX signing_keys_one_current ON signing_keys ((true)) WHERE retired_at IS NULL;

-- An account's salt for the counterpart-number hash a consent receipt carries: the receipt
-- names the number without showing it, and the hashes of two accounts never match.
CREATE TABLE receipt_salts (
    account_id text PRIMARY KEY REFERENCES accounts (id) ON DELETE CASCADE,
    salt       bytea NOT NULL
);

-- A receipt finds its audit rows by subject: partial indexes, so only these actions' rows
-- pay for them (every other append stays as it was).
CREATE INDEX audit_consents_by_event ON audit_events ((subject ->> 'consent_event_id'))
    WHERE action = 'consent.recorded';
CREATE INDEX audit_starts_by_call ON audit_events ((subject ->> 'call_id'))
    WHERE action = 'recording.started';
CREATE INDEX audit_deletions_by_recording ON audit_events ((subject ->> 'recording_id'))
    WHERE action = 'recording.deleted';
