"""The blob store: immutable named objects, as every object store has them.

No append, no rename, no partial write: a blob is put whole and read by
ranges. That is what S3-compatible stores offer, so the filesystem store
offers no more, and the same callers work on both. Live audio is appended
elsewhere: to the node's spool (`spool.py`), which ships whole parts here.
"""

from __future__ import annotations

from collections.abc import AsyncIterable, AsyncIterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol


@dataclass(frozen=True)
class BlobInfo:
    key: str
    size_bytes: int


@dataclass(frozen=True)
class BlobRange:
    key: str
    offset: int
    length: int


class BlobStore(Protocol):
    async def put(self, key: str, data: bytes) -> None:
        """Durable when it returns; putting the same bytes again is harmless."""
        ...

    async def put_file(self, key: str, path: Path) -> None:
        """`put` of a local file's bytes (a spool part, written and synced, never appended
        to again): the file stays where it is, and may be removed once this returns."""
        ...

    async def put_stream(self, key: str, pieces: AsyncIterable[bytes]) -> int:
        """`put` of bytes too many to hold at once (a multipart upload on S3); the size.
        Nothing is visible under `key` unless every piece arrived."""
        ...

    async def read_ranges(self, ranges: Sequence[BlobRange]) -> list[bytes]:
        """Exactly each range's bytes, in order: NotFound, or IntegrityFailure when short.

        Many at once because a read of a recording spans parts (ten seconds
        each): one hop to the store's threads, or one round of requests, for
        all of them, not one each.
        """
        ...

    def stream(self, key: str, offset: int, length: int) -> AsyncIterator[bytes]:
        """Bytes [offset, offset + length) of one blob as they arrive, in pieces of any
        size: one request for a long sequential read (a download of a compacted
        recording), where ranged reads would each pay a round trip. NotFound when absent."""
        ...

    async def list(self, prefix: str) -> list[BlobInfo]:
        """Every blob under `prefix` (a whole key segment), sorted by key."""
        ...

    async def delete_prefix(self, prefix: str) -> int:
        """Remove every blob under `prefix`; how many went. Repeating it is harmless."""
        ...

    async def delete_keys(self, keys: Sequence[str]) -> int:
        """Remove exactly these blobs (those present); how many went."""
        ...

    async def probe(self) -> int:
        """Free bytes where the blobs live; hangs when the store does (callers bound it)."""
        ...

    async def close(self) -> None:
        """Release threads or connections; the store is not used afterwards."""
        ...
