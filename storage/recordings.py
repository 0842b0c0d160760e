"""Plain SQL for recordings, their coverage map (segments) and the control channel."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

import asyncpg

from storage.db import Conn
from telephony.domain.actors import Actor, ActorKind
from telephony.domain.errors import NotFound
from telephony.domain.recordings import (
    LIVE,
    Channels,
    Control,
    EndReason,
    PauseBehavior,
    RecordingStatus,
)
from telephony.domain.tracks import Track, from_stored

_COLS = (
    "id, call_id, account_id, status, pause_reason, stop_reason, channels, pause_behavior,"
    " started_at, ended_at, size_bytes, started_by_type, started_by_id, source, customer_key_id"
)
# A recording's segments come with it, in the same statement (one round trip, not two).
# Segments change only under the call's row lock, like the recording's state.
_READ = (
    _COLS
    + """, ARRAY(SELECT ROW(s.started_at, s.ended_at, s.ended_by) FROM recording_segments s
                WHERE s.recording_id = recordings.id ORDER BY s.id) AS segments, gaps"""
)
_LIVE = [s.value for s in LIVE]
CONTROL_CHANNEL = "recording_control"


@dataclass(frozen=True)
class Segment:
    """A stretch that was recorded, and what ended it (None while it runs)."""

    started_at: datetime
    ended_at: datetime | None
    ended_by: EndReason | None


@dataclass(frozen=True)
class Recording:
    id: str
    call_id: str
    account_id: str
    status: RecordingStatus
    pause_reason: EndReason | None
    stop_reason: EndReason | None
    channels: Channels
    pause_behavior: PauseBehavior
    started_at: datetime
    ended_at: datetime | None
    size_bytes: int
    started_by: Actor
    segments: list[Segment] = field(default_factory=list)
    # Audio lost while recording: [{at_ms, duration_ms, reason}] (overload, a stream of
    # another format); what the customer is told, since nothing else would show it.
    gaps: list[dict[str, Any]] = field(default_factory=list)
    source: str | None = None  # websocket, sip or siprec: the first stream's; None before
    # Sealed to this customer key (SEALED-FORMAT.md); None: the service's key hierarchy.
    customer_key_id: str | None = None


def _segment(row: asyncpg.Record | tuple[datetime, datetime | None, str | None]) -> Segment:
    started_at, ended_at, ended_by = row[0], row[1], row[2]
    return Segment(started_at, ended_at, EndReason(ended_by) if ended_by else None)


def _recording(row: asyncpg.Record, segments: list[Segment] | None = None) -> Recording:
    """A row read with `_READ` carries its segments; one written is given them."""
    pause, stop = row["pause_reason"], row["stop_reason"]
    return Recording(
        id=row["id"],
        call_id=row["call_id"],
        account_id=row["account_id"],
        status=RecordingStatus(row["status"]),
        pause_reason=EndReason(pause) if pause else None,
        stop_reason=EndReason(stop) if stop else None,
        channels=Channels(row["channels"]),
        pause_behavior=PauseBehavior(row["pause_behavior"]),
        started_at=row["started_at"],
        ended_at=row["ended_at"],
        size_bytes=row["size_bytes"],
        started_by=Actor(ActorKind(row["started_by_type"]), row["started_by_id"]),
        segments=segments if segments is not None else [_segment(t) for t in row["segments"]],
        gaps=[g for g in row.get("gaps") or [] if isinstance(g, dict)],
        source=row["source"],
        customer_key_id=row["customer_key_id"],
    )


async def insert(
    conn: Conn,
    *,
    id: str,
    call_id: str,
    account_id: str,
    channels: Channels,
    pause_behavior: PauseBehavior,
    started_by: Actor,
    wrapped_key: bytes | None,
    nonce_prefix: bytes | None,
    now: datetime,
    customer_key_id: str | None = None,
) -> Recording:
    """The recording and its first segment, open from `now`: one statement. A recording
    sealed to `customer_key_id` has no data key here: its writers make them (key_epochs)."""
    row = await conn.fetchrow(
        f"""WITH rec AS (
                INSERT INTO recordings (id, call_id, account_id, status, channels,
                                        pause_behavior, started_at, started_by_type,
                                        started_by_id, wrapped_key, nonce_prefix,
                                        customer_key_id)
                VALUES ($1, $2, $3, 'recording', $4, $5, $6, $7, $8, $9, $10, $11)
                RETURNING {_COLS}),
            opened AS (
                INSERT INTO recording_segments (recording_id, started_at)
                SELECT id, started_at FROM rec)
            SELECT * FROM rec""",
        id,
        call_id,
        account_id,
        channels.value,
        pause_behavior.value,
        now,
        started_by.kind.value,
        started_by.id or "",
        wrapped_key,
        nonce_prefix,
        customer_key_id,
    )
    assert row is not None
    return _recording(row, [Segment(now, None, None)])


async def open_segment(conn: Conn, rec: Recording, now: datetime) -> Recording:
    """Recording again from `now` (a resume): a new segment, and the state, in one statement."""
    await conn.execute(
        """WITH opened AS (
               INSERT INTO recording_segments (recording_id, started_at) VALUES ($1, $2))
           UPDATE recordings SET status = 'recording', pause_reason = NULL WHERE id = $1""",
        rec.id,
        now,
    )
    return replace(
        rec,
        status=RecordingStatus.RECORDING,
        pause_reason=None,
        segments=[*rec.segments, Segment(now, None, None)],
    )


async def close_segment(
    conn: Conn,
    rec: Recording,
    now: datetime,
    ended_by: EndReason,
    *,
    status: RecordingStatus,
    pause_reason: EndReason | None = None,
    stop_reason: EndReason | None = None,
    ended_at: datetime | None = None,
) -> Recording:
    """End the open segment at `now` and set the state (a pause or an end): one statement."""
    await conn.execute(
        """WITH closed AS (
               UPDATE recording_segments SET ended_at = $2, ended_by = $3
               WHERE recording_id = $1 AND ended_at IS NULL)
           UPDATE recordings SET status = $4, pause_reason = $5,
                  stop_reason = coalesce($6, stop_reason), ended_at = coalesce($7, ended_at)
           WHERE id = $1""",
        rec.id,
        now,
        ended_by.value,
        status.value,
        pause_reason.value if pause_reason else None,
        stop_reason.value if stop_reason else None,
        ended_at,
    )
    segments = [
        Segment(s.started_at, now, ended_by) if s.ended_at is None else s for s in rec.segments
    ]
    return replace(
        rec,
        status=status,
        pause_reason=pause_reason,
        stop_reason=stop_reason or rec.stop_reason,
        ended_at=ended_at or rec.ended_at,
        segments=segments,
    )


async def close_open_segment(
    conn: Conn, recording_id: str, now: datetime, ended_by: EndReason
) -> None:
    """End the open segment only; the state is already set (`interrupt_held_by`)."""
    await conn.execute(
        """UPDATE recording_segments SET ended_at = $2, ended_by = $3
           WHERE recording_id = $1 AND ended_at IS NULL""",
        recording_id,
        now,
        ended_by.value,
    )


async def get(
    conn: Conn, recording_id: str, *, account_id: str | None, lock: bool = False
) -> Recording:
    suffix = " FOR UPDATE" if lock else ""
    row = await conn.fetchrow(
        f"""SELECT {_READ} FROM recordings
            WHERE id = $1 AND ($2::text IS NULL OR account_id = $2)
              AND status <> 'deleted'{suffix}""",
        recording_id,
        account_id,
    )
    if row is None:
        raise NotFound("no such recording")
    return _recording(row)


async def find_live(conn: Conn, call_id: str) -> Recording | None:
    row = await conn.fetchrow(
        f"SELECT {_READ} FROM recordings WHERE call_id = $1 AND status = ANY($2)",
        call_id,
        _LIVE,
    )
    return _recording(row) if row else None


async def list_for_calls(conn: Conn, call_ids: list[str]) -> list[Recording]:
    rows = await conn.fetch(
        f"""SELECT {_READ} FROM recordings WHERE call_id = ANY($1) AND status <> 'deleted'
            ORDER BY started_at, id""",
        call_ids,
    )
    return [_recording(r) for r in rows]


@dataclass(frozen=True)
class RecordingFilter:
    """API.md "Filters and formats" for recordings; None leaves a field open."""

    call_id: str | None = None
    status: str | None = None
    started_after: datetime | None = None
    started_before: datetime | None = None


async def list_for_account(
    conn: Conn,
    account_id: str,
    *,
    after: tuple[datetime, str] | None,
    limit: int,
    where: RecordingFilter = RecordingFilter(),
    newest_first: bool = False,
) -> list[Recording]:
    order, past = ("DESC", "<") if newest_first else ("ASC", ">")
    rows = await conn.fetch(
        f"""SELECT {_READ} FROM recordings
            WHERE account_id = $1 AND status <> 'deleted'
              AND ($2::timestamptz IS NULL OR (started_at, id) {past} ($2, $3))
              AND ($5::text IS NULL OR call_id = $5)
              AND ($6::text IS NULL OR status = $6)
              AND ($7::timestamptz IS NULL OR started_at >= $7)
              AND ($8::timestamptz IS NULL OR started_at < $8)
            ORDER BY started_at {order}, id {order} LIMIT $4""",
        account_id,
        after[0] if after else None,
        after[1] if after else None,
        limit,
        where.call_id,
        where.status,
        where.started_after,
        where.started_before,
    )
    return [_recording(r) for r in rows]


async def not_deleted(conn: Conn, recording_ids: list[str]) -> set[str]:
    rows = await conn.fetch(
        "SELECT id FROM recordings WHERE id = ANY($1) AND status <> 'deleted'", recording_ids
    )
    return {r["id"] for r in rows}


async def segments_of(conn: Conn, recording_id: str) -> list[Segment]:
    rows = await conn.fetch(
        """SELECT started_at, ended_at, ended_by FROM recording_segments
           WHERE recording_id = $1 ORDER BY id""",
        recording_id,
    )
    return [_segment(r) for r in rows]


# -- the media node's side ------------------------------------------------------------


async def notify_control(
    conn: Conn, call_id: str, recording_id: str, action: Control, at: datetime
) -> None:
    """Tell the node holding the call's media socket; delivered when the transaction commits."""
    payload = json.dumps(
        {
            "call_id": call_id,
            "recording_id": recording_id,
            "action": action.value,
            "at": at.isoformat(),
        }
    )
    await conn.execute("SELECT pg_notify($1, $2)", CONTROL_CHANNEL, payload)


@dataclass(frozen=True)
class ControlMessage:
    """A NOTIFY on CONTROL_CHANNEL: what a media node must do to a call's writer."""

    call_id: str
    recording_id: str
    action: Control
    at: datetime

    @classmethod
    def parse(cls, payload: str) -> ControlMessage:
        """ValueError or KeyError for anything not written by `notify_control`."""
        data: dict[str, Any] = json.loads(payload)
        return cls(
            call_id=str(data["call_id"]),
            recording_id=str(data["recording_id"]),
            action=Control(data["action"]),
            at=datetime.fromisoformat(str(data["at"])),
        )


@dataclass(frozen=True)
class Secrets:
    """What a media node needs to seal a recording's audio, and where the last writer left off."""

    wrapped_key: bytes | None
    nonce_prefix: bytes | None
    next_index: int
    blob_offset: int
    out_samples: int


async def writer_state(conn: Conn, recording_id: str) -> Secrets:
    row = await conn.fetchrow(
        """SELECT r.wrapped_key, r.nonce_prefix,
                  coalesce(max(c.idx) + 1, 0) AS next_index,
                  coalesce(sum(c.record_bytes), 0) AS blob_offset,
                  coalesce(sum(c.samples), 0) AS out_samples
           FROM recordings r LEFT JOIN recording_chunks c ON c.recording_id = r.id
           WHERE r.id = $1 GROUP BY r.id""",
        recording_id,
    )
    if row is None:
        raise NotFound("no such recording")
    return Secrets(
        bytes(row["wrapped_key"]) if row["wrapped_key"] is not None else None,
        bytes(row["nonce_prefix"]) if row["nonce_prefix"] is not None else None,
        int(row["next_index"]),
        int(row["blob_offset"]),
        int(row["out_samples"]),
    )


async def attach_to_node(
    conn: Conn,
    recording_id: str,
    node_id: str,
    *,
    encoding: str,
    sample_rate_hz: int,
    tracks: Sequence[Track],
    source: str = "websocket",
) -> bool:
    """A media node writes this recording now. The first one fixes the format; a later
    stream (a reconnect) of another codec, rate or tracks may not continue it: False,
    and nothing changes, since its bytes would not read back with the first's."""
    names = [t.name for t in tracks]
    fixed = await conn.fetchval(
        """UPDATE recordings SET node_id = $2, node_lost_at = NULL,
                  encoding = coalesce(encoding, $3),
                  sample_rate_hz = coalesce(sample_rate_hz, $4),
                  track_names = coalesce(track_names, $5),
                  track_sides = CASE WHEN encoding IS NULL THEN $6 ELSE track_sides END,
                  track_encodings = CASE WHEN encoding IS NULL THEN $7 ELSE track_encodings END,
                  track_rates = CASE WHEN encoding IS NULL THEN $8 ELSE track_rates END,
                  source = coalesce(source, $9)
           WHERE id = $1
             AND (encoding IS NULL
                  OR (encoding = $3 AND sample_rate_hz = $4 AND track_names = $5))
           RETURNING true""",
        recording_id,
        node_id,
        encoding,
        sample_rate_hz,
        names,
        [t.side.value for t in tracks],
        [encoding] * len(tracks),
        [sample_rate_hz] * len(tracks),
        source,
    )
    return bool(fixed)


async def held_by(conn: Conn, recording_id: str) -> str | None:
    """The media node that last wrote the recording (NULL before any stream attached)."""
    node: str | None = await conn.fetchval(
        "SELECT node_id FROM recordings WHERE id = $1", recording_id
    )
    return node


async def last_arrival(conn: Conn, recording_id: str) -> datetime | None:
    """When the newest sealed audio arrived: where a lost node's stretch really ended."""
    at: datetime | None = await conn.fetchval(
        "SELECT max(last_arrival) FROM recording_chunks WHERE recording_id = $1", recording_id
    )
    return at


async def live_nodes(conn: Conn) -> list[str]:
    """Every node holding a live recording."""
    rows = await conn.fetch(
        """SELECT DISTINCT node_id FROM recordings
           WHERE status IN ('recording', 'paused', 'stopped') AND node_id IS NOT NULL"""
    )
    return [r["node_id"] for r in rows]


async def mark_node_lost(conn: Conn, node_id: str, now: datetime) -> None:
    """The node is gone: its live recordings start their wait for a stream elsewhere."""
    await conn.execute(
        """UPDATE recordings SET node_lost_at = $2
           WHERE node_id = $1 AND node_lost_at IS NULL
             AND status IN ('recording', 'paused', 'stopped')""",
        node_id,
        now,
    )


async def clear_node_lost(conn: Conn, node_id: str) -> None:
    """The node answers again (a lost connection, not a lost process): nothing was lost."""
    await conn.execute(
        "UPDATE recordings SET node_lost_at = NULL WHERE node_id = $1 AND node_lost_at IS NOT NULL",
        node_id,
    )


async def interrupt_lost_since(conn: Conn, node_id: str, before: datetime) -> list[Interrupted]:
    """Recordings of a gone node whose stream did not come back since `before`."""
    rows = await conn.fetch(
        """UPDATE recordings
           SET status = 'interrupted', ended_at = coalesce(ended_at, now()),
               stop_reason = coalesce(stop_reason, 'process_died')
           WHERE node_id = $1 AND node_lost_at <= $2
             AND status IN ('recording', 'paused', 'stopped')
           RETURNING id, call_id, account_id""",
        node_id,
        before,
    )
    return [Interrupted(**r) for r in rows]


async def add_gap(conn: Conn, recording_id: str, gap: dict[str, Any]) -> None:
    """Audio lost to overload: `{at_ms, duration_ms, reason}` in the recording's `gaps`."""
    await conn.execute(
        "UPDATE recordings SET gaps = gaps || $2::jsonb WHERE id = $1",
        recording_id,
        [gap],  # the pool's jsonb codec encodes it (a json.dumps here stored a string)
    )


async def complete_if_stopped(conn: Conn, recording_id: str) -> bool:
    status = await conn.execute(
        "UPDATE recordings SET status = 'completed' WHERE id = $1 AND status = 'stopped'",
        recording_id,
    )
    return bool(status.endswith(" 1"))


@dataclass(frozen=True)
class Interrupted:
    id: str
    call_id: str
    account_id: str


async def interrupt_held_by(conn: Conn, node_id: str) -> list[Interrupted]:
    """Recordings a node held when its process died: `interrupted`, their chunks kept."""
    rows = await conn.fetch(
        """UPDATE recordings
           SET status = 'interrupted', ended_at = coalesce(ended_at, now()),
               stop_reason = coalesce(stop_reason, 'process_died')
           WHERE node_id = $1 AND status IN ('recording', 'paused', 'stopped')
           RETURNING id, call_id, account_id""",
        node_id,
    )
    return [Interrupted(**r) for r in rows]


# -- reading back (R4) --------------------------------------------------------------


@dataclass(frozen=True)
class StoredFormat:
    """What the recorder wrote; encoding is None while no audio has arrived."""

    encoding: str | None
    sample_rate_hz: int | None
    tracks: tuple[Track, ...]
    # Per track, as kept (every track alike from a WebSocket stream); rows from before
    # issue 15 repeat `encoding` and `sample_rate_hz`.
    track_encodings: tuple[str, ...] = ()
    track_rates: tuple[int, ...] = ()


async def stored_format(conn: Conn, recording_id: str) -> StoredFormat:
    row = await conn.fetchrow(
        """SELECT encoding, sample_rate_hz, track_names, track_sides, track_encodings,
                  track_rates
           FROM recordings WHERE id = $1""",
        recording_id,
    )
    if row is None:
        raise NotFound("no such recording")
    tracks = from_stored(row["track_names"] or (), row["track_sides"])
    encoding, rate = row["encoding"], row["sample_rate_hz"]
    encodings = tuple(row["track_encodings"] or ([encoding] * len(tracks) if encoding else ()))
    rates = tuple(row["track_rates"] or ([rate] * len(tracks) if rate else ()))
    return StoredFormat(encoding, rate, tracks, encodings, rates)


# -- deletion by crypto-shredding (R3) and retention --------------------------------


@dataclass(frozen=True)
class DeletionTarget:
    id: str
    call_id: str
    account_id: str
    status: RecordingStatus


async def find_for_deletion(
    conn: Conn, recording_id: str, account_id: str | None
) -> DeletionTarget | None:
    """The recording, deleted ones included (DELETE is idempotent), locked."""
    row = await conn.fetchrow(
        """SELECT id, call_id, account_id, status FROM recordings
           WHERE id = $1 AND ($2::text IS NULL OR account_id = $2) FOR UPDATE""",
        recording_id,
        account_id,
    )
    if row is None:
        return None
    return DeletionTarget(
        row["id"], row["call_id"], row["account_id"], RecordingStatus(row["status"])
    )


async def shred(conn: Conn, recording_id: str, now: datetime) -> None:
    """Destroy the wrapped data key: from this commit on the audio is unreadable everywhere.

    A recording sealed to a customer's key loses its epochs' wrapped keys too: the
    service's copy cannot be opened even with the customer's private key.

    The chunk rows go too (they map blobs that are about to go); the blobs
    themselves are removed after the commit (`mark_blobs_deleted` once done).
    """
    await conn.execute(
        """UPDATE recordings SET status = 'deleted', wrapped_key = NULL, nonce_prefix = NULL,
                  deleted_at = $2
           WHERE id = $1""",
        recording_id,
        now,
    )
    await conn.execute("DELETE FROM recording_chunks WHERE recording_id = $1", recording_id)
    await conn.execute("DELETE FROM recording_key_epochs WHERE recording_id = $1", recording_id)


async def blobs_pending_deletion(conn: Conn, limit: int) -> list[str]:
    rows = await conn.fetch(
        """SELECT id FROM recordings WHERE status = 'deleted' AND blobs_deleted_at IS NULL
           ORDER BY deleted_at LIMIT $1""",
        limit,
    )
    return [r["id"] for r in rows]


async def mark_blobs_deleted(conn: Conn, recording_id: str, now: datetime) -> None:
    await conn.execute(
        "UPDATE recordings SET blobs_deleted_at = $2 WHERE id = $1", recording_id, now
    )


async def due_for_deletion(conn: Conn, now: datetime, limit: int) -> list[str]:
    """Finished recordings past their account's retention, or of a terminated account whose
    grace period is over (termination ended the live ones)."""
    rows = await conn.fetch(
        """SELECT r.id FROM recordings r JOIN accounts a ON a.id = r.account_id
           WHERE r.status IN ('completed', 'interrupted') AND (
                 (a.recording_retention_days IS NOT NULL
                  AND r.ended_at
                      < $1::timestamptz - make_interval(days => a.recording_retention_days))
              OR a.recordings_purge_after <= $1)
           ORDER BY r.ended_at NULLS LAST, r.id LIMIT $2""",
        now,
        limit,
    )
    return [r["id"] for r in rows]


# -- compaction (telephony/usecases/compaction.py) -------------------------------------


async def due_for_compaction(conn: Conn, ended_before: datetime, limit: int) -> list[str]:
    """Finished recordings, ended a while ago, whose whole is not written yet."""
    rows = await conn.fetch(
        """SELECT id FROM recordings
           WHERE compacted_at IS NULL AND status IN ('completed', 'interrupted')
             AND ended_at < $1
           ORDER BY ended_at LIMIT $2""",
        ended_before,
        limit,
    )
    return [r["id"] for r in rows]


async def lock_if_kept(conn: Conn, recording_id: str) -> bool:
    """Row-lock the recording unless it is deleted (or gone); whether it is kept."""
    status = await conn.fetchval(
        "SELECT status FROM recordings WHERE id = $1 FOR UPDATE", recording_id
    )
    return status is not None and status != "deleted"


async def mark_compacted(conn: Conn, recording_id: str, now: datetime) -> None:
    await conn.execute(
        "UPDATE recordings SET compacted_at = $2 WHERE id = $1 AND compacted_at IS NULL",
        recording_id,
        now,
    )


async def parts_due_for_dropping(conn: Conn, compacted_before: datetime, limit: int) -> list[str]:
    """Compacted recordings whose small parts may go: nothing reads them any more."""
    rows = await conn.fetch(
        """SELECT id FROM recordings
           WHERE compacted_at < $1 AND parts_dropped_at IS NULL AND status <> 'deleted'
           ORDER BY compacted_at LIMIT $2""",
        compacted_before,
        limit,
    )
    return [r["id"] for r in rows]


async def mark_parts_dropped(conn: Conn, recording_id: str, now: datetime) -> None:
    await conn.execute(
        "UPDATE recordings SET parts_dropped_at = $2 WHERE id = $1", recording_id, now
    )
