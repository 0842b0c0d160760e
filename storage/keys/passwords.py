"""Password hashing (S1) on a thread of its own, one derivation at a time.

Why one thread, and not the default executor:
- `cryptography`'s Argon2id runs a derivation's lanes on OpenSSL's own thread
  pool. Two derivations with `lanes > 1` started from two threads at once
  deadlock there, for good (cryptography 44 to 50, OpenSSL 3.2+): two people
  signing in at the same moment hung the whole process. One at a time never
  does, and still uses all the lanes of each derivation.
- Memory: each derivation holds `memory_kib` (64 MiB in production); one at a
  time bounds that, where a login storm on a pool would multiply it.
- Nothing else shares the thread, so a storm of logins cannot hold up the
  blob store's file calls (live recordings) or the other way round.

A storm queues here. At most `max_waiting` derivations wait; beyond that the
caller gets Unavailable (503) at once rather than a queue that grows without
bound.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
from dataclasses import dataclass

from storage.keys.crypto import hash_password, needs_rehash, verify_password
from telephony.domain.errors import Unavailable

# Throttling (S2) caps failures per e-mail and address; this caps what is in flight.
MAX_WAITING = 256
_DUMMY_PASSWORD = "not-a-password-of-anyone"  # noqa: S105 - hashed once, matches no user


@dataclass(frozen=True)
class Argon2Params:
    """Argon2id cost (S1). Stored with every hash, so raising them later is safe."""

    memory_kib: int = 65536  # RFC 9106 §4, second recommended option
    iterations: int = 3
    lanes: int = 4


class PasswordHasher:
    """Hash and verify on one worker thread; create it in the app's cleanup context."""

    def __init__(self, params: Argon2Params, *, max_waiting: int = MAX_WAITING) -> None:
        self.params = params
        self.max_waiting = max_waiting
        self._executor = concurrent.futures.ThreadPoolExecutor(
            max_workers=1, thread_name_prefix="argon2"
        )
        self._waiting = 0
        self._dummy: str | None = None

    async def _run(self, fn: object, *args: object) -> object:
        if self._waiting >= self.max_waiting:
            raise Unavailable("too many sign-ins at once; retry in a few seconds", retry_after_s=5)
        self._waiting += 1
        try:
            loop = asyncio.get_running_loop()
            return await loop.run_in_executor(self._executor, fn, *args)  # type: ignore[arg-type]
        finally:
            self._waiting -= 1

    @property
    def waiting(self) -> int:
        """Derivations queued or running: what a login storm has piled up."""
        return self._waiting

    async def hash(self, password: str) -> str:
        p = self.params
        return str(
            await self._run(
                lambda: hash_password(
                    password, memory_kib=p.memory_kib, iterations=p.iterations, lanes=p.lanes
                )
            )
        )

    async def verify(self, password: str, phc: str | None) -> bool:
        """Constant-time check; with no stored hash, the same work against a dummy one.

        So an unknown e-mail costs what a wrong password costs, and the time of
        an answer reveals nothing about which e-mails exist.
        """
        if phc is None:
            if self._dummy is None:
                self._dummy = await self.hash(_DUMMY_PASSWORD)
            await self._run(verify_password, password, self._dummy)
            return False
        return bool(await self._run(verify_password, password, phc))

    def needs_rehash(self, phc: str) -> bool:
        p = self.params
        return needs_rehash(phc, memory_kib=p.memory_kib, iterations=p.iterations, lanes=p.lanes)

    def close(self) -> None:
        # No wait: a derivation still running finishes on its own thread.
        self._executor.shutdown(wait=False, cancel_futures=True)
