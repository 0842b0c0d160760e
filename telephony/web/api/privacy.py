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

from storage.privacy import PrivacyRequest
from telephony.domain.privacy import RequestKind, is_overdue
from telephony.domain.roles import StaffPrincipal, StaffRole
from telephony.usecases import access_copy, privacy
from telephony.web.appkeys import JOURNAL, KEYS, POOL, SETTINGS
from telephony.web.auth import require_customer_user, require_staff
from telephony.web.inputs import (
    KEYSET_PAGING,
    Body,
    Query,
    free,
    iso,
    keyset_cursor,
    one_of,
    page,
    page_of,
    path_id,
    read_body,
    read_query,
    trimmed,
)
from telephony.web.residency import store_descriptions
from telephony.web.routes import USER, Handler, Route

DETAILS_MAX_CHARS = 2000  # the migration's CHECK says the same


class PrivacyRequestCreate(Body):
    kind: Literal["access", "rectification", "erasure", "restriction"]
    details: Annotated[str, free(DETAILS_MAX_CHARS)] = ""


class PrivacyResolution(Body):
    resolution: Annotated[str, trimmed(DETAILS_MAX_CHARS)]


def _now() -> datetime:
    return datetime.now(UTC)


def render_request(r: PrivacyRequest) -> dict[str, Any]:
    """The customer's view: everything, including their own text."""
    return {
        "id": r.id,
        "user_id": r.user_id,
        "kind": r.kind.value,
        "status": r.status.value,
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
        "kind": r.kind.value,
        "status": r.status.value,
        "received_at": iso(r.received_at),
        "due_at": iso(r.due_at),
        "completed_at": iso(r.completed_at),
        "overdue": is_overdue(r.status, r.due_at, now),
        "resolution": r.resolution,
    }


def _by_receipt(r: PrivacyRequest) -> str:
    return keyset_cursor(r.received_at, r.id)


# -- customers -------------------------------------------------------------------------


async def export_me(request: web.Request) -> web.Response:
    principal = await require_customer_user(request)
    document = await access_copy.export_subject(
        request.app[POOL],
        principal,
        region=request.app[SETTINGS].data_region,  # the one database's
        stores=store_descriptions(request.app),
        now=_now(),
    )
    return web.json_response(
        document, headers={"Content-Disposition": 'attachment; filename="personal-data.json"'}
    )


async def file_privacy_request(request: web.Request) -> web.Response:
    principal = await require_customer_user(request)
    body = await read_body(request, PrivacyRequestCreate)
    created = await privacy.file_request(
        request.app[POOL], principal, kind=RequestKind(body.kind), details=body.details, now=_now()
    )
    return web.json_response(render_request(created), status=201)


async def list_privacy_requests(request: web.Request) -> web.Response:
    principal = await require_customer_user(request)
    paging = page(read_query(request, KEYSET_PAGING))
    found = await privacy.list_requests(
        request.app[POOL], principal, paging.after, paging.limit + 1
    )
    return web.json_response(page_of(found, paging, render_request, _by_receipt))


async def get_privacy_request(request: web.Request) -> web.Response:
    principal = await require_customer_user(request)
    found = await privacy.get_request(request.app[POOL], principal, path_id(request))
    return web.json_response(render_request(found))


# -- support ---------------------------------------------------------------------------

_QUEUE_QUERY = (
    Query(
        "overdue",
        "true: only those past due_at",
        {"type": "string", "enum": ["true", "false"]},
        one_of(("true", "false")),
    ),
    *KEYSET_PAGING,
)


async def support_list_privacy_requests(request: web.Request) -> web.Response:
    await require_staff(request, StaffRole.SUPPORT)
    values = read_query(request, _QUEUE_QUERY)
    paging = page(values)
    now = _now()
    found = await privacy.list_open(
        request.app[POOL],
        overdue=values.get("overdue") == "true",
        now=now,
        after=paging.after,
        limit=paging.limit + 1,
    )
    return web.json_response(
        page_of(
            found,
            paging,
            lambda r: render_for_support(r, now),
            lambda r: keyset_cursor(r.due_at, r.id),
        )
    )


async def support_start_privacy_request(request: web.Request) -> web.Response:
    staff = await require_staff(request, StaffRole.SUPPORT)
    now = _now()
    found = await privacy.start_request(
        request.app[POOL], request.app[KEYS], staff, path_id(request), now
    )
    return web.json_response(render_for_support(found, now))


Close = Callable[[web.Application, StaffPrincipal, str, str, datetime], Awaitable[PrivacyRequest]]


def _close(use_case: Close, name: str) -> Handler:
    """Support closes a request with a resolution: by executing it, or by rejecting it."""

    async def handler(request: web.Request) -> web.Response:
        staff = await require_staff(request, StaffRole.SUPPORT)
        request_id = path_id(request)
        body = await read_body(request, PrivacyResolution)
        now = _now()
        found = await use_case(request.app, staff, request_id, body.resolution, now)
        return web.json_response(render_for_support(found, now))

    handler.__name__ = name
    return handler


async def _complete(
    app: web.Application, staff: StaffPrincipal, request_id: str, resolution: str, now: datetime
) -> PrivacyRequest:
    """An erasure is journalled beside the backups (S8), so the journal goes along."""
    return await privacy.complete_request(
        app[POOL], app[KEYS], staff, request_id, resolution, now, journal=app[JOURNAL]
    )


async def _reject(
    app: web.Application, staff: StaffPrincipal, request_id: str, resolution: str, now: datetime
) -> PrivacyRequest:
    return await privacy.reject_request(app[POOL], app[KEYS], staff, request_id, resolution, now)


support_complete_privacy_request = _close(_complete, "support_complete")
support_reject_privacy_request = _close(_reject, "support_reject")


ROUTES = [
    Route(
        "GET",
        "/v1/me/export",
        export_me,
        "A machine-readable copy of your personal data, by resource and storage location (D1)",
        USER,
        None,
        {200: "the access copy"},
        "privacy",
    ),
    Route(
        "POST",
        "/v1/privacy-requests",
        file_privacy_request,
        "Ask for access, rectification, erasure or restriction; due in 30 days (D2, D3)",
        USER,
        PrivacyRequestCreate,
        {201: "request received", 409: "erasure-requires-termination"},
        "privacy",
    ),
    Route(
        "GET",
        "/v1/privacy-requests",
        list_privacy_requests,
        "Your privacy requests (owners: the account's)",
        USER,
        None,
        {200: "privacy requests"},
        "privacy",
        query=KEYSET_PAGING,
    ),
    Route(
        "GET",
        "/v1/privacy-requests/{id}",
        get_privacy_request,
        "One privacy request",
        USER,
        None,
        {200: "privacy request"},
        "privacy",
    ),
    Route(
        "GET",
        "/v1/support/privacy-requests",
        support_list_privacy_requests,
        "Open privacy requests of every account, nearest deadline first (D3); no free text (S5)",
        "support",
        None,
        {200: "privacy requests"},
        "support",
        query=_QUEUE_QUERY,
    ),
    Route(
        "POST",
        "/v1/support/privacy-requests/{id}/start",
        support_start_privacy_request,
        "Mark a privacy request in progress",
        "support",
        None,
        {200: "privacy request", 409: "invalid-state"},
        "support",
    ),
    Route(
        "POST",
        "/v1/support/privacy-requests/{id}/complete",
        support_complete_privacy_request,
        "Execute and close a privacy request (erasure, restriction) (D2)",
        "support",
        PrivacyResolution,
        {200: "privacy request", 409: "invalid-state or erasure-requires-termination"},
        "support",
    ),
    Route(
        "POST",
        "/v1/support/privacy-requests/{id}/reject",
        support_reject_privacy_request,
        "Close a privacy request without executing it, with the reason",
        "support",
        PrivacyResolution,
        {200: "privacy request", 409: "invalid-state"},
        "support",
    ),
]
