"""`GET /v1/media/{dialect}`: live call audio over a WebSocket (API.md "Media streams").

Once upgraded, no middleware can answer: this handler closes the socket with
a code and a reason itself. 1008 for anything about the token or the call
(before any audio is read), 1003/1007 for a malformed frame.

What an unauthenticated socket may do is bounded: before its token is
shown it may send only `connected` and `start` (the dialect's metadata),
at most PRE_AUTH_BYTES in PRE_AUTH_S, and nothing it sent is kept beyond
those. Once authenticated it must `start` within START_S, and a stream
silent for SILENCE_S is closed, so a socket that holds its call's stream
slot is one that streams.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import time
from dataclasses import dataclass
from datetime import UTC, datetime

import aiohttp
from aiohttp import web

from telephony.domain.errors import NotFound, StreamRefused
from telephony.media.events import (
    Audio,
    Connected,
    MediaEvent,
    Parser,
    ProtocolViolation,
    StreamStart,
    StreamStop,
)
from telephony.media.ws import DIALECTS, parser_for
from telephony.metrics import Metrics
from telephony.recorder.hub import LiveStream, MediaHub
from telephony.usecases import media_lifecycle
from telephony.web.appkeys import HUB, METRICS, POOL
from telephony.web.routes import ANYONE, Route

log = logging.getLogger(__name__)

MAX_MESSAGE_BYTES = 256 * 1024  # a 1 MiB frame is refused by aiohttp with 1009
PRE_AUTH_BYTES = 8 * 1024  # `connected` and `start` are a few hundred bytes each
PRE_AUTH_S = 2.0  # a peer must show its token (URL or first frames) this fast
START_S = 5.0  # an authenticated stream must say what it sends this fast
SILENCE_S = 30.0  # a stream that sends nothing for this long is gone
WATCH_EVERY_S = 1.0
POLICY = aiohttp.WSCloseCode.POLICY_VIOLATION  # 1008
# Every open media socket of this node, so a shutdown can hand them over (`hand_over`).
SOCKETS = web.AppKey("media_sockets", set[web.WebSocketResponse])
# A peer whose host died without a FIN or RST is found by TCP keepalive: probes
# after KEEPALIVE_IDLE_S without a segment, KEEPALIVE_PROBES unanswered ones close it.
KEEPALIVE_IDLE_S = 10
KEEPALIVE_INTERVAL_S = 5
KEEPALIVE_PROBES = 3
RETUNE_FRAMES = 250  # re-arm delayed ACKs every five seconds of 20 ms frames


class Refused(Exception):
    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass
class Liveness:
    """What the watchdog reads: a counter per message, nothing timed per frame."""

    messages: int = 0
    started: bool = False
    # While the pump awaits the hub (a start's attach, a database query that a loaded
    # pool can hold for many seconds), it reads nothing: that is our delay, not the
    # peer's silence, and the peer's frames wait in the socket meanwhile.
    attaching: bool = False
    closing_reason: str | None = None


async def hand_over(app: web.Application) -> None:
    """A shutdown (a deploy): close every media socket with 1001 Going Away, after sealing
    and shipping what it brought, without ending its recording, so the engine's reconnect
    through the load balancer picks the call up on another node. Without this, aiohttp
    would wait for the sockets and the process would be killed with its spool unshipped."""
    app[HUB].leaving = True
    sockets = app[SOCKETS].copy()
    await asyncio.gather(
        *(
            ws.close(code=aiohttp.WSCloseCode.GOING_AWAY, message=b"node shutting down")
            for ws in sockets
        ),
        return_exceptions=True,
    )
    if sockets:
        log.info("media sockets handed over", extra={"sockets": len(sockets)})


def setup(app: web.Application) -> None:
    app[SOCKETS] = set()
    app.on_shutdown.append(hand_over)


async def media(request: web.Request) -> web.StreamResponse:
    dialect = request.match_info["dialect"]
    if dialect not in DIALECTS:
        raise NotFound(f"unknown media dialect; use one of {', '.join(DIALECTS)}")
    parser = parser_for(dialect)
    # No aiohttp heartbeat: it re-arms a timer on every frame received, a twentieth
    # of the ingest CPU. TCP keepalive (tune_media_socket) finds dead peers for free.
    ws = web.WebSocketResponse(protocols=parser.subprotocols, max_msg_size=MAX_MESSAGE_BYTES)
    await ws.prepare(request)
    request.app[SOCKETS].add(ws)
    sock = request.transport.get_extra_info("socket") if request.transport else None
    tune_media_socket(sock)
    app = request.app
    hub = app[HUB]
    stream: LiveStream | None = None
    watchdog: asyncio.Task[None] | None = None
    liveness = Liveness()
    ended_by_peer = False
    try:
        early: list[MediaEvent] = []
        token = request.query.get("token") or _token_header(request, dialect)
        if token is None:
            token, early = await _token_from_metadata(ws, parser)
        try:
            attached = await media_lifecycle.attach_stream(
                app[POOL], token, node_id=hub.node_id, dialect=dialect, now=datetime.now(UTC)
            )
        except StreamRefused as exc:
            raise Refused(exc.detail) from None
        stream = LiveStream(attached)
        liveness.started = any(isinstance(e, StreamStart) for e in early)
        watchdog = asyncio.create_task(_watch(ws, liveness), name="media-watchdog")
        # The pump runs as a task of its own: each frame then wakes only the pump's chain of
        # awaits, not the handler's too (the middlewares, aiohttp's request handling): about
        # a twentieth of py-spy's samples at 400 legs. A cancelled handler cancels it too.
        pump = _pump(ws, parser, hub, app[METRICS], stream, early, sock, liveness)
        ended_by_peer = await asyncio.create_task(pump, name="media-pump")
    except Refused as exc:
        await ws.close(code=POLICY, message=exc.reason.encode()[:123])
    except ProtocolViolation as exc:
        await ws.close(code=exc.close_code, message=exc.reason.encode()[:123])
    finally:
        if watchdog is not None:
            watchdog.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watchdog
        if stream is not None:
            app[METRICS].media_frames.inc(stream.frames % METRIC_EVERY)
            # A socket closed by `hand_over` is no end of the call: the engine reconnects
            # to another node, which continues the recording.
            await asyncio.shield(hub.detach(stream, final=not hub.leaving))
        if not ws.closed:
            await ws.close()
        request.app[SOCKETS].discard(ws)
    log.info(
        "media stream closed",
        extra={
            "dialect": dialect,
            "ended_by_peer": ended_by_peer,
            "reason": liveness.closing_reason,
        },
    )
    return ws


async def _watch(ws: web.WebSocketResponse, liveness: Liveness) -> None:
    """Close a stream that never starts, or stops sending: its call's slot is then free."""
    loop = asyncio.get_running_loop()
    opened = loop.time()
    seen, quiet_since = liveness.messages, opened
    while not ws.closed:
        await asyncio.sleep(WATCH_EVERY_S)
        now = loop.time()
        if not liveness.started and now - opened >= START_S:
            liveness.closing_reason = f"no start within {START_S:g} s"
            await ws.close(code=POLICY, message=liveness.closing_reason.encode())
            return
        if liveness.messages != seen or liveness.attaching:
            seen, quiet_since = liveness.messages, now
        elif now - quiet_since >= SILENCE_S:
            liveness.closing_reason = f"nothing received for {SILENCE_S:g} s"
            await ws.close(code=aiohttp.WSCloseCode.GOING_AWAY, message=b"silent stream")
            return


def tune_media_socket(sock: socket.socket | None) -> None:
    """Keepalive to find vanished peers, and delayed ACKs for a stream that only receives.

    Why delayed ACKs: a socket that left the kernel's interactive ("pingpong")
    mode, say while the call's token was checked, ACKs every frame at once:
    50 ACKs a second a leg, each one a send and, on loopback, its receipt,
    in the server's time. TCP_QUICKACK=0 puts it back to one ACK per two
    frames. The kernel may leave that mode again after a late frame, so
    `_pump` re-arms it every RETUNE_FRAMES. Linux options where the platform
    has them; a socket that refuses them (closed already) is left as it is.
    """
    if sock is None:
        return
    options = [(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)]
    if hasattr(socket, "TCP_KEEPIDLE"):
        options += [
            (socket.IPPROTO_TCP, socket.TCP_KEEPIDLE, KEEPALIVE_IDLE_S),
            (socket.IPPROTO_TCP, socket.TCP_KEEPINTVL, KEEPALIVE_INTERVAL_S),
            (socket.IPPROTO_TCP, socket.TCP_KEEPCNT, KEEPALIVE_PROBES),
        ]
    try:
        for level, option, value in options:
            sock.setsockopt(level, option, value)
    except OSError:
        return
    _delay_acks(sock)


def _delay_acks(sock: socket.socket | None) -> None:
    if sock is not None and hasattr(socket, "TCP_QUICKACK"):
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_QUICKACK, 0)


# Telnyx sends a stream's `stream_auth_token` as this header of the upgrade request, and in
# its `connected` frame: set to the call's media token, it authenticates the stream.
TELNYX_TOKEN_HEADER = "x-telnyx-streaming-auth-token"  # noqa: S105 - a header name


def _token_header(request: web.Request, dialect: str) -> str | None:
    if dialect != "telnyx":
        return None
    return request.headers.get(TELNYX_TOKEN_HEADER) or None


async def _token_from_metadata(
    ws: web.WebSocketResponse, parser: Parser
) -> tuple[str, list[MediaEvent]]:
    """Read frames until `connected` or `start` carries a token: only those two, at most
    PRE_AUTH_BYTES in PRE_AUTH_S; nothing else is read, nothing is kept."""
    events: list[MediaEvent] = []
    received = 0
    try:
        async with asyncio.timeout(PRE_AUTH_S):
            while True:
                msg = await ws.receive()
                if msg.type not in (aiohttp.WSMsgType.TEXT, aiohttp.WSMsgType.BINARY):
                    raise Refused("closed before showing a media token")
                received += len(msg.data)
                if received > PRE_AUTH_BYTES:
                    raise Refused("too much before the media token")
                if msg.type == aiohttp.WSMsgType.TEXT:
                    new = parser.feed_text(msg.data)
                else:
                    new = parser.feed_binary(msg.data)
                for event in new:
                    if isinstance(event, Audio):
                        raise Refused("audio before the media token")
                    if isinstance(event, Connected):
                        if event.token:
                            return event.token, events
                        continue
                    if not isinstance(event, StreamStart):
                        raise Refused("only connected and start before the media token")
                    events.append(event)
                    if not event.token:
                        raise Refused("missing media token")
                    return event.token, events
    except TimeoutError:
        raise Refused("no media token in time") from None


async def _pump(
    ws: web.WebSocketResponse,
    parser: Parser,
    hub: MediaHub,
    metrics: Metrics,
    stream: LiveStream,
    early: list[MediaEvent],
    sock: socket.socket | None,
    liveness: Liveness,
) -> bool:
    """Feed frames to the stream until the peer stops; True when it ended the stream itself."""
    if await _handle(hub, metrics, stream, early, liveness):
        return True
    _delay_acks(sock)  # the token check's database round trip may have ended that mode
    retune_at = stream.frames + RETUNE_FRAMES
    # `ws.receive()`, not `async for`: the iterator's frame is one more coroutine resumed
    # per message, fifty a second a leg (py-spy: 5 % of the server at 200 legs).
    receive, text, binary = ws.receive, aiohttp.WSMsgType.TEXT, aiohttp.WSMsgType.BINARY
    while True:
        msg = await receive()
        liveness.messages += 1
        if msg.type == text:
            events = parser.feed_text(msg.data)
        elif msg.type == binary:
            events = parser.feed_binary(msg.data)
        else:
            break
        # Audio is offered without a coroutine; only what follows a control event (a
        # start, a stop) goes through `_handle`, which may await the hub.
        taken = _offer_audio(metrics, stream, events, 0)
        if taken < len(events) and await _handle(hub, metrics, stream, events, liveness, taken):
            return True
        if stream.frames >= retune_at:
            retune_at = stream.frames + RETUNE_FRAMES
            _delay_acks(sock)
    await _handle(hub, metrics, stream, parser.finish(), liveness)
    return False


# Metrics per frame would cost a tenth of the ingest CPU: count in batches and
# sample the lag of one frame in METRIC_EVERY (five a second per 50 fps stream).
METRIC_EVERY = 10


def _count_frames(metrics: Metrics, stream: LiveStream, event: Audio) -> None:
    metrics.media_frames.inc(METRIC_EVERY)
    if event.timestamp_ms is not None and stream.started_mono is not None:
        lag_s = time.monotonic() - stream.started_mono - event.timestamp_ms / 1000
        metrics.media_lag.observe(lag_s)


def _offer_audio(metrics: Metrics, stream: LiveStream, events: list[MediaEvent], start: int) -> int:
    """Offer the audio frames from `start` on to the writer (or the pre-roll, until it
    opens); the index of the first event that is not audio, len(events) when all were."""
    for index in range(start, len(events)):
        event = events[index]
        if type(event) is not Audio:
            return index
        stream.frames += 1
        if stream.started_mono is None and event.timestamp_ms is not None:
            # The first frame sets the stream's clock.
            stream.started_mono = time.monotonic() - event.timestamp_ms / 1000
        if stream.frames % METRIC_EVERY == 0:
            _count_frames(metrics, stream, event)
        writer = stream.writer
        if writer is not None:
            writer.offer(event, datetime.now(UTC))
        else:
            stream.hold((event, datetime.now(UTC)))
    return len(events)


async def _handle(
    hub: MediaHub,
    metrics: Metrics,
    stream: LiveStream,
    events: list[MediaEvent],
    liveness: Liveness,
    start: int = 0,
) -> bool:
    """The events from `start` on, in order: audio offered, a start attached, a stop the
    end (True)."""
    index = _offer_audio(metrics, stream, events, start)
    while index < len(events):
        event = events[index]
        if isinstance(event, StreamStart):
            liveness.started = liveness.attaching = True
            try:
                await hub.attach(stream, event)
            finally:
                liveness.attaching = False
        elif isinstance(event, StreamStop):
            return True
        index = _offer_audio(metrics, stream, events, index + 1)
    return False


ROUTES = [
    Route(
        "GET",
        "/v1/media/{dialect}",
        media,
        "Live call audio over a WebSocket (twilio, telnyx, jambonz, audiofork dialects)",
        ANYONE,  # the call's media token, checked once upgraded (closes with 1008)
        None,
        {
            101: "switching protocols",
            400: "malformed-request: not a WebSocket upgrade",
            404: "not-found (unknown dialect)",
        },
        "media",
    ),
]
