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
