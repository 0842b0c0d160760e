"""Recording state changes: each one audited, told to the media node, and sent to the customer.

Every function runs in the caller's transaction, which holds the call's row
lock (see `calls`), so the state, the segment and the announcements commit
together or not at all.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from storage import media_streams, recordings
from storage.db import Conn
from telephony.domain.actors import Actor
from telephony.domain.recordings import Control, EndReason, RecordingStatus
from telephony.usecases.trail import audited, customer_event

_CONTROL = {
    "recording.started": Control.START,
    "recording.paused": Control.PAUSE,
    "recording.resumed": Control.RESUME,
}


async def announce(
    conn: Conn,
    rec: recordings.Recording | tuple[str, str, str],
    actor: Actor,
    action: str,
    now: datetime,
    **details: Any,
) -> None:
    """Tell the media node (NOTIFY), the audit trail and the customer (a webhook event)."""
    account_id, call_id, recording_id = (
        (rec.account_id, rec.call_id, rec.id) if isinstance(rec, recordings.Recording) else rec
    )
    control = _CONTROL.get(action, Control.STOP)
    await recordings.notify_control(conn, call_id, recording_id, control, now)
    subject = {"call_id": call_id, "recording_id": recording_id}
    await audited(conn, account_id, actor, action, subject, now, **details)
    await customer_event(conn, account_id, action, now, **subject, **details)


async def pause(
    conn: Conn,
    rec: recordings.Recording,
    actor: Actor,
    reason: EndReason,
    now: datetime,
) -> None:
    await recordings.close_segment(conn, rec.id, now, reason)
    await recordings.set_state(conn, rec.id, status=RecordingStatus.PAUSED, pause_reason=reason)
    await announce(conn, rec, actor, "recording.paused", now, reason=reason.value)


async def resume(
    conn: Conn,
    rec: recordings.Recording,
    actor: Actor,
    now: datetime,
    reason: str,
) -> None:
    await recordings.open_segment(conn, rec.id, now)
    await recordings.set_state(conn, rec.id, status=RecordingStatus.RECORDING)
    await announce(conn, rec, actor, "recording.resumed", now, reason=reason)


async def finish(
    conn: Conn,
    rec: recordings.Recording,
    actor: Actor,
    reason: EndReason,
    now: datetime,
) -> None:
    """End a recording. With a media socket attached it is `stopped` until that node has
    sealed the final chunk (`media_lifecycle.complete_after_sealing`); with none, nothing
    is left to seal."""
    streaming = await media_streams.is_live(conn, rec.call_id)
    status = RecordingStatus.STOPPED if streaming else RecordingStatus.COMPLETED
    await recordings.close_segment(conn, rec.id, now, reason)
    await recordings.set_state(conn, rec.id, status=status, stop_reason=reason, ended_at=now)
    action = "recording.completed" if status is RecordingStatus.COMPLETED else "recording.stopped"
    await announce(conn, rec, actor, action, now, reason=reason.value)
