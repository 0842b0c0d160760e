"""Work that runs once across every node: a PostgreSQL session advisory lock per job.

Several stateless nodes run the same background workers (retention, log
purge, backups). A periodic pass takes its job's lock with
`pg_try_advisory_lock` and skips its turn when another node holds it. The
lock lives as long as the connection: a node killed mid-pass loses it with
its socket, so no lease outlives its holder and nothing needs expiring.
Row-level work (webhook deliveries, mail) is claimed row by row instead
(`FOR UPDATE SKIP LOCKED`), where many nodes share the load.
"""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import asyncpg

_NAMESPACE = b"telephony-job:"


def lock_key(job: str) -> int:
    """The job's advisory lock: a stable signed 64-bit number from its name."""
    digest = hashlib.blake2b(_NAMESPACE + job.encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


@asynccontextmanager
async def only_one(pool: asyncpg.Pool, job: str) -> AsyncIterator[bool]:
    """True inside when this node holds `job` for the block; False: another node runs it.

    The lock is released before the connection returns to the pool (pool
    connections skip asyncpg's reset, see storage/db.py), and by the server
    if the connection dies first.
    """
    key = lock_key(job)
    async with pool.acquire() as conn:
        held = bool(await conn.fetchval("SELECT pg_try_advisory_lock($1)", key))
        try:
            yield held
        finally:
            if held:
                await conn.execute("SELECT pg_advisory_unlock($1)", key)
