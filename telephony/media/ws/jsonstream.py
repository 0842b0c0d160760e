"""JSON media streams (PROTOCOLS.md §1 camelCase, §2 snake_case): one parser, two spellings."""

from __future__ import annotations

import binascii
from dataclasses import dataclass
from typing import Any

import orjson

from telephony.media.codecs import PACKET_CODECS, Encoding, packet_samples, stored_rate
from telephony.media.decoding import decodable
from telephony.media.events import (
    KNOWN_TRACKS,
    Audio,
    Connected,
    Dtmf,
    Mark,
    MediaEvent,
    ProtocolViolation,
    StreamStart,
    StreamStop,
)

# As Twilio and Telnyx name them (case aside); Telnyx's stream_codec takes PCMU, PCMA,
# G722, OPUS, AMR-WB and L16.
_ENCODINGS: dict[str, Encoding] = {
    "audio/x-mulaw": "mulaw",
    "pcmu": "mulaw",
    "audio/x-alaw": "alaw",
    "pcma": "alaw",
    "l16": "l16be",  # RTP's L16 is big-endian
    "audio/l16": "l16be",
    "g722": "g722",
    "audio/g722": "g722",
    "opus": "opus",
    "audio/opus": "opus",
    "amr-wb": "amrwb",
    "amrwb": "amrwb",
    "audio/amr-wb": "amrwb",
}


@dataclass(frozen=True)
class Spelling:
    stream_id: str
    media_format: str
    sample_rate: str
    custom: str
    auth_token: str | None = None  # a field of `connected` that may carry the media token


CAMEL = Spelling("streamSid", "mediaFormat", "sampleRate", "customParameters")
SNAKE = Spelling(
    "stream_id",
    "media_format",
    "sample_rate",
    "custom_parameters",
    auth_token="x-telnyx-streaming-auth-token",  # noqa: S106 - a field name, not a secret
)


# Every spelling of a known track, to its name: one lookup for each of 50 frames a second.
_TRACK_NAMES = {t: t for t in KNOWN_TRACKS} | {f"{t}_track": t for t in KNOWN_TRACKS}


def _invalid(reason: str) -> ProtocolViolation:
    return ProtocolViolation(1007, reason)


def _int(value: Any, name: str) -> int:
    """Counters arrive as JSON strings ("5") or numbers; both must be whole and >= 0."""
    if isinstance(value, bool):
        raise _invalid(f"{name} is not an integer")
    if isinstance(value, int):
        number = value
    elif isinstance(value, str) and value.isascii() and value.isdigit() and len(value) <= 19:
        # ASCII only: "²" is a digit to str.isdigit() and a ValueError to int().
        number = int(value)
    else:
        raise _invalid(f"{name} is not an integer")
    if number < 0:
        raise _invalid(f"{name} is negative")
    return number


def _track(value: Any) -> str:
    if not isinstance(value, str):
        raise _invalid("track is not a string")
    return value.removesuffix("_track")


def _known_track(value: Any) -> str:
    track = _track(value)
    if track not in KNOWN_TRACKS:
        raise _invalid(f"unknown track {track[:40]}")
    return track


class JsonStreamParser:
    subprotocols: tuple[str, ...] = ()

    def __init__(self, dialect: str, spelling: Spelling) -> None:
        self.dialect = dialect
        self.spelling = spelling
        self.started = False
        self.encoding: Encoding = "mulaw"
        self.tracks: frozenset[str] = frozenset()  # what media frames may name, once started
        self.last_error: dict[str, Any] | None = None

    def feed_binary(self, data: bytes) -> list[MediaEvent]:
        raise ProtocolViolation(1003, "this dialect sends JSON text frames")

    def finish(self) -> list[MediaEvent]:
        return []

    def feed_text(self, text: str) -> list[MediaEvent]:
        try:
            message = orjson.loads(text)  # a quarter of json.loads' time, 50 times a second a leg
        except ValueError:
            raise _invalid("frame is not JSON") from None
        if not isinstance(message, dict):
            raise _invalid("frame is not a JSON object")
        event = message.get("event")
        if event == "media":
            return self._media(message.get("media"))
        if event == "start":
            return [self._start(message)]
        if event == "connected":
            return [Connected(self._auth_token(message))]
        if event == "dtmf":
            dtmf = message.get("dtmf")
            if not isinstance(dtmf, dict) or not isinstance(dtmf.get("digit"), str):
                raise _invalid("dtmf without a digit")
            track = dtmf.get("track")
            return [Dtmf(dtmf["digit"], _track(track) if track is not None else None)]
        if event == "mark":
            mark = message.get("mark")
            name = mark.get("name") if isinstance(mark, dict) else None
            return [Mark(name if isinstance(name, str) else "")]
        if event == "stop":
            return [StreamStop("stop")]
        if event == "error":
            # Telnyx's guide: {payload: {code, title, detail}}; its older spec: {error: {...}}.
            payload = message.get("payload", message.get("error"))
            self.last_error = payload if isinstance(payload, dict) else {"detail": str(payload)}
        return []  # error, and events vendors add later

    def _auth_token(self, message: dict[str, Any]) -> str | None:
        """The token of `connected`, where the dialect has one: Telnyx names the field
        `connected.x-telnyx-streaming-auth-token`, read as a field of the connected frame
        or of an object `connected` inside it."""
        field = self.spelling.auth_token
        if field is None:
            return None
        nested = message.get("connected")
        token = message.get(field) or (nested.get(field) if isinstance(nested, dict) else None)
        return token if isinstance(token, str) and token else None

    def _start(self, message: dict[str, Any]) -> StreamStart:
        if self.started:
            raise _invalid("a second start event")
        start = message.get("start")
        if not isinstance(start, dict):
            raise _invalid("start without its start object")
        fmt = start.get(self.spelling.media_format, {})
        if not isinstance(fmt, dict):
            raise _invalid("media format is not an object")
        raw_encoding = fmt.get("encoding", "audio/x-mulaw")
        encoding = _ENCODINGS.get(str(raw_encoding).lower())
        if encoding is None or (encoding in PACKET_CODECS and not decodable(encoding)):
            # Refused before anything is stored, never found unreadable later.
            raise ProtocolViolation(1003, f"unsupported encoding {str(raw_encoding)[:40]}")
        declared = _int(fmt.get(self.spelling.sample_rate, 8000), "sample rate")
        if not 8000 <= declared <= 48000:
            raise _invalid("sample rate out of range")
        rate = stored_rate(encoding, declared)
        tracks_raw = start.get("tracks")
        tracks: tuple[str, ...]
        if tracks_raw is None:
            tracks = KNOWN_TRACKS  # Telnyx names none, even for both_tracks
        elif isinstance(tracks_raw, list) and tracks_raw:
            tracks = tuple(dict.fromkeys(_known_track(t) for t in tracks_raw))
        else:
            raise _invalid("tracks is not a list of track names")
        custom = start.get(self.spelling.custom)
        token = custom.get("token") if isinstance(custom, dict) else None
        stream_id = message.get(self.spelling.stream_id) or start.get(self.spelling.stream_id)
        self.started = True
        self.encoding = encoding
        self.tracks = frozenset(tracks)
        return StreamStart(
            token if isinstance(token, str) else None,
            tracks,
            encoding,
            rate,
            stream_id if isinstance(stream_id, str) else None,
        )

    def _media(self, media: Any) -> list[MediaEvent]:
        if not self.started:
            raise _invalid("media before start")
        if not isinstance(media, dict) or not isinstance(media.get("payload"), str):
            raise _invalid("media without a payload")
        try:
            payload = binascii.a2b_base64(media["payload"], strict_mode=True)
        except (binascii.Error, ValueError):
            raise _invalid("payload is not base64") from None
        if not payload:
            return []
        timestamp = media.get("timestamp")
        chunk = media.get("chunk")
        raw_track = media.get("track", "inbound")
        track = _TRACK_NAMES.get(raw_track) if isinstance(raw_track, str) else None
        if track is None:
            track = _known_track(raw_track)  # raises, saying why
        if track not in self.tracks:
            raise _invalid(f"media of track {track}, which start did not declare")
        samples = None
        if self.encoding in PACKET_CODECS:
            try:
                samples = packet_samples(self.encoding, payload)
            except ValueError as exc:
                raise _invalid(str(exc)) from None
        return [
            Audio(
                track,
                payload,
                _int(timestamp, "timestamp") if timestamp is not None else None,
                _int(chunk, "chunk") if chunk is not None else None,
                samples,
            )
        ]
