"""SIP's wire format (telephony/media/sip/message.py, replies.py; SIP.md 2.1, 2.2 and 9).

Every input ends as a message, `Garbage` (dropped unanswered) or `BadMessage` (answered
with its status): hostile input is S7's business, and a parser that raises anything else
would take the listener down with it.
"""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from telephony.media.sip.message import (
    MAX_BODY_BYTES,
    MAX_HEADER_BYTES,
    BadMessage,
    Garbage,
    Request,
    Response,
    StreamFramer,
    is_keepalive,
    parse_datagram,
    serialize,
    split_list,
)
from telephony.media.sip.replies import parse_via, reply, reply_address

SDP = (
    b"v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
    b"m=audio 6000 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n"
)


def invite(body: bytes = SDP, *, length: int | None = None, extra: str = "") -> bytes:
    """An INVITE as sipp's uac scenario sends it."""
    head = (
        "INVITE sip:tok_abc@127.0.0.1:5060 SIP/2.0\r\n"
        "Via: SIP/2.0/UDP 127.0.0.1:5061;branch=z9hG4bK-1-0\r\n"
        "From: sipp <sip:sipp@127.0.0.1:5061>;tag=1\r\n"
        "To: <sip:tok_abc@127.0.0.1:5060>\r\n"
        "Call-ID: 1-42@127.0.0.1\r\n"
        "CSeq: 1 INVITE\r\n"
        "Contact: sip:sipp@127.0.0.1:5061\r\n"
        "Max-Forwards: 70\r\n"
        "Content-Type: application/sdp\r\n"
        f"{extra}"
        f"Content-Length: {len(body) if length is None else length}\r\n\r\n"
    )
    return head.encode() + body


def test_an_invite_parses_to_its_method_uri_headers_and_body() -> None:
    message = parse_datagram(invite())

    assert isinstance(message, Request)
    assert (message.method, message.uri) == ("INVITE", "sip:tok_abc@127.0.0.1:5060")
    assert message.call_id == "1-42@127.0.0.1"
    assert message.cseq == (1, "INVITE")
    assert message.headers.get("FROM") == "sipp <sip:sipp@127.0.0.1:5061>;tag=1"
    assert message.body == SDP


def test_compact_forms_folding_and_bare_line_feeds_are_read() -> None:
    raw = (
        b"OPTIONS sip:rec@127.0.0.1 SIP/2.0\n"
        b"v: SIP/2.0/TCP 10.0.0.1;branch=z9hG4bKa\n"
        b"f: <sip:a@b>;tag=x\n"
        b"t: <sip:rec@127.0.0.1>\n"
        b"i: abc\n"
        b"CSeq: 7\n OPTIONS\n"  # folded onto the next line
        b"k: timer, siprec\n"
        b"l: 0\n\n"
    )
    message = parse_datagram(raw)

    assert isinstance(message, Request)
    assert message.cseq == (7, "OPTIONS")
    assert message.headers.get_all("supported") == ["timer", "siprec"]
    assert message.headers.get("via") == "SIP/2.0/TCP 10.0.0.1;branch=z9hG4bKa"


def test_list_headers_split_on_commas_outside_brackets_and_quotes() -> None:
    value = '"Doe, John" <sip:a@b;x=1,2>, <sip:c@d>'

    assert split_list(value) == ['"Doe, John" <sip:a@b;x=1,2>', "<sip:c@d>"]
    assert split_list('"a \\" , b" <sip:x>, y') == ['"a \\" , b" <sip:x>', "y"]


def test_a_datagram_body_runs_to_its_end_or_stops_at_content_length() -> None:
    without = invite().replace(f"Content-Length: {len(SDP)}\r\n".encode(), b"")
    shorter = invite(SDP + b"trailing junk", length=len(SDP))

    assert parse_datagram(without).body == SDP
    assert parse_datagram(shorter).body == SDP  # the excess is discarded


def test_a_content_length_past_the_datagram_is_a_400_that_can_be_answered() -> None:
    with pytest.raises(BadMessage) as refused:
        parse_datagram(invite(length=len(SDP) + 1))

    assert refused.value.status == 400
    assert refused.value.parsed is not None
    assert refused.value.parsed.call_id == "1-42@127.0.0.1"  # enough to route the answer


@pytest.mark.parametrize("header", ["Via", "From", "To", "Call-ID", "CSeq"])
def test_a_request_without_a_mandatory_header_is_a_400(header: str) -> None:
    lines = [line for line in invite().split(b"\r\n") if not line.startswith(header.encode())]

    with pytest.raises(BadMessage) as refused:
        parse_datagram(b"\r\n".join(lines))

    assert refused.value.status == 400
    assert header.lower() in refused.value.reason


@pytest.mark.parametrize(
    "bad",
    [
        "CSeq: 1\r\n",  # no method
        "CSeq: \u0661 INVITE\r\n",  # an Arabic-Indic digit one
        "CSeq: 99999999999 INVITE\r\n",  # past 2**31 - 1
        "CSeq: 1 BYE\r\n",  # another method
    ],
)
def test_a_malformed_cseq_is_a_400(bad: str) -> None:
    raw = invite().replace(b"CSeq: 1 INVITE\r\n", bad.encode())

    with pytest.raises(BadMessage) as refused:
        parse_datagram(raw)
    assert refused.value.status == 400


@pytest.mark.parametrize(
    "line",
    [
        b"Subject: a\x00b\r\n",  # NUL
        b"Subject: a\x1bb\r\n",  # escape
        b"Subject: \xff\xfe\r\n",  # not UTF-8
        b"no colon here\r\n",
        b": no name\r\n",
        b"Content-Length: \xd9\xa1\r\n",  # a Unicode digit
    ],
)
def test_control_characters_bad_utf8_and_nameless_lines_are_a_400(line: bytes) -> None:
    raw = invite().replace(b"Max-Forwards: 70\r\n", line)

    with pytest.raises(BadMessage) as refused:
        parse_datagram(raw)
    assert refused.value.status == 400


def test_two_different_content_lengths_are_a_400() -> None:
    with pytest.raises(BadMessage):
        parse_datagram(invite(extra="Content-Length: 3\r\n"))


@pytest.mark.parametrize(
    "raw",
    [
        b"",
        b"\x00\x01\x02garbage",
        b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
        b"\x80\x00\x12\x34" + bytes(160),  # an RTP packet on the SIP port
        b"SIP/2.0 abc OK\r\n\r\n",
    ],
)
def test_what_is_not_sip_is_garbage_and_never_answered(raw: bytes) -> None:
    with pytest.raises(Garbage):
        parse_datagram(raw)


def test_a_head_cut_short_is_a_400() -> None:
    cut = invite()[:200]  # inside the headers: no empty line

    with pytest.raises(BadMessage) as refused:
        parse_datagram(cut)
    assert refused.value.status == 400


def test_huge_headers_or_bodies_are_a_513() -> None:
    big_header = invite(extra="Subject: " + "a" * MAX_HEADER_BYTES + "\r\n")
    big_body = invite(b"x" * (MAX_BODY_BYTES + 1))

    for raw in (big_header, big_body):
        with pytest.raises(BadMessage) as refused:
            parse_datagram(raw)
        assert refused.value.status == 513


def test_crlf_pings_are_keepalives_not_messages() -> None:
    assert is_keepalive(b"\r\n\r\n")
    assert is_keepalive(b"\r\n")
    assert not is_keepalive(b"")
    assert not is_keepalive(invite())


def test_a_response_parses_to_its_status_and_reason() -> None:
    raw = b"SIP/2.0 180 Ringing\r\nVia: SIP/2.0/UDP a;branch=z9hG4bKx\r\nContent-Length: 0\r\n\r\n"

    message = parse_datagram(raw)

    assert isinstance(message, Response)
    assert (message.status, message.reason) == (180, "Ringing")


def test_serializing_keeps_every_field_and_writes_one_true_content_length() -> None:
    message = parse_datagram(invite(extra=f"Content-Length: {len(SDP)}\r\n"))
    message.body = b"v=0\r\n"

    again = parse_datagram(serialize(message))

    assert again.headers.get_all("content-length") == ["5"]
    assert again.body == b"v=0\r\n"
    assert [f for f in again.headers.fields if f[0] != "content-length"] == [
        f for f in message.headers.fields if f[0] != "content-length"
    ]


# -- TCP ---------------------------------------------------------------------------------


def test_the_stream_framer_splits_messages_whatever_the_reads() -> None:
    stream = invite() + b"\r\n\r\n" + invite(b"")
    for size in (1, 7, 64, len(stream)):
        framer = StreamFramer()
        out = []
        for start in range(0, len(stream), size):
            out += framer.feed(stream[start : start + size])

        assert [type(m) for m in out] == [Request, Request]
        assert [m.body for m in out if isinstance(m, Request)] == [SDP, b""]
        assert framer.pings == 1


def test_a_stream_message_without_content_length_is_a_400() -> None:
    raw = invite().replace(f"Content-Length: {len(SDP)}\r\n".encode(), b"")

    out = StreamFramer().feed(raw)

    assert isinstance(out[0], BadMessage)
    assert out[0].status == 400


def test_endless_stream_headers_are_a_513() -> None:
    framer = StreamFramer()
    out = framer.feed(b"INVITE sip:x@y SIP/2.0\r\n" + b"X-Pad: " + b"a" * MAX_HEADER_BYTES)

    assert isinstance(out[0], BadMessage)
    assert out[0].status == 513
    assert not framer.buffer  # nothing kept of it


# -- answers -----------------------------------------------------------------------------


def test_a_reply_copies_the_vias_and_stamps_the_top_one_with_the_real_source() -> None:
    raw = invite().replace(
        b"Via: SIP/2.0/UDP 127.0.0.1:5061;branch=z9hG4bK-1-0\r\n",
        b"Via: SIP/2.0/UDP 10.1.1.1:5061;branch=z9hG4bK-1-0;rport\r\n"
        b"Via: SIP/2.0/UDP proxy.example;branch=z9hG4bKp\r\n",
    )
    request = parse_datagram(raw)
    assert isinstance(request, Request)

    answer = reply(request, 200, "OK", source=("192.0.2.7", 40000), to_tag="abc")

    assert answer.headers.get_all("via") == [
        "SIP/2.0/UDP 10.1.1.1:5061;branch=z9hG4bK-1-0;rport=40000;received=192.0.2.7",
        "SIP/2.0/UDP proxy.example;branch=z9hG4bKp",
    ]
    assert answer.headers.get("to") == "<sip:tok_abc@127.0.0.1:5060>;tag=abc"
    assert answer.headers.get("cseq") == "1 INVITE"
    assert reply_address(request, ("192.0.2.7", 40000)) == ("192.0.2.7", 40000)


def test_a_100_carries_no_tag_and_a_tagged_to_keeps_its_own() -> None:
    request = parse_datagram(invite())
    assert isinstance(request, Request)
    trying = reply(request, 100, "Trying", source=("127.0.0.1", 5061), to_tag="abc")
    request.headers.fields = [
        (k, v + ";tag=theirs" if k == "to" else v) for k, v in request.headers.fields
    ]
    in_dialog = reply(request, 200, "OK", source=("127.0.0.1", 5061), to_tag="abc")

    assert ";tag=" not in (trying.headers.get("to") or "")
    assert (in_dialog.headers.get("to") or "").endswith(";tag=theirs")
    # the sent-by is the source: no received added
    assert trying.headers.get("via") == "SIP/2.0/UDP 127.0.0.1:5061;branch=z9hG4bK-1-0"


def test_without_rport_an_answer_goes_to_the_sent_by_port_or_5060() -> None:
    request = parse_datagram(invite())
    assert isinstance(request, Request)
    assert reply_address(request, ("127.0.0.1", 40000)) == ("127.0.0.1", 5061)
    request.headers.fields = [
        (k, "SIP/2.0/UDP host.example;branch=z9hG4bKq" if k == "via" else v)
        for k, v in request.headers.fields
    ]
    assert reply_address(request, ("127.0.0.1", 40000)) == ("127.0.0.1", 5060)


def test_vias_of_ipv6_and_with_bad_ports() -> None:
    via = parse_via("SIP/2.0/TCP [2001:db8::1]:5070;branch=z9hG4bKv6;rport")

    assert via is not None
    assert (via.transport, via.host, via.port, via.branch) == (
        "TCP",
        "2001:db8::1",
        5070,
        "z9hG4bKv6",
    )
    assert via.has("rport") and via.param("rport") == ""
    assert parse_via("SIP/2.0/UDP host:70000;branch=x") is None
    assert parse_via("nonsense") is None


# -- properties --------------------------------------------------------------------------

OUTCOMES = (Request, Response, Garbage, BadMessage)


def outcome(raw: bytes) -> type:
    try:
        return type(parse_datagram(raw))
    except (Garbage, BadMessage) as exc:
        return type(exc)


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=2048))
def test_any_bytes_end_as_a_message_garbage_or_a_refusal(raw: bytes) -> None:
    assert outcome(raw) in OUTCOMES  # any other exception fails the test too


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=512), st.binary(max_size=512))
def test_any_bytes_after_a_valid_head_end_in_the_same_three(noise: bytes, body: bytes) -> None:
    assert outcome(invite(body)[:200] + noise) in OUTCOMES
    assert outcome(invite(body) + noise) in OUTCOMES
    for item in StreamFramer().feed(invite(body) + noise):
        assert isinstance(item, Request | Response | Garbage | BadMessage)


_values = (
    st.text(
        # Printable ASCII and Latin letters (no C1 controls); no commas, which split lists.
        st.sampled_from([chr(c) for c in range(0x20, 0x300) if not 0x7F <= c < 0xA0 and c != 0x2C]),
        min_size=1,
        max_size=40,
    )
    .map(str.strip)
    .filter(bool)
)


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.tuples(st.sampled_from(["subject", "x-media-token", "user-agent"]), _values)),
    st.binary(max_size=600),
    st.integers(min_value=1, max_value=64),
)
def test_well_formed_requests_survive_serializing_and_any_tcp_reads(
    extra: list[tuple[str, str]], body: bytes, read_size: int
) -> None:
    request = parse_datagram(invite(b""))
    assert isinstance(request, Request)
    for name, value in extra:
        request.headers.add(name, value)
    request.body = body
    wire = serialize(request)

    again = parse_datagram(wire)
    framer, framed = StreamFramer(), []
    for start in range(0, len(wire), read_size):
        framed += framer.feed(wire[start : start + read_size])

    assert isinstance(again, Request)
    assert again.body == body
    assert [(k, v) for k, v in again.headers.fields if k in ("subject", "x-media-token")] == [
        (k, v) for k, v in extra if k in ("subject", "x-media-token")
    ]
    assert len(framed) == 1 and isinstance(framed[0], Request) and framed[0].body == body
