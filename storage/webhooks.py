"""Plain SQL for customer webhook events: the outbox written with each change."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import asyncpg

from storage.ids import new_id

CHANNEL = "webhook_events"


async def enqueue(
    conn: asyncpg.Connection, account_id: str, type: str, data: dict[str, Any], now: datetime
) -> str:
    """Write the event in the caller's transaction: it exists exactly when the change does."""
    event_id = new_id("msg")
    payload = {"type": type, "timestamp": now.isoformat().replace("+00:00", "Z"), "data": data}
    await conn.execute(
        """INSERT INTO webhook_events (id, account_id, type, payload, created_at, next_attempt_at)
           VALUES ($1, $2, $3, $4, $5, $5)""",
        event_id,
        account_id,
        type,
        payload,
        now,
    )
    await conn.execute("SELECT pg_notify($1, '')", CHANNEL)
    return event_id


async def list_types(conn: asyncpg.Connection, account_id: str) -> list[str]:
    rows = await conn.fetch(
        "SELECT type FROM webhook_events WHERE account_id = $1 ORDER BY seq", account_id
    )
    return [r["type"] for r in rows]
