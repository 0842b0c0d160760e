"""`telephony backup run | list | restore`: backups of the database and the blob store (S8).

`run` takes a base backup (the embedded cluster's WAL is archived continuously by
archive_command) and copies the blob objects not yet copied; `serve` does the same daily.
`restore --to DIR [--at TIME]` makes DIR a data directory that
`TELEPHONY_DATA_DIR=DIR telephony serve` serves, as of TIME or of the last archived WAL.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from storage.backups import BackupError, BackupMethod, Manifest
from storage.blobs.regions import bind_database
from storage.blobs.stores import check_blob_url, open_blob_store
from storage.db import create_pool
from storage.pgcluster import ClusterError
from telephony.cli.common import CliError, database, migrate
from telephony.settings import Settings
from telephony.usecases import backups, restore

LEASE_WAIT_S = 30 * 60  # `run` waits this long for a backup another process is making


@contextlib.asynccontextmanager
async def _failures() -> AsyncIterator[None]:
    """What a backup or restore step says went wrong, without a traceback."""
    try:
        yield
    except (BackupError, ClusterError) as exc:
        raise CliError(str(exc)) from None
    except OSError as exc:
        raise CliError(f"{exc.strerror or type(exc).__name__}: {exc.filename or ''}") from None


def _describe(m: Manifest) -> dict[str, Any]:
    return {
        "id": m.id,
        "method": m.method.value,
        "point_in_time": m.method is BackupMethod.ARCHIVE,
        "started_at": m.started_at.isoformat(),
        "finished_at": m.finished_at.isoformat(),
        "database_bytes": m.database_bytes,
        "blobs": m.blob_count,
        "blob_bytes": m.blob_bytes,
    }


async def cmd_run(settings: Settings, args: argparse.Namespace) -> None:
    method = BackupMethod.ARCHIVE if settings.database_url is None else BackupMethod.STREAM
    async with _failures(), database(settings) as ready:
        assert ready.database_url is not None
        await migrate(ready)
        pool = await create_pool(ready.database_url, max_size=2)
        live = await open_blob_store(
            settings.blob_url,
            settings.data_dir / "blobs",
            regions=settings.region_blob_urls(),
            default_region=settings.data_region,
        )
        bind_database(live, pool)
        location = await backups.open_location(settings)
        try:
            async with backups.copy_areas(settings, live, location) as areas:
                result = await backups.run_backup(
                    pool,
                    areas,
                    location,
                    dsn=ready.database_url,
                    method=method,
                    retention_days=settings.backup_retention_days,
                    wait_s=LEASE_WAIT_S,
                )
        finally:
            await location.close()
            await live.close()
            await pool.close()
    if result is None:
        raise CliError("another process has been making a backup for 30 minutes; try later")
    m = result.manifest
    print(
        json.dumps(
            {
                **_describe(m),
                "seconds": round((m.finished_at - m.started_at).total_seconds(), 1),
                "blobs_copied": result.blobs_copied,
                "pruned": vars(result.pruned),
            }
        )
    )


async def cmd_list(settings: Settings, args: argparse.Namespace) -> None:
    async with _failures():
        location = await backups.open_location(settings)
        try:
            found = await backups.list_backups(location)
        finally:
            await location.close()
    for manifest in found:
        print(json.dumps(_describe(manifest)))


def _time(raw: str) -> datetime:
    try:
        at = datetime.fromisoformat(raw.strip())
    except ValueError:
        raise CliError(f"--at {raw!r} is not a time: give one as 2026-12-01T12:00:00Z") from None
    if at.tzinfo is None:
        raise CliError(f"--at {raw!r} has no time zone: give one as 2026-12-01T12:00:00Z")
    return at.astimezone(UTC)


async def cmd_restore(settings: Settings, args: argparse.Namespace) -> None:
    at = _time(args.at) if args.at is not None else None
    if at is not None and at > datetime.now(UTC):
        raise CliError(f"--at {args.at} is in the future")
    if args.blob_url is not None:
        try:
            check_blob_url(args.blob_url)
        except ValueError as exc:
            raise CliError(f"--blob-url: {exc}") from None
    to = await asyncio.to_thread(Path(args.to).absolute)
    async with _failures():
        await asyncio.to_thread(restore.check_target, to)
        result = await restore.restore(
            settings, to=to, at=at, blob_url=args.blob_url, backup_id=args.backup
        )
    print(
        json.dumps(
            {
                "restored_to": str(to),
                "backup": result.backup_id,
                "at": at.isoformat() if at else None,
                "recovered_to": result.recovered_to.isoformat() if result.recovered_to else None,
                "wal_segments": result.wal_segments,
                "journal_applied": result.journal_applied,
                "blobs_copied": result.blobs_copied,
                "recordings_without_audio": result.recordings_without_audio,
                "master_key_copied": result.master_key_copied,
                "notes": result.notes,
                "serve": f"TELEPHONY_DATA_DIR={to} telephony serve",
            }
        )
    )


def add(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    group = sub.add_parser("backup", help="backups of the database and recordings (S8)")
    commands = group.add_subparsers(dest="backup_command", required=True)
    commands.add_parser(
        "run", help="back up now (serve does it daily), then remove expired backups"
    ).set_defaults(run=cmd_run)
    commands.add_parser("list", help="the finished backups, newest first").set_defaults(
        run=cmd_list
    )
    restoring = commands.add_parser(
        "restore", help="make a new data directory from a backup, re-applying deletions"
    )
    restoring.add_argument("--to", required=True, help="a new (or empty) folder: the data dir")
    restoring.add_argument(
        "--at", help="a point in time, ISO 8601 with a zone (default: the latest archived)"
    )
    restoring.add_argument(
        "--blob-url", help="the blob store DIR will be served with (default: the configured)"
    )
    restoring.add_argument("--backup", help="start from this backup (default: chosen by --at)")
    restoring.set_defaults(run=cmd_restore)
