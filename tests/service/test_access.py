"""The whole route table: support's least access (S5) and tenant isolation (404, never 403).

These tests walk `all_routes()`, so a new route is covered (or fails the
table check) without anyone remembering to add it here.
"""

from __future__ import annotations

from datetime import UTC, datetime

import asyncpg
import pytest
from aiohttp.test_utils import TestClient
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa, x25519

from storage.keys.passwords import PasswordHasher
from telephony.domain.roles import StaffRole
from telephony.settings import Settings
from telephony.usecases import identity
from telephony.web.app import all_routes
from tests.conftest import (
    PASSWORD,
    Customer,
    consented_call,
    login,
    new_customer,
    start_recording,
)

RSA_PEM = (
    rsa.generate_private_key(65537, 3072)
    .public_key()
    .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    .decode()
)  # another key than the body's, so registering that one is no conflict
X25519_PEM = (
    x25519.X25519PrivateKey.generate()
    .public_key()
    .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    .decode()
)
# A valid body for every route that takes one, so validation never answers first.
BODIES: dict[tuple[str, str], dict] = {
    ("POST", "/v1/signup"): {},
    ("POST", "/v1/sessions"): {},
    ("POST", "/v1/invitations/accept"): {},
    ("POST", "/v1/password-resets"): {},
    ("POST", "/v1/password-resets/confirm"): {},
    ("PATCH", "/v1/me"): {"name": "x"},
    ("PATCH", "/v1/account"): {"name": "x"},
    ("POST", "/v1/users"): {"email": "new@example.com", "name": "New"},
    ("PATCH", "/v1/users/{id}"): {"name": "x"},
    ("POST", "/v1/api-keys"): {"name": "k", "scopes": ["calls"]},
    ("POST", "/v1/sip-trunks"): {"name": "t", "allowed_sources": ["198.51.100.0/24"]},
    ("POST", "/v1/encryption-keys"): {"algorithm": "hpke-x25519", "public_key": X25519_PEM},
    ("POST", "/v1/calls"): {
        "direction": "outbound",
        "from": "+48221234567",
        "to": "+48601234567",
        "counterparts": [{"label": "c", "number": "+48601234567"}],
    },
    ("POST", "/v1/calls/{id}/counterparts"): {"label": "n", "number": "+442079460958"},
    ("POST", "/v1/calls/{id}/consents"): {
        "counterpart_id": "{counterpart}",
        "decision": "revoked",
        "method": "verbal",
    },
    ("POST", "/v1/calls/{id}/recordings"): {},
    ("POST", "/v1/privacy-requests"): {"kind": "access", "details": "x"},
    ("POST", "/v1/support/privacy-requests/{id}/complete"): {"resolution": "done"},
    ("POST", "/v1/support/privacy-requests/{id}/reject"): {"resolution": "no"},
}

# What {id} names in each path.
ID_KIND = {
    "/v1/users/{id}": "user",
    "/v1/api-keys/{id}": "key",
    "/v1/sip-trunks/{id}": "trunk",
    "/v1/encryption-keys/{id}": "encryption_key",
    "/v1/encryption-keys/{id}/activate": "encryption_key",
    "/v1/calls/{id}/consents/{event_id}/receipt": "call",
    "/v1/recordings/{id}/deletion-receipt": "recording",
    "/v1/calls/{id}": "call",
    "/v1/calls/{id}/counterparts": "call",
    "/v1/calls/{id}/consents": "call",
    "/v1/calls/{id}/end": "call",
    "/v1/calls/{id}/recordings": "call",
    "/v1/recordings/{id}": "recording",
    "/v1/recordings/{id}/pause": "recording",
    "/v1/recordings/{id}/resume": "recording",
    "/v1/recordings/{id}/stop": "recording",
    "/v1/recordings/{id}/audio": "recording",
    "/v1/support/calls/{id}/consent": "call",
    "/v1/webhook-events/{id}": "webhook_event",
    "/v1/privacy-requests/{id}": "privacy_request",
    "/v1/support/privacy-requests/{id}/start": "privacy_request",
    "/v1/support/privacy-requests/{id}/complete": "privacy_request",
    "/v1/support/privacy-requests/{id}/reject": "privacy_request",
}

SUPPORT_ROUTES = {
    ("GET", "/v1/support/calls/{id}/consent"),
    ("GET", "/v1/support/privacy-requests"),
    ("POST", "/v1/support/privacy-requests/{id}/start"),
    ("POST", "/v1/support/privacy-requests/{id}/complete"),
    ("POST", "/v1/support/privacy-requests/{id}/reject"),
}
# Any signed-in person may end their own session, staff included.
EVERYONE_SIGNED_IN = {("DELETE", "/v1/sessions/current")}


async def staff_token(client: TestClient, pool: asyncpg.Pool, settings: Settings, role: str) -> str:
    email = f"{role}@staff.example.com"
    await identity.create_staff(
        pool,
        PasswordHasher(settings.argon2),
        email=email,
        name=role,
        role=StaffRole(role),
        password=PASSWORD,
        now=datetime.now(UTC),
    )
    return await login(client, email)


async def world(client: TestClient, customer: Customer) -> dict[str, str]:
    """Real ids of every kind in the customer's account."""
    call = await consented_call(client, customer)
    rec = await start_recording(client, customer, call["id"])
    member = await client.post(
        "/v1/users",
        json={"email": f"m-{customer.user_id[-6:]}@example.com", "name": "M"},
        headers=customer.auth,
    )
    key = await client.post(
        "/v1/api-keys", json={"name": "k", "scopes": ["calls"]}, headers=customer.auth
    )
    privacy_request = await client.post(
        "/v1/privacy-requests", json={"kind": "access"}, headers=customer.auth
    )
    trunk = await client.post(
        "/v1/sip-trunks",
        json={"name": "t", "allowed_sources": ["198.51.100.0/24"]},
        headers=customer.auth,
    )
    encryption_key = await client.post(
        "/v1/encryption-keys",
        json={"algorithm": "rsa-oaep-sha256", "public_key": RSA_PEM},
        headers=customer.auth,
    )
    consents = await client.get(f"/v1/calls/{call['id']}/consents", headers=customer.auth)
    # The consent and the recording above each wrote a customer webhook event.
    webhook_events = await client.get("/v1/webhook-events", headers=customer.auth)
    return {
        "encryption_key": (await encryption_key.json())["id"],
        "consent_event": (await consents.json())["items"][0]["id"],
        "webhook_event": (await webhook_events.json())["items"][0]["id"],
        "call": call["id"],
        "counterpart": call["counterparts"][0]["id"],
        "recording": rec["id"],
        "user": (await member.json())["id"],
        "key": (await key.json())["id"],
        "privacy_request": (await privacy_request.json())["id"],
        "trunk": (await trunk.json())["id"],
    }


def request_for(method: str, path: str, ids: dict[str, str]) -> tuple[str, dict | None]:
    url = path.replace("{id}", ids[ID_KIND[path]]) if "{id}" in path else path
    url = url.replace("{event_id}", ids["consent_event"])
    body = BODIES.get((method, path))
    if body is not None:
        body = {k: (ids["counterpart"] if v == "{counterpart}" else v) for k, v in body.items()}
    return url, body


def test_the_tables_cover_every_route() -> None:
    for route in all_routes():
        if "{id}" in route.path:
            assert route.path in ID_KIND, f"add {route.path} to ID_KIND"
        if route.body is not None:
            assert (route.method, route.path) in BODIES, (
                f"add {route.method} {route.path} to BODIES"
            )


PROTECTED = [
    (r.method, r.path)
    for r in all_routes()
    # The media socket authenticates with the call's media token, not a bearer token.
    if r.who not in ("anyone", "media token")
    and (r.method, r.path) not in SUPPORT_ROUTES | EVERYONE_SIGNED_IN
]


@pytest.mark.parametrize(("method", "path"), PROTECTED)
async def test_support_is_forbidden_everywhere_but_the_consent_view(
    client: TestClient,
    pool: asyncpg.Pool,
    settings: Settings,
    owner: Customer,
    method: str,
    path: str,
) -> None:
    """S5: never audio, never recordings, never a customer mutation."""
    ids = await world(client, owner)
    token = await staff_token(client, pool, settings, "support")
    url, body = request_for(method, path, ids)

    resp = await client.request(
        method, url, json=body, headers={"Authorization": f"Bearer {token}"}
    )

    assert resp.status == 403, f"{method} {path}: {resp.status}"
    assert (await resp.json())["code"] == "forbidden"


CUSTOMER_ID_ROUTES = [
    (r.method, r.path)
    for r in all_routes()
    if "{id}" in r.path and (r.method, r.path) not in SUPPORT_ROUTES
]


@pytest.mark.parametrize(("method", "path"), CUSTOMER_ID_ROUTES)
async def test_another_accounts_ids_are_not_found(
    client: TestClient, owner: Customer, method: str, path: str, pool: asyncpg.Pool
) -> None:
    victim_ids = await world(client, owner)
    attacker = await new_customer(client)
    url, body = request_for(method, path, victim_ids)
    async with pool.acquire() as conn:
        before = await conn.fetchval(
            "SELECT count(*) FROM audit_events WHERE account_id = $1", owner.account_id
        )

    resp = await client.request(method, url, json=body, headers=attacker.auth)

    assert resp.status == 404, f"{method} {path}: {resp.status}"
    problem = await resp.json()
    assert problem["code"] == "not-found"
    async with pool.acquire() as conn:
        after = await conn.fetchval(
            "SELECT count(*) FROM audit_events WHERE account_id = $1", owner.account_id
        )
    assert after == before  # nothing happened to the victim's data


# -- the support view itself --------------------------------------------------------------


async def test_support_sees_flags_and_history_with_masked_numbers(
    client: TestClient, pool: asyncpg.Pool, settings: Settings, owner: Customer
) -> None:
    ids = await world(client, owner)
    token = await staff_token(client, pool, settings, "support")

    resp = await client.get(
        f"/v1/support/calls/{ids['call']}/consent", headers={"Authorization": f"Bearer {token}"}
    )

    assert resp.status == 200
    view = await resp.json()
    assert view["call_id"] == ids["call"]
    assert view["account_id"] == owner.account_id
    party = view["counterparts"][0]
    assert party["consent"] == "granted"
    assert party["number"] == "+********567"  # +48601234567: last three digits only
    assert [e["decision"] for e in party["events"]] == ["granted"]
    assert view["recordings"] == [
        {
            "id": ids["recording"],
            "status": "recording",
            "stop_reason": None,
            "started_at": view["recordings"][0]["started_at"],
            "ended_at": None,
        }
    ]
    text = await resp.text()
    assert "+48601234567" not in text
    assert "audio" not in text


async def test_each_support_lookup_lands_in_the_customers_trail(
    client: TestClient, pool: asyncpg.Pool, settings: Settings, owner: Customer
) -> None:
    ids = await world(client, owner)
    token = await staff_token(client, pool, settings, "support")
    async with pool.acquire() as conn:
        staff_id = await conn.fetchval("SELECT id FROM users WHERE kind = 'staff'")

    for _ in range(2):
        await client.get(
            f"/v1/support/calls/{ids['call']}/consent", headers={"Authorization": f"Bearer {token}"}
        )

    trail = await (await client.get("/v1/audit?limit=200", headers=owner.auth)).json()
    lookups = [i for i in trail["items"] if i["action"] == "support.viewed_consent"]
    assert len(lookups) == 2
    assert lookups[0]["actor"] == {"type": "staff", "id": staff_id, "role": "support"}
    assert lookups[0]["subject"] == {"call_id": ids["call"]}


async def test_owner_sees_full_numbers(client: TestClient, owner: Customer) -> None:
    ids = await world(client, owner)

    call = await (await client.get(f"/v1/calls/{ids['call']}", headers=owner.auth)).json()

    assert call["counterparts"][0]["number"] == "+48601234567"


@pytest.mark.parametrize("who", ["security_admin", "owner"])
async def test_only_support_reads_the_consent_view(
    client: TestClient, pool: asyncpg.Pool, settings: Settings, owner: Customer, who: str
) -> None:
    ids = await world(client, owner)
    token = owner.token if who == "owner" else await staff_token(client, pool, settings, who)

    resp = await client.get(
        f"/v1/support/calls/{ids['call']}/consent", headers={"Authorization": f"Bearer {token}"}
    )

    assert resp.status == 403


async def test_support_lookup_of_an_unknown_call_is_not_found(
    client: TestClient, pool: asyncpg.Pool, settings: Settings
) -> None:
    token = await staff_token(client, pool, settings, "support")

    resp = await client.get(
        "/v1/support/calls/call_nope/consent", headers={"Authorization": f"Bearer {token}"}
    )

    assert resp.status == 404
