-- Tracks as data (issue 10): beside each stored track's name, the side of the
-- call it is heard on ('counterparts' or 'customer'), so a recording may hold
-- any number of tracks (a SIPREC session brings one per participant) and a
-- download still lays them out by side. Rows from before name their tracks
-- 'inbound'/'outbound' only, which the service reads as before. Forward-only.
ALTER TABLE recordings
    ADD COLUMN track_sides text[]
        CHECK (track_sides <@ ARRAY['counterparts', 'customer']::text[]);
