"""Packet codecs without decoding (telephony/media/codecs.py), the packet timeline, and
the parser's part: what a packet's header says, what the recorder keeps, what is refused.

Opus lengths are checked against libopus's own output for every frame duration it
encodes; AMR-WB payloads are built in both RFC 4867 modes from the VisualOn encoder's
frames (tests/support/codecs.py) and must give back the same storage frames.
"""

from __future__ import annotations

import base64
import io
import json
from datetime import UTC, datetime, timedelta
from fractions import Fraction

import av
import numpy as np
import pytest

from telephony.domain.recordings import PauseBehavior
from telephony.media import codecs, containers, decoding
from telephony.media.events import ProtocolViolation, StreamStart
from telephony.media.ws import parser_for
from telephony.recorder.timeline import MAX_CHUNK_BYTES, MAX_GAP_S, Frame, PacketTimeline
from tests.support.codecs import _amrwb_storage_frames, _rtp, speech
from tests.support.codecs import encode as codec_encode

T0 = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)

# -- Opus: the TOC byte -------------------------------------------------------------------


@pytest.mark.parametrize("duration_ms", ["2.5", "5", "10", "20", "40", "60"])
def test_opus_lengths_from_the_toc_byte_match_what_libopus_decodes(duration_ms: str) -> None:
    ctx = av.CodecContext.create("libopus", "w")
    assert isinstance(ctx, av.AudioCodecContext)
    ctx.sample_rate, ctx.layout, ctx.format = 48000, "mono", "s16"
    ctx.time_base = Fraction(1, 48000)
    ctx.options = {"application": "audio", "frame_duration": duration_ms}
    pcm = (np.sin(np.arange(48000) / 7) * 8000).astype(np.int16)
    frame = av.AudioFrame.from_ndarray(pcm.reshape(1, -1), format="s16", layout="mono")
    frame.sample_rate, frame.pts = 48000, 0
    packets = [bytes(p) for p in list(ctx.encode(frame)) + list(ctx.encode(None))]
    decoder = av.CodecContext.create("libopus", "r")
    assert isinstance(decoder, av.AudioCodecContext)
    decoder.sample_rate, decoder.layout = 48000, "mono"

    assert packets
    for packet in packets:
        decoded = sum(f.samples for f in decoder.decode(av.Packet(packet)))
        assert codecs.opus_samples(packet) == decoded


@pytest.mark.parametrize(
    ("payload", "samples"),
    [
        (bytes([0xF8]), 960),  # CELT FB 20 ms, code 0: one frame (a TOC alone is valid)
        (bytes([0xF9]) + b"\x00" * 4, 1920),  # code 1: two frames
        (bytes([0x5B, 0x02]) + b"\x00", 2 * 2880),  # SILK WB 60 ms, code 3, two frames
    ],
)
def test_opus_packet_lengths_by_code(payload: bytes, samples: int) -> None:
    assert codecs.opus_samples(payload) == samples


@pytest.mark.parametrize(
    "payload",
    [
        b"",  # empty
        bytes([0xFB]),  # code 3 without its frame count
        bytes([0xFB, 0x00]),  # code 3 of no frames
        bytes([0x5B, 0x03]),  # 3 x 60 ms: beyond 120 ms
    ],
)
def test_malformed_opus_packets_are_refused(payload: bytes) -> None:
    with pytest.raises(ValueError):
        codecs.packet_samples("opus", payload)


# -- AMR-WB: both RTP modes ---------------------------------------------------------------


@pytest.fixture(scope="module")
def amr_frames() -> list[bytes]:
    return _amrwb_storage_frames(speech(16000)[:16000], mode=2)


@pytest.mark.parametrize(
    "octet_aligned", [True, False], ids=["octet-aligned", "bandwidth-efficient"]
)
def test_an_amrwb_payload_in_either_mode_gives_back_its_storage_frame(
    amr_frames: list[bytes], octet_aligned: bool
) -> None:
    for frame in amr_frames:
        payload = _rtp(frame, octet_aligned=octet_aligned)

        [parsed] = codecs.amrwb_frames(payload)

        assert parsed.storage() == frame
        assert codecs.packet_samples("amrwb", payload) == 320


def test_amrwb_lengths_count_every_frame_of_a_payload() -> None:
    # Octet-aligned, three frames: NO_DATA (15), SID (9, 5 bytes) and NO_DATA again.
    payload = bytes([0xF0, 0x80 | 15 << 3, 0x80 | 9 << 3 | 4, 15 << 3]) + b"\x12\x34\x56\x78\x9a"

    kinds = [f.kind for f in codecs.amrwb_frames(payload)]

    assert kinds == [15, 9, 15]
    assert codecs.packet_samples("amrwb", payload) == 3 * 320


@pytest.mark.parametrize(
    "payload",
    [b"", b"\xf0", bytes([0xF0, 10 << 3]) + b"\x00" * 10, b"\xff" * 40],
    ids=["empty", "no-toc", "reserved-type", "noise"],
)
def test_what_fits_neither_amrwb_mode_is_refused(payload: bytes) -> None:
    with pytest.raises(ValueError):
        codecs.packet_samples("amrwb", payload)


def test_g722_holds_two_16khz_samples_a_byte_and_a_packet_at_most_a_second() -> None:
    assert codecs.packet_samples("g722", b"\x00" * 160) == 320
    with pytest.raises(ValueError):
        codecs.packet_samples("g722", b"")
    with pytest.raises(ValueError):
        codecs.packet_samples("g722", b"\x00" * 8001)  # beyond MAX_PACKET_S


def test_stored_packets_read_back_and_a_cut_one_is_refused() -> None:
    stored = codecs.pack(1, 2**40, b"abc") + codecs.pack(0, 7, b"")

    assert list(codecs.unpack(stored)) == [
        codecs.StoredPacket(1, 2**40, b"abc"),
        codecs.StoredPacket(0, 7, b""),
    ]
    with pytest.raises(ValueError):
        list(codecs.unpack(stored[:-1]))


def test_every_packet_codec_has_its_decoder_in_this_build() -> None:
    assert all(decoding.decodable(c) for c in codecs.PACKET_CODECS)
    assert not decoding.decodable("speex")


# -- the parser: rates kept, packets measured, what is refused --------------------------------


def telnyx_start(encoding: str, rate: int) -> str:
    fmt = {"encoding": encoding, "sample_rate": rate, "channels": 1}
    start = {"call_control_id": "v3:x", "media_format": fmt, "custom_parameters": {"token": "mt"}}
    return json.dumps({"event": "start", "stream_id": "s", "start": start})


def media(payload: bytes) -> str:
    body = {"track": "inbound", "timestamp": "0", "payload": base64.b64encode(payload).decode()}
    return json.dumps({"event": "media", "media": body})


@pytest.mark.parametrize(
    ("encoding", "declared", "kept", "rate"),
    [
        ("PCMU", 8000, "mulaw", 8000),
        ("L16", 24000, "l16be", 24000),
        ("G722", 8000, "g722", 16000),
        ("OPUS", 16000, "opus", 48000),
        ("AMR-WB", 8000, "amrwb", 16000),
    ],
)
def test_a_start_keeps_each_codec_at_the_rate_its_audio_has(
    encoding: str, declared: int, kept: str, rate: int
) -> None:
    [start] = parser_for("telnyx").feed_text(telnyx_start(encoding, declared))

    assert isinstance(start, StreamStart)
    assert (start.encoding, start.sample_rate_hz) == (kept, rate)


def test_a_packet_frame_carries_its_length_from_its_own_header() -> None:
    p = parser_for("telnyx")
    p.feed_text(telnyx_start("OPUS", 48000))

    [audio] = p.feed_text(media(bytes([0xF8, 0x01, 0x02])))

    assert audio.samples == 960  # type: ignore[union-attr]


@pytest.mark.parametrize("encoding", ["SPEEX", "AAC", "audio/x-unknown"])
def test_a_codec_the_service_cannot_decode_is_refused_at_start_with_1003(encoding: str) -> None:
    with pytest.raises(ProtocolViolation) as info:
        parser_for("telnyx").feed_text(telnyx_start(encoding, 16000))

    assert info.value.close_code == 1003


def test_a_codec_whose_decoder_this_build_lacks_is_refused_with_1003(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr("telephony.media.ws.jsonstream.decodable", lambda encoding: False)

    with pytest.raises(ProtocolViolation) as info:
        parser_for("telnyx").feed_text(telnyx_start("OPUS", 48000))

    assert info.value.close_code == 1003


@pytest.mark.parametrize(
    ("encoding", "payload"),
    [("OPUS", bytes([0xFB])), ("AMR-WB", b"\xff" * 40), ("G722", b"\x00" * 9000)],
)
def test_a_malformed_packet_closes_with_1007(encoding: str, payload: bytes) -> None:
    p = parser_for("telnyx")
    p.feed_text(telnyx_start(encoding, 16000))

    with pytest.raises(ProtocolViolation) as info:
        p.feed_text(media(payload))

    assert info.value.close_code == 1007


# -- the packet timeline -----------------------------------------------------------------------


def pk(position: int, samples: int = 320, channel: int = 0, arrival_ms: int = 0) -> Frame:
    payload = bytes([channel, position % 251]) * 10
    return Frame(channel, position, payload, T0 + timedelta(milliseconds=arrival_ms), samples)


def placed(tl: PacketTimeline, frames: list[Frame]) -> list[tuple[int, int, int]]:
    """(track, position, payload length) of every packet placed, and nothing else."""
    out = []
    for piece, _ in tl.place(frames):
        out += [(p.track, p.position, len(p.payload)) for p in codecs.unpack(piece)]
    return out


def packets(tracks: int = 2, pause: PauseBehavior = PauseBehavior.SKIP) -> PacketTimeline:
    return PacketTimeline(tracks=tracks, sample_rate_hz=16000, pause_behavior=pause)


def test_packets_land_at_their_positions_whole_and_a_hole_stays_a_hole() -> None:
    tl = packets()

    got = placed(tl, [pk(1000), pk(1000, channel=1), pk(1320), pk(2000, channel=1)])

    # The first packet fixes the shift: positions count from it.
    assert got == [(0, 0, 20), (1, 0, 20), (0, 320, 20), (1, 1000, 20)]
    assert tl.out_samples == 1320


def test_a_late_or_overlapping_packet_is_dropped_and_the_first_wins() -> None:
    tl = packets()
    placed(tl, [pk(0), pk(320)])

    got = placed(tl, [pk(100), pk(640), pk(640, channel=1), pk(0, channel=1)])

    # 100 overlaps track 0's packet at 320 (ends 640): dropped. Track 1's packet at 0
    # ends where the recording was sealed already (640): late.
    assert got == [(0, 640, 20), (1, 640, 20)]
    assert tl.late_frames == 2


def test_a_packet_of_a_lagging_track_that_reaches_past_the_sealed_end_is_kept() -> None:
    tl = packets()
    placed(tl, [pk(0), pk(320)])  # track 0 sealed to 640

    assert placed(tl, [pk(500, channel=1)]) == [(1, 500, 20)]  # ends at 820, past 640


@pytest.mark.parametrize(
    ("pause", "resumed_at"), [(PauseBehavior.SKIP, 320), (PauseBehavior.SILENCE, 16320)]
)
def test_a_pause_is_left_out_in_skip_mode_and_kept_as_its_length_in_silence_mode(
    pause: PauseBehavior, resumed_at: int
) -> None:
    tl = packets(tracks=1, pause=pause)
    placed(tl, [pk(0)])

    tl.enter(1)  # the next window: a pause lies behind
    got = placed(tl, [pk(16320)])  # a second later on the stream's clock

    assert got == [(0, resumed_at, 20)]


def test_a_jump_beyond_the_gap_limit_starts_a_new_run_not_a_flood_of_silence() -> None:
    tl = packets(tracks=1)
    placed(tl, [pk(0)])

    got = placed(tl, [pk(int(MAX_GAP_S * 16000) + 10_000)])

    assert got == [(0, 320, 20)]
    assert tl.discontinuities == 1


def test_pieces_split_between_packets_and_cover_the_recording_end_to_end() -> None:
    tl = packets(tracks=1)
    big = [Frame(0, 320 * n, b"\x01" * 1000, T0, 320) for n in range(40)]

    pieces = tl.place(big)

    assert len(pieces) > 1
    assert all(len(piece) <= MAX_CHUNK_BYTES for piece, _ in pieces)
    assert sum(samples for _, samples in pieces) == tl.out_samples == 40 * 320
    kept = [p for piece, _ in pieces for p in codecs.unpack(piece)]
    assert [p.position for p in kept] == [320 * n for n in range(40)]


def test_a_refused_chunk_is_undone_by_its_snapshot() -> None:
    tl = packets()
    placed(tl, [pk(0)])
    snapshot = tl.snapshot()

    placed(tl, [pk(320), pk(320, channel=1)])
    tl.restore(snapshot)

    assert placed(tl, [pk(320), pk(320, channel=1)]) == [(0, 320, 20), (1, 320, 20)]


# -- containers: a hole keeps its time ------------------------------------------------------


def test_an_amr_file_fills_a_hole_with_no_data_frames(amr_frames: list[bytes]) -> None:
    first, second = (_rtp(f, octet_aligned=True) for f in amr_frames[:2])
    writer = containers.AmrWb()

    body = writer.feed([(0, 0, first), (0, 3 * 320, second)]) + writer.close()

    no_data = bytes([15 << 3 | 1 << 2])
    assert body == codecs.AMRWB_MAGIC + amr_frames[0] + no_data * 2 + amr_frames[1]


def test_a_g722_wav_fills_a_hole_with_encoded_silence_and_lasts_the_recording() -> None:
    writer = containers.G722Wav(total_samples=16000)

    body = writer.feed([(0, 0, b"\x11" * 160), (0, 8000, b"\x22" * 160)]) + writer.close()

    data = body[body.index(b"data") + 8 :]
    assert len(data) == 8000  # a second at two samples a byte
    assert data[:160] == b"\x11" * 160 and data[4000:4160] == b"\x22" * 160
    assert b"\x11" not in data[160:4000] and len(set(data[160:4000])) > 1  # ADPCM silence


def test_an_ogg_file_keeps_a_tracks_hole_as_opus_packets_of_nothing() -> None:
    packet = bytes([0xF8, 0x10, 0x20])  # 20 ms
    writer = containers.OggOpus(tracks=1)

    body = writer.feed([(0, 0, packet), (0, 3 * 960, packet)]) + writer.close()

    with av.open(io.BytesIO(body)) as ogg:
        got = [(p.pts, bytes(p)) for p in ogg.demux(ogg.streams.audio[0]) if p.size]
    nothing = bytes([0xF8])
    assert [data for _, data in got] == [packet, nothing, nothing, packet]
    assert [pts for pts, _ in got] == sorted(pts for pts, _ in got)  # in time order


def test_a_decoded_track_is_silence_where_no_packet_covers_it() -> None:
    tone = (np.sin(np.arange(16000) / 3) * 8000).astype(np.int16)
    first, second = codec_encode("g722", tone, 16000)[:2]

    pcm = decoding.decode_track("g722", [(0, 320, first), (640, 320, second)], 0, 1280)

    assert len(pcm) == 1280
    assert np.abs(pcm[100:320]).max() > 1000  # the tone
    assert not pcm[320:640].any()  # the hole
    assert np.abs(pcm[740:960]).max() > 1000
    assert not pcm[960:].any()  # past the last packet
