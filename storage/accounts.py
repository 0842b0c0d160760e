"""Plain SQL for accounts and their users (people: customers and staff)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime

import asyncpg

from storage.db import Conn
from telephony.domain.errors import EmailTaken, NotFound
from telephony.domain.roles import CustomerRole, StaffRole, UserKind

_ACCOUNT_COLS = (
    "id, name, postal_address, vat_number, data_region, recording_retention_days,"
    " processing_restricted, webhook_url, terms_accepted_at, created_at, terminated_at"
)
_USER_COLS = (
    "id, account_id, kind, role, email, name, postal_address, vat_number, password_hash,"
    " age_confirmed_at, created_at, updated_at, language, product_updates"
)
USER_COLUMNS = tuple(c.strip() for c in _USER_COLS.split(","))
ACCOUNT_FIELDS = frozenset(
    {"name", "recording_retention_days", "processing_restricted", "webhook_url"}
)
USER_FIELDS = frozenset(
    {
        "name",
        "email",
        "postal_address",
        "vat_number",
        "role",
        "password_hash",
        "language",
        "product_updates",
    }
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
    account_id: str | None  # None for staff
    kind: UserKind
    role: CustomerRole | StaffRole
    email: str
    name: str
    postal_address: str | None
    vat_number: str | None
    password_hash: str | None  # None until an invitation is accepted
    age_confirmed_at: datetime | None
    created_at: datetime
    updated_at: datetime
    language: str | None = None  # 'en' or 'pl'; None follows the browser
    product_updates: bool = True  # policy and security mail go regardless


def user_of(row: asyncpg.Record) -> User:
    """A users row (or the users columns of a join) as a User."""
    data = {c: row[c] for c in USER_COLUMNS}
    data["kind"] = kind = UserKind(data["kind"])
    data["role"] = (CustomerRole if kind is UserKind.CUSTOMER else StaffRole)(data["role"])
    return User(**data)


# -- accounts ------------------------------------------------------------


async def insert_account(
    conn: Conn,
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
    assert row is not None  # INSERT ... RETURNING without ON CONFLICT returns its row or raises
    return Account(**row)


async def get_account(conn: Conn, account_id: str, *, lock: bool = False) -> Account:
    suffix = " FOR UPDATE" if lock else ""
    row = await conn.fetchrow(
        f"SELECT {_ACCOUNT_COLS} FROM accounts WHERE id = $1{suffix}", account_id
    )
    if row is None:
        raise NotFound("no such account")
    return Account(**row)


async def update_account(conn: Conn, account_id: str, changes: Mapping[str, object]) -> Account:
    assert set(changes) <= ACCOUNT_FIELDS, "caller validated the fields"
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
    conn: Conn,
    *,
    id: str,
    account_id: str | None,
    kind: UserKind,
    role: CustomerRole | StaffRole,
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
            kind.value,
            role.value,
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
    assert row is not None  # INSERT ... RETURNING without ON CONFLICT returns its row or raises
    return user_of(row)


async def find_user_by_email(conn: Conn, email: str) -> User | None:
    row = await conn.fetchrow(
        f"SELECT {_USER_COLS} FROM users WHERE lower(email) = lower($1)", email
    )
    return user_of(row) if row else None


async def get_user(conn: Conn, user_id: str, *, account_id: str | None = None) -> User:
    """The user; with `account_id`, only when it belongs to that account (tenant isolation)."""
    row = await conn.fetchrow(
        f"""SELECT {_USER_COLS} FROM users
            WHERE id = $1 AND ($2::text IS NULL OR account_id = $2)""",
        user_id,
        account_id,
    )
    if row is None:
        raise NotFound("no such user")
    return user_of(row)


async def list_users(
    conn: Conn, account_id: str, *, after: tuple[datetime, str] | None, limit: int
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
    return [user_of(r) for r in rows]


async def update_user(
    conn: Conn, user_id: str, changes: Mapping[str, object], now: datetime
) -> User:
    assert set(changes) <= USER_FIELDS, "caller validated the fields"
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
    return user_of(row)


async def delete_user(conn: Conn, user_id: str) -> None:
    await conn.execute("DELETE FROM users WHERE id = $1", user_id)


async def count_owners(conn: Conn, account_id: str) -> int:
    # Locks the owners so two concurrent demotions cannot both see "two owners".
    rows = await conn.fetch(
        "SELECT id FROM users WHERE account_id = $1 AND role = 'owner' FOR UPDATE", account_id
    )
    return len(rows)


async def accept_invitation(
    conn: Conn, invitation_hash: bytes, password_hash: str, now: datetime
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
    return user_of(row) if row else None
