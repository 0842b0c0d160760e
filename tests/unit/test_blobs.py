"""The blob store (immutable objects) and the media node's spool (append and sync), on real
files: what the crash bound and every download stand on."""

from __future__ import annotations

import asyncio
import platform
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from storage.blobs import spool as spool_module
from storage.blobs.audio import read_stream, stored_audio
from storage.blobs.filesystem import FilesystemBlobStore
from storage.blobs.names import audio_part, check_key, part_offset
from storage.blobs.protocol import BlobRange
from storage.blobs.spool import SYNCFS_FROM, Part, Spool
from telephony.domain.errors import IntegrityFailure, NotFound


@pytest.fixture
def spool(tmp_path: Path) -> Spool:
    made = Spool(tmp_path / "spool")
    yield made
    made.close()


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[FilesystemBlobStore]:
    made = FilesystemBlobStore(tmp_path / "blobs")
    yield made
    await made.close()


def _part(n: int, offset: int = 0) -> Part:
    return Part(f"rec_{n}", offset)


def _many(count: int) -> list[tuple[Part, bytes]]:
    return [(_part(i), f"chunk {i}".encode()) for i in range(count)]


def mode(*paths: Path) -> list[int]:
    """st_mode of each path: a stat, so tests on the event loop call it in a thread."""
    return [p.stat().st_mode for p in paths]


# -- names -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "key", ["", "a//b", "../x", "recordings/../../etc", "a/" * 9 + "b", "UPPER", "a b", "x" * 65]
)
def test_keys_that_are_not_ids_joined_by_slashes_are_refused(key: str) -> None:
    with pytest.raises(ValueError, match="not a blob key"):
        check_key(key)


@pytest.mark.parametrize(
    ("name", "offset"),
    [("audio", 0), ("audio-0000000000000000", 0), ("audio-0000000000123456", 123456), ("x", None)],
)
def test_a_part_is_named_by_its_offset_and_the_legacy_blob_is_the_part_at_zero(
    name: str, offset: int | None
) -> None:
    assert part_offset(f"recordings/rec_a/{name}") == offset


def test_part_names_sort_in_stream_order() -> None:
    names = [audio_part("rec_a", o) for o in (10, 9, 100_000, 0)]

    assert sorted(names) == [audio_part("rec_a", o) for o in (0, 9, 10, 100_000)]


# -- the store: immutable objects ---------------------------------------------------------


async def test_a_blob_is_put_whole_durable_private_and_read_by_ranges(
    store: FilesystemBlobStore,
) -> None:
    await store.put("recordings/rec_a/audio-0000000000000000", b"0123456789")

    [middle, both_ends] = await store.read_ranges(
        [
            BlobRange("recordings/rec_a/audio-0000000000000000", 3, 4),
            BlobRange("recordings/rec_a/audio-0000000000000000", 0, 10),
        ]
    )
    listed = await store.list("recordings/rec_a")

    assert (middle, both_ends) == (b"3456", b"0123456789")
    assert [(b.key, b.size_bytes) for b in listed] == [
        ("recordings/rec_a/audio-0000000000000000", 10)
    ]
    path = store.root / "recordings" / "rec_a" / "audio-0000000000000000"
    file_mode, folder_mode = await asyncio.to_thread(mode, path, path.parent)
    assert file_mode & 0o777 == 0o600
    assert folder_mode & 0o777 == 0o700
    assert not await asyncio.to_thread(list, path.parent.glob("*.tmp-*"))  # renamed into place


async def test_a_short_read_is_an_integrity_failure_and_a_missing_blob_not_found(
    store: FilesystemBlobStore,
) -> None:
    await store.put("recordings/rec_a/audio", b"0123")

    with pytest.raises(IntegrityFailure):
        await store.read_ranges([BlobRange("recordings/rec_a/audio", 2, 10)])
    with pytest.raises(NotFound):
        await store.read_ranges(
            [BlobRange("recordings/rec_a/audio", 0, 1), BlobRange("recordings/rec_b/audio", 0, 1)]
        )


async def test_delete_by_prefix_removes_every_blob_under_it_and_repeats_harmlessly(
    store: FilesystemBlobStore,
) -> None:
    for offset in (0, 100):
        await store.put(audio_part("rec_a", offset), b"x" * 100)
    await store.put(audio_part("rec_b", 0), b"kept")

    first = await store.delete_prefix("recordings/rec_a")
    again = await store.delete_prefix("recordings/rec_a")

    assert (first, again) == (2, 0)
    assert await store.list("recordings/rec_a") == []
    assert [b.key for b in await store.list("recordings")] == [audio_part("rec_b", 0)]


async def test_a_recordings_stream_reads_across_its_parts(store: FilesystemBlobStore) -> None:
    stream = bytes(range(256)) * 4
    for offset in (0, 300, 700):
        end = {0: 300, 300: 700, 700: len(stream)}[offset]
        await store.put(audio_part("rec_a", offset), stream[offset:end])

    audio = await stored_audio(store, "rec_a")
    across = await read_stream(store, audio, 250, 500)

    assert audio.size_bytes == len(stream)
    assert across == stream[250:750]


async def test_a_missing_part_ends_the_readable_stream_there(store: FilesystemBlobStore) -> None:
    await store.put(audio_part("rec_a", 0), b"a" * 100)
    await store.put(audio_part("rec_a", 200), b"c" * 100)  # the part at 100 is gone

    audio = await stored_audio(store, "rec_a")

    assert audio.size_bytes == 100
    with pytest.raises(IntegrityFailure):
        await read_stream(store, audio, 50, 100)


# -- the spool: append and sync -------------------------------------------------------------


async def test_append_many_writes_each_part_at_its_offset(spool: Spool) -> None:
    await spool.append_many([(_part(1), b"12345")])

    offsets = await spool.append_many(
        [(_part(1), b"abc"), (_part(2), b"first"), (_part(2), b"-second")]  # same part: in order
    )

    assert offsets == [5, 0, 5]
    assert await spool.read(_part(1)) == b"12345abc"
    assert await spool.read(_part(2)) == b"first-second"
    assert [(s.part, s.size_bytes) for s in await spool.parts()] == [
        (_part(1), 8),
        (_part(2), 12),
    ]


async def test_append_many_reports_a_failing_item_and_keeps_the_others(
    spool: Spool, tmp_path: Path
) -> None:
    folder = tmp_path / "spool" / "recordings"
    await asyncio.to_thread(folder.mkdir, parents=True)
    await asyncio.to_thread((folder / "rec_9").write_bytes, b"")  # a file where a folder goes

    results = await spool.append_many([(_part(9), b"lost"), (_part(1), b"kept")])

    assert isinstance(results[0], OSError)
    assert results[1] == 0
    assert await spool.read(_part(1)) == b"kept"
    path = tmp_path / "spool" / "recordings" / "rec_1" / "audio-0000000000000000"
    [file_mode] = await asyncio.to_thread(mode, path)
    assert file_mode & 0o777 == 0o600


async def test_a_removed_part_takes_its_empty_folder_with_it(spool: Spool, tmp_path: Path) -> None:
    await spool.append_many([(_part(1), b"x")])

    await spool.remove(_part(1))
    await spool.remove(_part(1))  # twice: harmless

    assert await spool.parts() == []
    assert not await asyncio.to_thread((tmp_path / "spool" / "recordings" / "rec_1").exists)


async def test_append_many_syncs_many_files_with_one_syncfs(
    spool: Spool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One flush of the filesystem for a busy seal turn, not an fsync per recording."""
    # The service runs on Linux (README); every kernel it meets has syncfs with error
    # reporting (5.8+), and this checks that the loader finds it there.
    real, calls = spool_module._SYNCFS, []
    assert real is not None, f"no syncfs found on {platform.system()} {platform.release()}"

    def counted(fd: int) -> int:
        calls.append(fd)
        return real(fd)

    monkeypatch.setattr(spool_module, "_SYNCFS", counted)
    await spool.append_many([(_part(0), b"head ")])

    offsets = await spool.append_many(_many(SYNCFS_FROM))

    assert len(calls) == 1
    assert offsets == [5] + [0] * (SYNCFS_FROM - 1)
    assert await spool.read(_part(0)) == b"head chunk 0"
    assert await spool.read(_part(SYNCFS_FROM - 1)) == f"chunk {SYNCFS_FROM - 1}".encode()


async def test_append_many_falls_back_to_an_fsync_each_when_syncfs_fails(
    spool: Spool, monkeypatch: pytest.MonkeyPatch
) -> None:
    failed: list[int] = []

    def failing(fd: int) -> int:  # as syncfs(2) answers a writeback error: -1
        failed.append(fd)
        return -1

    monkeypatch.setattr(spool_module, "_SYNCFS", failing)

    offsets = await spool.append_many(_many(SYNCFS_FROM))

    assert failed  # it was tried, and its failure did not fail the items
    assert offsets == [0] * SYNCFS_FROM
    assert await spool.read(_part(3)) == b"chunk 3"


async def test_append_many_of_a_few_files_does_not_flush_the_whole_filesystem(
    spool: Spool, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[int] = []
    monkeypatch.setattr(spool_module, "_SYNCFS", lambda fd: calls.append(fd) or 0)

    offsets = await spool.append_many(_many(SYNCFS_FROM - 1))

    assert calls == []
    assert offsets == [0] * (SYNCFS_FROM - 1)
