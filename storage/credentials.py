"""Plain SQL for bearer credentials: people's sign-in sessions and accounts' API keys.

Tokens are never stored, only their SHA-256 (storage/ids.py says why that
suffices for 256-bit random tokens); a lookup is by that hash.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

import asyncpg

from storage.accounts import USER_COLUMNS, User, user_of
from storage.db import Conn
from telephony.domain.errors import NotFound
from telephony.domain.roles import Scope

_KEY_COLS = (
    "id, account_id, name, scopes, token_prefix, created_by, created_at, last_used_at, revoked_at"
)


@dataclass(frozen=True)
class ApiKey:
    id: str
    account_id: str
    name: str
    scopes: list[Scope]
    token_prefix: str  # first characters, so an owner can tell keys apart
    created_by: str | None
    created_at: datetime
    last_used_at: datetime | None
    revoked_at: datetime | None


@dataclass(frozen=True)
class LiveSession:
    """A live session joined with its user: what authentication needs in one query."""

    session_id: str
    expires_at: datetime
    user: User


def _key(row: asyncpg.Record) -> ApiKey:
    data = dict(row.items())
    data["scopes"] = [Scope(s) for s in data["scopes"]]
    return ApiKey(**data)


# -- sessions ------------------------------------------------------------


async def insert_session(
    conn: Conn,
    *,
    id: str,
    user_id: str,
    token_hash: bytes,
    now: datetime,
    expires_at: datetime,
    source_address: str | None,
    user_agent: str | None,
) -> None:
    await conn.execute(
        """INSERT INTO sessions (id, user_id, token_hash, created_at, expires_at,
                                 source_address, user_agent)
           VALUES ($1, $2, $3, $4, $5, $6, $7)""",
        id,
        user_id,
        token_hash,
        now,
        expires_at,
        source_address,
        user_agent,
    )


async def find_session(conn: Conn, token_hash: bytes, now: datetime) -> LiveSession | None:
    row = await conn.fetchrow(
        f"""SELECT s.id AS session_id, s.expires_at, {", ".join("u." + c for c in USER_COLUMNS)}
            FROM sessions s JOIN users u ON u.id = s.user_id
            WHERE s.token_hash = $1 AND s.revoked_at IS NULL AND s.expires_at > $2""",
        token_hash,
        now,
    )
    if row is None:
        return None
    return LiveSession(row["session_id"], row["expires_at"], user_of(row))


async def revoke_session(conn: Conn, session_id: str, now: datetime) -> None:
    await conn.execute(
        "UPDATE sessions SET revoked_at = $2 WHERE id = $1 AND revoked_at IS NULL", session_id, now
    )


# -- API keys ------------------------------------------------------------


async def insert_api_key(
    conn: Conn,
    *,
    id: str,
    account_id: str,
    name: str,
    scopes: list[Scope],
    token_hash: bytes,
    token_prefix: str,
    created_by: str | None,
    now: datetime,
) -> ApiKey:
    row = await conn.fetchrow(
        f"""INSERT INTO api_keys (id, account_id, name, scopes, token_hash, token_prefix,
                                  created_by, created_at)
            VALUES ($1, $2, $3, $4, $5, $6, $7, $8) RETURNING {_KEY_COLS}""",
        id,
        account_id,
        name,
        [s.value for s in scopes],
        token_hash,
        token_prefix,
        created_by,
        now,
    )
    assert row is not None  # INSERT ... RETURNING without ON CONFLICT returns its row or raises
    return _key(row)


async def find_api_key_by_hash(conn: Conn, token_hash: bytes) -> ApiKey | None:
    row = await conn.fetchrow(
        f"SELECT {_KEY_COLS} FROM api_keys WHERE token_hash = $1 AND revoked_at IS NULL",
        token_hash,
    )
    return _key(row) if row else None


async def list_api_keys(
    conn: Conn, account_id: str, *, after: tuple[datetime, str] | None, limit: int
) -> list[ApiKey]:
    rows = await conn.fetch(
        f"""SELECT {_KEY_COLS} FROM api_keys
            WHERE account_id = $1 AND revoked_at IS NULL
              AND ($2::timestamptz IS NULL OR (created_at, id) > ($2, $3))
            ORDER BY created_at, id LIMIT $4""",
        account_id,
        after[0] if after else None,
        after[1] if after else None,
        limit,
    )
    return [_key(r) for r in rows]


async def revoke_api_key(conn: Conn, key_id: str, account_id: str, now: datetime) -> ApiKey:
    row = await conn.fetchrow(
        f"""UPDATE api_keys SET revoked_at = $3
            WHERE id = $1 AND account_id = $2 AND revoked_at IS NULL RETURNING {_KEY_COLS}""",
        key_id,
        account_id,
        now,
    )
    if row is None:
        raise NotFound("no such API key")
    return _key(row)


TOUCH_EVERY = timedelta(minutes=1)


async def touch_api_key(conn: Conn, key: ApiKey, now: datetime) -> None:
    """At most once a minute: a hot key must not turn every request into a write.

    The fetched `last_used_at` decides first, so a key used within the minute
    costs no round trip; the WHERE clause keeps concurrent requests to one write.
    """
    if key.last_used_at is not None and key.last_used_at >= now - TOUCH_EVERY:
        return
    await conn.execute(
        """UPDATE api_keys SET last_used_at = $2
           WHERE id = $1
             AND (last_used_at IS NULL OR last_used_at < $2::timestamptz - $3::interval)""",
        key.id,
        now,
        TOUCH_EVERY,
    )


# -- password resets -----------------------------------------------------------


async def insert_password_reset(
    conn: Conn, *, id: str, user_id: str, token_hash: bytes, now: datetime, expires_at: datetime
) -> None:
    await conn.execute(
        """INSERT INTO password_resets (id, user_id, token_hash, created_at, expires_at)
           VALUES ($1, $2, $3, $4, $5)""",
        id,
        user_id,
        token_hash,
        now,
        expires_at,
    )


async def use_password_reset(conn: Conn, token_hash: bytes, now: datetime) -> str | None:
    """Spend a live reset token once; its user's id, or None (unknown, used, expired).

    One UPDATE: two requests racing with the same token cannot both win.
    """
    user_id = await conn.fetchval(
        """UPDATE password_resets SET used_at = $2
           WHERE token_hash = $1 AND used_at IS NULL AND expires_at > $2
           RETURNING user_id""",
        token_hash,
        now,
    )
    return str(user_id) if user_id is not None else None


async def revoke_user_sessions(conn: Conn, user_id: str, now: datetime) -> int:
    """Every live session of the user ends (a password reset)."""
    status = await conn.execute(
        "UPDATE sessions SET revoked_at = $2 WHERE user_id = $1 AND revoked_at IS NULL",
        user_id,
        now,
    )
    return int(status.split()[-1])


async def purge_password_resets(conn: Conn, cutoff: datetime) -> int:
    """Reset links that died (used or expired) before `cutoff` (S3); how many went."""
    status = await conn.execute(
        "DELETE FROM password_resets WHERE coalesce(used_at, expires_at) < $1", cutoff
    )
    return int(status.split()[-1])


async def revoke_other_resets(conn: Conn, user_id: str, now: datetime) -> None:
    """Once a password is chosen, every other outstanding link of the user stops working."""
    await conn.execute(
        "UPDATE password_resets SET used_at = $2 WHERE user_id = $1 AND used_at IS NULL",
        user_id,
        now,
    )
