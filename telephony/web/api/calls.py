"""Calls, counterparts and consent (API.md "Calls and consent")."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from aiohttp import web
from pydantic import Field

from storage.consents import ConsentEvent
from telephony.domain.calls import Direction
from telephony.domain.consent import Decision, Method
from telephony.domain.roles import Scope
from telephony.usecases import calls, consent
from telephony.usecases.calls import CallView
from telephony.web.appkeys import POOL, SETTINGS, SIP
from telephony.web.auth import require_scope
from telephony.web.filters import CALL_FILTERS, call_filter
from telephony.web.inputs import (
    KEYSET_PAGING,
    Body,
    Id,
    PastTimestamp,
    Phone,
    free,
    iso,
    keyset_cursor,
    page,
    page_of,
    path_id,
    read_body,
    read_query,
    trimmed,
)
from telephony.web.routes import Route

Label = Annotated[str, trimmed(100)]
Evidence = Annotated[str, free(2000)]


class CounterpartBody(Body):
    label: Label
    number: Phone


class CallCreate(Body):
    direction: Literal["inbound", "outbound"]
    from_: Phone = Field(alias="from")
    to: Phone
    counterparts: Annotated[list[CounterpartBody], Field(min_length=1, max_length=20)]


class ConsentCreate(Body):
    counterpart_id: Id
    decision: Literal["granted", "refused", "revoked"]
    method: Literal["announcement", "dtmf", "verbal", "written", "prior_agreement"]
    evidence: Evidence | None = None
    obtained_at: PastTimestamp | None = None


def render_event(e: ConsentEvent) -> dict[str, Any]:
    return {
        "id": e.id,
        "call_id": e.call_id,
        "counterpart_id": e.counterpart_id,
        "decision": e.decision.value,
        "method": e.method.value,
        "evidence": e.evidence,
        "obtained_at": iso(e.obtained_at),
        "recorded_at": iso(e.recorded_at),
        "recorded_by": {"type": e.recorded_by.kind.value, "id": e.recorded_by.id},
    }


def render_call(view: CallView) -> dict[str, Any]:
    call = view.call
    return {
        "id": call.id,
        "direction": call.direction.value,
        "from": call.from_number,
        "to": call.to_number,
        "status": call.status.value,
        "created_at": iso(call.created_at),
        "ended_at": iso(call.ended_at),
        "counterparts": [
            {
                "id": v.counterpart.id,
                "label": v.counterpart.label,
                "number": v.counterpart.number,
                "consent": v.consent.value,
                "added_at": iso(v.counterpart.added_at),
            }
            for v in view.counterparts
        ],
        "recordings": [{"id": r.id, "status": r.status.value} for r in view.recordings],
    }


def media_block(request: web.Request, token: str, expires_at: datetime) -> dict[str, Any]:
    base = request.app[SETTINGS].public_url
    if base is None:
        scheme = "wss" if request.secure else "ws"
        base = f"{scheme}://{request.host}"
    else:
        base = base.replace("https://", "wss://").replace("http://", "ws://")
    block = {"url": f"{base}/v1/media/twilio", "token": token, "expires_at": iso(expires_at)}
    address = sip_address(request)
    if address is not None:
        block["sip_uri"] = f"sip:{token}@{address}"
    return block


def sip_address(request: web.Request) -> str | None:
    """host:port of this node's SIP listener, as a URI names it; None without one."""
    if SIP not in request.app:
        return None
    host = request.app[SETTINGS].sip_address or ""
    return f"{f'[{host}]' if ':' in host else host}:{request.app[SIP].port}"


async def create_call(request: web.Request) -> web.Response:
    principal = await require_scope(request, Scope.CALLS)
    body = await read_body(request, CallCreate)
    created = await calls.create_call(
        request.app[POOL],
        principal.account_id,
        principal.actor,
        direction=Direction(body.direction),
        from_number=body.from_,
        to_number=body.to,
        counterparts=[(c.label, c.number) for c in body.counterparts],
        media_token_ttl_s=request.app[SETTINGS].media_token_ttl_s,
    )
    rendered = render_call(created.view)
    rendered["media"] = media_block(
        request, created.media_token, created.view.call.media_token_expires_at
    )
    return web.json_response(rendered, status=201)


LIST_QUERY = (*KEYSET_PAGING, *CALL_FILTERS)


async def list_calls(request: web.Request) -> web.Response:
    principal = await require_scope(request, Scope.CALLS)
    values = read_query(request, LIST_QUERY)
    paging = page(values)
    views = await calls.list_calls(
        request.app[POOL], principal.account_id, paging.after, paging.limit + 1, call_filter(values)
    )
    return web.json_response(
        page_of(views, paging, render_call, lambda v: keyset_cursor(v.call.created_at, v.call.id))
    )


async def get_call(request: web.Request) -> web.Response:
    principal = await require_scope(request, Scope.CALLS)
    view = await calls.get_call(request.app[POOL], principal.account_id, path_id(request))
    return web.json_response(render_call(view))


async def add_counterpart(request: web.Request) -> web.Response:
    principal = await require_scope(request, Scope.CALLS)
    call_id = path_id(request)
    body = await read_body(request, CounterpartBody)
    party = await calls.add_counterpart(
        request.app[POOL],
        principal.account_id,
        principal.actor,
        call_id,
        label=body.label,
        number=body.number,
    )
    return web.json_response(
        {
            "id": party.id,
            "call_id": party.call_id,
            "label": party.label,
            "number": party.number,
            "consent": "pending",
            "added_at": iso(party.added_at),
        },
        status=201,
    )


async def create_consent(request: web.Request) -> web.Response:
    principal = await require_scope(request, Scope.CALLS)
    call_id = path_id(request)
    body = await read_body(request, ConsentCreate)
    event = await consent.record_consent(
        request.app[POOL],
        principal,
        call_id,
        counterpart_id=body.counterpart_id,
        decision=Decision(body.decision),
        method=Method(body.method),
        evidence=body.evidence,
        obtained_at=body.obtained_at,
    )
    return web.json_response(render_event(event), status=201)


async def list_consents(request: web.Request) -> web.Response:
    principal = await require_scope(request, Scope.CALLS)
    events = await consent.list_consents(request.app[POOL], principal.account_id, path_id(request))
    return web.json_response({"items": [render_event(e) for e in events], "next_cursor": None})


async def end_call(request: web.Request) -> web.Response:
    principal = await require_scope(request, Scope.CALLS)
    view = await calls.end_call(request.app[POOL], principal, path_id(request))
    return web.json_response(render_call(view))


ROUTES = [
    Route(
        "POST",
        "/v1/calls",
        create_call,
        "Open a call session",
        "calls",
        CallCreate,
        {201: "call with its media block", 409: "account-terminated"},
        "calls",
    ),
    Route(
        "GET",
        "/v1/calls",
        list_calls,
        "List calls",
        "calls",
        None,
        {200: "calls"},
        "calls",
        query=LIST_QUERY,
    ),
    Route(
        "GET",
        "/v1/calls/{id}",
        get_call,
        "A call with each counterpart's consent",
        "calls",
        None,
        {200: "call"},
        "calls",
    ),
    Route(
        "POST",
        "/v1/calls/{id}/counterparts",
        add_counterpart,
        "Add a counterpart mid-call; a running recording pauses until they consent",
        "calls",
        CounterpartBody,
        {201: "counterpart", 409: "call-not-active"},
        "calls",
    ),
    Route(
        "POST",
        "/v1/calls/{id}/consents",
        create_consent,
        "Record a consent decision; anything but a grant stops a running recording",
        "calls",
        ConsentCreate,
        {
            201: "consent event",
            404: "not-found: no such call, or no such counterpart on it",
            422: "validation-failed: obtained_at is in the future",
        },
        "calls",
    ),
    Route(
        "GET",
        "/v1/calls/{id}/consents",
        list_consents,
        "Consent events, oldest first",
        "calls",
        None,
        {200: "consent events"},
        "calls",
    ),
    Route(
        "POST",
        "/v1/calls/{id}/end",
        end_call,
        "End the call; a running recording completes",
        "calls",
        None,
        {200: "call", 409: "call-not-active"},
        "calls",
    ),
]
