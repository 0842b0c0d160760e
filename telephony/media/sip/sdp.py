"""SDP offer/answer for a recorder (RFC 4566, RFC 3264; SIP.md 3).

A recorder only receives: each offered audio stream is answered `recvonly` (or
`inactive`) on a port of its own, in one G.711 codec kept as it arrives, with
RFC 4733 digits beside it; everything else is declined with port 0, line for
line, as offer/answer requires. What is read is lenient (SBCs in the field
send odd SDP: unknown attributes, no `t=`, `c=` only per stream, static
payload types without `a=rtpmap`); what is written is exact.
"""

from __future__ import annotations

from dataclasses import dataclass, field

G711 = {"PCMU": 0, "PCMA": 8}  # name -> static payload type (RFC 3551)
PREFERRED = ("PCMA", "PCMU")  # the first offered of these wins (SIP.md 3)
CLOCK_HZ = 8000
COMFORT_NOISE_PT = 13  # never answered
DIRECTIONS = ("sendrecv", "sendonly", "recvonly", "inactive")
ANSWERED_DIRECTION = {
    "sendrecv": "recvonly",
    "sendonly": "recvonly",
    "recvonly": "inactive",
    "inactive": "inactive",
}
MAX_STREAMS = 16


class SdpError(Exception):
    """The body is not SDP a stream can be read from: answered 400 (or 488 at the caller)."""


@dataclass(frozen=True)
class NotAcceptable(Exception):
    """No offered stream can be recorded: 488 with `Warning: <code>` (SIP.md 1 and 3)."""

    warning: int  # 302 incompatible transport, 305 incompatible media format, 399 other
    reason: str


@dataclass
class Stream:
    """One `m=` line of an offer, with what the recorder reads of it."""

    media: str
    port: int
    proto: str
    formats: list[str]
    rtpmap: dict[int, tuple[str, int]] = field(default_factory=dict)  # pt -> (NAME, clock)
    fmtp: dict[int, str] = field(default_factory=dict)
    direction: str | None = None
    label: str | None = None  # a=label, byte for byte
    address: str | None = None  # the media-level c=
    rtcp_port: int | None = None

    def codec_of(self, pt: int) -> str | None:
        """A format's codec name: its rtpmap, or a static payload type's (0 and 8)."""
        if pt in self.rtpmap:
            return self.rtpmap[pt][0]
        return next((name for name, static in G711.items() if static == pt), None)


@dataclass
class Offer:
    origin: tuple[str, str, str] | None  # (user, sess-id, sess-version)
    address: str | None  # the session-level c=
    direction: str | None  # the session-level direction attribute
    streams: list[Stream]


def parse(body: bytes) -> Offer:
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise SdpError("SDP is not UTF-8") from None
    origin = address = direction = None
    streams: list[Stream] = []
    seen_version = False
    for raw in text.replace("\r\n", "\n").split("\n"):
        line = raw.strip()
        if not line:
            continue
        kind, eq, value = line.partition("=")
        if not eq or len(kind) != 1:
            raise SdpError("an SDP line is not <type>=<value>")
        if kind == "v":
            seen_version = True
        elif kind == "o":
            parts = value.split()
            if len(parts) != 6:
                raise SdpError("o= needs six fields")
            origin = (parts[0], parts[1], parts[2])
        elif kind == "m":
            if len(streams) >= MAX_STREAMS:
                raise SdpError("too many m= lines")
            streams.append(_media_line(value))
        elif kind == "c":
            if streams:
                streams[-1].address = _connection(value)
            else:
                address = _connection(value)
        elif kind == "a":
            name, _, attr = value.partition(":")
            if streams:
                _attribute(streams[-1], name, attr)
            elif name in DIRECTIONS:
                direction = name
    if not seen_version:
        raise SdpError("no v= line")
    if not streams:
        raise NotAcceptable(399, "no media streams offered")
    return Offer(origin, address, direction, streams)


def _media_line(value: str) -> Stream:
    parts = value.split()
    if len(parts) < 4:
        raise SdpError("m= needs media, port, protocol and formats")
    port_text = parts[1].split("/")[0]
    if not port_text.isascii() or not port_text.isdigit() or int(port_text) > 65535:
        raise SdpError("m= port is not a port")
    return Stream(parts[0].lower(), int(port_text), parts[2], parts[3:])


def _connection(value: str) -> str:
    parts = value.split()
    if len(parts) < 3 or parts[0] != "IN":
        raise SdpError("c= is not IN IP4|IP6 <address>")
    return parts[2].split("/")[0]


def _attribute(stream: Stream, name: str, value: str) -> None:
    if name in DIRECTIONS:
        stream.direction = name
    elif name == "label":
        stream.label = value
    elif name in ("rtpmap", "fmtp"):
        pt_text, _, rest = value.partition(" ")
        if not pt_text.isascii() or not pt_text.isdigit() or int(pt_text) > 127:
            return  # lenient: a line we cannot use is skipped, like unknown attributes
        pt = int(pt_text)
        if name == "fmtp":
            stream.fmtp[pt] = rest.strip()
            return
        encoding = rest.strip().split("/")
        if len(encoding) >= 2 and encoding[1].isascii() and encoding[1].isdigit():
            stream.rtpmap[pt] = (encoding[0].upper(), int(encoding[1]))
    elif name == "rtcp":
        port = value.split()[0] if value.split() else ""
        if port.isascii() and port.isdigit() and int(port) <= 65535:
            stream.rtcp_port = int(port)


# -- the answer --------------------------------------------------------------------------


@dataclass(frozen=True)
class Accepted:
    """What one answered stream will carry: the receiver is set up from this."""

    index: int  # of its m= line
    port: int  # ours
    codec: str  # PCMU or PCMA
    pt: int  # the offer's payload type for it
    event_pt: int | None  # telephone-event's, when offered
    direction: str  # recvonly or inactive
    label: str | None
    remote: tuple[str, int] | None  # where the offer says it sends from (latching decides)


@dataclass(frozen=True)
class Answer:
    streams: tuple[Accepted, ...]
    lines: tuple[str, ...]  # every m= line's block, in the offer's order

    def render(self, *, address: str, session_id: str, version: int) -> bytes:
        """The SDP body: our own o= (never the offerer's), a session-level c=."""
        head = [
            "v=0",
            f"o=- {session_id} {version} IN {_family(address)} {address}",
            "s=-",
            f"c=IN {_family(address)} {address}",
            "t=0 0",
        ]
        return ("\r\n".join([*head, *self.lines]) + "\r\n").encode()


def answer(offer: Offer, ports: list[int]) -> Answer:
    """Answer `offer`, giving the i-th accepted stream `ports[i]` (even, RTCP on + 1).

    Raises NotAcceptable when no stream can be recorded (the 488 case).
    """
    codec = _session_codec(offer)
    accepted: list[Accepted] = []
    lines: list[str] = []
    reasons: list[int] = []
    for index, stream in enumerate(offer.streams):
        refusal = _refusal(stream)
        chosen = _stream_codec(stream, codec) if refusal is None else None
        if chosen is None:
            reasons.append(refusal or 305)
            first = stream.formats[0] if stream.formats else "0"
            lines.append(f"m={stream.media} 0 {stream.proto} {first}")
            continue
        if len(accepted) >= len(ports):
            raise ValueError("a port is needed for every accepted stream")
        name, pt = chosen
        event_pt = _event_pt(stream)
        direction = ANSWERED_DIRECTION[stream.direction or offer.direction or "sendrecv"]
        port = ports[len(accepted)]
        formats = f"{pt}" if event_pt is None else f"{pt} {event_pt}"
        block = [f"m=audio {port} RTP/AVP {formats}", f"a=rtpmap:{pt} {name}/{CLOCK_HZ}"]
        if event_pt is not None:
            block.append(f"a=rtpmap:{event_pt} telephone-event/{CLOCK_HZ}")
            block.append(f"a=fmtp:{event_pt} {stream.fmtp.get(event_pt) or '0-15'}")
        if stream.label is not None:
            block.append(f"a=label:{stream.label}")
        block.append(f"a={direction}")
        lines.extend(block)
        remote_host = stream.address or offer.address
        accepted.append(
            Accepted(
                index,
                port,
                name,
                pt,
                event_pt,
                direction,
                stream.label,
                (remote_host, stream.port) if remote_host and stream.port else None,
            )
        )
    if not accepted:
        # The nearest miss names the refusal: audio without G.711, then SRTP, then no audio.
        warning = 305 if 305 in reasons else 302 if 302 in reasons else 399
        raise NotAcceptable(warning, _WARNINGS[warning])
    return Answer(tuple(accepted), tuple(lines))


_WARNINGS = {
    302: "only secure or unknown transports offered (SRTP comes later)",
    305: "no G.711 (PCMU or PCMA) audio offered",
    399: "no audio stream to record",
}


def _refusal(stream: Stream) -> int | None:
    """Why a line is declined outright (a Warning code), or None."""
    if stream.media != "audio" or stream.port == 0:
        return 399
    if stream.proto.upper() != "RTP/AVP":
        return 302
    return None


def _payload_types(stream: Stream) -> list[int]:
    return [int(f) for f in stream.formats if f.isascii() and f.isdigit() and int(f) <= 127]


def _g711_offered(stream: Stream) -> list[tuple[str, int]]:
    """(codec, pt) of the G.711 formats at 8 kHz the line offers, in its order."""
    found = []
    for pt in _payload_types(stream):
        name = stream.codec_of(pt)
        clock = stream.rtpmap.get(pt, (name, CLOCK_HZ))[1]
        if name in G711 and clock == CLOCK_HZ and pt != COMFORT_NOISE_PT:
            found.append((name, pt))
    return found


def _session_codec(offer: Offer) -> str | None:
    """One codec for every stream where offered (one WAV, one format tag): the first
    stream's first offered of PCMA and PCMU."""
    for stream in offer.streams:
        if _refusal(stream) is None:
            for name, _ in _g711_offered(stream):
                if name in PREFERRED:
                    return name
    return None


def _stream_codec(stream: Stream, session: str | None) -> tuple[str, int] | None:
    offered = _g711_offered(stream)
    choices = [(name, pt) for name, pt in offered if name == session] or offered
    return choices[0] if choices else None


def _event_pt(stream: Stream) -> int | None:
    for pt in _payload_types(stream):
        name, clock = stream.rtpmap.get(pt, ("", 0))
        if name == "TELEPHONE-EVENT" and clock == CLOCK_HZ and 96 <= pt <= 127:
            return pt
    return None


def _family(address: str) -> str:
    return "IP6" if ":" in address else "IP4"
