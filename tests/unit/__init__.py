"""Unit tests: rules, parsers, the recorder's arithmetic, crypto, files; no database or socket."""
