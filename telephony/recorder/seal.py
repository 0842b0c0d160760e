"""The shared seal turn: what every writer of a node shares (one clock, one statement, one hop).

Why shared: each writer sealing on its own timer paid a database round trip,
a pool acquire and a thread hop per chunk, about 2 ms of CPU; with 200
recordings that was half a core. Here the writers wake on a shared clock, a
quarter of them a tick (SEAL_GROUPS), and the chunks they seal in that turn
go to PostgreSQL as one statement and to the spool as one thread hop. Each
writer still awaits its own chunk's verdict, so the order per recording
(row, then seal, then append) and the window rule are unchanged.

Parts of a recording's stream move from the spool to the blob store here
too (`ship`): a whole part is put, then removed from the spool.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Protocol

import asyncpg

from storage import chunks
from storage.blobs.protocol import BlobStore
from storage.blobs.spool import Part, Spool
from storage.chunks import ChunkRow
from storage.db import DATABASE_GONE, Conn
from telephony.recorder.batching import Batcher

log = logging.getLogger(__name__)

DATABASE_WAIT_S = 120.0  # then the turn fails as before (logged, frames past the bound dropped)

SEAL_INTERVAL_S = 0.8  # with the jitter allowance, a crash loses under one second
# The writers seal in this many groups, one a tick, each every SEAL_INTERVAL_S: all at once,
# 400 RTP legs held the loop up to 100 ms each turn, and their packets waited (p99 lag
# 300 ms, bench/rtp.py). A quarter at a time still makes one statement of many rows.
SEAL_GROUPS = 4


class Sealing(Protocol):
    def wake(self) -> None: ...


class ChunkSink:
    def __init__(self, pool: asyncpg.Pool, spool: Spool, store: BlobStore) -> None:
        self.pool = pool
        self.spool = spool
        self.store = store
        self._rows: Batcher[ChunkRow, bool] = Batcher(self._insert_rows)
        self._appends: Batcher[tuple[Part, bytes], int] = Batcher(spool.append_many)
        self._writers: dict[Sealing, int] = {}  # each writer's group, fixed while it lives
        self._joined = 0
        self._clock: asyncio.Task[None] | None = None

    async def record(self, row: ChunkRow) -> bool:
        """Insert the chunk's row if it lies inside a recorded segment; False if refused."""
        return await self._rows.submit(row)

    async def append(self, part: Part, record: bytes) -> int:
        """Append a sealed record to a spooled part; the offset it starts at in that part."""
        return await self._appends.submit((part, record))

    def stalls(self) -> dict[str, float]:
        """Seconds the seal turn's database batch and spool batch have been out: when a
        writer's queue overflows, this says which of the two held every writer up."""
        return {
            "database_wait_s": round(self._rows.waited_s(), 1),
            "spool_wait_s": round(self._appends.waited_s(), 1),
        }

    async def ship(self, part: Part, *, limit: int | None = None) -> None:
        """Move a whole part from the spool to the blob store (put, then remove; on the
        spool's filesystem the put is a second name for the same file).

        `limit`: ship only its first bytes (recovery, when a crash cut the last
        record short); none at all just removes it.
        """
        if limit is None:
            await self.store.put_file(part.key, self.spool.file_of(part))
        elif data := (await self.spool.read(part))[:limit]:
            await self.store.put(part.key, data)
        await self.spool.remove(part)

    def register(self, writer: Sealing) -> None:
        self._writers[writer] = self._joined % SEAL_GROUPS
        self._joined += 1
        if self._clock is None or self._clock.done():
            self._clock = asyncio.create_task(self._tick(), name="seal-clock")

    def unregister(self, writer: Sealing) -> None:
        self._writers.pop(writer, None)

    async def close(self) -> None:
        if self._clock is not None:
            self._clock.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._clock

    async def _tick(self) -> None:
        turn = 0
        while self._writers:
            await asyncio.sleep(SEAL_INTERVAL_S / SEAL_GROUPS)
            for writer, group in list(self._writers.items()):
                if group == turn:
                    writer.wake()
            turn = (turn + 1) % SEAL_GROUPS

    async def _insert_rows(self, rows: list[ChunkRow]) -> list[bool | BaseException]:
        """The batch's rows, waiting out a database that is gone (a restart, a fail-over).

        While it waits, every writer's seal turn waits with it and frames queue in
        memory up to the writer's bound (QUEUE_FRAMES, ten seconds); nothing is sealed
        or appended before its row is in, so nothing half-written is left behind.
        """
        pause = 0.2
        waited = 0.0
        while True:
            try:
                return await self._insert_rows_once(rows)
            except DATABASE_GONE as exc:
                if waited == 0.0:
                    log.warning(
                        "the database is unreachable; sealing waits for it",
                        extra={"error": type(exc).__name__, "rows": len(rows)},
                    )
                if waited >= DATABASE_WAIT_S:
                    raise
                await asyncio.sleep(pause)
                waited += pause
                pause = min(pause * 2, 2.0)

    async def _insert_rows_once(self, rows: list[ChunkRow]) -> list[bool | BaseException]:
        async with self.pool.acquire() as conn:
            try:
                kept = await chunks.insert_inside_window(conn, rows)
            except DATABASE_GONE:
                raise  # waited out by the caller, not blamed on a row
            except (asyncpg.PostgresError, asyncpg.InterfaceError):
                if len(rows) == 1:
                    raise
                # One bad row (say, a duplicate index) must not cost the others their chunk.
                log.exception("batched chunk insert failed; inserting one by one")
                return [await _insert_one(conn, row) for row in rows]
        return [(row.recording_id, row.index) in kept for row in rows]


async def _insert_one(conn: Conn, row: ChunkRow) -> bool | BaseException:
    try:
        return bool(await chunks.insert_inside_window(conn, [row]))
    except (asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
        return exc
