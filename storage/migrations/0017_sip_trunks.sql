-- Issue 13: SIP trunks (API.md "SIP and SIPREC ingest"). An account's SBC or PBX sends
-- SIPREC (or plain SIP) sessions with digest authentication from its allowed sources.
-- The digest password is password-equivalent (HA1 derives from it unsalted, RFC 8760), so
-- it is kept wrapped under the account's key, never hashed (SIP.md 2.5).
CREATE TABLE sip_trunks (
    id               text PRIMARY KEY,
    account_id       text NOT NULL REFERENCES accounts (id) ON DELETE CASCADE,
    name             text NOT NULL,
    username         text NOT NULL UNIQUE,
    wrapped_password bytea NOT NULL,
    allowed_sources  cidr[] NOT NULL,
    numbers          text[] NOT NULL DEFAULT '{}',  -- the customer's own, for trunk calls
    -- What the challenge offers, preferred first; ['MD5'] for peers that give up on any
    -- SHA-256 challenge (baresip 1.0's libre).
    digest_algorithms text[] NOT NULL DEFAULT '{SHA-256,MD5}',
    created_at       timestamptz NOT NULL
);
CREATE INDEX sip_trunks_account_idx ON sip_trunks (account_id, created_at, id);
