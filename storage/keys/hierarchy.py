"""The key hierarchy: master key -> account key -> recording data key.

The master key comes from configuration (TELEPHONY_MASTER_KEY) or, for
development only, a generated file. Previous master keys stay readable while
`telephony keys rotate` re-wraps the account keys under the current one; no
audio is rewritten. Destroying a wrapped key is deletion (crypto-shredding).
"""

from __future__ import annotations

import base64
import binascii
import logging
import os
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import asyncpg

from storage.db import Conn
from storage.keys.crypto import KEY_BYTES, key_id, new_key, unwrap_key, wrap_key
from telephony.domain.errors import IntegrityFailure

log = logging.getLogger(__name__)


class MasterKeyError(ValueError):
    """The configured master key is unusable; the message never contains key material."""


def decode_master_key(text: str, name: str = "TELEPHONY_MASTER_KEY") -> bytes:
    try:
        key = base64.b64decode(text.strip(), validate=True)
    except (binascii.Error, ValueError):
        raise MasterKeyError(f"{name} is not valid base64") from None
    if len(key) != KEY_BYTES:
        raise MasterKeyError(f"{name} must decode to {KEY_BYTES} bytes")
    return key


def load_or_create_dev_key(path: Path) -> bytes:
    """The development master key file, created (mode 0600) when missing.

    Loudly not for production: whoever reads this file reads every recording.
    Synchronous: called once at start-up, before the event loop serves.
    """
    if path.exists():
        return decode_master_key(path.read_text(encoding="ascii"), str(path))
    path.parent.mkdir(parents=True, exist_ok=True)
    key = new_key()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="ascii") as fh:
        fh.write(base64.b64encode(key).decode("ascii") + "\n")
        fh.flush()
        os.fsync(fh.fileno())
    log.warning(
        "generated a DEVELOPMENT master key; set TELEPHONY_MASTER_KEY in production",
        extra={"path": str(path)},
    )
    return key


@dataclass(frozen=True)
class MasterKeys:
    """The current master key and older ones still readable during a rotation."""

    current: bytes
    previous: tuple[bytes, ...] = ()

    @property
    def current_id(self) -> str:
        return key_id(self.current)

    def by_id(self, wanted: str) -> bytes:
        for key in (self.current, *self.previous):
            if key_id(key) == wanted:
                return key
        raise IntegrityFailure("a stored key was wrapped by a master key that is not configured")

    def __repr__(self) -> str:  # never print key material
        return f"MasterKeys(current_id={self.current_id!r}, previous={len(self.previous)})"


async def account_key(conn: Conn, master: MasterKeys, account_id: str, now: datetime) -> bytes:
    """The account's key-encryption key, created on first use."""
    row = await conn.fetchrow(
        "SELECT wrapped_key, master_key_id FROM account_keys WHERE account_id = $1", account_id
    )
    if row is None:
        kek = new_key()
        inserted = await conn.fetchval(
            """INSERT INTO account_keys (account_id, wrapped_key, master_key_id, created_at)
               VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING RETURNING true""",
            account_id,
            wrap_key(master.current, kek, account_id),
            master.current_id,
            now,
        )
        if inserted:
            return kek
        row = await conn.fetchrow(
            "SELECT wrapped_key, master_key_id FROM account_keys WHERE account_id = $1",
            account_id,
        )
        # The insert conflicted: another transaction committed the row, and this
        # statement's snapshot (READ COMMITTED) sees it.
        assert row is not None
    return unwrap_key(master.by_id(row["master_key_id"]), bytes(row["wrapped_key"]), account_id)


@dataclass(frozen=True)
class RotationResult:
    rewrapped: int
    remaining: int


async def rotate(
    pool: asyncpg.Pool, master: MasterKeys, now: datetime, batch: int = 500
) -> RotationResult:
    """Re-wrap every account key not yet under the current master key.

    Batches commit one by one, so a rotation interrupted half-way resumes
    where it stopped; until it finishes, `previous` keys must stay configured.
    """
    rewrapped = 0
    while True:
        async with pool.acquire() as conn, conn.transaction():
            rows = await conn.fetch(
                """SELECT account_id, wrapped_key, master_key_id FROM account_keys
                   WHERE master_key_id <> $1 ORDER BY account_id LIMIT $2 FOR UPDATE SKIP LOCKED""",
                master.current_id,
                batch,
            )
            for row in rows:
                kek = unwrap_key(
                    master.by_id(row["master_key_id"]), bytes(row["wrapped_key"]), row["account_id"]
                )
                await conn.execute(
                    """UPDATE account_keys SET wrapped_key = $2, master_key_id = $3, rotated_at = $4
                       WHERE account_id = $1""",
                    row["account_id"],
                    wrap_key(master.current, kek, row["account_id"]),
                    master.current_id,
                    now,
                )
            rewrapped += len(rows)
        if len(rows) < batch:
            break
    async with pool.acquire() as conn:
        remaining = await conn.fetchval(
            "SELECT count(*) FROM account_keys WHERE master_key_id <> $1", master.current_id
        )
    return RotationResult(rewrapped, int(remaining))
