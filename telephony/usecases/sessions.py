"""Call sessions: use cases joining the consent rules, storage and the audit trail.

Every use case that touches consent or a recording runs in one transaction
holding the call's row lock (R2): a recording start and a revocation can
never interleave. Lock order is always call row, then recording, then the
account's audit head, so the use cases cannot deadlock each other.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg

from storage import accounts, audit, calls, consents, recordings, webhooks
from storage.ids import new_id, new_token
from storage.keys import hierarchy as keys
from storage.keys.crypto import new_nonce_prefix
from telephony.domain.consent import (
    CallFacts,
    Consent,
    CounterpartFacts,
    can_resume,
    check_can_record,
    check_can_resume,
    current_flags,
)
from telephony.domain.errors import AccountTerminated, CallNotActive, InvalidInput
from telephony.domain.recordings import Reason, Status, check_transition
from telephony.domain.roles import Principal

Clock = Callable[[], datetime]
MEDIA_TOKEN_PREFIX = "mt"  # noqa: S105 - a prefix, not a secret


def utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class CounterpartView:
    counterpart: calls.Counterpart
    consent: Consent
    events: list[consents.ConsentEvent]


@dataclass(frozen=True)
class CallView:
    call: calls.Call
    counterparts: list[CounterpartView]
    recordings: list[recordings.Recording]


@dataclass(frozen=True)
class NewCall:
    view: CallView
    media_token: str


async def _views(conn: asyncpg.Connection, found: Sequence[calls.Call]) -> list[CallView]:
    ids = [c.id for c in found]
    parties = await calls.list_counterparts(conn, ids)
    events = await consents.list_for_calls(conn, ids)
    recs = await recordings.list_for_calls(conn, ids)
    views = []
    for call in found:
        mine = [e for e in events if e.call_id == call.id]
        flags = current_flags(
            [p.id for p in parties[call.id]], [(e.counterpart_id, e.decision) for e in mine]
        )
        views.append(
            CallView(
                call,
                [
                    CounterpartView(p, flags[p.id], [e for e in mine if e.counterpart_id == p.id])
                    for p in parties[call.id]
                ],
                [r for r in recs if r.call_id == call.id],
            )
        )
    return views


async def _facts(conn: asyncpg.Connection, call: calls.Call) -> CallFacts:
    view = (await _views(conn, [call]))[0]
    account = await accounts.get_account(conn, call.account_id)
    return CallFacts(
        id=call.id,
        active=call.status == "active",
        counterparts=[CounterpartFacts(v.counterpart.id, v.consent) for v in view.counterparts],
        has_live_recording=any(
            r.status in (Status.RECORDING, Status.PAUSED) for r in view.recordings
        ),
        processing_restricted=account.processing_restricted,
    )


async def _audit(
    conn: asyncpg.Connection,
    account_id: str,
    actor: dict[str, Any],
    action: str,
    subject: dict[str, Any],
    now: datetime,
    **details: Any,
) -> None:
    await audit.append(
        conn,
        account_id=account_id,
        at=now,
        actor=actor,
        action=action,
        subject=subject,
        details=details,
    )


async def _event(
    conn: asyncpg.Connection, account_id: str, type: str, now: datetime, **data: Any
) -> None:
    """A customer webhook event (API.md), in the same transaction as the change."""
    await webhooks.enqueue(conn, account_id, type, data, now)


# -- calls ------------------------------------------------------------------------


async def create_call(
    pool: asyncpg.Pool,
    principal: Principal,
    *,
    direction: str,
    from_number: str,
    to_number: str,
    counterparts: Sequence[tuple[str, str]],
    media_token_ttl_s: int,
    clock: Clock = utc_now,
) -> NewCall:
    assert principal.account_id is not None
    token, digest = new_token(MEDIA_TOKEN_PREFIX)
    now = clock()
    async with pool.acquire() as conn, conn.transaction():
        account = await accounts.get_account(conn, principal.account_id)
        if account.terminated_at is not None:
            raise AccountTerminated("the account has been terminated; no new calls")
        call = await calls.insert_call(
            conn,
            id=new_id("call"),
            account_id=principal.account_id,
            direction=direction,
            from_number=from_number,
            to_number=to_number,
            created_by=principal.id,
            media_token_hash=digest,
            media_token_expires_at=now + timedelta(seconds=media_token_ttl_s),
            now=now,
        )
        for label, number in counterparts:
            await calls.insert_counterpart(
                conn, id=new_id("cp"), call_id=call.id, label=label, number=number, now=now
            )
        await _audit(
            conn,
            call.account_id,
            principal.actor,
            "call.created",
            {"call_id": call.id},
            now,
            counterparts=len(counterparts),
        )
        view = (await _views(conn, [call]))[0]
    return NewCall(view, token)


async def get_call(pool: asyncpg.Pool, account_id: str | None, call_id: str) -> CallView:
    async with pool.acquire() as conn:
        call = await calls.get_call(conn, call_id, account_id=account_id)
        return (await _views(conn, [call]))[0]


async def list_calls(
    pool: asyncpg.Pool, account_id: str, after: tuple[datetime, str] | None, limit: int
) -> list[CallView]:
    async with pool.acquire() as conn:
        return await _views(
            conn, await calls.list_calls(conn, account_id, after=after, limit=limit)
        )


async def add_counterpart(
    pool: asyncpg.Pool,
    principal: Principal,
    call_id: str,
    *,
    label: str,
    number: str,
    clock: Clock = utc_now,
) -> calls.Counterpart:
    """A newcomer pauses a running recording until they consent (R2)."""
    async with pool.acquire() as conn, conn.transaction():
        call = await calls.get_call(conn, call_id, account_id=principal.account_id, lock=True)
        now = clock()
        if call.status != "active":
            raise CallNotActive("the call has ended")
        party = await calls.insert_counterpart(
            conn, id=new_id("cp"), call_id=call.id, label=label, number=number, now=now
        )
        await _audit(
            conn,
            call.account_id,
            principal.actor,
            "counterpart.added",
            {"call_id": call.id, "counterpart_id": party.id},
            now,
        )
        live = await recordings.find_live(conn, call.id)
        if live is not None and live.status == Status.RECORDING:
            await _pause(conn, live, principal.actor, Reason.NEW_COUNTERPART, now)
    return party


async def end_call(
    pool: asyncpg.Pool, principal: Principal, call_id: str, clock: Clock = utc_now
) -> CallView:
    async with pool.acquire() as conn, conn.transaction():
        call = await calls.get_call(conn, call_id, account_id=principal.account_id, lock=True)
        call = await _end(conn, call, principal.actor, clock())
        return (await _views(conn, [call]))[0]


async def end_active_calls(
    conn: asyncpg.Connection, account_id: str, actor: dict[str, Any], now: datetime
) -> int:
    """Account termination: every active call ends, its recording completes."""
    active = await calls.lock_active_calls(conn, account_id)
    for call in active:
        await _end(conn, call, actor, now)
    return len(active)


async def pause_for_restriction(
    conn: asyncpg.Connection, account_id: str, actor: dict[str, Any], now: datetime
) -> int:
    """D2: restricting an account's processing pauses its running recordings at once.

    Runs in the transaction that set `processing_restricted`. Each call row
    is locked like any gate decision, so a start racing the restriction
    either committed first (and is paused here) or reads the flag and is refused.
    Resuming stays refused (409 processing-restricted) until the flag is lifted.
    """
    paused = 0
    for call in await calls.lock_active_calls(conn, account_id):
        live = await recordings.find_live(conn, call.id)
        if live is not None and live.status == Status.RECORDING:
            await _pause(conn, live, actor, Reason.PROCESSING_RESTRICTED, now)
            paused += 1
    return paused


async def _end(
    conn: asyncpg.Connection, call: calls.Call, actor: dict[str, Any], now: datetime
) -> calls.Call:
    if call.status != "active":
        raise CallNotActive("the call has already ended")
    live = await recordings.find_live(conn, call.id)
    if live is not None:
        await _finish(conn, live, actor, Reason.CALL_ENDED, now)
    call = await calls.end_call(conn, call.id, now)
    await _audit(conn, call.account_id, actor, "call.ended", {"call_id": call.id}, now)
    await _event(conn, call.account_id, "call.ended", now, call_id=call.id)
    return call


# -- consent ----------------------------------------------------------------------


async def record_consent(
    pool: asyncpg.Pool,
    principal: Principal,
    call_id: str,
    *,
    counterpart_id: str,
    decision: str,
    method: str,
    evidence: str | None,
    obtained_at: datetime | None,
    clock: Clock = utc_now,
) -> consents.ConsentEvent:
    """Append a consent event; anything but a grant stops a live recording at once (R2)."""
    async with pool.acquire() as conn, conn.transaction():
        call = await calls.get_call(conn, call_id, account_id=principal.account_id, lock=True)
        now = clock()
        parties = (await calls.list_counterparts(conn, [call.id]))[call.id]
        if counterpart_id not in {p.id for p in parties}:
            raise InvalidInput(
                "no such counterpart on this call",
                errors=[{"field": "counterpart_id", "message": "not a counterpart of this call"}],
            )
        if obtained_at is not None and obtained_at > now + timedelta(seconds=60):
            raise InvalidInput(
                "consent cannot be obtained in the future",
                errors=[{"field": "obtained_at", "message": "is in the future"}],
            )
        event = await consents.insert_event(
            conn,
            id=new_id("ce"),
            call_id=call.id,
            counterpart_id=counterpart_id,
            decision=decision,
            method=method,
            evidence=evidence,
            obtained_at=obtained_at or now,
            recorded_at=now,
            recorded_by_type=principal.actor["type"] or "",
            recorded_by_id=principal.id,
        )
        await _audit(
            conn,
            call.account_id,
            principal.actor,
            "consent.recorded",
            {"call_id": call.id, "counterpart_id": counterpart_id, "consent_event_id": event.id},
            now,
            decision=decision,
            method=method,
        )
        await _event(
            conn,
            call.account_id,
            "consent.recorded",
            now,
            call_id=call.id,
            counterpart_id=counterpart_id,
            consent_event_id=event.id,
            decision=decision,
        )
        live = await recordings.find_live(conn, call.id)
        if live is not None and decision != Consent.GRANTED:
            reason = (
                Reason.CONSENT_REVOKED if decision == Consent.REVOKED else Reason.CONSENT_REFUSED
            )
            await _finish(conn, live, principal.actor, reason, now)
        elif (
            live is not None
            and live.pause_reason == Reason.NEW_COUNTERPART
            and can_resume(await _facts(conn, call))
        ):
            # Paused only because a newcomer had not consented: now everyone has.
            await _resume(conn, live, principal.actor, now, reason="consent_completed")
    return event


async def list_consents(
    pool: asyncpg.Pool, account_id: str, call_id: str
) -> list[consents.ConsentEvent]:
    async with pool.acquire() as conn:
        call = await calls.get_call(conn, call_id, account_id=account_id)
        return await consents.list_for_calls(conn, [call.id])


# -- recordings ---------------------------------------------------------------------


async def start_recording(
    pool: asyncpg.Pool,
    principal: Principal,
    call_id: str,
    *,
    channels: str,
    pause_behavior: str,
    master: keys.MasterKeys,
    clock: Clock = utc_now,
) -> recordings.Recording:
    """R1: only this explicit request starts a recording; R2: only with every consent."""
    async with pool.acquire() as conn, conn.transaction():
        call = await calls.get_call(conn, call_id, account_id=principal.account_id, lock=True)
        now = clock()
        check_can_record(await _facts(conn, call))
        recording_id = new_id("rec")
        kek = await keys.account_key(conn, master, call.account_id, now)
        _, wrapped = keys.new_data_key(kek, recording_id)
        await recordings.insert(
            conn,
            id=recording_id,
            call_id=call.id,
            account_id=call.account_id,
            channels=channels,
            pause_behavior=pause_behavior,
            started_by_type=principal.actor["type"] or "",
            started_by_id=principal.id,
            wrapped_key=wrapped,
            nonce_prefix=new_nonce_prefix(),
            now=now,
        )
        await _announce(
            conn,
            call.account_id,
            call.id,
            recording_id,
            principal.actor,
            "recording.started",
            now,
            channels=channels,
            pause_behavior=pause_behavior,
        )
        return await recordings.get(conn, recording_id, account_id=call.account_id)


async def change_recording(
    pool: asyncpg.Pool, principal: Principal, recording_id: str, action: str, clock: Clock = utc_now
) -> recordings.Recording:
    """pause, resume or stop, under the call's lock like every consent change."""
    async with pool.acquire() as conn, conn.transaction():
        found = await recordings.get(conn, recording_id, account_id=principal.account_id)
        call = await calls.get_call(conn, found.call_id, account_id=principal.account_id, lock=True)
        rec = await recordings.get(conn, recording_id, account_id=principal.account_id, lock=True)
        now = clock()
        check_transition(action, rec.status)
        if action == "pause":
            await _pause(conn, rec, principal.actor, Reason.PAUSE, now)
        elif action == "resume":
            check_can_resume(await _facts(conn, call))
            await _resume(conn, rec, principal.actor, now, reason="customer")
        else:
            await _finish(conn, rec, principal.actor, Reason.STOP, now)
        return await recordings.get(conn, recording_id, account_id=principal.account_id)


async def list_recordings(
    pool: asyncpg.Pool,
    account_id: str,
    after: tuple[datetime, str] | None,
    limit: int,
    call_id: str | None = None,
) -> list[recordings.Recording]:
    async with pool.acquire() as conn:
        return await recordings.list_for_account(
            conn, account_id, after=after, limit=limit, call_id=call_id
        )


async def get_recording(
    pool: asyncpg.Pool, account_id: str, recording_id: str
) -> recordings.Recording:
    async with pool.acquire() as conn:
        return await recordings.get(conn, recording_id, account_id=account_id)


# -- state changes, each audited --------------------------------------------------


async def _announce(
    conn: asyncpg.Connection,
    account_id: str,
    call_id: str,
    recording_id: str,
    actor: dict[str, Any],
    action: str,
    now: datetime,
    **details: Any,
) -> None:
    """Every recording state change: tell the media node, the audit trail and the customer."""
    control = action.removeprefix("recording.")
    control = {"started": "start", "paused": "pause", "resumed": "resume"}.get(control, "stop")
    await recordings.notify_control(conn, call_id, recording_id, control, now)
    subject = {"call_id": call_id, "recording_id": recording_id}
    await _audit(conn, account_id, actor, action, subject, now, **details)
    await _event(conn, account_id, action, now, **subject, **details)


async def _pause(
    conn: asyncpg.Connection,
    rec: recordings.Recording,
    actor: dict[str, Any],
    reason: Reason,
    now: datetime,
) -> None:
    await recordings.close_segment(conn, rec.id, now, reason)
    await recordings.set_state(conn, rec.id, status=Status.PAUSED, pause_reason=reason)
    await _announce(
        conn, rec.account_id, rec.call_id, rec.id, actor, "recording.paused", now, reason=reason
    )


async def _resume(
    conn: asyncpg.Connection,
    rec: recordings.Recording,
    actor: dict[str, Any],
    now: datetime,
    reason: str,
) -> None:
    await recordings.open_segment(conn, rec.id, now)
    await recordings.set_state(conn, rec.id, status=Status.RECORDING)
    await _announce(
        conn, rec.account_id, rec.call_id, rec.id, actor, "recording.resumed", now, reason=reason
    )


async def _finish(
    conn: asyncpg.Connection,
    rec: recordings.Recording,
    actor: dict[str, Any],
    reason: Reason,
    now: datetime,
) -> None:
    """End a recording. With a media socket attached it is `stopped` until that node has
    sealed the final chunk (`complete_after_sealing`); with none, nothing is left to seal."""
    streaming = await recordings.has_media_stream(conn, rec.call_id)
    status = Status.STOPPED if streaming else Status.COMPLETED
    await recordings.close_segment(conn, rec.id, now, reason)
    await recordings.set_state(conn, rec.id, status=status, stop_reason=reason, ended_at=now)
    action = "recording.completed" if status == Status.COMPLETED else "recording.stopped"
    await _announce(conn, rec.account_id, rec.call_id, rec.id, actor, action, now, reason=reason)


# -- support (S5) -----------------------------------------------------------------


async def support_view(
    pool: asyncpg.Pool, staff: Principal, call_id: str, clock: Clock = utc_now
) -> CallView:
    """Consent flags and history for support; the look-up lands in the customer's trail."""
    async with pool.acquire() as conn, conn.transaction():
        call = await calls.get_call(conn, call_id, account_id=None)
        view = (await _views(conn, [call]))[0]
        await _audit(
            conn,
            call.account_id,
            staff.actor,
            "support.viewed_consent",
            {"call_id": call.id},
            clock(),
            staff_id=staff.id,
        )
    return view


async def stop_for_stream_end(
    pool: asyncpg.Pool, recording_id: str, node_id: str, clock: Clock = utc_now
) -> datetime:
    """The media stream of a recorded call ended: stop the recording, audited as the system."""
    async with pool.acquire() as conn, conn.transaction():
        found = await recordings.get(conn, recording_id, account_id=None)
        await calls.get_call(conn, found.call_id, account_id=None, lock=True)
        rec = await recordings.get(conn, recording_id, account_id=None, lock=True)
        now = clock()
        if rec.status in (Status.RECORDING, Status.PAUSED):
            actor = {"type": "system", "id": node_id, "role": None}
            await _finish(conn, rec, actor, Reason.STREAM_ENDED, now)
        return now


async def complete_after_sealing(pool: asyncpg.Pool, recording_id: str, node_id: str) -> bool:
    """The media node sealed the last chunk of a stopped recording: it is complete."""
    actor = {"type": "system", "id": node_id, "role": None}
    async with pool.acquire() as conn, conn.transaction():
        if not await recordings.complete_if_stopped(conn, recording_id):
            return False
        rec = await recordings.get(conn, recording_id, account_id=None)
        now = utc_now()
        subject = {"call_id": rec.call_id, "recording_id": rec.id}
        await _audit(conn, rec.account_id, actor, "recording.completed", subject, now)
        await _event(
            conn,
            rec.account_id,
            "recording.completed",
            now,
            **subject,
            size_bytes=rec.size_bytes,
            stop_reason=rec.stop_reason,
        )
    return True


async def interrupt_dead_node(pool: asyncpg.Pool, node_id: str, trim: Any) -> list[str]:
    """At start-up: recordings this node held when its process died become `interrupted`.

    Every sealed chunk stays; `trim(conn, recording_id)` drops chunk rows whose
    bytes never reached the blob store.
    """
    actor = {"type": "system", "id": node_id, "role": None}
    async with pool.acquire() as conn, conn.transaction():
        rows = await conn.fetch(
            """UPDATE recordings
               SET status = 'interrupted', ended_at = coalesce(ended_at, now()),
                   stop_reason = coalesce(stop_reason, 'process_died')
               WHERE node_id = $1 AND status IN ('recording', 'paused', 'stopped')
               RETURNING id, call_id, account_id""",
            node_id,
        )
        now = utc_now()
        for row in rows:
            await recordings.close_segment(conn, row["id"], now, "interrupted")
            await trim(conn, row["id"])
            subject = {"call_id": row["call_id"], "recording_id": row["id"]}
            await _audit(conn, row["account_id"], actor, "recording.interrupted", subject, now)
            await _event(conn, row["account_id"], "recording.interrupted", now, **subject)
        await conn.execute("DELETE FROM media_streams WHERE node_id = $1", node_id)
    return [r["id"] for r in rows]
