"""Pure rules and types: consent and the gate, recording states, roles and principals, actors,
privacy requests, tracks, the error tree. No I/O, no clock (time is passed in)."""
