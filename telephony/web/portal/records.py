"""Customer pages for calls and recordings: lists with the API's filters, a call with its
consent history, a recording with its player, timeline, downloads and deletion.

Lists are newest first, a page at a time by keyset (the cursor is the last row's
(time, id)), and each page costs a fixed number of queries whatever its length:
the calls' counterparts and consent come in one query (`calls.views`).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar
from urllib.parse import urlencode

from aiohttp import web
from multidict import MultiDict

from storage.recordings import Recording
from telephony.domain.errors import Forbidden, InvalidInput
from telephony.domain.roles import CustomerPrincipal, Scope
from telephony.i18n import N_
from telephony.media.containers import CONTAINERS
from telephony.usecases import calls, customer_keys, receipts, recording_control, retention
from telephony.web.api.recordings import duration_ms, send_audio
from telephony.web.appkeys import BLOBS, JOURNAL, POOL
from telephony.web.filters import CALL_FILTERS, RECORDING_FILTERS, call_filter, recording_filter
from telephony.web.inputs import (
    KEYSET_PAGING,
    keyset_cursor,
    path_id,
    read_values,
)
from telephony.web.inputs import (
    page as paging_of,
)
from telephony.web.portal.forms import posted
from telephony.web.portal.render import page
from telephony.web.portal.session import require_customer
from telephony.web.portal.timeline import WIDTH, layout

PAGE_SIZE = 25
FILTER_NAMES = ("number", "status", "from", "to", "has_recording")


def _now() -> datetime:
    return datetime.now(UTC)


def _reader(principal: CustomerPrincipal) -> CustomerPrincipal:
    if not principal.may(Scope.RECORDINGS_READ):
        raise Forbidden("your role does not read recordings")
    return principal


def _day(raw: str, field: str, end: bool = False) -> str:
    """A date from the form's date field (2026-12-01) as the API's RFC 3339 instant."""
    try:
        day = datetime.strptime(raw, "%Y-%m-%d").replace(tzinfo=UTC)
    except ValueError:
        raise InvalidInput(
            f"{field}: a date", errors=[{"field": field, "message": "a date (YYYY-MM-DD)"}]
        ) from None
    if end:
        day += timedelta(days=1)
    return day.strftime("%Y-%m-%dT%H:%M:%SZ")


class _FilterQuery:
    """The form's fields as the API's query: the same parameters, parsed by the same code."""

    def __init__(self, request: web.Request, time_names: tuple[str, str]) -> None:
        self.form = {k: (request.query.get(k) or "").strip() for k in FILTER_NAMES}
        query: dict[str, str] = {}
        if self.form["number"]:
            query["number"] = self.form["number"].replace(" ", "")
        if self.form["status"]:
            query["status"] = self.form["status"]
        if self.form["from"]:
            query[time_names[0]] = _day(self.form["from"], "from")
        if self.form["to"]:
            query[time_names[1]] = _day(self.form["to"], "to", end=True)
        if self.form["has_recording"]:
            query["has_recording"] = self.form["has_recording"]
        for name in ("cursor", "call_id"):
            if request.query.get(name):
                query[name] = request.query[name]
        self.query = query
        self.link_base = {k: v for k, v in self.form.items() if v}

    def next_url(self, path: str, cursor: str | None) -> str | None:
        if cursor is None:
            return None
        return f"{path}?{urlencode({**self.link_base, 'cursor': cursor})}"


def _read(filters: _FilterQuery, params: tuple[Any, ...]) -> tuple[dict[str, Any], dict[str, str]]:
    """The translated query read through the API's own declarations: (values, errors)."""
    try:
        return read_values(MultiDict(filters.query), (*KEYSET_PAGING, *params)), {}
    except InvalidInput as exc:
        return {}, {e["field"]: e["message"] for e in exc.errors}


Item = TypeVar("Item")


async def _one_page(
    values: dict[str, Any],
    fetch: Callable[[tuple[datetime, str] | None, int], Awaitable[list[Item]]],
    position: Callable[[Item], tuple[datetime, str]],
) -> tuple[list[Item], str | None]:
    """A page of PAGE_SIZE and the cursor after it (None on the last): one row more is asked
    for, so a last page costs no further request."""
    paging = paging_of({**values, "limit": PAGE_SIZE})
    found = await fetch(paging.after, PAGE_SIZE + 1)
    more = len(found) > PAGE_SIZE
    found = found[:PAGE_SIZE]
    return found, keyset_cursor(*position(found[-1])) if more else None


async def calls_page(request: web.Request) -> web.Response:
    principal = await require_customer(request)
    filters = _FilterQuery(request, ("created_after", "created_before"))
    values, errors = _read(filters, CALL_FILTERS)

    async def fetch(after: tuple[datetime, str] | None, limit: int) -> list[calls.CallView]:
        where = call_filter(values)
        return await calls.list_calls(
            request.app[POOL], principal.account_id, after, limit, where, newest_first=True
        )

    views, cursor = await _one_page(values, fetch, lambda v: (v.call.created_at, v.call.id))
    context = {
        "views": views,
        "form": filters.form,
        "errors": errors,
        "next_url": filters.next_url("/calls", cursor),
    }
    return page(request, "calls.html", context, status=422 if errors else 200)


async def call_page(request: web.Request) -> web.Response:
    principal = await require_customer(request)
    view = await calls.get_call(request.app[POOL], principal.account_id, path_id(request))
    labels = {cp.counterpart.id: cp.counterpart.label for cp in view.counterparts}
    history = sorted(
        (event for cp in view.counterparts for event in cp.events), key=lambda e: e.seq
    )
    may_read = principal.may(Scope.RECORDINGS_READ)
    shredded = (
        await receipts.deleted_recordings(request.app[POOL], principal, view.call.id)
        if may_read
        else []
    )
    return page(
        request,
        "call.html",
        {
            "view": view,
            "history": history,
            "labels": labels,
            "may_read": may_read,
            "shredded": shredded,
            "deleted": bool(request.query.get("deleted")),
            "duration_ms": duration_ms,
        },
    )


async def recordings_page(request: web.Request) -> web.Response:
    principal = _reader(await require_customer(request))
    filters = _FilterQuery(request, ("started_after", "started_before"))
    values, errors = _read(filters, RECORDING_FILTERS)

    async def fetch(after: tuple[datetime, str] | None, limit: int) -> list[Recording]:
        where = recording_filter(values)
        return await recording_control.list_recordings(
            request.app[POOL], principal.account_id, after, limit, where, newest_first=True
        )

    found, cursor = await _one_page(values, fetch, lambda r: (r.started_at, r.id))
    context = {
        "recordings": found,
        "form": filters.form,
        "errors": errors,
        "next_url": filters.next_url("/recordings", cursor),
        "duration_ms": duration_ms,
    }
    return page(request, "recordings.html", context, status=422 if errors else 200)


STORED_CODEC = {
    "mulaw": ("mulaw", N_("G.711 µ-law WAV, as received")),
    "alaw": ("alaw", N_("G.711 A-law WAV, as received")),
    "opus": ("opus", N_("Opus (Ogg), as received")),
    "amrwb": ("amrwb", N_("AMR-WB (.amr), as received")),
    "g722": ("g722", N_("G.722 WAV, as received")),
}


async def recording_page(request: web.Request) -> web.Response:
    principal = _reader(await require_customer(request))
    rec = await recording_control.get_recording(
        request.app[POOL], principal.account_id, path_id(request)
    )
    view = await calls.get_call(request.app[POOL], principal.account_id, rec.call_id)
    stored = await recording_control.stored_encoding(request.app[POOL], rec.id)
    sealed_to = None
    if rec.customer_key_id:
        sealed_to = await customer_keys.sealed_to(request.app[POOL], rec)
    return page(
        request,
        "recording.html",
        {
            "rec": rec,
            "call": view.call,
            "stretches": layout(rec, _now()),
            "width": WIDTH,
            "duration_ms": duration_ms(rec),
            "stored": STORED_CODEC.get(stored or ""),
            "playable": rec.status.value in ("completed", "stopped", "interrupted"),
            "containers": CONTAINERS,
            "sealed_to": sealed_to,
        },
    )


async def recording_audio(request: web.Request) -> web.StreamResponse:
    """The portal's twin of GET /v1/recordings/{id}/audio: same bytes, Range and audit."""
    principal = _reader(await require_customer(request))
    return await send_audio(request, principal)


async def delete_confirm(request: web.Request) -> web.Response:
    principal = await require_customer(request)
    if not principal.may(Scope.RECORDINGS_WRITE):
        raise Forbidden("your role does not delete recordings")
    rec = await recording_control.get_recording(
        request.app[POOL], principal.account_id, path_id(request)
    )
    return page(request, "recording_delete.html", {"rec": rec, "duration_ms": duration_ms(rec)})


async def delete(request: web.Request) -> web.StreamResponse:
    await posted(request)
    principal = await require_customer(request)
    if not principal.may(Scope.RECORDINGS_WRITE):
        raise Forbidden("your role does not delete recordings")
    recording_id = path_id(request)
    rec = await recording_control.get_recording(
        request.app[POOL], principal.account_id, recording_id
    )
    await retention.delete_recording(
        request.app[POOL],
        request.app[BLOBS],
        recording_id,
        account_id=principal.account_id,
        actor=principal.actor,
        now=_now(),
        journal=request.app[JOURNAL],
    )
    raise web.HTTPSeeOther(f"/calls/{rec.call_id}?deleted={recording_id}")


ROUTES = [
    ("GET", "/calls", calls_page),
    ("GET", "/calls/{id}", call_page),
    ("GET", "/recordings", recordings_page),
    ("GET", "/recordings/{id}", recording_page),
    ("GET", "/recordings/{id}/audio", recording_audio),
    ("GET", "/recordings/{id}/delete", delete_confirm),
    ("POST", "/recordings/{id}/delete", delete),
]
