"""Throttling (S2, S6; issue 10): budgets taken before any hash, one attempt at a time.

Before, failures were counted outside the check: ten attempts started at once
all read "no failures yet" and all ran. Now each attempt takes a unit of its
e-mail's and its address's budget in one statement, before the password is
verified; signups and invitation acceptances have budgets per address; the
client's address is the right-most hop the trusted proxies did not add; and
every refused attempt, a malformed one included, is in the security log.
"""

from __future__ import annotations

import asyncio
import ipaddress
from typing import Any

import asyncpg
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, make_mocked_request

from telephony.settings import Settings, SettingsError
from telephony.web.app import create_app
from telephony.web.appkeys import SETTINGS
from telephony.web.auth import client_address
from tests.conftest import PASSWORD, Customer, ServiceServer, signup_body


async def security_rows(pool: asyncpg.Pool, event: str) -> list[asyncpg.Record]:
    async with pool.acquire() as conn:
        return await conn.fetch(
            "SELECT outcome, email, details FROM security_log WHERE event = $1 ORDER BY id", event
        )


async def test_parallel_wrong_passwords_get_no_more_than_the_budget(
    client: TestClient, owner: Customer, pool: asyncpg.Pool
) -> None:
    wrong = {"email": owner.email, "password": "not the password!"}

    answers = await asyncio.gather(*(client.post("/v1/sessions", json=wrong) for _ in range(12)))

    statuses = sorted(r.status for r in answers)
    assert statuses == [401] * 5 + [429] * 7
    rows = await security_rows(pool, "login")
    assert [r["outcome"] for r in rows].count("failure") == 5
    assert [r["outcome"] for r in rows].count("throttled") == 7


async def test_a_successful_sign_in_uses_up_no_budget(client: TestClient, owner: Customer) -> None:
    wrong = {"email": owner.email, "password": "not the password!"}
    right = {"email": owner.email, "password": PASSWORD}

    failures = [(await client.post("/v1/sessions", json=wrong)).status for _ in range(4)]
    success = (await client.post("/v1/sessions", json=right)).status
    fifth = (await client.post("/v1/sessions", json=wrong)).status
    sixth = (await client.post("/v1/sessions", json=wrong)).status

    assert (failures, success, fifth, sixth) == ([401] * 4, 201, 401, 429)


async def test_signups_from_one_address_are_limited_before_any_hash(
    settings: Settings, pool: asyncpg.Pool
) -> None:
    app = create_app(settings.replace(signup_max_per_address=3), run_workers=False)
    async with TestClient(ServiceServer(app)) as client:
        answers = [(await client.post("/v1/signup", json=signup_body())).status for _ in range(5)]

    assert answers == [201, 201, 201, 429, 429]
    async with pool.acquire() as conn:
        assert await conn.fetchval("SELECT count(*) FROM users") == 3
    assert [r["outcome"] for r in await security_rows(pool, "signup")] == ["throttled"] * 2


async def test_invitation_guesses_from_one_address_are_limited(
    settings: Settings, pool: asyncpg.Pool
) -> None:
    app = create_app(settings.replace(invitation_max_per_address=3), run_workers=False)
    guess = {"token": "inv_" + "x" * 43, "password": PASSWORD}
    async with TestClient(ServiceServer(app)) as client:
        answers = [
            (await client.post("/v1/invitations/accept", json=guess)).status for _ in range(5)
        ]

    assert answers == [401, 401, 401, 429, 429]


@pytest.mark.parametrize(
    ("path", "body", "event", "email"),
    [
        pytest.param(
            "/v1/sessions", {"email": "who@example.com"}, "login", "who@example.com", id="login"
        ),
        pytest.param(
            "/v1/signup",
            {**signup_body(email="new@example.com"), "password": "short"},
            "signup",
            "new@example.com",
            id="signup",
        ),
        pytest.param(
            "/v1/invitations/accept",
            {"token": "t" * 300, "password": PASSWORD},
            "invitation",
            None,
            id="invitation",
        ),
    ],
)
async def test_attempts_refused_as_malformed_are_in_the_security_log(
    client: TestClient,
    pool: asyncpg.Pool,
    path: str,
    body: dict[str, Any],
    event: str,
    email: str | None,
) -> None:
    resp = await client.post(path, json=body)

    assert resp.status == 422
    [row] = await security_rows(pool, event)
    assert (row["outcome"], row["email"]) == ("refused", email)
    assert row["details"] == {"reason": "validation-failed"}


# -- the client's address ---------------------------------------------------------------------


def _request(remote: str, forwarded: str | None, trusted: str) -> web.Request:
    app = web.Application()
    networks = tuple(ipaddress.ip_network(n) for n in trusted.split(",") if n)
    app[SETTINGS] = Settings(trusted_proxies=networks)
    headers = {"X-Forwarded-For": forwarded} if forwarded is not None else {}
    transport: Any = type("T", (), {"get_extra_info": lambda self, name, d=None: (remote, 1)})()
    return make_mocked_request("GET", "/", headers=headers, app=app, transport=transport)


@pytest.mark.parametrize(
    ("remote", "forwarded", "trusted", "client"),
    [
        pytest.param("203.0.113.9", "1.2.3.4", "", "203.0.113.9", id="no proxy trusted"),
        pytest.param("203.0.113.9", "1.2.3.4", "127.0.0.1/32", "203.0.113.9", id="untrusted peer"),
        pytest.param("127.0.0.1", "1.2.3.4", "127.0.0.1/32", "1.2.3.4", id="one proxy"),
        pytest.param(
            "127.0.0.1", "6.6.6.6, 1.2.3.4", "127.0.0.1/32", "1.2.3.4", id="client-chosen left"
        ),
        pytest.param(
            "127.0.0.1",
            "6.6.6.6, 1.2.3.4, 10.0.0.7",
            "127.0.0.1/32,10.0.0.0/8",
            "1.2.3.4",
            id="two proxies",
        ),
        pytest.param(
            "127.0.0.1",
            "10.0.0.8, 10.0.0.7",
            "127.0.0.1/32,10.0.0.0/8",
            "127.0.0.1",
            id="all hops trusted",
        ),
        pytest.param("127.0.0.1", "1.2.3.4, garbage", "127.0.0.1/32", "127.0.0.1", id="garbled"),
        pytest.param("127.0.0.1", None, "127.0.0.1/32", "127.0.0.1", id="no header"),
    ],
)
def test_the_client_is_the_right_most_hop_no_trusted_proxy_added(
    remote: str, forwarded: str | None, trusted: str, client: str
) -> None:
    assert client_address(_request(remote, forwarded, trusted)) == client


def test_trusted_proxies_are_read_as_cidrs() -> None:
    settings = Settings.from_env({"TELEPHONY_TRUSTED_PROXIES": "10.0.0.0/8, 192.0.2.1"})

    assert settings.trusted_proxies == (
        ipaddress.ip_network("10.0.0.0/8"),
        ipaddress.ip_network("192.0.2.1/32"),
    )
    with pytest.raises(SettingsError, match="TELEPHONY_TRUSTED_PROXIES"):
        Settings.from_env({"TELEPHONY_TRUSTED_PROXIES": "not-a-network"})
