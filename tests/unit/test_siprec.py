"""SIPREC bodies (RFC 7866, RFC 7865; SIP.md 4): the multipart body and the metadata.

The variations are the ones SRCs send (SIP.md 8, "Vary it"): the legacy
metadata type, a quoted boundary, metadata first, bare LF, namespace forms;
and the hostile ones of SIP.md 9: entities, DTDs, a wrong boundary.
"""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from telephony.media.sip import metadata, multipart

SDP = b"v=0\r\no=SRC 1 1 IN IP4 192.0.2.1\r\ns=-\r\nc=IN IP4 192.0.2.1\r\nt=0 0\r\n"
XML = b"""<?xml version="1.0" encoding="UTF-8"?>
<recording xmlns="urn:ietf:params:xml:ns:recording:1">
  <datamode>complete</datamode>
  <participant participant_id="cEE=">
    <nameID aor="sip:+48221234567@pbx.example;user=phone"/></participant>
  <participant participant_id="cEI=">
    <nameID aor="tel:+48-601-234-567;phone-context=+48"/></participant>
  <stream stream_id="czE=" session_id="c2Vzcw=="><label>1</label></stream>
  <stream stream_id="czI=" session_id="c2Vzcw=="><label>2</label></stream>
  <participantstreamassoc participant_id="cEE=">
    <send>czE=</send><recv>czI=</recv></participantstreamassoc>
  <participantstreamassoc participant_id="cEI=">
    <send>czI=</send><recv>czE=</recv></participantstreamassoc>
</recording>"""


def body(*parts: tuple[str, bytes], boundary: str = "foobar", newline: bytes = b"\r\n") -> bytes:
    out = b"preamble, ignored" + newline
    for headers, content in parts:
        out += b"--" + boundary.encode() + newline + headers.encode() + newline + newline
        out += content + newline
    return out + b"--" + boundary.encode() + b"--" + newline + b"epilogue"


# -- multipart ---------------------------------------------------------------------------------


def test_parts_come_back_with_their_types_and_exact_content() -> None:
    raw = body(
        ("Content-Type: application/sdp", SDP),
        (
            "Content-Type: application/rs-metadata+xml\r\nContent-Disposition: recording-session",
            XML,
        ),
    )
    parts = multipart.parse("multipart/mixed;boundary=foobar", raw)
    assert [p.media_type for p in parts] == ["application/sdp", "application/rs-metadata+xml"]
    assert parts[0].content == SDP and parts[1].content == XML
    assert parts[1].disposition == "recording-session"


@pytest.mark.parametrize(
    "content_type",
    [
        'multipart/mixed; boundary="foobar"',
        "multipart/mixed;BOUNDARY=foobar;charset=utf-8",
        "Multipart/Mixed ; boundary = foobar",
    ],
)
def test_a_quoted_or_spaced_boundary_is_found(content_type: str) -> None:
    parts = multipart.parse(content_type, body(("Content-Type: application/sdp", SDP)))
    assert parts[0].content == SDP


def test_bare_lf_and_trailing_blanks_on_delimiters_are_accepted() -> None:
    raw = body(("Content-Type: application/sdp", b"v=0\nm=audio 1 RTP/AVP 0"), newline=b"\n")
    raw = raw.replace(b"--foobar\n", b"--foobar  \n", 1)
    parts = multipart.parse("multipart/mixed;boundary=foobar", raw)
    assert parts[0].content == b"v=0\nm=audio 1 RTP/AVP 0"


@pytest.mark.parametrize(
    ("content_type", "raw"),
    [
        ("multipart/mixed", body(("Content-Type: application/sdp", SDP))),
        ("multipart/mixed;boundary=other", body(("Content-Type: application/sdp", SDP))),
        ("multipart/mixed;boundary=foobar", b"no delimiters at all"),
    ],
    ids=["no-boundary", "wrong-boundary", "never-found"],
)
def test_a_missing_or_wrong_boundary_is_refused(content_type: str, raw: bytes) -> None:
    with pytest.raises(multipart.BadMultipart):
        multipart.parse(content_type, raw)


def test_more_parts_than_a_siprec_body_has_are_refused() -> None:
    raw = body(*[("Content-Type: text/plain", b"x")] * (multipart.MAX_PARTS + 1))
    with pytest.raises(multipart.BadMultipart):
        multipart.parse("multipart/mixed;boundary=foobar", raw)


@given(st.binary(max_size=2000), st.text(alphabet="abcXYZ019'()+_-", min_size=1, max_size=70))
def test_any_bytes_parse_or_are_refused_and_never_crash(raw: bytes, boundary: str) -> None:
    try:
        parts = multipart.parse(f'multipart/mixed;boundary="{boundary}"', raw)
    except multipart.BadMultipart:
        return
    assert len(parts) <= multipart.MAX_PARTS + 1


@given(
    st.lists(st.binary(max_size=300).filter(lambda b: b"--bnd" not in b), min_size=1, max_size=5)
)
def test_what_is_put_in_comes_back_out(contents: list[bytes]) -> None:
    raw = body(*[("Content-Type: application/octet-stream", c) for c in contents], boundary="bnd")
    parts = multipart.parse("multipart/mixed;boundary=bnd", raw)
    assert [p.content for p in parts] == contents


# -- metadata ----------------------------------------------------------------------------------


def test_participants_streams_and_senders_are_read() -> None:
    found = metadata.parse(XML)
    assert found.complete
    customer = found.sender_of("1")
    other = found.sender_of("2")
    assert customer is not None and customer.numbers == ("+48221234567",)
    assert other is not None and other.numbers == ("+48601234567",)
    assert found.sender_of("3") is None and found.sender_of(None) is None


@pytest.mark.parametrize(
    "variant",
    [
        XML.replace(b"recording:1", b"recording"),  # one SBC's namespace, without :1
        XML.replace(b'xmlns="urn:ietf:params:xml:ns:recording:1"', b"")
        .replace(b"<recording", b'<tns:recording xmlns:tns="urn:ietf:params:xml:ns:recording:1"')
        .replace(b"</recording>", b"</tns:recording>"),
        XML.replace(b"participant_id=", b"id=").replace(b"stream_id=", b"id="),  # the drafts'
        XML.replace(b"<datamode>complete</datamode>", b"<unknown>skipped</unknown>"),
    ],
    ids=["namespace-without-1", "prefixed-root", "draft-ids", "unknown-element"],
)
def test_the_forms_srcs_send_read_alike(variant: bytes) -> None:
    found = metadata.parse(variant)
    sender = found.sender_of("1")
    assert sender is not None and sender.numbers == ("+48221234567",)


@pytest.mark.parametrize(
    ("aor", "number"),
    [
        ("sip:+48221234567@carrier.example;user=phone", "+48221234567"),
        ("sip:123@ims.example;noa=international", "123"),
        ("tel:+48221234567;phone-context=example.com", "+48221234567"),
        ("tel:+48 (22) 123-45.67", "+48221234567"),
        ("sips:%2B48221234567@example.com", "+48221234567"),
        ("sip:example.com", None),
        ("mailto:someone@example.com", None),
        ("no scheme", None),
    ],
)
def test_an_aors_number_is_its_user_part_without_separators(aor: str, number: str | None) -> None:
    assert metadata.number_of(aor) == number


def test_a_partial_update_replaces_by_id_and_a_complete_one_replaces_all() -> None:
    first = metadata.parse(XML)
    joined = metadata.parse(
        b"""<recording xmlns="urn:ietf:params:xml:ns:recording:1"><datamode>partial</datamode>
        <participant participant_id="cEM="><nameID aor="tel:+442079460958"/></participant>
        <participantstreamassoc participant_id="cEM="><send>czI=</send></participantstreamassoc>
        <participantstreamassoc participant_id="cEI="><recv>czE=</recv></participantstreamassoc>
        </recording>"""
    )
    merged = first.merged(joined)
    sender = merged.sender_of("2")
    assert sender is not None and sender.numbers == ("+442079460958",)  # after a transfer
    assert set(merged.participants) == {"cEE=", "cEI=", "cEM="}
    complete = metadata.parse(XML.replace(b"cEI=", b"cEZ="))
    assert set(first.merged(complete).participants) == {"cEE=", "cEZ="}


EXTERNAL_ENTITY = b"""<?xml version="1.0"?>
<!DOCTYPE recording [<!ENTITY x SYSTEM "file:///etc/passwd">]>
<recording xmlns="urn:ietf:params:xml:ns:recording:1">
<participant participant_id="a"><nameID aor="&x;"/></participant></recording>"""
BILLION_LAUGHS = b"""<?xml version="1.0"?>
<!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
<!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">]>
<recording><participant participant_id="&lol3;"/></recording>"""


@pytest.mark.parametrize(
    "hostile",
    [
        EXTERNAL_ENTITY,
        BILLION_LAUGHS,
        b'<?xml version="1.0"?><!DOCTYPE recording SYSTEM "http://127.0.0.1:9/x.dtd"><recording/>',
        b"<recording><participant>",  # not well-formed
        b"<notrecording/>",
        b"<recording>" + b"<x/>" * (metadata.MAX_ELEMENTS + 1) + b"</recording>",
        b"<recording>" + b" " * metadata.MAX_BYTES + b"</recording>",
    ],
    ids=["xxe", "billion-laughs", "external-dtd", "unclosed", "wrong-root", "elements", "size"],
)
def test_hostile_or_broken_metadata_is_refused_before_anything_is_expanded(hostile: bytes) -> None:
    with pytest.raises(metadata.BadMetadata):
        metadata.parse(hostile)
