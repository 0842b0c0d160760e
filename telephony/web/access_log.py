"""The HTTP access log (S3): entries queued by the request middleware, written in batches.

Off the request path: a request only puts its entry on a bounded queue (a
full queue drops the entry and counts it); a background writer copies
batches into PostgreSQL. Entries name the route template, never the raw
path or query, so no id or token reaches the log.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

import asyncpg

from storage import securitylog
from storage.securitylog import AccessEntry

log = logging.getLogger(__name__)

ACCESS_BATCH = 500
ACCESS_FLUSH_S = 1.0


async def access_log_writer(pool: asyncpg.Pool, queue: asyncio.Queue[AccessEntry]) -> None:
    """Drain the queue into PostgreSQL in batches, until cancelled.

    Entries already taken off the queue are written even when the task is
    cancelled at shutdown; what is still queued is left to `flush_access_log`.
    """
    while True:
        batch: list[AccessEntry] = []
        try:
            await _collect(queue, batch)
        finally:
            if batch:
                await _write_to_end(pool, batch)


async def _collect(queue: asyncio.Queue[AccessEntry], batch: list[AccessEntry]) -> None:
    """Append the next entry, then whatever arrives within ACCESS_FLUSH_S, to `batch`."""
    batch.append(await queue.get())
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(ACCESS_FLUSH_S):
            while len(batch) < ACCESS_BATCH:
                batch.append(await queue.get())


async def _write_to_end(pool: asyncpg.Pool, batch: list[AccessEntry]) -> None:
    """Write `batch`; a cancellation meanwhile waits for the write, then propagates."""
    write = asyncio.ensure_future(_write_logged(pool, batch))
    try:
        await asyncio.shield(write)
    except asyncio.CancelledError:
        await write
        raise


async def _write_logged(pool: asyncpg.Pool, batch: list[AccessEntry]) -> None:
    try:
        await _write(pool, batch)
    except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError):
        # Never take the writer down: the next batch may well succeed.
        log.exception("access log batch lost", extra={"entries": len(batch)})


async def _write(pool: asyncpg.Pool, batch: list[AccessEntry]) -> None:
    async with pool.acquire() as conn:
        await securitylog.write_access_entries(conn, batch)


async def flush_access_log(pool: asyncpg.Pool, queue: asyncio.Queue[AccessEntry]) -> None:
    """Write whatever is queued (shutdown, and tests that read the table)."""
    batch: list[AccessEntry] = []
    while not queue.empty():
        batch.append(queue.get_nowait())
    if batch:
        await _write(pool, batch)
