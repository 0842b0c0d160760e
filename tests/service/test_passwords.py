"""S1: passwords are stored only as salted Argon2id hashes and never logged."""

from __future__ import annotations

import asyncio
import logging
import re
import secrets
import struct
import subprocess

import asyncpg
import pytest
from aiohttp.test_utils import TestClient

from storage.keys.crypto import hash_password, needs_rehash, verify_password
from storage.keys.passwords import PasswordHasher
from storage.pgcluster import find_bindir
from telephony.domain.errors import Unavailable
from telephony.logs import JsonFormatter
from telephony.media.wav import ulaw_to_linear
from telephony.settings import Argon2Params, Settings
from telephony.web.app import create_app
from tests.conftest import (
    PASSWORD,
    Customer,
    ServiceServer,
    consented_call,
    login,
    signup_body,
    start_recording,
)
from tests.support.media import VOICE, connect, writer_of
from tests.support.recordings import status_is
from tests.support.waiting import eventually


def test_production_defaults_are_rfc9106_argon2id() -> None:
    defaults = Argon2Params()

    phc = hash_password(
        "a long passphrase",
        memory_kib=defaults.memory_kib,
        iterations=defaults.iterations,
        lanes=defaults.lanes,
    )

    assert phc.startswith("$argon2id$v=19$m=65536,t=3,p=4$")
    assert verify_password("a long passphrase", phc)
    assert not verify_password("a long passphrasE", phc)


def test_each_hash_has_its_own_salt() -> None:
    first = hash_password("same password!", memory_kib=8192, iterations=1, lanes=1)
    second = hash_password("same password!", memory_kib=8192, iterations=1, lanes=1)

    assert first != second
    assert first.split("$")[4] != second.split("$")[4]


@pytest.mark.parametrize(
    "stored", ["", "plain", "$argon2id$v=19$m=8,t=1,p=1$AAAA$AAAA", "$2b$12$x"]
)
def test_malformed_stored_hashes_never_verify(stored: str) -> None:
    assert verify_password("anything at all", stored) is False


def test_needs_rehash_when_cost_was_raised() -> None:
    weak = hash_password("a long passphrase", memory_kib=8192, iterations=1, lanes=1)

    assert needs_rehash(weak, memory_kib=65536, iterations=3, lanes=4)
    assert not needs_rehash(weak, memory_kib=8192, iterations=1, lanes=1)


async def test_login_upgrades_a_hash_made_with_a_lower_cost(
    settings: Settings, pool: asyncpg.Pool
) -> None:
    body = signup_body()
    low = create_app(settings, run_workers=False)
    async with TestClient(ServiceServer(low)) as client:
        assert (await client.post("/v1/signup", json=body)).status == 201
    raised = settings.replace(argon2=Argon2Params(memory_kib=16384, iterations=2, lanes=1))

    async with TestClient(ServiceServer(create_app(raised, run_workers=False))) as client:
        resp = await client.post(
            "/v1/sessions", json={"email": body["email"], "password": body["password"]}
        )

    assert resp.status == 201
    async with pool.acquire() as conn:
        stored = await conn.fetchval("SELECT password_hash FROM users")
    assert re.match(r"^\$argon2id\$v=19\$m=16384,t=2,p=1\$", stored)


async def test_password_appears_in_no_log_line_and_no_table(
    client: TestClient, database_url: str, pool: asyncpg.Pool
) -> None:
    """The issue's 'done when': search captured logs and a pg_dump for a unique password."""
    password = f"Unique-{secrets.token_hex(12)}"
    lines: list[str] = []

    class Capture(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            lines.append(self.format(record))

    handler = Capture(level=logging.DEBUG)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    old_level = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    try:
        body = signup_body(password=password)
        assert (await client.post("/v1/signup", json=body)).status == 201
        wrong = await client.post(
            "/v1/sessions", json={"email": body["email"], "password": password + "x"}
        )
        assert wrong.status == 401
        right = await client.post(
            "/v1/sessions", json={"email": body["email"], "password": password}
        )
        assert right.status == 201
        # A validation failure must not echo it either.
        await client.post("/v1/signup", json=signup_body(password=password, name=""))
    finally:
        root.removeHandler(handler)
        root.setLevel(old_level)

    def pg_dump() -> subprocess.CompletedProcess[str]:
        command = [str(find_bindir() / "pg_dump"), "--data-only", "--dbname", database_url]
        return subprocess.run(command, check=True, capture_output=True, text=True)

    dump = await asyncio.to_thread(pg_dump)
    assert lines, "the requests should have logged something"
    assert not [line for line in lines if password in line]
    assert password not in dump.stdout
    assert body["email"] in dump.stdout  # the dump does hold the data
    async with pool.acquire() as conn:
        stored = await conn.fetchval("SELECT password_hash FROM users")
    assert stored.startswith("$argon2id$") and stored in dump.stdout


async def test_a_login_storm_with_production_argon2_completes_and_recording_goes_on(
    settings: Settings, pool: asyncpg.Pool
) -> None:
    """Issue 10: with lanes=4, two derivations at once used to hang the process for good.

    Production parameters (RFC 9106: 64 MiB, t=3, p=4) and production pool
    sizes. 16 logins and 4 signups at once, while a live recording streams:
    all complete, the recording lost nothing, then a download and one more
    login work.
    """
    production = settings.replace(argon2=Argon2Params())
    assert production.argon2 == Argon2Params(memory_kib=65536, iterations=3, lanes=4)
    app = create_app(production, run_workers=False)
    async with TestClient(ServiceServer(app)) as client:
        users = [signup_body() for _ in range(4)]
        for body in users:
            assert (await client.post("/v1/signup", json=body)).status == 201
        owner = Customer("", "", users[0]["email"], await login(client, users[0]["email"]))
        call = await consented_call(client, owner)
        peer = await connect(client, call)
        await peer.start(tracks=("inbound",))
        rec = await start_recording(client, owner, call["id"])
        await eventually(lambda: writer_of(client, call["id"]) is not None)

        streaming = asyncio.create_task(peer.paced(VOICE, frames=100, interval_s=0.02))
        storm = [
            client.post("/v1/sessions", json={"email": b["email"], "password": PASSWORD})
            for b in users
            for _ in range(4)
        ] + [client.post("/v1/signup", json=signup_body()) for _ in range(4)]
        answers = await asyncio.gather(*storm)
        await streaming

        assert sorted(r.status for r in answers) == [201] * 20
        await peer.stop()
        await eventually(lambda: status_is(pool, rec["id"], "completed"), timeout_s=10)
        download = await client.get(f"/v1/recordings/{rec['id']}/audio", headers=owner.auth)
        wav = await download.read()
        after = await client.post(
            "/v1/sessions", json={"email": users[1]["email"], "password": PASSWORD}
        )
    assert download.status == 200
    inbound_only = b"".join(struct.pack("<hh", ulaw_to_linear(c), 0) for c in VOICE)
    assert wav[44:] == inbound_only * 100  # every frame, in order
    assert after.status == 201


async def test_a_storm_beyond_the_queue_bound_is_refused_at_once_not_queued() -> None:
    """Each derivation holds its memory cost: the queue is bounded, and the rest get a 503."""
    hasher = PasswordHasher(Argon2Params(memory_kib=8192, iterations=1, lanes=1), max_waiting=2)
    try:
        queued = [asyncio.ensure_future(hasher.hash("a long passphrase")) for _ in range(2)]
        await eventually(lambda: hasher.waiting == 2, interval_s=0)  # both are in the queue
        with pytest.raises(Unavailable) as refused:
            await hasher.hash("one too many")
        hashes = await asyncio.gather(*queued)
    finally:
        hasher.close()

    assert refused.value.retry_after_s == 5
    assert all(h.startswith("$argon2id$") for h in hashes)
    assert hasher.waiting == 0
