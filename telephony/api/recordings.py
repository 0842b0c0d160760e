"""The recording gate and recording metadata (API.md "Recordings")."""

from __future__ import annotations

from typing import Any, Literal

from aiohttp import web

from storage.recordings import Recording
from telephony import sessions
from telephony.api.auth import require_scope
from telephony.api.spec import Body, Route, iso, page_of, read_body, read_page
from telephony.appkeys import MASTER_KEYS, POOL
from telephony.roles import Scope


class RecordingCreate(Body):
    channels: Literal["dual", "mono"] = "dual"
    pause_behavior: Literal["skip", "silence"] = "skip"


def duration_ms(rec: Recording) -> int:
    """Time covered by the segments so far (the recorder will count audio instead)."""
    total = 0.0
    for seg in rec.segments:
        if seg.ended_at is not None:
            total += (seg.ended_at - seg.started_at).total_seconds()
    return round(total * 1000)


def render_recording(rec: Recording) -> dict[str, Any]:
    return {
        "id": rec.id,
        "call_id": rec.call_id,
        "status": rec.status,
        "pause_reason": rec.pause_reason,
        "stop_reason": rec.stop_reason,
        "channels": rec.channels,
        "pause_behavior": rec.pause_behavior,
        "started_at": iso(rec.started_at),
        "ended_at": iso(rec.ended_at),
        "duration_ms": duration_ms(rec),
        "size_bytes": rec.size_bytes,
        "started_by": {"type": rec.started_by_type, "id": rec.started_by_id},
        "segments": [
            {"started_at": iso(s.started_at), "ended_at": iso(s.ended_at), "ended_by": s.ended_by}
            for s in rec.segments
        ],
    }


async def start_recording(request: web.Request) -> web.Response:
    principal = await require_scope(request, Scope.RECORDINGS_WRITE)
    body = await read_body(request, RecordingCreate)
    rec = await sessions.start_recording(
        request.app[POOL],
        principal,
        request.match_info["id"],
        channels=body.channels,
        pause_behavior=body.pause_behavior,
        master=request.app[MASTER_KEYS],
    )
    return web.json_response(render_recording(rec), status=201)


def _action(action: str):
    async def handler(request: web.Request) -> web.Response:
        principal = await require_scope(request, Scope.RECORDINGS_WRITE)
        rec = await sessions.change_recording(
            request.app[POOL], principal, request.match_info["id"], action
        )
        return web.json_response(render_recording(rec))

    handler.__name__ = f"{action}_recording"
    return handler


async def list_recordings(request: web.Request) -> web.Response:
    principal = await require_scope(request, Scope.RECORDINGS_READ)
    page = read_page(request)
    recs = await sessions.list_recordings(
        request.app[POOL],
        principal.account_id or "",
        page.after,
        page.limit + 1,
        call_id=request.query.get("call_id"),
    )
    return web.json_response(
        page_of(recs, page, render_recording, cursor_of=lambda r: (r.started_at, r.id))
    )


async def get_recording(request: web.Request) -> web.Response:
    principal = await require_scope(request, Scope.RECORDINGS_READ)
    rec = await sessions.get_recording(
        request.app[POOL], principal.account_id or "", request.match_info["id"]
    )
    return web.json_response(render_recording(rec))


_REFUSALS = {
    201: "recording started",
    404: "not-found",
    409: "consent-required (with `missing`), call-not-active, recording-in-progress, "
    "processing-restricted",
}

ROUTES = [
    Route(
        "POST",
        "/v1/calls/{id}/recordings",
        start_recording,
        "Start recording: only by this explicit call, only with every consent (R1, R2)",
        "recordings:write",
        RecordingCreate,
        _REFUSALS,
        "recordings",
    ),
    Route(
        "POST",
        "/v1/recordings/{id}/pause",
        _action("pause"),
        "Pause a recording",
        "recordings:write",
        None,
        {200: "recording", 409: "invalid-state"},
        "recordings",
    ),
    Route(
        "POST",
        "/v1/recordings/{id}/resume",
        _action("resume"),
        "Resume a paused recording; consent is checked again",
        "recordings:write",
        None,
        {200: "recording", 409: "consent-required, invalid-state"},
        "recordings",
    ),
    Route(
        "POST",
        "/v1/recordings/{id}/stop",
        _action("stop"),
        "Stop a recording for good",
        "recordings:write",
        None,
        {200: "recording", 409: "invalid-state"},
        "recordings",
    ),
    Route(
        "GET",
        "/v1/recordings",
        list_recordings,
        "List recordings",
        "recordings:read",
        None,
        {200: "recordings"},
        "recordings",
        query=(("limit", "1 to 200"), ("cursor", "paging cursor"), ("call_id", "one call's")),
    ),
    Route(
        "GET",
        "/v1/recordings/{id}",
        get_recording,
        "A recording with its coverage map",
        "recordings:read",
        None,
        {200: "recording", 404: "not-found"},
        "recordings",
    ),
]
