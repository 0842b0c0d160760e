"""Staff pages: support's consent look-up and privacy-request queue, the security log,
and staff access on request (S5).

Support pages render from the support use cases, which have no path to audio:
no recording link, no player, no size hinting at content (tests/browser checks
the DOM of each for any). Numbers are masked as in the API. Each look-up lands
in the customer's audit trail (the use case writes it).
"""

from __future__ import annotations

import re
from datetime import UTC, datetime

from aiohttp import web

from telephony.domain.errors import Forbidden, InvalidInput
from telephony.domain.formats import EMAIL_PATTERN
from telephony.domain.privacy import is_overdue
from telephony.domain.roles import StaffPrincipal, StaffRole
from telephony.usecases import identity, privacy, staff_access, support
from telephony.web.api.privacy import PrivacyResolution
from telephony.web.api.support import mask_number
from telephony.web.appkeys import JOURNAL, KEYS, POOL, SETTINGS
from telephony.web.auth import client_of
from telephony.web.inputs import ID_PATTERN, path_id
from telephony.web.portal.forms import errors_of, posted, validate
from telephony.web.portal.render import page
from telephony.web.portal.session import require_staff

QUEUE_LIMIT = 200
LOG_LIMIT = 100


def _now() -> datetime:
    return datetime.now(UTC)


async def _holding(request: web.Request, role: StaffRole) -> StaffPrincipal:
    staff = await require_staff(request)
    if not staff.holds(role):
        raise Forbidden(
            f"this page is for staff with the {role.value} role; ask for it under Staff access"
        )
    return staff


async def lookup_page(request: web.Request) -> web.StreamResponse:
    await _holding(request, StaffRole.SUPPORT)
    call_id = (request.query.get("call_id") or "").strip()
    if call_id:
        if not re.match(ID_PATTERN, call_id):
            return page(request, "support.html", {"call_id": call_id, "error": True}, status=422)
        raise web.HTTPSeeOther(f"/support/calls/{call_id}")
    return page(request, "support.html", {"call_id": "", "error": False})


async def support_call(request: web.Request) -> web.Response:
    staff = await _holding(request, StaffRole.SUPPORT)
    view = await support.support_view(request.app[POOL], staff, path_id(request))
    labels = {cp.counterpart.id: cp.counterpart.label for cp in view.counterparts}
    history = sorted((e for cp in view.counterparts for e in cp.events), key=lambda e: e.seq)
    return page(
        request,
        "support_call.html",
        {"view": view, "history": history, "labels": labels, "mask": mask_number},
    )


async def queue_page(request: web.Request) -> web.Response:
    await _holding(request, StaffRole.SUPPORT)
    now = _now()
    only_overdue = request.query.get("overdue") == "true"
    found = await privacy.list_open(
        request.app[POOL], overdue=only_overdue, now=now, after=None, limit=QUEUE_LIMIT
    )
    return page(
        request,
        "support_queue.html",
        {
            "requests": found,
            "overdue": {r.id for r in found if is_overdue(r.status, r.due_at, now)},
            "only_overdue": only_overdue,
            "errors": {},
        },
    )


async def move_request(request: web.Request) -> web.StreamResponse:
    fields = await posted(request)
    staff = await _holding(request, StaffRole.SUPPORT)
    action = request.match_info["action"]
    request_id = path_id(request)
    pool, keys, now = request.app[POOL], request.app[KEYS], _now()
    if action == "start":
        await privacy.start_request(pool, keys, staff, request_id, now)
    else:
        body = validate(PrivacyResolution, {"resolution": fields.get("resolution", "")})
        if action == "complete":
            journal = request.app[JOURNAL]
            await privacy.complete_request(
                pool, keys, staff, request_id, body.resolution, now, journal=journal
            )
        else:
            await privacy.reject_request(pool, keys, staff, request_id, body.resolution, now)
    raise web.HTTPSeeOther("/support/privacy-requests")


async def security_log_page(request: web.Request) -> web.Response:
    await _holding(request, StaffRole.SECURITY_ADMIN)
    email = (request.query.get("email") or "").strip()
    before_raw = request.query.get("before", "")
    before = (
        int(before_raw)
        if before_raw.isascii() and before_raw.isdigit() and len(before_raw) < 19
        else None
    )
    if email and (len(email) > 254 or not re.match(EMAIL_PATTERN, email)):
        return page(
            request,
            "security_log.html",
            {"events": [], "email": email, "error": True, "next_url": None},
            status=422,
        )
    events = await identity.security_log(
        request.app[POOL], email=email or None, user_id=None, before_id=before, limit=LOG_LIMIT + 1
    )
    more = len(events) > LOG_LIMIT
    events = events[:LOG_LIMIT]
    next_url = None
    if more:
        next_url = f"/security/log?before={events[-1].id}" + (f"&email={email}" if email else "")
    return page(
        request,
        "security_log.html",
        {"events": events, "email": email, "error": False, "next_url": next_url},
    )


async def _access_page(
    request: web.Request, staff: StaffPrincipal, errors: dict[str, str], status: int = 200
) -> web.Response:
    found = await staff_access.list_requests(request.app[POOL], staff)
    return page(
        request,
        "staff_access.html",
        {
            "requests": found,
            "roles": [r.value for r in StaffRole],
            "errors": errors,
            "now": _now(),
            "admin": staff.holds(StaffRole.SECURITY_ADMIN),
            "grant_hours": request.app[SETTINGS].staff_grant_s / 3600,
        },
        status=status,
    )


async def access_page(request: web.Request) -> web.Response:
    return await _access_page(request, await require_staff(request), {})


async def ask_access(request: web.Request) -> web.Response:
    fields = await posted(request)
    staff = await require_staff(request)
    role = fields.get("role", "")
    if role not in [r.value for r in StaffRole]:
        return await _access_page(request, staff, {"role": "support or security_admin"}, 422)
    try:
        await staff_access.request_access(
            request.app[POOL],
            staff,
            role=StaffRole(role),
            reason=fields.get("reason", ""),
            client=client_of(request),
            now=_now(),
        )
    except InvalidInput as exc:
        return await _access_page(request, staff, errors_of(exc), 422)
    return await _access_page(request, staff, {}, 201)


async def decide_access(request: web.Request) -> web.StreamResponse:
    await posted(request)
    staff = await require_staff(request)
    await staff_access.decide(
        request.app[POOL],
        request.app[SETTINGS],
        staff,
        path_id(request),
        approve=request.match_info["decision"] == "approve",
        client=client_of(request),
        now=_now(),
    )
    raise web.HTTPSeeOther("/staff/access")


ROUTES = [
    ("GET", "/support", lookup_page),
    ("GET", "/support/calls/{id}", support_call),
    ("GET", "/support/privacy-requests", queue_page),
    ("POST", r"/support/privacy-requests/{id}/{action:start|complete|reject}", move_request),
    ("GET", "/security/log", security_log_page),
    ("GET", "/staff/access", access_page),
    ("POST", "/staff/access", ask_access),
    ("POST", r"/staff/access/{id}/{decision:approve|refuse}", decide_access),
]
