"""Recordings sealed to a customer's key: the download is the sealed container
(SEALED-FORMAT.md), since the service cannot open what it holds (R3).

The container is a signed header the service writes from the database (the key
epochs, the chunk count and size, the coverage map) followed by the stored chunk
records exactly as they are, so it streams in constant memory and a `Range` reads only
the bytes it asks for. What can be checked without a key is checked before the first
byte, as for any download: rows contiguous, the stored stream exactly as long as the
rows say. What only the key can check, the customer's decryptor checks.
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import asyncpg

from storage import chunks, customer_keys, key_epochs, recordings
from storage.blobs.audio import Cursor, StoredAudio, read_stream, stored_audio
from storage.blobs.protocol import BlobStore
from storage.keys import sealed
from storage.keys.providers import KeyProvider
from telephony.domain.errors import IntegrityFailure, RecordingInProgress
from telephony.domain.recordings import FINISHED
from telephony.domain.tracks import INBOUND

MEDIA_TYPE = "application/vnd.telephony.sealed+octet-stream"
READ_BYTES = 1 << 20
_DAMAGED = "an audio chunk failed its integrity check"


@dataclass(frozen=True)
class SealedDownload:
    recording: recordings.Recording
    prefix: bytes
    stored: StoredAudio

    @property
    def size_bytes(self) -> int:
        return len(self.prefix) + self.stored.size_bytes

    @property
    def etag(self) -> str:
        """Strong: the prefix names every chunk's count and size, and signs them."""
        identity = self.prefix + str(self.stored.size_bytes).encode()
        return '"' + hashlib.sha256(identity).hexdigest()[:32] + '"'


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _iso(moment: datetime | None) -> str | None:
    return moment.isoformat().replace("+00:00", "Z") if moment else None


async def open_sealed(
    pool: asyncpg.Pool,
    blobs: BlobStore,
    keys: KeyProvider,
    recording_id: str,
    account_id: str | None,
) -> SealedDownload | None:
    """The container of a recording sealed to a customer key; None for any other."""
    async with pool.acquire() as conn:
        rec = await recordings.get(conn, recording_id, account_id=account_id)
        if rec.customer_key_id is None:
            return None
        if rec.status not in FINISHED:
            raise RecordingInProgress(
                f"the recording is {rec.status.value}; it can be downloaded once it has ended"
            )
        fmt = await recordings.stored_format(conn, recording_id)
        rows = await chunks.chunks_of(conn, recording_id)
        epochs = await key_epochs.of(conn, recording_id)
        key = await customer_keys.get_any(conn, rec.customer_key_id)
        signer = await keys.signing_key(conn, datetime.now(UTC))
    offset = 0
    for index, chunk in enumerate(rows):
        if chunk.idx != index or chunk.blob_offset != offset:
            raise IntegrityFailure(_DAMAGED)
        offset += chunk.record_bytes
    stored = await stored_audio(blobs, recording_id)
    if stored.size_bytes != offset:
        raise IntegrityFailure(_DAMAGED)
    header: dict[str, Any] = {
        "format": "telephony-sealed",
        "version": sealed.VERSION,
        "recording_id": rec.id,
        "call_id": rec.call_id,
        "status": rec.status.value,
        "started_at": _iso(rec.started_at),
        "ended_at": _iso(rec.ended_at),
        "audio": {
            "encoding": fmt.encoding or "mulaw",
            "sample_rate_hz": fmt.sample_rate_hz or 8000,
            "tracks": [{"name": t.name, "side": t.side.value} for t in fmt.tracks or (INBOUND,)],
            "channels": rec.channels.value,
            "frames": sum(c.samples for c in rows),
        },
        "key": {
            "id": key.id,
            "algorithm": key.key.algorithm,
            "fingerprint": key.fingerprint,
        },
        "epochs": [
            {
                "epoch": e.epoch,
                "first_chunk": e.first_chunk,
                "nonce_prefix": _b64(e.nonce_prefix),
                "wrapped_key": _b64(e.wrapped_key),
            }
            for e in epochs
        ],
        "chunks": {"count": len(rows), "bytes": offset},
        "coverage": {
            "segments": [
                {
                    "started_at": _iso(s.started_at),
                    "ended_at": _iso(s.ended_at),
                    "ended_by": s.ended_by.value if s.ended_by else None,
                }
                for s in rec.segments
            ],
            "gaps": rec.gaps,
        },
    }
    return SealedDownload(rec, sealed.prefix(header, signer), stored)


async def iter_sealed(
    download: SealedDownload, blobs: BlobStore, start: int, end: int
) -> AsyncIterator[bytes]:
    """Bytes [start, end) of the container: the prefix, then the stored stream as it is."""
    head = len(download.prefix)
    if start < head:
        yield download.prefix[start : min(end, head)]
    offset, stop = max(start - head, 0), end - head
    if offset >= stop:
        return
    if len(download.stored.parts) == 1:
        cursor = Cursor(blobs, download.stored, offset)
        try:
            while offset < stop:
                take = min(READ_BYTES, stop - offset)
                yield await cursor.read(take)
                offset += take
        finally:
            await cursor.close()
        return
    while offset < stop:
        take = min(READ_BYTES, stop - offset)
        yield await read_stream(blobs, download.stored, offset, take)
        offset += take
