"""The one outbox engine: every message the service sends out of a transaction.

Customer webhooks and staff notifications (S4) today, e-mail next, all go
the same way:

1. The change writes its message into a table in its own transaction (the
   message exists exactly when the change does).
2. A worker *claims* due messages with a lease: one short statement that
   moves their next attempt past the attempt's time limit and commits. No
   database connection, let alone a transaction, is held while a remote
   party answers.
3. It *attempts* each one (an HTTP POST, an SMTP send), bounded by a time
   limit, and *records* the outcome, only if the row is still as claimed. A
   crash mid-attempt leaves the lease to lapse: the message is tried again.

Messages run in *lanes*. A lane tries a head, then asks its channel for the
message that follows it (`following`): a customer's next event, which waits
while an earlier one is retried (head of line, so an account's events keep
their order), or for staff simply the next due notification. Up to
`channel.lanes` lanes run at once, so one hanging endpoint holds one lane,
never the others; a lane yields after `channel.drain_limit` messages so a
busy account cannot starve the rest.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Generic, Protocol, TypeVar

import asyncpg

log = logging.getLogger(__name__)

Item = TypeVar("Item")
Clock = Callable[[], datetime]


def backoff(attempts: int) -> timedelta:
    """Delay before the next try after `attempts` failures: 2 s doubling, capped at one hour."""
    return timedelta(seconds=min(2 ** max(attempts, 1), 3600))


class Outcome(StrEnum):
    DELIVERED = "delivered"
    FAILED = "failed"
    SKIPPED = "skipped"  # nobody can receive it (no endpoint configured): closed, not failed


@dataclass(frozen=True)
class Attempt:
    outcome: Outcome
    error: str | None = None  # a short reason for a failure or a skip; never a secret


class Channel(Protocol[Item]):
    """One kind of outgoing message: where it is stored and how it is sent."""

    name: str
    notify_channel: str  # the NOTIFY that wakes the worker when a message commits
    lanes: int
    drain_limit: int

    async def claim(self, now: datetime, limit: int) -> list[Item]:
        """Lease up to `limit` due heads."""
        ...

    async def attempt(self, item: Item, now: datetime) -> Attempt:
        """Try to send it once, within the channel's time limit; never raises."""
        ...

    async def record(self, item: Item, attempt: Attempt, now: datetime) -> None:
        """Write the outcome (a failure with its retry time or give-up) if still as claimed."""
        ...

    async def following(self, item: Item, now: datetime) -> Item | None:
        """Lease the message this lane tries next, if one is due."""
        ...


def _real_now() -> datetime:
    return datetime.now(UTC)


class Outbox(Generic[Item]):
    """Runs a channel's lanes: one pass on demand (tests, tools) or a worker for ever."""

    def __init__(self, pool: asyncpg.Pool, channel: Channel[Item]) -> None:
        self.pool = pool
        self.channel = channel

    async def deliver_due(self, now: datetime | None = None) -> int:
        """One pass: claim a head per free lane, drain them all; how many were delivered.

        With `now` given (tests) that is the time of every step, else the clock's.
        """
        heads = await self.channel.claim(now or _real_now(), self.channel.lanes)
        counts = await asyncio.gather(*(self._drain(head, now) for head in heads))
        return sum(delivered for delivered, _ in counts)

    async def _drain(self, head: Item, fixed_now: datetime | None) -> tuple[int, bool]:
        """Try `head` and what follows it; (delivered, whether the lane stopped at its limit).

        Never raises: a failed step is logged and its message's lease simply
        lapses, which tries it again later.
        """
        delivered, item, channel = 0, head, self.channel
        clock: Callable[[], datetime] = (lambda: fixed_now) if fixed_now is not None else _real_now
        try:
            for tried in range(1, channel.drain_limit + 1):
                attempt = await channel.attempt(item, clock())
                await channel.record(item, attempt, clock())
                if attempt.outcome is Outcome.DELIVERED:
                    delivered += 1
                if attempt.outcome is Outcome.FAILED or tried == channel.drain_limit:
                    return delivered, tried == channel.drain_limit
                following = await channel.following(item, clock())
                if following is None:
                    break
                item = following
        except Exception:
            log.exception("%s delivery step failed", channel.name)
        return delivered, False

    async def run(self, poll_s: float) -> None:
        """Deliver as messages commit (LISTEN) and on a poll for retries, lanes at once.

        A free lane is filled at once; a lane that stopped at its limit wakes
        the loop, so a backlog drains without waiting for the poll.
        """
        wake = asyncio.Event()
        running: set[asyncio.Task[tuple[int, bool]]] = set()

        def on_notify(*_: object) -> None:
            wake.set()

        def finished(task: asyncio.Task[tuple[int, bool]]) -> None:
            running.discard(task)
            wake.set()

        async with self.pool.acquire() as listener:
            await listener.add_listener(self.channel.notify_channel, on_notify)
            try:
                while True:
                    wake.clear()
                    free = self.channel.lanes - len(running)
                    try:
                        heads = await self.channel.claim(_real_now(), free) if free else []
                    except Exception:
                        # Never let one bad pass end delivery for the life of the process.
                        log.exception("%s claim failed", self.channel.name)
                        heads = []
                    for head in heads:
                        task = asyncio.create_task(self._drain(head, None))
                        running.add(task)
                        task.add_done_callback(finished)
                    # asyncio.timeout, not wait_for: Python 3.11's wait_for returns normally
                    # when the task is cancelled in the same turn as `wake` is set (a drain
                    # finishing at shutdown), and this loop then ran on, holding up the
                    # app's cleanup for ever (the rare test hangs: tests/support/hangs.py).
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(poll_s):
                            await wake.wait()
            finally:
                for task in running:
                    task.cancel()
                await asyncio.gather(*running, return_exceptions=True)
                with contextlib.suppress(Exception):
                    await listener.remove_listener(self.channel.notify_channel, on_notify)
