"""Data residency: one blob store per region, and each recording's keys in its region's.

`RegionalBlobStore` is a BlobStore like the others, so the media hub, downloads,
deletion and retention go on taking one store. It routes each key by the
recording it names (`recordings/<id>/…`, names.py) to the store of that
recording's region, `recordings.blob_region`: its account's region when it
started. That never changes (migration 0013 refuses it), so each recording is
looked up once and then cached. A key of no recording (`backups/…`) goes to
the default region's store; the bare `recordings` prefix spans every region.

An unknown recording is NotFound; a recording of a region this process has no
store for is Unavailable (503), never written to, or looked for in, another
region's store.
"""

from __future__ import annotations

import asyncio
import builtins
from collections.abc import (
    AsyncIterable,
    AsyncIterator,
    Awaitable,
    Callable,
    Mapping,
    Sequence,
)
from dataclasses import dataclass
from pathlib import Path

import asyncpg

from storage import regions
from storage.blobs.names import check_key
from storage.blobs.protocol import BlobInfo, BlobRange, BlobStore
from telephony.domain.errors import NotFound, Unavailable

RegionOf = Callable[[str], Awaitable[str | None]]
CACHE_LIMIT = 100_000  # recordings' regions kept; past it the cache starts again
_RECORDINGS = "recordings"  # the first segment of every recording's key (names.py)


@dataclass(frozen=True)
class RegionStore:
    """A region's blob store, and where it is said without credentials or endpoint
    (`s3://bucket/prefix`, `file:folder`; stores.describe_blob_url)."""

    name: str
    store: BlobStore
    description: str


class RegionalBlobStore:
    def __init__(self, stores: Sequence[RegionStore], default: str) -> None:
        self.regions: dict[str, RegionStore] = {r.name: r for r in stores}
        if default not in self.regions:
            raise ValueError("the default region has no store")
        self.default = default
        self._region_of: RegionOf | None = None
        self._cache: dict[str, str] = {}

    def __repr__(self) -> str:
        return f"RegionalBlobStore({sorted(self.regions)}, default={self.default})"

    def bind(self, region_of: RegionOf) -> None:
        """How a recording's region is found (the database is opened after the stores)."""
        self._region_of = region_of

    async def region_of(self, recording_id: str) -> str:
        region = self._cache.get(recording_id)
        if region is not None:
            return region
        if self._region_of is None:
            raise Unavailable("the recordings' regions are not known before the database is")
        region = await self._region_of(recording_id)
        if region is None:
            raise NotFound("no such recording")
        if region not in self.regions:
            raise Unavailable(f"no blob store is configured for the region {region}")
        if len(self._cache) >= CACHE_LIMIT:
            self._cache.clear()
        self._cache[recording_id] = region
        return region

    async def _route(self, key: str) -> RegionStore | None:
        """The store that holds `key`; None when it spans every region's."""
        parts = check_key(key)
        if parts[0] != _RECORDINGS:
            return self.regions[self.default]
        if len(parts) == 1:
            return None
        return self.regions[await self.region_of(parts[1])]

    async def put(self, key: str, data: bytes) -> None:
        target = await self._route(key) or self.regions[self.default]
        await target.store.put(key, data)

    async def put_file(self, key: str, path: Path) -> None:
        target = await self._route(key) or self.regions[self.default]
        await target.store.put_file(key, path)

    async def put_stream(self, key: str, pieces: AsyncIterable[bytes]) -> int:
        target = await self._route(key) or self.regions[self.default]
        return await target.store.put_stream(key, pieces)

    async def delete_keys(self, keys: Sequence[str]) -> int:
        gone = 0
        for key in keys:
            target = await self._route(key) or self.regions[self.default]
            gone += await target.store.delete_keys([key])
        return gone

    async def read_ranges(self, ranges: Sequence[BlobRange]) -> builtins.list[bytes]:
        routes: dict[str, RegionStore] = {}
        for wanted in ranges:
            if wanted.key not in routes:
                routes[wanted.key] = await self._route(wanted.key) or self.regions[self.default]
        by_region: dict[str, builtins.list[int]] = {}
        for index, wanted in enumerate(ranges):
            by_region.setdefault(routes[wanted.key].name, []).append(index)
        answers = await asyncio.gather(
            *(
                self.regions[name].store.read_ranges([ranges[i] for i in indexes])
                for name, indexes in by_region.items()
            )
        )
        out: builtins.list[bytes] = [b""] * len(ranges)
        for indexes, pieces in zip(by_region.values(), answers, strict=True):
            for index, piece in zip(indexes, pieces, strict=True):
                out[index] = piece
        return out

    async def stream(self, key: str, offset: int, length: int) -> AsyncIterator[bytes]:
        target = await self._route(key) or self.regions[self.default]
        async for piece in target.store.stream(key, offset, length):
            yield piece

    async def list(self, prefix: str) -> builtins.list[BlobInfo]:
        target = await self._route(prefix)
        if target is not None:
            return await target.store.list(prefix)
        found = await asyncio.gather(*(r.store.list(prefix) for r in self.regions.values()))
        return sorted((info for infos in found for info in infos), key=lambda i: i.key)

    async def delete_prefix(self, prefix: str) -> int:
        target = await self._route(prefix)
        if target is not None:
            return await target.store.delete_prefix(prefix)
        gone = await asyncio.gather(*(r.store.delete_prefix(prefix) for r in self.regions.values()))
        return sum(gone)

    async def probe(self) -> int:
        """The least free space of the regions' stores (each is probed on its own for
        /readyz and /metrics: `by_region`)."""
        free = await asyncio.gather(*(r.store.probe() for r in self.regions.values()))
        return min(free)

    async def close(self) -> None:
        for region in self.regions.values():
            await region.store.close()


def by_region(store: BlobStore, default_region: str, description: str) -> dict[str, RegionStore]:
    """Each region's store: a regional store's own, or the one store as the default region's
    (`description` says where that one is)."""
    if isinstance(store, RegionalBlobStore):
        return dict(store.regions)
    return {default_region: RegionStore(default_region, store, description)}


def bind_database(store: BlobStore, pool: asyncpg.Pool) -> None:
    """A regional store finds recordings' regions in `pool`'s database; others need nothing."""
    if isinstance(store, RegionalBlobStore):

        async def region_of(recording_id: str) -> str | None:
            return await regions.recording_region(pool, recording_id)

        store.bind(region_of)


def descriptions(stores: Mapping[str, RegionStore]) -> dict[str, str]:
    return {name: region.description for name, region in stores.items()}
