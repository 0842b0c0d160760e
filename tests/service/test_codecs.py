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
import wave
from datetime import UTC, datetime

import asyncpg
import numpy as np
import pytest
from aiohttp.test_utils import TestClient

from telephony.domain.tracks import BOTH
from telephony.usecases import media_lifecycle
from telephony.web.appkeys import KEYS
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


async def stream(
    client: TestClient,
    owner: Customer,
    pool: asyncpg.Pool,
    name: str,
    declared: int,
    inbound: list[bytes],
    outbound: list[bytes],
) -> str:
    """A completed recording of both tracks, packets in 20 ms steps; its id."""
    call = await consented_call(client, owner)
    peer = await connect(client, call, "telnyx")
    await peer.start(tracks=None, encoding=name, sample_rate=declared)
    rec = await start_recording(client, owner, call["id"])
    await eventually(lambda: writer_of(client, call["id"]) is not None)
    for n, (a, b) in enumerate(zip(inbound, outbound, strict=True)):
        await peer.media(a, "inbound", timestamp_ms=20 * n)
        await peer.media(b, "outbound", timestamp_ms=20 * n)
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
        assert kept[:, 0].tobytes() == b"".join(inbound)
        assert kept[:, 1].tobytes() == b"".join(outbound)
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
