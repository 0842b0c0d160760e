"""Signup (A1, A2), profile rectification (D2), account, members and API keys."""

from __future__ import annotations

import asyncio

import asyncpg
import pytest
from aiohttp.test_utils import TestClient

from tests.conftest import PASSWORD, Customer, login, new_customer, signup_body
from tests.support.mail import mailed_token


async def invite_member(client: TestClient, owner: Customer, role: str = "member") -> Customer:
    email = f"{role}-{owner.user_id[-6:]}@example.com"
    resp = await client.post(
        "/v1/users", json={"email": email, "name": "Mia Member", "role": role}, headers=owner.auth
    )
    assert resp.status == 201, await resp.text()
    body = await resp.json()
    accept = await client.post(
        "/v1/invitations/accept",
        json={"token": await mailed_token(client, email), "password": PASSWORD},
    )
    assert accept.status == 200, await accept.text()
    return Customer(owner.account_id, body["id"], email, await login(client, email))


# -- signup ---------------------------------------------------------------------


async def test_signup_creates_account_and_owner(client: TestClient) -> None:
    body = signup_body()

    resp = await client.post("/v1/signup", json=body)

    assert resp.status == 201
    data = await resp.json()
    assert data["account"]["name"] == body["account_name"]
    assert data["account"]["id"].startswith("acc_")
    assert data["user"] == {"id": data["user"]["id"], "email": body["email"], "role": "owner"}


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("accept_terms", None),
        ("accept_terms", False),
        ("age_confirmed", None),
        ("age_confirmed", False),
    ],
)
async def test_signup_requires_terms_and_age_declaration(
    client: TestClient, field: str, value: bool | None
) -> None:
    """A1: consent to registration; A2: the age declaration."""
    body = signup_body()
    if value is None:
        del body[field]
    else:
        body[field] = value

    resp = await client.post("/v1/signup", json=body)

    assert resp.status == 422
    problem = await resp.json()
    assert problem["code"] == "validation-failed"
    assert [e["field"] for e in problem["errors"]] == [field]


async def test_signup_with_used_email_is_email_taken(client: TestClient, owner: Customer) -> None:
    resp = await client.post("/v1/signup", json=signup_body(email=owner.email.upper()))

    assert resp.status == 409
    assert (await resp.json())["code"] == "email-taken"


async def test_signup_password_shorter_than_12_is_refused(client: TestClient) -> None:
    resp = await client.post("/v1/signup", json=signup_body(password="elevenchars"))

    assert resp.status == 422
    assert (await resp.json())["errors"][0]["field"] == "password"


async def test_concurrent_signups_with_one_email_exactly_one_wins(
    client: TestClient, pool: asyncpg.Pool
) -> None:
    body = signup_body()

    responses = await asyncio.gather(*(client.post("/v1/signup", json=body) for _ in range(8)))

    statuses = sorted(r.status for r in responses)
    assert statuses == [201] + [409] * 7
    async with pool.acquire() as conn:
        assert await conn.fetchval("SELECT count(*) FROM users") == 1
        assert await conn.fetchval("SELECT count(*) FROM accounts") == 1  # losers rolled back


# -- profile ---------------------------------------------------------------------


async def test_me_shows_profile_and_patch_rectifies_it(client: TestClient, owner: Customer) -> None:
    """D2: the user updates their own data."""
    resp = await client.patch(
        "/v1/me",
        json={"name": "Ada Lovelace", "postal_address": "ul. Nowa 2", "vat_number": None},
        headers=owner.auth,
    )

    assert resp.status == 200, await resp.text()
    me = await (await client.get("/v1/me", headers=owner.auth)).json()
    assert me["name"] == "Ada Lovelace"
    assert me["postal_address"] == "ul. Nowa 2"
    assert me["vat_number"] is None
    assert set(me) >= {"id", "email", "name", "postal_address", "vat_number", "role", "account_id"}


async def test_patch_me_to_an_email_in_use_is_email_taken(
    client: TestClient, owner: Customer
) -> None:
    other = await new_customer(client)

    resp = await client.patch("/v1/me", json={"email": other.email}, headers=owner.auth)

    assert resp.status == 409
    assert (await resp.json())["code"] == "email-taken"


async def test_patch_me_with_nothing_to_change_is_refused(
    client: TestClient, owner: Customer
) -> None:
    resp = await client.patch("/v1/me", json={}, headers=owner.auth)

    assert resp.status == 422


# -- account ---------------------------------------------------------------------


async def test_owner_reads_and_changes_the_account(client: TestClient, owner: Customer) -> None:
    resp = await client.patch(
        "/v1/account",
        json={
            "name": "Renamed",
            "recording_retention_days": 30,
            "webhook_url": "https://hooks.example.com/x",
        },
        headers=owner.auth,
    )

    assert resp.status == 200, await resp.text()
    account = await (await client.get("/v1/account", headers=owner.auth)).json()
    assert account["id"] == owner.account_id
    assert account["name"] == "Renamed"
    assert account["recording_retention_days"] == 30
    assert account["webhook_url"] == "https://hooks.example.com/x"
    assert account["processing_restricted"] is False
    assert account["data_region"]


@pytest.mark.parametrize(
    "patch",
    [
        {"webhook_url": "ftp://files.example.com/"},
        {"webhook_url": "not a url"},
        {"recording_retention_days": 0},
        {"recording_retention_days": "30"},
        {"processing_restricted": "yes"},
        {"data_region": "us"},
    ],
)
async def test_account_patch_refuses_bad_values(
    client: TestClient, owner: Customer, patch: dict[str, object]
) -> None:
    resp = await client.patch("/v1/account", json=patch, headers=owner.auth)

    assert resp.status == 422
    assert (await resp.json())["errors"][0]["field"] == next(iter(patch))


# -- members ---------------------------------------------------------------------


async def test_invited_member_sets_password_and_logs_in(
    client: TestClient, owner: Customer
) -> None:
    member = await invite_member(client, owner)

    me = await (await client.get("/v1/me", headers=member.auth)).json()

    assert me["role"] == "member"
    assert me["account_id"] == owner.account_id
    listed = await (await client.get("/v1/users", headers=owner.auth)).json()
    assert {u["id"] for u in listed["items"]} == {owner.user_id, member.user_id}


async def test_invitation_works_once(client: TestClient, owner: Customer) -> None:
    resp = await client.post(
        "/v1/users", json={"email": "once@example.com", "name": "Once"}, headers=owner.auth
    )
    assert "token" not in (await resp.json())["invitation"]
    token = await mailed_token(client, "once@example.com")
    first = await client.post("/v1/invitations/accept", json={"token": token, "password": PASSWORD})

    second = await client.post(
        "/v1/invitations/accept", json={"token": token, "password": PASSWORD}
    )

    assert first.status == 200
    assert second.status == 401
    assert (await second.json())["code"] == "invalid-invitation"


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("GET", "/v1/users", None),
        ("POST", "/v1/users", {"email": "x@example.com", "name": "X"}),
        ("PATCH", "/v1/users/usr_x", {"role": "owner"}),
        ("DELETE", "/v1/users/usr_x", None),
        ("GET", "/v1/api-keys", None),
        ("POST", "/v1/api-keys", {"name": "k", "scopes": ["calls"]}),
        ("DELETE", "/v1/api-keys/key_x", None),
        ("GET", "/v1/account", None),
        ("PATCH", "/v1/account", {"name": "mine now"}),
    ],
)
async def test_member_cannot_take_owner_actions(
    client: TestClient, owner: Customer, method: str, path: str, body: dict | None
) -> None:
    member = await invite_member(client, owner)

    resp = await client.request(method, path, json=body, headers=member.auth)

    assert resp.status == 403
    assert (await resp.json())["code"] == "forbidden"


async def test_owner_changes_a_role_and_cannot_demote_the_last_owner(
    client: TestClient, owner: Customer
) -> None:
    member = await invite_member(client, owner)

    last = await client.patch(
        f"/v1/users/{owner.user_id}", json={"role": "member"}, headers=owner.auth
    )
    promote = await client.patch(
        f"/v1/users/{member.user_id}", json={"role": "owner"}, headers=owner.auth
    )
    demote = await client.patch(
        f"/v1/users/{owner.user_id}", json={"role": "member"}, headers=owner.auth
    )

    assert last.status == 409
    assert (await last.json())["code"] == "last-owner"
    assert promote.status == 200
    assert (await promote.json())["role"] == "owner"
    assert demote.status == 200


async def test_deleted_user_loses_access_at_once(client: TestClient, owner: Customer) -> None:
    member = await invite_member(client, owner)

    resp = await client.delete(f"/v1/users/{member.user_id}", headers=owner.auth)

    assert resp.status == 204
    after = await client.get("/v1/me", headers=member.auth)
    assert after.status == 401
    again = await client.delete(f"/v1/users/{member.user_id}", headers=owner.auth)
    assert again.status == 404


async def test_another_accounts_user_is_not_found(client: TestClient, owner: Customer) -> None:
    stranger = await new_customer(client)

    patch = await client.patch(
        f"/v1/users/{stranger.user_id}", json={"name": "x"}, headers=owner.auth
    )
    delete = await client.delete(f"/v1/users/{stranger.user_id}", headers=owner.auth)

    assert (patch.status, delete.status) == (404, 404)
    assert (await patch.json())["code"] == "not-found"
    assert (await client.get("/v1/me", headers=stranger.auth)).status == 200


# -- API keys ----------------------------------------------------------------------


async def test_api_key_token_is_shown_once_and_stored_only_as_hash(
    client: TestClient, owner: Customer, pool: asyncpg.Pool
) -> None:
    resp = await client.post(
        "/v1/api-keys",
        json={"name": "pbx", "scopes": ["calls", "recordings:read"]},
        headers=owner.auth,
    )

    assert resp.status == 201
    created = await resp.json()
    assert created["token"].startswith("sk_")
    assert created["scopes"] == ["calls", "recordings:read"]
    listed = await (await client.get("/v1/api-keys", headers=owner.auth)).json()
    assert [k["id"] for k in listed["items"]] == [created["id"]]
    assert "token" not in listed["items"][0]
    async with pool.acquire() as conn:
        row = await conn.fetchrow("SELECT * FROM api_keys WHERE id = $1", created["id"])
    assert created["token"] not in repr(dict(row))


async def test_api_key_authenticates_until_deleted(client: TestClient, owner: Customer) -> None:
    created = await (
        await client.post(
            "/v1/api-keys", json={"name": "k", "scopes": ["calls"]}, headers=owner.auth
        )
    ).json()
    key_auth = {"Authorization": f"Bearer {created['token']}"}
    # /v1/me is for people: a valid key is recognised (403), not unknown (401).
    before = await client.get("/v1/me", headers=key_auth)

    deleted = await client.delete(f"/v1/api-keys/{created['id']}", headers=owner.auth)

    assert before.status == 403
    assert deleted.status == 204
    after = await client.get("/v1/me", headers=key_auth)
    assert after.status == 401
    assert (await after.json())["code"] == "unauthenticated"


@pytest.mark.parametrize(
    "body",
    [
        {"name": "k", "scopes": []},
        {"name": "k", "scopes": ["admin"]},
        {"name": "k", "scopes": "calls"},
        {"name": "", "scopes": ["calls"]},
        {"scopes": ["calls"]},
    ],
)
async def test_api_key_creation_refuses_bad_scopes_and_names(
    client: TestClient, owner: Customer, body: dict
) -> None:
    resp = await client.post("/v1/api-keys", json=body, headers=owner.auth)

    assert resp.status == 422


async def test_lists_page_with_cursor(client: TestClient, owner: Customer) -> None:
    for i in range(5):
        await client.post(
            "/v1/api-keys", json={"name": f"k{i}", "scopes": ["calls"]}, headers=owner.auth
        )

    first = await (await client.get("/v1/api-keys?limit=2", headers=owner.auth)).json()
    second = await (
        await client.get(f"/v1/api-keys?limit=2&cursor={first['next_cursor']}", headers=owner.auth)
    ).json()
    third = await (
        await client.get(f"/v1/api-keys?limit=2&cursor={second['next_cursor']}", headers=owner.auth)
    ).json()

    names = [k["name"] for page in (first, second, third) for k in page["items"]]
    assert names == ["k0", "k1", "k2", "k3", "k4"]
    assert third["next_cursor"] is None
    bad = await client.get("/v1/api-keys?cursor=%%%", headers=owner.auth)
    assert bad.status == 422
    too_many = await client.get("/v1/api-keys?limit=201", headers=owner.auth)
    assert too_many.status == 422
