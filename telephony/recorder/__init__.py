"""The media node: the `hub` of live streams, a `writer` per recording, the shared `seal`
turn, and the `timeline` arithmetic (pure)."""
