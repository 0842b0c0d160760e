"""S4: every administrative change notifies the responsible staff through an outbox.

The notification is written in the transaction of the change; a worker POSTs
it as JSON to TELEPHONY_STAFF_WEBHOOK_URL, retrying with backoff. Delivery is
tested against a real HTTP receiver on 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
import asyncpg
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from prometheus_client import CollectorRegistry

from storage import outbox
from storage.db import create_pool
from storage.outbox import StaffNotification
from telephony.delivery import staff as workers
from telephony.delivery.outbox import backoff
from telephony.metrics import Metrics
from telephony.settings import Settings
from telephony.web.app import create_app
from tests.conftest import PASSWORD, Customer, ServiceServer, login, signup_body
from tests.support.mail import mailed_token
from tests.support.waiting import eventually

# -- a real staff webhook receiver ----------------------------------------------------


@dataclass
class Receiver:
    """A staff endpoint on 127.0.0.1 that records each POST and answers scripted statuses."""

    url: str = ""
    statuses: list[int] = field(default_factory=list)  # consumed in order; then 200
    hang_s: float = 0.0
    received: list[dict[str, Any]] = field(default_factory=list)
    headers: list[dict[str, str]] = field(default_factory=list)
    release: asyncio.Event = field(default_factory=asyncio.Event)

    async def handle(self, request: web.Request) -> web.Response:
        self.received.append(await request.json())
        self.headers.append(dict(request.headers))
        if self.hang_s:
            # Hang like a stuck receiver, but let the fixture end it at teardown.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.release.wait(), self.hang_s)
        return web.Response(status=self.statuses.pop(0) if self.statuses else 200)


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    rec = Receiver()
    app = web.Application()
    app.router.add_post("/staff", rec.handle)
    server = TestServer(app, host="127.0.0.1", port=0)  # a remote receiver
    await server.start_server()
    rec.url = str(server.make_url("/staff"))
    yield rec
    rec.release.set()
    await server.close()


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


# -- helpers --------------------------------------------------------------------------


async def last_note_id(pool: asyncpg.Pool) -> int:
    async with pool.acquire() as conn:
        return int(await conn.fetchval("SELECT coalesce(max(id), 0) FROM staff_notifications"))


async def notes_after(pool: asyncpg.Pool, after_id: int) -> list[tuple[StaffNotification, str]]:
    """Notifications written after `after_id`, each with the raw JSON text of its payload."""
    async with pool.acquire() as conn:
        raw = {
            r["id"]: r["raw"]
            for r in await conn.fetch(
                "SELECT id, payload::text AS raw FROM staff_notifications WHERE id > $1",
                after_id,
            )
        }
        every = await outbox.list_all(conn)
    return [(n, raw[n.id]) for n in every if n.id > after_id]


async def all_notes(pool: asyncpg.Pool) -> list[StaffNotification]:
    async with pool.acquire() as conn:
        return await outbox.list_all(conn)


async def only_new_note(pool: asyncpg.Pool, after_id: int) -> tuple[StaffNotification, str]:
    found = await notes_after(pool, after_id)
    assert len(found) == 1, [n.event for n, _ in found]
    return found[0]


def assert_no_secret(raw_payload: str, *secrets: str) -> None:
    for secret in secrets:
        assert secret not in raw_payload


def owner_actor(owner: Customer) -> dict[str, Any]:
    return {"type": "user", "id": owner.user_id, "role": "owner"}


async def invite(client: TestClient, owner: Customer, email: str = "mia@example.com") -> dict:
    """The invited user, with the token the invitee received by mail (`mailed_token`)."""
    resp = await client.post(
        "/v1/users", json={"email": email, "name": "Mia Member"}, headers=owner.auth
    )
    assert resp.status == 201, await resp.text()
    invited = await resp.json()
    assert "token" not in invited["invitation"]  # API.md: the owner never sees it
    invited["mailed_token"] = await mailed_token(client, email)
    return invited


async def create_key(client: TestClient, owner: Customer) -> dict:
    resp = await client.post(
        "/v1/api-keys", json={"name": "crm", "scopes": ["calls"]}, headers=owner.auth
    )
    assert resp.status == 201, await resp.text()
    return await resp.json()


# -- each admin change writes exactly one notification (S4) ---------------------------


async def test_signup_notifies_staff_of_the_new_owner(
    client: TestClient, pool: asyncpg.Pool
) -> None:
    """S4: a user created by signup is reported; the password is not (S1)."""
    body = signup_body()

    resp = await client.post("/v1/signup", json=body)

    assert resp.status == 201
    data = await resp.json()
    note, raw = await only_new_note(pool, 0)
    assert note.event == "user.created"
    assert note.payload["event"] == "user.created"
    assert note.payload["actor"] == {"type": "anonymous"}
    assert note.payload["account_id"] == data["account"]["id"]
    assert note.payload["subject"] == {"type": "user", "id": data["user"]["id"]}
    assert note.payload["changes"] == {"role": "owner", "via": "signup"}
    assert datetime.fromisoformat(note.payload["at"]) == note.created_at
    assert note.delivered_at is None
    assert_no_secret(raw, body["password"])


async def test_inviting_a_user_notifies_staff_without_the_invitation_token(
    client: TestClient, owner: Customer, pool: asyncpg.Pool
) -> None:
    """S4: POST /v1/users reports the new user; the invitation token stays with the owner."""
    before = await last_note_id(pool)

    invited = await invite(client, owner)

    note, raw = await only_new_note(pool, before)
    assert note.event == "user.created"
    assert note.payload["actor"] == owner_actor(owner)
    assert note.payload["account_id"] == owner.account_id
    assert note.payload["subject"] == {"type": "user", "id": invited["id"]}
    assert note.payload["changes"] == {"role": "member", "via": "invitation"}
    assert_no_secret(raw, invited["mailed_token"], owner.token, PASSWORD)


async def test_accepting_an_invitation_notifies_staff_without_the_password(
    client: TestClient, owner: Customer, pool: asyncpg.Pool
) -> None:
    """S4: the invited user becoming active is reported; neither token nor password is."""
    invited = await invite(client, owner)
    before = await last_note_id(pool)
    chosen = "a brand new passphrase 42"

    resp = await client.post(
        "/v1/invitations/accept",
        json={"token": invited["mailed_token"], "password": chosen},
    )

    assert resp.status == 200, await resp.text()
    note, raw = await only_new_note(pool, before)
    assert note.event == "user.activated"
    assert note.payload["subject"] == {"type": "user", "id": invited["id"]}
    assert_no_secret(raw, chosen, invited["mailed_token"])


async def test_changing_a_role_notifies_staff_as_role_changed(
    client: TestClient, owner: Customer, pool: asyncpg.Pool
) -> None:
    """S4: a role change names who changed whom, from which role to which."""
    invited = await invite(client, owner)
    before = await last_note_id(pool)

    resp = await client.patch(
        f"/v1/users/{invited['id']}", json={"role": "owner"}, headers=owner.auth
    )

    assert resp.status == 200, await resp.text()
    note, raw = await only_new_note(pool, before)
    assert note.event == "role.changed"
    assert note.payload["actor"] == owner_actor(owner)
    assert note.payload["subject"] == {"type": "user", "id": invited["id"]}
    assert note.payload["changes"]["role"] == {"from": "member", "to": "owner"}
    assert note.payload["changes"]["fields"] == ["role"]
    assert_no_secret(raw, invited["mailed_token"], owner.token)


async def test_changing_a_user_without_a_new_role_notifies_staff_as_user_updated(
    client: TestClient, owner: Customer, pool: asyncpg.Pool
) -> None:
    """S4: any change to a user profile is reported, not only role changes."""
    invited = await invite(client, owner)
    before = await last_note_id(pool)

    resp = await client.patch(
        f"/v1/users/{invited['id']}", json={"name": "Mia Renamed"}, headers=owner.auth
    )

    assert resp.status == 200, await resp.text()
    note, _raw = await only_new_note(pool, before)
    assert note.event == "user.updated"
    assert note.payload["actor"] == owner_actor(owner)
    assert note.payload["subject"] == {"type": "user", "id": invited["id"]}
    assert note.payload["changes"]["fields"] == ["name"]


async def test_deleting_a_user_notifies_staff(
    client: TestClient, owner: Customer, pool: asyncpg.Pool
) -> None:
    """S4: removing a user is reported with the role they had."""
    invited = await invite(client, owner)
    before = await last_note_id(pool)

    resp = await client.delete(f"/v1/users/{invited['id']}", headers=owner.auth)

    assert resp.status == 204
    note, raw = await only_new_note(pool, before)
    assert note.event == "user.deleted"
    assert note.payload["actor"] == owner_actor(owner)
    assert note.payload["subject"] == {"type": "user", "id": invited["id"]}
    assert note.payload["changes"] == {"role": "member"}
    assert_no_secret(raw, owner.token)


async def test_creating_an_api_key_notifies_staff_without_the_token(
    client: TestClient, owner: Customer, pool: asyncpg.Pool
) -> None:
    """S4: a new API key (a permission) is reported; its token is shown only to the owner."""
    before = await last_note_id(pool)

    key = await create_key(client, owner)

    note, raw = await only_new_note(pool, before)
    assert note.event == "api_key.created"
    assert note.payload["actor"] == owner_actor(owner)
    assert note.payload["subject"] == {"type": "api_key", "id": key["id"]}
    assert note.payload["changes"] == {"scopes": ["calls"]}
    assert_no_secret(raw, key["token"], owner.token, PASSWORD)


async def test_deleting_an_api_key_notifies_staff(
    client: TestClient, owner: Customer, pool: asyncpg.Pool
) -> None:
    """S4: revoking an API key is reported."""
    key = await create_key(client, owner)
    before = await last_note_id(pool)

    resp = await client.delete(f"/v1/api-keys/{key['id']}", headers=owner.auth)

    assert resp.status == 204
    note, raw = await only_new_note(pool, before)
    assert note.event == "api_key.deleted"
    assert note.payload["actor"] == owner_actor(owner)
    assert note.payload["subject"] == {"type": "api_key", "id": key["id"]}
    assert_no_secret(raw, key["token"], owner.token)


async def test_changing_ones_own_profile_notifies_staff_with_field_names_only(
    client: TestClient, owner: Customer, pool: asyncpg.Pool
) -> None:
    """S4 (and D2): a profile rectification is reported by field name, not by value."""
    before = await last_note_id(pool)
    new_address = "ul. Nowa 7, 00-002 Warszawa"

    resp = await client.patch(
        "/v1/me", json={"name": "Ada Renamed", "postal_address": new_address}, headers=owner.auth
    )

    assert resp.status == 200, await resp.text()
    note, raw = await only_new_note(pool, before)
    assert note.event == "user.updated"
    assert note.payload["actor"] == owner_actor(owner)
    assert note.payload["subject"] == {"type": "user", "id": owner.user_id}
    assert note.payload["changes"] == {"fields": ["name", "postal_address"]}
    assert_no_secret(raw, owner.token, new_address)


# -- a refused or failed change leaves no notification (same transaction) -------------


async def test_a_refused_invitation_leaves_no_notification(
    client: TestClient, owner: Customer, pool: asyncpg.Pool
) -> None:
    """S4: an e-mail already taken (409) means no user, hence no notification."""
    before = await last_note_id(pool)

    resp = await client.post(
        "/v1/users", json={"email": owner.email, "name": "Dup"}, headers=owner.auth
    )

    assert resp.status == 409
    assert await notes_after(pool, before) == []


@pytest.mark.parametrize(
    ("method", "path", "body", "status"),
    [
        ("PATCH", "/v1/users/{owner}", {"role": "member"}, 409),  # the last owner
        ("DELETE", "/v1/users/{owner}", None, 409),
        ("DELETE", "/v1/users/usr_nobody", None, 404),
        ("DELETE", "/v1/api-keys/key_nobody", None, 404),
        ("POST", "/v1/api-keys", {"name": "k", "scopes": ["everything"]}, 422),
    ],
)
async def test_refused_admin_changes_leave_no_notification(
    client: TestClient,
    owner: Customer,
    pool: asyncpg.Pool,
    method: str,
    path: str,
    body: dict[str, Any] | None,
    status: int,
) -> None:
    """S4: only changes that happened are reported."""
    before = await last_note_id(pool)

    resp = await client.request(
        method, path.format(owner=owner.user_id), json=body, headers=owner.auth
    )

    assert resp.status == status, await resp.text()
    assert await notes_after(pool, before) == []


async def test_a_change_failing_after_the_notification_rolls_both_back(
    client: TestClient, owner: Customer, pool: asyncpg.Pool, caplog: pytest.LogCaptureFixture
) -> None:
    """S4: the notification commits with the change or not at all.

    A trigger makes the audit insert, which follows the outbox insert in the
    same transaction, fail: neither the user nor the notification may remain.
    """
    caplog.set_level(logging.CRITICAL, logger="telephony.web.app")  # the expected 500's traceback
    before = await last_note_id(pool)
    async with pool.acquire() as conn:
        await conn.execute(
            """CREATE FUNCTION test_refuse_audit() RETURNS trigger LANGUAGE plpgsql AS
               $$ BEGIN RAISE EXCEPTION 'audit refused by the test'; END $$;
               CREATE TRIGGER test_refuse_audit BEFORE INSERT ON audit_events
               FOR EACH ROW EXECUTE FUNCTION test_refuse_audit();"""
        )
    try:
        resp = await client.post(
            "/v1/users", json={"email": "late@example.com", "name": "Late"}, headers=owner.auth
        )
    finally:
        async with pool.acquire() as conn:
            await conn.execute(
                """DROP TRIGGER test_refuse_audit ON audit_events;
                   DROP FUNCTION test_refuse_audit();"""
            )

    assert resp.status == 500
    assert await notes_after(pool, before) == []
    async with pool.acquire() as conn:
        assert (
            await conn.fetchval("SELECT count(*) FROM users WHERE email = 'late@example.com'") == 0
        )


# -- delivery to the staff webhook ----------------------------------------------------


async def test_delivery_posts_the_notification_as_json(
    client: TestClient,
    owner: Customer,
    pool: asyncpg.Pool,
    settings: Settings,
    receiver: Receiver,
    http: aiohttp.ClientSession,
) -> None:
    """S4: one JSON POST per notification, carrying its id, type and payload."""
    [pending] = await all_notes(pool)
    configured = settings.replace(staff_webhook_url=receiver.url)

    delivered = await workers.deliver_due_notifications(pool, http, configured)

    assert delivered == 1
    assert receiver.received == [
        {"id": pending.id, "type": "user.created", "data": pending.payload}
    ]
    assert receiver.headers[0]["Content-Type"] == "application/json"
    assert receiver.headers[0]["Idempotency-Key"] == f"staff-{pending.id}"
    [note] = await all_notes(pool)
    assert note.delivered_at is not None
    assert (note.attempts, note.last_error, note.given_up_at) == (1, None, None)


async def test_delivered_notifications_are_not_sent_again(
    client: TestClient,
    owner: Customer,
    pool: asyncpg.Pool,
    settings: Settings,
    receiver: Receiver,
    http: aiohttp.ClientSession,
) -> None:
    """S4: a second pass finds nothing due."""
    configured = settings.replace(staff_webhook_url=receiver.url)
    await workers.deliver_due_notifications(pool, http, configured)

    again = await workers.deliver_due_notifications(
        pool, http, configured, datetime.now(UTC) + timedelta(days=1)
    )

    assert again == 0
    assert len(receiver.received) == 1


async def test_a_500_is_retried_after_backoff(
    client: TestClient,
    owner: Customer,
    pool: asyncpg.Pool,
    settings: Settings,
    receiver: Receiver,
    http: aiohttp.ClientSession,
) -> None:
    """S4: a failed POST is kept, retried once its backoff has passed, then delivered."""
    configured = settings.replace(staff_webhook_url=receiver.url)
    receiver.statuses = [500]
    now = datetime.now(UTC)

    first = await workers.deliver_due_notifications(pool, http, configured, now)
    [failed] = await all_notes(pool)
    too_early = await workers.deliver_due_notifications(
        pool, http, configured, failed.next_attempt_at - timedelta(milliseconds=1)
    )
    later = await workers.deliver_due_notifications(pool, http, configured, failed.next_attempt_at)

    assert (first, too_early, later) == (0, 0, 1)
    assert failed.attempts == 1
    assert failed.last_error == "HTTP 500"
    assert failed.next_attempt_at == now + backoff(1)
    assert failed.next_attempt_at > now
    assert (failed.delivered_at, failed.given_up_at) == (None, None)
    assert len(receiver.received) == 2
    assert receiver.received[0] == receiver.received[1]  # the same notification, same id
    [note] = await all_notes(pool)
    assert note.delivered_at is not None
    assert (note.attempts, note.last_error) == (2, None)


def test_backoff_doubles_from_two_seconds_up_to_an_hour() -> None:
    """S4: retries spread out instead of hammering a broken receiver."""
    assert [backoff(n).total_seconds() for n in (1, 2, 3, 4, 11, 12, 50)] == [
        2,
        4,
        8,
        16,
        2048,
        3600,
        3600,
    ]


async def test_delivery_gives_up_after_the_last_attempt(
    client: TestClient,
    owner: Customer,
    pool: asyncpg.Pool,
    settings: Settings,
    receiver: Receiver,
    http: aiohttp.ClientSession,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """S4: after outbox_max_attempts failures the row is given up and never tried again."""
    configured = settings.replace(staff_webhook_url=receiver.url, outbox_max_attempts=3)
    receiver.statuses = [503] * 10
    now = datetime.now(UTC)
    seen: list[StaffNotification] = []

    for _ in range(3):
        await workers.deliver_due_notifications(pool, http, configured, now)
        [note] = await all_notes(pool)
        seen.append(note)
        now = note.next_attempt_at
    await workers.deliver_due_notifications(pool, http, configured, now + timedelta(days=30))

    assert [n.attempts for n in seen] == [1, 2, 3]
    assert seen[1].next_attempt_at - seen[0].next_attempt_at == backoff(2)
    assert [n.given_up_at is not None for n in seen] == [False, False, True]
    final = seen[2]
    assert final.delivered_at is None
    assert final.last_error == "HTTP 503"
    assert len(receiver.received) == 3
    [note] = await all_notes(pool)
    assert note == final  # the later pass left it alone
    gave_up = [r for r in caplog.records if r.getMessage() == "staff notification delivery failed"]
    assert [r.given_up for r in gave_up] == [False, False, True]  # type: ignore[attr-defined]


async def test_a_hanging_receiver_counts_as_a_failure_and_does_not_stall(
    client: TestClient,
    owner: Customer,
    pool: asyncpg.Pool,
    settings: Settings,
    receiver: Receiver,
    http: aiohttp.ClientSession,
) -> None:
    """S4: a receiver slower than staff_webhook_timeout_s is a failed attempt, retried later."""
    configured = settings.replace(staff_webhook_url=receiver.url, staff_webhook_timeout_s=0.2)
    receiver.hang_s = 30
    loop = asyncio.get_running_loop()
    started = loop.time()

    delivered = await workers.deliver_due_notifications(pool, http, configured)

    assert loop.time() - started < 3
    assert delivered == 0
    assert len(receiver.received) == 1  # it was tried
    [note] = await all_notes(pool)
    assert note.attempts == 1
    assert note.last_error is not None
    assert note.last_error.startswith("timeout")
    assert note.delivered_at is None
    assert note.next_attempt_at > note.created_at


async def test_an_unreachable_receiver_counts_as_a_failure(
    client: TestClient,
    owner: Customer,
    pool: asyncpg.Pool,
    settings: Settings,
    http: aiohttp.ClientSession,
) -> None:
    """S4: a refused connection is a failed attempt, not a crash of the pass."""
    with socket.socket() as sock:  # a port nobody listens on once closed
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    configured = settings.replace(staff_webhook_url=f"http://127.0.0.1:{port}/staff")

    delivered = await workers.deliver_due_notifications(pool, http, configured)

    assert delivered == 0
    [note] = await all_notes(pool)
    assert note.attempts == 1
    assert note.last_error == "ClientConnectorError"


async def test_without_a_webhook_notifications_are_logged_and_marked_delivered(
    client: TestClient,
    owner: Customer,
    pool: asyncpg.Pool,
    settings: Settings,
    http: aiohttp.ClientSession,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """S4: with no TELEPHONY_STAFF_WEBHOOK_URL the structured log line is the notification."""
    assert settings.staff_webhook_url is None
    caplog.set_level(logging.INFO, logger="telephony.delivery.staff")
    [pending] = await all_notes(pool)

    delivered = await workers.deliver_due_notifications(pool, http, settings)

    assert delivered == 1
    [record] = [r for r in caplog.records if r.getMessage() == "staff notification"]
    assert record.notification_id == pending.id  # type: ignore[attr-defined]
    assert record.event == "user.created"  # type: ignore[attr-defined]
    assert record.payload == pending.payload  # type: ignore[attr-defined]
    assert PASSWORD not in json.dumps(record.payload)  # type: ignore[attr-defined]
    [note] = await all_notes(pool)
    assert note.delivered_at is not None


async def test_concurrent_passes_never_deliver_a_notification_twice(
    client: TestClient,
    owner: Customer,
    pool: asyncpg.Pool,
    settings: Settings,
    receiver: Receiver,
) -> None:
    """S4: workers on several nodes claim rows with SKIP LOCKED; each row is POSTed once."""
    for n in range(4):
        await invite(client, owner, f"member{n}@example.com")
    configured = settings.replace(staff_webhook_url=receiver.url)

    async with aiohttp.ClientSession() as one, aiohttp.ClientSession() as two:
        counts = await asyncio.gather(
            workers.deliver_due_notifications(pool, one, configured),
            workers.deliver_due_notifications(pool, two, configured),
        )

    assert sum(counts) == 5
    ids = [r["id"] for r in receiver.received]
    assert sorted(ids) == sorted({n.id for n in await all_notes(pool)})


# -- the background worker of a serving process ----------------------------------------


async def test_the_background_worker_delivers_an_admin_change_on_commit(
    settings: Settings, pool: asyncpg.Pool, receiver: Receiver
) -> None:
    """S4: LISTEN/NOTIFY wakes the worker at commit; it does not wait for the 30 s poll."""
    configured = settings.replace(staff_webhook_url=receiver.url, outbox_poll_s=30)
    app = create_app(configured, run_workers=True)

    async with TestClient(ServiceServer(app)) as client:
        body = signup_body()
        resp = await client.post("/v1/signup", json=body)
        assert resp.status == 201
        user_id = (await resp.json())["user"]["id"]
        await eventually(lambda: receiver.received, timeout_s=5)
        token = await login(client, body["email"])
        key = await client.post(
            "/v1/api-keys",
            json={"name": "crm", "scopes": ["calls"]},
            headers={"Authorization": f"Bearer {token}"},
        )
        assert key.status == 201
        await eventually(lambda: len(receiver.received) == 2, timeout_s=5)
        # The receiver answers before the worker records it: wait for the row, not the POST.
        await eventually(delivered(pool), timeout_s=5)

    assert [r["type"] for r in receiver.received] == ["user.created", "api_key.created"]
    assert receiver.received[0]["data"]["subject"] == {"type": "user", "id": user_id}


def delivered(pool: asyncpg.Pool) -> Any:
    async def check() -> bool:
        notes = await all_notes(pool)
        return bool(notes) and all(n.delivered_at is not None for n in notes)

    return check


async def test_the_background_worker_retries_after_a_500(
    settings: Settings, pool: asyncpg.Pool, receiver: Receiver
) -> None:
    """S4: a receiver that fails once still gets the notification, after the backoff."""
    configured = settings.replace(staff_webhook_url=receiver.url, outbox_poll_s=0.2)
    receiver.statuses = [500]
    app = create_app(configured, run_workers=True)

    async with TestClient(ServiceServer(app)) as client:
        resp = await client.post("/v1/signup", json=signup_body())
        assert resp.status == 201

        async def delivered() -> bool:
            return any(n.delivered_at is not None for n in await all_notes(pool))

        await eventually(delivered, timeout_s=10)

    assert len(receiver.received) == 2
    [note] = await all_notes(pool)
    assert note.attempts == 2


async def test_the_background_worker_drains_a_backlog_larger_than_one_batch(
    settings: Settings, pool: asyncpg.Pool, receiver: Receiver
) -> None:
    """S4: a backlog (a node that was down) is delivered at once, not one batch per poll."""
    backlog = workers.NOTIFY_BATCH + 5
    async with pool.acquire() as conn, conn.transaction():
        for n in range(backlog):
            await outbox.enqueue(conn, "user.updated", {"n": n}, datetime.now(UTC))
    configured = settings.replace(staff_webhook_url=receiver.url, outbox_poll_s=30)
    app = create_app(configured, run_workers=True)

    async with TestClient(ServiceServer(app)):
        await eventually(lambda: len(receiver.received) == backlog, timeout_s=5)

    assert [r["data"]["n"] for r in receiver.received] == list(range(backlog))


async def test_a_stopped_worker_gives_its_connection_back_listening_to_nothing(
    settings: Settings, database_url: str, pool: asyncpg.Pool, receiver: Receiver
) -> None:
    """Pools skip asyncpg's reset on release (storage.db): a listener must UNLISTEN itself.

    A pool of two connections, one for the worker's LISTEN and one for its
    claims (the notification below arrives long before the 30 s poll); once
    the worker is stopped, neither connection, taken from the pool again,
    listens to any channel.
    """
    configured = settings.replace(staff_webhook_url=receiver.url, outbox_poll_s=30)
    single = await create_pool(database_url, min_size=2, max_size=2)
    try:
        async with aiohttp.ClientSession() as http:
            worker = asyncio.create_task(
                workers.notification_worker(
                    single, http, configured, Metrics.create(CollectorRegistry())
                )
            )
            try:
                await eventually(lambda: single.get_idle_size() < 2)  # the worker listens
                async with pool.acquire() as conn, conn.transaction():
                    await outbox.enqueue(conn, "user.updated", {"n": 1}, datetime.now(UTC))
                await eventually(lambda: len(receiver.received) == 1, timeout_s=5)
            finally:
                worker.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await worker
        async with single.acquire() as first, single.acquire() as second:
            assert await first.fetch("SELECT pg_listening_channels()") == []
            assert await second.fetch("SELECT pg_listening_channels()") == []
    finally:
        single.terminate()
