"""What the commands share: the database (configured, or the embedded cluster) and errors."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import asyncpg

from storage.db import create_pool, ensure_database
from storage.migrate import apply_pending
from storage.pgcluster import ClusterError
from telephony.settings import Settings
from telephony.usecases.backups import embedded_cluster


class CliError(Exception):
    """A failure the user can act on; printed without a traceback, exit status 1."""


@contextlib.asynccontextmanager
async def database(settings: Settings, *, own_cluster: bool = False) -> AsyncIterator[Settings]:
    """Settings with a database URL: the configured server, or the embedded cluster.

    The embedded cluster is started when not running. It is stopped on exit
    when this call started it, or always with `own_cluster` (the server owns
    it, including one a killed server left running). It archives its WAL to the backup
    location (S8, storage/backups.py).
    """
    if settings.database_url is not None:
        yield settings
        return
    cluster = embedded_cluster(settings.data_dir, settings.blob_url)
    try:
        started = await asyncio.to_thread(cluster.ensure_running)
        await ensure_database(cluster.dsn())
    except ClusterError as exc:
        raise CliError(str(exc)) from exc
    try:
        yield settings.replace(database_url=cluster.dsn())
    finally:
        if started or own_cluster:
            await asyncio.to_thread(cluster.stop)


async def migrate(settings: Settings) -> list[str]:
    assert settings.database_url is not None
    pool = await create_pool(settings.database_url, min_size=1, max_size=1)
    try:
        async with pool.acquire() as conn:
            return await apply_pending(conn)
    finally:
        await pool.close()


@contextlib.asynccontextmanager
async def migrated_pool(settings: Settings, max_size: int = 2) -> AsyncIterator[asyncpg.Pool]:
    """A migrated database's pool, the embedded cluster started when needed."""
    async with database(settings) as ready:
        assert ready.database_url is not None
        await migrate(ready)
        pool = await create_pool(ready.database_url, max_size=max_size)
        try:
            yield pool
        finally:
            await pool.close()
