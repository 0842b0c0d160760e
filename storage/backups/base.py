"""Base backups: pg_basebackup's tar stream into the location, and back out of it into a
data directory with the recovery settings of a restore (PostgreSQL 15, "Archive Recovery")."""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import hashlib
import json
import logging
import re
import shlex
import shutil
import tempfile
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from storage.backups.location import (
    PART_BYTES,
    BackupError,
    BackupLocation,
    BackupMethod,
    Part,
    read_whole,
)
from storage.blobs.protocol import BlobRange
from storage.pgcluster import find_bindir

log = logging.getLogger(__name__)

BASE_BACKUP_TIMEOUT_S = 6 * 3600  # pg_basebackup waits for its last WAL to be archived


@dataclass(frozen=True)
class BaseBackup:
    timeline: int
    start_lsn: str
    stop_lsn: str
    parts: tuple[Part, ...]
    wal_parts: tuple[Part, ...]


async def base_backup(
    location: BackupLocation, backup_id: str, dsn: str, method: BackupMethod, system_id: str
) -> BaseBackup:
    """pg_basebackup into base/<id>/: tar, gzip level 1, a fast checkpoint, labelled with
    the backup's id.

    ARCHIVE streams the tar from pg_basebackup's stdout into parts (no local copy), with
    no WAL (`-X none`: pg_basebackup returns once the WAL it needs is archived, with the
    backup history file that says where it starts and ends). STREAM (`-X stream`) needs
    a folder, since tar to stdout cannot carry streamed WAL: the tar files and the backup
    manifest are written to a temporary folder and then sent.
    """
    tool = str((await asyncio.to_thread(find_bindir)) / "pg_basebackup")
    common = ["-d", dsn, "-F", "t", "-Z", "1", "-c", "fast", "-l", backup_id]
    if method is BackupMethod.ARCHIVE:
        process = await asyncio.create_subprocess_exec(
            tool, *common, "-D", "-", "-X", "none",
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        try:
            assert process.stdout is not None and process.stderr is not None
            async with asyncio.timeout(BASE_BACKUP_TIMEOUT_S):
                parts, errors = await asyncio.gather(
                    _send_stream(location, f"base/{backup_id}/part", process.stdout),
                    process.stderr.read(),
                )
                await process.wait()
        finally:
            await _reap(process)
        _check(process, errors)
        timeline, start, stop = await _history_of(location, system_id, backup_id)
        return BaseBackup(timeline, start, stop, parts, ())
    with tempfile.TemporaryDirectory(prefix="telephony-basebackup-") as folder:
        process = await asyncio.create_subprocess_exec(
            tool, *common, "-D", folder, "-X", "stream",
            stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        try:
            async with asyncio.timeout(BASE_BACKUP_TIMEOUT_S):
                _, errors = await process.communicate()
        finally:
            await _reap(process)
        _check(process, errors)
        raw = await asyncio.to_thread((Path(folder) / "backup_manifest").read_bytes)
        [wal_range] = json.loads(raw)["WAL-Ranges"]
        parts = await _send_file(location, f"base/{backup_id}/part", folder, "base.tar.gz")
        wal_parts = await _send_file(location, f"base/{backup_id}/wal", folder, "pg_wal.tar.gz")
    return BaseBackup(
        int(wal_range["Timeline"]), wal_range["Start-LSN"], wal_range["End-LSN"], parts, wal_parts
    )


def _check(process: asyncio.subprocess.Process, errors: bytes) -> None:
    if process.returncode != 0:
        text = errors.decode(errors="replace").strip()
        raise BackupError(f"pg_basebackup failed: {' '.join(text.splitlines()[-3:])[-500:]}")


_HISTORY = re.compile(r"^([A-Z ]+): (.*)$", re.M)


async def _history_of(
    location: BackupLocation, system_id: str, backup_id: str
) -> tuple[int, str, str]:
    """(timeline, start LSN, stop LSN) from the backup history file PostgreSQL archived for
    the backup labelled `backup_id` (`…0028.backup`: START WAL LOCATION, LABEL, …)."""
    found = await location.store.list(f"wal/{system_id}")
    labels = [i for i in found if i.key.endswith("_backup")]
    for info in sorted(labels, key=lambda i: i.key, reverse=True):
        packed = await read_whole(location.store, info)
        fields = dict(_HISTORY.findall((await asyncio.to_thread(gzip.decompress, packed)).decode()))
        if fields.get("LABEL") == backup_id:
            start = fields["START WAL LOCATION"].split()[0]
            stop = fields["STOP WAL LOCATION"].split()[0]
            return int(fields["START TIMELINE"]), start, stop
    raise BackupError(f"no backup history file for {backup_id} was archived")


async def _reap(process: asyncio.subprocess.Process) -> None:
    """A cancelled or timed-out backup leaves no pg_basebackup behind."""
    if process.returncode is None:
        with contextlib.suppress(ProcessLookupError):
            process.kill()
        await process.wait()


async def _send_stream(
    location: BackupLocation, prefix: str, stream: asyncio.StreamReader
) -> tuple[Part, ...]:
    parts: list[Part] = []
    while True:
        chunk = bytearray()
        while len(chunk) < PART_BYTES:
            data = await stream.read(min(1024 * 1024, PART_BYTES - len(chunk)))
            if not data:
                break
            chunk += data
        if not chunk and parts:
            return tuple(parts)
        parts.append(await _put_part(location, f"{prefix}-{len(parts):04d}", bytes(chunk)))
        if len(chunk) < PART_BYTES:
            return tuple(parts)


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


async def _put_part(location: BackupLocation, key: str, data: bytes) -> Part:
    digest = await asyncio.to_thread(_sha256, data)
    await location.store.put(key, data)
    return Part(key.rsplit("/", 1)[-1], len(data), digest)


async def _send_file(
    location: BackupLocation, prefix: str, folder: str, name: str
) -> tuple[Part, ...]:
    path = Path(folder) / name
    parts: list[Part] = []
    with open(path, "rb") as fh:  # noqa: ASYNC230 -- every read below is on a thread
        while True:
            data = await asyncio.to_thread(fh.read, PART_BYTES)
            if not data and parts:
                return tuple(parts)
            parts.append(await _put_part(location, f"{prefix}-{len(parts):04d}", data))
            if len(data) < PART_BYTES:
                return tuple(parts)


async def _parts(
    location: BackupLocation, backup_id: str, parts: Sequence[Part]
) -> AsyncIterator[bytes]:
    for part in parts:
        key = f"base/{backup_id}/{part.name}"
        [data] = await location.store.read_ranges([BlobRange(key, 0, part.size_bytes)])
        digest = await asyncio.to_thread(_sha256, data)
        if digest != part.sha256:
            raise BackupError(f"backup {backup_id}: {part.name} does not match its checksum")
        yield data


async def extract(
    location: BackupLocation, backup_id: str, parts: Sequence[Part], folder: Path
) -> None:
    """Unpack a tar stream of parts into `folder` with tar(1), checksums verified on the way."""
    tar = shutil.which("tar")
    if tar is None:
        raise BackupError("tar is not installed")
    await asyncio.to_thread(folder.mkdir, parents=True, exist_ok=True, mode=0o700)
    process = await asyncio.create_subprocess_exec(
        tar, "-xzf", "-", "-C", str(folder), stdin=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    assert process.stdin is not None and process.stderr is not None
    try:
        async for data in _parts(location, backup_id, parts):
            process.stdin.write(data)
            await process.stdin.drain()
        process.stdin.close()
        errors = await process.stderr.read()
        await process.wait()
    finally:
        await _reap(process)
    if process.returncode != 0:
        raise BackupError(f"tar could not unpack backup {backup_id}: {errors.decode()[-300:]}")


RECOVERY_CONF = "telephony-recovery.conf"


_INCLUDE_RECOVERY = f"include_if_exists = '{RECOVERY_CONF}'"


def write_recovery(data_dir: Path, wal_folder: Path, target: datetime | None) -> None:
    """recovery.signal and the recovery settings (PostgreSQL 15, "Archive Recovery"):
    WAL from `wal_folder`, along the backup's own timeline, up to `target` (else to the
    end of the archive), then promote."""
    restore = f"cp {shlex.quote(str(wal_folder))}/%f %p".replace("'", "''")
    lines = [
        "# Written by telephony backup restore; removed once the restore is done.",
        f"restore_command = '{restore}'",
        "recovery_target_timeline = 'current'",
        "recovery_target_action = 'promote'",
    ]
    if target is not None:
        lines.append(f"recovery_target_time = '{target.astimezone(UTC).isoformat()}'")
    (data_dir / RECOVERY_CONF).write_text("\n".join(lines) + "\n", encoding="utf-8")
    main = data_dir / "postgresql.conf"
    if not main.exists():  # an external server's data directory keeps its conf elsewhere
        main.write_text("", encoding="utf-8")
    if _INCLUDE_RECOVERY not in main.read_text(encoding="utf-8").splitlines():
        with open(main, "a", encoding="utf-8") as fh:
            fh.write(
                f"\n# A restore's recovery settings, written by telephony\n{_INCLUDE_RECOVERY}\n"
            )
    (data_dir / "recovery.signal").write_text("", encoding="utf-8")


def finish_recovery(data_dir: Path, wal_folder: Path) -> None:
    """After the promotion: the recovery settings and the fetched WAL are of no more use."""
    (data_dir / RECOVERY_CONF).unlink(missing_ok=True)
    shutil.rmtree(wal_folder, ignore_errors=True)


def prepare_external(data_dir: Path) -> None:
    """A data directory from an external server may lack the configuration files (Debian
    keeps them in /etc): the embedded cluster's own, local socket and trust only."""
    hba = data_dir / "pg_hba.conf"
    hba.write_text(
        "# The embedded cluster: its private socket only (storage/pgcluster.py)\n"
        "local all all trust\nlocal replication all trust\n",
        encoding="utf-8",
    )
    (data_dir / "pg_ident.conf").touch()
    main = data_dir / "postgresql.conf"
    if not main.exists():
        main.write_text("", encoding="utf-8")
    with open(data_dir / "postgresql.auto.conf", "a", encoding="utf-8") as fh:
        fh.write("listen_addresses = ''\nunix_socket_permissions = 0700\n")
    for stale in ("postmaster.pid", "postmaster.opts", "standby.signal"):
        (data_dir / stale).unlink(missing_ok=True)
