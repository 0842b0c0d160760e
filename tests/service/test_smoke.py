from __future__ import annotations

from tests.conftest import Customer


async def test_healthz(client) -> None:
    resp = await client.get("/healthz")
    assert resp.status == 200
    assert (await resp.json()) == {"status": "ok"}


async def test_me(client, owner: Customer) -> None:
    resp = await client.get("/v1/me", headers=owner.auth)
    assert resp.status == 200, await resp.text()
    body = await resp.json()
    assert body["role"] == "owner"
    assert body["account_id"] == owner.account_id
