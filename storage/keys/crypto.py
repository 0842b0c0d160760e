"""The service's own cryptography: passwords, key wrapping, chunk cipher. (Beside it,
`customer.py` wraps to customers' public keys and `signing.py` signs receipts; no other
module touches `cryptography.hazmat`.)

Password hashes (S1) are Argon2id PHC strings
(`$argon2id$v=19$m=…,t=…,p=…$salt$hash`): the salt is random per password and
the cost travels with the hash, so raising the cost later needs no migration
(`needs_rehash` says when a stored hash is below the current cost).
"""

from __future__ import annotations

import hashlib
import os
import re
import struct
from dataclasses import dataclass, field

from cryptography.exceptions import InvalidKey, InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.argon2 import Argon2id
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from telephony.domain.errors import IntegrityFailure

SALT_BYTES = 16
HASH_BYTES = 32
_PARAMS = re.compile(r"^\$argon2id\$v=19\$m=(\d+),t=(\d+),p=(\d+)\$")


def hash_password(password: str, *, memory_kib: int, iterations: int, lanes: int) -> str:
    """Derive a PHC-encoded Argon2id hash. CPU-bound: call it from a worker thread."""
    kdf = Argon2id(
        salt=os.urandom(SALT_BYTES),
        length=HASH_BYTES,
        iterations=iterations,
        lanes=lanes,
        memory_cost=memory_kib,
    )
    return kdf.derive_phc_encoded(password.encode("utf-8", "surrogatepass"))


def verify_password(password: str, phc: str) -> bool:
    """Constant-time check of a password against its stored hash; False for any mismatch."""
    try:
        Argon2id.verify_phc_encoded(password.encode("utf-8", "surrogatepass"), phc)
    except (InvalidKey, ValueError):
        return False
    return True


def needs_rehash(phc: str, *, memory_kib: int, iterations: int, lanes: int) -> bool:
    match = _PARAMS.match(phc)
    if not match:
        return True
    m, t, p = (int(g) for g in match.groups())
    return m < memory_kib or t < iterations or p != lanes


# -- envelope keys ---------------------------------------------------------------
#
# master key -> account key (KEK) -> recording data key. Each wrap is AES-256-GCM
# with the owner's id in the associated data, so a wrapped key moved to another
# row does not unwrap. Layout: version (1) | nonce (12) | ciphertext+tag (48).

KEY_BYTES = 32
WRAP_VERSION = 1
_NONCE_BYTES = 12


def new_key() -> bytes:
    return os.urandom(KEY_BYTES)


def _wrap_ad(owner_id: str) -> bytes:
    return b"telephony/wrap/v1\0" + owner_id.encode("utf-8")


def wrap_key(kek: bytes, key: bytes, owner_id: str) -> bytes:
    nonce = os.urandom(_NONCE_BYTES)
    sealed = AESGCM(kek).encrypt(nonce, key, _wrap_ad(owner_id))
    return bytes([WRAP_VERSION]) + nonce + sealed


def unwrap_key(kek: bytes, wrapped: bytes, owner_id: str) -> bytes:
    """The key, or IntegrityFailure: wrong master key, wrong owner, or altered bytes alike."""
    if len(wrapped) != 1 + _NONCE_BYTES + KEY_BYTES + 16 or wrapped[0] != WRAP_VERSION:
        raise IntegrityFailure("a stored key failed its integrity check")
    try:
        return AESGCM(kek).decrypt(wrapped[1:13], wrapped[13:], _wrap_ad(owner_id))
    except InvalidTag:
        raise IntegrityFailure("a stored key failed its integrity check") from None


def key_id(key: bytes) -> str:
    """A public name for a key (which master key wrapped a row), revealing nothing of it."""
    return hashlib.sha256(b"telephony/key-id\0" + key).hexdigest()[:16]


# -- sealed records: small data at rest under a purpose key ----------------------
#
# For what must be stored for a while and read back by the service, such as an
# idempotent reply that carries a token shown once. The master key never
# encrypts data itself: HKDF (RFC 5869) derives one key per purpose.
# Layout: version (1) | nonce (12) | ciphertext+tag.

SEAL_VERSION = 1


def derive_key(master: bytes, purpose: str) -> bytes:
    hkdf = HKDF(
        algorithm=hashes.SHA256(),
        length=KEY_BYTES,
        salt=None,
        info=b"telephony/purpose/" + purpose.encode("utf-8"),
    )
    return hkdf.derive(master)


def _seal_ad(context: str) -> bytes:
    return b"telephony/seal/v1\0" + context.encode("utf-8", "surrogatepass")


def seal(key: bytes, plaintext: bytes, context: str) -> bytes:
    """Encrypt `plaintext`, bound to `context`: it opens only under the same context."""
    nonce = os.urandom(_NONCE_BYTES)
    return bytes([SEAL_VERSION]) + nonce + AESGCM(key).encrypt(nonce, plaintext, _seal_ad(context))


def open_sealed(key: bytes, sealed: bytes, context: str) -> bytes:
    """The plaintext, or IntegrityFailure for a wrong key, context or altered bytes alike."""
    if len(sealed) < 1 + _NONCE_BYTES + 16 or sealed[0] != SEAL_VERSION:
        raise IntegrityFailure("a sealed record failed its integrity check")
    try:
        return AESGCM(key).decrypt(sealed[1:13], sealed[13:], _seal_ad(context))
    except InvalidTag:
        raise IntegrityFailure("a sealed record failed its integrity check") from None


# -- the chunk cipher ------------------------------------------------------------
#
# Audio is sealed in chunks with the STREAM construction (Hoang, Reyhanitabar,
# Rogaway, Vizár 2015): nonce = per-recording random prefix (7 bytes) |
# chunk counter (4 bytes, big-endian) | final flag (1 byte). The associated
# data binds the format version, recording id, track and chunk index, so a
# chunk that is reordered, dropped, swapped in from another recording or
# flipped fails to open, and a stream cut short lacks its final chunk.
#
# On-disk record of one sealed chunk (all integers big-endian):
#   version (1) = 0x01 | flags (1): bit 0 = final | index (4) | length (4) | ciphertext+tag (length)

CHUNK_VERSION = 1
NONCE_PREFIX_BYTES = 7
CHUNK_HEADER = struct.Struct(">BBII")
TAG_BYTES = 16
_FINAL = 0x01


def new_nonce_prefix() -> bytes:
    return os.urandom(NONCE_PREFIX_BYTES)


@dataclass(frozen=True)
class ChunkCipher:
    """Seals and opens one recording's chunk stream under its data key."""

    data_key: bytes
    nonce_prefix: bytes
    recording_id: str

    _aead: AESGCM = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if len(self.data_key) != KEY_BYTES or len(self.nonce_prefix) != NONCE_PREFIX_BYTES:
            raise ValueError("a chunk cipher needs a 32-byte key and a 7-byte nonce prefix")
        object.__setattr__(
            self, "_aead", AESGCM(self.data_key)
        )  # one key schedule, not one a chunk

    def _nonce(self, index: int, final: bool) -> bytes:
        return self.nonce_prefix + struct.pack(">IB", index, 1 if final else 0)

    def _ad(self, track: str, index: int, final: bool) -> bytes:
        return b"\0".join(
            [
                b"telephony/chunk/v1",
                self.recording_id.encode("utf-8"),
                track.encode("utf-8"),
                str(index).encode("ascii"),
                b"final" if final else b"more",
            ]
        )

    def seal(self, track: str, index: int, plaintext: bytes, *, final: bool = False) -> bytes:
        """The on-disk record for chunk `index` of `track`."""
        if not 0 <= index < 2**32:
            raise ValueError("chunk index out of range")
        sealed = self._aead.encrypt(
            self._nonce(index, final), plaintext, self._ad(track, index, final)
        )
        flags = _FINAL if final else 0
        return CHUNK_HEADER.pack(CHUNK_VERSION, flags, index, len(sealed)) + sealed

    def open(
        self, track: str, expected_index: int, record: bytes | memoryview
    ) -> tuple[bytes, bool]:
        """(plaintext, final) of the record for chunk `expected_index`, or IntegrityFailure.

        One opaque error for every failure, so the message is no oracle.
        """
        try:
            version, flags, index, length = CHUNK_HEADER.unpack_from(record)
        except struct.error:
            raise IntegrityFailure("an audio chunk failed its integrity check") from None
        body = record[CHUNK_HEADER.size :]
        if (
            version != CHUNK_VERSION
            or flags & ~_FINAL
            or index != expected_index
            or length != len(body)
        ):
            raise IntegrityFailure("an audio chunk failed its integrity check")
        final = bool(flags & _FINAL)
        try:
            plaintext = self._aead.decrypt(
                self._nonce(index, final), body, self._ad(track, index, final)
            )
        except InvalidTag:
            raise IntegrityFailure("an audio chunk failed its integrity check") from None
        return plaintext, final


def record_length(header: bytes) -> int:
    """Total length of the record whose first CHUNK_HEADER.size bytes are `header`."""
    _, _, _, length = CHUNK_HEADER.unpack(header)
    return CHUNK_HEADER.size + int(length)
