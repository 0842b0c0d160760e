"""Reading a recording back: chunk by chunk, verified, in constant memory (R4).

Every chunk must open under the recording's key at its expected index; a
completed recording must end with its final chunk, and the chunk rows must
match the blob byte for byte. Any mismatch is one IntegrityFailure: never
altered audio.

What can be checked without decrypting is checked before the first byte is
sent (`open_recording`): the key exists, the rows are contiguous, each row's
size matches its sample count, and the blob is exactly as long as the rows
say. What only decryption reveals (a flipped bit, a chunk swapped in from
another recording, chunks reordered in place) is found chunk by chunk: for
the first chunk of the requested range still before the response starts,
for later ones by aborting the transfer.
"""

from __future__ import annotations

import bisect
import hashlib
import logging
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import asyncpg

from storage import audit, recordings, securitylog
from storage.blobs.filesystem import BlobStore
from storage.keys import hierarchy as keys
from storage.keys.crypto import CHUNK_HEADER, TAG_BYTES, ChunkCipher
from telephony.domain.errors import (
    IntegrityFailure,
    NotFound,
    RangeNotSatisfiable,
    RecordingInProgress,
)
from telephony.media.wav import WavLayout
from telephony.recorder.writer import blob_key

log = logging.getLogger(__name__)

# Finished recordings only: a live one is still growing (409 recording-in-progress).
DOWNLOADABLE = ("completed", "interrupted")
_ANY_STATE = ("recording", "paused", "stopped", *DOWNLOADABLE)  # for iter_audio
READ_BATCH_BYTES = 1 << 20  # one blob read serves many ~16 KiB chunks
_DAMAGED = "an audio chunk failed its integrity check"


@dataclass(frozen=True)
class Playback:
    """A finished recording whose rows passed the up-front checks, ready to stream."""

    recording: recordings.Recording
    layout: WavLayout
    chunks: tuple[recordings.Chunk, ...]
    starts: tuple[int, ...]  # sample frames before each chunk
    cipher: ChunkCipher | None  # None when no audio was ever stored

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
    master: keys.MasterKeys,
    recording_id: str,
    account_id: str | None,
    *,
    output: str = "pcm16",
    statuses: tuple[str, ...] = DOWNLOADABLE,
) -> Playback:
    """Load and check everything that can be checked before sending a byte."""
    async with pool.acquire() as conn:
        rec = await recordings.get(conn, recording_id, account_id=account_id)
        if rec.status not in statuses:
            raise RecordingInProgress(
                f"the recording is {rec.status}; it can be downloaded once it has ended"
            )
        fmt = await recordings.stored_format(conn, recording_id)
        state = await recordings.writer_state(conn, recording_id)
        chunks = tuple(await recordings.chunks_of(conn, recording_id))
        kek = await keys.account_key(conn, master, rec.account_id, datetime.now(UTC))
    layout = WavLayout(
        fmt.encoding or "mulaw",
        fmt.sample_rate_hz or 8000,
        fmt.tracks or ("inbound",),
        rec.channels,
        output,
    )
    _check_rows(chunks, layout, rec.status)
    stored = 0
    if chunks:
        try:
            stored = await blobs.size(blob_key(recording_id))
        except NotFound:
            raise IntegrityFailure(_DAMAGED) from None
    if stored != sum(c.record_bytes for c in chunks):
        raise IntegrityFailure(_DAMAGED)
    cipher = None
    if chunks:
        data_key = keys.open_data_key(kek, state.wrapped_key, recording_id)
        if state.nonce_prefix is None:
            raise IntegrityFailure("the recording has no key material")
        cipher = ChunkCipher(data_key, state.nonce_prefix, recording_id)
    starts, total = [], 0
    for chunk in chunks:
        starts.append(total)
        total += chunk.samples
    return Playback(rec, layout, chunks, tuple(starts), cipher)


def _check_rows(chunks: tuple[recordings.Chunk, ...], layout: WavLayout, status: str) -> None:
    offset = 0
    for index, chunk in enumerate(chunks):
        plaintext = chunk.samples * layout.source_frame_bytes
        if (
            chunk.idx != index
            or chunk.blob_offset != offset
            or chunk.record_bytes != CHUNK_HEADER.size + plaintext + TAG_BYTES
            or (chunk.final and index != len(chunks) - 1)
        ):
            raise IntegrityFailure(_DAMAGED)
        offset += chunk.record_bytes
    if status == "completed" and chunks and not chunks[-1].final:
        raise IntegrityFailure("the recording's final chunk is missing")


def parse_range(header: str | None, size: int) -> tuple[int, int] | None:
    """One `bytes=` range (RFC 9110 §14.1.2) as [start, end); None: send the whole file.

    Another unit or several ranges are ignored, as the RFC allows (no
    multipart answers); a malformed `bytes=` range, or one starting past the
    end, is RangeNotSatisfiable.
    """
    if not header:
        return None
    unit, _, spec = header.partition("=")
    if unit.strip().lower() != "bytes" or "," in spec:
        return None
    first, dash, last = (part.strip() for part in spec.partition("-"))
    if not dash or not (first.isdigit() or first == "") or not (last.isdigit() or last == ""):
        raise RangeNotSatisfiable(f"malformed Range {header[:40]!r}", size_bytes=size)
    if first == "":  # a suffix: the last N bytes
        if not last or int(last) == 0:
            raise RangeNotSatisfiable("an empty suffix range", size_bytes=size)
        return max(size - int(last), 0), size
    start = int(first)
    end = int(last) + 1 if last else size
    if end <= start:
        raise RangeNotSatisfiable("the range ends before it starts", size_bytes=size)
    if start >= size:
        raise RangeNotSatisfiable(f"the file is {size} bytes long", size_bytes=size)
    return start, min(end, size)


async def iter_wav(
    playback: Playback, blobs: BlobStore, start: int, end: int
) -> AsyncIterator[bytes]:
    """Bytes [start, end) of the WAV file, one piece per blob read.

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
    master: keys.MasterKeys,
    recording_id: str,
    account_id: str | None,
) -> AsyncIterator[bytes]:
    """The recording's stored codec bytes (interleaved), verified, in any state.

    For the recorder's own tests and tools: a live recording is read up to
    its last sealed chunk.
    """
    playback = await open_recording(
        pool, blobs, master, recording_id, account_id, statuses=_ANY_STATE
    )
    async for _, plaintext in _opened(playback, blobs, 0):
        if plaintext:
            yield plaintext


async def _opened(
    playback: Playback, blobs: BlobStore, first: int
) -> AsyncIterator[tuple[int, bytes]]:
    """(index of the batch's first chunk, the batch's plaintext) from chunk `first` on.

    One blob read serves a batch of chunks; each chunk still opens on its own,
    under its own index, before any of the batch is handed out.
    """
    if playback.cipher is None:
        return
    key = blob_key(playback.recording.id)
    for batch in _batches(playback.chunks, first):
        offset = batch[0].blob_offset
        length = sum(c.record_bytes for c in batch)
        try:
            records = await blobs.read_range(key, offset, length)
        except NotFound:
            raise IntegrityFailure(_DAMAGED) from None
        view = memoryview(records)
        plaintexts = []
        for chunk in batch:
            at = chunk.blob_offset - offset
            plaintext, final = playback.cipher.open(
                "mix", chunk.idx, view[at : at + chunk.record_bytes]
            )
            if final != chunk.final:
                raise IntegrityFailure(_DAMAGED)
            plaintexts.append(plaintext)
        yield batch[0].idx, b"".join(plaintexts)


def _batches(
    chunks: tuple[recordings.Chunk, ...], first: int
) -> Iterator[tuple[recordings.Chunk, ...]]:
    batch: list[recordings.Chunk] = []
    size = 0
    for chunk in chunks[first:]:
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
    actor: dict[str, Any],
    *,
    address: str | None,
    byte_range: tuple[int, int] | None,
    now: datetime,
) -> None:
    """Every download lands in the customer's audit trail: who, when, from where (R4)."""
    rec = playback.recording
    async with pool.acquire() as conn, conn.transaction():
        await audit.append(
            conn,
            account_id=rec.account_id,
            at=now,
            actor=actor,
            action="recording.downloaded",
            subject={"call_id": rec.call_id, "recording_id": rec.id},
            details={
                "address": address,
                "encoding": playback.layout.output,
                "range": f"{byte_range[0]}-{byte_range[1] - 1}" if byte_range else None,
            },
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
