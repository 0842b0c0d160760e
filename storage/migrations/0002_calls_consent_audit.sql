-- Call sessions, counterparts, consent events (R2), recordings and their
-- coverage map, and the hash-chained audit trail. Forward-only.

CREATE TABLE calls (
    id                      text PRIMARY KEY,
    account_id              text NOT NULL REFERENCES accounts (id) ON DELETE CASCADE,
    direction               text NOT NULL CHECK (direction IN ('inbound', 'outbound')),
    from_number             text NOT NULL,
    to_number               text NOT NULL,
    status                  text NOT NULL CHECK (status IN ('active', 'ended')),
    created_by              text,
    created_at              timestamptz NOT NULL,
    ended_at                timestamptz,
    media_token_hash        bytea NOT NULL UNIQUE,   -- SHA-256 of the single-call media token
    media_token_expires_at  timestamptz NOT NULL
);
CREATE INDEX calls_account_idx ON calls (account_id, created_at, id);

CREATE TABLE counterparts (
    id          text PRIMARY KEY,
    call_id     text NOT NULL REFERENCES calls (id) ON DELETE CASCADE,
    label       text NOT NULL,
    number      text NOT NULL,
    added_at    timestamptz NOT NULL
);
CREATE INDEX counterparts_call_idx ON counterparts (call_id, added_at, id);

-- R2: append-only. A counterpart's flag is its latest event.
CREATE TABLE consent_events (
    seq               bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    id                text NOT NULL UNIQUE,
    call_id           text NOT NULL REFERENCES calls (id) ON DELETE CASCADE,
    counterpart_id    text NOT NULL REFERENCES counterparts (id) ON DELETE CASCADE,
    decision          text NOT NULL CHECK (decision IN ('granted', 'refused', 'revoked')),
    method            text NOT NULL CHECK (method IN
                        ('announcement', 'dtmf', 'verbal', 'written', 'prior_agreement')),
    evidence          text CHECK (length(evidence) <= 2000),
    obtained_at       timestamptz NOT NULL,
    recorded_at       timestamptz NOT NULL,
    recorded_by_type  text NOT NULL,
    recorded_by_id    text NOT NULL
);
CREATE INDEX consent_events_counterpart_idx ON consent_events (counterpart_id, seq);
CREATE INDEX consent_events_call_idx ON consent_events (call_id, seq);

CREATE TABLE recordings (
    id               text PRIMARY KEY,
    call_id          text NOT NULL REFERENCES calls (id) ON DELETE CASCADE,
    account_id       text NOT NULL REFERENCES accounts (id) ON DELETE CASCADE,
    status           text NOT NULL CHECK (status IN
                       ('recording', 'paused', 'stopped', 'completed', 'interrupted', 'deleted')),
    pause_reason     text,
    stop_reason      text,
    channels         text NOT NULL CHECK (channels IN ('dual', 'mono')),
    pause_behavior   text NOT NULL CHECK (pause_behavior IN ('skip', 'silence')),
    started_at       timestamptz NOT NULL,
    ended_at         timestamptz,
    size_bytes       bigint NOT NULL DEFAULT 0,
    started_by_type  text NOT NULL,
    started_by_id    text NOT NULL
);
-- At most one live recording per call, whatever the application does.
CREATE UNIQUE INDEX recordings_one_live_per_call
    ON recordings (call_id) WHERE status IN ('recording', 'paused');
CREATE INDEX recordings_account_idx ON recordings (account_id, started_at, id);

-- The coverage map: each stretch that was recorded, and what ended it.
CREATE TABLE recording_segments (
    id            bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    recording_id  text NOT NULL REFERENCES recordings (id) ON DELETE CASCADE,
    started_at    timestamptz NOT NULL,
    ended_at      timestamptz,
    ended_by      text
);
CREATE INDEX recording_segments_recording_idx ON recording_segments (recording_id, id);

-- The audit trail: append-only, hash-chained per account.
CREATE TABLE audit_events (
    account_id  text NOT NULL,
    seq         bigint NOT NULL,
    at          timestamptz NOT NULL,
    actor       jsonb NOT NULL,
    action      text NOT NULL,
    subject     jsonb NOT NULL,
    details     jsonb NOT NULL,
    prev_hash   bytea NOT NULL,
    hash        bytea NOT NULL,
    PRIMARY KEY (account_id, seq)
);

-- The last link of each chain: its row lock serialises appends per account,
-- and it reveals a removed last row, which the chain alone could not.
CREATE TABLE audit_heads (
    account_id  text PRIMARY KEY,
    seq         bigint NOT NULL,
    hash        bytea NOT NULL
);

-- Append-only tables refuse UPDATE and DELETE. Retention and erasure (D4)
-- will delete through a transaction that sets telephony.erasure = 'on'.
CREATE FUNCTION refuse_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'DELETE' AND current_setting('telephony.erasure', true) = 'on' THEN
        RETURN OLD;
    END IF;
    RAISE EXCEPTION '% is append-only: % refused', TG_TABLE_NAME, TG_OP
        USING ERRCODE = 'insufficient_privilege';
END $$;

CREATE TRIGGER consent_events_append_only BEFORE UPDATE OR DELETE ON consent_events
    FOR EACH ROW EXECUTE FUNCTION refuse_change();
CREATE TRIGGER audit_events_append_only BEFORE UPDATE OR DELETE ON audit_events
    FOR EACH ROW EXECUTE FUNCTION refuse_change();
