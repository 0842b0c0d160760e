"""Real server processes: a SIGKILL mid-stream, and two nodes sharing one database.

These are about processes, so they run `telephony serve` as subprocesses on
loopback ports rather than the in-process test client.
"""

from __future__ import annotations

import asyncio
import base64
import os
import secrets
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import pytest

from storage.blobs.filesystem import FilesystemBlobStore
from storage.keys.hierarchy import MasterKeys
from storage.keys.providers import ServiceKeys
from telephony.usecases.playback import iter_audio
from tests.support.engine import (
    FRAME_BYTES,
    consented_call,
    customer,
    frames_received,
    node_of,
    numbered_frame,
    open_stream,
    seal_to,
    send_frame,
    send_in_real_time,
)
from tests.support.media import MARKER, VOICE
from tests.support.sealed import make_pair, opened
from tests.support.servers import Server, free_port
from tests.support.sip import Dialog, RtpSender, SipCaller, offer
from tests.support.sipp_peer import free_udp_port
from tests.support.waiting import eventually


@pytest.fixture
async def servers(
    database_url: str, tmp_path: Path, pool: asyncpg.Pool
) -> AsyncIterator[tuple[list[Server], MasterKeys, Path]]:
    key = secrets.token_bytes(32)
    base_env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(tmp_path),
        "LANG": "C.UTF-8",
        "TELEPHONY_DATABASE_URL": database_url,
        "TELEPHONY_DATA_DIR": str(tmp_path / "data"),
        "TELEPHONY_MASTER_KEY": base64.b64encode(key).decode(),
        "TELEPHONY_ARGON2_MEMORY_KIB": "8192",
        "TELEPHONY_ARGON2_ITERATIONS": "1",
        "TELEPHONY_ARGON2_LANES": "1",
    }
    made = [
        Server(
            free_port(),
            f"node-{name}",
            {**base_env, "TELEPHONY_NODE_ID": f"node-{name}"},
            tmp_path / f"{name}.log",
        )
        for name in ("a", "b")
    ]
    try:
        yield made, MasterKeys(key), tmp_path / "data" / "blobs"
    finally:
        for server in made:
            await server.stop()


async def stored(pool: asyncpg.Pool, blobs: Path, master: MasterKeys, recording_id: str) -> bytes:
    store = FilesystemBlobStore(blobs)
    try:
        keys = ServiceKeys(master)
        return b"".join([p async for p in iter_audio(pool, store, keys, recording_id, None)])
    finally:
        await store.close()


async def test_sigkill_mid_stream_loses_at_most_a_second(
    servers: tuple[list[Server], MasterKeys, Path], pool: asyncpg.Pool
) -> None:
    (node, _), master, blobs = servers
    await node.start()
    async with aiohttp.ClientSession() as http:
        api = await customer(http, node.url)
        call = await consented_call(api, node.url)
        ws = await open_stream(http, node.url, call["media"]["token"])
        rec = await api.call("POST", f"{node.url}/v1/calls/{call['id']}/recordings", {}, 201)
        await eventually(lambda: node_of(pool, rec["id"]))
        sent = await send_in_real_time(ws, 150)  # three seconds

        await node.kill()
        await node.start()  # the same node id: it recovers what it held

        got = await api.call("GET", f"{node.url}/v1/recordings/{rec['id']}")
    audio = await stored(pool, blobs, master, rec["id"])
    frames = [audio[i : i + FRAME_BYTES] for i in range(0, len(audio), FRAME_BYTES)]
    spooled = await asyncio.to_thread(
        lambda: [p for p in (blobs.parent / "spool").rglob("*") if p.is_file()]
    )
    assert spooled == []  # the restarted node shipped its spool before it said ready
    assert got["status"] == "interrupted"
    assert frames == [numbered_frame(n) for n in range(len(frames))]  # in order, intact
    missing_s = (sent - len(frames)) * 0.02
    print(f"kill test: sent {sent} frames, stored {len(frames)}, missing {missing_s:.2f} s")
    assert missing_s <= 1.0, f"{missing_s:.2f} s missing"
    assert got["segments"][-1]["ended_by"] == "interrupted"


async def test_sigkill_mid_call_sealed_to_a_customer_key_leaves_chunks_the_customer_opens(
    servers: tuple[list[Server], MasterKeys, Path], pool: asyncpg.Pool
) -> None:
    """Issue 14: the data key died with the node, and nothing the service keeps opens the
    chunks, yet the customer's private key opens every chunk that was sealed."""
    (node, _), _, _ = servers
    pair = make_pair()
    await node.start()
    async with aiohttp.ClientSession() as http:
        api = await customer(http, node.url)
        await seal_to(api, node.url, pair.algorithm, pair.public)
        call = await consented_call(api, node.url)
        ws = await open_stream(http, node.url, call["media"]["token"])
        rec = await api.call("POST", f"{node.url}/v1/calls/{call['id']}/recordings", {}, 201)
        await eventually(lambda: node_of(pool, rec["id"]))
        await send_in_real_time(ws, 100)  # two seconds

        await node.kill()
        await node.start()

        got = await api.call("GET", f"{node.url}/v1/recordings/{rec['id']}")
        async with http.get(
            f"{node.url}/v1/recordings/{rec['id']}/audio",
            headers={"Authorization": f"Bearer {api.token}"},
        ) as resp:
            assert resp.status == 200, await resp.text()
            container = await resp.read()
    header, audio = opened(container, pair)
    frames = [audio[i : i + FRAME_BYTES] for i in range(0, len(audio), FRAME_BYTES)]
    assert got["status"] == header["status"] == "interrupted"
    assert frames == [numbered_frame(n) for n in range(len(frames))]  # in order, intact
    assert (100 - len(frames)) * 0.02 <= 1.0


async def test_two_nodes_control_on_one_media_on_the_other(
    servers: tuple[list[Server], MasterKeys, Path], pool: asyncpg.Pool
) -> None:
    """Cross-node control over LISTEN/NOTIFY keeps the window rule (R2)."""
    (media_node, control_node), master, blobs = servers
    await media_node.start()
    await control_node.start()
    async with aiohttp.ClientSession() as http:
        api = await customer(http, control_node.url)
        # The media node applies control messages in the order they were committed, and a
        # resume changes nothing it shows. So a second call it records is the probe: its
        # stop, sent after the resume, completes only once the resume has been applied.
        probe_call = await consented_call(api, control_node.url)
        probe_ws = await open_stream(http, media_node.url, probe_call["media"]["token"])
        probe = await api.call(
            "POST", f"{control_node.url}/v1/calls/{probe_call['id']}/recordings", {}, 201
        )
        await eventually(lambda: node_of(pool, probe["id"]))
        call = await consented_call(api, control_node.url)
        ws = await open_stream(http, media_node.url, call["media"]["token"])
        n = 0

        async def send(payload: bytes, count: int) -> None:
            nonlocal n
            for _ in range(count):
                await send_frame(ws, n, payload)
                n += 1
                await asyncio.sleep(0.002)  # an engine's pace, faster than real time

        async def recording(of: dict[str, Any], status: str) -> dict[str, Any] | None:
            got = await api.call("GET", f"{control_node.url}/v1/recordings/{of['id']}")
            return got if got["status"] == status else None

        async def media_node_has_every_frame() -> bool:
            return await frames_received(http, media_node.url) >= n

        await send(MARKER, 10)  # before the recording
        rec = await api.call(
            "POST", f"{control_node.url}/v1/calls/{call['id']}/recordings", {}, 201
        )
        await eventually(lambda: node_of(pool, rec["id"]))
        await send(numbered_frame(1), 50)
        await eventually(media_node_has_every_frame)
        await api.call("POST", f"{control_node.url}/v1/recordings/{rec['id']}/pause")
        await send(MARKER, 50)
        await api.call("POST", f"{control_node.url}/v1/recordings/{rec['id']}/resume")
        await api.call("POST", f"{control_node.url}/v1/recordings/{probe['id']}/stop")
        await eventually(lambda: recording(probe, "completed"))  # the resume has arrived
        await send(numbered_frame(2), 50)
        await eventually(media_node_has_every_frame)
        await api.call(
            "POST",
            f"{control_node.url}/v1/calls/{call['id']}/consents",
            {
                "counterpart_id": call["counterparts"][0]["id"],
                "decision": "revoked",
                "method": "verbal",
            },
            201,
        )
        await send(MARKER, 50)
        await ws.close()
        got = await eventually(lambda: recording(rec, "completed"), timeout_s=10)
        await probe_ws.close()

    audio = await stored(pool, blobs, master, rec["id"])
    assert got["status"] == "completed"
    assert got["stop_reason"] == "consent_revoked"
    assert audio.count(numbered_frame(1)) == 50
    assert audio.count(numbered_frame(2)) == 50
    assert MARKER[:16] not in audio
    raw = await asyncio.to_thread(
        lambda: b"".join(p.read_bytes() for p in blobs.parent.rglob("*") if p.is_file())
    )
    assert MARKER[:16] not in raw


# -- the same over SIP and RTP (issue 13) -------------------------------------------------------


def with_sip(server: Server) -> int:
    """Give the server a SIP port of its own, the same after a restart; returns it."""
    port = free_udp_port()
    server.env["TELEPHONY_SIP_LISTEN"] = f"127.0.0.1:{port}"
    return port


async def sip_session(call: dict[str, Any], sip_port: int) -> tuple[SipCaller, RtpSender, Dialog]:
    """The call's SIP session on a node: an INVITE by its media token, an RTP sender
    aimed at the answer."""
    caller = await SipCaller(sip_port).open()
    rtp = await RtpSender(0).open()
    dialog = await caller.invite(call["media"]["token"], offer(rtp.port))
    assert dialog.answer.status == 200, dialog.answer
    rtp.to = ("127.0.0.1", dialog.rtp_ports[0])
    return caller, rtp, dialog


async def test_sigkill_mid_sip_session_loses_at_most_a_second(
    servers: tuple[list[Server], MasterKeys, Path], pool: asyncpg.Pool
) -> None:
    (node, _), master, blobs = servers
    sip_port = with_sip(node)
    await node.start()
    async with aiohttp.ClientSession() as http:
        api = await customer(http, node.url)
        call = await consented_call(api, node.url)
        caller, rtp, _ = await sip_session(call, sip_port)
        rec = await api.call("POST", f"{node.url}/v1/calls/{call['id']}/recordings", {}, 201)
        await eventually(lambda: node_of(pool, rec["id"]))
        sent = 150
        await rtp.play_each([numbered_frame(n) for n in range(sent)])  # three seconds, real time

        await node.kill()
        await node.start()  # the same node id: it recovers what it held

        got = await api.call("GET", f"{node.url}/v1/recordings/{rec['id']}")
        rtp.close()
        caller.close()
    audio = await stored(pool, blobs, master, rec["id"])
    frames = [audio[i : i + FRAME_BYTES] for i in range(0, len(audio), FRAME_BYTES)]
    assert got["status"] == "interrupted" and got["source"] == "sip"
    assert frames == [numbered_frame(n) for n in range(len(frames))]  # in order, intact
    missing_s = (sent - len(frames)) * 0.02
    print(f"SIP kill test: sent {sent} packets, stored {len(frames)}, missing {missing_s:.2f} s")
    assert missing_s <= 1.0, f"{missing_s:.2f} s missing"


async def test_two_nodes_control_on_one_sip_on_the_other(
    servers: tuple[list[Server], MasterKeys, Path], pool: asyncpg.Pool
) -> None:
    """The customer's start and stop go to one node; the SIP session and its RTP to the
    other, which applies them (LISTEN/NOTIFY) and checks every chunk's window (R2)."""
    (media_node, control_node), master, blobs = servers
    sip_port = with_sip(media_node)
    await media_node.start()
    await control_node.start()
    async with aiohttp.ClientSession() as http:
        api = await customer(http, control_node.url)
        call = await consented_call(api, control_node.url)
        caller, rtp, dialog = await sip_session(call, sip_port)
        rec = await api.call(
            "POST", f"{control_node.url}/v1/calls/{call['id']}/recordings", {}, 201
        )
        await eventually(lambda: node_of(pool, rec["id"]))
        await rtp.play(VOICE, 50)

        async def sealing() -> bool:
            """The stretch is being sealed: it all arrived (the last 100 ms wait in the
            writer for late companions; the stop seals them, as they came before it)."""
            async with pool.acquire() as conn:
                samples = await conn.fetchval(
                    "SELECT coalesce(sum(samples), 0) FROM recording_chunks"
                    " WHERE recording_id = $1",
                    rec["id"],
                )
            return bool(samples >= 30 * FRAME_BYTES)

        await eventually(sealing)
        await api.call("POST", f"{control_node.url}/v1/recordings/{rec['id']}/stop", {}, 200)
        await rtp.play(MARKER, 50)  # after the stop answered, on the other node
        assert (await caller.in_dialog(dialog, "BYE")).status == 200
        got = await api.call("GET", f"{control_node.url}/v1/recordings/{rec['id']}")
        rtp.close()
        caller.close()
    audio = await stored(pool, blobs, master, rec["id"])
    assert got["status"] == "completed"
    assert audio == VOICE * 50
    assert MARKER[:16] not in audio
