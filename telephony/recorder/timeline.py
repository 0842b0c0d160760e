"""Where audio lands in a recording: the writer's arithmetic, pure (no I/O, no clock).

A stream's frames carry a position on the stream's timeline (from their
timestamps, or right after the track's previous frame). The recording's own
timeline (`out_samples`) runs only while it records; `shift` maps one onto
the other. The writer places each run of frames there, one channel per
track, interleaved: late or repeated audio keeps only what is new (the first
to arrive wins), a short hole becomes silence, a pause becomes silence of
its length in `silence` mode and nothing in `skip` mode, and a jump beyond
any gap worth filling (an hour, a clock reset) starts a new run instead of a
flood of silence.

Frames are also sorted into the recorded segments (windows) they *arrived*
in: the window rule of R2 keeps a frame only if it arrived inside one.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from itertools import pairwise
from typing import NamedTuple

import numpy as np

from telephony.domain.recordings import PauseBehavior
from telephony.media.codecs import pack
from telephony.media.rtp.stream import run_packets

SILENCE = {"mulaw": b"\xff", "alaw": b"\xd5", "l16le": b"\x00\x00", "l16be": b"\x00\x00"}
JITTER_S = 0.1  # late frames within this much are still placed
MAX_CHUNK_BYTES = 16 * 1024
MAX_GAP_S = 10.0  # a timestamp jump beyond this is a discontinuity, not silence
MAX_SILENCE_FILL_S = 600.0  # the longest pause `silence` mode fills


class Frame(NamedTuple):
    """One frame on its way to a chunk: a tuple, since thousands arrive every second."""

    channel: int
    position: int  # in samples of the stream timeline
    payload: bytes
    arrival: datetime
    samples: int = 0  # a packet's length (PacketTimeline); sample codecs count bytes
    # A run of RTP packets read in one tick (rtp/ports.py): the last one's arrival, and
    # each one's on the loop's clock with the offset to wall-clock seconds, so a window's
    # edge inside the run is judged packet by packet (`packets_of`). None: one packet.
    until: datetime | None = None
    spans: tuple[tuple[float, ...], float] | None = None


def packets_of(frame: Frame) -> list[Frame]:
    """A run as its packets, each with its own arrival (sample codecs, equal packets)."""
    if frame.spans is None:
        return [frame]
    arrivals, offset = frame.spans
    samples = frame.samples // len(arrivals)
    return [
        Frame(
            frame.channel,
            frame.position + i * samples,
            part,
            datetime.fromtimestamp(offset + at, UTC),
            samples,
        )
        for i, (part, at) in enumerate(run_packets(frame.payload, arrivals))
    ]


def last_arrival(frames: Sequence[Frame]) -> datetime:
    """When the last of the frames' audio arrived (a run's last packet counts)."""
    return max(f.arrival if f.until is None else f.until for f in frames)


@dataclass
class Window:
    """A recorded segment, in arrival time: [start, end)."""

    start: datetime
    end: datetime | None = None

    def contains(self, at: datetime) -> bool:
        return self.start <= at and (self.end is None or at < self.end)


def by_window(
    frames: list[Frame], windows: Sequence[Window], *, ordered: bool = True
) -> tuple[dict[int, list[Frame]], int]:
    """Frames grouped by the window they arrived in, and how many arrived in none.
    `ordered`: the frames are in arrival order (RTP's, released from a jitter window in
    sequence order, may not be; nor a stream's across a wall-clock step back)."""
    if frames and windows and ordered:
        # In arrival order, when the first and the last arrived inside the latest
        # window, all did (the usual case, checked in two comparisons).
        last = windows[-1]
        if last.contains(frames[0].arrival) and last.contains(last_arrival(frames)):
            return {len(windows) - 1: frames}, 0
    groups: dict[int, list[Frame]] = {}
    dropped = 0
    for f in frames:
        index = next((i for i, w in enumerate(windows) if w.contains(f.arrival)), None)
        if f.until is not None and (index is None or not windows[index].contains(f.until)):
            # An edge falls inside the run (or the run began outside every window): each
            # of its packets is judged by its own arrival, as if it had come alone.
            parts, dropped_parts = by_window(packets_of(f), windows, ordered=False)
            for i, kept in parts.items():
                groups.setdefault(i, []).extend(kept)
            dropped += dropped_parts
            continue
        if index is None:
            dropped += 1
        else:
            groups.setdefault(index, []).append(f)
    return groups, dropped


def in_arrival_order(frames: Sequence[Frame]) -> bool:
    return all(a.arrival <= b.arrival for a, b in pairwise(frames))


@dataclass
class Timeline:
    """The recording's timeline and how the stream maps onto it, for one writer."""

    tracks: int
    sample_bytes: int
    sample_rate_hz: int
    silence: bytes  # one sample of silence in the stored codec
    pause_behavior: PauseBehavior
    out_samples: int = 0  # samples per channel stored so far
    shift: int | None = None  # stream position of out_samples; None: realign at the next run
    window: int = 0  # the window the last stored audio belongs to
    fill_pause: bool = False  # the next run follows a pause in silence mode
    late_frames: int = field(default=0)  # frames that arrived after their place was sealed
    discontinuities: int = field(default=0)

    @property
    def frame_bytes(self) -> int:
        """Bytes of one stored frame: a sample of every channel."""
        return self.sample_bytes * self.tracks

    def enter(self, window: int) -> None:
        """Audio of a later window: a pause lies behind; skip leaves it out, silence fills it."""
        if window > self.window:
            self.window = window
            if self.pause_behavior is PauseBehavior.SKIP:
                self.shift = None
            else:
                self.fill_pause = True

    def snapshot(self) -> tuple[int, int | None, bool, int, int]:
        return (
            self.out_samples,
            self.shift,
            self.fill_pause,
            self.late_frames,
            self.discontinuities,
        )

    def restore(self, snapshot: tuple[int, int | None, bool, int, int]) -> None:
        """Undo a placement whose chunk the database refused (nothing of it was stored)."""
        (
            self.out_samples,
            self.shift,
            self.fill_pause,
            self.late_frames,
            self.discontinuities,
        ) = snapshot

    def split_jitter(self, frames: list[Frame]) -> tuple[list[Frame], list[Frame]]:
        """Frames ready to seal, and the newest ones held back for late companions."""
        if not frames:
            return [], []
        width = self.sample_bytes
        ends = [f.position + len(f.payload) // width for f in frames]
        horizon = max(ends) - int(JITTER_S * self.sample_rate_hz)
        # Tracks whose frames do not share boundaries (RTP streams, each anchored at its own
        # first packet): a seal ending inside one track's frame would give the rest of it
        # silence and cut its head when it comes. Cut at the horizon instead. Both lists
        # keep the frames' arrival order: the window check and the placement rely on it.
        cut_straddling = self.tracks > 1
        if cut_straddling and any(f.spans is not None for f in frames):
            # A run is cut at a packet's edge, and the packet straddling the horizon as a
            # frame is: what is held keeps each packet's arrival (`packets_of`).
            frames = [
                p
                for f, end in zip(frames, ends, strict=True)
                for p in (packets_of(f) if end > horizon and f.position < horizon else (f,))
            ]
            ends = [f.position + len(f.payload) // width for f in frames]
        ready: list[Frame] = []
        held: list[Frame] = []
        for f, end in zip(frames, ends, strict=True):
            if end <= horizon:
                ready.append(f)
            elif cut_straddling and f.position < horizon:
                cut = (horizon - f.position) * width
                ready.append(f._replace(payload=f.payload[:cut]))
                held.append(f._replace(position=horizon, payload=f.payload[cut:]))
            else:
                held.append(f)
        return ready, held

    def place(self, frames: list[Frame]) -> list[tuple[bytes, int]]:
        """Place frames (in the order they arrived) on the recording's timeline; sealed-size
        pieces (bytes, samples)."""
        if not frames:
            return []
        width, rate = self.sample_bytes, self.sample_rate_hz
        if self.tracks == 1 and self.shift is not None:
            # The usual case, a few hundred times a second per node: one track, frames in
            # order, each starting where the last ended. Nothing to place; join them.
            start = reach = self.out_samples + self.shift
            for f in frames:
                if f.position != reach:
                    break
                reach += len(f.payload) // width
            else:
                self.fill_pause = False
                self.out_samples += reach - start
                return pieces(b"".join([f.payload for f in frames]), width)
        # Each frame keeps its place in arrival order: two frames stamped with the same
        # arrival time (the clock's resolution) still have a first and a second.
        ordered = sorted(enumerate(frames), key=lambda pair: pair[1].position)
        runs: list[list[tuple[int, Frame]]] = [[ordered[0]]]
        reach = ordered[0][1].position + len(ordered[0][1].payload) // width
        for arrived, f in ordered[1:]:
            if f.position - reach > MAX_GAP_S * rate:
                runs.append([])
            runs[-1].append((arrived, f))
            reach = max(reach, f.position + len(f.payload) // width)
        out = []
        for run in runs:
            out.extend(self._place_run(run))
        return out

    def _place_run(self, run: list[tuple[int, Frame]]) -> list[tuple[bytes, int]]:
        rate, width = self.sample_rate_hz, self.sample_bytes
        frames = [f for _, f in run]
        first = frames[0].position
        if self.shift is None:  # first audio, or first after a resume in skip mode
            self.shift = first - self.out_samples
        start = self.out_samples + self.shift
        gap = first - start
        # Silence fills a pause in `silence` mode; elsewhere only short holes are filled.
        limit_s = MAX_SILENCE_FILL_S if self.fill_pause else MAX_GAP_S
        self.fill_pause = False
        if gap > limit_s * rate:
            self.discontinuities += 1
            self.shift += gap
            start += gap
        end = max(f.position + len(f.payload) // width for f in frames)
        if end <= start:
            self.late_frames += len(frames)
            return []
        count = end - start
        channels = []
        # Where frames overlap (a repeated or backwards timestamp), the first to arrive wins:
        # write in reverse arrival order so earlier frames land last.
        by_arrival = [f for _, f in sorted(run, key=lambda pair: pair[0], reverse=True)]
        for channel in range(self.tracks):
            buf = bytearray(self.silence * count)
            for f in by_arrival:
                if f.channel != channel:
                    continue
                offset, data = f.position - start, f.payload
                if offset < 0:  # overlaps what was sealed already: keep only the new part
                    self.late_frames += 1
                    data = data[-offset * width :]
                    offset = 0
                data = data[: (count - offset) * width]
                buf[offset * width : offset * width + len(data)] = data
            channels.append(buf)
        self.out_samples += count
        return pieces(interleave(channels, width), width * len(channels))


def pieces(mixed: bytes, frame_bytes: int) -> list[tuple[bytes, int]]:
    """Interleaved audio cut into pieces that seal to at most MAX_CHUNK_BYTES: (bytes, samples)."""
    step = max(frame_bytes, MAX_CHUNK_BYTES // frame_bytes * frame_bytes)
    return [
        (mixed[i : i + step], len(mixed[i : i + step]) // frame_bytes)
        for i in range(0, len(mixed), step)
    ]


def interleave(channels: Sequence[bytes | bytearray], width: int) -> bytes:
    """Channels of equal length, sample by sample: c0 c1 … cN c0 c1 … (any number of them)."""
    if width not in (1, 2):
        raise ValueError("samples are 1 byte (G.711) or 2 bytes (L16)")
    if len(channels) == 1:
        return bytes(channels[0])
    dtype = np.uint8 if width == 1 else np.uint16
    stacked = np.stack([np.frombuffer(bytes(c), dtype) for c in channels], axis=1)
    return stacked.tobytes()


@dataclass
class PacketTimeline:
    """The recording's timeline for a packet codec (G.722, Opus, AMR-WB): the same mapping
    as `Timeline`, but packets are kept whole, as they arrived, never cut or mixed.

    Each packet is placed at its position on the recording's timeline and
    stored with it (media.codecs.pack): a hole is left as it is (silence once
    decoded), a pause in `silence` mode keeps its length and in `skip` mode
    none, and a jump beyond MAX_GAP_S starts a new run. A packet that ends
    where the recording was sealed already, or that overlaps its own track's
    previous packet, is late: the first to arrive wins, as with samples.
    """

    tracks: int
    sample_rate_hz: int
    pause_behavior: PauseBehavior
    out_samples: int = 0  # the recording's length so far, in samples of the stored rate
    shift: int | None = None
    window: int = 0
    fill_pause: bool = False
    late_frames: int = field(default=0)
    discontinuities: int = field(default=0)
    reach: list[int] = field(default_factory=list)  # where each track's last packet ended

    def __post_init__(self) -> None:
        if not self.reach:
            self.reach = [self.out_samples] * self.tracks

    def enter(self, window: int) -> None:
        if window > self.window:
            self.window = window
            if self.pause_behavior is PauseBehavior.SKIP:
                self.shift = None
            else:
                self.fill_pause = True

    def snapshot(self) -> tuple[int, int | None, bool, int, int, tuple[int, ...]]:
        return (
            self.out_samples,
            self.shift,
            self.fill_pause,
            self.late_frames,
            self.discontinuities,
            tuple(self.reach),
        )

    def restore(self, snapshot: tuple[int, int | None, bool, int, int, tuple[int, ...]]) -> None:
        (
            self.out_samples,
            self.shift,
            self.fill_pause,
            self.late_frames,
            self.discontinuities,
            reach,
        ) = snapshot
        self.reach = list(reach)

    def split_jitter(self, frames: list[Frame]) -> tuple[list[Frame], list[Frame]]:
        if not frames:
            return [], []
        horizon = max(f.position + f.samples for f in frames) - int(JITTER_S * self.sample_rate_hz)
        ready = [f for f in frames if f.position + f.samples <= horizon]
        held = [f for f in frames if f.position + f.samples > horizon]
        return ready, held

    def place(self, frames: list[Frame]) -> list[tuple[bytes, int]]:
        """Packets (in the order they arrived) onto the recording's timeline; sealed-size
        pieces (packed packets, samples the piece adds to the recording)."""
        if not frames:
            return []
        ordered = sorted(enumerate(frames), key=lambda pair: (pair[1].position, pair[0]))
        runs: list[list[Frame]] = [[ordered[0][1]]]
        reach = ordered[0][1].position + ordered[0][1].samples
        for _, f in ordered[1:]:
            if f.position - reach > MAX_GAP_S * self.sample_rate_hz:
                runs.append([])
            runs[-1].append(f)
            reach = max(reach, f.position + f.samples)
        out = []
        for run in runs:
            out.extend(self._place_run(run))
        return out

    def _place_run(self, frames: list[Frame]) -> list[tuple[bytes, int]]:
        rate = self.sample_rate_hz
        if self.shift is None:  # first audio, or first after a resume in skip mode
            self.shift = frames[0].position - self.out_samples
        gap = frames[0].position - (self.out_samples + self.shift)
        limit_s = MAX_SILENCE_FILL_S if self.fill_pause else MAX_GAP_S
        self.fill_pause = False
        if gap > limit_s * rate:
            self.discontinuities += 1
            self.shift += gap
        began = self.out_samples
        kept: list[tuple[int, bytes]] = []  # (position, packed), in position order
        for f in frames:
            at = f.position - self.shift
            end = at + f.samples
            if at < 0 or end <= began or at < self.reach[f.channel]:
                self.late_frames += 1
                continue
            self.reach[f.channel] = end
            self.out_samples = max(self.out_samples, end)
            kept.append((at, pack(f.channel, at, f.payload)))
        if not kept:
            return []
        return _packet_pieces(kept, began, self.out_samples)


def _packet_pieces(kept: list[tuple[int, bytes]], start: int, end: int) -> list[tuple[bytes, int]]:
    """Packets cut into pieces of at most MAX_CHUNK_BYTES (a packet is never split); each
    piece covers the recording from where the last one ended to its next piece's first
    packet, the last one to `end`."""
    groups: list[list[tuple[int, bytes]]] = [[]]
    size = 0
    for packet in kept:
        if groups[-1] and size + len(packet[1]) > MAX_CHUNK_BYTES:
            groups.append([])
            size = 0
        groups[-1].append(packet)
        size += len(packet[1])
    out = []
    for number, group in enumerate(groups):
        following = groups[number + 1][0][0] if number + 1 < len(groups) else end
        stop = max(start, min(following, end))
        out.append((b"".join(p for _, p in group), stop - start))
        start = stop
    return out
