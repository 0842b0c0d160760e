"""Recording state changes: each one audited, told to the media node, and sent to the customer.

Every function runs in the caller's transaction, which holds the call's row
lock (see `calls`), so the state, the segment and the announcements commit
together or not at all.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from storage import media_streams, recordings
from telephony.domain.actors import Actor
from telephony.domain.recordings import Control, EndReason, RecordingStatus
from telephony.usecases.trail import Tx

_CONTROL = {
    "recording.started": Control.START,
    "recording.paused": Control.PAUSE,
    "recording.resumed": Control.RESUME,
}


async def announce(
    tx: Tx,
    rec: recordings.Recording,
    actor: Actor,
    action: str,
    now: datetime,
    **details: Any,
) -> None:
    """Tell the media node (NOTIFY), the audit trail and the customer (a webhook event)."""
    account_id, call_id, recording_id = rec.account_id, rec.call_id, rec.id
    control = _CONTROL.get(action, Control.STOP)
    await recordings.notify_control(tx.conn, call_id, recording_id, control, now)
    subject = {"call_id": call_id, "recording_id": recording_id}
    tx.audit(account_id, actor, action, subject, now, **details)
    tx.customer_event(account_id, action, now, **subject, **details)


async def pause(
    tx: Tx,
    rec: recordings.Recording,
    actor: Actor,
    reason: EndReason,
    now: datetime,
) -> recordings.Recording:
    paused = await recordings.close_segment(
        tx.conn, rec, now, reason, status=RecordingStatus.PAUSED, pause_reason=reason
    )
    await announce(tx, rec, actor, "recording.paused", now, reason=reason.value)
    return paused


async def resume(
    tx: Tx,
    rec: recordings.Recording,
    actor: Actor,
    now: datetime,
    reason: str,
) -> recordings.Recording:
    resumed = await recordings.open_segment(tx.conn, rec, now)
    await announce(tx, rec, actor, "recording.resumed", now, reason=reason)
    return resumed


async def finish(
    tx: Tx,
    rec: recordings.Recording,
    actor: Actor,
    reason: EndReason,
    now: datetime,
) -> recordings.Recording:
    """End a recording. With a media socket attached it is `stopped` until that node has
    sealed the final chunk (`media_lifecycle.complete_after_sealing`); with none, nothing
    is left to seal."""
    streaming = await media_streams.is_live(tx.conn, rec.call_id)
    status = RecordingStatus.STOPPED if streaming else RecordingStatus.COMPLETED
    ended = await recordings.close_segment(
        tx.conn, rec, now, reason, status=status, stop_reason=reason, ended_at=now
    )
    action = "recording.completed" if status is RecordingStatus.COMPLETED else "recording.stopped"
    await announce(tx, rec, actor, action, now, reason=reason.value)
    return ended
