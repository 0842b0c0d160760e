"""A recording in its stored codec, for `?encoding=` the codec itself: packets as received,
in the container tools open for that codec, never decoded and re-encoded.

- Opus: Ogg (RFC 7845), one logical stream per stored track.
- AMR-WB: the storage file format of RFC 4867 section 5 (`#!AMR-WB\\n`, `.amr`), one track.
- G.722: WAV with format tag 0x028F, one track.

Time is kept: where a track sent nothing, the file holds what its codec has for
nothing (an Opus packet of no frames, AMR-WB's NO_DATA frame, encoded silence
for G.722), so the file lasts as long as the recording and its tracks stay aligned.
"""

from __future__ import annotations

import functools
import io
import struct
from collections.abc import Iterable
from fractions import Fraction
from typing import Protocol

import av
import numpy as np

from telephony.media.codecs import AMRWB_MAGIC, amrwb_frames, packet_samples

CONTAINERS = {"opus": "audio/ogg", "amrwb": "audio/amr-wb", "g722": "audio/wav"}
EXTENSIONS = {"opus": "ogg", "amrwb": "amr", "g722": "wav"}
SINGLE_TRACK = frozenset({"amrwb", "g722"})  # their files hold one channel

Packet = tuple[int, int, bytes]  # (track, position, payload)

_OPUS_NOTHING = bytes([0xF8])  # TOC alone: a 20 ms CELT frame of no data (RFC 6716 3.2.1)
_OPUS_PRE_SKIP = 312  # libopus's encoder delay, as FFmpeg writes it in OpusHead
_AMR_NO_DATA = bytes([15 << 3 | 1 << 2])  # frame type 15, 20 ms of nothing


class Writer(Protocol):
    """Packets in (each track's in position order, batch by batch), file bytes out."""

    def feed(self, packets: Iterable[Packet]) -> bytes: ...
    def close(self) -> bytes: ...


def writer_for(codec: str, tracks: int, total_samples: int) -> Writer:
    if codec == "opus":
        return OggOpus(tracks)
    if codec == "amrwb":
        return AmrWb()
    if codec == "g722":
        return G722Wav(total_samples)
    raise ValueError(f"no container for {codec}")


class OggOpus:
    """An Ogg file of one Opus stream per track (48 kHz positions), written as it goes."""

    def __init__(self, tracks: int) -> None:
        self.sink = _Sink()
        self.out = av.open(self.sink, "w", format="ogg")
        self.streams = []
        for _ in range(tracks):
            stream = self.out.add_stream("libopus", rate=48000, layout="mono")
            ctx = stream.codec_context
            ctx.time_base = Fraction(1, 48000)
            ctx.open()
            ctx.extradata = _opus_head(_OPUS_PRE_SKIP)
            self.streams.append(stream)
        self.reach = [0] * tracks

    def feed(self, packets: Iterable[Packet]) -> bytes:
        for track, position, payload in packets:
            if track >= len(self.streams):
                continue
            while position - self.reach[track] >= 960:  # a hole of 20 ms or more: keep time
                self._mux(track, 960, _OPUS_NOTHING)
            self._mux(track, packet_samples("opus", payload), payload, at=position)
        return self.sink.take()

    def close(self) -> bytes:
        self.out.close()
        return self.sink.take()

    def _mux(self, track: int, length: int, data: bytes, at: int | None = None) -> None:
        pts = max(at if at is not None else 0, self.reach[track])
        packet = av.Packet(data)
        packet.stream = self.streams[track]
        packet.time_base = Fraction(1, 48000)
        packet.pts = packet.dts = pts
        packet.duration = length
        self.out.mux(packet)
        self.reach[track] = pts + length


class AmrWb:
    """The AMR-WB storage file of one track: 20-ms frames, NO_DATA where none came."""

    def __init__(self) -> None:
        self.reach = 0
        self.started = False

    def feed(self, packets: Iterable[Packet]) -> bytes:
        parts = [] if self.started else [AMRWB_MAGIC]
        self.started = True
        for _, position, payload in packets:
            holes = max(position - self.reach, 0) // 320
            frames = [f.storage() for f in amrwb_frames(payload)]
            parts.append(_AMR_NO_DATA * holes + b"".join(frames))
            self.reach = max(position, self.reach + holes * 320) + 320 * len(frames)
        return b"".join(parts)

    def close(self) -> bytes:
        return b"" if self.started else AMRWB_MAGIC


class G722Wav:
    """A WAV (format tag 0x028F) of one G.722 track, `total_samples` long at 16 kHz."""

    def __init__(self, total_samples: int) -> None:
        self.size = (total_samples + 1) // 2  # two samples a byte
        self.written = 0
        self.started = False

    def _header(self) -> bytes:
        fmt = struct.pack("<HHIIHHH", 0x028F, 1, 16000, 8000, 1, 4, 0)
        body = b"fmt " + struct.pack("<I", len(fmt)) + fmt + b"data" + struct.pack("<I", self.size)
        return b"RIFF" + struct.pack("<I", 4 + len(body) + self.size) + b"WAVE" + body

    def feed(self, packets: Iterable[Packet]) -> bytes:
        parts = [] if self.started else [self._header()]
        self.started = True
        for _, position, payload in packets:
            at = position // 2
            if at > self.written:
                parts.append(_g722_silence(min(at, self.size) - self.written))
                self.written = min(at, self.size)
            take = payload[max(self.written - at, 0) : max(self.size - at, 0)]
            parts.append(take)
            self.written += len(take)
        return b"".join(parts)

    def close(self) -> bytes:
        tail = self.feed(()) if not self.started else b""
        if self.written < self.size:
            tail += _g722_silence(self.size - self.written)
            self.written = self.size
        return tail


def _opus_head(pre_skip: int) -> bytes:
    """RFC 7845 identification header: one channel, mapping family 0."""
    return b"OpusHead" + struct.pack("<BBHIhB", 1, 1, pre_skip, 48000, 0, 0)


@functools.cache
def _g722_silence_second() -> bytes:
    """A second of G.722-encoded digital silence (its codes are not one constant byte)."""
    ctx = av.CodecContext.create("g722", "w")
    assert isinstance(ctx, av.AudioCodecContext)
    ctx.sample_rate, ctx.layout, ctx.format = 16000, "mono", "s16"
    ctx.time_base = Fraction(1, 16000)
    frame = av.AudioFrame.from_ndarray(np.zeros((1, 16000), np.int16), format="s16", layout="mono")
    frame.sample_rate, frame.pts = 16000, 0
    return b"".join(bytes(p) for p in [*ctx.encode(frame), *ctx.encode(None)])


def _g722_silence(size: int) -> bytes:
    second = _g722_silence_second()
    return (second * (size // len(second) + 1))[:size]


class _Sink(io.RawIOBase):
    """Where PyAV's muxer writes; what it wrote so far is taken as it goes."""

    def __init__(self) -> None:
        self._parts: list[bytes] = []

    def writable(self) -> bool:
        return True

    def write(self, data: bytes) -> int:  # type: ignore[override]
        self._parts.append(bytes(data))
        return len(data)

    def take(self) -> bytes:
        parts, self._parts = self._parts, []
        return b"".join(parts)
