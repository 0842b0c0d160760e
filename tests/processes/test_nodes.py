"""Three nodes behind HAProxy, sharing PostgreSQL and the object store (issue 12, S7/S8).

Control calls and media land on any node; the background workers run once
across nodes (counted by what reaches a webhook receiver and a mail relay);
a node killed mid-call hands its calls to another node when their engines
reconnect through HAProxy, and the recordings whose stream never comes back
end `interrupted` a minute later. Real processes: `telephony serve` three
times, Debian's haproxy, moto's S3 server, PostgreSQL.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import pytest
from aiohttp import web

from storage import leases
from storage.blobs.s3 import S3BlobStore, parse_s3_url
from storage.keys.hierarchy import MasterKeys
from storage.keys.providers import ServiceKeys
from telephony.delivery.maildrop import MailDrop
from telephony.usecases.playback import iter_audio
from tests.support.engine import (
    FRAME_BYTES,
    Api,
    consented_call,
    customer,
    node_of,
    numbered_frame,
    open_stream,
    seal_to,
    send_frame,
)
from tests.support.nodes import three_nodes
from tests.support.s3 import S3Server
from tests.support.sealed import make_pair, opened
from tests.support.servers import free_port
from tests.support.waiting import eventually

pytestmark = pytest.mark.timeout(300)

PART_S = "2"  # docker-compose.yml's TELEPHONY_SPOOL_PART_S: parts every two seconds


@pytest.fixture
async def receiver() -> AsyncIterator[tuple[str, list[dict[str, Any]]]]:
    """A customer's webhook endpoint: every delivery it gets, with the event's id."""
    got: list[dict[str, Any]] = []

    async def hook(request: web.Request) -> web.Response:
        got.append({"id": request.headers["webhook-id"], **json.loads(await request.read())})
        return web.Response(status=204)

    app = web.Application()
    app.router.add_post("/hook", hook)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    yield f"http://127.0.0.1:{port}/hook", got
    await runner.cleanup()


async def nodes_of_streams(pool: asyncpg.Pool, call_ids: list[str]) -> set[str]:
    async with pool.acquire() as conn:
        rows = await conn.fetch(
            "SELECT DISTINCT node_id FROM recordings WHERE call_id = ANY($1)", call_ids
        )
    return {r["node_id"] for r in rows}


async def requests_served(http: aiohttp.ClientSession, base: str) -> float:
    async with http.get(f"{base}/metrics") as resp:
        text = await resp.text()
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith("http_requests_total{") and 'route="/v1/calls"' in line
    )


async def test_calls_and_media_land_on_every_node_and_workers_run_once(
    database_url: str,
    s3_server: S3Server,
    tmp_path: Path,
    pool: asyncpg.Pool,
    receiver: tuple[str, list[dict[str, Any]]],
) -> None:
    """Round-robin spreads control and media over the three nodes; each webhook event,
    each e-mail and each retention deletion happens once, not once per node (leases)."""
    hook_url, deliveries = receiver
    relay = await MailDrop(tmp_path / "relay").start()
    blob_url = await s3_server.new_bucket()
    try:
        async with (
            three_nodes(
                database_url,
                blob_url,
                tmp_path,
                TELEPHONY_SPOOL_PART_S=PART_S,
                TELEPHONY_WEBHOOK_ALLOW_PRIVATE="true",
                TELEPHONY_SMTP_URL=relay.url,
                TELEPHONY_RETENTION_INTERVAL_S="10",
            ) as nodes,
            aiohttp.ClientSession() as http,
        ):
            base = nodes.url
            api = await customer(http, base)
            await api.call("POST", f"{base}/v1/account/webhook-secret", None, 201)
            await api.call("PATCH", f"{base}/v1/account", {"webhook_url": hook_url})
            calls = [await consented_call(api, base) for _ in range(6)]
            recs = []
            for call in calls:  # each socket through HAProxy: round-robin over the nodes
                ws = await open_stream(http, base, call["media"]["token"])
                rec = await api.call("POST", f"{base}/v1/calls/{call['id']}/recordings", {}, 201)
                await eventually(lambda rec=rec: node_of(pool, rec["id"]))
                for n in range(25):
                    await send_frame(ws, n, numbered_frame(n))
                await ws.close()
                recs.append(rec)

            async def all_completed() -> bool:
                for rec in recs:
                    got = await api.call("GET", f"{base}/v1/recordings/{rec['id']}")
                    if got["status"] != "completed":
                        return False
                return True

            await eventually(all_completed, timeout_s=30)
            media_nodes = await nodes_of_streams(pool, [c["id"] for c in calls])
            served = [await requests_served(http, s.url) for s in nodes.servers]

            # Mail: six invitations through HAProxy, so they are queued on every node.
            for n in range(6):
                invite = {"email": f"invitee-{n}@example.com", "name": f"Invitee {n}"}
                await api.call("POST", f"{base}/v1/users", invite, 201)

            # Retention: one recording falls due; every node's worker looks at it.
            async with pool.acquire() as conn:
                await conn.execute(
                    "UPDATE accounts SET recording_retention_days = 1 WHERE id = "
                    "(SELECT account_id FROM recordings WHERE id = $1)",
                    recs[0]["id"],
                )
                await conn.execute(
                    "UPDATE recordings SET ended_at = now() - interval '3 days' WHERE id = $1",
                    recs[0]["id"],
                )

            async def deleted() -> bool:
                async with pool.acquire() as conn:
                    status = await conn.fetchval(
                        "SELECT status FROM recordings WHERE id = $1", recs[0]["id"]
                    )
                return bool(status == "deleted")

            await eventually(deleted, timeout_s=40)
            expected = await expected_events(pool, api, base)

            async def all_delivered() -> bool:
                return {d["id"] for d in deliveries} >= expected

            async def all_mailed() -> bool:
                return len(relay.messages) >= 6

            await eventually(all_delivered, timeout_s=60)
            await eventually(all_mailed, timeout_s=60)
            # Every event and mail closed as delivered: no node can claim one again, so the
            # counts below are final (a duplicate would have to come before this).
            await eventually(lambda: nothing_open(pool), timeout_s=30)
    finally:
        await relay.close()

    assert media_nodes == {"node-a", "node-b", "node-c"}
    assert all(n > 0 for n in served), served  # control calls reached every node
    ids = [d["id"] for d in deliveries]
    assert len(ids) == len(set(ids)), "an event was delivered twice"
    assert set(ids) == expected
    deletions = [d for d in deliveries if d["type"] == "recording.deleted"]
    assert len(deletions) == 1
    invited = sorted(m["To"].addresses[0].addr_spec for m in relay.messages)
    assert invited == [f"invitee-{n}@example.com" for n in range(6)]  # each one once
    async with pool.acquire() as conn:
        audited = await conn.fetchval(
            "SELECT count(*) FROM audit_events WHERE action = 'recording.deleted'"
        )
    assert audited == 1
    # The staff outbox (S4): each notification logged by exactly one node.
    logs = [await asyncio.to_thread(s.log_path.read_text) for s in nodes.servers]
    logged = [
        json.loads(line)["notification_id"]
        for text in logs
        for line in text.splitlines()
        if '"msg": "staff notification"' in line
    ]
    assert logged and sorted(logged) == sorted(set(logged))


async def nothing_open(pool: asyncpg.Pool) -> bool:
    async with pool.acquire() as conn:
        return not await conn.fetchval(
            """SELECT EXISTS (SELECT 1 FROM webhook_events WHERE skipped_at IS NULL
                                 AND delivered_at IS NULL AND given_up_at IS NULL)
                   OR EXISTS (SELECT 1 FROM mail_messages
                               WHERE delivered_at IS NULL AND given_up_at IS NULL)"""
        )


async def expected_events(pool: asyncpg.Pool, api: Api, base: str) -> set[str]:
    """Every webhook event the service recorded for the account once it had a URL."""
    account = await api.call("GET", f"{base}/v1/account")
    async with pool.acquire() as conn:
        rows = await conn.fetch(
            "SELECT id FROM webhook_events WHERE account_id = $1 AND skipped_at IS NULL",
            account["id"],
        )
    return {r["id"] for r in rows}


async def test_leases_let_one_node_run_a_job_at_a_time(pool: asyncpg.Pool) -> None:
    """The retention and purge workers' lock: while one holder runs, another skips."""
    async with (
        leases.only_one(pool, "retention") as first,
        leases.only_one(pool, "retention") as second,
        leases.only_one(pool, "log-purge") as other_job,
    ):
        held = (first, second, other_job)
    async with leases.only_one(pool, "retention") as after:
        pass
    assert held == (True, False, True)
    assert after is True  # released when the block ended


async def reconnect(
    http: aiohttp.ClientSession, base: str, token: str, pool: asyncpg.Pool, recording_id: str
) -> aiohttp.ClientWebSocketResponse:
    """What an engine does when its media socket drops: dial again (through HAProxy) until
    a node takes the stream, here seen as the recording moving off the dead node."""

    async def moved() -> bool:
        return await node_of(pool, recording_id) not in (None, "node-a")

    async def dial() -> aiohttp.ClientWebSocketResponse | None:
        with contextlib.suppress(aiohttp.ClientError):
            ws = await open_stream(http, base, token)
            with contextlib.suppress(AssertionError):
                await eventually(moved, timeout_s=2)
                return ws
            await ws.close()
        return None

    # An engine's back-off between dials: a quarter of a second.
    return await eventually(dial, timeout_s=30, interval_s=0.25)


async def raw_audio(blob_url: str, key: bytes, pool: asyncpg.Pool, recording_id: str) -> bytes:
    """The recording's stored μ-law, decrypted as a download decrypts it."""
    store = await S3BlobStore.open(parse_s3_url(blob_url))
    try:
        keys = ServiceKeys(MasterKeys(key))
        return b"".join([p async for p in iter_audio(pool, store, keys, recording_id, None)])
    finally:
        await store.close()


def frame_numbers(audio: bytes) -> list[int]:
    """Which numbered frames the audio holds, in order (numbered_frame's 'F' + six digits)."""
    frames = [audio[i : i + FRAME_BYTES] for i in range(0, len(audio), FRAME_BYTES)]
    numbers = [int(f[1:7]) for f in frames]
    assert frames == [numbered_frame(n) for n in numbers], "a frame was altered"
    return numbers


async def test_a_killed_node_s_calls_continue_on_another_node_or_end_interrupted(
    database_url: str, s3_server: S3Server, tmp_path: Path, pool: asyncpg.Pool
) -> None:
    """SIGKILL of the node holding two calls' media. One engine reconnects through HAProxy:
    the recording goes on on another node (the customer's start stands, the gate is
    checked again), the hole shown in the coverage map. The other never comes back: a
    minute later its recording is `interrupted`. What the object store held is kept, what
    sat in the dead node's spool (one part, TELEPHONY_SPOOL_PART_S) is the bound."""
    blob_url = await s3_server.new_bucket()
    before, after = 300, 150  # frames: six seconds before the kill, three after
    async with (
        three_nodes(database_url, blob_url, tmp_path, TELEPHONY_SPOOL_PART_S=PART_S) as nodes,
        aiohttp.ClientSession() as http,
    ):
        base, victim = nodes.url, nodes.named("node-a")
        api = await customer(http, base)
        calls = [await consented_call(api, base) for _ in range(2)]
        sockets, recs = [], []
        for call in calls:  # both streams on the node about to die; control through HAProxy
            sockets.append(await open_stream(http, victim.url, call["media"]["token"]))
            rec = await api.call("POST", f"{base}/v1/calls/{call['id']}/recordings", {}, 201)
            await eventually(lambda rec=rec: node_of(pool, rec["id"]))
            recs.append(rec)
        assert {await node_of(pool, r["id"]) for r in recs} == {"node-a"}
        loop = asyncio.get_running_loop()
        started = loop.time()
        for n in range(before):  # real time, as an engine sends
            for ws in sockets:
                await send_frame(ws, n, numbered_frame(n))
            await asyncio.sleep(max(0.0, started + (n + 1) * 0.02 - loop.time()))

        await victim.kill()
        moving, dying = recs
        ws = await reconnect(http, base, calls[0]["media"]["token"], pool, moving["id"])
        started = loop.time()
        for n in range(before, before + after):
            await send_frame(ws, n, numbered_frame(n))
            await asyncio.sleep(max(0.0, started + (n - before + 1) * 0.02 - loop.time()))
        await ws.close()

        async def status(rec: dict[str, Any], wanted: str) -> dict[str, Any] | None:
            got: dict[str, Any] = await api.call("GET", f"{base}/v1/recordings/{rec['id']}")
            return got if got["status"] == wanted else None

        moved = await eventually(lambda: status(moving, "completed"), timeout_s=20)
        lost_at = loop.time()
        ended = await eventually(lambda: status(dying, "interrupted"), timeout_s=120)
        waited_s = loop.time() - lost_at
        new_node = await node_of(pool, moving["id"])
        moved_audio = await raw_audio(blob_url, nodes.master_key, pool, moving["id"])
        dead_audio = await raw_audio(blob_url, nodes.master_key, pool, dying["id"])
        async with http.get(
            f"{base}/v1/recordings/{moving['id']}/audio",
            headers={"Authorization": f"Bearer {api.token}"},
        ) as resp:
            assert resp.status == 200
            wav = await resp.read()

        await victim.start()  # the same node id: it finds its streams gone elsewhere
        again = [await raw_audio(blob_url, nodes.master_key, pool, r["id"]) for r in recs]
        spooled = await asyncio.to_thread(
            lambda: [p for p in (tmp_path / "node-a" / "spool").rglob("*") if p.is_file()]
        )

    kept = frame_numbers(moved_audio)
    first = [n for n in kept if n < before]
    assert kept == first + list(range(before, before + after)), "the reconnected stream's audio"
    assert first == list(range(len(first)))  # what was kept before the kill: a prefix
    lost_s = (before - len(first)) * 0.02
    dead = frame_numbers(dead_audio)
    assert dead == list(range(len(dead)))
    dead_lost_s = (before - len(dead)) * 0.02
    print(
        f"node kill: moved to {new_node}; lost {lost_s:.2f} s (moved), {dead_lost_s:.2f} s "
        f"(not reconnected, interrupted {waited_s:.0f} s after)"
    )
    bound_s = float(PART_S) + 1.0  # the dead node's spool part, and the last unsealed second
    assert lost_s <= bound_s and dead_lost_s <= bound_s
    assert new_node in {"node-b", "node-c"}
    assert [s["ended_by"] for s in moved["segments"]] == ["node_lost", "stream_ended"]
    assert [g["reason"] for g in moved["gaps"]] == ["media-node-lost"]
    assert ended["segments"][-1]["ended_by"] == "interrupted"
    assert 50 <= waited_s <= 90  # a minute's grace, then the sweep
    assert len(wav) > len(moved_audio)  # the WAV through HAProxy: header and PCM
    assert again == [moved_audio, dead_audio]  # the restarted node changed nothing
    assert spooled == []


@pytest.mark.parametrize("sealed", [False, True], ids=["service-keys", "customer-key"])
async def test_a_node_shut_down_for_a_deploy_hands_its_calls_over_losing_nothing(
    database_url: str, s3_server: S3Server, tmp_path: Path, pool: asyncpg.Pool, sealed: bool
) -> None:
    """SIGTERM (a rolling deploy): the node seals and ships what it holds before it lets the
    stream go, so the recording goes on elsewhere with every frame kept.

    Sealed to a customer key (issue 14), the second node makes a data key of its own: the
    container holds two epochs, and the customer's key opens both."""
    blob_url = await s3_server.new_bucket()
    before, after = 150, 100
    pair = make_pair("hpke-mlkem768-x25519")
    async with (
        three_nodes(database_url, blob_url, tmp_path, TELEPHONY_SPOOL_PART_S=PART_S) as nodes,
        aiohttp.ClientSession() as http,
    ):
        base, leaving = nodes.url, nodes.named("node-a")
        api = await customer(http, base)
        if sealed:
            await seal_to(api, base, pair.algorithm, pair.public)
        call = await consented_call(api, base)
        ws = await open_stream(http, leaving.url, call["media"]["token"])
        rec = await api.call("POST", f"{base}/v1/calls/{call['id']}/recordings", {}, 201)
        await eventually(lambda: node_of(pool, rec["id"]))
        for n in range(before):
            await send_frame(ws, n, numbered_frame(n))
            await asyncio.sleep(0.02)
        await asyncio.sleep(0.5)  # the engine's last frames are in before the deploy starts
        await leaving.stop()
        assert leaving.process is not None
        exit_code = leaving.process.returncode  # 0: it handed over, it was not killed
        ws = await reconnect(http, base, call["media"]["token"], pool, rec["id"])
        for n in range(before, before + after):
            await send_frame(ws, n, numbered_frame(n))
            await asyncio.sleep(0.02)
        await ws.close()

        async def completed() -> dict[str, Any] | None:
            got: dict[str, Any] = await api.call("GET", f"{base}/v1/recordings/{rec['id']}")
            return got if got["status"] == "completed" else None

        done = await eventually(completed, timeout_s=20)
        if sealed:
            async with http.get(
                f"{base}/v1/recordings/{rec['id']}/audio",
                headers={"Authorization": f"Bearer {api.token}"},
            ) as resp:
                header, audio = opened(await resp.read(), pair)
            assert [e["epoch"] for e in header["epochs"]] == [0, 1]
            assert 0 == header["epochs"][0]["first_chunk"] < header["epochs"][1]["first_chunk"]
        else:
            audio = await raw_audio(blob_url, nodes.master_key, pool, rec["id"])

    assert exit_code == 0
    assert frame_numbers(audio) == list(range(before + after))  # nothing lost, in order
    assert done["segments"][-1]["ended_by"] == "stream_ended"
