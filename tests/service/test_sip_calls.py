"""SIP calls into the recorder (issue 13, SIP.md): INVITE by media token, RTP, the same gate.

A real listener on 127.0.0.1 in the service's own app, a caller and RTP
senders on real UDP sockets (tests/support/sip.py). What is checked is what
the customer gets back: the stored audio, byte for byte in the codec sent.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import asyncpg
import pytest
from aiohttp.test_utils import TestClient

from telephony.web.appkeys import SIP
from tests.conftest import Customer, consented_call, start_recording
from tests.support.media import VOICE, frames_received, writer_of
from tests.support.pcap import PCAPS, rtp_packets
from tests.support.recordings import status_is, stored_audio
from tests.support.sip import RtpSender, SipCaller, offer
from tests.support.sipp_peer import sipp
from tests.support.waiting import eventually


@pytest.fixture
async def caller(client: TestClient) -> SipCaller:
    made = await SipCaller(client.app[SIP].port).open()
    yield made
    made.close()


async def rtp_from(port: int = 0) -> RtpSender:
    return await RtpSender(0).open(port)


async def test_a_sip_call_records_its_rtp_byte_for_byte_in_a_law(
    client: TestClient, owner: Customer, pool: asyncpg.Pool, caller: SipCaller
) -> None:
    call = await consented_call(client, owner)
    assert call["media"]["sip_uri"] == (
        f"sip:{call['media']['token']}@127.0.0.1:{client.app[SIP].port}"
    )
    rtp = await rtp_from()
    dialog = await caller.invite(
        call["media"]["token"], offer(rtp.transport.get_extra_info("sockname")[1])
    )
    assert dialog.answer.status == 200, dialog.answer
    body = dialog.answer.body.decode()
    assert "a=rtpmap:8 PCMA/8000" in body and "a=recvonly" in body
    rtp.to = ("127.0.0.1", dialog.rtp_ports[0])
    rec = await start_recording(client, owner, call["id"])
    await eventually(lambda: writer_of(client, call["id"]) is not None)

    rtp.burst(VOICE, 50)
    await eventually(lambda: frames_received(client, call["id"]) >= 45)
    bye = await caller.in_dialog(dialog, "BYE")
    assert bye.status == 200
    await eventually(lambda: status_is(pool, rec["id"], "completed"))

    assert await stored_audio(client, rec["id"]) == VOICE * 50
    got = await (await client.get(f"/v1/recordings/{rec['id']}", headers=owner.auth)).json()
    assert got["stop_reason"] == "stream_ended"
    rtp.close()


async def test_sipp_plays_its_a_law_pcap_and_the_download_holds_every_payload(
    client: TestClient, owner: Customer, pool: asyncpg.Pool, tmp_path: Path
) -> None:
    """sipp's own uac_pcap (SIP.md 8): INVITE offering PCMA and telephone-event, the 236
    packets of g711a.pcap (30 ms each), 8 s, an RFC 4733 digit under a new SSRC, BYE."""
    call = await consented_call(client, owner)
    rec = await start_recording(client, owner, call["id"])  # before the INVITE: all is kept

    traces = await sipp(
        client.app[SIP].port, tmp_path, builtin="uac_pcap", user=call["media"]["token"]
    )

    assert "SIP/2.0 200 OK" in traces and "a=rtpmap:8 PCMA/8000" in traces
    await eventually(lambda: status_is(pool, rec["id"], "completed"), timeout_s=10)
    sent = await asyncio.to_thread(rtp_packets, PCAPS / "g711a.pcap")
    assert len(sent) == 236 and {p.pt for p in sent} == {8}
    payloads = b"".join(p.payload for p in sent)
    assert await stored_audio(client, rec["id"]) == payloads
    url = f"/v1/recordings/{rec['id']}/audio?encoding=alaw"
    wav = await (await client.get(url, headers=owner.auth)).read()
    assert wav[20:22] == (6).to_bytes(2, "little")  # WAVE_FORMAT_ALAW, as received
    data = wav[wav.index(b"data") + 8 :]
    # One stream, no metadata: the caller's side (SIP.md 4.3), the customer on this
    # outbound call, on the customer's channel of the dual download; the other is silence.
    assert data[1::2] == payloads and set(data[0::2]) == {0xD5}
