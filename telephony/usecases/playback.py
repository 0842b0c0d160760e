"""Reading a recording back: chunk by chunk, verified, in constant memory (R4).

Every chunk must open under the recording's key at its expected index; a
completed recording must end with its final chunk, and the chunk rows must
match the stored stream byte for byte. Any mismatch is one IntegrityFailure:
never altered audio.

What can be checked without decrypting is checked before the first byte is
sent (`open_recording`): the key exists, the rows are contiguous, each row's
size matches its sample count, and the stored stream is exactly as long as
the rows say. What only decryption reveals (a flipped bit, a chunk swapped in
from another recording, chunks reordered in place) is found chunk by chunk:
for the first chunk of the requested range still before the response starts,
for later ones by aborting the transfer.
"""

from __future__ import annotations

import bisect
import hashlib
import logging
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime

import asyncpg

from storage import chunks, recordings, securitylog
from storage.blobs.audio import StoredAudio, read_stream, stored_audio
from storage.blobs.protocol import BlobStore
from storage.keys.crypto import CHUNK_HEADER, TAG_BYTES, ChunkCipher
from storage.keys.providers import KeyProvider
from telephony.domain.actors import Actor
from telephony.domain.errors import IntegrityFailure, RecordingInProgress
from telephony.domain.recordings import FINISHED, RecordingStatus
from telephony.domain.tracks import INBOUND
from telephony.media.wav import WavLayout
from telephony.usecases.trail import transaction

log = logging.getLogger(__name__)

# Finished recordings only: a live one is still growing (409 recording-in-progress).
DOWNLOADABLE = FINISHED
READ_BATCH_BYTES = 1 << 20  # one read of the stored stream serves many ~16 KiB chunks
_DAMAGED = "an audio chunk failed its integrity check"
CHUNK_TRACK = "mix"  # chunks hold every track interleaved: one AEAD stream per recording


@dataclass(frozen=True)
class Playback:
    """A finished recording whose rows passed the up-front checks, ready to stream."""

    recording: recordings.Recording
    layout: WavLayout
    chunks: tuple[chunks.Chunk, ...]
    starts: tuple[int, ...]  # sample frames before each chunk
    cipher: ChunkCipher | None  # None when no audio was ever stored
    stored: StoredAudio

    @property
    def frames(self) -> int:
        return self.starts[-1] + self.chunks[-1].samples if self.chunks else 0

    @property
    def size_bytes(self) -> int:
        return self.layout.header_bytes + self.frames * self.layout.out_frame_bytes

    @property
    def etag(self) -> str:
        """Strong: a finished recording's bytes never change for one output encoding."""
        last = self.chunks[-1] if self.chunks else None
        identity = f"{self.recording.id}|{self.layout}|{len(self.chunks)}|{self.frames}|{last}"
        return '"' + hashlib.sha256(identity.encode()).hexdigest()[:32] + '"'


async def open_recording(
    pool: asyncpg.Pool,
    blobs: BlobStore,
    keys: KeyProvider,
    recording_id: str,
    account_id: str | None,
    *,
    output: str = "pcm16",
    statuses: frozenset[RecordingStatus] = DOWNLOADABLE,
) -> Playback:
    """Load and check everything that can be checked before sending a byte."""
    async with pool.acquire() as conn:
        rec = await recordings.get(conn, recording_id, account_id=account_id)
        if rec.status not in statuses:
            raise RecordingInProgress(
                f"the recording is {rec.status.value}; it can be downloaded once it has ended"
            )
        fmt = await recordings.stored_format(conn, recording_id)
        state = await recordings.writer_state(conn, recording_id)
        rows = tuple(await chunks.chunks_of(conn, recording_id))
        data_key = None
        if rows:
            data_key = await keys.recording_key(
                conn, rec.account_id, recording_id, state.wrapped_key, datetime.now(UTC)
            )
    layout = WavLayout(
        fmt.encoding or "mulaw",
        fmt.sample_rate_hz or 8000,
        fmt.tracks or (INBOUND,),
        rec.channels,
        output,
    )
    _check_rows(rows, layout, rec.status)
    stored = await stored_audio(blobs, recording_id)
    if stored.size_bytes != sum(c.record_bytes for c in rows):
        raise IntegrityFailure(_DAMAGED)
    cipher = None
    if data_key is not None:
        if state.nonce_prefix is None:
            raise IntegrityFailure("the recording has no key material")
        cipher = ChunkCipher(data_key, state.nonce_prefix, recording_id)
    starts, total = [], 0
    for chunk in rows:
        starts.append(total)
        total += chunk.samples
    return Playback(rec, layout, rows, tuple(starts), cipher, stored)


def _check_rows(rows: tuple[chunks.Chunk, ...], layout: WavLayout, status: RecordingStatus) -> None:
    offset = 0
    for index, chunk in enumerate(rows):
        plaintext = chunk.samples * layout.source_frame_bytes
        if (
            chunk.idx != index
            or chunk.blob_offset != offset
            or chunk.record_bytes != CHUNK_HEADER.size + plaintext + TAG_BYTES
            or (chunk.final and index != len(rows) - 1)
        ):
            raise IntegrityFailure(_DAMAGED)
        offset += chunk.record_bytes
    if status is RecordingStatus.COMPLETED and rows and not rows[-1].final:
        raise IntegrityFailure("the recording's final chunk is missing")


async def iter_wav(
    playback: Playback, blobs: BlobStore, start: int, end: int
) -> AsyncIterator[bytes]:
    """Bytes [start, end) of the WAV file, one piece per read of the stored stream.

    The first piece includes the first decrypted batch, so a damaged first
    chunk is found before the caller has sent anything.
    """
    layout = playback.layout
    header = layout.header(playback.frames)
    head = header[start:end] if start < len(header) else b""
    frame_bytes = layout.out_frame_bytes
    data_start, data_end = max(start - len(header), 0), end - len(header)
    if data_end <= data_start:
        yield head
        return
    first = max(bisect.bisect_right(playback.starts, data_start // frame_bytes) - 1, 0)
    async for index, plaintext in _opened(playback, blobs, first):
        batch_start = playback.starts[index] * frame_bytes
        piece = layout.convert(plaintext)  # a whole batch at once: far fewer calls per byte
        piece = piece[max(data_start - batch_start, 0) : data_end - batch_start]
        yield head + piece if head else piece
        head = b""
        if batch_start + len(piece) >= data_end:
            return
    if head:
        yield head


async def iter_audio(
    pool: asyncpg.Pool,
    blobs: BlobStore,
    keys: KeyProvider,
    recording_id: str,
    account_id: str | None,
) -> AsyncIterator[bytes]:
    """The recording's stored codec bytes (interleaved), verified: for tools and tests.

    Any state is read; a live recording as far as its parts have reached the
    blob store.
    """
    playback = await open_recording(
        pool, blobs, keys, recording_id, account_id, statuses=frozenset(RecordingStatus)
    )
    async for _, plaintext in _opened(playback, blobs, 0):
        if plaintext:
            yield plaintext


async def _opened(
    playback: Playback, blobs: BlobStore, first: int
) -> AsyncIterator[tuple[int, bytes]]:
    """(index of the batch's first chunk, the batch's plaintext) from chunk `first` on.

    One read serves a batch of chunks; each chunk still opens on its own,
    under its own index, before any of the batch is handed out.
    """
    if playback.cipher is None:
        return
    for batch in _batches(playback.chunks, first):
        offset = batch[0].blob_offset
        length = sum(c.record_bytes for c in batch)
        records = await read_stream(blobs, playback.stored, offset, length)
        view = memoryview(records)
        plaintexts = []
        for chunk in batch:
            at = chunk.blob_offset - offset
            plaintext, final = playback.cipher.open(
                CHUNK_TRACK, chunk.idx, view[at : at + chunk.record_bytes]
            )
            if final != chunk.final:
                raise IntegrityFailure(_DAMAGED)
            plaintexts.append(plaintext)
        yield batch[0].idx, b"".join(plaintexts)


def _batches(rows: tuple[chunks.Chunk, ...], first: int) -> Iterator[tuple[chunks.Chunk, ...]]:
    batch: list[chunks.Chunk] = []
    size = 0
    for chunk in rows[first:]:
        if batch and size + chunk.record_bytes > READ_BATCH_BYTES:
            yield tuple(batch)
            batch, size = [], 0
        batch.append(chunk)
        size += chunk.record_bytes
    if batch:
        yield tuple(batch)


# -- who read what, and what was found damaged ------------------------------------


async def audit_download(
    pool: asyncpg.Pool,
    playback: Playback,
    actor: Actor,
    *,
    address: str | None,
    byte_range: tuple[int, int] | None,
    now: datetime,
) -> None:
    """Every download lands in the customer's audit trail: who, when, from where (R4)."""
    rec = playback.recording
    async with transaction(pool) as tx:
        tx.audit(
            rec.account_id,
            actor,
            "recording.downloaded",
            {"call_id": rec.call_id, "recording_id": rec.id},
            now,
            address=address,
            encoding=playback.layout.output,
            range=f"{byte_range[0]}-{byte_range[1] - 1}" if byte_range else None,
        )


async def report_damage(
    pool: asyncpg.Pool,
    recording_id: str,
    *,
    principal_id: str,
    address: str | None,
    user_agent: str | None,
    now: datetime,
) -> None:
    """A failed integrity check is a security event (S6): someone or something altered
    stored audio. The security log gets it; the caller gets one opaque error."""
    log.error("recording failed its integrity check", extra={"recording_id": recording_id})
    async with pool.acquire() as conn:
        await securitylog.record(
            conn,
            event="recording.integrity_failure",
            outcome="failure",
            at=now,
            user_id=principal_id,
            source_address=address,
            user_agent=user_agent,
            details={"recording_id": recording_id},
        )
