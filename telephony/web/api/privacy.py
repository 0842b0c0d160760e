"""The access copy (D1), privacy requests (D2, D3) and support's queue of them (S5).

Support sees a request's ids, kind, status and dates, never the user's free
text (it may hold personal data and support needs none of it to act: S5);
the customer sees their own requests in full, owners the whole account's.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from aiohttp import web
from pydantic import AfterValidator, StringConstraints

from storage.privacy import PrivacyRequest
from telephony.domain.errors import InvalidInput
from telephony.domain.roles import StaffRole
from telephony.usecases import access_copy, privacy
from telephony.web.appkeys import POOL, SETTINGS
from telephony.web.auth import require_customer_user, require_staff
from telephony.web.spec import Body, Handler, Route, iso, page_of, read_body, read_page

DETAILS_MAX_CHARS = 2000  # the migration's CHECK says the same


def _no_nul(value: str) -> str:
    # PostgreSQL text cannot hold U+0000: refuse it here rather than fail in the database.
    if "\x00" in value:
        raise ValueError("must not contain NUL characters")
    return value


Details = Annotated[str, StringConstraints(max_length=DETAILS_MAX_CHARS), AfterValidator(_no_nul)]
Resolution = Annotated[
    str, StringConstraints(min_length=1, max_length=DETAILS_MAX_CHARS), AfterValidator(_no_nul)
]


class PrivacyRequestCreate(Body):
    kind: Literal["access", "rectification", "erasure", "restriction"]
    details: Details = ""


class PrivacyResolution(Body):
    resolution: Resolution


def _now() -> datetime:
    return datetime.now(UTC)


def render_request(r: PrivacyRequest) -> dict[str, Any]:
    """The customer's view: everything, including their own text."""
    return {
        "id": r.id,
        "user_id": r.user_id,
        "kind": r.kind,
        "status": r.status,
        "details": r.details,
        "received_at": iso(r.received_at),
        "due_at": iso(r.due_at),
        "completed_at": iso(r.completed_at),
        "resolution": r.resolution,
    }


def render_for_support(r: PrivacyRequest, now: datetime) -> dict[str, Any]:
    """Support's view (S5): what they need to act and meet the deadline, no free text."""
    return {
        "id": r.id,
        "account_id": r.account_id,
        "user_id": r.user_id,
        "kind": r.kind,
        "status": r.status,
        "received_at": iso(r.received_at),
        "due_at": iso(r.due_at),
        "completed_at": iso(r.completed_at),
        "overdue": privacy.is_overdue(r, now),
        "resolution": r.resolution,
    }


# -- customers -------------------------------------------------------------------------


async def export_me(request: web.Request) -> web.Response:
    principal = await require_customer_user(request)
    document = await access_copy.export_subject(
        request.app[POOL], principal, region=request.app[SETTINGS].data_region, now=_now()
    )
    return web.json_response(
        document, headers={"Content-Disposition": 'attachment; filename="personal-data.json"'}
    )


async def file_privacy_request(request: web.Request) -> web.Response:
    principal = await require_customer_user(request)
    body = await read_body(request, PrivacyRequestCreate)
    created = await privacy.file_request(
        request.app[POOL],
        principal,
        kind=privacy.Kind(body.kind),
        details=body.details,
        now=_now(),
    )
    return web.json_response(render_request(created), status=201)


async def list_privacy_requests(request: web.Request) -> web.Response:
    principal = await require_customer_user(request)
    page = read_page(request)
    found = await privacy.list_requests(request.app[POOL], principal, page.after, page.limit + 1)
    return web.json_response(page_of(found, page, render_request, lambda r: (r.received_at, r.id)))


async def get_privacy_request(request: web.Request) -> web.Response:
    principal = await require_customer_user(request)
    found = await privacy.get_request(request.app[POOL], principal, request.match_info["id"])
    return web.json_response(render_request(found))


# -- support ---------------------------------------------------------------------------


def _overdue_flag(request: web.Request) -> bool:
    raw = request.query.get("overdue", "false")
    if raw not in ("true", "false"):
        raise InvalidInput(
            "overdue must be true or false",
            errors=[{"field": "overdue", "message": "true or false"}],
        )
    return raw == "true"


async def support_list_privacy_requests(request: web.Request) -> web.Response:
    await require_staff(request, StaffRole.SUPPORT)
    overdue = _overdue_flag(request)
    page = read_page(request)
    now = _now()
    found = await privacy.list_open(
        request.app[POOL], overdue=overdue, now=now, after=page.after, limit=page.limit + 1
    )
    return web.json_response(
        page_of(found, page, lambda r: render_for_support(r, now), lambda r: (r.due_at, r.id))
    )


async def support_start_privacy_request(request: web.Request) -> web.Response:
    staff = await require_staff(request, StaffRole.SUPPORT)
    now = _now()
    found = await privacy.start_request(request.app[POOL], staff, request.match_info["id"], now)
    return web.json_response(render_for_support(found, now))


def _close(use_case: Callable[..., Awaitable[PrivacyRequest]], name: str) -> Handler:
    """Support closes a request with a resolution: by executing it, or by rejecting it."""

    async def handler(request: web.Request) -> web.Response:
        staff = await require_staff(request, StaffRole.SUPPORT)
        body = await read_body(request, PrivacyResolution)
        now = _now()
        found = await use_case(
            request.app[POOL], staff, request.match_info["id"], body.resolution, now
        )
        return web.json_response(render_for_support(found, now))

    handler.__name__ = name
    return handler


support_complete_privacy_request = _close(privacy.complete_request, "support_complete")
support_reject_privacy_request = _close(privacy.reject_request, "support_reject")


_PAGING = (("limit", "1 to 200, default 50"), ("cursor", "next_cursor of the previous page"))

ROUTES = [
    Route(
        "GET",
        "/v1/me/export",
        export_me,
        "A machine-readable copy of your personal data, by resource and storage location (D1)",
        "user",
        None,
        {200: "the access copy"},
        "privacy",
    ),
    Route(
        "POST",
        "/v1/privacy-requests",
        file_privacy_request,
        "Ask for access, rectification, erasure or restriction; due in 30 days (D2, D3)",
        "user",
        PrivacyRequestCreate,
        {201: "request received", 409: "erasure-requires-termination", 422: "validation-failed"},
        "privacy",
    ),
    Route(
        "GET",
        "/v1/privacy-requests",
        list_privacy_requests,
        "Your privacy requests (owners: the account's)",
        "user",
        None,
        {200: "privacy requests"},
        "privacy",
        query=_PAGING,
    ),
    Route(
        "GET",
        "/v1/privacy-requests/{id}",
        get_privacy_request,
        "One privacy request",
        "user",
        None,
        {200: "privacy request", 404: "not-found"},
        "privacy",
    ),
    Route(
        "GET",
        "/v1/support/privacy-requests",
        support_list_privacy_requests,
        "Open privacy requests of every account, nearest deadline first (D3); no free text (S5)",
        "support",
        None,
        {200: "privacy requests", 403: "forbidden", 422: "validation-failed"},
        "support",
        query=(("overdue", "true: only those past due_at"), *_PAGING),
    ),
    Route(
        "POST",
        "/v1/support/privacy-requests/{id}/start",
        support_start_privacy_request,
        "Mark a privacy request in progress",
        "support",
        None,
        {200: "privacy request", 404: "not-found", 409: "invalid-state"},
        "support",
    ),
    Route(
        "POST",
        "/v1/support/privacy-requests/{id}/complete",
        support_complete_privacy_request,
        "Execute and close a privacy request (erasure, restriction) (D2)",
        "support",
        PrivacyResolution,
        {
            200: "privacy request",
            404: "not-found",
            409: "invalid-state or erasure-requires-termination",
        },
        "support",
    ),
    Route(
        "POST",
        "/v1/support/privacy-requests/{id}/reject",
        support_reject_privacy_request,
        "Close a privacy request without executing it, with the reason",
        "support",
        PrivacyResolution,
        {200: "privacy request", 404: "not-found", 409: "invalid-state"},
        "support",
    ),
]
