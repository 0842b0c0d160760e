"""The deletion journal (`journal/` in the location): deletions and erasures, written
before their transaction commits, re-applied by a restore."""

from __future__ import annotations

import asyncio
import json
import secrets
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from storage.backups.location import READS_AT_ONCE, read_whole
from storage.blobs.protocol import BlobInfo, BlobStore
from telephony.domain.errors import NotFound


class JournalKind(StrEnum):
    RECORDING_DELETED = "recording.deleted"  # the data key shredded, the blobs removed
    PERSONAL_DATA_REMOVED = "account.personal_data_removed"  # D4: the account key goes
    USER_ERASED = "user.erased"  # D2: a member's personal data


@dataclass(frozen=True)
class JournalEntry:
    """Ids only: the journal outlives the database rows, and names no one."""

    kind: JournalKind
    at: datetime
    account_id: str
    recording_id: str | None = None
    user_id: str | None = None
    key: str = field(default="", compare=False)


class DeletionJournal:
    """Deletions and erasures, beside the backups and outside the database, so a restore
    re-applies them (a restored database would otherwise bring them back).

    Each entry is written before its transaction commits: a journalled deletion whose
    commit then failed is one the customer asked for anyway. A journal that cannot be
    written (the object store is down) fails the deletion, which the caller retries.
    """

    def __init__(self, store: BlobStore) -> None:
        self.store = store

    async def record(
        self,
        kind: JournalKind,
        *,
        at: datetime,
        account_id: str,
        recording_id: str | None = None,
        user_id: str | None = None,
    ) -> None:
        when = at.astimezone(UTC)
        key = f"journal/{when:%Y%m%dt%H%M%S}{when.microsecond:06d}z-{secrets.token_hex(4)}"
        body = {"kind": kind.value, "at": when.isoformat(), "account_id": account_id}
        if recording_id is not None:
            body["recording_id"] = recording_id
        if user_id is not None:
            body["user_id"] = user_id
        await self.store.put(key, json.dumps(body).encode())

    async def entries(self) -> list[JournalEntry]:
        """Every entry, oldest first."""
        infos = await self.store.list("journal")
        limit = asyncio.Semaphore(READS_AT_ONCE)

        async def read(info: BlobInfo) -> JournalEntry | None:
            async with limit:
                try:
                    body: dict[str, Any] = json.loads(await read_whole(self.store, info))
                except NotFound:
                    return None
            return JournalEntry(
                JournalKind(body["kind"]),
                datetime.fromisoformat(body["at"]),
                body["account_id"],
                body.get("recording_id"),
                body.get("user_id"),
                info.key,
            )

        found = await asyncio.gather(*(read(i) for i in infos))
        return [e for e in found if e is not None]

    async def remove_before(self, cutoff: datetime) -> int:
        """Entries no kept backup predates are of no more use."""
        mark = f"journal/{cutoff.astimezone(UTC):%Y%m%dt%H%M%S}"
        gone = 0
        for info in await self.store.list("journal"):
            if info.key < mark:
                gone += await self.store.delete_prefix(info.key)
        return gone
