"""Plain SQL for SIP trunks: an account's SBC or PBX, known by its digest username."""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

import asyncpg

from storage.db import Conn
from telephony.domain.errors import NotFound

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
_COLS = "id, account_id, name, username, allowed_sources, numbers, digest_algorithms, created_at"


@dataclass(frozen=True)
class Trunk:
    id: str
    account_id: str
    name: str
    username: str
    allowed_sources: tuple[Network, ...]
    numbers: tuple[str, ...]
    digest_algorithms: tuple[str, ...]
    created_at: datetime

    def allows(self, address: str) -> bool:
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            return False
        return any(ip in network for network in self.allowed_sources)


def _trunk(row: asyncpg.Record) -> Trunk:
    return Trunk(
        id=row["id"],
        account_id=row["account_id"],
        name=row["name"],
        username=row["username"],
        allowed_sources=tuple(row["allowed_sources"]),
        numbers=tuple(row["numbers"]),
        digest_algorithms=tuple(row["digest_algorithms"]),
        created_at=row["created_at"],
    )


async def insert(
    conn: Conn,
    *,
    id: str,
    account_id: str,
    name: str,
    username: str,
    wrapped_password: bytes,
    allowed_sources: Sequence[Network],
    numbers: Sequence[str],
    digest_algorithms: Sequence[str],
    now: datetime,
) -> Trunk:
    row = await conn.fetchrow(
        f"""INSERT INTO sip_trunks (id, account_id, name, username, wrapped_password,
                                    allowed_sources, numbers, digest_algorithms, created_at)
            VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) RETURNING {_COLS}""",
        id,
        account_id,
        name,
        username,
        wrapped_password,
        list(allowed_sources),
        list(numbers),
        list(digest_algorithms),
        now,
    )
    assert row is not None  # RETURNING of an INSERT
    return _trunk(row)


async def list_for(
    conn: Conn, account_id: str, after: tuple[datetime, str] | None, limit: int
) -> list[Trunk]:
    rows = await conn.fetch(
        f"""SELECT {_COLS} FROM sip_trunks
            WHERE account_id = $1 AND ($2::timestamptz IS NULL OR (created_at, id) > ($2, $3))
            ORDER BY created_at, id LIMIT $4""",
        account_id,
        after[0] if after else None,
        after[1] if after else "",
        limit,
    )
    return [_trunk(r) for r in rows]


async def by_username(conn: Conn, username: str) -> tuple[Trunk, bytes] | None:
    """The trunk and its wrapped password, for a digest check."""
    row = await conn.fetchrow(
        f"SELECT {_COLS}, wrapped_password FROM sip_trunks WHERE username = $1", username
    )
    return (_trunk(row), bytes(row["wrapped_password"])) if row else None


async def algorithms_for(conn: Conn, address: str) -> list[str] | None:
    """The digest algorithms every trunk allowing `address` accepts, in the first one's
    order; None when no trunk allows it (its INVITE will be refused anyway)."""
    rows = await conn.fetch(
        "SELECT digest_algorithms FROM sip_trunks WHERE $1::inet <<= ANY (allowed_sources)"
        " ORDER BY created_at, id",
        address,
    )
    if not rows:
        return None
    common = [
        a for a in rows[0]["digest_algorithms"] if all(a in r["digest_algorithms"] for r in rows)
    ]
    return common or list(rows[0]["digest_algorithms"])


async def delete(conn: Conn, account_id: str, trunk_id: str) -> Trunk:
    row = await conn.fetchrow(
        f"DELETE FROM sip_trunks WHERE id = $1 AND account_id = $2 RETURNING {_COLS}",
        trunk_id,
        account_id,
    )
    if row is None:
        raise NotFound("no such SIP trunk")
    return _trunk(row)
