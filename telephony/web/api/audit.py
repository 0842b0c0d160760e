"""The account's audit trail, for its owners."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from storage import audit
from telephony.usecases import audit_trail
from telephony.web.appkeys import POOL
from telephony.web.auth import require_owner
from telephony.web.inputs import SEQUENCE_PAGING, iso, page, page_of, read_query, sequence_cursor
from telephony.web.routes import OWNER, Route


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
    paging = page(read_query(request, SEQUENCE_PAGING))
    events = await audit_trail.list_trail(
        request.app[POOL], owner, after_seq=paging.after or 0, limit=paging.limit + 1
    )
    return web.json_response(
        page_of(events, paging, render_audit, lambda e: sequence_cursor(e.seq))
    )


ROUTES = [
    Route(
        "GET",
        "/v1/audit",
        list_audit,
        "The account's hash-chained audit trail, oldest first",
        OWNER,
        None,
        {200: "audit events"},
        "audit",
        query=SEQUENCE_PAGING,
    ),
]
