"""The portal in a real browser (Debian's chromium through Playwright): the scenarios of
the portal issue, each a test, against the service on a loopback port.

Mail goes to the tests' real SMTP server (aiosmtpd); a test reads the link off it as the
person would. Screenshots of the main pages land in var/screenshots/ (not committed).
"""

from __future__ import annotations

import asyncio
import json
import re
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from joserfc import jws
from joserfc.jwk import KeySet
from playwright.async_api import Page, expect

from telephony.delivery.maildrop import text_of
from telephony.web.api.receipts import JWKS_PATH
from tests.browser.harness import NewPage, ResponseLog, axe_violations, screenshot
from tests.conftest import PASSWORD, Customer, consented_call, signup_body
from tests.support.mail import inbox, mailed_token
from tests.support.media import MARKER, VOICE, connect, frames_received, writer_of
from tests.support.pacing import ticks
from tests.support.recordings import status_is
from tests.support.staff import new_staff
from tests.support.waiting import eventually

NEW_PASSWORD = "a fresh passphrase for the browser 9"


def site(client: TestClient) -> str:
    return str(client.make_url("/")).rstrip("/")


async def sign_in(page: Page, email: str, password: str = PASSWORD) -> None:
    await page.goto("/login")
    await page.get_by_label("E-mail").fill(email)
    await page.get_by_label("Password").fill(password)
    await page.get_by_role("button", name="Sign in").click()
    await page.wait_for_load_state()


async def until(page: Page, predicate: str, arg: Any = None, timeout_s: float = 15) -> None:
    """Poll a predicate in the page through DevTools. (Playwright's wait_for_function
    compiles its predicate with eval, which the portal's CSP refuses, as it should.)"""

    async def holds() -> bool:
        return bool(await page.evaluate(predicate, arg))

    await eventually(holds, timeout_s=timeout_s, interval_s=0.1)


async def make_staff(client: TestClient, pool: asyncpg.Pool, role: str) -> str:
    return await new_staff(client, pool, role, f"{role}-browser@staff.example.com")


async def recorded_call(
    client: TestClient, owner: Customer, pool: asyncpg.Pool, *, real_time: bool = False
) -> dict[str, Any]:
    """A call streamed through the Twilio dialect: 3 s of voice, a pause (its audio dropped),
    3 s more, then the stream ends and the recording completes. `real_time` paces the
    frames as an engine does (20 ms each), so the call's clock and the file's agree;
    otherwise they go as fast as the socket takes them."""

    async def voice() -> None:
        if not real_time:
            await peer.media(VOICE, frames=150)
            return
        async for _ in ticks(15, 0.2):  # ten frames (200 ms) at a time, on the engine's clock
            await peer.media(VOICE, frames=10)

    call = await consented_call(client, owner)
    peer = await connect(client, call)
    await peer.start(tracks=("inbound",))
    resp = await client.post(
        f"/v1/calls/{call['id']}/recordings",
        json={"channels": "mono", "pause_behavior": "skip"},
        headers=owner.auth,
    )
    assert resp.status == 201, await resp.text()
    rec = await resp.json()
    await eventually(lambda: writer_of(client, call["id"]) is not None)
    await voice()
    await eventually(lambda: frames_received(client, call["id"]) >= peer.seq)
    await client.post(f"/v1/recordings/{rec['id']}/pause", headers=owner.auth)
    await peer.media(MARKER, frames=50)
    await client.post(f"/v1/recordings/{rec['id']}/resume", headers=owner.auth)
    await eventually(lambda: writer_of(client, call["id"]).recording)
    await voice()
    await eventually(lambda: frames_received(client, call["id"]) >= peer.seq)
    await peer.stop()
    await eventually(lambda: status_is(pool, rec["id"], "completed"))
    return {"call": call, "recording": rec}


# -- accounts ---------------------------------------------------------------------------


async def test_sign_up_sign_in_and_see_an_api_key_token_once(
    client: TestClient, new_page: NewPage
) -> None:
    page = await new_page(base_url=site(client))
    body = signup_body()
    await page.goto("/signup")
    await screenshot(page, "signup")
    await page.get_by_label("Company or account name").fill(body["account_name"])
    await page.get_by_label("Your name").fill(body["name"])
    await page.get_by_label("E-mail").fill(body["email"])
    await page.get_by_label("Password").fill(body["password"])
    await page.get_by_label("Postal address").fill(body["postal_address"])
    await page.get_by_label("I accept the terms").check()
    await page.get_by_label("I am at least 18").check()
    await page.get_by_role("button", name="Create account").click()
    await expect(page).to_have_url(re.compile(r"/calls$"))

    await page.get_by_role("button", name="Sign out").click()
    await expect(page).to_have_url(re.compile(r"/login"))
    await sign_in(page, body["email"])
    await expect(page).to_have_url(re.compile(r"/calls$"))
    await page.get_by_role("link", name="API keys").click()
    await page.get_by_label("Name", exact=True).fill("crm")
    await page.get_by_role("button", name="Create key").click()
    token = (await page.locator("#new-token").inner_text()).strip()
    await screenshot(page, "api-key-created")
    await page.goto("/keys")

    assert token.startswith("sk_")
    assert token not in await page.content()
    answer = await client.get("/v1/calls", headers={"Authorization": f"Bearer {token}"})
    assert answer.status == 200


async def test_an_invited_member_gets_the_mail_and_signs_in(
    client: TestClient, owner: Customer, new_page: NewPage
) -> None:
    page = await new_page(base_url=site(client))
    await sign_in(page, owner.email)
    await page.goto("/members")
    await page.get_by_label("E-mail").fill("mia.browser@example.com")
    await page.get_by_label("Name").fill("Mia Browser")
    await page.get_by_role("button", name="Send invitation").click()
    await expect(page.get_by_role("status")).to_contain_text("mia.browser@example.com")
    await screenshot(page, "members")

    messages = await inbox(client, "mia.browser@example.com")
    assert len(messages) == 1
    # The link names the service's public address; the test's server listens elsewhere.
    link = re.search(r"https?://\S+?(/invitation\?token=\S+)", text_of(messages[0]))
    assert link
    member = await new_page(base_url=site(client))
    await member.goto(link.group(1))
    await member.get_by_label("Choose a password").fill(PASSWORD)
    await member.get_by_role("button", name="Activate my account").click()
    await expect(member).to_have_url(re.compile(r"/login\?notice=activated"))
    await sign_in(member, "mia.browser@example.com")

    await expect(member).to_have_url(re.compile(r"/calls$"))
    await expect(member.get_by_role("link", name="API keys")).to_have_count(0)


async def test_password_reset_through_the_mail(
    client: TestClient, owner: Customer, new_page: NewPage
) -> None:
    page = await new_page(base_url=site(client))
    await page.goto("/login")
    await page.get_by_role("link", name="Forgot your password?").click()
    await page.get_by_label("E-mail").fill(owner.email)
    await page.get_by_role("button", name="Send me a link").click()
    await expect(page.get_by_role("status")).to_contain_text("30 minutes")

    token = await mailed_token(client, owner.email, "password_reset")
    await page.goto(f"/password-reset?token={token}")
    await page.get_by_label("New password").fill(NEW_PASSWORD)
    await page.get_by_role("button", name="Set the new password").click()
    await expect(page).to_have_url(re.compile(r"/login\?notice=password-changed"))
    await sign_in(page, owner.email, NEW_PASSWORD)

    await expect(page).to_have_url(re.compile(r"/calls$"))
    old = await client.get("/v1/me", headers=owner.auth)
    assert old.status == 401  # the API session from before the reset ended too


# -- recordings -----------------------------------------------------------------------------


async def test_a_recorded_call_is_listed_plays_seeks_and_shows_its_pause(
    client: TestClient, owner: Customer, pool: asyncpg.Pool, new_page: NewPage
) -> None:
    made = await recorded_call(client, owner, pool, real_time=True)
    rec_id, call_id = made["recording"]["id"], made["call"]["id"]
    page = await new_page(base_url=site(client))
    log = ResponseLog(page)
    await sign_in(page, owner.email)

    # The call is in the list, with its consent; from it, its recording.
    row = page.locator("tr", has=page.locator(f'a[href="/calls/{call_id}"]'))
    await expect(row).to_have_count(1)
    await expect(row).to_contain_text("granted")
    await row.get_by_role("link").click()
    await expect(page).to_have_url(re.compile(f"/calls/{call_id}$"))
    await screenshot(page, "call")
    await page.locator(f'a[href="/recordings/{rec_id}"]').click()
    await expect(page).to_have_url(re.compile(f"/recordings/{rec_id}$"))

    # The timeline: two recorded stretches with the pause between them.
    assert await page.locator("#timeline rect.recorded").count() == 2
    assert await page.locator("#timeline rect.paused").count() >= 1
    await expect(page.locator("#coverage")).to_contain_text("pause")

    player = page.locator("#player")
    await page.evaluate("document.getElementById('player').muted = true")
    await page.evaluate("document.getElementById('player').play()")
    await until(page, "() => document.getElementById('player').currentTime > 1.0")
    duration = await player.evaluate("p => p.duration")
    assert 5.5 < duration < 6.5  # 6 s kept; the paused second was never stored
    await player.evaluate("(p, t) => { p.currentTime = t; }", duration / 2)
    await until(
        page, "t => Math.abs(document.getElementById('player').currentTime - t) < 1", duration / 2
    )
    # A click on the second kept stretch seeks to where it begins in the file: 3 s in.
    await page.locator("#timeline rect.recorded").nth(1).click()
    await until(page, "() => Math.abs(document.getElementById('player').currentTime - 3) < 0.6")
    await screenshot(page, "recording")

    audio = await log.for_path(f"/recordings/{rec_id}/audio")
    assert any(r.status == 206 for r in audio), [(r.status, r.request_headers) for r in audio]
    ranged = [r for r in audio if r.status == 206]
    assert all(r.headers["content-range"].startswith("bytes ") for r in ranged)


@pytest.mark.filterwarnings("ignore:EdDSA is deprecated:joserfc.errors.SecurityWarning")
async def test_consent_and_deletion_receipts_are_shown_and_download_verifiable(
    client: TestClient, owner: Customer, pool: asyncpg.Pool, new_page: NewPage, tmp_path: Path
) -> None:
    """The call page links each consent event's receipt and each deleted recording's; a
    receipt page shows what it states, and its download verifies with the JWKS alone."""
    made = await recorded_call(client, owner, pool)
    call_id, rec_id = made["call"]["id"], made["recording"]["id"]
    assert (await client.delete(f"/v1/recordings/{rec_id}", headers=owner.auth)).status == 204
    page = await new_page(base_url=site(client), accept_downloads=True)
    await sign_in(page, owner.email)
    keys = KeySet.import_key_set(await (await client.get(JWKS_PATH)).json())

    downloaded: dict[str, dict[str, Any]] = {}
    for link, kind, heading, stated in (
        ("Signed receipt", "consent", "Consent receipt", "granted"),
        ("Deletion receipt", "deletion", "Deletion receipt", "key destroyed"),
    ):
        await page.goto(f"/calls/{call_id}")
        await page.get_by_role("link", name=link).click()
        await expect(page.get_by_role("heading", level=1)).to_have_text(heading)
        await expect(page.locator("dl.facts")).to_contain_text(stated)
        async with page.expect_download() as info:
            await page.get_by_role("link", name="Download the signed receipt (JSON)").click()
        path = tmp_path / f"{kind}.json"
        await (await info.value).save_as(path)
        downloaded[kind] = body = json.loads(await asyncio.to_thread(path.read_text))

        header, _, signature = body["signature"].split(".")
        jws.deserialize_compact(
            f"{header}.{body['payload']}.{signature}", keys, algorithms=["EdDSA"]
        )
        assert body["receipt"]["type"] == kind and body["receipt"]["call_id"] == call_id
    assert downloaded["deletion"]["receipt"]["recording_id"] == rec_id


async def test_the_downloaded_wav_is_the_apis_bytes(
    client: TestClient, owner: Customer, pool: asyncpg.Pool, new_page: NewPage, tmp_path: Path
) -> None:
    made = await recorded_call(client, owner, pool)
    rec_id = made["recording"]["id"]
    page = await new_page(base_url=site(client), accept_downloads=True)
    await sign_in(page, owner.email)
    await page.goto(f"/recordings/{rec_id}")

    async with page.expect_download() as wav_info:
        await page.get_by_role("link", name="WAV (16-bit PCM)").click()
    async with page.expect_download() as mp3_info:
        await page.get_by_role("link", name="MP3").click()
    wav_path, mp3_path = tmp_path / "portal.wav", tmp_path / "portal.mp3"
    await (await wav_info.value).save_as(wav_path)
    await (await mp3_info.value).save_as(mp3_path)

    api = await client.get(f"/v1/recordings/{rec_id}/audio", headers=owner.auth)
    wav, mp3 = (
        await asyncio.to_thread(wav_path.read_bytes),
        await asyncio.to_thread(mp3_path.read_bytes),
    )
    assert wav == await api.read()
    assert wav[:4] == b"RIFF"
    assert mp3[:2] in (b"\xff\xe3", b"\xff\xf3", b"\xff\xfb") or mp3[:3] == b"ID3"


async def test_a_deleted_recording_is_gone_from_the_list_and_answers_404(
    client: TestClient, owner: Customer, pool: asyncpg.Pool, new_page: NewPage
) -> None:
    made = await recorded_call(client, owner, pool)
    rec_id = made["recording"]["id"]
    page = await new_page(base_url=site(client))
    await sign_in(page, owner.email)
    await page.goto("/recordings")
    await expect(page.locator(f'a[href="/recordings/{rec_id}"]')).to_have_count(1)
    await page.goto(f"/recordings/{rec_id}")

    await page.get_by_role("link", name="Delete this recording…").click()
    await expect(page.get_by_role("alert")).to_contain_text("cannot be recovered")
    await screenshot(page, "recording-delete")
    await page.get_by_role("button", name="Delete the recording for good").click()
    await expect(page.get_by_role("status")).to_contain_text("deleted")
    await page.goto("/recordings")

    await expect(page.locator(f'a[href="/recordings/{rec_id}"]')).to_have_count(0)
    gone = await page.request.get(f"/recordings/{rec_id}/audio")
    assert gone.status == 404
    api = await client.get(f"/v1/recordings/{rec_id}", headers=owner.auth)
    assert api.status == 404


# -- support -----------------------------------------------------------------------------------


AUDIO_IN_DOM = """() => {
    const found = [];
    const media = 'audio, video, source, object, embed';
    for (const el of document.querySelectorAll(media)) found.push(el.outerHTML);
    const linked = '[href], [src], [action], [data-audio-start]';
    for (const a of document.querySelectorAll(linked)) {
        const url = a.getAttribute('href') || a.getAttribute('src')
            || a.getAttribute('action') || '';
        if (/audio|\\/recordings\\//i.test(url) || a.hasAttribute('data-audio-start')) {
            found.push(a.outerHTML);
        }
    }
    return found;
}"""


async def test_support_looks_up_a_call_sees_consent_and_no_audio_anywhere(
    client: TestClient, owner: Customer, pool: asyncpg.Pool, new_page: NewPage
) -> None:
    made = await recorded_call(client, owner, pool)
    call_id = made["call"]["id"]
    page = await new_page(base_url=site(client))
    await sign_in(page, await make_staff(client, pool, "support"))
    await expect(page).to_have_url(re.compile(r"/support$"))
    assert await page.evaluate(AUDIO_IN_DOM) == []
    await page.get_by_label("Call id").fill(call_id)
    await page.get_by_role("button", name="Look up").click()

    await expect(page).to_have_url(re.compile(f"/support/calls/{call_id}$"))
    await expect(page.locator("table").nth(1)).to_contain_text("granted")
    number = made["call"]["counterparts"][0]["number"]
    assert number not in await page.content()
    await screenshot(page, "support-call")
    for path in (
        "/support",
        f"/support/calls/{call_id}",
        "/support/privacy-requests",
        "/staff/access",
    ):
        await page.goto(path)
        assert await page.evaluate(AUDIO_IN_DOM) == [], path

    customer = await new_page(base_url=site(client))
    await sign_in(customer, owner.email)
    await customer.goto("/audit")
    await expect(customer.locator("table")).to_contain_text("support.viewed_consent")
    await screenshot(customer, "audit")


# -- CSRF and languages ---------------------------------------------------------------------


async def test_a_form_posted_from_another_origin_is_refused(
    client: TestClient, owner: Customer, pool: asyncpg.Pool, new_page: NewPage
) -> None:
    target = site(client)
    evil = web.Application()

    async def form(request: web.Request) -> web.Response:
        return web.Response(
            text=f"""<!DOCTYPE html><html lang="en"><title>evil</title><body>
            <form method="post" action="{target}/keys"><input name="name" value="stolen">
            <input name="scopes" value="calls"><input name="csrf_token" value="guess">
            <button>Go</button></form></body></html>""",
            content_type="text/html",
        )

    evil.router.add_get("/", form)
    runner = web.AppRunner(evil)
    await runner.setup()
    other = web.TCPSite(runner, "127.0.0.1", 0)
    await other.start()
    port = other._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        page = await new_page(base_url=target)
        await sign_in(page, owner.email)
        log = ResponseLog(page)
        await page.goto(f"http://localhost:{port}/")
        await page.get_by_role("button", name="Go").click()
        await page.wait_for_load_state()
        posted = await log.entries(lambda r: r.method == "POST" and r.path == "/keys")
    finally:
        await runner.cleanup()

    assert [r.status for r in posted] == [403]
    body = await page.content()
    assert "csrf-failed" in body
    async with pool.acquire() as conn:
        assert await conn.fetchval("SELECT count(*) FROM api_keys") == 0


async def test_a_polish_browser_reads_polish_pages(
    client: TestClient, owner: Customer, new_page: NewPage
) -> None:
    page = await new_page(base_url=site(client), locale="pl-PL")
    await page.goto("/login")

    assert await page.get_attribute("html", "lang") == "pl"
    await page.get_by_label("E-mail").fill(owner.email)
    await page.get_by_label("Hasło").fill(PASSWORD)
    await page.get_by_role("button", name="Zaloguj się").click()
    await expect(page).to_have_url(re.compile(r"/calls$"))
    await expect(page.get_by_role("heading", level=1)).to_have_text("Rozmowy")
    await screenshot(page, "calls-pl")


# -- accessibility --------------------------------------------------------------------------


async def test_axe_finds_no_serious_violation_on_any_page(
    client: TestClient, owner: Customer, pool: asyncpg.Pool, new_page: NewPage
) -> None:
    made = await recorded_call(client, owner, pool)
    rec_id, call_id = made["recording"]["id"], made["call"]["id"]
    await client.post(
        "/v1/privacy-requests", json={"kind": "access", "details": ""}, headers=owner.auth
    )
    consents = await client.get(f"/v1/calls/{call_id}/consents", headers=owner.auth)
    event_id = (await consents.json())["items"][0]["id"]
    found: dict[str, list[dict[str, Any]]] = {}

    async def check(page: Page, path: str, shot: str | None = None) -> None:
        await page.goto(path)
        found[path] = await axe_violations(page)
        if shot:
            await screenshot(page, shot)

    anonymous = await new_page(base_url=site(client))
    for path, shot in (
        ("/login", "login"),
        ("/signup", None),
        ("/password-reset", None),
        ("/policy", "policy"),
    ):
        await check(anonymous, path, shot)
    customer = await new_page(base_url=site(client))
    await sign_in(customer, owner.email)
    for path, shot in (
        ("/calls", "calls"),
        (f"/calls/{call_id}", None),
        ("/recordings", "recordings"),
        (f"/recordings/{rec_id}", None),
        (f"/recordings/{rec_id}/delete", None),
        (f"/calls/{call_id}/consents/{event_id}/receipt", "consent-receipt"),
        ("/keys", "keys"),
        ("/members", None),
        ("/settings", "settings"),
        ("/audit", None),
        ("/privacy", "privacy"),
        ("/logout", None),
    ):
        await check(customer, path, shot)
    support = await new_page(base_url=site(client))
    await sign_in(support, await make_staff(client, pool, "support"))
    for path, shot in (
        ("/support", "support"),
        (f"/support/calls/{call_id}", None),
        ("/support/privacy-requests", "support-privacy-requests"),
        ("/staff/access", "staff-access"),
    ):
        await check(support, path, shot)
    admin = await new_page(base_url=site(client))
    await sign_in(admin, await make_staff(client, pool, "security_admin"))
    await check(admin, "/security/log", "security-log")

    assert {path: v for path, v in found.items() if v} == {}
    assert len(found) == 21
