"""Consent decisions of a call's counterparts (R2): append-only, each under the call's lock.

Anything but a grant stops a live recording at once. A grant that completes
the consent of a newcomer resumes a recording paused for them.
"""

from __future__ import annotations

from datetime import datetime, timedelta

import asyncpg

from storage import calls, consents, recordings
from storage.ids import new_id
from telephony.domain.consent import Decision, Method, can_resume
from telephony.domain.errors import InvalidInput
from telephony.domain.recordings import EndReason
from telephony.domain.roles import CustomerPrincipal
from telephony.usecases import recording_states
from telephony.usecases.calls import Clock, facts, utc_now
from telephony.usecases.trail import transaction

FUTURE_TOLERANCE_S = 60  # clocks of the customer's systems may run a little ahead


async def record_consent(
    pool: asyncpg.Pool,
    principal: CustomerPrincipal,
    call_id: str,
    *,
    counterpart_id: str,
    decision: Decision,
    method: Method,
    evidence: str | None,
    obtained_at: datetime | None,
    clock: Clock = utc_now,
) -> consents.ConsentEvent:
    """Append a consent event; anything but a grant stops a live recording at once (R2)."""
    async with transaction(pool) as tx:
        call = await calls.get_call(tx.conn, call_id, account_id=principal.account_id, lock=True)
        now = clock()
        if obtained_at is not None and obtained_at > now + timedelta(seconds=FUTURE_TOLERANCE_S):
            raise InvalidInput(
                "consent cannot be obtained in the future",
                errors=[{"field": "obtained_at", "message": "is in the future"}],
            )
        event = await consents.insert_event(
            tx.conn,
            id=new_id("ce"),
            call_id=call.id,
            counterpart_id=counterpart_id,
            decision=decision,
            method=method,
            evidence=evidence,
            obtained_at=obtained_at or now,
            recorded_at=now,
            recorded_by=principal.actor,
        )
        tx.audit(
            call.account_id,
            principal.actor,
            "consent.recorded",
            {"call_id": call.id, "counterpart_id": counterpart_id, "consent_event_id": event.id},
            now,
            decision=decision.value,
            method=method.value,
        )
        tx.customer_event(
            call.account_id,
            "consent.recorded",
            now,
            call_id=call.id,
            counterpart_id=counterpart_id,
            consent_event_id=event.id,
            decision=decision.value,
        )
        live = await recordings.find_live(tx.conn, call.id)
        if live is not None and decision is not Decision.GRANTED:
            reason = (
                EndReason.CONSENT_REVOKED
                if decision is Decision.REVOKED
                else EndReason.CONSENT_REFUSED
            )
            await recording_states.finish(tx, live, principal.actor, reason, now)
        elif (
            live is not None
            and live.pause_reason is EndReason.NEW_COUNTERPART
            and can_resume(await facts(tx.conn, call))
        ):
            # Paused only because a newcomer had not consented: now everyone has.
            await recording_states.resume(
                tx, live, principal.actor, now, reason="consent_completed"
            )
    return event


async def list_consents(
    pool: asyncpg.Pool, account_id: str, call_id: str
) -> list[consents.ConsentEvent]:
    async with pool.acquire() as conn:
        call = await calls.get_call(conn, call_id, account_id=account_id)
        return await consents.list_for_calls(conn, [call.id])
