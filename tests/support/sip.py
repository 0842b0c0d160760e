"""A SIP caller and an RTP sender over real UDP sockets, for what sipp cannot send.

sipp plays fixed pcaps at the first stream of an answer (SIP.md 8); these make
what a test needs instead: any SSRC, sequence and timestamp, pacing, loss,
reordering, a second stream, a wrong source. Messages are written out here
as text, the way a peer's stack would send them, and answers read with the
service's parser, which test_sip_message.py checks against the RFC's
examples on its own.
"""

from __future__ import annotations

import asyncio
import secrets
import struct
from collections.abc import Sequence
from dataclasses import dataclass, field

from telephony.media.sip.message import Request, Response, parse_datagram

RTP_HEADER = struct.Struct("!BBHII")


class _Inbox(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.queue: asyncio.Queue[tuple[bytes, tuple[str, int]]] = asyncio.Queue()

    def datagram_received(self, data: bytes, addr: tuple[str | int, ...]) -> None:
        self.queue.put_nowait((data, (str(addr[0]), int(addr[1]))))


async def udp_socket(
    port: int = 0, host: str = "127.0.0.1"
) -> tuple[asyncio.DatagramTransport, _Inbox]:
    loop = asyncio.get_running_loop()
    transport, inbox = await loop.create_datagram_endpoint(_Inbox, local_addr=(host, port))
    return transport, inbox


def offer(
    media_port: int, *, streams: int = 1, formats: str = "8 0 101", label: bool = False
) -> str:
    """An SDP offer of `streams` audio lines on media_port, + 2, ..."""
    lines = [
        "v=0",
        f"o=caller {secrets.randbelow(10**9)} 1 IN IP4 127.0.0.1",
        "s=-",
        "c=IN IP4 127.0.0.1",
        "t=0 0",
    ]
    for n in range(streams):
        lines += [
            f"m=audio {media_port + 2 * n} RTP/AVP {formats}",
            "a=rtpmap:101 telephone-event/8000",
            "a=fmtp:101 0-15",
        ]
        if label:
            lines.append(f"a=label:{n + 1}")
        lines.append("a=sendonly")
    return "\r\n".join(lines) + "\r\n"


@dataclass
class Dialog:
    """What the caller knows of a call after its 200: enough to ACK, BYE and re-INVITE."""

    call_id: str
    from_tag: str
    to: str  # the 200's To, with the recorder's tag
    uri: str
    cseq: int
    answer: Response
    rtp_ports: list[int] = field(default_factory=list)  # the answer's, per accepted line


class SipCaller:
    """A UAC on one UDP socket: INVITE, ACK, BYE, CANCEL, re-INVITE."""

    def __init__(self, sip_port: int) -> None:
        self.target = ("127.0.0.1", sip_port)
        self.transport: asyncio.DatagramTransport | None = None
        self.inbox: _Inbox | None = None
        self.port = 0
        self.requests: list[Request] = []  # requests the recorder sent us (its BYE)
        self.last_sent = ""  # the request a final answer is awaited for, resent till then

    async def open(self) -> SipCaller:
        self.transport, self.inbox = await udp_socket()
        self.port = self.transport.get_extra_info("sockname")[1]
        return self

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()

    def send(self, text: str) -> None:
        assert self.transport is not None
        self.transport.sendto(text.encode(), self.target)

    async def receive(self, timeout_s: float = 5.0) -> Request | Response:
        assert self.inbox is not None
        async with asyncio.timeout(timeout_s):
            data, _ = await self.inbox.queue.get()
        return parse_datagram(data)

    async def final(self, method: str, timeout_s: float = 10.0) -> Response:
        """The next final answer to `method`, the request resent as a UAC does over UDP
        (Timer A: 0.5 s, doubling) until anything answers it; requests the recorder sends
        meanwhile are kept in `requests` (and a BYE answered 200, as a UA would)."""
        resend, interval = self.last_sent, 0.5
        async with asyncio.timeout(timeout_s):
            while True:
                try:
                    message = await self.receive(interval if resend else timeout_s)
                except TimeoutError:
                    self.send(resend)
                    interval = min(interval * 2, 4.0)
                    continue
                if isinstance(message, Request):
                    self.requests.append(message)
                    if message.method == "BYE":
                        self.answer(message, 200, "OK")
                    continue
                answered = (message.headers.get("cseq") or "").split()[-1:]
                if answered == [method]:
                    resend = ""  # a provisional answer stops the retransmissions
                    if message.status >= 200:
                        return message

    def answer(self, request: Request, status: int, reason: str) -> None:
        head = [f"SIP/2.0 {status} {reason}"]
        for name in ("via", "from", "to", "call-id", "cseq"):
            head += [f"{name}: {v}" for v in request.headers.get_all(name)]
        self.send("\r\n".join([*head, "Content-Length: 0", "", ""]))

    def request(
        self,
        method: str,
        uri: str,
        *,
        call_id: str,
        from_tag: str,
        to: str,
        cseq: int,
        body: str = "",
        content_type: str = "application/sdp",
        headers: tuple[str, ...] = (),
        branch: str | None = None,
    ) -> str:
        branch = branch or "z9hG4bK" + secrets.token_hex(6)
        lines = [
            f"{method} {uri} SIP/2.0",
            f"Via: SIP/2.0/UDP 127.0.0.1:{self.port};branch={branch};rport",
            "Max-Forwards: 70",
            f"From: <sip:caller@127.0.0.1>;tag={from_tag}",
            f"To: {to}",
            f"Call-ID: {call_id}",
            f"CSeq: {cseq} {method}",
            f"Contact: <sip:caller@127.0.0.1:{self.port}>",
            *headers,
        ]
        if body:
            lines.append(f"Content-Type: {content_type}")
        lines.append(f"Content-Length: {len(body.encode())}")
        text = "\r\n".join(lines) + "\r\n\r\n" + body
        self.send(text)
        self.last_sent = text
        return branch

    async def invite(
        self,
        user: str,
        body: str,
        *,
        headers: tuple[str, ...] = (),
        content_type: str = "application/sdp",
        after: Dialog | None = None,
        ack: bool = True,
        timeout_s: float = 10.0,
    ) -> Dialog:
        """INVITE sip:<user>@recorder; the final answer, ACKed (a 2xx's ACK is its own
        transaction; a non-2xx's reuses the INVITE's branch) unless `ack` is False, as a
        caller that vanished. `after`: the INVITE this one retries (a digest challenge's
        answer): its Call-ID and From tag, CSeq + 1."""
        uri = f"sip:{user}@127.0.0.1:{self.target[1]}"
        if after is None:
            call_id, from_tag = secrets.token_hex(8) + "@127.0.0.1", secrets.token_hex(4)
            cseq = 1
        else:
            call_id, from_tag, cseq = after.call_id, after.from_tag, after.cseq + 1
        branch = self.request(
            "INVITE",
            uri,
            call_id=call_id,
            from_tag=from_tag,
            to=f"<{uri}>",
            cseq=cseq,
            body=body,
            headers=headers,
            content_type=content_type,
        )
        answer = await self.final("INVITE", timeout_s)
        to = answer.headers.get("to") or ""
        if ack:
            self.request(
                "ACK",
                uri,
                call_id=call_id,
                from_tag=from_tag,
                to=to,
                cseq=cseq,
                branch=None if answer.status < 300 else branch,
            )
        dialog = Dialog(call_id, from_tag, to, uri, cseq, answer)
        if answer.status == 200:
            dialog.rtp_ports = [
                int(line.split()[1])
                for line in answer.body.decode().splitlines()
                if line.startswith("m=audio ") and line.split()[1] != "0"
            ]
        return dialog

    async def in_dialog(
        self,
        dialog: Dialog,
        method: str,
        body: str = "",
        *,
        content_type: str = "application/sdp",
        headers: tuple[str, ...] = (),
    ) -> Response:
        dialog.cseq += 1
        branch = self.request(
            method,
            dialog.uri,
            call_id=dialog.call_id,
            from_tag=dialog.from_tag,
            to=dialog.to,
            cseq=dialog.cseq,
            body=body,
            content_type=content_type,
            headers=headers,
        )
        answer = await self.final(method)
        if method == "INVITE":  # a non-2xx's ACK is in the INVITE's transaction, as above
            self.request(
                "ACK",
                dialog.uri,
                call_id=dialog.call_id,
                from_tag=dialog.from_tag,
                to=dialog.to,
                cseq=dialog.cseq,
                branch=None if answer.status < 300 else branch,
            )
        return answer


class RtpSender:
    """One RTP source: its SSRC, sequence and timestamp, sent from its own UDP port."""

    def __init__(self, to_port: int, *, pt: int = 8, ssrc: int | None = None) -> None:
        self.to = ("127.0.0.1", to_port)
        self.pt = pt
        self.ssrc = secrets.randbits(32) if ssrc is None else ssrc
        self.seq = secrets.randbits(16)
        self.ts = secrets.randbits(32)
        self.transport: asyncio.DatagramTransport | None = None
        self.port = 0

    async def open(self, port: int = 0, host: str = "127.0.0.1") -> RtpSender:
        self.transport, _ = await udp_socket(port, host)
        self.port = int(self.transport.get_extra_info("sockname")[1])
        return self

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()

    def packet(self, payload: bytes, *, marker: bool = False, pt: int | None = None) -> bytes:
        first = 0x80
        second = (0x80 if marker else 0) | (self.pt if pt is None else pt)
        head = RTP_HEADER.pack(first, second, self.seq, self.ts, self.ssrc)
        self.seq = (self.seq + 1) % 65536
        self.ts = (self.ts + len(payload)) % 2**32
        return head + payload

    def send(self, payload: bytes, *, marker: bool = False, pt: int | None = None) -> None:
        assert self.transport is not None
        self.transport.sendto(self.packet(payload, marker=marker, pt=pt), self.to)

    def burst(self, payload: bytes, frames: int) -> None:
        """`frames` packets at once, as a flood comes (the recorder admits rtp/stream.py's
        BURST of them, then RATE_PER_S)."""
        for _ in range(frames):
            self.send(payload)

    async def play(self, payload: bytes, frames: int, *, every_s: float = 0.01) -> None:
        """`frames` packets, one each `every_s` (scheduled on the loop's clock), returning
        once the last has left. Placement follows their timestamps, not their pace: twice
        a phone's rate keeps a test short and well under the flood limit."""
        await self.play_each([payload] * frames, every_s=every_s)

    async def play_each(self, payloads: Sequence[bytes], *, every_s: float = 0.02) -> None:
        """A packet of each payload in turn, one each `every_s`, as `play` sends them."""
        loop = asyncio.get_running_loop()
        done = loop.create_future()
        start = loop.time()

        def send(n: int) -> None:
            if self.transport is None or self.transport.is_closing():
                if not done.done():
                    done.cancel()
                return
            self.send(payloads[n])
            if n + 1 == len(payloads):
                done.set_result(None)

        for n in range(len(payloads)):
            loop.call_at(start + n * every_s, send, n)
        await done
