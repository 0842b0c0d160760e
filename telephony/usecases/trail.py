"""What every change leaves behind: an audit row, a staff notification (S4), a webhook event.

All three are written in the use case's transaction, so each exists exactly
when the change it reports does. None of them ever carries a secret.

A use case opens its transaction with `transaction(pool)` and gets a `Tx`:
its connection, and the audit rows and webhook events it will leave. Both
are written last, together, just before the commit. Why: every audit row of
an account locks the account's audit head (the hash chain is one sequence
per account); written as they happen, that lock was held across the rest of
the use case, and at 200 requests a second on one account every request
waited for it (bench/control.py). Written last, it is held for two
statements and the commit; and all of a change's webhook events take one
statement, not two each.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import asyncpg

from storage import audit, outbox, webhooks
from storage.db import Conn
from telephony.domain.actors import Actor


@dataclass
class Tx:
    """One use case's transaction: its connection, and the audit rows it will leave."""

    conn: Conn
    entries: list[audit.Entry] = field(default_factory=list)
    events: list[webhooks.NewEvent] = field(default_factory=list)

    def audit(
        self,
        account_id: str,
        actor: Actor,
        action: str,
        subject: dict[str, Any],
        now: datetime,
        **details: Any,
    ) -> None:
        """A row in the account's hash-chained trail; opaque ids only (D2: never scrubbed)."""
        self.entries.append(audit.Entry(account_id, now, actor, action, subject, details))

    def customer_event(self, account_id: str, type: str, now: datetime, **data: Any) -> None:
        """A webhook event for the customer (API.md "Webhook deliveries")."""
        self.events.append(webhooks.NewEvent(account_id, type, data, now))

    async def flush(self) -> None:
        events, self.events = self.events, []
        entries, self.entries = self.entries, []
        if events:
            await webhooks.enqueue(self.conn, events)
        if entries:  # last: the audit head's lock is held from here to the commit
            await audit.append_many(self.conn, entries)


@contextlib.asynccontextmanager
async def transaction(pool: asyncpg.Pool) -> AsyncIterator[Tx]:
    """A transaction whose audit rows are written at its end, before the commit."""
    async with pool.acquire() as conn, conn.transaction():
        tx = Tx(conn)
        yield tx
        await tx.flush()


async def notify_admin_change(
    tx: Tx,
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
    await outbox.enqueue(tx.conn, event, payload, now)
    if account_id is not None:
        tx.entries.append(audit.Entry(account_id, now, actor, event, subject, changes or {}))
