"""The hash-chained audit trail: written with each action, readable by owners, verifiable."""

from __future__ import annotations

import hashlib
import itertools
from datetime import UTC, datetime

import asyncpg
import pytest
from aiohttp.test_utils import TestClient

from storage import audit
from telephony.domain.actors import Actor
from tests.conftest import Customer, consented_call, decide, new_customer, start_recording


async def actions(client: TestClient, customer: Customer) -> list[dict]:
    resp = await client.get("/v1/audit?limit=200", headers=customer.auth)
    assert resp.status == 200
    return (await resp.json())["items"]


async def test_each_step_of_a_recorded_call_is_audited_in_order(
    client: TestClient, owner: Customer
) -> None:
    call = await consented_call(client, owner)
    rec = await start_recording(client, owner, call["id"])
    await client.post(f"/v1/recordings/{rec['id']}/pause", headers=owner.auth)
    await client.post(f"/v1/recordings/{rec['id']}/resume", headers=owner.auth)
    await decide(client, owner, call["id"], call["counterparts"][0]["id"], "revoked")
    await client.post(f"/v1/calls/{call['id']}/end", headers=owner.auth)

    items = await actions(client, owner)

    assert [i["action"] for i in items] == [
        "user.created",
        "login.succeeded",
        "call.created",
        "consent.recorded",
        "recording.started",
        "recording.paused",
        "recording.resumed",
        "consent.recorded",
        "recording.completed",  # no media socket: nothing is left to seal
        "call.ended",
    ]
    stopped = items[8]
    assert stopped["details"]["reason"] == "consent_revoked"
    assert stopped["actor"] == {"type": "user", "id": owner.user_id, "role": "owner"}
    assert stopped["subject"]["recording_id"] == rec["id"]
    assert [i["seq"] for i in items] == list(range(1, len(items) + 1))
    for before, after in itertools.pairwise(items):
        assert after["prev_hash"] == before["hash"]


async def test_failed_logins_and_key_changes_are_audited(
    client: TestClient, owner: Customer
) -> None:
    await client.post("/v1/sessions", json={"email": owner.email, "password": "wrong password!"})
    key = await (
        await client.post(
            "/v1/api-keys", json={"name": "k", "scopes": ["calls"]}, headers=owner.auth
        )
    ).json()
    await client.delete(f"/v1/api-keys/{key['id']}", headers=owner.auth)

    names = [i["action"] for i in await actions(client, owner)]

    assert names[-3:] == ["login.failed", "api_key.created", "api_key.deleted"]


async def test_audit_is_per_account_and_owner_only(client: TestClient, owner: Customer) -> None:
    other = await new_customer(client)
    await consented_call(client, other)
    member_resp = await client.post(
        "/v1/api-keys", json={"name": "k", "scopes": ["calls"]}, headers=owner.auth
    )
    key = {"Authorization": f"Bearer {(await member_resp.json())['token']}"}

    mine = await actions(client, owner)
    with_key = await client.get("/v1/audit", headers=key)

    assert all(i["action"] != "call.created" for i in mine)
    assert with_key.status == 403


async def test_audit_rows_cannot_be_updated_or_deleted(
    client: TestClient, owner: Customer, pool: asyncpg.Pool
) -> None:
    async with pool.acquire() as conn:
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await conn.execute("UPDATE audit_events SET action = 'nothing'")
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await conn.execute("DELETE FROM audit_events")


async def test_verify_accepts_an_intact_chain(
    client: TestClient, owner: Customer, pool: asyncpg.Pool
) -> None:
    await consented_call(client, owner)

    async with pool.acquire() as conn:
        assert await audit.verify(conn) == []


async def test_many_rows_of_two_accounts_in_one_transaction_chain_in_order(
    client: TestClient, owner: Customer, pool: asyncpg.Pool
) -> None:
    """A use case's rows are written together at its end (usecases.trail): however many,
    across accounts, each account's chain continues in the order they were left."""
    other = await new_customer(client)
    now = datetime.now(UTC)
    actor = Actor.system("test")
    entries = [
        audit.Entry(acc, now, actor, "test.entry", {"n": n}, {"name": 'Zoë ✓ "quoted"'})
        for n in range(4000)
        for acc in (owner.account_id, other.account_id)
    ]
    async with pool.acquire() as conn, conn.transaction():
        before = await conn.fetchval(
            "SELECT seq FROM audit_heads WHERE account_id = $1", owner.account_id
        )
        await audit.append_many(conn, entries)

    async with pool.acquire() as conn:
        assert await audit.verify(conn) == []
        rows = await conn.fetch(
            "SELECT seq, subject FROM audit_events WHERE account_id = $1 AND seq > $2 ORDER BY seq",
            owner.account_id,
            before,
        )
    assert [r["subject"]["n"] for r in rows] == list(range(4000))
    assert [r["seq"] for r in rows] == list(range(before + 1, before + 4001))


async def tamper(pool: asyncpg.Pool, sql: str, *args: object) -> None:
    """What an attacker with database access could do: bypass the triggers."""
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute("SET LOCAL session_replication_role = replica")
        await conn.execute(sql, *args)


@pytest.mark.parametrize(
    ("sql", "seq", "reason"),
    [
        (
            'UPDATE audit_events SET details = \'{"decision": "granted"}\' WHERE seq = 4',
            4,
            "content",
        ),
        ("UPDATE audit_events SET at = at - interval '1 hour' WHERE seq = 2", 2, "content"),
        ("DELETE FROM audit_events WHERE seq = 3", 3, "missing"),
        ("DELETE FROM audit_events WHERE seq = (SELECT max(seq) FROM audit_events)", 4, "newest"),
    ],
)
async def test_verify_names_the_first_broken_row(
    client: TestClient, owner: Customer, pool: asyncpg.Pool, sql: str, seq: int, reason: str
) -> None:
    await consented_call(client, owner)  # user.created, login, call.created, consent: 4 rows

    await tamper(pool, sql)

    async with pool.acquire() as conn:
        breaks = await audit.verify(conn, owner.account_id)
    assert len(breaks) == 1
    assert breaks[0].account_id == owner.account_id
    assert breaks[0].seq == seq
    assert reason in breaks[0].reason


async def test_a_recomputed_hash_still_breaks_the_next_link(
    client: TestClient, owner: Customer, pool: asyncpg.Pool
) -> None:
    """Rewriting a row and its own hash is caught by the row after it."""
    await consented_call(client, owner)
    async with pool.acquire() as conn:
        row = (await audit.list_events(conn, owner.account_id, after_seq=1, limit=1))[0]
    forged_details = {"forged": True}
    forged = hashlib.sha256(
        audit.canonical(
            account_id=row.account_id,
            seq=row.seq,
            at=row.at,
            actor=row.actor,
            action=row.action,
            subject=row.subject,
            details=forged_details,
            prev_hash=row.prev_hash,
        )
    ).digest()

    await tamper(
        pool,
        "UPDATE audit_events SET details = $1, hash = $2 WHERE account_id = $3 AND seq = 2",
        forged_details,
        forged,
        owner.account_id,
    )

    async with pool.acquire() as conn:
        breaks = await audit.verify(conn, owner.account_id)
    assert [(b.seq, b.reason) for b in breaks] == [(3, "previous hash does not match")]
