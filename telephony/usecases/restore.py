"""`telephony backup restore` (S8): a new data directory from a backup, deletions re-applied.

A restore unpacks the base backup into the new data directory, replays the archived WAL up
to a time (or to the end), promotes, re-applies the deletion journal (deletions and
erasures the restored database does not show yet), and puts the audio the restored
database refers to into the blob store the directory will be served with.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import quote, urlsplit, urlunsplit

import asyncpg

from storage import backups, recordings, terminations
from storage.backups import (
    BackupError,
    BackupLocation,
    BackupMethod,
    DeletionJournal,
    JournalEntry,
    JournalKind,
    Manifest,
)
from storage.blobs.names import recording_prefix
from storage.blobs.protocol import BlobStore
from storage.blobs.regions import RegionalBlobStore, bind_database
from storage.blobs.stores import open_blob_store
from storage.db import create_pool
from storage.migrate import apply_pending
from storage.pgcluster import ClusterError, LocalCluster
from telephony.domain.actors import Actor
from telephony.domain.errors import NotFound, Unavailable
from telephony.domain.recordings import RecordingStatus
from telephony.settings import Settings
from telephony.usecases import privacy
from telephony.usecases.backups import copy_locations, embedded_cluster, open_location
from telephony.usecases.trail import transaction

log = logging.getLogger(__name__)

PROMOTE_TIMEOUT_S = 6 * 3600  # replaying a month of WAL on a slow disk
FLUSH_TIMEOUT_S = 60.0  # a restore waits this long for the source's last WAL to be archived
_TARGET_MISSED = "recovery ended before configured recovery target was reached"


@dataclass
class RestoreResult:
    backup_id: str
    target: datetime | None
    recovered_to: datetime | None  # the last transaction replayed
    wal_segments: int
    journal_applied: int
    blobs_copied: int
    recordings_without_audio: int
    master_key_copied: bool
    notes: list[str] = field(default_factory=list)


def choose_backup(
    manifests: list[Manifest], at: datetime | None, backup_id: str | None
) -> Manifest:
    """The backup a restore starts from: the named one, else the newest that ended before
    `at` (a point-in-time restore replays WAL from a consistent backup onwards)."""
    if backup_id is not None:
        named = [m for m in manifests if m.id == backup_id]
        if not named:
            raise BackupError(f"no backup {backup_id} (see `telephony backup list`)")
        chosen = named[0]
        if at is not None and chosen.finished_at > at:
            raise BackupError(f"backup {backup_id} ended after {at.isoformat()}")
    else:
        if at is not None and manifests:
            manifests = [m for m in manifests if m.method is BackupMethod.ARCHIVE]
            if not manifests:
                raise BackupError(
                    "these backups hold their own WAL (an external database): they restore"
                    " to their end, not to a point in time; leave out --at"
                )
        fitting = [m for m in manifests if at is None or m.finished_at <= at]
        if not fitting:
            if not manifests:
                raise BackupError("there is no backup to restore (`telephony backup run`)")
            raise BackupError(
                f"no backup ended before {at.isoformat() if at else ''}: the oldest ended at "
                f"{min(m.finished_at for m in manifests).isoformat()}"
            )
        chosen = max(fitting, key=lambda m: m.finished_at)
    if at is not None and chosen.method is not BackupMethod.ARCHIVE:
        raise BackupError(
            f"backup {chosen.id} holds its own WAL (an external database): it restores to its"
            " end, not to a point in time; leave out --at"
        )
    return chosen


def check_target(to: Path) -> None:
    if to.exists() and (not to.is_dir() or any(to.iterdir())):
        raise BackupError(f"{to} is not an empty folder: restore into a new one")


async def restore(
    settings: Settings,
    *,
    to: Path,
    at: datetime | None,
    blob_url: str | None,
    backup_id: str | None = None,
    clock: Callable[[], datetime] = lambda: datetime.now(UTC),
) -> RestoreResult:
    """Make `to` a data directory `TELEPHONY_DATA_DIR=to telephony serve` serves."""
    to = await asyncio.to_thread(to.absolute)
    if settings.regions and blob_url is not None:
        raise BackupError(
            "with TELEPHONY_REGIONS the restored directory is served with the regions' own"
            " stores: leave out --blob-url"
        )
    await asyncio.to_thread(check_target, to)
    location = await open_location(settings)
    try:
        manifest = choose_backup(await backups.list_backups(location), at, backup_id)
        journal = await DeletionJournal(location.store).entries()
        if manifest.method is BackupMethod.ARCHIVE:
            await _flush_source(settings, manifest)
        target_blob_url = blob_url or settings.blob_url
        cluster = embedded_cluster(to, target_blob_url)
        result = RestoreResult(manifest.id, at, None, 0, 0, 0, 0, False)
        data = cluster.data_dir
        wal_folder = cluster.root / "restore-wal"
        await backups.extract(location, manifest.id, manifest.parts, data)
        await asyncio.to_thread(lambda: (data / "server.log").unlink(missing_ok=True))
        if manifest.method is BackupMethod.ARCHIVE:
            result.wal_segments, _ = await backups.fetch_wal(location, manifest, wal_folder)
            await asyncio.to_thread(backups.write_recovery, data, wal_folder, at)
        else:
            await backups.extract(location, manifest.id, manifest.wal_parts, data / "pg_wal")
            await asyncio.to_thread(backups.prepare_external, data)
        await asyncio.to_thread(cluster.give, cluster.root)
        try:
            await _start_and_promote(cluster, data, wal_folder, at, result)
            if manifest.method is BackupMethod.STREAM:
                await _adopt_database(cluster, settings)
            pool = await create_pool(cluster.dsn(), max_size=2)
            try:
                async with pool.acquire() as conn:
                    await apply_pending(conn)
                    result.recovered_to = await backups.replayed_until(conn)
                result.journal_applied = await reapply_journal(pool, journal, clock())
                await _restore_blobs(pool, settings, location, to, target_blob_url, journal, result)
            finally:
                await pool.close()
        finally:
            await asyncio.to_thread(cluster.stop)
        await asyncio.to_thread(backups.finish_recovery, data, wal_folder)
        result.master_key_copied = await asyncio.to_thread(_copy_master_key, settings, to)
        if settings.master_key is None and not result.master_key_copied:
            result.notes.append(
                "no development key to copy: serve it with TELEPHONY_MASTER_KEY set to the key"
                " the backup was made with"
            )
        return result
    finally:
        await location.close()


async def _flush_source(settings: Settings, manifest: Manifest) -> None:
    """When the source cluster still runs here, archive its current WAL segment now, so the
    restore sees everything up to this moment (not only up to the last archive_timeout)."""
    if settings.database_url is not None:
        return
    source = LocalCluster(settings.data_dir / "postgres")
    if not await asyncio.to_thread(source.is_running):
        return
    try:
        conn = await asyncpg.connect(await asyncio.to_thread(source.dsn))
        try:
            if (await backups.server_facts(conn)).system_identifier != manifest.system_identifier:
                return
            closed = await backups.switch_wal(conn)
            async with asyncio.timeout(FLUSH_TIMEOUT_S):
                while True:
                    state = await backups.archiver_state(conn)
                    if (state.last_archived_wal or "")[:24] >= closed[:24]:
                        return
                    await asyncio.sleep(0.2)
        finally:
            await conn.close()
    except (OSError, asyncpg.PostgresError, TimeoutError) as exc:
        log.warning("could not archive the source's latest WAL: %s", type(exc).__name__)


async def _start_and_promote(
    cluster: LocalCluster, data: Path, wal_folder: Path, at: datetime | None, result: RestoreResult
) -> None:
    """Start the restored cluster and wait for its recovery to end in a promotion.

    A target after the last archived transaction ends recovery with a FATAL error
    (PostgreSQL 13 on): then the end of the archive is the state at that time, and the
    recovery is run again without a target.
    """
    try:
        await asyncio.to_thread(cluster.ensure_running)
    except ClusterError:
        server_log = await asyncio.to_thread(_read_log, data)
        if at is None or _TARGET_MISSED not in server_log:
            raise BackupError(f"the restored cluster did not start: {server_log[-600:]}") from None
        result.notes.append("nothing was archived after --at: restored to the archive's end")
        await asyncio.to_thread(backups.write_recovery, data, wal_folder, None)
        await asyncio.to_thread(cluster.give, data)
        try:
            await asyncio.to_thread(cluster.ensure_running)
        except ClusterError:
            tail = (await asyncio.to_thread(_read_log, data))[-600:]
            raise BackupError(f"the restored cluster did not start: {tail}") from None
    conn = await asyncpg.connect(await asyncio.to_thread(cluster.dsn, "postgres"))
    try:
        async with asyncio.timeout(PROMOTE_TIMEOUT_S):
            while await backups.in_recovery(conn):  # noqa: ASYNC110 -- the server's state
                await asyncio.sleep(0.2)
    finally:
        await conn.close()


def _read_log(data: Path) -> str:
    try:
        return (data / "server.log").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return ""


async def _adopt_database(cluster: LocalCluster, settings: Settings) -> None:
    """A backup of an external server: its database and role become the embedded names."""
    assert settings.database_url is not None
    source = urlsplit(settings.database_url)
    user, name = source.username or "postgres", source.path.lstrip("/") or "postgres"
    if (user, name) == ("telephony", "telephony"):
        return
    embedded = urlsplit(await asyncio.to_thread(cluster.dsn, "postgres"))
    netloc = f"{quote(user, safe='')}@{embedded.netloc.split('@', 1)[1]}"
    conn = await asyncpg.connect(urlunsplit(embedded._replace(netloc=netloc)))
    try:
        await backups.adopt_database(conn, name)
    except asyncpg.PostgresError as exc:
        raise BackupError(f"the restored database could not be renamed: {exc}") from None
    finally:
        await conn.close()


async def _restore_blobs(
    pool: asyncpg.Pool,
    settings: Settings,
    location: BackupLocation,
    to: Path,
    target_url: str | None,
    journal: list[JournalEntry],
    result: RestoreResult,
) -> None:
    """Put each object the restored database refers to into the store it is served with:
    from the backup copies (each region's own), else from the live store; remove the
    journal's deletions. With data regions the stores are the regions' own, each
    recording's found by the restored database."""
    target = await open_blob_store(
        target_url,
        to / "blobs",
        regions=settings.region_blob_urls(),
        default_region=settings.data_region,
    )
    bind_database(target, pool)
    source = None  # the live store, when it is not the one served
    if not settings.regions and (target_url is None or target_url != settings.blob_url):
        with contextlib.suppress(Unavailable, OSError, ValueError):
            source = await open_blob_store(settings.blob_url, settings.data_dir / "blobs")
    try:
        async with pool.acquire() as conn:
            wanted = await backups.live_recording_ids(conn)
            with_audio = await backups.recordings_with_audio(conn)
        present = {i.key: i.size_bytes for i in await target.list("recordings")}
        copies: dict[str, tuple[BackupLocation, int]] = {}
        async with copy_locations(settings, location) as areas:
            for area in {a.url: a for a in areas.values()}.values():
                for info in await area.store.list("blobs/recordings"):
                    copies[info.key.removeprefix("blobs/")] = (area, info.size_bytes)
            live: dict[str, int] = {}
            if source is not None:
                try:
                    live = {i.key: i.size_bytes for i in await source.list("recordings")}
                except (Unavailable, OSError):
                    result.notes.append("the live store did not answer: only backup copies used")
            todo: list[tuple[BlobStore, str, BlobStore, str]] = []
            for key in sorted(set(copies) | set(live)):
                recording_id = key.split("/")[1]
                size = copies[key][1] if key in copies else live[key]
                if recording_id not in wanted or present.get(key) == size:
                    continue
                into = await _store_of(target, recording_id)
                if into is None:
                    continue
                if key in copies:
                    todo.append((copies[key][0].store, backups.copy_key(key), into, key))
                elif source is not None:
                    todo.append((source, key, into, key))
            result.blobs_copied, _ = await backups.copy_all(todo)
        restored = {k.split("/")[1] for k in present} | {t[3].split("/")[1] for t in todo}
        result.recordings_without_audio = len((with_audio & wanted) - restored)
        for entry in journal:
            if entry.kind is JournalKind.RECORDING_DELETED and entry.recording_id:
                prefix = recording_prefix(entry.recording_id)
                if any(k.startswith(prefix + "/") for k in present):
                    with contextlib.suppress(NotFound):
                        await target.delete_prefix(prefix)
                async with pool.acquire() as conn:
                    await recordings.mark_blobs_deleted(conn, entry.recording_id, entry.at)
    finally:
        await target.close()
        if source is not None:
            await source.close()


async def _store_of(target: BlobStore, recording_id: str) -> BlobStore | None:
    """The store a recording's objects go to: its region's (a server-side copy within one
    bucket), or the one; None when the restored database has no region for it."""
    if not isinstance(target, RegionalBlobStore):
        return target
    try:
        return target.regions[await target.region_of(recording_id)].store
    except (NotFound, Unavailable):
        return None


def _copy_master_key(settings: Settings, to: Path) -> bool:
    """The development key (data_dir/master.key) goes along; a configured key is the
    operator's to set again (it is never in a backup: a backup and its key apart)."""
    if settings.master_key is not None:
        return False
    key = settings.data_dir / "master.key"
    if not key.is_file():
        return False
    target = to / "master.key"
    shutil.copyfile(key, target)
    target.chmod(0o600)
    return True


# -- the journal --------------------------------------------------------------------


async def reapply_journal(pool: asyncpg.Pool, entries: list[JournalEntry], now: datetime) -> int:
    """Re-apply each deletion or erasure the restored database does not show yet; audited
    in the account's trail (actor `system:restore`). Idempotent: how many were applied."""
    actor = Actor.system("restore")
    applied = 0
    for entry in entries:
        async with transaction(pool) as tx:
            if entry.kind is JournalKind.RECORDING_DELETED and entry.recording_id:
                target = await recordings.find_for_deletion(tx.conn, entry.recording_id, None)
                if target is None or target.status is RecordingStatus.DELETED:
                    continue
                await recordings.shred(tx.conn, entry.recording_id, entry.at)
                subject = {"call_id": target.call_id, "recording_id": entry.recording_id}
                tx.audit(
                    target.account_id, actor, "recording.deleted", subject, now,
                    reason="journal", deleted_at=entry.at.isoformat(),
                )  # fmt: skip
            elif entry.kind is JournalKind.PERSONAL_DATA_REMOVED:
                if await backups.personal_data_held(tx.conn, entry.account_id) is not True:
                    continue
                await terminations.remove_personal_data(tx.conn, entry.account_id, entry.at)
                tx.audit(
                    entry.account_id, actor, "account.personal_data_removed",
                    {"account_id": entry.account_id}, now, reason="journal",
                )  # fmt: skip
            elif entry.kind is JournalKind.USER_ERASED and entry.user_id:
                if not await privacy.remove_member_data(tx, entry.account_id, entry.user_id):
                    continue
                tx.audit(
                    entry.account_id, actor, "user.erased",
                    {"type": "user", "id": entry.user_id}, now, reason="journal",
                )  # fmt: skip
            else:
                continue
        applied += 1
    return applied
