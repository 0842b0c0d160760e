"""The key hierarchy: master key -> account key -> data key, and master key rotation."""

from __future__ import annotations

import base64
import os
import stat
from datetime import UTC, datetime
from pathlib import Path

import asyncpg
import pytest

from storage.keys import hierarchy as keys
from storage.keys.crypto import new_key
from storage.keys.providers import ServiceKeys
from telephony.domain.errors import IntegrityFailure


async def make_account(pool: asyncpg.Pool, account_id: str) -> None:
    async with pool.acquire() as conn:
        await conn.execute(
            """INSERT INTO accounts (id, name, postal_address, data_region, terms_accepted_at)
               VALUES ($1, 'A', 'x', 'eu', now())""",
            account_id,
        )


def test_dev_key_is_created_once_with_private_mode(tmp_path: Path) -> None:
    path = tmp_path / "var" / "master.key"

    first = keys.load_or_create_dev_key(path)
    second = keys.load_or_create_dev_key(path)

    assert first == second and len(first) == 32
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600


@pytest.mark.parametrize("text", ["", "not base64!", base64.b64encode(b"short").decode()])
def test_bad_master_keys_are_refused_without_echoing_them(text: str) -> None:
    with pytest.raises(keys.MasterKeyError) as info:
        keys.decode_master_key(text)

    assert text not in str(info.value) or text == ""


def test_master_keys_never_print_their_bytes() -> None:
    master = keys.MasterKeys(new_key())

    assert master.current.hex() not in repr(master)
    assert base64.b64encode(master.current).decode() not in repr(master)


async def test_account_key_is_stable_and_stored_wrapped(pool: asyncpg.Pool) -> None:
    master = keys.MasterKeys(new_key())
    await make_account(pool, "acc_k1")

    async with pool.acquire() as conn:
        first = await keys.account_key(conn, master, "acc_k1", datetime.now(UTC))
        second = await keys.account_key(conn, master, "acc_k1", datetime.now(UTC))
        wrapped = await conn.fetchval("SELECT wrapped_key FROM account_keys")

    assert first == second
    assert first not in bytes(wrapped)


async def test_rotation_rewraps_account_keys_and_old_data_keys_still_open(
    pool: asyncpg.Pool,
) -> None:
    old, new = new_key(), new_key()
    for i in range(3):
        await make_account(pool, f"acc_r{i}")
    async with pool.acquire() as conn:
        before = {
            i: await keys.account_key(conn, keys.MasterKeys(old), f"acc_r{i}", datetime.now(UTC))
            for i in range(3)
        }
    async with pool.acquire() as conn:
        made = await ServiceKeys(keys.MasterKeys(old)).new_recording_key(
            conn, "acc_r0", "rec_1", datetime.now(UTC)
        )
    during = keys.MasterKeys(new, previous=(old,))

    result = await keys.rotate(pool, during, datetime.now(UTC), batch=2)

    assert (result.rewrapped, result.remaining) == (3, 0)
    after_only_new = keys.MasterKeys(new)
    async with pool.acquire() as conn:
        for i in range(3):
            assert (
                await keys.account_key(conn, after_only_new, f"acc_r{i}", datetime.now(UTC))
                == before[i]
            )
        with pytest.raises(IntegrityFailure):
            await keys.account_key(conn, keys.MasterKeys(old), "acc_r0", datetime.now(UTC))
        reopened = await ServiceKeys(after_only_new).recording_key(
            conn, "acc_r0", "rec_1", made.wrapped, datetime.now(UTC)
        )
    assert reopened == made.data_key


async def test_a_destroyed_data_key_cannot_open(pool: asyncpg.Pool) -> None:
    await make_account(pool, "acc_d")
    provider = ServiceKeys(keys.MasterKeys(new_key()))

    async with pool.acquire() as conn:
        with pytest.raises(IntegrityFailure):
            await provider.recording_key(conn, "acc_d", "rec_1", None, datetime.now(UTC))
