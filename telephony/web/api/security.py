"""The security log for staff `security_admin` (S2)."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from storage import securitylog
from telephony.domain.formats import EMAIL_PATTERN
from telephony.domain.roles import StaffRole
from telephony.usecases import identity
from telephony.web.appkeys import POOL
from telephony.web.auth import require_staff
from telephony.web.inputs import (
    ID_PATTERN,
    SEQUENCE_PAGING,
    Query,
    email_query,
    id_query,
    iso,
    page,
    page_of,
    read_query,
    sequence_cursor,
)
from telephony.web.routes import Route


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


_QUERY = (
    Query(
        "email",
        "only this e-mail",
        {"type": "string", "maxLength": 254, "pattern": EMAIL_PATTERN},
        email_query,
    ),
    Query("user_id", "only this user", {"type": "string", "pattern": ID_PATTERN}, id_query),
    *SEQUENCE_PAGING,
)


async def list_security_log(request: web.Request) -> web.Response:
    await require_staff(request, StaffRole.SECURITY_ADMIN)
    values = read_query(request, _QUERY)
    paging = page(values)
    events = await identity.security_log(
        request.app[POOL],
        email=values.get("email"),
        user_id=values.get("user_id"),
        before_id=paging.after,
        limit=paging.limit + 1,
    )
    return web.json_response(page_of(events, paging, render_event, lambda e: sequence_cursor(e.id)))


ROUTES = [
    Route(
        "GET",
        "/v1/security-log",
        list_security_log,
        "Sign-in attempts and sign-outs, newest first (S2)",
        "security_admin",
        None,
        {200: "security events"},
        "staff",
        query=_QUERY,
    ),
]
