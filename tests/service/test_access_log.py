"""S3: the HTTP access log in PostgreSQL: route templates, statuses and request ids only.

No raw path (it carries ids), no query string and no token ever reaches a row.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import pytest
from aiohttp.test_utils import TestClient

from telephony.delivery.maildrop import MailDrop
from telephony.settings import Settings
from telephony.web.app import create_app
from tests.conftest import PASSWORD, ServiceServer, new_customer
from tests.support.mail import MAILBOX, mailed_token
from tests.support.waiting import eventually


async def access_rows(pool: asyncpg.Pool) -> list[dict[str, Any]]:
    async with pool.acquire() as conn:
        return [dict(r) for r in await conn.fetch("SELECT * FROM access_log ORDER BY id")]


@pytest.fixture
async def logged_client(
    settings: Settings, pool: asyncpg.Pool, mailbox: MailDrop
) -> AsyncIterator[TestClient]:
    """A serving app with its background workers and the database access log on."""
    app = create_app(settings.replace(access_log_to_db=True), run_workers=True)
    app[MAILBOX] = mailbox
    async with TestClient(ServiceServer(app)) as client:
        yield client


async def test_requests_are_logged_with_the_route_template_status_and_request_id(
    logged_client: TestClient, pool: asyncpg.Pool
) -> None:
    """S3: a row per request names the route template, never the concrete id or query."""
    owner = await new_customer(logged_client)
    invited = await logged_client.post(
        "/v1/users", json={"email": "mia@example.com", "name": "Mia"}, headers=owner.auth
    )
    member = await invited.json()
    invitation_token = await mailed_token(logged_client, "mia@example.com")
    secret_query = "token=qs-secret-value"

    resp = await logged_client.patch(
        f"/v1/users/{member['id']}?{secret_query}",
        json={"role": "owner"},
        headers={**owner.auth, "X-Request-Id": "req-access-1", "User-Agent": "ops-test/1"},
    )
    assert resp.status == 200
    await logged_client.close()  # shutdown: everything queued or in flight is written

    rows = await access_rows(pool)
    [row] = [r for r in rows if r["request_id"] == "req-access-1"]
    assert row["method"] == "PATCH"
    assert row["route"] == "/v1/users/{id}"
    assert row["status"] == 200
    assert row["principal_id"] == owner.user_id
    assert row["user_agent"] == "ops-test/1"
    assert row["source_address"] == "127.0.0.1"
    assert row["duration_ms"] >= 0
    everything = repr(rows)
    for secret in (
        member["id"],
        "qs-secret-value",
        invitation_token,
        owner.token,
        PASSWORD,
    ):
        assert secret not in everything
    assert [r["route"] for r in rows] == [
        "/v1/signup",
        "/v1/sessions",
        "/v1/users",
        "/v1/users/{id}",
    ]


async def test_the_background_writer_logs_while_the_server_runs(
    logged_client: TestClient, pool: asyncpg.Pool
) -> None:
    """S3: rows arrive within about a second, not only when the process stops."""
    resp = await logged_client.get("/healthz", headers={"X-Request-Id": "req-live"})
    assert resp.status == 200

    await eventually(lambda: access_rows(pool))

    assert [(r["route"], r["status"], r["request_id"]) for r in await access_rows(pool)] == [
        ("/healthz", 200, "req-live")
    ]


async def test_entries_in_flight_at_shutdown_are_not_lost(
    settings: Settings, pool: asyncpg.Pool
) -> None:
    """S3: stopping the server right after requests still writes each of them."""
    app = create_app(settings.replace(access_log_to_db=True), run_workers=True)

    async with TestClient(ServiceServer(app)) as client:
        for n in range(5):
            resp = await client.get("/healthz", headers={"X-Request-Id": f"req-{n}"})
            assert resp.status == 200

    assert sorted(r["request_id"] for r in await access_rows(pool)) == [
        f"req-{n}" for n in range(5)
    ]


async def test_failed_and_unmatched_requests_are_logged_without_the_path(
    logged_client: TestClient, pool: asyncpg.Pool
) -> None:
    """S3: a 404 on an unknown path logs "unmatched", a 401 its template; no path, no token."""
    unknown = await logged_client.get(
        "/v1/no-such/usr_hidden?api_key=sk_hidden", headers={"X-Request-Id": "req-404"}
    )
    refused = await logged_client.delete(
        "/v1/api-keys/key_hidden",
        headers={"X-Request-Id": "req-401", "Authorization": "Bearer st_not-a-real-token"},
    )
    assert (unknown.status, refused.status) == (404, 401)
    await logged_client.close()

    rows = await access_rows(pool)
    assert [(r["request_id"], r["route"], r["status"], r["principal_id"]) for r in rows] == [
        ("req-404", "unmatched", 404, None),
        ("req-401", "/v1/api-keys/{id}", 401, None),
    ]
    for secret in ("usr_hidden", "sk_hidden", "key_hidden", "st_not-a-real-token"):
        assert secret not in repr(rows)


async def test_a_malformed_request_id_is_replaced_by_a_generated_one(
    logged_client: TestClient, pool: asyncpg.Pool
) -> None:
    """S3: the row's request id is the one the response carries, never raw client input."""
    resp = await logged_client.get("/healthz", headers={"X-Request-Id": "bad id; DROP TABLE"})
    await logged_client.close()

    [row] = await access_rows(pool)
    assert row["request_id"] == resp.headers["X-Request-Id"]
    assert len(row["request_id"]) == 16


async def test_nothing_is_written_when_the_database_access_log_is_off(
    settings: Settings, pool: asyncpg.Pool
) -> None:
    """S3: access_log_to_db=False keeps the table empty."""
    app = create_app(settings.replace(access_log_to_db=False), run_workers=True)

    async with TestClient(ServiceServer(app)) as client:
        assert (await client.get("/healthz")).status == 200

    assert await access_rows(pool) == []
