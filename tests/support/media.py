"""A telephony engine's side of a media socket, and what the recorder shows of a call."""

from __future__ import annotations

import asyncio
import base64
from typing import Any

import aiohttp
from aiohttp.test_utils import TestClient

from telephony.web.appkeys import HUB

# 160 bytes of μ-law that no codec, silence fill or header will produce by chance.
# Built at run time: a folded constant would put the marker itself into this
# module's .pyc, and the scan of the temporary folder would find the test.
MARKER = (bytes.fromhex("13374d41524b4552deadbeef") * 14)[:160]
assert len(MARKER) == 160
VOICE = bytes(range(0x20, 0x20 + 160))  # stands for speech: distinct, and not the marker


class TwilioPeer:
    """A telephony engine speaking the camelCase JSON dialect."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.ws = ws
        self.seq = 0  # media frames sent so far
        self.ts_ms = {"inbound": 0, "outbound": 0}

    async def start(self, tracks: tuple[str, ...] = ("inbound", "outbound")) -> None:
        await self.ws.send_json({"event": "connected", "protocol": "Call", "version": "1.0.0"})
        await self.ws.send_json(
            {
                "event": "start",
                "sequenceNumber": "1",
                "streamSid": "MZ1",
                "start": {
                    "streamSid": "MZ1",
                    "callSid": "CA1",
                    "tracks": list(tracks),
                    "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1},
                    "customParameters": {},
                },
            }
        )

    async def media(self, payload: bytes, track: str = "inbound", frames: int = 1) -> None:
        for _ in range(frames):
            self.seq += 1
            await self.ws.send_json(
                {
                    "event": "media",
                    "sequenceNumber": str(self.seq),
                    "streamSid": "MZ1",
                    "media": {
                        "track": track,
                        "chunk": str(self.seq),
                        "timestamp": str(self.ts_ms[track]),
                        "payload": base64.b64encode(payload).decode(),
                    },
                }
            )
            self.ts_ms[track] += len(payload) // 8

    async def paced(
        self, payload: bytes, *, frames: int, interval_s: float, track: str = "inbound"
    ) -> None:
        """Frames at real-time pace, as an engine sends them."""
        loop = asyncio.get_running_loop()
        started = loop.time()
        for n in range(frames):
            await self.media(payload, track)
            # Pacing is what this peer does, not a wait for the server.
            await asyncio.sleep(max(0.0, started + (n + 1) * interval_s - loop.time()))

    async def stop(self) -> None:
        await self.ws.send_json({"event": "stop", "sequenceNumber": "999", "streamSid": "MZ1"})
        await self.ws.close()


async def connect(client: TestClient, call: dict[str, Any], dialect: str = "twilio") -> TwilioPeer:
    ws = await client.ws_connect(f"/v1/media/{dialect}?token={call['media']['token']}")
    return TwilioPeer(ws)


def writer_of(client: TestClient, call_id: str) -> Any:
    """The recorder's writer of the call's live recording on this node, if one is open."""
    stream = client.app[HUB].streams.get(call_id)
    return stream.writer if stream else None


def frames_received(client: TestClient, call_id: str) -> int:
    """Audio frames the node has taken from the call's media socket (each handed to its
    writer, if any, before the count moves on)."""
    stream = client.app[HUB].streams.get(call_id)
    return stream.frames if stream else 0
