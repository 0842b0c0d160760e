"""Plain SQL for data-subject rights: privacy requests (D2, D3) and erasure; the access
copy's readers (D1) are `storage.subject_data`.

The access copy reads one data subject's rows from many tables. Each reader
selects the personal columns only, into a dataclass of its own: a password
hash, a token hash or a wrapped key has no field to land in, so no export can
carry one by accident.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime

import asyncpg

from storage.db import Conn
from telephony.domain.errors import NotFound
from telephony.domain.privacy import OPEN, RequestKind, RequestStatus
from telephony.domain.roles import CustomerRole

_REQUEST_COLS = (
    "id, account_id, user_id, kind, details, status, received_at, due_at, completed_at, resolution"
)
_OPEN = [s.value for s in OPEN]


@dataclass(frozen=True)
class PrivacyRequest:
    id: str
    account_id: str
    user_id: str
    kind: RequestKind
    details: str
    status: RequestStatus
    received_at: datetime
    due_at: datetime
    completed_at: datetime | None
    resolution: str | None


def _request(row: asyncpg.Record) -> PrivacyRequest:
    data = dict(row.items())
    data["kind"], data["status"] = RequestKind(data["kind"]), RequestStatus(data["status"])
    return PrivacyRequest(**data)


# -- privacy requests (D2, D3) ----------------------------------------------------------


async def insert_request(
    conn: Conn,
    *,
    id: str,
    account_id: str,
    user_id: str,
    kind: RequestKind,
    details: str,
    received_at: datetime,
    due_at: datetime,
) -> PrivacyRequest:
    row = await conn.fetchrow(
        f"""INSERT INTO privacy_requests (id, account_id, user_id, kind, details, received_at,
                                          due_at)
            VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING {_REQUEST_COLS}""",
        id,
        account_id,
        user_id,
        kind.value,
        details,
        received_at,
        due_at,
    )
    assert row is not None  # INSERT ... RETURNING without ON CONFLICT returns its row or raises
    return _request(row)


async def get_request(
    conn: Conn,
    request_id: str,
    *,
    account_id: str | None,
    user_id: str | None = None,
    lock: bool = False,
) -> PrivacyRequest:
    """The request; `account_id` and `user_id`, when given, must match (tenant isolation)."""
    suffix = " FOR UPDATE" if lock else ""
    row = await conn.fetchrow(
        f"""SELECT {_REQUEST_COLS} FROM privacy_requests
            WHERE id = $1 AND ($2::text IS NULL OR account_id = $2)
              AND ($3::text IS NULL OR user_id = $3){suffix}""",
        request_id,
        account_id,
        user_id,
    )
    if row is None:
        raise NotFound("no such privacy request")
    return _request(row)


async def list_requests(
    conn: Conn,
    account_id: str,
    *,
    user_id: str | None,
    after: tuple[datetime, str] | None,
    limit: int,
) -> list[PrivacyRequest]:
    """Oldest first; `user_id` narrows to one user's requests."""
    rows = await conn.fetch(
        f"""SELECT {_REQUEST_COLS} FROM privacy_requests
            WHERE account_id = $1 AND ($2::text IS NULL OR user_id = $2)
              AND ($3::timestamptz IS NULL OR (received_at, id) > ($3, $4))
            ORDER BY received_at, id LIMIT $5""",
        account_id,
        user_id,
        after[0] if after else None,
        after[1] if after else None,
        limit,
    )
    return [_request(r) for r in rows]


async def list_open(
    conn: Conn,
    *,
    due_before: datetime | None,
    after: tuple[datetime, str] | None,
    limit: int,
) -> list[PrivacyRequest]:
    """Open requests of every account, nearest deadline first; `due_before` keeps overdue ones."""
    rows = await conn.fetch(
        f"""SELECT {_REQUEST_COLS} FROM privacy_requests
            WHERE status = ANY($1) AND ($2::timestamptz IS NULL OR due_at < $2)
              AND ($3::timestamptz IS NULL OR (due_at, id) > ($3, $4))
            ORDER BY due_at, id LIMIT $5""",
        _OPEN,
        due_before,
        after[0] if after else None,
        after[1] if after else None,
        limit,
    )
    return [_request(r) for r in rows]


async def set_status(
    conn: Conn,
    request_id: str,
    *,
    status: RequestStatus,
    completed_at: datetime | None,
    resolution: str | None,
) -> PrivacyRequest:
    row = await conn.fetchrow(
        f"""UPDATE privacy_requests
            SET status = $2, completed_at = $3, resolution = coalesce($4, resolution)
            WHERE id = $1 RETURNING {_REQUEST_COLS}""",
        request_id,
        status.value,
        completed_at,
        resolution,
    )
    if row is None:
        raise NotFound("no such privacy request")
    return _request(row)


# -- erasure (D2): scrub what outlives the users row --------------------------------------


@dataclass(frozen=True)
class Subject:
    """The user a request is about, as erasure and restriction need them."""

    id: str
    role: CustomerRole
    email: str


async def lock_user(conn: Conn, user_id: str, account_id: str) -> Subject | None:
    """The account's user, row-locked so a concurrent role change waits; None when gone."""
    row = await conn.fetchrow(
        "SELECT id, role, email FROM users WHERE id = $1 AND account_id = $2 FOR UPDATE",
        user_id,
        account_id,
    )
    return Subject(row["id"], CustomerRole(row["role"]), row["email"]) if row else None


def _count(status: str) -> int:
    return int(status.split()[-1])


async def scrub_security_log(conn: Conn, user_id: str, email: str | None) -> int:
    """Keep the fact of each attempt (S2: time and an opaque user id), drop who and where."""
    status = await conn.execute(
        """UPDATE security_log SET email = NULL, source_address = NULL, user_agent = NULL
           WHERE user_id = $1 OR ($2::text IS NOT NULL AND lower(email) = lower($2))""",
        user_id,
        email,
    )
    return _count(status)


async def scrub_access_log(conn: Conn, principal_id: str) -> int:
    status = await conn.execute(
        """UPDATE access_log SET source_address = NULL, user_agent = NULL
           WHERE principal_id = $1 AND (source_address IS NOT NULL OR user_agent IS NOT NULL)""",
        principal_id,
    )
    return _count(status)


async def delete_api_keys_created_by(conn: Conn, account_id: str, user_id: str) -> int:
    status = await conn.execute(
        "DELETE FROM api_keys WHERE account_id = $1 AND created_by = $2", account_id, user_id
    )
    return _count(status)


async def delete_stored_replies(conn: Conn, user_id: str, email: str | None) -> int:
    """Idempotency replies kept for 24 hours: the user's own, and any that show their e-mail."""
    needle = json.dumps(email)[1:-1].encode() if email else None  # as json_response wrote it
    status = await conn.execute(
        """DELETE FROM idempotency_keys
           WHERE scope = $1 OR ($2::bytea IS NOT NULL AND position($2::bytea IN body) > 0)""",
        user_id,
        needle,
    )
    return _count(status)


async def clear_request_details(conn: Conn, user_id: str) -> int:
    """The free text of the user's requests goes; kind, status and dates stay as evidence (D3)."""
    status = await conn.execute(
        "UPDATE privacy_requests SET details = '' WHERE user_id = $1 AND details <> ''", user_id
    )
    return _count(status)
