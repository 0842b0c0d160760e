"""Backups (S8): `telephony backup run`, its daily worker, `backup list`, and the pruning of
expired backups; restoring one is `restore.py`.

A backup is a PostgreSQL base backup (pg_basebackup) plus the WAL the embedded cluster
archives (archive_command, storage/backups/wal.py), and a copy of every blob object not yet
copied, with a manifest naming what the backup holds.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg

from storage import backups, leases
from storage.backups import (
    BackupError,
    BackupLocation,
    BackupMethod,
    DeletionJournal,
    Manifest,
)
from storage.blobs.protocol import BlobInfo, BlobStore
from storage.blobs.regions import by_region
from storage.pgcluster import LocalCluster
from telephony.domain.errors import Unavailable
from telephony.settings import Settings

log = logging.getLogger(__name__)

JOB = "backup"  # the lease (storage/leases.py): one backup at a time across processes
CHECK_S = 15 * 60  # the worker looks at the location this often, and runs when one is due
RETRY_S = 10 * 60  # after a failed backup
UNFINISHED_KEEP = timedelta(days=1)  # an interrupted backup's parts, before they go
JOURNAL_MARGIN = timedelta(days=1)  # entries kept from before the oldest kept backup


def embedded_cluster(data_dir: Path, blob_url: str | None) -> LocalCluster:
    """The data directory's own cluster, archiving its WAL to that directory's location."""
    url = backups.location_url(blob_url, data_dir)
    folder = backups.local_folder(url)
    return LocalCluster(
        data_dir / "postgres",
        archive_command=backups.archive_command(url),
        archive_dirs=(folder / "wal",) if folder is not None else (),
        archive_reads=backups.archive_reads(),
    )


async def open_location(settings: Settings) -> BackupLocation:
    """The configured backup location; a local one is said to be one (a lost machine takes
    its backups along)."""
    location = await backups.open_location(
        backups.location_url(settings.blob_url, settings.data_dir)
    )
    if location.is_local:
        log.warning(
            "backups are kept on this machine, which takes them along if it is lost: "
            "configure an object store (TELEPHONY_BLOB_URL=s3://…) to keep them apart",
            extra={"folder": str(location.folder)},
        )
    return location


@dataclass
class BackupStatus:
    """What /metrics says of backups: the newest good one's end, as this process last saw
    the location (every CHECK_S, and after each backup it made)."""

    watching: bool = False  # this process runs the daily job
    last_success_at: datetime | None = None


# -- backup run ---------------------------------------------------------------------


@dataclass(frozen=True)
class PruneResult:
    backups_removed: int
    wal_removed: int
    blob_copies_removed: int
    journal_removed: int


@dataclass(frozen=True)
class BackupResult:
    manifest: Manifest
    blobs_copied: int
    pruned: PruneResult


@contextlib.asynccontextmanager
async def _lease(pool: asyncpg.Pool, wait_s: float) -> AsyncIterator[bool]:
    """The job's lease; waits up to `wait_s` for another process's backup to end."""
    deadline = asyncio.get_running_loop().time() + wait_s
    while True:
        async with leases.only_one(pool, JOB) as mine:
            if mine or asyncio.get_running_loop().time() >= deadline:
                yield mine
                return
        await asyncio.sleep(1.0)


@dataclass(frozen=True)
class CopyArea:
    """Where one data region's recording objects are copied: `backups/` of that region's own
    store, so a backup keeps each recording in its region (D1); the one location without
    regions (or for stores on this machine)."""

    region: str
    live: BlobStore
    copies: BackupLocation


@contextlib.asynccontextmanager
async def copy_locations(
    settings: Settings, location: BackupLocation
) -> AsyncIterator[dict[str, BackupLocation]]:
    """Each region's copy location by region name (`location` itself where it is the one)."""
    urls: dict[str, str | None] = {settings.data_region: settings.blob_url}
    urls.update(settings.region_blob_urls() or {})
    by_url: dict[str, BackupLocation] = {location.url: location}
    found: dict[str, BackupLocation] = {}
    try:
        for region, blob_url in sorted(urls.items()):
            url = backups.location_url(blob_url, settings.data_dir)
            if url not in by_url:
                by_url[url] = await backups.open_location(url)
            found[region] = by_url[url]
        yield found
    finally:
        for url, opened in by_url.items():
            if url != location.url:
                await opened.close()


@contextlib.asynccontextmanager
async def copy_areas(
    settings: Settings, live: BlobStore, location: BackupLocation
) -> AsyncIterator[list[CopyArea]]:
    """The live store of each region beside its copy location."""
    stores = by_region(live, settings.data_region, "")
    async with copy_locations(settings, location) as copies:
        yield [CopyArea(name, stores[name].store, copies[name]) for name in sorted(stores)]


async def run_backup(
    pool: asyncpg.Pool,
    areas: Sequence[CopyArea],
    location: BackupLocation,
    *,
    dsn: str,
    method: BackupMethod,
    retention_days: int,
    clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    wait_s: float = 0.0,
) -> BackupResult | None:
    """One backup and the pruning after it; None when another process holds the job."""
    async with _lease(pool, wait_s) as mine:
        if not mine:
            return None
        started = clock()
        backup_id = backups.new_backup_id(started)
        async with pool.acquire() as conn:
            facts = await backups.server_facts(conn)
            if method is BackupMethod.ARCHIVE:
                if not await backups.archiving_is_on(conn):
                    raise BackupError(
                        "WAL archiving is off in the running cluster: restart `telephony serve`"
                    )
                state = await backups.archiver_state(conn)
                if state.failing:
                    raise BackupError(
                        f"WAL archiving fails since {state.last_failed_at:%Y-%m-%d %H:%M:%S %Z}"
                        f" ({state.last_failed_wal}); see the cluster's server.log"
                    )
        log.info("backup started", extra={"backup": backup_id, "method": method.value})
        base = await backups.base_backup(location, backup_id, dsn, method, facts.system_identifier)
        held, copied = await _copy_blobs(areas)
        manifest = Manifest(
            id=backup_id,
            method=method,
            started_at=started,
            finished_at=clock(),
            system_identifier=facts.system_identifier,
            timeline=base.timeline,
            start_wal=backups.segment_name(base.start_lsn, base.timeline, facts.segment_bytes),
            stop_wal=backups.segment_name(base.stop_lsn, base.timeline, facts.segment_bytes),
            parts=base.parts,
            wal_parts=base.wal_parts,
            blob_count=len(held),
            blob_bytes=sum(b.size_bytes for _, b in held),
        )
        await backups.write_manifest(location, manifest, held)
        log.info(
            "backup finished",
            extra={
                "backup": backup_id,
                "database_bytes": manifest.database_bytes,
                "blobs": manifest.blob_count,
                "blobs_copied": copied,
                "seconds": round((manifest.finished_at - started).total_seconds(), 1),
            },
        )
        pruned = await prune(location, clock(), retention_days, facts.system_identifier, areas)
        return BackupResult(manifest, copied, pruned)


async def _copy_blobs(areas: Sequence[CopyArea]) -> tuple[list[tuple[str, BlobInfo]], int]:
    """Copy the recording objects not yet copied (they are immutable: a key copied once
    stays right), each region's into its own area; what the stores held, less what went
    meanwhile, and how many were copied."""
    held: list[tuple[str, BlobInfo]] = []
    copied = 0
    for area in areas:
        objects = await area.live.list("recordings")
        copies = {i.key: i.size_bytes for i in await area.copies.store.list("blobs")}
        todo = [
            (area.live, info.key, area.copies.store, backups.copy_key(info.key))
            for info in objects
            if copies.get(backups.copy_key(info.key)) != info.size_bytes
        ]
        done, gone = await backups.copy_all(todo)
        copied += done
        held += [(area.region, info) for info in objects if info.key not in gone]
    return held, copied


async def prune(
    location: BackupLocation,
    now: datetime,
    retention_days: int,
    current_system: str | None,
    areas: Sequence[CopyArea] = (),
) -> PruneResult:
    """Backups past retention go, with the WAL, blob copies and journal entries only they
    needed ("deleted from backups when they expire"); so do interrupted ones."""
    manifests = await backups.list_backups(location)
    cutoff = now - timedelta(days=retention_days)
    keep = [m for m in manifests if m.finished_at >= cutoff]
    expired = [m for m in manifests if m.finished_at < cutoff]
    stale = [
        i
        for i in await backups.unfinished_backups(location)
        if _taken_at(i) is not None and _taken_at(i) < now - UNFINISHED_KEEP  # type: ignore[operator]
    ]
    for backup_id in [m.id for m in expired] + stale:
        await backups.delete_backup(location, backup_id)
    referenced: dict[str, set[str]] = {}  # region → keys a kept backup holds
    for manifest in keep:
        for region, info in await backups.blobs_of(location, manifest.id):
            referenced.setdefault(region, set()).add(info.key)
    groups: dict[str, tuple[BackupLocation, set[str]]] = {location.url: (location, set())}
    for area in areas:
        groups.setdefault(area.copies.url, (area.copies, set()))[1].update(
            referenced.get(area.region, ())
        )
    if not areas:  # one location holds every copy
        groups[location.url][1].update(*referenced.values())
    copies = 0
    for copy_location, keys in groups.values():
        copies += await backups.prune_blob_copies(copy_location, keys)
    wal = await backups.prune_wal(location, keep, current_system)
    oldest = min((m.started_at for m in keep), default=now)
    journal = await DeletionJournal(location.store).remove_before(oldest - JOURNAL_MARGIN)
    result = PruneResult(len(expired) + len(stale), wal, copies, journal)
    if any(vars(result).values()):
        log.info("backups pruned", extra=vars(result))
    return result


def _taken_at(backup_id: str) -> datetime | None:
    try:
        return datetime.strptime(backup_id[:16], "%Y%m%dt%H%M%Sz").replace(tzinfo=UTC)
    except ValueError:
        return None


async def list_backups(location: BackupLocation) -> list[Manifest]:
    """Finished backups, newest first."""
    return list(reversed(await backups.list_backups(location)))


# -- the daily job ------------------------------------------------------------------


async def backup_worker(
    pool: asyncpg.Pool,
    live: BlobStore,
    location: BackupLocation,
    settings: Settings,
    status: BackupStatus,
    clock: Callable[[], datetime] = lambda: datetime.now(UTC),
) -> None:
    """`backup run` every `backup_interval_s` (daily) in the embedded default, on whichever
    node holds the job's lease; the first as soon as none is recent enough (a new
    installation is backed up at its first start). An external database
    (TELEPHONY_DATABASE_URL) is backed up by its operator: the job does not run."""
    assert settings.database_url is not None
    cluster = LocalCluster(settings.data_dir / "postgres")
    if await asyncio.to_thread(cluster.dsn) != settings.database_url:
        log.info("backups: the database is external; run `telephony backup run` from cron")
        return
    status.watching = True
    interval = timedelta(seconds=settings.backup_interval_s)
    while True:
        delay_s = float(CHECK_S)
        try:
            found = await backups.list_backups(location)
            if found:
                status.last_success_at = max(m.finished_at for m in found)
            now = clock()
            if status.last_success_at is None or now - status.last_success_at >= interval:
                async with copy_areas(settings, live, location) as areas:
                    result = await run_backup(
                        pool,
                        areas,
                        location,
                        dsn=settings.database_url,
                        method=BackupMethod.ARCHIVE,
                        retention_days=settings.backup_retention_days,
                        clock=clock,
                    )
                if result is not None:
                    status.last_success_at = result.manifest.finished_at
            if status.last_success_at is not None:
                due = status.last_success_at + interval - clock()
                delay_s = min(max(due.total_seconds(), 60.0), float(CHECK_S))
        except (BackupError, Unavailable, OSError, asyncpg.PostgresError):
            log.exception("backup failed; retrying later")
            delay_s = float(RETRY_S)
        await asyncio.sleep(delay_s)
