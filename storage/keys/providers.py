"""Key providers: where a recording's data key and an account's secrets come from.

Use cases and the recorder ask a `KeyProvider`, never the master key: the
service's own provider (`ServiceKeys`, the hierarchy of DESIGN "Keys") today;
a customer-held provider, which wraps the data key to the customer's public
key, can take its place for an account without any caller changing.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from storage.db import Conn
from storage.keys import customer, hierarchy, signing
from storage.keys.crypto import (
    derive_key,
    new_key,
    new_nonce_prefix,
    open_sealed,
    seal,
    unwrap_key,
    wrap_key,
)
from telephony.domain.errors import IntegrityFailure


@dataclass(frozen=True)
class NewRecordingKey:
    """A fresh data key (held in memory only) and what the database keeps of it."""

    data_key: bytes
    wrapped: bytes
    nonce_prefix: bytes


def customer_recording_key(key: customer.CustomerKey, recording_id: str) -> NewRecordingKey:
    """A data key for a recording sealed to the customer's key (SEALED-FORMAT.md): made
    where it is used, by the writer, and wrapped at once. Nothing the service keeps opens
    `wrapped`; the plaintext lives in the writer's memory only. ValueError when the key
    cannot be used."""
    data_key = new_key()
    return NewRecordingKey(data_key, customer.wrap(key, data_key, recording_id), new_nonce_prefix())


class KeyProvider(Protocol):
    async def new_recording_key(
        self, conn: Conn, account_id: str, recording_id: str, now: datetime
    ) -> NewRecordingKey:
        """Made when the recording starts (R1)."""
        ...

    async def recording_key(
        self,
        conn: Conn,
        account_id: str,
        recording_id: str,
        wrapped: bytes | None,
        now: datetime,
    ) -> bytes:
        """The data key; IntegrityFailure when destroyed (deleted) or unusable."""
        ...

    async def wrap_secret(
        self, conn: Conn, account_id: str, owner: str, secret: bytes, now: datetime
    ) -> bytes:
        """An account's secret (a webhook signing secret) at rest, bound to `owner`."""
        ...

    async def unwrap_secret(
        self, conn: Conn, account_id: str, owner: str, wrapped: bytes, now: datetime
    ) -> bytes: ...

    def seal_record(self, purpose: str, plaintext: bytes, context: str) -> bytes:
        """Small data the service must read back later (an idempotent reply with a token)."""
        ...

    async def signing_key(self, conn: Conn, now: datetime) -> signing.SigningKey:
        """The service's key for receipts (API.md "Signed receipts"), made on first use."""
        ...

    def open_record(self, purpose: str, sealed: bytes, context: str) -> bytes:
        """IntegrityFailure when no configured key opens it."""
        ...


class ServiceKeys:
    """The service's key hierarchy: master key -> account key -> recording data key."""

    def __init__(self, master: hierarchy.MasterKeys) -> None:
        self.master = master

    def __repr__(self) -> str:
        return f"ServiceKeys({self.master!r})"

    async def _kek(self, conn: Conn, account_id: str, now: datetime) -> bytes:
        return await hierarchy.account_key(conn, self.master, account_id, now)

    async def new_recording_key(
        self, conn: Conn, account_id: str, recording_id: str, now: datetime
    ) -> NewRecordingKey:
        key = new_key()
        wrapped = wrap_key(await self._kek(conn, account_id, now), key, recording_id)
        return NewRecordingKey(key, wrapped, new_nonce_prefix())

    async def recording_key(
        self,
        conn: Conn,
        account_id: str,
        recording_id: str,
        wrapped: bytes | None,
        now: datetime,
    ) -> bytes:
        if wrapped is None:
            raise IntegrityFailure("the recording's key was destroyed")
        return unwrap_key(await self._kek(conn, account_id, now), wrapped, recording_id)

    async def wrap_secret(
        self, conn: Conn, account_id: str, owner: str, secret: bytes, now: datetime
    ) -> bytes:
        return wrap_key(await self._kek(conn, account_id, now), secret, owner)

    async def unwrap_secret(
        self, conn: Conn, account_id: str, owner: str, wrapped: bytes, now: datetime
    ) -> bytes:
        return unwrap_key(await self._kek(conn, account_id, now), wrapped, owner)

    async def signing_key(self, conn: Conn, now: datetime) -> signing.SigningKey:
        return await signing.current(conn, self.master, now)

    def seal_record(self, purpose: str, plaintext: bytes, context: str) -> bytes:
        return seal(derive_key(self.master.current, purpose), plaintext, context)

    def open_record(self, purpose: str, sealed: bytes, context: str) -> bytes:
        """Under the current master key, or one still configured during a rotation."""
        for candidate in (self.master.current, *self.master.previous):
            try:
                return open_sealed(derive_key(candidate, purpose), sealed, context)
            except IntegrityFailure:
                continue
        raise IntegrityFailure("a sealed record failed its integrity check")
