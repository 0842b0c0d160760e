"""The sealed container (SEALED-FORMAT.md): a recording sealed to a customer's key, as
it is downloaded, and how it is opened offline with the private key.

The service writes only the container's prefix (a signed JSON header); the chunk
records follow exactly as they are stored, so a download is the stored stream behind a
few kilobytes, and a `Range` maps straight onto it. Opening needs the private key,
which the service never has: `open_records` is for the customer's side (`telephony
decrypt`), and `tools/decrypt.py` is the same in one file that needs only
`cryptography`.

Everything a reader relies on is authenticated. Each chunk opens only under its epoch's
data key, at its own index, in this recording (AES-256-GCM, the AD of crypto.ChunkCipher);
each wrapped data key opens only for this recording (HPKE `info`, OAEP label); the
header, with the number of chunks, their total size and the coverage map, is signed with
the service's Ed25519 key (a detached JWS, the receipts' key, published in the JWKS). So
a flipped bit, a dropped or reordered chunk, a chunk of another recording, a truncated
file and an edited header are each refused, and the refusal says which.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from typing import IO, Any

from cryptography.exceptions import InvalidSignature, InvalidTag, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import mlkem, padding, rsa, x25519
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from storage.keys import customer
from storage.keys.crypto import CHUNK_HEADER, CHUNK_VERSION, TAG_BYTES
from storage.keys.signing import SigningKey, b64url

MAGIC = b"TELSEAL\x00"
VERSION = 1
PREFIX = struct.Struct(">8sBI")  # magic, version, header length
SIGNATURE_LENGTH = struct.Struct(">H")
CONTAINER_TYPE = "telephony-sealed+json"
CHUNK_TRACK = b"mix"  # every track interleaved in one AEAD stream (usecases.playback)
MAX_HEADER_BYTES = 64 << 20  # a header this big is not one the service wrote
HYBRID_PRIVATE_BYTES = 64 + 32  # ML-KEM-768 seed, then the X25519 private key


class ContainerRefused(ValueError):
    """The container (or the key given for it) fails a check; the text says which."""


def canonical(value: Any) -> bytes:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def prefix(header: dict[str, Any], signer: SigningKey) -> bytes:
    """Magic, version, the header and its detached signature: everything before the
    chunk records. Deterministic (Ed25519 is), so a Range request and a whole download
    agree byte for byte while the signing key is the same."""
    body = canonical({**header, "signer": signer.jwk})
    signature = signer.sign_detached(body, typ=CONTAINER_TYPE).encode("ascii")
    return (
        PREFIX.pack(MAGIC, VERSION, len(body))
        + body
        + SIGNATURE_LENGTH.pack(len(signature))
        + signature
    )


# -- the customer's side -----------------------------------------------------------


@dataclass(frozen=True)
class PrivateKey:
    """A customer's private key, as `telephony decrypt --key` reads it."""

    algorithm: str
    fingerprint: str  # of its public half, as the service printed it at registration
    _key: Any

    def __repr__(self) -> str:
        return f"PrivateKey({self.algorithm}, {self.fingerprint[:16]}…)"

    def unwrap(self, wrapped: bytes, recording_id: str) -> bytes:
        context = customer.WRAP_CONTEXT + recording_id.encode()
        try:
            if self.algorithm == "rsa-oaep-sha256":
                label = padding.OAEP(
                    mgf=padding.MGF1(hashes.SHA256()), algorithm=hashes.SHA256(), label=context
                )
                data_key = bytes(self._key.decrypt(wrapped, label))
            else:
                suite = customer.HPKE_SUITES[self.algorithm]
                data_key = bytes(suite.decrypt(wrapped, self._key, info=context))
        except (ValueError, InvalidTag):
            raise ContainerRefused("a wrapped data key does not open with this key") from None
        if len(data_key) != 32:
            raise ContainerRefused("a wrapped data key is not a 32-byte key")
        return data_key


def load_private_key(data: bytes) -> PrivateKey:
    """A PKCS#8 (or PKCS#1 RSA) PEM private key, or the hybrid's base64 (SEALED-FORMAT.md
    "Keys"). ContainerRefused, in words, for anything else."""
    if b"-----BEGIN" in data:
        try:
            key = serialization.load_pem_private_key(data, password=None)
        except TypeError:
            raise ContainerRefused(
                "the private key is encrypted: write it out unencrypted first"
                " (openssl pkey -in key.pem -out plain.pem)"
            ) from None
        except (ValueError, UnsupportedAlgorithm):
            raise ContainerRefused("--key is not a PEM private key") from None
        spki = serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        if isinstance(key, x25519.X25519PrivateKey):
            public = key.public_key().public_bytes(*spki)
            return PrivateKey("hpke-x25519", hashlib.sha256(public).hexdigest(), key)
        if isinstance(key, rsa.RSAPrivateKey):
            public = key.public_key().public_bytes(*spki)
            return PrivateKey("rsa-oaep-sha256", hashlib.sha256(public).hexdigest(), key)
        raise ContainerRefused("--key is neither an X25519 nor an RSA private key")
    try:
        raw = base64.b64decode(b"".join(data.split()), validate=True)
    except (binascii.Error, ValueError):
        raise ContainerRefused("--key is neither PEM nor the hybrid key's base64") from None
    if len(raw) != HYBRID_PRIVATE_BYTES:
        raise ContainerRefused(
            f"a hybrid private key is {HYBRID_PRIVATE_BYTES} bytes (the ML-KEM-768 seed,"
            f" then the X25519 key), not {len(raw)}"
        )
    kem = mlkem.MLKEM768PrivateKey.from_seed_bytes(raw[:64])
    dh = x25519.X25519PrivateKey.from_private_bytes(raw[64:])
    public = kem.public_key().public_bytes_raw() + dh.public_key().public_bytes_raw()
    return PrivateKey(
        "hpke-mlkem768-x25519",
        hashlib.sha256(public).hexdigest(),
        customer.hybrid_private(kem, dh),
    )


@dataclass(frozen=True)
class Container:
    """A container whose header passed its checks; `records` yields each chunk's
    plaintext, refusing the first one that fails."""

    header: dict[str, Any]
    kid: str
    records: Iterator[bytes]


def _read(stream: IO[bytes], length: int, what: str) -> bytes:
    data = stream.read(length)
    if len(data) != length:
        raise ContainerRefused(f"the container is truncated: it ends inside {what}")
    return data


def _verify(body: bytes, signature: bytes, jwks: dict[str, Any] | None) -> tuple[Any, str]:
    """The header's JSON, once its signature checks out; the signer's kid."""
    try:
        header = json.loads(body)
        jwk = header["signer"]
        protected, empty, sig = signature.decode("ascii").split(".")
        claims = json.loads(base64.urlsafe_b64decode(protected + "=" * (-len(protected) % 4)))
        public = Ed25519PublicKey.from_public_bytes(
            base64.urlsafe_b64decode(jwk["x"] + "=" * (-len(jwk["x"]) % 4))
        )
        raw_sig = base64.urlsafe_b64decode(sig + "=" * (-len(sig) % 4))
    except (ValueError, KeyError, TypeError, UnicodeDecodeError, binascii.Error):
        raise ContainerRefused("the container's header is malformed") from None
    if empty or claims.get("alg") != "EdDSA" or claims.get("kid") != jwk.get("kid"):
        raise ContainerRefused("the container's signature is not the service's EdDSA JWS")
    try:
        public.verify(raw_sig, f"{protected}.{b64url(body)}".encode("ascii"))
    except InvalidSignature:
        raise ContainerRefused("the container's header fails its signature") from None
    if jwks is not None and not any(
        k.get("kid") == jwk["kid"] and k.get("x") == jwk["x"] for k in jwks.get("keys", [])
    ):
        raise ContainerRefused(f"the signer {jwk['kid']} is not in the JWKS given")
    return header, str(jwk["kid"])


def open_container(
    stream: IO[bytes], key: PrivateKey, jwks: dict[str, Any] | None = None
) -> Container:
    """Read and check the header; the records are checked as they are read."""
    magic, version, length = PREFIX.unpack(_read(stream, PREFIX.size, "its prefix"))
    if magic != MAGIC:
        raise ContainerRefused("not a sealed recording (its magic bytes are wrong)")
    if version != VERSION:
        raise ContainerRefused(f"a sealed container of version {version}; this reads {VERSION}")
    if length > MAX_HEADER_BYTES:
        raise ContainerRefused("the container's header is malformed")
    body = _read(stream, length, "its header")
    (sig_length,) = SIGNATURE_LENGTH.unpack(_read(stream, SIGNATURE_LENGTH.size, "its header"))
    header, kid = _verify(body, _read(stream, sig_length, "its signature"), jwks)
    sealed_to = header["key"]
    if sealed_to["fingerprint"] != key.fingerprint:
        raise ContainerRefused(
            f"the recording is sealed to key {sealed_to['id']} (fingerprint"
            f" {sealed_to['fingerprint']}), and --key is {key.fingerprint}"
        )
    return Container(header, kid, _records(stream, header, key))


def _records(stream: IO[bytes], header: dict[str, Any], key: PrivateKey) -> Iterator[bytes]:
    recording_id = header["recording_id"]
    count, total = header["chunks"]["count"], header["chunks"]["bytes"]
    epochs = sorted(header["epochs"], key=lambda e: e["epoch"])
    if count and (not epochs or min(e["first_chunk"] for e in epochs) != 0):
        raise ContainerRefused("the container has no key for its first chunk")
    ciphers: dict[int, tuple[AESGCM, bytes]] = {}
    read = 0
    for index in range(count):
        epoch = max((e for e in epochs if e["first_chunk"] <= index), key=lambda e: e["epoch"])
        if epoch["epoch"] not in ciphers:
            wrapped = base64.b64decode(epoch["wrapped_key"])
            aead = AESGCM(key.unwrap(wrapped, recording_id))
            ciphers[epoch["epoch"]] = aead, base64.b64decode(epoch["nonce_prefix"])
        aead, nonce_prefix = ciphers[epoch["epoch"]]
        head = _read(stream, CHUNK_HEADER.size, f"chunk {index} of {count}")
        version, flags, at, length = CHUNK_HEADER.unpack(head)
        if version != CHUNK_VERSION or flags & ~1 or length < TAG_BYTES:
            raise ContainerRefused(f"chunk {index} is malformed")
        if at != index:
            raise ContainerRefused(f"chunk {index} is missing: chunk {at} stands in its place")
        final = bool(flags & 1)
        last = index == count - 1
        if final and not last:
            raise ContainerRefused(f"chunk {index} claims to be the last of {count}")
        if last and not final and header["status"] == "completed":
            raise ContainerRefused("the recording's final chunk is missing")
        body = _read(stream, length, f"chunk {index} of {count}")
        ad = b"\0".join(
            [
                b"telephony/chunk/v1",
                recording_id.encode(),
                CHUNK_TRACK,
                str(index).encode(),
                b"final" if final else b"more",
            ]
        )
        try:
            yield aead.decrypt(nonce_prefix + struct.pack(">IB", index, final), body, ad)
        except InvalidTag:
            raise ContainerRefused(f"chunk {index} fails its authentication tag") from None
        read += len(head) + length
    if read != total:
        raise ContainerRefused("the chunks' size differs from what the header states")
    if stream.read(1):
        raise ContainerRefused("the container has bytes after its last chunk")
