"""An engine's clock for tests that stream in real time: ticks on the loop's clock, each
due at start + n x interval, so a slow step does not make the stream drift behind.

This is pacing, not waiting: a test that needs something to have happened polls for it
(`tests.support.waiting.eventually`)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator


async def ticks(count: int, interval_s: float) -> AsyncIterator[int]:
    loop = asyncio.get_running_loop()
    start = loop.time()
    for n in range(count):
        yield n
        due = start + (n + 1) * interval_s
        await asyncio.sleep(max(due - loop.time(), 0.0))
