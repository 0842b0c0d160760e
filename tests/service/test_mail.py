"""E-mail through the outbox to a real SMTP server (aiosmtpd on 127.0.0.1): invitations,
password resets, policy announcements (P1), answers to privacy requests, product news."""

from __future__ import annotations

import asyncio
import ipaddress
import os
import ssl
import stat
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg
import pytest
from aiohttp.test_utils import TestClient
from aiosmtpd.smtp import SMTP, Envelope, Session
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from storage import mail
from telephony.delivery.mail import deliver_due_mail
from telephony.delivery.maildrop import MailDrop, text_of
from telephony.domain.actors import Actor
from telephony.usecases import policy
from telephony.web.appkeys import CATALOGUE, KEYS, POOL, SETTINGS
from tests.conftest import PASSWORD, Customer, login, new_customer
from tests.service.test_privacy import complete, file, new_member, support_auth
from tests.support.mail import deliver_mail, inbox, mailed_token

NEW_PASSWORD = "a completely new passphrase 7"


async def invite(client: TestClient, owner: Customer, email: str, name: str = "Mia") -> dict:
    resp = await client.post("/v1/users", json={"email": email, "name": name}, headers=owner.auth)
    assert resp.status == 201, await resp.text()
    return await resp.json()


# -- invitations -----------------------------------------------------------------------


async def test_the_invitation_goes_to_the_invitee_and_never_to_the_owner(
    client: TestClient, owner: Customer, pool: asyncpg.Pool
) -> None:
    created = await invite(client, owner, "mia@example.com")

    assert "token" not in created["invitation"]  # API.md: the owner never sees it
    assert created["status"] == "invited"
    messages = await inbox(client, "mia@example.com")
    assert len(messages) == 1
    message = messages[0]
    assert message["To"].addresses[0].addr_spec == "mia@example.com"
    token = await mailed_token(client, "mia@example.com")
    assert token.startswith("inv_")
    assert token in text_of(message, "html")  # both parts carry the link
    accepted = await client.post(
        "/v1/invitations/accept", json={"token": token, "password": PASSWORD}
    )
    assert accepted.status == 200
    assert await login(client, "mia@example.com")


async def test_the_token_is_sealed_at_rest_and_wiped_once_sent(
    client: TestClient, owner: Customer, pool: asyncpg.Pool
) -> None:
    created = await invite(client, owner, "sealed@example.com")
    async with pool.acquire() as conn:
        queued = await mail.list_for_user(conn, created["id"])
        everything = repr(await conn.fetch("SELECT * FROM mail_messages"))
    assert len(queued) == 1 and queued[0].sealed_secret is not None

    token = await mailed_token(client, "sealed@example.com")

    assert token not in everything and token.encode() not in queued[0].sealed_secret
    async with pool.acquire() as conn:
        sent = await mail.list_for_user(conn, created["id"])
    assert sent[0].delivered_at is not None
    assert sent[0].sealed_secret is None


async def test_a_name_is_text_in_the_html_part_and_nothing_is_fetched(
    client: TestClient,
) -> None:
    owner = await new_customer(client, account_name='<img src="https://evil.example/p">Acme')
    await invite(client, owner, "html@example.com", name="<b>Mia</b>")

    message = (await inbox(client, "html@example.com"))[0]

    html = text_of(message, "html")
    assert "<b>Mia</b>" not in html and "&lt;b&gt;Mia&lt;/b&gt;" in html
    assert "<img" not in html  # no tracking pixel, and the account name was escaped
    assert "&lt;img" in html
    assert "Mia" in text_of(message, "plain")
    assert message.get_content_type() == "multipart/alternative"


# -- password resets ---------------------------------------------------------------


async def test_a_reset_answers_202_whether_or_not_the_address_has_an_account(
    client: TestClient, owner: Customer
) -> None:
    known = await client.post("/v1/password-resets", json={"email": owner.email})
    unknown = await client.post("/v1/password-resets", json={"email": "nobody@example.com"})

    assert known.status == unknown.status == 202
    assert await known.json() == await unknown.json()
    assert len(await inbox(client, owner.email)) == 1
    assert await inbox(client, "nobody@example.com") == []


async def test_a_reset_link_sets_the_password_once_and_ends_every_session(
    client: TestClient, owner: Customer
) -> None:
    second_session = await login(client, owner.email)
    await client.post("/v1/password-resets", json={"email": owner.email})
    token = await mailed_token(client, owner.email, "password_reset")

    resp = await client.post(
        "/v1/password-resets/confirm", json={"token": token, "password": NEW_PASSWORD}
    )
    again = await client.post(
        "/v1/password-resets/confirm", json={"token": token, "password": "yet another one 123"}
    )

    assert resp.status == 200, await resp.text()
    assert (await resp.json())["id"] == owner.user_id
    for session in (owner.token, second_session):
        me = await client.get("/v1/me", headers={"Authorization": f"Bearer {session}"})
        assert me.status == 401
    assert again.status == 401
    assert (await again.json())["code"] == "invalid-credentials"
    old = await client.post("/v1/sessions", json={"email": owner.email, "password": PASSWORD})
    assert old.status == 401
    assert await login(client, owner.email, NEW_PASSWORD)


async def test_a_reset_link_dies_after_thirty_minutes(
    client: TestClient, owner: Customer, pool: asyncpg.Pool
) -> None:
    await client.post("/v1/password-resets", json={"email": owner.email})
    token = await mailed_token(client, owner.email, "password_reset")
    async with pool.acquire() as conn:
        ttl = await conn.fetchval("SELECT expires_at - created_at FROM password_resets")
        await conn.execute("UPDATE password_resets SET expires_at = now() - interval '1 second'")

    resp = await client.post(
        "/v1/password-resets/confirm", json={"token": token, "password": NEW_PASSWORD}
    )

    assert ttl == timedelta(minutes=30)
    assert resp.status == 401
    assert (await resp.json())["code"] == "invalid-credentials"


async def test_a_new_password_voids_the_other_outstanding_links(
    client: TestClient, owner: Customer
) -> None:
    await client.post("/v1/password-resets", json={"email": owner.email})
    first = await mailed_token(client, owner.email, "password_reset")
    await client.post("/v1/password-resets", json={"email": owner.email})
    second = await mailed_token(client, owner.email, "password_reset")
    assert first != second

    used = await client.post(
        "/v1/password-resets/confirm", json={"token": second, "password": NEW_PASSWORD}
    )
    stale = await client.post(
        "/v1/password-resets/confirm", json={"token": first, "password": NEW_PASSWORD}
    )

    assert used.status == 200 and stale.status == 401


async def test_asking_for_resets_is_throttled_per_address_and_logged(
    client: TestClient, owner: Customer, pool: asyncpg.Pool
) -> None:
    answers = [
        (await client.post("/v1/password-resets", json={"email": owner.email})).status
        for _ in range(4)
    ]

    assert answers == [202, 202, 202, 429]
    assert len(await inbox(client, owner.email)) == 3
    async with pool.acquire() as conn:
        outcomes = await conn.fetch(
            "SELECT outcome FROM security_log WHERE event = 'password_reset' ORDER BY id"
        )
    assert [r["outcome"] for r in outcomes] == ["info", "info", "info", "throttled"]


@pytest.mark.parametrize(
    "body",
    [{}, {"email": ""}, {"email": "a\x00@example.com"}, {"email": 5}, {"email": "x" * 300}],
)
async def test_malformed_reset_requests_are_422_and_send_nothing(
    client: TestClient, body: dict
) -> None:
    resp = await client.post("/v1/password-resets", json=body)

    assert resp.status == 422
    assert (await resp.json())["code"] == "validation-failed"
    assert await deliver_mail(client.app) == 0


async def test_a_short_new_password_is_refused_and_the_link_survives(
    client: TestClient, owner: Customer
) -> None:
    await client.post("/v1/password-resets", json={"email": owner.email})
    token = await mailed_token(client, owner.email, "password_reset")

    short = await client.post(
        "/v1/password-resets/confirm", json={"token": token, "password": "short"}
    )
    good = await client.post(
        "/v1/password-resets/confirm", json={"token": token, "password": NEW_PASSWORD}
    )

    assert short.status == 422 and good.status == 200


# -- policy announcements (P1) -----------------------------------------------------


async def test_a_material_policy_version_is_mailed_to_everyone_in_their_language(
    client: TestClient, owner: Customer, pool: asyncpg.Pool
) -> None:
    polish = await new_customer(client)
    resp = await client.patch("/v1/me", json={"language": "pl"}, headers=polish.auth)
    assert resp.status == 200 and (await resp.json())["language"] == "pl"

    published = await policy.publish(
        pool,
        version="2026-12",
        body="# Polityka\n\nNowa treść.",
        material=True,
        actor=Actor.system("test"),
        now=datetime.now(UTC),
    )

    assert published.announced_to == 2
    english = (await inbox(client, owner.email))[0]
    polski = (await inbox(client, polish.email))[0]
    assert "2026-12" in english["Subject"] and "privacy policy" in english["Subject"]
    assert english["Content-Language"] == "en" and polski["Content-Language"] == "pl"
    assert "prywatności" in polski["Subject"]
    assert "/policy" in text_of(english)


async def test_a_minor_version_is_published_without_mail_and_a_version_only_once(
    client: TestClient, owner: Customer, pool: asyncpg.Pool
) -> None:
    now = datetime.now(UTC)
    minor = await policy.publish(
        pool, version="1.1", body="text", material=False, actor=Actor.system("t"), now=now
    )

    with pytest.raises(Exception) as again:
        await policy.publish(
            pool, version="1.1", body="other", material=True, actor=Actor.system("t"), now=now
        )

    assert minor.announced_to == 0
    assert getattr(again.value, "code", None) == "conflict"
    assert await inbox(client, owner.email) == []
    assert [v.version for v in await policy.versions(pool)] == ["1.1"]


# -- privacy answers ---------------------------------------------------------------


async def test_a_completed_or_rejected_request_is_answered_by_mail(
    client: TestClient, owner: Customer, pool: asyncpg.Pool, settings: object
) -> None:
    staff = await support_auth(client, pool, client.app[SETTINGS])
    access = await file(client, owner, "access")
    rectify = await file(client, owner, "rectification")

    assert (await complete(client, staff, access["id"])).status == 200
    rejected = await client.post(
        f"/v1/support/privacy-requests/{rectify['id']}/reject",
        json={"resolution": "nothing to correct"},
        headers=staff,
    )

    assert rejected.status == 200
    texts = [text_of(m) for m in await inbox(client, owner.email)]  # lanes: any order
    assert len(texts) == 2
    done = next(t for t in texts if "access request" in t)
    refused = next(t for t in texts if "rectification request" in t)
    assert "is complete" in done and "/privacy" in done
    assert "was rejected" in refused and "Reason: nothing to correct" in refused


async def test_an_erasure_is_answered_at_the_address_the_person_had(
    client: TestClient, owner: Customer, pool: asyncpg.Pool
) -> None:
    member = await new_member(client, owner)
    staff = await support_auth(client, pool, client.app[SETTINGS])
    erasure = await file(client, member, "erasure")

    assert (await complete(client, staff, erasure["id"])).status == 200

    answers = [m for m in await inbox(client, member.email) if "privacy" in m["Subject"]]
    assert len(answers) == 1 and "complete" in text_of(answers[0])
    async with pool.acquire() as conn:
        left = await conn.fetch(
            "SELECT user_id, sealed_recipient FROM mail_messages WHERE kind = 'privacy_answer'"
        )
    assert [(r["user_id"], r["sealed_recipient"]) for r in left] == [(None, None)]


# -- product news --------------------------------------------------------------------


async def test_product_news_reaches_only_those_who_want_it(
    client: TestClient, owner: Customer, pool: asyncpg.Pool
) -> None:
    quiet = await new_customer(client)
    resp = await client.patch("/v1/me", json={"product_updates": False}, headers=quiet.auth)
    assert resp.status == 200

    sent = await policy.announce_news(
        pool, subject="Opus downloads", body="Now in Ogg.", now=datetime.now(UTC)
    )

    assert sent == 1
    news = await inbox(client, owner.email)
    assert len(news) == 1 and news[0]["List-Unsubscribe"]
    assert await inbox(client, quiet.email) == []


async def test_turning_news_off_after_it_was_queued_still_counts(
    client: TestClient, owner: Customer, pool: asyncpg.Pool
) -> None:
    await policy.announce_news(pool, subject="News", body="Body.", now=datetime.now(UTC))
    await client.patch("/v1/me", json={"product_updates": False}, headers=owner.auth)

    assert await inbox(client, owner.email) == []
    async with pool.acquire() as conn:
        closed = await conn.fetchrow("SELECT given_up_at, last_error FROM mail_messages")
    assert closed["given_up_at"] is not None and "off" in closed["last_error"]


# -- the SMTP conversation -----------------------------------------------------------


class Refusing(MailDrop):
    """A server that refuses every recipient for good (550)."""

    async def handle_RCPT(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: list
    ) -> str:
        return "550 5.1.1 no such mailbox"


async def test_a_refused_address_is_given_up_at_once_and_its_token_wiped(
    client: TestClient, owner: Customer, pool: asyncpg.Pool
) -> None:
    refusing = await Refusing().start()
    try:
        app = client.app
        settings = app[SETTINGS].replace(smtp_url=refusing.url)
        await invite(client, owner, "refused@example.com")

        delivered = await deliver_due_mail(app[POOL], settings, app[KEYS], app[CATALOGUE])
    finally:
        await refusing.close()

    assert delivered == 0
    async with pool.acquire() as conn:
        row = await conn.fetchrow("SELECT * FROM mail_messages")
    assert row["given_up_at"] is not None and row["attempts"] == 1
    assert row["sealed_secret"] is None and "550" in row["last_error"]


async def test_an_unreachable_server_is_retried_later_and_the_mail_kept(
    client: TestClient, owner: Customer, pool: asyncpg.Pool
) -> None:
    app = client.app
    gone = await MailDrop().start()
    await gone.close()  # a port nobody listens on
    settings = app[SETTINGS].replace(smtp_url=gone.url)
    await invite(client, owner, "later@example.com")

    assert await deliver_due_mail(app[POOL], settings, app[KEYS], app[CATALOGUE]) == 0
    async with pool.acquire() as conn:
        row = await conn.fetchrow("SELECT * FROM mail_messages")
        await conn.execute("UPDATE mail_messages SET next_attempt_at = now()")
    assert row["given_up_at"] is None and row["attempts"] == 1
    assert row["next_attempt_at"] > row["created_at"] and row["sealed_secret"] is not None
    # The real server is back: the same message goes out, with its link intact.
    assert await mailed_token(client, "later@example.com")


async def test_the_mail_drop_writes_messages_a_person_can_read(tmp_path: Path) -> None:
    import aiosmtplib

    drop = await MailDrop(tmp_path / "mail").start()
    try:
        await aiosmtplib.send(
            "From: a@example.com\r\nTo: b@example.com\r\nSubject: hi\r\n\r\nhello\r\n",
            sender="a@example.com",
            recipients=["b@example.com"],
            hostname=drop.host,
            port=drop.port,
        )
    finally:
        await drop.close()

    def written() -> list[tuple[str, bytes, int]]:
        return [
            (p.suffix, p.read_bytes(), stat.S_IMODE(os.stat(p).st_mode))
            for p in (tmp_path / "mail").iterdir()
        ]

    files = await asyncio.to_thread(written)
    assert len(files) == 1
    suffix, content, mode = files[0]
    assert suffix == ".eml" and b"hello" in content
    assert mode == 0o600  # it carries one-time links: this user's only


# -- TLS to the relay ------------------------------------------------------------------------


def relay_certificate(folder: Path) -> tuple[ssl.SSLContext, Path]:
    """A private CA and a certificate it signed for 127.0.0.1: the relay's TLS context, and the
    CA file the client is told to trust (TELEPHONY_SMTP_CA_FILE)."""
    now = datetime.now(UTC)
    ca_key, key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "test relay CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    pem = serialization.Encoding.PEM
    (folder / "ca.pem").write_bytes(ca.public_bytes(pem))
    (folder / "relay.pem").write_bytes(cert.public_bytes(pem))
    (folder / "relay.key").write_bytes(
        key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(folder / "relay.pem", folder / "relay.key")
    return context, folder / "ca.pem"


@pytest.mark.parametrize("implicit", [True, False], ids=["smtps", "starttls"])
async def test_mail_goes_encrypted_to_a_relay_with_a_private_ca(
    client: TestClient, owner: Customer, tmp_path: Path, implicit: bool
) -> None:
    context, ca_file = await asyncio.to_thread(relay_certificate, tmp_path)
    relay = await MailDrop(tls=context, implicit=implicit).start()
    try:
        app = client.app
        settings = app[SETTINGS].replace(smtp_url=relay.url, smtp_ca_file=str(ca_file))
        await invite(client, owner, "tls@example.com")
        delivered = await deliver_due_mail(app[POOL], settings, app[KEYS], app[CATALOGUE])
    finally:
        await relay.close()

    assert relay.url.startswith("smtps://" if implicit else "smtp://")
    assert delivered == 1
    assert relay.over_tls == [True]
    assert "tls@example.com" in str(relay.messages[0]["To"])


async def test_an_untrusted_relay_certificate_is_a_failed_attempt_not_a_plain_send(
    client: TestClient, owner: Customer, pool: asyncpg.Pool, tmp_path: Path
) -> None:
    context, _ = await asyncio.to_thread(relay_certificate, tmp_path)
    relay = await MailDrop(tls=context, implicit=True).start()
    try:
        app = client.app
        settings = app[SETTINGS].replace(smtp_url=relay.url)  # the system's CAs only
        await invite(client, owner, "untrusted@example.com")
        delivered = await deliver_due_mail(app[POOL], settings, app[KEYS], app[CATALOGUE])
    finally:
        await relay.close()

    assert delivered == 0 and relay.messages == []
    async with pool.acquire() as conn:
        row = await conn.fetchrow("SELECT given_up_at, attempts, sealed_secret FROM mail_messages")
    assert row["given_up_at"] is None and row["attempts"] == 1  # retried later
    assert row["sealed_secret"] is not None
