"""The account's audit trail, read by its owners and verified by operators."""

from __future__ import annotations

import asyncpg

from storage import audit
from telephony.domain.roles import CustomerPrincipal


async def list_trail(
    pool: asyncpg.Pool, owner: CustomerPrincipal, *, after_seq: int, limit: int
) -> list[audit.AuditEvent]:
    async with pool.acquire() as conn:
        return await audit.list_events(conn, owner.account_id, after_seq=after_seq, limit=limit)


async def verify(pool: asyncpg.Pool, account_id: str | None) -> list[audit.Break]:
    """Recompute every chain (or one account's); the first break of each broken chain."""
    async with pool.acquire() as conn:
        return await audit.verify(conn, account_id)
