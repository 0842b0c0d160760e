"""Every codec Telnyx can send, recorded as received and decoded on download (issue 15).

Real speech (espeak-ng) is encoded as an engine would send it (tests/support/
codecs.py), streamed over the telnyx dialect with both tracks (the customer's
side in inverted polarity, so a swapped or mixed channel cannot pass), and
downloaded. G.711 and L16 must come back byte for byte; lossy codecs by
correlation with the source (>= 0.9), at the rate the codec's audio has.
A Range request must give exactly the bytes of the whole file.
"""

from __future__ import annotations

import asyncio
import io
import struct
import wave
from datetime import UTC, datetime

import asyncpg
import av
import numpy as np
import pytest
from aiohttp.test_utils import TestClient

from telephony.domain.tracks import BOTH
from telephony.media.codecs import AMRWB_MAGIC, amrwb_frames
from telephony.media.wav import linear_to_alaw, ulaw_to_linear
from telephony.usecases import media_lifecycle
from telephony.web.appkeys import HUB, KEYS
from tests.conftest import Customer, consented_call, start_recording
from tests.support.codecs import correlation, encode, speech
from tests.support.media import connect, writer_of
from tests.support.recordings import download, status_is, stored_audio
from tests.support.waiting import eventually

# (as Telnyx names it, the rate its start declares, as encoded here, the rate kept)
CASES = [
    pytest.param("PCMU", 8000, "mulaw", 8000, id="pcmu"),
    pytest.param("PCMA", 8000, "alaw", 8000, id="pcma"),
    pytest.param("L16", 16000, "l16be", 16000, id="l16-16k"),
    pytest.param("L16", 48000, "l16be", 48000, id="l16-48k"),
    pytest.param("L16", 22050, "l16be", 22050, id="l16-22k"),
    pytest.param("G722", 8000, "g722", 16000, id="g722"),  # the RTP clock: audio is 16 kHz
    pytest.param("OPUS", 16000, "opus", 48000, id="opus"),  # decoded at 48 kHz
    pytest.param("AMR-WB", 16000, "amrwb-oa", 16000, id="amrwb-octet-aligned"),
    pytest.param("AMR-WB", 16000, "amrwb-be", 16000, id="amrwb-bandwidth-efficient"),
]


WRITER_STATS: dict[str, object] = {}  # recording id: its writer's counts


async def stream(
    client: TestClient,
    owner: Customer,
    pool: asyncpg.Pool,
    name: str,
    declared: int,
    inbound: list[bytes],
    outbound: list[bytes] | None,
) -> str:
    """A completed recording, packets in 20 ms steps; its id. With `outbound`, both tracks
    as Telnyx sends them (its start names none); without, one declared inbound track."""
    call = await consented_call(client, owner)
    if outbound is None:
        peer = await connect(client, call, "twilio")
        await peer.start(tracks=("inbound",), encoding=name, sample_rate=declared)
    else:
        peer = await connect(client, call, "telnyx")
        await peer.start(tracks=None, encoding=name, sample_rate=declared)
    rec = await start_recording(client, owner, call["id"])
    writer = await eventually(lambda: writer_of(client, call["id"]))
    WRITER_STATS[str(rec["id"])] = writer.stats  # for a failure's message: what it dropped
    for n, a in enumerate(inbound):
        await peer.media(a, "inbound", timestamp_ms=20 * n)
        if outbound is not None:
            await peer.media(outbound[n], "outbound", timestamp_ms=20 * n)
        if n % 100 == 99:
            await asyncio.sleep(0.02)  # pacing: faster than real time, within the queue bound
    await peer.stop()
    await eventually(lambda: status_is(pool, rec["id"], "completed"), timeout_s=15)
    return str(rec["id"])


def channels_of(body: bytes) -> tuple[int, np.ndarray]:
    with wave.open(io.BytesIO(body)) as wav:
        assert (wav.getnchannels(), wav.getsampwidth()) == (2, 2)
        samples = np.frombuffer(wav.readframes(wav.getnframes()), "<i2").reshape(-1, 2)
        return wav.getframerate(), samples


@pytest.mark.parametrize(("name", "declared", "codec", "rate"), CASES)
async def test_each_codec_is_kept_as_received_and_decoded_on_download(
    client: TestClient,
    owner: Customer,
    pool: asyncpg.Pool,
    name: str,
    declared: int,
    codec: str,
    rate: int,
) -> None:
    voice = await asyncio.to_thread(speech, rate)
    other = np.clip(-voice.astype(np.int32), -32768, 32767).astype(np.int16)
    inbound = await asyncio.to_thread(encode, codec, voice, rate)
    outbound = await asyncio.to_thread(encode, codec, other, rate)

    recording_id = await stream(client, owner, pool, name, declared, inbound, outbound)
    resp = await download(client, owner, recording_id)
    body = await resp.read()

    assert resp.status == 200, body[:200]
    got_rate, samples = channels_of(body)
    assert got_rate == rate
    if codec in ("mulaw", "alaw", "l16be"):
        # Kept byte for byte: the stored stream is the payloads, the tracks interleaved.
        stored = await stored_audio(client, recording_id)
        dtype = ">i2" if codec == "l16be" else np.uint8
        kept = np.frombuffer(stored, dtype).reshape(-1, 2)
        stats = WRITER_STATS[recording_id]
        assert kept[:, 0].tobytes() == b"".join(inbound), stats
        assert kept[:, 1].tobytes() == b"".join(outbound), stats
        if codec == "l16be":  # and decoded to exactly the samples sent
            assert (
                samples[:, 0].tobytes()
                == np.frombuffer(b"".join(inbound), ">i2").astype("<i2").tobytes()
            )
    else:
        assert correlation(voice, samples[:, 0], rate) >= 0.9
        assert correlation(other, samples[:, 1], rate) >= 0.9
        assert correlation(voice, samples[:, 1], rate) < 0.5  # not the other track


async def test_a_range_of_a_decoded_recording_is_exactly_those_bytes_of_the_whole(
    client: TestClient, owner: Customer, pool: asyncpg.Pool
) -> None:
    """Decoding restarts per block (playback.BLOCK_S) with a fixed pre-roll: the same
    stored packets always give the same bytes, so a strong ETag and Range hold."""
    voice = await asyncio.to_thread(speech, 48000)
    packets = await asyncio.to_thread(encode, "opus", voice, 48000)
    recording_id = await stream(client, owner, pool, "OPUS", 48000, packets, packets)
    whole = await (await download(client, owner, recording_id)).read()

    for start, stop in [(44, 1044), (100_000, 400_000), (len(whole) - 5000, len(whole) - 1)]:
        resp = await download(client, owner, recording_id, range=f"bytes={start}-{stop}")
        assert resp.status == 206
        assert await resp.read() == whole[start : stop + 1]


async def test_a_later_stream_of_another_format_cannot_continue_a_recording(
    client: TestClient, owner: Customer, pool: asyncpg.Pool
) -> None:
    """The first stream fixes a recording's codec, rate and tracks: the bytes of another
    (a node that picked the recording up after another's shutdown) would not read back
    with them. It writes nothing, and the recording's gaps say so."""
    call = await consented_call(client, owner)
    rec = await start_recording(client, owner, call["id"])
    keys, now = client.app[KEYS], datetime.now(UTC)

    async def writer(encoding: str, rate: int) -> object:
        return await media_lifecycle.start_writing(
            pool,
            keys,
            rec["id"],
            owner.account_id,
            node_id="n1",
            encoding=encoding,
            sample_rate_hz=rate,
            tracks=BOTH,
            now=now,
            stored_end=client.app[HUB].stored_end,
        )

    first = await writer("mulaw", 8000)
    again = await writer("mulaw", 8000)  # the same format continues
    other = await writer("opus", 48000)

    assert first is not None and again is not None
    assert other is None
    async with pool.acquire() as conn:
        gaps = await conn.fetchval("SELECT gaps FROM recordings WHERE id = $1", rec["id"])
        kept = await conn.fetchval("SELECT encoding FROM recordings WHERE id = $1", rec["id"])
    assert kept == "mulaw"
    assert [g["reason"] for g in gaps] == ["stream-format-changed"]
    shown = await (await client.get(f"/v1/recordings/{rec['id']}", headers=owner.auth)).json()
    assert shown["gaps"] == [{"at_ms": 0, "duration_ms": None, "reason": "stream-format-changed"}]


# -- ?encoding= the stored codec: its own file, packets as received ------------------------


def demuxed(body: bytes) -> tuple[list[list[bytes]], list[np.ndarray]]:
    """Each stream's packets as the file holds them, and each stream decoded."""
    with av.open(io.BytesIO(body)) as container:
        streams = list(container.streams.audio)
        packets: list[list[bytes]] = [[] for _ in streams]
        decoded: list[list[np.ndarray]] = [[] for _ in streams]
        for packet in container.demux(*streams):
            if packet.size == 0:
                continue
            index = streams.index(packet.stream)
            packets[index].append(bytes(packet))
            for frame in packet.decode():
                samples = frame.to_ndarray().reshape(-1)
                if samples.dtype != np.int16:
                    samples = np.clip(samples * 32768, -32768, 32767).astype(np.int16)
                decoded[index].append(samples)
    return packets, [np.concatenate(d) for d in decoded]


async def test_an_opus_recording_downloads_as_ogg_with_the_packets_as_received(
    client: TestClient, owner: Customer, pool: asyncpg.Pool
) -> None:
    voice = await asyncio.to_thread(speech, 48000)
    other = np.clip(-voice.astype(np.int32), -32768, 32767).astype(np.int16)
    inbound = await asyncio.to_thread(encode, "opus", voice, 48000)
    outbound = await asyncio.to_thread(encode, "opus", other, 48000)
    recording_id = await stream(client, owner, pool, "OPUS", 16000, inbound, outbound)

    resp = await download(client, owner, recording_id, "?encoding=opus")
    body = await resp.read()

    assert resp.status == 200
    assert resp.content_type == "audio/ogg"
    assert resp.headers["Accept-Ranges"] == "none"
    assert resp.headers["Content-Disposition"].endswith('.ogg"')
    packets, decoded = await asyncio.to_thread(demuxed, body)
    assert [p for p in packets[0] if p != bytes([0xF8])] == inbound  # one stream per track
    assert [p for p in packets[1] if p != bytes([0xF8])] == outbound
    assert correlation(voice, decoded[0], 48000) >= 0.9
    assert correlation(other, decoded[1], 48000) >= 0.9


@pytest.mark.parametrize(
    ("name", "codec", "media_type"),
    [("AMR-WB", "amrwb-be", "audio/amr-wb"), ("G722", "g722", "audio/wav")],
    ids=["amrwb", "g722"],
)
async def test_a_one_track_recording_downloads_in_its_codecs_own_file(
    client: TestClient,
    owner: Customer,
    pool: asyncpg.Pool,
    name: str,
    codec: str,
    media_type: str,
) -> None:
    voice = await asyncio.to_thread(speech, 16000)
    sent = await asyncio.to_thread(encode, codec, voice, 16000)
    recording_id = await stream(client, owner, pool, name, 16000, sent, None)
    query = "?encoding=" + codec.split("-")[0]

    resp = await download(client, owner, recording_id, query)
    body = await resp.read()

    assert resp.status == 200, body[:300]
    assert resp.content_type == media_type
    if codec == "g722":
        assert struct.unpack_from("<HHI", body, 20) == (0x028F, 1, 16000)
        assert body[body.index(b"data") + 8 :].startswith(b"".join(sent))
    else:
        expected = b"".join(f.storage() for p in sent for f in amrwb_frames(p))
        assert body == AMRWB_MAGIC + expected  # storage frames of the payloads, nothing else
    _, decoded = await asyncio.to_thread(demuxed, body)
    assert correlation(voice, decoded[0], 16000) >= 0.9


async def test_alaw_downloads_keep_stored_alaw_and_translate_mulaw(
    client: TestClient, owner: Customer, pool: asyncpg.Pool
) -> None:
    voice = await asyncio.to_thread(speech, 8000)
    alaw = await asyncio.to_thread(encode, "alaw", voice, 8000)
    mulaw = await asyncio.to_thread(encode, "mulaw", voice, 8000)
    stored_alaw = await stream(client, owner, pool, "PCMA", 8000, alaw, None)
    stored_mulaw = await stream(client, owner, pool, "PCMU", 8000, mulaw, None)

    same = await (await download(client, owner, stored_alaw, "?encoding=alaw")).read()
    other = await (await download(client, owner, stored_mulaw, "?encoding=alaw")).read()

    # Dual, the default: channel 0 the counterparts' track, channel 1 the silent other side.
    assert struct.unpack_from("<HHI", same, 20) == (6, 2, 8000)  # WAVE_FORMAT_ALAW
    data = same[same.index(b"data") + 8 :]
    assert data[0::2] == b"".join(alaw), WRITER_STATS[stored_alaw]  # as received
    assert set(data[1::2]) == {0xD5}  # A-law silence
    translated = bytes(linear_to_alaw(ulaw_to_linear(c)) for c in b"".join(mulaw))
    assert other[other.index(b"data") + 8 :][0::2] == translated, WRITER_STATS[stored_mulaw]


@pytest.mark.parametrize(
    ("name", "codec", "tracks", "encoding"),
    [
        ("PCMU", "mulaw", 1, "opus"),  # not the stored codec
        ("OPUS", "opus", 1, "g722"),
        ("G722", "g722", 2, "g722"),  # its file holds one track
    ],
)
async def test_a_container_the_recording_cannot_fill_is_a_clear_422(
    client: TestClient,
    owner: Customer,
    pool: asyncpg.Pool,
    name: str,
    codec: str,
    tracks: int,
    encoding: str,
) -> None:
    rate = {"mulaw": 8000, "opus": 48000, "g722": 16000}[codec]
    voice = await asyncio.to_thread(speech, rate)
    sent = (await asyncio.to_thread(encode, codec, voice, rate))[:50]
    recording_id = await stream(
        client, owner, pool, name, rate, sent, sent if tracks == 2 else None
    )

    resp = await download(client, owner, recording_id, f"?encoding={encoding}")
    problem = await resp.json()

    assert resp.status == 422
    assert resp.content_type == "application/problem+json"
    assert problem["code"] == "validation-failed"
    assert problem["errors"][0]["field"] == "encoding"
