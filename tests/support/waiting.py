"""The one way a test waits for something: poll an observable condition, with a deadline."""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Awaitable, Callable
from typing import TypeVar

T = TypeVar("T")


async def eventually(
    condition: Callable[[], T | Awaitable[T]], timeout_s: float = 5.0, interval_s: float = 0.02
) -> T:
    """The first truthy result of `condition()` (sync or async), polled every `interval_s`;
    AssertionError naming the condition when none comes within `timeout_s`.

    An exception the condition raises ends the wait at once: a condition that can tell the
    thing will never happen (a server process that exited) says so. `interval_s=0` polls
    at every turn of the loop, for a state that holds only briefly.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while True:
        result = condition()
        if inspect.isawaitable(result):
            result = await result
        if result:
            return result  # type: ignore[return-value]  # an awaitable's result is T
        if loop.time() >= deadline:
            where = await asyncio.to_thread(_describe, condition)  # reads the source file
            raise AssertionError(
                f"not met within {timeout_s} s: {where} (last result: {result!r:.200})"
            )
        await asyncio.sleep(interval_s)


def _describe(condition: Callable[[], object]) -> str:
    """The condition's source line (a lambda) or name, and where it is defined."""
    code = getattr(condition, "__code__", None)
    if code is None:
        return repr(condition)
    try:
        lines, _ = inspect.getsourcelines(condition)
        text = " ".join(line.strip() for line in lines)
    except (OSError, TypeError):
        text = getattr(condition, "__qualname__", repr(condition))
    return f"{text[:300]} ({code.co_filename}:{code.co_firstlineno})"
