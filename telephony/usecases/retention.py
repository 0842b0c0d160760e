"""Deletion on the customer's instruction (R3), retention, termination and D4.

Deletion is crypto-shredding: the recording's wrapped data key is destroyed in
the same transaction that marks the recording deleted and writes the audit
row, so from that commit on no copy of the blobs (a backup, a restored disk)
can be decrypted. The blobs are removed afterwards; if the process dies in
between, the retention worker finishes the job (`blobs_deleted_at`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import asyncpg

from storage import (
    accounts,
    credentials,
    leases,
    mail,
    recordings,
    securitylog,
    terminations,
    throttles,
)
from storage.backups import DeletionJournal, JournalKind
from storage.blobs.names import recording_prefix
from storage.blobs.protocol import BlobStore
from storage.securitylog import PurgeResult
from telephony.domain.actors import Actor
from telephony.domain.errors import NotFound, RecordingInProgress
from telephony.domain.recordings import FINISHED, RecordingStatus
from telephony.settings import Settings
from telephony.usecases import calls
from telephony.usecases.trail import notify_admin_change, transaction

log = logging.getLogger(__name__)

PERSONAL_DATA_YEARS = 5  # D4
_BATCH = 100
THROTTLE_KEEP_DAYS = 1  # throttle windows are minutes long; their keys name e-mails (S3)


async def delete_recording(
    pool: asyncpg.Pool,
    blobs: BlobStore,
    recording_id: str,
    *,
    account_id: str | None,
    actor: Actor,
    now: datetime,
    journal: DeletionJournal,
    reason: str = "customer",
) -> bool:
    """Destroy a finished recording; False when it was already deleted (idempotent). The
    deletion is journalled beside the backups before it commits (S8: a restore re-applies
    it)."""
    async with transaction(pool) as tx:
        target = await recordings.find_for_deletion(tx.conn, recording_id, account_id)
        if target is None:
            raise NotFound("no such recording")
        if target.status is RecordingStatus.DELETED:
            return False
        if target.status not in FINISHED:
            raise RecordingInProgress("stop the recording before deleting it")
        await journal.record(
            JournalKind.RECORDING_DELETED,
            at=now,
            account_id=target.account_id,
            recording_id=recording_id,
        )
        await recordings.shred(tx.conn, recording_id, now)
        subject = {"call_id": target.call_id, "recording_id": recording_id}
        tx.audit(target.account_id, actor, "recording.deleted", subject, now, reason=reason)
        tx.customer_event(target.account_id, "recording.deleted", now, **subject, reason=reason)
    await _remove_blobs(pool, blobs, recording_id, now)
    return True


async def _remove_blobs(
    pool: asyncpg.Pool, blobs: BlobStore, recording_id: str, now: datetime
) -> None:
    try:
        await blobs.delete_prefix(recording_prefix(recording_id))
    except OSError:
        log.exception("blob removal failed; the retention worker retries it")
        return
    async with pool.acquire() as conn:
        await recordings.mark_blobs_deleted(conn, recording_id, now)


# -- the worker's pass ----------------------------------------------------------------


@dataclass(frozen=True)
class RetentionResult:
    recordings_deleted: int
    blobs_removed: int
    accounts_erased: int


async def retention_pass(
    pool: asyncpg.Pool, blobs: BlobStore, now: datetime, journal: DeletionJournal
) -> RetentionResult:
    """Delete what retention or a terminated account's grace period says must go, finish
    blob removals a crash interrupted, and remove account data five years on (D4)."""
    deleted = 0
    while True:
        async with pool.acquire() as conn:
            due = await recordings.due_for_deletion(conn, now, _BATCH)
        for recording_id in due:
            deleted += await delete_recording(
                pool,
                blobs,
                recording_id,
                account_id=None,
                actor=Actor.system("retention"),
                now=now,
                journal=journal,
                reason="retention",
            )
        if len(due) < _BATCH:
            break
    async with pool.acquire() as conn:
        pending = await recordings.blobs_pending_deletion(conn, 1000)
    for recording_id in pending:
        await _remove_blobs(pool, blobs, recording_id, now)
    erased = 0
    async with pool.acquire() as reader:
        cutoff = now - timedelta(days=365 * PERSONAL_DATA_YEARS + 1)  # five years, leap days
        due_accounts = await terminations.due_for_removal(reader, cutoff, _BATCH)
    for account_id in due_accounts:
        async with transaction(pool) as tx:
            await journal.record(JournalKind.PERSONAL_DATA_REMOVED, at=now, account_id=account_id)
            await terminations.remove_personal_data(tx.conn, account_id, now)
            tx.audit(
                account_id,
                Actor.system("retention"),
                "account.personal_data_removed",
                {"account_id": account_id},
                now,
            )
        erased += 1
    if deleted or pending or erased:
        log.info(
            "retention pass",
            extra={"recordings_deleted": deleted, "blobs": len(pending), "accounts": erased},
        )
    return RetentionResult(deleted, len(pending), erased)


async def retention_worker(
    pool: asyncpg.Pool,
    blobs: BlobStore,
    interval_s: float,
    clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    *,
    journal: DeletionJournal,
) -> None:
    """A pass at start-up and every `interval_s`, on one node at a time."""
    await leases.every(
        pool, "retention", interval_s, lambda: retention_pass(pool, blobs, clock(), journal)
    )


# -- termination --------------------------------------------------------------------


async def terminate_account(
    pool: asyncpg.Pool, account_id: str, now: datetime, *, grace_days: int
) -> terminations.Termination:
    """End the contract: live calls end, API keys stop working, no new calls; users can
    still sign in for the grace period to download or export; then the recordings go.
    Idempotent: a second termination keeps the first one's dates."""
    actor = Actor.system("termination")
    async with transaction(pool) as tx:
        await accounts.get_account(tx.conn, account_id, lock=True)  # NotFound for an unknown id
        result, changed = await terminations.terminate(
            tx.conn, account_id, now, now + timedelta(days=grace_days)
        )
        if changed:
            calls_ended = await calls.end_active_calls(tx, account_id, actor, now)
            keys_revoked = await terminations.revoke_api_keys(tx.conn, account_id, now)
            details = {
                "grace_days": grace_days,
                "recordings_purge_after": result.recordings_purge_after.isoformat()
                if result.recordings_purge_after
                else None,
                "calls_ended": calls_ended,
                "api_keys_revoked": keys_revoked,
            }
            await notify_admin_change(  # S4 and the audit trail
                tx,
                "account.terminated",
                now=now,
                actor=actor,
                account_id=account_id,
                subject={"account_id": account_id},
                changes=details,
            )
    return result


# -- log retention (S3) -------------------------------------------------------------


async def purge_logs(pool: asyncpg.Pool, settings: Settings, now: datetime) -> PurgeResult:
    """Delete log rows older than `settings.log_retention_days` before `now` (S3)."""
    cutoff = now - timedelta(days=settings.log_retention_days)
    async with transaction(pool) as tx:
        result = await securitylog.purge_older_than(tx.conn, cutoff)
        await throttles.purge_older_than(tx.conn, now - timedelta(days=THROTTLE_KEEP_DAYS))
        # Sent mail and dead reset links name people and addresses: the same 60 days.
        mails = await mail.purge_delivered(tx.conn, cutoff)
        resets = await credentials.purge_password_resets(tx.conn, cutoff)
    log.info(
        "log retention purge",
        extra={
            "cutoff": cutoff.isoformat(),
            "security_log": result.security_log,
            "access_log": result.access_log,
            "staff_notifications": result.staff_notifications,
            "mail_messages": mails,
            "password_resets": resets,
        },
    )
    return result


async def purge_worker(pool: asyncpg.Pool, settings: Settings) -> None:
    """Daily purge; the first pass runs at start-up so a long-stopped node catches up."""
    await leases.every(
        pool,
        "log-purge",
        settings.purge_interval_s,
        lambda: purge_logs(pool, settings, datetime.now(UTC)),
    )
