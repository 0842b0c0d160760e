"""A SIPREC INVITE's `multipart/mixed` body (RFC 2046 §5.1; SIP.md 4.1).

Delimiter lines are `--<boundary>`, the last `--<boundary>--`; the line
break before a delimiter belongs to it; preamble and epilogue are skipped.
SRCs differ in small ways, all accepted: a quoted boundary, LF for CRLF,
blanks after a delimiter. A body whose boundary is missing or never found is
refused (400): what it holds cannot be told apart.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

MAX_PARTS = 8  # SDP and metadata, maybe a few more; a body of hundreds is no SIPREC
_BOUNDARY = re.compile(r';\s*boundary\s*=\s*(?:"([^"]{1,70})"|([^;\s"]{1,70}))', re.IGNORECASE)


class BadMultipart(ValueError):
    """Answered 400 with a Warning naming the reason."""


@dataclass(frozen=True)
class Part:
    headers: dict[str, str]  # lower-case names; a repeated header keeps its last value
    content: bytes

    @property
    def media_type(self) -> str:
        """`type/subtype`, lower case, without parameters."""
        return self.headers.get("content-type", "text/plain").split(";")[0].strip().lower()

    @property
    def disposition(self) -> str:
        return self.headers.get("content-disposition", "").split(";")[0].strip().lower()


def boundary_of(content_type: str) -> str:
    found = _BOUNDARY.search(content_type)
    if found is None:
        raise BadMultipart("multipart body without a boundary")
    return found[1] or found[2]


def parse(content_type: str, body: bytes) -> list[Part]:
    """The parts of a multipart body, in order."""
    delimiter = b"--" + boundary_of(content_type).encode()
    lines = body.split(b"\n")
    parts: list[list[bytes]] = []
    current: list[bytes] | None = None
    closed = False
    for line in lines:
        stripped = line.rstrip(b"\r \t")
        if stripped == delimiter or stripped == delimiter + b"--":
            if current is not None:
                parts.append(current)
            if stripped.endswith(b"--") and stripped != delimiter:
                closed = True
                break
            current = []
            if len(parts) >= MAX_PARTS:
                raise BadMultipart(f"more than {MAX_PARTS} parts")
        elif current is not None:
            current.append(line)
    if not parts and current is None:
        raise BadMultipart("the multipart boundary is never found")
    if not closed and current is not None:
        parts.append(current)  # no closing delimiter: what came is the last part (lenient)
    return [_part(p) for p in parts]


def _part(lines: list[bytes]) -> Part:
    headers: dict[str, str] = {}
    for index, line in enumerate(lines):
        text = line.rstrip(b"\r").decode("utf-8", "replace")
        if not text.strip():
            content = b"\n".join(lines[index + 1 :])
            # The line break before the next delimiter belongs to it (RFC 2046): its "\n"
            # went with the split, its "\r" goes here.
            return Part(headers, content.removesuffix(b"\r"))
        name, colon, value = text.partition(":")
        if not colon:
            raise BadMultipart("a part header without a colon")
        headers[name.strip().lower()] = value.strip()
    return Part(headers, b"")  # headers only
