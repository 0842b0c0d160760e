"""RTP reception for SIP ingest (SIP.md 5 and 6): packets to placed audio and digits."""
