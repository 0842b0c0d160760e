"""MP3 downloads (API.md `format=mp3`): 32 kbit/s per channel, decodable, as long as the WAV."""

from __future__ import annotations

import asyncio
import io

import asyncpg
import av
import numpy as np
from aiohttp.test_utils import TestClient

from tests.conftest import Customer
from tests.support.recordings import download, record


def decode(mp3: bytes) -> tuple[int, int, int, int]:
    """(channels, rate, samples per channel, bit rate) of an MP3 file, read by FFmpeg."""
    with av.open(io.BytesIO(mp3)) as container:
        stream = container.streams.audio[0]
        frames = [f.to_ndarray() for f in container.decode(stream)]
        samples = np.concatenate(frames, axis=1)
        return stream.channels, stream.rate, samples.shape[1], stream.bit_rate or 0


async def test_an_mp3_download_holds_the_whole_recording_in_each_channel(
    client: TestClient, owner: Customer, pool: asyncpg.Pool
) -> None:
    dual = await record(client, owner, pool, channels="dual", frames=250)  # 5 s
    mono = await record(client, owner, pool, channels="mono", frames=250)

    answers = {}
    for name, rec in (("dual", dual), ("mono", mono)):
        resp = await download(client, owner, rec, "?format=mp3")
        assert resp.status == 200 and resp.content_type == "audio/mpeg"
        assert "Content-Range" not in resp.headers
        answers[name] = await asyncio.to_thread(decode, await resp.read())

    channels, rate, samples, bit_rate = answers["dual"]
    assert (channels, rate, bit_rate) == (2, 8000, 64_000)
    assert 5 * 8000 <= samples <= 5 * 8000 + 2 * 1152  # LAME pads its first and last frame
    channels, rate, samples, bit_rate = answers["mono"]
    assert (channels, rate, bit_rate) == (1, 8000, 32_000)


async def test_with_mp3_the_wav_encoding_is_ignored_not_refused(
    client: TestClient, owner: Customer, pool: asyncpg.Pool
) -> None:
    """Found by the fuzzer: `encoding=pcm16&format=mp3` is schema-valid, so never a 422."""
    rec = await record(client, owner, pool, channels="mono", frames=50)

    plain = await download(client, owner, rec, "?format=mp3")
    with_encoding = await download(client, owner, rec, "?format=mp3&encoding=mulaw")

    assert plain.status == with_encoding.status == 200
    assert await plain.read() == await with_encoding.read()


async def test_an_mp3_download_is_audited_like_any_other(
    client: TestClient, owner: Customer, pool: asyncpg.Pool
) -> None:
    rec = await record(client, owner, pool, channels="mono", frames=50)

    await (await download(client, owner, rec, "?format=mp3")).read()

    trail = await (await client.get("/v1/audit", headers=owner.auth)).json()
    downloads = [e for e in trail["items"] if e["action"] == "recording.downloaded"]
    assert [e["subject"]["recording_id"] for e in downloads] == [rec]
    assert downloads[0]["details"]["encoding"] == "mp3"
