"""Group commit (telephony/batching.py) and the blob store's batched append, on real files."""

from __future__ import annotations

import asyncio
import platform
from pathlib import Path

import pytest

from storage.blobs import filesystem as blobs
from storage.blobs.filesystem import FilesystemBlobStore
from telephony.recorder.batching import Batcher


class Recorder:
    """A flush that remembers its batches: doubles each item, fails the item 13."""

    def __init__(self) -> None:
        self.batches: list[list[int]] = []
        self.release = asyncio.Event()
        self.release.set()

    async def flush(self, items: list[int]) -> list[int | BaseException]:
        self.batches.append(list(items))
        await self.release.wait()
        return [ValueError("thirteen") if i == 13 else i * 2 for i in items]


async def test_callers_of_one_loop_turn_share_one_flush() -> None:
    sink = Recorder()
    batcher = Batcher(sink.flush)

    items = [i for i in range(200) if i != 13]
    results = await asyncio.gather(*(batcher.submit(i) for i in items))

    assert results == [i * 2 for i in items]
    assert sink.batches == [items]


async def test_callers_arriving_during_a_flush_go_out_together_in_the_next() -> None:
    sink = Recorder()
    sink.release.clear()
    batcher = Batcher(sink.flush)
    first = asyncio.ensure_future(batcher.submit(1))
    await asyncio.sleep(0.01)  # the first flush is now in flight
    later = [asyncio.ensure_future(batcher.submit(i)) for i in (2, 3, 4)]
    await asyncio.sleep(0.01)
    sink.release.set()

    assert await first == 2
    assert [await f for f in later] == [4, 6, 8]
    assert sink.batches == [[1], [2, 3, 4]]


async def test_one_items_error_reaches_only_its_caller() -> None:
    batcher = Batcher(Recorder().flush)

    results = await asyncio.gather(
        *(batcher.submit(i) for i in (12, 13, 14)), return_exceptions=True
    )

    assert results[0] == 24 and results[2] == 28
    assert isinstance(results[1], ValueError)


async def test_a_failed_flush_fails_every_caller_of_its_batch_and_not_the_next() -> None:
    calls = 0

    async def flaky(items: list[int]) -> list[int | BaseException]:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise OSError("disk gone")
        return list(items)

    batcher = Batcher(flaky)
    failed = await asyncio.gather(batcher.submit(1), batcher.submit(2), return_exceptions=True)
    assert all(isinstance(r, OSError) for r in failed)

    assert await batcher.submit(3) == 3


async def test_a_cancelled_caller_does_not_disturb_the_others() -> None:
    sink = Recorder()
    sink.release.clear()
    batcher = Batcher(sink.flush)
    gone = asyncio.ensure_future(batcher.submit(1))
    kept = asyncio.ensure_future(batcher.submit(2))
    await asyncio.sleep(0.01)
    gone.cancel()
    sink.release.set()

    assert await kept == 4
    with pytest.raises(asyncio.CancelledError):
        await gone


async def test_append_many_writes_each_blob_at_its_offset(tmp_path: Path) -> None:
    store = FilesystemBlobStore(tmp_path)
    await store.append("recordings/rec_a/audio", b"12345")

    offsets = await store.append_many(
        [
            ("recordings/rec_a/audio", b"abc"),
            ("recordings/rec_b/audio", b"first"),
            ("recordings/rec_b/audio", b"-second"),  # same key twice: in order
        ]
    )

    assert offsets == [5, 0, 5]
    assert await store.get("recordings/rec_a/audio") == b"12345abc"
    assert await store.get("recordings/rec_b/audio") == b"first-second"


async def test_append_many_reports_a_failing_item_and_keeps_the_others(tmp_path: Path) -> None:
    store = FilesystemBlobStore(tmp_path)
    (tmp_path / "recordings").mkdir()
    (tmp_path / "recordings" / "rec_file").write_bytes(b"")  # a file where a folder must go

    results = await store.append_many(
        [("recordings/rec_file/audio", b"lost"), ("recordings/rec_ok/audio", b"kept")]
    )

    assert isinstance(results[0], OSError)
    assert results[1] == 0
    assert await store.get("recordings/rec_ok/audio") == b"kept"
    assert (tmp_path / "recordings" / "rec_ok" / "audio").stat().st_mode & 0o777 == 0o600


def _many(count: int) -> list[tuple[str, bytes]]:
    return [(f"recordings/rec_{i}/audio", f"chunk {i}".encode()) for i in range(count)]


async def test_append_many_syncs_many_files_with_one_syncfs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One flush of the filesystem for a busy seal turn, not an fsync per recording."""
    # The service runs on Linux (README); every kernel it meets has syncfs with error
    # reporting (5.8+), and this checks that the loader finds it there.
    real, calls = blobs._SYNCFS, []
    assert real is not None, f"no syncfs found on {platform.system()} {platform.release()}"

    def counted(fd: int) -> int:
        calls.append(fd)
        return real(fd)

    monkeypatch.setattr(blobs, "_SYNCFS", counted)
    store = FilesystemBlobStore(tmp_path)
    await store.append("recordings/rec_0/audio", b"head ")

    offsets = await store.append_many(_many(blobs.SYNCFS_FROM))

    assert len(calls) == 1
    assert offsets == [5] + [0] * (blobs.SYNCFS_FROM - 1)
    assert await store.get("recordings/rec_0/audio") == b"head chunk 0"
    assert await store.get(f"recordings/rec_{blobs.SYNCFS_FROM - 1}/audio") == (
        f"chunk {blobs.SYNCFS_FROM - 1}".encode()
    )


async def test_append_many_falls_back_to_an_fsync_each_when_syncfs_fails(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    failed: list[int] = []

    def failing(fd: int) -> int:  # as syncfs(2) answers a writeback error: -1
        failed.append(fd)
        return -1

    monkeypatch.setattr(blobs, "_SYNCFS", failing)
    store = FilesystemBlobStore(tmp_path)

    offsets = await store.append_many(_many(blobs.SYNCFS_FROM))

    assert failed  # it was tried, and its failure did not fail the items
    assert offsets == [0] * blobs.SYNCFS_FROM
    assert await store.get("recordings/rec_3/audio") == b"chunk 3"


async def test_append_many_of_a_few_files_does_not_flush_the_whole_filesystem(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[int] = []
    monkeypatch.setattr(blobs, "_SYNCFS", lambda fd: calls.append(fd) or 0)
    store = FilesystemBlobStore(tmp_path)

    offsets = await store.append_many(_many(blobs.SYNCFS_FROM - 1))

    assert calls == []
    assert offsets == [0] * (blobs.SYNCFS_FROM - 1)
