"""Plain SQL for calls and their counterparts."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import asyncpg

from storage.db import Conn
from telephony.domain.calls import CallStatus, Direction
from telephony.domain.consent import Decision
from telephony.domain.errors import NotFound
from telephony.domain.recordings import LIVE

_CALL_COLS = (
    "id, account_id, direction, from_number, to_number, status, created_by, created_at,"
    " ended_at, media_token_expires_at"
)
_CP_COLS = "id, call_id, label, number, added_at"


@dataclass(frozen=True)
class Call:
    id: str
    account_id: str
    direction: Direction
    from_number: str
    to_number: str
    status: CallStatus
    created_by: str | None
    created_at: datetime
    ended_at: datetime | None
    media_token_expires_at: datetime

    @property
    def active(self) -> bool:
        return self.status is CallStatus.ACTIVE


@dataclass(frozen=True)
class Counterpart:
    id: str
    call_id: str
    label: str
    number: str
    added_at: datetime


def _call(row: asyncpg.Record) -> Call:
    data = dict(row.items())
    data["direction"] = Direction(data["direction"])
    data["status"] = CallStatus(data["status"])
    return Call(**data)


async def insert_call(
    conn: Conn,
    *,
    id: str,
    account_id: str,
    direction: Direction,
    from_number: str,
    to_number: str,
    created_by: str,
    media_token_hash: bytes,
    media_token_expires_at: datetime,
    now: datetime,
) -> Call:
    row = await conn.fetchrow(
        f"""INSERT INTO calls (id, account_id, direction, from_number, to_number, status,
                               created_by, created_at, media_token_hash, media_token_expires_at)
            VALUES ($1, $2, $3, $4, $5, 'active', $6, $7, $8, $9) RETURNING {_CALL_COLS}""",
        id,
        account_id,
        direction.value,
        from_number,
        to_number,
        created_by,
        now,
        media_token_hash,
        media_token_expires_at,
    )
    assert row is not None  # INSERT ... RETURNING without ON CONFLICT returns its row or raises
    return _call(row)


async def get_call(conn: Conn, call_id: str, *, account_id: str | None, lock: bool = False) -> Call:
    """The call; with `account_id`, only that account's (another's answers NotFound).

    `lock` takes the row lock that serialises the recording gate and every
    consent change of this call (R2: no interleaving).
    """
    suffix = " FOR UPDATE" if lock else ""
    row = await conn.fetchrow(
        f"""SELECT {_CALL_COLS} FROM calls
            WHERE id = $1 AND ($2::text IS NULL OR account_id = $2){suffix}""",
        call_id,
        account_id,
    )
    if row is None:
        raise NotFound("no such call")
    return _call(row)


@dataclass(frozen=True)
class GateRow:
    """What the recording gate decides on (`telephony.domain.consent.CallFacts`), raw."""

    counterpart_ids: list[str]
    latest_decisions: list[tuple[str, Decision]]  # each counterpart's latest, if any
    has_live_recording: bool
    processing_restricted: bool


async def gate_facts(conn: Conn, call: Call) -> GateRow:
    """One statement for the gate, run after `get_call(lock=True)` has taken the lock.

    Not folded into the locking statement: a statement that waits for a row
    lock still reads every other table as of its own start, so a revocation
    committed while it waited would be missed (R2). This one starts after
    the lock is held, and sees every change made under it.
    """
    row = await conn.fetchrow(
        """SELECT ARRAY(SELECT id FROM counterparts WHERE call_id = $1
                        ORDER BY added_at, id) AS counterparts,
                  ARRAY(SELECT ROW(d.counterpart_id, d.decision) FROM (
                            SELECT DISTINCT ON (counterpart_id) counterpart_id, decision
                            FROM consent_events WHERE call_id = $1
                            ORDER BY counterpart_id, seq DESC) d) AS decisions,
                  EXISTS (SELECT 1 FROM recordings
                          WHERE call_id = $1 AND status = ANY($3)) AS live,
                  (SELECT processing_restricted FROM accounts WHERE id = $2) AS restricted""",
        call.id,
        call.account_id,
        [s.value for s in LIVE],
    )
    assert row is not None
    return GateRow(
        counterpart_ids=list(row["counterparts"]),
        latest_decisions=[(cp, Decision(d)) for cp, d in row["decisions"]],
        has_live_recording=row["live"],
        processing_restricted=bool(row["restricted"]),
    )


async def find_by_media_token(conn: Conn, token_hash: bytes) -> Call | None:
    """The call a media token was issued for (the token itself is never stored)."""
    row = await conn.fetchrow(
        f"SELECT {_CALL_COLS} FROM calls WHERE media_token_hash = $1", token_hash
    )
    return _call(row) if row else None


async def lock_active_calls(conn: Conn, account_id: str) -> list[Call]:
    """Every active call of the account, row-locked in id order (one order: no deadlock).

    For account-wide changes (termination, restriction) that must not interleave
    with a recording start on any of the calls, exactly like `get_call(lock=True)`.
    """
    rows = await conn.fetch(
        f"""SELECT {_CALL_COLS} FROM calls WHERE account_id = $1 AND status = 'active'
            ORDER BY id FOR UPDATE""",
        account_id,
    )
    return [_call(r) for r in rows]


@dataclass(frozen=True)
class CallFilter:
    """API.md "Filters and formats": every field narrows, None leaves it open."""

    status: str | None = None
    number: str | None = None  # any counterpart, `from` or `to`
    created_after: datetime | None = None
    created_before: datetime | None = None
    has_recording: bool | None = None


async def list_calls(
    conn: Conn,
    account_id: str,
    *,
    after: tuple[datetime, str] | None,
    limit: int,
    where: CallFilter = CallFilter(),
    newest_first: bool = False,
) -> list[Call]:
    """One page by (created_at, id): oldest first (the API's order), or newest first.

    Only the filters given become conditions, so each combination gets a plan of its
    own. A number is tested call by call along the (account, created_at) index, which
    stops at the page's end: fast for a number on many calls (the customer's own line),
    and a scan of the account for one on none (bench/portal.py measures both; a union
    of the three number indexes was the reverse, 264 ms for a number on every call).
    """
    order, past = ("DESC", "<") if newest_first else ("ASC", ">")
    args: list[object] = [account_id, limit]
    conditions = ["c.account_id = $1"]

    def arg(value: object) -> str:
        args.append(value)
        return f"${len(args)}"

    if after is not None:
        conditions.append(f"(c.created_at, c.id) {past} ({arg(after[0])}, {arg(after[1])})")
    if where.status is not None:
        conditions.append(f"c.status = {arg(where.status)}")
    if where.number is not None:
        n = arg(where.number)
        conditions.append(
            f"""(c.from_number = {n} OR c.to_number = {n}
                 OR EXISTS (SELECT 1 FROM counterparts p
                            WHERE p.call_id = c.id AND p.number = {n}))"""
        )
    if where.created_after is not None:
        conditions.append(f"c.created_at >= {arg(where.created_after)}")
    if where.created_before is not None:
        conditions.append(f"c.created_at < {arg(where.created_before)}")
    if where.has_recording is not None:
        negate = "" if where.has_recording else "NOT "
        conditions.append(
            f"""{negate}EXISTS (SELECT 1 FROM recordings r
                              WHERE r.call_id = c.id AND r.status <> 'deleted')"""
        )
    rows = await conn.fetch(
        f"""SELECT {", ".join("c." + col.strip() for col in _CALL_COLS.split(","))}
            FROM calls c WHERE {" AND ".join(conditions)}
            ORDER BY c.created_at {order}, c.id {order} LIMIT $2""",
        *args,
    )
    return [_call(r) for r in rows]


async def end_call(conn: Conn, call_id: str, now: datetime) -> Call:
    row = await conn.fetchrow(
        f"UPDATE calls SET status = 'ended', ended_at = $2 WHERE id = $1 RETURNING {_CALL_COLS}",
        call_id,
        now,
    )
    assert row is not None  # the caller holds the call's row (locked), so the UPDATE finds it
    return _call(row)


async def insert_counterpart(
    conn: Conn, *, id: str, call_id: str, label: str, number: str, now: datetime
) -> Counterpart:
    row = await conn.fetchrow(
        f"""INSERT INTO counterparts (id, call_id, label, number, added_at)
            VALUES ($1, $2, $3, $4, $5) RETURNING {_CP_COLS}""",
        id,
        call_id,
        label,
        number,
        now,
    )
    assert row is not None  # INSERT ... RETURNING without ON CONFLICT returns its row or raises
    return Counterpart(**row)


async def list_counterparts(conn: Conn, call_ids: list[str]) -> dict[str, list[Counterpart]]:
    rows = await conn.fetch(
        f"SELECT {_CP_COLS} FROM counterparts WHERE call_id = ANY($1) ORDER BY added_at, id",
        call_ids,
    )
    out: dict[str, list[Counterpart]] = {c: [] for c in call_ids}
    for r in rows:
        out[r["call_id"]].append(Counterpart(**r))
    return out
