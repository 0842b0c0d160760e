"""Customer webhooks: the signing secret and the delivery worker.

Deliveries follow Standard Webhooks (API.md): a `POST` of the stored
`{type, timestamp, data}` with `webhook-id` (the event id, the same on every
retry), `webhook-timestamp` and `webhook-signature: v1,<base64 HMAC-SHA256 of
"<id>.<timestamp>.<body>">`. An account's events leave in order: only its
oldest open event is ever tried, so a retried event holds back the ones after
it (head of line). Accounts are served concurrently and every attempt has a
time limit, so one slow or hanging endpoint delays nobody else.

Retries back off like the staff notifications (`workers.backoff`: 2 s,
doubling, at most an hour) until `webhook_retry_window_s` (24 h) after the
event, which is the last try; a failure then gives the event up. Events of an
account without a `webhook_url` are skipped, not kept: a backlog would burst
out at whatever URL is configured later. An account with a URL but no secret
yet gets failed attempts, retried, so events raised while the owner is still
setting up arrive once the secret exists.

Targets pass the SSRF guard of `telephony.ssrf` at registration and again in
the delivery client's resolver at every attempt.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import hmac
import json
import logging
import secrets
import time
from datetime import UTC, datetime, timedelta
from enum import StrEnum

import aiohttp
import asyncpg

from storage import webhooks
from storage.keys.crypto import unwrap_key, wrap_key
from storage.keys.hierarchy import MasterKeys, account_key
from storage.webhooks import WebhookEvent
from telephony.delivery.ssrf import TargetRefused, open_session, screen_url
from telephony.delivery.workers import backoff
from telephony.domain.errors import IntegrityFailure
from telephony.domain.roles import Principal
from telephony.settings import Settings
from telephony.usecases.identity import notify_admin_change

log = logging.getLogger(__name__)

SECRET_PREFIX = "whsec_"  # noqa: S105 (a format prefix, not a secret)
SECRET_BYTES = 32  # Standard Webhooks: 24 to 64 random bytes; storage.crypto wraps 32
USER_AGENT = "telephony-webhooks/1"
LEASE_MARGIN_S = 60  # a claim outlives the attempt's time limit by this much
DRAIN_LIMIT = 100  # events one account sends in a row before its slot goes to others
NO_URL = webhooks.NO_URL
NO_SECRET = "no signing secret: POST /v1/account/webhook-secret"  # noqa: S105


# -- the signing secret ----------------------------------------------------------------


def secret_owner(account_id: str) -> str:
    """The wrap's associated data: a wrapped secret opens only as this account's secret."""
    return "whsec:" + account_id


async def rotate_secret(
    pool: asyncpg.Pool, master: MasterKeys, owner: Principal, now: datetime
) -> str:
    """Create or replace the account's signing secret; the only time it exists in plain text.

    The old secret stops signing at the commit: there is no overlap, so the
    owner updates the receiver right after rotating.
    """
    account_id = owner.account_id
    assert account_id is not None
    secret = secrets.token_bytes(SECRET_BYTES)
    async with pool.acquire() as conn, conn.transaction():
        kek = await account_key(conn, master, account_id, now)
        wrapped = wrap_key(kek, secret, secret_owner(account_id))
        rotated = await webhooks.put_secret(conn, account_id, wrapped, now)
        await notify_admin_change(
            conn,
            "webhook_secret.rotated" if rotated else "webhook_secret.created",
            now=now,
            actor=owner,
            account_id=account_id,
            subject={"type": "account", "id": account_id},
        )
    return SECRET_PREFIX + base64.b64encode(secret).decode("ascii")


def sign(secret: bytes, msg_id: str, timestamp_s: int, body: bytes) -> str:
    """The `webhook-signature` value over these exact body bytes (Standard Webhooks v1)."""
    mac = hmac.digest(secret, f"{msg_id}.{timestamp_s}.".encode() + body, hashlib.sha256)
    return "v1," + base64.b64encode(mac).decode("ascii")


# -- delivery --------------------------------------------------------------------------


class Outcome(StrEnum):
    DELIVERED = "delivered"
    FAILED = "failed"
    SKIPPED = "skipped"


def retry_at(event: WebhookEvent, attempts: int, now: datetime, window_s: int) -> datetime | None:
    """When to try again after `attempts` failures; None once the retry window has closed.

    The last try falls exactly at the end of the window, however the backoff lands.
    """
    deadline = event.created_at + timedelta(seconds=window_s)
    if now >= deadline:
        return None
    return min(now + backoff(attempts), deadline)


def _lease_until(settings: Settings, now: datetime) -> datetime:
    return now + timedelta(seconds=settings.webhook_timeout_s + LEASE_MARGIN_S)


async def _claim(
    pool: asyncpg.Pool, settings: Settings, now: datetime, limit: int, account_id: str | None = None
) -> list[WebhookEvent]:
    async with pool.acquire() as conn:
        return await webhooks.claim_heads(
            conn, now, _lease_until(settings, now), limit=limit, account_id=account_id
        )


async def deliver_due(
    pool: asyncpg.Pool,
    http: aiohttp.ClientSession,
    settings: Settings,
    master: MasterKeys,
    now: datetime | None = None,
) -> int:
    """One pass: every due account (up to webhook_concurrency) at once; returns deliveries.

    `http` comes from `open_session`. With `now` given (tests), that is the
    time of every step of the pass; otherwise the clock is read at each step.
    """
    heads = await _claim(pool, settings, now or datetime.now(UTC), settings.webhook_concurrency)
    counts = await asyncio.gather(*(_drain(pool, http, settings, master, h, now) for h in heads))
    return sum(counts)


async def _drain(
    pool: asyncpg.Pool,
    http: aiohttp.ClientSession,
    settings: Settings,
    master: MasterKeys,
    head: WebhookEvent,
    fixed_now: datetime | None,
) -> int:
    """Try `head`, then the account's next events while they go through; returns deliveries.

    Never raises: a failed step is logged and its event's claim simply lapses,
    which retries it after the lease.
    """
    delivered = 0
    event = head
    try:
        for tried in range(1, DRAIN_LIMIT + 1):
            outcome = await _attempt(pool, http, settings, master, event, fixed_now)
            if outcome is Outcome.DELIVERED:
                delivered += 1
            if outcome is Outcome.FAILED or tried == DRAIN_LIMIT:
                break
            following = await _claim(
                pool, settings, fixed_now or datetime.now(UTC), 1, event.account_id
            )
            if not following:
                break
            event = following[0]
    except Exception:
        log.exception("webhook delivery step failed", extra={"event_id": event.id})
    return delivered


async def _attempt(
    pool: asyncpg.Pool,
    http: aiohttp.ClientSession,
    settings: Settings,
    master: MasterKeys,
    event: WebhookEvent,
    fixed_now: datetime | None,
) -> Outcome:
    """Try `event` once with the account's current URL and secret, and record the outcome."""
    now = fixed_now or datetime.now(UTC)
    secret: bytes | None = None
    error: str | None = NO_SECRET
    async with pool.acquire() as conn:
        endpoint = await webhooks.find_endpoint(conn, event.account_id)
        if endpoint.url is None:
            await webhooks.mark_skipped(conn, event, reason=NO_URL, now=now)
            return Outcome.SKIPPED
        if endpoint.wrapped_secret is not None:
            try:
                kek = await account_key(conn, master, event.account_id, now)
                secret = unwrap_key(kek, endpoint.wrapped_secret, secret_owner(event.account_id))
            except IntegrityFailure:
                error = "the signing secret cannot be opened: create a new one"
    if secret is not None:
        error = await _post(http, settings, event, endpoint.url, secret)
    async with pool.acquire() as conn:
        if error is None:
            # The pass's time when it was passed in (tests), else the real time of delivery.
            await webhooks.mark_delivered(conn, event, max(now, datetime.now(UTC)))
            return Outcome.DELIVERED
        attempts = event.attempts + 1
        next_at = retry_at(event, attempts, now, settings.webhook_retry_window_s)
        await webhooks.mark_failed(conn, event, error=error, next_attempt_at=next_at, now=now)
    log.warning(
        "webhook delivery failed",
        extra={
            "event_id": event.id,
            "account_id": event.account_id,
            "attempts": attempts,
            "error": error,
            "given_up": next_at is None,
        },
    )
    return Outcome.FAILED


async def _post(
    http: aiohttp.ClientSession, settings: Settings, event: WebhookEvent, url: str, secret: bytes
) -> str | None:
    """POST the event once; None on a 2xx, else a short reason for last_error (never the secret)."""
    body = json.dumps(event.payload, separators=(",", ":")).encode()  # signed exactly as sent
    # The receiver compares this with its own clock (Standard Webhooks: 5 min), so it is
    # the wall clock of the request, not the scheduling time.
    timestamp_s = int(time.time())
    headers = {
        "Content-Type": "application/json",
        "User-Agent": USER_AGENT,
        "webhook-id": event.id,
        "webhook-timestamp": str(timestamp_s),
        "webhook-signature": sign(secret, event.id, timestamp_s, body),
    }
    try:
        screen_url(url, settings.webhook_allow_private)
        async with http.post(
            url,
            data=body,
            headers=headers,
            timeout=aiohttp.ClientTimeout(total=settings.webhook_timeout_s),
            allow_redirects=False,
        ) as response:
            if 200 <= response.status < 300:
                return None
            return f"HTTP {response.status}"
    except TargetRefused as exc:
        return f"refused: {exc}"
    except TimeoutError:
        # A receiver that hangs is one failed attempt, bounded by the timeout.
        return f"timeout after {settings.webhook_timeout_s:g} s"
    except aiohttp.ClientConnectorError as exc:
        if isinstance(exc.os_error, TargetRefused):
            return f"refused: {exc.os_error}"
        return type(exc).__name__
    except aiohttp.ClientError as exc:
        return type(exc).__name__


async def delivery_worker(pool: asyncpg.Pool, settings: Settings, master: MasterKeys) -> None:
    """Deliver events as they commit (LISTEN) and on a poll for retries, accounts at once.

    Up to `webhook_concurrency` accounts drain in tasks of their own; a free
    slot is filled at once, so a hanging endpoint occupies one slot, never the loop.
    """
    wake = asyncio.Event()
    running: set[asyncio.Task[int]] = set()

    def on_notify(*_: object) -> None:
        wake.set()

    def finished(task: asyncio.Task[int]) -> None:
        running.discard(task)
        wake.set()

    async with open_session(settings) as http, pool.acquire() as listener:
        await listener.add_listener(webhooks.CHANNEL, on_notify)
        try:
            while True:
                wake.clear()
                free = settings.webhook_concurrency - len(running)
                try:
                    heads = await _claim(pool, settings, datetime.now(UTC), free) if free else []
                except Exception:
                    # Never let one bad pass end delivery for the life of the process.
                    log.exception("webhook claim failed")
                    heads = []
                for head in heads:
                    task = asyncio.create_task(_drain(pool, http, settings, master, head, None))
                    running.add(task)
                    task.add_done_callback(finished)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(wake.wait(), settings.outbox_poll_s)
        finally:
            for task in running:
                task.cancel()
            await asyncio.gather(*running, return_exceptions=True)
            with contextlib.suppress(Exception):
                await listener.remove_listener(webhooks.CHANNEL, on_notify)
