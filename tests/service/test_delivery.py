"""Delivery through the account (R4) and deletion on instruction (R3), on real recordings.

Each recording here is made the way production makes it: a real WebSocket
stream into the recorder, sealed chunks in the filesystem blob store, rows in
PostgreSQL. The damage tests alter those real files and rows.
"""

from __future__ import annotations

import asyncio
import base64
import io
import struct
import wave
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import pytest
from aiohttp.test_utils import TestClient

from storage.keys import crypto
from storage.keys import hierarchy as keys
from storage.keys.crypto import CHUNK_HEADER, ChunkCipher
from telephony.domain.errors import IntegrityFailure
from telephony.media.wav import ulaw_to_linear
from telephony.settings import Settings, master_keys
from telephony.usecases import playback
from telephony.web.app import create_app
from telephony.web.appkeys import KEYS
from tests.conftest import Customer, ServiceServer, consented_call, new_customer
from tests.support.recordings import (
    download,
    expected,
    record,
    recording_folder,
)


def pcm(ulaw: bytes) -> list[int]:
    return [ulaw_to_linear(b) for b in ulaw]


async def blob_path(settings: Settings, recording_id: str) -> Path:
    """The recording's one stored part: these recordings are shorter than a part."""
    folder = recording_folder(settings, recording_id)
    parts = sorted(await asyncio.to_thread(lambda: list(folder.glob("audio-*"))))
    assert [p.name for p in parts] == ["audio-0000000000000000"], parts
    return parts[0]


async def chunk_rows(pool: asyncpg.Pool, recording_id: str) -> list[asyncpg.Record]:
    async with pool.acquire() as conn:
        return await conn.fetch(
            """SELECT idx, blob_offset, record_bytes FROM recording_chunks
               WHERE recording_id = $1 ORDER BY idx""",
            recording_id,
        )


async def integrity_events(pool: asyncpg.Pool) -> list[dict[str, Any]]:
    async with pool.acquire() as conn:
        rows = await conn.fetch(
            "SELECT details FROM security_log WHERE event = 'recording.integrity_failure'"
        )
    return [r["details"] for r in rows]


@pytest.fixture
async def recording(client: TestClient, owner: Customer, pool: asyncpg.Pool) -> str:
    return await record(client, owner, pool)


# -- the file ---------------------------------------------------------------------------


async def test_dual_download_is_a_two_channel_pcm_wav_of_what_was_recorded(
    client: TestClient, owner: Customer, recording: str
) -> None:
    resp = await download(client, owner, recording)

    body = await resp.read()
    assert resp.status == 200
    assert resp.content_type == "audio/wav"
    assert int(resp.headers["Content-Length"]) == len(body)
    with wave.open(io.BytesIO(body)) as wav:
        assert (wav.getnchannels(), wav.getframerate(), wav.getsampwidth()) == (2, 8000, 2)
        samples = struct.unpack(f"<{wav.getnframes() * 2}h", wav.readframes(wav.getnframes()))
    assert list(samples[0::2]) == pcm(expected("inbound"))  # channel 0: the counterparts
    assert list(samples[1::2]) == pcm(expected("outbound"))  # channel 1: the customer


async def test_mulaw_download_carries_the_stored_bytes_unchanged(
    client: TestClient, owner: Customer, recording: str
) -> None:
    resp = await download(client, owner, recording, "?encoding=mulaw")

    body = await resp.read()
    assert resp.status == 200
    fmt_tag, channels, rate = struct.unpack_from("<HHI", body, 20)
    assert body[:4] == b"RIFF" and body[8:12] == b"WAVE"
    assert (fmt_tag, channels, rate) == (7, 2, 8000)  # WAVE_FORMAT_MULAW
    data_at = body.index(b"data") + 8
    audio = body[data_at:]
    assert struct.unpack_from("<I", body, data_at - 4)[0] == len(audio)
    assert audio[0::2] == expected("inbound") and audio[1::2] == expected("outbound")


async def test_mono_download_mixes_both_sides_into_one_channel(
    client: TestClient, owner: Customer, pool: asyncpg.Pool
) -> None:
    recording_id = await record(client, owner, pool, channels="mono", frames=60)

    resp = await download(client, owner, recording_id)

    with wave.open(io.BytesIO(await resp.read())) as wav:
        assert wav.getnchannels() == 1
        samples = struct.unpack(f"<{wav.getnframes()}h", wav.readframes(wav.getnframes()))
    mixed = [
        max(-32768, min(32767, a + b))
        for a, b in zip(pcm(expected("inbound", 60)), pcm(expected("outbound", 60)), strict=True)
    ]
    assert list(samples) == mixed


async def test_a_track_that_never_streamed_is_a_silent_channel(
    client: TestClient, owner: Customer, pool: asyncpg.Pool
) -> None:
    recording_id = await record(client, owner, pool, tracks=("inbound",), frames=50)

    resp = await download(client, owner, recording_id)

    with wave.open(io.BytesIO(await resp.read())) as wav:
        samples = struct.unpack(f"<{wav.getnframes() * 2}h", wav.readframes(wav.getnframes()))
    assert list(samples[0::2]) == pcm(expected("inbound", 50))
    assert set(samples[1::2]) == {0}


@pytest.mark.parametrize("dialect", ["twilio", "telnyx"])
async def test_both_tracks_are_kept_when_the_start_names_none(
    client: TestClient, owner: Customer, pool: asyncpg.Pool, dialect: str
) -> None:
    """Issue 15: Telnyx's start has no `tracks` even with both_tracks; its outbound frames
    were dropped and the customer's side came back silent. Every JSON dialect keeps both."""
    recording_id = await record(
        client, owner, pool, frames=60, dialect=dialect, declare_tracks=False
    )

    resp = await download(client, owner, recording_id)

    with wave.open(io.BytesIO(await resp.read())) as wav:
        samples = struct.unpack(f"<{wav.getnframes() * 2}h", wav.readframes(wav.getnframes()))
    assert list(samples[0::2]) == pcm(expected("inbound", 60))
    assert list(samples[1::2]) == pcm(expected("outbound", 60))


# -- seeking: Range and ETag (RFC 9110) -----------------------------------------------


@pytest.mark.parametrize(
    ("header", "start", "stop"),
    [
        ("bytes=100-1099", 100, 1100),
        ("bytes=40000-", 40000, None),
        ("bytes=-500", -500, None),
        ("bytes=0-0", 0, 1),
        ("bytes=60000-99999999", 60000, None),  # an end past the file is clipped
    ],
)
async def test_a_single_range_answers_206_with_exactly_those_bytes(
    client: TestClient, owner: Customer, recording: str, header: str, start: int, stop: int | None
) -> None:
    whole = await (await download(client, owner, recording)).read()

    resp = await download(client, owner, recording, Range=header)

    part = await resp.read()
    assert resp.status == 206
    assert part == whole[start:stop]
    first = start % len(whole)
    assert resp.headers["Content-Range"] == f"bytes {first}-{first + len(part) - 1}/{len(whole)}"


@pytest.mark.parametrize(
    "header", ["bytes=999999999-", "bytes=abc-def", "bytes=500-100", "bytes=-0"]
)
async def test_an_unsatisfiable_or_malformed_range_answers_416_naming_the_size(
    client: TestClient, owner: Customer, recording: str, header: str
) -> None:
    whole = await (await download(client, owner, recording)).read()

    resp = await download(client, owner, recording, Range=header)

    assert resp.status == 416
    assert resp.content_type == "application/problem+json"
    assert (await resp.json())["code"] == "range-not-satisfiable"
    assert resp.headers["Content-Range"] == f"bytes */{len(whole)}"


async def test_other_units_and_multiple_ranges_get_the_whole_file(
    client: TestClient, owner: Customer, recording: str
) -> None:
    many = await download(client, owner, recording, Range="bytes=0-10,20-30")
    items = await download(client, owner, recording, Range="items=0-5")

    assert many.status == items.status == 200
    assert await many.read() == await items.read()


async def test_etag_gives_304_and_a_stale_if_range_gives_the_whole_file(
    client: TestClient, owner: Customer, recording: str
) -> None:
    first = await download(client, owner, recording)
    etag = first.headers["ETag"]
    whole = await first.read()

    cached = await download(client, owner, recording, **{"If-None-Match": etag})
    fresh = await download(client, owner, recording, Range="bytes=0-9", **{"If-Range": etag})
    stale = await download(client, owner, recording, Range="bytes=0-9", **{"If-Range": '"old"'})
    other = await download(client, owner, recording, "?encoding=mulaw")

    assert cached.status == 304
    assert fresh.status == 206 and await fresh.read() == whole[:10]
    assert stale.status == 200 and await stale.read() == whole
    assert other.headers["ETag"] != etag  # another representation, another tag


# -- who may download, and the audit trail -------------------------------------------


async def test_a_live_recording_answers_409_recording_in_progress(
    client: TestClient, owner: Customer
) -> None:
    call = await consented_call(client, owner)
    resp = await client.post(f"/v1/calls/{call['id']}/recordings", json={}, headers=owner.auth)
    recording_id = (await resp.json())["id"]

    got = await download(client, owner, recording_id)

    assert got.status == 409
    assert (await got.json())["code"] == "recording-in-progress"


async def test_another_account_gets_404_and_an_unknown_encoding_422(
    client: TestClient, owner: Customer, recording: str
) -> None:
    stranger = await new_customer(client)

    theirs = await download(client, stranger, recording)
    bad = await download(client, owner, recording, "?encoding=flac")

    assert theirs.status == 404
    assert (await theirs.json())["code"] == "not-found"
    assert bad.status == 422
    assert (await bad.json())["errors"][0]["field"] == "encoding"


async def test_every_download_is_audited_with_who_and_where(
    client: TestClient, owner: Customer, recording: str
) -> None:
    await (await download(client, owner, recording)).read()
    await (await download(client, owner, recording, Range="bytes=0-99")).read()

    trail = await (await client.get("/v1/audit?limit=200", headers=owner.auth)).json()

    downloads = [e for e in trail["items"] if e["action"] == "recording.downloaded"]
    assert len(downloads) == 2
    assert {e["actor"]["id"] for e in downloads} == {owner.user_id}
    assert {e["subject"]["recording_id"] for e in downloads} == {recording}
    assert all(e["details"]["address"] == "127.0.0.1" for e in downloads)
    assert [e["details"]["range"] for e in downloads] == [None, "0-99"]


# -- integrity: four damages on a real stored recording -------------------------------


async def flip_bit(path: Path, at: int) -> None:
    data = bytearray(await asyncio.to_thread(path.read_bytes))
    data[at] ^= 0x01
    await asyncio.to_thread(path.write_bytes, bytes(data))


async def test_a_flipped_bit_in_the_first_chunk_answers_500_before_any_audio(
    client: TestClient, owner: Customer, pool: asyncpg.Pool, settings: Settings, recording: str
) -> None:
    await flip_bit(await blob_path(settings, recording), CHUNK_HEADER.size + 5)

    resp = await download(client, owner, recording)

    assert resp.status == 500
    body = await resp.json()
    assert body["code"] == "integrity-error"
    assert "Traceback" not in body["detail"]
    assert await integrity_events(pool) == [{"recording_id": recording}]


async def test_a_flipped_bit_later_cuts_the_transfer_short_and_never_alters_audio(
    client: TestClient,
    owner: Customer,
    pool: asyncpg.Pool,
    settings: Settings,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Small blob reads, so the damaged chunk lies past the first streamed piece.
    monkeypatch.setattr(playback, "READ_BATCH_BYTES", 32 * 1024)
    recording_id = await record(client, owner, pool, frames=600)
    intact = await (await download(client, owner, recording_id)).read()
    rows = await chunk_rows(pool, recording_id)
    await flip_bit(await blob_path(settings, recording_id), rows[-2]["blob_offset"] + 20)

    resp = await download(client, owner, recording_id)
    received = bytearray()
    with pytest.raises(aiohttp.ClientPayloadError):
        async for piece in resp.content.iter_any():
            received += piece

    assert resp.status == 200
    assert 0 < len(received) < len(intact)
    assert intact.startswith(bytes(received))  # a prefix of the truth, never altered audio
    assert await integrity_events(pool) == [{"recording_id": recording_id}]


async def test_a_missing_chunk_answers_500_before_any_audio(
    client: TestClient, owner: Customer, pool: asyncpg.Pool, recording: str
) -> None:
    async with pool.acquire() as conn:
        await conn.execute(
            "DELETE FROM recording_chunks WHERE recording_id = $1 AND idx = 1", recording
        )

    resp = await download(client, owner, recording)

    assert resp.status == 500
    assert (await resp.json())["code"] == "integrity-error"


async def test_a_truncated_blob_answers_500_before_any_audio(
    client: TestClient, owner: Customer, settings: Settings, recording: str
) -> None:
    path = await blob_path(settings, recording)
    data = await asyncio.to_thread(path.read_bytes)
    await asyncio.to_thread(path.write_bytes, data[:-100])

    resp = await download(client, owner, recording)

    assert resp.status == 500
    assert (await resp.json())["code"] == "integrity-error"


async def test_reordered_chunks_fail_to_open(
    client: TestClient, owner: Customer, pool: asyncpg.Pool, settings: Settings, recording: str
) -> None:
    rows = await chunk_rows(pool, recording)
    first, second = rows[0], rows[1]
    assert first["record_bytes"] == second["record_bytes"]  # a swap keeps every offset valid
    path = await blob_path(settings, recording)
    data = bytearray(await asyncio.to_thread(path.read_bytes))
    a = slice(first["blob_offset"], first["blob_offset"] + first["record_bytes"])
    b = slice(second["blob_offset"], second["blob_offset"] + second["record_bytes"])
    data[a], data[b] = data[b], data[a]
    await asyncio.to_thread(path.write_bytes, bytes(data))

    resp = await download(client, owner, recording)

    assert resp.status == 500
    assert (await resp.json())["code"] == "integrity-error"


async def test_a_chunk_swapped_in_from_another_recording_fails_to_open(
    client: TestClient, owner: Customer, pool: asyncpg.Pool, settings: Settings, recording: str
) -> None:
    other = await record(client, owner, pool)
    mine, theirs = await blob_path(settings, recording), await blob_path(settings, other)
    size = (await chunk_rows(pool, recording))[0]["record_bytes"]
    data = bytearray(await asyncio.to_thread(mine.read_bytes))
    data[:size] = (await asyncio.to_thread(theirs.read_bytes))[:size]
    await asyncio.to_thread(mine.write_bytes, bytes(data))

    resp = await download(client, owner, recording)
    unharmed = await download(client, owner, other)

    assert resp.status == 500
    assert (await resp.json())["code"] == "integrity-error"
    assert unharmed.status == 200


# -- deletion (R3) ----------------------------------------------------------------------


async def test_delete_destroys_the_key_then_the_audio_and_is_idempotent(
    client: TestClient, owner: Customer, pool: asyncpg.Pool, settings: Settings, recording: str
) -> None:
    path = await blob_path(settings, recording)
    backup = await asyncio.to_thread(path.read_bytes)  # a copy taken before deletion
    await record(client, owner, pool, frames=10)  # another recording, whose key stays
    async with pool.acquire() as conn:
        prefix = bytes(
            await conn.fetchval("SELECT nonce_prefix FROM recordings WHERE id = $1", recording)
        )

    first = await client.delete(f"/v1/recordings/{recording}", headers=owner.auth)
    again = await client.delete(f"/v1/recordings/{recording}", headers=owner.auth)

    assert first.status == again.status == 204
    assert (await client.get(f"/v1/recordings/{recording}", headers=owner.auth)).status == 404
    assert (await download(client, owner, recording)).status == 404
    assert not await asyncio.to_thread(path.parent.exists)
    async with pool.acquire() as conn:
        row = await conn.fetchrow(
            """SELECT status, wrapped_key, deleted_at, blobs_deleted_at
               FROM recordings WHERE id = $1""",
            recording,
        )
        assert row["status"] == "deleted" and row["wrapped_key"] is None
        assert row["blobs_deleted_at"] is not None
        # Restore the old copy and try every data key the system still holds: none opens it.
        surviving = await conn.fetch(
            "SELECT id, account_id, wrapped_key FROM recordings WHERE wrapped_key IS NOT NULL"
        )
        data_keys = [
            await client.app[KEYS].recording_key(
                conn, owner.account_id, other["id"], bytes(other["wrapped_key"]), row["deleted_at"]
            )
            for other in surviving
        ]
    record_bytes = CHUNK_HEADER.size + struct.unpack_from(">I", backup, 6)[0]
    assert data_keys, "other recordings keep their keys"
    for data_key in data_keys:
        with pytest.raises(IntegrityFailure):
            ChunkCipher(data_key, prefix, recording).open("mix", 0, backup[:record_bytes])


async def test_delete_is_audited_and_announced_once(
    client: TestClient, owner: Customer, pool: asyncpg.Pool, recording: str
) -> None:
    await client.delete(f"/v1/recordings/{recording}", headers=owner.auth)
    await client.delete(f"/v1/recordings/{recording}", headers=owner.auth)

    trail = await (await client.get("/v1/audit?limit=200", headers=owner.auth)).json()
    async with pool.acquire() as conn:
        events = await conn.fetch(
            "SELECT payload FROM webhook_events WHERE type = 'recording.deleted'"
        )

    deletions = [e for e in trail["items"] if e["action"] == "recording.deleted"]
    assert len(deletions) == 1
    assert deletions[0]["actor"]["id"] == owner.user_id
    assert deletions[0]["subject"]["recording_id"] == recording
    assert [e["payload"]["data"]["recording_id"] for e in events] == [recording]


async def test_deleting_a_live_recording_or_another_accounts_is_refused(
    client: TestClient, owner: Customer, recording: str
) -> None:
    call = await consented_call(client, owner)
    resp = await client.post(f"/v1/calls/{call['id']}/recordings", json={}, headers=owner.auth)
    live = (await resp.json())["id"]
    stranger = await new_customer(client)

    busy = await client.delete(f"/v1/recordings/{live}", headers=owner.auth)
    theirs = await client.delete(f"/v1/recordings/{recording}", headers=stranger.auth)
    unknown = await client.delete("/v1/recordings/rec_nothing", headers=owner.auth)

    assert busy.status == 409 and (await busy.json())["code"] == "recording-in-progress"
    assert theirs.status == unknown.status == 404
    assert (await download(client, owner, recording)).status == 200


async def test_recordings_made_before_and_after_a_key_rotation_both_download(
    client: TestClient, owner: Customer, pool: asyncpg.Pool, settings: Settings
) -> None:
    before = await record(client, owner, pool, frames=20)
    old_key = settings.master_key
    assert old_key is not None
    new_key = base64.b64encode(crypto.new_key()).decode()
    rotating = settings.replace(master_key=new_key, previous_master_keys=(old_key,))
    result = await keys.rotate(pool, master_keys(rotating), datetime.now(UTC))
    async with TestClient(ServiceServer(create_app(rotating, run_workers=False))) as during:
        after = await record(during, owner, pool, frames=20)
        in_rotation = [(await download(during, owner, rid)).status for rid in (before, after)]
    # Rotation over: the old master key is no longer configured at all.
    done = settings.replace(master_key=new_key, previous_master_keys=())
    async with TestClient(ServiceServer(create_app(done, run_workers=False))) as later:
        afterwards = [await (await download(later, owner, rid)).read() for rid in (before, after)]

    assert result.rewrapped >= 1 and result.remaining == 0
    assert in_rotation == [200, 200]
    assert all(body.startswith(b"RIFF") and len(body) > 44 for body in afterwards)


async def api_key(client: TestClient, owner: Customer, *scopes: str) -> Customer:
    resp = await client.post(
        "/v1/api-keys", json={"name": "-".join(scopes), "scopes": list(scopes)}, headers=owner.auth
    )
    assert resp.status == 201, await resp.text()
    return Customer(owner.account_id, owner.user_id, owner.email, (await resp.json())["token"])


async def test_api_keys_need_recordings_read_to_download_and_write_to_delete(
    client: TestClient, owner: Customer, recording: str
) -> None:
    """API.md: audio needs `recordings:read`, DELETE needs `recordings:write`."""
    calls_only = await api_key(client, owner, "calls")
    reader = await api_key(client, owner, "recordings:read")
    writer = await api_key(client, owner, "recordings:write")

    refused_audio = await download(client, calls_only, recording)
    refused_delete = await client.delete(f"/v1/recordings/{recording}", headers=reader.auth)
    allowed_audio = await download(client, reader, recording)
    allowed_delete = await client.delete(f"/v1/recordings/{recording}", headers=writer.auth)

    assert refused_audio.status == refused_delete.status == 403
    assert (await refused_audio.json())["code"] == "forbidden"
    assert allowed_audio.status == 200 and (await allowed_audio.read()).startswith(b"RIFF")
    assert allowed_delete.status == 204
