-- Issue 14: customer-held keys (API.md "Customer-held keys"). The public keys an account
-- registers; with one active, each new recording's data key is wrapped to it and the
-- service keeps nothing that unwraps it (R3). At most one active key an account; a
-- deleted key keeps its row, since recordings sealed to it name it.
CREATE TABLE customer_keys (
    id           text PRIMARY KEY,
    account_id   text NOT NULL REFERENCES accounts (id) ON DELETE CASCADE,
    algorithm    text NOT NULL
                 CHECK (algorithm IN ('hpke-x25519', 'hpke-mlkem768-x25519', 'rsa-oaep-sha256')),
    public_key   bytea NOT NULL,  -- DER SubjectPublicKeyInfo, or the hybrid's raw bytes
    fingerprint  text NOT NULL,   -- hex SHA-256 of public_key
    created_at   timestamptz NOT NULL,
    activated_at timestamptz,
    active       boolean NOT NULL DEFAULT false,
    deleted_at   timestamptz,
    CHECK (NOT (active AND deleted_at IS NOT NULL))
);
CREATE INDEX customer_keys_account_idx ON customer_keys (account_id, created_at, id);
CREATE UNIQUE INDEX customer_keys_one_active ON customer_keys (account_id) WHERE active;
CREATE UNIQUE INDEX customer_keys_once ON customer_keys (account_id, fingerprint)
    WHERE deleted_at IS NULL;
