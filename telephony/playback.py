"""Reading a recording back: chunk by chunk, verified, in constant memory (R4).

Every chunk must open under the recording's key at its expected index; a
completed recording must end with its final chunk, and the chunk rows must
match the blob byte for byte. Any mismatch is one IntegrityFailure: never
altered audio.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime

import asyncpg

from storage import keys, recordings
from storage.blobs import BlobStore
from storage.crypto import CHUNK_HEADER, ChunkCipher
from storage.errors import IntegrityFailure, NotFound
from telephony.recorder import blob_key


@dataclass(frozen=True)
class StoredAudio:
    recording_id: str
    encoding: str | None
    sample_rate_hz: int | None
    tracks: tuple[str, ...]
    status: str
    chunk_count: int
    total_samples: int


async def describe(
    conn: asyncpg.Connection, recording_id: str, account_id: str | None
) -> StoredAudio:
    rec = await recordings.get(conn, recording_id, account_id=account_id)
    row = await conn.fetchrow(
        """SELECT r.encoding, r.sample_rate_hz, r.track_names,
                  (SELECT count(*) FROM recording_chunks c WHERE c.recording_id = r.id) AS chunks,
                  (SELECT coalesce(sum(samples), 0) FROM recording_chunks c
                    WHERE c.recording_id = r.id) AS samples
           FROM recordings r WHERE r.id = $1""",
        recording_id,
    )
    return StoredAudio(
        recording_id,
        row["encoding"],
        row["sample_rate_hz"],
        tuple(row["track_names"] or ()),
        rec.status,
        int(row["chunks"]),
        int(row["samples"]),
    )


async def iter_audio(
    pool: asyncpg.Pool,
    blobs: BlobStore,
    master: keys.MasterKeys,
    recording_id: str,
    account_id: str | None,
) -> AsyncIterator[bytes]:
    """Yield the recording's interleaved codec bytes, chunk by chunk, each verified."""
    async with pool.acquire() as conn:
        rec = await recordings.get(conn, recording_id, account_id=account_id)
        state = await recordings.writer_state(conn, recording_id)
        kek = await keys.account_key(conn, master, rec.account_id, datetime.now(UTC))
        rows = await conn.fetch(
            """SELECT idx, blob_offset, record_bytes, final FROM recording_chunks
               WHERE recording_id = $1 ORDER BY idx""",
            recording_id,
        )
    data_key = keys.open_data_key(kek, state.wrapped_key, recording_id)
    if state.nonce_prefix is None:
        raise IntegrityFailure("the recording has no key material")
    cipher = ChunkCipher(data_key, state.nonce_prefix, recording_id)
    expected_offset = 0
    saw_final = False
    for expected_index, row in enumerate(rows):
        if row["idx"] != expected_index or row["blob_offset"] != expected_offset or saw_final:
            raise IntegrityFailure("an audio chunk failed its integrity check")
        try:
            record = await blobs.read_range(
                blob_key(recording_id), row["blob_offset"], row["record_bytes"]
            )
        except NotFound:
            raise IntegrityFailure("an audio chunk failed its integrity check") from None
        if len(record) < CHUNK_HEADER.size:
            raise IntegrityFailure("an audio chunk failed its integrity check")
        plaintext, final = cipher.open("mix", expected_index, record)
        if final != row["final"]:
            raise IntegrityFailure("an audio chunk failed its integrity check")
        saw_final = final
        expected_offset += row["record_bytes"]
        if plaintext:
            yield plaintext
    if rec.status == "completed" and rows and not saw_final:
        raise IntegrityFailure("the recording's final chunk is missing")
