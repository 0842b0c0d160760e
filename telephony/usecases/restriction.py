"""Restriction of processing (D2): the one place that sets or lifts it.

Restricting pauses every running recording of the account at once, and the
gate refuses starts and resumes (409 processing-restricted) until it is
lifted. Two ways lead here: the owner's `PATCH /v1/account`, and support
completing an owner's restriction request.

Each active call row is locked like any gate decision, so a start racing the
restriction either committed first (and is paused here) or reads the flag
and is refused.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from storage import accounts, calls, recordings
from telephony.domain.actors import Actor
from telephony.domain.recordings import EndReason, RecordingStatus
from telephony.usecases import recording_states
from telephony.usecases.trail import Tx, notify_admin_change


async def set_restricted(
    tx: Tx,
    account_id: str,
    restricted: bool,
    actor: Actor,
    now: datetime,
    **why: Any,
) -> int:
    """Set the flag in the caller's transaction; returns the recordings it paused.

    The change is audited and sent to staff (S4) with `why` (e.g. the privacy
    request that asked for it) beside it.
    """
    await accounts.update_account(tx.conn, account_id, {"processing_restricted": restricted})
    paused = 0
    if restricted:
        for call in await calls.lock_active_calls(tx.conn, account_id):
            live = await recordings.find_live(tx.conn, call.id)
            if live is not None and live.status is RecordingStatus.RECORDING:
                await recording_states.pause(tx, live, actor, EndReason.PROCESSING_RESTRICTED, now)
                paused += 1
    await notify_admin_change(
        tx,
        "account.updated",
        now=now,
        actor=actor,
        account_id=account_id,
        subject={"type": "account", "id": account_id},
        changes={"fields": ["processing_restricted"], **why},
    )
    return paused
