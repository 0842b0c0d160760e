"""Recordings kept in an S3-protocol object store (moto on 127.0.0.1): recorded through a
dialect, downloaded byte for byte, deleted object by object (issue 12, the object store)."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator

import asyncpg
import pytest
from aiohttp.test_utils import TestClient

from storage.blobs.names import recording_prefix
from telephony.settings import Settings
from telephony.web.app import create_app
from telephony.web.appkeys import BLOBS, SPOOL
from tests.conftest import Customer, ServiceServer, new_customer
from tests.support.mail import MAILBOX
from tests.support.media import frames_received
from tests.support.pacing import ticks
from tests.support.proxy import CuttableProxy
from tests.support.recordings import (
    download,
    expected,
    frame,
    mono_recording,
    record,
    status_is,
    stored_audio,
)
from tests.support.s3 import S3Server
from tests.support.sealed import make_pair, opened, seal_to, sealed_download
from tests.support.waiting import eventually


@pytest.fixture
async def s3_client(
    settings: Settings, pool: asyncpg.Pool, s3_server: S3Server, mailbox: object
) -> AsyncIterator[TestClient]:
    url = await s3_server.new_bucket("telephony")
    # Parts shipped every 50 ms, so a short recording spans several objects.
    app = create_app(settings.replace(blob_url=url, spool_part_s=0.05), run_workers=False)
    app[MAILBOX] = mailbox  # type: ignore[assignment]
    async with TestClient(ServiceServer(app)) as client:
        yield client


async def test_a_recording_lives_in_the_bucket_downloads_whole_and_deletes(
    s3_client: TestClient, pool: asyncpg.Pool
) -> None:
    owner: Customer = await new_customer(s3_client)
    rec = await record(s3_client, owner, pool, channels="dual", frames=500)  # 10 s

    objects = await s3_client.app[BLOBS].list(recording_prefix(rec))
    whole = await download(s3_client, owner, rec, "?encoding=mulaw")
    ranged = await download(s3_client, owner, rec, "?encoding=mulaw", Range="bytes=1000-90999")
    body = await whole.read()

    assert len(objects) >= 2  # shipped in parts, read back across them
    assert whole.status == 200 and ranged.status == 206
    assert await ranged.read() == body[1000:91000]
    stored = await stored_audio(s3_client, rec)
    assert len(stored) == 500 * 2 * 160  # every frame of both tracks
    assert sum(o.size_bytes for o in objects) > len(stored)  # sealed: tags and headers
    assert body[-len(stored) :] == stored  # the WAV's data is the stored μ-law, byte for byte

    deleted = await s3_client.delete(f"/v1/recordings/{rec}", headers=owner.auth)

    assert deleted.status == 204
    assert await s3_client.app[BLOBS].list(recording_prefix(rec)) == []
    assert (await download(s3_client, owner, rec)).status == 404


async def test_a_sealed_recording_lives_in_the_bucket_and_its_container_opens(
    s3_client: TestClient, pool: asyncpg.Pool
) -> None:
    """The object-store path with a customer key (issue 14): parts shipped to the bucket
    are the container's records, read back across objects, whole and by Range."""
    owner: Customer = await new_customer(s3_client)
    pair = make_pair("hpke-mlkem768-x25519")
    await seal_to(s3_client, owner, pair)
    rec = await record(s3_client, owner, pool, channels="dual", frames=500)

    objects = await s3_client.app[BLOBS].list(recording_prefix(rec))
    body = await sealed_download(s3_client, owner, rec)
    ranged = await download(s3_client, owner, rec, Range="bytes=1000-90999")

    assert len(objects) >= 2
    assert ranged.status == 206 and await ranged.read() == body[1000:91000]
    _, audio = opened(body, pair)
    inbound, outbound = expected("inbound", 500), expected("outbound", 500)
    assert audio[0::2] == inbound and audio[1::2] == outbound
    assert len(body) > sum(o.size_bytes for o in objects)  # the records, behind the header


@pytest.fixture
async def proxied(s3_server: S3Server) -> AsyncIterator[tuple[CuttableProxy, str]]:
    """A fresh bucket reached through a proxy the test can cut: (proxy, blob URL)."""
    port = int(s3_server.endpoint.rsplit(":", 1)[1])
    proxy = await CuttableProxy("127.0.0.1", port).start()
    url = (await s3_server.new_bucket("telephony")).replace(s3_server.endpoint, proxy.endpoint)
    yield proxy, url
    await proxy.close()


async def test_an_object_store_gone_for_twenty_seconds_loses_nothing(
    settings: Settings,
    pool: asyncpg.Pool,
    proxied: tuple[CuttableProxy, str],
    mailbox: object,
) -> None:
    """The spool grows while the store is unreachable and drains when it is back; the call
    is never blocked, no frame is dropped, and the download is every frame sent."""
    proxy, url = proxied
    app = create_app(settings.replace(blob_url=url, spool_part_s=0.5), run_workers=False)
    app[MAILBOX] = mailbox  # type: ignore[assignment]
    sent = 0
    try:
        async with TestClient(ServiceServer(app)) as client:
            owner = await new_customer(client)
            _, peer, rec = await mono_recording(client, owner)

            async def talk(seconds: float) -> None:
                nonlocal sent
                async for _ in ticks(int(seconds * 10), 0.1):  # 100 ms of audio each 100 ms
                    for _ in range(5):
                        await peer.media(frame(sent, "inbound"), "inbound")
                        sent += 1

            await talk(2)
            await proxy.cut()
            started = time.monotonic()
            await talk(20)
            outage_s = time.monotonic() - started
            spooled = await app[SPOOL].parts()
            await proxy.restore()
            await talk(2)
            await peer.stop()
            await eventually(lambda: status_is(pool, rec, "completed"), timeout_s=60)
            audio = await stored_audio(client, rec)
            left = await app[SPOOL].parts()
    finally:
        await proxy.close()

    assert outage_s < 25  # the engine's side was never held up by the outage
    assert len(spooled) >= 10  # parts of half a second piled up while the store was gone
    assert left == []  # and drained once it was back
    assert audio == expected("inbound", sent)  # every frame, in order


async def test_a_restart_while_the_store_is_down_serves_unready_until_the_spool_ships(
    settings: Settings,
    pool: asyncpg.Pool,
    proxied: tuple[CuttableProxy, str],
    mailbox: object,
) -> None:
    proxy, url = proxied
    configured = settings.replace(blob_url=url, spool_part_s=0.3)
    try:
        first = create_app(configured, run_workers=False)
        first[MAILBOX] = mailbox  # type: ignore[assignment]
        async with TestClient(ServiceServer(first)) as client:
            owner = await new_customer(client)
            call, peer, rec = await mono_recording(client, owner)
            await proxy.cut()
            async for tick in ticks(10, 0.1):  # two seconds of audio, none reaching the store
                for i in range(tick * 10, tick * 10 + 10):
                    await peer.media(frame(i, "inbound"), "inbound")
            await eventually(lambda: frames_received(client, call["id"]) >= 100)
        # The process is gone (its parts still in the spool); a new one starts.
        second = create_app(configured, run_workers=False)
        second[MAILBOX] = mailbox  # type: ignore[assignment]
        async with TestClient(ServiceServer(second)) as client:
            unready = await client.get("/readyz")
            unready_body = await unready.json()
            waiting = await second[SPOOL].parts()
            await proxy.restore()

            async def ready() -> bool:
                return (await client.get("/readyz")).status == 200

            await eventually(ready, timeout_s=40, interval_s=0.2)
            left = await second[SPOOL].parts()
            audio = await stored_audio(client, rec)
            answer = await (await client.get(f"/v1/recordings/{rec}", headers=owner.auth)).json()
    finally:
        await proxy.close()

    assert unready.status == 503 and "spool" in unready_body["detail"]
    assert waiting  # the parts waited in the spool, not lost
    assert left == []
    assert answer["status"] == "interrupted"  # its process died mid-call
    assert audio == expected("inbound", 100)
