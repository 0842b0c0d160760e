-- Codecs as received (issue 15): beside each stored track, its codec and the
-- rate its audio has, as the recorder kept them: G.711 and L16 as interleaved
-- samples, G.722, Opus and AMR-WB as the packets that arrived (decoded only
-- when a recording is downloaded). Rows from before have one codec and rate
-- for every track (`encoding`, `sample_rate_hz`), which the service reads as
-- before. Forward-only.
ALTER TABLE recordings
    ADD COLUMN track_encodings text[]
        CHECK (track_encodings <@ ARRAY['mulaw', 'alaw', 'l16le', 'l16be', 'g722', 'opus',
                                        'amrwb']::text[]),
    ADD COLUMN track_rates integer[];
