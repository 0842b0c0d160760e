"""Frames in, sealed chunks out: one interleaving writer per live recording.

Why one writer per recording rather than one per track: a download needs the
tracks aligned sample by sample, so the writer aligns them once, as audio
arrives, and seals interleaved frames, one channel per track in the order
the stream declared them (`timeline.py` does the arithmetic). Each chunk is
then a ready stretch of the recording in the codec's own bytes: μ-law stays
μ-law, L16 stays L16.

The window rule (R2): a frame is kept only if it *arrived* inside a segment
the database recorded for this recording. The writer tracks segments from
control messages, and the database re-checks every chunk in the same
statement that records it, before its bytes are sealed or written. Frames
outside the window are dropped in memory.

Where the bytes go: each seal turn appends the turn's records to the
recording's current part in the node's spool (synced: the crash bound);
every PART_SECONDS, and when the writer closes, the part moves whole to the
blob store and a new one begins.

The media socket never waits for disk or database: `offer` only appends to a
bounded queue; when it overflows the frame is dropped and the loss lands in
the recording's `gaps`.

A spool disk that fills (S7) stops the writing, not the call: the sealed
record the disk had no room for is kept in memory (its row is in already,
and sealing that index again would reuse its nonce), frames are dropped in
memory, and once the disk has RESUME_FREE_BYTES free the record is appended
and writing goes on, the lost stretch a `storage-full` gap. A recording that
ends before there is room loses the held record's row instead, has no final
chunk and is not completed: its process's recovery makes it `interrupted`.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

import asyncpg

from storage.blobs.spool import Part
from storage.chunks import ChunkRow
from storage.keys.crypto import CHUNK_HEADER, TAG_BYTES, ChunkCipher
from telephony.domain.errors import Unavailable
from telephony.domain.recordings import PauseBehavior
from telephony.domain.tracks import Track
from telephony.media.codecs import PACKET_CODECS
from telephony.media.events import Audio
from telephony.recorder.seal import ChunkSink
from telephony.recorder.timeline import (
    MAX_CHUNK_BYTES,
    SILENCE,
    Frame,
    PacketTimeline,
    Timeline,
    Window,
    by_window,
    in_arrival_order,
    last_arrival,
)
from telephony.usecases import media_lifecycle

log = logging.getLogger(__name__)

QUEUE_FRAMES = 500  # ten seconds of 20 ms frames per track
PART_SECONDS = 10.0  # a part moves to the blob store this often (and at the end)
SHIP_ATTEMPTS = 3  # at close, before the part is left to recovery
SHIP_WARN_EVERY_S = 30.0  # while the store fails, the warning repeats this often, not each turn
CHUNK_TRACK = "mix"  # the AEAD stream's name: one per recording, every track interleaved
# A recording stopped by a full spool disk resumes once this much is free: minutes of audio,
# so a disk hovering at its last bytes does not cut the recording into many gaps.
RESUME_FREE_BYTES = 8 * 1024 * 1024
_FULL = (errno.ENOSPC, errno.EDQUOT)
# A Frame made without NamedTuple's Python-level __new__: half its cost, once a frame.
_frame = tuple.__new__


class _NoRoom(Exception):
    """A sealed record could not be appended: the writer now holds it (see the module doc)."""


@dataclass(frozen=True)
class _Held:
    record: bytes
    first_sample: int
    samples: int
    since: float  # monotonic
    reason: str  # the gap's: storage-full, or storage-error for any other disk failure


@dataclass(frozen=True)
class AudioFormat:
    encoding: str
    sample_rate_hz: int
    tracks: tuple[Track, ...]  # channel order of the stored audio

    @property
    def sample_bytes(self) -> int:
        return 2 if self.encoding.startswith("l16") else 1

    @property
    def packets(self) -> bool:
        """Kept as packets (G.722, Opus, AMR-WB), not as interleaved samples."""
        return self.encoding in PACKET_CODECS


@dataclass
class WriterStats:
    frames_in: int = 0
    frames_dropped_window: int = 0
    frames_dropped_overflow: int = 0
    chunks: int = 0
    chunks_refused: int = 0
    frames_dropped_storage: int = 0  # while the spool's disk had no room


@dataclass(eq=False)
class RecordingWriter:
    recording_id: str
    pause_behavior: PauseBehavior
    fmt: AudioFormat
    cipher: ChunkCipher
    sink: ChunkSink
    windows: list[Window]
    next_index: int = 0
    blob_offset: int = 0  # the end of the recording's stream so far
    out_samples: int = 0
    clock: Callable[[], datetime] = lambda: datetime.now(UTC)
    part_seconds: float = PART_SECONDS
    stats: WriterStats = field(default_factory=WriterStats)

    def __post_init__(self) -> None:
        # The socket's side appends, the writer task takes all at each cycle: a deque
        # with a bound, not an asyncio.Queue, since nobody ever awaits a frame.
        self.queue_bound = QUEUE_FRAMES * len(self.fmt.tracks)
        self._inbox: deque[Frame] = deque()
        self._pending: list[Frame] = []
        self._pending_bytes = 0
        self._next_pos = [0] * len(self.fmt.tracks)
        self.timeline: Timeline | PacketTimeline
        if self.fmt.packets:
            self.timeline = PacketTimeline(
                tracks=len(self.fmt.tracks),
                sample_rate_hz=self.fmt.sample_rate_hz,
                pause_behavior=self.pause_behavior,
                out_samples=self.out_samples,
            )
        else:
            self.timeline = Timeline(
                tracks=len(self.fmt.tracks),
                sample_bytes=self.fmt.sample_bytes,
                sample_rate_hz=self.fmt.sample_rate_hz,
                silence=SILENCE[self.fmt.encoding],
                pause_behavior=self.pause_behavior,
                out_samples=self.out_samples,
            )
        # Where the chunks on disk end, in samples: the timeline's count runs ahead of it
        # while a chunk is on its way (its row, its append).
        self.stored_samples = self.out_samples
        self._wake = asyncio.Event()
        self._closed = False
        self._overflow_since: float | None = None
        self._task: asyncio.Task[None] | None = None
        # Looked up 50 times a second per track: plain attributes, not properties.
        self._channel_of = {track.name: i for i, track in enumerate(self.fmt.tracks)}
        self._width = self.fmt.sample_bytes
        self._rate = self.fmt.sample_rate_hz
        self._part = Part(self.recording_id, self.blob_offset)
        self._part_opened = time.monotonic()
        self._unshipped: list[Part] = []  # parts whose move to the store failed: retried
        # Moves to the blob store run beside sealing, never in its way: an object store
        # that is slow or down holds up only this task while the spool keeps growing.
        self._shipping: asyncio.Task[bool] | None = None
        self._ship_warned_at = 0.0  # monotonic time of the last "move failed" warning
        self._held: _Held | None = None  # the record the spool's disk had no room for
        self._latest_arrival = datetime.min.replace(tzinfo=UTC)
        # Order is judged per batch: `_in_order` for the frames offered since the queue was
        # last taken (each no earlier than any before it), `_pending_ordered` for what the
        # writer holds. One frame out of order (a jitter window's release, a leg latched
        # after the other) must not cost every later turn the frame-by-frame window check.
        self._in_order = True
        self._pending_ordered = True

    # -- the media socket's side: never blocks ------------------------------------

    @property
    def recording(self) -> bool:
        return bool(self.windows) and self.windows[-1].end is None

    @property
    def writing(self) -> bool:
        """False while the spool's disk has no room: frames are dropped in memory."""
        return self._held is None

    def offer(self, audio: Audio, arrival: datetime) -> None:
        """Hand over one frame; dropped at once outside the window or when the queue is full."""
        self.stats.frames_in += 1
        channel = self._channel_of.get(audio.track)
        if channel is None:
            return  # a track the recording does not store
        if audio.position is not None:
            position = audio.position
        elif audio.timestamp_ms is not None:
            position = audio.timestamp_ms * self._rate // 1000
        else:
            position = self._next_pos[channel]
        samples = audio.samples if audio.samples is not None else len(audio.payload) // self._width
        # The stream's clock runs during a pause too: a frame without a timestamp is
        # placed after the last one *received*, dropped or not, so silence mode fills
        # a pause with silence of its length.
        self._next_pos[channel] = position + samples
        self._admit(channel, position, audio.payload, arrival, samples)

    def offer_placed(
        self,
        track: str,
        payload: bytes,
        position: int,
        arrival: datetime,
        run: tuple[datetime, tuple[float, ...], float] | None = None,
    ) -> None:
        """`offer` for audio already placed on the stream's clock (RTP's): the same window
        and queue, without an `Audio` made for each packet. `run`: the audio is a run of
        packets (rtp/ports.py), with the last one's arrival and each one's (Frame.spans),
        so the window rule still judges every packet."""
        self.stats.frames_in += 1
        channel = self._channel_of.get(track)
        if channel is None:
            return
        if run is None:
            self._admit(channel, position, payload, arrival, len(payload) // self._width)
        else:
            until, arrivals, offset = run
            samples = len(payload) // self._width
            self._admit(channel, position, payload, arrival, samples, until, (arrivals, offset))

    def _admit(
        self,
        channel: int,
        position: int,
        payload: bytes,
        arrival: datetime,
        samples: int,
        until: datetime | None = None,
        spans: tuple[tuple[float, ...], float] | None = None,
    ) -> None:
        windows = self.windows
        if self._closed or not windows:
            self.stats.frames_dropped_window += 1
            return
        end = windows[-1].end
        if end is not None and arrival >= end:
            # Paused or stopped. A frame that *arrived* before that still belongs to the
            # window (RTP's, held in its jitter window, is offered up to 80 ms later).
            self.stats.frames_dropped_window += 1
            return
        if arrival >= self._latest_arrival:
            self._latest_arrival = arrival
        else:
            self._in_order = False  # by_window checks every frame this turn
        if len(self._inbox) < self.queue_bound:
            frame = (channel, position, payload, arrival, samples, until, spans)
            self._inbox.append(_frame(Frame, frame))
        else:
            self.stats.frames_dropped_overflow += 1
            if self._overflow_since is None:
                self._overflow_since = time.monotonic()
                log.error(
                    "recording queue full: dropping audio",
                    extra={"recording_id": self.recording_id, **self.sink.stalls()},
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

    async def close(self, *, final: bool) -> bool:
        """Seal what is left (and the final chunk when the recording ended), then move the
        last part to the blob store. False when that move failed: the spool keeps the part
        and recovery ships it."""
        self._closed = True
        self._wake.set()
        self.sink.unregister(self)
        if self._task is not None:
            await self._task
        self._drain_queue()
        await self._seal(final=final)
        if self._held is not None:
            await self._give_up_held()
            await self._ship_all()  # what was sealed before the disk filled still moves
            return False
        return await self._ship_all()

    async def _run(self) -> None:
        while not self._closed:
            await self._wake.wait()
            self._wake.clear()
            self._drain_queue()
            try:
                await self._seal(final=False, keep_jitter=not self._closed)
                await self._roll_part()
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
        # In the same step as the frames move: one offered meanwhile is judged with them.
        self._pending_ordered = self._pending_ordered and self._in_order
        self._in_order = True
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
            "at_ms": self.timeline.out_samples * 1000 // self.fmt.sample_rate_hz,
            "duration_ms": round(lost_s * 1000),
            "reason": "overload",
        }
        await media_lifecycle.report_gap(self.sink.pool, self.recording_id, gap)

    # -- parts: spool to blob store ------------------------------------------------

    async def _roll_part(self) -> None:
        """Every part_seconds, the current part closes and a new one begins; closed parts
        move to the store in the background (retried each turn while the store fails)."""
        fresh = self._part.offset == self.blob_offset
        if not fresh and time.monotonic() - self._part_opened >= self.part_seconds:
            self._unshipped.append(self._part)
            self._part = Part(self.recording_id, self.blob_offset)
            self._part_opened = time.monotonic()
        if self._unshipped and (self._shipping is None or self._shipping.done()):
            self._shipping = asyncio.create_task(
                self._ship_pending(), name=f"ship-{self.recording_id}"
            )

    async def _ship_pending(self) -> bool:
        while self._unshipped:
            part = self._unshipped[0]
            try:
                await self.sink.ship(part)
            except (OSError, Unavailable) as exc:
                if time.monotonic() - self._ship_warned_at < SHIP_WARN_EVERY_S:
                    return False  # said already; the spool keeps the part
                self._ship_warned_at = time.monotonic()
                log.warning(
                    "moving a part to the blob store failed; it stays in the spool",
                    extra={
                        "recording_id": self.recording_id,
                        "offset": part.offset,
                        "error": str(exc) or type(exc).__name__,
                        "unshipped": len(self._unshipped),
                    },
                )
                return False
            except Exception:  # the background move must never end with an unread error
                log.exception(
                    "moving a part to the blob store failed; it stays in the spool",
                    extra={"recording_id": self.recording_id, "offset": part.offset},
                )
                return False
            self._unshipped.pop(0)
        return True

    async def _ship_all(self) -> bool:
        if self._shipping is not None:
            await self._shipping  # never raises: failures are logged and left for a retry
        if self._part.offset != self.blob_offset:
            self._unshipped.append(self._part)
            self._part = Part(self.recording_id, self.blob_offset)
        for attempt in range(SHIP_ATTEMPTS):
            if await self._ship_pending():
                return True
            await asyncio.sleep(0.2 * (attempt + 1))
        return False

    # -- sealing -------------------------------------------------------------------

    async def _seal(self, *, final: bool, keep_jitter: bool = False) -> None:
        if self._held is not None and not await self._room_again(closing=final or self._closed):
            self._drop_pending()
            return
        pending, self._pending = self._pending, []
        ordered = self._pending_ordered
        groups, dropped = by_window(pending, self.windows, ordered=ordered)
        self.stats.frames_dropped_window += dropped
        unstored = len(pending) - dropped
        try:
            for index, frames in sorted(groups.items()):
                is_open = index == len(self.windows) - 1 and self.windows[index].end is None
                if keep_jitter and is_open:
                    ready, held = self.timeline.split_jitter(frames)
                    self._pending.extend(held)
                else:
                    ready = frames
                unstored -= len(frames) - len(ready)  # those held for jitter stay pending
                if ready:
                    await self._store(index, ready, ordered=ordered)
                unstored -= len(ready)
            if final:
                await self._write(b"", 0, self.timeline.out_samples, None, None, final=True)
        except _NoRoom:
            # This turn's frames not yet stored are lost (a group partly stored counts whole).
            self.stats.frames_dropped_storage += unstored
            self._drop_pending()
        # What is held for the next turn keeps its order (split_jitter keeps it), or not.
        self._pending_ordered = ordered or in_arrival_order(self._pending)
        self._pending_bytes = sum(len(f.payload) for f in self._pending)

    def _drop_pending(self) -> None:
        self.stats.frames_dropped_storage += len(self._pending)
        self._pending = []
        self._pending_ordered = True
        self._pending_bytes = 0

    # -- a spool disk without room (S7) ------------------------------------------

    def _hold(self, record: bytes, first_sample: int, samples: int, exc: OSError) -> None:
        reason = "storage-full" if exc.errno in _FULL else "storage-error"
        self._held = _Held(record, first_sample, samples, time.monotonic(), reason)
        log.error(
            "the spool could not take a sealed chunk: the recording stops writing until "
            "its disk has room, and the call goes on",
            extra={"recording_id": self.recording_id, "error": str(exc), "reason": reason},
        )

    async def _room_again(self, *, closing: bool) -> bool:
        """Append the held record once the disk has room (at close: one last try, whatever
        the room); True when it is in and writing goes on."""
        held = self._held
        assert held is not None
        if not closing:
            try:
                if await self.sink.spool.probe() < RESUME_FREE_BYTES:
                    return False
            except OSError:
                return False
        try:
            offset = await self.sink.append(self._part, held.record)
        except OSError:
            return False
        self._appended(held.record, offset, held.first_sample + held.samples)
        self._held = None
        lost_ms = round((time.monotonic() - held.since) * 1000)
        log.warning(
            "the spool has room again: the recording goes on",
            extra={"recording_id": self.recording_id, "lost_ms": lost_ms},
        )
        try:
            await self._report_gap(held, held.first_sample + held.samples, lost_ms)
        except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError):
            log.exception("recording a gap failed", extra={"recording_id": self.recording_id})
        return True

    async def _give_up_held(self) -> None:
        """The recording ends with its held record unwritten: the record's row goes, so the
        rows end where the stored bytes do (recovery would trim it too, if this fails)."""
        held = self._held
        assert held is not None
        self._held = None
        lost_ms = round((time.monotonic() - held.since) * 1000)
        try:
            await media_lifecycle.trim_rows(self.sink.pool, self.recording_id, self.blob_offset)
            await self._report_gap(held, held.first_sample, lost_ms)
        except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError):
            log.exception(
                "the unwritten chunk's row stays until recovery",
                extra={"recording_id": self.recording_id},
            )

    async def _report_gap(self, held: _Held, at_sample: int, lost_ms: int) -> None:
        gap = {
            "at_ms": at_sample * 1000 // self.fmt.sample_rate_hz,
            "duration_ms": lost_ms,
            "reason": held.reason,
        }
        await media_lifecycle.report_gap(self.sink.pool, self.recording_id, gap)

    async def _store(self, window: int, frames: list[Frame], *, ordered: bool) -> None:
        """Write one segment's frames: a chunk never spans two segments (the database checks)."""
        self.timeline.enter(window)
        if await self._write_frames(frames, ordered=ordered):
            return
        # The database knows of a pause or stop we were not told of yet: learn the
        # segments, keep only the frames inside them, and try once more.
        segments = await media_lifecycle.segments_of(self.sink.pool, self.recording_id)
        self.windows = [Window(s.started_at, s.ended_at) for s in segments]
        groups, dropped = by_window(frames, self.windows, ordered=ordered)
        self.stats.frames_dropped_window += dropped
        for index, kept in sorted(groups.items()):
            self.timeline.enter(index)
            if not await self._write_frames(kept, ordered=ordered):
                log.warning(
                    "audio outside the recorded window dropped",
                    extra={"recording_id": self.recording_id},
                )

    async def _write_frames(self, frames: list[Frame], *, ordered: bool) -> bool:
        """Seal and store frames; False (and nothing stored) when the window check refuses."""
        snapshot = self.timeline.snapshot()
        # The chunk's arrival bounds, which the database checks against the segments.
        first_arrival = frames[0].arrival if ordered else min(f.arrival for f in frames)
        arrivals = (first_arrival, last_arrival(frames))
        first = self.timeline.out_samples
        for number, (piece, samples) in enumerate(self.timeline.place(frames)):
            try:
                written = await self._write(piece, samples, first, *arrivals, final=False)
            except _NoRoom:
                # The pieces after the held one are lost: the recording's timeline ends
                # with it, and what comes once there is room lands after the hole.
                self.timeline.out_samples = first + samples
                raise
            if not written:
                if number == 0:
                    self.timeline.restore(snapshot)  # type: ignore[arg-type]  # its own kind
                    return False
                break  # cannot happen: every piece has the same arrival bounds
            first += samples
        return True

    async def _write(
        self,
        plaintext: bytes,
        samples: int,
        first_sample: int,
        first_arrival: datetime | None,
        last_arrival: datetime | None,
        *,
        final: bool,
    ) -> bool:
        """Record the chunk (only inside a segment), then seal it and append it.

        The database row comes first: a chunk the window check refuses is
        never sealed and never written; a crash between the row and the
        append leaves a row past the stored end, which recovery trims. An
        append the disk refuses leaves the record held (`_NoRoom`).
        """
        index = self.next_index
        now = self.clock()
        accepted = await self.sink.record(
            ChunkRow(
                self.recording_id,
                index,
                self.blob_offset,
                CHUNK_HEADER.size + len(plaintext) + TAG_BYTES,
                first_sample,
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
        record = self.cipher.seal(CHUNK_TRACK, index, plaintext, final=final)
        try:
            offset = await self.sink.append(self._part, record)
        except OSError as exc:
            self._hold(record, first_sample, samples, exc)
            raise _NoRoom from exc
        self._appended(record, offset, first_sample + samples)
        return True

    def _appended(self, record: bytes, offset: int, stored_samples: int) -> None:
        if self._part.offset + offset != self.blob_offset:
            log.error("stream offset mismatch", extra={"recording_id": self.recording_id})
        self.blob_offset += len(record)
        self.next_index += 1
        self.stored_samples = stored_samples
        self.stats.chunks += 1
