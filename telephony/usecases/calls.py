"""Call sessions: open, read, add a counterpart, end (API.md "Calls and consent").

Every use case that touches consent or a recording runs in one transaction
holding the call's row lock (R2): a recording start and a revocation can
never interleave. Lock order is always call row, then recording, then the
account's audit head, so the use cases cannot deadlock each other.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import asyncpg

from storage import accounts, calls, consents, recordings
from storage.db import Conn
from storage.ids import new_id, new_token
from telephony.domain.actors import Actor
from telephony.domain.calls import Direction
from telephony.domain.consent import CallFacts, Consent, CounterpartFacts, current_flags
from telephony.domain.errors import AccountTerminated, CallNotActive
from telephony.domain.recordings import EndReason, RecordingStatus
from telephony.domain.roles import CustomerPrincipal
from telephony.usecases import recording_states
from telephony.usecases.trail import Tx, transaction

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
    media_token: str  # shown once, in the answer that creates the call


async def views(conn: Conn, found: Sequence[calls.Call]) -> list[CallView]:
    """Calls with each counterpart's flag and history and the recordings: three queries."""
    ids = [c.id for c in found]
    parties = await calls.list_counterparts(conn, ids)
    events = await consents.list_for_calls(conn, ids)
    recs = await recordings.list_for_calls(conn, ids)
    out = []
    for call in found:
        mine = [e for e in events if e.call_id == call.id]
        flags = current_flags(
            [p.id for p in parties[call.id]], [(e.counterpart_id, e.decision) for e in mine]
        )
        out.append(
            CallView(
                call,
                [
                    CounterpartView(p, flags[p.id], [e for e in mine if e.counterpart_id == p.id])
                    for p in parties[call.id]
                ],
                [r for r in recs if r.call_id == call.id],
            )
        )
    return out


async def facts(conn: Conn, call: calls.Call) -> CallFacts:
    """What the gate decides on; read under the call's row lock by the caller."""
    row = await calls.gate_facts(conn, call)
    flags = current_flags(row.counterpart_ids, row.latest_decisions)
    return CallFacts(
        id=call.id,
        active=call.active,
        counterparts=[CounterpartFacts(cp, flags[cp]) for cp in row.counterpart_ids],
        has_live_recording=row.has_live_recording,
        processing_restricted=row.processing_restricted,
    )


async def create_call(
    pool: asyncpg.Pool,
    account_id: str,
    actor: Actor,
    *,
    direction: Direction,
    from_number: str,
    to_number: str,
    counterparts: Sequence[tuple[str, str]],
    media_token_ttl_s: int,
    clock: Clock = utc_now,
) -> NewCall:
    """A call made by `actor` of the account: a person or API key, or a SIP trunk whose
    session brings a call no API request announced (usecases/sip_trunks.py)."""
    token, digest = new_token(MEDIA_TOKEN_PREFIX)
    now = clock()
    async with transaction(pool) as tx:
        account = await accounts.get_account(tx.conn, account_id)
        if account.terminated_at is not None:
            raise AccountTerminated("the account has been terminated; no new calls")
        call = await calls.insert_call(
            tx.conn,
            id=new_id("call"),
            account_id=account_id,
            direction=direction,
            from_number=from_number,
            to_number=to_number,
            created_by=actor.id or actor.kind.value,
            media_token_hash=digest,
            media_token_expires_at=now + timedelta(seconds=media_token_ttl_s),
            now=now,
        )
        for label, number in counterparts:
            await calls.insert_counterpart(
                tx.conn, id=new_id("cp"), call_id=call.id, label=label, number=number, now=now
            )
        tx.audit(
            call.account_id,
            actor,
            "call.created",
            {"call_id": call.id},
            now,
            counterparts=len(counterparts),
        )
        view = (await views(tx.conn, [call]))[0]
    return NewCall(view, token)


async def get_call(pool: asyncpg.Pool, account_id: str, call_id: str) -> CallView:
    async with pool.acquire() as conn:
        call = await calls.get_call(conn, call_id, account_id=account_id)
        return (await views(conn, [call]))[0]


async def list_calls(
    pool: asyncpg.Pool,
    account_id: str,
    after: tuple[datetime, str] | None,
    limit: int,
    where: calls.CallFilter = calls.CallFilter(),  # noqa: B008 -- frozen: a safe default
    newest_first: bool = False,
) -> list[CallView]:
    """A page of calls with their counterparts and consent: one query for the page, one
    for all its counterparts' states (`views`), however long the page is."""
    async with pool.acquire() as conn:
        found = await calls.list_calls(
            conn, account_id, after=after, limit=limit, where=where, newest_first=newest_first
        )
        return await views(conn, found)


async def add_counterpart(
    pool: asyncpg.Pool,
    account_id: str,
    actor: Actor,
    call_id: str,
    *,
    label: str,
    number: str,
    clock: Clock = utc_now,
) -> calls.Counterpart:
    """A newcomer pauses a running recording until they consent (R2): added by a person or
    API key, or by the media node for a participant a SIPREC metadata update names (a
    transfer, a joiner)."""
    async with transaction(pool) as tx:
        call = await calls.get_call(tx.conn, call_id, account_id=account_id, lock=True)
        now = clock()
        if not call.active:
            raise CallNotActive("the call has ended")
        party = await calls.insert_counterpart(
            tx.conn, id=new_id("cp"), call_id=call.id, label=label, number=number, now=now
        )
        tx.audit(
            call.account_id,
            actor,
            "counterpart.added",
            {"call_id": call.id, "counterpart_id": party.id},
            now,
        )
        live = await recordings.find_live(tx.conn, call.id)
        if live is not None and live.status is RecordingStatus.RECORDING:
            await recording_states.pause(tx, live, actor, EndReason.NEW_COUNTERPART, now)
    return party


async def end_call(
    pool: asyncpg.Pool, principal: CustomerPrincipal, call_id: str, clock: Clock = utc_now
) -> CallView:
    async with transaction(pool) as tx:
        call = await calls.get_call(tx.conn, call_id, account_id=principal.account_id, lock=True)
        call = await _end(tx, call, principal.actor, clock())
        return (await views(tx.conn, [call]))[0]


async def end_active_calls(tx: Tx, account_id: str, actor: Actor, now: datetime) -> int:
    """Account termination: every active call ends, its recording completes."""
    active = await calls.lock_active_calls(tx.conn, account_id)
    for call in active:
        await _end(tx, call, actor, now)
    return len(active)


async def _end(tx: Tx, call: calls.Call, actor: Actor, now: datetime) -> calls.Call:
    if not call.active:
        raise CallNotActive("the call has already ended")
    live = await recordings.find_live(tx.conn, call.id)
    if live is not None:
        await recording_states.finish(tx, live, actor, EndReason.CALL_ENDED, now)
    call = await calls.end_call(tx.conn, call.id, now)
    tx.audit(call.account_id, actor, "call.ended", {"call_id": call.id}, now)
    tx.customer_event(call.account_id, "call.ended", now, call_id=call.id)
    return call
