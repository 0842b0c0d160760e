"""A test that hangs says what it was waiting for.

pytest-timeout ends a hung test with the main thread's stack, which for an
async test is only the event loop sitting in `select`: the awaited thing is
not in it. Shortly before that timeout, this plugin writes every pending
task's coroutine stack to stderr (captured into the test's report), so a
rare hang in CI names its await the first time it happens.
"""

from __future__ import annotations

import asyncio
import gc
import io
import os
import sys
import threading
from collections.abc import Iterator

import pytest

EARLY_S = 10.0  # before pytest-timeout's own end of the test


def _running_loop_of_main_thread() -> asyncio.AbstractEventLoop | None:
    """The loop the main thread is running, found in its frames (`run_forever`'s self)."""
    frame = sys._current_frames().get(threading.main_thread().ident or -1)
    while frame is not None:
        candidate = frame.f_locals.get("self")
        if isinstance(candidate, asyncio.AbstractEventLoop) and candidate.is_running():
            return candidate
        frame = frame.f_back
    return None


def _dump_tasks(name: str) -> None:
    loop = _running_loop_of_main_thread()
    if loop is None:
        return
    out = io.StringIO()
    # Read from this thread while the loop is stuck: a diagnostic, so a race is acceptable.
    tasks = list(asyncio.all_tasks(loop))
    out.write(f"\n=== {name} is still running: {len(tasks)} pending task(s) ===\n")
    for task in tasks:
        out.write(f"--- {task.get_name()}\n")
        for line in _awaits(task.get_coro()):
            out.write(f"  {line}\n")
    os.write(2, out.getvalue().encode(errors="replace"))


def _awaits(coro: object) -> Iterator[str]:
    """A task's chain of awaits, outermost first (Task.print_stack shows only the first).
    An async generator's step (a cleanup context's teardown) is followed into the
    generator, which only the garbage collector's referents lead to."""
    for _ in range(50):
        if type(coro).__name__ == "async_generator_asend":
            inner = [r for r in gc.get_referents(coro) if hasattr(r, "ag_frame")]
            coro = inner[0] if inner else coro
        frame = (
            getattr(coro, "cr_frame", None)
            or getattr(coro, "gi_frame", None)
            or getattr(coro, "ag_frame", None)
        )
        if frame is None:
            if coro is not None:
                yield f"awaiting {coro!r:.200}"
            return
        yield f"{frame.f_code.co_filename}:{frame.f_lineno} in {frame.f_code.co_name}"
        coro = (
            getattr(coro, "cr_await", None)
            or getattr(coro, "gi_yieldfrom", None)
            or getattr(coro, "ag_await", None)
        )


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_call(item: pytest.Item) -> Iterator[None]:
    marker = item.get_closest_marker("timeout")
    timeout_s = float(marker.args[0]) if marker and marker.args else None
    if timeout_s is None:
        timeout_s = float(item.config.getini("timeout") or 0)
    timer = None
    if timeout_s > EARLY_S:
        timer = threading.Timer(timeout_s - EARLY_S, _dump_tasks, args=(item.nodeid,))
        timer.daemon = True
        timer.start()
    try:
        yield
    finally:
        if timer is not None:
            timer.cancel()
