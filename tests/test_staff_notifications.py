"""S4: every administrative change notifies the responsible staff, through an outbox.

Delivery is tested against a real HTTP receiver on 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import aiohttp
import asyncpg
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from storage import outbox
from telephony import workers
from telephony.app import create_app
from telephony.settings import Settings
from tests.conftest import PASSWORD, Customer, signup_body


@dataclass
class Receiver:
    """A staff webhook endpoint that answers with scripted statuses."""

    statuses: list[int] = field(default_factory=list)
    delay_s: float = 0.0
    received: list[dict] = field(default_factory=list)
    url: str = ""

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.json()
        if self.delay_s:
            await asyncio.sleep(self.delay_s)
        self.received.append(body)
        status = self.statuses.pop(0) if self.statuses else 200
        return web.Response(status=status)


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    rec = Receiver()
    app = web.Application()
    app.router.add_post("/staff", rec.handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    rec.url = f"http://127.0.0.1:{port}/staff"
    yield rec
    await runner.cleanup()


async def notes(pool: asyncpg.Pool) -> list[outbox.StaffNotification]:
    async with pool.acquire() as conn:
        return await outbox.list_all(conn)


async def test_each_admin_change_writes_one_notification_without_secrets(
    client: TestClient, owner: Customer, pool: asyncpg.Pool
) -> None:
    invite = await (
        await client.post(
            "/v1/users", json={"email": "m@example.com", "name": "M"}, headers=owner.auth
        )
    ).json()
    member_id = invite["id"]
    await client.patch(f"/v1/users/{member_id}", json={"role": "owner"}, headers=owner.auth)
    key = await (
        await client.post(
            "/v1/api-keys", json={"name": "k", "scopes": ["calls"]}, headers=owner.auth
        )
    ).json()
    await client.delete(f"/v1/api-keys/{key['id']}", headers=owner.auth)
    await client.delete(f"/v1/users/{member_id}", headers=owner.auth)

    found = await notes(pool)

    assert [n.event for n in found] == [
        "user.created",  # signup
        "user.created",
        "role.changed",
        "api_key.created",
        "api_key.deleted",
        "user.deleted",
    ]
    changed = found[2].payload
    assert changed["actor"] == {"type": "user", "id": owner.user_id, "role": "owner"}
    assert changed["subject"] == {"type": "user", "id": member_id}
    assert changed["changes"]["role"] == {"from": "member", "to": "owner"}
    everything = json.dumps([n.payload for n in found])
    for secret in (key["token"], invite["invitation"]["token"], PASSWORD):
        assert secret not in everything


async def test_a_refused_change_leaves_no_notification(
    client: TestClient, owner: Customer, pool: asyncpg.Pool
) -> None:
    before = len(await notes(pool))

    resp = await client.post(
        "/v1/users", json={"email": owner.email, "name": "Dup"}, headers=owner.auth
    )

    assert resp.status == 409
    assert len(await notes(pool)) == before


async def test_delivery_posts_json_to_the_staff_webhook(
    client: TestClient, owner: Customer, pool: asyncpg.Pool, settings: Settings, receiver: Receiver
) -> None:
    configured = settings.replace(staff_webhook_url=receiver.url)

    async with aiohttp.ClientSession() as http:
        delivered = await workers.deliver_due_notifications(pool, http, configured)

    assert delivered == 1
    assert receiver.received[0]["type"] == "user.created"
    assert receiver.received[0]["data"]["account_id"] == owner.account_id
    assert all(n.delivered_at is not None for n in await notes(pool))


async def test_a_500_is_retried_with_backoff(
    client: TestClient, owner: Customer, pool: asyncpg.Pool, settings: Settings, receiver: Receiver
) -> None:
    configured = settings.replace(staff_webhook_url=receiver.url)
    receiver.statuses = [500]
    now = datetime.now(UTC)

    async with aiohttp.ClientSession() as http:
        first = await workers.deliver_due_notifications(pool, http, configured, now)
        failed = (await notes(pool))[0]
        too_early = await workers.deliver_due_notifications(pool, http, configured, now)
        later = await workers.deliver_due_notifications(
            pool, http, configured, failed.next_attempt_at + timedelta(milliseconds=1)
        )

    assert (first, too_early, later) == (0, 0, 1)
    assert failed.attempts == 1
    assert failed.last_error == "HTTP 500"
    assert failed.next_attempt_at > now
    assert len(receiver.received) == 2  # the same notification, twice
    assert receiver.received[0]["id"] == receiver.received[1]["id"]


async def test_delivery_gives_up_after_the_last_attempt(
    client: TestClient, owner: Customer, pool: asyncpg.Pool, settings: Settings, receiver: Receiver
) -> None:
    configured = settings.replace(staff_webhook_url=receiver.url, outbox_max_attempts=3)
    receiver.statuses = [503] * 10
    now = datetime.now(UTC)

    async with aiohttp.ClientSession() as http:
        for _ in range(5):
            await workers.deliver_due_notifications(pool, http, configured, now)
            now += timedelta(hours=2)

    note = (await notes(pool))[0]
    assert note.attempts == 3
    assert note.given_up_at is not None
    assert len(receiver.received) == 3


async def test_a_hanging_receiver_times_out_without_stalling(
    client: TestClient, owner: Customer, pool: asyncpg.Pool, settings: Settings, receiver: Receiver
) -> None:
    configured = settings.replace(staff_webhook_url=receiver.url, staff_webhook_timeout_s=0.2)
    receiver.delay_s = 5

    async with aiohttp.ClientSession() as http:
        started = asyncio.get_running_loop().time()
        await workers.deliver_due_notifications(pool, http, configured)
        elapsed = asyncio.get_running_loop().time() - started

    assert elapsed < 2
    assert (await notes(pool))[0].last_error == "TimeoutError"


async def test_without_a_webhook_the_notification_is_logged(
    client: TestClient,
    owner: Customer,
    pool: asyncpg.Pool,
    settings: Settings,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level("INFO", logger="telephony.workers")

    async with aiohttp.ClientSession() as http:
        delivered = await workers.deliver_due_notifications(pool, http, settings)

    assert delivered == 1
    assert any(r.getMessage() == "staff notification" for r in caplog.records)


async def test_the_background_worker_delivers_after_commit(
    settings: Settings, pool: asyncpg.Pool, receiver: Receiver
) -> None:
    """LISTEN/NOTIFY wakes the worker: no need to wait for the poll interval."""
    configured = settings.replace(staff_webhook_url=receiver.url, outbox_poll_s=30)
    app = create_app(configured, run_workers=True)
    async with TestClient(TestServer(app)) as client:
        await client.post("/v1/signup", json=signup_body())
        for _ in range(100):
            if receiver.received:
                break
            await asyncio.sleep(0.05)

    assert [r["type"] for r in receiver.received] == ["user.created"]


async def test_requests_land_in_the_access_log_without_ids_or_tokens(
    settings: Settings, pool: asyncpg.Pool
) -> None:
    """S3: the access log keeps route templates, never raw paths or query strings."""
    configured = settings.replace(access_log_to_db=True)
    app = create_app(configured, run_workers=False)
    async with TestClient(TestServer(app)) as client:
        await client.delete("/v1/users/usr_secretish?token=abc", headers={"X-Request-Id": "req-9"})

    async with pool.acquire() as conn:
        rows = await conn.fetch("SELECT * FROM access_log")
    assert [(r["route"], r["status"], r["request_id"]) for r in rows] == [
        ("/v1/users/{id}", 401, "req-9")
    ]
    assert "usr_secretish" not in repr([dict(r) for r in rows])
    assert "abc" not in repr([dict(r) for r in rows])
