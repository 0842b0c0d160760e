"""The recording gate and the customer's controls: start, pause, resume, stop (R1, R2).

R1: only `start_recording`, an explicit request of the customer, creates a
recording. R2: it runs only with every counterpart's consent, checked under
the call's row lock together with everything else the gate needs.
"""

from __future__ import annotations

from datetime import datetime

import asyncpg

from storage import calls, customer_keys, recordings
from storage.db import Conn
from storage.ids import new_id
from storage.keys.providers import KeyProvider, customer_recording_key
from telephony.domain.consent import check_can_record, check_can_resume
from telephony.domain.errors import CustomerKeyRequired
from telephony.domain.recordings import Action, Channels, EndReason, PauseBehavior, check_transition
from telephony.domain.roles import CustomerPrincipal
from telephony.usecases import recording_states
from telephony.usecases.calls import Clock, facts, utc_now
from telephony.usecases.trail import transaction


async def start_recording(
    pool: asyncpg.Pool,
    principal: CustomerPrincipal,
    call_id: str,
    *,
    channels: Channels,
    pause_behavior: PauseBehavior,
    keys: KeyProvider,
    clock: Clock = utc_now,
) -> recordings.Recording:
    """R1: only this explicit request starts a recording; R2: only with every consent."""
    async with transaction(pool) as tx:
        call = await calls.get_call(tx.conn, call_id, account_id=principal.account_id, lock=True)
        now = clock()
        check_can_record(await facts(tx.conn, call))
        recording_id = new_id("rec")
        sealed_to = await _customer_key(tx.conn, call.account_id, recording_id)
        key = None
        if sealed_to is None:
            key = await keys.new_recording_key(tx.conn, call.account_id, recording_id, now)
        rec = await recordings.insert(
            tx.conn,
            id=recording_id,
            call_id=call.id,
            account_id=call.account_id,
            channels=channels,
            pause_behavior=pause_behavior,
            started_by=principal.actor,
            wrapped_key=key.wrapped if key else None,
            nonce_prefix=key.nonce_prefix if key else None,
            customer_key_id=sealed_to,
            now=now,
        )
        await recording_states.announce(
            tx,
            rec,
            principal.actor,
            "recording.started",
            now,
            channels=channels.value,
            pause_behavior=pause_behavior.value,
        )
        return rec


async def _customer_key(conn: Conn, account_id: str, recording_id: str) -> str | None:
    """The customer key the recording is sealed to; None for the service's keys. An
    account that ever activated a key of its own gets its own or nothing: a deleted or
    unusable key refuses the start, never falls back to the service's key."""
    mode = await customer_keys.sealing_mode(conn, account_id)
    if not mode.required:
        return None
    if mode.key is None:
        raise CustomerKeyRequired(
            "recordings of this account are sealed to its own key, and none is active:"
            " activate one (POST /v1/encryption-keys/{id}/activate)"
        )
    try:
        customer_recording_key(mode.key.key, recording_id)  # the writer's wrap, tried now
    except ValueError:
        raise CustomerKeyRequired(
            f"the active encryption key {mode.key.id} cannot be used; register and activate another"
        ) from None
    return mode.key.id


async def change_recording(
    pool: asyncpg.Pool,
    principal: CustomerPrincipal,
    recording_id: str,
    action: Action,
    clock: Clock = utc_now,
) -> recordings.Recording:
    """Pause, resume or stop, under the call's lock like every consent change."""
    async with transaction(pool) as tx:
        found = await recordings.get(tx.conn, recording_id, account_id=principal.account_id)
        call = await calls.get_call(
            tx.conn, found.call_id, account_id=principal.account_id, lock=True
        )
        rec = await recordings.get(
            tx.conn, recording_id, account_id=principal.account_id, lock=True
        )
        now = clock()
        check_transition(action, rec.status)
        if action is Action.PAUSE:
            return await recording_states.pause(tx, rec, principal.actor, EndReason.PAUSE, now)
        if action is Action.RESUME:
            check_can_resume(await facts(tx.conn, call))
            return await recording_states.resume(tx, rec, principal.actor, now, reason="customer")
        return await recording_states.finish(tx, rec, principal.actor, EndReason.STOP, now)


async def list_recordings(
    pool: asyncpg.Pool,
    account_id: str,
    after: tuple[datetime, str] | None,
    limit: int,
    where: recordings.RecordingFilter = recordings.RecordingFilter(),  # noqa: B008 -- frozen
    newest_first: bool = False,
) -> list[recordings.Recording]:
    async with pool.acquire() as conn:
        return await recordings.list_for_account(
            conn, account_id, after=after, limit=limit, where=where, newest_first=newest_first
        )


async def get_recording(
    pool: asyncpg.Pool, account_id: str, recording_id: str
) -> recordings.Recording:
    async with pool.acquire() as conn:
        return await recordings.get(conn, recording_id, account_id=account_id)


async def stored_encoding(pool: asyncpg.Pool, recording_id: str) -> str | None:
    """The codec the recording's audio is kept in (None before any audio arrived)."""
    async with pool.acquire() as conn:
        return (await recordings.stored_format(conn, recording_id)).encoding
