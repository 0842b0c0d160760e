-- Issue 14, parts 2 to 4: recordings sealed to a customer's key (API.md "Customer-held
-- keys", SEALED-FORMAT.md). Such a recording names its key and has no service-wrapped
-- data key at all: each writer that attaches to it (a media node, again after a node
-- loss or a hand-over) makes a fresh data key and nonce prefix, wraps the key to the
-- customer's public key at once and keeps the plaintext in its own memory only. Chunks
-- from `first_chunk` on, up to the next epoch's, are sealed under that epoch's key.
ALTER TABLE recordings ADD COLUMN customer_key_id text REFERENCES customer_keys (id);

CREATE TABLE recording_key_epochs (
    recording_id text NOT NULL REFERENCES recordings (id) ON DELETE CASCADE,
    epoch        integer NOT NULL CHECK (epoch >= 0),
    first_chunk  integer NOT NULL CHECK (first_chunk >= 0),
    nonce_prefix bytea NOT NULL,
    wrapped_key  bytea NOT NULL,  -- to the customer's public key: only they can open it
    node_id      text NOT NULL,
    created_at   timestamptz NOT NULL,
    PRIMARY KEY (recording_id, epoch)
);
