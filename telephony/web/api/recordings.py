"""The recording gate and recording metadata (API.md "Recordings")."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any, Literal

from aiohttp import web

from storage.recordings import Recording
from telephony.domain.errors import IntegrityFailure, InvalidInput
from telephony.domain.roles import Principal, Scope
from telephony.media.wav import OUTPUT_ENCODINGS
from telephony.usecases import playback, retention, sessions
from telephony.web.appkeys import BLOBS, MASTER_KEYS, POOL
from telephony.web.auth import client_of, require_scope
from telephony.web.spec import Body, Route, iso, page_of, read_body, read_page


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


async def download_audio(request: web.Request) -> web.StreamResponse:
    """WAV decrypted as it streams (R4): constant memory, Range and ETag so players can seek.

    A damage found before the first byte answers 500 integrity-error; one found
    later aborts the connection short of its Content-Length, so a client can
    never mistake altered or truncated audio for the recording.
    """
    principal = await require_scope(request, Scope.RECORDINGS_READ)
    encoding = request.query.get("encoding", "pcm16")
    if encoding not in OUTPUT_ENCODINGS:
        raise InvalidInput(
            "unknown encoding",
            errors=[{"field": "encoding", "message": f"one of {', '.join(OUTPUT_ENCODINGS)}"}],
        )
    app, recording_id = request.app, request.match_info["id"]
    async with _reporting_damage(request, principal, recording_id):
        found = await playback.open_recording(
            app[POOL],
            app[BLOBS],
            app[MASTER_KEYS],
            recording_id,
            principal.account_id,
            output=encoding,
        )
    size, etag = found.size_bytes, found.etag
    headers = {
        "ETag": etag,
        "Accept-Ranges": "bytes",
        "Cache-Control": "private, no-cache",  # personal data: no shared caches
        "Content-Disposition": f'inline; filename="{recording_id}.wav"',
    }
    if etag in _etags(request.headers.get("If-None-Match")):
        return web.Response(status=304, headers=headers)
    byte_range = None
    if request.headers.get("If-Range", etag) == etag:
        byte_range = playback.parse_range(request.headers.get("Range"), size)
    start, end = byte_range or (0, size)
    pieces = playback.iter_wav(found, app[BLOBS], start, end)
    async with _reporting_damage(request, principal, recording_id):
        first = await anext(pieces)
    client = client_of(request)
    await playback.audit_download(
        app[POOL],
        found,
        principal.actor,
        address=client.address,
        byte_range=byte_range,
        now=datetime.now(UTC),
    )
    if byte_range:
        headers["Content-Range"] = f"bytes {start}-{end - 1}/{size}"
    response = web.StreamResponse(status=206 if byte_range else 200, headers=headers)
    response.content_type = "audio/wav"
    response.content_length = end - start
    await response.prepare(request)
    await response.write(first)
    try:
        async with _reporting_damage(request, principal, recording_id):
            async for piece in pieces:
                await response.write(piece)
    except IntegrityFailure:
        # Headers are sent: the only honest answer left is to cut the transfer short.
        if request.transport is not None:
            request.transport.abort()
        return response
    await response.write_eof()
    return response


@contextlib.asynccontextmanager
async def _reporting_damage(
    request: web.Request, principal: Principal, recording_id: str
) -> AsyncIterator[None]:
    """An IntegrityFailure passes through, written to the security log on its way (S6)."""
    try:
        yield
    except IntegrityFailure:
        client = client_of(request)
        await playback.report_damage(
            request.app[POOL],
            recording_id,
            principal_id=principal.id,
            address=client.address,
            user_agent=client.user_agent,
            now=datetime.now(UTC),
        )
        raise


def _etags(header: str | None) -> set[str]:
    return {tag.strip().removeprefix("W/") for tag in (header or "").split(",") if tag.strip()}


async def delete_recording(request: web.Request) -> web.Response:
    """R3: the data key is destroyed first, then the blobs; repeating it is harmless."""
    principal = await require_scope(request, Scope.RECORDINGS_WRITE)
    await retention.delete_recording(
        request.app[POOL],
        request.app[BLOBS],
        request.match_info["id"],
        account_id=principal.account_id,
        actor=principal.actor,
        now=datetime.now(UTC),
    )
    return web.Response(status=204)


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
    Route(
        "GET",
        "/v1/recordings/{id}/audio",
        download_audio,
        "The recording as WAV, decrypted as it streams; Range and ETag supported (R4)",
        "recordings:read",
        None,
        {
            200: "audio/wav: two channels for dual (0 counterparts, 1 customer), one for mono",
            206: "the requested byte range",
            304: "unchanged (If-None-Match)",
            404: "not-found (also after deletion)",
            409: "recording-in-progress: the recording has not ended yet",
            416: "range-not-satisfiable, with Content-Range: bytes */size",
            422: "validation-failed: unknown encoding",
            500: "integrity-error: stored audio failed its check; never altered audio",
        },
        "recordings",
        query=(("encoding", "pcm16 (default, for browsers) or mulaw"),),
    ),
    Route(
        "DELETE",
        "/v1/recordings/{id}",
        delete_recording,
        "Delete a recording: its key is destroyed, then its audio (R3); idempotent",
        "recordings:write",
        None,
        {204: "deleted (or already deleted)", 404: "not-found", 409: "recording-in-progress"},
        "recordings",
    ),
]
