"""PostgreSQL restarted while 20 legs record (issue 12): sealing waits for it, frames are
held within the writer's bound, the API answers 503 (never 500) meanwhile, and every
recording reads back whole afterwards."""

from __future__ import annotations

import asyncio
import base64
import os
import secrets
import time
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import asyncpg
import pytest

from storage.db import ensure_database, with_database
from storage.pgcluster import LocalCluster
from tests.conftest import PASSWORD, signup_body
from tests.support.pacing import ticks
from tests.support.servers import Server, free_port
from tests.support.waiting import eventually

LEGS = 20
FRAME_BYTES = 160


def numbered(n: int) -> bytes:
    return (b"G%06d" % n * 23)[:FRAME_BYTES]


@pytest.fixture
async def own_cluster(tmp_path: Path) -> AsyncIterator[LocalCluster]:
    cluster = LocalCluster(tmp_path / "pg")
    await asyncio.to_thread(cluster.ensure_running)
    yield cluster
    await asyncio.to_thread(cluster.stop)


async def test_a_database_restart_mid_recording_loses_nothing_and_answers_503(
    own_cluster: LocalCluster, tmp_path: Path
) -> None:
    url = with_database(await asyncio.to_thread(own_cluster.dsn, "postgres"), "restart")
    await ensure_database(url)
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(tmp_path),
        "LANG": "C.UTF-8",
        "TELEPHONY_DATABASE_URL": url,
        "TELEPHONY_DATA_DIR": str(tmp_path / "data"),
        "TELEPHONY_MASTER_KEY": base64.b64encode(secrets.token_bytes(32)).decode(),
        "TELEPHONY_ARGON2_MEMORY_KIB": "8192",
        "TELEPHONY_ARGON2_ITERATIONS": "1",
        "TELEPHONY_ARGON2_LANES": "1",
        "TELEPHONY_NODE_ID": "restart",
    }
    server = Server(free_port(), "restart", env, tmp_path / "server.log")
    await server.start()
    base = server.url
    statuses: list[int] = []
    try:
        async with aiohttp.ClientSession() as http:
            body = signup_body()
            async with http.post(f"{base}/v1/signup", json=body) as resp:
                assert resp.status == 201
            async with http.post(
                f"{base}/v1/sessions", json={"email": body["email"], "password": PASSWORD}
            ) as resp:
                auth = {"Authorization": f"Bearer {(await resp.json())['token']}"}
            legs = []
            for _ in range(LEGS):
                async with http.post(
                    f"{base}/v1/calls",
                    json={
                        "direction": "inbound",
                        "from": "+48601234567",
                        "to": "+48221234567",
                        "counterparts": [{"label": "c", "number": "+48601234567"}],
                    },
                    headers=auth,
                ) as resp:
                    call = await resp.json()
                async with http.post(
                    f"{base}/v1/calls/{call['id']}/consents",
                    json={
                        "counterpart_id": call["counterparts"][0]["id"],
                        "decision": "granted",
                        "method": "announcement",
                    },
                    headers=auth,
                ) as resp:
                    assert resp.status == 201, await resp.text()
                async with http.post(
                    f"{base}/v1/calls/{call['id']}/recordings",
                    json={"channels": "mono"},
                    headers=auth,
                ) as resp:
                    assert resp.status == 201, await resp.text()
                    rec = await resp.json()
                ws = await http.ws_connect(f"{base}/v1/media/twilio?token={call['media']['token']}")
                await ws.send_json({"event": "connected", "protocol": "Call", "version": "1.0.0"})
                await ws.send_json(
                    {
                        "event": "start",
                        "sequenceNumber": "1",
                        "streamSid": f"MZ{secrets.token_hex(16)}",
                        "start": {
                            "streamSid": "MZ0",
                            "callSid": "CA0",
                            "accountSid": "AC0",
                            "tracks": ["inbound"],
                            "mediaFormat": {
                                "encoding": "audio/x-mulaw",
                                "sampleRate": 8000,
                                "channels": 1,
                            },
                        },
                    }
                )
                legs.append((ws, rec["id"]))
            await eventually(lambda: every_writer_open(url, [r for _, r in legs]))

            sent = 0

            async def talk(seconds: float) -> None:
                """Every leg, in real time: 5 frames (100 ms) each 100 ms."""
                nonlocal sent
                async for _ in ticks(int(seconds * 10), 0.1):
                    for ws, _rec in legs:
                        for k in range(5):
                            n = sent + k
                            await ws.send_json(
                                {
                                    "event": "media",
                                    "sequenceNumber": str(n + 2),
                                    "media": {
                                        "track": "inbound",
                                        "chunk": str(n + 1),
                                        "timestamp": str(n * 20),
                                        "payload": base64.b64encode(numbered(n)).decode(),
                                    },
                                }
                            )
                    sent += 5

            async def probe_api() -> None:
                async for _ in ticks(10**6, 0.1):  # ten samples a second until cancelled
                    async with http.get(f"{base}/v1/calls?limit=1", headers=auth) as resp:
                        statuses.append(resp.status)

            await talk(2)
            prober = asyncio.create_task(probe_api())
            restarted = time.monotonic()
            await asyncio.gather(
                talk(5),
                asyncio.to_thread(_restart, own_cluster),
            )
            outage = time.monotonic() - restarted
            await talk(2)
            prober.cancel()
            for ws, _rec in legs:
                await ws.send_json({"event": "stop", "sequenceNumber": "9999"})
                await ws.close()

            async def all_completed() -> bool:
                for _ws, rec_id in legs:
                    async with http.get(f"{base}/v1/recordings/{rec_id}", headers=auth) as resp:
                        if (await resp.json())["status"] != "completed":
                            return False
                return True

            await eventually(all_completed, timeout_s=60, interval_s=0.5)
            audios = []
            for _ws, rec_id in legs:
                async with http.get(
                    f"{base}/v1/recordings/{rec_id}/audio?encoding=mulaw", headers=auth
                ) as resp:
                    assert resp.status == 200
                    audios.append((await resp.read())[-sent * FRAME_BYTES :])
    finally:
        await server.stop()

    assert outage < 30
    assert 500 not in statuses, statuses
    assert 503 in statuses  # the API said so while the database was gone
    expected = b"".join(numbered(n) for n in range(sent))
    for audio in audios:
        assert audio == expected  # every frame of every leg, in order: within the bound


async def every_writer_open(url: str, recording_ids: list[str]) -> bool:
    """Each recording picked up by the node's writer (it names the node that writes it)."""
    conn = await asyncpg.connect(url)
    try:
        open_ = await conn.fetchval(
            "SELECT count(*) FROM recordings WHERE id = ANY($1) AND node_id IS NOT NULL",
            recording_ids,
        )
    finally:
        await conn.close()
    return bool(open_ == len(recording_ids))


def _restart(cluster: LocalCluster) -> None:
    time.sleep(1)
    cluster.stop()
    time.sleep(1.5)  # gone for a moment, as in a fail-over
    cluster.ensure_running()
