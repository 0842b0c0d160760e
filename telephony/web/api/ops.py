"""Operations: liveness, readiness, metrics (S7) and the API description."""

from __future__ import annotations

import asyncio

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from telephony.domain.errors import Unavailable
from telephony.web.appkeys import BLOBS, HUB, METRICS, OPENAPI, POOL, REGISTRY, SPOOL
from telephony.web.routes import ANYONE, Route

READY_TIMEOUT_S = 2.0


async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    """Ready when the database answers and the threads of the blob store and spool do.

    The file threads are probed, not only the database: when they hang, live
    recordings stop being written while every HTTP route still answers, and
    a load balancer must stop sending calls here.
    """
    try:
        async with asyncio.timeout(READY_TIMEOUT_S):
            async with request.app[POOL].acquire() as conn:
                await conn.fetchval("SELECT 1")
    except Exception as exc:  # any failure means "not ready"
        raise Unavailable(f"database not reachable ({type(exc).__name__})") from None
    if not request.app[HUB].recovered.is_set():
        raise Unavailable("the spool of a previous run is still moving to the blob store")
    for name, store in (("blob store", request.app[BLOBS]), ("spool", request.app[SPOOL])):
        try:
            async with asyncio.timeout(READY_TIMEOUT_S):
                await store.probe()
        except Exception as exc:
            raise Unavailable(f"{name} not answering ({type(exc).__name__})") from None
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
        "GET", "/healthz", healthz, "The process is alive", ANYONE, None, {200: "ok"}, "operations"
    ),
    Route(
        "GET",
        "/readyz",
        readyz,
        "The database, the blob store and the spool answer",
        ANYONE,
        None,
        {200: "ready", 503: "unavailable"},
        "operations",
    ),
    Route(
        "GET",
        "/metrics",
        metrics,
        "Prometheus metrics",
        ANYONE,
        None,
        {200: "Prometheus text"},
        "operations",
        produces="text/plain",
    ),
    Route(
        "GET",
        "/openapi.json",
        openapi,
        "This API description",
        ANYONE,
        None,
        {200: "OpenAPI 3.1"},
        "operations",
    ),
]
