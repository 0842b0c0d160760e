"""Composition root: `create_app(settings)` wires middlewares, resources and routes."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import secrets
import time
from collections.abc import AsyncIterator, Coroutine
from datetime import UTC, datetime
from typing import Any

import aiohttp
from aiohttp import web
from prometheus_client import CollectorRegistry

from storage.blobs.filesystem import FilesystemBlobStore
from storage.db import create_pool
from storage.keys.passwords import PasswordHasher
from storage.securitylog import AccessEntry
from telephony.delivery import workers
from telephony.delivery.webhooks import delivery_worker
from telephony.domain.errors import ServiceError
from telephony.logs import request_id_var
from telephony.metrics import Metrics
from telephony.recorder.hub import MediaHub, default_node_id
from telephony.settings import Settings, master_keys
from telephony.usecases import retention
from telephony.web.api import (
    accounts,
    audit,
    calls,
    media_ws,
    ops,
    privacy,
    recordings,
    security,
    support,
    webhooks,
)
from telephony.web.appkeys import (
    ACCESS_QUEUE,
    BACKGROUND,
    BLOBS,
    HASHER,
    HUB,
    MASTER_KEYS,
    METRICS,
    POOL,
    REGISTRY,
    SETTINGS,
    WRITER_POOL,
)
from telephony.web.auth import principal_id
from telephony.web.idempotency import honour_idempotency_key
from telephony.web.openapi import build as build_openapi
from telephony.web.problems import from_http_exception, from_service_error, internal_error
from telephony.web.spec import Route

log = logging.getLogger(__name__)

ACCESS_QUEUE_BOUND = 10_000
_REQUEST_ID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")


def all_routes() -> list[Route]:
    """Every route the service answers; /openapi.json documents exactly this list."""
    return [
        *ops.ROUTES,
        *accounts.ROUTES,
        *calls.ROUTES,
        *recordings.ROUTES,
        *audit.ROUTES,
        *support.ROUTES,
        *privacy.ROUTES,
        *media_ws.ROUTES,
        *security.ROUTES,
        *webhooks.ROUTES,
    ]


def _route_template(request: web.Request) -> str:
    resource = request.match_info.route.resource
    return resource.canonical if resource is not None else "unmatched"


@web.middleware
async def observe(request: web.Request, handler: Any) -> web.StreamResponse:
    """Request id, problem+json for every error, metrics and the access log.

    The one place exceptions turn into responses, so no handler can leak a
    traceback or a secret into a body (API.md "Errors").
    """
    incoming = request.headers.get("X-Request-Id", "")
    request_id = incoming if _REQUEST_ID.match(incoming) else secrets.token_hex(8)
    token = request_id_var.set(request_id)
    started = time.perf_counter()
    try:
        try:
            response = await handler(request)
        except ServiceError as exc:
            response = from_service_error(exc)
        except web.HTTPException as exc:
            if exc.status < 400:
                raise
            response = from_http_exception(exc)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("unhandled error", extra={"route": _route_template(request)})
            response = internal_error()
        if not response.prepared:
            response.headers["X-Request-Id"] = request_id
        _account(request, response.status, time.perf_counter() - started, request_id)
        return response
    finally:
        request_id_var.reset(token)


def _account(request: web.Request, status: int, elapsed_s: float, request_id: str) -> None:
    app = request.app
    route = _route_template(request)
    metrics = app[METRICS]
    metrics.requests.labels(request.method, route, str(status)).inc()
    metrics.latency.labels(request.method, route).observe(elapsed_s)
    if not app[SETTINGS].access_log_to_db:
        return
    agent = request.headers.get("User-Agent")
    entry = AccessEntry(
        at=datetime.now(UTC),
        request_id=request_id,
        method=request.method[:16],
        route=route,  # the template, never the raw path or query: no ids, no tokens
        status=status,
        duration_ms=elapsed_s * 1000,
        principal_id=principal_id(request),
        source_address=request.remote,
        user_agent=agent[:512] if agent else None,
    )
    try:
        app[ACCESS_QUEUE].put_nowait(entry)
    except asyncio.QueueFull:
        metrics.access_log_dropped.inc()


def create_app(settings: Settings, *, run_workers: bool = True) -> web.Application:
    """The service. `settings.database_url` must be set (the CLI starts the embedded cluster)."""
    if settings.database_url is None:
        raise ValueError("create_app needs settings.database_url")
    app = web.Application(
        middlewares=[observe, honour_idempotency_key], client_max_size=settings.max_body_bytes
    )
    app[SETTINGS] = settings
    registry = CollectorRegistry()
    app[REGISTRY] = registry
    app[METRICS] = Metrics.create(registry)
    app[ACCESS_QUEUE] = asyncio.Queue(maxsize=ACCESS_QUEUE_BOUND)
    app[MASTER_KEYS] = master_keys(settings)
    app[BLOBS] = FilesystemBlobStore(settings.data_dir / "blobs")
    routes = all_routes()
    app[ops.OPENAPI] = build_openapi(routes)
    for route in routes:
        app.router.add_route(route.method, route.path, route.handler)
    app.cleanup_ctx.append(_threads)
    app.cleanup_ctx.append(_database)
    app.cleanup_ctx.append(_media)
    if run_workers:
        app.cleanup_ctx.append(_background)
    return app


async def _threads(app: web.Application) -> AsyncIterator[None]:
    """Argon2id and file calls each on threads of their own (see storage/passwords.py)."""
    app[HASHER] = PasswordHasher(app[SETTINGS].argon2)
    yield
    app[HASHER].close()
    app[BLOBS].close()


async def _database(app: web.Application) -> AsyncIterator[None]:
    settings = app[SETTINGS]
    assert settings.database_url is not None
    app[POOL] = await create_pool(settings.database_url)
    app[WRITER_POOL] = await create_pool(settings.database_url, max_size=4, stateless=True)
    yield
    await workers.flush_access_log(app[POOL], app[ACCESS_QUEUE])
    await app[WRITER_POOL].close()
    await app[POOL].close()


async def _media(app: web.Application) -> AsyncIterator[None]:
    """The media hub: recover what a dead process left, then follow control messages."""
    settings = app[SETTINGS]
    hub = MediaHub(
        app[POOL],
        app[BLOBS],
        app[MASTER_KEYS],
        settings.node_id or default_node_id(settings.port),
        writer_pool=app[WRITER_POOL],
    )
    app[HUB] = hub
    await hub.recover()
    listener = asyncio.create_task(hub.run_listener(), name="media-control-listener")
    yield
    await hub.close()
    listener.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await listener


async def _background(app: web.Application) -> AsyncIterator[None]:
    pool, settings = app[POOL], app[SETTINGS]
    http = aiohttp.ClientSession()
    jobs: list[Coroutine[Any, Any, None]] = [
        workers.access_log_writer(pool, app[ACCESS_QUEUE]),
        workers.notification_worker(pool, http, settings, app[METRICS]),
        workers.purge_worker(pool, settings),
        retention.retention_worker(pool, app[BLOBS], settings.retention_interval_s),
        delivery_worker(pool, settings, app[MASTER_KEYS]),
    ]
    app[BACKGROUND] = [asyncio.create_task(job) for job in jobs]
    yield
    for task in app[BACKGROUND]:
        task.cancel()
    for task in app[BACKGROUND]:
        with contextlib.suppress(asyncio.CancelledError):
            await task
    await http.close()
