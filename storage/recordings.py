"""Plain SQL for recordings and their coverage map (segments)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

import asyncpg

from storage.errors import NotFound

_COLS = (
    "id, call_id, account_id, status, pause_reason, stop_reason, channels, pause_behavior,"
    " started_at, ended_at, size_bytes, started_by_type, started_by_id"
)
LIVE = ("recording", "paused")


@dataclass(frozen=True)
class Segment:
    started_at: datetime
    ended_at: datetime | None
    ended_by: str | None


@dataclass(frozen=True)
class Recording:
    id: str
    call_id: str
    account_id: str
    status: str
    pause_reason: str | None
    stop_reason: str | None
    channels: str
    pause_behavior: str
    started_at: datetime
    ended_at: datetime | None
    size_bytes: int
    started_by_type: str
    started_by_id: str
    segments: list[Segment] = field(default_factory=list)


async def insert(
    conn: asyncpg.Connection,
    *,
    id: str,
    call_id: str,
    account_id: str,
    channels: str,
    pause_behavior: str,
    started_by_type: str,
    started_by_id: str,
    now: datetime,
) -> None:
    await conn.execute(
        """INSERT INTO recordings (id, call_id, account_id, status, channels, pause_behavior,
                                   started_at, started_by_type, started_by_id)
           VALUES ($1, $2, $3, 'recording', $4, $5, $6, $7, $8)""",
        id,
        call_id,
        account_id,
        channels,
        pause_behavior,
        now,
        started_by_type,
        started_by_id,
    )
    await open_segment(conn, id, now)


async def open_segment(conn: asyncpg.Connection, recording_id: str, now: datetime) -> None:
    await conn.execute(
        "INSERT INTO recording_segments (recording_id, started_at) VALUES ($1, $2)",
        recording_id,
        now,
    )


async def close_segment(
    conn: asyncpg.Connection, recording_id: str, now: datetime, ended_by: str
) -> None:
    await conn.execute(
        """UPDATE recording_segments SET ended_at = $2, ended_by = $3
           WHERE recording_id = $1 AND ended_at IS NULL""",
        recording_id,
        now,
        ended_by,
    )


async def set_state(
    conn: asyncpg.Connection,
    recording_id: str,
    *,
    status: str,
    pause_reason: str | None = None,
    stop_reason: str | None = None,
    ended_at: datetime | None = None,
) -> None:
    await conn.execute(
        """UPDATE recordings SET status = $2, pause_reason = $3,
                  stop_reason = coalesce($4, stop_reason), ended_at = coalesce($5, ended_at)
           WHERE id = $1""",
        recording_id,
        status,
        pause_reason,
        stop_reason,
        ended_at,
    )


async def _with_segments(conn: asyncpg.Connection, rows: list[asyncpg.Record]) -> list[Recording]:
    if not rows:
        return []
    segs = await conn.fetch(
        """SELECT recording_id, started_at, ended_at, ended_by FROM recording_segments
           WHERE recording_id = ANY($1) ORDER BY id""",
        [r["id"] for r in rows],
    )
    by_rec: dict[str, list[Segment]] = {r["id"]: [] for r in rows}
    for s in segs:
        by_rec[s["recording_id"]].append(Segment(s["started_at"], s["ended_at"], s["ended_by"]))
    return [Recording(**r, segments=by_rec[r["id"]]) for r in rows]


async def get(
    conn: asyncpg.Connection, recording_id: str, *, account_id: str | None, lock: bool = False
) -> Recording:
    suffix = " FOR UPDATE" if lock else ""
    row = await conn.fetchrow(
        f"""SELECT {_COLS} FROM recordings
            WHERE id = $1 AND ($2::text IS NULL OR account_id = $2)
              AND status <> 'deleted'{suffix}""",
        recording_id,
        account_id,
    )
    if row is None:
        raise NotFound("no such recording")
    return (await _with_segments(conn, [row]))[0]


async def find_live(conn: asyncpg.Connection, call_id: str) -> Recording | None:
    row = await conn.fetchrow(
        f"SELECT {_COLS} FROM recordings WHERE call_id = $1 AND status = ANY($2)",
        call_id,
        list(LIVE),
    )
    return (await _with_segments(conn, [row]))[0] if row else None


async def list_for_calls(conn: asyncpg.Connection, call_ids: list[str]) -> list[Recording]:
    rows = await conn.fetch(
        f"""SELECT {_COLS} FROM recordings WHERE call_id = ANY($1) AND status <> 'deleted'
            ORDER BY started_at, id""",
        call_ids,
    )
    return await _with_segments(conn, list(rows))


async def list_for_account(
    conn: asyncpg.Connection,
    account_id: str,
    *,
    after: tuple[datetime, str] | None,
    limit: int,
    call_id: str | None = None,
) -> list[Recording]:
    rows = await conn.fetch(
        f"""SELECT {_COLS} FROM recordings
            WHERE account_id = $1 AND status <> 'deleted'
              AND ($2::timestamptz IS NULL OR (started_at, id) > ($2, $3))
              AND ($5::text IS NULL OR call_id = $5)
            ORDER BY started_at, id LIMIT $4""",
        account_id,
        after[0] if after else None,
        after[1] if after else None,
        limit,
        call_id,
    )
    return await _with_segments(conn, list(rows))
