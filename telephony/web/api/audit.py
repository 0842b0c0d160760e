"""The account's audit trail, for its owners."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from storage import audit
from telephony.domain.errors import InvalidInput
from telephony.web.appkeys import POOL
from telephony.web.auth import require_owner
from telephony.web.spec import MAX_LIMIT, Route, iso


def render_audit(e: audit.AuditEvent) -> dict[str, Any]:
    return {
        "seq": e.seq,
        "at": iso(e.at),
        "actor": e.actor,
        "action": e.action,
        "subject": e.subject,
        "details": e.details,
        "hash": e.hash.hex(),
        "prev_hash": e.prev_hash.hex(),
    }


async def list_audit(request: web.Request) -> web.Response:
    owner = await require_owner(request)
    raw_limit = request.query.get("limit", "50")
    raw_cursor = request.query.get("cursor", "0")
    if not raw_limit.isdigit() or not 1 <= int(raw_limit) <= MAX_LIMIT:
        raise InvalidInput(errors=[{"field": "limit", "message": "an integer from 1 to 200"}])
    if not raw_cursor.isdigit():
        raise InvalidInput(errors=[{"field": "cursor", "message": "unknown cursor"}])
    limit = int(raw_limit)
    async with request.app[POOL].acquire() as conn:
        events = await audit.list_events(
            conn, owner.account_id or "", after_seq=int(raw_cursor), limit=limit + 1
        )
    shown = events[:limit]
    return web.json_response(
        {
            "items": [render_audit(e) for e in shown],
            "next_cursor": str(shown[-1].seq) if len(events) > limit else None,
        }
    )


ROUTES = [
    Route(
        "GET",
        "/v1/audit",
        list_audit,
        "The account's hash-chained audit trail, oldest first",
        "owner",
        None,
        {200: "audit events"},
        "audit",
        query=(("limit", "1 to 200"), ("cursor", "next_cursor of the previous page")),
    ),
]
