"""Customer-held keys, issue 14 part 1 (API.md "Customer-held keys", R3, S4): register,
list, activate, delete; fingerprints; refusals of every key the service must not use."""

from __future__ import annotations

import base64
import hashlib
import logging
from typing import Any

import asyncpg
import pytest
from aiohttp.test_utils import TestClient
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes, hpke, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, mlkem, padding, rsa, x25519

from storage import outbox
from storage.keys.customer import WRAP_CONTEXT, CustomerKey, wrap
from tests.conftest import Customer, new_customer
from tests.service.test_accounts import invite_member

PEM, SPKI = serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo


def pem_of(public: Any) -> str:
    return str(public.public_bytes(PEM, SPKI).decode())


def hybrid_pair() -> tuple[hpke.MLKEM768X25519PrivateKey, str]:
    """A hybrid private key, and its public half as the API takes it (base64)."""
    m, x = mlkem.MLKEM768PrivateKey.generate(), x25519.X25519PrivateKey.generate()
    raw = m.public_key().public_bytes_raw() + x.public_key().public_bytes_raw()
    return hpke.MLKEM768X25519PrivateKey(m, x), base64.b64encode(raw).decode()


async def register(
    client: TestClient, who: Customer, algorithm: str, public_key: str
) -> tuple[int, dict[str, Any]]:
    resp = await client.post(
        "/v1/encryption-keys",
        json={"algorithm": algorithm, "public_key": public_key},
        headers=who.auth,
    )
    return resp.status, await resp.json()


async def listed(client: TestClient, who: Customer) -> list[dict[str, Any]]:
    resp = await client.get("/v1/encryption-keys", headers=who.auth)
    assert resp.status == 200, await resp.text()
    return list((await resp.json())["items"])


async def notes_since(pool: asyncpg.Pool, after: int) -> list[outbox.StaffNotification]:
    async with pool.acquire() as conn:
        return [n for n in await outbox.list_all(conn) if n.id > after]


async def last_note_id(pool: asyncpg.Pool) -> int:
    async with pool.acquire() as conn:
        return int(await conn.fetchval("SELECT coalesce(max(id), 0) FROM staff_notifications"))


# -- the three algorithms ---------------------------------------------------------------------


async def test_each_algorithm_registers_with_the_fingerprint_a_customer_computes(
    client: TestClient, owner: Customer
) -> None:
    x = x25519.X25519PrivateKey.generate()
    r = rsa.generate_private_key(65537, 3072)
    _, hybrid = hybrid_pair()
    spki = serialization.Encoding.DER
    expected = {
        "hpke-x25519": hashlib.sha256(x.public_key().public_bytes(spki, SPKI)).hexdigest(),
        "rsa-oaep-sha256": hashlib.sha256(r.public_key().public_bytes(spki, SPKI)).hexdigest(),
        "hpke-mlkem768-x25519": hashlib.sha256(base64.b64decode(hybrid)).hexdigest(),
    }

    made = [
        await register(client, owner, "hpke-x25519", pem_of(x.public_key())),
        await register(client, owner, "rsa-oaep-sha256", pem_of(r.public_key())),
        await register(client, owner, "hpke-mlkem768-x25519", hybrid),
    ]

    assert [status for status, _ in made] == [201, 201, 201], made
    for _, key in made:
        assert key["fingerprint"] == expected[key["algorithm"]]
        assert key["active"] is False  # registered is not yet used
        assert key["id"].startswith("ek_") and key["created_at"].endswith("Z")
        assert set(key) == {"id", "algorithm", "fingerprint", "created_at", "active"}
    assert [k["id"] for k in await listed(client, owner)] == [k["id"] for _, k in made]


async def test_what_the_service_wraps_to_a_registered_key_opens_with_its_private_half(
    client: TestClient, owner: Customer, pool: asyncpg.Pool
) -> None:
    """The stored public key is the one sent: a wrap made from the row opens with the
    customer's private key, and only for the recording it was made for."""
    x = x25519.X25519PrivateKey.generate()
    r = rsa.generate_private_key(65537, 3072)
    hybrid_private, hybrid = hybrid_pair()
    for algorithm, text in [
        ("hpke-x25519", pem_of(x.public_key())),
        ("rsa-oaep-sha256", pem_of(r.public_key())),
        ("hpke-mlkem768-x25519", hybrid),
    ]:
        status, body = await register(client, owner, algorithm, text)
        assert status == 201, body
    async with pool.acquire() as conn:
        rows = await conn.fetch("SELECT algorithm, public_key FROM customer_keys")
    data_key = bytes(range(32))
    info = WRAP_CONTEXT + b"rec_1"
    suite = {
        "hpke-x25519": hpke.KEM.X25519,
        "hpke-mlkem768-x25519": hpke.KEM.MLKEM768_X25519,
    }
    for row in rows:
        wrapped = wrap(CustomerKey(row["algorithm"], bytes(row["public_key"])), data_key, "rec_1")
        if row["algorithm"] == "rsa-oaep-sha256":
            oaep = padding.OAEP(padding.MGF1(hashes.SHA256()), hashes.SHA256(), info)
            assert r.decrypt(wrapped, oaep) == data_key
            continue
        opened = hpke.Suite(suite[row["algorithm"]], hpke.KDF.HKDF_SHA256, hpke.AEAD.AES_256_GCM)
        private = x if row["algorithm"] == "hpke-x25519" else hybrid_private
        assert opened.decrypt(wrapped, private, info=info) == data_key
        with pytest.raises(InvalidTag):  # another recording's context
            opened.decrypt(wrapped, private, info=WRAP_CONTEXT + b"rec_2")


# -- delete, and what staff are told ----------------------------------------------------------


async def test_registering_and_deleting_a_key_tell_staff_and_the_audit_trail(
    client: TestClient, owner: Customer, pool: asyncpg.Pool
) -> None:
    before = await last_note_id(pool)
    _, first = await register(
        client, owner, "hpke-x25519", pem_of(x25519.X25519PrivateKey.generate().public_key())
    )
    _, second = await register(client, owner, "hpke-mlkem768-x25519", hybrid_pair()[1])

    gone = await client.delete(f"/v1/encryption-keys/{second['id']}", headers=owner.auth)
    twice = await client.delete(f"/v1/encryption-keys/{second['id']}", headers=owner.auth)

    assert (gone.status, twice.status) == (204, 404)
    assert [k["id"] for k in await listed(client, owner)] == [first["id"]]
    notes = await notes_since(pool, before)
    assert [n.event for n in notes] == [
        "encryption_key.registered",
        "encryption_key.registered",
        "encryption_key.deleted",
    ]
    assert notes[-1].payload["subject"] == {"encryption_key_id": second["id"]}
    assert notes[-1].payload["changes"] == {
        "algorithm": "hpke-mlkem768-x25519",
        "fingerprint": second["fingerprint"],
    }
    assert all("public_key" not in str(n.payload) for n in notes)  # the facts, not the key
    async with pool.acquire() as conn:
        audited = await conn.fetch(
            "SELECT action FROM audit_events WHERE account_id = $1"
            " AND action LIKE 'encryption_key.%' ORDER BY seq",
            owner.account_id,
        )
        row = await conn.fetchrow(
            "SELECT deleted_at, active FROM customer_keys WHERE id = $1", second["id"]
        )
    assert [a["action"] for a in audited] == [n.event for n in notes]
    assert row["deleted_at"] is not None and row["active"] is False  # kept, for its recordings


async def test_the_same_key_twice_is_a_conflict_and_a_deleted_one_can_come_back(
    client: TestClient, owner: Customer
) -> None:
    text = pem_of(x25519.X25519PrivateKey.generate().public_key())
    _, first = await register(client, owner, "hpke-x25519", text)

    twice, problem = await register(client, owner, "hpke-x25519", text)
    await client.delete(f"/v1/encryption-keys/{first['id']}", headers=owner.auth)
    back, again = await register(client, owner, "hpke-x25519", text)

    assert (twice, problem["code"]) == (409, "conflict")
    assert back == 201 and again["fingerprint"] == first["fingerprint"]
    assert again["id"] != first["id"]


async def test_keys_are_the_owners_alone_and_another_accounts_are_not_found(
    client: TestClient, owner: Customer
) -> None:
    _, key = await register(
        client, owner, "hpke-x25519", pem_of(x25519.X25519PrivateKey.generate().public_key())
    )
    member = await invite_member(client, owner)
    stranger = await new_customer(client)

    as_member = await client.get("/v1/encryption-keys", headers=member.auth)
    member_adds = await client.post(
        "/v1/encryption-keys",
        json={"algorithm": "hpke-x25519", "public_key": "x"},
        headers=member.auth,
    )
    their_delete = await client.delete(f"/v1/encryption-keys/{key['id']}", headers=stranger.auth)

    assert (as_member.status, member_adds.status) == (403, 403)
    assert their_delete.status == 404
    assert await listed(client, stranger) == []
    assert [k["active"] for k in await listed(client, owner)] == [False]


# -- bad input (issue 14: a test each) --------------------------------------------------------


def _refusals() -> list[Any]:
    x = x25519.X25519PrivateKey.generate()
    private_pem = x.private_bytes(
        PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    rsa_private = (
        rsa.generate_private_key(65537, 3072)
        .private_bytes(
            PEM, serialization.PrivateFormat.TraditionalOpenSSL, serialization.NoEncryption()
        )
        .decode()
    )
    cut = pem_of(x.public_key()).splitlines()
    return [
        pytest.param("hpke-x25519", f"{cut[0]}\nnot base64\n{cut[-1]}", "PEM", id="bad-pem"),
        pytest.param("hpke-x25519", "\n".join(cut[:1] + cut[2:]), "PEM", id="pem-without-body"),
        pytest.param(
            "rsa-oaep-sha256",
            pem_of(rsa.generate_private_key(65537, 2048).public_key()),
            "2048 bits",
            id="rsa-2048",
        ),
        pytest.param(
            "hpke-x25519",
            pem_of(ec.generate_private_key(ec.SECP256R1()).public_key()),
            "secp256r1",
            id="another-curve",
        ),
        pytest.param(
            "hpke-x25519",
            pem_of(ed25519.Ed25519PrivateKey.generate().public_key()),
            "Ed25519",
            id="a-signing-key",
        ),
        pytest.param("rsa-oaep-sha256", pem_of(x.public_key()), "X25519", id="wrong-algorithm"),
        pytest.param("hpke-x25519", private_pem, "private key", id="private-pkcs8"),
        pytest.param("rsa-oaep-sha256", rsa_private, "private key", id="private-rsa"),
        pytest.param("hpke-mlkem768-x25519", "A" * 56, "1216", id="short"),
        pytest.param("hpke-mlkem768-x25519", cut[0], "base64", id="pem-hybrid"),
    ]


@pytest.mark.parametrize(("algorithm", "text", "said"), _refusals())
async def test_a_key_the_service_must_not_use_is_a_422_that_says_why_and_keeps_nothing(
    client: TestClient,
    owner: Customer,
    pool: asyncpg.Pool,
    caplog: pytest.LogCaptureFixture,
    algorithm: str,
    text: str,
    said: str,
) -> None:
    caplog.set_level(logging.DEBUG)

    status, problem = await register(client, owner, algorithm, text)

    assert status == 422, problem
    assert problem["code"] == "validation-failed"
    assert [e["field"] for e in problem["errors"]] == ["public_key"]
    assert said in problem["errors"][0]["message"]
    body = next(line for line in text.splitlines()[1:2]) if "\n" in text else text
    assert body not in str(problem)  # the key's material is never echoed
    assert all(body not in r.getMessage() for r in caplog.records)
    async with pool.acquire() as conn:
        assert await conn.fetchval("SELECT count(*) FROM customer_keys") == 0


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"algorithm": "hpke-x25519", "public_key": ""}, "public_key"),
        ({"algorithm": "rsa-oaep-sha256", "public_key": "A" * 8001}, "public_key"),
        (
            {"algorithm": "hpke-x25519", "public_key": "-----BEGIN PUBLIC KEY-----\x00"},
            "public_key",
        ),
        ({"algorithm": "hpke-mlkem768-x25519", "public_key": "\u0661\u0662"}, "public_key"),
        ({"algorithm": "hpke-x25519", "public_key": 42}, "public_key"),
        ({"algorithm": "hpke-x25519", "public_key": "AAAA", "active": True}, "active"),
        ({"algorithm": "x448", "public_key": "AAAA"}, "algorithm"),
        ({"algorithm": 1, "public_key": "AAAA"}, "algorithm"),
        ({"public_key": "AAAA"}, "algorithm"),
    ],
    ids=[
        "empty",
        "huge",
        "nul",
        "unicode-digits",
        "wrong-type",
        "unknown-field",
        "unknown-algorithm",
        "algorithm-not-a-string",
        "missing-algorithm",
    ],
)
async def test_a_malformed_body_is_a_422_naming_its_field(
    client: TestClient, owner: Customer, body: dict[str, Any], field: str
) -> None:
    resp = await client.post("/v1/encryption-keys", json=body, headers=owner.auth)

    assert resp.status == 422, await resp.text()
    assert [e["field"] for e in (await resp.json())["errors"]] == [field]


async def test_the_schema_offers_each_algorithm_with_its_own_key_format(client: TestClient) -> None:
    """A body is one of three shapes by `algorithm`: what the fuzzer and a client's
    generator need to draw a key that fits its scheme (tests/processes/fuzz_hooks.py)."""
    document = await (await client.get("/openapi.json")).json()
    schemas = document["components"]["schemas"]
    body = schemas["KeyCreate"]

    variants = [schemas[ref["$ref"].rsplit("/", 1)[1]]["properties"] for ref in body["oneOf"]]
    shapes = {v["algorithm"]["const"]: v["public_key"]["format"] for v in variants}

    assert body["discriminator"]["propertyName"] == "algorithm"
    # The format alone: a pattern or a length would promise strings the service refuses.
    assert all(not {"pattern", "minLength", "maxLength"} & set(v["public_key"]) for v in variants)
    assert shapes == {
        "hpke-x25519": "x25519-public-pem",
        "hpke-mlkem768-x25519": "mlkem768-x25519-public-base64",
        "rsa-oaep-sha256": "rsa-public-pem",
    }
