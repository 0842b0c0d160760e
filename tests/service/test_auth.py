"""Logins, the security log (S2), throttling, staff least access (S5) and 401/403/404."""

from __future__ import annotations

from datetime import UTC, datetime

import asyncpg
import pytest
from aiohttp.test_utils import TestClient

from storage.keys.passwords import PasswordHasher
from telephony.domain.roles import StaffRole
from telephony.settings import Settings
from telephony.usecases import identity
from telephony.web.app import create_app
from tests.conftest import PASSWORD, Customer, ServiceServer, login, new_customer

UA = {"User-Agent": "pytest-agent/1.0"}


async def make_staff(pool: asyncpg.Pool, settings: Settings, role: str) -> str:
    email = f"{role}@staff.example.com"
    await identity.create_staff(
        pool,
        PasswordHasher(settings.argon2),
        email=email,
        name=role,
        role=StaffRole(role),
        password=PASSWORD,
        now=datetime.now(UTC),
    )
    return email


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


# -- login and the security log ------------------------------------------------------


async def test_successful_login_is_logged_with_user_address_and_agent(
    client: TestClient, owner: Customer, pool: asyncpg.Pool
) -> None:
    """S2: time, user identifier, source address, user agent."""
    resp = await client.post(
        "/v1/sessions", json={"email": owner.email, "password": PASSWORD}, headers=UA
    )

    assert resp.status == 201
    body = await resp.json()
    assert body["token"].startswith("st_")
    assert body["expires_at"].endswith("Z")
    async with pool.acquire() as conn:
        row = await conn.fetchrow(
            "SELECT * FROM security_log WHERE outcome = 'success' ORDER BY id DESC LIMIT 1"
        )
    assert row["user_id"] == owner.user_id
    assert row["event"] == "login"
    assert row["source_address"] == "127.0.0.1"
    assert row["user_agent"] == "pytest-agent/1.0"
    assert row["at"] is not None


async def test_wrong_password_and_unknown_email_get_the_same_answer(
    client: TestClient, owner: Customer, pool: asyncpg.Pool
) -> None:
    wrong = await client.post("/v1/sessions", json={"email": owner.email, "password": "x" * 14})
    unknown = await client.post(
        "/v1/sessions", json={"email": "nobody@example.com", "password": "x" * 14}
    )

    assert wrong.status == unknown.status == 401
    assert await wrong.json() == await unknown.json()
    assert (await wrong.json())["code"] == "invalid-credentials"
    async with pool.acquire() as conn:
        rows = await conn.fetch(
            "SELECT user_id, email FROM security_log WHERE outcome = 'failure' ORDER BY id"
        )
    # The failure names the user when one matched, else the attempted e-mail.
    assert [(r["user_id"], r["email"]) for r in rows] == [
        (owner.user_id, owner.email),
        (None, "nobody@example.com"),
    ]


async def test_repeated_failures_for_one_email_are_throttled(
    client: TestClient, owner: Customer, pool: asyncpg.Pool
) -> None:
    for _ in range(5):
        resp = await client.post("/v1/sessions", json={"email": owner.email, "password": "x" * 14})
        assert resp.status == 401

    # Even the right password is refused while the e-mail is throttled.
    blocked = await client.post("/v1/sessions", json={"email": owner.email, "password": PASSWORD})

    assert blocked.status == 429
    assert (await blocked.json())["code"] == "too-many-attempts"
    assert int(blocked.headers["Retry-After"]) > 0
    async with pool.acquire() as conn:
        throttled = await conn.fetchval(
            "SELECT count(*) FROM security_log WHERE outcome = 'throttled'"
        )
    assert throttled == 1


async def test_repeated_failures_from_one_address_are_throttled(
    settings: Settings, pool: asyncpg.Pool
) -> None:
    app = create_app(settings.replace(login_max_failures_per_address=4), run_workers=False)
    async with TestClient(ServiceServer(app)) as client:
        for i in range(4):
            resp = await client.post(
                "/v1/sessions", json={"email": f"guess{i}@example.com", "password": "x" * 14}
            )
            assert resp.status == 401

        blocked = await client.post(
            "/v1/sessions", json={"email": "fresh@example.com", "password": "x" * 14}
        )

    assert blocked.status == 429


async def test_logout_ends_the_session(client: TestClient, owner: Customer) -> None:
    resp = await client.delete("/v1/sessions/current", headers=owner.auth)

    assert resp.status == 204
    after = await client.get("/v1/me", headers=owner.auth)
    assert after.status == 401


async def test_other_sessions_survive_a_logout(client: TestClient, owner: Customer) -> None:
    second = await login(client, owner.email)

    await client.delete("/v1/sessions/current", headers=owner.auth)

    assert (await client.get("/v1/me", headers=bearer(second))).status == 200


@pytest.mark.parametrize(
    "header",
    [
        None,
        "Bearer",
        "Bearer ",
        "Basic dXNlcjpwYXNz",
        "Bearer st_not-a-real-token",
        "Bearer sk_not-a-real-token",
        "Bearer something-else",
        "Bearer " + "a" * 5000,
    ],
)
async def test_missing_or_bad_token_is_unauthenticated(
    client: TestClient, header: str | None
) -> None:
    headers = {"Authorization": header} if header is not None else {}

    resp = await client.get("/v1/me", headers=headers)

    assert resp.status == 401
    assert resp.content_type == "application/problem+json"
    assert (await resp.json())["code"] == "unauthenticated"
    assert resp.headers["WWW-Authenticate"].startswith("Bearer")


# -- staff: least access (S5) ---------------------------------------------------------


CUSTOMER_ROUTES = [
    ("GET", "/v1/me", None),
    ("PATCH", "/v1/me", {"name": "x"}),
    ("GET", "/v1/account", None),
    ("PATCH", "/v1/account", {"name": "x"}),
    ("GET", "/v1/users", None),
    ("POST", "/v1/users", {"email": "a@example.com", "name": "A"}),
    ("PATCH", "/v1/users/usr_x", {"name": "x"}),
    ("DELETE", "/v1/users/usr_x", None),
    ("GET", "/v1/api-keys", None),
    ("POST", "/v1/api-keys", {"name": "k", "scopes": ["calls"]}),
    ("DELETE", "/v1/api-keys/key_x", None),
]


@pytest.mark.parametrize("role", ["support", "security_admin"])
@pytest.mark.parametrize(("method", "path", "body"), CUSTOMER_ROUTES)
async def test_staff_calling_a_customer_route_is_forbidden(
    client: TestClient,
    pool: asyncpg.Pool,
    settings: Settings,
    role: str,
    method: str,
    path: str,
    body: dict | None,
) -> None:
    token = await login(client, await make_staff(pool, settings, role))

    resp = await client.request(method, path, json=body, headers=bearer(token))

    assert resp.status == 403
    assert (await resp.json())["code"] == "forbidden"


async def test_security_admin_reads_the_security_log(
    client: TestClient, pool: asyncpg.Pool, settings: Settings, owner: Customer
) -> None:
    await client.post("/v1/sessions", json={"email": owner.email, "password": "x" * 14})
    token = await login(client, await make_staff(pool, settings, "security_admin"))

    resp = await client.get(f"/v1/security-log?email={owner.email}", headers=bearer(token))

    assert resp.status == 200
    items = (await resp.json())["items"]
    assert [(i["event"], i["outcome"]) for i in items] == [
        ("login", "failure"),
        ("login", "success"),
    ]
    assert all(i["user_id"] == owner.user_id for i in items)


async def test_security_log_pages_backwards(
    client: TestClient, pool: asyncpg.Pool, settings: Settings, owner: Customer
) -> None:
    for _ in range(3):
        await login(client, owner.email)
    token = await login(client, await make_staff(pool, settings, "security_admin"))

    first = await (await client.get("/v1/security-log?limit=2", headers=bearer(token))).json()
    rest = await (
        await client.get(
            f"/v1/security-log?limit=200&cursor={first['next_cursor']}", headers=bearer(token)
        )
    ).json()

    ids = [i["id"] for i in first["items"] + rest["items"]]
    assert ids == sorted(ids, reverse=True)
    # The owner fixture's login, three more, the staff user's creation (audited here, since
    # staff have no account trail) and their login: six in all.
    assert len(ids) == len(set(ids)) == 6
    assert rest["next_cursor"] is None


@pytest.mark.parametrize("who", ["support", "owner", "api_key"])
async def test_security_log_is_only_for_security_admins(
    client: TestClient, pool: asyncpg.Pool, settings: Settings, owner: Customer, who: str
) -> None:
    if who == "support":
        token = await login(client, await make_staff(pool, settings, "support"))
    elif who == "owner":
        token = owner.token
    else:
        resp = await client.post(
            "/v1/api-keys", json={"name": "k", "scopes": ["calls"]}, headers=owner.auth
        )
        token = (await resp.json())["token"]

    resp = await client.get("/v1/security-log", headers=bearer(token))

    assert resp.status == 403


async def test_accounts_do_not_see_each_others_keys(client: TestClient, owner: Customer) -> None:
    other = await new_customer(client)
    created = await (
        await client.post(
            "/v1/api-keys", json={"name": "k", "scopes": ["calls"]}, headers=other.auth
        )
    ).json()

    listed = await (await client.get("/v1/api-keys", headers=owner.auth)).json()
    deleted = await client.delete(f"/v1/api-keys/{created['id']}", headers=owner.auth)

    assert listed["items"] == []
    assert deleted.status == 404


async def test_an_api_keys_last_use_is_written_at_most_once_a_minute(
    client: TestClient, pool: asyncpg.Pool, owner: Customer
) -> None:
    """A hot key must not turn every request into a write, yet its last use stays true to
    the minute (the owner's key list shows it)."""
    created = await (
        await client.post(
            "/v1/api-keys", json={"name": "k", "scopes": ["calls"]}, headers=owner.auth
        )
    ).json()

    async def last_used() -> datetime | None:
        async with pool.acquire() as conn:
            found: datetime | None = await conn.fetchval(
                "SELECT last_used_at FROM api_keys WHERE id = $1", created["id"]
            )
            return found

    async def use() -> None:
        resp = await client.get("/v1/calls", headers=bearer(created["token"]))
        assert resp.status == 200

    assert await last_used() is None
    await use()
    first = await last_used()
    await use()
    assert first is not None and await last_used() == first  # within the minute: no write
    async with pool.acquire() as conn:
        await conn.execute(
            "UPDATE api_keys SET last_used_at = last_used_at - interval '61 seconds' WHERE id = $1",
            created["id"],
        )
    await use()
    later = await last_used()
    assert later is not None and later > first
    listed = await (await client.get("/v1/api-keys", headers=owner.auth)).json()
    assert listed["items"][0]["last_used_at"] is not None
