"""Real PostgreSQL for every test: a throwaway cluster (or TELEPHONY_TEST_DATABASE_URL),
one fresh database with the production migrations, clean tables per test."""

from __future__ import annotations

import base64
import os
import secrets
import shutil
import tempfile
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from aiohttp.test_utils import TestClient, TestServer
from blockbuster import BlockBuster, blockbuster_ctx

from storage.db import create_pool, ensure_database, with_database
from storage.migrate import apply_pending
from storage.pgcluster import LocalCluster
from telephony.delivery.maildrop import MailDrop
from telephony.settings import Argon2Params, Settings
from telephony.web.app import create_app
from telephony.web.server import ServiceRunner
from tests.support.mail import MAILBOX

# The S3-protocol server (moto) for the blob store's tests, started only when one asks.
pytest_plugins = ["tests.support.s3", "tests.support.hangs"]

# Cheap Argon2 for speed; test_passwords.py checks the production defaults separately.
FAST_ARGON2 = Argon2Params(memory_kib=8192, iterations=1, lanes=1)
PASSWORD = "correct horse battery staple"


@pytest.fixture(scope="session")
def server_dsn() -> Iterator[str]:
    """A PostgreSQL server for the whole run; ours, unless one is given."""
    given = os.environ.get("TELEPHONY_TEST_DATABASE_URL")
    if given:
        yield given
        return
    root = Path(tempfile.mkdtemp(prefix="telephony-test-pg-"))
    cluster = LocalCluster(root)
    cluster.ensure_running()
    try:
        yield cluster.dsn("postgres")
    finally:
        cluster.stop()
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="session")
async def database_url(server_dsn: str) -> str:
    url = with_database(server_dsn, f"test_{secrets.token_hex(6)}")
    await ensure_database(url)
    conn = await asyncpg.connect(url)
    try:
        await apply_pending(conn)
    finally:
        await conn.close()
    return url


@pytest.fixture(scope="session")
async def pool(database_url: str) -> AsyncIterator[asyncpg.Pool]:
    p = await create_pool(database_url, max_size=5)
    yield p
    await p.close()


# Sequences that have handed out a value since they were last restarted.
MOVED_SEQUENCES = """
    SELECT quote_ident(sequencename) AS s FROM pg_sequences
    WHERE schemaname = 'public' AND last_value IS NOT NULL
"""


@pytest.fixture(autouse=True)
async def clean_tables(request: pytest.FixtureRequest) -> None:
    """Each test starts from empty tables (the schema stays)."""
    if "pool" not in request.fixturenames and "client" not in request.fixturenames:
        return
    pool: asyncpg.Pool = request.getfixturevalue("pool")
    async with pool.acquire() as conn:
        tables = [
            r["t"]
            for r in await conn.fetch(
                """SELECT quote_ident(tablename) AS t FROM pg_tables
                   WHERE schemaname = 'public' AND tablename <> 'schema_migrations'"""
            )
        ]
        if not tables:
            return
        if not await conn.fetchval("SELECT rolsuper FROM pg_roles WHERE rolname = current_user"):
            names = ", ".join(tables)
            await conn.execute(f"TRUNCATE {names} RESTART IDENTITY CASCADE")
            return
        # Our own cluster: DELETE what the last test left, with triggers off for this
        # session (foreign keys and the append-only rules are triggers), and restart the
        # identity sequences that moved. TRUNCATE does the same at about 5 ms a table,
        # rows or none, and cascades to nearly all 26: 0.14 s a test, a tenth of the suite.
        async with conn.transaction():
            await conn.execute("SET LOCAL session_replication_role = replica")
            deletes = "; ".join(f"DELETE FROM {t}" for t in tables)  # noqa: S608 - quote_ident names
            await conn.execute(deletes)
            for row in await conn.fetch(MOVED_SEQUENCES):
                await conn.execute(f"ALTER SEQUENCE {row['s']} RESTART")


@pytest.fixture
async def mailbox() -> AsyncIterator[MailDrop]:
    """A real SMTP server on 127.0.0.1 (aiosmtpd) receiving what the service mails."""
    drop = await MailDrop().start()
    yield drop
    await drop.close()


@pytest.fixture
def settings(database_url: str, tmp_path: Path, mailbox: MailDrop) -> Settings:
    return Settings(
        smtp_url=mailbox.url,
        database_url=database_url,
        data_dir=tmp_path,
        argon2=FAST_ARGON2,
        access_log_to_db=False,
        master_key=base64.b64encode(secrets.token_bytes(32)).decode(),
        node_id="test-node",
        sip_listen=("127.0.0.1", 0),  # each app its own SIP port: the media block names it
    )


@pytest.fixture(autouse=True)
def blocking_guard() -> Iterator[BlockBuster]:
    """Fail any test that makes a blocking call on the event loop, in its body or in its
    fixtures' setup and teardown; BlockBuster looks only where a loop is running, so
    sync tests and sync fixtures are unaffected."""
    with blockbuster_ctx() as bb:
        # asyncpg stats ~/.pgpass when a pool opens a connection: tiny, and not ours.
        for fn in ("os.stat", "os.path.exists", "io.BufferedReader.read"):
            if fn in bb.functions:
                bb.functions[fn].can_block_in("asyncpg/connect_utils.py", "_read_password_file")
        yield bb


class ServiceServer(TestServer):
    """aiohttp's test server, serving with the service's own runner (its parser errors and
    header timeout), so tests meet the server edge production has."""

    async def _make_runner(self, **kwargs: Any) -> ServiceRunner:
        return ServiceRunner(self.app, **kwargs)


@pytest.fixture
async def client(
    settings: Settings, pool: asyncpg.Pool, mailbox: MailDrop
) -> AsyncIterator[TestClient]:
    app = create_app(settings, run_workers=False)
    app[MAILBOX] = mailbox
    async with TestClient(ServiceServer(app)) as c:
        yield c


@dataclass
class Customer:
    account_id: str
    user_id: str
    email: str
    token: str

    @property
    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}


def signup_body(**overrides: Any) -> dict[str, Any]:
    body = {
        "account_name": "Acme Calls",
        "name": "Ada Owner",
        "email": f"owner-{secrets.token_hex(4)}@example.com",
        "password": PASSWORD,
        "postal_address": "ul. Prosta 1, 00-001 Warszawa",
        "vat_number": "PL1234567890",
        "accept_terms": True,
        "age_confirmed": True,
    }
    body.update(overrides)
    return body


async def login(client: TestClient, email: str, password: str = PASSWORD) -> str:
    resp = await client.post("/v1/sessions", json={"email": email, "password": password})
    assert resp.status == 201, await resp.text()
    return (await resp.json())["token"]


async def new_customer(client: TestClient, **overrides: Any) -> Customer:
    body = signup_body(**overrides)
    resp = await client.post("/v1/signup", json=body)
    assert resp.status == 201, await resp.text()
    data = await resp.json()
    token = await login(client, body["email"], body["password"])
    return Customer(data["account"]["id"], data["user"]["id"], body["email"], token)


@pytest.fixture
async def owner(client: TestClient) -> Customer:
    return await new_customer(client)


# -- calls and consent -------------------------------------------------------------

NUMBERS = ["+48221234567", "+48601234567", "+442079460958", "+14155550123", "+4930123456"]


async def new_call(client: TestClient, customer: Customer, counterparts: int = 1) -> dict[str, Any]:
    body = {
        "direction": "outbound",
        "from": "+48221234567",
        "to": NUMBERS[1],
        "counterparts": [
            {"label": f"party {i}", "number": NUMBERS[(i + 1) % len(NUMBERS)]}
            for i in range(counterparts)
        ],
    }
    resp = await client.post("/v1/calls", json=body, headers=customer.auth)
    assert resp.status == 201, await resp.text()
    return await resp.json()


async def decide(
    client: TestClient, customer: Customer, call_id: str, counterpart_id: str, decision: str
) -> dict[str, Any]:
    resp = await client.post(
        f"/v1/calls/{call_id}/consents",
        json={"counterpart_id": counterpart_id, "decision": decision, "method": "verbal"},
        headers=customer.auth,
    )
    assert resp.status == 201, await resp.text()
    return await resp.json()


async def consented_call(client: TestClient, customer: Customer, counterparts: int = 1) -> dict:
    call = await new_call(client, customer, counterparts)
    for party in call["counterparts"]:
        await decide(client, customer, call["id"], party["id"], "granted")
    return call


async def start_recording(client: TestClient, customer: Customer, call_id: str) -> dict[str, Any]:
    resp = await client.post(f"/v1/calls/{call_id}/recordings", json={}, headers=customer.auth)
    assert resp.status == 201, await resp.text()
    return await resp.json()
