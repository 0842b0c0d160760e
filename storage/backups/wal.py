"""Archived WAL: the embedded cluster's archive_command (run as `python -m storage.backups
archive-wal URL %p %f`, as the cluster's user, in its data directory), the names of WAL
files as blob keys, and what a restore fetches or the pruning removes."""

from __future__ import annotations

import asyncio
import gzip
import logging
import re
import shlex
import sys
from collections.abc import Sequence
from pathlib import Path

from storage.backups.location import (
    READS_AT_ONCE,
    BackupError,
    BackupLocation,
    BackupMethod,
    Manifest,
    open_location,
    read_whole,
)
from storage.blobs.names import check_key
from storage.blobs.protocol import BlobInfo, BlobRange
from telephony.domain.errors import NotFound, Unavailable

log = logging.getLogger(__name__)

_WAL_SUFFIXES = {"backup", "history", "partial"}


_SEGMENT = re.compile(r"^[0-9A-F]{24}$")


def archive_command(url: str) -> str:
    """The embedded cluster's archive_command: this module as a program, on %p and %f.

    `-P`: the archiver's working directory (the data directory) is not put on sys.path;
    `-s`: nor the (root's) user site. A '%' of the URL is doubled, as PostgreSQL reads only
    %p, %f and %% in it.
    """
    words = [sys.executable, "-P", "-s", "-m", "storage.backups", "archive-wal", url]
    return " ".join(shlex.quote(w).replace("%", "%%") for w in words) + " %p %f"


def archive_reads() -> tuple[Path, ...]:
    """What the archive command runs: the interpreter and this package, which the
    cluster's user must reach (storage/pgcluster.py grants traverse on their folders)."""
    return (Path(sys.executable).resolve(), Path(__file__).resolve().parent)


def wal_key(system_id: str, name: str) -> str:
    """WAL file names are upper-case hex with dots; blob keys are lower-case ids."""
    key = f"wal/{system_id}/{name.lower().replace('.', '_')}"
    check_key(key)
    return key


def wal_name(segment: str) -> str:
    """The file name PostgreSQL asks for, from the last segment of a wal/ key."""
    words = segment.split("_")
    return ".".join(w if w in _WAL_SUFFIXES else w.upper() for w in words)


def segment_position(name: str) -> tuple[int, int, int] | None:
    """(timeline, log, segment) of a WAL segment file; None for a history or label file."""
    if not _SEGMENT.match(name):
        return None
    return int(name[:8], 16), int(name[8:16], 16), int(name[16:24], 16)


def segment_name(lsn: str, timeline: int, segment_bytes: int) -> str:
    """The segment file holding `lsn` ('16/B374D848'), as pg_walfile_name says it."""
    high, low = (int(x, 16) for x in lsn.split("/"))
    number = ((high << 32) | low) // segment_bytes
    per_log = 0x1_0000_0000 // segment_bytes
    return f"{timeline:08X}{number // per_log:08X}{number % per_log:08X}"


def system_identifier(data_dir: Path) -> str:
    """The cluster's system identifier: the first field of global/pg_control (native order)."""
    raw = (data_dir / "global" / "pg_control").read_bytes()[:8]
    return str(int.from_bytes(raw, sys.byteorder))


async def archive_wal(url: str, wal_path: Path, name: str) -> None:
    """Put one WAL file into the location; done when durable there.

    A file archived before (a crash between the put and PostgreSQL's note of it) is
    accepted when its bytes are the same, refused when not (PostgreSQL's advice: never
    overwrite an archived segment).
    """
    system_id = await asyncio.to_thread(system_identifier, Path.cwd())
    data = await asyncio.to_thread(wal_path.read_bytes)
    location = await open_location(url)
    try:
        key = wal_key(system_id, name)
        found = await location.store.list(key)
        if found:
            [old] = await location.store.read_ranges([BlobRange(key, 0, found[0].size_bytes)])
            if await asyncio.to_thread(gzip.decompress, old) == data:
                return
            raise BackupError(f"{name} is already archived with other contents")
        packed = await asyncio.to_thread(gzip.compress, data, 1, mtime=0)
        await location.store.put(key, packed)
    finally:
        await location.close()


def main(argv: Sequence[str]) -> int:
    """`archive-wal URL PATH NAME`: exit 0 only when the file is in the location."""
    if len(argv) != 4 or argv[0] != "archive-wal":
        print("usage: python -m storage.backups archive-wal URL PATH NAME", file=sys.stderr)
        return 2
    url, path, name = argv[1:]
    try:
        asyncio.run(archive_wal(url, Path(path), name))
    except (BackupError, Unavailable, NotFound, OSError, ValueError) as exc:
        print(f"telephony archive-wal {name}: {exc}", file=sys.stderr)
        return 1
    return 0


async def prune_wal(
    location: BackupLocation, keep: Sequence[Manifest], current_system: str | None
) -> int:
    """Remove archived WAL no kept backup needs: of each system, the segments before its
    oldest kept backup's start (history files stay: they are tiny, and a restore reads
    them to pick a new timeline); a former system's (re-created cluster) without backups
    wholly. A system with no backup yet keeps its WAL."""
    oldest: dict[str, tuple[int, int]] = {}
    for manifest in keep:
        if manifest.method is BackupMethod.ARCHIVE:
            position = segment_position(manifest.start_wal)
            assert position is not None
            start = position[1:]
            sid = manifest.system_identifier
            oldest[sid] = min(oldest.get(sid, start), start)
    gone = 0
    for info in await location.store.list("wal"):
        _, system_id, segment = info.key.split("/")
        if system_id not in oldest:
            if current_system is not None and system_id != current_system:
                gone += await location.store.delete_prefix(info.key)
            continue
        name = wal_name(segment)
        position = segment_position(name[:24]) if len(name) >= 24 else None
        if position is not None and position[1:] < oldest[system_id]:
            gone += await location.store.delete_prefix(info.key)
    return gone


async def fetch_wal(
    location: BackupLocation, manifest: Manifest, folder: Path
) -> tuple[int, list[str]]:
    """Fetch, unpacked, the archived WAL a restore of `manifest` replays: its timeline's
    segments from its start on, and every history file of its system (PostgreSQL reads
    them to pick the restored cluster's new timeline). (segments fetched, their names)"""
    start = segment_position(manifest.start_wal)
    assert start is not None
    wanted: list[BlobInfo] = []
    for info in await location.store.list(f"wal/{manifest.system_identifier}"):
        name = wal_name(info.key.rsplit("/", 1)[-1])
        position = segment_position(name)
        if name.endswith(".history") or (
            position is not None and position[0] == manifest.timeline and position >= start
        ):
            wanted.append(info)
    await asyncio.to_thread(folder.mkdir, parents=True, exist_ok=True, mode=0o700)
    limit = asyncio.Semaphore(READS_AT_ONCE)

    async def one(info: BlobInfo) -> str:
        name = wal_name(info.key.rsplit("/", 1)[-1])
        async with limit:
            packed = await read_whole(location.store, info)
        await asyncio.to_thread(_write_unpacked, folder / name, packed)
        return name

    names = await asyncio.gather(*(one(i) for i in wanted))
    segments = sorted(n for n in names if segment_position(n) is not None)
    return len(segments), segments


def _write_unpacked(path: Path, packed: bytes) -> None:
    path.write_bytes(gzip.decompress(packed))
