"""Retention, account termination, the D4 five-year removal and the export archive.

Times are injected (`now`), never slept: a recording "ended two days ago" is a
back-dated row, the end of a grace period is a pass run with a later `now`.
"""

from __future__ import annotations

import asyncio
import io
import json
import os
import wave
import zipfile
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg
from aiohttp.test_utils import TestClient

from storage import audit, recordings
from telephony.settings import Settings
from telephony.usecases import retention
from telephony.web.appkeys import BLOBS, JOURNAL
from tests.conftest import Customer, consented_call, login
from tests.support.cli import FAST, run
from tests.support.recordings import download, expected, record, recording_folder
from tests.support.sealed import make_pair, seal_to


async def status_of(pool: asyncpg.Pool, recording_id: str) -> str:
    async with pool.acquire() as conn:
        return await conn.fetchval("SELECT status FROM recordings WHERE id = $1", recording_id)


async def backdate(pool: asyncpg.Pool, recording_id: str, ended: datetime) -> None:
    async with pool.acquire() as conn:
        await conn.execute("UPDATE recordings SET ended_at = $2 WHERE id = $1", recording_id, ended)


async def test_retention_deletes_recordings_older_than_the_account_setting(
    client: TestClient, owner: Customer, pool: asyncpg.Pool, settings: Settings
) -> None:
    old = await record(client, owner, pool, frames=20)
    recent = await record(client, owner, pool, frames=20)
    resp = await client.patch(
        "/v1/account", json={"recording_retention_days": 7}, headers=owner.auth
    )
    assert resp.status == 200
    now = datetime.now(UTC)
    await backdate(pool, old, now - timedelta(days=8))
    await backdate(pool, recent, now - timedelta(days=6))

    result = await retention.retention_pass(pool, client.app[BLOBS], now, client.app[JOURNAL])

    assert result.recordings_deleted == 1
    assert await status_of(pool, old) == "deleted"
    assert not await asyncio.to_thread(recording_folder(settings, old).exists)
    assert (await download(client, owner, recent)).status == 200
    trail = await (await client.get("/v1/audit?limit=200", headers=owner.auth)).json()
    [deleted] = [e for e in trail["items"] if e["action"] == "recording.deleted"]
    assert deleted["actor"] == {"type": "system", "id": "retention", "role": None}
    assert deleted["details"] == {"reason": "retention"}


async def test_without_a_retention_setting_recordings_are_kept(
    client: TestClient, owner: Customer, pool: asyncpg.Pool
) -> None:
    kept = await record(client, owner, pool, frames=10)
    now = datetime.now(UTC)
    await backdate(pool, kept, now - timedelta(days=3650))

    result = await retention.retention_pass(pool, client.app[BLOBS], now, client.app[JOURNAL])

    assert result.recordings_deleted == 0
    assert await status_of(pool, kept) == "completed"


async def test_the_pass_finishes_blob_removal_a_crash_interrupted(
    client: TestClient, owner: Customer, pool: asyncpg.Pool, settings: Settings
) -> None:
    recording_id = await record(client, owner, pool, frames=10)
    now = datetime.now(UTC)
    async with pool.acquire() as conn, conn.transaction():
        await recordings.shred(conn, recording_id, now)  # committed; the process "dies" here
    assert await asyncio.to_thread(recording_folder(settings, recording_id).exists)

    result = await retention.retention_pass(pool, client.app[BLOBS], now, client.app[JOURNAL])

    assert result.blobs_removed == 1
    assert not await asyncio.to_thread(recording_folder(settings, recording_id).exists)
    async with pool.acquire() as conn:
        assert await conn.fetchval(
            "SELECT blobs_deleted_at IS NOT NULL FROM recordings WHERE id = $1", recording_id
        )


async def test_termination_ends_calls_stops_keys_and_new_calls_but_allows_downloads(
    client: TestClient, owner: Customer, pool: asyncpg.Pool
) -> None:
    done = await record(client, owner, pool, frames=10)
    live_call = await consented_call(client, owner)
    started = await client.post(
        f"/v1/calls/{live_call['id']}/recordings", json={}, headers=owner.auth
    )
    live = (await started.json())["id"]
    key = await client.post(
        "/v1/api-keys", json={"name": "ci", "scopes": ["calls"]}, headers=owner.auth
    )
    api_auth = {"Authorization": f"Bearer {(await key.json())['token']}"}
    now = datetime.now(UTC)

    first = await retention.terminate_account(pool, owner.account_id, now, grace_days=30)
    again = await retention.terminate_account(
        pool, owner.account_id, now + timedelta(days=1), grace_days=5
    )

    assert again == first  # idempotent: the first termination's dates stand
    assert first.recordings_purge_after == now + timedelta(days=30)
    call = await (await client.get(f"/v1/calls/{live_call['id']}", headers=owner.auth)).json()
    assert call["status"] == "ended"
    assert await status_of(pool, live) == "completed"
    assert (await client.get("/v1/calls", headers=api_auth)).status == 401
    refused = await client.post(
        "/v1/calls",
        json={
            "direction": "outbound",
            "from": "+48221234567",
            "to": "+48601234567",
            "counterparts": [{"label": "client", "number": "+48601234567"}],
        },
        headers=owner.auth,
    )
    assert refused.status == 409
    assert (await refused.json())["code"] == "account-terminated"
    fresh = Customer(owner.account_id, owner.user_id, owner.email, await login(client, owner.email))
    assert (await download(client, fresh, done)).status == 200


async def test_after_the_grace_period_recordings_go_and_after_five_years_personal_data(
    client: TestClient, owner: Customer, pool: asyncpg.Pool
) -> None:
    await record(client, owner, pool, frames=10)
    await seal_to(client, owner, make_pair())  # and one sealed to a key of the account's own
    await record(client, owner, pool, frames=10)
    filed = await client.post(
        "/v1/privacy-requests",
        json={"kind": "access", "details": "Ada Owner, ul. Prosta 1"},
        headers=owner.auth,
    )
    assert filed.status == 201
    secret = await client.post("/v1/account/webhook-secret", headers=owner.auth)
    assert secret.status == 201
    now = datetime.now(UTC)
    await retention.terminate_account(pool, owner.account_id, now, grace_days=30)
    blobs, journal = client.app[BLOBS], client.app[JOURNAL]

    during = await retention.retention_pass(pool, blobs, now + timedelta(days=29), journal)
    after = await retention.retention_pass(pool, blobs, now + timedelta(days=31), journal)
    four_years = await retention.retention_pass(pool, blobs, now + timedelta(days=4 * 365), journal)
    five_years = await retention.retention_pass(
        pool, blobs, now + timedelta(days=5 * 365 + 3), journal
    )

    assert during.recordings_deleted == 0
    assert after.recordings_deleted == 2
    assert four_years.accounts_erased == 0
    assert five_years.accounts_erased == 1
    async with pool.acquire() as conn:
        account = await conn.fetchrow(
            "SELECT name, postal_address, vat_number FROM accounts WHERE id = $1",
            owner.account_id,
        )
        users = await conn.fetch(
            "SELECT email, name, password_hash FROM users WHERE account_id = $1",
            owner.account_id,
        )
        leftovers = await conn.fetchval(
            """SELECT (SELECT count(*) FROM calls WHERE account_id = $1)
                    + (SELECT count(*) FROM account_keys WHERE account_id = $1)
                    + (SELECT count(*) FROM recordings WHERE account_id = $1)
                    + (SELECT count(*) FROM webhook_secrets WHERE account_id = $1)
                    + (SELECT count(*) FROM customer_keys WHERE account_id = $1)
                    + (SELECT count(*) FROM recording_key_epochs)""",
            owner.account_id,
        )
        breaks = await audit.verify(conn, owner.account_id)
        request_text = await conn.fetchval(
            "SELECT details FROM privacy_requests WHERE account_id = $1", owner.account_id
        )
    assert dict(account) == {"name": "terminated account", "postal_address": "", "vat_number": None}
    assert [u["email"].startswith("erased-") for u in users] == [True]
    assert all(u["name"] == "" and u["password_hash"] is None for u in users)
    assert leftovers == 0
    assert request_text == ""
    assert breaks == []  # the audit trail survives, pseudonymous and intact


async def test_terminating_an_unknown_account_fails_cleanly(
    settings: Settings, database_url: str, tmp_path: Path
) -> None:
    env = cli_env(settings, database_url, tmp_path)

    result = await asyncio.to_thread(run, ["account", "terminate", "acc_nothing"], env)

    assert result.returncode == 1
    assert "no such account" in result.stderr
    assert "Traceback" not in result.stderr


def cli_env(settings: Settings, database_url: str, tmp_path: Path) -> dict[str, str]:
    """The CLI on the test's database, blob store and master key."""
    assert settings.master_key is not None
    return {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(tmp_path),
        "LANG": "C.UTF-8",
        "TELEPHONY_DATABASE_URL": database_url,
        "TELEPHONY_DATA_DIR": str(settings.data_dir),
        "TELEPHONY_MASTER_KEY": settings.master_key,
        **FAST,
    }


async def test_export_writes_wavs_and_a_manifest_of_calls_consents_and_audit(
    client: TestClient,
    owner: Customer,
    pool: asyncpg.Pool,
    settings: Settings,
    database_url: str,
    tmp_path: Path,
) -> None:
    recording_id = await record(client, owner, pool, frames=30)
    out = tmp_path / "export.zip"

    result = await asyncio.to_thread(
        run,
        ["export", "--account", owner.account_id, "--out", str(out)],
        cli_env(settings, database_url, tmp_path),
    )

    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["recordings"] == 1 and summary["damaged"] == []
    assert "1/1 recordings" in result.stderr  # the progress bar
    manifest, audio = await asyncio.to_thread(read_archive, out, recording_id)
    with wave.open(io.BytesIO(audio)) as wav:
        assert wav.getnchannels() == 2
        assert wav.getnframes() == len(expected("inbound", 30))
    [call] = manifest["calls"]
    assert call["consent_events"][0]["decision"] == "granted"
    assert call["counterparts"][0]["number"].startswith("+")
    assert manifest["recordings"][0]["file"] == f"recordings/{recording_id}.wav"
    assert "recording.started" in {e["action"] for e in manifest["audit_events"]}
    assert manifest["account"]["id"] == owner.account_id
    async with pool.acquire() as conn:
        assert await conn.fetchval(
            "SELECT exported_at IS NOT NULL FROM accounts WHERE id = $1", owner.account_id
        )


def read_archive(path: Path, recording_id: str) -> tuple[dict, bytes]:
    with zipfile.ZipFile(path) as archive:
        manifest = json.loads(archive.read("manifest.json"))
        return manifest, archive.read(f"recordings/{recording_id}.wav")


async def test_export_refuses_to_overwrite_a_file(
    settings: Settings, owner: Customer, database_url: str, tmp_path: Path
) -> None:
    out = tmp_path / "taken.zip"
    await asyncio.to_thread(out.write_bytes, b"keep me")

    result = await asyncio.to_thread(
        run,
        ["export", "--account", owner.account_id, "--out", str(out)],
        cli_env(settings, database_url, tmp_path),
    )

    assert result.returncode == 1
    assert await asyncio.to_thread(out.read_bytes) == b"keep me"
