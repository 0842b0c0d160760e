"""A recording's audio in the blob store: one byte stream kept as consecutive parts.

The stream is the recording's sealed chunk records back to back; the chunk
rows say where each record lies in it (`blob_offset`). This module maps a
range of the stream onto the parts that hold it, so readers never see the
parts.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass

from storage.blobs.names import part_offset, recording_prefix
from storage.blobs.protocol import BlobInfo, BlobRange, BlobStore
from telephony.domain.errors import IntegrityFailure


@dataclass(frozen=True)
class StoredAudio:
    """The parts of one recording's stream, in order; `size_bytes` is where they stop
    being contiguous (a missing part ends the readable stream there)."""

    recording_id: str
    parts: tuple[BlobInfo, ...]
    starts: tuple[int, ...]
    size_bytes: int

    def pieces(self, offset: int, length: int) -> list[BlobRange]:
        """The ranges of parts covering [offset, offset + length) of the stream."""
        if offset < 0 or offset + length > self.size_bytes:
            raise IntegrityFailure("a blob is shorter than its records say")
        out = []
        index = bisect.bisect_right(self.starts, offset) - 1
        while length > 0:
            start, part = self.starts[index], self.parts[index]
            inside = offset - start
            take = min(length, part.size_bytes - inside)
            out.append(BlobRange(part.key, inside, take))
            offset, length, index = offset + take, length - take, index + 1
        return out


async def stored_audio(store: BlobStore, recording_id: str) -> StoredAudio:
    """What the store holds of the recording's stream (one listing)."""
    found = []
    for info in await store.list(recording_prefix(recording_id)):
        offset = part_offset(info.key)
        if offset is not None:
            found.append((offset, info))
    found.sort(key=lambda pair: pair[0])
    parts, starts, end = [], [], 0
    for offset, info in found:
        if offset != end:
            break  # a gap or an overlap: the stream is readable up to here only
        parts.append(info)
        starts.append(offset)
        end += info.size_bytes
    return StoredAudio(recording_id, tuple(parts), tuple(starts), end)


async def read_stream(store: BlobStore, audio: StoredAudio, offset: int, length: int) -> bytes:
    """Bytes [offset, offset + length) of the stream, across parts as needed."""
    pieces = await store.read_ranges(audio.pieces(offset, length))
    return pieces[0] if len(pieces) == 1 else b"".join(pieces)
