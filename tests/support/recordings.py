"""Real recordings for the tests that need one: streamed, sealed, stored, then downloaded."""

from __future__ import annotations

import asyncio
from pathlib import Path

import aiohttp
import asyncpg
from aiohttp.test_utils import TestClient

from telephony.settings import Settings
from telephony.usecases.playback import iter_audio
from telephony.web.appkeys import BLOBS, KEYS, POOL
from tests.conftest import Customer, consented_call
from tests.support.media import JsonPeer, connect, writer_of
from tests.support.waiting import eventually

FRAMES = 200  # per track: 4 s, several 16 KiB chunks


def frame(i: int, track: str) -> bytes:
    """Distinct 160-byte μ-law frames, so a reordered chunk shows as different audio."""
    salt = 0 if track == "inbound" else 101
    return bytes((i * 7 + j + salt) % 251 for j in range(160))


def expected(track: str, frames: int = FRAMES) -> bytes:
    return b"".join(frame(i, track) for i in range(frames))


async def record(
    client: TestClient,
    owner: Customer,
    pool: asyncpg.Pool,
    *,
    channels: str = "dual",
    tracks: tuple[str, ...] = ("inbound", "outbound"),
    frames: int = FRAMES,
    dialect: str = "twilio",
    declare_tracks: bool = True,
) -> str:
    """A completed recording of `frames` distinct frames per track; its id.

    `declare_tracks=False`: the stream's start names no tracks, as Telnyx's never does."""
    call = await consented_call(client, owner)
    peer = await connect(client, call, dialect)
    await peer.start(tracks if declare_tracks else None)
    resp = await client.post(
        f"/v1/calls/{call['id']}/recordings", json={"channels": channels}, headers=owner.auth
    )
    assert resp.status == 201, await resp.text()
    recording_id = (await resp.json())["id"]
    await eventually(lambda: writer_of(client, call["id"]) is not None)
    for i in range(frames):
        for track in tracks:
            await peer.media(frame(i, track), track)
        if i % 100 == 99:
            # Pacing, not a wait: faster than real time, slower than the queue bound.
            await asyncio.sleep(0.02)
    await peer.stop()
    await eventually(lambda: status_is(pool, recording_id, "completed"))
    return recording_id


async def status_is(pool: asyncpg.Pool, recording_id: str, status: str) -> bool:
    async with pool.acquire() as conn:
        return bool(
            await conn.fetchval(
                "SELECT status = $2 FROM recordings WHERE id = $1", recording_id, status
            )
        )


async def download(
    client: TestClient, owner: Customer, recording_id: str, query: str = "", **headers: str
) -> aiohttp.ClientResponse:
    return await client.get(
        f"/v1/recordings/{recording_id}/audio{query}", headers={**owner.auth, **headers}
    )


async def stored_audio(client: TestClient, recording_id: str) -> bytes:
    """The recording's stored codec bytes, tracks interleaved, read back and verified."""
    app = client.app
    pieces = iter_audio(app[POOL], app[BLOBS], app[KEYS], recording_id, None)
    return b"".join([piece async for piece in pieces])


def recording_folder(settings: Settings, recording_id: str) -> Path:
    """Where the blob store keeps the recording's parts."""
    return settings.data_dir / "blobs" / "recordings" / recording_id


async def mono_recording(client: TestClient, owner: Customer) -> tuple[dict, JsonPeer, str]:
    """A consented call whose engine streams one track, recording: (call, peer, recording)."""
    call = await consented_call(client, owner)
    peer = await connect(client, call)
    await peer.start(tracks=("inbound",))
    resp = await client.post(
        f"/v1/calls/{call['id']}/recordings", json={"channels": "mono"}, headers=owner.auth
    )
    assert resp.status == 201, await resp.text()
    await eventually(lambda: writer_of(client, call["id"]) is not None)
    return call, peer, (await resp.json())["id"]
