"""SIP and SIPREC ingest (SIP.md): the wire format, answers, and later the user agent server."""
