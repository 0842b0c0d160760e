"""HTTP byte ranges (RFC 9110 §14): what an `<audio>` element asks for when it seeks."""

from __future__ import annotations

from telephony.domain.errors import RangeNotSatisfiable

_MAX_DIGITS = 19  # past int64: no file of ours is that long, and int() of it is slow


def _number(text: str) -> bool:
    """ASCII digits only: "²" is a digit to str.isdigit(), not to RFC 9110."""
    return text.isascii() and text.isdigit() and len(text) <= _MAX_DIGITS


def parse_range(header: str | None, size: int) -> tuple[int, int] | None:
    """One `bytes=` range as [start, end); None: send the whole file.

    Another unit or several ranges are ignored, as the RFC allows (no
    multipart answers); a malformed `bytes=` range, or one starting past the
    end, is RangeNotSatisfiable.
    """
    if not header:
        return None
    unit, _, spec = header.partition("=")
    if unit.strip().lower() != "bytes" or "," in spec:
        return None
    first, dash, last = (part.strip() for part in spec.partition("-"))
    if not dash or not (_number(first) or first == "") or not (_number(last) or last == ""):
        raise RangeNotSatisfiable(f"malformed Range {header[:40]!r}", size_bytes=size)
    if first == "":  # a suffix: the last N bytes
        if not last or int(last) == 0:
            raise RangeNotSatisfiable("an empty suffix range", size_bytes=size)
        return max(size - int(last), 0), size
    start = int(first)
    end = int(last) + 1 if last else size
    if end <= start:
        raise RangeNotSatisfiable("the range ends before it starts", size_bytes=size)
    if start >= size:
        raise RangeNotSatisfiable(f"the file is {size} bytes long", size_bytes=size)
    return start, min(end, size)
