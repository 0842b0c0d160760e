"""The webhook signing secret and the delivery status of the account's events (API.md)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from aiohttp import web

from storage import webhooks as events
from telephony.delivery import webhooks as delivery
from telephony.domain.errors import InvalidInput
from telephony.web.appkeys import MASTER_KEYS, POOL
from telephony.web.auth import require_owner
from telephony.web.spec import Route, iso, page_of, read_page


def render_event(event: events.WebhookEvent) -> dict[str, Any]:
    """Delivery status only: the payload went to the customer's endpoint and stays there."""
    status = event.status
    return {
        "id": event.id,
        "type": event.type,
        "created_at": iso(event.created_at),
        "status": status,
        "attempts": event.attempts,
        # Meaningful only while the event is open; a final event has no next attempt.
        "next_attempt_at": iso(event.next_attempt_at) if status == "pending" else None,
        "delivered_at": iso(event.delivered_at),
        "given_up_at": iso(event.given_up_at),
        "skipped_at": iso(event.skipped_at),
        "last_error": event.last_error,
    }


async def create_secret(request: web.Request) -> web.Response:
    owner = await require_owner(request)
    secret = await delivery.rotate_secret(
        request.app[POOL], request.app[MASTER_KEYS], owner, datetime.now(UTC)
    )
    # Shown once, never again: no cache on the way may keep it.
    return web.json_response({"secret": secret}, status=201, headers={"Cache-Control": "no-store"})


async def list_events(request: web.Request) -> web.Response:
    owner = await require_owner(request)
    page = read_page(request)
    status = request.query.get("status")
    if status is not None and status not in events.STATUSES:
        raise InvalidInput(
            "unknown status",
            errors=[{"field": "status", "message": "one of " + ", ".join(events.STATUSES)}],
        )
    async with request.app[POOL].acquire() as conn:
        found = await events.list_events(
            conn, owner.account_id or "", status=status, before=page.after, limit=page.limit + 1
        )
    return web.json_response(page_of(found, page, render_event))


async def get_event(request: web.Request) -> web.Response:
    owner = await require_owner(request)
    async with request.app[POOL].acquire() as conn:
        event = await events.get_event(conn, owner.account_id or "", request.match_info["id"])
    return web.json_response(render_event(event))


ROUTES = [
    Route(
        "POST",
        "/v1/account/webhook-secret",
        create_secret,
        "Create or rotate the webhook signing secret (shown once; the old one stops at once)",
        "owner",
        None,
        {201: "{secret: whsec_…}"},
        "webhooks",
    ),
    Route(
        "GET",
        "/v1/webhook-events",
        list_events,
        "Delivery status of the account's webhook events, newest first",
        "owner",
        None,
        {200: "webhook events", 422: "validation-failed"},
        "webhooks",
        query=(
            ("limit", "1 to 200, default 50"),
            ("cursor", "next_cursor of the previous page"),
            ("status", "pending, delivered, failed (given up) or skipped (no webhook_url)"),
        ),
    ),
    Route(
        "GET",
        "/v1/webhook-events/{id}",
        get_event,
        "Delivery status of one webhook event",
        "owner",
        None,
        {200: "webhook event", 404: "not-found"},
        "webhooks",
    ),
]
