-- Issue 13: how a recording's audio arrived (API.md: `source`). Set by the first stream
-- that writes it; NULL until then.
ALTER TABLE recordings ADD COLUMN source text
    CHECK (source IN ('websocket', 'sip', 'siprec'));
