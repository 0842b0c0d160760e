"""SDP offer/answer for the recorder (telephony/media/sip/sdp.py; SIP.md 3 and 4.5)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from telephony.media.sip import sdp

# SIP.md 4.5: a SIPREC SRC's two labelled sendonly streams.
SIPREC_OFFER = (
    b"v=0\r\n"
    b"o=SBC 8612 8612 IN IP4 198.51.100.7\r\n"
    b"s=-\r\n"
    b"c=IN IP4 198.51.100.8\r\n"
    b"t=0 0\r\n"
    b"m=audio 30000 RTP/AVP 8 0 101\r\n"
    b"a=rtpmap:101 telephone-event/8000\r\n"
    b"a=label:10\r\n"
    b"a=sendonly\r\n"
    b"m=audio 30002 RTP/AVP 8 0 101\r\n"
    b"a=rtpmap:101 telephone-event/8000\r\n"
    b"a=label:11\r\n"
    b"a=sendonly\r\n"
)


def answered(offer: bytes, ports: list[int] | None = None) -> tuple[sdp.Answer, str]:
    result = sdp.answer(sdp.parse(offer), ports or [40000, 40002, 40004, 40006])
    return result, result.render(address="203.0.113.20", session_id="4242", version=1).decode()


def test_the_siprec_example_is_answered_as_sip_md_shows() -> None:
    result, text = answered(SIPREC_OFFER)

    assert text == (
        "v=0\r\n"
        "o=- 4242 1 IN IP4 203.0.113.20\r\n"
        "s=-\r\n"
        "c=IN IP4 203.0.113.20\r\n"
        "t=0 0\r\n"
        "m=audio 40000 RTP/AVP 8 101\r\n"
        "a=rtpmap:8 PCMA/8000\r\n"
        "a=rtpmap:101 telephone-event/8000\r\n"
        "a=fmtp:101 0-15\r\n"
        "a=label:10\r\n"
        "a=recvonly\r\n"
        "m=audio 40002 RTP/AVP 8 101\r\n"
        "a=rtpmap:8 PCMA/8000\r\n"
        "a=rtpmap:101 telephone-event/8000\r\n"
        "a=fmtp:101 0-15\r\n"
        "a=label:11\r\n"
        "a=recvonly\r\n"
    )
    assert [(s.label, s.codec, s.pt, s.event_pt) for s in result.streams] == [
        ("10", "PCMA", 8, 101),
        ("11", "PCMA", 8, 101),
    ]
    assert result.streams[0].remote == ("198.51.100.8", 30000)


def test_labels_are_copied_byte_for_byte() -> None:
    offer = SIPREC_OFFER.replace(b"a=label:10", b"a=label:01").replace(b"a=label:11", b"a=label:1")

    _, text = answered(offer)

    assert "a=label:01\r\n" in text and "a=label:1\r\n" in text  # 01 is not 1


def test_pcmu_first_is_kept_and_static_types_need_no_rtpmap() -> None:
    offer = b"v=0\r\no=- 1 1 IN IP4 10.0.0.1\r\nc=IN IP4 10.0.0.1\r\nm=audio 5000 RTP/AVP 0 8\r\n"

    result, text = answered(offer)

    assert (result.streams[0].codec, result.streams[0].pt) == ("PCMU", 0)
    assert "a=rtpmap:0 PCMU/8000" in text
    assert result.streams[0].direction == "recvonly"  # sendrecv by default


def test_a_dynamic_payload_type_for_g711_keeps_its_number() -> None:
    offer = (
        b"v=0\r\nc=IN IP4 10.0.0.1\r\nm=audio 5000 RTP/AVP 96 0\r\n"
        b"a=rtpmap:96 pcma/8000\r\n"  # any case
    )

    result, _ = answered(offer)

    assert (result.streams[0].codec, result.streams[0].pt) == ("PCMA", 96)


def test_one_codec_for_every_stream_that_offers_it() -> None:
    offer = SIPREC_OFFER.replace(
        b"RTP/AVP 8 0 101\r\na=rtpmap:101 telephone-event/8000\r\na=label:11",
        b"RTP/AVP 0 8 101\r\na=rtpmap:101 telephone-event/8000\r\na=label:11",
    )

    result, _ = answered(offer)

    assert [s.codec for s in result.streams] == ["PCMA", "PCMA"]  # the first stream's choice


@pytest.mark.parametrize(
    ("offered", "answer_direction"),
    [
        ("sendonly", "recvonly"),
        ("sendrecv", "recvonly"),
        ("recvonly", "inactive"),
        ("inactive", "inactive"),
    ],
)
def test_directions_per_offer(offered: str, answer_direction: str) -> None:
    offer = SIPREC_OFFER.replace(b"a=sendonly", f"a={offered}".encode())

    result, text = answered(offer)

    assert {s.direction for s in result.streams} == {answer_direction}
    assert text.count(f"a={answer_direction}\r\n") == 2


def test_a_session_level_direction_applies_to_streams_without_their_own() -> None:
    offer = b"v=0\r\nc=IN IP4 10.0.0.1\r\na=inactive\r\nm=audio 5000 RTP/AVP 0\r\n"

    result, _ = answered(offer)

    assert result.streams[0].direction == "inactive"


def test_video_srtp_and_codecless_lines_are_declined_with_port_zero_in_place() -> None:
    offer = (
        b"v=0\r\nc=IN IP4 10.0.0.1\r\n"
        b"m=video 5002 RTP/AVP 96\r\na=rtpmap:96 H264/90000\r\n"
        b"m=audio 5004 RTP/SAVP 0\r\na=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:x\r\n"
        b"m=audio 5006 RTP/AVP 9 13\r\n"  # G.722 and comfort noise only
        b"m=audio 5008 RTP/AVP 8 13\r\n"
    )

    result, text = answered(offer)

    m_lines = [line for line in text.split("\r\n") if line.startswith("m=")]
    assert m_lines == [
        "m=video 0 RTP/AVP 96",
        "m=audio 0 RTP/SAVP 0",
        "m=audio 0 RTP/AVP 9",
        "m=audio 40000 RTP/AVP 8",  # the first port goes to the first accepted stream
    ]
    assert [s.index for s in result.streams] == [3]
    assert "13" not in m_lines[3]  # comfort noise is never answered


@pytest.mark.parametrize(
    ("offer", "warning"),
    [
        (b"v=0\r\nc=IN IP4 1.2.3.4\r\nm=audio 5000 RTP/SAVP 0\r\n", 302),
        (b"v=0\r\nc=IN IP4 1.2.3.4\r\nm=audio 5000 RTP/AVP 9\r\n", 305),
        (b"v=0\r\nc=IN IP4 1.2.3.4\r\nm=video 5000 RTP/AVP 96\r\n", 399),
        (b"v=0\r\nc=IN IP4 1.2.3.4\r\n", 399),
    ],
)
def test_nothing_recordable_is_a_488_with_the_nearest_warning(offer: bytes, warning: int) -> None:
    with pytest.raises(sdp.NotAcceptable) as refused:
        sdp.answer(sdp.parse(offer), [40000])

    assert refused.value.warning == warning


def test_lenient_reading_of_field_sdp() -> None:
    offer = (
        b"v=0\n"  # bare LF
        b"o=OpenSIPS 1 1 IN IP4 10.0.0.1\n"
        b"m=audio 5000 RTP/AVP 8\n"  # no t=, c= only per stream
        b"c=IN IP4 10.0.0.9\n"
        b"a=3gOoBTC\n"  # an unknown attribute
        b"a=rtpmap:abc nonsense\n"
        b"a=rtcp:5011\n"
    )

    result, _ = answered(offer)

    assert result.streams[0].remote == ("10.0.0.9", 5000)
    assert sdp.parse(offer).streams[0].rtcp_port == 5011


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"\xff\xfe",
        b"hello",
        b"v=0\r\nm=audio\r\n",
        b"v=0\r\nm=audio 99999 RTP/AVP 0\r\n",
        b"v=0\r\nm=audio \xd9\xa1 RTP/AVP 0\r\n",  # a Unicode digit as the port
        b"v=0\r\nc=IN\r\n",
        b"v=0\r\no=short\r\n",
        b"m=audio 5000 RTP/AVP 0\r\n",  # no v=
    ],
)
def test_unreadable_sdp_is_refused(body: bytes) -> None:
    with pytest.raises((sdp.SdpError, sdp.NotAcceptable)):
        sdp.parse(body)


def test_the_offerers_origin_is_never_copied() -> None:
    _, text = answered(SIPREC_OFFER)

    assert "SBC 8612" not in text


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=1024))
def test_any_body_is_parsed_or_refused_and_nothing_else(body: bytes) -> None:
    try:
        offer = sdp.parse(body)
        result = sdp.answer(offer, list(range(40000, 40000 + 2 * sdp.MAX_STREAMS, 2)))
    except (sdp.SdpError, sdp.NotAcceptable):
        return
    assert result.streams  # an answer records something...
    assert sum(line.startswith("m=") for line in result.lines) == len(offer.streams)  # ...in line


@settings(max_examples=200, deadline=None)
@given(st.permutations([b"a=label:10", b"a=sendonly", b"a=rtpmap:101 telephone-event/8000"]))
def test_attribute_order_does_not_change_the_answer(order: list[bytes]) -> None:
    stream = b"m=audio 30000 RTP/AVP 8 0 101\r\n" + b"\r\n".join(order) + b"\r\n"
    offer = b"v=0\r\nc=IN IP4 198.51.100.8\r\n" + stream

    result, _ = answered(offer)

    assert [(s.label, s.codec, s.event_pt, s.direction) for s in result.streams] == [
        ("10", "PCMA", 101, "recvonly")
    ]
