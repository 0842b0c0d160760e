"""Idempotency-Key on POSTs that create something (API.md conventions)."""

from __future__ import annotations

import asyncio

import asyncpg
from aiohttp.test_utils import TestClient

from tests.conftest import Customer, new_call, new_customer, signup_body

CALL = {
    "direction": "outbound",
    "from": "+48221234567",
    "to": "+48601234567",
    "counterparts": [{"label": "c", "number": "+48601234567"}],
}


async def test_a_retried_create_returns_the_first_answer(
    client: TestClient, owner: Customer, pool: asyncpg.Pool
) -> None:
    headers = {**owner.auth, "Idempotency-Key": "call-42"}

    first = await client.post("/v1/calls", json=CALL, headers=headers)
    again = await client.post("/v1/calls", json=CALL, headers=headers)

    assert first.status == again.status == 201
    assert await first.json() == await again.json()
    assert again.headers["Idempotent-Replayed"] == "true"
    async with pool.acquire() as conn:
        assert await conn.fetchval("SELECT count(*) FROM calls") == 1


async def test_concurrent_retries_create_once(
    client: TestClient, owner: Customer, pool: asyncpg.Pool
) -> None:
    headers = {**owner.auth, "Idempotency-Key": "burst"}

    responses = await asyncio.gather(
        *(client.post("/v1/calls", json=CALL, headers=headers) for _ in range(5))
    )

    assert sorted(r.status for r in responses).count(201) >= 1
    assert all(r.status in (201, 409) for r in responses)
    async with pool.acquire() as conn:
        assert await conn.fetchval("SELECT count(*) FROM calls") == 1


async def test_the_same_key_for_another_body_is_refused(
    client: TestClient, owner: Customer
) -> None:
    headers = {**owner.auth, "Idempotency-Key": "k1"}
    await client.post("/v1/calls", json=CALL, headers=headers)

    other = await client.post("/v1/calls", json={**CALL, "direction": "inbound"}, headers=headers)

    assert other.status == 422
    assert (await other.json())["code"] == "idempotency-key-reused"


async def test_keys_are_scoped_to_the_caller(client: TestClient, owner: Customer) -> None:
    other = await new_customer(client)
    await client.post("/v1/calls", json=CALL, headers={**owner.auth, "Idempotency-Key": "same"})

    resp = await client.post(
        "/v1/calls", json=CALL, headers={**other.auth, "Idempotency-Key": "same"}
    )

    assert resp.status == 201
    assert "Idempotent-Replayed" not in resp.headers


async def test_a_refusal_is_replayed_too(client: TestClient, owner: Customer) -> None:
    call = await new_call(client, owner)
    headers = {**owner.auth, "Idempotency-Key": "rec-1"}

    first = await client.post(f"/v1/calls/{call['id']}/recordings", json={}, headers=headers)
    again = await client.post(f"/v1/calls/{call['id']}/recordings", json={}, headers=headers)

    assert first.status == again.status == 409
    assert again.content_type == "application/problem+json"
    assert (await again.json())["code"] == "consent-required"


async def test_anonymous_signup_retry_is_replayed(client: TestClient, pool: asyncpg.Pool) -> None:
    body = signup_body()
    headers = {"Idempotency-Key": "signup-1"}

    first = await client.post("/v1/signup", json=body, headers=headers)
    again = await client.post("/v1/signup", json=body, headers=headers)

    assert first.status == again.status == 201
    async with pool.acquire() as conn:
        assert await conn.fetchval("SELECT count(*) FROM accounts") == 1


async def test_a_malformed_key_is_refused(client: TestClient, owner: Customer) -> None:
    resp = await client.post(
        "/v1/calls", json=CALL, headers={**owner.auth, "Idempotency-Key": "x" * 256}
    )

    assert resp.status == 422


async def test_a_stored_answer_carrying_a_token_is_sealed_at_rest(
    client: TestClient, owner: Customer, pool: asyncpg.Pool
) -> None:
    """A secret shown once (an API key's token) must not sit in the database in the clear."""
    headers = {**owner.auth, "Idempotency-Key": "key-create-1"}
    body = {"name": "ci", "scopes": ["calls"]}

    first = await client.post("/v1/api-keys", json=body, headers=headers)
    replay = await client.post("/v1/api-keys", json=body, headers=headers)

    token = (await first.json())["token"]
    assert replay.headers["Idempotent-Replayed"] == "true"
    assert (await replay.json())["token"] == token
    async with pool.acquire() as conn:
        stored = await conn.fetchval("SELECT body FROM idempotency_keys WHERE key = 'key-create-1'")
    assert token.encode() not in stored
    assert b'"name"' not in stored  # the whole answer is sealed, not just the token
