"""Plain SQL for the access copy (D1): one reader per table, personal columns only.

Each reader selects the personal columns into a dataclass of its own: a
password hash, a token hash or a wrapped key has no field to land in, so no
export can carry one by accident.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from storage.db import Conn


@dataclass(frozen=True)
class SessionRecord:
    id: str
    created_at: datetime
    expires_at: datetime
    revoked_at: datetime | None
    source_address: str | None
    user_agent: str | None


@dataclass(frozen=True)
class ApiKeyRecord:
    id: str
    name: str
    scopes: list[str]
    created_at: datetime
    last_used_at: datetime | None
    revoked_at: datetime | None


@dataclass(frozen=True)
class LoginRecord:
    at: datetime
    event: str
    outcome: str
    email: str | None
    source_address: str | None
    user_agent: str | None


@dataclass(frozen=True)
class AccessRecord:
    at: datetime
    method: str
    route: str
    status: int
    source_address: str | None
    user_agent: str | None


@dataclass(frozen=True)
class AuditRecord:
    seq: int
    at: datetime
    action: str
    actor: dict[str, Any]
    subject: dict[str, Any]
    details: dict[str, Any]


@dataclass(frozen=True)
class CallRecord:
    id: str
    direction: str
    from_number: str
    to_number: str
    created_at: datetime
    ended_at: datetime | None


@dataclass(frozen=True)
class CounterpartRecord:
    id: str
    call_id: str
    label: str
    number: str
    added_at: datetime


@dataclass(frozen=True)
class ConsentRecord:
    id: str
    call_id: str
    counterpart_id: str
    decision: str
    method: str
    evidence: str | None
    obtained_at: datetime
    recorded_at: datetime


@dataclass(frozen=True)
class RecordingRecord:
    id: str
    call_id: str
    status: str
    channels: str
    started_at: datetime
    ended_at: datetime | None
    size_bytes: int
    blob_region: str  # the region whose blob store keeps its audio


async def sessions_of(conn: Conn, user_id: str, limit: int) -> list[SessionRecord]:
    rows = await conn.fetch(
        """SELECT id, created_at, expires_at, revoked_at, source_address, user_agent
           FROM sessions WHERE user_id = $1 ORDER BY created_at DESC, id LIMIT $2""",
        user_id,
        limit,
    )
    return [SessionRecord(**r) for r in rows]


async def api_keys_created_by(
    conn: Conn, account_id: str, user_id: str, limit: int
) -> list[ApiKeyRecord]:
    rows = await conn.fetch(
        """SELECT id, name, scopes, created_at, last_used_at, revoked_at FROM api_keys
           WHERE account_id = $1 AND created_by = $2 ORDER BY created_at, id LIMIT $3""",
        account_id,
        user_id,
        limit,
    )
    return [ApiKeyRecord(**r) for r in rows]


async def security_log_of(conn: Conn, user_id: str, email: str, limit: int) -> list[LoginRecord]:
    """Login attempts and logouts naming the user by id or by their current e-mail (S2)."""
    rows = await conn.fetch(
        """SELECT at, event, outcome, email, source_address, user_agent FROM security_log
           WHERE user_id = $1 OR lower(email) = lower($2) ORDER BY at DESC, id DESC LIMIT $3""",
        user_id,
        email,
        limit,
    )
    return [LoginRecord(**r) for r in rows]


async def access_log_of(conn: Conn, principal_id: str, limit: int) -> list[AccessRecord]:
    rows = await conn.fetch(
        """SELECT at, method, route, status, source_address, user_agent FROM access_log
           WHERE principal_id = $1 ORDER BY at DESC, id DESC LIMIT $2""",
        principal_id,
        limit,
    )
    return [AccessRecord(**r) for r in rows]


async def audit_of(conn: Conn, account_id: str, user_id: str, limit: int) -> list[AuditRecord]:
    """Audit events the user acted in, or that are about the user."""
    rows = await conn.fetch(
        """SELECT seq, at, action, actor, subject, details FROM audit_events
           WHERE account_id = $1
             AND (actor ->> 'id' = $2 OR (subject ->> 'type' = 'user' AND subject ->> 'id' = $2))
           ORDER BY seq LIMIT $3""",
        account_id,
        user_id,
        limit,
    )
    return [AuditRecord(**r) for r in rows]


async def calls_of(
    conn: Conn, account_id: str, created_by: str | None, limit: int
) -> list[CallRecord]:
    """The account's calls; with `created_by`, only those that principal started."""
    rows = await conn.fetch(
        """SELECT id, direction, from_number, to_number, created_at, ended_at FROM calls
           WHERE account_id = $1 AND ($2::text IS NULL OR created_by = $2)
           ORDER BY created_at, id LIMIT $3""",
        account_id,
        created_by,
        limit,
    )
    return [CallRecord(**r) for r in rows]


async def counterparts_of(
    conn: Conn, account_id: str, created_by: str | None, limit: int
) -> list[CounterpartRecord]:
    rows = await conn.fetch(
        """SELECT p.id, p.call_id, p.label, p.number, p.added_at
           FROM counterparts p JOIN calls c ON c.id = p.call_id
           WHERE c.account_id = $1 AND ($2::text IS NULL OR c.created_by = $2)
           ORDER BY p.added_at, p.id LIMIT $3""",
        account_id,
        created_by,
        limit,
    )
    return [CounterpartRecord(**r) for r in rows]


async def consents_recorded_by(
    conn: Conn, account_id: str, recorded_by_id: str, limit: int
) -> list[ConsentRecord]:
    rows = await conn.fetch(
        """SELECT e.id, e.call_id, e.counterpart_id, e.decision, e.method, e.evidence,
                  e.obtained_at, e.recorded_at
           FROM consent_events e JOIN calls c ON c.id = e.call_id
           WHERE c.account_id = $1 AND e.recorded_by_id = $2 ORDER BY e.seq LIMIT $3""",
        account_id,
        recorded_by_id,
        limit,
    )
    return [ConsentRecord(**r) for r in rows]


async def recordings_of(
    conn: Conn, account_id: str, started_by: str | None, limit: int
) -> list[RecordingRecord]:
    """Recording metadata (never audio, never keys); `started_by` narrows to one principal."""
    rows = await conn.fetch(
        """SELECT id, call_id, status, channels, started_at, ended_at, size_bytes, blob_region
           FROM recordings
           WHERE account_id = $1 AND ($2::text IS NULL OR started_by_id = $2)
           ORDER BY started_at, id LIMIT $3""",
        account_id,
        started_by,
        limit,
    )
    return [RecordingRecord(**r) for r in rows]
