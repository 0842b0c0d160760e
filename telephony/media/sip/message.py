"""SIP messages (RFC 3261 §7, SIP.md 2.1 and 9): bytes to a request or a response, and back.

Why hand-written, not a library: the one asyncio SIP library on PyPI (aiosipua
0.7) parses leniently where SIP.md must refuse (a body shorter than its
Content-Length is kept, a header line without a colon is skipped), and its
UAS treats a retransmitted INVITE as a new call and answers unknown methods
405, not 501. The wire format itself is small; the transaction rules built on
it (telephony/media/sip/) follow SIP.md, so both live here, tested with
hypothesis (tests/unit/test_sip_message.py).

Three outcomes for any input, never another exception:
- a `Request` or `Response`;
- `Garbage`: not SIP at all (no start line); dropped and counted, since
  answering garbage reflects traffic at whoever the source claims to be;
- `BadMessage`: SIP, but refused with a status (400, 513); it carries what
  was parsed, so the answer can be routed back when the top `Via` is usable.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

MAX_HEADER_BYTES = 16 * 1024
MAX_BODY_BYTES = 256 * 1024
MAX_CSEQ = 2**31 - 1  # RFC 3261 §8.1.1.5

# RFC 3261 §7.3.3 and later RFCs' compact forms.
COMPACT = {
    "v": "via",
    "f": "from",
    "t": "to",
    "i": "call-id",
    "m": "contact",
    "l": "content-length",
    "c": "content-type",
    "k": "supported",
    "e": "content-encoding",
    "x": "session-expires",
    "s": "subject",
    "o": "event",
    "r": "refer-to",
    "u": "allow-events",
    "b": "referred-by",
}
# Headers whose comma-separated values are each a header of their own (§7.3.1).
LIST_HEADERS = frozenset(
    {
        "via",
        "route",
        "record-route",
        "contact",
        "require",
        "proxy-require",
        "supported",
        "unsupported",
        "allow",
        "accept",
    }
)
REQUIRED = ("via", "from", "to", "call-id", "cseq")

_NAME_CHARS = r"[A-Za-z0-9.!%*_+`'~-]+"  # RFC 3261 §25.1 "token": methods and header names
_REQUEST_LINE = re.compile(rf"({_NAME_CHARS}) (\S+) SIP/2\.0")
_STATUS_LINE = re.compile(r"SIP/2\.0 ([1-6][0-9][0-9]) ?(.*)")
_HEADER_NAME = re.compile(_NAME_CHARS)
_CONTROL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f-\x9f]")  # C0 and C1; tab is whitespace
_DIGITS = re.compile(r"[0-9]{1,10}")  # ASCII only: "١٢" is a digit to int()


class Garbage(Exception):
    """Not a SIP message: dropped without an answer."""


@dataclass
class BadMessage(Exception):
    """A SIP message refused with `status`; `parsed` holds its headers as far as they went."""

    status: int
    reason: str
    parsed: Request | None = None

    def __str__(self) -> str:
        return f"{self.status} {self.reason}"


@dataclass
class Headers:
    """Header fields in arrival order, names lower-cased and compact forms expanded."""

    fields: list[tuple[str, str]] = field(default_factory=list)

    def get(self, name: str) -> str | None:
        name = name.lower()
        return next((value for key, value in self.fields if key == name), None)

    def get_all(self, name: str) -> list[str]:
        name = name.lower()
        return [value for key, value in self.fields if key == name]

    def add(self, name: str, value: str) -> None:
        self.fields.append((name.lower(), value))

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and self.get(name) is not None


@dataclass
class Request:
    method: str
    uri: str
    headers: Headers
    body: bytes = b""

    @property
    def call_id(self) -> str:
        return self.headers.get("call-id") or ""

    @property
    def cseq(self) -> tuple[int, str]:
        """(number, method); checked at parse time, so always well-formed here."""
        number, method = (self.headers.get("cseq") or "0 -").split()
        return int(number), method.upper()


@dataclass
class Response:
    status: int
    reason: str
    headers: Headers
    body: bytes = b""


# -- parsing -----------------------------------------------------------------------------


def is_keepalive(data: bytes) -> bool:
    """A CRLF (or CRLFCRLF) ping (RFC 5626), not a message."""
    return bool(data) and not data.strip(b"\r\n")


def parse_datagram(data: bytes) -> Request | Response:
    """One message per datagram (§18.3): a body runs to the datagram's end, or to its
    Content-Length when that is shorter; a Content-Length past the end is a 400."""
    head, body = _split(data)
    message = _parse_head(head)
    length = _content_length(message)
    if length is None:
        length = len(body)
    elif length > len(body):
        raise _bad(400, "Content-Length is past the end of the datagram", message)
    return _with_body(message, body[:length])


def _split(data: bytes) -> tuple[bytes, bytes]:
    """(head, rest) at the first empty line, CRLF or a bare LF (one SBC sends that)."""
    crlf, lf = data.find(b"\r\n\r\n"), data.find(b"\n\n")
    if crlf < 0 and lf < 0:
        if len(data) > MAX_HEADER_BYTES:
            raise BadMessage(513, "Message Too Large")
        # No end of the head: garbage, or a message cut short (say, a lost fragment).
        message = _parse_head(data)  # raises Garbage when it is no SIP at all
        raise _bad(400, "the header section has no end", message)
    if crlf >= 0 and (lf < 0 or crlf < lf):
        head, rest = data[:crlf], data[crlf + 4 :]
    else:
        head, rest = data[:lf], data[lf + 2 :]
    if len(head) > MAX_HEADER_BYTES:
        raise BadMessage(513, "Message Too Large")
    return head, rest


def _parse_head(head: bytes) -> Request | Response:
    text = head.decode("utf-8", errors="replace")
    lines = text.replace("\r\n", "\n").split("\n")
    while lines and not lines[0].strip():
        lines.pop(0)  # leading CRLFs (keep-alives before the message)
    if not lines:
        raise Garbage("empty")
    start = lines[0].rstrip("\r")
    message: Request | Response
    if match := _REQUEST_LINE.fullmatch(start):
        message = Request(match[1].upper(), match[2], Headers())
    elif match := _STATUS_LINE.fullmatch(start):
        message = Response(int(match[1]), match[2], Headers())
    else:
        raise Garbage("no SIP start line")
    for line in _unfold(lines[1:]):
        name, colon, value = line.partition(":")
        name = name.strip()
        if not colon or not _HEADER_NAME.fullmatch(name):
            raise _bad(400, "a header line without a name and a colon", message)
        value = value.strip()
        if _CONTROL.search(value) or "\ufffd" in value:
            raise _bad(400, f"control characters or invalid UTF-8 in {name[:40]}", message)
        key = COMPACT.get(name.lower(), name.lower())
        if key in LIST_HEADERS:
            for item in split_list(value):
                message.headers.add(key, item)
        else:
            message.headers.add(key, value)
    if isinstance(message, Request):
        _check_request(message)
    return message


def _unfold(lines: list[str]) -> list[str]:
    """Continuation lines (starting with SP or HT) join the header above (§7.3.1)."""
    out: list[str] = []
    for raw in lines:
        line = raw.rstrip("\r")
        if not line:
            continue
        if line[0] in " \t" and out:
            out[-1] += " " + line.strip()
        else:
            out.append(line)
    return out


def split_list(value: str) -> list[str]:
    """Comma-separated values, leaving commas inside <...> and quoted strings alone."""
    items: list[str] = []
    current: list[str] = []
    depth, quoted, escaped = 0, False, False
    for char in value:
        if escaped:
            escaped = False
        elif quoted and char == "\\":
            escaped = True
        elif char == '"':
            quoted = not quoted
        elif not quoted and char == "<":
            depth += 1
        elif not quoted and char == ">" and depth:
            depth -= 1
        elif char == "," and not quoted and not depth:
            items.append("".join(current).strip())
            current = []
            continue
        current.append(char)
    items.append("".join(current).strip())
    return [item for item in items if item]


def _check_request(request: Request) -> None:
    missing = [name for name in REQUIRED if name not in request.headers]
    if missing:
        raise _bad(400, f"missing {', '.join(missing)}", request)
    cseq = (request.headers.get("cseq") or "").split()
    if len(cseq) != 2 or not _DIGITS.fullmatch(cseq[0]) or int(cseq[0]) > MAX_CSEQ:
        raise _bad(400, "CSeq is not a number and a method", request)
    if cseq[1].upper() != request.method and request.method not in ("ACK", "CANCEL"):
        raise _bad(400, "CSeq names another method", request)


def _content_length(message: Request | Response) -> int | None:
    values = set(message.headers.get_all("content-length"))
    if not values:
        return None
    value = values.pop()
    if values or not _DIGITS.fullmatch(value):
        raise _bad(400, "Content-Length is not one whole number", message)
    length = int(value)
    if length > MAX_BODY_BYTES:
        raise _bad(513, "Message Too Large", message)
    return length


def _with_body(message: Request | Response, body: bytes) -> Request | Response:
    if len(body) > MAX_BODY_BYTES:
        raise _bad(513, "Message Too Large", message)
    message.body = body
    return message


def _bad(status: int, reason: str, message: Request | Response) -> BadMessage:
    return BadMessage(status, reason, message if isinstance(message, Request) else None)


# -- TCP framing -------------------------------------------------------------------------


@dataclass
class StreamFramer:
    """Messages out of a TCP byte stream, framed by Content-Length (mandatory there, §18.3).

    `feed` returns what is complete; a `BadMessage` among them means the
    connection can no longer be framed and is answered, then closed.
    `pings` counts CRLFCRLF keep-alives, each answered with a CRLF.
    """

    buffer: bytearray = field(default_factory=bytearray)
    pings: int = 0

    def feed(self, data: bytes) -> list[Request | Response | BadMessage | Garbage]:
        self.buffer += data
        out: list[Request | Response | BadMessage | Garbage] = []
        while True:
            while self.buffer.startswith(b"\r\n"):
                if self.buffer.startswith(b"\r\n\r\n"):
                    del self.buffer[:4]
                    self.pings += 1
                elif b"\r\n\r\n".startswith(self.buffer):
                    return out  # perhaps a ping, still arriving
                else:
                    del self.buffer[:2]  # a bare CRLF between messages
            end = self.buffer.find(b"\r\n\r\n")
            if end < 0:
                if len(self.buffer) > MAX_HEADER_BYTES:
                    out.append(BadMessage(513, "Message Too Large"))
                    self.buffer.clear()
                return out
            if end > MAX_HEADER_BYTES:
                out.append(BadMessage(513, "Message Too Large"))
                self.buffer.clear()
                return out
            try:
                message = _parse_head(bytes(self.buffer[:end]))
                length = _content_length(message)
                if length is None:
                    raise _bad(400, "no Content-Length on a stream transport", message)
            except (BadMessage, Garbage) as exc:
                out.append(exc)
                self.buffer.clear()
                return out
            if len(self.buffer) < end + 4 + length:
                return out  # the body is still coming
            message.body = bytes(self.buffer[end + 4 : end + 4 + length])
            del self.buffer[: end + 4 + length]
            out.append(message)


# -- writing -----------------------------------------------------------------------------

_CANONICAL = {
    "call-id": "Call-ID",
    "cseq": "CSeq",
    "www-authenticate": "WWW-Authenticate",
    "min-se": "Min-SE",
    "rseq": "RSeq",
}


def header_name(key: str) -> str:
    return _CANONICAL.get(key) or "-".join(part.capitalize() for part in key.split("-"))


def serialize(message: Request | Response) -> bytes:
    """Wire bytes, CRLF line ends, with one Content-Length that is the body's (§20.14)."""
    if isinstance(message, Request):
        start = f"{message.method} {message.uri} SIP/2.0"
    else:
        start = f"SIP/2.0 {message.status} {message.reason}"
    lines = [start]
    for key, value in message.headers.fields:
        if key != "content-length":
            lines.append(f"{header_name(key)}: {value}")
    lines.append(f"Content-Length: {len(message.body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + message.body
