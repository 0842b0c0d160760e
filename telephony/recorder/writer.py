"""Frames in, sealed chunks out: one interleaving writer per live recording.

Why one writer per recording rather than one per track: a download needs the
tracks aligned sample by sample, so the writer aligns them once, as audio
arrives, and seals interleaved frames (channel 0 = the counterparts'
`inbound` track, channel 1 = the customer's `outbound` track). Each chunk is
then a ready stretch of a two-channel (or one-channel) stream in the codec's
own bytes: μ-law stays μ-law, L16 stays L16.

The window rule (R2): a frame is kept only if it *arrived* inside a segment
the database recorded for this recording. The writer tracks segments from
control messages, and the database re-checks every chunk in the same
statement that records it, before its bytes are sealed or written. Frames
outside the window are dropped in memory.

The media socket never waits for disk or database: `offer` only appends to a
bounded queue; when it overflows the frame is dropped and the loss lands in
the recording's `gaps`.
"""

from __future__ import annotations

import array
import asyncio
import contextlib
import json
import logging
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import NamedTuple

import asyncpg

from storage.blobs.filesystem import BlobStore
from storage.keys.crypto import CHUNK_HEADER, TAG_BYTES, ChunkCipher
from telephony.media.events import Audio
from telephony.recorder.batching import Batcher

log = logging.getLogger(__name__)

TRACKS = ("inbound", "outbound")
SILENCE = {"mulaw": b"\xff", "alaw": b"\xd5", "l16le": b"\x00\x00", "l16be": b"\x00\x00"}
SEAL_INTERVAL_S = 0.8  # with the jitter allowance, a crash loses under one second
JITTER_S = 0.1  # late frames within this much are still placed
MAX_CHUNK_BYTES = 16 * 1024
MAX_GAP_S = 10.0  # a timestamp jump beyond this is a discontinuity, not silence
MAX_SILENCE_FILL_S = 600.0
QUEUE_FRAMES = 500  # ten seconds of 20 ms frames per track


def blob_prefix(recording_id: str) -> str:
    """Everything a recording keeps in the blob store lies under this (deletion removes it)."""
    return f"recordings/{recording_id}"


def blob_key(recording_id: str) -> str:
    return f"{blob_prefix(recording_id)}/audio"


@dataclass(frozen=True)
class AudioFormat:
    encoding: str
    sample_rate_hz: int
    tracks: tuple[str, ...]  # channel order of the stored audio

    @property
    def sample_bytes(self) -> int:
        return 2 if self.encoding.startswith("l16") else 1


class Frame(NamedTuple):
    """One frame on its way to a chunk: a tuple, since thousands arrive every second."""

    channel: int
    position: int  # in samples of the stream timeline
    payload: bytes
    arrival: datetime


@dataclass
class Window:
    """A recorded segment, in arrival time: [start, end)."""

    start: datetime
    end: datetime | None = None

    def contains(self, at: datetime) -> bool:
        return self.start <= at and (self.end is None or at < self.end)


@dataclass
class WriterStats:
    frames_in: int = 0
    frames_dropped_window: int = 0
    frames_dropped_overflow: int = 0
    frames_late: int = 0
    chunks: int = 0
    chunks_refused: int = 0


class ChunkRow(NamedTuple):
    """A chunk's row in `recording_chunks`, before its bytes are sealed."""

    recording_id: str
    index: int
    blob_offset: int
    record_bytes: int
    first_sample: int
    samples: int
    first_arrival: datetime
    last_arrival: datetime
    final: bool
    empty: bool  # an empty final chunk holds no audio for the window check


class ChunkSink:
    """What every writer of a node shares: one seal clock, one statement, one disk hop.

    Why shared: each writer sealing on its own timer paid a database round
    trip, a pool acquire and a thread hop per chunk, about 2 ms of CPU; with
    200 recordings that was half a core. Here every writer wakes on the same
    tick, and the chunks they seal in that turn go to PostgreSQL as one
    statement and to the blob store as one worker-thread hop. Each writer
    still awaits its own chunk's verdict, so the order per recording (row,
    then seal, then append) and the window rule are unchanged.
    """

    def __init__(self, pool: asyncpg.Pool, blobs: BlobStore) -> None:
        self.pool = pool
        self._rows: Batcher[ChunkRow, bool] = Batcher(self._insert_rows)
        self._appends: Batcher[tuple[str, bytes], int] = Batcher(blobs.append_many)
        self._writers: set[RecordingWriter] = set()
        self._clock: asyncio.Task[None] | None = None

    async def record(self, row: ChunkRow) -> bool:
        """Insert the chunk's row if it lies inside a recorded segment; False if refused."""
        return await self._rows.submit(row)

    async def append(self, key: str, record: bytes) -> int:
        """Append a sealed record; the offset it starts at."""
        return await self._appends.submit((key, record))

    def register(self, writer: RecordingWriter) -> None:
        self._writers.add(writer)
        if self._clock is None or self._clock.done():
            self._clock = asyncio.create_task(self._tick(), name="seal-clock")

    def unregister(self, writer: RecordingWriter) -> None:
        self._writers.discard(writer)

    async def close(self) -> None:
        if self._clock is not None:
            self._clock.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._clock

    async def _tick(self) -> None:
        while self._writers:
            await asyncio.sleep(SEAL_INTERVAL_S)
            for writer in list(self._writers):
                writer.wake()

    async def _insert_rows(self, rows: list[ChunkRow]) -> list[bool | BaseException]:
        async with self.pool.acquire() as conn:
            try:
                accepted = await conn.fetch(_INSERT_CHUNKS, *_columns(rows))
            except (asyncpg.PostgresError, asyncpg.InterfaceError):
                if len(rows) == 1:
                    raise
                # One bad row (say, a duplicate index) must not cost the others their chunk.
                log.exception("batched chunk insert failed; inserting one by one")
                return [await _insert_one(conn, row) for row in rows]
        kept = {(r["recording_id"], r["idx"]) for r in accepted}
        return [(row.recording_id, row.index) in kept for row in rows]


def _columns(rows: list[ChunkRow]) -> list[list[object]]:
    return [list(column) for column in zip(*rows, strict=True)]


async def _insert_one(conn: asyncpg.Connection, row: ChunkRow) -> bool | BaseException:
    try:
        accepted = await conn.fetch(_INSERT_CHUNKS, *_columns([row]))
    except (asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
        return exc
    return bool(accepted)


@dataclass(eq=False)
class RecordingWriter:
    recording_id: str
    pause_behavior: str
    fmt: AudioFormat
    cipher: ChunkCipher
    sink: ChunkSink
    windows: list[Window]
    next_index: int = 0
    blob_offset: int = 0
    out_samples: int = 0
    clock: Callable[[], datetime] = lambda: datetime.now(UTC)
    stats: WriterStats = field(default_factory=WriterStats)

    def __post_init__(self) -> None:
        # The socket's side appends, the writer task takes all at each cycle: a deque
        # with a bound, not an asyncio.Queue, since nobody ever awaits a frame.
        self.queue_bound = QUEUE_FRAMES * len(self.fmt.tracks)
        self._inbox: deque[Frame] = deque()
        self._pending: list[Frame] = []
        self._pending_bytes = 0
        self._next_pos = [0] * len(self.fmt.tracks)
        self._shift: int | None = None  # stream position of out_samples; None: realign next seal
        self._window = 0  # the segment the last stored audio belongs to
        self._fill_pause = False  # the next run follows a pause in silence mode
        self._wake = asyncio.Event()
        self._closed = False
        self._overflow_since: float | None = None
        self._task: asyncio.Task[None] | None = None
        # Looked up 50 times a second per track: plain attributes, not properties.
        self._channel_of = {track: i for i, track in enumerate(self.fmt.tracks)}
        self._width = self.fmt.sample_bytes
        self._rate = self.fmt.sample_rate_hz

    # -- the media socket's side: never blocks ------------------------------------

    @property
    def recording(self) -> bool:
        return bool(self.windows) and self.windows[-1].end is None

    def offer(self, audio: Audio, arrival: datetime) -> None:
        """Hand over one frame; dropped at once outside the window or when the queue is full."""
        self.stats.frames_in += 1
        windows = self.windows
        if self._closed or not windows or windows[-1].end is not None:
            self.stats.frames_dropped_window += 1
            return
        channel = self._channel_of.get(audio.track)
        if channel is None:
            return  # a track the recording does not store
        if audio.timestamp_ms is not None:
            position = audio.timestamp_ms * self._rate // 1000
        else:
            position = self._next_pos[channel]
        self._next_pos[channel] = position + len(audio.payload) // self._width
        if len(self._inbox) < self.queue_bound:
            self._inbox.append(Frame(channel, position, audio.payload, arrival))
        else:
            self.stats.frames_dropped_overflow += 1
            if self._overflow_since is None:
                self._overflow_since = time.monotonic()
                log.error(
                    "recording queue full: dropping audio",
                    extra={"recording_id": self.recording_id},
                )

    # -- control -------------------------------------------------------------------

    def pause(self, at: datetime) -> None:
        if self.recording:
            self.windows[-1].end = at
            self._wake.set()

    def resume(self, at: datetime) -> None:
        if not self.recording:
            self.windows.append(Window(at))

    # -- the writer task -----------------------------------------------------------

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name=f"writer-{self.recording_id}")
        self.sink.register(self)

    def wake(self) -> None:
        """Seal now: the sink's clock calls this every SEAL_INTERVAL_S, a pause at once."""
        self._wake.set()

    async def close(self, *, final: bool) -> None:
        """Seal what is left (and the final chunk when the recording ended), then stop."""
        self._closed = True
        self._wake.set()
        self.sink.unregister(self)
        if self._task is not None:
            await self._task
        self._drain_queue()
        await self._seal(final=final)

    async def _run(self) -> None:
        while not self._closed:
            await self._wake.wait()
            self._wake.clear()
            self._drain_queue()
            try:
                await self._seal(final=False, keep_jitter=not self._closed)
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError):
                log.exception("sealing a chunk failed", extra={"recording_id": self.recording_id})
            await self._record_overflow()

    @property
    def queued(self) -> int:
        """Frames offered and not yet taken by the writer (at most `queue_bound`)."""
        return len(self._inbox)

    def _drain_queue(self) -> None:
        taken = list(self._inbox)
        self._inbox.clear()
        self._pending.extend(taken)
        self._pending_bytes += sum(len(f.payload) for f in taken)
        if self._pending_bytes >= MAX_CHUNK_BYTES:
            self._wake.set()

    async def _record_overflow(self) -> None:
        if self._overflow_since is None:
            return
        lost_s = time.monotonic() - self._overflow_since
        self._overflow_since = None
        gap = {
            "at_ms": self.out_samples * 1000 // self.fmt.sample_rate_hz,
            "duration_ms": round(lost_s * 1000),
            "reason": "overload",
        }
        async with self.sink.pool.acquire() as conn:
            await conn.execute(
                "UPDATE recordings SET gaps = gaps || $2::jsonb WHERE id = $1",
                self.recording_id,
                json.dumps([gap]),
            )

    # -- sealing -------------------------------------------------------------------

    def _window_of(self, at: datetime) -> int | None:
        return next((i for i, w in enumerate(self.windows) if w.contains(at)), None)

    def _by_window(self, frames: list[Frame]) -> dict[int, list[Frame]]:
        """Frames grouped by the segment they arrived in; frames outside every segment dropped."""
        if frames and self.windows:
            # Frames are in arrival order: when the first and the last arrived inside the
            # latest segment, all did (the usual case, checked in two comparisons).
            last = self.windows[-1]
            if last.contains(frames[0].arrival) and last.contains(frames[-1].arrival):
                return {len(self.windows) - 1: frames}
        groups: dict[int, list[Frame]] = {}
        for f in frames:
            index = self._window_of(f.arrival)
            if index is None:
                self.stats.frames_dropped_window += 1
            else:
                groups.setdefault(index, []).append(f)
        return groups

    async def _seal(self, *, final: bool, keep_jitter: bool = False) -> None:
        pending, self._pending = self._pending, []
        for index, frames in sorted(self._by_window(pending).items()):
            is_open = index == len(self.windows) - 1 and self.windows[index].end is None
            ready, held = self._split_jitter(frames, keep_jitter and is_open)
            self._pending.extend(held)
            if ready:
                await self._store(index, ready)
        self._pending_bytes = sum(len(f.payload) for f in self._pending)
        if final:
            await self._write(b"", 0, None, None, final=True)

    async def _store(self, window: int, frames: list[Frame]) -> None:
        """Write one segment's frames: a chunk never spans two segments (the database checks)."""
        self._enter(window)
        if await self._write_frames(frames):
            return
        # The database knows of a pause or stop we were not told of yet: learn the
        # segments, keep only the frames inside them, and try once more.
        await self._refresh_windows()
        for index, kept in sorted(self._by_window(frames).items()):
            self._enter(index)
            if not await self._write_frames(kept):
                log.warning(
                    "audio outside the recorded window dropped",
                    extra={"recording_id": self.recording_id},
                )

    def _enter(self, window: int) -> None:
        """Audio of a later segment: a pause lies behind; skip leaves it out, silence fills it."""
        if window > self._window:
            self._window = window
            if self.pause_behavior == "skip":
                self._shift = None
            else:
                self._fill_pause = True

    async def _write_frames(self, frames: list[Frame]) -> bool:
        """Seal and store frames; False (and nothing stored) when the window check refuses."""
        snapshot = (self.out_samples, self._shift, self._fill_pause)
        arrivals = (frames[0].arrival, frames[-1].arrival)  # frames keep their arrival order
        for number, (piece, samples) in enumerate(self._interleave(frames)):
            if not await self._write(piece, samples, *arrivals, final=False):
                if number == 0:
                    self.out_samples, self._shift, self._fill_pause = snapshot
                    return False
                break  # cannot happen: every piece has the same arrival bounds
        return True

    async def _refresh_windows(self) -> None:
        async with self.sink.pool.acquire() as conn:
            rows = await conn.fetch(
                """SELECT started_at, ended_at FROM recording_segments
                   WHERE recording_id = $1 ORDER BY id""",
                self.recording_id,
            )
        self.windows = [Window(r["started_at"], r["ended_at"]) for r in rows]

    def _split_jitter(
        self, frames: list[Frame], keep_jitter: bool
    ) -> tuple[list[Frame], list[Frame]]:
        """Frames ready to seal, and the newest ones held back for late companions."""
        if not keep_jitter:
            return frames, []
        width = self.fmt.sample_bytes
        ends = [f.position + len(f.payload) // width for f in frames]
        horizon = max(ends) - int(JITTER_S * self.fmt.sample_rate_hz)
        ready = [f for f, end in zip(frames, ends, strict=True) if end <= horizon]
        held = [f for f, end in zip(frames, ends, strict=True) if end > horizon]
        return ready, held

    def _interleave(self, frames: list[Frame]) -> list[tuple[bytes, int]]:
        """Place frames on the output timeline; return sealed-size pieces (bytes, samples).

        Frames are split into runs at every jump larger than a gap worth filling
        (an hour, a clock reset), so no run ever asks for a flood of silence.
        """
        width, rate = self._width, self._rate
        if len(self.fmt.tracks) == 1 and self._shift is not None:
            # The usual case, a few hundred times a second per node: one track, frames in
            # order, each starting where the last ended. Nothing to place; join them.
            start = reach = self.out_samples + self._shift
            for f in frames:
                if f.position != reach:
                    break
                reach += len(f.payload) // width
            else:
                self._fill_pause = False
                self.out_samples += reach - start
                return _pieces(b"".join([f.payload for f in frames]), width)
        ordered = sorted(frames, key=lambda f: f.position)
        runs: list[list[Frame]] = [[ordered[0]]]
        reach = ordered[0].position + len(ordered[0].payload) // width
        for f in ordered[1:]:
            if f.position - reach > MAX_GAP_S * rate:
                runs.append([])
            runs[-1].append(f)
            reach = max(reach, f.position + len(f.payload) // width)
        pieces = []
        for run in runs:
            pieces.extend(self._interleave_run(run))
        return pieces

    def _interleave_run(self, frames: list[Frame]) -> list[tuple[bytes, int]]:
        rate, width = self.fmt.sample_rate_hz, self.fmt.sample_bytes
        first = frames[0].position
        if self._shift is None:  # first audio, or first after a resume in skip mode
            self._shift = first - self.out_samples
        start = self.out_samples + self._shift
        gap = first - start
        # Silence fills a pause in `silence` mode; elsewhere only short holes are filled.
        limit_s = MAX_SILENCE_FILL_S if self._fill_pause else MAX_GAP_S
        self._fill_pause = False
        if gap > limit_s * rate:
            log.warning(
                "timestamp discontinuity",
                extra={"recording_id": self.recording_id, "gap_ms": gap * 1000 // rate},
            )
            self._shift += gap
            start += gap
        end = max(f.position + len(f.payload) // width for f in frames)
        if end <= start:
            self.stats.frames_late += len(frames)
            return []
        count = end - start
        silence = SILENCE[self.fmt.encoding]
        channels = []
        # Where frames overlap (a repeated or backwards timestamp), the first to arrive wins:
        # write in reverse arrival order so earlier frames land last.
        by_arrival = sorted(frames, key=lambda f: f.arrival, reverse=True)
        for channel in range(len(self.fmt.tracks)):
            buf = bytearray(silence * count)
            for f in by_arrival:
                if f.channel != channel:
                    continue
                offset, data = f.position - start, f.payload
                if offset < 0:  # overlaps what was sealed already: keep only the new part
                    self.stats.frames_late += 1
                    data = data[-offset * width :]
                    offset = 0
                data = data[: (count - offset) * width]
                buf[offset * width : offset * width + len(data)] = data
            channels.append(buf)
        self.out_samples += count
        return _pieces(_interleave_channels(channels, width, count), width * len(channels))

    async def _write(
        self,
        plaintext: bytes,
        samples: int,
        first_arrival: datetime | None,
        last_arrival: datetime | None,
        *,
        final: bool,
    ) -> bool:
        """Record the chunk (only inside a segment), then seal it and append it.

        The database row comes first: a chunk the window check refuses is
        never sealed and never written; a crash between the row and the
        append leaves a row past the blob's end, which recovery trims.
        """
        index = self.next_index
        now = self.clock()
        accepted = await self.sink.record(
            ChunkRow(
                self.recording_id,
                index,
                self.blob_offset,
                CHUNK_HEADER.size + len(plaintext) + TAG_BYTES,
                self.out_samples - samples if samples else self.out_samples,
                samples,
                first_arrival or now,
                last_arrival or now,
                final,
                first_arrival is None,
            )
        )
        if not accepted:
            self.stats.chunks_refused += 1
            return False
        record = self.cipher.seal("mix", index, plaintext, final=final)
        offset = await self.sink.append(blob_key(self.recording_id), record)
        if offset != self.blob_offset:
            log.error("blob offset mismatch", extra={"recording_id": self.recording_id})
        self.blob_offset += len(record)
        self.next_index += 1
        self.stats.chunks += 1
        return True


def _pieces(mixed: bytes, frame_bytes: int) -> list[tuple[bytes, int]]:
    """Interleaved audio cut into pieces that seal to at most MAX_CHUNK_BYTES: (bytes, samples)."""
    step = max(frame_bytes, MAX_CHUNK_BYTES // frame_bytes * frame_bytes)
    return [
        (mixed[i : i + step], len(mixed[i : i + step]) // frame_bytes)
        for i in range(0, len(mixed), step)
    ]


def _interleave_channels(channels: list[bytearray], width: int, count: int) -> bytes:
    if len(channels) == 1:
        return bytes(channels[0])
    if width == 1:
        out = bytearray(count * 2)
        out[0::2], out[1::2] = channels[0], channels[1]
        return bytes(out)
    left, right = array.array("h", bytes(channels[0])), array.array("h", bytes(channels[1]))
    both = array.array("h", bytes(count * 4))
    both[0::2], both[1::2] = left, right
    return both.tobytes()


# One statement for every writer's chunk of a seal turn: per row the window check
# (an empty final chunk only needs its recording to have a segment), the row, and
# the recording's size. Returns the rows it kept.
_INSERT_CHUNKS = """
WITH c AS (
    SELECT * FROM unnest($1::text[], $2::int[], $3::bigint[], $4::int[], $5::bigint[],
                         $6::int[], $7::timestamptz[], $8::timestamptz[], $9::bool[],
                         $10::bool[])
        AS c(recording_id, idx, blob_offset, record_bytes, first_sample, samples,
             first_arrival, last_arrival, final, empty)
), ins AS (
    INSERT INTO recording_chunks (recording_id, idx, blob_offset, record_bytes, first_sample,
                                  samples, first_arrival, last_arrival, final)
    SELECT c.recording_id, c.idx, c.blob_offset, c.record_bytes, c.first_sample, c.samples,
           c.first_arrival, c.last_arrival, c.final
    FROM c
    WHERE EXISTS (
        SELECT 1 FROM recording_segments s
        WHERE s.recording_id = c.recording_id
          AND (c.empty OR (s.started_at <= c.first_arrival
                           AND coalesce(s.ended_at, 'infinity') >= c.last_arrival)))
    RETURNING recording_id, idx, record_bytes
), grown AS (
    UPDATE recordings r SET size_bytes = r.size_bytes + g.bytes
    FROM (SELECT recording_id, sum(record_bytes) AS bytes FROM ins GROUP BY recording_id) g
    WHERE r.id = g.recording_id
)
SELECT recording_id, idx FROM ins
"""
