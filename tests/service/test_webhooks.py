"""Customer webhooks (API.md "Webhook deliveries", DESIGN "Delivery").

Every delivery goes to a real aiohttp receiver on 127.0.0.1 that verifies it
with the published `standardwebhooks` library, exactly as a customer would.
Time-dependent behaviour (backoff, the 24 h window) runs on an injected
`now`, never on sleeps.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import itertools
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from standardwebhooks import Webhook, WebhookVerificationError

from storage import webhooks as store
from storage.keys.providers import ServiceKeys
from storage.webhooks import WebhookEvent
from telephony.delivery import ssrf, webhooks
from telephony.delivery.outbox import backoff
from telephony.settings import Settings, master_keys
from telephony.web.app import create_app
from tests.conftest import (
    Customer,
    ServiceServer,
    consented_call,
    new_customer,
    start_recording,
)
from tests.support.waiting import eventually

# -- a real customer endpoint ------------------------------------------------------------


@dataclass(frozen=True)
class Delivery:
    body: bytes
    headers: dict[str, str]
    payload: dict[str, Any]
    at: float  # loop time of arrival


@dataclass
class Receiver:
    """A customer endpoint that verifies each POST with `standardwebhooks` before keeping it."""

    url: str = ""
    secret: str = ""
    statuses: list[int] = field(default_factory=list)  # answered in order, then 200
    hang_s: float = 0.0
    deliveries: list[Delivery] = field(default_factory=list)
    rejected: list[str] = field(default_factory=list)  # verification failures
    release: asyncio.Event = field(default_factory=asyncio.Event)

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        headers = dict(request.headers)
        try:
            payload = Webhook(self.secret).verify(body, headers)
        except WebhookVerificationError as exc:
            self.rejected.append(str(exc))
            return web.Response(status=400)
        self.deliveries.append(Delivery(body, headers, payload, asyncio.get_running_loop().time()))
        if self.hang_s:
            # Hang like a stuck endpoint, but let the fixture end it at teardown.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.release.wait(), self.hang_s)
        return web.Response(status=self.statuses.pop(0) if self.statuses else 200)

    @property
    def types(self) -> list[str]:
        return [d.payload["type"] for d in self.deliveries]


MakeReceiver = Callable[[], Awaitable[Receiver]]


@pytest.fixture
async def receivers() -> AsyncIterator[MakeReceiver]:
    made: list[tuple[Receiver, TestServer]] = []

    async def make() -> Receiver:
        rec = Receiver()
        app = web.Application()
        app.router.add_post("/hooks", rec.handle)
        server = TestServer(app, host="127.0.0.1", port=0)  # a remote receiver
        await server.start_server()
        rec.url = str(server.make_url("/hooks"))
        made.append((rec, server))
        return rec

    yield make
    for rec, server in made:
        rec.release.set()
        await server.close()


@pytest.fixture
async def receiver(receivers: MakeReceiver) -> Receiver:
    return await receivers()


@pytest.fixture
def settings(settings: Settings) -> Settings:
    """The receivers listen on 127.0.0.1, allowed here; the SSRF tests use a strict app."""
    return settings.replace(webhook_allow_private=True, webhook_timeout_s=2.0)


@pytest.fixture
async def strict_client(settings: Settings, pool: asyncpg.Pool) -> AsyncIterator[TestClient]:
    """The production default: webhook targets must be public."""
    app = create_app(settings.replace(webhook_allow_private=False), run_workers=False)
    async with TestClient(ServiceServer(app)) as c:
        yield c


# -- helpers -------------------------------------------------------------------------------


async def create_secret(client: TestClient, customer: Customer) -> str:
    resp = await client.post("/v1/account/webhook-secret", headers=customer.auth)
    assert resp.status == 201, await resp.text()
    return str((await resp.json())["secret"])


async def subscribe(client: TestClient, customer: Customer, rec: Receiver) -> None:
    """Point the account at `rec` and give `rec` the secret, as a customer would."""
    resp = await client.patch("/v1/account", json={"webhook_url": rec.url}, headers=customer.auth)
    assert resp.status == 200, await resp.text()
    rec.secret = await create_secret(client, customer)


async def deliver(pool: asyncpg.Pool, settings: Settings, now: datetime | None = None) -> int:
    async with ssrf.open_session(settings) as http:
        return await webhooks.deliver_due(
            pool, http, settings, ServiceKeys(master_keys(settings)), now
        )


async def events_of(pool: asyncpg.Pool, customer: Customer) -> list[WebhookEvent]:
    """The account's events in creation order."""
    async with pool.acquire() as conn:
        ids = await conn.fetch(
            "SELECT id FROM webhook_events WHERE account_id = $1 ORDER BY seq", customer.account_id
        )
        return [await store.get_event(conn, customer.account_id, r["id"]) for r in ids]


async def enqueue(pool: asyncpg.Pool, customer: Customer, created_at: datetime) -> str:
    async with pool.acquire() as conn:
        event = store.NewEvent(
            customer.account_id, "call.ended", {"call_id": "call_test"}, created_at
        )
        [event_id] = await store.enqueue(conn, [event])
        return event_id


async def recording_events(client: TestClient, customer: Customer) -> None:
    """A consent, then a recording started, paused, resumed and stopped: a run of events."""
    call = await consented_call(client, customer)
    rec = await start_recording(client, customer, call["id"])
    for action in ("pause", "resume", "stop"):
        resp = await client.post(f"/v1/recordings/{rec['id']}/{action}", headers=customer.auth)
        assert resp.status == 200, await resp.text()


# -- the signing secret --------------------------------------------------------------------


async def test_the_secret_is_shown_once_and_rotation_replaces_it(
    client: TestClient, owner: Customer, pool: asyncpg.Pool
) -> None:
    resp = await client.post("/v1/account/webhook-secret", headers=owner.auth)
    first = (await resp.json())["secret"]
    second = await create_secret(client, owner)

    assert resp.status == 201
    assert resp.headers["Cache-Control"] == "no-store"
    assert first.startswith("whsec_")
    assert len(base64.b64decode(first.removeprefix("whsec_"), validate=True)) >= 24
    assert second != first
    account = await (await client.get("/v1/account", headers=owner.auth)).text()
    assert first not in account
    assert second not in account
    trail = await (await client.get("/v1/audit?limit=200", headers=owner.auth)).json()
    actions = [e["action"] for e in trail["items"]]
    assert actions[-2:] == ["webhook_secret.created", "webhook_secret.rotated"]
    async with pool.acquire() as conn:
        notes = await conn.fetch("SELECT event FROM staff_notifications ORDER BY id")
    assert [n["event"] for n in notes][-2:] == ["webhook_secret.created", "webhook_secret.rotated"]


async def test_only_an_owner_may_create_the_secret(client: TestClient, owner: Customer) -> None:
    key = await client.post(
        "/v1/api-keys",
        json={"name": "all", "scopes": ["calls", "recordings:read", "recordings:write"]},
        headers=owner.auth,
    )
    token = (await key.json())["token"]

    resp = await client.post(
        "/v1/account/webhook-secret", headers={"Authorization": f"Bearer {token}"}
    )

    assert resp.status == 403
    assert (await resp.json())["code"] == "forbidden"


async def test_the_secret_never_reaches_the_database_or_the_logs_in_plain_text(
    client: TestClient,
    owner: Customer,
    pool: asyncpg.Pool,
    settings: Settings,
    receiver: Receiver,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    await subscribe(client, owner, receiver)
    await consented_call(client, owner)

    await deliver(pool, settings)

    assert receiver.types == ["consent.recorded"]
    encoded = receiver.secret.removeprefix("whsec_")
    raw_hex = base64.b64decode(encoded).hex()
    async with pool.acquire() as conn:
        tables = await conn.fetch(
            "SELECT quote_ident(tablename) AS t FROM pg_tables WHERE schemaname = 'public'"
        )
        for table in tables:
            query = f"SELECT to_jsonb(x)::text AS j FROM {table['t']} x"  # noqa: S608 (quoted)
            rows = await conn.fetch(query)
            dump = "\n".join(r["j"] for r in rows)
            assert encoded not in dump, table["t"]
            assert raw_hex not in dump, table["t"]
        assert await conn.fetchval("SELECT count(*) FROM webhook_secrets") == 1
    for record in caplog.records:
        text = f"{record.getMessage()} {record.__dict__}"
        assert encoded not in text
        assert raw_hex not in text


# -- delivery --------------------------------------------------------------------------------


async def test_a_delivery_verifies_with_the_standard_webhooks_library(
    client: TestClient, owner: Customer, pool: asyncpg.Pool, settings: Settings, receiver: Receiver
) -> None:
    await subscribe(client, owner, receiver)
    call = await consented_call(client, owner)
    [event] = await events_of(pool, owner)

    delivered = await deliver(pool, settings)

    assert delivered == 1
    assert receiver.rejected == []
    [got] = receiver.deliveries
    assert got.headers["webhook-id"] == event.id
    assert abs(int(got.headers["webhook-timestamp"]) - datetime.now(UTC).timestamp()) < 60
    assert got.headers["webhook-signature"].startswith("v1,")
    assert got.payload == event.payload
    assert set(got.payload) == {"type", "timestamp", "data"}
    assert got.payload["type"] == "consent.recorded"
    assert got.payload["data"]["call_id"] == call["id"]
    shown = await (await client.get(f"/v1/webhook-events/{event.id}", headers=owner.auth)).json()
    assert shown["status"] == "delivered"
    assert shown["attempts"] == 1
    assert shown["delivered_at"] is not None
    assert (shown["next_attempt_at"], shown["last_error"]) == (None, None)


async def test_a_500_is_retried_within_ten_seconds_with_the_same_webhook_id(
    client: TestClient, owner: Customer, pool: asyncpg.Pool, settings: Settings, receiver: Receiver
) -> None:
    await subscribe(client, owner, receiver)
    await consented_call(client, owner)
    receiver.statuses = [500]
    now = datetime.now(UTC)

    first = await deliver(pool, settings, now)
    [failed] = await events_of(pool, owner)
    too_early = await deliver(pool, settings, failed.next_attempt_at - timedelta(milliseconds=1))
    later = await deliver(pool, settings, failed.next_attempt_at)

    assert (first, too_early, later) == (0, 0, 1)
    assert (failed.attempts, failed.last_error, failed.status) == (1, "HTTP 500", "pending")
    assert now < failed.next_attempt_at <= now + timedelta(seconds=10)
    assert receiver.rejected == []
    one, two = receiver.deliveries
    assert one.headers["webhook-id"] == two.headers["webhook-id"] == failed.id
    assert one.body == two.body
    [event] = await events_of(pool, owner)
    assert (event.status, event.attempts, event.last_error) == ("delivered", 2, None)


async def test_a_recordings_events_arrive_in_creation_order_when_the_first_needed_a_retry(
    client: TestClient, owner: Customer, pool: asyncpg.Pool, settings: Settings, receiver: Receiver
) -> None:
    await subscribe(client, owner, receiver)
    await recording_events(client, owner)
    created = [e.type for e in await events_of(pool, owner)]
    receiver.statuses = [503]
    now = datetime.now(UTC)

    await deliver(pool, settings, now)
    held_back = [e.status for e in await events_of(pool, owner)]
    [head, *_] = await events_of(pool, owner)
    await deliver(pool, settings, head.next_attempt_at)

    assert created[:2] == ["consent.recorded", "recording.started"]
    assert len(created) >= 5
    assert held_back == ["pending"] * len(created)  # N+1 waits while N is retried
    assert receiver.types == [created[0], *created]
    assert receiver.rejected == []
    assert {e.status for e in await events_of(pool, owner)} == {"delivered"}


async def test_delivery_retries_with_growing_delays_for_24_hours_then_gives_up(
    client: TestClient, owner: Customer, pool: asyncpg.Pool, settings: Settings, receiver: Receiver
) -> None:
    await subscribe(client, owner, receiver)
    created_at = datetime.now(UTC)
    event_id = await enqueue(pool, owner, created_at)
    receiver.statuses = [503] * 1000
    now, tried_at = created_at, []
    seen: list[WebhookEvent] = []

    for _ in range(100):  # about 35 tries fill 24 hours
        await deliver(pool, settings, now)
        [event] = await events_of(pool, owner)
        seen.append(event)
        tried_at.append(now)
        if event.status != "pending":
            break
        now = event.next_attempt_at
    final = seen[-1]
    await deliver(pool, settings, created_at + timedelta(days=30))

    window = timedelta(hours=24)
    gaps = [b - a for a, b in itertools.pairwise(tried_at)]
    assert gaps[0] == backoff(1) <= timedelta(seconds=10)
    assert all(a <= b for a, b in itertools.pairwise(gaps[:-1]))  # growing, but for the last
    assert max(gaps) <= timedelta(hours=1)
    assert tried_at[-1] == created_at + window  # the last try ends the window exactly
    assert final.status == "failed"
    assert final.given_up_at == created_at + window
    assert final.attempts == len(seen) == len(receiver.deliveries)
    assert final.last_error == "HTTP 503"
    assert {d.headers["webhook-id"] for d in receiver.deliveries} == {event_id}
    assert await events_of(pool, owner) == [final]  # the later pass left it alone


async def test_a_given_up_event_releases_the_accounts_next_event(
    client: TestClient, owner: Customer, pool: asyncpg.Pool, settings: Settings, receiver: Receiver
) -> None:
    await subscribe(client, owner, receiver)
    now = datetime.now(UTC)
    await enqueue(pool, owner, now - timedelta(hours=25))  # its window has closed
    second = await enqueue(pool, owner, now)
    receiver.statuses = [500]

    await deliver(pool, settings, now)
    await deliver(pool, settings, now)

    old, new = await events_of(pool, owner)
    assert (old.status, old.attempts) == ("failed", 1)
    assert new.status == "delivered"
    assert receiver.deliveries[-1].headers["webhook-id"] == second


async def test_a_hanging_endpoint_times_out_without_stalling_another_account(
    client: TestClient,
    owner: Customer,
    pool: asyncpg.Pool,
    settings: Settings,
    receivers: MakeReceiver,
) -> None:
    timeout_s = 1.5
    configured = settings.replace(webhook_timeout_s=timeout_s)
    stuck, healthy = await receivers(), await receivers()
    other = await new_customer(client)
    await subscribe(client, owner, stuck)
    await subscribe(client, other, healthy)
    stuck.hang_s = 60
    await recording_events(client, owner)
    await recording_events(client, other)
    loop = asyncio.get_running_loop()
    started = loop.time()

    delivered = await deliver(pool, configured)

    assert loop.time() - started < timeout_s + 2
    [hung] = stuck.deliveries
    assert all(d.at < hung.at + timeout_s for d in healthy.deliveries)  # not held up
    assert delivered == len(healthy.deliveries) == len(await events_of(pool, other))
    head, *rest = await events_of(pool, owner)
    assert head.last_error == f"timeout after {timeout_s:g} s"
    assert (head.attempts, head.status) == (1, "pending")
    assert {e.attempts for e in rest} == {0}


async def test_an_account_without_a_webhook_url_has_its_events_skipped(
    client: TestClient, owner: Customer, pool: asyncpg.Pool, settings: Settings
) -> None:
    await create_secret(client, owner)
    await consented_call(client, owner)

    delivered = await deliver(pool, settings)
    later = await deliver(pool, settings, datetime.now(UTC) + timedelta(days=2))

    assert (delivered, later) == (0, 0)
    [event] = await events_of(pool, owner)
    assert (event.status, event.attempts) == ("skipped", 0)
    assert event.last_error == "no webhook_url configured"
    skipped = await (
        await client.get("/v1/webhook-events?status=skipped", headers=owner.auth)
    ).json()
    pending = await (
        await client.get("/v1/webhook-events?status=pending", headers=owner.auth)
    ).json()
    assert [e["id"] for e in skipped["items"]] == [event.id]
    assert pending["items"] == []


async def test_events_written_together_keep_their_order_and_each_accounts_url_decides(
    client: TestClient, owner: Customer, pool: asyncpg.Pool, receiver: Receiver
) -> None:
    """A change's events go in one statement (usecases.trail): still in order, and an
    account without a webhook_url gets only its own skipped."""
    await subscribe(client, owner, receiver)
    other = await new_customer(client)
    now = datetime.now(UTC)
    batch = [
        store.NewEvent(owner.account_id, "consent.recorded", {"n": 0}, now),
        store.NewEvent(other.account_id, "consent.recorded", {"n": 1}, now),
        store.NewEvent(owner.account_id, "recording.stopped", {"n": 2}, now),
    ]
    async with pool.acquire() as conn, conn.transaction():
        ids = await store.enqueue(conn, batch)

    mine, theirs = await events_of(pool, owner), await events_of(pool, other)
    assert [e.id for e in mine] == [ids[0], ids[2]]
    assert [e.type for e in mine] == ["consent.recorded", "recording.stopped"]
    assert {e.status for e in mine} == {"pending"}
    assert [(e.id, e.status) for e in theirs] == [(ids[1], "skipped")]


async def test_events_wait_for_a_secret_and_go_out_signed_once_it_exists(
    client: TestClient, owner: Customer, pool: asyncpg.Pool, settings: Settings, receiver: Receiver
) -> None:
    resp = await client.patch("/v1/account", json={"webhook_url": receiver.url}, headers=owner.auth)
    assert resp.status == 200
    await consented_call(client, owner)
    now = datetime.now(UTC)

    await deliver(pool, settings, now)
    [waiting] = await events_of(pool, owner)
    receiver.secret = await create_secret(client, owner)
    await deliver(pool, settings, waiting.next_attempt_at)

    assert waiting.status == "pending"
    assert waiting.last_error is not None
    assert "signing secret" in waiting.last_error
    assert receiver.types == ["consent.recorded"]
    assert receiver.rejected == []


async def test_after_a_rotation_deliveries_are_signed_with_the_new_secret(
    client: TestClient, owner: Customer, pool: asyncpg.Pool, settings: Settings, receiver: Receiver
) -> None:
    await subscribe(client, owner, receiver)
    old_secret = receiver.secret
    receiver.secret = await create_secret(client, owner)
    await consented_call(client, owner)

    await deliver(pool, settings)

    [got] = receiver.deliveries
    with pytest.raises(WebhookVerificationError):
        Webhook(old_secret).verify(got.body, got.headers)


# -- the SSRF guard ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1/hook",
        "http://10.0.0.1/hook",
        "http://192.168.1.10:8443/hook",
        "http://169.254.169.254/latest/meta-data/",
        "http://[::1]/hook",
        "http://[::ffff:127.0.0.1]/hook",
        "http://0.0.0.0/hook",
        "http://localhost:8080/hook",
        "ftp://files.example.com/hook",
        "https://hooks..example.com/hook",  # an empty label: no name the client can encode
        f"https://{'x' * 64}.example.com/hook",  # a label past 63 characters
    ],
)
async def test_a_webhook_url_reaching_a_non_public_address_is_refused(
    strict_client: TestClient, url: str
) -> None:
    owner = await new_customer(strict_client)

    resp = await strict_client.patch("/v1/account", json={"webhook_url": url}, headers=owner.auth)

    assert resp.status == 422
    problem = await resp.json()
    assert problem["code"] == "validation-failed"
    assert [e["field"] for e in problem["errors"]] == ["webhook_url"]
    account = await (await strict_client.get("/v1/account", headers=owner.auth)).json()
    assert account["webhook_url"] is None


async def test_a_public_webhook_url_is_accepted(strict_client: TestClient) -> None:
    owner = await new_customer(strict_client)

    resp = await strict_client.patch(
        "/v1/account", json={"webhook_url": "https://93.184.215.14/hook"}, headers=owner.auth
    )

    assert resp.status == 200, await resp.text()


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost"])
async def test_delivery_checks_the_address_again_and_refuses_a_private_one(
    client: TestClient,
    owner: Customer,
    pool: asyncpg.Pool,
    settings: Settings,
    receiver: Receiver,
    host: str,
) -> None:
    """Registered while allowed (or before its DNS changed): the attempt itself refuses it."""
    receiver.url = receiver.url.replace("127.0.0.1", host)
    await subscribe(client, owner, receiver)
    await consented_call(client, owner)
    strict = settings.replace(webhook_allow_private=False)

    delivered = await deliver(pool, strict)

    assert delivered == 0
    assert receiver.deliveries == []
    [event] = await events_of(pool, owner)
    assert (event.status, event.attempts) == ("pending", 1)
    assert event.last_error is not None
    assert event.last_error.startswith("refused: ")
    assert "loopback" in event.last_error


async def test_a_stored_url_whose_host_is_no_name_is_a_refused_attempt_not_an_error(
    client: TestClient,
    owner: Customer,
    pool: asyncpg.Pool,
    settings: Settings,
    receiver: Receiver,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Found by the fuzzer: a host the HTTP client cannot IDNA-encode raised UnicodeError
    out of the delivery step (an error in the log, each pass). Refused, it is one failed
    attempt with its reason, retried like any other; registering it is a 422."""
    await subscribe(client, owner, receiver)
    async with pool.acquire() as conn:
        await conn.execute(
            "UPDATE accounts SET webhook_url = $1 WHERE id = $2",
            "https://hooks..example.com/hook",
            owner.account_id,
        )
    await consented_call(client, owner)

    delivered = await deliver(pool, settings)

    assert delivered == 0
    [event] = await events_of(pool, owner)
    assert (event.status, event.attempts) == ("pending", 1)
    assert event.last_error == "refused: the URL's host is not a valid name"
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


@pytest.mark.parametrize(
    ("address", "refused"),
    [
        ("93.184.215.14", False),
        ("2606:4700::1111", False),
        ("127.0.0.2", True),
        ("10.1.2.3", True),
        ("172.16.0.1", True),
        ("100.64.0.1", True),  # shared address space (carrier-grade NAT)
        ("169.254.169.254", True),
        ("224.0.0.1", True),
        ("240.0.0.1", True),
        ("0.0.0.0", True),  # noqa: S104 (an address under test, not a bind)
        ("::", True),
        ("fe80::1", True),
        ("fc00::1", True),
        ("ff02::1", True),
        ("::ffff:10.0.0.1", True),
        ("2002:7f00:1::", True),  # 6to4 wrapping 127.0.0.1
    ],
)
def test_only_public_unicast_addresses_may_receive_webhooks(address: str, refused: bool) -> None:
    assert (ssrf.address_refusal(address) is not None) is refused


# -- status through the API ---------------------------------------------------------------------


async def test_the_event_list_pages_newest_first_and_filters_by_status(
    client: TestClient, owner: Customer, pool: asyncpg.Pool, settings: Settings, receiver: Receiver
) -> None:
    await subscribe(client, owner, receiver)
    await recording_events(client, owner)
    receiver.statuses = [500]
    await deliver(pool, settings)
    every = await events_of(pool, owner)

    seen: list[dict[str, Any]] = []
    url = "/v1/webhook-events?limit=2"
    while url:
        page = await (await client.get(url, headers=owner.auth)).json()
        seen += page["items"]
        cursor = page["next_cursor"]
        url = f"/v1/webhook-events?limit=2&cursor={cursor}" if cursor else ""
    failed = await client.get("/v1/webhook-events?status=failed", headers=owner.auth)
    pending = await client.get("/v1/webhook-events?status=pending", headers=owner.auth)
    bogus = await client.get("/v1/webhook-events?status=bogus", headers=owner.auth)

    assert sorted(e["id"] for e in seen) == sorted(e.id for e in every)
    assert [e["created_at"] for e in seen] == sorted((e["created_at"] for e in seen), reverse=True)
    assert set(seen[0]) >= {
        "id",
        "type",
        "created_at",
        "attempts",
        "next_attempt_at",
        "delivered_at",
        "given_up_at",
        "last_error",
        "status",
    }
    assert (await failed.json())["items"] == []
    assert len((await pending.json())["items"]) == len(every)
    head = next(e for e in seen if e["id"] == every[0].id)
    assert (head["attempts"], head["last_error"]) == (1, "HTTP 500")
    assert head["next_attempt_at"] is not None
    assert bogus.status == 422
    assert (await bogus.json())["errors"][0]["field"] == "status"


async def test_another_accounts_event_is_not_found(
    client: TestClient, owner: Customer, pool: asyncpg.Pool
) -> None:
    await consented_call(client, owner)
    [event] = await events_of(pool, owner)
    other = await new_customer(client)

    theirs = await client.get(f"/v1/webhook-events/{event.id}", headers=other.auth)
    listed = await (await client.get("/v1/webhook-events", headers=other.auth)).json()

    assert theirs.status == 404
    assert (await theirs.json())["code"] == "not-found"
    assert listed["items"] == []


# -- the background worker of a serving process ---------------------------------------------------


async def test_the_worker_delivers_on_commit_and_one_hanging_account_does_not_hold_others(
    settings: Settings, pool: asyncpg.Pool, receivers: MakeReceiver
) -> None:
    """LISTEN wakes the worker at commit (the poll is 30 s); accounts drain side by side."""
    configured = settings.replace(outbox_poll_s=30, webhook_timeout_s=3.0)
    stuck, healthy = await receivers(), await receivers()
    stuck.hang_s = 60
    app = create_app(configured, run_workers=True)

    async with TestClient(ServiceServer(app)) as client:
        slow, fast = await new_customer(client), await new_customer(client)
        await subscribe(client, slow, stuck)
        await subscribe(client, fast, healthy)
        await consented_call(client, slow)
        await eventually(lambda: len(stuck.deliveries) == 1)
        await recording_events(client, fast)
        expected = len(await events_of(pool, fast))
        await eventually(lambda: len(healthy.deliveries) == expected)
        finished_at = asyncio.get_running_loop().time()

    assert finished_at < stuck.deliveries[0].at + 3.0  # while the other endpoint still hangs
    assert healthy.rejected == []
    assert healthy.types == [e.type for e in await events_of(pool, fast)]
