"""The SIP listener's transaction layer (RFC 3261 §17.2 and §18; SIP.md 1, 2.3 and 9).

UDP and TCP on one address. What arrives is parsed (message.py), then:
- a retransmission of a request already answered gets the same answer again,
  never a second handling (§17.2.3: the key is the top Via's branch, its
  sent-by and the method, ACK and CANCEL matching their INVITE);
- a final non-2xx answer to an INVITE is resent over UDP on Timer G until its
  ACK, for at most Timer H (§17.2.1);
- what needs no session is answered here: OPTIONS (the SBC's liveness ping),
  an unknown `Require` (420), methods a recorder does not serve (405, 501),
  in-dialog requests for no dialog (481);
- an INVITE, and a request within a dialog, go to the `Sessions` the
  listener was given, which answers them;
- the 2xx to an INVITE is resent (T1, doubling, capped at T2) until its ACK,
  whatever the transport (§13.3.1.4: a hop beyond a proxy may be UDP); with
  no ACK in Timer H the sessions hear of it and end the dialog.

Garbage and unsolicited responses are dropped unanswered and counted
(`drops`, for /metrics): answering them would reflect traffic.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from telephony.media.sip.message import (
    BadMessage,
    Garbage,
    Request,
    Response,
    StreamFramer,
    is_keepalive,
    parse_datagram,
    serialize,
)
from telephony.media.sip.replies import (
    DEFAULT_PORT,
    new_tag,
    reply,
    reply_address,
    top_via,
    warning,
)

log = logging.getLogger(__name__)

T1_S, T2_S, T4_S = 0.5, 4.0, 5.0
TIMER_H_S = 64 * T1_S  # an unacknowledged final answer to an INVITE is given up
TIMER_J_S = 64 * T1_S  # a non-INVITE answer is kept for retransmissions this long (UDP)
MAX_DATAGRAM = 65535
TCP_IDLE_S = 300.0  # a connection quiet this long is closed
TCP_HEAD_S = 10.0  # a message started must be whole this fast (slow headers: SIP.md 9)
PORT_ATTEMPTS = 20  # port 0: TCP's number tried for UDP too, this many times

SUPPORTED = ("siprec", "timer", "100rel")  # 100rel: met by sending no provisional but 100
ALLOW = "INVITE, ACK, BYE, CANCEL, OPTIONS, UPDATE, INFO"
ACCEPT = "application/sdp, multipart/mixed"
NOT_ALLOWED = frozenset({"REGISTER", "SUBSCRIBE", "NOTIFY", "REFER", "MESSAGE", "PUBLISH"})
DIALOG_BOUND = frozenset({"BYE", "UPDATE", "INFO", "PRACK", "CANCEL"})  # 481 without one
CAPABILITIES = (("allow", ALLOW), ("accept", ACCEPT), ("supported", ", ".join(SUPPORTED)))

Send = Callable[[bytes], None]


@dataclass(frozen=True)
class Peer:
    """Where a request came from, and the way back: a UDP answer goes to its reply
    address (§18.2.2), a TCP one on its connection. A dialog's own requests (our BYE)
    leave the same way."""

    source: tuple[str, int]
    send: Send
    reliable: bool  # TCP


class Sessions:
    """What the listener hands INVITEs and in-dialog requests to: the session layer
    answers them. This base answers every INVITE 480 and knows no dialog (481), for a
    listener with no sessions behind it (tests, a node that records no SIP)."""

    async def invite(self, request: Request, peer: Peer) -> Response:
        return reply(request, 480, "Temporarily Unavailable", source=peer.source, to_tag=new_tag())

    async def in_dialog(self, request: Request, peer: Peer) -> Response:
        """BYE, CANCEL, UPDATE, INFO, PRACK."""
        return reply(
            request, 481, "Call/Transaction Does Not Exist", source=peer.source, to_tag=new_tag()
        )

    def acknowledged(self, ack: Request) -> None:
        """The ACK of a 2xx: the dialog is confirmed."""

    async def unacknowledged(self, invite: Request) -> None:
        """No ACK came for the 2xx to `invite` within Timer H: the dialog is to end."""

    def response(self, response: Response) -> bool:
        """A response to one of the sessions' own requests (a BYE); False: unsolicited."""
        return False


@dataclass
class _Answered:
    """A server transaction's last answer, resent to retransmissions until `until`."""

    wire: bytes
    until: float
    acked: asyncio.Event | None = None  # an INVITE's non-2xx: its ACK stops Timer G


def _key(request: Request) -> tuple[str, str, str] | None:
    """A server transaction's key (§17.2.3); ACK and CANCEL share their INVITE's branch."""
    via = top_via(request)
    if via is None or not via.branch:
        return None
    method = "INVITE" if request.method == "ACK" else request.method
    return via.branch, f"{via.host}:{via.port or DEFAULT_PORT}", method


class SipListener:
    """UDP and TCP on `host`:`port` (0 picks one; `port` then says which)."""

    def __init__(self, host: str, port: int, sessions: Sessions | None = None) -> None:
        self.host = host
        self.port = port
        self.sessions = sessions or Sessions()
        self.drops: Counter[str] = Counter()
        self._answered: dict[tuple[str, str, str], _Answered] = {}
        # 2xx answers to INVITEs resent until their ACK, by (Call-ID, CSeq number).
        self._awaiting_ack: dict[tuple[str, int], asyncio.Event] = {}
        self._pruned_at = 0.0
        self._udp: asyncio.DatagramTransport | None = None
        self._tcp: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        """Bind TCP, then UDP on the same number. With port 0 the number TCP got may be
        taken for UDP (an RTP socket, say): then both try again, a few times."""
        loop = asyncio.get_running_loop()
        for attempt in range(PORT_ATTEMPTS):
            self._tcp = await asyncio.start_server(self._connection, self.host, self.port)
            port = self._tcp.sockets[0].getsockname()[1]
            try:
                self._udp, _ = await loop.create_datagram_endpoint(
                    lambda: _Datagrams(self), local_addr=(self.host, port)
                )
            except OSError:
                self._tcp.close()
                await self._tcp.wait_closed()
                if self.port != 0 or attempt == PORT_ATTEMPTS - 1:
                    raise
                continue
            self.port = port
            return

    async def close(self) -> None:
        if self._udp is not None:
            self._udp.close()
        if self._tcp is not None:
            self._tcp.close()
            await self._tcp.wait_closed()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    # -- transports --------------------------------------------------------------------

    def datagram(self, data: bytes, source: tuple[str, int]) -> None:
        if is_keepalive(data):
            return
        try:
            message = parse_datagram(data)
        except Garbage:
            self.drops["garbage"] += 1
            return
        except BadMessage as exc:
            parsed = exc.parsed
            self._refuse(exc, source, lambda wire: self._send_udp(wire, parsed, source))
            return
        if isinstance(message, Response):
            if not self.sessions.response(message):
                self.drops["unsolicited_response"] += 1
            return

        def send(wire: bytes) -> None:
            self._send_udp(wire, message, source)

        self._spawn(self._request(message, Peer(source, send, reliable=False)))

    def _send_udp(self, wire: bytes, request: Request | None, source: tuple[str, int]) -> None:
        if self._udp is not None and not self._udp.is_closing():
            self._udp.sendto(wire, reply_address(request, source) if request else source)

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = writer.get_extra_info("peername")
        source = (str(peer[0]), int(peer[1]))
        framer = StreamFramer()
        try:
            while True:
                async with asyncio.timeout(TCP_IDLE_S if not framer.buffer else TCP_HEAD_S):
                    data = await reader.read(MAX_DATAGRAM)
                if not data:
                    return
                pings = framer.pings
                for item in framer.feed(data):
                    if isinstance(item, Garbage):
                        self.drops["garbage"] += 1
                        return
                    if isinstance(item, BadMessage):
                        self._refuse(item, source, writer.write)
                        await writer.drain()
                        return  # the stream can no longer be framed
                    if isinstance(item, Response):
                        if not self.sessions.response(item):
                            self.drops["unsolicited_response"] += 1
                        continue
                    # In order, one at a time: a CANCEL waits behind its INVITE, whose
                    # answer is a database round trip away; it then gets 200, no effect.
                    await self._request(item, Peer(source, _tcp_send(writer), reliable=True))
                if framer.pings > pings:
                    writer.write(b"\r\n" * (framer.pings - pings))  # RFC 5626 pong
                await writer.drain()
        except (TimeoutError, ConnectionError):
            return
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()

    # -- requests ----------------------------------------------------------------------

    def _refuse(self, exc: BadMessage, source: tuple[str, int], send: Send) -> None:
        """A BadMessage answered where its Via routes the answer, else dropped."""
        request = exc.parsed
        if request is None or top_via(request) is None or request.method == "ACK":
            self.drops["malformed"] += 1
            return
        self.drops["refused"] += 1
        send(
            serialize(
                reply(
                    request,
                    exc.status,
                    "Bad Request" if exc.status == 400 else "Message Too Large",
                    source=source,
                    to_tag=new_tag(),
                    headers=(warning(399, exc.reason),),
                )
            )
        )

    async def _request(self, request: Request, peer: Peer) -> None:
        source, send, reliable = peer.source, peer.send, peer.reliable
        key = _key(request)
        now = time.monotonic()
        self._expire(now)
        answered = self._answered.get(key) if key else None
        if request.method == "ACK":
            if answered is not None and answered.acked is not None:
                answered.acked.set()  # the ACK of our non-2xx: Timer G stops
                return
            # A 2xx's ACK is a transaction of its own (a new branch): matched by its
            # dialog's Call-ID and the INVITE's CSeq number; never answered.
            waiting = self._awaiting_ack.pop((request.call_id, request.cseq[0]), None)
            if waiting is not None:
                waiting.set()
                self.sessions.acknowledged(request)
            return
        if answered is not None:
            if answered.wire:
                send(answered.wire)  # a retransmission: the same answer, no second handling
            return
        provisional = b""
        if request.method == "INVITE":
            # §17.2.1: a 100 at once, so the client stops resending the INVITE.
            provisional = serialize(reply(request, 100, "Trying", source=source))
            send(provisional)
        if key is not None:
            # Taken while it is handled: a copy arriving meanwhile gets the 100 (or nothing).
            self._answered[key] = _Answered(provisional, now + TIMER_H_S)
        response = await self._answer(request, peer)
        wire = serialize(response)
        send(wire)
        if request.method == "INVITE" and 200 <= response.status < 300:
            self._spawn(self._until_acked(request, wire, send))
        if key is None:
            return
        if request.method == "INVITE" and response.status >= 300:
            entry = _Answered(wire, now + TIMER_H_S, asyncio.Event())
            self._answered[key] = entry
            if not reliable:
                self._spawn(self._timer_g(entry, send))
        elif not reliable:
            self._answered[key] = _Answered(wire, now + TIMER_J_S)
        else:
            del self._answered[key]  # TCP retransmits nothing: the transaction ends here

    async def _answer(self, request: Request, peer: Peer) -> Response:
        source = peer.source

        def answer(status: int, reason: str, *headers: tuple[str, str]) -> Response:
            return reply(request, status, reason, source=source, to_tag=new_tag(), headers=headers)

        method = request.method
        unsupported = _unsupported(request)
        if unsupported and method not in ("CANCEL", "ACK"):
            return answer(420, "Bad Extension", ("unsupported", ", ".join(unsupported)))
        if method == "OPTIONS":
            return answer(200, "OK", *CAPABILITIES)
        if method == "INVITE":
            return await self.sessions.invite(request, peer)
        if method in NOT_ALLOWED:
            return answer(405, "Method Not Allowed", ("allow", ALLOW))
        if method in DIALOG_BOUND:
            return await self.sessions.in_dialog(request, peer)
        return answer(501, "Not Implemented")

    async def _until_acked(self, invite: Request, wire: bytes, send: Send) -> None:
        """Resend a 2xx to an INVITE (T1, doubling, capped at T2) until its ACK (§13.3.1.4);
        none within Timer H: the sessions end the dialog."""
        acked = asyncio.Event()
        key = (invite.call_id, invite.cseq[0])
        self._awaiting_ack[key] = acked
        deadline = time.monotonic() + TIMER_H_S
        interval = T1_S
        try:
            while (left := deadline - time.monotonic()) > 0:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(min(interval, left)):
                        await acked.wait()
                        return
                if time.monotonic() < deadline:
                    send(wire)
                interval = min(interval * 2, T2_S)
        finally:
            if self._awaiting_ack.get(key) is acked:
                del self._awaiting_ack[key]
        await self.sessions.unacknowledged(invite)

    async def _timer_g(self, entry: _Answered, send: Send) -> None:
        """Resend a final non-2xx to an INVITE (T1, doubling, capped at T2) until its ACK."""
        interval = T1_S
        assert entry.acked is not None
        while time.monotonic() < entry.until:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(interval):
                    await entry.acked.wait()
                    return
            send(entry.wire)
            interval = min(interval * 2, T2_S)

    def _expire(self, now: float) -> None:
        """Forget transactions past their timers: every few seconds, or at once past 1,024."""
        if len(self._answered) < 1024 and now - self._pruned_at < 5.0:
            return
        self._pruned_at = now
        for key in [k for k, a in self._answered.items() if a.until < now]:
            del self._answered[key]

    def _spawn(self, coro: Awaitable[None]) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)


def _tcp_send(writer: asyncio.StreamWriter) -> Send:
    """Bytes out on a TCP connection, nothing once it has closed (an answer to a peer
    that hung up has nowhere to go)."""

    def send(wire: bytes) -> None:
        if not writer.is_closing():
            writer.write(wire)

    return send


def _unsupported(request: Request) -> list[str]:
    tags = [t.strip().lower() for t in request.headers.get_all("require") if t.strip()]
    return [t for t in tags if t not in SUPPORTED]


class _Datagrams(asyncio.DatagramProtocol):
    def __init__(self, listener: SipListener) -> None:
        self.listener = listener

    def datagram_received(self, data: bytes, addr: tuple[str | int, ...]) -> None:
        self.listener.datagram(data, (str(addr[0]), int(addr[1])))

    def error_received(self, exc: Exception) -> None:
        # An ICMP unreachable for an answer we sent: the peer is gone; nothing to do.
        self.listener.drops["send_failed"] += 1
