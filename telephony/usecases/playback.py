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

import asyncio
import bisect
import hashlib
import logging
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime

import asyncpg
import numpy as np

from storage import chunks, recordings, securitylog
from storage.blobs.audio import Cursor, StoredAudio, read_stream, stored_audio
from storage.blobs.protocol import BlobStore
from storage.keys.crypto import CHUNK_HEADER, TAG_BYTES, ChunkCipher
from storage.keys.providers import KeyProvider
from telephony.domain.actors import Actor
from telephony.domain.errors import IntegrityFailure, InvalidInput, RecordingInProgress
from telephony.domain.recordings import FINISHED, RecordingStatus
from telephony.domain.tracks import INBOUND
from telephony.media import codecs, containers
from telephony.media.decoding import decode_track
from telephony.media.mp3 import Mp3Encoder
from telephony.media.wav import WavLayout
from telephony.usecases.trail import transaction

log = logging.getLogger(__name__)

# Finished recordings only: a live one is still growing (409 recording-in-progress).
DOWNLOADABLE = FINISHED
READ_BATCH_BYTES = 1 << 20  # one read of the stored stream serves many ~16 KiB chunks
_DAMAGED = "an audio chunk failed its integrity check"
CHUNK_TRACK = "mix"  # chunks hold every track interleaved: one AEAD stream per recording
# Packet codecs decode in blocks of BLOCK_S, each with a fresh decoder fed PREROLL_S of
# the packets before it first: the same block always decodes to the same samples, so
# a Range request returns exactly the bytes of the whole file (a strong ETag), and a
# seek costs one block, not the recording so far.
BLOCK_S = 30
PREROLL_S = 1


@dataclass(frozen=True)
class Playback:
    """A finished recording whose rows passed the up-front checks, ready to stream."""

    recording: recordings.Recording
    layout: WavLayout
    chunks: tuple[chunks.Chunk, ...]
    starts: tuple[int, ...]  # sample frames before each chunk
    cipher: ChunkCipher | None  # None when no audio was ever stored
    stored: StoredAudio
    packets: str | None = None  # the packet codec the chunks hold; None: interleaved samples
    container: str | None = None  # `?encoding=` the packet codec itself: its own file

    @property
    def media_type(self) -> str:
        return containers.CONTAINERS[self.container] if self.container else "audio/wav"

    @property
    def extension(self) -> str:
        return containers.EXTENSIONS[self.container] if self.container else "wav"

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
        if rec.customer_key_id is not None:
            # Callers ask usecases.sealed first; this says why, should one not.
            raise IntegrityFailure("the recording is sealed to the customer's key")
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
    packets = fmt.encoding if fmt.encoding in codecs.PACKET_CODECS else None
    tracks = fmt.tracks or (INBOUND,)
    container = _container(output, packets, len(tracks))
    layout = WavLayout(
        "l16le" if packets else fmt.encoding or "mulaw",  # packets: as decoded
        fmt.sample_rate_hz or 8000,
        tracks,
        rec.channels,
        "pcm16" if container else output,
    )
    _check_rows(rows, layout, rec.status, packets=packets is not None)
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
    return Playback(rec, layout, rows, tuple(starts), cipher, stored, packets, container)


def _container(output: str, packets: str | None, tracks: int) -> str | None:
    """The packet codec's own file, when that is what `encoding` asks for and one holds it."""
    if output not in containers.CONTAINERS:
        return None
    if output != packets:
        stored = packets or "interleaved samples"
        raise InvalidInput(
            f"encoding={output} is this recording's codec only if it was recorded so",
            errors=[{"field": "encoding", "message": f"the recording is stored as {stored}"}],
        )
    if output in containers.SINGLE_TRACK and tracks != 1:
        raise InvalidInput(
            f"a {output} file holds one track, and this recording has {tracks}",
            errors=[{"field": "encoding", "message": "use pcm16 for a recording of its tracks"}],
        )
    return output


def _check_rows(
    rows: tuple[chunks.Chunk, ...], layout: WavLayout, status: RecordingStatus, *, packets: bool
) -> None:
    """Rows contiguous in the stream, and for samples each one exactly its size (packets
    vary: each is checked as it is read)."""
    offset = 0
    for index, chunk in enumerate(rows):
        plaintext = chunk.samples * layout.source_frame_bytes
        sized = (
            chunk.record_bytes >= CHUNK_HEADER.size + TAG_BYTES
            if packets
            else chunk.record_bytes == CHUNK_HEADER.size + plaintext + TAG_BYTES
        )
        if (
            chunk.idx != index
            or chunk.blob_offset != offset
            or not sized
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
    if playback.packets is not None:
        async for piece in _decoded_wav(playback, blobs, data_start, data_end):
            yield head + piece if head else piece
            head = b""
        if head:
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


async def _decoded_wav(
    playback: Playback, blobs: BlobStore, data_start: int, data_end: int
) -> AsyncIterator[bytes]:
    """WAV data bytes [data_start, data_end) of a packet recording, block by block."""
    frame_bytes = playback.layout.out_frame_bytes
    rate = playback.layout.sample_rate_hz
    block = BLOCK_S * rate
    first_frame, end_frame = data_start // frame_bytes, -(-data_end // frame_bytes)
    for begin in range(first_frame // block * block, end_frame, block):
        stop = min(begin + block, playback.frames)
        data = await _decoded_block(playback, blobs, begin, stop)
        lo = max(data_start - begin * frame_bytes, 0)
        hi = data_end - begin * frame_bytes
        yield data[lo:hi]


async def _decoded_block(playback: Playback, blobs: BlobStore, begin: int, stop: int) -> bytes:
    """Samples [begin, stop) of every track, decoded from PREROLL_S earlier on, as WAV data."""
    assert playback.packets is not None
    rate = playback.layout.sample_rate_hz
    decode_from = max(begin - PREROLL_S * rate, 0)
    reach = int(codecs.MAX_PACKET_S * rate)  # a packet may start before its chunk's span
    first = max(bisect.bisect_left(playback.starts, decode_from) - 1, 0)
    last = bisect.bisect_right(playback.starts, stop + reach)
    plaintexts = [b""]
    async for index, plaintext in _opened(playback, blobs, first):
        if index >= last:
            break
        plaintexts.append(plaintext)
    return await asyncio.to_thread(
        _decode_block, playback, b"".join(plaintexts), decode_from, begin, stop
    )


def _decode_block(
    playback: Playback, plaintext: bytes, decode_from: int, begin: int, stop: int
) -> bytes:
    """In a worker thread: decoding is the CPU work of a download (media.decoding)."""
    assert playback.packets is not None
    codec = playback.packets
    tracks = len(playback.layout.source_tracks)
    by_track: list[list[tuple[int, int, bytes]]] = [[] for _ in range(tracks)]
    try:
        for packet in codecs.unpack(plaintext):
            if packet.track < tracks and decode_from <= packet.position < stop:
                samples = codecs.packet_samples(codec, packet.payload)
                by_track[packet.track].append((packet.position, samples, packet.payload))
    except ValueError:
        raise IntegrityFailure(_DAMAGED) from None  # verified chunks hold whole packets
    channels = []
    for packets in by_track:
        packets.sort(key=lambda p: p[0])
        pcm = decode_track(codec, packets, decode_from, stop - decode_from)
        channels.append(pcm[begin - decode_from :])
    interleaved = np.stack(channels, axis=1).astype("<i2", copy=False).tobytes()
    return playback.layout.convert(interleaved)


async def iter_container(playback: Playback, blobs: BlobStore) -> AsyncIterator[bytes]:
    """The recording in its packet codec's own file (media.containers), written as it is
    read; the first piece holds the first chunks, so damage there is found before sending."""
    assert playback.container is not None
    writer = containers.writer_for(
        playback.container, len(playback.layout.source_tracks), playback.frames
    )
    async for _, plaintext in _opened(playback, blobs, 0):
        try:
            batch = [(p.track, p.position, p.payload) for p in codecs.unpack(plaintext)]
        except ValueError:
            raise IntegrityFailure(_DAMAGED) from None
        data = await asyncio.to_thread(writer.feed, batch)
        if data:
            yield data
    yield await asyncio.to_thread(writer.close)


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
    batches = list(_batches(playback.chunks, first))
    cursor = None
    if batches and len(playback.stored.parts) == 1:  # one object: one streamed request
        cursor = Cursor(blobs, playback.stored, batches[0][0].blob_offset)
    try:
        for batch in batches:
            yield await _open_batch(playback, blobs, batch, cursor)
    finally:
        if cursor is not None:
            await cursor.close()


async def _open_batch(
    playback: Playback, blobs: BlobStore, batch: tuple[chunks.Chunk, ...], cursor: Cursor | None
) -> tuple[int, bytes]:
    assert playback.cipher is not None
    offset = batch[0].blob_offset
    length = sum(c.record_bytes for c in batch)
    if cursor is not None:
        records = await cursor.read(length)
    else:
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
    return batch[0].idx, b"".join(plaintexts)


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
    rec: recordings.Recording,
    actor: Actor,
    *,
    encoding: str,
    address: str | None,
    byte_range: tuple[int, int] | None,
    now: datetime,
) -> None:
    """Every download lands in the customer's audit trail: who, when, from where, in what
    form (R4)."""
    async with transaction(pool) as tx:
        tx.audit(
            rec.account_id,
            actor,
            "recording.downloaded",
            {"call_id": rec.call_id, "recording_id": rec.id},
            now,
            address=address,
            encoding=encoding,
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


async def iter_mp3(playback: Playback, blobs: BlobStore) -> AsyncIterator[bytes]:
    """The recording as MP3 (API.md `format=mp3`), encoded piece by piece off the loop.

    `playback` must be opened for pcm16 output: its WAV data is what LAME reads.
    The first piece holds the first decrypted batch's frames, so damage in the
    first chunk is found before anything is sent.
    """
    layout = playback.layout
    encoder = await asyncio.to_thread(Mp3Encoder, layout.sample_rate_hz, layout.out_channels)
    pending = b""
    async for piece in iter_wav(playback, blobs, layout.header_bytes, playback.size_bytes):
        pending += await asyncio.to_thread(encoder.feed, piece)
        if len(pending) >= 4096:
            yield pending
            pending = b""
    yield pending + await asyncio.to_thread(encoder.close)
