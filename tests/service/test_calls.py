"""Call sessions, consent events (R2) and the recording gate (R1, R2, D2)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import asyncpg
import pytest
from aiohttp.test_utils import TestClient

from tests.conftest import (
    Customer,
    consented_call,
    decide,
    new_call,
    new_customer,
    start_recording,
)


async def recording_of(client: TestClient, customer: Customer, recording_id: str) -> dict:
    resp = await client.get(f"/v1/recordings/{recording_id}", headers=customer.auth)
    assert resp.status == 200, await resp.text()
    return await resp.json()


# -- calls --------------------------------------------------------------------------


async def test_creating_a_call_returns_counterparts_and_a_media_block(
    client: TestClient, owner: Customer, pool: asyncpg.Pool
) -> None:
    call = await new_call(client, owner, counterparts=2)

    assert call["status"] == "active"
    assert [c["consent"] for c in call["counterparts"]] == ["pending", "pending"]
    assert call["media"]["url"].endswith("/v1/media/twilio")
    assert call["media"]["url"].startswith("ws://")
    assert call["media"]["token"].startswith("mt_")
    assert datetime.fromisoformat(call["media"]["expires_at"]) > datetime.now(UTC)
    async with pool.acquire() as conn:
        row = await conn.fetchrow("SELECT * FROM calls WHERE id = $1", call["id"])
    assert call["media"]["token"] not in repr(dict(row))  # stored only as a hash
    fetched = await (await client.get(f"/v1/calls/{call['id']}", headers=owner.auth)).json()
    assert "media" not in fetched  # the token is shown once


@pytest.mark.parametrize(
    ("override", "field"),
    [
        ({"from": "0048221234567"}, "from"),
        ({"to": "+48 22 123 45 67"}, "to"),
        ({"to": "+4812"}, "to"),
        ({"to": 48221234567}, "to"),
        ({"direction": "sideways"}, "direction"),
        ({"counterparts": []}, "counterparts"),
        ({"counterparts": [{"label": "x", "number": "12345"}]}, "counterparts.0.number"),
        ({"record": True}, "record"),  # R1: no call flag can start a recording
    ],
)
async def test_call_creation_validates_numbers_and_fields(
    client: TestClient, owner: Customer, override: dict, field: str
) -> None:
    body = {
        "direction": "outbound",
        "from": "+48221234567",
        "to": "+48601234567",
        "counterparts": [{"label": "client", "number": "+48601234567"}],
        **override,
    }

    resp = await client.post("/v1/calls", json=body, headers=owner.auth)

    assert resp.status == 422
    assert [e["field"] for e in (await resp.json())["errors"]] == [field]


async def test_calls_are_listed_with_their_consent(client: TestClient, owner: Customer) -> None:
    first = await new_call(client, owner)
    second = await consented_call(client, owner)

    listed = await (await client.get("/v1/calls", headers=owner.auth)).json()

    assert [c["id"] for c in listed["items"]] == [first["id"], second["id"]]
    assert listed["items"][1]["counterparts"][0]["consent"] == "granted"


async def test_ending_a_call_twice_is_refused(client: TestClient, owner: Customer) -> None:
    call = await new_call(client, owner)

    first = await client.post(f"/v1/calls/{call['id']}/end", headers=owner.auth)
    second = await client.post(f"/v1/calls/{call['id']}/end", headers=owner.auth)

    assert first.status == 200
    assert (await first.json())["status"] == "ended"
    assert second.status == 409
    assert (await second.json())["code"] == "call-not-active"


# -- consent ------------------------------------------------------------------------


async def test_consent_flag_is_the_latest_event(client: TestClient, owner: Customer) -> None:
    call = await new_call(client, owner)
    party = call["counterparts"][0]["id"]

    for decision in ("granted", "revoked", "granted", "refused"):
        await decide(client, owner, call["id"], party, decision)

    fetched = await (await client.get(f"/v1/calls/{call['id']}", headers=owner.auth)).json()
    events = await (await client.get(f"/v1/calls/{call['id']}/consents", headers=owner.auth)).json()
    assert fetched["counterparts"][0]["consent"] == "refused"
    assert [e["decision"] for e in events["items"]] == ["granted", "revoked", "granted", "refused"]
    assert all(e["recorded_by"] == {"type": "user", "id": owner.user_id} for e in events["items"])


async def test_consent_event_keeps_method_evidence_and_time(
    client: TestClient, owner: Customer
) -> None:
    call = await new_call(client, owner)
    obtained = (datetime.now(UTC) - timedelta(minutes=5)).isoformat()

    resp = await client.post(
        f"/v1/calls/{call['id']}/consents",
        json={
            "counterpart_id": call["counterparts"][0]["id"],
            "decision": "granted",
            "method": "dtmf",
            "evidence": "pressed 1 after the announcement",
            "obtained_at": obtained,
        },
        headers=owner.auth,
    )

    assert resp.status == 201
    event = await resp.json()
    assert event["method"] == "dtmf"
    assert event["evidence"] == "pressed 1 after the announcement"
    assert datetime.fromisoformat(event["obtained_at"]) == datetime.fromisoformat(obtained)


async def test_consent_events_cannot_be_updated_or_deleted(
    client: TestClient, owner: Customer, pool: asyncpg.Pool
) -> None:
    """R2: the history is append-only, enforced by the database itself."""
    call = await new_call(client, owner)
    await decide(client, owner, call["id"], call["counterparts"][0]["id"], "granted")

    async with pool.acquire() as conn:
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await conn.execute("UPDATE consent_events SET decision = 'refused'")
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await conn.execute("DELETE FROM consent_events")
        assert await conn.fetchval("SELECT decision FROM consent_events") == "granted"


@pytest.mark.parametrize(
    ("patch", "field"),
    [
        ({"counterpart_id": "cp_\u00b2"}, "counterpart_id"),  # not an id at all
        ({"decision": "maybe"}, "decision"),
        ({"method": "telepathy"}, "method"),
        ({"evidence": "e" * 2001}, "evidence"),
        ({"obtained_at": "2999-01-01T00:00:00Z"}, "obtained_at"),
        ({"obtained_at": "2024-01-01T00:00:00"}, "obtained_at"),  # no offset: ambiguous
        ({"obtained_at": "yesterday"}, "obtained_at"),
    ],
)
async def test_bad_consent_input_is_refused(
    client: TestClient, owner: Customer, patch: dict, field: str
) -> None:
    call = await new_call(client, owner)
    body = {
        "counterpart_id": call["counterparts"][0]["id"],
        "decision": "granted",
        "method": "verbal",
        **patch,
    }

    resp = await client.post(f"/v1/calls/{call['id']}/consents", json=body, headers=owner.auth)

    assert resp.status == 422, await resp.text()
    assert [e["field"] for e in (await resp.json())["errors"]] == [field]


@pytest.mark.parametrize("whose", ["another call's", "nobody's"])
async def test_consent_for_a_counterpart_not_on_the_call_is_not_found(
    client: TestClient, owner: Customer, pool: asyncpg.Pool, whose: str
) -> None:
    """A reference to a counterpart that is not on this call is like an unknown id: 404."""
    call = await new_call(client, owner)
    other = await new_call(client, owner)
    counterpart = other["counterparts"][0]["id"] if whose == "another call's" else "cp_unknown"

    resp = await client.post(
        f"/v1/calls/{call['id']}/consents",
        json={"counterpart_id": counterpart, "decision": "granted", "method": "verbal"},
        headers=owner.auth,
    )

    assert resp.status == 404
    assert (await resp.json())["detail"] == "no such counterpart on this call"
    async with pool.acquire() as conn:
        assert await conn.fetchval("SELECT count(*) FROM consent_events") == 0


# -- the recording gate ---------------------------------------------------------------


async def test_recording_starts_only_with_every_consent(
    client: TestClient, owner: Customer
) -> None:
    """R2: `consent-required` names exactly the counterparts still missing."""
    call = await new_call(client, owner, counterparts=3)
    parties = [c["id"] for c in call["counterparts"]]
    await decide(client, owner, call["id"], parties[0], "granted")
    await decide(client, owner, call["id"], parties[1], "refused")

    refused = await client.post(f"/v1/calls/{call['id']}/recordings", json={}, headers=owner.auth)

    assert refused.status == 409
    problem = await refused.json()
    assert problem["code"] == "consent-required"
    assert problem["missing"] == parties[1:]
    await decide(client, owner, call["id"], parties[1], "granted")
    await decide(client, owner, call["id"], parties[2], "granted")
    rec = await start_recording(client, owner, call["id"])
    assert rec["status"] == "recording"
    assert rec["call_id"] == call["id"]


async def test_no_recording_exists_without_the_explicit_start(
    client: TestClient, owner: Customer, pool: asyncpg.Pool
) -> None:
    """R1: a fully consented call with a retention setting still records nothing by itself."""
    await client.patch("/v1/account", json={"recording_retention_days": 30}, headers=owner.auth)

    await consented_call(client, owner)

    async with pool.acquire() as conn:
        assert await conn.fetchval("SELECT count(*) FROM recordings") == 0


async def test_double_start_is_recording_in_progress(client: TestClient, owner: Customer) -> None:
    call = await consented_call(client, owner)
    await start_recording(client, owner, call["id"])

    again = await client.post(f"/v1/calls/{call['id']}/recordings", json={}, headers=owner.auth)

    assert again.status == 409
    assert (await again.json())["code"] == "recording-in-progress"


async def test_recording_an_ended_call_is_call_not_active(
    client: TestClient, owner: Customer
) -> None:
    call = await consented_call(client, owner)
    await client.post(f"/v1/calls/{call['id']}/end", headers=owner.auth)

    resp = await client.post(f"/v1/calls/{call['id']}/recordings", json={}, headers=owner.auth)

    assert resp.status == 409
    assert (await resp.json())["code"] == "call-not-active"


async def test_revocation_stops_running_recording(client: TestClient, owner: Customer) -> None:
    call = await consented_call(client, owner)
    rec = await start_recording(client, owner, call["id"])

    await decide(client, owner, call["id"], call["counterparts"][0]["id"], "revoked")

    after = await recording_of(client, owner, rec["id"])
    # No media socket holds it, so nothing is left to seal: complete at once.
    assert after["status"] == "completed"
    assert after["stop_reason"] == "consent_revoked"
    assert after["segments"][-1]["ended_by"] == "consent_revoked"
    assert after["ended_at"] is not None


async def test_new_counterpart_pauses_until_they_consent(
    client: TestClient, owner: Customer
) -> None:
    call = await consented_call(client, owner)
    rec = await start_recording(client, owner, call["id"])

    resp = await client.post(
        f"/v1/calls/{call['id']}/counterparts",
        json={"label": "transfer", "number": "+442079460958"},
        headers=owner.auth,
    )
    paused = await recording_of(client, owner, rec["id"])
    manual = await client.post(f"/v1/recordings/{rec['id']}/resume", headers=owner.auth)
    await decide(client, owner, call["id"], (await resp.json())["id"], "granted")
    resumed = await recording_of(client, owner, rec["id"])

    assert resp.status == 201
    assert paused["status"] == "paused"
    assert paused["pause_reason"] == "new_counterpart"
    assert paused["segments"][0]["ended_by"] == "new_counterpart"
    assert manual.status == 409
    assert (await manual.json())["code"] == "consent-required"
    assert resumed["status"] == "recording"
    assert len(resumed["segments"]) == 2


async def test_pause_resume_and_stop_follow_the_state_machine(
    client: TestClient, owner: Customer
) -> None:
    call = await consented_call(client, owner)
    rec = await start_recording(client, owner, call["id"])
    base = f"/v1/recordings/{rec['id']}"

    paused = await client.post(f"{base}/pause", headers=owner.auth)
    pause_again = await client.post(f"{base}/pause", headers=owner.auth)
    resumed = await client.post(f"{base}/resume", headers=owner.auth)
    stopped = await client.post(f"{base}/stop", headers=owner.auth)
    pause_stopped = await client.post(f"{base}/pause", headers=owner.auth)
    resume_stopped = await client.post(f"{base}/resume", headers=owner.auth)

    assert (await paused.json())["status"] == "paused"
    assert pause_again.status == 409
    assert (await pause_again.json())["code"] == "invalid-state"
    assert (await resumed.json())["status"] == "recording"
    final = await stopped.json()
    assert final["status"] == "completed"  # no media socket: nothing left to seal
    assert final["stop_reason"] == "stop"
    assert [s["ended_by"] for s in final["segments"]] == ["pause", "stop"]
    assert pause_stopped.status == resume_stopped.status == 409


async def test_resume_without_consent_is_refused(client: TestClient, owner: Customer) -> None:
    call = await consented_call(client, owner, counterparts=2)
    rec = await start_recording(client, owner, call["id"])
    await client.post(f"/v1/recordings/{rec['id']}/pause", headers=owner.auth)
    # A refusal while paused stops the recording: it can never resume.
    await decide(client, owner, call["id"], call["counterparts"][1]["id"], "refused")

    resp = await client.post(f"/v1/recordings/{rec['id']}/resume", headers=owner.auth)

    assert resp.status == 409
    after = await recording_of(client, owner, rec["id"])
    assert after["status"] == "completed"
    assert after["stop_reason"] == "consent_refused"


async def test_call_end_completes_the_running_recording(
    client: TestClient, owner: Customer
) -> None:
    call = await consented_call(client, owner)
    rec = await start_recording(client, owner, call["id"])

    await client.post(f"/v1/calls/{call['id']}/end", headers=owner.auth)

    after = await recording_of(client, owner, rec["id"])
    assert after["status"] == "completed"
    assert after["stop_reason"] == "call_ended"
    assert after["segments"][-1]["ended_by"] == "call_ended"


async def test_processing_restriction_blocks_start_and_resume(
    client: TestClient, owner: Customer
) -> None:
    """D2: a restricted account records nothing new."""
    call = await consented_call(client, owner)
    rec = await start_recording(client, owner, call["id"])
    await client.post(f"/v1/recordings/{rec['id']}/pause", headers=owner.auth)
    other = await consented_call(client, owner)
    await client.patch("/v1/account", json={"processing_restricted": True}, headers=owner.auth)

    resume = await client.post(f"/v1/recordings/{rec['id']}/resume", headers=owner.auth)
    start = await client.post(f"/v1/calls/{other['id']}/recordings", json={}, headers=owner.auth)

    assert resume.status == start.status == 409
    assert (await resume.json())["code"] == (await start.json())["code"] == "processing-restricted"


async def test_restriction_pauses_a_running_recording_until_it_is_lifted(
    client: TestClient, owner: Customer
) -> None:
    """D2: processing stops at once, not only for the next start."""
    call = await consented_call(client, owner)
    rec = await start_recording(client, owner, call["id"])

    restricted = await client.patch(
        "/v1/account", json={"processing_restricted": True}, headers=owner.auth
    )
    paused = await recording_of(client, owner, rec["id"])
    refused = await client.post(f"/v1/recordings/{rec['id']}/resume", headers=owner.auth)
    await client.patch("/v1/account", json={"processing_restricted": False}, headers=owner.auth)
    resumed = await client.post(f"/v1/recordings/{rec['id']}/resume", headers=owner.auth)

    assert restricted.status == 200
    assert paused["status"] == "paused"
    assert paused["pause_reason"] == "processing_restricted"
    assert paused["segments"][-1]["ended_by"] == "processing_restricted"
    assert refused.status == 409
    assert resumed.status == 200
    assert (await resumed.json())["status"] == "recording"


async def test_scopes_limit_api_keys(client: TestClient, owner: Customer) -> None:
    call = await consented_call(client, owner)
    key = await (
        await client.post(
            "/v1/api-keys", json={"name": "pbx", "scopes": ["calls"]}, headers=owner.auth
        )
    ).json()
    auth = {"Authorization": f"Bearer {key['token']}"}

    read_call = await client.get(f"/v1/calls/{call['id']}", headers=auth)
    start = await client.post(f"/v1/calls/{call['id']}/recordings", json={}, headers=auth)
    listing = await client.get("/v1/recordings", headers=auth)

    assert read_call.status == 200
    assert start.status == listing.status == 403


async def test_recordings_are_listed_per_account(client: TestClient, owner: Customer) -> None:
    mine = await start_recording(client, owner, (await consented_call(client, owner))["id"])
    stranger = await new_customer(client)
    await start_recording(client, stranger, (await consented_call(client, stranger))["id"])

    listed = await (await client.get("/v1/recordings", headers=owner.auth)).json()

    assert [r["id"] for r in listed["items"]] == [mine["id"]]
    item = listed["items"][0]
    assert {"duration_ms", "size_bytes", "segments", "channels", "pause_behavior"} <= set(item)
