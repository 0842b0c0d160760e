"""Each dialect as its engine documents it (PROTOCOLS.md's claims, tested; issue 15).

One stream per dialect through a real socket, every message shaped as the
engine's own documentation shows it: its field names, strings where it
sends strings and numbers where it sends numbers, its optional fields left
out where the documentation leaves them out, and the messages this service
does not act on (DTMF, marks, errors, playDone) mixed in. The recording's
stored bytes must be exactly the audio sent.

What was checked, and where (the values here are this test's own):
- Twilio, "Media Streams - WebSocket Messages": `connected` {event, protocol,
  version} without sequenceNumber; `start` with `streamSid` both at the top and
  inside `start`, `tracks`, `customParameters`, `mediaFormat` with numeric
  `sampleRate`/`channels`; `media` with string `chunk`/`timestamp`; `dtmf`
  whose track is `inbound_track`; `mark`; `stop` {accountSid, callSid}.
- Telnyx, "Media Streaming over WebSockets" and its AsyncAPI page: `connected`
  {event, version} (no protocol) carrying `x-telnyx-streaming-auth-token`;
  `stream_id` at the top level only; `start` without `tracks` (never sent, even
  for both_tracks); `media` frames not in order; `dtmf` without a track but with
  `occurred_at`; `error` in both documented shapes (`payload` with an integer
  code, and the older `error` with a string code); `stop` {user_id, call_control_id}.
- jambonz `listen`: subprotocol `audio.jambonz.org`; one flat JSON text frame of
  sampleRate, mixType and the call's fields with the app's metadata merged in;
  binary L16 little-endian frames of any size; DTMF text frames whose values
  are strings; `playDone`; an ordinary close (1000), no zero-length frame.
- FreeSWITCH mod_audio_fork: subprotocol `audio.drachtio.org`; the metadata text
  first (JSON by this service's convention: token, sampleRate, channels);
  binary L16; `stop` sends an optional last text frame (any text) and closes.
"""

from __future__ import annotations

import base64
import json
import struct

import aiohttp
import asyncpg
from aiohttp.test_utils import TestClient

from telephony.web.appkeys import HUB
from tests.conftest import Customer, consented_call, start_recording
from tests.support.media import writer_of
from tests.support.recordings import status_is, stored_audio
from tests.support.waiting import eventually

FRAMES = 30  # per track


def ulaw_frame(i: int, track: str) -> bytes:
    salt = 0 if track == "inbound" else 101
    return bytes((i * 7 + j + salt) % 251 for j in range(160))


def l16_frame(i: int, track: str, samples: int = 320) -> bytes:
    salt = 0 if track == "inbound" else 5000
    return struct.pack(
        f"<{samples}h", *(((i * 37 + j * 11 + salt) % 20000) - 10000 for j in range(samples))
    )


def interleave(left: bytes, right: bytes, width: int) -> bytes:
    return b"".join(left[i : i + width] + right[i : i + width] for i in range(0, len(left), width))


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


async def recorded(
    client: TestClient, owner: Customer, dialect: str, query: str = "", **ws: object
) -> tuple[dict, aiohttp.ClientWebSocketResponse]:
    call = await consented_call(client, owner)
    socket = await client.ws_connect(f"/v1/media/{dialect}{query}", **ws)  # type: ignore[arg-type]
    return call, socket


async def until_recording(client: TestClient, owner: Customer, call: dict) -> str:
    await eventually(lambda: call["id"] in client.app[HUB].streams)  # attached
    rec = await start_recording(client, owner, call["id"])
    await eventually(lambda: writer_of(client, call["id"]) is not None)
    return str(rec["id"])


async def test_twilio_as_documented(
    client: TestClient, owner: Customer, pool: asyncpg.Pool
) -> None:
    call, ws = await recorded(client, owner, "twilio")
    sid = "MZ18ad3ab5a668481ce02b83e7395059f0"
    await ws.send_json({"event": "connected", "protocol": "Call", "version": "1.0.0"})
    await ws.send_json(
        {
            "event": "start",
            "sequenceNumber": "1",
            "start": {
                "accountSid": "AC00000000000000000000000000000000",
                "streamSid": sid,
                "callSid": "CA00000000000000000000000000000000",
                "tracks": ["inbound", "outbound"],
                "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1},
                "customParameters": {"token": call["media"]["token"], "crm_id": "42"},
            },
            "streamSid": sid,
        }
    )
    rec = await until_recording(client, owner, call)
    seq = 1
    for i in range(FRAMES):
        for track in ("inbound", "outbound"):
            seq += 1
            media = {
                "track": track,
                "chunk": str(i + 1),
                "timestamp": str(i * 20),
                "payload": b64(ulaw_frame(i, track)),
            }
            await ws.send_json(
                {"event": "media", "sequenceNumber": str(seq), "media": media, "streamSid": sid}
            )
        if i == 10:
            dtmf = {"track": "inbound_track", "digit": "7"}
            await ws.send_json(
                {"event": "dtmf", "streamSid": sid, "sequenceNumber": str(seq), "dtmf": dtmf}
            )
            await ws.send_json(
                {
                    "event": "mark",
                    "sequenceNumber": str(seq),
                    "streamSid": sid,
                    "mark": {"name": "greeting"},
                }
            )
    stop = {
        "accountSid": "AC00000000000000000000000000000000",
        "callSid": "CA00000000000000000000000000000000",
    }
    await ws.send_json(
        {"event": "stop", "sequenceNumber": str(seq + 1), "stop": stop, "streamSid": sid}
    )
    await ws.close()

    await eventually(lambda: status_is(pool, rec, "completed"))
    inbound = b"".join(ulaw_frame(i, "inbound") for i in range(FRAMES))
    outbound = b"".join(ulaw_frame(i, "outbound") for i in range(FRAMES))
    assert await stored_audio(client, rec) == interleave(inbound, outbound, 1)


async def test_telnyx_as_documented(
    client: TestClient, owner: Customer, pool: asyncpg.Pool
) -> None:
    call, ws = await recorded(client, owner, "telnyx")  # no token in the URL
    stream_id = "32de0dea-53cb-4b21-89a4-9e1819c043bc"
    await ws.send_json(
        {
            "event": "connected",
            "version": "1.0.0",
            "x-telnyx-streaming-auth-token": call["media"]["token"],
        }
    )
    await ws.send_json(
        {
            "event": "start",
            "sequence_number": "1",
            "start": {
                "user_id": "3e6f995f-85f7-4705-9741-53b116d28237",
                "call_control_id": "v3:MdI91X4lWFEs7IgbBEOT9M4AigoY08M0WWZF",
                "call_session_id": "ff55a038-6f5d-11ef-9692-02420aeffb1f",
                "from": "+48221234567",
                "to": "+48601234567",
                "tags": ["sales"],
                "client_state": "aGF2ZSBhIG5pY2UgZGF5",
                "media_format": {"encoding": "PCMU", "sample_rate": 8000, "channels": 1},
            },
            "stream_id": stream_id,
        }
    )
    rec = await until_recording(client, owner, call)
    frames = [(i, track) for i in range(FRAMES) for track in ("inbound", "outbound")]
    # Frames are not ordered: each pair of neighbours swapped, well within the jitter window.
    for n in range(0, len(frames) - 1, 2):
        frames[n], frames[n + 1] = frames[n + 1], frames[n]
    for seq, (i, track) in enumerate(frames, start=2):
        media = {
            "track": track,
            "chunk": str(i + 1),
            "timestamp": str(i * 20),
            "payload": b64(ulaw_frame(i, track)),
        }
        await ws.send_json(
            {"event": "media", "sequence_number": str(seq), "media": media, "stream_id": stream_id}
        )
        if seq == 20:
            await ws.send_json(
                {
                    "event": "dtmf",
                    "stream_id": stream_id,
                    "occurred_at": "2026-12-01T10:00:00.000000Z",
                    "sequence_number": str(seq),
                    "dtmf": {"digit": "1"},
                }
            )
            error = {"code": 100003, "title": "malformed_frame", "detail": "a frame was dropped"}
            await ws.send_json({"event": "error", "payload": error, "stream_id": stream_id})
            older = {"title": "rate_limit_reached", "code": "100005", "detail": "slow down"}
            await ws.send_json(
                {"stream_id": stream_id, "event": "error", "sequence_number": "6", "error": older}
            )
    stop = {
        "user_id": "3e6f995f-85f7-4705-9741-53b116d28237",
        "call_control_id": "v3:MdI91X4lWFEs7IgbBEOT9M4AigoY08M0WWZF",
    }
    await ws.send_json(
        {"event": "stop", "sequence_number": "999", "stop": stop, "stream_id": stream_id}
    )
    await ws.close()

    await eventually(lambda: status_is(pool, rec, "completed"))
    inbound = b"".join(ulaw_frame(i, "inbound") for i in range(FRAMES))
    outbound = b"".join(ulaw_frame(i, "outbound") for i in range(FRAMES))
    assert await stored_audio(client, rec) == interleave(inbound, outbound, 1)


async def test_jambonz_as_documented(
    client: TestClient, owner: Customer, pool: asyncpg.Pool
) -> None:
    call, ws = await recorded(client, owner, "jambonz", protocols=("audio.jambonz.org",))
    metadata = {
        "sampleRate": 16000,
        "mixType": "stereo",
        "callSid": "b6d2f2a6-1c1e-4e39-8f0e-8a5c3f0c2d11",
        "direction": "inbound",
        "from": "+48601234567",
        "to": "+48221234567",
        "callId": "a1b2c3@10.0.0.1",
        "accountSid": "9351f46a-678c-43f5-b8a6-d4eb58d131af",
        "applicationSid": "0dddaabf-0a30-43e3-84e8-426873b1a78b",
        "callStatus": "in-progress",
        "sipStatus": 200,
        "token": call["media"]["token"],  # the app's metadata, merged in flat
    }
    await ws.send_str(json.dumps(metadata))
    rec = await until_recording(client, owner, call)
    left = b"".join(l16_frame(i, "inbound") for i in range(FRAMES))
    right = b"".join(l16_frame(i, "outbound") for i in range(FRAMES))
    stereo = interleave(left, right, 2)
    for n, at in enumerate(range(0, len(stereo), 1283)):  # any size: pairs cut anywhere
        await ws.send_bytes(stereo[at : at + 1283])
        if n == 3:
            await ws.send_str(json.dumps({"event": "dtmf", "dtmf": "2", "duration": "1600"}))
            await ws.send_str(json.dumps({"type": "playDone", "data": {"id": "p1"}}))
    await ws.close()  # an ordinary close, as listen ends

    assert ws.protocol == "audio.jambonz.org"
    await eventually(lambda: status_is(pool, rec, "completed"))
    assert await stored_audio(client, rec) == stereo


async def test_mod_audio_fork_as_documented(
    client: TestClient, owner: Customer, pool: asyncpg.Pool
) -> None:
    call, ws = await recorded(client, owner, "audiofork", protocols=("audio.drachtio.org",))
    await ws.send_str(
        json.dumps({"token": call["media"]["token"], "sampleRate": 16000, "channels": 1})
    )
    rec = await until_recording(client, owner, call)
    mono = b"".join(l16_frame(i, "inbound") for i in range(FRAMES))
    for at in range(0, len(mono), 640):  # 20 ms at 16 kHz
        await ws.send_bytes(mono[at : at + 640])
    await ws.send_str("bye from the dialplan")  # stop's optional last text: any text
    await ws.close()

    assert ws.protocol == "audio.drachtio.org"
    await eventually(lambda: status_is(pool, rec, "completed"))
    assert await stored_audio(client, rec) == mono
