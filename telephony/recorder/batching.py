"""Group commit: many callers' small requests go out as one batch.

Why: hundreds of recording writers each sealing a chunk a second would pay
one database round trip and one thread hop per chunk; most of a recorder's
CPU went there. A `Batcher` lets each caller keep writing plain sequential
code (`await batcher.submit(item)`) while the requests made in the same
loop turn, or while the previous batch was in flight, are flushed together.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Generic, TypeVar

T = TypeVar("T")
R = TypeVar("R")

# Every result is either a value or the exception that item raised: one bad
# item must not fail the others in its batch.
Flush = Callable[[list[T]], Awaitable[Sequence[R | BaseException]]]


class Batcher(Generic[T, R]):
    def __init__(self, flush: Flush[T, R], *, max_items: int = 1000) -> None:
        self._flush = flush
        self._max_items = max_items
        self._waiting: list[tuple[T, asyncio.Future[R]]] = []
        self._task: asyncio.Task[None] | None = None
        self._flushing_since: float | None = None  # monotonic start of the batch in flight

    def waited_s(self) -> float:
        """How long the batch in flight has been out (0 when none is): a stall's witness."""
        since = self._flushing_since
        return 0.0 if since is None else time.monotonic() - since

    async def submit(self, item: T) -> R:
        """The item's result once its batch is flushed; raises what the item raised."""
        future: asyncio.Future[R] = asyncio.get_running_loop().create_future()
        self._waiting.append((item, future))
        if self._task is None:
            # Scheduled, not run: the callers woken in this loop turn join the batch first.
            self._task = asyncio.create_task(self._drain(), name="batcher")
        return await future

    async def _drain(self) -> None:
        batch: list[tuple[T, asyncio.Future[R]]] = []
        try:
            while self._waiting:
                batch = self._waiting[: self._max_items]
                del self._waiting[: self._max_items]
                self._flushing_since = time.monotonic()
                try:
                    results: Sequence[R | BaseException] = await self._flush(
                        [item for item, _ in batch]
                    )
                except Exception as exc:  # every caller of the batch gets it
                    results = [exc] * len(batch)
                finally:
                    self._flushing_since = None
                for (_, future), result in zip(batch, results, strict=True):
                    if future.done():  # its caller was cancelled
                        continue
                    if isinstance(result, BaseException):
                        future.set_exception(result)
                    else:
                        future.set_result(result)
                batch = []
        finally:
            self._task = None
            # Cancelled (the node shuts down): nobody is left waiting for ever.
            for _, future in batch + self._waiting:
                future.cancel()
            self._waiting = []
