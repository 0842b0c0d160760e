"""The account's webhook signing secret and the delivery status of its events (API.md).

Deliveries themselves are `telephony.delivery.webhooks`.
"""

from __future__ import annotations

import base64
import secrets
from datetime import datetime

import asyncpg

from storage import webhooks
from storage.keys.providers import KeyProvider
from telephony.delivery.webhooks import SECRET_BYTES, SECRET_PREFIX, secret_owner
from telephony.domain.roles import CustomerPrincipal
from telephony.usecases.trail import notify_admin_change, transaction


async def rotate_secret(
    pool: asyncpg.Pool, keys: KeyProvider, owner: CustomerPrincipal, now: datetime
) -> str:
    """Create or replace the account's signing secret; the only time it exists in plain text.

    The old secret stops signing at the commit: there is no overlap, so the
    owner updates the receiver right after rotating.
    """
    account_id = owner.account_id
    secret = secrets.token_bytes(SECRET_BYTES)
    async with transaction(pool) as tx:
        wrapped = await keys.wrap_secret(tx.conn, account_id, secret_owner(account_id), secret, now)
        rotated = await webhooks.put_secret(tx.conn, account_id, wrapped, now)
        await notify_admin_change(
            tx,
            "webhook_secret.rotated" if rotated else "webhook_secret.created",
            now=now,
            actor=owner.actor,
            account_id=account_id,
            subject={"type": "account", "id": account_id},
        )
    return SECRET_PREFIX + base64.b64encode(secret).decode("ascii")


async def list_events(
    pool: asyncpg.Pool,
    owner: CustomerPrincipal,
    *,
    status: str | None,
    before: tuple[datetime, str] | None,
    limit: int,
) -> list[webhooks.WebhookEvent]:
    async with pool.acquire() as conn:
        return await webhooks.list_events(
            conn, owner.account_id, status=status, before=before, limit=limit
        )


async def get_event(
    pool: asyncpg.Pool, owner: CustomerPrincipal, event_id: str
) -> webhooks.WebhookEvent:
    async with pool.acquire() as conn:
        return await webhooks.get_event(conn, owner.account_id, event_id)
