"""Data-subject rights: the access copy (D1), privacy requests (D2, D3), erasure and restriction."""

from __future__ import annotations

import json
import secrets
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import pytest
from aiohttp.test_utils import TestClient

from storage import audit
from storage.keys.passwords import PasswordHasher
from telephony.domain.roles import StaffRole
from telephony.settings import Settings
from telephony.usecases import identity
from tests.conftest import (
    PASSWORD,
    Customer,
    consented_call,
    login,
    new_call,
    new_customer,
    start_recording,
)
from tests.support.mail import mailed_token

REGION = "pl-central-test"
AGENT = "privacy-test-agent/1.0"


@pytest.fixture
def settings(settings: Settings) -> Settings:
    """A region of our own, so the export demonstrably reports the configured one (D1)."""
    return settings.replace(data_region=REGION)


def parse(ts: str) -> datetime:
    return datetime.fromisoformat(ts.replace("Z", "+00:00"))


async def support_auth(
    client: TestClient, pool: asyncpg.Pool, settings: Settings, role: str = "support"
) -> dict[str, str]:
    email = f"{role}-{secrets.token_hex(3)}@staff.example.com"
    await identity.create_staff(
        pool,
        PasswordHasher(settings.argon2),
        email=email,
        name=role,
        role=StaffRole(role),
        password=PASSWORD,
        now=datetime.now(UTC),
    )
    return {"Authorization": f"Bearer {await login(client, email)}"}


async def new_member(
    client: TestClient, owner: Customer, name: str = "Bob Member", **headers: str
) -> Customer:
    email = f"member-{secrets.token_hex(4)}@example.com"
    resp = await client.post(
        "/v1/users", json={"email": email, "name": name}, headers={**owner.auth, **headers}
    )
    assert resp.status == 201, await resp.text()
    created = await resp.json()
    accepted = await client.post(
        "/v1/invitations/accept",
        json={"token": await mailed_token(client, email), "password": PASSWORD},
    )
    assert accepted.status == 200, await accepted.text()
    token = await login(client, email)
    return Customer(owner.account_id, created["id"], email, token)


async def file(
    client: TestClient, who: Customer, kind: str, details: str = "", **headers: str
) -> dict[str, Any]:
    resp = await client.post(
        "/v1/privacy-requests",
        json={"kind": kind, "details": details},
        headers={**who.auth, **headers},
    )
    assert resp.status == 201, await resp.text()
    return await resp.json()


async def complete(
    client: TestClient, staff: dict[str, str], request_id: str, resolution: str = "done"
) -> Any:
    return await client.post(
        f"/v1/support/privacy-requests/{request_id}/complete",
        json={"resolution": resolution},
        headers=staff,
    )


def resource(export: dict[str, Any], name: str) -> dict[str, Any]:
    return next(r for r in export["resources"] if r["resource"] == name)


# -- D1: the access copy ---------------------------------------------------------------


async def test_export_holds_profile_logins_consents_and_where_they_are_stored(
    client: TestClient, pool: asyncpg.Pool, owner: Customer
) -> None:
    failed = await client.post(
        "/v1/sessions",
        json={"email": owner.email, "password": "wrong password!"},
        headers={"User-Agent": AGENT},
    )
    assert failed.status == 401
    call = await new_call(client, owner)
    party = call["counterparts"][0]
    consent = await client.post(
        f"/v1/calls/{call['id']}/consents",
        json={
            "counterpart_id": party["id"],
            "decision": "granted",
            "method": "written",
            "evidence": "signed form no. 4711",
        },
        headers=owner.auth,
    )
    assert consent.status == 201
    await start_recording(client, owner, call["id"])

    resp = await client.get("/v1/me/export", headers=owner.auth)

    assert resp.status == 200
    export = await resp.json()
    assert parse(export["generated_at"]) <= datetime.now(UTC)
    assert export["subject"]["id"] == owner.user_id
    assert export["subject"]["email"] == owner.email
    profile = resource(export, "user_profile")["personal_data"][0]
    assert profile["email"] == owner.email
    assert profile["name"] == "Ada Owner"
    assert profile["postal_address"] == "ul. Prosta 1, 00-001 Warszawa"
    account = resource(export, "account")["personal_data"][0]
    assert account["vat_number"] == "PL1234567890"
    logins = resource(export, "security_log")["personal_data"]
    failure = next(e for e in logins if e["outcome"] == "failure")
    assert failure["source_address"] == "127.0.0.1"
    assert failure["user_agent"] == AGENT
    assert failure["email"] == owner.email
    sessions = resource(export, "sessions")["personal_data"]
    assert sessions[0]["source_address"] == "127.0.0.1"
    consents = resource(export, "consent_events")["personal_data"]
    assert [(c["method"], c["evidence"]) for c in consents] == [("written", "signed form no. 4711")]
    numbers = [c["number"] for c in resource(export, "call_counterparts")["personal_data"]]
    assert numbers == [party["number"]]
    audio = resource(export, "recording_audio")
    assert audio["storage_location"]["store"] == "blob store"
    # Audio by size, with the region and store each recording's audio is in: no content.
    assert set(audio["personal_data"][0]) == {"recording_id", "size_bytes", "region", "store"}
    assert audio["personal_data"][0]["region"] == REGION
    assert audio["personal_data"][0]["store"] == "file:blobs"
    for r in export["resources"]:
        assert r["storage_location"]["region"] == REGION
        assert r["truncated"] is False
        if r["resource"] != "recording_audio":
            assert r["storage_location"]["store"] == "postgresql"
            assert r["storage_location"]["table"]


async def test_export_carries_no_password_token_or_key_material(
    client: TestClient, pool: asyncpg.Pool, owner: Customer
) -> None:
    key = await client.post(
        "/v1/api-keys", json={"name": "laptop", "scopes": ["calls"]}, headers=owner.auth
    )
    call = await consented_call(client, owner)
    await start_recording(client, owner, call["id"])

    text = await (await client.get("/v1/me/export", headers=owner.auth)).text()

    async with pool.acquire() as conn:
        password_hash = await conn.fetchval(
            "SELECT password_hash FROM users WHERE id = $1", owner.user_id
        )
        secrets_held = [
            bytes(r["h"])
            for r in await conn.fetch(
                """SELECT token_hash AS h FROM sessions
                   UNION ALL SELECT token_hash FROM api_keys
                   UNION ALL SELECT media_token_hash FROM calls
                   UNION ALL SELECT wrapped_key FROM recordings
                   UNION ALL SELECT wrapped_key FROM account_keys"""
            )
        ]
    assert password_hash and password_hash not in text
    assert "$argon2" not in text
    assert len(secrets_held) >= 5
    for held in secrets_held:
        assert held.hex() not in text
        assert held.hex().upper() not in text
    assert (await key.json())["token"] not in text
    assert "laptop" in text  # the key is listed by name


async def test_a_members_copy_is_theirs_and_omits_the_accounts_billing_data(
    client: TestClient, owner: Customer
) -> None:
    member = await new_member(client, owner)
    await consented_call(client, owner)

    export = await (await client.get("/v1/me/export", headers=member.auth)).json()

    assert export["subject"]["id"] == member.user_id
    assert resource(export, "account")["personal_data"] == [
        {"id": owner.account_id, "name": "Acme Calls"}
    ]
    assert resource(export, "calls")["personal_data"] == []  # the owner's call, not theirs
    assert owner.email not in json.dumps(export)


async def test_the_export_is_audited(client: TestClient, owner: Customer) -> None:
    await client.get("/v1/me/export", headers=owner.auth)

    trail = await (await client.get("/v1/audit?limit=200", headers=owner.auth)).json()

    exported = [i for i in trail["items"] if i["action"] == "privacy.exported"]
    assert len(exported) == 1
    assert exported[0]["subject"] == {"type": "user", "id": owner.user_id}


async def test_an_api_key_has_no_person_to_export(client: TestClient, owner: Customer) -> None:
    key = await (
        await client.post(
            "/v1/api-keys", json={"name": "k", "scopes": ["calls"]}, headers=owner.auth
        )
    ).json()

    resp = await client.get("/v1/me/export", headers={"Authorization": f"Bearer {key['token']}"})

    assert resp.status == 403


# -- D2, D3: filing and reading requests -------------------------------------------------


async def test_a_request_is_due_exactly_thirty_days_after_receipt(
    client: TestClient, pool: asyncpg.Pool, owner: Customer
) -> None:
    before = datetime.now(UTC)

    created = await file(client, owner, "access", "a copy please")

    assert created["kind"] == "access"
    assert created["status"] == "received"
    assert created["details"] == "a copy please"
    received, due = parse(created["received_at"]), parse(created["due_at"])
    assert due - received == timedelta(days=30)
    assert before <= received <= datetime.now(UTC)
    async with pool.acquire() as conn:
        row = await conn.fetchrow(
            "SELECT received_at, due_at FROM privacy_requests WHERE id = $1", created["id"]
        )
    assert row["due_at"] - row["received_at"] == timedelta(days=30)


async def test_a_retried_post_with_the_same_idempotency_key_files_once(
    client: TestClient, pool: asyncpg.Pool, owner: Customer
) -> None:
    first = await file(client, owner, "access", **{"Idempotency-Key": "prq-1"})

    again = await client.post(
        "/v1/privacy-requests",
        json={"kind": "access", "details": ""},
        headers={**owner.auth, "Idempotency-Key": "prq-1"},
    )

    assert again.status == 201
    assert again.headers["Idempotent-Replayed"] == "true"
    assert (await again.json())["id"] == first["id"]
    async with pool.acquire() as conn:
        assert await conn.fetchval("SELECT count(*) FROM privacy_requests") == 1


async def test_each_state_change_is_audited_and_notifies_staff_without_the_text(
    client: TestClient, pool: asyncpg.Pool, settings: Settings, owner: Customer
) -> None:
    staff = await support_auth(client, pool, settings)
    created = await file(client, owner, "rectification", "my street is misspelt")

    started = await client.post(
        f"/v1/support/privacy-requests/{created['id']}/start", headers=staff
    )
    done = await complete(client, staff, created["id"], "user corrected it with PATCH /v1/me")

    assert started.status == 200
    assert (await started.json())["status"] == "in_progress"
    assert done.status == 200
    assert (await done.json())["status"] == "completed"
    async with pool.acquire() as conn:
        notes = await conn.fetch(
            "SELECT event, payload FROM staff_notifications WHERE event LIKE 'privacy_request.%'"
            " ORDER BY id"
        )
        trail = await conn.fetch(
            "SELECT action, subject, details FROM audit_events"
            " WHERE account_id = $1 AND action LIKE 'privacy_request.%' ORDER BY seq",
            owner.account_id,
        )
    expected = [
        "privacy_request.received",
        "privacy_request.in_progress",
        "privacy_request.completed",
    ]
    assert [n["event"] for n in notes] == expected
    assert [t["action"] for t in trail] == expected
    assert trail[-1]["subject"]["id"] == created["id"]
    assert trail[-1]["details"]["effect"] == "none"
    for record in [*notes, *trail]:
        assert "misspelt" not in json.dumps(dict(record))
    mine = await (
        await client.get(f"/v1/privacy-requests/{created['id']}", headers=owner.auth)
    ).json()
    assert mine["status"] == "completed"
    assert mine["resolution"] == "user corrected it with PATCH /v1/me"
    assert mine["completed_at"] is not None


async def test_a_closed_request_cannot_change_again(
    client: TestClient, pool: asyncpg.Pool, settings: Settings, owner: Customer
) -> None:
    staff = await support_auth(client, pool, settings)
    created = await file(client, owner, "access")
    assert (await complete(client, staff, created["id"])).status == 200

    again = await client.post(
        f"/v1/support/privacy-requests/{created['id']}/reject",
        json={"resolution": "no"},
        headers=staff,
    )
    start = await client.post(f"/v1/support/privacy-requests/{created['id']}/start", headers=staff)

    assert again.status == 409
    assert (await again.json())["code"] == "invalid-state"
    assert start.status == 409


async def test_a_rejected_request_keeps_its_reason(
    client: TestClient, pool: asyncpg.Pool, settings: Settings, owner: Customer
) -> None:
    staff = await support_auth(client, pool, settings)
    created = await file(client, owner, "access")

    resp = await client.post(
        f"/v1/support/privacy-requests/{created['id']}/reject",
        json={"resolution": "duplicate of an earlier request"},
        headers=staff,
    )

    assert resp.status == 200
    mine = await (
        await client.get(f"/v1/privacy-requests/{created['id']}", headers=owner.auth)
    ).json()
    assert (mine["status"], mine["resolution"]) == ("rejected", "duplicate of an earlier request")


async def test_a_member_sees_only_their_own_requests_and_an_owner_sees_all(
    client: TestClient, owner: Customer
) -> None:
    alice = await new_member(client, owner, name="Alice")
    bob = await new_member(client, owner, name="Bob")
    hers = await file(client, alice, "access", "alice's request")
    his = await file(client, bob, "restriction")

    peek = await client.get(f"/v1/privacy-requests/{hers['id']}", headers=bob.auth)
    bobs_list = await (await client.get("/v1/privacy-requests", headers=bob.auth)).json()
    owners_list = await (await client.get("/v1/privacy-requests", headers=owner.auth)).json()

    assert peek.status == 404
    assert (await peek.json())["code"] == "not-found"
    assert [i["id"] for i in bobs_list["items"]] == [his["id"]]
    assert {i["id"] for i in owners_list["items"]} == {hers["id"], his["id"]}


async def test_another_accounts_request_is_not_found(client: TestClient, owner: Customer) -> None:
    mine = await file(client, owner, "access")
    other = await new_customer(client)

    resp = await client.get(f"/v1/privacy-requests/{mine['id']}", headers=other.auth)
    listed = await (await client.get("/v1/privacy-requests", headers=other.auth)).json()

    assert resp.status == 404
    assert (await resp.json())["code"] == "not-found"
    assert listed["items"] == []


async def test_requests_are_listed_in_pages(client: TestClient, owner: Customer) -> None:
    ids = [(await file(client, owner, "access"))["id"] for _ in range(3)]

    first = await (await client.get("/v1/privacy-requests?limit=2", headers=owner.auth)).json()
    second = await (
        await client.get(
            f"/v1/privacy-requests?limit=2&cursor={first['next_cursor']}", headers=owner.auth
        )
    ).json()

    assert [i["id"] for i in first["items"] + second["items"]] == ids
    assert second["next_cursor"] is None


# -- support's queue (D3, S5) -------------------------------------------------------------


async def test_support_lists_overdue_requests_of_every_account_without_their_text(
    client: TestClient, pool: asyncpg.Pool, settings: Settings, owner: Customer
) -> None:
    other = await new_customer(client)
    late = await file(client, owner, "access", "private words")
    fresh = await file(client, other, "restriction")
    done_late = await file(client, other, "access")
    async with pool.acquire() as conn:
        await conn.execute(
            """UPDATE privacy_requests SET received_at = received_at - interval '31 days',
                      due_at = due_at - interval '31 days' WHERE id = ANY($1)""",
            [late["id"], done_late["id"]],
        )
    staff = await support_auth(client, pool, settings)
    assert (await complete(client, staff, done_late["id"])).status == 200

    overdue = await client.get("/v1/support/privacy-requests?overdue=true", headers=staff)
    every_open = await client.get("/v1/support/privacy-requests", headers=staff)

    assert overdue.status == 200
    items = (await overdue.json())["items"]
    assert [i["id"] for i in items] == [late["id"]]
    assert items[0]["overdue"] is True
    assert items[0]["account_id"] == owner.account_id
    assert items[0]["kind"] == "access"
    assert "details" not in items[0]
    assert "private words" not in await overdue.text()
    assert [i["id"] for i in (await every_open.json())["items"]] == [late["id"], fresh["id"]]


async def test_support_is_refused_on_customer_privacy_routes(
    client: TestClient, pool: asyncpg.Pool, settings: Settings, owner: Customer
) -> None:
    created = await file(client, owner, "access")
    staff = await support_auth(client, pool, settings)

    answers = [
        await client.get("/v1/me/export", headers=staff),
        await client.get("/v1/privacy-requests", headers=staff),
        await client.get(f"/v1/privacy-requests/{created['id']}", headers=staff),
        await client.post("/v1/privacy-requests", json={"kind": "access"}, headers=staff),
    ]

    assert [a.status for a in answers] == [403] * 4


@pytest.mark.parametrize("who", ["owner", "security_admin"])
async def test_only_support_works_the_queue(
    client: TestClient, pool: asyncpg.Pool, settings: Settings, owner: Customer, who: str
) -> None:
    created = await file(client, owner, "access")
    auth = owner.auth if who == "owner" else await support_auth(client, pool, settings, who)

    listed = await client.get("/v1/support/privacy-requests?overdue=true", headers=auth)
    closed = await complete(client, auth, created["id"])

    assert listed.status == 403
    assert closed.status == 403


async def test_support_closing_an_unknown_request_is_not_found(
    client: TestClient, pool: asyncpg.Pool, settings: Settings
) -> None:
    staff = await support_auth(client, pool, settings)

    resp = await complete(client, staff, "prq_nope")

    assert resp.status == 404


# -- erasure (D2) ---------------------------------------------------------------------------


async def test_member_erasure_removes_their_data_and_keeps_the_audit_chain_intact(
    client: TestClient, pool: asyncpg.Pool, settings: Settings, owner: Customer
) -> None:
    name = f"Zbigniew {secrets.token_hex(3)}"
    member = await new_member(client, owner, name=name, **{"Idempotency-Key": "invite-1"})
    await client.post(
        "/v1/sessions",
        json={"email": member.email, "password": "wrong password!"},
        headers={"User-Agent": AGENT},
    )
    await new_call(client, member)
    async with pool.acquire() as conn:
        await conn.execute(
            """INSERT INTO access_log (at, request_id, method, route, status, duration_ms,
                                       principal_id, source_address, user_agent)
               VALUES (now(), 'r1', 'GET', '/v1/me', 200, 1.0, $1, '10.9.8.7', $2)""",
            member.user_id,
            AGENT,
        )
    request = await file(
        client, member, "erasure", f"please erase me, {name}", **{"Idempotency-Key": "erase-1"}
    )
    staff = await support_auth(client, pool, settings)

    resp = await complete(client, staff, request["id"], "member erased")

    assert resp.status == 200, await resp.text()
    async with pool.acquire() as conn:
        assert await conn.fetchval("SELECT count(*) FROM users WHERE id = $1", member.user_id) == 0
        assert (
            await conn.fetchval("SELECT count(*) FROM sessions WHERE user_id = $1", member.user_id)
            == 0
        )
        tables = [
            r["t"]
            for r in await conn.fetch(
                "SELECT quote_ident(tablename) AS t FROM pg_tables WHERE schemaname = 'public'"
            )
        ]
        for table in tables:
            for needle in (member.email, name, "10.9.8.7", AGENT):
                found = await conn.fetchval(
                    f"SELECT count(*) FROM {table} x WHERE x::text ILIKE '%' || $1 || '%'",  # noqa: S608
                    needle,
                )
                assert found == 0, f"{needle!r} still in {table}"
        replies = await conn.fetchval(
            "SELECT count(*) FROM idempotency_keys WHERE position($1::bytea IN body) > 0",
            member.email.encode(),
        )
        assert replies == 0
        security_rows = await conn.fetchval(
            "SELECT count(*) FROM security_log WHERE user_id = $1", member.user_id
        )
        assert security_rows >= 2  # the facts of the attempts stay (S2), without who or where
        assert await audit.verify(conn) == []
    gone = await client.get("/v1/me", headers=member.auth)
    assert gone.status == 401
    kept = await (
        await client.get(f"/v1/privacy-requests/{request['id']}", headers=owner.auth)
    ).json()
    assert (kept["status"], kept["details"], kept["user_id"]) == ("completed", "", member.user_id)
    trail = await (await client.get("/v1/audit?limit=200", headers=owner.auth)).json()
    erased = [i for i in trail["items"] if i["action"] == "user.erased"]
    assert erased[0]["subject"] == {"type": "user", "id": member.user_id}


async def test_an_owner_cannot_ask_for_erasure(client: TestClient, owner: Customer) -> None:
    resp = await client.post("/v1/privacy-requests", json={"kind": "erasure"}, headers=owner.auth)

    assert resp.status == 409
    problem = await resp.json()
    assert problem["code"] == "erasure-requires-termination"
    assert "end the service" in problem["detail"]


async def test_erasure_of_a_member_promoted_to_owner_is_refused_at_completion(
    client: TestClient, pool: asyncpg.Pool, settings: Settings, owner: Customer
) -> None:
    member = await new_member(client, owner)
    request = await file(client, member, "erasure")
    promoted = await client.patch(
        f"/v1/users/{member.user_id}", json={"role": "owner"}, headers=owner.auth
    )
    assert promoted.status == 200
    staff = await support_auth(client, pool, settings)

    resp = await complete(client, staff, request["id"])

    assert resp.status == 409
    assert (await resp.json())["code"] == "erasure-requires-termination"
    async with pool.acquire() as conn:
        assert await conn.fetchval("SELECT count(*) FROM users WHERE id = $1", member.user_id) == 1
        status = await conn.fetchval(
            "SELECT status FROM privacy_requests WHERE id = $1", request["id"]
        )
    assert status == "received"


# -- restriction (D2) -----------------------------------------------------------------------


async def test_an_owners_restriction_blocks_recording_until_lifted(
    client: TestClient, pool: asyncpg.Pool, settings: Settings, owner: Customer
) -> None:
    call = await consented_call(client, owner)
    request = await file(client, owner, "restriction", "stop processing for now")
    staff = await support_auth(client, pool, settings)
    assert (await complete(client, staff, request["id"], "account restricted")).status == 200

    refused = await client.post(f"/v1/calls/{call['id']}/recordings", json={}, headers=owner.auth)
    lifted = await client.patch(
        "/v1/account", json={"processing_restricted": False}, headers=owner.auth
    )
    allowed = await client.post(f"/v1/calls/{call['id']}/recordings", json={}, headers=owner.auth)

    assert refused.status == 409
    assert (await refused.json())["code"] == "processing-restricted"
    assert lifted.status == 200
    assert allowed.status == 201


async def test_a_members_restriction_does_not_restrict_the_account(
    client: TestClient, pool: asyncpg.Pool, settings: Settings, owner: Customer
) -> None:
    member = await new_member(client, owner)
    request = await file(client, member, "restriction")
    staff = await support_auth(client, pool, settings)

    resp = await complete(client, staff, request["id"], "forwarded to the account owner")

    assert resp.status == 200
    account = await (await client.get("/v1/account", headers=owner.auth)).json()
    assert account["processing_restricted"] is False


# -- bad input ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"kind": "forget-me"}, "kind"),
        ({"kind": "access", "details": "x" * 2001}, "details"),
        ({"kind": "access", "details": 42}, "details"),
        ({"kind": 1}, "kind"),
        ({"kind": ["access"]}, "kind"),
        ({"kind": "access", "priority": "high"}, "priority"),
        ({"kind": "access", "details": "nul \x00 byte"}, "details"),
        ({}, "kind"),
    ],
)
async def test_bad_requests_are_refused_naming_the_field(
    client: TestClient, owner: Customer, body: dict[str, Any], field: str
) -> None:
    resp = await client.post("/v1/privacy-requests", json=body, headers=owner.auth)

    assert resp.status == 422
    problem = await resp.json()
    assert problem["code"] == "validation-failed"
    assert [e["field"] for e in problem["errors"]] == [field]


@pytest.mark.parametrize(
    "body", [{}, {"resolution": ""}, {"resolution": 7}, {"resolution": "x" * 2001}]
)
async def test_a_completion_needs_a_resolution(
    client: TestClient, pool: asyncpg.Pool, settings: Settings, owner: Customer, body: dict
) -> None:
    created = await file(client, owner, "access")
    staff = await support_auth(client, pool, settings)

    resp = await client.post(
        f"/v1/support/privacy-requests/{created['id']}/complete", json=body, headers=staff
    )

    assert resp.status == 422
    assert (await resp.json())["code"] == "validation-failed"


@pytest.mark.parametrize("query", ["overdue=yes", "limit=0", "cursor=%%%"])
async def test_a_bad_queue_query_is_refused(
    client: TestClient, pool: asyncpg.Pool, settings: Settings, query: str
) -> None:
    staff = await support_auth(client, pool, settings)

    resp = await client.get(f"/v1/support/privacy-requests?{query}", headers=staff)

    assert resp.status == 422
    assert (await resp.json())["code"] == "validation-failed"
