"""The tests' real SMTP server (the service's own aiosmtpd mail drop) and reading links off
the messages it received, as a person would from their inbox."""

from __future__ import annotations

import re
from email.message import EmailMessage
from urllib.parse import unquote

from aiohttp import web
from aiohttp.test_utils import TestClient

from telephony.delivery.mail import deliver_due_mail
from telephony.delivery.maildrop import MailDrop, text_of
from telephony.web.appkeys import CATALOGUE, KEYS, POOL, SETTINGS
from tests.support.waiting import eventually

MAILBOX = web.AppKey("test_mailbox", MailDrop)

_LINK = {
    "invitation": re.compile(r"/invitation\?token=([^\s&\"<]+)"),
    "password_reset": re.compile(r"/password-reset\?token=([^\s&\"<]+)"),
}


async def deliver_mail(app: web.Application) -> int:
    """One pass of the mail outbox, as the worker would make it."""
    return await deliver_due_mail(app[POOL], app[SETTINGS], app[KEYS], app[CATALOGUE])


async def inbox(client: TestClient, address: str) -> list[EmailMessage]:
    await deliver_mail(client.app)
    return client.app[MAILBOX].to(address)


async def mailed_token(
    client: TestClient, address: str, kind: str = "invitation", timeout_s: float = 10
) -> str:
    """The token of the newest link of `kind` mailed to `address`, waiting for it a while
    (an app that runs its workers may be sending it right now)."""

    async def newest() -> str | None:
        for message in reversed(await inbox(client, address)):
            found = _LINK[kind].search(text_of(message))
            if found:
                return unquote(found.group(1))
        return None

    try:
        return await eventually(newest, timeout_s=timeout_s, interval_s=0.05)
    except AssertionError:
        raise AssertionError(f"no {kind} link was mailed to {address}") from None
