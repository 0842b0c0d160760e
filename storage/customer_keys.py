"""Plain SQL for customer-held keys: an account's public keys, at most one active.

A deleted key keeps its row (`deleted_at`): recordings sealed to it will name it
(API.md "Customer-held keys").
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import asyncpg

from storage.db import Conn
from storage.keys.customer import CustomerKey
from telephony.domain.errors import Conflict, NotFound

_COLS = "id, account_id, algorithm, public_key, fingerprint, created_at, active"


@dataclass(frozen=True)
class StoredKey:
    id: str
    account_id: str
    key: CustomerKey
    fingerprint: str
    created_at: datetime
    active: bool


def _stored(row: asyncpg.Record) -> StoredKey:
    return StoredKey(
        id=row["id"],
        account_id=row["account_id"],
        key=CustomerKey(row["algorithm"], bytes(row["public_key"])),
        fingerprint=row["fingerprint"],
        created_at=row["created_at"],
        active=row["active"],
    )


async def insert(
    conn: Conn, *, id: str, account_id: str, key: CustomerKey, now: datetime
) -> StoredKey:
    try:
        row = await conn.fetchrow(
            f"""INSERT INTO customer_keys (id, account_id, algorithm, public_key, fingerprint,
                                           created_at)
                VALUES ($1, $2, $3, $4, $5, $6) RETURNING {_COLS}""",
            id,
            account_id,
            key.algorithm,
            key.public_bytes,
            key.fingerprint,
            now,
        )
    except asyncpg.UniqueViolationError:
        raise Conflict("this public key is registered already") from None
    assert row is not None  # RETURNING of an INSERT
    return _stored(row)


async def list_for(
    conn: Conn, account_id: str, after: tuple[datetime, str] | None, limit: int
) -> list[StoredKey]:
    rows = await conn.fetch(
        f"""SELECT {_COLS} FROM customer_keys
            WHERE account_id = $1 AND deleted_at IS NULL
              AND ($2::timestamptz IS NULL OR (created_at, id) > ($2, $3))
            ORDER BY created_at, id LIMIT $4""",
        account_id,
        after[0] if after else None,
        after[1] if after else "",
        limit,
    )
    return [_stored(r) for r in rows]


async def delete(conn: Conn, account_id: str, key_id: str, now: datetime) -> StoredKey:
    """Gone from the list and never used again; the row stays for what was sealed to it."""
    row = await conn.fetchrow(
        f"""UPDATE customer_keys SET deleted_at = $3, active = false
            WHERE id = $1 AND account_id = $2 AND deleted_at IS NULL RETURNING {_COLS}""",
        key_id,
        account_id,
        now,
    )
    if row is None:
        raise NotFound("no such encryption key")
    return _stored(row)


async def activate(conn: Conn, account_id: str, key_id: str, now: datetime) -> StoredKey:
    """Make `key_id` the account's one active key: new recordings are sealed to it.

    The account's row lock orders two activations, so the one-active index never
    sees both; the key stays active if it already was (activating twice is a no-op).
    """
    await conn.execute("SELECT 1 FROM accounts WHERE id = $1 FOR UPDATE", account_id)
    found = await conn.fetchrow(
        "SELECT active FROM customer_keys WHERE id = $1 AND account_id = $2 AND deleted_at IS NULL",
        key_id,
        account_id,
    )
    if found is None:
        raise NotFound("no such encryption key")
    await conn.execute(
        "UPDATE customer_keys SET active = false WHERE account_id = $1 AND active AND id <> $2",
        account_id,
        key_id,
    )
    row = await conn.fetchrow(
        f"""UPDATE customer_keys SET active = true,
                   activated_at = CASE WHEN active THEN activated_at ELSE $3 END
            WHERE id = $1 AND account_id = $2 RETURNING {_COLS}""",
        key_id,
        account_id,
        now,
    )
    assert row is not None  # found above, under the account's lock
    return _stored(row)


@dataclass(frozen=True)
class SealingMode:
    """How an account's new recordings are sealed: `key` is its active customer key;
    `required` says a customer key was ever activated, so none means refuse, never the
    service's key."""

    key: StoredKey | None
    required: bool


async def sealing_mode(conn: Conn, account_id: str) -> SealingMode:
    rows = await conn.fetch(
        f"""SELECT {_COLS} FROM customer_keys
            WHERE account_id = $1 AND activated_at IS NOT NULL ORDER BY active DESC LIMIT 1""",
        account_id,
    )
    if not rows:
        return SealingMode(None, required=False)
    key = _stored(rows[0])
    return SealingMode(key if key.active else None, required=True)


async def get_any(conn: Conn, key_id: str) -> StoredKey:
    """A key by id, deleted or not: what a recording sealed to it names."""
    row = await conn.fetchrow(f"SELECT {_COLS} FROM customer_keys WHERE id = $1", key_id)
    if row is None:
        raise NotFound("no such encryption key")
    return _stored(row)
