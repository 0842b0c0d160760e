"""E-mail on the outbox engine: invitations, password resets, policy announcements (P1),
answers to privacy requests, and product news for those who want it.

A message is rendered when it is sent, not when it is made: in the person's
language and to their address as they are then. It is plain text plus HTML
(autoescaped: a name is never markup), with no images and nothing fetched
from elsewhere, so nothing tracks whether it was read. A secret it carries
is sealed at rest (`storage/mail.py`) and only opened here, for the SMTP
conversation.

SMTP: `TELEPHONY_SMTP_URL` is `smtp://host[:port]` (STARTTLS whenever the
server offers it) or `smtps://host[:port]` (TLS from the first byte), with
credentials in the URL or in TELEPHONY_SMTP_USERNAME / _PASSWORD; the relay's
certificate is checked against the system's CAs, or TELEPHONY_SMTP_CA_FILE. A 5xx
answer (the address refused) closes the message for good; anything else is
retried with the engine's backoff.
"""

from __future__ import annotations

import asyncio
import json
import logging
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from email.utils import format_datetime, formataddr, make_msgid, parseaddr
from pathlib import Path
from typing import Any
from urllib.parse import quote, unquote, urlsplit

import aiosmtplib
import asyncpg
import jinja2

from storage import mail
from storage.keys.providers import KeyProvider
from storage.mail import MailMessage
from telephony.delivery.outbox import Attempt, Outbox, Outcome, backoff
from telephony.i18n import N_, Catalogue, speaking
from telephony.settings import Settings

log = logging.getLogger(__name__)

SECRET_PURPOSE = "mail-secret"  # noqa: S105 -- a key-derivation label, not a secret
RECIPIENT_PURPOSE = "mail-recipient"
TEMPLATES = Path(__file__).parent / "templates" / "mail"
LEASE_MARGIN_S = 60

SUBJECTS = {
    "invitation": N_("You are invited to %(account)s"),
    "password_reset": N_("Choose a new password"),
    "policy": N_("Our privacy policy has changed (version %(version)s)"),
    "privacy_answer": N_("Your privacy request has been answered"),
    "product_update": N_("News: %(subject)s"),
}
PRIVACY_KINDS = {
    "access": N_("access"),
    "rectification": N_("rectification"),
    "erasure": N_("erasure"),
    "restriction": N_("restriction"),
}
OPTIONAL_KINDS = frozenset({"product_update"})  # policy and security mail are not optional


@dataclass(frozen=True)
class Recipient:
    email: str
    name: str
    language: str | None


@dataclass(frozen=True)
class SmtpTarget:
    hostname: str
    port: int
    implicit_tls: bool
    username: str | None
    password: str | None

    def __repr__(self) -> str:  # never print the password
        return f"SmtpTarget({self.hostname}:{self.port}, tls={self.implicit_tls})"


def smtp_target(settings: Settings) -> SmtpTarget:
    assert settings.smtp_url is not None
    parts = urlsplit(settings.smtp_url)
    implicit = parts.scheme == "smtps"
    return SmtpTarget(
        hostname=parts.hostname or "127.0.0.1",
        port=parts.port or (465 if implicit else 25),
        implicit_tls=implicit,
        username=unquote(parts.username) if parts.username else settings.smtp_username,
        password=unquote(parts.password) if parts.password else settings.smtp_password,
    )


def base_url(settings: Settings) -> str:
    """Where people reach the portal: the public URL, else this node's own address."""
    return settings.public_url or f"http://{settings.host}:{settings.port}"


class Composer:
    """Renders one message in its person's language: subject, plain text and HTML.

    Made off the event loop (`Composer.load`): every template is read and compiled
    once, and never looked up on disk again (auto_reload off).
    """

    @classmethod
    async def load(cls, settings: Settings, catalogue: Catalogue) -> Composer:
        return await asyncio.to_thread(cls, settings, catalogue)

    def __init__(self, settings: Settings, catalogue: Catalogue) -> None:
        self.settings = settings
        self.catalogue = catalogue
        loader = jinja2.FileSystemLoader(TEMPLATES)
        self._text = jinja2.Environment(
            loader=loader,
            autoescape=False,  # noqa: S701 -- plain text is not markup; HTML has its own env
            extensions=["jinja2.ext.i18n"],
            undefined=jinja2.StrictUndefined,
            keep_trailing_newline=True,
            auto_reload=False,
        )
        self._html = jinja2.Environment(
            loader=loader,
            autoescape=True,
            extensions=["jinja2.ext.i18n"],
            undefined=jinja2.StrictUndefined,
            auto_reload=False,
        )
        for env in (self._text, self._html):
            env.install_gettext_callables(  # type: ignore[attr-defined]
                catalogue.gettext, catalogue.ngettext, newstyle=True
            )
        for name in loader.list_templates():
            (self._text if name.endswith(".txt") else self._html).get_template(name)

    def _context(
        self, message: MailMessage, recipient: Recipient, secret: str | None
    ) -> dict[str, Any]:
        base, params = base_url(self.settings), message.params
        context: dict[str, Any] = {"name": recipient.name, "email": recipient.email}
        if message.kind == "invitation":
            assert secret is not None
            context.update(
                inviter=params["inviter"],
                account=params["account"],
                expires=self.catalogue.format_time(datetime.fromisoformat(params["expires_at"])),
                link=f"{base}/invitation?token={quote(secret)}",
            )
        elif message.kind == "password_reset":
            assert secret is not None
            context.update(
                expires=self.catalogue.format_time(datetime.fromisoformat(params["expires_at"])),
                link=f"{base}/password-reset?token={quote(secret)}",
            )
        elif message.kind == "policy":
            context.update(
                version=params["version"],
                published=self.catalogue.format_time(
                    datetime.fromisoformat(params["published_at"])
                ),
                link=f"{base}/policy",
            )
        elif message.kind == "privacy_answer":
            context.update(
                status=params["status"],
                kind_label=self.catalogue.gettext(PRIVACY_KINDS[params["kind"]]),
                received=self.catalogue.format_time(datetime.fromisoformat(params["received_at"])),
                reason=params.get("reason") or "",
                link=f"{base}/privacy",
            )
        elif message.kind == "product_update":
            context.update(subject=params["subject"], body=params["body"], link=f"{base}/settings")
        return context

    def compose(
        self, message: MailMessage, recipient: Recipient, secret: str | None
    ) -> EmailMessage:
        with speaking(recipient.language) as language:
            context = self._context(message, recipient, secret)
            subject = self.catalogue.gettext(SUBJECTS[message.kind]) % context
            context.update(language=language, subject=subject)
            text = self._text.get_template(f"{message.kind}.txt").render(context)
            html = self._html.get_template(f"{message.kind}.html").render(context)
        email = EmailMessage()
        email["From"] = self.settings.mail_from
        email["To"] = formataddr((recipient.name, recipient.email))
        email["Subject"] = subject
        email["Date"] = format_datetime(datetime.now(UTC))
        sender_domain = parseaddr(self.settings.mail_from)[1].rpartition("@")[2] or "localhost"
        email["Message-ID"] = make_msgid(idstring=message.id, domain=sender_domain)
        if message.kind in OPTIONAL_KINDS:
            email["List-Unsubscribe"] = f"<{base_url(self.settings)}/settings>"
        email.set_content(text)
        email.add_alternative(html, subtype="html")
        email["Content-Language"] = language  # after set_content, which drops Content-* headers
        return email


class MailChannel:
    name = "mail"
    notify_channel = mail.CHANNEL
    lanes = 4  # one slow SMTP conversation does not hold up the others
    drain_limit = 20

    def __init__(
        self, pool: asyncpg.Pool, settings: Settings, keys: KeyProvider, composer: Composer
    ) -> None:
        self.pool = pool
        self.settings = settings
        self.keys = keys
        self.composer = composer

    def _lease_until(self, now: datetime) -> datetime:
        return now + timedelta(seconds=self.settings.smtp_timeout_s + LEASE_MARGIN_S)

    async def claim(self, now: datetime, limit: int) -> list[MailMessage]:
        async with self.pool.acquire() as conn:
            return await mail.claim_due(conn, now, self._lease_until(now), limit=limit)

    async def following(self, item: MailMessage, now: datetime) -> MailMessage | None:
        found = await self.claim(now, 1)
        return found[0] if found else None

    async def attempt(self, item: MailMessage, now: datetime) -> Attempt:
        if item.kind in OPTIONAL_KINDS and not item.product_updates:
            # Read at the claim: a choice made after the news was queued still counts.
            return Attempt(Outcome.SKIPPED, "the person turned product news off")
        if self.settings.smtp_url is None:
            return Attempt(Outcome.FAILED, "no SMTP server is configured")
        recipient = self._recipient(item)
        if recipient is None:
            return Attempt(Outcome.SKIPPED, "the person is gone")
        secret = None
        if item.sealed_secret is not None:
            secret = self.keys.open_record(SECRET_PURPOSE, item.sealed_secret, item.id).decode()
        try:
            message = self.composer.compose(item, recipient, secret)
        except (KeyError, ValueError, jinja2.TemplateError) as exc:
            log.error("mail cannot be composed", extra={"mail_id": item.id, "kind": item.kind})
            return Attempt(Outcome.SKIPPED, f"cannot compose: {type(exc).__name__}")
        return await send(self.settings, message)

    def _recipient(self, item: MailMessage) -> Recipient | None:
        if item.email is not None:
            return Recipient(item.email, item.name or "", item.language)
        if item.sealed_recipient is None:
            return None
        opened = json.loads(
            self.keys.open_record(RECIPIENT_PURPOSE, item.sealed_recipient, item.id)
        )
        return Recipient(opened["email"], opened["name"], opened.get("language"))

    async def record(self, item: MailMessage, attempt: Attempt, now: datetime) -> None:
        async with self.pool.acquire() as conn:
            if attempt.outcome is Outcome.DELIVERED:
                await mail.mark_delivered(conn, item, max(now, datetime.now(UTC)))
                return
            attempts = item.attempts + 1
            give_up = (
                attempt.outcome is Outcome.SKIPPED or attempts >= self.settings.outbox_max_attempts
            )
            await mail.mark_failed(
                conn,
                item,
                error=attempt.error or "failed",
                next_attempt_at=None if give_up else now + backoff(attempts),
                now=now,
            )
        log.warning(
            "mail not delivered",
            extra={
                "mail_id": item.id,
                "kind": item.kind,
                "attempts": attempts,
                "error": attempt.error,
                "given_up": give_up,
            },
        )


async def send(settings: Settings, message: EmailMessage) -> Attempt:
    """One SMTP conversation, bounded by the timeout; never raises, never names a secret."""
    target = smtp_target(settings)
    try:
        await aiosmtplib.send(
            message,
            hostname=target.hostname,
            port=target.port,
            username=target.username,
            password=target.password,
            use_tls=target.implicit_tls,
            start_tls=None if not target.implicit_tls else False,
            cert_bundle=settings.smtp_ca_file,  # None: the system's CAs
            timeout=settings.smtp_timeout_s,
        )
    except aiosmtplib.SMTPRecipientsRefused as exc:
        codes = [r.code for r in exc.recipients]
        if all(500 <= c < 600 for c in codes):
            return Attempt(Outcome.SKIPPED, f"recipient refused (SMTP {codes[0]})")
        return Attempt(Outcome.FAILED, f"recipient deferred (SMTP {codes[0]})")
    except aiosmtplib.SMTPResponseException as exc:
        if 500 <= exc.code < 600 and exc.code != 530:
            return Attempt(Outcome.SKIPPED, f"refused (SMTP {exc.code})")
        return Attempt(Outcome.FAILED, f"SMTP {exc.code}")
    except (aiosmtplib.SMTPException, OSError, TimeoutError) as exc:
        return Attempt(Outcome.FAILED, type(exc).__name__)
    return Attempt(Outcome.DELIVERED)


def seal_secret(keys: KeyProvider, mail_id: str, secret: str) -> bytes:
    """The token a message carries, sealed to that message (its id is the context)."""
    return keys.seal_record(SECRET_PURPOSE, secret.encode(), mail_id)


def seal_recipient(keys: KeyProvider, mail_id: str, recipient: Recipient) -> bytes:
    """Who an answer goes to when their row is about to be erased."""
    plain = {"email": recipient.email, "name": recipient.name, "language": recipient.language}
    return keys.seal_record(RECIPIENT_PURPOSE, json.dumps(plain).encode(), mail_id)


async def deliver_due_mail(
    pool: asyncpg.Pool,
    settings: Settings,
    keys: KeyProvider,
    catalogue: Catalogue,
    now: datetime | None = None,
) -> int:
    """One pass over due messages (tests, tools); how many were delivered."""
    composer = await Composer.load(settings, catalogue)
    return await Outbox(pool, MailChannel(pool, settings, keys, composer)).deliver_due(now)


async def mail_worker(
    pool: asyncpg.Pool, settings: Settings, keys: KeyProvider, catalogue: Catalogue
) -> None:
    composer = await Composer.load(settings, catalogue)
    await Outbox(pool, MailChannel(pool, settings, keys, composer)).run(settings.outbox_poll_s)
