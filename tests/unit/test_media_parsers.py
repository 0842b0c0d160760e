"""Wire dialects (PROTOCOLS.md) parsed into one internal event type: pure, no sockets."""

from __future__ import annotations

import base64
import json
import struct

import pytest

from telephony.media.events import (
    Audio,
    Connected,
    Dtmf,
    Mark,
    ProtocolViolation,
    StreamStart,
    StreamStop,
)
from telephony.media.ws import DIALECTS, parser_for

ULAW = bytes(range(160))


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def twilio_start(**start: object) -> str:
    body = {
        "streamSid": "MZ1",
        "callSid": "CA1",
        "tracks": ["inbound", "outbound"],
        "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1},
        "customParameters": {"token": "mt_abc"},
        **start,
    }
    return json.dumps({"event": "start", "sequenceNumber": "1", "streamSid": "MZ1", "start": body})


def test_every_dialect_has_a_parser() -> None:
    assert {parser_for(d).dialect for d in DIALECTS} == set(DIALECTS)
    with pytest.raises(ValueError):
        parser_for("skype")


# -- twilio (camelCase JSON) -----------------------------------------------------------


def test_twilio_stream_is_parsed_in_order() -> None:
    p = parser_for("twilio")

    events = [
        *p.feed_text(json.dumps({"event": "connected", "protocol": "Call", "version": "1.0.0"})),
        *p.feed_text(twilio_start()),
        *p.feed_text(
            json.dumps(
                {
                    "event": "media",
                    "sequenceNumber": "2",
                    "media": {
                        "track": "outbound",
                        "chunk": "2",
                        "timestamp": "40",
                        "payload": b64(ULAW),
                    },
                }
            )
        ),
        *p.feed_text(
            json.dumps({"event": "dtmf", "dtmf": {"track": "inbound_track", "digit": "1"}})
        ),
        *p.feed_text(json.dumps({"event": "mark", "mark": {"name": "greeting"}})),
        *p.feed_text(json.dumps({"event": "stop", "stop": {}})),
    ]

    assert events == [
        Connected(None),
        StreamStart("mt_abc", ("inbound", "outbound"), "mulaw", 8000, "MZ1"),
        Audio("outbound", ULAW, 40, 2),
        Dtmf("1", "inbound"),
        Mark("greeting"),
        StreamStop("stop"),
    ]


@pytest.mark.parametrize(
    ("frames", "code"),
    [
        (["{oops"], 1007),
        (["[1]"], 1007),
        (['{"event": "media", "media": {"payload": "AAAA"}}'], 1007),  # media before start
        ([twilio_start(), twilio_start()], 1007),  # a second start
        ([twilio_start(), '{"event": "media", "media": {"payload": "***"}}'], 1007),
        (
            [twilio_start(), '{"event": "media", "media": {"payload": "AAAA", "timestamp": "x"}}'],
            1007,
        ),
        (
            [twilio_start(), '{"event": "media", "media": {"payload": "AAAA", "timestamp": "-5"}}'],
            1007,
        ),
        # An encoding the service cannot decode is refused before anything is stored.
        ([twilio_start(mediaFormat={"encoding": "audio/speex", "sampleRate": 16000})], 1003),
    ],
)
def test_twilio_malformed_frames_raise_with_a_close_code(frames: list[str], code: int) -> None:
    p = parser_for("twilio")

    with pytest.raises(ProtocolViolation) as info:
        for frame in frames:
            p.feed_text(frame)

    assert info.value.close_code == code
    assert 0 < len(info.value.reason.encode()) <= 123


def test_twilio_refuses_binary_frames() -> None:
    with pytest.raises(ProtocolViolation) as info:
        parser_for("twilio").feed_binary(b"\x00")

    assert info.value.close_code == 1003


def test_unknown_events_are_ignored() -> None:
    p = parser_for("twilio")
    p.feed_text(twilio_start())

    assert p.feed_text(json.dumps({"event": "future-thing", "x": 1})) == []
    assert p.feed_text(json.dumps({"event": "media", "media": {"payload": ""}})) == []


# -- telnyx (snake_case JSON) -----------------------------------------------------------


def test_telnyx_snake_case_with_l16_and_numeric_counters() -> None:
    p = parser_for("telnyx")
    start = {
        "event": "start",
        "sequence_number": "1",
        "stream_id": "s1",
        "start": {
            "call_control_id": "v3:x",
            "media_format": {"encoding": "L16", "sample_rate": 16000, "channels": 1},
            "custom_parameters": {"token": "mt_t"},
        },
    }
    pcm = struct.pack(">4h", 1, -1, 256, -256)

    events = [
        *p.feed_text(json.dumps(start)),
        *p.feed_text(
            json.dumps(
                {
                    "event": "media",
                    "media": {
                        "track": "inbound",
                        "chunk": 7,
                        "timestamp": 140,
                        "payload": b64(pcm),
                    },
                }
            )
        ),
        *p.feed_text(json.dumps({"event": "error", "payload": {"code": 1, "title": "t"}})),
    ]

    assert events == [
        # Telnyx's start names no tracks: either may send (issue 15).
        StreamStart("mt_t", ("inbound", "outbound"), "l16be", 16000, "s1"),
        Audio("inbound", pcm, 140, 7),
    ]
    assert p.last_error == {"code": 1, "title": "t"}  # type: ignore[attr-defined]


@pytest.mark.parametrize(("encoding", "expected"), [("PCMU", "mulaw"), ("PCMA", "alaw")])
def test_telnyx_g711_encodings(encoding: str, expected: str) -> None:
    p = parser_for("telnyx")
    start = {
        "event": "start",
        "start": {"media_format": {"encoding": encoding, "sample_rate": 8000}},
    }

    (event,) = p.feed_text(json.dumps(start))

    assert isinstance(event, StreamStart)
    assert event.encoding == expected


# -- jambonz and mod_audio_fork (binary L16) -----------------------------------------------


def jambonz_metadata(mix: str = "stereo", **extra: object) -> str:
    return json.dumps(
        {"sampleRate": 8000, "mixType": mix, "callSid": "c1", "token": "mt_j", **extra}
    )


def test_jambonz_stereo_is_split_into_two_tracks() -> None:
    p = parser_for("jambonz")
    samples = struct.pack("<6h", 1, -1, 2, -2, 3, -3)  # L R L R L R

    start = p.feed_text(jambonz_metadata())
    audio = p.feed_binary(samples)

    assert start == [StreamStart("mt_j", ("inbound", "outbound"), "l16le", 8000, "c1")]
    assert audio == [
        Audio("inbound", struct.pack("<3h", 1, 2, 3), None, None),
        Audio("outbound", struct.pack("<3h", -1, -2, -3), None, None),
    ]
    assert p.subprotocols == ("audio.jambonz.org",)


def test_a_stereo_pair_split_across_frames_is_reassembled() -> None:
    p = parser_for("jambonz")
    p.feed_text(jambonz_metadata())
    samples = struct.pack("<4h", 10, -10, 20, -20)

    first = p.feed_binary(samples[:5])  # an odd byte count: a pair and a half
    second = p.feed_binary(samples[5:])

    assert first == [
        Audio("inbound", samples[0:2], None, None),
        Audio("outbound", samples[2:4], None, None),
    ]
    assert second == [
        Audio("inbound", samples[4:6], None, None),
        Audio("outbound", samples[6:8], None, None),
    ]


def test_jambonz_dtmf_and_order_rules() -> None:
    p = parser_for("jambonz")
    with pytest.raises(ProtocolViolation) as before:
        p.feed_binary(b"\x00\x00")
    p.feed_text(jambonz_metadata("mono"))

    dtmf = p.feed_text(json.dumps({"event": "dtmf", "dtmf": "2", "duration": "1600"}))
    mono = p.feed_binary(b"\x01\x00\x02")

    assert before.value.close_code == 1003
    assert dtmf == [Dtmf("2", None)]
    assert mono == [Audio("inbound", b"\x01\x00", None, None)]


def test_jambonz_metadata_must_be_json() -> None:
    with pytest.raises(ProtocolViolation) as info:
        parser_for("jambonz").feed_text("hello")

    assert info.value.close_code == 1007


def test_audiofork_graceful_shutdown_is_a_zero_length_frame() -> None:
    p = parser_for("audiofork")
    (start,) = p.feed_text(json.dumps({"token": "mt_a", "sampleRate": 16000, "channels": 1}))

    audio = p.feed_binary(b"\x01\x00")
    stop = p.feed_binary(b"")

    assert isinstance(start, StreamStart) and start.sample_rate_hz == 16000
    assert audio == [Audio("inbound", b"\x01\x00", None, None)]
    assert stop == [StreamStop("graceful")]
    assert "audio.drachtio.org" in p.subprotocols


@pytest.mark.parametrize("rate", [0, 7999, 96000, "fast", True])
def test_sample_rates_out_of_range_are_refused(rate: object) -> None:
    with pytest.raises(ProtocolViolation):
        parser_for("audiofork").feed_text(json.dumps({"token": "t", "sampleRate": rate}))


@pytest.mark.parametrize("dialect", ["jambonz", "audiofork"])
def test_a_json_stream_peer_on_a_binary_path_is_told_so(dialect: str) -> None:
    with pytest.raises(ProtocolViolation) as info:
        parser_for(dialect).feed_text(json.dumps({"event": "connected", "protocol": "Call"}))

    assert info.value.close_code == 1007
    assert "twilio" in info.value.reason


# -- tracks a start does not name (issue 15) ----------------------------------------------


def json_start(dialect: str, **start: object) -> str:
    """A start of either JSON dialect without a `tracks` list, as Telnyx sends it."""
    if dialect == "telnyx":
        fmt = {"media_format": {"encoding": "PCMU", "sample_rate": 8000, "channels": 1}}
        body = {"call_control_id": "v3:x", **fmt, "custom_parameters": {"token": "mt_t"}}
        return json.dumps({"event": "start", "stream_id": "s1", "start": {**body, **start}})
    fmt = {"mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1}}
    body = {"callSid": "CA1", **fmt, "customParameters": {"token": "mt_t"}}
    return json.dumps({"event": "start", "streamSid": "s1", "start": {**body, **start}})


def media_frame(track: str, payload: bytes = ULAW) -> str:
    return json.dumps({"event": "media", "media": {"track": track, "payload": b64(payload)}})


@pytest.mark.parametrize("dialect", ["twilio", "telnyx"])
def test_a_start_naming_no_tracks_accepts_both_as_they_come(dialect: str) -> None:
    p = parser_for(dialect)

    [start] = p.feed_text(json_start(dialect))
    inbound = p.feed_text(media_frame("inbound"))
    outbound = p.feed_text(media_frame("outbound_track"))  # the suffix some send

    assert isinstance(start, StreamStart)
    assert start.tracks == ("inbound", "outbound")
    assert inbound == [Audio("inbound", ULAW, None, None)]
    assert outbound == [Audio("outbound", ULAW, None, None)]


@pytest.mark.parametrize("dialect", ["twilio", "telnyx"])
@pytest.mark.parametrize(
    ("declared", "track"),
    [
        (None, "sideways"),  # no start names it: not a track of these dialects
        (None, ""),
        (["inbound"], "outbound"),  # a track this start did not declare
        (["inbound"], "both"),
    ],
)
def test_an_unknown_track_closes_with_1007(
    dialect: str, declared: list[str] | None, track: str
) -> None:
    p = parser_for(dialect)
    p.feed_text(json_start(dialect, **({"tracks": declared} if declared else {})))

    with pytest.raises(ProtocolViolation) as info:
        p.feed_text(media_frame(track))

    assert info.value.close_code == 1007


@pytest.mark.parametrize("dialect", ["twilio", "telnyx"])
def test_a_start_declaring_an_unknown_track_closes_with_1007(dialect: str) -> None:
    with pytest.raises(ProtocolViolation) as info:
        parser_for(dialect).feed_text(json_start(dialect, tracks=["inbound", "left"]))

    assert info.value.close_code == 1007


def test_telnyx_connected_carries_the_stream_auth_token_and_twilio_has_no_such_field() -> None:
    frame = json.dumps(
        {"event": "connected", "version": "1.0.0", "x-telnyx-streaming-auth-token": "mt_abc"}
    )

    assert parser_for("telnyx").feed_text(frame) == [Connected("mt_abc")]
    assert parser_for("twilio").feed_text(frame) == [Connected(None)]
    assert parser_for("telnyx").feed_text('{"event": "connected", "version": "1.0.0"}') == [
        Connected(None)
    ]
    # Its AsyncAPI page writes the field as `connected.x-telnyx-streaming-auth-token`:
    # an object `connected` holding it is read too.
    nested = {"event": "connected", "connected": {"x-telnyx-streaming-auth-token": "mt_n"}}
    assert parser_for("telnyx").feed_text(json.dumps(nested)) == [Connected("mt_n")]


@pytest.mark.parametrize(
    "frame",
    [
        {"event": "error", "payload": {"code": 100003, "title": "malformed_frame"}},
        {"event": "error", "error": {"code": "100005", "title": "rate_limit_reached"}},
    ],
)
def test_both_documented_telnyx_error_shapes_are_kept(frame: dict[str, object]) -> None:
    p = parser_for("telnyx")

    assert p.feed_text(json.dumps(frame)) == []
    assert p.last_error is not None and "title" in p.last_error


@pytest.mark.parametrize(("rate", "accepted"), [(8000, True), (64000, True), (96000, False)])
def test_jambonz_takes_every_sample_rate_it_documents(rate: int, accepted: bool) -> None:
    p = parser_for("jambonz")
    frame = json.dumps({"sampleRate": rate, "mixType": "mono", "token": "mt_x"})

    if accepted:
        [start] = p.feed_text(frame)
        assert isinstance(start, StreamStart) and start.sample_rate_hz == rate
    else:
        with pytest.raises(ProtocolViolation) as info:
            p.feed_text(frame)
        assert info.value.close_code == 1007
