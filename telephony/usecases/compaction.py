"""A finished recording in an object store becomes one object.

While a call runs, the media node ships its audio as parts of a few seconds
(the spool's crash bound and an object store's lack of append make that the
right shape for writing). Read back, an hour is hundreds of small objects,
each a request: against S3 or MinIO the request overhead, not the bytes,
bounds a download. So once a recording has ended and every part has arrived,
one leased worker copies the parts, in order and unchanged, into one object
(`audio-whole`, a multipart upload for long ones) that readers prefer. The
bytes are the same sealed records, so nothing is decrypted or re-encrypted,
and the chunk rows stay true. The parts go an hour later, so a download that
listed them before goes on reading them.

A recording deleted meanwhile loses its whole as well: the deletion's blob
removal runs after its commit, and the compaction checks for it after writing.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import asyncpg

from storage import chunks, leases, recordings
from storage.blobs.audio import StoredAudio, stored_audio
from storage.blobs.names import recording_prefix, whole_audio
from storage.blobs.protocol import BlobRange, BlobStore
from telephony.usecases.trail import transaction

log = logging.getLogger(__name__)

SETTLE_S = 60.0  # a recording's last parts have this long to arrive after it ended
PARTS_KEPT_S = 3600.0  # downloads that listed the parts before may read them this long
INTERVAL_S = 60.0
BATCH = 100
AT_ONCE = 4  # recordings copied at once: the store's requests, not this node's CPU, bound it
PASS_BUDGET_S = 45.0  # a pass stops taking new work after this (the interval is a minute)
PARTS_PER_READ = 16  # parts fetched at once while copying


@dataclass(frozen=True)
class CompactionResult:
    compacted: int
    parts_dropped: int


async def compaction_pass(pool: asyncpg.Pool, blobs: BlobStore, now: datetime) -> CompactionResult:
    """Compact what is due, AT_ONCE recordings at a time until none is left or the pass has
    run PASS_BUDGET_S, then drop the parts of what was compacted long enough ago."""
    started = time.monotonic()
    compacted, waiting = 0, set[str]()
    while time.monotonic() - started < PASS_BUDGET_S:
        async with pool.acquire() as conn:
            due = await recordings.due_for_compaction(
                conn, now - timedelta(seconds=SETTLE_S), BATCH + len(waiting)
            )
        due = [r for r in due if r not in waiting]  # parts still arriving: next pass
        if not due:
            break
        for start in range(0, len(due), AT_ONCE):
            group = due[start : start + AT_ONCE]
            done = await asyncio.gather(*(compact(pool, blobs, r, now) for r in group))
            compacted += sum(done)
            waiting.update(r for r, ok in zip(group, done, strict=True) if not ok)
    async with pool.acquire() as conn:
        old = await recordings.parts_due_for_dropping(
            conn, now - timedelta(seconds=PARTS_KEPT_S), BATCH
        )
    dropped = 0
    for recording_id in old:
        dropped += await _drop_parts(pool, blobs, recording_id, now)
    if compacted or dropped:
        log.info("compaction pass", extra={"compacted": compacted, "parts_dropped": dropped})
    return CompactionResult(compacted, dropped)


async def compact(pool: asyncpg.Pool, blobs: BlobStore, recording_id: str, now: datetime) -> bool:
    """Write the recording's whole; False when its parts are not all there yet (a node
    still shipping or recovering: the next pass tries again) or nothing needs doing."""
    async with pool.acquire() as conn:
        rows_end = await chunks.recorded_bytes(conn, recording_id)
    stored = await stored_audio(blobs, recording_id)
    if stored.size_bytes != rows_end:
        return False
    whole = whole_audio(recording_id)
    if len(stored.parts) > 1:  # one part (or the whole already): the reads are one object
        await blobs.put_stream(whole, _pieces(blobs, stored))
    async with transaction(pool) as tx:
        if not await recordings.lock_if_kept(tx.conn, recording_id):
            await blobs.delete_keys([whole])  # deleted while we copied: nothing may outlive it
            return False
        await recordings.mark_compacted(tx.conn, recording_id, now)
    return len(stored.parts) > 1


async def _pieces(blobs: BlobStore, stored: StoredAudio) -> AsyncIterator[bytes]:
    """The parts' bytes in order, a few parts at a time: constant memory."""
    parts = [p for p in stored.parts if p.key != whole_audio(stored.recording_id)]
    for start in range(0, len(parts), PARTS_PER_READ):
        batch = parts[start : start + PARTS_PER_READ]
        for piece in await blobs.read_ranges([BlobRange(p.key, 0, p.size_bytes) for p in batch]):
            yield piece


async def _drop_parts(
    pool: asyncpg.Pool, blobs: BlobStore, recording_id: str, now: datetime
) -> int:
    stored = await stored_audio(blobs, recording_id)
    whole = whole_audio(recording_id)
    if stored.parts and stored.parts[0].key != whole:
        # No whole (removed by hand, or an old version's store): keep the parts.
        async with pool.acquire() as conn:
            await recordings.mark_parts_dropped(conn, recording_id, now)
        return 0
    listing = await blobs.list(recording_prefix(recording_id))
    parts = [info.key for info in listing if info.key != whole]
    gone = await blobs.delete_keys(parts) if parts else 0
    async with pool.acquire() as conn:
        await recordings.mark_parts_dropped(conn, recording_id, now)
    return gone


async def compaction_worker(
    pool: asyncpg.Pool, blobs: BlobStore, interval_s: float = INTERVAL_S
) -> None:
    """A pass every `interval_s`, on one node at a time (storage/leases.py)."""
    await leases.every(
        pool, "compaction", interval_s, lambda: compaction_pass(pool, blobs, datetime.now(UTC))
    )
