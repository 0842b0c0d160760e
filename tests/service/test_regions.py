"""Data residency (issue 12, part 2): TELEPHONY_REGIONS names a blob store per region, and
each recording's audio lives only in the store of its account's region when it started.

Two regions, two buckets on a real S3-protocol server (moto on 127.0.0.1); recordings
streamed over the real WebSocket dialects, downloaded byte for byte, deleted object by
object. One database serves every region.
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import shutil
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from aiohttp.test_utils import TestClient
from blockbuster import BlockBuster

from storage.blobs.names import audio_part, recording_prefix, whole_audio
from storage.blobs.protocol import BlobInfo, BlobRange
from storage.blobs.regions import RegionalBlobStore, RegionStore
from storage.blobs.s3 import S3BlobStore, parse_s3_url
from storage.db import ensure_database, with_database
from storage.migrate import MIGRATIONS_DIR, apply_pending
from telephony.domain.errors import NotFound, Unavailable
from telephony.settings import Region, Settings, SettingsError
from telephony.usecases import audit_trail, compaction
from telephony.web.app import create_app
from telephony.web.appkeys import BLOBS
from tests.conftest import PASSWORD, Customer, ServiceServer, new_customer
from tests.support import cli
from tests.support.mail import MAILBOX
from tests.support.portal import sign_in, submit
from tests.support.recordings import download, expected, record, stored_audio
from tests.support.s3 import S3Server

EU, US = "eu-central", "us-east"
FRAMES = 250  # 5 s of one track: with parts every 50 ms, many objects per recording


@dataclass
class Regions:
    client: TestClient
    urls: dict[str, str]  # region → blob URL
    buckets: dict[str, S3BlobStore]  # region → a client of its own on that bucket

    async def objects(self, region: str, recording_id: str) -> list[BlobInfo]:
        return await self.buckets[region].list(recording_prefix(recording_id))


@pytest.fixture
async def regions(
    settings: Settings, pool: asyncpg.Pool, s3_server: S3Server, mailbox: object
) -> AsyncIterator[Regions]:
    urls = {EU: await s3_server.new_bucket("telephony"), US: await s3_server.new_bucket("media")}
    buckets = {name: await S3BlobStore.open(parse_s3_url(url)) for name, url in urls.items()}
    regional = settings.replace(
        regions=tuple(Region(name, url) for name, url in urls.items()),
        data_region=EU,
        blob_url=urls[EU],
        spool_part_s=0.05,
    )
    app = create_app(regional, run_workers=False)
    app[MAILBOX] = mailbox  # type: ignore[assignment]
    try:
        async with TestClient(ServiceServer(app)) as client:
            yield Regions(client, urls, buckets)
    finally:
        for bucket in buckets.values():
            await bucket.close()


@pytest.fixture
async def folders(
    settings: Settings, pool: asyncpg.Pool, tmp_path: Path, mailbox: object
) -> AsyncIterator[TestClient]:
    """Two regions on two folders: for what needs no object store."""
    regional = settings.replace(
        regions=(
            Region(EU, (tmp_path / "eu-blobs").as_uri()),
            Region(US, (tmp_path / "us-blobs").as_uri()),
        ),
        data_region=EU,
    )
    app = create_app(regional, run_workers=False)
    app[MAILBOX] = mailbox  # type: ignore[assignment]
    async with TestClient(ServiceServer(app)) as client:
        yield client


async def move(client: TestClient, owner: Customer, region: str) -> dict[str, Any]:
    resp = await client.patch("/v1/account", json={"data_region": region}, headers=owner.auth)
    assert resp.status == 200, await resp.text()
    account: dict[str, Any] = await resp.json()
    return account


async def mono(client: TestClient, owner: Customer, pool: asyncpg.Pool) -> str:
    return await record(client, owner, pool, channels="mono", tracks=("inbound",), frames=FRAMES)


async def assert_downloads_whole(client: TestClient, owner: Customer, recording_id: str) -> None:
    sent = expected("inbound", FRAMES)
    resp = await download(client, owner, recording_id, "?encoding=mulaw")
    assert resp.status == 200
    body = await resp.read()
    assert body[-len(sent) :] == sent  # the WAV's data is what the engine sent, byte for byte
    assert await stored_audio(client, recording_id) == sent


async def test_each_accounts_recordings_land_only_in_its_regions_bucket(
    regions: Regions, pool: asyncpg.Pool
) -> None:
    client = regions.client
    eu_owner = await new_customer(client)
    us_owner = await new_customer(client)
    assert (await move(client, us_owner, US))["data_region"] == US

    eu_rec = await mono(client, eu_owner, pool)
    us_rec = await mono(client, us_owner, pool)

    assert len(await regions.objects(EU, eu_rec)) >= 2
    assert await regions.objects(US, eu_rec) == []
    assert len(await regions.objects(US, us_rec)) >= 2
    assert await regions.objects(EU, us_rec) == []
    await assert_downloads_whole(client, eu_owner, eu_rec)
    await assert_downloads_whole(client, us_owner, us_rec)
    async with pool.acquire() as conn:
        kept = dict(await conn.fetch("SELECT id, blob_region FROM recordings"))
    assert kept == {eu_rec: EU, us_rec: US}


async def test_a_new_region_moves_only_new_recordings_and_deletion_finds_each_bucket(
    regions: Regions, pool: asyncpg.Pool
) -> None:
    client = regions.client
    owner = await new_customer(client)
    before = await mono(client, owner, pool)

    account = await move(client, owner, US)
    after = await mono(client, owner, pool)

    assert account["data_region"] == US
    assert len(await regions.objects(EU, before)) >= 2
    assert await regions.objects(US, before) == []
    assert len(await regions.objects(US, after)) >= 2
    assert await regions.objects(EU, after) == []
    await assert_downloads_whole(client, owner, before)  # still from the old bucket
    await assert_downloads_whole(client, owner, after)

    # A process that starts afresh (no cached regions) finds the old one where it is.
    store = client.app[BLOBS]
    assert isinstance(store, RegionalBlobStore)
    store._cache.clear()
    await assert_downloads_whole(client, owner, before)

    gone = await client.delete(f"/v1/recordings/{before}", headers=owner.auth)

    assert gone.status == 204
    assert await regions.objects(EU, before) == []
    assert len(await regions.objects(US, after)) >= 2  # the other region's is untouched
    assert (await download(client, owner, before)).status == 404
    gone = await client.delete(f"/v1/recordings/{after}", headers=owner.auth)
    assert gone.status == 204
    assert await regions.objects(US, after) == []


async def test_compaction_writes_each_whole_in_its_recordings_bucket(
    regions: Regions, pool: asyncpg.Pool
) -> None:
    client = regions.client
    eu_owner = await new_customer(client)
    us_owner = await new_customer(client)
    await move(client, us_owner, US)
    eu_rec = await mono(client, eu_owner, pool)
    us_rec = await mono(client, us_owner, pool)

    later = datetime.now(UTC) + timedelta(hours=2)
    await compaction.compaction_pass(pool, client.app[BLOBS], later)
    await compaction.compaction_pass(pool, client.app[BLOBS], later + timedelta(hours=2))

    assert [o.key for o in await regions.objects(EU, eu_rec)] == [whole_audio(eu_rec)]
    assert [o.key for o in await regions.objects(US, us_rec)] == [whole_audio(us_rec)]
    assert await regions.objects(US, eu_rec) == [] and await regions.objects(EU, us_rec) == []
    await assert_downloads_whole(client, eu_owner, eu_rec)
    await assert_downloads_whole(client, us_owner, us_rec)


async def test_a_region_change_is_in_the_audit_trail_and_sent_to_staff(
    regions: Regions, pool: asyncpg.Pool
) -> None:
    client = regions.client
    owner = await new_customer(client)

    await move(client, owner, US)
    await move(client, owner, US)  # the region it has: nothing changes, nothing reported

    trail = await (await client.get("/v1/audit", headers=owner.auth)).json()
    changes = [e for e in trail["items"] if e["action"] == "account.data_region_changed"]
    assert len(changes) == 1
    assert changes[0]["subject"] == {"type": "account", "id": owner.account_id}
    assert changes[0]["details"] == {"from": EU, "to": US, "applies_to": "new recordings"}
    assert changes[0]["actor"]["id"] == owner.user_id
    async with pool.acquire() as conn:
        sent = await conn.fetch(
            "SELECT payload FROM staff_notifications WHERE event = 'account.data_region_changed'"
        )
    assert len(sent) == 1  # S4: staff are told, like every administrative change
    assert sent[0]["payload"]["changes"]["to"] == US
    assert sent[0]["payload"]["account_id"] == owner.account_id
    assert await audit_trail.verify(pool, owner.account_id) == []  # the chain holds


async def test_the_access_copy_names_each_recordings_region_and_store(
    regions: Regions, pool: asyncpg.Pool
) -> None:
    client = regions.client
    owner = await new_customer(client)
    eu_rec = await mono(client, owner, pool)
    await move(client, owner, US)
    us_rec = await mono(client, owner, pool)

    resp = await client.get("/v1/me/export", headers=owner.auth)

    assert resp.status == 200
    export = await resp.json()
    audio = next(r for r in export["resources"] if r["resource"] == "recording_audio")
    where = {a["recording_id"]: (a["region"], a["store"]) for a in audio["personal_data"]}
    eu_bucket = parse_s3_url(regions.urls[EU]).bucket
    us_bucket = parse_s3_url(regions.urls[US]).bucket
    assert where == {
        eu_rec: (EU, f"s3://{eu_bucket}/telephony"),
        us_rec: (US, f"s3://{us_bucket}/media"),
    }
    assert audio["storage_location"]["region"] == US  # where new recordings go
    assert audio["storage_location"]["stores"] == {
        EU: f"s3://{eu_bucket}/telephony",
        US: f"s3://{us_bucket}/media",
    }
    metadata = next(r for r in export["resources"] if r["resource"] == "recordings")
    assert {m["id"]: m["blob_region"] for m in metadata["personal_data"]} == {
        eu_rec: EU,
        us_rec: US,
    }
    assert export["data_region"] == US
    # The database's resources: the one shared database, in the default region.
    account = next(r for r in export["resources"] if r["resource"] == "account")
    assert account["storage_location"] == {"region": EU, "store": "postgresql", "table": "accounts"}
    # The store is named without the endpoint, its parameters or any credential.
    told = json.dumps(audio)
    assert "127.0.0.1" not in told and "endpoint" not in told and "testing" not in told


async def test_metrics_and_readiness_report_each_regions_store(
    regions: Regions, pool: asyncpg.Pool
) -> None:
    client = regions.client
    owner = await new_customer(client)
    await move(client, owner, US)
    await mono(client, owner, pool)

    text = await (await client.get("/metrics")).text()
    ready = await client.get("/readyz")

    assert ready.status == 200
    assert 'object_store_requests_total{op="put",region="us-east"}' in text
    assert 'object_store_requests_total{op="head",region="eu-central"}' in text
    assert 'op="put",region="eu-central"' not in text  # nothing of this account went there


async def test_folder_regions_report_free_space_each(folders: TestClient) -> None:
    text = await (await folders.get("/metrics")).text()

    assert 'storage_free_bytes{store="blob_store_eu-central"}' in text
    assert 'storage_free_bytes{store="blob_store_us-east"}' in text
    assert (await folders.get("/readyz")).status == 200


@pytest.mark.parametrize(
    "value",
    [
        "mars",
        "us-west",
        "",
        "\u0000",
        "eu-central\u0000",
        "EU-CENTRAL",
        " eu-central",
        5,
        True,
        None,
        ["eu-central"],
        {"name": "eu-central"},
        "x" * 10_000,
    ],
)
async def test_a_bad_region_is_422_naming_the_field(folders: TestClient, value: object) -> None:
    owner = await new_customer(folders)

    resp = await folders.patch("/v1/account", json={"data_region": value}, headers=owner.auth)

    assert resp.status == 422, await resp.text()
    assert resp.content_type == "application/problem+json"
    problem = await resp.json()
    assert problem["code"] == "validation-failed"
    assert problem["errors"][0]["field"] == "data_region"
    account = await (await folders.get("/v1/account", headers=owner.auth)).json()
    assert account["data_region"] == EU


async def test_with_one_region_only_that_one_is_accepted(client: TestClient) -> None:
    owner = await new_customer(client)

    same = await client.patch("/v1/account", json={"data_region": EU}, headers=owner.auth)
    other = await client.patch("/v1/account", json={"data_region": US}, headers=owner.auth)

    assert same.status == 200
    assert other.status == 422
    assert "eu-central" in (await other.json())["errors"][0]["message"]


async def test_the_api_document_lists_the_configured_regions(
    folders: TestClient, client: TestClient
) -> None:
    regional = await (await folders.get("/openapi.json")).json()
    single = await (await client.get("/openapi.json")).json()

    for doc, names in ((regional, [EU, US]), (single, [EU])):
        prop = doc["components"]["schemas"]["AccountPatch"]["properties"]["data_region"]
        assert prop == {"type": "string", "enum": names}
    assert "x-choices" not in json.dumps(regional)


async def test_the_portal_offers_the_regions_and_changes_the_account(
    folders: TestClient, pool: asyncpg.Pool
) -> None:
    owner = await new_customer(folders)
    await sign_in(folders, owner.email, PASSWORD)

    page = await (await folders.get("/settings")).text()
    saved = await submit(folders, "/settings", "/settings/account", {"data_region": US})
    refused = await submit(folders, "/settings", "/settings/account", {"data_region": "mars"})

    assert '<select id="f-data_region" name="data_region"' in page
    assert '<option value="us-east">' in page
    assert saved.status == 200, await saved.text()
    assert refused.status == 422
    assert "not a data region" in await refused.text()
    async with pool.acquire() as conn:
        region = await conn.fetchval(
            "SELECT data_region FROM accounts WHERE id = $1", owner.account_id
        )
    assert region == US


async def test_the_portal_with_one_region_shows_it_without_a_choice(client: TestClient) -> None:
    owner = await new_customer(client)
    await sign_in(client, owner.email, PASSWORD)

    page = await (await client.get("/settings")).text()

    assert 'name="data_region"' not in page
    assert "eu-central" in page


# -- the router itself ---------------------------------------------------------------------


class Memory:
    """A blob store in memory, for the router's own rules."""

    def __init__(self) -> None:
        self.blobs: dict[str, bytes] = {}

    async def put(self, key: str, data: bytes) -> None:
        self.blobs[key] = data

    async def read_ranges(self, ranges: Any) -> list[bytes]:
        out = []
        for r in ranges:
            if r.key not in self.blobs:
                raise NotFound("no such blob")
            out.append(self.blobs[r.key][r.offset : r.offset + r.length])
        return out

    async def list(self, prefix: str) -> list[BlobInfo]:
        return sorted(
            (BlobInfo(k, len(v)) for k, v in self.blobs.items() if k.startswith(prefix + "/")),
            key=lambda i: i.key,
        )

    async def delete_prefix(self, prefix: str) -> int:
        gone = [k for k in self.blobs if k.startswith(prefix + "/")]
        for key in gone:
            del self.blobs[key]
        return len(gone)

    async def probe(self) -> int:
        return 1

    async def close(self) -> None:
        pass


async def test_the_router_sends_each_key_to_its_recordings_region_and_looks_once() -> None:
    eu, us = Memory(), Memory()
    store = RegionalBlobStore([RegionStore(EU, eu, "eu"), RegionStore(US, us, "us")], EU)
    where = {"rec_eu": EU, "rec_us": US, "rec_moon": "moon"}
    asked: list[str] = []

    async def region_of(recording_id: str) -> str | None:
        asked.append(recording_id)
        return where.get(recording_id)

    with pytest.raises(Unavailable):  # before the database is bound: never a guess
        await store.put(audio_part("rec_eu", 0), b"x")
    store.bind(region_of)
    await store.put(audio_part("rec_eu", 0), b"eu-audio")
    await store.put(audio_part("rec_us", 0), b"us-audio")
    await store.put("backups/base-1", b"backup")  # no recording's: the default region's
    both = await store.read_ranges(
        [BlobRange(audio_part("rec_us", 0), 0, 2), BlobRange(audio_part("rec_eu", 0), 3, 5)]
    )

    assert both == [b"us", b"audio"]
    assert set(eu.blobs) == {audio_part("rec_eu", 0), "backups/base-1"}
    assert set(us.blobs) == {audio_part("rec_us", 0)}
    assert asked == ["rec_eu", "rec_us"]  # each recording looked up once, then cached
    assert [i.key for i in await store.list("recordings")] == [
        audio_part("rec_eu", 0),
        audio_part("rec_us", 0),
    ]
    with pytest.raises(NotFound):
        await store.put(audio_part("rec_none", 0), b"x")
    with pytest.raises(Unavailable):  # a region with no store here: not written elsewhere
        await store.put(audio_part("rec_moon", 0), b"x")
    assert await store.delete_prefix(recording_prefix("rec_us")) == 1
    assert us.blobs == {} and len(eu.blobs) == 2


# -- configuration -----------------------------------------------------------------------


SECRET_HOST = "secret-host.internal"


@pytest.mark.parametrize(
    ("raw", "says"),
    [
        (f"s3://{SECRET_HOST}/x", "not JSON"),
        ("[]", "JSON object"),
        ("{}", "JSON object"),
        ('"eu-central"', "JSON object"),
        (json.dumps({EU: f"s3://{SECRET_HOST}/x"}), "region eu-central is an object"),
        (json.dumps({"EU Central": {"blob_url": "file:///opt/hidden-folder/a"}}), "region's name"),
        (
            json.dumps({f"s3://{SECRET_HOST}": {"blob_url": "file:///opt/hidden-folder/a"}}),
            "region's name",
        ),
        (json.dumps({EU: {}}), "names no blob_url"),
        (json.dumps({EU: {"blob_url": ""}}), "names no blob_url"),
        (json.dumps({EU: {"blob_url": 7}}), "names no blob_url"),
        (json.dumps({EU: {"blob_url": f"https://{SECRET_HOST}/b"}}), "blob_url"),
        (json.dumps({EU: {"blob_url": f"s3://user:pw@{SECRET_HOST}/b"}}), "no credentials"),
        (json.dumps({EU: {"blob_url": f"s3://b/p?endpoint=ftp://{SECRET_HOST}"}}), "http(s)"),
        (json.dumps({EU: {"blob_url": "file:relative/secret-host.internal"}}), "absolute"),
        (
            json.dumps(
                {
                    EU: {"blob_url": "file:///opt/hidden-folder/x"},
                    US: {"blob_url": "file:///opt/hidden-folder/x/"},
                }
            ),
            "another region's store",
        ),
        (
            json.dumps(
                {
                    EU: {"blob_url": f"s3://b/p?endpoint=http://{SECRET_HOST}"},
                    US: {"blob_url": f"s3://b/p/?endpoint=http://{SECRET_HOST}"},
                }
            ),
            "another region's store",
        ),
        (json.dumps({US: {"blob_url": "file:///opt/hidden-folder/x"}}), "TELEPHONY_DATA_REGION"),
        (
            json.dumps(
                {
                    EU: {
                        "blob_url": "file:///opt/hidden-folder/x",
                        "database_url": f"mysql://{SECRET_HOST}",
                    }
                }
            ),
            "postgresql://",
        ),
        (
            json.dumps({EU: {"blob_url": "file:///opt/hidden-folder/x", "database_url": 5}}),
            "postgresql://",
        ),
        (
            json.dumps({EU: {"blob_url": "file:///opt/hidden-folder/x", "bucket": "b"}}),
            "has bucket",
        ),
        (
            json.dumps({EU: {"blob_url": "file:///opt/hidden-folder/x", SECRET_HOST: 1}}),
            "has a field",
        ),
        (
            '{"eu-central": {"blob_url": "file:///opt/hidden-folder/a"}, "eu-central": {"blob_url": "file:///b"}}',
            "names eu-central twice",
        ),
    ],
)
def test_bad_regions_are_a_clear_start_up_error_that_never_echoes_a_url(
    raw: str, says: str
) -> None:
    with pytest.raises(SettingsError) as refused:
        Settings.from_env({"TELEPHONY_REGIONS": raw})

    message = str(refused.value)
    assert message.startswith("TELEPHONY_REGIONS"), message
    assert says in message, message
    assert SECRET_HOST not in message and "hidden-folder" not in message and "mysql" not in message


def test_regions_and_a_blob_url_together_are_refused() -> None:
    with pytest.raises(SettingsError, match="not both"):
        Settings.from_env(
            {
                "TELEPHONY_REGIONS": json.dumps({EU: {"blob_url": "file:///opt/hidden-folder/eu"}}),
                "TELEPHONY_BLOB_URL": "file:///opt/hidden-folder/other",
            }
        )


def test_regions_are_read_with_the_default_regions_store_as_the_blob_url() -> None:
    settings = Settings.from_env(
        {
            "TELEPHONY_DATA_REGION": US,
            "TELEPHONY_REGIONS": json.dumps(
                {
                    EU: {"blob_url": "s3://eu-bucket/blobs?endpoint=http://127.0.0.1:9"},
                    US: {
                        "blob_url": " file:///opt/hidden-folder/us ",
                        "database_url": "postgresql://db.us.example/telephony",
                    },
                }
            ),
        }
    )

    assert settings.region_names() == (EU, US)
    assert settings.blob_url == "file:///opt/hidden-folder/us"
    assert settings.region_blob_urls() == {
        EU: "s3://eu-bucket/blobs?endpoint=http://127.0.0.1:9",
        US: "file:///opt/hidden-folder/us",
    }
    assert settings.regions[1].database_url == "postgresql://db.us.example/telephony"
    assert "db.us.example" not in repr(settings) and "eu-bucket" not in repr(settings)
    assert Settings.from_env({}).region_names() == (EU,)


async def test_serve_refuses_to_start_on_bad_regions(tmp_path: Path) -> None:
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(tmp_path),
        "LANG": "C.UTF-8",
        "TELEPHONY_DATA_DIR": str(tmp_path / "data"),
        "TELEPHONY_REGIONS": json.dumps({EU: {"blob_url": f"https://{SECRET_HOST}/bucket"}}),
    }

    run = await asyncio.to_thread(cli.run, ["serve"], env, "", 60)

    assert run.returncode == 1
    assert "TELEPHONY_REGIONS: region eu-central: blob_url" in run.stderr
    assert SECRET_HOST not in run.stderr + run.stdout
    assert not await asyncio.to_thread((tmp_path / "data").exists)  # nothing was made


# -- the migration --------------------------------------------------------------------------


def migrations_before(version: int, folder: Path) -> Path:
    """A folder of the production migrations older than `version`."""
    folder.mkdir()
    for path in sorted(MIGRATIONS_DIR.glob("*.sql")):
        if int(path.name[:4]) < version:
            shutil.copy(path, folder / path.name)
    return folder


async def test_the_migration_backfills_each_recording_from_its_account_and_freezes_it(
    server_dsn: str, tmp_path: Path, blocking_guard: BlockBuster
) -> None:
    # Migrating reads its files, as it does once at start-up, before anything is served.
    for function in blocking_guard.functions.values():
        function.can_block_in("storage/migrate.py", {"discover", "apply_pending"})
    name = f"regions_{secrets.token_hex(4)}"
    url = with_database(server_dsn, name)
    await ensure_database(url)
    earlier = await asyncio.to_thread(migrations_before, 13, tmp_path / "migrations")
    conn = await asyncpg.connect(url)
    try:
        await apply_pending(conn, earlier)
        for account, region in (("acc_eu", EU), ("acc_us", US)):
            await conn.execute(
                """INSERT INTO accounts (id, name, postal_address, data_region, terms_accepted_at)
                   VALUES ($1, 'A', 'x', $2, now())""",
                account,
                region,
            )
            await conn.execute(
                """INSERT INTO calls (id, account_id, direction, from_number, to_number, status,
                                      created_at, media_token_hash, media_token_expires_at)
                   VALUES ($1, $2, 'outbound', '+48221234567', '+48601234567', 'ended', now(),
                           $3, now())""",
                f"call_{account}",
                account,
                secrets.token_bytes(32),
            )
            await conn.execute(
                """INSERT INTO recordings (id, call_id, account_id, status, channels,
                                           pause_behavior, started_at, started_by_type,
                                           started_by_id)
                   VALUES ($1, $2, $3, 'completed', 'mono', 'skip', now(), 'user', 'u')""",
                f"rec_{account}",
                f"call_{account}",
                account,
            )

        await apply_pending(conn)

        kept = dict(await conn.fetch("SELECT id, blob_region FROM recordings"))
        assert kept == {"rec_acc_eu": EU, "rec_acc_us": US}
        await conn.execute("UPDATE accounts SET data_region = $1 WHERE id = 'acc_eu'", US)
        await conn.execute(
            """INSERT INTO recordings (id, call_id, account_id, status, channels, pause_behavior,
                                       started_at, started_by_type, started_by_id)
               VALUES ('rec_new', 'call_acc_eu', 'acc_eu', 'completed', 'mono', 'skip', now(),
                       'user', 'u')"""
        )
        assert await conn.fetchval("SELECT blob_region FROM recordings WHERE id = 'rec_new'") == US
        assert (
            await conn.fetchval("SELECT blob_region FROM recordings WHERE id = 'rec_acc_eu'") == EU
        )
        with pytest.raises(asyncpg.CheckViolationError, match="never changes"):
            await conn.execute("UPDATE recordings SET blob_region = $1 WHERE id = 'rec_new'", EU)
    finally:
        await conn.close()
        admin = await asyncpg.connect(with_database(server_dsn, "postgres"))
        try:
            await admin.execute(f"DROP DATABASE {name}")
        finally:
            await admin.close()
