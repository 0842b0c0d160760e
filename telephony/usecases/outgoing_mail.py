"""Queueing a message in the transaction of the change it reports (the outbox rule):
the mail exists exactly when the change committed, and is sent after."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from storage import mail
from storage.db import Conn
from storage.ids import new_id
from storage.keys.providers import KeyProvider
from telephony.delivery.mail import Recipient, seal_recipient, seal_secret


async def queue(
    conn: Conn,
    keys: KeyProvider,
    *,
    kind: str,
    user_id: str,
    params: dict[str, Any],
    now: datetime,
    secret: str | None = None,
) -> str:
    mail_id = new_id("mail")
    await mail.enqueue(
        conn,
        id=mail_id,
        kind=kind,
        user_id=user_id,
        params=params,
        sealed_secret=seal_secret(keys, mail_id, secret) if secret is not None else None,
        now=now,
    )
    return mail_id


async def queue_to_departing(
    conn: Conn,
    keys: KeyProvider,
    *,
    kind: str,
    recipient: Recipient,
    params: dict[str, Any],
    now: datetime,
) -> str:
    """A message to someone whose row is erased in this transaction (the erasure's answer)."""
    mail_id = new_id("mail")
    await mail.enqueue(
        conn,
        id=mail_id,
        kind=kind,
        user_id=None,
        params=params,
        sealed_secret=None,
        sealed_recipient=seal_recipient(keys, mail_id, recipient),
        now=now,
    )
    return mail_id
