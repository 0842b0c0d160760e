"""Plain SQL for sealed chunks: one row per chunk, written before its bytes are (R2).

A row is inserted only if every frame in the chunk arrived inside a segment
the database recorded for the recording: that check is part of the insert
itself, so no race between a pause and a seal can put audio outside the
window on disk. A crash between the row and the bytes leaves a row past the
stored end, which `trim_past` removes at recovery.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import NamedTuple

from storage.db import Conn


class ChunkRow(NamedTuple):
    """A chunk's row in `recording_chunks`, before its bytes are sealed.

    A tuple, not a dataclass: every live recording makes one a second.
    """

    recording_id: str
    # Shadows tuple.index() on purpose: the column's name; nothing calls the method.
    index: int  # type: ignore[assignment]
    blob_offset: int  # where its record starts in the recording's byte stream
    record_bytes: int
    first_sample: int
    samples: int
    first_arrival: datetime
    last_arrival: datetime
    final: bool
    empty: bool  # an empty final chunk holds no audio for the window check


@dataclass(frozen=True)
class Chunk:
    idx: int
    blob_offset: int
    record_bytes: int
    samples: int  # per channel
    final: bool


# One statement for every writer's chunk of a seal turn: per row the window check
# (an empty final chunk only needs its recording to have a segment), the row, and
# the recording's size. Returns the rows it kept.
_INSERT = """
WITH c AS (
    SELECT * FROM unnest($1::text[], $2::int[], $3::bigint[], $4::int[], $5::bigint[],
                         $6::int[], $7::timestamptz[], $8::timestamptz[], $9::bool[],
                         $10::bool[])
        AS c(recording_id, idx, blob_offset, record_bytes, first_sample, samples,
             first_arrival, last_arrival, final, empty)
), ins AS (
    INSERT INTO recording_chunks (recording_id, idx, blob_offset, record_bytes, first_sample,
                                  samples, first_arrival, last_arrival, final)
    SELECT c.recording_id, c.idx, c.blob_offset, c.record_bytes, c.first_sample, c.samples,
           c.first_arrival, c.last_arrival, c.final
    FROM c
    WHERE EXISTS (
        SELECT 1 FROM recording_segments s
        WHERE s.recording_id = c.recording_id
          AND (c.empty OR (s.started_at <= c.first_arrival
                           AND coalesce(s.ended_at, 'infinity') >= c.last_arrival)))
    RETURNING recording_id, idx, record_bytes
), grown AS (
    UPDATE recordings r SET size_bytes = r.size_bytes + g.bytes
    FROM (SELECT recording_id, sum(record_bytes) AS bytes FROM ins GROUP BY recording_id) g
    WHERE r.id = g.recording_id
)
SELECT recording_id, idx FROM ins
"""


def _columns(rows: Sequence[ChunkRow]) -> list[list[object]]:
    return [list(column) for column in zip(*rows, strict=True)]


async def insert_inside_window(conn: Conn, rows: Sequence[ChunkRow]) -> set[tuple[str, int]]:
    """Insert the rows whose frames all arrived inside a recorded segment; (recording, idx)
    of those kept. One statement for the whole batch."""
    kept = await conn.fetch(_INSERT, *_columns(rows))
    return {(r["recording_id"], r["idx"]) for r in kept}


async def chunks_of(conn: Conn, recording_id: str) -> list[Chunk]:
    rows = await conn.fetch(
        """SELECT idx, blob_offset, record_bytes, samples, final FROM recording_chunks
           WHERE recording_id = $1 ORDER BY idx""",
        recording_id,
    )
    return [Chunk(**r) for r in rows]


async def trim_past(conn: Conn, recording_id: str, stored_bytes: int) -> int:
    """Drop rows whose bytes never reached storage (a crash between row and bytes);
    the recording's size follows. Returns the rows dropped."""
    status = await conn.execute(
        "DELETE FROM recording_chunks WHERE recording_id = $1 AND blob_offset + record_bytes > $2",
        recording_id,
        stored_bytes,
    )
    await conn.execute(
        """UPDATE recordings SET size_bytes = (SELECT coalesce(sum(record_bytes), 0)
                                               FROM recording_chunks WHERE recording_id = $1)
           WHERE id = $1""",
        recording_id,
    )
    return int(status.split()[-1])


async def recorded_bytes(conn: Conn, recording_id: str) -> int:
    """Bytes the rows say are stored: the end of the recording's byte stream."""
    value = await conn.fetchval(
        "SELECT coalesce(sum(record_bytes), 0) FROM recording_chunks WHERE recording_id = $1",
        recording_id,
    )
    return int(value)
