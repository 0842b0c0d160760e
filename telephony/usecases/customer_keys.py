"""Customer-held keys (API.md "Customer-held keys", R3): the account owner's public keys.

Registering, activating and deleting a key change who can read the account's future
recordings: each is audited and sent to staff (S4) with the key's id, algorithm and
fingerprint, never the key itself. A registered key is not yet used: until one is
activated, the account's recordings are sealed under the service's key hierarchy. Once
one was activated, every new recording is sealed to the active key (SEALED-FORMAT.md),
and with none active a start is refused (recording_control), never sealed otherwise.
"""

from __future__ import annotations

from datetime import datetime

import asyncpg

from storage import customer_keys
from storage.customer_keys import StoredKey
from storage.ids import new_id
from storage.keys.customer import KeyRefused, parse
from storage.recordings import Recording
from telephony.domain.errors import InvalidInput
from telephony.domain.roles import CustomerPrincipal
from telephony.usecases.trail import Tx, notify_admin_change, transaction


async def _tell_staff(
    tx: Tx, event: str, owner: CustomerPrincipal, stored: StoredKey, now: datetime
) -> None:
    """S4 and the audit trail: the key's id, algorithm and fingerprint, never the key."""
    await notify_admin_change(
        tx,
        event,
        now=now,
        actor=owner.actor,
        account_id=owner.account_id,
        subject={"encryption_key_id": stored.id},
        changes={"algorithm": stored.key.algorithm, "fingerprint": stored.fingerprint},
    )


async def register(
    pool: asyncpg.Pool, owner: CustomerPrincipal, algorithm: str, public_key: str, now: datetime
) -> StoredKey:
    """A new key, inactive until activated: registering one is not yet using it."""
    try:
        key = parse(algorithm, public_key)
    except KeyRefused as refused:
        raise InvalidInput(
            "the public key cannot be used",
            errors=[{"field": "public_key", "message": str(refused)}],
        ) from None
    async with transaction(pool) as tx:
        stored = await customer_keys.insert(
            tx.conn, id=new_id("ek"), account_id=owner.account_id, key=key, now=now
        )
        await _tell_staff(tx, "encryption_key.registered", owner, stored, now)
    return stored


async def list_keys(
    pool: asyncpg.Pool, owner: CustomerPrincipal, after: tuple[datetime, str] | None, limit: int
) -> list[StoredKey]:
    async with pool.acquire() as conn:
        return await customer_keys.list_for(conn, owner.account_id, after, limit)


async def delete(pool: asyncpg.Pool, owner: CustomerPrincipal, key_id: str, now: datetime) -> None:
    """Never used again. Recordings sealed to it stay readable with its private key, which
    only the customer has."""
    async with transaction(pool) as tx:
        stored = await customer_keys.delete(tx.conn, owner.account_id, key_id, now)
        await _tell_staff(tx, "encryption_key.deleted", owner, stored, now)


async def activate(
    pool: asyncpg.Pool, owner: CustomerPrincipal, key_id: str, now: datetime
) -> StoredKey:
    """New recordings are sealed to this key from now on (rotation: older recordings stay
    sealed to the key they were made with, and open with its private key)."""
    async with transaction(pool) as tx:
        stored = await customer_keys.activate(tx.conn, owner.account_id, key_id, now)
        await _tell_staff(tx, "encryption_key.activated", owner, stored, now)
    return stored


async def sealed_to(pool: asyncpg.Pool, rec: Recording) -> StoredKey | None:
    """The key a recording is sealed to (deleted or not); None for the service's keys."""
    if rec.customer_key_id is None:
        return None
    async with pool.acquire() as conn:
        return await customer_keys.get_any(conn, rec.customer_key_id)
