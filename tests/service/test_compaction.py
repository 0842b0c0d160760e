"""A finished recording in an object store becomes one object, read the same (issue 12:
downloads from an object store are bounded by requests, not bytes). Against moto on
127.0.0.1, and the filesystem store, which takes the same calls."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import asyncpg
import pytest
from aiohttp.test_utils import TestClient

from storage.blobs.names import recording_prefix, whole_audio
from telephony.settings import Settings
from telephony.usecases import compaction
from telephony.web.app import create_app
from telephony.web.appkeys import BLOBS
from tests.conftest import Customer, ServiceServer, new_customer
from tests.support.mail import MAILBOX
from tests.support.recordings import download, record
from tests.support.s3 import S3Server


@pytest.fixture(params=["s3", "filesystem"])
async def any_store(
    request: pytest.FixtureRequest,
    settings: Settings,
    s3_server: S3Server,
    mailbox: object,
) -> AsyncIterator[TestClient]:
    blob_url = await s3_server.new_bucket("telephony") if request.param == "s3" else None
    # Parts every 50 ms: a short recording spans many objects, as an hour spans hundreds.
    app = create_app(settings.replace(blob_url=blob_url, spool_part_s=0.05), run_workers=False)
    app[MAILBOX] = mailbox  # type: ignore[assignment]
    async with TestClient(ServiceServer(app)) as client:
        yield client


async def keys_of(client: TestClient, recording_id: str) -> list[str]:
    listing = await client.app[BLOBS].list(recording_prefix(recording_id))
    return [info.key.rsplit("/", 1)[-1] for info in listing]


async def body(client: TestClient, owner: Customer, recording_id: str, **headers: str) -> bytes:
    resp = await download(client, owner, recording_id, "?encoding=mulaw", **headers)
    assert resp.status in (200, 206), await resp.text()
    return await resp.read()


async def test_a_finished_recording_becomes_one_object_that_reads_the_same(
    any_store: TestClient, pool: asyncpg.Pool
) -> None:
    client, blobs = any_store, any_store.app[BLOBS]
    owner = await new_customer(client)
    rec = await record(client, owner, pool, frames=500)
    before = await body(client, owner, rec)
    parts = await keys_of(client, rec)
    now = datetime.now(UTC)

    too_soon = await compaction.compaction_pass(pool, blobs, now)  # its parts may still come
    first = await compaction.compaction_pass(pool, blobs, now + timedelta(minutes=2))
    compacted = await keys_of(client, rec)
    during = await body(client, owner, rec)
    ranged = await body(client, owner, rec, Range="bytes=1000-90999")
    later = await compaction.compaction_pass(pool, blobs, now + timedelta(hours=2))
    after = await body(client, owner, rec)
    left = await keys_of(client, rec)
    deleted = await client.delete(f"/v1/recordings/{rec}", headers=owner.auth)

    assert len(parts) >= 2 and "audio-whole" not in parts
    assert too_soon.compacted == 0
    assert first.compacted == 1
    assert sorted(compacted) == sorted([*parts, "audio-whole"])  # parts kept an hour
    assert during == before and after == before
    assert ranged == before[1000:91000]
    assert later.parts_dropped == len(parts)
    assert left == ["audio-whole"]
    assert deleted.status == 204
    assert await keys_of(client, rec) == []  # deletion takes the whole too (R3)


async def test_a_recording_deleted_while_it_was_copied_keeps_no_whole(
    any_store: TestClient, pool: asyncpg.Pool
) -> None:
    """The deletion committed while the parts were being copied, its blob removal not yet
    run: what the copy wrote must not outlive it."""
    client, blobs = any_store, any_store.app[BLOBS]
    owner = await new_customer(client)
    rec = await record(client, owner, pool, frames=200)
    async with pool.acquire() as conn:
        await conn.execute("UPDATE recordings SET status = 'deleted' WHERE id = $1", rec)

    done = await compaction.compact(pool, blobs, rec, datetime.now(UTC))

    assert done is False
    assert "audio-whole" not in await keys_of(client, rec)


async def test_a_recording_whose_parts_are_still_arriving_waits(
    any_store: TestClient, pool: asyncpg.Pool
) -> None:
    """A part still in a node's spool (shipping, or a node recovering): no whole that would
    miss it, and the next pass tries again."""
    client, blobs = any_store, any_store.app[BLOBS]
    owner = await new_customer(client)
    rec = await record(client, owner, pool, frames=200)
    listing = await blobs.list(recording_prefix(rec))
    await blobs.delete_keys([listing[-1].key])  # the last part has not arrived yet

    done = await compaction.compact(pool, blobs, rec, datetime.now(UTC))

    assert done is False
    assert whole_audio(rec).rsplit("/", 1)[-1] not in await keys_of(client, rec)
    async with pool.acquire() as conn:
        assert await conn.fetchval("SELECT compacted_at FROM recordings WHERE id = $1", rec) is None
