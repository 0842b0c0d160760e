"""Real server processes: a SIGKILL mid-stream, and two nodes sharing one database.

These are about processes, so they run `telephony serve` as subprocesses on
loopback ports rather than the in-process test client.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import os
import secrets
import signal
import socket
import subprocess
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import pytest

from storage.blobs.filesystem import FilesystemBlobStore
from storage.keys.hierarchy import MasterKeys
from storage.keys.providers import ServiceKeys
from telephony.usecases.playback import iter_audio
from tests.conftest import PASSWORD, signup_body

FRAME_BYTES = 160  # 20 ms of 8 kHz μ-law
# Built at run time: a folded constant would put the marker itself into this
# module's .pyc, and the scan of the temporary folder would find the test.
MARKER = (bytes.fromhex("13374d41524b4552deadbeef") * 14)[:FRAME_BYTES]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def numbered_frame(n: int) -> bytes:
    """A frame that says which one it is: 'F' + six digits, repeated."""
    return (b"F%06d" % n * 23)[:FRAME_BYTES]


@dataclass
class Server:
    port: int
    node_id: str
    env: dict[str, str]
    log_path: Path
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _spawn(self) -> subprocess.Popen[bytes]:
        with open(self.log_path, "ab") as log:
            return subprocess.Popen(
                [sys.executable, "-m", "telephony", "serve", "--port", str(self.port)],
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )

    async def start(self) -> None:
        self.process = await asyncio.to_thread(self._spawn)
        async with aiohttp.ClientSession() as http:
            for _ in range(300):
                if self.process.poll() is not None:
                    raise AssertionError(f"server exited: {self.log_path.read_text()[-2000:]}")
                with contextlib.suppress(aiohttp.ClientError):  # not listening yet
                    async with http.get(f"{self.url}/readyz") as resp:
                        if resp.status == 200:
                            return
                await asyncio.sleep(0.05)
        raise AssertionError("server did not become ready")

    def kill(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=10)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


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
            server.stop()


class Api:
    def __init__(self, http: aiohttp.ClientSession, token: str = "") -> None:
        self.http = http
        self.token = token

    async def call(self, method: str, url: str, body: Any = None, expect: int = 200) -> Any:
        headers = {"Authorization": f"Bearer {self.token}"} if self.token else {}
        async with self.http.request(method, url, json=body, headers=headers) as resp:
            text = await resp.text()
            assert resp.status == expect, f"{method} {url}: {resp.status} {text}"
            return await resp.json() if text else None


async def customer(http: aiohttp.ClientSession, base: str) -> Api:
    body = signup_body()
    api = Api(http)
    await api.call("POST", f"{base}/v1/signup", body, 201)
    session = await api.call(
        "POST", f"{base}/v1/sessions", {"email": body["email"], "password": PASSWORD}, 201
    )
    return Api(http, session["token"])


async def consented_call(api: Api, base: str) -> dict[str, Any]:
    call = await api.call(
        "POST",
        f"{base}/v1/calls",
        {
            "direction": "inbound",
            "from": "+48601234567",
            "to": "+48221234567",
            "counterparts": [{"label": "caller", "number": "+48601234567"}],
        },
        201,
    )
    await api.call(
        "POST",
        f"{base}/v1/calls/{call['id']}/consents",
        {
            "counterpart_id": call["counterparts"][0]["id"],
            "decision": "granted",
            "method": "announcement",
        },
        201,
    )
    return call


async def open_stream(
    http: aiohttp.ClientSession, base: str, token: str
) -> aiohttp.ClientWebSocketResponse:
    ws = await http.ws_connect(f"{base.replace('http', 'ws')}/v1/media/twilio?token={token}")
    await ws.send_json({"event": "connected"})
    await ws.send_json(
        {
            "event": "start",
            "start": {
                "tracks": ["inbound"],
                "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1},
            },
        }
    )
    return ws


async def send_frame(ws: aiohttp.ClientWebSocketResponse, n: int, payload: bytes) -> None:
    await ws.send_json(
        {
            "event": "media",
            "media": {
                "track": "inbound",
                "timestamp": str(n * 20),
                "payload": base64.b64encode(payload).decode(),
            },
        }
    )


async def wait_for_node(pool: asyncpg.Pool, recording_id: str) -> None:
    for _ in range(200):
        async with pool.acquire() as conn:
            if await conn.fetchval("SELECT node_id FROM recordings WHERE id = $1", recording_id):
                return
        await asyncio.sleep(0.025)
    raise AssertionError("no node picked up the recording")


async def stored(pool: asyncpg.Pool, blobs: Path, master: MasterKeys, recording_id: str) -> bytes:
    store = FilesystemBlobStore(blobs)
    try:
        keys = ServiceKeys(master)
        return b"".join([p async for p in iter_audio(pool, store, keys, recording_id, None)])
    finally:
        store.close()


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
        await wait_for_node(pool, rec["id"])
        loop = asyncio.get_running_loop()
        started = loop.time()
        sent = 0
        for n in range(150):  # three seconds at real-time pace
            await send_frame(ws, n, numbered_frame(n))
            sent = n + 1
            await asyncio.sleep(max(0.0, started + (n + 1) * 0.02 - loop.time()))

        node.kill()
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


async def test_two_nodes_control_on_one_media_on_the_other(
    servers: tuple[list[Server], MasterKeys, Path], pool: asyncpg.Pool
) -> None:
    """Cross-node control over LISTEN/NOTIFY keeps the window rule (R2)."""
    (media_node, control_node), master, blobs = servers
    await media_node.start()
    await control_node.start()
    async with aiohttp.ClientSession() as http:
        api = await customer(http, control_node.url)
        call = await consented_call(api, control_node.url)
        ws = await open_stream(http, media_node.url, call["media"]["token"])
        n = 0

        async def send(payload: bytes, count: int) -> None:
            nonlocal n
            for _ in range(count):
                await send_frame(ws, n, payload)
                n += 1
                await asyncio.sleep(0.002)

        await send(MARKER, 10)  # before the recording
        rec = await api.call(
            "POST", f"{control_node.url}/v1/calls/{call['id']}/recordings", {}, 201
        )
        await wait_for_node(pool, rec["id"])
        await send(numbered_frame(1), 50)
        await asyncio.sleep(0.3)
        await api.call("POST", f"{control_node.url}/v1/recordings/{rec['id']}/pause")
        await send(MARKER, 50)
        await api.call("POST", f"{control_node.url}/v1/recordings/{rec['id']}/resume")
        await asyncio.sleep(0.3)  # the resume travels to the media node
        await send(numbered_frame(2), 50)
        await asyncio.sleep(0.3)
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
        for _ in range(200):
            got = await api.call("GET", f"{control_node.url}/v1/recordings/{rec['id']}")
            if got["status"] == "completed":
                break
            await asyncio.sleep(0.05)

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
