"""The service's Ed25519 signing keys: receipts a customer can show a regulator (API.md
"Signed receipts").

Each key's private half is stored wrapped by the master key (DESIGN "Keys"), as an
account key is; its public half is published, with every older one, in the JWKS at
`/.well-known/telephony-keys.json`, so a receipt signed before a rotation still verifies.
A key's `kid` is its RFC 7638 JWK thumbprint: anyone can recompute it from the JWK.

A receipt is a detached JWS (RFC 7515, appendix F): `header..signature`, the payload
travelling beside it as the JSON bytes that were signed. Any JOSE library verifies it
once the payload's base64url is put back between the dots.
"""

from __future__ import annotations

import base64
import hashlib
import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from storage.db import Conn
from storage.keys.crypto import unwrap_key, wrap_key
from storage.keys.hierarchy import MasterKeys

RECEIPT_TYPE = "telephony-receipt+json"


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def jwk_of(public_raw: bytes) -> dict[str, str]:
    """The public key as an RFC 8037 JWK, with its thumbprint as `kid`."""
    x = b64url(public_raw)
    # RFC 7638: the required members, sorted, no whitespace.
    thumbprint = hashlib.sha256(
        json.dumps({"crv": "Ed25519", "kty": "OKP", "x": x}, separators=(",", ":")).encode()
    ).digest()
    return {
        "kty": "OKP",
        "crv": "Ed25519",
        "x": x,
        "kid": b64url(thumbprint),
        "alg": "EdDSA",
        "use": "sig",
    }


@dataclass(frozen=True)
class SigningKey:
    kid: str
    private: Ed25519PrivateKey

    def __repr__(self) -> str:  # never print key material
        return f"SigningKey(kid={self.kid!r})"

    @property
    def jwk(self) -> dict[str, str]:
        return jwk_of(self.private.public_key().public_bytes_raw())

    def sign_detached(self, payload: bytes, typ: str = RECEIPT_TYPE) -> str:
        """`header..signature` over `payload` (RFC 7515 appendix F)."""
        header = b64url(
            json.dumps(
                {"alg": "EdDSA", "kid": self.kid, "typ": typ}, separators=(",", ":")
            ).encode()
        )
        signature = self.private.sign(f"{header}.{b64url(payload)}".encode("ascii"))
        return f"{header}..{b64url(signature)}"


def _owner(kid: str) -> str:
    return f"signing-key:{kid}"


async def current(conn: Conn, master: MasterKeys, now: datetime) -> SigningKey:
    """The key receipts are signed with now; the first is made on first use."""
    row = await conn.fetchrow(
        "SELECT kid, wrapped_private, master_key_id FROM signing_keys"
        " WHERE retired_at IS NULL ORDER BY created_at DESC LIMIT 1"
    )
    if row is None:
        return await _create(conn, master, now)
    private = unwrap_key(
        master.by_id(row["master_key_id"]), bytes(row["wrapped_private"]), _owner(row["kid"])
    )
    return SigningKey(row["kid"], Ed25519PrivateKey.from_private_bytes(private))


async def rotate(conn: Conn, master: MasterKeys, now: datetime) -> SigningKey:
    """A new key signs from now on; the old ones stay published, so what they signed still
    verifies."""
    await conn.execute("UPDATE signing_keys SET retired_at = $1 WHERE retired_at IS NULL", now)
    return await _create(conn, master, now)


async def _create(conn: Conn, master: MasterKeys, now: datetime) -> SigningKey:
    private = Ed25519PrivateKey.generate()
    raw = private.private_bytes_raw()
    public_raw = private.public_key().public_bytes_raw()
    kid = jwk_of(public_raw)["kid"]
    # One key without retirement at a time: two first uses at once make one key (the
    # partial unique index), and the loser reads the winner's.
    inserted = await conn.fetchval(
        """INSERT INTO signing_keys (kid, public_key, wrapped_private, master_key_id, created_at)
           VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING RETURNING true""",
        kid,
        public_raw,
        wrap_key(master.current, raw, _owner(kid)),
        master.current_id,
        now,
    )
    if not inserted:
        return await current(conn, master, now)
    return SigningKey(kid, private)


async def published(conn: Conn) -> list[dict[str, Any]]:
    """Every public key ever used, newest first: the JWKS's `keys`."""
    rows = await conn.fetch("SELECT public_key FROM signing_keys ORDER BY created_at DESC, kid")
    return [jwk_of(bytes(r["public_key"])) for r in rows]


async def rewrap(conn: Conn, master: MasterKeys) -> int:
    """Signing keys under an older master key, wrapped under the current one (a master key
    rotation: `telephony keys rotate`)."""
    rows = await conn.fetch(
        "SELECT kid, wrapped_private, master_key_id FROM signing_keys"
        " WHERE master_key_id <> $1 FOR UPDATE",
        master.current_id,
    )
    for row in rows:
        owner = _owner(row["kid"])
        raw = unwrap_key(master.by_id(row["master_key_id"]), bytes(row["wrapped_private"]), owner)
        await conn.execute(
            "UPDATE signing_keys SET wrapped_private = $2, master_key_id = $3 WHERE kid = $1",
            row["kid"],
            wrap_key(master.current, raw, owner),
            master.current_id,
        )
    return len(rows)
