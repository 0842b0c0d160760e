"""SIP trunks (issue 13, API.md "SIP and SIPREC ingest", SIP.md 2.5): digest from the
allowed sources, and a SIPREC session that creates its own call under the same gate.

The digest responses here are computed with hashlib from RFC 3261 §22.4's
formulas, not with the service's own module, and baresip answers a real
challenge with its own stack.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import re
import secrets
import time
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from aiohttp.test_utils import TestClient

from telephony.media.wav import alaw_to_linear
from telephony.web.appkeys import KEYS, SIP
from tests.conftest import Customer, decide, new_customer
from tests.service.test_sip_calls import SIPREC, siprec_body, two_party_metadata
from tests.support.baresip_peer import dial, write_config, write_wav
from tests.support.media import MARKER, VOICE, frames_received, writer_of
from tests.support.recordings import status_is, stored_audio
from tests.support.sip import Dialog, RtpSender, SipCaller, offer
from tests.support.waiting import eventually

CUSTOMER, OTHER = "+48221234567", "+48601234567"


async def new_trunk(
    client: TestClient,
    owner: Customer,
    sources: list[str] | None = None,
    algorithms: list[str] | None = None,
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "name": "Main SBC",
        "allowed_sources": sources or ["127.0.0.0/8"],
        "numbers": [CUSTOMER],
    }
    if algorithms:
        body["digest_algorithms"] = algorithms
    resp = await client.post("/v1/sip-trunks", json=body, headers=owner.auth)
    assert resp.status == 201, await resp.text()
    return dict(await resp.json())


@pytest.fixture
async def caller(client: TestClient) -> Any:
    made = await SipCaller(client.app[SIP].port).open()
    yield made
    made.close()


def challenge_of(answer: Any, algorithm: str) -> dict[str, str]:
    for value in answer.headers.get_all("www-authenticate"):
        params = dict(re.findall(r'(\w+)="?([^",]+)"?', value))
        if params.get("algorithm") == algorithm:
            return params
    raise AssertionError(
        f"no {algorithm} challenge in {answer.headers.get_all('www-authenticate')}"
    )


def authorization(
    challenge: dict[str, str], username: str, password: str, uri: str, *, nc: int = 1
) -> str:
    """RFC 3261 §22.4 with qop=auth (RFC 8760 for SHA-256), written out here."""
    algorithm = challenge["algorithm"]
    h = hashlib.sha256 if algorithm == "SHA-256" else hashlib.md5

    def hx(text: str) -> str:
        return h(text.encode()).hexdigest()

    cnonce, count = secrets.token_hex(8), f"{nc:08x}"
    ha1 = hx(f"{username}:{challenge['realm']}:{password}")
    ha2 = hx(f"INVITE:{uri}")
    response = hx(f"{ha1}:{challenge['nonce']}:{count}:{cnonce}:auth:{ha2}")
    return (
        f'Authorization: Digest username="{username}", realm="{challenge["realm"]}", '
        f'nonce="{challenge["nonce"]}", uri="{uri}", response="{response}", '
        f'algorithm={algorithm}, qop=auth, nc={count}, cnonce="{cnonce}"'
    )


async def trunk_invite(
    caller: SipCaller,
    trunk: dict[str, Any],
    body: str,
    *,
    algorithm: str = "MD5",
    password: str | None = None,
    siprec: bool = True,
) -> tuple[Dialog, Dialog]:
    """A trunk's INVITE as an SBC sends it: challenged, then retried with credentials."""
    extra = SIPREC if siprec else ()
    kind = "multipart/mixed;boundary=b1" if siprec else "application/sdp"
    first = await caller.invite(trunk["username"], body, headers=extra, content_type=kind)
    assert first.answer.status == 401, first.answer
    challenge = challenge_of(first.answer, algorithm)
    credentials = authorization(
        challenge, trunk["username"], password or trunk["password"], first.uri
    )
    second = await caller.invite(
        trunk["username"], body, headers=(*extra, credentials), content_type=kind, after=first
    )
    return first, second


# -- the API -----------------------------------------------------------------------------------


async def test_a_trunk_shows_its_password_once_and_lists_without_it(
    client: TestClient, owner: Customer
) -> None:
    trunk = await new_trunk(client, owner, ["198.51.100.0/24", "2001:db8::1"])
    assert trunk["username"].startswith("trk_") and len(trunk["password"]) >= 32
    assert trunk["allowed_sources"] == ["198.51.100.0/24", "2001:db8::1/128"]
    assert trunk["sip_uri"] == f"sip:{trunk['username']}@127.0.0.1:{client.app[SIP].port}"
    listed = await (await client.get("/v1/sip-trunks", headers=owner.auth)).json()
    assert [t["id"] for t in listed["items"]] == [trunk["id"]]
    assert "password" not in listed["items"][0]
    assert trunk["password"] not in str(listed)
    gone = await client.delete(f"/v1/sip-trunks/{trunk['id']}", headers=owner.auth)
    assert gone.status == 204
    again = await client.delete(f"/v1/sip-trunks/{trunk['id']}", headers=owner.auth)
    assert again.status == 404


@pytest.mark.parametrize(
    "body",
    [
        {"name": "x", "allowed_sources": ["not-a-network"]},
        {"name": "x", "allowed_sources": []},
        {"name": "x", "allowed_sources": ["10.0.0.0/33"]},
        {"name": "", "allowed_sources": ["10.0.0.0/8"]},
        {"name": "x", "allowed_sources": ["10.0.0.0/8"], "numbers": ["123"]},
        {"name": "x", "allowed_sources": "10.0.0.0/8"},
        {"name": "x", "allowed_sources": ["10.0.0.0/8"], "password": "mine"},
        {"name": "x", "allowed_sources": ["10.0.0.0/8"], "digest_algorithms": ["SHA1"]},
        {"name": "x", "allowed_sources": ["10.0.0.0/8"], "digest_algorithms": []},
    ],
    ids=[
        "not-cidr",
        "none",
        "prefix-33",
        "no-name",
        "bad-number",
        "not-a-list",
        "own-password",
        "unknown-algorithm",
        "no-algorithm",
    ],
)
async def test_bad_trunk_bodies_are_422(
    client: TestClient, owner: Customer, body: dict[str, Any]
) -> None:
    resp = await client.post("/v1/sip-trunks", json=body, headers=owner.auth)
    assert resp.status == 422, await resp.text()
    assert resp.content_type == "application/problem+json"


async def test_another_account_cannot_see_or_delete_a_trunk(
    client: TestClient, owner: Customer
) -> None:
    trunk = await new_trunk(client, owner)
    stranger = await new_customer(client)
    listed = await (await client.get("/v1/sip-trunks", headers=stranger.auth)).json()
    assert listed["items"] == []
    resp = await client.delete(f"/v1/sip-trunks/{trunk['id']}", headers=stranger.auth)
    assert resp.status == 404


# -- digest ------------------------------------------------------------------------------------


async def test_an_invite_without_credentials_is_challenged_sha256_first(
    client: TestClient, owner: Customer, caller: SipCaller
) -> None:
    trunk = await new_trunk(client, owner)
    first = await caller.invite(trunk["username"], offer(40000))
    assert first.answer.status == 401
    offered = first.answer.headers.get_all("www-authenticate")
    assert [re.search(r"algorithm=([\w-]+)", v)[1] for v in offered] == ["SHA-256", "MD5"]
    assert all('qop="auth"' in v for v in offered)


@pytest.mark.parametrize("algorithm", ["MD5", "SHA-256"])
async def test_a_trunks_siprec_session_creates_its_call_and_records_only_after_consent_and_start(
    client: TestClient,
    owner: Customer,
    pool: asyncpg.Pool,
    caller: SipCaller,
    algorithm: str,
) -> None:
    trunk = await new_trunk(client, owner)
    body = siprec_body(offer(40000, streams=2, label=True), two_party_metadata(CUSTOMER, OTHER))
    _, dialog = await trunk_invite(caller, trunk, body, algorithm=algorithm)
    assert dialog.answer.status == 200, dialog.answer

    calls = (await (await client.get("/v1/calls", headers=owner.auth)).json())["items"]
    assert len(calls) == 1
    call = calls[0]
    assert (call["direction"], call["from"], call["to"]) == ("outbound", CUSTOMER, OTHER)
    assert [(c["number"], c["consent"]) for c in call["counterparts"]] == [(OTHER, "pending")]
    customer_side = await RtpSender(dialog.rtp_ports[0]).open()
    other_side = await RtpSender(dialog.rtp_ports[1]).open()
    await asyncio.gather(customer_side.play(MARKER, 20), other_side.play(MARKER, 20))
    await eventually(lambda: frames_received(client, call["id"]) >= 40)  # dropped in memory
    await decide(client, owner, call["id"], call["counterparts"][0]["id"], "granted")
    resp = await client.post(f"/v1/calls/{call['id']}/recordings", json={}, headers=owner.auth)
    assert resp.status == 201, await resp.text()
    rec = await resp.json()
    await eventually(lambda: writer_of(client, call["id"]) is not None)
    await asyncio.gather(
        customer_side.play(VOICE, 50, every_s=0.02), other_side.play(VOICE[::-1], 50, every_s=0.02)
    )
    assert (await caller.in_dialog(dialog, "BYE")).status == 200
    await eventually(lambda: status_is(pool, rec["id"], "completed"))

    audio = await stored_audio(client, rec["id"])
    assert MARKER[:16] not in audio
    assert VOICE * 50 in audio[0::2] and VOICE[::-1] * 50 in audio[1::2]  # customer, other
    got = await (await client.get(f"/v1/recordings/{rec['id']}", headers=owner.auth)).json()
    assert got["source"] == "siprec"
    async with pool.acquire() as conn:
        logged = await conn.fetch(
            "SELECT outcome, details FROM security_log WHERE event = 'sip_trunk.auth'"
        )
    assert [r["outcome"] for r in logged] == ["success"]
    assert trunk["password"] not in str([dict(r) for r in logged])
    customer_side.close()
    other_side.close()


async def test_a_wrong_password_is_challenged_again_then_403_and_nothing_is_created(
    client: TestClient, owner: Customer, pool: asyncpg.Pool, caller: SipCaller
) -> None:
    trunk = await new_trunk(client, owner)
    body = siprec_body(offer(40000, streams=2, label=True), two_party_metadata(CUSTOMER, OTHER))
    _, second = await trunk_invite(caller, trunk, body, password="not-the-password")
    assert second.answer.status == 401  # once more: a mistyped password may be corrected
    challenge = challenge_of(second.answer, "MD5")
    credentials = authorization(challenge, trunk["username"], "still-wrong", second.uri)
    third = await caller.invite(
        trunk["username"],
        body,
        headers=(*SIPREC, credentials),
        content_type="multipart/mixed;boundary=b1",
        after=second,
    )
    assert third.answer.status == 403
    assert (await (await client.get("/v1/calls", headers=owner.auth)).json())["items"] == []
    async with pool.acquire() as conn:
        reasons = await conn.fetch(
            "SELECT details->>'reason' AS r FROM security_log WHERE event = 'sip_trunk.auth'"
        )
    assert [r["r"] for r in reasons] == ["wrong-response", "wrong-response"]


@pytest.mark.parametrize(
    ("case", "status"),
    [("source-outside", 403), ("unknown-username", 404), ("replayed-nc", 401), ("stale", 401)],
)
async def test_digest_refusals(
    client: TestClient, owner: Customer, caller: SipCaller, case: str, status: int
) -> None:
    trunk = await new_trunk(client, owner, ["203.0.113.0/24"] if case == "source-outside" else None)
    body = offer(40000)
    first = await caller.invite(trunk["username"], body)
    challenge = challenge_of(first.answer, "MD5")
    username = "trk_nobody" if case == "unknown-username" else trunk["username"]
    if case == "stale":  # a nonce the service made, six minutes ago
        sealed = client.app[KEYS].seal_record(
            "sip-digest-nonce", b"%f" % (time.time() - 360), "sip"
        )
        challenge = {**challenge, "nonce": base64url(sealed)}
    credentials = authorization(challenge, username, trunk["password"], first.uri)
    if case == "replayed-nc":
        second = await caller.invite(trunk["username"], body, headers=(credentials,), after=first)
        assert second.answer.status == 400  # authenticated; From and To name no numbers
    again = await caller.invite(username, body, headers=(credentials,), after=first)
    assert again.answer.status == status, again.answer
    if case == "stale":
        assert "stale=true" in str(again.answer.headers.get_all("www-authenticate"))
    assert (await (await client.get("/v1/calls", headers=owner.auth)).json())["items"] == []


def base64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


# -- baresip: a real digest client ---------------------------------------------------------------


async def test_baresip_answers_the_challenge_and_its_call_records_once_consented(
    client: TestClient, owner: Customer, pool: asyncpg.Pool, tmp_path: Path
) -> None:
    """A plain SIP call from a PBX on a trunk: baresip's account is the customer's number,
    it dials the counterpart's at the recorder, and retries the challenge with its own
    digest stack. Consent and the start come through the API while it talks."""
    # MD5 alone: libre 1.0 gives up on any SHA-256 challenge (ENOSYS), even a second one.
    trunk = await new_trunk(client, owner, algorithms=["MD5"])
    assert trunk["digest_algorithms"] == ["MD5"]
    alaw = bytes((n * 53 + n // 11) % 256 for n in range(8000 * 4))
    await asyncio.to_thread(write_wav, tmp_path / "in.wav", [alaw_to_linear(b) for b in alaw])
    account = (
        f"<sip:{CUSTOMER}@127.0.0.1>;regint=0;audio_codecs=PCMA;"
        f"auth_user={trunk['username']};auth_pass={trunk['password']}"
    )
    await asyncio.to_thread(write_config, tmp_path, tmp_path / "in.wav", "PCMA", account=account)
    phone = asyncio.create_task(
        dial(tmp_path, f"sip:{OTHER}@127.0.0.1:{client.app[SIP].port}", seconds=8)
    )

    async def the_call() -> dict[str, Any] | None:
        listed = (await (await client.get("/v1/calls", headers=owner.auth)).json())["items"]
        return listed[0] if listed else None

    try:
        call = await eventually(the_call)
    except AssertionError:
        raise AssertionError((await phone)[-3000:]) from None  # what baresip made of it
    assert (call["direction"], call["from"], call["to"]) == ("outbound", CUSTOMER, OTHER)
    await decide(client, owner, call["id"], call["counterparts"][0]["id"], "granted")
    resp = await client.post(f"/v1/calls/{call['id']}/recordings", json={}, headers=owner.auth)
    assert resp.status == 201, await resp.text()
    rec = await resp.json()
    printed = await phone
    await eventually(lambda: status_is(pool, rec["id"], "completed"), timeout_s=10)

    stored = await stored_audio(client, rec["id"])
    assert len(stored) > 8000, printed[-2000:]  # more than a second of it, after the start
    # Every byte as played, in order; then the silence its source gives after the file
    # ends, until it hangs up.
    assert stored.rstrip(b"\xd5") in alaw, printed[-2000:]
