"""Plain SQL for outgoing e-mail: one row per message to one person, on the outbox engine.

The message names its person, not an address: the address, name and language
are read when it is claimed (a rectified address is used; an erased person's
messages go with the row). A secret it carries (an invitation or reset token)
is sealed by the caller and wiped here once the message is delivered or given
up, so a token never outlives its mail at rest. Claims are leases, as for the
staff outbox (`storage/outbox.py`).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from storage.db import Conn

CHANNEL = "mail_messages"
_COLS = (
    "id, created_at, kind, user_id, sealed_recipient, params, sealed_secret, attempts,"
    " next_attempt_at,"
    " delivered_at, given_up_at, last_error"
)


@dataclass(frozen=True)
class MailMessage:
    id: str
    created_at: datetime
    kind: str
    user_id: str | None  # None: the person was erased; sealed_recipient names them
    sealed_recipient: bytes | None
    params: dict[str, Any]
    sealed_secret: bytes | None
    attempts: int
    next_attempt_at: datetime
    delivered_at: datetime | None
    given_up_at: datetime | None
    last_error: str | None
    # The person, as of the claim (None when they were erased).
    email: str | None = None
    name: str | None = None
    language: str | None = None
    product_updates: bool = True


async def enqueue(
    conn: Conn,
    *,
    id: str,
    kind: str,
    user_id: str | None,
    params: dict[str, Any],
    sealed_secret: bytes | None,
    now: datetime,
    sealed_recipient: bytes | None = None,
) -> None:
    await conn.execute(
        """INSERT INTO mail_messages (id, created_at, kind, user_id, params, sealed_secret,
                                      sealed_recipient, next_attempt_at)
           VALUES ($1, $2, $3, $4, $5, $6, $7, $2)""",
        id,
        now,
        kind,
        user_id,
        params,
        sealed_secret,
        sealed_recipient,
    )
    await conn.execute("SELECT pg_notify($1, '')", CHANNEL)


async def enqueue_to_everyone(
    conn: Conn,
    *,
    id_prefix: str,
    kind: str,
    params: dict[str, Any],
    now: datetime,
    only_wanting_news: bool = False,
) -> int:
    """One message to every person who can sign in (policy announcements, P1); how many.

    One statement however many people there are; ids are the prefix and the user's id,
    so publishing the same version twice cannot mail anyone twice.
    """
    status = await conn.execute(
        """INSERT INTO mail_messages (id, created_at, kind, user_id, params, next_attempt_at)
           SELECT $1 || u.id, $2, $3, u.id, $4, $2 FROM users u
           WHERE u.password_hash IS NOT NULL AND (NOT $5 OR u.product_updates)
           ON CONFLICT (id) DO NOTHING""",
        id_prefix,
        now,
        kind,
        params,
        only_wanting_news,
    )
    await conn.execute("SELECT pg_notify($1, '')", CHANNEL)
    return int(status.split()[-1])


async def claim_due(
    conn: Conn, now: datetime, lease_until: datetime, *, limit: int
) -> list[MailMessage]:
    """Lease up to `limit` due messages, oldest first, with their person's address."""
    # Picked once (MATERIALIZED), as storage/outbox.py's claim: a rescanned subquery with
    # SKIP LOCKED can claim more than `limit`.
    rows = await conn.fetch(
        f"""WITH due AS MATERIALIZED (
                SELECT id FROM mail_messages
                WHERE delivered_at IS NULL AND given_up_at IS NULL AND next_attempt_at <= $1
                ORDER BY next_attempt_at, id LIMIT $3 FOR UPDATE SKIP LOCKED
            )
            UPDATE mail_messages m SET next_attempt_at = $2
            FROM due
            LEFT JOIN mail_messages j ON j.id = due.id
            LEFT JOIN users u ON u.id = j.user_id
            WHERE m.id = due.id
            RETURNING {", ".join("m." + c.strip() for c in _COLS.split(","))},
                      u.email, u.name, u.language, coalesce(u.product_updates, false)
                      AS product_updates""",
        now,
        lease_until,
        limit,
    )
    return sorted((MailMessage(**r) for r in rows), key=lambda m: (m.created_at, m.id))


async def mark_delivered(conn: Conn, message: MailMessage, now: datetime) -> bool:
    status = await conn.execute(
        """UPDATE mail_messages SET delivered_at = $3, attempts = attempts + 1,
                  last_error = NULL, sealed_secret = NULL, sealed_recipient = NULL
           WHERE id = $1 AND attempts = $2 AND delivered_at IS NULL AND given_up_at IS NULL""",
        message.id,
        message.attempts,
        now,
    )
    return status.endswith(" 1")


async def mark_failed(
    conn: Conn,
    message: MailMessage,
    *,
    error: str,
    next_attempt_at: datetime | None,
    now: datetime,
) -> bool:
    """A failed attempt; `next_attempt_at=None` gives up for good and wipes the secret."""
    status = await conn.execute(
        """UPDATE mail_messages
           SET attempts = attempts + 1, last_error = $3,
               next_attempt_at = coalesce($4::timestamptz, next_attempt_at),
               given_up_at = CASE WHEN $4::timestamptz IS NULL THEN $5::timestamptz END,
               sealed_secret = CASE WHEN $4::timestamptz IS NULL THEN NULL
                                    ELSE sealed_secret END,
               sealed_recipient = CASE WHEN $4::timestamptz IS NULL THEN NULL
                                       ELSE sealed_recipient END
           WHERE id = $1 AND attempts = $2 AND delivered_at IS NULL AND given_up_at IS NULL""",
        message.id,
        message.attempts,
        error[:500],
        next_attempt_at,
        now,
    )
    return status.endswith(" 1")


async def list_for_user(conn: Conn, user_id: str) -> list[MailMessage]:
    rows = await conn.fetch(
        f"SELECT {_COLS} FROM mail_messages WHERE user_id = $1 ORDER BY created_at, id", user_id
    )
    return [MailMessage(**r) for r in rows]


async def count_pending(conn: Conn) -> int:
    return int(
        await conn.fetchval(
            "SELECT count(*) FROM mail_messages WHERE delivered_at IS NULL AND given_up_at IS NULL"
        )
    )


async def purge_delivered(conn: Conn, before: datetime) -> int:
    """Sent or abandoned messages older than the log retention (S3)."""
    status = await conn.execute(
        """DELETE FROM mail_messages
           WHERE coalesce(delivered_at, given_up_at) < $1""",
        before,
    )
    return int(status.split()[-1])
