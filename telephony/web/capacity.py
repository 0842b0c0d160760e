"""Room to record (S7): the free space of the blob store's and the spool's filesystems
against TELEPHONY_STORAGE_RESERVE_MB, read on their own threads and bounded in time.

A full disk must be found before the first failed write: a new recording is
refused with 503 `storage-low`, and /readyz answers 503 so a load balancer sends
calls to a node with room, while recordings already running go on. Starts,
/readyz and /metrics that ask at the same time share one probe of the stores
(`SharedReading`): a burst of starts is not a burst of object-store listings.
"""

from __future__ import annotations

import asyncio
from typing import Protocol

from aiohttp import web

from storage.blobs.regions import RegionalBlobStore
from telephony.domain.errors import StorageLow, Unavailable
from telephony.web.appkeys import BLOBS, FREE_SPACE, SETTINGS, SPOOL
from telephony.web.shared_reading import SharedReading

PROBE_TIMEOUT_S = 2.0
MIB = 1024 * 1024


class Probed(Protocol):
    async def probe(self) -> int: ...


def _stores(app: web.Application) -> list[tuple[str, Probed]]:
    """The blob store ("blob store"; with regions, "blob store <region>" each), the spool."""
    store = app[BLOBS]
    blobs: list[tuple[str, Probed]] = [("blob store", store)]
    if isinstance(store, RegionalBlobStore):
        blobs = [(f"blob store {name}", r.store) for name, r in store.regions.items()]
    return [*blobs, ("spool", app[SPOOL])]


def shared_free_space(app: web.Application) -> SharedReading[dict[str, int]]:
    """The app's one reading of free space (create_app keeps it as FREE_SPACE)."""
    return SharedReading(lambda: _probe_all(app))


async def free_space(app: web.Application) -> dict[str, int]:
    """{"blob store": bytes, "spool": bytes}, a blob store per region when there are
    regions; Unavailable when one does not answer. Joins a probe under way."""
    return await app[FREE_SPACE]()


async def _probe_all(app: web.Application) -> dict[str, int]:
    found: dict[str, int] = {}
    for name, store in _stores(app):
        try:
            async with asyncio.timeout(PROBE_TIMEOUT_S):
                found[name] = await store.probe()
        except Exception as exc:
            raise Unavailable(f"{name} not answering ({type(exc).__name__})") from None
    return found


async def require_room(app: web.Application) -> None:
    reserve = app[SETTINGS].storage_reserve_mb * MIB
    for name, free in (await free_space(app)).items():
        if free < reserve:
            raise StorageLow(
                f"the {name} has {free // MIB} MiB free, under the reserve of "
                f"{reserve // MIB} MiB; no new recording starts until there is room",
                retry_after_s=60,
            )
