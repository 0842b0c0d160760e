"""SIP calls on this node: an INVITE becomes its call's media stream, the RTP its audio.

The SIP counterpart of web/api/media_ws.py, below the listener's transaction
layer (media/sip/uas.py). An INVITE names its call by the media token (the
Request-URI user, or `X-Media-Token`); from there the path is the
WebSocket's: `attach_stream` claims the call's one live stream, the hub
opens the writer when a recording is live, each RTP packet is offered to it
as `Audio`, and the writer keeps only what falls in a recorded window. Audio
before the customer starts, or while a counterpart has not consented, is
dropped in memory, whatever the transport (R1, R2).

One dialog, one call:
- each accepted `m=` line gets a port pair from the range (rtp/ports.py) and an
  `RtpStream` (latching, ordering, placement); positions are samples since
  the INVITE, shared by the dialog's streams so two one-way streams align;
- a packet's arrival, not its release from the jitter window, is what the
  writer's window judges: a packet that came before the start is never kept;
- BYE ends the stream like a WebSocket `stop` (the recording completes);
  30 s without RTP (not on hold), or no ACK for the 200, ends it with our BYE.

SIPREC (`Require: siprec`, RFC 7866): the offer is a multipart body of SDP and
metadata; each labelled stream goes to the side of the participant the
metadata says sends it, the customer's own number on the customer's side
(SIP.md 4.3; siprec_sides.py). Without metadata, or for a label no one
sends, the first `m=` line is the caller's: the counterparts' side on an
inbound call, the customer's on an outbound one.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import secrets
from collections import Counter
from collections.abc import Coroutine
from datetime import UTC, datetime
from typing import Any

import asyncpg

from storage.sip_trunks import Trunk
from telephony.domain.errors import StreamRefused
from telephony.media.events import StreamStart
from telephony.media.rtp.ports import PortPool
from telephony.media.rtp.stream import RtpStream
from telephony.media.sip import metadata, multipart, requests, sdp
from telephony.media.sip.message import Headers, Request, Response, serialize
from telephony.media.sip.replies import (
    address_uri,
    new_tag,
    parse_via,
    reply,
    tag_of,
    uri_user,
    warning,
)
from telephony.media.sip.uas import ALLOW, SUPPORTED, T1_S, T2_S, Peer, Sessions
from telephony.metrics import Metrics
from telephony.recorder import siprec_sides
from telephony.recorder.hub import LiveStream, MediaHub
from telephony.recorder.sip_media import CLOCK_HZ, DialogKey, Leg, SipCall
from telephony.recorder.sip_trunk_auth import TrunkAuth
from telephony.usecases import media_lifecycle, sip_trunks
from telephony.usecases.calls import MEDIA_TOKEN_PREFIX

log = logging.getLogger(__name__)

# A media token is URL-safe (SIP.md 1) and has its prefix: any other Request-URI user
# (a number, a trunk's username) is a trunk's session, answered with a digest challenge.
TOKEN = re.compile(rf"{MEDIA_TOKEN_PREFIX}_[A-Za-z0-9_-]{{8,128}}")
SILENCE_S = 30.0  # an active stream quiet this long is gone: our BYE ends it
WATCH_EVERY_S = 1.0
RETRY_AFTER_S = 5  # a full node's 503: the SBC tries the next recorder meanwhile
TIMER_F_S = 64 * T1_S  # our BYE is resent over UDP until answered, this long at most
ENCODING = {"PCMA": "alaw", "PCMU": "mulaw"}
MIN_SESSION_S = 90  # RFC 4028's Min-SE floor: a shorter Session-Expires gets 422
PLAYOUT_TICK_S = 0.02  # how often held RTP is given out (past the stream's 80 ms playout)


class SipCalls(Sessions):
    """Every SIP dialog of this node, behind one listener."""

    def __init__(
        self,
        hub: MediaHub,
        ports: PortPool,
        *,
        advertise: str,
        sip_port: int,
        metrics: Metrics | None = None,
        media_token_ttl_s: int = 3600,
    ) -> None:
        self.hub = hub
        self.media_token_ttl_s = media_token_ttl_s  # of the calls trunk sessions create
        self._auth = TrunkAuth(hub.pool, hub.keys, advertise)
        self.ports = ports
        self.advertise = advertise  # the address our SDP and Contact name
        self.sip_port = sip_port
        self.metrics = metrics
        self.dialogs: dict[DialogKey, SipCall] = {}
        # RTP datagrams dropped by reason (rtp/stream.py), of the calls that ended; the live
        # calls' own add to them in `rtp_drops` (/metrics, S7).
        self._ended_drops: Counter[str] = Counter()
        self._inviting: dict[tuple[str, str], asyncio.Event] = {}  # set: CANCELled
        self._byes: dict[str, asyncio.Event] = {}  # our BYEs by branch, until answered
        self._tasks: set[asyncio.Task[None]] = set()
        self._watch: asyncio.Task[None] | None = None
        self._releasing: asyncio.Task[None] | None = None
        self._holding: set[Leg] = set()

    def start(self) -> None:
        self._watch = asyncio.create_task(self._watchdog(), name="sip-watchdog")
        self._releasing = asyncio.create_task(self._release_held(), name="rtp-playout")

    async def close(self) -> None:
        """A shutdown: every dialog ends with our BYE; a deploy's streams stay recording
        (the hub's `leaving`), as a WebSocket handed over does."""
        for task in (self._watch, self._releasing):
            if task is not None:
                task.cancel()
        await asyncio.gather(
            *(self._end(c, bye="node shutting down") for c in list(self.dialogs.values())),
            return_exceptions=True,
        )
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    def rtp_drops(self) -> Counter[str]:
        """Every RTP datagram dropped on this node by reason: ended calls' and live ones'."""
        total = Counter(self._ended_drops)
        for call in self.dialogs.values():
            for leg in call.legs:
                if leg.rtp is not None:
                    total.update(leg.rtp.drops)
                if leg.bound is not None:
                    total["socket_buffer"] += self.ports.dropped(leg.bound)
        return +total

    # -- the listener's extension points -------------------------------------------------

    async def invite(self, request: Request, peer: Peer) -> Response:
        if tag_of(request.headers.get("to")) is not None:
            return await self._reoffer(request, peer)
        pending = (request.call_id, tag_of(request.headers.get("from")) or "")
        cancelled = self._inviting[pending] = asyncio.Event()
        try:
            return await self._new(request, peer, cancelled)
        finally:
            self._inviting.pop(pending, None)

    async def in_dialog(self, request: Request, peer: Peer) -> Response:
        method = request.method
        if method == "CANCEL":
            return self._cancel(request, peer)
        call = self.dialogs.get(_dialog_key(request))
        if call is None:
            return await super().in_dialog(request, peer)
        number = request.cseq[0]
        if number < call.remote_cseq:
            return self._answer(request, peer, call, 500, "Server Internal Error")
        call.remote_cseq = number
        if method == "BYE":
            self._spawn(self._end(call, bye=None))
            return self._answer(request, peer, call, 200, "OK")
        if method == "UPDATE" and request.body:
            return await self._reoffer(request, peer)
        return self._answer(request, peer, call, 200, "OK")  # INFO, PRACK, an offerless UPDATE

    def acknowledged(self, ack: Request) -> None:
        """The dialog was usable from our 200 on: RTP may come before the ACK. After an
        offerless re-INVITE (a third-party call control transfer, RFC 3725) the ACK carries
        the answer to the offer our 200 made: a stream it moves latches anew, as a re-offer's
        would (SIP.md 4.4). An answer we cannot use changes nothing; an ACK is never
        answered."""
        call = self.dialogs.get(_dialog_key(ack))
        if call is None or not call.offered:
            return
        call.offered = False
        if not ack.body:
            return
        legs = [leg for leg in call.legs if leg.bound is not None]
        try:
            body, _ = requests.offer_of(ack)
            answered = sdp.answer(sdp.parse(body), [leg.bound.port for leg in legs if leg.bound])
        except (
            requests.Refusal,
            sdp.SdpError,
            sdp.NotAcceptable,
            multipart.BadMultipart,
            metadata.BadMetadata,
            ValueError,
        ) as exc:
            log.info("an ACK's answer not used", extra={"sip": call.key[0], "error": str(exc)})
            return
        fmt = call.live.fmt
        same_codec = fmt is None or all(ENCODING[a.codec] == fmt.encoding for a in answered.streams)
        if [a.index for a in answered.streams] != [leg.line for leg in legs] or not same_codec:
            log.info(
                "an ACK's answer changes the streams or codec: not used", extra={"sip": call.key[0]}
            )
            return
        _follow(legs, answered)
        call.on_hold = all(a.direction == "inactive" for a in answered.streams)

    async def unacknowledged(self, invite: Request) -> None:
        for call in list(self.dialogs.values()):
            if call.invite is invite:
                await self._end(call, bye="no ACK for the 200")

    def response(self, response: Response) -> bool:
        vias = response.headers.get_all("via")
        via = parse_via(vias[0]) if vias else None
        answered = self._byes.get(via.branch or "") if via else None
        if answered is None:
            return False
        if response.status >= 200:
            answered.set()
        return True

    # -- a new dialog --------------------------------------------------------------------

    async def _new(self, request: Request, peer: Peer, cancelled: asyncio.Event) -> Response:
        local_tag = new_tag()

        def refuse(status: int, reason: str, *headers: tuple[str, str]) -> Response:
            return reply(
                request, status, reason, source=peer.source, to_tag=local_tag, headers=headers
            )

        interval = requests.session_interval(request)
        if interval is not None and interval < MIN_SESSION_S:
            return refuse(422, "Session Interval Too Small", ("min-se", str(MIN_SESSION_S)))
        try:
            offer_body, described = requests.offer_of(request)
            offer = sdp.parse(offer_body)
            sdp.answer(offer, [0] * len(offer.streams))  # which streams can be taken
        except requests.Refusal as refusal:
            return refuse(refusal.status, refusal.reason, *refusal.headers)
        except (sdp.SdpError, multipart.BadMultipart, metadata.BadMetadata) as exc:
            return refuse(400, "Bad Request", warning(399, str(exc)))
        except sdp.NotAcceptable as exc:
            return refuse(488, "Not Acceptable Here", warning(exc.warning, exc.reason))
        siprec = "siprec" in requests.required(request)
        if siprec and "+sip.src" not in (request.headers.get("contact") or "").lower():
            log.info("a SIPREC INVITE whose Contact lacks +sip.src", extra={"sip": request.call_id})
        token = _token_of(request)
        trunk: Trunk | None = None
        if token is None:
            checked = await self._auth.check(request, peer, local_tag)
            if isinstance(checked, Response):
                return checked
            trunk = checked
        legs = await self._bind(offer)
        if legs is None:
            return refuse(503, "Service Unavailable", ("retry-after", str(RETRY_AFTER_S)))
        if trunk is not None:
            try:
                created = await sip_trunks.create_call(
                    self.hub.pool,
                    trunk,
                    siprec_sides.parties(request, described, trunk),
                    media_token_ttl_s=self.media_token_ttl_s,
                )
            except sip_trunks.NoParties as exc:
                self._release(legs)
                return refuse(400, "Bad Request", warning(399, str(exc)))
            token = created.media_token
        assert token is not None
        try:
            answered = sdp.answer(offer, [leg.bound.port for leg in legs if leg.bound])
            attached = await media_lifecycle.attach_stream(
                self.hub.pool,
                token,
                node_id=self.hub.node_id,
                dialect="siprec" if siprec else "sip",
                now=_now(),
            )
        except StreamRefused as exc:
            self._release(legs)
            if exc.taken:
                return refuse(403, "Forbidden", warning(399, exc.detail))
            return refuse(404, "Not Found")
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError):
            self._release(legs)
            log.exception("a SIP call could not attach its stream")
            return refuse(503, "Service Unavailable", ("retry-after", str(RETRY_AFTER_S)))
        live = LiveStream(attached)
        loop = asyncio.get_running_loop()
        call = SipCall(
            key=(request.call_id, tag_of(request.headers.get("from")) or "", local_tag),
            invite=request,
            peer=peer,
            live=live,
            legs=legs,
            answer_body=b"",
            offer_version=offer.origin[2] if offer.origin else None,
            remote_cseq=request.cseq[0],
            started=loop.time(),
            wall_start=_now(),
            clock=loop.time,
            siprec=siprec,
            described=described,
            metrics=self.metrics,
        )
        call.answer_body = answered.render(
            address=self.advertise, session_id=call.session_id, version=call.version
        )
        sides = siprec_sides.track_names(answered.streams, described, attached)
        for leg, accepted, track in zip(legs, answered.streams, sides, strict=True):
            leg.rtp = RtpStream(accepted.pt, accepted.event_pt, expected_ip=_ip(accepted.remote))
            leg.track = leg.track_before = track
            leg.remote, leg.line, leg.label = accepted.remote, accepted.index, accepted.label
        call.on_hold = all(a.direction == "inactive" for a in answered.streams)
        codec = ENCODING[answered.streams[0].codec]
        start = StreamStart(None, tuple(sides), codec, CLOCK_HZ, request.call_id)  # type: ignore[arg-type]
        self.dialogs[call.key] = call
        try:
            await self.hub.attach(live, start)
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError):
            log.exception("a SIP call could not open its recording")
            await self._end(call, bye=None)
            return refuse(503, "Service Unavailable", ("retry-after", str(RETRY_AFTER_S)))
        if cancelled.is_set():
            await self._end(call, bye=None)
            return refuse(487, "Request Terminated")
        for leg in legs:
            leg.call = call
            leg.holding = self._holding
        log.info(
            "SIP call attached",
            extra={"call_id": attached.call_id, "streams": len(legs), "codec": codec},
        )
        return self._answer(request, peer, call, 200, "OK", body=call.answer_body)

    async def _bind(self, offer: sdp.Offer) -> list[Leg] | None:
        """A port pair per stream the answer takes; None (nothing held) when the range is
        used up."""
        wanted = len(sdp.answer(offer, [0] * len(offer.streams)).streams)
        legs: list[Leg] = []
        for _ in range(wanted):
            leg = Leg()
            leg.bound = await self.ports.bind(leg, leg.rtcp)
            if leg.bound is None:
                self._release(legs)
                log.warning("no free RTP port: a SIP call refused", extra={"free": 0})
                return None
            legs.append(leg)
        return legs

    def _release(self, legs: list[Leg]) -> None:
        for leg in legs:
            if leg.bound is not None:
                self.ports.release(leg.bound)

    # -- in the dialog -------------------------------------------------------------------

    async def _reoffer(self, request: Request, peer: Peer) -> Response:
        """A re-INVITE or UPDATE: the same streams answered anew (hold flips direction);
        an offer repeating its o= version gets the answer it had. SIPREC metadata in it
        (or alone, in an UPDATE) may name a new participant (siprec_sides.joined)."""
        call = self.dialogs.get(_dialog_key(request))
        if call is None:
            return reply(
                request, 481, "Call/Transaction Does Not Exist", source=peer.source, to_tag=None
            )
        if request.cseq[0] < call.remote_cseq:
            return self._answer(request, peer, call, 500, "Server Internal Error")
        call.remote_cseq = request.cseq[0]
        if not request.body:
            call.offered = True  # our 200 offers what we have; the answer comes in the ACK
            return self._answer(request, peer, call, 200, "OK", body=call.answer_body)
        try:
            if requests.media_type(request) in metadata.MEDIA_TYPES:  # an UPDATE of metadata alone
                await siprec_sides.joined(self.hub, call, metadata.parse(request.body))
                siprec_sides.remap(call)
                return self._answer(request, peer, call, 200, "OK")
            offer_body, described = requests.offer_of(request)
            if described is not None:
                await siprec_sides.joined(self.hub, call, described)
            offer = sdp.parse(offer_body)
            if offer.origin and offer.origin[2] == call.offer_version:
                siprec_sides.remap(call)  # the same SDP, perhaps new metadata
                return self._answer(request, peer, call, 200, "OK", body=call.answer_body)
            taken = sdp.answer(offer, [0] * len(offer.streams)).streams  # which lines, no ports
        except requests.Refusal as refusal:
            return self._answer(
                request, peer, call, refusal.status, refusal.reason, *refusal.headers
            )
        except (sdp.SdpError, multipart.BadMultipart, metadata.BadMetadata) as exc:
            return self._answer(request, peer, call, 400, "Bad Request", warning(399, str(exc)))
        except sdp.NotAcceptable as exc:
            return self._answer(
                request, peer, call, 488, "Not Acceptable Here", warning(exc.warning, exc.reason)
            )
        # A recording keeps its channels and its format (one WAV) from start to end: a
        # re-offer that changes either is refused, and the call goes on as it was (RFC 3261
        # §14.2). Within them, a line set to port 0 closes its sockets, and one taken again
        # gets new ones.
        lines = {a.index for a in taken}
        if not lines <= {leg.line for leg in call.legs}:
            why = warning(399, "the same streams only: a recording keeps its channels")
            return self._answer(request, peer, call, 488, "Not Acceptable Here", why)
        fmt = call.live.fmt
        if fmt is not None and any(ENCODING[a.codec] != fmt.encoding for a in taken):
            why = warning(305, "the same codec only: a recording keeps its format")
            return self._answer(request, peer, call, 488, "Not Acceptable Here", why)
        if not await self._open_and_close(call, lines):
            return self._answer(
                request, peer, call, 503, "Service Unavailable", ("retry-after", str(RETRY_AFTER_S))
            )
        legs = [leg for leg in call.legs if leg.line in lines]
        answered = sdp.answer(offer, [leg.bound.port for leg in legs if leg.bound])
        _follow(legs, answered)
        siprec_sides.remap(call)  # a refused request changed no channel
        call.on_hold = all(a.direction == "inactive" for a in answered.streams)
        call.offer_version = offer.origin[2] if offer.origin else None
        body = answered.render(
            address=self.advertise, session_id=call.session_id, version=call.version + 1
        )
        if body != call.answer_body:
            call.version += 1
            call.answer_body = body
        return self._answer(request, peer, call, 200, "OK", body=call.answer_body)

    async def _open_and_close(self, call: SipCall, lines: set[int]) -> bool:
        """Bind the legs whose lines are taken again and close those set to port 0; False,
        and nothing changed, when the range has no pair left for one."""
        opened: list[tuple[Leg, tuple[str, int] | None]] = []
        for leg in call.legs:
            if leg.line in lines and leg.bound is None:
                leg.bound = await self.ports.bind(leg, leg.rtcp)
                if leg.bound is None:
                    for undo, remote in opened:
                        self._release([undo])
                        undo.bound, undo.remote = None, remote
                    log.warning("no free RTP port: a re-offer refused", extra={"free": 0})
                    return False
                opened.append((leg, leg.remote))
                leg.remote = None  # a new port: its sender latches anew
        now = call.clock()
        for leg in call.legs:
            if leg.line not in lines and leg.bound is not None:
                if leg.rtp is not None:
                    call.deliver(leg, leg.rtp.release(now - call.started, everything=True))
                self._release([leg])
                leg.bound = None
        return True

    def _cancel(self, request: Request, peer: Peer) -> Response:
        """Before our answer: 200, and the INVITE ends 487. After it: 200, no effect (the
        caller sends BYE). Neither: 481."""
        their_tag = tag_of(request.headers.get("from")) or ""
        pending = self._inviting.get((request.call_id, their_tag))
        known = pending is not None or any(
            key[0] == request.call_id and key[1] == their_tag for key in self.dialogs
        )
        if not known:
            return reply(
                request, 481, "Call/Transaction Does Not Exist", source=peer.source, to_tag=None
            )
        if pending is not None:
            pending.set()
        return reply(request, 200, "OK", source=peer.source, to_tag=None)

    async def _end(self, call: SipCall, *, bye: str | None) -> None:
        """The stream's end: what the jitter window holds goes in, the ports close, and the
        hub finalizes the recording (unless this node is leaving: a deploy)."""
        if call.ended:
            return
        self.dialogs.pop(call.key, None)
        for leg in call.legs:
            if leg.bound is not None:
                self.ports.flush(leg.bound)  # what came before the BYE, unread till a tick
        call.ended = True
        now = asyncio.get_running_loop().time() - call.started
        for leg in call.legs:
            self._holding.discard(leg)
            if leg.rtp is not None:
                call.deliver(leg, leg.rtp.release(now, everything=True))
        self._release(call.legs)
        for leg in call.legs:
            if leg.rtp is not None:
                self._ended_drops.update(leg.rtp.drops)
            if leg.bound is not None:
                self._ended_drops["socket_buffer"] += leg.bound.kernel_drops
        if bye is not None:
            self._send_bye(call, bye)
        if self.metrics is not None:
            self.metrics.media_frames.inc(call.live.frames)
        await asyncio.shield(self.hub.detach(call.live, final=not self.hub.leaving))
        log.info(
            "SIP call ended",
            extra={"call_id": call.live.call_id, "by_us": bye is not None, "reason": bye},
        )

    def _send_bye(self, call: SipCall, reason: str) -> None:
        """Our BYE (SIP.md 2.4): to their Contact, along their Record-Route; over UDP resent
        (Timer E) until answered or Timer F."""
        call.local_cseq += 1
        branch = "z9hG4bK" + secrets.token_hex(8)
        transport = "TCP" if call.peer.reliable else "UDP"
        invite = call.invite
        headers = Headers()
        headers.add(
            "via", f"SIP/2.0/{transport} {self.advertise}:{self.sip_port};branch={branch};rport"
        )
        headers.add("max-forwards", "70")
        headers.add("from", f"{invite.headers.get('to') or ''};tag={call.key[2]}")
        headers.add("to", invite.headers.get("from") or "")
        headers.add("call-id", call.key[0])
        headers.add("cseq", f"{call.local_cseq} BYE")
        for route in invite.headers.get_all("record-route"):
            headers.add("route", route)
        headers.add("reason", f'SIP;cause=200;text="{reason}"')
        headers.add("content-length", "0")
        uri = address_uri(invite.headers.get("contact")) or invite.uri
        wire = serialize(Request("BYE", uri, headers))
        call.peer.send(wire)  # at once: a shutdown's BYE must leave before the sockets close
        if not call.peer.reliable:
            self._byes[branch] = asyncio.Event()
            self._spawn(self._resend_bye(call.peer, branch, wire))

    async def _resend_bye(self, peer: Peer, branch: str, wire: bytes) -> None:
        answered = self._byes[branch]
        loop = asyncio.get_running_loop()
        interval, deadline = T1_S, loop.time() + TIMER_F_S
        try:
            while loop.time() < deadline:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(interval):
                        await answered.wait()
                        return
                peer.send(wire)
                interval = min(interval * 2, T2_S)
        finally:
            del self._byes[branch]

    def _answer(
        self,
        request: Request,
        peer: Peer,
        call: SipCall,
        status: int,
        reason: str,
        *headers: tuple[str, str],
        body: bytes = b"",
    ) -> Response:
        """An answer within the dialog, with its tag; a 2xx to an INVITE or UPDATE carries
        our Contact, and an INVITE's its Record-Routes in order (§12.1.1)."""
        extra = list(headers)
        if 200 <= status < 300 and request.method in ("INVITE", "UPDATE"):
            if request.method == "INVITE":
                extra += [("record-route", r) for r in request.headers.get_all("record-route")]
            transport = ";transport=tcp" if peer.reliable else ""
            srs = ";+sip.srs" if call.siprec else ""  # RFC 7866 §6.1.1: we are the recorder
            extra += [
                ("contact", f"<sip:rec@{self.advertise}:{self.sip_port}{transport}>{srs}"),
                ("allow", ALLOW),
                ("supported", ", ".join(SUPPORTED)),
            ]
            interval = requests.session_interval(request)
            if interval is not None and "timer" in requests.supported(request):
                # RFC 4028: the caller refreshes; we never do (some SRCs break on it).
                extra += [("session-expires", f"{interval};refresher=uac"), ("require", "timer")]
                call.expires_at = asyncio.get_running_loop().time() + interval
        if body:
            extra.append(("content-type", "application/sdp"))
        return reply(
            request,
            status,
            reason,
            source=peer.source,
            to_tag=call.key[2],
            headers=tuple(extra),
            body=body,
        )

    async def _release_held(self) -> None:
        """Every PLAYOUT_TICK_S, what a leg holds behind a missing packet goes out once it
        is `playout` old, though nothing more comes (the last packets before a pause, or a
        stream that stops). One task for the node, not a timer per packet; it visits only
        the legs that hold something (a stream that loses or reorders packets)."""
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(PLAYOUT_TICK_S)
            if self._holding:
                now = loop.time()
                # In place: each leg holds this very set (Leg.holding) and adds itself.
                self._holding -= {leg for leg in self._holding if not leg.release(now)}

    async def _watchdog(self) -> None:
        """A stream that stops without a BYE for SILENCE_S ends like a vanished WebSocket."""
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(WATCH_EVERY_S)
            for call in list(self.dialogs.values()):
                quiet = loop.time() - call.started - call.heard_at
                if not call.on_hold and quiet >= SILENCE_S:
                    self._spawn(self._end(call, bye=f"no RTP for {SILENCE_S:g} s"))
                elif call.expires_at is not None and loop.time() >= call.expires_at:
                    self._spawn(self._end(call, bye="session timer expired"))

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)


def _dialog_key(request: Request) -> DialogKey:
    return (
        request.call_id,
        tag_of(request.headers.get("from")) or "",
        tag_of(request.headers.get("to")) or "",
    )


def _token_of(request: Request) -> str | None:
    """The media token: the Request-URI user, else `X-Media-Token` (API.md)."""
    for candidate in (uri_user(request.uri), request.headers.get("x-media-token")):
        if candidate and TOKEN.fullmatch(candidate.strip()):
            return candidate.strip()
    return None


def _follow(legs: list[Leg], answered: sdp.Answer) -> None:
    """Each leg takes what its line now says: payload types, and where its sender is."""
    for leg, accepted in zip(legs, answered.streams, strict=True):
        if leg.rtp is not None:
            leg.rtp.audio_pt, leg.rtp.event_pt = accepted.pt, accepted.event_pt
            moved_to = _ip(accepted.remote)
            # A new c= or port latches anew; c=0.0.0.0 (an old-style hold) moves nothing.
            if accepted.remote != leg.remote and moved_to is not None:
                leg.remote = accepted.remote
                leg.rtp.moved(moved_to)


def _ip(remote: tuple[str, int] | None) -> str | None:
    """The offer's address as latching compares it; a name or 0.0.0.0 says nothing."""
    if remote is None:
        return None
    host = remote[0]
    if host in ("0.0.0.0", "::") or not re.fullmatch(r"[0-9.]+|[0-9A-Fa-f:]+", host):  # noqa: S104
        return None
    return host


def _now() -> datetime:
    return datetime.now(UTC)
