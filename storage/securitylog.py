"""Plain SQL for the security log (S2), the access log and their retention (S3)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from storage.db import Conn

_COLS = "id, at, event, outcome, user_id, email, source_address, user_agent, details"


@dataclass(frozen=True)
class SecurityEvent:
    id: int
    at: datetime
    event: str
    outcome: str
    user_id: str | None
    email: str | None
    source_address: str | None
    user_agent: str | None
    details: dict[str, Any]


@dataclass(frozen=True)
class AccessEntry:
    at: datetime
    request_id: str
    method: str
    route: str
    status: int
    duration_ms: float
    principal_id: str | None
    source_address: str | None
    user_agent: str | None


async def record(
    conn: Conn,
    *,
    event: str,
    outcome: str,
    at: datetime,
    user_id: str | None = None,
    email: str | None = None,
    source_address: str | None = None,
    user_agent: str | None = None,
    details: dict[str, Any] | None = None,
) -> None:
    await conn.execute(
        """INSERT INTO security_log (at, event, outcome, user_id, email, source_address,
                                     user_agent, details)
           VALUES ($1, $2, $3, $4, $5, $6, $7, $8)""",
        at,
        event,
        outcome,
        user_id,
        email,
        source_address,
        user_agent,
        details or {},
    )


async def count_recent_failures(
    conn: Conn, *, email: str, source_address: str | None, since: datetime
) -> tuple[int, int]:
    """Failed logins since `since`, per e-mail and per source address (throttling, S2)."""
    row = await conn.fetchrow(
        """SELECT
             (SELECT count(*) FROM security_log
               WHERE outcome = 'failure' AND lower(email) = lower($1) AND at > $3) AS by_email,
             (SELECT count(*) FROM security_log
               WHERE outcome = 'failure' AND source_address = $2 AND at > $3) AS by_address""",
        email,
        source_address,
        since,
    )
    assert row is not None  # a SELECT of two aggregates always returns one row
    return int(row["by_email"]), int(row["by_address"])


async def list_events(
    conn: Conn,
    *,
    email: str | None = None,
    user_id: str | None = None,
    before_id: int | None = None,
    limit: int = 50,
) -> list[SecurityEvent]:
    """Newest first; `before_id` pages backwards."""
    rows = await conn.fetch(
        f"""SELECT {_COLS} FROM security_log
            WHERE ($1::text IS NULL OR lower(email) = lower($1))
              AND ($2::text IS NULL OR user_id = $2)
              AND ($3::bigint IS NULL OR id < $3)
            ORDER BY id DESC LIMIT $4""",
        email,
        user_id,
        before_id,
        limit,
    )
    return [SecurityEvent(**r) for r in rows]


async def write_access_entries(conn: Conn, entries: Sequence[AccessEntry]) -> None:
    await conn.copy_records_to_table(
        "access_log",
        records=[
            (
                e.at,
                e.request_id,
                e.method,
                e.route,
                e.status,
                e.duration_ms,
                e.principal_id,
                e.source_address,
                e.user_agent,
            )
            for e in entries
        ],
        columns=[
            "at",
            "request_id",
            "method",
            "route",
            "status",
            "duration_ms",
            "principal_id",
            "source_address",
            "user_agent",
        ],
    )


@dataclass(frozen=True)
class PurgeResult:
    security_log: int
    access_log: int
    staff_notifications: int


async def purge_older_than(conn: Conn, cutoff: datetime) -> PurgeResult:
    """Delete log rows older than `cutoff` (S3). Undelivered notifications are kept."""

    def _count(status: str) -> int:
        return int(status.split()[-1])

    security = await conn.execute("DELETE FROM security_log WHERE at < $1", cutoff)
    access = await conn.execute("DELETE FROM access_log WHERE at < $1", cutoff)
    notes = await conn.execute(
        """DELETE FROM staff_notifications
           WHERE created_at < $1 AND (delivered_at IS NOT NULL OR given_up_at IS NOT NULL)""",
        cutoff,
    )
    return PurgeResult(_count(security), _count(access), _count(notes))
