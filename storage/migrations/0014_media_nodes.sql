-- Issue 12: many nodes. A node is alive while it holds its session advisory lock
-- (storage/nodes.py); a recording whose node died waits up to a minute for its stream
-- to come back on another node, then ends `interrupted`. Forward-only.

-- When a sweeper first found the recording's media node gone; NULL while it is alive.
ALTER TABLE recordings ADD COLUMN node_lost_at timestamptz;

CREATE INDEX recordings_live_node_idx ON recordings (node_id)
    WHERE status IN ('recording', 'paused', 'stopped') AND node_id IS NOT NULL;
