"""What internal support may see (S5): consent flags and their history, never audio."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from telephony.domain.roles import StaffRole
from telephony.usecases import support
from telephony.usecases.calls import CallView
from telephony.web.api.calls import render_event
from telephony.web.appkeys import POOL
from telephony.web.auth import require_staff
from telephony.web.inputs import iso, path_id
from telephony.web.routes import Route

VISIBLE_DIGITS = 3


def mask_number(number: str) -> str:
    """Support sees only the last digits: enough to match a caller's report, no more."""
    keep = number[-VISIBLE_DIGITS:]
    head = number[:-VISIBLE_DIGITS]
    return "".join(ch if ch == "+" else "*" for ch in head) + keep


def render_support_view(view: CallView) -> dict[str, Any]:
    return {
        "call_id": view.call.id,
        "account_id": view.call.account_id,
        "status": view.call.status.value,
        "created_at": iso(view.call.created_at),
        "ended_at": iso(view.call.ended_at),
        "counterparts": [
            {
                "id": v.counterpart.id,
                "label": v.counterpart.label,
                "number": mask_number(v.counterpart.number),
                "consent": v.consent.value,
                "events": [render_event(e) for e in v.events],
            }
            for v in view.counterparts
        ],
        # Metadata only: no audio link, no size that would hint at content.
        "recordings": [
            {
                "id": r.id,
                "status": r.status.value,
                "stop_reason": r.stop_reason.value if r.stop_reason else None,
                "started_at": iso(r.started_at),
                "ended_at": iso(r.ended_at),
            }
            for r in view.recordings
        ],
    }


async def consent_view(request: web.Request) -> web.Response:
    staff = await require_staff(request, StaffRole.SUPPORT)
    view = await support.support_view(request.app[POOL], staff, path_id(request))
    return web.json_response(render_support_view(view))


ROUTES = [
    Route(
        "GET",
        "/v1/support/calls/{id}/consent",
        consent_view,
        "Consent flags, their history and recording metadata of a call (S5); audited",
        "support",
        None,
        {200: "consent view"},
        "support",
    ),
]
