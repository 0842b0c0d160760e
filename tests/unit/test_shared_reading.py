"""A reading asked for by many at once runs once (S7's probes under a burst of starts)."""

from __future__ import annotations

import asyncio

import pytest

from telephony.web.shared_reading import SharedReading
from tests.support.waiting import eventually


class Probe:
    def __init__(self) -> None:
        self.runs = 0
        self.release = asyncio.Event()
        self.fail = False

    async def __call__(self) -> int:
        self.runs += 1
        await self.release.wait()
        if self.fail:
            raise OSError("store gone")
        return self.runs


async def test_callers_during_a_reading_share_it_and_the_next_caller_reads_afresh() -> None:
    probe = Probe()
    shared = SharedReading(probe)

    callers = [asyncio.ensure_future(shared()) for _ in range(50)]
    await eventually(lambda: probe.runs == 1)  # every caller has joined; it waits on us
    probe.release.set()
    results = await asyncio.gather(*callers)
    later = await shared()

    assert results == [1] * 50 and probe.runs == 2
    assert later == 2  # not a cached answer: a reading of its own


async def test_a_failure_reaches_every_caller_and_is_not_kept() -> None:
    probe = Probe()
    probe.fail = True
    shared = SharedReading(probe)

    callers = [asyncio.ensure_future(shared()) for _ in range(3)]
    await eventually(lambda: probe.runs == 1)
    probe.release.set()
    outcomes = await asyncio.gather(*callers, return_exceptions=True)
    probe.fail = False
    after = await shared()

    assert all(isinstance(o, OSError) for o in outcomes)
    assert after == 2


async def test_one_caller_cancelled_leaves_the_reading_to_the_others() -> None:
    probe = Probe()
    shared = SharedReading(probe)

    impatient, patient = asyncio.ensure_future(shared()), asyncio.ensure_future(shared())
    await eventually(lambda: probe.runs == 1)
    impatient.cancel()
    with pytest.raises(asyncio.CancelledError):
        await impatient
    probe.release.set()

    assert await patient == 1 and probe.runs == 1
