"""What every change leaves behind: an audit row, a staff notification (S4), a webhook event.

All three are written in the caller's transaction, so each exists exactly
when the change it reports does. None of them ever carries a secret.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from storage import audit, outbox, webhooks
from storage.db import Conn
from telephony.domain.actors import Actor


async def audited(
    conn: Conn,
    account_id: str,
    actor: Actor,
    action: str,
    subject: dict[str, Any],
    now: datetime,
    **details: Any,
) -> None:
    """One row in the account's hash-chained trail; opaque ids only (D2: never scrubbed)."""
    await audit.append(
        conn,
        account_id=account_id,
        at=now,
        actor=actor,
        action=action,
        subject=subject,
        details=details,
    )


async def customer_event(
    conn: Conn, account_id: str, type: str, now: datetime, **data: Any
) -> None:
    """A webhook event for the customer (API.md "Webhook deliveries")."""
    await webhooks.enqueue(conn, account_id, type, data, now)


async def notify_admin_change(
    conn: Conn,
    event: str,
    *,
    now: datetime,
    actor: Actor,
    account_id: str | None,
    subject: dict[str, Any],
    changes: dict[str, Any] | None = None,
) -> None:
    """S4: tell the responsible staff, and the account's audit trail.

    `actor` is the caller, `Actor.system(...)` for work no caller asked for
    (a termination from the CLI), or `Actor.anonymous()` before sign-in.
    """
    payload = {
        "event": event,
        "at": now.isoformat(),
        "actor": actor.as_json(),
        "account_id": account_id,
        "subject": subject,
        "changes": changes or {},
    }
    await outbox.enqueue(conn, event, payload, now)
    if account_id is not None:
        await audit.append(
            conn,
            account_id=account_id,
            at=now,
            actor=actor,
            action=event,
            subject=subject,
            details=changes or {},
        )
