"""Opaque identifiers and bearer secrets.

Ids are random (no counters to enumerate). Tokens carry 256 bits of
randomness, so a plain SHA-256 is the right stored form: a slow hash adds
nothing to a secret nobody can guess, and lookup by hash keeps comparison
out of Python entirely.
"""

from __future__ import annotations

import base64
import hashlib
import secrets


def _b32(raw: bytes) -> str:
    return base64.b32encode(raw).decode("ascii").rstrip("=").lower()


def new_id(prefix: str) -> str:
    return f"{prefix}_{_b32(secrets.token_bytes(15))}"


def new_token(prefix: str) -> tuple[str, bytes]:
    """A bearer token and the hash to store."""
    token = f"{prefix}_{secrets.token_urlsafe(32)}"
    return token, token_hash(token)


def token_hash(token: str) -> bytes:
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).digest()
