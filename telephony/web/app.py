"""Composition root: `create_app(settings)` wires middlewares, resources, workers and routes.

Every resource is created and closed in a cleanup context, in this order:
threads (the password hasher, the blob store's and the spool's file
threads), the database pools, the media hub (which ships what the spool
holds and recovers what a dead process left, before the node serves), then
the background workers.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Coroutine
from typing import Any

import aiohttp
from aiohttp import web
from prometheus_client import CollectorRegistry

from storage.backups import DeletionJournal
from storage.blobs.regions import bind_database
from storage.blobs.spool import Spool
from storage.blobs.stores import open_blob_store
from storage.db import create_pool
from storage.keys.passwords import PasswordHasher
from storage.keys.providers import ServiceKeys
from telephony.delivery.mail import mail_worker
from telephony.delivery.staff import notification_worker
from telephony.delivery.webhooks import delivery_worker
from telephony.i18n import Catalogue
from telephony.media.rtp.ports import PortPool
from telephony.media.sip.uas import SipListener
from telephony.metrics import Metrics
from telephony.recorder.hub import MediaHub, default_node_id, node_folder
from telephony.recorder.sip_calls import SipCalls
from telephony.settings import Settings, master_keys
from telephony.usecases import backups, compaction, media_lifecycle, retention
from telephony.web import access_log, capacity, portal
from telephony.web.api import (
    accounts,
    audit,
    calls,
    encryption_keys,
    media_ws,
    ops,
    privacy,
    receipts,
    recordings,
    security,
    sip_trunks,
    support,
    webhooks,
)
from telephony.web.appkeys import (
    ACCESS_QUEUE,
    BACKGROUND,
    BACKUP_STATUS,
    BACKUPS,
    BLOBS,
    CATALOGUE,
    FREE_SPACE,
    HASHER,
    HUB,
    JOURNAL,
    KEYS,
    METRICS,
    OPENAPI,
    POOL,
    REGISTRY,
    ROUTE_INDEX,
    SETTINGS,
    SIP,
    SPOOL,
    WRITER_POOL,
)
from telephony.web.idempotency import honour_idempotency_key
from telephony.web.middleware import observe, security_headers
from telephony.web.openapi import build as build_openapi
from telephony.web.routes import Route

log = logging.getLogger(__name__)

ACCESS_QUEUE_BOUND = 10_000
START_RECOVERY_S = 5.0  # start-up waits this long for the spool to ship, then serves unready


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
        *sip_trunks.ROUTES,
        *encryption_keys.ROUTES,
        *receipts.ROUTES,
    ]


def node_id_of(settings: Settings) -> str:
    return settings.node_id or default_node_id(settings.port)


def create_app(settings: Settings, *, run_workers: bool = True) -> web.Application:
    """The service. `settings.database_url` must be set (the CLI starts the embedded cluster)."""
    if settings.database_url is None:
        raise ValueError("create_app needs settings.database_url")
    app = web.Application(
        middlewares=[observe, honour_idempotency_key],
        client_max_size=settings.max_body_bytes,
        handler_args={"header_timeout_s": settings.header_timeout_s},
    )
    app[SETTINGS] = settings
    registry = CollectorRegistry()
    app[REGISTRY] = registry
    app[METRICS] = Metrics.create(registry)
    registry.register(ops.ObjectStoreCollector(app))
    registry.register(ops.BackupCollector(app))
    registry.register(ops.SipCollector(app))
    app[ACCESS_QUEUE] = asyncio.Queue(maxsize=ACCESS_QUEUE_BOUND)
    app[KEYS] = ServiceKeys(master_keys(settings))
    app[FREE_SPACE] = capacity.shared_free_space(app)
    routes = all_routes()
    app[OPENAPI] = build_openapi(routes, choices={"data-regions": settings.region_names()})
    app[ROUTE_INDEX] = {route.handler: route for route in routes}
    for route in routes:
        app.router.add_route(route.method, route.path, route.handler)
    portal.setup(app)
    media_ws.setup(app)
    app.on_response_prepare.append(security_headers)
    app.cleanup_ctx.append(_threads)
    app.cleanup_ctx.append(_backups)
    app.cleanup_ctx.append(_database)
    app.cleanup_ctx.append(_media)
    if settings.sip_listen is not None:
        app.cleanup_ctx.append(_sip)
    if run_workers:
        app.cleanup_ctx.append(_background)
    return app


async def _threads(app: web.Application) -> AsyncIterator[None]:
    """Argon2id, blob files and spool files each on threads of their own (and the catalogue,
    read from disk off the loop)."""
    settings = app[SETTINGS]
    app[CATALOGUE] = await asyncio.to_thread(Catalogue.load)  # reads and compiles the .po
    app[HASHER] = PasswordHasher(settings.argon2)
    app[BLOBS] = await open_blob_store(
        settings.blob_url,
        settings.data_dir / "blobs",
        regions=settings.region_blob_urls(),
        default_region=settings.data_region,
    )
    if any(r.database_url for r in settings.regions):
        log.warning(
            "TELEPHONY_REGIONS names databases; every region's rows stay in the one database",
            extra={"regions": [r.name for r in settings.regions if r.database_url]},
        )
    app[SPOOL] = Spool(settings.data_dir / "spool" / node_folder(node_id_of(settings)))
    yield
    app[HASHER].close()
    await app[BLOBS].close()
    app[SPOOL].close()


async def _backups(app: web.Application) -> AsyncIterator[None]:
    """The backup location (S8), and the deletion journal beside the backups."""
    app[BACKUPS] = await backups.open_location(app[SETTINGS])
    app[JOURNAL] = DeletionJournal(app[BACKUPS].store)
    app[BACKUP_STATUS] = backups.BackupStatus()
    yield
    await app[BACKUPS].close()


async def _database(app: web.Application) -> AsyncIterator[None]:
    settings = app[SETTINGS]
    assert settings.database_url is not None
    app[POOL] = await create_pool(settings.database_url)
    app[WRITER_POOL] = await create_pool(settings.database_url, max_size=4)
    bind_database(app[BLOBS], app[POOL])  # each recording's region (data residency)
    yield
    await access_log.flush_access_log(app[POOL], app[ACCESS_QUEUE])
    await app[WRITER_POOL].close()
    await app[POOL].close()


async def _media(app: web.Application) -> AsyncIterator[None]:
    """The media hub: ship the spool, recover what a dead process left, follow control."""
    settings = app[SETTINGS]
    hub = MediaHub(
        app[POOL],
        app[SPOOL],
        app[BLOBS],
        app[KEYS],
        node_id_of(settings),
        writer_pool=app[WRITER_POOL],
        part_seconds=settings.spool_part_s,
    )
    app[HUB] = hub
    # What the spool holds moves to the store before /readyz says ready; a store that is
    # down does not stop the process from starting, only from saying it is ready.
    recovery = asyncio.create_task(hub.recover_until_done(), name="media-recovery")
    with contextlib.suppress(TimeoutError):
        # Usually done at once; a store that does not answer is retried in the background.
        async with asyncio.timeout(START_RECOVERY_S):  # not wait_for: see Outbox.run
            await asyncio.shield(recovery)
    listener = asyncio.create_task(hub.run_listener(), name="media-control-listener")
    yield
    recovery.cancel()
    await hub.close()
    listener.cancel()
    for task in (recovery, listener):
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def _sip(app: web.Application) -> AsyncIterator[None]:
    """The SIP listener (UDP and TCP) and its calls' RTP ports: ingest like a WebSocket's."""
    settings = app[SETTINGS]
    assert settings.sip_listen is not None and settings.sip_address is not None
    host, port = settings.sip_listen
    ports = PortPool(host, *settings.rtp_ports)
    listener = SipListener(host, port)
    await listener.start()  # a taken port fails the start, as the HTTP port's does
    calls = SipCalls(
        app[HUB],
        ports,
        advertise=settings.sip_address,
        sip_port=listener.port,
        metrics=app[METRICS],
        media_token_ttl_s=settings.media_token_ttl_s,
    )
    listener.sessions = calls
    calls.start()
    app[SIP] = listener
    log.info(
        "SIP listening",
        extra={"address": f"{host}:{listener.port}", "rtp_ports": ports.size},
    )
    yield
    await calls.close()  # our BYEs leave through the listener's sockets
    ports.close()
    await listener.close()


def _blob_urls(settings: Settings) -> list[str]:
    return [u for u in (settings.blob_url, *(r.blob_url for r in settings.regions)) if u]


async def _background(app: web.Application) -> AsyncIterator[None]:
    pool, settings = app[POOL], app[SETTINGS]
    http = aiohttp.ClientSession()
    jobs: list[Coroutine[Any, Any, None]] = [
        access_log.access_log_writer(pool, app[ACCESS_QUEUE]),
        notification_worker(pool, http, settings, app[METRICS]),
        retention.purge_worker(pool, settings),
        retention.retention_worker(
            pool, app[BLOBS], settings.retention_interval_s, journal=app[JOURNAL]
        ),
        backups.backup_worker(pool, app[BLOBS], app[BACKUPS], settings, app[BACKUP_STATUS]),
        media_lifecycle.lost_node_worker(pool, app[HUB].stored_end),
        delivery_worker(pool, settings, app[KEYS]),
        mail_worker(pool, settings, app[KEYS], app[CATALOGUE]),
    ]
    if settings.compaction_interval_s and any(u.startswith("s3:") for u in _blob_urls(settings)):
        # Object stores only: there an hour of parts is hundreds of requests to read.
        jobs.append(compaction.compaction_worker(pool, app[BLOBS], settings.compaction_interval_s))
    app[BACKGROUND] = [asyncio.create_task(job) for job in jobs]
    yield
    for task in app[BACKGROUND]:
        task.cancel()
    for task in app[BACKGROUND]:
        with contextlib.suppress(asyncio.CancelledError):
            await task
    await http.close()
