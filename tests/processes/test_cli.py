"""The `telephony` command as users run it: real subprocesses against real PostgreSQL."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import secrets
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import aiohttp
import asyncpg
import pytest

from storage import audit
from storage.db import ensure_database, with_database
from storage.keys import signing
from storage.keys.hierarchy import MasterKeys
from storage.pgcluster import LocalCluster
from telephony.domain.actors import Actor
from tests.support.cli import FAST, run
from tests.support.servers import free_port
from tests.support.waiting import eventually


@pytest.fixture
def cli_env(database_url: str, tmp_path: Path) -> dict[str, str]:
    return {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(tmp_path),
        "LANG": "C.UTF-8",
        "TELEPHONY_DATABASE_URL": database_url,
        "TELEPHONY_DATA_DIR": str(tmp_path / "data"),
        **FAST,
    }


@pytest.fixture
async def fresh_database(server_dsn: str) -> str:
    url = with_database(server_dsn, f"cli_{secrets.token_hex(5)}")
    await ensure_database(url)
    return url


# -- migrate -------------------------------------------------------------------------


async def test_migrate_twice_applies_nothing_the_second_time(
    fresh_database: str, cli_env: dict[str, str]
) -> None:
    env = {**cli_env, "TELEPHONY_DATABASE_URL": fresh_database}

    first = await asyncio.to_thread(run, ["migrate"], env)
    second = await asyncio.to_thread(run, ["migrate"], env)

    assert first.returncode == 0, first.stderr
    assert json.loads(first.stdout)["applied"][0] == "0001_foundation.sql"
    assert json.loads(second.stdout) == {"applied": []}


async def test_two_processes_migrating_at_once_both_succeed(
    fresh_database: str, cli_env: dict[str, str]
) -> None:
    env = {**cli_env, "TELEPHONY_DATABASE_URL": fresh_database}

    results = await asyncio.gather(*(asyncio.to_thread(run, ["migrate"], env) for _ in range(3)))

    assert [r.returncode for r in results] == [0, 0, 0], [r.stderr for r in results]
    applied = [json.loads(r.stdout)["applied"] for r in results]
    assert sorted(len(a) for a in applied)[:2] == [0, 0]  # exactly one did the work
    conn = await asyncpg.connect(fresh_database)
    try:
        versions = await conn.fetch("SELECT version FROM schema_migrations ORDER BY version")
    finally:
        await conn.close()
    assert [r["version"] for r in versions] == list(range(1, len(versions) + 1))


# -- staff ----------------------------------------------------------------------------


async def test_staff_create_reads_the_password_from_stdin(
    cli_env: dict[str, str], pool: asyncpg.Pool
) -> None:
    password = f"staff-{secrets.token_hex(8)}"

    result = await asyncio.to_thread(
        run,
        ["staff", "create", "--email", "sup@example.com", "--role", "support", "--password-stdin"],
        cli_env,
        password + "\n",
    )

    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["role"] == "support"
    assert password not in result.stdout + result.stderr
    async with pool.acquire() as conn:
        row = await conn.fetchrow("SELECT kind, role, password_hash FROM users")
        notes = await conn.fetchval("SELECT count(*) FROM staff_notifications")
    assert (row["kind"], row["role"]) == ("staff", "support")
    assert row["password_hash"].startswith("$argon2id$")
    assert notes == 1  # S4: a new staff user is an administrative change


@pytest.mark.parametrize(
    ("args", "stdin", "message"),
    [
        (["--role", "support"], "short\n", "12 to 1024 characters"),
        (["--role", "root"], "a long enough password\n", "invalid choice"),
        (["--role", "support", "--email", "not-an-email"], "a long enough password\n", "e-mail"),
    ],
)
async def test_staff_create_refuses_bad_input(
    cli_env: dict[str, str], args: list[str], stdin: str, message: str
) -> None:
    base = ["staff", "create", "--password-stdin", "--email", "s@example.com"]

    result = await asyncio.to_thread(run, base + args, cli_env, stdin)

    assert result.returncode != 0
    assert message in result.stderr
    assert "Traceback" not in result.stderr


# -- logs: purge and the security log -----------------------------------------------------


async def test_purge_deletes_only_rows_past_retention(
    cli_env: dict[str, str], pool: asyncpg.Pool
) -> None:
    """S3: 60 days by default, configurable."""
    async with pool.acquire() as conn:
        for days in (61, 59, 1):
            await conn.execute(
                """INSERT INTO security_log (at, event, outcome, email)
                   VALUES (now() - make_interval(days => $1), 'login', 'failure', 'x@ex.com')""",
                days,
            )
            await conn.execute(
                """INSERT INTO access_log (at, request_id, method, route, status, duration_ms)
                   VALUES (now() - make_interval(days => $1), 'r', 'GET', '/healthz', 200, 1)""",
                days,
            )

    default = await asyncio.to_thread(run, ["purge"], cli_env)
    shorter = await asyncio.to_thread(run, ["purge", "--days", "30"], cli_env)

    assert json.loads(default.stdout)["security_log"] == 1
    assert json.loads(default.stdout)["access_log"] == 1
    assert json.loads(shorter.stdout)["security_log"] == 1
    async with pool.acquire() as conn:
        assert await conn.fetchval("SELECT count(*) FROM security_log") == 1
        assert await conn.fetchval("SELECT count(*) FROM access_log") == 1


async def test_security_log_command_prints_json_lines(
    cli_env: dict[str, str], pool: asyncpg.Pool
) -> None:
    async with pool.acquire() as conn:
        await conn.execute(
            "INSERT INTO security_log (event, outcome, email)"
            " VALUES ('login', 'failure', 'a@example.com')"
        )

    result = await asyncio.to_thread(run, ["security-log", "--email", "a@example.com"], cli_env)

    lines = [json.loads(line) for line in result.stdout.splitlines()]
    assert [(x["event"], x["outcome"], x["email"]) for x in lines] == [
        ("login", "failure", "a@example.com")
    ]


# -- audit verify -----------------------------------------------------------------------------


async def test_audit_verify_exits_nonzero_and_names_the_broken_row(
    cli_env: dict[str, str], pool: asyncpg.Pool
) -> None:
    async with pool.acquire() as conn:
        await conn.execute(
            """INSERT INTO accounts (id, name, postal_address, data_region, terms_accepted_at)
               VALUES ('acc_v', 'A', 'x', 'eu', now())"""
        )
        for n in range(3):
            async with conn.transaction():
                await audit.append(
                    conn,
                    account_id="acc_v",
                    at=datetime.now(UTC),
                    actor=Actor.system("test"),
                    action=f"step.{n}",
                    subject={},
                    details={},
                )
    intact = await asyncio.to_thread(run, ["audit", "verify", "--account", "acc_v"], cli_env)
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute("SET LOCAL session_replication_role = replica")
        await conn.execute("UPDATE audit_events SET action = 'forged' WHERE seq = 2")

    broken = await asyncio.to_thread(run, ["audit", "verify"], cli_env)

    assert intact.returncode == 0, intact.stderr
    assert broken.returncode == 1
    report = json.loads(broken.stdout.splitlines()[0])
    assert report == {
        "account_id": "acc_v",
        "first_broken_seq": 2,
        "reason": "content does not match its hash",
    }


# -- serve with the embedded cluster -------------------------------------------------------------


@pytest.fixture
def embedded_env(tmp_path: Path) -> Iterator[dict[str, str]]:
    data = Path(f"/tmp/telephony-cli-{secrets.token_hex(4)}")
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(tmp_path),
        "LANG": "C.UTF-8",
        "TELEPHONY_DATA_DIR": str(data),
        "TELEPHONY_MASTER_KEY": base64.b64encode(secrets.token_bytes(32)).decode(),
        **FAST,
    }
    yield env
    LocalCluster(data / "postgres").stop()
    subprocess.run(["rm", "-rf", str(data)], check=False)


def _postmaster_alive(data: Path) -> bool:
    return LocalCluster(data / "postgres").is_running()


async def _wait_healthy(port: int, proc: subprocess.Popen[str], timeout_s: float = 60) -> None:
    """Once `serve` answers /healthz (it may first start its own cluster)."""
    async with aiohttp.ClientSession() as http:

        async def healthy() -> bool:
            assert proc.poll() is None, "serve exited early"
            with contextlib.suppress(aiohttp.ClientError):  # not listening yet
                async with http.get(f"http://127.0.0.1:{port}/healthz") as resp:
                    return resp.status == 200
            return False

        await eventually(healthy, timeout_s=timeout_s, interval_s=0.1)


def _serve(env: dict[str, str], port: int) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "telephony", "serve", "--port", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        text=True,
    )


async def test_keys_rotate_signing_adds_a_published_key_and_keys_rotate_rewraps_them(
    cli_env: dict[str, str], pool: asyncpg.Pool
) -> None:
    """`telephony keys rotate-signing` signs with a new key from now on, every older one
    still in the JWKS; a master key rotation rewraps the signing keys too, so the new
    master key alone unwraps the current one."""
    old, new = secrets.token_bytes(32), secrets.token_bytes(32)
    env = {**cli_env, "TELEPHONY_MASTER_KEY": base64.b64encode(old).decode()}

    first = await asyncio.to_thread(run, ["keys", "rotate-signing"], env)
    second = await asyncio.to_thread(run, ["keys", "rotate-signing"], env)
    rotating = {
        **env,
        "TELEPHONY_MASTER_KEY": base64.b64encode(new).decode(),
        "TELEPHONY_MASTER_KEY_PREVIOUS": base64.b64encode(old).decode(),
    }
    rotated = await asyncio.to_thread(run, ["keys", "rotate"], rotating)

    assert first.returncode == second.returncode == rotated.returncode == 0, rotated.stderr
    made = [json.loads(r.stdout) for r in (first, second)]
    assert [m["published"] for m in made] == [1, 2]
    assert made[0]["kid"] != made[1]["kid"]
    summary = json.loads(rotated.stdout)
    assert summary["signing_keys_rewrapped"] == 2
    async with pool.acquire() as conn:
        current = await signing.current(conn, MasterKeys(new), datetime.now(UTC))
        wrapped_under = {
            r["master_key_id"] for r in await conn.fetch("SELECT master_key_id FROM signing_keys")
        }
    assert current.kid == made[1]["kid"]
    assert wrapped_under == {MasterKeys(new).current_id}


async def test_serve_runs_its_own_cluster_and_survives_a_sigkill(
    embedded_env: dict[str, str],
) -> None:
    data = Path(embedded_env["TELEPHONY_DATA_DIR"])
    port = free_port()

    first = await asyncio.to_thread(_serve, embedded_env, port)
    await _wait_healthy(port, first)
    during = await asyncio.to_thread(run, ["migrate"], embedded_env)  # the CLI finds the cluster
    alive_after_cli = await asyncio.to_thread(_postmaster_alive, data)
    first.kill()  # SIGKILL: the cluster is left running
    await asyncio.to_thread(first.wait)
    second = await asyncio.to_thread(_serve, embedded_env, port)
    await _wait_healthy(port, second)  # reuses the orphaned cluster
    second.terminate()
    code = await asyncio.to_thread(second.wait, 30)

    assert during.returncode == 0 and json.loads(during.stdout) == {"applied": []}
    assert alive_after_cli
    assert code == 0
    assert not await asyncio.to_thread(_postmaster_alive, data)  # stopped on shutdown


# -- policy and news -------------------------------------------------------------------


async def test_policy_publish_keeps_versions_and_mails_a_material_one(
    cli_env: dict[str, str], pool: asyncpg.Pool, tmp_path: Path
) -> None:
    async with pool.acquire() as conn:
        await conn.execute(
            """INSERT INTO accounts (id, name, postal_address, data_region, terms_accepted_at)
               VALUES ('acc_cli', 'A', 'x', 'eu', now())"""
        )
        await conn.execute(
            """INSERT INTO users (id, account_id, kind, role, email, name, password_hash)
               VALUES ('usr_a', 'acc_cli', 'customer', 'owner', 'a@example.com', 'A', 'h'),
                      ('usr_b', 'acc_cli', 'customer', 'member', 'b@example.com', 'B', NULL)"""
        )
    text = tmp_path / "policy.md"
    await asyncio.to_thread(text.write_text, "# Polityka\n\nTreść.", encoding="utf-8")

    minor = await asyncio.to_thread(
        run, ["policy", "publish", "--file", str(text), "--version", "1.0"], cli_env
    )
    material = await asyncio.to_thread(
        run, ["policy", "publish", "--file", str(text), "--version", "2.0", "--material"], cli_env
    )
    again = await asyncio.to_thread(
        run, ["policy", "publish", "--file", str(text), "--version", "2.0"], cli_env
    )
    listed = await asyncio.to_thread(run, ["policy", "list"], cli_env)
    missing = await asyncio.to_thread(
        run, ["policy", "publish", "--file", str(tmp_path / "nope"), "--version", "3"], cli_env
    )

    assert minor.returncode == 0, minor.stderr
    assert json.loads(minor.stdout)["announced_to"] == 0
    assert json.loads(material.stdout)["announced_to"] == 1  # the invited user has no login yet
    assert again.returncode == 1 and "already published" in again.stderr
    assert [json.loads(line)["version"] for line in listed.stdout.splitlines()] == ["2.0", "1.0"]
    assert missing.returncode == 1 and "cannot read" in missing.stderr
    async with pool.acquire() as conn:
        mails = await conn.fetch("SELECT kind, user_id, params FROM mail_messages")
        notes = await conn.fetch("SELECT event FROM staff_notifications")
    assert [(m["kind"], m["user_id"]) for m in mails] == [("policy", "usr_a")]
    assert [n["event"] for n in notes] == ["policy.published", "policy.published"]


async def test_news_goes_only_to_people_who_want_it(
    cli_env: dict[str, str], pool: asyncpg.Pool, tmp_path: Path
) -> None:
    async with pool.acquire() as conn:
        await conn.execute(
            """INSERT INTO accounts (id, name, postal_address, data_region, terms_accepted_at)
               VALUES ('acc_cli', 'A', 'x', 'eu', now())"""
        )
        await conn.execute(
            """INSERT INTO users (id, account_id, kind, role, email, name, password_hash,
                                  product_updates)
               VALUES ('usr_a', 'acc_cli', 'customer', 'owner', 'a@x.example', 'A', 'h', true),
                      ('usr_b', 'acc_cli', 'customer', 'member', 'b@x.example', 'B', 'h', false)"""
        )
    text = tmp_path / "news.txt"
    await asyncio.to_thread(text.write_text, "Opus downloads are here.", encoding="utf-8")

    sent = await asyncio.to_thread(
        run, ["news", "send", "--subject", "Opus", "--file", str(text)], cli_env
    )

    assert sent.returncode == 0, sent.stderr
    assert json.loads(sent.stdout) == {"queued": 1}
    async with pool.acquire() as conn:
        assert await conn.fetchval("SELECT user_id FROM mail_messages") == "usr_a"
