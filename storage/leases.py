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

import asyncio
import hashlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

import asyncpg

from telephony.domain.errors import NotFound, Unavailable

log = logging.getLogger(__name__)

# What a periodic pass may meet and live through: the database or a store gone for a while.
PASS_FAILURES: tuple[type[BaseException], ...] = (
    OSError,
    NotFound,
    Unavailable,
    asyncpg.PostgresError,
    asyncpg.InterfaceError,
)

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


async def every(
    pool: asyncpg.Pool, job: str, interval_s: float, run: Callable[[], Awaitable[object]]
) -> None:
    """Run `run` now and every `interval_s`, on whichever node holds `job` (the others skip
    their turn); a failed pass is logged and tried again next time. Never returns."""
    while True:
        try:
            async with only_one(pool, job) as mine:
                if mine:
                    await run()
        except PASS_FAILURES:
            log.exception("a periodic pass failed; it runs again next time", extra={"job": job})
        await asyncio.sleep(interval_s)
