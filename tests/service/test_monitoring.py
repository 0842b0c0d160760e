"""S7: the data stores' resources in /metrics, /readyz before a store is full, and no new
recording while free space is under the reserve."""

from __future__ import annotations

import asyncio
import re

import asyncpg
from aiohttp import web
from aiohttp.test_utils import TestClient

from telephony.settings import Settings
from telephony.web.app import create_app
from telephony.web.appkeys import BLOBS
from telephony.web.capacity import free_space
from tests.conftest import Customer, ServiceServer, consented_call, new_customer
from tests.support.mail import MAILBOX
from tests.support.recordings import record
from tests.support.s3 import S3Server


def metric(text: str, name: str, labels: str = "") -> float:
    found = re.search(rf"^{re.escape(name + labels)} (\S+)$", text, re.M)
    assert found, f"{name}{labels} is not in /metrics"
    return float(found.group(1))


async def test_metrics_show_free_space_database_and_spool(
    client: TestClient, owner: Customer, pool: asyncpg.Pool
) -> None:
    await record(client, owner, pool, frames=50)

    text = await (await client.get("/metrics")).text()

    assert metric(text, "storage_free_bytes", '{store="blob_store"}') > 0
    assert metric(text, "storage_free_bytes", '{store="spool"}') > 0
    assert metric(text, "database_size_bytes") > 1_000_000
    assert metric(text, "database_connections") >= 1
    assert metric(text, "spool_parts") == 0  # the recording's parts all moved to the store
    assert metric(text, "spool_oldest_part_age_seconds") == 0


async def test_under_the_reserve_a_new_recording_is_503_storage_low_and_the_node_unready(
    settings: Settings, pool: asyncpg.Pool, mailbox: object
) -> None:
    # A reserve no disk can meet: every store is "under" it.
    app = create_app(settings.replace(storage_reserve_mb=1 << 40), run_workers=False)
    app[MAILBOX] = mailbox  # type: ignore[assignment]
    async with TestClient(ServiceServer(app)) as client:
        owner = await new_customer(client)
        call = await consented_call(client, owner)

        refused = await client.post(
            f"/v1/calls/{call['id']}/recordings", json={}, headers=owner.auth
        )
        ready = await client.get("/readyz")
        body, ready_body = await refused.json(), await ready.json()
        recordings = await client.get("/v1/recordings", headers=owner.auth)
        listed = await recordings.json()

    assert refused.status == 503 and body["code"] == "storage-low"
    assert "reserve" in body["detail"] and refused.headers["Retry-After"] == "60"
    assert ready.status == 503 and "reserve" in ready_body["detail"]
    assert listed["items"] == []  # nothing was started


async def app_on_s3(settings: Settings, s3_server: S3Server, mailbox: object) -> web.Application:
    """The service with its blobs in a new bucket of the test's S3 server."""
    url = await s3_server.new_bucket("telephony")
    app = create_app(settings.replace(blob_url=url), run_workers=False)
    app[MAILBOX] = mailbox  # type: ignore[assignment]
    return app


async def test_object_store_requests_and_errors_are_counted(
    settings: Settings, pool: asyncpg.Pool, s3_server: S3Server, mailbox: object
) -> None:
    async with TestClient(ServiceServer(await app_on_s3(settings, s3_server, mailbox))) as client:
        owner = await new_customer(client)
        rec = await record(client, owner, pool, frames=50)
        await (await client.get(f"/v1/recordings/{rec}/audio", headers=owner.auth)).read()
        missing = await client.get(
            "/v1/recordings/rec_aaaaaaaaaaaaaaaaaaaaaaaa/audio", headers=owner.auth
        )
        text = await (await client.get("/metrics")).text()

    assert missing.status == 404
    assert metric(text, "object_store_requests_total", '{op="put"}') >= 1
    assert metric(text, "object_store_requests_total", '{op="get"}') >= 1
    assert metric(text, "object_store_request_seconds_total", '{op="put"}') > 0
    assert 'storage_free_bytes{store="blob_store"}' not in text  # an object store has no figure


async def test_starts_probing_at_once_share_one_object_store_listing(
    settings: Settings, pool: asyncpg.Pool, s3_server: S3Server, mailbox: object
) -> None:
    # 800 starts at once each listing the bucket timed out in bench/ingest.py: all 503.
    async with TestClient(ServiceServer(await app_on_s3(settings, s3_server, mailbox))) as client:
        stats = client.app[BLOBS].stats  # type: ignore[attr-defined]
        before = stats.requests.get("head", 0)
        readings = await asyncio.gather(*(free_space(client.app) for _ in range(40)))
        shared = stats.requests.get("head", 0) - before
        await free_space(client.app)
        afresh = stats.requests.get("head", 0) - before - shared

    assert shared == 1 and afresh == 1
    assert all(r == readings[0] for r in readings) and set(readings[0]) == {
        "blob store",
        "spool",
    }
