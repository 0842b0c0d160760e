"""Group commit (telephony/recorder/batching.py): many callers' requests, one flush."""

from __future__ import annotations

import asyncio

import pytest

from telephony.recorder.batching import Batcher
from tests.support.waiting import eventually


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
    await eventually(lambda: sink.batches == [[1]])  # the first flush is now in flight
    later = [asyncio.ensure_future(batcher.submit(i)) for i in (2, 3, 4)]
    await eventually(lambda: len(batcher._waiting) == 3)  # queued behind it
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
    await eventually(lambda: sink.batches == [[1, 2]])  # both in the flush in flight
    gone.cancel()
    sink.release.set()

    assert await kept == 4
    with pytest.raises(asyncio.CancelledError):
        await gone


async def test_a_stalled_flush_says_how_long_it_has_been_out_and_none_says_zero() -> None:
    """What a queue-full log names: which batch held the writers up, and for how long."""
    sink = Recorder()
    sink.release.clear()
    batcher = Batcher(sink.flush)
    assert batcher.waited_s() == 0.0

    pending = asyncio.ensure_future(batcher.submit(1))
    await eventually(lambda: sink.batches == [[1]])
    stalled = await eventually(lambda: (w := batcher.waited_s()) >= 0.2 and w)  # it grows
    sink.release.set()
    assert await pending == 2

    assert 0.2 <= stalled < 5.0
    assert batcher.waited_s() == 0.0
