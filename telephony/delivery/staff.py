"""Staff notifications (S4) on the outbox engine: a JSON POST to TELEPHONY_STAFF_WEBHOOK_URL.

Without a configured receiver the structured log line is the notification.
Every notification is independent: a failing one waits for its retry while
the next are delivered, one lane, in the order they were made.
"""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
import asyncpg

from storage import outbox
from storage.outbox import StaffNotification
from telephony.delivery.outbox import Attempt, Outbox, Outcome, backoff
from telephony.metrics import Metrics
from telephony.settings import Settings

log = logging.getLogger(__name__)

NOTIFY_BATCH = 20  # notifications one lane sends in a row before it yields
LEASE_MARGIN_S = 60  # a claim outlives the attempt's time limit by this much


class StaffChannel:
    name = "staff notification"
    notify_channel = outbox.CHANNEL
    lanes = 1  # one after the other, oldest first: staff read them in order
    drain_limit = NOTIFY_BATCH

    def __init__(self, pool: asyncpg.Pool, http: aiohttp.ClientSession, settings: Settings):
        self.pool = pool
        self.http = http
        self.settings = settings

    def _lease_until(self, now: datetime) -> datetime:
        return now + timedelta(seconds=self.settings.staff_webhook_timeout_s + LEASE_MARGIN_S)

    async def claim(self, now: datetime, limit: int) -> list[StaffNotification]:
        async with self.pool.acquire() as conn:
            return await outbox.claim_due(conn, now, self._lease_until(now), limit=limit)

    async def following(self, item: StaffNotification, now: datetime) -> StaffNotification | None:
        found = await self.claim(now, 1)
        return found[0] if found else None

    async def attempt(self, item: StaffNotification, now: datetime) -> Attempt:
        log.info(
            "staff notification",
            extra={"notification_id": item.id, "event": item.event, "payload": item.payload},
        )
        if self.settings.staff_webhook_url is None:
            return Attempt(Outcome.DELIVERED)  # the structured log line above is the notification
        error = await _post(self.http, self.settings, item.id, item.event, item.payload)
        return Attempt(Outcome.DELIVERED) if error is None else Attempt(Outcome.FAILED, error)

    async def record(self, item: StaffNotification, attempt: Attempt, now: datetime) -> None:
        async with self.pool.acquire() as conn:
            if attempt.outcome is Outcome.DELIVERED:
                # The pass's time when it was passed in (tests), else the real time of delivery.
                await outbox.mark_delivered(conn, item, max(now, datetime.now(UTC)))
                return
            attempts = item.attempts + 1
            give_up = attempts >= self.settings.outbox_max_attempts
            await outbox.mark_failed(
                conn,
                item,
                error=attempt.error or "failed",
                next_attempt_at=None if give_up else now + backoff(attempts),
                now=now,
            )
        log.warning(
            "staff notification delivery failed",
            extra={
                "notification_id": item.id,
                "attempts": attempts,
                "error": attempt.error,
                "given_up": give_up,
            },
        )


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


async def deliver_due_notifications(
    pool: asyncpg.Pool,
    http: aiohttp.ClientSession,
    settings: Settings,
    now: datetime | None = None,
) -> int:
    """One pass over due notifications; returns how many were delivered (S4)."""
    return await Outbox(pool, StaffChannel(pool, http, settings)).deliver_due(now)


async def notification_worker(
    pool: asyncpg.Pool, http: aiohttp.ClientSession, settings: Settings, metrics: Metrics
) -> None:
    """Deliver notifications as they commit, and keep the pending gauge (S7) current."""
    channel = _Measured(pool, http, settings, metrics)
    await Outbox(pool, channel).run(settings.outbox_poll_s)


class _Measured(StaffChannel):
    """The worker's channel: every claim also refreshes the outbox_pending gauge."""

    def __init__(
        self, pool: asyncpg.Pool, http: aiohttp.ClientSession, settings: Settings, metrics: Metrics
    ) -> None:
        super().__init__(pool, http, settings)
        self.metrics = metrics

    async def claim(self, now: datetime, limit: int) -> list[StaffNotification]:
        found = await super().claim(now, limit)
        async with self.pool.acquire() as conn:
            self.metrics.outbox_pending.set(await outbox.count_pending(conn))
        return found
