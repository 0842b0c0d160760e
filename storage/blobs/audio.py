"""A recording's audio in the blob store: one byte stream kept as consecutive parts.

The stream is the recording's sealed chunk records back to back; the chunk
rows say where each record lies in it (`blob_offset`). This module maps a
range of the stream onto the parts that hold it, so readers never see the
parts.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass

from storage.blobs.names import part_offset, recording_prefix, whole_audio
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
    """What the store holds of the recording's stream (one listing): the compacted whole
    when there is one (it exists only complete), else the parts."""
    found = []
    listing = await store.list(recording_prefix(recording_id))
    whole = whole_audio(recording_id)
    for info in listing:
        if info.key == whole:
            return StoredAudio(recording_id, (info,), (0,), info.size_bytes)
    for info in listing:
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


class Cursor:
    """Exact sequential reads of a one-object stream (a compacted recording) from a single
    streamed request: a download of an hour is one GET, not one per mebibyte.

    Parts are many objects: those are read by ranges (`read_stream`), many at once.
    """

    def __init__(self, store: BlobStore, audio: StoredAudio, offset: int) -> None:
        if len(audio.parts) != 1 or not 0 <= offset <= audio.size_bytes:
            raise ValueError("a cursor reads one object, from inside it")
        self.offset = offset
        self._pieces = store.stream(audio.parts[0].key, offset, audio.size_bytes - offset)
        self._buffer = bytearray()

    async def read(self, length: int) -> bytes:
        """The next `length` bytes; IntegrityFailure when the object ends first."""
        while len(self._buffer) < length:
            try:
                self._buffer += await anext(self._pieces)
            except StopAsyncIteration:
                raise IntegrityFailure("a blob is shorter than its records say") from None
        out = bytes(self._buffer[:length])
        del self._buffer[:length]
        self.offset += length
        return out

    async def close(self) -> None:
        """Ends the request early (a ranged download stops before the end)."""
        closing = getattr(self._pieces, "aclose", None)
        if closing is not None:
            await closing()
