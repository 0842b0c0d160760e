"""Plain SQL for Idempotency-Key records."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from storage.db import Conn


@dataclass(frozen=True)
class Stored:
    request_hash: bytes
    status: int | None
    content_type: str | None
    body: bytes | None


async def claim(conn: Conn, scope: str, key: str, request_hash: bytes, now: datetime) -> bool:
    """True when this request is the first with the key (and must run)."""
    inserted = await conn.fetchval(
        """INSERT INTO idempotency_keys (scope, key, request_hash, created_at)
           VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING RETURNING true""",
        scope,
        key,
        request_hash,
        now,
    )
    return bool(inserted)


async def find(conn: Conn, scope: str, key: str) -> Stored | None:
    row = await conn.fetchrow(
        """SELECT request_hash, status, content_type, body FROM idempotency_keys
           WHERE scope = $1 AND key = $2""",
        scope,
        key,
    )
    if row is None:
        return None
    return Stored(bytes(row["request_hash"]), row["status"], row["content_type"], row["body"])


async def complete(
    conn: Conn, scope: str, key: str, status: int, content_type: str, body: bytes
) -> None:
    await conn.execute(
        """UPDATE idempotency_keys SET status = $3, content_type = $4, body = $5
           WHERE scope = $1 AND key = $2""",
        scope,
        key,
        status,
        content_type,
        body,
    )


async def release(conn: Conn, scope: str, key: str) -> None:
    """Forget a key whose request failed on our side, so a retry runs again."""
    await conn.execute("DELETE FROM idempotency_keys WHERE scope = $1 AND key = $2", scope, key)


async def purge_older_than(conn: Conn, cutoff: datetime) -> int:
    status = await conn.execute("DELETE FROM idempotency_keys WHERE created_at < $1", cutoff)
    return int(status.split()[-1])
