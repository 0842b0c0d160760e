"""Operations: liveness, readiness, metrics (S7) and the API description."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Iterator, Mapping

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from storage import db
from storage.blobs.regions import RegionalBlobStore
from storage.blobs.s3 import UNLIMITED, RequestStats
from telephony.domain.errors import StorageLow, Unavailable
from telephony.recorder.sip_calls import SipCalls
from telephony.web.appkeys import (
    BACKUP_STATUS,
    BLOBS,
    HUB,
    METRICS,
    OPENAPI,
    POOL,
    REGISTRY,
    SIP,
    SPOOL,
)
from telephony.web.capacity import free_space, require_room
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
    try:
        await require_room(request.app)  # probes both stores; before either is full (S7)
    except StorageLow as exc:
        raise Unavailable(str(exc)) from None
    return web.json_response({"status": "ready"})


async def metrics(request: web.Request) -> web.Response:
    pool = request.app[POOL]
    m = request.app[METRICS]
    m.db_pool_size.set(pool.get_size())
    m.db_pool_idle.set(pool.get_idle_size())
    with contextlib.suppress(Unavailable):  # a store that does not answer keeps its last value
        for name, free in (await free_space(request.app)).items():
            if free < UNLIMITED:
                m.free_bytes.labels(name.replace(" ", "_")).set(free)
    with contextlib.suppress(Exception):  # a database that does not answer: /readyz says so
        async with asyncio.timeout(READY_TIMEOUT_S), pool.acquire() as conn:
            size, connections = await db.usage(conn)
        m.database_bytes.set(size)
        m.database_connections.set(connections)
    parts = await request.app[SPOOL].parts()
    m.spool_parts.set(len(parts))
    oldest = min((p.modified_at for p in parts), default=None)
    m.spool_oldest_age.set(max(time.time() - oldest, 0.0) if oldest is not None else 0.0)
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


class SipCollector(Collector):
    """SIP and RTP ingest, read at each scrape (S7; SIP.md 9: each drop reason a counter):
    what the listener dropped unanswered or refused, the RTP datagrams dropped, the live
    dialogs and the free RTP ports."""

    def __init__(self, app: web.Application) -> None:
        self.app = app

    def collect(self) -> Iterator[Metric]:
        listener = self.app.get(SIP)
        if listener is None:
            return
        sip = CounterMetricFamily(
            "sip_dropped", "SIP messages dropped or refused unread, by reason", labels=["reason"]
        )
        for reason, count in sorted(listener.drops.items()):
            sip.add_metric([reason], count)
        yield sip
        calls = listener.sessions
        if not isinstance(calls, SipCalls):
            return
        rtp = CounterMetricFamily(
            "rtp_dropped", "RTP datagrams dropped, by reason", labels=["reason"]
        )
        for reason, count in sorted(calls.rtp_drops().items()):
            rtp.add_metric([reason], count)
        yield rtp
        yield GaugeMetricFamily(
            "sip_dialogs", "SIP calls streaming to this node", len(calls.dialogs)
        )
        yield GaugeMetricFamily(
            "rtp_ports_free", "RTP port pairs free on this node", calls.ports.free
        )


class ObjectStoreCollector(Collector):
    """object_store_* counters from the S3 store's own tallies, read at each scrape (S7);
    with data regions, one series per region's object store (label `region`)."""

    def __init__(self, app: web.Application) -> None:
        self.app = app

    def collect(self) -> Iterator[Metric]:
        store = self.app.get(BLOBS)
        if store is None:
            return
        tallies: list[tuple[list[str], RequestStats]] = []
        if isinstance(store, RegionalBlobStore):
            for name, region in sorted(store.regions.items()):
                stats: RequestStats | None = getattr(region.store, "stats", None)
                if stats is not None:
                    tallies.append(([name], stats))
            labels = ["op", "region"]
        else:
            stats = getattr(store, "stats", None)
            if stats is not None:
                tallies.append(([], stats))
            labels = ["op"]
        if not tallies:
            return
        families: tuple[tuple[str, str, Callable[[RequestStats], Mapping[str, float]]], ...] = (
            (
                "object_store_requests",
                "Requests to the object store by operation",
                lambda s: s.requests,
            ),
            ("object_store_errors", "Failed requests to the object store", lambda s: s.errors),
            (
                "object_store_request_seconds",
                "Seconds spent in requests to the object store",
                lambda s: s.seconds,
            ),
        )
        for name, documentation, tally in families:
            family = CounterMetricFamily(name, documentation, labels=labels)
            for region_label, stats in tallies:
                for op, value in sorted(tally(stats).items()):
                    family.add_metric([op, *region_label], value)
            yield family


class BackupCollector(Collector):
    """backup_last_success_age_seconds (S7, S8): the newest good backup's age, as the daily
    job last saw the backup location; +Inf while it has seen none. Absent where the job
    does not run (an external database's backups are its operator's)."""

    def __init__(self, app: web.Application) -> None:
        self.app = app

    def collect(self) -> Iterator[Metric]:
        status = self.app.get(BACKUP_STATUS)
        if status is None or not status.watching:
            return
        last = status.last_success_at
        age = time.time() - last.timestamp() if last is not None else float("inf")
        yield GaugeMetricFamily(
            "backup_last_success_age_seconds",
            "Seconds since the newest good backup (database and blob copies) ended",
            value=max(age, 0.0),
        )
