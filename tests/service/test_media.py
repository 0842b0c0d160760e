"""Live media ingest over real WebSockets: the window rule (R2), sealing, close codes."""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import os
import socket
import subprocess
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import aiohttp
import asyncpg
import pytest
from aiohttp.test_utils import TestClient

from storage.chunks import ChunkRow
from storage.pgcluster import find_bindir
from telephony.recorder.hub import PREROLL_FRAMES
from telephony.settings import Settings
from telephony.web.api import media_ws
from telephony.web.app import create_app
from telephony.web.appkeys import HUB
from tests.conftest import (
    Customer,
    ServiceServer,
    consented_call,
    decide,
    new_call,
    new_customer,
    start_recording,
)
from tests.support.media import (
    MARKER,
    VOICE,
    TwilioPeer,
    connect,
    frames_received,
    writer_of,
)
from tests.support.recordings import status_is, stored_audio
from tests.support.waiting import eventually


def channel(interleaved: bytes, index: int) -> bytes:
    return interleaved[index::2]


async def test_recorded_audio_is_stored_encrypted_and_reads_back(
    client: TestClient, owner: Customer, pool: asyncpg.Pool, settings: Settings
) -> None:
    call = await consented_call(client, owner)
    peer = await connect(client, call)
    await peer.start()
    rec = await start_recording(client, owner, call["id"])
    await eventually(lambda: writer_of(client, call["id"]) is not None)

    for _ in range(25):  # half a second on both tracks
        await peer.media(VOICE, "inbound")
        await peer.media(VOICE[::-1], "outbound")
    await peer.stop()
    await eventually(lambda: status_is(pool, rec["id"], "completed"))

    audio = await stored_audio(client, rec["id"])
    assert channel(audio, 0) == VOICE * 25
    assert channel(audio, 1) == VOICE[::-1] * 25
    raw = await asyncio.to_thread(read_tree, settings.data_dir / "blobs")
    assert VOICE not in raw  # encrypted at rest
    got = await (await client.get(f"/v1/recordings/{rec['id']}", headers=owner.auth)).json()
    assert got["status"] == "completed"
    assert got["stop_reason"] == "stream_ended"
    assert got["source"] == "websocket"
    assert got["size_bytes"] == len(raw)


async def test_marker_audio_outside_the_window_touches_no_disk(
    client: TestClient,
    owner: Customer,
    pool: asyncpg.Pool,
    settings: Settings,
    database_url: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """R2: before consent, during a pause and after a revocation, audio is dropped in memory."""
    caplog.set_level(logging.DEBUG)
    started = time.time() - 1.0  # file times are coarse: a second's margin
    call = await new_call(client, owner)
    party = call["counterparts"][0]["id"]
    peer = await connect(client, call)
    await peer.start()
    await peer.media(MARKER, frames=10)  # before consent and before any recording
    await decide(client, owner, call["id"], party, "granted")
    await peer.media(MARKER, frames=10)  # consented, but no recording started (R1)
    # The window is judged by arrival at the server (DESIGN.md): taken before the start,
    # they are before it, though they wait in the stream's pre-roll for a writer.
    await eventually(lambda: frames_received(client, call["id"]) >= peer.seq)
    rec = await start_recording(client, owner, call["id"])
    await eventually(lambda: writer_of(client, call["id"]) is not None)
    await peer.media(VOICE, frames=50)
    await eventually(lambda: frames_received(client, call["id"]) >= peer.seq)
    await client.post(f"/v1/recordings/{rec['id']}/pause", headers=owner.auth)
    await peer.media(MARKER, frames=50)  # paused: sent right after the pause answered
    await client.post(f"/v1/recordings/{rec['id']}/resume", headers=owner.auth)
    await eventually(lambda: writer_of(client, call["id"]).recording)
    await peer.media(VOICE, frames=50)
    await eventually(lambda: frames_received(client, call["id"]) >= peer.seq)
    await decide(client, owner, call["id"], party, "revoked")
    await peer.media(MARKER, frames=50)  # after the revocation answered
    await peer.stop()
    await eventually(lambda: status_is(pool, rec["id"], "completed"))

    audio = await stored_audio(client, rec["id"])
    inbound = channel(audio, 0)
    assert inbound == VOICE * 100  # both consented stretches, skip mode: no gap
    assert MARKER[:16] not in audio
    assert await asyncio.to_thread(read_tree, settings.data_dir), "the recording wrote blobs"
    assert await asyncio.to_thread(files_containing, settings.data_dir, MARKER[:16]) == []
    temporary = Path(tempfile.gettempdir())
    assert await asyncio.to_thread(files_containing, temporary, MARKER[:16], since=started) == []
    dump = await asyncio.to_thread(_pg_dump, database_url)
    assert MARKER[:16] not in dump
    encoded = base64.b64encode(MARKER)[:20]
    assert encoded not in dump
    for record in caplog.records:
        text = record.getMessage() + repr(record.__dict__)
        assert "MARKER" not in text and encoded.decode() not in text


def read_tree(root: Path) -> bytes:
    return b"".join(p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file())


def files_containing(root: Path, needle: bytes, *, since: float = 0.0) -> list[Path]:
    """Every readable regular file under root (not following links) holding `needle`,
    among those written at `since` (seconds since the epoch) or later: what this test
    wrote, without reading every older file of a shared temporary folder."""
    found = []
    for path in root.rglob("*"):
        try:
            if not path.is_file() or path.is_symlink() or path.stat().st_mtime < since:
                continue
            if needle in path.read_bytes():
                found.append(path)
        except OSError:
            continue
    return found


def _pg_dump(url: str) -> bytes:
    command = [str(find_bindir() / "pg_dump"), "--data-only", "--dbname", url]
    return subprocess.run(command, check=True, capture_output=True).stdout


@pytest.mark.parametrize(
    ("mutate", "reason"),
    [
        ("unknown", b"unknown media token"),
        ("ended", b"the call has ended"),
        ("expired", b"media token expired"),
    ],
)
async def test_bad_tokens_close_with_1008(
    client: TestClient, owner: Customer, pool: asyncpg.Pool, mutate: str, reason: bytes
) -> None:
    call = await new_call(client, owner)
    token = call["media"]["token"]
    if mutate == "unknown":
        token = "mt_" + "x" * 43
    elif mutate == "ended":
        await client.post(f"/v1/calls/{call['id']}/end", headers=owner.auth)
    else:
        async with pool.acquire() as conn:
            await conn.execute("UPDATE calls SET media_token_expires_at = now() - interval '1 s'")

    ws = await client.ws_connect(f"/v1/media/twilio?token={token}")
    msg = await ws.receive()

    assert msg.type == aiohttp.WSMsgType.CLOSE
    assert msg.data == 1008
    assert msg.extra.encode() == reason


async def test_a_second_stream_of_a_live_call_is_refused(
    client: TestClient, owner: Customer
) -> None:
    call = await new_call(client, owner)
    first = await connect(client, call)
    await first.start()
    await eventually(lambda: call["id"] in client.app[HUB].streams)

    second = await client.ws_connect(f"/v1/media/telnyx?token={call['media']['token']}")
    msg = await second.receive()

    assert (msg.type, msg.data) == (aiohttp.WSMsgType.CLOSE, 1008)
    await first.stop()


async def test_token_in_the_start_message_is_accepted(client: TestClient, owner: Customer) -> None:
    call = await consented_call(client, owner)
    ws = await client.ws_connect("/v1/media/twilio")
    await ws.send_json({"event": "connected"})
    await ws.send_json(
        {
            "event": "start",
            "start": {
                "tracks": ["inbound"],
                "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1},
                "customParameters": {"token": call["media"]["token"]},
            },
        }
    )

    await eventually(lambda: call["id"] in client.app[HUB].streams)
    await ws.close()


@pytest.mark.parametrize(
    ("started", "frame", "code"),
    [
        (False, "{not json", 1007),
        (False, "[1, 2]", 1007),
        (False, b"\x00\x01", 1003),
        (False, '{"event": "media", "media": {"track": "inbound", "payload": "AAAA"}}', 1007),
        (True, '{"event": "media", "media": {"track": "inbound", "payload": "!!nope!!"}}', 1007),
        (True, '{"event": "start", "start": {"tracks": ["inbound"]}}', 1007),
    ],
    ids=[
        "invalid-json",
        "not-an-object",
        "binary",
        "media-before-start",
        "bad-base64",
        "second-start",
    ],
)
async def test_malformed_frames_close_with_a_reason(
    client: TestClient, owner: Customer, started: bool, frame: str | bytes, code: int
) -> None:
    call = await new_call(client, owner)
    peer = await connect(client, call)
    if started:
        await peer.start()

    if isinstance(frame, bytes):
        await peer.ws.send_bytes(frame)
    else:
        await peer.ws.send_str(frame)
    msg = await peer.ws.receive()

    assert msg.type == aiohttp.WSMsgType.CLOSE
    assert msg.data == code
    assert msg.extra


async def test_a_one_mebibyte_frame_is_refused(client: TestClient, owner: Customer) -> None:
    call = await new_call(client, owner)
    peer = await connect(client, call)
    await peer.start()

    await peer.ws.send_str("x" * (1024 * 1024))
    msg = await peer.ws.receive()

    assert msg.type == aiohttp.WSMsgType.CLOSE
    assert msg.data == 1009


async def test_unknown_dialect_is_a_404(client: TestClient) -> None:
    resp = await client.get("/v1/media/skype")

    assert resp.status == 404


async def test_a_plain_get_of_a_dialect_is_a_400_problem(client: TestClient) -> None:
    """/openapi.json lists 400 for a request that is not a WebSocket upgrade."""
    resp = await client.get("/v1/media/twilio")

    assert resp.status == 400
    assert resp.content_type == "application/problem+json"
    assert (await resp.json())["code"] == "malformed-request"


async def record_with(
    client: TestClient, owner: Customer, pause_behavior: str = "skip"
) -> tuple[dict, dict, TwilioPeer]:
    call = await consented_call(client, owner)
    peer = await connect(client, call)
    await peer.start(tracks=("inbound",))
    resp = await client.post(
        f"/v1/calls/{call['id']}/recordings",
        json={"pause_behavior": pause_behavior, "channels": "mono"},
        headers=owner.auth,
    )
    assert resp.status == 201
    rec = await resp.json()
    await eventually(lambda: writer_of(client, call["id"]) is not None)
    return call, rec, peer


async def finish(client: TestClient, pool: asyncpg.Pool, peer: TwilioPeer, rec: dict) -> bytes:
    await peer.stop()
    await eventually(lambda: status_is(pool, rec["id"], "completed"))
    return await stored_audio(client, rec["id"])


@pytest.mark.parametrize("sent", [25, PREROLL_FRAMES + 30], ids=["fits", "overflows"])
async def test_audio_between_a_start_and_its_writer_opening_is_kept_and_earlier_audio_is_not(
    client: TestClient, owner: Customer, pool: asyncpg.Pool, sent: int
) -> None:
    """A start is answered 201 before the stream's node has opened the writer (a NOTIFY, a
    transaction and a key unwrap away). Audio that arrives in between is recorded, with
    no loss; audio from before the start is not (R2). The writer's opening is held by the
    test holding the stream's lock, which the start's control message waits for: not a
    sleep. Without the pre-roll the recording holds none of the voice. Past the pre-roll's
    bound the oldest frames go, and the recording says so with an `overload` gap."""
    call = await consented_call(client, owner)
    peer = await connect(client, call)
    await peer.start(tracks=("inbound",))
    await peer.media(MARKER, frames=10)  # before any recording
    await eventually(lambda: frames_received(client, call["id"]) >= 10)
    stream = client.app[HUB].streams[call["id"]]
    async with stream.lock:
        resp = await client.post(
            f"/v1/calls/{call['id']}/recordings", json={"channels": "mono"}, headers=owner.auth
        )
        assert resp.status == 201
        rec = await resp.json()
        await peer.media(VOICE, frames=sent)
        await eventually(lambda: frames_received(client, call["id"]) >= 10 + sent)
        assert stream.writer is None  # the start still waits for the lock
    await eventually(lambda: writer_of(client, call["id"]) is not None)

    audio = await finish(client, pool, peer, rec)

    kept = min(sent, PREROLL_FRAMES)
    assert audio == VOICE * kept
    gaps = await pool.fetchval("SELECT gaps FROM recordings WHERE id = $1", rec["id"])
    if sent > kept:
        assert [g["reason"] for g in gaps] == ["overload"]
        assert gaps[0]["at_ms"] == 0 and gaps[0]["duration_ms"] >= 0
    else:
        assert gaps == []


async def test_one_call_s_writer_opening_late_does_not_hold_back_another_call_s(
    client: TestClient, owner: Customer, pool: asyncpg.Pool
) -> None:
    """Control messages are applied each in its own task: a start whose writer cannot open
    yet (here its stream's lock is held by the test) leaves the next call's start free to
    open at once. Applied one after another, the second waited for the first, and under
    load the last of 600 starts lost seconds of audio (bench/ingest.py)."""
    held_call, free_call = await consented_call(client, owner), await consented_call(client, owner)
    held_peer, free_peer = await connect(client, held_call), await connect(client, free_call)
    await held_peer.start(tracks=("inbound",))
    await free_peer.start(tracks=("inbound",))
    streams = client.app[HUB].streams
    await eventually(lambda: held_call["id"] in streams and free_call["id"] in streams)
    held = client.app[HUB].streams[held_call["id"]]
    async with held.lock:
        await start_recording(client, owner, held_call["id"])
        rec = await start_recording(client, owner, free_call["id"])
        await eventually(lambda: writer_of(client, free_call["id"]) is not None)
        assert held.writer is None
    await eventually(lambda: writer_of(client, held_call["id"]) is not None)
    await free_peer.media(VOICE, frames=5)

    assert await finish(client, pool, free_peer, rec) == VOICE * 5


async def test_silence_mode_fills_a_pause_with_silence(
    client: TestClient, owner: Customer, pool: asyncpg.Pool
) -> None:
    _, rec, peer = await record_with(client, owner, "silence")
    await peer.media(VOICE, frames=25)
    await eventually(lambda: frames_received(client, rec["call_id"]) >= peer.seq)
    await client.post(f"/v1/recordings/{rec['id']}/pause", headers=owner.auth)
    await eventually(lambda: not writer_of(client, rec["call_id"]).recording)
    await peer.media(MARKER, frames=50)  # one second of stream time while paused
    await client.post(f"/v1/recordings/{rec['id']}/resume", headers=owner.auth)
    await eventually(lambda: writer_of(client, rec["call_id"]).recording)
    await peer.media(VOICE, frames=25)

    audio = await finish(client, pool, peer, rec)

    assert audio == VOICE * 25 + b"\xff" * 160 * 50 + VOICE * 25


async def test_timestamps_going_backwards_keep_only_new_audio(
    client: TestClient, owner: Customer, pool: asyncpg.Pool
) -> None:
    _, rec, peer = await record_with(client, owner)
    await peer.media(VOICE, frames=50)
    peer.ts_ms["inbound"] -= 500  # the engine repeats half a second
    await peer.media(MARKER[::-1], frames=25)
    await peer.media(VOICE, frames=25)

    audio = await finish(client, pool, peer, rec)

    assert audio[: 160 * 50] == VOICE * 50
    assert len(audio) == 160 * 75  # the repeated stretch did not grow the recording


async def test_a_timestamp_jump_of_an_hour_is_not_filled(
    client: TestClient, owner: Customer, pool: asyncpg.Pool
) -> None:
    call, rec, peer = await record_with(client, owner)
    writer = writer_of(client, call["id"])
    await peer.media(VOICE, frames=25)
    await eventually(  # the first stretch is sealed
        lambda: frames_received(client, call["id"]) >= peer.seq and writer.stats.chunks > 0
    )
    peer.ts_ms["inbound"] += 3_600_000
    await peer.media(VOICE, frames=25)

    audio = await finish(client, pool, peer, rec)

    assert audio == VOICE * 50  # no hour of silence, no lost audio
    got = await (await client.get(f"/v1/recordings/{rec['id']}", headers=owner.auth)).json()
    assert got["size_bytes"] < 100_000


async def test_a_flood_of_frames_is_bounded_and_the_call_survives(
    client: TestClient, owner: Customer, pool: asyncpg.Pool
) -> None:
    """10,000 frames as fast as the socket takes them: bounded queue, no disconnect."""
    call, rec, peer = await record_with(client, owner)
    writer = writer_of(client, call["id"])
    bound = writer.queue_bound
    peak = 0

    for _ in range(100):
        await peer.media(VOICE, frames=100)
        peak = max(peak, writer.queued)
    audio = await finish(client, pool, peer, rec)

    assert peak <= bound
    assert writer.stats.frames_in == 10_000
    stored_frames = len(audio) // 160
    dropped = writer.stats.frames_dropped_overflow
    assert stored_frames + dropped >= 10_000 - 10  # every frame is either stored or counted lost
    async with pool.acquire() as conn:
        gaps = await conn.fetchval("SELECT gaps FROM recordings WHERE id = $1", rec["id"])
    assert (dropped > 0) == bool(gaps)
    shown = await (await client.get(f"/v1/recordings/{rec['id']}", headers=owner.auth)).json()
    assert shown["gaps"] == gaps  # the customer is told, as stored: objects, not strings
    assert all(g["reason"] == "overload" and g["duration_ms"] >= 0 for g in gaps)


async def test_a_client_that_vanishes_without_a_close_frame_finalizes(
    client: TestClient, owner: Customer, pool: asyncpg.Pool
) -> None:
    call, rec, peer = await record_with(client, owner)
    await peer.media(VOICE, frames=25)
    await eventually(lambda: frames_received(client, call["id"]) >= peer.seq)

    transport = peer.ws._response.connection.transport  # type: ignore[union-attr]
    transport.abort()  # the engine's host died: no close frame, no FIN handshake

    await eventually(lambda: status_is(pool, rec["id"], "completed"), timeout_s=15)
    assert await stored_audio(client, rec["id"]) == VOICE * 25


def _server_side_timer(server_port: int, peer_port: int) -> tuple[int, int] | None:
    """(timer kind, ticks until it fires) of the server's end of one loopback connection.

    Read from /proc/net/tcp, where kind 2 is the keepalive timer: what the
    kernel will do, not what a setsockopt call was asked.
    """
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        local, remote, timer = fields[1], fields[2], fields[5]
        if int(local.split(":")[1], 16) == server_port and int(remote.split(":")[1], 16) == (
            peer_port
        ):
            kind, when = timer.split(":")
            return int(kind, 16), int(when, 16)
    return None


async def test_a_silent_peer_is_probed_by_tcp_keepalive_within_its_idle_time(
    client: TestClient, owner: Customer
) -> None:
    """A host that died without FIN or RST is found by keepalive probes, not a per-frame timer."""
    call = await consented_call(client, owner)
    peer = await connect(client, call)
    await peer.start(("inbound",))
    await eventually(lambda: call["id"] in client.app[HUB].streams)
    transport = peer.ws._response.connection.transport  # type: ignore[union-attr]
    peer_port = transport.get_extra_info("sockname")[1]
    assert client.server.port is not None

    timer = await asyncio.to_thread(_server_side_timer, client.server.port, peer_port)

    assert timer is not None
    kind, ticks = timer
    assert kind == 2  # the keepalive timer is armed
    assert ticks <= media_ws.KEEPALIVE_IDLE_S * os.sysconf("SC_CLK_TCK")  # not the 2 h default
    await peer.stop()


def test_media_sockets_get_keepalive_and_delayed_acks() -> None:
    with (
        socket.create_server(("127.0.0.1", 0)) as server,
        socket.create_connection(server.getsockname()) as peer,
    ):
        accepted, _ = server.accept()
        with accepted:
            media_ws.tune_media_socket(accepted)

            assert accepted.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE) == 1
            assert accepted.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE) == 10
            assert accepted.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL) == 5
            assert accepted.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT) == 3
            # 0: the kernel's delayed-ACK ("pingpong") mode, one ACK per two frames.
            assert accepted.getsockopt(socket.IPPROTO_TCP, socket.TCP_QUICKACK) == 0
            assert peer.getsockopt(socket.IPPROTO_TCP, socket.TCP_QUICKACK) == 1
    media_ws.tune_media_socket(None)  # a request whose transport is gone: nothing to tune


async def test_jambonz_stereo_stream_is_recorded_in_two_channels(
    client: TestClient, owner: Customer, pool: asyncpg.Pool
) -> None:
    call = await consented_call(client, owner)
    ws = await client.ws_connect(
        f"/v1/media/jambonz?token={call['media']['token']}", protocols=("audio.jambonz.org",)
    )
    await ws.send_str(json.dumps({"sampleRate": 8000, "mixType": "stereo", "callSid": "c"}))
    await eventually(lambda: call["id"] in client.app[HUB].streams)
    rec = await start_recording(client, owner, call["id"])
    await eventually(lambda: writer_of(client, call["id"]) is not None)
    left, right = b"\x01\x00" * 800, b"\x02\x00" * 800
    interleaved = b"".join(left[i : i + 2] + right[i : i + 2] for i in range(0, 1600, 2))

    for i in range(0, len(interleaved), 321):  # odd sizes: pairs split across frames
        await ws.send_bytes(interleaved[i : i + 321])
    await ws.close()
    await eventually(lambda: status_is(pool, rec["id"], "completed"))

    audio = await stored_audio(client, rec["id"])
    assert ws.protocol == "audio.jambonz.org"
    assert audio == interleaved  # L16 kept as received, channel 0 = inbound


async def test_the_frame_counter_counts_every_frame_though_it_is_updated_in_batches(
    client: TestClient, owner: Customer, pool: asyncpg.Pool
) -> None:
    call = await consented_call(client, owner)
    peer = await connect(client, call)
    await peer.start(("inbound",))

    await peer.media(VOICE, "inbound", frames=25)  # two batches of ten and a remainder
    await peer.stop()
    await eventually(lambda: _stream_gone(pool, call["id"]))
    text = await (await client.get("/metrics")).text()

    counted = [line for line in text.splitlines() if line.startswith("media_frames_total ")]
    assert counted == ["media_frames_total 25.0"]
    assert "media_ingest_lag_seconds_count 2.0" in text  # one frame in ten is timed


async def _stream_gone(pool: asyncpg.Pool, call_id: str) -> bool:
    async with pool.acquire() as conn:
        return not await conn.fetchval("SELECT true FROM media_streams WHERE call_id = $1", call_id)


async def test_one_statement_checks_the_window_of_each_chunk_it_inserts(
    client: TestClient, owner: Customer, pool: asyncpg.Pool
) -> None:
    """R2 in the batched insert: a row outside its segment is refused, its neighbours kept,
    and a row that breaks the statement (a duplicate index) fails alone."""
    _, inside, _ = await record_with(client, owner)
    _, outside, _ = await record_with(client, owner)
    sink = client.app[HUB].sink
    async with pool.acquire() as conn:
        started = await conn.fetchval(
            "SELECT started_at FROM recording_segments WHERE recording_id = $1", outside["id"]
        )
    before = started - timedelta(seconds=5)  # audio that arrived before the recording began
    now = datetime.now(UTC)

    def row(rec: dict, index: int, at: datetime) -> ChunkRow:
        return ChunkRow(rec["id"], index, index * 100, 100, 0, 10, at, at, False, False)

    results = await asyncio.gather(
        sink.record(row(inside, 1000, now)),
        sink.record(row(outside, 1000, before)),
        sink.record(row(inside, 1001, now)),
        return_exceptions=True,
    )
    assert results == [True, False, True]

    again = await asyncio.gather(
        sink.record(row(inside, 1000, now)),  # already there
        sink.record(row(outside, 1001, now)),
        return_exceptions=True,
    )
    assert isinstance(again[0], asyncpg.UniqueViolationError)
    assert again[1] is True
    async with pool.acquire() as conn:
        kept = await conn.fetch(
            "SELECT recording_id, idx FROM recording_chunks WHERE idx >= 1000 ORDER BY 1, 2"
        )
        size = await conn.fetchval("SELECT size_bytes FROM recordings WHERE id = $1", inside["id"])
    assert sorted((r["recording_id"], r["idx"]) for r in kept) == sorted(
        [(inside["id"], 1000), (inside["id"], 1001), (outside["id"], 1001)]
    )
    assert size == 200  # each kept row grew its recording once


async def test_a_long_recording_moves_to_the_store_in_parts_and_reads_back_whole(
    settings: Settings, pool: asyncpg.Pool
) -> None:
    """The spool ships a part every spool_part_s; the parts read back as one stream."""
    app = create_app(settings.replace(spool_part_s=0.3), run_workers=False)
    async with TestClient(ServiceServer(app)) as client:
        owner = await new_customer(client)
        call = await consented_call(client, owner)
        peer = await connect(client, call)
        await peer.start(tracks=("inbound",))
        rec = await start_recording(client, owner, call["id"])
        await eventually(lambda: writer_of(client, call["id"]) is not None)
        frames = [bytes([n % 200 + 20]) * 160 for n in range(100)]  # two seconds, each distinct

        for frame in frames:
            await peer.media(frame, "inbound")
            await asyncio.sleep(0.02)  # real-time pace: the parts roll while audio flows
        await peer.stop()
        await eventually(lambda: status_is(pool, rec["id"], "completed"))
        audio = await stored_audio(client, rec["id"])

    parts = await asyncio.to_thread(
        lambda: sorted(p.name for p in (settings.data_dir / "blobs").rglob("audio-*"))
    )
    spooled = await asyncio.to_thread(
        lambda: [p for p in (settings.data_dir / "spool").rglob("*") if p.is_file()]
    )
    assert len(parts) >= 3, parts  # two seconds in parts of 0.3 s
    assert parts[0] == "audio-0000000000000000"
    assert audio == b"".join(frames)  # one stored track: every frame, in order
    assert spooled == []  # everything moved to the store


async def test_silence_mode_fills_a_pause_of_a_stream_without_timestamps(
    client: TestClient, owner: Customer, pool: asyncpg.Pool
) -> None:
    """L16 streams carry no timestamps: the audio received during a pause still moves the
    stream's clock, so the pause becomes silence of its length (the unit tests' find)."""
    call = await consented_call(client, owner)
    ws = await client.ws_connect(
        f"/v1/media/jambonz?token={call['media']['token']}", protocols=("audio.jambonz.org",)
    )
    await ws.send_str(json.dumps({"sampleRate": 8000, "mixType": "mono", "callSid": "c"}))
    await eventually(lambda: call["id"] in client.app[HUB].streams)
    resp = await client.post(
        f"/v1/calls/{call['id']}/recordings",
        json={"pause_behavior": "silence"},
        headers=owner.auth,
    )
    rec = await resp.json()
    await eventually(lambda: writer_of(client, call["id"]) is not None)
    voice, marker = b"\x11\x01" * 160, b"\x7f\x7f" * 160  # 20 ms frames of L16

    for _ in range(10):
        await ws.send_bytes(voice)
    await eventually(lambda: frames_received(client, call["id"]) >= 10)
    await client.post(f"/v1/recordings/{rec['id']}/pause", headers=owner.auth)
    await eventually(lambda: not writer_of(client, call["id"]).recording)
    for _ in range(25):  # half a second of stream while paused
        await ws.send_bytes(marker)
    await client.post(f"/v1/recordings/{rec['id']}/resume", headers=owner.auth)
    await eventually(lambda: writer_of(client, call["id"]).recording)
    for _ in range(10):
        await ws.send_bytes(voice)
    await ws.close()
    await eventually(lambda: status_is(pool, rec["id"], "completed"))

    audio = await stored_audio(client, rec["id"])
    assert audio == voice * 10 + b"\x00\x00" * 160 * 25 + voice * 10
