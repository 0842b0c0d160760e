-- Issue 11: e-mail through the outbox, password resets, published policy versions (P1),
-- people's language and product-update choice, and staff access on request (S5).
-- Forward-only.

-- What a person chose: the portal's and the mail's language ('en', 'pl'; NULL follows
-- the browser), and whether product-update mail is welcome (policy and security mail
-- are not optional).
ALTER TABLE users ADD COLUMN language text CHECK (language IN ('en', 'pl'));
ALTER TABLE users ADD COLUMN product_updates boolean NOT NULL DEFAULT true;

-- One message to one person. The address and language are read when it is sent, so a
-- rectified address is used and an erased person gets nothing (the row goes with the
-- user). The one exception is the answer to an erasure: its person is gone, so its
-- address travels sealed in sealed_recipient. A secret the message carries (an
-- invitation or reset token) is sealed under the service key; both are wiped once
-- the message is delivered or given up.
CREATE TABLE mail_messages (
    id               text PRIMARY KEY,
    created_at       timestamptz NOT NULL,
    kind             text NOT NULL CHECK (kind IN
                       ('invitation', 'password_reset', 'policy', 'privacy_answer',
                        'product_update')),
    user_id          text REFERENCES users (id) ON DELETE CASCADE,
    sealed_recipient bytea,
    params           jsonb NOT NULL DEFAULT '{}',
    sealed_secret    bytea,
    attempts         integer NOT NULL DEFAULT 0,
    next_attempt_at  timestamptz NOT NULL,
    delivered_at     timestamptz,
    given_up_at      timestamptz,
    last_error       text,
    CHECK (user_id IS NOT NULL OR sealed_recipient IS NOT NULL
           OR delivered_at IS NOT NULL OR given_up_at IS NOT NULL)
);
CREATE INDEX mail_messages_pending_idx
    ON mail_messages (next_attempt_at) WHERE delivered_at IS NULL AND given_up_at IS NULL;
CREATE INDEX mail_messages_user_idx ON mail_messages (user_id);

-- A single-use link to choose a new password; only the token's SHA-256 is kept.
CREATE TABLE password_resets (
    id          text PRIMARY KEY,
    user_id     text NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    token_hash  bytea NOT NULL UNIQUE,
    created_at  timestamptz NOT NULL,
    expires_at  timestamptz NOT NULL,
    used_at     timestamptz
);
CREATE INDEX password_resets_user_idx ON password_resets (user_id);

-- P1: every published version of the privacy policy; the newest is in force.
CREATE TABLE policy_versions (
    version       text PRIMARY KEY,
    published_at  timestamptz NOT NULL,
    material      boolean NOT NULL,
    body          text NOT NULL
);
CREATE INDEX policy_versions_published_idx ON policy_versions (published_at DESC);

-- S5: a staff member asks for a role; a security_admin approves (for a time) or refuses.
CREATE TABLE staff_access_requests (
    id             text PRIMARY KEY,
    staff_user_id  text NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    role           text NOT NULL CHECK (role IN ('support', 'security_admin')),
    reason         text NOT NULL,
    requested_at   timestamptz NOT NULL,
    status         text NOT NULL CHECK (status IN ('pending', 'approved', 'refused')),
    decided_by     text REFERENCES users (id) ON DELETE SET NULL,
    decided_at     timestamptz,
    expires_at     timestamptz,
    CHECK ((status = 'approved') = (expires_at IS NOT NULL))
);
CREATE INDEX staff_access_requests_user_idx ON staff_access_requests (staff_user_id, status);
CREATE INDEX staff_access_requests_pending_idx
    ON staff_access_requests (requested_at) WHERE status = 'pending';

-- has_recording= of the calls list looks up each call's recordings (the only index on
-- recordings.call_id was the partial one of live recordings).
CREATE INDEX recordings_call_idx ON recordings (call_id);
