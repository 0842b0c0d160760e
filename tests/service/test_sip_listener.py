"""The SIP listener's transaction layer on real sockets, against sipp and raw packets
(telephony/media/sip/uas.py; SIP.md 1, 2.3 and 9; S7 for hostile input).

Sessions are not wired yet (issue 13): an INVITE that gets past the transaction layer is
answered 480 by the base `Sessions`, which is what these tests see of it.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from telephony.media.sip import uas
from telephony.media.sip.message import Request, Response, StreamFramer, parse_datagram
from telephony.media.sip.replies import new_tag, reply
from telephony.media.sip.uas import Sessions, SipListener
from tests.support.sipp_peer import sipp
from tests.support.waiting import eventually


@pytest.fixture
async def listener() -> AsyncIterator[SipListener]:
    sip = SipListener("127.0.0.1", 0)
    await sip.start()
    yield sip
    await sip.close()


class Peer:
    """A raw UDP client: what it sends and what comes back, byte for byte."""

    def __init__(self, port: int) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.setblocking(False)
        self.port = int(self.sock.getsockname()[1])
        self.target = ("127.0.0.1", port)

    async def send(self, data: bytes) -> None:
        await asyncio.get_running_loop().sock_sendto(self.sock, data, self.target)

    async def receive(self, timeout_s: float = 2.0) -> Response:
        async with asyncio.timeout(timeout_s):
            data, _ = await asyncio.get_running_loop().sock_recvfrom(self.sock, 65535)
        message = parse_datagram(data)
        assert isinstance(message, Response)
        return message

    async def nothing_within(self, seconds: float) -> bool:
        try:
            await self.receive(seconds)
        except TimeoutError:
            return True
        return False

    def request(
        self, method: str, *, branch: str = "z9hG4bK-t1", extra: str = "", cseq: int = 1
    ) -> bytes:
        return (
            f"{method} sip:rec@127.0.0.1:{self.target[1]} SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP 127.0.0.1:{self.port};branch={branch};rport\r\n"
            f"From: <sip:t@127.0.0.1>;tag=peer1\r\n"
            f"To: <sip:rec@127.0.0.1>\r\n"
            f"Call-ID: call-{branch}\r\n"
            f"CSeq: {cseq} {method}\r\n"
            f"{extra}"
            f"Content-Length: 0\r\n\r\n"
        ).encode()


@pytest.fixture
async def peer(listener: SipListener) -> AsyncIterator[Peer]:
    p = Peer(listener.port)
    yield p
    p.sock.close()


# -- against sipp --------------------------------------------------------------------------


@pytest.mark.parametrize("transport", ["u1", "t1"])
async def test_sipp_pings_with_options_and_reads_siprec_in_supported(
    listener: SipListener, tmp_path: Path, transport: str
) -> None:
    await sipp(listener.port, tmp_path, scenario="options.xml", transport=transport)


@pytest.mark.parametrize("transport", ["u1", "t1"])
async def test_sipp_gets_420_naming_the_unknown_extension_and_acks_it(
    listener: SipListener, tmp_path: Path, transport: str
) -> None:
    traces = await sipp(
        listener.port, tmp_path, scenario="require_unknown.xml", transport=transport
    )

    assert "SIP/2.0 420 Bad Extension" in traces
    lines = [line.strip() for line in traces.splitlines()]
    assert "Unsupported: foo" in lines  # siprec is ours: only foo is named


# -- raw UDP ---------------------------------------------------------------------------------


async def test_garbage_and_unsolicited_responses_are_dropped_unanswered(
    listener: SipListener, peer: Peer
) -> None:
    await peer.send(b"\x80\x08\x00\x01" + bytes(172))  # an RTP packet on the SIP port
    await peer.send(b"GET / HTTP/1.1\r\n\r\n")
    await peer.send(b"SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP x;branch=z9hG4bKq\r\n\r\n")
    await peer.send(b"\r\n\r\n")  # a keep-alive, not garbage

    assert await peer.nothing_within(0.5)
    assert listener.drops["garbage"] == 2
    assert listener.drops["unsolicited_response"] == 1


async def test_a_retransmitted_request_gets_the_same_answer_not_a_second_one(
    listener: SipListener, peer: Peer
) -> None:
    await peer.send(peer.request("OPTIONS"))
    first = await peer.receive()
    await peer.send(peer.request("OPTIONS"))  # the same branch: a retransmission
    again = await peer.receive()
    await peer.send(peer.request("OPTIONS", branch="z9hG4bK-t2"))  # a new transaction
    other = await peer.receive()

    assert first.status == 200
    assert again.headers.get("to") == first.headers.get("to")  # the same tag: the same answer
    assert other.headers.get("to") != first.headers.get("to")
    assert first.headers.get_all("allow") == [
        "INVITE",
        "ACK",
        "BYE",
        "CANCEL",
        "OPTIONS",
        "UPDATE",
        "INFO",
    ]
    assert first.headers.get_all("accept") == ["application/sdp", "multipart/mixed"]
    via = first.headers.get("via") or ""
    assert f";rport={peer.port}" in via and ";received=127.0.0.1" in via


@pytest.mark.parametrize(
    ("method", "status"),
    [
        ("REGISTER", 405),
        ("SUBSCRIBE", 405),
        ("FOO", 501),
        ("BYE", 481),
        ("UPDATE", 481),
        ("CANCEL", 481),
    ],
)
async def test_methods_a_recorder_does_not_serve_and_requests_for_no_dialog(
    peer: Peer, method: str, status: int
) -> None:
    await peer.send(peer.request(method))

    answer = await peer.receive()

    assert answer.status == status
    assert answer.headers.get("cseq") == f"1 {method}"
    if status == 405:
        assert "INVITE" in answer.headers.get_all("allow")


async def test_an_ack_is_never_answered(peer: Peer) -> None:
    await peer.send(peer.request("ACK"))

    assert await peer.nothing_within(0.5)


async def test_a_request_missing_call_id_is_a_400_with_a_warning(peer: Peer) -> None:
    raw = peer.request("OPTIONS").replace(b"Call-ID: call-z9hG4bK-t1\r\n", b"")

    await peer.send(raw)
    answer = await peer.receive()

    assert answer.status == 400
    assert "call-id" in (answer.headers.get("warning") or "")


async def test_a_request_without_a_usable_via_is_dropped(listener: SipListener, peer: Peer) -> None:
    raw = peer.request("OPTIONS").replace(b"Call-ID: call-z9hG4bK-t1\r\n", b"")
    raw = raw.replace(
        f"Via: SIP/2.0/UDP 127.0.0.1:{peer.port};branch=z9hG4bK-t1;rport\r\n".encode(), b""
    )

    await peer.send(raw)

    assert await peer.nothing_within(0.5)
    assert listener.drops["malformed"] == 1


async def test_a_refused_invite_is_resent_on_timer_g_until_its_ack(peer: Peer) -> None:
    await peer.send(peer.request("INVITE"))

    trying = await peer.receive()
    final = await peer.receive()
    resent = await peer.receive(timeout_s=1.5)  # T1 = 500 ms later: no ACK came
    await peer.send(peer.request("ACK"))  # same branch: the INVITE's transaction

    assert (trying.status, final.status, resent.status) == (100, 480, 480)
    assert resent.headers.get("to") == final.headers.get("to")
    assert await peer.nothing_within(1.5)  # the ACK stopped the resending


async def test_a_retransmitted_invite_is_answered_again_not_handled_again(peer: Peer) -> None:
    await peer.send(peer.request("INVITE"))
    assert (await peer.receive()).status == 100
    final = await peer.receive()
    await peer.send(peer.request("INVITE"))

    again = await peer.receive()

    assert again.status == 480 and again.headers.get("to") == final.headers.get("to")
    await peer.send(peer.request("ACK"))


class SlowSessions(Sessions):
    """The listener's extension point answering late, as a database-backed one may: what
    the listener does with copies of an INVITE that arrive meanwhile."""

    def __init__(self) -> None:
        self.invites = 0
        self.answer = asyncio.Event()  # set by the test once the copies are in

    async def invite(self, request: Request, peer: uas.Peer) -> Response:
        self.invites += 1
        await self.answer.wait()
        return reply(request, 486, "Busy Here", source=peer.source, to_tag=new_tag())


async def test_copies_of_an_invite_being_handled_get_the_100_and_no_second_handling() -> None:
    sessions = SlowSessions()
    sip = SipListener("127.0.0.1", 0, sessions)
    await sip.start()
    peer = Peer(sip.port)
    try:
        await peer.send(peer.request("INVITE"))
        await peer.send(peer.request("INVITE"))  # resent at T1, while the first is handled
        statuses = [(await peer.receive()).status for _ in range(2)]
        sessions.answer.set()
        statuses.append((await peer.receive()).status)
        await peer.send(peer.request("ACK"))
    finally:
        peer.sock.close()
        await sip.close()

    assert statuses == [100, 100, 486]
    assert sessions.invites == 1


# -- raw TCP ---------------------------------------------------------------------------------


async def tcp_exchange(port: int, data: bytes, *, wait_s: float = 1.0) -> tuple[bytes, bool]:
    """Send, then read what comes back within `wait_s`; and whether the server closed."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(data)
    await writer.drain()
    received, closed = b"", False
    with contextlib.suppress(TimeoutError):  # still open at the end of the wait
        async with asyncio.timeout(wait_s):
            while chunk := await reader.read(65535):
                received += chunk
            closed = True
    writer.close()
    return received, closed


def tcp_request(method: str, branch: str, *, length: bool = True, extra: str = "") -> bytes:
    return (
        f"{method} sip:rec@127.0.0.1 SIP/2.0\r\n"
        f"Via: SIP/2.0/TCP 127.0.0.1:5999;branch={branch}\r\n"
        "From: <sip:t@127.0.0.1>;tag=peer1\r\n"
        "To: <sip:rec@127.0.0.1>\r\n"
        f"Call-ID: tcp-{branch}\r\n"
        f"CSeq: 1 {method}\r\n"
        f"{extra}" + ("Content-Length: 0\r\n" if length else "") + "\r\n"
    ).encode()


async def test_tcp_answers_pipelined_requests_in_order_and_pongs_pings(
    listener: SipListener,
) -> None:
    data = tcp_request("OPTIONS", "z9hG4bK-a") + b"\r\n\r\n" + tcp_request("FOO", "z9hG4bK-b")

    received, closed = await tcp_exchange(listener.port, data)

    framer = StreamFramer()
    answers = [m for m in framer.feed(received) if isinstance(m, Response)]
    assert [a.status for a in answers] == [200, 501]
    assert received.endswith(b"Content-Length: 0\r\n\r\n\r\n")  # the pong: one CRLF
    assert not closed  # the connection stays for more


async def test_tcp_without_content_length_is_a_400_and_the_connection_closes(
    listener: SipListener,
) -> None:
    received, closed = await tcp_exchange(
        listener.port, tcp_request("OPTIONS", "z9hG4bK-c", length=False)
    )

    assert received.startswith(b"SIP/2.0 400 ")
    assert closed


async def test_tcp_headers_past_the_limit_are_a_513_or_a_close(listener: SipListener) -> None:
    huge = tcp_request("OPTIONS", "z9hG4bK-d", extra="X-Pad: " + "a" * 20_000 + "\r\n")

    received, closed = await tcp_exchange(listener.port, huge)

    assert closed
    assert received == b"" or received.startswith(b"SIP/2.0 513 ")
    await eventually(lambda: listener.drops["malformed"] + listener.drops["refused"] >= 1)
