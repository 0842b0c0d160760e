"""Live media on this node: which calls stream here, and their recording writers.

Control calls (start, pause, resume, stop, revocation) may be served by any
node. They commit a state change and a NOTIFY on `recording_control`; every
node LISTENs, and the one holding the call's media socket applies it to the
writer. The database stays the judge of the window (see writer.py), so a
late notification can delay a pause by milliseconds but never store audio
outside a recorded segment.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import socket
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

import asyncpg

from storage import nodes, recordings
from storage.blobs.audio import stored_audio
from storage.blobs.protocol import BlobStore
from storage.blobs.spool import Spool
from storage.keys.crypto import ChunkCipher
from storage.keys.providers import KeyProvider
from storage.recordings import ControlMessage
from telephony.domain.errors import IntegrityFailure, NotFound, Unavailable
from telephony.domain.recordings import Control
from telephony.domain.tracks import INBOUND, MAX_TRACKS, named
from telephony.media.events import Audio, StreamStart
from telephony.recorder.seal import ChunkSink
from telephony.recorder.timeline import Window
from telephony.recorder.writer import PART_SECONDS, AudioFormat, RecordingWriter
from telephony.usecases import media_lifecycle
from telephony.usecases.media_lifecycle import Attached

log = logging.getLogger(__name__)


def default_node_id(port: int | None = None) -> str:
    return f"{socket.gethostname()}:{port or 0}"


def node_folder(node_id: str) -> str:
    """The node's spool folder name: its id, as a file name may hold it."""
    return re.sub(r"[^a-z0-9_-]", "_", node_id.lower())[:64] or "node"


# A recording's start is committed, and answered 201, before the node holding its stream
# has opened the writer (a NOTIFY, then a transaction and a key unwrap away: most of a
# second under load). What arrives meanwhile waits here, in memory only, and the writer
# gets what of it arrived inside the recording's segment (R2): without it, the first
# frames after a start were lost with no gap to show for it (bench/ingest.py, 400 legs).
PREROLL_FRAMES = 100  # per stream: two seconds of 20 ms frames on one track


@dataclass
class LiveStream:
    """One connected media socket of a call."""

    attached: Attached
    fmt: AudioFormat | None = None
    writer: RecordingWriter | None = None
    started_mono: float | None = None  # monotonic time of timestamp 0, from the first frame
    frames: int = 0  # audio frames received, for the batched frame counter
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    # Frames that arrived while no writer was open: (Audio, arrival) from a WebSocket,
    # (track, payload, position, arrival) placed RTP. The oldest fall out.
    preroll: deque[tuple[Audio, datetime] | tuple[str, bytes, int, datetime]] = field(
        default_factory=lambda: deque(maxlen=PREROLL_FRAMES)
    )
    fell_out_at: datetime | None = None  # arrival of the latest frame the pre-roll let go

    def hold(self, item: tuple[Audio, datetime] | tuple[str, bytes, int, datetime]) -> None:
        """Keep a frame that arrived with no writer open (see PREROLL_FRAMES)."""
        if len(self.preroll) == PREROLL_FRAMES:
            self.fell_out_at = self.preroll[0][-1]
        self.preroll.append(item)

    @property
    def call_id(self) -> str:
        return self.attached.call_id

    def replay(self, writer: RecordingWriter) -> float:
        """Offer the held frames that arrived since the writer's first segment began; the
        rest are dropped, in memory, as frames outside a window always are. Returns the
        seconds of that segment's audio the pre-roll let go (the writer opened late)."""
        since = writer.windows[0].start if writer.windows else None
        held, self.preroll = self.preroll, deque(maxlen=PREROLL_FRAMES)
        fell_out_at, self.fell_out_at = self.fell_out_at, None
        if since is None:
            return 0.0
        for item in held:
            if len(item) == 2:
                audio, arrival = item
                if arrival >= since:
                    writer.offer(audio, arrival)
            else:
                track, payload, position, arrival = item
                if arrival >= since:
                    writer.offer_placed(track, payload, position, arrival)
        if fell_out_at is None or fell_out_at < since:
            return 0.0
        return (fell_out_at - since).total_seconds()


@dataclass
class MediaHub:
    pool: asyncpg.Pool
    spool: Spool
    blobs: BlobStore
    keys: KeyProvider
    node_id: str
    # The writers' own pool: one chunk-row statement per seal turn for the whole node,
    # so a busy API never delays a seal. None: the main pool.
    writer_pool: asyncpg.Pool | None = None
    clock: Callable[[], datetime] = lambda: datetime.now(UTC)
    part_seconds: float = PART_SECONDS
    streams: dict[str, LiveStream] = field(default_factory=dict)
    # Set once what the spool held at start-up has reached the blob store: until then the
    # node is not ready (/readyz), whatever else answers.
    recovered: asyncio.Event = field(default_factory=asyncio.Event)
    # Set when the node shuts down: a socket closing then is handed over, not the call's end.
    leaving: bool = False

    def __post_init__(self) -> None:
        self.sink = ChunkSink(self.writer_pool or self.pool, self.spool, self.blobs)
        self._applying: set[asyncio.Task[None]] = set()

    async def recover_until_done(self, first_retry_s: float = 1.0) -> None:
        """`recover`, retried while the blob store (or the database) is unreachable, with
        a doubling pause up to 30 s; the spool keeps every part meanwhile."""
        pause = first_retry_s
        while True:
            try:
                await self.recover()
            except (OSError, Unavailable, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
                log.warning(
                    "start-up recovery waits for the stores",
                    extra={"error": str(exc) or type(exc).__name__, "retry_in_s": pause},
                )
                await asyncio.sleep(pause)
                pause = min(pause * 2, 30.0)
                continue
            self.recovered.set()
            return

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

        def on_notify(_c: object, _pid: int, _channel: str, payload: object) -> None:
            queue.put_nowait(str(payload))  # asyncpg passes NOTIFY payloads as str

        def on_lost(_c: object) -> None:
            queue.put_nowait(None)

        held = False
        try:
            conn.add_termination_listener(on_lost)
            # This connection's life is the node's life for the others (storage/nodes.py).
            held = await nodes.hold(conn, self.node_id)
            if not held:
                log.error(
                    "another live process uses this node id; streams may not move here",
                    extra={"node_id": self.node_id},
                )
            await conn.add_listener(recordings.CONTROL_CHANNEL, on_notify)
            while (payload := await queue.get()) is not None:
                # Each message in a task of its own: opening a writer is a transaction and
                # a key unwrap, and 600 starts one after another kept the last call's
                # writer seconds away (overload gaps, bench/ingest.py). One call's messages
                # keep their order: each task takes the stream's lock, which is first come,
                # first served, before it yields.
                task = asyncio.create_task(self._apply_logged(payload), name="control")
                self._applying.add(task)
                task.add_done_callback(self._applying.discard)
        finally:
            if self._applying:  # what was begun ends: a writer half-opened or half-closed
                await asyncio.gather(*self._applying, return_exceptions=True)
            with contextlib.suppress(Exception):
                await conn.remove_listener(recordings.CONTROL_CHANNEL, on_notify)
            if held:
                with contextlib.suppress(Exception):
                    await nodes.let_go(conn, self.node_id)
            with contextlib.suppress(Exception):
                await self.pool.release(conn)

    async def recover(self) -> int:
        """At start-up, before this node says it is ready: what its spool holds moves to the
        blob store, and what it held when it died is `interrupted` (its chunks stay)."""
        spooled = await self.spool.parts()
        kept = await media_lifecycle.still_kept(self.pool, {s.part.recording_id for s in spooled})
        for recording_id in sorted({s.part.recording_id for s in spooled}):
            parts = [s for s in spooled if s.part.recording_id == recording_id]
            if recording_id not in kept or not await media_lifecycle.still_held_by(
                self.pool, recording_id, self.node_id
            ):
                # Deleted meanwhile (its key is gone, the bytes are noise), or its stream
                # went on on another node, which continued where the store's copy ended.
                for entry in parts:
                    await self.spool.remove(entry.part)
                continue
            # Rows past the bytes on disk go (a crash between a row and its append); bytes
            # past the rows (a record cut short by the crash) are not shipped.
            on_disk = max(s.part.offset + s.size_bytes for s in parts)
            rows_end = await media_lifecycle.trim_rows(self.pool, recording_id, on_disk)
            for entry in parts:
                await self.sink.ship(entry.part, limit=max(rows_end - entry.part.offset, 0))

        interrupted = await media_lifecycle.interrupt_dead_node(
            self.pool, self.node_id, self.stored_end
        )
        if interrupted or spooled:
            log.warning(
                "recovered after a previous crash",
                extra={"interrupted": len(interrupted), "parts_shipped": len(spooled)},
            )
        return len(interrupted)

    async def stored_end(self, recording_id: str) -> int:
        """How much of the recording's stream the blob store holds."""
        return (await stored_audio(self.blobs, recording_id)).size_bytes

    async def close(self) -> None:
        for stream in list(self.streams.values()):
            await self.detach(stream, final=False)
        await self.sink.close()

    # -- streams -----------------------------------------------------------------

    async def attach(self, stream: LiveStream, start: StreamStart) -> None:
        """A media socket started: pick up the call's live recording, if any."""
        names = list(dict.fromkeys(start.tracks))[:MAX_TRACKS]
        tracks = tuple(named(n) for n in names) or (INBOUND,)
        stream.fmt = AudioFormat(start.encoding, start.sample_rate_hz, tracks)
        self.streams[stream.call_id] = stream
        # Under the stream's lock, as a START is applied: a recording started just as the
        # stream attached is seen by both, and only the first may open its writer. Two
        # writers would seal the same chunk indexes (under a customer key, with two keys).
        async with stream.lock:
            live = await media_lifecycle.live_recording_of(self.pool, stream.call_id)
            if live is not None and stream.writer is None:
                await self._open_writer(stream, live)

    async def detach(self, stream: LiveStream, *, final: bool) -> None:
        """The socket closed: the stream's end finalizes its recording (`final`),
        a shutdown of this node only seals what is left."""
        async with stream.lock:
            writer, stream.writer = stream.writer, None
            if writer is not None:
                await self._close_writer(writer, stream_ended=final)
        self.streams.pop(stream.call_id, None)
        await media_lifecycle.detach_stream(
            self.pool, stream.attached, node_id=self.node_id, now=self.clock()
        )

    async def _close_writer(self, writer: RecordingWriter, *, stream_ended: bool) -> None:
        if stream_ended:
            # Close the segment first, so nothing after the stream's end is kept.
            at = await media_lifecycle.stop_for_stream_end(
                self.pool, writer.recording_id, self.node_id, self.clock
            )
            writer.pause(at)
        shipped = await writer.close(final=stream_ended)
        if stream_ended and shipped:
            await media_lifecycle.complete_after_sealing(
                self.pool, writer.recording_id, self.node_id
            )

    async def _apply_logged(self, payload: str) -> None:
        try:
            await self.apply(ControlMessage.parse(payload))
        except Exception:  # a task's error would otherwise go unread; the next message runs
            log.exception("control message failed")

    async def apply(self, message: ControlMessage) -> None:
        stream = self.streams.get(message.call_id)
        if stream is None or stream.fmt is None:
            return
        async with stream.lock:
            writer = stream.writer
            if message.action is Control.START and writer is None:
                await self._open_writer(stream, message.recording_id)
            elif writer is None or writer.recording_id != message.recording_id:
                return
            elif message.action is Control.PAUSE:
                writer.pause(message.at)
            elif message.action is Control.RESUME:
                writer.resume(message.at)
            elif message.action is Control.STOP:
                writer.pause(message.at)
                stream.writer = None
                if await writer.close(final=True):
                    await media_lifecycle.complete_after_sealing(
                        self.pool, writer.recording_id, self.node_id
                    )

    async def _open_writer(self, stream: LiveStream, recording_id: str) -> None:
        """Called with `stream.lock` held, and `stream.writer` None."""
        assert stream.fmt is not None
        try:
            start = await media_lifecycle.start_writing(
                self.pool,
                self.keys,
                recording_id,
                stream.attached.account_id,
                node_id=self.node_id,
                encoding=stream.fmt.encoding,
                sample_rate_hz=stream.fmt.sample_rate_hz,
                tracks=stream.fmt.tracks,
                now=self.clock(),
                stored_end=self.stored_end,
                source=stream.attached.source,
            )
        except IntegrityFailure:
            log.exception("recording key unusable", extra={"recording_id": recording_id})
            return
        except NotFound:
            return  # deleted before its stream attached
        if start is None:
            return
        writer = RecordingWriter(
            recording_id=recording_id,
            pause_behavior=start.recording.pause_behavior,
            fmt=stream.fmt,
            cipher=ChunkCipher(start.data_key, start.nonce_prefix, recording_id),
            sink=self.sink,
            windows=[Window(s.started_at, s.ended_at) for s in start.segments],
            next_index=start.secrets.next_index,
            blob_offset=start.secrets.blob_offset,
            out_samples=start.secrets.out_samples,
            clock=self.clock,
            part_seconds=self.part_seconds,
        )
        writer.start()
        stream.writer = writer
        lost_s = stream.replay(writer)  # before any frame that follows: arrival's order
        if lost_s > 0:
            gap = {
                "at_ms": start.secrets.out_samples * 1000 // stream.fmt.sample_rate_hz,
                "duration_ms": round(lost_s * 1000),
                "reason": "overload",
            }
            log.error("the writer opened late: audio lost", extra={"recording_id": recording_id})
            await media_lifecycle.report_gap(self.pool, recording_id, gap)
