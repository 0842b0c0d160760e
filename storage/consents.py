"""Plain SQL for consent events (R2): insert and read, never update or delete."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import asyncpg

from storage.db import Conn
from telephony.domain.actors import Actor, ActorKind
from telephony.domain.consent import Decision, Method
from telephony.domain.errors import NotFound

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
    decision: Decision
    method: Method
    evidence: str | None
    obtained_at: datetime
    recorded_at: datetime
    recorded_by: Actor  # its kind and id; the role is not kept on the event


def _event(row: asyncpg.Record) -> ConsentEvent:
    return ConsentEvent(
        seq=row["seq"],
        id=row["id"],
        call_id=row["call_id"],
        counterpart_id=row["counterpart_id"],
        decision=Decision(row["decision"]),
        method=Method(row["method"]),
        evidence=row["evidence"],
        obtained_at=row["obtained_at"],
        recorded_at=row["recorded_at"],
        recorded_by=Actor(ActorKind(row["recorded_by_type"]), row["recorded_by_id"]),
    )


async def insert_event(
    conn: Conn,
    *,
    id: str,
    call_id: str,
    counterpart_id: str,
    decision: Decision,
    method: Method,
    evidence: str | None,
    obtained_at: datetime,
    recorded_at: datetime,
    recorded_by: Actor,
) -> ConsentEvent:
    """NotFound unless the counterpart is on the call (checked in the same statement)."""
    row = await conn.fetchrow(
        f"""INSERT INTO consent_events (id, call_id, counterpart_id, decision, method, evidence,
                                        obtained_at, recorded_at, recorded_by_type, recorded_by_id)
            SELECT $1, $2, $3, $4, $5, $6, $7, $8, $9, $10
            WHERE EXISTS (SELECT 1 FROM counterparts WHERE id = $3 AND call_id = $2)
            RETURNING {_COLS}""",
        id,
        call_id,
        counterpart_id,
        decision.value,
        method.value,
        evidence,
        obtained_at,
        recorded_at,
        recorded_by.kind.value,
        recorded_by.id or "",
    )
    if row is None:
        # A reference to what does not exist, like an unknown id in a path: 404.
        raise NotFound("no such counterpart on this call")
    return _event(row)


async def list_for_calls(conn: Conn, call_ids: list[str]) -> list[ConsentEvent]:
    """Oldest first, so the last event per counterpart is its current flag."""
    rows = await conn.fetch(
        f"SELECT {_COLS} FROM consent_events WHERE call_id = ANY($1) ORDER BY seq", call_ids
    )
    return [_event(r) for r in rows]
