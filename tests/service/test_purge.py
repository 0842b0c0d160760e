"""S3: security-log and access-log rows are kept 60 days (configurable), then deleted.

Rows are back-dated directly in PostgreSQL; `now` is passed in, never read.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from datetime import UTC, datetime, timedelta

import asyncpg
import pytest
from aiohttp.test_utils import TestClient

from storage import outbox, securitylog
from storage.securitylog import AccessEntry, PurgeResult
from telephony.settings import Settings
from telephony.usecases import retention as workers
from telephony.web.app import create_app
from tests.conftest import ServiceServer
from tests.support.waiting import eventually

NOW = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)


async def add_security_event(pool: asyncpg.Pool, at: datetime, email: str) -> None:
    async with pool.acquire() as conn:
        await securitylog.record(
            conn, event="login", outcome="failure", at=at, email=email, source_address="10.0.0.1"
        )


async def add_access_entry(pool: asyncpg.Pool, at: datetime, request_id: str) -> None:
    entry = AccessEntry(
        at=at,
        request_id=request_id,
        method="GET",
        route="/healthz",
        status=200,
        duration_ms=1.5,
        principal_id=None,
        source_address="10.0.0.1",
        user_agent=None,
    )
    async with pool.acquire() as conn:
        await securitylog.write_access_entries(conn, [entry])


async def add_notification(pool: asyncpg.Pool, at: datetime, state: str) -> int:
    """A staff notification created at `at`: "pending", "delivered" or "given_up"."""
    async with pool.acquire() as conn, conn.transaction():
        note_id = await outbox.enqueue(conn, "user.created", {"state": state}, at)
        if state == "delivered":
            await outbox.mark_delivered(conn, note_id, at + timedelta(seconds=1))
        elif state == "given_up":
            await outbox.mark_failed(conn, note_id, error="HTTP 500", next_attempt_at=None, now=at)
    return note_id


async def security_emails(pool: asyncpg.Pool) -> list[str]:
    async with pool.acquire() as conn:
        return [r["email"] for r in await conn.fetch("SELECT email FROM security_log ORDER BY id")]


async def access_ids(pool: asyncpg.Pool) -> list[str]:
    async with pool.acquire() as conn:
        rows = await conn.fetch("SELECT request_id FROM access_log ORDER BY id")
    return [r["request_id"] for r in rows]


async def notification_states(pool: asyncpg.Pool) -> list[str]:
    async with pool.acquire() as conn:
        return [n.payload["state"] for n in await outbox.list_all(conn)]


async def test_purge_deletes_log_rows_older_than_60_days_and_keeps_recent_ones(
    pool: asyncpg.Pool, settings: Settings
) -> None:
    """S3: 61-day-old rows go, 1-day-old rows stay, in both logs."""
    old, recent = NOW - timedelta(days=61), NOW - timedelta(days=1)
    await add_security_event(pool, old, "old@example.com")
    await add_security_event(pool, recent, "recent@example.com")
    await add_access_entry(pool, old, "req-old")
    await add_access_entry(pool, recent, "req-recent")
    assert settings.log_retention_days == 60

    result = await workers.purge_logs(pool, settings, NOW)

    assert result == PurgeResult(security_log=1, access_log=1, staff_notifications=0)
    assert await security_emails(pool) == ["recent@example.com"]
    assert await access_ids(pool) == ["req-recent"]


async def test_purge_deletes_old_finished_notifications_and_keeps_undelivered_ones(
    pool: asyncpg.Pool, settings: Settings
) -> None:
    """S3 with S4: a notification still owed to staff is never purged, however old."""
    old, recent = NOW - timedelta(days=61), NOW - timedelta(days=1)
    await add_notification(pool, old, "pending")
    await add_notification(pool, old, "delivered")
    await add_notification(pool, old, "given_up")
    await add_notification(pool, recent, "delivered")

    result = await workers.purge_logs(pool, settings, NOW)

    assert result.staff_notifications == 2
    assert await notification_states(pool) == ["pending", "delivered"]


@pytest.mark.parametrize(
    ("retention_days", "age", "kept"),
    [
        (60, timedelta(days=61), False),
        (60, timedelta(days=59), True),
        (60, timedelta(days=60), True),  # exactly at the cutoff: not older than it
        (60, timedelta(days=60, microseconds=1), False),
        (30, timedelta(days=31), False),
        (30, timedelta(days=29), True),
        (90, timedelta(days=61), True),
    ],
)
async def test_retention_is_configurable(
    pool: asyncpg.Pool, settings: Settings, retention_days: int, age: timedelta, kept: bool
) -> None:
    """S3: log_retention_days sets the cutoff; rows older than it are deleted."""
    configured = settings.replace(log_retention_days=retention_days)
    await add_security_event(pool, NOW - age, "someone@example.com")
    await add_access_entry(pool, NOW - age, "req")
    await add_notification(pool, NOW - age, "delivered")

    result = await workers.purge_logs(pool, configured, NOW)

    expected = 0 if kept else 1
    assert result == PurgeResult(expected, expected, expected)
    assert len(await security_emails(pool)) == 1 - expected
    assert len(await access_ids(pool)) == 1 - expected
    assert len(await notification_states(pool)) == 1 - expected


async def test_purge_logs_what_it_deleted(
    pool: asyncpg.Pool, settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    """S3: each purge leaves a structured line with the cutoff and the counts."""
    caplog.set_level(logging.INFO, logger="telephony.usecases.retention")
    await add_access_entry(pool, NOW - timedelta(days=100), "req-old")

    await workers.purge_logs(pool, settings, NOW)

    [record] = [r for r in caplog.records if r.getMessage() == "log retention purge"]
    assert record.cutoff == (NOW - timedelta(days=60)).isoformat()  # type: ignore[attr-defined]
    assert (record.security_log, record.access_log) == (0, 1)  # type: ignore[attr-defined]


async def test_serve_purges_old_rows_at_start_up(pool: asyncpg.Pool, settings: Settings) -> None:
    """S3: the serving process runs the purge itself, first at start-up."""
    now = datetime.now(UTC)
    await add_security_event(pool, now - timedelta(days=61), "old@example.com")
    await add_security_event(pool, now - timedelta(days=1), "recent@example.com")
    await add_access_entry(pool, now - timedelta(days=61), "req-old")
    app = create_app(settings, run_workers=True)

    async with TestClient(ServiceServer(app)):
        await eventually(lambda: only_recent_security_events(pool))

    assert await security_emails(pool) == ["recent@example.com"]
    assert await access_ids(pool) == []


async def test_the_purge_worker_runs_again_after_its_interval(
    pool: asyncpg.Pool, settings: Settings
) -> None:
    """S3: the daily task repeats; a row that ages past retention later is purged later."""
    configured = settings.replace(purge_interval_s=1)
    await add_access_entry(pool, datetime.now(UTC) - timedelta(days=61), "req-first")
    worker = asyncio.create_task(workers.purge_worker(pool, configured))
    try:
        await eventually(lambda: access_log_is_empty(pool))  # the start-up pass
        await add_access_entry(pool, datetime.now(UTC) - timedelta(days=61), "req-second")

        await eventually(lambda: access_log_is_empty(pool))  # the next pass, one interval later
    finally:
        worker.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await worker

    assert await access_ids(pool) == []


async def only_recent_security_events(pool: asyncpg.Pool) -> bool:
    return await security_emails(pool) == ["recent@example.com"]


async def access_log_is_empty(pool: asyncpg.Pool) -> bool:
    """The back-dated access-log rows are purged."""
    return not await access_ids(pool)


async def test_sent_mail_and_dead_reset_links_go_after_the_retention_and_pending_ones_stay(
    pool: asyncpg.Pool, settings: Settings
) -> None:
    """S3: mail rows and reset links name people; what is done goes after 60 days, what is
    still owed (a message not yet sent, a live link) stays however old."""
    old, recent = NOW - timedelta(days=61), NOW - timedelta(days=1)
    async with pool.acquire() as conn:
        await conn.execute(
            """INSERT INTO accounts (id, name, postal_address, data_region, terms_accepted_at)
               VALUES ('acc_p', 'A', 'x', 'eu', now())"""
        )
        await conn.execute(
            """INSERT INTO users (id, account_id, kind, role, email, name, password_hash)
               VALUES ('usr_p', 'acc_p', 'customer', 'owner', 'p@example.com', 'P', 'h')"""
        )
        for mail_id, created, delivered in (
            ("mail_old_sent", old, old),
            ("mail_old_pending", old, None),
            ("mail_recent_sent", recent, recent),
        ):
            await conn.execute(
                """INSERT INTO mail_messages (id, created_at, kind, user_id, next_attempt_at,
                                              delivered_at)
                   VALUES ($1, $2, 'policy', 'usr_p', $2, $3)""",
                mail_id,
                created,
                delivered,
            )
        for reset_id, used, expires in (
            ("pwr_old_used", old, old),
            ("pwr_old_expired", None, old),
            ("pwr_live", None, NOW + timedelta(minutes=10)),
        ):
            await conn.execute(
                """INSERT INTO password_resets (id, user_id, token_hash, created_at, expires_at,
                                                used_at)
                   VALUES ($1, 'usr_p', $2, $3, $4, $5)""",
                reset_id,
                reset_id.encode(),
                old,
                expires,
                used,
            )

    await workers.purge_logs(pool, settings, NOW)

    async with pool.acquire() as conn:
        mails = [r["id"] for r in await conn.fetch("SELECT id FROM mail_messages ORDER BY id")]
        resets = [r["id"] for r in await conn.fetch("SELECT id FROM password_resets")]
    assert mails == ["mail_old_pending", "mail_recent_sent"]
    assert resets == ["pwr_live"]
