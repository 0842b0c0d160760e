"""Names of blobs: built from ids only, never from user input, and checked strictly.

A recording's audio is its chunk records back to back, one byte stream;
the stream is kept as parts, each named by the offset it starts at:
`recordings/<id>/audio-<offset, 16 digits>`. Recordings written before the
parts existed have one blob `recordings/<id>/audio`, which is the part at
offset 0. A finished recording in an object store is compacted into one
`recordings/<id>/audio-whole` (telephony/usecases/compaction.py), which
readers then prefer: one object instead of hundreds of small parts.
"""

from __future__ import annotations

import re

_SEGMENT = re.compile(r"^[a-z0-9_-]{1,64}$")
_MAX_SEGMENTS = 8
_PART = re.compile(r"^audio-(\d{16})$")
LEGACY_AUDIO = "audio"
WHOLE_AUDIO = "audio-whole"


def check_key(key: str) -> list[str]:
    """The key's segments; ValueError for anything that is not ids joined by '/'."""
    parts = key.split("/")
    if not 1 <= len(parts) <= _MAX_SEGMENTS or not all(_SEGMENT.match(p) for p in parts):
        raise ValueError(f"not a blob key: {key!r}")
    return parts


def recording_prefix(recording_id: str) -> str:
    """Everything a recording keeps in the blob store lies under this (deletion removes it)."""
    key = f"recordings/{recording_id}"
    check_key(key)
    return key


def audio_part(recording_id: str, offset: int) -> str:
    if not 0 <= offset < 10**16:
        raise ValueError("part offset out of range")
    return f"{recording_prefix(recording_id)}/audio-{offset:016d}"


def whole_audio(recording_id: str) -> str:
    """The compacted copy of the recording's whole stream."""
    return f"{recording_prefix(recording_id)}/{WHOLE_AUDIO}"


def part_offset(key: str) -> int | None:
    """The offset a part of a recording's audio starts at; None for any other blob."""
    name = key.rsplit("/", 1)[-1]
    if name == LEGACY_AUDIO:
        return 0
    match = _PART.match(name)
    return int(match[1]) if match else None
