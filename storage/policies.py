"""Plain SQL for published versions of the privacy policy (P1); the newest is in force."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import asyncpg

from storage.db import Conn
from telephony.domain.errors import Conflict

_COLS = "version, published_at, material, body"


@dataclass(frozen=True)
class PolicyVersion:
    version: str
    published_at: datetime
    material: bool
    body: str


async def insert(conn: Conn, *, version: str, body: str, material: bool, now: datetime) -> None:
    try:
        await conn.execute(
            """INSERT INTO policy_versions (version, published_at, material, body)
               VALUES ($1, $2, $3, $4)""",
            version,
            now,
            material,
            body,
        )
    except asyncpg.UniqueViolationError as exc:
        raise Conflict(f"policy version {version} is already published") from exc


async def list_versions(conn: Conn) -> list[PolicyVersion]:
    """Newest first; the first is the policy in force."""
    rows = await conn.fetch(
        f"SELECT {_COLS} FROM policy_versions ORDER BY published_at DESC, version DESC"
    )
    return [PolicyVersion(**r) for r in rows]


async def find(conn: Conn, version: str) -> PolicyVersion | None:
    row = await conn.fetchrow(f"SELECT {_COLS} FROM policy_versions WHERE version = $1", version)
    return PolicyVersion(**row) if row else None
