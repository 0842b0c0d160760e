"""Where a media socket's token may come from (API.md "Media streams", issue 15).

Every dialect takes `?token=` and its metadata slot (`start`'s custom
parameters). Telnyx also sends the stream's `stream_auth_token`, which the
customer sets to the call's media token: as the `x-telnyx-streaming-auth-token`
header of the upgrade request, and in its `connected` frame.
"""

from __future__ import annotations

import pytest
from aiohttp.test_utils import TestClient

from telephony.web.api import media_ws
from telephony.web.appkeys import HUB
from tests.conftest import Customer, consented_call, new_call, start_recording
from tests.support.media import VOICE, close_of, connect, frames_received, writer_of
from tests.support.waiting import eventually


async def test_telnyx_authenticates_with_the_token_in_its_connected_frame(
    client: TestClient, owner: Customer
) -> None:
    call = await consented_call(client, owner)
    await start_recording(client, owner, call["id"])
    peer = await connect(client, call, "telnyx", token_in_url=False)

    await peer.start(tracks=None, auth_token=call["media"]["token"])
    await eventually(lambda: writer_of(client, call["id"]) is not None)
    await peer.media(VOICE, "outbound", frames=5)

    await eventually(lambda: frames_received(client, call["id"]) == 5)
    assert writer_of(client, call["id"]).stats.frames_in == 5
    await peer.stop()


async def test_telnyx_authenticates_with_the_token_in_its_upgrade_header(
    client: TestClient, owner: Customer
) -> None:
    call = await new_call(client, owner)
    header = {"x-telnyx-streaming-auth-token": call["media"]["token"]}
    peer = await connect(client, call, "telnyx", token_in_url=False, headers=header)

    await peer.start(tracks=None)  # no token in any frame

    await eventually(lambda: call["id"] in client.app[HUB].streams)
    await peer.stop()


@pytest.mark.parametrize("where", ["connected", "header"])
async def test_a_wrong_telnyx_auth_token_is_refused(
    client: TestClient, owner: Customer, where: str
) -> None:
    call = await new_call(client, owner)
    wrong = "mt_" + "x" * 43
    headers = {"x-telnyx-streaming-auth-token": wrong} if where == "header" else None
    peer = await connect(client, call, "telnyx", token_in_url=False, headers=headers)

    await peer.start(tracks=None, auth_token=wrong if where == "connected" else None)

    assert await close_of(peer.ws) == (1008, "unknown media token")
    assert call["id"] not in client.app[HUB].streams


async def test_the_telnyx_header_means_nothing_to_another_dialect(
    client: TestClient, owner: Customer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(media_ws, "PRE_AUTH_S", 0.3)
    call = await new_call(client, owner)
    header = {"x-telnyx-streaming-auth-token": call["media"]["token"]}
    ws = await client.ws_connect("/v1/media/twilio", headers=header)

    await ws.send_json({"event": "connected", "protocol": "Call", "version": "1.0.0"})

    assert await close_of(ws) == (1008, "no media token in time")
