"""Backup and restore times for about 1 GB of recordings (S8).

    .venv/bin/python bench/backup.py [--gigabytes 1.0] [--keep]

A real server process (`python -m telephony serve`, its own PostgreSQL cluster with WAL
archiving) gets one account, and one call with a consented counterpart, a recording
(started, stopped) and the call ended, all through the API. That call is cloned in SQL
(bench/portal.py's `clone`) to as many recordings of --minutes each as --gigabytes of
audio makes; each gets the chunk rows a real recording of that length has (one a second)
and its sealed parts in the blob store (one of 10 s of two-track μ-law, 160 KB, random
bytes as ciphertext is). The server stops; then, timed, as an operator types them:

    telephony backup run                 the first: base backup and every blob copied
    telephony backup run                 the next day's: base backup, nothing new to copy
    telephony backup restore --to DIR    unpack, replay WAL, journal, blobs into DIR/blobs

Printed: the database and blob sizes, and each command's seconds and MB/s.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import aiohttp
import asyncpg

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import OurServer, consented_call, sign_up
from bench.portal import clone
from storage.blobs.filesystem import FilesystemBlobStore
from storage.blobs.names import audio_part
from telephony.usecases.backups import embedded_cluster

PART_BYTES = 160_000  # 10 s of two-track 8 kHz μ-law: one part shipped from the spool
CHUNK_BYTES = PART_BYTES // 10  # a sealed chunk: one second


async def make_data(data: Path, gigabytes: float, minutes: int) -> tuple[int, int]:
    """The template through the API, then the clones and their blobs; (recordings, bytes)."""
    await asyncio.to_thread(data.mkdir)
    server = OurServer(data, "asyncio")
    cluster = embedded_cluster(data, None)
    server.cluster = cluster
    await server.start()
    try:
        async with aiohttp.ClientSession() as http:
            auth = {"Authorization": f"Bearer {await sign_up(http, server.url)}"}
            call = await consented_call(http, server.url, auth)
            async with http.post(
                f"{server.url}/v1/calls/{call['id']}/recordings", json={}, headers=auth
            ) as resp:
                rec = await resp.json()
            await http.post(f"{server.url}/v1/recordings/{rec['id']}/stop", headers=auth)
            await http.post(f"{server.url}/v1/calls/{call['id']}/end", headers=auth)
    finally:
        server.stop()
    parts_each = minutes * 6
    count = max(1, round(gigabytes * 1e9 / (parts_each * PART_BYTES)))
    await asyncio.to_thread(cluster.ensure_running)
    conn = await asyncpg.connect(cluster.dsn())
    try:
        if count > 1:
            await clone(conn, call["id"], count - 1)
        ids = [r["id"] for r in await conn.fetch("SELECT id FROM recordings ORDER BY id")]
        await conn.execute(
            f"""INSERT INTO recording_chunks (recording_id, idx, blob_offset, record_bytes,
                       first_sample, samples, first_arrival, last_arrival, final)
                SELECT r.id, i, i * {CHUNK_BYTES}, {CHUNK_BYTES}, i * 8000, 8000,
                       r.started_at + i * interval '1 second',
                       r.started_at + i * interval '1 second', i = {parts_each * 10 - 1}
                FROM recordings r, generate_series(0, {parts_each * 10 - 1}) i"""
        )
        await conn.execute(
            "UPDATE recordings SET status = 'completed', size_bytes = $1",
            parts_each * PART_BYTES,
        )
        await conn.execute("ANALYZE")
    finally:
        await conn.close()
        await asyncio.to_thread(cluster.stop)
    store = FilesystemBlobStore(data / "blobs")
    try:
        for recording_id in ids:
            await asyncio.gather(
                *(
                    store.put(audio_part(recording_id, n * PART_BYTES), os.urandom(PART_BYTES))
                    for n in range(parts_each)
                )
            )
    finally:
        await store.close()
    return len(ids), len(ids) * parts_each * PART_BYTES


def timed(args: list[str], env: dict[str, str]) -> tuple[float, dict[str, object]]:
    started = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "telephony", *args], env=env, capture_output=True, text=True
    )
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        raise RuntimeError(f"{args}: {done.stderr[-2000:]}")
    return seconds, json.loads(done.stdout.splitlines()[-1])


def folder_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


async def run(args: argparse.Namespace) -> int:
    root = Path(tempfile.mkdtemp(prefix="bench-backup-"))
    data, restored = root / "data", root / "restored"
    try:
        started = time.perf_counter()
        recordings, blob_bytes = await make_data(data, args.gigabytes, args.minutes)
        print(
            f"{recordings} recordings of {args.minutes} min, {blob_bytes / 1e9:.2f} GB of"
            f" blobs, made in {time.perf_counter() - started:.0f} s"
        )
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": str(root),
            "LANG": "C.UTF-8",
            "TELEPHONY_DATA_DIR": str(data),
        }
        first_s, first = timed(["backup", "run"], env)
        second_s, second = timed(["backup", "run"], env)
        restore_s, done = timed(["backup", "restore", "--to", str(restored)], env)
        database = int(first["database_bytes"])  # type: ignore[call-overload]
        restored_blobs = await asyncio.to_thread(folder_bytes, restored / "blobs")
        total = (database + blob_bytes) / 1e6
        print(f"database backup (gzip): {database / 1e6:.1f} MB")
        print(
            f"backup run, first:   {first_s:6.1f} s  ({total / first_s:6.1f} MB/s)"
            f"  {first['blobs_copied']} objects copied"
        )
        print(f"backup run, next:    {second_s:6.1f} s  ({second['blobs_copied']} objects copied)")
        print(
            f"backup restore:      {restore_s:6.1f} s  ({total / restore_s:6.1f} MB/s)"
            f"  {done['blobs_copied']} objects, {restored_blobs / 1e9:.2f} GB into DIR/blobs,"
            f" {done['wal_segments']} WAL segments replayed"
        )
        return 0
    finally:
        if args.keep:
            print(f"kept: {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--gigabytes", type=float, default=1.0, help="audio to back up [1.0]")
    parser.add_argument("--minutes", type=int, default=5, help="length of each recording [5]")
    parser.add_argument("--keep", action="store_true", help="leave the folders for a look")
    return asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    sys.exit(main())
