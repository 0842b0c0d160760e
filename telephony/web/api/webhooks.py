"""The webhook signing secret and the delivery status of the account's events (API.md)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from aiohttp import web

from storage import webhooks as events
from telephony.usecases import webhooks
from telephony.web.appkeys import KEYS, POOL
from telephony.web.auth import require_owner
from telephony.web.inputs import (
    KEYSET_PAGING,
    Query,
    iso,
    keyset_cursor,
    one_of,
    page,
    page_of,
    path_id,
    read_query,
)
from telephony.web.routes import OWNER, Route


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
    secret = await webhooks.rotate_secret(
        request.app[POOL], request.app[KEYS], owner, datetime.now(UTC)
    )
    return web.json_response({"secret": secret}, status=201)  # shown once; no-store


_LIST_QUERY = (
    *KEYSET_PAGING,
    Query(
        "status",
        "pending, delivered, failed (given up) or skipped (no webhook_url)",
        {"type": "string", "enum": list(events.STATUSES)},
        one_of(events.STATUSES),
    ),
)


async def list_events(request: web.Request) -> web.Response:
    owner = await require_owner(request)
    values = read_query(request, _LIST_QUERY)
    paging = page(values)
    found = await webhooks.list_events(
        request.app[POOL],
        owner,
        status=values.get("status"),
        before=paging.after,
        limit=paging.limit + 1,
    )
    return web.json_response(
        page_of(found, paging, render_event, lambda e: keyset_cursor(e.created_at, e.id))
    )


async def get_event(request: web.Request) -> web.Response:
    owner = await require_owner(request)
    event = await webhooks.get_event(request.app[POOL], owner, path_id(request))
    return web.json_response(render_event(event))


ROUTES = [
    Route(
        "POST",
        "/v1/account/webhook-secret",
        create_secret,
        "Create or rotate the webhook signing secret (shown once; the old one stops at once)",
        OWNER,
        None,
        {201: "{secret: whsec_…}"},
        "webhooks",
    ),
    Route(
        "GET",
        "/v1/webhook-events",
        list_events,
        "Delivery status of the account's webhook events, newest first",
        OWNER,
        None,
        {200: "webhook events"},
        "webhooks",
        query=_LIST_QUERY,
    ),
    Route(
        "GET",
        "/v1/webhook-events/{id}",
        get_event,
        "Delivery status of one webhook event",
        OWNER,
        None,
        {200: "webhook event"},
        "webhooks",
    ),
]
