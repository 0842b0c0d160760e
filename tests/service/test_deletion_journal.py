"""The deletion journal (S8): every deletion and erasure is written beside the backups before
it commits, and a restore re-applies what the restored database does not show yet."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import asyncpg
from aiohttp.test_utils import TestClient

from storage import audit
from storage.backups import DeletionJournal, JournalKind
from storage.blobs.protocol import BlobInfo, BlobRange
from telephony.domain.errors import Unavailable
from telephony.settings import Settings
from telephony.usecases import restore
from telephony.web.appkeys import JOURNAL
from tests.conftest import Customer
from tests.service.test_privacy import complete, file, new_member, support_auth
from tests.support.recordings import download, record


class DownStore:
    """A blob store that does not answer, as an unreachable object store."""

    async def put(self, key: str, data: bytes) -> None:
        raise Unavailable("the object store refused a write: test")

    async def put_file(self, key: str, path: Path) -> None:
        raise Unavailable("the object store refused a write: test")

    async def read_ranges(self, ranges: list[BlobRange]) -> list[bytes]:
        raise Unavailable("down")

    async def list(self, prefix: str) -> list[BlobInfo]:
        raise Unavailable("down")

    async def delete_prefix(self, prefix: str) -> int:
        raise Unavailable("down")

    async def probe(self) -> int:
        raise Unavailable("down")

    async def close(self) -> None:
        return None


async def status_of(pool: asyncpg.Pool, recording_id: str) -> str:
    async with pool.acquire() as conn:
        return str(await conn.fetchval("SELECT status FROM recordings WHERE id = $1", recording_id))


async def test_a_deletion_is_journalled_with_ids_only(
    client: TestClient, owner: Customer, pool: asyncpg.Pool
) -> None:
    recording_id = await record(client, owner, pool, frames=20)

    resp = await client.delete(f"/v1/recordings/{recording_id}", headers=owner.auth)

    assert resp.status == 204
    journal = client.app[JOURNAL]
    [entry] = await journal.entries()
    assert (entry.kind, entry.recording_id, entry.account_id) == (
        JournalKind.RECORDING_DELETED,
        recording_id,
        owner.account_id,
    )
    [info] = await journal.store.list("journal")
    [raw] = await journal.store.read_ranges([BlobRange(info.key, 0, info.size_bytes)])
    assert set(json.loads(raw)) == {"kind", "at", "account_id", "recording_id"}
    assert owner.email.encode() not in raw


async def test_a_deletion_is_refused_while_the_journal_cannot_be_written(
    client: TestClient, owner: Customer, pool: asyncpg.Pool
) -> None:
    recording_id = await record(client, owner, pool, frames=20)
    journal = client.app[JOURNAL]
    store, journal.store = journal.store, DownStore()
    try:
        refused = await client.delete(f"/v1/recordings/{recording_id}", headers=owner.auth)
        kept = await download(client, owner, recording_id)
    finally:
        journal.store = store

    assert refused.status == 503  # the journal comes first: nothing was committed
    assert kept.status == 200 and await status_of(pool, recording_id) == "completed"
    retried = await client.delete(f"/v1/recordings/{recording_id}", headers=owner.auth)
    assert retried.status == 204


async def test_a_restore_re_applies_a_deletion_its_database_predates_once(
    client: TestClient, owner: Customer, pool: asyncpg.Pool
) -> None:
    # As a restored database from before the deletion: the journal has it, the rows do not.
    recording_id = await record(client, owner, pool, frames=20)
    journal = DeletionJournal(client.app[JOURNAL].store)
    at = datetime.now(UTC)
    await journal.record(
        JournalKind.RECORDING_DELETED,
        at=at,
        account_id=owner.account_id,
        recording_id=recording_id,
    )
    entries = await journal.entries()

    applied = await restore.reapply_journal(pool, entries, datetime.now(UTC))
    again = await restore.reapply_journal(pool, entries, datetime.now(UTC))

    assert (applied, again) == (1, 0)
    assert await status_of(pool, recording_id) == "deleted"
    assert (await download(client, owner, recording_id)).status == 404
    trail = await (await client.get("/v1/audit?limit=200", headers=owner.auth)).json()
    [deleted] = [e for e in trail["items"] if e["action"] == "recording.deleted"]
    assert deleted["actor"] == {"type": "system", "id": "restore", "role": None}
    async with pool.acquire() as conn:
        assert await audit.verify(conn) == []
        wrapped = await conn.fetchval(
            "SELECT wrapped_key FROM recordings WHERE id = $1", recording_id
        )
    assert wrapped is None  # the key is shredded again


async def test_an_erasure_is_journalled_and_re_applied_to_a_database_that_predates_it(
    client: TestClient, owner: Customer, pool: asyncpg.Pool, settings: Settings
) -> None:
    member = await new_member(client, owner)
    kept = await new_member(client, owner, name="Kept Member")
    request = await file(client, member, "erasure", "please erase me")
    staff = await support_auth(client, pool, settings)
    assert (await complete(client, staff, request["id"])).status == 200
    [entry] = await client.app[JOURNAL].entries()
    # The restored database predates it: the same erasure, journalled for the kept member.
    replay = entry.__class__(entry.kind, entry.at, owner.account_id, user_id=kept.user_id)

    applied = await restore.reapply_journal(pool, [entry, replay], datetime.now(UTC))

    assert (entry.kind, entry.user_id, entry.account_id) == (
        JournalKind.USER_ERASED,
        member.user_id,
        owner.account_id,
    )
    assert applied == 1  # the first was already done; the second erased the kept member
    async with pool.acquire() as conn:
        left = await conn.fetchval("SELECT count(*) FROM users WHERE id = $1", kept.user_id)
        assert left == 0
        assert await audit.verify(conn) == []


async def test_a_restore_re_applies_the_removal_of_an_accounts_personal_data(
    client: TestClient, owner: Customer, pool: asyncpg.Pool
) -> None:
    journal = DeletionJournal(client.app[JOURNAL].store)
    await journal.record(
        JournalKind.PERSONAL_DATA_REMOVED, at=datetime.now(UTC), account_id=owner.account_id
    )

    applied = await restore.reapply_journal(pool, await journal.entries(), datetime.now(UTC))

    assert applied == 1
    async with pool.acquire() as conn:
        row = await conn.fetchrow(
            "SELECT name, personal_data_removed_at FROM accounts WHERE id = $1", owner.account_id
        )
        keys = await conn.fetchval(
            "SELECT count(*) FROM account_keys WHERE account_id = $1", owner.account_id
        )
    assert row["name"] == "terminated account" and row["personal_data_removed_at"] is not None
    assert keys == 0
