"""The security log for staff `security_admin` (S2)."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from storage import securitylog
from telephony.domain.errors import InvalidInput
from telephony.domain.roles import StaffRole
from telephony.web.appkeys import POOL
from telephony.web.auth import require_staff
from telephony.web.spec import MAX_LIMIT, Route, iso


def render_event(event: securitylog.SecurityEvent) -> dict[str, Any]:
    return {
        "id": event.id,
        "at": iso(event.at),
        "event": event.event,
        "outcome": event.outcome,
        "user_id": event.user_id,
        "email": event.email,
        "source_address": event.source_address,
        "user_agent": event.user_agent,
        "details": event.details,
    }


async def list_security_log(request: web.Request) -> web.Response:
    await require_staff(request, StaffRole.SECURITY_ADMIN)
    raw_limit = request.query.get("limit", "50")
    raw_cursor = request.query.get("cursor")
    if not raw_limit.isdigit() or not 1 <= int(raw_limit) <= MAX_LIMIT:
        raise InvalidInput(errors=[{"field": "limit", "message": "an integer from 1 to 200"}])
    if raw_cursor is not None and not raw_cursor.isdigit():
        raise InvalidInput(errors=[{"field": "cursor", "message": "unknown cursor"}])
    limit = int(raw_limit)
    async with request.app[POOL].acquire() as conn:
        events = await securitylog.list_events(
            conn,
            email=request.query.get("email"),
            user_id=request.query.get("user_id"),
            before_id=int(raw_cursor) if raw_cursor else None,
            limit=limit + 1,
        )
    shown = events[:limit]
    return web.json_response(
        {
            "items": [render_event(e) for e in shown],
            "next_cursor": str(shown[-1].id) if len(events) > limit else None,
        }
    )


ROUTES = [
    Route(
        "GET",
        "/v1/security-log",
        list_security_log,
        "Login attempts and logouts, newest first (S2)",
        "security_admin",
        None,
        {200: "security events", 403: "forbidden"},
        "staff",
        query=(
            ("email", "only this e-mail"),
            ("user_id", "only this user"),
            ("limit", "1 to 200"),
            ("cursor", "paging cursor"),
        ),
    ),
]
