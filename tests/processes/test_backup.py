"""The restore drill (S8), with real processes: `telephony serve` on the embedded cluster,
`telephony backup run | list | restore` as an operator types them, and the restored data
directory served by a second `telephony serve`.

A restore never brings a deletion back: the deleted recording stays 404 whether its
deletion was replayed from the archived WAL (the drill) or re-applied from the journal
because the restore stops before it (the point-in-time test).
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import secrets
import shutil
import tempfile
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import pytest

from storage.blobs.s3 import S3BlobStore, S3Location, parse_s3_url
from storage.db import ensure_database, with_database
from storage.pgcluster import LocalCluster
from tests.conftest import PASSWORD, signup_body
from tests.support.cli import FAST, run
from tests.support.media import JsonPeer
from tests.support.pacing import ticks
from tests.support.s3 import CREDENTIALS, S3Server
from tests.support.servers import Server, free_port
from tests.support.waiting import eventually

FRAMES = 150  # per track: 3 s, so a recording has several chunks

pytestmark = pytest.mark.timeout(420)


def frame(i: int, salt: int) -> bytes:
    return bytes((i * 7 + j + salt) % 251 for j in range(160))


@dataclass
class Api:
    http: aiohttp.ClientSession
    base: str
    token: str = ""

    async def call(self, method: str, path: str, body: Any = None, expect: int = 200) -> Any:
        headers = {"Authorization": f"Bearer {self.token}"} if self.token else {}
        async with self.http.request(method, self.base + path, json=body, headers=headers) as r:
            text = await r.text()
            assert r.status == expect, f"{method} {path}: {r.status} {text[:300]}"
            return json.loads(text) if text and r.content_type == "application/json" else None

    async def audio(self, recording_id: str) -> tuple[int, bytes]:
        headers = {"Authorization": f"Bearer {self.token}"}
        async with self.http.get(
            f"{self.base}/v1/recordings/{recording_id}/audio", headers=headers
        ) as resp:
            return resp.status, await resp.read()


async def sign_up(http: aiohttp.ClientSession, base: str) -> tuple[Api, str]:
    """A new customer account, signed in; and its e-mail."""
    body = signup_body()
    await Api(http, base).call("POST", "/v1/signup", body, 201)
    return await sign_in(http, base, body["email"]), body["email"]


async def sign_in(http: aiohttp.ClientSession, base: str, email: str) -> Api:
    session = await Api(http, base).call(
        "POST", "/v1/sessions", {"email": email, "password": PASSWORD}, 201
    )
    return Api(http, base, session["token"])


async def record(api: Api, salt: int) -> str:
    """A completed two-track recording streamed over the Twilio dialect; its id."""
    call = await api.call(
        "POST",
        "/v1/calls",
        {
            "direction": "inbound",
            "from": "+48601234567",
            "to": "+48221234567",
            "counterparts": [{"label": "caller", "number": "+48601234567"}],
        },
        201,
    )
    await api.call(
        "POST",
        f"/v1/calls/{call['id']}/consents",
        {"counterpart_id": call["counterparts"][0]["id"], "decision": "granted",
         "method": "announcement"},
        201,
    )  # fmt: skip
    ws_base = api.base.replace("http", "ws", 1)
    ws = await api.http.ws_connect(f"{ws_base}/v1/media/twilio?token={call['media']['token']}")
    peer = JsonPeer(ws, "twilio")
    await peer.start(("inbound", "outbound"))
    rec = await api.call("POST", f"/v1/calls/{call['id']}/recordings", {}, 201)
    # Bursts of 50 frames every 20 ms: faster than real time, under the queue bound.
    async for burst in ticks(FRAMES // 50, 0.02):
        for i in range(burst * 50, burst * 50 + 50):
            await peer.media(frame(i, salt), "inbound")
            await peer.media(frame(i, salt + 101), "outbound")
    await peer.stop()

    async def completed() -> bool:
        got = await api.call("GET", f"/v1/recordings/{rec['id']}")
        return bool(got["status"] == "completed")

    await eventually(completed, timeout_s=30, interval_s=0.1)
    return str(rec["id"])


def environment(tmp_path: Path, data_dir: Path, **extra: str) -> dict[str, str]:
    """The embedded default: no TELEPHONY_DATABASE_URL, so each data dir has its cluster."""
    return {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(tmp_path),
        "LANG": "C.UTF-8",
        "TELEPHONY_DATA_DIR": str(data_dir),
        **FAST,
        **extra,
    }


async def telephony(args: list[str], env: dict[str, str], timeout_s: float = 240) -> Any:
    """Run a command; its JSON lines, after checking it succeeded."""
    done = await asyncio.to_thread(run, args, env, "", timeout_s)
    assert done.returncode == 0, f"{args}: {done.stderr[-3000:]}"
    return [json.loads(line) for line in done.stdout.splitlines() if line.strip()]


@pytest.fixture
def tmp_path() -> Iterator[Path]:
    """The data directories live outside pytest's temporary root: a pytest run that starts
    meanwhile makes that root 0700 again, and the clusters' user could not reach them."""
    folder = Path(tempfile.mkdtemp(prefix="telephony-backup-test-"))
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture
async def servers(tmp_path: Path) -> AsyncIterator[list[Server]]:
    """Servers a test starts; each stopped at the end (its cluster with it)."""
    made: list[Server] = []
    yield made
    for server in made:
        await server.stop()


def serve(made: list[Server], env: dict[str, str], log: Path) -> Server:
    server = Server(free_port(), f"node-{len(made)}", env, log)
    made.append(server)
    return server


async def metric(http: aiohttp.ClientSession, base: str, name: str) -> float | None:
    async with http.get(f"{base}/metrics") as resp:
        text = await resp.text()
    found = [line for line in text.splitlines() if line.startswith(name + " ")]
    return float(found[0].split()[1]) if found else None


# -- the drill ----------------------------------------------------------------------


async def test_restore_drill_serves_what_was_kept_and_not_what_was_deleted(
    tmp_path: Path, servers: list[Server]
) -> None:
    await drill(tmp_path, servers, "file")


async def test_restore_drill_on_the_object_store_keeps_backups_under_backups(
    tmp_path: Path, servers: list[Server], s3_server: S3Server
) -> None:
    await drill(tmp_path, servers, "s3", await s3_server.new_bucket())  # s3://…/blobs?…


async def drill(tmp_path: Path, servers: list[Server], store: str, bucket_url: str = "") -> None:
    """Record two calls, back up, delete one, record a third; restore to a fresh data
    directory and serve it: the first byte-exact, the deleted one 404, the chain verifies."""
    source_dir, restored_dir = tmp_path / "source", tmp_path / "restored"
    extra: dict[str, str] = {}
    if store == "s3":
        key = base64.b64encode(secrets.token_bytes(32)).decode()
        extra = {**CREDENTIALS, "TELEPHONY_BLOB_URL": bucket_url, "TELEPHONY_MASTER_KEY": key}
    env = environment(tmp_path, source_dir, **extra)
    source = serve(servers, env, tmp_path / "source.log")
    await source.start()
    async with aiohttp.ClientSession() as http:
        # `serve` backs up at its first start (then daily), and /metrics says how long ago.
        await eventually(
            lambda: metric(http, source.url, "backup_last_success_age_seconds"),
            timeout_s=60,
            interval_s=0.5,
        )
        api, _ = await sign_up(http, source.url)
        first, second = await record(api, 1), await record(api, 2)
        first_audio = await api.audio(first)

        [made] = await telephony(["backup", "run"], env)
        await api.call("DELETE", f"/v1/recordings/{second}", expect=204)
        third = await record(api, 3)
        third_audio = await api.audio(third)
        listed = await telephony(["backup", "list"], env)
        [restored] = await telephony(["backup", "restore", "--to", str(restored_dir)], env)

        target = serve(servers, environment(tmp_path, restored_dir, **extra), tmp_path / "r.log")
        await target.start()
        again = Api(http, target.url, api.token)  # its session was backed up too
        first_again, second_again, third_again = (
            await again.audio(first),
            await again.audio(second),
            await again.audio(third),
        )
        verified = await telephony(["audit", "verify"], target.env)

    assert first_audio[0] == 200 and third_audio[0] == 200
    assert first_again == first_audio  # byte-exact
    assert second_again[0] == 404
    assert third_again == third_audio  # recorded after the backup: replayed from the WAL
    assert verified[-1]["verified"] is True
    assert made["blobs"] >= 2 and made["point_in_time"] is True
    assert listed[0]["id"] == made["id"] and len(listed) >= 2  # serve's and ours
    assert {"started_at", "finished_at", "database_bytes", "blob_bytes"} <= set(listed[0])
    assert restored["backup"] == made["id"] and restored["recordings_without_audio"] == 0
    if store == "file":
        assert restored["master_key_copied"] is True  # the development key went along
        parts = await asyncio.to_thread(
            lambda: {p.parent.name for p in (restored_dir / "blobs").rglob("audio-*")}
        )
        assert parts == {first, third}
    else:
        assert restored["master_key_copied"] is False  # TELEPHONY_MASTER_KEY is set again
        keys = await bucket_keys(bucket_url)
        for folder in ("base", "wal", "blobs/recordings", "journal"):
            assert any(k.startswith(f"blobs/backups/{folder}/") for k in keys), folder
        assert not await asyncio.to_thread((source_dir / "backups").exists)


async def bucket_keys(blob_url: str) -> list[str]:
    """Every key under the blob store's prefix, read from the bucket itself."""
    at = parse_s3_url(blob_url)
    store = await S3BlobStore.open(S3Location(at.bucket, "", at.endpoint_url, at.region))
    try:
        return [info.key for info in await store.list("blobs")]
    finally:
        await store.close()


# -- point in time ------------------------------------------------------------------


async def test_a_point_in_time_restore_stops_at_the_time_and_keeps_later_deletions(
    tmp_path: Path, servers: list[Server]
) -> None:
    source_dir, restored_dir = tmp_path / "source", tmp_path / "restored"
    env = environment(tmp_path, source_dir)
    source = serve(servers, env, tmp_path / "source.log")
    await source.start()
    async with aiohttp.ClientSession() as http:
        api, _ = await sign_up(http, source.url)
        kept = await record(api, 5)
        await telephony(["backup", "run"], env)
        _, before_email = await sign_up(http, source.url)
        moment = datetime.now(UTC)
        await eventually(lambda: datetime.now(UTC) > moment + timedelta(milliseconds=50))
        await api.call("DELETE", f"/v1/recordings/{kept}", expect=204)  # after the moment
        _, after_email = await sign_up(http, source.url)
        [restored] = await telephony(
            ["backup", "restore", "--to", str(restored_dir), "--at", moment.isoformat()], env
        )

        target = serve(servers, environment(tmp_path, restored_dir), tmp_path / "r.log")
        await target.start()
        again = Api(http, target.url, api.token)
        deleted = await again.audio(kept)
        await sign_in(http, target.url, before_email)  # 201: the account made before is there
        await Api(http, target.url).call(  # the account made after the moment is not
            "POST", "/v1/sessions", {"email": after_email, "password": PASSWORD}, 401
        )
        trail = await again.call("GET", "/v1/audit?limit=200")
        verified = await telephony(["audit", "verify"], target.env)

    assert deleted[0] == 404  # its deletion came after the moment: the journal re-applied it
    assert restored["journal_applied"] == 1
    assert datetime.fromisoformat(restored["recovered_to"]) <= moment
    [entry] = [e for e in trail["items"] if e["action"] == "recording.deleted"]
    assert entry["actor"]["id"] == "restore"
    assert verified[-1]["verified"] is True


# -- bad input ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["--at", "yesterday"], "is not a time"),
        (["--at", "2026-01-01T00:00:00"], "has no time zone"),
        (["--at", "2999-01-01T00:00:00Z"], "in the future"),
        (["--blob-url", "ftp://somewhere"], "--blob-url"),
        ([], "there is no backup"),
    ],
)
async def test_restore_refuses_bad_input_in_words(
    tmp_path: Path, args: list[str], says: str
) -> None:
    env = environment(tmp_path, tmp_path / "data")

    done = await asyncio.to_thread(
        run, ["backup", "restore", "--to", str(tmp_path / "new"), *args], env
    )

    assert done.returncode == 1, done.stdout
    assert says in done.stderr and "Traceback" not in done.stderr, done.stderr
    assert not await asyncio.to_thread((tmp_path / "new").exists)


async def test_restore_into_a_folder_that_holds_something_is_refused(tmp_path: Path) -> None:
    env = environment(tmp_path, tmp_path / "data")
    occupied = tmp_path / "occupied"
    await asyncio.to_thread(occupied.mkdir)
    await asyncio.to_thread((occupied / "keep.txt").write_text, "mine")

    done = await asyncio.to_thread(run, ["backup", "restore", "--to", str(occupied)], env)

    assert done.returncode == 1
    assert "not an empty folder" in done.stderr and "Traceback" not in done.stderr
    assert await asyncio.to_thread((occupied / "keep.txt").read_text) == "mine"


# -- an external database ----------------------------------------------------------


async def test_an_external_database_is_backed_up_whole_and_restored_to_its_end(
    tmp_path: Path,
) -> None:
    external = LocalCluster(tmp_path / "external")  # stands for the operator's server
    await asyncio.to_thread(external.ensure_running)
    try:
        url = with_database(await asyncio.to_thread(external.dsn, "postgres"), "calls")
        await ensure_database(url)
        env = environment(tmp_path, tmp_path / "data", TELEPHONY_DATABASE_URL=url)
        await telephony(["migrate"], env)

        [made] = await telephony(["backup", "run"], env)
        at = datetime.now(UTC).isoformat()
        refused = await asyncio.to_thread(
            run, ["backup", "restore", "--to", str(tmp_path / "r1"), "--at", at], env
        )
        [restored] = await telephony(["backup", "restore", "--to", str(tmp_path / "r2")], env)
    finally:
        await asyncio.to_thread(external.stop)
    served = LocalCluster(tmp_path / "r2" / "postgres")  # what `serve` would start there
    await asyncio.to_thread(served.ensure_running)
    try:
        conn = await asyncpg.connect(await asyncio.to_thread(served.dsn))
        try:
            migrations = await conn.fetchval("SELECT count(*) FROM schema_migrations")
        finally:
            await conn.close()
    finally:
        await asyncio.to_thread(served.stop)

    assert (made["method"], made["point_in_time"]) == ("stream", False)
    assert refused.returncode == 1 and "not to a point in time" in refused.stderr
    assert restored["backup"] == made["id"]
    assert migrations >= 12  # the database `calls` is the embedded `telephony` now


# -- data regions --------------------------------------------------------------------


async def test_each_regions_recordings_are_copied_within_that_region(
    tmp_path: Path, servers: list[Server], s3_server: S3Server
) -> None:
    eu, us = await s3_server.new_bucket(), await s3_server.new_bucket()
    key = base64.b64encode(secrets.token_bytes(32)).decode()
    regions = json.dumps({"eu-central": {"blob_url": eu}, "us-east": {"blob_url": us}})
    extra = {**CREDENTIALS, "TELEPHONY_REGIONS": regions, "TELEPHONY_MASTER_KEY": key}
    env = environment(tmp_path, tmp_path / "source", **extra)
    source = serve(servers, env, tmp_path / "source.log")
    await source.start()
    async with aiohttp.ClientSession() as http:
        european, _ = await sign_up(http, source.url)
        american, _ = await sign_up(http, source.url)
        await american.call("PATCH", "/v1/account", {"data_region": "us-east"})
        in_eu, in_us = await record(european, 7), await record(american, 8)
        eu_audio, us_audio = await european.audio(in_eu), await american.audio(in_us)
        await telephony(["backup", "run"], env)
        await drop_live_objects(us, in_us)  # the American bucket loses the recording
        [restored] = await telephony(["backup", "restore", "--to", str(tmp_path / "r")], env)

        target = serve(servers, environment(tmp_path, tmp_path / "r", **extra), tmp_path / "r.log")
        await target.start()
        eu_again = await Api(http, target.url, european.token).audio(in_eu)
        us_again = await Api(http, target.url, american.token).audio(in_us)

    eu_keys, us_keys = await bucket_keys(eu), await bucket_keys(us)
    assert any(k.startswith(f"blobs/backups/blobs/recordings/{in_eu}/") for k in eu_keys)
    assert any(k.startswith(f"blobs/backups/blobs/recordings/{in_us}/") for k in us_keys)
    assert not any(in_us in k for k in eu_keys)  # no copy leaves its region
    assert not any(in_eu in k for k in us_keys)
    assert restored["blobs_copied"] >= 1  # put back from the American bucket's copies
    assert eu_again == eu_audio and us_again == us_audio


async def drop_live_objects(blob_url: str, recording_id: str) -> None:
    store = await S3BlobStore.open(parse_s3_url(blob_url))
    try:
        assert await store.delete_prefix(f"recordings/{recording_id}") >= 1
    finally:
        await store.close()
