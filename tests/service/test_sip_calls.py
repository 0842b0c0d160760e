"""SIP calls into the recorder (issue 13, SIP.md): INVITE by media token, RTP, the same gate.

A real listener on 127.0.0.1 in the service's own app, a caller and RTP
senders on real UDP sockets (tests/support/sip.py). What is checked is what
the customer gets back: the stored audio, byte for byte in the codec sent.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import resource
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from aiohttp.test_utils import TestClient

from telephony.media.sip.message import Request
from telephony.media.wav import alaw_to_linear
from telephony.settings import Settings
from telephony.web.app import create_app
from telephony.web.appkeys import SIP
from tests.conftest import (
    Customer,
    ServiceServer,
    consented_call,
    decide,
    new_call,
    new_customer,
    start_recording,
)
from tests.service.test_media import files_containing, read_tree
from tests.support.baresip_peer import dial, write_config, write_wav
from tests.support.media import MARKER, VOICE, frames_received, writer_of
from tests.support.pcap import PCAPS, rtp_packets
from tests.support.recordings import status_is, stored_audio
from tests.support.sealed import make_pair, opened, seal_to, sealed_download
from tests.support.sip import Dialog, RtpSender, SipCaller, offer
from tests.support.sipp_peer import free_udp_port, sipp
from tests.support.waiting import eventually

ALAW_SILENCE = b"\xd5"
TIMER_B_S = 32.0  # an INVITE client transaction's bound (RFC 3261 §17.1.1.2)


@pytest.fixture
async def caller(client: TestClient) -> SipCaller:
    made = await SipCaller(client.app[SIP].port).open()
    yield made
    made.close()


_OPENED: list[RtpSender] = []


@pytest.fixture(autouse=True)
def _close_senders() -> Iterator[None]:
    """Every sender `rtp_from` opened is closed, even when its test fails first (an open
    socket would be reported against a later test)."""
    yield
    while _OPENED:
        _OPENED.pop().close()


async def rtp_from(to_port: int = 0) -> RtpSender:
    """A sender on a port of its own; aimed at the answer's port once there is one."""
    sender = await RtpSender(to_port).open()
    _OPENED.append(sender)
    return sender


async def test_a_sip_call_records_its_rtp_byte_for_byte_in_a_law(
    client: TestClient, owner: Customer, pool: asyncpg.Pool, caller: SipCaller
) -> None:
    call = await consented_call(client, owner)
    assert call["media"]["sip_uri"] == (
        f"sip:{call['media']['token']}@127.0.0.1:{client.app[SIP].port}"
    )
    rtp = await rtp_from()
    dialog = await caller.invite(call["media"]["token"], offer(rtp.port))
    assert dialog.answer.status == 200, dialog.answer
    body = dialog.answer.body.decode()
    assert "a=rtpmap:8 PCMA/8000" in body and "a=recvonly" in body
    rtp.to = ("127.0.0.1", dialog.rtp_ports[0])
    rec = await start_recording(client, owner, call["id"])
    await eventually(lambda: writer_of(client, call["id"]) is not None)

    await rtp.play(VOICE, 50)
    await eventually(lambda: frames_received(client, call["id"]) >= 50)
    bye = await caller.in_dialog(dialog, "BYE")
    assert bye.status == 200
    await eventually(lambda: status_is(pool, rec["id"], "completed"))

    assert await stored_audio(client, rec["id"]) == VOICE * 50
    got = await (await client.get(f"/v1/recordings/{rec['id']}", headers=owner.auth)).json()
    assert got["stop_reason"] == "stream_ended"
    assert got["source"] == "sip"
    rtp.close()


async def test_a_sip_call_sealed_to_a_customer_key_opens_with_it_byte_for_byte(
    client: TestClient, owner: Customer, pool: asyncpg.Pool, caller: SipCaller
) -> None:
    """The SIP path with a customer key (issue 14): the same container as a WebSocket's."""
    pair = make_pair("rsa-oaep-sha256")
    key_id = await seal_to(client, owner, pair)
    call = await consented_call(client, owner)
    rtp = await rtp_from()
    dialog = await caller.invite(call["media"]["token"], offer(rtp.port))
    assert dialog.answer.status == 200, dialog.answer
    rtp.to = ("127.0.0.1", dialog.rtp_ports[0])
    rec = await start_recording(client, owner, call["id"])
    await eventually(lambda: writer_of(client, call["id"]) is not None)
    await rtp.play(VOICE, 50)
    await eventually(lambda: frames_received(client, call["id"]) >= 50)
    assert (await caller.in_dialog(dialog, "BYE")).status == 200
    await eventually(lambda: status_is(pool, rec["id"], "completed"))

    header, audio = opened(await sealed_download(client, owner, rec["id"]), pair)
    assert audio == VOICE * 50
    assert header["key"]["id"] == key_id and header["audio"]["encoding"] == "alaw"
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


# -- the gate (R1, R2): the media issue's marker test, over RTP ------------------------------


async def test_marker_rtp_outside_the_window_touches_no_disk(
    client: TestClient,
    owner: Customer,
    pool: asyncpg.Pool,
    settings: Settings,
    caller: SipCaller,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Before consent, before the customer's start, during a pause and after a revocation,
    RTP is dropped in memory: only the two consented stretches are stored."""
    caplog.set_level(logging.DEBUG)
    started = time.time() - 1.0  # file times are coarse: a second's margin
    call = await new_call(client, owner)
    party = call["counterparts"][0]["id"]
    rtp = await rtp_from()
    dialog = await caller.invite(call["media"]["token"], offer(rtp.port))
    assert dialog.answer.status == 200
    rtp.to = ("127.0.0.1", dialog.rtp_ports[0])
    sent = 0

    async def stretch(payload: bytes, frames: int) -> None:
        nonlocal sent
        await rtp.play(payload, frames)
        sent += frames
        await eventually(lambda: frames_received(client, call["id"]) >= sent)

    await stretch(MARKER, 20)  # before consent and before any recording
    await decide(client, owner, call["id"], party, "granted")
    await stretch(MARKER, 20)  # consented, but no recording started (R1)
    rec = await start_recording(client, owner, call["id"])
    await eventually(lambda: writer_of(client, call["id"]) is not None)
    await stretch(VOICE, 50)
    await client.post(f"/v1/recordings/{rec['id']}/pause", headers=owner.auth)
    await stretch(MARKER, 50)  # paused: sent right after the pause answered
    await client.post(f"/v1/recordings/{rec['id']}/resume", headers=owner.auth)
    await eventually(lambda: writer_of(client, call["id"]).recording)
    await stretch(VOICE, 50)
    await decide(client, owner, call["id"], party, "revoked")
    await stretch(MARKER, 50)  # after the revocation answered
    assert (await caller.in_dialog(dialog, "BYE")).status == 200
    await eventually(lambda: status_is(pool, rec["id"], "completed"))

    audio = await stored_audio(client, rec["id"])
    assert audio == VOICE * 100  # both consented stretches, skip mode: no gap
    assert await asyncio.to_thread(read_tree, settings.data_dir), "the recording wrote blobs"
    assert await asyncio.to_thread(files_containing, settings.data_dir, MARKER[:16]) == []
    temporary = Path(tempfile.gettempdir())
    assert await asyncio.to_thread(files_containing, temporary, MARKER[:16], since=started) == []
    for record in caplog.records:
        assert MARKER[:16].hex() not in record.getMessage() + repr(record.__dict__)
    rtp.close()


async def test_audio_that_arrived_before_the_start_is_dropped_among_frames_out_of_order(
    client: TestClient, owner: Customer, pool: asyncpg.Pool, caller: SipCaller
) -> None:
    """R2 inside the writer: a frame whose arrival precedes the recorded window is dropped
    even when it is offered between frames that arrived inside it (as a jitter window's
    release is), so a check of a turn's first and last arrival alone would keep it. Turn
    after turn: one out of order must not leave the next ones trusted, nor the reverse."""
    call = await consented_call(client, owner)
    dialog = await caller.invite(call["media"]["token"], offer(40000))
    rec = await start_recording(client, owner, call["id"])
    await eventually(lambda: writer_of(client, call["id"]) is not None)
    writer = writer_of(client, call["id"])
    start, track = writer.windows[-1].start, writer.fmt.tracks[0].name
    position = 0

    def offer_frame(payload: bytes, arrived_s: float) -> None:
        nonlocal position
        writer.offer_placed(track, payload, position, start + timedelta(seconds=arrived_s))
        position += len(payload)

    for turn in range(3):  # arrivals inside the window so far: after its start, before now
        base = 0.01 + 0.05 * turn
        offer_frame(VOICE, base)
        offer_frame(MARKER, -1.0)  # arrived before the customer's start
        offer_frame(VOICE, base + 0.002)
        for later in range(10):  # in order: past the jitter hold, so the turn seals some
            offer_frame(VOICE, base + 0.004 + later / 500)
        dropped = turn + 1
        writer.wake()
        await eventually(lambda: writer.stats.frames_dropped_window >= dropped)  # noqa: B023
    await eventually(lambda: datetime.now(UTC) > start + timedelta(seconds=0.2))
    assert (await caller.in_dialog(dialog, "BYE")).status == 200
    await eventually(lambda: status_is(pool, rec["id"], "completed"))

    audio = await stored_audio(client, rec["id"])
    assert MARKER[:16] not in audio and audio.count(VOICE) == 36


# -- bad input (issue 13, "Bad input") -------------------------------------------------------


async def streams_of(pool: asyncpg.Pool, call_id: str) -> int:
    async with pool.acquire() as conn:
        return int(
            await conn.fetchval("SELECT count(*) FROM media_streams WHERE call_id = $1", call_id)
        )


async def test_an_invite_for_an_unknown_expired_or_ended_token_is_404_and_creates_nothing(
    client: TestClient, owner: Customer, pool: asyncpg.Pool, caller: SipCaller
) -> None:
    ended = await new_call(client, owner)
    await client.post(f"/v1/calls/{ended['id']}/end", headers=owner.auth)
    free = len(client.app[SIP].sessions.ports._free)
    for token in ("mt_" + "x" * 43, ended["media"]["token"]):
        dialog = await caller.invite(token, offer(40000))
        assert dialog.answer.status == 404, (token, dialog.answer)
    for user in ("not%20a%20token", "+48221234567", "%00%01"):
        # Not a media token: a trunk's session, whose first INVITE is challenged.
        dialog = await caller.invite(user, offer(40000))
        assert dialog.answer.status == 401, (user, dialog.answer)
    assert await streams_of(pool, ended["id"]) == 0
    assert client.app[SIP].sessions.dialogs == {}
    assert len(client.app[SIP].sessions.ports._free) == free  # every port given back


@pytest.mark.parametrize(
    ("body", "content_type", "status", "warning"),
    [
        ("", "application/sdp", 488, "399"),  # a delayed offer: legal SIP, not taken (SIP.md 1)
        ("v=0\r\nthis is not SDP\r\n", "application/sdp", 400, "399"),
        (offer(40000, formats="9 96").replace("101", "96"), "application/sdp", 488, "305"),
        (offer(40000).replace("RTP/AVP", "RTP/SAVP"), "application/sdp", 488, "302"),
        (offer(40000).replace("m=audio", "m=video"), "application/sdp", 488, "399"),
        ("hello", "text/plain", 415, None),
    ],
    ids=["no-sdp", "unparsable", "no-g711", "srtp-only", "no-audio", "not-sdp"],
)
async def test_an_invite_without_a_usable_offer_is_refused_with_its_reason(
    client: TestClient,
    owner: Customer,
    pool: asyncpg.Pool,
    caller: SipCaller,
    body: str,
    content_type: str,
    status: int,
    warning: str | None,
) -> None:
    call = await consented_call(client, owner)
    dialog = await caller.invite(call["media"]["token"], body, content_type=content_type)
    assert dialog.answer.status == status, dialog.answer
    if warning:
        assert (dialog.answer.headers.get("warning") or "").startswith(warning + " ")
    if status == 415:
        assert dialog.answer.headers.get("accept") == "application/sdp"
    assert await streams_of(pool, call["id"]) == 0  # refused before the call was touched


async def test_a_second_invite_for_a_streaming_call_is_403_and_the_first_goes_on(
    client: TestClient, owner: Customer, caller: SipCaller
) -> None:
    call = await consented_call(client, owner)
    first = await caller.invite(call["media"]["token"], offer(40000))
    assert first.answer.status == 200
    second = await caller.invite(call["media"]["token"], offer(40002))
    assert second.answer.status == 403
    assert len(client.app[SIP].sessions.dialogs) == 1
    assert (await caller.in_dialog(first, "BYE")).status == 200


async def test_rtp_from_another_address_is_dropped_and_never_stored(
    client: TestClient, owner: Customer, pool: asyncpg.Pool, caller: SipCaller
) -> None:
    """The offer says 127.0.0.1 sends; whoever else finds the port speaks into nothing."""
    call = await consented_call(client, owner)
    rec = await start_recording(client, owner, call["id"])
    dialog = await caller.invite(call["media"]["token"], offer(40000))
    intruder = await RtpSender(dialog.rtp_ports[0]).open(host="127.0.0.2")
    genuine = await RtpSender(dialog.rtp_ports[0]).open()
    await asyncio.gather(intruder.play(MARKER, 20), genuine.play(VOICE, 20))
    await eventually(lambda: frames_received(client, call["id"]) >= 20)
    assert (await caller.in_dialog(dialog, "BYE")).status == 200
    await eventually(lambda: status_is(pool, rec["id"], "completed"))

    assert await stored_audio(client, rec["id"]) == VOICE * 20
    intruder.close()
    genuine.close()
    assert (
        metric(await (await client.get("/metrics")).text(), "rtp_dropped_total", "wrong_source")
        >= 20
    )


async def test_garbage_datagrams_go_unanswered_and_are_counted_on_metrics(
    client: TestClient, caller: SipCaller
) -> None:
    for junk in (b"\x00\x01\x02 not SIP", b"GET / HTTP/1.1\r\n\r\n", "ĄĘ\u0000".encode()):
        caller.transport.sendto(junk, caller.target)
    await eventually(lambda: client.app[SIP].drops["garbage"] >= 3)
    assert caller.inbox.queue.empty()  # answering garbage would reflect traffic
    text = await (await client.get("/metrics")).text()
    assert metric(text, "sip_dropped_total", "garbage") == 3
    assert metric(text, "rtp_ports_free", None) == client.app[SIP].sessions.ports.size


def metric(text: str, name: str, reason: str | None) -> float:
    """One sample of the Prometheus text: `name{reason="…"}` (or bare `name`), 0 if absent."""
    wanted = f'{name}{{reason="{reason}"}} ' if reason else f"{name} "
    line = next((line for line in text.splitlines() if line.startswith(wanted)), None)
    return float(line.split()[-1]) if line else 0.0


async def test_in_dialog_requests_for_no_dialog_get_481_and_a_stale_cseq_500(
    client: TestClient, owner: Customer, caller: SipCaller
) -> None:
    call = await consented_call(client, owner)
    dialog = await caller.invite(call["media"]["token"], offer(40000))
    stranger = Dialog(
        dialog.call_id, dialog.from_tag, dialog.to + "x", dialog.uri, 5, dialog.answer
    )
    assert (await caller.in_dialog(stranger, "BYE")).status == 481
    dialog.cseq = -1  # the next request's CSeq is 0, below the INVITE's 1
    assert (await caller.in_dialog(dialog, "INFO")).status == 500
    dialog.cseq = 5
    assert (await caller.in_dialog(dialog, "INFO")).status == 200
    assert (await caller.in_dialog(dialog, "BYE")).status == 200
    assert (await caller.in_dialog(dialog, "BYE")).status == 481  # gone with the first


async def test_hold_and_resume_by_re_invite_keep_the_ports_and_answer_each_offer_anew(
    client: TestClient, owner: Customer, caller: SipCaller
) -> None:
    call = await consented_call(client, owner)
    first = offer(40000)
    dialog = await caller.invite(call["media"]["token"], first)
    held = await caller.in_dialog(dialog, "INVITE", bump(first).replace("a=sendonly", "a=inactive"))
    assert held.status == 200 and "a=inactive" in held.body.decode()
    assert f"m=audio {dialog.rtp_ports[0]} " in held.body.decode()
    assert " 2 IN IP4 " in held.body.decode()  # o= version up: the answer changed
    resumed = await caller.in_dialog(dialog, "INVITE", bump(bump(first)))
    assert resumed.status == 200 and "a=recvonly" in resumed.body.decode()
    assert f"m=audio {dialog.rtp_ports[0]} " in resumed.body.decode()
    assert (await caller.in_dialog(dialog, "BYE")).status == 200


@pytest.mark.parametrize("how", ["re-offer", "offerless re-INVITE, answer in the ACK"])
async def test_a_stream_moved_mid_call_records_the_new_sender_from_its_first_packet(
    client: TestClient, owner: Customer, pool: asyncpg.Pool, caller: SipCaller, how: str
) -> None:
    """After a transfer the stream's media comes from elsewhere (SIP.md 5: re-latch on a new
    c=/port), said by a re-offer, or by the ACK's answer to the offer our 200 makes to an
    offerless re-INVITE (RFC 3725, SIP.md 4.4). The new sender's audio is kept from its
    first packet, though the old one spoke a moment ago (without the move it would wait 2 s
    of silence); the port we answered stays the same. An ACK whose body is not SDP
    changes nothing."""
    call = await consented_call(client, owner)
    first, second = await rtp_from(), await rtp_from()
    sdp = offer(first.port)
    dialog = await caller.invite(call["media"]["token"], sdp)
    first.to = second.to = ("127.0.0.1", dialog.rtp_ports[0])
    rec = await start_recording(client, owner, call["id"])
    await eventually(lambda: writer_of(client, call["id"]) is not None)
    await first.play(VOICE, 25)
    await eventually(lambda: frames_received(client, call["id"]) >= 25)
    sip_call = client.app[SIP].sessions.dialogs[_key(dialog)]
    moved = bump(sdp).replace(f"m=audio {first.port} ", f"m=audio {second.port} ")

    if how == "re-offer":
        answer = await caller.in_dialog(dialog, "INVITE", moved)
        assert answer.status == 200 and f"m=audio {dialog.rtp_ports[0]} " in answer.body.decode()
    else:
        common = {"call_id": dialog.call_id, "from_tag": dialog.from_tag, "to": dialog.to}
        for body, kind in (("not sdp", "text/plain"), (moved, "application/sdp")):
            dialog.cseq += 1
            caller.request("INVITE", dialog.uri, cseq=dialog.cseq, **common)
            ours = await caller.final("INVITE")
            assert ours.status == 200 and f"m=audio {dialog.rtp_ports[0]} " in ours.body.decode()
            caller.request(
                "ACK", dialog.uri, cseq=dialog.cseq, body=body, content_type=kind, **common
            )
            await eventually(lambda: sip_call.offered is False)
            if kind == "text/plain":  # not an answer: the stream stays where it was
                assert sip_call.legs[0].remote == ("127.0.0.1", first.port)
    assert sip_call.legs[0].remote == ("127.0.0.1", second.port)
    await second.play(MARKER, 25)
    await eventually(lambda: frames_received(client, call["id"]) >= 50)
    rtp = sip_call.legs[0].rtp
    assert rtp is not None and rtp.drops["other_source"] == 0  # none of its packets waited
    assert (await caller.in_dialog(dialog, "BYE")).status == 200
    await eventually(lambda: status_is(pool, rec["id"], "completed"))

    stored = await stored_audio(client, rec["id"])
    assert stored.startswith(VOICE * 25) and stored.endswith(MARKER * 25)


def _key(dialog: Dialog) -> tuple[str, str, str]:
    """The recorder's key of a dialog: Call-ID, the caller's tag, the recorder's."""
    return (dialog.call_id, dialog.from_tag, dialog.to.rsplit("tag=", 1)[1])


async def test_a_re_offer_adding_a_stream_or_changing_the_codec_is_488_and_the_call_goes_on(
    client: TestClient, owner: Customer, pool: asyncpg.Pool, caller: SipCaller
) -> None:
    """A recording keeps one format and its channels for its whole length (one WAV), so a
    re-offer with another stream or only another codec is refused 488 with a Warning naming
    which (RFC 3261 §14.2: the session goes on as it was), and the audio after it is kept."""
    call = await consented_call(client, owner)
    rtp = await rtp_from()
    sdp = offer(rtp.port)
    dialog = await caller.invite(call["media"]["token"], sdp)
    rtp.to = ("127.0.0.1", dialog.rtp_ports[0])
    rec = await start_recording(client, owner, call["id"])
    await eventually(lambda: writer_of(client, call["id"]) is not None)
    await rtp.play(VOICE, 10)

    two_streams = bump(sdp) + f"m=audio {rtp.port + 2} RTP/AVP 8 0 101\r\na=sendonly\r\n"
    pcmu_only = bump(bump(sdp)).replace(" RTP/AVP 8 0 101", " RTP/AVP 0 101")
    for changed, why in (
        (two_streams, '399 recorder "the same streams only: a recording keeps its channels"'),
        (pcmu_only, '305 recorder "the same codec only: a recording keeps its format"'),
    ):
        refused = await caller.in_dialog(dialog, "INVITE", changed)
        assert (refused.status, refused.headers.get("warning")) == (488, why)
    await rtp.play(MARKER, 10)
    await eventually(lambda: frames_received(client, call["id"]) >= 20)
    assert (await caller.in_dialog(dialog, "BYE")).status == 200
    await eventually(lambda: status_is(pool, rec["id"], "completed"))
    assert await stored_audio(client, rec["id"]) == VOICE * 10 + MARKER * 10
    rtp.close()


async def test_a_line_set_to_port_0_closes_its_sockets_and_taken_again_gets_new_ones(
    client: TestClient, owner: Customer, pool: asyncpg.Pool, caller: SipCaller
) -> None:
    """SIP.md 3: a stream keeps its port across re-offers, a line set to port 0 closes its
    sockets, and a line offered again gets new ports, its audio on the channel it had."""
    call = await consented_call(client, owner)
    sessions = client.app[SIP].sessions
    first, second = await rtp_from(), await rtp_from()
    sdp = offer(first.port, streams=2)
    dialog = await caller.invite(call["media"]["token"], sdp)
    kept, closed = dialog.rtp_ports
    first.to, second.to = ("127.0.0.1", kept), ("127.0.0.1", closed)
    rec = await start_recording(client, owner, call["id"])
    await eventually(lambda: writer_of(client, call["id"]) is not None)
    await asyncio.gather(first.play(VOICE, 25, every_s=0.02), second.play(VOICE, 25, every_s=0.02))
    await eventually(lambda: frames_received(client, call["id"]) >= 50)
    free = sessions.ports.free

    line = f"m=audio {first.port + 2} "
    dropped = await caller.in_dialog(dialog, "INVITE", bump(sdp).replace(line, "m=audio 0 "))
    assert dropped.status == 200
    assert f"m=audio {kept} " in dropped.body.decode()
    assert "m=audio 0 " in dropped.body.decode()
    assert sessions.ports.free == free + 1
    again = await caller.in_dialog(dialog, "INVITE", bump(bump(sdp)))
    assert again.status == 200
    ports = [int(m.split()[1]) for m in again.body.decode().splitlines() if m.startswith("m=")]
    assert ports[0] == kept and ports[1] not in (0, closed)
    second.to = ("127.0.0.1", ports[1])
    await asyncio.gather(first.play(VOICE, 25, every_s=0.02), second.play(MARKER, 25, every_s=0.02))
    await eventually(lambda: frames_received(client, call["id"]) >= 100)
    assert (await caller.in_dialog(dialog, "BYE")).status == 200
    await eventually(lambda: status_is(pool, rec["id"], "completed"))

    audio = await stored_audio(client, rec["id"])
    channels = [audio[0::2], audio[1::2]]
    assert channels[0].count(VOICE) == 50 and MARKER not in channels[0]
    assert channels[1].count(VOICE) == 25 and MARKER * 25 in channels[1]
    first.close()
    second.close()


def bump(sdp: str) -> str:
    """The same offer with its o= version one up (a changed offer, RFC 3264 §8)."""
    head, _, rest = sdp.partition("o=caller ")
    session, version, tail = rest.split(" ", 2)
    return f"{head}o=caller {session} {int(version) + 1} {tail}"


async def test_a_node_without_free_rtp_ports_answers_503_with_retry_after(
    settings: Settings, pool: asyncpg.Pool
) -> None:
    port = free_udp_port(even=True)
    app = create_app(settings.replace(rtp_ports=(port, port + 1)), run_workers=False)
    async with TestClient(ServiceServer(app)) as client:
        owner = await new_customer(client)
        caller = await SipCaller(app[SIP].port).open()
        first = await caller.invite(
            (await consented_call(client, owner))["media"]["token"], offer(40000)
        )
        assert first.answer.status == 200 and first.rtp_ports == [port]
        second = await caller.invite(
            (await consented_call(client, owner))["media"]["token"], offer(40002)
        )
        assert second.answer.status == 503 and second.answer.headers.get("retry-after")
        assert (await caller.in_dialog(first, "BYE")).status == 200
        third = await caller.invite(
            (await consented_call(client, owner))["media"]["token"], offer(40004)
        )
        assert third.answer.status == 200 and third.rtp_ports == [port]  # freed by the BYE
        assert (await caller.in_dialog(third, "BYE")).status == 200
        caller.close()


# -- SIPREC (RFC 7866) ------------------------------------------------------------------------


@pytest.mark.parametrize("transport", ["u1", "t1"], ids=["udp", "tcp"])
async def test_a_siprec_session_from_sipp_puts_each_stream_on_its_senders_side(
    client: TestClient, owner: Customer, pool: asyncpg.Pool, tmp_path: Path, transport: str
) -> None:
    """sipp as an SRC (tests/support/sipp/siprec_src.xml): label 1 is sent by the customer's
    own number, label 2 by the counterpart. sipp plays g711a.pcap to the first stream; the
    test sends the second. The dual download has each on its side, byte for byte."""
    call = await consented_call(client, owner)
    rec = await start_recording(client, owner, call["id"])
    sessions = client.app[SIP].sessions
    src = asyncio.create_task(
        sipp(
            client.app[SIP].port,
            tmp_path,
            scenario="siprec_src.xml",
            user=call["media"]["token"],
            transport=transport,
            variables={"customer": call["from"], "counterpart": call["counterparts"][0]["number"]},
        )
    )

    def answered() -> list[Any] | None:
        """The dialog's legs once it takes RTP: what its 200 tells the SRC."""
        return next((c.legs for c in sessions.dialogs.values() if c.legs[0].call), None)

    legs = await eventually(answered)
    second = await RtpSender(legs[1].bound.port).open()
    # In real time: the recorder aligns the two streams by arrival, and seals what both
    # have reached; a stream far ahead of the other would leave it behind (late audio).
    await second.play(VOICE, 100, every_s=0.02)
    traces = await src
    second.close()

    assert "Content-Type: application/sdp" in traces.split("SIP/2.0 200 OK", 1)[1]
    await eventually(lambda: status_is(pool, rec["id"], "completed"), timeout_s=10)
    payloads = b"".join(
        p.payload for p in await asyncio.to_thread(rtp_packets, PCAPS / "g711a.pcap")
    )
    url = f"/v1/recordings/{rec['id']}/audio?encoding=alaw"
    wav = await (await client.get(url, headers=owner.auth)).read()
    data = wav[wav.index(b"data") + 8 :]
    counterparts, customer = data[0::2], data[1::2]
    assert payloads in customer
    assert VOICE * 100 in counterparts, frames_found(counterparts, VOICE)
    got = await (await client.get(f"/v1/recordings/{rec['id']}", headers=owner.auth)).json()
    assert got["source"] == "siprec"


async def test_one_stream_losing_and_reordering_packets_stays_aligned_with_the_other(
    client: TestClient, owner: Customer, pool: asyncpg.Pool, caller: SipCaller
) -> None:
    """SIP.md 6: packets behind a gap wait (80 ms) while the other stream's go on at once;
    the writer places both by position, so neither side loses a byte (a wait of 1.5 s does
    lose some: the test can fail). A lost packet is A-law silence in its place, and the
    reordered pair is put back in order."""
    call = await consented_call(client, owner)
    rec = await start_recording(client, owner, call["id"])
    xml = two_party_metadata(call["from"], call["counterparts"][0]["number"])
    senders = [await rtp_from(), await rtp_from()]
    body = siprec_body(offer(senders[0].port, streams=2, label=True), xml)
    dialog = await caller.invite(
        call["media"]["token"], body, headers=SIPREC, content_type="multipart/mixed;boundary=b1"
    )
    assert dialog.answer.status == 200, dialog.answer
    for sender, port in zip(senders, dialog.rtp_ports, strict=True):
        sender.to = ("127.0.0.1", port)
    frames = [bytes([0x20 + n]) * 160 for n in range(100)]
    customer_side = [senders[0].packet(f) for f in frames]
    other_side = [senders[1].packet(f) for f in frames]
    lost, swapped = range(5, 100, 10), 40  # a gap every 200 ms: some seal meets one
    other_side[swapped], other_side[swapped + 1] = other_side[swapped + 1], other_side[swapped]
    for n in lost:
        other_side[n] = b""  # numbered, never sent

    loop = asyncio.get_running_loop()
    done = loop.create_future()

    def send(n: int) -> None:
        for sender, packets in zip(senders, (customer_side, other_side), strict=True):
            if packets[n]:
                sender.transport.sendto(packets[n], sender.to)  # type: ignore[union-attr]
        if n == len(frames) - 1:
            done.set_result(None)

    start = loop.time()
    for n in range(len(frames)):
        loop.call_at(start + 0.02 * n, send, n)
    await done
    await eventually(lambda: frames_received(client, call["id"]) >= 2 * len(frames) - len(lost))
    assert (await caller.in_dialog(dialog, "BYE")).status == 200
    for sender in senders:
        sender.close()
    await eventually(lambda: status_is(pool, rec["id"], "completed"), timeout_s=10)

    url = f"/v1/recordings/{rec['id']}/audio?encoding=alaw"
    wav = await (await client.get(url, headers=owner.auth)).read()
    data = wav[wav.index(b"data") + 8 :]
    counterparts, customer = data[0::2], data[1::2]
    heard = [ALAW_SILENCE * 160 if n in lost else f for n, f in enumerate(frames)]
    assert b"".join(frames) in customer, frames_found(customer, frames[0])
    assert b"".join(heard) in counterparts, frames_found(counterparts, frames[0])


def frames_found(channel: bytes, frame: bytes) -> str:
    """Where `frame` repeats in a channel, for a failure's message: (offset, count) runs."""
    runs, at = [], channel.find(frame)
    while at >= 0:
        count = 0
        while channel[at + count * len(frame) : at + (count + 1) * len(frame)] == frame:
            count += 1
        runs.append((at, count))
        at = channel.find(frame, at + count * len(frame))
    return f"runs of the frame (offset, count): {runs}; channel of {len(channel)} samples"


def siprec_body(sdp: str, xml: str, *, legacy: bool = False, metadata_first: bool = False) -> str:
    """A SIPREC INVITE's multipart body (SIP.md 4.5), in the orders and types SRCs use."""
    kind = "application/rs-metadata" if legacy else "application/rs-metadata+xml"
    parts = [
        f"Content-Type: application/sdp\r\n\r\n{sdp}",
        f"Content-Type: {kind}\r\nContent-Disposition: recording-session\r\n\r\n{xml}\r\n",
    ]
    if metadata_first:
        parts.reverse()
    return "".join(f"--b1\r\n{p}" for p in parts) + "--b1--\r\n"


def two_party_metadata(customer: str, counterpart: str) -> str:
    return (
        '<recording xmlns="urn:ietf:params:xml:ns:recording:1">'
        f'<participant participant_id="a"><nameID aor="tel:{customer}"/></participant>'
        f'<participant participant_id="b"><nameID aor="sip:{counterpart}@sbc.example"/>'
        "</participant>"
        '<stream stream_id="s1"><label>1</label></stream>'
        '<stream stream_id="s2"><label>2</label></stream>'
        '<participantstreamassoc participant_id="a"><send>s1</send></participantstreamassoc>'
        '<participantstreamassoc participant_id="b"><send>s2</send></participantstreamassoc>'
        "</recording>"
    )


SIPREC = ("Require: siprec", "Contact: <sip:src@127.0.0.1>;+sip.src", "MIME-Version: 1.0")


@pytest.mark.parametrize(
    ("legacy", "metadata_first"),
    [(True, False), (False, True)],
    ids=["legacy-type", "metadata-first"],
)
async def test_a_siprec_offer_is_answered_plain_sdp_with_its_labels_and_the_srs_tag(
    client: TestClient, owner: Customer, caller: SipCaller, legacy: bool, metadata_first: bool
) -> None:
    call = await consented_call(client, owner)
    xml = two_party_metadata(call["from"], call["counterparts"][0]["number"])
    multipart_body = siprec_body(
        offer(40000, streams=2, label=True), xml, legacy=legacy, metadata_first=metadata_first
    )
    dialog = await caller.invite(
        call["media"]["token"],
        multipart_body,
        headers=SIPREC,
        content_type="multipart/mixed;boundary=b1",
    )

    assert dialog.answer.status == 200, dialog.answer
    assert dialog.answer.headers.get("content-type") == "application/sdp"
    assert (dialog.answer.headers.get("contact") or "").endswith(";+sip.srs")
    answer = dialog.answer.body.decode()
    assert answer.count("a=recvonly") == 2 and len(dialog.rtp_ports) == 2
    assert answer.index("a=label:1") < answer.index("a=label:2")
    stream = client.app[SIP].sessions.dialogs
    assert [leg.track for c in stream.values() for leg in c.legs] == ["outbound", "inbound"]
    assert (await caller.in_dialog(dialog, "BYE")).status == 200


@pytest.mark.parametrize(
    ("content_type", "xml", "status"),
    [
        ("multipart/mixed;boundary=other", None, 400),
        ("multipart/mixed", None, 400),
        (
            "multipart/mixed;boundary=b1",
            '<!DOCTYPE r [<!ENTITY x SYSTEM "file:///etc/passwd">]><recording>&x;</recording>',
            400,
        ),
        ("multipart/mixed;boundary=b1", "<recording><unclosed>", 400),
    ],
    ids=["wrong-boundary", "no-boundary", "external-entity", "not-well-formed"],
)
async def test_a_broken_siprec_body_is_400_with_a_warning_and_creates_nothing(
    client: TestClient,
    owner: Customer,
    pool: asyncpg.Pool,
    caller: SipCaller,
    content_type: str,
    xml: str | None,
    status: int,
) -> None:
    call = await consented_call(client, owner)
    xml = xml or two_party_metadata(call["from"], call["counterparts"][0]["number"])
    body = siprec_body(offer(40000, streams=2, label=True), xml)
    dialog = await caller.invite(
        call["media"]["token"], body, headers=SIPREC, content_type=content_type
    )
    assert dialog.answer.status == status, dialog.answer
    assert (dialog.answer.headers.get("warning") or "").startswith("399 ")
    assert "passwd" not in str(dialog.answer.headers.get("warning")) + dialog.answer.body.decode()
    assert await streams_of(pool, call["id"]) == 0


# -- baresip: a real UA -----------------------------------------------------------------------


async def test_baresip_dials_the_recorder_and_the_download_holds_what_it_played(
    client: TestClient, owner: Customer, pool: asyncpg.Pool, tmp_path: Path
) -> None:
    """baresip plays a WAV whose samples are exact A-law levels: its encoder sends the very
    bytes they came from, and the stored audio holds them in order, byte for byte."""
    alaw = bytes((n * 37 + n // 7) % 256 for n in range(8000 * 2))  # two seconds, varied
    samples = [alaw_to_linear(b) for b in alaw]
    await asyncio.to_thread(write_wav, tmp_path / "in.wav", samples)
    await asyncio.to_thread(write_config, tmp_path, tmp_path / "in.wav", "PCMA")
    call = await consented_call(client, owner)
    rec = await start_recording(client, owner, call["id"])

    printed = await dial(tmp_path, call["media"]["sip_uri"], seconds=5)

    await eventually(lambda: status_is(pool, rec["id"], "completed"), timeout_s=10)
    stored = await stored_audio(client, rec["id"])
    drops = client.app[SIP].sessions.rtp_drops()
    assert alaw[:8000] in stored, f"{drops} {printed[-3000:]}"
    start = stored.index(alaw[:8000])
    assert stored[start : start + len(alaw)] == alaw


# -- floods -----------------------------------------------------------------------------------


FLOODER = """
import asyncio, socket, struct, sys
port, seconds = int(sys.argv[1]), float(sys.argv[2])
packet = struct.pack("!BBHII", 0x80, 8, 1, 1, 99) + bytes(160)

async def main():
    loop = asyncio.get_running_loop()
    done = loop.create_future()
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    ticks, start = int(seconds * 100), loop.time()

    def tick(n):  # 200 packets every 10 ms, on the loop's clock: 20,000 a second
        for _ in range(200):
            s.sendto(packet, ("127.0.0.1", port))
        if n + 1 == ticks:
            done.set_result(None)

    for n in range(ticks):
        loop.call_at(start + n * 0.01, tick, n)
    await done
    s.close()

asyncio.run(main())
"""


async def test_an_rtp_flood_of_20000_packets_a_second_is_dropped_and_the_call_goes_on(
    client: TestClient, owner: Customer, pool: asyncpg.Pool, caller: SipCaller
) -> None:
    """An attacker's process floods the call's port from 127.0.0.1, the offer's own address,
    so the source check lets it through: the node reads the port once a tick, so the
    kernel's socket buffer drops most of it (counted, `socket_buffer`) and the port's
    flood budget the rest it reads (`rate`); nothing of it is kept, the memory stays flat,
    and the call goes on whole once the node has read the flood's last datagrams. During
    the flood the socket buffer, shared with the genuine stream, may drop some genuine
    packets before the service sees them."""
    call = await consented_call(client, owner)
    rec = await start_recording(client, owner, call["id"])
    genuine = await rtp_from()
    try:
        dialog = await caller.invite(call["media"]["token"], offer(genuine.port))
        genuine.to = ("127.0.0.1", dialog.rtp_ports[0])
        await genuine.play(VOICE, 5)  # latched before the flood
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        flood = await asyncio.create_subprocess_exec(
            sys.executable, "-c", FLOODER, str(dialog.rtp_ports[0]), "1.0"
        )
        await genuine.play(VOICE, 50, every_s=0.02)
        assert await flood.wait() == 0
        # The flood's last datagrams may still fill the socket's buffer until the node's
        # next tick reads them: the stream goes on whole once a genuine packet gets through.
        through = frames_received(client, call["id"])

        def got_through() -> bool:
            genuine.send(VOICE)
            return frames_received(client, call["id"]) > through

        await eventually(got_through)
        sent = frames_received(client, call["id"])
        await genuine.play(VOICE[::-1], 25, every_s=0.02)
        await eventually(lambda: frames_received(client, call["id"]) >= sent + 25)
        assert (await caller.in_dialog(dialog, "BYE")).status == 200
        await eventually(lambda: status_is(pool, rec["id"], "completed"))
    finally:
        genuine.close()

    audio = await stored_audio(client, rec["id"])
    assert audio.startswith(VOICE * 5) and audio.endswith(VOICE[::-1] * 25)
    # Never the flood's zeros; a genuine packet the kernel dropped is a hole of silence.
    assert set(audio[: -25 * 160]) <= set(VOICE) | {0xD5}
    drops = client.app[SIP].sessions.rtp_drops()
    assert drops["rate"] > 0 and drops["rate"] + drops["socket_buffer"] >= 10_000, drops
    grown_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before
    assert grown_kib < 20 * 1024  # nothing of the flood is kept


async def test_500_invites_in_a_second_past_capacity_get_503_and_none_is_half_set_up(
    settings: Settings, pool: asyncpg.Pool
) -> None:
    port = free_udp_port(even=True)
    app = create_app(settings.replace(rtp_ports=(20000, 20099)), run_workers=False)
    async with TestClient(ServiceServer(app)) as client:
        owner = await new_customer(client)
        calls = await asyncio.gather(*(consented_call(client, owner) for _ in range(500)))
        callers = [await SipCaller(app[SIP].port).open() for _ in range(500)]
        try:
            # Each as a UAC waits for its final answer: up to Timer B (64 T1, 32 s), not
            # the helper's 10 s, which a burst of 500 on two busy cores once outlasted.
            answers = await asyncio.gather(
                *(
                    c.invite(call["media"]["token"], offer(port), timeout_s=TIMER_B_S)
                    for c, call in zip(callers, calls, strict=True)
                )
            )
        except BaseException:
            for c in callers:
                c.close()
            raise
        statuses = Counter(d.answer.status for d in answers)
        assert set(statuses) <= {200, 503} and statuses[200] <= 50, statuses
        assert statuses[503] >= 450
        assert all(d.answer.headers.get("retry-after") for d in answers if d.answer.status == 503)
        async with pool.acquire() as conn:
            streaming = await conn.fetchval("SELECT count(*) FROM media_streams")
        assert streaming == statuses[200] == len(app[SIP].sessions.dialogs)
        for c, d in zip(callers, answers, strict=True):
            if d.answer.status == 200:
                assert (await c.in_dialog(d, "BYE")).status == 200
            c.close()
        await eventually(lambda: not app[SIP].sessions.dialogs)
        assert app[SIP].sessions.ports.free == app[SIP].sessions.ports.size == 50


JOINER = "+442079460958"


@pytest.mark.parametrize("how", ["re-INVITE", "UPDATE"])
async def test_a_metadata_update_naming_a_new_participant_pauses_until_they_consent(
    client: TestClient, owner: Customer, pool: asyncpg.Pool, caller: SipCaller, how: str
) -> None:
    """A transfer mid-call (SIP.md 4.3, 4.4): the update's new participant is a pending
    counterpart, the recording pauses as it does for one added over the API, and nothing
    they say is kept until they consent (which resumes it, as over the API)."""
    call = await consented_call(client, owner)
    other = call["counterparts"][0]["number"]
    sdp = offer(40000, streams=2, label=True)
    kind = "multipart/mixed;boundary=b1"
    dialog = await caller.invite(
        call["media"]["token"],
        siprec_body(sdp, two_party_metadata(call["from"], other)),
        headers=SIPREC,
        content_type=kind,
    )
    rec = await start_recording(client, owner, call["id"])
    await eventually(lambda: writer_of(client, call["id"]) is not None)
    customer, party = [await RtpSender(p).open() for p in dialog.rtp_ports]

    async def both(payload: bytes) -> None:
        await asyncio.gather(
            customer.play(payload, 25, every_s=0.02), party.play(payload, 25, every_s=0.02)
        )

    await both(VOICE)
    # All in before the update: a packet the recorder reads after the pause is not kept.
    await eventually(lambda: frames_received(client, call["id"]) >= 50)
    joined = (
        '<recording xmlns="urn:ietf:params:xml:ns:recording:1"><datamode>partial</datamode>'
        f'<participant participant_id="c"><nameID aor="tel:{JOINER}"/></participant>'
        '<participantstreamassoc participant_id="c"><send>s2</send></participantstreamassoc>'
        "</recording>"
    )
    if how == "re-INVITE":
        answer = await caller.in_dialog(
            dialog, "INVITE", siprec_body(bump(sdp), joined), content_type=kind
        )
    else:
        answer = await caller.in_dialog(
            dialog, "UPDATE", joined, content_type="application/rs-metadata+xml"
        )
    assert answer.status == 200, answer

    got = await (await client.get(f"/v1/recordings/{rec['id']}", headers=owner.auth)).json()
    assert (got["status"], got["pause_reason"]) == ("paused", "new_counterpart")
    now = await (await client.get(f"/v1/calls/{call['id']}", headers=owner.auth)).json()
    newcomer = next(c for c in now["counterparts"] if c["number"] == JOINER)
    assert newcomer["consent"] == "pending" and len(now["counterparts"]) == 2
    await eventually(lambda: not writer_of(client, call["id"]).recording)
    await both(MARKER)  # the newcomer has not consented: nothing of this is kept
    await decide(client, owner, call["id"], newcomer["id"], "granted")  # resumes it (R2)
    await eventually(lambda: writer_of(client, call["id"]).recording)
    await both(VOICE[::-1])
    assert (await caller.in_dialog(dialog, "BYE")).status == 200
    await eventually(lambda: status_is(pool, rec["id"], "completed"))

    audio = await stored_audio(client, rec["id"])
    assert MARKER[:16] not in audio
    for channel in (audio[0::2], audio[1::2]):
        assert VOICE * 25 in channel, frames_found(channel, VOICE)
        assert VOICE[::-1] * 25 in channel, frames_found(channel, VOICE[::-1])
    customer.close()
    party.close()


async def test_an_update_handing_the_streams_to_the_other_sides_swaps_their_channels(
    client: TestClient, owner: Customer, pool: asyncpg.Pool, caller: SipCaller
) -> None:
    """SIP.md 4.4: re-map channels from the update's arrival. After it each stream is
    stored on the side of the participant the update says sends it: what a leg sent
    before stays in its old channel, what it sends after lands in the other one."""
    call = await consented_call(client, owner)
    other = call["counterparts"][0]["number"]
    sdp = offer(40000, streams=2, label=True)
    dialog = await caller.invite(
        call["media"]["token"],
        siprec_body(sdp, two_party_metadata(call["from"], other)),
        headers=SIPREC,
        content_type="multipart/mixed;boundary=b1",
    )
    rec = await start_recording(client, owner, call["id"])
    await eventually(lambda: writer_of(client, call["id"]) is not None)
    first, second = [await rtp_from(p) for p in dialog.rtp_ports]

    async def both(one: bytes, two: bytes, frames: int) -> None:
        await asyncio.gather(first.play(one, 25, every_s=0.02), second.play(two, 25, every_s=0.02))
        await eventually(lambda: frames_received(client, call["id"]) >= frames)

    await both(VOICE, MARKER, 50)
    swapped = (
        '<recording xmlns="urn:ietf:params:xml:ns:recording:1"><datamode>partial</datamode>'
        '<participantstreamassoc participant_id="a"><send>s2</send></participantstreamassoc>'
        '<participantstreamassoc participant_id="b"><send>s1</send></participantstreamassoc>'
        "</recording>"
    )
    answer = await caller.in_dialog(
        dialog, "UPDATE", swapped, content_type="application/rs-metadata+xml"
    )
    assert answer.status == 200, answer
    await both(VOICE[::-1], MARKER[::-1], 100)
    assert (await caller.in_dialog(dialog, "BYE")).status == 200
    await eventually(lambda: status_is(pool, rec["id"], "completed"))

    audio = await stored_audio(client, rec["id"])
    channels = [audio[0::2], audio[1::2]]
    was_first = next(c for c in channels if VOICE * 25 in c)
    was_second = next(c for c in channels if c is not was_first)
    assert MARKER * 25 in was_second
    # Positions follow each stream's RTP timestamps from its own anchor, which may lie a
    # sample from the other's: after the swap a stream's first frame can meet the last
    # sample of the other's on its new channel, and the first to arrive keeps it.
    assert was_first.count(MARKER[::-1]) >= 24 and was_second.count(VOICE[::-1]) >= 24
    assert was_first.index(VOICE * 25) < was_first.index(MARKER[::-1])
    first.close()
    second.close()


@pytest.mark.timeout(90)
async def test_a_stream_silent_for_30_seconds_ends_with_our_bye_like_a_vanished_websocket(
    client: TestClient, owner: Customer, pool: asyncpg.Pool, caller: SipCaller
) -> None:
    """The production timers, side by side in one half minute:
    - 30 s without RTP (SILENCE_S): the SBC died without a BYE. Our BYE goes to it, resent
      after T1 when the first goes unanswered (Timer E), and the recording completes with
      what came, as when a WebSocket vanishes;
    - a 200 never ACKed: resent at T1, doubling to T2, and after Timer H (32 s) given up
      with our BYE, the dialog gone (RFC 3261 §13.3.1.4)."""
    call = await consented_call(client, owner)
    rec = await start_recording(client, owner, call["id"])
    unacked_call = await consented_call(client, owner)
    vanished = await SipCaller(client.app[SIP].port).open()
    rtp, alive = await rtp_from(), await rtp_from()
    keep_alive: asyncio.Task[None] | None = None
    loop = asyncio.get_running_loop()
    try:
        dialog = await caller.invite(call["media"]["token"], offer(rtp.port))
        rtp.to = ("127.0.0.1", dialog.rtp_ports[0])
        unacked = await vanished.invite(
            unacked_call["media"]["token"], offer(rtp.port + 2), ack=False
        )
        answered_at = loop.time()
        resent_200s: list[tuple[int, float]] = []

        async def until_our_bye() -> tuple[Request, float]:
            """What reaches the caller that never ACKed, timed as it comes, up to our BYE."""
            while True:
                message = await vanished.receive(timeout_s=45)
                if isinstance(message, Request):
                    vanished.answer(message, 200, "OK")
                    return message, loop.time() - answered_at
                resent_200s.append((message.status, loop.time() - answered_at))

        given_up = asyncio.create_task(until_our_bye())
        # A packet a second keeps its RTP alive: what ends it is the missing ACK alone.
        alive.to = ("127.0.0.1", unacked.rtp_ports[0])
        keep_alive = asyncio.create_task(alive.play(VOICE, 45, every_s=1.0))
        await rtp.play(VOICE, 25)
        quiet_from = loop.time()

        first = await caller.receive(timeout_s=45)  # the recorder's own request, unanswered
        waited_s = loop.time() - quiet_from
        again = await caller.receive(timeout_s=5)
        resent_after_s = loop.time() - quiet_from - waited_s
        caller.answer(again, 200, "OK")  # type: ignore[arg-type]
        await eventually(lambda: status_is(pool, rec["id"], "completed"))

        ours, given_up_s = await given_up
    finally:
        rtp.close()
        vanished.close()
        alive.close()  # its play ends, cancelled, at the next packet
        if keep_alive is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await keep_alive
    assert isinstance(first, Request) and first.method == "BYE", first
    assert first.call_id == dialog.call_id and "no RTP" in (first.headers.get("reason") or "")
    assert 29 <= waited_s <= 35, waited_s
    assert isinstance(again, Request) and again.method == "BYE"
    assert again.headers.get("via") == first.headers.get("via")  # the same transaction
    assert again.headers.get("cseq") == first.headers.get("cseq")
    assert 0.4 <= resent_after_s <= 1.5, resent_after_s  # T1
    assert await stored_audio(client, rec["id"]) == VOICE * 25

    assert ours.method == "BYE" and ours.call_id == unacked.call_id
    assert "no ACK" in (ours.headers.get("reason") or "")
    assert 31 <= given_up_s <= 36, given_up_s  # Timer H, 64 T1
    gaps = [b - a for a, b in itertools.pairwise([0.0, *(at for _, at in resent_200s)])]
    assert {status for status, _ in resent_200s} == {200}
    assert 0.4 <= gaps[0] <= 0.8 and 0.8 <= gaps[1] <= 1.4, gaps  # T1, then doubling
    assert max(gaps) <= 4.6 and len(resent_200s) >= 8, gaps  # capped at T2 (4 s)
    assert client.app[SIP].sessions.dialogs == {}


@pytest.mark.parametrize(
    ("headers", "status", "expires", "required"),
    [
        (("Session-Expires: 60", "Supported: timer"), 422, None, None),
        (("Session-Expires: 1800;refresher=uas", "Supported: timer, 100rel"), 200, "1800", "timer"),
        (("Session-Expires: 1800",), 200, None, None),  # no timer support: no timer at all
    ],
    ids=["too-small", "caller-refreshes", "without-timer-support"],
)
async def test_session_timers_make_the_caller_refresh_and_refuse_short_intervals(
    client: TestClient,
    owner: Customer,
    caller: SipCaller,
    headers: tuple[str, ...],
    status: int,
    expires: str | None,
    required: str | None,
) -> None:
    """RFC 4028 (SIP.md 2.4): the recorder never refreshes a session itself."""
    call = await consented_call(client, owner)
    dialog = await caller.invite(call["media"]["token"], offer(40000), headers=headers)
    answer = dialog.answer
    assert answer.status == status, answer
    if status == 422:
        assert answer.headers.get("min-se") == "90"
        return
    got = answer.headers.get("session-expires")
    assert (got.split(";")[0] if got else None) == expires
    if expires:
        assert got == f"{expires};refresher=uac"
    assert answer.headers.get("require") == required
    assert (await caller.in_dialog(dialog, "BYE")).status == 200


async def test_a_cancel_before_the_answer_ends_the_invite_487_and_leaves_nothing_set_up(
    client: TestClient, owner: Customer, pool: asyncpg.Pool, caller: SipCaller
) -> None:
    """RFC 3261 §9.2 (SIP.md 2.4): a CANCEL while the INVITE is still being set up gets its
    own 200, and the INVITE ends 487; the stream it was claiming is let go, its ports go
    back, and the call's token still works for the INVITE that follows.

    The INVITE is held mid-setup by the test's own uncommitted claim on the call's
    media_streams row (the server's insert waits on it), not by a sleep."""
    call = await consented_call(client, owner)
    sessions = client.app[SIP].sessions
    free = sessions.ports.free
    uri = f"sip:{call['media']['token']}@127.0.0.1:{caller.target[1]}"
    call_id, from_tag = "cancelled-invite@127.0.0.1", "c1"
    async with pool.acquire() as blocker:
        held = blocker.transaction()
        await held.start()
        await blocker.execute(
            "INSERT INTO media_streams (call_id, node_id, dialect, connected_at)"
            " VALUES ($1, 'the-test', 'sip', now())",
            call["id"],
        )
        branch = caller.request(
            "INVITE",
            uri,
            call_id=call_id,
            from_tag=from_tag,
            to=f"<{uri}>",
            cseq=1,
            body=offer(40000),
        )

        async def insert_waits() -> bool:
            waiting = await pool.fetchval(
                "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'"
                " AND query LIKE 'INSERT INTO media_streams%'"
            )
            return bool(waiting)

        await eventually(insert_waits)
        caller.request(
            "CANCEL",
            uri,
            call_id=call_id,
            from_tag=from_tag,
            to=f"<{uri}>",
            cseq=1,
            branch=branch,
        )
        cancel = await caller.final("CANCEL")
        assert cancel.status == 200
        await held.rollback()  # the server's claim goes ahead, and finds the CANCEL
    answered = await caller.final("INVITE")
    assert (answered.status, answered.reason) == (487, "Request Terminated")
    caller.request(
        "ACK",
        uri,
        call_id=call_id,
        from_tag=from_tag,
        to=answered.headers.get("to") or "",
        cseq=1,
        branch=branch,
    )
    assert not sessions.dialogs
    await eventually(lambda: sessions.ports.free == free)
    streams = await pool.fetchval(
        "SELECT count(*) FROM media_streams WHERE call_id = $1", call["id"]
    )
    assert streams == 0
    dialog = await caller.invite(call["media"]["token"], offer(40000))
    assert dialog.answer.status == 200  # nothing of the cancelled INVITE is in its way
    assert (await caller.in_dialog(dialog, "BYE")).status == 200


async def test_a_cancel_after_the_200_changes_nothing_and_one_for_no_invite_is_481(
    client: TestClient, owner: Customer, caller: SipCaller
) -> None:
    """RFC 3261 §9.2 (SIP.md 2.4): once answered, a CANCEL is 200 with no effect (a BYE
    ends the call); a CANCEL matching no INVITE is 481."""
    call = await consented_call(client, owner)
    dialog = await caller.invite(call["media"]["token"], offer(40000))
    assert dialog.answer.status == 200

    def cancel(call_id: str, from_tag: str) -> None:
        caller.request(
            "CANCEL",
            dialog.uri,
            call_id=call_id,
            from_tag=from_tag,
            to=f"<{dialog.uri}>",
            cseq=1,
        )

    cancel(dialog.call_id, dialog.from_tag)
    assert (await caller.final("CANCEL")).status == 200
    assert len(client.app[SIP].sessions.dialogs) == 1  # still up
    cancel("no-such-call@127.0.0.1", "x1")
    assert (await caller.final("CANCEL")).status == 481
    assert (await caller.in_dialog(dialog, "BYE")).status == 200
