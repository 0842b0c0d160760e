"""Answers to SIP requests (RFC 3261 §8.2.6 and §18.2.2, RFC 3581; SIP.md 2.2).

A response goes back along the request's `Via`s: the top one is stamped with
the address the packet really came from (`received`, and `rport` when the
sender asked for it), so the answer reaches a client behind NAT, and over
UDP it is sent to that address, not to whatever the header claims.
"""

from __future__ import annotations

import ipaddress
import re
import secrets
from dataclasses import dataclass
from urllib.parse import unquote

from telephony.media.sip.message import Headers, Request, Response

DEFAULT_PORT = 5060
_SENT_BY = re.compile(
    r"SIP\s*/\s*2\.0\s*/\s*([A-Za-z]+)\s+(\[[0-9A-Fa-f:.]+\]|[^\s;:]+)(?::([0-9]{1,5}))?\s*(;.*)?",
    re.DOTALL,
)


@dataclass(frozen=True)
class Via:
    transport: str  # UDP, TCP, TLS...
    host: str
    port: int | None
    params: tuple[tuple[str, str | None], ...]  # in order; a bare flag has None

    def param(self, name: str) -> str | None:
        return next((v or "" for k, v in self.params if k == name), None)

    def has(self, name: str) -> bool:
        return any(k == name for k, _ in self.params)

    @property
    def branch(self) -> str | None:
        return self.param("branch")


def parse_via(value: str) -> Via | None:
    """One Via value; None when it is not usable for routing an answer."""
    match = _SENT_BY.fullmatch(value.strip())
    if match is None:
        return None
    port = int(match[3]) if match[3] else None
    if port is not None and not 0 < port < 65536:
        return None
    params: list[tuple[str, str | None]] = []
    for raw in (match[4] or "").split(";")[1:]:
        name, eq, val = raw.partition("=")
        if name.strip():
            params.append((name.strip().lower(), val.strip() if eq else None))
    return Via(match[1].upper(), match[2].strip("[]"), port, tuple(params))


def top_via(request: Request) -> Via | None:
    values = request.headers.get_all("via")
    return parse_via(values[0]) if values else None


def stamped_top_via(value: str, source: tuple[str, int]) -> str:
    """The top Via as the answer carries it: `received` when the sent-by host is not the
    packet's source, and a bare `rport` filled in (then `received` always)."""
    via = parse_via(value)
    if via is None:
        return value
    host, port = source
    wants_rport = via.has("rport") and not via.param("rport")
    base = value.strip()
    if wants_rport:
        base = re.sub(r";\s*rport(?=;|$)", f";rport={port}", base, count=1)
    if wants_rport or _differs(via.host, host):
        base = re.sub(r";\s*received=[^;]*", "", base)
        base += f";received={host}"
    return base


def _differs(sent_by: str, source: str) -> bool:
    try:
        return ipaddress.ip_address(sent_by) != ipaddress.ip_address(source)
    except ValueError:
        return True  # a host name is never the packet's source address


def reply_address(request: Request, source: tuple[str, int]) -> tuple[str, int]:
    """Where a UDP answer goes: the source address, at its `rport` when the client asked
    for one, else the sent-by port, else 5060."""
    via = top_via(request)
    if via is None:
        return source
    if via.has("rport"):
        return source
    return source[0], via.port or DEFAULT_PORT


_TAG = re.compile(r";\s*tag\s*=\s*([^;\s,>]+)", re.IGNORECASE)
_URI = re.compile(r"<([^>]*)>")


def tag_of(value: str | None) -> str | None:
    """A From or To header's `tag` parameter: outside the <...>, where a name-addr has one
    (a URI parameter named tag is no dialog's tag)."""
    if not value:
        return None
    params = value[value.rindex(">") + 1 :] if ">" in value else value
    found = _TAG.search(params)
    return found[1] if found else None


def address_uri(value: str | None) -> str | None:
    """The URI of a Contact, From or To value: inside <...>, else up to its parameters."""
    if not value:
        return None
    found = _URI.search(value)
    if found:
        return found[1].strip() or None
    return value.split(";", 1)[0].strip() or None


def uri_user(uri: str) -> str | None:
    """The %-decoded user part of a `sip:` or `sips:` URI (`sip:<user>@host`), else None."""
    scheme, colon, rest = uri.partition(":")
    if not colon or scheme.lower() not in ("sip", "sips") or "@" not in rest:
        return None
    user = rest.split("@", 1)[0].split(":", 1)[0]  # a password after ':' is no part of it
    return unquote(user) or None


def warning(code: int, text: str) -> tuple[str, str]:
    """A `Warning` header (RFC 3261 §20.43) naming why: quotes, backslashes and controls
    removed, so no text of a request can break the answer's framing."""
    clean = re.sub(r'["\\\x00-\x1f\x7f]', "", text)[:120]
    return "warning", f'{code} recorder "{clean}"'


def new_tag() -> str:
    """A To tag: random, well over the 32 bits §19.3 asks for."""
    return secrets.token_hex(8)


def reply(
    request: Request,
    status: int,
    reason: str,
    *,
    source: tuple[str, int],
    to_tag: str | None = None,
    headers: tuple[tuple[str, str], ...] = (),
    body: bytes = b"",
) -> Response:
    """A response to `request`: its Vias (the top one stamped), From, Call-ID and CSeq,
    and its To with our tag on every answer but a 100 (§8.2.6.2)."""
    out = Headers()
    for index, via in enumerate(request.headers.get_all("via")):
        out.add("via", stamped_top_via(via, source) if index == 0 else via)
    for name in ("from", "call-id", "cseq"):
        value = request.headers.get(name)
        if value is not None:
            out.add(name, value)
    to = request.headers.get("to") or ""
    if status != 100 and to_tag and ";tag=" not in to.replace(" ", "").lower():
        to = f"{to};tag={to_tag}"
    out.add("to", to)
    for name, value in headers:
        out.add(name, value)
    return Response(status, reason, out, body)
