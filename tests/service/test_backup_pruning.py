"""Backups past retention go with what only they needed (S8: "deleted from backups when they
expire"): their manifests, the WAL before the oldest kept backup, the blob copies no kept
manifest lists, journal entries no kept backup predates, and interrupted backups."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from storage import backups
from storage.backups import BackupLocation, BackupMethod, DeletionJournal, JournalKind, Manifest
from storage.blobs.protocol import BlobInfo
from telephony.usecases.backups import CopyArea, prune

SYSTEM, FORMER = "7714317905250659685", "7000000000000000001"
NOW = datetime(2026, 12, 1, 3, 0, tzinfo=UTC)


def segment(n: int) -> str:
    return f"00000001{0:08X}{n:08X}"


def manifest(backup_id: str, finished: datetime, start: int) -> Manifest:
    return Manifest(
        id=backup_id,
        method=BackupMethod.ARCHIVE,
        started_at=finished - timedelta(minutes=5),
        finished_at=finished,
        system_identifier=SYSTEM,
        timeline=1,
        start_wal=segment(start),
        stop_wal=segment(start),
        parts=(),
        wal_parts=(),
        blob_count=2,
        blob_bytes=2,
    )


def held(key: str) -> tuple[str, BlobInfo]:
    """An object a backup holds, of the one region."""
    return "eu-central", BlobInfo(key, 1)


@pytest.fixture
async def location(tmp_path: Path) -> AsyncIterator[BackupLocation]:
    opened = await backups.open_location((tmp_path / "backups").as_uri())
    yield opened
    await opened.close()


async def keys(location: BackupLocation, prefix: str) -> list[str]:
    return [info.key for info in await location.store.list(prefix)]


async def test_an_expired_backup_goes_with_what_only_it_needed(
    location: BackupLocation,
) -> None:
    store = location.store
    old, new = "20261031t030000z-aaaaaa", "20261130t030000z-bbbbbb"
    await backups.write_manifest(
        location,
        manifest(old, NOW - timedelta(days=31), 2),
        [held("recordings/r1/audio-0000000000000000"), held("recordings/r2/audio")],
    )
    await backups.write_manifest(
        location,
        manifest(new, NOW - timedelta(days=1), 5),
        [held("recordings/r2/audio"), held("recordings/r3/audio")],
    )
    for key in (
        "recordings/r1/audio-0000000000000000",
        "recordings/r2/audio",
        "recordings/r3/audio",
    ):
        await store.put(backups.copy_key(key), b"x")
    for n in range(1, 7):
        await store.put(backups.wal_key(SYSTEM, segment(n)), b"wal")
    await store.put(backups.wal_key(SYSTEM, "00000002.history"), b"history")
    await store.put(backups.wal_key(FORMER, segment(9)), b"a re-created cluster's")
    interrupted, running = "20261125t030000z-cccccc", "20261201t025900z-dddddd"
    await store.put(f"base/{interrupted}/part-0000", b"half")
    await store.put(f"base/{running}/part-0000", b"being written")
    journal = DeletionJournal(store)
    for days in (40, 0.5):
        await journal.record(
            JournalKind.RECORDING_DELETED,
            at=NOW - timedelta(days=days),
            account_id="acc_1",
            recording_id="r9",
        )

    result = await prune(location, NOW, 30, SYSTEM)

    assert [m.id for m in await backups.list_backups(location)] == [new]
    assert await keys(location, f"base/{old}") == []
    assert await keys(location, f"base/{interrupted}") == []
    assert await keys(location, f"base/{running}") == [f"base/{running}/part-0000"]
    assert await keys(location, "blobs") == [
        "blobs/recordings/r2/audio",
        "blobs/recordings/r3/audio",
    ]
    assert await keys(location, "wal") == [
        backups.wal_key(SYSTEM, name) for name in (segment(5), segment(6), "00000002.history")
    ]
    [kept] = await journal.entries()
    assert kept.at == NOW - timedelta(days=0.5)
    assert (result.backups_removed, result.blob_copies_removed) == (2, 1)
    assert result.wal_removed == 5 and result.journal_removed == 1


async def test_nothing_is_pruned_within_retention(location: BackupLocation) -> None:
    await backups.write_manifest(
        location, manifest("20261130t030000z-bbbbbb", NOW - timedelta(days=1), 5), []
    )
    await location.store.put(backups.wal_key(SYSTEM, segment(5)), b"wal")

    result = await prune(location, NOW, 30, SYSTEM)

    assert vars(result) == {
        "backups_removed": 0,
        "wal_removed": 0,
        "blob_copies_removed": 0,
        "journal_removed": 0,
    }


async def test_each_regions_copies_are_pruned_in_its_own_location(
    location: BackupLocation, tmp_path: Path
) -> None:
    american = await backups.open_location((tmp_path / "us-backups").as_uri())
    areas = [
        CopyArea("eu-central", location.store, location),
        CopyArea("us-east", american.store, american),
    ]
    kept_us, gone_us = "recordings/r5/audio", "recordings/r6/audio"
    await backups.write_manifest(
        location,
        manifest("20261130t030000z-bbbbbb", NOW - timedelta(days=1), 5),
        [held("recordings/r4/audio"), ("us-east", BlobInfo(kept_us, 1))],
    )
    await location.store.put(backups.copy_key("recordings/r4/audio"), b"x")
    for key in (kept_us, gone_us):
        await american.store.put(backups.copy_key(key), b"x")

    try:
        result = await prune(location, NOW, 30, SYSTEM, areas)
        left = await keys(american, "blobs")
    finally:
        await american.close()

    assert await keys(location, "blobs") == ["blobs/recordings/r4/audio"]
    assert left == [backups.copy_key(kept_us)]
    assert result.blob_copies_removed == 1
