-- Envelope keys (DESIGN "Keys and encryption"), sealed audio chunks and the
-- nodes that hold live media sockets. Forward-only.

-- One key-encryption key per account, wrapped by the master key whose id it names.
CREATE TABLE account_keys (
    account_id      text PRIMARY KEY REFERENCES accounts (id) ON DELETE CASCADE,
    wrapped_key     bytea NOT NULL,
    master_key_id   text NOT NULL,
    created_at      timestamptz NOT NULL,
    rotated_at      timestamptz
);
CREATE INDEX account_keys_master_idx ON account_keys (master_key_id);

ALTER TABLE recordings
    ADD COLUMN wrapped_key     bytea,          -- the data key, wrapped by the account key; NULL once destroyed
    ADD COLUMN nonce_prefix    bytea,
    ADD COLUMN encoding        text,           -- codec of the stored bytes, set when audio first arrives
    ADD COLUMN sample_rate_hz  integer,
    ADD COLUMN track_names     text[],         -- channel order of the interleaved audio
    ADD COLUMN node_id         text,           -- the process holding the media socket, while live
    ADD COLUMN gaps            jsonb NOT NULL DEFAULT '[]';  -- audio lost to overload: [{at_ms, duration_ms, reason}]

-- One row per sealed chunk, written before its bytes reach the blob store,
-- and only when every frame in it arrived inside a recorded segment (R2).
CREATE TABLE recording_chunks (
    recording_id   text NOT NULL REFERENCES recordings (id) ON DELETE CASCADE,
    idx            integer NOT NULL,
    blob_offset    bigint NOT NULL,
    record_bytes   integer NOT NULL,
    first_sample   bigint NOT NULL,           -- position of the chunk's audio in the stream, per channel
    samples        integer NOT NULL,          -- samples per channel in the chunk
    first_arrival  timestamptz NOT NULL,
    last_arrival   timestamptz NOT NULL,
    final          boolean NOT NULL DEFAULT false,
    PRIMARY KEY (recording_id, idx)
);

-- Media sockets live on one node; control calls may land on any (LISTEN/NOTIFY).
CREATE TABLE media_streams (
    call_id        text PRIMARY KEY REFERENCES calls (id) ON DELETE CASCADE,
    node_id        text NOT NULL,
    dialect        text NOT NULL,
    connected_at   timestamptz NOT NULL
);
