"""Live media on this node: which calls stream here, and their recording writers.

Control calls (start, pause, resume, stop, revocation) may be served by any
node. They commit a state change and a NOTIFY on `recording_control`; every
node LISTENs, and the one holding the call's media socket applies it to the
writer. The database stays the judge of the window (see recorder.py), so a
late notification can delay a pause by milliseconds but never store audio
outside a recorded segment.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import socket
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

import asyncpg

from storage import recordings
from storage.blobs.filesystem import BlobStore
from storage.keys import hierarchy as keys
from storage.keys.crypto import ChunkCipher
from telephony.domain.errors import IntegrityFailure, NotFound
from telephony.media.events import StreamStart
from telephony.recorder.writer import AudioFormat, ChunkSink, RecordingWriter, Window, blob_key
from telephony.usecases import sessions

log = logging.getLogger(__name__)


def default_node_id(port: int | None = None) -> str:
    return f"{socket.gethostname()}:{port or 0}"


@dataclass
class LiveStream:
    """One connected media socket of a call."""

    call_id: str
    account_id: str
    fmt: AudioFormat | None = None
    writer: RecordingWriter | None = None
    started_mono: float | None = None  # monotonic time of timestamp 0, from the first frame
    frames: int = 0  # audio frames received, for the batched frame counter
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)


@dataclass
class MediaHub:
    pool: asyncpg.Pool
    blobs: BlobStore
    master: keys.MasterKeys
    node_id: str
    # The writers' own pool: one chunk-row statement per seal turn for the whole node,
    # on stateless connections (no reset round trip), so a busy API never delays a
    # seal. None: the main pool.
    writer_pool: asyncpg.Pool | None = None
    clock: Callable[[], datetime] = lambda: datetime.now(UTC)
    streams: dict[str, LiveStream] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.sink = ChunkSink(self.writer_pool or self.pool, self.blobs)

    # -- lifecycle -------------------------------------------------------------

    async def run_listener(self) -> None:
        """LISTEN for control messages until cancelled; reconnect when the connection drops.

        While disconnected, the database's window check on every chunk still
        keeps audio outside a segment off the disk; only the in-memory drop
        is late.
        """
        while True:
            try:
                await self._listen_once()
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError):
                log.warning("control listener lost its connection; reconnecting")
            await asyncio.sleep(1.0)

    async def _listen_once(self) -> None:
        conn = await self.pool.acquire()
        queue: asyncio.Queue[str | None] = asyncio.Queue()

        def on_notify(_c: object, _pid: int, _channel: str, payload: str) -> None:
            queue.put_nowait(payload)

        def on_lost(_c: object) -> None:
            queue.put_nowait(None)

        try:
            conn.add_termination_listener(on_lost)
            await conn.add_listener(recordings.CONTROL_CHANNEL, on_notify)
            while (payload := await queue.get()) is not None:
                try:
                    await self.apply(json.loads(payload))
                except (ValueError, KeyError, asyncpg.PostgresError, OSError):
                    log.exception("control message failed")
        finally:
            with contextlib.suppress(Exception):
                await conn.remove_listener(recordings.CONTROL_CHANNEL, on_notify)
            with contextlib.suppress(Exception):
                await self.pool.release(conn)

    async def recover(self) -> int:
        """At start-up: what this node held when it died is interrupted; its chunks stay."""
        interrupted = await sessions.interrupt_dead_node(
            self.pool, self.node_id, lambda conn, rid: trim_to_blob(conn, self.blobs, rid)
        )
        if interrupted:
            log.warning(
                "recordings interrupted by a previous crash", extra={"count": len(interrupted)}
            )
        return len(interrupted)

    async def close(self) -> None:
        for stream in list(self.streams.values()):
            await self.detach(stream, final=False)
        await self.sink.close()

    # -- streams -----------------------------------------------------------------

    async def attach(self, stream: LiveStream, start: StreamStart) -> None:
        """A media socket started: pick up the call's live recording, if any."""
        tracks = tuple(t for t in ("inbound", "outbound") if t in start.tracks) or ("inbound",)
        stream.fmt = AudioFormat(start.encoding, start.sample_rate_hz, tracks)
        self.streams[stream.call_id] = stream
        async with self.pool.acquire() as conn:
            live = await recordings.find_live(conn, stream.call_id)
        if live is not None:
            await self._open_writer(stream, live.id)

    async def detach(self, stream: LiveStream, *, final: bool) -> None:
        """The socket closed: the stream's end finalizes its recording (`final`),
        a shutdown of this node only seals what is left."""
        async with stream.lock:
            writer, stream.writer = stream.writer, None
            if writer is not None:
                if final:
                    # Close the segment first, so nothing after the stream's end is kept.
                    at = await sessions.stop_for_stream_end(
                        self.pool, writer.recording_id, self.node_id, self.clock
                    )
                    writer.pause(at)
                await writer.close(final=final)
                if final:
                    await sessions.complete_after_sealing(
                        self.pool, writer.recording_id, self.node_id
                    )
        self.streams.pop(stream.call_id, None)
        async with self.pool.acquire() as conn:
            await conn.execute(
                "DELETE FROM media_streams WHERE call_id = $1 AND node_id = $2",
                stream.call_id,
                self.node_id,
            )

    async def apply(self, message: dict[str, str]) -> None:
        stream = self.streams.get(message["call_id"])
        if stream is None or stream.fmt is None:
            return
        at = datetime.fromisoformat(message["at"])
        action = message["action"]
        async with stream.lock:
            writer = stream.writer
            if action == "start" and writer is None:
                await self._open_writer(stream, message["recording_id"], locked=True)
            elif writer is None or writer.recording_id != message["recording_id"]:
                return
            elif action == "pause":
                writer.pause(at)
            elif action == "resume":
                writer.resume(at)
            elif action == "stop":
                writer.pause(at)
                stream.writer = None
                await writer.close(final=True)
                await sessions.complete_after_sealing(self.pool, writer.recording_id, self.node_id)

    async def _open_writer(
        self, stream: LiveStream, recording_id: str, locked: bool = False
    ) -> None:
        assert stream.fmt is not None
        async with self.pool.acquire() as conn, conn.transaction():
            rec = await recordings.get(conn, recording_id, account_id=stream.account_id)
            if rec.status not in recordings.LIVE:
                return
            state = await recordings.writer_state(conn, recording_id)
            kek = await keys.account_key(conn, self.master, stream.account_id, self.clock())
            try:
                data_key = keys.open_data_key(kek, state.wrapped_key, recording_id)
            except IntegrityFailure:
                log.exception("recording key unusable", extra={"recording_id": recording_id})
                return
            await recordings.set_format(
                conn,
                recording_id,
                stream.fmt.encoding,
                stream.fmt.sample_rate_hz,
                list(stream.fmt.tracks),
            )
            await conn.execute(
                "UPDATE recordings SET node_id = $2 WHERE id = $1", recording_id, self.node_id
            )
            segments = await recordings.segments_of(conn, recording_id)
        assert state.nonce_prefix is not None
        writer = RecordingWriter(
            recording_id=recording_id,
            pause_behavior=rec.pause_behavior,
            fmt=stream.fmt,
            cipher=ChunkCipher(data_key, state.nonce_prefix, recording_id),
            sink=self.sink,
            windows=[Window(s.started_at, s.ended_at) for s in segments],
            next_index=state.next_index,
            blob_offset=state.blob_offset,
            out_samples=state.out_samples,
            clock=self.clock,
        )
        writer.start()
        stream.writer = writer


async def trim_to_blob(conn: asyncpg.Connection, blobs: BlobStore, recording_id: str) -> None:
    """Drop chunk rows whose bytes never reached the blob (a crash between row and append)."""
    try:
        size = await blobs.size(blob_key(recording_id))
    except NotFound:
        size = 0
    await conn.execute(
        "DELETE FROM recording_chunks WHERE recording_id = $1 AND blob_offset + record_bytes > $2",
        recording_id,
        size,
    )
    await conn.execute(
        """UPDATE recordings SET size_bytes = (SELECT coalesce(sum(record_bytes), 0)
                                               FROM recording_chunks WHERE recording_id = $1)
           WHERE id = $1""",
        recording_id,
    )
