"""`/v1/encryption-keys`: the account's own public keys (API.md "Customer-held keys")."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any, Literal, get_args

from aiohttp import web
from pydantic import Field, RootModel, StringConstraints, WithJsonSchema

from storage.customer_keys import StoredKey
from storage.keys.customer import ALGORITHMS
from telephony.usecases import customer_keys
from telephony.web.appkeys import POOL
from telephony.web.auth import require_owner
from telephony.web.inputs import (
    KEYSET_PAGING,
    Body,
    iso,
    keyset_cursor,
    page,
    page_of,
    path_id,
    read_body,
    read_query,
)
from telephony.web.routes import OWNER, Route

# PEM or base64: their alphabets, the PEM lines' spaces and dashes, and line breaks. An
# RSA key of 16,384 bits is 2,900 characters of PEM; the hybrid key 1,624 of base64.
_KEY_TEXT = r"^[-A-Za-z0-9+/= \r\n]+$"


_KEY_CONSTRAINTS = StringConstraints(min_length=1, max_length=8000, pattern=_KEY_TEXT)


def _key_schema(format_: str, description: str) -> WithJsonSchema:
    """The key's text; its schema names the format alone, as `e164` does: no pattern or
    length can say "a point on the curve" or "3072 bits", and a schema promising a string
    of this alphabet would promise keys the service refuses. The fuzzer draws real keys
    (tests/processes/fuzz_hooks)."""
    return WithJsonSchema(
        {"type": "string", "format": format_, "description": f"{description} (8,000 at most)"}
    )


X25519Pem = Annotated[
    str,
    _KEY_CONSTRAINTS,
    _key_schema("x25519-public-pem", "PEM SubjectPublicKeyInfo of an X25519 key"),
]
HybridBase64 = Annotated[
    str,
    _KEY_CONSTRAINTS,
    _key_schema(
        "mlkem768-x25519-public-base64",
        "base64 of the ML-KEM-768 encapsulation key (1,184 bytes), then the X25519 key (32)",
    ),
]
RsaPem = Annotated[
    str,
    _KEY_CONSTRAINTS,
    _key_schema("rsa-public-pem", "PEM SubjectPublicKeyInfo of an RSA key of 3072 to 16384 bits"),
]


class X25519Key(Body):
    algorithm: Literal["hpke-x25519"]
    public_key: X25519Pem


class HybridKey(Body):
    algorithm: Literal["hpke-mlkem768-x25519"]
    public_key: HybridBase64


class RsaKey(Body):
    algorithm: Literal["rsa-oaep-sha256"]
    public_key: RsaPem


class KeyCreate(
    RootModel[Annotated[X25519Key | HybridKey | RsaKey, Field(discriminator="algorithm")]]
):
    """One of the three schemes, by its `algorithm` (storage/keys/customer.py)."""


_SCHEMES = (X25519Key, HybridKey, RsaKey)
assert {get_args(m.model_fields["algorithm"].annotation)[0] for m in _SCHEMES} == set(ALGORITHMS)


def render_key(stored: StoredKey) -> dict[str, Any]:
    return {
        "id": stored.id,
        "algorithm": stored.key.algorithm,
        "fingerprint": stored.fingerprint,
        "created_at": iso(stored.created_at),
        "active": stored.active,
    }


async def register_key(request: web.Request) -> web.Response:
    owner = await require_owner(request)
    body = (await read_body(request, KeyCreate)).root
    stored = await customer_keys.register(
        request.app[POOL], owner, body.algorithm, body.public_key, datetime.now(UTC)
    )
    return web.json_response(render_key(stored), status=201)


async def list_keys(request: web.Request) -> web.Response:
    owner = await require_owner(request)
    paging = page(read_query(request, KEYSET_PAGING))
    found = await customer_keys.list_keys(request.app[POOL], owner, paging.after, paging.limit + 1)
    return web.json_response(
        page_of(found, paging, render_key, lambda k: keyset_cursor(k.created_at, k.id))
    )


async def delete_key(request: web.Request) -> web.Response:
    owner = await require_owner(request)
    await customer_keys.delete(request.app[POOL], owner, path_id(request), datetime.now(UTC))
    return web.Response(status=204)


async def activate_key(request: web.Request) -> web.Response:
    owner = await require_owner(request)
    stored = await customer_keys.activate(
        request.app[POOL], owner, path_id(request), datetime.now(UTC)
    )
    return web.json_response(render_key(stored))


ROUTES = [
    Route(
        "POST",
        "/v1/encryption-keys",
        register_key,
        "Register a public key of the account's own (inactive until activated)",
        OWNER,
        KeyCreate,
        {
            201: "the key, with its fingerprint",
            409: "conflict: the account has this key already",
            422: "validation-failed: a key that cannot be used (malformed, weak, another type,"
            " a private key), saying why",
        },
        "encryption-keys",
    ),
    Route(
        "GET",
        "/v1/encryption-keys",
        list_keys,
        "List the account's public keys",
        OWNER,
        None,
        {200: "keys"},
        "encryption-keys",
        query=KEYSET_PAGING,
    ),
    Route(
        "POST",
        "/v1/encryption-keys/{id}/activate",
        activate_key,
        "Seal new recordings to this key from now on (older ones keep the key they have)",
        OWNER,
        None,
        {200: "the key, now active (any other key of the account is not)"},
        "encryption-keys",
    ),
    Route(
        "DELETE",
        "/v1/encryption-keys/{id}",
        delete_key,
        "Delete a key: never used again (what was sealed to it opens with its private key)",
        OWNER,
        None,
        {204: "deleted"},
        "encryption-keys",
    ),
]
