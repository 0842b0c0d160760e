"""One reading shared by everyone who asks while it is under way (single flight).

A burst of recording starts must not become a burst of probes: 800 starts at
once each listing the object store timed its requests out, and every start
failed 503. Callers that arrive while a reading runs await that one; the next
caller after it ends starts a fresh one, so no answer is older than the
reading it joined. Nothing is cached past that.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

T = TypeVar("T")


class SharedReading(Generic[T]):
    def __init__(self, read: Callable[[], Awaitable[T]]) -> None:
        self._read = read
        self._running: asyncio.Future[T] | None = None

    async def __call__(self) -> T:
        running = self._running
        if running is None:
            running = self._running = asyncio.ensure_future(self._read())
            running.add_done_callback(self._ended)
        # Shielded: one caller's cancellation (its request timed out) leaves the others'.
        return await asyncio.shield(running)

    def _ended(self, done: asyncio.Future[T]) -> None:
        if self._running is done:
            self._running = None
        if not done.cancelled():
            done.exception()  # read, so a failure nobody awaited any more is not logged
