"""Signed receipts, issue 14 part 5 (API.md "Signed receipts"): a consent receipt and a
deletion receipt, each a detached EdDSA JWS that joserfc, a published JOSE library,
verifies with the JWKS alone; a changed field fails; a rotated key still verifies what
it signed."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from datetime import UTC, datetime
from typing import Any

import asyncpg
import pytest
from aiohttp.test_utils import TestClient
from joserfc import jws
from joserfc.errors import BadSignatureError
from joserfc.jwk import KeySet

from storage.keys import signing
from storage.keys.hierarchy import MasterKeys
from telephony.web.appkeys import KEYS
from tests.conftest import Customer, consented_call, new_customer, start_recording
from tests.support.recordings import record

JWKS = "/.well-known/telephony-keys.json"
ALGORITHMS = ["EdDSA"]  # API.md's `alg`; RFC 9864 names it "Ed25519" now, and joserfc warns
pytestmark = pytest.mark.filterwarnings("ignore:EdDSA is deprecated:joserfc.errors.SecurityWarning")


async def key_set(client: TestClient) -> KeySet:
    resp = await client.get(JWKS)  # no credentials: anyone holding a receipt may check it
    assert resp.status == 200, await resp.text()
    assert resp.content_type == "application/jwk-set+json"
    return KeySet.import_key_set(await resp.json())


def unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def verified(keys: KeySet, body: dict[str, Any]) -> dict[str, Any]:
    """The receipt's statement once its signature holds over the bytes it names
    (BadSignatureError otherwise)."""
    payload = body["payload"]
    header, between, signature = body["signature"].split(".")
    assert between == ""  # detached (RFC 7515 appendix F): the payload travels beside it
    jws.deserialize_compact(f"{header}.{payload}.{signature}", keys, algorithms=ALGORITHMS)
    stated = json.loads(unb64(payload))
    assert stated == body["receipt"]  # the readable copy is what was signed
    return dict(stated)


def kid_of(body: dict[str, Any]) -> str:
    return str(json.loads(unb64(body["signature"].split(".")[0]))["kid"])


async def consent_receipt(client: TestClient, who: Customer, call_id: str, event_id: str) -> Any:
    return await client.get(f"/v1/calls/{call_id}/consents/{event_id}/receipt", headers=who.auth)


async def events_of(client: TestClient, who: Customer, call_id: str) -> list[dict[str, Any]]:
    resp = await client.get(f"/v1/calls/{call_id}/consents", headers=who.auth)
    return list((await resp.json())["items"])


# -- the JWKS -------------------------------------------------------------------------------


async def test_the_jwks_is_public_and_each_kid_is_its_keys_thumbprint(client: TestClient) -> None:
    keys = await key_set(client)

    assert len(keys.keys) == 1
    key = keys.keys[0]
    assert (key.key_type, key.as_dict()["crv"]) == ("OKP", "Ed25519")
    assert key.kid == key.thumbprint()  # RFC 7638: anyone can recompute it
    assert "d" not in key.as_dict(private=False)


# -- consent receipts ---------------------------------------------------------------------------


async def test_a_consent_receipt_verifies_and_shows_the_grant_came_before_the_start(
    client: TestClient, owner: Customer, pool: asyncpg.Pool
) -> None:
    call = await consented_call(client, owner)
    rec = await start_recording(client, owner, call["id"])
    [grant] = await events_of(client, owner, call["id"])

    resp = await consent_receipt(client, owner, call["id"], grant["id"])

    assert resp.status == 200, await resp.text()
    body = await resp.json()
    stated = verified(await key_set(client), body)
    counterpart = call["counterparts"][0]
    salt = unb64(body["number_salt"])
    expected_hash = hmac.new(salt, counterpart["number"].encode(), hashlib.sha256).hexdigest()
    assert stated["type"] == "consent" and stated["decision"] == "granted"
    assert (stated["call_id"], stated["counterpart_id"], stated["consent_event_id"]) == (
        call["id"],
        counterpart["id"],
        grant["id"],
    )
    assert stated["number_hash"] == expected_hash
    assert counterpart["number"] not in json.dumps(body)  # named, never shown
    [started] = stated["recordings_started_after"]
    assert started["recording_id"] == rec["id"]
    assert started["audit"]["seq"] > stated["audit"]["seq"]  # later in the chain
    async with pool.acquire() as conn:
        rows = {
            r["seq"]: (r["hash"].hex(), r["prev_hash"].hex(), r["action"])
            for r in await conn.fetch(
                "SELECT seq, hash, prev_hash, action FROM audit_events WHERE account_id = $1",
                owner.account_id,
            )
        }
    assert rows[stated["audit"]["seq"]] == (
        stated["audit"]["hash"],
        stated["audit"]["prev_hash"],
        "consent.recorded",
    )
    assert rows[started["audit"]["seq"]][0] == started["audit"]["hash"]
    assert rows[started["audit"]["seq"]][2] == "recording.started"


async def test_a_receipt_with_a_changed_field_fails_to_verify(
    client: TestClient, owner: Customer
) -> None:
    call = await consented_call(client, owner)
    [grant] = await events_of(client, owner, call["id"])
    body = await (await consent_receipt(client, owner, call["id"], grant["id"])).json()
    keys = await key_set(client)
    changed = dict(body["receipt"], decision="refused")
    forged = signing.b64url(json.dumps(changed, sort_keys=True, separators=(",", ":")).encode())

    with pytest.raises(BadSignatureError):
        verified(keys, {**body, "payload": forged, "receipt": changed})
    header, _, signature = body["signature"].split(".")
    flipped = signature[:-2] + ("A" if signature[-2] != "A" else "B") + signature[-1]
    with pytest.raises(BadSignatureError):
        verified(keys, {**body, "signature": f"{header}..{flipped}"})


async def test_a_receipt_for_another_accounts_event_or_an_unknown_one_is_not_found(
    client: TestClient, owner: Customer
) -> None:
    call = await consented_call(client, owner)
    [grant] = await events_of(client, owner, call["id"])
    other_call = await consented_call(client, owner)
    stranger = await new_customer(client)

    theirs = await consent_receipt(client, stranger, call["id"], grant["id"])
    wrong_call = await consent_receipt(client, owner, other_call["id"], grant["id"])
    unknown = await consent_receipt(client, owner, call["id"], "ce_nosuchevent")
    malformed = await consent_receipt(client, owner, call["id"], "%00%20")

    assert (theirs.status, wrong_call.status, unknown.status, malformed.status) == (404,) * 4
    assert (await unknown.json())["code"] == "not-found"


# -- deletion receipts --------------------------------------------------------------------------


async def test_a_deleted_recording_has_a_receipt_saying_its_key_is_destroyed(
    client: TestClient, owner: Customer, pool: asyncpg.Pool
) -> None:
    recording_id = await record(client, owner, pool, frames=10)
    url = f"/v1/recordings/{recording_id}/deletion-receipt"
    before = await client.get(url, headers=owner.auth)
    assert (await client.delete(f"/v1/recordings/{recording_id}", headers=owner.auth)).status == 204

    resp = await client.get(url, headers=owner.auth)

    assert before.status == 404  # not deleted yet: nothing to attest
    assert resp.status == 200, await resp.text()
    stated = verified(await key_set(client), await resp.json())
    assert stated["type"] == "deletion" and stated["recording_id"] == recording_id
    assert stated["key_destroyed"] is True and stated["statement"] == "key destroyed"
    async with pool.acquire() as conn:
        row = await conn.fetchrow(
            "SELECT seq, hash FROM audit_events WHERE action = 'recording.deleted'"
            " AND subject ->> 'recording_id' = $1",
            recording_id,
        )
    assert (stated["audit"]["seq"], stated["audit"]["hash"]) == (row["seq"], row["hash"].hex())
    stranger = await new_customer(client)
    assert (await client.get(url, headers=stranger.auth)).status == 404


# -- rotation ---------------------------------------------------------------------------------


async def test_after_a_rotation_old_receipts_still_verify_and_new_ones_use_the_new_kid(
    client: TestClient, owner: Customer, pool: asyncpg.Pool
) -> None:
    call = await consented_call(client, owner)
    [grant] = await events_of(client, owner, call["id"])
    old = await (await consent_receipt(client, owner, call["id"], grant["id"])).json()
    async with pool.acquire() as conn, conn.transaction():
        rotated = await signing.rotate(conn, client.app[KEYS].master, datetime.now(UTC))

    new = await (await consent_receipt(client, owner, call["id"], grant["id"])).json()
    keys = await key_set(client)

    assert keys.keys[0].kid == rotated.kid and len(keys.keys) == 2
    verified(keys, old)
    verified(keys, new)
    assert kid_of(new) == rotated.kid != kid_of(old)


async def test_a_master_key_rotation_rewraps_the_signing_key_and_its_kid_stays(
    client: TestClient, pool: asyncpg.Pool
) -> None:
    old_master = client.app[KEYS].master
    new_master = MasterKeys(current=bytes(range(32)), previous=(old_master.current,))
    async with pool.acquire() as conn, conn.transaction():
        before = await signing.current(conn, old_master, datetime.now(UTC))
        moved = await signing.rewrap(conn, new_master)
        after = await signing.current(
            conn, MasterKeys(current=new_master.current), datetime.now(UTC)
        )
        again = await signing.rewrap(conn, new_master)

    assert (moved, again) == (1, 0)
    assert after.kid == before.kid  # the same key, under the new master key
    public = [k.private.public_key().public_bytes_raw() for k in (before, after)]
    assert public[0] == public[1]
    assert repr(after) == f"SigningKey(kid={before.kid!r})"  # never the key itself
