"""Plain SQL for the end of a contract: termination and the D4 removal five years later."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from storage.db import Conn
from telephony.domain.errors import NotFound


@dataclass(frozen=True)
class Termination:
    account_id: str
    terminated_at: datetime
    recordings_purge_after: datetime | None
    personal_data_removed_at: datetime | None


_COLS = "id AS account_id, terminated_at, recordings_purge_after, personal_data_removed_at"


async def terminate(
    conn: Conn, account_id: str, now: datetime, purge_after: datetime
) -> tuple[Termination, bool]:
    """(the termination, whether this call made it). A second call changes nothing."""
    row = await conn.fetchrow(
        f"""UPDATE accounts SET terminated_at = $2, recordings_purge_after = $3
            WHERE id = $1 AND terminated_at IS NULL RETURNING {_COLS}""",
        account_id,
        now,
        purge_after,
    )
    if row is not None:
        return Termination(**row), True
    row = await conn.fetchrow(f"SELECT {_COLS} FROM accounts WHERE id = $1", account_id)
    if row is None:
        raise NotFound("no such account")
    return Termination(**row), False


async def revoke_api_keys(conn: Conn, account_id: str, now: datetime) -> int:
    status = await conn.execute(
        "UPDATE api_keys SET revoked_at = $2 WHERE account_id = $1 AND revoked_at IS NULL",
        account_id,
        now,
    )
    return int(status.split()[-1])


async def mark_exported(conn: Conn, account_id: str, now: datetime) -> None:
    await conn.execute("UPDATE accounts SET exported_at = $2 WHERE id = $1", account_id, now)


async def due_for_removal(conn: Conn, cutoff: datetime, limit: int) -> list[str]:
    """Accounts terminated before `cutoff` whose personal data is still held (D4)."""
    rows = await conn.fetch(
        """SELECT id FROM accounts
           WHERE terminated_at < $1 AND personal_data_removed_at IS NULL
           ORDER BY terminated_at LIMIT $2""",
        cutoff,
        limit,
    )
    return [r["id"] for r in rows]


async def remove_personal_data(conn: Conn, account_id: str, now: datetime) -> None:
    """D4: the account's personal data goes, its key with it; opaque ids and the audit chain
    stay. Runs in the caller's transaction, which it marks as an erasure so the
    append-only consent table lets its rows go with their calls."""
    await conn.execute("SET LOCAL telephony.erasure = 'on'")
    # Calls carry the counterparts' numbers and consent evidence; recordings cascade
    # with them (their audio was destroyed at the end of the grace period).
    await conn.execute("DELETE FROM calls WHERE account_id = $1", account_id)
    await conn.execute("DELETE FROM webhook_events WHERE account_id = $1", account_id)
    await conn.execute("DELETE FROM webhook_secrets WHERE account_id = $1", account_id)
    await conn.execute(
        "UPDATE privacy_requests SET details = '', resolution = NULL WHERE account_id = $1",
        account_id,
    )
    await conn.execute("DELETE FROM api_keys WHERE account_id = $1", account_id)
    # The customer's public keys: their recordings went with the calls, above.
    await conn.execute("DELETE FROM customer_keys WHERE account_id = $1", account_id)
    await conn.execute(
        "DELETE FROM sessions WHERE user_id IN (SELECT id FROM users WHERE account_id = $1)",
        account_id,
    )
    await conn.execute(
        """UPDATE users SET email = 'erased-' || id || '@invalid', name = '',
                  postal_address = NULL, vat_number = NULL, password_hash = NULL,
                  invitation_hash = NULL, updated_at = $2
           WHERE account_id = $1""",
        account_id,
        now,
    )
    await conn.execute(
        """UPDATE accounts SET name = 'terminated account', postal_address = '',
                  vat_number = NULL, webhook_url = NULL, personal_data_removed_at = $2
           WHERE id = $1""",
        account_id,
        now,
    )
    # Last: without the account key nothing it ever wrapped can be opened again.
    await conn.execute("DELETE FROM account_keys WHERE account_id = $1", account_id)
