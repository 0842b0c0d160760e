"""Plain SQL for consent events (R2): insert and read, never update or delete."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import asyncpg

_COLS = (
    "seq, id, call_id, counterpart_id, decision, method, evidence, obtained_at, recorded_at,"
    " recorded_by_type, recorded_by_id"
)


@dataclass(frozen=True)
class ConsentEvent:
    seq: int
    id: str
    call_id: str
    counterpart_id: str
    decision: str
    method: str
    evidence: str | None
    obtained_at: datetime
    recorded_at: datetime
    recorded_by_type: str
    recorded_by_id: str


async def insert_event(
    conn: asyncpg.Connection,
    *,
    id: str,
    call_id: str,
    counterpart_id: str,
    decision: str,
    method: str,
    evidence: str | None,
    obtained_at: datetime,
    recorded_at: datetime,
    recorded_by_type: str,
    recorded_by_id: str,
) -> ConsentEvent:
    row = await conn.fetchrow(
        f"""INSERT INTO consent_events (id, call_id, counterpart_id, decision, method, evidence,
                                        obtained_at, recorded_at, recorded_by_type, recorded_by_id)
            VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) RETURNING {_COLS}""",
        id,
        call_id,
        counterpart_id,
        decision,
        method,
        evidence,
        obtained_at,
        recorded_at,
        recorded_by_type,
        recorded_by_id,
    )
    return ConsentEvent(**row)


async def list_for_calls(conn: asyncpg.Connection, call_ids: list[str]) -> list[ConsentEvent]:
    """Oldest first, so the last event per counterpart is its current flag."""
    rows = await conn.fetch(
        f"SELECT {_COLS} FROM consent_events WHERE call_id = ANY($1) ORDER BY seq", call_ids
    )
    return [ConsentEvent(**r) for r in rows]
