"""Background work of a server process: access-log writing, staff notifications, log purge.

Each worker is a coroutine owned by the app's cleanup context, which cancels
and awaits it at shutdown. None of them may take the request path down: a
failing iteration is logged and retried later.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from datetime import UTC, datetime, timedelta

import aiohttp
import asyncpg

from storage import outbox, securitylog
from storage.securitylog import AccessEntry, PurgeResult
from telephony.metrics import Metrics
from telephony.settings import Settings

log = logging.getLogger(__name__)

ACCESS_BATCH = 500
ACCESS_FLUSH_S = 1.0


async def access_log_writer(pool: asyncpg.Pool, queue: asyncio.Queue[AccessEntry]) -> None:
    """Drain the access-log queue into PostgreSQL in batches (S3), off the request path."""
    while True:
        batch = [await queue.get()]
        loop = asyncio.get_running_loop()
        deadline = loop.time() + ACCESS_FLUSH_S
        while len(batch) < ACCESS_BATCH:
            timeout = deadline - loop.time()
            if timeout <= 0:
                break
            try:
                batch.append(await asyncio.wait_for(queue.get(), timeout))
            except TimeoutError:
                break
        try:
            await _write_access(pool, batch)
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError):
            log.exception("access log batch lost", extra={"entries": len(batch)})


async def _write_access(pool: asyncpg.Pool, batch: list[AccessEntry]) -> None:
    async with pool.acquire() as conn:
        await securitylog.write_access_entries(conn, batch)


async def flush_access_log(pool: asyncpg.Pool, queue: asyncio.Queue[AccessEntry]) -> None:
    """Write whatever is queued (shutdown, and tests that read the table)."""
    batch = []
    while not queue.empty():
        batch.append(queue.get_nowait())
    if batch:
        await _write_access(pool, batch)


# -- staff notifications (S4) ----------------------------------------------


def backoff(attempts: int) -> timedelta:
    """Delay before the next try after `attempts` failures: 2 s doubling, capped at one hour."""
    return timedelta(seconds=min(2 ** max(attempts, 1), 3600))


async def deliver_due_notifications(
    pool: asyncpg.Pool,
    http: aiohttp.ClientSession,
    settings: Settings,
    now: datetime | None = None,
) -> int:
    """One pass over due notifications; returns how many were delivered."""
    now = now or datetime.now(UTC)
    delivered = 0
    async with pool.acquire() as conn, conn.transaction():
        for note in await outbox.claim_due(conn, now):
            log.info(
                "staff notification",
                extra={"notification_id": note.id, "event": note.event, "payload": note.payload},
            )
            if settings.staff_webhook_url is None:
                # No receiver configured: the structured log line above is the notification.
                await outbox.mark_delivered(conn, note.id, now)
                delivered += 1
                continue
            error = await _post(http, settings, note.id, note.event, note.payload)
            if error is None:
                await outbox.mark_delivered(conn, note.id, datetime.now(UTC))
                delivered += 1
                continue
            attempts = note.attempts + 1
            give_up = attempts >= settings.outbox_max_attempts
            log.warning(
                "staff notification delivery failed",
                extra={
                    "notification_id": note.id,
                    "attempts": attempts,
                    "error": error,
                    "given_up": give_up,
                },
            )
            await outbox.mark_failed(
                conn,
                note.id,
                error=error,
                next_attempt_at=None if give_up else now + backoff(attempts),
                now=now,
            )
    return delivered


async def _post(
    http: aiohttp.ClientSession, settings: Settings, note_id: int, event: str, payload: dict
) -> str | None:
    """POST one notification; None on a 2xx, else a short reason."""
    assert settings.staff_webhook_url is not None
    body = json.dumps({"id": note_id, "type": event, "data": payload}).encode()
    try:
        async with http.post(
            settings.staff_webhook_url,
            data=body,
            headers={"Content-Type": "application/json", "Idempotency-Key": f"staff-{note_id}"},
            timeout=aiohttp.ClientTimeout(total=settings.staff_webhook_timeout_s),
            allow_redirects=False,
        ) as response:
            if 200 <= response.status < 300:
                return None
            return f"HTTP {response.status}"
    except (aiohttp.ClientError, TimeoutError) as exc:
        return type(exc).__name__


async def notification_worker(
    pool: asyncpg.Pool, http: aiohttp.ClientSession, settings: Settings, metrics: Metrics
) -> None:
    """Deliver notifications as they are committed (LISTEN) and on a poll for retries."""
    wake = asyncio.Event()

    def on_notify(*_: object) -> None:
        wake.set()

    listener = await pool.acquire()
    try:
        await listener.add_listener(outbox.CHANNEL, on_notify)
        while True:
            try:
                await deliver_due_notifications(pool, http, settings)
                async with pool.acquire() as conn:
                    pending = await conn.fetchval(
                        "SELECT count(*) FROM staff_notifications"
                        " WHERE delivered_at IS NULL AND given_up_at IS NULL"
                    )
                metrics.outbox_pending.set(pending)
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError):
                log.exception("staff notification pass failed")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(wake.wait(), settings.outbox_poll_s)
            wake.clear()
    finally:
        with contextlib.suppress(Exception):
            await listener.remove_listener(outbox.CHANNEL, on_notify)
        await pool.release(listener)


# -- retention (S3) --------------------------------------------------------


async def purge_logs(pool: asyncpg.Pool, settings: Settings, now: datetime) -> PurgeResult:
    cutoff = now - timedelta(days=settings.log_retention_days)
    async with pool.acquire() as conn, conn.transaction():
        result = await securitylog.purge_older_than(conn, cutoff)
    log.info(
        "log retention purge",
        extra={
            "cutoff": cutoff.isoformat(),
            "security_log": result.security_log,
            "access_log": result.access_log,
            "staff_notifications": result.staff_notifications,
        },
    )
    return result


async def purge_worker(pool: asyncpg.Pool, settings: Settings) -> None:
    """Daily purge; the first pass runs at start-up so a long-stopped node catches up."""
    while True:
        try:
            await purge_logs(pool, settings, datetime.now(UTC))
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError):
            log.exception("log retention purge failed")
        await asyncio.sleep(settings.purge_interval_s)
