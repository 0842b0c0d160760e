"""A disk that really fills mid-call (S7, issue 12): the service's data directory on a small
tmpfs of its own, filled by a ballast file while a recording streams.

What must hold: the recording stops writing cleanly and says where (a `storage-full` gap),
what was sealed before reads back byte for byte, the call and its socket go on, /readyz and
a new start answer 503 with the reason, nothing answers 500, and once there is room the
node is ready again. PostgreSQL keeps its data elsewhere: it is not the thing that fills.
"""

from __future__ import annotations

import asyncio
import errno
import os
import re
import subprocess
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from aiohttp.test_utils import TestClient

from storage.blobs.spool import Part, Spool
from telephony.settings import Settings
from telephony.web.app import create_app
from telephony.web.appkeys import SPOOL
from tests.conftest import Customer, ServiceServer, consented_call, new_customer
from tests.support.mail import MAILBOX
from tests.support.media import JsonPeer, frames_received, writer_of
from tests.support.pacing import ticks
from tests.support.recordings import expected, frame, mono_recording, status_is, stored_audio
from tests.support.waiting import eventually

MIB = 1024 * 1024
DISK_MB = 32
RESERVE_MB = 4  # under the disk's size, so the node starts ready and refuses only once full
SILENCE = 0xFF  # μ-law's: a hole in a `silence` recording
FRAME_BYTES = 160  # 20 ms of μ-law at 8 kHz, one track
BYTES_PER_MS = 8


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A tmpfs of DISK_MB for the data directory, unmounted at the end whatever happens."""
    if os.geteuid() != 0:
        pytest.fail("the disk-full tests mount a tmpfs: run them as root (CI does)")
    mount = tmp_path / "disk"
    mount.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={DISK_MB}m,mode=0700", "tmpfs", str(mount)],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        pytest.fail(f"cannot mount a tmpfs at {mount}: {done.stderr.strip()}")
    try:
        yield mount
    finally:
        # Lazy: a file thread of the app that closed may still hold a directory open.
        subprocess.run(["umount", "--lazy", str(mount)], check=True)


def fill(disk: Path) -> Path:
    """Write a ballast file until the disk refuses another byte."""
    ballast = disk / "ballast"
    with open(ballast, "wb", buffering=0) as fh:
        for block in (MIB, 4096, 1):
            try:
                while True:
                    fh.write(b"\0" * block)
            except OSError as exc:
                if exc.errno != errno.ENOSPC:
                    raise
    return ballast


def metric(text: str, name: str, labels: str = "") -> float:
    found = re.search(rf"^{re.escape(name + labels)} (\S+)$", text, re.M)
    assert found, f"{name}{labels} is not in /metrics"
    return float(found.group(1))


@pytest.fixture
def disk_settings(settings: Settings, small_disk: Path) -> Settings:
    # Parts of a second: when the disk fills, some are in the blob store, some in the spool.
    return settings.replace(
        data_dir=small_disk, storage_reserve_mb=RESERVE_MB, access_log_to_db=True, spool_part_s=1.0
    )


@pytest.fixture
async def disk_client(
    disk_settings: Settings, pool: asyncpg.Pool, mailbox: object
) -> AsyncIterator[TestClient]:
    app = create_app(disk_settings, run_workers=False)
    app[MAILBOX] = mailbox  # type: ignore[assignment]
    async with TestClient(ServiceServer(app)) as client:
        yield client


class Leg:
    """A recorded call whose engine streams one track in real time."""

    def __init__(self, client: TestClient, call: dict[str, Any], peer: JsonPeer, rec: str):
        self.client, self.call, self.peer, self.rec = client, call, peer, rec
        self.sent = 0

    async def talk(self, seconds: float) -> None:
        async for _ in ticks(int(seconds * 10), 0.1):  # 100 ms of audio each 100 ms
            for _ in range(5):
                await self.peer.media(frame(self.sent, "inbound"), "inbound")
                self.sent += 1

    @property
    def writer(self) -> Any:
        return writer_of(self.client, self.call["id"])


async def recorded_leg(client: TestClient, owner: Customer) -> Leg:
    call, peer, recording_id = await mono_recording(client, owner)
    return Leg(client, call, peer, recording_id)


async def sealed_before_fill(leg: Leg) -> int:
    """Talk, and wait until all but the jitter allowance is sealed and appended: the bytes
    that must survive the fill (the timeline's count runs ahead of a chunk in flight, which
    the fill may refuse)."""
    await leg.talk(3)
    await eventually(lambda: leg.writer.stored_samples >= (leg.sent - 10) * FRAME_BYTES)
    return int(leg.writer.stored_samples)


async def gaps_of(client: TestClient, owner: Customer, rec: str) -> list[dict[str, Any]]:
    resp = await client.get(f"/v1/recordings/{rec}", headers=owner.auth)
    assert resp.status == 200, await resp.text()
    return [g for g in (await resp.json())["gaps"] if g["reason"] == "storage-full"]


async def statuses_logged(pool: asyncpg.Pool) -> list[int]:
    async with pool.acquire() as conn:
        return [r["status"] for r in await conn.fetch("SELECT status FROM access_log")]


async def test_a_disk_that_fills_mid_call_stops_writing_with_a_gap_and_resumes_with_room(
    disk_client: TestClient, small_disk: Path, pool: asyncpg.Pool
) -> None:
    """S7: the fill costs the audio while it lasts, and nothing sealed before it; the
    readiness probe and a new start say why; the ballast gone, the recording goes on."""
    client = disk_client
    owner = await new_customer(client)
    leg = await recorded_leg(client, owner)
    writer = leg.writer
    sealed = await sealed_before_fill(leg)

    ballast = await asyncio.to_thread(fill, small_disk)
    await leg.talk(3)
    await eventually(lambda: not writer.writing)
    # The socket took every frame sent while the disk was full.
    await eventually(lambda: frames_received(client, leg.call["id"]) == leg.sent)
    unready = await client.get("/readyz")
    other = await consented_call(client, owner)
    refused = await client.post(f"/v1/calls/{other['id']}/recordings", json={}, headers=owner.auth)
    full_metrics = await (await client.get("/metrics")).text()
    while_full = await client.get(f"/v1/recordings/{leg.rec}", headers=owner.auth)
    unready_body, refused_body = await unready.json(), await refused.json()

    await asyncio.to_thread(ballast.unlink)

    async def ready() -> bool:
        return (await client.get("/readyz")).status == 200

    await eventually(ready, timeout_s=10, interval_s=0.1)
    [gap] = await eventually(lambda: gaps_of(client, owner, leg.rec), timeout_s=10)  # resumed
    resumed_at = leg.sent
    await leg.talk(2)
    await leg.peer.stop()
    await eventually(lambda: status_is(pool, leg.rec, "completed"), timeout_s=30)
    audio = await stored_audio(client, leg.rec)
    downloaded = await client.get(f"/v1/recordings/{leg.rec}/audio", headers=owner.auth)
    await downloaded.read()
    left_in_spool = await client.app[SPOOL].parts()
    await client.close()  # the access log is flushed at shutdown
    statuses = await statuses_logged(pool)

    assert writer.stats.frames_dropped_storage > 0  # dropped in memory, the call went on
    assert unready.status == 503 and "reserve" in unready_body["detail"]
    assert refused.status == 503 and refused_body["code"] == "storage-low"
    assert refused.headers["Content-Type"].startswith("application/problem+json")
    assert metric(full_metrics, "storage_free_bytes", '{store="spool"}') < RESERVE_MB * MIB
    assert metric(full_metrics, "storage_free_bytes", '{store="blob_store"}') < RESERVE_MB * MIB
    assert while_full.status == 200
    lost_from = gap["at_ms"] * BYTES_PER_MS
    assert sealed <= lost_from < resumed_at * FRAME_BYTES
    assert gap["duration_ms"] > 0
    sent = expected("inbound", leg.sent)
    hole = len(audio[lost_from:]) - len(audio[lost_from:].lstrip(bytes([SILENCE])))
    # Byte for byte: every frame up to the loss, silence for the hole (the stream's clock ran
    # on; frames not dropped yet when room came back are kept), then every frame after it,
    # including all those sent once there was room.
    assert audio == sent[:lost_from] + bytes([SILENCE]) * hole + sent[lost_from + hole :]
    assert 0 < hole <= gap["duration_ms"] * BYTES_PER_MS
    assert lost_from + hole <= resumed_at * FRAME_BYTES
    assert downloaded.status == 200
    assert left_in_spool == []
    assert 500 not in statuses and 503 in statuses


async def test_a_call_that_ends_on_a_full_disk_keeps_what_was_sealed_for_recovery(
    disk_settings: Settings, small_disk: Path, pool: asyncpg.Pool, mailbox: object
) -> None:
    """S7: a recording cannot be finished on a full disk (its final chunk has no room): it is
    left `stopped`, nothing half-written, and the node's recovery, once there is room, ships
    what the spool holds and makes it `interrupted`, readable byte for byte up to the loss."""
    first = create_app(disk_settings, run_workers=False)
    first[MAILBOX] = mailbox  # type: ignore[assignment]
    async with TestClient(ServiceServer(first)) as client:
        owner = await new_customer(client)
        leg = await recorded_leg(client, owner)
        sealed = await sealed_before_fill(leg)
        ballast = await asyncio.to_thread(fill, small_disk)
        await leg.talk(2)
        await eventually(lambda: not leg.writer.writing)
        await leg.peer.stop()
        await eventually(lambda: leg.writer is None)  # the stream's end was handled
        ended = await (await client.get(f"/v1/recordings/{leg.rec}", headers=owner.auth)).json()
    await asyncio.to_thread(ballast.unlink)

    second = create_app(disk_settings, run_workers=False)
    second[MAILBOX] = mailbox  # type: ignore[assignment]
    async with TestClient(ServiceServer(second)) as client:

        async def ready() -> bool:
            return (await client.get("/readyz")).status == 200

        await eventually(ready, timeout_s=20, interval_s=0.1)
        answer = await (await client.get(f"/v1/recordings/{leg.rec}", headers=owner.auth)).json()
        audio = await stored_audio(client, leg.rec)
        downloaded = await client.get(f"/v1/recordings/{leg.rec}/audio", headers=owner.auth)
        await downloaded.read()
        left_in_spool = await second[SPOOL].parts()
    statuses = await statuses_logged(pool)

    assert ended["status"] == "stopped"  # not completed: its final chunk is not on disk
    assert answer["status"] == "interrupted"
    [gap] = [g for g in answer["gaps"] if g["reason"] == "storage-full"]
    lost_from = gap["at_ms"] * BYTES_PER_MS
    assert len(audio) == lost_from >= sealed
    assert audio == expected("inbound", leg.sent)[:lost_from]  # byte for byte up to the loss
    assert downloaded.status == 200
    assert left_in_spool == []
    assert 500 not in statuses


async def test_an_append_the_full_disk_refuses_leaves_no_byte_behind(small_disk: Path) -> None:
    """S7: a part file ends where its last whole record does, or a later record would land
    after the torn one; a part the refused append created is not left empty in the spool."""
    spool = Spool(small_disk / "spool")
    kept, fresh = Part("rec_kept", 0), Part("rec_fresh", 0)
    try:
        [first] = await spool.append_many([(kept, b"x" * 1000)])
        ballast = await asyncio.to_thread(fill, small_disk)

        refused = await spool.append_many([(kept, b"y" * 100_000), (fresh, b"z" * 100_000)])
        parts = await spool.parts()
        bytes_kept = await spool.read(kept)
        await asyncio.to_thread(ballast.unlink)
        [after] = await spool.append_many([(kept, b"w" * 10)])
    finally:
        spool.close()

    assert first == 0
    assert [getattr(r, "errno", None) for r in refused] == [errno.ENOSPC, errno.ENOSPC]
    assert [(p.part, p.size_bytes) for p in parts] == [(kept, 1000)]
    assert bytes_kept == b"x" * 1000
    assert after == 1000  # the next record follows the last whole one
