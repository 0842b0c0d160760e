"""Operations: health, readiness, metrics (S7), request ids, the OpenAPI document, logs."""

from __future__ import annotations

import asyncio
import json
import logging
import re
import threading
from pathlib import Path

import asyncpg
from aiohttp.test_utils import TestClient

from storage.blobs import filesystem as blobs
from telephony.logs import JsonFormatter
from telephony.settings import Settings
from telephony.web import portal
from telephony.web.app import all_routes, create_app
from telephony.web.appkeys import BLOBS, POOL
from tests.conftest import Customer, ServiceServer

ROOT = Path(__file__).resolve().parents[2]


async def test_healthz_and_readyz(client: TestClient) -> None:
    health = await client.get("/healthz")
    ready = await client.get("/readyz")

    assert (health.status, ready.status) == (200, 200)


async def test_readyz_is_503_when_the_database_is_unreachable(settings: Settings) -> None:
    app = create_app(settings, run_workers=False)
    async with TestClient(ServiceServer(app)) as client:
        client.app[POOL].terminate()  # the database is gone for this process

        resp = await client.get("/readyz")

        assert resp.status == 503
        assert resp.content_type == "application/problem+json"
        assert (await resp.json())["code"] == "unavailable"


async def test_metrics_count_requests_by_route_template(
    client: TestClient, owner: Customer
) -> None:
    for _ in range(3):
        await client.patch("/v1/users/usr_nope", json={"name": "x"}, headers=owner.auth)

    text = await (await client.get("/metrics")).text()

    assert re.search(
        r'http_requests_total\{method="PATCH",route="/v1/users/\{id\}",status="404"\} 3\.0', text
    )
    assert "usr_nope" not in text
    assert 'http_request_duration_seconds_bucket{le="0.005",method="PATCH"' in text or (
        "http_request_duration_seconds_count" in text
    )
    assert "db_pool_connections" in text


async def test_request_id_is_echoed_when_sane_and_made_otherwise(client: TestClient) -> None:
    given = await client.get("/healthz", headers={"X-Request-Id": "abc-123"})
    bad = await client.get("/healthz", headers={"X-Request-Id": "no spaces\tor tabs"})
    none = await client.get("/healthz")

    assert given.headers["X-Request-Id"] == "abc-123"
    assert re.fullmatch(r"[0-9a-f]{16}", bad.headers["X-Request-Id"])
    assert none.headers["X-Request-Id"] != bad.headers["X-Request-Id"]


async def test_openapi_lists_every_served_route(client: TestClient) -> None:
    """A route added to the router but not the document fails here. The portal's pages are
    HTML for people, not the API: they are the ones portal.ROUTES declares, and no other."""
    doc = await (await client.get("/openapi.json")).json()
    pages = {
        (m.lower(), re.sub(r"\{(\w+):[^}]+\}", r"{\1}", path)) for m, path, _ in portal.ROUTES
    } | {("get", "/static/{name}")}

    served = {
        (route.method.lower(), route.resource.canonical)
        for route in client.app.router.routes()
        if route.method not in ("HEAD", "OPTIONS") and route.resource is not None
    } - pages
    documented = {(m, p) for p, ops in doc["paths"].items() for m in ops}
    assert doc["openapi"].startswith("3.1")
    assert served == documented
    assert len(served) == len(all_routes())


async def test_openapi_bodies_reference_existing_schemas(client: TestClient) -> None:
    doc = await (await client.get("/openapi.json")).json()
    schemas = doc["components"]["schemas"]

    refs = re.findall(r'"\$ref": "#/components/schemas/([^"]+)"', json.dumps(doc))

    assert refs
    assert all(ref in schemas for ref in refs)
    assert "SignupBody" in schemas
    assert set(schemas["SignupBody"]["required"]) >= {"email", "password", "accept_terms"}


async def test_logs_are_json_lines_with_the_request_id(
    settings: Settings, pool: asyncpg.Pool
) -> None:
    lines: list[str] = []

    class Capture(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            lines.append(self.format(record))

    handler = Capture()
    handler.setFormatter(JsonFormatter())
    logger = logging.getLogger("telephony")
    old_level = logger.level
    logger.setLevel(logging.INFO)
    logger.addHandler(handler)
    try:
        app = create_app(settings, run_workers=False)
        async with TestClient(ServiceServer(app)) as client:
            # An unknown dialect is refused without a log line; a media socket closing logs one.
            ws = await client.ws_connect(
                "/v1/media/twilio?token=mt_unknown", headers={"X-Request-Id": "req-42"}
            )
            await ws.receive()
            await ws.close()
    finally:
        logger.removeHandler(handler)
        logger.setLevel(old_level)

    parsed = [json.loads(line) for line in lines]
    assert any(p.get("request_id") == "req-42" for p in parsed)
    assert all({"ts", "level", "logger", "msg"} <= set(p) for p in parsed)


def test_dockerfile_runs_as_a_non_root_user() -> None:
    text = (ROOT / "Dockerfile").read_text()

    assert re.search(r"^FROM python:3\.1[1-9]-slim", text, re.M)
    assert re.search(r"^USER telephony$", text, re.M)
    assert 'CMD ["telephony", "serve"]' in text
    compose = (ROOT / "docker-compose.yml").read_text()
    assert "TELEPHONY_DATABASE_URL" in compose
    assert "127.0.0.1:8080:8080" in compose


async def test_readyz_is_503_while_the_blob_store_threads_do_not_answer(
    client: TestClient,
) -> None:
    """Live recordings stop when the blob threads hang: a balancer must see it (issue 10)."""
    store = client.app[BLOBS]
    release = threading.Event()
    stuck = [asyncio.ensure_future(store.run(release.wait)) for _ in range(blobs.FILE_THREADS)]
    try:
        hung = await client.get("/readyz")
    finally:
        release.set()
        await asyncio.gather(*stuck)
    healthy = await client.get("/readyz")

    assert hung.status == 503
    assert (await hung.json())["code"] == "unavailable"
    assert "blob store" in (await hung.json())["detail"]
    assert healthy.status == 200
