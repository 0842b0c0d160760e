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
from typing import Any

import aiohttp
import asyncpg

from storage import outbox, securitylog
from storage.securitylog import AccessEntry, PurgeResult
from telephony.metrics import Metrics
from telephony.settings import Settings

log = logging.getLogger(__name__)

ACCESS_BATCH = 500
ACCESS_FLUSH_S = 1.0
NOTIFY_BATCH = 20


async def access_log_writer(pool: asyncpg.Pool, queue: asyncio.Queue[AccessEntry]) -> None:
    """Drain the access-log queue into PostgreSQL in batches (S3), off the request path.

    Entries already taken off the queue are written even when the task is
    cancelled at shutdown; what is still queued is left to `flush_access_log`.
    """
    while True:
        batch: list[AccessEntry] = []
        try:
            await _collect(queue, batch)
        finally:
            if batch:
                await _write_to_end(pool, batch)


async def _collect(queue: asyncio.Queue[AccessEntry], batch: list[AccessEntry]) -> None:
    """Append the next entry, then whatever arrives within ACCESS_FLUSH_S, to `batch`."""
    batch.append(await queue.get())
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(ACCESS_FLUSH_S):
            while len(batch) < ACCESS_BATCH:
                batch.append(await queue.get())


async def _write_to_end(pool: asyncpg.Pool, batch: list[AccessEntry]) -> None:
    """Write `batch`; a cancellation meanwhile waits for the write, then propagates."""
    write = asyncio.ensure_future(_write_access_logged(pool, batch))
    try:
        await asyncio.shield(write)
    except asyncio.CancelledError:
        await write
        raise


async def _write_access_logged(pool: asyncpg.Pool, batch: list[AccessEntry]) -> None:
    try:
        await _write_access(pool, batch)
    except Exception:
        # Never take the worker down: the next batch may well succeed.
        log.exception("access log batch lost", extra={"entries": len(batch)})


async def _write_access(pool: asyncpg.Pool, batch: list[AccessEntry]) -> None:
    async with pool.acquire() as conn:
        await securitylog.write_access_entries(conn, batch)


async def flush_access_log(pool: asyncpg.Pool, queue: asyncio.Queue[AccessEntry]) -> None:
    """Write whatever is queued (shutdown, and tests that read the table)."""
    batch: list[AccessEntry] = []
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
    """One pass over due notifications; returns how many were delivered (S4)."""
    _claimed, delivered = await _deliver_pass(pool, http, settings, now or datetime.now(UTC))
    return delivered


async def _deliver_pass(
    pool: asyncpg.Pool, http: aiohttp.ClientSession, settings: Settings, now: datetime
) -> tuple[int, int]:
    """Claim up to NOTIFY_BATCH due rows and try each once; (claimed, delivered)."""
    delivered = 0
    async with pool.acquire() as conn, conn.transaction():
        due = await outbox.claim_due(conn, now, limit=NOTIFY_BATCH)
        for note in due:
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
                # The pass's time when it was passed in (tests), else the real time of delivery.
                await outbox.mark_delivered(conn, note.id, max(now, datetime.now(UTC)))
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
    return len(due), delivered


async def _post(
    http: aiohttp.ClientSession,
    settings: Settings,
    note_id: int,
    event: str,
    payload: dict[str, Any],
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
    except TimeoutError:
        # A receiver that hangs is one failed attempt, bounded by the timeout.
        return f"timeout after {settings.staff_webhook_timeout_s:g} s"
    except aiohttp.ClientError as exc:
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
            wake.clear()
            try:
                # A full batch may hide more due rows behind it: go on until one is short.
                claimed = NOTIFY_BATCH
                while claimed == NOTIFY_BATCH:
                    claimed, _ = await _deliver_pass(pool, http, settings, datetime.now(UTC))
                async with pool.acquire() as conn:
                    metrics.outbox_pending.set(await outbox.count_pending(conn))
            except Exception:
                # Never let one bad pass end delivery for the life of the process.
                log.exception("staff notification pass failed")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(wake.wait(), settings.outbox_poll_s)
    finally:
        with contextlib.suppress(Exception):
            await listener.remove_listener(outbox.CHANNEL, on_notify)
        await pool.release(listener)


# -- retention (S3) --------------------------------------------------------


async def purge_logs(pool: asyncpg.Pool, settings: Settings, now: datetime) -> PurgeResult:
    """Delete log rows older than `settings.log_retention_days` before `now` (S3)."""
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
        except Exception:
            log.exception("log retention purge failed")
        await asyncio.sleep(settings.purge_interval_s)
