"""Customer-held keys for the tests that seal recordings to one (SEALED-FORMAT.md): a key
pair of each algorithm as a customer makes it, its registration and activation, and the
customer's side of a download (the container opened with the private key)."""

from __future__ import annotations

import base64
import io
from dataclasses import dataclass
from typing import Any

from aiohttp.test_utils import TestClient
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import mlkem, rsa, x25519

from storage.keys.sealed import load_private_key, open_container
from tests.conftest import Customer

PEM, SPKI = serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo


@dataclass(frozen=True)
class Pair:
    """A customer's key pair: `private` as `telephony decrypt --key` reads it, `public`
    as `POST /v1/encryption-keys` takes it."""

    algorithm: str
    private: bytes
    public: str


def make_pair(algorithm: str = "hpke-x25519") -> Pair:
    if algorithm == "hpke-mlkem768-x25519":
        seed = mlkem.MLKEM768PrivateKey.generate()
        dh = x25519.X25519PrivateKey.generate()
        private = base64.b64encode(seed.private_bytes_raw() + dh.private_bytes_raw())
        public = seed.public_key().public_bytes_raw() + dh.public_key().public_bytes_raw()
        return Pair(algorithm, private + b"\n", base64.b64encode(public).decode())
    key: x25519.X25519PrivateKey | rsa.RSAPrivateKey = (
        x25519.X25519PrivateKey.generate()
        if algorithm == "hpke-x25519"
        else rsa.generate_private_key(65537, 3072)
    )
    private_pem = key.private_bytes(
        PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    return Pair(algorithm, private_pem, key.public_key().public_bytes(PEM, SPKI).decode())


def opened(container: bytes, pair: Pair) -> tuple[dict[str, Any], bytes]:
    """(header, every chunk's plaintext joined): the customer's reading of a download."""
    found = open_container(io.BytesIO(container), load_private_key(pair.private))
    return found.header, b"".join(found.records)


async def seal_to(client: TestClient, owner: Customer, pair: Pair) -> str:
    """Register `pair`'s public key and activate it; its id."""
    resp = await client.post(
        "/v1/encryption-keys",
        json={"algorithm": pair.algorithm, "public_key": pair.public},
        headers=owner.auth,
    )
    assert resp.status == 201, await resp.text()
    key_id = str((await resp.json())["id"])
    resp = await client.post(f"/v1/encryption-keys/{key_id}/activate", headers=owner.auth)
    assert resp.status == 200, await resp.text()
    return key_id


async def sealed_download(client: TestClient, owner: Customer, recording_id: str) -> bytes:
    resp = await client.get(f"/v1/recordings/{recording_id}/audio", headers=owner.auth)
    assert resp.status == 200, await resp.text()
    assert resp.content_type == "application/vnd.telephony.sealed+octet-stream"
    return await resp.read()
