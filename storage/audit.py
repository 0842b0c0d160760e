"""The audit trail: append-only rows, hash-chained per account.

Each row stores SHA-256 over its canonical content, which includes the
previous row's hash, so altering or removing any row breaks every hash after
it; `audit_heads` remembers the last link, so removing the newest row shows
too. Appends lock the account's head row: one writer per account at a time.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import asyncpg

from storage.db import Conn
from telephony.domain.actors import Actor

GENESIS = b"\x00" * 32
_COLS = "account_id, seq, at, actor, action, subject, details, prev_hash, hash"


@dataclass(frozen=True)
class AuditEvent:
    account_id: str
    seq: int
    at: datetime
    actor: dict[str, Any]
    action: str
    subject: dict[str, Any]
    details: dict[str, Any]
    prev_hash: bytes
    hash: bytes


def canonical(
    *,
    account_id: str,
    seq: int,
    at: datetime,
    actor: dict[str, Any],
    action: str,
    subject: dict[str, Any],
    details: dict[str, Any],
    prev_hash: bytes,
) -> bytes:
    """The bytes the hash covers: sorted-key compact JSON, UTC microsecond time."""
    return json.dumps(
        {
            "account_id": account_id,
            "seq": seq,
            "at": at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
            "actor": actor,
            "action": action,
            "subject": subject,
            "details": details,
            "prev_hash": prev_hash.hex(),
        },
        sort_keys=True,
        separators=(",", ":"),
        ensure_ascii=False,
    ).encode("utf-8")


def _roundtrip(value: dict[str, Any]) -> dict[str, Any]:
    # What jsonb will hand back, so the hash is computed over what is stored.
    roundtripped: dict[str, Any] = json.loads(json.dumps(value, default=str))
    return roundtripped


@dataclass(frozen=True)
class Entry:
    """An audit row before it is chained: what happened, by whom, to what."""

    account_id: str
    at: datetime
    actor: Actor
    action: str
    subject: dict[str, Any]
    details: dict[str, Any]


_LOCK_HEAD = """
INSERT INTO audit_heads AS h (account_id, seq, hash) VALUES ($1, 0, $2)
ON CONFLICT (account_id) DO UPDATE SET seq = h.seq
RETURNING seq, hash"""


async def append_many(conn: Conn, entries: Sequence[Entry]) -> list[AuditEvent]:
    """Chain and append `entries` in the caller's transaction, in order; two statements per
    account, however many entries: lock (and read) the account's head, then insert the rows
    and move the head.

    Why together: the head's row lock serialises every writer of an account. Written
    once, at the end of a transaction, it is held for two statements and the commit.
    """
    written: list[AuditEvent] = []
    by_account: dict[str, list[Entry]] = {}
    for entry in entries:
        by_account.setdefault(entry.account_id, []).append(entry)
    for account_id in sorted(by_account):  # one lock order: no deadlock between accounts
        head = await conn.fetchrow(_LOCK_HEAD, account_id, GENESIS)
        assert head is not None  # an upsert returns its row
        seq, prev_hash = int(head["seq"]), bytes(head["hash"])
        rows: list[tuple[object, ...]] = []
        for entry in by_account[account_id]:
            actor = _roundtrip(entry.actor.as_json())
            subject, details = _roundtrip(entry.subject), _roundtrip(entry.details)
            seq += 1
            digest = hashlib.sha256(
                canonical(
                    account_id=account_id,
                    seq=seq,
                    at=entry.at,
                    actor=actor,
                    action=entry.action,
                    subject=subject,
                    details=details,
                    prev_hash=prev_hash,
                )
            ).digest()
            rows.append(
                (
                    account_id,
                    seq,
                    entry.at,
                    json.dumps(actor),
                    entry.action,
                    json.dumps(subject),
                    json.dumps(details),
                    prev_hash,
                    digest,
                )
            )
            written.append(
                AuditEvent(
                    account_id,
                    seq,
                    entry.at,
                    actor,
                    entry.action,
                    subject,
                    details,
                    prev_hash,
                    digest,
                )
            )
            prev_hash = digest
        await conn.execute(
            f"""WITH added AS (
                    INSERT INTO audit_events ({_COLS})
                    SELECT $1, r.seq, r.at, r.actor::jsonb, r.action, r.subject::jsonb,
                           r.details::jsonb, r.prev_hash, r.hash
                    FROM unnest($2::bigint[], $3::timestamptz[], $4::text[], $5::text[],
                                $6::text[], $7::text[], $8::bytea[], $9::bytea[])
                         AS r(seq, at, actor, action, subject, details, prev_hash, hash))
                UPDATE audit_heads SET seq = $10, hash = $11 WHERE account_id = $1""",
            account_id,
            *([row[i] for row in rows] for i in range(1, 9)),
            seq,
            prev_hash,
        )
    return written


async def append(
    conn: Conn,
    *,
    account_id: str,
    at: datetime,
    actor: Actor,
    action: str,
    subject: dict[str, Any],
    details: dict[str, Any] | None = None,
) -> AuditEvent:
    """One row, appended now in the caller's transaction (tools; use cases batch theirs)."""
    entry = Entry(account_id, at, actor, action, subject, details or {})
    return (await append_many(conn, [entry]))[0]


async def list_events(
    conn: Conn, account_id: str, *, after_seq: int, limit: int
) -> list[AuditEvent]:
    rows = await conn.fetch(
        f"""SELECT {_COLS} FROM audit_events WHERE account_id = $1 AND seq > $2
            ORDER BY seq LIMIT $3""",
        account_id,
        after_seq,
        limit,
    )
    return [_event(r) for r in rows]


def _event(r: asyncpg.Record) -> AuditEvent:
    data = dict(r.items())
    data["prev_hash"], data["hash"] = bytes(data["prev_hash"]), bytes(data["hash"])
    return AuditEvent(**data)


@dataclass(frozen=True)
class Break:
    """The first place a chain does not hold."""

    account_id: str
    seq: int
    reason: str


async def verify(conn: Conn, account_id: str | None = None) -> list[Break]:
    """Recompute every chain (or one); return the first break of each broken chain."""
    accounts = (
        [account_id]
        if account_id
        else [
            r["account_id"]
            for r in await conn.fetch(
                "SELECT account_id FROM audit_heads"
                " UNION SELECT DISTINCT account_id FROM audit_events"
            )
        ]
    )
    breaks = []
    for acc in sorted(accounts):
        found = await _verify_one(conn, acc)
        if found:
            breaks.append(found)
    return breaks


async def _verify_one(conn: Conn, account_id: str) -> Break | None:
    expected_seq, prev = 1, GENESIS
    async with conn.transaction(isolation="repeatable_read", readonly=True):
        async for r in conn.cursor(
            f"SELECT {_COLS} FROM audit_events WHERE account_id = $1 ORDER BY seq", account_id
        ):
            e = _event(r)
            if e.seq != expected_seq:
                return Break(account_id, expected_seq, "row missing")
            if e.prev_hash != prev:
                return Break(account_id, e.seq, "previous hash does not match")
            recomputed = hashlib.sha256(
                canonical(
                    account_id=e.account_id,
                    seq=e.seq,
                    at=e.at,
                    actor=e.actor,
                    action=e.action,
                    subject=e.subject,
                    details=e.details,
                    prev_hash=e.prev_hash,
                )
            ).digest()
            if recomputed != e.hash:
                return Break(account_id, e.seq, "content does not match its hash")
            expected_seq, prev = e.seq + 1, e.hash
        head = await conn.fetchrow(
            "SELECT seq, hash FROM audit_heads WHERE account_id = $1", account_id
        )
    if head is not None and (head["seq"] != expected_seq - 1 or bytes(head["hash"]) != prev):
        return Break(account_id, expected_seq, "newest rows missing")
    return None
