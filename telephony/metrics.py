"""Prometheus metrics, one registry per app (no process-global state)."""

from __future__ import annotations

from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram


@dataclass(frozen=True)
class Metrics:
    requests: Counter
    latency: Histogram
    access_log_dropped: Counter
    outbox_pending: Gauge
    db_pool_size: Gauge
    db_pool_idle: Gauge
    media_frames: Counter
    media_lag: Histogram
    free_bytes: Gauge
    database_bytes: Gauge
    database_connections: Gauge
    spool_parts: Gauge
    spool_oldest_age: Gauge

    @classmethod
    def create(cls, registry: CollectorRegistry) -> Metrics:
        return cls(
            requests=Counter(
                "http_requests_total",
                "HTTP requests by route template, method and status",
                ["method", "route", "status"],
                registry=registry,
            ),
            latency=Histogram(
                "http_request_duration_seconds",
                "HTTP request latency by route template and method",
                ["method", "route"],
                registry=registry,
            ),
            access_log_dropped=Counter(
                "access_log_dropped_total",
                "Access-log entries dropped because the writer fell behind",
                registry=registry,
            ),
            outbox_pending=Gauge(
                "staff_notifications_pending",
                "Staff notifications not yet delivered (S4)",
                registry=registry,
            ),
            db_pool_size=Gauge(
                "db_pool_connections", "Open database connections (S7)", registry=registry
            ),
            db_pool_idle=Gauge(
                "db_pool_idle_connections", "Idle database connections (S7)", registry=registry
            ),
            media_frames=Counter(
                "media_frames_total", "Audio frames received on media sockets", registry=registry
            ),
            media_lag=Histogram(
                "media_ingest_lag_seconds",
                "Arrival of an audio frame after its place in real time (stream start + timestamp)",
                buckets=(0.005, 0.01, 0.02, 0.05, 0.1, 0.15, 0.2, 0.3, 0.5, 1.0, 2.0, 5.0),
                registry=registry,
            ),
            free_bytes=Gauge(
                "storage_free_bytes",
                "Free bytes where each store keeps its data (S7); an object store reports none",
                ["store"],
                registry=registry,
            ),
            database_bytes=Gauge(
                "database_size_bytes", "Size of the service's database (S7)", registry=registry
            ),
            database_connections=Gauge(
                "database_connections",
                "Connections to the service's database, from every node (S7)",
                registry=registry,
            ),
            spool_parts=Gauge(
                "spool_parts",
                "Parts in this node's spool, live or not yet shipped",
                registry=registry,
            ),
            spool_oldest_age=Gauge(
                "spool_oldest_part_age_seconds",
                "Seconds since the least recently written part in the spool was written: grows"
                " while the blob store does not take parts (S7)",
                registry=registry,
            ),
        )
