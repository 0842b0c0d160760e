"""Copies of the blob store's objects in the location (`blobs/<key>`): recording objects are
immutable, so each key is copied once, server-side within one S3 bucket."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable

from storage.backups.location import BackupLocation, read_whole
from storage.blobs.protocol import BlobInfo, BlobStore
from storage.blobs.s3 import S3BlobStore
from telephony.domain.errors import NotFound

COPIES_AT_ONCE = 8  # blob objects copied in flight


def copy_key(key: str) -> str:
    return f"blobs/{key}"


def _same_bucket(a: BlobStore, b: BlobStore) -> bool:
    return (
        isinstance(a, S3BlobStore)
        and isinstance(b, S3BlobStore)
        and a.location.endpoint_url == b.location.endpoint_url
        and a.location.bucket == b.location.bucket
    )


async def copy_object(source: BlobStore, key: str, target: BlobStore, target_key: str) -> bool:
    """One object from store to store, server-side within one bucket; False: it is gone."""
    try:
        if isinstance(source, S3BlobStore) and isinstance(target, S3BlobStore):  # noqa: SIM102
            if _same_bucket(source, target):
                await source.copy_to(key, target, target_key)
                return True
        found = await source.list(key)
        if not found:
            return False
        await target.put(target_key, await read_whole(source, found[0]))
    except NotFound:
        return False
    return True


async def copy_all(
    pairs: Iterable[tuple[BlobStore, str, BlobStore, str]],
) -> tuple[int, set[str]]:
    """Copy each (source, key, target, target key), several at once: (copied, keys gone)."""
    limit = asyncio.Semaphore(COPIES_AT_ONCE)
    gone: set[str] = set()

    async def one(source: BlobStore, key: str, target: BlobStore, target_key: str) -> int:
        async with limit:
            if await copy_object(source, key, target, target_key):
                return 1
            gone.add(key)
            return 0

    done = await asyncio.gather(*(one(*pair) for pair in pairs))
    return sum(done), gone


async def prune_blob_copies(location: BackupLocation, referenced: set[str]) -> int:
    """Remove copies no kept manifest lists; a recording none refers to goes in one call."""
    by_recording: dict[str, list[BlobInfo]] = {}
    for info in await location.store.list("blobs"):
        folder = info.key.rsplit("/", 1)[0]
        by_recording.setdefault(folder, []).append(info)
    gone = 0
    for folder, infos in by_recording.items():
        unused = [i for i in infos if i.key.removeprefix("blobs/") not in referenced]
        if len(unused) == len(infos):
            gone += await location.store.delete_prefix(folder)
        else:
            for info in unused:
                gone += await location.store.delete_prefix(info.key)
    return gone
