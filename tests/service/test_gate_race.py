"""R2 under concurrency: a recording start and a revocation fired at once, 200 times.

The gate and every consent change take the call's row lock, so whichever
commits second sees the first: either the start is refused, or the recording
starts and the revocation stops it. Never a running recording without consent.
"""

from __future__ import annotations

import asyncio
import random

import asyncpg
from aiohttp.test_utils import TestClient

from tests.conftest import Customer, consented_call

ROUNDS = 200


async def test_start_and_revocation_never_interleave(
    client: TestClient, owner: Customer, pool: asyncpg.Pool
) -> None:
    rng = random.Random(20261124)
    outcomes: dict[tuple[int, int], int] = {}

    async def start(call_id: str, delay_s: float) -> int:
        await asyncio.sleep(delay_s)
        resp = await client.post(f"/v1/calls/{call_id}/recordings", json={}, headers=owner.auth)
        return resp.status

    async def revoke(call_id: str, party: str, delay_s: float) -> int:
        await asyncio.sleep(delay_s)
        resp = await client.post(
            f"/v1/calls/{call_id}/consents",
            json={"counterpart_id": party, "decision": "revoked", "method": "verbal"},
            headers=owner.auth,
        )
        return resp.status

    for _ in range(ROUNDS):
        call = await consented_call(client, owner, counterparts=rng.choice([1, 2]))
        party = rng.choice(call["counterparts"])["id"]
        jitter = [rng.random() * 0.002 for _ in range(2)]
        started, revoked = await asyncio.gather(
            start(call["id"], jitter[0]), revoke(call["id"], party, jitter[1])
        )
        assert revoked == 201
        assert started in (201, 409)
        outcomes[(started, revoked)] = outcomes.get((started, revoked), 0) + 1

    async with pool.acquire() as conn:
        running_without_consent = await conn.fetchval(
            """SELECT count(*) FROM recordings r
               WHERE r.status IN ('recording', 'paused') AND EXISTS (
                 SELECT 1 FROM counterparts c WHERE c.call_id = r.call_id AND coalesce((
                   SELECT e.decision FROM consent_events e WHERE e.counterpart_id = c.id
                   ORDER BY e.seq DESC LIMIT 1), 'pending') <> 'granted')"""
        )
        started_without_consent = await conn.fetchval(
            """SELECT count(*) FROM recordings r JOIN counterparts c ON c.call_id = r.call_id
               WHERE coalesce((
                 SELECT e.decision FROM consent_events e
                 WHERE e.counterpart_id = c.id AND e.recorded_at <= r.started_at
                 ORDER BY e.seq DESC LIMIT 1), 'pending') <> 'granted'"""
        )
        stopped_by_revocation = await conn.fetchval(
            "SELECT count(*) FROM recordings WHERE stop_reason = 'consent_revoked'"
        )
        total = await conn.fetchval("SELECT count(*) FROM recordings")

    print(f"race outcomes over {ROUNDS} rounds: {outcomes}")  # shown with -s; cited in the note
    assert running_without_consent == 0
    assert started_without_consent == 0
    assert stopped_by_revocation == total  # every recording that started was stopped at once
