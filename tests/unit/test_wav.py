"""The pure WAV layer: G.711 against its reference formulas, every layout against a scalar
model, and headers that the standard library's reader accepts."""

from __future__ import annotations

import io
import os
import struct
import wave

import pytest

from telephony.domain.recordings import Channels
from telephony.domain.tracks import BOTH, INBOUND, MAX_TRACKS, OUTBOUND, Side, Track
from telephony.media.wav import WavLayout, alaw_to_linear, linear_to_ulaw, ulaw_to_linear


def test_g711_decoding_matches_known_values() -> None:
    assert [ulaw_to_linear(c) for c in (0xFF, 0x7F, 0x00, 0x80)] == [0, 0, -32124, 32124]
    assert [alaw_to_linear(c) for c in (0xD5, 0x55, 0x2A, 0xAA)] == [8, -8, -32256, 32256]


def test_mulaw_encoding_inverts_decoding_except_negative_zero() -> None:
    mismatched = [c for c in range(256) if linear_to_ulaw(ulaw_to_linear(c)) != c]

    assert mismatched == [0x7F]  # -0 and +0 are the same sample: 0xFF
    assert linear_to_ulaw(40000) == linear_to_ulaw(32767)  # clipped, not wrapped


def _decode(encoding: str, block: bytes) -> list[int]:
    if encoding == "mulaw":
        return [ulaw_to_linear(b) for b in block]
    if encoding == "alaw":
        return [alaw_to_linear(b) for b in block]
    order = "<" if encoding == "l16le" else ">"
    return list(struct.unpack(f"{order}{len(block) // 2}h", block))


def _clip(value: int) -> int:
    return max(-32768, min(32767, value))


def _model(layout: WavLayout, block: bytes) -> bytes:
    """What the file must hold, computed one sample at a time."""
    samples = _decode(layout.source_encoding, block)
    tracks = layout.source_tracks
    frames = [samples[i : i + len(tracks)] for i in range(0, len(samples), len(tracks))]
    if layout.channels == "mono":
        out = [[_clip(sum(f))] for f in frames]
    else:  # dual: every counterpart track on 0, every customer track on 1, mixed
        out = [
            [
                _clip(sum(v for v, t in zip(f, tracks, strict=True) if t.side is side))
                for side in SIDES
            ]
            for f in frames
        ]
    flat = [v for f in out for v in f]
    if layout.output == "pcm16":
        return struct.pack(f"<{len(flat)}h", *flat)
    return bytes(linear_to_ulaw(v) for v in flat)


SIDES = (Side.COUNTERPARTS, Side.CUSTOMER)
# A SIPREC session of a conference: two counterparts' streams and the customer's.
CONFERENCE = (
    Track("caller", Side.COUNTERPARTS),
    Track("agent", Side.CUSTOMER),
    Track("expert", Side.COUNTERPARTS),
)
TRACK_SETS = ((INBOUND, OUTBOUND), (INBOUND,), (OUTBOUND,), (OUTBOUND, INBOUND), CONFERENCE)

LAYOUTS = [
    (encoding, tracks, channels, output)
    for encoding in ("mulaw", "alaw", "l16le", "l16be")
    for tracks in TRACK_SETS
    for channels in (Channels.DUAL, Channels.MONO)
    for output in ("pcm16", "mulaw")
]


def _mixes(tracks: tuple[Track, ...], channels: Channels) -> bool:
    if channels is Channels.MONO:
        return len(tracks) > 1
    return any(sum(t.side is side for t in tracks) > 1 for side in SIDES)


@pytest.mark.parametrize(("encoding", "tracks", "channels", "output"), LAYOUTS)
def test_every_layout_matches_the_scalar_model(
    encoding: str, tracks: tuple[Track, ...], channels: Channels, output: str
) -> None:
    layout = WavLayout(encoding, 8000, tracks, channels, output)
    block = os.urandom(layout.source_frame_bytes * 401)  # an odd frame count on purpose

    converted = layout.convert(block)

    if output == "mulaw" and encoding in ("mulaw", "alaw") and not _mixes(tracks, channels):
        assert converted == _byte_model(layout, block)
    else:
        assert converted == _model(layout, block)
    assert len(converted) == 401 * layout.out_frame_bytes


def _byte_model(layout: WavLayout, block: bytes) -> bytes:
    """G.711 to μ-law without mixing stays in the byte domain: stored μ-law is unchanged."""
    if layout.source_encoding == "mulaw":
        codes = block
    else:
        codes = bytes(linear_to_ulaw(alaw_to_linear(b)) for b in block)
    tracks = layout.source_tracks
    frames = [codes[i : i + len(tracks)] for i in range(0, len(codes), len(tracks))]
    sides = SIDES if layout.channels is Channels.DUAL else (None,)
    out = bytearray()
    for frame in frames:
        for side in sides:
            heard = [
                c for c, t in zip(frame, tracks, strict=True) if side is None or t.side is side
            ]
            out.append(heard[0] if heard else 0xFF)
    return bytes(out)


@pytest.mark.parametrize("channels", [Channels.DUAL, Channels.MONO])
def test_pcm_headers_open_with_the_standard_reader(channels: Channels) -> None:
    layout = WavLayout("mulaw", 8000, BOTH, channels, "pcm16")
    data = layout.convert(os.urandom(2 * 800))

    with wave.open(io.BytesIO(layout.header(800) + data)) as wav:
        assert wav.getnchannels() == (2 if channels is Channels.DUAL else 1)
        assert (wav.getframerate(), wav.getsampwidth(), wav.getnframes()) == (8000, 2, 800)


def test_mulaw_header_has_the_format_tag_cbsize_and_fact_chunk() -> None:
    layout = WavLayout("mulaw", 8000, BOTH, Channels.DUAL, "mulaw")

    header = layout.header(1000)

    assert len(header) == layout.header_bytes
    riff, size, wave_id = struct.unpack_from("<4sI4s", header)
    assert (riff, wave_id, size) == (b"RIFF", b"WAVE", len(header) - 8 + 2000)
    fmt_id, fmt_size, tag, channels, rate, byte_rate, align, bits, cb_size = struct.unpack_from(
        "<4sIHHIIHHH", header, 12
    )
    assert (fmt_id, fmt_size, tag, channels, rate) == (b"fmt ", 18, 7, 2, 8000)
    assert (byte_rate, align, bits, cb_size) == (16000, 2, 8, 0)
    assert header[38:50] == b"fact" + struct.pack("<II", 4, 1000)
    assert header[50:] == b"data" + struct.pack("<I", 2000)


def test_unknown_encodings_and_layouts_are_refused() -> None:
    with pytest.raises(ValueError, match="encoding"):
        WavLayout("opus", 8000, (INBOUND,), Channels.DUAL, "pcm16")
    with pytest.raises(ValueError, match="layout"):
        WavLayout("mulaw", 8000, (), Channels.DUAL, "pcm16")
    with pytest.raises(ValueError, match="layout"):
        WavLayout("mulaw", 8000, (INBOUND,) * (MAX_TRACKS + 1), Channels.DUAL, "pcm16")
