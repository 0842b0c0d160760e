"""Customer webhooks: the signing secret and the delivery worker.

Deliveries follow Standard Webhooks (API.md): a `POST` of the stored
`{type, timestamp, data}` with `webhook-id` (the event id, the same on every
retry), `webhook-timestamp` and `webhook-signature: v1,<base64 HMAC-SHA256 of
"<id>.<timestamp>.<body>">`. An account's events leave in order: only its
oldest open event is ever tried, so a retried event holds back the ones after
it (head of line). Accounts are served concurrently and every attempt has a
time limit, so one slow or hanging endpoint delays nobody else.

Retries back off like the staff notifications (`outbox.backoff`: 2 s,
doubling, at most an hour) until `webhook_retry_window_s` (24 h) after the
event, which is the last try; a failure then gives the event up. Events of an
account without a `webhook_url` are skipped, not kept: a backlog would burst
out at whatever URL is configured later. An account with a URL but no secret
yet gets failed attempts, retried, so events raised while the owner is still
setting up arrive once the secret exists.

Targets pass the SSRF guard of `telephony.ssrf` at registration and again in
the delivery client's resolver at every attempt.

The outbox engine (`delivery/outbox.py`) runs the lanes; this module is the
channel: how events are claimed, sent and recorded.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
import time
from datetime import UTC, datetime, timedelta

import aiohttp
import asyncpg

from storage import webhooks
from storage.keys.providers import KeyProvider
from storage.webhooks import WebhookEvent
from telephony.delivery.outbox import Attempt, Outbox, Outcome, backoff
from telephony.delivery.ssrf import TargetRefused, open_session, screen_url
from telephony.domain.errors import IntegrityFailure
from telephony.settings import Settings

log = logging.getLogger(__name__)

SECRET_PREFIX = "whsec_"  # noqa: S105 (a format prefix, not a secret)
SECRET_BYTES = 32  # Standard Webhooks: 24 to 64 random bytes; storage.keys.crypto wraps 32
USER_AGENT = "telephony-webhooks/1"
LEASE_MARGIN_S = 60  # a claim outlives the attempt's time limit by this much
DRAIN_LIMIT = 100  # events one account sends in a row before its lane goes to others
NO_URL = webhooks.NO_URL
NO_SECRET = "no signing secret: POST /v1/account/webhook-secret"  # noqa: S105


def secret_owner(account_id: str) -> str:
    """The wrap's associated data: a wrapped secret opens only as this account's secret."""
    return "whsec:" + account_id


def sign(secret: bytes, msg_id: str, timestamp_s: int, body: bytes) -> str:
    """The `webhook-signature` value over these exact body bytes (Standard Webhooks v1)."""
    mac = hmac.digest(secret, f"{msg_id}.{timestamp_s}.".encode() + body, hashlib.sha256)
    return "v1," + base64.b64encode(mac).decode("ascii")


# -- delivery --------------------------------------------------------------------------


def retry_at(event: WebhookEvent, attempts: int, now: datetime, window_s: int) -> datetime | None:
    """When to try again after `attempts` failures; None once the retry window has closed.

    The last try falls exactly at the end of the window, however the backoff lands.
    """
    deadline = event.created_at + timedelta(seconds=window_s)
    if now >= deadline:
        return None
    return min(now + backoff(attempts), deadline)


class WebhookChannel:
    """Customer webhook events: a lane per account, its events in order (head of line)."""

    name = "webhook"
    notify_channel = webhooks.CHANNEL
    drain_limit = DRAIN_LIMIT

    def __init__(
        self,
        pool: asyncpg.Pool,
        http: aiohttp.ClientSession,
        settings: Settings,
        keys: KeyProvider,
    ) -> None:
        self.pool = pool
        self.http = http  # from `open_session`: the SSRF guard is in its resolver
        self.settings = settings
        self.keys = keys
        self.lanes = settings.webhook_concurrency

    def _lease_until(self, now: datetime) -> datetime:
        return now + timedelta(seconds=self.settings.webhook_timeout_s + LEASE_MARGIN_S)

    async def claim(self, now: datetime, limit: int) -> list[WebhookEvent]:
        async with self.pool.acquire() as conn:
            return await webhooks.claim_heads(conn, now, self._lease_until(now), limit=limit)

    async def following(self, item: WebhookEvent, now: datetime) -> WebhookEvent | None:
        async with self.pool.acquire() as conn:
            found = await webhooks.claim_heads(
                conn, now, self._lease_until(now), limit=1, account_id=item.account_id
            )
        return found[0] if found else None

    async def attempt(self, item: WebhookEvent, now: datetime) -> Attempt:
        """Try `item` once with the account's current URL and secret."""
        secret: bytes | None = None
        error = NO_SECRET
        async with self.pool.acquire() as conn:
            endpoint = await webhooks.find_endpoint(conn, item.account_id)
            if endpoint.url is None:
                return Attempt(Outcome.SKIPPED, NO_URL)
            if endpoint.wrapped_secret is not None:
                try:
                    secret = await self.keys.unwrap_secret(
                        conn,
                        item.account_id,
                        secret_owner(item.account_id),
                        endpoint.wrapped_secret,
                        now,
                    )
                except IntegrityFailure:
                    error = "the signing secret cannot be opened: create a new one"
        if secret is None:
            return Attempt(Outcome.FAILED, error)
        failure = await _post(self.http, self.settings, item, endpoint.url, secret)
        return Attempt(Outcome.DELIVERED) if failure is None else Attempt(Outcome.FAILED, failure)

    async def record(self, item: WebhookEvent, attempt: Attempt, now: datetime) -> None:
        async with self.pool.acquire() as conn:
            if attempt.outcome is Outcome.SKIPPED:
                await webhooks.mark_skipped(conn, item, reason=attempt.error or NO_URL, now=now)
                return
            if attempt.outcome is Outcome.DELIVERED:
                # The pass's time when it was passed in (tests), else the real time of delivery.
                await webhooks.mark_delivered(conn, item, max(now, datetime.now(UTC)))
                return
            attempts = item.attempts + 1
            next_at = retry_at(item, attempts, now, self.settings.webhook_retry_window_s)
            error = attempt.error or "failed"
            await webhooks.mark_failed(conn, item, error=error, next_attempt_at=next_at, now=now)
        log.warning(
            "webhook delivery failed",
            extra={
                "event_id": item.id,
                "account_id": item.account_id,
                "attempts": attempts,
                "error": error,
                "given_up": next_at is None,
            },
        )


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


async def deliver_due(
    pool: asyncpg.Pool,
    http: aiohttp.ClientSession,
    settings: Settings,
    keys: KeyProvider,
    now: datetime | None = None,
) -> int:
    """One pass: every due account (up to webhook_concurrency) at once; returns deliveries."""
    return await Outbox(pool, WebhookChannel(pool, http, settings, keys)).deliver_due(now)


async def delivery_worker(pool: asyncpg.Pool, settings: Settings, keys: KeyProvider) -> None:
    """Deliver events as they commit (LISTEN) and on a poll for retries, accounts at once."""
    async with open_session(settings) as http:
        channel = WebhookChannel(pool, http, settings, keys)
        await Outbox(pool, channel).run(settings.outbox_poll_s)
