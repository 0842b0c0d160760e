"""The one internal event type every wire dialect is parsed into: the recorder knows no dialect."""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple, Protocol

from telephony.media.codecs import Encoding

# The tracks a JSON dialect can send: a `start` that names none may send either.
KNOWN_TRACKS = ("inbound", "outbound")


@dataclass(frozen=True)
class Connected:
    """A stream's first frame. Telnyx carries the stream's auth token in it (a
    `stream_auth_token` the customer set to the call's media token)."""

    token: str | None


@dataclass(frozen=True)
class StreamStart:
    token: str | None  # the media token from the dialect's metadata slot, if present
    # The tracks the stored recording keeps, one channel each. A start that names none
    # (Telnyx's never does) gets every track the dialect can send: a frame of either is
    # kept, and a track that never sends is silence.
    tracks: tuple[str, ...]
    encoding: Encoding
    sample_rate_hz: int  # of the stored audio: a packet codec's own (media.codecs.stored_rate)
    stream_id: str | None


class Audio(NamedTuple):
    """A tuple, not a dataclass: one is made for every frame of every call."""

    track: str  # "inbound" (the counterparts) or "outbound" (the customer's side)
    payload: bytes  # codec bytes as received, whole samples only
    timestamp_ms: int | None  # since stream start; None: right after this track's previous audio
    sequence: int | None
    samples: int | None = None  # a packet codec's packet length, from its header; None: L16/G.711
    # RTP's placement, in samples since the stream began: exact where a millisecond is not
    # (a re-anchored SSRC lands on any sample). Set, it wins over `timestamp_ms`.
    position: int | None = None


@dataclass(frozen=True)
class Dtmf:
    digit: str
    track: str | None


@dataclass(frozen=True)
class Mark:
    name: str


@dataclass(frozen=True)
class StreamStop:
    reason: str | None


MediaEvent = Connected | StreamStart | Audio | Dtmf | Mark | StreamStop


class ProtocolViolation(Exception):
    """The peer broke the wire format; the socket closes with `close_code` and `reason`.

    1003: text where binary is expected, or the reverse, or audio the service
    cannot decode (an unknown encoding: refused before anything is stored).
    1007: a payload that is not what the dialect promises (not JSON, bad
    base64, wrong types, media before start, a second start, a track the
    stream did not declare).
    """

    def __init__(self, close_code: int, reason: str) -> None:
        super().__init__(reason)
        self.close_code = close_code
        self.reason = reason[:123]  # a close frame's reason is at most 123 bytes


class Parser(Protocol):
    dialect: str
    subprotocols: tuple[str, ...]

    def feed_text(self, text: str) -> list[MediaEvent]: ...
    def feed_binary(self, data: bytes) -> list[MediaEvent]: ...
    def finish(self) -> list[MediaEvent]: ...
