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


class JsonPeer:
    """A telephony engine speaking one of the JSON dialects: Twilio's camelCase (`twilio`)
    or Telnyx's snake_case (`telnyx`), each shaped as its documentation shows it."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse, dialect: str = "twilio") -> None:
        self.ws = ws
        self.dialect = dialect
        self.seq = 0  # media frames sent so far
        self.ts_ms = {"inbound": 0, "outbound": 0}

    async def start(
        self,
        tracks: tuple[str, ...] | None = ("inbound", "outbound"),
        *,
        auth_token: str | None = None,
        encoding: str | None = None,
        sample_rate: int = 8000,
    ) -> None:
        """`tracks=None`: a start that names none (Telnyx's never does); `auth_token`:
        Telnyx's `stream_auth_token` in the connected frame; `encoding` and `sample_rate`:
        the media format (each dialect's μ-law 8 kHz by default)."""
        if self.dialect == "telnyx":
            connected: dict[str, Any] = {"event": "connected", "version": "1.0.0"}
            if auth_token is not None:
                connected["x-telnyx-streaming-auth-token"] = auth_token
            start: dict[str, Any] = {
                "user_id": "3e6f995f-85f7-4705-9741-53b116d28237",
                "call_control_id": "v3:test-call-control-id",
                "client_state": "aGF2ZSBhIG5pY2UgZGF5",
                "media_format": {
                    "encoding": encoding or "PCMU",
                    "sample_rate": sample_rate,
                    "channels": 1,
                },
            }
            frame = {"event": "start", "sequence_number": "1", "stream_id": "S1", "start": start}
        else:
            connected = {"event": "connected", "protocol": "Call", "version": "1.0.0"}
            start = {
                "streamSid": "MZ1",
                "callSid": "CA1",
                "mediaFormat": {
                    "encoding": encoding or "audio/x-mulaw",
                    "sampleRate": sample_rate,
                    "channels": 1,
                },
                "customParameters": {},
            }
            frame = {"event": "start", "sequenceNumber": "1", "streamSid": "MZ1", "start": start}
        if tracks is not None:
            start["tracks"] = list(tracks)
        await self.ws.send_json(connected)
        await self.ws.send_json(frame)

    async def media(
        self,
        payload: bytes,
        track: str = "inbound",
        frames: int = 1,
        *,
        timestamp_ms: int | None = None,
    ) -> None:
        """`timestamp_ms`: this frame's, for a codec whose bytes do not tell the time."""
        for _ in range(frames):
            self.seq += 1
            if timestamp_ms is not None:
                self.ts_ms[track] = timestamp_ms
            media = {
                "track": track,
                "chunk": str(self.seq),
                "timestamp": str(self.ts_ms[track]),
                "payload": base64.b64encode(payload).decode(),
            }
            if self.dialect == "telnyx":
                frame = {"event": "media", "sequence_number": str(self.seq), "stream_id": "S1"}
            else:
                frame = {"event": "media", "sequenceNumber": str(self.seq), "streamSid": "MZ1"}
            await self.ws.send_json({**frame, "media": media})
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
        if self.dialect == "telnyx":
            frame = {"event": "stop", "sequence_number": "999", "stream_id": "S1", "stop": {}}
        else:
            frame = {"event": "stop", "sequenceNumber": "999", "streamSid": "MZ1"}
        await self.ws.send_json(frame)
        await self.ws.close()


TwilioPeer = JsonPeer  # the camelCase dialect, as most tests speak it


async def connect(
    client: TestClient,
    call: dict[str, Any],
    dialect: str = "twilio",
    *,
    token_in_url: bool = True,
    headers: dict[str, str] | None = None,
) -> JsonPeer:
    query = f"?token={call['media']['token']}" if token_in_url else ""
    ws = await client.ws_connect(f"/v1/media/{dialect}{query}", headers=headers)
    return JsonPeer(ws, dialect)


async def close_of(ws: aiohttp.ClientWebSocketResponse, timeout_s: float = 10) -> tuple[int, str]:
    """The close code and reason the server ends a media socket with."""
    msg = await asyncio.wait_for(ws.receive(), timeout_s)
    while msg.type not in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED):
        msg = await asyncio.wait_for(ws.receive(), timeout_s)
    return msg.data, msg.extra or ""


def writer_of(client: TestClient, call_id: str) -> Any:
    """The recorder's writer of the call's live recording on this node, if one is open."""
    stream = client.app[HUB].streams.get(call_id)
    return stream.writer if stream else None


def frames_received(client: TestClient, call_id: str) -> int:
    """Audio frames the node has taken from the call's media socket (each handed to its
    writer, if any, before the count moves on)."""
    stream = client.app[HUB].streams.get(call_id)
    return stream.frames if stream else 0
