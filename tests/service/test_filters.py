"""The list filters of API.md "Filters and formats", on the JSON lists."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import asyncpg
import pytest
from aiohttp.test_utils import TestClient

from tests.conftest import Customer, consented_call, new_customer, start_recording


async def call_with(client: TestClient, owner: Customer, src: str, dst: str, party: str) -> dict:
    resp = await client.post(
        "/v1/calls",
        json={
            "direction": "inbound",
            "from": src,
            "to": dst,
            "counterparts": [{"label": "p", "number": party}],
        },
        headers=owner.auth,
    )
    assert resp.status == 201, await resp.text()
    return await resp.json()


async def ids(client: TestClient, owner: Customer, path: str) -> list[str]:
    resp = await client.get(path, headers=owner.auth)
    assert resp.status == 200, await resp.text()
    return [item["id"] for item in (await resp.json())["items"]]


async def test_calls_filter_by_number_status_time_and_recording(
    client: TestClient, owner: Customer, pool: asyncpg.Pool
) -> None:
    a = await call_with(client, owner, "+442079460958", "+48221234567", "+48601234567")
    b = await call_with(client, owner, "+48221234567", "+14155550123", "+48601234567")
    c = await consented_call(client, owner)
    await start_recording(client, owner, c["id"])
    await client.post(f"/v1/calls/{a['id']}/end", headers=owner.auth)
    async with pool.acquire() as conn:
        await conn.execute(
            "UPDATE calls SET created_at = created_at - interval '2 days' WHERE id = $1", a["id"]
        )
    yesterday = (datetime.now(UTC) - timedelta(days=1)).strftime("%Y-%m-%dT%H:%M:%SZ")

    assert await ids(client, owner, "/v1/calls?number=%2B442079460958") == [a["id"]]
    assert await ids(client, owner, "/v1/calls?number=%2B14155550123") == [b["id"]]
    assert set(await ids(client, owner, "/v1/calls?number=%2B48601234567")) == {
        a["id"],
        b["id"],
        c["id"],
    }
    assert await ids(client, owner, "/v1/calls?number=%2B4930123456") == []
    assert await ids(client, owner, "/v1/calls?status=ended") == [a["id"]]
    assert await ids(client, owner, "/v1/calls?has_recording=true") == [c["id"]]
    assert set(await ids(client, owner, "/v1/calls?has_recording=false")) == {a["id"], b["id"]}
    assert await ids(client, owner, f"/v1/calls?created_before={yesterday}") == [a["id"]]
    assert set(await ids(client, owner, f"/v1/calls?created_after={yesterday}")) == {
        b["id"],
        c["id"],
    }
    both = f"/v1/calls?status=active&number=%2B48601234567&created_after={yesterday}"
    assert set(await ids(client, owner, both)) == {b["id"], c["id"]}


async def test_filters_keep_to_the_account(client: TestClient, owner: Customer) -> None:
    other = await new_customer(client)
    await call_with(client, other, "+442079460958", "+48221234567", "+48601234567")

    assert await ids(client, owner, "/v1/calls?number=%2B442079460958") == []


async def test_recordings_filter_by_call_status_and_time(
    client: TestClient, owner: Customer
) -> None:
    first = await consented_call(client, owner)
    second = await consented_call(client, owner)
    r1 = await start_recording(client, owner, first["id"])
    r2 = await start_recording(client, owner, second["id"])
    await client.post(f"/v1/recordings/{r1['id']}/stop", headers=owner.auth)
    future = "2999-01-01T00:00:00Z"

    assert await ids(client, owner, f"/v1/recordings?call_id={second['id']}") == [r2["id"]]
    assert await ids(client, owner, "/v1/recordings?status=recording") == [r2["id"]]
    assert await ids(client, owner, f"/v1/recordings?started_after={future}") == []
    assert set(await ids(client, owner, f"/v1/recordings?started_before={future}")) == {
        r1["id"],
        r2["id"],
    }


@pytest.mark.parametrize(
    "query",
    [
        "status=open",
        "number=12345",
        "number=%2B1000000",
        "number=%2B" + "".join(chr(0x0660 + int(d)) for d in "48601234567"),  # Arabic-Indic
        "has_recording=yes",
        "created_after=yesterday",
        "created_before=2026-02-31T00:00:00Z",
        "number=%2B48601234567&number=%2B48221234567",
    ],
)
async def test_unknown_filter_values_are_422_naming_the_field(
    client: TestClient, owner: Customer, query: str
) -> None:
    resp = await client.get(f"/v1/calls?{query}", headers=owner.auth)

    assert resp.status == 422
    body = await resp.json()
    assert body["code"] == "validation-failed"
    assert body["errors"][0]["field"] == query.split("=")[0]
