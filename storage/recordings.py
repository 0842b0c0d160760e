"""Plain SQL for recordings and their coverage map (segments)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime

import asyncpg

from telephony.domain.errors import NotFound

_COLS = (
    "id, call_id, account_id, status, pause_reason, stop_reason, channels, pause_behavior,"
    " started_at, ended_at, size_bytes, started_by_type, started_by_id"
)
LIVE = ("recording", "paused")


@dataclass(frozen=True)
class Segment:
    started_at: datetime
    ended_at: datetime | None
    ended_by: str | None


@dataclass(frozen=True)
class Recording:
    id: str
    call_id: str
    account_id: str
    status: str
    pause_reason: str | None
    stop_reason: str | None
    channels: str
    pause_behavior: str
    started_at: datetime
    ended_at: datetime | None
    size_bytes: int
    started_by_type: str
    started_by_id: str
    segments: list[Segment] = field(default_factory=list)


async def insert(
    conn: asyncpg.Connection,
    *,
    id: str,
    call_id: str,
    account_id: str,
    channels: str,
    pause_behavior: str,
    started_by_type: str,
    started_by_id: str,
    wrapped_key: bytes,
    nonce_prefix: bytes,
    now: datetime,
) -> None:
    await conn.execute(
        """INSERT INTO recordings (id, call_id, account_id, status, channels, pause_behavior,
                                   started_at, started_by_type, started_by_id, wrapped_key,
                                   nonce_prefix)
           VALUES ($1, $2, $3, 'recording', $4, $5, $6, $7, $8, $9, $10)""",
        id,
        call_id,
        account_id,
        channels,
        pause_behavior,
        now,
        started_by_type,
        started_by_id,
        wrapped_key,
        nonce_prefix,
    )
    await open_segment(conn, id, now)


async def open_segment(conn: asyncpg.Connection, recording_id: str, now: datetime) -> None:
    await conn.execute(
        "INSERT INTO recording_segments (recording_id, started_at) VALUES ($1, $2)",
        recording_id,
        now,
    )


async def close_segment(
    conn: asyncpg.Connection, recording_id: str, now: datetime, ended_by: str
) -> None:
    await conn.execute(
        """UPDATE recording_segments SET ended_at = $2, ended_by = $3
           WHERE recording_id = $1 AND ended_at IS NULL""",
        recording_id,
        now,
        ended_by,
    )


async def set_state(
    conn: asyncpg.Connection,
    recording_id: str,
    *,
    status: str,
    pause_reason: str | None = None,
    stop_reason: str | None = None,
    ended_at: datetime | None = None,
) -> None:
    await conn.execute(
        """UPDATE recordings SET status = $2, pause_reason = $3,
                  stop_reason = coalesce($4, stop_reason), ended_at = coalesce($5, ended_at)
           WHERE id = $1""",
        recording_id,
        status,
        pause_reason,
        stop_reason,
        ended_at,
    )


async def _with_segments(conn: asyncpg.Connection, rows: list[asyncpg.Record]) -> list[Recording]:
    if not rows:
        return []
    segs = await conn.fetch(
        """SELECT recording_id, started_at, ended_at, ended_by FROM recording_segments
           WHERE recording_id = ANY($1) ORDER BY id""",
        [r["id"] for r in rows],
    )
    by_rec: dict[str, list[Segment]] = {r["id"]: [] for r in rows}
    for s in segs:
        by_rec[s["recording_id"]].append(Segment(s["started_at"], s["ended_at"], s["ended_by"]))
    return [Recording(**r, segments=by_rec[r["id"]]) for r in rows]


async def get(
    conn: asyncpg.Connection, recording_id: str, *, account_id: str | None, lock: bool = False
) -> Recording:
    suffix = " FOR UPDATE" if lock else ""
    row = await conn.fetchrow(
        f"""SELECT {_COLS} FROM recordings
            WHERE id = $1 AND ($2::text IS NULL OR account_id = $2)
              AND status <> 'deleted'{suffix}""",
        recording_id,
        account_id,
    )
    if row is None:
        raise NotFound("no such recording")
    return (await _with_segments(conn, [row]))[0]


async def find_live(conn: asyncpg.Connection, call_id: str) -> Recording | None:
    row = await conn.fetchrow(
        f"SELECT {_COLS} FROM recordings WHERE call_id = $1 AND status = ANY($2)",
        call_id,
        list(LIVE),
    )
    return (await _with_segments(conn, [row]))[0] if row else None


async def list_for_calls(conn: asyncpg.Connection, call_ids: list[str]) -> list[Recording]:
    rows = await conn.fetch(
        f"""SELECT {_COLS} FROM recordings WHERE call_id = ANY($1) AND status <> 'deleted'
            ORDER BY started_at, id""",
        call_ids,
    )
    return await _with_segments(conn, list(rows))


async def list_for_account(
    conn: asyncpg.Connection,
    account_id: str,
    *,
    after: tuple[datetime, str] | None,
    limit: int,
    call_id: str | None = None,
) -> list[Recording]:
    rows = await conn.fetch(
        f"""SELECT {_COLS} FROM recordings
            WHERE account_id = $1 AND status <> 'deleted'
              AND ($2::timestamptz IS NULL OR (started_at, id) > ($2, $3))
              AND ($5::text IS NULL OR call_id = $5)
            ORDER BY started_at, id LIMIT $4""",
        account_id,
        after[0] if after else None,
        after[1] if after else None,
        limit,
        call_id,
    )
    return await _with_segments(conn, list(rows))


CONTROL_CHANNEL = "recording_control"


async def notify_control(
    conn: asyncpg.Connection, call_id: str, recording_id: str, action: str, at: datetime
) -> None:
    """Tell the node holding the call's media socket; delivered when the transaction commits."""
    payload = json.dumps(
        {"call_id": call_id, "recording_id": recording_id, "action": action, "at": at.isoformat()}
    )
    await conn.execute("SELECT pg_notify($1, $2)", CONTROL_CHANNEL, payload)


async def has_media_stream(conn: asyncpg.Connection, call_id: str) -> bool:
    return bool(await conn.fetchval("SELECT true FROM media_streams WHERE call_id = $1", call_id))


@dataclass(frozen=True)
class Secrets:
    """What a media node needs to seal a recording's audio."""

    wrapped_key: bytes | None
    nonce_prefix: bytes | None
    next_index: int
    blob_offset: int
    out_samples: int


async def writer_state(conn: asyncpg.Connection, recording_id: str) -> Secrets:
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


async def segments_of(conn: asyncpg.Connection, recording_id: str) -> list[Segment]:
    rows = await conn.fetch(
        """SELECT started_at, ended_at, ended_by FROM recording_segments
           WHERE recording_id = $1 ORDER BY id""",
        recording_id,
    )
    return [Segment(r["started_at"], r["ended_at"], r["ended_by"]) for r in rows]


async def set_format(
    conn: asyncpg.Connection,
    recording_id: str,
    encoding: str,
    sample_rate_hz: int,
    tracks: list[str],
) -> None:
    await conn.execute(
        """UPDATE recordings SET encoding = $2, sample_rate_hz = $3, track_names = $4
           WHERE id = $1 AND encoding IS NULL""",
        recording_id,
        encoding,
        sample_rate_hz,
        tracks,
    )


async def complete_if_stopped(conn: asyncpg.Connection, recording_id: str) -> bool:
    status = await conn.execute(
        "UPDATE recordings SET status = 'completed' WHERE id = $1 AND status = 'stopped'",
        recording_id,
    )
    return status.endswith(" 1")


# -- reading back (R4) --------------------------------------------------------------


@dataclass(frozen=True)
class Chunk:
    idx: int
    blob_offset: int
    record_bytes: int
    samples: int  # per channel
    final: bool


@dataclass(frozen=True)
class StoredFormat:
    """What the recorder wrote; encoding is None while no audio has arrived."""

    encoding: str | None
    sample_rate_hz: int | None
    tracks: tuple[str, ...]


async def stored_format(conn: asyncpg.Connection, recording_id: str) -> StoredFormat:
    row = await conn.fetchrow(
        "SELECT encoding, sample_rate_hz, track_names FROM recordings WHERE id = $1",
        recording_id,
    )
    if row is None:
        raise NotFound("no such recording")
    return StoredFormat(row["encoding"], row["sample_rate_hz"], tuple(row["track_names"] or ()))


async def chunks_of(conn: asyncpg.Connection, recording_id: str) -> list[Chunk]:
    rows = await conn.fetch(
        """SELECT idx, blob_offset, record_bytes, samples, final FROM recording_chunks
           WHERE recording_id = $1 ORDER BY idx""",
        recording_id,
    )
    return [Chunk(**r) for r in rows]


# -- deletion by crypto-shredding (R3) and retention --------------------------------


@dataclass(frozen=True)
class DeletionTarget:
    id: str
    call_id: str
    account_id: str
    status: str


async def find_for_deletion(
    conn: asyncpg.Connection, recording_id: str, account_id: str | None
) -> DeletionTarget | None:
    """The recording, deleted ones included (DELETE is idempotent), locked."""
    row = await conn.fetchrow(
        """SELECT id, call_id, account_id, status FROM recordings
           WHERE id = $1 AND ($2::text IS NULL OR account_id = $2) FOR UPDATE""",
        recording_id,
        account_id,
    )
    return DeletionTarget(**row) if row else None


async def shred(conn: asyncpg.Connection, recording_id: str, now: datetime) -> None:
    """Destroy the wrapped data key: from this commit on the audio is unreadable everywhere.

    The chunk rows go too (they map a blob that is about to go); the blobs
    themselves are removed after the commit by `delete_blobs`.
    """
    await conn.execute(
        """UPDATE recordings SET status = 'deleted', wrapped_key = NULL, nonce_prefix = NULL,
                  deleted_at = $2
           WHERE id = $1""",
        recording_id,
        now,
    )
    await conn.execute("DELETE FROM recording_chunks WHERE recording_id = $1", recording_id)


async def blobs_pending_deletion(conn: asyncpg.Connection, limit: int) -> list[str]:
    rows = await conn.fetch(
        """SELECT id FROM recordings WHERE status = 'deleted' AND blobs_deleted_at IS NULL
           ORDER BY deleted_at LIMIT $1""",
        limit,
    )
    return [r["id"] for r in rows]


async def mark_blobs_deleted(conn: asyncpg.Connection, recording_id: str, now: datetime) -> None:
    await conn.execute(
        "UPDATE recordings SET blobs_deleted_at = $2 WHERE id = $1", recording_id, now
    )


async def due_for_deletion(conn: asyncpg.Connection, now: datetime, limit: int) -> list[str]:
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
