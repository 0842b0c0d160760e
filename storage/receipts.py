"""Plain SQL for signed receipts: the facts a receipt states, read where they are kept.

A receipt states what the database and the hash-chained audit trail already hold;
nothing is stored for it but the account's salt for hashing a counterpart's number.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import datetime

import asyncpg

from storage.db import Conn

SALT_BYTES = 32


@dataclass(frozen=True)
class Link:
    """One row of the account's audit chain: its place and its hashes."""

    seq: int
    hash: bytes
    prev_hash: bytes
    at: datetime


@dataclass(frozen=True)
class ConsentFacts:
    consent_event_id: str
    call_id: str
    counterpart_id: str
    number: str | None  # None once erased (D-rights)
    decision: str
    method: str
    obtained_at: datetime
    recorded_at: datetime
    audit: Link
    starts_after: list[tuple[str, Link]]  # (recording id, its recording.started row)


@dataclass(frozen=True)
class DeletionFacts:
    recording_id: str
    call_id: str
    deleted_at: datetime
    key_destroyed: bool
    audit: Link


def _link(row: asyncpg.Record) -> Link:
    return Link(row["seq"], bytes(row["hash"]), bytes(row["prev_hash"]), row["at"])


async def salt(conn: Conn, account_id: str) -> bytes:
    """The account's salt for number hashes, made on first use."""
    made = await conn.fetchval(
        """INSERT INTO receipt_salts (account_id, salt) VALUES ($1, $2)
           ON CONFLICT (account_id) DO NOTHING RETURNING salt""",
        account_id,
        secrets.token_bytes(SALT_BYTES),
    )
    if made is None:
        made = await conn.fetchval(
            "SELECT salt FROM receipt_salts WHERE account_id = $1", account_id
        )
    return bytes(made)


async def consent_facts(
    conn: Conn, account_id: str, call_id: str, event_id: str
) -> ConsentFacts | None:
    row = await conn.fetchrow(
        """SELECT e.id, e.call_id, e.counterpart_id, p.number, e.decision, e.method,
                  e.obtained_at, e.recorded_at, a.seq, a.hash, a.prev_hash, a.at
           FROM consent_events e
           JOIN calls c ON c.id = e.call_id
           LEFT JOIN counterparts p ON p.id = e.counterpart_id
           JOIN audit_events a ON a.account_id = c.account_id AND a.action = 'consent.recorded'
                              AND a.subject ->> 'consent_event_id' = e.id
           WHERE e.id = $1 AND e.call_id = $2 AND c.account_id = $3""",
        event_id,
        call_id,
        account_id,
    )
    if row is None:
        return None
    starts = await conn.fetch(
        """SELECT subject ->> 'recording_id' AS recording_id, seq, hash, prev_hash, at
           FROM audit_events
           WHERE account_id = $1 AND action = 'recording.started'
             AND subject ->> 'call_id' = $2 AND seq > $3
           ORDER BY seq""",
        account_id,
        call_id,
        row["seq"],
    )
    return ConsentFacts(
        consent_event_id=row["id"],
        call_id=row["call_id"],
        counterpart_id=row["counterpart_id"],
        number=row["number"],
        decision=row["decision"],
        method=row["method"],
        obtained_at=row["obtained_at"],
        recorded_at=row["recorded_at"],
        audit=_link(row),
        starts_after=[(s["recording_id"], _link(s)) for s in starts],
    )


async def deletion_facts(conn: Conn, account_id: str, recording_id: str) -> DeletionFacts | None:
    """The deletion's facts; None when the recording is unknown or not deleted."""
    row = await conn.fetchrow(
        """SELECT r.id, r.call_id, r.deleted_at, (r.wrapped_key IS NULL AND NOT EXISTS (
                      SELECT 1 FROM recording_key_epochs e WHERE e.recording_id = r.id))
                  AS key_destroyed,
                  a.seq, a.hash, a.prev_hash, a.at
           FROM recordings r
           JOIN audit_events a ON a.account_id = r.account_id AND a.action = 'recording.deleted'
                              AND a.subject ->> 'recording_id' = r.id
           WHERE r.id = $1 AND r.account_id = $2 AND r.deleted_at IS NOT NULL
           ORDER BY a.seq LIMIT 1""",
        recording_id,
        account_id,
    )
    if row is None:
        return None
    return DeletionFacts(
        recording_id=row["id"],
        call_id=row["call_id"],
        deleted_at=row["deleted_at"],
        key_destroyed=row["key_destroyed"],
        audit=_link(row),
    )


async def deleted_recordings(
    conn: Conn, account_id: str, call_id: str
) -> list[tuple[str, datetime, datetime]]:
    """(id, started_at, deleted_at) of the call's deleted recordings, each with a receipt."""
    rows = await conn.fetch(
        """SELECT id, started_at, deleted_at FROM recordings
           WHERE call_id = $1 AND account_id = $2 AND deleted_at IS NOT NULL
           ORDER BY started_at, id""",
        call_id,
        account_id,
    )
    return [(r["id"], r["started_at"], r["deleted_at"]) for r in rows]
