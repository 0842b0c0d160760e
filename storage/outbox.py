"""Plain SQL for the staff notification outbox (S4).

A notification is inserted in the transaction of the change it reports, so
it exists exactly when the change committed. Workers on any node claim due
rows with SKIP LOCKED and never deliver one twice at the same time.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg

_COLS = (
    "id, created_at, event, payload, attempts, next_attempt_at, delivered_at, given_up_at,"
    " last_error"
)
CHANNEL = "staff_notifications"


@dataclass(frozen=True)
class StaffNotification:
    id: int
    created_at: datetime
    event: str
    payload: dict[str, Any]
    attempts: int
    next_attempt_at: datetime
    delivered_at: datetime | None
    given_up_at: datetime | None
    last_error: str | None


async def enqueue(
    conn: asyncpg.Connection, event: str, payload: dict[str, Any], now: datetime
) -> int:
    note_id = await conn.fetchval(
        """INSERT INTO staff_notifications (created_at, event, payload, next_attempt_at)
           VALUES ($1, $2, $3, $1) RETURNING id""",
        now,
        event,
        payload,
    )
    # Wakes an idle worker at commit; NOTIFY is transactional.
    await conn.execute("SELECT pg_notify($1, '')", CHANNEL)
    return int(note_id)


async def claim_due(
    conn: asyncpg.Connection, now: datetime, limit: int = 20
) -> list[StaffNotification]:
    """Lock due rows for the caller's transaction; other workers skip them."""
    rows = await conn.fetch(
        f"""SELECT {_COLS} FROM staff_notifications
            WHERE delivered_at IS NULL AND given_up_at IS NULL AND next_attempt_at <= $1
            ORDER BY id LIMIT $2 FOR UPDATE SKIP LOCKED""",
        now,
        limit,
    )
    return [StaffNotification(**r) for r in rows]


async def mark_delivered(conn: asyncpg.Connection, note_id: int, now: datetime) -> None:
    await conn.execute(
        """UPDATE staff_notifications SET delivered_at = $2, attempts = attempts + 1,
                  last_error = NULL WHERE id = $1""",
        note_id,
        now,
    )


async def mark_failed(
    conn: asyncpg.Connection,
    note_id: int,
    *,
    error: str,
    next_attempt_at: datetime | None,
    now: datetime,
) -> None:
    """Record a failed attempt; `next_attempt_at=None` gives up for good."""
    await conn.execute(
        """UPDATE staff_notifications
           SET attempts = attempts + 1, last_error = $2,
               next_attempt_at = coalesce($3::timestamptz, next_attempt_at),
               given_up_at = CASE WHEN $3::timestamptz IS NULL THEN $4::timestamptz END
           WHERE id = $1""",
        note_id,
        error[:500],
        next_attempt_at,
        now,
    )


async def list_all(conn: asyncpg.Connection) -> list[StaffNotification]:
    rows = await conn.fetch(f"SELECT {_COLS} FROM staff_notifications ORDER BY id")
    return [StaffNotification(**r) for r in rows]


async def count_pending(conn: asyncpg.Connection) -> int:
    """Notifications neither delivered nor given up (the outbox_pending gauge)."""
    return int(
        await conn.fetchval(
            """SELECT count(*) FROM staff_notifications
               WHERE delivered_at IS NULL AND given_up_at IS NULL"""
        )
    )
