"""The backup location and what it holds: finished backups' manifests (storage/backups)."""

from __future__ import annotations

import asyncio
import json
import logging
import secrets
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from urllib.parse import unquote, urlsplit, urlunsplit

from storage.blobs.filesystem import FilesystemBlobStore
from storage.blobs.protocol import BlobInfo, BlobRange, BlobStore
from storage.blobs.s3 import S3BlobStore, parse_s3_url
from telephony.domain.errors import NotFound

log = logging.getLogger(__name__)

PART_BYTES = 32 * 1024 * 1024  # one object of a base backup's stream


READS_AT_ONCE = 8  # journal entries or WAL segments fetched in flight


BACKUPS = "backups"  # the location's folder inside an S3 store


class BackupError(Exception):
    """A backup or restore step failed; the message says which and why (no secrets)."""


class BackupMethod(StrEnum):
    # WAL comes from wal/ (archive_command): point-in-time restore to any archived moment.
    ARCHIVE = "archive"
    # WAL inside the backup (`pg_basebackup -X stream`, an external database): self-contained.
    STREAM = "stream"


@dataclass
class BackupLocation:
    store: BlobStore
    url: str  # file:///… or s3://bucket/prefix/backups?…: what archive_command is given
    folder: Path | None  # the local folder, when the location is one

    @property
    def is_local(self) -> bool:
        return self.folder is not None

    async def close(self) -> None:
        await self.store.close()


def location_url(blob_url: str | None, data_dir: Path) -> str:
    """`backups/` in the S3 store when one is configured, else the folder data_dir/backups."""
    if blob_url is not None and blob_url.startswith("s3:"):
        parts = urlsplit(blob_url)
        prefix = parts.path.strip("/")
        path = f"/{prefix}/{BACKUPS}" if prefix else f"/{BACKUPS}"
        return urlunsplit((parts.scheme, parts.netloc, path, parts.query, ""))
    return (data_dir / "backups").absolute().as_uri()


def local_folder(url: str) -> Path | None:
    return Path(unquote(urlsplit(url).path)) if url.startswith("file:") else None


async def open_location(url: str) -> BackupLocation:
    folder = local_folder(url)
    if folder is not None:
        return BackupLocation(FilesystemBlobStore(folder), url, folder)
    return BackupLocation(await S3BlobStore.open(parse_s3_url(url)), url, None)


@dataclass(frozen=True)
class Part:
    name: str
    size_bytes: int
    sha256: str


@dataclass(frozen=True)
class Manifest:
    """What one finished backup holds, and what a restore needs to know of it."""

    id: str
    method: BackupMethod
    started_at: datetime
    finished_at: datetime
    system_identifier: str
    timeline: int
    start_wal: str  # the segment the base backup starts in (WAL from here on is needed)
    stop_wal: str  # the segment it is consistent in
    parts: tuple[Part, ...]
    wal_parts: tuple[Part, ...]
    blob_count: int
    blob_bytes: int

    @property
    def database_bytes(self) -> int:
        return sum(p.size_bytes for p in (*self.parts, *self.wal_parts))

    def to_json(self) -> bytes:
        body = asdict(self)
        body["started_at"] = self.started_at.isoformat()
        body["finished_at"] = self.finished_at.isoformat()
        return json.dumps({"version": 1, **body}, indent=1).encode()

    @classmethod
    def from_json(cls, data: bytes) -> Manifest:
        body = json.loads(data)
        return cls(
            id=body["id"],
            method=BackupMethod(body["method"]),
            started_at=datetime.fromisoformat(body["started_at"]),
            finished_at=datetime.fromisoformat(body["finished_at"]),
            system_identifier=body["system_identifier"],
            timeline=int(body["timeline"]),
            start_wal=body["start_wal"],
            stop_wal=body["stop_wal"],
            parts=tuple(Part(**p) for p in body["parts"]),
            wal_parts=tuple(Part(**p) for p in body["wal_parts"]),
            blob_count=int(body["blob_count"]),
            blob_bytes=int(body["blob_bytes"]),
        )


def new_backup_id(now: datetime) -> str:
    """Sorts as the backups were taken: `20261201t030000z-a1b2c3`."""
    return f"{now.astimezone(UTC):%Y%m%dt%H%M%Sz}-{secrets.token_hex(3)}"


async def read_whole(store: BlobStore, info: BlobInfo) -> bytes:
    [data] = await store.read_ranges([BlobRange(info.key, 0, info.size_bytes)])
    return data


async def list_backups(location: BackupLocation) -> list[Manifest]:
    """Every finished backup, oldest first."""
    infos = [i for i in await location.store.list("base") if i.key.endswith("/manifest")]
    limit = asyncio.Semaphore(READS_AT_ONCE)

    async def read(info: BlobInfo) -> Manifest | None:
        async with limit:
            try:
                return Manifest.from_json(await read_whole(location.store, info))
            except NotFound:  # removed meanwhile by another node's pruning
                return None

    found = await asyncio.gather(*(read(i) for i in infos))
    return sorted((m for m in found if m is not None), key=lambda m: m.id)


async def unfinished_backups(location: BackupLocation) -> list[str]:
    """Ids under base/ with parts but no manifest (interrupted, or still being written)."""
    ids: dict[str, bool] = {}
    for info in await location.store.list("base"):
        backup_id, name = info.key.split("/")[1], info.key.split("/")[-1]
        ids[backup_id] = ids.get(backup_id, False) or name == "manifest"
    return sorted(i for i, finished in ids.items() if not finished)


async def write_manifest(
    location: BackupLocation, manifest: Manifest, blobs: Sequence[tuple[str, BlobInfo]]
) -> None:
    """The manifest, after the listing of the blob objects it holds (region, key, size)."""
    listing = json.dumps([[b.key, b.size_bytes, region] for region, b in blobs]).encode()
    await location.store.put(f"base/{manifest.id}/blobs", listing)
    await location.store.put(f"base/{manifest.id}/manifest", manifest.to_json())


async def blobs_of(location: BackupLocation, backup_id: str) -> list[tuple[str, BlobInfo]]:
    """(data region, object) of each blob object the backup holds."""
    key = f"base/{backup_id}/blobs"
    found = await location.store.list(key)
    if not found:
        raise NotFound(f"backup {backup_id} has no blob listing")
    listing = json.loads(await read_whole(location.store, found[0]))
    return [(region, BlobInfo(k, size)) for k, size, region in listing]


async def delete_backup(location: BackupLocation, backup_id: str) -> None:
    """The manifest first: a half-deleted backup is an unfinished one, never a broken one."""
    base = f"base/{backup_id}"
    await location.store.delete_prefix(f"{base}/manifest")
    await location.store.delete_prefix(base)
