-- Accounts, principals, the security log (S2), access log (S3) and the staff
-- notification outbox (S4). Forward-only: never edit once landed.

CREATE TABLE accounts (
    id                        text PRIMARY KEY,
    name                      text NOT NULL,
    postal_address            text NOT NULL,
    vat_number                text,
    data_region               text NOT NULL,
    recording_retention_days  integer CHECK (recording_retention_days > 0),
    processing_restricted     boolean NOT NULL DEFAULT false,
    webhook_url               text,
    terms_accepted_at         timestamptz NOT NULL,
    created_at                timestamptz NOT NULL DEFAULT now(),
    terminated_at             timestamptz
);

-- Customer users belong to an account; staff users (support, security_admin)
-- have none. One table so a single login path serves both.
CREATE TABLE users (
    id                  text PRIMARY KEY,
    account_id          text REFERENCES accounts (id) ON DELETE CASCADE,
    kind                text NOT NULL CHECK (kind IN ('customer', 'staff')),
    role                text NOT NULL,
    email               text NOT NULL,
    name                text NOT NULL,
    postal_address      text,
    vat_number          text,
    password_hash       text,               -- Argon2id PHC string (S1); NULL until an invitation is accepted
    age_confirmed_at    timestamptz,        -- A2: declaration taken at face value
    invitation_hash     bytea UNIQUE,
    invitation_expires_at timestamptz,
    created_at          timestamptz NOT NULL DEFAULT now(),
    updated_at          timestamptz NOT NULL DEFAULT now(),
    CHECK ((kind = 'customer' AND account_id IS NOT NULL AND role IN ('owner', 'member'))
        OR (kind = 'staff' AND account_id IS NULL AND role IN ('support', 'security_admin')))
);
CREATE UNIQUE INDEX users_email_key ON users (lower(email));
CREATE INDEX users_account_idx ON users (account_id, created_at, id);

CREATE TABLE api_keys (
    id            text PRIMARY KEY,
    account_id    text NOT NULL REFERENCES accounts (id) ON DELETE CASCADE,
    name          text NOT NULL,
    scopes        text[] NOT NULL,
    token_hash    bytea NOT NULL UNIQUE,    -- SHA-256 of a 256-bit random token; the token is never stored
    token_prefix  text NOT NULL,            -- first characters, so an owner can tell keys apart
    created_by    text,
    created_at    timestamptz NOT NULL DEFAULT now(),
    last_used_at  timestamptz,
    revoked_at    timestamptz
);
CREATE INDEX api_keys_account_idx ON api_keys (account_id, created_at, id);

CREATE TABLE sessions (
    id            text PRIMARY KEY,
    user_id       text NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    token_hash    bytea NOT NULL UNIQUE,
    created_at    timestamptz NOT NULL DEFAULT now(),
    expires_at    timestamptz NOT NULL,
    revoked_at    timestamptz,
    source_address text,
    user_agent    text
);

-- S2: every login attempt. user_id has no foreign key on purpose: the entry
-- outlives a deleted user for its 60 days (S3).
CREATE TABLE security_log (
    id              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    at              timestamptz NOT NULL DEFAULT now(),
    event           text NOT NULL,
    outcome         text NOT NULL CHECK (outcome IN ('success', 'failure', 'throttled', 'info')),
    user_id         text,
    email           text,
    source_address  text,
    user_agent      text,
    details         jsonb NOT NULL DEFAULT '{}'
);
CREATE INDEX security_log_at_idx ON security_log (at);
CREATE INDEX security_log_email_idx ON security_log (lower(email), at) WHERE outcome = 'failure';
CREATE INDEX security_log_address_idx ON security_log (source_address, at) WHERE outcome = 'failure';

-- S3: the HTTP access log, kept 60 days. No bodies, no query strings.
CREATE TABLE access_log (
    id              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    at              timestamptz NOT NULL,
    request_id      text NOT NULL,
    method          text NOT NULL,
    route           text NOT NULL,
    status          integer NOT NULL,
    duration_ms     double precision NOT NULL,
    principal_id    text,
    source_address  text,
    user_agent      text
);
CREATE INDEX access_log_at_idx ON access_log (at);

-- S4: notifications to the responsible staff, written in the same
-- transaction as the administrative change, delivered by a worker.
CREATE TABLE staff_notifications (
    id               bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    created_at       timestamptz NOT NULL DEFAULT now(),
    event            text NOT NULL,
    payload          jsonb NOT NULL,
    attempts         integer NOT NULL DEFAULT 0,
    next_attempt_at  timestamptz NOT NULL DEFAULT now(),
    delivered_at     timestamptz,
    given_up_at      timestamptz,
    last_error       text
);
CREATE INDEX staff_notifications_pending_idx
    ON staff_notifications (next_attempt_at) WHERE delivered_at IS NULL AND given_up_at IS NULL;
