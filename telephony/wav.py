"""Stored codec bytes to a WAV file that common players open: pure, no I/O.

The recorder keeps the codec's own bytes (μ-law, A-law, L16 in either byte
order), interleaved in the order of `track_names`. A download asks for one of
two WAV encodings (16-bit PCM for browsers, μ-law for telephony tools) and a
channel layout fixed by the recording: `dual` gives two channels (0: the
counterparts' `inbound` track, 1: the customer's `outbound` track; a track
that never streamed is silence), `mono` one channel (both tracks mixed).

Why tables and not `audioop`: it is gone in Python 3.13. G.711 decoding is a
256-entry table applied with `bytes.translate`, which runs at C speed on the
default path (μ-law in, 16-bit PCM out); the rarer paths (mixing two tracks,
encoding L16 to μ-law) map through 65,536-entry tables.
"""

from __future__ import annotations

import array
import struct
import sys
from dataclasses import dataclass

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


_DECODE = {
    "mulaw": [ulaw_to_linear(c) for c in range(256)],
    "alaw": [alaw_to_linear(c) for c in range(256)],
}
# 16-bit little-endian output of one G.711 byte, split for bytes.translate.
_LOW = {name: bytes(v & 0xFF for v in table) for name, table in _DECODE.items()}
_HIGH = {name: bytes((v >> 8) & 0xFF for v in table) for name, table in _DECODE.items()}
# int16 (read as uint16) -> μ-law.
_ENCODE_ULAW = bytes(linear_to_ulaw(u - 65536 if u > 32767 else u) for u in range(65536))
_ALAW_TO_ULAW = bytes(linear_to_ulaw(v) for v in _DECODE["alaw"])
_LITTLE = sys.byteorder == "little"


def _clip(value: int) -> int:
    return -32768 if value < -32768 else 32767 if value > 32767 else value


def _mix_table(decode: list[int]) -> array.array[int]:
    """Both tracks' G.711 bytes as one little-endian uint16 -> their clipped sum."""
    return array.array("h", (_clip(decode[i & 0xFF] + decode[i >> 8]) for i in range(65536)))


_MIX: dict[str, array.array[int]] = {}  # built on first use: most downloads never mix


# -- the layout of one download ----------------------------------------------------

SOURCE_ENCODINGS = ("mulaw", "alaw", "l16le", "l16be")
OUTPUT_ENCODINGS = ("pcm16", "mulaw")
_FORMAT_TAG = {"pcm16": 1, "mulaw": 7}  # WAVE_FORMAT_PCM, WAVE_FORMAT_MULAW
_WIDTH = {"mulaw": 1, "alaw": 1, "l16le": 2, "l16be": 2, "pcm16": 2}
_SILENCE = {"pcm16": b"\x00\x00", "mulaw": b"\xff"}
OUTPUT_TRACKS = {"dual": ("inbound", "outbound"), "mono": ("mix",)}


@dataclass(frozen=True)
class WavLayout:
    """How stored frames become WAV frames for one download."""

    source_encoding: str
    sample_rate_hz: int
    source_tracks: tuple[str, ...]
    channels: str  # the recording's "dual" or "mono"
    output: str  # "pcm16" or "mulaw"

    def __post_init__(self) -> None:
        if self.source_encoding not in SOURCE_ENCODINGS or self.output not in OUTPUT_ENCODINGS:
            raise ValueError("unsupported encoding")
        if self.channels not in OUTPUT_TRACKS or not 1 <= len(self.source_tracks) <= 2:
            raise ValueError("unsupported channel layout")

    @property
    def out_channels(self) -> int:
        return len(OUTPUT_TRACKS[self.channels])

    @property
    def source_frame_bytes(self) -> int:
        return _WIDTH[self.source_encoding] * len(self.source_tracks)

    @property
    def out_frame_bytes(self) -> int:
        return _WIDTH[self.output] * self.out_channels

    def header(self, frames: int) -> bytes:
        """RIFF header for `frames` sample frames; its length is `header_bytes`."""
        data_bytes = frames * self.out_frame_bytes
        width = _WIDTH[self.output]
        fmt = struct.pack(
            "<HHIIHH",
            _FORMAT_TAG[self.output],
            self.out_channels,
            self.sample_rate_hz,
            self.sample_rate_hz * self.out_frame_bytes,
            self.out_frame_bytes,
            8 * width,
        )
        if self.output != "pcm16":
            fmt += b"\0\0"  # cbSize: non-PCM formats carry it, and a fact chunk (RIFF spec)
        chunks = [b"fmt " + struct.pack("<I", len(fmt)) + fmt]
        if self.output != "pcm16":
            chunks.append(b"fact" + struct.pack("<II", 4, frames))
        chunks.append(b"data" + struct.pack("<I", data_bytes))
        body = b"".join(chunks)
        return b"RIFF" + struct.pack("<I", 4 + len(body) + data_bytes) + b"WAVE" + body

    @property
    def header_bytes(self) -> int:
        return len(self.header(0))

    def convert(self, block: bytes) -> bytes:
        """WAV data for whole stored frames (`len(block)` a multiple of source_frame_bytes)."""
        if self.channels == "mono" and len(self.source_tracks) == 2:
            return self._encode_pcm(self._mix(block))
        if len(self.source_tracks) == self.out_channels:
            return self._same_layout(block)
        # One stored track, two output channels: place it, silence on the other.
        single = self._same_layout(block)
        channel = OUTPUT_TRACKS["dual"].index(self.source_tracks[0])
        width = _WIDTH[self.output]
        if width == 1:
            out = bytearray(_SILENCE[self.output] * (2 * len(single)))
            out[channel::2] = single
            return bytes(out)
        pcm = array.array("h", single)
        stereo = array.array("h", bytes(4 * len(pcm)))
        stereo[channel::2] = pcm
        return stereo.tobytes()

    def _same_layout(self, block: bytes) -> bytes:
        source, output = self.source_encoding, self.output
        if output == "mulaw":
            if source == "mulaw":
                return block
            if source == "alaw":
                return block.translate(_ALAW_TO_ULAW)
            return self._encode_pcm(self._pcm(block))
        if source in _DECODE:
            return _g711_pcm(source, block)  # the default path: C speed, no int objects
        return self._encode_pcm(self._pcm(block))

    def _pcm(self, block: bytes) -> array.array[int]:
        """Native int16 samples of a stored block, channels still interleaved."""
        little = self.source_encoding != "l16be"
        if self.source_encoding in _DECODE:
            block = _g711_pcm(self.source_encoding, block)
        samples = array.array("h", block)
        if little != _LITTLE:
            samples.byteswap()
        return samples

    def _mix(self, block: bytes) -> array.array[int]:
        if self.source_encoding in _DECODE:
            table = _MIX.get(self.source_encoding)
            if table is None:
                table = _MIX[self.source_encoding] = _mix_table(_DECODE[self.source_encoding])
            pairs = array.array("H", block)
            if not _LITTLE:
                pairs.byteswap()
            return array.array("h", map(table.__getitem__, pairs))
        samples = self._pcm(block)
        return array.array("h", map(lambda a, b: _clip(a + b), samples[0::2], samples[1::2]))

    def _encode_pcm(self, samples: array.array[int]) -> bytes:
        if self.output == "mulaw":
            unsigned = array.array("H", samples.tobytes())
            return bytes(map(_ENCODE_ULAW.__getitem__, unsigned))
        if not _LITTLE:
            samples.byteswap()
        return samples.tobytes()


def _g711_pcm(encoding: str, block: bytes) -> bytes:
    """16-bit little-endian PCM of G.711 bytes: two translates and a slice-interleave."""
    out = bytearray(2 * len(block))
    out[0::2] = block.translate(_LOW[encoding])
    out[1::2] = block.translate(_HIGH[encoding])
    return bytes(out)
