"""Stored codec bytes to a WAV file that common players open: pure, no I/O.

The recorder keeps the codec's own bytes (μ-law, A-law, L16 in either byte
order), one channel per track, interleaved in the order the stream declared
its tracks. A download asks for one of three WAV encodings (16-bit PCM for
browsers, μ-law or A-law for telephony tools) and a channel layout fixed by the
recording: `dual` gives two channels (0: every counterpart track, 1: every
track of the customer's side; a side with no track is silence, a side with
several tracks is their mix), `mono` one channel (every track mixed).

Why numpy and not `audioop`: audioop is gone in Python 3.13. G.711 decoding is
a 256-entry table applied with `numpy.take`, about five times faster than
`bytes.translate` with an interleave; mixing and μ-law encoding are vector
operations too, so every layout costs about the same per byte.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

import numpy as np

from telephony.domain.recordings import Channels
from telephony.domain.tracks import MAX_TRACKS, Side, Track, channels_by_side

# -- G.711 (ITU-T G.711, the classic Sun reference formulas) ----------------------


def ulaw_to_linear(code: int) -> int:
    code = ~code & 0xFF
    magnitude = (((code & 0x0F) << 3) + 0x84) << ((code >> 4) & 0x07)
    return 0x84 - magnitude if code & 0x80 else magnitude - 0x84


def alaw_to_linear(code: int) -> int:
    code ^= 0x55
    exponent, mantissa = (code >> 4) & 0x07, code & 0x0F
    first_segment = exponent == 0
    magnitude = (
        (mantissa << 4) + 8 if first_segment else ((mantissa << 4) + 0x108) << (exponent - 1)
    )
    return magnitude if code & 0x80 else -magnitude


_ULAW_BIAS = 0x84
_ULAW_CLIP = 32635


def linear_to_ulaw(sample: int) -> int:
    sign = 0x80 if sample < 0 else 0
    magnitude = min(-sample if sign else sample, _ULAW_CLIP) + _ULAW_BIAS
    exponent = max(0, magnitude.bit_length() - 8)
    mantissa = (magnitude >> (exponent + 3)) & 0x0F
    return ~(sign | (exponent << 4) | mantissa) & 0xFF


_ALAW_SEGMENT_ENDS = (0x1F, 0x3F, 0x7F, 0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF)


def linear_to_alaw(sample: int) -> int:
    value = sample >> 3  # A-law codes 13 bits
    if value >= 0:
        mask = 0xD5
    else:
        mask, value = 0x55, -value - 1
    segment = next((i for i, end in enumerate(_ALAW_SEGMENT_ENDS) if value <= end), 8)
    if segment == 8:
        return 0x7F ^ mask
    code = segment << 4 | ((value >> 1) if segment < 2 else (value >> segment)) & 0x0F
    return code ^ mask


_DECODE = {
    "mulaw": np.array([ulaw_to_linear(c) for c in range(256)], dtype=np.int16),
    "alaw": np.array([alaw_to_linear(c) for c in range(256)], dtype=np.int16),
}
# Two G.711 bytes, read as one little-endian uint16, to both samples at once as a
# little-endian uint32: half the lookups of the byte table on the default path.
_PAIR = np.arange(65536)
_DECODE_PAIRS = {
    name: ((table[_PAIR & 0xFF].astype("<u4") & 0xFFFF) | (table[_PAIR >> 8].astype("<u4") << 16))
    for name, table in _DECODE.items()
}
# Any int16 sample, read as uint16, to its μ-law byte.
_ENCODE_ULAW = np.array(
    [linear_to_ulaw(u - 65536 if u > 32767 else u) for u in range(65536)], dtype=np.uint8
)
_ENCODE_ALAW = np.array(
    [linear_to_alaw(u - 65536 if u > 32767 else u) for u in range(65536)], dtype=np.uint8
)
_ENCODE = {"mulaw": _ENCODE_ULAW, "alaw": _ENCODE_ALAW}
_ALAW_TO_ULAW = bytes(linear_to_ulaw(int(v)) for v in _DECODE["alaw"])
_ULAW_TO_ALAW = bytes(linear_to_alaw(int(v)) for v in _DECODE["mulaw"])
# G.711 to G.711 in the byte domain: the stored bytes when the codecs agree.
_TRANSLATE = {("alaw", "mulaw"): _ALAW_TO_ULAW, ("mulaw", "alaw"): _ULAW_TO_ALAW}
_SILENCE = {"mulaw": 0xFF, "alaw": 0xD5}
_PCM16 = np.dtype("<i2")  # WAV data is little-endian


# -- the layout of one download ----------------------------------------------------

SOURCE_ENCODINGS = ("mulaw", "alaw", "l16le", "l16be")
OUTPUT_ENCODINGS = ("pcm16", "mulaw", "alaw")
_FORMAT_TAG = {"pcm16": 1, "mulaw": 7, "alaw": 6}  # WAVE_FORMAT_PCM, _MULAW, _ALAW
_WIDTH = {"mulaw": 1, "alaw": 1, "l16le": 2, "l16be": 2, "pcm16": 2}
OUTPUT_SIDES = {Channels.DUAL: (Side.COUNTERPARTS, Side.CUSTOMER), Channels.MONO: (None,)}


@dataclass(frozen=True)
class WavLayout:
    """How stored frames become WAV frames for one download."""

    source_encoding: str
    sample_rate_hz: int
    source_tracks: tuple[Track, ...]
    channels: Channels
    output: str  # "pcm16", "mulaw" or "alaw"
    # For each output channel, the stored channels heard on it (derived).
    _sources: tuple[tuple[int, ...], ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.source_encoding not in SOURCE_ENCODINGS or self.output not in OUTPUT_ENCODINGS:
            raise ValueError("unsupported encoding")
        if not 1 <= len(self.source_tracks) <= MAX_TRACKS:
            raise ValueError("unsupported channel layout")
        by_side = channels_by_side(self.source_tracks)
        every = list(range(len(self.source_tracks)))
        sources = tuple(
            tuple(every if side is None else by_side[side]) for side in OUTPUT_SIDES[self.channels]
        )
        object.__setattr__(self, "_sources", sources)

    @property
    def out_channels(self) -> int:
        return len(OUTPUT_SIDES[self.channels])

    @property
    def source_frame_bytes(self) -> int:
        return _WIDTH[self.source_encoding] * len(self.source_tracks)

    @property
    def out_frame_bytes(self) -> int:
        return _WIDTH[self.output] * self.out_channels

    def header(self, frames: int) -> bytes:
        """RIFF header for `frames` sample frames; its length is `header_bytes`."""
        return riff_header(self.output, self.sample_rate_hz, self.out_channels, frames)

    @property
    def header_bytes(self) -> int:
        return len(self.header(0))

    @property
    def _mixing(self) -> bool:
        """Some output channel hears more than one stored track."""
        return any(len(s) > 1 for s in self._sources)

    def convert(self, block: bytes) -> bytes:
        """WAV data for whole stored frames (`len(block)` a multiple of source_frame_bytes)."""
        tracks = len(self.source_tracks)
        if self.output in _ENCODE and self.source_encoding in _DECODE and not self._mixing:
            # Stay in the byte domain: stored G.711 of the asked codec leaves exactly as it
            # was stored, of the other through a 256-byte table.
            table = _TRANSLATE.get((self.source_encoding, self.output))
            codes = block.translate(table) if table else block
            frames = np.frombuffer(codes, np.uint8).reshape(-1, tracks)
            return self._place(frames, fill=_SILENCE[self.output]).tobytes()
        samples = self._pcm(block).reshape(-1, tracks)
        samples = self._mix(samples) if self._mixing else self._place(samples, fill=0)
        if self.output == "pcm16":
            return samples.astype(_PCM16, copy=False).tobytes()
        return np.take(_ENCODE[self.output], samples.astype(np.int16).view(np.uint16)).tobytes()

    def _pcm(self, block: bytes) -> np.ndarray:
        """int16 samples of a stored block, channels still interleaved."""
        if self.source_encoding in _DECODE:
            if len(block) % 2 == 0:
                pairs = np.take(_DECODE_PAIRS[self.source_encoding], np.frombuffer(block, "<u2"))
                return pairs.astype("<u4", copy=False).view("<i2")
            return np.take(_DECODE[self.source_encoding], np.frombuffer(block, np.uint8))
        order = "<i2" if self.source_encoding == "l16le" else ">i2"
        return np.frombuffer(block, order).astype(np.int16)

    def _place(self, frames: np.ndarray, *, fill: int) -> np.ndarray:
        """Each output channel its one stored track (or `fill` where it has none)."""
        sources = self._sources
        if all(s == (i,) for i, s in enumerate(sources)) and frames.shape[1] == len(sources):
            return frames  # the usual case: stored as it is laid out
        out = np.full((len(frames), len(sources)), fill, dtype=frames.dtype)
        for channel, source in enumerate(sources):
            if source:
                out[:, channel] = frames[:, source[0]]
        return out

    def _mix(self, samples: np.ndarray) -> np.ndarray:
        """Each output channel the clipped sum of its stored tracks."""
        sources = self._sources
        out = np.zeros((len(samples), len(sources)), dtype=np.int32)
        for channel, source in enumerate(sources):
            if source:
                out[:, channel] = samples[:, list(source)].sum(axis=1, dtype=np.int32)
        return out.clip(-32768, 32767).astype(np.int16)


def riff_header(encoding: str, sample_rate_hz: int, channels: int, frames: int) -> bytes:
    """RIFF header for `frames` frames of `channels` channels: PCM for 16-bit samples
    (pcm16, and L16 written little-endian), or G.711 with cbSize and the `fact` chunk that
    non-PCM formats carry (RIFF spec). Every download's WAV, and `telephony decrypt`'s
    (one channel per track); `tools/decrypt.py` writes the same bytes, a test holds both."""
    width = _WIDTH[encoding]
    tag = _FORMAT_TAG.get(encoding, 1)
    fmt = struct.pack(
        "<HHIIHH",
        tag,
        channels,
        sample_rate_hz,
        sample_rate_hz * width * channels,
        width * channels,
        8 * width,
    )
    extra = b""
    if tag != 1:
        fmt += b"\0\0"
        extra = b"fact" + struct.pack("<II", 4, frames)
    data_bytes = frames * width * channels
    body = (
        b"fmt "
        + struct.pack("<I", len(fmt))
        + fmt
        + extra
        + b"data"
        + struct.pack("<I", data_bytes)
    )
    return b"RIFF" + struct.pack("<I", 4 + len(body) + data_bytes) + b"WAVE" + body
