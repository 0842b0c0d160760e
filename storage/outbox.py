"""Plain SQL for the staff notification outbox (S4).

A notification is inserted in the transaction of the change it reports, so
it exists exactly when the change committed. A claim is a lease, as for
customer webhooks (`storage/webhooks.py`): it moves `next_attempt_at` past
the attempt's time limit and commits, so no connection is held while the
receiver answers, workers on any node take disjoint rows (SKIP LOCKED), and
an attempt cut short by a crash is retried when the lease ends. An attempt's
outcome is written only if the row is still as claimed.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from storage.db import Conn

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


async def enqueue(conn: Conn, event: str, payload: dict[str, Any], now: datetime) -> int:
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
    conn: Conn, now: datetime, lease_until: datetime, *, limit: int
) -> list[StaffNotification]:
    """Lease up to `limit` due rows, oldest first; other workers skip them."""
    # The locked rows are picked once (MATERIALIZED): a subquery in FROM may be scanned
    # again under a nested-loop plan, and with SKIP LOCKED each scan finds other rows, so
    # one "LIMIT 1" claimed two (a lane count went negative: the next LIMIT was -1).
    rows = await conn.fetch(
        f"""WITH due AS MATERIALIZED (
                SELECT id FROM staff_notifications
                WHERE delivered_at IS NULL AND given_up_at IS NULL AND next_attempt_at <= $1
                ORDER BY id LIMIT $3 FOR UPDATE SKIP LOCKED
            )
            UPDATE staff_notifications n SET next_attempt_at = $2
            FROM due
            WHERE n.id = due.id
            RETURNING {", ".join("n." + c.strip() for c in _COLS.split(","))}""",
        now,
        lease_until,
        limit,
    )
    return sorted((StaffNotification(**r) for r in rows), key=lambda n: n.id)


async def mark_delivered(
    conn: Conn, note: StaffNotification | int, now: datetime
) -> StaffNotification | None:
    """Record the successful attempt of `note` as claimed; None if it moved on meanwhile.

    A bare id (tests, tools) marks the row whatever its attempts.
    """
    note_id, attempts = (note, None) if isinstance(note, int) else (note.id, note.attempts)
    row = await conn.fetchrow(
        f"""UPDATE staff_notifications SET delivered_at = $3, attempts = attempts + 1,
                   last_error = NULL
            WHERE id = $1 AND ($2::int IS NULL OR attempts = $2)
              AND delivered_at IS NULL AND given_up_at IS NULL
            RETURNING {_COLS}""",
        note_id,
        attempts,
        now,
    )
    return StaffNotification(**row) if row else None


async def mark_failed(
    conn: Conn,
    note: StaffNotification | int,
    *,
    error: str,
    next_attempt_at: datetime | None,
    now: datetime,
) -> StaffNotification | None:
    """Record a failed attempt; `next_attempt_at=None` gives up for good.

    With a claimed row, only if it is still as claimed; with a bare id
    (tests, tools), whatever its state.
    """
    note_id, attempts = (note, None) if isinstance(note, int) else (note.id, note.attempts)
    row = await conn.fetchrow(
        f"""UPDATE staff_notifications
            SET attempts = attempts + 1, last_error = $2,
                next_attempt_at = coalesce($3::timestamptz, next_attempt_at),
                given_up_at = CASE WHEN $3::timestamptz IS NULL THEN $4::timestamptz END
            WHERE id = $1 AND ($5::int IS NULL OR attempts = $5)
              AND delivered_at IS NULL AND given_up_at IS NULL
            RETURNING {_COLS}""",
        note_id,
        error[:500],
        next_attempt_at,
        now,
        attempts,
    )
    return StaffNotification(**row) if row else None


async def list_all(conn: Conn) -> list[StaffNotification]:
    rows = await conn.fetch(f"SELECT {_COLS} FROM staff_notifications ORDER BY id")
    return [StaffNotification(**r) for r in rows]


async def count_pending(conn: Conn) -> int:
    """Notifications neither delivered nor given up (the outbox_pending gauge)."""
    return int(
        await conn.fetchval(
            """SELECT count(*) FROM staff_notifications
               WHERE delivered_at IS NULL AND given_up_at IS NULL"""
        )
    )
