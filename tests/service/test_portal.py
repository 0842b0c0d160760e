"""The portal over HTTP: sessions, CSRF, headers, each page's content and the rules it
shares with the API. The real-browser scenarios are in tests/browser/."""

from __future__ import annotations

import re
from datetime import UTC, datetime

import asyncpg
import pytest
from aiohttp.test_utils import TestClient

from telephony.domain.actors import Actor
from telephony.usecases import policy
from tests.conftest import (
    PASSWORD,
    Customer,
    consented_call,
    new_customer,
    signup_body,
)
from tests.support.mail import mailed_token
from tests.support.portal import csrf_of, form_token, sign_in, sign_out, submit
from tests.support.staff import new_staff

CUSTOMER_PAGES = ["/calls", "/recordings", "/keys", "/members", "/settings", "/audit", "/privacy"]


# -- sessions --------------------------------------------------------------------------


async def test_signing_in_sets_one_strict_http_only_cookie_and_lands_on_calls(
    client: TestClient, owner: Customer
) -> None:
    resp = await sign_in(client, owner.email)

    assert resp.headers["Location"] == "/calls"
    cookie = [c for c in resp.headers.getall("Set-Cookie") if c.startswith("telephony_session=")]
    assert len(cookie) == 1
    assert "HttpOnly" in cookie[0] and "SameSite=Strict" in cookie[0] and "Path=/" in cookie[0]
    assert "Secure" not in cookie[0]  # the test server is plain http
    page = await client.get("/calls")
    assert page.status == 200 and owner.email in await page.text()


async def test_with_an_https_public_url_the_cookie_is_secure_and_host_prefixed(
    settings: object, pool: asyncpg.Pool, mailbox: object
) -> None:
    from telephony.web.app import create_app
    from tests.conftest import ServiceServer
    from tests.support.mail import MAILBOX

    app = create_app(settings.replace(public_url="https://rec.example.com"), run_workers=False)  # type: ignore[attr-defined]
    app[MAILBOX] = mailbox  # type: ignore[assignment]
    async with TestClient(ServiceServer(app)) as https_client:
        body = signup_body()
        assert (await https_client.post("/v1/signup", json=body)).status == 201
        form = await https_client.get("/login")
        anonymous = form.headers["Set-Cookie"]
        assert anonymous.startswith("__Host-telephony_csrf=") and "Secure" in anonymous
        # A browser sends a Secure cookie over https only; this test server is http, so
        # the test hands it back itself.
        resp = await https_client.post(
            "/login",
            data={
                "email": body["email"],
                "password": PASSWORD,
                "csrf_token": csrf_of(await form.text()),
            },
            headers={
                "Origin": "https://rec.example.com",
                "Cookie": anonymous.split(";")[0],
            },
            allow_redirects=False,
        )

    cookie = next(c for c in resp.headers.getall("Set-Cookie") if "session=" in c)
    assert cookie.startswith("__Host-telephony_session=")
    assert "Secure" in cookie and "HttpOnly" in cookie and "SameSite=Strict" in cookie


async def test_signing_out_ends_the_session_on_the_server(
    client: TestClient, owner: Customer, pool: asyncpg.Pool
) -> None:
    resp = await sign_in(client, owner.email)
    cookie = resp.cookies["telephony_session"].value

    await sign_out(client)

    async with pool.acquire() as conn:
        live = await conn.fetchval(
            "SELECT count(*) FROM sessions WHERE revoked_at IS NULL AND user_id = $1",
            owner.user_id,
        )
    assert live == 1  # only the API session of the fixture is left
    replay = await client.get(
        "/calls", cookies={"telephony_session": cookie}, allow_redirects=False
    )
    assert replay.status == 303 and replay.headers["Location"].startswith("/login")


async def test_a_wrong_password_is_401_and_in_the_security_log(
    client: TestClient, owner: Customer, pool: asyncpg.Pool
) -> None:
    resp = await submit(
        client, "/login", "/login", {"email": owner.email, "password": "nope nope nope"}
    )

    assert resp.status == 401
    assert "E-mail or password is wrong" in await resp.text()
    async with pool.acquire() as conn:
        failures = await conn.fetchval(
            "SELECT count(*) FROM security_log WHERE event = 'login' AND outcome = 'failure'"
        )
    assert failures == 1


async def test_sign_in_is_throttled_like_the_api(client: TestClient, owner: Customer) -> None:
    statuses = []
    for _ in range(6):
        resp = await submit(
            client, "/login", "/login", {"email": owner.email, "password": "wrong password 1"}
        )
        statuses.append(resp.status)

    assert statuses == [401] * 5 + [429]


async def test_pages_need_a_session_and_send_the_visitor_to_sign_in(client: TestClient) -> None:
    for path in [*CUSTOMER_PAGES, "/support", "/security/log"]:
        resp = await client.get(path, allow_redirects=False)
        assert resp.status == 303, path
        assert resp.headers["Location"].startswith("/login?next=")


async def test_next_is_only_a_local_path(client: TestClient, owner: Customer) -> None:
    token = await form_token(client, "/login?next=//evil.example/x")
    resp = await client.post(
        "/login",
        data={
            "email": owner.email,
            "password": PASSWORD,
            "next": "//evil.example/x",
            "csrf_token": token,
        },
        allow_redirects=False,
    )

    assert resp.headers["Location"] == "/calls"


# -- CSRF ------------------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/login", "/logout", "/signup", "/password-reset", "/keys"])
async def test_a_form_without_its_token_is_403_csrf_failed(
    client: TestClient, owner: Customer, path: str
) -> None:
    await sign_in(client, owner.email)

    resp = await client.post(
        path, data={"email": owner.email, "password": PASSWORD}, allow_redirects=False
    )

    assert resp.status == 403
    assert resp.content_type == "application/problem+json"
    assert (await resp.json())["code"] == "csrf-failed"


async def test_a_form_from_another_origin_is_refused_even_with_a_token(
    client: TestClient, owner: Customer, pool: asyncpg.Pool
) -> None:
    await sign_in(client, owner.email)
    token = await form_token(client, "/keys")

    resp = await client.post(
        "/keys",
        data={"name": "evil", "scopes": "calls", "csrf_token": token},
        headers={"Origin": "https://evil.example"},
    )

    assert resp.status == 403 and (await resp.json())["code"] == "csrf-failed"
    async with pool.acquire() as conn:
        assert await conn.fetchval("SELECT count(*) FROM api_keys") == 0


async def test_one_sessions_token_does_not_serve_another(
    client: TestClient, owner: Customer
) -> None:
    await sign_in(client, owner.email)
    mine = await form_token(client, "/keys")
    other = await new_customer(client)
    await sign_out(client)
    await sign_in(client, other.email)

    resp = await client.post("/keys", data={"name": "k", "scopes": "calls", "csrf_token": mine})

    assert resp.status == 403


async def test_a_cookie_never_authenticates_the_json_api(
    client: TestClient, owner: Customer
) -> None:
    await sign_in(client, owner.email)

    resp = await client.get("/v1/me")

    assert resp.status == 401


# -- headers -----------------------------------------------------------------------------


async def test_every_page_carries_the_csp_and_no_store(client: TestClient, owner: Customer) -> None:
    for path in ["/login", "/signup", "/password-reset", "/policy"]:
        resp = await client.get(path)
        _assert_page_headers(resp.headers, path)
    await sign_in(client, owner.email)
    for path in CUSTOMER_PAGES:
        resp = await client.get(path)
        assert resp.status == 200, (path, await resp.text())
        _assert_page_headers(resp.headers, path)


def _assert_page_headers(headers: object, path: str) -> None:
    csp = headers["Content-Security-Policy"]  # type: ignore[index]
    scripts = re.search(r"script-src ([^;]+)", csp)
    assert scripts and "unsafe-inline" not in scripts.group(1) and "unsafe-eval" not in csp, path
    assert "frame-ancestors 'none'" in csp, path
    assert headers["X-Content-Type-Options"] == "nosniff", path  # type: ignore[index]
    assert headers["Referrer-Policy"] == "same-origin", path  # type: ignore[index]
    assert headers["Cache-Control"] == "no-store", path  # type: ignore[index]


async def test_pages_carry_no_inline_script_or_style(client: TestClient, owner: Customer) -> None:
    await sign_in(client, owner.email)
    for path in ["/login", *CUSTOMER_PAGES]:
        text = await (await client.get(path)).text()
        assert not re.search(r"<script(?![^>]*\bsrc=)", text), path
        assert " style=" not in text and "<style" not in text, path
        assert "http://" not in text.replace("http://127.0.0.1", "") or path == "/settings", path


# -- languages -----------------------------------------------------------------------------


async def test_a_polish_browser_gets_polish_pages(client: TestClient) -> None:
    resp = await client.get("/login", headers={"Accept-Language": "pl-PL,pl;q=0.9,en;q=0.5"})

    text = await resp.text()
    assert resp.headers["Content-Language"] == "pl"
    assert '<html lang="pl">' in text
    assert "Zaloguj się" in text and "Hasło" in text


async def test_the_language_switch_outranks_the_browser_and_is_saved(
    client: TestClient, owner: Customer
) -> None:
    await sign_in(client, owner.email)

    resp = await submit(client, "/calls", "/language", {"language": "pl", "next": "/calls"})
    page = await client.get("/calls", headers={"Accept-Language": "en"})
    me = await client.get("/v1/me", headers=owner.auth)

    assert resp.status == 303
    assert page.headers["Content-Language"] == "pl"
    assert (await me.json())["language"] == "pl"


# -- customer pages --------------------------------------------------------------------------


async def test_the_calls_page_filters_like_the_api(client: TestClient, owner: Customer) -> None:
    first = await consented_call(client, owner)
    made = await client.post(
        "/v1/calls",
        json={
            "direction": "inbound",
            "from": "+442079460958",
            "to": "+48221234567",
            "counterparts": [{"label": "caller", "number": "+14155550123"}],
        },
        headers=owner.auth,
    )
    second = await made.json()
    await client.post(f"/v1/calls/{first['id']}/end", headers=owner.auth)
    await sign_in(client, owner.email)

    everything = await (await client.get("/calls")).text()
    active = await (await client.get("/calls?status=active")).text()
    by_number = await (await client.get("/calls?number=%2B14155550123")).text()
    by_from = await (await client.get("/calls?number=%2B442079460958")).text()
    recorded = await (await client.get("/calls?has_recording=true")).text()
    future = await (await client.get("/calls?from=2999-01-01")).text()
    bad = await client.get("/calls?number=12345")

    assert first["id"] in everything and second["id"] in everything
    assert everything.index(second["id"]) < everything.index(first["id"])  # newest first
    assert second["id"] in active and first["id"] not in active
    assert second["id"] in by_number and first["id"] not in by_number
    assert second["id"] in by_from and first["id"] not in by_from
    assert first["id"] not in recorded and second["id"] not in recorded
    assert first["id"] not in future and second["id"] not in future
    assert bad.status == 422 and "number" in await bad.text()


async def test_the_calls_page_pages_by_keyset(client: TestClient, owner: Customer) -> None:
    from tests.conftest import new_call

    made = [(await new_call(client, owner))["id"] for _ in range(27)]
    await sign_in(client, owner.email)

    first = await (await client.get("/calls")).text()
    link = re.search(r'href="(/calls\?cursor=[^"]+)" rel="next"', first)
    assert link
    second = await (await client.get(link.group(1).replace("&amp;", "&"))).text()

    on_first = [c for c in made if c in first]
    on_second = [c for c in made if c in second]
    assert len(on_first) == 25 and len(on_second) == 2
    assert set(on_first).isdisjoint(on_second)
    assert 'rel="next"' not in second


async def test_another_accounts_call_is_a_404_page(client: TestClient, owner: Customer) -> None:
    call = await consented_call(client, owner)
    other = await new_customer(client)
    await sign_in(client, other.email)

    resp = await client.get(f"/calls/{call['id']}")

    assert resp.status == 404
    assert resp.content_type == "text/html"


async def test_a_new_api_key_token_is_shown_once(client: TestClient, owner: Customer) -> None:
    await sign_in(client, owner.email)

    made = await submit(client, "/keys", "/keys", {"name": "crm", "scopes": "calls"})
    again = await client.get("/keys")

    text = await made.text()
    token = re.search(r"(sk_[A-Za-z0-9_-]{20,})", text)
    assert made.status == 201 and token
    assert token.group(1) not in await again.text()
    assert "crm" in await again.text()
    assert (
        await client.get("/v1/calls", headers={"Authorization": f"Bearer {token.group(1)}"})
    ).status == 200


async def test_a_member_sees_no_owner_pages(client: TestClient, owner: Customer) -> None:
    await sign_in(client, owner.email)
    invited = await submit(
        client, "/members", "/members", {"email": "m@example.com", "name": "Mia", "role": "member"}
    )
    assert invited.status == 201
    token = await mailed_token(client, "m@example.com")
    await sign_out(client)
    accepted = await submit(
        client, f"/invitation?token={token}", "/invitation", {"token": token, "password": PASSWORD}
    )
    assert accepted.status == 303
    await sign_in(client, "m@example.com")

    for path in ["/keys", "/members", "/audit"]:
        resp = await client.get(path)
        assert resp.status == 403, path
    assert (await client.get("/calls")).status == 200
    assert (await client.get("/settings")).status == 200


# -- support and security ------------------------------------------------------------------


async def test_support_sees_consent_with_masked_numbers_and_no_audio(
    client: TestClient, owner: Customer, pool: asyncpg.Pool
) -> None:
    call = await consented_call(client, owner)
    email = await new_staff(client, pool, "support")
    landed = await sign_in(client, email)

    page = await client.get(f"/support/calls/{call['id']}")

    text = await page.text()
    assert landed.headers["Location"] == "/support"
    assert page.status == 200
    number = call["counterparts"][0]["number"]
    assert number not in text and number[-3:] in text
    assert "granted" in text
    for forbidden in ("<audio", "/audio", "/recordings/"):
        assert forbidden not in text
    trail = await client.get("/v1/audit", headers=owner.auth)
    actions = [e["action"] for e in (await trail.json())["items"]]
    assert "support.viewed_consent" in actions


async def test_support_is_kept_from_customer_pages_and_customers_from_support(
    client: TestClient, owner: Customer, pool: asyncpg.Pool
) -> None:
    email = await new_staff(client, pool, "support")
    await sign_in(client, email)
    assert (await client.get("/calls", allow_redirects=False)).headers["Location"] == "/support"
    assert (await client.get("/security/log")).status == 403
    await sign_out(client)
    await sign_in(client, owner.email)
    assert (await client.get("/support", allow_redirects=False)).headers["Location"] == "/calls"


async def test_staff_access_is_asked_approved_for_hours_and_announced(
    client: TestClient, pool: asyncpg.Pool
) -> None:
    support = await new_staff(client, pool, "support", "sup@staff.example.com")
    admin = await new_staff(client, pool, "security_admin", "adm@staff.example.com")
    await sign_in(client, support)
    asked = await submit(
        client,
        "/staff/access",
        "/staff/access",
        {"role": "security_admin", "reason": "incident 42"},
    )
    assert asked.status == 201
    assert (await client.get("/security/log")).status == 403
    page = await client.get("/staff/access")
    assert "incident 42" in await page.text() and "/approve" not in await page.text()
    await sign_out(client)

    await sign_in(client, admin)
    async with pool.acquire() as conn:
        request_id = await conn.fetchval("SELECT id FROM staff_access_requests")
    approved = await submit(client, "/staff/access", f"/staff/access/{request_id}/approve", {})
    assert approved.status == 303
    await sign_out(client)

    await sign_in(client, support)
    log = await client.get("/security/log")
    assert log.status == 200
    async with pool.acquire() as conn:
        grant = await conn.fetchrow("SELECT decided_at, expires_at FROM staff_access_requests")
        events = [
            r["event"]
            for r in await conn.fetch("SELECT event FROM staff_notifications ORDER BY id")
        ]
        logged = [
            r["event"] for r in await conn.fetch("SELECT event FROM security_log ORDER BY id")
        ]
    assert (grant["expires_at"] - grant["decided_at"]).total_seconds() == 8 * 3600
    assert "staff_access.requested" in events and "staff_access.approved" in events
    assert "staff_access.approved" in logged
    # The grant lapses on its own.
    async with pool.acquire() as conn:
        await conn.execute("UPDATE staff_access_requests SET expires_at = now() - interval '1 s'")
    assert (await client.get("/security/log")).status == 403


async def test_nobody_approves_their_own_request(client: TestClient, pool: asyncpg.Pool) -> None:
    admin = await new_staff(client, pool, "security_admin")
    await sign_in(client, admin)
    await submit(client, "/staff/access", "/staff/access", {"role": "support", "reason": "cover"})
    async with pool.acquire() as conn:
        request_id = await conn.fetchval("SELECT id FROM staff_access_requests")

    resp = await submit(client, "/staff/access", f"/staff/access/{request_id}/approve", {})

    assert resp.status == 403


# -- policy (P1) ---------------------------------------------------------------------------


async def test_the_policy_page_shows_the_version_in_force_and_the_earlier_ones(
    client: TestClient, pool: asyncpg.Pool
) -> None:
    empty = await client.get("/policy")
    assert "No version" in await empty.text()
    for version, body in (("1.0", "First text."), ("2.0", "Second <b>text</b>.")):
        await policy.publish(
            pool,
            version=version,
            body=body,
            material=False,
            actor=Actor.system("t"),
            now=datetime.now(UTC),
        )

    current = await (await client.get("/policy")).text()
    older = await (await client.get("/policy?version=1.0")).text()
    missing = await client.get("/policy?version=9.9")

    assert "Second &lt;b&gt;text&lt;/b&gt;." in current and "version in force" in current
    assert "First text." in older and "no longer in force" in older
    assert missing.status == 404


async def test_the_access_copy_downloads_from_the_privacy_page_as_the_api_gives_it(
    client: TestClient, owner: Customer
) -> None:
    """D1 in the portal: the same document as GET /v1/me/export, as a download, audited."""
    await sign_in(client, owner.email)

    page = await client.get("/privacy/export")
    api = await client.get("/v1/me/export", headers=owner.auth)

    assert page.status == 200
    assert page.headers["Content-Disposition"].startswith("attachment;")
    assert page.headers["Cache-Control"] == "no-store"
    mine, theirs = await page.json(), await api.json()
    assert [r["resource"] for r in mine["resources"]] == [
        r["resource"] for r in theirs["resources"]
    ]
    assert all(r["storage_location"] for r in mine["resources"])
    trail = await (await client.get("/v1/audit", headers=owner.auth)).json()
    assert [e["action"] for e in trail["items"]].count("privacy.exported") == 2
