"""Headers every answer carries, and the server's own edge (issue 10: "Headers").

Secrets shown once (session tokens, API keys, invitations, media tokens,
webhook secrets) must never sit in a cache; no answer may be sniffed into
another type; `Server` names no versions; even a request aiohttp's parser
refuses is answered in problem+json; and a client that trickles its headers
is cut off.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from aiohttp import ClientResponse
from aiohttp.test_utils import TestClient

from telephony.settings import Settings
from telephony.web.app import create_app
from tests.conftest import Customer, ServiceServer, new_call, signup_body
from tests.support.recordings import record


def assert_safe(resp: ClientResponse, cache: str = "no-store") -> None:
    assert resp.headers["Cache-Control"] == cache
    assert resp.headers["X-Content-Type-Options"] == "nosniff"
    assert resp.headers["Server"] == "telephony"  # no aiohttp/3.x, no Python/3.x


async def test_every_answer_that_shows_a_secret_is_no_store(
    client: TestClient, owner: Customer
) -> None:
    body = signup_body()
    answers: dict[str, ClientResponse] = {
        "signup": await client.post("/v1/signup", json=body),
        "session": await client.post(
            "/v1/sessions", json={"email": body["email"], "password": body["password"]}
        ),
        "api key": await client.post(
            "/v1/api-keys", json={"name": "crm", "scopes": ["calls"]}, headers=owner.auth
        ),
        "invitation": await client.post(
            "/v1/users", json={"email": "new@example.com", "name": "New"}, headers=owner.auth
        ),
        "media token": await client.post(
            "/v1/calls",
            json={
                "direction": "outbound",
                "from": "+48221234567",
                "to": "+48601234567",
                "counterparts": [{"label": "c", "number": "+48601234567"}],
            },
            headers=owner.auth,
        ),
        "webhook secret": await client.post("/v1/account/webhook-secret", headers=owner.auth),
    }

    for name, resp in answers.items():
        assert resp.status in (200, 201), (name, await resp.text())
        assert_safe(resp)


async def test_errors_and_operations_answers_are_safe_too(client: TestClient) -> None:
    for resp in (
        await client.get("/v1/nothing-here"),
        await client.post("/v1/signup", data=b"{", headers={"Content-Type": "application/json"}),
        await client.get("/healthz"),
        await client.get("/openapi.json"),
    ):
        assert_safe(resp)


async def test_a_replayed_answer_keeps_no_store(client: TestClient, owner: Customer) -> None:
    headers = {**owner.auth, "Idempotency-Key": "key-creation-1"}
    body = {"name": "crm", "scopes": ["calls"]}

    first = await client.post("/v1/api-keys", json=body, headers=headers)
    again = await client.post("/v1/api-keys", json=body, headers=headers)

    assert again.headers["Idempotent-Replayed"] == "true"
    assert (await again.json())["token"] == (await first.json())["token"]
    assert_safe(again)


async def test_audio_may_be_revalidated_by_the_browser_but_kept_by_no_shared_cache(
    client: TestClient, owner: Customer, pool: Any
) -> None:
    recording = await record(client, owner, pool, frames=5)

    resp = await client.get(f"/v1/recordings/{recording}/audio", headers=owner.auth)

    assert resp.status == 200
    assert_safe(resp, cache="private, no-cache")


async def test_the_media_socket_handshake_is_safe(client: TestClient, owner: Customer) -> None:
    call = await new_call(client, owner)

    ws = await client.ws_connect(f"/v1/media/twilio?token={call['media']['token']}")
    handshake = ws._response
    await ws.close()

    assert handshake.headers["Server"] == "telephony"
    assert handshake.headers["X-Content-Type-Options"] == "nosniff"


# -- the server's own edge: below the application ---------------------------------------


async def _raw(client: TestClient, data: bytes) -> bytes:
    reader, writer = await asyncio.open_connection(client.host, client.port)
    try:
        writer.write(data)
        await writer.drain()
        return await asyncio.wait_for(reader.read(), 5)  # to EOF: an error closes the connection
    finally:
        writer.close()


@pytest.mark.parametrize(
    "raw",
    [
        pytest.param(b"GARBAGE\r\n\r\n", id="no request line"),
        pytest.param(b"GET /healthz HTTP/1.1\r\nHost: x\r\nBad Header\r\n\r\n", id="no colon"),
        pytest.param(b"GET /" + b"a" * 9000 + b" HTTP/1.1\r\nHost: x\r\n\r\n", id="line too long"),
        pytest.param(
            b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: " + b"v" * 9000 + b"\r\n\r\n",
            id="header too long",
        ),
    ],
)
async def test_requests_the_parser_refuses_get_a_problem_document(
    client: TestClient, raw: bytes
) -> None:
    answer = await _raw(client, raw)

    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.split(b" ", 2)[1] == b"400", head
    assert b"Content-Type: application/problem+json" in head
    assert b"Server: telephony" in head
    problem = json.loads(body)
    assert (problem["status"], problem["code"]) == (400, "malformed-request")


async def test_a_client_trickling_its_headers_is_cut_off(settings: Settings, pool: Any) -> None:
    """Slowloris: one header byte at a time keeps no connection beyond the header timeout."""
    app = create_app(settings.replace(header_timeout_s=0.5), run_workers=False)
    async with TestClient(ServiceServer(app)) as client:
        reader, writer = await asyncio.open_connection(client.host, client.port)
        loop = asyncio.get_running_loop()
        started = loop.time()
        closed_after = None
        try:
            for byte in b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"z" * 100:
                writer.write(bytes([byte]))
                try:
                    await writer.drain()
                except ConnectionError:
                    break
                try:
                    if await asyncio.wait_for(reader.read(1), 0.1) == b"":
                        closed_after = loop.time() - started
                        break
                except TimeoutError:
                    continue
        finally:
            writer.close()

        healthy = await client.get("/healthz")  # and the server still serves

    assert closed_after is not None, "the trickling connection was never closed"
    assert 0.4 <= closed_after < 3.0
    assert healthy.status == 200


async def test_a_slow_but_whole_head_within_the_timeout_is_served(client: TestClient) -> None:
    reader, writer = await asyncio.open_connection(client.host, client.port)
    try:
        for part in (b"GET /healthz HTTP/1.1\r\n", b"Host: x\r\n", b"\r\n"):
            writer.write(part)
            await writer.drain()
            await asyncio.sleep(0.2)  # a slow client's pace, well inside the header timeout
        answer = await asyncio.wait_for(reader.read(65536), 5)
    finally:
        writer.close()

    assert answer.startswith(b"HTTP/1.1 200")


async def test_a_kept_alive_connection_waiting_for_its_next_request_is_not_cut_off(
    settings: Settings, pool: Any
) -> None:
    """The header timeout starts at a request's first byte, not at the connection's idle wait."""
    app = create_app(settings.replace(header_timeout_s=0.5), run_workers=False)
    async with TestClient(ServiceServer(app)) as client:
        reader, writer = await asyncio.open_connection(client.host, client.port)
        try:
            request = b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"
            writer.write(request)
            first = await asyncio.wait_for(reader.read(65536), 5)
            await asyncio.sleep(1.0)  # idle between requests: keep-alive's business
            writer.write(request)
            second = await asyncio.wait_for(reader.read(65536), 5)
        finally:
            writer.close()

    assert first.startswith(b"HTTP/1.1 200")
    assert second.startswith(b"HTTP/1.1 200")
