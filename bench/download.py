"""Recording download benchmark: one hour of dual audio streamed back, against a bare file server.

    .venv/bin/python bench/download.py          # or: make bench
    .venv/bin/python bench/download.py --blob-url moto   # the parts in an S3 store (moto, local)

A real server process (`python -m telephony serve`, its own PostgreSQL
cluster and master key) gets a one-hour dual recording for an account made
through the API: the call, consent, recording row, wrapped data key and nonce
prefix all come from the API, the call is ended (no media socket, so the
recording is `completed`), and the audio is then written by this process with
the project's own storage code, as the recorder lays it out: 8 kHz μ-law, two
tracks interleaved (16,000 stored bytes a second), 3,600 one-second chunks
sealed with the recording's data key, stored as the recorder ships them (parts of
ten seconds in the blob store), one
`recording_chunks` row each, the last one final. The audio is pseudo-random,
so nothing is cheap by accident.

The same aiohttp client then downloads GET /v1/recordings/{id}/audio in full
(WAV, 16-bit PCM, the default: 115.2 MB) --runs times, reading and discarding
the body, while a sampler thread reads the server's VmRSS every 20 ms.
Figures: median throughput (MB/s, 10^6 bytes), server CPU seconds per
download, and the peak RSS growth over the RSS just before each download:
playback is meant to stream in constant memory (goal: under 30 MB for this
hour). The baseline is a bare aiohttp server on the same event loop sending a
plain file of the same bytes with web.FileResponse (uvloop has no
loop.sendfile, so there aiohttp reads 256 KiB pieces in a worker thread and
writes them, as ours does; on asyncio it is a zero-copy sendfile(2)). The file
is the verified download itself. Ours and its runs alternate, so load from
other work on the machine falls on both alike. The
ratio ours/baseline of the median throughputs is the goal's measure
(≥ 0.5). One `?encoding=mulaw` download (no PCM conversion, half the bytes)
is printed for information.

What ours does that the baseline does not is the point of the service:
authorise, audit, read the blob, open and check every chunk (AES-GCM), turn
μ-law into PCM, and push the bytes through the event loop.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
import wave
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import aiohttp
import asyncpg

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import (
    ROOT,
    OurServer,
    consented_call,
    cpu_seconds,
    free_port,
    rss_bytes,
    sign_up,
    terminate,
    wait_ready,
)
from bench.ingest import MOTO_CREDENTIALS, start_moto
from storage import recordings
from storage.blobs.names import audio_part
from storage.blobs.s3 import S3BlobStore, parse_s3_url
from storage.blobs.stores import open_blob_store
from storage.db import create_pool
from storage.keys import hierarchy
from storage.keys.crypto import ChunkCipher
from storage.keys.providers import ServiceKeys
from telephony.domain.recordings import Channels
from telephony.domain.tracks import BOTH
from telephony.media.wav import WavLayout
from telephony.recorder.writer import PART_SECONDS
from telephony.usecases import compaction

SECONDS = 3600
RATE_HZ = 8000
TRACKS = tuple(t.name for t in BOTH)
CHUNK_BYTES = RATE_HZ * len(TRACKS)  # one second of interleaved μ-law, as the recorder seals it
AUDIO_POOL_BYTES = 1 << 20  # chunks are windows into this, each at its own offset
# Sealed one-second records per stored part, as the recorder ships them (every 10 s).
PART_RECORDS = int(PART_SECONDS)
READ_BYTES = 1 << 16  # the client's read size
SAMPLE_S = 0.02
RSS_GOAL_BYTES = 30_000_000
RATIO_GOAL = 0.5
MB = 1e6

BARE_SERVER = textwrap.dedent(
    """
    import sys
    from aiohttp import web

    PATH = sys.argv[3]

    async def audio(request):
        return web.FileResponse(PATH, headers={"Content-Type": "audio/wav"})

    async def healthz(request):
        return web.json_response({"status": "ok"})

    app = web.Application()
    app.router.add_get("/audio", audio)
    app.router.add_get("/healthz", healthz)
    loop = sys.argv[2]
    if loop == "uvloop":
        import uvloop
        uvloop.install()
    web.run_app(app, host="127.0.0.1", port=int(sys.argv[1]), print=None, access_log=None)
    """
)

# With --blob-url, the baseline is the same WAV as one object in the same store, streamed by
# a bare handler through the same client library: what the store and obstore cost alone.
BARE_OBJECT_SERVER = textwrap.dedent(
    """
    import sys
    import obstore
    from aiohttp import web
    from storage.blobs.s3 import S3BlobStore, parse_s3_url

    async def start(app):
        app["store"] = await S3BlobStore.open(parse_s3_url(sys.argv[3]))
        yield
        await app["store"].close()

    async def audio(request):
        store = request.app["store"]
        answer = await obstore.get_async(store.store, store._object(sys.argv[4]))
        response = web.StreamResponse(headers={"Content-Type": "audio/wav"})
        response.content_length = answer.meta["size"]
        await response.prepare(request)
        async for piece in answer.stream(min_chunk_size=1 << 20):
            await response.write(bytes(piece))
        await response.write_eof()
        return response

    async def healthz(request):
        return web.json_response({"status": "ok"})

    app = web.Application()
    app.cleanup_ctx.append(start)
    app.router.add_get("/audio", audio)
    app.router.add_get("/healthz", healthz)
    loop = sys.argv[2]
    if loop == "uvloop":
        import uvloop
        uvloop.install()
    web.run_app(app, host="127.0.0.1", port=int(sys.argv[1]), print=None, access_log=None)
    """
)
BARE_OBJECT_KEY = "baseline/baseline-wav"  # a blob key: ids joined by /

_INSERT_CHUNK = """
INSERT INTO recording_chunks (recording_id, idx, blob_offset, record_bytes, first_sample,
                              samples, first_arrival, last_arrival, final)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
"""


def audio_pool() -> bytes:
    return random.Random(8000).randbytes(AUDIO_POOL_BYTES)


def chunk_audio(pool: bytes, index: int) -> bytes:
    """Second `index` of the recording: interleaved inbound/outbound μ-law bytes."""
    at = index * 7919 % (len(pool) - CHUNK_BYTES)
    return pool[at : at + CHUNK_BYTES]


# -- the recording: made through the API, its audio written as the recorder would --------


async def completed_recording(http: aiohttp.ClientSession, base: str, token: str) -> str:
    """A consented call with a dual recording, ended: the recording is `completed`."""
    headers = {"Authorization": f"Bearer {token}"}
    call = await consented_call(http, base, headers)
    async with http.post(
        f"{base}/v1/calls/{call['id']}/recordings", headers=headers, json={"channels": "dual"}
    ) as resp:
        rec = await resp.json()
        assert resp.status == 201, rec
    async with http.post(f"{base}/v1/calls/{call['id']}/end", headers=headers) as resp:
        assert resp.status == 200, await resp.text()
    async with http.get(f"{base}/v1/recordings/{rec['id']}", headers=headers) as resp:
        status = (await resp.json())["status"]
    if status != "completed":
        raise RuntimeError(f"the ended call left its recording {status}, not completed")
    return str(rec["id"])


async def seed_audio(server: OurServer, recording_id: str, pool: bytes) -> int:
    """Seal SECONDS one-second chunks into the recording's blob and rows; returns blob bytes.

    The key is opened as the media node opens it (`media_lifecycle.start_writing`), the records
    are ChunkCipher's, the rows carry the recorder's columns (`writer._write`).
    """
    keys = ServiceKeys(hierarchy.MasterKeys(hierarchy.decode_master_key(server.master_key)))
    store = await open_blob_store(server.env.get("TELEPHONY_BLOB_URL"), server.data / "blobs")
    conn = await asyncpg.connect(server.cluster.dsn())
    try:
        rec = await recordings.get(conn, recording_id, account_id=None)
        state = await recordings.writer_state(conn, recording_id)
        if state.next_index or state.blob_offset or state.nonce_prefix is None:
            raise RuntimeError("the recording is not fresh")
        data_key = await keys.recording_key(
            conn, rec.account_id, recording_id, state.wrapped_key, datetime.now(UTC)
        )
        cipher = ChunkCipher(data_key, state.nonce_prefix, recording_id)
        rows: list[tuple[object, ...]] = []
        pending: list[bytes] = []
        offset = written = 0
        for index in range(SECONDS):
            final = index == SECONDS - 1
            record = cipher.seal("mix", index, chunk_audio(pool, index), final=final)
            arrival = rec.started_at + timedelta(seconds=index)
            rows.append(
                (
                    recording_id,
                    index,
                    offset,
                    len(record),
                    index * RATE_HZ,
                    RATE_HZ,
                    arrival,
                    arrival + timedelta(seconds=1),
                    final,
                )
            )
            offset += len(record)
            pending.append(record)
            if len(pending) == PART_RECORDS or final:
                await store.put(audio_part(recording_id, written), b"".join(pending))
                written = offset
                pending = []
        async with conn.transaction():
            await conn.executemany(_INSERT_CHUNK, rows)
            await conn.execute(
                """UPDATE recordings SET encoding = 'mulaw', sample_rate_hz = $2,
                          track_names = $3, size_bytes = $4
                   WHERE id = $1""",
                recording_id,
                RATE_HZ,
                list(TRACKS),
                offset,
            )
    finally:
        await conn.close()
        await store.close()
    return offset


async def verify(
    http: aiohttp.ClientSession, url: str, headers: dict[str, str], pool: bytes, path: Path
) -> tuple[int, int]:
    """Download once into `path` (the baseline's file) and check it is the hour we seeded.

    Returns the file's size and the server's RSS growth during this first, cold download.
    """
    body = bytearray()
    async with http.get(url, headers=headers) as resp:
        if resp.status != 200:
            raise RuntimeError(f"download answered {resp.status}: {await resp.text()}")
        async for piece in resp.content.iter_chunked(READ_BYTES):
            body += piece
        if len(body) != resp.content_length:
            raise RuntimeError(f"got {len(body)} bytes of {resp.content_length}")
    await asyncio.to_thread(path.write_bytes, body)
    with wave.open(str(path), "rb") as wav:
        channels, rate, width, frames = (
            wav.getnchannels(),
            wav.getframerate(),
            wav.getsampwidth(),
            wav.getnframes(),
        )
    if (channels, rate, width, frames) != (2, RATE_HZ, 2, SECONDS * RATE_HZ):
        raise RuntimeError(f"unexpected WAV: {channels} ch, {rate} Hz, {width} B, {frames} frames")
    layout = WavLayout("mulaw", RATE_HZ, BOTH, Channels.DUAL, "pcm16")
    data = len(body) - layout.header_bytes
    second = RATE_HZ * layout.out_frame_bytes
    first = bytes(body[layout.header_bytes : layout.header_bytes + second])
    last = bytes(body[len(body) - second :])
    if (
        data != SECONDS * second
        or first != layout.convert(chunk_audio(pool, 0))
        or last != layout.convert(chunk_audio(pool, SECONDS - 1))
    ):
        raise RuntimeError("the downloaded audio is not the audio that was seeded")
    print(
        f"verified: WAV {channels} channels, {rate} Hz, {8 * width}-bit, "
        f"{frames / rate:.0f} s, {len(body):,} bytes; first and last second match the seed",
        flush=True,
    )
    return len(body), frames


# -- measuring one download --------------------------------------------------------


class RssSampler:
    """Peak VmRSS of `pid`, read every SAMPLE_S in a thread (the client's loop is busy reading)."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.before = rss_bytes(pid)
        self.peak = self.before
        self.samples = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while True:
            self.peak = max(self.peak, rss_bytes(self.pid))
            self.samples += 1
            if self._stop.wait(SAMPLE_S):
                return

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, rss_bytes(self.pid))


@dataclass(frozen=True)
class Run:
    size: int
    seconds: float
    server_cpu_s: float
    client_cpu_s: float
    rss_before: int
    rss_peak: int
    samples: int

    @property
    def mb_per_s(self) -> float:
        return self.size / self.seconds / MB

    @property
    def rss_growth(self) -> int:
        return self.rss_peak - self.rss_before


async def download(
    http: aiohttp.ClientSession, url: str, pid: int, headers: dict[str, str] | None = None
) -> Run:
    """One full GET, the body read in READ_BYTES pieces and discarded."""
    size = 0
    with RssSampler(pid) as rss:
        cpu0, client0, t0 = cpu_seconds(pid), time.process_time(), time.perf_counter()
        async with http.get(url, headers=headers) as resp:
            if resp.status != 200:
                raise RuntimeError(f"{url} answered {resp.status}: {await resp.text()}")
            async for piece in resp.content.iter_chunked(READ_BYTES):
                size += len(piece)
            expected = resp.content_length
        elapsed = time.perf_counter() - t0
        cpu1, client1 = cpu_seconds(pid), time.process_time()
    if size != expected:
        raise RuntimeError(f"{url}: got {size} bytes of {expected}")
    return Run(size, elapsed, cpu1 - cpu0, client1 - client0, rss.before, rss.peak, rss.samples)


def show(label: str, run: Run) -> None:
    print(
        f"{label:>16}: {run.size / MB:6.1f} MB in {run.seconds:5.2f} s = "
        f"{run.mb_per_s:6.1f} MB/s, server CPU {run.server_cpu_s:5.2f} s, "
        f"client CPU {run.client_cpu_s:5.2f} s, server RSS {run.rss_before / MB:5.1f} MB "
        f"+{run.rss_growth / MB:.1f} MB peak ({run.samples} samples)",
        flush=True,
    )


async def compact_seeded(server: OurServer, recording_id: str) -> None:
    """What the compaction worker does a minute after a recording ends (object stores)."""
    store = await open_blob_store(server.env.get("TELEPHONY_BLOB_URL"), server.data / "blobs")
    pool = await create_pool(server.cluster.dsn(), max_size=2)
    try:
        if not await compaction.compact(pool, store, recording_id, datetime.now(UTC)):
            raise RuntimeError("the seeded recording did not compact")
    finally:
        await pool.close()
        await store.close()


class BareServer:
    """aiohttp's FileResponse for one plain file, on the same event loop as ours; with a
    blob URL, the same bytes as one object in that store, streamed by a bare handler."""

    def __init__(self, path: Path, loop: str, blob_url: str | None = None) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/audio"
        self.path, self.blob_url = path, blob_url
        self.args = [sys.executable, "-c", BARE_SERVER, str(self.port), loop, str(path)]
        if blob_url is not None:
            code = [BARE_OBJECT_SERVER, str(self.port), loop, blob_url, BARE_OBJECT_KEY]
            self.args = [sys.executable, "-c", *code]
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def label(self) -> str:
        return "one object, streamed" if self.blob_url else "aiohttp FileResponse"

    async def start(self) -> None:
        if self.blob_url is not None:  # the verified download, as one object in the store
            store = await S3BlobStore.open(parse_s3_url(self.blob_url))
            try:
                body = await asyncio.to_thread(self.path.read_bytes)
                await store.put(BARE_OBJECT_KEY, body)
            finally:
                await store.close()
        self.process = subprocess.Popen(self.args, cwd=ROOT)  # noqa: ASYNC220 - once, before measuring
        await wait_ready(f"http://127.0.0.1:{self.port}/healthz", self.process)

    def stop(self) -> None:
        terminate(self.process, timeout_s=30)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    # A download takes about 0.15 s here: five were too few for a stable median
    # (ratios from 0.41 to 0.54 on the same code); twenty cost three seconds.
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--loop", choices=("uvloop", "asyncio"), default="uvloop")
    parser.add_argument(
        "--blob-url",
        help="the server's TELEPHONY_BLOB_URL (s3://bucket/prefix?endpoint=…), or `moto`: a"
        " moto S3 server on 127.0.0.1 started here; the baseline then streams the same bytes"
        " as one object of that store",
    )
    args = parser.parse_args()
    if args.runs < 1:
        parser.error("--runs must be at least 1")

    task = asyncio.current_task()
    assert task is not None
    # SIGTERM cancels like Ctrl-C does, so the finally below still stops everything.
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, task.cancel)
    data = Path(tempfile.mkdtemp(prefix="bench-download-", dir="/tmp"))
    server = OurServer(data, args.loop)
    pool = audio_pool()
    moto = None
    if args.blob_url == "moto":
        moto, args.blob_url = await start_moto(data)
    bare = BareServer(data / "baseline.wav", args.loop, args.blob_url)
    if args.blob_url:
        server.env.update(TELEPHONY_BLOB_URL=args.blob_url, **MOTO_CREDENTIALS)
        os.environ.update(MOTO_CREDENTIALS)  # this process seeds the parts into the same store
    print(
        f"download benchmark on {os.cpu_count()} cores, server loop: {args.loop}, "
        f"{args.runs} runs each, blobs: {'the object store' if args.blob_url else 'files'}",
        flush=True,
    )
    try:
        await server.start()
        assert server.process is not None
        pid = server.process.pid
        timeout = aiohttp.ClientTimeout(total=None, sock_read=120)
        async with aiohttp.ClientSession(timeout=timeout) as http:
            token = await sign_up(http, server.url)
            headers = {"Authorization": f"Bearer {token}"}
            recording_id = await completed_recording(http, server.url, token)
            t0 = time.perf_counter()
            stored = await seed_audio(server, recording_id, pool)
            print(
                f"seeded {recording_id}: {SECONDS} chunks of {CHUNK_BYTES:,} bytes "
                f"({SECONDS // 3600} h dual μ-law), blob {stored:,} bytes, "
                f"in {time.perf_counter() - t0:.1f} s",
                flush=True,
            )
            url = f"{server.url}/v1/recordings/{recording_id}/audio"
            if args.blob_url:  # as the service's compaction worker leaves a finished one
                on_parts = await download(http, url, pid, headers)
                show("ours on parts", on_parts)
                t0 = time.perf_counter()
                await compact_seeded(server, recording_id)
                print(f"compacted into one object in {time.perf_counter() - t0:.1f} s", flush=True)
            cold = RssSampler(pid)
            with cold:
                await verify(http, url, headers, pool, data / "baseline.wav")
            print(
                f"first (cold) download: server RSS +{(cold.peak - cold.before) / MB:.1f} MB",
                flush=True,
            )
            await bare.start()
            assert bare.process is not None
            await download(http, bare.url, bare.process.pid)  # warm: file in page cache
            ours: list[Run] = []
            base: list[Run] = []
            for i in range(args.runs):
                ours.append(await download(http, url, pid, headers))
                show(f"ours pcm16 #{i + 1}", ours[-1])
                base.append(await download(http, bare.url, bare.process.pid))
                show(f"bare #{i + 1}", base[-1])
            mulaw = await download(http, f"{url}?encoding=mulaw", pid, headers)
            show("ours mulaw", mulaw)

        ours_mb = statistics.median(r.mb_per_s for r in ours)
        base_mb = statistics.median(r.mb_per_s for r in base)
        growth = max(r.rss_growth for r in ours)
        ratio = ours_mb / base_mb
        ours_cpu = statistics.median(r.server_cpu_s for r in ours)
        base_cpu = statistics.median(r.server_cpu_s for r in base)
        rss_verdict = "met" if growth < RSS_GOAL_BYTES else "NOT met"
        ratio_verdict = "met" if ratio >= RATIO_GOAL else "NOT met"
        print(
            f"\nours (GET /v1/recordings/{{id}}/audio, pcm16, {ours[0].size:,} bytes): "
            f"median {ours_mb:.1f} MB/s, median server CPU {ours_cpu:.2f} s per download\n"
            f"ours peak server RSS growth: {growth / MB:.1f} MB "
            f"(goal < {RSS_GOAL_BYTES / MB:.0f} MB: {rss_verdict})\n"
            f"bare ({bare.label}, same bytes): median {base_mb:.1f} MB/s, median "
            f"server CPU {base_cpu:.2f} s per download\n"
            f"ratio ours/bare on {args.loop}: {ratio:.2f} "
            f"(goal >= {RATIO_GOAL}: {ratio_verdict}); "
            f"server CPU per download bare/ours: {base_cpu / ours_cpu:.2f}\n"
            f"ours mulaw (one run, {mulaw.size:,} bytes): {mulaw.mb_per_s:.1f} MB/s",
            flush=True,
        )
    finally:
        bare.stop()
        server.stop()
        server.cluster.stop()
        if moto is not None:
            terminate(moto, timeout_s=10)
        shutil.rmtree(data, ignore_errors=True)


if __name__ == "__main__":
    asyncio.run(main())
