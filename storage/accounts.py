"""Plain SQL for accounts, users, API keys and login sessions."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import asyncpg

from telephony.domain.errors import EmailTaken, NotFound

_ACCOUNT_COLS = (
    "id, name, postal_address, vat_number, data_region, recording_retention_days,"
    " processing_restricted, webhook_url, terms_accepted_at, created_at, terminated_at"
)
_USER_COLS = (
    "id, account_id, kind, role, email, name, postal_address, vat_number, password_hash,"
    " age_confirmed_at, created_at, updated_at"
)
_KEY_COLS = (
    "id, account_id, name, scopes, token_prefix, created_by, created_at, last_used_at, revoked_at"
)


@dataclass(frozen=True)
class Account:
    id: str
    name: str
    postal_address: str
    vat_number: str | None
    data_region: str
    recording_retention_days: int | None
    processing_restricted: bool
    webhook_url: str | None
    terms_accepted_at: datetime
    created_at: datetime
    terminated_at: datetime | None


@dataclass(frozen=True)
class User:
    id: str
    account_id: str | None
    kind: str
    role: str
    email: str
    name: str
    postal_address: str | None
    vat_number: str | None
    password_hash: str | None
    age_confirmed_at: datetime | None
    created_at: datetime
    updated_at: datetime


@dataclass(frozen=True)
class ApiKey:
    id: str
    account_id: str
    name: str
    scopes: list[str]
    token_prefix: str
    created_by: str | None
    created_at: datetime
    last_used_at: datetime | None
    revoked_at: datetime | None


@dataclass(frozen=True)
class SessionPrincipalRow:
    """A live session joined with its user: what authentication needs in one query."""

    session_id: str
    expires_at: datetime
    user: User


# -- accounts ------------------------------------------------------------


async def insert_account(
    conn: asyncpg.Connection,
    *,
    id: str,
    name: str,
    postal_address: str,
    vat_number: str | None,
    data_region: str,
    now: datetime,
) -> Account:
    row = await conn.fetchrow(
        f"""INSERT INTO accounts (id, name, postal_address, vat_number, data_region,
                                  terms_accepted_at, created_at)
            VALUES ($1, $2, $3, $4, $5, $6, $6) RETURNING {_ACCOUNT_COLS}""",
        id,
        name,
        postal_address,
        vat_number,
        data_region,
        now,
    )
    return Account(**row)


async def get_account(conn: asyncpg.Connection, account_id: str, *, lock: bool = False) -> Account:
    suffix = " FOR UPDATE" if lock else ""
    row = await conn.fetchrow(
        f"SELECT {_ACCOUNT_COLS} FROM accounts WHERE id = $1{suffix}", account_id
    )
    if row is None:
        raise NotFound("no such account")
    return Account(**row)


async def update_account(conn: asyncpg.Connection, account_id: str, changes: dict) -> Account:
    allowed = {"name", "recording_retention_days", "processing_restricted", "webhook_url"}
    assert set(changes) <= allowed, "caller validated the fields"
    if not changes:
        return await get_account(conn, account_id)
    names = sorted(changes)
    sets = ", ".join(f"{n} = ${i}" for i, n in enumerate(names, start=2))
    row = await conn.fetchrow(
        f"UPDATE accounts SET {sets} WHERE id = $1 RETURNING {_ACCOUNT_COLS}",
        account_id,
        *(changes[n] for n in names),
    )
    if row is None:
        raise NotFound("no such account")
    return Account(**row)


# -- users ---------------------------------------------------------------


async def insert_user(
    conn: asyncpg.Connection,
    *,
    id: str,
    account_id: str | None,
    kind: str,
    role: str,
    email: str,
    name: str,
    password_hash: str | None,
    now: datetime,
    postal_address: str | None = None,
    vat_number: str | None = None,
    age_confirmed: bool = False,
    invitation_hash: bytes | None = None,
    invitation_expires_at: datetime | None = None,
) -> User:
    try:
        row = await conn.fetchrow(
            f"""INSERT INTO users (id, account_id, kind, role, email, name, postal_address,
                                   vat_number, password_hash, age_confirmed_at, invitation_hash,
                                   invitation_expires_at, created_at, updated_at)
                VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $13)
                RETURNING {_USER_COLS}""",
            id,
            account_id,
            kind,
            role,
            email,
            name,
            postal_address,
            vat_number,
            password_hash,
            now if age_confirmed else None,
            invitation_hash,
            invitation_expires_at,
            now,
        )
    except asyncpg.UniqueViolationError as exc:
        raise EmailTaken("an account with this e-mail address exists") from exc
    return User(**row)


async def find_user_by_email(conn: asyncpg.Connection, email: str) -> User | None:
    row = await conn.fetchrow(
        f"SELECT {_USER_COLS} FROM users WHERE lower(email) = lower($1)", email
    )
    return User(**row) if row else None


async def get_user(
    conn: asyncpg.Connection, user_id: str, *, account_id: str | None = None
) -> User:
    """The user; with `account_id`, only when it belongs to that account (tenant isolation)."""
    row = await conn.fetchrow(
        f"""SELECT {_USER_COLS} FROM users
            WHERE id = $1 AND ($2::text IS NULL OR account_id = $2)""",
        user_id,
        account_id,
    )
    if row is None:
        raise NotFound("no such user")
    return User(**row)


async def list_users(
    conn: asyncpg.Connection, account_id: str, *, after: tuple[datetime, str] | None, limit: int
) -> list[User]:
    rows = await conn.fetch(
        f"""SELECT {_USER_COLS} FROM users
            WHERE account_id = $1 AND ($2::timestamptz IS NULL OR (created_at, id) > ($2, $3))
            ORDER BY created_at, id LIMIT $4""",
        account_id,
        after[0] if after else None,
        after[1] if after else None,
        limit,
    )
    return [User(**r) for r in rows]


async def update_user(conn: asyncpg.Connection, user_id: str, changes: dict, now: datetime) -> User:
    allowed = {"name", "email", "postal_address", "vat_number", "role", "password_hash"}
    assert set(changes) <= allowed, "caller validated the fields"
    names = sorted(changes)
    sets = ", ".join([f"{n} = ${i}" for i, n in enumerate(names, start=3)] + ["updated_at = $2"])
    try:
        row = await conn.fetchrow(
            f"UPDATE users SET {sets} WHERE id = $1 RETURNING {_USER_COLS}",
            user_id,
            now,
            *(changes[n] for n in names),
        )
    except asyncpg.UniqueViolationError as exc:
        raise EmailTaken("an account with this e-mail address exists") from exc
    if row is None:
        raise NotFound("no such user")
    return User(**row)


async def delete_user(conn: asyncpg.Connection, user_id: str) -> None:
    await conn.execute("DELETE FROM users WHERE id = $1", user_id)


async def count_owners(conn: asyncpg.Connection, account_id: str) -> int:
    # Locks the owners so two concurrent demotions cannot both see "two owners".
    rows = await conn.fetch(
        "SELECT id FROM users WHERE account_id = $1 AND role = 'owner' FOR UPDATE", account_id
    )
    return len(rows)


async def accept_invitation(
    conn: asyncpg.Connection, invitation_hash: bytes, password_hash: str, now: datetime
) -> User | None:
    row = await conn.fetchrow(
        f"""UPDATE users SET password_hash = $2, invitation_hash = NULL,
                   invitation_expires_at = NULL, updated_at = $3
            WHERE invitation_hash = $1 AND invitation_expires_at > $3
            RETURNING {_USER_COLS}""",
        invitation_hash,
        password_hash,
        now,
    )
    return User(**row) if row else None


# -- sessions ------------------------------------------------------------


async def insert_session(
    conn: asyncpg.Connection,
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


async def find_session(
    conn: asyncpg.Connection, token_hash: bytes, now: datetime
) -> SessionPrincipalRow | None:
    row = await conn.fetchrow(
        f"""SELECT s.id AS session_id, s.expires_at,
                   {", ".join("u." + c.strip() for c in _USER_COLS.split(","))}
            FROM sessions s JOIN users u ON u.id = s.user_id
            WHERE s.token_hash = $1 AND s.revoked_at IS NULL AND s.expires_at > $2""",
        token_hash,
        now,
    )
    if row is None:
        return None
    data = dict(row.items())
    session_id = data.pop("session_id")
    expires_at = data.pop("expires_at")
    return SessionPrincipalRow(session_id, expires_at, User(**data))


async def revoke_session(conn: asyncpg.Connection, session_id: str, now: datetime) -> None:
    await conn.execute(
        "UPDATE sessions SET revoked_at = $2 WHERE id = $1 AND revoked_at IS NULL", session_id, now
    )


# -- API keys ------------------------------------------------------------


async def insert_api_key(
    conn: asyncpg.Connection,
    *,
    id: str,
    account_id: str,
    name: str,
    scopes: list[str],
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
        scopes,
        token_hash,
        token_prefix,
        created_by,
        now,
    )
    return ApiKey(**row)


async def find_api_key_by_hash(conn: asyncpg.Connection, token_hash: bytes) -> ApiKey | None:
    row = await conn.fetchrow(
        f"SELECT {_KEY_COLS} FROM api_keys WHERE token_hash = $1 AND revoked_at IS NULL",
        token_hash,
    )
    return ApiKey(**row) if row else None


async def list_api_keys(
    conn: asyncpg.Connection, account_id: str, *, after: tuple[datetime, str] | None, limit: int
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
    return [ApiKey(**r) for r in rows]


async def revoke_api_key(
    conn: asyncpg.Connection, key_id: str, account_id: str, now: datetime
) -> ApiKey:
    row = await conn.fetchrow(
        f"""UPDATE api_keys SET revoked_at = $3
            WHERE id = $1 AND account_id = $2 AND revoked_at IS NULL RETURNING {_KEY_COLS}""",
        key_id,
        account_id,
        now,
    )
    if row is None:
        raise NotFound("no such API key")
    return ApiKey(**row)


async def touch_api_key(conn: asyncpg.Connection, key_id: str, now: datetime) -> None:
    # At most once a minute: a hot key must not turn every request into a write.
    await conn.execute(
        """UPDATE api_keys SET last_used_at = $2
           WHERE id = $1
             AND (last_used_at IS NULL OR last_used_at < $2::timestamptz - interval '1 minute')""",
        key_id,
        now,
    )
