"""A live media stream's life, as the media node reports it: attach, write, end, recover.

The recorder calls these like any other caller; they are the only way it
changes a recording's state, so every change is audited and announced like
a customer's. The media node's actor is the system, named by its node id.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

import asyncpg

from storage import (
    calls,
    chunks,
    customer_keys,
    key_epochs,
    leases,
    media_streams,
    nodes,
    recordings,
)
from storage.ids import token_hash
from storage.keys.providers import KeyProvider, customer_recording_key
from telephony.domain.actors import Actor
from telephony.domain.calls import Direction
from telephony.domain.consent import can_resume
from telephony.domain.errors import IntegrityFailure, StreamRefused
from telephony.domain.recordings import LIVE, EndReason, RecordingStatus
from telephony.domain.tracks import Track
from telephony.usecases import recording_states
from telephony.usecases.calls import Clock, facts, utc_now
from telephony.usecases.trail import Tx, transaction

log = logging.getLogger(__name__)


# How many bytes of a recording's stream the blob store holds (storage.blobs.audio).
StoredEnd = Callable[[str], Awaitable[int]]


def node_actor(node_id: str) -> Actor:
    return Actor.system(node_id)


@dataclass(frozen=True)
class Attached:
    """A media socket that is now its call's one live stream."""

    call_id: str
    account_id: str
    # The call's direction: a SIP stream without metadata puts its first m= line on the
    # caller's side (SIP.md 4.3), the customer's on an outbound call.
    outbound: bool = False
    customer_number: str = ""  # the customer's own side: `from` outbound, `to` inbound
    source: str = "websocket"  # the recording's `source` (API.md): websocket, sip, siprec


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
            # A reconnect whose old socket died with its node may take the stream over.
            holder = await media_streams.holder(tx.conn, call.id)
            if holder is None or holder == node_id or not await nodes.is_gone(tx.conn, holder):
                raise StreamRefused("a media stream of this call is already live", taken=True)
            await media_streams.release(tx.conn, call.id, holder)
            if not await media_streams.claim(tx.conn, call.id, node_id, dialect, now):
                raise StreamRefused("a media stream of this call is already live", taken=True)
        tx.audit(
            call.account_id,
            node_actor(node_id),
            "media_stream.attached",
            {"call_id": call.id},
            now,
            dialect=dialect,
        )
    outbound = call.direction is Direction.OUTBOUND
    return Attached(
        call.id,
        call.account_id,
        outbound,
        call.from_number if outbound else call.to_number,
        dialect if dialect in ("sip", "siprec") else "websocket",
    )


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


async def still_held_by(pool: asyncpg.Pool, recording_id: str, node_id: str) -> bool:
    """Whether this node wrote the recording last (no other took its stream over)."""
    async with pool.acquire() as conn:
        return await recordings.held_by(conn, recording_id) in (node_id, None)


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
    nonce_prefix: bytes
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
    stored_end: StoredEnd,
    source: str = "websocket",
) -> WriterStart | None:
    """Claim a live recording for this node; None when it is no longer live or its key is
    unusable (then nothing can be written: IntegrityFailure is logged by the caller)."""
    async with transaction(pool) as tx:
        rec = await recordings.get(tx.conn, recording_id, account_id=account_id)
        if rec.status not in LIVE:
            return None
        previous = await recordings.held_by(tx.conn, recording_id)
        if previous is not None and previous != node_id:
            if await nodes.is_gone(tx.conn, previous):
                await _continue_after_node_loss(tx, rec, previous, node_id, now, stored_end)
            else:
                # Another node let the stream go (a shutdown: it sealed and shipped what it
                # had); whatever it could not ship stays behind, so go on from the store's end.
                await chunks.trim_past(tx.conn, recording_id, await stored_end(recording_id))
        state = await recordings.writer_state(tx.conn, recording_id)
        if rec.customer_key_id is None:
            data_key = await keys.recording_key(
                tx.conn, account_id, recording_id, state.wrapped_key, now
            )
            if state.nonce_prefix is None:
                raise IntegrityFailure("the recording has no key material")
            nonce_prefix = state.nonce_prefix
        if not await recordings.attach_to_node(
            tx.conn,
            recording_id,
            node_id,
            encoding=encoding,
            sample_rate_hz=sample_rate_hz,
            tracks=tracks,
            source=source,
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
        if rec.customer_key_id is not None:
            data_key, nonce_prefix = await _new_epoch(tx, rec, state.next_index, node_id, now)
        segments = await recordings.segments_of(tx.conn, recording_id)
    return WriterStart(rec, data_key, nonce_prefix, state, segments)


async def _new_epoch(
    tx: Tx, rec: recordings.Recording, first_chunk: int, node_id: str, now: datetime
) -> tuple[bytes, bytes]:
    """A fresh data key for this writer, kept by the service only wrapped to the
    customer's key (SEALED-FORMAT.md "Epochs"): from chunk `first_chunk` on, only the
    customer can open what this writer seals. The key was tried at the start; one that
    fails now (its row altered) is an IntegrityFailure, and nothing is written."""
    assert rec.customer_key_id is not None
    stored = await customer_keys.get_any(tx.conn, rec.customer_key_id)
    try:
        key = customer_recording_key(stored.key, rec.id)
    except ValueError:
        raise IntegrityFailure("the recording's encryption key cannot be used") from None
    await key_epochs.add(
        tx.conn,
        rec.id,
        first_chunk=first_chunk,
        nonce_prefix=key.nonce_prefix,
        wrapped_key=key.wrapped,
        node_id=node_id,
        now=now,
    )
    return key.data_key, key.nonce_prefix


async def _continue_after_node_loss(
    tx: Tx,
    rec: recordings.Recording,
    lost: str,
    node_id: str,
    now: datetime,
    stored_end: StoredEnd,
) -> None:
    """The recording's media node died and its stream came back here (DESIGN.md "More
    than one node"): the customer's start still stands, so it goes on, but only after the
    gate says so again.

    The recording is one authenticated stream of chunk records, so this node
    continues where the blob store's copy ends: rows whose bytes were still in the
    dead node's spool go (at most `spool_part_s` and the last second), since no
    record may follow a hole. The stretch ends where the last kept audio arrived,
    so the coverage map shows the hole; a new one opens now if every counterpart
    still consents and processing is not restricted, else it stays paused until
    they do.
    """
    call = await calls.get_call(tx.conn, rec.call_id, account_id=None, lock=True)
    rec = await recordings.get(tx.conn, rec.id, account_id=None, lock=True)
    await chunks.trim_past(tx.conn, rec.id, await stored_end(rec.id))
    actor = node_actor(node_id)
    tx.audit(
        rec.account_id,
        actor,
        "recording.media_node_changed",
        {"call_id": rec.call_id, "recording_id": rec.id},
        now,
        lost_node=lost,
    )
    if rec.status is not RecordingStatus.RECORDING:
        return  # paused or stopped meanwhile through the API: nothing was being recorded
    cut = await recordings.last_arrival(tx.conn, rec.id) or now
    cut = min(max(cut, rec.segments[-1].started_at if rec.segments else cut), now)
    paused = await recording_states.pause(tx, rec, actor, EndReason.NODE_LOST, cut)
    kept = await recordings.writer_state(tx.conn, rec.id)
    stored = await recordings.stored_format(tx.conn, rec.id)
    gap = {
        "at_ms": kept.out_samples * 1000 // (stored.sample_rate_hz or 8000),
        "duration_ms": int((now - cut).total_seconds() * 1000),
        "reason": "media-node-lost",
    }
    await recordings.add_gap(tx.conn, rec.id, gap)
    if can_resume(await facts(tx.conn, call)):
        await recording_states.resume(tx, paused, actor, now, reason="media_node_changed")
    else:
        await recordings.close_segment(  # now waiting for consent, as after a newcomer
            tx.conn,
            paused,
            now,
            EndReason.NODE_LOST,
            status=RecordingStatus.PAUSED,
            pause_reason=EndReason.NEW_COUNTERPART,
        )


NODE_LOST_GRACE_S = 60.0  # a stream has this long to come back on another node


async def sweep_lost_nodes(
    pool: asyncpg.Pool, stored_end: StoredEnd, now: datetime, grace_s: float = NODE_LOST_GRACE_S
) -> list[str]:
    """Recordings whose media node is gone and whose stream has not come back within
    `grace_s` end `interrupted`, their sealed audio kept; the ids of those that ended.

    A node seen gone once starts the wait; one seen alive again (its connection
    to the database came back) clears it, so only a node that stays gone ends
    anything.
    """
    ended: list[str] = []
    async with transaction(pool) as tx:
        for node in await recordings.live_nodes(tx.conn):
            if not await nodes.is_gone(tx.conn, node):
                await recordings.clear_node_lost(tx.conn, node)
                continue
            await recordings.mark_node_lost(tx.conn, node, now)
            found = await recordings.interrupt_lost_since(
                tx.conn, node, now - timedelta(seconds=grace_s)
            )
            for rec in found:
                # What its spool held is gone with it: rows past the store's copy go.
                await chunks.trim_past(tx.conn, rec.id, await stored_end(rec.id))
                cut = await recordings.last_arrival(tx.conn, rec.id) or now
                await recordings.close_open_segment(tx.conn, rec.id, cut, EndReason.INTERRUPTED)
                await media_streams.release(tx.conn, rec.call_id, node)
                subject = {"call_id": rec.call_id, "recording_id": rec.id}
                tx.audit(rec.account_id, node_actor(node), "recording.interrupted", subject, now)
                tx.customer_event(rec.account_id, "recording.interrupted", now, **subject)
                ended.append(rec.id)
    if ended:
        log.warning("recordings of a lost media node ended", extra={"interrupted": len(ended)})
    return ended


SWEEP_INTERVAL_S = 5.0


async def lost_node_worker(
    pool: asyncpg.Pool, stored_end: StoredEnd, interval_s: float = SWEEP_INTERVAL_S
) -> None:
    """`sweep_lost_nodes` every few seconds, on one node at a time (storage/leases.py)."""
    await leases.every(
        pool, "lost-media-nodes", interval_s, lambda: sweep_lost_nodes(pool, stored_end, utc_now())
    )


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
