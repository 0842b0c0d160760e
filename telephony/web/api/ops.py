"""Operations: liveness, readiness, metrics (S7) and the API description."""

from __future__ import annotations

import asyncio

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from telephony.domain.errors import Unavailable
from telephony.web.appkeys import BLOBS, METRICS, POOL, REGISTRY
from telephony.web.spec import Route

OPENAPI = web.AppKey("openapi", dict)


async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


READY_TIMEOUT_S = 2.0


async def readyz(request: web.Request) -> web.Response:
    """Ready when the database answers and the blob store's threads do.

    The blob store's threads are probed, not only the database: when they
    hang, live recordings stop being written while every HTTP route still
    answers, and a load balancer must stop sending calls here.
    """
    try:
        async with asyncio.timeout(READY_TIMEOUT_S):
            async with request.app[POOL].acquire() as conn:
                await conn.fetchval("SELECT 1")
    except Exception as exc:  # any failure means "not ready"
        raise Unavailable(f"database not reachable ({type(exc).__name__})") from None
    try:
        async with asyncio.timeout(READY_TIMEOUT_S):
            await request.app[BLOBS].probe()
    except Exception as exc:
        raise Unavailable(f"blob store not answering ({type(exc).__name__})") from None
    return web.json_response({"status": "ready"})


async def metrics(request: web.Request) -> web.Response:
    pool = request.app[POOL]
    m = request.app[METRICS]
    m.db_pool_size.set(pool.get_size())
    m.db_pool_idle.set(pool.get_idle_size())
    body = generate_latest(request.app[REGISTRY])
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


async def openapi(request: web.Request) -> web.Response:
    return web.json_response(request.app[OPENAPI])


ROUTES = [
    Route(
        "GET",
        "/healthz",
        healthz,
        "The process is alive",
        "anyone",
        None,
        {200: "ok"},
        "operations",
    ),
    Route(
        "GET",
        "/readyz",
        readyz,
        "The database is reachable",
        "anyone",
        None,
        {200: "ready", 503: "unavailable"},
        "operations",
    ),
    Route(
        "GET",
        "/metrics",
        metrics,
        "Prometheus metrics",
        "anyone",
        None,
        {200: "text"},
        "operations",
    ),
    Route(
        "GET",
        "/openapi.json",
        openapi,
        "This API description",
        "anyone",
        None,
        {200: "OpenAPI 3.1"},
        "operations",
    ),
]
