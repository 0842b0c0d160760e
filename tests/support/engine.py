"""A customer and a telephony engine against real `telephony serve` processes: the API
over HTTP, and a Twilio-dialect media socket that sends numbered frames."""

from __future__ import annotations

import base64
from typing import Any

import aiohttp
import asyncpg

from tests.conftest import PASSWORD, signup_body
from tests.support.pacing import ticks

FRAME_BYTES = 160  # 20 ms of 8 kHz μ-law


def numbered_frame(n: int) -> bytes:
    """A frame that says which one it is: 'F' + six digits, repeated."""
    return (b"F%06d" % n * 23)[:FRAME_BYTES]


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


async def send_in_real_time(ws: aiohttp.ClientWebSocketResponse, frames: int) -> int:
    """Numbered frames 0..frames-1 at an engine's real-time pace, one each 20 ms on the
    engine's clock (`pacing.ticks`); how many were sent."""
    async for n in ticks(frames, 0.02):
        await send_frame(ws, n, numbered_frame(n))
    return frames


async def seal_to(api: Api, base: str, algorithm: str, public_key: str) -> str:
    """Register a public key for the account and activate it (issue 14): its recordings
    are sealed to it from now on. The key's id."""
    key = await api.call(
        "POST",
        f"{base}/v1/encryption-keys",
        {"algorithm": algorithm, "public_key": public_key},
        201,
    )
    await api.call("POST", f"{base}/v1/encryption-keys/{key['id']}/activate")
    return str(key["id"])


async def node_of(pool: asyncpg.Pool, recording_id: str) -> str | None:
    """The node writing the recording, once one has picked it up."""
    async with pool.acquire() as conn:
        return await conn.fetchval("SELECT node_id FROM recordings WHERE id = $1", recording_id)


async def frames_received(http: aiohttp.ClientSession, base: str) -> float:
    """Audio frames the node has taken from its media sockets: its frame counter, which
    moves in steps of ten (media_ws.METRIC_EVERY)."""
    async with http.get(f"{base}/metrics") as resp:
        text = await resp.text()
    counted = [line for line in text.splitlines() if line.startswith("media_frames_total ")]
    return float(counted[0].split()[1]) if counted else 0.0
