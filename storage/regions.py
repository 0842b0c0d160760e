"""Plain SQL for data residency: an account's data region, and each recording's blob region.

A recording's `blob_region` is its account's `data_region` when it started, set by the
database at the insert and never changed (migration 0013), so a new account region
applies to new recordings only.
"""

from __future__ import annotations

import asyncpg

from storage.db import Conn
from telephony.domain.errors import NotFound


async def recording_region(pool: asyncpg.Pool, recording_id: str) -> str | None:
    """The region whose blob store holds the recording's audio; None: no such recording."""
    async with pool.acquire() as conn:
        region: str | None = await conn.fetchval(
            "SELECT blob_region FROM recordings WHERE id = $1", recording_id
        )
    return region


async def change_data_region(conn: Conn, account_id: str, region: str) -> str | None:
    """Set the account's region; the one it had, or None when it already had `region`.

    The account's row is locked first, so two changes at once are told apart.
    """
    before: str | None = await conn.fetchval(
        "SELECT data_region FROM accounts WHERE id = $1 FOR UPDATE", account_id
    )
    if before is None:
        raise NotFound("no such account")
    if before == region:
        return None
    await conn.execute("UPDATE accounts SET data_region = $2 WHERE id = $1", account_id, region)
    return before
