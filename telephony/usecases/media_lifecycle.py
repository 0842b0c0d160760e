"""A live media stream's life, as the media node reports it: attach, write, end, recover.

The recorder calls these like any other caller; they are the only way it
changes a recording's state, so every change is audited and announced like
a customer's. The media node's actor is the system, named by its node id.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime

import asyncpg

from storage import calls, chunks, media_streams, recordings
from storage.ids import token_hash
from storage.keys.providers import KeyProvider
from telephony.domain.actors import Actor
from telephony.domain.errors import IntegrityFailure, StreamRefused
from telephony.domain.recordings import LIVE, EndReason
from telephony.domain.tracks import Track
from telephony.usecases import recording_states
from telephony.usecases.calls import Clock, utc_now
from telephony.usecases.trail import transaction

log = logging.getLogger(__name__)


def node_actor(node_id: str) -> Actor:
    return Actor.system(node_id)


@dataclass(frozen=True)
class Attached:
    """A media socket that is now its call's one live stream."""

    call_id: str
    account_id: str


async def attach_stream(
    pool: asyncpg.Pool, token: str, *, node_id: str, dialect: str, now: datetime
) -> Attached:
    """Check the call's media token and register this socket as its stream.

    StreamRefused for an unknown or expired token, an ended call, or a call
    whose stream is live already (a reconnect is accepted once the old one
    has gone). Each attachment is audited in the customer's trail.
    """
    async with transaction(pool) as tx:
        call = await calls.find_by_media_token(tx.conn, token_hash(token))
        if call is None:
            raise StreamRefused("unknown media token")
        if call.media_token_expires_at <= now:
            raise StreamRefused("media token expired")
        if not call.active:
            raise StreamRefused("the call has ended")
        if not await media_streams.claim(tx.conn, call.id, node_id, dialect, now):
            raise StreamRefused("a media stream of this call is already live")
        tx.audit(
            call.account_id,
            node_actor(node_id),
            "media_stream.attached",
            {"call_id": call.id},
            now,
            dialect=dialect,
        )
    return Attached(call.id, call.account_id)


async def detach_stream(
    pool: asyncpg.Pool, attached: Attached, *, node_id: str, now: datetime
) -> None:
    """The socket closed: the call may get a new stream (a reconnect)."""
    async with transaction(pool) as tx:
        await media_streams.release(tx.conn, attached.call_id, node_id)
        tx.audit(
            attached.account_id,
            node_actor(node_id),
            "media_stream.detached",
            {"call_id": attached.call_id},
            now,
        )


async def still_kept(pool: asyncpg.Pool, recording_ids: set[str]) -> set[str]:
    """Those of the recordings that exist and are not deleted."""
    if not recording_ids:
        return set()
    async with pool.acquire() as conn:
        return await recordings.not_deleted(conn, sorted(recording_ids))


async def trim_rows(pool: asyncpg.Pool, recording_id: str, stored_bytes: int) -> int:
    """Drop chunk rows past what storage holds; the end of the rows that remain."""
    async with transaction(pool) as tx:
        await chunks.trim_past(tx.conn, recording_id, stored_bytes)
        return await chunks.recorded_bytes(tx.conn, recording_id)


async def live_recording_of(pool: asyncpg.Pool, call_id: str) -> str | None:
    async with pool.acquire() as conn:
        live = await recordings.find_live(conn, call_id)
    return live.id if live else None


@dataclass(frozen=True)
class WriterStart:
    """What a media node needs to write a recording, and where the last writer left off."""

    recording: recordings.Recording
    data_key: bytes
    secrets: recordings.Secrets
    segments: list[recordings.Segment]


async def start_writing(
    pool: asyncpg.Pool,
    keys: KeyProvider,
    recording_id: str,
    account_id: str,
    *,
    node_id: str,
    encoding: str,
    sample_rate_hz: int,
    tracks: tuple[Track, ...],
    now: datetime,
) -> WriterStart | None:
    """Claim a live recording for this node; None when it is no longer live or its key is
    unusable (then nothing can be written: IntegrityFailure is logged by the caller)."""
    async with transaction(pool) as tx:
        rec = await recordings.get(tx.conn, recording_id, account_id=account_id)
        if rec.status not in LIVE:
            return None
        state = await recordings.writer_state(tx.conn, recording_id)
        data_key = await keys.recording_key(
            tx.conn, account_id, recording_id, state.wrapped_key, now
        )
        if state.nonce_prefix is None:
            raise IntegrityFailure("the recording has no key material")
        if not await recordings.attach_to_node(
            tx.conn,
            recording_id,
            node_id,
            encoding=encoding,
            sample_rate_hz=sample_rate_hz,
            tracks=tracks,
        ):
            # Its audio is lost while it lasts, and the customer is told where it began.
            kept = await recordings.stored_format(tx.conn, recording_id)
            at_ms = state.out_samples * 1000 // (kept.sample_rate_hz or sample_rate_hz)
            gap = {"at_ms": at_ms, "duration_ms": None, "reason": "stream-format-changed"}
            await recordings.add_gap(tx.conn, recording_id, gap)
            log.warning(
                "a stream of another format cannot continue this recording",
                extra={"recording_id": recording_id, "encoding": encoding},
            )
            return None
        segments = await recordings.segments_of(tx.conn, recording_id)
    return WriterStart(rec, data_key, state, segments)


async def segments_of(pool: asyncpg.Pool, recording_id: str) -> list[recordings.Segment]:
    """The recorded segments as the database knows them (a writer that missed a NOTIFY)."""
    async with pool.acquire() as conn:
        return await recordings.segments_of(conn, recording_id)


async def report_gap(pool: asyncpg.Pool, recording_id: str, gap: dict[str, object]) -> None:
    async with pool.acquire() as conn:
        await recordings.add_gap(conn, recording_id, gap)


async def stop_for_stream_end(
    pool: asyncpg.Pool, recording_id: str, node_id: str, clock: Clock = utc_now
) -> datetime:
    """The media stream of a recorded call ended: stop the recording, audited as the system."""
    async with transaction(pool) as tx:
        found = await recordings.get(tx.conn, recording_id, account_id=None)
        await calls.get_call(tx.conn, found.call_id, account_id=None, lock=True)
        rec = await recordings.get(tx.conn, recording_id, account_id=None, lock=True)
        now = clock()
        if rec.status in LIVE:
            await recording_states.finish(tx, rec, node_actor(node_id), EndReason.STREAM_ENDED, now)
        return now


async def complete_after_sealing(pool: asyncpg.Pool, recording_id: str, node_id: str) -> bool:
    """The media node sealed the last chunk of a stopped recording: it is complete."""
    async with transaction(pool) as tx:
        if not await recordings.complete_if_stopped(tx.conn, recording_id):
            return False
        rec = await recordings.get(tx.conn, recording_id, account_id=None)
        now = utc_now()
        subject = {"call_id": rec.call_id, "recording_id": rec.id}
        tx.audit(rec.account_id, node_actor(node_id), "recording.completed", subject, now)
        tx.customer_event(
            rec.account_id,
            "recording.completed",
            now,
            **subject,
            size_bytes=rec.size_bytes,
            stop_reason=rec.stop_reason.value if rec.stop_reason else None,
        )
    return True


StoredEnd = Callable[[str], Awaitable[int]]


async def interrupt_dead_node(pool: asyncpg.Pool, node_id: str, stored_end: StoredEnd) -> list[str]:
    """At start-up: recordings this node held when its process died become `interrupted`.

    Every sealed chunk stays; rows whose bytes never reached storage (a crash
    between the row and its bytes) go: `stored_end(recording_id)` says how
    many bytes of the recording's stream the store holds.
    """
    actor = node_actor(node_id)
    async with transaction(pool) as tx:
        found = await recordings.interrupt_held_by(tx.conn, node_id)
        now = utc_now()
        for rec in found:
            await recordings.close_open_segment(tx.conn, rec.id, now, EndReason.INTERRUPTED)
            await chunks.trim_past(tx.conn, rec.id, await stored_end(rec.id))
            subject = {"call_id": rec.call_id, "recording_id": rec.id}
            tx.audit(rec.account_id, actor, "recording.interrupted", subject, now)
            tx.customer_event(rec.account_id, "recording.interrupted", now, **subject)
        await media_streams.release_all(tx.conn, node_id)
    return [r.id for r in found]
