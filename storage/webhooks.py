"""Plain SQL for customer webhooks: the event outbox written with each change, and the secret.

Delivery keeps each account's events in order (head of line): only the
oldest open event of an account is ever claimed, so event N+1 waits while N
is retried. A claim is a lease: it moves `next_attempt_at` past the attempt's
timeout and commits, so no connection is held while a customer's endpoint
answers, and an attempt cut short by a crash is retried when the lease ends.
The attempt's outcome is written only if the row is still as claimed.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from storage.db import Conn
from storage.ids import new_id
from telephony.domain.errors import NotFound

CHANNEL = "webhook_events"

STATUSES = ("pending", "delivered", "failed", "skipped")
_OPEN = "delivered_at IS NULL AND given_up_at IS NULL AND skipped_at IS NULL"
_STATUS_SQL = {
    "pending": _OPEN,
    "delivered": "delivered_at IS NOT NULL",
    "failed": "given_up_at IS NOT NULL",
    "skipped": "skipped_at IS NOT NULL",
}
_COLS = (
    "id, account_id, type, payload, created_at, attempts, next_attempt_at, delivered_at,"
    " given_up_at, skipped_at, last_error"
)
_W_COLS = ", ".join("w." + c.strip() for c in _COLS.split(","))
_ERROR_CHARS = 500


@dataclass(frozen=True)
class WebhookEvent:
    id: str  # the `webhook-id` header, stable across retries
    account_id: str
    type: str
    payload: dict[str, Any]  # {type, timestamp, data}: the delivered body
    created_at: datetime
    attempts: int
    next_attempt_at: datetime
    delivered_at: datetime | None
    given_up_at: datetime | None
    skipped_at: datetime | None
    last_error: str | None

    @property
    def status(self) -> str:
        if self.delivered_at is not None:
            return "delivered"
        if self.given_up_at is not None:
            return "failed"
        if self.skipped_at is not None:
            return "skipped"
        return "pending"


@dataclass(frozen=True)
class Endpoint:
    """Where and how an account's events go: both None until the owner configures them."""

    url: str | None
    wrapped_secret: bytes | None


NO_URL = "no webhook_url configured"


@dataclass(frozen=True)
class NewEvent:
    """An event for the customer, as a use case leaves it (API.md "Webhook deliveries")."""

    account_id: str
    type: str
    data: dict[str, Any]
    at: datetime


async def enqueue(conn: Conn, events: Sequence[NewEvent]) -> list[str]:
    """Write the events in the caller's transaction, in order: they exist exactly when the
    change does. One statement, which also wakes the delivery worker (NOTIFY, sent on commit).

    An account without a webhook_url gets the event already skipped: nobody can
    receive it, and the worker never has to pick it up only to close it.
    """
    if not events:
        return []
    ids = [new_id("msg") for _ in events]
    payloads = [
        json.dumps(
            {"type": e.type, "timestamp": e.at.isoformat().replace("+00:00", "Z"), "data": e.data}
        )
        for e in events
    ]
    await conn.execute(
        """WITH given AS (
               SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[],
                                    $5::timestamptz[]) WITH ORDINALITY
                        AS g(id, account_id, type, payload, at, ord)),
           added AS (
               INSERT INTO webhook_events (id, account_id, type, payload, created_at,
                                           next_attempt_at, skipped_at, last_error)
               SELECT g.id, a.id, g.type, g.payload::jsonb, g.at, g.at,
                      CASE WHEN a.webhook_url IS NULL THEN g.at END,
                      CASE WHEN a.webhook_url IS NULL THEN $6::text END
               FROM given g JOIN accounts a ON a.id = g.account_id
               ORDER BY g.ord
               RETURNING skipped_at IS NULL AS deliverable)
           SELECT CASE WHEN bool_or(deliverable) THEN pg_notify($7, '') END FROM added""",
        ids,
        [e.account_id for e in events],
        [e.type for e in events],
        payloads,
        [e.at for e in events],
        NO_URL,
        CHANNEL,
    )
    return ids


async def list_types(conn: Conn, account_id: str) -> list[str]:
    rows = await conn.fetch(
        "SELECT type FROM webhook_events WHERE account_id = $1 ORDER BY seq", account_id
    )
    return [r["type"] for r in rows]


# -- delivery --------------------------------------------------------------------------


async def claim_heads(
    conn: Conn,
    now: datetime,
    lease_until: datetime,
    *,
    limit: int,
    account_id: str | None = None,
) -> list[WebhookEvent]:
    """Lease the oldest open event of up to `limit` accounts (or of `account_id`) if it is due.

    SKIP LOCKED plus the re-checked `next_attempt_at` make concurrent claimers
    (several nodes) take disjoint rows; an account whose head is leased or
    waiting for a retry yields nothing, so its later events stay behind it.
    """
    # Two statements rather than `$4 IS NULL OR account_id = $4`: a generic plan of
    # that could not use the open-events index for the one-account case.
    scope = "" if account_id is None else "AND account_id = $4"
    args: list[Any] = [now, lease_until, limit] + ([] if account_id is None else [account_id])
    rows = await conn.fetch(
        f"""WITH heads AS (
                SELECT DISTINCT ON (account_id) seq FROM webhook_events
                WHERE {_OPEN} {scope}
                ORDER BY account_id, seq
            ), due AS MATERIALIZED (  -- picked once: see storage/outbox.py claim_due
                SELECT e.seq FROM webhook_events e JOIN heads USING (seq)
                WHERE e.next_attempt_at <= $1 AND e.delivered_at IS NULL
                  AND e.given_up_at IS NULL AND e.skipped_at IS NULL
                ORDER BY e.next_attempt_at, e.seq LIMIT $3
                FOR UPDATE OF e SKIP LOCKED
            )
            UPDATE webhook_events w SET next_attempt_at = $2
            FROM due WHERE w.seq = due.seq
            RETURNING {_W_COLS}""",
        *args,
    )
    return [WebhookEvent(**r) for r in rows]


async def find_endpoint(conn: Conn, account_id: str) -> Endpoint:
    row = await conn.fetchrow(
        """SELECT a.webhook_url, s.wrapped_secret FROM accounts a
           LEFT JOIN webhook_secrets s ON s.account_id = a.id WHERE a.id = $1""",
        account_id,
    )
    if row is None:
        return Endpoint(None, None)
    wrapped = row["wrapped_secret"]
    return Endpoint(row["webhook_url"], bytes(wrapped) if wrapped is not None else None)


async def mark_delivered(conn: Conn, event: WebhookEvent, now: datetime) -> WebhookEvent | None:
    """Record the successful attempt of `event` as claimed; None if the row moved on meanwhile."""
    row = await conn.fetchrow(
        f"""UPDATE webhook_events SET delivered_at = $3, attempts = attempts + 1, last_error = NULL
            WHERE id = $1 AND attempts = $2 AND {_OPEN} RETURNING {_COLS}""",
        event.id,
        event.attempts,
        now,
    )
    return WebhookEvent(**row) if row else None


async def mark_failed(
    conn: Conn,
    event: WebhookEvent,
    *,
    error: str,
    next_attempt_at: datetime | None,
    now: datetime,
) -> WebhookEvent | None:
    """Record a failed attempt; `next_attempt_at=None` gives up for good."""
    row = await conn.fetchrow(
        f"""UPDATE webhook_events
            SET attempts = attempts + 1, last_error = $3,
                next_attempt_at = coalesce($4::timestamptz, next_attempt_at),
                given_up_at = CASE WHEN $4::timestamptz IS NULL THEN $5::timestamptz END
            WHERE id = $1 AND attempts = $2 AND {_OPEN} RETURNING {_COLS}""",
        event.id,
        event.attempts,
        error[:_ERROR_CHARS],
        next_attempt_at,
        now,
    )
    return WebhookEvent(**row) if row else None


async def mark_skipped(
    conn: Conn, event: WebhookEvent, *, reason: str, now: datetime
) -> WebhookEvent | None:
    """Close an event nobody can receive, without an attempt (no webhook_url)."""
    row = await conn.fetchrow(
        f"""UPDATE webhook_events SET skipped_at = $3, last_error = $4
            WHERE id = $1 AND attempts = $2 AND {_OPEN} RETURNING {_COLS}""",
        event.id,
        event.attempts,
        now,
        reason[:_ERROR_CHARS],
    )
    return WebhookEvent(**row) if row else None


# -- the signing secret ----------------------------------------------------------------


async def put_secret(conn: Conn, account_id: str, wrapped_secret: bytes, now: datetime) -> bool:
    """Store the account's wrapped secret, replacing any; True when it replaced one."""
    rotated = await conn.fetchval(
        """INSERT INTO webhook_secrets (account_id, wrapped_secret, created_at)
           VALUES ($1, $2, $3)
           ON CONFLICT (account_id)
           DO UPDATE SET wrapped_secret = excluded.wrapped_secret, rotated_at = excluded.created_at
           RETURNING rotated_at IS NOT NULL""",
        account_id,
        wrapped_secret,
        now,
    )
    return bool(rotated)


# -- the account's view ----------------------------------------------------------------


async def list_events(
    conn: Conn,
    account_id: str,
    *,
    status: str | None,
    before: tuple[datetime, str] | None,
    limit: int,
) -> list[WebhookEvent]:
    """The account's events, newest first, optionally of one status (a key of STATUSES)."""
    where = _STATUS_SQL[status] if status is not None else "true"
    rows = await conn.fetch(
        f"""SELECT {_COLS} FROM webhook_events
            WHERE account_id = $1 AND {where}
              AND ($2::timestamptz IS NULL OR (created_at, id) < ($2, $3))
            ORDER BY created_at DESC, id DESC LIMIT $4""",
        account_id,
        before[0] if before else None,
        before[1] if before else None,
        limit,
    )
    return [WebhookEvent(**r) for r in rows]


async def get_event(conn: Conn, account_id: str, event_id: str) -> WebhookEvent:
    """The account's event; another account's id is NotFound exactly like a missing one."""
    row = await conn.fetchrow(
        f"SELECT {_COLS} FROM webhook_events WHERE id = $1 AND account_id = $2",
        event_id,
        account_id,
    )
    if row is None:
        raise NotFound("no such webhook event")
    return WebhookEvent(**row)
