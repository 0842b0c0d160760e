"""The recording gate, recording metadata and the audio itself (API.md "Recordings")."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any, Literal

from aiohttp import web

from storage.recordings import Recording
from telephony.domain.errors import IntegrityFailure
from telephony.domain.recordings import Action, Channels, PauseBehavior
from telephony.domain.roles import CustomerPrincipal, Scope
from telephony.media.containers import CONTAINERS
from telephony.media.wav import OUTPUT_ENCODINGS
from telephony.usecases import playback, recording_control, retention, sealed
from telephony.web.appkeys import BLOBS, JOURNAL, KEYS, POOL
from telephony.web.auth import client_of, require_scope
from telephony.web.capacity import require_room
from telephony.web.filters import RECORDING_FILTERS, recording_filter
from telephony.web.inputs import (
    KEYSET_PAGING,
    Body,
    Query,
    iso,
    keyset_cursor,
    one_of,
    page,
    page_of,
    path_id,
    read_body,
    read_query,
)
from telephony.web.ranges import parse_range
from telephony.web.routes import Handler, Route


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
        "status": rec.status.value,
        "pause_reason": rec.pause_reason.value if rec.pause_reason else None,
        "stop_reason": rec.stop_reason.value if rec.stop_reason else None,
        "channels": rec.channels.value,
        "pause_behavior": rec.pause_behavior.value,
        "started_at": iso(rec.started_at),
        "ended_at": iso(rec.ended_at),
        "duration_ms": duration_ms(rec),
        "size_bytes": rec.size_bytes,
        "started_by": {"type": rec.started_by.kind.value, "id": rec.started_by.id},
        "source": rec.source,  # how its audio came: websocket, sip, siprec; None before any
        # Sealed to this customer key (its download is the sealed container); None: the
        # service's keys.
        "encryption_key_id": rec.customer_key_id,
        "segments": [
            {
                "started_at": iso(s.started_at),
                "ended_at": iso(s.ended_at),
                "ended_by": s.ended_by.value if s.ended_by else None,
            }
            for s in rec.segments
        ],
        # Audio that could not be kept, and why: "overload" (the node fell behind),
        # "stream-format-changed" (a later stream of another codec could not continue it).
        "gaps": [{key: g.get(key) for key in ("at_ms", "duration_ms", "reason")} for g in rec.gaps],
    }


async def start_recording(request: web.Request) -> web.Response:
    principal = await require_scope(request, Scope.RECORDINGS_WRITE)
    call_id = path_id(request)
    body = await read_body(request, RecordingCreate)
    await require_room(request.app)  # S7: 503 storage-low under the reserve
    rec = await recording_control.start_recording(
        request.app[POOL],
        principal,
        call_id,
        channels=Channels(body.channels),
        pause_behavior=PauseBehavior(body.pause_behavior),
        keys=request.app[KEYS],
    )
    return web.json_response(render_recording(rec), status=201)


def _action(action: Action) -> Handler:
    async def handler(request: web.Request) -> web.Response:
        principal = await require_scope(request, Scope.RECORDINGS_WRITE)
        rec = await recording_control.change_recording(
            request.app[POOL], principal, path_id(request), action
        )
        return web.json_response(render_recording(rec))

    handler.__name__ = f"{action.value}_recording"
    return handler


_LIST_QUERY = (
    *KEYSET_PAGING,
    *RECORDING_FILTERS,
)


async def list_recordings(request: web.Request) -> web.Response:
    principal = await require_scope(request, Scope.RECORDINGS_READ)
    values = read_query(request, _LIST_QUERY)
    paging = page(values)
    recs = await recording_control.list_recordings(
        request.app[POOL],
        principal.account_id,
        paging.after,
        paging.limit + 1,
        recording_filter(values),
    )
    return web.json_response(
        page_of(recs, paging, render_recording, lambda r: keyset_cursor(r.started_at, r.id))
    )


async def get_recording(request: web.Request) -> web.Response:
    principal = await require_scope(request, Scope.RECORDINGS_READ)
    rec = await recording_control.get_recording(
        request.app[POOL], principal.account_id, path_id(request)
    )
    return web.json_response(render_recording(rec))


# WAV (pcm16, mulaw, alaw), or a packet codec's own file for a recording kept in it.
AUDIO_ENCODINGS = (*OUTPUT_ENCODINGS, *CONTAINERS)
_AUDIO_QUERY = (
    Query(
        "encoding",
        "pcm16 (default, for browsers), mulaw or alaw (WAV); opus (Ogg), amrwb (.amr) or"
        " g722 (WAV) for a recording stored in that codec, its packets as received",
        {"type": "string", "enum": list(AUDIO_ENCODINGS)},
        one_of(AUDIO_ENCODINGS),
    ),
    Query(
        "format",
        "wav (default) or mp3 (32 kbit/s per channel, for parity with other providers; no"
        " Range; `encoding` is for WAV and is ignored with mp3)",
        {"type": "string", "enum": ["wav", "mp3"]},
        one_of(("wav", "mp3")),
    ),
)


async def download_audio(request: web.Request) -> web.StreamResponse:
    """WAV decrypted as it streams (R4): constant memory, Range and ETag so players can seek.

    A damage found before the first byte answers 500 integrity-error; one found
    later aborts the connection short of its Content-Length, so a client can
    never mistake altered or truncated audio for the recording.
    """
    principal = await require_scope(request, Scope.RECORDINGS_READ)
    return await send_audio(request, principal)


async def send_audio(request: web.Request, principal: CustomerPrincipal) -> web.StreamResponse:
    """The audio route's answer for a principal however authenticated: the API's bearer
    route and the portal's cookie twin send the same bytes, with the same audit."""
    recording_id = path_id(request)
    query = read_query(request, _AUDIO_QUERY)
    mp3 = query.get("format") == "mp3"
    # MP3 is encoded from 16-bit PCM whatever `encoding` says: the schema cannot make the
    # two exclusive, and a request it admits is never refused (the fuzzer checks).
    encoding = "pcm16" if mp3 else query.get("encoding", "pcm16")
    app = request.app
    async with _reporting_damage(request, principal, recording_id):
        container = await sealed.open_sealed(
            app[POOL], app[BLOBS], app[KEYS], recording_id, principal.account_id
        )
        if container is not None:
            return await _send_sealed(request, principal, container)
        found = await playback.open_recording(
            app[POOL], app[BLOBS], app[KEYS], recording_id, principal.account_id, output=encoding
        )
    if mp3:
        headers = {
            "Cache-Control": "private, no-cache",
            "Content-Disposition": f'inline; filename="{recording_id}.mp3"',
        }
        pieces = playback.iter_mp3(found, app[BLOBS])
        return await _send_stream(request, principal, found, headers, pieces, "audio/mpeg", "mp3")
    size, etag = found.size_bytes, found.etag
    headers = {
        "ETag": etag,
        "Accept-Ranges": "none" if found.container else "bytes",
        "Cache-Control": "private, no-cache",  # personal data: no shared caches
        "Content-Disposition": f'inline; filename="{recording_id}.{found.extension}"',
    }
    if etag in _etags(request.headers.get("If-None-Match")):
        return web.Response(status=304, headers=headers)
    if found.container:
        pieces = playback.iter_container(found, request.app[BLOBS])
        return await _send_stream(request, principal, found, headers, pieces, found.media_type)
    byte_range = None
    if request.headers.get("If-Range", etag) == etag:
        byte_range = parse_range(request.headers.get("Range"), size)
    start, end = byte_range or (0, size)
    pieces = playback.iter_wav(found, app[BLOBS], start, end)
    async with _reporting_damage(request, principal, recording_id):
        first = await anext(pieces)
    await playback.audit_download(
        app[POOL],
        found.recording,
        principal.actor,
        encoding=found.layout.output,
        address=client_of(request).address,
        byte_range=byte_range,
        now=datetime.now(UTC),
    )
    return await _send_ranged(
        request, principal, headers, (start, end, size), byte_range, "audio/wav", first, pieces
    )


async def _send_sealed(
    request: web.Request, principal: CustomerPrincipal, container: sealed.SealedDownload
) -> web.StreamResponse:
    """The sealed container (SEALED-FORMAT.md), with Range and a strong ETag like WAV.
    `encoding` and `format` do not apply: the service cannot open what it sends."""
    recording_id = container.recording.id
    size, etag = container.size_bytes, container.etag
    headers = {
        "ETag": etag,
        "Accept-Ranges": "bytes",
        "Cache-Control": "private, no-cache",
        "Content-Disposition": f'attachment; filename="{recording_id}.sealed"',
    }
    if etag in _etags(request.headers.get("If-None-Match")):
        return web.Response(status=304, headers=headers)
    byte_range = None
    if request.headers.get("If-Range", etag) == etag:
        byte_range = parse_range(request.headers.get("Range"), size)
    start, end = byte_range or (0, size)
    pieces = sealed.iter_sealed(container, request.app[BLOBS], start, end)
    async with _reporting_damage(request, principal, recording_id):
        first = await anext(pieces, b"")
    await playback.audit_download(
        request.app[POOL],
        container.recording,
        principal.actor,
        encoding="sealed",
        address=client_of(request).address,
        byte_range=byte_range,
        now=datetime.now(UTC),
    )
    return await _send_ranged(
        request,
        principal,
        headers,
        (start, end, size),
        byte_range,
        sealed.MEDIA_TYPE,
        first,
        pieces,
    )


async def _send_ranged(
    request: web.Request,
    principal: CustomerPrincipal,
    headers: dict[str, str],
    span: tuple[int, int, int],
    byte_range: tuple[int, int] | None,
    media_type: str,
    first: bytes,
    pieces: AsyncIterator[bytes],
) -> web.StreamResponse:
    """A body of known length, whole or one range of it, its first piece already read."""
    start, end, size = span
    recording_id = path_id(request)
    if byte_range:
        headers["Content-Range"] = f"bytes {start}-{end - 1}/{size}"
    response = web.StreamResponse(status=206 if byte_range else 200, headers=headers)
    response.content_type = media_type
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


async def _send_stream(
    request: web.Request,
    principal: CustomerPrincipal,
    found: playback.Playback,
    headers: dict[str, str],
    pieces: AsyncIterator[bytes],
    media_type: str,
    delivered_as: str | None = None,
) -> web.StreamResponse:
    """A file whose length is known only once written (a codec's own file, MP3): no Range."""
    recording_id = found.recording.id
    async with _reporting_damage(request, principal, recording_id):
        first = await anext(pieces)
    await playback.audit_download(
        request.app[POOL],
        found.recording,
        principal.actor,
        encoding=delivered_as or found.container or found.layout.output,
        address=client_of(request).address,
        byte_range=None,
        now=datetime.now(UTC),
    )
    response = web.StreamResponse(status=200, headers=headers)
    response.content_type = media_type
    await response.prepare(request)
    await response.write(first)
    try:
        async with _reporting_damage(request, principal, recording_id):
            async for piece in pieces:
                await response.write(piece)
    except IntegrityFailure:
        if request.transport is not None:
            request.transport.abort()
        return response
    await response.write_eof()
    return response


@contextlib.asynccontextmanager
async def _reporting_damage(
    request: web.Request, principal: CustomerPrincipal, recording_id: str
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
        path_id(request),
        account_id=principal.account_id,
        actor=principal.actor,
        now=datetime.now(UTC),
        journal=request.app[JOURNAL],
    )
    return web.Response(status=204)


ROUTES = [
    Route(
        "POST",
        "/v1/calls/{id}/recordings",
        start_recording,
        "Start recording: only by this explicit call, only with every consent (R1, R2)",
        "recordings:write",
        RecordingCreate,
        {
            201: "recording started",
            409: "consent-required (with `missing`), call-not-active, recording-in-progress, "
            "processing-restricted, customer-key-required (the account seals to its own key and"
            " none is usable: never the service's key instead)",
            503: "storage-low: free space under the reserve (S7)",
        },
        "recordings",
    ),
    Route(
        "POST",
        "/v1/recordings/{id}/pause",
        _action(Action.PAUSE),
        "Pause a recording",
        "recordings:write",
        None,
        {200: "recording", 409: "invalid-state"},
        "recordings",
    ),
    Route(
        "POST",
        "/v1/recordings/{id}/resume",
        _action(Action.RESUME),
        "Resume a paused recording; consent is checked again",
        "recordings:write",
        None,
        {200: "recording", 409: "consent-required, processing-restricted, invalid-state"},
        "recordings",
    ),
    Route(
        "POST",
        "/v1/recordings/{id}/stop",
        _action(Action.STOP),
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
        query=_LIST_QUERY,
    ),
    Route(
        "GET",
        "/v1/recordings/{id}",
        get_recording,
        "A recording with its coverage map",
        "recordings:read",
        None,
        {200: "recording"},
        "recordings",
    ),
    Route(
        "GET",
        "/v1/recordings/{id}/audio",
        download_audio,
        "The recording as WAV, decrypted as it streams; Range and ETag supported (R4). A"
        " recording sealed to a customer key is its sealed container (SEALED-FORMAT.md)",
        "recordings:read",
        None,
        {
            200: "audio/wav: two channels for dual (0 counterparts, 1 customer), one for mono;"
            " application/vnd.telephony.sealed+octet-stream for a recording sealed to the"
            " account's own key (`encoding` and `format` do not apply to it)",
            206: "the requested byte range",
            304: "unchanged (If-None-Match)",
            404: "not-found (also after deletion)",
            409: "recording-in-progress: the recording has not ended yet",
            416: "range-not-satisfiable, with Content-Range: bytes */size",
            500: "integrity-error: stored audio failed its check; never altered audio",
        },
        "recordings",
        query=_AUDIO_QUERY,
        produces=("audio/wav", sealed.MEDIA_TYPE),
    ),
    Route(
        "DELETE",
        "/v1/recordings/{id}",
        delete_recording,
        "Delete a recording: its key is destroyed, then its audio (R3); idempotent",
        "recordings:write",
        None,
        {204: "deleted (or already deleted)", 409: "recording-in-progress"},
        "recordings",
    ),
]
