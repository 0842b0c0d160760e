"""What a media socket may do before and after it shows its token (issue 10, "Media sockets").

Before the token: only `connected` and `start`, at most 8 KiB in 2 s. After
it: `start` within 5 s, and a stream silent for 30 s is closed, so the call's
one stream slot is held only by a socket that streams. A reconnect is
accepted while the call is active and its old stream has gone; every
attachment is in the customer's audit trail. (The time limits are shortened
here through the module's constants; the production values are asserted.)
"""

from __future__ import annotations

import asyncio
import base64
from typing import Any

import asyncpg
import pytest
from aiohttp.test_utils import TestClient

from telephony.web.api import media_ws
from telephony.web.appkeys import HUB
from tests.conftest import Customer, new_call
from tests.support.media import close_of, connect
from tests.support.waiting import eventually


def test_the_production_limits_are_those_the_issue_names() -> None:
    assert media_ws.PRE_AUTH_BYTES == 8 * 1024
    assert media_ws.PRE_AUTH_S == 2.0
    assert media_ws.START_S == 5.0
    assert media_ws.SILENCE_S == 30.0


def start_frame(token: str | None) -> dict[str, Any]:
    custom = {"token": token} if token else {}
    return {
        "event": "start",
        "start": {
            "tracks": ["inbound"],
            "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1},
            "customParameters": custom,
        },
    }


# -- before the token ----------------------------------------------------------------------


async def test_more_than_8_kib_before_the_token_is_refused(client: TestClient) -> None:
    ws = await client.ws_connect("/v1/media/twilio")
    padding = "x" * 2000

    for _ in range(5):  # 10 KB of `connected` frames, never a start
        await ws.send_json({"event": "connected", "protocol": "Call", "padding": padding})

    assert await close_of(ws) == (1008, "too much before the media token")


@pytest.mark.parametrize(
    "frame",
    [
        pytest.param({"event": "dtmf", "dtmf": {"digit": "1"}}, id="dtmf"),
        pytest.param({"event": "mark", "mark": {"name": "x"}}, id="mark"),
        pytest.param({"event": "stop"}, id="stop"),
    ],
)
async def test_only_connected_and_start_come_before_the_token(
    client: TestClient, frame: dict[str, Any]
) -> None:
    ws = await client.ws_connect("/v1/media/twilio")
    await ws.send_json({"event": "connected"})

    await ws.send_json(frame)

    assert await close_of(ws) == (1008, "only connected and start before the media token")


async def test_a_socket_that_shows_no_token_in_two_seconds_is_closed(client: TestClient) -> None:
    loop = asyncio.get_running_loop()
    ws = await client.ws_connect("/v1/media/twilio")
    started = loop.time()
    await ws.send_json({"event": "connected"})

    code, reason = await close_of(ws)

    assert (code, reason) == (1008, "no media token in time")
    assert 1.5 <= loop.time() - started < 5


async def test_a_start_without_a_token_is_refused(client: TestClient) -> None:
    ws = await client.ws_connect("/v1/media/twilio")

    await ws.send_json(start_frame(None))

    assert await close_of(ws) == (1008, "missing media token")


# -- after the token -----------------------------------------------------------------------


async def test_an_authenticated_stream_that_never_starts_is_closed_and_frees_its_slot(
    client: TestClient, owner: Customer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(media_ws, "START_S", 0.5)
    monkeypatch.setattr(media_ws, "WATCH_EVERY_S", 0.1)
    call = await new_call(client, owner)
    idle = await client.ws_connect(f"/v1/media/twilio?token={call['media']['token']}")

    closed = await close_of(idle)
    await eventually(lambda: call["id"] not in client.app[HUB].streams)
    again = await connect(client, call)
    await again.start()

    assert closed == (1008, "no start within 0.5 s")
    await eventually(lambda: call["id"] in client.app[HUB].streams)
    await again.stop()


async def test_a_stream_silent_for_its_limit_is_closed_and_a_talking_one_is_not(
    client: TestClient, owner: Customer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(media_ws, "SILENCE_S", 1.0)
    monkeypatch.setattr(media_ws, "WATCH_EVERY_S", 0.1)
    quiet_call, busy_call = await new_call(client, owner), await new_call(client, owner)
    quiet, busy = await connect(client, quiet_call), await connect(client, busy_call)
    await quiet.start(tracks=("inbound",))
    await busy.start(tracks=("inbound",))

    talking = asyncio.create_task(busy.paced(b"\xff" * 160, frames=100, interval_s=0.02))
    closed = await close_of(quiet.ws)
    await talking

    assert closed == (1001, "silent stream")
    assert not busy.ws.closed
    await busy.stop()


async def test_a_malformed_number_closes_with_1007(client: TestClient, owner: Customer) -> None:
    call = await new_call(client, owner)
    peer = await connect(client, call)
    await peer.start(tracks=("inbound",))

    await peer.ws.send_json(
        {
            "event": "media",
            "media": {
                "track": "inbound",
                "timestamp": "\u00b2",  # a digit to str.isdigit(), not a number
                "payload": base64.b64encode(b"\xff" * 160).decode(),
            },
        }
    )

    code, reason = await close_of(peer.ws)
    assert code == 1007
    assert "timestamp" in reason


# -- reconnects ------------------------------------------------------------------------------


async def test_a_reconnect_is_accepted_once_the_old_stream_has_gone_and_each_is_audited(
    client: TestClient, owner: Customer
) -> None:
    call = await new_call(client, owner)
    first = await connect(client, call)
    await first.start(tracks=("inbound",))
    await eventually(lambda: call["id"] in client.app[HUB].streams)
    await first.ws.close()
    await eventually(lambda: call["id"] not in client.app[HUB].streams)

    second = await connect(client, call)
    await second.start(tracks=("inbound",))
    await eventually(lambda: call["id"] in client.app[HUB].streams)
    await second.stop()
    await eventually(lambda: call["id"] not in client.app[HUB].streams)
    trail = await (await client.get("/v1/audit?limit=200", headers=owner.auth)).json()

    actions = [e["action"] for e in trail["items"] if e["subject"] == {"call_id": call["id"]}]
    assert actions.count("media_stream.attached") == 2
    assert actions.count("media_stream.detached") == 2
    attached = [e for e in trail["items"] if e["action"] == "media_stream.attached"]
    assert {e["details"]["dialect"] for e in attached} == {"twilio"}
    assert all(e["actor"]["type"] == "system" for e in attached)  # the media node


async def test_no_reconnect_after_the_call_has_ended(
    client: TestClient, owner: Customer, pool: asyncpg.Pool
) -> None:
    call = await new_call(client, owner)
    await client.post(f"/v1/calls/{call['id']}/end", headers=owner.auth)

    ws = await client.ws_connect(f"/v1/media/twilio?token={call['media']['token']}")

    assert await close_of(ws) == (1008, "the call has ended")


async def test_a_stream_whose_start_waits_on_the_database_is_not_taken_for_silent(
    client: TestClient, owner: Customer, pool: asyncpg.Pool, monkeypatch: pytest.MonkeyPatch
) -> None:
    # bench/ingest.py at 800 legs: a start's attach held past the silence limit by a
    # loaded pool, and the watchdog closed a socket whose engine was talking all along.
    monkeypatch.setattr(media_ws, "SILENCE_S", 1.0)
    monkeypatch.setattr(media_ws, "WATCH_EVERY_S", 0.1)
    call = await new_call(client, owner)
    peer = await connect(client, call)
    async with pool.acquire() as conn, conn.transaction():
        # The attach looks for the call's live recording: it waits on this lock.
        await conn.execute("LOCK TABLE recordings IN ACCESS EXCLUSIVE MODE")
        await peer.start(tracks=("inbound",))
        await peer.paced(b"\xff" * 160, frames=100, interval_s=0.02)  # twice the limit
        still_open = not peer.ws.closed
    await eventually(lambda: call["id"] in client.app[HUB].streams)
    await peer.paced(b"\xff" * 160, frames=10, interval_s=0.02)

    assert still_open and not peer.ws.closed
    await peer.stop()
